//! Secret fields never show up in `Debug` output; everything else does.

use std::collections::HashMap;

use csi_proto::SECRET_FIELDS;
use csi_proto::v1::{
    ControllerPublishVolumeRequest, CreateVolumeRequest, NodeStageVolumeRequest, VolumeCapability,
    volume_capability::{AccessType, MountVolume},
};

const SECRET_KEY: &str = "s3cr3t-key";
const SECRET_VALUE: &str = "s3cr3t-value";

fn secrets() -> HashMap<String, String> {
    HashMap::from([(SECRET_KEY.to_owned(), SECRET_VALUE.to_owned())])
}

/// Checks `debug` hides the secret map yet still shows `visible`.
fn assert_redacted(debug: &str, visible: &[&str]) {
    assert!(!debug.contains(SECRET_VALUE), "secret value leaked: {debug}");
    assert!(!debug.contains(SECRET_KEY), "secret key leaked: {debug}");
    assert!(debug.contains("secrets: <redacted: 1 keys>"), "{debug}");
    for text in visible {
        assert!(debug.contains(text), "{text:?} missing from {debug}");
    }
}

#[test]
fn create_volume_request_redacts_secrets() {
    let request = CreateVolumeRequest {
        name: "pvc-1234".into(),
        parameters: HashMap::from([("fsType".into(), "ext4".into())]),
        secrets: secrets(),
        ..Default::default()
    };
    assert_redacted(&format!("{request:?}"), &["pvc-1234", "fsType", "ext4"]);
    // The alternate form goes through the same impl.
    assert_redacted(&format!("{request:#?}"), &["pvc-1234"]);
}

#[test]
fn node_stage_volume_request_redacts_secrets() {
    let request = NodeStageVolumeRequest {
        volume_id: "vol-1".into(),
        staging_target_path: "/var/lib/kubelet/staging/vol-1".into(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume { fs_type: "xfs".into(), ..Default::default() })),
            ..Default::default()
        }),
        secrets: secrets(),
        ..Default::default()
    };
    assert_redacted(&format!("{request:?}"), &["vol-1", "/var/lib/kubelet/staging/vol-1", "xfs"]);
}

#[test]
fn controller_publish_volume_request_redacts_secrets() {
    let request = ControllerPublishVolumeRequest {
        volume_id: "vol-2".into(),
        node_id: "node-a".into(),
        readonly: true,
        secrets: secrets(),
        ..Default::default()
    };
    assert_redacted(&format!("{request:?}"), &["vol-2", "node-a", "readonly: true"]);
}

#[test]
fn secret_fields_match_the_spec() {
    let expected = [
        "csi.v1.CreateVolumeRequest.secrets",
        "csi.v1.DeleteVolumeRequest.secrets",
        "csi.v1.ControllerPublishVolumeRequest.secrets",
        "csi.v1.ControllerUnpublishVolumeRequest.secrets",
        "csi.v1.ValidateVolumeCapabilitiesRequest.secrets",
        "csi.v1.ControllerModifyVolumeRequest.secrets",
        "csi.v1.CreateSnapshotRequest.secrets",
        "csi.v1.DeleteSnapshotRequest.secrets",
        "csi.v1.ListSnapshotsRequest.secrets",
        "csi.v1.GetSnapshotRequest.secrets",
        "csi.v1.ControllerExpandVolumeRequest.secrets",
        "csi.v1.NodeStageVolumeRequest.secrets",
        "csi.v1.NodePublishVolumeRequest.secrets",
        "csi.v1.NodeExpandVolumeRequest.secrets",
        "csi.v1.CreateVolumeGroupSnapshotRequest.secrets",
        "csi.v1.DeleteVolumeGroupSnapshotRequest.secrets",
        "csi.v1.GetVolumeGroupSnapshotRequest.secrets",
        "csi.v1.GetMetadataAllocatedRequest.secrets",
        "csi.v1.GetMetadataDeltaRequest.secrets",
    ];
    assert_eq!(SECRET_FIELDS, expected);
}
