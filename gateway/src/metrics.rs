//! Metrics in the Prometheus text format.
//!
//! Each worker owns one [`WorkerMetrics`] and is the only thread that writes
//! it, so a counter is a relaxed load and store, not a locked read-modify-write,
//! and the hot path shares no cache line with other cores. `/metrics` reads every
//! worker's block and sums.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use inference_client::DriverKind;

use crate::chat::ErrorCode;

/// Counters and gauges written by one thread only: a relaxed load and store,
/// not a locked read-modify-write (shared with the inference service's stats).
pub use inference_client::stats::{Counter, Gauge};

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A latency histogram with fixed buckets, written by one thread only.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; LATENCY_BUCKETS_US.len()],
    count: Counter,
    sum_us: Counter,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros() as u64;
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_us.add(us);
    }
}

/// Outcomes of HTTP requests, by status class.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One worker's metrics.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Open connections.
    pub connections: Gauge,
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections refused with 503 because the server was full.
    pub refused_full: Counter,
    /// Open WebSockets (chat and echo).
    pub websockets: Gauge,
    /// Long-polls held, waiting for a message.
    pub polls_held: Gauge,
    /// Sessions whose state this worker owns.
    pub sessions: Gauge,
    /// Sessions loaded back from the store (after a restart or an eviction).
    pub sessions_restored: Counter,
    /// WebSocket frames received.
    pub frames_in: Counter,
    /// WebSocket frames sent.
    pub frames_out: Counter,
    /// Bytes received.
    pub bytes_in: Counter,
    /// Bytes sent.
    pub bytes_out: Counter,
    /// Chat messages stored.
    pub messages: Counter,
    /// `error` frames sent, by code.
    pub errors: [Counter; ErrorCode::ALL.len()],
    /// HTTP responses by status class.
    pub http: [Counter; STATUS_CLASSES.len()],
    /// WebSockets closed by the server for a protocol violation, size, UTF-8 or slowness.
    pub ws_closed_by_server: Counter,
    /// Messages handed to another worker.
    pub cross_worker: Counter,
    /// Message received to `ack` sent.
    pub ack_latency: Histogram,
    /// io driver in use (`DriverKind as u8`; 0 until the worker starts).
    pub driver: AtomicU8,
    /// Kernel thread id, to read the worker's CPU time.
    pub tid: AtomicI64,
}

impl WorkerMetrics {
    /// Counts an `error` frame.
    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].inc();
    }

    /// Counts an HTTP response.
    pub fn http_status(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.http[class].inc();
    }

    /// The driver the worker runs on; `None` until it has started.
    fn driver(&self) -> Option<DriverKind> {
        DriverKind::from_u8(self.driver.load(Relaxed))
    }
}

/// One retrieval thread's figures (each thread writes only its own).
#[derive(Debug, Default)]
pub struct RetrievalMetrics {
    /// A question's time in the retrieval queue, from the worker's send to a
    /// retrieval thread taking it.
    pub wait: Histogram,
    /// A question's search (its batch's, which it waits for whole).
    pub search: Histogram,
}

/// The agent desk's gauges, written by the desk's thread only.
#[derive(Debug, Default)]
pub struct DeskMetrics {
    /// Agents with a dashboard socket open.
    pub agents_online: Gauge,
    /// Conversations in line for a person (offered ones included).
    pub waiting: Gauge,
    /// When the longest-waiting of them joined the line, milliseconds since
    /// the Unix epoch; 0 when none waits. An instant rather than an age, so
    /// `/metrics` reads a current wait while the desk sleeps.
    pub oldest_since_ms: Gauge,
}

/// The binary's version and the commit it was built from (`unknown` when it
/// was built outside a git work tree).
pub fn render_build_info(out: &mut String) {
    let git = option_env!("LC_GIT_COMMIT").unwrap_or("unknown");
    let _ = writeln!(
        out,
        "# HELP lc_build_info The gateway's version and git commit (always 1).\n# TYPE lc_build_info gauge\nlc_build_info{{version=\"{}\",git=\"{git}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

/// Renders the retrieval threads' and the desk's figures. `queued` is what
/// waits for a retrieval thread now; `now_ms` the Unix time in milliseconds.
pub fn render_pipeline(
    retrieval: &[RetrievalMetrics],
    queued: usize,
    desk: &DeskMetrics,
    now_ms: u64,
    out: &mut String,
) {
    let _ = writeln!(
        out,
        "# HELP lc_retrieval_queue_depth Questions and knowledge-base requests waiting for a retrieval thread.\n# TYPE lc_retrieval_queue_depth gauge\nlc_retrieval_queue_depth {queued}"
    );
    for (name, help, pick) in [
        (
            "lc_retrieval_wait_seconds",
            "A question's wait in the retrieval queue.",
            (|m: &RetrievalMetrics| &m.wait) as fn(&RetrievalMetrics) -> &Histogram,
        ),
        (
            "lc_retrieval_search_seconds",
            "A question's search of its site's knowledge base (its batch's time).",
            |m: &RetrievalMetrics| &m.search,
        ),
    ] {
        let sum = |f: &dyn Fn(&Histogram) -> u64| retrieval.iter().map(|m| f(pick(m))).sum();
        let per_bucket: Vec<u64> = (0..LATENCY_BUCKETS_US.len())
            .map(|i| sum(&|h| h.buckets[i].get()))
            .collect();
        histogram(
            out,
            name,
            help,
            &per_bucket,
            sum(&|h| h.count.get()),
            sum(&|h| h.sum_us.get()),
        );
    }
    let since = desk.oldest_since_ms.get();
    let wait = if since > 0 {
        now_ms.saturating_sub(since as u64) as f64 / 1000.0
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "# HELP lc_desk_agents_online Agents with the dashboard open.\n# TYPE lc_desk_agents_online gauge\nlc_desk_agents_online {}\n# HELP lc_desk_waiting Conversations in line for a person.\n# TYPE lc_desk_waiting gauge\nlc_desk_waiting {}\n# HELP lc_desk_longest_wait_seconds How long the longest-waiting conversation has been in line (0: none waits).\n# TYPE lc_desk_longest_wait_seconds gauge\nlc_desk_longest_wait_seconds {wait:.3}",
        desk.agents_online.get(),
        desk.waiting.get(),
    );
}

/// CPU seconds a thread has used, from `/proc/self/task/<tid>/stat`.
fn thread_cpu_seconds(tid: i64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz.max(1.0))
}

/// Renders every worker's metrics.
pub fn render(workers: &[WorkerMetrics], max_connections: usize, out: &mut String) {
    let sum = |f: &dyn Fn(&WorkerMetrics) -> u64| workers.iter().map(f).sum::<u64>();
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        out,
        "lc_connections_accepted_total",
        "TCP connections accepted.",
        sum(&|w| w.accepted.get()),
    );
    counter(
        out,
        "lc_connections_refused_total",
        "Connections answered 503 because the server was full.",
        sum(&|w| w.refused_full.get()),
    );
    counter(
        out,
        "lc_frames_received_total",
        "WebSocket frames received.",
        sum(&|w| w.frames_in.get()),
    );
    counter(
        out,
        "lc_frames_sent_total",
        "WebSocket frames sent.",
        sum(&|w| w.frames_out.get()),
    );
    counter(
        out,
        "lc_bytes_received_total",
        "Bytes received on all connections.",
        sum(&|w| w.bytes_in.get()),
    );
    counter(
        out,
        "lc_bytes_sent_total",
        "Bytes sent on all connections.",
        sum(&|w| w.bytes_out.get()),
    );
    counter(
        out,
        "lc_messages_total",
        "Visitor chat messages stored.",
        sum(&|w| w.messages.get()),
    );
    counter(
        out,
        "lc_ws_closed_by_server_total",
        "WebSockets the server closed for a protocol violation, size, bad UTF-8 or a slow reader.",
        sum(&|w| w.ws_closed_by_server.get()),
    );
    counter(
        out,
        "lc_cross_worker_messages_total",
        "Messages handed from one worker to another.",
        sum(&|w| w.cross_worker.get()),
    );
    counter(
        out,
        "lc_sessions_restored_total",
        "Sessions loaded back from the store (after a restart, or an eviction from memory).",
        sum(&|w| w.sessions_restored.get()),
    );

    let gauge_sum = |f: &dyn Fn(&WorkerMetrics) -> i64| workers.iter().map(f).sum::<i64>();
    let _ = writeln!(out, "# HELP lc_connections_open Open connections.\n# TYPE lc_connections_open gauge\nlc_connections_open {}", gauge_sum(&|w| w.connections.get()));
    let _ = writeln!(out, "# HELP lc_connections_max Connections allowed before 503.\n# TYPE lc_connections_max gauge\nlc_connections_max {max_connections}");
    let _ = writeln!(out, "# HELP lc_websockets_open Open WebSockets.\n# TYPE lc_websockets_open gauge\nlc_websockets_open {}", gauge_sum(&|w| w.websockets.get()));
    let _ = writeln!(
        out,
        "# HELP lc_polls_held Long-polls held, waiting for a message.\n# TYPE lc_polls_held gauge\nlc_polls_held {}",
        gauge_sum(&|w| w.polls_held.get())
    );
    let _ = writeln!(
        out,
        "# HELP lc_sessions Sessions held in memory.\n# TYPE lc_sessions gauge\nlc_sessions {}",
        gauge_sum(&|w| w.sessions.get())
    );

    let _ = writeln!(
        out,
        "# HELP lc_errors_total Error frames sent, by code.\n# TYPE lc_errors_total counter"
    );
    for code in ErrorCode::ALL {
        let _ = writeln!(
            out,
            "lc_errors_total{{code=\"{}\"}} {}",
            code.as_str(),
            sum(&|w| w.errors[code.index()].get())
        );
    }
    let _ = writeln!(out, "# HELP lc_http_responses_total HTTP responses, by status class.\n# TYPE lc_http_responses_total counter");
    for (i, class) in STATUS_CLASSES.iter().enumerate() {
        let _ = writeln!(
            out,
            "lc_http_responses_total{{class=\"{class}\"}} {}",
            sum(&|w| w.http[i].get())
        );
    }

    let _ = writeln!(out, "# HELP lc_io_driver The io driver each worker runs on (1 = in use).\n# TYPE lc_io_driver gauge");
    for (i, w) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "lc_io_driver{{worker=\"{i}\",driver=\"{}\"}} 1",
            w.driver().map_or("none", DriverKind::as_str)
        );
    }
    let _ = writeln!(out, "# HELP lc_worker_connections Open connections per worker.\n# TYPE lc_worker_connections gauge");
    for (i, w) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "lc_worker_connections{{worker=\"{i}\"}} {}",
            w.connections.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP lc_worker_sessions Sessions owned per worker.\n# TYPE lc_worker_sessions gauge"
    );
    for (i, w) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "lc_worker_sessions{{worker=\"{i}\"}} {}",
            w.sessions.get()
        );
    }
    let _ = writeln!(out, "# HELP lc_worker_frames_received_total Frames received per worker.\n# TYPE lc_worker_frames_received_total counter");
    for (i, w) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "lc_worker_frames_received_total{{worker=\"{i}\"}} {}",
            w.frames_in.get()
        );
    }
    let _ = writeln!(out, "# HELP lc_worker_cpu_seconds_total CPU time used by each worker thread.\n# TYPE lc_worker_cpu_seconds_total counter");
    for (i, w) in workers.iter().enumerate() {
        if let Some(s) = thread_cpu_seconds(w.tid.load(Relaxed)) {
            let _ = writeln!(out, "lc_worker_cpu_seconds_total{{worker=\"{i}\"}} {s:.3}");
        }
    }

    let ack: Vec<u64> = (0..LATENCY_BUCKETS_US.len())
        .map(|i| sum(&|w| w.ack_latency.buckets[i].get()))
        .collect();
    histogram(
        out,
        "lc_ack_latency_seconds",
        "Time from a chat message's arrival to its ack (the store's commit included).",
        &ack,
        sum(&|w| w.ack_latency.count.get()),
        sum(&|w| w.ack_latency.sum_us.get()),
    );
}

/// Writes a Prometheus histogram from per-bucket counts over
/// [`LATENCY_BUCKETS_US`] (observations above the last bound are only in `count`).
pub fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    per_bucket: &[u64],
    count: u64,
    sum_us: u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, n) in LATENCY_BUCKETS_US.iter().zip(per_bucket) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
}

/// Renders the transcript store's figures.
pub fn render_store(s: &crate::store::StoreStats, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed as R;
    let counters = [
        (
            "lc_store_commits_total",
            "Transactions committed (one per group of writes).",
            s.commits.load(R),
        ),
        ("lc_store_writes_total", "Writes stored.", s.writes.load(R)),
        (
            "lc_store_duplicates_total",
            "Visitor messages found already stored (resends).",
            s.duplicates.load(R),
        ),
        (
            "lc_store_write_errors_total",
            "Writes that failed.",
            s.write_errors.load(R),
        ),
        (
            "lc_store_reads_total",
            "Session loads and other reads answered.",
            s.reads.load(R),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let depth = s.queue_depth.load(R);
    let _ = writeln!(
        out,
        "# HELP lc_store_queue_depth Writes queued for the store's writer.\n# TYPE lc_store_queue_depth gauge\nlc_store_queue_depth {depth}"
    );
    for (name, help, h) in [
        (
            "lc_store_commit_latency_seconds",
            "BEGIN to the end of COMMIT, per transaction.",
            &s.commit_latency,
        ),
        (
            "lc_store_write_latency_seconds",
            "A write queued to its commit completing.",
            &s.ack_latency,
        ),
    ] {
        histogram(
            out,
            name,
            help,
            &h.snapshot(),
            h.count.load(R),
            h.sum_us.load(R),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sums_and_cumulative_buckets() {
        let ws: Vec<WorkerMetrics> = (0..2).map(|_| WorkerMetrics::default()).collect();
        ws[0].frames_in.add(3);
        ws[1].frames_in.add(4);
        ws[0].error(ErrorCode::TooLarge);
        ws[1].ack_latency.observe(Duration::from_micros(40));
        ws[1].ack_latency.observe(Duration::from_micros(900));
        ws[0].driver.store(DriverKind::Uring as u8, Relaxed);
        ws[1].driver.store(DriverKind::Epoll as u8, Relaxed);
        let mut s = String::new();
        render(&ws, 100, &mut s);
        assert!(s.contains("lc_frames_received_total 7\n"));
        assert!(s.contains("lc_errors_total{code=\"too_large\"} 1\n"));
        assert!(s.contains("lc_ack_latency_seconds_bucket{le=\"0.00005\"} 1\n"));
        assert!(s.contains("lc_ack_latency_seconds_bucket{le=\"0.001\"} 2\n"));
        assert!(s.contains("lc_ack_latency_seconds_count 2\n"));
        assert!(s.contains("lc_io_driver{worker=\"0\",driver=\"io_uring\"} 1\n"));
        assert!(s.contains("lc_io_driver{worker=\"1\",driver=\"epoll\"} 1\n"));
    }

    #[test]
    fn renders_retrieval_desk_and_build_info() {
        let r: Vec<RetrievalMetrics> = (0..2).map(|_| RetrievalMetrics::default()).collect();
        r[0].wait.observe(Duration::from_micros(30));
        r[1].wait.observe(Duration::from_millis(3));
        r[1].search.observe(Duration::from_millis(12));
        let desk = DeskMetrics::default();
        desk.agents_online.set(2);
        desk.waiting.set(3);
        desk.oldest_since_ms.set(10_000);
        let mut s = String::new();
        render_pipeline(&r, 5, &desk, 12_500, &mut s);
        render_build_info(&mut s);
        assert!(s.contains("lc_retrieval_queue_depth 5\n"), "{s}");
        assert!(s.contains("lc_retrieval_wait_seconds_count 2\n"));
        assert!(s.contains("lc_retrieval_wait_seconds_bucket{le=\"0.00005\"} 1\n"));
        assert!(s.contains("lc_retrieval_search_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(s.contains("lc_desk_agents_online 2\n"));
        assert!(s.contains("lc_desk_waiting 3\n"));
        assert!(s.contains("lc_desk_longest_wait_seconds 2.500\n"));
        assert!(s.contains(&format!(
            "lc_build_info{{version=\"{}\",git=\"",
            env!("CARGO_PKG_VERSION")
        )));
        desk.oldest_since_ms.set(0);
        let mut s = String::new();
        render_pipeline(&r, 0, &desk, 12_500, &mut s);
        assert!(s.contains("lc_desk_longest_wait_seconds 0.000\n"));
    }
}
