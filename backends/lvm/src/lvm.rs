//! The lvm commands this backend runs, as argument vectors through `host.exec`, never a
//! shell: `<lvm> <subcommand> …`, with only the subcommands `vgs lvs lvcreate lvremove
//! lvextend lvchange` and only the options below (the shipped grant allows exactly these;
//! the operator's `--config` is added by the host from that grant, never by this backend).
//! Reports are always `--reportformat json --units b --nosuffix -o <columns>` (`report.rs`);
//! commands that could prompt get `--yes`; sizes are given in bytes (`-L <n>b`). A failure is
//! read by `lvmerr.rs`.

use kit::types::Error;

use crate::context::Ctx;
use crate::lvmerr::{Condition, Failure};
use crate::report::{self, LV_COLUMNS, Lv, VG_COLUMNS, Vg};

#[derive(Clone, Copy)]
enum Subcommand {
    Vgs,
    Lvs,
    Lvcreate,
    Lvremove,
    Lvextend,
    Lvchange,
}

impl Subcommand {
    fn name(self) -> &'static str {
        match self {
            Subcommand::Vgs => "vgs",
            Subcommand::Lvs => "lvs",
            Subcommand::Lvcreate => "lvcreate",
            Subcommand::Lvremove => "lvremove",
            Subcommand::Lvextend => "lvextend",
            Subcommand::Lvchange => "lvchange",
        }
    }
}

/// How `lvcreate` makes a new LV.
#[derive(Clone, Copy, Debug)]
pub enum Layout<'a> {
    /// A linear LV of `size` bytes, its old signatures wiped.
    Thick { size: u64 },
    /// A thin LV of virtual `size` bytes in `pool`.
    Thin { size: u64, pool: &'a str },
    /// A thin snapshot of thin LV `origin` that becomes a volume (restore, clone): it
    /// activates like any volume.
    ThinClone { origin: &'a str },
    /// A thin snapshot of thin LV `origin`, taken as a CSI snapshot (LVM skips activating it).
    ThinSnapshot { origin: &'a str },
    /// A COW snapshot of thick LV `origin` with a COW area of `size` bytes.
    CowSnapshot { origin: &'a str, size: u64 },
}

/// Whether the instance's volume group is on this node, as lvm says.
#[derive(Debug)]
pub enum VgOnNode {
    Present(Vg),
    /// lvm says the volume group is not found; its message.
    Absent(String),
}

/// The volume group of this instance. `failed-precondition` when it does not exist: the
/// settings or the node are wrong, not the request.
pub fn vg(ctx: &Ctx) -> Result<Vg, Error> {
    match find_vg(ctx)? {
        VgOnNode::Present(vg) => Ok(vg),
        VgOnNode::Absent(message) => Err(unusable_vg(ctx, &message)),
    }
}

/// Looks for the volume group of this instance: the one place lvm's "not found" for it is
/// read as [`VgOnNode::Absent`] ([`vg`] and, for an `optional` instance, `optional.rs` build
/// on it). Every other failure is an error, and so is a `vgs` that succeeds without
/// reporting the volume group.
pub fn find_vg(ctx: &Ctx) -> Result<VgOnNode, Error> {
    let name = &ctx.settings.volume_group;
    let stdout = match report(ctx, Subcommand::Vgs, VG_COLUMNS, name.clone()) {
        Ok(stdout) => stdout,
        Err(Failure::Lvm { condition: Condition::NoVolumeGroup, message }) => return Ok(VgOnNode::Absent(message)),
        Err(failure) => return Err(failure.into()),
    };
    report::parse_vgs(&stdout)?
        .into_iter()
        .find(|vg| vg.name == *name)
        .map(VgOnNode::Present)
        .ok_or_else(|| unusable_vg(ctx, "lvm vgs does not report it"))
}

fn unusable_vg(ctx: &Ctx, detail: &str) -> Error {
    Error::FailedPrecondition(format!(
        "volume group {:?} (setting volume-group) cannot be used: {detail}",
        ctx.settings.volume_group
    ))
}

/// Every LV of the volume group.
pub fn lvs(ctx: &Ctx) -> Result<Vec<Lv>, Error> {
    let stdout = report(ctx, Subcommand::Lvs, LV_COLUMNS, ctx.settings.volume_group.clone())?;
    Ok(in_our_vg(ctx, report::parse_lvs(&stdout)?).collect())
}

/// The LV named `name`, if the volume group has one.
pub fn lv(ctx: &Ctx, name: &str) -> Result<Option<Lv>, Error> {
    match report(ctx, Subcommand::Lvs, LV_COLUMNS, ctx.lv_path(name)) {
        Ok(stdout) => Ok(in_our_vg(ctx, report::parse_lvs(&stdout)?).find(|lv| lv.name == name)),
        Err(failure) if failure.is(Condition::NotFound) => Ok(None),
        Err(failure) => Err(failure.into()),
    }
}

/// Makes LV `name` with `tags`. `already-exists` when an LV of that name exists.
pub fn create(ctx: &Ctx, name: &str, tags: &[String], layout: Layout) -> Result<(), Error> {
    let mut args = vec!["--yes".to_owned()];
    let target = match layout {
        Layout::Thick { size } => {
            args.extend(strings(["--wipesignatures", "y", "-n", name, "-L", &bytes(size)]));
            ctx.settings.volume_group.clone()
        }
        Layout::Thin { size, pool } => {
            args.extend(strings(["-n", name, "-V", &bytes(size), "--thinpool", pool]));
            ctx.settings.volume_group.clone()
        }
        Layout::ThinClone { origin } => {
            args.extend(strings(["-s", "--setactivationskip", "n", "-n", name]));
            ctx.lv_path(origin)
        }
        Layout::ThinSnapshot { origin } => {
            args.extend(strings(["-s", "-n", name]));
            ctx.lv_path(origin)
        }
        Layout::CowSnapshot { origin, size } => {
            args.extend(strings(["-s", "-L", &bytes(size), "-n", name]));
            ctx.lv_path(origin)
        }
    };
    for tag in tags {
        args.extend(strings(["--addtag", tag]));
    }
    args.push(target);
    run(ctx, Subcommand::Lvcreate, args)?;
    Ok(())
}

/// Grows LV `name` to `size` bytes; one that is already that large is left alone.
pub fn extend(ctx: &Ctx, name: &str, size: u64) -> Result<(), Error> {
    let args = strings(["--yes", "-L", &bytes(size), &ctx.lv_path(name)]);
    match run(ctx, Subcommand::Lvextend, args) {
        Err(failure) if !failure.is(Condition::NotLarger) => Err(failure.into()),
        _ => Ok(()),
    }
}

/// Removes LV `name`; one that is gone already is fine.
pub fn remove(ctx: &Ctx, name: &str) -> Result<(), Error> {
    match run(ctx, Subcommand::Lvremove, strings(["--yes", &ctx.lv_path(name)])) {
        Err(failure) if !failure.is(Condition::NotFound) => Err(failure.into()),
        _ => Ok(()),
    }
}

/// Activates LV `name` on this node, even when it is flagged to skip activation.
pub fn activate(ctx: &Ctx, name: &str) -> Result<(), Error> {
    let args = strings(["--yes", "-ay", "-K", &ctx.lv_path(name)]);
    run(ctx, Subcommand::Lvchange, args)?;
    Ok(())
}

fn report(ctx: &Ctx, subcommand: Subcommand, columns: &str, target: String) -> Result<Vec<u8>, Failure> {
    let mut args = strings(["--reportformat", "json", "--units", "b", "--nosuffix", "-o", columns]);
    args.push(target);
    run(ctx, subcommand, args)
}

fn run(ctx: &Ctx, subcommand: Subcommand, args: Vec<String>) -> Result<Vec<u8>, Failure> {
    let argv = [vec![subcommand.name().to_owned()], args].concat();
    let output = ctx.platform.exec(&ctx.settings.lvm, &argv)?;
    match Failure::of(subcommand.name(), &output) {
        Some(failure) => Err(failure),
        None => Ok(output.stdout),
    }
}

/// Rows of our VG only: a report is never trusted to hold just what was asked for.
fn in_our_vg<'c>(ctx: &'c Ctx, lvs: Vec<Lv>) -> impl Iterator<Item = Lv> + 'c {
    lvs.into_iter().filter(|lv| lv.vg == ctx.settings.volume_group)
}

fn bytes(size: u64) -> String {
    format!("{size}b")
}

fn strings<const N: usize>(args: [&str; N]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::{FakePlatform, fail, ok};
    use crate::report::fixtures::{LVS_CAPTURED, LVS_EMPTY, VGS_CAPTURED};

    const VG0: &[(&str, &str)] = &[("volume-group", "vg0")];

    fn argv(platform: &FakePlatform) -> Vec<Vec<String>> {
        platform.calls.borrow().iter().map(|(_, args)| args.clone()).collect()
    }

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn reports_ask_for_json_bytes_and_explicit_columns() {
        let platform = FakePlatform::new(|args| ok(if args[0] == "vgs" { VGS_CAPTURED } else { LVS_CAPTURED }));
        let ctx = platform.ctx(&[("volume-group", "vgcap")]);
        assert_eq!(vg(&ctx).unwrap().extent_size, 4 << 20);
        assert_eq!(lvs(&ctx).unwrap().len(), 1);
        assert_eq!(lv(&ctx, "csi-a").unwrap().unwrap().size, 209_715_200);
        assert_eq!(lv(&ctx, "csi-b").unwrap(), None);
        let columns = "lv_name,vg_name,lv_size,lv_tags,lv_attr,pool_lv,origin,lv_time,data_percent";
        assert_eq!(
            argv(&platform),
            [
                words("vgs --reportformat json --units b --nosuffix -o vg_name,vg_extent_size,vg_free vgcap"),
                words(&format!("lvs --reportformat json --units b --nosuffix -o {columns} vgcap")),
                words(&format!("lvs --reportformat json --units b --nosuffix -o {columns} vgcap/csi-a")),
                words(&format!("lvs --reportformat json --units b --nosuffix -o {columns} vgcap/csi-b")),
            ]
        );
        assert!(platform.calls.borrow().iter().all(|(program, _)| program == "/sbin/lvm"));
    }

    #[test]
    fn every_command_gets_the_configured_program_and_no_config() {
        let platform = FakePlatform::new(|_| ok(""));
        let ctx = platform.ctx(&[("volume-group", "vg0"), ("lvm", "/usr/sbin/lvm")]);
        create(&ctx, "csi-1", &["wasmcsi.name=61".into()], Layout::Thick { size: 8 << 20 }).unwrap();
        extend(&ctx, "csi-1", 12 << 20).unwrap();
        activate(&ctx, "csi-1").unwrap();
        remove(&ctx, "csi-1").unwrap();
        let calls = platform.calls.borrow();
        assert!(calls.iter().all(|(program, _)| program == "/usr/sbin/lvm"));
        assert_eq!(
            argv(&platform),
            [
                words("lvcreate --yes --wipesignatures y -n csi-1 -L 8388608b --addtag wasmcsi.name=61 vg0"),
                words("lvextend --yes -L 12582912b vg0/csi-1"),
                words("lvchange --yes -ay -K vg0/csi-1"),
                words("lvremove --yes vg0/csi-1"),
            ]
        );
    }

    #[test]
    fn create_layouts() {
        let platform = FakePlatform::new(|_| ok(""));
        let ctx = platform.ctx(VG0);
        let tags = ["t1".to_string(), "t2".to_string()];
        for layout in [
            Layout::Thin { size: 4096, pool: "pool0" },
            Layout::ThinClone { origin: "snap-1" },
            Layout::ThinSnapshot { origin: "csi-1" },
            Layout::CowSnapshot { origin: "csi-1", size: 4096 },
        ] {
            create(&ctx, "new", &tags, layout).unwrap();
        }
        assert_eq!(
            argv(&platform),
            [
                words("lvcreate --yes -n new -V 4096b --thinpool pool0 --addtag t1 --addtag t2 vg0"),
                words("lvcreate --yes -s --setactivationskip n -n new --addtag t1 --addtag t2 vg0/snap-1"),
                words("lvcreate --yes -s -n new --addtag t1 --addtag t2 vg0/csi-1"),
                words("lvcreate --yes -s -L 4096b -n new --addtag t1 --addtag t2 vg0/csi-1"),
            ]
        );
    }

    #[test]
    fn failures_that_mean_done_are_not_errors() {
        let platform = FakePlatform::new(|args| match args[0].as_str() {
            "lvextend" => fail(5, "  New size given (25 extents) not larger than existing size (50 extents)"),
            "lvremove" => fail(5, "  Failed to find logical volume \"vg0/csi-a\""),
            _ => fail(5, "  Failed to find logical volume \"vg0/csi-a\""),
        });
        let ctx = platform.ctx(VG0);
        extend(&ctx, "csi-a", 4096).unwrap();
        remove(&ctx, "csi-a").unwrap();
        assert_eq!(lv(&ctx, "csi-a").unwrap(), None);
        assert!(matches!(activate(&ctx, "csi-a"), Err(Error::NotFound(_))));
    }

    #[test]
    fn a_missing_volume_group_is_a_precondition() {
        let platform = FakePlatform::new(|args| {
            let stderr = "  Volume group \"vg0\" not found\n  Cannot process volume group vg0";
            match args[0].as_str() {
                "vgs" => Ok(kit::types::ExecOutput {
                    status: 5,
                    stdout: LVS_EMPTY.replace("\"lv\"", "\"vg\"").into_bytes(),
                    stderr: stderr.as_bytes().to_vec(),
                }),
                _ => fail(5, stderr),
            }
        });
        let ctx = platform.ctx(VG0);
        let Err(Error::FailedPrecondition(message)) = vg(&ctx) else { panic!("expected failed-precondition") };
        assert!(
            message.starts_with(
                "volume group \"vg0\" (setting volume-group) cannot be used: lvm vgs: Volume group \"vg0\" not found"
            ),
            "{message}"
        );
        assert!(matches!(lv(&ctx, "csi-a"), Err(Error::FailedPrecondition(_))));
        assert!(matches!(remove(&ctx, "csi-a"), Err(Error::FailedPrecondition(_))));
        let VgOnNode::Absent(lvm_says) = find_vg(&ctx).unwrap() else { panic!("expected absent") };
        assert!(lvm_says.starts_with("lvm vgs: Volume group \"vg0\" not found"), "{lvm_says}");

        let platform = FakePlatform::new(|_| ok(VGS_CAPTURED));
        assert!(
            matches!(vg(&platform.ctx(VG0)), Err(Error::FailedPrecondition(m)) if m.contains("does not report it"))
        );
        assert!(
            matches!(find_vg(&platform.ctx(VG0)), Err(Error::FailedPrecondition(m)) if m.contains("does not report it"))
        );
        assert!(matches!(
            find_vg(&platform.ctx(&[("volume-group", "vgcap")])),
            Ok(VgOnNode::Present(vg)) if vg.name == "vgcap"
        ));
    }

    #[test]
    fn host_errors_pass_through_and_rows_of_other_vgs_are_ignored() {
        let denied = Error::FailedPrecondition("exec of /sbin/lvm denied".into());
        let expected = denied.clone();
        let platform = FakePlatform::new(move |_| Err(denied.clone()));
        let ctx = platform.ctx(VG0);
        assert_eq!(lvs(&ctx), Err(expected.clone()));
        assert_eq!(create(&ctx, "x", &[], Layout::Thick { size: 1 }), Err(expected));

        let platform = FakePlatform::new(|_| ok(LVS_CAPTURED));
        let ctx = platform.ctx(VG0);
        assert_eq!(lvs(&ctx).unwrap(), []);
        assert_eq!(lv(&ctx, "csi-a").unwrap(), None);
    }
}
