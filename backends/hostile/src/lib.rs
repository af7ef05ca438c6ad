//! A backend that misbehaves on request, so tests can prove the sandbox holds: the host
//! must survive a trap, an endless loop, a memory hog and forbidden capability use, and
//! answer each with a clean gRPC error.
//!
//! CreateVolume's `misbehave` parameter picks the act: `trap`, `loop`, `oom`, `exec`
//! (runs a program it was not granted), `run` (runs the parameter `program` with the
//! parameter `args`, one argument per line: what a backend could try on a granted program),
//! `escape` (reads outside its directory), `plant-symlink` (makes `/data/<link>` a symlink to
//! the parameter `points-to`, e.g. a relative path into another backend's directory), `sleep`
//! (10 s in a WASI clock wait), `sleep-forever`, `http-fields` (makes `wasi:http` header
//! objects, which live in host memory, in a loop), `log-spam` (logs without end) and
//! `huge-error` (answers a 50 MB error message with control characters). Without it the
//! call succeeds with a fake volume, so the instance itself stays usable. The setting
//! `validate = "sleep"` makes `validate-settings` sleep forever (a hung start-up).
//!
//! NodeStage/NodePublish: the volume context key `node-device` picks what `node-device`
//! answers: `file:<guest path>`, `block:<path>` or `disk:<serial>:<path>` (a device it was
//! not granted, a symlink it planted, a serial that is only a suffix of a disk's name).
//! Without that key (NodeUnstage has no context) the volume id itself is read so.
//!
//! Answers that break CSI's rules, for the host's answer checks:
//! - CreateVolume `misbehave`: `topology-1mib` (a 1 MiB topology value), `topology-100k`
//!   (100k segments), `topologies-100k` (100k topologies), `topology-host-key` (the host's
//!   own node key), `capacity-1` (1 byte whatever was asked), `context-5k` (5 KiB context).
//! - ListVolumes, by the starting token the host hands on (`<instance>:<act>`): `million`
//!   (1,000,001 entries), `more-than-asked` (one more than max-entries), `token-1mib` (a
//!   1 MiB next token), `huge-page` (as many entries as asked, 4 KiB of context each).
//! - ControllerPublish of volume `h-context-5k`: a 5 KiB publish context; ControllerExpand:
//!   always 1 byte.
//! - Settings: `features` (comma-separated: `list-volumes`, `publish-unpublish`,
//!   `expand-volumes`), `topology-key` (a key it declares and answers in node-topology),
//!   `info` (`host-topology-key`, `bad-fs-type`, `huge-name`, `no-access-modes`: a bad
//!   declaration), `node-topology` (`loop`, `fail`, `host-key`, `huge`), `find`
//!   (`claim-all`: find-volume and find-snapshot claim every name).

wit_bindgen::generate!({ path: "../../wit", world: "backend-component" });

use csi::backend::host;
use csi::backend::types::{
    BackendInfo, Capacity, CapacityRange, Device, Error, Expansion, Features, Params, Snapshot, SnapshotPage, Topology,
    Volume, VolumeCapability, VolumePage,
};
use exports::csi::backend::backend::{CreateVolumeRequest, Guest};

struct Hostile;

fn unimplemented<T>() -> Result<T, Error> {
    Err(Error::Unimplemented("the hostile backend only creates volumes".into()))
}

/// The volume context key whose value `node-device` answers (see the module header).
const NODE_DEVICE: &str = "node-device";

fn param<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `file:<guest path>`, `block:<path>`, `disk:<serial>:<path>`.
fn parse_device(text: &str) -> Result<Device, Error> {
    let bad = || Error::InvalidArgument(format!("{NODE_DEVICE}={text:?} is not file:, block: or disk:"));
    let (kind, rest) = text.split_once(':').ok_or_else(bad)?;
    match kind {
        "file" => Ok(Device::File(rest.into())),
        "block" => Ok(Device::Block(rest.into())),
        "disk" => {
            let (serial, path) = rest.split_once(':').ok_or_else(bad)?;
            Ok(Device::Disk(csi::backend::types::Disk { serial: serial.into(), path: path.into() }))
        }
        _ => Err(bad()),
    }
}

/// Makes `/data/<link>` a symlink to `points_to`, through the WASI preopen.
#[cfg(target_arch = "wasm32")]
fn plant_symlink(link: &str, points_to: &str) -> Result<String, Error> {
    let (dir, _) = wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == "/data")
        .ok_or_else(|| Error::FailedPrecondition("no /data preopen to plant a symlink in".into()))?;
    dir.symlink_at(points_to, link)
        .map(|()| format!("planted /data/{link} -> {points_to}"))
        .map_err(|e| Error::FailedPrecondition(format!("planting /data/{link} failed: {e:?}")))
}

#[cfg(not(target_arch = "wasm32"))]
fn plant_symlink(_: &str, _: &str) -> Result<String, Error> {
    Err(Error::Unimplemented("symlinks are planted by the component only".into()))
}

fn misbehave(act: &str, params: &Params) -> Result<String, Error> {
    match act {
        "trap" => panic!("hostile backend traps on purpose"),
        "loop" => loop {
            std::hint::black_box(());
        },
        "oom" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 16 << 20]);
            }
        }
        "exec" => host::exec("/bin/sh", &["-c".into(), "id".into()], &[])
            .map(|out| format!("exec ran with status {}", out.status)),
        "run" => {
            let args: Vec<String> = param(params, "args").unwrap_or("").lines().map(str::to_owned).collect();
            host::exec(param(params, "program").unwrap_or(""), &args, &[])
                .map(|out| format!("run ended with status {}", out.status))
        }
        "escape" => std::fs::read_to_string("/data/../etc/passwd")
            .map(|_| "read /etc/passwd".into())
            .map_err(|e| Error::FailedPrecondition(format!("escape refused: {e}"))),
        "plant-symlink" => {
            let (Some(link), Some(points_to)) = (param(params, "link"), param(params, "points-to")) else {
                return Err(Error::InvalidArgument("plant-symlink needs the parameters link and points-to".into()));
            };
            plant_symlink(link, points_to)
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(10));
            Ok("slept 10 s".into())
        }
        "sleep-forever" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "http-fields" => http_fields(),
        "log-spam" => loop {
            host::log(host::Level::Error, &"spam\n".repeat(1 << 10));
        },
        "huge-error" => {
            let mut message = String::with_capacity(50_000_100);
            message.push_str("\u{1b}[2J\nforged log line");
            message.extend(std::iter::repeat_n('x', 50_000_000));
            Err(Error::Internal(message))
        }
        other => Err(Error::InvalidArgument(format!("unknown misbehave act {other:?}"))),
    }
}

/// Makes `wasi:http` header maps with a 64 KiB value each and keeps them: only their
/// handles live in guest memory, their contents in the host's.
#[cfg(target_arch = "wasm32")]
fn http_fields() -> Result<String, Error> {
    let value = vec![b'a'; 64 << 10];
    let mut kept = Vec::new();
    loop {
        let fields = wasi::http::types::Fields::from_list(&[("x-hostile".to_string(), value.clone())])
            .map_err(|e| Error::Internal(format!("fields: {e:?}")))?;
        kept.push(fields);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn http_fields() -> Result<String, Error> {
    Err(Error::Unimplemented("wasi:http fields are made by the component only".into()))
}

/// The host's own topology key under the default driver name.
const HOST_TOPOLOGY_KEY: &str = "topology.wasmcsi.dev/node";
/// The topology key answered when the settings declare none.
const UNDECLARED_KEY: &str = "topology.hostile.test/zone";

fn setting(key: &str) -> Option<String> {
    host::settings().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn declared_features() -> Features {
    let mut features = Features::empty();
    for name in setting("features").unwrap_or_default().split(',') {
        features |= match name.trim() {
            "list-volumes" => Features::LIST_VOLUMES,
            "publish-unpublish" => Features::PUBLISH_UNPUBLISH,
            "expand-volumes" => Features::EXPAND_VOLUMES,
            _ => Features::empty(),
        };
    }
    features
}

fn topology_key() -> String {
    setting("topology-key").unwrap_or_else(|| UNDECLARED_KEY.into())
}

fn fake_volume(id: &str, capacity_bytes: u64) -> Volume {
    Volume { id: id.into(), capacity_bytes, context: vec![], content_source: None, accessible_topology: vec![] }
}

/// A volume answer that breaks CSI's rules, for the `misbehave` acts that pick one.
fn bad_volume(act: &str, request: &CreateVolumeRequest) -> Option<Volume> {
    let mut volume = fake_volume(&format!("h-{}", request.name.len()), request.capacity.required_bytes);
    match act {
        "topology-1mib" => volume.accessible_topology = vec![vec![(topology_key(), "z".repeat(1 << 20))]],
        "topology-100k" => {
            volume.accessible_topology = vec![(0..100_000).map(|i| (format!("k{i}"), "v".into())).collect()]
        }
        "topologies-100k" => volume.accessible_topology = vec![vec![(topology_key(), "z".into())]; 100_000],
        "topology-host-key" => volume.accessible_topology = vec![vec![(HOST_TOPOLOGY_KEY.into(), "other".into())]],
        "capacity-1" => volume.capacity_bytes = 1,
        "context-5k" => volume.context = vec![("note".into(), "x".repeat(5 << 10))],
        _ => return None,
    }
    Some(volume)
}

/// A list answer that breaks CSI's rules, picked by the starting token.
fn bad_page(act: &str, max_entries: u32) -> Option<VolumePage> {
    let entries = |n: usize, context: usize| {
        let mut volume = fake_volume("h-listed", 1 << 20);
        if context > 0 {
            volume.context = vec![("note".into(), "x".repeat(context))];
        }
        vec![volume; n]
    };
    let (entries, next_token) = match act {
        "million" => (entries(1_000_001, 0), String::new()),
        "more-than-asked" => (entries(max_entries as usize + 1, 0), String::new()),
        "token-1mib" => (entries(1, 0), "t".repeat(1 << 20)),
        "huge-page" => (entries(max_entries as usize, 4000), String::new()),
        _ => return None,
    };
    Some(VolumePage { entries, next_token })
}

/// A declaration that breaks the rules, per the `info` setting.
fn bad_info(info: &mut BackendInfo) {
    match setting("info").as_deref() {
        Some("host-topology-key") => info.topology_keys = vec![HOST_TOPOLOGY_KEY.into()],
        Some("bad-fs-type") => info.default_fs_type = "ntfs".into(),
        Some("huge-name") => info.name = "n".repeat(1 << 20),
        Some("no-access-modes") => info.access_modes.clear(),
        _ => {}
    }
}

impl Guest for Hostile {
    fn info() -> BackendInfo {
        let mut info = BackendInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features: declared_features(),
            access_modes: vec![csi::backend::types::AccessMode::SingleNodeWriter],
            topology_keys: setting("topology-key").into_iter().collect(),
            default_fs_type: "ext4".into(),
        };
        bad_info(&mut info);
        info
    }

    fn validate_settings() -> Result<(), Error> {
        if host::settings().iter().any(|(k, v)| k == "validate" && v == "sleep") {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Ok(())
    }

    fn create_volume(request: CreateVolumeRequest) -> Result<Volume, Error> {
        let act = param(&request.parameters, "misbehave");
        if let Some(volume) = act.and_then(|act| bad_volume(act, &request)) {
            return Ok(volume);
        }
        let note = match act {
            Some(act) => misbehave(act, &request.parameters)?,
            None => "well behaved".into(),
        };
        Ok(Volume {
            id: format!("h-{}", request.name.len()),
            capacity_bytes: request.capacity.required_bytes,
            context: vec![("note".into(), note)],
            content_source: None,
            accessible_topology: vec![],
        })
    }

    fn find_volume(_: String) -> Result<Option<Volume>, Error> {
        Ok((setting("find").as_deref() == Some("claim-all")).then(|| fake_volume("h-claimed", 1 << 20)))
    }
    fn delete_volume(_: String) -> Result<(), Error> {
        Ok(())
    }
    fn get_volume(_: String) -> Result<Volume, Error> {
        unimplemented()
    }
    fn list_volumes(max_entries: u32, starting_token: String) -> Result<VolumePage, Error> {
        Ok(bad_page(&starting_token, max_entries).unwrap_or(VolumePage { entries: vec![], next_token: String::new() }))
    }
    fn get_capacity(_: Vec<VolumeCapability>, _: Params, _: Option<Params>) -> Result<Capacity, Error> {
        unimplemented()
    }
    fn expand_volume(_: String, _: CapacityRange) -> Result<Expansion, Error> {
        Ok(Expansion { capacity_bytes: 1, node_expansion_required: false })
    }
    fn modify_volume(_: String, _: Params) -> Result<(), Error> {
        unimplemented()
    }
    fn create_snapshot(_: String, _: String, _: Params) -> Result<Snapshot, Error> {
        unimplemented()
    }
    fn find_snapshot(_: String) -> Result<Option<Snapshot>, Error> {
        Ok((setting("find").as_deref() == Some("claim-all")).then(|| Snapshot {
            id: "h-claimed".into(),
            source_volume_id: "h-claimed".into(),
            size_bytes: 1 << 20,
            creation_time: 0,
            ready_to_use: true,
        }))
    }
    fn delete_snapshot(_: String) -> Result<(), Error> {
        unimplemented()
    }
    fn list_snapshots(_: String, _: String, _: u32, _: String) -> Result<SnapshotPage, Error> {
        unimplemented()
    }
    fn controller_publish(id: String, _: String, _: VolumeCapability, _: bool, _: Params) -> Result<Params, Error> {
        match id.as_str() {
            "h-context-5k" => Ok(vec![("note".into(), "x".repeat(5 << 10))]),
            _ => Ok(vec![]),
        }
    }
    fn controller_unpublish(_: String, _: String) -> Result<(), Error> {
        Ok(())
    }
    fn node_device(volume_id: String, volume_context: Params, _: Params) -> Result<Device, Error> {
        match param(&volume_context, NODE_DEVICE) {
            Some(device) => parse_device(device),
            // Unstage passes no context: a volume id such as `file:/data/x` says it then.
            None => parse_device(&volume_id).or_else(|_| unimplemented()),
        }
    }

    fn node_topology() -> Result<Topology, Error> {
        match setting("node-topology").as_deref() {
            Some("loop") => loop {
                std::hint::black_box(());
            },
            Some("fail") => Err(Error::Unavailable("hostile node-topology fails on purpose".into())),
            Some("host-key") => Ok(vec![(HOST_TOPOLOGY_KEY.into(), "other".into())]),
            Some("huge") => Ok((0..100_000).map(|i| (format!("k{i}"), "v".into())).collect()),
            _ => Ok(setting("topology-key").map(|key| vec![(key, "zone-1".into())]).unwrap_or_default()),
        }
    }
}

// Only a component exports the interface: natively (where the workspace builds every
// crate) the export names are not valid linker symbols for a cdylib.
#[cfg(target_arch = "wasm32")]
export!(Hostile);
