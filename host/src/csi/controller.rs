//! The CSI Controller service: validate every request, route it to its backend instance,
//! call the backend under the right operation locks, and translate the answer.
//!
//! RPCs whose capability no loaded backend declares answer UNIMPLEMENTED; a capability a
//! particular backend lacks is INVALID_ARGUMENT naming that backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use csi::controller_server::Controller;
use csi::controller_service_capability::rpc::Type as Rpc;
use csi_proto::v1 as csi;
use tonic::{Request, Response, Status};

use super::backends::Backends;
use super::names::{self, Kind};
use super::{Driver, convert, inbound, validate};
use crate::runtime::{
    Backend, BackendError, CallError, ContentSource, CreateVolumeRequest, Expansion, Features, Secrets,
    TopologyRequirement,
};

pub struct ControllerService {
    driver: Arc<Driver>,
}

impl ControllerService {
    pub fn new(driver: Arc<Driver>) -> Self {
        ControllerService { driver }
    }

    fn backends(&self) -> &Backends {
        &self.driver.backends
    }

    /// UNIMPLEMENTED unless some loaded backend declares `feature`.
    fn declared(&self, feature: Features, rpc: &str) -> Result<(), Status> {
        if self.backends().any(feature) {
            Ok(())
        } else {
            Err(Status::unimplemented(format!("{rpc}: no loaded backend supports it")))
        }
    }

    /// Whether the volume exists, for backends that can tell.
    async fn ensure_volume(&self, backend: &Arc<Backend>, local: &str, volume_id: &str) -> Result<(), Status> {
        if !backend.info.features.contains(Features::GET_VOLUME) {
            return Ok(());
        }
        let local = local.to_owned();
        match backend.get_volume(Secrets::default(), &local).await {
            Ok(_) => Ok(()),
            Err(CallError::Backend { error: BackendError::NotFound(_), .. }) => {
                Err(Status::not_found(format!("volume {volume_id} does not exist")))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn route_volume<'a>(&self, volume_id: &'a str) -> Result<(&Arc<Backend>, &'a str), Status> {
        self.backends().route(volume_id).ok_or_else(|| Status::not_found(format!("volume {volume_id} does not exist")))
    }

    fn route_content_source(
        &self,
        backend: &Backend,
        source: &csi::VolumeContentSource,
    ) -> Result<ContentSource, Status> {
        use csi::volume_content_source::Type;
        let (kind, id, feature) = match &source.r#type {
            Some(Type::Snapshot(s)) => ("snapshot", s.snapshot_id.as_str(), Features::SNAPSHOTS),
            Some(Type::Volume(v)) => ("volume", v.volume_id.as_str(), Features::CLONE_VOLUMES),
            None => return Err(Status::invalid_argument("volume_content_source needs a snapshot or a volume")),
        };
        validate::required(&format!("volume_content_source.{kind} id"), id)?;
        if !backend.info.features.contains(feature) {
            return Err(Status::invalid_argument(format!(
                "backend {} cannot create a volume from a {kind}",
                backend.name()
            )));
        }
        let (source_backend, local) =
            self.backends().route(id).ok_or_else(|| Status::not_found(format!("{kind} {id} does not exist")))?;
        if source_backend.name() != backend.name() {
            return Err(Status::invalid_argument(format!(
                "{kind} {id} belongs to backend {}, not {}",
                source_backend.name(),
                backend.name()
            )));
        }
        Ok(match kind {
            "snapshot" => ContentSource::Snapshot(local.to_owned()),
            _ => ContentSource::Volume(local.to_owned()),
        })
    }

    /// CSI names are unique across the plugin, and ids carry their instance: a name is
    /// claimed in the host's index for the chosen instance before it creates (same
    /// instance: the backend's own idempotency decides). A name another instance claimed is
    /// ALREADY_EXISTS, unless that owner itself answers that it holds no such object (its
    /// create failed or the object is gone): then the claim passes on. No other backend is
    /// asked, trusted or waited for.
    async fn claim_name(&self, chosen: &Backend, kind: Kind, name: &str, find: FindByName) -> Result<(), Status> {
        let names = &self.driver.names;
        let (n, instance) = (name.to_owned(), chosen.name().to_owned());
        let Some(owner) = names::blocking(names, move |index| index.claim(kind, &n, &instance)).await? else {
            return Ok(());
        };
        let what = kind.noun();
        let Some(owner_backend) = self.backends().by_name(&owner) else {
            return Err(Status::already_exists(format!(
                "{what} name {name:?} belongs to backend {owner}, which is not loaded"
            )));
        };
        match find(owner_backend, name).await {
            Ok(Some(local)) => Err(Status::already_exists(format!(
                "{what} name {name:?} is already used by {} of backend {owner}",
                convert::qualified(owner_backend, what, &local)?
            ))),
            Ok(None) => {
                tracing::info!(backend = chosen.name(), previous = %owner, %name, "{what} name claim passes on: its owner holds no such {what}");
                let (n, instance) = (name.to_owned(), chosen.name().to_owned());
                names::blocking(names, move |index| index.take_over(kind, &n, &instance)).await
            }
            Err(e) => Err(Status::unavailable(format!(
                "{what} name {name:?} was claimed by backend {owner}, which could not say whether it holds it: {e}"
            ))),
        }
    }

    /// Remembers which name a new object was created under, so its delete frees the name.
    /// A failure only leaves the claim behind (resolved by its owner later): logged.
    async fn record_name(&self, kind: Kind, id: &str, name: &str) {
        let (id, name) = (id.to_owned(), name.to_owned());
        let what = kind.noun();
        if let Err(e) = names::blocking(&self.driver.names, move |index| index.record(kind, &id, &name)).await {
            tracing::warn!("{what} name not linked to its id: {}", e.message());
        }
    }

    /// Frees the name a deleted object was created under (see [`Self::record_name`]).
    async fn release_name(&self, kind: Kind, id: &str, backend: &Backend) {
        let (id, instance) = (id.to_owned(), backend.name().to_owned());
        let what = kind.noun();
        if let Err(e) = names::blocking(&self.driver.names, move |index| index.release(kind, &id, &instance)).await {
            tracing::warn!(backend = backend.name(), "{what} name claim not released: {}", e.message());
        }
    }

    /// For node-local backends: RESOURCE_EXHAUSTED unless this node satisfies the requisite
    /// topology (the CO should ask another node).
    fn check_placement(&self, backend: &Backend, req: Option<&csi::TopologyRequirement>) -> Result<(), Status> {
        let (Some(segment), Some(req)) = (self.driver.node_topology(backend), req) else { return Ok(()) };
        let here =
            |t: &csi::Topology| t.segments.iter().all(|(k, v)| segment.iter().any(|(sk, sv)| sk == k && sv == v));
        if req.requisite.is_empty() || req.requisite.iter().any(here) {
            Ok(())
        } else {
            Err(Status::resource_exhausted(format!(
                "backend {} keeps volumes on node {}, which is not in the requisite topology",
                backend.name(),
                self.driver.node_id
            )))
        }
    }
}

/// Looks a name up in its owning backend, answering the backend-local id it names.
type FindByName = for<'a> fn(&'a Backend, &'a str) -> Pin<Box<dyn Future<Output = Found> + Send + 'a>>;
type Found = Result<Option<String>, CallError>;

/// One backend's page: its entries and its next token.
type PageFuture<T> = Pin<Box<dyn Future<Output = Result<(Vec<T>, String), Status>> + Send>>;

/// Pages through the listing backends in config order. The token is
/// `<instance>:<backend token>`; a token naming no listing backend is ABORTED.
///
/// A backend is never asked for more than [`convert::PAGE_ENTRIES`] (the CO's max_entries
/// when smaller, the room left when the answer already holds entries); a page with more
/// entries than asked is INTERNAL, and so is one page over [`convert::PAGE_BYTES`]. A page
/// that would take the whole answer over that size is left for the next call: the answer
/// ends with the token that fetched it.
async fn paginate<T: prost::Message>(
    listers: &[&Arc<Backend>],
    max_entries: u32,
    starting_token: &str,
    fetch: impl Fn(Arc<Backend>, u32, String) -> PageFuture<T>,
) -> Result<(Vec<T>, String), Status> {
    let (mut index, mut token) = if starting_token.is_empty() {
        (0, String::new())
    } else {
        starting_token
            .split_once(':')
            .and_then(|(name, rest)| listers.iter().position(|b| b.name() == name).map(|i| (i, rest.to_owned())))
            .ok_or_else(|| {
                Status::aborted(format!("starting_token {starting_token:?} was not issued by this plugin"))
            })?
    };
    let limit = if max_entries == 0 { convert::PAGE_ENTRIES } else { max_entries.min(convert::PAGE_ENTRIES) };
    let (mut entries, mut bytes) = (Vec::new(), 0);
    while index < listers.len() {
        let backend = listers[index];
        let room = limit - entries.len() as u32;
        let (page, next) = fetch(backend.clone(), room, token.clone()).await?;
        if page.len() > room as usize {
            return Err(super::status::bad_answer(
                backend.name(),
                format!("{} entries where {room} were asked for", page.len()),
            ));
        }
        let page_bytes: usize = page.iter().map(|e| e.encoded_len()).sum();
        if page_bytes > convert::PAGE_BYTES {
            return Err(super::status::bad_answer(
                backend.name(),
                format!("a page of {page_bytes} bytes, more than the {} allowed", convert::PAGE_BYTES),
            ));
        }
        if bytes + page_bytes > convert::PAGE_BYTES {
            return Ok((entries, convert::next_token(backend, &token)?));
        }
        bytes += page_bytes;
        entries.extend(page);
        if !next.is_empty() {
            return Ok((entries, convert::next_token(backend, &next)?));
        }
        index += 1;
        token.clear();
        if entries.len() == limit as usize {
            let next = listers.get(index).map(|b| format!("{}:", b.name())).unwrap_or_default();
            return Ok((entries, next));
        }
    }
    Ok((entries, String::new()))
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let req = inbound("CreateVolume", request);
        validate::required("name", &req.name)?;
        validate::map("parameters", &req.parameters)?;
        validate::map("mutable_parameters", &req.mutable_parameters)?;
        let capabilities = convert::capabilities("volume_capabilities", &req.volume_capabilities)?;
        let capacity = convert::capacity_range(req.capacity_range.as_ref())?;
        let (backend, parameters) = self.backends().select(&req.parameters)?;
        if let Some(why) = capabilities.iter().find_map(|c| convert::unsupported(backend, c)) {
            return Err(Status::invalid_argument(why));
        }
        let content_source =
            req.volume_content_source.as_ref().map(|s| self.route_content_source(backend, s)).transpose()?;
        self.check_placement(backend, req.accessibility_requirements.as_ref())?;

        // The source must not be deleted while it is copied.
        let mut keys = vec![format!("volume-name:{}", req.name)];
        match &content_source {
            Some(ContentSource::Volume(local)) => keys.push(format!("volume:{}:{local}", backend.name())),
            Some(ContentSource::Snapshot(local)) => keys.push(format!("snapshot:{}:{local}", backend.name())),
            None => {}
        }
        let guard = self.driver.locks.try_lock(keys)?;
        self.claim_name(backend, Kind::Volume, &req.name, |owner, name| {
            Box::pin(async move { owner.find_volume(Secrets::default(), name).await.map(|v| v.map(|v| v.id)) })
        })
        .await?;
        let wit_request = CreateVolumeRequest {
            name: req.name.clone(),
            capacity,
            capabilities,
            parameters,
            mutable_parameters: convert::pairs(&req.mutable_parameters),
            content_source,
            accessibility: req.accessibility_requirements.as_ref().map(|t| TopologyRequirement {
                requisite: t.requisite.iter().map(|s| convert::pairs(&s.segments)).collect(),
                preferred: t.preferred.iter().map(|s| convert::pairs(&s.segments)).collect(),
            }),
        };
        let volume = backend.create_volume(Secrets::from(&req.secrets), guard, wit_request).await?;
        let mut volume =
            convert::created_volume(backend, &volume, capacity, self.driver.node_topology(backend).as_deref())?;
        self.record_name(Kind::Volume, &volume.volume_id, &req.name).await;
        if volume.content_source.is_none() {
            volume.content_source = req.volume_content_source.clone();
        }
        tracing::info!(backend = backend.name(), name = %req.name, volume_id = %volume.volume_id, bytes = volume.capacity_bytes, "volume created");
        Ok(Response::new(csi::CreateVolumeResponse { volume: Some(volume) }))
    }

    async fn delete_volume(
        &self,
        request: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let req = inbound("DeleteVolume", request);
        validate::required("volume_id", &req.volume_id)?;
        // An id no loaded backend could have made names a volume that does not exist here.
        let Some((backend, local)) = self.backends().route(&req.volume_id) else {
            return Ok(Response::new(csi::DeleteVolumeResponse {}));
        };
        let guard = self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?;
        let local = local.to_owned();
        backend.delete_volume(Secrets::from(&req.secrets), guard, &local).await?;
        self.release_name(Kind::Volume, &req.volume_id, backend).await;
        tracing::info!(backend = backend.name(), volume_id = %req.volume_id, "volume deleted");
        Ok(Response::new(csi::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        request: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        let req = inbound("ControllerPublishVolume", request);
        self.declared(Features::PUBLISH_UNPUBLISH, "ControllerPublishVolume")?;
        validate::required("volume_id", &req.volume_id)?;
        validate::node_id("node_id", &req.node_id)?;
        validate::map("volume_context", &req.volume_context)?;
        let cap =
            req.volume_capability.as_ref().ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let capability = convert::capability(cap)?;
        let (backend, local) = self.route_volume(&req.volume_id)?;
        if !backend.info.features.contains(Features::PUBLISH_UNPUBLISH) {
            // Nothing to attach: the node reaches the volume directly. Distributed, a
            // node-local volume is only visible on its own node: only there is it checked.
            let elsewhere = self.driver.node.distributed && req.node_id != self.driver.node_id;
            if !(elsewhere && backend.info.features.contains(Features::NODE_LOCAL)) {
                self.ensure_volume(backend, local, &req.volume_id).await?;
            }
            return Ok(Response::new(csi::ControllerPublishVolumeResponse::default()));
        }
        if req.readonly && !backend.info.features.contains(Features::PUBLISH_READONLY) {
            return Err(Status::invalid_argument(format!("backend {} cannot publish read-only", backend.name())));
        }
        if let Some(why) = convert::unsupported(backend, &capability) {
            return Err(Status::invalid_argument(why));
        }
        let guard = self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?;
        let (local, node, readonly, context) =
            (local.to_owned(), req.node_id.clone(), req.readonly, convert::pairs(&req.volume_context));
        let publish_context = backend
            .controller_publish(Secrets::from(&req.secrets), guard, &local, &node, capability, readonly, context)
            .await?;
        Ok(Response::new(csi::ControllerPublishVolumeResponse {
            publish_context: convert::context(backend, "publish context", &publish_context)?,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        let req = inbound("ControllerUnpublishVolume", request);
        self.declared(Features::PUBLISH_UNPUBLISH, "ControllerUnpublishVolume")?;
        validate::required("volume_id", &req.volume_id)?;
        validate::bounded("node_id", &req.node_id, validate::MAX_NODE_ID)?;
        let Some((backend, local)) = self.backends().route(&req.volume_id) else {
            return Ok(Response::new(csi::ControllerUnpublishVolumeResponse {}));
        };
        if !backend.info.features.contains(Features::PUBLISH_UNPUBLISH) {
            return Ok(Response::new(csi::ControllerUnpublishVolumeResponse {}));
        }
        let guard = self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?;
        let (local, node) = (local.to_owned(), req.node_id.clone());
        backend.controller_unpublish(Secrets::from(&req.secrets), guard, &local, &node).await?;
        Ok(Response::new(csi::ControllerUnpublishVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        let req = inbound("ValidateVolumeCapabilities", request);
        validate::required("volume_id", &req.volume_id)?;
        validate::map("volume_context", &req.volume_context)?;
        validate::map("parameters", &req.parameters)?;
        validate::map("mutable_parameters", &req.mutable_parameters)?;
        let capabilities = convert::capabilities("volume_capabilities", &req.volume_capabilities)?;
        let (backend, local) = self.route_volume(&req.volume_id)?;
        self.ensure_volume(backend, local, &req.volume_id).await?;
        let response = match capabilities.iter().find_map(|c| convert::unsupported(backend, c)) {
            Some(why) => csi::ValidateVolumeCapabilitiesResponse { confirmed: None, message: why },
            None => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
        };
        Ok(Response::new(response))
    }

    async fn list_volumes(
        &self,
        request: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        let req = inbound("ListVolumes", request);
        self.declared(Features::LIST_VOLUMES, "ListVolumes")?;
        let max = validate::max_entries(req.max_entries)?;
        let listers: Vec<_> =
            self.backends().iter().filter(|b| b.info.features.contains(Features::LIST_VOLUMES)).collect();
        let (entries, next_token) = paginate(&listers, max, &req.starting_token, |backend, room, token| {
            let driver = self.driver.clone();
            Box::pin(async move {
                let page = backend.list_volumes(Secrets::default(), room, &token).await?;
                let topology = driver.node_topology(&backend);
                let volumes = page
                    .entries
                    .iter()
                    .map(|v| {
                        let volume = convert::volume(&backend, v, topology.as_deref())?;
                        Ok(csi::list_volumes_response::Entry { volume: Some(volume), status: None })
                    })
                    .collect::<Result<Vec<_>, Status>>()?;
                Ok((volumes, page.next_token))
            })
        })
        .await?;
        Ok(Response::new(csi::ListVolumesResponse { entries, next_token }))
    }

    async fn get_capacity(
        &self,
        request: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        let req = inbound("GetCapacity", request);
        self.declared(Features::GET_CAPACITY, "GetCapacity")?;
        validate::map("parameters", &req.parameters)?;
        let capabilities = req.volume_capabilities.iter().map(convert::capability).collect::<Result<Vec<_>, _>>()?;
        let (backend, parameters) = self.backends().select(&req.parameters)?;
        if !backend.info.features.contains(Features::GET_CAPACITY) {
            return Err(Status::invalid_argument(format!("backend {} does not report capacity", backend.name())));
        }
        let none = Response::new(csi::GetCapacityResponse {
            available_capacity: 0,
            maximum_volume_size: Some(0),
            minimum_volume_size: None,
        });
        if capabilities.iter().any(|c| convert::unsupported(backend, c).is_some()) {
            return Ok(none);
        }
        if let (Some(segment), Some(topology)) = (self.driver.node_topology(backend), req.accessible_topology.as_ref())
            && topology.segments.iter().any(|(k, v)| segment.iter().any(|(sk, sv)| sk == k && sv != v))
        {
            return Ok(none);
        }
        let topology = req.accessible_topology.as_ref().map(|t| convert::pairs(&t.segments));
        let capacity = backend.get_capacity(Secrets::default(), capabilities, parameters, topology).await?;
        let bytes = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Response::new(csi::GetCapacityResponse {
            available_capacity: bytes(capacity.available_bytes),
            maximum_volume_size: (capacity.maximum_volume_size != 0).then(|| bytes(capacity.maximum_volume_size)),
            minimum_volume_size: (capacity.minimum_volume_size != 0).then(|| bytes(capacity.minimum_volume_size)),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        request: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        inbound("ControllerGetCapabilities", request);
        let b = self.backends();
        let single_node_multi_writer = b.iter().any(|b| {
            b.info.access_modes.iter().any(|m| {
                matches!(
                    m,
                    crate::runtime::AccessMode::SingleNodeSingleWriter
                        | crate::runtime::AccessMode::SingleNodeMultiWriter
                )
            })
        });
        let rpcs = [
            (Rpc::CreateDeleteVolume, true),
            (Rpc::PublishUnpublishVolume, b.any(Features::PUBLISH_UNPUBLISH)),
            (Rpc::ListVolumes, b.any(Features::LIST_VOLUMES)),
            (Rpc::GetCapacity, b.any(Features::GET_CAPACITY)),
            (Rpc::CreateDeleteSnapshot, b.any(Features::SNAPSHOTS)),
            (Rpc::ListSnapshots, b.any(Features::LIST_SNAPSHOTS)),
            (Rpc::CloneVolume, b.any(Features::CLONE_VOLUMES)),
            (Rpc::PublishReadonly, b.any(Features::PUBLISH_READONLY)),
            (Rpc::ExpandVolume, b.any(Features::EXPAND_VOLUMES)),
            (Rpc::GetVolume, b.any(Features::GET_VOLUME)),
            (Rpc::SingleNodeMultiWriter, single_node_multi_writer),
            (Rpc::ModifyVolume, b.any(Features::MODIFY_VOLUME)),
        ];
        let capabilities = rpcs
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(rpc, _)| csi::ControllerServiceCapability {
                r#type: Some(csi::controller_service_capability::Type::Rpc(csi::controller_service_capability::Rpc {
                    r#type: rpc as i32,
                })),
            })
            .collect();
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse { capabilities }))
    }

    async fn create_snapshot(
        &self,
        request: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        let req = inbound("CreateSnapshot", request);
        self.declared(Features::SNAPSHOTS, "CreateSnapshot")?;
        validate::required("source_volume_id", &req.source_volume_id)?;
        validate::required("name", &req.name)?;
        validate::map("parameters", &req.parameters)?;
        let (backend, local) = self.route_volume(&req.source_volume_id)?;
        if !backend.info.features.contains(Features::SNAPSHOTS) {
            return Err(Status::invalid_argument(format!("backend {} does not take snapshots", backend.name())));
        }
        let guard = self
            .driver
            .locks
            .try_lock(vec![format!("snapshot-name:{}", req.name), format!("volume:{}", req.source_volume_id)])?;
        self.claim_name(backend, Kind::Snapshot, &req.name, |owner, name| {
            Box::pin(async move { owner.find_snapshot(Secrets::default(), name).await.map(|s| s.map(|s| s.id)) })
        })
        .await?;
        let (local, name, parameters) = (local.to_owned(), req.name.clone(), convert::pairs(&req.parameters));
        let snapshot = backend.create_snapshot(Secrets::from(&req.secrets), guard, &local, &name, parameters).await?;
        let snapshot = convert::snapshot(backend, &snapshot)?;
        self.record_name(Kind::Snapshot, &snapshot.snapshot_id, &req.name).await;
        tracing::info!(backend = backend.name(), name = %req.name, snapshot_id = %snapshot.snapshot_id, "snapshot created");
        Ok(Response::new(csi::CreateSnapshotResponse { snapshot: Some(snapshot) }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        let req = inbound("DeleteSnapshot", request);
        self.declared(Features::SNAPSHOTS, "DeleteSnapshot")?;
        validate::required("snapshot_id", &req.snapshot_id)?;
        let Some((backend, local)) = self.backends().route(&req.snapshot_id) else {
            return Ok(Response::new(csi::DeleteSnapshotResponse {}));
        };
        if !backend.info.features.contains(Features::SNAPSHOTS) {
            return Ok(Response::new(csi::DeleteSnapshotResponse {}));
        }
        let guard = self.driver.locks.try_lock(vec![format!("snapshot:{}", req.snapshot_id)])?;
        let local = local.to_owned();
        backend.delete_snapshot(Secrets::from(&req.secrets), guard, &local).await?;
        self.release_name(Kind::Snapshot, &req.snapshot_id, backend).await;
        tracing::info!(backend = backend.name(), snapshot_id = %req.snapshot_id, "snapshot deleted");
        Ok(Response::new(csi::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        let req = inbound("ListSnapshots", request);
        self.declared(Features::LIST_SNAPSHOTS, "ListSnapshots")?;
        let max = validate::max_entries(req.max_entries)?;
        validate::bounded("snapshot_id", &req.snapshot_id, validate::MAX_STRING)?;
        validate::bounded("source_volume_id", &req.source_volume_id, validate::MAX_STRING)?;
        let listing = |b: &&Arc<Backend>| b.info.features.contains(Features::LIST_SNAPSHOTS);
        // A filter narrows the listing to the backend its id names; an id no backend could
        // have made matches nothing.
        let (listers, snapshot_filter, volume_filter): (Vec<_>, String, String) =
            match (req.snapshot_id.is_empty(), req.source_volume_id.is_empty()) {
                (true, true) => (self.backends().iter().filter(listing).collect(), String::new(), String::new()),
                (false, _) => match self.backends().route(&req.snapshot_id) {
                    Some((b, local)) => (vec![b], local.to_owned(), String::new()),
                    None => (vec![], String::new(), String::new()),
                },
                (true, false) => match self.backends().route(&req.source_volume_id) {
                    Some((b, local)) => (vec![b], String::new(), local.to_owned()),
                    None => (vec![], String::new(), String::new()),
                },
            };
        let listers: Vec<_> = listers.into_iter().filter(listing).collect();
        if listers.is_empty() {
            return Ok(Response::new(csi::ListSnapshotsResponse::default()));
        }
        let secrets = Secrets::from(&req.secrets);
        let (entries, next_token) = paginate(&listers, max, &req.starting_token, |backend, room, token| {
            let (secrets, sf, vf) = (secrets.clone(), snapshot_filter.clone(), volume_filter.clone());
            let source_filter = req.source_volume_id.clone();
            Box::pin(async move {
                let page = backend.list_snapshots(secrets, &sf, &vf, room, &token).await?;
                let snapshots = page
                    .entries
                    .iter()
                    .map(|s| convert::snapshot(&backend, s))
                    .filter(|s| !matches!(s, Ok(s) if !source_filter.is_empty() && s.source_volume_id != source_filter))
                    .map(|s| s.map(|s| csi::list_snapshots_response::Entry { snapshot: Some(s) }))
                    .collect::<Result<Vec<_>, Status>>()?;
                Ok((snapshots, page.next_token))
            })
        })
        .await?;
        Ok(Response::new(csi::ListSnapshotsResponse { entries, next_token }))
    }

    async fn get_snapshot(
        &self,
        request: Request<csi::GetSnapshotRequest>,
    ) -> Result<Response<csi::GetSnapshotResponse>, Status> {
        let req = inbound("GetSnapshot", request);
        self.declared(Features::LIST_SNAPSHOTS, "GetSnapshot")?;
        validate::required("snapshot_id", &req.snapshot_id)?;
        let not_found = || Status::not_found(format!("snapshot {} does not exist", req.snapshot_id));
        let (backend, local) = self.backends().route(&req.snapshot_id).ok_or_else(not_found)?;
        if !backend.info.features.contains(Features::LIST_SNAPSHOTS) {
            return Err(not_found());
        }
        let local = local.to_owned();
        let page = backend.list_snapshots(Secrets::from(&req.secrets), &local, "", 1, "").await?;
        let snapshot = page.entries.first().ok_or_else(not_found)?;
        Ok(Response::new(csi::GetSnapshotResponse { snapshot: Some(convert::snapshot(backend, snapshot)?) }))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        let req = inbound("ControllerExpandVolume", request);
        self.declared(Features::EXPAND_VOLUMES, "ControllerExpandVolume")?;
        validate::required("volume_id", &req.volume_id)?;
        let range =
            req.capacity_range.as_ref().ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
        let capacity = convert::capacity_range(Some(range))?;
        if let Some(cap) = &req.volume_capability {
            convert::capability(cap)?;
        }
        let (backend, local) = self.route_volume(&req.volume_id)?;
        if !backend.info.features.contains(Features::EXPAND_VOLUMES) {
            return Err(Status::invalid_argument(format!("backend {} cannot expand volumes", backend.name())));
        }
        let guard = self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?;
        let local = local.to_owned();
        let expansion = match backend.expand_volume(Secrets::from(&req.secrets), guard, &local, capacity).await {
            // Distributed, a node-local volume may live on another node (the resizer's
            // leader runs anywhere): its own node grows it at NodeExpandVolume.
            Err(CallError::Backend { error: BackendError::NotFound(_), .. })
                if self.driver.node.distributed
                    && backend.info.features.contains(Features::NODE_LOCAL | Features::NODE_EXPANSION) =>
            {
                tracing::info!(backend = backend.name(), volume_id = %req.volume_id, "not on this node; its node grows it at NodeExpandVolume");
                let bytes = if capacity.required_bytes > 0 { capacity.required_bytes } else { capacity.limit_bytes };
                Expansion { capacity_bytes: bytes, node_expansion_required: true }
            }
            other => other?,
        };
        let capacity_bytes = convert::expansion(backend, &expansion, capacity)?;
        tracing::info!(backend = backend.name(), volume_id = %req.volume_id, bytes = capacity_bytes, "volume expanded");
        Ok(Response::new(csi::ControllerExpandVolumeResponse {
            capacity_bytes,
            node_expansion_required: expansion.node_expansion_required,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        let req = inbound("ControllerGetVolume", request);
        self.declared(Features::GET_VOLUME, "ControllerGetVolume")?;
        validate::required("volume_id", &req.volume_id)?;
        let (backend, local) = self.route_volume(&req.volume_id)?;
        if !backend.info.features.contains(Features::GET_VOLUME) {
            return Err(Status::invalid_argument(format!("backend {} cannot look up single volumes", backend.name())));
        }
        let local = local.to_owned();
        let volume = backend.get_volume(Secrets::default(), &local).await?;
        let volume = convert::volume(backend, &volume, self.driver.node_topology(backend).as_deref())?;
        Ok(Response::new(csi::ControllerGetVolumeResponse {
            volume: Some(volume),
            status: Some(csi::controller_get_volume_response::VolumeStatus::default()),
        }))
    }

    async fn controller_modify_volume(
        &self,
        request: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        let req = inbound("ControllerModifyVolume", request);
        self.declared(Features::MODIFY_VOLUME, "ControllerModifyVolume")?;
        validate::required("volume_id", &req.volume_id)?;
        let (backend, local) = self.route_volume(&req.volume_id)?;
        if req.mutable_parameters.is_empty() {
            return Err(Status::invalid_argument("mutable_parameters is required"));
        }
        validate::map("mutable_parameters", &req.mutable_parameters)?;
        if !backend.info.features.contains(Features::MODIFY_VOLUME) {
            return Err(Status::invalid_argument(format!("backend {} cannot modify volumes", backend.name())));
        }
        let guard = self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?;
        let (local, parameters) = (local.to_owned(), convert::pairs(&req.mutable_parameters));
        backend.modify_volume(Secrets::from(&req.secrets), guard, &local, parameters).await?;
        Ok(Response::new(csi::ControllerModifyVolumeResponse {}))
    }
}
