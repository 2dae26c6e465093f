//! Timestamp readers shared by the codecs: RFC 3339 (with nanoseconds, as CRI
//! and docker write it), epoch numbers of unknown unit, and the month names of
//! syslog and access logs.
//!
//! Hand-written on purpose: this is on the hot path of every container line,
//! and chrono's generic parser is several times slower. Nothing here may panic
//! or overflow: every out-of-range value gives `None`.

/// Nanoseconds per second.
pub(crate) const NANOS: i64 = 1_000_000_000;

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Howard Hinnant's `days_from_civil`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// A civil date and time with an offset east of UTC in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    pub offset_secs: i64,
}

impl Civil {
    /// Nanoseconds since the Unix epoch, or `None` when a field is out of range
    /// or the instant does not fit an `i64` (years outside 1678–2261).
    pub(crate) fn to_unix_nanos(self) -> Option<i64> {
        if !(0..=9999).contains(&self.year)
            || !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            // 60 is a leap second; it rolls into the next minute.
            || self.second > 60
            || self.nanos >= 1_000_000_000
            || self.offset_secs.abs() >= 24 * 3600
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - self.offset_secs;
        secs.checked_mul(NANOS)?.checked_add(i64::from(self.nanos))
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v: u32 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// Reads `HH:MM:SS[.fraction]` at `at`; returns the fields and the index after.
fn parse_clock(b: &[u8], at: usize) -> Option<(u32, u32, u32, u32, usize)> {
    let hour = digits(b, at, 2)?;
    if b.get(at + 2) != Some(&b':') {
        return None;
    }
    let minute = digits(b, at + 3, 2)?;
    if b.get(at + 5) != Some(&b':') {
        return None;
    }
    let second = digits(b, at + 6, 2)?;
    let mut i = at + 8;
    let mut nanos = 0u32;
    if matches!(b.get(i), Some(b'.') | Some(b',')) {
        i += 1;
        let start = i;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            // Digits past nanosecond precision are read and ignored.
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    Some((hour, minute, second, nanos, i))
}

/// Reads an RFC 3339 timestamp (`2024-01-15T10:20:30.123456789Z`,
/// `...+08:00`) that must span all of `b`. With `offset_optional`, a missing
/// offset means UTC and a space may separate date and time (common in
/// application logs); CRI and docker always write the strict form.
pub(crate) fn parse_rfc3339(b: &[u8], offset_optional: bool) -> Option<i64> {
    let year = digits(b, 0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    match b.get(10) {
        Some(b'T') | Some(b't') => {}
        Some(b' ') if offset_optional => {}
        _ => return None,
    }
    let (hour, minute, second, nanos, i) = parse_clock(b, 11)?;
    let offset_secs = match b.get(i..)? {
        [] if offset_optional => 0,
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [_, _, b':', _, _] => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                [_, _, _, _] => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                _ => return None,
            };
            if m > 59 {
                return None;
            }
            let secs = i64::from(h) * 3600 + i64::from(m) * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    Civil {
        year: i64::from(year),
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_secs,
    }
    .to_unix_nanos()
}

/// Reads `HH:MM:SS[.frac]` spanning all of `b`: `(hour, minute, second, nanos)`.
pub(crate) fn parse_clock_exact(b: &[u8]) -> Option<(u32, u32, u32, u32)> {
    let (h, m, s, n, end) = parse_clock(b, 0)?;
    (end == b.len()).then_some((h, m, s, n))
}

/// Converts an epoch number of unknown unit to nanoseconds, guessing the unit
/// from the magnitude (seconds up to year 5138, then millis, micros, nanos).
/// Zero, negative and non-finite values give `None`.
pub(crate) fn epoch_to_nanos(v: f64) -> Option<i64> {
    if !v.is_finite() || v <= 0.0 {
        return None;
    }
    let ns = if v < 1e11 {
        v * 1e9
    } else if v < 1e14 {
        v * 1e6
    } else if v < 1e17 {
        v * 1e3
    } else {
        v
    };
    // i64::MAX as f64 rounds up, so compare strictly below it.
    if ns >= 9.2e18 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some(ns as i64)
}

/// [`epoch_to_nanos`] for an integer, exact for nanoseconds.
pub(crate) fn epoch_int_to_nanos(v: i64) -> Option<i64> {
    if v <= 0 {
        None
    } else if v < 100_000_000_000 {
        v.checked_mul(NANOS)
    } else if v < 100_000_000_000_000 {
        v.checked_mul(1_000_000)
    } else if v < 100_000_000_000_000_000 {
        v.checked_mul(1_000)
    } else {
        Some(v)
    }
}

/// Reads an epoch number written as text (`1705314030`, `1705314030.123`).
pub(crate) fn parse_epoch_text(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() || t.len() > 32 || !t.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return epoch_int_to_nanos(i);
    }
    epoch_to_nanos(t.parse::<f64>().ok()?)
}

/// Reads a timestamp as applications write it: RFC 3339 (offset optional) or
/// an epoch number as text.
pub(crate) fn parse_any_text(text: &str) -> Option<i64> {
    let t = text.trim();
    parse_rfc3339(t.as_bytes(), true).or_else(|| parse_epoch_text(t))
}

/// The month number (1–12) of an English three-letter abbreviation.
pub(crate) fn month_from_abbrev(b: &[u8]) -> Option<u32> {
    Some(match b {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_nanoseconds_and_zulu() {
        assert_eq!(
            parse_rfc3339(b"2024-01-15T10:20:30.123456789Z", false),
            Some(1_705_314_030_123_456_789)
        );
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z", false), Some(0));
    }

    #[test]
    fn rfc3339_offsets_shift_to_utc() {
        assert_eq!(
            parse_rfc3339(b"2024-01-15T18:20:30+08:00", false),
            parse_rfc3339(b"2024-01-15T10:20:30Z", false)
        );
        assert_eq!(
            parse_rfc3339(b"2003-08-24T05:14:15.000003-07:00", false),
            Some(1_061_727_255_000_003_000)
        );
    }

    #[test]
    fn rfc3339_rejects_out_of_range_and_garbage() {
        for bad in [
            &b""[..],
            b"2024-13-01T00:00:00Z",
            b"2023-02-29T00:00:00Z",
            b"2024-01-15T24:00:00Z",
            b"2024-01-15T10:20:30",
            b"2024-01-15T10:20:30.Z",
            b"2024-01-15T10:20:30Zjunk",
            b"9999-12-31T23:59:59Z",
            b"2024-01-15T10:20:30+99:00",
            b"\xff\xfe",
        ] {
            assert_eq!(
                parse_rfc3339(bad, false),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rfc3339_lenient_accepts_space_and_no_offset() {
        assert_eq!(
            parse_rfc3339(b"2024-01-15 10:20:30,5", true),
            Some(1_705_314_030_500_000_000)
        );
    }

    #[test]
    fn epoch_unit_is_guessed_from_magnitude() {
        let s = 1_705_314_030_i64;
        assert_eq!(epoch_int_to_nanos(s), Some(s * NANOS));
        assert_eq!(epoch_int_to_nanos(s * 1000), Some(s * NANOS));
        assert_eq!(epoch_int_to_nanos(s * 1_000_000), Some(s * NANOS));
        assert_eq!(epoch_int_to_nanos(s * NANOS), Some(s * NANOS));
        assert_eq!(epoch_int_to_nanos(-5), None);
        assert_eq!(epoch_to_nanos(1e300), None);
        assert_eq!(epoch_to_nanos(f64::NAN), None);
        assert_eq!(
            parse_epoch_text("1705314030.5"),
            Some(1_705_314_030_500_000_000)
        );
    }
}
