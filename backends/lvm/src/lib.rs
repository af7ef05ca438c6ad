//! lvm: a CSI storage backend whose volumes are logical volumes of one LVM volume group on
//! the node — thick (linear) or thin (in a thin pool) — with thin and COW snapshots, and
//! restores and clones as thin snapshots. The host activates nothing itself: at
//! `node-device` the backend activates the LV and names `/dev/<vg>/<lv>`, which the host
//! checks against the instance's devices grant (`/dev/<vg>/*`).
//!
//! The backend never touches a device or a file: everything goes through `lvm` run by the
//! host (`lvm.rs`), and the CSI name → LV mapping lives only in LV names and tags
//! (`tags.rs`), so there is no state of its own to lose or repair. Settings: `settings.rs`
//! (`volume-group`, `thin-pool`, `lvm`, `reserve`, `default-fs-type`,
//! `thin-overprovision-ratio`, `snapshot-reserve-percent`, `optional`); StorageClass and
//! VolumeSnapshotClass parameters: `support.rs`; sizing and space: `volumes.rs`, `space.rs`;
//! what lvm errors become: `lvmerr.rs`; what an `optional` instance answers on a node
//! without its volume group: `optional.rs`.
//!
//! This file is the WIT glue: it binds `csi:backend` (with the WIT types `kit` generates),
//! implements the exported interface by parsing the settings and handing each call to the
//! module that owns it (through `optional::serve`, with the call's answer for a node without
//! the volume group), and adapts the host imports to the `Platform` trait (`context.rs`) the
//! logic is written against.

mod context;
mod ids;
mod lvm;
mod lvmerr;
mod lvtime;
mod optional;
mod owned;
mod report;
mod settings;
mod snapshots;
mod space;
mod support;
mod tags;
mod volumes;

use kit::node_local::DEFAULT_FS_TYPE;
use kit::types::{
    BackendInfo, Capacity, CapacityRange, Device, Error, ExecOutput, Expansion, Params, Snapshot, SnapshotPage,
    Topology, Volume, VolumeCapability, VolumePage,
};

use context::{Ctx, Platform};
use csi::backend::host::{self, Level};
use exports::csi::backend::backend::{CreateVolumeRequest, Guest};
use optional::Absent;
use settings::Settings;

wit_bindgen::generate!({
    path: "../../wit",
    world: "backend-component",
    with: { "csi:backend/types@0.1.0": kit::types },
});

struct Lvm;

// Only a component exports the interface: natively (where the crate is built for its unit
// tests) the export names are not valid linker symbols for a cdylib.
#[cfg(target_arch = "wasm32")]
export!(Lvm);

impl Guest for Lvm {
    /// `info` cannot fail: with settings that do not parse it reports the default
    /// filesystem, and `validate-settings` then stops the load with the real error.
    fn info() -> BackendInfo {
        let default_fs_type = Settings::parse(&host::settings())
            .map_or_else(|_| DEFAULT_FS_TYPE.to_owned(), |settings| settings.default_fs_type);
        support::info(default_fs_type)
    }

    fn validate_settings() -> Result<(), Error> {
        with_ctx(volumes::validate, |absent| absent.serves_nothing())
    }

    fn create_volume(request: CreateVolumeRequest) -> Result<Volume, Error> {
        with_ctx(|ctx| volumes::create(ctx, request), |absent| absent.no_space())
    }

    fn find_volume(name: String) -> Result<Option<Volume>, Error> {
        with_ctx(|ctx| volumes::find(ctx, &name), |_| Ok(None))
    }

    fn delete_volume(volume_id: String) -> Result<(), Error> {
        with_ctx(|ctx| volumes::delete(ctx, &volume_id), |_| Ok(()))
    }

    fn get_volume(volume_id: String) -> Result<Volume, Error> {
        with_ctx(|ctx| volumes::get(ctx, &volume_id), |absent| absent.not_found("volume", &volume_id))
    }

    fn list_volumes(max_entries: u32, starting_token: String) -> Result<VolumePage, Error> {
        with_ctx(|ctx| volumes::list(ctx, max_entries, &starting_token), |absent| absent.no_volumes())
    }

    /// Topology is the host's concern for a node-local backend: it asks the node it is on.
    fn get_capacity(
        capabilities: Vec<VolumeCapability>,
        parameters: Params,
        _topology: Option<Topology>,
    ) -> Result<Capacity, Error> {
        with_ctx(|ctx| volumes::capacity(ctx, &capabilities, &parameters), |absent| absent.no_capacity())
    }

    fn expand_volume(volume_id: String, capacity: CapacityRange) -> Result<Expansion, Error> {
        with_ctx(|ctx| volumes::expand(ctx, &volume_id, &capacity), |absent| absent.not_found("volume", &volume_id))
    }

    fn modify_volume(_volume_id: String, _mutable_parameters: Params) -> Result<(), Error> {
        Err(Error::Unimplemented("lvm volumes have no mutable parameters".into()))
    }

    fn create_snapshot(source_volume_id: String, name: String, parameters: Params) -> Result<Snapshot, Error> {
        with_ctx(
            |ctx| snapshots::create(ctx, &source_volume_id, &name, &parameters),
            |absent| absent.not_found("volume", &source_volume_id),
        )
    }

    fn find_snapshot(name: String) -> Result<Option<Snapshot>, Error> {
        with_ctx(|ctx| snapshots::find(ctx, &name), |_| Ok(None))
    }

    fn delete_snapshot(snapshot_id: String) -> Result<(), Error> {
        with_ctx(|ctx| snapshots::delete(ctx, &snapshot_id), |_| Ok(()))
    }

    fn list_snapshots(
        snapshot_id: String,
        source_volume_id: String,
        max_entries: u32,
        starting_token: String,
    ) -> Result<SnapshotPage, Error> {
        with_ctx(
            |ctx| snapshots::list(ctx, &snapshot_id, &source_volume_id, max_entries, &starting_token),
            |absent| absent.no_snapshots(),
        )
    }

    fn controller_publish(
        _volume_id: String,
        _node_id: String,
        _capability: VolumeCapability,
        _readonly: bool,
        _volume_context: Params,
    ) -> Result<Params, Error> {
        Err(Error::Unimplemented("lvm volumes are node-local: there is nothing to attach".into()))
    }

    fn controller_unpublish(_volume_id: String, _node_id: String) -> Result<(), Error> {
        Err(Error::Unimplemented("lvm volumes are node-local: there is nothing to detach".into()))
    }

    fn node_device(volume_id: String, volume_context: Params, _publish_context: Params) -> Result<Device, Error> {
        with_ctx(
            |ctx| volumes::node_device(ctx, &volume_id, &volume_context),
            |absent| absent.not_found("volume", &volume_id),
        )
    }

    /// Node-local: the host reports the node itself.
    fn node_topology() -> Result<Topology, Error> {
        Ok(Vec::new())
    }
}

/// Runs an operation against this instance's settings and the real host; `absent` answers
/// instead on a node without the volume group of an `optional` instance (`optional.rs`).
fn with_ctx<T>(
    operation: impl FnOnce(&Ctx) -> Result<T, Error>,
    absent: impl FnOnce(&Absent) -> Result<T, Error>,
) -> Result<T, Error> {
    let settings = Settings::parse(&host::settings())?;
    let ctx = Ctx { settings, platform: &WitHost };
    optional::serve(&ctx, operation, absent)
}

/// The WIT host imports, as the [`Platform`] the operations use.
struct WitHost;

impl Platform for WitHost {
    fn exec(&self, program: &str, args: &[String]) -> Result<ExecOutput, Error> {
        host::exec(program, args, &[])
    }

    fn info(&self, message: &str) {
        host::log(Level::Info, message);
    }

    fn warn(&self, message: &str) {
        host::log(Level::Warn, message);
    }
}
