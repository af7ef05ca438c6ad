//! Creation times as lvm prints `lv_time`: `2026-11-21 11:22:03 +0000` (local time and its
//! UTC offset), turned into seconds since the Unix epoch. WASI has no time-zone database and
//! needs none: the offset is in the text.

use kit::types::Error;

/// Seconds since the Unix epoch of an `lv_time` value.
pub fn parse(text: &str) -> Result<u64, Error> {
    seconds(text)
        .ok_or_else(|| Error::Internal(format!("lvm reported lv_time {text:?}, not a time this backend reads")))
}

fn seconds(text: &str) -> Option<u64> {
    let mut fields = text.split(' ');
    let (date, time, offset) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    let [year, month, day] = numbers(date, '-', [4, 2, 2])?;
    let [hour, minute, second] = numbers(time, ':', [2, 2, 2])?;
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    if !valid {
        return None;
    }
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    u64::try_from(local - offset_seconds(offset)?).ok()
}

/// `N-N-N` / `N:N:N` with exactly the given digit counts.
fn numbers(text: &str, separator: char, widths: [usize; 3]) -> Option<[i64; 3]> {
    let mut parts = text.split(separator);
    let mut values = [0; 3];
    for (value, width) in values.iter_mut().zip(widths) {
        let part = parts.next()?;
        if part.len() != width || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *value = part.parse().ok()?;
    }
    parts.next().is_none().then_some(values)
}

/// `+HHMM` / `-HHMM` as seconds east of UTC.
fn offset_seconds(offset: &str) -> Option<i64> {
    let (sign, digits) = match offset.split_at_checked(1)? {
        ("+", digits) => (1, digits),
        ("-", digits) => (-1, digits),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes): (i64, i64) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
    (hours <= 23 && minutes < 60).then_some(sign * (hours * 3_600 + minutes * 60))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`: eras of 400 years, years starting in March).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_time() {
        // date -u -d '2026-11-21 11:22:03' +%s
        assert_eq!(parse("2026-11-21 11:22:03 +0000").unwrap(), 1_795_260_123);
    }

    #[test]
    fn offsets_are_applied() {
        assert_eq!(parse("2026-11-21 12:52:03 +0130").unwrap(), 1_795_260_123);
        assert_eq!(parse("2026-11-21 03:22:03 -0800").unwrap(), 1_795_260_123);
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(parse("1970-01-01 00:00:00 +0000").unwrap(), 0);
        assert_eq!(parse("2000-02-29 00:00:00 +0000").unwrap(), 951_782_400);
        assert_eq!(parse("2024-03-01 00:00:00 +0000").unwrap(), 1_709_251_200);
        assert_eq!(parse("2100-12-31 23:59:59 +0000").unwrap(), 4_133_980_799);
    }

    #[test]
    fn anything_else_is_internal() {
        for bad in [
            "",
            "2026-11-21 11:22:03",
            "2026-11-21T11:22:03 +0000",
            "2026-11-21 11:22:03 UTC",
            "2026-11-21 11:22:03 +000",
            "2026-11-21 11:22:03 +0000 extra",
            "2026-13-01 00:00:00 +0000",
            "2026-02-29 00:00:00 +0000",
            "1900-02-29 00:00:00 +0000",
            "2026-11-21 24:00:00 +0000",
            "2026-1-21 11:22:03 +0000",
            "1970-01-01 00:00:00 +0100",
            "2026-11-21 11:22:03 +2400",
        ] {
            assert!(matches!(parse(bad), Err(Error::Internal(_))), "{bad:?}");
        }
    }
}
