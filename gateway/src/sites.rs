//! Sites: who may embed the widget, what it looks like, what it says first.
//!
//! The registry is read on every upgrade and poll by every worker and changed
//! only by the admin API, so it sits behind an `ArcSwap`: readers take no lock,
//! a writer publishes a whole new map. Changes made through the admin API are
//! kept in `sites.json` in the data directory and win over the config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

/// The site every gateway has unless configured otherwise.
pub const DEMO_SITE: &str = "demo";

/// A proactive trigger the widget runs: when its conditions hold, it opens
/// with `message`, once per session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trigger {
    /// Seconds on the page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_seconds: Option<u32>,
    /// Scroll depth, percent of the page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scroll_percent: Option<u8>,
    /// A regular expression the page URL must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_pattern: Option<String>,
    /// What the widget says.
    pub message: String,
}

/// A rule that hands a conversation to a person without the visitor asking:
/// a keyword in a visitor's message, or the page the visitor is on (`*`
/// matches any run of characters). Either or both; both must hold when both
/// are given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffRule {
    /// A word or phrase, matched without regard to case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// A page URL pattern such as `https://shop.example/checkout*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// The skill routing should look for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
}

impl HandoffRule {
    /// Whether the rule holds for a visitor's message on `page`;
    /// `text_lower` is the message lowercased (once for all the rules).
    pub fn matches(&self, text_lower: &str, page: Option<&str>) -> bool {
        if self.keyword.is_none() && self.page.is_none() {
            return false;
        }
        let kw = self
            .keyword
            .as_deref()
            .is_none_or(|k| text_lower.contains(&k.to_lowercase()));
        let pg = self
            .page
            .as_deref()
            .is_none_or(|p| page.is_some_and(|u| wildcard(p, u)));
        kw && pg
    }

    /// Why, for the agent's card.
    pub fn reason(&self) -> String {
        match (&self.keyword, &self.page) {
            (Some(k), Some(p)) => format!("site rule: '{k}' on {p}"),
            (Some(k), None) => format!("site rule: the visitor wrote '{k}'"),
            (None, Some(p)) => format!("site rule: the visitor is on {p}"),
            (None, None) => "site rule".into(),
        }
    }
}

/// `*`-wildcard match of the whole of `s`.
fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// One site's settings, as the config file and the admin API spell them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// Origins (`https://shop.example`) whose pages may open a WebSocket or
    /// long-poll directly. The gateway's own origin, where the widget's iframe
    /// lives, is always allowed; so are clients that send no `Origin`.
    pub allowed_origins: Vec<String>,
    /// The AI's standing instructions for this site (never sent to browsers).
    pub instructions: String,
    /// How the AI should sound ("warm, brief, no jargon").
    pub tone: Option<String>,
    /// Rules the AI must keep ("Never discuss competitor pricing.").
    pub rules: Vec<String>,
    /// Example exchanges that show the AI how this site answers.
    pub examples: Vec<Example>,
    /// Proactive triggers.
    pub triggers: Vec<Trigger>,
    /// Theme tokens for the widget (CSS custom property values by name).
    pub theme: BTreeMap<String, String>,
    /// Title of the chat window.
    pub title: Option<String>,
    /// First line the widget shows before anyone writes.
    pub greeting: Option<String>,
    /// Rules that hand a conversation to a person without the visitor asking.
    pub handoff: Vec<HandoffRule>,
    /// A reply whose confidence is below this offers the conversation to a
    /// person (0, the default, never does). Confidence comes from how well
    /// the site's knowledge base matched the question (docs/operations.md,
    /// "Knowledge bases"); a site without one reports 0.5.
    pub human_below_confidence: f32,
    /// Where the site's ingested documents are published (`https://shop.example/help/`):
    /// the widget links a source whose URL is a path relative to the ingested
    /// folder (`returns.md`) to that path under this URL, and shows it as a
    /// plain title without one. Sent to the widget in `welcome`'s `config`;
    /// a missing final `/` is added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docs_base_url: Option<String>,
}

/// One example exchange for the AI's instructions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Example {
    /// What a visitor asks.
    pub question: String,
    /// How the site wants it answered.
    pub answer: String,
}

/// What the widget receives in `welcome`'s `config`: the public part of a site.
#[derive(Serialize)]
struct WidgetConfig<'a> {
    site: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    greeting: Option<&'a str>,
    theme: &'a BTreeMap<String, String>,
    triggers: &'a [Trigger],
    #[serde(skip_serializing_if = "Option::is_none")]
    docs_base_url: Option<&'a str>,
}

/// A site ready to serve.
#[derive(Debug)]
pub struct Site {
    /// Site id.
    pub id: Arc<str>,
    /// Settings.
    pub config: SiteConfig,
    /// `welcome`'s `config`, serialized once.
    pub widget_config: Box<RawValue>,
    /// The system prompt's standing part: instructions, tone, rules and
    /// examples, composed once.
    pub system_prompt: String,
}

/// Why a site definition is refused.
#[derive(Debug, Error)]
pub enum SiteError {
    /// Bad id.
    #[error("site id {0:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    BadId(String),
    /// Bad origin.
    #[error("allowed origin {0:?} must look like https://host[:port] with no path")]
    BadOrigin(String),
    /// A setting out of its range.
    #[error("{key}: {reason}")]
    BadSetting {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Bad trigger.
    #[error("trigger {index}: {reason}")]
    BadTrigger {
        /// Position in `triggers`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The store cannot be written.
    #[error("cannot save sites to {path}: {source}")]
    Save {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The store cannot be read.
    #[error("cannot load sites from {path}: {reason}")]
    Load {
        /// File.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
}

/// Whether `id` can name a site.
pub fn valid_site_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Site {
    /// Checks a site's settings and prepares it for serving.
    pub fn new(id: &str, config: SiteConfig) -> Result<Site, SiteError> {
        if !valid_site_id(id) {
            return Err(SiteError::BadId(id.to_string()));
        }
        for o in &config.allowed_origins {
            if normalize_origin(o).is_none() {
                return Err(SiteError::BadOrigin(o.clone()));
            }
        }
        for (index, t) in config.triggers.iter().enumerate() {
            if t.message.trim().is_empty() {
                return Err(SiteError::BadTrigger {
                    index,
                    reason: "message is empty".into(),
                });
            }
            if t.scroll_percent.is_some_and(|p| p > 100) {
                return Err(SiteError::BadTrigger {
                    index,
                    reason: "scroll_percent is over 100".into(),
                });
            }
        }
        if !(0.0..=1.0).contains(&config.human_below_confidence) {
            return Err(SiteError::BadSetting {
                key: "human_below_confidence",
                reason: format!("{} is not between 0 and 1", config.human_below_confidence),
            });
        }
        let mut config = config;
        if let Some(url) = &config.docs_base_url {
            config.docs_base_url = Some(docs_base(url).ok_or_else(|| SiteError::BadSetting {
                key: "docs_base_url",
                reason: format!(
                    "{url:?} must be an absolute http(s) URL with no query or fragment"
                ),
            })?);
        }
        if let Some(i) = config
            .examples
            .iter()
            .position(|e| e.question.trim().is_empty() || e.answer.trim().is_empty())
        {
            return Err(SiteError::BadSetting {
                key: "examples",
                reason: format!("example {i} needs both a question and an answer"),
            });
        }
        let wc = WidgetConfig {
            site: id,
            title: config.title.as_deref().unwrap_or("Chat with us"),
            greeting: config.greeting.as_deref(),
            theme: &config.theme,
            triggers: &config.triggers,
            docs_base_url: config.docs_base_url.as_deref(),
        };
        let json = serde_json::to_string(&wc).map_err(|e| SiteError::BadTrigger {
            index: 0,
            reason: e.to_string(),
        })?;
        let widget_config = RawValue::from_string(json).map_err(|e| SiteError::BadTrigger {
            index: 0,
            reason: e.to_string(),
        })?;
        for o in &mut config.allowed_origins {
            if let Some(n) = normalize_origin(o) {
                *o = n;
            }
        }
        let system_prompt = crate::session::prompt::system_text(
            &config.instructions,
            config.tone.as_deref(),
            &config.rules,
            config
                .examples
                .iter()
                .map(|e| (e.question.as_str(), e.answer.as_str())),
        );
        Ok(Site {
            id: Arc::from(id),
            config,
            widget_config,
            system_prompt,
        })
    }

    /// Whether a request with this `Origin` header, sent to this `Host`, may
    /// use the site's WebSocket and long-poll endpoints.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            // Browsers always send Origin on upgrades and cross-origin requests;
            // a client without one is not a browser page that could be hijacked.
            return true;
        };
        let Some(origin) = normalize_origin(origin) else {
            return false;
        };
        if let Some(host) = host {
            // The gateway's own origin: the widget's iframe is served from it.
            let own = origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
            if own {
                return true;
            }
        }
        self.config.allowed_origins.contains(&origin)
    }
}

/// `docs_base_url` as the widget resolves against it: an absolute http(s)
/// URL naming a folder (ending in `/`, so that `returns.md` lands inside it
/// rather than beside it), or `None` when `url` is not one.
fn docs_base(url: &str) -> Option<String> {
    if url.contains(['?', '#']) {
        return None;
    }
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        || uri.host().is_none_or(str::is_empty)
    {
        return None;
    }
    Some(if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    })
}

/// `scheme://host[:port]` lower-cased, or `None` when `o` is not an origin.
pub fn normalize_origin(o: &str) -> Option<String> {
    let (scheme, rest) = o.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// All sites, swapped whole on change.
pub struct SiteRegistry {
    sites: ArcSwap<BTreeMap<String, Arc<Site>>>,
    store: Option<PathBuf>,
}

impl SiteRegistry {
    /// Sites from the config file, overlaid with those the admin API saved in
    /// `data_dir`; `demo` is added when neither defines it.
    pub fn load(
        configured: &BTreeMap<String, SiteConfig>,
        data_dir: Option<&Path>,
    ) -> Result<Self, SiteError> {
        let mut all: BTreeMap<String, SiteConfig> = configured.clone();
        let store = data_dir.map(|d| d.join("sites.json"));
        if let Some(path) = &store {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let saved: BTreeMap<String, Option<SiteConfig>> =
                        serde_json::from_slice(&bytes).map_err(|e| SiteError::Load {
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                    for (id, cfg) in saved {
                        match cfg {
                            Some(cfg) => all.insert(id, cfg),
                            // A site deleted through the admin API stays deleted.
                            None => all.remove(&id),
                        };
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(SiteError::Load {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        if !configured.contains_key(DEMO_SITE) && !all.contains_key(DEMO_SITE) {
            let demo_deleted = store
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| {
                    serde_json::from_slice::<BTreeMap<String, Option<SiteConfig>>>(&b).ok()
                })
                .is_some_and(|m| m.get(DEMO_SITE).is_some_and(|v| v.is_none()));
            if !demo_deleted {
                all.insert(DEMO_SITE.to_string(), demo_site());
            }
        }
        let mut map = BTreeMap::new();
        for (id, cfg) in all {
            map.insert(id.clone(), Arc::new(Site::new(&id, cfg)?));
        }
        Ok(SiteRegistry {
            sites: ArcSwap::from_pointee(map),
            store,
        })
    }

    /// The site with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Site>> {
        self.sites.load().get(id).cloned()
    }

    /// Every site, by id.
    pub fn all(&self) -> Arc<BTreeMap<String, Arc<Site>>> {
        self.sites.load_full()
    }

    /// Creates or replaces a site; returns whether it is new.
    pub fn put(&self, id: &str, cfg: SiteConfig) -> Result<bool, SiteError> {
        let site = Arc::new(Site::new(id, cfg.clone())?);
        let mut created = false;
        self.sites.rcu(|old| {
            let mut m = BTreeMap::clone(old);
            created = m.insert(id.to_string(), site.clone()).is_none();
            m
        });
        self.save(id, Some(cfg))?;
        Ok(created)
    }

    /// Deletes a site; returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool, SiteError> {
        let mut existed = false;
        self.sites.rcu(|old| {
            let mut m = BTreeMap::clone(old);
            existed = m.remove(id).is_some();
            m
        });
        if existed {
            self.save(id, None)?;
        }
        Ok(existed)
    }

    /// Records one change in `sites.json` (write to a temporary file, then rename).
    fn save(&self, id: &str, cfg: Option<SiteConfig>) -> Result<(), SiteError> {
        let Some(path) = &self.store else {
            return Ok(());
        };
        let err = |source| SiteError::Save {
            path: path.clone(),
            source,
        };
        let mut saved: BTreeMap<String, Option<SiteConfig>> = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        saved.insert(id.to_string(), cfg);
        let json = serde_json::to_vec_pretty(&saved).map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// The built-in demo site: allows only the gateway's own origin. It tells
/// the story of its knowledge base (`knowledge/eval/shop/`, Fernhill Supply
/// Co.), as the demo page (`widget/src/demo.html`) does, in the page's green.
/// Its help pages' URLs are on `fernhill.example`, which cannot exist: the
/// widget shows them as titles, and there is no `docs_base_url`.
fn demo_site() -> SiteConfig {
    SiteConfig {
        title: Some("Fernhill Supply Co.".into()),
        greeting: Some(
            "Hi! I'm the Fernhill Supply Co. assistant. Ask me about orders, shipping, \
             returns, sizing or Fernhill Plus."
                .into(),
        ),
        theme: BTreeMap::from([
            ("accent".into(), "#2f5a45".into()),
            ("focus".into(), "#b4582f".into()),
            ("bot-bg".into(), "#f1ede4".into()),
        ]),
        instructions: "You are the chat assistant of Fernhill Supply Co., the demo shop, \
                       which sells outdoor clothing and gear online and in two stores."
            .into(),
        tone: Some("Warm and brief: two or three sentences, plain words.".into()),
        rules: vec![
            "Never discuss competitors' prices.".into(),
            "Never promise a refund or a delivery date the sources do not state.".into(),
        ],
        examples: vec![Example {
            question: "Can I change my order?".into(),
            answer: "Yes, within an hour of placing it, from Orders in your account. \
                     After that it is with the warehouse, but a person can still try."
                .into(),
        }],
        human_below_confidence: 0.35,
        ..SiteConfig::default()
    }
}

#[cfg(test)]
mod handoff_tests {
    use super::*;

    #[test]
    fn rules_match_keywords_and_pages() {
        let kw = HandoffRule {
            keyword: Some("Refund".into()),
            ..Default::default()
        };
        assert!(kw.matches(&"I want a REFUND now".to_lowercase(), None));
        assert!(!kw.matches("hello", Some("https://x/")));
        let pg = HandoffRule {
            page: Some("https://shop.example/checkout*".into()),
            skill: Some("billing".into()),
            ..Default::default()
        };
        assert!(pg.matches("hi", Some("https://shop.example/checkout/pay")));
        assert!(!pg.matches("hi", Some("https://shop.example/cart")));
        assert!(!pg.matches("hi", None));
        assert!(!HandoffRule::default().matches("anything", Some("x")));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
        assert!(wildcard("*", ""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_policy() {
        let site = Site::new(
            "shop",
            SiteConfig {
                allowed_origins: vec!["https://Shop.Example/".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let host = Some("chat.gw:8080");
        assert!(site.origin_allowed(None, host));
        assert!(site.origin_allowed(Some("https://shop.example"), host));
        assert!(site.origin_allowed(Some("http://chat.gw:8080"), host));
        assert!(!site.origin_allowed(Some("https://evil.example"), host));
        assert!(!site.origin_allowed(Some("null"), host));
        assert!(!site.origin_allowed(Some("https://shop.example.evil.example"), host));
    }

    #[test]
    fn bad_definitions_are_refused_with_reasons() {
        assert!(matches!(
            Site::new("a b", SiteConfig::default()),
            Err(SiteError::BadId(_))
        ));
        let bad_origin = SiteConfig {
            allowed_origins: vec!["shop.example".into()],
            ..Default::default()
        };
        assert!(matches!(
            Site::new("s", bad_origin),
            Err(SiteError::BadOrigin(_))
        ));
        let bad_trigger = SiteConfig {
            triggers: vec![Trigger::default()],
            ..Default::default()
        };
        assert!(matches!(
            Site::new("s", bad_trigger),
            Err(SiteError::BadTrigger { .. })
        ));
    }

    #[test]
    fn widget_config_is_public_part_only() {
        let site = Site::new(
            "s",
            SiteConfig {
                instructions: "secret rules".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!site.widget_config.get().contains("secret"));
        assert!(site.widget_config.get().contains("\"theme\""));
    }

    #[test]
    fn docs_base_url_reaches_the_widget_as_a_folder() {
        let with = |url: &str| {
            Site::new(
                "s",
                SiteConfig {
                    docs_base_url: Some(url.into()),
                    ..Default::default()
                },
            )
        };
        let site = with("https://shop.test/help").unwrap();
        assert_eq!(
            site.config.docs_base_url.as_deref(),
            Some("https://shop.test/help/")
        );
        assert!(site
            .widget_config
            .get()
            .contains(r#""docs_base_url":"https://shop.test/help/""#));
        let kept = with("http://127.0.0.1:8080/docs/").unwrap();
        assert_eq!(
            kept.config.docs_base_url.as_deref(),
            Some("http://127.0.0.1:8080/docs/")
        );
        for bad in [
            "help/",
            "/help/",
            "ftp://shop.test/",
            "javascript:alert(1)",
            "https://shop.test/help?x=1",
            "https://shop.test/#top",
            "https://shop test/",
            "",
        ] {
            assert!(
                matches!(
                    with(bad),
                    Err(SiteError::BadSetting {
                        key: "docs_base_url",
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }
        // Without one, the widget hears nothing of it.
        let none = Site::new("s", SiteConfig::default()).unwrap();
        assert!(!none.widget_config.get().contains("docs_base_url"));
    }

    /// The demo tells its knowledge base's story (knowledge/eval/shop/):
    /// Fernhill Supply Co., in the demo page's colours.
    #[test]
    fn the_demo_site_follows_its_knowledge_base() {
        let demo = Site::new(DEMO_SITE, demo_site()).unwrap();
        let cfg = demo.widget_config.get();
        let greeting = demo.config.greeting.as_deref().unwrap();
        assert!(greeting.contains("Fernhill Supply Co."), "{greeting}");
        assert!(greeting.contains("Fernhill Plus"), "{greeting}");
        assert!(!cfg.contains("Outdoor") && !cfg.contains('€'), "{cfg}");
        assert!(cfg.contains(r##""accent":"#2f5a45""##), "{cfg}");
        assert!(demo.config.docs_base_url.is_none());
        let contact = include_str!("../../knowledge/eval/shop/contact.txt");
        assert!(contact.contains("Fernhill Supply Co."));
    }

    #[test]
    fn admin_changes_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("lc-sites-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let reg = SiteRegistry::load(&BTreeMap::new(), Some(&dir)).unwrap();
        assert!(reg.get(DEMO_SITE).is_some());
        assert!(reg.put("shop", SiteConfig::default()).unwrap());
        assert!(reg.delete(DEMO_SITE).unwrap());
        let again = SiteRegistry::load(&BTreeMap::new(), Some(&dir)).unwrap();
        assert!(again.get("shop").is_some());
        assert!(again.get(DEMO_SITE).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
