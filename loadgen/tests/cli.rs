//! The `loadgen` binary as CI runs it: exit codes, output files, shards and
//! merge. Every child process is killed if it outlives its deadline.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use loadgen::testserver::{self, script::Behaviour, Config};

const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

fn server() -> String {
    server_with(Behaviour::default())
}

/// A test server answering fast, with `b`'s busy refusals.
fn server_with(b: Behaviour) -> String {
    let addr = testserver::spawn(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        behaviour: Behaviour {
            ack_delay: Duration::from_millis(1),
            tokens: 2,
            token_interval: Duration::from_millis(2),
            ..b
        },
        epoll: false,
    })
    .unwrap();
    format!("ws://{addr}/ws?site=demo")
}

/// Runs loadgen, killing it after `limit`.
fn loadgen(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("CI", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadgen {args:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn passing_budgets_exit_0_and_write_every_output() {
    let url = server();
    let (json, junit, plot, log) = (
        tmp("pass.json"),
        tmp("pass.xml"),
        tmp("pass.svg"),
        tmp("pass.hlog"),
    );
    let out = loadgen(
        &[
            "--url",
            &url,
            "--sessions",
            "20",
            "--rate",
            "100",
            "--duration",
            "2s",
            "--threads",
            "1",
            "--slo",
            "ttft:1s",
            "--budget",
            "rtt.p99<5s",
            "--budget",
            "errors<1%",
            "--budget",
            "goodput>50%",
            "--json",
            s(&json),
            "--junit",
            s(&junit),
            "--plot",
            s(&plot),
            "--hdr-log",
            s(&log),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    assert!(
        out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("msgs"),
        "CI=true: no progress"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "loadgen-report/1");
    assert_eq!(v["verdict"], "pass");
    assert!(v["metrics"]["rtt"]["count"].as_u64().unwrap() > 50);
    assert!(v["metrics"]["ttft"]["p99_us"].as_u64().is_some());
    assert!(v["machine"].is_null() && v["shards"][0]["machine"]["cpus"].as_u64().unwrap() >= 1);
    let x = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(x.matches("<testcase ").count(), 3);
    assert!(std::fs::read_to_string(&plot)
        .unwrap()
        .contains("<polyline"));
    assert!(std::fs::read_to_string(&log).unwrap().contains("Tag=rtt,"));
}

#[test]
fn a_small_warmed_up_run_with_many_busy_says_what_it_saw() {
    // Every second message refused: half of them busy.
    let url = server_with(Behaviour {
        busy_every: 2,
        ..Behaviour::default()
    });
    let json = tmp("busy.json");
    let out = loadgen(
        &[
            "--url",
            &url,
            "--sessions",
            "2",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--warmup",
            "1s",
            "--threads",
            "1",
            "--json",
            s(&json),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The sessions opened in warm-up are reported, not "0 of 0 opened".
    assert!(
        stdout.contains("2 of 2 opened (2 of 2 during warm-up, not measured)"),
        "{stdout}"
    );
    // Two sessions say nothing about memory per session.
    assert!(!stdout.contains("resident per session"), "{stdout}");
    assert!(stdout.contains("(the whole process;"), "{stdout}");
    // More than a fifth busy: a warning on stderr that says what it means.
    assert!(
        stderr.contains("warning:")
            && stderr.contains("over capacity")
            && stderr.contains("--rate"),
        "{stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        v["busy_warning"]
            .as_str()
            .is_some_and(|w| w.contains("TTFT budget")),
        "{v}"
    );
    assert!(v["sessions"]["bytes_per_session"].is_null());
    assert_eq!(v["sessions"]["warmup_opened"], 2);
}

#[test]
fn few_busy_messages_give_no_warning() {
    let url = server_with(Behaviour {
        busy_every: 10,
        ..Behaviour::default()
    });
    let json = tmp("few-busy.json");
    let out = loadgen(
        &[
            "--url",
            &url,
            "--sessions",
            "4",
            "--rate",
            "40",
            "--duration",
            "1s",
            "--threads",
            "1",
            "--json",
            s(&json),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("busy"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["messages"]["busy"].as_u64().unwrap() > 0, "{v}");
    assert!(v["busy_warning"].is_null());
}

#[test]
fn a_missed_budget_exits_1_with_the_verdict_table() {
    let url = server();
    let junit = tmp("miss.xml");
    let out = loadgen(
        &[
            "--url",
            &url,
            "--sessions",
            "5",
            "--rate",
            "50",
            "--duration",
            "1s",
            "--threads",
            "1",
            "--budget",
            "rtt.p99<1us",
            "--junit",
            s(&junit),
            "-q",
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("<failure "));
}

#[test]
fn usage_and_connection_failures_exit_2_with_a_message() {
    let out = loadgen(&["--sessions", "5"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
    let out = loadgen(
        &[
            "--url",
            "ws://127.0.0.1:1/ws",
            "--sessions",
            "1",
            "--rate",
            "1",
            "--duration",
            "1s",
            "--budget",
            "p99<1ms",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let junit = tmp("refused.xml");
    let out = loadgen(
        &[
            "--url",
            &url,
            "--sessions",
            "3",
            "--rate",
            "10",
            "--duration",
            "1s",
            "--threads",
            "1",
            "--junit",
            s(&junit),
        ],
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("could not open any session"), "{err}");
    assert!(
        std::fs::read_to_string(&junit).unwrap().contains("<error "),
        "CI still gets a JUnit file"
    );
}

#[test]
fn shards_run_side_by_side_and_merge_losslessly() {
    let url = server();
    let (a, b, m) = (tmp("shard1.json"), tmp("shard2.json"), tmp("merged.json"));
    let run = |shard: &str, json: PathBuf| {
        let url = url.clone();
        let shard = shard.to_string();
        std::thread::spawn(move || {
            loadgen(
                &[
                    "--url",
                    &url,
                    "--sessions",
                    "10",
                    "--rate",
                    "100",
                    "--duration",
                    "1s",
                    "--threads",
                    "1",
                    "--shard",
                    &shard,
                    "--json",
                    s(&json),
                ],
                Duration::from_secs(60),
            )
        })
    };
    let h1 = run("1/2", a.clone());
    let h2 = run("2/2", b.clone());
    assert_eq!(h1.join().unwrap().status.code(), Some(0));
    assert_eq!(h2.join().unwrap().status.code(), Some(0));
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (ra, rb) = (read(&a), read(&b));
    assert_eq!(ra["sessions"]["peak_open"], 5);
    assert_eq!(rb["sessions"]["peak_open"], 5);
    let out = loadgen(
        &[
            "merge",
            s(&a),
            s(&b),
            "--budget",
            "sessions>=10",
            "--budget",
            "rtt.p99<5s",
            "--json",
            s(&m),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rm = read(&m);
    let count = |r: &serde_json::Value| r["metrics"]["rtt"]["count"].as_u64().unwrap();
    assert_eq!(count(&rm), count(&ra) + count(&rb));
    assert_eq!(rm["sessions"]["peak_open"], 10);
    assert_eq!(rm["shards"].as_array().unwrap().len(), 2);
    let out = loadgen(
        &["merge", s(&a), s(&b), "--budget", "rtt.max<1us"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let out = loadgen(&["merge", s(&tmp("missing.json"))], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_scenario_file_drives_stages() {
    let url = server();
    let file = tmp("scenario.toml");
    std::fs::write(
        &file,
        format!(
            r#"
url = "{url}"
seed = 3
arrivals = "gamma"
burstiness = 0.5
texts = ["hello", "where is my order?"]
budgets = ["errors<1%", "sessions>=8"]

[[stages]]
name = "ramp"
duration = "1s"
sessions = 8
rate = 50
shape = "ramp"

[[stages]]
name = "surge"
duration = "1s"
sessions = 8
rate = 200
"#
        ),
    )
    .unwrap();
    let json = tmp("scenario.json");
    let out = loadgen(
        &["--scenario", s(&file), "--threads", "1", "--json", s(&json)],
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["scenario"]["stages"].as_array().unwrap().len(), 2);
    assert_eq!(v["scenario"]["arrivals"], "gamma");
    let sent = v["messages"]["sent"].as_u64().unwrap();
    assert!(
        (100..=400).contains(&sent),
        "about 25 + 200 expected, got {sent}"
    );
}

#[test]
fn busy_messages_are_resent_after_their_retry_after() {
    // Every second message refused, each refusal asking for a short wait.
    let url = server_with(Behaviour {
        busy_every: 2,
        ..Behaviour::default()
    });
    let json = tmp("resend.json");
    let out = loadgen(
        &[
            "--url",
            &url,
            "--sessions",
            "4",
            "--rate",
            "40",
            "--duration",
            "1s",
            "--threads",
            "1",
            "--resend-busy",
            "--json",
            s(&json),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let m = &v["messages"];
    let (busy, resent, acked) = (
        m["busy"].as_u64().unwrap(),
        m["resent"].as_u64().unwrap(),
        m["resent_acked"].as_u64().unwrap(),
    );
    assert!(resent > 0 && resent <= busy, "{m}");
    assert!(acked > 0 && acked <= resent, "{m}");
    assert!(stdout.contains("resent "), "{stdout}");
}

/// A test server behaving exactly as `b` says.
fn server_exactly(b: Behaviour) -> String {
    let addr = testserver::spawn(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        behaviour: b,
        epoll: false,
    })
    .unwrap();
    format!("ws://{addr}/ws?site=demo")
}

/// A test server that serves one message at a time, 5 ms each: a capacity
/// of 200 messages a second, past which its queue (and rtt) grows without bound.
fn server_with_capacity() -> String {
    server_exactly(Behaviour {
        service_time: Duration::from_millis(5),
        ..Behaviour::default()
    })
}

#[test]
fn a_sweep_finds_the_knee_and_reports_every_step() {
    let url = server_with_capacity();
    let json = tmp("sweep.json");
    let junit = tmp("sweep.xml");
    // 50/s (a quarter of the capacity) and 150/s (three quarters) hold an
    // rtt p99 of 100 ms; at 250/s the queue grows by 50 messages a second.
    let out = loadgen(
        &[
            "sweep",
            "--url",
            &url,
            "--sessions",
            "20",
            "--from",
            "50",
            "--to",
            "450",
            "--step",
            "100",
            "--settle",
            "500ms",
            "--step-duration",
            "1500ms",
            "--threads",
            "1",
            "--no-replies",
            "--budget",
            "rtt.p99<100ms",
            "--json",
            s(&json),
            "--junit",
            s(&junit),
        ],
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("capacity at SLO: 150 msg/s"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "loadgen-sweep/1");
    assert_eq!(v["capacity_per_s"], 150.0);
    assert_eq!(v["knee"], 1);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(
        steps.len(),
        3,
        "stops at the first step that misses: {stdout}"
    );
    let rates: Vec<f64> = steps
        .iter()
        .map(|s| s["rate_per_s"].as_f64().unwrap())
        .collect();
    assert_eq!(rates, [50.0, 150.0, 250.0]);
    let passed: Vec<bool> = steps
        .iter()
        .map(|s| s["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [true, true, false]);
    for st in steps {
        // Each step is a whole report: its own figures, measured after its settle.
        let r = &st["report"];
        assert_eq!(r["schema"], "loadgen-report/1");
        let sent = r["messages"]["sent"].as_f64().unwrap();
        let rate = st["rate_per_s"].as_f64().unwrap();
        assert!(
            (sent / 1.5 - rate).abs() < rate * 0.35,
            "{sent} sent at {rate}/s"
        );
        assert!(st["goodput_per_s"].as_f64().unwrap() > 0.0);
    }
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains("name=\"capacity at SLO\"") && !x.contains("<failure"),
        "{x}"
    );
}

#[test]
fn a_sweep_whose_first_step_misses_exits_1_and_usage_errors_2() {
    let url = server();
    let out = loadgen(
        &[
            "sweep",
            "--url",
            &url,
            "--sessions",
            "5",
            "--from",
            "20",
            "--to",
            "100",
            "--step",
            "40",
            "--settle",
            "200ms",
            "--step-duration",
            "800ms",
            "--threads",
            "1",
            "--budget",
            "rtt.max<1us",
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("capacity at SLO: none"), "{stdout}");
    assert_eq!(stdout.matches("FAIL").count(), 1, "one step only: {stdout}");
    for bad in [
        vec![
            "sweep",
            "--url",
            &url,
            "--sessions",
            "5",
            "--from",
            "20",
            "--to",
            "100",
            "--step",
            "40",
        ],
        vec![
            "sweep",
            "--url",
            &url,
            "--sessions",
            "5",
            "--from",
            "20",
            "--to",
            "100",
            "--step",
            "40",
            "--budget",
            "rtt.p99<1s",
            "--rate",
            "3",
        ],
        vec![
            "sweep",
            "--url",
            &url,
            "--sessions",
            "5",
            "--from",
            "20",
            "--to",
            "10",
            "--step",
            "40",
            "--budget",
            "rtt.p99<1s",
        ],
    ] {
        let out = loadgen(&bad, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}

#[test]
fn a_sustained_breach_aborts_the_run_with_exit_3() {
    let url = server_exactly(Behaviour {
        ack_delay: Duration::from_millis(150),
        ..Behaviour::default()
    });
    let json = tmp("abort.json");
    let started = Instant::now();
    let out = loadgen(
        &[
            "--url",
            &url,
            "--sessions",
            "10",
            "--rate",
            "50",
            "--duration",
            "30s",
            "--threads",
            "1",
            "--no-replies",
            "--budget",
            "rtt.p99<50ms",
            "--abort-on-fail",
            "--abort-grace",
            "1s",
            "--abort-after",
            "1s",
            "--json",
            s(&json),
        ],
        Duration::from_secs(25),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "ended early: {:?}",
        started.elapsed()
    );
    assert!(stdout.contains("aborted: at"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let a = &v["aborted"];
    assert_eq!(a["budgets"][0], "rtt.p99<50ms");
    let (at, since) = (
        a["at_s"].as_f64().unwrap(),
        a["breach_since_s"].as_f64().unwrap(),
    );
    assert!(since >= 1.0 && at - since >= 1.0 && at <= 5.0, "{a}");
    assert!(
        v["measured_s"].as_f64().unwrap() <= at + 1e-9,
        "rates are over what ran"
    );
    assert_eq!(v["verdict"], "fail");
}

#[test]
fn three_indexed_job_shards_start_together_and_merge_from_a_directory() {
    let url = server();
    let dir = tmp("job");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // As a Kubernetes Indexed Job runs them: the same command, each pod
    // with its own JOB_COMPLETION_INDEX, started apart, stages together.
    let start_at = (std::time::SystemTime::now() + Duration::from_millis(2500))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let shards: Vec<_> = (0..3)
        .map(|i| {
            let json = dir.join(format!("shard-{i}.json"));
            let args: Vec<String> = [
                "--url",
                &url,
                "--sessions",
                "9",
                "--rate",
                "90",
                "--duration",
                "2s",
                "--threads",
                "1",
                "--no-replies",
                "--shard",
                "auto",
                "--start-at",
                &start_at,
                "--json",
                s(&json),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            let child = Command::new(BIN)
                .args(&args)
                .env("CI", "true")
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .env("LOADGEN_SHARD_COUNT", "3")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Pods start apart.
            std::thread::sleep(Duration::from_millis(200));
            child
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for mut child in shards {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                assert_eq!(
                    status.code(),
                    Some(0),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a shard ran past its deadline");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let parts: Vec<serde_json::Value> = (0..3)
        .map(|i| read(&dir.join(format!("shard-{i}.json"))))
        .collect();
    let indexes: Vec<u64> = parts
        .iter()
        .map(|r| r["shards"][0]["shard"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        indexes,
        [1, 2, 3],
        "JOB_COMPLETION_INDEX 0..2 are shards 1..3"
    );
    for r in &parts {
        assert_eq!(r["sessions"]["peak_open"], 3);
        assert!(
            r["warnings"].as_array().unwrap().is_empty(),
            "{}",
            r["warnings"]
        );
        // Stages began at --start-at on every shard, the sessions before it.
        let begin = start_at.parse::<u64>().unwrap();
        let stages = r["stages_started_at_unix_ms"].as_u64().unwrap();
        assert!(
            stages.abs_diff(begin) <= 5,
            "stages at {stages}, asked {begin}"
        );
        assert!(r["started_at_unix_ms"].as_u64().unwrap() < begin);
    }
    let merged = tmp("job-merged.json");
    let out = loadgen(
        &[
            "merge",
            s(&dir),
            "--budget",
            "sessions>=9",
            "--json",
            s(&merged),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let m = read(&merged);
    assert_eq!(m["shards"].as_array().unwrap().len(), 3);
    let sent = |r: &serde_json::Value| r["messages"]["sent"].as_u64().unwrap();
    assert_eq!(sent(&m), parts.iter().map(sent).sum::<u64>());
    // The series line up second by second: together they offered 90 a second.
    let series = m["series"].as_array().unwrap();
    assert!(series.len() >= 2, "{series:?}");
    for p in &series[..2] {
        let offered = p["offered"].as_f64().unwrap();
        assert!((offered - 90.0).abs() < 1e-6, "{p}");
        let sent = p["sent"].as_u64().unwrap();
        assert!((60..=120).contains(&sent), "{p}");
    }
    assert_eq!(
        m["stages"][0]["messages"]["sent"].as_u64().unwrap(),
        sent(&m)
    );
}

#[test]
fn a_trace_replays_each_message_at_its_time_on_its_session() {
    let url = server();
    let trace = tmp("trace.jsonl");
    std::fs::write(
        &trace,
        [
            r#"{"at_ms": 0, "text": "Hi", "session": "alice"}"#,
            r#"{"at_ms": 300, "text": "Do you ship to Canada?", "session": "bob"}"#,
            r#"{"at_ms": 1500, "text": "Where is my order?", "session": "alice"}"#,
            r#"{"at_ms": 1500, "text": "Hi", "session": "carol"}"#,
            r#"{"at_ms": 2200, "text": "Thanks", "session": "bob"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let json = tmp("trace.json");
    let started = Instant::now();
    let out = loadgen(
        &[
            "--url",
            &url,
            "--trace",
            s(&trace),
            "--threads",
            "2",
            "--no-pin",
            "--json",
            s(&json),
        ],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["messages"]["sent"], 5, "{stdout}");
    assert_eq!(v["messages"]["replied"], 5);
    assert_eq!(v["messages"]["errors"], 0);
    assert_eq!(v["sessions"]["attempted"], 3, "one session per name");
    assert_eq!(v["sessions"]["opened"], 3);
    // One stage as long as the trace and a second for the last answers.
    assert_eq!(v["scenario"]["stages"][0]["duration"], "3200ms");
    let series = v["series"].as_array().unwrap();
    let sent: Vec<u64> = series.iter().map(|p| p["sent"].as_u64().unwrap()).collect();
    assert_eq!(
        &sent[..3],
        &[2, 2, 1],
        "each message in the second it was due: {sent:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    for bad in [
        vec!["--url", url.as_str(), "--trace", s(&trace), "--rate", "3"],
        vec!["--url", url.as_str(), "--trace", s(&tmp("no-such.jsonl"))],
    ] {
        assert_eq!(
            loadgen(&bad, Duration::from_secs(10)).status.code(),
            Some(2),
            "{bad:?}"
        );
    }
}
