//! A test host for backend components: it loads a component through the real host
//! runtime (same linker, grants, limits and error mapping as production) with temporary
//! granted directories, a recording fake `exec` and a recording fake HTTP responder (behind
//! the real origin grant check), so every backend can be unit-tested under plain
//! `cargo test`, without root, without the tools it drives and without a network.
//!
//! ```no_run
//! use backend_testkit::{Secrets, TestHost, ok, volume_request};
//!
//! let kit = TestHost::builder(backend_bundle::LOOPFILE)
//!     .granted_dir("/data")
//!     .setting("directory", "/data")
//!     // Answers every granted command, from the load (`validate-settings`) on.
//!     .respond(|_call| ok(b"{}"))
//!     .build()
//!     .unwrap();
//! let volume = kit.create_volume(volume_request("pvc-1", 1 << 20, 0)).unwrap();
//! let file = kit.host_dir("/data").join("volumes").join(&volume.id);
//! let capacity = kit.get_capacity(vec![], vec![], None).unwrap();
//! // The host's own client, for what the typed methods do not cover (secrets, say):
//! let page = kit.block_on(kit.backend().list_volumes(Secrets::default(), 0, "")).unwrap();
//! ```
//!
//! Each export has a typed method (`create_volume`, `list_snapshots`, …); [`TestHost::backend`]
//! is the host's own client of the instance. Every call runs in a fresh instance under the
//! instance's deadline, exactly as in the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmcsi::command::Executor;
use wasmcsi::config::{ArgRule, BackendConfig, CommandGrant, DirectoryGrant, GrantsConfig, Scalar};
use wasmcsi::runtime::Runtime;
use wasmcsi::runtime::csi::backend::types::{Capacity, Expansion, SnapshotPage, VolumePage};
use wasmcsi::runtime::http::{HttpSender, Origin, SendFuture};

pub use wasmcsi::command::Output;
pub use wasmcsi::config::LimitsConfig;
/// Granularity of call deadlines: a call may time out up to one tick early or late.
pub use wasmcsi::runtime::EPOCH_TICK;
/// The remaining WIT types (pages, capacity, expansion, …).
pub use wasmcsi::runtime::csi::backend::types;
pub use wasmcsi::runtime::http::HttpError;
pub use wasmcsi::runtime::{
    AccessMode, AccessType, BackendError, BackendInfo, CallError, CapacityRange, ContentSource, CreateVolumeRequest,
    Device, Exhausted, Features, LoadError, MountAccess, Secrets, Snapshot, Volume, VolumeCapability,
};

/// A backend's string pairs: parameters, contexts, settings.
pub type Params = Vec<(String, String)>;

/// One command the backend ran (after the host's grant check passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCall {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
}

type Responder = Box<dyn FnMut(&ExecCall) -> Output + Send>;

/// Records every granted command and answers it with a scripted responder
/// (by default: exit 0, no output).
pub struct FakeExec {
    calls: Mutex<Vec<ExecCall>>,
    responder: Mutex<Responder>,
}

impl FakeExec {
    fn new(responder: Responder) -> FakeExec {
        FakeExec { calls: Mutex::new(Vec::new()), responder: Mutex::new(responder) }
    }

    /// Replaces how commands are answered.
    pub fn respond(&self, responder: impl FnMut(&ExecCall) -> Output + Send + 'static) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> Vec<ExecCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Forgets the calls recorded so far (those of the load, say).
    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

/// An answer: exit 0 with `stdout`.
pub fn ok(stdout: &[u8]) -> Output {
    Output { code: Some(0), stdout: stdout.to_vec(), stderr: Vec::new(), timed_out: false }
}

/// An answer: exit `code` with `stderr`.
pub fn fail(code: i32, stderr: &[u8]) -> Output {
    Output { code: Some(code), stdout: Vec::new(), stderr: stderr.to_vec(), timed_out: false }
}

impl Executor for FakeExec {
    fn run(
        &self,
        program: &Path,
        args: &[String],
        stdin: &[u8],
        _deadline: Instant,
        _cap: usize,
    ) -> std::io::Result<Output> {
        let call = ExecCall { program: program.display().to_string(), args: args.to_vec(), stdin: stdin.to_vec() };
        // Recorded before answering, so a responder that panics still leaves its call on record.
        self.calls.lock().unwrap().push(call.clone());
        let answer = (self.responder.lock().unwrap())(&call);
        Ok(answer)
    }
}

/// One HTTP request the backend sent to a granted origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub method: String,
    /// The full request URI, e.g. `http://ec2.test:80/`.
    pub uri: String,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A scripted answer: a status and a body, or a transport failure.
pub type HttpAnswer = Result<(u16, Vec<u8>), HttpError>;

type HttpResponder = Box<dyn FnMut(&HttpCall) -> HttpAnswer + Send>;

/// Records every request that passed the host's origin check and answers it with a
/// scripted responder (by default: 404, empty body).
pub struct FakeHttp {
    calls: Mutex<Vec<HttpCall>>,
    responder: Mutex<HttpResponder>,
}

impl FakeHttp {
    /// Replaces how requests are answered.
    pub fn respond(&self, responder: impl FnMut(&HttpCall) -> HttpAnswer + Send + 'static) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }

    /// Every request sent so far, in order.
    pub fn calls(&self) -> Vec<HttpCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

impl HttpSender for FakeHttp {
    fn send(
        &self,
        _origin: &Origin,
        request: http::Request<bytes::Bytes>,
        _options: Option<wasmcsi::runtime::http::RequestOptions>,
        max_response: usize,
    ) -> SendFuture {
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let call = HttpCall {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers,
            body: request.body().to_vec(),
        };
        self.calls.lock().unwrap().push(call.clone());
        let answer = (self.responder.lock().unwrap())(&call).and_then(|(status, body)| {
            if body.len() > max_response {
                return Err(HttpError::HttpResponseBodySize(Some(body.len() as u64)));
            }
            http::Response::builder()
                .status(status)
                .body(bytes::Bytes::from(body))
                .map_err(|e| HttpError::InternalError(Some(e.to_string())))
        });
        Box::pin(async move { answer })
    }
}

pub struct Builder {
    wasm: Vec<u8>,
    guest_dirs: Vec<String>,
    commands: Vec<CommandGrant>,
    responder: Responder,
    origins: Vec<String>,
    http_responder: HttpResponder,
    secret_env: Vec<String>,
    settings: BTreeMap<String, Scalar>,
    limits: LimitsConfig,
    node_id: String,
}

impl Builder {
    /// Grants a fresh temporary directory, seen by the backend at `guest`.
    pub fn granted_dir(mut self, guest: &str) -> Self {
        self.guest_dirs.push(guest.to_owned());
        self
    }

    /// Grants `program` with argument vector rules (see `CommandGrant::allow`).
    pub fn command(self, program: &str, allow: &[&[&str]]) -> Self {
        let allow = allow.iter().map(|p| ArgRule::Vector(p.iter().map(|s| s.to_string()).collect())).collect();
        self.command_grant(CommandGrant { program: program.into(), host_args: vec![], allow })
    }

    /// Grants a command as a config file does (options rules, `host_args`).
    pub fn command_grant(mut self, grant: CommandGrant) -> Self {
        self.commands.push(grant);
        self
    }

    /// How granted commands are answered, already during the load (a backend may run
    /// commands in `validate-settings`). Replace it later with [`FakeExec::respond`].
    pub fn respond(mut self, responder: impl FnMut(&ExecCall) -> Output + Send + 'static) -> Self {
        self.responder = Box::new(responder);
        self
    }

    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.insert(key.to_owned(), Scalar::String(value.to_owned()));
        self
    }

    pub fn limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    pub fn node_id(mut self, node_id: &str) -> Self {
        self.node_id = node_id.to_owned();
        self
    }

    /// Grants outgoing HTTP to `origin` (`scheme://host[:port]`).
    pub fn http_origin(mut self, origin: &str) -> Self {
        self.origins.push(origin.to_owned());
        self
    }

    /// How granted HTTP requests are answered, from the load on.
    pub fn http_respond(mut self, responder: impl FnMut(&HttpCall) -> HttpAnswer + Send + 'static) -> Self {
        self.http_responder = Box::new(responder);
        self
    }

    /// Lets the backend read the host environment variable `name` through `host.secret`.
    pub fn secret_env(mut self, name: &str) -> Self {
        self.secret_env.push(name.to_owned());
        self
    }

    /// Loads the component as the host would: info, then validate-settings.
    pub fn build(self) -> Result<TestHost, LoadError> {
        let temp = tempfile::tempdir().expect("create a temporary directory");
        let exec = Arc::new(FakeExec::new(self.responder));
        let http = Arc::new(FakeHttp { calls: Mutex::new(Vec::new()), responder: Mutex::new(self.http_responder) });
        let directories: Vec<DirectoryGrant> = self
            .guest_dirs
            .iter()
            .enumerate()
            .map(|(i, guest)| DirectoryGrant {
                host: temp.path().join(format!("grant{i}")),
                guest: guest.clone(),
                read_only: false,
            })
            .collect();
        let config = BackendConfig {
            name: "test".into(),
            module: "test-component".into(),
            default: true,
            grants: GrantsConfig {
                directories: directories.clone(),
                commands: self.commands,
                http: self.origins,
                secret_env: self.secret_env,
                ..GrantsConfig::default()
            },
            limits: self.limits,
            settings: self.settings,
        };
        let mut runtime = Runtime::new(&shared_cache_dir(), exec.clone(), config.limits.concurrency as u32)
            .expect("start the wasm runtime");
        runtime.set_http_sender(http.clone());
        // A worker thread of its own drives timers and I/O while a call blocks this thread
        // (the load) or a blocking thread (every later call), as in the host.
        let tokio =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("start tokio");
        let backend = {
            // One load at a time per process: parallel tests would otherwise all compile the
            // same component at once, and race on the cache's temporary file.
            let _one_at_a_time = LOADING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _in_tokio = tokio.enter();
            runtime.load_bytes(&config, &self.wasm, &self.node_id)?
        };
        Ok(TestHost { backend, exec, http, directories, tokio, _temp: temp })
    }
}

static LOADING: Mutex<()> = Mutex::new(());

/// Compiled components are cached across tests (keyed by content hash), next to the test
/// binaries (`target/<profile>/`) rather than in a shared, world-writable temp directory:
/// the host loads a cache entry as trusted code.
fn shared_cache_dir() -> PathBuf {
    let beside_binaries =
        std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.join("wasmcsi-testkit-cache")));
    beside_binaries.unwrap_or_else(|| std::env::temp_dir().join("wasmcsi-testkit-cache"))
}

/// A loaded backend instance and its test doubles.
pub struct TestHost {
    backend: wasmcsi::runtime::Backend,
    exec: Arc<FakeExec>,
    http: Arc<FakeHttp>,
    directories: Vec<DirectoryGrant>,
    tokio: tokio::runtime::Runtime,
    _temp: tempfile::TempDir,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("backend", &self.backend.info.name)
            .field("directories", &self.directories)
            .finish_non_exhaustive()
    }
}

impl TestHost {
    pub fn builder(wasm: &[u8]) -> Builder {
        Builder {
            wasm: wasm.to_vec(),
            guest_dirs: Vec::new(),
            commands: Vec::new(),
            responder: Box::new(|_| ok(b"")),
            origins: Vec::new(),
            http_responder: Box::new(|_| Ok((404, Vec::new()))),
            secret_env: Vec::new(),
            settings: BTreeMap::new(),
            limits: LimitsConfig::default(),
            node_id: "test-node".into(),
        }
    }

    pub fn info(&self) -> &BackendInfo {
        &self.backend.info
    }

    /// The host directory behind a granted guest path.
    pub fn host_dir(&self, guest: &str) -> &Path {
        &self.directories.iter().find(|d| d.guest == guest).expect("no directory granted at that guest path").host
    }

    pub fn exec(&self) -> &FakeExec {
        &self.exec
    }

    pub fn http(&self) -> &FakeHttp {
        &self.http
    }

    /// The loaded instance, for calls the typed methods do not cover (other secrets, say);
    /// run its futures with [`TestHost::block_on`].
    pub fn backend(&self) -> &wasmcsi::runtime::Backend {
        &self.backend
    }

    /// Runs a future of [`TestHost::backend`] to completion.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.tokio.block_on(future)
    }

    pub fn create_volume(&self, request: CreateVolumeRequest) -> Result<Volume, CallError> {
        self.block_on(self.backend.create_volume(Secrets::default(), (), request))
    }

    pub fn find_volume(&self, name: &str) -> Result<Option<Volume>, CallError> {
        self.block_on(self.backend.find_volume(Secrets::default(), name))
    }

    pub fn delete_volume(&self, volume_id: &str) -> Result<(), CallError> {
        self.block_on(self.backend.delete_volume(Secrets::default(), (), volume_id))
    }

    pub fn get_volume(&self, volume_id: &str) -> Result<Volume, CallError> {
        self.block_on(self.backend.get_volume(Secrets::default(), volume_id))
    }

    pub fn list_volumes(&self, max_entries: u32, starting_token: &str) -> Result<VolumePage, CallError> {
        self.block_on(self.backend.list_volumes(Secrets::default(), max_entries, starting_token))
    }

    pub fn get_capacity(
        &self,
        capabilities: Vec<VolumeCapability>,
        parameters: Params,
        topology: Option<Params>,
    ) -> Result<Capacity, CallError> {
        self.block_on(self.backend.get_capacity(Secrets::default(), capabilities, parameters, topology))
    }

    pub fn expand_volume(
        &self,
        volume_id: &str,
        required_bytes: u64,
        limit_bytes: u64,
    ) -> Result<Expansion, CallError> {
        let capacity = CapacityRange { required_bytes, limit_bytes };
        self.block_on(self.backend.expand_volume(Secrets::default(), (), volume_id, capacity))
    }

    pub fn modify_volume(&self, volume_id: &str, mutable_parameters: Params) -> Result<(), CallError> {
        self.block_on(self.backend.modify_volume(Secrets::default(), (), volume_id, mutable_parameters))
    }

    pub fn create_snapshot(
        &self,
        source_volume_id: &str,
        name: &str,
        parameters: Params,
    ) -> Result<Snapshot, CallError> {
        self.block_on(self.backend.create_snapshot(Secrets::default(), (), source_volume_id, name, parameters))
    }

    pub fn find_snapshot(&self, name: &str) -> Result<Option<Snapshot>, CallError> {
        self.block_on(self.backend.find_snapshot(Secrets::default(), name))
    }

    pub fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CallError> {
        self.block_on(self.backend.delete_snapshot(Secrets::default(), (), snapshot_id))
    }

    /// Empty filters are unset; `max_entries` 0 means no limit.
    pub fn list_snapshots(
        &self,
        snapshot_id: &str,
        source_volume_id: &str,
        max_entries: u32,
        starting_token: &str,
    ) -> Result<SnapshotPage, CallError> {
        let secrets = Secrets::default();
        self.block_on(self.backend.list_snapshots(secrets, snapshot_id, source_volume_id, max_entries, starting_token))
    }

    pub fn controller_publish(
        &self,
        volume_id: &str,
        node_id: &str,
        capability: VolumeCapability,
        readonly: bool,
        volume_context: Params,
    ) -> Result<Params, CallError> {
        let secrets = Secrets::default();
        self.block_on(self.backend.controller_publish(
            secrets,
            (),
            volume_id,
            node_id,
            capability,
            readonly,
            volume_context,
        ))
    }

    pub fn controller_unpublish(&self, volume_id: &str, node_id: &str) -> Result<(), CallError> {
        self.block_on(self.backend.controller_unpublish(Secrets::default(), (), volume_id, node_id))
    }

    pub fn node_device(
        &self,
        volume_id: &str,
        volume_context: Params,
        publish_context: Params,
    ) -> Result<Device, CallError> {
        self.block_on(self.backend.node_device(Secrets::default(), volume_id, volume_context, publish_context))
    }

    pub fn node_topology(&self) -> Result<Params, CallError> {
        self.block_on(self.backend.node_topology(Secrets::default()))
    }
}

/// A create request with one single-node-writer mount capability (the backend's default
/// filesystem), no parameters and no content source; adjust its fields as a test needs.
pub fn volume_request(name: &str, required_bytes: u64, limit_bytes: u64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity: CapacityRange { required_bytes, limit_bytes },
        capabilities: vec![VolumeCapability {
            access_type: AccessType::Mount(MountAccess { fs_type: String::new(), mount_flags: Vec::new() }),
            access_mode: AccessMode::SingleNodeWriter,
        }],
        parameters: Vec::new(),
        mutable_parameters: Vec::new(),
        content_source: None,
        accessibility: None,
    }
}

/// The backend's own error, or a panic naming the sandbox failure (trap, timeout, OOM).
pub fn backend_error<R: std::fmt::Debug>(result: Result<R, CallError>) -> BackendError {
    match result {
        Err(CallError::Backend { error, .. }) => error,
        other => panic!("expected a backend error, got {other:?}"),
    }
}
