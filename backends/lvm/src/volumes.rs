//! The volume operations: create (thick, thin, or restored or cloned as a thin snapshot),
//! delete, get, list, capacity, expand, and the device a volume is on the node; and the
//! load-time check of the settings.
//!
//! Sizes are whole extents of the volume group (`kit::sizing` with the extent size as its
//! granule): a required size is rounded up to an extent, a request with only a limit gets
//! the largest multiple of the extent size within min(limit, 1 GiB), one with neither gets
//! 1 GiB, and a volume made from a content source is never smaller than the source. The
//! size a call returns is what `lvs` reports afterwards, never the size asked for.
//!
//! A volume made from a content source is a thin snapshot of it: nothing is copied, so the
//! source must be thin (a thin volume, or a thin snapshot of one), and the new volume is
//! thin (in the source's pool) whatever the StorageClass says unless it says `thick`, which
//! is refused. Restoring or cloning a thick volume or a COW snapshot would need a block copy,
//! which this backend does not do.

use kit::node_local;
use kit::paging;
use kit::sizing::{self, NO_CAPACITY};
use kit::types::{
    Capacity, CapacityRange, ContentSource, Device, Error, Expansion, Volume, VolumeCapability, VolumePage,
};

use crate::context::Ctx;
use crate::exports::csi::backend::backend::CreateVolumeRequest;
use crate::ids::{Id, Kind};
use crate::lvm::{self, Layout};
use crate::owned::{self, Owned};
use crate::report::{Lv, Vg};
use crate::space::{self, extents};
use crate::support::{self, VolumeType};
use crate::tags::{self, Source};

/// Volume context key: the volume group the volume was made in.
const CONTEXT_VG: &str = "lvm/volume-group";
/// Volume context key: the volume's LV (its id).
const CONTEXT_LV: &str = "lvm/logical-volume";

/// How a new volume's LV is made.
#[derive(Clone, Copy)]
enum Plan<'r> {
    Thick,
    Thin {
        pool: &'r str,
    },
    /// A thin snapshot of a content source.
    From(&'r Source),
}

impl<'r> Plan<'r> {
    fn volume_type(self) -> VolumeType {
        match self {
            Plan::Thick => VolumeType::Thick,
            Plan::Thin { .. } | Plan::From(_) => VolumeType::Thin,
        }
    }

    fn source(self) -> Option<&'r Source> {
        match self {
            Plan::From(source) => Some(source),
            Plan::Thick | Plan::Thin { .. } => None,
        }
    }
}

/// What a create asks for, to judge an LV that already has the name.
struct Wanted<'r> {
    name: &'r str,
    range: &'r CapacityRange,
    plan: Plan<'r>,
}

/// `validate-settings`: the volume group, and the thin pool when one is set, must exist.
pub fn validate(ctx: &Ctx) -> Result<(), Error> {
    lvm::vg(ctx)?;
    if let Some(pool) = &ctx.settings.thin_pool {
        let lv: Vec<Lv> = lvm::lv(ctx, pool)?.into_iter().collect();
        space::find_pool(&lv, pool)?;
    }
    Ok(())
}

/// Creates a volume, or returns the one an earlier create of the same name made when the
/// request is compatible with it (same type and content source, size in range).
pub fn create(ctx: &Ctx, request: CreateVolumeRequest) -> Result<Volume, Error> {
    if request.name.is_empty() {
        return Err(Error::InvalidArgument("volume name is empty".into()));
    }
    let requested_type = support::volume_type(&request.parameters)?;
    if let Some((key, _)) = request.mutable_parameters.first() {
        return Err(Error::InvalidArgument(format!("unknown mutable parameter {key:?}: lvm volumes have none")));
    }
    node_local::check_capabilities(&request.capabilities)?;
    sizing::check_range(&request.capacity)?;
    let source = match &request.content_source {
        Some(content_source) => {
            Some(Source::from_request(content_source).ok_or_else(|| missing_source(content_source))?)
        }
        None => None,
    };
    let plan = match (requested_type, &source) {
        (Some(VolumeType::Thick), Some(_)) => {
            return Err(Error::InvalidArgument(
                "a volume made from a snapshot or volume is a thin snapshot of it: StorageClass type thick cannot be restored or cloned (that needs a block copy, which this backend does not do)".into(),
            ));
        }
        (_, Some(source)) => Plan::From(source),
        (Some(VolumeType::Thin), None) => Plan::Thin { pool: thin_pool(ctx)? },
        (Some(VolumeType::Thick) | None, None) => Plan::Thick,
    };
    let wanted = Wanted { name: &request.name, range: &request.capacity, plan };
    let tags = tags::for_create(Kind::Volume, &request.name, plan.source())?;

    let id = Id::for_name(Kind::Volume, &request.name);
    if let Some(lv) = lvm::lv(ctx, id.as_str())? {
        return existing(ctx, &wanted, &lv);
    }
    let vg = lvm::vg(ctx)?;
    let made = match plan {
        Plan::Thick => make_empty(ctx, &vg, &id, &tags, &request.capacity, None),
        Plan::Thin { pool } => make_empty(ctx, &vg, &id, &tags, &request.capacity, Some(pool)),
        Plan::From(source) => make_from(ctx, &vg, &id, &tags, &request.capacity, source),
    };
    match made {
        // Only lvcreate says so: a concurrent create of the same name won; judge what it made.
        Err(Error::AlreadyExists(message)) => {
            let lv = lvm::lv(ctx, id.as_str())?.ok_or(Error::AlreadyExists(message))?;
            return existing(ctx, &wanted, &lv);
        }
        made => made?,
    }
    let volume = get(ctx, id.as_str())?;
    ctx.platform.info(&format!(
        "created volume {:?} ({id}, {} bytes, {:?}{})",
        request.name,
        volume.capacity_bytes,
        plan.volume_type(),
        plan.source().map(|source| format!(" from {}", source.id())).unwrap_or_default()
    ));
    Ok(volume)
}

/// Makes the LV of an empty volume, thick or (with a pool) thin, after checking there is
/// space for it.
fn make_empty(
    ctx: &Ctx,
    vg: &Vg,
    id: &Id,
    tags: &[String],
    range: &CapacityRange,
    pool: Option<&str>,
) -> Result<(), Error> {
    let size = extents(vg).new_volume_size(range, 0)?;
    let layout = match pool {
        None => {
            sizing::ensure_space(size, space::thick_available(vg, ctx.settings.reserve))?;
            Layout::Thick { size }
        }
        Some(pool) => {
            sizing::ensure_space(size, thin_available(ctx, &lvm::lvs(ctx)?, pool)?)?;
            Layout::Thin { size, pool }
        }
    };
    lvm::create(ctx, id.as_str(), tags, layout)
}

/// Makes the LV of a restored or cloned volume: a thin snapshot of the source, grown to the
/// size asked for.
fn make_from(
    ctx: &Ctx,
    vg: &Vg,
    id: &Id,
    tags: &[String],
    range: &CapacityRange,
    source: &Source,
) -> Result<(), Error> {
    let lvs = lvm::lvs(ctx)?;
    let origin = thin_source(&lvs, source)?;
    let size = extents(vg).new_volume_size(range, origin.size)?;
    sizing::ensure_space(size, thin_available(ctx, &lvs, &origin.pool)?)?;
    lvm::create(ctx, id.as_str(), tags, Layout::ThinClone { origin: &origin.name })?;
    if size > origin.size {
        lvm::extend(ctx, id.as_str(), size)?;
    }
    Ok(())
}

/// The volume a create of `name` made, if it exists.
pub fn find(ctx: &Ctx, name: &str) -> Result<Option<Volume>, Error> {
    let id = Id::for_name(Kind::Volume, name);
    let owned = owned::find(ctx, Kind::Volume, id.as_str())?;
    Ok(owned.filter(|owned| owned.claim.name == name).map(|owned| to_volume(ctx, &owned)))
}

/// Deletes a volume; one that does not exist, is not ours, or has an id this backend never
/// issues is already deleted. A thick volume with COW snapshots is refused: removing it
/// would remove them too. Thin snapshots are independent of their origin and stay.
pub fn delete(ctx: &Ctx, volume_id: &str) -> Result<(), Error> {
    let Some(id) = Id::parse(Kind::Volume, volume_id) else {
        return Ok(());
    };
    let lvs = lvm::lvs(ctx)?;
    let Some(owned) = owned::in_list(&lvs, &id) else {
        return Ok(());
    };
    let cow_snapshots: Vec<&str> =
        lvs.iter().filter(|lv| lv.origin == owned.lv.name && lv.is_cow_snapshot()).map(|lv| lv.name.as_str()).collect();
    if !cow_snapshots.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "volume {volume_id} has COW snapshots ({}); delete them first",
            cow_snapshots.join(", ")
        )));
    }
    lvm::remove(ctx, volume_id)?;
    ctx.platform.info(&format!("deleted volume {:?} ({volume_id})", owned.claim.name));
    Ok(())
}

pub fn get(ctx: &Ctx, volume_id: &str) -> Result<Volume, Error> {
    owned::require(ctx, Kind::Volume, volume_id).map(|owned| to_volume(ctx, &owned))
}

pub fn list(ctx: &Ctx, max_entries: u32, starting_token: &str) -> Result<VolumePage, Error> {
    let start = paging::parse_token(Kind::Volume, starting_token)?;
    let volumes = owned::sorted(Kind::Volume, &lvm::lvs(ctx)?);
    let ids: Vec<Id> = volumes.keys().cloned().collect();
    let (entries, next_token) =
        paging::page(&ids, max_entries, start.as_ref(), |id| Ok(volumes.get(id).map(|owned| to_volume(ctx, owned))))?;
    Ok(VolumePage { entries, next_token })
}

/// Space for new volumes of the StorageClass `type` (see `space.rs`). Volumes with
/// capabilities or parameters this backend cannot provide have no space at all.
pub fn capacity(
    ctx: &Ctx,
    capabilities: &[VolumeCapability],
    parameters: &[(String, String)],
) -> Result<Capacity, Error> {
    let volume_type = match support::volume_type(parameters) {
        Ok(volume_type) if node_local::check_capabilities(capabilities).is_ok() => volume_type,
        _ => return Ok(NO_CAPACITY),
    };
    let vg = lvm::vg(ctx)?;
    let available = match volume_type.unwrap_or(VolumeType::Thick) {
        VolumeType::Thick => space::thick_available(&vg, ctx.settings.reserve),
        VolumeType::Thin => {
            let Ok(pool) = thin_pool(ctx) else {
                return Ok(NO_CAPACITY);
            };
            thin_available(ctx, &lvm::lvs(ctx)?, pool)?
        }
    };
    Ok(Capacity {
        available_bytes: available,
        maximum_volume_size: extents(&vg).largest_volume(available),
        minimum_volume_size: vg.extent_size,
    })
}

/// Grows a volume (online is fine: the host grows the filesystem on the node). A volume
/// already large enough is left alone, so a retried expansion succeeds.
pub fn expand(ctx: &Ctx, volume_id: &str, range: &CapacityRange) -> Result<Expansion, Error> {
    let owned = owned::require(ctx, Kind::Volume, volume_id)?;
    let current = owned.lv.size;
    let vg = lvm::vg(ctx)?;
    let size = extents(&vg).expanded_size(current, range)?;
    let capacity_bytes = if size > current {
        let available = if owned.lv.is_thin() {
            thin_available(ctx, &lvm::lvs(ctx)?, &owned.lv.pool)?
        } else {
            space::thick_available(&vg, ctx.settings.reserve)
        };
        sizing::ensure_space(size - current, available)?;
        lvm::extend(ctx, volume_id, size)?;
        let grown = owned::require(ctx, Kind::Volume, volume_id)?.lv.size;
        ctx.platform
            .info(&format!("expanded volume {:?} ({volume_id}) from {current} to {grown} bytes", owned.claim.name));
        grown
    } else {
        current
    };
    Ok(Expansion { capacity_bytes, node_expansion_required: true })
}

/// Activates the volume's LV on this node and names its device. The path is built from the
/// settings and the id; a volume context naming another volume group is refused rather than
/// trusted.
pub fn node_device(ctx: &Ctx, volume_id: &str, volume_context: &[(String, String)]) -> Result<Device, Error> {
    let vg = &ctx.settings.volume_group;
    if let Some((_, other)) = volume_context.iter().find(|(key, value)| key == CONTEXT_VG && value != vg) {
        return Err(Error::FailedPrecondition(format!(
            "volume {volume_id} was made in volume group {other:?}, but this backend instance serves {vg:?}"
        )));
    }
    let owned = owned::require(ctx, Kind::Volume, volume_id)?;
    lvm::activate(ctx, volume_id)?;
    Ok(Device::Block(ctx.device_path(&owned.claim.id)))
}

/// Judges an LV that already has the id a create lands on.
fn existing(ctx: &Ctx, wanted: &Wanted, lv: &Lv) -> Result<Volume, Error> {
    let vg = &ctx.settings.volume_group;
    let Some(claim) = tags::claim(Kind::Volume, lv).filter(|claim| claim.name == wanted.name) else {
        return Err(Error::AlreadyExists(format!(
            "logical volume {vg}/{} exists and is not volume {:?} of this backend",
            lv.name, wanted.name
        )));
    };
    let actual_type = if lv.is_thin() { VolumeType::Thin } else { VolumeType::Thick };
    let compatible = actual_type == wanted.plan.volume_type() && claim.source.as_ref() == wanted.plan.source();
    if compatible && sizing::fits(wanted.range, lv.size) {
        return Ok(to_volume(ctx, &Owned { claim, lv: lv.clone() }));
    }
    if compatible && wanted.plan.source().is_some() && lv.size < wanted.range.required_bytes {
        // A restore or clone is lvcreate, then lvextend: finish one a failure interrupted.
        let size = extents(&lvm::vg(ctx)?).new_volume_size(wanted.range, lv.size)?;
        lvm::extend(ctx, &lv.name, size)?;
        return get(ctx, &lv.name);
    }
    Err(Error::AlreadyExists(format!(
        "volume {:?} already exists ({}, {} bytes, {actual_type:?}) with a different size, type or content source",
        wanted.name, claim.id, lv.size
    )))
}

/// The LV a new volume is a thin snapshot of.
fn thin_source(lvs: &[Lv], source: &Source) -> Result<Lv, Error> {
    let id = source.id();
    let noun = id.kind().noun();
    let owned =
        owned::in_list(lvs, id).ok_or_else(|| Error::NotFound(format!("content source {noun} {id} does not exist")))?;
    if !owned.lv.is_thin() {
        return Err(Error::InvalidArgument(format!(
            "content source {noun} {id} is not thin (lv_attr {:?}): restoring or cloning a thick volume or COW snapshot needs a block copy, which this backend does not do",
            owned.lv.attr
        )));
    }
    Ok(owned.lv)
}

fn missing_source(source: &ContentSource) -> Error {
    let (noun, id) = match source {
        ContentSource::Snapshot(id) => ("snapshot", id),
        ContentSource::Volume(id) => ("volume", id),
    };
    Error::NotFound(format!("content source {noun} {id:?} does not exist"))
}

/// The pool new thin volumes go to.
fn thin_pool<'c>(ctx: &'c Ctx) -> Result<&'c str, Error> {
    ctx.settings.thin_pool.as_deref().ok_or_else(|| {
        Error::InvalidArgument(
            "StorageClass parameter type: thin needs the thin-pool setting of this backend instance".into(),
        )
    })
}

fn thin_available(ctx: &Ctx, lvs: &[Lv], pool: &str) -> Result<u64, Error> {
    space::thin_available(lvs, pool, ctx.settings.thin_overprovision_ratio)
}

fn to_volume(ctx: &Ctx, owned: &Owned) -> Volume {
    Volume {
        id: owned.claim.id.to_string(),
        capacity_bytes: owned.lv.size,
        context: vec![
            (CONTEXT_VG.to_owned(), ctx.settings.volume_group.clone()),
            (CONTEXT_LV.to_owned(), owned.lv.name.clone()),
        ],
        content_source: owned.claim.source.as_ref().map(ContentSource::from),
        accessible_topology: Vec::new(),
    }
}
