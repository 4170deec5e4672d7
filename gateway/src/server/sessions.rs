//! The sessions part of a worker: the sessions it owns (in memory, or being
//! loaded from the store), the operations other parts ask of them, and the
//! carrying out of a session's effects.
//!
//! [`Sessions`] owns the map and the loads in flight and is reached only
//! through its methods. The session core (`crate::session`) is pure; the
//! worker's methods here borrow the map only around calls into that core,
//! never while anything else runs, and carry out the effects after the
//! borrow ends.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::answer::ServiceAdmission;
use super::persist::{session_from, unix_ms, write_for, Owner};
use super::worker::{Op, Worker, WorkerMsg};
use crate::handoff::{SessionEvent, VisitorEvent};
use crate::ids::{ConversationId, SessionKey, SubId};
use crate::session::{NotStored, Now, Origin, Out, Record, Session, Settings};
use crate::sites::Site;
use crate::store::{StoreError, StoredSession, Write};

/// What waits for a session to be loaded from the store.
#[derive(Debug)]
pub(crate) enum Waiting {
    /// A subscriber's operation.
    Op { sub: SubId, op: Op },
    /// News from the agent desk.
    Desk(SessionEvent),
}

/// The sessions one worker owns.
#[derive(Default)]
pub(crate) struct Sessions {
    /// Boxed: the map's spare capacity then costs a pointer per slot, not a session.
    map: HashMap<SessionKey, Box<Session>>,
    /// Sessions being loaded from the store, and what waits for them.
    loading: HashMap<SessionKey, Vec<Waiting>>,
}

impl Sessions {
    /// Whether the session is in memory.
    pub(crate) fn contains(&self, key: &SessionKey) -> bool {
        self.map.contains_key(key)
    }

    /// The session, in memory.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<&Session> {
        self.map.get(key).map(|s| &**s)
    }

    /// The session, in memory, to change.
    pub(crate) fn get_mut(&mut self, key: &SessionKey) -> Option<&mut Session> {
        self.map.get_mut(key).map(|s| &mut **s)
    }

    /// Keeps a session in memory.
    pub(crate) fn insert(&mut self, key: SessionKey, s: Session) {
        self.map.insert(key, Box::new(s));
    }

    /// Queues `then` until the session is loaded; true when it is the first
    /// to wait (the caller asks the store, once).
    pub(crate) fn wait_for_load(&mut self, key: SessionKey, then: Waiting) -> bool {
        match self.loading.get_mut(&key) {
            Some(waiting) => {
                waiting.push(then);
                false
            }
            None => {
                self.loading.insert(key, vec![then]);
                true
            }
        }
    }

    /// The load finished: what waited for it, in order.
    pub(crate) fn loaded(&mut self, key: &SessionKey) -> Vec<Waiting> {
        self.loading.remove(key).unwrap_or_default()
    }

    /// Gives up the replies of sessions nobody has watched for `grace`: each
    /// session's effects.
    pub(crate) fn abandon_unwatched(
        &mut self,
        now: Instant,
        grace: Duration,
    ) -> Vec<(SessionKey, Vec<Out>)> {
        let mut effects = Vec::new();
        for (key, s) in self.map.iter_mut() {
            if s.unwatched_since.is_some() && s.live_replies().next().is_some() {
                let mut out = Vec::new();
                s.abandon_unwatched(now, grace, &mut out);
                if !out.is_empty() {
                    effects.push((*key, out));
                }
            }
        }
        effects
    }

    /// Drops from memory the quiet sessions unused for `ttl` (the store
    /// keeps them); how many.
    pub(crate) fn evict_idle(&mut self, now: Instant, ttl: Duration) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, s| !(s.is_quiet() && now.saturating_duration_since(s.last_active) > ttl));
        before - self.map.len()
    }
}

/// A site's session settings, read before a session is borrowed.
struct SiteSettings<'w> {
    site: Option<Arc<Site>>,
    grounding_tokens: u32,
    admission: ServiceAdmission<'w>,
    worker: &'w Worker,
}

impl SiteSettings<'_> {
    fn get(&self) -> Settings<'_> {
        let shared = &self.worker.shared;
        let l = &shared.config.limits;
        Settings {
            site_config: match &self.site {
                Some(s) => &s.widget_config,
                None => empty_config(),
            },
            instructions: self.site.as_ref().map_or("", |s| s.system_prompt.as_str()),
            grounding_tokens: self.grounding_tokens,
            message_rate: l.message_rate,
            history_items: shared.config.session.history_items,
            poll_log_cap: l.poll_log_messages,
            context_tokens: shared.config.inference.context_tokens,
            count_tokens: inference_client::count_tokens,
            admission: &self.admission,
            handoff: self
                .site
                .as_ref()
                .map_or(&[][..], |s| s.config.handoff.as_slice()),
        }
    }
}

/// The widget configuration of a site that no longer exists.
fn empty_config() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("{}".into()).expect("{} is JSON"))
}

impl Worker {
    /// Runs `op` on the session's owner: here, or through the owner's inbox.
    pub(crate) fn submit(self: &Rc<Self>, key: SessionKey, sub: SubId, op: Op) {
        let owner = key.owner(self.n);
        if owner == self.id {
            self.run_op(key, sub, op);
        } else {
            self.m().cross_worker.inc();
            let _ = self.shared.inboxes[owner].send(WorkerMsg::Op { key, sub, op });
        }
    }

    fn reply_op(self: &Rc<Self>, sub: SubId, found: bool) {
        let worker = sub.worker();
        if worker == self.id {
            self.on_op_done(sub, found);
        } else {
            let _ = self.shared.inboxes[worker].send(WorkerMsg::OpDone { sub, found });
        }
    }

    /// The session settings for a site (an empty widget config if the site
    /// was deleted).
    fn settings_for(&self, site: &str) -> SiteSettings<'_> {
        let site: Option<Arc<Site>> = self.shared.sites.get(site);
        let grounding_tokens = site
            .as_ref()
            .map_or(0, |s| self.shared.library.allowance(&s.id));
        SiteSettings {
            site,
            grounding_tokens,
            admission: ServiceAdmission {
                client: &self.inference,
                commit: self.commit_pace.get(),
                retrieval: &self.shared.retrieval_pace,
                retrieval_queue: self.shared.retrieval.len(),
                retrieval_threads: self.shared.config.knowledge.threads.max(1),
            },
            worker: self,
        }
    }

    /// Carries out an `Op` on a session this worker owns, loading the session
    /// from the store first when it is not in memory (after a restart, or an
    /// eviction).
    pub(crate) fn run_op(self: &Rc<Self>, key: SessionKey, sub: SubId, op: Op) {
        let wants_session = matches!(
            op,
            Op::Attach { .. } | Op::PollSend { .. } | Op::PollRecv { .. }
        );
        if wants_session && !self.sessions.borrow().contains(&key) {
            return self.load_then(key, Waiting::Op { sub, op });
        }
        self.run_op_loaded(key, sub, op);
    }

    /// `run_op` once the store has been asked: a session still missing is unknown.
    fn run_op_loaded(self: &Rc<Self>, key: SessionKey, sub: SubId, op: Op) {
        let now = Now::current();
        let mut out = Vec::new();
        // The settings are read before the session is borrowed.
        let settings = match &op {
            Op::Client { .. } | Op::PollSend { .. } | Op::PollRecv { .. } => {
                let site = self
                    .sessions
                    .borrow()
                    .get(&key)
                    .map(|s| Arc::clone(&s.site));
                site.map(|site| self.settings_for(&site))
            }
            Op::Attach { .. } | Op::Detach => None,
        };
        let reply: Option<bool> = {
            let mut sessions = self.sessions.borrow_mut();
            let sess = sessions.get_mut(&key);
            match (op, settings.as_ref().map(SiteSettings::get)) {
                (Op::Attach { site }, _) => match sess {
                    Some(s) if *s.site == *site => {
                        s.attach(sub, now.mono);
                        Some(true)
                    }
                    _ => Some(false),
                },
                (Op::Detach, _) => {
                    if let Some(s) = sess {
                        s.detach(sub, now.mono);
                    }
                    None
                }
                (Op::Client { msg, received }, st) => {
                    match (sess, st) {
                        (Some(s), Some(st)) => {
                            // The ack's latency counts from the frame's arrival on its worker.
                            let now = Now {
                                mono: received.min(now.mono),
                                ..now
                            };
                            s.on_client(Origin::Socket(sub), msg, now, &st, &mut out)
                        }
                        _ => out.push(Out::Send {
                            to: sub,
                            msg: crate::session::error_msg(
                                crate::chat::ErrorCode::Internal,
                                "the session is gone; reconnect to start a new one",
                                None,
                                None,
                            ),
                        }),
                    }
                    None
                }
                (Op::PollSend { site, msgs }, st) => match (sess, st) {
                    (Some(s), Some(st)) if *s.site == *site => {
                        for m in msgs {
                            match m {
                                Ok(m) => s.on_client(Origin::Poll, m, now, &st, &mut out),
                                Err(e) => s.on_client_error(Origin::Poll, &e, &st, &mut out),
                            }
                        }
                        Some(true)
                    }
                    _ => Some(false),
                },
                (Op::PollRecv { site, cursor }, st) => match (sess, st) {
                    (Some(s), Some(st)) if *s.site == *site => {
                        s.poll_recv(sub, cursor, now.mono, &st, &mut out);
                        Some(true)
                    }
                    _ => Some(false),
                },
            }
        };
        // The answer to the op goes first: a poll answer must not overtake it.
        if let Some(found) = reply {
            self.reply_op(sub, found);
        }
        self.apply(key, out);
    }

    /// News from the agent desk for a session this worker owns (loaded from
    /// the store first when it is not in memory).
    pub(crate) fn on_desk_news(self: &Rc<Self>, key: SessionKey, ev: SessionEvent) {
        if !self.sessions.borrow().contains(&key) {
            return self.load_then(key, Waiting::Desk(ev));
        }
        self.on_desk_news_loaded(key, ev);
    }

    /// `on_desk_news` once the store has been asked. An agent's message for a
    /// session that no longer exists goes back to the desk as failed.
    fn on_desk_news_loaded(self: &Rc<Self>, key: SessionKey, ev: SessionEvent) {
        let now = Now::current();
        let mut out = Vec::new();
        let missed = match self.sessions.borrow_mut().get_mut(&key) {
            Some(s) => {
                s.on_desk(ev, now, &mut out);
                None
            }
            None => Some(ev),
        };
        if let Some(SessionEvent::AgentMessage {
            conv, agent, id, ..
        }) = missed
        {
            let _ = self.shared.desk.send(super::desk::DeskMsg::Visitor(
                VisitorEvent::AgentMessageFailed {
                    conv,
                    agent,
                    id,
                    error: "the visitor's session no longer exists".into(),
                },
            ));
        }
        self.apply(key, out);
    }

    /// The store committed (or failed to commit) a session's oldest
    /// outstanding records.
    pub(crate) fn on_committed(self: &Rc<Self>, key: SessionKey, result: Result<(), StoreError>) {
        let now = Instant::now();
        let result = result.map_err(|e| {
            tracing::error!(worker = self.id, error = %e, "a session's records were not stored");
            NotStored::from(&e)
        });
        let mut out = Vec::new();
        if let Some(s) = self.sessions.borrow_mut().get_mut(&key) {
            s.on_committed(result, now, &mut out);
        }
        self.apply(key, out);
    }

    /// Creates a session owned by this worker.
    pub(crate) fn create_session(&self, site: &Arc<str>) -> std::io::Result<SessionKey> {
        let key = SessionKey::random_owned_by(self.id, self.n).map_err(std::io::Error::other)?;
        let conversation = ConversationId::random().map_err(std::io::Error::other)?;
        let now = Instant::now();
        let s = Session::new(key, conversation, site.clone(), now);
        self.sessions.borrow_mut().insert(key, s);
        self.record_session(key, conversation, site);
        self.m().sessions.add(1);
        Ok(key)
    }

    /// Carries out a session's effects.
    pub(crate) fn apply(self: &Rc<Self>, key: SessionKey, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send { to, msg } => {
                    let worker = to.worker();
                    if worker == self.id {
                        self.deliver_ws(to, &msg);
                    } else {
                        let _ = self.shared.inboxes[worker].send(WorkerMsg::Deliver { to, msg });
                    }
                }
                Out::PollReady {
                    to,
                    cursor,
                    messages,
                } => {
                    let worker = to.worker();
                    if worker == self.id {
                        self.deliver_poll(to, cursor, messages);
                    } else {
                        let _ = self.shared.inboxes[worker].send(WorkerMsg::PollReady {
                            to,
                            cursor,
                            messages,
                        });
                    }
                }
                Out::ErrorSent(code) => self.m().error(code),
                Out::Acked(waited) => {
                    self.m().messages.inc();
                    self.m().ack_latency.observe(waited);
                    let old = self.commit_pace.get();
                    self.commit_pace.set(old.mul_f64(0.9) + waited.mul_f64(0.1));
                }
                Out::Answer(job) => self.start_answer(key, job),
                Out::Commit(records) => self.commit(key, records),
                Out::Cancel(replies) => self.cancel_replies(key, &replies),
                Out::Desk(ev) => {
                    let _ = self.shared.desk.send(super::desk::DeskMsg::Visitor(ev));
                }
            }
        }
    }

    /// Cancels the replies of sessions nobody has watched for
    /// `inference.abandon_after_ms` (the visitor closed the page).
    pub(crate) fn abandon_unwatched(self: &Rc<Self>, now: Instant) {
        let grace = Duration::from_millis(self.shared.config.inference.abandon_after_ms);
        let effects = self.sessions.borrow_mut().abandon_unwatched(now, grace);
        for (key, out) in effects {
            self.apply(key, out);
        }
    }

    /// Drops from memory the sessions nobody has used for a while; the store
    /// keeps them, and the next request for one loads it again.
    pub(crate) fn evict_sessions(&self, now: Instant) {
        let ttl = Duration::from_secs(self.shared.config.session.memory_idle_secs);
        let evicted = self.sessions.borrow_mut().evict_idle(now, ttl);
        if evicted > 0 {
            self.m().sessions.add(-(evicted as i64));
        }
    }

    /// Hands a session's records to the store; the session hears of the
    /// commit through the inbox (`WorkerMsg::Committed`), in order.
    fn commit(&self, key: SessionKey, records: Vec<Record>) {
        let Some((conversation, site)) = self
            .sessions
            .borrow()
            .get(&key)
            .map(|s| (s.conversation, Arc::clone(&s.site)))
        else {
            return;
        };
        let at = unix_ms();
        let owner = Owner {
            key,
            conversation,
            site: &site,
        };
        let writes: Vec<Write> = records
            .into_iter()
            .map(|r| write_for(r, &owner, at))
            .collect();
        let inbox = self.shared.inboxes[self.id].clone();
        self.store.write_many(
            writes,
            Some(Box::new(move |result: Result<(), StoreError>| {
                let _ = inbox.send(WorkerMsg::Committed { key, result });
            })),
        );
    }

    /// Records a new session (its first conversation) in the store. Nothing
    /// waits for this: a session lost in a crash before its first message is
    /// simply started afresh by the visitor.
    fn record_session(&self, key: SessionKey, conversation: ConversationId, site: &str) {
        self.store.write(
            Write::SessionCreated {
                key,
                conversation,
                site: site.to_string(),
                created_ms: unix_ms(),
            },
            None,
        );
    }

    /// Something for a session that is not in memory: load it from the
    /// store first (once, however much waits for it).
    fn load_then(&self, key: SessionKey, then: Waiting) {
        if !self.sessions.borrow_mut().wait_for_load(key, then) {
            return;
        }
        let inbox = self.shared.inboxes[self.id].clone();
        self.store.load_session(
            &key,
            Box::new(move |r| {
                let result = r.map(|o| o.map(Box::new));
                let _ = inbox.send(WorkerMsg::Loaded { key, result });
            }),
        );
    }

    /// The store answered a load: the session (if any) joins the others and
    /// what waited for it runs.
    pub(crate) fn on_loaded(
        self: &Rc<Self>,
        key: SessionKey,
        result: Result<Option<Box<StoredSession>>, StoreError>,
    ) {
        let waiting = self.sessions.borrow_mut().loaded(&key);
        match result {
            Ok(Some(st)) => {
                let s = session_from(key, *st, Instant::now());
                self.sessions.borrow_mut().insert(key, s);
                self.m().sessions.add(1);
                self.m().sessions_restored.inc();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(worker = self.id, error = %e, "cannot load a session from the store")
            }
        }
        for w in waiting {
            match w {
                Waiting::Op { sub, op } => self.run_op_loaded(key, sub, op),
                Waiting::Desk(ev) => self.on_desk_news_loaded(key, ev),
            }
        }
    }
}
