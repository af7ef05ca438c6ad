//! Helpers for the node tests that need root and real devices: the privilege gate, scratch
//! directories with sparse files, and guards that unmount and detach on drop, so a failing
//! assertion leaves no mount or loop device behind.
//!
//! Declare a [`LoopGuard`] before the [`MountGuard`]s that use its device: locals drop in
//! reverse order, so the mounts go first and the device is then free to detach.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{loopdev, mount};

#[path = "test_gate.rs"]
mod gate;
pub use gate::{privileged, privileged_with};

/// A temporary directory under /tmp, removed on drop.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    pub fn new() -> Scratch {
        Scratch(tempfile::Builder::new().prefix("wasmcsi-node-").tempdir_in("/tmp").expect("create scratch directory"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A sparse file of `size` bytes.
    pub fn sparse_file(&self, name: &str, size: u64) -> PathBuf {
        let path = self.path().join(name);
        File::create(&path).and_then(|f| f.set_len(size)).expect("create sparse file");
        path
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir(&path).expect("create directory");
        path
    }
}

/// Detaches every loop device serving `backing` on drop.
pub struct LoopGuard(PathBuf);

impl LoopGuard {
    pub fn new(backing: &Path) -> LoopGuard {
        LoopGuard(backing.canonicalize().expect("backing file exists"))
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        for device in loopdev::find_by_path(&self.0).unwrap_or_default() {
            if let Err(e) = loopdev::detach(&device.path) {
                eprintln!("cleanup: detach {}: {e}", device.path.display());
            }
        }
    }
}

/// Unmounts everything stacked on a path on drop (lazily as a last resort).
pub struct MountGuard(PathBuf);

impl MountGuard {
    pub fn new(target: &Path) -> MountGuard {
        MountGuard(target.to_owned())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        for _ in 0..8 {
            match mount::unmount(&self.0) {
                Ok(mount::Unmounted::Done) => continue,
                Ok(mount::Unmounted::NotMounted) => return,
                Err(e) => {
                    eprintln!("cleanup: {e}; detaching lazily");
                    let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
                    return;
                }
            }
        }
    }
}
