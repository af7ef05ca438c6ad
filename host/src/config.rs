//! The host's configuration: which backend instances to load, what each may touch
//! (grants), how much it may use (limits) and the settings handed to its `validate-settings`.
//!
//! TOML or YAML (by file extension); unknown keys are rejected so a typo never silently
//! drops a grant or a limit. Without a file the host runs the embedded default: the bundled
//! loopfile backend on a local data directory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Upper bounds of the per-instance limits (a wasm32 memory cannot exceed 4 GiB).
const MAX_CONCURRENCY: usize = 256;
const MAX_MEMORY_MIB: u64 = 4096;

/// Module source naming a component compiled into the host binary.
pub const BUILTIN_PREFIX: &str = "builtin:";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Backend instances, in the order they are loaded.
    pub backends: Vec<BackendConfig>,
    /// Directories beneath which staging and target paths may lie (added to the
    /// `--allowed-path-root` flags); none at all means the host's data directory and the
    /// system temp directory.
    #[serde(default)]
    pub allowed_path_roots: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Instance name: the prefix of every volume and snapshot id it makes, and the value of
    /// the StorageClass `backend` parameter that selects it.
    pub name: String,
    /// A `.wasm` component path, or `builtin:<name>` for a component bundled in the host.
    pub module: String,
    /// Chosen when a CreateVolume names no backend and several instances exist.
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub grants: GrantsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Backend-specific settings, read by the backend through `host.settings`.
    #[serde(default)]
    pub settings: BTreeMap<String, Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// Host directories exposed to the backend (WASI preopens).
    #[serde(default)]
    pub directories: Vec<DirectoryGrant>,
    /// Programs the backend may run through `host.exec`.
    #[serde(default)]
    pub commands: Vec<CommandGrant>,
    /// Origins (`scheme://host:port`) the backend may reach over outgoing HTTP.
    #[serde(default)]
    pub http: Vec<String>,
    /// Environment variables of the host the backend may read through `host.secret`.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// Block devices the backend may name at `node-device` (`device.block`): absolute path
    /// patterns matched component by component, e.g. `/dev/vg0/*`.
    #[serde(default)]
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryGrant {
    /// Absolute directory on the host.
    pub host: PathBuf,
    /// Absolute path at which the backend sees it.
    pub guest: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A program the backend may run through `host.exec`, and exactly which arguments.
///
/// Each `allow` rule is either an options rule (a table) or an argument vector (a list):
///
/// ```toml
/// [[backends.grants.commands]]
/// program = "/sbin/lvm"
/// host_args = ["--config", "backup{backup=0}"]   # added by the host, never by the backend
/// [[backends.grants.commands.allow]]
/// command = ["lvremove"]                         # the leading arguments, literally
/// flags = ["--yes"]                              # options without a value, literally
/// options = { "-L" = "*b" }                      # option name -> pattern of its value (the next argument)
/// positionals = ["vg0/csi-*"]                    # exactly this many other arguments, each matching its pattern
/// ```
///
/// A call matches an options rule when it starts with the `command` words and every other
/// argument is a listed flag, a listed option followed by a matching value, or a positional;
/// anything else that starts with `-` (an unlisted option, `--opt=value`, `--`, an
/// abbreviation) is refused. A list rule `["version"]` matches one pattern per argument;
/// only there may a final `**` match any further arguments, which hands the backend every
/// option of the program: avoid it.
///
/// Patterns: `a|b` alternatives, `*` any run of characters except `/`. No pattern matches an
/// argument starting with `-` unless the alternative itself starts with that `-`, so `*`
/// never lets an option through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandGrant {
    /// Absolute program path; no `PATH` lookup, no shell.
    pub program: PathBuf,
    /// Arguments the operator gives the program on every call (lvm's `--config`): the host
    /// inserts them right after the matched rule's `command` words (first, for a list rule).
    #[serde(default)]
    pub host_args: Vec<String>,
    /// The argument rules; a call must match one.
    pub allow: Vec<ArgRule>,
}

/// One `allow` rule of a [`CommandGrant`].
#[derive(Debug, Clone)]
pub enum ArgRule {
    /// A table: `command`, `flags`, `options`, `positionals`.
    Options(OptionsRule),
    /// A list: one pattern per argument, a final `**` matching the rest.
    Vector(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsRule {
    /// Leading arguments, matched literally (a subcommand).
    #[serde(default)]
    pub command: Vec<String>,
    /// Options without a value, matched literally.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Options that take the next argument as their value: name -> value pattern.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The remaining arguments, in order, one pattern each.
    #[serde(default)]
    pub positionals: Vec<String>,
}

/// A list is a [`ArgRule::Vector`], a table an [`ArgRule::Options`] (with its own field
/// errors, which an untagged enum would hide).
impl<'de> Deserialize<'de> for ArgRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RuleVisitor;
        impl<'de> serde::de::Visitor<'de> for RuleVisitor {
            type Value = ArgRule;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of argument patterns or a table of command, flags, options and positionals")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<ArgRule, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(ArgRule::Vector)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ArgRule, A::Error> {
                OptionsRule::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ArgRule::Options)
            }
        }
        deserializer.deserialize_any(RuleVisitor)
    }
}

impl CommandGrant {
    /// The rules make sense: a typo'd pattern must not silently grant more or less.
    fn check(&self) -> Result<(), String> {
        let program = &self.program;
        if !program.is_absolute() {
            return Err(format!("command {program:?} must be an absolute path"));
        }
        if self.allow.is_empty() {
            return Err(format!("command {program:?} has no allow rules"));
        }
        let bad = |what: &str, value: &str, rule: &str| Err(format!("command {program:?}: {what} {value:?} {rule}"));
        for rule in &self.allow {
            match rule {
                ArgRule::Vector(patterns) => {
                    if let Some(i) = patterns.iter().position(|p| p == "**")
                        && i + 1 != patterns.len()
                    {
                        return bad("pattern", "**", "may only be the last element of a list rule");
                    }
                }
                ArgRule::Options(rule) => {
                    for word in &rule.command {
                        if word.is_empty() || word.contains(['*', '|']) {
                            return bad("command word", word, "must be a non-empty literal");
                        }
                    }
                    for flag in &rule.flags {
                        if !flag.starts_with('-') || flag == "-" || flag == "--" {
                            return bad("flag", flag, "must be an option starting with '-'");
                        }
                    }
                    for (name, value) in &rule.options {
                        if !name.starts_with('-') || name == "-" || name == "--" || name.contains('=') {
                            return bad("option", name, "must start with '-' and hold no '='");
                        }
                        if rule.flags.contains(name) {
                            return bad("option", name, "is also listed as a flag");
                        }
                        if value.is_empty() || value == "**" {
                            return bad("value pattern", value, &format!("of {name} must be a pattern such as \"*\""));
                        }
                    }
                    for positional in &rule.positionals {
                        if positional.is_empty()
                            || positional.split('|').any(|alt| alt.starts_with('-'))
                            || positional == "**"
                        {
                            return bad(
                                "positional",
                                positional,
                                "must be a pattern of arguments not starting with '-'",
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Linear memory cap per call, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Wall-clock deadline per backend call, in milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Calls running at once in this instance; more wait for a slot.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Cap on captured stdout/stderr of one granted command, in KiB.
    #[serde(default = "default_output_kib")]
    pub output_kib: usize,
    /// Host memory one call may make the host hold on its behalf (resource handles,
    /// `wasi:http` fields and bodies, command output, log lines), in MiB.
    #[serde(default = "default_host_memory_mib")]
    pub host_memory_mib: u64,
}

fn default_memory_mib() -> u64 {
    64
}
fn default_deadline_ms() -> u64 {
    60_000
}
fn default_concurrency() -> usize {
    16
}
fn default_output_kib() -> usize {
    1024
}
fn default_host_memory_mib() -> u64 {
    64
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            memory_mib: default_memory_mib(),
            deadline_ms: default_deadline_ms(),
            concurrency: default_concurrency(),
            output_kib: default_output_kib(),
            host_memory_mib: default_host_memory_mib(),
        }
    }
}

/// A settings value: written as a string, number or boolean, handed on as a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Integer(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parse config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and checks a TOML (`.toml`) or YAML (`.yaml`/`.yml`) config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` picks the format and names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse { path: path.to_owned(), message };
        let config: Config = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => serde_yaml::from_str(text).map_err(|e| parse_err(e.to_string()))?,
            Some("toml") => toml::from_str(text).map_err(|e| parse_err(e.to_string()))?,
            _ => return Err(parse_err("unknown format: name the file *.toml, *.yaml or *.yml".into())),
        };
        config.check().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
        Ok(config)
    }

    /// The embedded default: the bundled loopfile backend storing volumes under `data_dir`.
    pub fn embedded_default(data_dir: &Path) -> Config {
        Config {
            backends: vec![BackendConfig {
                name: "loopfile".into(),
                module: format!("{BUILTIN_PREFIX}loopfile"),
                default: true,
                grants: GrantsConfig {
                    directories: vec![DirectoryGrant {
                        host: data_dir.join("loopfile"),
                        guest: "/data".into(),
                        read_only: false,
                    }],
                    ..GrantsConfig::default()
                },
                limits: LimitsConfig::default(),
                settings: BTreeMap::from([("directory".into(), Scalar::String("/data".into()))]),
            }],
            allowed_path_roots: Vec::new(),
        }
    }

    /// Cross-field rules serde cannot express.
    fn check(&self) -> Result<(), String> {
        if self.backends.is_empty() {
            return Err("no backends: at least one [[backends]] entry is required".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in &self.backends {
            check_instance_name(&b.name)?;
            if !seen.insert(b.name.as_str()) {
                return Err(format!("backend name {:?} is used twice", b.name));
            }
            let at = |msg: String| format!("backend {:?}: {msg}", b.name);
            let limits = &b.limits;
            if [limits.memory_mib, limits.deadline_ms, limits.concurrency as u64, limits.host_memory_mib].contains(&0) {
                return Err(at("limits memory_mib, host_memory_mib, deadline_ms and concurrency must be > 0".into()));
            }
            if b.limits.concurrency > MAX_CONCURRENCY || b.limits.memory_mib > MAX_MEMORY_MIB {
                return Err(at(format!(
                    "limits: concurrency is at most {MAX_CONCURRENCY}, memory_mib at most {MAX_MEMORY_MIB}"
                )));
            }
            for d in &b.grants.directories {
                if !d.host.is_absolute() || !d.guest.starts_with('/') {
                    return Err(at(format!(
                        "directory grant {:?} -> {:?}: both paths must be absolute",
                        d.host, d.guest
                    )));
                }
            }
            for c in &b.grants.commands {
                c.check().map_err(at)?;
            }
            for d in &b.grants.devices {
                if plain_components(d).is_none_or(|parts| parts.len() < 2) {
                    return Err(at(format!(
                        "device grant {d:?} must be an absolute path pattern below a directory, such as \"/dev/vg0/*\""
                    )));
                }
            }
        }
        if let Some(root) = self.allowed_path_roots.iter().find(|r| !r.is_absolute()) {
            return Err(format!("allowed path root {root:?} must be an absolute path"));
        }
        if self.backends.iter().filter(|b| b.default).count() > 1 {
            return Err("more than one backend is marked default".into());
        }
        Ok(())
    }
}

/// The components of an absolute path with no `.`, `..` or empty component, or `None`.
pub fn plain_components(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    parts.iter().all(|c| !c.is_empty() && *c != "." && *c != "..").then_some(parts)
}

/// Instance names become id prefixes and label values: short, lowercase, DNS-label-like.
pub fn check_instance_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 31
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "backend name {name:?} must be 1-31 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_every_section_parses() {
        let text = r#"
            [[backends]]
            name = "fast"
            module = "/opt/lvm.wasm"
            default = true
            settings = { volume-group = "vg0", reserve = 1024, thin = false }
            [backends.limits]
            memory_mib = 32
            [[backends.grants.commands]]
            program = "/sbin/lvm"
            allow = [["lvs|vgs", "**"]]
        "#;
        let c = Config::parse(Path::new("c.toml"), text).unwrap();
        let b = &c.backends[0];
        assert_eq!(b.limits.memory_mib, 32);
        assert_eq!(b.limits.deadline_ms, default_deadline_ms());
        assert_eq!(b.settings["reserve"].to_string(), "1024");
        assert_eq!(b.settings["thin"].to_string(), "false");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = "backends:\n- name: a\n  module: builtin:loopfile\n  grant: {}\n";
        let err = Config::parse(Path::new("c.yaml"), text).unwrap_err().to_string();
        assert!(err.contains("unknown field `grant`"), "{err}");
    }

    #[test]
    fn bad_names_duplicates_and_relative_paths_are_rejected() {
        for (text, needle) in [
            ("[[backends]]\nname = \"Bad_Name\"\nmodule = \"x\"\n", "must be 1-31"),
            ("[[backends]]\nname = \"a\"\nmodule = \"x\"\n[[backends]]\nname = \"a\"\nmodule = \"y\"\n", "used twice"),
            (
                "[[backends]]\nname = \"a\"\nmodule = \"x\"\n[[backends.grants.directories]]\nhost = \"rel\"\nguest = \"/d\"\n",
                "absolute",
            ),
            ("backends = []\n", "at least one"),
            (
                "[[backends]]\nname = \"a\"\nmodule = \"x\"\n[backends.grants]\ndevices = [\"/dev/../sda\"]\n",
                "device grant",
            ),
            ("[[backends]]\nname = \"a\"\nmodule = \"x\"\n[backends.grants]\ndevices = [\"*\"]\n", "device grant"),
        ] {
            let err = Config::parse(Path::new("c.toml"), text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
