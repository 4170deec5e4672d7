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
    let out = run::execute(sc, &opts(), |_| {}).expect("run completes");
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
    // The stages: the ramp was all warm-up, the hold has every measured message.
    assert_eq!(out.stages.len(), 2, "one interval per stage");
    assert_eq!(out.stages[0].counters.sent, 0, "the ramp is warm-up");
    assert_eq!(out.stages[1].counters.sent, c.sent);
    assert_eq!(
        out.stages[1].figure(Figure::Rtt).len(),
        t.figure(Figure::Rtt).len()
    );
    // The series: whole seconds from the start of the stages, offering what
    // the schedule did (the ramp from 0 to 100 a second offers 50 in its
    // second, the hold 100), then the drain.
    let series = &out.series;
    assert!(series.len() >= 2, "{series:?}");
    assert_eq!(series[0].t_s, 0);
    assert!(series.windows(2).all(|w| w[1].t_s == w[0].t_s + 1));
    assert!(
        (series[0].offered - 50.0).abs() < 1e-6,
        "{}",
        series[0].offered
    );
    assert!(
        (series[1].offered - 100.0).abs() < 1e-6,
        "{}",
        series[1].offered
    );
    assert_eq!(series[0].sent, 0, "warm-up messages are not in the series");
    assert_eq!(series.iter().map(|p| p.sent).sum::<u64>(), c.sent);
    assert!(series[1].rtt_p99_us.is_some());
    assert_eq!(series[1].open, 30);
}

#[test]
fn a_stage_gets_the_replies_of_its_messages_even_when_they_settle_in_the_next() {
    // Replies take 600 ms: the last messages of the first stage settle in
    // the second, and still count as the first stage's.
    let addr = server(Behaviour {
        ack_delay: Duration::from_millis(600),
        ..Behaviour::default()
    });
    let mut sc = Scenario::simple(&url(addr), 0, 0.0, Duration::from_secs(1));
    sc.replies = false;
    sc.arrivals = loadgen::arrivals::ArrivalKind::Constant;
    sc.stages = vec![
        Stage {
            name: Some("busy".into()),
            duration: Dur(Duration::from_secs(1)),
            sessions: 10,
            rate: 50.0,
            shape: Shape::Step,
        },
        Stage {
            name: Some("quiet".into()),
            duration: Dur(Duration::from_secs(1)),
            sessions: 10,
            rate: 0.0,
            shape: Shape::Step,
        },
    ];
    let (out, t) = run(&sc);
    assert_eq!(t.counters.errors_total(), 0, "{:?}", t.counters.errors);
    let (busy, quiet) = (&out.stages[0], &out.stages[1]);
    assert_eq!(busy.counters.sent, t.counters.sent);
    assert!(busy.counters.sent >= 45, "{}", busy.counters.sent);
    assert_eq!(
        busy.counters.acked, busy.counters.sent,
        "every ack is the busy stage's"
    );
    assert_eq!(quiet.counters.sent, 0);
    assert_eq!(quiet.figure(Figure::Rtt).len(), 0);
    // Yet the series shows acks arriving in the quiet stage's second.
    let acked_late: u64 = out
        .series
        .iter()
        .filter(|p| p.t_s >= 1)
        .map(|p| p.acked)
        .sum();
    assert!(acked_late >= 20, "{:?}", out.series);
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
    let out = run::execute(&sc, &o, |_| {}).expect("run completes");
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
    let err = run::execute(&sc, &opts(), |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("could not open any session") && msg.contains("refused"),
        "{msg}"
    );
}

#[test]
fn scripted_conversations_reload_go_offline_resume_and_report_each_turn() {
    let addr = server(Behaviour {
        ack_delay: Duration::from_millis(5),
        tokens: 3,
        token_interval: Duration::from_millis(5),
        ..Behaviour::default()
    });
    let toml_text = format!(
        r#"
url = "{}"
seed = 7

[[stages]]
duration = "5s"
sessions = 6

[[conversation]]
name = "order"
jitter = 0.2
turns = [
  {{ say = "Where is my order?", think = "150ms" }},
  {{ say = "It is order 1234", think = "150ms" }},
  {{ reload = true, think = "50ms" }},
  {{ say = "Still there?", think = "50ms" }},
  {{ human = "a person please", think = "50ms" }},
  {{ offline = "300ms", think = "50ms" }},
  {{ rate = 4, think = "50ms" }},
  {{ say = "Thanks", think = "50ms" }},
]
"#,
        url(addr)
    );
    let sc = Scenario::from_toml(&toml_text, std::path::Path::new("conv.toml")).unwrap();
    let (out, t) = run(&sc);
    let c = &t.counters;
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert!(c.replied > 0 && c.replied == c.sent, "{c:?}");
    // Four messages per conversation, told apart by turn.
    assert_eq!(
        out.turns.len(),
        4,
        "{:?}",
        out.turns
            .iter()
            .map(|x| x.counters.sent)
            .collect::<Vec<_>>()
    );
    let sent: Vec<u64> = out.turns.iter().map(|x| x.counters.sent).collect();
    assert!(
        sent.windows(2).all(|w| w[0] >= w[1]),
        "later turns are reached by fewer: {sent:?}"
    );
    assert_eq!(sent.iter().sum::<u64>(), c.sent);
    assert!(sent[3] >= 3, "{sent:?}");
    for turn in &out.turns {
        assert_eq!(turn.figure(Figure::Ttft).len(), turn.counters.replied);
    }
    // Every reload and every return from offline resumed the session.
    assert!(c.reconnects >= 2 * sent[3], "{c:?}");
    assert_eq!(c.resumed, c.reconnects, "{c:?}");
    // Visitors who finished left and new ones came: more sessions than the target.
    assert!(c.sessions_attempted > 6, "{c:?}");
}
