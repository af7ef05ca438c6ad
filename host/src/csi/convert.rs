//! Translation between CSI messages and the WIT contract's types, with the checks that
//! belong to the translation: a capability must name an access type and mode, and every
//! value a backend answers is checked against CSI's rules before it reaches the CO.
//!
//! This is the one place backend answers are checked: ids, sizes against the requested
//! range, contexts (CSI's 4 KiB maps), topology (Kubernetes label syntax, bounded, only
//! the keys the backend declared and never the host's own node key), page sizes and next
//! tokens, node topology and the `info()` declaration. A violation is INTERNAL naming the
//! backend ([`bad_answer`]): the CO is never handed something it would choke on.

use std::collections::{BTreeMap, HashMap};

use csi::volume_capability::{AccessType as CsiAccessType, access_mode::Mode};
use csi_proto::v1 as csi;
use tonic::Status;

use super::validate::{MAX_MAP, MAX_STRING};
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
        Err(bad_answer(backend.name(), format!("an invalid {what} id {}", escaped(local))))
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
/// node-local backends (which replaces whatever topology the backend answered).
pub fn volume(
    backend: &Backend,
    v: &rt::Volume,
    node_topology: Option<&[(String, String)]>,
) -> Result<csi::Volume, Status> {
    let capacity_bytes =
        i64::try_from(v.capacity_bytes).map_err(|_| bad_answer(backend.name(), "an impossible capacity"))?;
    let volume_context = context(backend, "volume context", &v.context)?;
    let accessible_topology = match node_topology {
        Some(segment) => vec![topology(segment)],
        None => accessible_topology(backend, &v.accessible_topology)?,
    };
    Ok(csi::Volume {
        capacity_bytes,
        volume_id: qualified(backend, "volume", &v.id)?,
        volume_context,
        content_source: v.content_source.as_ref().map(|s| content_source(backend, s)).transpose()?,
        accessible_topology,
    })
}

/// A created volume: [`volume`], and its capacity within the requested range (CSI: at
/// least `required_bytes`, at most `limit_bytes`, each when set).
pub fn created_volume(
    backend: &Backend,
    v: &rt::Volume,
    range: rt::CapacityRange,
    node_topology: Option<&[(String, String)]>,
) -> Result<csi::Volume, Status> {
    within_range(backend.name(), "created a volume of", v.capacity_bytes, range)?;
    volume(backend, v, node_topology)
}

/// An expansion: the new capacity is at least `required_bytes` (and at most `limit_bytes`).
pub fn expansion(backend: &Backend, e: &rt::Expansion, range: rt::CapacityRange) -> Result<i64, Status> {
    within_range(backend.name(), "expanded a volume to", e.capacity_bytes, range)?;
    i64::try_from(e.capacity_bytes).map_err(|_| bad_answer(backend.name(), "an impossible capacity"))
}

fn within_range(backend: &str, what: &str, bytes: u64, range: rt::CapacityRange) -> Result<(), Status> {
    if bytes < range.required_bytes || (range.limit_bytes != 0 && bytes > range.limit_bytes) {
        let limit = match range.limit_bytes {
            0 => "no limit".to_owned(),
            l => format!("limit {l}"),
        };
        return Err(Status::internal(format!(
            "backend {backend} {what} {bytes} bytes, outside the requested range (required {}, {limit})",
            range.required_bytes
        )));
    }
    Ok(())
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

/// A context map a backend answers (volume context, publish context): CSI's 4 KiB map
/// limit, keys non-empty and within 128 bytes, no key twice.
pub fn context(backend: &Backend, what: &str, pairs: &[(String, String)]) -> Result<HashMap<String, String>, Status> {
    string_map(pairs).map_err(|why| bad_answer(backend.name(), format!("a {what} that {why}")))
}

fn string_map(pairs: &[(String, String)]) -> Result<HashMap<String, String>, String> {
    let size: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_MAP {
        return Err(format!("holds {size} bytes, more than the {MAX_MAP} allowed"));
    }
    let mut map = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        if key.is_empty() || key.len() > MAX_STRING {
            return Err(format!("has a key of {} bytes (1 to {MAX_STRING} allowed)", key.len()));
        }
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(format!("has the key {} twice", escaped(key)));
        }
    }
    Ok(map)
}

/// Topologies a volume answers at most, and segments per topology.
pub const MAX_TOPOLOGIES: usize = 64;
pub const MAX_SEGMENTS: usize = 16;
/// Topology keys a backend may declare.
pub const MAX_TOPOLOGY_KEYS: usize = 16;

/// The accessible topology of a volume of a backend that sets its own: bounded, every key
/// one the backend declared (so never the host's node key), every value a label value.
fn accessible_topology(backend: &Backend, topologies: &[Vec<(String, String)>]) -> Result<Vec<csi::Topology>, Status> {
    if topologies.len() > MAX_TOPOLOGIES {
        return Err(bad_answer(
            backend.name(),
            format!("{} accessible topologies, more than the {MAX_TOPOLOGIES} allowed", topologies.len()),
        ));
    }
    topologies
        .iter()
        .map(|t| {
            segments(&backend.info.topology_keys, t)
                .map(|segments| csi::Topology { segments: segments.into_iter().collect() })
        })
        .collect::<Result<_, String>>()
        .map_err(|why| bad_answer(backend.name(), format!("an accessible topology with {why}")))
}

/// This node's segments for a backend's own topology keys (`node-topology`), checked like
/// a volume's topology.
pub fn node_topology_answer(
    backend: &Backend,
    segment: &[(String, String)],
) -> Result<BTreeMap<String, String>, Status> {
    segments(&backend.info.topology_keys, segment)
        .map_err(|why| bad_answer(backend.name(), format!("a node topology with {why}")))
}

fn segments(declared: &[String], segment: &[(String, String)]) -> Result<BTreeMap<String, String>, String> {
    if segment.is_empty() || segment.len() > MAX_SEGMENTS {
        return Err(format!("{} segments (1 to {MAX_SEGMENTS} allowed)", segment.len()));
    }
    let mut map = BTreeMap::new();
    for (key, value) in segment {
        if !declared.contains(key) {
            return Err(format!("the key {}, which the backend does not declare", escaped(key)));
        }
        if let Err(why) = label_value(value) {
            return Err(format!("the value {} for {key}: {why}", escaped(value)));
        }
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(format!("the key {key} twice"));
        }
    }
    Ok(map)
}

/// Checks what a backend declared at load: printable name and version within 128 bytes, a
/// default filesystem the host can make, at least one access mode (none twice), and
/// topology keys in Kubernetes label syntax, bounded, none twice and never `host_key` (the
/// host's own node key). The error says what is wrong; start-up names the instance.
pub fn check_info(info: &rt::BackendInfo, host_key: &str) -> Result<(), String> {
    for (field, value) in [("name", &info.name), ("version", &info.version)] {
        if value.is_empty() || value.len() > MAX_STRING || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(format!("info() {field} {} must be 1 to {MAX_STRING} printable characters", escaped(value)));
        }
    }
    if !FILESYSTEMS.contains(&info.default_fs_type.as_str()) {
        return Err(format!(
            "info() default-fs-type {} is not one the host makes ({})",
            escaped(&info.default_fs_type),
            FILESYSTEMS.join(", ")
        ));
    }
    if info.access_modes.is_empty() {
        return Err("info() declares no access mode".into());
    }
    if let Some(m) =
        info.access_modes.iter().enumerate().find_map(|(i, m)| info.access_modes[..i].contains(m).then_some(m))
    {
        return Err(format!("info() declares access mode {m:?} twice"));
    }
    if info.topology_keys.len() > MAX_TOPOLOGY_KEYS {
        return Err(format!(
            "info() declares {} topology keys, more than the {MAX_TOPOLOGY_KEYS} allowed",
            info.topology_keys.len()
        ));
    }
    for (i, key) in info.topology_keys.iter().enumerate() {
        label_key(key).map_err(|why| format!("info() topology key {}: {why}", escaped(key)))?;
        if key == host_key {
            return Err(format!("info() declares the host's own topology key {host_key}"));
        }
        if info.topology_keys[..i].contains(key) {
            return Err(format!("info() declares topology key {key} twice"));
        }
    }
    Ok(())
}

/// Entries the host asks a backend for in one list call, whatever the CO asked.
pub const PAGE_ENTRIES: u32 = 1000;
/// Encoded bytes of one list answer: under the 4 MiB a default gRPC client accepts.
pub const PAGE_BYTES: usize = 2 << 20;

/// A backend's next token, qualified with the instance so the host can route it back; the
/// result must fit CSI's 128-byte strings.
pub fn next_token(backend: &Backend, token: &str) -> Result<String, Status> {
    let qualified = format!("{}:{token}", backend.name());
    if qualified.len() > MAX_STRING || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad_answer(
            backend.name(),
            format!(
                "a next token of {} bytes; with the instance it must be printable and fit {MAX_STRING} bytes",
                token.len()
            ),
        ));
    }
    Ok(qualified)
}

/// A label key (and topology key): an optional DNS-subdomain prefix of at most 253 bytes
/// and `/`, then a name of 1 to 63 bytes.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|why| format!("prefix {why}"))?;
    }
    label_value(name).map_err(|why| format!("name {why}"))
}

/// A label value (and the name part of a key): 1 to 63 bytes of `[A-Za-z0-9._-]`, starting
/// and ending with a letter or digit.
fn label_value(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return Err(format!("must be 1 to 63 bytes, not {}", bytes.len()));
    }
    let inner_ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok = bytes[0].is_ascii_alphanumeric() && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !(inner_ok && ends_ok) {
        return Err("must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit".into());
    }
    Ok(())
}

/// A DNS subdomain (RFC 1123): at most 253 bytes of dot-separated lowercase labels.
fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("must be 1 to 253 bytes, not {}", name.len()));
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if !name.split('.').all(label_ok) {
        return Err("must be dot-separated lowercase DNS labels".into());
    }
    Ok(())
}

/// A backend string quoted into a message: at most 64 characters, control characters escaped.
fn escaped(s: &str) -> String {
    let more = if s.chars().nth(64).is_some() { "…" } else { "" };
    format!("\"{}\"{more}", s.chars().take(64).collect::<String>().escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn info() -> rt::BackendInfo {
        rt::BackendInfo {
            name: "cloud-disk".into(),
            version: "0.1.0".into(),
            features: Features::empty(),
            access_modes: vec![AccessMode::SingleNodeWriter],
            topology_keys: vec!["topology.kubernetes.io/zone".into()],
            default_fs_type: "ext4".into(),
        }
    }

    const HOST_KEY: &str = "topology.wasmcsi.dev/node";

    #[test]
    fn label_syntax_follows_kubernetes() {
        let longest_prefix = format!("{}{}", format!("{}.", "a".repeat(63)).repeat(3), "a".repeat(61));
        assert_eq!(longest_prefix.len(), 253);
        for good in ["zone", "topology.kubernetes.io/zone", "a/b", "A-b_c.9", &format!("{longest_prefix}/x")] {
            assert_eq!(label_key(good), Ok(()), "{good}");
        }
        for bad in ["", "/zone", "zone/", "-zone", "zone-", "Upper.io/zone", "a b", "a/b/c", &"n".repeat(64)] {
            assert!(label_key(bad).is_err(), "{bad:?}");
        }
        assert!(label_key(&format!("a{longest_prefix}/x")).is_err());
        assert_eq!(label_value(&"v".repeat(63)), Ok(()));
        assert!(label_value(&"v".repeat(64)).is_err());
        assert!(label_value("").is_err());
        assert!(label_value("eu-west-1a\n").is_err());
    }

    #[test]
    fn topology_segments_are_declared_bounded_and_well_formed() {
        let declared = vec!["topology.kubernetes.io/zone".to_string()];
        let ok = segments(&declared, &list(&[("topology.kubernetes.io/zone", "eu-west-1a")])).unwrap();
        assert_eq!(ok.get("topology.kubernetes.io/zone").map(String::as_str), Some("eu-west-1a"));
        let undeclared = segments(&declared, &list(&[(HOST_KEY, "other-node")])).unwrap_err();
        assert!(undeclared.contains("which the backend does not declare"), "{undeclared}");
        let big = segments(&declared, &[("topology.kubernetes.io/zone".into(), "z".repeat(1 << 20))]).unwrap_err();
        assert!(big.contains("must be 1 to 63 bytes, not 1048576") && big.len() < 300, "{big}");
        let many: Vec<_> = (0..17).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert_eq!(segments(&declared, &many).unwrap_err(), "17 segments (1 to 16 allowed)");
        assert!(segments(&declared, &[]).is_err());
        let twice = list(&[("topology.kubernetes.io/zone", "a"), ("topology.kubernetes.io/zone", "b")]);
        assert!(segments(&declared, &twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn context_maps_follow_csi_sizes() {
        assert_eq!(string_map(&list(&[("k", &"v".repeat(4095))])).unwrap().len(), 1);
        assert_eq!(
            string_map(&list(&[("k", &"v".repeat(4096))])).unwrap_err(),
            "holds 4097 bytes, more than the 4096 allowed"
        );
        assert!(string_map(&list(&[("", "v")])).is_err());
        assert!(string_map(&list(&[(&"k".repeat(129), "v")])).is_err());
        assert!(string_map(&list(&[("k", "a"), ("k", "b")])).unwrap_err().contains("twice"));
    }

    #[test]
    fn capacity_must_fall_in_the_requested_range() {
        let range = |required_bytes, limit_bytes| rt::CapacityRange { required_bytes, limit_bytes };
        assert!(within_range("b", "created a volume of", 4 << 20, range(4 << 20, 0)).is_ok());
        assert!(within_range("b", "created a volume of", 8 << 20, range(4 << 20, 8 << 20)).is_ok());
        assert!(within_range("b", "created a volume of", 0, range(0, 0)).is_ok());
        let small = within_range("b", "created a volume of", 1, range(4 << 20, 0)).unwrap_err();
        assert_eq!(small.code(), tonic::Code::Internal);
        assert_eq!(
            small.message(),
            "backend b created a volume of 1 bytes, outside the requested range (required 4194304, no limit)"
        );
        let large = within_range("b", "created a volume of", (8 << 20) + 1, range(4 << 20, 8 << 20)).unwrap_err();
        assert_eq!(large.code(), tonic::Code::Internal);
    }

    #[test]
    fn declarations_are_checked() {
        assert_eq!(check_info(&info(), HOST_KEY), Ok(()));
        let mut own_key = info();
        own_key.topology_keys.push(HOST_KEY.into());
        assert_eq!(
            check_info(&own_key, HOST_KEY).unwrap_err(),
            "info() declares the host's own topology key topology.wasmcsi.dev/node"
        );
        let mut bad_key = info();
        bad_key.topology_keys = vec!["Zone Key".into()];
        assert!(check_info(&bad_key, HOST_KEY).unwrap_err().starts_with("info() topology key \"Zone Key\""));
        let mut twice = info();
        twice.topology_keys.push("topology.kubernetes.io/zone".into());
        assert!(check_info(&twice, HOST_KEY).unwrap_err().contains("twice"));
        let mut many = info();
        many.topology_keys = (0..17).map(|i| format!("k{i}")).collect();
        assert!(check_info(&many, HOST_KEY).is_err());
        let mut fs = info();
        fs.default_fs_type = "ntfs".into();
        assert!(check_info(&fs, HOST_KEY).unwrap_err().starts_with("info() default-fs-type \"ntfs\""));
        let mut name = info();
        name.name = "n".repeat(1 << 20);
        let message = check_info(&name, HOST_KEY).unwrap_err();
        assert!(message.starts_with("info() name \"nnn") && message.len() < 200, "{message}");
        let mut version = info();
        version.version = "1.0\u{1b}[2J".into();
        assert!(check_info(&version, HOST_KEY).unwrap_err().contains("\\u{1b}"));
        let mut modes = info();
        modes.access_modes.clear();
        assert_eq!(check_info(&modes, HOST_KEY).unwrap_err(), "info() declares no access mode");
        modes.access_modes = vec![AccessMode::SingleNodeWriter, AccessMode::SingleNodeWriter];
        assert!(check_info(&modes, HOST_KEY).unwrap_err().contains("twice"));
    }
}
