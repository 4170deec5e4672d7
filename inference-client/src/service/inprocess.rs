//! The in-process transport: upstream calls run on the simulator's
//! [`Engine`] inside the service thread, no HTTP. A generation call's members
//! become sequences of the engine (each with its own `max_tokens`, and each
//! cancellable on its own); the tokens due by `now` come back from `poll` as
//! the same [`UpMsg`]s an HTTP stream produces, with per-choice usage.
//! Embeddings are computed at once.

use std::collections::HashMap;
use std::time::Instant;

use super::core::{Call, Transport, UpId, UpMsg};
use crate::openai::StreamItem;
use crate::sim::answer::{compose, split_pieces};
use crate::sim::embed::embed;
use crate::sim::{Engine, SeqId, SimEvent, SimOptions};

/// The simulator as a transport.
pub(crate) struct InProcess {
    engine: Engine,
    opts: SimOptions,
    /// Sequence to (call, member index).
    seqs: HashMap<SeqId, (UpId, u32)>,
    /// Call to its sequences still running.
    calls: HashMap<UpId, Vec<SeqId>>,
    next_seq: SeqId,
    ready: Vec<UpMsg>,
    events: Vec<SimEvent>,
}

impl InProcess {
    pub(crate) fn new(opts: SimOptions) -> Self {
        InProcess {
            engine: Engine::new(opts.latency.clone()),
            opts,
            seqs: HashMap::new(),
            calls: HashMap::new(),
            next_seq: 1,
            ready: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl Transport for InProcess {
    fn start(&mut self, now: Instant, up: UpId, _endpoint: usize, call: Call) {
        match call {
            Call::Generate { members, .. } => {
                let mut seqs = Vec::with_capacity(members.len());
                for (i, m) in members.iter().enumerate() {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let pieces = split_pieces(&compose(&m.messages));
                    self.engine.add(
                        now,
                        seq,
                        m.prompt_tokens,
                        pieces,
                        m.max_tokens.min(self.opts.max_tokens),
                    );
                    self.seqs.insert(seq, (up, i as u32));
                    seqs.push(seq);
                }
                self.calls.insert(up, seqs);
            }
            Call::Embed { texts } => {
                let vectors = texts
                    .iter()
                    .map(|t| embed(t, self.opts.embedding_dim))
                    .collect();
                self.ready.push(UpMsg::Embeddings {
                    up,
                    at: now,
                    vectors,
                });
            }
        }
    }

    fn close(&mut self, now: Instant, up: UpId) {
        for seq in self.calls.remove(&up).unwrap_or_default() {
            self.engine.cancel(now, seq);
            self.seqs.remove(&seq);
        }
    }

    fn drop_member(&mut self, now: Instant, up: UpId, index: u32) -> bool {
        let Some(seqs) = self.calls.get_mut(&up) else {
            return false;
        };
        let Some(pos) = seqs
            .iter()
            .position(|s| self.seqs.get(s) == Some(&(up, index)))
        else {
            return false;
        };
        let seq = seqs.swap_remove(pos);
        self.seqs.remove(&seq);
        self.engine.cancel(now, seq)
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<UpMsg>) {
        out.append(&mut self.ready);
        self.engine.advance(now);
        self.engine.take_events(&mut self.events);
        if self.events.is_empty() {
            return;
        }
        // One message per call, in the order calls first appear.
        let at = Instant::now();
        let mut batches: Vec<(UpId, Vec<StreamItem>)> = Vec::new();
        let mut ended: Vec<UpId> = Vec::new();
        for ev in self.events.drain(..) {
            let seq = match &ev {
                SimEvent::Token { seq, .. } | SimEvent::Finished { seq, .. } => *seq,
            };
            let Some(&(up, index)) = self.seqs.get(&seq) else {
                continue;
            };
            let item = match ev {
                SimEvent::Token { text, .. } => StreamItem::Token { index, text },
                SimEvent::Finished { reason, usage, .. } => {
                    self.seqs.remove(&seq);
                    if let Some(seqs) = self.calls.get_mut(&up) {
                        seqs.retain(|s| *s != seq);
                        if seqs.is_empty() {
                            self.calls.remove(&up);
                            ended.push(up);
                        }
                    }
                    StreamItem::Finish {
                        index,
                        reason,
                        usage: Some(usage),
                    }
                }
            };
            match batches.iter_mut().find(|(u, _)| *u == up) {
                Some((_, items)) => items.push(item),
                None => batches.push((up, vec![item])),
            }
        }
        for (up, items) in batches {
            out.push(UpMsg::Items { up, at, items });
        }
        out.extend(ended.into_iter().map(|up| UpMsg::End { up }));
    }

    fn next_wake(&self) -> Option<Instant> {
        if self.ready.is_empty() {
            self.engine.next_wake()
        } else {
            Some(Instant::now())
        }
    }
}
