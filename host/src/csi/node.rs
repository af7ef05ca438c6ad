//! The CSI Node service. This host version answers who and where the node is; staging,
//! publishing, expansion and stats on the node are not implemented yet and say so.

use std::sync::Arc;

use csi_proto::v1 as csi;
use csi::node_server::Node;
use tonic::{Request, Response, Status};

use super::{Driver, convert, inbound};
use crate::runtime::Features;

pub struct NodeService {
    driver: Arc<Driver>,
}

impl NodeService {
    pub fn new(driver: Arc<Driver>) -> Self {
        NodeService { driver }
    }
}

fn not_yet<T>(rpc: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("{rpc}: the node data path is not implemented by this host version")))
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(&self, request: Request<csi::NodeStageVolumeRequest>) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        inbound("NodeStageVolume", request);
        not_yet("NodeStageVolume")
    }

    async fn node_unstage_volume(
        &self,
        request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        inbound("NodeUnstageVolume", request);
        not_yet("NodeUnstageVolume")
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        inbound("NodePublishVolume", request);
        not_yet("NodePublishVolume")
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        inbound("NodeUnpublishVolume", request);
        not_yet("NodeUnpublishVolume")
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        inbound("NodeGetVolumeStats", request);
        not_yet("NodeGetVolumeStats")
    }

    async fn node_expand_volume(
        &self,
        request: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        inbound("NodeExpandVolume", request);
        not_yet("NodeExpandVolume")
    }

    async fn node_get_capabilities(
        &self,
        request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        inbound("NodeGetCapabilities", request);
        Ok(Response::new(csi::NodeGetCapabilitiesResponse { capabilities: vec![] }))
    }

    async fn node_get_info(&self, request: Request<csi::NodeGetInfoRequest>) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        inbound("NodeGetInfo", request);
        let driver = &self.driver;
        let accessible_topology = driver
            .backends
            .any(Features::NODE_LOCAL)
            .then(|| convert::topology(&convert::node_segment(&driver.node_topology_key(), &driver.node_id)));
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: driver.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology,
        }))
    }
}
