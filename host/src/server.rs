//! Serves the CSI services on a unix socket: removes a stale socket (refusing to steal a
//! live one), sets the socket's mode, accepts connections under the bounds of
//! [`connections`] (backing off when accept fails, e.g. at the open-file limit, instead of
//! spinning), and shuts down gracefully on SIGTERM/SIGINT, letting in-flight calls finish.
//!
//! The accept loop is our own (hyper's HTTP/2 server over tonic's routes) so that every
//! connection and stream is bounded and timed.

pub mod connections;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use csi_proto::v1::{
    controller_server::ControllerServer, group_controller_server::GroupControllerServer,
    identity_server::IdentityServer, node_server::NodeServer,
};
use nix::sys::stat::{Mode as Permissions, umask};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tonic::service::Routes;

use crate::csi::{ControllerService, Driver, GroupControllerService, IdentityService, NodeService};
use connections::{Connections, LIMITS};

/// Pause after a failed accept, doubling up to the maximum while accept keeps failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    let routes = routes(&driver, mode);
    tracing::info!(socket = %path.display(), ?mode, driver = %driver.name, node = %driver.node_id, "serving CSI");
    let (stop, stopped) = watch::channel(false);
    let mut connections = Connections::new(LIMITS);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            _ = &mut signal => break,
            _ = connections.reap() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                connections.admit(stream, routes.clone(), stopped.clone());
            }
            Err(e) => {
                // At the open-file limit an idle connection's descriptor is the one to give up.
                let evicted = connections.evict_idle();
                tracing::warn!(evicted, "accept failed; retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    connections.drain().await;
    let _ = std::fs::remove_file(path);
    tracing::info!("shut down");
    Ok(())
}

/// The gRPC services of `mode`, routed by path.
fn routes(driver: &Arc<Driver>, mode: Mode) -> Routes {
    let mut routes = Routes::new(IdentityServer::new(IdentityService::new(driver.clone(), mode.controller())));
    if mode.controller() {
        routes = routes
            .add_service(ControllerServer::new(ControllerService::new(driver.clone())))
            .add_service(GroupControllerServer::new(GroupControllerService));
    }
    if mode.node() {
        routes = routes.add_service(NodeServer::new(NodeService::new(driver.clone())));
    }
    routes.prepare()
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
