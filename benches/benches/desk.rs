//! The agent desk's cost per assignment as the line grows: 50 agents, all at
//! capacity, N conversations waiting. One iteration: an agent resolves a
//! conversation, the freed slot is offered to the head of the line, the agent
//! takes it, and a new visitor joins the back (so the line stays N long).
//! Pushes of the line to agents and visitors are included, coalesced as in
//! the server (the clock advances 1 ms per iteration).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway::desk::directory::{AccountInput, Directory, Role};
use gateway::desk::{Desk, DeskConfig, DeskOut};
use gateway::handoff::VisitorEvent;
use gateway::ids::{AgentId, ConversationId, SessionKey, SubId};

const AGENTS: u64 = 50;
const CAPACITY: u32 = 4;

fn conv(n: u64) -> ConversationId {
    let mut c = [0u8; 12];
    c[..8].copy_from_slice(&n.to_le_bytes());
    ConversationId::from_bytes(c)
}

/// Each agent's socket: its id as the slot.
fn socket(agent: u64) -> SubId {
    SubId::new(0, agent as usize, 0)
}

fn needs(n: u64) -> VisitorEvent {
    VisitorEvent::NeedsHuman {
        conv: conv(n),
        key: SessionKey::random().expect("random"),
        site: "shop".into(),
        reason: "asked".into(),
        lang: Some("en".into()),
        page: Some("https://shop.example/".into()),
        referrer: None,
        preview: Some("where is my order?".into()),
        skill: None,
    }
}

fn frame(kind: &str, n: u64) -> Vec<u8> {
    format!(r#"{{"type":"{kind}","conversation":"{}"}}"#, conv(n)).into_bytes()
}

/// Takes every offer in `out`; returns how many.
fn take_offers(desk: &mut Desk, out: Vec<DeskOut>, now: Instant) -> usize {
    let mut n = 0;
    for o in out {
        if let DeskOut::Frame { to, msg } = o {
            let v: serde_json::Value = serde_json::from_slice(&msg).unwrap_or_default();
            if v["type"] == "offer" {
                let c = v["conversation"].as_str().unwrap_or_default();
                let f = format!(r#"{{"type":"take","conversation":"{c}"}}"#);
                desk.on_agent_frame(AgentId::new(to.slot() as u64), to, f.as_bytes(), now);
                n += 1;
            }
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("desk_assignment");
    for line in [10u64, 100, 1_000, 10_000] {
        let mut dir = Directory::default();
        for i in 0..AGENTS {
            dir.create(
                AccountInput {
                    name: format!("Agent {i}"),
                    role: Role::Agent,
                    languages: vec!["en".into()],
                    skills: vec![],
                    capacity: CAPACITY,
                    sites: vec!["shop".into()],
                },
                0,
            );
        }
        let cfg = DeskConfig {
            offer_timeout: Duration::from_secs(3600),
            queue_timeout: Duration::from_secs(36_000),
            reconnect_grace: Duration::from_secs(60),
            login_ttl: Duration::from_secs(60),
            max_text_bytes: 4096,
            admin_token: None,
        };
        let mut desk = Desk::new(cfg, dir);
        let mut now = Instant::now();
        // Agent ids are 1..=AGENTS; each agent's socket id is its own id.
        for a in 1..=AGENTS {
            desk.on_agent_open(AgentId::new(a), socket(a), now);
        }
        desk.take_out();
        // Fill every slot, then the line.
        let held = AGENTS * CAPACITY as u64;
        let mut next = 0u64;
        let mut holding: std::collections::VecDeque<u64> = Default::default();
        for _ in 0..held + line {
            desk.on_visitor(needs(next), now, 0);
            next += 1;
            let out = desk.take_out();
            take_offers(&mut desk, out, now);
            desk.take_out();
        }
        holding.extend(0..held);
        // Who holds which: agents took offers in order; track by resolving the
        // oldest held conversation through the agent that took it.
        let mut owner: std::collections::HashMap<u64, u64> = Default::default();
        for n in 0..held {
            owner.insert(n, 1 + n % AGENTS);
        }
        g.bench_with_input(BenchmarkId::from_parameter(line), &line, |b, _| {
            b.iter(|| {
                now += Duration::from_millis(1);
                let Some(done) = holding.pop_front() else {
                    return;
                };
                let agent = owner.remove(&done).unwrap_or(1);
                desk.on_agent_frame(
                    AgentId::new(agent),
                    socket(agent),
                    &frame("resolve", done),
                    now,
                );
                let out = desk.take_out();
                // The head of the line was offered to the freed agent; it takes it.
                let head = next - line;
                take_offers(&mut desk, out, now);
                desk.take_out();
                owner.insert(head, agent);
                holding.push_back(head);
                desk.on_visitor(needs(next), now, 0);
                next += 1;
                desk.tick(now);
                desk.take_out();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
