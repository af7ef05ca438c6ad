//! The CSI services the host serves, and the driver state they share.

mod backends;
mod controller;
mod convert;
mod group_controller;
mod identity;
mod ids;
mod locks;
mod node;
mod status;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use backends::{BACKEND_PARAMETER, Backends};
pub use controller::ControllerService;
pub use group_controller::GroupControllerService;
pub use identity::IdentityService;
pub use node::NodeService;

use crate::node::paths::PathRoots;
use crate::node::volume::NodeError;
use crate::runtime::{Backend, Features};

/// What every service needs: who we are and the loaded backends.
pub struct Driver {
    /// The CSI driver name (`GetPluginInfo`), in domain notation.
    pub name: String,
    pub node_id: String,
    pub backends: Backends,
    pub node: NodeSettings,
    locks: Arc<locks::Locks>,
}

/// How this node finds devices and where it keeps its own state.
pub struct NodeSettings {
    /// Where disks appear by serial (`/dev/disk/by-id`; tests point it elsewhere).
    pub by_id_root: PathBuf,
    /// Staging directories of ephemeral inline volumes live below it.
    pub ephemeral_dir: PathBuf,
    /// Reported by NodeGetInfo; 0 means no limit.
    pub max_volumes_per_node: i64,
    /// Other hosts serve the same driver and hold their own node-local volumes (`--distributed`).
    pub distributed: bool,
    /// Where staging and target paths may lie (`--allowed-path-root`).
    pub path_roots: PathRoots,
}

impl Driver {
    pub fn new(name: String, node_id: String, backends: Backends, node: NodeSettings) -> Driver {
        Driver { name, node_id, backends, node, locks: Arc::default() }
    }

    /// The staging directory of an ephemeral inline volume.
    fn ephemeral_staging(&self, volume_id: &str) -> PathBuf {
        self.node.ephemeral_dir.join(ephemeral_name(volume_id))
    }

    /// The record beside an ephemeral volume's staging directory naming its owning
    /// instance (and, once created, the volume's id in it).
    fn ephemeral_record(&self, volume_id: &str) -> PathBuf {
        self.node.ephemeral_dir.join(format!("{}.owner", ephemeral_name(volume_id)))
    }

    /// Refuses a staging or target path inside a volume any backend has mounted (blocks).
    fn check_outside_volumes(&self, path: &std::path::Path) -> Result<(), NodeError> {
        let instances: Vec<_> = self.backends.iter().map(|b| b.grants()).collect();
        crate::node::volume::check_outside_volumes(path, &self.node.path_roots, &instances)
    }

    /// Topology key whose segment is the node id, carried by node-local volumes.
    pub fn node_topology_key(&self) -> String {
        format!("topology.{}/node", self.name)
    }

    /// The topology segment of this node for a node-local backend, `None` otherwise.
    fn node_topology(&self, backend: &Backend) -> Option<Vec<(String, String)>> {
        backend
            .info
            .features
            .contains(Features::NODE_LOCAL)
            .then(|| convert::node_segment(&self.node_topology_key(), &self.node_id))
    }
}

/// An ephemeral volume's file names: a hash of its id, so any id makes a safe single path
/// component.
fn ephemeral_name(volume_id: &str) -> String {
    hex::encode(Sha256::digest(volume_id.as_bytes()))[..32].to_owned()
}

/// Logs an incoming request (secrets are redacted by the messages' Debug) and unwraps it.
fn inbound<T: std::fmt::Debug>(rpc: &'static str, request: tonic::Request<T>) -> T {
    let message = request.into_inner();
    tracing::debug!(rpc, request = ?message, "call");
    message
}
