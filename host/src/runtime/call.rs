//! The state of one backend call: a fresh store with its WASI context (granted preopens
//! only), a memory limiter, the call's secrets and deadline, and the host imports the
//! backend may use (and `wasi:http`, see `http.rs`) — each checked against the instance's grants before it acts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Exhausted;
use super::bindings::BackendError;
use super::bindings::csi::backend::{host, types};
use super::grants::{Denied, OpenError};
use super::host_memory::HostMeter;
use super::http::GrantedHttp;
use super::text::bounded;
use super::{files, instance::Shared};
use crate::config::LimitsConfig;

/// A CSI request's `secrets` map. Its Debug never shows values.
#[derive(Clone, Default)]
pub struct Secrets(pub BTreeMap<String, String>);

impl From<&std::collections::HashMap<String, String>> for Secrets {
    fn from(map: &std::collections::HashMap<String, String>) -> Secrets {
        Secrets(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secrets redacted>", self.0.len())
    }
}

pub struct CallState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) host_memory: HostMeter,
    pub(super) shared: Arc<Shared>,
    pub(super) secrets: Secrets,
    pub(super) deadline: Instant,
    pub(super) http: WasiHttpCtx,
    pub(super) http_hooks: GrantedHttp,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}

/// Caps the guest's linear memories and tables, summed over all of them (a component may
/// define several); remembers that the cap was hit so the trap that follows is reported
/// as RESOURCE_EXHAUSTED rather than as a crash.
pub struct Limiter {
    max_memory_bytes: usize,
    memory_bytes: usize,
    table_elements: usize,
    exceeded: bool,
}

/// Table elements all tables of one call may hold together.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl Limiter {
    pub(super) fn new(limits: &LimitsConfig) -> Limiter {
        Limiter {
            max_memory_bytes: (limits.memory_mib << 20) as usize,
            memory_bytes: 0,
            table_elements: 0,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_bytes.saturating_add(desired.saturating_sub(current));
        if total > self.max_memory_bytes {
            self.exceeded = true;
            wasmtime::bail!("memory limit of {} MiB reached", self.max_memory_bytes >> 20);
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.table_elements.saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS {
            self.exceeded = true;
            wasmtime::bail!("table limit of {MAX_TABLE_ELEMENTS} elements reached");
        }
        self.table_elements = total;
        Ok(true)
    }
}

/// Log lines an instance may write: a token bucket shared by all its calls, so a backend
/// cannot flood the host's log; what it drops is counted and reported with the next line.
pub struct LogBudget {
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

/// Lines per second an instance may log on average, and in one burst.
const LOG_LINES_PER_SECOND: f64 = 50.0;
const LOG_BURST: f64 = 200.0;

impl Default for LogBudget {
    fn default() -> LogBudget {
        LogBudget { bucket: Mutex::new(Bucket { tokens: LOG_BURST, refilled: Instant::now(), suppressed: 0 }) }
    }
}

impl LogBudget {
    /// Whether one more line may be written now: `Some(lines dropped since the last one)`.
    fn admit(&self) -> Option<u64> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.refilled).as_secs_f64() * LOG_LINES_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(LOG_BURST);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            bucket.suppressed += 1;
            return None;
        }
        bucket.tokens -= 1.0;
        Some(std::mem::take(&mut bucket.suppressed))
    }
}

impl CallState {
    /// Traps the call once the host memory it holds is over its budget; checked every
    /// epoch tick and whenever the guest enters a `host` import.
    pub(super) fn check_host_memory(&mut self) -> wasmtime::Result<()> {
        Ok(self.host_memory.check()?)
    }

    /// Which cap the call hit, if it was stopped for memory.
    pub(super) fn exhausted(&self) -> Option<Exhausted> {
        if self.host_memory.exceeded() {
            Some(Exhausted::HostMemory)
        } else if self.limiter.exceeded {
            Some(Exhausted::GuestMemory)
        } else {
            None
        }
    }

    fn deny(&self, what: &str, denied: Denied) -> BackendError {
        tracing::warn!(backend = %self.shared.name, capability = what, "denied: {denied}");
        BackendError::FailedPrecondition(format!("denied by the host: {denied}"))
    }

    fn file_error(&self, what: &str, path: &str, e: OpenError) -> BackendError {
        match e {
            OpenError::Denied(d) => self.deny(what, d),
            OpenError::Io(nix::Error::ENOENT) => BackendError::NotFound(format!("{what} {path}: no such file")),
            // openat2(RESOLVE_BENEATH) refusing a path that would leave the grant.
            OpenError::Io(nix::Error::EXDEV | nix::Error::ELOOP) => {
                self.deny(what, Denied::OutsideDirectories(path.to_owned()))
            }
            OpenError::Io(nix::Error::ENOSPC) => {
                BackendError::ResourceExhausted(format!("{what} {path}: no space left"))
            }
            OpenError::Io(e) => BackendError::Internal(format!("{what} {path}: {e}")),
        }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        self.check_host_memory()?;
        let Some(suppressed) = self.shared.logs.admit() else { return Ok(()) };
        let backend = &*self.shared.name;
        if suppressed > 0 {
            tracing::warn!(backend, "{suppressed} log lines of the backend suppressed (rate limit)");
        }
        let message = bounded(&message);
        match level {
            host::Level::Trace => tracing::trace!(backend, "{message}"),
            host::Level::Debug => tracing::debug!(backend, "{message}"),
            host::Level::Info => tracing::info!(backend, "{message}"),
            host::Level::Warn => tracing::warn!(backend, "{message}"),
            host::Level::Error => tracing::error!(backend, "{message}"),
        }
        Ok(())
    }

    fn settings(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        self.check_host_memory()?;
        Ok(self.shared.settings.clone())
    }

    fn node_id(&mut self) -> wasmtime::Result<String> {
        self.check_host_memory()?;
        Ok(self.shared.node_id.clone())
    }

    fn secret(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        self.check_host_memory()?;
        if let Some(value) = self.secrets.0.get(&name) {
            return Ok(Some(value.clone()));
        }
        Ok(match self.shared.grants.env_secret(&name) {
            Ok(value) => value,
            Err(denied) => {
                tracing::debug!(backend = %self.shared.name, "secret lookup: {denied}");
                None
            }
        })
    }

    fn exec(
        &mut self,
        program: String,
        args: Vec<String>,
        stdin: Vec<u8>,
    ) -> wasmtime::Result<Result<types::ExecOutput, BackendError>> {
        self.check_host_memory()?;
        let args = match self.shared.grants.check_command(&program, &args) {
            Ok(args) => args,
            Err(denied) => return Ok(Err(self.deny("exec", denied))),
        };
        let cap = self.shared.limits.output_kib << 10;
        let out = match self.shared.executor.run(program.as_ref(), &args, &stdin, self.deadline, cap) {
            Ok(out) => out,
            Err(e) => return Ok(Err(BackendError::Unavailable(format!("run {program}: {e}")))),
        };
        // The captured output is host memory the call holds from here on.
        self.check_host_memory()?;
        if out.timed_out {
            return Ok(Err(BackendError::Unavailable(format!("{program} did not finish before the call deadline"))));
        }
        Ok(Ok(types::ExecOutput { status: out.code.unwrap_or(-1), stdout: out.stdout, stderr: out.stderr }))
    }

    fn copy_file(&mut self, source: String, destination: String) -> wasmtime::Result<Result<(), BackendError>> {
        self.check_host_memory()?;
        Ok(files::copy(&self.shared.grants, &source, &destination).map_err(|e| self.file_error("copy", &source, e)))
    }

    fn filesystem_stats(&mut self, path: String) -> wasmtime::Result<Result<types::FsStats, BackendError>> {
        self.check_host_memory()?;
        let stats = files::stats(&self.shared.grants, &path).map_err(|e| self.file_error("statfs", &path, e));
        Ok(stats.map(|(total_bytes, available_bytes)| types::FsStats { total_bytes, available_bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_lines_are_rate_limited_and_drops_reported() {
        let budget = LogBudget::default();
        let admitted = (0..10_000).take_while(|_| budget.admit().is_some()).count();
        // The burst, plus what trickled in meanwhile.
        assert!((200..260).contains(&admitted), "{admitted}");
        assert_eq!(budget.admit(), None);
        // A second later the bucket holds 50 more; the first line says what was dropped
        // (the one that ended the burst, and the one just above).
        budget.bucket.lock().unwrap().refilled -= Duration::from_secs(1);
        assert_eq!(budget.admit(), Some(2));
        assert_eq!(budget.admit(), Some(0));
    }

    #[test]
    fn guest_memory_is_summed_over_memories() {
        let mut limiter = Limiter::new(&LimitsConfig { memory_mib: 64, ..LimitsConfig::default() });
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert!(limiter.memory_growing(40 << 20, 48 << 20, None).unwrap());
        // A second memory: 48 + 20 MiB is over the cap although each is under it.
        assert!(limiter.memory_growing(0, 20 << 20, None).is_err());
        assert!(limiter.exceeded);
    }
}
