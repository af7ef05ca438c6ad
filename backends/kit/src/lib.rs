//! What every backend component shares, so a backend crate holds only its storage logic.
//!
//! - [`types`]: the WIT types of `csi:backend`, generated once here. A backend's own
//!   `generate!` maps `csi:backend/types` to them (`with`), so the helpers below and the
//!   backend speak the very same `Error`, `CapacityRange`, ….
//! - [`ids`]: ids derived from CSI names, parsed strictly.
//! - [`paging`]: list pagination with tokens only the backend issues.
//! - [`sizing`]: how a capacity range becomes a size in whole granules.
//! - [`node_local`]: the access modes and filesystems of volumes that live on one node.
//! - [`settings`]: strict parsing of instance settings.

pub mod ids;
pub mod node_local;
pub mod paging;
pub mod settings;
pub mod sizing;

wit_bindgen::generate!({
    path: "../../wit",
    inline: "package wasmcsi:kit; world types { import csi:backend/types@0.1.0; }",
    world: "wasmcsi:kit/types",
    additional_derives: [PartialEq, Eq],
    with: { "csi:backend/types@0.1.0": generate },
});

pub use csi::backend::types;
