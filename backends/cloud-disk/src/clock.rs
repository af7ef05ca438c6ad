//! Calendar arithmetic for the two timestamp forms EC2 uses: SigV4's basic form
//! `20150830T123600Z` (written on every request) and the ISO-8601 extended form
//! `2015-08-30T12:36:00.000Z` of response fields such as a snapshot's `startTime` (read).
//!
//! std has no calendar, so this is the proleptic Gregorian day count, in UTC only.

use std::time::{SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: u64 = 86_400;

/// A UTC civil time, to the second.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
}

/// `YYYYMMDDTHHMMSSZ`, the `x-amz-date` of a request made at `time` (times before 1970 are
/// taken as the epoch: the platform clock never reports them).
pub fn amz_date(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let civil = civil_from_unix(seconds);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        civil.year, civil.month, civil.day, civil.hour, civil.minute, civil.second
    )
}

/// Seconds since the epoch of an ISO-8601 UTC timestamp (`2015-08-30T12:36:00Z`, optionally
/// with fractional seconds, `Z` or `+00:00`); `None` for anything else.
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.split('-');
    let year = number(date_parts.next()?, 4)?;
    let month = number(date_parts.next()?, 2)?;
    let day = number(date_parts.next()?, 2)?;
    if date_parts.next().is_some() || !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let time = time.strip_suffix('Z').or_else(|| time.strip_suffix("+00:00"))?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut clock_parts = clock.split(':');
    let hour = number(clock_parts.next()?, 2)?;
    let minute = number(clock_parts.next()?, 2)?;
    let second = number(clock_parts.next()?, 2)?;
    if clock_parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second)
}

/// A field of exactly `digits` ASCII digits.
fn number(text: &str, digits: usize) -> Option<u64> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date in 1970 or later (`None` before).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if year < 1970 {
        return None;
    }
    let whole_years: u64 = (1970..year).map(|y| if is_leap(y) { 366 } else { 365 }).sum();
    let whole_months: u64 = (1..month).map(|m| days_in_month(year, m)).sum();
    Some(whole_years + whole_months + day - 1)
}

fn civil_from_unix(seconds: u64) -> Civil {
    let mut days = seconds / SECONDS_PER_DAY;
    let in_day = seconds % SECONDS_PER_DAY;
    let mut year = 1970;
    loop {
        let length = if is_leap(year) { 366 } else { 365 };
        if days < length {
            break;
        }
        days -= length;
        year += 1;
    }
    let mut month = 1;
    while days >= days_in_month(year, month) {
        days -= days_in_month(year, month);
        month += 1;
    }
    Civil { year, month, day: days + 1, hour: in_day / 3600, minute: in_day % 3600 / 60, second: in_day % 60 }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn amz_dates() {
        // The SigV4 test suite's request time.
        assert_eq!(amz_date(at(1_440_938_160)), "20150830T123600Z");
        assert_eq!(amz_date(at(0)), "19700101T000000Z");
        assert_eq!(amz_date(at(951_782_400)), "20000229T000000Z");
        assert_eq!(amz_date(at(4_102_444_799)), "20991231T235959Z");
    }

    #[test]
    fn iso8601_round_trips_through_the_civil_calendar() {
        assert_eq!(parse_iso8601("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(parse_iso8601("2015-08-30T12:36:00.000Z"), Some(1_440_938_160));
        assert_eq!(parse_iso8601("2015-08-30T12:36:00.5+00:00"), Some(1_440_938_160));
        assert_eq!(parse_iso8601("2000-02-29T00:00:00Z"), Some(951_782_400));
        for seconds in (0..4_000_000_000u64).step_by(7_777_777) {
            let civil = civil_from_unix(seconds);
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                civil.year, civil.month, civil.day, civil.hour, civil.minute, civil.second
            );
            assert_eq!(parse_iso8601(&text), Some(seconds), "{text}");
        }
    }

    #[test]
    fn malformed_timestamps_are_none() {
        for text in [
            "",
            "2015-08-30",
            "2015-08-30T12:36:00",
            "2015-08-30T12:36:00+02:00",
            "2015-02-29T00:00:00Z",
            "2015-13-01T00:00:00Z",
            "2015-08-30T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2015-8-30T12:36:00Z",
            "2015-08-30T12:36:00.Z",
            "2015-08-30T12:36:00.1x2Z",
            "YYYY-MM-DDTHH:MM:SS.000Z",
            "2015-08-30T12:36:00:00Z",
        ] {
            assert_eq!(parse_iso8601(text), None, "{text:?}");
        }
    }
}
