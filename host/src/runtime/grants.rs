//! What one backend instance may touch, checked before any side effect.
//!
//! Directories become WASI preopens (the guest cannot name anything outside them), and
//! the host's own file operations on a backend's behalf (`copy-file`, `filesystem-stats`,
//! loop-attaching a `device.file`) resolve guest paths here with `openat2(RESOLVE_BENEATH)`,
//! so neither `..` nor a symlink planted by the backend can lead the host outside the grant.
//! Commands match an absolute program and argument patterns; no shell is ever involved.
//! Outgoing HTTP goes only to granted origins (see `http.rs`).
//! Block devices a backend names on the node must match a device pattern, so a backend
//! can point the host at its own volumes but never at another disk of the node.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::http::Origin;
use crate::config::{CommandGrant, GrantsConfig, plain_components};

#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("path {0:?} is not inside a granted directory")]
    OutsideDirectories(String),
    #[error("directory grant for {0:?} is read-only")]
    ReadOnly(String),
    #[error("program {0:?} is not granted")]
    Program(String),
    #[error("arguments for {program:?} match no granted pattern")]
    Arguments { program: String },
    #[error("secret {0:?} is not granted")]
    Secret(String),
    #[error("device {0:?} matches no device grant")]
    Device(String),
}

#[derive(Debug)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

#[derive(Debug, Default)]
pub struct Grants {
    pub directories: Vec<DirGrant>,
    commands: Vec<CommandGrant>,
    secret_env: Vec<String>,
    devices: Vec<String>,
    /// Origins the backend may reach over `wasi:http`.
    pub http: Arc<[Origin]>,
}

impl Grants {
    /// Builds the grants, creating granted directories that do not exist yet.
    pub fn new(config: &GrantsConfig) -> Result<Grants, String> {
        let http = config.http.iter().map(|o| Origin::parse(o)).collect::<Result<Vec<_>, _>>()?;
        let mut directories = Vec::new();
        for d in &config.directories {
            std::fs::create_dir_all(&d.host)
                .map_err(|e| format!("create granted directory {}: {e}", d.host.display()))?;
            let host = d.host.canonicalize().map_err(|e| format!("granted directory {}: {e}", d.host.display()))?;
            directories.push(DirGrant {
                host,
                guest: d.guest.trim_end_matches('/').to_owned(),
                read_only: d.read_only,
            });
        }
        Ok(Grants {
            directories,
            commands: config.commands.clone(),
            secret_env: config.secret_env.clone(),
            devices: config.devices.clone(),
            http: http.into(),
        })
    }

    /// Maps a guest path to its grant and the path relative to it (no `..`, no root).
    pub fn locate(&self, guest_path: &str) -> Result<(&DirGrant, PathBuf), Denied> {
        let outside = || Denied::OutsideDirectories(guest_path.to_owned());
        let path = Path::new(guest_path);
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(outside());
        }
        self.directories
            .iter()
            .filter_map(|d| {
                let rel = if d.guest.is_empty() { path.strip_prefix("/") } else { path.strip_prefix(&d.guest) };
                rel.ok().map(|rel| (d, rel.to_path_buf()))
            })
            .max_by_key(|(d, _)| d.guest.len())
            .ok_or_else(outside)
    }

    /// Opens a guest path on the host, never escaping its granted directory.
    pub fn open(&self, guest_path: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, OpenError> {
        let (grant, rel) = self.locate(guest_path)?;
        let writes = flags.intersects(OFlag::O_WRONLY | OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_TRUNC);
        if writes && grant.read_only {
            return Err(Denied::ReadOnly(guest_path.to_owned()).into());
        }
        let root = nix::fcntl::open(&grant.host, OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_PATH, Mode::empty())?;
        let rel = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        Ok(openat2(&root, &rel, how)?)
    }

    /// The host path a guest path names, for tools that take paths (checked like `open`).
    pub fn host_path(&self, guest_path: &str) -> Result<PathBuf, Denied> {
        let (grant, rel) = self.locate(guest_path)?;
        Ok(grant.host.join(rel))
    }

    /// Checks a command against the granted programs and argument patterns.
    pub fn check_command(&self, program: &str, args: &[String]) -> Result<(), Denied> {
        let grant = self
            .commands
            .iter()
            .find(|c| c.program.as_os_str() == program)
            .ok_or_else(|| Denied::Program(program.to_owned()))?;
        if grant.allow.iter().any(|pattern| args_match(pattern, args)) {
            Ok(())
        } else {
            Err(Denied::Arguments { program: program.to_owned() })
        }
    }

    /// Checks a block device path against the device patterns: the path must be absolute
    /// and plain (no `.`, `..` or empty components) and match a pattern component by
    /// component (each like an argument pattern: `*`, `prefix*`, `a|b`).
    pub fn check_device(&self, path: &str) -> Result<(), Denied> {
        let denied = || Denied::Device(path.to_owned());
        let parts = plain_components(path).ok_or_else(denied)?;
        let granted = self.devices.iter().filter_map(|d| plain_components(d)).any(|pattern| {
            pattern.len() == parts.len() && pattern.iter().zip(&parts).all(|(p, c)| element_matches(p, c))
        });
        if granted { Ok(()) } else { Err(denied()) }
    }

    /// Reads a granted environment secret of the host.
    pub fn env_secret(&self, name: &str) -> Result<Option<String>, Denied> {
        if self.secret_env.iter().any(|s| s == name) {
            Ok(std::env::var(name).ok())
        } else {
            Err(Denied::Secret(name.to_owned()))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Io(#[from] nix::Error),
}

fn args_match(pattern: &[String], args: &[String]) -> bool {
    let (fixed, open_ended) = match pattern.split_last() {
        Some((last, fixed)) if last == "**" => (fixed, true),
        _ => (pattern, false),
    };
    let count_ok = if open_ended { args.len() >= fixed.len() } else { args.len() == fixed.len() };
    count_ok && fixed.iter().zip(args).all(|(p, a)| element_matches(p, a))
}

fn element_matches(pattern: &str, arg: &str) -> bool {
    pattern.split('|').any(|alt| match alt.strip_suffix('*') {
        Some(prefix) => arg.starts_with(prefix),
        None => alt == arg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DirectoryGrant;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argument_patterns() {
        let p = strings(&["lvs|vgs", "--units=*", "**"]);
        assert!(args_match(&p, &strings(&["vgs", "--units=b"])));
        assert!(args_match(&p, &strings(&["lvs", "--units=b", "-o", "lv_name"])));
        assert!(!args_match(&p, &strings(&["lvremove", "--units=b"])));
        assert!(!args_match(&p, &strings(&["lvs"])));
        let exact = strings(&["version"]);
        assert!(args_match(&exact, &strings(&["version"])));
        assert!(!args_match(&exact, &strings(&["version", "extra"])));
    }

    #[test]
    fn devices_match_whole_plain_paths() {
        let grants =
            Grants::new(&GrantsConfig { devices: strings(&["/dev/vg0/*", "/dev/loop1|loop2"]), ..Default::default() })
                .unwrap();
        for ok in ["/dev/vg0/csi-1", "/dev/loop2"] {
            assert!(grants.check_device(ok).is_ok(), "{ok}");
        }
        for denied in [
            "/dev/vg0/../sda",
            "/dev/vg0/./x",
            "/dev/vg0//x",
            "/dev/vg0",
            "/dev/vg0/x/y",
            "/dev/vg1/x",
            "dev/vg0/x",
            "/dev/sda",
            "/dev/loop3",
        ] {
            assert!(matches!(grants.check_device(denied), Err(Denied::Device(_))), "{denied}");
        }
    }

    #[test]
    fn paths_stay_inside_the_grant() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inside"), b"ok").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("escape")).unwrap();
        let grants = Grants::new(&GrantsConfig {
            directories: vec![DirectoryGrant { host: dir.path().into(), guest: "/data".into(), read_only: false }],
            ..Default::default()
        })
        .unwrap();
        assert!(grants.open("/data/inside", OFlag::O_RDONLY, Mode::empty()).is_ok());
        assert!(matches!(
            grants.open("/data/../etc/passwd", OFlag::O_RDONLY, Mode::empty()),
            Err(OpenError::Denied(_))
        ));
        assert!(matches!(grants.open("/elsewhere/x", OFlag::O_RDONLY, Mode::empty()), Err(OpenError::Denied(_))));
        assert!(matches!(
            grants.open("/data/escape", OFlag::O_RDONLY, Mode::empty()),
            Err(OpenError::Io(nix::Error::EXDEV))
        ));
    }
}
