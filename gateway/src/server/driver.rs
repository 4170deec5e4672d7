//! Choosing the io driver a worker runs on, and running it.
//!
//! io_uring is preferred. Where it cannot start (an old kernel,
//! `io_uring_disabled`, Docker's default seccomp profile) `auto` falls back to
//! epoll and says so; `uring` refuses to start instead.

use std::future::Future;
use std::io;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::IoDriver;
use crate::metrics::DriverKind;

/// Submission queue entries per worker ring.
const URING_ENTRIES: u32 = 4096;

/// Builds a runtime on the chosen driver and runs the future `make(driver)` to completion.
pub fn run_on<F, Fut>(choice: IoDriver, worker: usize, make: F) -> io::Result<Fut::Output>
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
                    format!("io_uring cannot start ({e}); use --io-driver auto or epoll"),
                ))
            }
            Err(e) => {
                tracing::warn!(worker, error = %e, "io_uring cannot start; falling back to epoll");
            }
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    Ok(rt.block_on(make(DriverKind::Epoll)))
}
