//! The CSI services the host serves, and the driver state they share.

mod backends;
mod controller;
mod convert;
mod group_controller;
mod identity;
mod ids;
mod locks;
pub mod names;
mod node;
mod status;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use backends::{BACKEND_PARAMETER, Backends};
pub use controller::ControllerService;
pub use group_controller::GroupControllerService;
pub use identity::IdentityService;
pub use node::NodeService;

use crate::node::paths::PathRoots;
use crate::node::staged::StagedDevices;
use crate::node::volume::NodeError;
use crate::runtime::{Backend, Features, LoadError, Secrets};
use names::NameIndex;

/// How long start-up waits for the backends' `node-topology` answers.
pub const NODE_TOPOLOGY_DEADLINE: Duration = Duration::from_secs(10);

/// What every service needs: who we are and the loaded backends.
pub struct Driver {
    /// The CSI driver name (`GetPluginInfo`), in domain notation.
    pub name: String,
    pub node_id: String,
    pub backends: Backends,
    pub node: NodeSettings,
    /// Which instance owns which volume and snapshot name.
    names: Arc<NameIndex>,
    /// This node's topology as NodeGetInfo reports it, collected once at start-up.
    node_segments: BTreeMap<String, String>,
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
    /// The device each staged volume is (`<data-dir>/staged`).
    pub staged: StagedDevices,
}

impl Driver {
    /// Checks every backend's `info()` declaration (a bad one stops start-up naming the
    /// instance) and collects this node's topology within `topology_deadline`.
    pub async fn start(
        name: String,
        node_id: String,
        backends: Backends,
        node: NodeSettings,
        names: NameIndex,
        topology_deadline: Duration,
    ) -> Result<Driver, LoadError> {
        let mut driver = Driver {
            name,
            node_id,
            backends,
            node,
            names: Arc::new(names),
            node_segments: BTreeMap::new(),
            locks: Arc::default(),
        };
        let host_key = driver.node_topology_key();
        for backend in driver.backends.iter() {
            convert::check_info(&backend.info, &host_key)
                .map_err(|reason| LoadError { instance: backend.name().to_owned(), reason })?;
        }
        driver.node_segments = driver.collect_node_topology(topology_deadline).await;
        Ok(driver)
    }

    /// The node's segments: the host's node key when a node-local backend is loaded, and
    /// what each backend with topology keys of its own (a cloud zone) answers by the
    /// deadline. A backend that fails, answers badly or is late is left out with a warning,
    /// so it cannot take NodeGetInfo down for the others.
    async fn collect_node_topology(&self, deadline: Duration) -> BTreeMap<String, String> {
        let mut segments = BTreeMap::new();
        if self.backends.any(Features::NODE_LOCAL) {
            segments.extend(convert::node_segment(&self.node_topology_key(), &self.node_id));
        }
        let mut calls = tokio::task::JoinSet::new();
        for (index, backend) in self.backends.iter().enumerate().filter(|(_, b)| !b.info.topology_keys.is_empty()) {
            let backend = backend.clone();
            calls.spawn(async move {
                let answer = backend.node_topology(Secrets::default()).await;
                (index, answer.map_err(Into::into).and_then(|a| convert::node_topology_answer(&backend, &a)))
            });
        }
        let mut answers = BTreeMap::new();
        let _ = tokio::time::timeout(deadline, async {
            while let Some(joined) = calls.join_next().await {
                if let Ok((index, answer)) = joined {
                    answers.insert(index, answer);
                }
            }
        })
        .await;
        // In config order, so which of two disagreeing backends wins does not depend on timing.
        for (index, backend) in self.backends.iter().enumerate().filter(|(_, b)| !b.info.topology_keys.is_empty()) {
            match answers.remove(&index) {
                Some(Ok(answer)) => {
                    for (key, value) in answer {
                        match segments.get(&key) {
                            Some(first) if *first != value => {
                                tracing::warn!(backend = backend.name(), %key, %value, %first, "node topology disagrees with an earlier backend's; keeping the first")
                            }
                            _ => {
                                segments.insert(key, value);
                            }
                        }
                    }
                }
                Some(Err(status)) => {
                    tracing::warn!(backend = backend.name(), "node topology left out: {}", status.message())
                }
                None => {
                    tracing::warn!(backend = backend.name(), "node topology left out: no answer within {deadline:?}")
                }
            }
        }
        segments
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

    /// This node's topology segments, as NodeGetInfo reports them.
    pub fn node_segments(&self) -> &BTreeMap<String, String> {
        &self.node_segments
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
