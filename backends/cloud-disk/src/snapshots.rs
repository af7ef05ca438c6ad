//! Snapshots: create, find, delete and list. A snapshot's id is its EBS snapshot id; its
//! CSI name is the `CSIVolumeSnapshotName` tag, which is how a retried create finds the
//! snapshot an earlier attempt started (CreateSnapshot has no client token). A create
//! returns at once: the snapshot is `ready-to-use` when EBS reports it `completed`, and the
//! CO polls until then.

use kit::types::{Error, Snapshot, SnapshotPage};

use crate::context::Ctx;
use crate::ec2::Ec2;
use crate::ids;
use crate::model;
use crate::paging;
use crate::sizing;
use crate::support::{self, SNAPSHOT_NAME_TAG};

const DESCRIPTION: &str = "Created by wasmcsi cloud-disk";

/// Takes a snapshot of `source_volume_id`, or returns the one an earlier create of `name`
/// took from the same volume.
pub fn create(
    ctx: &Ctx,
    source_volume_id: &str,
    name: &str,
    parameters: &[(String, String)],
) -> Result<Snapshot, Error> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("snapshot name is empty".into()));
    }
    if let Some((key, _)) = parameters.first() {
        return Err(Error::InvalidArgument(format!(
            "unknown VolumeSnapshotClass parameter {key:?}: cloud-disk takes none"
        )));
    }
    if !ids::is_volume(source_volume_id) {
        return Err(Error::NotFound(format!("source volume {source_volume_id:?} does not exist")));
    }
    let ec2 = Ec2::connect(ctx)?;
    if let Some(existing) = named(&ec2, name)? {
        if existing.volume_id != source_volume_id {
            return Err(Error::AlreadyExists(format!(
                "snapshot {name:?} already exists ({}) of another volume ({})",
                existing.id, existing.volume_id
            )));
        }
        return usable(existing);
    }
    let tags = support::tags(&ctx.settings, SNAPSHOT_NAME_TAG, name);
    let created = ec2.create_snapshot(source_volume_id, DESCRIPTION, &tags)?;
    ctx.platform.info(&format!("snapshotting volume {source_volume_id} as {name:?} ({})", created.id));
    usable(created)
}

/// The snapshot a create of `name` took, if it exists.
pub fn find(ctx: &Ctx, name: &str) -> Result<Option<Snapshot>, Error> {
    let ec2 = Ec2::connect(ctx)?;
    named(&ec2, name)?.map(usable).transpose()
}

/// Deletes a snapshot; one that does not exist (or an id EC2 never issues) is already gone.
pub fn delete(ctx: &Ctx, snapshot_id: &str) -> Result<(), Error> {
    if !ids::is_snapshot(snapshot_id) {
        return Ok(());
    }
    let ec2 = Ec2::connect(ctx)?;
    match ec2.delete_snapshot(snapshot_id) {
        Ok(()) => {
            ctx.platform.info(&format!("deleted snapshot {snapshot_id}"));
            Ok(())
        }
        Err(failure) if failure.is("InvalidSnapshot.NotFound") => Ok(()),
        Err(failure) => Err(failure.into()),
    }
}

/// Snapshots by id, by source volume, or all this backend took, page by page. Filters that
/// name nothing EC2 could have give an empty page.
pub fn list(
    ctx: &Ctx,
    snapshot_id: &str,
    source_volume_id: &str,
    max_entries: u32,
    starting_token: &str,
) -> Result<SnapshotPage, Error> {
    let empty = SnapshotPage { entries: Vec::new(), next_token: String::new() };
    let source = (!source_volume_id.is_empty()).then_some(source_volume_id);
    if source.is_some_and(|source| !ids::is_volume(source)) {
        return Ok(empty);
    }
    if !snapshot_id.is_empty() {
        if !ids::is_snapshot(snapshot_id) {
            return Ok(empty);
        }
        let ec2 = Ec2::connect(ctx)?;
        let entries = ec2
            .snapshot(snapshot_id)?
            .filter(|snapshot| source.is_none_or(|source| snapshot.volume_id == source))
            .map(|snapshot| to_snapshot(&snapshot))
            .into_iter()
            .collect();
        return Ok(SnapshotPage { entries, next_token: String::new() });
    }
    let ec2 = Ec2::connect(ctx)?;
    let (snapshots, next_token) =
        paging::list(max_entries, starting_token, |page| ec2.managed_snapshots(source, page))?;
    Ok(SnapshotPage { entries: snapshots.iter().map(to_snapshot).collect(), next_token })
}

/// This account's snapshot carrying CSI name `name`, if one does.
fn named(ec2: &Ec2, name: &str) -> Result<Option<model::Snapshot>, Error> {
    let mut snapshots = ec2.snapshots_named(name)?;
    if snapshots.len() > 1 {
        let ids: Vec<&str> = snapshots.iter().map(|snapshot| snapshot.id.as_str()).collect();
        return Err(Error::Internal(format!(
            "several snapshots carry {SNAPSHOT_NAME_TAG}={name:?}: {}",
            ids.join(", ")
        )));
    }
    Ok(snapshots.pop())
}

/// A snapshot that is being taken or done; one that failed is an error for the CO to see.
fn usable(snapshot: model::Snapshot) -> Result<Snapshot, Error> {
    if snapshot.state == "error" {
        return Err(Error::Internal(format!(
            "EBS failed to take snapshot {} of volume {}: delete it and retry",
            snapshot.id, snapshot.volume_id
        )));
    }
    Ok(to_snapshot(&snapshot))
}

fn to_snapshot(snapshot: &model::Snapshot) -> Snapshot {
    Snapshot {
        id: snapshot.id.clone(),
        source_volume_id: snapshot.volume_id.clone(),
        size_bytes: sizing::bytes(snapshot.size_gib),
        creation_time: snapshot.start_time,
        ready_to_use: snapshot.state == "completed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Delays, Fixture, ZONE};
    use crate::sizing::GIB;

    #[test]
    fn create_tags_the_snapshot_and_answers_at_once() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { snapshot: 1, ..Delays::default() });
        let volume = fixture.ec2.add_volume(8, ZONE, &[]);
        let snapshot = create(&fixture.ctx(), &volume, "snap-1", &[]).unwrap();
        assert_eq!(snapshot.source_volume_id, volume);
        assert_eq!(snapshot.size_bytes, 8 * GIB);
        assert_eq!(snapshot.creation_time, 1_440_938_160);
        assert!(!snapshot.ready_to_use);
        let form = fixture.ec2.last("CreateSnapshot");
        assert_eq!(form["VolumeId"], volume);
        assert_eq!(form["TagSpecification.1.ResourceType"], "snapshot");
        assert_eq!(form["TagSpecification.1.Tag.1.Key"], "CSIVolumeSnapshotName");
        assert_eq!(form["TagSpecification.1.Tag.1.Value"], "snap-1");
        let lookup = fixture.ec2.last("DescribeSnapshots");
        assert_eq!(lookup["OwnerId.1"], "self");
        assert_eq!(lookup["Filter.1.Name"], "tag:CSIVolumeSnapshotName");

        // The retry finds it, still pending, then done.
        let again = create(&fixture.ctx(), &volume, "snap-1", &[]).unwrap();
        assert_eq!((again.id.as_str(), again.ready_to_use), (snapshot.id.as_str(), false));
        let done = create(&fixture.ctx(), &volume, "snap-1", &[]).unwrap();
        assert!(done.ready_to_use);
        assert_eq!(find(&fixture.ctx(), "snap-1").unwrap(), Some(done));
        assert_eq!(fixture.ec2.count("CreateSnapshot"), 1);
        assert_eq!(fixture.ec2.snapshots().len(), 1);
    }

    #[test]
    fn a_lost_create_is_not_repeated_blindly() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(8, ZONE, &[]);
        fixture.ec2.script("CreateSnapshot", crate::fake::Scripted::LostAnswer);
        let error = fixture.checked(create(&fixture.ctx(), &volume, "snap-1", &[]));
        assert!(matches!(&error, Error::Unavailable(m) if m.contains("timed out")), "{error:?}");
        assert_eq!(fixture.ec2.count("CreateSnapshot"), 1);
        // The CO's retry finds the snapshot by its name tag.
        let snapshot = create(&fixture.ctx(), &volume, "snap-1", &[]).unwrap();
        assert_eq!(fixture.ec2.snapshots().len(), 1);
        assert_eq!(fixture.ec2.snapshots()[0].id, snapshot.id);
        assert_eq!(fixture.ec2.count("CreateSnapshot"), 1);
    }

    #[test]
    fn create_errors() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(8, ZONE, &[]);
        let other = fixture.ec2.add_volume(8, ZONE, &[]);
        create(&fixture.ctx(), &volume, "snap-1", &[]).unwrap();
        let taken = fixture.checked(create(&fixture.ctx(), &other, "snap-1", &[]));
        assert!(matches!(&taken, Error::AlreadyExists(m) if m.contains(&volume)), "{taken:?}");
        let parameters = vec![("tier".to_string(), "archive".to_string())];
        let unknown = fixture.checked(create(&fixture.ctx(), &volume, "snap-2", &parameters));
        assert!(matches!(&unknown, Error::InvalidArgument(m) if m.contains("\"tier\"")), "{unknown:?}");
        let unnamed = fixture.checked(create(&fixture.ctx(), &volume, "", &[]));
        assert!(matches!(unnamed, Error::InvalidArgument(_)), "{unnamed:?}");
        for source in ["vol-0123456789abcdef9", "disk-1"] {
            let missing = fixture.checked(create(&fixture.ctx(), source, "snap-3", &[]));
            assert!(matches!(missing, Error::NotFound(_)), "{source}: {missing:?}");
        }
        // EBS could not take it.
        fixture.ec2.script(
            "DescribeSnapshots",
            crate::fake::Scripted::Raw(
                200,
                "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-0abc000000000000f</snapshotId>\
                 <volumeId>vol-0abc000000000000f</volumeId><status>error</status>\
                 <startTime>2015-08-30T12:36:00Z</startTime><volumeSize>8</volumeSize></item></snapshotSet>\
                 </DescribeSnapshotsResponse>",
            ),
        );
        let error = fixture.checked(find(&fixture.ctx(), "snap-4"));
        assert!(matches!(error, Error::Internal(_)), "{error:?}");
    }

    #[test]
    fn delete_is_idempotent() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(8, ZONE, &[]);
        let snapshot = create(&fixture.ctx(), &volume, "snap-1", &[]).unwrap();
        delete(&fixture.ctx(), &snapshot.id).unwrap();
        assert!(fixture.ec2.snapshots().is_empty());
        delete(&fixture.ctx(), &snapshot.id).unwrap();
        delete(&fixture.ctx(), "not-a-snapshot").unwrap();
        assert_eq!(fixture.ec2.count("DeleteSnapshot"), 2);
        fixture.ec2.script(
            "DeleteSnapshot",
            crate::fake::Scripted::Error(400, "InvalidSnapshot.InUse", "used by ami-1".into()),
        );
        let in_use = fixture.checked(delete(&fixture.ctx(), &snapshot.id));
        assert!(matches!(in_use, Error::FailedPrecondition(_)), "{in_use:?}");
    }

    #[test]
    fn list_by_id_by_source_and_in_pages() {
        let fixture = Fixture::new();
        let first = fixture.ec2.add_volume(8, ZONE, &[]);
        let second = fixture.ec2.add_volume(8, ZONE, &[]);
        let mut of_first: Vec<String> =
            (0..4).map(|i| create(&fixture.ctx(), &first, &format!("a-{i}"), &[]).unwrap().id).collect();
        of_first.sort();
        let of_second = create(&fixture.ctx(), &second, "b-0", &[]).unwrap().id;
        fixture.ec2.add_snapshot(&first, 8, &[]);

        let all = |source: &str, max_entries: u32| {
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let page = list(&fixture.ctx(), "", source, max_entries, &token).unwrap();
                assert!(max_entries == 0 || page.entries.len() <= max_entries as usize);
                seen.extend(page.entries.into_iter().map(|snapshot| snapshot.id));
                if page.next_token.is_empty() {
                    return seen;
                }
                token = page.next_token;
            }
        };
        for max_entries in [0, 1, 2, 5] {
            assert_eq!(all(&first, max_entries), of_first, "max_entries {max_entries}");
            assert_eq!(all("", max_entries).len(), 5, "untagged snapshots are not listed");
        }
        let form = fixture.ec2.last("DescribeSnapshots");
        assert_eq!(form["OwnerId.1"], "self");
        assert_eq!(form["Filter.1.Name"], "tag-key");

        let by_id = list(&fixture.ctx(), &of_second, "", 0, "").unwrap();
        assert_eq!(by_id.entries.len(), 1);
        assert_eq!(by_id.entries[0].source_volume_id, second);
        assert!(by_id.next_token.is_empty());
        for (id, source) in
            [(of_second.as_str(), first.as_str()), ("snap-0123456789abcdef9", ""), ("snapshot-1", ""), ("", "disk-1")]
        {
            let page = list(&fixture.ctx(), id, source, 0, "").unwrap();
            assert!(page.entries.is_empty() && page.next_token.is_empty(), "{id} {source}");
        }
        let foreign = fixture.checked(list(&fixture.ctx(), "", "", 1, "nope"));
        assert!(matches!(foreign, Error::Aborted(_)), "{foreign:?}");
    }
}
