//! The generated types and descriptors match the CSI v1.12 contract.

use std::collections::HashMap;

use csi_proto::FILE_DESCRIPTOR_SET;
use csi_proto::v1::{
    CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, VolumeContentSource,
    volume_content_source::{SnapshotSource, Type},
};
use prost::Message;
use prost_types::FileDescriptorSet;

#[test]
fn messages_round_trip() {
    let request = CreateVolumeRequest {
        name: "pvc-1".into(),
        capacity_range: Some(CapacityRange { required_bytes: 1 << 30, limit_bytes: 2 << 30 }),
        secrets: HashMap::from([("token".into(), "t".into())]),
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(Type::Snapshot(SnapshotSource { snapshot_id: "snap-1".into() })),
        }),
        mutable_parameters: HashMap::from([("iops".into(), "3000".into())]),
        ..Default::default()
    };
    let decoded = CreateVolumeRequest::decode(request.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, request);
}

#[test]
fn field_numbers_match_the_wire_format() {
    let request = DeleteVolumeRequest { volume_id: "v".into(), secrets: HashMap::from([("k".into(), "s".into())]) };
    // volume_id = 1 (tag 0x0a); secrets = 2 (tag 0x12), an entry with
    // key = 1 (0x0a) and value = 2 (0x12).
    let wire = [
        0x0a, 1, b'v', //
        0x12, 6, 0x0a, 1, b'k', 0x12, 1, b's',
    ];
    assert_eq!(request.encode_to_vec(), wire);
}

#[test]
fn descriptor_set_has_every_service() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let csi = set.file.iter().find(|file| file.name() == "csi.proto").expect("csi.proto is in the set");
    assert_eq!(csi.package(), "csi.v1");

    let services: Vec<(&str, usize)> =
        csi.service.iter().map(|service| (service.name(), service.method.len())).collect();
    assert_eq!(
        services,
        [("Identity", 3), ("Controller", 15), ("GroupController", 4), ("SnapshotMetadata", 2), ("Node", 8),]
    );

    let snapshot_metadata = &csi.service[3];
    assert!(snapshot_metadata.method.iter().all(|method| method.server_streaming() && !method.client_streaming()));
}

#[test]
fn descriptor_set_includes_imports() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    for import in
        ["google/protobuf/descriptor.proto", "google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"]
    {
        assert!(set.file.iter().any(|file| file.name() == import), "{import} missing");
    }
}
