//! What a run measures: the five latency figures of PROTOCOL.md as
//! HdrHistograms in microseconds (3 significant digits), errors by code, and
//! the message counters goodput and budgets are computed from.
//!
//! A [`Recorder`] is filled by one worker and emptied once a second into an
//! [`Interval`]; intervals add up losslessly into the run's totals.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use wire::chat::ErrorCode;

/// Largest latency a histogram holds: one hour, in microseconds. Larger values
/// are recorded as this value (runs are bounded well below it).
pub const MAX_US: u64 = 3_600_000_000;
/// Significant digits every histogram keeps.
pub const SIGFIG: u8 = 3;

/// A new, empty histogram with loadgen's range and precision.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("static bounds are valid")
}

/// The latency figures PROTOCOL.md defines for a load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Figure {
    /// TCP connect started to `welcome` received.
    Connect,
    /// `message` sent (or due, in open-model runs) to its `ack`.
    Rtt,
    /// `message` sent (or due) to its first `token`.
    Ttft,
    /// Time between successive `token`s of one reply.
    Itl,
    /// `message` sent (or due) to its `done`.
    Reply,
    /// Time per output token after the first: `(reply - ttft) / (tokens - 1)`,
    /// one sample per reply of two tokens or more (as `vllm bench serve`'s
    /// TPOT). Direct mode always records it; through `/ws` a token frame is
    /// counted as one token.
    Tpot,
}

impl Figure {
    /// Every figure, in report order.
    pub const ALL: [Figure; 6] = [
        Figure::Connect,
        Figure::Rtt,
        Figure::Ttft,
        Figure::Itl,
        Figure::Reply,
        Figure::Tpot,
    ];

    /// The name used in budgets, SLOs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Figure::Connect => "connect",
            Figure::Rtt => "rtt",
            Figure::Ttft => "ttft",
            Figure::Itl => "itl",
            Figure::Reply => "reply",
            Figure::Tpot => "tpot",
        }
    }

    /// The figure with this name.
    pub fn from_name(name: &str) -> Option<Figure> {
        Figure::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Position in [`Figure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a message or a session failed. Server codes come from PROTOCOL.md's
/// `error` frame; the rest are what the client itself saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Server `bad_request`.
    BadRequest,
    /// Server `unknown_type`.
    UnknownType,
    /// Server `too_large`.
    TooLarge,
    /// Server `rate_limited`.
    RateLimited,
    /// Server `busy`: refused instead of acked. Reported apart from errors.
    Busy,
    /// Server `unavailable`: the inference pool failed after the ack.
    Unavailable,
    /// Server `cursor_expired`.
    CursorExpired,
    /// Server `internal`.
    Internal,
    /// A server error code this version does not know.
    OtherServer,
    /// No `ack` (or no `done` when replies are awaited) within the message timeout.
    Timeout,
    /// The connection closed with the message still in flight.
    Closed,
    /// TCP connect failed or timed out.
    Connect,
    /// The upgrade was answered with something other than 101, or badly.
    Handshake,
    /// The upgrade was refused with HTTP 503 (server full).
    Rejected,
    /// The server broke RFC 6455 or sent a frame that is not protocol v1 JSON.
    Protocol,
    /// A message was due while the worker had no session to send it on.
    NoSession,
    /// loadgen itself fell behind its schedule and the run ended before the
    /// message was sent: more threads or shards are needed for this rate.
    Unsent,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::BadRequest,
        ErrorKind::UnknownType,
        ErrorKind::TooLarge,
        ErrorKind::RateLimited,
        ErrorKind::Busy,
        ErrorKind::Unavailable,
        ErrorKind::CursorExpired,
        ErrorKind::Internal,
        ErrorKind::OtherServer,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::Connect,
        ErrorKind::Handshake,
        ErrorKind::Rejected,
        ErrorKind::Protocol,
        ErrorKind::NoSession,
        ErrorKind::Unsent,
    ];

    /// The protocol's error code behind a server kind.
    pub fn server_code(self) -> Option<ErrorCode> {
        Some(match self {
            ErrorKind::BadRequest => ErrorCode::BadRequest,
            ErrorKind::UnknownType => ErrorCode::UnknownType,
            ErrorKind::TooLarge => ErrorCode::TooLarge,
            ErrorKind::RateLimited => ErrorCode::RateLimited,
            ErrorKind::Busy => ErrorCode::Busy,
            ErrorKind::Unavailable => ErrorCode::Unavailable,
            ErrorKind::CursorExpired => ErrorCode::CursorExpired,
            ErrorKind::Internal => ErrorCode::Internal,
            _ => return None,
        })
    }

    /// The name in reports: the wire code for server errors.
    pub fn name(self) -> &'static str {
        if let Some(code) = self.server_code() {
            return code.as_str();
        }
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Connect => "connect",
            ErrorKind::Handshake => "handshake",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Protocol => "protocol",
            ErrorKind::NoSession => "no_session",
            ErrorKind::Unsent => "unsent",
            _ => "other_server_error",
        }
    }

    /// The kind for a server `error` frame's `code`.
    pub fn from_server_code(code: &str) -> ErrorKind {
        ErrorCode::from_wire(code)
            .and_then(|c| {
                ErrorKind::ALL
                    .into_iter()
                    .find(|k| k.server_code() == Some(c))
            })
            .unwrap_or(ErrorKind::OtherServer)
    }

    /// The kind with this report name.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Position in [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Counts that add up across workers, intervals and shards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages sent (or due, with no session to carry them) after warm-up.
    pub sent: u64,
    /// Messages acked.
    pub acked: u64,
    /// Replies completed with `done`.
    pub replied: u64,
    /// Messages that met every SLO (goodput's numerator).
    pub good: u64,
    /// Sessions whose connect started after warm-up.
    pub sessions_attempted: u64,
    /// Of those, sessions that reached `welcome`.
    pub sessions_opened: u64,
    /// Sessions whose connect started during warm-up (not measured).
    #[serde(default)]
    pub warmup_sessions_attempted: u64,
    /// Of those, sessions that reached `welcome`.
    #[serde(default)]
    pub warmup_sessions_opened: u64,
    /// `busy` messages sent again after their `retry_after_ms`
    /// (`--resend-busy`).
    #[serde(default)]
    pub resent: u64,
    /// Of those, acked the second time.
    #[serde(default)]
    pub resent_acked: u64,
    /// Output tokens of completed replies: the server's `usage` in direct
    /// mode when it sends it (else one per streamed chunk), token frames
    /// through `/ws`.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens of the requests sent in direct mode (the server's
    /// `usage`, else loadgen's estimate).
    #[serde(default)]
    pub input_tokens: u64,
    /// Reconnects of scripted conversations (a reload, back from offline)
    /// that reached `welcome`.
    #[serde(default)]
    pub reconnects: u64,
    /// Of those, welcomed with `resumed: true`: the session was taken up
    /// again with its history.
    #[serde(default)]
    pub resumed: u64,
    /// Frames about a message that had already been settled (a late `ack`
    /// after a timeout, say) or that loadgen never sent. Not errors.
    pub late: u64,
    /// Errors by [`ErrorKind::index`].
    pub errors: [u64; ErrorKind::ALL.len()],
}

impl Counters {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Counters) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.replied += other.replied;
        self.good += other.good;
        self.sessions_attempted += other.sessions_attempted;
        self.sessions_opened += other.sessions_opened;
        self.warmup_sessions_attempted += other.warmup_sessions_attempted;
        self.warmup_sessions_opened += other.warmup_sessions_opened;
        self.resent += other.resent;
        self.resent_acked += other.resent_acked;
        self.late += other.late;
        self.output_tokens += other.output_tokens;
        self.input_tokens += other.input_tokens;
        self.reconnects += other.reconnects;
        self.resumed += other.resumed;
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
    }

    /// Errors of one kind.
    pub fn error(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    /// Every error except `busy`, which is reported on its own.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum::<u64>() - self.error(ErrorKind::Busy)
    }

    /// Messages and session attempts: the denominator of the error share.
    pub fn attempts(&self) -> u64 {
        self.sent + self.sessions_attempted
    }
}

/// Measurements of one stretch of time (one second of one worker, or a whole run).
#[derive(Debug, Clone)]
pub struct Interval {
    /// One histogram per [`Figure`], in microseconds.
    pub hist: [Histogram<u64>; Figure::ALL.len()],
    /// How late loadgen sent open-model messages after they were due, in
    /// microseconds: its own share of every figure.
    pub send_lag: Histogram<u64>,
    /// Counts.
    pub counters: Counters,
}

impl Default for Interval {
    fn default() -> Self {
        Interval {
            hist: std::array::from_fn(|_| new_histogram()),
            send_lag: new_histogram(),
            counters: Counters::default(),
        }
    }
}

impl Interval {
    /// Adds `other` losslessly.
    pub fn add(&mut self, other: &Interval) {
        for (a, b) in self.hist.iter_mut().zip(other.hist.iter()) {
            a.add(b).expect("histograms share bounds");
        }
        self.send_lag
            .add(&other.send_lag)
            .expect("histograms share bounds");
        self.counters.add(&other.counters);
    }

    /// The histogram of one figure.
    pub fn figure(&self, f: Figure) -> &Histogram<u64> {
        &self.hist[f.index()]
    }
}

/// Whether something a run observes is measured, and in which stage: a
/// message belongs to the stage it was due (or sent) in, a session to the
/// stage its connect started in, however long either takes to settle. A
/// message of a scripted conversation also belongs to its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// During warm-up: not measured.
    Warmup,
    /// Measured, in the stage of this index.
    Stage(u16),
    /// Measured, in this stage and as the `turn`th message (1-based) of a
    /// scripted conversation.
    Turn {
        /// Stage index.
        stage: u16,
        /// The message's place in its conversation, from 1.
        turn: u16,
    },
}

impl Mark {
    /// Whether it is measured.
    pub fn counted(self) -> bool {
        !matches!(self, Mark::Warmup)
    }

    /// The same mark as the `turn`th message of a conversation (nothing
    /// during warm-up).
    pub fn with_turn(self, turn: u16) -> Mark {
        match self {
            Mark::Warmup => Mark::Warmup,
            Mark::Stage(stage) | Mark::Turn { stage, .. } => Mark::Turn { stage, turn },
        }
    }
}

/// Where a worker records what its sessions observe: the current second's
/// interval (taken once a second), each stage's and each conversation
/// turn's (taken at the end).
#[derive(Debug, Default)]
pub struct Recorder {
    current: Interval,
    stages: Vec<Interval>,
    turns: Vec<Interval>,
}

fn slot(v: &mut Vec<Interval>, i: usize) -> &mut Interval {
    if v.len() <= i {
        v.resize_with(i + 1, Interval::default);
    }
    &mut v[i]
}

impl Recorder {
    /// Applies `f` to every interval `mark` belongs to.
    fn each(&mut self, mark: Mark, mut f: impl FnMut(&mut Interval)) {
        let (stage, turn) = match mark {
            Mark::Warmup => return,
            Mark::Stage(s) => (s, None),
            Mark::Turn { stage, turn } => (stage, Some(turn)),
        };
        f(&mut self.current);
        f(slot(&mut self.stages, usize::from(stage)));
        if let Some(t) = turn.filter(|t| *t > 0) {
            f(slot(&mut self.turns, usize::from(t - 1)));
        }
    }

    /// Records one latency sample of something marked `mark` (nothing
    /// during warm-up).
    pub fn record(&mut self, mark: Mark, figure: Figure, us: u64) {
        let v = us.min(MAX_US);
        self.each(mark, |iv| iv.hist[figure.index()].saturating_record(v));
    }

    /// Bumps counters of something marked `mark` (nothing during warm-up).
    pub fn count(&mut self, mark: Mark, bump: impl Fn(&mut Counters)) {
        self.each(mark, |iv| bump(&mut iv.counters));
    }

    /// Counts one error of something marked `mark` (nothing during warm-up).
    pub fn error_at(&mut self, mark: Mark, kind: ErrorKind) {
        self.count(mark, |c| c.errors[kind.index()] += 1);
    }

    /// Records how late a message was sent after it was due.
    pub fn record_lag(&mut self, us: u64) {
        self.current.send_lag.saturating_record(us.min(MAX_US));
    }

    /// Counts one error that belongs to no stage (a read failure, say).
    pub fn error(&mut self, kind: ErrorKind) {
        self.current.counters.errors[kind.index()] += 1;
    }

    /// The current second's counters, for counts that belong to no stage
    /// (late frames, warm-up sessions).
    pub fn counters(&mut self) -> &mut Counters {
        &mut self.current.counters
    }

    /// What was recorded so far, without taking it.
    pub fn peek(&self) -> &Interval {
        &self.current
    }

    /// Takes what was recorded since the last call and starts afresh.
    pub fn take(&mut self) -> Interval {
        let mut fresh = Interval::default();
        std::mem::swap(&mut fresh, &mut self.current);
        fresh
    }

    /// Takes each stage's measurements, by stage index.
    pub fn take_stages(&mut self) -> Vec<Interval> {
        std::mem::take(&mut self.stages)
    }

    /// Takes each conversation turn's measurements (index 0 is turn 1).
    pub fn take_turns(&mut self) -> Vec<Interval> {
        std::mem::take(&mut self.turns)
    }

    /// Takes everything still held, at a worker's end.
    pub fn finish(&mut self) -> Final {
        Final {
            interval: self.take(),
            stages: self.take_stages(),
            turns: self.take_turns(),
        }
    }
}

/// What a worker measured that it has not reported yet, at its end.
#[derive(Debug, Default)]
pub struct Final {
    /// Since its last one-second tick.
    pub interval: Interval,
    /// Each stage's measurements, by stage index.
    pub stages: Vec<Interval>,
    /// Each conversation turn's measurements (index 0 is turn 1).
    pub turns: Vec<Interval>,
}

impl Final {
    /// Adds `other` in, stage by stage and turn by turn.
    pub fn add(&mut self, other: &Final) {
        self.interval.add(&other.interval);
        add_by_index(&mut self.stages, &other.stages);
        add_by_index(&mut self.turns, &other.turns);
    }
}

/// Adds `from[i]` to `to[i]` for every `i`, growing `to` as needed.
fn add_by_index(to: &mut Vec<Interval>, from: &[Interval]) {
    for (i, iv) in from.iter().enumerate() {
        slot(to, i).add(iv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Figure::ALL {
            assert_eq!(Figure::from_name(f.name()), Some(f));
        }
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.name()), Some(k));
            assert_eq!(ErrorKind::ALL[k.index()], k);
        }
        assert_eq!(ErrorKind::from_server_code("busy"), ErrorKind::Busy);
        assert_eq!(
            ErrorKind::from_server_code("teapot"),
            ErrorKind::OtherServer
        );
    }

    #[test]
    fn intervals_add_losslessly() {
        let mut r = Recorder::default();
        let m = Mark::Stage(0);
        r.record(m, Figure::Rtt, 100);
        r.record(m, Figure::Rtt, 200);
        r.error_at(m, ErrorKind::Busy);
        r.error_at(m, ErrorKind::Timeout);
        r.count(m, |c| c.sent += 2);
        let a = r.take();
        assert_eq!(r.peek().figure(Figure::Rtt).len(), 0);
        r.record(m, Figure::Rtt, 300);
        r.count(m, |c| c.sent += 1);
        let b = r.take();
        let mut total = Interval::default();
        total.add(&a);
        total.add(&b);
        assert_eq!(total.figure(Figure::Rtt).len(), 3);
        assert_eq!(total.figure(Figure::Rtt).max(), 300);
        assert_eq!(total.counters.sent, 3);
        assert_eq!(total.counters.errors_total(), 1, "busy is not an error");
        assert_eq!(total.counters.error(ErrorKind::Busy), 1);
    }

    #[test]
    fn stages_get_what_was_due_in_them_and_warm_up_nothing() {
        let mut r = Recorder::default();
        r.record(Mark::Warmup, Figure::Rtt, 50);
        r.count(Mark::Warmup, |c| c.sent += 1);
        r.record(Mark::Stage(0), Figure::Rtt, 100);
        r.record(Mark::Stage(2), Figure::Rtt, 300);
        r.count(Mark::Stage(2), |c| c.sent += 1);
        r.error_at(Mark::Stage(2), ErrorKind::Busy);
        let second = r.take();
        assert_eq!(
            second.figure(Figure::Rtt).len(),
            2,
            "warm-up is not measured"
        );
        assert_eq!(second.counters.sent, 1);
        let stages = r.take_stages();
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[0].figure(Figure::Rtt).len(), 1);
        assert_eq!(stages[1].figure(Figure::Rtt).len(), 0);
        assert_eq!(stages[2].figure(Figure::Rtt).max(), 300);
        assert_eq!(stages[2].counters.error(ErrorKind::Busy), 1);
        assert!(r.take_turns().is_empty());
        let turn = Mark::Stage(1).with_turn(3);
        r.record(turn, Figure::Ttft, 900);
        r.count(turn, |c| c.sent += 1);
        assert_eq!(Mark::Warmup.with_turn(3), Mark::Warmup);
        let turns = r.take_turns();
        assert_eq!(turns.len(), 3);
        assert_eq!(turns[2].counters.sent, 1);
        assert_eq!(turns[2].figure(Figure::Ttft).len(), 1);
        assert_eq!(
            r.take_stages()[1].counters.sent,
            1,
            "a turn is its stage's too"
        );
        assert_eq!(r.take().counters.sent, 1);
    }

    #[test]
    fn huge_values_saturate_instead_of_failing() {
        let mut r = Recorder::default();
        r.record(Mark::Stage(0), Figure::Reply, u64::MAX);
        assert_eq!(r.peek().figure(Figure::Reply).len(), 1);
    }
}
