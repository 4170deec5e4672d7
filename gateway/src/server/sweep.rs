//! Once a second, per worker: handshake and keep-alive timeouts, heartbeats
//! and idle timeouts on WebSockets, long-polls whose time is up, connections
//! stuck closing, sessions past their lifetime, and the `Date` header.
//!
//! One pass over the worker's connections replaces a timer per connection,
//! which an idle connection would otherwise pay for in memory.

use std::rc::Rc;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::conn::Mode;
use super::worker::{http_date, Worker};
use crate::http::response;
use crate::ws::frame::{write_header, MAX_HEADER_LEN};
use crate::ws::OpCode;

/// How long a closing connection may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long a request may wait on a session's owner before giving up.
const OWNER_TIMEOUT: Duration = Duration::from_secs(10);

enum Act {
    RequestTimeout,
    Kill,
    Ping,
    PollDone,
}

/// The sweeper task.
pub(crate) async fn run(w: Rc<Worker>) {
    let mut ticks: u64 = 0;
    loop {
        // A periodic tick, not synchronisation: nothing waits on it.
        monoio::time::sleep(Duration::from_secs(1)).await;
        ticks += 1;
        let now = Instant::now();
        *w.date.borrow_mut() = http_date();
        w.sweep(now);
        w.abandon_unwatched(now);
        if ticks % 60 == 0 {
            w.evict_sessions(now);
        }
    }
}

impl Worker {
    fn sweep(self: &Rc<Self>, now: Instant) {
        let l = &self.shared.config.limits;
        let handshake = Duration::from_millis(l.handshake_timeout_ms);
        let keepalive = Duration::from_millis(l.keepalive_timeout_ms);
        let ping = Duration::from_millis(l.ping_interval_ms);
        let idle = Duration::from_millis(l.idle_timeout_ms);
        let mut acts = Vec::new();
        for (slot, c) in self.conns.borrow().iter() {
            if c.dead {
                continue;
            }
            let waited = now.saturating_duration_since(c.since);
            let quiet = now.saturating_duration_since(c.last_rx);
            let act = match c.mode() {
                Mode::Http if c.in_request() && waited > handshake => Some(Act::RequestTimeout),
                Mode::Http if !c.in_request() && waited > keepalive => Some(Act::Kill),
                Mode::Pending(_) if waited > OWNER_TIMEOUT => Some(Act::Kill),
                Mode::PollHeld(h) if now >= h.deadline => Some(Act::PollDone),
                Mode::Ws(_) | Mode::Echo(_) | Mode::Agent(_) if quiet > idle => Some(Act::Kill),
                Mode::Ws(_) | Mode::Echo(_) | Mode::Agent(_) if quiet > ping && !c.ping_out => {
                    Some(Act::Ping)
                }
                Mode::Closing if waited > CLOSE_GRACE => Some(Act::Kill),
                _ => None,
            };
            if let Some(a) = act {
                acts.push((slot, a));
            }
        }
        for (slot, act) in acts {
            match act {
                Act::RequestTimeout => {
                    let secs = l.handshake_timeout_ms as f64 / 1000.0;
                    let r = response::text(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("the request did not arrive within {secs} s"),
                    );
                    self.respond(slot, r, false, false);
                }
                Act::Kill => self.kill(slot),
                Act::Ping => {
                    let mut hdr = [0u8; MAX_HEADER_LEN];
                    let n = write_header(&mut hdr, true, OpCode::Ping, 0, None);
                    if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
                        c.ping_out = true;
                    }
                    self.m().frames_out.inc();
                    self.write(slot, &hdr[..n], super::conn::Payload::Slice(&[]));
                }
                Act::PollDone => self.expire_poll(slot, true),
            }
        }
    }
}
