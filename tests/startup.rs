//! Start-up and shutdown of the process: config errors stop it with a message, the compiled
//! component is cached, sockets are replaced when stale and refused when live, get their
//! mode, and are removed on SIGTERM; volumes outlive a restart; YAML configs work.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use common::*;
use csi_proto::v1 as csi;

/// Starts a host with `config_text` (written as `name`) and expects start-up to fail with a
/// non-zero exit, no socket, and a message containing every one of `needles`.
async fn expect_config_error(name: &str, config_text: impl Fn(&Host) -> String, needles: &[&str]) {
    let mut host = Host::new();
    let text = config_text(&host);
    host.write_config(name, &text);
    let (status, log) = host.start_expecting_failure().await;
    assert!(!status.success(), "start-up with a bad config ({needles:?}) must fail; it exited {status}; log:\n{log}");
    assert_eq!(status.code(), Some(1), "a config error is an ordinary error exit, not a crash: {status}; log:\n{log}");
    for needle in needles {
        assert!(log.contains(needle), "the start-up error should mention {needle:?}; log:\n{log}");
    }
    assert!(!host.socket.exists(), "a host that failed to start left a socket behind");
}

#[tokio::test]
async fn config_errors_stop_startup_with_a_reason() {
    // An unknown key: named in the message.
    expect_config_error(
        "unknown-key.toml",
        |h| format!("{}colour = \"blue\"\n", h.loopfile_toml("local", "vols", true)),
        &["colour", "unknown field"],
    )
    .await;
    // An unknown key in a nested table.
    expect_config_error(
        "unknown-limit.toml",
        |h| format!("{}limits = {{ deadline = 5 }}\n", h.loopfile_toml("local", "vols", true)),
        &["deadline", "unknown field"],
    )
    .await;
    // A module file that does not exist.
    expect_config_error(
        "missing-module.toml",
        |h| {
            format!(
                "[[backends]]\nname = \"ghost\"\nmodule = {}\n",
                toml_str(&h.path().join("missing.wasm").display().to_string())
            )
        },
        &["ghost", "missing.wasm"],
    )
    .await;
    // A builtin that does not exist.
    expect_config_error(
        "builtin.toml",
        |_| "[[backends]]\nname = \"nope\"\nmodule = \"builtin:nope\"\n".into(),
        &["backend nope", "\"nope\""],
    )
    .await;
    // A module file that is not a component.
    expect_config_error(
        "not-wasm.toml",
        |h| {
            let junk = h.write_file("junk.wasm", b"this is not wasm");
            format!("[[backends]]\nname = \"junk\"\nmodule = {}\n", toml_str(&junk.display().to_string()))
        },
        &["junk"],
    )
    .await;
    // A setting loopfile does not know: its validate-settings rejects it at load time.
    expect_config_error(
        "bad-setting.toml",
        |h| {
            h.loopfile_toml("local", "vols", true).replace(
                "settings = { directory = \"/data\" }",
                "settings = { directory = \"/data\", colour = \"blue\" }",
            )
        },
        &["local", "colour"],
    )
    .await;
    // A setting with a bad value.
    expect_config_error(
        "bad-setting-value.toml",
        |h| {
            h.loopfile_toml("local", "vols", true)
                .replace("settings = { directory = \"/data\" }", "settings = { directory = \"data\" }")
        },
        &["local", "absolute"],
    )
    .await;
    // Two backends with the same name.
    expect_config_error(
        "twins.toml",
        |h| format!("{}\n{}", h.loopfile_toml("twin", "a", true), h.loopfile_toml("twin", "b", false)),
        &["twin", "used twice"],
    )
    .await;
    // Two defaults.
    expect_config_error(
        "two-defaults.toml",
        |h| format!("{}\n{}", h.loopfile_toml("first", "a", true), h.loopfile_toml("second", "b", true)),
        &["more than one backend is marked default"],
    )
    .await;
    // No backends at all.
    expect_config_error("empty.toml", |_| "backends = []\n".into(), &["at least one"]).await;
    // A relative directory grant.
    expect_config_error(
        "relative-grant.toml",
        |_| "[[backends]]\nname = \"rel\"\nmodule = \"builtin:loopfile\"\ngrants = { directories = [{ host = \"vols\", guest = \"/data\" }] }\n".into(),
        &["rel", "absolute"],
    )
    .await;
    // A zero limit.
    expect_config_error(
        "zero-deadline.toml",
        |h| format!("{}limits = {{ deadline_ms = 0 }}\n", h.loopfile_toml("zero", "vols", true)),
        &["zero", "deadline_ms"],
    )
    .await;
    // An instance name that cannot be an id prefix.
    expect_config_error("bad-name.toml", |h| h.loopfile_toml("Bad_Name", "vols", true), &["Bad_Name"]).await;
    // An HTTP grant that is not a bare origin.
    expect_config_error(
        "http.toml",
        |_| "[[backends]]\nname = \"web\"\nmodule = \"builtin:loopfile\"\ngrants = { http = [\"https://example.com/api\"] }\n".into(),
        &["web", "https://example.com/api", "no path"],
    )
    .await;
    // An empty file.
    expect_config_error("empty-file.toml", |_| String::new(), &["backends"]).await;
    // A config file that does not exist.
    let mut host = Host::new();
    let missing = host.path().join("nowhere.toml");
    host.set_config(missing);
    let (status, log) = host.start_expecting_failure().await;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("nowhere.toml"), "the error names the missing file; log:\n{log}");
    // A file with neither extension.
    expect_config_error("backends.ini", |h| h.loopfile_toml("ini", "vols", true), &["backends.ini", "toml"]).await;
    // An unparseable file.
    expect_config_error("garbage.toml", |_| "[[backends]\nname = ".into(), &["garbage.toml"]).await;
}

#[tokio::test]
async fn compiled_component_is_cached_across_restarts() {
    let mut host = Host::start_default().await;
    let first = host.log();
    let compiled =
        |log: &str| log.lines().filter(|l| l.contains("compiled component") && !l.contains("from cache")).count();
    assert_eq!(compiled(&first), 1, "the first start compiles the component once; log:\n{first}");
    assert!(
        !first.contains("loaded compiled component from cache"),
        "nothing is cached on a fresh data dir; log:\n{first}"
    );
    let cache = host.data_dir.join("cache");
    let entries: Vec<_> = std::fs::read_dir(&cache).expect("the cache dir exists").flatten().collect();
    assert_eq!(entries.len(), 1, "one cache entry: {entries:?}");
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700,
        "the cache is private to the host"
    );

    host.restart().await;
    let second = host.log();
    assert!(
        second.contains("loaded compiled component from cache"),
        "the restart loads from the cache; log:\n{second}"
    );
    assert_eq!(compiled(&second), 0, "the restart does not compile again; log:\n{second}");
    // And the cached component works.
    let volume =
        expect_ok(host.controller().await.create_volume(create_req("after-cache", 4 * MIB)).await, "CreateVolume")
            .volume
            .unwrap();
    local_id(&volume.volume_id, "loopfile");

    // --cache-dir puts the cache elsewhere.
    let mut elsewhere = Host::new();
    let cache_dir = elsewhere.path().join("compiled");
    elsewhere.args(["--cache-dir".to_string(), cache_dir.display().to_string()]);
    elsewhere.start().await;
    assert_eq!(compiled(&elsewhere.log()), 1, "log:\n{}", elsewhere.log());
    assert_eq!(std::fs::read_dir(&cache_dir).expect("the --cache-dir exists").count(), 1);
    assert!(!elsewhere.data_dir.join("cache").exists(), "nothing is cached in the default place");
    elsewhere.restart().await;
    assert!(elsewhere.log().contains("loaded compiled component from cache"), "log:\n{}", elsewhere.log());
}

#[tokio::test]
async fn stale_socket_is_replaced_and_live_socket_is_refused() {
    let mut host = Host::start_default().await;
    host.kill().await;
    let meta = std::fs::symlink_metadata(&host.socket).expect("a SIGKILLed host leaves its socket behind");
    assert!(meta.file_type().is_socket());

    // The next start replaces the stale socket and serves.
    host.start().await;
    let probe =
        expect_ok(host.identity().await.probe(csi::ProbeRequest {}).await, "Probe after replacing a stale socket");
    assert_eq!(probe.ready, Some(true));

    // A second host on the live socket refuses to start and leaves the first one alone.
    let mut intruder = Host::new();
    intruder.set_socket(host.socket.clone());
    let (status, log) = intruder.start_expecting_failure().await;
    assert!(!status.success(), "a second host on a live socket must fail; log:\n{log}");
    assert!(log.contains(&host.socket.display().to_string()), "the error names the socket; log:\n{log}");
    assert!(log.contains("live"), "the error says the socket is in use; log:\n{log}");
    assert!(host.socket.exists());
    let probe = expect_ok(host.identity().await.probe(csi::ProbeRequest {}).await, "Probe of the first host");
    assert_eq!(probe.ready, Some(true));
    assert!(host.is_running());

    // A path that is not a socket is never replaced.
    let mut squatted = Host::new();
    let file = squatted.write_file("csi.sock", "precious");
    let (status, log) = squatted.start_expecting_failure().await;
    assert!(!status.success(), "a host must not replace a regular file with its socket; log:\n{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[tokio::test]
async fn socket_mode_defaults_to_0600_and_follows_the_flag() {
    let host = Host::start_default().await;
    let mode = std::fs::metadata(&host.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "default socket mode is {mode:o}");

    let mut host = Host::new();
    host.args(["--socket-mode", "0660"]);
    host.start().await;
    let mode = std::fs::metadata(&host.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode with --socket-mode 0660 is {mode:o}");

    let mut host = Host::new();
    host.args(["--socket-mode", "999"]);
    let (status, log) = host.start_expecting_failure().await;
    assert!(!status.success(), "an invalid mode is refused; log:\n{log}");
    assert!(log.contains("999"), "{log}");
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_removes_the_socket() {
    let mut host = Host::start_default().await;
    let status = host.terminate().await;
    assert!(status.success(), "SIGTERM ends the host with exit code 0, got {status}; log:\n{}", host.log());
    assert!(!host.socket.exists(), "the socket is removed on SIGTERM");
    let log = host.log();
    assert!(log.contains("SIGTERM"), "the shutdown is logged; log:\n{log}");

    // SIGINT too.
    host.start().await;
    host.signal(nix::sys::signal::Signal::SIGINT);
    let status = host.wait_exit(EXIT_TIMEOUT).await.expect("exit after SIGINT");
    assert!(status.success(), "SIGINT ends the host with exit code 0, got {status}");
    assert!(!host.socket.exists(), "the socket is removed on SIGINT");
}

#[tokio::test]
async fn volumes_survive_a_restart() {
    let mut host = Host::start_default().await;
    let mut c = host.controller().await;
    let volume = expect_ok(c.create_volume(create_req("durable", 8 * MIB)).await, "CreateVolume").volume.unwrap();
    let snapshot = expect_ok(
        c.create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: "durable-snap".into(),
            ..Default::default()
        })
        .await,
        "CreateSnapshot",
    )
    .snapshot
    .unwrap();
    drop(c);

    host.restart().await;
    let mut c = host.controller().await;
    let listed = expect_ok(c.list_volumes(csi::ListVolumesRequest::default()).await, "ListVolumes after restart");
    let volumes: Vec<_> = listed.entries.into_iter().map(|e| e.volume.unwrap()).collect();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].volume_id, volume.volume_id);
    assert_eq!(volumes[0].capacity_bytes, 8 * MIB);
    let snapshots =
        expect_ok(c.list_snapshots(csi::ListSnapshotsRequest::default()).await, "ListSnapshots after restart");
    let ids: Vec<_> = snapshots.entries.iter().map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone()).collect();
    assert_eq!(ids, vec![snapshot.snapshot_id]);
    // Creating it again after the restart is still idempotent.
    let again =
        expect_ok(c.create_volume(create_req("durable", 8 * MIB)).await, "CreateVolume after restart").volume.unwrap();
    assert_eq!(again.volume_id, volume.volume_id);
}

#[tokio::test]
async fn yaml_config_works_like_toml() {
    let mut host = Host::new();
    let vols = host.path().join("yaml-vols");
    let yaml = format!(
        "backends:\n  - name: yamlfs\n    module: builtin:loopfile\n    default: true\n    grants:\n      directories:\n        - host: {:?}\n          guest: /data\n    limits:\n      deadline_ms: 30000\n    settings:\n      directory: /data\n",
        vols.display().to_string()
    );
    host.write_config("backends.yaml", &yaml);
    host.start().await;

    let info = expect_ok(host.identity().await.get_plugin_info(csi::GetPluginInfoRequest {}).await, "GetPluginInfo");
    assert!(info.manifest.contains_key("backend.yamlfs"), "{:?}", info.manifest);
    let mut c = host.controller().await;
    let volume = expect_ok(c.create_volume(create_req("from-yaml", 4 * MIB)).await, "CreateVolume").volume.unwrap();
    let local = local_id(&volume.volume_id, "yamlfs");
    let image = backing_file(&vols, local);
    assert_eq!(std::fs::metadata(image).unwrap().len(), (4 * MIB) as u64);

    // The same strictness as TOML: an unknown key stops start-up.
    let mut bad = Host::new();
    bad.write_config("bad.yaml", "backends:\n  - name: yamlfs\n    module: builtin:loopfile\n    grant: {}\n");
    let (status, log) = bad.start_expecting_failure().await;
    assert!(!status.success());
    assert!(log.contains("grant"), "{log}");

    // YAML and TOML give the same result for the same config.
    let mut toml_host = Host::new();
    let toml_text = toml_host.loopfile_toml("yamlfs", "yaml-vols", true);
    toml_host.write_config("backends.toml", &toml_text);
    toml_host.start().await;
    let toml_volume = expect_ok(
        toml_host.controller().await.create_volume(create_req("from-yaml", 4 * MIB)).await,
        "CreateVolume (TOML)",
    )
    .volume
    .unwrap();
    assert_eq!(toml_volume.volume_id, volume.volume_id, "the same name gives the same id under either format");
    assert_eq!(toml_volume.capacity_bytes, volume.capacity_bytes);
}

/// SIGTERM drains: a call in flight gets its real answer, an idle client connection does not
/// hold the process up, and the process then exits 0 and removes its socket.
#[tokio::test]
async fn sigterm_lets_in_flight_calls_finish() {
    let mut host = Host::new();
    let hostile = host.write_hostile();
    let text = format!(
        "{}\n[[backends]]\nname = \"slow\"\nmodule = {}\ngrants = {{ http = [{HOSTILE_HTTP}] }}\nlimits = {{ deadline_ms = 2000 }}\n",
        host.loopfile_toml("local", "vols", true),
        toml_str(&hostile.display().to_string()),
    );
    host.write_config("slow.toml", &text);
    host.rust_log("info,wasmcsi=debug");
    host.start().await;

    // An idle, established connection (as a CSI sidecar keeps one).
    let idle = host.channel().await;
    expect_ok(
        csi::identity_client::IdentityClient::new(idle.clone()).probe(csi::ProbeRequest {}).await,
        "Probe on the idle channel",
    );

    // A call that takes the whole 2 s deadline.
    let mut c = host.controller().await;
    let call = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result =
            c.create_volume(create_req_with("slow-call", 4 * MIB, &[("backend", "slow"), ("misbehave", "loop")])).await;
        (result, started.elapsed())
    });
    assert!(
        host.log_eventually_contains("slow-call", std::time::Duration::from_secs(10)).await,
        "the slow call reached the host; log:\n{}",
        host.log()
    );
    host.signal(nix::sys::signal::Signal::SIGTERM);

    let (result, took) = call.await.unwrap();
    let status = result.expect_err("the looping call cannot succeed");
    assert_eq!(
        status.code(),
        tonic::Code::DeadlineExceeded,
        "the in-flight call was answered by the backend's deadline, not cut off: {:?}",
        status.message()
    );
    assert!(took >= std::time::Duration::from_millis(1800), "the call ended early: {took:?}");
    let status = host.wait_exit(std::time::Duration::from_secs(15)).await.unwrap_or_else(|| {
        panic!("the host did not exit after SIGTERM with an idle client connected; log:\n{}", host.log())
    });
    assert!(status.success(), "exit after draining: {status}; log:\n{}", host.log());
    assert!(!host.socket.exists(), "the socket is removed after draining");
    drop(idle);
}

/// A `validate-settings` that never returns fails start-up at the instance's deadline,
/// naming the instance, instead of hanging the host.
#[tokio::test]
async fn a_hanging_validate_settings_fails_startup_naming_the_instance() {
    let started = std::time::Instant::now();
    expect_config_error(
        "hang.toml",
        |host| {
            format!(
                "[[backends]]\nname = \"hangs\"\nmodule = {}\ngrants = {{ http = [{HOSTILE_HTTP}] }}\nlimits = {{ deadline_ms = 1000 }}\nsettings = {{ validate = \"sleep\" }}\n",
                toml_str(&host.write_hostile().display().to_string()),
            )
        },
        &["hangs", "did not answer within its 1000 ms deadline"],
    )
    .await;
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(30), "start-up took {took:?} to fail");
}

/// A module path that is not a regular file, or is far too large, is refused before it is
/// read.
#[tokio::test]
async fn module_files_must_be_regular_files_of_bounded_size() {
    expect_config_error(
        "zero.toml",
        |_| "[[backends]]\nname = \"zero\"\nmodule = \"/dev/zero\"\n".to_string(),
        &["zero", "/dev/zero", "not a regular file"],
    )
    .await;
    expect_config_error(
        "sparse.toml",
        |host| {
            let path = host.path().join("sparse.wasm");
            std::fs::File::create(&path).unwrap().set_len(3 << 30).unwrap();
            format!("[[backends]]\nname = \"sparse\"\nmodule = {}\n", toml_str(&path.display().to_string()))
        },
        &["sparse", "3221225472 bytes", "more than the 256 MiB"],
    )
    .await;
}
