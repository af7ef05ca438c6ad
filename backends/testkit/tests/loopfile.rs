//! The loopfile backend, run as a component in wasmtime through the real host runtime.
//!
//! Every test loads the bundled component with a fresh temporary directory granted at
//! `/data` and checks what its exports answer and what it leaves on disk. The last group
//! uses the HOSTILE component to check the testkit's own sandbox plumbing.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backend_testkit::{
    AccessMode, AccessType, BackendError, Builder, CallError, ContentSource, CreateVolumeRequest, Device, EPOCH_TICK,
    ExecCall, Exhausted, Features, LimitsConfig, TestHost, Volume, backend_error, fail, volume_request,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const GRANULE: u64 = 4 * KIB;

// ---------------------------------------------------------------------------------------
// Helpers

/// Loopfile with a fresh directory granted at `/data` (its default `directory`).
fn kit() -> Builder {
    TestHost::builder(backend_bundle::LOOPFILE).granted_dir("/data")
}

fn loopfile() -> TestHost {
    kit().build().expect("loopfile loads with its default settings")
}

fn create(kit: &TestHost, name: &str, size: u64) -> Volume {
    kit.create_volume(volume_request(name, size, 0)).expect("create volume")
}

fn create_from(kit: &TestHost, name: &str, size: u64, source: ContentSource) -> Result<Volume, CallError> {
    let mut request = volume_request(name, size, 0);
    request.content_source = Some(source);
    kit.create_volume(request)
}

fn with_params(mut request: CreateVolumeRequest, parameters: &[(&str, &str)]) -> CreateVolumeRequest {
    request.parameters = parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    request
}

fn volume_dir(kit: &TestHost, id: &str) -> PathBuf {
    kit.host_dir("/data").join("volumes").join(id)
}

fn volume_image(kit: &TestHost, id: &str) -> PathBuf {
    volume_dir(kit, id).join("disk.img")
}

fn snapshot_image(kit: &TestHost, id: &str) -> PathBuf {
    kit.host_dir("/data").join("snapshots").join(id).join("disk.img")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).len()
}

/// Bytes the filesystem really allocated for a file.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    fs::File::open(path).unwrap().read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// Free bytes of the filesystem holding `path`, as the host measures them.
fn free_bytes(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

fn ids(volumes: &[Volume]) -> Vec<String> {
    volumes.iter().map(|v| v.id.clone()).collect()
}

/// The host's WIT bindings derive no `PartialEq` for records and variants: compare their
/// full `Debug` rendering instead (every field, so it is structural equality).
macro_rules! assert_same {
    ($left:expr, $right:expr $(,)?) => {
        assert_eq!(format!("{:#?}", $left), format!("{:#?}", $right))
    };
}

/// Asserts a call failed with the backend's own error of the given kind.
macro_rules! assert_err {
    ($result:expr, $kind:ident) => {
        match backend_error($result) {
            BackendError::$kind(_) => {}
            other => panic!("expected {}, got {other:?}", stringify!($kind)),
        }
    };
}

// ---------------------------------------------------------------------------------------
// info and validate-settings

#[test]
fn info_declares_features_and_access_modes() {
    let kit = loopfile();
    let info = kit.info();
    assert_eq!(info.name, "loopfile");
    assert_eq!(
        info.features,
        Features::LIST_VOLUMES
            | Features::GET_VOLUME
            | Features::GET_CAPACITY
            | Features::SNAPSHOTS
            | Features::LIST_SNAPSHOTS
            | Features::CLONE_VOLUMES
            | Features::EXPAND_VOLUMES
            | Features::EXPAND_ONLINE
            | Features::BLOCK_VOLUMES
            | Features::NODE_LOCAL
            | Features::NODE_EXPANSION
    );
    assert_eq!(
        info.access_modes,
        [
            AccessMode::SingleNodeWriter,
            AccessMode::SingleNodeReaderOnly,
            AccessMode::SingleNodeSingleWriter,
            AccessMode::SingleNodeMultiWriter,
        ]
    );
    assert!(info.topology_keys.is_empty());
    assert_eq!(info.default_fs_type, "ext4");
}

#[test]
fn default_settings_are_accepted_and_lay_out_the_directory() {
    let kit = loopfile();
    assert_eq!(dir_names(kit.host_dir("/data")), ["snapshots", "trash", "volumes"]);
}

#[test]
fn an_unknown_setting_fails_the_load() {
    let err = kit().setting("directroy", "/data").build().unwrap_err();
    assert!(err.reason.contains("settings rejected"), "{err}");
    assert!(err.reason.contains("unknown setting \"directroy\""), "{err}");
}

#[test]
fn a_bad_number_fails_the_load() {
    for (key, value) in [("max-volume-size", "10Gi"), ("reserve", "-1"), ("max-volume-size", "0")] {
        let err = kit().setting(key, value).build().unwrap_err();
        assert!(err.reason.contains("settings rejected"), "{key}={value}: {err}");
        assert!(err.reason.contains(&format!("\"{key}\"")), "{key}={value}: {err}");
    }
}

#[test]
fn a_directory_outside_the_grants_fails_the_load() {
    let err = kit().setting("directory", "/elsewhere").build().unwrap_err();
    assert!(err.reason.contains("/elsewhere"), "{err}");
}

// ---------------------------------------------------------------------------------------
// create-volume: capacity

#[test]
fn create_without_a_range_gets_the_default_size_as_a_sparse_file() {
    let kit = loopfile();
    let volume = kit.create_volume(volume_request("pvc-1", 0, 0)).unwrap();
    assert!(volume.id.starts_with("v-"), "{}", volume.id);
    assert_eq!(volume.capacity_bytes, GIB);
    assert_eq!(volume.context, [("loopfile/name".to_string(), "pvc-1".to_string())]);
    assert!(volume.content_source.is_none());

    let image = volume_image(&kit, &volume.id);
    assert_eq!(file_len(&image), GIB);
    assert!(allocated(&image) < MIB, "image is sparse: {} bytes allocated", allocated(&image));

    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(volume_dir(&kit, &volume.id).join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["name"], "pvc-1");
    assert_eq!(meta["capacity_bytes"], GIB);
    assert_same!(kit.get_volume(&volume.id).unwrap(), volume);
}

#[test]
fn create_rounds_the_size_up_to_the_granularity() {
    let kit = loopfile();
    for (name, required, expected) in [
        ("one-byte", 1, GRANULE),
        ("one-granule", GRANULE, GRANULE),
        ("just-over", GRANULE + 1, 2 * GRANULE),
        ("odd", 10 * MIB - 7, 10 * MIB),
    ] {
        let volume = create(&kit, name, required);
        assert_eq!(volume.capacity_bytes, expected, "{name}");
        assert_eq!(file_len(&volume_image(&kit, &volume.id)), expected, "{name}");
    }
}

#[test]
fn a_limit_below_the_required_size_is_out_of_range() {
    let kit = loopfile();
    assert_err!(kit.create_volume(volume_request("a", 2 * MIB, MIB)), OutOfRange);
    // No multiple of the granule between the bounds.
    assert_err!(kit.create_volume(volume_request("b", GRANULE + 1, GRANULE + 100)), OutOfRange);
    assert!(kit.list_volumes(0, "").unwrap().entries.is_empty());
}

#[test]
fn above_the_max_volume_size_is_out_of_range() {
    let kit = kit().setting("max-volume-size", &(8 * MIB).to_string()).build().unwrap();
    assert_err!(kit.create_volume(volume_request("big", 8 * MIB + 1, 0)), OutOfRange);
    assert_eq!(create(&kit, "max", 8 * MIB).capacity_bytes, 8 * MIB);
    // With no size asked for, the default shrinks to the maximum.
    assert_eq!(kit.create_volume(volume_request("default", 0, 0)).unwrap().capacity_bytes, 8 * MIB);
}

#[test]
fn more_than_the_free_space_less_the_reserve_is_resource_exhausted() {
    // Leave 1 GiB for volumes: far from both sizes below, whatever else the disk is doing.
    let free = free_bytes(&std::env::temp_dir());
    assert!(free > 2 * GIB, "the test needs some free space ({free} bytes)");
    let kit = kit().setting("reserve", &(free - GIB).to_string()).build().unwrap();
    assert_err!(kit.create_volume(volume_request("too-big", 2 * GIB, 0)), ResourceExhausted);
    assert!(dir_names(&kit.host_dir("/data").join("volumes")).is_empty());
    assert_eq!(create(&kit, "fits", 16 * MIB).capacity_bytes, 16 * MIB);
}

// ---------------------------------------------------------------------------------------
// create-volume: idempotency and arguments

#[test]
fn create_is_idempotent_by_name() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", 10 * MIB);
    assert_same!(create(&kit, "pvc-1", 10 * MIB), volume);
    // Any range the existing size satisfies is the same volume.
    assert_same!(kit.create_volume(volume_request("pvc-1", MIB, 10 * MIB)).unwrap(), volume);
    assert_same!(kit.list_volumes(0, "").unwrap().entries, [volume]);
}

#[test]
fn create_with_an_incompatible_size_is_already_exists() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", 10 * MIB);
    assert_err!(kit.create_volume(volume_request("pvc-1", 20 * MIB, 0)), AlreadyExists);
    assert_err!(kit.create_volume(volume_request("pvc-1", 0, MIB)), AlreadyExists);
    assert_eq!(file_len(&volume_image(&kit, &volume.id)), 10 * MIB);
    assert_same!(kit.get_volume(&volume.id).unwrap(), volume);
}

#[test]
fn an_unsupported_access_mode_is_invalid_argument() {
    let kit = loopfile();
    for mode in [AccessMode::MultiNodeMultiWriter, AccessMode::MultiNodeReaderOnly, AccessMode::MultiNodeSingleWriter] {
        let mut request = volume_request("shared", MIB, 0);
        request.capabilities[0].access_mode = mode;
        assert_err!(kit.create_volume(request), InvalidArgument);
    }
    assert!(kit.list_volumes(0, "").unwrap().entries.is_empty());
}

#[test]
fn block_access_is_supported() {
    let kit = loopfile();
    let mut request = volume_request("raw", MIB, 0);
    request.capabilities[0].access_type = AccessType::Block;
    assert_eq!(kit.create_volume(request).unwrap().capacity_bytes, MIB);
}

#[test]
fn an_unknown_parameter_is_invalid_argument() {
    let kit = loopfile();
    assert_err!(kit.create_volume(with_params(volume_request("a", MIB, 0), &[("type", "fast")])), InvalidArgument);
    let mut mutable = volume_request("a", MIB, 0);
    mutable.mutable_parameters = vec![("iops".into(), "100".into())];
    assert_err!(kit.create_volume(mutable), InvalidArgument);
    assert!(kit.list_volumes(0, "").unwrap().entries.is_empty());
}

#[test]
fn find_volume_answers_by_name() {
    let kit = loopfile();
    assert!(kit.find_volume("pvc-1").unwrap().is_none());
    let volume = create(&kit, "pvc-1", MIB);
    assert_same!(kit.find_volume("pvc-1").unwrap(), Some(volume.clone()));
    assert!(kit.find_volume("pvc-2").unwrap().is_none());
    kit.delete_volume(&volume.id).unwrap();
    assert!(kit.find_volume("pvc-1").unwrap().is_none());
}

// ---------------------------------------------------------------------------------------
// Crash consistency

/// Asserts `name` is not a volume, then creates it again (at another size: the half-made
/// one never existed) and checks the result is whole and the garbage gone.
fn assert_retried_create_starts_over(kit: &TestHost, name: &str, id: &str) {
    assert!(kit.list_volumes(0, "").unwrap().entries.is_empty());
    assert_err!(kit.get_volume(id), NotFound);
    assert_err!(kit.node_device(id, vec![], vec![]), NotFound);
    assert!(kit.find_volume(name).unwrap().is_none());

    let volume = create(kit, name, 2 * MIB);
    assert_eq!(volume.id, id);
    assert_eq!(volume.capacity_bytes, 2 * MIB);
    let image = volume_image(kit, id);
    assert_eq!(file_len(&image), 2 * MIB);
    assert_eq!(read_at(&image, 0, 16), [0; 16], "the garbage is gone");
    assert!(volume_dir(kit, id).join("meta.json").exists());
    assert_eq!(dir_names(&kit.host_dir("/data").join("volumes")), [id]);
    assert_same!(kit.list_volumes(0, "").unwrap().entries, [volume]);
}

#[test]
fn a_retried_create_starts_over_after_a_crash_before_the_final_rename() {
    let kit = loopfile();
    // The id the name maps to, and the metadata loopfile writes for it.
    let id = create(&kit, "pvc-crash", MIB).id;
    let meta = fs::read(volume_dir(&kit, &id).join("meta.json")).unwrap();
    kit.delete_volume(&id).unwrap();
    // What a crash leaves while the volume is built in its staging directory (layout.rs).
    let staging = kit.host_dir("/data").join("volumes").join(format!(".new-{id}"));
    fs::create_dir(&staging).unwrap();
    fs::write(staging.join("disk.img"), b"partial garbage").unwrap();
    fs::write(staging.join("meta.json"), meta).unwrap();

    assert_retried_create_starts_over(&kit, "pvc-crash", &id);
}

#[test]
fn a_retried_create_sets_aside_a_half_made_directory_at_the_final_name() {
    let kit = loopfile();
    let id = create(&kit, "pvc-crash", MIB).id;
    // An image but no metadata at the final name (an interrupted create of loopfile 0.1.0).
    let dir = volume_dir(&kit, &id);
    fs::remove_file(dir.join("meta.json")).unwrap();
    fs::write(dir.join("disk.img"), b"partial garbage").unwrap();
    fs::write(dir.join("meta.json.tmp"), b"{\"name\": \"pvc-cr").unwrap();

    assert_retried_create_starts_over(&kit, "pvc-crash", &id);
}

#[test]
fn a_half_made_volume_is_not_listed() {
    let kit = loopfile();
    let volume = create(&kit, "complete", MIB);
    for half_made in ["v-0123456789abcdef0123456789abcdef", ".new-v-fedcba9876543210fedcba9876543210"] {
        let dir = volume_dir(&kit, half_made);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("disk.img"), b"").unwrap();
    }
    assert_same!(kit.list_volumes(0, "").unwrap().entries, [&volume]);
    let page = kit.list_volumes(1, "").unwrap();
    assert_same!(page.entries, [&volume]);
    assert_eq!(page.next_token, "", "nothing else to list");
    assert_err!(kit.get_volume("v-0123456789abcdef0123456789abcdef"), NotFound);
}

#[test]
fn leftover_trash_is_emptied_by_a_later_create_or_delete() {
    let kit = loopfile();
    let trash = kit.host_dir("/data").join("trash");
    let plant = || {
        fs::create_dir_all(trash.join("v-0123456789abcdef0123456789abcdef")).unwrap();
        fs::write(trash.join("v-0123456789abcdef0123456789abcdef/disk.img"), vec![7; 64 * KIB as usize]).unwrap();
        fs::write(trash.join("stray"), b"x").unwrap();
    };
    plant();
    create(&kit, "pvc-1", MIB);
    assert!(dir_names(&trash).is_empty(), "{:?}", dir_names(&trash));
    plant();
    kit.delete_volume("v-ffffffffffffffffffffffffffffffff").unwrap();
    assert!(dir_names(&trash).is_empty(), "{:?}", dir_names(&trash));
}

// ---------------------------------------------------------------------------------------
// delete-volume, get-volume, malformed ids

#[test]
fn delete_is_idempotent_and_get_is_not_found_after() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    kit.delete_volume(&volume.id).unwrap();
    assert_err!(kit.get_volume(&volume.id), NotFound);
    assert!(!volume_dir(&kit, &volume.id).exists());
    assert!(dir_names(&kit.host_dir("/data").join("trash")).is_empty());
    kit.delete_volume(&volume.id).unwrap();
    assert!(kit.list_volumes(0, "").unwrap().entries.is_empty());
}

#[test]
fn malformed_ids_are_not_found_and_touch_nothing_outside() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    let snapshot = kit.create_snapshot(&volume.id, "snap", vec![]).unwrap();
    // A complete-looking volume outside the granted directory, next to it on the host.
    let victim = kit.host_dir("/data").parent().unwrap().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::copy(volume_dir(&kit, &volume.id).join("meta.json"), victim.join("meta.json")).unwrap();
    fs::write(victim.join("disk.img"), b"precious").unwrap();

    let inside = format!("../snapshots/{}", snapshot.id);
    let wrong_prefix = volume.id.replacen("v-", "s-", 1);
    for id in
        ["../../etc", "", "../../victim", "../../../victim", &inside, &wrong_prefix, "v-", &volume.id.to_uppercase()]
    {
        assert_err!(kit.get_volume(id), NotFound);
        assert_err!(kit.node_device(id, vec![], vec![]), NotFound);
        assert_err!(kit.expand_volume(id, 2 * MIB, 0), NotFound);
        assert_err!(kit.create_snapshot(id, &format!("of {id}"), vec![]), NotFound);
        kit.delete_volume(id).unwrap_or_else(|e| panic!("delete {id:?}: {e}"));
    }
    assert_eq!(fs::read(victim.join("disk.img")).unwrap(), b"precious");
    assert!(victim.join("meta.json").exists());
    assert_same!(kit.list_snapshots("", "", 0, "").unwrap().entries, [snapshot]);
    assert_same!(kit.list_volumes(0, "").unwrap().entries, [volume]);
}

// ---------------------------------------------------------------------------------------
// list-volumes

fn seven_volumes(kit: &TestHost) -> Vec<String> {
    let mut ids: Vec<String> = (0..7).map(|i| create(kit, &format!("pvc-{i}"), MIB).id).collect();
    ids.sort();
    ids
}

#[test]
fn list_pages_visit_every_volume_once_in_order() {
    let kit = loopfile();
    let all = seven_volumes(&kit);
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = kit.list_volumes(3, &token).unwrap();
        sizes.push(page.entries.len());
        seen.extend(ids(&page.entries));
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, all);
}

#[test]
fn list_with_a_token_it_did_not_issue_is_aborted() {
    let kit = loopfile();
    seven_volumes(&kit);
    for token in ["bogus", "s-0123456789abcdef0123456789abcdef", "../v-0123456789abcdef0123456789abcdef"] {
        assert_err!(kit.list_volumes(3, token), Aborted);
    }
}

#[test]
fn list_with_max_zero_returns_everything() {
    let kit = loopfile();
    let all = seven_volumes(&kit);
    let page = kit.list_volumes(0, "").unwrap();
    assert_eq!(ids(&page.entries), all);
    assert_eq!(page.next_token, "");
}

// ---------------------------------------------------------------------------------------
// get-capacity

#[test]
fn capacity_is_the_free_space_of_the_granted_filesystem_less_the_reserve() {
    let free = free_bytes(&std::env::temp_dir());
    let reserve = free / 2;
    let kit = kit().setting("reserve", &reserve.to_string()).build().unwrap();
    let before = free_bytes(kit.host_dir("/data"));
    let capacity = kit.get_capacity(volume_request("x", 0, 0).capabilities, vec![], None).unwrap();
    let after = free_bytes(kit.host_dir("/data"));
    // Other processes write to this filesystem meanwhile: allow them 64 MiB.
    let slack = 64 * MIB;
    let (low, high) = (before.min(after) - reserve - slack, before.max(after) - reserve + slack);
    assert!(
        (low..=high).contains(&capacity.available_bytes),
        "available {} not within free less reserve [{low}, {high}]",
        capacity.available_bytes
    );
    assert_eq!(capacity.maximum_volume_size, capacity.available_bytes / GRANULE * GRANULE);
    assert_eq!(capacity.minimum_volume_size, GRANULE);
}

#[test]
fn capacity_is_zero_when_the_reserve_exceeds_the_free_space() {
    let kit = kit().setting("reserve", &u64::MAX.to_string()).build().unwrap();
    let capacity = kit.get_capacity(vec![], vec![], None).unwrap();
    assert_eq!((capacity.available_bytes, capacity.maximum_volume_size), (0, 0));
}

// ---------------------------------------------------------------------------------------
// expand-volume

#[test]
fn expand_grows_the_image_and_asks_for_node_expansion() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    let image = volume_image(&kit, &volume.id);
    write_at(&image, 1000, b"keep me");
    let expansion = kit.expand_volume(&volume.id, 3 * MIB + 1, 0).unwrap();
    assert_eq!(expansion.capacity_bytes, 3 * MIB + GRANULE);
    assert!(expansion.node_expansion_required);
    assert_eq!(file_len(&image), 3 * MIB + GRANULE);
    assert_eq!(read_at(&image, 1000, 7), b"keep me");
    assert_eq!(kit.get_volume(&volume.id).unwrap().capacity_bytes, 3 * MIB + GRANULE);
}

#[test]
fn expand_is_idempotent_and_never_shrinks() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    let grown = kit.expand_volume(&volume.id, 4 * MIB, 0).unwrap();
    assert_same!(kit.expand_volume(&volume.id, 4 * MIB, 0).unwrap(), grown);
    let smaller = kit.expand_volume(&volume.id, 2 * MIB, 0).unwrap();
    assert_eq!(smaller.capacity_bytes, 4 * MIB);
    assert_eq!(file_len(&volume_image(&kit, &volume.id)), 4 * MIB);
    assert_eq!(kit.get_volume(&volume.id).unwrap().capacity_bytes, 4 * MIB);
}

#[test]
fn expand_with_a_limit_below_the_current_size_is_out_of_range() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", 4 * MIB);
    assert_err!(kit.expand_volume(&volume.id, MIB, 2 * MIB), OutOfRange);
    assert_eq!(file_len(&volume_image(&kit, &volume.id)), 4 * MIB);
}

#[test]
fn expand_past_the_max_volume_size_is_out_of_range() {
    let kit = kit().setting("max-volume-size", &(8 * MIB).to_string()).build().unwrap();
    let volume = create(&kit, "pvc-1", 4 * MIB);
    assert_err!(kit.expand_volume(&volume.id, 8 * MIB + 1, 0), OutOfRange);
    assert_eq!(kit.expand_volume(&volume.id, 8 * MIB, 0).unwrap().capacity_bytes, 8 * MIB);
}

#[test]
fn expand_an_unknown_volume_is_not_found() {
    let kit = loopfile();
    assert_err!(kit.expand_volume("v-0123456789abcdef0123456789abcdef", 2 * MIB, 0), NotFound);
    let volume = create(&kit, "pvc-1", MIB);
    kit.delete_volume(&volume.id).unwrap();
    assert_err!(kit.expand_volume(&volume.id, 2 * MIB, 0), NotFound);
}

// ---------------------------------------------------------------------------------------
// Snapshots

const PATTERN: &[u8] = b"loopfile snapshot pattern \x00\x01\x02\xff";
const OFFSET: u64 = 3 * MIB + 12345;

/// A 4 MiB volume with [`PATTERN`] written at [`OFFSET`] of its image.
fn volume_with_pattern(kit: &TestHost, name: &str) -> Volume {
    let volume = create(kit, name, 4 * MIB);
    write_at(&volume_image(kit, &volume.id), OFFSET, PATTERN);
    volume
}

#[test]
fn a_snapshot_copies_the_volume_content() {
    let kit = loopfile();
    let volume = volume_with_pattern(&kit, "pvc-1");
    let snapshot = kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    assert!(snapshot.id.starts_with("s-"), "{}", snapshot.id);
    assert_eq!(snapshot.source_volume_id, volume.id);
    assert_eq!(snapshot.size_bytes, 4 * MIB);
    assert!(snapshot.ready_to_use);
    assert!(snapshot.creation_time > 1_600_000_000);

    let image = snapshot_image(&kit, &snapshot.id);
    assert_eq!(file_len(&image), 4 * MIB);
    assert_eq!(read_at(&image, OFFSET, PATTERN.len()), PATTERN);
    // An independent copy: later writes to the volume do not reach it.
    write_at(&volume_image(&kit, &volume.id), OFFSET, b"overwritten");
    assert_eq!(read_at(&image, OFFSET, PATTERN.len()), PATTERN);
}

#[test]
fn create_snapshot_is_idempotent_by_name() {
    let kit = loopfile();
    let volume = volume_with_pattern(&kit, "pvc-1");
    let other = create(&kit, "pvc-2", MIB);
    let snapshot = kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    assert_same!(kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap(), snapshot);
    assert_err!(kit.create_snapshot(&other.id, "snap-1", vec![]), AlreadyExists);
    assert_same!(kit.list_snapshots("", "", 0, "").unwrap().entries, [snapshot]);
}

#[test]
fn find_snapshot_answers_by_name() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    assert!(kit.find_snapshot("snap-1").unwrap().is_none());
    let snapshot = kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    assert_same!(kit.find_snapshot("snap-1").unwrap(), Some(snapshot.clone()));
    kit.delete_snapshot(&snapshot.id).unwrap();
    assert!(kit.find_snapshot("snap-1").unwrap().is_none());
}

#[test]
fn create_snapshot_of_a_missing_volume_is_not_found() {
    let kit = loopfile();
    assert_err!(kit.create_snapshot("v-0123456789abcdef0123456789abcdef", "snap", vec![]), NotFound);
    assert!(dir_names(&kit.host_dir("/data").join("snapshots")).is_empty());
}

#[test]
fn list_snapshots_filters_and_pages() {
    let kit = loopfile();
    let a = create(&kit, "a", MIB);
    let b = create(&kit, "b", MIB);
    let mut all: Vec<_> = (0..5)
        .map(|i| kit.create_snapshot(if i % 2 == 0 { &a.id } else { &b.id }, &format!("snap-{i}"), vec![]).unwrap())
        .collect();
    all.sort_by(|x, y| x.id.cmp(&y.id));
    assert_same!(kit.list_snapshots("", "", 0, "").unwrap().entries, all);

    let of_a: Vec<_> = all.iter().filter(|s| s.source_volume_id == a.id).cloned().collect();
    assert_eq!(of_a.len(), 3);
    assert_same!(kit.list_snapshots("", &a.id, 0, "").unwrap().entries, of_a);
    assert_same!(kit.list_snapshots(&all[1].id, "", 0, "").unwrap().entries, &all[1..2]);
    let wrong_source = if all[1].source_volume_id == a.id { &b.id } else { &a.id };
    assert!(kit.list_snapshots(&all[1].id, wrong_source, 0, "").unwrap().entries.is_empty());
    assert!(kit.list_snapshots("s-0123456789abcdef0123456789abcdef", "", 0, "").unwrap().entries.is_empty());

    let first = kit.list_snapshots("", "", 2, "").unwrap();
    let second = kit.list_snapshots("", "", 2, &first.next_token).unwrap();
    let last = kit.list_snapshots("", "", 2, &second.next_token).unwrap();
    assert_same!([first.entries, second.entries, last.entries].concat(), all);
    assert_eq!(last.next_token, "");
    // Pages of a filtered list hold only matches.
    let a_first = kit.list_snapshots("", &a.id, 2, "").unwrap();
    let a_rest = kit.list_snapshots("", &a.id, 2, &a_first.next_token).unwrap();
    assert_same!([a_first.entries, a_rest.entries].concat(), of_a);
    assert_err!(kit.list_snapshots("", "", 2, &a.id), Aborted);
}

#[test]
fn delete_snapshot_is_idempotent_and_keeps_the_volume() {
    let kit = loopfile();
    let volume = volume_with_pattern(&kit, "pvc-1");
    let snapshot = kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    kit.delete_snapshot(&snapshot.id).unwrap();
    kit.delete_snapshot(&snapshot.id).unwrap();
    kit.delete_snapshot("../volumes").unwrap();
    assert!(kit.list_snapshots(&snapshot.id, "", 0, "").unwrap().entries.is_empty());
    assert!(!snapshot_image(&kit, &snapshot.id).exists());
    assert_same!(kit.get_volume(&volume.id).unwrap(), volume);
    assert_eq!(read_at(&volume_image(&kit, &volume.id), OFFSET, PATTERN.len()), PATTERN);
}

#[test]
fn a_snapshot_outlives_its_volume() {
    let kit = loopfile();
    let volume = volume_with_pattern(&kit, "pvc-1");
    let snapshot = kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    kit.delete_volume(&volume.id).unwrap();
    assert_same!(kit.list_snapshots("", "", 0, "").unwrap().entries, [&snapshot]);
    let restored = create_from(&kit, "restored", 0, ContentSource::Snapshot(snapshot.id)).unwrap();
    assert_eq!(read_at(&volume_image(&kit, &restored.id), OFFSET, PATTERN.len()), PATTERN);
}

#[test]
fn a_volume_from_a_snapshot_holds_its_data_and_may_be_larger() {
    let kit = loopfile();
    let volume = volume_with_pattern(&kit, "pvc-1");
    let snapshot = kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    let source = ContentSource::Snapshot(snapshot.id.clone());
    let restored = create_from(&kit, "restored", 8 * MIB, source.clone()).unwrap();
    assert_eq!(restored.capacity_bytes, 8 * MIB);
    assert_same!(restored.content_source, Some(source.clone()));
    let image = volume_image(&kit, &restored.id);
    assert_eq!(file_len(&image), 8 * MIB);
    assert_eq!(read_at(&image, OFFSET, PATTERN.len()), PATTERN);
    assert_eq!(read_at(&image, 4 * MIB, 16), [0; 16], "the grown part is empty");
    assert_same!(kit.get_volume(&restored.id).unwrap().content_source, Some(source.clone()));
    assert_same!(create_from(&kit, "restored", 8 * MIB, source).unwrap(), restored);
}

#[test]
fn a_volume_from_a_snapshot_without_a_size_is_never_smaller_than_it() {
    let kit = loopfile();
    // Sparse, so cheap: larger than the 1 GiB default size.
    let volume = create(&kit, "big", 2 * GIB);
    write_at(&volume_image(&kit, &volume.id), 2 * GIB - 4 * KIB, PATTERN);
    let snapshot = kit.create_snapshot(&volume.id, "big-snap", vec![]).unwrap();
    let restored = create_from(&kit, "restored", 0, ContentSource::Snapshot(snapshot.id)).unwrap();
    assert_eq!(restored.capacity_bytes, 2 * GIB);
    let image = volume_image(&kit, &restored.id);
    assert_eq!(file_len(&image), 2 * GIB);
    assert_eq!(read_at(&image, 2 * GIB - 4 * KIB, PATTERN.len()), PATTERN);
    assert!(allocated(&image) < 64 * MIB, "the copy stays sparse: {} bytes allocated", allocated(&image));
    // A smaller source gets the default size.
    let small = create(&kit, "small", MIB);
    let from_small = create_from(&kit, "from-small", 0, ContentSource::Volume(small.id)).unwrap();
    assert_eq!(from_small.capacity_bytes, GIB);
}

#[test]
fn a_volume_smaller_than_its_snapshot_is_out_of_range() {
    let kit = loopfile();
    let volume = volume_with_pattern(&kit, "pvc-1");
    let snapshot = kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    assert_err!(create_from(&kit, "small", 2 * MIB, ContentSource::Snapshot(snapshot.id)), OutOfRange);
    assert_err!(create_from(&kit, "small", 2 * MIB, ContentSource::Volume(volume.id)), OutOfRange);
    assert_eq!(kit.list_volumes(0, "").unwrap().entries.len(), 1);
}

#[test]
fn a_clone_holds_the_source_volume_data() {
    let kit = loopfile();
    let volume = volume_with_pattern(&kit, "pvc-1");
    let source = ContentSource::Volume(volume.id.clone());
    let clone = create_from(&kit, "clone", 6 * MIB, source.clone()).unwrap();
    assert_eq!(clone.capacity_bytes, 6 * MIB);
    assert_same!(clone.content_source, Some(source));
    let image = volume_image(&kit, &clone.id);
    assert_eq!(file_len(&image), 6 * MIB);
    assert_eq!(read_at(&image, OFFSET, PATTERN.len()), PATTERN);
    write_at(&image, OFFSET, b"changed in the clone");
    assert_eq!(read_at(&volume_image(&kit, &volume.id), OFFSET, PATTERN.len()), PATTERN);
}

#[test]
fn a_missing_content_source_is_not_found() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    let snapshot = kit.create_snapshot(&volume.id, "snap", vec![]).unwrap();
    for source in [
        ContentSource::Snapshot("s-0123456789abcdef0123456789abcdef".into()),
        ContentSource::Snapshot("../volumes".into()),
        ContentSource::Snapshot(volume.id.clone()),
        ContentSource::Volume("v-0123456789abcdef0123456789abcdef".into()),
        ContentSource::Volume(snapshot.id.clone()),
    ] {
        assert_err!(create_from(&kit, "new", 0, source), NotFound);
    }
    assert_same!(kit.list_volumes(0, "").unwrap().entries, [volume]);
}

// ---------------------------------------------------------------------------------------
// node-device and the sandbox

#[test]
fn node_device_is_the_image_file_as_the_backend_sees_it() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    assert_same!(
        kit.node_device(&volume.id, volume.context.clone(), vec![]).unwrap(),
        Device::File(format!("/data/volumes/{}/disk.img", volume.id))
    );
    assert_err!(kit.node_device("v-0123456789abcdef0123456789abcdef", vec![], vec![]), NotFound);
    kit.delete_volume(&volume.id).unwrap();
    assert_err!(kit.node_device(&volume.id, volume.context, vec![]), NotFound);
}

#[test]
fn names_with_dot_dot_stay_inside_the_granted_directory() {
    let kit = loopfile();
    let name = "../../../../tmp/escaped/../../etc/x";
    let volume = create(&kit, name, MIB);
    let snapshot = kit.create_snapshot(&volume.id, name, vec![]).unwrap();
    assert_eq!(volume.context, [("loopfile/name".to_string(), name.to_string())]);
    assert_eq!(dir_names(&kit.host_dir("/data").join("volumes")), [volume.id.as_str()]);
    assert_eq!(dir_names(&kit.host_dir("/data").join("snapshots")), [snapshot.id]);
    assert_eq!(file_len(&volume_image(&kit, &volume.id)), MIB);
    // The temporary directory around the grant holds nothing but the grant.
    assert_eq!(dir_names(kit.host_dir("/data").parent().unwrap()), ["grant0"]);
}

#[test]
fn a_symlink_out_of_the_granted_directory_is_never_followed() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    // A file next to the grant on the host, and the volume's image replaced by a link to it.
    let victim = kit.host_dir("/data").parent().unwrap().join("victim.img");
    fs::write(&victim, b"precious").unwrap();
    let image = volume_image(&kit, &volume.id);
    fs::remove_file(&image).unwrap();
    std::os::unix::fs::symlink(&victim, &image).unwrap();

    // Through WASI (the backend's own resize) and through the host (copy-file).
    backend_error(kit.expand_volume(&volume.id, 2 * MIB, 0));
    backend_error(kit.create_snapshot(&volume.id, "snap", vec![]));
    backend_error(create_from(&kit, "clone", 0, ContentSource::Volume(volume.id.clone())));
    kit.delete_volume(&volume.id).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    for kind in ["snapshots", "volumes"] {
        for entry in fs::read_dir(kit.host_dir("/data").join(kind)).unwrap() {
            let copy = entry.unwrap().path().join("disk.img");
            assert!(!copy.exists() || !fs::read(&copy).unwrap().starts_with(b"precious"), "{}", copy.display());
        }
    }
}

#[test]
fn unimplemented_calls_say_so() {
    let kit = loopfile();
    let volume = create(&kit, "pvc-1", MIB);
    let capability = volume_request("x", 0, 0).capabilities.remove(0);
    assert_err!(kit.modify_volume(&volume.id, vec![]), Unimplemented);
    assert_err!(kit.controller_publish(&volume.id, "node", capability, false, vec![]), Unimplemented);
    assert_err!(kit.controller_unpublish(&volume.id, "node"), Unimplemented);
}

// ---------------------------------------------------------------------------------------
// The testkit's sandbox plumbing, with the hostile component

fn hostile() -> Builder {
    // The component imports wasi:http, which is linked only with an http grant.
    TestHost::builder(backend_bundle::HOSTILE).http_origin("http://127.0.0.1:9")
}

fn misbehave(kit: &TestHost, act: &str) -> Result<Volume, CallError> {
    kit.create_volume(with_params(volume_request("h", MIB, 0), &[("misbehave", act)]))
}

/// The instance keeps serving after a call misbehaved.
fn assert_still_serves(kit: &TestHost) {
    let volume = kit.create_volume(volume_request("calm", MIB, 0)).expect("a well-behaved call after the failure");
    assert_eq!(volume.context, [("note".to_string(), "well behaved".to_string())]);
}

#[test]
fn exec_without_a_grant_is_denied_and_never_runs() {
    for kit in [
        hostile().build().unwrap(),
        // The program is granted, but not with these arguments.
        hostile().command("/bin/sh", &[&["-c", "true"]]).build().unwrap(),
    ] {
        match backend_error(misbehave(&kit, "exec")) {
            BackendError::FailedPrecondition(message) => {
                assert!(message.contains("denied by the host"), "{message}");
                assert!(message.contains("/bin/sh"), "{message}");
            }
            other => panic!("expected failed-precondition, got {other:?}"),
        }
        assert_eq!(kit.exec().calls(), []);
    }
}

#[test]
fn exec_with_a_grant_reaches_the_fake_and_gets_its_answer() {
    let kit = hostile().command("/bin/sh", &[&["-c", "*"]]).respond(|_| fail(42, b"scripted")).build().unwrap();
    let volume = misbehave(&kit, "exec").unwrap();
    assert_eq!(
        kit.exec().calls(),
        [ExecCall { program: "/bin/sh".into(), args: vec!["-c".into(), "id".into()], stdin: vec![] }]
    );
    assert_eq!(volume.context, [("note".to_string(), "exec ran with status 42".to_string())]);

    kit.exec().respond(|_| backend_testkit::ok(b""));
    let volume = misbehave(&kit, "exec").unwrap();
    assert_eq!(volume.context, [("note".to_string(), "exec ran with status 0".to_string())]);
    assert_eq!(kit.exec().calls().len(), 2);
}

#[test]
fn reading_outside_the_granted_directory_fails() {
    let kit = hostile().granted_dir("/data").build().unwrap();
    assert_err!(misbehave(&kit, "escape"), FailedPrecondition);
}

#[test]
fn a_trap_is_a_trap_error() {
    let kit = hostile().build().unwrap();
    match misbehave(&kit, "trap") {
        Err(CallError::Trap { backend, message }) => {
            assert_eq!(backend, "test");
            // The guest's panic message is kept in the error.
            assert!(message.contains("hostile backend traps on purpose"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_still_serves(&kit);
}

#[test]
fn an_endless_loop_hits_the_deadline() {
    let limits = LimitsConfig { deadline_ms: 300, ..LimitsConfig::default() };
    let kit = hostile().limits(limits).build().unwrap();
    let started = Instant::now();
    match misbehave(&kit, "loop") {
        Err(CallError::Timeout { deadline_ms, .. }) => assert_eq!(deadline_ms, 300),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let elapsed = started.elapsed();
    // Deadlines count epoch ticks: the first may come right after the call starts.
    assert!(elapsed >= Duration::from_millis(300) - EPOCH_TICK && elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_still_serves(&kit);
}

#[test]
fn a_memory_hog_is_out_of_memory() {
    let limits = LimitsConfig { memory_mib: 16, ..LimitsConfig::default() };
    let kit = hostile().limits(limits).build().unwrap();
    match misbehave(&kit, "oom") {
        Err(CallError::OutOfMemory { backend, limit }) => {
            assert_eq!((backend.as_str(), limit), ("test", Exhausted::GuestMemory))
        }
        other => panic!("expected out-of-memory, got {other:?}"),
    }
    assert_still_serves(&kit);
}
