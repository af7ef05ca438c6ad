//! What every operation works with: the parsed settings, the layout of the granted
//! directory, and the few host services reached outside it.
//!
//! The host services sit behind the [`Platform`] trait so that the operations run unchanged
//! natively in unit tests (the WIT imports only exist inside a component).

use std::path::Path;

use kit::sizing::{self, Sizing};
use kit::types::Error;

use crate::layout::Layout;
use crate::settings::Settings;

/// The host services loopfile uses (`host.copy-file`, `host.filesystem-stats`, `host.log`).
pub trait Platform {
    /// Copies a file within the granted directory, sparsely or by sharing extents.
    fn copy_file(&self, source: &Path, destination: &Path) -> Result<(), Error>;
    /// Free bytes of the filesystem holding `path`.
    fn free_bytes(&self, path: &Path) -> Result<u64, Error>;
    /// Logs a notable event (a volume or snapshot made or removed).
    fn info(&self, message: &str);
    /// Logs a problem that does not fail the call.
    fn warn(&self, message: &str);
}

/// Granularity of every volume size, and so the smallest volume: 4 KiB, a page and a
/// multiple of every sector size a loop device uses.
pub const GRANULE: u64 = 4096;

pub struct Ctx<'p> {
    pub settings: Settings,
    pub layout: Layout,
    pub platform: &'p dyn Platform,
}

impl<'p> Ctx<'p> {
    pub fn new(settings: Settings, platform: &'p dyn Platform) -> Ctx<'p> {
        let layout = Layout::new(settings.directory.clone());
        Ctx { settings, layout, platform }
    }

    /// Bytes new volumes may take now: free space less the configured reserve.
    pub fn available_bytes(&self) -> Result<u64, Error> {
        let free = self.platform.free_bytes(self.layout.root())?;
        Ok(sizing::available(free, self.settings.reserve))
    }

    /// How sizes are rounded and bounded: whole [`GRANULE`]s up to `max-volume-size`.
    pub fn sizing(&self) -> Sizing {
        Sizing { granule: GRANULE, max_volume_size: self.settings.max_volume_size }
    }
}

/// A native [`Platform`] over a temporary directory, for the operations' unit tests.
#[cfg(test)]
pub mod fake {
    use std::cell::{Cell, RefCell};
    use std::fs;
    use std::path::Path;

    use kit::types::Error;
    use tempfile::TempDir;

    use super::{Ctx, Platform};
    use crate::settings::Settings;

    pub struct FakePlatform {
        pub free: Cell<u64>,
        pub logs: RefCell<Vec<String>>,
    }

    impl Platform for FakePlatform {
        fn copy_file(&self, source: &Path, destination: &Path) -> Result<(), Error> {
            fs::copy(source, destination)
                .map(drop)
                .map_err(|err| Error::Internal(format!("copy {}: {err}", source.display())))
        }

        fn free_bytes(&self, _path: &Path) -> Result<u64, Error> {
            Ok(self.free.get())
        }

        fn info(&self, message: &str) {
            self.logs.borrow_mut().push(message.to_owned());
        }

        fn warn(&self, message: &str) {
            self.logs.borrow_mut().push(format!("WARN {message}"));
        }
    }

    /// A granted directory with plenty of free space.
    pub struct Fixture {
        pub dir: TempDir,
        pub platform: FakePlatform,
    }

    impl Fixture {
        pub fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().expect("create a temporary directory"),
                platform: FakePlatform { free: Cell::new(1 << 40), logs: RefCell::new(Vec::new()) },
            }
        }

        pub fn ctx(&self) -> Ctx<'_> {
            self.ctx_with(None, 0)
        }

        pub fn ctx_with(&self, max_volume_size: Option<u64>, reserve: u64) -> Ctx<'_> {
            let settings = Settings { directory: self.dir.path().to_owned(), max_volume_size, reserve };
            Ctx::new(settings, &self.platform)
        }
    }
}
