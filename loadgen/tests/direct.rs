#![allow(clippy::unwrap_used)]
//! Direct mode, end to end over loopback: loadgen against an in-process
//! `inference-sim` whose prefill and decode steps are known (no jitter, no
//! batch slowdown), measured as `vllm bench serve` measures. Bounds are
//! one-sided where noise could break them (a figure is never below what the
//! server imposed) and generous where two-sided (not far above it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use inference_client::sim::server::{bind, serve, Faults, ServerConfig};
use inference_client::{IoDriver, LatencyModel};
use loadgen::arrivals::ArrivalKind;
use loadgen::direct::prompts::TokenDist;
use loadgen::direct::Api;
use loadgen::metrics::{ErrorKind, Figure, Interval};
use loadgen::run::{self, RunOptions};
use loadgen::scenario::{Model, Scenario, Shape, Stage, ThinkDist};
use loadgen::units::Dur;

/// 1 ms of prefill per prompt token, 10 ms decode steps.
const PREFILL_US: f64 = 1000.0;
const STEP_MS: u64 = 10;
/// Synthetic prompts of 40 tokens are, as a chat, 47 prompt tokens (the
/// template's 4 per message and 3 to open the reply).
const INPUT: u32 = 40;
const CHAT_PROMPT: u64 = 47;

fn model() -> LatencyModel {
    LatencyModel {
        prefill_us_per_token: PREFILL_US,
        decode_step: Duration::from_millis(STEP_MS),
        batch_slowdown: 0.0,
        jitter: 0.0,
        ..LatencyModel::default()
    }
}

/// An inference-sim on a thread of its own; its address. The listener is
/// bound (and listening) before this returns, so connects queue until it serves.
fn sim(cfg: ServerConfig) -> SocketAddr {
    let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || serve(l, cfg, IoDriver::Auto));
    addr
}

fn sim_with(faults: Faults) -> SocketAddr {
    sim(ServerConfig {
        latency: model(),
        max_tokens: 4096,
        faults,
        ..ServerConfig::default()
    })
}

/// A one-stage direct run on `addr`: constant arrivals, synthetic prompts of
/// [`INPUT`] tokens asking for `n` tokens each.
fn scenario(addr: SocketAddr, sessions: u64, rate: f64, secs: u64, n: u32) -> Scenario {
    let mut sc = Scenario::simple(
        &format!("http://{addr}/v1"),
        sessions,
        rate,
        Duration::from_secs(secs),
    );
    sc.arrivals = ArrivalKind::Constant;
    sc.direct.served_model = Some("sim".into());
    sc.direct.input_tokens = Some(TokenDist::Constant(INPUT));
    sc.direct.output_tokens = Some(TokenDist::Constant(n));
    sc.timeout = Dur(Duration::from_secs(5));
    sc
}

fn opts() -> RunOptions {
    RunOptions {
        threads: 1,
        pin: false,
        progress: false,
        ..RunOptions::default()
    }
}

fn run_with(sc: &Scenario, o: &RunOptions) -> (run::RunOutcome, Interval) {
    let out = run::execute(sc, o, |_| {}).expect("run completes");
    let totals = out.totals.clone();
    (out, totals)
}

fn run(sc: &Scenario) -> (run::RunOutcome, Interval) {
    run_with(sc, &opts())
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-direct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The smallest sample is at least `us` (compared in HdrHistogram's buckets).
fn at_least(t: &Interval, f: Figure, us: u64) {
    let h = t.figure(f);
    assert!(!h.is_empty(), "{f:?} has no samples");
    assert!(
        h.min() >= h.lowest_equivalent(us),
        "{f:?} min {} below {us}",
        h.min()
    );
}

/// The 99th percentile is below `us`.
fn p99_below(t: &Interval, f: Figure, us: u64) {
    let v = t.figure(f).value_at_quantile(0.99);
    assert!(v < us, "{f:?} p99 {v} not below {us}");
}

/// Requests that do not overlap (one every 250 ms, each about 130 ms long),
/// so each is alone on the server and its figures are the latency model's.
fn figures_are_the_servers_on(driver: IoDriver) {
    let addr = sim_with(Faults::default());
    let n = 8u32;
    let mut sc = scenario(addr, 2, 4.0, 2, n);
    sc.slos = vec!["ttft:1s".parse().unwrap(), "tpot:50ms".parse().unwrap()];
    let o = RunOptions { driver, ..opts() };
    let (out, t) = run_with(&sc, &o);
    if driver == IoDriver::Epoll {
        assert_eq!(out.driver, "epoll");
    }
    let c = &t.counters;
    assert!(c.sent >= 6, "about 8 requests expected, got {}", c.sent);
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!((c.acked, c.replied, c.good), (c.sent, c.sent, c.sent));
    // Exactly n tokens each (the server's usage; ignore_eos and min_tokens
    // made it generate them), and the chat prompt's tokens.
    assert_eq!(c.output_tokens, u64::from(n) * c.replied);
    assert_eq!(c.input_tokens, CHAT_PROMPT * c.replied);
    let step = STEP_MS * 1000;
    let ttft = CHAT_PROMPT * PREFILL_US as u64 + step;
    at_least(&t, Figure::Ttft, ttft);
    p99_below(&t, Figure::Ttft, ttft + 30_000);
    let reply = ttft + u64::from(n - 1) * step;
    at_least(&t, Figure::Reply, reply);
    p99_below(&t, Figure::Reply, reply + 40_000);
    // The server's timer wakes up to a millisecond late per token, never early
    // on average: tpot is the step, give or take that.
    let tpot = t.figure(Figure::Tpot);
    assert_eq!(tpot.len(), c.replied);
    assert!(
        tpot.min() >= step - 1_500 && tpot.max() <= step + 3_000,
        "tpot {}..{}",
        tpot.min(),
        tpot.max()
    );
    assert_eq!(t.figure(Figure::Itl).len(), u64::from(n - 1) * c.replied);
    // The head comes before the first token.
    p99_below(&t, Figure::Rtt, ttft);
    // Two keep-alive connections at most, each opened once.
    assert!(out.peak_sessions >= 1 && out.peak_sessions <= 2);
    let connects = t.figure(Figure::Connect).len();
    assert!((1..=2).contains(&connects), "{connects} connects");
}

#[test]
fn figures_are_the_servers_prefill_and_steps_and_not_far_above() {
    figures_are_the_servers_on(IoDriver::Auto);
}

#[test]
fn the_epoll_driver_measures_the_same_way() {
    figures_are_the_servers_on(IoDriver::Epoll);
}

#[test]
fn prompts_files_set_each_requests_tokens_and_goodput_needs_every_slo() {
    let addr = sim_with(Faults::default());
    let file = tmp("prompts.jsonl");
    // A 4-byte prompt: 1 token, 8 as a chat: 8 ms prefill + 10 ms step.
    // Short replies take 18 + 2 * 10 = 38 ms, long ones 18 + 11 * 10 = 128 ms.
    std::fs::write(
        &file,
        "{\"prompt\": \"abcd\", \"output_tokens\": 3}\n{\"prompt\": \"wxyz\", \"output_tokens\": 12}\n",
    )
    .unwrap();
    let mut sc = scenario(addr, 2, 4.0, 2, 1);
    sc.direct.input_tokens = None;
    sc.direct.output_tokens = None;
    sc.direct.prompts = Some(file);
    sc.slos = vec!["reply:80ms".parse().unwrap()];
    let (_, t) = run(&sc);
    let c = &t.counters;
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!(c.replied, c.sent);
    // The file's prompts go in turn, short first.
    let short = c.replied.div_ceil(2);
    let long = c.replied / 2;
    assert_eq!(c.output_tokens, 3 * short + 12 * long);
    assert_eq!(c.input_tokens, 8 * c.replied);
    assert_eq!(c.good, short, "only the short replies met reply:80ms");
}

#[test]
fn the_completions_api_is_measured_the_same_way() {
    let addr = sim_with(Faults::default());
    // Below the simulator's natural answer length: completions send no ignore_eos.
    let n = 5;
    let mut sc = scenario(addr, 1, 4.0, 1, n);
    sc.direct.api = Api::Completions;
    let (_, t) = run(&sc);
    let c = &t.counters;
    assert!(c.sent >= 3, "{}", c.sent);
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!(c.replied, c.sent);
    assert_eq!(c.output_tokens, u64::from(n) * c.replied);
    // A completions prompt is its own tokens, without a chat template.
    assert_eq!(c.input_tokens, u64::from(INPUT) * c.replied);
    at_least(
        &t,
        Figure::Ttft,
        u64::from(INPUT) * PREFILL_US as u64 + STEP_MS * 1000,
    );
}

#[test]
fn a_server_answering_503_is_busy_not_an_error() {
    let addr = sim_with(Faults {
        http_status: Some(503),
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    let (_, t) = run(&scenario(addr, 2, 20.0, 1, 4));
    let c = &t.counters;
    assert!(c.sent >= 10, "{}", c.sent);
    assert_eq!(c.error(ErrorKind::Busy), c.sent);
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!((c.acked, c.replied, c.good), (0, 0, 0));
    assert_eq!(t.figure(Figure::Ttft).len(), 0);
    // A 503 with its whole body keeps the connection.
    assert!(t.figure(Figure::Connect).len() <= 2);
}

#[test]
fn a_server_answering_other_errors_is_unavailable_or_bad_request() {
    for (status, kind) in [(500, ErrorKind::Unavailable), (401, ErrorKind::BadRequest)] {
        let addr = sim_with(Faults {
            http_status: Some(status),
            ..Faults::default()
        });
        let (_, t) = run(&scenario(addr, 1, 10.0, 1, 4));
        let c = &t.counters;
        assert!(c.sent >= 5);
        assert_eq!(c.error(kind), c.sent, "{status}: {:?}", c.errors);
    }
}

#[test]
fn a_server_returning_garbage_is_a_protocol_error() {
    let addr = sim_with(Faults {
        garbage: true,
        ..Faults::default()
    });
    let (_, t) = run(&scenario(addr, 2, 10.0, 1, 4));
    let c = &t.counters;
    assert!(c.sent >= 5, "{}", c.sent);
    assert_eq!(c.error(ErrorKind::Protocol), c.sent, "{:?}", c.errors);
    assert_eq!(c.replied, 0);
}

#[test]
fn a_stream_cut_mid_reply_is_closed() {
    let addr = sim_with(Faults {
        drop_after_tokens: Some(2),
        ..Faults::default()
    });
    let (_, t) = run(&scenario(addr, 1, 4.0, 1, 6));
    let c = &t.counters;
    assert!(c.sent >= 2);
    assert_eq!(c.error(ErrorKind::Closed), c.sent, "{:?}", c.errors);
    assert_eq!(c.acked, c.sent, "the 200 head came first");
}

#[test]
fn nothing_listening_is_a_connection_failure_not_a_result() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let err = run::execute(&scenario(addr, 2, 10.0, 1, 4), &opts(), |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("could not open any session") && msg.contains("refused"),
        "{msg}"
    );
}

#[test]
fn sessions_cap_the_connections_and_queued_requests_count_from_their_due_time() {
    let addr = sim_with(Faults::default());
    // 20 requests a second of about 150 ms each, on two connections: a
    // line forms, and the wait in it is part of each request's figures.
    let (out, t) = run(&scenario(addr, 2, 20.0, 1, 10));
    let c = &t.counters;
    assert!(c.sent >= 15, "{}", c.sent);
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!(c.replied, c.sent);
    assert_eq!(out.peak_sessions, 2);
    assert_eq!(
        t.figure(Figure::Connect).len(),
        2,
        "two keep-alive connections, reused"
    );
    let ttft = t.figure(Figure::Ttft);
    assert!(
        ttft.max() > 250_000,
        "the last requests waited in line: ttft max {}",
        ttft.max()
    );
}

#[test]
fn closed_model_sessions_send_one_request_at_a_time_and_think() {
    let addr = sim_with(Faults::default());
    let mut sc = scenario(addr, 2, 0.0, 2, 4);
    sc.model = Model::Closed;
    sc.think = Some(Dur(Duration::from_millis(100)));
    sc.think_dist = ThinkDist::Constant;
    let (_, t) = run(&sc);
    let c = &t.counters;
    // Each session: 100 ms of thought, then about 87 ms of reply.
    assert!(
        c.sent >= 8 && c.sent <= 2 * 2_000 / 180 + 2,
        "sent {}",
        c.sent
    );
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!(c.replied, c.sent);
}

#[test]
fn warm_up_is_not_counted_and_requests_belong_to_the_stage_they_were_due_in() {
    let addr = sim_with(Faults::default());
    let mut sc = scenario(addr, 2, 5.0, 1, 2);
    sc.stages = vec![
        Stage {
            name: Some("warm".into()),
            duration: Dur(Duration::from_secs(1)),
            sessions: 2,
            rate: 5.0,
            shape: Shape::Step,
        },
        Stage {
            name: Some("hold".into()),
            duration: Dur(Duration::from_secs(1)),
            sessions: 2,
            rate: 5.0,
            shape: Shape::Step,
        },
    ];
    sc.warmup = Dur(Duration::from_secs(1));
    let (out, t) = run(&sc);
    let hold = &out.stages[1].counters;
    assert!((3..=6).contains(&hold.sent), "{}", hold.sent);
    assert_eq!(hold.replied, hold.sent);
    assert_eq!(out.stages[0].counters.sent, 0, "warm-up");
    assert_eq!(t.counters.sent, hold.sent);
}

#[test]
fn a_bad_prompts_file_names_its_file_and_line() {
    let addr = sim_with(Faults::default());
    let file = tmp("bad.jsonl");
    std::fs::write(&file, "{\"prompt\": \"ok\"}\n{\"prompt\": 3}\n").unwrap();
    let mut sc = scenario(addr, 1, 1.0, 1, 1);
    sc.direct.input_tokens = None;
    sc.direct.prompts = Some(file.clone());
    let msg = run::execute(&sc, &opts(), |_| {}).unwrap_err().to_string();
    assert!(
        msg.contains(file.to_str().unwrap()) && msg.contains("line 2"),
        "{msg}"
    );
}

const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBaTCCAQ6gAwIBAgICEAAwCgYIKoZIzj0EAwIwGjEYMBYGA1UEAwwPbG9hZGdl
biB0ZXN0IENBMCAXDTIwMDEwMTAwMDAwMFoYDzIxMjAwMTAxMDAwMDAwWjAaMRgw
FgYDVQQDDA9sb2FkZ2VuIHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AARDY+nFUfE0TkTif3gq/C/q3OgsCA+nmAvbMU18sAW4VDQM3bfYeq8RKtULIHZT
qzeR4P9bc4Qa/9KHhhX5vLAPo0IwQDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB
/wQEAwIBBjAdBgNVHQ4EFgQUjrkzXGRcH68WPHf9Xp+8U/aZj5EwCgYIKoZIzj0E
AwIDSQAwRgIhAJOWezkixgo60a/Bmea1SZB6L09PNlZtGy6RbpOcyG7OAiEAsLpK
VCWanPKgYGT95hnf0fRYRvXGUnoVGlxbc+NpO9g=
-----END CERTIFICATE-----
";

/// For 127.0.0.1, signed by [`TEST_CA`], valid 2020 to 2120.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBpzCCAU6gAwIBAgICEAEwCgYIKoZIzj0EAwIwGjEYMBYGA1UEAwwPbG9hZGdl
biB0ZXN0IENBMCAXDTIwMDEwMTAwMDAwMFoYDzIxMjAwMTAxMDAwMDAwWjAUMRIw
EAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARQ2P22
jtJ3QaI08sYnRqBLZh3PeKLNWBF2RrmViVnUjvpim00xq++KlCjA0EfCr306M7ku
V+YHjQrNbIz6ctBXo4GHMIGEMAwGA1UdEwEB/wQCMAAwDgYDVR0PAQH/BAQDAgeA
MBMGA1UdJQQMMAoGCCsGAQUFBwMBMA8GA1UdEQQIMAaHBH8AAAEwHwYDVR0jBBgw
FoAUjrkzXGRcH68WPHf9Xp+8U/aZj5EwHQYDVR0OBBYEFLeZGWCNuzc+0TusFuXo
IlJDbX3OMAoGCCqGSM49BAMCA0cAMEQCICjaoQwMwOmSJSY5ANlJn4qXRDEVGhWa
J4Bax4jBQwuOAiAShyulRkf5DcGi4VX9o4gUzs4aBIi00iwkVby6WH6HVw==
-----END CERTIFICATE-----
";

/// [`TEST_CERT`]'s key: a test-only private CA's leaf, trusted nowhere else.
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVvGXKcGv+k+Mn7u3
12RSYMfq3Sr0K/Gkbm9dEEyhRSqhRANCAARQ2P22jtJ3QaI08sYnRqBLZh3PeKLN
WBF2RrmViVnUjvpim00xq++KlCjA0EfCr306M7kuV+YHjQrNbIz6ctBX
-----END PRIVATE KEY-----
";

#[test]
fn https_with_a_private_ca() {
    let (ca, cert, key) = (tmp("ca.pem"), tmp("cert.pem"), tmp("key.pem"));
    std::fs::write(&ca, TEST_CA).unwrap();
    std::fs::write(&cert, TEST_CERT).unwrap();
    std::fs::write(&key, TEST_KEY).unwrap();
    let addr = sim(ServerConfig {
        latency: model(),
        max_tokens: 4096,
        tls: Some(inference_client::tls::server_config(&cert, &key).unwrap()),
        ..ServerConfig::default()
    });
    let n = 4;
    let mut sc = scenario(addr, 2, 5.0, 1, n);
    sc.url = format!("https://{addr}/v1");
    // Not trusted without the CA: nothing can be measured.
    let msg = run::execute(&sc, &opts(), |_| {}).unwrap_err().to_string();
    assert!(
        msg.contains("could not open any session") && msg.contains("TLS"),
        "{msg}"
    );
    sc.direct.ca = Some(ca);
    let (_, t) = run(&sc);
    let c = &t.counters;
    assert!(c.sent >= 3, "{}", c.sent);
    assert_eq!(c.errors_total(), 0, "{:?}", c.errors);
    assert_eq!(c.output_tokens, u64::from(n) * c.replied);
    at_least(
        &t,
        Figure::Ttft,
        CHAT_PROMPT * PREFILL_US as u64 + STEP_MS * 1000,
    );
    // connect is TCP and the TLS handshake.
    assert!(!t.figure(Figure::Connect).is_empty());
}

#[test]
fn the_command_line_writes_the_report_and_never_the_key() {
    const KEY: &str = "sk-direct-test-7f3a";
    let addr = sim(ServerConfig {
        latency: model(),
        max_tokens: 4096,
        api_key: Some(KEY.into()),
        ..ServerConfig::default()
    });
    let json = tmp("report.json");
    let url = format!("http://{addr}/v1");
    let args = [
        "loadgen",
        "--url",
        &url,
        "--served-model",
        "sim",
        "--api-key",
        KEY,
        "--sessions",
        "2",
        "--rate",
        "5",
        "--duration",
        "1s",
        "--arrivals",
        "constant",
        "--input-tokens",
        "40",
        "--output-tokens",
        "uniform:3..6",
        "--slo",
        "ttft:1s",
        "--budget",
        "goodput>99%",
        "--budget",
        "errors<1%",
        "--threads",
        "1",
        "--no-pin",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ];
    let code = loadgen::cli::main(args.iter().map(std::ffi::OsString::from));
    assert_eq!(code, loadgen::cli::EXIT_PASS, "every budget holds");
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(!text.contains(KEY), "the key is in the report");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = &v["messages"];
    let sent = m["sent"].as_u64().unwrap();
    assert!(sent >= 3, "{m}");
    assert_eq!(m["replied"].as_u64(), Some(sent), "{m}");
    // 3 to 6 tokens a reply, from the server's usage.
    let tokens = m["output_tokens"].as_u64().unwrap();
    assert!((3 * sent..=6 * sent).contains(&tokens), "{m}");
    assert!(m["output_tokens_per_s"].as_f64().unwrap() > 0.0, "{m}");
    assert_eq!(m["input_tokens"].as_u64(), Some(47 * sent), "{m}");
    assert_eq!(
        v["goodput"]["percent"].as_f64(),
        Some(100.0),
        "{}",
        v["goodput"]
    );
    assert!(v["goodput"]["per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["scenario"]["direct"]["served_model"], "sim");
    assert_eq!(
        v["metrics"]["tpot"]["count"].as_u64(),
        Some(sent),
        "one tpot per reply"
    );
}
