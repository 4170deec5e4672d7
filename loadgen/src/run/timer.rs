//! A sleep with microsecond precision for the arrival schedule. monoio's timer
//! wheel rounds up to the next millisecond, and in an open-model run every
//! microsecond a message leaves late is counted in its latency; a timerfd
//! armed to the due time and awaited for readability through monoio (io_uring
//! poll or epoll) wakes within tens of microseconds.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::time::Instant;

/// A timerfd awaited through the runtime.
pub struct PreciseTimer {
    fd: RawFd,
    stream: monoio::net::UnixStream,
}

impl PreciseTimer {
    /// Creates the timer; must be called inside a monoio runtime.
    pub fn new() -> io::Result<PreciseTimer> {
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // monoio only needs readiness from it; the fd is owned by the stream from here on.
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        let stream = monoio::net::UnixStream::from_std(std_stream)?;
        Ok(PreciseTimer { fd, stream })
    }

    /// Goes through the I/O driver once, so that completions and timers are
    /// processed even while the caller always has work (it is behind schedule).
    pub async fn pause(&self) -> io::Result<()> {
        self.sleep_until(Instant::now() + std::time::Duration::from_micros(1))
            .await
    }

    /// Returns at `deadline` or just after.
    pub async fn sleep_until(&self, deadline: Instant) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if deadline <= now {
                return Ok(());
            }
            let d = deadline - now;
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: libc::c_long::from(d.subsec_nanos() as i32).max(1),
                },
            };
            // SAFETY: valid fd and itimerspec.
            if unsafe { libc::timerfd_settime(self.fd, 0, &spec, std::ptr::null_mut()) } < 0 {
                return Err(io::Error::last_os_error());
            }
            self.stream.readable(false).await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer; EAGAIN is fine.
            unsafe { libc::read(self.fd, expirations.as_mut_ptr().cast(), 8) };
        }
    }
}
