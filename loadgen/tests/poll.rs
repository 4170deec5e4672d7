#![allow(clippy::unwrap_used)]
//! `--transport poll` end to end: loadgen over the gateway's long-polling
//! fallback, against the real gateway started in-process on port 0 (loadgen's
//! own test server speaks only WebSocket) with a simulator whose first token
//! takes a known time. Every run is bounded by loadgen's own hard deadline;
//! nothing sleeps to synchronise.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use inference_client::IoDriver;
use loadgen::arrivals::ArrivalKind;
use loadgen::metrics::{ErrorKind, Figure, Interval};
use loadgen::run::{self, RunError, RunOptions, RunOutcome};
use loadgen::scenario::{Model, Scenario, Shape, Stage, ThinkDist, Transport};
use loadgen::units::Dur;

/// One decode step of the simulator: no first token comes sooner.
const STEP_MS: u64 = 4;

/// Sessions may send as fast as a test asks; a fast simulator; no knowledge
/// base (its sources would lengthen every prompt); a short shutdown.
fn config(extra: &str) -> String {
    let limits = if extra.contains("[limits]") {
        String::new()
    } else {
        "[limits]\nmessage_rate = { per_sec = 10000.0, burst = 10000.0 }\nframe_rate = { per_sec = 10000.0, burst = 10000.0 }\nshutdown_grace_ms = 500\n".to_string()
    };
    format!(
        "{limits}{extra}\n[inference.sim]\ndecode_step_ms = {STEP_MS}.0\nprefill_us_per_token = 10.0\n[knowledge]\nembedder = \"lexical\"\ndemo = false\n"
    )
}

/// A gateway running in this process; stopped (bounded) when dropped.
struct Gateway {
    running: Option<gateway::Running>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(driver: IoDriver, extra: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = gateway::Config::from_toml(&config(extra)).unwrap();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.workers = 2;
        cfg.io_driver = driver;
        cfg.pin_workers = false;
        cfg.data_dir = dir.path().join("data");
        let running = gateway::start(cfg).expect("the gateway starts");
        Gateway {
            addr: running.addr,
            running: Some(running),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws?site=demo", self.addr)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(r.join());
            });
            // A gateway that does not stop fails the test instead of hanging it.
            if !std::thread::panicking() {
                rx.recv_timeout(Duration::from_secs(20))
                    .expect("the gateway stops")
                    .expect("the gateway stops cleanly");
            }
        }
    }
}

fn opts(driver: IoDriver) -> RunOptions {
    RunOptions {
        threads: 1,
        pin: false,
        progress: false,
        driver,
        connect_timeout: Duration::from_secs(5),
        ..RunOptions::default()
    }
}

/// A one-stage open-model run, constant arrivals, over `transport`.
fn scenario(url: &str, transport: Transport, sessions: u64, rate: f64, secs: u64) -> Scenario {
    let mut sc = Scenario::simple(url, sessions, rate, Duration::from_secs(secs));
    sc.transport = transport;
    sc.arrivals = ArrivalKind::Constant;
    sc.seed = 7;
    sc.timeout = Dur(Duration::from_secs(5));
    sc
}

fn run(sc: &Scenario, driver: IoDriver) -> (RunOutcome, Interval) {
    let out = run::execute(sc, &opts(driver), |_| {}).expect("run completes");
    let t = out.totals.clone();
    (out, t)
}

fn no_errors(t: &Interval) {
    let c = &t.counters;
    let named: Vec<_> = ErrorKind::ALL
        .iter()
        .filter(|k| c.error(**k) > 0)
        .map(|k| (k.name(), c.error(*k)))
        .collect();
    assert!(named.is_empty(), "errors: {named:?}");
}

/// Whether the smallest sample of `f` is at least `us` (in the histogram's
/// own buckets: it keeps 3 significant digits).
fn at_least(t: &Interval, f: Figure, us: u64) {
    let h = t.figure(f);
    assert!(!h.is_empty(), "no {f:?} sample");
    assert!(
        h.min() >= h.lowest_equivalent(us),
        "{f:?} min {}us below {us}us",
        h.min()
    );
}

fn a_short_poll_run_is_acked_and_replied(driver: IoDriver) {
    let gw = Gateway::start(driver, "");
    let sc = scenario(&gw.url(), Transport::Poll, 8, 20.0, 2);
    let (out, t) = run(&sc, driver);
    let c = &t.counters;
    no_errors(&t);
    assert!(c.sent >= 35, "about 40 messages expected, got {}", c.sent);
    assert_eq!((c.acked, c.replied), (c.sent, c.sent));
    assert_eq!(c.sessions_opened, 8);
    assert_eq!(t.figure(Figure::Connect).len(), 8);
    assert_eq!(out.peak_sessions, 8);
    assert!(c.output_tokens >= c.replied, "every reply has tokens");
    // Nothing comes before the server made it: a first token takes a
    // decode step, an ack a round trip, a reply at least its first token.
    at_least(&t, Figure::Ttft, STEP_MS * 1000);
    at_least(&t, Figure::Reply, STEP_MS * 1000);
    let (rtt, ttft) = (t.figure(Figure::Rtt), t.figure(Figure::Ttft));
    assert!(rtt.min() > 0);
    assert!(
        ttft.value_at_quantile(0.5) >= rtt.value_at_quantile(0.5),
        "the first token after the ack"
    );
    // Plausible, not just positive: an idle loopback gateway answers fast.
    assert!(
        rtt.value_at_quantile(0.99) < 500_000,
        "rtt p99 {}us",
        rtt.value_at_quantile(0.99)
    );
    assert!(t.figure(Figure::Connect).max() < 1_000_000);
}

fn the_same_run_over_ws_and_poll_gives_the_same_counts(driver: IoDriver) {
    let gw = Gateway::start(driver, "");
    let mut ws = scenario(&gw.url(), Transport::Ws, 6, 15.0, 2);
    // One text: the WebSocket worker's masks come from the generator that
    // picks texts, so several texts would differ between the runs, and so
    // would the answers' lengths.
    ws.texts = vec!["Do you ship to Canada?".into()];
    let mut poll = ws.clone();
    poll.transport = Transport::Poll;
    let (_, a) = run(&ws, driver);
    let (_, b) = run(&poll, driver);
    no_errors(&a);
    no_errors(&b);
    let counts = |t: &Interval| {
        let c = &t.counters;
        (
            c.sent,
            c.acked,
            c.replied,
            c.sessions_opened,
            c.output_tokens,
        )
    };
    assert_eq!(
        counts(&a),
        counts(&b),
        "(sent, acked, replied, sessions, tokens) over ws, then poll"
    );
    for f in [Figure::Rtt, Figure::Ttft, Figure::Reply, Figure::Connect] {
        assert_eq!(a.figure(f).len(), b.figure(f).len(), "{f:?} samples");
    }
}

fn stages_warmup_and_the_closed_model_over_poll(driver: IoDriver) {
    let gw = Gateway::start(driver, "");
    // Two stages, the first half-second warm-up: the connect phase's
    // sessions are warm-up's, the four added in stage 2 are stage 2's.
    let mut sc = scenario(&gw.url(), Transport::Poll, 4, 10.0, 1);
    sc.warmup = Dur(Duration::from_millis(500));
    sc.stages.push(Stage {
        name: Some("more".into()),
        duration: Dur(Duration::from_secs(1)),
        sessions: 8,
        rate: 20.0,
        shape: Shape::Step,
    });
    let (out, t) = run(&sc, driver);
    no_errors(&t);
    assert_eq!(out.stages.len(), 2);
    let (s1, s2) = (&out.stages[0].counters, &out.stages[1].counters);
    assert!(
        (4..=6).contains(&s1.sent),
        "half of stage 1 at 10/s: {}",
        s1.sent
    );
    assert!((18..=21).contains(&s2.sent), "stage 2 at 20/s: {}", s2.sent);
    assert_eq!((s1.sessions_opened, s2.sessions_opened), (0, 4));
    assert_eq!(t.counters.warmup_sessions_opened, 4);
    assert_eq!((s2.acked, s2.replied), (s2.sent, s2.sent));
    assert_eq!(out.peak_sessions, 8);

    // The closed model: each session sends, awaits its reply, thinks.
    let mut sc = scenario(&gw.url(), Transport::Poll, 3, 0.0, 2);
    sc.model = Model::Closed;
    sc.think = Some(Dur(Duration::from_millis(100)));
    sc.think_dist = ThinkDist::Constant;
    let (_, t) = run(&sc, driver);
    no_errors(&t);
    let c = &t.counters;
    assert!(c.sent >= 6, "three sessions, a few turns each: {}", c.sent);
    assert_eq!((c.acked, c.replied), (c.sent, c.sent));
    at_least(&t, Figure::Ttft, STEP_MS * 1000);
}

fn refusals_are_counted_by_kind(driver: IoDriver) {
    // The gateway's own message rate limit (2/s, burst 10): over long
    // polling the refusals come in the recv stream, each with its id.
    let gw = Gateway::start(driver, "[limits]\nshutdown_grace_ms = 500\n");
    let mut sc = scenario(&gw.url(), Transport::Poll, 1, 40.0, 1);
    sc.replies = false;
    let (_, t) = run(&sc, driver);
    let c = &t.counters;
    let limited = c.error(ErrorKind::RateLimited);
    assert!(
        limited >= 20,
        "most of 40 messages in a second refused: {limited}"
    );
    assert_eq!(c.acked + limited, c.sent, "each message acked or refused");
    assert_eq!(c.errors_total(), limited);
    // An unknown site: every start is refused with 404, so no session opens.
    let mut sc = scenario(
        &format!("http://{}/?site=nope", gw.addr),
        Transport::Poll,
        2,
        5.0,
        1,
    );
    sc.replies = false;
    match run::execute(&sc, &opts(driver), |_| {}) {
        Err(RunError::NoSession { reason, .. }) => {
            assert!(reason.contains("HTTP 404"), "{reason}")
        }
        other => panic!("expected no session to open, got {other:?}"),
    }
}

/// Runs the `loadgen` binary, killed (by its pid) if it outlives `limit`.
fn loadgen(args: &[&str], limit: Duration) -> std::process::Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .env("CI", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the child this test started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("loadgen {args:?} ran past {limit:?}");
        }
    }
}

#[test]
fn the_flag_takes_an_http_url_and_the_report_says_poll() {
    let gw = Gateway::start(IoDriver::Auto, "");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let url = format!("http://{}/?site=demo", gw.addr);
    let out = loadgen(
        &[
            "--transport",
            "poll",
            "--url",
            &url,
            "--sessions",
            "3",
            "--rate",
            "6",
            "--duration",
            "1s",
            "--threads",
            "1",
            "--no-pin",
            "--quiet",
            "--budget",
            "errors<1%",
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["scenario"]["transport"], "poll");
    let m = &v["messages"];
    assert!(m["sent"].as_u64().unwrap() >= 5, "{m}");
    assert_eq!((&m["acked"], &m["replied"]), (&m["sent"], &m["sent"]));
    // Nothing listening over https: a connection failure, exit code 2.
    let out = loadgen(
        &[
            "--transport",
            "poll",
            "--url",
            "https://127.0.0.1:1/?site=demo",
            "--sessions",
            "1",
            "--rate",
            "1",
            "--duration",
            "1s",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not open any session"));
}

macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn uring() {
                    super::$name(inference_client::IoDriver::Uring);
                }
                #[test]
                fn epoll() {
                    super::$name(inference_client::IoDriver::Epoll);
                }
            }
        )*
    };
}

both_drivers!(
    a_short_poll_run_is_acked_and_replied,
    the_same_run_over_ws_and_poll_gives_the_same_counts,
    stages_warmup_and_the_closed_model_over_poll,
    refusals_are_counted_by_kind,
);

#[test]
fn long_polling_over_https_and_websocket_over_wss_through_a_tls_terminator() {
    // The terminator's address is the page's origin: the gateway allows it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front = listener.local_addr().unwrap();
    let gw = Gateway::start(
        IoDriver::Auto,
        &format!("[sites.demo]\nallowed_origins = [\"https://{front}\"]\n"),
    );
    let (ca, config) = support::certificate();
    support::serve(listener, gw.addr, config);
    let url = format!("https://{front}/?site=demo");
    let mut sc = scenario(&url, Transport::Poll, 4, 10.0, 2);
    sc.direct.ca = Some(ca.clone());
    let (_, t) = run(&sc, IoDriver::Auto);
    no_errors(&t);
    let c = &t.counters;
    assert!(c.sent >= 15, "{}", c.sent);
    assert_eq!((c.acked, c.replied, c.sessions_opened), (c.sent, c.sent, 4));
    at_least(&t, Figure::Ttft, STEP_MS * 1000);
    // The same gateway over wss://, through the same terminator.
    let mut ws = scenario(
        &format!("wss://{front}/ws?site=demo"),
        Transport::Ws,
        4,
        10.0,
        2,
    );
    ws.direct.ca = Some(ca);
    let (_, w) = run(&ws, IoDriver::Auto);
    no_errors(&w);
    assert_eq!(w.counters.replied, w.counters.sent);
    // Without the CA nothing opens, and the reason names TLS.
    sc.direct.ca = None;
    let e = run::execute(&sc, &opts(IoDriver::Auto), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("TLS"), "{e}");
}
