//! A backend that misbehaves on request, so tests can prove the sandbox holds: the host
//! must survive a trap, an endless loop, a memory hog and forbidden capability use, and
//! answer each with a clean gRPC error.
//!
//! CreateVolume's `misbehave` parameter picks the act: `trap`, `loop`, `oom`, `exec`
//! (runs a program it was not granted), `escape` (reads outside its directory). Without it
//! the call succeeds with a fake volume, so the instance itself stays usable.

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

fn misbehave(act: &str) -> Result<String, Error> {
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
        "escape" => std::fs::read_to_string("/data/../etc/passwd")
            .map(|_| "read /etc/passwd".into())
            .map_err(|e| Error::FailedPrecondition(format!("escape refused: {e}"))),
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
        let act = request.parameters.iter().find(|(k, _)| k == "misbehave").map(|(_, v)| v.as_str());
        let note = match act {
            Some(act) => misbehave(act)?,
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
    fn node_device(_: String, _: Params, _: Params) -> Result<Device, Error> {
        unimplemented()
    }

    fn node_topology() -> Result<Topology, Error> {
        Ok(Vec::new())
    }
}

// Only a component exports the interface: natively (where the workspace builds every
// crate) the export names are not valid linker symbols for a cdylib.
#[cfg(target_arch = "wasm32")]
export!(Hostile);
