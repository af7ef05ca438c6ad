//! The LV tags that make an LV ours, and how they are read.
//!
//! The CSI name → LV mapping lives only in LVM, nowhere else: an LV's name is the id derived
//! from the CSI name, and its tags carry the name itself and where the content came from.
//! Names are arbitrary UTF-8 (up to 128 bytes) while a tag allows only
//! `[A-Za-z0-9_+.-/=!:&#]` and 1024 characters, so names are hex-encoded:
//!
//! | tag                                   | on                                                 |
//! |---------------------------------------|----------------------------------------------------|
//! | `wasmcsi.name=<hex(name)>`            | volumes                                            |
//! | `wasmcsi.snapshot=<hex(name)>`        | snapshots                                          |
//! | `wasmcsi.source=snapshot:<id>`        | volumes restored from a snapshot                   |
//! | `wasmcsi.source=volume:<id>`          | volumes cloned from a volume; every snapshot (its source volume, which a thin snapshot outlives) |
//!
//! Tags are added in the `lvcreate` that makes the LV, so an LV never exists half-tagged.
//! They are read as hostile input: an LV is ours only if its name is a well-formed id, it
//! carries exactly one name tag of its kind whose value is lowercase hex of non-empty UTF-8
//! text whose hash is the LV's name, and at most one well-formed source tag (exactly one on a
//! snapshot). Anything else — bad hex, odd length, non-UTF-8, duplicates, a hash that does
//! not match, an LV with our prefix but no tag — is someone else's LV: never listed, never
//! returned, never deleted. Tags outside `wasmcsi.` (an operator's own) are ignored.

use kit::types::{ContentSource, Error};

use crate::ids::{Id, Kind};
use crate::report::Lv;

const NAME: &str = "wasmcsi.name=";
const SNAPSHOT: &str = "wasmcsi.snapshot=";
const SOURCE: &str = "wasmcsi.source=";

/// LVM's limit on the length of a tag.
const MAX_TAG_LEN: usize = 1024;

/// Where an LV's content came from: the snapshot or volume a volume was made from, or the
/// volume a snapshot was taken of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Snapshot(Id),
    Volume(Id),
}

impl Source {
    /// A request's content source; `None` when its id is not one this backend hands out
    /// (such a source does not exist).
    pub fn from_request(source: &ContentSource) -> Option<Source> {
        match source {
            ContentSource::Snapshot(id) => Id::parse(Kind::Snapshot, id).map(Source::Snapshot),
            ContentSource::Volume(id) => Id::parse(Kind::Volume, id).map(Source::Volume),
        }
    }

    pub fn id(&self) -> &Id {
        match self {
            Source::Snapshot(id) | Source::Volume(id) => id,
        }
    }

    fn tag(&self) -> String {
        match self {
            Source::Snapshot(id) => format!("{SOURCE}snapshot:{id}"),
            Source::Volume(id) => format!("{SOURCE}volume:{id}"),
        }
    }

    fn parse(value: &str) -> Option<Source> {
        if let Some(id) = value.strip_prefix("snapshot:") {
            return Id::parse(Kind::Snapshot, id).map(Source::Snapshot);
        }
        Id::parse(Kind::Volume, value.strip_prefix("volume:")?).map(Source::Volume)
    }
}

impl From<&Source> for ContentSource {
    fn from(source: &Source) -> ContentSource {
        match source {
            Source::Snapshot(id) => ContentSource::Snapshot(id.to_string()),
            Source::Volume(id) => ContentSource::Volume(id.to_string()),
        }
    }
}

/// What the tags of one of our LVs say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: Id,
    /// The CSI name the LV was created with.
    pub name: String,
    pub source: Option<Source>,
}

/// The tags a new LV of `kind` made for CSI name `name` gets.
pub fn for_create(kind: Kind, name: &str, source: Option<&Source>) -> Result<Vec<String>, Error> {
    let name_tag = format!("{}{}", name_key(kind), hex::encode(name));
    if name_tag.len() > MAX_TAG_LEN {
        return Err(Error::InvalidArgument(format!(
            "{} name of {} bytes is too long for an LVM tag",
            kind.noun(),
            name.len()
        )));
    }
    Ok([Some(name_tag), source.map(Source::tag)].into_iter().flatten().collect())
}

/// What `lv` claims to be as our object of `kind`, if it is one (see the module header for
/// the rules).
pub fn claim(kind: Kind, lv: &Lv) -> Option<Claim> {
    let id = Id::parse(kind, &lv.name)?;
    let tags: Vec<&str> = lv.tags.split(',').collect();
    let name = single(&tags, name_key(kind))?.and_then(decode_name)?;
    if Id::for_name(kind, &name) != id {
        return None;
    }
    let source = match single(&tags, SOURCE)? {
        Some(value) => Some(Source::parse(value)?),
        None => None,
    };
    let well_sourced = match (kind, &source) {
        (Kind::Volume, _) => true,
        (Kind::Snapshot, source) => matches!(source, Some(Source::Volume(_))),
    };
    well_sourced.then_some(Claim { id, name, source })
}

fn name_key(kind: Kind) -> &'static str {
    match kind {
        Kind::Volume => NAME,
        Kind::Snapshot => SNAPSHOT,
    }
}

/// The value of the tag with `key`: `Some(None)` when there is none, `None` when there are
/// several.
fn single<'t>(tags: &[&'t str], key: &str) -> Option<Option<&'t str>> {
    let mut values = tags.iter().filter_map(|tag| tag.strip_prefix(key));
    let first = values.next();
    values.next().is_none().then_some(first)
}

fn decode_name(value: &str) -> Option<String> {
    let bytes = hex::decode(value).ok()?;
    // Only the exact encoding `for_create` writes (lowercase) is ours.
    if hex::encode(&bytes) != value {
        return None;
    }
    String::from_utf8(bytes).ok().filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(kind: Kind, name: &str, tags: &str) -> Option<Claim> {
        let lv = Lv {
            name: name.into(),
            vg: "vg0".into(),
            size: 4096,
            tags: tags.into(),
            attr: "-wi-a-----".into(),
            pool: String::new(),
            origin: String::new(),
            time: String::new(),
            data_percent: String::new(),
        };
        super::claim(kind, &lv)
    }

    fn volume_id(name: &str) -> String {
        Id::for_name(Kind::Volume, name).to_string()
    }

    fn snapshot_id(name: &str) -> String {
        Id::for_name(Kind::Snapshot, name).to_string()
    }

    #[test]
    fn tags_for_create_encode_the_name_and_source() {
        assert_eq!(for_create(Kind::Volume, "ab", None).unwrap(), ["wasmcsi.name=6162"]);
        let snap = Id::for_name(Kind::Snapshot, "s");
        assert_eq!(
            for_create(Kind::Volume, "pvc/ä", Some(&Source::Snapshot(snap.clone()))).unwrap(),
            ["wasmcsi.name=7076632fc3a4".to_string(), format!("wasmcsi.source=snapshot:{snap}")]
        );
        let volume = Id::for_name(Kind::Volume, "v");
        assert_eq!(
            for_create(Kind::Snapshot, "ab", Some(&Source::Volume(volume.clone()))).unwrap(),
            ["wasmcsi.snapshot=6162".to_string(), format!("wasmcsi.source=volume:{volume}")]
        );
        let long = "x".repeat(600);
        assert!(matches!(for_create(Kind::Volume, &long, None), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn our_tags_claim_the_lv_back() {
        let source = Source::Snapshot(Id::for_name(Kind::Snapshot, "s"));
        for (name, source) in [("pvc-1", None), ("ünïcödé name, with comma", Some(source))] {
            let tags = for_create(Kind::Volume, name, source.as_ref()).unwrap();
            let claim = claim(Kind::Volume, &volume_id(name), &format!("operator=x,{}", tags.join(","))).unwrap();
            assert_eq!(claim.name, name);
            assert_eq!(claim.id.as_str(), volume_id(name));
            assert_eq!(claim.source, source);
        }
        let origin = Source::Volume(Id::for_name(Kind::Volume, "v"));
        let tags = for_create(Kind::Snapshot, "snap", Some(&origin)).unwrap().join(",");
        let claim = claim(Kind::Snapshot, &snapshot_id("snap"), &tags).unwrap();
        assert_eq!((claim.name.as_str(), claim.source), ("snap", Some(origin)));
    }

    #[test]
    fn anything_else_is_not_ours() {
        let lv = volume_id("ab");
        let snap_lv = snapshot_id("ab");
        let source = format!("wasmcsi.source=volume:{}", volume_id("v"));
        let cases: [(&str, String, String); 16] = [
            ("no tags", lv.clone(), String::new()),
            ("foreign tags only", lv.clone(), "a=b/c+d_e.f-g!h:i&j#k".into()),
            ("name tag of another name", lv.clone(), "wasmcsi.name=6163".into()),
            ("our tag on an LV not named by its hash", "csi-a".into(), "wasmcsi.name=6162".into()),
            ("our prefix, short name", "csi-ab".into(), "wasmcsi.name=6162".into()),
            ("odd length", lv.clone(), "wasmcsi.name=616".into()),
            ("not hex", lv.clone(), "wasmcsi.name=zz".into()),
            ("uppercase hex", volume_id("\u{ab}"), "wasmcsi.name=C2AB".into()),
            ("not UTF-8", volume_id("\u{fffd}"), "wasmcsi.name=ff".into()),
            ("duplicate name tags", lv.clone(), "wasmcsi.name=6162,wasmcsi.name=6162".into()),
            ("empty name tag", volume_id(""), "wasmcsi.name=".into()),
            ("snapshot tag on a volume", lv.clone(), "wasmcsi.snapshot=6162".into()),
            ("bad source", lv.clone(), "wasmcsi.name=6162,wasmcsi.source=volume:csi-x".into()),
            ("two sources", lv.clone(), format!("wasmcsi.name=6162,{source},{source}")),
            ("snapshot without source", snap_lv.clone(), "wasmcsi.snapshot=6162".into()),
            (
                "snapshot of a snapshot",
                snap_lv.clone(),
                format!("wasmcsi.snapshot=6162,wasmcsi.source=snapshot:{}", snapshot_id("x")),
            ),
        ];
        for (case, lv_name, tags) in cases {
            let kind = if lv_name.starts_with("snap-") { Kind::Snapshot } else { Kind::Volume };
            assert_eq!(claim(kind, &lv_name, &tags), None, "{case}");
        }
        assert!(claim(Kind::Volume, &lv, "wasmcsi.name=6162").is_some());
        assert!(claim(Kind::Snapshot, &lv, "wasmcsi.snapshot=6162").is_none());
    }

    #[test]
    fn request_sources_must_be_well_formed_ids() {
        let snap = Id::for_name(Kind::Snapshot, "s");
        assert_eq!(
            Source::from_request(&ContentSource::Snapshot(snap.to_string())),
            Some(Source::Snapshot(snap.clone()))
        );
        assert_eq!(Source::from_request(&ContentSource::Volume(snap.to_string())), None);
        assert_eq!(Source::from_request(&ContentSource::Snapshot("vg/lv".into())), None);
        let source = Source::Snapshot(snap);
        assert_eq!(Source::from_request(&ContentSource::from(&source)), Some(source));
    }
}
