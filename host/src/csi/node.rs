//! The CSI Node service: validates each call, asks the volume's backend which device the
//! volume is on this node, and runs the privileged steps (`node::volume`) on a blocking
//! thread while holding the volume's operation lock.
//!
//! Every call acts for the one instance that owns the volume (by its id's prefix, or the
//! record an ephemeral volume's publish wrote) and touches only what that instance owns
//! (`node::owned`); a volume no loaded instance owns is NOT_FOUND before anything is
//! touched. Staging and target paths must lie beneath the allowed path roots.
//!
//! Ephemeral inline volumes (`csi.storage.k8s.io/ephemeral=true` at NodePublish) are
//! created, staged under the host's data directory and published in one call, and
//! unstaged and deleted again at NodeUnpublish. A small record beside the staging
//! directory names the owning instance (and the volume's id in it), so no other backend
//! is ever asked about it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi::node_server::Node;
use csi::node_service_capability::rpc::Type as Rpc;
use csi_proto::v1 as csi;
use tonic::{Request, Response, Status};

use super::{Driver, convert, inbound, validate};
use crate::node::filesystem::FsType;
use crate::node::paths;
use crate::node::volume::{self, Access, NodeError, Usage};
use crate::runtime::{AccessMode, AccessType, Backend, CreateVolumeRequest, Device, Features, Secrets};

/// Volume context key that marks an ephemeral inline volume.
const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
/// Volume attribute giving an ephemeral volume's size (bytes, or with Ki/Mi/Gi/Ti).
const EPHEMERAL_SIZE: &str = "size";
/// Time the tools of one node call (mkfs, fsck, resize) may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(300);

pub struct NodeService {
    driver: Arc<Driver>,
}

/// The instance a node call acts for, and the volume's id in it (unknown for an ephemeral
/// volume whose create did not get as far as recording it).
struct Owner {
    backend: Arc<Backend>,
    local: Option<String>,
}

impl NodeService {
    pub fn new(driver: Arc<Driver>) -> Self {
        NodeService { driver }
    }

    /// The instance owning a volume: by the id's instance prefix, or for an ephemeral
    /// volume of this node (whose ids the kubelet makes up, without a prefix) by what its
    /// publish recorded. NOT_FOUND otherwise: the volume cannot exist here.
    async fn owner(&self, volume_id: &str) -> Result<Owner, Status> {
        if let Some((backend, local)) = self.driver.backends.route(volume_id) {
            return Ok(Owner { backend: backend.clone(), local: Some(local.to_owned()) });
        }
        let record = self.driver.ephemeral_record(volume_id);
        let text = match tokio::fs::read_to_string(&record).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!("volume {volume_id} does not exist")));
            }
            Err(e) => return Err(Status::internal(format!("read {}: {e}", record.display()))),
        };
        let mut lines = text.lines();
        let instance = lines.next().unwrap_or_default();
        let backend = self.driver.backends.by_name(instance).ok_or_else(|| {
            Status::failed_precondition(format!(
                "ephemeral volume {volume_id} belongs to backend {instance:?}, which is not loaded"
            ))
        })?;
        Ok(Owner { backend: backend.clone(), local: lines.next().filter(|l| !l.is_empty()).map(str::to_owned) })
    }

    fn route<'a>(&self, volume_id: &'a str) -> Result<(&Arc<Backend>, &'a str), Status> {
        self.driver
            .backends
            .route(volume_id)
            .ok_or_else(|| Status::not_found(format!("volume {volume_id} does not exist")))
    }

    /// A required, absolute, normalized staging or target path beneath the allowed roots.
    fn node_path(&self, field: &str, value: &str) -> Result<PathBuf, Status> {
        let path = path_arg(field, value)?;
        self.driver.node.path_roots.check(&path).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
        Ok(path)
    }

    /// Which device the volume is on this node, per its backend.
    async fn device(
        &self,
        backend: &Backend,
        local: &str,
        volume_context: &HashMap<String, String>,
        publish_context: &HashMap<String, String>,
        secrets: Secrets,
    ) -> Result<Device, Status> {
        let (local, vc, pc) = (local.to_owned(), convert::pairs(volume_context), convert::pairs(publish_context));
        Ok(backend.node_device(secrets, &local, vc, pc).await?)
    }

    /// Unstages `volume_id` of `backend` at `staging`. Only when nothing was staged there
    /// (a crash between attach and mount) is the backend asked which file the volume is,
    /// to detach a loop device left attached to it. Best effort: unstage must work even
    /// when the volume is gone from its backend.
    async fn unstage(
        &self,
        backend: &Arc<Backend>,
        local: Option<&str>,
        volume_id: &str,
        staging: PathBuf,
        guard: Arc<impl Send + Sync + 'static>,
    ) -> Result<(), Status> {
        let (instance, volume, driver) = (backend.clone(), volume_id.to_owned(), self.driver.clone());
        let staged = blocking(guard.clone(), move || {
            let notes = &driver.node.staged;
            let staged = volume::unstage(&staging, instance.grants(), &volume, notes.device_of(&volume)?)?;
            notes.forget(&volume)?;
            Ok(staged)
        })
        .await?;
        let Some(local) = local.filter(|_| !staged) else { return Ok(()) };
        match self.device(backend, local, &HashMap::new(), &HashMap::new(), Secrets::default()).await {
            Ok(Device::File(guest)) => {
                let instance = backend.clone();
                blocking(guard, move || volume::detach_leftover(&guest, instance.grants())).await
            }
            Ok(_) => Ok(()),
            Err(status) => {
                tracing::warn!(
                    backend = backend.name(),
                    volume = local,
                    "no backing file to check for a leftover loop device: {}",
                    status.message()
                );
                Ok(())
            }
        }
    }

    /// Stages `device` of `backend` at `staging`.
    async fn stage(
        &self,
        backend: &Arc<Backend>,
        device: Device,
        (volume, staging): (String, PathBuf),
        access: Access,
        guard: impl Send + 'static,
    ) -> Result<(), Status> {
        let (backend, driver) = (backend.clone(), self.driver.clone());
        blocking(guard, move || {
            driver.check_outside_volumes(&staging)?;
            let by_id_root = &driver.node.by_id_root;
            let deadline = Instant::now() + TOOL_DEADLINE;
            let number =
                volume::stage_device(&device, backend.grants(), by_id_root, &staging, &access, deadline, &volume)?;
            driver.node.staged.note(&volume, number)
        })
        .await
    }

    /// Publishes the staged `device` of `backend` at `target`, checking what is staged is it.
    async fn publish(
        &self,
        backend: &Arc<Backend>,
        device: Device,
        (volume, staging, target): (String, PathBuf, PathBuf),
        access: Access,
        readonly: bool,
        guard: impl Send + 'static,
    ) -> Result<(), Status> {
        if staging == target || staging.starts_with(&target) || target.starts_with(&staging) {
            return Err(Status::invalid_argument(format!(
                "target_path {} and staging_target_path {} must be apart, neither inside the other",
                target.display(),
                staging.display()
            )));
        }
        let (backend, driver) = (backend.clone(), self.driver.clone());
        blocking(guard, move || {
            driver.check_outside_volumes(&target)?;
            let number = volume::locate(&device, backend.grants(), &driver.node.by_id_root)?;
            volume::publish(&volume, &staging, &target, &access, readonly, number, || {
                volume::read_only_view(&device, backend.grants())
            })?;
            // Published means staged as this device (a volume staged by an older host gets
            // its note here).
            number.map_or(Ok(()), |number| driver.node.staged.note(&volume, number))
        })
        .await
    }

    /// NodePublish of an ephemeral inline volume: create it (named by its volume id), stage
    /// it under the host's data directory, publish it.
    async fn publish_ephemeral(&self, req: csi::NodePublishVolumeRequest, target: PathBuf) -> Result<(), Status> {
        let cap =
            req.volume_capability.as_ref().ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let capability = convert::capability(cap)?;
        let mut attributes = req.volume_context.clone();
        let size = attributes.remove(EPHEMERAL_SIZE).map(|s| parse_size(&s)).transpose()?.unwrap_or(0);
        let (backend, parameters) = self.driver.backends.select(&attributes)?;
        let access = access(cap, backend)?;
        // The same key NodeUnpublish takes, shared by each step so it lasts until the last ends.
        let guard = Arc::new(self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?);
        // The record names the owning instance before the volume exists, so an unpublish
        // after a failed publish still finds and removes whatever was made, asking no
        // other backend.
        let staging = self.driver.ephemeral_staging(&req.volume_id);
        let record = self.driver.ephemeral_record(&req.volume_id);
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(|e| Status::internal(format!("create {}: {e}", staging.display())))?;
        write_record(&record, &format!("{}\n", backend.name())).await?;
        let request = CreateVolumeRequest {
            name: req.volume_id.clone(),
            capacity: crate::runtime::CapacityRange { required_bytes: size, limit_bytes: 0 },
            capabilities: vec![capability],
            parameters,
            mutable_parameters: vec![],
            content_source: None,
            accessibility: None,
        };
        let created = backend.create_volume(Secrets::from(&req.secrets), guard.clone(), request).await?;
        write_record(&record, &format!("{}\n{}\n", backend.name(), created.id)).await?;
        let device =
            self.device(backend, &created.id, &HashMap::new(), &HashMap::new(), Secrets::from(&req.secrets)).await?;
        tracing::info!(backend = backend.name(), volume = %req.volume_id, "ephemeral volume created");
        let volume = req.volume_id.clone();
        self.stage(backend, device.clone(), (volume.clone(), staging.clone()), access.clone(), guard.clone()).await?;
        self.publish(backend, device, (volume, staging, target), access, req.readonly, guard).await
    }

    /// NodeUnpublish of an ephemeral inline volume: unstage and delete it, then forget it.
    async fn remove_ephemeral(
        &self,
        volume_id: &str,
        owner: Owner,
        guard: Arc<impl Send + Sync + 'static>,
    ) -> Result<(), Status> {
        let Owner { backend, local } = owner;
        let local = match local {
            Some(local) => Some(local),
            // The create may have happened without the record catching up: ask its owner only.
            None => backend.find_volume(Secrets::default(), volume_id).await?.map(|v| v.id),
        };
        let staging = self.driver.ephemeral_staging(volume_id);
        self.unstage(&backend, local.as_deref(), volume_id, staging.clone(), guard.clone()).await?;
        blocking(guard, move || paths::remove_target(&staging).map(drop).map_err(NodeError::from)).await?;
        if let Some(local) = local {
            backend.delete_volume(Secrets::default(), (), &local).await?;
            tracing::info!(backend = backend.name(), volume = %volume_id, "ephemeral volume deleted");
        }
        let record = self.driver.ephemeral_record(volume_id);
        match tokio::fs::remove_file(&record).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Status::internal(format!("remove {}: {e}", record.display())))
            }
            _ => Ok(()),
        }
    }
}

/// Writes an ephemeral volume's owner record durably (write, flush, rename), so a crash
/// leaves either the old record or the new one.
async fn write_record(record: &Path, text: &str) -> Result<(), Status> {
    let (record, text) = (record.to_owned(), text.to_owned());
    blocking((), move || {
        let io = |e: std::io::Error| NodeError::Internal(format!("write {}: {e}", record.display()));
        let partial = record.with_extension("new");
        let mut file = std::fs::File::create(&partial).map_err(io)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&partial, &record).map_err(io)
    })
    .await
}

/// Runs node work on a blocking thread, holding `guard` until it is done.
async fn blocking<T: Send + 'static>(
    guard: impl Send + 'static,
    work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(move || {
        let result = work();
        drop(guard);
        result
    })
    .await
    .map_err(|e| Status::internal(format!("node task failed: {e}")))?
    .map_err(node_status)
}

fn node_status(e: NodeError) -> Status {
    match e {
        NodeError::InvalidArgument(m) => Status::invalid_argument(m),
        NodeError::NotFound(m) => Status::not_found(m),
        NodeError::AlreadyExists(m) => Status::already_exists(m),
        NodeError::FailedPrecondition(m) => Status::failed_precondition(m),
        NodeError::Internal(m) => Status::internal(m),
    }
}

/// A required, absolute, normalized path argument.
fn path_arg(field: &str, value: &str) -> Result<PathBuf, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    paths::check_path(value).map(Path::to_path_buf).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// How the workload consumes the volume, with the filesystem defaulted by the backend;
/// FAILED_PRECONDITION when the backend cannot serve the capability ("exceeds capabilities").
fn access(cap: &csi::VolumeCapability, backend: &Backend) -> Result<Access, Status> {
    let capability = convert::capability(cap)?;
    if let Some(why) = convert::unsupported(backend, &capability) {
        return Err(Status::failed_precondition(why));
    }
    Ok(match capability.access_type {
        AccessType::Block => Access::Block,
        AccessType::Mount(m) => {
            let fs_type = if m.fs_type.is_empty() { backend.info.default_fs_type.clone() } else { m.fs_type };
            let fs: FsType = fs_type
                .parse()
                .map_err(|_| Status::failed_precondition(format!("filesystem {fs_type:?} is not supported")))?;
            Access::Mount { fs, options: m.mount_flags }
        }
    })
}

/// `1073741824`, `512Mi`, `1Gi`, `2G`: an ephemeral volume's size attribute.
fn parse_size(text: &str) -> Result<u64, Status> {
    let bad = || Status::invalid_argument(format!("volume attribute {EPHEMERAL_SIZE}={text:?} is not a size"));
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let req = inbound("NodeStageVolume", request);
        validate::required("volume_id", &req.volume_id)?;
        let staging = self.node_path("staging_target_path", &req.staging_target_path)?;
        let cap =
            req.volume_capability.as_ref().ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        validate::map("volume_context", &req.volume_context)?;
        validate::map("publish_context", &req.publish_context)?;
        convert::capability(cap)?;
        let (backend, local) = self.route(&req.volume_id)?;
        let access = access(cap, backend)?;
        let guard = self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?;
        let device =
            self.device(backend, local, &req.volume_context, &req.publish_context, Secrets::from(&req.secrets)).await?;
        self.stage(backend, device, (req.volume_id.clone(), staging), access, guard).await?;
        tracing::info!(volume = %req.volume_id, staging = %req.staging_target_path, "volume staged");
        Ok(Response::new(csi::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let req = inbound("NodeUnstageVolume", request);
        validate::required("volume_id", &req.volume_id)?;
        let staging = self.node_path("staging_target_path", &req.staging_target_path)?;
        let (backend, local) = self.route(&req.volume_id)?;
        let guard = Arc::new(self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?);
        self.unstage(backend, Some(local), &req.volume_id, staging, guard).await?;
        tracing::info!(volume = %req.volume_id, staging = %req.staging_target_path, "volume unstaged");
        Ok(Response::new(csi::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let req = inbound("NodePublishVolume", request);
        validate::required("volume_id", &req.volume_id)?;
        let target = self.node_path("target_path", &req.target_path)?;
        let cap =
            req.volume_capability.as_ref().ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        validate::map("volume_context", &req.volume_context)?;
        validate::map("publish_context", &req.publish_context)?;
        convert::capability(cap)?;
        if req.volume_context.get(EPHEMERAL).map(String::as_str) == Some("true") {
            self.publish_ephemeral(req, target).await?;
            return Ok(Response::new(csi::NodePublishVolumeResponse {}));
        }
        if req.staging_target_path.is_empty() {
            return Err(Status::failed_precondition(
                "staging_target_path is required: this plugin stages volumes first",
            ));
        }
        let staging = self.node_path("staging_target_path", &req.staging_target_path)?;
        let (backend, local) = self.route(&req.volume_id)?;
        let access = access(cap, backend)?;
        let guard = self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?;
        let device =
            self.device(backend, local, &req.volume_context, &req.publish_context, Secrets::from(&req.secrets)).await?;
        let readonly = req.readonly;
        self.publish(backend, device, (req.volume_id.clone(), staging, target), access, readonly, guard).await?;
        tracing::info!(volume = %req.volume_id, target = %req.target_path, readonly, "volume published");
        Ok(Response::new(csi::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let req = inbound("NodeUnpublishVolume", request);
        validate::required("volume_id", &req.volume_id)?;
        let target = self.node_path("target_path", &req.target_path)?;
        let owner = self.owner(&req.volume_id).await?;
        // Shared by each blocking step, so the lock lasts until the last one really ends.
        let guard = Arc::new(self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?);
        let (instance, volume, driver) = (owner.backend.clone(), req.volume_id.clone(), self.driver.clone());
        blocking(guard.clone(), move || {
            volume::unpublish(&target, instance.grants(), &volume, driver.node.staged.device_of(&volume)?)
        })
        .await?;
        if self.driver.backends.route(&req.volume_id).is_none() {
            self.remove_ephemeral(&req.volume_id, owner, guard).await?;
        }
        tracing::info!(volume = %req.volume_id, target = %req.target_path, "volume unpublished");
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        use csi::volume_usage::Unit;
        let req = inbound("NodeGetVolumeStats", request);
        validate::required("volume_id", &req.volume_id)?;
        if req.volume_path.is_empty() {
            return Err(Status::invalid_argument("volume_path is required"));
        }
        let owner = self.owner(&req.volume_id).await?;
        // A path that cannot be a published volume names none: NOT_FOUND, as the spec says.
        let path = path_arg("volume_path", &req.volume_path).map_err(|e| Status::not_found(e.message().to_owned()))?;
        let volume = req.volume_id.clone();
        let (usage, condition) = blocking((), move || volume::usage(&path, owner.backend.grants(), &volume)).await?;
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let entry = |unit: Unit, total: u64, available: u64, used: u64| csi::VolumeUsage {
            total: signed(total),
            available: signed(available),
            used: signed(used),
            unit: unit as i32,
        };
        let usage = match usage {
            Usage::Filesystem(s) => vec![
                entry(Unit::Bytes, s.total_bytes, s.available_bytes, s.used_bytes),
                entry(Unit::Inodes, s.total_inodes, s.free_inodes, s.used_inodes),
            ],
            Usage::Block { bytes } => {
                vec![csi::VolumeUsage { total: signed(bytes), unit: Unit::Bytes as i32, ..Default::default() }]
            }
        };
        let volume_condition = Some(csi::VolumeCondition {
            abnormal: condition.is_some(),
            message: condition.unwrap_or_else(|| "volume is healthy".into()),
        });
        Ok(Response::new(csi::NodeGetVolumeStatsResponse { usage, volume_condition }))
    }

    async fn node_expand_volume(
        &self,
        request: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        let req = inbound("NodeExpandVolume", request);
        validate::required("volume_id", &req.volume_id)?;
        let owner = self.owner(&req.volume_id).await?;
        let path = path_arg("volume_path", &req.volume_path)?;
        let capacity = convert::capacity_range(req.capacity_range.as_ref())?;
        let required = capacity.required_bytes;
        if let Some(cap) = &req.volume_capability {
            convert::capability(cap)?;
        }
        let guard = Arc::new(self.driver.locks.try_lock(vec![format!("volume:{}", req.volume_id)])?);
        // A node-local volume is grown here, on its node, whichever node's controller
        // answered ControllerExpandVolume (growing to a size it has is a no-op).
        if let Some((backend, local)) = self.driver.backends.route(&req.volume_id)
            && required > 0
            && backend.info.features.contains(Features::NODE_LOCAL | Features::EXPAND_VOLUMES)
        {
            let local = local.to_owned();
            let secrets = Secrets::from(&req.secrets);
            backend.expand_volume(secrets, guard.clone(), &local, capacity).await?;
        }
        let volume = req.volume_id.clone();
        let bytes = blocking(guard, move || {
            volume::expand(&path, owner.backend.grants(), &volume, Instant::now() + TOOL_DEADLINE)
        })
        .await?;
        if bytes < required {
            return Err(Status::out_of_range(format!(
                "the device holds {bytes} bytes, less than the {required} asked for; expand the volume on the controller first"
            )));
        }
        tracing::info!(volume = %req.volume_id, bytes, "volume expanded on the node");
        Ok(Response::new(csi::NodeExpandVolumeResponse { capacity_bytes: i64::try_from(bytes).unwrap_or(i64::MAX) }))
    }

    async fn node_get_capabilities(
        &self,
        request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        inbound("NodeGetCapabilities", request);
        let backends = &self.driver.backends;
        let multi_writer = backends.iter().any(|b| {
            b.info
                .access_modes
                .iter()
                .any(|m| matches!(m, AccessMode::SingleNodeSingleWriter | AccessMode::SingleNodeMultiWriter))
        });
        let rpcs = [
            (Rpc::StageUnstageVolume, true),
            (Rpc::GetVolumeStats, true),
            (Rpc::VolumeCondition, true),
            (Rpc::ExpandVolume, backends.any(Features::NODE_EXPANSION)),
            (Rpc::SingleNodeMultiWriter, multi_writer),
        ];
        let capabilities = rpcs
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(rpc, _)| csi::NodeServiceCapability {
                r#type: Some(csi::node_service_capability::Type::Rpc(csi::node_service_capability::Rpc {
                    r#type: rpc as i32,
                })),
            })
            .collect();
        Ok(Response::new(csi::NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        request: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        inbound("NodeGetInfo", request);
        let driver = &self.driver;
        // Collected once at start-up: a backend cannot slow or fail this call.
        let segments = driver.node_segments();
        let accessible_topology =
            (!segments.is_empty()).then(|| csi::Topology { segments: segments.clone().into_iter().collect() });
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: driver.node_id.clone(),
            max_volumes_per_node: driver.node.max_volumes_per_node,
            accessible_topology,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2_000_000_000);
        assert!(parse_size("1.5Gi").is_err());
        assert!(parse_size("Gi").is_err());
        assert!(parse_size("99999999999Ti").is_err());
    }
}
