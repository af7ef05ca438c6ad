//! The Controller service end to end, on the embedded loopfile default (no config): volume
//! and snapshot lifecycles with their data, capacity rules, pagination, request validation,
//! concurrency and secret hygiene.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use csi::controller_client::ControllerClient;
use csi_proto::v1 as csi;
use tonic::Code;
use tonic::transport::Channel;

/// Where the embedded default keeps its volumes.
fn volumes_root(host: &Host) -> std::path::PathBuf {
    host.data_dir.join("loopfile")
}

async fn create(c: &mut ControllerClient<Channel>, request: csi::CreateVolumeRequest) -> csi::Volume {
    let what = format!("CreateVolume {:?}", request.name);
    expect_ok(c.create_volume(request).await, &what).volume.expect("CreateVolume answered without a volume")
}

async fn list_all_volumes(c: &mut ControllerClient<Channel>) -> Vec<csi::Volume> {
    let response = expect_ok(
        c.list_volumes(csi::ListVolumesRequest { max_entries: 0, starting_token: String::new() }).await,
        "ListVolumes",
    );
    assert!(response.next_token.is_empty(), "an unlimited listing has no next page: {:?}", response.next_token);
    response.entries.into_iter().map(|e| e.volume.expect("entry without a volume")).collect()
}

async fn get_volume(
    c: &mut ControllerClient<Channel>,
    id: &str,
) -> Result<tonic::Response<csi::ControllerGetVolumeResponse>, tonic::Status> {
    c.controller_get_volume(csi::ControllerGetVolumeRequest { volume_id: id.into() }).await
}

async fn delete_volume(
    c: &mut ControllerClient<Channel>,
    id: &str,
) -> Result<tonic::Response<csi::DeleteVolumeResponse>, tonic::Status> {
    c.delete_volume(csi::DeleteVolumeRequest { volume_id: id.into(), ..Default::default() }).await
}

async fn create_snapshot(
    c: &mut ControllerClient<Channel>,
    source: &str,
    name: &str,
) -> Result<tonic::Response<csi::CreateSnapshotResponse>, tonic::Status> {
    c.create_snapshot(csi::CreateSnapshotRequest {
        source_volume_id: source.into(),
        name: name.into(),
        ..Default::default()
    })
    .await
}

async fn list_snapshots(
    c: &mut ControllerClient<Channel>,
    request: csi::ListSnapshotsRequest,
) -> csi::ListSnapshotsResponse {
    expect_ok(c.list_snapshots(request).await, "ListSnapshots")
}

fn snapshot_ids(response: &csi::ListSnapshotsResponse) -> Vec<String> {
    response
        .entries
        .iter()
        .map(|e| e.snapshot.as_ref().expect("entry without a snapshot").snapshot_id.clone())
        .collect()
}

/// A well-formed loopfile volume id that names no volume.
const UNKNOWN_VOLUME: &str = "loopfile:v-0123456789abcdef0123456789abcdef";
const UNKNOWN_SNAPSHOT: &str = "loopfile:s-0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn volume_lifecycle_and_capacity_rules() {
    let host = Host::start_default().await;
    let mut c = host.controller().await;
    let node_segment = vec![node_topology(NODE_ID)];

    // Created, with the size rounded up to the 4 KiB granule.
    let a = create(&mut c, create_req("vol-a", 16 * MIB + 1)).await;
    let a_local = local_id(&a.volume_id, "loopfile").to_owned();
    assert_eq!(a.capacity_bytes, 16 * MIB + 4 * KIB, "required bytes are rounded up to the granule");
    assert_eq!(a.accessible_topology, node_segment, "loopfile volumes live on the node that made them");
    assert!(a.content_source.is_none());
    let image = backing_file(&volumes_root(&host), &a_local);
    assert_eq!(
        std::fs::metadata(&image).unwrap().len(),
        a.capacity_bytes as u64,
        "the image is as large as the volume"
    );

    // Idempotent: the same request, and a compatible one, answer the same volume.
    let again = create(&mut c, create_req("vol-a", 16 * MIB + 1)).await;
    assert_eq!((again.volume_id.as_str(), again.capacity_bytes), (a.volume_id.as_str(), a.capacity_bytes));
    let compatible =
        create(&mut c, csi::CreateVolumeRequest { capacity_range: range(MIB, 32 * MIB), ..create_req("vol-a", 0) })
            .await;
    assert_eq!((compatible.volume_id.as_str(), compatible.capacity_bytes), (a.volume_id.as_str(), a.capacity_bytes));
    // Same name, incompatible size.
    expect_code(c.create_volume(create_req("vol-a", 64 * MIB)).await, Code::AlreadyExists, "same name, larger size");
    expect_code(
        c.create_volume(csi::CreateVolumeRequest { capacity_range: range(0, 4 * MIB), ..create_req("vol-a", 0) }).await,
        Code::AlreadyExists,
        "same name, limit below its size",
    );
    assert_eq!(list_all_volumes(&mut c).await.len(), 1, "retries made no new volume");

    // Without a range: the default size (1 GiB); with only a limit: the default shrunk to it.
    let default = create(&mut c, create_req("vol-default", 0)).await;
    assert_eq!(default.capacity_bytes, GIB);
    let limited = create(
        &mut c,
        csi::CreateVolumeRequest { capacity_range: range(0, 100 * MIB + 1), ..create_req("vol-limited", 0) },
    )
    .await;
    assert_eq!(limited.capacity_bytes, 100 * MIB, "the default is shrunk to the limit, rounded down to the granule");
    let exact = create(
        &mut c,
        csi::CreateVolumeRequest { capacity_range: range(8 * MIB, 8 * MIB), ..create_req("vol-exact", 0) },
    )
    .await;
    assert_eq!(exact.capacity_bytes, 8 * MIB);

    // Ranges no volume can satisfy.
    let out_of_range = [
        ("limit below required", range(2 * MIB, MIB)),
        ("no granule multiple within the bounds", range(4 * KIB + 1, 4 * KIB + 100)),
        ("negative required", range(-1, 0)),
        ("negative limit", range(0, -1)),
    ];
    for (what, capacity_range) in out_of_range {
        let request =
            csi::CreateVolumeRequest { capacity_range, ..create_req(&format!("bad-range-{}", what.len()), 0) };
        expect_code(c.create_volume(request).await, Code::OutOfRange, what);
    }
    // Far more than the filesystem holds: the backend refuses (OUT_OF_RANGE or RESOURCE_EXHAUSTED).
    let status = c.create_volume(create_req("vol-huge", 1 << 50)).await.expect_err("a 1 PiB volume must be refused");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "1 PiB: {:?} {:?}",
        status.code(),
        status.message()
    );
    let names: Vec<_> = list_all_volumes(&mut c).await.into_iter().map(|v| v.volume_id).collect();
    assert_eq!(names.len(), 4, "refused requests left no volume behind: {names:?}");

    // ControllerGetVolume.
    let got = expect_ok(get_volume(&mut c, &a.volume_id).await, "ControllerGetVolume").volume.expect("volume");
    assert_eq!(got.volume_id, a.volume_id);
    assert_eq!(got.capacity_bytes, a.capacity_bytes);
    assert_eq!(got.accessible_topology, node_segment);
    expect_code(get_volume(&mut c, UNKNOWN_VOLUME).await, Code::NotFound, "ControllerGetVolume of an unknown id");
    expect_code(
        get_volume(&mut c, "nosuchbackend:v-1").await,
        Code::NotFound,
        "ControllerGetVolume of another instance's id",
    );

    // ValidateVolumeCapabilities.
    let validate = |id: &str, caps: Vec<csi::VolumeCapability>| csi::ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let ok =
        expect_ok(c.validate_volume_capabilities(validate(&a.volume_id, vec![rw_mount()])).await, "Validate SNW mount");
    let confirmed = ok.confirmed.unwrap_or_else(|| panic!("SINGLE_NODE_WRITER mount not confirmed: {:?}", ok.message));
    assert_eq!(confirmed.volume_capabilities, vec![rw_mount()]);
    let multi = expect_ok(
        c.validate_volume_capabilities(validate(&a.volume_id, vec![mount_cap(AccessMode::MultiNodeMultiWriter)])).await,
        "Validate MNMW",
    );
    assert!(multi.confirmed.is_none(), "a node-local volume cannot be written from many nodes");
    assert!(!multi.message.is_empty(), "an unconfirmed validation says why");
    let block = expect_ok(
        c.validate_volume_capabilities(validate(
            &a.volume_id,
            vec![block_cap(AccessMode::SingleNodeWriter), rw_mount()],
        ))
        .await,
        "Validate SNW block + mount",
    );
    assert!(block.confirmed.is_some(), "loopfile volumes can be consumed as block devices: {:?}", block.message);
    let mixed = expect_ok(
        c.validate_volume_capabilities(validate(
            &a.volume_id,
            vec![rw_mount(), mount_cap(AccessMode::MultiNodeReaderOnly)],
        ))
        .await,
        "Validate SNW + MNRO",
    );
    assert!(mixed.confirmed.is_none(), "one unsupported capability fails the whole set");
    expect_code(
        c.validate_volume_capabilities(validate(UNKNOWN_VOLUME, vec![rw_mount()])).await,
        Code::NotFound,
        "Validate unknown",
    );
    expect_code(
        c.validate_volume_capabilities(validate("nosuchbackend:v-1", vec![rw_mount()])).await,
        Code::NotFound,
        "Validate foreign",
    );

    // ControllerExpandVolume: grows, is idempotent, never shrinks.
    let expand = |id: &str, required: i64| csi::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: range(required, 0),
        ..Default::default()
    };
    let grown = expect_ok(c.controller_expand_volume(expand(&a.volume_id, 32 * MIB)).await, "expand");
    assert_eq!(grown.capacity_bytes, 32 * MIB);
    assert!(grown.node_expansion_required, "the node must grow the filesystem after loopfile grows the image");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), (32 * MIB) as u64, "the image grew");
    let repeat = expect_ok(c.controller_expand_volume(expand(&a.volume_id, 32 * MIB)).await, "repeat expand");
    assert_eq!(repeat.capacity_bytes, 32 * MIB);
    let smaller =
        expect_ok(c.controller_expand_volume(expand(&a.volume_id, 8 * MIB)).await, "expand to a smaller size");
    assert_eq!(smaller.capacity_bytes, 32 * MIB, "volumes never shrink");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), (32 * MIB) as u64);
    expect_code(c.controller_expand_volume(expand(UNKNOWN_VOLUME, 32 * MIB)).await, Code::NotFound, "expand unknown");
    let got = expect_ok(get_volume(&mut c, &a.volume_id).await, "ControllerGetVolume after expand").volume.unwrap();
    assert_eq!(got.capacity_bytes, 32 * MIB);

    // GetCapacity: space here, none for another node or an impossible capability.
    let capacity = |topology: Option<csi::Topology>, caps: Vec<csi::VolumeCapability>| csi::GetCapacityRequest {
        volume_capabilities: caps,
        parameters: HashMap::new(),
        accessible_topology: topology,
    };
    let here = expect_ok(c.get_capacity(capacity(None, vec![rw_mount()])).await, "GetCapacity");
    assert!(here.available_capacity > 0, "{here:?}");
    let largest = here.maximum_volume_size.expect("loopfile reports its largest possible volume");
    assert!(largest > 0 && largest <= here.available_capacity, "{here:?}");
    let block = expect_ok(
        c.get_capacity(capacity(None, vec![block_cap(AccessMode::SingleNodeWriter)])).await,
        "GetCapacity block",
    );
    assert!(block.available_capacity > 0, "{block:?}");
    let unknown_param =
        csi::GetCapacityRequest { parameters: params(&[("colour", "blue")]), ..capacity(None, vec![rw_mount()]) };
    let none = expect_ok(c.get_capacity(unknown_param).await, "GetCapacity with a parameter loopfile does not take");
    assert_eq!(none.available_capacity, 0, "no space for volumes loopfile cannot make: {none:?}");
    let this_node =
        expect_ok(c.get_capacity(capacity(Some(node_topology(NODE_ID)), vec![rw_mount()])).await, "GetCapacity here");
    assert!(this_node.available_capacity > 0, "{this_node:?}");
    let elsewhere = expect_ok(
        c.get_capacity(capacity(Some(node_topology("other-node")), vec![rw_mount()])).await,
        "GetCapacity elsewhere",
    );
    assert_eq!(elsewhere.available_capacity, 0, "a node-local backend has no space on another node");
    let multi = expect_ok(
        c.get_capacity(capacity(None, vec![mount_cap(AccessMode::MultiNodeMultiWriter)])).await,
        "GetCapacity MNMW",
    );
    assert_eq!(multi.available_capacity, 0);

    // Placement: a requisite topology naming another node cannot be served here.
    let elsewhere = csi::CreateVolumeRequest {
        accessibility_requirements: Some(csi::TopologyRequirement {
            requisite: vec![node_topology("other-node")],
            preferred: vec![],
        }),
        ..create_req("vol-elsewhere", 16 * MIB)
    };
    expect_code(c.create_volume(elsewhere).await, Code::ResourceExhausted, "requisite topology of another node");
    let here = csi::CreateVolumeRequest {
        accessibility_requirements: Some(csi::TopologyRequirement {
            requisite: vec![node_topology("other-node"), node_topology(NODE_ID)],
            preferred: vec![node_topology(NODE_ID)],
        }),
        ..create_req("vol-here", 16 * MIB)
    };
    assert_eq!(create(&mut c, here).await.accessible_topology, node_segment);

    // Capabilities loopfile does not declare.
    expect_code(
        c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: a.volume_id.clone(),
            node_id: NODE_ID.into(),
            volume_capability: Some(rw_mount()),
            ..Default::default()
        })
        .await,
        Code::Unimplemented,
        "ControllerPublishVolume",
    );
    expect_code(
        c.controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
            volume_id: a.volume_id.clone(),
            node_id: NODE_ID.into(),
            ..Default::default()
        })
        .await,
        Code::Unimplemented,
        "ControllerUnpublishVolume",
    );
    expect_code(
        c.controller_modify_volume(csi::ControllerModifyVolumeRequest {
            volume_id: a.volume_id.clone(),
            mutable_parameters: params(&[("iops", "100")]),
            ..Default::default()
        })
        .await,
        Code::Unimplemented,
        "ControllerModifyVolume",
    );

    // DeleteVolume: gone, repeatable, and OK for ids that name nothing.
    expect_ok(delete_volume(&mut c, &a.volume_id).await, "DeleteVolume");
    assert!(!image.exists(), "the image of a deleted volume is removed");
    assert!(files_mentioning(&volumes_root(&host), &a_local).is_empty(), "nothing of the deleted volume is left");
    expect_ok(delete_volume(&mut c, &a.volume_id).await, "repeated DeleteVolume");
    expect_code(get_volume(&mut c, &a.volume_id).await, Code::NotFound, "ControllerGetVolume after delete");
    for id in [UNKNOWN_VOLUME, "loopfile:garbage", "loopfile:../../etc", "garbage", "nosuchbackend:v-1", ":"] {
        expect_ok(delete_volume(&mut c, id).await, &format!("DeleteVolume {id:?}"));
    }
    let left: Vec<_> = list_all_volumes(&mut c).await.into_iter().map(|v| v.volume_id).collect();
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(!left.contains(&a.volume_id));
}

#[tokio::test]
async fn list_volumes_paginates() {
    let host = Host::start_default().await;
    let mut c = host.controller().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(create(&mut c, create_req(&format!("page-{i}"), 4 * MIB)).await.volume_id);
    }

    // max_entries 2: walk the pages; every volume is seen exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    for page in 0.. {
        assert!(page < 10, "pagination did not end: {seen:?}");
        let response = expect_ok(
            c.list_volumes(csi::ListVolumesRequest { max_entries: 2, starting_token: token.clone() }).await,
            "ListVolumes page",
        );
        assert!(response.entries.len() <= 2, "page {page} has {} entries", response.entries.len());
        for entry in &response.entries {
            let volume = entry.volume.as_ref().expect("entry without a volume");
            assert_eq!(volume.accessible_topology, vec![node_topology(NODE_ID)]);
            assert_eq!(volume.capacity_bytes, 4 * MIB);
            seen.push(volume.volume_id.clone());
        }
        if response.next_token.is_empty() {
            break;
        }
        token = response.next_token;
    }
    assert_eq!(seen.len(), 5, "each volume exactly once: {seen:?}");
    assert_eq!(set(seen), set(created.clone()));

    // No limit: everything at once.
    let all = list_all_volumes(&mut c).await;
    assert_eq!(set(all.into_iter().map(|v| v.volume_id)), set(created));

    // Tokens the plugin did not issue, and negative sizes.
    for token in ["garbage", "loopfile:garbage", "nosuchbackend:x"] {
        expect_code(
            c.list_volumes(csi::ListVolumesRequest { max_entries: 2, starting_token: token.into() }).await,
            Code::Aborted,
            &format!("ListVolumes with token {token:?}"),
        );
    }
    expect_code(
        c.list_volumes(csi::ListVolumesRequest { max_entries: -1, starting_token: String::new() }).await,
        Code::InvalidArgument,
        "negative max_entries",
    );
}

#[tokio::test]
async fn snapshots_restores_and_clones_keep_their_data() {
    let host = Host::start_default().await;
    let root = volumes_root(&host);
    let mut c = host.controller().await;

    let source = create(&mut c, create_req("snap-source", 16 * MIB)).await;
    let source_file = backing_file(&root, local_id(&source.volume_id, "loopfile"));
    let offsets = [0u64, 5 * MIB as u64 + 512, 16 * MIB as u64 - 4096];
    for (i, offset) in offsets.iter().enumerate() {
        write_at(&source_file, *offset, &pattern(i as u8));
    }

    // CreateSnapshot, idempotent repeat, name clash with another source.
    let snap = expect_ok(create_snapshot(&mut c, &source.volume_id, "snap-1").await, "CreateSnapshot")
        .snapshot
        .expect("snapshot");
    let snap_local = local_id(&snap.snapshot_id, "loopfile").to_owned();
    assert_eq!(snap.source_volume_id, source.volume_id);
    assert_eq!(snap.size_bytes, 16 * MIB);
    assert!(snap.ready_to_use);
    assert!(snap.creation_time.as_ref().is_some_and(|t| t.seconds > 0), "{:?}", snap.creation_time);
    let again = expect_ok(create_snapshot(&mut c, &source.volume_id, "snap-1").await, "repeated CreateSnapshot")
        .snapshot
        .unwrap();
    assert_eq!(again.snapshot_id, snap.snapshot_id);
    assert_eq!(again.size_bytes, snap.size_bytes);
    let other = create(&mut c, create_req("snap-other", 8 * MIB)).await;
    expect_code(
        create_snapshot(&mut c, &other.volume_id, "snap-1").await,
        Code::AlreadyExists,
        "snapshot name taken by another source",
    );
    expect_code(
        create_snapshot(&mut c, UNKNOWN_VOLUME, "snap-x").await,
        Code::NotFound,
        "snapshot of an unknown volume",
    );
    let snap_other =
        expect_ok(create_snapshot(&mut c, &other.volume_id, "snap-2").await, "CreateSnapshot 2").snapshot.unwrap();

    // The snapshot is a point in time: change the source afterwards.
    write_at(&source_file, offsets[1], &pattern(200));
    let snap_later =
        expect_ok(create_snapshot(&mut c, &source.volume_id, "snap-3").await, "CreateSnapshot 3").snapshot.unwrap();

    // ListSnapshots: all, by snapshot id, by source, paginated.
    let all = list_snapshots(&mut c, csi::ListSnapshotsRequest::default()).await;
    assert_eq!(
        set(snapshot_ids(&all)),
        set([snap.snapshot_id.clone(), snap_other.snapshot_id.clone(), snap_later.snapshot_id.clone()])
    );
    assert!(all.next_token.is_empty());
    let by_id = list_snapshots(
        &mut c,
        csi::ListSnapshotsRequest { snapshot_id: snap.snapshot_id.clone(), ..Default::default() },
    )
    .await;
    assert_eq!(snapshot_ids(&by_id), vec![snap.snapshot_id.clone()]);
    let listed = by_id.entries[0].snapshot.as_ref().unwrap();
    assert_eq!(
        (listed.source_volume_id.as_str(), listed.size_bytes, listed.ready_to_use),
        (source.volume_id.as_str(), 16 * MIB, true)
    );
    let by_source = list_snapshots(
        &mut c,
        csi::ListSnapshotsRequest { source_volume_id: source.volume_id.clone(), ..Default::default() },
    )
    .await;
    assert_eq!(set(snapshot_ids(&by_source)), set([snap.snapshot_id.clone(), snap_later.snapshot_id.clone()]));
    for entry in &by_source.entries {
        assert_eq!(entry.snapshot.as_ref().unwrap().source_volume_id, source.volume_id);
    }
    let none = list_snapshots(
        &mut c,
        csi::ListSnapshotsRequest { snapshot_id: UNKNOWN_SNAPSHOT.into(), ..Default::default() },
    )
    .await;
    assert!(none.entries.is_empty(), "an unknown snapshot id matches nothing: {none:?}");
    let none = list_snapshots(
        &mut c,
        csi::ListSnapshotsRequest { source_volume_id: UNKNOWN_VOLUME.into(), ..Default::default() },
    )
    .await;
    assert!(none.entries.is_empty(), "an unknown source matches nothing: {none:?}");
    let mut seen = Vec::new();
    let mut token = String::new();
    for page in 0.. {
        assert!(page < 10, "snapshot pagination did not end: {seen:?}");
        let response = list_snapshots(
            &mut c,
            csi::ListSnapshotsRequest { max_entries: 2, starting_token: token.clone(), ..Default::default() },
        )
        .await;
        assert!(response.entries.len() <= 2);
        seen.extend(snapshot_ids(&response));
        if response.next_token.is_empty() {
            break;
        }
        token = response.next_token;
    }
    assert_eq!(seen.len(), 3, "each snapshot exactly once: {seen:?}");
    assert_eq!(set(seen), set(snapshot_ids(&all)));
    expect_code(
        c.list_snapshots(csi::ListSnapshotsRequest { starting_token: "garbage".into(), ..Default::default() }).await,
        Code::Aborted,
        "ListSnapshots with a foreign token",
    );
    expect_code(
        c.list_snapshots(csi::ListSnapshotsRequest { max_entries: -1, ..Default::default() }).await,
        Code::InvalidArgument,
        "ListSnapshots with negative max_entries",
    );

    // GetSnapshot.
    let got = expect_ok(
        c.get_snapshot(csi::GetSnapshotRequest { snapshot_id: snap.snapshot_id.clone(), ..Default::default() }).await,
        "GetSnapshot",
    )
    .snapshot
    .expect("snapshot");
    assert_eq!(
        (got.snapshot_id.as_str(), got.source_volume_id.as_str(), got.size_bytes),
        (snap.snapshot_id.as_str(), source.volume_id.as_str(), 16 * MIB)
    );
    expect_code(
        c.get_snapshot(csi::GetSnapshotRequest { snapshot_id: UNKNOWN_SNAPSHOT.into(), ..Default::default() }).await,
        Code::NotFound,
        "GetSnapshot unknown",
    );

    // Restore to a larger size: the data of the snapshot's moment.
    let restored = create(
        &mut c,
        csi::CreateVolumeRequest {
            volume_content_source: from_snapshot(&snap.snapshot_id),
            ..create_req("restored", 32 * MIB)
        },
    )
    .await;
    assert_eq!(restored.capacity_bytes, 32 * MIB);
    assert_eq!(restored.content_source, from_snapshot(&snap.snapshot_id));
    let restored_file = backing_file(&root, local_id(&restored.volume_id, "loopfile"));
    assert_ne!(restored_file, source_file);
    assert_eq!(std::fs::metadata(&restored_file).unwrap().len(), (32 * MIB) as u64);
    for (i, offset) in offsets.iter().enumerate() {
        assert_eq!(read_at(&restored_file, *offset, 4096), pattern(i as u8), "restored data at offset {offset}");
    }
    assert_eq!(read_at(&restored_file, 20 * MIB as u64, 4096), vec![0u8; 4096], "the grown part is zero");
    // A retried restore is idempotent; the same name from other content is not the same volume.
    let again = create(
        &mut c,
        csi::CreateVolumeRequest {
            volume_content_source: from_snapshot(&snap.snapshot_id),
            ..create_req("restored", 32 * MIB)
        },
    )
    .await;
    assert_eq!(again.volume_id, restored.volume_id);
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_content_source: from_snapshot(&snap_later.snapshot_id),
            ..create_req("restored", 32 * MIB)
        })
        .await,
        Code::AlreadyExists,
        "same name, another snapshot",
    );
    expect_code(
        c.create_volume(create_req("restored", 32 * MIB)).await,
        Code::AlreadyExists,
        "same name, no content source",
    );
    // Restoring into less space than the content needs.
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_content_source: from_snapshot(&snap.snapshot_id),
            ..create_req("restored-small", 8 * MIB)
        })
        .await,
        Code::OutOfRange,
        "restore into a smaller volume",
    );
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_content_source: from_snapshot(UNKNOWN_SNAPSHOT),
            ..create_req("restored-none", 16 * MIB)
        })
        .await,
        Code::NotFound,
        "restore from an unknown snapshot",
    );

    // Clone: the source's current data.
    let clone = create(
        &mut c,
        csi::CreateVolumeRequest {
            volume_content_source: from_volume(&source.volume_id),
            ..create_req("clone", 16 * MIB)
        },
    )
    .await;
    assert_eq!(clone.capacity_bytes, 16 * MIB);
    assert_eq!(clone.content_source, from_volume(&source.volume_id));
    let clone_file = backing_file(&root, local_id(&clone.volume_id, "loopfile"));
    assert_eq!(read_at(&clone_file, offsets[0], 4096), pattern(0));
    assert_eq!(read_at(&clone_file, offsets[1], 4096), pattern(200), "a clone has the source's current content");
    assert_eq!(read_at(&clone_file, offsets[2], 4096), pattern(2));
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_content_source: from_volume(UNKNOWN_VOLUME),
            ..create_req("clone-none", 16 * MIB)
        })
        .await,
        Code::NotFound,
        "clone of an unknown volume",
    );
    // The clone is a copy: writing it leaves the source alone.
    write_at(&clone_file, offsets[0], &pattern(99));
    assert_eq!(read_at(&source_file, offsets[0], 4096), pattern(0));

    // DeleteSnapshot, repeatable; restored volumes do not depend on it.
    let delete_snapshot = |id: &str| csi::DeleteSnapshotRequest { snapshot_id: id.into(), ..Default::default() };
    expect_ok(c.delete_snapshot(delete_snapshot(&snap.snapshot_id)).await, "DeleteSnapshot");
    expect_ok(c.delete_snapshot(delete_snapshot(&snap.snapshot_id)).await, "repeated DeleteSnapshot");
    expect_ok(c.delete_snapshot(delete_snapshot(UNKNOWN_SNAPSHOT)).await, "DeleteSnapshot unknown");
    expect_ok(c.delete_snapshot(delete_snapshot("garbage")).await, "DeleteSnapshot garbage");
    assert!(files_mentioning(&root, &snap_local).is_empty(), "the deleted snapshot's image is gone");
    expect_code(
        c.get_snapshot(csi::GetSnapshotRequest { snapshot_id: snap.snapshot_id.clone(), ..Default::default() }).await,
        Code::NotFound,
        "GetSnapshot after delete",
    );
    let by_id = list_snapshots(
        &mut c,
        csi::ListSnapshotsRequest { snapshot_id: snap.snapshot_id.clone(), ..Default::default() },
    )
    .await;
    assert!(by_id.entries.is_empty(), "{by_id:?}");
    assert_eq!(read_at(&restored_file, offsets[1], 4096), pattern(1));

    // A snapshot outlives its source volume.
    expect_ok(delete_volume(&mut c, &source.volume_id).await, "DeleteVolume of the source");
    assert!(!source_file.exists());
    let late = create(
        &mut c,
        csi::CreateVolumeRequest {
            volume_content_source: from_snapshot(&snap_later.snapshot_id),
            ..create_req("from-late", 16 * MIB)
        },
    )
    .await;
    let late_file = backing_file(&root, local_id(&late.volume_id, "loopfile"));
    assert_eq!(read_at(&late_file, offsets[1], 4096), pattern(200));
    assert_eq!(read_at(&late_file, offsets[2], 4096), pattern(2));
}

#[tokio::test]
async fn required_fields_and_size_limits_are_invalid_argument() {
    let host = Host::start_default().await;
    let mut c = host.controller().await;
    // A real volume and snapshot, so every error below is about the missing field alone.
    let volume = create(&mut c, create_req("existing", 4 * MIB)).await;
    let snapshot = expect_ok(create_snapshot(&mut c, &volume.volume_id, "existing-snap").await, "CreateSnapshot")
        .snapshot
        .unwrap();
    let id = volume.volume_id.clone();
    let invalid = Code::InvalidArgument;

    // CreateVolume
    expect_code(c.create_volume(create_req("", 4 * MIB)).await, invalid, "CreateVolume without a name");
    expect_code(
        c.create_volume(csi::CreateVolumeRequest { volume_capabilities: vec![], ..create_req("no-caps", 4 * MIB) })
            .await,
        invalid,
        "CreateVolume without capabilities",
    );
    let no_type = csi::VolumeCapability { access_type: None, ..rw_mount() };
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_capabilities: vec![no_type.clone()],
            ..create_req("no-type", 4 * MIB)
        })
        .await,
        invalid,
        "CreateVolume with a capability without access type",
    );
    let no_mode = csi::VolumeCapability { access_mode: None, ..rw_mount() };
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_capabilities: vec![no_mode.clone()],
            ..create_req("no-mode", 4 * MIB)
        })
        .await,
        invalid,
        "CreateVolume with a capability without access mode",
    );
    let unknown_mode = mount_cap(AccessMode::Unknown);
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_capabilities: vec![unknown_mode],
            ..create_req("unknown-mode", 4 * MIB)
        })
        .await,
        invalid,
        "CreateVolume with access mode UNKNOWN",
    );
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_capabilities: vec![rw_mount(), no_mode.clone()],
            ..create_req("one-bad-cap", 4 * MIB)
        })
        .await,
        invalid,
        "CreateVolume with one bad capability among good ones",
    );
    // DeleteVolume
    expect_code(delete_volume(&mut c, "").await, invalid, "DeleteVolume without an id");
    // ValidateVolumeCapabilities
    expect_code(
        c.validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_capabilities: vec![rw_mount()],
            ..Default::default()
        })
        .await,
        invalid,
        "ValidateVolumeCapabilities without an id",
    );
    expect_code(
        c.validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await,
        invalid,
        "ValidateVolumeCapabilities without capabilities",
    );
    expect_code(
        c.validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: id.clone(),
            volume_capabilities: vec![no_type],
            ..Default::default()
        })
        .await,
        invalid,
        "ValidateVolumeCapabilities with a capability without access type",
    );
    // CreateSnapshot
    expect_code(create_snapshot(&mut c, &id, "").await, invalid, "CreateSnapshot without a name");
    expect_code(create_snapshot(&mut c, "", "snap-no-source").await, invalid, "CreateSnapshot without a source");
    // DeleteSnapshot
    expect_code(
        c.delete_snapshot(csi::DeleteSnapshotRequest::default()).await,
        invalid,
        "DeleteSnapshot without an id",
    );
    // ControllerExpandVolume
    expect_code(
        c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
            capacity_range: range(8 * MIB, 0),
            ..Default::default()
        })
        .await,
        invalid,
        "ControllerExpandVolume without an id",
    );
    expect_code(
        c.controller_expand_volume(csi::ControllerExpandVolumeRequest { volume_id: id.clone(), ..Default::default() })
            .await,
        invalid,
        "ControllerExpandVolume without a capacity range",
    );
    // ControllerGetVolume
    expect_code(get_volume(&mut c, "").await, invalid, "ControllerGetVolume without an id");
    // GetSnapshot
    expect_code(c.get_snapshot(csi::GetSnapshotRequest::default()).await, invalid, "GetSnapshot without an id");

    // Nothing above changed the volume or made new objects.
    let volumes = list_all_volumes(&mut c).await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].capacity_bytes, 4 * MIB);
    let snapshots = list_snapshots(&mut c, csi::ListSnapshotsRequest::default()).await;
    assert_eq!(snapshot_ids(&snapshots), vec![snapshot.snapshot_id.clone()]);

    // Names: 128 bytes are fine, 129 are not.
    let name_128 = "n".repeat(128);
    let v = create(&mut c, create_req(&name_128, 4 * MIB)).await;
    local_id(&v.volume_id, "loopfile");
    assert!(v.volume_id.len() <= 128, "volume ids fit the CSI string limit: {:?}", v.volume_id);
    expect_code(
        c.create_volume(create_req(&"n".repeat(129), 4 * MIB)).await,
        invalid,
        "CreateVolume with a 129-byte name",
    );
    expect_code(create_snapshot(&mut c, &id, &"s".repeat(129)).await, invalid, "CreateSnapshot with a 129-byte name");
    expect_code(
        delete_volume(&mut c, &format!("loopfile:{}", "v".repeat(120))).await,
        invalid,
        "DeleteVolume with a 129-byte id",
    );

    // Parameter maps: at most 4 KiB.
    let big = "x".repeat(4097);
    expect_code(
        c.create_volume(create_req_with("big-params", 4 * MIB, &[("k", &big)])).await,
        invalid,
        "CreateVolume with parameters over 4 KiB",
    );
    expect_code(
        c.create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: id.clone(),
            name: "big-snap-params".into(),
            parameters: params(&[("k", &big)]),
            ..Default::default()
        })
        .await,
        invalid,
        "CreateSnapshot with parameters over 4 KiB",
    );
    let big_caps = csi::GetCapacityRequest {
        volume_capabilities: vec![rw_mount()],
        parameters: params(&[("k", &big)]),
        accessible_topology: None,
    };
    expect_code(c.get_capacity(big_caps).await, invalid, "GetCapacity with parameters over 4 KiB");

    // Backend selection and parameter hygiene.
    expect_code(
        c.create_volume(create_req_with("unknown-backend", 4 * MIB, &[("backend", "nosuchbackend")])).await,
        invalid,
        "CreateVolume naming an unknown backend",
    );
    let explicit = create(&mut c, create_req_with("explicit-backend", 4 * MIB, &[("backend", "loopfile")])).await;
    local_id(&explicit.volume_id, "loopfile");
    // loopfile rejects parameters it does not know ...
    let status = expect_code(
        c.create_volume(create_req_with("unknown-param", 4 * MIB, &[("colour", "blue")])).await,
        invalid,
        "CreateVolume with a parameter loopfile does not know",
    );
    assert!(status.message().contains("colour"), "the rejection names the parameter: {:?}", status.message());
    // ... so the CO's own keys must have been stripped before it saw them.
    let co = create(
        &mut c,
        create_req_with(
            "pvc-params",
            4 * MIB,
            &[
                ("csi.storage.k8s.io/pvc/name", "data-claim"),
                ("csi.storage.k8s.io/pvc/namespace", "default"),
                ("csi.storage.k8s.io/pv/name", "pvc-1234"),
            ],
        ),
    )
    .await;
    local_id(&co.volume_id, "loopfile");

    // Capabilities loopfile cannot serve.
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_capabilities: vec![mount_cap(AccessMode::MultiNodeMultiWriter)],
            ..create_req("mnmw", 4 * MIB)
        })
        .await,
        invalid,
        "CreateVolume with MULTI_NODE_MULTI_WRITER",
    );
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            volume_capabilities: vec![mount_cap_fs(AccessMode::SingleNodeWriter, "ntfs")],
            ..create_req("ntfs", 4 * MIB)
        })
        .await,
        invalid,
        "CreateVolume with an unsupported filesystem",
    );
    let ext4 = create(
        &mut c,
        csi::CreateVolumeRequest {
            volume_capabilities: vec![mount_cap_fs(AccessMode::SingleNodeWriter, "ext4")],
            ..create_req("ext4", 4 * MIB)
        },
    )
    .await;
    local_id(&ext4.volume_id, "loopfile");
}

#[tokio::test]
async fn racing_creates_make_one_volume_per_name() {
    let host = Host::start_default().await;
    let channel = host.channel().await;

    // 16 racing creates of one name: one volume; every success names it, the rest are ABORTED.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = ControllerClient::new(channel.clone());
        tasks.push(tokio::spawn(async move { c.create_volume(create_req("contended", 8 * MIB)).await }));
    }
    let mut ids = Vec::new();
    let mut aborted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(response) => ids.push(response.into_inner().volume.expect("volume").volume_id),
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted, "a racing create may only be ABORTED: {:?}", status.message());
                aborted += 1;
            }
        }
    }
    eprintln!("racing creates of one name: {} succeeded, {aborted} aborted", ids.len());
    assert!(!ids.is_empty(), "at least one racing create succeeds ({aborted} aborted)");
    assert_eq!(set(ids.iter().cloned()).len(), 1, "every success names the same volume: {ids:?}");
    let mut c = ControllerClient::new(channel.clone());
    let all = list_all_volumes(&mut c).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].volume_id, ids[0]);
    // A retry after the race returns it too.
    assert_eq!(create(&mut c, create_req("contended", 8 * MIB)).await.volume_id, ids[0]);

    // Racing creates of different names all succeed.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut c = ControllerClient::new(channel.clone());
        tasks.push(tokio::spawn(async move { c.create_volume(create_req(&format!("parallel-{i}"), 8 * MIB)).await }));
    }
    let mut parallel = Vec::new();
    for task in tasks {
        parallel.push(expect_ok(task.await.expect("task"), "parallel CreateVolume").volume.expect("volume").volume_id);
    }
    assert_eq!(set(parallel.iter().cloned()).len(), 16, "16 names, 16 volumes: {parallel:?}");
    let all = list_all_volumes(&mut c).await;
    assert_eq!(all.len(), 17);
    for id in &parallel {
        assert_eq!(
            backing_file(&volumes_root(&host), local_id(id, "loopfile")).metadata().unwrap().len(),
            (8 * MIB) as u64
        );
    }
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    const SECRET: &str = "hunter2-secret";
    let mut host = Host::new();
    host.rust_log("debug");
    host.start().await;
    let mut c = host.controller().await;
    let secrets = params(&[("password", SECRET)]);

    let volume = expect_ok(
        c.create_volume(csi::CreateVolumeRequest { secrets: secrets.clone(), ..create_req("secretive", 4 * MIB) })
            .await,
        "CreateVolume with secrets",
    )
    .volume
    .unwrap();
    let snapshot = expect_ok(
        c.create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: "secretive-snap".into(),
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await,
        "CreateSnapshot with secrets",
    )
    .snapshot
    .unwrap();
    // A failing call must not leak them either.
    expect_code(
        c.create_volume(csi::CreateVolumeRequest {
            secrets: secrets.clone(),
            ..create_req_with("secretive-bad", 4 * MIB, &[("colour", "blue")])
        })
        .await,
        Code::InvalidArgument,
        "CreateVolume with a bad parameter and secrets",
    );
    expect_ok(
        c.delete_snapshot(csi::DeleteSnapshotRequest { snapshot_id: snapshot.snapshot_id, secrets: secrets.clone() })
            .await,
        "DeleteSnapshot with secrets",
    );
    expect_ok(
        c.delete_volume(csi::DeleteVolumeRequest { volume_id: volume.volume_id, secrets }).await,
        "DeleteVolume with secrets",
    );

    // Debug logging is on and recorded the calls ...
    assert!(host.log_eventually_contains("DeleteVolume", Duration::from_secs(5)).await, "log:\n{}", host.log());
    let log = host.log();
    let create_calls = log_lines(&log, &["CreateVolume", "secretive"]);
    assert!(!create_calls.is_empty(), "the CreateVolume request was logged at debug level; log:\n{log}");
    assert!(
        !log_lines(&log, &["CreateSnapshot", "secretive-snap"]).is_empty(),
        "the CreateSnapshot request was logged"
    );
    // ... but never the secret value.
    let leaks = log_lines(&log, &["hunter2"]);
    assert!(leaks.is_empty(), "the secret value leaked into the log:\n{}", leaks.join("\n"));
}
