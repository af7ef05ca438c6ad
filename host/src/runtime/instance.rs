//! One loaded backend instance: its pre-linked component, grants, limits and settings, and
//! `call`, which runs one backend function in a fresh store on a blocking thread.
//!
//! A fresh store per call means a trap, a timeout or a memory blow-up only ever poisons
//! that one call; the instance, the host and the other backends keep serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

use super::bindings::{BackendComponentPre, BackendError, BackendInfo, Guest};
use super::call::{CallState, MemoryLimiter, Secrets};
use super::grants::Grants;
use super::http::{GrantedHttp, HttpSender};
use super::{CallError, EPOCH_TICK};
use crate::command::Executor;
use crate::config::LimitsConfig;

/// What every call of an instance shares.
pub struct Shared {
    pub name: String,
    pub grants: Grants,
    pub limits: LimitsConfig,
    pub settings: Vec<(String, String)>,
    pub node_id: String,
    pub executor: Arc<dyn Executor>,
    pub http: Arc<dyn HttpSender>,
}

/// Bytes of guest stdout/stderr kept per call (shown when a call traps).
const GUEST_OUTPUT_CAP: usize = 64 << 10;

pub struct Backend {
    shared: Arc<Shared>,
    pre: BackendComponentPre<CallState>,
    permits: Arc<Semaphore>,
    /// Declared by the backend at load time.
    pub info: BackendInfo,
}

impl Backend {
    pub(super) fn new(shared: Arc<Shared>, pre: BackendComponentPre<CallState>, info: BackendInfo) -> Backend {
        let permits = Arc::new(Semaphore::new(shared.limits.concurrency));
        Backend { shared, pre, permits, info }
    }

    /// The instance name from the config: the prefix of its ids.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What the instance may touch; the node side resolves `device.file` paths through it.
    pub fn grants(&self) -> &Grants {
        &self.shared.grants
    }

    /// Runs `f` against a fresh instance on a blocking thread. `guard` (a volume lock, say)
    /// is held until the backend really finishes, even if the caller gives up first.
    pub async fn call<R, F, G>(&self, secrets: Secrets, guard: G, f: F) -> Result<R, CallError>
    where
        F: FnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>> + Send + 'static,
        R: Send + 'static,
        G: Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        self.call_with(permit, secrets, guard, f).await
    }

    /// Like [`Backend::call`], but answers `None` at once when every call slot of the
    /// instance is busy: for lookups that must not wait on a saturated instance.
    pub async fn try_call<R, F>(&self, f: F) -> Option<Result<R, CallError>>
    where
        F: FnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>> + Send + 'static,
        R: Send + 'static,
    {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.call_with(permit, Secrets::default(), (), f).await)
    }

    async fn call_with<R, F, G>(
        &self,
        permit: OwnedSemaphorePermit,
        secrets: Secrets,
        guard: G,
        f: F,
    ) -> Result<R, CallError>
    where
        F: FnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>> + Send + 'static,
        R: Send + 'static,
        G: Send + 'static,
    {
        let (shared, pre) = (self.shared.clone(), self.pre.clone());
        let name = shared.name.clone();
        tokio::task::spawn_blocking(move || {
            let result = run(&shared, &pre, secrets, f);
            drop((guard, permit));
            result
        })
        .await
        .unwrap_or_else(|e| Err(CallError::Trap { backend: name, message: format!("host task failed: {e}") }))
    }
}

/// Runs one backend function in a fresh store, turning traps into typed errors.
pub(super) fn run<R>(
    shared: &Arc<Shared>,
    pre: &BackendComponentPre<CallState>,
    secrets: Secrets,
    f: impl FnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>>,
) -> Result<R, CallError> {
    let backend = || shared.name.clone();
    let deadline_ms = shared.limits.deadline_ms;
    let output = MemoryOutputPipe::new(GUEST_OUTPUT_CAP);
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(output.clone()).stderr(output.clone()).allow_blocking_current_thread(true);
    for dir in &shared.grants.directories {
        let perms = if dir.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        wasi.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| CallError::Trap {
            backend: backend(),
            message: format!("open granted directory {}: {e}", dir.host.display()),
        })?;
    }
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let http_hooks = GrantedHttp {
        backend: shared.name.as_str().into(),
        origins: shared.grants.http.clone(),
        sender: shared.http.clone(),
        deadline,
        max_response: shared.limits.output_kib << 10,
    };
    let state = CallState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter { max_bytes: (shared.limits.memory_mib << 20) as usize, exceeded: false },
        shared: shared.clone(),
        secrets,
        deadline,
        http: WasiHttpCtx::new(),
        http_hooks,
    };
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|s| &mut s.limiter);
    // One tick more than the deadline spans: the first tick may come at once.
    store.set_epoch_deadline(deadline_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1);
    store.epoch_deadline_trap();

    let outcome = pre.instantiate(&mut store).and_then(|instance| f(instance.csi_backend_backend(), &mut store));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CallError::Backend { backend: backend(), error }),
        Err(trap) => Err(classify(backend(), trap, store.data().limiter.exceeded, deadline_ms, &output.contents())),
    }
}

fn classify(
    backend: String,
    trap: wasmtime::Error,
    memory_exceeded: bool,
    deadline_ms: u64,
    output: &[u8],
) -> CallError {
    if memory_exceeded {
        return CallError::OutOfMemory { backend };
    }
    if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return CallError::Timeout { backend, deadline_ms };
    }
    let text = String::from_utf8_lossy(output);
    tracing::warn!(%backend, "backend trapped: {trap:?}; guest output: {}", text.escape_debug());
    // The guest's last words (a Rust panic prints its message, then a hint line).
    let last_words = text.lines().rev().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("note: "));
    let what = match trap.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => trap.root_cause().to_string(),
    };
    let message = match last_words {
        Some(words) => format!("{what}: {}", words.chars().take(300).collect::<String>()),
        None => what,
    };
    CallError::Trap { backend, message }
}
