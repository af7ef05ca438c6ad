//! The LVM backend, run as a component in wasmtime through the real host runtime, against a
//! fake `lvm`: a small state machine behind the testkit's scripted `exec` that parses the
//! argument vectors the backend sends (refusing anything it does not expect) and answers in
//! lvm's real shapes.
//!
//! Captured from lvm 2.03.16 on the development VM (`global{activation=0}`), and reproduced
//! verbatim by the fake: the layout of the JSON reports of `lvs` and `vgs`, `lv_time`
//! (`2026-11-21 11:22:03 +0000`), the LV row `csi-a` with a foreign tag (see
//! `HOSTILE_CAPTURED`), and the messages "Failed to find logical volume", "Volume group … not
//! found / Cannot process volume group", "Logical Volume … already exists in volume group",
//! "has insufficient free space (N extents): M required.", "New size given … not larger than
//! existing size", "Can't create … without using device-mapper kernel driver.", the
//! `lvcreate` / `lvextend` / `lvremove` success lines, the activation-disabled warning and
//! the `--addtag` comma error.
//!
//! Constructed (that kernel has no device-mapper, so thin LVs and snapshots cannot be made
//! there): the rows of thin pools (`twi-a-tz--`, segtype `thin-pool`, `data_percent`), thin
//! volumes (`Vwi-a-tz--`), thin snapshots (`Vwi---tz-k`), COW snapshots (`swi-a-s---`) and
//! their origins (`owi-a-s---`), and the in-use and lock messages.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use backend_testkit::{
    AccessMode, BackendError, Builder, CallError, ContentSource, CreateVolumeRequest, Device, ExecCall, Features,
    Output, Snapshot, TestHost, Volume, backend_error, fail, ok, volume_request,
};
use sha2::{Digest, Sha256};
use wasmcsi::config::{CommandGrant, Config};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const LVM: &str = "/sbin/lvm";
const VG: &str = "vg0";
const EXTENT: u64 = 4 * MIB;
/// Extents of the fake volume group: 1 GiB.
const VG_EXTENTS: u64 = 256;
const LV_COLUMNS: &str = "lv_name,vg_name,lv_size,lv_tags,lv_attr,pool_lv,origin,lv_time,data_percent";
/// 2026-11-21 12:00:00 +0000, the fake's first `lv_time`; each LV it makes is a second later.
const EPOCH_OF_FIRST_LV: u64 = 1_795_262_400;
const ACTIVATION_DISABLED: &str = "  WARNING: Activation disabled. No device-mapper interaction will be attempted.\n";

// ---------------------------------------------------------------------------------------
// The fake lvm

/// One logical volume as the fake keeps it.
#[derive(Clone, Debug)]
struct Row {
    name: String,
    size: u64,
    tags: Vec<String>,
    attr: String,
    pool: String,
    origin: String,
    time: String,
    data_percent: String,
    segtype: String,
}

impl Row {
    fn thick(name: &str, size: u64, tags: &[&str]) -> Row {
        Row {
            name: name.into(),
            size,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            attr: "-wi-a-----".into(),
            pool: String::new(),
            origin: String::new(),
            time: "2026-11-21 11:22:03 +0000".into(),
            data_percent: String::new(),
            segtype: "linear".into(),
        }
    }

    fn volume_type(&self) -> char {
        self.attr.chars().next().unwrap_or('-')
    }

    /// Thin LVs take no extents of the volume group.
    fn uses_vg_space(&self) -> bool {
        self.volume_type() != 'V'
    }

    fn column(&self, column: &str) -> Option<String> {
        Some(match column {
            "lv_name" => self.name.clone(),
            "vg_name" => VG.into(),
            "lv_size" => self.size.to_string(),
            "lv_tags" => self.tags.join(","),
            "lv_attr" => self.attr.clone(),
            "pool_lv" => self.pool.clone(),
            "origin" => self.origin.clone(),
            "lv_time" => self.time.clone(),
            "data_percent" => self.data_percent.clone(),
            "segtype" => self.segtype.clone(),
            "lv_active" => "unknown".into(),
            _ => return None,
        })
    }
}

/// A volume group `vg0` of 256 extents of 4 MiB, and the lvm commands the backend may run.
struct FakeLvm {
    rows: Vec<Row>,
    /// What every call must pass as `--config`.
    config: Option<String>,
    /// Thin volumes are rounded up to this (a thin pool's chunk size).
    thin_chunk: u64,
    /// Answers given instead of the state machine, to the next call of each subcommand.
    canned: Vec<(&'static str, Output)>,
    /// LVs made so far, for their `lv_time`.
    made: u64,
    /// Commands run so far.
    runs: usize,
}

impl FakeLvm {
    fn new() -> FakeLvm {
        FakeLvm { rows: Vec::new(), config: None, thin_chunk: EXTENT, canned: Vec::new(), made: 0, runs: 0 }
    }

    /// Adds a thin pool of `size` bytes (taken from the volume group).
    fn with_pool(mut self, name: &str, size: u64, data_percent: &str) -> FakeLvm {
        self.rows.push(Row {
            attr: "twi-a-tz--".into(),
            data_percent: data_percent.into(),
            segtype: "thin-pool".into(),
            ..Row::thick(name, size, &[])
        });
        self
    }

    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.name == name)
    }

    fn row_mut(&mut self, name: &str) -> &mut Row {
        self.rows.iter_mut().find(|row| row.name == name).expect("no such row")
    }

    fn free_extents(&self) -> u64 {
        VG_EXTENTS - self.rows.iter().filter(|row| row.uses_vg_space()).map(|row| row.size / EXTENT).sum::<u64>()
    }

    /// Answers the next call of `subcommand` with `output`, whatever it asks.
    fn can(&mut self, subcommand: &'static str, output: Output) {
        self.canned.push((subcommand, output));
    }

    fn respond(&mut self, call: &ExecCall) -> Output {
        self.runs += 1;
        if call.program != LVM {
            return refuse(format!("program {:?}", call.program));
        }
        let args: Vec<&str> = call.args.iter().map(String::as_str).collect();
        let Some((&subcommand, rest)) = args.split_first() else {
            return refuse("no subcommand".into());
        };
        let rest = match (&self.config, rest) {
            (Some(config), ["--config", given, rest @ ..]) if given == config => rest,
            (None, rest) if rest.first() != Some(&"--config") => rest,
            _ => return refuse(format!("--config missing or unexpected in {args:?}")),
        };
        if let Some(at) = self.canned.iter().position(|(s, _)| *s == subcommand) {
            return self.canned.remove(at).1;
        }
        match subcommand {
            "vgs" => self.vgs(rest),
            "lvs" => self.lvs(rest),
            "lvcreate" => self.lvcreate(rest),
            "lvextend" => self.lvextend(rest),
            "lvremove" => self.lvremove(rest),
            "lvchange" => self.lvchange(rest),
            other => refuse(format!("subcommand {other:?}")),
        }
    }

    fn vgs(&self, rest: &[&str]) -> Output {
        let Some((columns, target)) = report_args(rest) else {
            return refuse(format!("vgs {rest:?}"));
        };
        if target != VG {
            return no_vg(target, "vg");
        }
        let free = self.free_extents();
        let values = [
            ("vg_name", VG.to_string()),
            ("vg_size", (VG_EXTENTS * EXTENT).to_string()),
            ("vg_free", (free * EXTENT).to_string()),
            ("vg_extent_size", EXTENT.to_string()),
            ("vg_extent_count", VG_EXTENTS.to_string()),
            ("vg_free_count", free.to_string()),
        ];
        let row: Option<Vec<String>> = columns
            .iter()
            .map(|column| values.iter().find(|(name, _)| name == column).map(|(_, value)| json_field(column, value)))
            .collect();
        match row {
            Some(row) => ok(report("vg", &[row]).as_bytes()),
            None => refuse(format!("vgs columns {columns:?}")),
        }
    }

    fn lvs(&self, rest: &[&str]) -> Output {
        let Some((columns, target)) = report_args(rest) else {
            return refuse(format!("lvs {rest:?}"));
        };
        let (vg, name) = target.split_once('/').map_or((target, None), |(vg, lv)| (vg, Some(lv)));
        if vg != VG {
            return no_vg(vg, "lv");
        }
        let rows: Vec<&Row> = self.rows.iter().filter(|row| name.is_none_or(|name| row.name == name)).collect();
        if rows.is_empty() && name.is_some() {
            return Output { stdout: report("lv", &[]).into_bytes(), ..failed_to_find(target) };
        }
        let rendered: Option<Vec<Vec<String>>> = rows
            .iter()
            .map(|row| columns.iter().map(|column| Some(json_field(column, &row.column(column)?))).collect())
            .collect();
        match rendered {
            Some(rendered) => ok(report("lv", &rendered).as_bytes()),
            None => refuse(format!("lvs columns {columns:?}")),
        }
    }

    fn lvcreate(&mut self, rest: &[&str]) -> Output {
        let (mut name, mut size, mut virtual_size, mut pool, mut target) = (None, None, None, None, None);
        let (mut yes, mut wipe, mut snapshot, mut activate) = (false, false, false, false);
        let mut tags = Vec::new();
        let mut args = rest.iter();
        while let Some(&arg) = args.next() {
            let mut value = || args.next().copied().unwrap_or("");
            match arg {
                "--yes" => yes = true,
                "--wipesignatures" if value() == "y" => wipe = true,
                "-n" => name = Some(value().to_string()),
                "-L" => size = bytes(value()),
                "-V" => virtual_size = bytes(value()),
                "--thinpool" => pool = Some(value().to_string()),
                "-s" => snapshot = true,
                "--setactivationskip" if value() == "n" => activate = true,
                "--addtag" => {
                    let tag = value();
                    if !is_lvm_tag(tag) {
                        let message = format!(
                            "  Invalid argument for --addtag: {tag}\n  Error during parsing of command line.\n"
                        );
                        return fail(3, message.as_bytes());
                    }
                    tags.push(tag.to_string());
                }
                positional if !positional.starts_with('-') && target.is_none() => target = Some(positional),
                other => return refuse(format!("lvcreate option {other:?} in {rest:?}")),
            }
        }
        let (Some(name), Some(target), true) = (name, target, yes) else {
            return refuse(format!("lvcreate without -n, --yes or a target: {rest:?}"));
        };
        if self.row(&name).is_some() {
            return fail(
                5,
                format!("  Logical Volume \"{name}\" already exists in volume group \"{VG}\"\n").as_bytes(),
            );
        }
        self.made += 1;
        let time = format!("2026-11-21 12:{:02}:{:02} +0000", self.made / 60, self.made % 60);
        let base = Row { tags, time, ..Row::thick(&name, 0, &[]) };
        let row = match (snapshot, target.split_once('/'), size, virtual_size, pool) {
            (true, Some((VG, origin)), size, None, None) => {
                let Some(origin_row) = self.row(origin).cloned() else {
                    return failed_to_find(target);
                };
                match (origin_row.volume_type(), size) {
                    ('V', None) => Row {
                        size: origin_row.size,
                        attr: if activate { "Vwi-a-tz--" } else { "Vwi---tz-k" }.into(),
                        pool: origin_row.pool.clone(),
                        origin: origin.into(),
                        segtype: "thin".into(),
                        ..base
                    },
                    ('-' | 'o', Some(size)) if !activate => {
                        if let Some(no_space) = self.no_space_for(size) {
                            return no_space;
                        }
                        self.row_mut(origin).attr = "owi-a-s---".into();
                        Row { size, attr: "swi-a-s---".into(), origin: origin.into(), ..base }
                    }
                    _ => return refuse(format!("snapshot of {origin_row:?} with {rest:?}")),
                }
            }
            (false, None, None, Some(size), Some(pool)) if target == VG => {
                match self.row(&pool) {
                    Some(row) if row.volume_type() == 't' => {}
                    _ => return fail(5, format!("  Logical volume {pool} is not a thin pool.\n").as_bytes()),
                }
                let size = size.next_multiple_of(self.thin_chunk);
                Row { size, attr: "Vwi-a-tz--".into(), pool, segtype: "thin".into(), ..base }
            }
            (false, None, Some(size), None, None) if target == VG && wipe => {
                if let Some(no_space) = self.no_space_for(size) {
                    return no_space;
                }
                Row { size, ..base }
            }
            _ => return refuse(format!("lvcreate {rest:?}")),
        };
        self.rows.push(row);
        Output {
            stdout: format!("  Logical volume \"{name}\" created.\n").into_bytes(),
            stderr: ACTIVATION_DISABLED.as_bytes().to_vec(),
            ..ok(b"")
        }
    }

    /// `None` when the volume group has `size` bytes free, lvm's refusal otherwise.
    fn no_space_for(&self, size: u64) -> Option<Output> {
        let (needed, free) = (size / EXTENT, self.free_extents());
        (needed > free).then(|| {
            let message =
                format!("  Volume group \"{VG}\" has insufficient free space ({free} extents): {needed} required.\n");
            fail(5, message.as_bytes())
        })
    }

    fn lvextend(&mut self, rest: &[&str]) -> Output {
        let (Some(size), Some(path)) = (match rest {
            ["--yes", "-L", size, path] => (bytes(size), Some(*path)),
            _ => (None, None),
        }) else {
            return refuse(format!("lvextend {rest:?}"));
        };
        let Some(row) = path.strip_prefix("vg0/").and_then(|name| self.row(name)).cloned() else {
            return failed_to_find(path);
        };
        let (old, new) = (row.size / EXTENT, size / EXTENT);
        if new <= old {
            let message = format!("  New size given ({new} extents) not larger than existing size ({old} extents)\n");
            return fail(5, message.as_bytes());
        }
        if row.uses_vg_space() && new - old > self.free_extents() {
            let message = format!(
                "  Insufficient free space: {} extents needed, but only {} available\n",
                new - old,
                self.free_extents()
            );
            return fail(5, message.as_bytes());
        }
        self.row_mut(&row.name).size = size;
        let stdout = format!(
            "  Size of logical volume {path} changed from {old} extents to {new} extents.\n  Logical volume {path} successfully resized.\n"
        );
        ok(stdout.as_bytes())
    }

    /// Like lvm with `--yes`: removing an origin removes its COW snapshots too.
    fn lvremove(&mut self, rest: &[&str]) -> Output {
        let ["--yes", path] = rest else {
            return refuse(format!("lvremove {rest:?}"));
        };
        let Some(row) = path.strip_prefix("vg0/").and_then(|name| self.row(name)).cloned() else {
            return failed_to_find(path);
        };
        let cow_of_it = |other: &Row| other.origin == row.name && other.volume_type() == 's';
        self.rows.retain(|other| other.name != row.name && !cow_of_it(other));
        for other in &mut self.rows {
            if other.origin == row.name {
                other.origin.clear();
            }
        }
        if row.volume_type() == 's'
            && !self.rows.iter().any(|other| other.origin == row.origin && other.volume_type() == 's')
        {
            self.row_mut(&row.origin).attr = "-wi-a-----".into();
        }
        ok(format!("  Logical volume \"{}\" successfully removed.\n", row.name).as_bytes())
    }

    fn lvchange(&self, rest: &[&str]) -> Output {
        let ["--yes", "-ay", "-K", path] = rest else {
            return refuse(format!("lvchange {rest:?}"));
        };
        match path.strip_prefix("vg0/").and_then(|name| self.row(name)) {
            Some(_) => ok(b""),
            None => failed_to_find(path),
        }
    }
}

/// LVM's tag rules: `[A-Za-z0-9_+.-/=!:&#]`, at most 1024 characters.
fn is_lvm_tag(tag: &str) -> bool {
    tag.len() <= 1024 && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+.-/=!:&#".contains(&b))
}

/// What the fake answers to a call the backend should never make: the test then fails on
/// the backend's `internal` error, which quotes this.
fn refuse(what: String) -> Output {
    fail(99, format!("fake lvm refuses: {what}").as_bytes())
}

fn failed_to_find(path: &str) -> Output {
    fail(5, format!("  Failed to find logical volume \"{path}\"\n").as_bytes())
}

fn no_vg(vg: &str, section: &str) -> Output {
    Output {
        stdout: report(section, &[]).into_bytes(),
        ..fail(5, format!("  Volume group \"{vg}\" not found\n  Cannot process volume group {vg}\n").as_bytes())
    }
}

/// `--reportformat json --units b --nosuffix -o <columns> <target>`, exactly.
fn report_args<'a>(rest: &[&'a str]) -> Option<(Vec<&'a str>, &'a str)> {
    match rest {
        ["--reportformat", "json", "--units", "b", "--nosuffix", "-o", columns, target] => {
            Some((columns.split(',').collect(), target))
        }
        _ => None,
    }
}

/// `<n>b`, in whole extents (the backend rounds; lvm would round up too).
fn bytes(text: &str) -> Option<u64> {
    let size: u64 = text.strip_suffix('b')?.parse().ok()?;
    Some(size.next_multiple_of(EXTENT))
}

fn json_field(column: &str, value: &str) -> String {
    format!("\"{column}\":{}", serde_json::to_string(value).unwrap())
}

/// A report laid out as lvm 2.03.16 prints it.
fn report(section: &str, rows: &[Vec<String>]) -> String {
    let rows: Vec<String> = rows.iter().map(|fields| format!("                  {{{}}}", fields.join(", "))).collect();
    let rows = if rows.is_empty() { String::new() } else { format!("{}\n", rows.join(",\n")) };
    format!(
        "  {{\n      \"report\": [\n          {{\n              \"{section}\": [\n{rows}              ]\n          }}\n      ]\n  }}\n"
    )
}

// ---------------------------------------------------------------------------------------
// Helpers

struct Lvm {
    kit: TestHost,
    fake: Arc<Mutex<FakeLvm>>,
}

impl Lvm {
    fn fake(&self) -> MutexGuard<'_, FakeLvm> {
        self.fake.lock().unwrap()
    }

    /// The argument vectors of the lvm commands run since the last call (the program is
    /// checked by the fake).
    fn commands(&self) -> Vec<String> {
        let calls = self.kit.exec().calls();
        self.kit.exec().clear();
        calls.iter().map(|call| call.args.join(" ")).collect()
    }

    /// Only the commands that change something.
    fn changes(&self) -> Vec<String> {
        self.commands().into_iter().filter(|c| !c.starts_with("lvs ") && !c.starts_with("vgs ")).collect()
    }
}

/// The lvm command grant the README ships, for volume group `vg` and thin pool `pool`,
/// without its `host_args`: every command the backend runs must pass it.
fn shipped_grant(vg: &str, pool: &str) -> CommandGrant {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("```toml")
        .filter_map(|block| block.split_once("```").map(|(toml, _)| toml))
        .find(|toml| toml.contains("module = \"builtin:lvm\""))
        .expect("the README shows the lvm grant");
    let config = Config::parse(Path::new("readme.toml"), &block.replace("vg0", vg).replace("pool0", pool))
        .expect("the README's lvm config");
    let grant = config.backends[0].grants.commands[0].clone();
    CommandGrant { host_args: vec![], ..grant }
}

/// The LVM backend with the shipped grant for `VG`, over `fake`.
fn builder(fake: &Arc<Mutex<FakeLvm>>) -> Builder {
    builder_for(fake, shipped_grant(VG, "pool0"))
}

fn builder_for(fake: &Arc<Mutex<FakeLvm>>, grant: CommandGrant) -> Builder {
    let fake = fake.clone();
    TestHost::builder(backend_bundle::LVM).command_grant(grant).respond(move |call| fake.lock().unwrap().respond(call))
}

fn load_with(fake: FakeLvm, settings: &[(&str, &str)]) -> Lvm {
    let fake = Arc::new(Mutex::new(fake));
    let mut builder = builder(&fake).setting("volume-group", VG);
    for (key, value) in settings {
        builder = builder.setting(key, value);
    }
    let kit = builder.build().expect("the lvm backend loads");
    kit.exec().clear();
    Lvm { kit, fake }
}

/// A thick-only instance on an empty volume group.
fn lvm() -> Lvm {
    load_with(FakeLvm::new(), &[])
}

/// An instance with thin pool `pool0` of `pool_size` bytes.
fn thin_lvm(pool_size: u64, settings: &[(&str, &str)]) -> Lvm {
    let mut all = vec![("thin-pool", "pool0")];
    all.extend_from_slice(settings);
    load_with(FakeLvm::new().with_pool("pool0", pool_size, "0.00"), &all)
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `<prefix><first 16 bytes of sha256(name) in hex>`, computed independently of the backend.
fn id(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", hex(&Sha256::digest(name.as_bytes())[..16]))
}

fn create(lvm: &Lvm, name: &str, required: u64, limit: u64) -> Result<Volume, CallError> {
    lvm.kit.create_volume(volume_request(name, required, limit))
}

fn create_typed(lvm: &Lvm, name: &str, required: u64, volume_type: &str) -> Result<Volume, CallError> {
    lvm.kit.create_volume(with_params(volume_request(name, required, 0), &[("type", volume_type)]))
}

fn create_from(lvm: &Lvm, name: &str, required: u64, source: ContentSource) -> Result<Volume, CallError> {
    let mut request = volume_request(name, required, 0);
    request.content_source = Some(source);
    lvm.kit.create_volume(request)
}

fn with_params(mut request: CreateVolumeRequest, parameters: &[(&str, &str)]) -> CreateVolumeRequest {
    request.parameters = parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    request
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ids(volumes: &[Volume]) -> Vec<String> {
    volumes.iter().map(|v| v.id.clone()).collect()
}

fn report_lvs(target: &str) -> String {
    format!("lvs --reportformat json --units b --nosuffix -o {LV_COLUMNS} {target}")
}

fn report_vgs() -> String {
    format!("vgs --reportformat json --units b --nosuffix -o vg_name,vg_extent_size,vg_free {VG}")
}

/// Asserts a call failed with the backend's own error of the given kind; gives its message.
macro_rules! assert_err {
    ($result:expr, $kind:ident) => {
        match backend_error($result) {
            BackendError::$kind(message) => message,
            other => panic!("expected {}, got {other:?}", stringify!($kind)),
        }
    };
}

// ---------------------------------------------------------------------------------------
// info and validate-settings

#[test]
fn info_declares_a_node_local_block_backend() {
    let lvm = lvm();
    let info = lvm.kit.info();
    assert_eq!(info.name, "lvm");
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
    assert_eq!(load_with(FakeLvm::new(), &[("default-fs-type", "xfs")]).kit.info().default_fs_type, "xfs");
}

#[test]
fn the_load_checks_the_volume_group_and_the_thin_pool() {
    let fake = Arc::new(Mutex::new(FakeLvm::new().with_pool("pool0", 64 * MIB, "")));
    let kit = builder(&fake).setting("volume-group", VG).setting("thin-pool", "pool0").build().unwrap();
    let commands: Vec<String> = kit.exec().calls().iter().map(|call| call.args.join(" ")).collect();
    assert_eq!(commands, [report_vgs(), report_lvs("vg0/pool0")]);

    let err =
        builder_for(&fake, shipped_grant("nosuchvg", "pool0")).setting("volume-group", "nosuchvg").build().unwrap_err();
    assert!(err.reason.contains("volume group \"nosuchvg\" (setting volume-group) cannot be used"), "{err}");
    assert!(err.reason.contains("Volume group \"nosuchvg\" not found"), "{err}");

    let pool1 = || builder_for(&fake, shipped_grant(VG, "pool1"));
    let err = pool1().setting("volume-group", VG).setting("thin-pool", "pool1").build().unwrap_err();
    assert!(err.reason.contains("thin pool \"pool1\" does not exist"), "{err}");

    fake.lock().unwrap().rows.push(Row::thick("plain", EXTENT, &[]));
    let err = builder_for(&fake, shipped_grant(VG, "plain"))
        .setting("volume-group", VG)
        .setting("thin-pool", "plain")
        .build()
        .unwrap_err();
    assert!(err.reason.contains("\"plain\" is not a thin pool"), "{err}");
}

#[test]
fn settings_are_strict_and_checked_before_any_lvm_runs() {
    let fake = Arc::new(Mutex::new(FakeLvm::new()));
    let cases: [(&[(&str, &str)], &str); 10] = [
        (&[], "\"volume-group\" is required"),
        (&[("volume-group", VG), ("volume_group", VG)], "unknown setting \"volume_group\""),
        (&[("volume-group", "-vg0")], "must be an LVM name"),
        (&[("volume-group", VG), ("thin-pool", "../x")], "\"thin-pool\" must be an LVM name"),
        (&[("volume-group", VG), ("thin-overprovision-ratio", "0.5")], "thin-overprovision-ratio"),
        (&[("volume-group", VG), ("snapshot-reserve-percent", "0")], "snapshot-reserve-percent"),
        (&[("volume-group", VG), ("lvm", "lvm")], "absolute path"),
        (&[("volume-group", VG), ("lvm-config", "x{y=1}")], "\"lvm-config\" is no longer a backend setting"),
        (&[("volume-group", VG), ("optional", "yes")], "\"optional\" must be true or false"),
        (&[("volume-group", "nosuchvg"), ("optional", "True")], "\"optional\" must be true or false"),
    ];
    for (settings, needle) in cases {
        let mut builder = builder(&fake);
        for (key, value) in settings {
            builder = builder.setting(key, value);
        }
        let err = builder.build().unwrap_err();
        assert!(err.reason.contains("settings rejected"), "{settings:?}: {err}");
        assert!(err.reason.contains(needle), "{settings:?}: {err}");
    }
    assert_eq!(fake.lock().unwrap().runs, 0, "bad settings stop the load before any lvm runs");
}

#[test]
fn every_command_gets_the_operators_config_from_the_grant_not_from_the_backend() {
    let config = "global{activation=0} activation{udev_sync=0 udev_rules=0 monitoring=0}";
    let mut fake = FakeLvm::new();
    fake.config = Some(config.into());
    let fake = Arc::new(Mutex::new(fake));
    let grant = CommandGrant { host_args: vec!["--config".into(), config.into()], ..shipped_grant(VG, "pool0") };
    let kit = builder_for(&fake, grant).setting("volume-group", VG).build().expect("the lvm backend loads");
    let lvm = Lvm { kit, fake };
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    lvm.kit.expand_volume(&volume.id, 12 * MIB, 0).unwrap();
    lvm.kit.node_device(&volume.id, vec![], vec![]).unwrap();
    lvm.kit.delete_volume(&volume.id).unwrap();
    let calls = lvm.kit.exec().calls();
    assert!(calls.len() >= 10, "{calls:?}");
    for call in calls {
        assert_eq!(call.program, LVM);
        assert_eq!(call.args[1..3], ["--config".to_string(), config.to_string()], "{call:?}");
        assert!(call.stdin.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// optional: one config for every node, the volume group on only some of them

/// An `optional` instance for volume group `vg1`, which the fake's lvm does not have.
fn optional_without_the_vg(fake: &Arc<Mutex<FakeLvm>>) -> TestHost {
    builder_for(fake, shipped_grant("vg1", "pool0"))
        .setting("volume-group", "vg1")
        .setting("optional", "true")
        .build()
        .expect("an optional instance loads without its volume group")
}

fn report_vgs_of(vg: &str) -> String {
    format!("vgs --reportformat json --units b --nosuffix -o vg_name,vg_extent_size,vg_free {vg}")
}

#[test]
fn an_optional_instance_without_its_volume_group_serves_nothing() {
    // The node's lvm has vg0 with a volume in it; the instance is for vg1.
    let fake = Arc::new(Mutex::new(FakeLvm::new()));
    let vg0 = builder(&fake).setting("volume-group", VG).build().unwrap();
    let theirs = vg0.create_volume(volume_request("pvc-1", 8 * MIB, 0)).unwrap();
    drop(vg0);

    let kit = optional_without_the_vg(&fake);
    let commands = |kit: &TestHost| -> Vec<String> {
        let calls = kit.exec().calls();
        kit.exec().clear();
        calls.iter().map(|call| call.args.join(" ")).collect()
    };
    assert_eq!(commands(&kit), [report_vgs_of("vg1")], "the load only looks for the VG");

    let capacity = kit.get_capacity(volume_request("x", 0, 0).capabilities, vec![], None).unwrap();
    assert_eq!(capacity.available_bytes, 0);
    assert_eq!(capacity.maximum_volume_size, 0);
    let thin = kit.get_capacity(vec![], params(&[("type", "thin")]), None).unwrap();
    assert_eq!(thin.available_bytes, 0);

    let message = assert_err!(kit.create_volume(volume_request("pvc-2", 8 * MIB, 0)), ResourceExhausted);
    assert_eq!(message, "volume group \"vg1\" is not on this node");
    let mut restore = volume_request("pvc-3", 8 * MIB, 0);
    restore.content_source = Some(ContentSource::Snapshot(id("snap-", "s")));
    assert_err!(kit.create_volume(restore), ResourceExhausted);

    let volume_id = id("csi-", "pvc-1");
    assert_eq!(volume_id, theirs.id, "the same id as vg0's volume: still not found in vg1");
    assert_eq!(kit.find_volume("pvc-1").unwrap(), None);
    let page = kit.list_volumes(0, "").unwrap();
    assert!(page.entries.is_empty() && page.next_token.is_empty());
    let message = assert_err!(kit.get_volume(&volume_id), NotFound);
    assert!(message.contains("volume group \"vg1\" is not on this node"), "{message}");
    assert_err!(kit.expand_volume(&volume_id, 16 * MIB, 0), NotFound);
    assert_err!(kit.node_device(&volume_id, vec![], vec![]), NotFound);
    kit.delete_volume(&volume_id).unwrap();
    kit.delete_volume("not-an-id").unwrap();

    assert_err!(kit.create_snapshot(&volume_id, "snap-1", vec![]), NotFound);
    assert_eq!(kit.find_snapshot("snap-1").unwrap(), None);
    let page = kit.list_snapshots("", "", 0, "").unwrap();
    assert!(page.entries.is_empty() && page.next_token.is_empty());
    assert!(kit.list_snapshots("", &volume_id, 0, "").unwrap().entries.is_empty());
    kit.delete_snapshot(&id("snap-", "snap-1")).unwrap();

    let ran = commands(&kit);
    assert!(ran.iter().all(|c| *c == report_vgs_of("vg1")), "only the look for the VG runs: {ran:?}");
    assert_eq!(ran.len(), 16, "one vgs per call");
    assert_eq!(fake.lock().unwrap().rows.len(), 1, "vg0's volume is untouched");
}

#[test]
fn an_optional_instance_with_its_volume_group_works_as_usual() {
    let fake = Arc::new(Mutex::new(FakeLvm::new().with_pool("pool0", 64 * MIB, "")));
    let kit = builder(&fake)
        .setting("volume-group", VG)
        .setting("thin-pool", "pool0")
        .setting("optional", "true")
        .build()
        .unwrap();
    let commands: Vec<String> = kit.exec().calls().iter().map(|call| call.args.join(" ")).collect();
    assert_eq!(commands, [report_vgs(), report_vgs(), report_lvs("vg0/pool0")]);
    let volume = kit.create_volume(volume_request("pvc-1", 8 * MIB, 0)).unwrap();
    assert_eq!(kit.get_volume(&volume.id).unwrap().id, volume.id);
    let capacity = kit.get_capacity(vec![], vec![], None).unwrap();
    assert_eq!(capacity.available_bytes, GIB - 64 * MIB - 8 * MIB);
    kit.delete_volume(&volume.id).unwrap();
    assert_err!(kit.get_volume(&volume.id), NotFound);

    // Where the VG exists, a wrong thin pool still stops the load.
    let err = builder_for(&fake, shipped_grant(VG, "pool1"))
        .setting("volume-group", VG)
        .setting("thin-pool", "pool1")
        .setting("optional", "true")
        .build()
        .unwrap_err();
    assert!(err.reason.contains("thin pool \"pool1\" does not exist"), "{err}");
}

#[test]
fn an_optional_instance_still_fails_on_lvm_failures_other_than_no_volume_group() {
    // vgs is not granted: the host's own error stops the load.
    let fake = Arc::new(Mutex::new(FakeLvm::new()));
    let fake_for_exec = fake.clone();
    let err = TestHost::builder(backend_bundle::LVM)
        .command(LVM, &[&["lvs|lvcreate|lvremove|lvextend|lvchange", "**"]])
        .respond(move |call| fake_for_exec.lock().unwrap().respond(call))
        .setting("volume-group", "vg1")
        .setting("optional", "true")
        .build()
        .unwrap_err();
    assert!(err.reason.contains("denied by the host"), "{err}");

    // lvm that fails some other way.
    let kit = optional_without_the_vg(&fake);
    type IsExpected = fn(&BackendError) -> bool;
    let cases: [(&str, IsExpected); 2] = [
        ("  Something nobody expected.", |e| matches!(e, BackendError::Internal(_))),
        ("  Global lock failed: check that global lockspace is started", |e| matches!(e, BackendError::Unavailable(_))),
    ];
    for (stderr, expected) in cases {
        fake.lock().unwrap().can("vgs", fail(5, format!("{stderr}\n").as_bytes()));
        let error = backend_error(kit.get_capacity(vec![], vec![], None));
        assert!(expected(&error), "{stderr}: {error:?}");
        fake.lock().unwrap().can("vgs", fail(5, format!("{stderr}\n").as_bytes()));
        let error = backend_error(kit.delete_volume(&id("csi-", "pvc-1")));
        assert!(expected(&error), "{stderr}: {error:?}");
    }
    // And a missing VG without optional stays fatal (see the_load_checks_the_volume_group_and_the_thin_pool).
    let err = builder_for(&fake, shipped_grant("vg1", "pool0"))
        .setting("volume-group", "vg1")
        .setting("optional", "false")
        .build()
        .unwrap_err();
    assert!(err.reason.contains("Volume group \"vg1\" not found"), "{err}");
}

// ---------------------------------------------------------------------------------------
// create-volume: sizes, idempotency, space

#[test]
fn create_rounds_up_to_extents_tags_the_lv_and_reports_its_real_size() {
    let lvm = lvm();
    let volume = create(&lvm, "pvc-1", 10 * MIB + 1, 0).unwrap();
    let lv = id("csi-", "pvc-1");
    assert_eq!(volume.id, lv);
    assert_eq!(volume.capacity_bytes, 12 * MIB);
    assert_eq!(volume.context, params(&[("lvm/volume-group", VG), ("lvm/logical-volume", &lv)]));
    assert_eq!(volume.content_source, None);
    assert!(volume.accessible_topology.is_empty());
    assert_eq!(
        lvm.commands(),
        [
            report_lvs(&format!("vg0/{lv}")),
            report_vgs(),
            format!(
                "lvcreate --yes --wipesignatures y -n {lv} -L 12582912b --addtag wasmcsi.name={} vg0",
                hex("pvc-1")
            ),
            report_lvs(&format!("vg0/{lv}")),
        ]
    );
    assert_eq!(lvm.fake().row(&lv).unwrap().tags, [format!("wasmcsi.name={}", hex("pvc-1"))]);
    assert_eq!(lvm.kit.get_volume(&lv).unwrap(), volume);
    assert_eq!(lvm.kit.find_volume("pvc-1").unwrap(), Some(volume));
    assert_eq!(lvm.kit.find_volume("pvc-2").unwrap(), None);
}

#[test]
fn create_sizes_without_a_required_size() {
    let lvm = lvm();
    let limited = create(&lvm, "limited", 0, 10 * MIB + 1).unwrap();
    assert_eq!(limited.capacity_bytes, 8 * MIB, "the largest whole extents within the limit");
    lvm.kit.delete_volume(&limited.id).unwrap();
    assert_eq!(create(&lvm, "unset", 0, 0).unwrap().capacity_bytes, GIB);
}

#[test]
fn create_refuses_ranges_no_extent_multiple_fits() {
    let lvm = lvm();
    for (required, limit) in [(5 * MIB, 7 * MIB), (0, MIB), (2 * MIB, MIB)] {
        assert_err!(create(&lvm, "pvc-1", required, limit), OutOfRange);
    }
    assert!(lvm.changes().is_empty());
}

#[test]
fn create_is_idempotent_by_name() {
    let lvm = thin_lvm(GIB / 2, &[]);
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    lvm.commands();
    assert_eq!(create(&lvm, "pvc-1", 8 * MIB, 0).unwrap(), volume);
    assert_eq!(create(&lvm, "pvc-1", 5 * MIB, 9 * MIB).unwrap(), volume);
    assert_eq!(create(&lvm, "pvc-1", 0, 0).unwrap(), volume);
    assert!(lvm.changes().is_empty(), "a repeated create runs no lvcreate");

    let message = assert_err!(create(&lvm, "pvc-1", 16 * MIB, 0), AlreadyExists);
    assert!(message.contains("\"pvc-1\" already exists"), "{message}");
    assert_err!(create(&lvm, "pvc-1", 0, 4 * MIB), AlreadyExists);
    assert_err!(create_typed(&lvm, "pvc-1", 8 * MIB, "thin"), AlreadyExists);
    let snapshot = ContentSource::Snapshot(id("snap-", "nope"));
    assert_err!(create_from(&lvm, "pvc-1", 8 * MIB, snapshot), AlreadyExists);
    assert!(lvm.changes().is_empty());
}

#[test]
fn a_create_that_loses_a_race_returns_the_winners_volume() {
    let lvm = lvm();
    let lv = id("csi-", "pvc-1");
    // The winner's LV appears between the backend's lookup and its lvcreate.
    let mut fake = lvm.fake();
    fake.rows.push(Row::thick(&lv, 8 * MIB, &[&format!("wasmcsi.name={}", hex("pvc-1"))]));
    fake.can("lvs", failed_to_find(&format!("vg0/{lv}")));
    drop(fake);
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    assert_eq!(volume.capacity_bytes, 8 * MIB);
    let commands = lvm.commands();
    assert_eq!(commands.iter().filter(|c| c.starts_with("lvcreate")).count(), 1, "{commands:?}");
    assert_eq!(lvm.fake().rows.len(), 1);

    let mut fake = lvm.fake();
    fake.can("lvs", failed_to_find(&format!("vg0/{lv}")));
    drop(fake);
    assert_err!(create(&lvm, "pvc-1", 16 * MIB, 0), AlreadyExists);
}

#[test]
fn thick_create_needs_free_space_beyond_the_reserve_before_lvcreate() {
    let lvm = load_with(FakeLvm::new(), &[("reserve", &(GIB / 2).to_string())]);
    let message = assert_err!(create(&lvm, "big", GIB / 2 + 1, 0), ResourceExhausted);
    assert!(message.contains(&format!("only {} bytes are free", GIB / 2)), "{message}");
    assert!(lvm.changes().is_empty());
    assert_eq!(create(&lvm, "fits", GIB / 2, 0).unwrap().capacity_bytes, GIB / 2);
    assert_err!(create(&lvm, "more", EXTENT, 0), ResourceExhausted);
    assert_eq!(lvm.changes().len(), 1);
}

#[test]
fn thin_create_argv_and_truthful_size() {
    let mut fake = FakeLvm::new().with_pool("pool0", GIB / 2, "0.00");
    fake.thin_chunk = 16 * MIB;
    let lvm = load_with(fake, &[("thin-pool", "pool0")]);
    let volume = create_typed(&lvm, "pvc-1", 10 * MIB, "thin").unwrap();
    let lv = id("csi-", "pvc-1");
    assert_eq!(volume.capacity_bytes, 16 * MIB, "the size lvm made, not the one asked for");
    assert_eq!(
        lvm.changes(),
        [format!("lvcreate --yes -n {lv} -V 12582912b --thinpool pool0 --addtag wasmcsi.name={} vg0", hex("pvc-1"))]
    );
    let row = lvm.fake().row(&lv).unwrap().clone();
    assert_eq!((row.attr.as_str(), row.pool.as_str()), ("Vwi-a-tz--", "pool0"));
    assert_eq!(create_typed(&lvm, "pvc-1", 10 * MIB, "thin").unwrap(), volume);
    assert_err!(create_typed(&lvm, "pvc-1", 10 * MIB, "thick"), AlreadyExists);
    assert_err!(create(&lvm, "pvc-1", 10 * MIB, 0), AlreadyExists);
}

#[test]
fn thin_create_is_bounded_by_the_overprovisioned_pool() {
    let lvm = thin_lvm(100 * MIB, &[("thin-overprovision-ratio", "2")]);
    create_typed(&lvm, "a", 120 * MIB, "thin").unwrap();
    let message = assert_err!(create_typed(&lvm, "b", 84 * MIB, "thin"), ResourceExhausted);
    assert!(message.contains(&format!("only {} bytes are free", 80 * MIB)), "{message}");
    create_typed(&lvm, "b", 80 * MIB, "thin").unwrap();
    assert_err!(create_typed(&lvm, "c", EXTENT, "thin"), ResourceExhausted);
    assert_eq!(lvm.changes().len(), 2);

    // A pool that is half full physically allows half its size × ratio.
    let lvm = load_with(
        FakeLvm::new().with_pool("pool0", 100 * MIB, "50.00"),
        &[("thin-pool", "pool0"), ("thin-overprovision-ratio", "1.5")],
    );
    assert_err!(create_typed(&lvm, "a", 76 * MIB, "thin"), ResourceExhausted);
    create_typed(&lvm, "a", 72 * MIB, "thin").unwrap();
}

#[test]
fn create_checks_its_parameters() {
    let lvm = lvm();
    let message = assert_err!(create_typed(&lvm, "pvc-1", MIB, "thin"), InvalidArgument);
    assert!(message.contains("thin-pool"), "{message}");
    let message = assert_err!(create_typed(&lvm, "pvc-1", MIB, "fast"), InvalidArgument);
    assert!(message.contains("\"fast\""), "{message}");
    let unknown = with_params(volume_request("pvc-1", MIB, 0), &[("stripes", "2")]);
    let message = assert_err!(lvm.kit.create_volume(unknown), InvalidArgument);
    assert!(message.contains("\"stripes\""), "{message}");
    let mut mutable = volume_request("pvc-1", MIB, 0);
    mutable.mutable_parameters = params(&[("iops", "1")]);
    assert_err!(lvm.kit.create_volume(mutable), InvalidArgument);
    let mut multi_node = volume_request("pvc-1", MIB, 0);
    multi_node.capabilities[0].access_mode = AccessMode::MultiNodeMultiWriter;
    assert_err!(lvm.kit.create_volume(multi_node), InvalidArgument);
    assert_err!(create(&lvm, "", MIB, 0), InvalidArgument);
    assert_eq!(lvm.commands(), Vec::<String>::new(), "a bad request runs no lvm");
}

// ---------------------------------------------------------------------------------------
// get-capacity

#[test]
fn capacity_of_thick_volumes_is_vg_free_less_reserve() {
    let lvm = load_with(FakeLvm::new(), &[("reserve", &(100 * MIB + 1).to_string())]);
    create(&lvm, "pvc-1", 200 * MIB, 0).unwrap();
    let capacity = lvm.kit.get_capacity(volume_request("x", 0, 0).capabilities, vec![], None).unwrap();
    let available = GIB - 200 * MIB - (100 * MIB + 1);
    assert_eq!(capacity.available_bytes, available);
    assert_eq!(capacity.maximum_volume_size, 720 * MIB, "whole extents");
    assert_eq!(capacity.minimum_volume_size, EXTENT);
    let typed = lvm.kit.get_capacity(vec![], params(&[("type", "thick")]), None).unwrap();
    assert_eq!(typed, capacity);
}

#[test]
fn capacity_of_thin_volumes_counts_virtual_sizes_against_the_ratio() {
    let lvm = thin_lvm(100 * MIB, &[("thin-overprovision-ratio", "1.5")]);
    create_typed(&lvm, "a", 60 * MIB, "thin").unwrap();
    lvm.fake().rows.push(Row {
        attr: "Vwi-a-tz--".into(),
        pool: "pool0".into(),
        ..Row::thick("someone-elses", 20 * MIB, &[])
    });
    let capacity = lvm.kit.get_capacity(vec![], params(&[("type", "thin")]), None).unwrap();
    assert_eq!(capacity.available_bytes, 150 * MIB - 80 * MIB);
    assert_eq!(capacity.maximum_volume_size, 68 * MIB);
    assert_eq!(capacity.minimum_volume_size, EXTENT);
    let thick = lvm.kit.get_capacity(vec![], vec![], None).unwrap();
    assert_eq!(thick.available_bytes, GIB - 100 * MIB);

    lvm.fake().row_mut("pool0").data_percent = "80.00".into();
    let capacity = lvm.kit.get_capacity(vec![], params(&[("type", "thin")]), None).unwrap();
    assert_eq!(capacity.available_bytes, 30 * MIB, "20 MiB physically free × 1.5");
}

#[test]
fn capacity_for_volumes_this_backend_cannot_make_is_zero() {
    let lvm = lvm();
    let mut multi_node = volume_request("x", 0, 0).capabilities;
    multi_node[0].access_mode = AccessMode::MultiNodeReaderOnly;
    for (capabilities, parameters) in [
        (multi_node, vec![]),
        (vec![], params(&[("type", "thin")])),
        (vec![], params(&[("type", "fast")])),
        (vec![], params(&[("stripes", "2")])),
    ] {
        let capacity = lvm.kit.get_capacity(capabilities, parameters.clone(), None).unwrap();
        assert_eq!(
            (capacity.available_bytes, capacity.maximum_volume_size, capacity.minimum_volume_size),
            (0, 0, 0),
            "{parameters:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// delete-volume

#[test]
fn delete_is_idempotent() {
    let lvm = lvm();
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    lvm.commands();
    lvm.kit.delete_volume(&volume.id).unwrap();
    assert_eq!(lvm.commands(), [report_lvs(VG), format!("lvremove --yes vg0/{}", volume.id)]);
    assert!(lvm.fake().rows.is_empty());
    lvm.kit.delete_volume(&volume.id).unwrap();
    assert_eq!(lvm.commands(), [report_lvs(VG)]);
    for malformed in ["", "csi-", "vg0/csi-x", "--yes", &id("snap-", "pvc-1"), &volume.id.to_uppercase()] {
        lvm.kit.delete_volume(malformed).unwrap();
    }
    assert_eq!(lvm.commands(), Vec::<String>::new(), "a malformed id runs no lvm");
    assert_err!(lvm.kit.get_volume(&volume.id), NotFound);
    assert_eq!(create(&lvm, "pvc-1", 8 * MIB, 0).unwrap().id, volume.id);
}

#[test]
fn delete_refuses_a_thick_origin_with_cow_snapshots() {
    let lvm = lvm();
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    let snapshot = lvm.kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    lvm.commands();
    let message = assert_err!(lvm.kit.delete_volume(&volume.id), FailedPrecondition);
    assert!(message.contains(&snapshot.id), "{message}");
    assert!(lvm.changes().is_empty(), "no lvremove that would take the snapshot with it");
    lvm.kit.delete_snapshot(&snapshot.id).unwrap();
    lvm.kit.delete_volume(&volume.id).unwrap();
    assert!(lvm.fake().rows.is_empty());
}

#[test]
fn deleting_a_thin_origin_keeps_its_thin_snapshots() {
    let lvm = thin_lvm(GIB / 2, &[]);
    let volume = create_typed(&lvm, "pvc-1", 8 * MIB, "thin").unwrap();
    let snapshot = lvm.kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    lvm.kit.delete_volume(&volume.id).unwrap();
    assert_eq!(lvm.fake().row(&snapshot.id).unwrap().origin, "");
    for source_filter in ["", &volume.id] {
        let listed = lvm.kit.list_snapshots("", source_filter, 0, "").unwrap().entries;
        assert_eq!(listed, std::slice::from_ref(&snapshot), "the snapshot keeps its source volume id");
    }
    let restored = create_from(&lvm, "restored", 8 * MIB, ContentSource::Snapshot(snapshot.id.clone())).unwrap();
    assert_eq!(restored.content_source, Some(ContentSource::Snapshot(snapshot.id)));
}

#[test]
fn delete_of_a_volume_in_use_is_a_precondition() {
    let lvm = lvm();
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    lvm.fake().can("lvremove", fail(5, format!("  Logical volume vg0/{} in use.\n", volume.id).as_bytes()));
    let message = assert_err!(lvm.kit.delete_volume(&volume.id), FailedPrecondition);
    assert!(message.contains("in use"), "{message}");
    assert!(lvm.fake().row(&volume.id).is_some());
}

// ---------------------------------------------------------------------------------------
// get-volume, list-volumes and LVs that are not ours

#[test]
fn list_pages_our_volumes_in_id_order() {
    let lvm = lvm();
    lvm.fake().rows.push(Row::thick("home", 8 * MIB, &[]));
    let mut volumes: Vec<Volume> = (0..5).map(|i| create(&lvm, &format!("pvc-{i}"), 8 * MIB, 0).unwrap()).collect();
    volumes.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(lvm.kit.list_volumes(0, "").unwrap().entries, volumes);

    let first = lvm.kit.list_volumes(2, "").unwrap();
    assert_eq!(ids(&first.entries), ids(&volumes[..2]));
    let second = lvm.kit.list_volumes(2, &first.next_token).unwrap();
    assert_eq!(ids(&second.entries), ids(&volumes[2..4]));
    let last = lvm.kit.list_volumes(2, &second.next_token).unwrap();
    assert_eq!(ids(&last.entries), ids(&volumes[4..]));
    assert_eq!(last.next_token, "");
    for token in ["bogus", "home", &id("snap-", "x"), "csi-0123"] {
        assert_err!(lvm.kit.list_volumes(2, token), Aborted);
    }
}

/// LVs whose names or tags only look like ours: none is listed, returned, found or removed.
#[test]
fn lvs_that_are_not_ours_are_invisible_and_never_deleted() {
    let lvm = lvm();
    let ab = id("csi-", "ab");
    let hostile = [
        // Captured: our tag on an LV whose name is not the hash of the tagged name.
        Row::thick("csi-a", 200 * MIB, &["a=b/c+d_e.f-g!h:i&j#k", "wasmcsi.name=6162"]),
        Row::thick(&id("csi-", "no tag"), EXTENT, &[]),
        Row::thick(&id("csi-", "foreign"), EXTENT, &["a=b/c+d_e.f-g!h:i&j#k"]),
        Row::thick(&id("csi-", "other"), EXTENT, &["wasmcsi.name=6162"]),
        Row::thick(&id("csi-", "\u{fffd}"), EXTENT, &["wasmcsi.name=ff"]),
        Row::thick(&id("csi-", "odd"), EXTENT, &["wasmcsi.name=6f6"]),
        Row::thick(&id("csi-", "zz"), EXTENT, &["wasmcsi.name=zz"]),
        Row::thick(&id("csi-", "\u{ab}"), EXTENT, &["wasmcsi.name=C2AB"]),
        Row::thick(&ab, EXTENT, &["wasmcsi.name=6162", "wasmcsi.name=6162"]),
        Row::thick(
            &id("csi-", "bad source"),
            EXTENT,
            &[&format!("wasmcsi.name={}", hex("bad source")), "wasmcsi.source=volume:home"],
        ),
        Row::thick(&id("snap-", "s"), EXTENT, &[&format!("wasmcsi.snapshot={}", hex("s"))]),
    ];
    lvm.fake().rows.extend(hostile.iter().cloned());
    assert_eq!(lvm.kit.list_volumes(0, "").unwrap().entries, []);
    assert_eq!(lvm.kit.list_snapshots("", "", 0, "").unwrap().entries, []);
    assert_eq!(lvm.kit.find_volume("ab").unwrap(), None);
    assert_eq!(lvm.kit.find_snapshot("s").unwrap(), None);
    for row in &hostile {
        assert_err!(lvm.kit.get_volume(&row.name), NotFound);
        assert_err!(lvm.kit.expand_volume(&row.name, 64 * MIB, 0), NotFound);
        assert_err!(lvm.kit.node_device(&row.name, vec![], vec![]), NotFound);
        lvm.kit.delete_volume(&row.name).unwrap();
        lvm.kit.delete_snapshot(&row.name).unwrap();
        assert_err!(create_from(&lvm, "x", 0, ContentSource::Volume(row.name.clone())), NotFound);
    }
    assert!(lvm.changes().is_empty(), "nothing was changed, removed or activated");
    assert_eq!(lvm.fake().rows.len(), hostile.len());

    let message = assert_err!(create(&lvm, "ab", EXTENT, 0), AlreadyExists);
    assert!(message.contains("is not volume \"ab\""), "{message}");
    assert_err!(lvm.kit.create_snapshot(&ab, "s", vec![]), AlreadyExists);
}

#[test]
fn a_report_that_is_not_json_is_internal() {
    let lvm = lvm();
    lvm.fake().can("lvs", ok(b"  not json at all\n"));
    let message = assert_err!(lvm.kit.list_volumes(0, ""), Internal);
    assert!(message.contains("lvm lvs printed no report"), "{message}");
    lvm.fake().can("vgs", ok(report("vg", &[vec![json_field("vg_name", VG)]]).as_bytes()));
    assert_err!(create(&lvm, "pvc-1", MIB, 0), Internal);
    lvm.fake().can("lvs", ok(report("lv", &[vec![json_field("lv_name", "csi-x")]]).as_bytes()));
    assert_err!(lvm.kit.list_volumes(0, ""), Internal);
}

// ---------------------------------------------------------------------------------------
// Error mapping

#[test]
fn lvm_failures_map_to_csi_errors_with_lvms_words() {
    let lvm = thin_lvm(GIB / 4, &[]);
    type IsExpected = fn(&BackendError) -> bool;
    let cases: [(&str, &str, IsExpected); 5] = [
        (
            "  Volume group \"vg0\" has insufficient free space (2 extents): 3 required.",
            "insufficient free space",
            |e| matches!(e, BackendError::ResourceExhausted(_)),
        ),
        ("  Can't create snapshot without using device-mapper kernel driver.", "device-mapper", |e| {
            matches!(e, BackendError::FailedPrecondition(_))
        }),
        ("  Global lock failed: check that global lockspace is started", "Global lock failed", |e| {
            matches!(e, BackendError::Unavailable(_))
        }),
        ("  Logical Volume \"x\" already exists in volume group \"vg0\"", "already exists", |e| {
            matches!(e, BackendError::AlreadyExists(_))
        }),
        ("  Something nobody expected.", "Something nobody expected. (exit status 5)", |e| {
            matches!(e, BackendError::Internal(_))
        }),
    ];
    for (stderr, needle, expected) in cases {
        let noisy = format!(
            "File descriptor 10 (/dev/null) leaked on lvm invocation. Parent PID 1: x\n{ACTIVATION_DISABLED}{stderr}\n"
        );
        lvm.fake().can("lvcreate", fail(5, noisy.as_bytes()));
        let error = backend_error(create(&lvm, "pvc-1", 8 * MIB, 0));
        assert!(expected(&error), "{stderr}: {error:?}");
        assert!(error.message().contains(needle), "{error:?}");
        assert!(!error.message().contains("leaked") && !error.message().contains("Activation disabled"), "{error:?}");
    }
    lvm.fake().can("lvcreate", fail(5, b"  Can't create thin-pool without using device-mapper kernel driver.\n"));
    assert_err!(create_typed(&lvm, "thin", 8 * MIB, "thin"), FailedPrecondition);
}

#[test]
fn a_command_the_grant_does_not_allow_is_the_hosts_failed_precondition() {
    let fake = Arc::new(Mutex::new(FakeLvm::new()));
    let fake_for_exec = fake.clone();
    let kit = TestHost::builder(backend_bundle::LVM)
        .command(LVM, &[&["vgs|lvs|lvcreate|lvremove|lvextend", "**"]])
        .respond(move |call| fake_for_exec.lock().unwrap().respond(call))
        .setting("volume-group", VG)
        .build()
        .unwrap();
    let volume = kit.create_volume(volume_request("pvc-1", 8 * MIB, 0)).unwrap();
    let message = assert_err!(kit.node_device(&volume.id, vec![], vec![]), FailedPrecondition);
    assert!(message.contains("denied by the host"), "{message}");
    assert!(kit.exec().calls().iter().all(|call| call.args[0] != "lvchange"));
}

// ---------------------------------------------------------------------------------------
// expand-volume

#[test]
fn expand_rounds_up_checks_bounds_and_space() {
    let lvm = lvm();
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    lvm.commands();
    let expansion = lvm.kit.expand_volume(&volume.id, 10 * MIB + 1, 0).unwrap();
    assert_eq!((expansion.capacity_bytes, expansion.node_expansion_required), (12 * MIB, true));
    assert_eq!(lvm.changes(), [format!("lvextend --yes -L 12582912b vg0/{}", volume.id)]);
    assert_eq!(lvm.kit.get_volume(&volume.id).unwrap().capacity_bytes, 12 * MIB);

    for (required, limit) in [(12 * MIB, 0), (MIB, 0), (12 * MIB, 12 * MIB)] {
        assert_eq!(lvm.kit.expand_volume(&volume.id, required, limit).unwrap().capacity_bytes, 12 * MIB);
    }
    assert!(lvm.changes().is_empty(), "no-op expansions run no lvextend");
    assert_err!(lvm.kit.expand_volume(&volume.id, 13 * MIB, 15 * MIB), OutOfRange);
    assert_err!(lvm.kit.expand_volume(&volume.id, MIB, 8 * MIB), OutOfRange);
    let message = assert_err!(lvm.kit.expand_volume(&volume.id, 2 * GIB, 0), ResourceExhausted);
    assert!(message.contains("bytes are free"), "{message}");
    assert!(lvm.changes().is_empty());
    assert_err!(lvm.kit.expand_volume(&id("csi-", "absent"), MIB, 0), NotFound);
    assert_err!(lvm.kit.expand_volume("nope", MIB, 0), NotFound);
}

#[test]
fn an_expansion_lvm_already_made_is_a_no_op() {
    let lvm = lvm();
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    lvm.fake().can("lvextend", fail(5, b"  New size given (3 extents) not larger than existing size (3 extents)\n"));
    assert_eq!(lvm.kit.expand_volume(&volume.id, 12 * MIB, 0).unwrap().capacity_bytes, 8 * MIB);
}

#[test]
fn thin_expansion_is_bounded_by_the_overprovisioned_pool() {
    let lvm = thin_lvm(64 * MIB, &[]);
    let volume = create_typed(&lvm, "pvc-1", 32 * MIB, "thin").unwrap();
    assert_err!(lvm.kit.expand_volume(&volume.id, 68 * MIB, 0), ResourceExhausted);
    assert_eq!(lvm.kit.expand_volume(&volume.id, 64 * MIB, 0).unwrap().capacity_bytes, 64 * MIB);
}

// ---------------------------------------------------------------------------------------
// Snapshots

#[test]
fn thin_snapshots_share_the_pool_and_are_idempotent_by_name() {
    let lvm = thin_lvm(GIB / 2, &[]);
    let volume = create_typed(&lvm, "pvc-1", 40 * MIB, "thin").unwrap();
    let other = create_typed(&lvm, "pvc-2", 8 * MIB, "thin").unwrap();
    lvm.commands();
    let snapshot = lvm.kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap();
    let sid = id("snap-", "snap-1");
    assert_eq!(
        snapshot,
        Snapshot {
            id: sid.clone(),
            source_volume_id: volume.id.clone(),
            size_bytes: 40 * MIB,
            creation_time: EPOCH_OF_FIRST_LV + 3,
            ready_to_use: true,
        }
    );
    assert_eq!(
        lvm.changes(),
        [format!(
            "lvcreate --yes -s -n {sid} --addtag wasmcsi.snapshot={} --addtag wasmcsi.source=volume:{} vg0/{}",
            hex("snap-1"),
            volume.id,
            volume.id
        )]
    );
    assert_eq!(lvm.kit.create_snapshot(&volume.id, "snap-1", vec![]).unwrap(), snapshot);
    assert!(lvm.changes().is_empty());
    let message = assert_err!(lvm.kit.create_snapshot(&other.id, "snap-1", vec![]), AlreadyExists);
    assert!(message.contains(&volume.id), "{message}");
    assert_eq!(lvm.kit.find_snapshot("snap-1").unwrap(), Some(snapshot.clone()));
    assert_eq!(lvm.kit.find_snapshot("snap-2").unwrap(), None);

    lvm.kit.delete_snapshot(&snapshot.id).unwrap();
    lvm.kit.delete_snapshot(&snapshot.id).unwrap();
    lvm.kit.delete_snapshot("bogus").unwrap();
    assert_eq!(lvm.changes(), [format!("lvremove --yes vg0/{sid}")]);
    assert_eq!(lvm.kit.find_snapshot("snap-1").unwrap(), None);
}

#[test]
fn cow_snapshots_reserve_a_share_of_the_origin_in_whole_extents() {
    let lvm = load_with(FakeLvm::new(), &[("snapshot-reserve-percent", "50")]);
    let volume = create(&lvm, "pvc-1", 40 * MIB, 0).unwrap();
    lvm.commands();
    let half = lvm.kit.create_snapshot(&volume.id, "half", vec![]).unwrap();
    let tenth = lvm.kit.create_snapshot(&volume.id, "tenth", params(&[("snapshot-reserve-percent", "10")])).unwrap();
    let tiny = lvm.kit.create_snapshot(&volume.id, "tiny", params(&[("snapshot-reserve-percent", "1")])).unwrap();
    let tags =
        |name: &str| format!("--addtag wasmcsi.snapshot={} --addtag wasmcsi.source=volume:{}", hex(name), volume.id);
    assert_eq!(
        lvm.changes(),
        [
            format!("lvcreate --yes -s -L 20971520b -n {} {} vg0/{}", half.id, tags("half"), volume.id),
            format!("lvcreate --yes -s -L 4194304b -n {} {} vg0/{}", tenth.id, tags("tenth"), volume.id),
            format!("lvcreate --yes -s -L 4194304b -n {} {} vg0/{}", tiny.id, tags("tiny"), volume.id),
        ]
    );
    for snapshot in [&half, &tenth, &tiny] {
        assert_eq!(snapshot.size_bytes, 40 * MIB, "the origin's size");
        assert_eq!(snapshot.source_volume_id, volume.id);
        assert!(snapshot.ready_to_use);
    }
    assert_eq!(lvm.fake().row(&volume.id).unwrap().attr, "owi-a-s---");

    lvm.fake().row_mut(&tiny.id).attr = "Swi-I-s---".into();
    assert!(!lvm.kit.find_snapshot("tiny").unwrap().unwrap().ready_to_use, "an overflowed COW snapshot");

    for bad in [params(&[("snapshot-reserve-percent", "0")]), params(&[("type", "thin")])] {
        assert_err!(lvm.kit.create_snapshot(&volume.id, "bad", bad), InvalidArgument);
    }
    assert_err!(lvm.kit.create_snapshot(&volume.id, "", vec![]), InvalidArgument);
    assert_err!(lvm.kit.create_snapshot(&id("csi-", "absent"), "s", vec![]), NotFound);
    lvm.commands();
    assert_err!(lvm.kit.create_snapshot("vg0/x", "s", vec![]), NotFound);
    assert!(lvm.commands().is_empty(), "a malformed source id runs no lvm");
}

#[test]
fn a_cow_snapshot_needs_free_space_beyond_the_reserve() {
    let lvm = load_with(FakeLvm::new(), &[("reserve", &(GIB - 48 * MIB).to_string())]);
    let volume = create(&lvm, "pvc-1", 40 * MIB, 0).unwrap();
    lvm.commands();
    assert_err!(lvm.kit.create_snapshot(&volume.id, "full", vec![]), ResourceExhausted);
    assert!(lvm.changes().is_empty());
    lvm.kit.create_snapshot(&volume.id, "small", params(&[("snapshot-reserve-percent", "10")])).unwrap();
}

#[test]
fn list_snapshots_filters_and_pages() {
    let lvm = thin_lvm(GIB / 2, &[]);
    let a = create_typed(&lvm, "a", 8 * MIB, "thin").unwrap();
    let b = create(&lvm, "b", 8 * MIB, 0).unwrap();
    let mut all: Vec<Snapshot> = (0..4)
        .map(|i| lvm.kit.create_snapshot(if i % 2 == 0 { &a.id } else { &b.id }, &format!("s{i}"), vec![]).unwrap())
        .collect();
    all.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(lvm.kit.list_snapshots("", "", 0, "").unwrap().entries, all);
    let of_a: Vec<Snapshot> = all.iter().filter(|s| s.source_volume_id == a.id).cloned().collect();
    assert_eq!(lvm.kit.list_snapshots("", &a.id, 0, "").unwrap().entries, of_a);
    assert_eq!(lvm.kit.list_snapshots(&all[1].id, "", 0, "").unwrap().entries, all[1..2]);
    let wrong_source = if all[1].source_volume_id == a.id { &b.id } else { &a.id };
    assert!(lvm.kit.list_snapshots(&all[1].id, wrong_source, 0, "").unwrap().entries.is_empty());
    lvm.commands();
    for malformed in ["bogus", "vg0/snap", &a.id, &all[0].id[..10]] {
        assert!(lvm.kit.list_snapshots(malformed, "", 0, "").unwrap().entries.is_empty());
    }
    for malformed in ["bogus", "vg0/csi", &all[0].id, &a.id[..10]] {
        assert!(lvm.kit.list_snapshots("", malformed, 0, "").unwrap().entries.is_empty());
    }
    assert!(lvm.commands().is_empty(), "malformed filters run no lvm");

    let first = lvm.kit.list_snapshots("", "", 3, "").unwrap();
    assert_eq!(first.entries, all[..3]);
    let rest = lvm.kit.list_snapshots("", "", 3, &first.next_token).unwrap();
    assert_eq!((rest.entries.as_slice(), rest.next_token.as_str()), (&all[3..], ""));
    assert_err!(lvm.kit.list_snapshots("", "", 3, &a.id), Aborted);
}

// ---------------------------------------------------------------------------------------
// Restore and clone

#[test]
fn restore_and_clone_are_thin_snapshots_grown_to_the_size_asked_for() {
    let lvm = thin_lvm(GIB / 2, &[]);
    let origin = create_typed(&lvm, "origin", 40 * MIB, "thin").unwrap();
    let snapshot = lvm.kit.create_snapshot(&origin.id, "snap", vec![]).unwrap();
    lvm.commands();

    let source = ContentSource::Snapshot(snapshot.id.clone());
    let restored = create_from(&lvm, "restored", 60 * MIB, source.clone()).unwrap();
    let rid = id("csi-", "restored");
    assert_eq!((restored.id.as_str(), restored.capacity_bytes), (rid.as_str(), 60 * MIB));
    assert_eq!(restored.content_source, Some(source.clone()));
    assert_eq!(
        lvm.changes(),
        [
            format!(
                "lvcreate --yes -s --setactivationskip n -n {rid} --addtag wasmcsi.name={} --addtag wasmcsi.source=snapshot:{} vg0/{}",
                hex("restored"),
                snapshot.id,
                snapshot.id
            ),
            format!("lvextend --yes -L 62914560b vg0/{rid}"),
        ]
    );
    assert_eq!(lvm.fake().row(&rid).unwrap().attr, "Vwi-a-tz--", "activates like any volume");
    assert_eq!(create_from(&lvm, "restored", 60 * MIB, source.clone()).unwrap(), restored);
    assert_err!(create_from(&lvm, "restored", 60 * MIB, ContentSource::Volume(origin.id.clone())), AlreadyExists);
    assert!(lvm.changes().is_empty());

    let clone = create_from(&lvm, "clone", 40 * MIB, ContentSource::Volume(origin.id.clone())).unwrap();
    assert_eq!(clone.capacity_bytes, 40 * MIB);
    assert_eq!(lvm.changes().len(), 1, "same size: no lvextend");
    assert_eq!(lvm.kit.get_volume(&clone.id).unwrap().content_source, Some(ContentSource::Volume(origin.id.clone())));
    assert_err!(create_typed(&lvm, "clone", 40 * MIB, "thin"), AlreadyExists);

    let message = assert_err!(create_from(&lvm, "small", 20 * MIB, source), OutOfRange);
    assert!(message.contains("smaller than"), "{message}");
}

#[test]
fn restore_refuses_what_would_need_a_block_copy() {
    let lvm = thin_lvm(GIB / 2, &[]);
    let thick = create(&lvm, "thick", 8 * MIB, 0).unwrap();
    let cow = lvm.kit.create_snapshot(&thick.id, "cow", vec![]).unwrap();
    let thin = create_typed(&lvm, "thin", 8 * MIB, "thin").unwrap();
    lvm.commands();
    for source in [ContentSource::Volume(thick.id.clone()), ContentSource::Snapshot(cow.id.clone())] {
        let message = assert_err!(create_from(&lvm, "new", 0, source), InvalidArgument);
        assert!(message.contains("block copy"), "{message}");
    }
    let mut thick_clone = with_params(volume_request("new", 0, 0), &[("type", "thick")]);
    thick_clone.content_source = Some(ContentSource::Volume(thin.id.clone()));
    assert_err!(lvm.kit.create_volume(thick_clone), InvalidArgument);
    for source in [
        ContentSource::Snapshot(id("snap-", "absent")),
        ContentSource::Volume(id("csi-", "absent")),
        ContentSource::Snapshot(thin.id.clone()),
        ContentSource::Volume("vg0/thin".into()),
    ] {
        assert_err!(create_from(&lvm, "new", 0, source), NotFound);
    }
    assert!(lvm.changes().is_empty());
}

#[test]
fn a_restore_interrupted_before_its_lvextend_is_finished_by_the_retry() {
    let lvm = thin_lvm(GIB / 2, &[]);
    let origin = create_typed(&lvm, "origin", 8 * MIB, "thin").unwrap();
    let snapshot = lvm.kit.create_snapshot(&origin.id, "snap", vec![]).unwrap();
    let source = ContentSource::Snapshot(snapshot.id);
    lvm.fake().can("lvextend", fail(5, b"  Global lock failed: check that global lockspace is started\n"));
    assert_err!(create_from(&lvm, "restored", 16 * MIB, source.clone()), Unavailable);
    lvm.commands();
    let restored = create_from(&lvm, "restored", 16 * MIB, source).unwrap();
    assert_eq!(restored.capacity_bytes, 16 * MIB);
    assert_eq!(lvm.changes(), [format!("lvextend --yes -L 16777216b vg0/{}", restored.id)]);
}

// ---------------------------------------------------------------------------------------
// node-device and the calls LVM does not serve

#[test]
fn node_device_activates_the_lv_and_names_its_device_node() {
    let lvm = lvm();
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    lvm.commands();
    let device = lvm.kit.node_device(&volume.id, volume.context.clone(), vec![]).unwrap();
    assert_eq!(device, Device::Block(format!("/dev/vg0/{}", volume.id)));
    assert_eq!(lvm.changes(), [format!("lvchange --yes -ay -K vg0/{}", volume.id)]);

    let elsewhere = params(&[("lvm/volume-group", "vg1")]);
    let message = assert_err!(lvm.kit.node_device(&volume.id, elsewhere, vec![]), FailedPrecondition);
    assert!(message.contains("\"vg1\""), "{message}");
    for absent in [id("csi-", "absent"), "../../dev/sda".into(), String::new()] {
        assert_err!(lvm.kit.node_device(&absent, vec![], vec![]), NotFound);
    }
    assert!(lvm.changes().is_empty());
}

#[test]
fn publish_and_modify_are_unimplemented() {
    let lvm = lvm();
    let volume = create(&lvm, "pvc-1", 8 * MIB, 0).unwrap();
    let capability = volume_request("x", 0, 0).capabilities.remove(0);
    assert_err!(lvm.kit.controller_publish(&volume.id, "node", capability, false, vec![]), Unimplemented);
    assert_err!(lvm.kit.controller_unpublish(&volume.id, "node"), Unimplemented);
    assert_err!(lvm.kit.modify_volume(&volume.id, params(&[("iops", "1")])), Unimplemented);
}
