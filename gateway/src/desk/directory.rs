//! Agent accounts, their tokens and sign-in sessions, canned replies, and
//! who may do what.
//!
//! Plain data and functions: the desk owns one [`Directory`], loads it from
//! the store at start and writes each change through (see `desk`).
//!
//! Tokens are 128 random bits (base64url, prefixed `lca_`), kept only as
//! their SHA-256: a copy of the database hands out no working token. The
//! dashboard's sign-in sessions live in memory (a restart signs agents out;
//! their API tokens still work).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::routing::Profile;
use crate::ids::AgentId;
use crate::store::{CannedReply, StoredAgent};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers conversations of their sites.
    Agent,
    /// Also reads every conversation of their sites and transfers them.
    Supervisor,
    /// Also manages agents, sites and canned replies of their sites.
    Admin,
}

impl Role {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "agent" => Some(Role::Agent),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An agent account as the API shows it (never with its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// Account id.
    pub id: AgentId,
    /// Display name, shown to visitors.
    pub name: String,
    /// What the account may do.
    pub role: Role,
    /// Language tags spoken.
    pub languages: Vec<String>,
    /// Skill tags.
    pub skills: Vec<String>,
    /// Most conversations held at once.
    pub capacity: u32,
    /// Sites served (`*`: every site).
    pub sites: Vec<String>,
    #[serde(skip)]
    token_hash: [u8; 32],
    #[serde(skip)]
    created_ms: u64,
}

impl Account {
    /// The routing profile.
    pub fn profile(&self) -> Profile {
        Profile {
            id: self.id,
            languages: self.languages.clone(),
            skills: self.skills.clone(),
            capacity: self.capacity,
            sites: self.sites.clone(),
        }
    }

    /// Whether the account serves `site`.
    pub fn serves(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s == "*" || s == site)
    }

    /// The stored form.
    pub fn to_stored(&self) -> StoredAgent {
        StoredAgent {
            id: self.id.get(),
            name: self.name.clone(),
            role: self.role.as_str().to_string(),
            languages: self.languages.clone(),
            skills: self.skills.clone(),
            capacity: self.capacity,
            sites: self.sites.clone(),
            token_hash: self.token_hash,
            created_ms: self.created_ms,
        }
    }
}

/// The fields an admin sends to make or change an account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    /// Display name.
    pub name: String,
    /// Role (default `agent`).
    #[serde(default = "default_role")]
    pub role: Role,
    /// Language tags.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Skill tags.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Capacity (default 4, the seeds' 3-5).
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Sites served.
    pub sites: Vec<String>,
}

fn default_role() -> Role {
    Role::Agent
}

fn default_capacity() -> u32 {
    4
}

/// Display name of the account a first start makes ([`Directory::first_start_agent`]).
pub const FIRST_START_AGENT: &str = "Demo admin";

/// Most conversations an agent may be given at once.
pub const MAX_CAPACITY: u32 = 50;

impl AccountInput {
    /// Checks the fields; the message says what to fix.
    pub fn validate(&self, site_exists: impl Fn(&str) -> bool) -> Result<(), String> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err("name must be 1 to 64 characters".into());
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(format!("capacity must be 1 to {MAX_CAPACITY}"));
        }
        let tag_ok = |t: &String, max: usize| {
            !t.is_empty()
                && t.len() <= max
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if self.languages.len() > 16 || !self.languages.iter().all(|l| tag_ok(l, 16)) {
            return Err("languages: at most 16 tags such as \"en\" or \"pt-BR\"".into());
        }
        if self.skills.len() > 32 || !self.skills.iter().all(|s| tag_ok(s, 32)) {
            return Err("skills: at most 32 tags of letters, digits, - and _".into());
        }
        if self.sites.is_empty() {
            return Err("sites: name at least one site the agent serves".into());
        }
        for s in &self.sites {
            if s != "*" && !site_exists(s) {
                return Err(format!("sites: no site '{s}'"));
            }
        }
        Ok(())
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The configured `admin.token`: may do everything.
    Owner,
    /// An agent account.
    Agent(AgentId),
}

/// A new API token and its hash.
pub fn new_token() -> (String, [u8; 32]) {
    let token = new_secret("lca_");
    let hash = hash_token(&token);
    (token, hash)
}

/// 128 random bits, base64url, after `prefix` (which says what the secret is for).
pub fn new_secret(prefix: &str) -> String {
    let mut raw = [0u8; 16];
    // The OS's CSPRNG; failing it, refuse rather than hand out a weak token.
    getrandom::fill(&mut raw).expect("the operating system's random source failed");
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Accounts, tokens, sign-ins and canned replies.
#[derive(Debug, Default)]
pub struct Directory {
    accounts: BTreeMap<AgentId, Account>,
    by_token: HashMap<[u8; 32], AgentId>,
    /// Sign-in sessions: hash of the cookie value → agent and expiry.
    logins: HashMap<[u8; 32], (AgentId, Instant)>,
    canned: BTreeMap<(String, String), String>,
}

impl Directory {
    /// The directory as stored.
    pub fn load(agents: Vec<StoredAgent>, canned: Vec<CannedReply>) -> Self {
        let mut d = Directory::default();
        for a in agents {
            let Some(role) = Role::parse(&a.role) else {
                tracing::warn!(agent = a.id, role = %a.role, "stored agent with an unknown role skipped");
                continue;
            };
            let id = AgentId::new(a.id);
            d.by_token.insert(a.token_hash, id);
            d.accounts.insert(
                id,
                Account {
                    id,
                    name: a.name,
                    role,
                    languages: a.languages,
                    skills: a.skills,
                    capacity: a.capacity,
                    sites: a.sites,
                    token_hash: a.token_hash,
                    created_ms: a.created_ms,
                },
            );
        }
        for c in canned {
            d.canned.insert((c.site, c.shortcut), c.text);
        }
        d
    }

    /// An account.
    pub fn get(&self, id: AgentId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// Every account.
    pub fn all(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// The account a bearer token belongs to.
    pub fn by_token(&self, token: &str) -> Option<AgentId> {
        self.by_token.get(&hash_token(token)).copied()
    }

    /// Makes an account; returns it and its token (shown once).
    pub fn create(&mut self, input: AccountInput, now_ms: u64) -> (Account, String) {
        let id = self
            .accounts
            .keys()
            .next_back()
            .map_or(AgentId::new(1), |k| AgentId::new(k.get() + 1));
        let (token, token_hash) = new_token();
        let a = Account {
            id,
            name: input.name.trim().to_string(),
            role: input.role,
            languages: input.languages,
            skills: input.skills,
            capacity: input.capacity,
            sites: input.sites,
            token_hash,
            created_ms: now_ms,
        };
        self.by_token.insert(token_hash, id);
        self.accounts.insert(id, a.clone());
        (a, token)
    }

    /// The account a first start makes for trying the dashboard: an admin of
    /// `site` named [`FIRST_START_AGENT`], and its new token. An account of
    /// that name and role already there (a first start that did not finish,
    /// or whose hash file was removed to start again) gets a new token
    /// instead of a twin.
    pub fn first_start_agent(&mut self, site: &str, now_ms: u64) -> (Account, String) {
        let existing = self
            .accounts
            .values()
            .find(|a| a.name == FIRST_START_AGENT && a.role == Role::Admin)
            .map(|a| a.id);
        if let Some(made) = existing.and_then(|id| self.rotate_token(id)) {
            return made;
        }
        self.create(
            AccountInput {
                name: FIRST_START_AGENT.into(),
                role: Role::Admin,
                languages: vec!["en".into()],
                skills: Vec::new(),
                capacity: default_capacity(),
                sites: vec![site.to_string()],
            },
            now_ms,
        )
    }

    /// Changes an account's fields (not its token).
    pub fn update(&mut self, id: AgentId, input: AccountInput) -> Option<Account> {
        let a = self.accounts.get_mut(&id)?;
        a.name = input.name.trim().to_string();
        a.role = input.role;
        a.languages = input.languages;
        a.skills = input.skills;
        a.capacity = input.capacity;
        a.sites = input.sites;
        Some(a.clone())
    }

    /// A new token for an account; the old one stops working, and so do its sign-ins.
    pub fn rotate_token(&mut self, id: AgentId) -> Option<(Account, String)> {
        let a = self.accounts.get_mut(&id)?;
        self.by_token.remove(&a.token_hash);
        let (token, hash) = new_token();
        a.token_hash = hash;
        self.by_token.insert(hash, id);
        let a = a.clone();
        self.logins.retain(|_, (agent, _)| *agent != id);
        Some((a, token))
    }

    /// Removes an account, its token and its sign-ins.
    pub fn delete(&mut self, id: AgentId) -> Option<Account> {
        let a = self.accounts.remove(&id)?;
        self.by_token.remove(&a.token_hash);
        self.logins.retain(|_, (agent, _)| *agent != id);
        Some(a)
    }

    /// Signs in with a token: the cookie value of a new sign-in session.
    pub fn login(&mut self, token: &str, now: Instant, ttl: Duration) -> Option<(AgentId, String)> {
        let id = self.by_token(token)?;
        let (cookie, hash) = new_token();
        self.logins.retain(|_, (_, exp)| *exp > now);
        self.logins.insert(hash, (id, now + ttl));
        Some((id, cookie))
    }

    /// The agent a sign-in cookie belongs to, if it is current.
    pub fn session(&self, cookie: &str, now: Instant) -> Option<AgentId> {
        self.logins
            .get(&hash_token(cookie))
            .filter(|(_, exp)| *exp > now)
            .map(|(id, _)| *id)
    }

    /// Ends a sign-in session.
    pub fn logout(&mut self, cookie: &str) {
        self.logins.remove(&hash_token(cookie));
    }

    /// Whether `caller` may see and act on `site`'s agents-side data at `min` role.
    pub fn may(&self, caller: Caller, site: &str, min: Role) -> bool {
        match caller {
            Caller::Owner => true,
            Caller::Agent(id) => self
                .accounts
                .get(&id)
                .is_some_and(|a| a.role >= min && a.serves(site)),
        }
    }

    /// Whether `caller` may make, change or remove an account serving `sites`
    /// with `role`: the owner always; an admin only within their own sites
    /// (an admin of every site for `*`).
    pub fn may_manage(&self, caller: Caller, sites: &[String]) -> bool {
        match caller {
            Caller::Owner => true,
            Caller::Agent(id) => self.accounts.get(&id).is_some_and(|a| {
                a.role == Role::Admin
                    && sites
                        .iter()
                        .all(|s| a.sites.iter().any(|m| m == "*" || m == s))
            }),
        }
    }

    /// A site's canned replies, by shortcut.
    pub fn canned(&self, site: &str) -> Vec<(String, String)> {
        self.canned
            .range((site.to_string(), String::new())..)
            .take_while(|((s, _), _)| s == site)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The canned replies of every site `a` serves: `(site, shortcut, text)`.
    pub fn canned_for<'a>(
        &'a self,
        a: &'a Account,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> + 'a {
        self.canned
            .iter()
            .filter(|((site, _), _)| a.serves(site))
            .map(|((site, k), v)| (site.as_str(), k.as_str(), v.as_str()))
    }

    /// Sets a canned reply; true when it is new.
    pub fn put_canned(&mut self, site: &str, shortcut: &str, text: &str) -> bool {
        self.canned
            .insert((site.to_string(), shortcut.to_string()), text.to_string())
            .is_none()
    }

    /// Removes a canned reply; true when there was one.
    pub fn delete_canned(&mut self, site: &str, shortcut: &str) -> bool {
        self.canned
            .remove(&(site.to_string(), shortcut.to_string()))
            .is_some()
    }
}

/// Whether a canned reply's shortcut is acceptable: 1-32 letters, digits, `-`, `_`.
pub fn valid_shortcut(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, role: Role, sites: &[&str]) -> AccountInput {
        AccountInput {
            name: name.into(),
            role,
            languages: vec!["en".into()],
            skills: vec![],
            capacity: 4,
            sites: sites.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn tokens_authenticate_and_rotate() {
        let mut d = Directory::default();
        let (a, token) = d.create(input("Ada", Role::Agent, &["shop"]), 1);
        assert!(token.starts_with("lca_") && token.len() >= 26);
        assert_eq!(d.by_token(&token), Some(a.id));
        assert_eq!(d.by_token("lca_wrong"), None);
        let now = Instant::now();
        let (_, cookie) = d.login(&token, now, Duration::from_secs(60)).unwrap();
        assert_eq!(d.session(&cookie, now), Some(a.id));
        assert_eq!(
            d.session(&cookie, now + Duration::from_secs(61)),
            None,
            "expired"
        );
        let (_, token2) = d.rotate_token(a.id).unwrap();
        assert_eq!(d.by_token(&token), None, "the old token is dead");
        assert_eq!(d.by_token(&token2), Some(a.id));
        assert_eq!(
            d.session(&cookie, now),
            None,
            "sign-ins end with the old token"
        );
        assert!(d.login("nope", now, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn stored_accounts_keep_their_tokens() {
        let mut d = Directory::default();
        let (a, token) = d.create(input("Ada", Role::Supervisor, &["shop"]), 1);
        let d2 = Directory::load(vec![a.to_stored()], vec![]);
        assert_eq!(d2.by_token(&token), Some(a.id));
        assert_eq!(d2.get(a.id).unwrap().role, Role::Supervisor);
    }

    #[test]
    fn the_first_start_agent_is_made_once() {
        let mut d = Directory::default();
        d.create(input("Ada", Role::Agent, &["shop"]), 1);
        let (a, token) = d.first_start_agent("demo", 2);
        assert_eq!((a.name.as_str(), a.role), (FIRST_START_AGENT, Role::Admin));
        assert_eq!(a.sites, ["demo"]);
        assert_eq!(d.by_token(&token), Some(a.id));
        // Again (an unfinished first start): the same account, a new token.
        let (again, token2) = d.first_start_agent("demo", 3);
        assert_eq!(again.id, a.id);
        assert_eq!(d.all().count(), 2);
        assert_eq!(d.by_token(&token), None);
        assert_eq!(d.by_token(&token2), Some(a.id));
    }

    #[test]
    fn roles_and_sites_decide() {
        let mut d = Directory::default();
        let (agent, _) = d.create(input("A", Role::Agent, &["shop"]), 1);
        let (sup, _) = d.create(input("S", Role::Supervisor, &["shop"]), 1);
        let (admin, _) = d.create(input("M", Role::Admin, &["shop"]), 1);
        let (all, _) = d.create(input("R", Role::Admin, &["*"]), 1);
        let a = Caller::Agent;
        assert!(d.may(a(agent.id), "shop", Role::Agent));
        assert!(!d.may(a(agent.id), "shop", Role::Supervisor));
        assert!(!d.may(a(agent.id), "other", Role::Agent), "another site");
        assert!(d.may(a(sup.id), "shop", Role::Supervisor));
        assert!(!d.may(a(sup.id), "shop", Role::Admin));
        assert!(d.may(a(admin.id), "shop", Role::Admin));
        assert!(!d.may(a(admin.id), "other", Role::Agent));
        assert!(d.may(a(all.id), "other", Role::Admin));
        assert!(d.may(Caller::Owner, "other", Role::Admin));
        let shop = vec!["shop".to_string()];
        let other = vec!["other".to_string()];
        assert!(!d.may_manage(a(agent.id), &shop), "an agent manages no one");
        assert!(!d.may_manage(a(sup.id), &shop));
        assert!(d.may_manage(a(admin.id), &shop));
        assert!(!d.may_manage(a(admin.id), &other));
        assert!(!d.may_manage(a(admin.id), &["*".to_string()]));
        assert!(d.may_manage(a(all.id), &other));
        assert!(
            !d.may(a(AgentId::new(999)), "shop", Role::Agent),
            "deleted or unknown"
        );
    }

    #[test]
    fn input_is_checked() {
        let exists = |s: &str| s == "shop";
        assert!(input("Ada", Role::Agent, &["shop"])
            .validate(exists)
            .is_ok());
        assert!(input(" ", Role::Agent, &["shop"]).validate(exists).is_err());
        assert!(input("Ada", Role::Agent, &[]).validate(exists).is_err());
        assert!(input("Ada", Role::Agent, &["nope"])
            .validate(exists)
            .is_err());
        let mut i = input("Ada", Role::Agent, &["shop"]);
        i.capacity = 0;
        assert!(i.validate(exists).is_err());
        i.capacity = 4;
        i.languages = vec!["en; drop".into()];
        assert!(i.validate(exists).is_err());
    }

    #[test]
    fn canned_replies_are_per_site() {
        let mut d = Directory::default();
        assert!(d.put_canned("shop", "hi", "Hello!"));
        assert!(!d.put_canned("shop", "hi", "Hello there!"));
        d.put_canned("shopx", "bye", "Bye");
        assert_eq!(d.canned("shop"), vec![("hi".into(), "Hello there!".into())]);
        assert!(d.delete_canned("shop", "hi"));
        assert!(!d.delete_canned("shop", "hi"));
        assert!(valid_shortcut("refund-policy"));
        assert!(!valid_shortcut("a b"));
    }
}
