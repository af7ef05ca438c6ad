//! The privileged node path only acts within what a call's volume and its backend own, end
//! to end as root on a real kernel: unknown volumes touch nothing, foreign mounts and files
//! at a target are left alone, staging and target paths stay beneath the allowed roots and
//! out of other volumes, a symlink a backend plants in its own directory reaches nothing
//! of another backend, and an ungranted device or a serial that is only a suffix of a
//! disk's name is refused before anything is formatted or mounted.
//!
//! The misbehaving backend is `backends/hostile`, whose `node-device` answer the test
//! chooses (volume context `node-device`, or the volume id itself at NodeUnstage).
//! Every test checks the exact code and that nothing outside was touched (file contents,
//! mounts, loop devices), and ends with `assert_no_leftovers`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use csi_proto::v1 as csi;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tonic::Code;

fn text(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_owned()
}

fn unpublish_req(id: &str, target: &Path) -> csi::NodeUnpublishVolumeRequest {
    csi::NodeUnpublishVolumeRequest { volume_id: id.into(), target_path: text(target) }
}

fn unstage_req(id: &str, staging: &Path) -> csi::NodeUnstageVolumeRequest {
    csi::NodeUnstageVolumeRequest { volume_id: id.into(), staging_target_path: text(staging) }
}

fn stage_req(
    id: &str,
    staging: &Path,
    cap: csi::VolumeCapability,
    device: Option<&str>,
) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: text(staging),
        volume_capability: Some(cap),
        volume_context: device.map(|d| params(&[("node-device", d)])).unwrap_or_default(),
        ..Default::default()
    }
}

fn publish_req(id: &str, staging: &Path, target: &Path, cap: csi::VolumeCapability) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: text(staging),
        target_path: text(target),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

fn ext4() -> csi::VolumeCapability {
    mount_cap_fs(AccessMode::SingleNodeWriter, "ext4")
}

fn block() -> csi::VolumeCapability {
    block_cap(AccessMode::SingleNodeWriter)
}

#[track_caller]
fn expect_message<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    needle: &str,
    what: &str,
) {
    let status = expect_code(result, code, what);
    assert!(status.message().contains(needle), "{what}: message {:?} does not say {needle:?}", status.message());
}

/// A tmpfs somebody else mounted, holding a file; unmounted on drop.
struct ForeignTmpfs(PathBuf);

impl ForeignTmpfs {
    fn mount(path: &Path) -> ForeignTmpfs {
        std::fs::create_dir_all(path).unwrap();
        mount(Some("foreign"), path, Some("tmpfs"), MsFlags::empty(), Some("size=1m")).expect("mount a tmpfs");
        std::fs::write(path.join("theirs"), b"foreign data").unwrap();
        ForeignTmpfs(path.to_owned())
    }

    #[track_caller]
    fn assert_intact(&self) {
        let mounts = mounts_at(&self.0);
        assert!(mounts.len() == 1 && mounts[0].fs_type == "tmpfs", "the foreign tmpfs was touched: {mounts:#?}");
        assert_eq!(std::fs::read(self.0.join("theirs")).unwrap(), b"foreign data");
    }
}

impl Drop for ForeignTmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::UMOUNT_NOFOLLOW);
    }
}

/// A loop device over a file of the test with recognisable content: a disk that belongs
/// to nobody the host serves. Detached on drop.
struct ForeignDisk {
    image: PathBuf,
    device: String,
}

const FOREIGN_SIZE: u64 = 64 << 20;
const FOREIGN_OFFSETS: [u64; 3] = [0, 1 << 20, 32 << 20];

impl ForeignDisk {
    fn attach(path: PathBuf) -> ForeignDisk {
        std::fs::File::create(&path).and_then(|f| f.set_len(FOREIGN_SIZE)).unwrap();
        for (i, offset) in FOREIGN_OFFSETS.into_iter().enumerate() {
            write_at(&path, offset + 4096, &pattern(i as u8));
        }
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&path).output().expect("run losetup");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        ForeignDisk { image: path, device: String::from_utf8(out.stdout).unwrap().trim().to_owned() }
    }

    /// Nothing was written: no filesystem made, the content as the test left it.
    #[track_caller]
    fn assert_untouched(&self, what: &str) {
        for (i, offset) in FOREIGN_OFFSETS.into_iter().enumerate() {
            assert_eq!(read_at(&self.image, offset, 4096), vec![0u8; 4096], "{what}: the foreign disk was written");
            assert_eq!(read_at(&self.image, offset + 4096, 4096), pattern(i as u8), "{what}: the foreign disk changed");
        }
        assert!(
            mount_table().iter().all(|m| m.source != self.device),
            "{what}: the foreign disk is mounted: {:#?}",
            mount_table()
        );
    }
}

impl Drop for ForeignDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// A host serving a loopfile backend `victim` (default) and the hostile component as
/// `hostile` with a directory grant of its own, plus `extra` config.
async fn start_with_hostile(extra: &str, args: &[String]) -> Host {
    let mut host = Host::new();
    let module = host.write_hostile();
    let hostile_dir = host.path().join("hostile");
    let config = format!(
        "{}\n[[backends]]\nname = \"hostile\"\nmodule = {}\n[backends.grants]\ndirectories = [{{ host = {}, guest = \"/data\" }}]\nhttp = [{HOSTILE_HTTP}]\n{extra}",
        host.loopfile_toml("victim", "victim", true),
        toml_str(&text(&module)),
        toml_str(&text(&hostile_dir)),
    );
    host.write_config("config.toml", &config);
    host.args(args.iter().cloned());
    host.start().await;
    host
}

async fn create_victim(host: &Host, name: &str) -> String {
    let mut c = host.controller().await;
    let request = csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: range(64 * MIB, 0),
        volume_capabilities: vec![block()],
        ..Default::default()
    };
    expect_ok(c.create_volume(request).await, "CreateVolume victim").volume.unwrap().volume_id
}

#[tokio::test]
async fn unknown_volumes_touch_nothing_and_foreign_targets_are_left_alone() {
    if !privileged_with("unknown_volumes_touch_nothing_and_foreign_targets_are_left_alone", "mkfs.ext4") {
        return;
    }
    let host = Host::start_default().await;
    let mut n = host.node().await;
    let file = host.node_path("file-target");
    std::fs::write(&file, b"precious").unwrap();
    let dir = host.node_path("dir-target");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("data"), b"precious").unwrap();
    let tmpfs = ForeignTmpfs::mount(&host.node_path("tmpfs-target"));
    let intact = |what: &str| {
        assert_eq!(std::fs::read(&file).unwrap(), b"precious", "{what}: the regular file");
        assert_eq!(std::fs::read(dir.join("data")).unwrap(), b"precious", "{what}: the directory");
        tmpfs.assert_intact();
    };

    // Ids no loaded instance routes and no ephemeral volume of this node: NOT_FOUND.
    for id in ["nosuch:v-1", "no-prefix-at-all", "loopfile"] {
        for path in [&file, &dir, &tmpfs.0] {
            let what = format!("NodeUnpublishVolume {id} at {}", path.display());
            expect_code(n.node_unpublish_volume(unpublish_req(id, path)).await, Code::NotFound, &what);
            intact(&what);
            let what = format!("NodeUnstageVolume {id} at {}", path.display());
            expect_code(n.node_unstage_volume(unstage_req(id, path)).await, Code::NotFound, &what);
            intact(&what);
        }
    }

    // A volume of the loopfile backend (known, not published here): a foreign mount is
    // FAILED_PRECONDITION naming it; a file or directory the host did not create stays.
    let known = "loopfile:v-0123456789abcdef0123456789abcdef";
    expect_message(
        n.node_unpublish_volume(unpublish_req(known, &tmpfs.0)).await,
        Code::FailedPrecondition,
        "tmpfs",
        "NodeUnpublishVolume of a known volume at a foreign tmpfs",
    );
    expect_message(
        n.node_unstage_volume(unstage_req(known, &tmpfs.0)).await,
        Code::FailedPrecondition,
        "tmpfs",
        "NodeUnstageVolume of a known volume at a foreign tmpfs",
    );
    intact("known volume at a foreign tmpfs");
    for path in [&file, &dir] {
        let what = format!("NodeUnpublishVolume of a known volume at {}", path.display());
        expect_ok(n.node_unpublish_volume(unpublish_req(known, path)).await, &what);
        expect_ok(n.node_unstage_volume(unstage_req(known, path)).await, &what);
        intact(&what);
    }
    // Stats and expansion of an unknown volume, and of a known one at a foreign mount.
    let stats = |id: &str, path: &Path| csi::NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: text(path),
        staging_target_path: String::new(),
    };
    expect_code(n.node_get_volume_stats(stats("nosuch:v-1", &tmpfs.0)).await, Code::NotFound, "stats, unknown");
    expect_code(n.node_get_volume_stats(stats(known, &tmpfs.0)).await, Code::NotFound, "stats, foreign mount");
    let expand =
        csi::NodeExpandVolumeRequest { volume_id: known.into(), volume_path: text(&tmpfs.0), ..Default::default() };
    expect_code(n.node_expand_volume(expand).await, Code::NotFound, "NodeExpandVolume at a foreign mount");
    intact("stats and expansion");
    drop(tmpfs);
    assert_no_leftovers(&host);
}

#[tokio::test]
async fn staging_and_target_paths_stay_beneath_the_roots_and_apart() {
    if !privileged_with("staging_and_target_paths_stay_beneath_the_roots_and_apart", "mkfs.ext4") {
        return;
    }
    let mut host = Host::new();
    let kubelet = host.node_path("kubelet");
    std::fs::create_dir(&kubelet).unwrap();
    host.args(["--allowed-path-root".to_string(), text(&kubelet)]);
    host.start().await;
    let (mut c, mut n) = (host.controller().await, host.node().await);
    let request = csi::CreateVolumeRequest {
        name: "roots".into(),
        capacity_range: range(64 * MIB, 0),
        volume_capabilities: vec![ext4()],
        ..Default::default()
    };
    let id = expect_ok(c.create_volume(request).await, "CreateVolume").volume.unwrap().volume_id;
    let image = backing_file(&host.data_dir.join("loopfile"), local_id(&id, "loopfile"));
    let sibling = host.node_path("kubelet-evil");
    std::fs::create_dir(&sibling).unwrap();

    for outside in [PathBuf::from("/etc"), PathBuf::from("/etc/wasmcsi-stage"), kubelet.clone(), sibling.join("x")] {
        let what = format!("NodeStageVolume at {}", outside.display());
        expect_message(
            n.node_stage_volume(stage_req(&id, &outside, ext4(), None)).await,
            Code::InvalidArgument,
            "--allowed-path-root",
            &what,
        );
        let what = format!("NodePublishVolume at {}", outside.display());
        let request = publish_req(&id, &kubelet.join("staging"), &outside, ext4());
        expect_message(n.node_publish_volume(request).await, Code::InvalidArgument, "--allowed-path-root", &what);
        let what = format!("NodeUnpublishVolume at {}", outside.display());
        expect_message(
            n.node_unpublish_volume(unpublish_req(&id, &outside)).await,
            Code::InvalidArgument,
            "--allowed-path-root",
            &what,
        );
    }
    assert!(loops_of(&image).is_empty(), "a refused stage attached the image: {:#?}", loops_of(&image));
    assert!(!Path::new("/etc/wasmcsi-stage").exists());
    assert!(mount_table().iter().all(|m| !m.mount_point.starts_with("/etc")), "something is mounted on /etc");

    // Beneath the root it works; the target may be neither the staging path nor inside it,
    // nor inside another published volume.
    let staging = kubelet.join("staging");
    std::fs::create_dir(&staging).unwrap();
    expect_ok(n.node_stage_volume(stage_req(&id, &staging, ext4(), None)).await, "NodeStageVolume");
    for target in [staging.clone(), staging.join("inner")] {
        let what = format!("NodePublishVolume at {} (staged at {})", target.display(), staging.display());
        expect_code(
            n.node_publish_volume(publish_req(&id, &staging, &target, ext4())).await,
            Code::InvalidArgument,
            &what,
        );
    }
    let target = kubelet.join("target");
    expect_ok(n.node_publish_volume(publish_req(&id, &staging, &target, ext4())).await, "NodePublishVolume");
    let nested = target.join("nested");
    std::fs::create_dir(&nested).unwrap();
    expect_message(
        n.node_publish_volume(publish_req(&id, &staging, &nested, ext4())).await,
        Code::InvalidArgument,
        "inside the volume",
        "NodePublishVolume inside a published volume",
    );
    expect_message(
        n.node_stage_volume(stage_req(&id, &nested, ext4(), None)).await,
        Code::InvalidArgument,
        "inside the volume",
        "NodeStageVolume inside a published volume",
    );
    assert_eq!(mounts_at(&nested).len(), 0);
    std::fs::remove_dir(&nested).unwrap();
    expect_ok(n.node_unpublish_volume(unpublish_req(&id, &target)).await, "NodeUnpublishVolume");
    assert!(!target.exists(), "the target the host created is removed");
    expect_ok(n.node_unstage_volume(unstage_req(&id, &staging)).await, "NodeUnstageVolume");
    assert!(staging.is_dir(), "the CO's staging directory stays");
    assert!(loops_of(&image).is_empty(), "{:#?}", loops_of(&image));
    assert_no_leftovers(&host);
}

/// The CO names volume A at volume B's paths, both of one backend instance: B's mounts
/// stay (the host noted which device each staged volume is), A's own calls still work.
#[tokio::test]
async fn one_volumes_id_never_unmounts_another_volume_of_the_same_backend() {
    if !privileged_with("one_volumes_id_never_unmounts_another_volume_of_the_same_backend", "mkfs.ext4") {
        return;
    }
    let host = Host::start_default().await;
    let (mut c, mut n) = (host.controller().await, host.node().await);
    let mut volumes = Vec::new();
    for name in ["a", "b"] {
        let request = csi::CreateVolumeRequest {
            name: name.into(),
            capacity_range: range(64 * MIB, 0),
            volume_capabilities: vec![ext4()],
            ..Default::default()
        };
        let id = expect_ok(c.create_volume(request).await, "CreateVolume").volume.unwrap().volume_id;
        let (staging, target) = (host.node_path(&format!("staging-{name}")), host.node_path(&format!("target-{name}")));
        std::fs::create_dir(&staging).unwrap();
        expect_ok(n.node_stage_volume(stage_req(&id, &staging, ext4(), None)).await, "NodeStageVolume");
        expect_ok(n.node_publish_volume(publish_req(&id, &staging, &target, ext4())).await, "NodePublishVolume");
        std::fs::write(target.join("data"), name).unwrap();
        volumes.push((id, staging, target));
    }
    let [(a, staging_a, target_a), (b, staging_b, target_b)] = <[_; 2]>::try_from(volumes).unwrap();
    let b_intact = |what: &str| {
        assert_eq!(mounts_at(&staging_b).len(), 1, "{what}: B's staging mount");
        assert_eq!(mounts_at(&target_b).len(), 1, "{what}: B's target mount");
        assert_eq!(std::fs::read(target_b.join("data")).unwrap(), b"b", "{what}: B's data");
    };

    expect_message(
        n.node_unpublish_volume(unpublish_req(&a, &target_b)).await,
        Code::FailedPrecondition,
        "another volume of the backend",
        "NodeUnpublishVolume of A at B's target",
    );
    b_intact("A unpublished at B's target");
    expect_message(
        n.node_unstage_volume(unstage_req(&a, &staging_b)).await,
        Code::FailedPrecondition,
        "another volume of the backend",
        "NodeUnstageVolume of A at B's staging path",
    );
    b_intact("A unstaged at B's staging path");

    // Each at its own paths: done, and done again (idempotent).
    for (id, staging, target) in [(&a, &staging_a, &target_a), (&b, &staging_b, &target_b)] {
        for round in 0..2 {
            let what = format!("{id} round {round}");
            expect_ok(n.node_unpublish_volume(unpublish_req(id, target)).await, &what);
            expect_ok(n.node_unstage_volume(unstage_req(id, staging)).await, &what);
        }
        assert!(mounts_at(staging).is_empty() && !target.exists(), "{id} is unstaged and its target gone");
    }
    assert_no_leftovers(&host);
}

#[tokio::test]
async fn a_planted_symlink_reaches_nothing_of_another_backend() {
    if !privileged_with("a_planted_symlink_reaches_nothing_of_another_backend", "mkfs.ext4") {
        return;
    }
    let host = start_with_hostile("", &[]).await;
    let (mut c, mut n) = (host.controller().await, host.node().await);

    // The victim: a raw block volume of the loopfile backend, staged and published.
    let victim = create_victim(&host, "victim").await;
    let image = backing_file(&host.path().join("victim"), local_id(&victim, "victim"));
    let (v_staging, v_target) = (host.node_path("v-staging"), host.node_path("v-target"));
    std::fs::create_dir(&v_staging).unwrap();
    expect_ok(n.node_stage_volume(stage_req(&victim, &v_staging, block(), None)).await, "stage the victim");
    expect_ok(n.node_publish_volume(publish_req(&victim, &v_staging, &v_target, block())).await, "publish the victim");
    let victim_loops = loops_of(&image);
    assert_eq!(victim_loops.len(), 1, "{victim_loops:#?}");
    let victim_alive = |what: &str| {
        assert_eq!(loops_of(&image), victim_loops, "{what}: the victim's loop device changed");
        assert_eq!(mounts_at(&v_staging.join("device")).len(), 1, "{what}: the victim's staging bind is gone");
        assert_eq!(mounts_at(&v_target).len(), 1, "{what}: the victim's publish is gone");
    };

    // The hostile backend plants `/data/evil` -> `../victim/<image>` in its own directory.
    let relative = Path::new("../victim").join(image.strip_prefix(host.path().join("victim")).unwrap());
    let plant = create_req_with(
        "plant",
        MIB,
        &[("backend", "hostile"), ("misbehave", "plant-symlink"), ("link", "evil"), ("points-to", &text(&relative))],
    );
    expect_ok(c.create_volume(plant).await, "CreateVolume planting the symlink");
    let planted = host.path().join("hostile/evil");
    assert_eq!(std::fs::read_link(&planted).unwrap(), relative, "the backend planted its symlink");

    // Stage through the symlink: refused, nothing attached or mounted at its staging path.
    let evil = "hostile:file:/data/evil";
    let h_staging = host.node_path("h-staging");
    std::fs::create_dir(&h_staging).unwrap();
    expect_message(
        n.node_stage_volume(stage_req(evil, &h_staging, ext4(), None)).await,
        Code::FailedPrecondition,
        "symbolic link",
        "NodeStageVolume of a file behind a planted symlink",
    );
    assert!(mounts_at(&h_staging).is_empty());
    victim_alive("the refused stage");

    // Unstage asks the hostile backend which file its volume is: the symlink again. The
    // victim's live loop device stays attached.
    expect_ok(n.node_unstage_volume(unstage_req(evil, &h_staging)).await, "NodeUnstageVolume of the hostile volume");
    victim_alive("the hostile unstage");
    // At the victim's own paths, the hostile volume owns nothing there.
    expect_code(
        n.node_unstage_volume(unstage_req(evil, &v_staging)).await,
        Code::FailedPrecondition,
        "NodeUnstageVolume of the hostile volume at the victim's staging path",
    );
    expect_code(
        n.node_unpublish_volume(unpublish_req(evil, &v_target)).await,
        Code::FailedPrecondition,
        "NodeUnpublishVolume of the hostile volume at the victim's target",
    );
    let stats =
        csi::NodeGetVolumeStatsRequest { volume_id: evil.into(), volume_path: text(&v_target), ..Default::default() };
    expect_code(
        n.node_get_volume_stats(stats).await,
        Code::NotFound,
        "stats of the hostile volume at the victim's target",
    );
    victim_alive("the hostile calls at the victim's paths");

    expect_ok(n.node_unpublish_volume(unpublish_req(&victim, &v_target)).await, "unpublish the victim");
    expect_ok(n.node_unstage_volume(unstage_req(&victim, &v_staging)).await, "unstage the victim");
    assert!(loops_of(&image).is_empty(), "{:#?}", loops_of(&image));
    assert_no_leftovers(&host);
}

#[tokio::test]
async fn ungranted_devices_and_suffix_serials_are_refused_before_formatting() {
    if !privileged_with("ungranted_devices_and_suffix_serials_are_refused_before_formatting", "mkfs.ext4") {
        return;
    }
    let scratch = tempfile::Builder::new().prefix("wasmcsi-foreign-").tempdir_in("/tmp").unwrap();
    let disk = ForeignDisk::attach(scratch.path().join("foreign.img"));
    let by_id = scratch.path().join("by-id");
    std::fs::create_dir(&by_id).unwrap();
    let link = |name: &str| std::os::unix::fs::symlink(&disk.device, by_id.join(name)).unwrap();
    link("nvme-Amazon_Elastic_Block_Store_vol0001");
    link("virtio-data0001");
    // `granted` is the same component with the foreign disk in its devices grant: the
    // control that shows the refusals below are the grant's and the serial rule's doing.
    let granted = format!(
        "[[backends]]\nname = \"granted\"\nmodule = {}\n[backends.grants]\ndevices = [{}]\nhttp = [{HOSTILE_HTTP}]\n",
        toml_str(&text(&scratch.path().join("hostile.wasm"))),
        toml_str(&disk.device),
    );
    std::fs::write(scratch.path().join("hostile.wasm"), backend_bundle_hostile()).unwrap();
    let host = start_with_hostile(&granted, &["--by-id-root".to_string(), text(&by_id)]).await;
    let mut n = host.node().await;
    let staging = host.node_path("staging");
    std::fs::create_dir(&staging).unwrap();

    let refusals = [
        ("hostile", format!("block:{}", disk.device), Code::FailedPrecondition),
        ("hostile", format!("disk:nope:{}", disk.device), Code::FailedPrecondition),
        ("hostile", "disk:vol-0001:".to_string(), Code::FailedPrecondition),
        ("hostile", "disk:1:".to_string(), Code::NotFound),
        ("hostile", "disk:0001:".to_string(), Code::NotFound),
        ("granted", "disk:1:".to_string(), Code::NotFound),
        ("granted", "disk:0001:".to_string(), Code::NotFound),
        ("granted", "disk:01:".to_string(), Code::NotFound),
        ("granted", "disk:../foreign:".to_string(), Code::Internal),
    ];
    for (instance, device, code) in refusals {
        let id = format!("{instance}:h-1");
        let what = format!("NodeStageVolume of {instance} naming {device}");
        expect_code(n.node_stage_volume(stage_req(&id, &staging, ext4(), Some(&device))).await, code, &what);
        assert!(mounts_at(&staging).is_empty(), "{what}: {:#?}", mounts_at(&staging));
        disk.assert_untouched(&what);
    }

    // The control: whole by-id names of known schemes, granted, stage (and format) fine.
    for device in ["disk:vol-0001:", "disk:data0001:"] {
        expect_ok(
            n.node_stage_volume(stage_req("granted:h-1", &staging, ext4(), Some(device))).await,
            &format!("NodeStageVolume of granted naming {device}"),
        );
        assert_eq!(mounts_at(&staging).len(), 1, "{:#?}", mounts_at(&staging));
        expect_ok(n.node_unstage_volume(unstage_req("granted:h-1", &staging)).await, "NodeUnstageVolume granted");
        assert!(mounts_at(&staging).is_empty());
        assert!(
            loop_devices().iter().any(|l| text(&l.device) == disk.device),
            "the host detached a disk it did not attach"
        );
    }
    assert_no_leftovers(&host);
}

fn backend_bundle_hostile() -> &'static [u8] {
    backend_bundle::HOSTILE
}
