//! The socket stays answerable: connections and streams are bounded, a connection that
//! never completes its HTTP/2 preface is closed, a request whose body never comes is ended,
//! idle connections make room for new clients, and running out of file descriptors does
//! not stop the host. Everything here is loopback (a unix socket), bounded in count and
//! time.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use csi_proto::v1 as csi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The host's connection limit (`server::connections::LIMITS`).
const MAX_CONNECTIONS: usize = 128;
const MAX_STREAMS: usize = 64;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Open file descriptors of the host process.
fn open_fds(host: &Host) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", host.pid())).expect("list the host's fds").count()
}

/// Connects, retrying briefly while the host's accept queue is full.
async fn connect_raw(socket: &Path) -> UnixStream {
    let started = Instant::now();
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return stream,
            Err(e) if started.elapsed() < CALL_TIMEOUT => {
                eprintln!("connect: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("connect {}: {e}", socket.display()),
        }
    }
}

/// An HTTP/2 connection with the h2 client.
async fn h2_client(socket: &Path) -> h2::client::SendRequest<bytes::Bytes> {
    let (client, connection) = h2::client::handshake(connect_raw(socket).await).await.expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn probe_request() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri("http://localhost/csi.v1.Identity/Probe")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

async fn probe(host: &Host) {
    let response =
        tokio::time::timeout(CALL_TIMEOUT, async { host.identity().await.probe(csi::ProbeRequest {}).await })
            .await
            .expect("Probe answers in time");
    assert_eq!(expect_ok(response, "Probe").ready, Some(true));
}

#[tokio::test]
async fn probe_answers_under_idle_connections_bodiless_streams_and_half_prefaces() {
    let host = Host::start_default().await;
    probe(&host).await;
    let baseline = open_fds(&host);

    // 300 streams that never send a body, on 10 connections.
    let (mut clients, mut streams) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let mut client = h2_client(&host.socket).await;
        for _ in 0..30 {
            client = client.ready().await.expect("stream capacity");
            streams.push(client.send_request(probe_request(), false).expect("open a stream"));
        }
        clients.push(client);
    }
    // 200 connections that send half the preface and stop.
    let mut half = Vec::new();
    for _ in 0..200 {
        let mut stream = connect_raw(&host.socket).await;
        stream.write_all(&PREFACE[..12]).await.unwrap();
        half.push(stream);
    }
    // 1000 idle HTTP/2 connections: the preface, empty settings, nothing more.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let mut stream = connect_raw(&host.socket).await;
        stream.write_all(PREFACE).await.unwrap();
        stream.write_all(SETTINGS).await.unwrap();
        idle.push(stream);
    }

    probe(&host).await;
    let fds = open_fds(&host);
    assert!(
        fds <= baseline + MAX_CONNECTIONS + 16,
        "the host holds {fds} fds with {} connections open against it (baseline {baseline})",
        streams.len() + half.len() + idle.len()
    );
    // A client that has just been served, then idles, is evicted for later ones, and
    // reconnects: every one of a series of fresh clients is answered.
    for _ in 0..20 {
        probe(&host).await;
    }
    drop((clients, streams, half, idle));
    probe(&host).await;
}

#[tokio::test]
async fn a_connection_gets_a_bounded_number_of_streams() {
    let host = Host::start_default().await;
    let mut client = h2_client(&host.socket).await;
    let (response, mut body) = client.send_request(probe_request(), false).expect("open a stream");
    // An empty ProbeRequest: a gRPC frame with no payload.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true).unwrap();
    let response = tokio::time::timeout(CALL_TIMEOUT, response).await.expect("answered in time").expect("a response");
    assert_eq!(response.status(), 200);
    assert_eq!(client.current_max_send_streams(), MAX_STREAMS, "the host's SETTINGS_MAX_CONCURRENT_STREAMS");
}

#[tokio::test]
async fn a_stalled_preface_and_a_missing_body_are_cut_off() {
    let host = Host::start_default().await;
    let mut stalled = connect_raw(&host.socket).await;
    stalled.write_all(&PREFACE[..12]).await.unwrap();
    let mut client = h2_client(&host.socket).await;
    let (response, _body) = client.send_request(probe_request(), false).expect("open a stream");

    // The host closes the stalled connection (EOF) and ends the bodiless call, each within
    // its 10 s timeout; the safety bound here is far above that.
    // (The host sends its SETTINGS at once; what matters is that the stream then ends.)
    // The read ends with EOF or a reset error; either is the host closing it.
    let mut sent = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut sent))
        .await
        .expect("the host closes a connection that never completes its preface");
    let answer = tokio::time::timeout(Duration::from_secs(30), response).await.expect("the bodiless call is ended");
    match answer {
        // gRPC answers with a status in the headers or trailers, never OK.
        Ok(response) => {
            let status = response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
            assert_ne!(status.as_deref(), Some("0"), "a call without its request cannot succeed");
        }
        Err(e) => eprintln!("the stream was reset: {e}"),
    }
    probe(&host).await;
}

#[tokio::test]
async fn running_out_of_file_descriptors_does_not_stop_the_host() {
    let host = Host::start_default().await;
    probe(&host).await;
    let limit = open_fds(&host) + 8;
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", host.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit lowered the host's open-file limit");

    let mut idle = Vec::new();
    for _ in 0..100 {
        let mut stream = connect_raw(&host.socket).await;
        let _ = stream.write_all(PREFACE).await;
        idle.push(stream);
    }
    probe(&host).await;
    assert!(
        host.log_eventually_contains("accept failed", Duration::from_secs(10)).await,
        "the host met the limit; log:\n{}",
        host.log()
    );
    drop(idle);
    probe(&host).await;
}
