//! The sandbox: a wasmtime engine that runs backend components under per-instance grants
//! and limits.
//!
//! Each config entry becomes one [`Backend`]: its component is compiled once (cached on
//! disk by content hash), linked once into an `InstancePre`, asked for its `info` and made
//! to `validate-settings` at load. Every later call gets a fresh store with a guest memory
//! cap, a host memory budget and a deadline that holds whatever the guest does (see
//! `instance.rs`); an epoch ticker thread advances time for all of them. Outgoing HTTP
//! (`wasi:http`) is linked only for instances with an `http` grant, and reaches only
//! granted origins (`http.rs`). The shared instance pool limits what one component may
//! hold, so a backend can only exhaust its own share of it; an instance whose calls keep
//! misbehaving waits a growing cool-down before its next ones (`cooldown.rs`).

mod bindings;
mod cache;
mod call;
mod cooldown;
mod files;
pub mod grants;
mod host_memory;
pub mod http;
mod instance;
mod text;

use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::*;
pub use call::Secrets;
pub use instance::Backend;

use crate::command::Executor;
use crate::config::{BUILTIN_PREFIX, BackendConfig};
use cache::ComponentCache;
use call::{CallState, LogBudget};
use grants::Grants;
use http::{HttpSender, Network};
use instance::{Shared, run_on_this_thread};

/// Granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What one component may hold, enforced at load (a component over a limit fails to load,
/// naming itself), so the pool, sized as every instance's `concurrency` times these, never
/// runs out for a backend that stays within its own share. A Rust component built for
/// wasm32-wasip2 holds a handful of core instances and one or two linear memories.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 8;
/// Elements of one table (a Rust component's function table holds a few thousand).
const TABLE_ELEMENTS: usize = 20_000;
/// Largest module file read: a component is a few MiB; this refuses a huge file before
/// reading it.
const MAX_MODULE_BYTES: u64 = 256 << 20;
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
    #[error("backend {backend} exceeded its {limit} limit")]
    OutOfMemory { backend: String, limit: Exhausted },
    #[error("backend {backend} crashed: {message}")]
    Trap { backend: String, message: String },
}

/// Which memory cap stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// The guest's own linear memories (`memory_mib`).
    #[error("memory")]
    GuestMemory,
    /// What the host holds on the call's behalf (`host_memory_mib`).
    #[error("host memory")]
    HostMemory,
}

#[derive(Debug, thiserror::Error)]
#[error("backend {instance}: {reason}")]
pub struct LoadError {
    pub instance: String,
    pub reason: String,
}

pub struct Runtime {
    engine: Engine,
    /// WASI and the `host` interface, for every instance.
    linker: Linker<CallState>,
    /// The same plus `wasi:http`, for instances with an `http` grant.
    http_linker: Linker<CallState>,
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
            .total_tables(slots * TABLES_PER_COMPONENT)
            .total_stacks(slots)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .table_elements(TABLE_ELEMENTS)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut config = EngineConfig::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        BackendComponent::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        let mut http_linker = linker.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker)?;
        start_epoch_ticker(&engine);
        Ok(Runtime {
            engine,
            linker,
            http_linker,
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

    /// Loads the instance `config` describes, reading its module file or builtin. Runs the
    /// backend's `info` and `validate-settings` under the instance's deadline, on the
    /// current thread: call it inside a tokio runtime, off its async workers (from
    /// `spawn_blocking`, say).
    pub fn load(&self, config: &BackendConfig, node_id: &str) -> Result<Backend, LoadError> {
        let wasm =
            module_bytes(&config.module).map_err(|reason| LoadError { instance: config.name.clone(), reason })?;
        self.load_bytes(config, &wasm, node_id)
    }

    /// Compiles (or loads from cache), links, introspects and validates one instance (on
    /// the current thread, like [`Runtime::load`]).
    pub fn load_bytes(&self, config: &BackendConfig, wasm: &[u8], node_id: &str) -> Result<Backend, LoadError> {
        let fail = |reason: String| LoadError { instance: config.name.clone(), reason };
        let component = self
            .cache
            .load(&self.engine, wasm, &config.module)
            .map_err(|e| fail(format!("compile {}: {e:#}", config.module)))?;
        let pre = self.instantiate_pre(config, &component).map_err(fail)?;
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            grants: Grants::new(&config.grants).map_err(fail)?,
            limits: config.limits.clone(),
            settings: config.settings.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
            node_id: node_id.to_owned(),
            executor: self.executor.clone(),
            http: self.http.clone(),
            logs: LogBudget::default(),
            cooldown: Default::default(),
        });
        let info = run_on_this_thread(&shared, &pre, Secrets::default(), async |g, s| g.call_info(s).await.map(Ok))
            .map_err(|e| fail(e.to_string()))?;
        let validate = async |g: &Guest, s: &mut wasmtime::Store<CallState>| g.call_validate_settings(s).await;
        run_on_this_thread(&shared, &pre, Secrets::default(), validate).map_err(|e| match e {
            CallError::Backend { error, .. } => fail(format!("settings rejected: {}", error.message())),
            other => fail(other.to_string()),
        })?;
        tracing::info!(backend = %config.name, module = %config.module, kind = %info.name, version = %info.version, "backend loaded");
        Ok(Backend::new(shared, pre, info))
    }

    /// Links the component with exactly the interfaces the instance is granted.
    fn instantiate_pre(
        &self,
        config: &BackendConfig,
        component: &Component,
    ) -> Result<BackendComponentPre<CallState>, String> {
        let linker = if config.grants.http.is_empty() {
            let ty = component.component_type();
            if let Some((http, _)) = ty.imports(&self.engine).find(|(name, _)| name.starts_with("wasi:http/")) {
                return Err(format!(
                    "{} imports {http}, but the instance has no http grant: outgoing HTTP is linked only for \
                     instances granted origins (grants.http)",
                    config.module
                ));
            }
            &self.linker
        } else {
            &self.http_linker
        };
        let link = |e: wasmtime::Error| format!("link {}: {e:#}", config.module);
        BackendComponentPre::new(linker.instantiate_pre(component).map_err(link)?).map_err(link)
    }
}

fn module_bytes(module: &str) -> Result<Vec<u8>, String> {
    match module.strip_prefix(BUILTIN_PREFIX) {
        Some("loopfile") => Ok(backend_bundle::LOOPFILE.to_vec()),
        Some("lvm") => Ok(backend_bundle::LVM.to_vec()),
        Some("cloud-disk") => Ok(backend_bundle::CLOUD_DISK.to_vec()),
        Some(other) => Err(format!("no builtin module {other:?} (builtin modules: loopfile, lvm, cloud-disk)")),
        None => read_module_file(std::path::Path::new(module)),
    }
}

/// Reads a module file: a regular file of at most [`MAX_MODULE_BYTES`], checked on the
/// opened file before anything is read (a device such as `/dev/zero`, a FIFO or a huge
/// sparse file is refused at once).
fn read_module_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let fail = |e: std::io::Error| format!("read module {}: {e}", path.display());
    let file = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(format!("module {} is not a regular file", path.display()));
    }
    if meta.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "module {} is {} bytes, more than the {} MiB a module may have",
            path.display(),
            meta.len(),
            MAX_MODULE_BYTES >> 20
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take` bounds the read even if the file grows after the check.
    file.take(MAX_MODULE_BYTES + 1).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 > MAX_MODULE_BYTES {
        return Err(format!("module {} grew past {} MiB while read", path.display(), MAX_MODULE_BYTES >> 20));
    }
    Ok(bytes)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GrantsConfig, LimitsConfig};

    fn runtime(dir: &std::path::Path) -> Runtime {
        Runtime::new(&dir.join("cache"), Arc::new(crate::command::System), 4).unwrap()
    }

    fn config(name: &str) -> BackendConfig {
        BackendConfig {
            name: name.into(),
            module: format!("{name}.wasm"),
            default: true,
            grants: GrantsConfig::default(),
            limits: LimitsConfig::default(),
            settings: Default::default(),
        }
    }

    #[test]
    fn module_files_are_regular_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let error = module_bytes("/dev/zero").unwrap_err();
        assert!(error.contains("/dev/zero is not a regular file"), "{error}");
        let sparse = dir.path().join("sparse.wasm");
        std::fs::File::create(&sparse).unwrap().set_len(3 << 30).unwrap();
        let error = module_bytes(sparse.to_str().unwrap()).unwrap_err();
        assert!(error.contains("is 3221225472 bytes, more than the 256 MiB"), "{error}");
        std::fs::write(dir.path().join("small.wasm"), b"\0asm").unwrap();
        assert_eq!(module_bytes(dir.path().join("small.wasm").to_str().unwrap()).unwrap(), b"\0asm");
        assert!(module_bytes(dir.path().join("missing.wasm").to_str().unwrap()).unwrap_err().contains("missing.wasm"));
    }

    #[test]
    fn a_component_over_the_pool_share_fails_to_load_naming_itself() {
        let dir = tempfile::tempdir().unwrap();
        let instances = "(core instance (instantiate $m))\n".repeat(240);
        let wasm = wat::parse_str(format!("(component (core module $m) {instances})")).unwrap();
        let error = runtime(dir.path()).load_bytes(&config("greedy"), &wasm, "node").err().expect("refused");
        assert_eq!(error.instance, "greedy");
        assert!(error.reason.contains("240 core module instances"), "{error}");
        assert!(error.reason.contains("maximum of 8"), "{error}");
    }

    #[test]
    fn guest_memory_is_capped_across_all_memories_of_a_component() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime(dir.path());
        // Two core instances with a 40 MiB memory each: 80 MiB in all.
        let wasm = wat::parse_str(
            "(component (core module $m (memory 640)) (core instance (instantiate $m)) (core instance (instantiate $m)))",
        )
        .unwrap();
        let component = Component::new(&runtime.engine, &wasm).unwrap();
        let instantiate = |memory_mib| {
            let limits = LimitsConfig { memory_mib, ..LimitsConfig::default() };
            let mut store = wasmtime::Store::new(&runtime.engine, call::Limiter::new(&limits));
            store.limiter(|limiter| limiter);
            Linker::new(&runtime.engine).instantiate(&mut store, &component).map(drop)
        };
        let error = instantiate(64).unwrap_err();
        assert!(format!("{error:#}").contains("memory limit of 64 MiB reached"), "{error:#}");
        instantiate(96).unwrap();
    }
}
