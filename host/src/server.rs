//! Serves the CSI services on a unix socket: removes a stale socket (refusing to steal a
//! live one), sets the socket's mode, and shuts down gracefully on SIGTERM/SIGINT, letting
//! in-flight calls finish.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use csi_proto::v1::{
    controller_server::ControllerServer, group_controller_server::GroupControllerServer,
    identity_server::IdentityServer, node_server::NodeServer,
};
use nix::sys::stat::{Mode as Permissions, umask};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::csi::{ControllerService, Driver, GroupControllerService, IdentityService, NodeService};

/// Which CSI services this process serves (Identity is always served).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Node,
    Controller,
    All,
}

impl Mode {
    pub fn controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }
    pub fn node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
}

/// The socket path of a `unix://` endpoint (absolute or relative path after the scheme).
pub fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path =
        endpoint.strip_prefix("unix://").with_context(|| format!("endpoint {endpoint:?} must be unix://<path>"))?;
    if path.is_empty() {
        bail!("endpoint {endpoint:?} has no socket path");
    }
    Ok(PathBuf::from(path))
}

/// Binds the socket, replacing a stale one.
pub async fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("create socket directory {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                bail!("socket {} is served by another live process", path.display());
            }
            std::fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket; refusing to replace it", path.display()),
        Err(_) => {}
    }
    // The umask keeps the socket from ever having wider permissions than `mode`; start-up
    // creates no other files while it is narrowed.
    let previous = umask(Permissions::from_bits_truncate(!mode & 0o777));
    let bound = UnixListener::bind(path);
    umask(previous);
    let listener = bound.with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("set mode of {}", path.display()))?;
    Ok(listener)
}

/// Serves until SIGTERM or SIGINT, then drains in-flight calls and removes the socket.
pub async fn serve(driver: Arc<Driver>, listener: UnixListener, path: &Path, mode: Mode) -> anyhow::Result<()> {
    let mut router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(driver.clone(), mode.controller())));
    if mode.controller() {
        router = router
            .add_service(ControllerServer::new(ControllerService::new(driver.clone())))
            .add_service(GroupControllerServer::new(GroupControllerService));
    }
    if mode.node() {
        router = router.add_service(NodeServer::new(NodeService::new(driver.clone())));
    }
    tracing::info!(socket = %path.display(), ?mode, driver = %driver.name, node = %driver.node_id, "serving CSI");
    router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal()).await?;
    let _ = std::fs::remove_file(path);
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down; letting in-flight calls finish");
}
