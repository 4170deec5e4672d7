//! Honest measurement, end to end over loopback: loadgen against its own test
//! server, whose delays and stalls are known. Bounds are one-sided where noise
//! could break them (a figure is never below what the server imposed) and
//! generous where two-sided (not far above it).

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use loadgen::metrics::{ErrorKind, Figure, Interval};
use loadgen::run::{self, RunOptions};
use loadgen::scenario::{Model, Scenario, Shape, Stage, ThinkDist};
use loadgen::testserver::{self, script::Behaviour, Config};
use loadgen::units::Dur;

fn server(b: Behaviour) -> SocketAddr {
    testserver::spawn(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        behaviour: b,
        epoll: false,
    })
    .expect("test server starts")
}

fn opts() -> RunOptions {
    RunOptions {
        threads: 1,
        pin: false,
        progress: false,
        ..RunOptions::default()
    }
}

fn run(sc: &Scenario) -> (run::RunOutcome, Interval) {
    let out = run::execute(sc, &opts(), |_, _| {}).expect("run completes");
    let totals = out.totals.clone();
    (out, totals)
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws?site=demo")
}

#[test]
fn figures_are_at_least_the_servers_delays_and_not_far_above() {
    let addr = server(Behaviour {
        ack_delay: Duration::from_millis(20),
        tokens: 3,
        token_interval: Duration::from_millis(10),
        ..Behaviour::default()
    });
    let mut sc = Scenario::simple(&url(addr), 20, 100.0, Duration::from_secs(2));
    sc.slos = vec!["rtt:1s".parse().unwrap()];
    let (out, t) = run(&sc);
    let c = &t.counters;
    assert!(c.sent >= 100, "about 200 messages expected, got {}", c.sent);
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!((c.acked, c.replied), (c.sent, c.sent));
    let at_least = |f: Figure, us: u64| {
        let h = t.figure(f);
        // HdrHistogram keeps 3 significant digits: compare in its own buckets.
        assert!(
            h.min() >= h.lowest_equivalent(us),
            "{f:?} min {} below {us}",
            h.min()
        );
    };
    at_least(Figure::Rtt, 20_000);
    at_least(Figure::Ttft, 30_000);
    at_least(Figure::Reply, 50_000);
    // Gaps between tokens are the server's timer jitter's to shorten: only counted.
    assert_eq!(t.figure(Figure::Itl).len(), 2 * c.sent);
    let rtt = t.figure(Figure::Rtt);
    assert!(
        rtt.value_at_quantile(0.5) < 20_000 + 100_000,
        "p50 {}",
        rtt.value_at_quantile(0.5)
    );
    assert!(
        rtt.value_at_quantile(0.99) < 20_000 + 500_000,
        "p99 {}",
        rtt.value_at_quantile(0.99)
    );
    assert_eq!(t.figure(Figure::Connect).len(), 20);
    assert_eq!(out.peak_sessions, 20);
    assert_eq!(c.good, c.sent, "every message met rtt:1s");
}

#[test]
fn a_one_second_stall_shows_in_the_tail_of_an_open_model_run() {
    let addr = server(Behaviour {
        stall_after: Some(Duration::from_millis(500)),
        stall_for: Duration::from_secs(1),
        ..Behaviour::default()
    });
    let mut sc = Scenario::simple(&url(addr), 20, 200.0, Duration::from_secs(3));
    sc.arrivals = loadgen::arrivals::ArrivalKind::Constant;
    sc.replies = false;
    let (_, t) = run(&sc);
    let rtt = t.figure(Figure::Rtt);
    assert!(
        rtt.len() >= 400,
        "about 600 messages expected, got {}",
        rtt.len()
    );
    assert_eq!(t.counters.errors_total(), 0, "{:?}", t.counters.errors);
    // Messages due during the stall wait up to a second; counted from their
    // due time they fill about a third of the run, so p99 is near the stall.
    assert!(
        rtt.value_at_quantile(0.99) >= 500_000,
        "p99 {} hides the stall",
        rtt.value_at_quantile(0.99)
    );
    assert!(rtt.max() >= 800_000, "max {}", rtt.max());
    // The median is not the stall: most messages were answered at once.
    assert!(rtt.value_at_quantile(0.5) < rtt.value_at_quantile(0.99));
}

#[test]
fn busy_refusals_are_counted_apart_from_errors_and_cost_goodput() {
    let addr = server(Behaviour {
        busy_every: 4,
        busy_retry_ms: 100,
        ..Behaviour::default()
    });
    let mut sc = Scenario::simple(&url(addr), 10, 100.0, Duration::from_secs(2));
    sc.replies = false;
    let (_, t) = run(&sc);
    let c = &t.counters;
    let busy = c.error(ErrorKind::Busy);
    assert_eq!(c.errors_total(), 0);
    assert!(
        busy > 0 && busy + c.acked == c.sent,
        "busy {busy} acked {} sent {}",
        c.acked,
        c.sent
    );
    // The server refuses every 4th message it sees; warm-up is none, so a quarter of all.
    assert!(
        (busy as f64 / c.sent as f64 - 0.25).abs() < 0.05,
        "{busy} of {}",
        c.sent
    );
    assert_eq!(
        c.good, c.acked,
        "no SLO: every acked message is good, no busy one is"
    );
}

#[test]
fn closed_model_sessions_wait_for_their_reply_and_think() {
    let addr = server(Behaviour {
        ack_delay: Duration::from_millis(5),
        tokens: 2,
        token_interval: Duration::from_millis(5),
        ..Behaviour::default()
    });
    let mut sc = Scenario::simple(&url(addr), 10, 0.0, Duration::from_secs(2));
    sc.model = Model::Closed;
    sc.think = Some(Dur(Duration::from_millis(100)));
    // Constant think: the bound below is exact only then (exponential think
    // times let a session send more, 206 against 191 seen once).
    sc.think_dist = ThinkDist::Constant;
    let (_, t) = run(&sc);
    let c = &t.counters;
    // Each session does at most one message per (think + reply) ~ 115ms.
    assert!(
        c.sent >= 30 && c.sent <= 10 * 2_000 / 110 + 10,
        "sent {}",
        c.sent
    );
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!(c.replied, c.sent);
}

#[test]
fn stages_ramp_sessions_and_warm_up_is_not_counted() {
    let addr = server(Behaviour::default());
    let mut sc = Scenario::simple(&url(addr), 0, 0.0, Duration::from_secs(1));
    sc.replies = false;
    sc.stages = vec![
        Stage {
            name: Some("ramp".into()),
            duration: Dur(Duration::from_secs(1)),
            sessions: 30,
            rate: 100.0,
            shape: Shape::Ramp,
        },
        Stage {
            name: Some("hold".into()),
            duration: Dur(Duration::from_secs(1)),
            sessions: 30,
            rate: 100.0,
            shape: Shape::Step,
        },
    ];
    sc.warmup = Dur(Duration::from_secs(1));
    let (out, t) = run(&sc);
    assert_eq!(out.peak_sessions, 30);
    let c = &t.counters;
    // Only the hold stage counts: about 100 messages, not 150.
    assert!(c.sent >= 60 && c.sent <= 140, "sent {}", c.sent);
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    // Sessions that connected during the ramp (warm-up) are not counted.
    assert!(t.figure(Figure::Connect).len() < 30);
}

#[test]
fn the_epoll_driver_measures_the_same_way() {
    let addr = server(Behaviour {
        ack_delay: Duration::from_millis(10),
        ..Behaviour::default()
    });
    let mut sc = Scenario::simple(&url(addr), 10, 100.0, Duration::from_secs(1));
    sc.replies = false;
    let o = RunOptions {
        driver: inference_client::IoDriver::Epoll,
        ..opts()
    };
    let out = run::execute(&sc, &o, |_, _| {}).expect("run completes");
    assert_eq!(out.driver, "epoll");
    let rtt = out.totals.figure(Figure::Rtt);
    assert!(rtt.len() >= 50, "{}", rtt.len());
    assert!(
        rtt.min() >= rtt.lowest_equivalent(10_000),
        "min {}",
        rtt.min()
    );
    assert_eq!(out.totals.counters.errors_total(), 0);
}

#[test]
fn nothing_listening_is_a_connection_failure_not_a_result() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let sc = Scenario::simple(&url(addr), 5, 10.0, Duration::from_secs(1));
    let err = run::execute(&sc, &opts(), |_, _| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("could not open any session") && msg.contains("refused"),
        "{msg}"
    );
}
