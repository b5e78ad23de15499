//! Times users give for time travel: `latest`, an RFC 3339 instant, a TXID (16 hex digits),
//! or a relative time (`5 minutes ago`, `2h ago`, `yesterday`, `now`).

use chrono::{DateTime, Duration as Span, Utc};
use sluice_ltx::TxId;

use crate::error::{Error, Result};
use crate::restore::Target;

/// Parses `input` relative to `now`.
pub fn parse_time(input: &str, now: DateTime<Utc>) -> Result<Target> {
    let s = input.trim();
    let bad = |reason: &str| Error::BadTime { input: input.to_string(), reason: reason.to_string() };
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "" => return Err(bad("empty")),
        "latest" => return Ok(Target::Latest),
        "now" => return Ok(Target::Timestamp(now)),
        "yesterday" => return Ok(Target::Timestamp(now - Span::days(1))),
        _ => {}
    }
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return s.parse::<TxId>().map(Target::Txid).map_err(|e| bad(&e.to_string()));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Target::Timestamp(t.with_timezone(&Utc)));
    }
    let Some(rest) = lower.strip_suffix("ago") else {
        return Err(bad("expected 'latest', an RFC 3339 time, a 16-digit TXID or '<n> <unit> ago'"));
    };
    let rest = rest.trim();
    let split = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (num, unit) = rest.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad("expected a number before the unit"))?;
    let span = match unit.trim().trim_end_matches('s') {
        "" | "second" | "sec" => Span::seconds(n),
        "m" | "min" | "minute" => Span::minutes(n),
        "h" | "hour" => Span::hours(n),
        "d" | "day" => Span::days(n),
        "w" | "week" => Span::weeks(n),
        _ => return Err(bad("unknown unit (seconds, minutes, hours, days, weeks)")),
    };
    Ok(Target::Timestamp(now - span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z").unwrap().with_timezone(&Utc);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(parse_time("LATEST", now).unwrap(), Target::Latest);
        assert_eq!(parse_time("2026-12-01T08:30:00.5Z", now).unwrap(), Target::Timestamp(at("2026-12-01T08:30:00.5Z")));
        assert_eq!(parse_time("000000000000000a", now).unwrap(), Target::Txid(TxId(10)));
        assert_eq!(parse_time("5 minutes ago", now).unwrap(), Target::Timestamp(at("2026-12-03T09:55:00Z")));
        assert_eq!(parse_time("2h ago", now).unwrap(), Target::Timestamp(at("2026-12-03T08:00:00Z")));
        assert_eq!(parse_time("1 day ago", now).unwrap(), Target::Timestamp(at("2026-12-02T10:00:00Z")));
        assert_eq!(parse_time("yesterday", now).unwrap(), Target::Timestamp(at("2026-12-02T10:00:00Z")));
        for bad in ["", "soon", "5 parsecs ago", "ago", "2026-13-01T00:00:00Z"] {
            let e = parse_time(bad, now).unwrap_err();
            assert!(matches!(e, Error::BadTime { .. }), "{bad:?}: {e}");
        }
    }
}
