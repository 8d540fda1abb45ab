//! Unit parsers for config values: durations (`"150ms"`, `"2s"`, `"5m"`, `"1h"`).
//!
//! Pure functions; serde adapters live beside them so `file.rs` can say
//! `#[serde(deserialize_with = ...)]` and get the toml span on a bad value for free.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parse `"<digits><unit>"` where unit is `ms`, `s`, `m` or `h`. A bare `0` is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "invalid duration \"{s}\": expected a number and a unit, like \"150ms\", \"2s\", \"5m\""
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration \"{s}\": number too large"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" if n == 0 => 1,
        "" => {
            return Err(format!(
                "invalid duration \"{s}\": missing unit (ms, s, m or h)"
            ));
        }
        other => {
            return Err(format!(
                "invalid duration \"{s}\": unknown unit \"{other}\" (use ms, s, m or h)"
            ));
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration \"{s}\": too large"))
}

/// Render a duration the way the config writes it (for `check` summaries and errors).
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// serde adapter: a duration written as a string.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration string like \"150ms\", \"2s\" or \"5m\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            if v == 0 {
                Ok(Duration::ZERO)
            } else {
                Err(E::custom(format!(
                    "invalid duration {v}: write it as a string with a unit, like \"{v}s\""
                )))
            }
        }
    }
    d.deserialize_any(V)
}

/// serde adapter for `Option<Duration>`.
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_durations_with_a_reason() {
        assert!(parse_duration("2").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("2 sec")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("ms")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn formats_round_trip() {
        for s in ["150ms", "2s", "5m", "1h", "0", "1500ms"] {
            assert_eq!(fmt_duration(parse_duration(s).unwrap()), s);
        }
    }
}
