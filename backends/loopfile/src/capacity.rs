//! Sizing rules: how a CSI capacity range, the `max-volume-size` setting and free space
//! turn into the size of a volume's image.
//!
//! Sizes are whole multiples of [`GRANULE`] (4 KiB: a page, and a multiple of every sector
//! size a loop device uses), so the size a volume reports is exactly what the node sees.
//! A size is never rounded past a bound: when no multiple of the granule fits the range,
//! the request is out of range.

use crate::csi::backend::types::{CapacityRange, Error};

/// Granularity of every volume size, and so the smallest volume.
pub const GRANULE: u64 = 4096;

/// Size of a volume when the request sets neither bound (1 GiB).
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// Rejects a range whose limit is below its required size.
pub fn check_range(range: &CapacityRange) -> Result<(), Error> {
    if range.limit_bytes != 0 && range.limit_bytes < range.required_bytes {
        return Err(Error::OutOfRange(format!(
            "capacity limit of {} bytes is below the required {} bytes",
            range.limit_bytes, range.required_bytes
        )));
    }
    Ok(())
}

/// Whether an existing size satisfies a range (0 means "not set" for either bound).
pub fn fits(range: &CapacityRange, size: u64) -> bool {
    size >= range.required_bytes && (range.limit_bytes == 0 || size <= range.limit_bytes)
}

/// The size of a new volume.
///
/// `source_bytes` is the size of the snapshot or volume it is copied from (0 for an empty
/// volume): a volume is never smaller than its content. With no required size the volume
/// gets [`DEFAULT_SIZE`] shrunk to fit the bounds, or the source's size if that is larger.
pub fn new_volume_size(range: &CapacityRange, max_volume_size: Option<u64>, source_bytes: u64) -> Result<u64, Error> {
    check_range(range)?;
    if range.required_bytes != 0 && range.required_bytes < source_bytes {
        return Err(Error::OutOfRange(format!(
            "required {} bytes is smaller than the {source_bytes} bytes of the content source",
            range.required_bytes
        )));
    }
    let wanted = if range.required_bytes != 0 {
        range.required_bytes
    } else {
        let default_size = [nonzero(range.limit_bytes), max_volume_size]
            .into_iter()
            .flatten()
            .fold(DEFAULT_SIZE, |size, bound| size.min(round_down(bound)));
        default_size.max(source_bytes)
    };
    let size = round_up(wanted.max(GRANULE))?;
    check_bounds(size, range, max_volume_size)?;
    Ok(size)
}

/// The size of a volume after an expansion request; volumes never shrink.
///
/// A volume that already meets the required size keeps its size, which makes a retried
/// expansion a no-op.
pub fn expanded_size(current: u64, range: &CapacityRange, max_volume_size: Option<u64>) -> Result<u64, Error> {
    check_range(range)?;
    if range.limit_bytes != 0 && current > range.limit_bytes {
        return Err(Error::OutOfRange(format!(
            "volume is already {current} bytes, above the limit of {} bytes, and volumes never shrink",
            range.limit_bytes
        )));
    }
    if current >= range.required_bytes {
        return Ok(current);
    }
    let size = round_up(range.required_bytes)?;
    check_bounds(size, range, max_volume_size)?;
    Ok(size)
}

/// Space new volumes may use: the filesystem's free bytes less the configured reserve.
pub fn available(free_bytes: u64, reserve: u64) -> u64 {
    free_bytes.saturating_sub(reserve)
}

/// Fails with `resource-exhausted` when `needed` bytes are more than `available`.
pub fn ensure_space(needed: u64, available: u64) -> Result<(), Error> {
    if needed > available {
        return Err(Error::ResourceExhausted(format!(
            "{needed} bytes needed but only {available} bytes are available"
        )));
    }
    Ok(())
}

/// The largest volume that can be created now: what is available, capped by the setting,
/// rounded down to the granule.
pub fn largest_volume(available: u64, max_volume_size: Option<u64>) -> u64 {
    round_down(max_volume_size.map_or(available, |max| max.min(available)))
}

fn check_bounds(size: u64, range: &CapacityRange, max_volume_size: Option<u64>) -> Result<(), Error> {
    if range.limit_bytes != 0 && size > range.limit_bytes {
        return Err(Error::OutOfRange(format!(
            "no size that is a multiple of {GRANULE} bytes lies between {} and {} bytes",
            range.required_bytes, range.limit_bytes
        )));
    }
    if let Some(max) = max_volume_size.filter(|max| size > *max) {
        return Err(Error::OutOfRange(format!(
            "{size} bytes is above this backend's maximum volume size of {max} bytes"
        )));
    }
    Ok(())
}

fn nonzero(bytes: u64) -> Option<u64> {
    (bytes != 0).then_some(bytes)
}

fn round_down(bytes: u64) -> u64 {
    bytes - bytes % GRANULE
}

fn round_up(bytes: u64) -> Result<u64, Error> {
    bytes
        .checked_next_multiple_of(GRANULE)
        .ok_or_else(|| Error::OutOfRange(format!("{bytes} bytes is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn range(required_bytes: u64, limit_bytes: u64) -> CapacityRange {
        CapacityRange {
            required_bytes,
            limit_bytes,
        }
    }

    fn is_out_of_range<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
        matches!(result, Err(Error::OutOfRange(_)))
    }

    #[test]
    fn unset_range_gives_the_default() {
        assert_eq!(new_volume_size(&range(0, 0), None, 0).unwrap(), DEFAULT_SIZE);
    }

    #[test]
    fn default_shrinks_to_the_bounds() {
        assert_eq!(new_volume_size(&range(0, 100 * MIB + 1), None, 0).unwrap(), 100 * MIB);
        assert_eq!(new_volume_size(&range(0, 0), Some(10 * MIB + 5), 0).unwrap(), 10 * MIB);
        assert_eq!(
            new_volume_size(&range(0, 2 * GIB), Some(3 * GIB), 0).unwrap(),
            DEFAULT_SIZE
        );
        assert!(is_out_of_range(new_volume_size(&range(0, GRANULE - 1), None, 0)));
    }

    #[test]
    fn default_grows_to_the_source() {
        assert_eq!(new_volume_size(&range(0, 0), None, 5 * GIB).unwrap(), 5 * GIB);
        assert!(is_out_of_range(new_volume_size(&range(0, 2 * GIB), None, 5 * GIB)));
    }

    #[test]
    fn required_is_rounded_up_to_the_granule() {
        assert_eq!(new_volume_size(&range(1, 0), None, 0).unwrap(), GRANULE);
        assert_eq!(new_volume_size(&range(GRANULE, 0), None, 0).unwrap(), GRANULE);
        assert_eq!(new_volume_size(&range(GRANULE + 1, 0), None, 0).unwrap(), 2 * GRANULE);
        assert_eq!(new_volume_size(&range(GIB, GIB), None, 0).unwrap(), GIB);
        assert_eq!(new_volume_size(&range(GIB - 10, GIB + 10), None, 0).unwrap(), GIB);
    }

    #[test]
    fn rounding_never_passes_the_limit() {
        assert!(is_out_of_range(new_volume_size(
            &range(GRANULE + 1, GRANULE + 100),
            None,
            0
        )));
        assert!(is_out_of_range(new_volume_size(&range(u64::MAX, 0), None, 0)));
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(is_out_of_range(new_volume_size(&range(2 * MIB, MIB), None, 0)));
        assert!(is_out_of_range(new_volume_size(&range(2 * GIB, 0), Some(GIB), 0)));
        assert_eq!(new_volume_size(&range(GIB, 0), Some(GIB), 0).unwrap(), GIB);
        assert!(is_out_of_range(new_volume_size(&range(MIB, 0), None, 2 * MIB)));
        assert_eq!(new_volume_size(&range(2 * MIB, 0), None, 2 * MIB).unwrap(), 2 * MIB);
    }

    #[test]
    fn fits_treats_zero_as_unset() {
        assert!(fits(&range(0, 0), GIB));
        assert!(fits(&range(GIB, 0), GIB));
        assert!(!fits(&range(GIB + 1, 0), GIB));
        assert!(fits(&range(0, GIB), GIB));
        assert!(!fits(&range(0, GIB - 1), GIB));
    }

    #[test]
    fn expansion_grows_and_never_shrinks() {
        assert_eq!(expanded_size(GIB, &range(2 * GIB, 0), None).unwrap(), 2 * GIB);
        assert_eq!(expanded_size(GIB, &range(GIB + 1, 0), None).unwrap(), GIB + GRANULE);
        assert_eq!(expanded_size(2 * GIB, &range(GIB, 0), None).unwrap(), 2 * GIB);
        assert_eq!(expanded_size(2 * GIB, &range(2 * GIB, 2 * GIB), None).unwrap(), 2 * GIB);
        assert!(is_out_of_range(expanded_size(2 * GIB, &range(GIB, GIB), None)));
        assert!(is_out_of_range(expanded_size(GIB, &range(3 * GIB, 2 * GIB), None)));
        assert!(is_out_of_range(expanded_size(GIB, &range(GIB + 1, GIB + 2), None)));
        assert!(is_out_of_range(expanded_size(GIB, &range(3 * GIB, 0), Some(2 * GIB))));
    }

    #[test]
    fn space_accounting() {
        assert_eq!(available(10, 3), 7);
        assert_eq!(available(3, 10), 0);
        assert!(ensure_space(7, 7).is_ok());
        assert!(matches!(ensure_space(8, 7), Err(Error::ResourceExhausted(_))));
        assert_eq!(largest_volume(GIB + 7, None), GIB);
        assert_eq!(largest_volume(4 * GIB, Some(GIB + 7)), GIB);
        assert_eq!(largest_volume(GRANULE - 1, None), 0);
    }
}
