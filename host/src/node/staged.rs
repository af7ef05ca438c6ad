//! Which device each staged volume is, so that NodeUnpublish and NodeUnstage of one volume
//! never unmount another volume of the same backend instance at a path the CO got wrong.
//!
//! The kernel says what is mounted where and which instance a device belongs to
//! (`owned.rs`), but not which of an instance's volumes a device is: only the backend knows,
//! and asking it on every unmount would reactivate LVs and wait on backends. So the host
//! notes the device number when it stages or publishes a volume (`<dir>/<sha256(id)>`,
//! written whole by rename and flushed) and forgets it when the volume is unstaged.
//!
//! A volume without a note (staged by an older host, or a crash right after its mount) is
//! judged per instance, as before. A note outlives its mounts only when the host crashed
//! between an unmount and the forget (or the node rebooted with the volume staged); the next
//! stage or publish of the volume rewrites it, and until then the per-instance rule holds
//! whatever device number it names.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::DeviceNumber;
use super::volume::NodeError;

pub struct StagedDevices {
    dir: PathBuf,
}

impl StagedDevices {
    /// The notes kept in `dir` (created when missing).
    pub fn open(dir: &Path) -> std::io::Result<StagedDevices> {
        std::fs::create_dir_all(dir)?;
        Ok(StagedDevices { dir: dir.to_owned() })
    }

    /// Notes that `volume` is the device `number`.
    pub fn note(&self, volume: &str, number: DeviceNumber) -> Result<(), NodeError> {
        let path = self.path(volume);
        if self.device_of(volume)? == Some(number) {
            return Ok(());
        }
        let temporary = path.with_extension("new");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            writeln!(file, "{number}")?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| internal(&path, e))
    }

    /// The device `volume` was noted as, if any.
    pub fn device_of(&self, volume: &str) -> Result<Option<DeviceNumber>, NodeError> {
        let path = self.path(volume);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                NodeError::Internal(format!("staged-device note {} holds {:?}", path.display(), text.trim()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal(&path, e)),
        }
    }

    /// Forgets `volume` (it is unstaged); forgetting twice is fine.
    pub fn forget(&self, volume: &str) -> Result<(), NodeError> {
        let path = self.path(volume);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(internal(&path, e)),
            _ => Ok(()),
        }
    }

    fn path(&self, volume: &str) -> PathBuf {
        self.dir.join(hex::encode(Sha256::digest(volume.as_bytes())))
    }
}

fn internal(path: &Path, e: std::io::Error) -> NodeError {
    NodeError::Internal(format!("staged-device note {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_survive_reopening_and_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let notes = StagedDevices::open(&dir.path().join("staged")).unwrap();
        let loop3 = DeviceNumber { major: 7, minor: 3 };
        assert_eq!(notes.device_of("local:v-1").unwrap(), None);
        notes.note("local:v-1", loop3).unwrap();
        notes.note("local:v-1", loop3).unwrap();
        let notes = StagedDevices::open(&dir.path().join("staged")).unwrap();
        assert_eq!(notes.device_of("local:v-1").unwrap(), Some(loop3));
        assert_eq!(notes.device_of("local:v-2").unwrap(), None);
        notes.note("local:v-1", DeviceNumber { major: 7, minor: 4 }).unwrap();
        assert_eq!(notes.device_of("local:v-1").unwrap(), Some(DeviceNumber { major: 7, minor: 4 }));
        notes.forget("local:v-1").unwrap();
        notes.forget("local:v-1").unwrap();
        assert_eq!(notes.device_of("local:v-1").unwrap(), None);
    }
}
