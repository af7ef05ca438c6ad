//! What one backend instance may touch, checked before any side effect.
//!
//! Directories become WASI preopens (the guest cannot name anything outside them), and
//! the host's own file operations on a backend's behalf (`copy-file`, `filesystem-stats`,
//! loop-attaching a `device.file`) resolve guest paths here with `openat2(RESOLVE_BENEATH)`,
//! so neither `..` nor a symlink planted by the backend can lead the host outside the grant.
//! Commands match an absolute program and argument rules (`config::CommandGrant`): the
//! options, values and positionals an operator listed, nothing else, plus the operator's own
//! `host_args`, which the host inserts itself. No shell is ever involved.
//! Outgoing HTTP goes only to granted origins (see `http.rs`).
//! Block devices a backend names on the node must match a device pattern, so a backend
//! can point the host at its own volumes but never at another disk of the node.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::http::Origin;
use crate::config::{ArgRule, CommandGrant, GrantsConfig, OptionsRule, plain_components};

#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("path {0:?} is not inside a granted directory")]
    OutsideDirectories(String),
    #[error("directory grant for {0:?} is read-only")]
    ReadOnly(String),
    #[error("program {0:?} is not granted")]
    Program(String),
    #[error("arguments for {program:?} match no granted rule: {reason}")]
    Arguments { program: String, reason: String },
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

    /// Checks a command against the granted programs and argument rules, and returns the
    /// arguments to run it with: the backend's, with the grant's `host_args` inserted.
    pub fn check_command(&self, program: &str, args: &[String]) -> Result<Vec<String>, Denied> {
        let grant = self
            .commands
            .iter()
            .find(|c| c.program.as_os_str() == program)
            .ok_or_else(|| Denied::Program(program.to_owned()))?;
        let mut reason = None;
        for rule in &grant.allow {
            match rule_matches(rule, args) {
                Ok(leading) => {
                    let (leading, rest) = args.split_at(leading);
                    return Ok([leading, grant.host_args.as_slice(), rest].concat());
                }
                // The first rule for the same subcommand explains the refusal best.
                Err(Mismatch::Command) => {}
                Err(Mismatch::Argument(why)) => {
                    reason.get_or_insert(why);
                }
            }
        }
        let reason = reason.unwrap_or_else(|| "no rule for this command".to_owned());
        Err(Denied::Arguments { program: program.to_owned(), reason })
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

/// Why a rule does not match a call.
enum Mismatch {
    /// The call is for another subcommand (or too short for a list rule).
    Command,
    Argument(String),
}

/// Whether `args` match `rule`; on a match, how many leading arguments come before the
/// place of the grant's `host_args`.
fn rule_matches(rule: &ArgRule, args: &[String]) -> Result<usize, Mismatch> {
    match rule {
        ArgRule::Vector(patterns) => vector_matches(patterns, args).then_some(0).ok_or(Mismatch::Command),
        ArgRule::Options(rule) => options_match(rule, args).map(|()| rule.command.len()),
    }
}

fn vector_matches(patterns: &[String], args: &[String]) -> bool {
    let (fixed, open_ended) = match patterns.split_last() {
        Some((last, fixed)) if last == "**" => (fixed, true),
        _ => (patterns, false),
    };
    let count_ok = if open_ended { args.len() >= fixed.len() } else { args.len() == fixed.len() };
    count_ok && fixed.iter().zip(args).all(|(p, a)| element_matches(p, a))
}

fn options_match(rule: &OptionsRule, args: &[String]) -> Result<(), Mismatch> {
    let rest = args.strip_prefix(rule.command.as_slice()).ok_or(Mismatch::Command)?;
    let refuse = |why: String| Err(Mismatch::Argument(format!("{} {why}", rule.command.join(" "))));
    let mut positionals = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        if rule.flags.contains(arg) {
            continue;
        }
        if let Some(pattern) = rule.options.get(arg) {
            match rest.next() {
                Some(value) if element_matches(pattern, value) => continue,
                Some(value) => return refuse(format!("{arg} {} is not a granted value", shown(value))),
                None => return refuse(format!("{arg} has no value")),
            }
        }
        if arg.starts_with('-') {
            return refuse(format!("option {} is not granted", shown(arg)));
        }
        positionals.push(arg);
    }
    if positionals.len() != rule.positionals.len() {
        return refuse(format!("takes {} positional arguments, not {}", rule.positionals.len(), positionals.len()));
    }
    match rule.positionals.iter().zip(positionals).find(|(p, a)| !element_matches(p, a)) {
        Some((_, arg)) => refuse(format!("argument {} is not granted", shown(arg))),
        None => Ok(()),
    }
}

/// A backend's argument in a message: quoted, escaped, short.
fn shown(arg: &str) -> String {
    const MAX: usize = 64;
    let short: String = arg.chars().take(MAX).collect();
    let more = if short.len() < arg.len() { "…" } else { "" };
    format!("{short:?}{more}")
}

/// `a|b` alternatives, each a literal with `*` wildcards (any run of characters but `/`).
/// An argument starting with `-` matches only an alternative starting with `-` itself.
fn element_matches(pattern: &str, arg: &str) -> bool {
    pattern.split('|').any(|alt| (alt.starts_with('-') || !arg.starts_with('-')) && glob(alt, arg))
}

/// `*` never matches `/`, so pattern and text have the same `/`-separated segments.
fn glob(pattern: &str, text: &str) -> bool {
    pattern.split('/').count() == text.split('/').count()
        && pattern.split('/').zip(text.split('/')).all(|(p, t)| segment_glob(p.as_bytes(), t.as_bytes()))
}

/// Wildcard match without `/`, in O(pattern × text) (the text is the backend's, of any length).
fn segment_glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last star seen, and where in the text its match currently ends.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the star take one more character and retry what follows it.
            star = Some((star_p, star_t + 1));
            p = star_p + 1;
            t = star_t + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DirectoryGrant};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn vector(patterns: &[&str], args: &[&str]) -> bool {
        vector_matches(&strings(patterns), &strings(args))
    }

    #[test]
    fn argument_vectors() {
        let p = ["lvs|vgs", "--units=*", "**"];
        assert!(vector(&p, &["vgs", "--units=b"]));
        assert!(vector(&p, &["lvs", "--units=b", "-o", "lv_name"]));
        assert!(!vector(&p, &["lvremove", "--units=b"]));
        assert!(!vector(&p, &["lvs"]));
        assert!(vector(&["version"], &["version"]));
        assert!(!vector(&["version"], &["version", "extra"]));
        // `*` lets no option through and stays within one path component.
        assert!(vector(&["-c", "*"], &["-c", "true"]));
        assert!(!vector(&["-c", "*"], &["-c", "--rcfile"]));
        assert!(!vector(&["-c", "*"], &["-c", "-"]));
        assert!(!vector(&["/data/*"], &["/data/../etc"]) || vector(&["/data/*"], &["/data/.."]));
        assert!(!vector(&["/data/*"], &["/data/a/b"]));
        assert!(vector(&["/data/*.img"], &["/data/v.img"]));
        assert!(vector(&["-*"], &["-x"]), "an alternative starting with '-' matches options on purpose");
    }

    #[test]
    fn wildcards_match_inside_segments_in_linear_time() {
        for (pattern, text, expected) in [
            ("*b", "123b", true),
            ("*b", "123", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*", "", true),
            ("csi-*", "csi-", true),
            ("csi-*", "csi", false),
            ("wasmcsi.*", "wasmcsi.source=volume:csi-1", true),
        ] {
            assert_eq!(element_matches(pattern, text), expected, "{pattern} {text}");
        }
        let long = "a".repeat(100_000);
        assert!(!element_matches("*a*a*a*a*a*b", &long));
    }

    fn rule(text: &str) -> CommandGrant {
        let config = format!(
            "[[backends]]\nname = \"a\"\nmodule = \"x\"\n[[backends.grants.commands]]\nprogram = \"/p\"\n{text}"
        );
        Config::parse(Path::new("c.toml"), &config).unwrap().backends.remove(0).grants.commands.remove(0)
    }

    #[test]
    fn options_rules_allow_listed_options_values_and_positionals_only() {
        let grant = rule(
            r#"host_args = ["--config", "x{y=1}"]
            [[backends.grants.commands.allow]]
            command = ["lvremove"]
            flags = ["--yes"]
            options = { "-L" = "*b", "--addtag" = "t.*" }
            positionals = ["vg0/csi-*"]"#,
        );
        let grants = Grants { commands: vec![grant], ..Default::default() };
        let check = |args: &[&str]| grants.check_command("/p", &strings(args));
        assert_eq!(
            check(&["lvremove", "--yes", "-L", "8b", "vg0/csi-1", "--addtag", "t.a", "--addtag", "t.b"]).unwrap(),
            strings(&[
                "lvremove",
                "--config",
                "x{y=1}",
                "--yes",
                "-L",
                "8b",
                "vg0/csi-1",
                "--addtag",
                "t.a",
                "--addtag",
                "t.b"
            ])
        );
        for (args, reason) in [
            (&["lvremove", "vg0/csi-1", "--config", "x"][..], "option \"--config\" is not granted"),
            (&["lvremove", "--yes=1", "vg0/csi-1"], "option \"--yes=1\""),
            (&["lvremove", "-L", "--config", "vg0/csi-1"], "-L \"--config\" is not a granted value"),
            (&["lvremove", "-L", "8k", "vg0/csi-1"], "-L \"8k\""),
            (&["lvremove", "vg0/csi-1", "-L"], "-L has no value"),
            (&["lvremove"], "takes 1 positional arguments, not 0"),
            (&["lvremove", "vg0/csi-1", "vg0/csi-2"], "not 2"),
            (&["lvremove", "vg1/csi-1"], "argument \"vg1/csi-1\" is not granted"),
            (&["lvremove", "vg0/csi-1/x"], "argument"),
            (&["lvs", "vg0/csi-1"], "no rule for this command"),
            (&[], "no rule for this command"),
        ] {
            match check(args) {
                Err(Denied::Arguments { reason: why, .. }) => assert!(why.contains(reason), "{args:?}: {why}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        assert!(matches!(grants.check_command("/q", &[]), Err(Denied::Program(_))));
    }

    #[test]
    fn rules_that_would_mean_something_else_are_config_errors() {
        for (text, needle) in [
            (r#"allow = [["**", "x"]]"#, "last element"),
            ("allow = []", "no allow rules"),
            ("[[backends.grants.commands.allow]]\nflags = [\"yes\"]", "flag \"yes\""),
            ("[[backends.grants.commands.allow]]\nflags = [\"--\"]", "flag \"--\""),
            ("[[backends.grants.commands.allow]]\noptions = { \"--units=b\" = \"*\" }", "hold no '='"),
            ("[[backends.grants.commands.allow]]\nflags = [\"-L\"]\noptions = { \"-L\" = \"*\" }", "also listed"),
            ("[[backends.grants.commands.allow]]\noptions = { \"-L\" = \"**\" }", "value pattern"),
            ("[[backends.grants.commands.allow]]\npositionals = [\"a|-b\"]", "positional"),
            ("[[backends.grants.commands.allow]]\ncommand = [\"l*\"]", "command word"),
            ("[[backends.grants.commands.allow]]\nflag = [\"--yes\"]", "unknown field `flag`"),
        ] {
            let config = format!(
                "[[backends]]\nname = \"a\"\nmodule = \"x\"\n[[backends.grants.commands]]\nprogram = \"/p\"\n{text}"
            );
            let err = Config::parse(Path::new("c.toml"), &config).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    /// The lvm command grants this repository ships: the deploy ConfigMap's and the README's,
    /// each with the volume group it names.
    fn shipped_lvm_grants() -> Vec<(&'static str, &'static str, Grants)> {
        let manifest: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../../deploy/kubernetes/30-config.yaml")).unwrap();
        let deploy = manifest["data"]["config.yaml"].as_str().unwrap();
        let readme = include_str!("../../../README.md");
        let lvm_block = readme
            .split("```toml")
            .filter_map(|block| block.split_once("```").map(|(toml, _)| toml))
            .find(|toml| toml.contains("module = \"builtin:lvm\""))
            .expect("the README shows the lvm grant");
        [("deploy", "vg-wasmcsi", Path::new("c.yaml"), deploy), ("README", "vg0", Path::new("c.toml"), lvm_block)]
            .into_iter()
            .map(|(source, vg, file, text)| {
                let config = Config::parse(file, text).unwrap();
                let lvm = config
                    .backends
                    .iter()
                    .find(|b| b.grants.commands.iter().any(|c| c.program == Path::new("/sbin/lvm")));
                (source, vg, Grants::new(&lvm.expect("an lvm instance").grants).unwrap())
            })
            .collect()
    }

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn the_shipped_lvm_grants_allow_the_backends_commands_with_the_operators_config_first() {
        let columns = "lv_name,vg_name,lv_size,lv_tags,lv_attr,pool_lv,origin,lv_time,data_percent";
        let id = "0123456789abcdef0123456789abcdef";
        for (source, vg, grants) in shipped_lvm_grants() {
            let mut commands = vec![
                format!("vgs --reportformat json --units b --nosuffix -o vg_name,vg_extent_size,vg_free {vg}"),
                format!("lvs --reportformat json --units b --nosuffix -o {columns} {vg}"),
                format!("lvs --reportformat json --units b --nosuffix -o {columns} {vg}/csi-{id}"),
                format!("lvs --reportformat json --units b --nosuffix -o {columns} {vg}/snap-{id}"),
                format!("lvcreate --yes --wipesignatures y -n csi-{id} -L 8388608b --addtag wasmcsi.name=61 {vg}"),
                format!(
                    "lvcreate --yes -s -L 4096b -n snap-{id} --addtag wasmcsi.snapshot=61 --addtag wasmcsi.source=volume:csi-{id} {vg}/csi-{id}"
                ),
                format!("lvextend --yes -L 12582912b {vg}/csi-{id}"),
                format!("lvremove --yes {vg}/csi-{id}"),
                format!("lvremove --yes {vg}/snap-{id}"),
                format!("lvchange --yes -ay -K {vg}/csi-{id}"),
            ];
            if source == "README" {
                commands.extend([
                    format!("lvs --reportformat json --units b --nosuffix -o {columns} {vg}/pool0"),
                    format!("lvcreate --yes -n csi-{id} -V 4096b --thinpool pool0 --addtag wasmcsi.name=61 {vg}"),
                    format!("lvcreate --yes -s --setactivationskip n -n csi-{id} --addtag wasmcsi.name=61 --addtag wasmcsi.source=snapshot:snap-{id} {vg}/snap-{id}"),
                    format!("lvcreate --yes -s -n snap-{id} --addtag wasmcsi.snapshot=61 {vg}/csi-{id}"),
                ]);
            }
            for command in commands {
                let args = words(&command);
                let argv =
                    grants.check_command("/sbin/lvm", &args).unwrap_or_else(|e| panic!("{source}: {command}: {e}"));
                assert_eq!(argv[0], args[0]);
                assert_eq!(argv[1], "--config", "{source}: the operator's config follows the subcommand");
                assert_eq!(argv[3..], args[1..], "{source}");
            }
        }
    }

    /// lvm(8) options that write files, run programs, read other configuration or widen what
    /// a command reaches, in every spelling a backend could try, after every subcommand.
    #[test]
    fn the_shipped_lvm_grants_let_no_backend_choose_files_programs_or_other_lvs() {
        let log = "log{file=\"/etc/cron.d/x\" level=7}";
        let thin_check = "global{thin_check_executable=\"/data/evil\"}";
        let columns = "lv_name,vg_name,lv_size,lv_tags,lv_attr,pool_lv,origin,lv_time,data_percent";
        for (source, vg, grants) in shipped_lvm_grants() {
            let lv = format!("{vg}/csi-0123");
            let base: Vec<(&str, Vec<String>)> = vec![
                (
                    "vgs",
                    strings(&[
                        "--reportformat",
                        "json",
                        "--units",
                        "b",
                        "--nosuffix",
                        "-o",
                        "vg_name,vg_extent_size,vg_free",
                        vg,
                    ]),
                ),
                ("lvs", strings(&["--reportformat", "json", "--units", "b", "--nosuffix", "-o", columns, vg])),
                ("lvcreate", strings(&["--yes", "-n", "csi-1", "-L", "8b", vg])),
                ("lvextend", strings(&["--yes", "-L", "8b", &lv])),
                ("lvremove", strings(&["--yes", &lv])),
                ("lvchange", strings(&["--yes", "-ay", "-K", &lv])),
            ];
            let joined = format!("--config={log}");
            let escape = format!("{vg}/../x");
            let injections: &[&[&str]] = &[
                &["--config", log],
                &["--config", thin_check],
                &[&joined],
                &["--conf", log],
                &["--confi", log],
                &["--commandprofile", "/data/p"],
                &["--profile", "/data/p"],
                &["--metadataprofile", "/data/p"],
                &["--reportformat", "json", "--configreport", "log"],
                &["--logonly"],
                &["--report-format", "json"],
                &["--select", "lv_name=x"],
                &["-S", "lv_name=x"],
                &["-o", "+lv_name"],
                &["-o", "lv_name --config x"],
                &["-o", "help"],
                &["--devices", "/dev/sda"],
                &["--devicesfile", "/data/devices"],
                &["--driverloaded", "n"],
                &["--nolocking"],
                &["--lockopt", "skip"],
                &["-d"],
                &["-vvvv"],
                &["--journal", "command"],
                &["--", &joined],
                &["--"],
                &["-"],
                &["-yes"],
                &["-Ky"],
                &["--yes=y"],
                &["--units", "b", "--units=h"],
                &["/dev/sda"],
                &["@tag"],
                &[&escape],
                &["vg-other"],
                &["-L", "--config"],
                &["-n", "--config"],
                &["--addtag", "--config"],
                &["--type", "thin-pool"],
                &["--poolmetadataspare", "y"],
                &["--refresh"],
                &["--errorwhenfull", "y"],
                &["--autobackup", "y"],
                &["--help"],
            ];
            for (subcommand, args) in &base {
                let good = [vec![subcommand.to_string()], args.clone()].concat();
                assert!(grants.check_command("/sbin/lvm", &good).is_ok(), "{source}: {good:?}");
                for extra in injections {
                    let extra = strings(extra);
                    // After the subcommand, in the middle, at the end.
                    for at in [0, args.len() / 2, args.len()] {
                        let call = [&[subcommand.to_string()][..], &args[..at], &extra, &args[at..]].concat();
                        assert!(
                            matches!(grants.check_command("/sbin/lvm", &call), Err(Denied::Arguments { .. })),
                            "{source}: {call:?} must be denied"
                        );
                    }
                }
            }
            // Other lvm commands, lvm's own shell and scripts.
            let convert = format!("{vg}/csi-1");
            let others: &[&[&str]] = &[
                &[],
                &["/data/script"],
                &["help"],
                &["version"],
                &["config", "--file", "/etc/cron.d/x"],
                &["lvmconfig", "--file", "/etc/cron.d/x"],
                &["dumpconfig"],
                &["vgcfgbackup", "-f", "/etc/cron.d/x", vg],
                &["vgcfgrestore", "-f", "/data/meta", vg],
                &["lvmdump"],
                &["lvmdevices", "--adddev", "/dev/sda"],
                &["pvcreate", "/dev/sda"],
                &["vgcreate", "x", "/dev/sda"],
                &["lvconvert", "--type", "thin-pool", &convert],
                &["fullreport"],
                &["lvs", "--config", log, vg],
                &["Lvs", vg],
                &[" lvs", vg],
            ];
            for call in others {
                assert!(
                    matches!(grants.check_command("/sbin/lvm", &strings(call)), Err(Denied::Arguments { .. })),
                    "{source}: {call:?} must be denied"
                );
            }
            assert!(matches!(grants.check_command("/usr/sbin/lvm", &strings(&["lvs", vg])), Err(Denied::Program(_))));
        }
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
