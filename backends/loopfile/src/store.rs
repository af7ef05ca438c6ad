//! The on-disk life cycle shared by volumes and snapshots.
//!
//! An object is a directory holding an image and a metadata file. It is made in three
//! steps — prepare the directory, fill the image, commit the metadata — and only the last
//! one makes it exist, so a crash leaves either no object (a half-made directory that the
//! retried create overwrites) or a complete one. It is removed by one atomic rename into
//! `trash/`, after which the trash is emptied; whatever a crash leaves there is emptied
//! by a later call.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Ctx;
use crate::csi::backend::types::Error;
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
        return Err(Error::FailedPrecondition(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let probe = root.join(WRITE_PROBE);
    fs::write(&probe, b"").map_err(|err| unusable("write", &probe, err))?;
    fs::remove_file(&probe).map_err(|err| unusable("remove", &probe, err))?;
    for dir in [
        ctx.layout.kind_dir(Kind::Volume),
        ctx.layout.kind_dir(Kind::Snapshot),
        ctx.layout.trash_dir(),
    ] {
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

/// Step 1 of making an object: its directory exists (a half-made one is reused).
pub fn prepare(ctx: &Ctx, id: &Id) -> Result<(), Error> {
    empty_trash(ctx);
    let dir = ctx.layout.object_dir(id);
    fs::create_dir_all(&dir).map_err(|err| io_error("create", &dir, err))?;
    fsio::sync_dir(&ctx.layout.kind_dir(id.kind()))
}

/// Step 2: the image is a copy of `source`'s image, or empty, set to `len` bytes and flushed.
/// Whatever an interrupted earlier attempt left in its place is replaced.
pub fn fill_image(ctx: &Ctx, id: &Id, source: Option<&Id>, len: u64) -> Result<(), Error> {
    let image = ctx.layout.image(id);
    match source {
        Some(source) => {
            match fs::remove_file(&image) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("remove", &image, err)),
            }
            ctx.platform.copy_file(&ctx.layout.image(source), &image)?;
        }
        None => {
            File::create(&image).map_err(|err| io_error("create", &image, err))?;
        }
    }
    resize_image(ctx, id, len)
}

/// Sets an existing object's image to `len` bytes (sparse) and flushes it.
pub fn resize_image(ctx: &Ctx, id: &Id, len: u64) -> Result<(), Error> {
    fsio::resize_file(&ctx.layout.image(id), len)
}

/// Step 3, the commit point: the metadata is written atomically and durably.
pub fn commit<T: Serialize>(ctx: &Ctx, id: &Id, meta: &T) -> Result<(), Error> {
    fsio::write_atomic(&ctx.layout.meta(id), &meta::encode(meta)?)
}

/// Removes an object (and logs it, by the name in its metadata `T`); removing one that
/// does not exist succeeds.
///
/// The rename into `trash/` is the commit point: from then on the object is gone, even if
/// removing its files fails (they are retried by later calls and only logged).
pub fn discard<T: DeserializeOwned + Named>(ctx: &Ctx, id: &Id) -> Result<(), Error> {
    empty_trash(ctx);
    // Only for the log line: a missing or unreadable metadata file must not block removal.
    let name = read_meta::<T>(ctx, id)
        .ok()
        .flatten()
        .map(|meta| meta.name().to_owned());
    let trash = ctx.layout.trash_dir();
    fs::create_dir_all(&trash).map_err(|err| io_error("create", &trash, err))?;
    let dir = ctx.layout.object_dir(id);
    match fs::rename(&dir, ctx.layout.trash_entry(id)) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io_error("move to trash", &dir, err)),
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
            ctx.platform
                .warn(&format!("cannot empty the trash: list {}: {err}", trash.display()));
            return;
        }
    };
    for entry in entries {
        let removed = entry.and_then(|entry| {
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())
            } else {
                fs::remove_file(entry.path())
            }
        });
        match removed {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => ctx
                .platform
                .warn(&format!("cannot empty the trash in {}: {err}", trash.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::Fixture;
    use crate::meta::SnapshotMeta;

    fn meta(name: &str) -> SnapshotMeta {
        SnapshotMeta {
            name: name.into(),
            source_volume_id: "v-1".into(),
            size_bytes: 4096,
            creation_time: 1,
        }
    }

    #[test]
    fn init_creates_the_layout_and_is_repeatable() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        init(&ctx).unwrap();
        init(&ctx).unwrap();
        let mut names: Vec<_> = fs::read_dir(fixture.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
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
    fn an_object_exists_once_committed() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let id = Id::for_name(Kind::Snapshot, "snap");
        prepare(&ctx, &id).unwrap();
        fill_image(&ctx, &id, None, 8192).unwrap();
        assert_eq!(read_meta::<SnapshotMeta>(&ctx, &id).unwrap(), None);
        commit(&ctx, &id, &meta("snap")).unwrap();
        assert_eq!(read_meta::<SnapshotMeta>(&ctx, &id).unwrap(), Some(meta("snap")));
        assert_eq!(fs::metadata(ctx.layout.image(&id)).unwrap().len(), 8192);
    }

    #[test]
    fn list_ids_is_sorted_and_ignores_strangers() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        assert!(list_ids(&ctx, Kind::Volume).unwrap().is_empty());
        let mut ids: Vec<Id> = (0..5).map(|i| Id::for_name(Kind::Volume, &i.to_string())).collect();
        for id in &ids {
            prepare(&ctx, id).unwrap();
        }
        fs::create_dir_all(ctx.layout.kind_dir(Kind::Volume).join("lost+found")).unwrap();
        fs::write(ctx.layout.kind_dir(Kind::Volume).join("v-note.txt"), b"").unwrap();
        ids.sort();
        assert_eq!(list_ids(&ctx, Kind::Volume).unwrap(), ids);
        assert!(list_ids(&ctx, Kind::Snapshot).unwrap().is_empty());
    }

    #[test]
    fn refill_replaces_a_half_made_image() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let source = Id::for_name(Kind::Volume, "source");
        prepare(&ctx, &source).unwrap();
        fill_image(&ctx, &source, None, 4096).unwrap();
        fs::write(ctx.layout.image(&source), b"content").unwrap();

        let id = Id::for_name(Kind::Volume, "copy");
        prepare(&ctx, &id).unwrap();
        fs::write(ctx.layout.image(&id), b"garbage from a crash").unwrap();
        fill_image(&ctx, &id, Some(&source), 8192).unwrap();
        let image = fs::read(ctx.layout.image(&id)).unwrap();
        assert_eq!(image.len(), 8192);
        assert!(image.starts_with(b"content\0"));

        fs::write(ctx.layout.image(&id), b"garbage from a crash").unwrap();
        fill_image(&ctx, &id, None, 4096).unwrap();
        assert_eq!(fs::read(ctx.layout.image(&id)).unwrap(), vec![0; 4096]);
    }

    #[test]
    fn discard_is_atomic_idempotent_and_empties_the_trash() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        init(&ctx).unwrap();
        let id = Id::for_name(Kind::Snapshot, "snap");
        prepare(&ctx, &id).unwrap();
        fill_image(&ctx, &id, None, 4096).unwrap();
        commit(&ctx, &id, &meta("snap")).unwrap();
        // Left over by a crash after an earlier rename into the trash.
        fs::create_dir_all(ctx.layout.trash_dir().join("s-leftover/sub")).unwrap();

        discard::<SnapshotMeta>(&ctx, &id).unwrap();
        assert_eq!(read_meta::<SnapshotMeta>(&ctx, &id).unwrap(), None);
        assert!(!ctx.layout.object_dir(&id).exists());
        assert_eq!(fs::read_dir(ctx.layout.trash_dir()).unwrap().count(), 0);
        discard::<SnapshotMeta>(&ctx, &id).unwrap();
        discard::<SnapshotMeta>(&ctx, &Id::for_name(Kind::Snapshot, "never made")).unwrap();
        assert_eq!(
            *fixture.platform.logs.borrow(),
            [format!("deleted snapshot \"snap\" ({id})")]
        );
    }

    #[test]
    fn discard_removes_a_half_made_object() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let id = Id::for_name(Kind::Snapshot, "snap");
        prepare(&ctx, &id).unwrap();
        fs::write(ctx.layout.meta(&id), b"{corrupt").unwrap();
        discard::<SnapshotMeta>(&ctx, &id).unwrap();
        assert!(!ctx.layout.object_dir(&id).exists());
        assert_eq!(
            *fixture.platform.logs.borrow(),
            [format!("deleted snapshot {id}, which had no readable metadata")]
        );
    }

    #[test]
    fn require_and_existing() {
        let fixture = Fixture::new();
        let ctx = fixture.ctx();
        let id = Id::for_name(Kind::Snapshot, "snap");
        assert!(matches!(
            require::<SnapshotMeta>(&ctx, Kind::Snapshot, id.as_str()),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            require::<SnapshotMeta>(&ctx, Kind::Snapshot, "../x"),
            Err(Error::NotFound(_))
        ));
        prepare(&ctx, &id).unwrap();
        commit(&ctx, &id, &meta("snap")).unwrap();
        assert_eq!(
            require::<SnapshotMeta>(&ctx, Kind::Snapshot, id.as_str()).unwrap(),
            (id.clone(), meta("snap"))
        );
        assert!(matches!(
            require::<SnapshotMeta>(&ctx, Kind::Volume, id.as_str()),
            Err(Error::NotFound(_))
        ));
        assert_eq!(existing::<SnapshotMeta>(&ctx, &id, "snap").unwrap(), Some(meta("snap")));
        assert!(matches!(
            existing::<SnapshotMeta>(&ctx, &id, "other"),
            Err(Error::AlreadyExists(_))
        ));
        let absent = Id::for_name(Kind::Snapshot, "absent");
        assert_eq!(existing::<SnapshotMeta>(&ctx, &absent, "absent").unwrap(), None);
    }
}
