//! The volume operations: create (empty, restored from a snapshot, or cloned from a
//! volume), delete, get, list, capacity, expand, and the device a volume is on the node.

use std::collections::BTreeMap;

use kit::node_local;
use kit::paging;
use kit::sizing::{self, NO_CAPACITY};
use kit::types::{
    Capacity, CapacityRange, ContentSource, Device, Error, Expansion, Volume, VolumeCapability, VolumePage,
};

use crate::context::{Ctx, GRANULE};
use crate::exports::csi::backend::backend::CreateVolumeRequest;
use crate::ids::{Id, Kind};
use crate::meta::{self, SnapshotMeta, Source, VolumeMeta};
use crate::store;
use crate::support;

/// Volume context key carrying the CSI name, for people reading a PersistentVolume.
const CONTEXT_NAME: &str = "loopfile/name";

/// Creates a volume, or returns the one an earlier create of the same name made when the
/// request is compatible with it (same content source and parameters, size in range).
pub fn create(ctx: &Ctx, request: CreateVolumeRequest) -> Result<Volume, Error> {
    if request.name.is_empty() {
        return Err(Error::InvalidArgument("volume name is empty".into()));
    }
    support::check_parameters("StorageClass parameter", &request.parameters)?;
    support::check_parameters("mutable parameter", &request.mutable_parameters)?;
    node_local::check_capabilities(&request.capabilities)?;
    sizing::check_range(&request.capacity)?;

    let id = Id::for_name(Kind::Volume, &request.name);
    let content_source = request.content_source.as_ref().map(Source::from);
    let parameters: BTreeMap<String, String> = request.parameters.into_iter().collect();
    if let Some(existing) = store::existing::<VolumeMeta>(ctx, &id, &request.name)? {
        let compatible = sizing::fits(&request.capacity, existing.capacity_bytes)
            && existing.content_source == content_source
            && existing.parameters == parameters;
        return if compatible {
            Ok(to_volume(&id, &existing))
        } else {
            Err(Error::AlreadyExists(format!(
                "volume {:?} already exists ({id}, {} bytes) with a different size, content source or parameters",
                request.name, existing.capacity_bytes
            )))
        };
    }

    let (source, source_bytes) = match &request.content_source {
        Some(content_source) => {
            let (source, bytes) = resolve_source(ctx, content_source)?;
            (Some(source), bytes)
        }
        None => (None, 0),
    };
    let size = ctx.sizing().new_volume_size(&request.capacity, source_bytes)?;
    sizing::ensure_space(size, ctx.available_bytes()?)?;

    let meta = VolumeMeta {
        name: request.name,
        capacity_bytes: size,
        content_source,
        parameters,
        creation_time: meta::unix_now(),
    };
    store::create(ctx, &id, source.as_ref(), size, &meta)?;
    ctx.platform.info(&match &source {
        Some(source) => format!("created volume {:?} ({id}, {size} bytes) from {source}", meta.name),
        None => format!("created volume {:?} ({id}, {size} bytes)", meta.name),
    });
    Ok(to_volume(&id, &meta))
}

/// The volume a create of `name` made, if it exists.
pub fn find(ctx: &Ctx, name: &str) -> Result<Option<Volume>, Error> {
    let id = Id::for_name(Kind::Volume, name);
    Ok(store::existing::<VolumeMeta>(ctx, &id, name)?.map(|meta| to_volume(&id, &meta)))
}

/// Deletes a volume; a volume that does not exist (or an id loopfile never issues) is
/// already deleted. Snapshots taken from it are independent copies and stay.
pub fn delete(ctx: &Ctx, volume_id: &str) -> Result<(), Error> {
    match Id::parse(Kind::Volume, volume_id) {
        Some(id) => store::discard::<VolumeMeta>(ctx, &id),
        None => Ok(()),
    }
}

pub fn get(ctx: &Ctx, volume_id: &str) -> Result<Volume, Error> {
    let (id, meta) = store::require::<VolumeMeta>(ctx, Kind::Volume, volume_id)?;
    Ok(to_volume(&id, &meta))
}

pub fn list(ctx: &Ctx, max_entries: u32, starting_token: &str) -> Result<VolumePage, Error> {
    let start = paging::parse_token(Kind::Volume, starting_token)?;
    let ids = store::list_ids(ctx, Kind::Volume)?;
    let (entries, next_token) = paging::page(&ids, max_entries, start.as_ref(), |id| {
        Ok(store::read_meta::<VolumeMeta>(ctx, id)?.map(|meta| to_volume(id, &meta)))
    })?;
    Ok(VolumePage { entries, next_token })
}

/// Space for new volumes. Volumes with capabilities or parameters loopfile cannot provide
/// have no space at all (the CSI reading of "capacity for volumes that satisfy them").
pub fn capacity(
    ctx: &Ctx,
    capabilities: &[VolumeCapability],
    parameters: &[(String, String)],
) -> Result<Capacity, Error> {
    let provisionable = node_local::check_capabilities(capabilities).is_ok()
        && support::check_parameters("StorageClass parameter", parameters).is_ok();
    if !provisionable {
        return Ok(NO_CAPACITY);
    }
    let available = ctx.available_bytes()?;
    Ok(Capacity {
        available_bytes: available,
        maximum_volume_size: ctx.sizing().largest_volume(available),
        minimum_volume_size: GRANULE,
    })
}

/// Grows a volume's image (online is fine: the host refreshes the loop device). A volume
/// already large enough is left alone, so a retried expansion succeeds.
pub fn expand(ctx: &Ctx, volume_id: &str, range: &CapacityRange) -> Result<Expansion, Error> {
    let (id, mut meta) = store::require::<VolumeMeta>(ctx, Kind::Volume, volume_id)?;
    let current = meta.capacity_bytes;
    let size = ctx.sizing().expanded_size(current, range)?;
    if size > current {
        sizing::ensure_space(size - current, ctx.available_bytes()?)?;
        store::resize_image(ctx, &id, size)?;
        meta.capacity_bytes = size;
        store::update_meta(ctx, &id, &meta)?;
        ctx.platform.info(&format!("expanded volume {:?} ({id}) from {current} to {size} bytes", meta.name));
    }
    Ok(Expansion { capacity_bytes: size, node_expansion_required: true })
}

/// The image file the host loop-attaches on the node.
pub fn node_device(ctx: &Ctx, volume_id: &str) -> Result<Device, Error> {
    let (id, meta) = store::require::<VolumeMeta>(ctx, Kind::Volume, volume_id)?;
    store::ensure_image_len(ctx, &id, meta.capacity_bytes)?;
    Ok(Device::File(ctx.layout.image(&id).to_string_lossy().into_owned()))
}

/// The snapshot or volume a new volume is copied from, and its size.
fn resolve_source(ctx: &Ctx, source: &ContentSource) -> Result<(Id, u64), Error> {
    match source {
        ContentSource::Snapshot(id) => {
            store::require::<SnapshotMeta>(ctx, Kind::Snapshot, id).map(|(id, meta)| (id, meta.size_bytes))
        }
        ContentSource::Volume(id) => {
            store::require::<VolumeMeta>(ctx, Kind::Volume, id).map(|(id, meta)| (id, meta.capacity_bytes))
        }
    }
}

fn to_volume(id: &Id, meta: &VolumeMeta) -> Volume {
    Volume {
        id: id.to_string(),
        capacity_bytes: meta.capacity_bytes,
        context: vec![(CONTEXT_NAME.to_owned(), meta.name.clone())],
        content_source: meta.content_source.as_ref().map(ContentSource::from),
        accessible_topology: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use kit::types::{AccessMode, AccessType, MountAccess};

    use super::*;
    use crate::context::fake::Fixture;
    use crate::snapshots;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn request(name: &str, required_bytes: u64, limit_bytes: u64) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.into(),
            capacity: CapacityRange { required_bytes, limit_bytes },
            capabilities: vec![VolumeCapability {
                access_type: AccessType::Mount(MountAccess { fs_type: "ext4".into(), mount_flags: Vec::new() }),
                access_mode: AccessMode::SingleNodeWriter,
            }],
            parameters: Vec::new(),
            mutable_parameters: Vec::new(),
            content_source: None,
            accessibility: None,
        }
    }

    fn from(mut request: CreateVolumeRequest, source: ContentSource) -> CreateVolumeRequest {
        request.content_source = Some(source);
        request
    }

    fn range(required_bytes: u64, limit_bytes: u64) -> CapacityRange {
        CapacityRange { required_bytes, limit_bytes }
    }

    fn image(ctx: &Ctx, volume: &Volume) -> Vec<u8> {
        let id = Id::parse(Kind::Volume, &volume.id).unwrap();
        fs::read(ctx.layout.image(&id)).unwrap()
    }

    fn write_image(ctx: &Ctx, volume: &Volume, content: &[u8]) {
        let id = Id::parse(Kind::Volume, &volume.id).unwrap();
        let mut image = fs::read(ctx.layout.image(&id)).unwrap();
        image[..content.len()].copy_from_slice(content);
        fs::write(ctx.layout.image(&id), image).unwrap();
    }

    #[test]
    fn create_makes_a_sparse_image_and_metadata() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let volume = create(&ctx, request("pvc-1", 0, 0)).unwrap();
        assert_eq!(volume.id, Id::for_name(Kind::Volume, "pvc-1").as_str());
        assert_eq!(volume.capacity_bytes, GIB);
        assert_eq!(volume.context, [("loopfile/name".to_string(), "pvc-1".to_string())]);
        assert_eq!(volume.content_source, None);
        assert!(volume.accessible_topology.is_empty());

        let id = Id::parse(Kind::Volume, &volume.id).unwrap();
        assert_eq!(fs::metadata(ctx.layout.image(&id)).unwrap().len(), GIB);
        let meta: VolumeMeta = store::read_meta(&ctx, &id).unwrap().unwrap();
        assert_eq!(meta.name, "pvc-1");
        assert!(meta.creation_time > 0);
        assert_eq!(get(&ctx, &volume.id).unwrap(), volume);
        assert_eq!(*fixture.platform.logs.borrow(), [format!("created volume \"pvc-1\" ({id}, {GIB} bytes)")]);
    }

    #[test]
    fn create_is_idempotent_by_name() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let volume = create(&ctx, request("pvc-1", 10 * MIB, 0)).unwrap();
        assert_eq!(create(&ctx, request("pvc-1", 10 * MIB, 0)).unwrap(), volume);
        assert_eq!(create(&ctx, request("pvc-1", MIB, 10 * MIB)).unwrap(), volume);
        assert_eq!(create(&ctx, request("pvc-1", 0, 0)).unwrap(), volume);
        for other in [request("pvc-1", 20 * MIB, 0), request("pvc-1", 0, MIB)] {
            assert!(matches!(create(&ctx, other), Err(Error::AlreadyExists(_))));
        }
        let other_source = from(request("pvc-1", 10 * MIB, 0), ContentSource::Volume(volume.id.clone()));
        assert!(matches!(create(&ctx, other_source), Err(Error::AlreadyExists(_))));
        assert_eq!(fixture.platform.logs.borrow().len(), 1);
    }

    #[test]
    fn create_checks_its_arguments() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx_with(Some(GIB), 0);
        let mut parameters = request("a", 0, 0);
        parameters.parameters = vec![("type".into(), "fast".into())];
        let mut mutable = request("a", 0, 0);
        mutable.mutable_parameters = vec![("iops".into(), "100".into())];
        let mut multi_node = request("a", 0, 0);
        multi_node.capabilities[0].access_mode = AccessMode::MultiNodeMultiWriter;
        for bad in [request("", 0, 0), parameters, mutable, multi_node] {
            assert!(matches!(create(&ctx, bad), Err(Error::InvalidArgument(_))));
        }
        for bad in [request("a", 2 * MIB, MIB), request("a", 2 * GIB, 0), request("a", 5000, 6000)] {
            assert!(matches!(create(&ctx, bad), Err(Error::OutOfRange(_))));
        }
        let mut block = request("b", MIB, 0);
        block.capabilities[0].access_type = AccessType::Block;
        create(&ctx, block).unwrap();
        assert_eq!(list(&ctx, 0, "").unwrap().entries.len(), 1);
    }

    #[test]
    fn create_needs_free_space_beyond_the_reserve() {
        let fixture = Fixture::new();
        fixture.platform.free.set(100 * MIB);
        let ctx = fixture.ctx_with(None, 50 * MIB);
        assert!(matches!(create(&ctx, request("big", 51 * MIB, 0)), Err(Error::ResourceExhausted(_))));
        assert_eq!(create(&ctx, request("fits", 50 * MIB, 0)).unwrap().capacity_bytes, 50 * MIB);
    }

    #[test]
    fn a_retried_create_completes_a_half_made_volume() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let id = Id::for_name(Kind::Volume, "pvc-1");
        fs::create_dir_all(ctx.layout.object_dir(&id)).unwrap();
        fs::write(ctx.layout.image(&id), b"partial garbage").unwrap();
        fs::write(ctx.layout.meta(&id).with_extension("json.tmp"), b"{\"partial").unwrap();
        assert!(matches!(get(&ctx, id.as_str()), Err(Error::NotFound(_))));
        assert!(list(&ctx, 0, "").unwrap().entries.is_empty());

        let volume = create(&ctx, request("pvc-1", MIB, 0)).unwrap();
        assert_eq!(image(&ctx, &volume), vec![0; MIB as usize]);
        assert_eq!(get(&ctx, id.as_str()).unwrap(), volume);
    }

    #[test]
    fn restore_and_clone_copy_the_content_and_grow() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let origin = create(&ctx, request("origin", MIB, 0)).unwrap();
        write_image(&ctx, &origin, b"hello");
        let snapshot = snapshots::create(&ctx, &origin.id, "snap", &[]).unwrap();
        write_image(&ctx, &origin, b"later");

        let restored_source = ContentSource::Snapshot(snapshot.id.clone());
        let restored = create(&ctx, from(request("restored", 2 * MIB, 0), restored_source.clone())).unwrap();
        assert_eq!(restored.capacity_bytes, 2 * MIB);
        assert_eq!(restored.content_source, Some(restored_source.clone()));
        let content = image(&ctx, &restored);
        assert_eq!(content.len(), 2 * MIB as usize);
        assert!(content.starts_with(b"hello\0"));
        assert_eq!(create(&ctx, from(request("restored", 2 * MIB, 0), restored_source)).unwrap(), restored);

        let clone = create(&ctx, from(request("clone", 0, 4 * MIB), ContentSource::Volume(origin.id.clone()))).unwrap();
        assert_eq!(clone.capacity_bytes, 4 * MIB);
        assert!(image(&ctx, &clone).starts_with(b"later\0"));
        assert_eq!(get(&ctx, &clone.id).unwrap().content_source, Some(ContentSource::Volume(origin.id.clone())));
    }

    #[test]
    fn content_source_must_exist_and_fit() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let origin = create(&ctx, request("origin", 2 * MIB, 0)).unwrap();
        let snapshot = snapshots::create(&ctx, &origin.id, "snap", &[]).unwrap();
        let missing = [
            ContentSource::Snapshot(Id::for_name(Kind::Snapshot, "nope").to_string()),
            ContentSource::Snapshot("../volumes".into()),
            ContentSource::Snapshot(origin.id.clone()),
            ContentSource::Volume(Id::for_name(Kind::Volume, "nope").to_string()),
            ContentSource::Volume(snapshot.id.clone()),
        ];
        for source in missing {
            assert!(matches!(create(&ctx, from(request("new", 0, 0), source)), Err(Error::NotFound(_))));
        }
        for source in [ContentSource::Snapshot(snapshot.id), ContentSource::Volume(origin.id)] {
            let smaller = from(request("new", MIB, 0), source);
            assert!(matches!(create(&ctx, smaller), Err(Error::OutOfRange(_))));
        }
        assert!(!ctx.layout.object_dir(&Id::for_name(Kind::Volume, "new")).exists());
    }

    #[test]
    fn delete_is_idempotent_and_leaves_snapshots() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let volume = create(&ctx, request("pvc-1", MIB, 0)).unwrap();
        let snapshot = snapshots::create(&ctx, &volume.id, "snap", &[]).unwrap();
        delete(&ctx, &volume.id).unwrap();
        assert!(matches!(get(&ctx, &volume.id), Err(Error::NotFound(_))));
        assert!(matches!(node_device(&ctx, &volume.id), Err(Error::NotFound(_))));
        delete(&ctx, &volume.id).unwrap();
        delete(&ctx, "not an id").unwrap();
        delete(&ctx, "../../etc").unwrap();
        assert_eq!(snapshots::list(&ctx, &snapshot.id, "", 0, "").unwrap().entries, [snapshot]);
        assert_eq!(fs::read_dir(ctx.layout.trash_dir()).unwrap().count(), 0);

        let again = create(&ctx, request("pvc-1", MIB, 0)).unwrap();
        assert_eq!(again.id, volume.id);
    }

    #[test]
    fn get_and_node_device_need_a_well_formed_existing_id() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let volume = create(&ctx, request("pvc-1", MIB, 0)).unwrap();
        let expected = fixture.dir.path().join("volumes").join(&volume.id).join("disk.img");
        assert_eq!(node_device(&ctx, &volume.id).unwrap(), Device::File(expected.to_str().unwrap().into()));
        let absent = Id::for_name(Kind::Volume, "absent").to_string();
        for id in [absent.as_str(), "", "v-", "../volumes", &volume.id.to_uppercase()] {
            assert!(matches!(get(&ctx, id), Err(Error::NotFound(_))), "{id:?}");
            assert!(matches!(node_device(&ctx, id), Err(Error::NotFound(_))), "{id:?}");
        }
    }

    #[test]
    fn list_pages_in_id_order() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        assert_eq!(list(&ctx, 0, "").unwrap(), VolumePage { entries: Vec::new(), next_token: String::new() });
        let mut volumes: Vec<Volume> =
            (0..5).map(|i| create(&ctx, request(&format!("pvc-{i}"), MIB, 0)).unwrap()).collect();
        volumes.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(list(&ctx, 0, "").unwrap().entries, volumes);

        let first = list(&ctx, 2, "").unwrap();
        assert_eq!(first.entries, volumes[..2]);
        let second = list(&ctx, 2, &first.next_token).unwrap();
        assert_eq!(second.entries, volumes[2..4]);
        let last = list(&ctx, 2, &second.next_token).unwrap();
        assert_eq!(last.entries, volumes[4..]);
        assert_eq!(last.next_token, "");

        for token in ["bogus", "s-0123456789abcdef0123456789abcdef"] {
            assert!(matches!(list(&ctx, 2, token), Err(Error::Aborted(_))));
        }
    }

    #[test]
    fn expand_grows_once_and_never_shrinks() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx_with(Some(8 * MIB), 0);
        let volume = create(&ctx, request("pvc-1", MIB, 0)).unwrap();
        write_image(&ctx, &volume, b"keep");
        let grown = expand(&ctx, &volume.id, &range(3 * MIB + 1, 0)).unwrap();
        assert_eq!(grown, Expansion { capacity_bytes: 3 * MIB + GRANULE, node_expansion_required: true });
        let content = image(&ctx, &volume);
        assert_eq!(content.len() as u64, grown.capacity_bytes);
        assert!(content.starts_with(b"keep"));
        assert_eq!(get(&ctx, &volume.id).unwrap().capacity_bytes, grown.capacity_bytes);

        assert_eq!(expand(&ctx, &volume.id, &range(3 * MIB + 1, 0)).unwrap(), grown);
        assert_eq!(expand(&ctx, &volume.id, &range(MIB, 0)).unwrap(), grown);
        assert!(matches!(expand(&ctx, &volume.id, &range(MIB, 2 * MIB)), Err(Error::OutOfRange(_))));
        assert!(matches!(expand(&ctx, &volume.id, &range(9 * MIB, 0)), Err(Error::OutOfRange(_))));
        assert!(matches!(expand(&ctx, "v-nope", &range(9 * MIB, 0)), Err(Error::NotFound(_))));

        fixture.platform.free.set(MIB);
        assert!(matches!(expand(&ctx, &volume.id, &range(6 * MIB, 0)), Err(Error::ResourceExhausted(_))));
        assert_eq!(get(&ctx, &volume.id).unwrap().capacity_bytes, grown.capacity_bytes);
    }

    #[test]
    fn capacity_reports_space_less_the_reserve() {
        let fixture = Fixture::new();
        fixture.platform.free.set(10 * GIB + 123);
        let capabilities = request("x", 0, 0).capabilities;
        let expected = |available_bytes, maximum_volume_size| Capacity {
            available_bytes,
            maximum_volume_size,
            minimum_volume_size: GRANULE,
        };
        let ctx = fixture.ctx_with(None, GIB);
        assert_eq!(capacity(&ctx, &capabilities, &[]).unwrap(), expected(9 * GIB + 123, 9 * GIB));
        let ctx = fixture.ctx_with(Some(2 * GIB), GIB);
        assert_eq!(capacity(&ctx, &capabilities, &[]).unwrap(), expected(9 * GIB + 123, 2 * GIB));
        let ctx = fixture.ctx_with(None, 20 * GIB);
        assert_eq!(capacity(&ctx, &capabilities, &[]).unwrap(), expected(0, 0));

        let none = Capacity { available_bytes: 0, maximum_volume_size: 0, minimum_volume_size: 0 };
        let mut multi_node = capabilities.clone();
        multi_node[0].access_mode = AccessMode::MultiNodeReaderOnly;
        assert_eq!(capacity(&ctx, &multi_node, &[]).unwrap(), none);
        assert_eq!(capacity(&ctx, &capabilities, &[("type".into(), "ssd".into())]).unwrap(), none);
    }
}
