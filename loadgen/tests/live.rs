//! Live metrics end to end: a real short run scraped on `/metrics` while it
//! lasts (through the binary, whose stderr says where), a run pushing
//! remote write to a receiver here that decodes it with loadgen's own prost
//! types, and the Grafana dashboard checked against the series loadgen
//! exports. Every wait has a deadline.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::live::exposition::{self, Digest, RunInfo, StageSpan, Totals};
use loadgen::live::remote_write::{self, WriteRequest};
use loadgen::metrics::{ErrorKind, Figure, Mark, Recorder};
use loadgen::testserver::{self, script::Behaviour, Config};

const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

fn server() -> String {
    let addr = testserver::spawn(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        behaviour: Behaviour {
            ack_delay: Duration::from_millis(1),
            tokens: 2,
            token_interval: Duration::from_millis(2),
            ..Behaviour::default()
        },
        epoll: false,
    })
    .unwrap();
    format!("ws://{addr}/ws?site=demo")
}

/// One sample line of the text format.
#[derive(Debug)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// Parses the text format strictly: every line a `# HELP`/`# TYPE`
/// comment or `name{label="value",...} value`; panics otherwise.
fn parse_exposition(text: &str) -> Vec<Line> {
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kw, name) = (w.next().unwrap(), w.next().unwrap());
            assert!(is_name(name), "{line}");
            match kw {
                "HELP" => assert!(w.next().is_some(), "{line}"),
                "TYPE" => assert!(
                    matches!(w.next(), Some("counter" | "gauge" | "histogram")),
                    "{line}"
                ),
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert!(is_name(&key), "label name {key:?} in {line}");
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut v = String::new();
                    loop {
                        match chars.next().unwrap_or_else(|| panic!("{line}")) {
                            '"' => break,
                            '\\' => match chars.next() {
                                Some('n') => v.push('\n'),
                                Some(c @ ('\\' | '"')) => v.push(c),
                                other => panic!("bad escape {other:?} in {line}"),
                            },
                            c => v.push(c),
                        }
                    }
                    labels.insert(key, v);
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        Some(c) => panic!("{c:?} after a label in {line}"),
                    }
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "{line}");
        out.push(Line {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// `GET path` on `addr`: status, head and body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_string()))
}

fn value(lines: &[Line], name: &str) -> Option<f64> {
    lines.iter().find(|l| l.name == name).map(|l| l.value)
}

#[test]
fn metrics_are_scraped_while_a_run_lasts_and_counters_grow() {
    let url = server();
    let mut child = Command::new(BIN)
        .args([
            "--url",
            &url,
            "--sessions",
            "5",
            "--rate",
            "50",
            "--duration",
            "3s",
            "--threads",
            "1",
            "--no-pin",
            "--slo",
            "rtt:1s",
            "--metrics-listen",
            "127.0.0.1:0",
            "--run-id",
            "scrape-1",
        ])
        .env("CI", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = flume::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: SocketAddr = loop {
        let line = lines
            .recv_deadline(deadline)
            .expect("loadgen says where its metrics are");
        if let Some(rest) = line.strip_prefix("loadgen: metrics at http://") {
            break rest.strip_suffix("/metrics").unwrap().parse().unwrap();
        }
    };
    assert_ne!(addr.port(), 0, "the bound port, not the one asked for");

    // Scrape until the sent counter has been seen to grow, or the run ends.
    let mut seen: Vec<f64> = Vec::new();
    let mut last_text = String::new();
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        let Some((status, head, body)) = get(addr, "/metrics") else {
            break;
        };
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let parsed = parse_exposition(&body);
        for l in &parsed {
            assert_eq!(l.labels.get("run").map(String::as_str), Some("scrape-1"));
            assert!(!l.labels.contains_key("shard"), "one shard is not labelled");
        }
        let sent = value(&parsed, "loadgen_messages_sent_total").unwrap();
        if seen.last() != Some(&sent) {
            seen.push(sent);
        }
        last_text = body;
        if seen.iter().filter(|&&v| v > 0.0).count() >= 2 {
            break;
        }
        // Polling: the run publishes once a second.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "counters only grow: {seen:?}"
    );
    assert!(
        seen.iter().filter(|&&v| v > 0.0).count() >= 2,
        "the sent counter grew during the run: {seen:?}"
    );
    let parsed = parse_exposition(&last_text);
    assert!(value(&parsed, "loadgen_sessions_open").unwrap() > 0.0);
    let rtt_count = value(&parsed, "loadgen_rtt_seconds_count").unwrap();
    let inf = parsed
        .iter()
        .find(|l| {
            l.name == "loadgen_rtt_seconds_bucket"
                && l.labels.get("le").map(String::as_str) == Some("+Inf")
        })
        .unwrap();
    assert_eq!(inf.value, rtt_count, "+Inf bucket is the count");
    let buckets: Vec<f64> = parsed
        .iter()
        .filter(|l| l.name == "loadgen_rtt_seconds_bucket")
        .map(|l| l.value)
        .collect();
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "cumulative buckets"
    );
    assert!(parsed.iter().any(|l| l.name == "loadgen_rtt_seconds_last"
        && l.labels.get("quantile").map(String::as_str) == Some("0.99")));
    if child.try_wait().unwrap().is_none() {
        let (status, _, _) = get(addr, "/other").unwrap();
        assert_eq!(status, 404);
    }

    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadgen ran past its deadline");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A push as the receiver got it.
struct Push {
    head: BTreeMap<String, String>,
    target: String,
    req: WriteRequest,
}

/// A remote write receiver: decodes every POST and answers 204.
fn receiver() -> (SocketAddr, flume::Receiver<Push>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = flume::unbounded();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let push = loop {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "closed before a whole request");
                buf.extend_from_slice(&chunk[..n]);
                let mut fields = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut fields);
                let httparse::Status::Complete(len) = req.parse(&buf).unwrap() else {
                    continue;
                };
                let head: BTreeMap<String, String> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let cl: usize = head["content-length"].parse().unwrap();
                if buf.len() < len + cl {
                    continue;
                }
                assert_eq!(req.method, Some("POST"));
                break Push {
                    target: req.path.unwrap().to_string(),
                    req: remote_write::decode(&buf[len..len + cl]).unwrap(),
                    head,
                };
            };
            // Handed on before the answer: once the pusher has its 204,
            // the test sees the push.
            if tx.send(push).is_err() {
                break;
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .unwrap();
        }
    });
    (addr, rx)
}

fn label<'a>(ts: &'a remote_write::TimeSeries, name: &str) -> Option<&'a str> {
    ts.labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// A series' identity: every label, `__name__` included.
fn key(ts: &remote_write::TimeSeries) -> String {
    ts.labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn remote_write_pushes_the_same_series_with_counters_that_only_grow() {
    let url = server();
    let (addr, pushes) = receiver();
    let json = std::env::temp_dir().join(format!("loadgen-live-{}.json", std::process::id()));
    let rw = format!("http://{addr}/api/v1/write");
    let code = loadgen::cli::main(
        [
            "loadgen",
            "--url",
            &url,
            "--sessions",
            "10",
            "--rate",
            "60",
            "--duration",
            "3s",
            "--warmup",
            "1s",
            "--shard",
            "1/2",
            "--threads",
            "1",
            "--no-pin",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
            "--prometheus-remote-write",
            &rw,
            "--prometheus-remote-write-interval",
            "1s",
            "--prometheus-remote-write-header",
            "X-Scope-OrgID: tenant-1",
            "--run-id",
            "rw-1",
        ]
        .map(Into::into),
    );
    assert_eq!(code, 0);
    // The final push happened before cli::main returned; the channel holds
    // every push in order.
    let got: Vec<Push> = pushes.try_iter().collect();
    assert!(
        got.len() >= 3,
        "a push a second and a final one, got {}",
        got.len()
    );

    let mut last: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    let mut prev_ts = i64::MIN;
    for p in &got {
        assert_eq!(p.target, "/api/v1/write");
        assert_eq!(p.head["content-encoding"], "snappy");
        assert_eq!(p.head["content-type"], "application/x-protobuf");
        assert_eq!(p.head["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(p.head["x-scope-orgid"], "tenant-1");
        let counters: BTreeSet<&str> = p
            .req
            .metadata
            .iter()
            .filter(|m| m.kind == remote_write::MetricType::Counter as i32)
            .map(|m| m.metric_family_name.as_str())
            .collect();
        let ts0 = p.req.timeseries[0].samples[0].timestamp;
        assert!(ts0 > prev_ts, "timestamps move forward");
        prev_ts = ts0;
        for ts in &p.req.timeseries {
            assert_eq!(ts.labels[0].name, "__name__");
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "labels sorted");
            assert_eq!(label(ts, "run"), Some("rw-1"));
            assert_eq!(label(ts, "shard"), Some("1/2"));
            assert_eq!(ts.samples.len(), 1);
            let s = &ts.samples[0];
            assert_eq!(s.timestamp, ts0, "one push, one timestamp");
            let name = label(ts, "__name__").unwrap();
            let cumulative = counters.contains(name)
                || name.ends_with("_bucket")
                || name.ends_with("_count")
                || name.ends_with("_sum");
            if let Some(&(_, before)) = last.get(&key(ts)) {
                if cumulative {
                    assert!(s.value >= before, "{} went down", key(ts));
                }
            }
            last.insert(key(ts), (s.timestamp, s.value));
        }
    }

    let final_req = &got.last().unwrap().req;
    let names: BTreeSet<&str> = final_req
        .timeseries
        .iter()
        .filter_map(|ts| label(ts, "__name__"))
        .collect();
    for n in [
        "loadgen_run_info",
        "loadgen_stage",
        "loadgen_messages_sent_total",
        "loadgen_messages_acked_total",
        "loadgen_messages_replied_total",
        "loadgen_messages_good_total",
        "loadgen_busy_total",
        "loadgen_errors_total",
        "loadgen_output_tokens_total",
        "loadgen_sessions_open",
        "loadgen_offered_rate",
        "loadgen_rtt_seconds_bucket",
        "loadgen_rtt_seconds_sum",
        "loadgen_rtt_seconds_count",
        "loadgen_ttft_seconds_bucket",
        "loadgen_reply_seconds_bucket",
    ] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
    let kinds: BTreeSet<&str> = final_req
        .timeseries
        .iter()
        .filter(|ts| label(ts, "__name__") == Some("loadgen_errors_total"))
        .filter_map(|ts| label(ts, "kind"))
        .collect();
    assert!(kinds.contains("timeout") && !kinds.contains("busy"));

    // The final push holds the whole run, warm-up excluded, as the report does.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let final_value = |n: &str| {
        final_req
            .timeseries
            .iter()
            .find(|ts| label(ts, "__name__") == Some(n))
            .map(|ts| ts.samples[0].value)
            .unwrap()
    };
    let sent = report["messages"]["sent"].as_f64().unwrap();
    assert!(sent > 0.0);
    assert_eq!(final_value("loadgen_messages_sent_total"), sent);
    assert_eq!(
        final_value("loadgen_messages_acked_total"),
        report["messages"]["acked"].as_f64().unwrap()
    );
    assert_eq!(
        final_value("loadgen_rtt_seconds_count"),
        report["metrics"]["rtt"]["count"].as_f64().unwrap()
    );
}

/// Every series name the exporter can produce: families of totals in
/// which every latency series has samples.
fn exported_names() -> BTreeSet<String> {
    let mut r = Recorder::default();
    for f in Figure::ALL {
        r.record(Mark::Stage(0), f, 1_000);
    }
    r.record_lag(10);
    r.error_at(Mark::Stage(0), ErrorKind::Timeout);
    let mut t = Totals::default();
    t.add(&Digest::of(&r.take(), 1, 1.0, Some(0)));
    let info = RunInfo {
        run: "d".into(),
        shard: None,
        url: "ws://h/ws".into(),
        model: "open".into(),
        stages: vec![StageSpan {
            name: "s".into(),
            end_s: 1.0,
        }],
    };
    let mut names = BTreeSet::new();
    for f in exposition::families(&t, &info) {
        names.insert(f.name.clone());
        for s in f.samples {
            names.insert(s.name);
        }
    }
    names
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_only_series_loadgen_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana/loadgen-dashboard.json"
    );
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is valid JSON");
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("run")["type"], "query");

    let exported = exported_names();
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let mut exprs = Vec::new();
        collect_exprs(&p["targets"], &mut exprs);
        assert!(!exprs.is_empty(), "{} has no query", p["title"]);
        for e in &exprs {
            assert!(e.contains("run=~\"$run\""), "{e} ignores the run variable");
        }
    }
    let mut all = Vec::new();
    collect_exprs(&d, &mut all);
    // Template queries name metrics too.
    for v in vars {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            all.push(q.to_string());
        }
    }
    let mut referenced = BTreeSet::new();
    for e in &all {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("loadgen_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            referenced.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    assert!(referenced.len() >= 10, "{referenced:?}");
    let unknown: Vec<_> = referenced.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries series loadgen does not export: {unknown:?}"
    );
}
