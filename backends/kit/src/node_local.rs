//! What a node-local volume supports — features, access modes and filesystems — for the backends whose
//! volumes live on the node that made them (loopfile, LVM), so what `info()` declares and
//! what requests are checked against agree.

use crate::types::{AccessMode, AccessType, BackendInfo, Error, Features, VolumeCapability};

/// Everything a node-local backend does: its volumes, snapshots, clones and expansion are
/// all on this node, and the host grows the device and filesystem after an expansion.
pub const FEATURES: Features = Features::LIST_VOLUMES
    .union(Features::GET_VOLUME)
    .union(Features::GET_CAPACITY)
    .union(Features::SNAPSHOTS)
    .union(Features::LIST_SNAPSHOTS)
    .union(Features::CLONE_VOLUMES)
    .union(Features::EXPAND_VOLUMES)
    .union(Features::EXPAND_ONLINE)
    .union(Features::BLOCK_VOLUMES)
    .union(Features::NODE_LOCAL)
    .union(Features::NODE_EXPANSION);

/// The `info()` of a node-local backend: [`FEATURES`], [`ACCESS_MODES`], no topology keys of
/// its own (the host adds the node segment).
pub fn info(name: &str, version: &str, default_fs_type: String) -> BackendInfo {
    BackendInfo {
        name: name.into(),
        version: version.into(),
        features: FEATURES,
        access_modes: ACCESS_MODES.to_vec(),
        topology_keys: Vec::new(),
        default_fs_type,
    }
}

/// A node-local volume is used by one node at a time.
pub const ACCESS_MODES: [AccessMode; 4] = [
    AccessMode::SingleNodeWriter,
    AccessMode::SingleNodeReaderOnly,
    AccessMode::SingleNodeSingleWriter,
    AccessMode::SingleNodeMultiWriter,
];

/// Filesystems the host may put on a volume.
pub const FS_TYPES: [&str; 3] = ["ext4", "xfs", "btrfs"];

/// The filesystem used when a mount capability names none (unless a backend lets the
/// operator choose another of [`FS_TYPES`]).
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// Checks every requested capability: a supported access mode, and block or a mount with a
/// supported filesystem (an empty fs-type means the default).
pub fn check_capabilities(capabilities: &[VolumeCapability]) -> Result<(), Error> {
    for capability in capabilities {
        if !ACCESS_MODES.contains(&capability.access_mode) {
            return Err(Error::InvalidArgument(format!(
                "access mode {:?} is not supported: the volume lives on one node and is used by one node at a time",
                capability.access_mode
            )));
        }
        if let AccessType::Mount(mount) = &capability.access_type
            && !mount.fs_type.is_empty()
        {
            check_fs_type(&mount.fs_type)?;
        }
    }
    Ok(())
}

/// Checks a filesystem type is one of [`FS_TYPES`].
pub fn check_fs_type(fs_type: &str) -> Result<(), Error> {
    if FS_TYPES.contains(&fs_type) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "filesystem type {fs_type:?} is not supported (supported: {})",
        FS_TYPES.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MountAccess;

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
    fn single_node_modes_and_known_filesystems_pass() {
        let block = VolumeCapability { access_type: AccessType::Block, access_mode: AccessMode::SingleNodeMultiWriter };
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
        for mode in
            [AccessMode::MultiNodeReaderOnly, AccessMode::MultiNodeSingleWriter, AccessMode::MultiNodeMultiWriter]
        {
            assert!(matches!(check_capabilities(&[mount("ext4", mode)]), Err(Error::InvalidArgument(_))));
        }
        let err = check_capabilities(&[
            mount("ext4", AccessMode::SingleNodeWriter),
            mount("zfs", AccessMode::SingleNodeWriter),
        ]);
        assert!(matches!(err, Err(Error::InvalidArgument(m)) if m.contains("\"zfs\"")));
        assert!(check_fs_type(DEFAULT_FS_TYPE).is_ok());
    }
}
