//! Rust bindings for the `csi:backend@0.1.0` world, generated from `wit/` at compile time.
//! Imports and exports are synchronous: each call runs on a blocking thread of its own.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "backend-component",
    additional_derives: [PartialEq, Eq],
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
}
