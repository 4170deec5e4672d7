//! Routing: which agent is offered which waiting conversation.
//!
//! Sans-IO: the router holds the agents' routing profiles and load and the
//! queue of conversations waiting for a person; the desk tells it what
//! happened (an agent came online, took or declined a conversation, a
//! conversation joined the queue) and asks it for offers to make.
//!
//! The rules, in order:
//! - **First come, first served**: the conversation waiting longest is matched
//!   first, so it gets the best agent free at that moment. A conversation no
//!   free agent may serve (another site's, say) does not hold up those behind it.
//! - An agent is **eligible** when online, available, serving the
//!   conversation's site, under capacity (held plus offered conversations), and
//!   has not declined this conversation.
//! - Among eligible agents: one who **speaks the visitor's language** (primary
//!   subtags compared: `fr-CA` matches `fr`), then one with the **skill** the
//!   conversation asks for, then the **least loaded**; ties go to the agent
//!   idle longest (least recently offered), then the lowest id.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::ids::{AgentId, ConversationId};

/// What routing needs to know of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Account id.
    pub id: AgentId,
    /// Language tags spoken.
    pub languages: Vec<String>,
    /// Skill tags.
    pub skills: Vec<String>,
    /// Most conversations held (and offered) at once.
    pub capacity: u32,
    /// Sites served; `*` serves every site.
    pub sites: Vec<String>,
}

impl Profile {
    /// Whether the agent serves `site`.
    pub fn serves(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s == "*" || s == site)
    }

    fn speaks(&self, lang: &str) -> bool {
        let want = primary(lang);
        !want.is_empty()
            && self
                .languages
                .iter()
                .any(|l| primary(l).eq_ignore_ascii_case(want))
    }
}

/// A language tag's primary subtag (`pt-BR` → `pt`); compared without case.
/// Borrowed: routing compares it for every waiting conversation and agent.
fn primary(tag: &str) -> &str {
    tag.split(['-', '_']).next().unwrap_or("").trim()
}

#[derive(Debug)]
struct Agent {
    profile: Profile,
    online: bool,
    available: bool,
    /// Conversations held.
    held: u32,
    /// Conversations offered and not yet answered.
    offered: u32,
    /// Order of the agent's last offer or assignment (0: never): the idle
    /// longest has the lowest.
    last_busy: u64,
}

impl Agent {
    fn load(&self) -> u32 {
        self.held + self.offered
    }
}

/// A conversation waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The conversation.
    pub conv: ConversationId,
    /// Its site.
    pub site: String,
    /// The visitor's language tag, if known.
    pub lang: Option<String>,
    /// The skill asked for, if any.
    pub skill: Option<String>,
    /// When it started waiting (its place in line).
    pub since: Instant,
}

#[derive(Debug)]
struct Entry {
    w: Waiting,
    /// The agent it is offered to, and until when.
    offer: Option<(AgentId, Instant)>,
    declined: Vec<AgentId>,
}

/// An offer to make: `conv` to `agent`, open until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The conversation.
    pub conv: ConversationId,
    /// The agent chosen.
    pub agent: AgentId,
    /// When the offer lapses.
    pub until: Instant,
}

/// Why an agent may not take a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TakeError {
    /// The conversation is not waiting (taken by someone else, or gone).
    #[error("the conversation is not waiting for an agent (taken, or ended)")]
    NotWaiting,
    /// It is offered to another agent right now.
    #[error("the conversation is offered to another agent")]
    OfferedToOther,
    /// The agent does not serve its site.
    #[error("the conversation belongs to a site this agent does not serve")]
    WrongSite,
    /// The agent holds as many conversations as their capacity.
    #[error("at capacity: resolve or release a conversation first")]
    AtCapacity,
    /// No such agent.
    #[error("unknown agent")]
    UnknownAgent,
}

/// The router's state.
#[derive(Debug, Default)]
pub struct Router {
    agents: BTreeMap<AgentId, Agent>,
    /// Oldest first.
    queue: Vec<Entry>,
    busy_counter: u64,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an agent (offline) or updates their profile, keeping their state.
    pub fn upsert_agent(&mut self, profile: Profile) {
        match self.agents.get_mut(&profile.id) {
            Some(a) => a.profile = profile,
            None => {
                self.agents.insert(
                    profile.id,
                    Agent {
                        profile,
                        online: false,
                        available: true,
                        held: 0,
                        offered: 0,
                        last_busy: 0,
                    },
                );
            }
        }
    }

    /// Removes an agent; returns the conversations offered to them (back to waiting).
    pub fn remove_agent(&mut self, id: AgentId) -> Vec<ConversationId> {
        self.agents.remove(&id);
        self.revoke_offers(id)
    }

    /// Marks an agent online or offline. Going offline revokes their offers
    /// (returned); what they hold is the desk's business.
    pub fn set_online(&mut self, id: AgentId, online: bool) -> Vec<ConversationId> {
        if let Some(a) = self.agents.get_mut(&id) {
            a.online = online;
        }
        if online {
            Vec::new()
        } else {
            self.revoke_offers(id)
        }
    }

    /// Marks an agent available for new conversations or away. Going away
    /// revokes their offers (returned).
    pub fn set_available(&mut self, id: AgentId, available: bool) -> Vec<ConversationId> {
        if let Some(a) = self.agents.get_mut(&id) {
            a.available = available;
        }
        if available {
            Vec::new()
        } else {
            self.revoke_offers(id)
        }
    }

    fn revoke_offers(&mut self, id: AgentId) -> Vec<ConversationId> {
        let mut out = Vec::new();
        for e in &mut self.queue {
            if e.offer.is_some_and(|(a, _)| a == id) {
                e.offer = None;
                out.push(e.w.conv);
            }
        }
        if let Some(a) = self.agents.get_mut(&id) {
            a.offered = 0;
        }
        out
    }

    /// Whether some agent of `site` is online and available (else the visitor
    /// is told `none_available` at once).
    pub fn anyone_for(&self, site: &str) -> bool {
        self.agents
            .values()
            .any(|a| a.online && a.available && a.profile.serves(site))
    }

    /// Puts a conversation in line by its `since` (a conversation coming back
    /// from an agent keeps its original place).
    pub fn enqueue(&mut self, w: Waiting) {
        if self.queue.iter().any(|e| e.w.conv == w.conv) {
            return;
        }
        let at = self.queue.partition_point(|e| e.w.since <= w.since);
        self.queue.insert(
            at,
            Entry {
                w,
                offer: None,
                declined: Vec::new(),
            },
        );
    }

    /// Takes a conversation out of line (it ended, or the visitor left);
    /// an open offer for it is withdrawn.
    pub fn dequeue(&mut self, conv: &ConversationId) -> Option<Waiting> {
        let i = self.queue.iter().position(|e| &e.w.conv == conv)?;
        let e = self.queue.remove(i);
        if let Some((agent, _)) = e.offer {
            if let Some(a) = self.agents.get_mut(&agent) {
                a.offered = a.offered.saturating_sub(1);
            }
        }
        Some(e.w)
    }

    /// Whether a conversation is waiting.
    pub fn is_waiting(&self, conv: &ConversationId) -> bool {
        self.queue.iter().any(|e| &e.w.conv == conv)
    }

    /// The agent a waiting conversation is offered to.
    pub fn offered_to(&self, conv: &ConversationId) -> Option<AgentId> {
        self.queue
            .iter()
            .find(|e| &e.w.conv == conv)
            .and_then(|e| e.offer.map(|(a, _)| a))
    }

    /// `agent` takes `conv` from the line (an offer to them, or a conversation
    /// nobody was offered). On success the conversation counts as held.
    pub fn take(&mut self, conv: &ConversationId, agent: AgentId) -> Result<Waiting, TakeError> {
        let i = self
            .queue
            .iter()
            .position(|e| &e.w.conv == conv)
            .ok_or(TakeError::NotWaiting)?;
        let a = self.agents.get(&agent).ok_or(TakeError::UnknownAgent)?;
        let e = &self.queue[i];
        if !a.profile.serves(&e.w.site) {
            return Err(TakeError::WrongSite);
        }
        let offered_here = match e.offer {
            Some((other, _)) if other != agent => return Err(TakeError::OfferedToOther),
            Some(_) => true,
            None => false,
        };
        // An offer already counts in the agent's load.
        if !offered_here && a.load() >= a.profile.capacity {
            return Err(TakeError::AtCapacity);
        }
        let e = self.queue.remove(i);
        self.busy_counter += 1;
        if let Some(a) = self.agents.get_mut(&agent) {
            if offered_here {
                a.offered = a.offered.saturating_sub(1);
            }
            a.held += 1;
            a.last_busy = self.busy_counter;
        }
        Ok(e.w)
    }

    /// `agent` declines the offer of `conv`: it waits for the next agent.
    /// Returns whether there was such an offer.
    pub fn decline(&mut self, conv: &ConversationId, agent: AgentId) -> bool {
        let Some(e) = self
            .queue
            .iter_mut()
            .find(|e| &e.w.conv == conv && e.offer.is_some_and(|(a, _)| a == agent))
        else {
            return false;
        };
        e.offer = None;
        e.declined.push(agent);
        if let Some(a) = self.agents.get_mut(&agent) {
            a.offered = a.offered.saturating_sub(1);
        }
        true
    }

    /// Offers that lapsed by `now`, each treated as declined; returns them.
    pub fn expire_offers(&mut self, now: Instant) -> Vec<Offer> {
        let mut lapsed = Vec::new();
        for e in &mut self.queue {
            if let Some((agent, until)) = e.offer {
                if until <= now {
                    e.offer = None;
                    e.declined.push(agent);
                    lapsed.push(Offer {
                        conv: e.w.conv,
                        agent,
                        until,
                    });
                }
            }
        }
        for o in &lapsed {
            if let Some(a) = self.agents.get_mut(&o.agent) {
                a.offered = a.offered.saturating_sub(1);
            }
        }
        lapsed
    }

    /// The earliest time an offer lapses.
    pub fn next_offer_deadline(&self) -> Option<Instant> {
        self.queue
            .iter()
            .filter_map(|e| e.offer.map(|(_, t)| t))
            .min()
    }

    /// Waiting conversations that have waited since before `cutoff`, not on
    /// offer: they leave the line (returned) and their visitors are told no
    /// one is available.
    pub fn expire_waiting(&mut self, cutoff: Instant) -> Vec<Waiting> {
        let mut gone = Vec::new();
        self.queue.retain(|e| {
            let stale = e.w.since < cutoff && e.offer.is_none();
            if stale {
                gone.push(e.w.clone());
            }
            !stale
        });
        gone
    }

    /// The oldest waiting conversation's `since`.
    pub fn oldest_waiting(&self) -> Option<Instant> {
        self.queue
            .iter()
            .filter(|e| e.offer.is_none())
            .map(|e| e.w.since)
            .min()
    }

    /// An agent holds one conversation fewer (resolved, released, transferred away).
    pub fn release(&mut self, agent: AgentId) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.held = a.held.saturating_sub(1);
        }
    }

    /// An agent holds one conversation more without the line (a transfer to
    /// them, or a conversation restored after a restart).
    pub fn hold(&mut self, agent: AgentId) {
        self.busy_counter += 1;
        if let Some(a) = self.agents.get_mut(&agent) {
            a.held += 1;
            a.last_busy = self.busy_counter;
        }
    }

    /// Whether an agent is marked available (online or not).
    pub fn is_available(&self, agent: AgentId) -> bool {
        self.agents.get(&agent).is_some_and(|a| a.available)
    }

    /// Conversations held by an agent, and their capacity.
    pub fn load_of(&self, agent: AgentId) -> Option<(u32, u32)> {
        self.agents
            .get(&agent)
            .map(|a| (a.load(), a.profile.capacity))
    }

    /// Matches waiting conversations with eligible agents, oldest first, and
    /// returns the offers made (each open for `ttl`).
    ///
    /// Only agents with room are considered, and the scan stops once none is
    /// left: with a long line and busy agents (the usual case in a surge) a
    /// call costs the few free agents, not the whole line times every agent.
    pub fn dispatch(&mut self, now: Instant, ttl: Duration) -> Vec<Offer> {
        let mut free: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.online && a.available && a.load() < a.profile.capacity)
            .map(|a| a.profile.id)
            .collect();
        let mut offers = Vec::new();
        for i in 0..self.queue.len() {
            if free.is_empty() {
                break;
            }
            if self.queue[i].offer.is_some() {
                continue;
            }
            let Some(agent) = self.best_agent(&self.queue[i], &free) else {
                continue;
            };
            let until = now + ttl;
            self.queue[i].offer = Some((agent, until));
            self.busy_counter += 1;
            if let Some(a) = self.agents.get_mut(&agent) {
                a.offered += 1;
                a.last_busy = self.busy_counter;
                if a.load() >= a.profile.capacity {
                    free.retain(|f| *f != agent);
                }
            }
            offers.push(Offer {
                conv: self.queue[i].w.conv,
                agent,
                until,
            });
        }
        offers
    }

    fn best_agent(&self, e: &Entry, free: &[AgentId]) -> Option<AgentId> {
        let lang = e.w.lang.as_deref().unwrap_or("");
        let skill = e.w.skill.as_deref();
        free.iter()
            .filter_map(|id| self.agents.get(id))
            .filter(|a| a.profile.serves(&e.w.site) && !e.declined.contains(&a.profile.id))
            .min_by_key(|a| {
                (
                    !a.profile.speaks(lang),
                    !skill.is_some_and(|s| a.profile.skills.iter().any(|k| k == s)),
                    a.load(),
                    a.last_busy,
                    a.profile.id,
                )
            })
            .map(|a| a.profile.id)
    }

    /// A waiting conversation's 1-based position among its site's.
    pub fn position(&self, conv: &ConversationId) -> Option<u32> {
        let e = self.queue.iter().position(|e| &e.w.conv == conv)?;
        let site = &self.queue[e].w.site;
        Some(
            self.queue[..=e]
                .iter()
                .filter(|x| &x.w.site == site)
                .count() as u32,
        )
    }

    /// Every waiting conversation with its 1-based position among its site's,
    /// oldest first.
    pub fn positions(&self) -> Vec<(ConversationId, u32)> {
        let mut per_site: BTreeMap<&str, u32> = BTreeMap::new();
        self.queue
            .iter()
            .map(|e| {
                let n = per_site.entry(e.w.site.as_str()).or_insert(0);
                *n += 1;
                (e.w.conv, *n)
            })
            .collect()
    }

    /// The waiting conversations, oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = &Waiting> {
        self.queue.iter().map(|e| &e.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(n: u8) -> ConversationId {
        ConversationId::from_bytes([n; 12])
    }

    const A1: AgentId = AgentId::new(1);
    const A2: AgentId = AgentId::new(2);

    fn agent(id: u64, langs: &[&str], skills: &[&str], cap: u32) -> Profile {
        Profile {
            id: AgentId::new(id),
            languages: langs.iter().map(|s| s.to_string()).collect(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            capacity: cap,
            sites: vec!["shop".into()],
        }
    }

    fn waiting(n: u8, lang: Option<&str>, skill: Option<&str>, since: Instant) -> Waiting {
        Waiting {
            conv: conv(n),
            site: "shop".into(),
            lang: lang.map(str::to_string),
            skill: skill.map(str::to_string),
            since,
        }
    }

    fn router(agents: Vec<Profile>) -> Router {
        let mut r = Router::new();
        for a in agents {
            let id = a.id;
            r.upsert_agent(a);
            r.set_online(id, true);
        }
        r
    }

    const TTL: Duration = Duration::from_secs(20);

    #[test]
    fn language_comes_first() {
        let t0 = Instant::now();
        let mut r = router(vec![
            agent(1, &["en"], &["billing"], 4),
            agent(2, &["fr"], &[], 4),
        ]);
        r.enqueue(waiting(1, Some("fr-CA"), Some("billing"), t0));
        let o = r.dispatch(t0, TTL);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].agent, A2, "the French speaker wins over the skill");
    }

    #[test]
    fn skill_comes_second() {
        let t0 = Instant::now();
        let mut r = router(vec![
            agent(1, &["en"], &[], 4),
            agent(2, &["en"], &["billing"], 4),
        ]);
        r.enqueue(waiting(1, Some("en"), Some("billing"), t0));
        assert_eq!(r.dispatch(t0, TTL)[0].agent, A2);
    }

    #[test]
    fn least_loaded_comes_third() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 4), agent(2, &["en"], &[], 4)]);
        r.hold(A1);
        r.enqueue(waiting(1, Some("en"), None, t0));
        assert_eq!(r.dispatch(t0, TTL)[0].agent, A2);
    }

    #[test]
    fn ties_go_to_the_agent_idle_longest_then_lowest_id() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 4), agent(2, &["en"], &[], 4)]);
        // Never busy, equal load: lowest id.
        r.enqueue(waiting(1, None, None, t0));
        assert_eq!(r.dispatch(t0, TTL)[0].agent, A1);
        r.take(&conv(1), A1).unwrap();
        r.release(A1);
        // Equal load again; agent 2 has been idle longer.
        r.enqueue(waiting(2, None, None, t0));
        assert_eq!(r.dispatch(t0, TTL)[0].agent, A2);
    }

    #[test]
    fn capacity_is_never_exceeded() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 2)]);
        for n in 1..=3 {
            r.enqueue(waiting(n, None, None, t0 + Duration::from_millis(n as u64)));
        }
        let o = r.dispatch(t0, TTL);
        assert_eq!(
            o.iter().map(|o| o.conv.as_bytes()[0]).collect::<Vec<_>>(),
            vec![1, 2],
            "offers count toward capacity; the third waits"
        );
        assert_eq!(r.load_of(A1), Some((2, 2)));
        r.take(&conv(1), A1).unwrap();
        r.take(&conv(2), A1).unwrap();
        assert!(r.dispatch(t0, TTL).is_empty());
        assert_eq!(r.take(&conv(3), A1), Err(TakeError::AtCapacity));
        r.release(A1);
        assert_eq!(r.dispatch(t0, TTL)[0].conv, conv(3));
    }

    #[test]
    fn first_come_first_served_gets_the_best_agent() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["de"], &[], 1), agent(2, &["en"], &[], 1)]);
        // Enqueued out of order: the line is by waiting time.
        r.enqueue(waiting(2, Some("de"), None, t0 + Duration::from_secs(2)));
        r.enqueue(waiting(1, Some("de"), None, t0));
        let o = r.dispatch(t0, TTL);
        assert_eq!(
            o[0],
            Offer {
                conv: conv(1),
                agent: A1,
                until: t0 + TTL
            }
        );
        assert_eq!(o[1].conv, conv(2));
        assert_eq!(
            o[1].agent, A2,
            "the German speaker is busy with the older one"
        );
    }

    #[test]
    fn another_sites_conversation_does_not_block_the_line() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 4)]);
        let mut other = waiting(1, None, None, t0);
        other.site = "elsewhere".into();
        r.enqueue(other);
        r.enqueue(waiting(2, None, None, t0 + Duration::from_secs(1)));
        let o = r.dispatch(t0, TTL);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].conv, conv(2));
        assert!(!r.anyone_for("elsewhere"));
        assert!(r.anyone_for("shop"));
    }

    #[test]
    fn offline_and_away_agents_get_nothing_and_lose_their_offers() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 4), agent(2, &["en"], &[], 4)]);
        r.set_available(A1, false);
        r.enqueue(waiting(1, None, None, t0));
        assert_eq!(r.dispatch(t0, TTL)[0].agent, A2);
        assert_eq!(r.set_online(A2, false), vec![conv(1)]);
        assert!(r.dispatch(t0, TTL).is_empty(), "nobody left to offer to");
        assert_eq!(r.set_available(A1, true), Vec::<ConversationId>::new());
        assert_eq!(r.dispatch(t0, TTL)[0].agent, A1);
    }

    #[test]
    fn a_declined_or_lapsed_offer_goes_to_the_next_agent() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 4), agent(2, &["en"], &[], 4)]);
        r.enqueue(waiting(1, None, None, t0));
        assert_eq!(r.dispatch(t0, TTL)[0].agent, A1);
        assert!(r.decline(&conv(1), A1));
        assert!(!r.decline(&conv(1), A1), "no second decline");
        let o = r.dispatch(t0, TTL);
        assert_eq!(o[0].agent, A2);
        assert_eq!(r.next_offer_deadline(), Some(t0 + TTL));
        assert!(r
            .expire_offers(t0 + TTL - Duration::from_millis(1))
            .is_empty());
        let lapsed = r.expire_offers(t0 + TTL);
        assert_eq!(lapsed.len(), 1);
        assert_eq!(lapsed[0].agent, A2);
        assert!(r.dispatch(t0, TTL).is_empty(), "both declined");
        assert_eq!(r.load_of(A1), Some((0, 4)));
        assert_eq!(r.load_of(A2), Some((0, 4)));
        // A declining agent may still take it by hand.
        assert!(r.take(&conv(1), A1).is_ok());
    }

    #[test]
    fn take_rules() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 4), agent(2, &["en"], &[], 4)]);
        let mut other = waiting(9, None, None, t0);
        other.site = "elsewhere".into();
        r.enqueue(other);
        assert_eq!(r.take(&conv(9), A1), Err(TakeError::WrongSite));
        r.enqueue(waiting(1, None, None, t0));
        r.dispatch(t0, TTL);
        assert_eq!(r.offered_to(&conv(1)), Some(A1));
        assert_eq!(r.take(&conv(1), A2), Err(TakeError::OfferedToOther));
        assert_eq!(
            r.take(&conv(1), AgentId::new(7)),
            Err(TakeError::UnknownAgent)
        );
        assert!(r.take(&conv(1), A1).is_ok());
        assert_eq!(r.take(&conv(1), A1), Err(TakeError::NotWaiting));
        assert_eq!(r.load_of(A1), Some((1, 4)));
    }

    #[test]
    fn positions_are_per_site_and_move_up() {
        let t0 = Instant::now();
        let mut r = Router::new();
        for n in 1..=3u8 {
            let mut w = waiting(n, None, None, t0 + Duration::from_millis(n as u64));
            if n == 2 {
                w.site = "elsewhere".into();
            }
            r.enqueue(w);
        }
        assert_eq!(
            r.positions(),
            vec![(conv(1), 1), (conv(2), 1), (conv(3), 2)]
        );
        r.dequeue(&conv(1));
        assert_eq!(r.positions(), vec![(conv(2), 1), (conv(3), 1)]);
    }

    #[test]
    fn long_waits_leave_the_line_but_not_while_offered() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 1)]);
        r.enqueue(waiting(1, None, None, t0));
        r.enqueue(waiting(2, None, None, t0 + Duration::from_millis(1)));
        r.dispatch(t0, TTL);
        let gone = r.expire_waiting(t0 + Duration::from_secs(60));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].conv, conv(2));
        assert!(r.is_waiting(&conv(1)));
        assert_eq!(r.oldest_waiting(), None, "the only one left is on offer");
    }

    #[test]
    fn removing_an_agent_returns_their_offers_and_dequeue_frees_the_slot() {
        let t0 = Instant::now();
        let mut r = router(vec![agent(1, &["en"], &[], 1)]);
        r.enqueue(waiting(1, None, None, t0));
        r.dispatch(t0, TTL);
        assert_eq!(r.load_of(A1), Some((1, 1)));
        assert!(r.dequeue(&conv(1)).is_some());
        assert_eq!(r.load_of(A1), Some((0, 1)));
        r.enqueue(waiting(2, None, None, t0));
        r.dispatch(t0, TTL);
        assert_eq!(r.remove_agent(A1), vec![conv(2)]);
        assert!(r.is_waiting(&conv(2)));
    }

    #[test]
    fn language_match_uses_primary_subtags() {
        let a = agent(1, &["pt-BR", "EN"], &[], 1);
        assert!(a.speaks("pt"));
        assert!(a.speaks("pt_PT"));
        assert!(a.speaks("en-GB"));
        assert!(!a.speaks("es"));
        assert!(!a.speaks(""));
    }
}
