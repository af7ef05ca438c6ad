//! loopfile: a CSI storage backend whose volumes are sparse files in a directory the host
//! grants (a WASI preopen); the host loop-attaches them on the node.
//!
//! Settings (all optional): `directory` (the granted directory as the backend sees it,
//! default `/data`), `max-volume-size` (bytes), `reserve` (bytes of the filesystem never
//! given to volumes). StorageClass and VolumeSnapshotClass parameters: none. The files it
//! keeps are described in `layout.rs`.
//!
//! This file is the WIT glue: it binds `csi:backend` (with the WIT types `kit` generates),
//! implements the exported interface by parsing the settings and handing each call to the
//! module that owns it, and adapts the host imports to the `Platform` trait (`context.rs`)
//! the logic is written against.

mod context;
mod fsio;
mod ids;
mod layout;
mod meta;
mod settings;
mod snapshots;
mod store;
mod support;
mod volumes;

use std::path::Path;

use kit::types::{
    BackendInfo, Capacity, CapacityRange, Device, Error, Expansion, Params, Snapshot, SnapshotPage, Topology, Volume,
    VolumeCapability, VolumePage,
};

use context::{Ctx, Platform};
use csi::backend::host::{self, Level};
use exports::csi::backend::backend::{CreateVolumeRequest, Guest};
use settings::Settings;

wit_bindgen::generate!({
    path: "../../wit",
    world: "backend-component",
    with: { "csi:backend/types@0.1.0": kit::types },
});

struct Loopfile;

// Only a component exports the interface: natively (where the crate is built for its unit
// tests) the export names are not valid linker symbols for a cdylib.
#[cfg(target_arch = "wasm32")]
export!(Loopfile);

impl Guest for Loopfile {
    fn info() -> BackendInfo {
        support::info()
    }

    fn validate_settings() -> Result<(), Error> {
        with_ctx(store::init)
    }

    fn create_volume(request: CreateVolumeRequest) -> Result<Volume, Error> {
        with_ctx(|ctx| volumes::create(ctx, request))
    }

    fn find_volume(name: String) -> Result<Option<Volume>, Error> {
        with_ctx(|ctx| volumes::find(ctx, &name))
    }

    fn delete_volume(volume_id: String) -> Result<(), Error> {
        with_ctx(|ctx| volumes::delete(ctx, &volume_id))
    }

    fn get_volume(volume_id: String) -> Result<Volume, Error> {
        with_ctx(|ctx| volumes::get(ctx, &volume_id))
    }

    fn list_volumes(max_entries: u32, starting_token: String) -> Result<VolumePage, Error> {
        with_ctx(|ctx| volumes::list(ctx, max_entries, &starting_token))
    }

    /// Topology is the host's concern for a node-local backend: it asks the node it is on.
    fn get_capacity(
        capabilities: Vec<VolumeCapability>,
        parameters: Params,
        _topology: Option<Topology>,
    ) -> Result<Capacity, Error> {
        with_ctx(|ctx| volumes::capacity(ctx, &capabilities, &parameters))
    }

    fn expand_volume(volume_id: String, capacity: CapacityRange) -> Result<Expansion, Error> {
        with_ctx(|ctx| volumes::expand(ctx, &volume_id, &capacity))
    }

    fn modify_volume(_volume_id: String, _mutable_parameters: Params) -> Result<(), Error> {
        Err(Error::Unimplemented("loopfile volumes have no mutable parameters".into()))
    }

    fn create_snapshot(source_volume_id: String, name: String, parameters: Params) -> Result<Snapshot, Error> {
        with_ctx(|ctx| snapshots::create(ctx, &source_volume_id, &name, &parameters))
    }

    fn find_snapshot(name: String) -> Result<Option<Snapshot>, Error> {
        with_ctx(|ctx| snapshots::find(ctx, &name))
    }

    fn delete_snapshot(snapshot_id: String) -> Result<(), Error> {
        with_ctx(|ctx| snapshots::delete(ctx, &snapshot_id))
    }

    fn list_snapshots(
        snapshot_id: String,
        source_volume_id: String,
        max_entries: u32,
        starting_token: String,
    ) -> Result<SnapshotPage, Error> {
        with_ctx(|ctx| snapshots::list(ctx, &snapshot_id, &source_volume_id, max_entries, &starting_token))
    }

    fn controller_publish(
        _volume_id: String,
        _node_id: String,
        _capability: VolumeCapability,
        _readonly: bool,
        _volume_context: Params,
    ) -> Result<Params, Error> {
        Err(Error::Unimplemented("loopfile volumes are node-local: there is nothing to attach".into()))
    }

    fn controller_unpublish(_volume_id: String, _node_id: String) -> Result<(), Error> {
        Err(Error::Unimplemented("loopfile volumes are node-local: there is nothing to detach".into()))
    }

    fn node_device(volume_id: String, _volume_context: Params, _publish_context: Params) -> Result<Device, Error> {
        with_ctx(|ctx| volumes::node_device(ctx, &volume_id))
    }

    /// Node-local: the host reports the node itself.
    fn node_topology() -> Result<Topology, Error> {
        Ok(Vec::new())
    }
}

/// Runs an operation against this instance's settings and the real host.
fn with_ctx<T>(operation: impl FnOnce(&Ctx) -> Result<T, Error>) -> Result<T, Error> {
    let settings = Settings::parse(&host::settings())?;
    operation(&Ctx::new(settings, &WitHost))
}

/// The WIT host imports, as the [`Platform`] the operations use.
struct WitHost;

impl Platform for WitHost {
    fn copy_file(&self, source: &Path, destination: &Path) -> Result<(), Error> {
        host::copy_file(&source.to_string_lossy(), &destination.to_string_lossy())
    }

    fn free_bytes(&self, path: &Path) -> Result<u64, Error> {
        host::filesystem_stats(&path.to_string_lossy()).map(|stats| stats.available_bytes)
    }

    fn info(&self, message: &str) {
        host::log(Level::Info, message);
    }

    fn warn(&self, message: &str) {
        host::log(Level::Warn, message);
    }
}
