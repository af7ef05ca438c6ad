//! Volume-level node operations, built from the primitives: realise the device a backend
//! names, stage it (format only when blank, mount), publish it (bind), unpublish, unstage
//! (unmount, detach the loop device), expand it online and report its usage.
//!
//! Nothing is remembered between calls: each operation reads the mount table and sysfs
//! again, so a repeated call, or one after a host restart or crash, converges on the state
//! the CO asked for. Every function blocks; the Node service runs them on blocking threads.

use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::filesystem::{self, Content, FsType};
use super::mount::{self, MountOptions, Unmounted};
use super::mountinfo::MountTable;
use super::{DeviceNumber, loopdev, paths, stats};
use crate::runtime::grants::Grants;
use crate::runtime::{Device, Disk};

/// The loop driver's block major.
const LOOP_MAJOR: u32 = 7;
/// Name of the file inside a block volume's staging directory that the device is bound to.
const STAGED_DEVICE: &str = "device";

/// Why a node operation failed; the Node service maps each case to its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(e.to_string())
}

impl From<paths::PathError> for NodeError {
    fn from(e: paths::PathError) -> NodeError {
        match e {
            paths::PathError::Io { .. } => NodeError::Internal(e.to_string()),
            _ => NodeError::InvalidArgument(e.to_string()),
        }
    }
}

/// How the workload uses the volume.
#[derive(Debug, Clone)]
pub enum Access {
    Mount { fs: FsType, options: Vec<String> },
    Block,
}

/// A device node on this host.
#[derive(Debug)]
pub struct Realised {
    pub path: PathBuf,
    pub number: DeviceNumber,
    /// This call attached it (a loop device), so a failed stage must detach it again.
    pub attached_now: bool,
}

/// Makes the device a backend names exist on this node: loop-attaches a file from the
/// backend's granted directories (idempotently), checks a block device, or finds a disk by
/// serial under `by_id_root`.
pub fn realise(device: &Device, grants: &Grants, by_id_root: &Path) -> Result<Realised, NodeError> {
    match device {
        Device::File(guest) => {
            let (file, host_path) = open_backing(guest, grants)?;
            if let Some(device) = loopdev::find(file.as_fd(), &host_path).map_err(internal)? {
                return Ok(Realised { path: device.path, number: device.device, attached_now: false });
            }
            let device = loopdev::attach_fd(file.as_fd(), &host_path).map_err(internal)?;
            Ok(Realised { path: device.path, number: device.device, attached_now: true })
        }
        Device::Block(path) => granted_block_device(path, grants),
        Device::Disk(disk) => attached_disk(disk, grants, by_id_root),
    }
}

/// The device a backend names, if it is present on this node now (nothing is attached).
pub fn locate(device: &Device, grants: &Grants, by_id_root: &Path) -> Result<Option<DeviceNumber>, NodeError> {
    match device {
        Device::File(guest) => {
            let (file, host_path) = open_backing(guest, grants)?;
            Ok(loopdev::find(file.as_fd(), &host_path).map_err(internal)?.map(|d| d.device))
        }
        Device::Block(path) => Ok(granted_block_device(path, grants).ok().map(|d| d.number)),
        Device::Disk(disk) => Ok(attached_disk(disk, grants, by_id_root).ok().map(|d| d.number)),
    }
}

fn open_backing(guest: &str, grants: &Grants) -> Result<(std::os::fd::OwnedFd, PathBuf), NodeError> {
    let host_path = grants.host_path(guest).map_err(internal)?;
    let file = grants
        .open(guest, OFlag::O_RDWR | OFlag::O_NOFOLLOW, Mode::empty())
        .map_err(|e| NodeError::NotFound(format!("backing file {guest}: {e}")))?;
    Ok((file, host_path))
}

/// Stages `device` at `staging`: for a filesystem, checks or formats it (never reformatting
/// data) and mounts it; for a raw block volume, binds the device node to a file inside. A
/// loop device this call attached is detached again when the stage is refused or fails.
pub fn stage_device(
    device: &Device,
    grants: &Grants,
    by_id_root: &Path,
    staging: &Path,
    access: &Access,
    deadline: Instant,
) -> Result<(), NodeError> {
    paths::check_parent(staging)?;
    let realised = realise(device, grants, by_id_root)?;
    let staged = stage(&realised, staging, access, deadline);
    if staged.is_err()
        && realised.attached_now
        && MountTable::read().map_err(internal)?.of_device(realised.number).next().is_none()
    {
        loopdev::detach(&realised.path).map_err(internal)?;
    }
    staged
}

/// A block device a backend named, once its devices grant allows it.
fn granted_block_device(path: &str, grants: &Grants) -> Result<Realised, NodeError> {
    grants.check_device(path).map_err(|e| NodeError::FailedPrecondition(format!("backend refused: {e}")))?;
    block_device(Path::new(path))
}

fn block_device(path: &Path) -> Result<Realised, NodeError> {
    let meta = std::fs::metadata(path).map_err(|e| NodeError::NotFound(format!("device {}: {e}", path.display())))?;
    if !meta.file_type().is_block_device() {
        return Err(NodeError::FailedPrecondition(format!("{} is not a block device", path.display())));
    }
    Ok(Realised { path: path.to_owned(), number: DeviceNumber::from_dev_t(meta.rdev()), attached_now: false })
}

/// An attached disk: by its serial under the by-id root, else at the device path the
/// backend gives (which must be granted).
fn attached_disk(disk: &Disk, grants: &Grants, by_id_root: &Path) -> Result<Realised, NodeError> {
    match by_serial(by_id_root, &disk.serial) {
        Err(NodeError::NotFound(why)) if !disk.path.is_empty() => granted_block_device(&disk.path, grants)
            .map_err(|e| NodeError::NotFound(format!("{why}, and at {}: {e}", disk.path))),
        found => found,
    }
}

/// Finds the disk whose by-id name ends with `serial` (as cloud disks appear, e.g.
/// `nvme-Amazon_Elastic_Block_Store_vol0123…`; dashes ignored), never a partition link.
fn by_serial(root: &Path, serial: &str) -> Result<Realised, NodeError> {
    let wanted: String = serial.chars().filter(|c| *c != '-').collect();
    if wanted.is_empty() {
        return Err(NodeError::Internal("the backend named a disk by an empty serial".into()));
    }
    let entries = std::fs::read_dir(root).map_err(|e| NodeError::NotFound(format!("read {}: {e}", root.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains("-part") || !name.replace('-', "").ends_with(&wanted) {
            continue;
        }
        let target = std::fs::canonicalize(entry.path()).map_err(internal)?;
        return block_device(&target);
    }
    Err(NodeError::NotFound(format!("no disk with serial {serial} under {}", root.display())))
}

/// The device node for a device number, named by sysfs (`/sys/dev/block/M:m/uevent`), which
/// exists even where no udev maintains `/dev/block`.
fn device_path(number: DeviceNumber) -> Result<PathBuf, NodeError> {
    let uevent = format!("/sys/dev/block/{number}/uevent");
    let text =
        std::fs::read_to_string(&uevent).map_err(|e| internal(format!("find device {number}: {uevent}: {e}")))?;
    text.lines()
        .find_map(|line| line.strip_prefix("DEVNAME="))
        .map(|name| Path::new("/dev").join(name))
        .ok_or_else(|| internal(format!("find device {number}: {uevent} names no device")))
}

/// The mount or bind of [`stage_device`], on a realised device.
fn stage(dev: &Realised, staging: &Path, access: &Access, deadline: Instant) -> Result<(), NodeError> {
    let table = MountTable::read().map_err(internal)?;
    match access {
        Access::Mount { fs, options } => {
            let mut options = options.clone();
            if *fs == FsType::Xfs {
                // Restored and cloned xfs volumes share their source's UUID.
                options.push("nouuid".into());
            }
            let options = MountOptions::parse(&options).map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
            if let Some(mounted) = table.at(staging).last() {
                return if mounted.device == dev.number && mounted.fs_type == fs.as_str() {
                    Ok(())
                } else {
                    Err(NodeError::AlreadyExists(format!(
                        "{} is already staged with another volume or filesystem",
                        staging.display()
                    )))
                };
            }
            if table.is_mount_point(&staging.join(STAGED_DEVICE)) {
                return Err(NodeError::AlreadyExists(format!(
                    "{} is already staged as a raw block volume",
                    staging.display()
                )));
            }
            let content = filesystem::probe(&dev.path, deadline).map_err(internal)?;
            match &content {
                Content::Blank => filesystem::format_probed(&dev.path, *fs, &content, deadline).map_err(internal)?,
                Content::Filesystem(found) if found == fs.as_str() => {
                    filesystem::check(&dev.path, *fs, deadline)
                        .map_err(|e| NodeError::FailedPrecondition(e.to_string()))?;
                    grow_unmounted(&dev.path, *fs, deadline)?;
                }
                Content::Filesystem(found) => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "{} holds a {found} filesystem, not the {fs} asked for; it is never reformatted",
                        dev.path.display()
                    )));
                }
                Content::Other(what) => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "{} holds {what}; refusing to format it",
                        dev.path.display()
                    )));
                }
            }
            paths::create_target_dir(staging)?;
            mount::mount(&dev.path, staging, fs.as_str(), &options).map_err(internal)
        }
        Access::Block => {
            if table.is_mount_point(staging) {
                return Err(NodeError::AlreadyExists(format!(
                    "{} is already staged as a filesystem",
                    staging.display()
                )));
            }
            paths::create_target_dir(staging)?;
            let file = staging.join(STAGED_DEVICE);
            if table.is_mount_point(&file) {
                return match bound_device(&file)? {
                    Some(number) if number == dev.number => Ok(()),
                    _ => Err(NodeError::AlreadyExists(format!("{} already holds another device", file.display()))),
                };
            }
            paths::create_target_file(&file)?;
            mount::bind_device(&dev.path, &file, false).map_err(internal)
        }
    }
}

/// An ext4 filesystem smaller than its device (the volume was expanded while the host could
/// not grow it online) is grown before it is mounted. xfs and btrfs grow only when mounted,
/// which NodeExpandVolume does.
fn grow_unmounted(device: &Path, fs: FsType, deadline: Instant) -> Result<(), NodeError> {
    if fs != FsType::Ext4 {
        return Ok(());
    }
    let device_bytes = stats::block_device_size(device).map_err(internal)?;
    if filesystem::ext4_size(device).map_err(internal)? < device_bytes {
        filesystem::grow_offline(device, fs, deadline).map_err(internal)?;
    }
    Ok(())
}

/// The device number of a device node bound onto `file`, if one is.
fn bound_device(file: &Path) -> Result<Option<DeviceNumber>, NodeError> {
    match std::fs::metadata(file) {
        Ok(meta) if meta.file_type().is_block_device() => Ok(Some(DeviceNumber::from_dev_t(meta.rdev()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(internal(format!("inspect {}: {e}", file.display()))),
    }
}

/// Unmounts everything at `path` and beneath it (deepest first, stacked mounts too); the
/// device of the lowest mount at `path`, if any.
fn unmount_all(path: &Path) -> Result<Option<DeviceNumber>, NodeError> {
    let table = MountTable::read().map_err(internal)?;
    let device = table.at(path).next().map(|m| m.device);
    let mut beneath: Vec<&Path> =
        table.entries().iter().map(|m| m.mount_point.as_path()).filter(|p| p.starts_with(path) && *p != path).collect();
    beneath.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    beneath.dedup();
    for inner in beneath.into_iter().chain([path]) {
        while mount::unmount(inner).map_err(internal)? == Unmounted::Done {}
    }
    Ok(device)
}

/// Undoes [`stage`]: unmounts the staging path (or unbinds and removes the staged device
/// file of a block volume) and detaches `backing`'s loop devices once nothing mounts them.
/// The staged-device file is only touched when the staging path is not a mount, so a file
/// of that name inside a volume's filesystem is never removed.
///
/// Only loop devices of files under `granted` (the backends' granted directories, where
/// every file the host loop-attaches lives) are detached: a disk that merely is a loop
/// device (a test's stand-in for a cloud disk, an operator's block grant) is not the host's.
pub fn unstage(staging: &Path, backing: Option<&Path>, granted: &[PathBuf]) -> Result<(), NodeError> {
    let mut devices = Vec::new();
    if MountTable::read().map_err(internal)?.is_mount_point(staging) {
        devices.extend(unmount_all(staging)?);
    } else {
        let file = staging.join(STAGED_DEVICE);
        devices.extend(bound_device(&file)?);
        unmount_all(&file)?;
        paths::remove_target(&file)?;
    }
    if let Some(backing) = backing {
        devices.extend(loopdev::find_by_path(backing).map_err(internal)?.into_iter().map(|d| d.device));
    }
    let table = MountTable::read().map_err(internal)?;
    let attached = host_attached(granted)?;
    for device in attached.iter().filter(|d| devices.contains(&d.device)) {
        if table.of_device(device.device).next().is_none() {
            loopdev::detach(&device.path).map_err(internal)?;
        }
    }
    Ok(())
}

/// The loop devices the host attached: those of files under a granted directory.
fn host_attached(granted: &[PathBuf]) -> Result<Vec<loopdev::LoopDevice>, NodeError> {
    let all = loopdev::list().map_err(internal)?;
    Ok(all.into_iter().filter(|d| granted.iter().any(|root| d.backing_file.starts_with(root))).collect())
}

/// Publishes a staged volume at `target`: a bind of the staging mount, or of the staged
/// device node onto a file. Publishing again with the same arguments is a no-op.
/// `volume_device` is the volume's own device as [`locate`] found it: what is staged must be
/// it. A read-only raw block publish binds a read-only loop device of the same file
/// (`read_only_view`), since a read-only bind of a device node does not stop writes.
pub fn publish(
    staging: &Path,
    target: &Path,
    access: &Access,
    readonly: bool,
    volume_device: Option<DeviceNumber>,
    read_only_view: impl FnOnce() -> Result<Realised, NodeError>,
) -> Result<(), NodeError> {
    let table = MountTable::read().map_err(internal)?;
    let not_staged = || NodeError::FailedPrecondition(format!("the volume is not staged at {}", staging.display()));
    match access {
        Access::Mount { options, .. } => {
            let options = MountOptions::parse(options).map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
            let staged = table.at(staging).last().ok_or_else(not_staged)?;
            if Some(staged.device) != volume_device {
                return Err(not_staged());
            }
            if let Some(existing) = table.at(target).last() {
                return if existing.device == staged.device && existing.read_only() == readonly {
                    Ok(())
                } else {
                    Err(NodeError::AlreadyExists(format!(
                        "{} is already published with other arguments",
                        target.display()
                    )))
                };
            }
            paths::create_target_dir(target)?;
            mount::bind(staging, target, readonly, &options).map_err(internal)
        }
        Access::Block => {
            let staged = staging.join(STAGED_DEVICE);
            let number = bound_device(&staged)?.ok_or_else(not_staged)?;
            if Some(number) != volume_device {
                return Err(not_staged());
            }
            let device = if readonly {
                read_only_view()?
            } else {
                Realised { path: device_path(number)?, number, attached_now: false }
            };
            if let Some(existing) = table.at(target).last() {
                return match bound_device(target)? {
                    Some(bound) if bound == device.number && existing.read_only() == readonly => Ok(()),
                    _ => Err(NodeError::AlreadyExists(format!(
                        "{} is already published with other arguments",
                        target.display()
                    ))),
                };
            }
            paths::create_target_file(target)?;
            mount::bind_device(&device.path, target, readonly).map_err(internal)
        }
    }
}

/// Undoes [`publish`]: unmounts and removes the target (a target already gone is fine),
/// and detaches a read-only view no other target binds any more.
pub fn unpublish(target: &Path, granted: &[PathBuf]) -> Result<(), NodeError> {
    let bound = bound_device(target)?;
    unmount_all(target)?;
    paths::remove_target(target)?;
    let Some(number) = bound.filter(|n| n.major == LOOP_MAJOR) else { return Ok(()) };
    let view = host_attached(granted)?.into_iter().find(|d| d.device == number && d.read_only);
    if let Some(view) = view {
        // A bind of a device node shows in mountinfo as devtmpfs with the node as its root.
        let node = Path::new("/").join(view.path.file_name().unwrap_or_default());
        if !MountTable::read().map_err(internal)?.entries().iter().any(|m| m.root == node) {
            loopdev::detach(&view.path).map_err(internal)?;
        }
    }
    Ok(())
}

/// The read-only loop device of a file the backend names (raw block read-only publish).
pub fn read_only_view(device: &Device, grants: &Grants) -> Result<Realised, NodeError> {
    let Device::File(guest) = device else {
        return Err(NodeError::InvalidArgument("read-only raw block publishing needs a file-backed volume".into()));
    };
    let (file, host_path) = open_backing(guest, grants)?;
    let view = loopdev::attach_read_only(file.as_fd(), &host_path).map_err(internal)?;
    Ok(Realised { path: view.path, number: view.device, attached_now: true })
}

/// The device behind a published or staged path: the filesystem mounted there, or the
/// device node bound onto it.
fn device_at(path: &Path) -> Result<(Realised, Option<String>), NodeError> {
    let table = MountTable::read().map_err(internal)?;
    let mounted = table
        .at(path)
        .last()
        .ok_or_else(|| NodeError::NotFound(format!("{} is not a published volume", path.display())))?;
    if let Some(number) = bound_device(path)? {
        return Ok((Realised { path: device_path(number)?, number, attached_now: false }, None));
    }
    let dev = Realised { path: device_path(mounted.device)?, number: mounted.device, attached_now: false };
    Ok((dev, Some(mounted.fs_type.clone())))
}

/// Grows the volume at `volume_path` to its device's new size (refreshing a loop device's
/// capacity first) while it stays mounted; answers the new size in bytes.
pub fn expand(volume_path: &Path, deadline: Instant) -> Result<u64, NodeError> {
    let (dev, fs_type) = device_at(volume_path)?;
    if dev.number.major == LOOP_MAJOR {
        loopdev::set_capacity(&dev.path).map_err(internal)?;
    }
    if let Some(fs_type) = fs_type {
        let fs: FsType =
            fs_type.parse().map_err(|e| NodeError::FailedPrecondition(format!("cannot grow {fs_type}: {e}")))?;
        filesystem::grow(&dev.path, volume_path, fs, deadline).map_err(|e| match e {
            filesystem::FsError::MissingCapability { .. } => NodeError::FailedPrecondition(format!(
                "{e}; the filesystem is grown instead when the volume is next staged"
            )),
            other => internal(other),
        })?;
    }
    stats::block_device_size(&dev.path).map_err(internal)
}

/// What NodeGetVolumeStats reports.
pub enum Usage {
    Filesystem(stats::FsStats),
    Block { bytes: u64 },
}

/// Usage of the volume at `volume_path`, and why it is abnormal, if it is.
pub fn usage(volume_path: &Path) -> Result<(Usage, Option<String>), NodeError> {
    let (dev, fs_type) = device_at(volume_path)?;
    let condition = backing_condition(&dev)?;
    let usage = match fs_type {
        Some(_) => Usage::Filesystem(stats::filesystem_stats(volume_path).map_err(internal)?),
        None => Usage::Block { bytes: stats::block_device_size(&dev.path).map_err(internal)? },
    };
    Ok((usage, condition))
}

/// A loop device whose backing file was deleted still serves its data, but the volume is
/// gone from its backend: abnormal.
fn backing_condition(dev: &Realised) -> Result<Option<String>, NodeError> {
    if dev.number.major != LOOP_MAJOR {
        return Ok(None);
    }
    let attached = loopdev::list().map_err(internal)?;
    Ok(match attached.iter().find(|d| d.device == dev.number) {
        Some(d) if d.backing_deleted => Some(format!("backing file {} was deleted", d.backing_file.display())),
        Some(_) => None,
        None => Some(format!("{} is no longer attached", dev.path.display())),
    })
}
