//! `--html FILE`: a run's report (a merged one too) and a sweep's, each as
//! one page a person reads in a browser: the verdict and settings, the
//! budgets, charts of the per-second series with the stages marked, the
//! percentile plot of [`super::svg`] and each stage's figures.
//!
//! The page is self-contained: inline CSS and inline SVG, no script, nothing
//! fetched (it declares a Content-Security-Policy that forbids it), so that it
//! opens offline from a CI artifact store. Every string taken from a report
//! (URLs, stage names, warnings, budgets, host names) is escaped.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::svg::{self, colour, decade, decade_bounds, esc};
use super::{Metric, Report, SeriesPoint};
use crate::budget::{Budget, Limit, Outcome, Subject};
use crate::metrics::Figure;
use crate::scenario::{Model, Scenario, Shape};
use crate::sweep::{Mode, SweepReport};
use crate::system::Machine;
use crate::units::format_us;

/// Longest series drawn second by second; a longer one is cut into buckets
/// of whole seconds, so that a day-long run's page stays small.
pub const MAX_POINTS: usize = 2000;

// The palette of `svg.rs` (Tableau 10) for what is not a figure.
const OFFERED: &str = "#7f7f7f";
const SENT: &str = "#1f77b4";
const ACKED: &str = "#2ca02c";
const BUSY: &str = "#ff7f0e";
const ERRORS: &str = "#d62728";
const OPEN: &str = "#9467bd";
const PASS: &str = "#2ca02c";
const FAIL: &str = "#d62728";
const RULE: &str = "#555";

const CSS: &str = "\
:root{--pass:#1e8a3a;--fail:#c62828;--none:#6b6b6b;--ink:#1d2330;--muted:#5b6272;--line:#e3e6ec}
*{box-sizing:border-box}
body{margin:0;background:#f3f4f7;color:var(--ink);font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 40px}
section,header.run{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:0 0 16px}
h1{font-size:22px;margin:0}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:13px;margin:0 0 6px;color:var(--muted);text-transform:uppercase;letter-spacing:.06em}
.head{display:flex;align-items:center;gap:14px;flex-wrap:wrap}
.verdict{display:inline-block;color:#fff;font-weight:700;font-size:18px;letter-spacing:.08em;padding:5px 14px;border-radius:6px;background:var(--none)}
.verdict.pass{background:var(--pass)}
.verdict.fail{background:var(--fail)}
.why{color:var(--muted);font-size:15px}
.target{font:15px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:10px 0 2px;word-break:break-all}
.meta{color:var(--muted);margin:0 0 12px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:8px 28px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}
dt{color:var(--muted)}
dd{margin:0;word-break:break-word}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:10px}
.tile{background:#f6f7fa;border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.tile b{display:block;font-size:21px;font-variant-numeric:tabular-nums}
.tile span{color:var(--muted);font-size:12.5px}
.tile.big{grid-column:span 2;background:#eaf6ee;border-color:#b9e0c4}
.tile.big b{font-size:26px}
.tile.big.none{background:#fdecec;border-color:#f2b8b8}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:13px}
.scroll{overflow-x:auto}
th,td{padding:4px 7px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{font-weight:600;color:var(--muted);font-size:12.5px}
th:first-child,td:first-child,td.l,th.l{text-align:left}
td.wrap{white-space:normal;text-align:left}
tr:last-child td{border-bottom:0}
.ok{color:var(--pass);font-weight:700}
.bad{color:var(--fail);font-weight:700}
.warnings{background:#fff6e6;border:1px solid #f0b552;border-left:6px solid #e08a00}
.warnings h2{color:#8a4b00}
.warnings ul{margin:0;padding-left:20px}
.warnings li{margin:4px 0}
figure{margin:0 0 14px}
figcaption{color:var(--muted);font-size:12.5px;margin:2px 0 0}
svg{display:block;max-width:100%;height:auto}
.note{color:var(--muted)}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
@media (max-width:800px){.cols{grid-template-columns:1fr}}
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        esc(title)
    )
}

// ---- numbers, times and units -------------------------------------------

/// `ms` since the Unix epoch as `2023-11-14 22:13:20 UTC`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month, day of a day number since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): no date crate for one line of the header.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A count with thousands separated: `12,345`.
fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or other measured quantity with as many decimals as it deserves.
fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        int(v.round() as u64)
    } else if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn lat(v: Option<u64>) -> String {
    v.map_or_else(|| "–".to_string(), format_us)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |p| format!("{p:.2}%"))
}

/// A length of time in seconds, for people: `4.0s`, `2m 30s`, `1h 5m`.
fn span(s: f64) -> String {
    if s < 120.0 {
        return format!("{s:.1}s");
    }
    let s = s.round() as u64;
    if s < 3600 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{}h {}m", s / 3600, s % 3600 / 60)
    }
}

/// A time axis label: `45s`, `2m`, `2m30s`, `1h`.
fn tick_time(s: f64) -> String {
    let s = s.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// A count axis label: `850`, `1.5k`, `20k`.
fn tick_count(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{}k", (v / 100.0).round() / 10.0)
    } else if v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn tick_rate(v: f64) -> String {
    format!("{}/s", tick_count(v))
}

fn bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{b} B")
    }
}

// ---- charts --------------------------------------------------------------

const CW: f64 = 1100.0;
const PLOT_H: f64 = 230.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 46.0;
const LEGEND_ROW: f64 = 20.0;
/// About how wide a character of the 12px sans-serif text is, for laying
/// out labels and the legend without a font to measure.
const CHAR_W: f64 = 6.6;

/// A 1, 2, 2.5 or 5 times a power of ten near `span / target`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A step of whole seconds, minutes or hours near `span / target`.
fn time_step(span: f64, target: f64) -> f64 {
    const STEPS: [f64; 19] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0, 86400.0, 172800.0,
    ];
    let raw = span / target;
    STEPS
        .into_iter()
        .find(|s| *s >= raw)
        .unwrap_or_else(|| nice_step(span, target))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    /// `lo` to `hi`, gridlines every `step`.
    Linear { lo: f64, hi: f64, step: f64 },
    /// Powers of ten of `lo` to `hi`.
    Log { lo: f64, hi: f64 },
}

impl Scale {
    /// 0 to at least `max`, rounded up to a gridline.
    fn counts(max: f64) -> Scale {
        let max = if max > 0.0 { max } else { 1.0 };
        let step = nice_step(max, 5.0);
        Scale::Linear {
            lo: 0.0,
            hi: (max / step).ceil() * step,
            step,
        }
    }

    /// 0 to `hi` seconds exactly: a run's time is not rounded up.
    fn time(hi: f64) -> Scale {
        let hi = if hi > 0.0 { hi } else { 1.0 };
        Scale::Linear {
            lo: 0.0,
            hi,
            step: time_step(hi, 10.0),
        }
    }

    /// Whole decades of microseconds holding every value of `us`; `None`
    /// with no values.
    fn latency(us: impl IntoIterator<Item = f64>) -> Option<Scale> {
        let (lo, hi) = us.into_iter().filter(|v| *v > 0.0).fold(
            None,
            |acc: Option<(f64, f64)>, v| match acc {
                None => Some((v, v)),
                Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
            },
        )?;
        let (lo, hi) = decade_bounds(lo as u64, hi.ceil() as u64);
        Some(Scale::Log { lo, hi })
    }

    /// Where `v` falls, 0 at the bottom (left) to 1.
    fn frac(self, v: f64) -> f64 {
        let f = match self {
            Scale::Linear { lo, hi, .. } if hi > lo => (v - lo) / (hi - lo),
            Scale::Linear { .. } => 0.0,
            Scale::Log { lo, hi } => (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()),
        };
        f.clamp(0.0, 1.0)
    }

    /// Gridlines; on a log axis of two decades or fewer also the 2s and 5s,
    /// so that a narrow range still has labels to read values by.
    fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear { lo, hi, step } => {
                let first = (lo / step).ceil() as i64;
                let last = (hi / step + 1e-9).floor() as i64;
                (first..=last).map(|k| k as f64 * step).collect()
            }
            Scale::Log { lo, hi } => {
                let few = hi / lo <= 100.5;
                let mut out = Vec::new();
                let mut d = lo;
                while d <= hi * 1.0001 {
                    out.push(d);
                    if few && d * 2.0 < hi {
                        out.push(d * 2.0);
                        out.push(d * 5.0);
                    }
                    d *= 10.0;
                }
                out
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stroke {
    Solid,
    Dashed,
    /// Thin and pale: the median beside its tail.
    Faint,
}

/// One drawn series: a `<path>` of class `series`.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    colour: &'static str,
    stroke: Stroke,
    /// A stacked band filled down to these values (one per point), each
    /// point `half` wide on either side, instead of a line.
    band: Option<(Vec<f64>, f64)>,
    /// x and y; `None` is a gap.
    pts: Vec<(f64, Option<f64>)>,
}

impl Series {
    fn line(
        name: &str,
        colour: &'static str,
        stroke: Stroke,
        pts: Vec<(f64, Option<f64>)>,
    ) -> Self {
        Series {
            name: name.to_string(),
            colour,
            stroke,
            band: None,
            pts,
        }
    }

    fn drawn(&self) -> bool {
        self.pts.iter().any(|(_, y)| y.is_some())
    }
}

/// A point marked pass or fail (a sweep's step).
#[derive(Debug, Clone)]
struct Mark {
    x: f64,
    y: f64,
    pass: bool,
    /// Ringed: the knee.
    ring: bool,
    tip: String,
}

/// A vertical line with a label at its top: a stage's start, the capacity.
#[derive(Debug, Clone)]
struct Rule {
    x: f64,
    label: String,
    colour: &'static str,
    strong: bool,
}

/// A horizontal dashed line: a budget's limit.
#[derive(Debug, Clone)]
struct Level {
    y: f64,
    label: String,
    colour: &'static str,
}

/// A shaded stretch of x: warm-up, beyond capacity.
#[derive(Debug, Clone)]
struct Shade {
    from: f64,
    to: f64,
    label: String,
    fill: &'static str,
}

#[derive(Debug, Clone)]
struct Chart {
    id: &'static str,
    title: String,
    x: Scale,
    x_label: String,
    x_tick: fn(f64) -> String,
    y: Scale,
    y_label: String,
    y_tick: fn(f64) -> String,
    series: Vec<Series>,
    marks: Vec<Mark>,
    rules: Vec<Rule>,
    levels: Vec<Level>,
    shades: Vec<Shade>,
    /// Legend notes for what is not drawn (`ttft: no samples`).
    absent: Vec<String>,
}

enum Swatch {
    Line(&'static str, Stroke),
    Band(&'static str),
    Dot(&'static str),
    Note,
}

impl Chart {
    fn new(id: &'static str, title: String, x: Scale, y: Scale) -> Chart {
        Chart {
            id,
            title,
            x,
            x_label: String::new(),
            x_tick: tick_count,
            y,
            y_label: String::new(),
            y_tick: tick_count,
            series: Vec::new(),
            marks: Vec::new(),
            rules: Vec::new(),
            levels: Vec::new(),
            shades: Vec::new(),
            absent: Vec::new(),
        }
    }

    fn legend(&self) -> Vec<(Swatch, String)> {
        let mut out = Vec::new();
        for s in &self.series {
            if !s.drawn() {
                out.push((Swatch::Note, format!("{}: no samples", s.name)));
            } else if s.band.is_some() {
                out.push((Swatch::Band(s.colour), s.name.clone()));
            } else {
                out.push((Swatch::Line(s.colour, s.stroke), s.name.clone()));
            }
        }
        if !self.marks.is_empty() {
            out.push((Swatch::Dot(PASS), "step passed".to_string()));
            out.push((Swatch::Dot(FAIL), "step failed".to_string()));
        }
        for a in &self.absent {
            out.push((Swatch::Note, a.clone()));
        }
        out
    }

    /// The chart as an inline `<svg>`; the legend below the axes, where it
    /// hides nothing, as in `svg.rs`.
    fn svg(&self) -> String {
        let pw = CW - LEFT - RIGHT;
        let ph = PLOT_H;
        let xs = |x: f64| LEFT + pw * self.x.frac(x);
        let ys = |y: f64| TOP + ph * (1.0 - self.y.frac(y));
        // The legend flows in rows under the x axis.
        let mut placed = Vec::new();
        let (mut lx, mut row) = (LEFT, 0usize);
        for (sw, text) in self.legend() {
            let w = 30.0 + CHAR_W * text.chars().count() as f64 + 18.0;
            if lx + w > CW - RIGHT && lx > LEFT {
                lx = LEFT;
                row += 1;
            }
            placed.push((lx, row, sw, text));
            lx += w;
        }
        let rows = if placed.is_empty() { 0 } else { row + 1 };
        let h = TOP + ph + BOTTOM + LEGEND_ROW * rows as f64 + 4.0;
        let bottom = TOP + ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" data-chart="{}" width="{CW}" height="{h}" viewBox="0 0 {CW} {h}" font-family="system-ui, sans-serif" font-size="12" role="img" aria-label="{}">"#,
            self.id,
            esc(&self.title)
        );
        let _ = writeln!(s, "<title>{}</title>", esc(&self.title));
        let _ = writeln!(s, r#"<rect width="{CW}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
            esc(&self.title)
        );
        for sh in &self.shades {
            let (a, b) = (xs(sh.from), xs(sh.to));
            if b - a < 0.5 {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="{}" fill-opacity="0.08"/>"#,
                b - a,
                sh.fill
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#666" font-size="11" paint-order="stroke" stroke="white" stroke-width="3">{}</text>"##,
                a + 4.0,
                bottom - 6.0,
                esc(&sh.label)
            );
        }
        for t in self.y.ticks() {
            let y = ys(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##,
                LEFT + pw
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
                LEFT - 6.0,
                y + 4.0,
                esc(&(self.y_tick)(t))
            );
        }
        for t in self.x.ticks() {
            let x = xs(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom:.1}" stroke="#eee"/>"##
            );
            let _ = writeln!(
                s,
                r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
                bottom + 16.0,
                esc(&(self.x_tick)(t))
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            LEFT + pw / 2.0,
            bottom + 34.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r##"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle" fill="#333">{}</text>"##,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
        );
        for l in &self.levels {
            let y = ys(l.y);
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-dasharray="6 4" stroke-width="1.5"/>"#,
                LEFT + pw,
                l.colour
            );
            // At the left: a sweep's (and often a run's) highest values,
            // which the label would hide, are at the right.
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{}" paint-order="stroke" stroke="white" stroke-width="3">{}</text>"#,
                LEFT + 6.0,
                y - 4.0,
                l.colour,
                esc(&l.label)
            );
        }
        // Bands under lines: the lines stay readable where they cross.
        for ser in self.series.iter().filter(|x| x.band.is_some() && x.drawn()) {
            let _ = writeln!(s, "{}", band_path(ser, &xs, &ys));
        }
        for ser in self.series.iter().filter(|x| x.band.is_none() && x.drawn()) {
            let _ = writeln!(s, "{}", line_path(ser, &xs, &ys));
        }
        // Rule labels go in the first of three rows where they overlap no
        // earlier one, so that close stage starts stay legible.
        let mut row_ends = [f64::MIN; 3];
        for r in &self.rules {
            let x = xs(r.x);
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom:.1}" stroke="{}" stroke-width="{}"{}/>"#,
                r.colour,
                if r.strong { 2.5 } else { 1.2 },
                if r.strong {
                    ""
                } else {
                    r#" stroke-dasharray="4 3""#
                }
            );
            let w = CHAR_W * r.label.chars().count() as f64 + 8.0;
            let row = row_ends.iter().position(|e| *e < x).unwrap_or(0);
            row_ends[row] = x + w;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{}" font-weight="{}" paint-order="stroke" stroke="white" stroke-width="3">{}</text>"#,
                x + 4.0,
                TOP + 13.0 + 14.0 * row as f64,
                r.colour,
                if r.strong { "bold" } else { "normal" },
                esc(&r.label)
            );
        }
        for m in &self.marks {
            let (x, y) = (xs(m.x), ys(m.y));
            if m.ring {
                let _ = writeln!(
                    s,
                    r##"<circle cx="{x:.1}" cy="{y:.1}" r="10" fill="none" stroke="#1d2330" stroke-width="2"/>"##
                );
            }
            let _ = writeln!(
                s,
                r#"<circle class="mark {}" cx="{x:.1}" cy="{y:.1}" r="5.5" fill="{}" stroke="white" stroke-width="1.5"><title>{}</title></circle>"#,
                if m.pass { "pass" } else { "fail" },
                if m.pass { PASS } else { FAIL },
                esc(&m.tip)
            );
        }
        for (x, row, sw, text) in &placed {
            let y = bottom + BOTTOM + 8.0 + LEGEND_ROW * *row as f64;
            let tx = match sw {
                Swatch::Line(c, st) => {
                    let _ = writeln!(
                        s,
                        r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{c}" {}/>"#,
                        x + 24.0,
                        stroke_attrs(*st, 3.0)
                    );
                    x + 30.0
                }
                Swatch::Band(c) => {
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{:.1}" width="22" height="10" fill="{c}" fill-opacity="0.55"/>"#,
                        y - 5.0
                    );
                    x + 30.0
                }
                Swatch::Dot(c) => {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{y:.1}" r="5.5" fill="{c}"/>"#,
                        x + 8.0
                    );
                    x + 20.0
                }
                Swatch::Note => *x,
            };
            let style = if matches!(sw, Swatch::Note) {
                r##" fill="#777" font-style="italic""##
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<text x="{tx:.1}" y="{:.1}"{style}>{}</text>"#,
                y + 4.0,
                esc(text)
            );
        }
        if !self.series.iter().any(Series::drawn) && self.marks.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#777">no samples</text>"##,
                LEFT + pw / 2.0,
                TOP + ph / 2.0
            );
        }
        s.push_str("</svg>");
        s
    }
}

fn stroke_attrs(st: Stroke, width: f64) -> String {
    match st {
        Stroke::Solid => format!(r#"stroke-width="{width}""#),
        Stroke::Dashed => format!(r#"stroke-width="{width}" stroke-dasharray="6 4""#),
        Stroke::Faint => format!(r#"stroke-width="{}" stroke-opacity="0.5""#, width * 0.75),
    }
}

/// One `<path>` per series, broken at gaps; a point alone is drawn as a dot
/// (a round-capped stub), so that a single second still shows.
fn line_path(ser: &Series, xs: &dyn Fn(f64) -> f64, ys: &dyn Fn(f64) -> f64) -> String {
    let mut d = String::new();
    let mut run = 0usize;
    for (x, y) in &ser.pts {
        match y {
            Some(y) => {
                let _ = write!(
                    d,
                    "{}{:.1} {:.1}",
                    if run == 0 { "M" } else { "L" },
                    xs(*x),
                    ys(*y)
                );
                run += 1;
            }
            None => {
                if run == 1 {
                    d.push_str("h0.01");
                }
                run = 0;
            }
        }
    }
    if run == 1 {
        d.push_str("h0.01");
    }
    format!(
        r#"<path class="series" data-series="{}" d="{d}" fill="none" stroke="{}" {} stroke-linejoin="round" stroke-linecap="round"/>"#,
        esc(&ser.name),
        ser.colour,
        stroke_attrs(ser.stroke, 2.0)
    )
}

/// A stacked band as one closed `<path>`: each point a step `half` wide
/// either side, along its top and back along its base.
fn band_path(ser: &Series, xs: &dyn Fn(f64) -> f64, ys: &dyn Fn(f64) -> f64) -> String {
    let (base, half) = ser
        .band
        .as_ref()
        .map_or((&[][..], 0.5), |(b, h)| (&b[..], *h));
    let mut d = String::new();
    for (i, (x, y)) in ser.pts.iter().enumerate() {
        let top = y.unwrap_or(0.0) + base.get(i).copied().unwrap_or(0.0);
        let _ = write!(
            d,
            "{}{:.1} {:.1}L{:.1} {:.1}",
            if i == 0 { "M" } else { "L" },
            xs(x - half),
            ys(top),
            xs(x + half),
            ys(top)
        );
    }
    if base.iter().all(|b| *b == 0.0) {
        // A band on the axis closes along it in one stroke: half the bytes.
        if let (Some((first, _)), Some((last, _))) = (ser.pts.first(), ser.pts.last()) {
            let _ = write!(
                d,
                "L{:.1} {:.1}L{:.1} {:.1}",
                xs(last + half),
                ys(0.0),
                xs(first - half),
                ys(0.0)
            );
        }
    } else {
        for (i, (x, _)) in ser.pts.iter().enumerate().rev() {
            let b = base.get(i).copied().unwrap_or(0.0);
            let _ = write!(
                d,
                "L{:.1} {:.1}L{:.1} {:.1}",
                xs(x + half),
                ys(b),
                xs(x - half),
                ys(b)
            );
        }
    }
    d.push('Z');
    format!(
        r#"<path class="series" data-series="{}" d="{d}" fill="{}" fill-opacity="0.55" stroke="none"/>"#,
        esc(&ser.name),
        ser.colour
    )
}

fn figure(chart: &Chart, caption: &str) -> String {
    format!(
        "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>\n",
        chart.svg(),
        esc(caption)
    )
}

// ---- the per-second series ---------------------------------------------

/// A series cut into buckets of `size` seconds: counts summed, latencies
/// and sessions the highest of the bucket (a peak must not be averaged away).
#[derive(Debug, Clone, Default, PartialEq)]
struct Buckets {
    size: u64,
    /// Each bucket's middle, seconds from the start of the stages.
    t: Vec<f64>,
    offered: Vec<f64>,
    sent: Vec<f64>,
    acked: Vec<f64>,
    busy: Vec<f64>,
    errors: Vec<f64>,
    open: Vec<f64>,
    rtt_p50: Vec<Option<f64>>,
    rtt_p99: Vec<Option<f64>>,
    ttft_p50: Vec<Option<f64>>,
    ttft_p99: Vec<Option<f64>>,
}

fn buckets(series: &[SeriesPoint], max_points: usize) -> Buckets {
    let size = series.len().div_ceil(max_points.max(1)).max(1);
    let mut b = Buckets {
        size: size as u64,
        ..Buckets::default()
    };
    for chunk in series.chunks(size) {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        let sum = |f: fn(&SeriesPoint) -> u64| chunk.iter().map(f).sum::<u64>() as f64;
        let top =
            |f: fn(&SeriesPoint) -> Option<u64>| chunk.iter().filter_map(f).max().map(|v| v as f64);
        b.t.push((first.t_s + last.t_s + 1) as f64 / 2.0);
        b.offered.push(chunk.iter().map(|p| p.offered).sum());
        b.sent.push(sum(|p| p.sent));
        b.acked.push(sum(|p| p.acked));
        b.busy.push(sum(|p| p.busy));
        b.errors.push(sum(|p| p.errors));
        b.open
            .push(chunk.iter().map(|p| p.open).max().unwrap_or(0) as f64);
        b.rtt_p50.push(top(|p| p.rtt_p50_us));
        b.rtt_p99.push(top(|p| p.rtt_p99_us));
        b.ttft_p50.push(top(|p| p.ttft_p50_us));
        b.ttft_p99.push(top(|p| p.ttft_p99_us));
    }
    b
}

/// Each stage's start, length and name: the report's own, or the
/// scenario's for a report without stage figures.
fn stage_spans(r: &Report) -> Vec<(f64, f64, String)> {
    if !r.stages.is_empty() {
        return r
            .stages
            .iter()
            .map(|s| (s.start_s, s.duration_s, s.name.clone()))
            .collect();
    }
    let mut at = 0.0;
    r.scenario
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let start = at;
            at += s.duration.secs();
            let name = s.name.clone().unwrap_or_else(|| format!("stage-{}", i + 1));
            (start, s.duration.secs(), name)
        })
        .collect()
}

/// The sessions the scenario asks for over time: steps jump, ramps slope.
fn session_targets(sc: &Scenario) -> Vec<(f64, Option<f64>)> {
    let mut out = Vec::new();
    let (mut at, mut prev) = (0.0, 0.0);
    for st in &sc.stages {
        let end = at + st.duration.secs();
        let n = st.sessions as f64;
        match st.shape {
            Shape::Step => out.extend([(at, Some(n)), (end, Some(n))]),
            Shape::Ramp => out.extend([(at, Some(prev)), (end, Some(n))]),
        }
        (at, prev) = (end, n);
    }
    out
}

/// The three charts of the per-second series, with their captions.
fn series_charts(r: &Report, max_points: usize) -> String {
    if r.series.is_empty() {
        return "<p class=\"note\">No per-second series in this report: it was written by a \
                loadgen that did not record one, or the run ended before its first second.</p>\n"
            .to_string();
    }
    let b = buckets(&r.series, max_points);
    let stages = stage_spans(r);
    let stage_end = stages.iter().map(|(s, d, _)| s + d).fold(0.0, f64::max);
    let series_end = r.series.iter().map(|p| p.t_s + 1).max().unwrap_or(1) as f64;
    let x = Scale::time(stage_end.max(series_end));
    let warmup = r.scenario.warmup.secs();
    let decorate = |c: &mut Chart| {
        c.x_label = "time from the start of the stages".to_string();
        c.x_tick = tick_time;
        c.rules = stages
            .iter()
            .map(|(start, _, name)| Rule {
                x: *start,
                label: name.clone(),
                colour: RULE,
                strong: false,
            })
            .collect();
        if warmup > 0.0 {
            c.shades.push(Shade {
                from: 0.0,
                to: warmup,
                label: "warm-up, not measured".to_string(),
                fill: "#000",
            });
        }
        if let Some(a) = &r.aborted {
            c.rules.push(Rule {
                x: a.at_s,
                label: "aborted".to_string(),
                colour: FAIL,
                strong: true,
            });
        }
    };
    let per = if b.size == 1 {
        "per second".to_string()
    } else {
        format!("per {} s", b.size)
    };
    let bucket_note = if b.size == 1 {
        String::new()
    } else {
        format!(
            " The run has {} seconds, more than {max_points} points: each point is {} s, with \
             its counts summed and its latencies and sessions the highest of its seconds.",
            r.series.len(),
            b.size
        )
    };
    let pts = |v: &[f64]| -> Vec<(f64, Option<f64>)> {
        b.t.iter().zip(v).map(|(t, y)| (*t, Some(*y))).collect()
    };
    let opt = |v: &[Option<f64>]| -> Vec<(f64, Option<f64>)> {
        b.t.iter().copied().zip(v.iter().copied()).collect()
    };
    let mut out = String::new();

    // Messages: what was offered, sent and acked; refusals stacked below.
    let stacked: Vec<f64> = b.busy.iter().zip(&b.errors).map(|(x, y)| x + y).collect();
    let max = [&b.offered, &b.sent, &b.acked, &stacked]
        .iter()
        .flat_map(|v| v.iter().copied())
        .fold(0.0, f64::max);
    let mut c = Chart::new("messages", format!("Messages {per}"), x, Scale::counts(max));
    decorate(&mut c);
    c.y_label = format!("messages {per}");
    c.series.push(Series {
        band: Some((vec![0.0; b.t.len()], b.size as f64 / 2.0)),
        ..Series::line("errors", ERRORS, Stroke::Solid, pts(&b.errors))
    });
    c.series.push(Series {
        band: Some((b.errors.clone(), b.size as f64 / 2.0)),
        ..Series::line("busy (on errors)", BUSY, Stroke::Solid, pts(&b.busy))
    });
    if r.scenario.model == Model::Open {
        c.series.push(Series::line(
            "offered",
            OFFERED,
            Stroke::Dashed,
            pts(&b.offered),
        ));
    } else {
        c.absent
            .push("offered: closed model, no schedule".to_string());
    }
    c.series
        .push(Series::line("sent", SENT, Stroke::Solid, pts(&b.sent)));
    c.series
        .push(Series::line("acked", ACKED, Stroke::Solid, pts(&b.acked)));
    out.push_str(&figure(
        &c,
        &format!(
            "Offered: what the arrival schedule asked for; sent: what loadgen sent; acked: what \
             the server acknowledged. Busy refusals and other errors are stacked at the bottom. \
             Dashed verticals: the stages' starts.{bucket_note}"
        ),
    ));

    // Latency: log scale, see the caption.
    let budgets = latency_budgets(&r.scenario.budgets, &[Figure::Rtt, Figure::Ttft]);
    let all = [&b.rtt_p50, &b.rtt_p99, &b.ttft_p50, &b.ttft_p99]
        .iter()
        .flat_map(|v| v.iter().flatten().copied())
        .collect::<Vec<_>>();
    let (y, budgets, far) = latency_axis(all, budgets);
    let mut c = Chart::new("latency", format!("rtt and ttft {per}: p50 and p99"), x, y);
    decorate(&mut c);
    c.y_label = "latency (log scale)".to_string();
    c.y_tick = decade;
    for (f, p50, p99) in [
        (Figure::Rtt, &b.rtt_p50, &b.rtt_p99),
        (Figure::Ttft, &b.ttft_p50, &b.ttft_p99),
    ] {
        let c_ = colour(f);
        let name = f.name();
        c.series.push(Series::line(
            &format!("{name} p99"),
            c_,
            Stroke::Solid,
            opt(p99),
        ));
        c.series.push(Series::line(
            &format!("{name} p50"),
            c_,
            Stroke::Faint,
            opt(p50),
        ));
    }
    c.levels = budgets;
    c.absent.extend(far);
    out.push_str(&figure(
        &c,
        &format!(
            "Each second's median (pale) and 99th percentile of the messages that settled in it. \
             The y axis is logarithmic so that a tail ten or a hundred times the median stays on \
             the chart beside it, and rtt (often milliseconds) and ttft (often hundreds of them) \
             share one. Dashed horizontals: latency budgets (of the whole run, not of a second).\
             {bucket_note}"
        ),
    ));

    // Sessions.
    let targets = session_targets(&r.scenario);
    let max = b
        .open
        .iter()
        .copied()
        .chain(targets.iter().filter_map(|p| p.1))
        .fold(0.0, f64::max);
    let mut c = Chart::new(
        "sessions",
        "Sessions open".to_string(),
        x,
        Scale::counts(max),
    );
    decorate(&mut c);
    c.y_label = "sessions".to_string();
    c.series.push(Series::line(
        "target (scenario)",
        OFFERED,
        Stroke::Dashed,
        targets,
    ));
    c.series
        .push(Series::line("open", OPEN, Stroke::Solid, pts(&b.open)));
    out.push_str(&figure(
        &c,
        &format!(
            "Sessions open at the end of each second against what the stages ask for (all \
             shards together).{bucket_note}"
        ),
    ));
    out
}

/// A log axis for `data` and the budget lines worth drawing on it, with
/// legend notes for the others: a budget more than ten times the largest
/// value would squash the data into the bottom decade.
fn latency_axis(data: Vec<f64>, levels: Vec<Level>) -> (Scale, Vec<Level>, Vec<String>) {
    let top = data.iter().copied().fold(0.0, f64::max);
    let (near, far): (Vec<Level>, Vec<Level>) = levels
        .into_iter()
        .partition(|l| top == 0.0 || l.y <= 10.0 * top);
    let y =
        Scale::latency(data.into_iter().chain(near.iter().map(|l| l.y))).unwrap_or(Scale::Log {
            lo: 1000.0,
            hi: 1_000_000.0,
        });
    let notes = far
        .iter()
        .map(|l| format!("{}: far above, not drawn", l.label))
        .collect();
    (y, near, notes)
}

/// Dashed lines for the latency budgets on `figures`.
fn latency_budgets(budgets: &[Budget], figures: &[Figure]) -> Vec<Level> {
    budgets
        .iter()
        .filter_map(|b| match (b.subject, b.limit) {
            (Subject::Latency(f, _), Limit::Micros(us)) if figures.contains(&f) => Some(Level {
                y: us as f64,
                label: b.text.clone(),
                colour: colour(f),
            }),
            _ => None,
        })
        .collect()
}

// ---- sections ------------------------------------------------------------

fn verdict_badge(verdict: &str) -> String {
    let class = match verdict {
        "pass" => "pass",
        "fail" => "fail",
        _ => "none",
    };
    format!(
        r#"<span class="verdict {class}" data-verdict="{}">{}</span>"#,
        esc(verdict),
        esc(&verdict.to_uppercase())
    )
}

fn warnings_section(warnings: &[String]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let mut s =
        String::from("<section class=\"warnings\" id=\"warnings\">\n<h2>⚠ Warnings</h2>\n<ul>\n");
    for w in warnings {
        let _ = writeln!(s, "<li>{}</li>", esc(w));
    }
    s.push_str("</ul>\n</section>\n");
    s
}

fn limit_text(o: &Outcome) -> String {
    match o.unit.as_str() {
        "us" => format_us(o.limit_value.max(0.0) as u64),
        "percent" => format!("{}%", num(o.limit_value)),
        _ => num(o.limit_value),
    }
}

fn budgets_table(outcomes: &[Outcome]) -> String {
    let mut s = String::from("<section id=\"budgets\">\n<h2>Budgets</h2>\n");
    if outcomes.is_empty() {
        s.push_str("<p class=\"note\">No budgets were given: the verdict is <b>none</b>. Give some with <code>--budget 'rtt.p99&lt;80ms'</code>.</p>\n</section>\n");
        return s;
    }
    s.push_str(
        "<table>\n<tr><th>budget</th><th>observed</th><th>limit</th><th>verdict</th></tr>\n",
    );
    for o in outcomes {
        let _ = writeln!(
            s,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&o.budget),
            esc(&o.observed),
            esc(&limit_text(o)),
            if o.pass { "ok" } else { "bad" },
            if o.pass { "pass" } else { "FAIL" }
        );
    }
    s.push_str("</table>\n</section>\n");
    s
}

fn dl(rows: &[(&str, String)]) -> String {
    let mut s = String::from("<dl>\n");
    for (k, v) in rows {
        // A value of several lines keeps them (a stage a line).
        let v = esc(v).replace('\n', "<br>");
        let _ = writeln!(s, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    }
    s.push_str("</dl>\n");
    s
}

fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn settings(r: &Report) -> String {
    let sc = &r.scenario;
    let model = match sc.model {
        Model::Open => "open (arrivals on a schedule; latency from the due time)".to_string(),
        Model::Closed => format!(
            "closed (think {} {:?})",
            sc.think.map_or_else(|| "–".to_string(), |t| t.to_string()),
            sc.think_dist
        )
        .to_lowercase(),
    };
    let arrivals = match (sc.model, sc.arrivals) {
        (Model::Closed, _) => "– (closed model)".to_string(),
        (_, crate::arrivals::ArrivalKind::Gamma) => format!("gamma, burstiness {}", sc.burstiness),
        (_, k) => format!("{k:?}").to_lowercase(),
    };
    let stages = sc
        .stages
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let name = st
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", i + 1));
            let shape = match st.shape {
                Shape::Step => "for",
                Shape::Ramp => "ramping over",
            };
            format!(
                "{name}: {} sessions{} {shape} {}",
                int(st.sessions),
                if sc.model == Model::Open {
                    format!(", {}/s", num(st.rate))
                } else {
                    String::new()
                },
                st.duration
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let peak_sessions = sc.stages.iter().map(|s| s.sessions).max().unwrap_or(0);
    let peak_rate = sc.stages.iter().map(|s| s.rate).fold(0.0, f64::max);
    let warmup = if sc.warmup.0.is_zero() {
        "none".to_string()
    } else {
        sc.warmup.to_string()
    };
    dl(&[
        ("model", model),
        ("arrivals", arrivals),
        ("stages", stages),
        ("sessions", format!("up to {}", int(peak_sessions))),
        (
            "rate",
            if sc.model == Model::Open {
                format!("up to {}/s offered", num(peak_rate))
            } else {
                "– (closed model)".to_string()
            },
        ),
        ("SLOs", list(&sc.slos)),
        ("warm-up", warmup),
        (
            "timeout",
            format!(
                "{}{}",
                sc.timeout,
                if sc.replies {
                    ", replies awaited"
                } else {
                    ", settled by the ack (no replies)"
                }
            ),
        ),
        ("connect rate", format!("{}/s", num(sc.connect_rate))),
        ("seed", sc.seed.to_string()),
    ])
}

fn machine_rows(m: &Machine) -> Vec<(&'static str, String)> {
    vec![
        ("host", m.hostname.clone()),
        ("cpu", m.cpu.clone()),
        ("cpus", m.cpus.to_string()),
        ("memory", bytes(m.memory_bytes)),
        ("threads", m.threads.to_string()),
        ("driver", m.driver.clone()),
        ("kernel", m.kernel.clone()),
        ("open files", int(m.open_files_limit)),
    ]
}

fn machines(shards: &[super::ShardInfo]) -> String {
    match shards {
        [] => "<p class=\"note\">not recorded</p>\n".to_string(),
        [one] => dl(&machine_rows(&one.machine)),
        many => {
            let mut s = String::from(
                "<table>\n<tr><th>shard</th><th class=\"l\">host</th><th>cpus</th><th>memory</th><th>threads</th><th class=\"l\">driver</th><th class=\"l\">kernel</th></tr>\n",
            );
            for sh in many {
                let m = &sh.machine;
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                    esc(&sh.shard.to_string()),
                    esc(&m.hostname),
                    m.cpus,
                    esc(&bytes(m.memory_bytes)),
                    m.threads,
                    esc(&m.driver),
                    esc(&m.kernel)
                );
            }
            s.push_str("</table>\n");
            s
        }
    }
}

fn header(r: &Report) -> String {
    let why = match r.verdict.as_str() {
        "pass" => format!("all {} budgets hold", r.budgets.len()),
        "fail" => format!(
            "{} of {} budgets missed",
            r.budgets.iter().filter(|b| !b.pass).count(),
            r.budgets.len()
        ),
        _ => "no budgets given".to_string(),
    };
    let shards = match r.shards.len() {
        0 | 1 => "1 shard".to_string(),
        n => format!("merged from {n} shards"),
    };
    let mut s = String::from("<header class=\"run\">\n<div class=\"head\">");
    s.push_str(&verdict_badge(&r.verdict));
    let _ = writeln!(
        s,
        "<h1>loadgen report</h1><span class=\"why\">{}</span></div>",
        esc(&why)
    );
    let _ = writeln!(s, "<p class=\"target\">{}</p>", esc(&r.scenario.url));
    let _ = writeln!(
        s,
        "<p class=\"meta\">started {} · ran {} ({} measured){} · {} · {} {}</p>",
        esc(&utc(r.started_at_unix_ms)),
        esc(&span(r.elapsed_s)),
        esc(&span(r.measured_s)),
        if r.complete { "" } else { " · cut short" },
        esc(&shards),
        esc(&r.tool.name),
        esc(&r.tool.version)
    );
    s.push_str("<div class=\"cols\">\n<div>\n<h3>Settings</h3>\n");
    s.push_str(&settings(r));
    let _ = writeln!(
        s,
        "</div>\n<div>\n<h3>Machine{}</h3>",
        if r.shards.len() > 1 { "s" } else { "" }
    );
    s.push_str(&machines(&r.shards));
    s.push_str("</div>\n</div>\n</header>\n");
    s
}

fn tile(value: &str, label: &str) -> String {
    format!(
        "<div class=\"tile\"><b>{}</b><span>{}</span></div>\n",
        esc(value),
        esc(label)
    )
}

fn tiles(r: &Report) -> String {
    let m = &r.messages;
    let share = |n: u64| {
        if m.sent > 0 {
            format!(" ({:.1}%)", 100.0 * n as f64 / m.sent as f64)
        } else {
            String::new()
        }
    };
    let goodput_label = if r.goodput.slos.is_empty() {
        "settled without error".to_string()
    } else {
        format!("goodput ({})", list(&r.goodput.slos))
    };
    let mut s = String::from("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"tiles\">\n");
    s.push_str(&tile(
        &int(m.sent),
        &format!("sent, {}/s", num(m.rate_per_s)),
    ));
    s.push_str(&tile(&int(m.acked), "acked"));
    s.push_str(&tile(&int(m.replied), "replied"));
    s.push_str(&tile(&pct(r.goodput.percent), &goodput_label));
    s.push_str(&tile(&int(m.busy), &format!("busy{}", share(m.busy))));
    s.push_str(&tile(&int(m.errors), &format!("errors{}", share(m.errors))));
    s.push_str(&tile(&int(r.sessions.peak_open), "sessions at peak"));
    s.push_str(&tile(&lat(r.send_lag.p99_us), "send lag p99"));
    if m.output_tokens > 0 {
        s.push_str(&tile(&num(m.output_tokens_per_s), "output tokens/s"));
    }
    s.push_str("</div>\n");
    let codes: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if !codes.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"note\">Errors by code: {}</p>",
            esc(&codes.join(", "))
        );
    }
    s.push_str("</section>\n");
    s
}

fn percentile_row(name: &str, m: &Metric) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        esc(name),
        int(m.count),
        lat(m.min_us),
        lat(m.p50_us),
        lat(m.p90_us),
        lat(m.p99_us),
        lat(m.p999_us),
        lat(m.max_us)
    )
}

fn percentiles_section(r: &Report) -> String {
    let mut s = String::from("<section id=\"percentiles\">\n<h2>Latency by percentile</h2>\n");
    match r.to_interval() {
        Ok(iv) => {
            let hists: Vec<(Figure, Histogram<u64>)> = Figure::ALL
                .iter()
                .map(|&f| (f, iv.figure(f).clone()))
                .collect();
            let _ = writeln!(
                s,
                "<figure>\n{}<figcaption>Each figure's whole distribution. x: 0%, 90%, 99%, 99.9%, …: each step ten times closer to 100%, so the tail gets the room; y: log latency. Dashed: latency budgets.</figcaption>\n</figure>",
                svg::render(r, &hists)
            );
        }
        Err(e) => {
            let _ = writeln!(
                s,
                "<p class=\"note\">The histograms could not be decoded ({}): the table below is from the report's own figures.</p>",
                esc(&e.to_string())
            );
        }
    }
    s.push_str("<table>\n<tr><th>figure</th><th>count</th><th>min</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n");
    let mut none = Vec::new();
    for f in Figure::ALL {
        match r.metrics.get(f.name()) {
            Some(m) if m.count > 0 => s.push_str(&percentile_row(f.name(), m)),
            _ => none.push(f.name()),
        }
    }
    if r.send_lag.count > 0 {
        s.push_str(&percentile_row("send lag", &r.send_lag));
    }
    s.push_str("</table>\n");
    if !none.is_empty() {
        let _ = writeln!(s, "<p class=\"note\">No samples: {}.</p>", none.join(", "));
    }
    if r.send_lag.count > 0 {
        s.push_str("<p class=\"note\">Send lag is how late loadgen sent messages after they were due: its own share of every figure.</p>\n");
    }
    s.push_str("</section>\n");
    s
}

fn stages_section(r: &Report) -> String {
    let mut s = String::from("<section id=\"stages\">\n<h2>Stages</h2>\n");
    if r.stages.is_empty() {
        s.push_str("<p class=\"note\">This report has no per-stage figures.</p>\n</section>\n");
        return s;
    }
    s.push_str("<div class=\"scroll\"><table>\n<tr><th>stage</th><th>start</th><th>length</th><th>sessions</th><th>rate</th><th>sent</th><th>acked</th><th>busy</th><th>errors</th><th>goodput</th><th>good/s</th><th>rtt p50</th><th>rtt p99</th><th>ttft p50</th><th>ttft p99</th></tr>\n");
    for st in &r.stages {
        let m = |f: &str| st.metrics.get(f);
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&st.name),
            esc(&tick_time(st.start_s)),
            esc(&span(st.duration_s)),
            int(st.sessions),
            esc(&num(st.rate_per_s)),
            int(st.messages.sent),
            int(st.messages.acked),
            int(st.messages.busy),
            int(st.messages.errors),
            esc(&pct(st.goodput.percent)),
            esc(&num(st.goodput.per_s)),
            esc(&lat(m("rtt").and_then(|x| x.p50_us))),
            esc(&lat(m("rtt").and_then(|x| x.p99_us))),
            esc(&lat(m("ttft").and_then(|x| x.p50_us))),
            esc(&lat(m("ttft").and_then(|x| x.p99_us)))
        );
    }
    s.push_str("</table></div>\n<p class=\"note\">A message belongs to the stage it was due in, whenever it settled; rates are over each stage's measured part.</p>\n</section>\n");
    s
}

/// The page for a run's report, or a merged one.
pub fn render(r: &Report) -> String {
    let mut warnings: Vec<String> = r.warnings.clone();
    warnings.extend(r.busy_warning.iter().cloned());
    if !r.complete {
        warnings.push(
            "The run was cut short by its hard deadline: the figures cover only part of it."
                .to_string(),
        );
    }
    if let Some(a) = &r.aborted {
        warnings.push(format!(
            "--abort-on-fail ended the run {} into the stages: {} had not held since {}.",
            span(a.at_s),
            a.budgets.join(", "),
            span(a.breach_since_s)
        ));
    }
    let mut b = header(r);
    b.push_str(&warnings_section(&warnings));
    b.push_str(&tiles(r));
    b.push_str(&budgets_table(&r.budgets));
    b.push_str("<section id=\"series\">\n<h2>Over time</h2>\n");
    b.push_str(&series_charts(r, MAX_POINTS));
    b.push_str("</section>\n");
    b.push_str(&stages_section(r));
    b.push_str(&percentiles_section(r));
    page(
        &format!("loadgen {}: {}", r.verdict.to_uppercase(), r.scenario.url),
        &b,
    )
}

// ---- a sweep -------------------------------------------------------------

fn sweep_charts(s: &SweepReport) -> String {
    let mut steps: Vec<(usize, &crate::sweep::Step)> = s.steps.iter().enumerate().collect();
    steps.sort_by(|a, b| a.1.rate_per_s.total_cmp(&b.1.rate_per_s));
    if steps.is_empty() {
        return "<p class=\"note\">The sweep ran no step.</p>\n".to_string();
    }
    let max_rate = steps
        .iter()
        .map(|(_, st)| st.rate_per_s)
        .fold(0.0, f64::max);
    let max_sent = steps
        .iter()
        .map(|(_, st)| st.sent_per_s.max(st.goodput_per_s))
        .fold(0.0, f64::max);
    let x = Scale::counts(max_rate * 1.05);
    let Scale::Linear { hi: x_hi, .. } = x else {
        return String::new();
    };
    let decorate = |c: &mut Chart| {
        c.x_label = "offered rate (messages per second)".to_string();
        c.x_tick = tick_rate;
        if let Some(cap) = s.capacity_per_s {
            c.rules.push(Rule {
                x: cap,
                label: format!("capacity {}/s", num(cap)),
                colour: PASS,
                strong: true,
            });
            c.shades.push(Shade {
                from: cap,
                to: x_hi,
                label: "over capacity".to_string(),
                fill: FAIL,
            });
        }
    };
    let tip = |i: usize, st: &crate::sweep::Step, what: &str| {
        format!(
            "step {}: {}/s offered, {what}, {}",
            i + 1,
            num(st.rate_per_s),
            if st.passed { "passed" } else { "failed" }
        )
    };
    let mut out = String::new();

    let mut c = Chart::new(
        "capacity",
        "Capacity: what got through as the offered rate rose".to_string(),
        x,
        Scale::counts(max_rate.max(max_sent)),
    );
    decorate(&mut c);
    c.y_label = "messages per second".to_string();
    c.y_tick = tick_rate;
    c.series.push(Series::line(
        "offered (ideal)",
        OFFERED,
        Stroke::Dashed,
        vec![(0.0, Some(0.0)), (max_rate, Some(max_rate))],
    ));
    c.series.push(Series::line(
        "sent/s",
        SENT,
        Stroke::Faint,
        steps
            .iter()
            .map(|(_, st)| (st.rate_per_s, Some(st.sent_per_s)))
            .collect(),
    ));
    c.series.push(Series::line(
        "goodput/s",
        PASS,
        Stroke::Solid,
        steps
            .iter()
            .map(|(_, st)| (st.rate_per_s, Some(st.goodput_per_s)))
            .collect(),
    ));
    c.marks = steps
        .iter()
        .map(|(i, st)| Mark {
            x: st.rate_per_s,
            y: st.goodput_per_s,
            pass: st.passed,
            ring: s.knee == Some(*i),
            tip: tip(*i, st, &format!("{}/s good", num(st.goodput_per_s))),
        })
        .collect();
    out.push_str(&figure(
        &c,
        "Each step's goodput (messages that met every SLO) and messages sent per second against the rate offered; dots are steps, green where every budget held, red where one was missed. The ringed step is the knee: the highest rate that passed.",
    ));

    let budgets = latency_budgets(&s.budgets, &[Figure::Rtt, Figure::Ttft]);
    let p99 = |st: &crate::sweep::Step, f: &str| {
        st.report
            .metrics
            .get(f)
            .and_then(|m| m.p99_us)
            .map(|v| v as f64)
    };
    let all: Vec<f64> = steps
        .iter()
        .flat_map(|(_, st)| [p99(st, "rtt"), p99(st, "ttft")])
        .flatten()
        .collect();
    let (y, budgets, far) = latency_axis(all, budgets);
    let mut c = Chart::new(
        "sweep-latency",
        "p99 latency of each step".to_string(),
        x,
        y,
    );
    decorate(&mut c);
    c.y_label = "latency (log scale)".to_string();
    c.y_tick = decade;
    for f in [Figure::Rtt, Figure::Ttft] {
        let pts: Vec<(f64, Option<f64>)> = steps
            .iter()
            .map(|(_, st)| (st.rate_per_s, p99(st, f.name())))
            .collect();
        for (i, st) in &steps {
            if let Some(v) = p99(st, f.name()) {
                c.marks.push(Mark {
                    x: st.rate_per_s,
                    y: v,
                    pass: st.passed,
                    ring: s.knee == Some(*i),
                    tip: tip(*i, st, &format!("{} p99 {}", f.name(), format_us(v as u64))),
                });
            }
        }
        c.series.push(Series::line(
            &format!("{} p99", f.name()),
            colour(f),
            Stroke::Solid,
            pts,
        ));
    }
    c.levels = budgets;
    c.absent.extend(far);
    out.push_str(&figure(
        &c,
        "Each step's rtt and ttft p99 over its measured window, log scale (latency near saturation grows by orders of magnitude); dashed: latency budgets.",
    ));
    out
}

fn sweep_steps_table(s: &SweepReport) -> String {
    let mut out = String::from("<section id=\"steps\">\n<h2>Steps</h2>\n<div class=\"scroll\"><table>\n<tr><th>step</th><th>offered</th><th>verdict</th><th>sent/s</th><th>goodput/s</th><th>goodput</th><th>busy</th><th>rtt p99</th><th>ttft p99</th><th class=\"l\">budgets missed</th></tr>\n");
    for (i, st) in s.steps.iter().enumerate() {
        let p99 = |f: &str| st.report.metrics.get(f).and_then(|m| m.p99_us);
        let missed: Vec<String> = st
            .report
            .budgets
            .iter()
            .filter(|b| !b.pass)
            .map(|b| format!("{} ({})", b.budget, b.observed))
            .collect();
        let _ = writeln!(
            out,
            "<tr{}><td>{}{}</td><td>{}/s</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td></tr>",
            if s.knee == Some(i) { " style=\"background:#eaf6ee\"" } else { "" },
            i + 1,
            if s.knee == Some(i) { " (knee)" } else { "" },
            esc(&num(st.rate_per_s)),
            if st.passed { "ok" } else { "bad" },
            if st.passed { "pass" } else { "FAIL" },
            esc(&num(st.sent_per_s)),
            esc(&num(st.goodput_per_s)),
            esc(&pct(st.goodput_percent)),
            esc(&pct(st.busy_percent)),
            esc(&lat(p99("rtt"))),
            esc(&lat(p99("ttft"))),
            esc(&missed.join(", "))
        );
    }
    out.push_str("</table></div>\n</section>\n");
    out
}

/// The page for a sweep: the capacity curve with its knee, each step's
/// latency, the steps, the budgets and the settings.
pub fn render_sweep(s: &SweepReport) -> String {
    let mut b = String::from("<header class=\"run\">\n<div class=\"head\">");
    b.push_str(&verdict_badge(&s.verdict));
    let why = match s.capacity_per_s {
        Some(c) => format!("capacity at SLO {}/s", num(c)),
        None => "no capacity: even the first step missed a budget".to_string(),
    };
    let _ = writeln!(
        b,
        "<h1>loadgen capacity sweep</h1><span class=\"why\">{}</span></div>",
        esc(&why)
    );
    let _ = writeln!(b, "<p class=\"target\">{}</p>", esc(&s.url));
    let total: f64 = s.steps.iter().map(|st| st.report.elapsed_s).sum();
    let _ = writeln!(
        b,
        "<p class=\"meta\">started {} · {} steps in {} · {} {}</p>",
        esc(&utc(s.started_at_unix_ms)),
        s.steps.len(),
        esc(&span(total)),
        esc(&s.tool.name),
        esc(&s.tool.version)
    );
    let mode = match s.settings.mode {
        Mode::Steps { from, to, step } => format!(
            "steps from {}/s to {}/s by {}/s, stopping at the first failure",
            num(from),
            num(to),
            num(step)
        ),
        Mode::Search {
            from,
            to,
            resolution,
        } => format!(
            "bisection between {}/s and {}/s to {}/s",
            num(from),
            num(to),
            num(resolution)
        ),
    };
    b.push_str("<div class=\"cols\">\n<div>\n<h3>Settings</h3>\n");
    b.push_str(&dl(&[
        ("rates", mode),
        (
            "settle",
            format!("{}s per step, not measured", num(s.settings.settle_s)),
        ),
        (
            "measured",
            format!("{}s per step", num(s.settings.step_duration_s)),
        ),
        ("sessions", int(s.settings.sessions)),
        ("SLOs", list(&s.slos)),
        (
            "budgets",
            list(&s.budgets.iter().map(|b| b.text.clone()).collect::<Vec<_>>()),
        ),
    ]));
    b.push_str("</div>\n<div>\n<h3>Machine</h3>\n");
    match s.steps.first() {
        Some(st) => b.push_str(&machines(&st.report.shards)),
        None => b.push_str("<p class=\"note\">not recorded</p>\n"),
    }
    b.push_str("</div>\n</div>\n</header>\n");
    b.push_str(&warnings_section(&s.warnings));

    b.push_str("<section id=\"summary\">\n<h2>Capacity</h2>\n<div class=\"tiles\">\n");
    let knee = s.knee.and_then(|i| s.steps.get(i));
    let cap_class = if s.capacity_per_s.is_some() {
        "tile big"
    } else {
        "tile big none"
    };
    let _ = writeln!(
        b,
        "<div class=\"{cap_class}\"><b>{}</b><span>capacity at SLO: the highest rate at which every budget held</span></div>",
        esc(&s.capacity_per_s.map_or_else(|| "none".to_string(), |c| format!("{}/s", num(c))))
    );
    b.push_str(&tile(
        &s.goodput_at_capacity_per_s
            .map_or_else(|| "–".to_string(), |g| format!("{}/s", num(g))),
        "goodput at capacity",
    ));
    if let Some(k) = knee {
        let p99 = |f: &str| k.report.metrics.get(f).and_then(|m| m.p99_us);
        b.push_str(&tile(&lat(p99("ttft")), "ttft p99 at capacity"));
        b.push_str(&tile(&lat(p99("rtt")), "rtt p99 at capacity"));
    }
    b.push_str(&tile(&s.steps.len().to_string(), "steps run"));
    b.push_str("</div>\n</section>\n");

    b.push_str("<section id=\"curve\">\n<h2>Curve</h2>\n");
    b.push_str(&sweep_charts(s));
    b.push_str("</section>\n");
    b.push_str(&sweep_steps_table(s));
    page(
        &format!("loadgen sweep {}: {}", s.verdict.to_uppercase(), s.url),
        &b,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ErrorKind, Mark as At, Recorder};
    use crate::report::StageReport;
    use crate::sweep::{Settings, Step};

    /// One second: `n` messages with rtt around `rtt_us` (ttft too unless
    /// `no_ttft`), a busy refusal every 10th.
    fn second(t: u64, n: u64, rtt_us: u64, no_ttft: bool) -> SeriesPoint {
        let mut r = Recorder::default();
        for i in 0..n {
            r.record(At::Stage(0), Figure::Rtt, rtt_us + i);
            if !no_ttft {
                r.record(At::Stage(0), Figure::Ttft, 100 * rtt_us + i);
            }
        }
        r.counters().sent = n;
        r.counters().acked = n - n / 10;
        for _ in 0..n / 10 {
            r.error(ErrorKind::Busy);
        }
        SeriesPoint::of(t, n as f64, &r.take(), 10 + t)
    }

    fn stage(r: &Report, name: &str, start_s: f64, duration_s: f64) -> StageReport {
        StageReport {
            name: name.to_string(),
            start_s,
            duration_s,
            sessions: 10,
            rate_per_s: 100.0,
            messages: r.messages.clone(),
            errors: r.errors.clone(),
            goodput: r.goodput.clone(),
            metrics: r.metrics.clone(),
        }
    }

    /// The shared sample with `secs` seconds of series and two stages.
    fn with_series(secs: u64, budgets: &[&str]) -> Report {
        let mut r = crate::report::tests::sample(1, budgets);
        r.series = (0..secs).map(|t| second(t, 50, 1000 + t, false)).collect();
        r.stages = vec![
            stage(&r, "baseline", 0.0, secs as f64 / 2.0),
            stage(&r, "surge", secs as f64 / 2.0, secs as f64 / 2.0),
        ];
        r
    }

    /// The `<svg>` of chart `id`.
    fn chart<'a>(html: &'a str, id: &str) -> &'a str {
        let start = html
            .find(&format!("data-chart=\"{id}\""))
            .unwrap_or_else(|| panic!("no chart {id}"));
        let end = start + html[start..].find("</svg>").unwrap();
        &html[start..end]
    }

    fn drawn(svg: &str) -> Vec<String> {
        svg.split("class=\"series\" data-series=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_string())
            .collect()
    }

    fn assert_self_contained(html: &str) {
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        let lower = html.to_lowercase();
        // Text is escaped, so every `<` opens a tag of the page's own.
        for tag in lower.split('<').skip(1) {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            let name = tag.split([' ', '\n', '/']).next().unwrap_or("");
            assert!(
                !["script", "link", "img", "iframe", "object", "embed", "image", "use", "a"]
                    .contains(&name),
                "<{tag}> in the page"
            );
            for attr in ["src=", "href=", "xlink:", "on"] {
                let hit = tag.split_whitespace().skip(1).any(|a| a.starts_with(attr));
                assert!(!hit, "{attr} in <{tag}>");
            }
        }
        for bad in ["@import", "url("] {
            assert!(!lower.contains(bad), "{bad} in the page");
        }
        assert!(lower.contains("content-security-policy"));
        assert!(lower.contains("default-src 'none'"));
        // The only http(s) URL is SVG's namespace, which is a name, not a fetch.
        let urls = lower.matches("http://").count() + lower.matches("https://").count();
        let ns = lower
            .matches("xmlns=\"http://www.w3.org/2000/svg\"")
            .count();
        assert_eq!(urls, ns, "an http URL other than the SVG namespace");
    }

    #[test]
    fn the_page_is_self_contained() {
        let r = with_series(30, &["rtt.p99<2ms", "errors<0.05%"]);
        let html = render(&r);
        assert_self_contained(&html);
        for part in [
            "data-verdict=\"fail\"",
            "ws://127.0.0.1:1/ws",
            "2023-11-14 22:13:20 UTC",
            "baseline",
            "surge",
            "<code>rtt.p99&lt;2ms</code>",
            "id=\"percentiles\"",
            "1 shard",
        ] {
            assert!(html.contains(part), "{part} missing");
        }
        // The percentile plot is svg.rs's, inline.
        assert!(html.contains("Latency by percentile: "));
    }

    #[test]
    fn report_strings_are_escaped() {
        let mut r = with_series(4, &[]);
        r.stages[1].name = "<script>alert(1)</script>".to_string();
        r.scenario.stages[0].name = Some("<script>x</script>".to_string());
        r.scenario.url = "ws://h/ws?a=1&b=\"><script>alert(2)</script>".to_string();
        r.warnings = vec!["<img src=x onerror=alert(3)>".to_string()];
        r.shards[0].machine.hostname = "<b>host</b>".to_string();
        let html = render(&r);
        assert_self_contained(&html);
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&amp;b=&quot;&gt;&lt;script&gt;alert(2)"));
        assert!(html.contains("&lt;img src=x onerror=alert(3)&gt;"));
        assert!(html.contains("&lt;b&gt;host&lt;/b&gt;"));
        assert!(!html.contains("<b>host"));
    }

    #[test]
    fn each_series_is_one_path_with_every_point() {
        let r = with_series(30, &["rtt.p99<2ms"]);
        let html = render(&r);
        let m = chart(&html, "messages");
        assert_eq!(
            drawn(m),
            ["errors", "busy (on errors)", "offered", "sent", "acked"],
            "bands first, then lines"
        );
        let line = m.split("data-series=\"sent\"").nth(1).unwrap();
        let d = line
            .split("d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('L').count(), 29, "30 seconds, 30 points: {d}");
        let l = chart(&html, "latency");
        assert_eq!(drawn(l), ["rtt p99", "rtt p50", "ttft p99", "ttft p50"]);
        assert!(l.contains("rtt.p99&lt;2ms"), "the budget drawn as a level");
        let far = render(&with_series(5, &["ttft.p99<1h"]));
        let l = chart(&far, "latency");
        assert!(!l.contains("stroke-dasharray=\"6 4\""), "not a level: {l}");
        assert!(l.contains("ttft.p99&lt;1h: far above, not drawn"));
        assert!(
            !l.contains(">10s</text>"),
            "the axis fits the data, not the budget"
        );
        let s = chart(&html, "sessions");
        assert_eq!(drawn(s), ["target (scenario)", "open"]);
        for c in [m, l, s] {
            // Both stage starts, labelled.
            assert!(c.contains(">baseline</text>") && c.contains(">surge</text>"));
            assert_eq!(c.matches("stroke-dasharray=\"4 3\"").count(), 2);
        }
    }

    #[test]
    fn empty_series_a_single_point_and_no_ttft_are_drawn_gracefully() {
        let mut r = crate::report::tests::sample(1, &[]);
        let html = render(&r);
        assert_self_contained(&html);
        assert!(html.contains("No per-second series"));
        assert!(!html.contains("class=\"series\""));
        assert!(html.contains("no per-stage figures"));

        r.series = vec![second(0, 20, 500, true)];
        let html = render(&r);
        let l = chart(&html, "latency");
        assert_eq!(drawn(l), ["rtt p99", "rtt p50"], "no ttft: not drawn");
        assert!(l.contains("ttft p99: no samples"));
        // A lone point is a dot, not an empty path.
        assert!(l.contains("h0.01\""), "{l}");
        let m = chart(&html, "messages");
        assert_eq!(drawn(m).len(), 5);
        for c in [l, m, chart(&html, "sessions")] {
            assert!(!c.contains("NaN") && !c.contains("inf"), "{c}");
        }

        // A second with no samples at all between two with some: a gap.
        r.series = vec![
            second(0, 20, 500, true),
            second(1, 0, 500, true),
            second(2, 20, 500, true),
        ];
        let html = render(&r);
        let l = chart(&html, "latency");
        let d = l
            .split("data-series=\"rtt p99\" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert!(!l.contains("NaN"));
    }

    #[test]
    fn long_series_are_bucketed_summing_counts_and_keeping_peaks() {
        let one = second(0, 10, 1000, true);
        let mut series: Vec<SeriesPoint> = (0..10_000)
            .map(|t| SeriesPoint {
                t_s: t,
                ..one.clone()
            })
            .collect();
        series[4321] = second(4321, 10, 900_000, true);
        let b = buckets(&series, MAX_POINTS);
        assert_eq!(b.size, 5);
        assert_eq!(b.t.len(), 2000);
        assert_eq!(b.sent.iter().sum::<f64>(), 100_000.0, "counts add up");
        assert_eq!(b.sent[0], 50.0);
        let peak = b.rtt_p99.iter().flatten().copied().fold(0.0, f64::max);
        assert!(peak >= 899_000.0, "the slow second survives: {peak}");
        assert_eq!(b.t[0], 2.5, "the middle of seconds 0 to 4");

        let mut r = crate::report::tests::sample(1, &[]);
        r.series = series;
        let html = render(&r);
        let d = chart(&html, "messages")
            .split("data-series=\"sent\" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('L').count(), 1999);
        assert!(html.contains("messages per 5 s"));
        assert!(html.contains("each point is 5 s"));
        assert!(html.len() < 800_000, "{} bytes", html.len());
    }

    #[test]
    fn an_aborted_run_says_when_and_why() {
        let mut r = with_series(10, &["rtt.p99<2ms"]);
        r.aborted = Some(crate::budget::Aborted {
            at_s: 7.0,
            breach_since_s: 4.0,
            budgets: vec!["rtt.p99<2ms".to_string()],
        });
        let html = render(&r);
        assert!(html.contains(
            "ended the run 7.0s into the stages: rtt.p99&lt;2ms had not held since 4.0s"
        ));
        assert!(chart(&html, "messages").contains(">aborted</text>"));
    }

    #[test]
    fn a_merged_report_shows_its_shards() {
        let a = crate::report::tests::sample(1, &["rtt.p99<2ms"]);
        let b = crate::report::tests::sample(2, &["rtt.p99<2ms"]);
        let m = crate::report::merge(&[a, b], None).unwrap();
        let html = render(&m);
        assert!(html.contains("merged from 2 shards"));
        assert!(html.contains("<h3>Machines</h3>"));
        assert!(html.contains("data-verdict=\"pass\""));
    }

    #[test]
    fn budgets_are_a_table_with_each_verdict() {
        let r = crate::report::tests::sample(1, &["rtt.p99<2ms", "errors<0.05%"]);
        let html = render(&r);
        let t = html.split("id=\"budgets\"").nth(1).unwrap();
        let t = &t[..t.find("</section>").unwrap()];
        assert_eq!(t.matches("<tr>").count(), 3);
        assert!(t.contains("<td class=\"ok\">pass</td>"));
        assert!(t.contains("<td class=\"bad\">FAIL</td>"));
        assert!(
            t.contains("<td>2.00ms</td>") && t.contains("<td>0.05%</td>"),
            "{t}"
        );
        let none = render(&crate::report::tests::sample(1, &[]));
        assert!(none.contains("No budgets were given"));
        assert!(none.contains("data-verdict=\"none\""));
    }

    fn step(r: &Report, rate: f64, passed: bool, rtt_p99: u64) -> Step {
        let mut report = r.clone();
        if let Some(m) = report.metrics.get_mut("rtt") {
            m.p99_us = Some(rtt_p99);
        }
        if !passed {
            report.budgets[0].pass = false;
            report.budgets[0].observed = format_us(rtt_p99);
        }
        Step {
            rate_per_s: rate,
            passed,
            sent_per_s: rate * 0.99,
            goodput_per_s: if passed { rate * 0.98 } else { rate * 0.6 },
            goodput_percent: Some(if passed { 98.0 } else { 60.0 }),
            busy_percent: Some(0.0),
            report,
        }
    }

    fn sweep() -> SweepReport {
        let r = crate::report::tests::sample(1, &["rtt.p99<2ms"]);
        SweepReport {
            schema: crate::sweep::SCHEMA.to_string(),
            tool: r.tool.clone(),
            started_at_unix_ms: r.started_at_unix_ms,
            url: "ws://h/ws?site=<script>".to_string(),
            settings: Settings {
                mode: Mode::Steps {
                    from: 100.0,
                    to: 500.0,
                    step: 100.0,
                },
                settle_s: 2.0,
                step_duration_s: 10.0,
                sessions: 100,
            },
            slos: r.scenario.slos.clone(),
            budgets: r.scenario.budgets.clone(),
            steps: vec![
                step(&r, 100.0, true, 900),
                step(&r, 200.0, true, 1200),
                step(&r, 300.0, true, 1900),
                step(&r, 400.0, false, 40_000),
            ],
            capacity_per_s: Some(300.0),
            knee: Some(2),
            goodput_at_capacity_per_s: Some(294.0),
            verdict: "pass".to_string(),
            warnings: vec!["a <warning>".to_string()],
        }
    }

    #[test]
    fn a_sweep_shows_its_curve_knee_and_steps() {
        let s = sweep();
        let html = render_sweep(&s);
        assert_self_contained(&html);
        let c = chart(&html, "capacity");
        assert_eq!(drawn(c), ["offered (ideal)", "sent/s", "goodput/s"]);
        assert_eq!(c.matches("class=\"mark pass\"").count(), 3);
        assert_eq!(c.matches("class=\"mark fail\"").count(), 1);
        assert_eq!(c.matches("r=\"10\"").count(), 1, "the knee ringed");
        assert!(c.contains("capacity 300/s"));
        let l = chart(&html, "sweep-latency");
        assert_eq!(drawn(l), ["rtt p99", "ttft p99"]);
        assert!(l.contains("rtt.p99&lt;2ms"));
        assert!(html.contains("ws://h/ws?site=&lt;script&gt;"));
        assert!(html.contains("a &lt;warning&gt;"));
        assert!(html.contains("3 (knee)"));
        assert!(
            html.contains("rtt.p99&lt;2ms (40.0ms)"),
            "a missed budget with its value"
        );
        assert!(html.contains("capacity at SLO 300/s"));

        let mut none = sweep();
        none.capacity_per_s = None;
        none.knee = None;
        none.goodput_at_capacity_per_s = None;
        none.verdict = "fail".to_string();
        none.steps.truncate(0);
        let html = render_sweep(&none);
        assert_self_contained(&html);
        assert!(html.contains("no capacity"));
        assert!(html.contains("The sweep ran no step"));
    }

    #[test]
    fn times_and_ticks_read_plainly() {
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(tick_time(45.0), "45s");
        assert_eq!(tick_time(150.0), "2m30s");
        assert_eq!(tick_time(3600.0), "1h");
        assert_eq!(tick_count(1500.0), "1.5k");
        assert_eq!(int(1_234_567), "1,234,567");
        assert_eq!(
            Scale::counts(87.0).ticks(),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(Scale::time(90.0).ticks().len(), 10);
        let Some(Scale::Log { lo, hi }) = Scale::latency([300.0, 40_000.0]) else {
            panic!("a log scale");
        };
        assert_eq!((lo, hi), (100.0, 100_000.0));
        assert!(Scale::latency([]).is_none());
        // A narrow log range gets the 2s and 5s too.
        assert_eq!(
            Scale::Log {
                lo: 1000.0,
                hi: 100_000.0
            }
            .ticks(),
            [1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0]
        );
    }
}
