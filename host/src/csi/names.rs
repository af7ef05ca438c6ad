//! Which backend instance owns which CSI name, kept on disk by the host so that CSI's
//! plugin-wide name uniqueness never depends on asking (and trusting, and waiting for) the
//! other backends.
//!
//! A claim is a symlink `<dir>/<kind>/<sha256(name)>` whose target is the owning instance:
//! `symlink(2)` creates it exclusively and atomically with its content, so one directory
//! fsync makes it durable (the only flush on the create path). The claim is made durable
//! before the backend is asked to create, so a crash at any point never leaves a volume
//! without its claim; a retry finds its own claim and lets the backend's idempotency
//! decide. After the create, `<dir>/<kind>-ids/<sha256(id)>` points back at the name's
//! hash so that a delete can release the claim; it is not flushed: a lost back-link or a
//! claim that outlived its object only leaves a stale claim, which the owner's own answer
//! resolves (see `ControllerService::claim_name`).

use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::Status;

/// What a name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Volume,
    Snapshot,
}

impl Kind {
    /// "volume" or "snapshot", also the claims' directory.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
        }
    }

    fn ids_dir(self) -> &'static str {
        match self {
            Kind::Volume => "volume-ids",
            Kind::Snapshot => "snapshot-ids",
        }
    }
}

/// A failed index operation, with the file it was about.
#[derive(Debug, thiserror::Error)]
#[error("name index {}: {source}", path.display())]
pub struct IndexError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl From<IndexError> for Status {
    fn from(e: IndexError) -> Status {
        Status::internal(e.to_string())
    }
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> IndexError + '_ {
    move |source| IndexError { path: path.to_owned(), source }
}

pub struct NameIndex {
    dir: PathBuf,
}

impl NameIndex {
    /// Opens (creating) the index under `dir`.
    pub fn open(dir: &Path) -> Result<NameIndex, IndexError> {
        for kind in [Kind::Volume, Kind::Snapshot] {
            for sub in [kind.noun(), kind.ids_dir()] {
                let path = dir.join(sub);
                std::fs::create_dir_all(&path).map_err(at(&path))?;
            }
        }
        sync_dir(dir)?;
        Ok(NameIndex { dir: dir.to_owned() })
    }

    /// Claims `name` for `instance`. `None`: the name is (now, durably) the instance's;
    /// `Some(owner)`: another instance claimed it first.
    pub fn claim(&self, kind: Kind, name: &str, instance: &str) -> Result<Option<String>, IndexError> {
        let path = self.claim_path(kind, name);
        match symlink(instance, &path) {
            Ok(()) => {
                sync_dir(&self.dir.join(kind.noun()))?;
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let owner = read_link(&path)?;
                Ok((owner != instance).then_some(owner))
            }
            Err(e) => Err(at(&path)(e)),
        }
    }

    /// Hands the claim on `name` to `instance` (its owner said it holds no such object).
    pub fn take_over(&self, kind: Kind, name: &str, instance: &str) -> Result<(), IndexError> {
        let path = self.claim_path(kind, name);
        let temporary = path.with_extension("new");
        let _ = std::fs::remove_file(&temporary);
        symlink(instance, &temporary).map_err(at(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(at(&path))?;
        sync_dir(&self.dir.join(kind.noun()))
    }

    /// Remembers that the object `id` (qualified) was created under `name`, so that its
    /// delete releases the name.
    pub fn record(&self, kind: Kind, id: &str, name: &str) -> Result<(), IndexError> {
        let link = self.dir.join(kind.ids_dir()).join(hash(id));
        match symlink(hash(name), &link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(at(&link)(e)),
            _ => Ok(()),
        }
    }

    /// Releases the name the object `id` of `instance` was created under, if the claim is
    /// still that instance's. Deleting what was never recorded is fine.
    pub fn release(&self, kind: Kind, id: &str, instance: &str) -> Result<(), IndexError> {
        let link = self.dir.join(kind.ids_dir()).join(hash(id));
        let name_hash = match std::fs::read_link(&link) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(at(&link)(e)),
        };
        let claim = self.dir.join(kind.noun()).join(name_hash);
        match read_link(&claim) {
            Ok(owner) if owner == instance => remove(&claim)?,
            Ok(_) => {}
            Err(e) if e.source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        remove(&link)
    }

    fn claim_path(&self, kind: Kind, name: &str) -> PathBuf {
        self.dir.join(kind.noun()).join(hash(name))
    }
}

/// Runs an index operation on a blocking thread (it does file system calls and a flush).
pub async fn blocking<R: Send + 'static>(
    index: &Arc<NameIndex>,
    f: impl FnOnce(&NameIndex) -> Result<R, IndexError> + Send + 'static,
) -> Result<R, Status> {
    let index = index.clone();
    tokio::task::spawn_blocking(move || f(&index))
        .await
        .map_err(|e| Status::internal(format!("name index task failed: {e}")))?
        .map_err(Status::from)
}

fn hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn read_link(path: &Path) -> Result<String, IndexError> {
    let target = std::fs::read_link(path).map_err(at(path))?;
    Ok(target.to_string_lossy().into_owned())
}

fn remove(path: &Path) -> Result<(), IndexError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(path)(e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_belongs_to_its_first_claimant_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let index = NameIndex::open(tmp.path()).unwrap();
        assert_eq!(index.claim(Kind::Volume, "pvc-1", "fast").unwrap(), None);
        // A retry on the same instance is its own claim; another instance is told the owner.
        assert_eq!(index.claim(Kind::Volume, "pvc-1", "fast").unwrap(), None);
        assert_eq!(index.claim(Kind::Volume, "pvc-1", "slow").unwrap().as_deref(), Some("fast"));
        // Volume and snapshot names are separate namespaces.
        assert_eq!(index.claim(Kind::Snapshot, "pvc-1", "slow").unwrap(), None);

        index.record(Kind::Volume, "fast:v-1", "pvc-1").unwrap();
        index.record(Kind::Volume, "fast:v-1", "pvc-1").unwrap();
        // Another instance's id never releases the name.
        index.release(Kind::Volume, "slow:v-1", "slow").unwrap();
        assert_eq!(index.claim(Kind::Volume, "pvc-1", "slow").unwrap().as_deref(), Some("fast"));
        index.release(Kind::Volume, "fast:v-1", "fast").unwrap();
        index.release(Kind::Volume, "fast:v-1", "fast").unwrap();
        assert_eq!(index.claim(Kind::Volume, "pvc-1", "slow").unwrap(), None);
    }

    #[test]
    fn claims_survive_reopening_and_can_be_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        NameIndex::open(tmp.path()).unwrap().claim(Kind::Volume, "pvc-2", "fast").unwrap();
        let index = NameIndex::open(tmp.path()).unwrap();
        assert_eq!(index.claim(Kind::Volume, "pvc-2", "slow").unwrap().as_deref(), Some("fast"));
        index.take_over(Kind::Volume, "pvc-2", "slow").unwrap();
        assert_eq!(index.claim(Kind::Volume, "pvc-2", "slow").unwrap(), None);
        assert_eq!(index.claim(Kind::Volume, "pvc-2", "fast").unwrap().as_deref(), Some("slow"));
        // A delete of the old owner's object leaves the new owner's claim alone.
        index.record(Kind::Volume, "fast:v-2", "pvc-2").unwrap();
        index.release(Kind::Volume, "fast:v-2", "fast").unwrap();
        assert_eq!(index.claim(Kind::Volume, "pvc-2", "fast").unwrap().as_deref(), Some("slow"));
    }
}
