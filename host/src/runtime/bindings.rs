//! Rust bindings for the `csi:backend@0.1.0` world, generated from `wit/` at compile time.
//! Exports are async, so a call is a future the host can drop at its deadline whatever the
//! guest is waiting on; the `host` imports stay synchronous (each call drives its future on
//! a blocking thread of its own) and may trap, so the host can stop a call that is over its
//! host memory budget the moment it asks for more.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "backend-component",
    additional_derives: [PartialEq, Eq],
    imports: { default: trappable },
    exports: { default: async },
});

pub use csi::backend::types::{
    AccessMode, AccessType, BackendInfo, CapacityRange, ContentSource, Device, Disk, Error as BackendError, Expansion,
    Features, MountAccess, Snapshot, TopologyRequirement, Volume, VolumeCapability,
};
pub use exports::csi::backend::backend::{CreateVolumeRequest, Guest};

impl BackendError {
    /// The backend's own message, whatever the code.
    pub fn message(&self) -> &str {
        match self {
            BackendError::InvalidArgument(m)
            | BackendError::NotFound(m)
            | BackendError::AlreadyExists(m)
            | BackendError::FailedPrecondition(m)
            | BackendError::OutOfRange(m)
            | BackendError::ResourceExhausted(m)
            | BackendError::Aborted(m)
            | BackendError::Unavailable(m)
            | BackendError::Unimplemented(m)
            | BackendError::Internal(m) => m,
        }
    }

    /// The same error with its message rewritten (bounded, say), the code kept.
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> BackendError {
        match self {
            BackendError::InvalidArgument(m) => BackendError::InvalidArgument(f(&m)),
            BackendError::NotFound(m) => BackendError::NotFound(f(&m)),
            BackendError::AlreadyExists(m) => BackendError::AlreadyExists(f(&m)),
            BackendError::FailedPrecondition(m) => BackendError::FailedPrecondition(f(&m)),
            BackendError::OutOfRange(m) => BackendError::OutOfRange(f(&m)),
            BackendError::ResourceExhausted(m) => BackendError::ResourceExhausted(f(&m)),
            BackendError::Aborted(m) => BackendError::Aborted(f(&m)),
            BackendError::Unavailable(m) => BackendError::Unavailable(f(&m)),
            BackendError::Unimplemented(m) => BackendError::Unimplemented(f(&m)),
            BackendError::Internal(m) => BackendError::Internal(f(&m)),
        }
    }
}
