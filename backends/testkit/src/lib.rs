//! A test host for backend components: it loads a component through the real host
//! runtime (same linker, grants, limits and error mapping as production) with temporary
//! granted directories and a recording fake `exec`, so every backend can be unit-tested
//! under plain `cargo test`, without root and without the tools it drives.
//!
//! ```no_run
//! let kit = backend_testkit::TestHost::builder(backend_bundle::LOOPFILE)
//!     .granted_dir("/data")
//!     .setting("directory", "/data")
//!     .build()
//!     .unwrap();
//! let capacity = kit.call(|g, s| g.call_get_capacity(s, &[], &[], None)).unwrap();
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmcsi::command::{Executor, Output};
use wasmcsi::config::{BackendConfig, CommandGrant, DirectoryGrant, GrantsConfig, LimitsConfig, Scalar};
use wasmcsi::runtime::{Backend, BackendError, BackendInfo, CallError, CallState, Guest, LoadError, Runtime, Secrets, Store};

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
    fn new() -> FakeExec {
        FakeExec { calls: Mutex::new(Vec::new()), responder: Mutex::new(Box::new(|_| ok(b""))) }
    }

    /// Replaces how commands are answered.
    pub fn respond(&self, responder: impl FnMut(&ExecCall) -> Output + Send + 'static) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> Vec<ExecCall> {
        self.calls.lock().unwrap().clone()
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
    fn run(&self, program: &Path, args: &[String], stdin: &[u8], _deadline: Instant, _cap: usize) -> std::io::Result<Output> {
        let call = ExecCall { program: program.display().to_string(), args: args.to_vec(), stdin: stdin.to_vec() };
        let answer = (self.responder.lock().unwrap())(&call);
        self.calls.lock().unwrap().push(call);
        Ok(answer)
    }
}

pub struct Builder {
    wasm: Vec<u8>,
    guest_dirs: Vec<String>,
    commands: Vec<CommandGrant>,
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

    /// Grants `program` with argument patterns (see `CommandGrant::allow`).
    pub fn command(mut self, program: &str, allow: &[&[&str]]) -> Self {
        let allow = allow.iter().map(|p| p.iter().map(|s| s.to_string()).collect()).collect();
        self.commands.push(CommandGrant { program: program.into(), allow });
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

    /// Loads the component as the host would: info, then validate-settings.
    pub fn build(self) -> Result<TestHost, LoadError> {
        let temp = tempfile::tempdir().expect("create a temporary directory");
        let exec = Arc::new(FakeExec::new());
        let directories: Vec<DirectoryGrant> = self
            .guest_dirs
            .iter()
            .enumerate()
            .map(|(i, guest)| DirectoryGrant { host: temp.path().join(format!("grant{i}")), guest: guest.clone(), read_only: false })
            .collect();
        let config = BackendConfig {
            name: "test".into(),
            module: "test-component".into(),
            default: true,
            grants: GrantsConfig { directories: directories.clone(), commands: self.commands, ..GrantsConfig::default() },
            limits: self.limits,
            settings: self.settings,
        };
        let runtime = Runtime::new(&shared_cache_dir(), exec.clone()).expect("start the wasm runtime");
        let backend = runtime.load_bytes(&config, &self.wasm, &self.node_id)?;
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("start tokio");
        Ok(TestHost { backend, exec, directories, tokio, _temp: temp })
    }
}

/// Compiled components are cached across tests (keyed by content hash).
fn shared_cache_dir() -> PathBuf {
    std::env::temp_dir().join("wasmcsi-testkit-cache")
}

/// A loaded backend instance and its test doubles.
pub struct TestHost {
    backend: Backend,
    exec: Arc<FakeExec>,
    directories: Vec<DirectoryGrant>,
    tokio: tokio::runtime::Runtime,
    _temp: tempfile::TempDir,
}

impl TestHost {
    pub fn builder(wasm: &[u8]) -> Builder {
        Builder {
            wasm: wasm.to_vec(),
            guest_dirs: Vec::new(),
            commands: Vec::new(),
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

    /// Calls one backend export in a fresh instance, exactly as the host does.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>> + Send + 'static,
    ) -> Result<R, CallError> {
        self.call_with_secrets(Secrets::default(), f)
    }

    /// Like [`TestHost::call`], with a CSI `secrets` map visible through `host.secret`.
    pub fn call_with_secrets<R: Send + 'static>(
        &self,
        secrets: Secrets,
        f: impl FnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>> + Send + 'static,
    ) -> Result<R, CallError> {
        self.tokio.block_on(self.backend.call(secrets, (), f))
    }
}

/// The backend's own error, or a panic naming the sandbox failure (trap, timeout, OOM).
pub fn backend_error<R: std::fmt::Debug>(result: Result<R, CallError>) -> BackendError {
    match result {
        Err(CallError::Backend { error, .. }) => error,
        other => panic!("expected a backend error, got {other:?}"),
    }
}
