//! Budgets (`--budget 'rtt.p99<80ms'`): parsing, and the verdict of each
//! against a run's totals. A budget on a figure with no samples fails, so a run
//! that measured nothing never passes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::metrics::{ErrorKind, Figure, Interval};
use crate::units::{format_us, parse_duration};

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
        }
    }
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A statistic of one figure's histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// A percentile, 0-100.
    Percentile(f64),
    /// Smallest sample.
    Min,
    /// Largest sample.
    Max,
    /// Mean.
    Mean,
}

/// What a budget is about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subject {
    /// A statistic of a latency figure; the limit is a duration.
    Latency(Figure, Stat),
    /// Errors other than `busy`: a share of messages and session attempts, or a count.
    Errors,
    /// `busy` refusals: a share of messages, or a count.
    Busy,
    /// Share of messages that met every SLO.
    Goodput,
    /// Most sessions open at once.
    Sessions,
    /// Messages sent per second over the measured stages.
    Rate,
}

/// The right-hand side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Microseconds.
    Micros(u64),
    /// A percentage, 0-100.
    Percent(f64),
    /// A plain number.
    Count(f64),
}

/// One budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// As the user wrote it.
    pub text: String,
    /// What it constrains.
    pub subject: Subject,
    /// How.
    pub op: Op,
    /// Against what.
    pub limit: Limit,
}

/// A budget that could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BudgetError {
    /// No comparison operator.
    #[error(
        "budget '{0}' has no comparison: write e.g. 'rtt.p99<80ms', 'errors<0.1%' or 'goodput>99%'"
    )]
    NoOp(String),
    /// Unknown left-hand side.
    #[error("budget '{budget}': unknown subject '{subject}'; use FIGURE.STAT (figures connect, rtt, ttft, itl, reply, tpot; stats p50, p90, p99, p99.9, p999, min, max, mean), errors, busy, goodput, sessions or rate")]
    Subject {
        /// The budget.
        budget: String,
        /// The subject.
        subject: String,
    },
    /// A limit of the wrong kind for the subject.
    #[error("budget '{budget}': {expected}")]
    Limit {
        /// The budget.
        budget: String,
        /// What the subject takes.
        expected: &'static str,
    },
}

fn parse_stat(s: &str) -> Option<Stat> {
    match s {
        "min" => return Some(Stat::Min),
        "max" => return Some(Stat::Max),
        "mean" | "avg" => return Some(Stat::Mean),
        "median" => return Some(Stat::Percentile(50.0)),
        _ => {}
    }
    let digits = s.strip_prefix('p')?;
    if digits.is_empty() {
        return None;
    }
    let p: f64 = if digits.contains('.') {
        digits.parse().ok()?
    } else if digits.len() > 2 && digits.starts_with("99") {
        // p999 -> 99.9, p9999 -> 99.99
        format!("99.{}", &digits[2..]).parse().ok()?
    } else {
        digits.parse().ok()?
    };
    (0.0..=100.0).contains(&p).then_some(Stat::Percentile(p))
}

impl FromStr for Budget {
    type Err = BudgetError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let (pos, op, len) = ["<=", ">=", "<", ">"]
            .iter()
            .filter_map(|sym| t.find(sym).map(|p| (p, *sym)))
            .min_by_key(|(p, sym)| (*p, std::cmp::Reverse(sym.len())))
            .map(|(p, sym)| {
                let op = match sym {
                    "<=" => Op::Le,
                    ">=" => Op::Ge,
                    "<" => Op::Lt,
                    _ => Op::Gt,
                };
                (p, op, sym.len())
            })
            .ok_or_else(|| BudgetError::NoOp(text.to_string()))?;
        let lhs = t[..pos].trim();
        let rhs = t[pos + len..].trim();
        let subject_err = || BudgetError::Subject {
            budget: text.to_string(),
            subject: lhs.to_string(),
        };
        let subject = match lhs {
            "errors" | "error" => Subject::Errors,
            "busy" => Subject::Busy,
            "goodput" => Subject::Goodput,
            "sessions" => Subject::Sessions,
            "rate" => Subject::Rate,
            _ => {
                let (fig, stat) = lhs.split_once('.').ok_or_else(subject_err)?;
                let figure = Figure::from_name(fig).ok_or_else(subject_err)?;
                Subject::Latency(figure, parse_stat(stat).ok_or_else(subject_err)?)
            }
        };
        let limit_err = |expected| BudgetError::Limit {
            budget: text.to_string(),
            expected,
        };
        let percent = rhs
            .strip_suffix('%')
            .map(|n| n.trim().parse::<f64>().ok().filter(|v| v.is_finite()));
        let number = || {
            rhs.strip_suffix("/s")
                .unwrap_or(rhs)
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
        };
        let limit = match subject {
            Subject::Latency(..) => parse_duration(rhs)
                .map(|d| Limit::Micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
                .map_err(|_| limit_err("a latency budget takes a duration, such as 80ms or 1s"))?,
            Subject::Goodput => match percent {
                Some(Some(p)) => Limit::Percent(p),
                _ => return Err(limit_err("goodput takes a percentage, such as 99%")),
            },
            Subject::Errors | Subject::Busy => match percent {
                Some(Some(p)) => Limit::Percent(p),
                Some(None) => {
                    return Err(limit_err(
                        "write a percentage such as 0.1% or a count such as 10",
                    ))
                }
                None => Limit::Count(number().ok_or_else(|| {
                    limit_err("write a percentage such as 0.1% or a count such as 10")
                })?),
            },
            Subject::Sessions | Subject::Rate => Limit::Count(
                number()
                    .ok_or_else(|| limit_err("sessions and rate take a number, such as 19000"))?,
            ),
        };
        Ok(Budget {
            text: t.to_string(),
            subject,
            op,
            limit,
        })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Budget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The facts of a run that budgets are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Every measurement after warm-up.
    pub totals: &'a Interval,
    /// Most sessions open at once.
    pub peak_sessions: u64,
    /// Messages sent per second over the measured stages.
    pub rate_per_s: f64,
}

/// One budget's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The budget as written.
    pub budget: String,
    /// Whether it held.
    pub pass: bool,
    /// What was observed, for people (`85.2ms`, `0.02%`).
    pub observed: String,
    /// What was observed as a number in `unit`; `null` with no samples.
    pub observed_value: Option<f64>,
    /// The limit as a number in `unit`.
    pub limit_value: f64,
    /// `us`, `percent` or `count`.
    pub unit: String,
}

fn share(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| 100.0 * n as f64 / d as f64)
}

impl Budget {
    /// Checks the budget against a run.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let c = &facts.totals.counters;
        let (observed, observed_text) = match (self.subject, self.limit) {
            (Subject::Latency(fig, stat), _) => {
                let h = facts.totals.figure(fig);
                if h.is_empty() {
                    (None, format!("no {} samples", fig.name()))
                } else {
                    let v = match stat {
                        Stat::Percentile(p) => h.value_at_quantile(p / 100.0) as f64,
                        Stat::Min => h.min() as f64,
                        Stat::Max => h.max() as f64,
                        Stat::Mean => h.mean(),
                    };
                    (Some(v), format_us(v.round() as u64))
                }
            }
            (Subject::Errors, Limit::Percent(_)) => {
                pct(share(c.errors_total(), c.attempts()), "attempts")
            }
            (Subject::Errors, _) => cnt(c.errors_total() as f64),
            (Subject::Busy, Limit::Percent(_)) => {
                pct(share(c.error(ErrorKind::Busy), c.sent), "messages")
            }
            (Subject::Busy, _) => cnt(c.error(ErrorKind::Busy) as f64),
            (Subject::Goodput, _) => pct(share(c.good, c.sent), "messages"),
            (Subject::Sessions, _) => cnt(facts.peak_sessions as f64),
            (Subject::Rate, _) => (Some(facts.rate_per_s), format!("{:.1}/s", facts.rate_per_s)),
        };
        let (limit_value, unit) = match self.limit {
            Limit::Micros(us) => (us as f64, "us"),
            Limit::Percent(p) => (p, "percent"),
            Limit::Count(n) => (n, "count"),
        };
        Outcome {
            budget: self.text.clone(),
            pass: observed.is_some_and(|v| self.op.holds(v, limit_value)),
            observed: observed_text,
            observed_value: observed,
            limit_value,
            unit: unit.to_string(),
        }
    }

    /// The comparison symbol, for tables.
    pub fn op_symbol(&self) -> &'static str {
        self.op.symbol()
    }
}

fn pct(v: Option<f64>, of: &str) -> (Option<f64>, String) {
    match v {
        Some(v) => (Some(v), format!("{v:.3}%")),
        None => (None, format!("no {of}")),
    }
}

fn cnt(v: f64) -> (Option<f64>, String) {
    (Some(v), format!("{v}"))
}

/// Checks every budget; the run passes when all hold.
pub fn evaluate_all(budgets: &[Budget], facts: &Facts<'_>) -> Vec<Outcome> {
    budgets.iter().map(|b| b.evaluate(facts)).collect()
}

/// `--abort-on-fail`: end a run early once its budgets have stopped holding
/// for long enough.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbortRule {
    /// Budgets are not judged before this far into the stages.
    pub grace: Duration,
    /// How long a breach must last before the run ends.
    pub after: Duration,
}

/// Why a run ended early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aborted {
    /// Seconds into the stages when it ended.
    pub at_s: f64,
    /// Seconds into the stages when the breach began.
    pub breach_since_s: f64,
    /// The budgets that did not hold.
    pub budgets: Vec<String>,
}

/// Watches the budgets' verdicts second by second and says when a breach
/// has lasted `after` (a sans-IO state machine: the run's shell judges the
/// budgets over everything measured so far and feeds the verdicts here).
#[derive(Debug, Clone)]
pub struct AbortWatch {
    rule: AbortRule,
    breach_since: Option<f64>,
}

impl AbortWatch {
    /// A watch for `rule`.
    pub fn new(rule: AbortRule) -> AbortWatch {
        AbortWatch {
            rule,
            breach_since: None,
        }
    }

    /// The verdicts at `t` seconds into the stages; `Some` when the run is
    /// to end now.
    pub fn observe(&mut self, t: f64, outcomes: &[Outcome]) -> Option<Aborted> {
        let failing: Vec<String> = outcomes
            .iter()
            .filter(|o| !o.pass)
            .map(|o| o.budget.clone())
            .collect();
        if t < self.rule.grace.as_secs_f64() || failing.is_empty() {
            self.breach_since = None;
            return None;
        }
        let since = *self.breach_since.get_or_insert(t);
        (t - since >= self.rule.after.as_secs_f64()).then_some(Aborted {
            at_s: t,
            breach_since_s: since,
            budgets: failing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Recorder;

    #[test]
    fn a_breach_ends_the_run_only_after_the_grace_and_once_it_lasts() {
        let verdict = |pass: bool| {
            vec![Outcome {
                budget: "rtt.p99<80ms".into(),
                pass,
                observed: String::new(),
                observed_value: None,
                limit_value: 80_000.0,
                unit: "us".into(),
            }]
        };
        let mut w = AbortWatch::new(AbortRule {
            grace: Duration::from_secs(2),
            after: Duration::from_secs(3),
        });
        assert_eq!(w.observe(1.0, &verdict(false)), None, "in the grace");
        assert_eq!(w.observe(2.0, &verdict(false)), None, "the breach begins");
        assert_eq!(w.observe(3.0, &verdict(false)), None);
        assert_eq!(
            w.observe(4.0, &verdict(true)),
            None,
            "it held again: start over"
        );
        assert_eq!(w.observe(5.0, &verdict(false)), None);
        assert_eq!(w.observe(7.0, &verdict(false)), None);
        let a = w
            .observe(8.0, &verdict(false))
            .expect("three seconds of breach");
        assert_eq!((a.at_s, a.breach_since_s), (8.0, 5.0));
        assert_eq!(a.budgets, ["rtt.p99<80ms"]);
        let mut at_once = AbortWatch::new(AbortRule {
            grace: Duration::ZERO,
            after: Duration::ZERO,
        });
        assert!(at_once.observe(1.0, &verdict(false)).is_some());
    }

    fn b(s: &str) -> Budget {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_issue_examples() {
        assert_eq!(
            b("rtt.p99<80ms").subject,
            Subject::Latency(Figure::Rtt, Stat::Percentile(99.0))
        );
        assert_eq!(b("rtt.p99<80ms").limit, Limit::Micros(80_000));
        assert_eq!(b("ttft.p99<1s").limit, Limit::Micros(1_000_000));
        assert_eq!(b("errors<0.1%").limit, Limit::Percent(0.1));
        assert_eq!(b("goodput>99%").op, Op::Gt);
        assert_eq!(
            b("rtt.p999<=2ms").subject,
            Subject::Latency(Figure::Rtt, Stat::Percentile(99.9))
        );
        assert_eq!(
            b("rtt.p99.99 < 5ms").subject,
            Subject::Latency(Figure::Rtt, Stat::Percentile(99.99))
        );
        assert_eq!(
            b("reply.max<3s").subject,
            Subject::Latency(Figure::Reply, Stat::Max)
        );
        assert_eq!(b("sessions>=19000").limit, Limit::Count(19000.0));
        assert_eq!(b("rate>=1000/s").limit, Limit::Count(1000.0));
        assert_eq!(b("errors<10").limit, Limit::Count(10.0));
    }

    #[test]
    fn rejects_with_a_hint() {
        assert!(matches!(
            "rtt.p99=80ms".parse::<Budget>(),
            Err(BudgetError::NoOp(_))
        ));
        assert!(matches!(
            "latency.p99<80ms".parse::<Budget>(),
            Err(BudgetError::Subject { .. })
        ));
        assert!(matches!(
            "rtt.p101<80ms".parse::<Budget>(),
            Err(BudgetError::Subject { .. })
        ));
        assert!(matches!(
            "rtt.p99<80".parse::<Budget>(),
            Err(BudgetError::Limit { .. })
        ));
        assert!(matches!(
            "goodput>0.99".parse::<Budget>(),
            Err(BudgetError::Limit { .. })
        ));
        let msg = "rtt.p99<80".parse::<Budget>().unwrap_err().to_string();
        assert!(msg.contains("80ms"), "{msg}");
    }

    #[test]
    fn evaluates_against_totals() {
        let mut r = Recorder::default();
        for us in 1..=1000u64 {
            r.record(crate::metrics::Mark::Stage(0), Figure::Rtt, us * 100); // 0.1ms .. 100ms
        }
        r.counters().sent = 1000;
        r.counters().good = 995;
        r.error(ErrorKind::Timeout);
        r.error(ErrorKind::Busy);
        let totals = r.take();
        let facts = Facts {
            totals: &totals,
            peak_sessions: 19_000,
            rate_per_s: 500.0,
        };
        let o = b("rtt.p99<80ms").evaluate(&facts);
        assert!(!o.pass, "{o:?}");
        assert!(o.observed_value.unwrap() >= 98_000.0);
        assert!(b("rtt.p50<80ms").evaluate(&facts).pass);
        assert!(b("errors<0.2%").evaluate(&facts).pass, "1 of 1000");
        assert!(!b("errors<0.05%").evaluate(&facts).pass);
        assert!(b("busy<=1").evaluate(&facts).pass);
        assert!(b("goodput>99%").evaluate(&facts).pass);
        assert!(!b("goodput>99.5%").evaluate(&facts).pass);
        assert!(b("sessions>=19000").evaluate(&facts).pass);
        assert!(b("rate>=500").evaluate(&facts).pass);
        let none = b("ttft.p99<1s").evaluate(&facts);
        assert!(
            !none.pass && none.observed_value.is_none(),
            "no samples never passes"
        );
    }
}
