//! Measurements of the inference service (figures, not assertions).
//!
//! ```text
//! cargo run --release -p inference-client --example inference_bench -- batching
//! cargo run --release -p inference-client --example inference_bench -- overhead
//! cargo run --release -p inference-client --example inference_bench -- surge
//! ```
//!
//! - `batching`: closed loop, 64 requests always in flight, against the HTTP
//!   simulator (in a thread of this process) at a fixed KV capacity of 64:
//!   `max_batch` 1 against 16, chat streams against `/v1/completions` batches.
//! - `overhead`: the service's own cost per token: the CPU time of the
//!   `lc-inference` thread over the tokens it delivered, with a simulator that
//!   costs nothing (in-process) or runs in another thread (HTTP), and the
//!   `overhead` histogram the gateway exports.
//! - `surge`: open-loop Poisson arrivals at 10x what the in-process pool
//!   serves, with admission and with everything admitted: TTFT of what was
//!   admitted, refusals, goodput.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use inference_client::sim::server::{bind, serve, ServerConfig};
use inference_client::{
    Api, Backend, ChatMessage, EndpointConfig, Event, GenerateRequest, IoDriver, LatencyModel,
    Role, Service, ServiceConfig, SimOptions,
};

fn sim_thread(latency: LatencyModel) -> String {
    let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cfg = ServerConfig {
        latency,
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("sim".into())
        .spawn(move || serve(listener, cfg, IoDriver::Auto))
        .expect("spawn sim");
    format!("http://{addr}")
}

/// A short prompt (about 30 tokens): the figures are about decoding and
/// the service, not prefill.
fn question(i: u64) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You answer briefly."),
        ChatMessage::new(Role::User, format!("Where is my parcel number {i}?")),
    ]
}

/// CPU seconds of the thread named `name` in this process.
fn thread_cpu(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        return ticks / 100.0;
    }
    0.0
}

struct Run {
    requests: u64,
    tokens: u64,
    secs: f64,
    ttft: Histogram<u64>,
    cpu: f64,
    calls: u64,
    overhead_mean_us: u64,
}

/// Keeps `concurrency` requests in flight for `secs` seconds.
fn closed_loop(cfg: ServiceConfig, concurrency: u64, secs: f64, max_tokens: u32) -> Run {
    let service = Service::start(cfg).expect("start");
    let (tx, rx) = flume::unbounded();
    let client = service.client(Box::new(tx));
    let mut next = 0u64;
    let mut submit = |client: &inference_client::Client| {
        next += 1;
        client.submit(GenerateRequest::new(next, question(next), max_tokens));
    };
    // Warm up: one round.
    for _ in 0..concurrency {
        submit(&client);
    }
    let mut warm = 0;
    while warm < concurrency {
        if let Ok(ev) = rx.recv_timeout(Duration::from_secs(30)) {
            if ev.is_final() {
                warm += 1;
                submit(&client);
            }
        }
    }
    let cpu0 = thread_cpu("lc-inference");
    let calls0 = service.stats().upstream_calls.get();
    let ov0 = service.stats().overhead.snapshot();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let (mut requests, mut tokens) = (0u64, 0u64);
    let mut ttft = Histogram::<u64>::new(3).expect("histogram");
    while Instant::now() < end {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Event::Token { .. }) => tokens += 1,
            Ok(Event::Done { timings, .. }) => {
                requests += 1;
                let _ = ttft.record(timings.ttft.as_micros() as u64);
                submit(&client);
            }
            Ok(Event::Failed { error, .. }) => {
                eprintln!("failed: {error}");
                submit(&client);
            }
            Ok(_) => {}
            Err(_) => panic!("stalled"),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let ov1 = service.stats().overhead.snapshot();
    let n = (ov1.count - ov0.count).max(1);
    Run {
        requests,
        tokens,
        secs,
        ttft,
        cpu: thread_cpu("lc-inference") - cpu0,
        calls: service.stats().upstream_calls.get() - calls0,
        overhead_mean_us: (ov1.sum_us - ov0.sum_us) / n,
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn print_run(label: &str, r: &Run) {
    println!(
        "{label:<44} {:>7.0} tok/s {:>6.1} req/s  ttft p50 {:>6.1} ms p99 {:>6.1} ms  calls {:>5}  seq/call {:>4.1}  svc cpu {:>5.2} us/token  overhead {:>4} us/req",
        r.tokens as f64 / r.secs,
        r.requests as f64 / r.secs,
        ms(r.ttft.value_at_quantile(0.5)),
        ms(r.ttft.value_at_quantile(0.99)),
        r.calls,
        r.requests as f64 / r.calls.max(1) as f64,
        r.cpu * 1e6 / r.tokens.max(1) as f64,
        r.overhead_mean_us,
    );
}

fn batching() {
    println!("closed loop, 64 in flight, HTTP simulator in a thread (KV capacity 64, 20 ms step, +1.5%/seq), 64-token answers:");
    let url = sim_thread(LatencyModel::default());
    for (api, max_batch) in [
        (Api::Chat, 1),
        (Api::Chat, 16),
        (Api::Completions, 1),
        (Api::Completions, 16),
    ] {
        let mut ep = EndpointConfig::new(url.clone());
        ep.api = api;
        ep.max_sequences = 64;
        let cfg = ServiceConfig {
            max_batch,
            max_wait: Duration::from_millis(2),
            health_interval: Duration::ZERO,
            ..ServiceConfig::with_backend(Backend::Endpoints(vec![ep]))
        };
        let r = closed_loop(cfg, 64, 8.0, 64);
        print_run(&format!("{api:?} api, max_batch {max_batch}"), &r);
    }
    println!("the simulator alone: batch 1 vs batch 16 vs 64 (model arithmetic):");
    let m = LatencyModel::default();
    for n in [1, 16, 64] {
        println!(
            "  {n:>2} sequences: step {:>5.1} ms, {:>6.0} tokens/s",
            m.decode(n).as_secs_f64() * 1e3,
            m.decode_throughput(n)
        );
    }
    for concurrency in [1u64, 16] {
        let cfg = ServiceConfig {
            health_interval: Duration::ZERO,
            ..ServiceConfig::with_backend(Backend::Endpoints(vec![EndpointConfig::new(
                url.clone(),
            )]))
        };
        let r = closed_loop(cfg, concurrency, 6.0, 64);
        print_run(&format!("measured over HTTP, {concurrency} in flight"), &r);
    }
}

fn overhead(only_http: bool) {
    println!("service cost per token (CPU time of the lc-inference thread / tokens delivered):");
    let instant = SimOptions {
        latency: LatencyModel::instant(),
        ..Default::default()
    };
    for max_batch in [1, 16] {
        if only_http {
            break;
        }
        let cfg = ServiceConfig {
            max_batch,
            max_wait: Duration::ZERO,
            ..ServiceConfig::with_backend(Backend::InProcess(instant.clone()))
        };
        let r = closed_loop(cfg, 64, 5.0, 64);
        print_run(
            &format!("in-process, zero-cost model, max_batch {max_batch}"),
            &r,
        );
    }
    let fast = LatencyModel {
        decode_step: Duration::from_millis(2),
        prefill_us_per_token: 0.0,
        ..Default::default()
    };
    let url = sim_thread(fast);
    for api in [Api::Chat, Api::Completions] {
        let mut ep = EndpointConfig::new(url.clone());
        ep.api = api;
        let cfg = ServiceConfig {
            max_batch: 16,
            health_interval: Duration::ZERO,
            ..ServiceConfig::with_backend(Backend::Endpoints(vec![ep]))
        };
        let r = closed_loop(cfg, 64, 5.0, 64);
        print_run(&format!("HTTP sim (2 ms steps), {api:?} api"), &r);
    }
}

/// Open-loop Poisson arrivals at `rate` per second for `secs`.
fn surge_run(admission: bool, rate: f64, secs: f64) {
    let opts = SimOptions {
        latency: LatencyModel {
            kv_capacity: 16,
            ..Default::default()
        },
        ..Default::default()
    };
    let cfg = ServiceConfig {
        ttft_budget: if admission {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3600)
        },
        queue_capacity: 1_000_000,
        request_deadline: Duration::from_secs(120),
        ..ServiceConfig::with_backend(Backend::InProcess(opts))
    };
    let service = Service::start(cfg).expect("start");
    let (tx, rx) = flume::unbounded();
    let client = service.client(Box::new(tx));
    let mut rng = fastrand::Rng::with_seed(1);
    let t0 = Instant::now();
    let mut due = t0;
    let mut id = 0u64;
    let mut admitted = 0u64;
    let mut refused = 0u64;
    let mut ttft = Histogram::<u64>::new(3).expect("histogram");
    let mut done = 0u64;
    let mut good = 0u64;
    let mut predictions = std::collections::HashMap::new();
    let mut errors = Histogram::<u64>::new(3).expect("histogram");
    let mut under = 0u64;
    let end = t0 + Duration::from_secs_f64(secs);
    let drain = |until: Instant,
                 ttft: &mut Histogram<u64>,
                 done: &mut u64,
                 good: &mut u64,
                 seen: &mut Vec<(u64, Duration)>| loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        match rx.recv_timeout(until - now) {
            Ok(Event::Done { id, timings, .. }) => {
                seen.push((id, timings.ttft));
                *done += 1;
                let _ = ttft.record(timings.ttft.as_micros() as u64);
                if timings.ttft <= Duration::from_secs(1) {
                    *good += 1;
                }
            }
            Ok(Event::Failed { error, .. }) => eprintln!("failed: {error}"),
            Ok(_) => {}
            Err(_) => break,
        }
    };
    let mut seen = Vec::new();
    while due < end {
        drain(due, &mut ttft, &mut done, &mut good, &mut seen);
        id += 1;
        let messages = question(id);
        let tokens = inference_client::count_prompt_tokens(&messages);
        let ask = inference_client::Ask::tokens(tokens);
        let predicted = client.predicted_ttft(ask);
        match client.admit(ask) {
            Ok(place) => {
                admitted += 1;
                predictions.insert(
                    id,
                    (
                        predicted,
                        Instant::now().saturating_duration_since(due),
                        client.admission_snapshot(),
                    ),
                );
                let mut r = GenerateRequest::new(id, messages, 256);
                r.submitted = due; // open model: counted from when it was due
                client.submit_admitted(r, place);
            }
            Err(_) => refused += 1,
        }
        let gap = -(1.0 - rng.f64()).ln() / rate;
        due += Duration::from_secs_f64(gap);
    }
    while done < admitted {
        let before = done;
        drain(
            Instant::now() + Duration::from_secs(5),
            &mut ttft,
            &mut done,
            &mut good,
            &mut seen,
        );
        if done == before {
            break;
        }
    }
    let mut late = Histogram::<u64>::new(3).expect("histogram");
    for (id, actual) in seen {
        if let Some((predicted, lateness, snap)) = predictions.get(&id) {
            let _ = late.record(lateness.as_micros() as u64);
            if actual > *predicted + Duration::from_millis(200) && std::env::var("DEBUG").is_ok() {
                eprintln!("id {id} predicted {predicted:?} actual {actual:?} {snap:?}");
            }
            if actual > *predicted {
                under += 1;
                let _ = errors.record((actual - *predicted).as_micros() as u64);
            }
        }
    }
    if admission {
        println!(
            "  prediction low for {under} of {admitted}: by p50 {:.1} ms p99 {:.1} ms; submit lateness p99 {:.2} ms",
            ms(errors.value_at_quantile(0.5)),
            ms(errors.value_at_quantile(0.99)),
            ms(late.value_at_quantile(0.99)),
        );
    }
    println!(
        "{:<22} offered {:>5} ({rate:.0}/s)  admitted {:>5}  refused {:>5}  ttft of admitted p50 {:>7.1} ms p99 {:>7.1} ms max {:>7.1} ms  goodput (ttft <= 1 s) {:>5.1}/s",
        if admission { "admission on (1 s)" } else { "admit everything" },
        id,
        admitted,
        refused,
        ms(ttft.value_at_quantile(0.5)),
        ms(ttft.value_at_quantile(0.99)),
        ms(ttft.max()),
        good as f64 / secs,
    );
}

fn surge() {
    // 16 sequences of ~25-token answers at 20-25 ms a step: about 25
    // requests a second. Baseline 2.5/s; 10x = 25/s... offered here at 10x
    // of a baseline that already half-loads the pool: 120/s.
    let m = LatencyModel {
        kv_capacity: 16,
        ..Default::default()
    };
    let per_seq = m.decode(16).as_secs_f64() * 25.0;
    let capacity = 16.0 / per_seq;
    println!(
        "in-process pool of 16 sequences: about {capacity:.0} requests/s; offering 10x a baseline of half that ({:.0}/s) for 10 s:",
        capacity * 5.0
    );
    surge_run(true, capacity * 5.0, 10.0);
    surge_run(false, capacity * 5.0, 10.0);
    println!("the baseline itself ({:.0}/s):", capacity * 0.5);
    surge_run(true, capacity * 0.5, 10.0);
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("batching") => batching(),
        Some("overhead") => overhead(std::env::args().nth(2).as_deref() == Some("http")),
        Some("surge") => surge(),
        _ => {
            eprintln!("usage: inference_bench batching|overhead|surge");
            std::process::exit(2);
        }
    }
}
