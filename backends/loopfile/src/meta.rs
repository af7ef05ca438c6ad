//! The metadata files (`meta.json`) of volumes and snapshots and their JSON encoding.
//!
//! A metadata file is the commit point of its object: it is written last, atomically, and
//! the object exists exactly when it does. A field added later must carry a serde default,
//! so files written by older versions stay readable.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use kit::types::{ContentSource, Error};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What `volumes/<id>/meta.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    /// The CSI name the volume was created with (its id is derived from it).
    pub name: String,
    pub capacity_bytes: u64,
    pub content_source: Option<Source>,
    /// StorageClass parameters, sorted by key.
    pub parameters: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub creation_time: u64,
}

/// What `snapshots/<id>/meta.json` holds. A snapshot is ready once its metadata exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: String,
    pub source_volume_id: String,
    pub size_bytes: u64,
    /// Seconds since the Unix epoch.
    pub creation_time: u64,
}

/// Metadata that records the CSI name its object was created with.
pub trait Named {
    fn name(&self) -> &str;
}

impl Named for VolumeMeta {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for SnapshotMeta {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Where a volume's content came from, as stored (the WIT type has no serde support).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

impl From<&ContentSource> for Source {
    fn from(source: &ContentSource) -> Source {
        match source {
            ContentSource::Snapshot(id) => Source::Snapshot(id.clone()),
            ContentSource::Volume(id) => Source::Volume(id.clone()),
        }
    }
}

impl From<&Source> for ContentSource {
    fn from(source: &Source) -> ContentSource {
        match source {
            Source::Snapshot(id) => ContentSource::Snapshot(id.clone()),
            Source::Volume(id) => ContentSource::Volume(id.clone()),
        }
    }
}

pub fn encode<T: Serialize>(meta: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec_pretty(meta).map_err(|err| Error::Internal(format!("encode metadata: {err}")))
}

/// Decodes the metadata read from `path` (named in the error).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|err| Error::Internal(format!("corrupt metadata in {}: {err}", path.display())))
}

/// Now, in seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> VolumeMeta {
        VolumeMeta {
            name: "pvc-1".into(),
            capacity_bytes: 1 << 30,
            content_source: Some(Source::Snapshot("s-0123456789abcdef0123456789abcdef".into())),
            parameters: BTreeMap::from([("a".into(), "b".into())]),
            creation_time: 1_700_000_000,
        }
    }

    #[test]
    fn volume_round_trips() {
        let meta = volume();
        let bytes = encode(&meta).unwrap();
        assert_eq!(decode::<VolumeMeta>(&bytes, Path::new("meta.json")).unwrap(), meta);
    }

    #[test]
    fn snapshot_round_trips() {
        let meta = SnapshotMeta {
            name: "snap-1".into(),
            source_volume_id: "v-0123456789abcdef0123456789abcdef".into(),
            size_bytes: 4096,
            creation_time: 1,
        };
        let bytes = encode(&meta).unwrap();
        assert_eq!(decode::<SnapshotMeta>(&bytes, Path::new("meta.json")).unwrap(), meta);
    }

    #[test]
    fn format_is_stable() {
        let json: serde_json::Value = serde_json::from_slice(&encode(&volume()).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "pvc-1",
                "capacity_bytes": 1073741824u64,
                "content_source": {"snapshot": "s-0123456789abcdef0123456789abcdef"},
                "parameters": {"a": "b"},
                "creation_time": 1700000000u64,
            })
        );
    }

    #[test]
    fn corrupt_metadata_is_internal_and_names_the_file() {
        let err = decode::<VolumeMeta>(b"{\"name\":", Path::new("/data/volumes/v-x/meta.json")).unwrap_err();
        assert!(matches!(&err, Error::Internal(m) if m.contains("/data/volumes/v-x/meta.json")), "{err:?}");
    }

    #[test]
    fn content_source_converts_both_ways() {
        for source in [ContentSource::Snapshot("s-1".into()), ContentSource::Volume("v-1".into())] {
            assert_eq!(ContentSource::from(&Source::from(&source)), source);
        }
    }
}
