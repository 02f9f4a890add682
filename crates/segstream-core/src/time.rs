//! Event time: RFC 3339 parsing and formatting, durations.
//!
//! Times are epoch milliseconds (`i64`). The parser is hand-written because it runs once per
//! event on the hot path; it accepts exactly RFC 3339 `date-time` (offset required).

/// Epoch milliseconds.
pub type Millis = i64;

pub const SECOND: Millis = 1_000;
pub const MINUTE: Millis = 60 * SECOND;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;
pub const WEEK: Millis = 7 * DAY;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at + n)?;
    let mut v = 0i64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// Parses an RFC 3339 date-time (`2026-11-22T10:00:00Z`, `2026-11-22T10:00:00.123+01:00`)
/// into epoch milliseconds. Lower-case `t`/`z` are accepted as RFC 3339 allows; a space
/// separator is not (JSON Schema's `date-time` rejects it too).
/// Fractions beyond milliseconds are truncated.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't') {
        return None;
    }
    let (y, mo, d) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (h, mi, sec) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 {
        return None;
    }
    // A leap second (60) is folded into the last millisecond of its minute.
    if sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (digits(b, i + 1, 2)?, digits(b, i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 60 + om;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let (sec, millis) = if sec == 60 { (59, 999) } else { (sec, millis) };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds: `2026-11-22T10:00:00.000Z`.
pub fn format_rfc3339(ms: Millis) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339(&mut out, ms);
    out
}

/// Appends the RFC 3339 form of `ms` to `out` (no allocation beyond growing `out`).
pub fn write_rfc3339(out: &mut String, ms: Millis) {
    match rfc3339_bytes(ms) {
        Some(b) => out.push_str(std::str::from_utf8(&b).expect("ASCII digits")),
        None => write_rfc3339_any_year(out, ms),
    }
}

/// The RFC 3339 form of `ms` as bytes, for the years 0 to 9999 (every time an event can
/// carry); `None` for the others, which [`write_rfc3339`] formats the slow way.
pub fn rfc3339_bytes(ms: Millis) -> Option<[u8; 24]> {
    let days = ms.div_euclid(DAY);
    let rem = ms.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, rem / HOUR);
    put(14, 2, rem % HOUR / MINUTE);
    put(17, 2, rem % MINUTE / SECOND);
    put(20, 3, rem % SECOND);
    Some(b)
}

fn write_rfc3339_any_year(out: &mut String, ms: Millis) {
    let days = ms.div_euclid(DAY);
    let rem = ms.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / HOUR,
        rem % HOUR / MINUTE,
        rem % MINUTE / SECOND,
        rem % SECOND,
    );
    use std::fmt::Write;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z"
    );
}

/// Parses a duration such as `24h`, `30d`, `1h30m`, `90s`, `2w`, `500ms` into milliseconds.
pub fn parse_duration(s: &str) -> Option<Millis> {
    let b = s.trim().as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut i = 0;
    let mut total: Millis = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 12 {
            return None;
        }
        let n: Millis = std::str::from_utf8(&b[start..i]).ok()?.parse().ok()?;
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &b[unit_start..i] {
            b"ms" => 1,
            b"s" => SECOND,
            b"m" => MINUTE,
            b"h" => HOUR,
            b"d" => DAY,
            b"w" => WEEK,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// The shortest exact form of a duration: `86400000` -> `1d`, `5400000` -> `1h30m`.
pub fn format_duration(ms: Millis) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, name) in [
        (WEEK, "w"),
        (DAY, "d"),
        (HOUR, "h"),
        (MINUTE, "m"),
        (SECOND, "s"),
        (1, "ms"),
    ] {
        if rest >= unit {
            out.push_str(&(rest / unit).to_string());
            out.push_str(name);
            rest %= unit;
        }
    }
    out
}

/// Serde support for durations written as `"5m"`, `"24h"` (or plain milliseconds).
pub mod serde_duration {
    use super::{format_duration, parse_duration, Millis};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Millis(i64),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) if ms >= 0 => Ok(ms),
            Raw::Millis(ms) => Err(D::Error::custom(format!("negative duration {ms}"))),
            Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
                D::Error::custom(format!(
                    "invalid duration {t:?}: use a number with a unit (ms, s, m, h, d, w), e.g. \"5m\""
                ))
            }),
        }
    }
}

/// Like [`serde_duration`], for optional durations (`"off"` or `"none"` disables).
pub mod serde_duration_opt {
    use super::{format_duration, parse_duration, Millis};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&format_duration(*ms)),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
        let t = String::deserialize(d)?;
        if matches!(t.as_str(), "off" | "none") {
            return Ok(None);
        }
        parse_duration(&t)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("invalid duration {t:?} (or \"off\")")))
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// The digits written by hand are what `write!` writes, for every year.
        #[test]
        fn formatted_by_hand_as_by_write(ms in -1_000_000_000_000_000i64..1_000_000_000_000_000) {
            let mut slow = String::new();
            write_rfc3339_any_year(&mut slow, ms);
            let mut fast = String::new();
            write_rfc3339(&mut fast, ms);
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    use super::*;

    #[test]
    fn parses_rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-22T10:00:00Z"),
            Some(1_795_341_600_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T11:00:00+01:00"),
            parse_rfc3339("2026-11-22T10:00:00Z")
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T05:30:00-04:30"),
            parse_rfc3339("2026-11-22T10:00:00Z")
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.5Z"), Some(500));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.123456Z"), Some(123));
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T10:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00+0100",
            "2026-11-22T10:00:00Zjunk",
            "yesterday at noon!!",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        for ms in [0, 1, 1_795_341_600_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(DAY));
        assert_eq!(parse_duration("1h30m"), Some(90 * MINUTE));
        assert_eq!(parse_duration("2w"), Some(14 * DAY));
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(format_duration(DAY), "1d");
        assert_eq!(format_duration(90 * MINUTE), "1h30m");
    }
}
