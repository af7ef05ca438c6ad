//! The CSI GroupController service. No backend takes group snapshots yet, so it reports
//! no capabilities (and the plugin does not advertise the service); every group call is
//! UNIMPLEMENTED, as the spec requires for an undeclared capability.

use csi::group_controller_server::GroupController;
use csi_proto::v1 as csi;
use tonic::{Request, Response, Status};

use super::inbound;

pub struct GroupControllerService;

fn unimplemented<T>(rpc: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("{rpc}: no loaded backend takes volume group snapshots")))
}

#[tonic::async_trait]
impl GroupController for GroupControllerService {
    async fn group_controller_get_capabilities(
        &self,
        request: Request<csi::GroupControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::GroupControllerGetCapabilitiesResponse>, Status> {
        inbound("GroupControllerGetCapabilities", request);
        Ok(Response::new(csi::GroupControllerGetCapabilitiesResponse { capabilities: vec![] }))
    }

    async fn create_volume_group_snapshot(
        &self,
        request: Request<csi::CreateVolumeGroupSnapshotRequest>,
    ) -> Result<Response<csi::CreateVolumeGroupSnapshotResponse>, Status> {
        inbound("CreateVolumeGroupSnapshot", request);
        unimplemented("CreateVolumeGroupSnapshot")
    }

    async fn delete_volume_group_snapshot(
        &self,
        request: Request<csi::DeleteVolumeGroupSnapshotRequest>,
    ) -> Result<Response<csi::DeleteVolumeGroupSnapshotResponse>, Status> {
        inbound("DeleteVolumeGroupSnapshot", request);
        unimplemented("DeleteVolumeGroupSnapshot")
    }

    async fn get_volume_group_snapshot(
        &self,
        request: Request<csi::GetVolumeGroupSnapshotRequest>,
    ) -> Result<Response<csi::GetVolumeGroupSnapshotResponse>, Status> {
        inbound("GetVolumeGroupSnapshot", request);
        unimplemented("GetVolumeGroupSnapshot")
    }
}
