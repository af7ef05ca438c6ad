//! Loop devices through the kernel's loop ioctls (no `losetup`): a volume that is a file
//! in a backend's granted directory becomes a block device the host can probe, format,
//! mount, bind onto a publish target and grow.
//!
//! Decisions:
//! - **No autoclear at attach.** `LO_FLAGS_AUTOCLEAR` detaches a device when its last
//!   opener closes it. The openers of a staged volume are transient: blkid, mkfs and
//!   e2fsck open and close it before any mount exists, and a raw block volume is only
//!   bind-mounted as a device node, which does not open it at all. Autoclear would lose
//!   those devices between NodeStage and NodePublish and across host restarts, so the
//!   device persists until [`detach`] at unstage.
//! - **Deferred detach is reported, and undone by a new attach.** `LOOP_CLR_FD` on a device
//!   somebody still holds open (a mount, a process) only marks it autoclear and the kernel
//!   detaches it at the last close; [`detach`] returns [`Detached::Deferred`] then.
//!   Attaching the same file again reuses that device and clears the mark, so it is
//!   persistent again.
//! - **Direct I/O where possible.** `LOOP_CONFIGURE` asks for `LO_FLAGS_DIRECT_IO`; the
//!   kernel keeps it only where the backing filesystem can do O_DIRECT at the device's
//!   block size, and [`LoopDevice::direct_io`] says what it kept. Direct I/O stops every
//!   block being cached twice (for the loop device and for the backing file). The logical
//!   block size is left to the kernel so a file attaches with the same geometry each time.
//!   Kernels without `LOOP_CONFIGURE` (before 5.8) get `LOOP_SET_FD` + `LOOP_SET_STATUS64`
//!   and a best-effort `LOOP_SET_DIRECT_IO`.
//! - **Match files by identity, not by name.** A file is matched to a device by the device
//!   and inode numbers the kernel reports (`LOOP_GET_STATUS64`), so a file reached through
//!   another path still matches and a new file at a deleted one's path does not. sysfs
//!   (`/sys/block/loopN/loop/backing_file`) has only the path, which is used to list
//!   devices and to reopen a candidate file, never to decide which file a device serves:
//!   a path can be a symlink planted by a backend ([`backing_identity`] is the truth).
//! - **Attach is serialised** across processes by an exclusive `flock` on
//!   `/dev/loop-control`, so a host and its replacement cannot attach one file twice. A
//!   device that a foreign tool grabs between `LOOP_CTL_GET_FREE` and `LOOP_CONFIGURE`
//!   answers EBUSY, and another free one is asked for.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, Flock, FlockArg, OFlag, fcntl};
use nix::sys::stat::{SFlag, fstat};

use super::DeviceNumber;
use super::stats::{self, StatsError};

const LOOP_CONTROL: &str = "/dev/loop-control";
const SYS_BLOCK: &str = "/sys/block";

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// How many free devices to try when each is grabbed by someone else first.
const ATTACH_ATTEMPTS: u32 = 16;
/// How often to retry `LOOP_CLR_FD` while the kernel answers EBUSY.
const DETACH_BUSY_ATTEMPTS: u32 = 5;
/// How long [`detach`] waits for the kernel to release a device before calling it deferred.
const DETACH_WAIT: Duration = Duration::from_secs(1);

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

impl LoopInfo64 {
    const ZERO: LoopInfo64 = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: 0,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    };

    /// An informational name for the device (what `losetup` also records); the kernel's
    /// truth is the open file, so a long name is simply cut.
    fn named(name: &Path) -> LoopInfo64 {
        let mut info = LoopInfo64::ZERO;
        let bytes = name.as_os_str().as_bytes();
        let n = bytes.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..n].copy_from_slice(&bytes[..n]);
        info
    }
}

/// `struct loop_config` from `<linux/loop.h>` (for `LOOP_CONFIGURE`).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// The loop ioctls. Every call site passes a descriptor it holds open for the call and,
/// for pointer arguments, a live struct of the `<linux/loop.h>` layout.
mod sys {
    use super::{LoopConfig, LoopInfo64};

    nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
    nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
    nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
    nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);
    nix::ioctl_none_bad!(loop_set_capacity, 0x4C07);
    nix::ioctl_write_int_bad!(loop_set_direct_io, 0x4C08);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("open backing file {path}: {source}")]
    OpenBacking { path: PathBuf, source: io::Error },
    #[error("inspect backing file {path}: {source}")]
    InspectBacking { path: PathBuf, source: Errno },
    #[error("backing file {path} is not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("backing file {path} is not open for reading and writing")]
    NotWritable { path: PathBuf },
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("lock {LOOP_CONTROL}: {0}")]
    Lock(Errno),
    #[error("{op} on {device}: {source}")]
    Ioctl { op: &'static str, device: PathBuf, source: Errno },
    #[error("no free loop device for {path}: {ATTACH_ATTEMPTS} free devices were each taken by someone else first")]
    NoFreeDevice { path: PathBuf },
    #[error("{0} is not a loop device path (/dev/loopN)")]
    NotALoopDevice(PathBuf),
    #[error("{0} is not attached to a backing file")]
    NotAttached(PathBuf),
    #[error("{0} stayed busy through {DETACH_BUSY_ATTEMPTS} attempts to detach it")]
    Busy(PathBuf),
    #[error("read {path}: {source}")]
    Sysfs { path: PathBuf, source: io::Error },
    #[error("{path} holds unexpected content {content:?}")]
    SysfsContent { path: PathBuf, content: String },
    #[error(transparent)]
    Size(#[from] StatsError),
}

/// An attached loop device, as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    pub number: u32,
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// The device's own `major:minor` (what mountinfo shows for a mount of it).
    pub device: DeviceNumber,
    /// The backing file's path as the kernel reports it, without " (deleted)".
    pub backing_file: PathBuf,
    /// The backing file has been unlinked; the device still holds its data.
    pub backing_deleted: bool,
    pub direct_io: bool,
    /// Marked to detach at its last close (a [`Detached::Deferred`] detach).
    pub autoclear: bool,
    pub read_only: bool,
}

/// What [`detach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// The device is free.
    Now,
    /// Still held open (mounted, or by a process); the kernel detaches it at the last close.
    Deferred,
    /// Nothing was attached there.
    NotAttached,
}

/// Attaches the file at `backing` (opened read-write), or returns the device it is
/// already attached to.
pub fn attach(backing: &Path) -> Result<LoopDevice, LoopError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(backing)
        .map_err(|source| LoopError::OpenBacking { path: backing.to_owned(), source })?;
    attach_fd(&file, backing)
}

/// Attaches an already opened backing file (for instance one opened beneath a grant),
/// or returns the device it is already attached to. The file must be a regular file
/// opened read-write; `name` is used for messages and recorded as the device's name.
pub fn attach_fd(backing: impl AsFd, name: &Path) -> Result<LoopDevice, LoopError> {
    attach_as(backing.as_fd(), name, false)
}

/// Attaches a second, read-only device to a backing file (a read-only view for a raw block
/// publish: a read-only bind of a device node does not stop writes), or returns the
/// read-only device already attached to it. The writable device, if any, is untouched.
pub fn attach_read_only(backing: impl AsFd, name: &Path) -> Result<LoopDevice, LoopError> {
    attach_as(backing.as_fd(), name, true)
}

fn attach_as(backing: BorrowedFd<'_>, name: &Path, read_only: bool) -> Result<LoopDevice, LoopError> {
    let identity = FileIdentity::of(backing, name)?;
    let flags = fcntl(backing, FcntlArg::F_GETFL)
        .map_err(|source| LoopError::InspectBacking { path: name.to_owned(), source })?;
    if !read_only && OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE != OFlag::O_RDWR {
        return Err(LoopError::NotWritable { path: name.to_owned() });
    }

    let control = lock_control()?;
    if let Some(existing) = find_identity(identity, read_only)? {
        if !existing.autoclear {
            return Ok(existing);
        }
        clear_autoclear(&existing.path)?;
        return read_device(existing.number)?.ok_or(LoopError::NotAttached(existing.path));
    }

    for _ in 0..ATTACH_ATTEMPTS {
        let number = unsafe { sys::loop_ctl_get_free(control.as_raw_fd()) }.map_err(|source| LoopError::Ioctl {
            op: "LOOP_CTL_GET_FREE",
            device: LOOP_CONTROL.into(),
            source,
        })?;
        let number = u32::try_from(number).map_err(|_| LoopError::Ioctl {
            op: "LOOP_CTL_GET_FREE",
            device: LOOP_CONTROL.into(),
            source: Errno::ERANGE,
        })?;
        let path = device_path(number);
        // A writable device must be opened for writing, or the kernel makes it read-only.
        let device = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(|source| LoopError::Open { path: path.clone(), source })?;
        match configure(&device, backing, name, read_only) {
            Ok(()) => return read_device(number)?.ok_or(LoopError::NotAttached(path)),
            // Someone else configured it after it was handed to us as free.
            Err((_, Errno::EBUSY)) => continue,
            Err((op, source)) => return Err(LoopError::Ioctl { op, device: path, source }),
        }
    }
    Err(LoopError::NoFreeDevice { path: name.to_owned() })
}

/// The writable device an open backing file is attached to (offset 0, whole file), if any.
pub fn find(backing: impl AsFd, name: &Path) -> Result<Option<LoopDevice>, LoopError> {
    find_identity(FileIdentity::of(backing.as_fd(), name)?, false)
}

/// The devices attached to the file at `path`, compared by the canonical path with what
/// sysfs reports (test cleanup only: the host matches devices by [`backing_identity`]).
#[cfg(test)]
pub fn find_by_path(path: &Path) -> Result<Vec<LoopDevice>, LoopError> {
    let wanted = canonical_lenient(path);
    Ok(list()?.into_iter().filter(|d| d.backing_file == wanted).collect())
}

/// All attached loop devices, by number.
pub fn list() -> Result<Vec<LoopDevice>, LoopError> {
    let sysfs_error = |source| LoopError::Sysfs { path: SYS_BLOCK.into(), source };
    let mut devices = Vec::new();
    for entry in std::fs::read_dir(SYS_BLOCK).map_err(sysfs_error)? {
        let entry = entry.map_err(sysfs_error)?;
        let Some(number) = entry.file_name().to_str().and_then(|n| n.strip_prefix("loop")).and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if let Some(device) = read_device(number)? {
            devices.push(device);
        }
    }
    devices.sort_by_key(|d| d.number);
    Ok(devices)
}

/// Makes the kernel re-read the backing file's size (after the file grew) and returns the
/// device's new size in bytes.
pub fn set_capacity(device: &Path) -> Result<u64, LoopError> {
    let file = File::open(device).map_err(|source| LoopError::Open { path: device.to_owned(), source })?;
    match unsafe { sys::loop_set_capacity(file.as_raw_fd()) } {
        Ok(_) => Ok(stats::block_device_size(device)?),
        Err(Errno::ENXIO) => Err(LoopError::NotAttached(device.to_owned())),
        Err(source) => Err(LoopError::Ioctl { op: "LOOP_SET_CAPACITY", device: device.to_owned(), source }),
    }
}

/// Detaches `/dev/loopN` from its backing file. A device somebody still holds open is
/// only marked to detach at its last close ([`Detached::Deferred`]); a free or missing
/// device is [`Detached::NotAttached`].
pub fn detach(device: &Path) -> Result<Detached, LoopError> {
    let number = loop_number(device)?;
    let file = match File::open(device) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(Errno::ENXIO as i32) => {
            return Ok(Detached::NotAttached);
        }
        Err(source) => return Err(LoopError::Open { path: device.to_owned(), source }),
    };
    let mut attempt = 1;
    loop {
        match unsafe { sys::loop_clr_fd(file.as_raw_fd()) } {
            Ok(_) => break,
            Err(Errno::ENXIO) => return Ok(Detached::NotAttached),
            Err(Errno::EBUSY) if attempt < DETACH_BUSY_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                attempt += 1;
            }
            Err(Errno::EBUSY) => return Err(LoopError::Busy(device.to_owned())),
            Err(source) => return Err(LoopError::Ioctl { op: "LOOP_CLR_FD", device: device.to_owned(), source }),
        }
    }
    // The kernel releases the backing file when the last opener (possibly us) closes.
    drop(file);
    let until = Instant::now() + DETACH_WAIT;
    loop {
        if read_device(number)?.is_none() {
            return Ok(Detached::Now);
        }
        if Instant::now() >= until {
            return Ok(Detached::Deferred);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Which file a loop device serves: the backing filesystem's device and the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub device: DeviceNumber,
    pub inode: u64,
}

impl FileIdentity {
    /// The identity of an open regular file (`name` is for messages).
    pub fn of(backing: BorrowedFd<'_>, name: &Path) -> Result<FileIdentity, LoopError> {
        let st = fstat(backing).map_err(|source| LoopError::InspectBacking { path: name.to_owned(), source })?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(LoopError::NotRegularFile { path: name.to_owned() });
        }
        Ok(FileIdentity { device: DeviceNumber::from_dev_t(st.st_dev), inode: st.st_ino })
    }
}

/// Takes the attach lock (see the module header); released when dropped.
fn lock_control() -> Result<Flock<File>, LoopError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(LOOP_CONTROL)
        .map_err(|source| LoopError::Open { path: LOOP_CONTROL.into(), source })?;
    Flock::lock(control, FlockArg::LockExclusive).map_err(|(_, e)| LoopError::Lock(e))
}

fn find_identity(identity: FileIdentity, read_only: bool) -> Result<Option<LoopDevice>, LoopError> {
    for device in list()?.into_iter().filter(|d| d.read_only == read_only) {
        if whole_file_identity(&device) == Some(identity) {
            return Ok(Some(device));
        }
    }
    Ok(None)
}

/// The file a loop device serves, as the kernel reports it (`LOOP_GET_STATUS64`
/// `lo_device`/`lo_inode`); `None` when it is detached meanwhile.
pub fn backing_identity(device: &LoopDevice) -> Option<FileIdentity> {
    status(device).map(|info| FileIdentity { device: DeviceNumber::from_dev_t(info.lo_device), inode: info.lo_inode })
}

/// [`backing_identity`] of a device serving its whole file (offset 0, no size limit): the
/// only kind the host attaches.
fn whole_file_identity(device: &LoopDevice) -> Option<FileIdentity> {
    let info = status(device)?;
    (info.lo_offset == 0 && info.lo_sizelimit == 0)
        .then(|| FileIdentity { device: DeviceNumber::from_dev_t(info.lo_device), inode: info.lo_inode })
}

fn status(device: &LoopDevice) -> Option<LoopInfo64> {
    // Detached meanwhile, or no node: it serves no file.
    let file = File::open(&device.path).ok()?;
    let mut info = LoopInfo64::ZERO;
    // SAFETY: the descriptor is open for the call and `info` is a live `loop_info64`.
    unsafe { sys::loop_get_status64(file.as_raw_fd(), &mut info) }.ok()?;
    Some(info)
}

/// Makes a device that a deferred detach marked autoclear persistent again.
fn clear_autoclear(device: &Path) -> Result<(), LoopError> {
    let ioctl_error = |op, source| LoopError::Ioctl { op, device: device.to_owned(), source };
    let file = File::open(device).map_err(|source| LoopError::Open { path: device.to_owned(), source })?;
    let mut info = LoopInfo64::ZERO;
    unsafe { sys::loop_get_status64(file.as_raw_fd(), &mut info) }.map_err(|e| ioctl_error("LOOP_GET_STATUS64", e))?;
    info.lo_flags &= !LO_FLAGS_AUTOCLEAR;
    unsafe { sys::loop_set_status64(file.as_raw_fd(), &info) }.map_err(|e| ioctl_error("LOOP_SET_STATUS64", e))?;
    Ok(())
}

/// Binds `backing` to the free device `device`; on failure, which ioctl failed and how.
fn configure(
    device: &File,
    backing: BorrowedFd<'_>,
    name: &Path,
    read_only: bool,
) -> Result<(), (&'static str, Errno)> {
    let read_only_flag = if read_only { LO_FLAGS_READ_ONLY } else { 0 };
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 { lo_flags: LO_FLAGS_DIRECT_IO | read_only_flag, ..LoopInfo64::named(name) },
        reserved: [0; 8],
    };
    match unsafe { sys::loop_configure(device.as_raw_fd(), &config) } {
        Ok(_) => Ok(()),
        // Kernels before 5.8 do not know LOOP_CONFIGURE; LOOP_SET_FD takes the mode of the
        // device's own descriptor (opened read-only for a read-only device).
        Err(Errno::ENOTTY | Errno::EINVAL) => configure_legacy(device, backing, name),
        Err(e) => Err(("LOOP_CONFIGURE", e)),
    }
}

fn configure_legacy(device: &File, backing: BorrowedFd<'_>, name: &Path) -> Result<(), (&'static str, Errno)> {
    unsafe { sys::loop_set_fd(device.as_raw_fd(), backing.as_raw_fd()) }.map_err(|e| ("LOOP_SET_FD", e))?;
    if let Err(e) = unsafe { sys::loop_set_status64(device.as_raw_fd(), &LoopInfo64::named(name)) } {
        // Do not leave a half-configured device behind.
        let _ = unsafe { sys::loop_clr_fd(device.as_raw_fd()) };
        return Err(("LOOP_SET_STATUS64", e));
    }
    // Best effort: the kernel refuses where the backing filesystem cannot do direct I/O.
    let _ = unsafe { sys::loop_set_direct_io(device.as_raw_fd(), 1) };
    Ok(())
}

fn device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

fn loop_number(device: &Path) -> Result<u32, LoopError> {
    device
        .to_str()
        .and_then(|p| p.strip_prefix("/dev/loop"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| LoopError::NotALoopDevice(device.to_owned()))
}

/// Reads `/sys/block/loopN`; `None` when the device is not attached (or went away while
/// being read).
fn read_device(number: u32) -> Result<Option<LoopDevice>, LoopError> {
    let base = PathBuf::from(format!("{SYS_BLOCK}/loop{number}"));
    let Some(backing) = read_attribute(&base.join("loop/backing_file"))? else {
        return Ok(None);
    };
    let (backing_file, backing_deleted) = parse_backing_file(backing);
    let text = |rel: &str| -> Result<Option<(PathBuf, String)>, LoopError> {
        let path = base.join(rel);
        Ok(read_attribute(&path)?.map(|bytes| (path, String::from_utf8_lossy(&bytes).trim_end().to_owned())))
    };
    let (Some(dev), Some(dio), Some(autoclear), Some(ro)) =
        (text("dev")?, text("loop/dio")?, text("loop/autoclear")?, text("ro")?)
    else {
        return Ok(None);
    };
    let flag = |(path, content): (PathBuf, String)| match content.as_str() {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(LoopError::SysfsContent { path, content }),
    };
    let device = dev.1.parse().map_err(|_| LoopError::SysfsContent { path: dev.0, content: dev.1 })?;
    Ok(Some(LoopDevice {
        number,
        path: device_path(number),
        device,
        backing_file,
        backing_deleted,
        direct_io: flag(dio)?,
        autoclear: flag(autoclear)?,
        read_only: flag(ro)?,
    }))
}

/// A sysfs attribute's bytes; `None` when it (or its device) does not exist.
fn read_attribute(path: &Path) -> Result<Option<Vec<u8>>, LoopError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(code) if code == Errno::ENXIO as i32 || code == Errno::ENODEV as i32) => {
            Ok(None)
        }
        Err(source) => Err(LoopError::Sysfs { path: path.to_owned(), source }),
    }
}

/// sysfs prints the path, " (deleted)" when the file was unlinked, and a newline.
fn parse_backing_file(mut bytes: Vec<u8>) -> (PathBuf, bool) {
    const DELETED: &[u8] = b" (deleted)";
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    let deleted = bytes.ends_with(DELETED);
    if deleted {
        bytes.truncate(bytes.len() - DELETED.len());
    }
    (PathBuf::from(std::ffi::OsString::from_vec(bytes)), deleted)
}

/// The path the kernel would report for `path`: canonical when it exists, else its
/// canonical parent joined with its name (a deleted file), else `path` itself.
#[cfg(test)]
fn canonical_lenient(path: &Path) -> PathBuf {
    if let Ok(canonical) = path.canonicalize() {
        return canonical;
    }
    match (path.parent().and_then(|p| p.canonicalize().ok()), path.file_name()) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::testing::{self, LoopGuard};

    #[test]
    fn kernel_structs_have_the_uapi_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        let info = LoopInfo64::named(Path::new(&"x".repeat(100)));
        assert_eq!(info.lo_file_name[..63], [b'x'; 63]);
        assert_eq!(info.lo_file_name[63], 0, "the name stays NUL-terminated");
    }

    #[test]
    fn sysfs_backing_file_text_is_parsed() {
        assert_eq!(parse_backing_file(b"/var/a b.img\n".to_vec()), (PathBuf::from("/var/a b.img"), false));
        assert_eq!(parse_backing_file(b"/var/a.img (deleted)\n".to_vec()), (PathBuf::from("/var/a.img"), true));
        // Only one trailing newline is the kernel's; the rest belongs to the name.
        assert_eq!(parse_backing_file(b"/var/a\n\n".to_vec()), (PathBuf::from("/var/a\n"), false));
    }

    #[test]
    fn loop_device_paths_are_recognised() {
        assert_eq!(loop_number(Path::new("/dev/loop0")).unwrap(), 0);
        assert_eq!(loop_number(Path::new("/dev/loop12")).unwrap(), 12);
        for bad in ["/dev/loop", "/dev/loop-control", "/dev/loop1p1", "/dev/sda", "loop1", "/dev/loop 1"] {
            assert!(matches!(loop_number(Path::new(bad)), Err(LoopError::NotALoopDevice(_))), "{bad}");
        }
        assert!(matches!(detach(Path::new("/dev/sda")), Err(LoopError::NotALoopDevice(_))));
    }

    #[test]
    fn attach_refuses_what_is_not_a_writable_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            matches!(attach(dir.path()), Err(LoopError::OpenBacking { .. })),
            "a directory cannot be opened for writing"
        );
        let d = File::open(dir.path()).unwrap();
        assert!(matches!(attach_fd(&d, dir.path()), Err(LoopError::NotRegularFile { .. })));
        let path = dir.path().join("f.img");
        std::fs::write(&path, b"").unwrap();
        let read_only = File::open(&path).unwrap();
        assert!(matches!(attach_fd(&read_only, &path), Err(LoopError::NotWritable { .. })));
        assert!(matches!(attach(&dir.path().join("missing")), Err(LoopError::OpenBacking { .. })));
    }

    #[test]
    fn lenient_canonical_path_survives_a_deleted_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(canonical_lenient(&link.join("gone.img")), real.join("gone.img"));
        std::fs::write(real.join("here.img"), b"").unwrap();
        assert_eq!(canonical_lenient(&link.join("here.img")), real.join("here.img"));
        assert_eq!(canonical_lenient(Path::new("/no/such/dir/x")), PathBuf::from("/no/such/dir/x"));
    }

    #[test]
    fn attach_is_idempotent_and_detach_frees_the_device() {
        if !testing::privileged("attach_is_idempotent_and_detach_frees_the_device") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("a.img", 64 << 20);
        let guard = LoopGuard::new(&image);
        let first = attach(&image).unwrap();
        assert_eq!(first.backing_file, image.canonicalize().unwrap());
        assert!(!first.backing_deleted && !first.autoclear && !first.read_only);
        assert_eq!(first.device.major, 7);
        // The scratch directory is on a filesystem that does O_DIRECT.
        assert!(first.direct_io, "direct I/O was not kept: {first:?}");
        assert_eq!(stats::block_device_size(&first.path).unwrap(), 64 << 20);

        let again = attach(&image).unwrap();
        assert_eq!(again, first, "attaching the same file twice returns the same device");
        // Another path to the same file is the same file.
        let link = scratch.path().join("link.img");
        std::os::unix::fs::symlink(&image, &link).unwrap();
        assert_eq!(attach(&link).unwrap().number, first.number);
        let file = File::open(&image).unwrap();
        assert_eq!(find(&file, &image).unwrap(), Some(first.clone()));
        assert_eq!(find_by_path(&image).unwrap(), vec![first.clone()]);
        assert!(list().unwrap().contains(&first));

        assert_eq!(detach(&first.path).unwrap(), Detached::Now);
        assert_eq!(find(&file, &image).unwrap(), None);
        assert!(find_by_path(&image).unwrap().is_empty());
        assert_eq!(detach(&first.path).unwrap(), Detached::NotAttached);
        drop(guard);
    }

    #[test]
    fn capacity_follows_a_grown_file() {
        if !testing::privileged("capacity_follows_a_grown_file") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("grow.img", 32 << 20);
        let _guard = LoopGuard::new(&image);
        let device = attach(&image).unwrap();
        assert_eq!(stats::block_device_size(&device.path).unwrap(), 32 << 20);
        File::options().write(true).open(&image).unwrap().set_len(96 << 20).unwrap();
        assert_eq!(set_capacity(&device.path).unwrap(), 96 << 20);
        assert_eq!(stats::block_device_size(&device.path).unwrap(), 96 << 20);
        assert_eq!(detach(&device.path).unwrap(), Detached::Now);
        assert!(matches!(set_capacity(&device.path), Err(LoopError::NotAttached(_))));
    }

    #[test]
    fn detaching_an_open_device_is_deferred_and_reattaching_keeps_it() {
        if !testing::privileged("detaching_an_open_device_is_deferred_and_reattaching_keeps_it") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("held.img", 16 << 20);
        let _guard = LoopGuard::new(&image);
        let device = attach(&image).unwrap();
        let holder = File::open(&device.path).unwrap();
        assert_eq!(detach(&device.path).unwrap(), Detached::Deferred);
        assert!(read_device(device.number).unwrap().unwrap().autoclear);

        let again = attach(&image).unwrap();
        assert_eq!(again.number, device.number, "the deferred device is reused");
        assert!(!again.autoclear, "and made persistent again");
        drop(holder);
        assert_eq!(read_device(device.number).unwrap().as_ref(), Some(&again), "closing the last opener keeps it");
        assert_eq!(detach(&device.path).unwrap(), Detached::Now);
    }

    #[test]
    fn a_deleted_backing_file_is_still_found_by_its_path() {
        if !testing::privileged("a_deleted_backing_file_is_still_found_by_its_path") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("doomed.img", 16 << 20);
        let _guard = LoopGuard::new(&image);
        let device = attach(&image).unwrap();
        std::fs::remove_file(&image).unwrap();
        let found = find_by_path(&image).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].number, device.number);
        assert!(found[0].backing_deleted);
        assert_eq!(found[0].backing_file, device.backing_file);
        // A new file at the same path is a different file: it gets its own device.
        let replacement = scratch.sparse_file("doomed.img", 16 << 20);
        let other = attach(&replacement).unwrap();
        assert_ne!(other.number, device.number);
        assert_eq!(find_by_path(&image).unwrap().len(), 2);
        assert_eq!(detach(&other.path).unwrap(), Detached::Now);
        assert_eq!(detach(&device.path).unwrap(), Detached::Now);
    }

    #[test]
    fn legacy_configuration_attaches_too() {
        if !testing::privileged("legacy_configuration_attaches_too") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("legacy.img", 16 << 20);
        let _guard = LoopGuard::new(&image);
        let backing = File::options().read(true).write(true).open(&image).unwrap();
        let control = lock_control().unwrap();
        let number = loop {
            let n = unsafe { sys::loop_ctl_get_free(control.as_raw_fd()) }.unwrap() as u32;
            let device = File::options().read(true).write(true).open(device_path(n)).unwrap();
            match configure_legacy(&device, backing.as_fd(), &image) {
                Ok(()) => break n,
                Err((_, Errno::EBUSY)) => continue,
                Err(e) => panic!("legacy configure: {e:?}"),
            }
        };
        drop(control);
        let device = read_device(number).unwrap().unwrap();
        assert_eq!(device.backing_file, image.canonicalize().unwrap());
        assert!(!device.read_only);
        assert_eq!(attach(&image).unwrap(), device, "found by identity, not attached twice");
        assert_eq!(detach(&device.path).unwrap(), Detached::Now);
    }
}
