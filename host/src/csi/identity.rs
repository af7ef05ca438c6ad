//! The CSI Identity service: who the plugin is, what it offers (derived from the loaded
//! backends and the serving mode), and whether it is ready.

use std::sync::Arc;

use csi::identity_server::Identity;
use csi::plugin_capability::{Service, Type, VolumeExpansion, service, volume_expansion};
use csi_proto::v1 as csi;
use tonic::{Request, Response, Status};

use super::{Driver, inbound};
use crate::runtime::Features;

pub struct IdentityService {
    driver: Arc<Driver>,
    serves_controller: bool,
}

impl IdentityService {
    pub fn new(driver: Arc<Driver>, serves_controller: bool) -> Self {
        IdentityService { driver, serves_controller }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        request: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        inbound("GetPluginInfo", request);
        let manifest = self
            .driver
            .backends
            .iter()
            .map(|b| (format!("backend.{}", b.name()), format!("{} {}", b.info.name, b.info.version)))
            .collect();
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.driver.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest,
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        request: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        inbound("GetPluginCapabilities", request);
        let backends = &self.driver.backends;
        let service = |t: service::Type| Type::Service(Service { r#type: t as i32 });
        let mut types = Vec::new();
        if self.serves_controller {
            types.push(service(service::Type::ControllerService));
        }
        // NodeGetInfo reports the node segment of node-local backends; the two must agree.
        if backends.any(Features::NODE_LOCAL) {
            types.push(service(service::Type::VolumeAccessibilityConstraints));
        }
        let expansion = if backends.any(Features::EXPAND_VOLUMES | Features::EXPAND_ONLINE) {
            Some(volume_expansion::Type::Online)
        } else if backends.any(Features::EXPAND_VOLUMES) {
            Some(volume_expansion::Type::Offline)
        } else {
            None
        };
        if let Some(t) = expansion {
            types.push(Type::VolumeExpansion(VolumeExpansion { r#type: t as i32 }));
        }
        let capabilities = types.into_iter().map(|t| csi::PluginCapability { r#type: Some(t) }).collect();
        Ok(Response::new(csi::GetPluginCapabilitiesResponse { capabilities }))
    }

    async fn probe(&self, request: Request<csi::ProbeRequest>) -> Result<Response<csi::ProbeResponse>, Status> {
        inbound("Probe", request);
        // Backends are loaded and validated before the socket is served.
        Ok(Response::new(csi::ProbeResponse { ready: Some(true) }))
    }
}
