//! Isolation benchmark: a well-behaved backend's CreateVolume latency while another backend
//! of the same host is under attack (not a timed test: it reports numbers next to their
//! target and never fails on them).
//!
//! One host serves two instances: `good` (loopfile) and `bad` (the hostile component, 1 s
//! deadline, 32 MiB memory). For each attack, `ATTACKERS` clients keep the hostile backend
//! busy with a misbehaving CreateVolume (spinning until the deadline, sleeping in a host
//! call, hogging memory) while one client measures sequential create+delete pairs on `good`.
//! Target: p50 under attack within 2x of the idle p50.
//!
//! Run with `cargo bench -p wasmcsi --bench isolation` (release build of host and backends).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Host, MIB, create_req, create_req_with, toml_str};
use csi_proto::v1 as csi;

/// Measured pairs per phase.
const PAIRS: usize = 300;
/// Misbehaving calls kept in flight on the hostile backend.
const ATTACKERS: usize = 4;
/// What the hostile backend is made to do: CPU, a host-call sleep, memory.
const ATTACKS: &[&str] = &["loop", "sleep", "oom"];

fn main() {
    let tokio = tokio::runtime::Runtime::new().expect("start tokio");
    tokio.block_on(async {
        let host = start().await;
        let idle = p50(&mut pairs(&host, "idle").await);
        report("good create+delete pair, idle", pairs(&host, "idle-again").await, idle, "");
        for attack in ATTACKS {
            let stop = Arc::new(AtomicBool::new(false));
            let misbehaved = Arc::new(AtomicUsize::new(0));
            let mut attackers = Vec::new();
            for i in 0..ATTACKERS {
                let channel = host.channel().await;
                attackers.push(tokio::spawn(attack_loop(channel, attack, i, stop.clone(), misbehaved.clone())));
            }
            // Let the attack reach its steady state (every attacker inside a call).
            tokio::time::sleep(Duration::from_millis(300)).await;
            let under = pairs(&host, attack).await;
            stop.store(true, Ordering::SeqCst);
            for attacker in attackers {
                attacker.await.expect("attacker task");
            }
            let calls = misbehaved.load(Ordering::SeqCst);
            report(
                &format!("good create+delete pair, bad backend `{attack}` x{ATTACKERS} ({calls} calls)"),
                under,
                idle,
                "<= 2x idle",
            );
        }
    });
}

async fn start() -> Host {
    let mut host = Host::new();
    let hostile = host.write_hostile();
    let bad_dir = host.path().join("bad");
    std::fs::create_dir_all(&bad_dir).expect("create the hostile backend's directory");
    let text = format!(
        "{}\n[[backends]]\nname = \"bad\"\nmodule = {}\ngrants = {{ directories = [{{ host = {}, guest = \"/data\" }}], http = [\"http://127.0.0.1:9\"] }}\nlimits = {{ deadline_ms = 1000, memory_mib = 32 }}\n",
        host.loopfile_toml("good", "vols", true),
        toml_str(&hostile.display().to_string()),
        toml_str(&bad_dir.display().to_string()),
    );
    host.write_config("backends.toml", &text);
    host.start().await;
    host
}

/// Sequential create+delete pairs on the healthy backend; the latency of each pair.
async fn pairs(host: &Host, phase: &str) -> Vec<Duration> {
    let mut client = host.controller().await;
    let mut samples = Vec::with_capacity(PAIRS);
    for i in 0..PAIRS + 20 {
        let started = Instant::now();
        let volume = client
            .create_volume(create_req(&format!("{phase}-{i}"), 16 * MIB))
            .await
            .expect("create on the healthy backend")
            .into_inner()
            .volume
            .expect("a volume");
        client
            .delete_volume(csi::DeleteVolumeRequest { volume_id: volume.volume_id, ..Default::default() })
            .await
            .expect("delete on the healthy backend");
        if i >= 20 {
            samples.push(started.elapsed()); // the first 20 warm up
        }
    }
    samples
}

/// Keeps one misbehaving call in flight on the hostile backend until `stop`.
async fn attack_loop(
    channel: tonic::transport::Channel,
    attack: &'static str,
    attacker: usize,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
) {
    let mut client = csi::controller_client::ControllerClient::new(channel);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("attack-{attack}-{attacker}-{n}");
        let request = create_req_with(&name, 4 * MIB, &[("backend", "bad"), ("misbehave", attack)]);
        // Every answer is an error (deadline, memory): only the load it makes counts.
        let _ = client.create_volume(request).await;
        calls.fetch_add(1, Ordering::SeqCst);
        n += 1;
    }
}

fn p50(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn report(what: &str, mut samples: Vec<Duration>, idle_p50: Duration, target: &str) {
    let ours = p50(&mut samples);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: n={} p50={:.2} ms p99={:.2} ms ({:.2}x idle){}",
        samples.len(),
        ms(ours),
        ms(samples[samples.len() * 99 / 100]),
        ours.as_secs_f64() / idle_p50.as_secs_f64(),
        if target.is_empty() { String::new() } else { format!("   target {target}") }
    );
}
