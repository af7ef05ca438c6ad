//! Shared harness of the end-to-end tests: runs the real `wasmcsi` binary on a unix socket
//! in a temporary directory, talks CSI to it with tonic clients, and reads its log.
//!
//! Every test owns its own [`Host`] (its own temp dir, data dir, socket and process); the
//! process is SIGKILLed when the `Host` is dropped, so a failing test never leaks one.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use csi::controller_client::ControllerClient;
use csi::group_controller_client::GroupControllerClient;
use csi::identity_client::IdentityClient;
use csi::node_client::NodeClient;
use csi::volume_capability::access_mode::Mode;
use csi_proto::v1 as csi;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint};

#[allow(unused_imports)]
pub use csi::volume_capability::access_mode::Mode as AccessMode;

/// How long a start may take until Probe answers (the first start compiles the component).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a signalled or failing process may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Safety net on every RPC, so a hung host fails the test instead of hanging it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Node id every host of the tests runs with.
pub const NODE_ID: &str = "test-node";
/// Default driver name.
pub const DRIVER: &str = "wasmcsi.dev";
/// Topology key of node-local volumes under the default driver name.
pub const NODE_TOPOLOGY_KEY: &str = "topology.wasmcsi.dev/node";
/// The `http` grant (a TOML string) for instances of the hostile component: it imports
/// `wasi:http`, linked only with a grant. Nothing listens on the discard port.
pub const HOSTILE_HTTP: &str = "\"http://127.0.0.1:9\"";

pub const KIB: i64 = 1 << 10;
pub const MIB: i64 = 1 << 20;
pub const GIB: i64 = 1 << 30;

/// One `wasmcsi serve` process (or none yet, or an exited one) and its temp directory.
pub struct Host {
    tmp: tempfile::TempDir,
    /// Socket path (`unix://` endpoint without the scheme).
    pub socket: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    config: Option<PathBuf>,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    node_id: String,
    rust_log: String,
    child: Option<Child>,
    /// Number of processes started so far; each writes `stderr-<n>.log`.
    runs: usize,
}

impl Host {
    /// A host in a fresh temp dir, not started yet.
    pub fn new() -> Host {
        let tmp = tempfile::Builder::new().prefix("wasmcsi-e2e-").tempdir().expect("create temp dir");
        let socket = tmp.path().join("csi.sock");
        let data_dir = tmp.path().join("data");
        Host {
            tmp,
            socket,
            data_dir,
            config: None,
            extra_args: Vec::new(),
            envs: Vec::new(),
            node_id: NODE_ID.into(),
            rust_log: "info".into(),
            child: None,
            runs: 0,
        }
    }

    /// Starts a host with the embedded default backend and waits until it is ready.
    pub async fn start_default() -> Host {
        let mut host = Host::new();
        host.start().await;
        host
    }

    /// The temp dir everything of this host lives in.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// `<tmp>/<name>` with the temp dir's canonical path (what the kernel's mount table
    /// shows, and what the host accepts as a staging or target path: no symlinks).
    pub fn node_path(&self, name: &str) -> PathBuf {
        self.path().canonicalize().expect("canonicalize the temp dir").join(name)
    }

    pub fn set_config(&mut self, config: PathBuf) -> &mut Self {
        self.config = Some(config);
        self
    }

    /// Extra command-line arguments after the standard ones (kept across restarts).
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, args: I) -> &mut Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--node-id` (default [`NODE_ID`]).
    pub fn set_node_id(&mut self, node_id: &str) -> &mut Self {
        self.node_id = node_id.into();
        self
    }

    /// An environment variable of the process (kept across restarts).
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// `RUST_LOG` of the process (default `info`).
    pub fn rust_log(&mut self, filter: &str) -> &mut Self {
        self.rust_log = filter.into();
        self
    }

    /// Uses another socket path (e.g. to share one with another host).
    pub fn set_socket(&mut self, socket: PathBuf) -> &mut Self {
        self.socket = socket;
        self
    }

    /// The full argument vector of `wasmcsi`.
    pub fn command_line(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            "--endpoint".into(),
            format!("unix://{}", self.socket.display()),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--node-id".into(),
            self.node_id.clone(),
        ];
        if let Some(config) = &self.config {
            args.push("--config".into());
            args.push(config.display().to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none() || self.has_exited(), "a host process is already running");
        self.runs += 1;
        let stderr = File::create(self.log_path(self.runs)).expect("create stderr log");
        let stdout = File::create(self.path().join(format!("stdout-{}.log", self.runs))).expect("create stdout log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasmcsi"));
        command
            .args(self.command_line())
            .current_dir(self.path())
            .env("RUST_LOG", &self.rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        // The binary reads these from the environment; a developer's shell must not steer the tests.
        for var in
            ["CSI_ENDPOINT", "NODE_ID", "WASMCSI_CONFIG", "WASMCSI_DATA_DIR", "CSI_DRIVER_NAME", "WASMCSI_DISTRIBUTED"]
        {
            command.env_remove(var);
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        self.child = Some(command.spawn().expect("spawn the wasmcsi binary"));
    }

    /// Starts the process and waits until it serves; panics (with the log) if it does not.
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// Waits until the socket accepts a connection and Probe answers ready.
    pub async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                panic!("wasmcsi exited with {status} before it served; log:\n{}", self.log());
            }
            if let Ok(channel) = connect(&self.socket).await
                && let Ok(response) = IdentityClient::new(channel).probe(csi::ProbeRequest {}).await
                && response.into_inner().ready == Some(true)
            {
                return;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!("wasmcsi did not serve within {READY_TIMEOUT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts the process on the same data dir, socket and arguments (after SIGTERM if it runs).
    pub async fn restart(&mut self) {
        if self.is_running() {
            let status = self.terminate().await;
            assert!(status.success(), "host exited with {status} on SIGTERM; log:\n{}", self.log());
        }
        self.start().await;
    }

    /// The process id of the running process.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("host was started").id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the host");
    }

    /// SIGTERM and wait for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(EXIT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("host did not exit after SIGTERM; log:\n{}", self.log()))
    }

    /// SIGKILL and wait for the exit.
    pub async fn kill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        self.wait_exit(EXIT_TIMEOUT).await.expect("a SIGKILLed process exits")
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Spawns the process and expects it to fail start-up: returns its exit status and log.
    pub async fn start_expecting_failure(&mut self) -> (ExitStatus, String) {
        self.spawn();
        let status = self
            .wait_exit(READY_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("wasmcsi was expected to fail start-up but still runs; log:\n{}", self.log()));
        (status, self.log())
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("wait for the host"))
    }

    pub fn has_exited(&mut self) -> bool {
        self.try_wait().is_some()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && !self.has_exited()
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.path().join(format!("stderr-{run}.log"))
    }

    /// The stderr of the current (latest) process, ANSI escapes removed.
    pub fn log(&self) -> String {
        self.run_log(self.runs)
    }

    /// The stderr of the `run`-th process (1-based).
    pub fn run_log(&self, run: usize) -> String {
        std::fs::read(self.log_path(run)).map(|b| strip_ansi(&String::from_utf8_lossy(&b))).unwrap_or_default()
    }

    /// The stderr of every process this host started, in order.
    pub fn all_logs(&self) -> String {
        (1..=self.runs).map(|r| self.run_log(r)).collect::<Vec<_>>().join("\n")
    }

    /// Waits (bounded) until the current log contains `needle`; returns whether it did.
    pub async fn log_eventually_contains(&self, needle: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if started.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ---- clients ----

    pub async fn channel(&self) -> Channel {
        connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e:?}; log:\n{}", self.socket.display(), self.log()))
    }

    pub async fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel().await)
    }

    pub async fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel().await)
    }

    pub async fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel().await)
    }

    pub async fn group_controller(&self) -> GroupControllerClient<Channel> {
        GroupControllerClient::new(self.channel().await)
    }

    // ---- files ----

    /// Writes `text` to `<tmp>/<name>` and returns the path.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Writes a config file (TOML or YAML by extension) and makes the host use it.
    pub fn write_config(&mut self, name: &str, text: &str) -> PathBuf {
        let path = self.write_file(name, text);
        self.config = Some(path.clone());
        path
    }

    /// Writes the bundled hostile component to `<tmp>/hostile.wasm`. It imports `wasi:http`
    /// (for its `http-fields` act), so its instances need an `http` grant: [`HOSTILE_HTTP`].
    pub fn write_hostile(&self) -> PathBuf {
        self.write_file("hostile.wasm", backend_bundle::HOSTILE)
    }

    /// `[[backends]]` TOML for a loopfile instance storing its volumes in `<tmp>/<dir>`.
    pub fn loopfile_toml(&self, name: &str, dir: &str, default: bool) -> String {
        let host_dir = self.path().join(dir);
        format!(
            "[[backends]]\nname = {}\nmodule = \"builtin:loopfile\"\ndefault = {default}\ngrants = {{ directories = [{{ host = {}, guest = \"/data\" }}] }}\nsettings = {{ directory = \"/data\" }}\n",
            toml_str(name),
            toml_str(&host_dir.display().to_string()),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Hygiene only (tests assert with `assert_no_leftovers`): never leave a mount or a
        // loop device of this host behind, and never let the temp dir removal below walk
        // into a mounted volume.
        let cleaned = clean_node_leftovers(self.path());
        if !cleaned.is_empty() {
            eprintln!("cleanup of {}:\n  {}", self.path().display(), cleaned.join("\n  "));
        }
        // A failing test shows what the host said; WASMCSI_E2E_KEEP=1 keeps the temp dir.
        if std::thread::panicking() && self.runs > 0 {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- last lines of the wasmcsi log ({}) ---\n{tail}\n---", self.log_path(self.runs).display());
        }
        if std::env::var_os("WASMCSI_E2E_KEEP").is_some() {
            self.tmp.disable_cleanup(true);
            eprintln!("kept the test directory {}", self.path().display());
        }
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Opens a gRPC channel over the unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::try_from("http://[::]:50051")?
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---- request builders ----

pub fn mount_cap(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Mount(csi::volume_capability::MountVolume::default())),
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

pub fn mount_cap_fs(mode: Mode, fs_type: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Mount(csi::volume_capability::MountVolume {
            fs_type: fs_type.into(),
            ..Default::default()
        })),
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

pub fn block_cap(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Block(csi::volume_capability::BlockVolume {})),
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

/// A mount capability with SINGLE_NODE_WRITER.
pub fn rw_mount() -> csi::VolumeCapability {
    mount_cap(Mode::SingleNodeWriter)
}

pub fn range(required_bytes: i64, limit_bytes: i64) -> Option<csi::CapacityRange> {
    Some(csi::CapacityRange { required_bytes, limit_bytes })
}

pub fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// CreateVolume of `name` with a SINGLE_NODE_WRITER mount capability and the given required
/// size (0: no capacity range at all).
pub fn create_req(name: &str, required_bytes: i64) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: if required_bytes == 0 { None } else { range(required_bytes, 0) },
        volume_capabilities: vec![rw_mount()],
        ..Default::default()
    }
}

pub fn create_req_with(name: &str, required_bytes: i64, parameters: &[(&str, &str)]) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest { parameters: params(parameters), ..create_req(name, required_bytes) }
}

pub fn from_snapshot(snapshot_id: &str) -> Option<csi::VolumeContentSource> {
    use csi::volume_content_source::{SnapshotSource, Type};
    Some(csi::VolumeContentSource { r#type: Some(Type::Snapshot(SnapshotSource { snapshot_id: snapshot_id.into() })) })
}

pub fn from_volume(volume_id: &str) -> Option<csi::VolumeContentSource> {
    use csi::volume_content_source::{Type, VolumeSource};
    Some(csi::VolumeContentSource { r#type: Some(Type::Volume(VolumeSource { volume_id: volume_id.into() })) })
}

pub fn node_topology(node: &str) -> csi::Topology {
    csi::Topology { segments: params(&[(NODE_TOPOLOGY_KEY, node)]) }
}

// ---- assertions ----

/// Unwraps an expected failure, checks its code, and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    what: &str,
) -> tonic::Status {
    match result {
        Ok(response) => panic!("{what}: expected {code:?}, got OK: {:?}", response.into_inner()),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: wrong code; message: {:?}", status.message());
            status
        }
    }
}

/// Unwraps an expected success, with the status in the panic message.
#[track_caller]
pub fn expect_ok<T>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) -> T {
    match result {
        Ok(response) => response.into_inner(),
        Err(status) => panic!("{what}: expected OK, got {:?}: {:?}", status.code(), status.message()),
    }
}

/// The backend-local part of a qualified id, checking its instance prefix.
#[track_caller]
pub fn local_id<'a>(id: &'a str, instance: &str) -> &'a str {
    id.strip_prefix(instance)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or_else(|| panic!("id {id:?} does not carry the instance prefix {instance:?}:"))
}

/// Every regular file under `root` (recursively) whose path mentions `needle`, skipping
/// metadata (`*.json`) and temporary files.
pub fn files_mentioning(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let text = path.to_string_lossy();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if text.contains(needle) && ext != "json" && ext != "tmp" {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found
}

/// The one backing (image) file of a backend-local volume id under `root`.
#[track_caller]
pub fn backing_file(root: &Path, local_id: &str) -> PathBuf {
    let files = files_mentioning(root, local_id);
    assert_eq!(
        files.len(),
        1,
        "expected exactly one backing file for {local_id} under {}, found {files:?}",
        root.display()
    );
    files.into_iter().next().unwrap()
}

/// A recognizable 4 KiB pattern, different for each `seed`.
pub fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ 0x5a).collect()
}

/// Writes `data` at `offset` into `file` and flushes it.
pub fn write_at(file: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).expect("open backing file for writing");
    f.write_all_at(data, offset).expect("write pattern");
    f.sync_all().expect("sync backing file");
}

/// Reads `len` bytes at `offset` of `file`.
pub fn read_at(file: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = File::open(file).expect("open backing file for reading");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).expect("read pattern");
    buf
}

/// Lines of `log` that contain every one of `needles`.
pub fn log_lines<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|l| needles.iter().all(|n| l.contains(n))).collect()
}

/// Distinct values, for set comparisons in assertions.
pub fn set<T: Ord, I: IntoIterator<Item = T>>(items: I) -> BTreeSet<T> {
    items.into_iter().collect()
}

// ---- node: privilege gate, mount table, loop devices, leftovers ----

#[path = "../../host/src/node/test_gate.rs"]
mod test_gate;
#[allow(unused_imports)] // each test crate uses a part of this module
pub use test_gate::{cannot_run, privileged, privileged_with};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    pub mount_id: u32,
    /// `major:minor` of the mounted filesystem (or of a bound device node's filesystem).
    pub device: String,
    /// The directory (or file) of the filesystem mounted here.
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`/`ro`, ...).
    pub options: String,
    pub fs_type: String,
    pub source: String,
}

impl MountLine {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount table of this process (the same mount namespace the host runs in).
pub fn mount_table() -> Vec<MountLine> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(MountLine {
                mount_id: fields.first()?.parse().ok()?,
                device: fields.get(2)?.to_string(),
                root: PathBuf::from(unescape_mountinfo(fields.get(3)?)),
                mount_point: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
                options: fields.get(5)?.to_string(),
                fs_type: fields.get(dash + 1)?.to_string(),
                source: unescape_mountinfo(fields.get(dash + 2).copied().unwrap_or("")),
            })
        })
        .collect()
}

/// The mounts stacked at exactly `path`, bottom first.
pub fn mounts_at(path: &Path) -> Vec<MountLine> {
    mount_table().into_iter().filter(|m| m.mount_point == path).collect()
}

/// An attached loop device, as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopLine {
    /// `/dev/loopN`.
    pub device: PathBuf,
    /// `major:minor`.
    pub number: String,
    /// The backing file's path, without the kernel's " (deleted)".
    pub backing_file: PathBuf,
    pub deleted: bool,
}

/// Every attached loop device (from `/sys/block/loop*/loop/backing_file`).
pub fn loop_devices() -> Vec<LoopLine> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return found };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        let backing = backing.trim_end_matches('\n');
        let (backing, deleted) = match backing.strip_suffix(" (deleted)") {
            Some(path) => (path, true),
            None => (backing, false),
        };
        let number = std::fs::read_to_string(entry.path().join("dev")).unwrap_or_default().trim().to_string();
        found.push(LoopLine {
            device: Path::new("/dev").join(&name),
            number,
            backing_file: PathBuf::from(backing),
            deleted,
        });
    }
    found.sort_by(|a, b| a.device.cmp(&b.device));
    found
}

/// The loop devices serving `file` (compared by path, the file may have been deleted).
pub fn loops_of(file: &Path) -> Vec<LoopLine> {
    let file = file
        .canonicalize()
        .or_else(|_| match (file.parent(), file.file_name()) {
            // A deleted file: its directory's canonical path.
            (Some(parent), Some(name)) => parent.canonicalize().map(|p| p.join(name)),
            _ => Ok(file.to_owned()),
        })
        .unwrap_or_else(|_| file.to_owned());
    loop_devices().into_iter().filter(|l| l.backing_file == file).collect()
}

/// Mounts and loop devices something under `root` left behind.
#[derive(Debug, Default)]
pub struct NodeLeftovers {
    /// Mounts at or below `root`.
    pub mounts: Vec<MountLine>,
    /// Loop devices whose backing file is (or was) below `root`.
    pub loop_devices: Vec<LoopLine>,
}

impl NodeLeftovers {
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty() && self.loop_devices.is_empty()
    }
}

fn canonical_root(root: &Path) -> PathBuf {
    root.canonicalize().unwrap_or_else(|_| root.to_owned())
}

/// What is mounted under `root`, and which loop devices serve files under it.
pub fn node_leftovers(root: &Path) -> NodeLeftovers {
    let root = canonical_root(root);
    NodeLeftovers {
        mounts: mount_table().into_iter().filter(|m| m.mount_point.starts_with(&root)).collect(),
        loop_devices: loop_devices().into_iter().filter(|l| l.backing_file.starts_with(&root)).collect(),
    }
}

/// Unmounts everything under `root` (deepest first, stacked mounts one by one, lazily as a
/// last resort) and then detaches the loop devices of files under it. Returns what it did.
pub fn clean_node_leftovers(root: &Path) -> Vec<String> {
    use nix::mount::{MntFlags, umount2};
    let mut done = Vec::new();
    let root = canonical_root(root);
    for _ in 0..64 {
        // Deepest path first; of mounts stacked on one path, the top one (the kernel lists
        // a mount after the ones it covers).
        let deepest = mount_table()
            .into_iter()
            .enumerate()
            .filter(|(_, m)| m.mount_point.starts_with(&root))
            .max_by_key(|(index, m)| (m.mount_point.components().count(), *index));
        let Some((_, deepest)) = deepest else { break };
        let path = &deepest.mount_point;
        match umount2(path, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => done.push(format!("unmounted {}", path.display())),
            Err(e) => {
                let lazy = umount2(path, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH);
                done.push(format!("unmount {}: {e}; lazy unmount: {lazy:?}", path.display()));
            }
        }
    }
    for device in loop_devices().into_iter().filter(|l| l.backing_file.starts_with(&root)) {
        let status = Command::new("losetup").arg("-d").arg(&device.device).stderr(Stdio::null()).status();
        done.push(format!("detached {} ({}): {status:?}", device.device.display(), device.backing_file.display()));
    }
    done
}

/// Fails the test if a mount under the host's temp dir, or a loop device serving a file
/// under it, is left. (The `Host`'s drop cleans up too, but only for hygiene.)
#[track_caller]
pub fn assert_no_leftovers(host: &Host) {
    let left = node_leftovers(host.path());
    assert!(
        left.is_empty(),
        "left behind under {}:\n  mounts: {:#?}\n  loop devices: {:#?}",
        host.path().display(),
        left.mounts,
        left.loop_devices
    );
}
