//! The kernel's mount table, parsed from `/proc/self/mountinfo`. Whether a staging or
//! target path is mounted, and what is mounted from a device, is read here on every call
//! instead of being remembered, so a restarted host sees what its predecessor did.
//!
//! Paths are compared as the kernel prints them: canonical, in this process's mount
//! namespace. Callers pass checked paths without symlinks (see [`super::paths`]).
//! A mount of a block device carries the device's `major:minor`, except btrfs, whose
//! mounts carry an anonymous device number; [`MountTable::of_source`] finds those.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::DeviceNumber;

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, thiserror::Error)]
pub enum MountInfoError {
    #[error("read {MOUNTINFO}: {0}")]
    Read(std::io::Error),
    #[error("mountinfo line {line} ({text:?}): {reason}")]
    Parse { line: usize, text: String, reason: String },
}

/// One line of mountinfo (see proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `st_dev` of files in this mount.
    pub device: DeviceNumber,
    /// The directory of the filesystem mounted here (not `/` for bind mounts of a
    /// subdirectory or of a single file such as a device node).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`ro`, `nosuid`, `noatime`…), comma separated.
    pub mount_options: String,
    /// Propagation tags such as `shared:1` or `master:2`.
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    /// What was mounted (a device path, or a name such as `tmpfs`); may be empty.
    pub source: OsString,
    /// Options of the filesystem (superblock), comma separated.
    pub super_options: String,
}

impl MountEntry {
    /// Whether `option` is one of the per-mount options.
    pub fn has_mount_option(&self, option: &str) -> bool {
        self.mount_options.split(',').any(|o| o == option)
    }

    /// The mount itself is read-only (a read-only bind of a writable filesystem too).
    pub fn read_only(&self) -> bool {
        self.has_mount_option("ro")
    }
}

/// A snapshot of the mount table, in the kernel's order (a mount stacked on another
/// path comes after the one it covers).
#[derive(Debug, Clone)]
pub struct MountTable {
    entries: Vec<MountEntry>,
}

impl MountTable {
    /// Reads this process's mount table.
    pub fn read() -> Result<MountTable, MountInfoError> {
        MountTable::parse(&std::fs::read(MOUNTINFO).map_err(MountInfoError::Read)?)
    }

    /// Parses mountinfo text.
    pub fn parse(text: &[u8]) -> Result<MountTable, MountInfoError> {
        let mut entries = Vec::new();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let entry = parse_line(line).map_err(|reason| MountInfoError::Parse {
                line: index + 1,
                text: String::from_utf8_lossy(line).into_owned(),
                reason,
            })?;
            entries.push(entry);
        }
        Ok(MountTable { entries })
    }

    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// The mounts at `mount_point`, bottom first; the last one is what the path shows.
    pub fn at<'a>(&'a self, mount_point: &'a Path) -> impl Iterator<Item = &'a MountEntry> + 'a {
        self.entries.iter().filter(move |e| e.mount_point == mount_point)
    }

    pub fn is_mount_point(&self, path: &Path) -> bool {
        self.at(path).next().is_some()
    }

    /// Mounts whose files live on `device`.
    pub fn of_device(&self, device: DeviceNumber) -> impl Iterator<Item = &MountEntry> + '_ {
        self.entries.iter().filter(move |e| e.device == device)
    }

    /// Mounts whose source is `source` (for instance `/dev/loop3`).
    pub fn of_source<'a>(&'a self, source: &'a OsStr) -> impl Iterator<Item = &'a MountEntry> + 'a {
        self.entries.iter().filter(move |e| e.source == source)
    }
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_line(line: &[u8]) -> Result<MountEntry, String> {
    let mut fields = line.split(|&b| b == b' ');
    let mut next = |what: &str| fields.next().ok_or_else(|| format!("missing {what}"));
    let number = |field: &[u8], what: &str| -> Result<u32, String> {
        std::str::from_utf8(field).ok().and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad {what}"))
    };
    let text = |field: &[u8]| String::from_utf8_lossy(field).into_owned();

    let mount_id = number(next("mount id")?, "mount id")?;
    let parent_id = number(next("parent id")?, "parent id")?;
    let device =
        std::str::from_utf8(next("major:minor")?).ok().and_then(|s| s.parse().ok()).ok_or("bad major:minor")?;
    let root = PathBuf::from(unescape(next("root")?));
    let mount_point = PathBuf::from(unescape(next("mount point")?));
    let mount_options = text(next("mount options")?);
    let mut optional_fields = Vec::new();
    loop {
        match next("the `-` separator")? {
            b"-" => break,
            field => optional_fields.push(text(field)),
        }
    }
    let fs_type = text(unescape(next("filesystem type")?).as_encoded_bytes());
    let source = unescape(next("source")?);
    let super_options = text(next("super options")?);
    if fields.next().is_some() {
        return Err("unexpected fields after the super options".into());
    }
    Ok(MountEntry {
        mount_id,
        parent_id,
        device,
        root,
        mount_point,
        mount_options,
        optional_fields,
        fs_type,
        source,
        super_options,
    })
}

/// Undoes the kernel's escaping of space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal =
            field.get(i + 1..i + 4).filter(|d| field[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) if d[0] <= b'3' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::mount;
    use crate::node::testing::{self, MountGuard};

    const SAMPLE: &[u8] = b"\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
61 27 7:3 / /var/lib/kubelet/plugins/staging/pv\\0401 rw,noatime shared:33 master:2 - xfs /dev/loop3 rw,attr2
62 27 7:3 /sub\\134dir /mnt/with\\011tab\\012nl ro,nosuid - xfs /dev/loop3 rw,attr2
63 27 0:6 /loop3 /pods/a/block/dev ro,relatime - devtmpfs devtmpfs rw,mode=755
64 27 0:40 / /pods/a/block/dev rw - tmpfs  rw
";

    #[test]
    fn parses_fields_escapes_and_optional_fields() {
        let table = MountTable::parse(SAMPLE).unwrap();
        let e = table.entries();
        assert_eq!(e.len(), 6);
        assert_eq!((e[0].mount_id, e[0].parent_id), (22, 27));
        assert!(e[0].optional_fields.is_empty());
        assert_eq!(e[1].optional_fields, vec!["shared:1"]);
        assert_eq!(e[1].super_options, "rw,discard");

        let staged = &e[2];
        assert_eq!(staged.device, DeviceNumber { major: 7, minor: 3 });
        assert_eq!(staged.mount_point, Path::new("/var/lib/kubelet/plugins/staging/pv 1"));
        assert_eq!(staged.optional_fields, vec!["shared:33", "master:2"]);
        assert_eq!(staged.fs_type, "xfs");
        assert_eq!(staged.source, "/dev/loop3");
        assert!(staged.has_mount_option("noatime") && !staged.read_only());

        assert_eq!(e[3].root, Path::new("/sub\\dir"));
        assert_eq!(e[3].mount_point, Path::new("/mnt/with\ttab\nnl"));
        assert!(e[3].read_only());
        assert_eq!(e[4].root, Path::new("/loop3"));
        assert_eq!(e[5].source, "", "an empty source is a field of its own");
        assert_eq!(e[5].super_options, "rw");
    }

    #[test]
    fn queries_by_path_device_and_source() {
        let table = MountTable::parse(SAMPLE).unwrap();
        assert!(table.is_mount_point(Path::new("/proc")));
        assert!(table.is_mount_point(Path::new("/proc/")), "paths compare by components");
        assert!(!table.is_mount_point(Path::new("/var/lib")));
        let stacked: Vec<_> = table.at(Path::new("/pods/a/block/dev")).map(|e| e.mount_id).collect();
        assert_eq!(stacked, vec![63, 64]);
        let loop3: Vec<_> = table.of_device(DeviceNumber { major: 7, minor: 3 }).map(|e| e.mount_id).collect();
        assert_eq!(loop3, vec![61, 62]);
        assert_eq!(table.of_source(OsStr::new("/dev/loop3")).count(), 2);
        assert_eq!(table.of_source(OsStr::new("/dev/loop4")).count(), 0);
    }

    #[test]
    fn unescape_leaves_what_is_not_an_escape() {
        assert_eq!(unescape(b"a\\040b"), OsString::from("a b"));
        assert_eq!(unescape(b"a\\04"), OsString::from("a\\04"));
        assert_eq!(unescape(b"a\\x40"), OsString::from("a\\x40"));
        assert_eq!(unescape(b"a\\477"), OsString::from("a\\477"), "not a byte");
        assert_eq!(unescape(b"\\"), OsString::from("\\"));
        assert_eq!(unescape(b"\\377").into_vec(), vec![0xff]);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (bad, reason) in [
            (&b"22 27 0:21 / /proc rw,relatime proc proc rw\n"[..], "separator"),
            (b"x 27 0:21 / /proc rw - proc proc rw\n", "mount id"),
            (b"22 27 021 / /proc rw - proc proc rw\n", "major:minor"),
            (b"22 27 0:21 / /proc rw - proc proc\n", "super options"),
            (b"22 27 0:21 / /proc rw - proc proc rw extra\n", "unexpected"),
            (b"22\n", "parent id"),
        ] {
            let text = [&b"27 1 254:0 / / rw - ext4 /dev/vda rw\n"[..], bad].concat();
            match MountTable::parse(&text) {
                Err(MountInfoError::Parse { line: 2, reason: r, .. }) => assert!(r.contains(reason), "{r}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }

    #[test]
    fn the_real_table_has_root_and_proc() {
        let table = MountTable::read().unwrap();
        assert!(table.is_mount_point(Path::new("/")));
        assert!(table.at(Path::new("/proc")).any(|e| e.fs_type == "proc"));
    }

    #[test]
    fn a_mount_with_awkward_characters_is_found_at_its_path() {
        if !testing::privileged("a_mount_with_awkward_characters_is_found_at_its_path") {
            return;
        }
        let scratch = testing::Scratch::new();
        let target = scratch.dir("a b\tc\\d");
        let _guard = MountGuard::new(&target);
        let options = mount::MountOptions::parse(&["size=1m", "noexec"]).unwrap();
        mount::mount(Path::new("wasmcsi test"), &target, "tmpfs", &options).unwrap();
        let table = MountTable::read().unwrap();
        let entry = table.at(&target).last().expect("mounted");
        assert_eq!(entry.fs_type, "tmpfs");
        assert_eq!(entry.source, "wasmcsi test");
        assert!(entry.has_mount_option("noexec"));
        assert!(entry.super_options.contains("size=1024k"));
        assert_eq!(table.of_device(entry.device).count(), 1);
    }
}
