//! wasmcsi: a CSI host that serves the Container Storage Interface on a unix socket and
//! runs each storage backend as a sandboxed WebAssembly component.
//!
//! The host does every privileged step on the node; backends decide, through the
//! `csi:backend` WIT contract, and reach only what their grants allow.

pub mod command;
pub mod config;
pub mod csi;
pub mod node;
pub mod runtime;
pub mod server;
