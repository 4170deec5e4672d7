//! Prometheus remote write 1.0, sans-IO: the few `prometheus.WriteRequest`
//! messages (derived by hand with prost: field numbers as in Prometheus's
//! `prompb/types.proto` and `remote.proto`), building one from the same
//! [`Family`]s `/metrics` serves, and the snappy block format the protocol
//! wraps them in.

use prost::Message as _;

use super::exposition::{Family, Kind};

/// `Content-Type` of a remote write body.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `Content-Encoding` of a remote write body.
pub const CONTENT_ENCODING: &str = "snappy";
/// `X-Prometheus-Remote-Write-Version` of protocol 1.0.
pub const VERSION: &str = "0.1.0";

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// One entry per series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Type and help of each family (field 2 is reserved).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels sorted by name, `__name__` first.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in time order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// A [`MetricType`] as its number.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    /// Family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`, the values loadgen sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum MetricType {
    /// `COUNTER`.
    Counter = 1,
    /// `GAUGE`.
    Gauge = 2,
    /// `HISTOGRAM`.
    Histogram = 3,
}

impl From<Kind> for MetricType {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        }
    }
}

/// A body that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// Not snappy's block format.
    #[error("not snappy block-compressed: {0}")]
    Snappy(#[from] snap::Error),
    /// Not a `WriteRequest`.
    #[error("not a prometheus.WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// The request carrying every series of `families` at `at_ms`.
pub fn build(families: &[Family], at_ms: i64) -> WriteRequest {
    let mut req = WriteRequest::default();
    for f in families {
        req.metadata.push(MetricMetadata {
            kind: MetricType::from(f.kind) as i32,
            metric_family_name: f.name.clone(),
            help: f.help.clone(),
            unit: String::new(),
        });
        for s in &f.samples {
            let mut labels: Vec<Label> = std::iter::once(("__name__", s.name.as_str()))
                .chain(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map(|(name, value)| Label {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect();
            // The protocol wants names sorted; `__name__` first whatever
            // the other names are.
            labels.sort_by(|a, b| {
                (a.name != "__name__", &a.name).cmp(&(b.name != "__name__", &b.name))
            });
            req.timeseries.push(TimeSeries {
                labels,
                samples: vec![Sample {
                    value: s.value,
                    timestamp: at_ms,
                }],
            });
        }
    }
    req
}

/// The HTTP body of `req`: protobuf, then snappy's block (raw) format.
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let pb = req.encode_to_vec();
    // Only inputs over snappy's 4 GiB limit fail; a request is kilobytes.
    snap::raw::Encoder::new()
        .compress_vec(&pb)
        .unwrap_or_default()
}

/// A body back into its request, as a receiver reads it.
pub fn decode(body: &[u8]) -> Result<WriteRequest, RemoteWriteError> {
    let pb = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(WriteRequest::decode(pb.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::exposition::{families, Digest, RunInfo, StageSpan, Totals};
    use crate::metrics::{Figure, Mark, Recorder};
    use crate::scenario::Shard;

    fn totals() -> Totals {
        let mut r = Recorder::default();
        r.record(Mark::Stage(0), Figure::Rtt, 700);
        r.count(Mark::Stage(0), |c| c.sent += 3);
        let mut t = Totals::default();
        t.add(&Digest::of(&r.take(), 7, 3.0, Some(0)));
        t
    }

    fn info() -> RunInfo {
        RunInfo {
            run: "r9".into(),
            shard: Some(Shard { index: 1, count: 2 }),
            url: "ws://h/ws".into(),
            model: "open".into(),
            stages: vec![StageSpan {
                name: "hold".into(),
                end_s: 5.0,
            }],
        }
    }

    fn value_of(req: &WriteRequest, name: &str, extra: Option<(&str, &str)>) -> Option<f64> {
        req.timeseries
            .iter()
            .find(|ts| {
                ts.labels[0].value == name
                    && extra
                        .is_none_or(|(k, v)| ts.labels.iter().any(|l| l.name == k && l.value == v))
            })
            .map(|ts| ts.samples[0].value)
    }

    #[test]
    fn what_it_encodes_decodes_to_the_same_series() {
        let fams = families(&totals(), &info());
        let req = build(&fams, 1_700_000_000_123);
        let back = decode(&encode(&req)).unwrap();
        assert_eq!(back, req);
        let series: usize = fams.iter().map(|f| f.samples.len()).sum();
        assert_eq!(back.timeseries.len(), series);
        assert_eq!(back.metadata.len(), fams.len());
        for ts in &back.timeseries {
            assert_eq!(ts.labels[0].name, "__name__");
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "labels sorted by name");
            assert!(names.contains(&"run") && names.contains(&"shard"));
            assert_eq!(ts.samples.len(), 1);
            assert_eq!(ts.samples[0].timestamp, 1_700_000_000_123);
        }
        assert_eq!(
            value_of(&back, "loadgen_messages_sent_total", None),
            Some(3.0)
        );
        assert_eq!(value_of(&back, "loadgen_sessions_open", None), Some(7.0));
        assert_eq!(
            value_of(&back, "loadgen_rtt_seconds_bucket", Some(("le", "0.001"))),
            Some(1.0)
        );
        assert_eq!(
            value_of(&back, "loadgen_rtt_seconds_bucket", Some(("le", "0.0005"))),
            Some(0.0)
        );
        let rtt = back
            .metadata
            .iter()
            .find(|m| m.metric_family_name == "loadgen_rtt_seconds")
            .unwrap();
        assert_eq!(rtt.kind, MetricType::Histogram as i32);
    }

    #[test]
    fn the_body_is_the_block_format_not_the_framed_one() {
        let body = encode(&build(&families(&totals(), &info()), 1));
        // The framed format starts with its stream identifier chunk.
        assert_ne!(body.get(..4), Some(&[0xff, 0x06, 0x00, 0x00][..]));
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert!(WriteRequest::decode(raw.as_slice()).is_ok());
        assert!(decode(b"\xff\x06\x00\x00sNaPpY").is_err());
    }
}
