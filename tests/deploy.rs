//! The Kubernetes deployment in deploy/kubernetes, checked offline (no cluster):
//!
//! - every object against the Kubernetes API schemas, strictly, for the oldest and the newest
//!   Kubernetes the deployment supports (the `kubernetes-validate` tool; tests/test.sh
//!   installs it in target/venv), and the snapshot objects, whose kinds are CRDs and not in
//!   those schemas, against the structure of the external-snapshotter CRDs;
//! - against the code: the CSIDriver name is what the real host answers in GetPluginInfo
//!   when started with the DaemonSet's arguments and the ConfigMap's config, every container
//!   reaches the same socket, every host flag exists in `wasmcsi serve --help`, the ConfigMap
//!   parses with the host's own config loader, and every StorageClass names one of its
//!   backend instances.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Host;
use csi::controller_service_capability::{Type as Controller, rpc::Type as Rpc};
use csi::plugin_capability::{Type as Plugin, service::Type as Service};
use csi_proto::v1 as csi;
use serde::Deserialize;
use serde_yaml::Value;
use wasmcsi::config::{ArgRule, BUILTIN_PREFIX, Config};

/// The Kubernetes versions the manifests are validated for: the oldest the deployment
/// supports (external-provisioner v6 needs the storage.k8s.io/v1 VolumeAttributesClass of
/// 1.34) and the newest the pinned validator ships schemas for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.34.0", "1.37.0"];

/// Set in CI: a check that cannot run (no validator) fails instead of skipping.
const REQUIRE_ENV: &str = "WASMCSI_REQUIRE_PRIVILEGED_TESTS";

/// Kinds that are CRDs, checked here against their CRD's schema instead.
const CRD_KINDS: [(&str, &str); 2] =
    [("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"), ("snapshot.storage.k8s.io/v1", "VolumeSnapshot")];

/// Sidecars that talk to the API server (and so mount the projected token).
const API_SIDECARS: [&str; 4] = ["csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"];

/// Host flags that name paths of the test host rather than of the node; the harness sets them.
const HARNESS_FLAGS: [&str; 4] = ["--endpoint", "--data-dir", "--node-id", "--config"];

// ---- the manifests ----

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ lives in the repository").to_path_buf()
}

/// Every *.yaml under deploy/kubernetes, sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![repo_root().join("deploy/kubernetes")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// One object of a manifest file.
struct Object {
    file: PathBuf,
    value: Value,
}

impl Object {
    fn str(&self, path: &[&str]) -> Option<&str> {
        path.iter().try_fold(&self.value, |v, key| v.get(key)).and_then(Value::as_str)
    }
    fn api_version(&self) -> &str {
        self.str(&["apiVersion"]).unwrap_or_else(|| panic!("an object in {} has no apiVersion", self.file.display()))
    }
    fn kind(&self) -> &str {
        self.str(&["kind"]).unwrap_or_else(|| panic!("an object in {} has no kind", self.file.display()))
    }
    fn name(&self) -> &str {
        self.str(&["metadata", "name"])
            .unwrap_or_else(|| panic!("a {} in {} has no name", self.kind(), self.file.display()))
    }
    fn is_crd_kind(&self) -> bool {
        CRD_KINDS.contains(&(self.api_version(), self.kind()))
    }
    fn parse<T: serde::de::DeserializeOwned>(&self, path: &[&str]) -> T {
        let value = path
            .iter()
            .try_fold(&self.value, |v, key| v.get(key))
            .unwrap_or_else(|| panic!("{} has no {path:?}", self.describe()));
        serde_yaml::from_value(value.clone()).unwrap_or_else(|e| panic!("{} {path:?}: {e}", self.describe()))
    }
    fn describe(&self) -> String {
        format!("{} {} ({})", self.kind(), self.name(), self.file.display())
    }
}

struct Manifests {
    objects: Vec<Object>,
}

impl Manifests {
    fn load() -> Manifests {
        let mut objects = Vec::new();
        for file in manifest_files() {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value = Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                if !value.is_null() {
                    objects.push(Object { file: file.clone(), value });
                }
            }
        }
        Manifests { objects }
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> {
        self.objects.iter().filter(move |o| o.kind() == kind)
    }

    #[track_caller]
    fn one<'a>(&'a self, kind: &'a str) -> &'a Object {
        let found: Vec<_> = self.of_kind(kind).collect();
        assert_eq!(found.len(), 1, "expected exactly one {kind}");
        found[0]
    }

    fn driver_name(&self) -> &str {
        self.one("CSIDriver").name()
    }

    fn pod(&self) -> PodSpec {
        self.one("DaemonSet").parse(&["spec", "template", "spec"])
    }

    /// The host config as the host reads it: the ConfigMap key mounted where `--config`
    /// points, as (file name, text).
    fn config_file(&self) -> (String, String) {
        let pod = self.pod();
        let host = pod.container("wasmcsi");
        let config_path = host.flag("--config").expect("the host gets --config");
        let (mount, key) = config_path.rsplit_once('/').expect("--config is a file path");
        let volume = pod.volume(&host.mount_at(mount).name);
        let config_map = volume.config_map.as_ref().unwrap_or_else(|| panic!("{mount} is not a ConfigMap volume"));
        let object = self
            .of_kind("ConfigMap")
            .find(|c| c.name() == config_map.name)
            .expect("the host's ConfigMap is in the manifests");
        let text =
            object.str(&["data", key]).unwrap_or_else(|| panic!("ConfigMap {} has no key {key}", config_map.name));
        (key.to_string(), text.to_string())
    }

    /// The host config, parsed by the host's own loader.
    fn config(&self) -> Config {
        let (file, text) = self.config_file();
        Config::parse(Path::new(&file), &text).unwrap_or_else(|e| panic!("the ConfigMap's host config: {e}"))
    }
}

// ---- the pod of the DaemonSet (the fields these checks read) ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    service_account_name: String,
    #[serde(default = "kubernetes_default_true")]
    automount_service_account_token: bool,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
}

fn kubernetes_default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
    #[serde(default)]
    volume_mounts: Vec<VolumeMount>,
    #[serde(default)]
    ports: Vec<Port>,
    liveness_probe: Option<Probe>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    name: String,
    value_from: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeMount {
    name: String,
    mount_path: String,
    mount_propagation: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Port {
    name: Option<String>,
    container_port: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    http_get: HttpGet,
}

#[derive(Deserialize)]
struct HttpGet {
    path: String,
    port: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    name: String,
    host_path: Option<HostPath>,
    config_map: Option<NamedConfigMap>,
    image: Option<Value>,
}

#[derive(Deserialize)]
struct HostPath {
    path: String,
}

#[derive(Deserialize)]
struct NamedConfigMap {
    name: String,
}

impl PodSpec {
    #[track_caller]
    fn container(&self, name: &str) -> &Container {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("the DaemonSet has no container {name}"))
    }

    #[track_caller]
    fn volume(&self, name: &str) -> &Volume {
        self.volumes.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("the DaemonSet has no volume {name}"))
    }

    /// The node path behind `path` in `container`: through its hostPath mount with the
    /// longest mount path that holds `path`; `None` when no hostPath mount does.
    fn node_path(&self, container: &Container, path: &str) -> Option<PathBuf> {
        let mount = container
            .volume_mounts
            .iter()
            .filter(|m| Path::new(path).starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.len())?;
        let host_path = self.volume(&mount.name).host_path.as_ref()?;
        let rest = Path::new(path).strip_prefix(&mount.mount_path).expect("the mount holds the path");
        Some(Path::new(&host_path.path).join(rest))
    }
}

impl Container {
    /// The value of `--name=value` among the arguments.
    fn flag(&self, name: &str) -> Option<&str> {
        self.args.iter().find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
    }

    #[track_caller]
    fn mount_at(&self, path: &str) -> &VolumeMount {
        self.volume_mounts
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("container {} mounts nothing at {path}", self.name))
    }

    /// The downward-API field an environment variable is set from.
    fn env_field(&self, name: &str) -> Option<&str> {
        let var = self.env.iter().find(|e| e.name == name)?;
        var.value_from.as_ref()?.get("fieldRef")?.get("fieldPath")?.as_str()
    }
}

/// `unix:///a/b.sock` -> `/a/b.sock`.
fn unix_path(endpoint: &str) -> &str {
    endpoint.strip_prefix("unix://").unwrap_or_else(|| panic!("{endpoint:?} is not a unix:// endpoint"))
}

/// The port of `--http-endpoint=:9808`.
fn endpoint_port(endpoint: &str) -> u16 {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{endpoint:?} has no port"))
}

// ---- schemas ----

/// The validator: target/venv (tests/test.sh makes it) or one on PATH.
fn validator() -> Option<PathBuf> {
    let venv = repo_root().join("target/venv/bin/kubernetes-validate");
    if venv.exists() {
        return Some(venv);
    }
    let on_path = Command::new("kubernetes-validate").arg("--version").output().is_ok_and(|o| o.status.success());
    on_path.then(|| PathBuf::from("kubernetes-validate"))
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let Some(validator) = validator() else {
        let why = "kubernetes-validate is not installed (tests/test.sh installs it in target/venv)";
        if std::env::var_os(REQUIRE_ENV).is_some() {
            panic!("manifests_pass_the_kubernetes_schemas could not run: {why}, and {REQUIRE_ENV} is set");
        }
        eprintln!("SKIPPED manifests_pass_the_kubernetes_schemas: {why} (set {REQUIRE_ENV} to make this a failure)");
        return;
    };
    let manifests = Manifests::load();
    let built_in = manifests.objects.iter().filter(|o| !o.is_crd_kind()).count();
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(manifest_files())
            .output()
            .expect("run kubernetes-validate");
        let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        let mut passed = 0;
        for line in report.lines() {
            if line.starts_with("INFO") && line.contains(" passed for resource ") {
                passed += 1;
            } else if line.starts_with("WARN") {
                // An unknown kind is only a warning to the validator: a mistyped apiVersion
                // would pass silently, so only the CRD kinds checked below may be unknown.
                let crd = CRD_KINDS.iter().any(|(api_version, kind)| {
                    line.contains(&format!("Couldn't find schema for kind {kind} with api version {api_version} "))
                });
                assert!(crd, "Kubernetes {version}: {line}");
            } else {
                assert!(!line.starts_with("ERROR"), "Kubernetes {version}: {line}");
            }
        }
        assert!(output.status.success(), "kubernetes-validate failed for Kubernetes {version}:\n{report}");
        assert_eq!(passed, built_in, "every built-in object is validated for Kubernetes {version}:\n{report}");
    }
}

/// snapshot.storage.k8s.io/v1 objects as the openAPIV3Schema of the external-snapshotter
/// CRDs (client/config/crd) defines them: the same fields, the same required ones, the same
/// enum, and a source naming exactly one of a PVC or a content (the CRD's oneOf rule).
#[allow(dead_code, reason = "only deserialized: serde checks each object against these fields")]
mod crd {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct VolumeSnapshotClass {
        pub api_version: String,
        pub kind: String,
        pub metadata: serde_yaml::Value,
        pub driver: String,
        pub deletion_policy: DeletionPolicy,
        #[serde(default)]
        pub parameters: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    pub enum DeletionPolicy {
        Delete,
        Retain,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct VolumeSnapshot {
        pub api_version: String,
        pub kind: String,
        pub metadata: serde_yaml::Value,
        pub spec: VolumeSnapshotSpec,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct VolumeSnapshotSpec {
        pub source: VolumeSnapshotSource,
        pub volume_snapshot_class_name: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct VolumeSnapshotSource {
        pub persistent_volume_claim_name: Option<String>,
        pub volume_snapshot_content_name: Option<String>,
    }
}

#[test]
fn snapshot_objects_follow_their_crd_schemas() {
    let manifests = Manifests::load();
    let driver = manifests.driver_name();
    let class: crd::VolumeSnapshotClass = manifests.one("VolumeSnapshotClass").parse(&[]);
    assert_eq!(class.driver, driver, "the VolumeSnapshotClass names the driver");
    for snapshot in manifests.of_kind("VolumeSnapshot") {
        let parsed: crd::VolumeSnapshot = snapshot.parse(&[]);
        let source = &parsed.spec.source;
        let sources = [&source.persistent_volume_claim_name, &source.volume_snapshot_content_name];
        assert_eq!(
            sources.iter().filter(|s| s.is_some()).count(),
            1,
            "{} names exactly one source",
            snapshot.describe()
        );
        let class_name = parsed.spec.volume_snapshot_class_name.as_deref();
        assert!(
            manifests.of_kind("VolumeSnapshotClass").any(|c| Some(c.name()) == class_name),
            "{} names the class {class_name:?}, which the manifests do not define",
            snapshot.describe()
        );
    }
}

// ---- consistency with the code ----

/// The ConfigMap's config cut to what runs on any machine (builtin modules that need only
/// directories), with every granted directory moved below `root`.
fn portable_config(text: &str, root: &Path) -> String {
    let mut config: Value = serde_yaml::from_str(text).expect("the host config is YAML");
    let backends = config.get_mut("backends").and_then(Value::as_sequence_mut).expect("backends: a list");
    backends.retain(|b| {
        let builtin = b.get("module").and_then(Value::as_str).is_some_and(|m| m.starts_with(BUILTIN_PREFIX));
        let grants = b.get("grants").and_then(Value::as_mapping);
        builtin && grants.is_none_or(|g| g.keys().all(|k| k.as_str() == Some("directories")))
    });
    assert!(!backends.is_empty(), "the ConfigMap defines no builtin backend that needs only directories");
    let grants = backends.iter_mut().filter_map(|b| b.get_mut("grants")?.get_mut("directories")?.as_sequence_mut());
    for grant in grants.flatten() {
        let host = grant.get("host").and_then(Value::as_str).expect("a directory grant has a host path");
        let moved = root.join(host.trim_start_matches('/')).display().to_string();
        grant["host"] = Value::String(moved);
    }
    serde_yaml::to_string(&config).expect("serialize the config")
}

#[tokio::test]
async fn the_host_started_as_deployed_answers_what_the_manifests_expect() {
    let manifests = Manifests::load();
    let driver = manifests.driver_name().to_string();
    let pod = manifests.pod();
    let args = &pod.container("wasmcsi").args;
    assert_eq!(args.first().map(String::as_str), Some("serve"), "the host container runs `wasmcsi serve`");
    let kept = args[1..].iter().filter(|a| !HARNESS_FLAGS.iter().any(|f| a.split('=').next() == Some(*f)));

    let mut host = Host::new();
    let (file, text) = manifests.config_file();
    host.write_config(&file, &portable_config(&text, &host.path().join("node")));
    host.args(kept.cloned());
    host.start().await;

    let mut identity = host.identity().await;
    let info = identity.get_plugin_info(csi::GetPluginInfoRequest {}).await.expect("GetPluginInfo").into_inner();
    assert_eq!(info.name, driver, "the CSIDriver is named as the host reports itself");

    // The sidecars rely on these: node-deployment provisioning needs topology, capacity
    // tracking GetCapacity, the snapshotter exits on a driver without snapshots.
    let plugin =
        identity.get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}).await.expect("GetPluginCapabilities");
    let plugin: Vec<_> = plugin.into_inner().capabilities.into_iter().filter_map(|c| c.r#type).collect();
    let service = |t: Service| plugin.iter().any(|p| matches!(p, Plugin::Service(s) if s.r#type == t as i32));
    assert!(service(Service::ControllerService) && service(Service::VolumeAccessibilityConstraints), "{plugin:?}");
    assert!(
        plugin.iter().any(|p| matches!(p, Plugin::VolumeExpansion(_))),
        "allowVolumeExpansion needs expansion: {plugin:?}"
    );

    let controller =
        host.controller().await.controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {}).await;
    let rpcs: BTreeSet<i32> = controller
        .expect("ControllerGetCapabilities")
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| match c.r#type? {
            Controller::Rpc(rpc) => Some(rpc.r#type),
        })
        .collect();
    for rpc in [Rpc::CreateDeleteVolume, Rpc::GetCapacity, Rpc::CreateDeleteSnapshot, Rpc::ExpandVolume] {
        assert!(rpcs.contains(&(rpc as i32)), "the sidecars need {rpc:?}; the host offers {rpcs:?}");
    }

    // Node-local volumes carry topology.<driver>/node=<node id> (deploy/README.md).
    let node = host.node().await.node_get_info(csi::NodeGetInfoRequest {}).await.expect("NodeGetInfo").into_inner();
    let segments = node.accessible_topology.expect("node topology").segments;
    assert_eq!(segments.get(&format!("topology.{driver}/node")), Some(&node.node_id), "{segments:?}");
}

#[test]
fn every_container_reaches_the_host_socket() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let host = pod.container("wasmcsi");
    let endpoint = host.flag("--endpoint").expect("the host gets --endpoint");
    let socket = pod.node_path(host, unix_path(endpoint)).expect("the host socket is on a hostPath volume");
    let kubelet_plugin = format!("/var/lib/kubelet/plugins/{}/csi.sock", manifests.driver_name());
    assert_eq!(socket, Path::new(&kubelet_plugin), "the socket is in the driver's kubelet plugin directory");

    for sidecar in pod.containers.iter().filter(|c| c.name != host.name) {
        let address = sidecar.flag("--csi-address").unwrap_or_else(|| panic!("{} gets no --csi-address", sidecar.name));
        assert_eq!(
            pod.node_path(sidecar, address).as_deref(),
            Some(socket.as_path()),
            "{} reaches {address}",
            sidecar.name
        );
    }
    let registrar = pod.container("node-driver-registrar");
    let registration =
        registrar.flag("--kubelet-registration-path").expect("the registrar gets --kubelet-registration-path");
    assert_eq!(Path::new(registration), socket, "the kubelet is told the host socket's node path");
    assert_eq!(pod.node_path(registrar, "/registration"), Some(PathBuf::from("/var/lib/kubelet/plugins_registry")));

    // Staging and publish mounts must reach the node (the kubelet passes node paths); so
    // must the mounts in the host's own data dir, to outlive a restart of the container.
    assert_eq!(pod.node_path(host, "/var/lib/kubelet"), Some(PathBuf::from("/var/lib/kubelet")));
    for path in ["/var/lib/kubelet", host.flag("--data-dir").expect("the host gets --data-dir")] {
        assert_eq!(
            host.mount_at(path).mount_propagation.as_deref(),
            Some("Bidirectional"),
            "{path} propagates both ways"
        );
        assert!(pod.node_path(host, path).is_some(), "{path} is on a hostPath volume");
    }
}

#[test]
fn the_liveness_probe_reaches_the_livenessprobe_sidecar() {
    let pod = Manifests::load().pod();
    let host = pod.container("wasmcsi");
    let probe = host.liveness_probe.as_ref().expect("the host container has a liveness probe");
    assert_eq!(probe.http_get.path, "/healthz");
    let port = match &probe.http_get.port {
        Value::String(name) => {
            host.ports.iter().find(|p| p.name.as_ref() == Some(name)).expect("the named port").container_port
        }
        number => number.as_u64().and_then(|n| u16::try_from(n).ok()).expect("a port number"),
    };
    let sidecar = pod.container("livenessprobe");
    assert_eq!(endpoint_port(sidecar.flag("--http-endpoint").expect("--http-endpoint")), port);
}

#[test]
fn every_host_flag_exists_in_the_host_cli() {
    let help = Command::new(env!("CARGO_BIN_EXE_wasmcsi")).args(["serve", "--help"]).output().expect("run wasmcsi");
    assert!(help.status.success(), "wasmcsi serve --help failed");
    let help = String::from_utf8(help.stdout).expect("UTF-8 help");
    let known: BTreeSet<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|word| word.starts_with("--"))
        .collect();

    let pod = Manifests::load().pod();
    let host = pod.container("wasmcsi");
    for arg in host.args.iter().skip(1) {
        let flag = arg.split('=').next().expect("a flag");
        assert!(known.contains(flag), "the host has no flag {flag} (it has {known:?})");
    }
    // Kubernetes leaves $(VAR) as it is when the container does not define VAR.
    for container in &pod.containers {
        for arg in &container.args {
            for var in arg.split("$(").skip(1).filter_map(|rest| rest.split_once(')').map(|(var, _)| var)) {
                assert!(
                    container.env.iter().any(|e| e.name == var),
                    "{}: {arg} uses ${var}, which it does not set",
                    container.name
                );
            }
        }
    }
}

#[test]
fn storage_classes_and_the_host_config_agree() {
    let manifests = Manifests::load();
    let driver = manifests.driver_name();
    let config = manifests.config();
    let instances: BTreeSet<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    let node_local = |instance: &str| {
        let module = &config.backends.iter().find(|b| b.name == instance).expect("an instance").module;
        let stem = Path::new(module.trim_start_matches(BUILTIN_PREFIX)).file_stem().and_then(|s| s.to_str());
        matches!(stem, Some("loopfile" | "lvm"))
    };

    let mut classes = BTreeSet::new();
    for class in manifests.of_kind("StorageClass") {
        assert_eq!(class.str(&["provisioner"]), Some(driver), "{}", class.describe());
        let backend =
            class.str(&["parameters", "backend"]).unwrap_or_else(|| panic!("{} names no backend", class.describe()));
        assert!(
            instances.contains(backend),
            "{} names backend {backend:?}; the config has {instances:?}",
            class.describe()
        );
        let binding = class.str(&["volumeBindingMode"]);
        assert!(
            !node_local(backend) || binding == Some("WaitForFirstConsumer"),
            "{}: a node-local backend needs WaitForFirstConsumer",
            class.describe()
        );
        classes.insert(class.name());
    }
    let with_class: BTreeSet<_> =
        manifests.of_kind("StorageClass").filter_map(|c| c.str(&["parameters", "backend"])).collect();
    assert_eq!(with_class, instances, "every backend instance has a StorageClass");

    for claim in manifests.of_kind("PersistentVolumeClaim") {
        let class = claim.str(&["spec", "storageClassName"]).unwrap_or_default();
        assert!(
            classes.contains(class),
            "{} uses the StorageClass {class:?}, which the manifests do not define",
            claim.describe()
        );
    }
    for pod in manifests.of_kind("Pod") {
        let volumes: Vec<Value> = pod.parse(&["spec", "volumes"]);
        for inline in volumes.iter().filter_map(|v| v.get("csi")) {
            assert_eq!(inline.get("driver").and_then(Value::as_str), Some(driver), "{}", pod.describe());
            let backend = inline.get("volumeAttributes").and_then(|a| a.get("backend")).and_then(Value::as_str);
            assert!(
                backend.is_some_and(|b| instances.contains(b) && node_local(b)),
                "{}: inline backend {backend:?}",
                pod.describe()
            );
        }
    }
    for class in manifests.of_kind("VolumeAttributesClass") {
        assert_eq!(class.str(&["driverName"]), Some(driver), "{}", class.describe());
    }
}

#[test]
fn the_host_config_fits_the_host_container() {
    let manifests = Manifests::load();
    let config = manifests.config();
    let pod = manifests.pod();
    let host = pod.container("wasmcsi");
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).expect("read deploy/Dockerfile");

    for backend in &config.backends {
        let name = &backend.name;
        // A module file comes from the backends image volume, or from the same path in the
        // host image (the Dockerfile copies the components there) when that volume is absent.
        if !backend.module.starts_with(BUILTIN_PREFIX) {
            let (dir, file) = backend.module.rsplit_once('/').expect("a module path");
            let mount = host.mount_at(dir);
            assert!(pod.volume(&mount.name).image.is_some(), "{name}: {dir} is not the backends image volume");
            assert!(
                dockerfile.contains(&format!("/out/backends/{file}")),
                "{name}: the Dockerfile does not build {file}"
            );
            assert!(
                dockerfile.contains(&format!("/out/backends/ {dir}/")),
                "{name}: the host image does not carry {dir}"
            );
        }
        // Granted paths must be the node's, not the container's own filesystem.
        for directory in &backend.grants.directories {
            let path = directory.host.to_str().expect("a UTF-8 path");
            assert!(pod.node_path(host, path).is_some(), "{name}: {path} is not on a hostPath volume");
        }
        for device in &backend.grants.devices {
            assert_eq!(
                pod.node_path(host, device).map(|p| p.starts_with("/dev")),
                Some(true),
                "{name}: {device} is not the node's"
            );
        }
        for var in &backend.grants.secret_env {
            assert!(host.env.iter().any(|e| &e.name == var), "{name}: the host container does not set {var}");
        }
        // Command grants list the options they allow; `**` would hand the backend all of them.
        for command in &backend.grants.commands {
            for rule in &command.allow {
                assert!(
                    !matches!(rule, ArgRule::Vector(patterns) if patterns.iter().any(|p| p == "**")),
                    "{name}: {:?} is granted with \"**\"",
                    command.program
                );
            }
        }
    }
}

#[test]
fn the_sidecars_run_as_one_daemonset() {
    let manifests = Manifests::load();
    let pod = manifests.pod();
    let namespace = manifests.one("DaemonSet").str(&["metadata", "namespace"]).expect("a namespace").to_string();

    // Per node: the provisioner (capacity of its node, owned by the DaemonSet) and the
    // snapshotter, each told its node's name. One leader per cluster: attacher and resizer.
    let provisioner = pod.container("csi-provisioner");
    for (flag, value) in
        [("--node-deployment", "true"), ("--enable-capacity", "true"), ("--capacity-ownerref-level", "1")]
    {
        assert_eq!(provisioner.flag(flag), Some(value), "csi-provisioner {flag}");
    }
    let env = [("NODE_NAME", "spec.nodeName"), ("NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name")];
    for (var, field) in env {
        assert_eq!(provisioner.env_field(var), Some(field), "csi-provisioner {var}");
    }
    let capacity = manifests.one("CSIDriver").value["spec"]["storageCapacity"].as_bool();
    assert_eq!(capacity, Some(true), "the scheduler uses the published capacity");
    let snapshotter = pod.container("csi-snapshotter");
    assert_eq!(snapshotter.flag("--node-deployment"), Some("true"));
    assert_eq!(snapshotter.env_field("NODE_NAME"), Some("spec.nodeName"));
    for name in ["csi-provisioner", "csi-snapshotter"] {
        assert_eq!(pod.container(name).flag("--leader-election"), None, "{name} runs on every node without a leader");
    }
    for name in ["csi-attacher", "csi-resizer"] {
        let sidecar = pod.container(name);
        assert_eq!(sidecar.flag("--leader-election"), Some("true"), "{name}");
        assert_eq!(sidecar.flag("--leader-election-namespace"), Some("$(NAMESPACE)"), "{name}");
        assert_eq!(sidecar.env_field("NAMESPACE"), Some("metadata.namespace"), "{name}");
    }

    // Pinned images, the sidecars from upstream; the API token only where the API is used.
    assert!(!pod.automount_service_account_token, "the pod mounts no token into every container");
    for container in &pod.containers {
        let tag = container.image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or_default();
        assert!(!tag.is_empty() && tag != "latest", "{} is not pinned: {}", container.name, container.image);
        let upstream = container.image.starts_with("registry.k8s.io/sig-storage/");
        assert_eq!(upstream, container.name != "wasmcsi", "{} runs {}", container.name, container.image);
        let token =
            container.volume_mounts.iter().any(|m| m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount");
        assert_eq!(token, API_SIDECARS.contains(&container.name.as_str()), "{} and the API token", container.name);
    }

    // The ServiceAccount exists, and every binding grants it a role that exists.
    let account =
        manifests.of_kind("ServiceAccount").find(|a| a.name() == pod.service_account_name).expect("the ServiceAccount");
    assert_eq!(account.str(&["metadata", "namespace"]), Some(namespace.as_str()));
    let roles: BTreeMap<(&str, &str), &Object> =
        manifests.objects.iter().filter(|o| o.kind().ends_with("Role")).map(|o| ((o.kind(), o.name()), o)).collect();
    for binding in manifests.objects.iter().filter(|o| o.kind().ends_with("RoleBinding")) {
        let role = (
            binding.str(&["roleRef", "kind"]).expect("roleRef.kind"),
            binding.str(&["roleRef", "name"]).expect("roleRef.name"),
        );
        let found =
            roles.get(&role).unwrap_or_else(|| panic!("{} binds {role:?}, which is not defined", binding.describe()));
        assert_eq!(
            found.str(&["metadata", "namespace"]),
            binding.str(&["metadata", "namespace"]),
            "{}",
            binding.describe()
        );
        let subjects: Vec<Value> = binding.parse(&["subjects"]);
        for subject in &subjects {
            assert_eq!(subject["name"].as_str(), Some(pod.service_account_name.as_str()), "{}", binding.describe());
            assert_eq!(subject["namespace"].as_str(), Some(namespace.as_str()), "{}", binding.describe());
        }
    }
}

// ---- host behaviour the single DaemonSet needs ----

/// The external-resizer elects one leader for the cluster, so ControllerExpandVolume of a
/// node-local volume reaches whichever node holds the lease: it must answer without the
/// volume's node, and NodeExpandVolume on the node that holds the volume must grow it.
#[tokio::test]
async fn node_local_volumes_grow_on_the_node_that_holds_them() {
    const TEST: &str = "node_local_volumes_grow_on_the_node_that_holds_them";
    let mut hosts = [Host::new(), Host::new()];
    for host in &mut hosts {
        let config = host.loopfile_toml("loopfile", "volumes", true);
        host.write_config("config.toml", &config);
        host.args(["--distributed"]);
        host.start().await;
    }
    let [owner, elsewhere] = &hosts;
    let cap = common::block_cap(common::AccessMode::SingleNodeWriter);
    let request = csi::CreateVolumeRequest {
        volume_capabilities: vec![cap.clone()],
        ..common::create_req("pvc-grow", 64 * common::MIB)
    };
    let volume = common::expect_ok(owner.controller().await.create_volume(request).await, "CreateVolume")
        .volume
        .expect("a volume");
    let file = common::backing_file(&owner.path().join("volumes"), common::local_id(&volume.volume_id, "loopfile"));
    let size = || std::fs::metadata(&file).expect("the backing file").len() as i64;

    let grow = csi::ControllerExpandVolumeRequest {
        volume_id: volume.volume_id.clone(),
        capacity_range: common::range(128 * common::MIB, 0),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    };
    let grown = common::expect_ok(
        elsewhere.controller().await.controller_expand_volume(grow).await,
        "ControllerExpandVolume on another node",
    );
    assert_eq!(grown.capacity_bytes, 128 * common::MIB);
    assert!(grown.node_expansion_required, "the owning node grows the volume");
    assert_eq!(size(), 64 * common::MIB, "nothing grows before the owning node's NodeExpandVolume");

    if !common::privileged(TEST) {
        return;
    }
    let (staging, target) = (owner.node_path("staging"), owner.node_path("target"));
    let text = |p: &Path| p.display().to_string();
    let mut node = owner.node().await;
    let stage = csi::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: text(&staging),
        volume_capability: Some(cap.clone()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    common::expect_ok(node.node_stage_volume(stage).await, "NodeStageVolume");
    let publish = csi::NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: text(&staging),
        target_path: text(&target),
        volume_capability: Some(cap.clone()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    common::expect_ok(node.node_publish_volume(publish).await, "NodePublishVolume");
    let expand = csi::NodeExpandVolumeRequest {
        volume_id: volume.volume_id.clone(),
        volume_path: text(&target),
        capacity_range: common::range(128 * common::MIB, 0),
        staging_target_path: text(&staging),
        volume_capability: Some(cap),
        ..Default::default()
    };
    let expanded = common::expect_ok(node.node_expand_volume(expand).await, "NodeExpandVolume on the owning node");
    assert_eq!(expanded.capacity_bytes, 128 * common::MIB, "the device has the new size");
    assert_eq!(size(), 128 * common::MIB, "the backing file grew on the owning node");

    let unpublish = csi::NodeUnpublishVolumeRequest { volume_id: volume.volume_id.clone(), target_path: text(&target) };
    common::expect_ok(node.node_unpublish_volume(unpublish).await, "NodeUnpublishVolume");
    let unstage =
        csi::NodeUnstageVolumeRequest { volume_id: volume.volume_id.clone(), staging_target_path: text(&staging) };
    common::expect_ok(node.node_unstage_volume(unstage).await, "NodeUnstageVolume");
    common::assert_no_leftovers(owner);
}
