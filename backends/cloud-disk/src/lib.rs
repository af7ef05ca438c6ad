//! cloud-disk: a CSI storage backend whose volumes are AWS EBS volumes. The backend itself
//! speaks the EC2 Query API over outgoing HTTP (wasi:http, limited by the host's grant to
//! the configured endpoint); the host attaches nothing itself but finds the attached disk on
//! the node by its serial.
//!
//! Settings (`settings.rs`): `region` (required), `endpoint`, `default-volume-type`, `tags`,
//! `wait-budget-ms`, `device-names`. StorageClass parameters (`parameters.rs`): `type`,
//! `iops`, `throughput`, `encrypted`, `kmsKeyId`; mutable parameters: `type`, `iops`,
//! `throughput`. Credentials come from `host.secret`: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN` (`credentials.rs`).
//!
//! A host config for it:
//!
//! ```toml
//! [[backends]]
//! name = "ebs"
//! module = "/usr/lib/wasmcsi/cloud_disk.wasm"
//!
//! [backends.grants]
//! http = ["https://ec2.eu-west-1.amazonaws.com"]   # the endpoint, nothing else
//! secret_env = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
//!
//! [backends.limits]
//! deadline_ms = 60000      # above wait-budget-ms plus one request (10 s)
//!
//! [backends.settings]
//! region = "eu-west-1"
//! ```
//!
//! GetCapacity answers the size range of the class's volume type (`available-bytes` is its
//! largest volume): EBS has no meaningful free-space figure (`capacity.rs`).
//!
//! Node ids (`--node-id`, the Kubernetes node name) may be an instance id, a resource name
//! `i-….<region>.compute.internal` or an instance's private DNS name (`node.rs`).
//!
//! Calls that wait for EBS (create, attach, detach, expand, modify) answer `unavailable`
//! once `wait-budget-ms` is spent; the CO's retry finds the earlier progress and goes on.
//!
//! This file is the WIT glue: it binds `csi:backend`, hands each call to the module that
//! owns it, and adapts the host imports to the `Platform` trait (`context.rs`) and outgoing
//! HTTP to the `Transport` trait (`transport.rs`) the logic is written against.

mod capacity;
mod clock;
mod context;
mod credentials;
mod ec2;
mod errors;
mod ids;
mod model;
mod modify;
mod node;
mod paging;
mod parameters;
mod publish;
mod query;
mod retry;
mod settings;
mod sigv4;
mod sizing;
mod snapshots;
mod support;
mod topology;
mod transport;
mod volumes;
mod wait;
mod xml;

/// A fake EC2 for tests, here and (crate feature `fake`) in the testkit's wasmtime tests.
#[cfg(any(test, feature = "fake"))]
pub mod fake;

use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, SystemTime};

use kit::types::{
    BackendInfo, Capacity, CapacityRange, Device, Disk, Error, Expansion, Params, Snapshot, SnapshotPage, Topology,
    Volume, VolumeCapability, VolumePage,
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

struct CloudDisk;

// Only a component exports the interface: natively (where the crate is built for its unit
// tests) the export names are not valid linker symbols for a cdylib.
#[cfg(target_arch = "wasm32")]
export!(CloudDisk);

impl Guest for CloudDisk {
    fn info() -> BackendInfo {
        support::info()
    }

    /// Settings only: credentials may come with each CSI request, so they are not checked
    /// at load time.
    fn validate_settings() -> Result<(), Error> {
        Settings::parse(&host::settings()).map(drop)
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

    /// The volume type's size range: EBS has no free-space figure (see `capacity.rs`).
    fn get_capacity(
        capabilities: Vec<VolumeCapability>,
        parameters: Params,
        _topology: Option<Topology>,
    ) -> Result<Capacity, Error> {
        capacity::get(&Settings::parse(&host::settings())?, &capabilities, &parameters)
    }

    fn expand_volume(volume_id: String, capacity: CapacityRange) -> Result<Expansion, Error> {
        with_ctx(|ctx| modify::expand(ctx, &volume_id, &capacity))
    }

    fn modify_volume(volume_id: String, mutable_parameters: Params) -> Result<(), Error> {
        with_ctx(|ctx| modify::modify(ctx, &volume_id, &mutable_parameters))
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
        volume_id: String,
        node_id: String,
        _capability: VolumeCapability,
        _readonly: bool,
        _volume_context: Params,
    ) -> Result<Params, Error> {
        with_ctx(|ctx| publish::attach(ctx, &volume_id, &node_id))
    }

    fn controller_unpublish(volume_id: String, node_id: String) -> Result<(), Error> {
        with_ctx(|ctx| publish::detach(ctx, &volume_id, &node_id))
    }

    /// The disk is found on the node by its serial; the device path the attach chose is the
    /// fallback once the WIT's `disk` case carries it.
    fn node_device(volume_id: String, _volume_context: Params, publish_context: Params) -> Result<Device, Error> {
        let (serial, path) = node::device(&volume_id, &publish_context)?;
        Ok(Device::Disk(Disk { serial, path }))
    }

    fn node_topology() -> Result<Topology, Error> {
        with_ctx(node::topology)
    }
}

/// Runs an operation against this instance's settings, the real host and wasi:http.
fn with_ctx<T>(operation: impl FnOnce(&Ctx) -> Result<T, Error>) -> Result<T, Error> {
    let settings = Settings::parse(&host::settings())?;
    operation(&Ctx::new(settings, &WitHost, &transport::HostTransport))
}

/// The WIT host imports and the WASI clocks, as the [`Platform`] the operations use.
struct WitHost;

impl Platform for WitHost {
    fn secret(&self, name: &str) -> Option<String> {
        host::secret(name)
    }

    fn node_id(&self) -> String {
        host::node_id()
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// On wasm32-wasip2 std sleeps on a `wasi:clocks/monotonic-clock` pollable.
    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }

    /// Jitter only: std seeds `RandomState` from `wasi:random/insecure-seed`.
    fn random(&self) -> u64 {
        RandomState::new().build_hasher().finish()
    }

    fn info(&self, message: &str) {
        host::log(Level::Info, message);
    }

    fn warn(&self, message: &str) {
        host::log(Level::Warn, message);
    }
}

#[cfg(test)]
mod tests {
    use kit::types::{AccessMode, AccessType, TopologyRequirement};

    use super::*;
    use crate::context::fake::{self, NODE_ID};
    use crate::fake::{Fixture, Scripted, ZONE};
    use crate::sizing::GIB;

    /// A volume's whole life, through the operations the glue calls: every request is
    /// signed with the configured credentials and EC2 (the fake) accepts every signature.
    #[test]
    fn every_request_is_signed_with_the_configured_credentials() {
        let fixture = Fixture::new();
        let ctx = || fixture.ctx();
        let request = CreateVolumeRequest {
            name: "pvc-1".into(),
            capacity: CapacityRange { required_bytes: GIB, limit_bytes: 0 },
            capabilities: vec![VolumeCapability {
                access_type: AccessType::Block,
                access_mode: AccessMode::SingleNodeWriter,
            }],
            parameters: Vec::new(),
            mutable_parameters: Vec::new(),
            content_source: None,
            accessibility: Some(TopologyRequirement {
                requisite: Vec::new(),
                preferred: vec![topology::segment(ZONE)],
            }),
        };
        let volume = volumes::create(&ctx(), request).unwrap();
        let context = publish::attach(&ctx(), &volume.id, NODE_ID).unwrap();
        let (serial, path) = node::device(&volume.id, &context).unwrap();
        assert_eq!(serial, volume.id.replace('-', ""));
        assert_eq!(path, context[0].1);
        assert_eq!(node::topology(&ctx()).unwrap(), [topology::segment(ZONE)[0].clone()]);
        modify::expand(&ctx(), &volume.id, &CapacityRange { required_bytes: 2 * GIB, limit_bytes: 0 }).unwrap();
        modify::modify(&ctx(), &volume.id, &[("iops".into(), "4000".into())]).unwrap();
        let snapshot = snapshots::create(&ctx(), &volume.id, "snap-1", &[]).unwrap();
        assert_eq!(snapshots::list(&ctx(), "", "", 0, "").unwrap().entries.len(), 1);
        assert_eq!(volumes::list(&ctx(), 0, "").unwrap().entries.len(), 1);
        snapshots::delete(&ctx(), &snapshot.id).unwrap();
        publish::detach(&ctx(), &volume.id, NODE_ID).unwrap();
        volumes::delete(&ctx(), &volume.id).unwrap();

        let requests = fixture.ec2.requests();
        assert_eq!(requests.len(), fixture.ec2.actions().len());
        assert!(requests.len() > 15, "{:?}", fixture.ec2.actions());
        let credential = format!("Credential={}/20150830/us-east-1/ec2/aws4_request", fake::ACCESS_KEY_ID);
        for request in &requests {
            let authorization = request.headers.iter().find(|(name, _)| name == "authorization").unwrap();
            assert!(authorization.1.contains(&credential), "{}", authorization.1);
        }
        assert_eq!(fixture.ec2.bad_signatures(), 0);
        for log in fixture.platform.logs.borrow().iter() {
            crate::fake::assert_no_credentials(log);
        }
    }

    /// AWS's message is kept but whatever in it is a credential is not.
    #[test]
    fn credentials_in_aws_messages_never_reach_the_co() {
        let fixture = Fixture::new();
        let message =
            format!("key {} secret {} token {}", fake::ACCESS_KEY_ID, fake::SECRET_ACCESS_KEY, fake::SESSION_TOKEN);
        for (action, code) in [("DescribeVolumes", "AuthFailure"), ("DeleteVolume", "UnauthorizedOperation")] {
            fixture.ec2.script(action, Scripted::Error(403, code, message.clone()));
        }
        let error = fixture.checked(volumes::get(&fixture.ctx(), "vol-0123456789abcdef0"));
        assert!(matches!(&error, Error::FailedPrecondition(m) if m.contains("key [redacted]")), "{error:?}");
        let error = fixture.checked(volumes::delete(&fixture.ctx(), "vol-0123456789abcdef0"));
        assert!(matches!(error, Error::FailedPrecondition(_)), "{error:?}");
    }
}
