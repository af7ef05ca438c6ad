//! Sizing rules: how a CSI capacity range, a backend's granule and maximum volume size, and
//! free space turn into the size of a volume.
//!
//! Sizes are whole multiples of the backend's granule (a page for loop-attached files, the
//! extent size for LVM), so the size a volume reports is exactly what the node sees. A size
//! is never rounded past a bound: when no multiple of the granule fits the range, the
//! request is out of range.
//!
//! - New volume, required size set: the required size rounded up to the granule.
//! - New volume, no required size: [`DEFAULT_SIZE`], shrunk to the largest multiple of the
//!   granule within the limit and the maximum volume size, or grown to the content source.
//! - Expansion: the required size rounded up; a volume never shrinks, and one that already
//!   meets the required size keeps its size (a retried expansion is a no-op).
//! - Either way the result is at least one granule and within every bound.

use crate::types::{Capacity, CapacityRange, Error};

/// Size of a volume when the request sets neither bound (1 GiB).
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// The capacity for volumes a backend cannot provide at all (unsupported capabilities or
/// parameters): CSI asks for the capacity "for volumes that satisfy" them.
pub const NO_CAPACITY: Capacity = Capacity { available_bytes: 0, maximum_volume_size: 0, minimum_volume_size: 0 };

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

/// Space new volumes may use: the free bytes less the configured reserve.
pub fn available(free_bytes: u64, reserve: u64) -> u64 {
    free_bytes.saturating_sub(reserve)
}

/// Fails with `resource-exhausted` when `needed` bytes are more than `available`.
pub fn ensure_space(needed: u64, available: u64) -> Result<(), Error> {
    if needed > available {
        return Err(Error::ResourceExhausted(format!(
            "{needed} bytes needed but only {available} bytes are free for new volumes"
        )));
    }
    Ok(())
}

/// A backend's sizing rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Every size is a whole multiple of it (at least 1); it is also the smallest volume.
    pub granule: u64,
    /// Largest volume the backend creates or expands to, in bytes.
    pub max_volume_size: Option<u64>,
}

impl Sizing {
    /// The size of a new volume.
    ///
    /// `source_bytes` is the size of the snapshot or volume its content comes from (0 for
    /// an empty volume): a volume is never smaller than its content.
    pub fn new_volume_size(&self, range: &CapacityRange, source_bytes: u64) -> Result<u64, Error> {
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
            let default_size = [nonzero(range.limit_bytes), self.max_volume_size]
                .into_iter()
                .flatten()
                .fold(DEFAULT_SIZE, |size, bound| size.min(self.round_down(bound)));
            default_size.max(source_bytes)
        };
        let size = self.round_up(wanted.max(self.granule))?;
        self.check_bounds(size, range)?;
        Ok(size)
    }

    /// The size of a volume after an expansion request; volumes never shrink.
    pub fn expanded_size(&self, current: u64, range: &CapacityRange) -> Result<u64, Error> {
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
        let size = self.round_up(range.required_bytes)?;
        self.check_bounds(size, range)?;
        Ok(size)
    }

    /// The largest volume that can be created with `available` bytes: capped by the
    /// maximum volume size, rounded down to the granule.
    pub fn largest_volume(&self, available: u64) -> u64 {
        self.round_down(self.max_volume_size.map_or(available, |max| max.min(available)))
    }

    /// `bytes` rounded up to the granule; `out-of-range` when that overflows.
    pub fn round_up(&self, bytes: u64) -> Result<u64, Error> {
        bytes
            .checked_next_multiple_of(self.granule)
            .ok_or_else(|| Error::OutOfRange(format!("{bytes} bytes is too large")))
    }

    fn round_down(&self, bytes: u64) -> u64 {
        bytes - bytes % self.granule
    }

    fn check_bounds(&self, size: u64, range: &CapacityRange) -> Result<(), Error> {
        if range.limit_bytes != 0 && size > range.limit_bytes {
            return Err(Error::OutOfRange(format!(
                "no size that is a multiple of {} bytes lies between {} and {} bytes",
                self.granule, range.required_bytes, range.limit_bytes
            )));
        }
        if let Some(max) = self.max_volume_size.filter(|max| size > *max) {
            return Err(Error::OutOfRange(format!(
                "{size} bytes is above this backend's maximum volume size of {max} bytes"
            )));
        }
        Ok(())
    }
}

fn nonzero(bytes: u64) -> Option<u64> {
    (bytes != 0).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRANULE: u64 = 4096;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn range(required_bytes: u64, limit_bytes: u64) -> CapacityRange {
        CapacityRange { required_bytes, limit_bytes }
    }

    fn sizing(max_volume_size: Option<u64>) -> Sizing {
        Sizing { granule: GRANULE, max_volume_size }
    }

    fn is_out_of_range<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
        matches!(result, Err(Error::OutOfRange(_)))
    }

    #[test]
    fn unset_range_gives_the_default() {
        assert_eq!(sizing(None).new_volume_size(&range(0, 0), 0).unwrap(), DEFAULT_SIZE);
    }

    #[test]
    fn default_shrinks_to_the_bounds() {
        assert_eq!(sizing(None).new_volume_size(&range(0, 100 * MIB + 1), 0).unwrap(), 100 * MIB);
        assert_eq!(sizing(Some(10 * MIB + 5)).new_volume_size(&range(0, 0), 0).unwrap(), 10 * MIB);
        assert_eq!(sizing(Some(3 * GIB)).new_volume_size(&range(0, 2 * GIB), 0).unwrap(), DEFAULT_SIZE);
        assert!(is_out_of_range(sizing(None).new_volume_size(&range(0, GRANULE - 1), 0)));
    }

    #[test]
    fn default_grows_to_the_source() {
        assert_eq!(sizing(None).new_volume_size(&range(0, 0), 5 * GIB).unwrap(), 5 * GIB);
        assert!(is_out_of_range(sizing(None).new_volume_size(&range(0, 2 * GIB), 5 * GIB)));
    }

    #[test]
    fn required_is_rounded_up_to_the_granule() {
        let unbounded = sizing(None);
        assert_eq!(unbounded.new_volume_size(&range(1, 0), 0).unwrap(), GRANULE);
        assert_eq!(unbounded.new_volume_size(&range(GRANULE, 0), 0).unwrap(), GRANULE);
        assert_eq!(unbounded.new_volume_size(&range(GRANULE + 1, 0), 0).unwrap(), 2 * GRANULE);
        assert_eq!(unbounded.new_volume_size(&range(GIB, GIB), 0).unwrap(), GIB);
        assert_eq!(unbounded.new_volume_size(&range(GIB - 10, GIB + 10), 0).unwrap(), GIB);
    }

    #[test]
    fn any_granule_works() {
        let extents = Sizing { granule: 4 * MIB, max_volume_size: None };
        assert_eq!(extents.new_volume_size(&range(1, 0), 0).unwrap(), 4 * MIB);
        assert_eq!(extents.new_volume_size(&range(0, 10 * MIB), 0).unwrap(), 8 * MIB);
        assert!(is_out_of_range(extents.new_volume_size(&range(5 * MIB, 7 * MIB), 0)));
        assert_eq!(extents.expanded_size(8 * MIB, &range(9 * MIB, 0)).unwrap(), 12 * MIB);
        assert_eq!(extents.largest_volume(10 * MIB), 8 * MIB);
        assert_eq!(extents.round_up(4 * MIB + 1).unwrap(), 8 * MIB);
    }

    #[test]
    fn rounding_never_passes_the_limit() {
        assert!(is_out_of_range(sizing(None).new_volume_size(&range(GRANULE + 1, GRANULE + 100), 0)));
        assert!(is_out_of_range(sizing(None).new_volume_size(&range(u64::MAX, 0), 0)));
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(is_out_of_range(sizing(None).new_volume_size(&range(2 * MIB, MIB), 0)));
        assert!(is_out_of_range(sizing(Some(GIB)).new_volume_size(&range(2 * GIB, 0), 0)));
        assert_eq!(sizing(Some(GIB)).new_volume_size(&range(GIB, 0), 0).unwrap(), GIB);
        assert!(is_out_of_range(sizing(None).new_volume_size(&range(MIB, 0), 2 * MIB)));
        assert_eq!(sizing(None).new_volume_size(&range(2 * MIB, 0), 2 * MIB).unwrap(), 2 * MIB);
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
        let unbounded = sizing(None);
        assert_eq!(unbounded.expanded_size(GIB, &range(2 * GIB, 0)).unwrap(), 2 * GIB);
        assert_eq!(unbounded.expanded_size(GIB, &range(GIB + 1, 0)).unwrap(), GIB + GRANULE);
        assert_eq!(unbounded.expanded_size(2 * GIB, &range(GIB, 0)).unwrap(), 2 * GIB);
        assert_eq!(unbounded.expanded_size(2 * GIB, &range(2 * GIB, 2 * GIB)).unwrap(), 2 * GIB);
        assert!(is_out_of_range(unbounded.expanded_size(2 * GIB, &range(GIB, GIB))));
        assert!(is_out_of_range(unbounded.expanded_size(GIB, &range(3 * GIB, 2 * GIB))));
        assert!(is_out_of_range(unbounded.expanded_size(GIB, &range(GIB + 1, GIB + 2))));
        assert!(is_out_of_range(sizing(Some(2 * GIB)).expanded_size(GIB, &range(3 * GIB, 0))));
    }

    #[test]
    fn space_accounting() {
        assert_eq!(available(10, 3), 7);
        assert_eq!(available(3, 10), 0);
        assert!(ensure_space(7, 7).is_ok());
        assert!(matches!(ensure_space(8, 7), Err(Error::ResourceExhausted(_))));
        assert_eq!(sizing(None).largest_volume(GIB + 7), GIB);
        assert_eq!(sizing(Some(GIB + 7)).largest_volume(4 * GIB), GIB);
        assert_eq!(sizing(None).largest_volume(GRANULE - 1), 0);
    }
}
