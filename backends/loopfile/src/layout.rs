//! Where everything lives inside the granted directory.
//!
//! ```text
//! <directory>/volumes/<v-id>/disk.img     the volume's sparse image
//! <directory>/volumes/<v-id>/meta.json    its metadata: the volume exists iff this exists
//! <directory>/snapshots/<s-id>/disk.img   a snapshot: an independent copy of a volume image
//! <directory>/snapshots/<s-id>/meta.json
//! <directory>/volumes/.new-<v-id>/        an object being built (see `store::create`)
//! <directory>/trash/<id>                  deleted objects, moved here atomically, then removed
//! ```
//!
//! Paths are only built from an [`Id`], never from a raw request string.

use std::path::{Path, PathBuf};

use crate::ids::{Id, Kind};

pub const IMAGE: &str = "disk.img";
pub const META: &str = "meta.json";
const TRASH: &str = "trash";

#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Layout {
        Layout { root }
    }

    /// The granted directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding every object of one kind.
    pub fn kind_dir(&self, kind: Kind) -> PathBuf {
        self.root.join(match kind {
            Kind::Volume => "volumes",
            Kind::Snapshot => "snapshots",
        })
    }

    /// The directory of one object.
    pub fn object_dir(&self, id: &Id) -> PathBuf {
        self.kind_dir(id.kind()).join(id.as_str())
    }

    /// Where an object is built before one rename gives it its id (never a valid id).
    pub fn staging_dir(&self, id: &Id) -> PathBuf {
        self.kind_dir(id.kind()).join(format!(".new-{}", id.as_str()))
    }

    pub fn image(&self, id: &Id) -> PathBuf {
        self.object_dir(id).join(IMAGE)
    }

    pub fn meta(&self, id: &Id) -> PathBuf {
        self.object_dir(id).join(META)
    }

    pub fn trash_dir(&self) -> PathBuf {
        self.root.join(TRASH)
    }

    /// Where an object's directory goes when it is deleted (ids of both kinds differ by prefix).
    pub fn trash_entry(&self, id: &Id) -> PathBuf {
        self.trash_dir().join(id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let layout = Layout::new(PathBuf::from("/data"));
        let volume = Id::for_name(Kind::Volume, "abc");
        let snapshot = Id::for_name(Kind::Snapshot, "abc");
        assert_eq!(layout.root(), Path::new("/data"));
        assert_eq!(layout.kind_dir(Kind::Volume), Path::new("/data/volumes"));
        assert_eq!(layout.kind_dir(Kind::Snapshot), Path::new("/data/snapshots"));
        assert_eq!(layout.image(&volume), Path::new("/data/volumes/v-ba7816bf8f01cfea414140de5dae2223/disk.img"));
        assert_eq!(layout.meta(&snapshot), Path::new("/data/snapshots/s-ba7816bf8f01cfea414140de5dae2223/meta.json"));
        assert_eq!(layout.trash_entry(&volume), Path::new("/data/trash/v-ba7816bf8f01cfea414140de5dae2223"));
    }

    #[test]
    fn trailing_slash_in_the_directory_is_harmless() {
        let layout = Layout::new(PathBuf::from("/data/"));
        let volume = Id::for_name(Kind::Volume, "abc");
        assert_eq!(layout.image(&volume), Path::new("/data/volumes/v-ba7816bf8f01cfea414140de5dae2223/disk.img"));
        assert_eq!(layout.image(&volume).to_str(), Some("/data/volumes/v-ba7816bf8f01cfea414140de5dae2223/disk.img"));
    }
}
