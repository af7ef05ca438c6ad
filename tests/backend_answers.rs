//! What a backend answers is checked against CSI before it reaches the CO: topology,
//! capacity, contexts, list pages and tokens, node topology and the `info()` declaration.
//! A violation is INTERNAL naming the backend (or, for `info()`, a start-up failure naming
//! it). And one backend cannot degrade another: names live in the host's own index (no
//! backend is asked about another's names), a hanging backend holds up only its own calls,
//! and NodeGetInfo does not wait on node-topology.

mod common;

use std::time::Duration;

use common::*;
use csi_proto::v1 as csi;
use tonic::Code;

/// `[[backends]]` TOML for the hostile component named `name`, with `settings` (TOML inline
/// table body) and `limits`.
fn hostile_toml(host: &Host, name: &str, settings: &str, limits: &str) -> String {
    let hostile = host.path().join("hostile.wasm");
    if !hostile.exists() {
        host.write_hostile();
    }
    format!(
        "[[backends]]\nname = {}\nmodule = {}\nsettings = {{ {settings} }}\nlimits = {{ {limits} }}\ngrants = {{ http = [{HOSTILE_HTTP}] }}\n",
        toml_str(name),
        toml_str(&hostile.display().to_string()),
    )
}

/// `local` (loopfile, default) and `bad` (hostile with `settings` and `limits`).
async fn start_with_bad(settings: &str, limits: &str) -> Host {
    let mut host = Host::new();
    // Requests are logged at debug: a test sees when one reached the host.
    host.rust_log("info,wasmcsi=debug");
    let text =
        format!("{}\n{}", host.loopfile_toml("local", "vols", true), hostile_toml(&host, "bad", settings, limits));
    host.write_config("backends.toml", &text);
    host.start().await;
    host
}

#[track_caller]
fn internal_naming_bad<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) -> String {
    let status = expect_code(result, Code::Internal, what);
    assert!(
        status.message().starts_with("backend bad "),
        "{what}: the message names the backend: {:?}",
        status.message()
    );
    assert!(status.message().len() < 1024, "{what}: the message stays short: {} bytes", status.message().len());
    status.message().to_owned()
}

#[tokio::test]
async fn created_volumes_that_break_csi_are_internal() {
    let host = start_with_bad(
        "features = \"list-volumes\", topology-key = \"topology.hostile.test/zone\"",
        "deadline_ms = 20000, memory_mib = 256",
    )
    .await;
    let mut c = host.controller().await;
    let cases = [
        ("topology-1mib", "must be 1 to 63 bytes"),
        ("topology-100k", "100000 segments"),
        ("topologies-100k", "100000 accessible topologies"),
        ("topology-host-key", "\"topology.wasmcsi.dev/node\", which the backend does not declare"),
        ("capacity-1", "1 bytes, outside the requested range (required 4194304"),
        ("context-5k", "volume context that holds"),
    ];
    for (act, why) in cases {
        let message = internal_naming_bad(
            c.create_volume(create_req_with(&format!("bad-{act}"), 4 * MIB, &[("backend", "bad"), ("misbehave", act)]))
                .await,
            act,
        );
        assert!(message.contains(why), "{act}: the message says why: {message:?}");
    }
    // The instance itself keeps serving well-formed answers.
    let fine = expect_ok(c.create_volume(create_req_with("bad-fine", 4 * MIB, &[("backend", "bad")])).await, "create");
    assert_eq!(fine.volume.unwrap().capacity_bytes, 4 * MIB);
}

#[tokio::test]
async fn list_pages_are_bounded_in_entries_bytes_and_tokens() {
    let host = start_with_bad("features = \"list-volumes\"", "deadline_ms = 30000, memory_mib = 512").await;
    let mut c = host.controller().await;
    expect_ok(c.create_volume(create_req("listed", 4 * MIB)).await, "local CreateVolume");
    let list = |token: &str, max_entries: i32| csi::ListVolumesRequest { max_entries, starting_token: token.into() };

    // max_entries 0: the host asks for a page of 1000, never "no limit".
    let message = internal_naming_bad(c.list_volumes(list("bad:more-than-asked", 0)).await, "more than asked, max 0");
    assert!(message.contains("1001 entries where 1000 were asked for"), "{message:?}");
    let message = internal_naming_bad(c.list_volumes(list("bad:more-than-asked", 5)).await, "more than asked, max 5");
    assert!(message.contains("6 entries where 5 were asked for"), "{message:?}");
    // A million entries never become a host-side list: lifting them out of the guest is
    // host memory the call holds, and its budget stops the call first.
    let status =
        expect_code(c.list_volumes(list("bad:million", 0)).await, Code::ResourceExhausted, "1,000,001 entries");
    assert_eq!(status.message(), "backend bad exceeded its host memory limit");
    let message = internal_naming_bad(c.list_volumes(list("bad:token-1mib", 0)).await, "a 1 MiB next token");
    assert!(message.contains("next token of 1048576 bytes"), "{message:?}");
    let message = internal_naming_bad(c.list_volumes(list("bad:huge-page", 0)).await, "a 4 MB page");
    assert!(message.contains("more than the 2097152 allowed"), "{message:?}");

    // A well-behaved listing goes through both instances.
    let page = expect_ok(c.list_volumes(list("", 0)).await, "ListVolumes");
    let ids: Vec<_> = page.entries.iter().map(|e| e.volume.as_ref().unwrap().volume_id.clone()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    local_id(&ids[0], "local");
    assert_eq!(page.next_token, "");
    expect_ok(host.identity().await.probe(csi::ProbeRequest {}).await, "Probe after the big answers");
}

#[tokio::test]
async fn publish_context_and_expansion_answers_are_checked() {
    let host = start_with_bad("features = \"publish-unpublish,expand-volumes\"", "").await;
    let mut c = host.controller().await;
    let message = internal_naming_bad(
        c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: "bad:h-context-5k".into(),
            node_id: NODE_ID.into(),
            volume_capability: Some(rw_mount()),
            ..Default::default()
        })
        .await,
        "a 5 KiB publish context",
    );
    assert!(message.contains("publish context that holds 5124 bytes"), "{message:?}");
    expect_ok(
        c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: "bad:h-1".into(),
            node_id: NODE_ID.into(),
            volume_capability: Some(rw_mount()),
            ..Default::default()
        })
        .await,
        "an empty publish context",
    );
    let message = internal_naming_bad(
        c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: "bad:h-1".into(),
            capacity_range: range(4 * MIB, 0),
            ..Default::default()
        })
        .await,
        "expanded to 1 byte",
    );
    assert!(message.contains("expanded a volume to 1 bytes, outside the requested range"), "{message:?}");
}

#[tokio::test]
async fn bad_declarations_stop_start_up_naming_the_instance() {
    let cases = [
        ("host-topology-key", "declares the host's own topology key topology.wasmcsi.dev/node"),
        ("bad-fs-type", "default-fs-type \"ntfs\""),
        ("huge-name", "info() name \"nnnn"),
        ("no-access-modes", "declares no access mode"),
    ];
    for (act, why) in cases {
        let mut host = Host::new();
        let text = format!(
            "{}\n{}",
            host.loopfile_toml("local", "vols", true),
            hostile_toml(&host, "bad", &format!("info = \"{act}\""), "")
        );
        host.write_config("backends.toml", &text);
        let (status, log) = host.start_expecting_failure().await;
        assert!(!status.success(), "{act}: start-up fails");
        assert!(
            log.contains("backend bad: ") && log.contains(why),
            "{act}: the error names bad and says {why:?}:\n{log}"
        );
    }
}

#[tokio::test]
async fn node_get_info_leaves_out_hanging_and_lying_backends() {
    let mut host = Host::new();
    let text = [
        host.loopfile_toml("local", "vols", true),
        hostile_toml(&host, "zone", "topology-key = \"topology.hostile.test/zone\"", ""),
        // Loops for longer than start-up waits.
        hostile_toml(
            &host,
            "hang",
            "topology-key = \"topology.hang.test/zone\", node-topology = \"loop\"",
            "deadline_ms = 30000",
        ),
        hostile_toml(&host, "liar", "topology-key = \"topology.liar.test/zone\", node-topology = \"host-key\"", ""),
        hostile_toml(&host, "huge", "topology-key = \"topology.huge.test/zone\", node-topology = \"huge\"", ""),
        hostile_toml(&host, "fails", "topology-key = \"topology.fails.test/zone\", node-topology = \"fail\"", ""),
    ]
    .join("\n");
    host.write_config("backends.toml", &text);
    host.start().await;
    let info = expect_ok(host.node().await.node_get_info(csi::NodeGetInfoRequest {}).await, "NodeGetInfo");
    let segments = info.accessible_topology.expect("a topology").segments;
    assert_eq!(
        segments,
        params(&[(NODE_TOPOLOGY_KEY, NODE_ID), ("topology.hostile.test/zone", "zone-1")]),
        "the host's own node segment and the honest backend's zone, nothing else"
    );
    let log = host.log();
    for name in ["hang", "liar", "huge", "fails"] {
        assert!(
            !log_lines(&log, &["node topology left out", &format!("backend=\"{name}\"")]).is_empty()
                || !log_lines(&log, &["node topology left out", &format!("backend={name}")]).is_empty(),
            "a warning names {name}:\n{log}"
        );
    }
}

/// Names live in the host's index: a backend whose find-volume claims every name cannot
/// make another backend's create fail, nor is it asked about names it was never given.
#[tokio::test]
async fn a_lying_find_volume_cannot_take_other_backends_names() {
    let mut host = start_with_bad("find = \"claim-all\"", "").await;
    let mut c = host.controller().await;
    let first = expect_ok(c.create_volume(create_req("pvc-a", 4 * MIB)).await, "local create").volume.unwrap();
    let again = expect_ok(c.create_volume(create_req("pvc-a", 4 * MIB)).await, "local create again").volume.unwrap();
    assert_eq!(first.volume_id, again.volume_id, "a retry reaches the backend's own idempotency");
    let status = expect_code(
        c.create_volume(create_req_with("pvc-a", 4 * MIB, &[("backend", "bad")])).await,
        Code::AlreadyExists,
        "the same name on another instance",
    );
    assert!(status.message().contains(&first.volume_id), "{:?}", status.message());

    // A name the liar really was given is its own.
    expect_ok(c.create_volume(create_req_with("pvc-b", 4 * MIB, &[("backend", "bad")])).await, "bad create");
    expect_code(c.create_volume(create_req("pvc-b", 4 * MIB)).await, Code::AlreadyExists, "bad's name on local");

    // Deleting a volume frees its name; the index survives a restart.
    expect_ok(
        c.delete_volume(csi::DeleteVolumeRequest { volume_id: first.volume_id.clone(), ..Default::default() }).await,
        "delete pvc-a",
    );
    expect_ok(c.create_volume(create_req("pvc-c", 4 * MIB)).await, "local create pvc-c");
    host.restart().await;
    let mut c = host.controller().await;
    expect_ok(
        c.create_volume(create_req_with("pvc-a", 4 * MIB, &[("backend", "bad")])).await,
        "a freed name on another instance",
    );
    expect_code(
        c.create_volume(create_req_with("pvc-c", 4 * MIB, &[("backend", "bad")])).await,
        Code::AlreadyExists,
        "local's name after a restart",
    );
}

/// A claim whose create failed passes on once its owner says it holds no such volume.
#[tokio::test]
async fn a_failed_create_does_not_keep_the_name_from_another_instance() {
    let mut host = Host::new();
    let text =
        format!("{}\n{}", host.loopfile_toml("alpha", "vols-a", true), host.loopfile_toml("beta", "vols-b", false));
    host.write_config("backends.toml", &text);
    host.start().await;
    let mut c = host.controller().await;
    expect_code(
        c.create_volume(create_req_with("pvc-e", 4 * MIB, &[("bogus", "1")])).await,
        Code::InvalidArgument,
        "a create alpha refuses",
    );
    let volume = expect_ok(c.create_volume(create_req_with("pvc-e", 4 * MIB, &[("backend", "beta")])).await, "beta")
        .volume
        .unwrap();
    local_id(&volume.volume_id, "beta");
    expect_code(c.create_volume(create_req("pvc-e", 4 * MIB)).await, Code::AlreadyExists, "now beta's name on alpha");
}

/// A backend stuck in a create holds up only its own calls: the other instance's creates
/// complete while it still hangs.
#[tokio::test]
async fn a_hanging_backend_does_not_hold_up_another_backends_creates() {
    let host = start_with_bad("", "deadline_ms = 30000, concurrency = 1").await;
    let mut hung_client = host.controller().await;
    let hung = tokio::spawn(async move {
        hung_client.create_volume(create_req_with("stuck", 4 * MIB, &[("backend", "bad"), ("misbehave", "loop")])).await
    });
    assert!(
        host.log_eventually_contains("\"stuck\"", Duration::from_secs(10)).await,
        "the hanging call reached the host"
    );
    let mut c = host.controller().await;
    for i in 0..3 {
        expect_ok(c.create_volume(create_req(&format!("healthy-{i}"), 4 * MIB)).await, "local create");
    }
    assert!(!hung.is_finished(), "the other backend is still hanging while local's creates completed");
    hung.abort();
}
