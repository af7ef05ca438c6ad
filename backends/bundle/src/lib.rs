//! The backend components that ship with the host, built at compile time by `build.rs`.
//!
//! `LOOPFILE` is the host's embedded default backend; `LVM` and `CLOUD_DISK` are what a
//! config's `builtin:lvm` and `builtin:cloud-disk` load. `HOSTILE` is a misbehaving backend for tests of the sandbox (traps,
//! endless loops, memory hogs); the host never loads it unless a config names its file.

/// The loopfile backend: volumes are sparse files in a granted directory.
pub const LOOPFILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/loopfile.wasm"));

/// The LVM backend: volumes are logical volumes (thick, or thin in a pool) of one volume
/// group, made and activated by running the node's `lvm` through `host.exec`.
pub const LVM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lvm.wasm"));

/// The cloud-disk backend: AWS EBS volumes over the EC2 API (outgoing HTTP to a granted
/// endpoint), attached by the cloud and found on the node by serial.
pub const CLOUD_DISK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloud-disk.wasm"));

/// A backend that traps, loops or hogs memory on request, for sandbox tests.
pub const HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));
