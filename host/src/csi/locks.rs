//! In-flight operation keys (volume ids, volume names, snapshot ids). A call that finds
//! one of its keys busy is answered ABORTED at once, as the CSI spec suggests for a
//! pending operation, so callers never wait on each other and nothing can deadlock.
//! A guard releases its keys when dropped; the backend layer holds it until the backend
//! really finishes, so a cancelled RPC does not free a key while work is still running.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tonic::Status;

#[derive(Default)]
pub struct Locks {
    held: Mutex<HashSet<String>>,
}

pub struct Guard {
    locks: Arc<Locks>,
    keys: Vec<String>,
}

impl Locks {
    /// Takes every key or none of them.
    pub fn try_lock(self: &Arc<Self>, keys: Vec<String>) -> Result<Guard, Status> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(busy) = keys.iter().find(|k| held.contains(*k)) {
            return Err(Status::aborted(format!("an operation on {busy} is already in progress; retry later")));
        }
        held.extend(keys.iter().cloned());
        Ok(Guard { locks: self.clone(), keys })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            held.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_keys_abort_and_release_on_drop() {
        let locks = Arc::new(Locks::default());
        let a = locks.try_lock(vec!["vol:a".into(), "name:x".into()]).unwrap();
        let err = locks.try_lock(vec!["name:y".into(), "vol:a".into()]).err().unwrap();
        assert_eq!(err.code(), tonic::Code::Aborted);
        // all-or-nothing: name:y was not taken by the failed attempt
        let y = locks.try_lock(vec!["name:y".into()]).unwrap();
        drop(a);
        locks.try_lock(vec!["vol:a".into()]).unwrap();
        drop(y);
    }
}
