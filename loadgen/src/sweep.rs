//! `loadgen sweep`: capacity at SLO. The offered rate is raised step by step
//! (or searched by bisection) under the open model; each step is a warm-up
//! (`--settle`) and a measured window (`--step-duration`) judged by the
//! budgets. The capacity is the highest rate at which every budget held: the
//! knee of the curve.
//!
//! The plan of rates is a sans-IO state machine ([`Plan`]): it is told each
//! step's verdict and says which rate to run next, or that the sweep is over.
//! The shell (`cli`) runs each step as a whole run and keeps its report.

use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::report::{Report, Tool};
use crate::slo::Slo;

/// The schema name and version every sweep report carries.
pub const SCHEMA: &str = "loadgen-sweep/1";

/// How the rates of a sweep are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// `from`, `from + step`, ... up to `to`, stopping at the first step
    /// whose budgets fail.
    Steps {
        /// First rate, messages per second.
        from: f64,
        /// Last rate.
        to: f64,
        /// Increment.
        step: f64,
    },
    /// Bisection between `from` (expected to hold) and `to` (expected to
    /// fail) until the bracket is narrower than `resolution`.
    Search {
        /// Low end of the bracket.
        from: f64,
        /// High end.
        to: f64,
        /// Stop when the bracket is narrower than this, messages per second.
        resolution: f64,
    },
}

/// A sweep's settings as the report records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// How the rates are chosen.
    #[serde(flatten)]
    pub mode: Mode,
    /// Warm-up of each step, seconds (not measured).
    pub settle_s: f64,
    /// Measured window of each step, seconds.
    pub step_duration_s: f64,
    /// Concurrent sessions of every step.
    pub sessions: u64,
}

/// One step of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Offered rate, messages per second.
    pub rate_per_s: f64,
    /// Whether every budget held.
    pub passed: bool,
    /// Messages sent per second in the measured window.
    pub sent_per_s: f64,
    /// Good messages per second (met every SLO).
    pub goodput_per_s: f64,
    /// Good messages as a share of those sent, percent.
    pub goodput_percent: Option<f64>,
    /// Messages refused `busy`, percent of those sent.
    pub busy_percent: Option<f64>,
    /// The step's whole report (its figures, budgets and verdict).
    pub report: Report,
}

/// The report of a whole sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Who wrote it.
    pub tool: Tool,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// Target.
    pub url: String,
    /// How the sweep ran.
    pub settings: Settings,
    /// The per-request objectives defining goodput.
    pub slos: Vec<Slo>,
    /// The budgets every step is judged by.
    pub budgets: Vec<Budget>,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    /// The highest rate at which every budget held; `null` when none did.
    pub capacity_per_s: Option<f64>,
    /// Index in `steps` of the step at the capacity.
    pub knee: Option<usize>,
    /// Goodput per second at the capacity.
    pub goodput_at_capacity_per_s: Option<f64>,
    /// `pass` (a capacity was found), `fail` (even the first step missed).
    pub verdict: String,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// A sweep that cannot run as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SweepError {
    /// Rates must be positive, `to` above `from`, the step positive.
    #[error("sweep rates: {0}")]
    Rates(String),
}

/// The plan of rates: which rate to run next, given the verdicts so far.
#[derive(Debug, Clone)]
pub struct Plan {
    mode: Mode,
    /// Highest rate that held, lowest that failed (search bracket).
    held: Option<f64>,
    failed: Option<f64>,
    /// Steps mode: how many steps were run.
    runs: u32,
    done: bool,
}

/// Most steps a sweep runs, whatever its settings: it is bounded in time.
pub const MAX_STEPS: u32 = 64;

impl Plan {
    /// A plan for `mode`, its rates checked.
    pub fn new(mode: Mode) -> Result<Plan, SweepError> {
        let bad = |m: &str| Err(SweepError::Rates(m.to_string()));
        match mode {
            Mode::Steps { from, to, step } => {
                if !(from > 0.0 && from.is_finite()) {
                    return bad("--from must be a positive rate");
                }
                if !(to >= from && to.is_finite()) {
                    return bad("--to must be at least --from");
                }
                if !(step > 0.0 && step.is_finite()) {
                    return bad("--step must be a positive rate");
                }
                if ((to - from) / step).floor() + 1.0 > f64::from(MAX_STEPS) {
                    return bad(&format!(
                        "--from, --to and --step make more than {MAX_STEPS} steps; take a larger --step or use --search"
                    ));
                }
            }
            Mode::Search {
                from,
                to,
                resolution,
            } => {
                if !(from > 0.0 && from.is_finite()) {
                    return bad("--from must be a positive rate");
                }
                if !(to > from && to.is_finite()) {
                    return bad("--search needs --to above --from");
                }
                if !(resolution > 0.0 && resolution.is_finite()) {
                    return bad("--resolution must be a positive rate");
                }
            }
        }
        Ok(Plan {
            mode,
            held: None,
            failed: None,
            runs: 0,
            done: false,
        })
    }

    /// The rate to run next; `None` when the sweep is over.
    pub fn next(&self) -> Option<f64> {
        if self.done || self.runs >= MAX_STEPS {
            return None;
        }
        match self.mode {
            Mode::Steps { from, to, step } => {
                let r = from + step * f64::from(self.runs);
                // A rounding hair above `to` is still the last step.
                (r <= to + step * 1e-9).then_some(r)
            }
            Mode::Search {
                from,
                to,
                resolution,
            } => match (self.held, self.failed) {
                (None, None) => Some(from),
                (Some(_), None) => Some(to),
                (None, Some(_)) => None,
                (Some(lo), Some(hi)) => {
                    let mid = (lo + hi) / 2.0;
                    (hi - lo > resolution).then_some(mid)
                }
            },
        }
    }

    /// Records the verdict of the step at `rate`.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.runs += 1;
        if passed {
            self.held = Some(self.held.map_or(rate, |h| h.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
        match self.mode {
            // The knee is passed at the first failure.
            Mode::Steps { .. } => self.done |= !passed,
            Mode::Search { from, to, .. } => {
                // The low end failing leaves nothing to search; the high end
                // holding means the capacity is at least `to`.
                if (rate == from && !passed) || (rate == to && passed) {
                    self.done = true;
                }
            }
        }
    }

    /// The highest rate at which every budget held, if one did.
    pub fn capacity(&self) -> Option<f64> {
        self.held
    }

    /// Whether the highest rate asked for still held: the capacity may be higher.
    pub fn capped(&self) -> bool {
        let to = match self.mode {
            Mode::Steps { to, .. } | Mode::Search { to, .. } => to,
        };
        self.failed.is_none()
            && self
                .held
                .is_some_and(|h| h >= to - 1e-9 * to.abs().max(1.0))
    }
}

/// The sweep's report from its steps.
pub fn assemble(
    url: &str,
    settings: Settings,
    slos: Vec<Slo>,
    budgets: Vec<Budget>,
    steps: Vec<Step>,
    plan: &Plan,
    started_at_unix_ms: u64,
) -> SweepReport {
    let capacity = plan.capacity();
    let knee = capacity.and_then(|c| steps.iter().position(|s| s.passed && s.rate_per_s == c));
    let mut warnings = Vec::new();
    if plan.capped() {
        warnings.push(format!(
            "every step held its budgets up to {} msg/s: the capacity may be higher; raise --to",
            fmt_rate(capacity.unwrap_or(0.0))
        ));
    }
    if let Mode::Steps { .. } = settings.mode {
        // A step that failed below a later one that held is noise, or a
        // server that recovered: say so rather than hide it.
        if let Some(first_fail) = steps.iter().position(|s| !s.passed) {
            if steps[first_fail + 1..].iter().any(|s| s.passed) {
                warnings.push(
                    "a step held after one failed: results are noisy; lengthen --step-duration"
                        .into(),
                );
            }
        }
    }
    for s in &steps {
        for w in &s.report.warnings {
            let w = format!("at {} msg/s: {w}", fmt_rate(s.rate_per_s));
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    SweepReport {
        schema: SCHEMA.to_string(),
        tool: Tool {
            name: "loadgen".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        started_at_unix_ms,
        url: url.to_string(),
        settings,
        slos,
        budgets,
        goodput_at_capacity_per_s: knee.map(|k| steps[k].goodput_per_s),
        knee,
        capacity_per_s: capacity,
        verdict: if capacity.is_some() { "pass" } else { "fail" }.to_string(),
        steps,
        warnings,
    }
}

impl Step {
    /// A step from its run's report.
    pub fn of(rate_per_s: f64, report: Report) -> Step {
        let m = &report.messages;
        Step {
            rate_per_s,
            passed: report.passed(),
            sent_per_s: m.rate_per_s,
            goodput_per_s: report.goodput.per_s,
            goodput_percent: report.goodput.percent,
            busy_percent: (m.sent > 0).then(|| 100.0 * m.busy as f64 / m.sent as f64),
            report,
        }
    }
}

/// A rate for people: whole numbers without decimals.
pub fn fmt_rate(r: f64) -> String {
    if (r - r.round()).abs() < 1e-9 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a plan against a server that holds up to `capacity`.
    fn sweep(mode: Mode, capacity: f64) -> (Vec<f64>, Option<f64>) {
        let mut plan = Plan::new(mode).unwrap();
        let mut rates = Vec::new();
        while let Some(r) = plan.next() {
            rates.push(r);
            plan.record(r, r <= capacity);
        }
        (rates, plan.capacity())
    }

    #[test]
    fn steps_stop_at_the_first_failure() {
        let m = Mode::Steps {
            from: 10.0,
            to: 50.0,
            step: 10.0,
        };
        assert_eq!(sweep(m, 32.0), (vec![10.0, 20.0, 30.0, 40.0], Some(30.0)));
        assert_eq!(sweep(m, 5.0), (vec![10.0], None), "even the first missed");
        let (rates, cap) = sweep(m, 1e9);
        assert_eq!((rates.len(), cap), (5, Some(50.0)));
        let mut p = Plan::new(m).unwrap();
        for r in rates {
            p.record(r, true);
        }
        assert!(p.capped(), "every step held: the capacity may be higher");
    }

    #[test]
    fn a_search_brackets_the_knee_to_the_resolution() {
        let m = Mode::Search {
            from: 10.0,
            to: 170.0,
            resolution: 5.0,
        };
        let (rates, cap) = sweep(m, 77.0);
        assert_eq!(&rates[..3], &[10.0, 170.0, 90.0]);
        let cap = cap.unwrap();
        assert!(cap <= 77.0 && 77.0 - cap <= 5.0, "{cap} from {rates:?}");
        assert!(rates.len() <= 8, "{rates:?}");
        assert_eq!(sweep(m, 5.0), (vec![10.0], None));
        assert_eq!(sweep(m, 500.0), (vec![10.0, 170.0], Some(170.0)));
    }

    #[test]
    fn impossible_plans_say_which_flag() {
        let e = |m| Plan::new(m).unwrap_err().to_string();
        assert!(e(Mode::Steps {
            from: 0.0,
            to: 5.0,
            step: 1.0
        })
        .contains("--from"));
        assert!(e(Mode::Steps {
            from: 5.0,
            to: 1.0,
            step: 1.0
        })
        .contains("--to"));
        assert!(e(Mode::Steps {
            from: 1.0,
            to: 5.0,
            step: 0.0
        })
        .contains("--step"));
        assert!(e(Mode::Steps {
            from: 1.0,
            to: 1000.0,
            step: 1.0
        })
        .contains("--search"));
        assert!(e(Mode::Search {
            from: 5.0,
            to: 5.0,
            resolution: 1.0
        })
        .contains("--to"));
    }
}
