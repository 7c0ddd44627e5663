//! Timestamps: RFC 3339 parsing for string timestamps and the
//! `@timestamp` formatting with exactly three truncated fraction digits.
//!
//! Invariant: all model times are i64 nanoseconds since the Unix epoch;
//! nothing here allocates or panics.

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) for days since the epoch.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |a, &c| a * 10 + (c - b'0') as i64))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM|±HHMM|±HH)` into ns.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, se) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let f = &b[start..i];
        for k in 0..9 {
            frac_ns = frac_ns * 10 + f.get(k).map(|c| (c - b'0') as i64).unwrap_or(0);
        }
    }
    let rest = &b[i..];
    let offset_s = match rest {
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), tz @ ..] => {
            let (hh, mm) = match tz {
                [a, b2] => (digits(&[*a, *b2])?, 0),
                [a, b2, b':', c, d2] | [a, b2, c, d2] => (digits(&[*a, *b2])?, digits(&[*c, *d2])?),
                _ => return None,
            };
            let o = hh * 3600 + mm * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// Appends `"YYYY-MM-DDTHH:MM:SS.mmmZ"` (quoted) for `ns`, milliseconds truncated.
pub(crate) fn write_timestamp(out: &mut Vec<u8>, ns: i64) {
    let ms = ns.div_euclid(1_000_000);
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let mut buf = [0u8; 26];
    let y = y.clamp(0, 9999);
    let put = |buf: &mut [u8; 26], at: usize, v: i64, n: usize| {
        let mut v = v;
        for k in (0..n).rev() {
            buf[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    buf[0] = b'"';
    put(&mut buf, 1, y, 4);
    buf[5] = b'-';
    put(&mut buf, 6, m, 2);
    buf[8] = b'-';
    put(&mut buf, 9, d, 2);
    buf[11] = b'T';
    put(&mut buf, 12, sod / 3600, 2);
    buf[14] = b':';
    put(&mut buf, 15, (sod / 60) % 60, 2);
    buf[17] = b':';
    put(&mut buf, 18, sod % 60, 2);
    buf[20] = b'.';
    put(&mut buf, 21, milli, 3);
    buf[24] = b'Z';
    buf[25] = b'"';
    out.extend_from_slice(&buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_truncated_millis() {
        let mut v = Vec::new();
        write_timestamp(&mut v, 1_571_657_444_929_001_000);
        assert_eq!(v, b"\"2019-10-21T11:30:44.929Z\"");
    }

    #[test]
    fn parses_offsets() {
        let a = parse_rfc3339("2022-09-08T13:47:29.111-0800").unwrap();
        let b = parse_rfc3339("2022-09-08T21:47:29.111Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(parse_rfc3339("2022-09-08T22:47:29.111+01:00"), Some(b));
        assert_eq!(parse_rfc3339("2022-09-08T22:47:29.111+01"), Some(b));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("nope"), None);
        assert_eq!(parse_rfc3339("2022-09-08T22:47:29.111"), None);
    }
}
