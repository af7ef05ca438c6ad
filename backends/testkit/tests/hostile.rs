//! Every backend call is bounded, whatever the guest does: the hostile component sleeps in
//! WASI, hangs `validate-settings`, makes `wasi:http` objects in host memory, spams the log
//! and answers enormous errors, and each is stopped with the right error while the
//! instance keeps serving.

use std::time::{Duration, Instant};

use backend_testkit::{
    BackendError, Builder, CallError, CreateVolumeRequest, Exhausted, LimitsConfig, Secrets, TestHost, Volume,
    volume_request,
};

const MIB: u64 = 1 << 20;
/// Nothing listens there; the grant only makes `wasi:http` linked for the component.
const HTTP_GRANT: &str = "http://127.0.0.1:9";

fn hostile(limits: LimitsConfig) -> Builder {
    TestHost::builder(backend_bundle::HOSTILE).http_origin(HTTP_GRANT).limits(limits)
}

fn deadline(ms: u64) -> LimitsConfig {
    LimitsConfig { deadline_ms: ms, ..LimitsConfig::default() }
}

fn act(name: &str, act: &str) -> CreateVolumeRequest {
    let mut request = volume_request(name, MIB, 0);
    request.parameters.push(("misbehave".into(), act.into()));
    request
}

fn misbehave(kit: &TestHost, what: &str) -> Result<Volume, CallError> {
    kit.create_volume(act("h", what))
}

fn assert_timeout(result: Result<Volume, CallError>, deadline_ms: u64) {
    match result {
        Err(CallError::Timeout { backend, deadline_ms: ms }) => {
            assert_eq!((backend.as_str(), ms), ("test", deadline_ms))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

fn assert_still_serves(kit: &TestHost) {
    let volume = kit.create_volume(volume_request("calm", MIB, 0)).expect("a well-behaved call afterwards");
    assert_eq!(volume.context, [("note".to_string(), "well behaved".to_string())]);
}

#[test]
fn a_guest_sleeping_in_wasi_gets_its_deadline() {
    let kit = hostile(deadline(300)).build().unwrap();
    for what in ["sleep", "sleep-forever"] {
        let started = Instant::now();
        assert_timeout(misbehave(&kit, what), 300);
        let took = started.elapsed();
        // The sleep is 10 s (or forever): only the deadline can have ended the call.
        assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(5), "{what}: {took:?}");
        assert_still_serves(&kit);
    }
}

#[test]
fn timed_out_calls_give_their_slots_back() {
    let limits = LimitsConfig { deadline_ms: 300, concurrency: 2, ..LimitsConfig::default() };
    let kit = hostile(limits).build().unwrap();
    let backend = kit.backend();
    for round in 0..3 {
        // Both slots hang in a sleep until their deadline; then both serve again.
        let (a, b) = kit.block_on(async {
            tokio::join!(
                backend.create_volume(Secrets::default(), (), act("a", "sleep-forever")),
                backend.create_volume(Secrets::default(), (), act("b", "sleep-forever")),
            )
        });
        assert_timeout(a, 300);
        assert_timeout(b, 300);
        let started = Instant::now();
        let (a, b) = kit.block_on(async {
            tokio::join!(
                backend.create_volume(Secrets::default(), (), volume_request("a", MIB, 0)),
                backend.create_volume(Secrets::default(), (), volume_request("b", MIB, 0)),
            )
        });
        a.unwrap_or_else(|e| panic!("round {round}: slot a: {e}"));
        b.unwrap_or_else(|e| panic!("round {round}: slot b: {e}"));
        assert!(started.elapsed() < Duration::from_secs(5), "round {round}: the slots were still held");
    }
}

#[test]
fn a_hanging_validate_settings_fails_the_load_in_bounded_time() {
    let started = Instant::now();
    let error = hostile(deadline(300)).setting("validate", "sleep").build().unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.instance, "test");
    assert!(error.reason.contains("did not answer within its 300 ms deadline"), "{error}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn wasi_http_is_linked_only_with_an_http_grant() {
    let error = TestHost::builder(backend_bundle::HOSTILE).build().unwrap_err();
    assert_eq!(error.instance, "test");
    assert!(error.reason.contains("wasi:http/"), "{error}");
    assert!(error.reason.contains("no http grant"), "{error}");
    // A component without wasi:http loads without the grant.
    TestHost::builder(backend_bundle::LOOPFILE).granted_dir("/data").setting("directory", "/data").build().unwrap();
}

#[test]
fn host_objects_made_by_the_guest_count_against_the_host_memory_budget() {
    let limits = LimitsConfig { host_memory_mib: 16, deadline_ms: 30_000, ..LimitsConfig::default() };
    let kit = hostile(limits).build().unwrap();
    for _ in 0..3 {
        match misbehave(&kit, "http-fields") {
            Err(CallError::OutOfMemory { backend, limit }) => {
                assert_eq!((backend.as_str(), limit), ("test", Exhausted::HostMemory))
            }
            other => panic!("expected the host memory budget to stop the call, got {other:?}"),
        }
        assert_still_serves(&kit);
    }
    let message = misbehave(&kit, "http-fields").unwrap_err().to_string();
    assert_eq!(message, "backend test exceeded its host memory limit");
}

#[test]
fn log_spam_is_stopped_by_the_deadline() {
    let kit = hostile(deadline(500)).build().unwrap();
    assert_timeout(misbehave(&kit, "log-spam"), 500);
    assert_still_serves(&kit);
}

#[test]
fn huge_error_messages_are_cut_and_escaped() {
    let kit = hostile(LimitsConfig::default()).build().unwrap();
    match misbehave(&kit, "huge-error") {
        Err(CallError::Backend { error: BackendError::Internal(message), .. }) => {
            assert!(message.len() < 1200, "{} bytes", message.len());
            assert!(message.starts_with("\\u{1b}[2J\\nforged log linexxxx"), "{message:?}");
            assert!(!message.chars().any(char::is_control), "{message:?}");
            assert!(message.ends_with("more bytes)"), "{message:?}");
        }
        other => panic!("expected the backend's internal error, got {other:?}"),
    }
}
