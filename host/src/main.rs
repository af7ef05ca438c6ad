//! The `wasmcsi` command: serve CSI on a unix socket with the configured backends (or the
//! embedded loopfile default).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmcsi::config::Config;
use wasmcsi::csi::names::NameIndex;
use wasmcsi::csi::{Backends, Driver, NODE_TOPOLOGY_DEADLINE, NodeSettings};
use wasmcsi::node::paths::PathRoots;
use wasmcsi::node::staged::StagedDevices;
use wasmcsi::runtime::Runtime;
use wasmcsi::server::{self, Mode};

#[derive(Parser)]
#[command(version, about = "CSI host running storage backends as sandboxed WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve CSI on a unix socket.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// CSI endpoint, unix://<path>. Defaults to <data-dir>/csi.sock.
    #[arg(long, env = "CSI_ENDPOINT")]
    endpoint: Option<String>,
    /// This node's id (default: the hostname).
    #[arg(long, env = "NODE_ID")]
    node_id: Option<String>,
    /// Which services to serve.
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// Backend config (TOML or YAML). Without it: the embedded loopfile backend.
    #[arg(long, env = "WASMCSI_CONFIG")]
    config: Option<PathBuf>,
    /// Host state: compiled-component cache, and the embedded default's volumes.
    #[arg(long, env = "WASMCSI_DATA_DIR", default_value = "wasmcsi-data")]
    data_dir: PathBuf,
    /// Compiled-component cache (default: <data-dir>/cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Permission bits of the socket, in octal.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    socket_mode: u32,
    /// CSI driver name reported by GetPluginInfo.
    #[arg(long, env = "CSI_DRIVER_NAME", default_value = "wasmcsi.dev")]
    driver_name: String,
    /// Where disks appear by serial (cloud disks are found here on the node).
    #[arg(long, default_value = "/dev/disk/by-id")]
    by_id_root: PathBuf,
    /// Volumes this node may hold, reported by NodeGetInfo (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_volumes_per_node: i64,
    /// One of many hosts serving the same driver (a DaemonSet), each holding its own
    /// node-local volumes: controller calls about another node's node-local volume are
    /// answered without seeing it (ControllerPublish succeeds, ControllerExpand leaves the
    /// growth to NodeExpandVolume on the volume's node).
    #[arg(long, env = "WASMCSI_DISTRIBUTED")]
    distributed: bool,
    /// A directory beneath which staging and target paths may lie (repeatable; the
    /// kubelet's root in a deployment). With none here or in the config: the data
    /// directory and the system temp directory.
    #[arg(long = "allowed-path-root", env = "WASMCSI_ALLOWED_PATH_ROOTS", value_delimiter = ':')]
    allowed_path_roots: Vec<PathBuf>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal permission mode like 0600"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let Command::Serve(args) = Cli::parse().command;
    // Whatever a granted program or a tool leaves behind is reparented to the host and killed.
    wasmcsi::command::adopt_orphans().context("become the subreaper of the programs the host runs")?;
    tokio::runtime::Runtime::new()?.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let node_id = match args.node_id {
        Some(id) => id,
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    check_node_id(&node_id)?;
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(&std::path::absolute(&args.data_dir)?),
    };
    let cache_dir = args.cache_dir.clone().unwrap_or_else(|| args.data_dir.join("cache"));
    let default = config.backends.iter().find(|b| b.default).map(|b| b.name.clone());
    let allowed_path_roots = config.allowed_path_roots.clone();
    let loader_node_id = node_id.clone();
    let slots = config.backends.iter().map(|b| b.limits.concurrency as u32).sum();
    let backends = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<_>> {
        let runtime =
            Runtime::new(&cache_dir, Arc::new(wasmcsi::command::System), slots).context("start the wasm runtime")?;
        config.backends.iter().map(|b| runtime.load(b, &loader_node_id).map_err(anyhow::Error::from)).collect()
    })
    .await??;
    let ephemeral_dir = std::path::absolute(args.data_dir.join("ephemeral"))?;
    std::fs::create_dir_all(&ephemeral_dir).with_context(|| format!("create {}", ephemeral_dir.display()))?;
    let mut roots = args.allowed_path_roots;
    roots.extend(allowed_path_roots);
    if roots.is_empty() {
        roots = vec![std::path::absolute(&args.data_dir)?, std::env::temp_dir()];
    }
    let path_roots = PathRoots::new(&roots).map_err(anyhow::Error::msg)?;
    let node = NodeSettings {
        by_id_root: args.by_id_root,
        ephemeral_dir,
        max_volumes_per_node: args.max_volumes_per_node,
        distributed: args.distributed,
        path_roots,
        staged: StagedDevices::open(&args.data_dir.join("staged")).context("open <data-dir>/staged")?,
    };
    let names_dir = std::path::absolute(args.data_dir.join("names"))?;
    let names = tokio::task::spawn_blocking(move || NameIndex::open(&names_dir)).await??;
    let backends = Backends::new(backends, default.as_deref());
    let driver = Driver::start(args.driver_name, node_id, backends, node, names, NODE_TOPOLOGY_DEADLINE).await?;
    let driver = Arc::new(driver);

    let endpoint = args.endpoint.unwrap_or_else(|| format!("unix://{}", args.data_dir.join("csi.sock").display()));
    let path = server::socket_path(&endpoint)?;
    let listener = server::bind(&path, args.socket_mode).await?;
    server::serve(driver, listener, &path, args.mode).await
}

/// Node ids are echoed into topology and logs: bounded, printable, no whitespace.
fn check_node_id(id: &str) -> anyhow::Result<()> {
    let sane = !id.is_empty() && id.len() <= 256 && id.chars().all(|c| c.is_ascii_graphic());
    anyhow::ensure!(sane, "node id {id:?} must be 1-256 printable characters without spaces");
    Ok(())
}
