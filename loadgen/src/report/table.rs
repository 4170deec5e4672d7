//! The summary people read at the end of a run: what was offered, sessions
//! and memory, messages, errors by code, a table of every figure, and the
//! verdict table of the budgets.

use std::fmt::Write;

use super::Report;
use crate::metrics::Figure;
use crate::sweep::{Step, SweepReport};
use crate::units::format_us;

fn lat(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), format_us)
}

fn bytes(b: u64) -> String {
    if b >= 10 * 1024 * 1024 {
        format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
    } else if b >= 10 * 1024 {
        format!("{:.0} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// The summary, ending with the verdict line.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let sc = &r.scenario;
    let shards = if r.shards.len() == 1 {
        let sh = &r.shards[0];
        format!(
            "shard {}, {} threads on {}, {}",
            sh.shard, sh.machine.threads, sh.machine.driver, sh.machine.hostname
        )
    } else {
        format!("{} shards merged", r.shards.len())
    };
    let _ = writeln!(s, "loadgen {} -> {}", r.tool.version, sc.url);
    let _ = writeln!(
        s,
        "  {:?} model, {:?} arrivals, {} stage(s), {:.1}s measured, {}{}",
        sc.model,
        sc.arrivals,
        sc.stages.len(),
        r.measured_s,
        shards,
        if sc.transport.is_ws() {
            ""
        } else {
            ", over long-polling"
        }
    );
    let ss = &r.sessions;
    // Sessions opened in warm-up are not measured, but they are opened: a
    // closed-model run opens them all then.
    let opened = if ss.warmup_attempted > 0 {
        format!(
            "{} of {} opened ({} of {} during warm-up, not measured)",
            ss.opened + ss.warmup_opened,
            ss.attempted + ss.warmup_attempted,
            ss.warmup_opened,
            ss.warmup_attempted
        )
    } else {
        format!("{} of {} opened", ss.opened, ss.attempted)
    };
    let memory = match ss.bytes_per_session {
        Some(b) => format!(
            "; {} resident per session ({} at peak)",
            bytes(b),
            bytes(ss.rss_peak_bytes)
        ),
        None if ss.rss_peak_bytes > 0 => format!(
            "; {} resident at peak (the whole process; per session from {} sessions)",
            bytes(ss.rss_peak_bytes),
            super::PER_SESSION_MIN
        ),
        None => String::new(),
    };
    let _ = writeln!(s, "sessions   peak {} open; {opened}{memory}", ss.peak_open);
    let m = &r.messages;
    let goodput = match (r.goodput.percent, r.goodput.slos.is_empty()) {
        (Some(p), false) => format!(
            "; goodput {p:.2}% ({})",
            r.goodput
                .slos
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Some(p), true) => format!("; {p:.2}% settled without error"),
        (None, _) => String::new(),
    };
    let _ = writeln!(
        s,
        "messages   {} sent ({:.1}/s), {} acked, {} replied{goodput}",
        m.sent, m.rate_per_s, m.acked, m.replied
    );
    let by_code: Vec<String> = r
        .errors
        .iter()
        .filter(|(k, _)| k.as_str() != "busy")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        s,
        "errors     {}{}; busy {}",
        m.errors,
        if by_code.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_code.join(", "))
        },
        m.busy
    );
    if m.output_tokens > 0 {
        let _ = writeln!(
            s,
            "tokens     {} out ({:.1}/s){}; goodput {:.2} good/s",
            m.output_tokens,
            m.output_tokens_per_s,
            if m.input_tokens > 0 {
                format!(", {} in", m.input_tokens)
            } else {
                String::new()
            },
            r.goodput.per_s
        );
    }
    if m.reconnects > 0 {
        let _ = writeln!(
            s,
            "reconnects {} (reloads and back from offline), {} resumed",
            m.reconnects, m.resumed
        );
    }
    if m.resent > 0 {
        let _ = writeln!(
            s,
            "resent     {} busy messages after their retry_after_ms; {} acked ({:.0}%)",
            m.resent,
            m.resent_acked,
            100.0 * m.resent_acked as f64 / m.resent as f64
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "figure", "count", "min", "p50", "p90", "p99", "p99.9", "max"
    );
    for f in Figure::ALL {
        if let Some(x) = r.metrics.get(f.name()) {
            let _ = writeln!(
                s,
                "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                f.name(),
                x.count,
                lat(x.min_us),
                lat(x.p50_us),
                lat(x.p90_us),
                lat(x.p99_us),
                lat(x.p999_us),
                lat(x.max_us)
            );
        }
    }
    let lag = &r.send_lag;
    if lag.count > 0 {
        let _ = writeln!(
            s,
            "send lag {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  (loadgen's own lateness, inside every figure)",
            lag.count,
            lat(lag.min_us),
            lat(lag.p50_us),
            lat(lag.p90_us),
            lat(lag.p99_us),
            lat(lag.p999_us),
            lat(lag.max_us)
        );
    }
    if r.stages.len() > 1 {
        stages(&mut s, r);
    }
    if !r.turns.is_empty() {
        turns(&mut s, r);
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    if let Some(a) = &r.aborted {
        let _ = writeln!(
            s,
            "aborted: at {:.0} s, {} had not held since {:.0} s (--abort-on-fail)",
            a.at_s,
            a.budgets.join(", "),
            a.breach_since_s
        );
    }
    let _ = writeln!(s);
    if r.budgets.is_empty() {
        let _ = writeln!(s, "verdict: no budgets given");
        return s;
    }
    let width = r
        .budgets
        .iter()
        .map(|b| b.budget.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(s, "{:<width$}  {:>14}  verdict", "budget", "observed");
    for b in &r.budgets {
        let _ = writeln!(
            s,
            "{:<width$}  {:>14}  {}",
            b.budget,
            b.observed,
            if b.pass { "pass" } else { "FAIL" }
        );
    }
    let missed = r.budgets.iter().filter(|b| !b.pass).count();
    if missed == 0 {
        let _ = writeln!(s, "verdict: PASS (all {} budgets hold)", r.budgets.len());
    } else {
        let _ = writeln!(
            s,
            "verdict: FAIL ({missed} of {} budgets missed)",
            r.budgets.len()
        );
    }
    s
}

/// Each stage's own figures, one line per stage.
fn stages(s: &mut String, r: &Report) {
    let width = r
        .stages
        .iter()
        .map(|st| st.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<width$} {:>7} {:>9} {:>8} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "stage",
        "start",
        "sent",
        "sent/s",
        "busy",
        "errors",
        "goodput",
        "rtt p50",
        "rtt p99",
        "ttft p50",
        "ttft p99"
    );
    for st in &r.stages {
        let m = &st.messages;
        let fig = |f: Figure| st.metrics.get(f.name());
        let _ = writeln!(
            s,
            "{:<width$} {:>6.0}s {:>9} {:>8.1} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
            st.name,
            st.start_s,
            m.sent,
            m.rate_per_s,
            m.busy,
            m.errors,
            st.goodput
                .percent
                .map_or_else(|| "-".to_string(), |p| format!("{p:.1}%")),
            lat(fig(Figure::Rtt).and_then(|x| x.p50_us)),
            lat(fig(Figure::Rtt).and_then(|x| x.p99_us)),
            lat(fig(Figure::Ttft).and_then(|x| x.p50_us)),
            lat(fig(Figure::Ttft).and_then(|x| x.p99_us)),
        );
    }
}

/// Each conversation turn's figures: how the answers change as the
/// conversation (and the prompt's history) grows.
fn turns(s: &mut String, r: &Report) {
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<6} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "turn",
        "sent",
        "busy",
        "errors",
        "rtt p50",
        "ttft p50",
        "ttft p99",
        "reply p50",
        "reply p99"
    );
    for t in &r.turns {
        let fig = |f: Figure, p99: bool| {
            lat(t
                .metrics
                .get(f.name())
                .and_then(|x| if p99 { x.p99_us } else { x.p50_us }))
        };
        let _ = writeln!(
            s,
            "{:<6} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            t.turn,
            t.messages.sent,
            t.messages.busy,
            t.messages.errors,
            fig(Figure::Rtt, false),
            fig(Figure::Ttft, false),
            fig(Figure::Ttft, true),
            fig(Figure::Reply, false),
            fig(Figure::Reply, true),
        );
    }
}

/// The column heads of a sweep's live table.
pub fn sweep_header() -> String {
    format!(
        "{:>10} {:>9} {:>10} {:>9} {:>7} {:>9} {:>9} {:>9}  verdict",
        "rate/s", "sent/s", "goodput/s", "goodput", "busy", "rtt p99", "ttft p99", "errors"
    )
}

/// One step of a sweep, as it completes.
pub fn sweep_row(step: &Step) -> String {
    let r = &step.report;
    let p99 = |f: Figure| lat(r.metrics.get(f.name()).and_then(|x| x.p99_us));
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |p| format!("{p:.1}%"));
    let failed: Vec<&str> = r
        .budgets
        .iter()
        .filter(|b| !b.pass)
        .map(|b| b.budget.as_str())
        .collect();
    format!(
        "{:>10} {:>9.1} {:>10.1} {:>9} {:>7} {:>9} {:>9} {:>9}  {}",
        crate::sweep::fmt_rate(step.rate_per_s),
        step.sent_per_s,
        step.goodput_per_s,
        pct(step.goodput_percent),
        pct(step.busy_percent),
        p99(Figure::Rtt),
        p99(Figure::Ttft),
        r.messages.errors,
        if step.passed {
            "pass".to_string()
        } else {
            format!("FAIL ({})", failed.join(", "))
        }
    )
}

/// The end of a sweep: the capacity at SLO, or why there is none.
pub fn sweep_summary(sw: &SweepReport) -> String {
    let budgets = sw
        .budgets
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match (sw.capacity_per_s, sw.goodput_at_capacity_per_s) {
        (Some(c), g) => format!(
            "capacity at SLO: {} msg/s{} ({budgets}; {} steps)\n",
            crate::sweep::fmt_rate(c),
            g.map_or_else(String::new, |g| format!(", goodput {g:.1}/s")),
            sw.steps.len()
        ),
        (None, _) => format!(
            "capacity at SLO: none: even {} msg/s missed its budgets ({budgets})\n",
            sw.steps
                .first()
                .map_or_else(|| "-".to_string(), |s| crate::sweep::fmt_rate(s.rate_per_s))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_figures_errors_and_verdict() {
        let r = crate::report::tests::sample(1, &["rtt.p99<2ms", "errors<0.05%"]);
        let t = render(&r);
        for part in [
            "rtt ",
            "ttft",
            "connect",
            "timeout 1",
            "busy 1",
            "goodput 99.00% (ttft:1s)",
            "FAIL",
            "verdict: FAIL (1 of 2 budgets missed)",
            "10 of 10 opened;",
            "resident at peak (the whole process; per session from 1000 sessions)",
        ] {
            assert!(t.contains(part), "{part} missing:\n{t}");
        }
        let ok = crate::report::tests::sample(1, &["rtt.p99<2ms"]);
        assert!(render(&ok).contains("verdict: PASS"));
        assert!(render(&crate::report::tests::sample(1, &[])).contains("no budgets"));
    }

    #[test]
    fn warm_up_sessions_are_counted_as_opened() {
        let mut r = crate::report::tests::sample(1, &[]);
        // A closed-model run with --warmup: every session opened before measuring.
        r.sessions.attempted = 0;
        r.sessions.opened = 0;
        r.sessions.warmup_attempted = 2;
        r.sessions.warmup_opened = 2;
        let t = render(&r);
        assert!(
            t.contains("2 of 2 opened (2 of 2 during warm-up, not measured)"),
            "{t}"
        );
        assert!(!t.contains("0 of 0 opened"));
        r.sessions.bytes_per_session = Some(20 * 1024);
        r.sessions.peak_open = 5000;
        assert!(render(&r).contains("20 KiB resident per session"));
    }
}
