//! The sandbox: a wasmtime engine that runs backend components under per-instance grants
//! and limits.
//!
//! Each config entry becomes one [`Backend`]: its component is compiled once (cached on
//! disk by content hash), linked once into an `InstancePre`, asked for its `info` and made
//! to `validate-settings` at load. Every later call gets a fresh store with a memory cap
//! and an epoch deadline; an epoch ticker thread advances time for all of them. Outgoing
//! HTTP (`wasi:http`) is linked too, and reaches only granted origins (`http.rs`).

mod bindings;
mod cache;
mod call;
mod files;
pub mod grants;
pub mod http;
mod instance;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::*;
pub use call::{CallState, Secrets};
pub use instance::Backend;
pub use wasmtime::Store;

use crate::command::Executor;
use crate::config::{BUILTIN_PREFIX, BackendConfig};
use cache::ComponentCache;
use grants::Grants;
use http::{HttpSender, Network};
use instance::{Shared, run};

/// Granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Pool sizing per backend call: a Rust component built for wasm32-wasip2 holds a handful
/// of core instances and one or two linear memories; these bounds leave room for others.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Bytes at the start of a pool slot's memory (and tables) that are reset with memset when
/// a call ends instead of being handed back to the kernel: the next call in the slot then
/// takes no page faults there, and no TLB shootdown is needed. The bundled components link
/// a 128 KiB stack so their stack and static data fall inside it.
const KEEP_RESIDENT: usize = 256 << 10;

/// Why a backend call failed. Each maps to one gRPC code, and names the backend.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("backend {backend}: {}", error.message())]
    Backend { backend: String, error: BackendError },
    #[error("backend {backend} did not answer within its {deadline_ms} ms deadline")]
    Timeout { backend: String, deadline_ms: u64 },
    #[error("backend {backend} exceeded its memory limit")]
    OutOfMemory { backend: String },
    #[error("backend {backend} crashed: {message}")]
    Trap { backend: String, message: String },
}

#[derive(Debug, thiserror::Error)]
#[error("backend {instance}: {reason}")]
pub struct LoadError {
    pub instance: String,
    pub reason: String,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: ComponentCache,
    executor: Arc<dyn Executor>,
    http: Arc<dyn HttpSender>,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker; `cache_dir` holds compiled components.
    /// Granted commands run through `executor` ([`crate::command::System`] in production).
    /// `slots` bounds the backend calls running at once across all instances (the sum of
    /// their `concurrency` limits): the pooling allocator keeps that many instances ready.
    pub fn new(cache_dir: &std::path::Path, executor: Arc<dyn Executor>, slots: u32) -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(slots * MEMORIES_PER_COMPONENT)
            .total_tables(slots * CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut config = EngineConfig::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
        BackendComponent::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        start_epoch_ticker(&engine);
        Ok(Runtime {
            engine,
            linker,
            cache: ComponentCache::open(cache_dir)?,
            executor,
            http: Arc::new(Network::new()),
        })
    }

    /// Sends the backends' granted HTTP requests through `sender` instead of the network
    /// (for tests); affects instances loaded afterwards.
    pub fn set_http_sender(&mut self, sender: Arc<dyn HttpSender>) {
        self.http = sender;
    }

    /// Loads the instance `config` describes, reading its module file or builtin.
    pub fn load(&self, config: &BackendConfig, node_id: &str) -> Result<Backend, LoadError> {
        let wasm =
            module_bytes(&config.module).map_err(|reason| LoadError { instance: config.name.clone(), reason })?;
        self.load_bytes(config, &wasm, node_id)
    }

    /// Compiles (or loads from cache), links, introspects and validates one instance.
    pub fn load_bytes(&self, config: &BackendConfig, wasm: &[u8], node_id: &str) -> Result<Backend, LoadError> {
        let fail = |reason: String| LoadError { instance: config.name.clone(), reason };
        let component = self
            .cache
            .load(&self.engine, wasm, &config.module)
            .map_err(|e| fail(format!("compile {}: {e:#}", config.module)))?;
        let pre = self.instantiate_pre(&component).map_err(|e| fail(format!("link {}: {e:#}", config.module)))?;
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            grants: Grants::new(&config.grants).map_err(fail)?,
            limits: config.limits.clone(),
            settings: config.settings.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
            node_id: node_id.to_owned(),
            executor: self.executor.clone(),
            http: self.http.clone(),
        });
        let info =
            run(&shared, &pre, Secrets::default(), |g, s| g.call_info(s).map(Ok)).map_err(|e| fail(e.to_string()))?;
        run(&shared, &pre, Secrets::default(), |g, s| g.call_validate_settings(s)).map_err(|e| match e {
            CallError::Backend { error, .. } => fail(format!("settings rejected: {}", error.message())),
            other => fail(other.to_string()),
        })?;
        tracing::info!(backend = %config.name, module = %config.module, kind = %info.name, version = %info.version, "backend loaded");
        Ok(Backend::new(shared, pre, info))
    }

    fn instantiate_pre(&self, component: &Component) -> wasmtime::Result<BackendComponentPre<CallState>> {
        BackendComponentPre::new(self.linker.instantiate_pre(component)?)
    }
}

fn module_bytes(module: &str) -> Result<Vec<u8>, String> {
    match module.strip_prefix(BUILTIN_PREFIX) {
        Some("loopfile") => Ok(backend_bundle::LOOPFILE.to_vec()),
        Some("lvm") => Ok(backend_bundle::LVM.to_vec()),
        Some("cloud-disk") => Ok(backend_bundle::CLOUD_DISK.to_vec()),
        Some(other) => Err(format!("no builtin module {other:?} (builtin modules: loopfile, lvm, cloud-disk)")),
        None => std::fs::read(module).map_err(|e| format!("read module {module}: {e}")),
    }
}

/// Advances the engine's epoch every tick until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch ticker thread");
}
