//! Identity, and what the plugin advertises: GetPluginInfo, GetPluginCapabilities, Probe,
//! ControllerGetCapabilities, NodeGetInfo and the GroupController, under each serving mode.

mod common;

use common::*;
use csi::controller_service_capability::rpc::Type as Rpc;
use csi::plugin_capability::{Type as PluginType, service, volume_expansion};
use csi_proto::v1 as csi;
use tonic::Code;

/// What GetPluginCapabilities lists, in a comparable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cap {
    Service(service::Type),
    Expansion(volume_expansion::Type),
}

async fn plugin_capabilities(host: &Host) -> std::collections::BTreeSet<Cap> {
    let response = expect_ok(
        host.identity().await.get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}).await,
        "GetPluginCapabilities",
    );
    let caps: Vec<Cap> = response
        .capabilities
        .iter()
        .map(|c| match c.r#type.as_ref().expect("capability without a type") {
            PluginType::Service(s) => Cap::Service(s.r#type()),
            PluginType::VolumeExpansion(e) => Cap::Expansion(e.r#type()),
        })
        .collect();
    let unique = set(caps.iter().copied());
    assert_eq!(unique.len(), caps.len(), "capabilities listed twice: {caps:?}");
    unique
}

async fn controller_rpcs(host: &Host) -> Vec<Rpc> {
    let response = expect_ok(
        host.controller().await.controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {}).await,
        "ControllerGetCapabilities",
    );
    response
        .capabilities
        .iter()
        .map(|c| match c.r#type.as_ref().expect("capability without a type") {
            csi::controller_service_capability::Type::Rpc(rpc) => rpc.r#type(),
        })
        .collect()
}

#[tokio::test]
async fn default_host_identity_capabilities_and_node_info() {
    let host = Host::start_default().await;
    let mut identity = host.identity().await;

    // GetPluginInfo
    let info = expect_ok(identity.get_plugin_info(csi::GetPluginInfoRequest {}).await, "GetPluginInfo");
    assert_eq!(info.name, DRIVER);
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let loaded = info
        .manifest
        .get("backend.loopfile")
        .unwrap_or_else(|| panic!("manifest does not name the loopfile instance: {:?}", info.manifest));
    assert!(loaded.starts_with("loopfile "), "manifest entry names the component kind and version: {loaded:?}");
    assert!(loaded.len() > "loopfile ".len(), "manifest entry has a version: {loaded:?}");
    assert_eq!(info.manifest.len(), 1, "only one backend is loaded: {:?}", info.manifest);

    // Probe
    let probe = expect_ok(identity.probe(csi::ProbeRequest {}).await, "Probe");
    assert_eq!(probe.ready, Some(true));

    // GetPluginCapabilities: the controller is served, loopfile volumes are node-local and
    // can grow while in use.
    assert_eq!(
        plugin_capabilities(&host).await,
        set([
            Cap::Service(service::Type::ControllerService),
            Cap::Service(service::Type::VolumeAccessibilityConstraints),
            Cap::Expansion(volume_expansion::Type::Online),
        ])
    );

    // ControllerGetCapabilities: exactly what loopfile declares, derived by the host.
    let rpcs = controller_rpcs(&host).await;
    assert_eq!(set(rpcs.iter().copied()).len(), rpcs.len(), "an RPC capability is listed twice: {rpcs:?}");
    assert_eq!(set(rpcs), set(LOOPFILE_CONTROLLER_RPCS.iter().copied()));

    // NodeGetInfo: the node id and its topology segment.
    let node = expect_ok(host.node().await.node_get_info(csi::NodeGetInfoRequest {}).await, "NodeGetInfo");
    assert_eq!(node.node_id, NODE_ID);
    assert_eq!(node.accessible_topology, Some(node_topology(NODE_ID)));

    // GroupController: no capabilities, every group call UNIMPLEMENTED.
    let mut group = host.group_controller().await;
    let caps = expect_ok(
        group.group_controller_get_capabilities(csi::GroupControllerGetCapabilitiesRequest {}).await,
        "GroupControllerGetCapabilities",
    );
    assert!(caps.capabilities.is_empty(), "{caps:?}");
    expect_code(
        group
            .create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                name: "group".into(),
                source_volume_ids: vec!["loopfile:v-0123456789abcdef0123456789abcdef".into()],
                ..Default::default()
            })
            .await,
        Code::Unimplemented,
        "CreateVolumeGroupSnapshot",
    );
    expect_code(
        group
            .delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: "loopfile:g-1".into(),
                ..Default::default()
            })
            .await,
        Code::Unimplemented,
        "DeleteVolumeGroupSnapshot",
    );
    expect_code(
        group
            .get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
                group_snapshot_id: "loopfile:g-1".into(),
                ..Default::default()
            })
            .await,
        Code::Unimplemented,
        "GetVolumeGroupSnapshot",
    );
}

#[tokio::test]
async fn node_mode_serves_no_controller() {
    let mut host = Host::new();
    host.args(["--mode", "node"]);
    host.start().await;

    let caps = plugin_capabilities(&host).await;
    assert!(
        !caps.contains(&Cap::Service(service::Type::ControllerService)),
        "node mode advertises the controller: {caps:?}"
    );
    assert!(caps.contains(&Cap::Service(service::Type::VolumeAccessibilityConstraints)), "{caps:?}");

    let mut controller = host.controller().await;
    expect_code(
        controller.controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {}).await,
        Code::Unimplemented,
        "ControllerGetCapabilities in node mode",
    );
    expect_code(
        controller.create_volume(create_req("node-mode", 16 * MIB)).await,
        Code::Unimplemented,
        "CreateVolume in node mode",
    );
    expect_code(
        host.group_controller()
            .await
            .group_controller_get_capabilities(csi::GroupControllerGetCapabilitiesRequest {})
            .await,
        Code::Unimplemented,
        "GroupControllerGetCapabilities in node mode",
    );

    // The node service is served.
    let node = expect_ok(host.node().await.node_get_info(csi::NodeGetInfoRequest {}).await, "NodeGetInfo");
    assert_eq!(node.node_id, NODE_ID);
}

#[tokio::test]
async fn controller_mode_serves_no_node() {
    let mut host = Host::new();
    host.args(["--mode", "controller"]);
    host.start().await;

    let caps = plugin_capabilities(&host).await;
    assert!(caps.contains(&Cap::Service(service::Type::ControllerService)), "{caps:?}");
    expect_code(
        host.node().await.node_get_info(csi::NodeGetInfoRequest {}).await,
        Code::Unimplemented,
        "NodeGetInfo in controller mode",
    );
    let rpcs = controller_rpcs(&host).await;
    assert!(rpcs.contains(&Rpc::CreateDeleteVolume), "{rpcs:?}");
}

#[tokio::test]
async fn driver_name_flag_renames_the_plugin() {
    let mut host = Host::new();
    host.args(["--driver-name", "csi.example.org"]);
    host.start().await;

    let info = expect_ok(host.identity().await.get_plugin_info(csi::GetPluginInfoRequest {}).await, "GetPluginInfo");
    assert_eq!(info.name, "csi.example.org");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));

    // The node topology key is derived from the driver name.
    let node = expect_ok(host.node().await.node_get_info(csi::NodeGetInfoRequest {}).await, "NodeGetInfo");
    assert_eq!(
        node.accessible_topology,
        Some(csi::Topology { segments: params(&[("topology.csi.example.org/node", NODE_ID)]) })
    );
    let volume =
        expect_ok(host.controller().await.create_volume(create_req("renamed", 16 * MIB)).await, "CreateVolume")
            .volume
            .expect("volume");
    assert_eq!(
        volume.accessible_topology,
        vec![csi::Topology { segments: params(&[("topology.csi.example.org/node", NODE_ID)]) }]
    );
}

/// The controller RPC capabilities the loopfile backend leads to (see backends/loopfile/src
/// `info()` and host/src/csi/controller.rs `controller_get_capabilities`). GetSnapshot is
/// served but not advertised: conformance suites still reject GET_SNAPSHOT as unknown.
const LOOPFILE_CONTROLLER_RPCS: &[Rpc] = &[
    Rpc::CreateDeleteVolume,
    Rpc::ListVolumes,
    Rpc::GetCapacity,
    Rpc::CreateDeleteSnapshot,
    Rpc::ListSnapshots,
    Rpc::CloneVolume,
    Rpc::ExpandVolume,
    Rpc::GetVolume,
    Rpc::SingleNodeMultiWriter,
];
