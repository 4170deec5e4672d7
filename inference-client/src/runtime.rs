//! Building the monoio runtime the service thread and the simulator's server
//! run on: io_uring preferred, epoll (monoio's legacy driver) where io_uring
//! cannot start (old kernels, `io_uring_disabled`, Docker's default seccomp
//! profile), as the gateway's workers do.

use std::future::Future;
use std::io;
use std::str::FromStr;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

/// Submission queue entries of an io_uring runtime.
const URING_ENTRIES: u32 = 1024;

/// Which io driver to use: the one choice the gateway (`--io-driver`, the
/// config file's `io_driver`), loadgen (`--driver`) and `inference-sim`
/// (`--io-driver`) all take.
///
/// Spelled `auto`, `uring` (or `io_uring`), `epoll` (or `legacy`, monoio's
/// name) on the command line ([`clap::ValueEnum`], [`FromStr`]) and in TOML
/// (serde).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring where it starts, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only; refuse to start without it.
    #[value(alias = "io_uring")]
    #[serde(alias = "io_uring")]
    Uring,
    /// epoll only.
    #[value(alias = "legacy")]
    #[serde(alias = "legacy")]
    Epoll,
}

impl FromStr for IoDriver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoDriver::Auto),
            "uring" | "io_uring" => Ok(IoDriver::Uring),
            "epoll" | "legacy" => Ok(IoDriver::Epoll),
            _ => Err(format!("unknown io driver {s:?}: use auto, uring or epoll")),
        }
    }
}

/// The driver a runtime ended up on.
///
/// `as u8` gives 1 or 2, so that 0 in an `AtomicU8` can stand for "not
/// started yet" ([`DriverKind::from_u8`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DriverKind {
    /// io_uring.
    Uring = 1,
    /// epoll (monoio's legacy driver).
    Epoll = 2,
}

impl DriverKind {
    /// Name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Uring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }

    /// The kind stored as `kind as u8`; `None` for anything else (0: not started).
    pub fn from_u8(v: u8) -> Option<DriverKind> {
        match v {
            1 => Some(DriverKind::Uring),
            2 => Some(DriverKind::Epoll),
            _ => None,
        }
    }
}

/// Builds a runtime on the chosen driver and runs `make(driver)` to completion.
pub fn block_on<F, Fut>(choice: IoDriver, make: F) -> io::Result<Fut::Output>
where
    F: FnOnce(DriverKind) -> Fut,
    Fut: Future,
{
    if choice != IoDriver::Epoll {
        match RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => return Ok(rt.block_on(make(DriverKind::Uring))),
            Err(e) if choice == IoDriver::Uring => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("io_uring cannot start ({e}); use the auto or epoll io driver"),
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring cannot start; falling back to epoll");
            }
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    Ok(rt.block_on(make(DriverKind::Epoll)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling, and what it means, on each front end: `FromStr`, clap, serde.
    const SPELLINGS: [(&str, IoDriver); 5] = [
        ("auto", IoDriver::Auto),
        ("uring", IoDriver::Uring),
        ("io_uring", IoDriver::Uring),
        ("epoll", IoDriver::Epoll),
        ("legacy", IoDriver::Epoll),
    ];

    #[test]
    fn every_front_end_takes_the_same_spellings() {
        for (name, driver) in SPELLINGS {
            assert_eq!(name.parse::<IoDriver>(), Ok(driver), "{name}");
            assert_eq!(
                <IoDriver as clap::ValueEnum>::from_str(name, false),
                Ok(driver),
                "{name}"
            );
            let json = format!("\"{name}\"");
            assert_eq!(
                serde_json::from_str::<IoDriver>(&json).ok(),
                Some(driver),
                "{name}"
            );
        }
        assert!("fast".parse::<IoDriver>().is_err());
        assert!(<IoDriver as clap::ValueEnum>::from_str("fast", false).is_err());
        assert!(serde_json::from_str::<IoDriver>("\"fast\"").is_err());
    }

    #[test]
    fn serialized_names_are_the_canonical_ones() {
        for (name, driver) in [
            ("auto", IoDriver::Auto),
            ("uring", IoDriver::Uring),
            ("epoll", IoDriver::Epoll),
        ] {
            assert_eq!(
                serde_json::to_string(&driver).ok(),
                Some(format!("\"{name}\""))
            );
        }
    }

    #[test]
    fn driver_kind_round_trips_through_u8() {
        for kind in [DriverKind::Uring, DriverKind::Epoll] {
            assert_eq!(DriverKind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(DriverKind::from_u8(0), None);
    }
}
