//! Translation between CSI messages and the WIT contract's types, with the checks that
//! belong to the translation: a capability must name an access type and mode, ids coming
//! back from a backend must be well formed before they are qualified and handed to the CO.

use std::collections::HashMap;

use csi::volume_capability::{AccessType as CsiAccessType, access_mode::Mode};
use csi_proto::v1 as csi;
use tonic::Status;

use super::{ids, status::bad_answer};
use crate::runtime::{self as rt, AccessMode, AccessType, Backend, Features, MountAccess};

/// Filesystems the host can create and mount.
pub const FILESYSTEMS: &[&str] = &["ext4", "xfs", "btrfs"];

pub fn capability(cap: &csi::VolumeCapability) -> Result<rt::VolumeCapability, Status> {
    let access_type = match &cap.access_type {
        Some(CsiAccessType::Mount(m)) => {
            AccessType::Mount(MountAccess { fs_type: m.fs_type.clone(), mount_flags: m.mount_flags.clone() })
        }
        Some(CsiAccessType::Block(_)) => AccessType::Block,
        None => return Err(Status::invalid_argument("volume capability needs an access_type (mount or block)")),
    };
    let mode = cap.access_mode.as_ref().map(|m| m.mode()).unwrap_or(Mode::Unknown);
    let access_mode = match mode {
        Mode::SingleNodeWriter => AccessMode::SingleNodeWriter,
        Mode::SingleNodeReaderOnly => AccessMode::SingleNodeReaderOnly,
        Mode::MultiNodeReaderOnly => AccessMode::MultiNodeReaderOnly,
        Mode::MultiNodeSingleWriter => AccessMode::MultiNodeSingleWriter,
        Mode::MultiNodeMultiWriter => AccessMode::MultiNodeMultiWriter,
        Mode::SingleNodeSingleWriter => AccessMode::SingleNodeSingleWriter,
        Mode::SingleNodeMultiWriter => AccessMode::SingleNodeMultiWriter,
        Mode::Unknown => return Err(Status::invalid_argument("volume capability needs an access_mode")),
    };
    Ok(rt::VolumeCapability { access_type, access_mode })
}

/// Converts a required, non-empty capability list.
pub fn capabilities(field: &str, caps: &[csi::VolumeCapability]) -> Result<Vec<rt::VolumeCapability>, Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    caps.iter().map(capability).collect()
}

/// Why `backend` cannot serve `cap`, if it cannot.
pub fn unsupported(backend: &Backend, cap: &rt::VolumeCapability) -> Option<String> {
    let modes = &backend.info.access_modes;
    // The spec: a plugin with either single-node multi-writer mode must accept SINGLE_NODE_WRITER.
    let single_node_writer = cap.access_mode == AccessMode::SingleNodeWriter
        && (modes.contains(&AccessMode::SingleNodeSingleWriter) || modes.contains(&AccessMode::SingleNodeMultiWriter));
    if !modes.contains(&cap.access_mode) && !single_node_writer {
        return Some(format!("backend {} does not support access mode {:?}", backend.name(), cap.access_mode));
    }
    match &cap.access_type {
        AccessType::Block if !backend.info.features.contains(Features::BLOCK_VOLUMES) => {
            Some(format!("backend {} does not provide block volumes", backend.name()))
        }
        AccessType::Mount(m) if !m.fs_type.is_empty() && !FILESYSTEMS.contains(&m.fs_type.as_str()) => {
            Some(format!("filesystem {:?} is not supported (supported: {})", m.fs_type, FILESYSTEMS.join(", ")))
        }
        _ => None,
    }
}

pub fn capacity_range(range: Option<&csi::CapacityRange>) -> Result<rt::CapacityRange, Status> {
    let Some(range) = range else { return Ok(rt::CapacityRange { required_bytes: 0, limit_bytes: 0 }) };
    let bytes = |field: &str, v: i64| {
        u64::try_from(v)
            .map_err(|_| Status::out_of_range(format!("capacity_range.{field} must not be negative (got {v})")))
    };
    let (required_bytes, limit_bytes) =
        (bytes("required_bytes", range.required_bytes)?, bytes("limit_bytes", range.limit_bytes)?);
    if limit_bytes != 0 && limit_bytes < required_bytes {
        return Err(Status::out_of_range(format!(
            "capacity_range.limit_bytes {limit_bytes} is below required_bytes {required_bytes}"
        )));
    }
    Ok(rt::CapacityRange { required_bytes, limit_bytes })
}

pub fn pairs(map: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    pairs.sort();
    pairs
}

pub fn topology(segments: &[(String, String)]) -> csi::Topology {
    csi::Topology { segments: segments.iter().cloned().collect() }
}

/// The node's own topology segment, carried by volumes of node-local backends.
pub fn node_segment(key: &str, node_id: &str) -> Vec<(String, String)> {
    vec![(key.to_owned(), node_id.to_owned())]
}

/// Checks a backend-local id from a backend and qualifies it with the instance.
pub fn qualified(backend: &Backend, what: &str, local: &str) -> Result<String, Status> {
    if ids::is_valid_local(local) {
        Ok(ids::qualify(backend.name(), local))
    } else {
        Err(bad_answer(backend.name(), format!("an invalid {what} id {:?}", local.escape_debug().to_string())))
    }
}

pub fn content_source(backend: &Backend, source: &rt::ContentSource) -> Result<csi::VolumeContentSource, Status> {
    use csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
    let source = match source {
        rt::ContentSource::Snapshot(id) => {
            Type::Snapshot(SnapshotSource { snapshot_id: qualified(backend, "snapshot", id)? })
        }
        rt::ContentSource::Volume(id) => Type::Volume(VolumeSource { volume_id: qualified(backend, "volume", id)? }),
    };
    Ok(csi::VolumeContentSource { r#type: Some(source) })
}

/// A backend volume as the CO sees it. `node_topology` is the node segment for volumes of
/// node-local backends.
pub fn volume(
    backend: &Backend,
    v: &rt::Volume,
    node_topology: Option<&[(String, String)]>,
) -> Result<csi::Volume, Status> {
    let capacity_bytes =
        i64::try_from(v.capacity_bytes).map_err(|_| bad_answer(backend.name(), "an impossible capacity"))?;
    let volume_context: HashMap<String, String> = v.context.iter().cloned().collect();
    super::validate::map("volume_context", &volume_context).map_err(|e| bad_answer(backend.name(), e.message()))?;
    let accessible_topology = match node_topology {
        Some(segment) => vec![topology(segment)],
        None => v.accessible_topology.iter().map(|t| topology(t)).collect(),
    };
    Ok(csi::Volume {
        capacity_bytes,
        volume_id: qualified(backend, "volume", &v.id)?,
        volume_context,
        content_source: v.content_source.as_ref().map(|s| content_source(backend, s)).transpose()?,
        accessible_topology,
    })
}

pub fn snapshot(backend: &Backend, s: &rt::Snapshot) -> Result<csi::Snapshot, Status> {
    Ok(csi::Snapshot {
        size_bytes: i64::try_from(s.size_bytes)
            .map_err(|_| bad_answer(backend.name(), "an impossible snapshot size"))?,
        snapshot_id: qualified(backend, "snapshot", &s.id)?,
        source_volume_id: qualified(backend, "volume", &s.source_volume_id)?,
        creation_time: Some(prost_types::Timestamp { seconds: s.creation_time.min(i64::MAX as u64) as i64, nanos: 0 }),
        ready_to_use: s.ready_to_use,
        group_snapshot_id: String::new(),
    })
}
