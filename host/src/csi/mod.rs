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
}

impl Driver {
    pub fn new(name: String, node_id: String, backends: Backends, node: NodeSettings) -> Driver {
        Driver { name, node_id, backends, node, locks: Arc::default() }
    }

    /// The staging directory of an ephemeral inline volume (named by a hash of its id, so
    /// any id makes a safe single path component).
    fn ephemeral_staging(&self, volume_id: &str) -> PathBuf {
        self.node.ephemeral_dir.join(&hex::encode(Sha256::digest(volume_id.as_bytes()))[..32])
    }

    /// The host directories granted to any backend: where every file the host
    /// loop-attaches lives.
    pub fn granted_directories(&self) -> Vec<PathBuf> {
        self.backends.iter().flat_map(|b| b.grants().directories.iter().map(|d| d.host.clone())).collect()
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

/// Logs an incoming request (secrets are redacted by the messages' Debug) and unwraps it.
fn inbound<T: std::fmt::Debug>(rpc: &'static str, request: tonic::Request<T>) -> T {
    let message = request.into_inner();
    tracing::debug!(rpc, request = ?message, "call");
    message
}
