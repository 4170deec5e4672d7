//! Per-request service-level objectives (`--slo ttft:1s`) and the goodput they
//! define: the share of messages whose own figures met every objective, as
//! vLLM's benchmark defines goodput.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::metrics::Figure;
use crate::units::{format_duration, parse_duration};

/// An objective one message must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slo {
    /// `rtt`, `ttft`, `itl` (the message's mean inter-token latency, vLLM's TPOT) or `reply`.
    pub figure: Figure,
    /// The largest value that still meets the objective, in microseconds.
    pub limit_us: u64,
}

/// An SLO that could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SloError {
    /// Not `FIGURE:DURATION`.
    #[error("'{0}' is not an SLO: write FIGURE:LIMIT, such as ttft:1s or rtt:80ms")]
    Syntax(String),
    /// A figure that is not per request.
    #[error("'{0}' cannot be an SLO: per-request objectives apply to rtt, ttft, itl or reply")]
    Figure(String),
    /// A bad limit.
    #[error(transparent)]
    Duration(#[from] crate::units::DurationError),
}

impl FromStr for Slo {
    type Err = SloError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, limit) = s
            .split_once(':')
            .ok_or_else(|| SloError::Syntax(s.to_string()))?;
        let figure = match Figure::from_name(name.trim()) {
            Some(Figure::Connect) | None => return Err(SloError::Figure(name.trim().to_string())),
            Some(f) => f,
        };
        let limit = parse_duration(limit)?;
        Ok(Slo {
            figure,
            limit_us: u64::try_from(limit.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.figure.name(),
            format_duration(std::time::Duration::from_micros(self.limit_us))
        )
    }
}

impl Serialize for Slo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Slo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One message's own figures, in microseconds; `None` where it has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageFigures {
    /// To its ack.
    pub rtt: Option<u64>,
    /// To its first token.
    pub ttft: Option<u64>,
    /// Mean gap between its tokens; `None` with fewer than two tokens.
    pub itl_mean: Option<u64>,
    /// To its done.
    pub reply: Option<u64>,
    /// Time per output token after the first; `None` with fewer than two tokens.
    pub tpot: Option<u64>,
}

/// Whether a settled message met every objective. A figure an objective asks
/// for and the message lacks (no token, say) misses it, except `itl` and `tpot`,
/// which a reply of fewer than two tokens meets trivially.
pub fn meets_all(slos: &[Slo], m: &MessageFigures) -> bool {
    slos.iter().all(|s| {
        let v = match s.figure {
            Figure::Rtt => m.rtt,
            Figure::Ttft => m.ttft,
            Figure::Reply => m.reply,
            Figure::Itl => match (m.itl_mean, m.ttft) {
                (Some(v), _) => Some(v),
                (None, Some(_)) => Some(0),
                (None, None) => None,
            },
            Figure::Tpot => match (m.tpot, m.ttft) {
                (Some(v), _) => Some(v),
                (None, Some(_)) => Some(0),
                (None, None) => None,
            },
            Figure::Connect => return true,
        };
        v.is_some_and(|v| v <= s.limit_us)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s: Slo = "ttft:1s".parse().unwrap();
        assert_eq!(
            s,
            Slo {
                figure: Figure::Ttft,
                limit_us: 1_000_000
            }
        );
        assert_eq!(s.to_string(), "ttft:1s");
        assert_eq!("rtt:80ms".parse::<Slo>().unwrap().limit_us, 80_000);
        assert!(matches!(
            "connect:1s".parse::<Slo>(),
            Err(SloError::Figure(_))
        ));
        assert!(matches!("ttft<1s".parse::<Slo>(), Err(SloError::Syntax(_))));
        assert!(matches!(
            "ttft:soon".parse::<Slo>(),
            Err(SloError::Duration(_))
        ));
    }

    #[test]
    fn goodput_needs_every_objective() {
        let slos: Vec<Slo> = vec!["ttft:1s".parse().unwrap(), "rtt:80ms".parse().unwrap()];
        let good = MessageFigures {
            rtt: Some(1_000),
            ttft: Some(900_000),
            itl_mean: None,
            reply: Some(2_000_000),
            tpot: None,
        };
        assert!(meets_all(&slos, &good));
        let slow_ack = MessageFigures {
            rtt: Some(90_000),
            ..good
        };
        assert!(!meets_all(&slos, &slow_ack));
        let no_token = MessageFigures { ttft: None, ..good };
        assert!(!meets_all(&slos, &no_token));
        assert!(
            meets_all(&[], &MessageFigures::default()),
            "no objectives: every settled message is good"
        );
        let itl: Vec<Slo> = vec!["itl:50ms".parse().unwrap()];
        assert!(meets_all(&itl, &good), "one token: no gap to miss");
        assert!(!meets_all(
            &itl,
            &MessageFigures {
                itl_mean: Some(60_000),
                ..good
            }
        ));
        let tpot: Vec<Slo> = vec!["tpot:40ms".parse().unwrap()];
        assert!(
            meets_all(&tpot, &good),
            "one token: no time per token to miss"
        );
        assert!(!meets_all(
            &tpot,
            &MessageFigures {
                tpot: Some(41_000),
                ..good
            }
        ));
        assert!(!meets_all(&tpot, &no_token));
    }
}
