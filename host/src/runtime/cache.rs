//! Compiled components, cached on disk by content hash so a restart never recompiles.
//!
//! The key is the module's SHA-256 plus the engine's compatibility hash (wasmtime version
//! and codegen settings), so a host upgrade or a config change compiles afresh instead of
//! loading incompatible code. Entries are written to a temporary file and renamed, so a
//! crash never leaves a torn entry; an unreadable entry is recompiled and replaced.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// Opens (creating, mode 0700) the cache directory. It must be writable only by the
    /// host: loading an entry trusts it as code wasmtime produced.
    pub fn open(dir: &Path) -> std::io::Result<ComponentCache> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        Ok(ComponentCache { dir: dir.to_owned() })
    }

    /// Returns the compiled component for `wasm`, compiling it only on a cache miss.
    pub fn load(&self, engine: &Engine, wasm: &[u8], label: &str) -> anyhow::Result<Component> {
        let path = self.entry_path(engine, wasm);
        if path.exists() {
            let started = Instant::now();
            // SAFETY: entries are only ever written by `store` below from
            // `Engine::precompile_component` output, in a directory only the host can write,
            // and the key includes the engine's compatibility hash.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    tracing::info!(module = label, cache = %path.display(), micros = started.elapsed().as_micros() as u64, "loaded compiled component from cache");
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(module = label, cache = %path.display(), "cache entry unusable, recompiling: {e:#}")
                }
            }
        }
        let started = Instant::now();
        let compiled = engine.precompile_component(wasm)?;
        tracing::info!(module = label, millis = started.elapsed().as_millis() as u64, "compiled component");
        if let Err(e) = store(&path, &compiled) {
            tracing::warn!(module = label, cache = %path.display(), "could not write cache entry: {e}");
        }
        // SAFETY: `compiled` was just produced by this engine's `precompile_component`.
        Ok(unsafe { Component::deserialize(engine, &compiled)? })
    }

    fn entry_path(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut compat = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir.join(format!("{digest}-{:016x}.cwasm", compat.finish()))
    }
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{unique}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
