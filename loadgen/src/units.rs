//! Durations and latencies as users write them (`30s`, `80ms`, `1.5s`, `250us`)
//! and as loadgen prints them back; points in time as `--start-at` takes them.

use std::fmt;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A duration or latency that could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "'{input}' is not a duration: write a number and a unit, such as 250us, 80ms, 1.5s, 2m or 1h"
)]
pub struct DurationError {
    /// What the user wrote.
    pub input: String,
}

/// A point in time that could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("'{input}' is not a time: write RFC 3339 (2026-12-04T18:30:00Z, or with an offset such as +01:00) or Unix milliseconds (1796412600000)")]
pub struct TimeError {
    /// What the user wrote.
    pub input: String,
}

/// Parses a point in time: RFC 3339 or milliseconds since the Unix epoch.
pub fn parse_time(input: &str) -> Result<std::time::SystemTime, TimeError> {
    let s = input.trim();
    let err = || TimeError {
        input: input.to_string(),
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = s.parse().map_err(|_| err())?;
        return Ok(std::time::UNIX_EPOCH + Duration::from_millis(ms));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| err())?;
    let ns = t.unix_timestamp_nanos();
    let ns = u64::try_from(ns).map_err(|_| err())?;
    Ok(std::time::UNIX_EPOCH + Duration::from_nanos(ns))
}

/// Parses `250us`, `80ms`, `1.5s`, `2m`, `1h` (a bare `0` is zero).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    let err = || DurationError {
        input: input.to_string(),
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| err())?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Prints microseconds with a unit that keeps three significant digits:
/// `812us`, `1.25ms`, `14.2ms`, `1.50s`.
pub fn format_us(us: u64) -> String {
    let v = us as f64;
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{}ms", sig3(v / 1e3))
    } else {
        format!("{}s", sig3(v / 1e6))
    }
}

/// Prints a duration compactly and losslessly to the microsecond (`30s`, `1500ms`, `250us`).
pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        "0s".to_string()
    } else if us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else if us % 1_000 == 0 {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

fn sig3(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A duration in a scenario file: a string with a unit (`"30s"`) or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole microseconds.
    pub fn as_us(self) -> u64 {
        u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX)
    }
    /// Seconds as a float.
    pub fn secs(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl std::str::FromStr for Dur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Dur)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or \"80ms\", or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                if v.is_finite() && (0.0..1e9).contains(&v) {
                    Ok(Dur(Duration::from_secs_f64(v)))
                } else {
                    Err(E::custom(
                        "a duration must be a non-negative number of seconds",
                    ))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_rfc_3339_or_unix_milliseconds() {
        let at = |s: &str| {
            parse_time(s)
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        assert_eq!(at("1796412600000"), 1_796_412_600_000);
        assert_eq!(at("2026-12-04T18:30:00Z"), 1_796_409_000_000);
        assert_eq!(at("2026-12-04T19:30:00+01:00"), 1_796_409_000_000);
        assert_eq!(at("2026-12-04T18:30:00.250Z"), 1_796_409_000_250);
        for bad in ["", "tomorrow", "2026-12-04 18:30", "-5"] {
            let e = parse_time(bad).unwrap_err().to_string();
            assert!(e.contains("RFC 3339"), "{e}");
        }
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("80ms"), Ok(Duration::from_millis(80)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 30s "), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in ["", "30", "s", "1.2.3s", "-1s", "10 parsecs", "1e99s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let msg = parse_duration("30").unwrap_err().to_string();
        assert!(msg.contains("80ms"), "{msg}");
    }

    #[test]
    fn formats_with_three_significant_digits() {
        assert_eq!(format_us(812), "812us");
        assert_eq!(format_us(1_250), "1.25ms");
        assert_eq!(format_us(14_230), "14.2ms");
        assert_eq!(format_us(1_500_000), "1.50s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn dur_reads_strings_and_numbers() {
        #[derive(Deserialize)]
        struct T {
            a: Dur,
            b: Dur,
            c: Dur,
        }
        let t: T = toml::from_str("a = \"80ms\"\nb = 3\nc = 0.5").unwrap();
        assert_eq!(t.a.0, Duration::from_millis(80));
        assert_eq!(t.b.0, Duration::from_secs(3));
        assert_eq!(t.c.0, Duration::from_millis(500));
        assert!(toml::from_str::<T>("a = \"fast\"\nb = 1\nc = 1").is_err());
    }
}
