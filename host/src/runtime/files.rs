//! File operations the host performs inside a backend's granted directories on its behalf:
//! copying a volume image (sharing extents where the filesystem can) and reporting free
//! space. WASI offers neither reflinks nor statvfs, so the host does both, on paths it has
//! resolved through the grants.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{Whence, lseek};

use super::grants::{Grants, OpenError};

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Copies `source` to `destination` (replacing it), reflinking where the filesystem
/// supports it and otherwise copying only the data extents so holes stay holes. The copy
/// is durable (fsynced) before this returns.
pub fn copy(grants: &Grants, source: &str, destination: &str) -> Result<(), OpenError> {
    let src = File::from(grants.open(source, OFlag::O_RDONLY, Mode::empty())?);
    let dst = File::from(grants.open(
        destination,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
        Mode::from_bits_truncate(0o600),
    )?);
    // SAFETY: FICLONE takes the source descriptor as its argument; both fds are open.
    let cloned = unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as _) };
    if cloned.is_err() {
        copy_extents(&src, &dst)?;
    }
    dst.set_len(src.metadata().map_err(io_errno)?.len()).map_err(io_errno)?;
    dst.sync_all().map_err(io_errno)?;
    Ok(())
}

fn copy_extents(src: &File, dst: &File) -> Result<(), OpenError> {
    let len = src.metadata().map_err(io_errno)?.len() as i64;
    let mut offset = 0i64;
    while offset < len {
        let data = match lseek(src.as_fd(), offset, Whence::SeekData) {
            Ok(data) => data,
            Err(Errno::ENXIO) => break, // only a hole remains
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(src.as_fd(), data, Whence::SeekHole)?;
        let (mut from, mut to) = (data, data);
        while from < hole {
            let want = (hole - from) as usize;
            let n = nix::fcntl::copy_file_range(src.as_fd(), Some(&mut from), dst.as_fd(), Some(&mut to), want)?;
            if n == 0 {
                break;
            }
        }
        offset = hole;
    }
    Ok(())
}

fn io_errno(e: std::io::Error) -> OpenError {
    OpenError::Io(Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))
}

/// Total and available bytes of the filesystem holding a granted path.
pub fn stats(grants: &Grants, path: &str) -> Result<(u64, u64), OpenError> {
    let fd = grants.open(path, OFlag::O_PATH, Mode::empty())?;
    let st = nix::sys::statvfs::fstatvfs(&fd)?;
    let frag = st.fragment_size() as u64;
    Ok((st.blocks() as u64 * frag, st.blocks_available() as u64 * frag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DirectoryGrant, GrantsConfig};
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let grants = Grants::new(&GrantsConfig {
            directories: vec![DirectoryGrant { host: dir.path().into(), guest: "/d".into(), read_only: false }],
            ..Default::default()
        })
        .unwrap();
        let mut f = File::create(dir.path().join("src")).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(b"payload").unwrap();
        f.sync_all().unwrap();
        copy(&grants, "/d/src", "/d/dst").unwrap();
        let copied = std::fs::read(dir.path().join("dst")).unwrap();
        assert_eq!(copied.len(), 64 << 20);
        assert_eq!(&copied[32 << 20..(32 << 20) + 7], b"payload");
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(dir.path().join("dst")).unwrap().blocks();
        assert!(blocks < 64 * 1024, "copy stays sparse ({blocks} blocks)");
        assert!(matches!(copy(&grants, "/d/missing", "/d/x"), Err(OpenError::Io(Errno::ENOENT))));
        let (total, avail) = stats(&grants, "/d").unwrap();
        assert!(total > 0 && avail <= total);
    }
}
