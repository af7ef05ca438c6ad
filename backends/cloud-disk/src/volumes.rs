//! The volume lifecycle: create (empty or restored from a snapshot), find, delete, get and
//! list. A volume's id is its EBS volume id; its CSI name is the `CSIVolumeName` tag, which
//! is how a retried create finds what an earlier attempt made, and CreateVolume's client
//! token (derived from the name) keeps two racing attempts from making two volumes.

use kit::types::{ContentSource, Error, Volume, VolumePage};
use sha2::{Digest, Sha256};

use crate::context::Ctx;
use crate::ec2::{Ec2, NewVolume};
use crate::exports::csi::backend::backend::CreateVolumeRequest;
use crate::ids;
use crate::model;
use crate::paging;
use crate::parameters::CreateParameters;
use crate::sizing;
use crate::support::{self, NAME_TAG};
use crate::topology;
use crate::wait::{self, Poll};

/// Creates a volume, or returns the one an earlier create of the same name made when the
/// request is compatible with it (size in range, same type, same snapshot).
pub fn create(ctx: &Ctx, request: CreateVolumeRequest) -> Result<Volume, Error> {
    if request.name.is_empty() {
        return Err(Error::InvalidArgument("volume name is empty".into()));
    }
    support::check_capabilities(&request.capabilities)?;
    let parameters =
        CreateParameters::parse(&request.parameters, &request.mutable_parameters, ctx.settings.default_volume_type)?;
    let snapshot_id = match &request.content_source {
        None => None,
        Some(ContentSource::Snapshot(id)) => Some(id.as_str()),
        Some(ContentSource::Volume(_)) => {
            return Err(Error::InvalidArgument(
                "EBS cannot clone a volume: take a snapshot of it and restore that".into(),
            ));
        }
    };
    let zone = topology::pick_zone(request.accessibility.as_ref())?;
    let ec2 = Ec2::connect(ctx)?;

    if let Some(existing) = named(&ec2, &request.name)? {
        let compatible = sizing::fits(&request.capacity, existing.size_gib)
            && existing.volume_type == parameters.volume_type.name()
            && existing.snapshot_id.as_deref() == snapshot_id;
        if !compatible {
            return Err(Error::AlreadyExists(format!(
                "volume {:?} already exists ({}, {} GiB {}{}) with a different size, type or source",
                request.name,
                existing.id,
                existing.size_gib,
                existing.volume_type,
                existing.snapshot_id.map(|id| format!(" from {id}")).unwrap_or_default()
            )));
        }
        return available(ctx, &ec2, existing).map(|volume| to_volume(&volume));
    }

    let snapshot_gib = match snapshot_id {
        Some(id) => require_snapshot(&ec2, id)?.size_gib,
        None => 0,
    };
    let size_gib = sizing::new_volume_gib(&request.capacity, parameters.volume_type, snapshot_gib)?;
    let tags = support::tags(&ctx.settings, NAME_TAG, &request.name);
    let created = ec2.create_volume(&NewVolume {
        zone: &zone,
        size_gib,
        parameters: &parameters,
        snapshot_id,
        client_token: &client_token(&request.name),
        tags: &tags,
    })?;
    ctx.platform.info(&format!(
        "creating volume {:?} ({}, {size_gib} GiB {} in {zone})",
        request.name,
        created.id,
        parameters.volume_type.name()
    ));
    available(ctx, &ec2, created).map(|volume| to_volume(&volume))
}

/// The volume a create of `name` made, if it exists.
pub fn find(ctx: &Ctx, name: &str) -> Result<Option<Volume>, Error> {
    let ec2 = Ec2::connect(ctx)?;
    Ok(named(&ec2, name)?.map(|volume| to_volume(&volume)))
}

/// Deletes a volume; one that does not exist (or an id EC2 never issues) is already gone.
/// An attached volume is `failed-precondition` (AWS's `VolumeInUse`).
pub fn delete(ctx: &Ctx, volume_id: &str) -> Result<(), Error> {
    if !ids::is_volume(volume_id) {
        return Ok(());
    }
    let ec2 = Ec2::connect(ctx)?;
    match ec2.delete_volume(volume_id) {
        Ok(()) => {
            ctx.platform.info(&format!("deleted volume {volume_id}"));
            Ok(())
        }
        Err(failure) if failure.is("InvalidVolume.NotFound") => Ok(()),
        Err(failure) => Err(failure.into()),
    }
}

pub fn get(ctx: &Ctx, volume_id: &str) -> Result<Volume, Error> {
    let ec2 = Ec2::connect(ctx)?;
    require(&ec2, volume_id).map(|volume| to_volume(&volume))
}

/// The volumes this backend made (those carrying a CSI name), page by page.
pub fn list(ctx: &Ctx, max_entries: u32, starting_token: &str) -> Result<VolumePage, Error> {
    let ec2 = Ec2::connect(ctx)?;
    let (volumes, next_token) = paging::list(max_entries, starting_token, |page| ec2.managed_volumes(page))?;
    Ok(VolumePage { entries: volumes.iter().map(to_volume).collect(), next_token })
}

/// The EBS volume `volume_id`, which must exist.
pub fn require(ec2: &Ec2, volume_id: &str) -> Result<model::Volume, Error> {
    let volume = if ids::is_volume(volume_id) { ec2.volume(volume_id)? } else { None };
    volume.ok_or_else(|| Error::NotFound(format!("volume {volume_id:?} does not exist")))
}

/// The volume carrying CSI name `name`, if one does.
fn named(ec2: &Ec2, name: &str) -> Result<Option<model::Volume>, Error> {
    let mut volumes = ec2.volumes_named(name)?;
    if volumes.len() > 1 {
        let ids: Vec<&str> = volumes.iter().map(|volume| volume.id.as_str()).collect();
        return Err(Error::Internal(format!("several volumes carry {NAME_TAG}={name:?}: {}", ids.join(", "))));
    }
    Ok(volumes.pop())
}

/// The snapshot a volume is restored from, which must exist.
fn require_snapshot(ec2: &Ec2, snapshot_id: &str) -> Result<model::Snapshot, Error> {
    let snapshot = if ids::is_snapshot(snapshot_id) { ec2.snapshot(snapshot_id)? } else { None };
    snapshot.ok_or_else(|| Error::NotFound(format!("source snapshot {snapshot_id:?} does not exist")))
}

/// `volume` once it is available (or already attached), waiting while it is created.
fn available(ctx: &Ctx, ec2: &Ec2, volume: model::Volume) -> Result<model::Volume, Error> {
    let id = volume.id.clone();
    match readiness(volume)? {
        Poll::Ready(volume) => Ok(volume),
        Poll::Pending(state) => {
            let what = format!("volume {id} to become available");
            wait::until(ctx, &what, &state, || match ec2.volume(&id)? {
                Some(volume) => readiness(volume),
                // Just created: EC2's reads can lag its writes for a moment.
                None => Ok(Poll::Pending("not visible yet".into())),
            })
        }
    }
}

fn readiness(volume: model::Volume) -> Result<Poll<model::Volume>, Error> {
    match volume.state.as_str() {
        "available" | "in-use" => Ok(Poll::Ready(volume)),
        "error" => Err(Error::Internal(format!(
            "EBS failed to create volume {}: it is in state \"error\"; delete it and retry",
            volume.id
        ))),
        "deleting" | "deleted" => {
            Err(Error::Aborted(format!("volume {} is being deleted; retry once it is gone", volume.id)))
        }
        state => Ok(Poll::Pending(state.to_owned())),
    }
}

/// CreateVolume's idempotency token for a CSI name: hex SHA-256, 64 characters (EC2's limit).
fn client_token(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

pub fn to_volume(volume: &model::Volume) -> Volume {
    Volume {
        id: volume.id.clone(),
        capacity_bytes: sizing::bytes(volume.size_gib),
        context: Vec::new(),
        content_source: volume.snapshot_id.clone().map(ContentSource::Snapshot),
        accessible_topology: vec![topology::segment(&volume.zone)],
    }
}

#[cfg(test)]
mod tests {
    use kit::types::{AccessMode, AccessType, CapacityRange, MountAccess, TopologyRequirement, VolumeCapability};

    use super::*;
    use crate::fake::{Delays, Fixture, Scripted, ZONE};
    use crate::sizing::GIB;

    fn request(name: &str, required_bytes: u64) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.into(),
            capacity: CapacityRange { required_bytes, limit_bytes: 0 },
            capabilities: vec![VolumeCapability {
                access_type: AccessType::Mount(MountAccess { fs_type: "ext4".into(), mount_flags: Vec::new() }),
                access_mode: AccessMode::SingleNodeWriter,
            }],
            parameters: Vec::new(),
            mutable_parameters: Vec::new(),
            content_source: None,
            accessibility: Some(TopologyRequirement {
                requisite: vec![topology::segment(ZONE), topology::segment("us-east-1b")],
                preferred: vec![topology::segment(ZONE)],
            }),
        }
    }

    fn with_parameters(mut request: CreateVolumeRequest, parameters: &[(&str, &str)]) -> CreateVolumeRequest {
        request.parameters = parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        request
    }

    #[test]
    fn create_tags_the_volume_and_waits_until_it_is_available() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { creating: 2, ..Delays::default() });
        let volume = create(&fixture.ctx(), request("pvc-1", 10 * GIB)).unwrap();
        assert_eq!(volume.capacity_bytes, 10 * GIB);
        assert_eq!(volume.accessible_topology, [topology::segment(ZONE)]);
        assert_eq!(volume.content_source, None);
        assert!(volume.context.is_empty());
        assert_eq!(fixture.ec2.volume(&volume.id).unwrap().state, "available");
        assert_eq!(
            fixture.ec2.actions(),
            ["DescribeVolumes", "CreateVolume", "DescribeVolumes", "DescribeVolumes", "DescribeVolumes"]
        );
        assert_eq!(fixture.platform.slept.borrow().len(), 3);

        let lookup = &fixture.ec2.calls()[0].1;
        assert_eq!(lookup["Filter.1.Name"], "tag:CSIVolumeName");
        assert_eq!(lookup["Filter.1.Value.1"], "pvc-1");
        let form = fixture.ec2.last("CreateVolume");
        let expected = [
            ("AvailabilityZone", ZONE),
            ("Size", "10"),
            ("VolumeType", "gp3"),
            ("ClientToken", &client_token("pvc-1")),
            ("TagSpecification.1.ResourceType", "volume"),
            ("TagSpecification.1.Tag.1.Key", "CSIVolumeName"),
            ("TagSpecification.1.Tag.1.Value", "pvc-1"),
            ("TagSpecification.1.Tag.2.Key", "wasmcsi.dev/managed"),
            ("TagSpecification.1.Tag.2.Value", "true"),
        ];
        for (key, value) in expected {
            assert_eq!(form.get(key).map(String::as_str), Some(value), "{key}");
        }
        for absent in ["Iops", "Throughput", "Encrypted", "KmsKeyId", "SnapshotId"] {
            assert!(!form.contains_key(absent), "{absent}");
        }
        assert_eq!(client_token("pvc-1").len(), 64);
        assert!(fixture.platform.logs.borrow()[0].starts_with("creating volume \"pvc-1\""));
        assert_eq!(fixture.ec2.bad_signatures(), 0);
    }

    #[test]
    fn parameters_reach_create_volume() {
        let fixture = Fixture::new();
        let request = with_parameters(
            request("pvc-1", 0),
            &[("type", "io2"), ("iops", "500"), ("encrypted", "true"), ("kmsKeyId", "alias/csi")],
        );
        let volume = create(&fixture.ctx(), request).unwrap();
        assert_eq!(volume.capacity_bytes, 4 * GIB);
        let form = fixture.ec2.last("CreateVolume");
        assert_eq!(form["VolumeType"], "io2");
        assert_eq!(form["Size"], "4");
        assert_eq!(form["Iops"], "500");
        assert_eq!(form["Encrypted"], "true");
        assert_eq!(form["KmsKeyId"], "alias/csi");
    }

    #[test]
    fn configured_tags_are_added() {
        let fixture = Fixture::new();
        let mut settings = crate::settings::Settings::for_tests();
        settings.tags = vec![("team".into(), "storage".into())];
        let ctx = crate::fake::ctx_with(&fixture.platform, &fixture.ec2, settings);
        let volume = create(&ctx, request("pvc-1", GIB)).unwrap();
        let tags = fixture.ec2.volume(&volume.id).unwrap().tags;
        assert_eq!(tags.len(), 3);
        assert!(tags.contains(&("team".into(), "storage".into())));
    }

    #[test]
    fn create_is_idempotent_by_name() {
        let fixture = Fixture::new();
        let volume = create(&fixture.ctx(), request("pvc-1", 10 * GIB)).unwrap();
        assert_eq!(create(&fixture.ctx(), request("pvc-1", 10 * GIB)).unwrap(), volume);
        assert_eq!(create(&fixture.ctx(), request("pvc-1", 5 * GIB)).unwrap(), volume);
        assert_eq!(fixture.ec2.count("CreateVolume"), 1);
        assert_eq!(fixture.ec2.volumes().len(), 1);

        let snapshot = fixture.ec2.add_snapshot(&volume.id, 1, &[]);
        let mut from_snapshot = request("pvc-1", 10 * GIB);
        from_snapshot.content_source = Some(ContentSource::Snapshot(snapshot));
        for other in
            [request("pvc-1", 20 * GIB), with_parameters(request("pvc-1", 10 * GIB), &[("type", "gp2")]), from_snapshot]
        {
            let error = fixture.checked(create(&fixture.ctx(), other));
            assert!(matches!(&error, Error::AlreadyExists(m) if m.contains(&volume.id)), "{error:?}");
        }
        assert_eq!(fixture.ec2.count("CreateVolume"), 1);
    }

    #[test]
    fn a_lost_create_is_repeated_with_the_same_client_token() {
        let fixture = Fixture::new();
        // The first CreateVolume makes the volume but its answer never arrives.
        fixture.ec2.script("CreateVolume", Scripted::LostAnswer);
        let volume = create(&fixture.ctx(), request("pvc-1", GIB)).unwrap();
        let tokens: Vec<String> = fixture
            .ec2
            .calls()
            .into_iter()
            .filter(|(action, _)| action == "CreateVolume")
            .map(|(_, form)| form["ClientToken"].clone())
            .collect();
        assert_eq!(tokens, [client_token("pvc-1"), client_token("pvc-1")]);
        assert_eq!(fixture.ec2.volumes().len(), 1);
        assert_eq!(fixture.ec2.volumes()[0].id, volume.id);
    }

    #[test]
    fn the_client_token_catches_what_the_tag_lookup_misses() {
        let fixture = Fixture::new();
        let volume = create(&fixture.ctx(), request("pvc-1", GIB)).unwrap();
        // As if the tag lookup ran before EC2's index had the new volume.
        fixture.ec2.edit_volume(&volume.id, |v| v.tags.clear());
        assert_eq!(create(&fixture.ctx(), request("pvc-1", GIB)).unwrap(), volume);
        let error = fixture.checked(create(&fixture.ctx(), request("pvc-1", 2 * GIB)));
        assert!(matches!(&error, Error::AlreadyExists(m) if m.contains("IdempotentParameterMismatch")), "{error:?}");
        assert_eq!(fixture.ec2.volumes().len(), 1);
    }

    #[test]
    fn an_exhausted_budget_is_unavailable_and_the_retry_completes() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { creating: 1000, ..Delays::default() });
        let error = fixture.checked(create(&fixture.ctx(), request("pvc-1", GIB)));
        let Error::Unavailable(message) = &error else {
            panic!("expected unavailable, got {error:?}");
        };
        assert!(message.contains("still creating: retry"), "{message}");
        assert!(fixture.platform.total_slept() <= std::time::Duration::from_secs(45));

        let id = fixture.ec2.volumes()[0].id.clone();
        fixture.ec2.edit_volume(&id, |v| v.state = "available".into());
        let volume = create(&fixture.ctx(), request("pvc-1", GIB)).unwrap();
        assert_eq!(volume.id, id);
        assert_eq!(fixture.ec2.count("CreateVolume"), 1);
    }

    #[test]
    fn throttling_and_server_errors_are_retried() {
        let fixture = Fixture::new();
        fixture.ec2.script("DescribeVolumes", Scripted::throttle());
        fixture.ec2.script("DescribeVolumes", Scripted::throttle());
        fixture.ec2.script("CreateVolume", Scripted::server_error());
        create(&fixture.ctx(), request("pvc-1", GIB)).unwrap();
        assert_eq!(
            fixture.ec2.actions(),
            [
                "DescribeVolumes",
                "DescribeVolumes",
                "DescribeVolumes",
                "CreateVolume",
                "CreateVolume",
                "DescribeVolumes"
            ]
        );
        let warnings = fixture.platform.logs.borrow().iter().filter(|l| l.starts_with("WARN")).count();
        assert_eq!(warnings, 3);
        for log in fixture.platform.logs.borrow().iter() {
            crate::fake::assert_no_credentials(log);
        }
    }

    #[test]
    fn endless_throttling_is_unavailable() {
        let fixture = Fixture::new();
        for _ in 0..10 {
            fixture.ec2.script("DescribeVolumes", Scripted::throttle());
        }
        let error = fixture.checked(create(&fixture.ctx(), request("pvc-1", GIB)));
        assert!(matches!(&error, Error::Unavailable(m) if m.contains("RequestLimitExceeded")), "{error:?}");
        assert_eq!(fixture.ec2.count("DescribeVolumes"), 5);
    }

    #[test]
    fn bad_requests() {
        let fixture = Fixture::new();
        let mut no_zone = request("pvc-1", GIB);
        no_zone.accessibility = None;
        let mut clone = request("pvc-1", GIB);
        clone.content_source = Some(ContentSource::Volume("vol-0123456789abcdef0".into()));
        let mut multi_node = request("pvc-1", GIB);
        multi_node.capabilities[0].access_mode = AccessMode::MultiNodeMultiWriter;
        let mut bad_zone = request("pvc-1", GIB);
        bad_zone.accessibility =
            Some(TopologyRequirement { requisite: Vec::new(), preferred: vec![topology::segment("mars-1a")] });
        for bad in [
            request("", GIB),
            no_zone,
            clone,
            multi_node,
            with_parameters(request("pvc-1", GIB), &[("fsType", "ext4")]),
            bad_zone,
        ] {
            let error = fixture.checked(create(&fixture.ctx(), bad));
            assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        }
        let too_big = fixture.checked(create(&fixture.ctx(), request("pvc-1", 20_000 * GIB)));
        assert!(matches!(too_big, Error::OutOfRange(_)), "{too_big:?}");
        let mut missing_snapshot = request("pvc-1", GIB);
        missing_snapshot.content_source = Some(ContentSource::Snapshot("snap-0123456789abcdef0".into()));
        let error = fixture.checked(create(&fixture.ctx(), missing_snapshot));
        assert!(matches!(error, Error::NotFound(_)), "{error:?}");
        let mut malformed_snapshot = request("pvc-1", GIB);
        malformed_snapshot.content_source = Some(ContentSource::Snapshot("../etc".into()));
        let error = fixture.checked(create(&fixture.ctx(), malformed_snapshot));
        assert!(matches!(error, Error::NotFound(_)), "{error:?}");
        assert_eq!(fixture.ec2.count("CreateVolume"), 1, "only the bad zone reached CreateVolume");
    }

    #[test]
    fn a_failed_volume_is_internal() {
        let fixture = Fixture::new();
        let volume = create(&fixture.ctx(), request("pvc-1", GIB)).unwrap();
        fixture.ec2.edit_volume(&volume.id, |v| v.state = "error".into());
        let error = fixture.checked(create(&fixture.ctx(), request("pvc-1", GIB)));
        assert!(matches!(&error, Error::Internal(m) if m.contains(&volume.id)), "{error:?}");
    }

    #[test]
    fn restore_from_a_snapshot() {
        let fixture = Fixture::new();
        let snapshot = fixture.ec2.add_snapshot("vol-0123456789abcdef0", 8, &[]);
        let mut restore = request("pvc-1", GIB);
        restore.content_source = Some(ContentSource::Snapshot(snapshot.clone()));
        let volume = create(&fixture.ctx(), restore).unwrap();
        assert_eq!(volume.capacity_bytes, 8 * GIB);
        assert_eq!(volume.content_source, Some(ContentSource::Snapshot(snapshot.clone())));
        let form = fixture.ec2.last("CreateVolume");
        assert_eq!((form["Size"].as_str(), form["SnapshotId"].as_str()), ("8", snapshot.as_str()));
    }

    #[test]
    fn find_get_and_delete() {
        let fixture = Fixture::new();
        assert_eq!(find(&fixture.ctx(), "pvc-1").unwrap(), None);
        let volume = create(&fixture.ctx(), request("pvc-1", GIB)).unwrap();
        assert_eq!(find(&fixture.ctx(), "pvc-1").unwrap(), Some(volume.clone()));
        assert_eq!(get(&fixture.ctx(), &volume.id).unwrap(), volume);

        fixture.ec2.attach_outside(&volume.id, crate::fake::OTHER_NODE, "/dev/xvdba", "attached");
        let in_use = fixture.checked(delete(&fixture.ctx(), &volume.id));
        assert!(matches!(&in_use, Error::FailedPrecondition(m) if m.contains("VolumeInUse")), "{in_use:?}");
        fixture.ec2.edit_volume(&volume.id, |v| v.attachments.clear());

        delete(&fixture.ctx(), &volume.id).unwrap();
        assert!(fixture.ec2.volumes().is_empty());
        delete(&fixture.ctx(), &volume.id).unwrap();
        let requests = fixture.ec2.requests().len();
        delete(&fixture.ctx(), "not-a-volume").unwrap();
        assert_eq!(fixture.ec2.requests().len(), requests, "a malformed id reaches no API");

        for missing in [volume.id.as_str(), "vol-x"] {
            let error = fixture.checked(get(&fixture.ctx(), missing));
            assert!(matches!(error, Error::NotFound(_)), "{error:?}");
        }
        assert_eq!(find(&fixture.ctx(), "pvc-1").unwrap(), None);
    }

    #[test]
    fn list_pages_through_tagged_volumes_only() {
        let fixture = Fixture::new();
        let mut ids: Vec<String> =
            (0..7).map(|i| create(&fixture.ctx(), request(&format!("pvc-{i}"), GIB)).unwrap().id).collect();
        ids.sort();
        fixture.ec2.add_volume(1, ZONE, &[("Name", "not ours")]);

        for max_entries in [0, 1, 3, 7, 8] {
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let page = list(&fixture.ctx(), max_entries, &token).unwrap();
                assert!(max_entries == 0 || page.entries.len() <= max_entries as usize);
                seen.extend(page.entries.into_iter().map(|volume| volume.id));
                if page.next_token.is_empty() {
                    break;
                }
                token = page.next_token;
            }
            assert_eq!(seen, ids, "max_entries {max_entries}");
        }
        let form = fixture.ec2.last("DescribeVolumes");
        assert_eq!((form["Filter.1.Name"].as_str(), form["Filter.1.Value.1"].as_str()), ("tag-key", "CSIVolumeName"));

        let foreign = fixture.checked(list(&fixture.ctx(), 1, "garbage"));
        assert!(matches!(foreign, Error::Aborted(_)), "{foreign:?}");
        let stale = fixture.checked(list(&fixture.ctx(), 1, "0:expired-token"));
        assert!(matches!(stale, Error::Aborted(_)), "{stale:?}");
    }
}
