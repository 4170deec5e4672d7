//! The service against real `inference-sim` processes over HTTP: streaming,
//! batching into one `/v1/completions` call, cancellation upstream, failover,
//! deadlines, a pool that is down, and every upstream fault ending in exactly
//! one final event. Plus the in-process backend.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{collect, Sim, WAIT};
use inference_client::{
    Api, Backend, ChatMessage, Client, EndpointConfig, Event, FinishReason, GenerateRequest,
    InferenceError, Role, Service, ServiceConfig, SimOptions,
};

fn endpoints(eps: Vec<EndpointConfig>, driver: &str) -> ServiceConfig {
    ServiceConfig {
        io_driver: driver.parse().unwrap_or_default(),
        health_interval: Duration::ZERO,
        ..ServiceConfig::with_backend(Backend::Endpoints(eps))
    }
}

fn start(cfg: ServiceConfig) -> (Service, Client, flume::Receiver<Event>) {
    let service = Service::start(cfg).expect("service starts");
    let (tx, rx) = flume::unbounded();
    let client = service.client(Box::new(tx));
    (service, client, rx)
}

fn ask(id: u64, question: &str) -> GenerateRequest {
    GenerateRequest::new(
        id,
        vec![
            ChatMessage::new(Role::System, "You answer briefly."),
            ChatMessage::new(Role::User, question),
        ],
        64,
    )
}

fn streaming_works(driver: &str) {
    let sim = Sim::start(&["--decode-step-ms", "2", "--io-driver", driver]);
    let (service, client, rx) = start(endpoints(vec![EndpointConfig::new(sim.url())], driver));
    assert_eq!(service.driver().as_str() == "epoll", driver == "epoll");
    let mut stash = Vec::new();
    for id in 1..=3 {
        client.submit(ask(id, "where is my parcel?"));
        let o = collect(&rx, id, &mut stash);
        assert!(
            o.text
                .ends_with("You wrote: \u{201c}where is my parcel?\u{201d}"),
            "{}",
            o.text
        );
        match o.last {
            Event::Done {
                finish_reason,
                usage,
                timings,
                ..
            } => {
                assert_eq!(finish_reason, FinishReason::Stop);
                assert_eq!(usage.completion_tokens as usize, o.tokens);
                assert!(usage.prompt_tokens > 0);
                assert!(timings.ttft <= timings.total);
                assert_eq!(timings.attempts, 1);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sim.stat("chat_requests"), 3);
    assert_eq!(sim.stat("streams_completed"), 3);
    let st = service.stats();
    assert_eq!(st.completed.get(), 3);
    assert_eq!(st.ttft.snapshot().count, 3);
    assert_eq!(st.overhead.snapshot().count, 3);
}

both_drivers!(streaming_works);

#[test]
fn a_batch_rides_in_one_completions_request() {
    let sim = Sim::start(&["--decode-step-ms", "2"]);
    let mut ep = EndpointConfig::new(sim.url());
    ep.api = Api::Completions;
    let cfg = ServiceConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(200),
        ..endpoints(vec![ep], "auto")
    };
    let (service, client, rx) = start(cfg);
    for id in 1..=5 {
        client.submit(ask(id, &format!("question number {id}")));
    }
    let mut stash = Vec::new();
    for id in 1..=5 {
        let o = collect(&rx, id, &mut stash);
        assert!(matches!(o.last, Event::Done { .. }), "{:?}", o.last);
        assert!(
            o.text.contains(&format!("question number {id}")),
            "request {id} got {:?}",
            o.text
        );
    }
    assert_eq!(sim.stat("completion_requests"), 1);
    assert_eq!(sim.stat("largest_batch"), 5);
    assert_eq!(service.stats().upstream_calls.get(), 1);
}

#[test]
fn cancelling_closes_the_upstream_stream() {
    let sim = Sim::start(&["--decode-step-ms", "20"]);
    let (_service, client, rx) = start(endpoints(vec![EndpointConfig::new(sim.url())], "auto"));
    client.submit(ask(1, "a question with a long answer"));
    match rx.recv_timeout(WAIT) {
        Ok(Event::Token { id: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    client.cancel(1);
    let mut last = None;
    while let Ok(ev) = rx.recv_timeout(WAIT) {
        if ev.is_final() {
            last = Some(ev);
            break;
        }
    }
    assert_eq!(
        last,
        Some(Event::Failed {
            id: 1,
            error: InferenceError::Cancelled
        })
    );
    assert_eq!(sim.wait_stat("streams_cancelled", 1), 1);
    assert_eq!(sim.stat("streams_completed"), 0);
    assert_eq!(sim.stats()["running"], 0, "the sequence left the KV cache");
}

#[test]
fn a_batched_request_closes_once_all_its_members_are_gone() {
    let sim = Sim::start(&["--decode-step-ms", "20"]);
    let mut ep = EndpointConfig::new(sim.url());
    ep.api = Api::Completions;
    let cfg = ServiceConfig {
        max_batch: 2,
        max_wait: Duration::from_millis(500),
        ..endpoints(vec![ep], "auto")
    };
    let (_service, client, rx) = start(cfg);
    client.submit(ask(1, "first"));
    client.submit(ask(2, "second"));
    // Both stream; cancelling one leaves the call open for the other.
    let mut seen = [false; 2];
    while !(seen[0] && seen[1]) {
        if let Ok(Event::Token { id, .. }) = rx.recv_timeout(WAIT) {
            seen[id as usize - 1] = true;
        } else {
            panic!("no tokens");
        }
    }
    client.cancel(1);
    let mut stash = Vec::new();
    let o = collect(&rx, 1, &mut stash);
    assert!(matches!(
        o.last,
        Event::Failed {
            error: InferenceError::Cancelled,
            ..
        }
    ));
    // Request 2 still streams over the same call.
    let before = stash.len();
    let more = rx.recv_timeout(WAIT).expect("request 2 goes on");
    assert_eq!(more.id(), 2, "{before} stashed");
    assert_eq!(sim.stat("streams_cancelled"), 0);
    client.cancel(2);
    assert_eq!(sim.wait_stat("streams_cancelled", 1), 1);
    assert_eq!(sim.stat("completion_requests"), 1);
}

fn free_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

#[test]
fn an_unreachable_pool_is_unavailable_at_once() {
    let (_service, client, rx) = start(endpoints(
        vec![EndpointConfig::new(free_port_url())],
        "auto",
    ));
    let t = Instant::now();
    client.submit(ask(1, "anyone?"));
    let o = collect(&rx, 1, &mut Vec::new());
    assert_eq!(
        o.last,
        Event::Failed {
            id: 1,
            error: InferenceError::Unavailable
        }
    );
    eprintln!("unavailable after {:?}", t.elapsed());
}

#[test]
fn a_killed_endpoint_is_unavailable_and_its_breaker_opens() {
    let mut sim = Sim::start(&["--decode-step-ms", "1"]);
    let (service, client, rx) = start(endpoints(vec![EndpointConfig::new(sim.url())], "auto"));
    let mut stash = Vec::new();
    client.submit(ask(1, "hello"));
    assert!(matches!(
        collect(&rx, 1, &mut stash).last,
        Event::Done { .. }
    ));
    sim.kill();
    // The idle keep-alive connection is dead: retried on a new one, refused.
    for id in 2..=5 {
        client.submit(ask(id, "still there?"));
        let o = collect(&rx, id, &mut stash);
        assert_eq!(
            o.last,
            Event::Failed {
                id,
                error: InferenceError::Unavailable
            }
        );
    }
    assert_eq!(service.stats().endpoints_up.get(), 0);
    assert!(
        client.admit(inference_client::Ask::tokens(10)).is_ok(),
        "down is not busy: admitted, then unavailable"
    );
}

#[test]
fn failover_to_the_second_endpoint_when_the_first_refuses() {
    let refusing = Sim::start(&["--http-status", "503"]);
    let healthy = Sim::start(&["--decode-step-ms", "1"]);
    let (service, client, rx) = start(endpoints(
        vec![
            EndpointConfig::new(refusing.url()),
            EndpointConfig::new(healthy.url()),
        ],
        "auto",
    ));
    client.submit(ask(1, "hello"));
    let o = collect(&rx, 1, &mut Vec::new());
    match o.last {
        Event::Done { timings, .. } => {
            assert_eq!(timings.attempts, 2);
            assert_eq!(timings.endpoint, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(refusing.stat("faults_injected"), 1);
    assert_eq!(healthy.stat("chat_requests"), 1);
    assert_eq!(service.stats().failovers.get(), 1);
}

#[test]
fn a_stream_that_never_sends_a_token_hits_the_deadline() {
    let sim = Sim::start(&["--stall-after-tokens", "0"]);
    let (service, client, rx) = start(endpoints(vec![EndpointConfig::new(sim.url())], "auto"));
    let mut req = ask(1, "hello?");
    req.deadline = Some(Instant::now() + Duration::from_millis(300));
    client.submit(req);
    let o = collect(&rx, 1, &mut Vec::new());
    assert_eq!(
        o.last,
        Event::Failed {
            id: 1,
            error: InferenceError::Deadline
        }
    );
    assert_eq!(service.stats().expired.get(), 1);
    // The stalled stream was closed from our side.
    assert_eq!(sim.wait_stat("streams_cancelled", 1), 1);
}

#[test]
fn every_upstream_fault_ends_in_one_final_event() {
    let sim = Sim::start(&["--decode-step-ms", "2"]);
    let cases: &[(&str, &str)] = &[
        (r#"{"garbage":true}"#, "unavailable"),
        (r#"{"http_status":500}"#, "unavailable"),
        (r#"{"http_status":429,"retry_after_secs":1}"#, "unavailable"),
        (r#"{"http_status":503,"retry_after_secs":2}"#, "unavailable"),
        (r#"{"drop_after_tokens":0}"#, "unavailable"),
        (r#"{"drop_after_tokens":3}"#, "upstream"),
        (r#"{"stall_after_tokens":3}"#, "deadline"),
        (r#"{"fail_rate":1.0}"#, "unavailable"),
        ("{}", "done"),
    ];
    for (faults, want) in cases {
        sim.faults(faults);
        let (_service, client, rx) = start(endpoints(vec![EndpointConfig::new(sim.url())], "auto"));
        let mut req = ask(1, "fault?");
        req.deadline = Some(Instant::now() + Duration::from_millis(500));
        client.submit(req);
        let o = collect(&rx, 1, &mut Vec::new());
        let got = match &o.last {
            Event::Done { .. } => "done",
            Event::Failed { error, .. } => match error {
                InferenceError::Unavailable => "unavailable",
                InferenceError::Upstream(_) => "upstream",
                InferenceError::Deadline => "deadline",
                _ => "other",
            },
            _ => "other",
        };
        assert_eq!(got, *want, "faults {faults}: {:?}", o.last);
        if *want == "upstream" {
            assert_eq!(o.tokens, 3, "the tokens before the reset were delivered");
        }
        // Nothing more for this request.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }
}

#[test]
fn embeddings_are_batched_into_one_request() {
    let sim = Sim::start(&[]);
    let cfg = ServiceConfig {
        max_wait: Duration::from_millis(100),
        ..endpoints(vec![EndpointConfig::new(sim.url())], "auto")
    };
    let (_service, client, rx) = start(cfg);
    client.embed(1, vec!["where is my parcel".into(), "opening hours".into()]);
    client.embed(2, vec!["Where is my parcel?".into()]);
    let mut got = std::collections::HashMap::new();
    while got.len() < 2 {
        match rx.recv_timeout(WAIT) {
            Ok(Event::Embeddings { id, vectors }) => {
                got.insert(id, vectors);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got[&1].len(), 2);
    assert_eq!(got[&2].len(), 1);
    assert_eq!(got[&1][0].len(), 384);
    let cos: f32 = got[&1][0].iter().zip(&got[&2][0]).map(|(a, b)| a * b).sum();
    assert!(cos > 0.99, "{cos}");
    assert_eq!(sim.stat("embedding_requests"), 1);
}

#[test]
fn hundreds_of_concurrent_streams() {
    let sim = Sim::start(&["--decode-step-ms", "5", "--kv-capacity", "300"]);
    let mut ep = EndpointConfig::new(sim.url());
    ep.max_sequences = 300;
    let (_service, client, rx) = start(endpoints(vec![ep], "auto"));
    for id in 1..=300 {
        let mut r = ask(id, "load");
        r.max_tokens = 8;
        client.submit(r);
    }
    let mut done = 0;
    while done < 300 {
        match rx.recv_timeout(WAIT) {
            Ok(Event::Done { .. }) => done += 1,
            Ok(Event::Token { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sim.stat("streams_completed"), 300);
    assert!(sim.stat("peak_running") >= 100, "{}", sim.stats());
}

fn in_process(driver: &str) {
    let mut opts = SimOptions::default();
    opts.latency.decode_step = Duration::from_millis(1);
    let cfg = ServiceConfig {
        io_driver: driver.parse().unwrap_or_default(),
        ..ServiceConfig::with_backend(Backend::InProcess(opts))
    };
    let (service, client, rx) = start(cfg);
    let mut stash = Vec::new();
    for id in 1..=4 {
        client.submit(ask(id, "in process?"));
    }
    for id in 1..=4 {
        let o = collect(&rx, id, &mut stash);
        assert!(o.text.contains("in process?"), "{}", o.text);
        match o.last {
            Event::Done { usage, .. } => assert_eq!(usage.completion_tokens as usize, o.tokens),
            other => panic!("{other:?}"),
        }
    }
    client.embed(9, vec!["a".into()]);
    let o = collect(&rx, 9, &mut stash);
    assert!(matches!(o.last, Event::Embeddings { ref vectors, .. } if vectors.len() == 1));
    assert_eq!(service.stats().completed.get(), 5);
    service.shutdown();
}

both_drivers!(in_process);

#[test]
fn shutdown_fails_what_is_pending() {
    let sim = Sim::start(&["--stall-after-tokens", "1"]);
    let (service, client, rx) = start(endpoints(vec![EndpointConfig::new(sim.url())], "auto"));
    client.submit(ask(1, "hang"));
    match rx.recv_timeout(WAIT) {
        Ok(Event::Token { .. }) => {}
        other => panic!("{other:?}"),
    }
    service.shutdown();
    let o = collect(&rx, 1, &mut Vec::new());
    assert_eq!(
        o.last,
        Event::Failed {
            id: 1,
            error: InferenceError::Shutdown
        }
    );
    // A client outliving its service fails at once, never hangs.
    client.submit(ask(2, "late"));
    let o = collect(&rx, 2, &mut Vec::new());
    assert!(matches!(
        o.last,
        Event::Failed {
            error: InferenceError::Shutdown,
            ..
        }
    ));
}

#[test]
fn admission_refuses_at_ten_times_capacity() {
    // A tiny in-process pool: 4 sequences, 20 ms steps, ~25-token answers,
    // so about 8 sequences a second. A burst of 200 cannot all make 1 s.
    let mut opts = SimOptions::default();
    opts.latency.kv_capacity = 4;
    let cfg = ServiceConfig {
        ttft_budget: Duration::from_secs(1),
        ..ServiceConfig::with_backend(Backend::InProcess(opts))
    };
    let (service, client, rx) = start(cfg);
    // Let the estimator see real service times first.
    let mut stash = Vec::new();
    for id in 1..=4 {
        client.submit(ask(id, "warm up"));
    }
    for id in 1..=4 {
        collect(&rx, id, &mut stash);
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    for id in 100..300 {
        // Submitted one by one: each decision sees the queue the earlier
        // ones made once the service has published it.
        match client.admit(inference_client::Ask::tokens(20)) {
            Ok(place) => {
                client.submit_admitted(ask(id, "surge"), place);
                admitted.push(id);
            }
            Err(busy) => {
                assert!(busy.retry_after >= Duration::from_millis(250));
                refused += 1;
            }
        }
        std::thread::yield_now();
    }
    assert!(
        refused > 0,
        "a 200-request burst on 4 slots must refuse some"
    );
    assert!(!admitted.is_empty());
    let st = service.stats();
    assert_eq!(st.refused(), refused);
    assert_eq!(st.admitted() as usize, admitted.len());
    for id in admitted {
        let o = collect(&rx, id, &mut stash);
        assert!(matches!(o.last, Event::Done { .. }), "{:?}", o.last);
    }
}
