//! Go-compatible parsing of durations (`time.ParseDuration`) and byte sizes
//! (`humanize.ParseBytes`, as Litestream's `ByteSize` uses it).

use std::time::Duration;

/// Parses a Go duration such as `500ms`, `1s`, `2m`, `1h30m`, `1.5h` or `0`.
///
/// Units: `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`. A negative duration is an error
/// because no Sluice setting has a meaning for one; `-0s` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(format!("invalid duration {text:?}"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, frac, after) = split_number(rest).ok_or_else(|| format!("invalid duration {text:?}"))?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        let nanos_per = unit_nanos(unit).ok_or_else(|| {
            if unit.is_empty() {
                format!("missing unit in duration {text:?} (use e.g. 1s, 500ms, 1h30m)")
            } else {
                format!("unknown unit {unit:?} in duration {text:?}")
            }
        })?;
        total = whole
            .checked_mul(nanos_per)
            .and_then(|v| v.checked_add(frac.0 * nanos_per / frac.1))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(|| format!("duration {text:?} is out of range"))?;
        rest = tail;
    }
    // Go durations are i64 nanoseconds (~292 years).
    if total > i64::MAX as u128 {
        return Err(format!("duration {text:?} is out of range"));
    }
    if negative && total > 0 {
        return Err(format!("duration {text:?} must not be negative"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Splits a leading decimal number into its whole part, its fraction as
/// (numerator, denominator) and the rest of the string.
fn split_number(s: &str) -> Option<(u128, (u128, u128), &str)> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut whole: u128 = 0;
    for b in s[..int_len].bytes() {
        // Saturates, so an absurdly long number is reported as out of range.
        whole = whole.saturating_mul(10).saturating_add(u128::from(b - b'0'));
    }
    let mut rest = &s[int_len..];
    let (mut num, mut den) = (0u128, 1u128);
    let mut frac_len = 0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        // Digits beyond nanosecond-of-an-hour precision cannot change the result.
        for b in after_dot[..frac_len].bytes().take(20) {
            num = num * 10 + u128::from(b - b'0');
            den *= 10;
        }
        rest = &after_dot[frac_len..];
    }
    if int_len == 0 && frac_len == 0 {
        return None;
    }
    Some((whole, (num, den), rest))
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a byte size: plain bytes (`1048576`), SI (`64MB` = 64×1000², `1.5GB`, `10K`) or
/// IEC (`64MiB` = 64×1024², `512Ki`), case-insensitive, optional space before the unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let num_len = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',')).unwrap_or(s.len());
    let number: String = s[..num_len].chars().filter(|c| *c != ',').collect();
    let unit = s[num_len..].trim().to_ascii_lowercase();
    let multiplier = size_multiplier(&unit).ok_or_else(|| format!("unknown size unit {unit:?} in {text:?}"))?;
    if number.is_empty() {
        return Err(format!("invalid size {text:?}"));
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(|| format!("size {text:?} is too large"));
    }
    let value: f64 = number.parse().map_err(|_| format!("invalid size {text:?}"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes as u64)
}

fn size_multiplier(unit: &str) -> Option<u64> {
    const K: u64 = 1000;
    const KI: u64 = 1024;
    Some(match unit {
        "" | "b" => 1,
        "k" | "kb" => K,
        "ki" | "kib" => KI,
        "m" | "mb" => K.pow(2),
        "mi" | "mib" => KI.pow(2),
        "g" | "gb" => K.pow(3),
        "gi" | "gib" => KI.pow(3),
        "t" | "tb" => K.pow(4),
        "ti" | "tib" => KI.pow(4),
        "p" | "pb" => K.pow(5),
        "pi" | "pib" => KI.pow(5),
        "e" | "eb" => K.pow(6),
        "ei" | "eib" => KI.pow(6),
        _ => return None,
    })
}

/// Formats a duration the way Go prints one (`1h30m0s`, `500ms`), for messages.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        return match nanos {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let sub = d.subsec_nanos();
    let s = if sub == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{sub:09}").trim_end_matches('0')) };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("500ms", ms(500)),
            ("1s", ms(1000)),
            ("+1s", ms(1000)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("24h", ms(86_400_000)),
            ("1h30m", ms(5_400_000)),
            ("1.5h", ms(5_400_000)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("1m0.25s", ms(60_250)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("2h45m30s100ms", ms(9_930_100)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "invalid"),
            ("1", "missing unit"),
            ("10", "missing unit"),
            ("1d", "unknown unit"),
            ("s", "invalid"),
            ("1h30", "missing unit"),
            ("-1s", "negative"),
            ("1.2.3s", "missing unit"),
            ("abc", "invalid"),
            ("3000000h", "out of range"),
            ("99999999999999999999999999999999999999999h", "out of range"),
        ];
        for (text, want) in bad {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1048576", 1_048_576),
            ("64MB", 64_000_000),
            ("64mb", 64_000_000),
            ("64 MiB", 64 << 20),
            ("5Mi", 5 << 20),
            ("1.5GB", 1_500_000_000),
            ("10K", 10_000),
            ("100B", 100),
            ("1,024", 1024),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text).as_ref(), Ok(want), "{text}");
        }
        for text in ["", "MB", "64XB", "-1", "1.2.3MB", "99999999999EB"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(ms(500)), "500ms");
        assert_eq!(format_duration(ms(5_400_000)), "1h30m0s");
        assert_eq!(format_duration(ms(1500)), "1.5s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
