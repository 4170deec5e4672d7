//! The summary people read at the end of a run: what was offered, sessions
//! and memory, messages, errors by code, a table of every figure, and the
//! verdict table of the budgets.

use std::fmt::Write;

use super::Report;
use crate::metrics::Figure;
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
        "  {:?} model, {:?} arrivals, {} stage(s), {:.1}s measured, {}",
        sc.model,
        sc.arrivals,
        sc.stages.len(),
        r.measured_s,
        shards
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
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
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
