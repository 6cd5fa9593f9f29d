//! Durations as people write them in YAML: `500ms`, `10s`, `5m`, `2h`, `7d`, `1h30m`.
//!
//! Every duration that enters Steward — configuration, API, CLI, runbook parameters —
//! goes through [`parse_duration`], which refuses anything longer than
//! [`MAX_DURATION`] (100 years). That bound is what lets the rest of the program add a
//! duration to "now" without overflow checks at every call site: `now + 100 years`
//! fits in every time type Steward uses.

use std::fmt::Write;
use std::time::Duration;

/// The longest duration Steward accepts anywhere: 100 years of 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);
/// How MAX_DURATION is written in messages.
pub const MAX_DURATION_TEXT: &str = "36500d (100 years)";
/// Longer texts are refused before parsing: no honest duration needs more.
const MAX_TEXT_LEN: usize = 64;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.len() > MAX_TEXT_LEN {
        return Err(format!("a duration is at most {MAX_TEXT_LEN} characters long; this one has {}", s.len()));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration"));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| format!("`{text}` is not a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86400.0,
            "" => return Err(format!("`{text}` has no unit; write e.g. `{number}s`")),
            other => {
                return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m, h or d)"));
            }
        };
        // Checked before converting: from_secs_f64 panics past u64 seconds.
        if !seconds.is_finite() || seconds > MAX_DURATION.as_secs_f64() {
            return Err(too_long(text));
        }
        total = total.checked_add(Duration::from_secs_f64(seconds)).filter(|t| *t <= MAX_DURATION).ok_or_else(|| too_long(text))?;
    }
    Ok(total)
}

fn too_long(text: &str) -> String {
    format!("`{text}` is longer than the maximum of {MAX_DURATION_TEXT}")
}

/// The shortest exact spelling, e.g. `1m30s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if ms >= size {
            let _ = write!(out, "{}{unit}", ms / size);
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn refuses_durations_past_the_maximum_instead_of_panicking() {
        for text in ["99999999999999999999d", "200000000d", "10000000000000000000s10000000000000000000s", "36501d", "36500d1ms"] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains("maximum of 36500d"), "{text}: {e}");
        }
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        assert!(parse_duration(&"1".repeat(400)).unwrap_err().contains("at most 64 characters"));
        assert!(parse_duration("1.2.3s").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["250ms", "10s", "1m30s", "2h", "7d"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
