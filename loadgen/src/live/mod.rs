//! Live metrics while a run lasts, as k6 offers them: `/metrics` for a
//! Prometheus scrape (`--metrics-listen`) and Prometheus remote write 1.0
//! (`--prometheus-remote-write`), both with the same series.
//!
//! # Map
//!
//! * [`exposition`] (sans-IO): each second's measurements reduced to a
//!   [`Digest`], digests summed into [`Totals`], totals as metric families,
//!   and the text exposition format.
//! * [`remote_write`] (sans-IO): the `prometheus.WriteRequest` messages
//!   (prost), built from the same families, snappy block-compressed.
//! * [`server`]: the `/metrics` listener, a std `TcpListener` on its own thread.
//! * [`push`]: the remote write pusher thread, its bounded queue and its
//!   blocking HTTP/1.1 (and https) client.
//! * This module: [`Live`], the handle a run drives. Its
//!   [`Live::on_second`] runs on the run's coordinator thread, so it only
//!   reduces the second to a [`Digest`] and hands it over a channel; an
//!   aggregator thread adds it to the totals and publishes a [`Snapshot`],
//!   which the server renders on each scrape and the pusher sends every
//!   interval. Nothing on the coordinator's side waits on a socket.

pub mod exposition;
pub mod push;
pub mod remote_write;
pub mod server;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::run::Second;
pub use exposition::{Digest, Family, RunInfo, Totals};
pub use push::{ExtraHeader, PushStats};

/// The series at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When it was taken, milliseconds since the Unix epoch; strictly
    /// increasing from one snapshot to the next, since remote write
    /// refuses two different values at one timestamp.
    pub at_ms: i64,
    /// Every family.
    pub families: Vec<Family>,
}

/// The latest snapshot, shared by the aggregator (writer), the server and
/// the pusher (readers). The lock is held only to swap or clone the `Arc`.
pub(crate) type Latest = Arc<Mutex<Arc<Snapshot>>>;

/// The lock of `latest`, even if a thread panicked holding it: the value
/// is an `Arc` swapped whole, so it is never half-written.
pub(crate) fn lock(latest: &Latest) -> MutexGuard<'_, Arc<Snapshot>> {
    latest.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where to push remote write.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    /// `http://` or `https://` URL of the receiver, e.g.
    /// `http://127.0.0.1:9090/api/v1/write`.
    pub url: String,
    /// Time between pushes.
    pub interval: Duration,
    /// Extra header fields (`Authorization`, `X-Scope-OrgID`, ...).
    pub headers: Vec<ExtraHeader>,
    /// A PEM file of CA certificates trusted besides the system's, for https.
    pub ca_file: Option<PathBuf>,
}

/// What [`Live::start`] starts.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The run's labels and shape.
    pub info: RunInfo,
    /// Serve `/metrics` here (port 0 picks one).
    pub listen: Option<SocketAddr>,
    /// Push remote write.
    pub remote_write: Option<RemoteWriteConfig>,
}

/// Why live metrics could not start.
#[derive(Debug, Error)]
pub enum LiveError {
    /// The `/metrics` address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Listen {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        source: io::Error,
    },
    /// The remote write URL is not usable.
    #[error("--prometheus-remote-write {url}: {reason}")]
    RemoteWriteUrl {
        /// As given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The TLS settings for an https receiver.
    #[error("--prometheus-remote-write: {0}")]
    Tls(#[from] inference_client::tls::TlsError),
    /// A thread could not be started.
    #[error("cannot start a live-metrics thread: {0}")]
    Thread(io::Error),
}

/// How live metrics went, once finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSummary {
    /// The remote write receiver, if there was one.
    pub remote_write_url: Option<String>,
    /// What the pusher did.
    pub push: Option<PushStats>,
}

impl LiveSummary {
    /// What the user should be told (nothing when every snapshot went out).
    pub fn warnings(&self) -> Vec<String> {
        let (Some(url), Some(p)) = (&self.remote_write_url, &self.push) else {
            return Vec::new();
        };
        let lost = p.dropped + p.rejected + p.unsent;
        let last = p
            .last_error
            .as_deref()
            .map_or_else(String::new, |e| format!("; last error: {e}"));
        if lost > 0 {
            vec![format!(
                "remote write to {url}: {} snapshots pushed, {lost} lost ({} dropped while the \
                 receiver was away, {} refused, {} unsent at the end){last}",
                p.pushed, p.dropped, p.rejected, p.unsent
            )]
        } else if p.failed > 0 {
            vec![format!(
                "remote write to {url}: {} failed posts were retried; all {} snapshots were pushed",
                p.failed, p.pushed
            )]
        } else {
            Vec::new()
        }
    }
}

/// Live metrics of one run: start it before [`crate::run::execute`], call
/// [`Live::on_second`] from its callback, [`Live::finish`] after it.
pub struct Live {
    tx: Option<flume::Sender<Digest>>,
    aggregator: Option<JoinHandle<()>>,
    server: Option<server::Server>,
    pusher: Option<push::Pusher>,
    latest: Latest,
    remote_write_url: Option<String>,
}

impl Live {
    /// Binds the listener, checks the remote write URL and TLS settings,
    /// and starts the threads.
    pub fn start(cfg: LiveConfig) -> Result<Live, LiveError> {
        let push_cfg = match &cfg.remote_write {
            None => None,
            Some(rw) => {
                let endpoint =
                    push::Endpoint::parse(&rw.url).map_err(|reason| LiveError::RemoteWriteUrl {
                        url: rw.url.clone(),
                        reason,
                    })?;
                let tls = if endpoint.is_tls() {
                    inference_client::tls::server_name(endpoint.host()).map_err(|reason| {
                        LiveError::RemoteWriteUrl {
                            url: rw.url.clone(),
                            reason,
                        }
                    })?;
                    Some(inference_client::tls::client_config(rw.ca_file.as_deref())?)
                } else {
                    None
                };
                Some(push::PushConfig {
                    endpoint,
                    interval: rw.interval,
                    headers: rw.headers.clone(),
                    tls,
                })
            }
        };
        let listener = match cfg.listen {
            None => None,
            Some(addr) => {
                Some(TcpListener::bind(addr).map_err(|source| LiveError::Listen { addr, source })?)
            }
        };
        let info = cfg.info;
        let latest: Latest = Arc::new(Mutex::new(Arc::new(Snapshot {
            at_ms: now_ms(),
            families: exposition::families(&Totals::default(), &info),
        })));
        let (tx, rx) = flume::unbounded::<Digest>();
        let shared = latest.clone();
        let aggregator = std::thread::Builder::new()
            .name("loadgen-live".into())
            .spawn(move || aggregate(&rx, &info, &shared))
            .map_err(LiveError::Thread)?;
        let mut live = Live {
            tx: Some(tx),
            aggregator: Some(aggregator),
            server: None,
            pusher: None,
            latest,
            remote_write_url: cfg.remote_write.map(|rw| rw.url),
        };
        if let Some(l) = listener {
            let shared = live.latest.clone();
            live.server = Some(
                server::Server::spawn(l, move || {
                    let snap = lock(&shared).clone();
                    exposition::render(&snap.families)
                })
                .map_err(LiveError::Thread)?,
            );
        }
        if let Some(p) = push_cfg {
            live.pusher =
                Some(push::Pusher::spawn(p, live.latest.clone()).map_err(LiveError::Thread)?);
        }
        Ok(live)
    }

    /// The address `/metrics` is served on (the port actually bound).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(server::Server::local_addr)
    }

    /// The latest snapshot, as a scrape would see it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        lock(&self.latest).clone()
    }

    /// Takes one second of the run (from [`crate::run::execute`]'s
    /// callback). Costs one pass over the second's histograms and a
    /// channel send; never blocks.
    pub fn on_second(&mut self, second: &Second<'_>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Digest::of(
                second.interval,
                second.open,
                second.offered,
                second.t_s,
            ));
        }
    }

    /// Adds what is still queued, pushes one last time (bounded by
    /// [`push::FINAL_TIMEOUT`]), stops the listener and the threads.
    #[must_use = "its warnings say whether remote write lost anything"]
    pub fn finish(mut self) -> LiveSummary {
        self.stop_aggregator();
        let push = self.pusher.take().map(push::Pusher::finish);
        if let Some(s) = self.server.take() {
            s.stop();
        }
        LiveSummary {
            remote_write_url: self.remote_write_url.take(),
            push,
        }
    }

    fn stop_aggregator(&mut self) {
        // Closing the channel ends the aggregator once it has added every
        // digest sent, so the final snapshot holds the whole run.
        self.tx = None;
        if let Some(a) = self.aggregator.take() {
            let _ = a.join();
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Dropped without finish (the run failed, say): stop at once, no
        // final push; the server and the pusher stop on their own drops.
        self.stop_aggregator();
    }
}

fn aggregate(rx: &flume::Receiver<Digest>, info: &RunInfo, latest: &Latest) {
    let mut totals = Totals::default();
    let mut last_at = lock(latest).at_ms;
    while let Ok(d) = rx.recv() {
        totals.add(&d);
        // Render once for a backlog, not once per second in it.
        for d in rx.try_iter() {
            totals.add(&d);
        }
        last_at = now_ms().max(last_at + 1);
        let snap = Snapshot {
            at_ms: last_at,
            families: exposition::families(&totals, info),
        };
        *lock(latest) = Arc::new(snap);
    }
}

/// The default `run` label: the start time in UTC, `20261124T101500Z`.
pub fn default_run_id(start: SystemTime) -> String {
    let secs = start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let s = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Year, month and day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so that no date crate is needed for one label.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Interval, Mark, Recorder};

    fn info() -> RunInfo {
        RunInfo {
            run: "t".into(),
            shard: None,
            url: "ws://h/ws".into(),
            model: "open".into(),
            stages: Vec::new(),
        }
    }

    #[test]
    fn run_ids_are_the_utc_start_time() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(default_run_id(at(0)), "19700101T000000Z");
        assert_eq!(default_run_id(at(1_700_000_000)), "20231114T221320Z");
        assert_eq!(default_run_id(at(951_782_400)), "20000229T000000Z");
        assert_eq!(default_run_id(at(4_102_444_799)), "20991231T235959Z");
        // 2100 is not a leap year.
        assert_eq!(default_run_id(at(4_107_542_400)), "21000301T000000Z");
    }

    #[test]
    fn finish_publishes_every_second_handed_over() {
        let mut live = Live::start(LiveConfig {
            info: info(),
            listen: None,
            remote_write: None,
        })
        .unwrap();
        let before = live.snapshot().at_ms;
        for t in 0..50 {
            let mut r = Recorder::default();
            r.count(Mark::Stage(0), |c| c.sent += 2);
            let iv: Interval = r.take();
            live.on_second(&Second {
                tick: t,
                t_s: Some(t),
                interval: &iv,
                open: 3,
                offered: 2.0,
            });
        }
        let latest = live.latest.clone();
        let summary = live.finish();
        assert_eq!(summary, LiveSummary::default());
        let snap = lock(&latest).clone();
        assert!(snap.at_ms > before);
        let text = exposition::render(&snap.families);
        assert!(
            text.contains("loadgen_messages_sent_total{run=\"t\"} 100\n"),
            "{text}"
        );
    }

    #[test]
    fn bad_remote_write_urls_and_busy_ports_fail_at_start() {
        let rw = |url: &str| LiveConfig {
            info: info(),
            listen: None,
            remote_write: Some(RemoteWriteConfig {
                url: url.into(),
                interval: Duration::from_secs(5),
                headers: Vec::new(),
                ca_file: None,
            }),
        };
        let e = Live::start(rw("ftp://x/y")).err().unwrap();
        assert!(matches!(e, LiveError::RemoteWriteUrl { .. }), "{e}");
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Live::start(LiveConfig {
            info: info(),
            listen: Some(taken.local_addr().unwrap()),
            remote_write: None,
        })
        .err()
        .unwrap();
        assert!(matches!(e, LiveError::Listen { .. }), "{e}");
    }

    #[test]
    fn lost_snapshots_are_worth_a_warning_and_retried_ones_a_note() {
        let mut s = LiveSummary {
            remote_write_url: Some("http://r/w".into()),
            push: Some(PushStats {
                pushed: 4,
                ..PushStats::default()
            }),
        };
        assert!(s.warnings().is_empty());
        if let Some(p) = s.push.as_mut() {
            p.failed = 2;
        }
        assert!(s.warnings()[0].contains("retried"), "{:?}", s.warnings());
        if let Some(p) = s.push.as_mut() {
            p.unsent = 1;
            p.last_error = Some("HTTP 503".into());
        }
        let w = &s.warnings()[0];
        assert!(w.contains("1 lost") && w.contains("HTTP 503"), "{w}");
    }
}
