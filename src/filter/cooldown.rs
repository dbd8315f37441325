//! The cooldown: files younger than `cooldown` are held back until they come of age. Most
//! malicious uploads are found and removed within days; a mirror that waits protects every
//! client behind it.
//!
//! A file's age is taken from upstream's upload time (PEP 700 `upload-time`, the JSON API's
//! `upload_time_iso_8601`). A file without one, or with one that is not an RFC 3339 time,
//! counts as old: there is nothing to wait for.

/// A duration as `cooldown` is written: `"90s"`, `"30m"`, `"48h"`, `"7d"`, or `0` (off).
/// Seconds; `None` when it is none of these.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "0" {
        return Some(0);
    }
    let unit = text.chars().last()?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let number = &text[..text.len() - 1];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// The shortest way to write `secs` as `cooldown` takes it.
pub fn show_duration(secs: u64) -> String {
    match secs {
        0 => "0".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Unix seconds of an upload time: `YYYY-MM-DDTHH:MM:SS`, optional fraction, then `Z`, an
/// offset `±HH:MM`, or nothing (UTC, as the JSON API's `upload_time` is written). `None`
/// for anything else.
pub fn parse_upload_time(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    if b.len() < 19 || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let m = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month as u32, day as u32);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`, for `status` and log lines.
pub fn show_time(unix: i64) -> String {
    let (days, rem) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// When a file uploaded at `upload_time` comes of age under `cooldown` seconds; `None` when
/// it has no readable upload time (old).
pub fn matures_at(upload_time: Option<&str>, cooldown: u64) -> Option<i64> {
    let uploaded = parse_upload_time(upload_time?)?;
    uploaded.checked_add(i64::try_from(cooldown).ok()?)
}

/// Now, in unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Howard Hinnant's (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("48h"), Some(172_800));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("0"), Some(0));
        for bad in ["", "7", "7w", "d", "-1d", "1.5h", "7 d", "s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        for s in [0, 25, 90, 1800, 172_800, 604_800] {
            assert_eq!(parse_duration(&show_duration(s)), Some(s));
        }
    }

    #[test]
    fn upload_times() {
        let t = 1_704_164_645; // 2024-01-02T03:04:05Z
        for text in [
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05.123456Z",
            "2024-01-02T04:04:05+01:00",
            "2024-01-01T23:04:05.5-04:00",
        ] {
            assert_eq!(parse_upload_time(text), Some(t), "{text}");
        }
        assert_eq!(show_time(t), "2024-01-02T03:04:05Z");
        for bad in [
            "",
            "yesterday",
            "2024-13-02T03:04:05Z",
            "2024-01-02T03:04:05.Z",
        ] {
            assert_eq!(parse_upload_time(bad), None, "{bad:?}");
        }
        assert_eq!(parse_upload_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_upload_time("2000-03-01T00:00:00Z"), Some(951_868_800));
    }

    #[test]
    fn a_file_without_an_upload_time_is_old() {
        assert_eq!(matures_at(None, 60), None);
        assert_eq!(matures_at(Some("not a time"), 60), None);
        assert_eq!(matures_at(Some("1970-01-01T00:01:00Z"), 60), Some(120));
    }
}
