//! The cloud-disk backend end to end against a real EC2 emulator: `moto_server` on
//! 127.0.0.1 (installed by tests/test.sh in `target/venv`), the bundled component speaking
//! the EC2 Query API from inside the sandbox through the host's granted `wasi:http`.
//!
//! The node side stands in for the cloud: the "attached" EBS disk is a loop device over a
//! sparse file, linked under a test by-id root as `nvme-Amazon_Elastic_Block_Store_vol…`,
//! as an NVMe EBS disk appears on a Nitro instance. moto completes every state change at
//! once and ignores ClientToken; the slow and repeated paths are covered by the wasmtime
//! tests in backends/testkit/tests/cloud_disk.rs.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use csi::controller_client::ControllerClient;
use csi_proto::v1 as csi;
use tonic::Code;
use tonic::transport::Channel;

const REGION: &str = "us-east-1";
const ZONE_KEY: &str = "topology.kubernetes.io/zone";
const GIB: i64 = 1 << 30;

fn venv_tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin").join(name)
}

fn moto_ready(test: &str) -> bool {
    privileged(test)
        && (venv_tool("moto_server").exists()
            || cannot_run(test, "moto_server is not installed in target/venv (tests/test.sh installs it)"))
}

/// A moto_server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts the emulator; with `auth`, requests after the setup's must carry a valid SigV4
    /// signature of a key moto issued.
    fn start(auth: bool) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("moto.log");
        let mut command = Command::new(venv_tool("moto_server"));
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("moto.err")).unwrap()));
        if auth {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_REQUESTS.to_string());
        }
        let child = command.spawn().expect("start moto_server");
        let moto = Moto { child, port, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many requests moto has served (its access log, one line per request).
    fn requests(&self) -> usize {
        let err = self.log.with_file_name("moto.err");
        let text =
            std::fs::read_to_string(&err).unwrap_or_default() + &std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter(|l| l.contains("\"POST ") || l.contains("\"GET ")).count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests tests/moto_setup.py makes before moto starts checking signatures.
const SETUP_REQUESTS: usize = 4;

/// What tests/moto_setup.py made: the node's instance and, with auth, an IAM access key.
#[derive(serde::Deserialize)]
struct Setup {
    instance_id: String,
    zone: String,
    private_dns_name: String,
    access_key_id: String,
    secret_access_key: String,
}

fn setup(moto: &Moto, auth: bool) -> Setup {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/moto_setup.py");
    let mut command = Command::new(venv_tool("python"));
    command.arg(script).args(["--endpoint", &moto.endpoint(), "--region", REGION]);
    if auth {
        command.arg("--auth");
    }
    let out = command.output().expect("run moto_setup.py");
    assert!(out.status.success(), "moto_setup.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("moto_setup.py prints JSON")
}

/// A host with one cloud-disk instance `ebs` against `endpoint`, granted `granted`, as node
/// `node_id`, reading the credentials from its environment.
async fn start_host(endpoint: &str, granted: &str, node_id: &str, setup: &Setup) -> Host {
    let mut host = Host::new();
    let config = format!(
        r#"
[[backends]]
name = "ebs"
module = "builtin:cloud-disk"
settings = {{ region = "{REGION}", endpoint = "{endpoint}", wait-budget-ms = 20000 }}
[backends.grants]
http = ["{granted}"]
secret_env = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
# The stand-in disks are loop devices: what a disk found by serial resolves to must be granted.
devices = ["/dev/loop*"]
"#
    );
    host.write_config("ebs.toml", &config);
    std::fs::create_dir_all(host.path().join("by-id")).unwrap();
    let by_id = host.path().join("by-id").display().to_string();
    host.args(["--by-id-root".to_string(), by_id])
        .env("AWS_ACCESS_KEY_ID", &setup.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &setup.secret_access_key);
    host.set_node_id(node_id);
    host.start().await;
    host
}

fn zone(z: &str) -> csi::Topology {
    csi::Topology { segments: params(&[(ZONE_KEY, z)]) }
}

fn create_in_zone(name: &str, bytes: i64, z: &str, cap: csi::VolumeCapability) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: range(bytes, 0),
        volume_capabilities: vec![cap],
        accessibility_requirements: Some(csi::TopologyRequirement {
            requisite: vec![zone(z)],
            preferred: vec![zone(z)],
        }),
        ..Default::default()
    }
}

async fn create(c: &mut ControllerClient<Channel>, request: csi::CreateVolumeRequest) -> csi::Volume {
    let what = format!("CreateVolume {:?}", request.name);
    expect_ok(c.create_volume(request).await, &what).volume.expect("a volume")
}

/// The disk the cloud "attached": a loop device over a sparse file, linked by serial.
struct FakeDisk {
    file: PathBuf,
    device: String,
}

impl FakeDisk {
    fn attach(host: &Host, volume_id: &str, bytes: i64) -> FakeDisk {
        let ebs_id = local_id(volume_id, "ebs");
        let file = host.path().join(format!("{ebs_id}.img"));
        std::fs::File::create(&file).and_then(|f| f.set_len(bytes as u64)).expect("create the disk image");
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&file).output().expect("run losetup");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let serial = ebs_id.replace('-', "");
        let link = host.path().join("by-id").join(format!("nvme-Amazon_Elastic_Block_Store_{serial}"));
        std::os::unix::fs::symlink(&device, link).expect("link the disk by serial");
        FakeDisk { file, device }
    }

    /// The cloud grew the volume: the disk is bigger now.
    fn grow(&self, bytes: i64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.file)
            .and_then(|f| f.set_len(bytes as u64))
            .expect("grow the image");
    }
}

impl Drop for FakeDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[tokio::test]
async fn the_full_csi_flow_against_moto() {
    const TEST: &str = "the_full_csi_flow_against_moto";
    if !moto_ready(TEST) || !privileged_with(TEST, "mkfs.xfs") {
        return;
    }
    let moto = Moto::start(false);
    let node = setup(&moto, false);
    // As in the DaemonSet, the node id is the Kubernetes node name: on EC2 the instance's
    // private DNS name, which the backend resolves to the instance.
    let host = start_host(&moto.endpoint(), &moto.endpoint(), &node.private_dns_name, &node).await;
    let (mut c, mut n) = (host.controller().await, host.node().await);

    // The node reports its zone, which the backend looked up for its instance.
    let info = expect_ok(n.node_get_info(csi::NodeGetInfoRequest {}).await, "NodeGetInfo");
    assert_eq!(info.node_id, node.private_dns_name);
    assert_eq!(info.accessible_topology, Some(zone(&node.zone)));

    // Create: GiB rounding, the zone from the requirements, idempotent by name.
    let cap = mount_cap_fs(AccessMode::SingleNodeWriter, "xfs");
    let request = create_in_zone("pvc-ebs-1", GIB + 1, &node.zone, cap.clone());
    let volume = create(&mut c, request.clone()).await;
    assert_eq!(volume.capacity_bytes, 2 * GIB, "EBS sizes are whole GiB");
    assert_eq!(volume.accessible_topology, vec![zone(&node.zone)]);
    assert!(local_id(&volume.volume_id, "ebs").starts_with("vol-"), "{}", volume.volume_id);
    assert_eq!(create(&mut c, request).await.volume_id, volume.volume_id, "the same name is the same volume");

    // Attach to the node's instance; attaching again is fine.
    let publish = csi::ControllerPublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        node_id: info.node_id.clone(),
        volume_capability: Some(cap.clone()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    let published = expect_ok(c.controller_publish_volume(publish.clone()).await, "ControllerPublishVolume");
    let device_name =
        published.publish_context.get("devicePath").cloned().expect("the device name in the publish context");
    assert!(device_name.starts_with("/dev/xvd"), "{device_name}");
    let again = expect_ok(c.controller_publish_volume(publish).await, "ControllerPublishVolume again");
    assert_eq!(again.publish_context, published.publish_context);

    // Stage and publish the "attached" disk, write, and read back.
    let disk = FakeDisk::attach(&host, &volume.volume_id, 2 * GIB);
    let (staging, target) = (host.node_path("staging"), host.node_path("target"));
    std::fs::create_dir_all(&staging).unwrap();
    let stage = csi::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        publish_context: published.publish_context.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap.clone()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    expect_ok(n.node_stage_volume(stage).await, "NodeStageVolume");
    let node_publish = csi::NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        publish_context: published.publish_context.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap.clone()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    expect_ok(n.node_publish_volume(node_publish).await, "NodePublishVolume");
    let data = target.join("data");
    std::fs::write(&data, pattern(3)).expect("write to the published volume");
    assert_eq!(read_at(&data, 0, pattern(3).len()), pattern(3));

    // Expand: the cloud grows the volume, the node grows the filesystem while mounted.
    let expanded = expect_ok(
        c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: range(3 * GIB, 0),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await,
        "ControllerExpandVolume",
    );
    assert_eq!(expanded.capacity_bytes, 3 * GIB);
    assert!(expanded.node_expansion_required);
    disk.grow(3 * GIB);
    let grown = expect_ok(
        n.node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: range(3 * GIB, 0),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await,
        "NodeExpandVolume",
    );
    assert_eq!(grown.capacity_bytes, 3 * GIB);
    assert_eq!(read_at(&data, 0, pattern(3).len()), pattern(3), "the data survives the growth");

    // Snapshot (moto answers the create with "pending" and completes it at once: the CO's
    // repeated CreateSnapshot then finds it ready), and a volume from it.
    let take = csi::CreateSnapshotRequest {
        source_volume_id: volume.volume_id.clone(),
        name: "snap-ebs-1".into(),
        ..Default::default()
    };
    let first = expect_ok(c.create_snapshot(take.clone()).await, "CreateSnapshot").snapshot.expect("a snapshot");
    let snapshot = expect_ok(c.create_snapshot(take).await, "CreateSnapshot again").snapshot.expect("a snapshot");
    assert_eq!(snapshot.snapshot_id, first.snapshot_id, "the same name is the same snapshot");
    assert!(snapshot.ready_to_use, "moto's snapshot is completed");
    assert_eq!(snapshot.source_volume_id, volume.volume_id);
    let mut restore = create_in_zone("pvc-ebs-restored", 3 * GIB, &node.zone, cap.clone());
    restore.volume_content_source = from_snapshot(&snapshot.snapshot_id);
    let restored = create(&mut c, restore).await;
    assert_ne!(restored.volume_id, volume.volume_id);
    assert_eq!(restored.content_source, from_snapshot(&snapshot.snapshot_id));

    // A volume in use cannot be deleted.
    let in_use =
        c.delete_volume(csi::DeleteVolumeRequest { volume_id: volume.volume_id.clone(), ..Default::default() }).await;
    expect_code(in_use, Code::FailedPrecondition, "DeleteVolume of an attached volume");

    // Tear down in CSI order.
    expect_ok(
        n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: target.display().to_string(),
        })
        .await,
        "NodeUnpublishVolume",
    );
    expect_ok(
        n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await,
        "NodeUnstageVolume",
    );
    drop(disk);
    let unpublish = csi::ControllerUnpublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        node_id: info.node_id.clone(),
        ..Default::default()
    };
    expect_ok(c.controller_unpublish_volume(unpublish.clone()).await, "ControllerUnpublishVolume");
    expect_ok(c.controller_unpublish_volume(unpublish).await, "ControllerUnpublishVolume again");
    for id in [&restored.volume_id, &volume.volume_id] {
        expect_ok(
            c.delete_volume(csi::DeleteVolumeRequest { volume_id: id.clone(), ..Default::default() }).await,
            "DeleteVolume",
        );
        expect_ok(
            c.delete_volume(csi::DeleteVolumeRequest { volume_id: id.clone(), ..Default::default() }).await,
            "DeleteVolume again",
        );
    }
    expect_ok(
        c.delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await,
        "DeleteSnapshot",
    );
    let left = expect_ok(c.list_volumes(csi::ListVolumesRequest::default()).await, "ListVolumes");
    assert!(left.entries.is_empty(), "{left:?}");
    assert_no_leftovers(&host);
}

#[tokio::test]
async fn moto_verifies_the_signatures() {
    const TEST: &str = "moto_verifies_the_signatures";
    if !moto_ready(TEST) {
        return;
    }
    let moto = Moto::start(true);
    let node = setup(&moto, true);
    let host = start_host(&moto.endpoint(), &moto.endpoint(), &node.instance_id, &node).await;
    let mut c = host.controller().await;
    let cap = mount_cap(AccessMode::SingleNodeWriter);

    // Signed with the key moto issued: accepted.
    let volume = create(&mut c, create_in_zone("pvc-signed", GIB, &node.zone, cap.clone())).await;
    expect_ok(
        c.delete_volume(csi::DeleteVolumeRequest { volume_id: volume.volume_id, ..Default::default() }).await,
        "DeleteVolume",
    );

    // A wrong secret key from the request's secrets: moto rejects the signature (EC2 calls
    // that AuthFailure), and the error says why without a trace of the secret.
    let wrong_secret = "wrong-secret-key-0123456789";
    let mut request = create_in_zone("pvc-badly-signed", GIB, &node.zone, cap);
    request.secrets = params(&[("AWS_ACCESS_KEY_ID", &node.access_key_id), ("AWS_SECRET_ACCESS_KEY", wrong_secret)]);
    let status =
        expect_code(c.create_volume(request).await, Code::FailedPrecondition, "CreateVolume with a wrong secret key");
    assert!(
        status.message().contains("AuthFailure") && status.message().contains("credentials"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains(wrong_secret) && !host.log().contains(wrong_secret), "the secret leaked");
}

#[tokio::test]
async fn an_endpoint_outside_the_grant_is_refused_without_traffic() {
    const TEST: &str = "an_endpoint_outside_the_grant_is_refused_without_traffic";
    if !moto_ready(TEST) {
        return;
    }
    let moto = Moto::start(false);
    let node = setup(&moto, false);
    let served = moto.requests();
    // The backend is pointed at moto, but only another port is granted.
    let granted = format!("http://127.0.0.1:{}", moto.port.wrapping_add(1).max(1024));
    let mut host = Host::new();
    host.write_config(
        "ebs.toml",
        &format!(
            "[[backends]]\nname = \"ebs\"\nmodule = \"builtin:cloud-disk\"\nsettings = {{ region = \"{REGION}\", endpoint = \"{}\" }}\ngrants = {{ http = [\"{granted}\"] }}\n",
            moto.endpoint()
        ),
    );
    host.set_node_id(&node.instance_id);
    host.start().await;
    let mut c = host.controller().await;
    let mut request = create_in_zone("pvc-ungranted", GIB, &node.zone, mount_cap(AccessMode::SingleNodeWriter));
    request.secrets =
        params(&[("AWS_ACCESS_KEY_ID", &node.access_key_id), ("AWS_SECRET_ACCESS_KEY", &node.secret_access_key)]);
    let status =
        expect_code(c.create_volume(request).await, Code::FailedPrecondition, "CreateVolume to an ungranted origin");
    assert!(status.message().contains(&moto.endpoint()[7..]), "the error names the origin: {}", status.message());
    assert_eq!(moto.requests(), served, "no request reached the emulator");
    assert!(host.log().contains("denied"), "the host logs the denial");
}
