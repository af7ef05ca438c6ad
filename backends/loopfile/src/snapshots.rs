//! The snapshot operations. A snapshot is an independent copy of a volume's image (shared
//! extents where the filesystem can reflink), so it outlives its source volume and a
//! volume restored from it is a plain copy back.

use kit::paging;
use kit::types::{Error, Snapshot, SnapshotPage};

use crate::context::Ctx;
use crate::ids::{Id, Kind};
use crate::meta::{self, SnapshotMeta, VolumeMeta};
use crate::store;
use crate::support;

/// Takes a snapshot of a volume, or returns the one an earlier create of the same name took
/// of the same volume.
pub fn create(
    ctx: &Ctx,
    source_volume_id: &str,
    name: &str,
    parameters: &[(String, String)],
) -> Result<Snapshot, Error> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("snapshot name is empty".into()));
    }
    support::check_parameters("VolumeSnapshotClass parameter", parameters)?;

    let id = Id::for_name(Kind::Snapshot, name);
    if let Some(existing) = store::existing::<SnapshotMeta>(ctx, &id, name)? {
        return if existing.source_volume_id == source_volume_id {
            Ok(to_snapshot(&id, &existing))
        } else {
            Err(Error::AlreadyExists(format!(
                "snapshot {name:?} already exists ({id}) and was taken from volume {}",
                existing.source_volume_id
            )))
        };
    }

    let (source, volume) = store::require::<VolumeMeta>(ctx, Kind::Volume, source_volume_id)?;
    let meta = SnapshotMeta {
        name: name.to_owned(),
        source_volume_id: source.to_string(),
        size_bytes: volume.capacity_bytes,
        creation_time: meta::unix_now(),
    };
    store::create(ctx, &id, Some(&source), meta.size_bytes, &meta)?;
    ctx.platform.info(&format!("created snapshot {name:?} ({id}, {} bytes) of {source}", meta.size_bytes));
    Ok(to_snapshot(&id, &meta))
}

/// The snapshot a create of `name` took, if it exists.
pub fn find(ctx: &Ctx, name: &str) -> Result<Option<Snapshot>, Error> {
    let id = Id::for_name(Kind::Snapshot, name);
    Ok(store::existing::<SnapshotMeta>(ctx, &id, name)?.map(|meta| to_snapshot(&id, &meta)))
}

/// Deletes a snapshot; one that does not exist (or an id loopfile never issues) is already
/// deleted. Volumes restored from it are independent copies and stay.
pub fn delete(ctx: &Ctx, snapshot_id: &str) -> Result<(), Error> {
    match Id::parse(Kind::Snapshot, snapshot_id) {
        Some(id) => store::discard::<SnapshotMeta>(ctx, &id),
        None => Ok(()),
    }
}

/// Lists snapshots, optionally only the one with `snapshot_id` and/or those taken from
/// `source_volume_id` (empty filters are unset). A filter nothing matches gives an empty
/// list, not an error.
pub fn list(
    ctx: &Ctx,
    snapshot_id: &str,
    source_volume_id: &str,
    max_entries: u32,
    starting_token: &str,
) -> Result<SnapshotPage, Error> {
    let start = paging::parse_token(Kind::Snapshot, starting_token)?;
    let ids = if snapshot_id.is_empty() {
        store::list_ids(ctx, Kind::Snapshot)?
    } else {
        Id::parse(Kind::Snapshot, snapshot_id).into_iter().collect()
    };
    let (entries, next_token) = paging::page(&ids, max_entries, start.as_ref(), |id| {
        Ok(store::read_meta::<SnapshotMeta>(ctx, id)?
            .filter(|meta| source_volume_id.is_empty() || meta.source_volume_id == source_volume_id)
            .map(|meta| to_snapshot(id, &meta)))
    })?;
    Ok(SnapshotPage { entries, next_token })
}

fn to_snapshot(id: &Id, meta: &SnapshotMeta) -> Snapshot {
    Snapshot {
        id: id.to_string(),
        source_volume_id: meta.source_volume_id.clone(),
        size_bytes: meta.size_bytes,
        creation_time: meta.creation_time,
        // Metadata is written only once the copy is complete and flushed.
        ready_to_use: true,
    }
}

#[cfg(test)]
mod tests {
    use kit::types::{CapacityRange, Volume};

    use super::*;
    use crate::context::fake::Fixture;
    use crate::exports::csi::backend::backend::CreateVolumeRequest;
    use crate::volumes;

    fn volume(ctx: &Ctx, name: &str) -> Volume {
        let request = CreateVolumeRequest {
            name: name.into(),
            capacity: CapacityRange { required_bytes: 1 << 20, limit_bytes: 0 },
            capabilities: Vec::new(),
            parameters: Vec::new(),
            mutable_parameters: Vec::new(),
            content_source: None,
            accessibility: None,
        };
        volumes::create(ctx, request).unwrap()
    }

    #[test]
    fn create_copies_the_volume_and_is_idempotent_by_name() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let source = volume(&ctx, "pvc-1");
        let other = volume(&ctx, "pvc-2");
        let snapshot = create(&ctx, &source.id, "snap-1", &[]).unwrap();
        assert_eq!(snapshot.id, Id::for_name(Kind::Snapshot, "snap-1").as_str());
        assert_eq!(snapshot.source_volume_id, source.id);
        assert_eq!(snapshot.size_bytes, source.capacity_bytes);
        assert!(snapshot.ready_to_use);
        assert!(snapshot.creation_time > 0);
        let id = Id::parse(Kind::Snapshot, &snapshot.id).unwrap();
        assert_eq!(std::fs::metadata(ctx.layout.image(&id)).unwrap().len(), source.capacity_bytes);

        assert_eq!(create(&ctx, &source.id, "snap-1", &[]).unwrap(), snapshot);
        assert!(matches!(create(&ctx, &other.id, "snap-1", &[]), Err(Error::AlreadyExists(_))));
        // A retry after the source volume is gone still finds the snapshot it made.
        volumes::delete(&ctx, &source.id).unwrap();
        assert_eq!(create(&ctx, &source.id, "snap-1", &[]).unwrap(), snapshot);
    }

    #[test]
    fn create_checks_its_arguments() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let source = volume(&ctx, "pvc-1");
        assert!(matches!(create(&ctx, &source.id, "", &[]), Err(Error::InvalidArgument(_))));
        let parameters = vec![("x".to_string(), "y".to_string())];
        assert!(matches!(create(&ctx, &source.id, "s", &parameters), Err(Error::InvalidArgument(_))));
        let absent = Id::for_name(Kind::Volume, "absent").to_string();
        for missing in [absent.as_str(), "", "../volumes", "s-0123456789abcdef0123456789abcdef"] {
            assert!(matches!(create(&ctx, missing, "s", &[]), Err(Error::NotFound(_))), "{missing:?}");
        }
        assert!(list(&ctx, "", "", 0, "").unwrap().entries.is_empty());
    }

    #[test]
    fn delete_is_idempotent_and_leaves_restored_volumes() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let source = volume(&ctx, "pvc-1");
        let snapshot = create(&ctx, &source.id, "snap-1", &[]).unwrap();
        delete(&ctx, &snapshot.id).unwrap();
        delete(&ctx, &snapshot.id).unwrap();
        delete(&ctx, "garbage").unwrap();
        assert!(list(&ctx, &snapshot.id, "", 0, "").unwrap().entries.is_empty());
        assert_eq!(volumes::get(&ctx, &source.id).unwrap(), source);
    }

    #[test]
    fn list_filters_and_pages() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let a = volume(&ctx, "a");
        let b = volume(&ctx, "b");
        let mut all: Vec<Snapshot> = (0..4)
            .map(|i| create(&ctx, if i % 2 == 0 { &a.id } else { &b.id }, &format!("snap-{i}"), &[]).unwrap())
            .collect();
        all.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(list(&ctx, "", "", 0, "").unwrap().entries, all);

        let of_a: Vec<Snapshot> = all.iter().filter(|s| s.source_volume_id == a.id).cloned().collect();
        assert_eq!(list(&ctx, "", &a.id, 0, "").unwrap().entries, of_a);
        assert_eq!(list(&ctx, &all[1].id, "", 0, "").unwrap().entries, all[1..2]);
        let wrong_source = if all[1].source_volume_id == a.id { &b.id } else { &a.id };
        assert!(list(&ctx, &all[1].id, wrong_source, 0, "").unwrap().entries.is_empty());
        for unknown in [Id::for_name(Kind::Snapshot, "nope").to_string(), "bogus".to_string()] {
            assert!(list(&ctx, &unknown, "", 0, "").unwrap().entries.is_empty());
            assert!(list(&ctx, "", &unknown, 0, "").unwrap().entries.is_empty());
        }

        let first = list(&ctx, "", "", 3, "").unwrap();
        assert_eq!(first.entries, all[..3]);
        let rest = list(&ctx, "", "", 3, &first.next_token).unwrap();
        assert_eq!(rest.entries, all[3..]);
        assert_eq!(rest.next_token, "");
        assert!(matches!(list(&ctx, "", "", 3, &a.id), Err(Error::Aborted(_))));
    }
}
