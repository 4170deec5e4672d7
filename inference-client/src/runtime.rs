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

/// Which io driver to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring, falling back to epoll where it cannot start.
    #[default]
    Auto,
    /// io_uring or nothing.
    Uring,
    /// epoll.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring.
    Uring,
    /// epoll.
    Epoll,
}

impl DriverKind {
    /// Name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Uring => "io_uring",
            DriverKind::Epoll => "epoll",
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
