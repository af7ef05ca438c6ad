//! What loopfile supports — features, access modes, filesystem types, request parameters —
//! in one place, so what `info()` declares and what requests are checked against agree.

use crate::csi::backend::types::{AccessMode, AccessType, BackendInfo, Error, Features, VolumeCapability};

/// A volume is one file on one node: it can be used by one node at a time.
const ACCESS_MODES: [AccessMode; 4] = [
    AccessMode::SingleNodeWriter,
    AccessMode::SingleNodeReaderOnly,
    AccessMode::SingleNodeSingleWriter,
    AccessMode::SingleNodeMultiWriter,
];

/// Filesystems the host may put on a volume; an empty fs-type means [`DEFAULT_FS_TYPE`].
const FS_TYPES: [&str; 3] = ["ext4", "xfs", "btrfs"];
const DEFAULT_FS_TYPE: &str = "ext4";

pub fn info() -> BackendInfo {
    BackendInfo {
        name: "loopfile".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        features: Features::LIST_VOLUMES
            | Features::GET_VOLUME
            | Features::GET_CAPACITY
            | Features::SNAPSHOTS
            | Features::LIST_SNAPSHOTS
            | Features::CLONE_VOLUMES
            | Features::EXPAND_VOLUMES
            | Features::EXPAND_ONLINE
            | Features::BLOCK_VOLUMES
            | Features::NODE_LOCAL
            | Features::NODE_EXPANSION,
        access_modes: ACCESS_MODES.to_vec(),
        topology_keys: Vec::new(),
        default_fs_type: DEFAULT_FS_TYPE.into(),
    }
}

/// Checks every requested capability: a supported access mode, and block or a mount with a
/// supported filesystem.
pub fn check_capabilities(capabilities: &[VolumeCapability]) -> Result<(), Error> {
    for capability in capabilities {
        if !ACCESS_MODES.contains(&capability.access_mode) {
            return Err(Error::InvalidArgument(format!(
                "access mode {:?} is not supported: a loopfile volume is attached to one node at a time",
                capability.access_mode
            )));
        }
        if let AccessType::Mount(mount) = &capability.access_type
            && !mount.fs_type.is_empty()
            && !FS_TYPES.contains(&mount.fs_type.as_str())
        {
            return Err(Error::InvalidArgument(format!(
                "filesystem type {:?} is not supported (supported: {})",
                mount.fs_type,
                FS_TYPES.join(", ")
            )));
        }
    }
    Ok(())
}

/// Checks request parameters (`what` names them in the message: "StorageClass parameter",
/// …). loopfile takes none, so any key is an error rather than something silently ignored.
pub fn check_parameters(what: &str, parameters: &[(String, String)]) -> Result<(), Error> {
    match parameters.first() {
        Some((key, _)) => Err(Error::InvalidArgument(format!(
            "unknown {what} {key:?}: loopfile takes none"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::backend::types::MountAccess;

    fn mount(fs_type: &str, access_mode: AccessMode) -> VolumeCapability {
        VolumeCapability {
            access_type: AccessType::Mount(MountAccess {
                fs_type: fs_type.into(),
                mount_flags: vec!["noatime".into()],
            }),
            access_mode,
        }
    }

    #[test]
    fn info_declares_what_loopfile_does() {
        let info = info();
        assert_eq!(info.name, "loopfile");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(
            info.features
                .contains(Features::SNAPSHOTS | Features::NODE_LOCAL | Features::NODE_EXPANSION)
        );
        assert!(
            !info
                .features
                .intersects(Features::PUBLISH_UNPUBLISH | Features::PUBLISH_READONLY | Features::MODIFY_VOLUME)
        );
        assert!(info.topology_keys.is_empty());
        assert_eq!(info.default_fs_type, "ext4");
        assert_eq!(info.access_modes.len(), 4);
    }

    #[test]
    fn single_node_modes_and_known_filesystems_pass() {
        let block = VolumeCapability {
            access_type: AccessType::Block,
            access_mode: AccessMode::SingleNodeMultiWriter,
        };
        check_capabilities(&[
            mount("", AccessMode::SingleNodeWriter),
            mount("xfs", AccessMode::SingleNodeReaderOnly),
            mount("btrfs", AccessMode::SingleNodeSingleWriter),
            block,
        ])
        .unwrap();
        check_capabilities(&[]).unwrap();
    }

    #[test]
    fn multi_node_modes_and_other_filesystems_fail() {
        for mode in [
            AccessMode::MultiNodeReaderOnly,
            AccessMode::MultiNodeSingleWriter,
            AccessMode::MultiNodeMultiWriter,
        ] {
            assert!(matches!(
                check_capabilities(&[mount("ext4", mode)]),
                Err(Error::InvalidArgument(_))
            ));
        }
        let err = check_capabilities(&[
            mount("ext4", AccessMode::SingleNodeWriter),
            mount("zfs", AccessMode::SingleNodeWriter),
        ]);
        assert!(matches!(err, Err(Error::InvalidArgument(m)) if m.contains("\"zfs\"")));
    }

    #[test]
    fn any_parameter_is_unknown() {
        check_parameters("StorageClass parameter", &[]).unwrap();
        let err = check_parameters("StorageClass parameter", &[("size".into(), "1".into())]);
        assert!(matches!(err, Err(Error::InvalidArgument(m)) if m.contains("StorageClass parameter \"size\"")));
    }
}
