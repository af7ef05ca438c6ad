//! The state of one backend call: a fresh store with its WASI context (granted preopens
//! only), a memory limiter, the call's secrets and deadline, and the host imports the
//! backend may use (and `wasi:http`, see `http.rs`) — each checked against the instance's grants before it acts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::BackendError;
use super::bindings::csi::backend::{host, types};
use super::grants::{Denied, OpenError};
use super::http::GrantedHttp;
use super::{files, instance::Shared};

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
    pub(super) limiter: MemoryLimiter,
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

/// Caps linear memory and table growth; remembers that the cap was hit so the trap that
/// follows is reported as RESOURCE_EXHAUSTED rather than as a crash.
pub struct MemoryLimiter {
    pub(super) max_bytes: usize,
    pub(super) exceeded: bool,
}

const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            wasmtime::bail!("memory limit of {} MiB reached", self.max_bytes >> 20);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.exceeded = true;
            wasmtime::bail!("table limit of {MAX_TABLE_ELEMENTS} elements reached");
        }
        Ok(true)
    }
}

impl CallState {
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
    fn log(&mut self, level: host::Level, message: String) {
        const MAX: usize = 4096;
        let message: String = message.chars().take(MAX).collect::<String>().escape_debug().to_string();
        let backend = &*self.shared.name;
        match level {
            host::Level::Trace => tracing::trace!(backend, "{message}"),
            host::Level::Debug => tracing::debug!(backend, "{message}"),
            host::Level::Info => tracing::info!(backend, "{message}"),
            host::Level::Warn => tracing::warn!(backend, "{message}"),
            host::Level::Error => tracing::error!(backend, "{message}"),
        }
    }

    fn settings(&mut self) -> Vec<(String, String)> {
        self.shared.settings.clone()
    }

    fn node_id(&mut self) -> String {
        self.shared.node_id.clone()
    }

    fn secret(&mut self, name: String) -> Option<String> {
        if let Some(value) = self.secrets.0.get(&name) {
            return Some(value.clone());
        }
        match self.shared.grants.env_secret(&name) {
            Ok(value) => value,
            Err(denied) => {
                tracing::debug!(backend = %self.shared.name, "secret lookup: {denied}");
                None
            }
        }
    }

    fn exec(&mut self, program: String, args: Vec<String>, stdin: Vec<u8>) -> Result<types::ExecOutput, BackendError> {
        let args = self.shared.grants.check_command(&program, &args).map_err(|denied| self.deny("exec", denied))?;
        let cap = self.shared.limits.output_kib << 10;
        let out = self
            .shared
            .executor
            .run(program.as_ref(), &args, &stdin, self.deadline, cap)
            .map_err(|e| BackendError::Unavailable(format!("run {program}: {e}")))?;
        if out.timed_out {
            return Err(BackendError::Unavailable(format!("{program} did not finish before the call deadline")));
        }
        Ok(types::ExecOutput { status: out.code.unwrap_or(-1), stdout: out.stdout, stderr: out.stderr })
    }

    fn copy_file(&mut self, source: String, destination: String) -> Result<(), BackendError> {
        files::copy(&self.shared.grants, &source, &destination).map_err(|e| self.file_error("copy", &source, e))
    }

    fn filesystem_stats(&mut self, path: String) -> Result<types::FsStats, BackendError> {
        let (total_bytes, available_bytes) =
            files::stats(&self.shared.grants, &path).map_err(|e| self.file_error("statfs", &path, e))?;
        Ok(types::FsStats { total_bytes, available_bytes })
    }
}
