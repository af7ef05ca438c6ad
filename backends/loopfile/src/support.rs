//! What loopfile supports — features, access modes, request parameters — in one place, so
//! what `info()` declares and what requests are checked against agree. A volume is one file
//! on one node, so its access modes and filesystems are those of `kit::node_local`.

use kit::node_local::DEFAULT_FS_TYPE;
use kit::types::{BackendInfo, Error};

pub fn info() -> BackendInfo {
    kit::node_local::info("loopfile", env!("CARGO_PKG_VERSION"), DEFAULT_FS_TYPE.into())
}

/// Checks request parameters (`what` names them in the message: "StorageClass parameter",
/// …). loopfile takes none, so any key is an error rather than something silently ignored.
pub fn check_parameters(what: &str, parameters: &[(String, String)]) -> Result<(), Error> {
    match parameters.first() {
        Some((key, _)) => Err(Error::InvalidArgument(format!("unknown {what} {key:?}: loopfile takes none"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::types::Features;

    #[test]
    fn info_declares_what_loopfile_does() {
        let info = info();
        assert_eq!(info.name, "loopfile");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(info.features.contains(Features::SNAPSHOTS | Features::NODE_LOCAL | Features::NODE_EXPANSION));
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
    fn any_parameter_is_unknown() {
        check_parameters("StorageClass parameter", &[]).unwrap();
        let err = check_parameters("StorageClass parameter", &[("size".into(), "1".into())]);
        assert!(matches!(err, Err(Error::InvalidArgument(m)) if m.contains("StorageClass parameter \"size\"")));
    }
}
