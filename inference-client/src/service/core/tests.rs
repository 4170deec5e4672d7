//! The core against a fake transport and a fake clock.

use std::cell::RefCell;

use super::*;
use crate::admission::Published;
use crate::openai::Role;
use crate::pool::PoolConfig;
use crate::stats::Stats;

#[derive(Default)]
struct Log {
    /// (call, endpoint, members, batched, max_tokens of each member)
    started: Vec<(UpId, usize, usize, bool)>,
    closed: Vec<UpId>,
    dropped: Vec<(UpId, u32)>,
    health: Vec<usize>,
    embed_texts: Vec<Vec<String>>,
}

struct Fake {
    log: Rc<RefCell<Log>>,
    frees_members: bool,
}

impl Transport for Fake {
    fn start(&mut self, _now: Instant, up: UpId, endpoint: usize, call: Call) {
        let mut l = self.log.borrow_mut();
        match call {
            Call::Generate { members, batched } => {
                l.started.push((up, endpoint, members.len(), batched))
            }
            Call::Embed { texts } => {
                l.started.push((up, endpoint, 1, true));
                l.embed_texts.push(texts);
            }
        }
    }
    fn close(&mut self, _now: Instant, up: UpId) {
        self.log.borrow_mut().closed.push(up);
    }
    fn drop_member(&mut self, _now: Instant, up: UpId, index: u32) -> bool {
        self.log.borrow_mut().dropped.push((up, index));
        self.frees_members
    }
    fn check_health(&mut self, endpoint: usize) {
        self.log.borrow_mut().health.push(endpoint);
    }
}

struct World {
    core: Core,
    log: Rc<RefCell<Log>>,
    rx: flume::Receiver<Event>,
    shared: Arc<Shared>,
    t0: Instant,
}

const WAIT: Duration = Duration::from_millis(5);

fn world(caps: &[usize], batched: &[bool]) -> World {
    world_with(caps, batched, false, None)
}

fn world_with(
    caps: &[usize],
    batched: &[bool],
    frees_members: bool,
    health: Option<Duration>,
) -> World {
    let shared = Arc::new(Shared {
        stats: Stats::default(),
        published: Published::default(),
        admission: AdmissionConfig::default(),
        places: crate::admission::Places::default(),
    });
    let log = Rc::new(RefCell::new(Log::default()));
    let cfg = CoreConfig {
        batcher: BatcherConfig {
            max_batch: 4,
            max_wait: WAIT,
            capacity: 100,
        },
        request_deadline: Duration::from_secs(10),
        health_interval: health,
        batched: batched.to_vec(),
        admission: AdmissionConfig::default(),
    };
    let pool = Pool::new(caps, PoolConfig::default(), health.is_some(), 0);
    let transport = Fake {
        log: log.clone(),
        frees_members,
    };
    let mut core = Core::new(cfg, pool, Box::new(transport), shared.clone());
    let (tx, rx) = flume::unbounded();
    core.on_cmd(
        Cmd::Register {
            client: 1,
            sink: Arc::new(tx),
            counters: shared.stats.register(),
        },
        Instant::now(),
    );
    World {
        core,
        log,
        rx,
        shared,
        t0: Instant::now(),
    }
}

impl World {
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn submit(&mut self, id: RequestId, ms: u64) {
        self.submit_with(id, ms, 10, None);
    }

    fn submit_with(&mut self, id: RequestId, ms: u64, max_tokens: u32, deadline: Option<u64>) {
        let now = self.at(ms);
        let req = GenerateRequest {
            admitted: None,
            id,
            messages: vec![ChatMessage::new(Role::User, format!("question {id}"))],
            max_tokens,
            deadline: deadline.map(|d| self.at(d)),
            submitted: now,
        };
        self.core.on_cmd(Cmd::Submit { client: 1, req }, now);
    }

    fn cancel(&mut self, id: RequestId, ms: u64) {
        self.core.on_cmd(Cmd::Cancel { client: 1, id }, self.at(ms));
    }

    fn tick(&mut self, ms: u64) {
        self.core.on_timer(self.at(ms));
    }

    fn up(&mut self, msg: UpMsg, ms: u64) {
        self.core.on_up(msg, self.at(ms));
        self.core.on_timer(self.at(ms));
    }

    fn token(&mut self, up: UpId, index: u32, text: &str, ms: u64) {
        let at = self.at(ms);
        let items = vec![StreamItem::Token {
            index,
            text: text.into(),
        }];
        self.up(UpMsg::Items { up, at, items }, ms);
    }

    fn finish(&mut self, up: UpId, index: u32, ms: u64) {
        let at = self.at(ms);
        let items = vec![StreamItem::Finish {
            index,
            reason: FinishReason::Stop,
            usage: None,
        }];
        self.up(UpMsg::Items { up, at, items }, ms);
    }

    fn events(&self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }

    fn started(&self) -> Vec<(UpId, usize, usize, bool)> {
        self.log.borrow().started.clone()
    }

    fn closed(&self) -> Vec<UpId> {
        self.log.borrow().closed.clone()
    }
}

fn failed(evs: &[Event]) -> Vec<(RequestId, InferenceError)> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Failed { id, error } => Some((*id, error.clone())),
            _ => None,
        })
        .collect()
}

fn done(evs: &[Event]) -> Vec<RequestId> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Done { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_batching_endpoint_gets_one_call_per_batch() {
    let mut w = world(&[64], &[true]);
    w.submit(1, 0);
    w.submit(2, 1);
    w.submit(3, 2);
    w.tick(4);
    assert!(w.started().is_empty(), "waits for max_wait");
    assert_eq!(w.core.next_wake(w.at(4)), Some(w.at(5)));
    w.tick(5);
    assert_eq!(w.started(), [(1, 0, 3, true)]);
    assert_eq!(w.shared.stats.upstream_sequences.get(), 3);
    // Each member's tokens go to its own request.
    w.token(1, 2, "c", 6);
    w.token(1, 0, "a", 6);
    let evs = w.events();
    assert_eq!(
        evs,
        [
            Event::Token {
                id: 3,
                text: "c".into()
            },
            Event::Token {
                id: 1,
                text: "a".into()
            }
        ]
    );
}

#[test]
fn a_full_batch_goes_at_once_and_the_rest_waits() {
    let mut w = world(&[64], &[true]);
    for id in 1..=5 {
        w.submit(id, 0);
    }
    w.tick(0);
    assert_eq!(w.started(), [(1, 0, 4, true)]);
    w.tick(5);
    assert_eq!(w.started().len(), 2);
    assert_eq!(w.started()[1].2, 1);
}

#[test]
fn a_chat_endpoint_gets_the_batch_as_streams() {
    let mut w = world(&[64], &[false]);
    for id in 1..=3 {
        w.submit(id, 0);
    }
    w.tick(5);
    assert_eq!(
        w.started(),
        [(1, 0, 1, false), (2, 0, 1, false), (3, 0, 1, false)]
    );
}

#[test]
fn failover_happens_only_before_the_first_token() {
    let mut w = world(&[4, 4], &[false, false]);
    w.submit(1, 0);
    w.submit(2, 0);
    w.tick(5);
    assert_eq!(w.started(), [(1, 0, 1, false), (2, 0, 1, false)]);
    // Request 1 has a token, then its stream fails: no failover.
    w.token(1, 0, "x", 6);
    let reset = Fault::Closed("connection reset".into());
    w.up(
        UpMsg::Fault {
            up: 1,
            fault: reset,
        },
        7,
    );
    // Request 2 fails before any token: it moves to endpoint 1.
    let refused = Fault::Connect("refused".into());
    w.up(
        UpMsg::Fault {
            up: 2,
            fault: refused,
        },
        7,
    );
    assert_eq!(w.started()[2], (3, 1, 1, false));
    let evs = w.events();
    assert!(matches!(
        failed(&evs)[..],
        [(1, InferenceError::Upstream(ref m))] if m.contains("reset")
    ));
    w.token(3, 0, "y", 8);
    w.finish(3, 0, 9);
    w.up(UpMsg::End { up: 3 }, 9);
    let evs = w.events();
    match evs.last() {
        Some(Event::Done { id: 2, timings, .. }) => {
            assert_eq!(timings.attempts, 2);
            assert_eq!(timings.endpoint, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.shared.stats.failovers.get(), 1);
}

#[test]
fn every_endpoint_failing_is_unavailable_at_once() {
    let mut w = world(&[4, 4], &[false, false]);
    w.submit(1, 0);
    w.tick(5);
    w.up(
        UpMsg::Fault {
            up: 1,
            fault: Fault::Status {
                status: 500,
                retry_after: None,
                body: "boom".into(),
            },
        },
        6,
    );
    w.up(
        UpMsg::Fault {
            up: 2,
            fault: Fault::Protocol("garbage".into()),
        },
        7,
    );
    assert_eq!(failed(&w.events()), [(1, InferenceError::Unavailable)]);
}

#[test]
fn a_pool_that_is_down_refuses_at_submit() {
    let mut w = world(&[4], &[false]);
    // Three failures open the breaker.
    for id in 1..=3 {
        w.submit(id, 0);
    }
    w.tick(5);
    for up in 1..=3 {
        w.up(
            UpMsg::Fault {
                up,
                fault: Fault::Protocol("x".into()),
            },
            6,
        );
    }
    w.events();
    w.submit(9, 7);
    assert_eq!(failed(&w.events()), [(9, InferenceError::Unavailable)]);
    assert!(w.started().len() == 3);
    // The gauges say so too.
    assert_eq!(w.shared.stats.endpoints_up.get(), 0);
    assert_eq!(w.shared.published.load().capacity, 0);
}

#[test]
fn overload_pauses_the_endpoint_and_fails_over() {
    let mut w = world(&[4, 4], &[false, false]);
    w.submit(1, 0);
    w.tick(5);
    let busy = Fault::Status {
        status: 429,
        retry_after: Some(Duration::from_secs(2)),
        body: "slow down".into(),
    };
    w.up(UpMsg::Fault { up: 1, fault: busy }, 6);
    assert_eq!(w.started()[1].1, 1);
    w.submit(2, 7);
    w.tick(12);
    assert_eq!(w.started()[2].1, 1, "endpoint 0 is paused");
}

#[test]
fn cancel_closes_a_request_s_own_stream_at_once() {
    let mut w = world(&[4], &[false]);
    w.submit(1, 0);
    w.tick(5);
    w.token(1, 0, "a", 6);
    w.cancel(1, 7);
    assert_eq!(w.closed(), [1]);
    assert_eq!(failed(&w.events()), [(1, InferenceError::Cancelled)]);
    assert_eq!(w.core.pool.in_flight(), 0);
    // Late tokens for the closed call go nowhere.
    w.token(1, 0, "late", 8);
    assert!(w.events().is_empty());
}

#[test]
fn a_batched_call_closes_once_every_member_is_gone() {
    let mut w = world(&[4], &[true]);
    w.submit(1, 0);
    w.submit(2, 0);
    w.tick(5);
    w.cancel(1, 6);
    assert!(w.closed().is_empty());
    assert_eq!(w.log.borrow().dropped, [(1, 0)]);
    assert_eq!(w.core.pool.in_flight(), 2, "HTTP batches keep the slot");
    w.token(1, 1, "b", 7);
    w.cancel(2, 8);
    assert_eq!(w.closed(), [1]);
    assert_eq!(w.core.pool.in_flight(), 0);
    let evs = w.events();
    assert_eq!(
        failed(&evs),
        [
            (1, InferenceError::Cancelled),
            (2, InferenceError::Cancelled)
        ]
    );
}

#[test]
fn in_process_members_free_their_slot_when_cancelled() {
    let mut w = world_with(&[4], &[true], true, None);
    w.submit(1, 0);
    w.submit(2, 0);
    w.tick(5);
    w.cancel(1, 6);
    assert_eq!(w.core.pool.in_flight(), 1);
}

#[test]
fn a_queued_cancel_never_goes_upstream() {
    let mut w = world(&[4], &[true]);
    w.submit(1, 0);
    w.cancel(1, 1);
    w.tick(5);
    assert!(w.started().is_empty());
    assert_eq!(failed(&w.events()), [(1, InferenceError::Cancelled)]);
    assert_eq!(w.shared.stats.cancelled.get(), 1);
}

#[test]
fn deadlines_expire_queued_and_streaming_requests() {
    let mut w = world(&[1], &[false]);
    w.submit_with(1, 0, 10, Some(100));
    w.submit_with(2, 0, 10, Some(50));
    w.tick(5);
    assert_eq!(w.started().len(), 1, "capacity 1: request 2 waits");
    assert_eq!(w.core.next_wake(w.at(5)), Some(w.at(50)));
    w.tick(50);
    assert_eq!(failed(&w.events()), [(2, InferenceError::Deadline)]);
    w.token(1, 0, "a", 60);
    w.tick(100);
    assert_eq!(failed(&w.events()), [(1, InferenceError::Deadline)]);
    assert_eq!(w.closed(), [1]);
    assert_eq!(w.shared.stats.expired.get(), 2);
    // A deadline already past at submit fails at once.
    w.submit_with(3, 200, 10, Some(150));
    assert_eq!(failed(&w.events()), [(3, InferenceError::Deadline)]);
}

#[test]
fn saturation_waits_for_capacity() {
    let mut w = world(&[1], &[false]);
    w.submit(1, 0);
    w.submit(2, 0);
    w.tick(5);
    assert_eq!(w.started().len(), 1);
    assert_eq!(w.shared.published.load().queued, 1);
    assert_eq!(w.core.next_wake(w.at(5)), Some(w.at(10_000)), "no spinning");
    w.finish(1, 0, 20);
    w.up(UpMsg::End { up: 1 }, 20);
    assert_eq!(w.started().len(), 2);
    assert_eq!(done(&w.events()), [1]);
}

#[test]
fn done_carries_the_server_s_usage_and_timings() {
    let mut w = world(&[4], &[false]);
    w.submit(1, 0);
    w.tick(5);
    w.token(1, 0, "a", 40);
    w.token(1, 0, "b", 60);
    let at = w.at(61);
    w.up(
        UpMsg::Items {
            up: 1,
            at,
            items: vec![
                StreamItem::Finish {
                    index: 0,
                    reason: FinishReason::Length,
                    usage: None,
                },
                StreamItem::Usage(Usage {
                    prompt_tokens: 11,
                    completion_tokens: 2,
                }),
                StreamItem::Done,
            ],
        },
        61,
    );
    assert!(done(&w.events()).is_empty(), "Done waits for the end");
    w.up(UpMsg::End { up: 1 }, 62);
    match w.events().last() {
        Some(Event::Done {
            finish_reason,
            usage,
            timings,
            ..
        }) => {
            assert_eq!(*finish_reason, FinishReason::Length);
            assert_eq!(usage.prompt_tokens, 11);
            assert_eq!(timings.queued, Duration::from_millis(5));
            assert_eq!(timings.upstream_ttft, Duration::from_millis(35));
            assert_eq!(timings.ttft, Duration::from_millis(40));
            assert_eq!(timings.total, Duration::from_millis(62));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.shared.stats.completed.get(), 1);
    assert_eq!(w.shared.stats.ttft.snapshot().count, 1);
    assert_eq!(
        w.core.pool.endpoint(0).breaker,
        crate::pool::Breaker::Closed { failures: 0 }
    );
}

#[test]
fn a_stream_ending_without_a_finish_fails_over_or_fails() {
    let mut w = world(&[4, 4], &[false, false]);
    w.submit(1, 0);
    w.submit(2, 0);
    w.tick(5);
    w.token(1, 0, "a", 6);
    w.up(UpMsg::End { up: 1 }, 7);
    w.up(UpMsg::End { up: 2 }, 7);
    let evs = w.events();
    assert!(matches!(
        failed(&evs)[..],
        [(1, InferenceError::Upstream(_))]
    ));
    assert_eq!(
        w.started().last().map(|s| s.1),
        Some(1),
        "2 retried elsewhere"
    );
}

#[test]
fn batch_members_stop_at_their_own_max_tokens() {
    let mut w = world(&[4], &[true]);
    w.submit_with(1, 0, 1, None);
    w.submit_with(2, 0, 5, None);
    w.tick(5);
    w.token(1, 0, "a", 6);
    w.token(1, 0, "extra", 6);
    w.token(1, 1, "b", 6);
    let evs = w.events();
    assert_eq!(done(&evs), [1]);
    assert!(!evs
        .iter()
        .any(|e| matches!(e, Event::Token { text, .. } if text == "extra")));
    assert_eq!(w.log.borrow().dropped, [(1, 0)]);
    assert!(w.closed().is_empty());
}

#[test]
fn embeddings_are_batched_and_split_back() {
    let mut w = world(&[4], &[true]);
    let now = w.at(0);
    w.core.on_cmd(
        Cmd::Embed {
            client: 1,
            id: 1,
            texts: vec!["a".into(), "b".into()],
            submitted: now,
        },
        now,
    );
    w.core.on_cmd(
        Cmd::Embed {
            client: 1,
            id: 2,
            texts: vec!["c".into()],
            submitted: now,
        },
        now,
    );
    w.tick(5);
    assert_eq!(w.log.borrow().embed_texts, [vec!["a", "b", "c"]]);
    let at = w.at(6);
    w.up(
        UpMsg::Embeddings {
            up: 1,
            at,
            vectors: vec![vec![1.0], vec![2.0], vec![3.0]],
        },
        6,
    );
    assert_eq!(
        w.events(),
        [
            Event::Embeddings {
                id: 1,
                vectors: vec![vec![1.0], vec![2.0]]
            },
            Event::Embeddings {
                id: 2,
                vectors: vec![vec![3.0]]
            }
        ]
    );
}

#[test]
fn health_checks_run_on_their_interval_and_count() {
    let mut w = world_with(
        &[4, 4],
        &[false, false],
        false,
        Some(Duration::from_secs(5)),
    );
    w.tick(0);
    assert_eq!(w.log.borrow().health, [0, 1]);
    w.tick(1000);
    assert_eq!(w.log.borrow().health.len(), 2);
    w.tick(5000);
    assert_eq!(w.log.borrow().health.len(), 4);
    w.up(
        UpMsg::Health {
            endpoint: 0,
            ok: false,
        },
        5001,
    );
    w.up(
        UpMsg::Health {
            endpoint: 0,
            ok: false,
        },
        5002,
    );
    assert_eq!(w.shared.stats.endpoints_up.get(), 1);
    w.submit(1, 5003);
    w.tick(5010);
    assert_eq!(w.started()[0].1, 1);
}

#[test]
fn duplicate_ids_and_empty_prompts_are_refused() {
    let mut w = world(&[4], &[false]);
    w.submit(1, 0);
    w.submit(1, 0);
    let now = w.at(0);
    w.core.on_cmd(
        Cmd::Submit {
            client: 1,
            req: GenerateRequest {
                admitted: None,
                id: 2,
                messages: vec![],
                max_tokens: 1,
                deadline: None,
                submitted: now,
            },
        },
        now,
    );
    let f = failed(&w.events());
    assert!(matches!(
        f[..],
        [
            (1, InferenceError::Invalid(_)),
            (2, InferenceError::Invalid(_))
        ]
    ));
}

#[test]
fn shutdown_and_unregister_end_everything() {
    let mut w = world(&[4], &[false]);
    w.submit(1, 0);
    w.submit(2, 0);
    w.tick(5);
    w.submit(3, 6);
    w.core.on_cmd(Cmd::Unregister { client: 1 }, w.at(7));
    assert_eq!(w.core.requests.len(), 0);
    assert_eq!(w.closed().len(), 2);
    let mut w = world(&[4], &[false]);
    w.submit(1, 0);
    w.tick(5);
    w.submit(2, 6);
    w.core.shutdown(w.at(7));
    let mut f = failed(&w.events());
    f.sort_by_key(|(id, _)| *id);
    assert_eq!(
        f,
        [(1, InferenceError::Shutdown), (2, InferenceError::Shutdown)]
    );
    assert_eq!(w.closed(), [1]);
}
