//! A scenario: what load to offer, from a TOML file or from flags. Stages
//! (ramp, hold, surge), the open or closed model, arrivals, think time, message
//! texts, warm-up, SLOs and budgets; validation with messages a user can act
//! on; and the share of the load one shard and one worker thread carry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::arrivals::{ArrivalKind, Profile};
use crate::budget::Budget;
use crate::conversation::Conversation;
use crate::direct::{DirectError, DirectOptions};
use crate::slo::Slo;
use crate::target::{Target, TargetError};
use crate::trace::{Trace, TraceError};
use crate::units::Dur;

/// How a stage moves from the previous stage's targets to its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Jump to the targets at the start of the stage and hold them (hold, surge).
    #[default]
    Step,
    /// Move linearly from the previous targets to these over the stage.
    Ramp,
}

/// One stage of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Shown in progress and reports (defaults to `stage N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How long the stage lasts.
    pub duration: Dur,
    /// Target concurrent sessions.
    pub sessions: u64,
    /// Target message arrival rate, messages per second over all sessions (open model).
    #[serde(default)]
    pub rate: f64,
    /// Step or ramp.
    #[serde(default)]
    pub shape: Shape,
}

/// Open model: messages arrive on a schedule whatever the server does.
/// Closed model: each session waits for its answer, thinks, and sends again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Arrivals on a schedule; latency counts from the due time.
    #[default]
    Open,
    /// Send, await, think, repeat; latency counts from the send.
    Closed,
}

/// How think times are drawn in the closed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkDist {
    /// Exactly `think`.
    Constant,
    /// Exponential with mean `think`.
    #[default]
    Exponential,
}

/// How sessions reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// One WebSocket per session (`/ws`).
    #[default]
    Ws,
    /// The long-polling fallback: `POST /poll/send` and a held
    /// `GET /poll/recv`, two keep-alive connections per session.
    Poll,
}

impl Transport {
    /// Whether it is the default (left out of written scenarios).
    pub fn is_ws(&self) -> bool {
        *self == Transport::Ws
    }

    /// TCP connections one session holds.
    pub fn connections_per_session(self) -> u64 {
        match self {
            Transport::Ws => 1,
            Transport::Poll => crate::poll::CONNECTIONS_PER_SESSION,
        }
    }
}

fn default_connect_rate() -> f64 {
    5_000.0
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_true() -> bool {
    true
}
fn default_burstiness() -> f64 {
    1.0
}
fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(d: &Dur) -> bool {
    d.0.is_zero()
}

/// A whole scenario, as in a TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// `ws://HOST:PORT/ws?site=ID`: the only place load goes.
    pub url: String,
    /// Seed of every random choice (arrivals, think times, texts).
    #[serde(default)]
    pub seed: u64,
    /// New sessions per second, over all shards.
    #[serde(default = "default_connect_rate")]
    pub connect_rate: f64,
    /// Open or closed.
    #[serde(default)]
    pub model: Model,
    /// WebSocket (the default) or the long-polling fallback.
    #[serde(default, skip_serializing_if = "Transport::is_ws")]
    pub transport: Transport,
    /// Arrival process of the open model.
    #[serde(default)]
    pub arrivals: ArrivalKind,
    /// Gamma shape for `arrivals = "gamma"` (1 is Poisson; lower is burstier).
    #[serde(default = "default_burstiness")]
    pub burstiness: f64,
    /// Mean think time of the closed model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Dur>,
    /// Distribution of think times.
    #[serde(default)]
    pub think_dist: ThinkDist,
    /// Time from the start of the stages whose messages and connects are not counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup: Dur,
    /// A message not acked (or, when replies are awaited, not done) within this is a `timeout`.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Whether every message is answered with tokens and `done` (the gateway with
    /// an inference backend). When false a message is settled by its `ack`.
    #[serde(default = "default_true")]
    pub replies: bool,
    /// A message refused `busy` is sent once more, with the same id, after
    /// its `retry_after_ms` (as the widget does); its figures still count from
    /// when it was first due.
    #[serde(default, skip_serializing_if = "is_false")]
    pub resend_busy: bool,
    /// Message texts, used in seeded random order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts: Vec<String>,
    /// A file of message texts, one per line (added to `texts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texts_file: Option<PathBuf>,
    /// Per-request objectives that define goodput.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slos: Vec<Slo>,
    /// Budgets the run must meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    /// Direct mode's options (`[direct]`), for an `http(s)://` target: the
    /// API, the served model, the prompts. The API key is never in a file.
    #[serde(default, skip_serializing_if = "DirectOptions::is_unset")]
    pub direct: DirectOptions,
    /// A JSONL trace to replay (`--trace`): its messages at their times on
    /// their sessions, instead of arrivals and session targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathBuf>,
    /// Scripted visitors (`[[conversation]]`): when given, every session
    /// plays one of them instead of sending on the open or closed model.
    #[serde(
        default,
        rename = "conversation",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conversations: Vec<Conversation>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

/// A scenario that cannot run, and why.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("scenario file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// TOML parser's message.
        message: String,
    },
    /// The texts file could not be read.
    #[error("cannot read texts file {path}: {source}")]
    Texts {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The URL is unusable.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The trace cannot be replayed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// Direct mode cannot start (its prompts file, its TLS settings).
    #[error(transparent)]
    Direct(#[from] DirectError),
    /// A value out of range, with what to do.
    #[error("{0}")]
    Invalid(String),
}

/// Texts used when a scenario gives none: what chat visitors write.
pub const DEFAULT_TEXTS: [&str; 6] = [
    "Hi, where is my order?",
    "Do you ship to Canada?",
    "How do I reset my password?",
    "Can I change the delivery address after paying?",
    "What is your return policy for sale items?",
    "Is this jacket available in a larger size?",
];

impl Scenario {
    /// A one-stage scenario, as the flags `--url --sessions --rate --duration` give.
    pub fn simple(url: &str, sessions: u64, rate: f64, duration: Duration) -> Scenario {
        Scenario {
            url: url.to_string(),
            seed: 0,
            connect_rate: default_connect_rate(),
            model: Model::Open,
            transport: Transport::Ws,
            arrivals: ArrivalKind::default(),
            burstiness: 1.0,
            think: None,
            think_dist: ThinkDist::default(),
            warmup: Dur::default(),
            timeout: default_timeout(),
            replies: true,
            resend_busy: false,
            texts: Vec::new(),
            texts_file: None,
            slos: Vec::new(),
            budgets: Vec::new(),
            direct: DirectOptions::default(),
            conversations: Vec::new(),
            trace: None,
            stages: vec![Stage {
                name: Some("hold".to_string()),
                duration: Dur(duration),
                sessions,
                rate,
                shape: Shape::Step,
            }],
        }
    }

    /// Reads a TOML scenario.
    pub fn from_toml(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads a TOML scenario file; a relative `texts_file` is relative to it.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut s = Scenario::from_toml(&text, path)?;
        if let Some(f) = &s.texts_file {
            if f.is_relative() {
                if let Some(dir) = path.parent() {
                    s.texts_file = Some(dir.join(f));
                }
            }
        }
        // So are direct mode's prompts file and CA, and the trace.
        for f in [&mut s.direct.prompts, &mut s.direct.ca, &mut s.trace]
            .into_iter()
            .flatten()
        {
            if let (true, Some(dir)) = (f.is_relative(), path.parent()) {
                *f = dir.join(&*f);
            }
        }
        Ok(s)
    }

    /// With a trace and no stages: one stage as long as the trace (and a
    /// second for its last answers), which replaces session targets and
    /// arrival rates. Returns the trace, if there is one.
    pub fn fill_trace_stage(&mut self) -> Result<Option<Trace>, ScenarioError> {
        let Some(path) = &self.trace else {
            return Ok(None);
        };
        let trace = Trace::load(path)?;
        if self.stages.is_empty() {
            self.stages.push(Stage {
                name: Some("trace".into()),
                duration: Dur(trace.span() + Duration::from_secs(1)),
                sessions: 0,
                rate: 0.0,
                shape: Shape::Step,
            });
        }
        Ok(Some(trace))
    }

    /// Checks every field; the message says what to change.
    pub fn validate(&self) -> Result<Target, ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        let target = Target::parse(&self.url)?;
        // Long polling reaches the gateway over plain HTTP, so an http://
        // URL names the gateway there, not an inference server.
        let target = match self.transport {
            Transport::Ws => target,
            Transport::Poll => {
                if !self.conversations.is_empty() || self.trace.is_some() {
                    return bad("--transport poll runs the open and closed models: [[conversation]] and traces run over WebSocket (drop --transport poll)".into());
                }
                crate::poll::gateway_target(target)
                    .map_err(|e| ScenarioError::Invalid(e.to_string()))?
            }
        };
        if self.trace.is_some() {
            if !self.conversations.is_empty() || self.model == Model::Closed {
                return bad("a trace replays its own sessions and times: drop [[conversation]] and the closed model".into());
            }
            if self
                .stages
                .iter()
                .any(|st| st.rate > 0.0 || st.sessions > 0)
            {
                return bad("a trace sets when each message is sent and on which session: leave the stages' sessions and rate at 0 (or give no stages)".into());
            }
        }
        if let Err(m) = crate::direct::check_scenario(self, &target) {
            return bad(m);
        }
        for (i, c) in self.conversations.iter().enumerate() {
            c.validate(i).map_err(ScenarioError::Invalid)?;
        }
        if !self.conversations.is_empty() {
            if self.stages.iter().any(|st| st.rate > 0.0) {
                return bad("with [[conversation]] the sessions set the load (each plays a script at its own think times): leave the stages' rate at 0".into());
            }
            if self.model == Model::Closed || self.think.is_some() {
                return bad("with [[conversation]] the think times are each turn's `think`: drop --think and model = \"closed\"".into());
            }
        }
        if self.stages.is_empty() {
            return bad("the scenario has no stages: give --sessions, --rate and --duration, or [[stages]] in the file".into());
        }
        for (i, st) in self.stages.iter().enumerate() {
            if !st.rate.is_finite() || st.rate < 0.0 {
                return bad(format!(
                    "stage {}: rate must be a non-negative number of messages per second",
                    i + 1
                ));
            }
            if self.model == Model::Closed && st.rate > 0.0 {
                return bad(format!(
                    "stage {}: the closed model has no arrival rate (sessions and think time set the load); drop `rate` or use the open model",
                    i + 1
                ));
            }
        }
        if self.total().is_zero() {
            return bad(
                "the stages last no time at all: give at least one stage a duration".into(),
            );
        }
        if !(self.connect_rate.is_finite() && self.connect_rate > 0.0) {
            return bad("connect_rate must be a positive number of sessions per second".into());
        }
        if !(self.burstiness.is_finite() && self.burstiness > 0.0) {
            return bad("burstiness must be positive (1 is Poisson, lower is burstier)".into());
        }
        match (self.model, self.think) {
            (Model::Closed, None) => {
                return bad("the closed model needs a think time: --think 2s or think = \"2s\"".into())
            }
            (Model::Open, Some(_)) => {
                return bad("think time belongs to the closed model: add --model closed (or model = \"closed\")".into())
            }
            _ => {}
        }
        if self.warmup.0 >= self.total() {
            return bad(format!(
                "warm-up ({}) covers the whole run ({}); nothing would be measured",
                self.warmup,
                Dur(self.total())
            ));
        }
        if self.timeout.0.is_zero() {
            return bad("timeout must be positive".into());
        }
        if self.trace.is_none() && self.stages.iter().all(|s| s.sessions == 0) {
            return bad("no stage has any sessions".into());
        }
        if self.model == Model::Open
            && self.conversations.is_empty()
            && self.trace.is_none()
            && self.stages.iter().all(|s| s.rate == 0.0)
        {
            return bad(
                "no stage sends any messages: give a rate (messages per second over all sessions)"
                    .into(),
            );
        }
        Ok(target)
    }

    /// The texts to send: `texts` plus the lines of `texts_file`, or the defaults.
    pub fn resolved_texts(&self) -> Result<Vec<String>, ScenarioError> {
        let mut texts = self.texts.clone();
        if let Some(path) = &self.texts_file {
            let body = std::fs::read_to_string(path).map_err(|source| ScenarioError::Texts {
                path: path.clone(),
                source,
            })?;
            texts.extend(
                body.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
        if texts.is_empty() {
            texts = DEFAULT_TEXTS.iter().map(|s| s.to_string()).collect();
        }
        Ok(texts)
    }

    /// Sum of the stage durations.
    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.duration.0).sum()
    }

    /// The stage running at `t` seconds, with its index and display name.
    pub fn stage_at(&self, t: f64) -> Option<(usize, String)> {
        self.stage_index_at(t).map(|i| (i, self.stage_name(i)))
    }

    /// The index of the stage running at `t` seconds; `None` after the last.
    pub fn stage_index_at(&self, t: f64) -> Option<usize> {
        let mut end = 0.0;
        for (i, s) in self.stages.iter().enumerate() {
            end += s.duration.secs();
            if t < end {
                return Some(i);
            }
        }
        None
    }

    /// A stage's display name.
    pub fn stage_name(&self, i: usize) -> String {
        self.stages
            .get(i)
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| format!("stage {}", i + 1))
    }

    fn profile(&self, value: impl Fn(&Stage) -> f64) -> Profile {
        let mut knots = vec![(0.0, 0.0)];
        let mut t = 0.0;
        for s in &self.stages {
            let v = value(s);
            if s.shape == Shape::Step {
                knots.push((t, v));
            }
            t += s.duration.secs();
            knots.push((t, v));
        }
        Profile::new(knots)
    }

    /// Target concurrent sessions over time (all shards).
    pub fn sessions_profile(&self) -> Profile {
        self.profile(|s| s.sessions as f64)
    }

    /// Message arrival rate over time (all shards).
    pub fn rate_profile(&self) -> Profile {
        self.profile(|s| s.rate)
    }

    /// Most sessions any stage asks for.
    pub fn peak_sessions(&self) -> u64 {
        self.stages.iter().map(|s| s.sessions).max().unwrap_or(0)
    }
}

/// One of several loadgen processes that share a scenario (`--shard i/n`, 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This process's share, 1..=count.
    pub index: u32,
    /// How many processes share the scenario.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 1, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err =
            || format!("'{s}' is not a shard: write I/N with 1 <= I <= N, such as 1/2 and 2/2");
        let (i, n) = s.split_once('/').ok_or_else(err)?;
        let index: u32 = i.trim().parse().map_err(|_| err())?;
        let count: u32 = n.trim().parse().map_err(|_| err())?;
        if index == 0 || index > count {
            return Err(err());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Part `i` (0-based) of `total` split into `n` near-equal integer parts.
pub fn split_count(total: u64, i: u64, n: u64) -> u64 {
    total / n + u64::from(i < total % n)
}

/// Which part of the load one worker thread carries: part `part` of `parts`,
/// numbered over all shards and workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// 0-based part.
    pub part: u64,
    /// Number of parts (shards x workers of this shard).
    pub parts: u64,
}

impl Share {
    /// The share of worker `worker` of `workers` in `shard`.
    ///
    /// Shards are assumed to run the same number of workers; if they do not,
    /// the sessions and rate still split exactly by shard first.
    pub fn of(shard: Shard, worker: u32, workers: u32) -> Share {
        Share {
            part: u64::from(shard.index - 1) * u64::from(workers) + u64::from(worker),
            parts: u64::from(shard.count) * u64::from(workers),
        }
    }

    /// This share of an integer count.
    pub fn count(&self, total: u64) -> u64 {
        split_count(total, self.part, self.parts)
    }

    /// This share of a rate.
    pub fn fraction(&self) -> f64 {
        1.0 / self.parts as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
url = "ws://127.0.0.1:8080/ws?site=demo"
seed = 7
connect_rate = 1000
arrivals = "gamma"
burstiness = 0.5
warmup = "5s"
texts = ["hello", "where is my order?"]
slos = ["ttft:1s", "rtt:80ms"]
budgets = ["rtt.p99<80ms", "goodput>99%"]

[[stages]]
name = "ramp"
duration = "10s"
sessions = 1000
rate = 100
shape = "ramp"

[[stages]]
name = "hold"
duration = "20s"
sessions = 1000
rate = 100

[[stages]]
name = "surge"
duration = "10s"
sessions = 1000
rate = 1000
"#;

    #[test]
    fn reads_a_full_file() {
        let s = Scenario::from_toml(FULL, Path::new("x.toml")).unwrap();
        s.validate().unwrap();
        assert_eq!(s.stages.len(), 3);
        assert_eq!(s.total(), Duration::from_secs(40));
        assert_eq!(s.arrivals, ArrivalKind::Gamma);
        assert_eq!(s.slos.len(), 2);
        assert_eq!(s.budgets[0].text, "rtt.p99<80ms");
        let rate = s.rate_profile();
        assert_eq!(rate.at(5.0), 50.0, "ramp");
        assert_eq!(rate.at(15.0), 100.0, "hold");
        assert_eq!(rate.at(30.0), 1000.0, "surge steps up");
        assert_eq!(rate.integral(), 500.0 + 2000.0 + 10_000.0);
        assert_eq!(s.sessions_profile().at(0.0), 0.0);
        assert_eq!(s.stage_at(12.0).unwrap().1, "hold");
        // It serializes back into something that reads the same.
        let again: Scenario = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let e = Scenario::from_toml(
            "url = \"ws://h/ws\"\nsesions = 3\nstages = []",
            Path::new("f.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("sesions"), "{e}");
        let mut s = Scenario::simple("ws://127.0.0.1:1/ws", 10, 10.0, Duration::from_secs(1));
        s.model = Model::Closed;
        s.stages[0].rate = 0.0;
        assert!(s.validate().unwrap_err().to_string().contains("--think"));
        s.think = Some(Dur(Duration::from_secs(1)));
        s.validate().unwrap();
        s.stages[0].rate = 10.0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("closed model has no arrival rate"));
        let mut s = Scenario::simple("ws://127.0.0.1:1/ws", 10, 10.0, Duration::from_secs(1));
        s.warmup = Dur(Duration::from_secs(2));
        assert!(s.validate().unwrap_err().to_string().contains("warm-up"));
        let s = Scenario::simple("ftp://127.0.0.1:1/ws", 10, 10.0, Duration::from_secs(1));
        assert!(matches!(s.validate(), Err(ScenarioError::Target(_))));
        let s = Scenario::simple("wss://127.0.0.1:1/ws", 10, 10.0, Duration::from_secs(1));
        assert!(s.validate().is_ok(), "wss:// is the gateway over TLS");
        // An inference server directly needs the model it serves.
        let s = Scenario::simple("http://127.0.0.1:1/v1", 10, 10.0, Duration::from_secs(1));
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--served-model"));
        let s = Scenario::simple("ws://127.0.0.1:1/ws", 10, 0.0, Duration::from_secs(1));
        assert!(s.validate().unwrap_err().to_string().contains("rate"));
    }

    #[test]
    fn texts_come_from_list_file_or_defaults() {
        let dir = std::env::temp_dir().join(format!("loadgen-texts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.txt");
        std::fs::write(&f, "one\n\n two \n").unwrap();
        let mut s = Scenario::simple("ws://127.0.0.1:1/ws", 1, 1.0, Duration::from_secs(1));
        assert_eq!(s.resolved_texts().unwrap().len(), DEFAULT_TEXTS.len());
        s.texts = vec!["zero".into()];
        s.texts_file = Some(f);
        assert_eq!(s.resolved_texts().unwrap(), vec!["zero", "one", "two"]);
        s.texts_file = Some(dir.join("missing.txt"));
        assert!(matches!(
            s.resolved_texts(),
            Err(ScenarioError::Texts { .. })
        ));
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for name in ["black-friday.toml", "ci-smoke.toml", "conversations.toml"] {
            let s = Scenario::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            s.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            if s.conversations.is_empty() {
                assert!(
                    s.resolved_texts().unwrap().len() >= 10,
                    "{name}: texts file found next to it"
                );
            } else {
                assert!(s.conversations.iter().all(|c| c.messages() >= 2), "{name}");
            }
        }
    }

    #[test]
    fn shards_and_workers_split_exactly() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert!("0/2".parse::<Shard>().is_err());
        assert!("3/2".parse::<Shard>().is_err());
        let total = 19_001;
        let mut sum = 0;
        for shard in 1..=3 {
            for w in 0..2 {
                sum += Share::of(
                    Shard {
                        index: shard,
                        count: 3,
                    },
                    w,
                    2,
                )
                .count(total);
            }
        }
        assert_eq!(sum, total);
        let parts: Vec<u64> = (0..4).map(|i| split_count(10, i, 4)).collect();
        assert_eq!(parts, vec![3, 3, 2, 2]);
    }
}
