//! The worker's side of answering: a session's answer job goes to a
//! retrieval thread when its site has a knowledge base (the sources come back
//! through the worker's inbox), then becomes a request to the inference
//! service; the service's events (tokens, done, failures) come back the same
//! way and go to the session that asked, and admission is asked before a
//! message is accepted.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use inference_client::{
    Admitted, Ask, Busy, ChatMessage, Event, EventSink, GenerateRequest, InferenceError, RequestId,
    Role,
};

use super::retrieval::{Lookup, RetrievalMsg};
use super::worker::{Worker, WorkerMsg};
use crate::chat::server::Source;
use crate::grounding::pace::RetrievalPace;
use crate::grounding::{Grounding, UNGROUNDED_CONFIDENCE};
use crate::ids::SessionKey;
use crate::session::prompt::{self, PromptMessage};
use crate::session::{Admission, AnswerJob, Now, ReplyFailure};

/// Delivers the inference service's events to one worker's inbox.
pub(crate) struct InboxSink(pub(crate) flume::Sender<WorkerMsg>);

impl EventSink for InboxSink {
    fn send(&self, ev: Event) {
        let _ = self.0.send(WorkerMsg::Inference(ev));
    }
}

/// Admission as the inference service predicts it, for the session, with
/// the worker's own stages before the request reaches the service: the
/// store's commit, and for a grounded answer the retrieval threads' line
/// and search.
pub(crate) struct ServiceAdmission<'a> {
    pub(crate) client: &'a inference_client::Client,
    /// The worker's average commit time.
    pub(crate) commit: Duration,
    pub(crate) retrieval: &'a RetrievalPace,
    /// Questions waiting for a retrieval thread.
    pub(crate) retrieval_queue: usize,
    pub(crate) retrieval_threads: usize,
}

impl Admission for ServiceAdmission<'_> {
    fn admit(&self, mut ask: Ask, grounded: bool) -> Result<Admitted, Busy> {
        ask.before_submit = self.commit;
        if grounded {
            ask.before_submit += self
                .retrieval
                .predict(self.retrieval_queue, self.retrieval_threads);
        }
        self.client.admit(ask)
    }

    fn place_grace(&self) -> Duration {
        self.client.place_grace()
    }
}

/// A request in flight: which session's which reply, and what grounded it.
pub(crate) struct InFlight {
    key: SessionKey,
    /// Shared, not copied, with each token's delivery.
    reply: Rc<str>,
    sources: Vec<Source>,
    confidence: f32,
}

/// The answers part of a worker: its requests to the inference service in
/// flight, by request id.
#[derive(Default)]
pub(crate) struct Answers {
    requests: HashMap<RequestId, InFlight>,
    /// The id the next request gets (ids are per client, so per worker).
    next: RequestId,
}

impl Answers {
    /// Records a request about to be sent; its id.
    fn begin(&mut self, f: InFlight) -> RequestId {
        self.next += 1;
        let id = self.next;
        self.requests.insert(id, f);
        id
    }

    /// The session and reply a request answers.
    fn reply_of(&self, id: RequestId) -> Option<(SessionKey, Rc<str>)> {
        self.requests.get(&id).map(|f| (f.key, f.reply.clone()))
    }

    /// The request is over (done, failed, or given up).
    fn end(&mut self, id: RequestId) -> Option<InFlight> {
        self.requests.remove(&id)
    }

    /// Ends the requests answering `replies` of the session; their ids.
    fn end_replies(&mut self, key: SessionKey, replies: &[String]) -> Vec<RequestId> {
        let ids: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, f)| f.key == key && replies.iter().any(|r| **r == *f.reply))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.requests.remove(id);
        }
        ids
    }
}

fn to_chat(m: PromptMessage) -> ChatMessage {
    ChatMessage {
        role: match m.role {
            prompt::Role::System => Role::System,
            prompt::Role::User => Role::User,
            prompt::Role::Assistant => Role::Assistant,
        },
        content: m.content,
    }
}

impl Worker {
    /// Starts answering: through a retrieval thread when the job has a
    /// query (its site has a knowledge base), else straight to the
    /// inference service.
    pub(crate) fn start_answer(&self, key: SessionKey, job: AnswerJob) {
        let site = match job.query {
            Some(_) => self.sessions.borrow().get(&key).map(|s| s.site.clone()),
            None => None,
        };
        let Some(site) = site else {
            return self.submit_answer(key, job, None);
        };
        let msg = RetrievalMsg::Lookup(Lookup {
            worker: self.id,
            key,
            site,
            job,
            queued: std::time::Instant::now(),
        });
        if let Err(flume::SendError(RetrievalMsg::Lookup(l))) = self.shared.retrieval.send(msg) {
            // Retrieval has stopped (shutting down): answer ungrounded.
            self.submit_answer(l.key, l.job, None);
        }
    }

    /// A retrieval thread's answer: the job goes on, unless its reply was
    /// cancelled meanwhile (the visitor left).
    pub(crate) fn on_grounded(&self, key: SessionKey, job: AnswerJob, g: Option<Grounding>) {
        let live = self
            .sessions
            .borrow()
            .get(&key)
            .is_some_and(|s| s.live_replies().any(|r| r == job.reply));
        if live {
            self.submit_answer(key, job, g);
        }
    }

    /// Sends an answer job, with its sources in the prompt, to the inference service.
    fn submit_answer(&self, key: SessionKey, mut job: AnswerJob, g: Option<Grounding>) {
        let (sources, confidence) = match g {
            Some(g) => {
                // Below the site's line the help pages "do not cover" the
                // question: no source is quoted or cited (issue 12).
                let human_below = self
                    .sessions
                    .borrow()
                    .get(&key)
                    .and_then(|s| self.shared.sites.get(&s.site))
                    .map_or(0.0, |site| site.config.human_below_confidence);
                let g = g.below(human_below);
                g.apply(&mut job.prompt);
                (g.sources, g.confidence)
            }
            None => (Vec::new(), UNGROUNDED_CONFIDENCE),
        };
        let id = self.answers.borrow_mut().begin(InFlight {
            key,
            reply: Rc::from(job.reply),
            sources,
            confidence,
        });
        let inf = &self.shared.config.inference;
        let now = Instant::now();
        let mut req = GenerateRequest::new(
            id,
            job.prompt.into_iter().map(to_chat).collect(),
            inf.max_tokens,
        );
        req.deadline = Some(now + Duration::from_millis(inf.deadline_ms));
        req.submitted = now;
        self.inference.submit_admitted(req, job.admitted);
    }

    /// Stops the replies a session gave up (their visitor left).
    pub(crate) fn cancel_replies(&self, key: SessionKey, replies: &[String]) {
        let ids = self.answers.borrow_mut().end_replies(key, replies);
        for id in ids {
            self.inference.cancel(id);
        }
    }

    /// One event from the inference service.
    pub(crate) fn on_inference(self: &Rc<Self>, ev: Event) {
        let mut out = Vec::new();
        let key = match ev {
            Event::Token { id, text } => {
                let Some((key, reply)) = self.answers.borrow().reply_of(id) else {
                    return;
                };
                let live = self
                    .sessions
                    .borrow_mut()
                    .get_mut(&key)
                    .is_some_and(|s| s.reply_token(&reply, &text, &mut out));
                if !live {
                    // The reply is gone (cancelled, or its session): stop generating it.
                    self.answers.borrow_mut().end(id);
                    self.inference.cancel(id);
                }
                key
            }
            Event::Done { id, .. } => {
                let Some(f) = self.answers.borrow_mut().end(id) else {
                    return;
                };
                let site = self.sessions.borrow().get(&f.key).map(|s| s.site.clone());
                let human_below = site
                    .and_then(|site| self.shared.sites.get(&site))
                    .map_or(0.0, |site| site.config.human_below_confidence);
                if let Some(s) = self.sessions.borrow_mut().get_mut(&f.key) {
                    s.reply_done(
                        &f.reply,
                        f.sources,
                        f.confidence,
                        human_below,
                        Now::current(),
                        &mut out,
                    );
                }
                f.key
            }
            Event::Failed { id, error } => {
                let Some(InFlight { key, reply, .. }) = self.answers.borrow_mut().end(id) else {
                    return;
                };
                let why = match error {
                    InferenceError::Cancelled | InferenceError::Shutdown => return,
                    InferenceError::Deadline => ReplyFailure::Deadline,
                    e => {
                        tracing::warn!(worker = self.id, error = %e, "a reply failed upstream");
                        ReplyFailure::Unavailable
                    }
                };
                if let Some(s) = self.sessions.borrow_mut().get_mut(&key) {
                    s.reply_failed(&reply, why, &mut out);
                }
                key
            }
            // Embeddings are asked for by the knowledge base, not by sessions.
            Event::Embeddings { .. } => return,
        };
        self.apply(key, out);
    }
}
