//! The live progress line printed on stderr once a second: elapsed and total,
//! stage, sessions open, message rate, p50 and p99 of rtt and ttft so far, and
//! errors. Formatting only; the shell decides when and whether to print.

use hdrhistogram::Histogram;

use crate::units::format_us;

/// What one progress line shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressView {
    /// Seconds since the stages started; `None` while the first sessions connect.
    pub elapsed: Option<f64>,
    /// Length of the stages, seconds.
    pub total: f64,
    /// Stage name (or `drain` after the last stage).
    pub stage: String,
    /// Sessions open now.
    pub open: u64,
    /// Sessions the scenario wants now.
    pub target: u64,
    /// Messages sent in the last second.
    pub rate: u64,
    /// rtt p50 and p99 so far.
    pub rtt: (Option<u64>, Option<u64>),
    /// ttft p50 and p99 so far.
    pub ttft: (Option<u64>, Option<u64>),
    /// Errors so far (busy apart).
    pub errors: u64,
    /// `busy` refusals so far.
    pub busy: u64,
}

/// p50 and p99 of a histogram, `None` when it is empty.
pub fn p50_p99(h: &Histogram<u64>) -> (Option<u64>, Option<u64>) {
    if h.is_empty() {
        (None, None)
    } else {
        (
            Some(h.value_at_quantile(0.5)),
            Some(h.value_at_quantile(0.99)),
        )
    }
}

fn lat(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), format_us)
}

/// The line, without a trailing newline.
pub fn line(v: &ProgressView) -> String {
    let clock = match v.elapsed {
        Some(e) => format!("{:>5.0}s/{:.0}s", e, v.total),
        None => format!("{:>6}/{:.0}s", "conn", v.total),
    };
    format!(
        "[{clock}] {stage:<10} sessions {open}/{target}  msgs {rate}/s  rtt p50 {r50} p99 {r99}  ttft p50 {t50} p99 {t99}  errors {errors}  busy {busy}",
        stage = v.stage,
        open = v.open,
        target = v.target,
        rate = v.rate,
        r50 = lat(v.rtt.0),
        r99 = lat(v.rtt.1),
        t50 = lat(v.ttft.0),
        t99 = lat(v.ttft.1),
        errors = v.errors,
        busy = v.busy,
    )
}

/// Whether progress is shown: not with `--quiet`, not when `CI` is `true`.
pub fn enabled(quiet: bool, ci_env: Option<&str>) -> bool {
    !quiet && !matches!(ci_env, Some(v) if v.eq_ignore_ascii_case("true") || v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_every_field() {
        let v = ProgressView {
            elapsed: Some(12.2),
            total: 60.0,
            stage: "hold".into(),
            open: 990,
            target: 1000,
            rate: 2001,
            rtt: (Some(212), Some(1_050)),
            ttft: (None, None),
            errors: 3,
            busy: 1,
        };
        let l = line(&v);
        for part in [
            "12s/60s",
            "hold",
            "990/1000",
            "2001/s",
            "rtt p50 212us p99 1.05ms",
            "ttft p50 - p99 -",
            "errors 3",
            "busy 1",
        ] {
            assert!(l.contains(part), "{part} missing in {l}");
        }
        assert!(line(&ProgressView { elapsed: None, ..v }).contains("conn"));
    }

    #[test]
    fn quiet_in_ci() {
        assert!(enabled(false, None));
        assert!(!enabled(true, None));
        assert!(!enabled(false, Some("true")));
        assert!(enabled(false, Some("false")));
    }
}
