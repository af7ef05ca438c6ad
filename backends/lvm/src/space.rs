//! How much space new volumes may take.
//!
//! - Thick: `available = vg_free − reserve` (saturating). A thick volume, an expansion of
//!   one, or a COW snapshot must fit in it.
//! - Thin, for pool `P` of `pool_size` bytes and overprovision ratio `r`:
//!   `available = floor(pool_size × r) − Σ lv_size of every LV whose pool_lv is P` (thin
//!   volumes and thin snapshots, ours or not; saturating), and, when lvm reports the pool's
//!   `data_percent` `d`, no more than `floor((pool_size − floor(pool_size × d / 100)) × r)`:
//!   what the pool still has free, overprovisioned by the same ratio. A thin volume (virtual
//!   size), a restore or clone, or an expansion must fit in it; thin snapshots are not
//!   checked (they share every block with their origin when taken).
//!
//! Ratios and percentages are exact decimals ([`Fraction`]), never floats, so the same
//! inputs always give the same byte counts.

use kit::sizing::{self, Sizing};
use kit::types::Error;

use crate::report::{Lv, Vg};

/// A non-negative decimal number such as `1.5` or `12.50`, kept exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    numerator: u64,
    denominator: u64,
}

/// Fraction digits a decimal may have (more would only be noise, and could overflow).
const MAX_FRACTION_DIGITS: usize = 9;

impl Fraction {
    pub const ONE: Fraction = Fraction { numerator: 1, denominator: 1 };

    /// `digits[.digits]`; `None` for anything else (signs, exponents, blanks, …).
    pub fn parse(text: &str) -> Option<Fraction> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let well_formed = !whole.is_empty()
            && all_digits(whole)
            && all_digits(fraction)
            && (fraction.len() <= MAX_FRACTION_DIGITS)
            && (text.contains('.') != fraction.is_empty());
        if !well_formed {
            return None;
        }
        let denominator = 10u64.pow(fraction.len() as u32);
        let numerator = format!("{whole}{fraction}").parse().ok()?;
        Some(Fraction { numerator, denominator })
    }

    /// Whether it is at least 1.
    pub fn at_least_one(self) -> bool {
        self.numerator >= self.denominator
    }

    /// `floor(bytes × self)`, saturating at `u64::MAX`.
    pub fn of(self, bytes: u64) -> u64 {
        let product = u128::from(bytes) * u128::from(self.numerator) / u128::from(self.denominator);
        u64::try_from(product).unwrap_or(u64::MAX)
    }
}

/// Sizes in whole extents of `vg`, with no maximum beyond the space checks.
pub fn extents(vg: &Vg) -> Sizing {
    Sizing { granule: vg.extent_size, max_volume_size: None }
}

/// Bytes thick volumes may take.
pub fn thick_available(vg: &Vg, reserve: u64) -> u64 {
    sizing::available(vg.free, reserve)
}

/// Bytes (virtual) thin volumes in `pool` may take; `lvs` is every LV of the VG.
pub fn thin_available(lvs: &[Lv], pool: &str, ratio: Fraction) -> Result<u64, Error> {
    let pool_lv = find_pool(lvs, pool)?;
    let used: u64 = lvs.iter().filter(|lv| lv.pool == pool).fold(0, |sum, lv| sum.saturating_add(lv.size));
    let available = ratio.of(pool_lv.size).saturating_sub(used);
    if pool_lv.data_percent.is_empty() {
        return Ok(available);
    }
    let data_percent = Fraction::parse(&pool_lv.data_percent).ok_or_else(|| {
        Error::Internal(format!(
            "lvm lvs reported data_percent {:?} for thin pool {pool:?}, not a decimal",
            pool_lv.data_percent
        ))
    })?;
    let physically_free = pool_lv.size.saturating_sub(data_percent.of(pool_lv.size) / 100);
    Ok(available.min(ratio.of(physically_free)))
}

/// The row of thin pool `pool`; `failed-precondition` when it is missing or not a thin pool
/// (the instance's `thin-pool` setting, or the source volume's pool, is wrong).
pub fn find_pool<'l>(lvs: &'l [Lv], pool: &str) -> Result<&'l Lv, Error> {
    let lv = lvs
        .iter()
        .find(|lv| lv.name == pool)
        .ok_or_else(|| Error::FailedPrecondition(format!("thin pool {pool:?} does not exist in the volume group")))?;
    if !lv.is_thin_pool() {
        return Err(Error::FailedPrecondition(format!(
            "logical volume {pool:?} is not a thin pool (lv_attr {:?})",
            lv.attr
        )));
    }
    Ok(lv)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn lv(name: &str, size: u64, attr: &str, pool: &str, data_percent: &str) -> Lv {
        Lv {
            name: name.into(),
            vg: "vg0".into(),
            size,
            tags: String::new(),
            attr: attr.into(),
            pool: pool.into(),
            origin: String::new(),
            time: String::new(),
            data_percent: data_percent.into(),
        }
    }

    fn fraction(text: &str) -> Fraction {
        Fraction::parse(text).unwrap()
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(fraction("1"), Fraction::ONE);
        assert_eq!(fraction("1.5").of(1000), 1500);
        assert_eq!(fraction("12.50").of(1000), 12_500);
        assert_eq!(fraction("0.000000001").of(1_000_000_000), 1);
        assert_eq!(fraction("3").of(u64::MAX), u64::MAX);
        assert!(fraction("1.0").at_least_one() && !fraction("0.99").at_least_one());
        for bad in
            ["", ".", "1.", ".5", "-1", "+1", "1e3", " 1", "1.5.5", "NaN", "0.1234567891", "99999999999999999999"]
        {
            assert_eq!(Fraction::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn thick_space_is_free_less_reserve() {
        let vg = Vg { name: "vg0".into(), extent_size: 4 * MIB, free: 100 * MIB };
        assert_eq!(thick_available(&vg, 30 * MIB), 70 * MIB);
        assert_eq!(thick_available(&vg, 200 * MIB), 0);
    }

    #[test]
    fn thin_space_is_overprovisioned_pool_less_virtual_sizes() {
        let lvs = [
            lv("pool0", 100 * MIB, "twi-a-tz--", "", ""),
            lv("csi-1", 60 * MIB, "Vwi-a-tz--", "pool0", ""),
            lv("other", 30 * MIB, "Vwi---tz-k", "pool0", ""),
            lv("elsewhere", 500 * MIB, "Vwi-a-tz--", "pool1", ""),
            lv("thick", 500 * MIB, "-wi-a-----", "", ""),
        ];
        assert_eq!(thin_available(&lvs, "pool0", Fraction::ONE).unwrap(), 10 * MIB);
        assert_eq!(thin_available(&lvs, "pool0", fraction("2")).unwrap(), 110 * MIB);
        assert_eq!(thin_available(&lvs[..1], "pool0", fraction("1.5")).unwrap(), 150 * MIB);
        let mut full = lvs.to_vec();
        full.push(lv("big", 100 * MIB, "Vwi-a-tz--", "pool0", ""));
        assert_eq!(thin_available(&full, "pool0", fraction("2")).unwrap(), 10 * MIB);
        full.push(lv("bigger", 100 * MIB, "Vwi-a-tz--", "pool0", ""));
        assert_eq!(thin_available(&full, "pool0", fraction("2")).unwrap(), 0);
    }

    #[test]
    fn thin_space_is_capped_by_what_the_pool_has_free() {
        let pool = |percent| [lv("pool0", 100 * MIB, "twi-a-tz--", "", percent)];
        // 12.5 % used: 87.5 MiB free, × 2 = 175 MiB < 200 MiB by the virtual sizes.
        assert_eq!(thin_available(&pool("12.50"), "pool0", fraction("2")).unwrap(), 175 * MIB);
        assert_eq!(thin_available(&pool("0.00"), "pool0", fraction("2")).unwrap(), 200 * MIB);
        assert_eq!(thin_available(&pool("100.00"), "pool0", fraction("2")).unwrap(), 0);
        assert!(matches!(thin_available(&pool("lots"), "pool0", Fraction::ONE), Err(Error::Internal(_))));
    }

    #[test]
    fn the_pool_must_exist_and_be_a_thin_pool() {
        let lvs = [lv("pool0", MIB, "-wi-a-----", "", "")];
        for pool in ["pool0", "pool1"] {
            assert!(matches!(thin_available(&lvs, pool, Fraction::ONE), Err(Error::FailedPrecondition(_))));
        }
    }
}
