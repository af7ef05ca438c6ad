//! The `optional` setting: one config for every node of a DaemonSet when only some nodes
//! have the volume group.
//!
//! Every call of an `optional` instance first asks lvm for the volume group
//! ([`lvm::find_vg`], the one place lvm's "volume group not found" is read as absence).
//! Where it is not found, the call does not run: it gets the answer of a node with no space
//! and none of this instance's volumes or snapshots, so the CO places volumes elsewhere and
//! nothing is claimed that could live on another node:
//!
//! | call                                          | answer                                  |
//! |-----------------------------------------------|-----------------------------------------|
//! | validate-settings                             | ok, with a warning in the host log      |
//! | get-capacity                                  | 0 bytes                                 |
//! | create-volume                                 | `resource-exhausted`                    |
//! | find-volume, find-snapshot                    | none                                    |
//! | list-volumes, list-snapshots                  | an empty page                           |
//! | get-volume, expand-volume, node-device        | `not-found`                             |
//! | create-snapshot                               | `not-found` (its source is not here)    |
//! | delete-volume, delete-snapshot                | ok (nothing of ours can exist here)     |
//!
//! Any other answer of lvm (a denied grant, a broken lvm, a `vgs` that does not report the
//! VG) fails the call as before, and where the VG exists the call runs as usual (so a wrong
//! thin pool still stops the load there). The VG is looked for on every call, which costs an
//! `optional` instance one `vgs` per call, and serves a VG made after the host started.
//! Without `optional` nothing is looked for first: a missing VG is `failed-precondition`
//! and stops the load.

use kit::sizing::NO_CAPACITY;
use kit::types::{Capacity, Error, SnapshotPage, VolumePage};

use crate::context::Ctx;
use crate::lvm::{self, VgOnNode};

/// Runs `operation`, or answers with `absent` when this is an `optional` instance and lvm
/// says its volume group is not on this node.
pub fn serve<T>(
    ctx: &Ctx,
    operation: impl FnOnce(&Ctx) -> Result<T, Error>,
    absent: impl FnOnce(&Absent) -> Result<T, Error>,
) -> Result<T, Error> {
    if ctx.settings.optional
        && let VgOnNode::Absent(lvm_says) = lvm::find_vg(ctx)?
    {
        return absent(&Absent { ctx, lvm_says });
    }
    operation(ctx)
}

/// The answers of an `optional` instance whose volume group is not on this node.
pub struct Absent<'c> {
    ctx: &'c Ctx<'c>,
    /// What lvm said of the volume group.
    lvm_says: String,
}

impl Absent<'_> {
    /// `validate-settings`: the instance loads, and the host log says it serves nothing here.
    pub fn serves_nothing(&self) -> Result<(), Error> {
        self.ctx.platform.warn(&format!(
            "{}: this instance serves nothing here (setting optional = true; {})",
            self.not_here(),
            self.lvm_says
        ));
        Ok(())
    }

    /// No space for new volumes: the scheduler never picks this node for the instance.
    pub fn no_capacity(&self) -> Result<Capacity, Error> {
        Ok(NO_CAPACITY)
    }

    /// `create-volume`: `resource-exhausted`, so the CO tries another node.
    pub fn no_space<T>(&self) -> Result<T, Error> {
        Err(Error::ResourceExhausted(self.not_here()))
    }

    /// A volume or snapshot (`noun`) of this instance named by a request cannot be here.
    pub fn not_found<T>(&self, noun: &str, id: &str) -> Result<T, Error> {
        Err(Error::NotFound(format!("{noun} {id:?} does not exist: {}", self.not_here())))
    }

    pub fn no_volumes(&self) -> Result<VolumePage, Error> {
        Ok(VolumePage { entries: Vec::new(), next_token: String::new() })
    }

    pub fn no_snapshots(&self) -> Result<SnapshotPage, Error> {
        Ok(SnapshotPage { entries: Vec::new(), next_token: String::new() })
    }

    fn not_here(&self) -> String {
        format!("volume group {:?} is not on this node", self.ctx.settings.volume_group)
    }
}

#[cfg(test)]
mod tests {
    use kit::types::ExecOutput;

    use super::*;
    use crate::context::fake::{FakePlatform, fail, ok};
    use crate::report::fixtures::{LVS_EMPTY, VGS_CAPTURED};
    use crate::volumes;

    const NO_VG: &str = "  Volume group \"vgcap\" not found\n  Cannot process volume group vgcap";
    const OPTIONAL: &[(&str, &str)] = &[("volume-group", "vgcap"), ("optional", "true")];
    const STRICT: &[(&str, &str)] = &[("volume-group", "vgcap")];

    /// lvm on a node without the volume group, as lvm 2.03.16 answers.
    fn no_vg(args: &[String]) -> Result<ExecOutput, Error> {
        let section = if args[0] == "vgs" { "\"vg\"" } else { "\"lv\"" };
        Ok(ExecOutput {
            status: 5,
            stdout: LVS_EMPTY.replace("\"lv\"", section).into_bytes(),
            stderr: NO_VG.as_bytes().to_vec(),
        })
    }

    fn subcommands(platform: &FakePlatform) -> Vec<String> {
        platform.calls.borrow().iter().map(|(_, args)| args[0].clone()).collect()
    }

    /// Serves a call whose operation must not run.
    fn absent_answer<T>(ctx: &Ctx, absent: impl FnOnce(&Absent) -> Result<T, Error>) -> Result<T, Error> {
        serve(ctx, |_| panic!("the operation ran on a node without the volume group"), absent)
    }

    #[test]
    fn without_the_vg_an_optional_instance_loads_with_a_warning() {
        let platform = FakePlatform::new(no_vg);
        let ctx = platform.ctx(OPTIONAL);
        serve(&ctx, volumes::validate, |absent| absent.serves_nothing()).unwrap();
        assert_eq!(subcommands(&platform), ["vgs"], "one vgs, and the validation does not run");
        let warnings = platform.warnings.borrow();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with(
                "volume group \"vgcap\" is not on this node: this instance serves nothing here (setting optional = true; lvm vgs: Volume group \"vgcap\" not found"
            ),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn without_the_vg_an_optional_instance_has_nothing_and_no_space() {
        let platform = FakePlatform::new(no_vg);
        let ctx = platform.ctx(OPTIONAL);
        assert_eq!(absent_answer(&ctx, |absent| absent.no_capacity()).unwrap(), NO_CAPACITY);
        assert_eq!(
            absent_answer::<()>(&ctx, |absent| absent.no_space()),
            Err(Error::ResourceExhausted("volume group \"vgcap\" is not on this node".into()))
        );
        assert_eq!(
            absent_answer::<()>(&ctx, |absent| absent.not_found("volume", "csi-1")),
            Err(Error::NotFound("volume \"csi-1\" does not exist: volume group \"vgcap\" is not on this node".into()))
        );
        let volumes = absent_answer(&ctx, |absent| absent.no_volumes()).unwrap();
        assert!(volumes.entries.is_empty() && volumes.next_token.is_empty());
        let snapshots = absent_answer(&ctx, |absent| absent.no_snapshots()).unwrap();
        assert!(snapshots.entries.is_empty() && snapshots.next_token.is_empty());
        assert_eq!(subcommands(&platform), ["vgs"; 5], "only the look for the VG runs");
        assert!(platform.warnings.borrow().is_empty(), "only the load warns");
    }

    #[test]
    fn with_the_vg_an_optional_instance_runs_the_call() {
        let platform = FakePlatform::new(|args| ok(if args[0] == "vgs" { VGS_CAPTURED } else { LVS_EMPTY }));
        let ctx = platform.ctx(OPTIONAL);
        serve(&ctx, volumes::validate, |_| panic!("absent with the VG there")).unwrap();
        assert_eq!(subcommands(&platform), ["vgs", "vgs"]);

        // A wrong thin pool on a node that has the VG still stops the load.
        let platform = FakePlatform::new(|args| match args[0].as_str() {
            "vgs" => ok(VGS_CAPTURED),
            _ => fail(5, "  Failed to find logical volume \"vgcap/pool0\""),
        });
        let ctx = platform.ctx(&[("volume-group", "vgcap"), ("optional", "true"), ("thin-pool", "pool0")]);
        let result = serve(&ctx, volumes::validate, |_| panic!("absent with the VG there"));
        assert!(
            matches!(&result, Err(Error::FailedPrecondition(m)) if m.contains("thin pool \"pool0\" does not exist")),
            "{result:?}"
        );
        assert!(platform.warnings.borrow().is_empty());
    }

    #[test]
    fn other_failures_are_not_absence() {
        let denied = Error::FailedPrecondition("exec of /sbin/lvm denied by the host".into());
        let expected = denied.clone();
        let platform = FakePlatform::new(move |_| Err(denied.clone()));
        let ctx = platform.ctx(OPTIONAL);
        assert_eq!(serve(&ctx, volumes::validate, |_| panic!("absent")), Err(expected));

        let platform = FakePlatform::new(|_| fail(3, "  Something nobody expected."));
        let ctx = platform.ctx(OPTIONAL);
        assert!(matches!(
            serve(&ctx, volumes::validate, |_| panic!("absent")),
            Err(Error::Internal(m)) if m.contains("Something nobody expected.")
        ));

        // vgs that succeeds without the VG: lvm did not say "not found".
        let platform = FakePlatform::new(|_| ok(VGS_CAPTURED));
        let ctx = platform.ctx(&[("volume-group", "vg0"), ("optional", "true")]);
        assert!(matches!(
            serve(&ctx, volumes::validate, |_| panic!("absent")),
            Err(Error::FailedPrecondition(m)) if m.contains("does not report it")
        ));
    }

    #[test]
    fn without_optional_nothing_is_looked_for_first_and_a_missing_vg_fails() {
        let platform = FakePlatform::new(no_vg);
        let ctx = platform.ctx(STRICT);
        let result = serve(&ctx, volumes::validate, |_| panic!("absent without optional"));
        assert!(
            matches!(&result, Err(Error::FailedPrecondition(m)) if m.contains("(setting volume-group) cannot be used: lvm vgs: Volume group \"vgcap\" not found")),
            "{result:?}"
        );
        assert_eq!(subcommands(&platform), ["vgs"], "the validation's own vgs only");
        let listed = serve(&ctx, |ctx| volumes::list(ctx, 0, ""), |_| panic!("absent without optional"));
        assert!(matches!(listed, Err(Error::FailedPrecondition(_))), "{listed:?}");
        assert!(platform.warnings.borrow().is_empty());
    }
}
