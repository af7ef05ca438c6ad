//! Volume-level node operations, built from the primitives: realise the device a backend
//! names, stage it (format only when blank, mount), publish it (bind), unpublish, unstage
//! (unmount, detach the loop device), expand it online and report its usage.
//!
//! Nothing is remembered between calls: each operation reads the mount table and sysfs
//! again, so a repeated call, or one after a host restart or crash, converges on the state
//! the CO asked for. Every function blocks; the Node service runs them on blocking threads.
//!
//! Every operation acts for one backend instance and touches only what is its own
//! ([`owned`]): a mount at a path is unmounted only when its device is the instance's,
//! anything else there is FAILED_PRECONDITION and left alone, and a target is removed only
//! when the host created it for this volume (see [`paths`]). `volume` arguments are the
//! CSI volume id, which marks what the host creates.

use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::OFlag;

use super::filesystem::{self, Content, FsType};
use super::mount::{self, MountOptions, Unmounted};
use super::mountinfo::{MountEntry, MountTable};
use super::owned::{self, Owned};
use super::paths::PathRoots;
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
/// serial under `by_id_root`; each only as [`owned`] allows.
pub fn realise(device: &Device, grants: &Grants, by_id_root: &Path) -> Result<Realised, NodeError> {
    match device {
        Device::File(guest) => {
            let (file, host_path) = owned::open_file(grants, guest, OFlag::O_RDWR)?;
            if let Some(device) = loopdev::find(file.as_fd(), &host_path).map_err(internal)? {
                return Ok(Realised { path: device.path, number: device.device, attached_now: false });
            }
            let device = loopdev::attach_fd(file.as_fd(), &host_path).map_err(internal)?;
            Ok(Realised { path: device.path, number: device.device, attached_now: true })
        }
        Device::Block(path) => owned::named_device(grants, path),
        Device::Disk(disk) => attached_disk(disk, grants, by_id_root),
    }
}

/// The device a backend names, if it is present on this node now (nothing is attached).
pub fn locate(device: &Device, grants: &Grants, by_id_root: &Path) -> Result<Option<DeviceNumber>, NodeError> {
    match device {
        Device::File(guest) => {
            let (file, host_path) = owned::open_file(grants, guest, OFlag::O_PATH)?;
            Ok(loopdev::find(file.as_fd(), &host_path).map_err(internal)?.map(|d| d.device))
        }
        Device::Block(path) => Ok(owned::named_device(grants, path).ok().map(|d| d.number)),
        Device::Disk(disk) => Ok(attached_disk(disk, grants, by_id_root).ok().map(|d| d.number)),
    }
}

/// Stages `device` at `staging`: for a filesystem, checks or formats it (never reformatting
/// data) and mounts it; for a raw block volume, binds the device node to a file inside. A
/// loop device this call attached is detached again when the stage is refused or fails.
/// Answers the device staged.
pub fn stage_device(
    device: &Device,
    grants: &Grants,
    by_id_root: &Path,
    staging: &Path,
    access: &Access,
    deadline: Instant,
    volume: &str,
) -> Result<DeviceNumber, NodeError> {
    paths::check_parent(staging)?;
    let realised = realise(device, grants, by_id_root)?;
    let staged = stage(&realised, staging, access, deadline, volume);
    if staged.is_err() && realised.attached_now && !in_use(&MountTable::read().map_err(internal)?, &realised) {
        loopdev::detach(&realised.path).map_err(internal)?;
    }
    staged.map(|()| realised.number)
}

/// An attached disk: by its serial under the by-id root, else at the device path the
/// backend gives (which must be granted).
fn attached_disk(disk: &Disk, grants: &Grants, by_id_root: &Path) -> Result<Realised, NodeError> {
    match owned::disk_by_serial(grants, by_id_root, &disk.serial) {
        Err(NodeError::NotFound(why)) if !disk.path.is_empty() => {
            owned::named_device(grants, &disk.path).map_err(|e| match e {
                NodeError::NotFound(e) => NodeError::NotFound(format!("{why}, and at {}: {e}", disk.path)),
                other => other,
            })
        }
        found => found,
    }
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

/// The block device a mount's files live on. btrfs mounts carry an anonymous device
/// number; their source names the device.
fn mounted_device(entry: &MountEntry) -> DeviceNumber {
    if entry.fs_type == "btrfs"
        && let Ok(meta) = std::fs::metadata(&entry.source)
        && meta.file_type().is_block_device()
    {
        return DeviceNumber::from_dev_t(meta.rdev());
    }
    entry.device
}

/// Whether anything mounts the device or binds its node (a raw block publish).
fn in_use(table: &MountTable, device: &Realised) -> bool {
    let node = Path::new("/").join(device.path.file_name().unwrap_or_default());
    table.entries().iter().any(|m| mounted_device(m) == device.number || m.root == node)
}

/// The mount or bind of [`stage_device`], on a realised device.
fn stage(dev: &Realised, staging: &Path, access: &Access, deadline: Instant, volume: &str) -> Result<(), NodeError> {
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
                return if mounted_device(mounted) == dev.number && mounted.fs_type == fs.as_str() {
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
            paths::create_target_dir(staging, volume)?;
            mount::mount(&dev.path, staging, fs.as_str(), &options).map_err(internal)
        }
        Access::Block => {
            if table.is_mount_point(staging) {
                return Err(NodeError::AlreadyExists(format!(
                    "{} is already staged as a filesystem",
                    staging.display()
                )));
            }
            paths::create_target_dir(staging, volume)?;
            let file = staging.join(STAGED_DEVICE);
            if table.is_mount_point(&file) {
                return match bound_device(&file)? {
                    Some(number) if number == dev.number => Ok(()),
                    _ => Err(NodeError::AlreadyExists(format!("{} already holds another device", file.display()))),
                };
            }
            paths::create_target_file(&file, volume)?;
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

/// Whether the device `number` is the volume noted as `noted`: that device, or a loop
/// device of the same backing file (a read-only view of it).
fn same_volume(number: DeviceNumber, noted: DeviceNumber) -> Result<bool, NodeError> {
    if number == noted {
        return Ok(true);
    }
    let devices = loopdev::list().map_err(internal)?;
    let identity = |n: DeviceNumber| devices.iter().find(|d| d.device == n).and_then(loopdev::backing_identity);
    Ok(identity(number).is_some_and(|file| identity(noted) == Some(file)))
}

/// Unmounts what is mounted at `path` (stacked mounts too) while it is the instance's own
/// device and, when the volume's device was noted at stage (`staged.rs`), that device (or a
/// read-only view of the same file); anything else there, or a mount inside it, is
/// FAILED_PRECONDITION and left alone. Answers the devices it unmounted.
fn unmount_owned(
    path: &Path,
    grants: &Grants,
    volume: &str,
    noted: Option<DeviceNumber>,
) -> Result<Vec<DeviceNumber>, NodeError> {
    let mut devices = Vec::new();
    loop {
        let table = MountTable::read().map_err(internal)?;
        let Some(top) = table.at(path).last() else { return Ok(devices) };
        if let Some(inner) = table.entries().iter().find(|m| m.mount_point != path && m.mount_point.starts_with(path)) {
            return Err(NodeError::FailedPrecondition(format!(
                "{} has {} mounted inside it at {}; nothing was unmounted",
                path.display(),
                inner.fs_type,
                inner.mount_point.display()
            )));
        }
        // A device node bound onto a file shows as that node; a filesystem as its device.
        let number = bound_device(path)?.unwrap_or_else(|| mounted_device(top));
        if owned::owner_of(grants, number)?.is_none() {
            return Err(NodeError::FailedPrecondition(format!(
                "{} has {} {:?} (device {number}) mounted, which is not volume {volume}; it is left alone",
                path.display(),
                top.fs_type,
                top.source
            )));
        }
        if let Some(noted) = noted
            && !same_volume(number, noted)?
        {
            return Err(NodeError::FailedPrecondition(format!(
                "{} has device {number} mounted, another volume of the backend (volume {volume} is device \
                 {noted}); it is left alone",
                path.display()
            )));
        }
        if mount::unmount(path).map_err(internal)? == Unmounted::NotMounted {
            return Ok(devices);
        }
        devices.push(number);
    }
}

/// Undoes [`stage`]: unmounts the staging path (or unbinds and removes the staged device
/// file of a block volume) and detaches the instance's loop devices that nothing mounts
/// any more. The staged-device file is only touched when the staging path is not a mount,
/// so a file of that name inside a volume's filesystem is never removed. Answers whether
/// anything was staged there; when nothing was, a loop device left attached by a crash can
/// only be found from the backend's answer ([`detach_leftover`]).
///
/// Only loop devices of the instance's own files are detached: a disk that merely is a
/// loop device (a test's stand-in for a cloud disk, an operator's block grant) is not the
/// host's.
pub fn unstage(staging: &Path, grants: &Grants, volume: &str, noted: Option<DeviceNumber>) -> Result<bool, NodeError> {
    let devices = if MountTable::read().map_err(internal)?.is_mount_point(staging) {
        unmount_owned(staging, grants, volume, noted)?
    } else {
        let file = staging.join(STAGED_DEVICE);
        let devices = unmount_owned(&file, grants, volume, noted)?;
        paths::remove_created(&file, volume)?;
        devices
    };
    detach_unused(grants, &devices)?;
    Ok(!devices.is_empty())
}

/// Detaches the loop device serving the backend's file `guest`, when nothing uses it any
/// more (a crash between attach and mount left it).
pub fn detach_leftover(guest: &str, grants: &Grants) -> Result<(), NodeError> {
    let (file, host_path) = match owned::open_file(grants, guest, OFlag::O_PATH) {
        Err(NodeError::NotFound(_)) => return Ok(()),
        // The backend's answer names nothing the host may open, so nothing it attached.
        Err(NodeError::FailedPrecondition(why)) => {
            tracing::warn!("no leftover loop device to look for: {why}");
            return Ok(());
        }
        opened => opened?,
    };
    if let Some(device) = loopdev::find(file.as_fd(), &host_path).map_err(internal)? {
        detach_unused(grants, &[device.device])?;
    }
    Ok(())
}

/// Detaches those of `devices` that are the instance's loop devices and that nothing
/// mounts or binds.
fn detach_unused(grants: &Grants, devices: &[DeviceNumber]) -> Result<(), NodeError> {
    let table = MountTable::read().map_err(internal)?;
    for &number in devices {
        if let Some(Owned::LoopFile(device)) = owned::owner_of(grants, number)? {
            let realised = Realised { path: device.path.clone(), number, attached_now: false };
            if !in_use(&table, &realised) {
                loopdev::detach(&device.path).map_err(internal)?;
            }
        }
    }
    Ok(())
}

/// Refuses a staging or target path inside a mounted volume of any backend (`instances`),
/// beneath the allowed roots: publishing there would hide the target in another volume,
/// whose unstage would then take it along.
pub fn check_outside_volumes(path: &Path, roots: &PathRoots, instances: &[&Grants]) -> Result<(), NodeError> {
    let table = MountTable::read().map_err(internal)?;
    for ancestor in path.ancestors().skip(1).take_while(|a| roots.check(a).is_ok()) {
        for mount in table.at(ancestor) {
            let number = mounted_device(mount);
            for grants in instances {
                if owned::owner_of(grants, number)?.is_some() {
                    return Err(NodeError::InvalidArgument(format!(
                        "{} is inside the volume mounted at {}",
                        path.display(),
                        ancestor.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Publishes a staged volume at `target`: a bind of the staging mount, or of the staged
/// device node onto a file. Publishing again with the same arguments is a no-op.
/// `volume_device` is the volume's own device as [`locate`] found it: what is staged must be
/// it. A read-only raw block publish binds a read-only loop device of the same file
/// (`read_only_view`), since a read-only bind of a device node does not stop writes.
pub fn publish(
    volume: &str,
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
            if Some(mounted_device(staged)) != volume_device {
                return Err(not_staged());
            }
            if let Some(existing) = table.at(target).last() {
                return if mounted_device(existing) == mounted_device(staged) && existing.read_only() == readonly {
                    Ok(())
                } else {
                    Err(NodeError::AlreadyExists(format!(
                        "{} is already published with other arguments",
                        target.display()
                    )))
                };
            }
            paths::create_target_dir(target, volume)?;
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
            let published = match table.at(target).last() {
                Some(existing) => match bound_device(target)? {
                    Some(bound) if bound == device.number && existing.read_only() == readonly => Ok(()),
                    _ => Err(NodeError::AlreadyExists(format!(
                        "{} is already published with other arguments",
                        target.display()
                    ))),
                },
                None => paths::create_target_file(target, volume)
                    .map_err(NodeError::from)
                    .and_then(|()| mount::bind_device(&device.path, target, readonly).map_err(internal)),
            };
            // A read-only view this call attached for nothing goes again.
            if published.is_err() && device.attached_now && !in_use(&MountTable::read().map_err(internal)?, &device) {
                loopdev::detach(&device.path).map_err(internal)?;
            }
            published
        }
    }
}

/// Undoes [`publish`]: unmounts the instance's mount at the target and removes the target
/// if the host created it for this volume (a target already gone is fine), and detaches a
/// read-only view no other target binds any more.
pub fn unpublish(target: &Path, grants: &Grants, volume: &str, noted: Option<DeviceNumber>) -> Result<(), NodeError> {
    let bound = bound_device(target)?;
    unmount_owned(target, grants, volume, noted)?;
    paths::remove_created(target, volume)?;
    let Some(number) = bound.filter(|n| n.major == LOOP_MAJOR) else { return Ok(()) };
    if let Some(Owned::LoopFile(view)) = owned::owner_of(grants, number)?
        && view.read_only
    {
        detach_unused(grants, &[number])?;
    }
    Ok(())
}

/// The read-only loop device of a file the backend names (raw block read-only publish).
pub fn read_only_view(device: &Device, grants: &Grants) -> Result<Realised, NodeError> {
    let Device::File(guest) = device else {
        return Err(NodeError::InvalidArgument("read-only raw block publishing needs a file-backed volume".into()));
    };
    let (file, host_path) = owned::open_file(grants, guest, OFlag::O_RDONLY)?;
    let view = loopdev::attach_read_only(file.as_fd(), &host_path).map_err(internal)?;
    Ok(Realised { path: view.path, number: view.device, attached_now: true })
}

/// The device behind a published or staged path of the instance: the filesystem mounted
/// there, or the device node bound onto it. NOT_FOUND when the path holds nothing of the
/// instance's (whatever else is mounted there).
fn device_at(path: &Path, grants: &Grants, volume: &str) -> Result<(Realised, Option<String>), NodeError> {
    let table = MountTable::read().map_err(internal)?;
    let not_found = || NodeError::NotFound(format!("{} is not a published volume {volume}", path.display()));
    let mounted = table.at(path).last().ok_or_else(not_found)?;
    let (number, fs_type) = match bound_device(path)? {
        Some(number) => (number, None),
        None => (mounted_device(mounted), Some(mounted.fs_type.clone())),
    };
    if owned::owner_of(grants, number)?.is_none() {
        return Err(not_found());
    }
    Ok((Realised { path: device_path(number)?, number, attached_now: false }, fs_type))
}

/// Grows the volume at `volume_path` to its device's new size (refreshing a loop device's
/// capacity first) while it stays mounted; answers the new size in bytes.
pub fn expand(volume_path: &Path, grants: &Grants, volume: &str, deadline: Instant) -> Result<u64, NodeError> {
    let (dev, fs_type) = device_at(volume_path, grants, volume)?;
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
pub fn usage(volume_path: &Path, grants: &Grants, volume: &str) -> Result<(Usage, Option<String>), NodeError> {
    let (dev, fs_type) = device_at(volume_path, grants, volume)?;
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
