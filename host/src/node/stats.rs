//! Usage and size numbers the kernel keeps, for NodeGetVolumeStats and NodeExpandVolume:
//! bytes and inodes of a mounted filesystem (statvfs) and the size of a block device
//! (`BLKGETSIZE64`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("statvfs {path}: {source}")]
    Statvfs { path: PathBuf, source: Errno },
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{0} is not a block device")]
    NotBlockDevice(PathBuf),
    #[error("BLKGETSIZE64 on {path}: {source}")]
    Size { path: PathBuf, source: Errno },
}

/// What a mounted filesystem holds. Available bytes are those an unprivileged writer can
/// use (reserved blocks excluded), so `used + available` may be less than `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

mod sys {
    // BLKGETSIZE64 is _IOR(0x12, 114, size_t) and always writes a u64.
    nix::ioctl_read_bad!(blkgetsize64, nix::request_code_read!(0x12, 114, std::mem::size_of::<usize>()), u64);
}

/// Statistics of the filesystem mounted at (or containing) `path`.
pub fn filesystem_stats(path: &Path) -> Result<FsStats, StatsError> {
    let st =
        nix::sys::statvfs::statvfs(path).map_err(|source| StatsError::Statvfs { path: path.to_owned(), source })?;
    // On 64-bit Linux every statvfs field is a u64.
    let unit = match st.fragment_size() {
        0 => st.block_size(),
        f => f,
    };
    let bytes = |blocks: u64| blocks.saturating_mul(unit);
    let (blocks, free, available) = (st.blocks(), st.blocks_free(), st.blocks_available());
    let (files, files_free) = (st.files(), st.files_free());
    Ok(FsStats {
        total_bytes: bytes(blocks),
        available_bytes: bytes(available),
        used_bytes: bytes(blocks.saturating_sub(free)),
        total_inodes: files,
        free_inodes: files_free,
        used_inodes: files.saturating_sub(files_free),
    })
}

/// Size in bytes of the block device at `device`.
pub fn block_device_size(device: &Path) -> Result<u64, StatsError> {
    let file = File::open(device).map_err(|source| StatsError::Open { path: device.to_owned(), source })?;
    let is_block = file
        .metadata()
        .map_err(|source| StatsError::Open { path: device.to_owned(), source })?
        .file_type()
        .is_block_device();
    if !is_block {
        return Err(StatsError::NotBlockDevice(device.to_owned()));
    }
    let mut size = 0u64;
    // SAFETY: the descriptor is open and `size` is the u64 the kernel writes.
    unsafe { sys::blkgetsize64(file.as_raw_fd(), &mut size) }
        .map_err(|source| StatsError::Size { path: device.to_owned(), source })?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::testing::{self, LoopGuard, MountGuard};
    use crate::node::{filesystem, loopdev, mount};
    use std::time::{Duration, Instant};

    #[test]
    fn root_filesystem_numbers_are_consistent() {
        let s = filesystem_stats(Path::new("/")).unwrap();
        assert!(s.total_bytes > 0 && s.total_inodes > 0);
        assert!(s.used_bytes + s.available_bytes <= s.total_bytes);
        assert_eq!(s.used_inodes + s.free_inodes, s.total_inodes);
    }

    #[test]
    fn errors_name_the_path() {
        let e = filesystem_stats(Path::new("/no/such/place")).unwrap_err();
        assert!(matches!(e, StatsError::Statvfs { source: Errno::ENOENT, .. }));
        assert!(e.to_string().contains("/no/such/place"));
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(block_device_size(file.path()), Err(StatsError::NotBlockDevice(_))));
        assert!(matches!(block_device_size(Path::new("/no/such/dev")), Err(StatsError::Open { .. })));
    }

    #[test]
    fn a_real_mount_reports_its_size_and_what_was_written() {
        if !testing::privileged("a_real_mount_reports_its_size_and_what_was_written") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("stats.img", 128 << 20);
        let target = scratch.dir("mnt");
        let _loop_guard = LoopGuard::new(&image);
        let device = loopdev::attach(&image).unwrap();
        assert_eq!(block_device_size(&device.path).unwrap(), 128 << 20);
        let deadline = Instant::now() + Duration::from_secs(60);
        filesystem::format(&device.path, filesystem::FsType::Ext4, deadline).unwrap();
        let _mount_guard = MountGuard::new(&target);
        mount::mount(&device.path, &target, "ext4", &mount::MountOptions::parse::<&str>(&[]).unwrap()).unwrap();

        let before = filesystem_stats(&target).unwrap();
        assert!(before.total_bytes > 100 << 20 && before.total_bytes <= 128 << 20, "{before:?}");
        assert!(before.available_bytes > 90 << 20, "{before:?}");
        std::fs::create_dir(target.join("d")).unwrap();
        for i in 0..10 {
            std::fs::write(target.join("d").join(i.to_string()), vec![7u8; 1 << 20]).unwrap();
        }
        nix::unistd::sync();
        let after = filesystem_stats(&target).unwrap();
        assert_eq!(after.total_bytes, before.total_bytes);
        assert!(after.used_bytes >= before.used_bytes + (10 << 20), "{before:?} -> {after:?}");
        assert_eq!(after.used_inodes, before.used_inodes + 11);
    }
}
