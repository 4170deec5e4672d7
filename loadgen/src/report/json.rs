//! The JSON report on disk (`--json FILE`), and histograms in HdrHistogram's
//! compressed V2 encoding, base64 (the form HdrHistogram's libraries in Java,
//! Go, Python, JavaScript and Rust decode).

use std::path::{Path, PathBuf};

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::Serialize;
use thiserror::Error;

use super::{Report, SCHEMA};

/// A report that could not be written or read.
#[derive(Debug, Error)]
pub enum ReportError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a loadgen report.
    #[error("{path}: not a loadgen report: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A report of another schema version.
    #[error(
        "{path}: schema '{found}' is not '{SCHEMA}'; merge reports of the same loadgen version"
    )]
    Schema {
        /// File.
        path: PathBuf,
        /// What it says.
        found: String,
    },
    /// A histogram that does not decode.
    #[error("a histogram does not decode: {0}")]
    Hdr(String),
    /// Nothing to merge.
    #[error("nothing to merge: give at least one report")]
    Empty,
}

/// A histogram as base64 of its compressed V2 encoding.
pub fn encode_hdr(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serializing to memory does not fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The histogram in `s` (compressed or plain V2, base64).
pub fn decode_hdr(s: &str) -> Result<Histogram<u64>, ReportError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| ReportError::Hdr(e.to_string()))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| ReportError::Hdr(format!("{e:?}")))
}

/// Writes a report, pretty-printed.
pub fn write(path: &Path, r: &impl Serialize) -> Result<(), ReportError> {
    let text = serde_json::to_string_pretty(r).expect("a report always serializes");
    std::fs::write(path, text + "\n").map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a report and checks its schema.
pub fn read(path: &Path) -> Result<Report, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ReportError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let schema = value.get("schema").and_then(|v| v.as_str()).unwrap_or("");
    if schema != SCHEMA {
        return Err(ReportError::Schema {
            path: path.to_path_buf(),
            found: schema.to_string(),
        });
    }
    serde_json::from_value(value).map_err(|e| ReportError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_histogram;

    #[test]
    fn histograms_round_trip_exactly() {
        let mut h = new_histogram();
        for v in [
            1u64,
            7,
            250,
            999,
            1_000,
            12_345,
            80_000,
            1_000_000,
            3_000_000_000,
        ] {
            h.record_n(v, v % 7 + 1).unwrap();
        }
        let s = encode_hdr(&h);
        assert!(s.starts_with("HISTFAAA"));
        let back = decode_hdr(&s).unwrap();
        assert_eq!(back.len(), h.len());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q));
        }
        assert!(matches!(decode_hdr("!!!"), Err(ReportError::Hdr(_))));
    }

    #[test]
    fn reports_round_trip_through_files() {
        let r = crate::report::tests::sample(3, &["rtt.p99<1ms"]);
        let dir = std::env::temp_dir().join(format!("loadgen-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.json");
        write(&p, &r).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back, r);
        // The documented paths exist.
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        for key in [
            "count", "min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "hdr",
        ] {
            assert!(v["metrics"]["rtt"].get(key).is_some(), "metrics.rtt.{key}");
        }
        std::fs::write(&p, r#"{"schema":"other/9"}"#).unwrap();
        assert!(matches!(read(&p), Err(ReportError::Schema { .. })));
        std::fs::write(&p, "not json").unwrap();
        assert!(matches!(read(&p), Err(ReportError::Parse { .. })));
    }
}
