//! Controller-path benchmark on a running endpoint (not a timed test: it reports numbers
//! next to their targets and never fails on them).
//!
//! - sequential CreateVolume+DeleteVolume pairs over the socket (p50/p99 per pair);
//! - 200 CreateVolume calls with 16 in flight (p50/p99 per call, creates/s);
//! - the cost of one backend call in process: permit, blocking-thread hand-off, fresh
//!   store + WASI context, instantiate from the InstancePre, call `info`, drop.
//!
//! Run with `cargo bench -p wasmcsi --bench controller` (release build of host and backend).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{AccessMode, Host, MIB, mount_cap};
use csi_proto::v1 as csi;
use wasmcsi::command::System;
use wasmcsi::config::Config;
use wasmcsi::runtime::Runtime;

const PAIRS: usize = 1000;
const BURST: usize = 200;
const IN_FLIGHT: usize = 16;
const BACKEND_CALLS: usize = 20_000;

fn main() {
    let tokio = tokio::runtime::Runtime::new().expect("start tokio");
    tokio.block_on(async {
        let host = Host::start_default().await;
        sequential_pairs(&host).await;
        concurrent_creates(&host).await;
    });
    backend_call_overhead(&tokio);
}

fn create_request(name: String) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name,
        capacity_range: Some(csi::CapacityRange { required_bytes: 64 * MIB, limit_bytes: 0 }),
        volume_capabilities: vec![mount_cap(AccessMode::SingleNodeWriter)],
        ..Default::default()
    }
}

async fn sequential_pairs(host: &Host) {
    let mut client = host.controller().await;
    let mut pair = async |i: usize| {
        let started = Instant::now();
        let volume = client
            .create_volume(create_request(format!("pair-{i}")))
            .await
            .expect("create")
            .into_inner()
            .volume
            .unwrap();
        client
            .delete_volume(csi::DeleteVolumeRequest { volume_id: volume.volume_id, ..Default::default() })
            .await
            .expect("delete");
        started.elapsed()
    };
    for i in 0..50 {
        pair(i).await; // warm-up: thread pools, page cache, connection
    }
    let mut samples = Vec::with_capacity(PAIRS);
    for i in 0..PAIRS {
        samples.push(pair(1000 + i).await);
    }
    report("create+delete pair, sequential", &mut samples, "p50 <= 0.8 ms");
}

async fn concurrent_creates(host: &Host) {
    let channel = host.channel().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let (mut client, gate) = (csi::controller_client::ControllerClient::new(channel.clone()), gate.clone());
        tasks.spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            let t = Instant::now();
            let volume = client
                .create_volume(create_request(format!("burst-{i}")))
                .await
                .expect("create")
                .into_inner()
                .volume
                .unwrap();
            (t.elapsed(), volume.volume_id)
        });
    }
    let mut samples = Vec::with_capacity(BURST);
    let mut ids = Vec::with_capacity(BURST);
    while let Some(done) = tasks.join_next().await {
        let (latency, id) = done.expect("task");
        samples.push(latency);
        ids.push(id);
    }
    let wall = started.elapsed();
    report(&format!("create, {IN_FLIGHT} in flight"), &mut samples, "");
    println!(
        "    throughput: {:.0} creates/s over {BURST} ({:.1} ms)   target >= 3000/s",
        BURST as f64 / wall.as_secs_f64(),
        wall.as_secs_f64() * 1e3
    );
    let mut client = host.controller().await;
    for volume_id in ids {
        client.delete_volume(csi::DeleteVolumeRequest { volume_id, ..Default::default() }).await.expect("delete");
    }
}

fn backend_call_overhead(tokio: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::embedded_default(dir.path());
    let runtime = Runtime::new(&dir.path().join("cache"), Arc::new(System), 16).expect("runtime");
    let backend = {
        let _in_tokio = tokio.enter();
        runtime.load(&config.backends[0], "bench-node").expect("load loopfile")
    };
    let mut samples = Vec::with_capacity(BACKEND_CALLS);
    tokio.block_on(async {
        for i in 0..BACKEND_CALLS + 1000 {
            let t = Instant::now();
            backend.ask_info().await.expect("info");
            if i >= 1000 {
                samples.push(t.elapsed());
            }
        }
    });
    report("backend call (fresh instance, info)", &mut samples, "p50 <= 30 us");
}

fn report(what: &str, samples: &mut [Duration], target: &str) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what}: n={} p50={:.1} us p99={:.1} us max={:.1} us   {}",
        samples.len(),
        us(at(0.50)),
        us(at(0.99)),
        us(samples[samples.len() - 1]),
        if target.is_empty() { String::new() } else { format!("target {target}") }
    );
}
