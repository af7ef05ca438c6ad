//! What cloud-disk supports and how it marks what it makes — features, access modes,
//! topology keys, the tags on volumes and snapshots — in one place, so what `info()`
//! declares and what requests are checked against agree.

use kit::types::{AccessMode, BackendInfo, Error, Features, VolumeCapability};

use crate::settings::Settings;
use crate::topology::ZONE_KEY;

/// An EBS volume is attached to one instance at a time.
const ACCESS_MODES: [AccessMode; 4] = [
    AccessMode::SingleNodeWriter,
    AccessMode::SingleNodeReaderOnly,
    AccessMode::SingleNodeSingleWriter,
    AccessMode::SingleNodeMultiWriter,
];

const DEFAULT_FS_TYPE: &str = "ext4";

/// The tag holding a volume's CSI name: how a retried create finds the volume.
pub const NAME_TAG: &str = "CSIVolumeName";
/// The tag holding a snapshot's CSI name.
pub const SNAPSHOT_NAME_TAG: &str = "CSIVolumeSnapshotName";
/// Marks everything this backend created.
const MANAGED_TAG: (&str, &str) = ("wasmcsi.dev/managed", "true");
/// Keys the backend sets itself; the `tags` setting may not use them.
pub const RESERVED_TAG_KEYS: [&str; 3] = [NAME_TAG, SNAPSHOT_NAME_TAG, MANAGED_TAG.0];

pub fn info() -> BackendInfo {
    BackendInfo {
        name: "cloud-disk".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        features: Features::LIST_VOLUMES
            | Features::GET_VOLUME
            | Features::GET_CAPACITY
            | Features::SNAPSHOTS
            | Features::LIST_SNAPSHOTS
            | Features::EXPAND_VOLUMES
            | Features::EXPAND_ONLINE
            | Features::PUBLISH_UNPUBLISH
            | Features::MODIFY_VOLUME
            | Features::BLOCK_VOLUMES
            | Features::NODE_EXPANSION,
        access_modes: ACCESS_MODES.to_vec(),
        topology_keys: vec![ZONE_KEY.into()],
        default_fs_type: DEFAULT_FS_TYPE.into(),
    }
}

/// Checks every requested access mode (filesystem or block are both fine: the host
/// formats and mounts).
pub fn check_capabilities(capabilities: &[VolumeCapability]) -> Result<(), Error> {
    match capabilities.iter().find(|capability| !ACCESS_MODES.contains(&capability.access_mode)) {
        Some(capability) => Err(Error::InvalidArgument(format!(
            "access mode {:?} is not supported: an EBS volume is attached to one node at a time",
            capability.access_mode
        ))),
        None => Ok(()),
    }
}

/// The tags of a new volume or snapshot: its name under `name_tag`, the managed marker,
/// then the configured tags.
pub fn tags(settings: &Settings, name_tag: &str, name: &str) -> Vec<(String, String)> {
    [(name_tag, name), MANAGED_TAG]
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .chain(settings.tags.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use kit::types::{AccessType, MountAccess};

    use super::*;

    #[test]
    fn info_declares_what_cloud_disk_does() {
        let info = info();
        assert_eq!(info.name, "cloud-disk");
        assert_eq!(
            info.features,
            Features::LIST_VOLUMES
                | Features::GET_VOLUME
                | Features::GET_CAPACITY
                | Features::SNAPSHOTS
                | Features::LIST_SNAPSHOTS
                | Features::EXPAND_VOLUMES
                | Features::EXPAND_ONLINE
                | Features::PUBLISH_UNPUBLISH
                | Features::MODIFY_VOLUME
                | Features::BLOCK_VOLUMES
                | Features::NODE_EXPANSION
        );
        assert!(!info.features.intersects(Features::NODE_LOCAL | Features::CLONE_VOLUMES));
        assert_eq!(info.topology_keys, ["topology.kubernetes.io/zone"]);
        assert_eq!(info.default_fs_type, "ext4");
        assert_eq!(info.access_modes, ACCESS_MODES);
    }

    #[test]
    fn single_node_modes_only() {
        let capability = |access_mode| VolumeCapability {
            access_type: AccessType::Mount(MountAccess { fs_type: "xfs".into(), mount_flags: Vec::new() }),
            access_mode,
        };
        check_capabilities(&ACCESS_MODES.map(capability)).unwrap();
        let block = VolumeCapability { access_type: AccessType::Block, access_mode: AccessMode::SingleNodeWriter };
        check_capabilities(&[block]).unwrap();
        let multi = check_capabilities(&[capability(AccessMode::MultiNodeReaderOnly)]);
        assert!(matches!(multi, Err(Error::InvalidArgument(m)) if m.contains("MultiNodeReaderOnly")));
    }

    #[test]
    fn tags_of_new_things() {
        let mut settings = Settings::for_tests();
        settings.tags = vec![("team".into(), "storage".into())];
        assert_eq!(
            tags(&settings, NAME_TAG, "pvc-1"),
            [
                ("CSIVolumeName".to_string(), "pvc-1".to_string()),
                ("wasmcsi.dev/managed".to_string(), "true".to_string()),
                ("team".to_string(), "storage".to_string()),
            ]
        );
    }
}
