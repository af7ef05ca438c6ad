//! Filesystem steps with the guarantees the rest of the backend relies on: metadata is
//! replaced atomically and durably, directory entries are flushed, and every `io::Error`
//! becomes a typed CSI error naming the step and the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use kit::types::Error;

/// An `io::Error` from `action` on `path` as a CSI error: a full filesystem is
/// `resource-exhausted`, a file over the filesystem's size limit is `out-of-range`, anything
/// else is `internal`. Callers that give `NotFound` a meaning handle it before calling this.
pub fn io_error(action: &str, path: &Path, err: io::Error) -> Error {
    let message = format!("{action} {}: {err}", path.display());
    match err.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Error::ResourceExhausted(message),
        ErrorKind::FileTooLarge => Error::OutOfRange(message),
        _ => Error::Internal(message),
    }
}

/// Writes `bytes` to a new file at `path` (replacing one there) and flushes it.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    File::create(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(|err| io_error("write", path, err))
}

/// Replaces the file at `path` with `bytes` so that a crash at any point leaves either the
/// old content or the new one: write `<path>.tmp`, flush it, rename it over `path`, flush
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_durable(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(|err| io_error("rename into place", path, err))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Makes the entries of `dir` (files created or renamed in it) durable.
///
/// A platform that cannot flush a directory (it refuses to open one as a file, or to sync
/// it) is tolerated: the rename that commits a change is still atomic, only its durability
/// across a power loss then rests on the filesystem.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    match File::open(dir).and_then(|handle| handle.sync_all()) {
        Ok(()) => Ok(()),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::Unsupported
                    | ErrorKind::InvalidInput
                    | ErrorKind::PermissionDenied
                    | ErrorKind::IsADirectory
            ) =>
        {
            Ok(())
        }
        Err(err) => Err(io_error("flush directory", dir, err)),
    }
}

/// Sets the length of the file at `path` to exactly `len` bytes; a grown part is a hole,
/// so it costs no space. Not flushed: see [`resize_file`].
pub fn set_len(path: &Path, len: u64) -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(len))
        .map_err(|err| io_error("resize", path, err))
}

/// [`set_len`], then flushes the file.
pub fn resize_file(path: &Path, len: u64) -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| {
            file.set_len(len)?;
            file.sync_all()
        })
        .map_err(|err| io_error("resize", path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_creates_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["meta.json"]);
    }

    #[test]
    fn write_atomic_into_a_missing_directory_is_internal() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(&dir.path().join("gone/meta.json"), b"x").unwrap_err();
        assert!(matches!(&err, Error::Internal(m) if m.contains("gone/meta.json.tmp")), "{err:?}");
    }

    #[test]
    fn sync_dir_flushes_existing_and_fails_on_missing() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        assert!(matches!(sync_dir(&dir.path().join("missing")), Err(Error::Internal(_))));
    }

    #[test]
    fn resize_file_sets_the_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        fs::write(&path, b"data").unwrap();
        resize_file(&path, 1 << 30).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 1 << 30);
        resize_file(&path, 4096).unwrap();
        let content = fs::read(&path).unwrap();
        assert_eq!(content.len(), 4096);
        assert_eq!(&content[..5], b"data\0");
        assert!(matches!(resize_file(&dir.path().join("missing"), 10), Err(Error::Internal(_))));
    }

    #[test]
    fn io_errors_map_to_codes() {
        let path = Path::new("/data/x");
        let of = |kind| io_error("write", path, io::Error::from(kind));
        assert!(matches!(of(ErrorKind::StorageFull), Error::ResourceExhausted(_)));
        assert!(matches!(of(ErrorKind::QuotaExceeded), Error::ResourceExhausted(_)));
        assert!(matches!(of(ErrorKind::FileTooLarge), Error::OutOfRange(_)));
        assert!(matches!(of(ErrorKind::PermissionDenied), Error::Internal(m) if m.starts_with("write /data/x: ")));
    }
}
