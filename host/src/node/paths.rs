//! Path arguments of CSI node calls (staging and target paths) arrive as strings and are
//! used by a root process to mount, create and remove, so they are checked before any
//! side effect.
//!
//! - [`check_path`]: absolute and normalized — no `.`, `..` or empty components, no NUL,
//!   not `/` — so a path means what it says and compares equal to what mountinfo shows.
//! - [`PathRoots`]: staging and target paths lie strictly beneath an allowed root (the
//!   kubelet's directory in a deployment), compared component by component on the
//!   normalized path, so `/etc` or `/var/lib/kubelet-evil` is never a target.
//! - No symlink anywhere above a target: the parent is opened with
//!   `openat2(RESOLVE_NO_SYMLINKS)`, which fails if any component is a symlink, in one
//!   atomic resolution instead of a canonicalize-and-compare that could race. A target's
//!   parents are the CO's directories; a symlink among them could send a mount or a
//!   removal anywhere on the host.
//! - The target itself is created, inspected and removed relative to that parent
//!   descriptor, without following a symlink at the final component.
//! - The host removes only what it made: a directory or file it creates is marked with the
//!   extended attribute [`CREATED_MARK`] (the volume id; `trusted.*` attributes can only be
//!   set by a privileged process), and [`remove_created`] removes a target only when it
//!   carries the mark of the volume being unpublished. Removal is never recursive: a
//!   directory still holding data is an error, not deleted.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Longest path accepted (Linux `PATH_MAX`, including the terminating NUL).
const PATH_MAX: usize = 4096;
/// Extended attribute naming the volume a target was created for (see the module header).
pub const CREATED_MARK: &CStr = c"trusted.wasmcsi.created";
/// The setting that lists the allowed path roots, named in every refusal.
pub const ROOTS_SETTING: &str = "--allowed-path-root (env WASMCSI_ALLOWED_PATH_ROOTS, config allowed_path_roots)";

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is not absolute")]
    NotAbsolute(String),
    #[error("path {path:?} is not normalized: it has {problem}")]
    NotNormalized { path: String, problem: &'static str },
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path is {0} bytes long, more than {max}", max = PATH_MAX - 1)]
    TooLong(usize),
    #[error("path is the root directory")]
    Root,
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("{0}: a component is a symbolic link, which a target path may not pass through")]
    SymlinkInPath(PathBuf),
    #[error("{0} does not exist")]
    ParentMissing(PathBuf),
    #[error("{0}: a component is not a directory")]
    NotADirectory(PathBuf),
    #[error("{path} is a {found}, expected a {expected}")]
    WrongType { path: PathBuf, expected: &'static str, found: &'static str },
    #[error("{0} is still a mount point")]
    Busy(PathBuf),
    #[error("directory {0} is not empty; it is left in place")]
    NotEmpty(PathBuf),
    #[error("{path} is not beneath an allowed path root ({roots}); the roots are set by {ROOTS_SETTING}")]
    OutsideRoots { path: PathBuf, roots: String },
    #[error("{op} {path}: {errno}")]
    Io { op: &'static str, path: PathBuf, errno: Errno },
}

/// Where staging and target paths may lie: strictly beneath one of these directories.
#[derive(Debug, Clone)]
pub struct PathRoots {
    roots: Vec<PathBuf>,
}

impl PathRoots {
    /// Roots must be absolute and normalized; each is resolved once here (a root such as
    /// `/tmp` may itself be reached through a symlink), since paths compared against it may
    /// hold no symlink.
    pub fn new(roots: &[PathBuf]) -> Result<PathRoots, String> {
        let mut resolved = Vec::new();
        for root in roots {
            let text = root.to_str().ok_or_else(|| format!("allowed path root {root:?} is not UTF-8"))?;
            check_path(text).map_err(|e| format!("allowed path root: {e}"))?;
            resolved.push(root.canonicalize().unwrap_or_else(|_| root.clone()));
        }
        if resolved.is_empty() {
            return Err(format!("no allowed path roots: set {ROOTS_SETTING}"));
        }
        Ok(PathRoots { roots: resolved })
    }

    /// Checks a normalized path (see [`check_path`]) lies strictly beneath a root.
    pub fn check(&self, path: &Path) -> Result<(), PathError> {
        if self.roots.iter().any(|root| path != root && path.starts_with(root)) {
            return Ok(());
        }
        let roots = self.roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
        Err(PathError::OutsideRoots { path: path.to_owned(), roots })
    }
}

/// What [`remove_created`] found at a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Nothing is there.
    Gone,
    /// Something the host did not create for this volume; left in place.
    NotOurs,
}

/// Checks a CSI path argument: absolute and normalized.
pub fn check_path(path: &str) -> Result<&Path, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() >= PATH_MAX {
        return Err(PathError::TooLong(path.len()));
    }
    if path.contains('\0') {
        return Err(PathError::Nul(path.to_owned()));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute(path.to_owned()));
    };
    if rest.is_empty() {
        return Err(PathError::Root);
    }
    for component in rest.split('/') {
        let problem = match component {
            "" => "an empty component (`//` or a trailing `/`)",
            "." => "a `.` component",
            ".." => "a `..` component",
            _ => continue,
        };
        return Err(PathError::NotNormalized { path: path.to_owned(), problem });
    }
    Ok(Path::new(path))
}

/// Checks that no component above `target` is a symlink (and that its parent exists and
/// is a directory).
pub fn check_parent(target: &Path) -> Result<(), PathError> {
    open_parent(target).map(drop)
}

/// Creates the directory `target` (mode 0750) unless it already is one, marking what it
/// creates as made for volume `mark`.
pub fn create_target_dir(target: &Path, mark: &str) -> Result<(), PathError> {
    let (parent, name) = open_parent(target)?;
    let expect = |kind| expect_kind(target, kind, "directory", &[Kind::Directory]);
    if let Some(kind) = kind_at(&parent, name, target)? {
        return expect(kind);
    }
    match mkdirat(&parent, name, Mode::from_bits_truncate(0o750)) {
        Ok(()) => set_mark(&open_at(&parent, name, Kind::Directory, target)?, target, mark),
        // Created concurrently: it must still be a directory.
        Err(Errno::EEXIST) => kind_at(&parent, name, target)?.map_or(Ok(()), expect),
        Err(errno) => Err(PathError::Io { op: "create directory", path: target.to_owned(), errno }),
    }
}

/// Creates the empty file `target` (mode 0640) for a block device to be bound onto,
/// unless it already is a file, or a device node (a device already bound there), marking
/// what it creates as made for volume `mark`.
pub fn create_target_file(target: &Path, mark: &str) -> Result<(), PathError> {
    let (parent, name) = open_parent(target)?;
    let accepted = [Kind::RegularFile, Kind::BlockDevice];
    let expect = |kind| expect_kind(target, kind, "regular file", &accepted);
    if let Some(kind) = kind_at(&parent, name, target)? {
        return expect(kind);
    }
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    match openat(&parent, name, flags, Mode::from_bits_truncate(0o640)) {
        Ok(file) => set_mark(&file, target, mark),
        Err(Errno::EEXIST) => kind_at(&parent, name, target)?.map_or(Ok(()), expect),
        Err(errno) => Err(PathError::Io { op: "create file", path: target.to_owned(), errno }),
    }
}

/// Removes the (unmounted) target directory or file the host created for volume `mark`
/// (see the module header); anything else there is left in place. Never recursive.
pub fn remove_created(target: &Path, mark: &str) -> Result<Removal, PathError> {
    let (parent, name) = match open_parent(target) {
        Ok(opened) => opened,
        Err(PathError::ParentMissing(_) | PathError::NotADirectory(_)) => return Ok(Removal::Gone),
        Err(e) => return Err(e),
    };
    let flag = match kind_at(&parent, name, target)? {
        None => return Ok(Removal::Gone),
        Some(kind @ Kind::Directory) if marked(&open_at(&parent, name, kind, target)?, mark) => {
            UnlinkatFlags::RemoveDir
        }
        Some(kind @ Kind::RegularFile) if marked(&open_at(&parent, name, kind, target)?, mark) => {
            UnlinkatFlags::NoRemoveDir
        }
        Some(_) => return Ok(Removal::NotOurs),
    };
    unlink(&parent, name, flag, target).map(|removed| if removed { Removal::Removed } else { Removal::Gone })
}

/// Removes the (unmounted) directory or file `target` whatever made it; `false` when it was
/// already gone. Only for paths the host owns entirely (its ephemeral staging
/// directories); CO paths go through [`remove_created`]. Never recursive, and a symlink
/// there is removed itself, never followed.
pub fn remove_target(target: &Path) -> Result<bool, PathError> {
    let (parent, name) = match open_parent(target) {
        Ok(opened) => opened,
        Err(PathError::ParentMissing(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let flag = match kind_at(&parent, name, target)? {
        None => return Ok(false),
        Some(Kind::Directory) => UnlinkatFlags::RemoveDir,
        Some(_) => UnlinkatFlags::NoRemoveDir,
    };
    unlink(&parent, name, flag, target)
}

fn unlink(parent: &OwnedFd, name: &OsStr, flag: UnlinkatFlags, target: &Path) -> Result<bool, PathError> {
    match unlinkat(parent, name, flag) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(Errno::EBUSY) => Err(PathError::Busy(target.to_owned())),
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => Err(PathError::NotEmpty(target.to_owned())),
        Err(errno) => Err(PathError::Io { op: "remove", path: target.to_owned(), errno }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory,
    RegularFile,
    Symlink,
    BlockDevice,
    Other,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Directory => "directory",
            Kind::RegularFile => "regular file",
            Kind::Symlink => "symbolic link",
            Kind::BlockDevice => "block device",
            Kind::Other => "special file",
        }
    }
}

fn expect_kind(target: &Path, kind: Kind, expected: &'static str, accepted: &[Kind]) -> Result<(), PathError> {
    if accepted.contains(&kind) {
        Ok(())
    } else {
        Err(PathError::WrongType { path: target.to_owned(), expected, found: kind.name() })
    }
}

/// Opens the parent of a checked target without following any symlink on the way.
fn open_parent(target: &Path) -> Result<(OwnedFd, &OsStr), PathError> {
    let text = target.to_str().ok_or_else(|| PathError::NotUtf8(target.to_owned()))?;
    let target = check_path(text)?;
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(PathError::Root); // unreachable for a checked path other than `/`
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(AT_FDCWD, parent, how).map_err(|errno| match errno {
        Errno::ELOOP => PathError::SymlinkInPath(parent.to_owned()),
        Errno::ENOENT => PathError::ParentMissing(parent.to_owned()),
        Errno::ENOTDIR => PathError::NotADirectory(parent.to_owned()),
        errno => PathError::Io { op: "open", path: parent.to_owned(), errno },
    })?;
    Ok((fd, name))
}

/// Opens the directory or regular file `name` in `parent` for its attributes, never
/// following a symlink and never blocking on a special file.
fn open_at(parent: &OwnedFd, name: &OsStr, kind: Kind, target: &Path) -> Result<OwnedFd, PathError> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    if kind == Kind::Directory {
        flags |= OFlag::O_DIRECTORY;
    }
    openat(parent, name, flags, Mode::empty()).map_err(|errno| PathError::Io {
        op: "open",
        path: target.to_owned(),
        errno,
    })
}

/// Marks a target the host just created. A filesystem without `trusted.*` attributes only
/// costs the removal later (an unmarked target is left in place), so it is not an error.
fn set_mark(file: &OwnedFd, target: &Path, mark: &str) -> Result<(), PathError> {
    // SAFETY: the descriptor is open; name and value are live buffers of the given lengths.
    let rc =
        unsafe { nix::libc::fsetxattr(file.as_raw_fd(), CREATED_MARK.as_ptr(), mark.as_ptr().cast(), mark.len(), 0) };
    if rc != 0 {
        let errno = Errno::last();
        tracing::warn!(path = %target.display(), "cannot mark a created target ({errno}); it will be left in place at removal");
    }
    Ok(())
}

/// Whether `file` carries the creation mark of volume `mark`.
fn marked(file: &OwnedFd, mark: &str) -> bool {
    let mut value = vec![0u8; mark.len() + 1];
    // SAFETY: the descriptor is open; the buffer is live and `value.len()` bytes long.
    let n = unsafe {
        nix::libc::fgetxattr(file.as_raw_fd(), CREATED_MARK.as_ptr(), value.as_mut_ptr().cast(), value.len())
    };
    usize::try_from(n).is_ok_and(|n| &value[..n] == mark.as_bytes())
}

/// What `name` in `parent` is, without following a symlink; `None` if nothing.
fn kind_at(parent: &OwnedFd, name: &OsStr, target: &Path) -> Result<Option<Kind>, PathError> {
    let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => return Err(PathError::Io { op: "inspect", path: target.to_owned(), errno }),
    };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Ok(Some(match kind {
        SFlag::S_IFDIR => Kind::Directory,
        SFlag::S_IFREG => Kind::RegularFile,
        SFlag::S_IFLNK => Kind::Symlink,
        SFlag::S_IFBLK => Kind::BlockDevice,
        _ => Kind::Other,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::mount;
    use crate::node::testing::{self, MountGuard};
    use std::os::unix::fs::symlink;

    #[test]
    fn good_paths_pass() {
        for good in ["/var/lib/kubelet/pods/1/volumes/kubernetes.io~csi/pv/mount", "/a", "/a b/.hidden/..x/x.."] {
            assert_eq!(check_path(good).unwrap(), Path::new(good));
        }
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        assert!(matches!(check_path(""), Err(PathError::Empty)));
        assert!(matches!(check_path("/"), Err(PathError::Root)));
        assert!(matches!(check_path("relative/x"), Err(PathError::NotAbsolute(_))));
        assert!(matches!(check_path("/a\0b"), Err(PathError::Nul(_))));
        assert!(matches!(check_path(&format!("/{}", "a".repeat(PATH_MAX))), Err(PathError::TooLong(_))));
        for (bad, problem) in
            [("/a//b", "empty"), ("/a/", "empty"), ("/a/./b", "`.`"), ("/a/../etc", "`..`"), ("/..", "`..`")]
        {
            match check_path(bad) {
                Err(e @ PathError::NotNormalized { .. }) => assert!(e.to_string().contains(problem), "{bad}: {e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_symlink_above_the_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        symlink(base.join("real"), base.join("link")).unwrap();
        symlink("/etc", base.join("escape")).unwrap();

        check_parent(&base.join("real/target")).unwrap();
        for target in [base.join("link/target"), base.join("escape/target"), base.join("escape/x/target")] {
            assert!(matches!(check_parent(&target), Err(PathError::SymlinkInPath(_))), "{target:?}");
            assert!(matches!(create_target_dir(&target, "vol-1"), Err(PathError::SymlinkInPath(_))), "{target:?}");
            assert!(matches!(create_target_file(&target, "vol-1"), Err(PathError::SymlinkInPath(_))), "{target:?}");
            assert!(matches!(remove_target(&target), Err(PathError::SymlinkInPath(_))), "{target:?}");
        }
        assert!(!Path::new("/etc/target").exists());
        assert!(matches!(check_parent(&base.join("missing/target")), Err(PathError::ParentMissing(_))));
        std::fs::write(base.join("file"), b"").unwrap();
        assert!(matches!(check_parent(&base.join("file/target")), Err(PathError::NotADirectory(_))));
        assert!(matches!(check_parent(&base.join("real/../real/target")), Err(PathError::NotNormalized { .. })));
    }

    #[test]
    fn targets_are_created_idempotently_and_only_with_the_right_type() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let (d, f, link) = (base.join("dir"), base.join("file"), base.join("link"));
        create_target_dir(&d, "vol-1").unwrap();
        create_target_dir(&d, "vol-1").unwrap();
        assert!(d.is_dir());
        create_target_file(&f, "vol-1").unwrap();
        create_target_file(&f, "vol-1").unwrap();
        assert!(std::fs::symlink_metadata(&f).unwrap().is_file());

        symlink(&d, &link).unwrap();
        for e in [create_target_dir(&link, "vol-1").unwrap_err(), create_target_file(&link, "vol-1").unwrap_err()] {
            assert!(matches!(e, PathError::WrongType { found: "symbolic link", .. }), "{e}");
        }
        assert!(matches!(create_target_dir(&f, "vol-1"), Err(PathError::WrongType { found: "regular file", .. })));
        assert!(matches!(create_target_file(&d, "vol-1"), Err(PathError::WrongType { found: "directory", .. })));
        assert!(matches!(create_target_file(&base.join("no/file"), "vol-1"), Err(PathError::ParentMissing(_))));
    }

    #[test]
    fn removal_is_idempotent_and_never_recursive() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let (d, f, link) = (base.join("dir"), base.join("file"), base.join("link"));
        create_target_dir(&d, "vol-1").unwrap();
        create_target_file(&f, "vol-1").unwrap();
        symlink(&d, &link).unwrap();
        std::fs::write(d.join("data"), b"precious").unwrap();

        assert!(matches!(remove_target(&d), Err(PathError::NotEmpty(_))));
        assert!(remove_target(&link).unwrap(), "a symlink is removed itself");
        assert_eq!(std::fs::read(d.join("data")).unwrap(), b"precious");
        std::fs::remove_file(d.join("data")).unwrap();
        assert!(remove_target(&d).unwrap());
        assert!(remove_target(&f).unwrap());
        assert!(!remove_target(&d).unwrap());
        assert!(!remove_target(&f).unwrap());
        assert!(!remove_target(&base.join("gone/target")).unwrap(), "a missing parent means already removed");
    }

    #[test]
    fn only_what_the_host_created_for_the_volume_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let (made, file, foreign_dir, foreign_file) =
            (base.join("made"), base.join("file"), base.join("foreign"), base.join("precious"));
        create_target_dir(&made, "vol-1").unwrap();
        create_target_file(&file, "vol-1").unwrap();
        std::fs::create_dir(&foreign_dir).unwrap();
        std::fs::write(&foreign_file, b"data").unwrap();
        symlink(&made, base.join("link")).unwrap();

        for other in [&foreign_dir, &foreign_file, &base.join("link")] {
            assert_eq!(remove_created(other, "vol-1").unwrap(), Removal::NotOurs, "{other:?}");
        }
        assert_eq!(remove_created(&made, "vol-2").unwrap(), Removal::NotOurs, "another volume's mark");
        assert_eq!(remove_created(&file, "vol-").unwrap(), Removal::NotOurs, "a prefix of the mark");
        assert_eq!(std::fs::read(&foreign_file).unwrap(), b"data");
        assert!(foreign_dir.is_dir() && base.join("link").exists());

        std::fs::write(made.join("data"), b"x").unwrap();
        assert!(matches!(remove_created(&made, "vol-1"), Err(PathError::NotEmpty(_))));
        std::fs::remove_file(made.join("data")).unwrap();
        assert_eq!(remove_created(&made, "vol-1").unwrap(), Removal::Removed);
        assert_eq!(remove_created(&file, "vol-1").unwrap(), Removal::Removed);
        assert_eq!(remove_created(&made, "vol-1").unwrap(), Removal::Gone);
        assert_eq!(remove_created(&base.join("gone/x"), "vol-1").unwrap(), Removal::Gone);
    }

    #[test]
    fn roots_are_compared_component_by_component() {
        let roots = PathRoots::new(&[PathBuf::from("/var/lib/kubelet")]).unwrap();
        roots.check(Path::new("/var/lib/kubelet/pods/1/volumes/x/mount")).unwrap();
        for outside in ["/var/lib/kubelet", "/var/lib/kubelet-evil/x", "/var/lib", "/etc", "/etc/kubelet"] {
            let e = roots.check(Path::new(outside)).unwrap_err();
            assert!(matches!(e, PathError::OutsideRoots { .. }), "{outside}: {e}");
            assert!(e.to_string().contains("--allowed-path-root"), "{e}");
        }
        assert!(PathRoots::new(&[]).is_err());
        assert!(PathRoots::new(&[PathBuf::from("relative")]).is_err());
        assert!(PathRoots::new(&[PathBuf::from("/a/../etc")]).is_err());
    }

    #[test]
    fn a_mounted_target_is_not_removed() {
        if !testing::privileged("a_mounted_target_is_not_removed") {
            return;
        }
        let scratch = testing::Scratch::new();
        let target = scratch.path().canonicalize().unwrap().join("target");
        create_target_dir(&target, "vol-1").unwrap();
        let _guard = MountGuard::new(&target);
        mount::mount(Path::new("tmpfs"), &target, "tmpfs", &mount::MountOptions::parse(&["size=1m"]).unwrap()).unwrap();
        create_target_dir(&target, "vol-1").unwrap();
        assert!(matches!(remove_target(&target), Err(PathError::Busy(_))));
        assert_eq!(mount::unmount(&target).unwrap(), mount::Unmounted::Done);
        assert!(remove_target(&target).unwrap());
    }
}
