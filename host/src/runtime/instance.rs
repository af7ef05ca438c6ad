//! One loaded backend instance: its pre-linked component, grants, limits and settings, and
//! one typed async method per backend export.
//!
//! Every call runs in a fresh store, on a blocking thread of its own that drives the call's
//! future under a timeout at the call's deadline. The store lives inside that future: at
//! the deadline the future is dropped whatever the guest is doing (spinning, sleeping in a
//! WASI poll, waiting on HTTP), the store and its pool slot go, and the call's slot and the
//! caller's lock guard are released right then. A trap, a timeout or a memory blow-up only
//! ever poisons that one call; the instance, the host and the other backends keep serving,
//! and no tokio worker is ever occupied by a guest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

use super::CallError;
use super::bindings::csi::backend::types::{Capacity, SnapshotPage, VolumePage};
use super::bindings::{
    BackendComponentPre, BackendError, BackendInfo, CapacityRange, CreateVolumeRequest, Device, Expansion, Guest,
    Snapshot, Volume, VolumeCapability,
};
use super::call::{CallState, Limiter, LogBudget, Secrets};
use super::cooldown::Cooldown;
use super::grants::Grants;
use super::host_memory::HostMeter;
use super::http::{GrantedHttp, HttpSender};
use super::text::bounded;
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
    pub logs: LogBudget,
    pub cooldown: Cooldown,
}

/// Bytes of guest stdout/stderr kept per call (shown when a call traps).
const GUEST_OUTPUT_CAP: usize = 64 << 10;

/// A string pair list, as exports take them.
type Params = Vec<(String, String)>;

pub struct Backend {
    shared: Arc<Shared>,
    pre: BackendComponentPre<CallState>,
    permits: Arc<Semaphore>,
    /// Declared by the backend at load time.
    pub info: BackendInfo,
}

/// Runs one call through `Backend::run` with the arguments moved into the call.
macro_rules! export {
    ($self:ident, $secrets:expr, $guard:expr, |$g:ident, $s:ident| $call:expr) => {
        $self.run($secrets, $guard, async move |$g: &Guest, $s: &mut Store<CallState>| $call.await).await
    };
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

    pub async fn create_volume(
        &self,
        secrets: Secrets,
        guard: impl Send + 'static,
        request: CreateVolumeRequest,
    ) -> Result<Volume, CallError> {
        export!(self, secrets, guard, |g, s| g.call_create_volume(s, &request))
    }

    pub async fn find_volume(&self, secrets: Secrets, name: &str) -> Result<Option<Volume>, CallError> {
        let name = name.to_owned();
        export!(self, secrets, (), |g, s| g.call_find_volume(s, &name))
    }

    pub async fn delete_volume(
        &self,
        secrets: Secrets,
        guard: impl Send + 'static,
        volume_id: &str,
    ) -> Result<(), CallError> {
        let id = volume_id.to_owned();
        export!(self, secrets, guard, |g, s| g.call_delete_volume(s, &id))
    }

    pub async fn get_volume(&self, secrets: Secrets, volume_id: &str) -> Result<Volume, CallError> {
        let id = volume_id.to_owned();
        export!(self, secrets, (), |g, s| g.call_get_volume(s, &id))
    }

    pub async fn list_volumes(
        &self,
        secrets: Secrets,
        max_entries: u32,
        starting_token: &str,
    ) -> Result<VolumePage, CallError> {
        let token = starting_token.to_owned();
        export!(self, secrets, (), |g, s| g.call_list_volumes(s, max_entries, &token))
    }

    pub async fn get_capacity(
        &self,
        secrets: Secrets,
        capabilities: Vec<VolumeCapability>,
        parameters: Params,
        topology: Option<Params>,
    ) -> Result<Capacity, CallError> {
        export!(self, secrets, (), |g, s| g.call_get_capacity(s, &capabilities, &parameters, topology.as_ref()))
    }

    pub async fn expand_volume(
        &self,
        secrets: Secrets,
        guard: impl Send + 'static,
        volume_id: &str,
        capacity: CapacityRange,
    ) -> Result<Expansion, CallError> {
        let id = volume_id.to_owned();
        export!(self, secrets, guard, |g, s| g.call_expand_volume(s, &id, capacity))
    }

    pub async fn modify_volume(
        &self,
        secrets: Secrets,
        guard: impl Send + 'static,
        volume_id: &str,
        mutable_parameters: Params,
    ) -> Result<(), CallError> {
        let id = volume_id.to_owned();
        export!(self, secrets, guard, |g, s| g.call_modify_volume(s, &id, &mutable_parameters))
    }

    pub async fn create_snapshot(
        &self,
        secrets: Secrets,
        guard: impl Send + 'static,
        source_volume_id: &str,
        name: &str,
        parameters: Params,
    ) -> Result<Snapshot, CallError> {
        let (source, name) = (source_volume_id.to_owned(), name.to_owned());
        export!(self, secrets, guard, |g, s| g.call_create_snapshot(s, &source, &name, &parameters))
    }

    pub async fn find_snapshot(&self, secrets: Secrets, name: &str) -> Result<Option<Snapshot>, CallError> {
        let name = name.to_owned();
        export!(self, secrets, (), |g, s| g.call_find_snapshot(s, &name))
    }

    pub async fn delete_snapshot(
        &self,
        secrets: Secrets,
        guard: impl Send + 'static,
        snapshot_id: &str,
    ) -> Result<(), CallError> {
        let id = snapshot_id.to_owned();
        export!(self, secrets, guard, |g, s| g.call_delete_snapshot(s, &id))
    }

    /// Empty filters are unset; `max_entries` 0 means no limit.
    pub async fn list_snapshots(
        &self,
        secrets: Secrets,
        snapshot_id: &str,
        source_volume_id: &str,
        max_entries: u32,
        starting_token: &str,
    ) -> Result<SnapshotPage, CallError> {
        let (id, source, token) = (snapshot_id.to_owned(), source_volume_id.to_owned(), starting_token.to_owned());
        export!(self, secrets, (), |g, s| g.call_list_snapshots(s, &id, &source, max_entries, &token))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn controller_publish(
        &self,
        secrets: Secrets,
        guard: impl Send + 'static,
        volume_id: &str,
        node_id: &str,
        capability: VolumeCapability,
        readonly: bool,
        volume_context: Params,
    ) -> Result<Params, CallError> {
        let (id, node) = (volume_id.to_owned(), node_id.to_owned());
        export!(self, secrets, guard, |g, s| g.call_controller_publish(
            s,
            &id,
            &node,
            &capability,
            readonly,
            &volume_context
        ))
    }

    pub async fn controller_unpublish(
        &self,
        secrets: Secrets,
        guard: impl Send + 'static,
        volume_id: &str,
        node_id: &str,
    ) -> Result<(), CallError> {
        let (id, node) = (volume_id.to_owned(), node_id.to_owned());
        export!(self, secrets, guard, |g, s| g.call_controller_unpublish(s, &id, &node))
    }

    pub async fn node_device(
        &self,
        secrets: Secrets,
        volume_id: &str,
        volume_context: Params,
        publish_context: Params,
    ) -> Result<Device, CallError> {
        let id = volume_id.to_owned();
        export!(self, secrets, (), |g, s| g.call_node_device(s, &id, &volume_context, &publish_context))
    }

    pub async fn node_topology(&self, secrets: Secrets) -> Result<Params, CallError> {
        export!(self, secrets, (), |g, s| g.call_node_topology(s))
    }

    /// The backend's `info()`, asked again (it was read once at load; benchmarks use this
    /// as the cheapest complete call).
    pub async fn ask_info(&self) -> Result<BackendInfo, CallError> {
        export!(self, Secrets::default(), (), |g, s| async { g.call_info(s).await.map(Ok) })
    }

    /// Waits out the instance's cool-down (`cooldown.rs`) and for a call slot, then runs `f`
    /// in a fresh instance. `guard` (a volume lock, say) is held until the call ends: the
    /// backend answered, or its deadline passed.
    async fn run<R, F>(&self, secrets: Secrets, guard: impl Send + 'static, f: F) -> Result<R, CallError>
    where
        F: AsyncFnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>> + Send + 'static,
        R: Send + 'static,
    {
        let cooldown = &self.shared.cooldown;
        let wait = cooldown.wait_at(Instant::now()).min(Duration::from_millis(self.shared.limits.deadline_ms));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (shared, pre) = (self.shared.clone(), self.pre.clone());
        let name = shared.name.clone();
        let result = tokio::task::spawn_blocking(move || {
            let result = run_on_this_thread(&shared, &pre, secrets, f);
            drop((guard, permit));
            result
        })
        .await
        .unwrap_or_else(|e| Err(CallError::Trap { backend: name, message: format!("host task failed: {e}") }));
        let misbehaved =
            matches!(result, Err(CallError::Timeout { .. } | CallError::OutOfMemory { .. } | CallError::Trap { .. }));
        if let Some(wait) = cooldown.record_at(Instant::now(), misbehaved) {
            tracing::warn!(backend = %self.shared.name, "misbehaving calls in a row: its next calls wait {wait:?}");
        }
        result
    }
}

/// Runs one backend function in a fresh store on the current (blocking) thread, under the
/// instance's deadline. Must be called inside a tokio runtime, off its async workers.
pub(super) fn run_on_this_thread<R>(
    shared: &Arc<Shared>,
    pre: &BackendComponentPre<CallState>,
    secrets: Secrets,
    f: impl AsyncFnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>>,
) -> Result<R, CallError> {
    let deadline_ms = shared.limits.deadline_ms;
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let call = call(shared, pre, secrets, deadline, f);
    match tokio::runtime::Handle::current().block_on(tokio::time::timeout_at(deadline.into(), call)) {
        Ok(result) => result,
        Err(_elapsed) => Err(CallError::Timeout { backend: shared.name.clone(), deadline_ms }),
    }
}

async fn call<R>(
    shared: &Arc<Shared>,
    pre: &BackendComponentPre<CallState>,
    secrets: Secrets,
    deadline: Instant,
    f: impl AsyncFnOnce(&Guest, &mut Store<CallState>) -> wasmtime::Result<Result<R, BackendError>>,
) -> Result<R, CallError> {
    let backend = || shared.name.clone();
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
        limiter: Limiter::new(&shared.limits),
        host_memory: HostMeter::start((shared.limits.host_memory_mib << 20) as usize),
        shared: shared.clone(),
        secrets,
        deadline,
        http: WasiHttpCtx::new(),
        http_hooks,
    };
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|s| &mut s.limiter);
    // Each tick: still within the host memory budget and the deadline? (The timeout
    // around this future covers a guest waiting in the host; this covers one spinning.)
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(check_each_tick);

    let outcome = match pre.instantiate_async(&mut store).await {
        Ok(instance) => f(instance.csi_backend_backend(), &mut store).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CallError::Backend { backend: backend(), error: error.map_message(bounded) }),
        Err(trap) => Err(classify(backend(), trap, store.data(), &output.contents())),
    }
}

fn check_each_tick(mut store: StoreContextMut<'_, CallState>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data_mut();
    state.check_host_memory()?;
    if Instant::now() >= state.deadline {
        return Err(wasmtime::Trap::Interrupt.into());
    }
    Ok(UpdateDeadline::Continue(1))
}

fn classify(backend: String, trap: wasmtime::Error, state: &CallState, output: &[u8]) -> CallError {
    if let Some(limit) = state.exhausted() {
        return CallError::OutOfMemory { backend, limit };
    }
    if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return CallError::Timeout { backend, deadline_ms: state.shared.limits.deadline_ms };
    }
    let text = String::from_utf8_lossy(output);
    tracing::warn!(%backend, "backend trapped: {}; guest output: {}", bounded(&format!("{trap:?}")), bounded(&text));
    // The guest's last words (a Rust panic prints its message, then a hint line).
    let last_words = text.lines().rev().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("note: "));
    let what = match trap.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => trap.root_cause().to_string(),
    };
    let message = match last_words {
        Some(words) => format!("{what}: {words}"),
        None => what,
    };
    CallError::Trap { backend, message: bounded(&message) }
}
