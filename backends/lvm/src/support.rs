//! What the LVM backend supports — features, access modes, request parameters — in one
//! place, so what `info()` declares and what requests are checked against agree. An LV is a
//! block device on one node, so its access modes and filesystems are those of
//! `kit::node_local`.
//!
//! StorageClass parameter: `type` = `thick` (default) | `thin` (in the pool of the
//! `thin-pool` setting). VolumeSnapshotClass parameter: `snapshot-reserve-percent` (overrides the
//! setting for COW snapshots). Any other key is `invalid-argument`.

use kit::types::{BackendInfo, Error};

use crate::settings::{self, Settings};

const TYPE: &str = "type";
const SNAPSHOT_RESERVE: &str = "snapshot-reserve-percent";

pub fn info(default_fs_type: String) -> BackendInfo {
    kit::node_local::info("lvm", env!("CARGO_PKG_VERSION"), default_fs_type)
}

/// How a volume's LV is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeType {
    /// Linear, fully allocated in the volume group.
    Thick,
    /// Thin, allocated on write in a thin pool.
    Thin,
}

/// The `type` StorageClass parameter, if given.
pub fn volume_type(parameters: &[(String, String)]) -> Result<Option<VolumeType>, Error> {
    let mut volume_type = None;
    for (key, value) in parameters {
        if key != TYPE {
            return Err(Error::InvalidArgument(format!("unknown StorageClass parameter {key:?} (known: {TYPE})")));
        }
        let parsed = match value.as_str() {
            "thick" => VolumeType::Thick,
            "thin" => VolumeType::Thin,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "StorageClass parameter {TYPE:?} must be thick or thin, got {other:?}"
                )));
            }
        };
        if volume_type.replace(parsed).is_some() {
            return Err(Error::InvalidArgument(format!("StorageClass parameter {TYPE:?} is given more than once")));
        }
    }
    Ok(volume_type)
}

/// The size of a COW snapshot as a percentage of its origin: the VolumeSnapshotClass
/// parameter `snapshot-reserve-percent`, or the setting of the same name.
pub fn snapshot_reserve_percent(settings: &Settings, parameters: &[(String, String)]) -> Result<u64, Error> {
    match parameters {
        [] => Ok(settings.snapshot_reserve_percent),
        [(key, value)] if key == SNAPSHOT_RESERVE => settings::percent(value).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "VolumeSnapshotClass parameter {key:?} must be a whole percentage from 1 to 100, got {value:?}"
            ))
        }),
        [(key, _)] => Err(Error::InvalidArgument(format!(
            "unknown VolumeSnapshotClass parameter {key:?} (known: {SNAPSHOT_RESERVE})"
        ))),
        _ => Err(Error::InvalidArgument(format!("VolumeSnapshotClass parameters: only {SNAPSHOT_RESERVE:?}, once"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::node_local::ACCESS_MODES;
    use kit::types::Features;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn invalid<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
        match result {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected invalid-argument, got {other:?}"),
        }
    }

    #[test]
    fn info_declares_what_lvm_does() {
        let info = info("xfs".into());
        assert_eq!(info.name, "lvm");
        assert_eq!(info.default_fs_type, "xfs");
        assert!(info.features.contains(Features::CLONE_VOLUMES | Features::NODE_LOCAL | Features::BLOCK_VOLUMES));
        assert!(!info.features.intersects(Features::PUBLISH_UNPUBLISH | Features::MODIFY_VOLUME));
        assert!(info.topology_keys.is_empty());
        assert_eq!(info.access_modes, ACCESS_MODES);
    }

    #[test]
    fn volume_type_parameter() {
        assert_eq!(volume_type(&[]).unwrap(), None);
        assert_eq!(volume_type(&params(&[("type", "thick")])).unwrap(), Some(VolumeType::Thick));
        assert_eq!(volume_type(&params(&[("type", "thin")])).unwrap(), Some(VolumeType::Thin));
        assert!(invalid(volume_type(&params(&[("type", "Thin")]))).contains("\"Thin\""));
        assert!(invalid(volume_type(&params(&[("size", "1")]))).contains("\"size\""));
        assert!(invalid(volume_type(&params(&[("type", "thin"), ("type", "thin")]))).contains("more than once"));
    }

    #[test]
    fn snapshot_parameters() {
        let settings = Settings::parse(&params(&[("volume-group", "vg0")])).unwrap();
        assert_eq!(snapshot_reserve_percent(&settings, &[]).unwrap(), 100);
        let twenty = params(&[("snapshot-reserve-percent", "20")]);
        assert_eq!(snapshot_reserve_percent(&settings, &twenty).unwrap(), 20);
        for bad in ["0", "101", "x"] {
            let bad = params(&[("snapshot-reserve-percent", bad)]);
            assert!(invalid(snapshot_reserve_percent(&settings, &bad)).contains("percentage"));
        }
        assert!(invalid(snapshot_reserve_percent(&settings, &params(&[("type", "thin")]))).contains("\"type\""));
        let twice = params(&[("snapshot-reserve-percent", "20"), ("snapshot-reserve-percent", "20")]);
        assert!(invalid(snapshot_reserve_percent(&settings, &twice)).contains("once"));
    }
}
