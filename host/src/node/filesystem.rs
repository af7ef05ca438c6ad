//! Filesystems on volume devices, through the standard tools run as argument vectors
//! ([`crate::command::run`], with a deadline and capped output): probe what a device
//! holds, format it only when blank, check ext4 before mounting, and grow a mounted
//! filesystem online.
//!
//! Decisions:
//! - **Never reformat data.** [`format`] probes first and refuses anything but a blank
//!   device; `mkfs.xfs` and `mkfs.btrfs` also run without `-f`, so they refuse an existing
//!   signature themselves. A device whose content cannot be read is an error, never blank.
//! - **fsck on stage, like kubelet:** call [`check`] before mounting an existing ext4
//!   filesystem (not one just formatted, and never a mounted one; e2fsck refuses those).
//!   `e2fsck -p` repairs what is safe; exit 0 (clean) and 1 (repaired) let the mount go
//!   ahead, anything else is an error carrying e2fsck's output. xfs and btrfs have no
//!   pre-mount check (xfs replays its log at mount; btrfs checks itself), so
//!   [`CheckOutcome::NotApplicable`].
//! - **Online growth needs the kernel's consent.** The kernel grows a mounted ext4 only
//!   for a process holding `CAP_SYS_RESOURCE` (xfs and btrfs need `CAP_SYS_ADMIN`). A
//!   host without it gets [`FsError::MissingCapability`] rather than resize2fs's bare
//!   "Permission denied", and can grow ext4 while it is not mounted ([`grow_offline`]).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use crate::command;

/// Most a tool may print on each of stdout and stderr before the rest is dropped.
const OUTPUT_CAP: usize = 64 * 1024;
/// Most of a tool's output carried in an error message.
const DIAGNOSTIC_MAX: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    Ext4,
    Xfs,
    Btrfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsType {
    type Err = FsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            "btrfs" => Ok(FsType::Btrfs),
            other => Err(FsError::Unsupported(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("unsupported filesystem type {0:?} (supported: ext4, xfs, btrfs)")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Device { path: PathBuf, source: std::io::Error },
    #[error("{0} is not a block device")]
    NotBlockDevice(PathBuf),
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("{tool} is not installed (it is needed for {target})")]
    ToolMissing { tool: &'static str, target: PathBuf },
    #[error("run {tool} for {target}: {source}")]
    Spawn { tool: &'static str, target: PathBuf, source: std::io::Error },
    #[error("{tool} for {target} did not finish before its deadline and was killed")]
    TimedOut { tool: &'static str, target: PathBuf },
    #[error("{tool} for {target} failed ({status}): {output}")]
    Failed { tool: &'static str, target: PathBuf, status: String, output: String },
    #[error("{tool} for {target} needs {capability}, which this process lacks: {output}")]
    MissingCapability { tool: &'static str, target: PathBuf, capability: &'static str, output: String },
    #[error("{0} grows only while mounted")]
    OnlineOnly(FsType),
    #[error("refusing to format {device} as {fs_type}: it holds {found}")]
    NotBlank { device: PathBuf, fs_type: FsType, found: String },
}

/// What [`probe`] found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// No signature at all: safe to format.
    Blank,
    /// A filesystem of this type (blkid's name: `ext4`, `xfs`, `vfat`…).
    Filesystem(String),
    /// Something else that is data: a partition table, LVM, swap, LUKS, or several
    /// conflicting signatures.
    Other(String),
}

/// What [`check`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    Clean,
    /// Errors were found and repaired; the filesystem can be mounted.
    Repaired,
    /// This filesystem type has no pre-mount check.
    NotApplicable,
}

/// Low-level probe (`blkid -p`, no cache) of what `device` holds.
pub fn probe(device: &Path, deadline: Instant) -> Result<Content, FsError> {
    block_device(device)?;
    // blkid says "nothing found" (exit 2) also when it cannot read: read the first
    // sector ourselves so an unreadable device is an error, never blank.
    let mut sector = [0u8; 512];
    File::open(device)
        .and_then(|mut f| f.read(&mut sector))
        .map_err(|source| FsError::Device { path: device.to_owned(), source })?;
    let out = run("blkid", &["-p", "-o", "export", utf8(device)?], device, deadline)?;
    match out.code {
        Some(0) => Ok(parse_probe(&String::from_utf8_lossy(&out.stdout))),
        Some(2) if out.stderr.is_empty() => Ok(Content::Blank),
        Some(8) => Ok(Content::Other("several conflicting signatures".into())),
        _ => Err(failed("blkid", device, &out)),
    }
}

/// Creates a `fs` filesystem on `device`, which must be blank.
pub fn format(device: &Path, fs: FsType, deadline: Instant) -> Result<(), FsError> {
    format_probed(device, fs, &probe(device, deadline)?, deadline)
}

/// [`format`] for a caller that has just probed the device itself (`content`), sparing a
/// second `blkid` run; anything but [`Content::Blank`] is refused all the same.
pub fn format_probed(device: &Path, fs: FsType, content: &Content, deadline: Instant) -> Result<(), FsError> {
    let found = match content.clone() {
        Content::Blank => None,
        Content::Filesystem(t) => Some(format!("a {t} filesystem")),
        Content::Other(what) => Some(what),
    };
    if let Some(found) = found {
        return Err(FsError::NotBlank { device: device.to_owned(), fs_type: fs, found });
    }
    let dev = utf8(device)?;
    let (tool, args): (&'static str, Vec<&str>) = match fs {
        FsType::Ext4 => ("mkfs.ext4", vec!["-F", "-q", dev]),
        FsType::Xfs => ("mkfs.xfs", vec!["-q", dev]),
        FsType::Btrfs => ("mkfs.btrfs", vec!["-q", dev]),
    };
    succeed(tool, &args, device, deadline)
}

/// Checks (and safely repairs) an unmounted filesystem before it is mounted.
pub fn check(device: &Path, fs: FsType, deadline: Instant) -> Result<CheckOutcome, FsError> {
    if fs != FsType::Ext4 {
        return Ok(CheckOutcome::NotApplicable);
    }
    block_device(device)?;
    let out = run("e2fsck", &["-p", utf8(device)?], device, deadline)?;
    match out.code {
        Some(0) => Ok(CheckOutcome::Clean),
        Some(1) => Ok(CheckOutcome::Repaired),
        _ => Err(failed("e2fsck", device, &out)),
    }
}

/// Grows the `fs` filesystem on `device`, mounted at `mount_point`, to fill the device.
/// Growing a filesystem that already fills it succeeds and changes nothing.
///
/// The kernel grows a mounted ext4 only for a process with `CAP_SYS_RESOURCE`; without it
/// the error is [`FsError::MissingCapability`] and [`grow_offline`] is the way left.
pub fn grow(device: &Path, mount_point: &Path, fs: FsType, deadline: Instant) -> Result<(), FsError> {
    match fs {
        FsType::Ext4 => {
            let out = run("resize2fs", &[utf8(device)?], device, deadline)?;
            match out.code {
                Some(0) => Ok(()),
                _ if !has_effective_capability(CAP_SYS_RESOURCE) => Err(FsError::MissingCapability {
                    tool: "resize2fs",
                    target: device.to_owned(),
                    capability: "CAP_SYS_RESOURCE",
                    output: diagnostic(&out),
                }),
                _ => Err(failed("resize2fs", device, &out)),
            }
        }
        FsType::Xfs => succeed("xfs_growfs", &["-d", utf8(mount_point)?], mount_point, deadline),
        FsType::Btrfs => succeed("btrfs", &["filesystem", "resize", "max", utf8(mount_point)?], mount_point, deadline),
    }
}

/// Grows an unmounted ext4 filesystem to fill its device: a full `e2fsck -f -p` (which
/// resize2fs demands first), then `resize2fs`. xfs and btrfs grow only while mounted.
pub fn grow_offline(device: &Path, fs: FsType, deadline: Instant) -> Result<(), FsError> {
    if fs != FsType::Ext4 {
        return Err(FsError::OnlineOnly(fs));
    }
    block_device(device)?;
    let dev = utf8(device)?;
    let out = run("e2fsck", &["-f", "-p", dev], device, deadline)?;
    if !matches!(out.code, Some(0 | 1)) {
        return Err(failed("e2fsck", device, &out));
    }
    succeed("resize2fs", &[dev], device, deadline)
}

/// Capability number of `CAP_SYS_RESOURCE` (`<linux/capability.h>`).
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has `capability` in its effective set (`CapEff` in
/// /proc/self/status); true when that cannot be read, so the tool's own error stands.
/// Bytes an (unmounted or mounted) ext4 filesystem spans, read from its superblock; tells
/// whether the device grew beyond it.
pub fn ext4_size(device: &Path) -> Result<u64, FsError> {
    const SUPERBLOCK: u64 = 1024;
    const MAGIC: u16 = 0xEF53;
    const INCOMPAT_64BIT: u32 = 0x80;
    let mut sb = [0u8; 1024];
    let read = File::open(device).and_then(|f| {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut sb, SUPERBLOCK)
    });
    read.map_err(|source| FsError::Device { path: device.to_owned(), source })?;
    let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != MAGIC {
        return Err(FsError::Device { path: device.to_owned(), source: std::io::Error::other("no ext4 superblock") });
    }
    let block_size = 1024u64 << u32_at(0x18).min(16);
    let high = if u32_at(0x60) & INCOMPAT_64BIT != 0 { u64::from(u32_at(0x150)) } else { 0 };
    Ok(((high << 32) | u64::from(u32_at(0x04))) * block_size)
}

fn has_effective_capability(capability: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|set| set & (1u64 << capability) != 0)
}

fn block_device(device: &Path) -> Result<(), FsError> {
    let meta = std::fs::metadata(device).map_err(|source| FsError::Device { path: device.to_owned(), source })?;
    if meta.file_type().is_block_device() { Ok(()) } else { Err(FsError::NotBlockDevice(device.to_owned())) }
}

fn utf8(path: &Path) -> Result<&str, FsError> {
    path.to_str().ok_or_else(|| FsError::NotUtf8(path.to_owned()))
}

/// Runs `tool` (found on the fixed PATH of [`command::run`]); a deadline kill is an error.
fn run(tool: &'static str, args: &[&str], target: &Path, deadline: Instant) -> Result<command::Output, FsError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = command::run(Path::new(tool), &args, b"", deadline, OUTPUT_CAP).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            FsError::ToolMissing { tool, target: target.to_owned() }
        } else {
            FsError::Spawn { tool, target: target.to_owned(), source }
        }
    })?;
    if out.timed_out {
        return Err(FsError::TimedOut { tool, target: target.to_owned() });
    }
    Ok(out)
}

fn succeed(tool: &'static str, args: &[&str], target: &Path, deadline: Instant) -> Result<(), FsError> {
    let out = run(tool, args, target, deadline)?;
    if out.code == Some(0) { Ok(()) } else { Err(failed(tool, target, &out)) }
}

fn failed(tool: &'static str, target: &Path, out: &command::Output) -> FsError {
    let status = match out.code {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_owned(),
    };
    FsError::Failed { tool, target: target.to_owned(), status, output: diagnostic(out) }
}

/// The tool's stderr (its stdout when stderr is empty: e2fsck reports there), trimmed
/// and cut to [`DIAGNOSTIC_MAX`].
fn diagnostic(out: &command::Output) -> String {
    let bytes = if out.stderr.iter().all(u8::is_ascii_whitespace) { &out.stdout } else { &out.stderr };
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= DIAGNOSTIC_MAX {
        return text.to_owned();
    }
    let mut end = DIAGNOSTIC_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `blkid -o export` prints `KEY=value` lines.
fn parse_probe(export: &str) -> Content {
    let value = |key: &str| {
        export
            .lines()
            .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
            .map(str::to_owned)
    };
    match (value("TYPE"), value("USAGE"), value("PTTYPE")) {
        (Some(t), None, _) => Content::Filesystem(t),
        (Some(t), Some(usage), _) if usage == "filesystem" => Content::Filesystem(t),
        (Some(t), Some(usage), _) => Content::Other(format!("{t} ({usage})")),
        (None, _, Some(table)) => Content::Other(format!("a {table} partition table")),
        (None, _, None) => Content::Other("an unidentified signature".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::mount::{self, MountOptions};
    use crate::node::mountinfo::MountTable;
    use crate::node::testing::{self, LoopGuard, MountGuard};
    use crate::node::{loopdev, stats};
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(120)
    }

    #[test]
    fn filesystem_types_parse_and_print() {
        for fs in [FsType::Ext4, FsType::Xfs, FsType::Btrfs] {
            assert_eq!(fs.to_string().parse::<FsType>().unwrap(), fs);
        }
        assert!(matches!("ext3".parse::<FsType>(), Err(FsError::Unsupported(t)) if t == "ext3"));
        assert!("".parse::<FsType>().is_err());
        assert!("EXT4".parse::<FsType>().is_err());
    }

    #[test]
    fn probe_output_is_classified() {
        assert_eq!(
            parse_probe("UUID=1\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n"),
            Content::Filesystem("ext4".into())
        );
        assert_eq!(parse_probe("TYPE=xfs\n"), Content::Filesystem("xfs".into()));
        assert_eq!(parse_probe("TYPE=LVM2_member\nUSAGE=raid\n"), Content::Other("LVM2_member (raid)".into()));
        assert_eq!(parse_probe("PTUUID=abc\nPTTYPE=gpt\n"), Content::Other("a gpt partition table".into()));
        assert_eq!(parse_probe("SOMETHING=else\n"), Content::Other("an unidentified signature".into()));
        assert_eq!(parse_probe("SUBTYPE=x\nTYPE=ext4\n"), Content::Filesystem("ext4".into()), "keys match whole");
    }

    #[test]
    fn diagnostics_prefer_stderr_and_are_bounded() {
        let out = |stdout: &[u8], stderr: &[u8]| command::Output {
            code: Some(1),
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            timed_out: false,
        };
        assert_eq!(diagnostic(&out(b"so", b" se \n")), "se");
        assert_eq!(diagnostic(&out(b" so\n", b"\n")), "so");
        let long = diagnostic(&out(b"", "é".repeat(DIAGNOSTIC_MAX).as_bytes()));
        assert!(long.len() <= DIAGNOSTIC_MAX + "…".len() && long.ends_with('…'));
    }

    #[test]
    fn tools_are_refused_anything_but_a_block_device() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(probe(file.path(), soon()), Err(FsError::NotBlockDevice(_))));
        assert!(matches!(format(file.path(), FsType::Ext4, soon()), Err(FsError::NotBlockDevice(_))));
        assert!(matches!(check(file.path(), FsType::Ext4, soon()), Err(FsError::NotBlockDevice(_))));
        assert_eq!(check(file.path(), FsType::Xfs, soon()).unwrap(), CheckOutcome::NotApplicable);
        let e = probe(Path::new("/dev/no-such-device"), soon()).unwrap_err();
        assert!(matches!(e, FsError::Device { .. }) && e.to_string().contains("/dev/no-such-device"));
    }

    #[test]
    fn a_missing_tool_and_a_failing_tool_are_told_apart() {
        let e = run("wasmcsi-no-such-tool", &[], Path::new("/x"), soon()).unwrap_err();
        assert!(matches!(e, FsError::ToolMissing { .. }), "{e}");
        let e = succeed("ls", &["/no/such/path"], Path::new("/no/such/path"), soon()).unwrap_err();
        match e {
            FsError::Failed { tool: "ls", status, output, .. } => {
                assert_eq!(status, "exit code 2");
                assert!(output.contains("No such file"), "{output}");
            }
            other => panic!("{other}"),
        }
        let e = run("sleep", &["5"], Path::new("/x"), Instant::now() + Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, FsError::TimedOut { tool: "sleep", .. }));
    }

    /// The whole life of a filesystem on a loop device: blank → formatted → refused a
    /// second format → checked → mounted → grown online while mounted.
    fn lifecycle(test: &str, fs: FsType, tool: &str) {
        if !testing::privileged_with(test, tool) {
            return;
        }
        let scratch = testing::Scratch::new();
        // mkfs.xfs wants at least 300 MiB; the file is sparse.
        let image = scratch.sparse_file("fs.img", 512 << 20);
        let target = scratch.dir("mnt");
        let _loop_guard = LoopGuard::new(&image);
        let device = loopdev::attach(&image).unwrap();

        assert_eq!(probe(&device.path, soon()).unwrap(), Content::Blank);
        format(&device.path, fs, soon()).unwrap();
        assert_eq!(probe(&device.path, soon()).unwrap(), Content::Filesystem(fs.to_string()));
        for again in [FsType::Ext4, FsType::Xfs, FsType::Btrfs] {
            let e = format(&device.path, again, soon()).unwrap_err();
            assert!(matches!(e, FsError::NotBlank { .. }), "{e}");
            assert!(e.to_string().contains(fs.as_str()), "{e}");
        }
        let expected = if fs == FsType::Ext4 { CheckOutcome::Clean } else { CheckOutcome::NotApplicable };
        assert_eq!(check(&device.path, fs, soon()).unwrap(), expected);

        let _mount_guard = MountGuard::new(&target);
        mount::mount(&device.path, &target, fs.as_str(), &MountOptions::parse::<&str>(&[]).unwrap()).unwrap();
        std::fs::write(target.join("data"), b"kept").unwrap();
        if fs == FsType::Ext4 {
            let e = check(&device.path, fs, soon()).unwrap_err();
            assert!(matches!(e, FsError::Failed { tool: "e2fsck", .. }), "a mounted ext4 is not checked: {e}");
        }
        let before = stats::filesystem_stats(&target).unwrap().total_bytes;
        grow(&device.path, &target, fs, soon()).unwrap();
        assert_eq!(stats::filesystem_stats(&target).unwrap().total_bytes, before, "nothing to grow into yet");

        File::options().write(true).open(&image).unwrap().set_len(1 << 30).unwrap();
        assert_eq!(loopdev::set_capacity(&device.path).unwrap(), 1 << 30);
        match grow(&device.path, &target, fs, soon()) {
            Ok(()) => {}
            // Where root lacks CAP_SYS_RESOURCE (this machine's sandbox), ext4 grows
            // offline: the way that is left is shown to work.
            Err(FsError::MissingCapability { .. }) if fs == FsType::Ext4 => {
                eprintln!("{test}: no CAP_SYS_RESOURCE, growing ext4 offline");
                assert_eq!(mount::unmount(&target).unwrap(), mount::Unmounted::Done);
                grow_offline(&device.path, fs, soon()).unwrap();
                grow_offline(&device.path, fs, soon()).unwrap();
                mount::mount(&device.path, &target, fs.as_str(), &MountOptions::parse::<&str>(&[]).unwrap()).unwrap();
            }
            Err(e) => panic!("{fs}: {e}"),
        }
        if fs != FsType::Ext4 {
            assert!(matches!(grow_offline(&device.path, fs, soon()), Err(FsError::OnlineOnly(_))));
        }
        let after = stats::filesystem_stats(&target).unwrap().total_bytes;
        assert!(after > before + (400 << 20), "{fs}: {before} -> {after}");
        assert_eq!(std::fs::read(target.join("data")).unwrap(), b"kept");
        assert!(MountTable::read().unwrap().of_source(device.path.as_os_str()).any(|e| e.fs_type == fs.as_str()));

        assert_eq!(mount::unmount(&target).unwrap(), mount::Unmounted::Done);
        assert_eq!(check(&device.path, fs, soon()).unwrap(), expected, "clean after an online grow");
        assert_eq!(loopdev::detach(&device.path).unwrap(), loopdev::Detached::Now);
    }

    #[test]
    fn capabilities_are_read_from_proc() {
        // CAP_CHOWN is in every root set; a non-root test process has none at all.
        assert_eq!(has_effective_capability(0), nix::unistd::geteuid().is_root());
    }

    #[test]
    fn ext4_lifecycle() {
        lifecycle("ext4_lifecycle", FsType::Ext4, "mkfs.ext4");
    }

    #[test]
    fn xfs_lifecycle() {
        lifecycle("xfs_lifecycle", FsType::Xfs, "mkfs.xfs");
    }

    #[test]
    fn btrfs_lifecycle() {
        lifecycle("btrfs_lifecycle", FsType::Btrfs, "mkfs.btrfs");
    }

    #[test]
    fn a_partition_table_is_not_blank() {
        if !testing::privileged("a_partition_table_is_not_blank") {
            return;
        }
        let scratch = testing::Scratch::new();
        let image = scratch.sparse_file("pt.img", 16 << 20);
        // An MBR with one Linux partition from sector 2048 to the end, written by hand.
        let mut mbr = [0u8; 512];
        mbr[446 + 4] = 0x83;
        mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&(32768u32 - 2048).to_le_bytes());
        mbr[510..].copy_from_slice(&[0x55, 0xAA]);
        std::os::unix::fs::FileExt::write_all_at(&File::options().write(true).open(&image).unwrap(), &mbr, 0).unwrap();
        let _loop_guard = LoopGuard::new(&image);
        let device = loopdev::attach(&image).unwrap();
        assert_eq!(probe(&device.path, soon()).unwrap(), Content::Other("a dos partition table".into()));
        assert!(matches!(format(&device.path, FsType::Ext4, soon()), Err(FsError::NotBlank { .. })));
        assert_eq!(loopdev::detach(&device.path).unwrap(), loopdev::Detached::Now);
    }
}
