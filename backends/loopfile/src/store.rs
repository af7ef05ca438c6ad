//! The on-disk life cycle shared by volumes and snapshots.
//!
//! An object is a directory holding an image and a metadata file. It is built under a
//! staging name and given its id by one rename (see [`create`]), so a crash leaves either
//! no object or a complete one. It is removed by one atomic rename into `trash/`, after
//! which the trash is emptied; whatever a crash leaves there is emptied by a later call.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::Path;

use kit::types::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Ctx;
use crate::fsio::{self, io_error};
use crate::ids::{Id, Kind};
use crate::meta::{self, Named};

/// File written and removed again to prove the granted directory is writable.
const WRITE_PROBE: &str = ".loopfile-write-probe";

/// Checks the granted directory is reachable and writable, and creates the layout in it.
pub fn init(ctx: &Ctx) -> Result<(), Error> {
    let root = ctx.layout.root();
    let unusable = |action: &str, path: &Path, err: std::io::Error| {
        Error::FailedPrecondition(format!(
            "{action} {}: {err} (is the directory granted to this backend, and writable?)",
            path.display()
        ))
    };
    let metadata = fs::metadata(root).map_err(|err| unusable("open", root, err))?;
    if !metadata.is_dir() {
        return Err(Error::FailedPrecondition(format!("{} is not a directory", root.display())));
    }
    let probe = root.join(WRITE_PROBE);
    fs::write(&probe, b"").map_err(|err| unusable("write", &probe, err))?;
    fs::remove_file(&probe).map_err(|err| unusable("remove", &probe, err))?;
    for dir in [ctx.layout.kind_dir(Kind::Volume), ctx.layout.kind_dir(Kind::Snapshot), ctx.layout.trash_dir()] {
        fs::create_dir_all(&dir).map_err(|err| unusable("create", &dir, err))?;
    }
    fsio::sync_dir(root)
}

/// The metadata of an object, or `None` when the object does not exist.
pub fn read_meta<T: DeserializeOwned>(ctx: &Ctx, id: &Id) -> Result<Option<T>, Error> {
    let path = ctx.layout.meta(id);
    match fs::read(&path) {
        Ok(bytes) => meta::decode(&bytes, &path).map(Some),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error("read", &path, err)),
    }
}

/// The object a request names by id, with its metadata; `not-found` when the id is
/// malformed or no such object exists.
pub fn require<T: DeserializeOwned>(ctx: &Ctx, kind: Kind, id: &str) -> Result<(Id, T), Error> {
    let not_found = || Error::NotFound(format!("{} {id:?} does not exist", kind.noun()));
    let id = Id::parse(kind, id).ok_or_else(not_found)?;
    let meta = read_meta(ctx, &id)?.ok_or_else(not_found)?;
    Ok((id, meta))
}

/// The object a create of `name` lands on, if it exists. Another name behind the same id (a
/// 128-bit hash collision) is `already-exists`, never a silent mix-up.
pub fn existing<T: DeserializeOwned + Named>(ctx: &Ctx, id: &Id, name: &str) -> Result<Option<T>, Error> {
    match read_meta::<T>(ctx, id)? {
        Some(meta) if meta.name() != name => Err(Error::AlreadyExists(format!(
            "{} id {id} of name {name:?} is taken by {:?}",
            id.kind().noun(),
            meta.name()
        ))),
        found => Ok(found),
    }
}

/// The ids of every object directory of `kind`, sorted; some may be half-made (no metadata).
pub fn list_ids(ctx: &Ctx, kind: Kind) -> Result<Vec<Id>, Error> {
    let dir = ctx.layout.kind_dir(kind);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_error("list", &dir, err)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| io_error("list", &dir, err))?;
        if let Some(id) = entry.file_name().to_str().and_then(|name| Id::parse(kind, name)) {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}

/// Makes an object in one durable step: its image (a copy of `source`'s image, or empty)
/// set to `len` bytes and its metadata are built in a staging directory beside the final
/// one, the metadata is flushed, one rename gives the object its id and one flush of the
/// kind directory makes that rename durable. A crash leaves either no object (a staging
/// directory the retried create starts over) or a complete one.
///
/// Two flushes per create, not one per step: the metadata's own flush is what commits the
/// image and the staging directory's entries on the journaling filesystems the host
/// supports (ext4, xfs, btrfs), and an image whose length a crash did lose is grown back to
/// the recorded capacity by [`ensure_image_len`] before the node uses it.
pub fn create<T: Serialize>(ctx: &Ctx, id: &Id, source: Option<&Id>, len: u64, meta: &T) -> Result<(), Error> {
    empty_trash(ctx);
    let staging = ctx.layout.staging_dir(id);
    remove_dir(&staging)?;
    fs::create_dir_all(&staging).map_err(|err| io_error("create", &staging, err))?;
    let image = staging.join(crate::layout::IMAGE);
    match source {
        Some(source) => ctx.platform.copy_file(&ctx.layout.image(source), &image)?,
        None => drop(File::create(&image).map_err(|err| io_error("create", &image, err))?),
    }
    fsio::set_len(&image, len)?;
    fsio::write_durable(&staging.join(crate::layout::META), &meta::encode(meta)?)?;
    // A directory left at the final name without metadata is a half-made object: set it aside.
    let dir = ctx.layout.object_dir(id);
    if dir.exists() {
        move_to_trash(ctx, id)?;
    }
    fs::rename(&staging, &dir).map_err(|err| io_error("rename into place", &dir, err))?;
    fsio::sync_dir(&ctx.layout.kind_dir(id.kind()))
}

/// Grows an existing object's image to `len` bytes (sparse) and flushes it.
pub fn resize_image(ctx: &Ctx, id: &Id, len: u64) -> Result<(), Error> {
    fsio::resize_file(&ctx.layout.image(id), len)
}

/// Makes sure an object's image is at least `len` bytes long (see [`create`]).
pub fn ensure_image_len(ctx: &Ctx, id: &Id, len: u64) -> Result<(), Error> {
    let image = ctx.layout.image(id);
    let actual = fs::metadata(&image).map_err(|err| io_error("inspect", &image, err))?.len();
    if actual < len { fsio::resize_file(&image, len) } else { Ok(()) }
}

/// Replaces an existing object's metadata atomically and durably.
pub fn update_meta<T: Serialize>(ctx: &Ctx, id: &Id, meta: &T) -> Result<(), Error> {
    fsio::write_atomic(&ctx.layout.meta(id), &meta::encode(meta)?)
}

fn remove_dir(dir: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("remove", dir, err)),
    }
}

/// Renames an object's directory into `trash/`; `false` when there was none.
fn move_to_trash(ctx: &Ctx, id: &Id) -> Result<bool, Error> {
    let trash = ctx.layout.trash_dir();
    fs::create_dir_all(&trash).map_err(|err| io_error("create", &trash, err))?;
    let dir = ctx.layout.object_dir(id);
    let entry = ctx.layout.trash_entry(id);
    remove_dir(&entry)?;
    match fs::rename(&dir, &entry) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_error("move to trash", &dir, err)),
    }
}

/// Removes an object (and logs it, by the name in its metadata `T`); removing one that
/// does not exist succeeds.
///
/// The rename into `trash/` is the commit point: from then on the object is gone, even if
/// removing its files fails (they are retried by later calls and only logged).
pub fn discard<T: DeserializeOwned + Named>(ctx: &Ctx, id: &Id) -> Result<(), Error> {
    empty_trash(ctx);
    // Only for the log line: a missing or unreadable metadata file must not block removal.
    let name = read_meta::<T>(ctx, id).ok().flatten().map(|meta| meta.name().to_owned());
    if !move_to_trash(ctx, id)? {
        return Ok(());
    }
    fsio::sync_dir(&ctx.layout.kind_dir(id.kind()))?;
    let noun = id.kind().noun();
    ctx.platform.info(&match name {
        Some(name) => format!("deleted {noun} {name:?} ({id})"),
        None => format!("deleted {noun} {id}, which had no readable metadata"),
    });
    empty_trash(ctx);
    Ok(())
}

/// Removes everything in `trash/`. Best effort: a failure is logged, not returned, and
/// something another call removes at the same time is not a failure.
fn empty_trash(ctx: &Ctx) {
    let trash = ctx.layout.trash_dir();
    let entries = match fs::read_dir(&trash) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return,
        Err(err) => {
            ctx.platform.warn(&format!("cannot empty the trash: list {}: {err}", trash.display()));
            return;
        }
    };
    for entry in entries {
        let removed = entry.and_then(|entry| {
            if entry.file_type()?.is_dir() { fs::remove_dir_all(entry.path()) } else { fs::remove_file(entry.path()) }
        });
        match removed {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => ctx.platform.warn(&format!("cannot empty the trash in {}: {err}", trash.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::Fixture;
    use crate::meta::SnapshotMeta;

    fn meta(name: &str) -> SnapshotMeta {
        SnapshotMeta { name: name.into(), source_volume_id: "v-1".into(), size_bytes: 4096, creation_time: 1 }
    }

    #[test]
    fn init_creates_the_layout_and_is_repeatable() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        init(&ctx).unwrap();
        init(&ctx).unwrap();
        let mut names: Vec<_> =
            fs::read_dir(fixture.dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["snapshots", "trash", "volumes"]);
    }

    #[test]
    fn init_fails_on_a_missing_directory() {
        let fixture = Fixture::new();
        let mut ctx = fixture.ctx();
        ctx.layout = crate::layout::Layout::new(fixture.dir.path().join("missing"));
        assert!(matches!(init(&ctx), Err(Error::FailedPrecondition(_))));
    }

    #[test]
    fn create_makes_a_complete_object_in_one_step() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let id = Id::for_name(Kind::Snapshot, "snap");
        create(&ctx, &id, None, 8192, &meta("snap")).unwrap();
        assert_eq!(read_meta::<SnapshotMeta>(&ctx, &id).unwrap(), Some(meta("snap")));
        assert_eq!(fs::metadata(ctx.layout.image(&id)).unwrap().len(), 8192);
        assert!(!ctx.layout.staging_dir(&id).exists());
    }

    #[test]
    fn list_ids_is_sorted_and_ignores_strangers() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        assert!(list_ids(&ctx, Kind::Volume).unwrap().is_empty());
        let mut ids: Vec<Id> = (0..5).map(|i| Id::for_name(Kind::Volume, &i.to_string())).collect();
        for id in &ids {
            fs::create_dir_all(ctx.layout.object_dir(id)).unwrap();
        }
        fs::create_dir_all(ctx.layout.staging_dir(&Id::for_name(Kind::Volume, "building"))).unwrap();
        fs::create_dir_all(ctx.layout.kind_dir(Kind::Volume).join("lost+found")).unwrap();
        fs::write(ctx.layout.kind_dir(Kind::Volume).join("v-note.txt"), b"").unwrap();
        ids.sort();
        assert_eq!(list_ids(&ctx, Kind::Volume).unwrap(), ids);
        assert!(list_ids(&ctx, Kind::Snapshot).unwrap().is_empty());
    }

    #[test]
    fn a_retried_create_replaces_what_a_crash_left() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let source = Id::for_name(Kind::Volume, "source");
        create(&ctx, &source, None, 4096, &meta("source")).unwrap();
        fs::write(ctx.layout.image(&source), b"content").unwrap();

        // A crash mid-create left a staging directory, and one at the final name without
        // metadata (a half-made object).
        let id = Id::for_name(Kind::Volume, "copy");
        fs::create_dir_all(ctx.layout.staging_dir(&id)).unwrap();
        fs::write(ctx.layout.staging_dir(&id).join("disk.img"), b"garbage from a crash").unwrap();
        fs::create_dir_all(ctx.layout.object_dir(&id)).unwrap();
        fs::write(ctx.layout.image(&id), b"more garbage").unwrap();

        create(&ctx, &id, Some(&source), 8192, &meta("copy")).unwrap();
        let image = fs::read(ctx.layout.image(&id)).unwrap();
        assert_eq!(image.len(), 8192);
        assert!(image.starts_with(b"content\0"));
        assert_eq!(read_meta::<SnapshotMeta>(&ctx, &id).unwrap(), Some(meta("copy")));
    }

    #[test]
    fn a_lost_image_length_is_restored() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let id = Id::for_name(Kind::Volume, "v");
        create(&ctx, &id, None, 8192, &meta("v")).unwrap();
        fs::OpenOptions::new().write(true).open(ctx.layout.image(&id)).unwrap().set_len(0).unwrap();
        ensure_image_len(&ctx, &id, 8192).unwrap();
        assert_eq!(fs::metadata(ctx.layout.image(&id)).unwrap().len(), 8192);
    }

    #[test]
    fn discard_is_atomic_idempotent_and_empties_the_trash() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        init(&ctx).unwrap();
        let id = Id::for_name(Kind::Snapshot, "snap");
        create(&ctx, &id, None, 4096, &meta("snap")).unwrap();
        // Left over by a crash after an earlier rename into the trash.
        fs::create_dir_all(ctx.layout.trash_dir().join("s-leftover/sub")).unwrap();

        discard::<SnapshotMeta>(&ctx, &id).unwrap();
        assert_eq!(read_meta::<SnapshotMeta>(&ctx, &id).unwrap(), None);
        assert!(!ctx.layout.object_dir(&id).exists());
        assert_eq!(fs::read_dir(ctx.layout.trash_dir()).unwrap().count(), 0);
        discard::<SnapshotMeta>(&ctx, &id).unwrap();
        discard::<SnapshotMeta>(&ctx, &Id::for_name(Kind::Snapshot, "never made")).unwrap();
        assert_eq!(*fixture.platform.logs.borrow(), [format!("deleted snapshot \"snap\" ({id})")]);
    }

    #[test]
    fn discard_removes_a_half_made_object() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let id = Id::for_name(Kind::Snapshot, "snap");
        fs::create_dir_all(ctx.layout.object_dir(&id)).unwrap();
        fs::write(ctx.layout.meta(&id), b"{corrupt").unwrap();
        discard::<SnapshotMeta>(&ctx, &id).unwrap();
        assert!(!ctx.layout.object_dir(&id).exists());
        assert_eq!(*fixture.platform.logs.borrow(), [format!("deleted snapshot {id}, which had no readable metadata")]);
    }

    #[test]
    fn require_and_existing() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let id = Id::for_name(Kind::Snapshot, "snap");
        assert!(matches!(require::<SnapshotMeta>(&ctx, Kind::Snapshot, id.as_str()), Err(Error::NotFound(_))));
        assert!(matches!(require::<SnapshotMeta>(&ctx, Kind::Snapshot, "../x"), Err(Error::NotFound(_))));
        create(&ctx, &id, None, 4096, &meta("snap")).unwrap();
        assert_eq!(require::<SnapshotMeta>(&ctx, Kind::Snapshot, id.as_str()).unwrap(), (id.clone(), meta("snap")));
        assert!(matches!(require::<SnapshotMeta>(&ctx, Kind::Volume, id.as_str()), Err(Error::NotFound(_))));
        assert_eq!(existing::<SnapshotMeta>(&ctx, &id, "snap").unwrap(), Some(meta("snap")));
        assert!(matches!(existing::<SnapshotMeta>(&ctx, &id, "other"), Err(Error::AlreadyExists(_))));
        let absent = Id::for_name(Kind::Snapshot, "absent");
        assert_eq!(existing::<SnapshotMeta>(&ctx, &absent, "absent").unwrap(), None);
    }
}
