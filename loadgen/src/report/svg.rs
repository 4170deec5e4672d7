//! `--plot FILE.svg`: latency by percentile, HdrHistogram style. The x axis
//! spreads the tail (0%, 90%, 99%, 99.9%, ...: each step ten times closer to
//! 100%), the y axis is logarithmic so that `rtt` in microseconds and `reply`
//! in seconds share one chart; latency budgets are drawn as dashed lines.
//! The legend sits under the chart, where it hides no curve.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::Report;
use crate::budget::{Budget, Limit, Subject};
use crate::metrics::Figure;
use crate::units::format_us;

const W: f64 = 900.0;
/// Height of the chart and its axes, without the legend below them.
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// One legend row.
const LEGEND_ROW: f64 = 18.0;
/// Rightmost point: 99.999%.
const MAX_NINES: f64 = 5.0;

/// Each figure's colour, in every chart of the reports.
pub(super) fn colour(f: Figure) -> &'static str {
    match f {
        Figure::Connect => "#7f7f7f",
        Figure::Rtt => "#1f77b4",
        Figure::Ttft => "#d62728",
        Figure::Itl => "#2ca02c",
        Figure::Reply => "#9467bd",
        Figure::Tpot => "#ff7f0e",
    }
}

/// x of a percentile: log10(1 / (1 - p)), capped at [`MAX_NINES`].
fn nines(p: f64) -> f64 {
    let rest = (1.0 - p / 100.0).max(10f64.powf(-MAX_NINES));
    (-rest.log10()).min(MAX_NINES)
}

/// An axis label for a power of ten of microseconds: `10us`, `1ms`, `100ms`, `10s`.
pub(super) fn decade(us: f64) -> String {
    let us = us.round() as u64;
    if us >= 1_000_000 {
        format!("{}s", us / 1_000_000)
    } else if us >= 1_000 {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

/// The powers of ten of microseconds a log axis spans to hold `lo` to `hi`:
/// whole decades, at least one.
pub(super) fn decade_bounds(lo: u64, hi: u64) -> (f64, f64) {
    let y_lo = 10f64.powf((lo.max(1) as f64).log10().floor());
    let y_hi = 10f64
        .powf(((hi.max(1) as f64) * 1.01).log10().ceil())
        .max(y_lo * 10.0);
    (y_lo, y_hi)
}

/// `s` made safe as XML or HTML text and as a quoted attribute value.
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The points of one histogram's percentile curve.
fn curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let steps = 200;
    (0..=steps)
        .map(|i| {
            let x = MAX_NINES * i as f64 / steps as f64;
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            (x, h.value_at_quantile(p / 100.0).max(1))
        })
        .collect()
}

/// The SVG document for `r`; `hists` are its histograms by figure.
pub fn render(r: &Report, hists: &[(Figure, Histogram<u64>)]) -> String {
    let with_data: Vec<&(Figure, Histogram<u64>)> =
        hists.iter().filter(|(_, h)| !h.is_empty()).collect();
    let budgets: Vec<(Figure, u64, &Budget)> = r
        .scenario
        .budgets
        .iter()
        .filter_map(|b| match (b.subject, b.limit) {
            (Subject::Latency(f, _), Limit::Micros(us)) => Some((f, us, b)),
            _ => None,
        })
        .collect();
    let lo = with_data
        .iter()
        .map(|(_, h)| h.min().max(1))
        .min()
        .unwrap_or(1);
    let hi = with_data
        .iter()
        .map(|(_, h)| h.max().max(1))
        .chain(budgets.iter().map(|b| b.1))
        .max()
        .unwrap_or(1000);
    let (y_lo, y_hi) = decade_bounds(lo, hi);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let xs = |x: f64| LEFT + pw * x / MAX_NINES;
    let ys = |us: f64| {
        TOP + ph * (1.0 - (us.max(y_lo).log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10()))
    };

    // The legend's rows go below the axes' labels: the document grows.
    let total_h = H + LEGEND_ROW * with_data.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" viewBox="0 0 {W} {total_h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{total_h}" fill="white"/>"#);
    let title = format!(
        "Latency by percentile: {} ({} messages, {:.0}/s)",
        r.scenario.url, r.messages.sent, r.messages.rate_per_s
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="28" font-size="15" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    // Grid: percentiles.
    for (p, label) in [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
        (99.999, "99.999%"),
    ] {
        let x = xs(nines(p));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    // Grid: decades of latency.
    let mut d = y_lo;
    while d <= y_hi * 1.0001 {
        let y = ys(d);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            decade(d)
        );
        d *= 10.0;
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"#,
        TOP + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    // Budgets.
    for (f, us, b) in &budgets {
        let y = ys(*us as f64);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-dasharray="6 4" stroke-width="1.5"/>"#,
            LEFT + pw,
            colour(*f)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
            LEFT + pw + 6.0,
            y + 4.0,
            colour(*f),
            esc(&b.text)
        );
    }
    // Curves and legend.
    for (i, (f, h)) in with_data.iter().enumerate() {
        let pts: Vec<String> = curve(h)
            .iter()
            .map(|&(x, v)| format!("{:.1},{:.1}", xs(x), ys(v as f64)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            colour(*f),
            pts.join(" ")
        );
        let ly = H + LEGEND_ROW * i as f64;
        let lx = LEFT;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"/>"#,
            lx + 22.0,
            colour(*f)
        );
        let label = format!(
            "{} p50 {} p99 {} max {} (n={})",
            f.name(),
            format_us(h.value_at_quantile(0.5)),
            format_us(h.value_at_quantile(0.99)),
            format_us(h.max()),
            h.len()
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 28.0,
            ly + 4.0,
            esc(&label)
        );
    }
    if with_data.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no samples</text>"#,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_each_figure_with_samples_and_the_budgets() {
        let r = crate::report::tests::sample(1, &["rtt.p99<2ms", "ttft.p99<1s", "errors<1%"]);
        let iv = r.to_interval().unwrap();
        let hists: Vec<(Figure, Histogram<u64>)> = Figure::ALL
            .iter()
            .map(|&f| (f, iv.figure(f).clone()))
            .collect();
        let svg = render(&r, &hists);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            3,
            "connect, rtt, ttft have samples"
        );
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2,
            "two latency budgets"
        );
        assert!(svg.contains("rtt.p99&lt;2ms"));
        assert!(svg.contains("99.999%"));
    }

    #[test]
    fn the_legend_is_below_the_chart() {
        let r = crate::report::tests::sample(1, &[]);
        let iv = r.to_interval().unwrap();
        let hists: Vec<(Figure, Histogram<u64>)> = Figure::ALL
            .iter()
            .map(|&f| (f, iv.figure(f).clone()))
            .collect();
        let svg = render(&r, &hists);
        let plot_bottom = H - BOTTOM;
        // A legend entry is a thick line and its text.
        let rows: Vec<f64> = svg
            .lines()
            .filter(|l| l.contains(r#"stroke-width="3""#))
            .map(|l| {
                let y = l.split("y1=\"").nth(1).and_then(|v| v.split('"').next());
                y.and_then(|v| v.parse().ok()).expect("a y1")
            })
            .collect();
        assert_eq!(rows.len(), 3, "{svg}");
        for y in &rows {
            assert!(
                *y > plot_bottom + 40.0,
                "legend row at {y} inside the chart"
            );
        }
        let height = format!(r#"height="{}""#, H + 3.0 * LEGEND_ROW);
        assert!(svg.contains(&height), "the document grows to hold it");
        assert!(rows.iter().all(|y| *y < H + 3.0 * LEGEND_ROW));
    }

    #[test]
    fn decades_are_labelled_plainly() {
        assert_eq!(decade(10.0), "10us");
        assert_eq!(decade(1_000.0), "1ms");
        assert_eq!(decade(100_000.0), "100ms");
        assert_eq!(decade(10_000_000.0), "10s");
    }

    #[test]
    fn x_axis_spreads_the_tail() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
    }
}
