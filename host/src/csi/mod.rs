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

use std::sync::Arc;

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
    locks: Arc<locks::Locks>,
}

impl Driver {
    pub fn new(name: String, node_id: String, backends: Backends) -> Driver {
        Driver { name, node_id, backends, locks: Arc::default() }
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
