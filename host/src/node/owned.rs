//! What belongs to one backend instance on this node, decided from the kernel and that
//! instance's grants alone: a node operation for an instance opens, attaches, formats,
//! unmounts and detaches only what this module says is the instance's.
//!
//! - **Files** a backend names are opened beneath their directory grant with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: no `..`, no symlink at all, so a
//!   link the backend planted in its own directory (even one pointing into another
//!   backend's directory) is refused, not followed.
//! - **Loop devices** are the instance's when the file they serve, by the identity the
//!   kernel reports (`LOOP_GET_STATUS64` `lo_device`/`lo_inode`), is such a file. sysfs'
//!   backing path only says where to look; the file found there must be the same inode.
//! - **Block devices** are the instance's when a path its devices grant matches resolves
//!   to the device (the device node itself, or a udev alias such as an LV's
//!   `/dev/vg0/lv` → `/dev/dm-3` or a `/dev/disk/by-id` link), checked on the device
//!   number after every symlink is resolved.
//! - **Disks named by serial** are looked up under the by-id root by whole names of
//!   known schemes only ([`SERIAL_SCHEMES`]), never by a suffix, and then pass the
//!   devices grant like any block device.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::volume::{NodeError, Realised};
use super::{DeviceNumber, loopdev};
use crate::runtime::grants::Grants;

/// The by-id names under which a disk appears by serial: `(prefix, drop dashes)`. A disk
/// matches only the whole name `prefix + serial`.
/// - `nvme-Amazon_Elastic_Block_Store_<serial>`: AWS EBS on Nitro, the volume id without
///   its dash (`vol-0123…` → `vol0123…`).
/// - `virtio-<serial>`: virtio-blk disks with a serial (KVM, OpenStack).
/// - `scsi-0Google_PersistentDisk_<serial>`: Google persistent disks (the disk's device name).
pub const SERIAL_SCHEMES: &[(&str, bool)] =
    &[("nvme-Amazon_Elastic_Block_Store_", true), ("virtio-", false), ("scsi-0Google_PersistentDisk_", false)];

/// Directories of `/dev` that hold no device aliases (and may hold many files).
const NOT_ALIASES: &[&str] = &["pts", "shm", "mqueue", "hugepages", "fd"];
/// How deep below `/dev` aliases are looked for (`/dev/disk/by-id/<name>` is 3).
const ALIAS_DEPTH: usize = 3;

/// A device of the instance.
#[derive(Debug)]
pub enum Owned {
    /// A loop device the host attached to a file of the instance.
    LoopFile(loopdev::LoopDevice),
    /// A block device its devices grant names (never detached by the host).
    Device,
}

/// Opens a file a backend names (a guest path) beneath its directory grant, following no
/// symlink; `flags` says how (a writing open is refused on a read-only grant). Also
/// answers the host path, for messages and loop device names.
pub fn open_file(grants: &Grants, guest: &str, flags: OFlag) -> Result<(OwnedFd, PathBuf), NodeError> {
    let refused = |e: String| NodeError::FailedPrecondition(format!("backend file {guest:?}: {e}"));
    let (grant, rel) = grants.locate(guest).map_err(|e| refused(e.to_string()))?;
    if flags.intersects(OFlag::O_WRONLY | OFlag::O_RDWR) && grant.read_only {
        return Err(refused("its directory grant is read-only".into()));
    }
    let fd = open_beneath(&grant.host, &rel, flags).map_err(|errno| match errno {
        nix::Error::ENOENT => NodeError::NotFound(format!("backing file {guest}: {errno}")),
        nix::Error::ELOOP | nix::Error::EXDEV => {
            refused("it is or passes through a symbolic link, which the host never follows".into())
        }
        errno => NodeError::Internal(format!("open backing file {guest}: {errno}")),
    })?;
    Ok((fd, grant.host.join(rel)))
}

fn open_beneath(root: &Path, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let root = nix::fcntl::open(root, OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    // No O_NOFOLLOW: with it, O_PATH would open a final symlink itself; without it,
    // RESOLVE_NO_SYMLINKS refuses a symlink at every component, the last one included.
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(&root, rel, how)
}

/// Whether the device `number` is the instance's, and how.
pub fn owner_of(grants: &Grants, number: DeviceNumber) -> Result<Option<Owned>, NodeError> {
    if let Some(device) = loopdev::list().map_err(internal)?.into_iter().find(|d| d.device == number)
        && serves_granted_file(grants, &device)
    {
        return Ok(Some(Owned::LoopFile(device)));
    }
    Ok(granted_number(grants, number).then_some(Owned::Device))
}

/// Whether a loop device serves a file beneath one of the instance's directory grants.
fn serves_granted_file(grants: &Grants, device: &loopdev::LoopDevice) -> bool {
    let Some(identity) = loopdev::backing_identity(device) else { return false };
    grants.directories.iter().any(|grant| {
        let Ok(rel) = device.backing_file.strip_prefix(&grant.host) else { return false };
        if device.backing_deleted {
            // Unlinked: no inode to reopen. It lived beneath the grant, on its filesystem.
            return std::fs::metadata(&grant.host).is_ok_and(|m| DeviceNumber::from_dev_t(m.dev()) == identity.device);
        }
        open_beneath(&grant.host, rel, OFlag::O_PATH)
            .ok()
            .and_then(|fd| loopdev::FileIdentity::of(std::os::fd::AsFd::as_fd(&fd), rel).ok())
            == Some(identity)
    })
}

/// Whether a path the instance's devices grant matches resolves to the device `number`.
fn granted_number(grants: &Grants, number: DeviceNumber) -> bool {
    let mut aliases = Vec::new();
    collect_aliases(Path::new("/dev"), number, ALIAS_DEPTH, &mut aliases);
    aliases.iter().any(|alias| alias.to_str().is_some_and(|a| grants.check_device(a).is_ok()))
}

fn collect_aliases(dir: &Path, number: DeviceNumber, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_dir() {
            let skip = dir == Path::new("/dev") && NOT_ALIASES.iter().any(|n| entry.file_name() == *n);
            if depth > 1 && !skip {
                collect_aliases(&path, number, depth - 1, found);
            }
        } else if (kind.is_symlink() || kind.is_block_device())
            && std::fs::metadata(&path)
                .is_ok_and(|m| m.file_type().is_block_device() && DeviceNumber::from_dev_t(m.rdev()) == number)
        {
            found.push(path);
        }
    }
}

/// A block device a backend named by path: the path must match its devices grant as
/// named, and what it resolves to must be a block device (used under its canonical path).
pub fn named_device(grants: &Grants, named: &str) -> Result<Realised, NodeError> {
    grants.check_device(named).map_err(|e| NodeError::FailedPrecondition(format!("backend refused: {e}")))?;
    resolved_device(Path::new(named))
}

/// A disk by its serial under `root`, by the whole names of [`SERIAL_SCHEMES`], once its
/// devices grant names what the link resolves to; NOT_FOUND when no such link exists.
pub fn disk_by_serial(grants: &Grants, root: &Path, serial: &str) -> Result<Realised, NodeError> {
    let plain = !serial.is_empty()
        && !serial.starts_with('.')
        && serial.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !plain {
        return Err(NodeError::Internal(format!(
            "the backend named a disk by serial {serial:?}, which is not a plain serial (letters, digits, `-_.`)"
        )));
    }
    for (prefix, drop_dashes) in SERIAL_SCHEMES {
        let name = if *drop_dashes { serial.replace('-', "") } else { serial.to_owned() };
        let link = root.join(format!("{prefix}{name}"));
        if std::fs::symlink_metadata(&link).is_err() {
            continue;
        }
        let device = resolved_device(&link)?;
        if !granted_number(grants, device.number) {
            return Err(NodeError::FailedPrecondition(format!(
                "backend refused: the disk with serial {serial} is {}, which its devices grant does not name",
                device.path.display()
            )));
        }
        return Ok(device);
    }
    Err(NodeError::NotFound(format!("no disk with serial {serial} under {}", root.display())))
}

/// The block device `path` resolves to, under its canonical path.
fn resolved_device(path: &Path) -> Result<Realised, NodeError> {
    let canonical = path.canonicalize().map_err(|e| NodeError::NotFound(format!("device {}: {e}", path.display())))?;
    let meta = std::fs::metadata(&canonical)
        .map_err(|e| NodeError::NotFound(format!("device {}: {e}", canonical.display())))?;
    if !meta.file_type().is_block_device() {
        return Err(NodeError::FailedPrecondition(format!("{} is not a block device", path.display())));
    }
    Ok(Realised { path: canonical, number: DeviceNumber::from_dev_t(meta.rdev()), attached_now: false })
}

fn internal(e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(e.to_string())
}
