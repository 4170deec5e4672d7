//! `--junit FILE`: one JUnit test case per budget, so CI systems show each
//! budget as a passed or failed test.

use super::Report;
use crate::sweep::SweepReport;

/// XML-escapes text for attributes and content.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML document.
pub fn render(r: &Report) -> String {
    let failures = r.budgets.iter().filter(|b| !b.pass).count();
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"loadgen\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n",
        r.budgets.len(),
        r.elapsed_s
    ));
    x.push_str(&format!(
        "  <testsuite name=\"loadgen budgets\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{:.3}\">\n",
        r.budgets.len(),
        r.elapsed_s
    ));
    x.push_str("    <properties>\n");
    let props = [
        ("url", r.scenario.url.clone()),
        ("messages_sent", r.messages.sent.to_string()),
        ("peak_sessions", r.sessions.peak_open.to_string()),
        ("verdict", r.verdict.clone()),
    ];
    for (k, v) in props {
        x.push_str(&format!(
            "      <property name=\"{k}\" value=\"{}\"/>\n",
            esc(&v)
        ));
    }
    x.push_str("    </properties>\n");
    for b in &r.budgets {
        x.push_str(&format!(
            "    <testcase classname=\"loadgen.budgets\" name=\"{}\" time=\"0\">\n",
            esc(&b.budget)
        ));
        if b.pass {
            x.push_str(&format!(
                "      <system-out>observed {}</system-out>\n",
                esc(&b.observed)
            ));
        } else {
            x.push_str(&format!(
                "      <failure message=\"budget missed: {} (observed {})\" type=\"BudgetMissed\">budget {} was not met: observed {}</failure>\n",
                esc(&b.budget),
                esc(&b.observed),
                esc(&b.budget),
                esc(&b.observed)
            ));
        }
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// The JUnit document of a sweep: one test case, the capacity at SLO, which
/// fails only when even the first step missed its budgets (steps past the
/// knee are expected to miss them: that is how the knee is found).
pub fn render_sweep(sw: &SweepReport) -> String {
    let failed = sw.capacity_per_s.is_none();
    let elapsed: f64 = sw.steps.iter().map(|s| s.report.elapsed_s).sum();
    let steps: Vec<String> = sw
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} msg/s: {}",
                crate::sweep::fmt_rate(s.rate_per_s),
                if s.passed { "pass" } else { "fail" }
            )
        })
        .collect();
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"loadgen\" tests=\"1\" failures=\"{}\" time=\"{elapsed:.3}\">\n  <testsuite name=\"loadgen sweep\" tests=\"1\" failures=\"{}\" errors=\"0\" skipped=\"0\" time=\"{elapsed:.3}\">\n",
        u8::from(failed),
        u8::from(failed)
    ));
    x.push_str(&format!(
        "    <properties>\n      <property name=\"url\" value=\"{}\"/>\n      <property name=\"capacity_per_s\" value=\"{}\"/>\n    </properties>\n",
        esc(&sw.url),
        sw.capacity_per_s.map_or_else(String::new, |c| c.to_string())
    ));
    x.push_str(&format!(
        "    <testcase classname=\"loadgen.sweep\" name=\"capacity at SLO\" time=\"{elapsed:.3}\">\n"
    ));
    if failed {
        x.push_str(&format!(
            "      <failure message=\"no capacity: the first step missed its budgets\" type=\"BudgetMissed\">{}</failure>\n",
            esc(&steps.join("; "))
        ));
    } else {
        x.push_str(&format!(
            "      <system-out>capacity {} msg/s; {}</system-out>\n",
            sw.capacity_per_s
                .map_or_else(String::new, crate::sweep::fmt_rate),
            esc(&steps.join("; "))
        ));
    }
    x.push_str("    </testcase>\n  </testsuite>\n</testsuites>\n");
    x
}

/// A JUnit document for a run that could not take place (a usage, scenario
/// or connection failure), so that CI shows why instead of a missing file.
pub fn render_failure(url: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"loadgen\" tests=\"1\" failures=\"0\" errors=\"1\">\n  <testsuite name=\"loadgen budgets\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\">\n    <testcase classname=\"loadgen.run\" name=\"{}\" time=\"0\">\n      <error message=\"{}\" type=\"RunFailed\">{}</error>\n    </testcase>\n  </testsuite>\n</testsuites>\n",
        esc(&format!("load test of {url}")),
        esc(message),
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_case_per_budget_with_failures_marked_and_escaped() {
        let r = crate::report::tests::sample(1, &["rtt.p99<2ms", "errors<0.05%", "goodput>99.5%"]);
        let x = render(&r);
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("<failure ").count(), 2);
        assert!(x.contains("tests=\"3\" failures=\"2\""));
        assert!(x.contains("name=\"rtt.p99&lt;2ms\""), "{x}");
        assert!(!x.contains("p99<2ms"), "raw < never appears");
        assert_eq!(esc("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        let f = render_failure("ws://h/ws", "could not open any session: refused <x>");
        assert!(
            f.contains("<error message=\"could not open any session: refused &lt;x&gt;\""),
            "{f}"
        );
    }
}
