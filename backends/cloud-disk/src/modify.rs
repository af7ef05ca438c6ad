//! Changing a volume in place with ModifyVolume: expanding it (CSI ControllerExpandVolume)
//! and changing its type, IOPS or throughput (ControllerModifyVolume). Both wait until the
//! modification reaches `optimizing` (the new size and performance are usable; EBS goes on
//! optimizing in the background) or `completed`.
//!
//! EBS takes one modification at a time: a retry that finds its own modification still
//! running (the same targets) waits for it instead of failing.

use kit::types::{CapacityRange, Error, Expansion};

use crate::context::Ctx;
use crate::ec2::Ec2;
use crate::model::{self, Modification};
use crate::parameters::{Tuning, VolumeType};
use crate::sizing;
use crate::volumes;
use crate::wait::{self, Poll};

/// Grows a volume to what `range` requires (rounded up to whole GiB). A volume already
/// that large is left alone, so a retried expansion succeeds. The node grows the
/// filesystem afterwards.
pub fn expand(ctx: &Ctx, volume_id: &str, range: &CapacityRange) -> Result<Expansion, Error> {
    let ec2 = Ec2::connect(ctx)?;
    let volume = volumes::require(&ec2, volume_id)?;
    let size_gib = match sizing::expanded_gib(volume.size_gib, range, volume_type(&volume)?)? {
        Some(size_gib) => {
            apply(ctx, &ec2, volume_id, Some(size_gib), &Tuning::default())?;
            ctx.platform.info(&format!("expanded volume {volume_id} from {} to {size_gib} GiB", volume.size_gib));
            size_gib
        }
        None => volume.size_gib,
    };
    Ok(Expansion { capacity_bytes: sizing::bytes(size_gib), node_expansion_required: true })
}

/// Applies mutable parameters (`type`, `iops`, `throughput`). Values the volume already
/// has are not sent again; a request that changes nothing succeeds at once.
pub fn modify(ctx: &Ctx, volume_id: &str, mutable_parameters: &[(String, String)]) -> Result<(), Error> {
    let requested = Tuning::parse("mutable parameter", mutable_parameters)?;
    let ec2 = Ec2::connect(ctx)?;
    let volume = volumes::require(&ec2, volume_id)?;
    requested.check(volume_type(&volume)?)?;
    let changes = Tuning {
        volume_type: requested.volume_type.filter(|t| t.name() != volume.volume_type),
        iops: requested.iops.filter(|iops| volume.iops != Some(*iops)),
        throughput: requested.throughput.filter(|throughput| volume.throughput != Some(*throughput)),
    };
    if changes == Tuning::default() {
        return Ok(());
    }
    apply(ctx, &ec2, volume_id, None, &changes)?;
    ctx.platform.info(&format!("modified volume {volume_id}: {changes:?}"));
    Ok(())
}

fn volume_type(volume: &model::Volume) -> Result<VolumeType, Error> {
    VolumeType::parse(&volume.volume_type).ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "volume {} has type {:?}, which this backend does not manage",
            volume.id, volume.volume_type
        ))
    })
}

/// Starts the modification (or finds the same one running) and waits for it.
fn apply(ctx: &Ctx, ec2: &Ec2, volume_id: &str, size_gib: Option<u64>, tuning: &Tuning) -> Result<(), Error> {
    let started = match ec2.modify_volume(volume_id, size_gib, tuning) {
        Ok(modification) => modification,
        Err(failure) if failure.is("IncorrectModificationState") => match ec2.modification(volume_id)? {
            Some(running) if running.state != "failed" && reaches(&running, size_gib, tuning) => running,
            _ => return Err(failure.into()),
        },
        Err(failure) => return Err(failure.into()),
    };
    let what = format!("the modification of volume {volume_id}");
    match progress(volume_id, started)? {
        Poll::Ready(()) => Ok(()),
        Poll::Pending(state) => wait::until(ctx, &what, &state, || match ec2.modification(volume_id)? {
            Some(modification) => progress(volume_id, modification),
            None => Ok(Poll::Pending("not visible yet".into())),
        }),
    }
}

/// Whether `modification` goes where this request wants the volume to be.
fn reaches(modification: &Modification, size_gib: Option<u64>, tuning: &Tuning) -> bool {
    size_gib.is_none_or(|size| modification.target_size.is_some_and(|target| target >= size))
        && tuning.volume_type.is_none_or(|t| modification.target_type.as_deref() == Some(t.name()))
        && tuning.iops.is_none_or(|iops| modification.target_iops == Some(iops))
        && tuning.throughput.is_none_or(|throughput| modification.target_throughput == Some(throughput))
}

fn progress(volume_id: &str, modification: Modification) -> Result<Poll<()>, Error> {
    match modification.state.as_str() {
        "optimizing" | "completed" => Ok(Poll::Ready(())),
        "failed" => Err(Error::Internal(format!(
            "EBS could not modify volume {volume_id}: {}",
            modification.status_message.as_deref().unwrap_or("no reason given")
        ))),
        state => Ok(Poll::Pending(state.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Delays, Fixture, Scripted, ZONE};
    use crate::sizing::GIB;

    fn range(required_bytes: u64, limit_bytes: u64) -> CapacityRange {
        CapacityRange { required_bytes, limit_bytes }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn expand_rounds_up_and_waits_for_optimizing() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { modifying: 2, ..Delays::default() });
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        let expansion = expand(&fixture.ctx(), &volume, &range(15 * GIB + 1, 0)).unwrap();
        assert_eq!(expansion, Expansion { capacity_bytes: 16 * GIB, node_expansion_required: true });
        let form = fixture.ec2.last("ModifyVolume");
        assert_eq!(form["Size"], "16");
        assert!(!form.contains_key("VolumeType"));
        let after = fixture.ec2.volume(&volume).unwrap();
        assert_eq!(after.size, 16);
        assert_eq!(after.modification.unwrap().state, "optimizing");

        // Already large enough: nothing to do.
        let again = expand(&fixture.ctx(), &volume, &range(12 * GIB, 0)).unwrap();
        assert_eq!(again.capacity_bytes, 16 * GIB);
        assert_eq!(fixture.ec2.count("ModifyVolume"), 1);
    }

    #[test]
    fn expand_out_of_range() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        for bad in [range(16_385 * GIB, 0), range(11 * GIB + 1, 11 * GIB + 2), range(20 * GIB, 12 * GIB)] {
            let error = fixture.checked(expand(&fixture.ctx(), &volume, &bad));
            assert!(matches!(error, Error::OutOfRange(_)), "{bad:?}: {error:?}");
        }
        let missing = fixture.checked(expand(&fixture.ctx(), "vol-0123456789abcdef9", &range(GIB, 0)));
        assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
        assert_eq!(fixture.ec2.count("ModifyVolume"), 0);
    }

    #[test]
    fn a_retried_expansion_waits_for_the_running_modification() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { modifying: 1000, ..Delays::default() });
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        let error = fixture.checked(expand(&fixture.ctx(), &volume, &range(20 * GIB, 0)));
        assert!(matches!(&error, Error::Unavailable(m) if m.contains("still modifying: retry")), "{error:?}");

        fixture.ec2.edit_volume(&volume, |v| {
            if let Some(modification) = &mut v.modification {
                modification.set_pending(2);
            }
        });
        let expansion = expand(&fixture.ctx(), &volume, &range(20 * GIB, 0)).unwrap();
        assert_eq!(expansion.capacity_bytes, 20 * GIB);
        assert_eq!(fixture.ec2.count("ModifyVolume"), 2, "the retry's ModifyVolume is refused, then waited out");
        assert_eq!(fixture.ec2.volume(&volume).unwrap().size, 20);

        // A different size while one runs is AWS's refusal.
        let other = fixture.ec2.add_volume(10, ZONE, &[]);
        fixture.checked(expand(&fixture.ctx(), &other, &range(20 * GIB, 0)));
        let refused = fixture.checked(expand(&fixture.ctx(), &other, &range(30 * GIB, 0)));
        assert!(
            matches!(&refused, Error::FailedPrecondition(m) if m.contains("IncorrectModificationState")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_failed_modification_is_internal() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { modifying: 3, ..Delays::default() });
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        fixture.ec2.script(
            "DescribeVolumesModifications",
            Scripted::Raw(
                200,
                "<DescribeVolumesModificationsResponse><volumeModificationSet><item>\
                 <modificationState>failed</modificationState><statusMessage>no capacity</statusMessage>\
                 </item></volumeModificationSet></DescribeVolumesModificationsResponse>",
            ),
        );
        let error = fixture.checked(expand(&fixture.ctx(), &volume, &range(20 * GIB, 0)));
        assert!(matches!(&error, Error::Internal(m) if m.contains("no capacity")), "{error:?}");
    }

    #[test]
    fn modify_changes_only_what_differs() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        modify(&fixture.ctx(), &volume, &params(&[("type", "gp3"), ("iops", "3000"), ("throughput", "500")])).unwrap();
        let form = fixture.ec2.last("ModifyVolume");
        assert_eq!(form.get("Throughput").map(String::as_str), Some("500"));
        for absent in ["VolumeType", "Iops", "Size"] {
            assert!(!form.contains_key(absent), "{absent}");
        }
        assert_eq!(fixture.ec2.volume(&volume).unwrap().throughput, Some(500));

        modify(&fixture.ctx(), &volume, &params(&[("throughput", "500")])).unwrap();
        modify(&fixture.ctx(), &volume, &[]).unwrap();
        assert_eq!(fixture.ec2.count("ModifyVolume"), 1);

        modify(&fixture.ctx(), &volume, &params(&[("type", "io2"), ("iops", "8000")])).unwrap();
        let form = fixture.ec2.last("ModifyVolume");
        assert_eq!((form["VolumeType"].as_str(), form["Iops"].as_str()), ("io2", "8000"));
        assert_eq!(fixture.ec2.volume(&volume).unwrap().volume_type, "io2");
    }

    #[test]
    fn modify_rejects_what_ebs_cannot_do() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        for bad in [
            params(&[("size", "20")]),
            params(&[("type", "gp2"), ("iops", "100")]),
            params(&[("type", "io1"), ("throughput", "100")]),
            params(&[("iops", "many")]),
        ] {
            let error = fixture.checked(modify(&fixture.ctx(), &volume, &bad));
            assert!(matches!(error, Error::InvalidArgument(_)), "{bad:?}: {error:?}");
        }
        let missing = fixture.checked(modify(&fixture.ctx(), "vol-x", &params(&[("type", "gp2")])));
        assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
        assert_eq!(fixture.ec2.count("ModifyVolume"), 0);
    }
}
