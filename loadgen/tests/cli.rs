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
