//! Node-path benchmark on a running endpoint, as root (not a timed test: it reports numbers
//! next to their targets and never fails on them).
//!
//! For fresh 1 GiB ext4 loopfile volumes: NodeStageVolume (loop attach, blkid, mkfs.ext4,
//! mount), NodePublishVolume (bind mount), NodeUnpublishVolume and NodeUnstageVolume
//! (unmounts, loop detach). The host's own overhead is the stage latency less the time the
//! same tools take when run directly on a fresh loop device of the same size; publish and
//! unstage run no tools, so their whole latency is the host's.
//!
//! Run with `cargo bench -p wasmcsi --bench node`.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{AccessMode, GIB, Host, create_req, mount_cap_fs};
use csi_proto::v1 as csi;
use wasmcsi::node::loopdev;

const ROUNDS: usize = 10;

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("the node benchmark needs root (loop devices, mkfs, mounts); skipped");
        return;
    }
    let tokio = tokio::runtime::Runtime::new().expect("start tokio");
    let (mut stage, mut publish, mut unpublish, mut unstage) = (vec![], vec![], vec![], vec![]);
    tokio.block_on(async {
        let host = Host::start_default().await;
        let (mut controller, mut node) = (host.controller().await, host.node().await);
        let cap = mount_cap_fs(AccessMode::SingleNodeWriter, "ext4");
        for i in 0..ROUNDS {
            let volume = controller
                .create_volume(create_req(&format!("bench-{i}"), GIB))
                .await
                .expect("create")
                .into_inner()
                .volume
                .unwrap();
            let staging = host.path().join(format!("staging-{i}"));
            let target = host.path().join(format!("target-{i}"));
            let id = volume.volume_id.clone();
            let t = Instant::now();
            node.node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await
            .expect("stage");
            stage.push(t.elapsed());
            let t = Instant::now();
            node.node_publish_volume(csi::NodePublishVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await
            .expect("publish");
            publish.push(t.elapsed());
            let t = Instant::now();
            node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: target.display().to_string(),
            })
            .await
            .expect("unpublish");
            unpublish.push(t.elapsed());
            let t = Instant::now();
            node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.display().to_string(),
            })
            .await
            .expect("unstage");
            unstage.push(t.elapsed());
            controller
                .delete_volume(csi::DeleteVolumeRequest { volume_id: id, ..Default::default() })
                .await
                .expect("delete");
        }
    });
    let tools = tools_alone();
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (stage50, tools50) = (p50(&mut stage), p50(&mut tools.clone()));
    println!(
        "NodeStageVolume (fresh 1 GiB ext4): p50 {:.2} ms, max {:.2} ms",
        ms(stage50),
        ms(*stage.iter().max().unwrap())
    );
    println!("  blkid + mkfs.ext4 run directly:   p50 {:.2} ms", ms(tools50));
    println!("  host overhead beyond the tools:   {:.2} ms   target <= 5 ms", ms(stage50.saturating_sub(tools50)));
    println!("NodePublishVolume (bind):           p50 {:.2} ms   target <= 5 ms", ms(p50(&mut publish)));
    println!("NodeUnpublishVolume:                p50 {:.2} ms   target <= 5 ms", ms(p50(&mut unpublish)));
    println!("NodeUnstageVolume (umount, detach): p50 {:.2} ms   target <= 5 ms", ms(p50(&mut unstage)));
}

/// The tools a fresh stage runs, timed on their own on a fresh 1 GiB loop device.
fn tools_alone() -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("temp dir");
    (0..ROUNDS)
        .map(|i| {
            let image = dir.path().join(format!("tools-{i}.img"));
            std::fs::File::create(&image).and_then(|f| f.set_len(GIB as u64)).expect("image");
            let device = loopdev::attach(&image).expect("attach");
            let t = Instant::now();
            run("blkid", &["-p", "-o", "export"], &device.path);
            run("mkfs.ext4", &["-F", "-q"], &device.path);
            let took = t.elapsed();
            loopdev::detach(&device.path).expect("detach");
            took
        })
        .collect()
}

fn run(tool: &str, args: &[&str], device: &Path) {
    let status = Command::new(tool).args(args).arg(device).status().expect("run tool");
    assert!(status.code().is_some(), "{tool} was killed");
}
