//! Wall-clock time as text, for records and file metadata, and times given on the command line
//! (`--since`) read into that same text.

/// The current time as RFC 3339 UTC with milliseconds (sorts as text).
pub fn now_iso() -> String {
    // RFC 3339 in UTC with milliseconds: sorts as text.
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 time (`2026-11-01T09:30:00Z`,
/// `2026-11-01 09:30:00.5+02:00`) as the UTC text [`now_iso`] writes, so that it compares with
/// recorded times as text. Anything else is an error saying what is taken.
pub fn parse_since(s: &str) -> Result<String, String> {
    let bad = || {
        format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time (e.g. 2026-11-01T09:30:00Z)")
    };
    let t = s.trim();
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = t.get(a..b)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let sep = |i: usize, c: &[u8]| t.as_bytes().get(i).is_some_and(|b| c.contains(b));
    if !(sep(4, b"-") && sep(7, b"-")) {
        return Err(bad());
    }
    let (y, mo, d) = (
        num(0, 4).ok_or_else(bad)?,
        num(5, 7).ok_or_else(bad)?,
        num(8, 10).ok_or_else(bad)?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return Err(bad());
    }
    let (mut secs, mut millis) = (0i64, 0i64);
    if t.len() > 10 {
        if !(sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return Err(bad());
        }
        let (h, mi, sec) = (
            num(11, 13).ok_or_else(bad)?,
            num(14, 16).ok_or_else(bad)?,
            num(17, 19).ok_or_else(bad)?,
        );
        if h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        let mut rest = t.get(19..).ok_or_else(bad)?;
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(bad());
            }
            let digits = format!("{:0<3}", &frac[..n.min(3)]);
            millis = digits.parse().map_err(|_| bad())?;
            rest = &frac[n..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
                let part = |a: usize, b: usize| {
                    o.get(a..b)
                        .filter(|p| p.bytes().all(|c| c.is_ascii_digit()))
                        .and_then(|p| p.parse::<i64>().ok())
                };
                if o.get(3..4) != Some(":") {
                    return Err(bad());
                }
                let (oh, om) = (part(1, 3).ok_or_else(bad)?, part(4, 6).ok_or_else(bad)?);
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let sign = if o.starts_with('-') { -1 } else { 1 };
                sign * (oh * 3600 + om * 60)
            }
            _ => return Err(bad()),
        };
        secs = h * 3600 + mi * 60 + sec.min(59) - offset;
    }
    let total = days_from_civil(y, mo as u32, d as u32) * 86_400 + secs;
    let (days, rem) = (total.div_euclid(86_400), total.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    Ok(format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// A civil date to days since 1970-01-01 (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let n = now_iso();
        assert_eq!(n.len(), 24, "{n}");
        assert!(n.ends_with('Z'));
    }

    #[test]
    fn since_takes_dates_and_rfc3339_times() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        let ok = |s: &str| parse_since(s).unwrap();
        assert_eq!(ok("2026-11-01"), "2026-11-01T00:00:00.000Z");
        assert_eq!(ok("2026-11-01T09:30:00Z"), "2026-11-01T09:30:00.000Z");
        assert_eq!(ok("2026-11-01 09:30:00.5z"), "2026-11-01T09:30:00.500Z");
        assert_eq!(ok("2026-11-01T01:30:00+02:00"), "2026-10-31T23:30:00.000Z");
        assert_eq!(
            ok("2024-12-31T23:00:00.123456-01:30"),
            "2025-01-01T00:30:00.123Z"
        );
        for bad in [
            "notadate",
            "",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-11-01T25:00:00Z",
            "2026-11-01T09:30:00",
            "2026-11-01T09:30Z",
            "2026-11-01T09:30:00+2",
            "2026/11/01",
            "+026-11-01",
            "2026-11-01x",
            "2026-11-01T09:30:00+0é0",
            "2026-11-01T09:30:00é",
        ] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
        // Now sorts after a date of the past.
        assert!(now_iso() > ok("2020-01-01"));
    }
}
