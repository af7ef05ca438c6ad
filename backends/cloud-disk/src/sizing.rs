//! Sizes: EBS volumes are whole GiB within per-type limits, CSI asks in bytes (a required
//! minimum and an optional limit). A request is rounded up to whole GiB and up to the type's
//! minimum; one that cannot be met within the limit or the type's maximum is `out-of-range`.

use kit::sizing::check_range;
use kit::types::{CapacityRange, Error};

use crate::parameters::VolumeType;

pub const GIB: u64 = 1 << 30;

/// Bytes of `gib` GiB (saturating: sizes come from AWS too).
pub fn bytes(gib: u64) -> u64 {
    gib.saturating_mul(GIB)
}

/// Whether a volume of `gib` GiB satisfies `range`.
pub fn fits(range: &CapacityRange, gib: u64) -> bool {
    kit::sizing::fits(range, bytes(gib))
}

/// The size of a new volume of `volume_type`: what `range` requires, rounded up to whole
/// GiB, at least the type's minimum and at least `at_least_gib` (the snapshot restored).
pub fn new_volume_gib(range: &CapacityRange, volume_type: VolumeType, at_least_gib: u64) -> Result<u64, Error> {
    check_range(range)?;
    let (min, max) = volume_type.size_limits_gib();
    let gib = range.required_bytes.div_ceil(GIB).max(min).max(at_least_gib);
    if gib > max {
        return Err(Error::OutOfRange(format!(
            "a {} volume holds at most {max} GiB; {gib} GiB are needed",
            volume_type.name()
        )));
    }
    if !fits(range, gib) {
        return Err(Error::OutOfRange(format!(
            "the limit of {} bytes is below the smallest volume that can be made: {gib} GiB of {}",
            range.limit_bytes,
            volume_type.name()
        )));
    }
    Ok(gib)
}

/// The size to grow a `current_gib` volume to; `None` when it already holds what `range`
/// requires.
pub fn expanded_gib(current_gib: u64, range: &CapacityRange, volume_type: VolumeType) -> Result<Option<u64>, Error> {
    check_range(range)?;
    let gib = range.required_bytes.div_ceil(GIB);
    if gib <= current_gib {
        return Ok(None);
    }
    let (_, max) = volume_type.size_limits_gib();
    if gib > max {
        return Err(Error::OutOfRange(format!(
            "a {} volume holds at most {max} GiB; {gib} GiB were asked for",
            volume_type.name()
        )));
    }
    if !fits(range, gib) {
        return Err(Error::OutOfRange(format!(
            "{} bytes round up to {gib} GiB, above the limit of {} bytes",
            range.required_bytes, range.limit_bytes
        )));
    }
    Ok(Some(gib))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required_bytes: u64, limit_bytes: u64) -> CapacityRange {
        CapacityRange { required_bytes, limit_bytes }
    }

    #[test]
    fn new_sizes_round_up_to_gib_and_type_minimums() {
        let cases = [
            (range(0, 0), VolumeType::Gp3, 0, 1),
            (range(1, 0), VolumeType::Gp3, 0, 1),
            (range(GIB, 0), VolumeType::Gp3, 0, 1),
            (range(GIB + 1, 0), VolumeType::Gp3, 0, 2),
            (range(0, 0), VolumeType::Io1, 0, 4),
            (range(GIB, 0), VolumeType::Io2, 0, 4),
            (range(0, 0), VolumeType::St1, 0, 125),
            (range(0, 0), VolumeType::Sc1, 0, 125),
            (range(0, 0), VolumeType::Standard, 0, 1),
            (range(GIB, 0), VolumeType::Gp2, 8, 8),
            (range(16_384 * GIB, 0), VolumeType::Gp3, 0, 16_384),
            (range(65_536 * GIB, 0), VolumeType::Io2, 0, 65_536),
            (range(0, 4 * GIB), VolumeType::Io1, 0, 4),
        ];
        for (range, volume_type, at_least, expected) in cases {
            assert_eq!(new_volume_gib(&range, volume_type, at_least).unwrap(), expected, "{range:?} {volume_type:?}");
        }
    }

    #[test]
    fn new_sizes_out_of_range() {
        let cases = [
            (range(16_384 * GIB + 1, 0), VolumeType::Gp3, 0),
            (range(1_025 * GIB, 0), VolumeType::Standard, 0),
            (range(65_537 * GIB, 0), VolumeType::Io2, 0),
            (range(0, GIB), VolumeType::St1, 0),
            (range(0, 3 * GIB), VolumeType::Io1, 0),
            (range(GIB + 1, GIB + 2), VolumeType::Gp3, 0),
            (range(2 * GIB, GIB), VolumeType::Gp3, 0),
            (range(0, GIB), VolumeType::Gp3, 2),
            (range(u64::MAX, 0), VolumeType::Gp3, 0),
        ];
        for (range, volume_type, at_least) in cases {
            assert!(
                matches!(new_volume_gib(&range, volume_type, at_least), Err(Error::OutOfRange(_))),
                "{range:?} {volume_type:?}"
            );
        }
    }

    #[test]
    fn fitting() {
        assert!(fits(&range(0, 0), 1));
        assert!(fits(&range(GIB, GIB), 1));
        assert!(!fits(&range(GIB + 1, 0), 1));
        assert!(!fits(&range(0, GIB), 2));
        assert!(!fits(&range(0, GIB), u64::MAX));
    }

    #[test]
    fn expansion() {
        assert_eq!(expanded_gib(10, &range(5 * GIB, 0), VolumeType::Gp3).unwrap(), None);
        assert_eq!(expanded_gib(10, &range(10 * GIB, 0), VolumeType::Gp3).unwrap(), None);
        assert_eq!(expanded_gib(10, &range(10 * GIB + 1, 0), VolumeType::Gp3).unwrap(), Some(11));
        assert_eq!(expanded_gib(10, &range(20 * GIB, 20 * GIB), VolumeType::Gp3).unwrap(), Some(20));
        for (current, range, volume_type) in [
            (10, range(10 * GIB + 1, 10 * GIB + 2), VolumeType::Gp3),
            (10, range(20 * GIB, 10 * GIB), VolumeType::Gp3),
            (1_000, range(1_025 * GIB, 0), VolumeType::Standard),
            (16_000, range(16_385 * GIB, 0), VolumeType::Gp2),
        ] {
            assert!(
                matches!(expanded_gib(current, &range, volume_type), Err(Error::OutOfRange(_))),
                "{current} {range:?}"
            );
        }
    }
}
