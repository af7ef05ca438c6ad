//! The snapshot operations. A snapshot of a thin volume is a thin snapshot (no size, shares
//! every block with its origin and outlives it); a snapshot of a thick volume is a COW
//! snapshot whose COW area is `snapshot-reserve-percent` of the origin, rounded up to whole
//! extents (at 100 %, the default, it can never overflow; an overflowed one is not ready to
//! use). A COW snapshot lives and dies with its origin, which is why deleting a thick volume
//! that has one is refused.
//!
//! A snapshot's size is its origin's size when it was taken: a thin snapshot's own virtual
//! size, or the current size of a COW snapshot's origin. Its creation time is the LV's
//! `lv_time`.

use kit::paging;
use kit::sizing;
use kit::types::{Error, Snapshot, SnapshotPage};

use crate::context::Ctx;
use crate::ids::{Id, Kind};
use crate::lvm::{self, Layout};
use crate::lvtime;
use crate::owned::{self, Owned};
use crate::report::Lv;
use crate::space;
use crate::support;
use crate::tags::{self, Source};

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
    let percent = support::snapshot_reserve_percent(&ctx.settings, parameters)?;
    let not_found = || Error::NotFound(format!("volume {source_volume_id:?} does not exist"));
    let source = Id::parse(Kind::Volume, source_volume_id).ok_or_else(not_found)?;
    let id = Id::for_name(Kind::Snapshot, name);
    let lvs = lvm::lvs(ctx)?;
    if let Some(lv) = lvs.iter().find(|lv| lv.name == id.as_str()) {
        return existing(&lvs, lv, name, source_volume_id);
    }
    let origin = owned::in_list(&lvs, &source).ok_or_else(not_found)?.lv;
    let tags = tags::for_create(Kind::Snapshot, name, Some(&Source::Volume(source)))?;
    let layout = if origin.is_thin() {
        Layout::ThinSnapshot { origin: &origin.name }
    } else {
        let vg = lvm::vg(ctx)?;
        let cow_bytes = u64::try_from((u128::from(origin.size) * u128::from(percent)).div_ceil(100))
            .map_err(|_| Error::OutOfRange(format!("volume {source_volume_id} is too large to snapshot")))?;
        let size = space::extents(&vg).round_up(cow_bytes.max(1))?;
        sizing::ensure_space(size, space::thick_available(&vg, ctx.settings.reserve))?;
        Layout::CowSnapshot { origin: &origin.name, size }
    };
    match lvm::create(ctx, id.as_str(), &tags, layout) {
        // Only lvcreate says so: a concurrent create of the same name won; judge what it made.
        Err(Error::AlreadyExists(message)) => {
            let lvs = lvm::lvs(ctx)?;
            let lv = lvs.iter().find(|lv| lv.name == id.as_str()).ok_or(Error::AlreadyExists(message))?;
            return existing(&lvs, lv, name, source_volume_id);
        }
        made => made?,
    }
    let lvs = lvm::lvs(ctx)?;
    let owned = owned::in_list(&lvs, &id)
        .ok_or_else(|| Error::Internal(format!("snapshot {id} was made but lvs does not report it as ours")))?;
    let snapshot = to_snapshot(&lvs, &owned)?;
    ctx.platform
        .info(&format!("created snapshot {name:?} ({id}, {} bytes) of {source_volume_id}", snapshot.size_bytes));
    Ok(snapshot)
}

/// The snapshot a create of `name` took, if it exists.
pub fn find(ctx: &Ctx, name: &str) -> Result<Option<Snapshot>, Error> {
    let id = Id::for_name(Kind::Snapshot, name);
    let lvs = lvm::lvs(ctx)?;
    match owned::in_list(&lvs, &id).filter(|owned| owned.claim.name == name) {
        Some(owned) => to_snapshot(&lvs, &owned).map(Some),
        None => Ok(None),
    }
}

/// Deletes a snapshot; one that does not exist, is not ours, or has an id this backend never
/// issues is already deleted. Volumes restored from a thin snapshot are independent of it.
pub fn delete(ctx: &Ctx, snapshot_id: &str) -> Result<(), Error> {
    let Some(owned) = owned::find(ctx, Kind::Snapshot, snapshot_id)? else {
        return Ok(());
    };
    lvm::remove(ctx, snapshot_id)?;
    ctx.platform.info(&format!("deleted snapshot {:?} ({snapshot_id})", owned.claim.name));
    Ok(())
}

/// Lists snapshots, optionally only the one with `snapshot_id` and/or those taken from
/// `source_volume_id` (empty filters are unset). A filter nothing matches gives an empty
/// list, not an error; one that is not an id this backend issues runs no lvm at all.
pub fn list(
    ctx: &Ctx,
    snapshot_id: &str,
    source_volume_id: &str,
    max_entries: u32,
    starting_token: &str,
) -> Result<SnapshotPage, Error> {
    let start = paging::parse_token(Kind::Snapshot, starting_token)?;
    let malformed = (!snapshot_id.is_empty() && Id::parse(Kind::Snapshot, snapshot_id).is_none())
        || (!source_volume_id.is_empty() && Id::parse(Kind::Volume, source_volume_id).is_none());
    if malformed {
        return Ok(SnapshotPage { entries: Vec::new(), next_token: String::new() });
    }
    let lvs = lvm::lvs(ctx)?;
    let snapshots = owned::sorted(Kind::Snapshot, &lvs);
    let ids: Vec<Id> =
        snapshots.keys().filter(|id| snapshot_id.is_empty() || id.as_str() == snapshot_id).cloned().collect();
    let (entries, next_token) = paging::page(&ids, max_entries, start.as_ref(), |id| match snapshots.get(id) {
        Some(owned) if source_volume_id.is_empty() || source_of(owned) == source_volume_id => {
            to_snapshot(&lvs, owned).map(Some)
        }
        _ => Ok(None),
    })?;
    Ok(SnapshotPage { entries, next_token })
}

/// Judges an LV that already has the id a create lands on.
fn existing(lvs: &[Lv], lv: &Lv, name: &str, source_volume_id: &str) -> Result<Snapshot, Error> {
    let owned = tags::claim(Kind::Snapshot, lv)
        .filter(|claim| claim.name == name)
        .map(|claim| Owned { claim, lv: lv.clone() })
        .ok_or_else(|| {
            Error::AlreadyExists(format!(
                "logical volume {} exists and is not snapshot {name:?} of this backend",
                lv.name
            ))
        })?;
    if source_of(&owned) != source_volume_id {
        return Err(Error::AlreadyExists(format!(
            "snapshot {name:?} already exists ({}) and was taken from volume {}",
            owned.claim.id,
            source_of(&owned)
        )));
    }
    to_snapshot(lvs, &owned)
}

/// The volume a snapshot was taken of (a snapshot is ours only with that tag).
fn source_of(owned: &Owned) -> String {
    owned.claim.source.as_ref().map(|source| source.id().to_string()).unwrap_or_default()
}

fn to_snapshot(lvs: &[Lv], owned: &Owned) -> Result<Snapshot, Error> {
    let lv = &owned.lv;
    let size_bytes = if lv.is_cow_snapshot() {
        let origin = lvs.iter().find(|origin| origin.name == lv.origin).ok_or_else(|| {
            Error::Internal(format!("COW snapshot {} has no origin {:?} in the volume group", lv.name, lv.origin))
        })?;
        origin.size
    } else {
        lv.size
    };
    Ok(Snapshot {
        id: owned.claim.id.to_string(),
        source_volume_id: source_of(owned),
        size_bytes,
        creation_time: lvtime::parse(&lv.time)?,
        ready_to_use: !lv.is_invalid_snapshot(),
    })
}
