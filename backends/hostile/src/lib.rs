//! A backend that misbehaves on request, so tests can prove the sandbox holds: the host
//! must survive a trap, an endless loop, a memory hog and forbidden capability use, and
//! answer each with a clean gRPC error.
//!
//! CreateVolume's `misbehave` parameter picks the act: `trap`, `loop`, `oom`, `exec`
//! (runs a program it was not granted), `run` (runs the parameter `program` with the
//! parameter `args`, one argument per line: what a backend could try on a granted program),
//! `escape` (reads outside its directory), `plant-symlink` (makes `/data/<link>` a symlink to
//! the parameter `points-to`, e.g. a relative path into another backend's directory). Without
//! it the call succeeds with a fake volume, so the instance itself stays usable.
//!
//! NodeStage/NodePublish: the volume context key `node-device` picks what `node-device`
//! answers: `file:<guest path>`, `block:<path>` or `disk:<serial>:<path>` (a device it was
//! not granted, a symlink it planted, a serial that is only a suffix of a disk's name).
//! Without that key (NodeUnstage has no context) the volume id itself is read so.

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
            host::exec(param(params, "program").unwrap_or(""), &args, &[]).map(|out| format!("run ended with status {}", out.status))
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
        other => Err(Error::InvalidArgument(format!("unknown misbehave act {other:?}"))),
    }
}

impl Guest for Hostile {
    fn info() -> BackendInfo {
        BackendInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features: Features::empty(),
            access_modes: vec![csi::backend::types::AccessMode::SingleNodeWriter],
            topology_keys: vec![],
            default_fs_type: "ext4".into(),
        }
    }

    fn validate_settings() -> Result<(), Error> {
        Ok(())
    }

    fn create_volume(request: CreateVolumeRequest) -> Result<Volume, Error> {
        let act = param(&request.parameters, "misbehave");
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
        Ok(None)
    }
    fn delete_volume(_: String) -> Result<(), Error> {
        Ok(())
    }
    fn get_volume(_: String) -> Result<Volume, Error> {
        unimplemented()
    }
    fn list_volumes(_: u32, _: String) -> Result<VolumePage, Error> {
        unimplemented()
    }
    fn get_capacity(_: Vec<VolumeCapability>, _: Params, _: Option<Params>) -> Result<Capacity, Error> {
        unimplemented()
    }
    fn expand_volume(_: String, _: CapacityRange) -> Result<Expansion, Error> {
        unimplemented()
    }
    fn modify_volume(_: String, _: Params) -> Result<(), Error> {
        unimplemented()
    }
    fn create_snapshot(_: String, _: String, _: Params) -> Result<Snapshot, Error> {
        unimplemented()
    }
    fn find_snapshot(_: String) -> Result<Option<Snapshot>, Error> {
        Ok(None)
    }
    fn delete_snapshot(_: String) -> Result<(), Error> {
        unimplemented()
    }
    fn list_snapshots(_: String, _: String, _: u32, _: String) -> Result<SnapshotPage, Error> {
        unimplemented()
    }
    fn controller_publish(_: String, _: String, _: VolumeCapability, _: bool, _: Params) -> Result<Params, Error> {
        unimplemented()
    }
    fn controller_unpublish(_: String, _: String) -> Result<(), Error> {
        unimplemented()
    }
    fn node_device(volume_id: String, volume_context: Params, _: Params) -> Result<Device, Error> {
        match param(&volume_context, NODE_DEVICE) {
            Some(device) => parse_device(device),
            // Unstage passes no context: a volume id such as `file:/data/x` says it then.
            None => parse_device(&volume_id).or_else(|_| unimplemented()),
        }
    }

    fn node_topology() -> Result<Topology, Error> {
        Ok(Vec::new())
    }
}

// Only a component exports the interface: natively (where the workspace builds every
// crate) the export names are not valid linker symbols for a cdylib.
#[cfg(target_arch = "wasm32")]
export!(Hostile);
