//! Mounts for NodeStage (a device at the staging path) and NodePublish (bind mounts into
//! targets) through mount(2)/umount2(2), never the `mount` binary.
//!
//! - CSI mount flags are parsed once ([`MountOptions::parse`]): the generic ones become
//!   `MS_*` flags, the rest are handed to the filesystem as its data string, and the ones
//!   that would change what kind of mount this is (`bind`, `remount`, propagation) are
//!   refused. Every volume mount is `nosuid,nodev` unless the CO's flags say `suid` or `dev`:
//!   a filesystem's contents are the backend's (a loopfile image is written by it), so a
//!   setuid binary or a device node in it must not become the node's.
//! - A bind mount cannot be made read-only (or nosuid, noexec…) in one call: it is bound,
//!   then remounted with `MS_BIND|MS_REMOUNT`. The remount keeps the per-mount flags the
//!   source already has, so publishing never weakens what staging set, and a failed
//!   remount undoes the bind rather than leave a writable mount where read-only was asked.
//!   Filesystem data options do not apply to a bind (it shares the staged superblock).
//! - A read-only bind of a *device node* makes only the node's inode read-only: the kernel
//!   still lets a writer open the device through it. Read-only raw block volumes need
//!   another guard (a read-only device); [`bind_device`] cannot provide one.
//! - Unmounting is never lazy; "not mounted" and "no such path" count as done, busy is an
//!   error. It does not follow a symlink at the target.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::FsFlags;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount option {option:?}: {reason}")]
    Option { option: String, reason: &'static str },
    #[error("mount {device} on {target} as {fs_type}: {errno}")]
    Mount { device: PathBuf, target: PathBuf, fs_type: String, errno: Errno },
    #[error("bind mount {from} on {target}: {errno}")]
    Bind { from: PathBuf, target: PathBuf, errno: Errno },
    #[error("remount bind mount {target} with {flags:?}: {errno} (the bind was undone)")]
    Remount { target: PathBuf, flags: MsFlags, errno: Errno },
    #[error("unmount {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
    #[error("inspect {path}: {source}")]
    Inspect { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a {expected}")]
    WrongType { path: PathBuf, expected: &'static str },
}

/// Per-mount flags: the ones a bind remount can set.
const PER_MOUNT: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Per-mount flags every volume mount starts from (see the module header).
const VOLUME_DEFAULTS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Mount flags as `mount(2)` takes them: flags, and the filesystem's data string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    flags: MsFlags,
    data: String,
}

impl MountOptions {
    /// Parses CSI mount flags; each may itself be a comma-separated list, and a later
    /// option wins over an earlier opposite (`ro,rw` is read-write); the start is
    /// `nosuid,nodev`.
    pub fn parse<S: AsRef<str>>(options: &[S]) -> Result<MountOptions, MountError> {
        let mut flags = VOLUME_DEFAULTS;
        let mut data: Vec<&str> = Vec::new();
        for option in options.iter().flat_map(|o| o.as_ref().split(',')) {
            let refuse = |reason| Err(MountError::Option { option: option.to_owned(), reason });
            let (set, clear) = match option {
                "" | "defaults" => continue,
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
                "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
                "bind" | "rbind" | "remount" | "move" | "loop" => {
                    return refuse("changes the kind of mount; the host decides that");
                }
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" | "unbindable" | "runbindable" => {
                    return refuse("mount propagation is not a volume option");
                }
                other if other.contains('\0') => return refuse("contains a NUL byte"),
                other => {
                    data.push(other);
                    continue;
                }
            };
            flags = (flags | set) - clear;
        }
        Ok(MountOptions { flags, data: data.join(",") })
    }

    pub fn flags(&self) -> MsFlags {
        self.flags
    }

    /// Options handed to the filesystem, comma separated (may be empty).
    pub fn data(&self) -> &str {
        &self.data
    }
}

/// What [`unmount`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// The topmost mount at the path was removed (check again for stacked mounts).
    Done,
    /// Nothing was mounted there, or the path does not exist.
    NotMounted,
}

/// Mounts the filesystem on `device` at `target`.
pub fn mount(device: &Path, target: &Path, fs_type: &str, options: &MountOptions) -> Result<(), MountError> {
    let data = (!options.data.is_empty()).then_some(options.data.as_str());
    nix::mount::mount(Some(device), target, Some(fs_type), options.flags, data).map_err(|errno| MountError::Mount {
        device: device.to_owned(),
        target: target.to_owned(),
        fs_type: fs_type.to_owned(),
        errno,
    })
}

/// Bind-mounts `source` (a staged mount) at `target`, read-only when `readonly` or when
/// the options say `ro`, with the options' other per-mount flags.
pub fn bind(source: &Path, target: &Path, readonly: bool, options: &MountOptions) -> Result<(), MountError> {
    let mut flags = options.flags & PER_MOUNT;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    bind_with(source, target, flags)
}

/// Bind-mounts the block device node `device` onto the existing regular file `target`
/// (a raw block volume's publish target). See the module header about read-only.
pub fn bind_device(device: &Path, target: &Path, readonly: bool) -> Result<(), MountError> {
    let inspect = |path: &Path| {
        std::fs::symlink_metadata(path).map_err(|source| MountError::Inspect { path: path.to_owned(), source })
    };
    if !inspect(device)?.file_type().is_block_device() {
        return Err(MountError::WrongType { path: device.to_owned(), expected: "block device" });
    }
    let target_type = inspect(target)?.file_type();
    // Only a plain file: a device node there means something is bound on it already.
    if !target_type.is_file() {
        return Err(MountError::WrongType { path: target.to_owned(), expected: "regular file" });
    }
    bind_with(device, target, if readonly { MsFlags::MS_RDONLY } else { MsFlags::empty() })
}

/// Removes the topmost mount at `target`; not lazy, never following a symlink there.
pub fn unmount(target: &Path) -> Result<Unmounted, MountError> {
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(Unmounted::Done),
        Err(Errno::EINVAL | Errno::ENOENT) => Ok(Unmounted::NotMounted),
        Err(errno) => Err(MountError::Unmount { target: target.to_owned(), errno }),
    }
}

fn bind_with(source: &Path, target: &Path, requested: MsFlags) -> Result<(), MountError> {
    // What the bind inherits from the source; the remount must keep it.
    let inherited =
        nix::sys::statvfs::statvfs(source).map(|st| per_mount_flags(st.flags())).unwrap_or(MsFlags::empty());
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|errno| MountError::Bind { from: source.to_owned(), target: target.to_owned(), errno })?;
    if inherited.contains(requested) {
        return Ok(());
    }
    let flags = inherited | requested;
    let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
    if let Err(errno) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
        let _ = nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW);
        return Err(MountError::Remount { target: target.to_owned(), flags, errno });
    }
    Ok(())
}

fn per_mount_flags(st: FsFlags) -> MsFlags {
    [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st_flag, _)| st.contains(*st_flag))
    .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::mountinfo::MountTable;
    use crate::node::testing::{self, LoopGuard, MountGuard};
    use crate::node::{filesystem, loopdev};
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::time::{Duration, Instant};

    #[test]
    fn options_split_into_flags_and_data() {
        let o = MountOptions::parse(&["ro", "noatime,nodev", "nosuid", "errors=remount-ro", "discard", "defaults"])
            .unwrap();
        assert_eq!(o.flags(), MsFlags::MS_RDONLY | MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_NOSUID);
        assert_eq!(o.data(), "errors=remount-ro,discard");
        let o = MountOptions::parse(&["sync,dirsync,noexec", "ro", "rw", "lazytime"]).unwrap();
        assert_eq!(
            o.flags(),
            VOLUME_DEFAULTS | MsFlags::MS_SYNCHRONOUS | MsFlags::MS_DIRSYNC | MsFlags::MS_NOEXEC | MsFlags::MS_LAZYTIME
        );
        assert_eq!(o.data(), "");
        assert_eq!(MountOptions::parse::<String>(&[]).unwrap().flags(), VOLUME_DEFAULTS);
        assert_eq!(MountOptions::parse(&["suid", "dev"]).unwrap().flags(), MsFlags::empty());
    }

    #[test]
    fn options_that_change_the_kind_of_mount_are_refused() {
        for bad in ["bind", "rw,rbind", "remount", "shared", "rprivate", "a\0b"] {
            let e = MountOptions::parse(&[bad]).unwrap_err();
            assert!(matches!(e, MountError::Option { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn statvfs_flags_map_to_per_mount_flags() {
        assert_eq!(per_mount_flags(FsFlags::ST_RDONLY | FsFlags::ST_NOSUID), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(per_mount_flags(FsFlags::empty()), MsFlags::empty());
    }

    #[test]
    fn bind_device_refuses_wrong_file_types() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            bind_device(&file, &file, false),
            Err(MountError::WrongType { expected: "block device", .. })
        ));
        assert!(matches!(bind_device(Path::new("/no/such"), &file, false), Err(MountError::Inspect { .. })));
    }

    #[test]
    fn unmounting_what_is_not_mounted_is_done() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(unmount(&dir.path().join("missing")).unwrap(), Unmounted::NotMounted);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(unmount(dir.path()).unwrap(), Unmounted::NotMounted);
        }
    }

    #[test]
    fn stage_then_publish_read_write_and_read_only() {
        if !testing::privileged("stage_then_publish_read_write_and_read_only") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("vol.img", 64 << 20);
        let (staging, rw, ro) = (scratch.dir("staging"), scratch.dir("rw"), scratch.dir("ro"));
        let _loop_guard = LoopGuard::new(&image);
        let device = loopdev::attach(&image).unwrap();
        filesystem::format(&device.path, filesystem::FsType::Ext4, Instant::now() + Duration::from_secs(60)).unwrap();

        let _staging_guard = MountGuard::new(&staging);
        let staged = MountOptions::parse(&["nodev,nosuid", "noatime", "errors=remount-ro"]).unwrap();
        mount(&device.path, &staging, "ext4", &staged).unwrap();
        let table = MountTable::read().unwrap();
        let entry = table.at(&staging).last().unwrap();
        assert_eq!(entry.device, device.device);
        assert!(["nodev", "nosuid", "noatime", "rw"].iter().all(|o| entry.has_mount_option(o)), "{entry:?}");
        assert!(entry.super_options.contains("errors=remount-ro"), "{entry:?}");

        let _rw_guard = MountGuard::new(&rw);
        bind(&staging, &rw, false, &MountOptions::parse(&["noexec"]).unwrap()).unwrap();
        std::fs::write(rw.join("hello"), b"world").unwrap();
        assert_eq!(std::fs::read(staging.join("hello")).unwrap(), b"world");

        let _ro_guard = MountGuard::new(&ro);
        bind(&staging, &ro, true, &staged).unwrap();
        assert_eq!(std::fs::read(ro.join("hello")).unwrap(), b"world");
        let refused = std::fs::write(ro.join("other"), b"x").unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(Errno::EROFS as i32));

        let table = MountTable::read().unwrap();
        let rw_entry = table.at(&rw).last().unwrap();
        let ro_entry = table.at(&ro).last().unwrap();
        assert!(!rw_entry.read_only() && rw_entry.has_mount_option("noexec"));
        assert!(rw_entry.has_mount_option("nosuid") && rw_entry.has_mount_option("nodev"), "inherited: {rw_entry:?}");
        assert!(ro_entry.read_only() && ro_entry.has_mount_option("nosuid"), "{ro_entry:?}");
        assert_eq!(table.of_device(device.device).count(), 3);

        assert_eq!(unmount(&ro).unwrap(), Unmounted::Done);
        assert_eq!(unmount(&ro).unwrap(), Unmounted::NotMounted);
        assert_eq!(unmount(&rw).unwrap(), Unmounted::Done);
        assert_eq!(unmount(&staging).unwrap(), Unmounted::Done);
        assert!(!MountTable::read().unwrap().is_mount_point(&staging));
        assert_eq!(loopdev::detach(&device.path).unwrap(), loopdev::Detached::Now);
    }

    #[test]
    fn a_busy_mount_is_not_unmounted() {
        if !testing::privileged("a_busy_mount_is_not_unmounted") {
            return;
        }
        let scratch = testing::Scratch::new();
        let target = scratch.dir("busy");
        let _guard = MountGuard::new(&target);
        mount(Path::new("tmpfs"), &target, "tmpfs", &MountOptions::parse(&["size=1m"]).unwrap()).unwrap();
        let open = File::create(target.join("held")).unwrap();
        let e = unmount(&target).unwrap_err();
        assert!(matches!(e, MountError::Unmount { errno: Errno::EBUSY, .. }), "{e}");
        drop(open);
        assert_eq!(unmount(&target).unwrap(), Unmounted::Done);
    }

    #[test]
    fn a_device_node_is_bound_onto_a_file() {
        if !testing::privileged("a_device_node_is_bound_onto_a_file") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("block.img", 16 << 20);
        let target = scratch.path().join("dev");
        File::create(&target).unwrap();
        let _loop_guard = LoopGuard::new(&image);
        let device = loopdev::attach(&image).unwrap();
        let _guard = MountGuard::new(&target);
        bind_device(&device.path, &target, false).unwrap();
        assert!(std::fs::metadata(&target).unwrap().file_type().is_block_device());
        assert!(matches!(
            bind_device(&device.path, &scratch.path().join("nope"), false),
            Err(MountError::Inspect { .. })
        ));
        assert!(matches!(bind_device(&device.path, scratch.path(), false), Err(MountError::WrongType { .. })));

        let mut through_target = File::options().read(true).write(true).open(&target).unwrap();
        through_target.seek(SeekFrom::Start(1 << 20)).unwrap();
        through_target.write_all(b"raw bytes").unwrap();
        through_target.sync_all().unwrap();
        drop(through_target);
        let mut backing = File::open(&image).unwrap();
        backing.seek(SeekFrom::Start(1 << 20)).unwrap();
        let mut read = [0u8; 9];
        backing.read_exact(&mut read).unwrap();
        assert_eq!(&read, b"raw bytes");

        let table = MountTable::read().unwrap();
        let entry = table.at(&target).last().unwrap();
        assert_eq!(entry.root, Path::new("/").join(device.path.file_name().unwrap()));
        assert_eq!(unmount(&target).unwrap(), Unmounted::Done);
        assert!(std::fs::metadata(&target).unwrap().is_file());
    }
}
