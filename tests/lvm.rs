//! The LVM backend end to end against real lvm2: volume groups on loop-backed physical
//! volumes, two `builtin:lvm` instances side by side, CSI calls through the host, and the
//! result checked with lvm's own reports (LVs, their tags, VG free space).
//!
//! This kernel may lack device-mapper. lvm2 then still creates, extends, lists and removes
//! thick LVs with activation disabled (`global{activation=0}`), so those paths run for real
//! everywhere. Thin pools, snapshots and LV device nodes need device-mapper: the test that
//! uses them says so and skips where the kernel lists no device-mapper in `/proc/misc`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use csi::controller_client::ControllerClient;
use csi_proto::v1 as csi;
use tonic::Code;
use tonic::transport::Channel;

const LVM: &str = "/sbin/lvm";
/// lvm settings for tests: no udev, no metadata backups under /etc/lvm, and no activation
/// where the kernel has no device-mapper.
fn lvm_config() -> String {
    let base = "activation{udev_sync=0 udev_rules=0 monitoring=0} backup{backup=0 archive=0}";
    if device_mapper() { base.to_string() } else { format!("global{{activation=0}} {base}") }
}

/// Whether the kernel has device-mapper. (`/dev/mapper/control` is no proof: libdevmapper
/// creates the node itself, and opening it then fails with ENODEV.)
fn device_mapper() -> bool {
    std::fs::read_to_string("/proc/misc").is_ok_and(|misc| misc.lines().any(|l| l.ends_with(" device-mapper")))
}

/// Runs lvm with the test settings; panics with its stderr on failure.
fn lvm(args: &[&str]) -> String {
    let config = lvm_config();
    let (command, rest) = args.split_first().expect("an lvm subcommand");
    let output = Command::new(LVM)
        .arg(command)
        .args(["--config", &config])
        .args(rest)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .expect("run lvm");
    assert!(output.status.success(), "lvm {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("lvm prints UTF-8")
}

/// One row of `lvs` as lvm reports it.
#[derive(Debug)]
struct Lv {
    name: String,
    size: i64,
    tags: Vec<String>,
}

fn report_rows(json: &str, kind: &str) -> Vec<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(json).expect("lvm json report");
    value["report"][0][kind].as_array().expect("report rows").clone()
}

fn lvs(vg: &str) -> Vec<Lv> {
    let json =
        lvm(&["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size,lv_tags", vg]);
    report_rows(&json, "lv")
        .iter()
        .map(|row| Lv {
            name: row["lv_name"].as_str().unwrap().to_string(),
            size: row["lv_size"].as_str().unwrap().parse().unwrap(),
            tags: row["lv_tags"].as_str().unwrap().split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
        })
        .collect()
}

fn vg_free(vg: &str) -> i64 {
    let json = lvm(&["vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "vg_free", vg]);
    report_rows(&json, "vg")[0]["vg_free"].as_str().unwrap().parse().unwrap()
}

/// A volume group on a loop-attached sparse file, removed with everything in it on drop.
struct VolumeGroup {
    name: String,
    loop_device: String,
    _dir: tempfile::TempDir,
}

impl VolumeGroup {
    fn new(tag: &str, size: i64) -> VolumeGroup {
        let dir = tempfile::Builder::new().prefix("wasmcsi-pv-").tempdir().expect("temp dir");
        let image = dir.path().join("pv.img");
        std::fs::File::create(&image).and_then(|f| f.set_len(size as u64)).expect("create the PV image");
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&image).output().expect("run losetup");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let loop_device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let name = format!("wcsi{}{tag}", std::process::id());
        let vg = VolumeGroup { name, loop_device, _dir: dir };
        lvm(&["pvcreate", "--yes", &vg.loop_device]);
        lvm(&["vgcreate", "--yes", &vg.name, &vg.loop_device]);
        vg
    }

    fn ours(&self) -> Vec<Lv> {
        lvs(&self.name).into_iter().filter(|lv| lv.name.starts_with("csi-")).collect()
    }
}

impl Drop for VolumeGroup {
    fn drop(&mut self) {
        let config = lvm_config();
        for args in [
            vec!["vgremove", "--config", &config, "--yes", "--force", &self.name],
            vec!["pvremove", "--config", &config, "--yes", &self.loop_device],
        ] {
            let _ = Command::new(LVM).args(&args).env("LVM_SUPPRESS_FD_WARNINGS", "1").output();
        }
        let _ = Command::new("losetup").args(["-d", &self.loop_device]).status();
    }
}

/// The grant the README ships for the lvm backend (its `[backends.grants]` and command
/// grant, thin pool `pool0` included), for volume group `vg`, with the test's lvm config as
/// the operator's `host_args`.
fn shipped_lvm_grant(vg: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    let block = readme
        .split("```toml")
        .filter_map(|block| block.split_once("```").map(|(toml, _)| toml))
        .find(|toml| toml.contains("module = \"builtin:lvm\""))
        .expect("the README shows the lvm grant");
    let grant = &block[block.find("[backends.grants]").expect("the README's lvm block has grants")..];
    let host_args = grant.lines().find(|l| l.starts_with("host_args = ")).expect("the README's grant sets host_args");
    let config = format!("host_args = [\"--config\", {}]", toml_str(&lvm_config()));
    grant.replace(host_args, &config).replace("vg0", vg)
}

/// `[[backends]]` TOML for an lvm instance on `vg`, with the shipped grant.
fn lvm_toml(instance: &str, vg: &str, extra_settings: &str) -> String {
    format!(
        r#"
[[backends]]
name = "{instance}"
module = "builtin:lvm"
settings = {{ volume-group = "{vg}"{extra_settings} }}
{grant}"#,
        grant = shipped_lvm_grant(vg),
    )
}

fn lvm_ready(test: &str) -> bool {
    privileged_with(test, "lvm")
}

async fn capacity(c: &mut ControllerClient<Channel>, backend: &str, topology: Option<csi::Topology>) -> i64 {
    let request = csi::GetCapacityRequest {
        volume_capabilities: vec![rw_mount()],
        parameters: params(&[("backend", backend)]),
        accessible_topology: topology,
    };
    expect_ok(c.get_capacity(request).await, "GetCapacity").available_capacity
}

async fn create(c: &mut ControllerClient<Channel>, request: csi::CreateVolumeRequest) -> csi::Volume {
    let what = format!("CreateVolume {:?}", request.name);
    expect_ok(c.create_volume(request).await, &what).volume.expect("a volume")
}

async fn delete(c: &mut ControllerClient<Channel>, id: &str) {
    expect_ok(
        c.delete_volume(csi::DeleteVolumeRequest { volume_id: id.into(), ..Default::default() }).await,
        "DeleteVolume",
    );
}

/// The LV name the backend gives the volume named `name`.
fn lv_name_of(name: &str) -> String {
    use sha2::Digest;
    format!("csi-{}", hex::encode(&sha2::Sha256::digest(name.as_bytes())[..16]))
}

fn name_tag(name: &str) -> String {
    format!("wasmcsi.name={}", hex::encode(name))
}

#[tokio::test]
async fn thick_volumes_are_tagged_lvs_and_capacity_follows_the_volume_group() {
    if !lvm_ready("thick_volumes_are_tagged_lvs_and_capacity_follows_the_volume_group") {
        return;
    }
    let mut host = Host::new();
    let (a, b) = (VolumeGroup::new("a", 512 * MIB), VolumeGroup::new("b", 256 * MIB));
    let reserve = 64 * MIB;
    let config = lvm_toml("lvm-a", &a.name, &format!(", reserve = {reserve}")) + &lvm_toml("lvm-b", &b.name, "");
    host.write_config("lvm.toml", &config);
    host.start().await;
    let mut c = host.controller().await;

    let free_a = vg_free(&a.name);
    assert_eq!(
        capacity(&mut c, "lvm-a", None).await,
        free_a - reserve,
        "thick capacity is VG free space minus the reserve"
    );
    assert_eq!(capacity(&mut c, "lvm-a", Some(node_topology(NODE_ID))).await, free_a - reserve);
    assert_eq!(capacity(&mut c, "lvm-a", Some(node_topology("elsewhere"))).await, 0, "no capacity on another node");

    // Create: rounded up to whole extents, reported truthfully, tagged, on this node.
    let mut request = create_req_with("pvc-lvm-1", 100 * MIB + 1, &[("backend", "lvm-a")]);
    let volume = create(&mut c, request.clone()).await;
    assert_eq!(volume.capacity_bytes, 104 * MIB, "100 MiB + 1 byte rounds up to 26 extents of 4 MiB");
    let lv_name = local_id(&volume.volume_id, "lvm-a").to_string();
    assert_eq!(volume.accessible_topology, vec![node_topology(NODE_ID)]);
    let lvs_a = a.ours();
    assert_eq!(lvs_a.len(), 1, "{lvs_a:?}");
    assert_eq!(lvs_a[0].name, lv_name);
    assert_eq!(lvs_a[0].size, 104 * MIB);
    assert_eq!(lvs_a[0].tags, vec![name_tag("pvc-lvm-1")], "the CSI name lives in an LV tag");
    assert_eq!(capacity(&mut c, "lvm-a", None).await, free_a - reserve - 104 * MIB);

    // Idempotent by name; a different size for the same name conflicts.
    assert_eq!(create(&mut c, request.clone()).await.volume_id, volume.volume_id);
    assert_eq!(a.ours().len(), 1);
    request.capacity_range = range(300 * MIB, 0);
    expect_code(c.create_volume(request).await, Code::AlreadyExists, "same name, other size");
    // Names are unique across instances.
    expect_code(
        c.create_volume(create_req_with("pvc-lvm-1", 8 * MIB, &[("backend", "lvm-b")])).await,
        Code::AlreadyExists,
        "same name on the other instance",
    );

    // The second instance serves its own VG.
    let other = create(&mut c, create_req_with("pvc-lvm-2", 8 * MIB, &[("backend", "lvm-b")])).await;
    assert!(other.volume_id.starts_with("lvm-b:csi-"), "{}", other.volume_id);
    assert_eq!(b.ours().iter().map(|lv| lv.tags.clone()).collect::<Vec<_>>(), vec![vec![name_tag("pvc-lvm-2")]]);
    assert_eq!(a.ours().len(), 1, "lvm-b never touches lvm-a's VG");

    // Capacity rules: too big for the VG (less the reserve) and an unsatisfiable range.
    let too_big = create_req_with("pvc-lvm-big", free_a - reserve, &[("backend", "lvm-a")]);
    let status = expect_code(c.create_volume(too_big).await, Code::ResourceExhausted, "bigger than the VG has free");
    assert!(status.message().contains("free"), "{}", status.message());
    let mut narrow = create_req_with("pvc-lvm-narrow", 5 * MIB, &[("backend", "lvm-a")]);
    narrow.capacity_range = range(5 * MIB, 6 * MIB);
    expect_code(c.create_volume(narrow).await, Code::OutOfRange, "5..6 MiB holds no whole extent");
    assert_eq!(a.ours().len(), 1, "refused creates leave no LV");

    // Expansion is lvextend, rounded to extents; the node grows the filesystem.
    let expanded = expect_ok(
        c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: range(150 * MIB, 0),
            ..Default::default()
        })
        .await,
        "ControllerExpandVolume",
    );
    assert_eq!(expanded.capacity_bytes, 152 * MIB);
    assert!(expanded.node_expansion_required);
    assert_eq!(a.ours()[0].size, 152 * MIB);

    // Nothing but LVM holds the state: a restarted host lists the same volumes.
    host.restart().await;
    let mut c = host.controller().await;
    let listed = expect_ok(c.list_volumes(csi::ListVolumesRequest::default()).await, "ListVolumes");
    let mut ids: Vec<String> = listed.entries.iter().map(|e| e.volume.as_ref().unwrap().volume_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec![volume.volume_id.clone(), other.volume_id.clone()]);
    let fetched = expect_ok(
        c.controller_get_volume(csi::ControllerGetVolumeRequest { volume_id: volume.volume_id.clone() }).await,
        "ControllerGetVolume",
    );
    assert_eq!(fetched.volume.unwrap().capacity_bytes, 152 * MIB);

    // Delete removes the LV, twice is fine, and the space comes back.
    delete(&mut c, &volume.volume_id).await;
    delete(&mut c, &volume.volume_id).await;
    delete(&mut c, &other.volume_id).await;
    assert!(a.ours().is_empty() && b.ours().is_empty());
    assert_eq!(capacity(&mut c, "lvm-a", None).await, free_a - reserve);
    host.terminate().await;
}

#[tokio::test]
async fn lvs_the_backend_did_not_make_are_left_alone() {
    if !lvm_ready("lvs_the_backend_did_not_make_are_left_alone") {
        return;
    }
    let mut host = Host::new();
    let vg = VolumeGroup::new("f", 128 * MIB);
    // An LV of someone else, and one named as the backend would name "pvc-victim" but
    // tagged with another name.
    lvm(&["lvcreate", "--yes", "-n", "foreign", "-L", "8m", &vg.name]);
    let forged = lv_name_of("pvc-victim");
    lvm(&["lvcreate", "--yes", "-n", &forged, "-L", "8m", "--addtag", &name_tag("pvc-other"), &vg.name]);
    host.write_config("lvm.toml", &lvm_toml("lvm", &vg.name, ""));
    host.start().await;
    let mut c = host.controller().await;

    let listed = expect_ok(c.list_volumes(csi::ListVolumesRequest::default()).await, "ListVolumes");
    assert!(listed.entries.is_empty(), "only the backend's own LVs are volumes: {listed:?}");
    delete(&mut c, &format!("lvm:{forged}")).await;
    delete(&mut c, "lvm:foreign").await;
    let names: Vec<String> = lvs(&vg.name).into_iter().map(|lv| lv.name).collect();
    assert!(
        names.contains(&"foreign".to_string()) && names.contains(&forged),
        "DeleteVolume removed an LV it did not make: {names:?}"
    );
    // The forged LV is neither adopted for the name its LV name claims nor for its tag.
    for name in ["pvc-victim", "pvc-other"] {
        let created = c.create_volume(create_req_with(name, 8 * MIB, &[("backend", "lvm")])).await;
        if let Ok(response) = &created {
            assert_ne!(
                response.get_ref().volume.as_ref().unwrap().volume_id,
                format!("lvm:{forged}"),
                "{name} adopted a forged LV"
            );
        }
    }
    assert_eq!(
        lvs(&vg.name).iter().find(|lv| lv.name == forged).map(|lv| lv.tags.clone()),
        Some(vec![name_tag("pvc-other")])
    );
    host.terminate().await;
}

#[tokio::test]
async fn a_missing_volume_group_stops_the_host_with_lvms_message() {
    if !lvm_ready("a_missing_volume_group_stops_the_host_with_lvms_message") {
        return;
    }
    let mut host = Host::new();
    host.write_config("lvm.toml", &lvm_toml("lvm", "wcsi-no-such-vg", ""));
    let (status, log) = host.start_expecting_failure().await;
    assert!(!status.success());
    assert!(
        log.contains("wcsi-no-such-vg") && log.contains("not found"),
        "the log should say which VG is missing:\n{log}"
    );
}

#[tokio::test]
async fn an_optional_instance_without_its_volume_group_serves_nothing() {
    if !lvm_ready("an_optional_instance_without_its_volume_group_serves_nothing") {
        return;
    }
    let mut host = Host::new();
    host.write_config("lvm.toml", &lvm_toml("lvm", "wcsi-no-such-vg", ", optional = true"));
    host.start().await;
    assert!(
        log_lines(&host.log(), &["WARN", "wcsi-no-such-vg", "is not on this node: this instance serves nothing here"])
            .len()
            == 1,
        "the load should warn that the instance serves nothing here:\n{}",
        host.log()
    );
    let mut c = host.controller().await;

    assert_eq!(capacity(&mut c, "lvm", None).await, 0, "no capacity, so the scheduler never picks this node");
    assert_eq!(capacity(&mut c, "lvm", Some(node_topology(NODE_ID))).await, 0);
    let status = expect_code(
        c.create_volume(create_req_with("pvc-lvm-elsewhere", 8 * MIB, &[("backend", "lvm")])).await,
        Code::ResourceExhausted,
        "CreateVolume without the VG",
    );
    assert!(status.message().contains("\"wcsi-no-such-vg\" is not on this node"), "{}", status.message());
    let listed = expect_ok(c.list_volumes(csi::ListVolumesRequest::default()).await, "ListVolumes");
    assert!(listed.entries.is_empty(), "{listed:?}");
    delete(&mut c, &format!("lvm:{}", lv_name_of("pvc-lvm-elsewhere"))).await;
    host.terminate().await;
}

#[tokio::test]
async fn thin_volumes_snapshots_and_staging_need_device_mapper() {
    if !lvm_ready("thin_volumes_snapshots_and_staging_need_device_mapper") {
        return;
    }
    if !device_mapper() {
        eprintln!(
            "SKIPPED thin_volumes_snapshots_and_staging_need_device_mapper: this kernel has no device-mapper \
             (no device-mapper in /proc/misc), so thin pools, snapshots and LV device nodes cannot exist here"
        );
        return;
    }
    let mut host = Host::new();
    let vg = VolumeGroup::new("t", 512 * MIB);
    lvm(&["lvcreate", "--yes", "--type", "thin-pool", "-n", "pool0", "-L", "256m", &vg.name]);
    host.write_config("lvm.toml", &lvm_toml("lvm", &vg.name, ", thin-pool = \"pool0\""));
    host.start().await;
    let (mut c, mut n) = (host.controller().await, host.node().await);

    let volume = create(&mut c, create_req_with("pvc-thin", 64 * MIB, &[("backend", "lvm"), ("type", "thin")])).await;
    let staging = host.node_path("staging");
    let target = host.node_path("target");
    stage_and_publish(&mut n, &volume, &staging, &target).await;
    write_at(&target.join("data"), 0, &pattern(7));
    unpublish_and_unstage(&mut n, &volume.volume_id, &staging, &target).await;

    let snapshot = expect_ok(
        c.create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: "snap-thin".into(),
            ..Default::default()
        })
        .await,
        "CreateSnapshot",
    )
    .snapshot
    .expect("a snapshot");
    assert!(snapshot.ready_to_use);
    let mut restore = create_req_with("pvc-restored", 64 * MIB, &[("backend", "lvm"), ("type", "thin")]);
    restore.volume_content_source = from_snapshot(&snapshot.snapshot_id);
    let restored = create(&mut c, restore).await;
    stage_and_publish(&mut n, &restored, &staging, &target).await;
    assert_eq!(
        read_at(&target.join("data"), 0, pattern(7).len()),
        pattern(7),
        "the restored volume holds the snapshot's data"
    );
    unpublish_and_unstage(&mut n, &restored.volume_id, &staging, &target).await;

    for id in [&restored.volume_id, &volume.volume_id] {
        delete(&mut c, id).await;
    }
    expect_ok(
        c.delete_snapshot(csi::DeleteSnapshotRequest { snapshot_id: snapshot.snapshot_id, ..Default::default() }).await,
        "DeleteSnapshot",
    );
    host.terminate().await;
    assert_no_leftovers(&host);
}

async fn stage_and_publish(
    n: &mut csi::node_client::NodeClient<Channel>,
    volume: &csi::Volume,
    staging: &Path,
    target: &Path,
) {
    std::fs::create_dir_all(staging).unwrap();
    expect_ok(
        n.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(rw_mount()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        })
        .await,
        "NodeStageVolume",
    );
    expect_ok(
        n.node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(rw_mount()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        })
        .await,
        "NodePublishVolume",
    );
}

async fn unpublish_and_unstage(n: &mut csi::node_client::NodeClient<Channel>, id: &str, staging: &Path, target: &Path) {
    expect_ok(
        n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.display().to_string(),
        })
        .await,
        "NodeUnpublishVolume",
    );
    expect_ok(
        n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.display().to_string(),
        })
        .await,
        "NodeUnstageVolume",
    );
}

/// An lvm `--config` that makes lvm write its log to `file`, as root.
fn log_to(file: &Path) -> String {
    format!("log{{file={} level=7}}", toml_str(&file.display().to_string()))
}

/// CreateVolume on the hostile instance `backend`, which runs `/sbin/lvm args…` itself.
async fn hostile_lvm(
    c: &mut ControllerClient<Channel>,
    backend: &str,
    args: &[String],
) -> Result<String, tonic::Status> {
    let joined = args.join("\n");
    let parameters = [("backend", backend), ("misbehave", "run"), ("program", LVM), ("args", &joined)];
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("pvc-run-{}", CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    c.create_volume(create_req_with(&name, MIB, &parameters))
        .await
        .map(|r| r.into_inner().volume.expect("a volume").volume_context["note"].clone())
}

#[tokio::test]
async fn no_backend_makes_lvm_write_a_file_through_the_shipped_grant() {
    if !lvm_ready("no_backend_makes_lvm_write_a_file_through_the_shipped_grant") {
        return;
    }
    let mut host = Host::new();
    let vg = VolumeGroup::new("x", 64 * MIB);
    let hostile = toml_str(&host.write_hostile().display().to_string());
    // `shipped` has the README's lvm grant; `wide` the `**` grant the README used to ship,
    // to show each injection really writes a file when a grant lets it through.
    let config = format!(
        r#"
[[backends]]
name = "shipped"
module = {hostile}
{shipped}
[[backends]]
name = "wide"
module = {hostile}
[backends.grants]
http = [{HOSTILE_HTTP}]
[[backends.grants.commands]]
program = "{LVM}"
allow = [["vgs|lvs|lvcreate|lvremove|lvextend|lvchange", "**"]]
"#,
        // The hostile component imports wasi:http, which needs a grant to link.
        shipped = shipped_lvm_grant(&vg.name).replacen(
            "[backends.grants]\n",
            &format!("[backends.grants]\nhttp = [{HOSTILE_HTTP}]\n"),
            1
        ),
    );
    host.write_config("lvm.toml", &config);
    host.start().await;
    let mut c = host.controller().await;
    let out = tempfile::Builder::new().prefix("wasmcsi-inject-").tempdir().expect("temp dir");
    let vg_name = vg.name.clone();
    let injections: [fn(&str, &str) -> Vec<String>; 4] = [
        |vg, log| vec!["lvs".into(), "--config".into(), log.into(), vg.into()],
        |vg, log| vec!["lvs".into(), format!("--config={log}"), vg.into()],
        |vg, log| vec!["vgs".into(), vg.into(), "--config".into(), log.into()],
        |vg, log| {
            let columns = "vg_name,vg_extent_size,vg_free";
            ["vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", columns, "--config", log, vg]
                .map(str::to_owned)
                .to_vec()
        },
    ];
    for (i, injection) in injections.iter().enumerate() {
        let (denied_file, written_file) =
            (out.path().join(format!("denied-{i}")), out.path().join(format!("wide-{i}")));
        let args = injection(&vg_name, &log_to(&denied_file));
        let status = hostile_lvm(&mut c, "shipped", &args).await.expect_err("the shipped grant refuses it");
        assert_eq!(status.code(), Code::FailedPrecondition, "{args:?}: {status:?}");
        assert!(status.message().contains("denied by the host"), "{args:?}: {}", status.message());
        assert!(!denied_file.exists(), "{args:?} made lvm write {denied_file:?}");

        let control = injection(&vg_name, &log_to(&written_file));
        hostile_lvm(&mut c, "wide", &control).await.expect("the wide grant runs it");
        assert!(written_file.exists(), "{control:?} should have made lvm write its log (else the test proves nothing)");
    }
    // What the lvm backend runs passes, with the operator's config added by the host.
    let granted =
        ["vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "vg_name,vg_extent_size,vg_free"]
            .iter()
            .map(|s| s.to_string())
            .chain([vg_name.clone()])
            .collect::<Vec<_>>();
    assert_eq!(hostile_lvm(&mut c, "shipped", &granted).await.expect("granted"), "run ended with status 0");
    let files: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), injections.len(), "only the wide grant's logs exist: {files:?}");
    host.terminate().await;
}
