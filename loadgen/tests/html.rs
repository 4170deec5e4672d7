//! The HTML report as a person sees it: a short two-stage run against
//! loadgen's own test server, written with `--html`, opened in headless
//! Chromium. The DOM must hold the charts with drawn series, the stages and
//! the verdict, and the screenshot must not be blank. Chromium is required
//! (`make test` installs it): without it this test fails, it never skips.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use loadgen::testserver::{self, script::Behaviour, Config};

/// Longest a Chromium invocation may take before it is killed.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(90);
/// Longest the run may take (it is about 4 s).
const RUN_LIMIT: Duration = Duration::from_secs(60);
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 2400;

/// The workspace's target directory, from this test's own path
/// (`target/debug/deps/html-*`), so that a shared `CARGO_TARGET_DIR` works.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Runs chromium headless with `args`; its process group is killed if it
/// outlives [`CHROMIUM_LIMIT`].
fn chromium(profile: &Path, args: &[String]) -> Output {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        &format!("--window-size={WIDTH},{HEIGHT}"),
        &format!("--user-data-dir={}", profile.display()),
    ])
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own group: a hung Chromium is killed with its renderers.
    .process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "chromium is not installed ({e}): run `make test`, which installs it \
             (scripts/ensure-chromium.sh), or run that script"
        ),
        Err(e) => panic!("chromium does not start: {e}"),
    };
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CHROMIUM_LIMIT) {
        Ok(out) => {
            let out = out.unwrap();
            assert!(
                out.status.success(),
                "chromium {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }
        Err(_) => {
            // SAFETY: kill(2) on the process group of the child started above.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("chromium {args:?} ran past {CHROMIUM_LIMIT:?}: killed");
        }
    }
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "{} bytes is no PNG", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

fn screenshot(profile: &Path, page: &Path, png: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(png);
    chromium(
        profile,
        &[
            format!("--screenshot={}", png.display()),
            format!("file://{}", page.display()),
        ],
    );
    let bytes = std::fs::read(png).unwrap();
    assert_eq!(png_size(&bytes), (WIDTH, HEIGHT));
    bytes
}

/// The `<svg>` element of chart `id` in the DOM.
fn chart<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("data-chart=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in the DOM"));
    let end = start + dom[start..].find("</svg>").unwrap();
    &dom[start..end]
}

/// The `d` of each series path of a chart that draws at least two points.
fn drawn_paths(svg: &str) -> Vec<&str> {
    svg.split("<path class=\"series\"")
        .skip(1)
        .filter_map(|p| p.split(" d=\"").nth(1)?.split('"').next())
        .filter(|d| d.starts_with('M') && d.contains('L'))
        .collect()
}

#[test]
fn the_html_report_of_a_real_run_renders_in_chromium() {
    let addr = testserver::spawn(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        behaviour: Behaviour {
            ack_delay: Duration::from_millis(2),
            tokens: 3,
            token_interval: Duration::from_millis(5),
            busy_every: 9,
            ..Behaviour::default()
        },
        epoll: false,
    })
    .unwrap();
    let dir = target_dir();
    let work = dir.join(format!("loadgen-html-test-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let scenario = work.join("two-stages.toml");
    // The second stage's name is markup: it must come out as text.
    std::fs::write(
        &scenario,
        format!(
            r#"url = "ws://{addr}/ws?site=demo"
warmup = "500ms"
slos = ["ttft:1s"]
budgets = ["rtt.p99<5s", "errors<5%"]

[[stages]]
name = "baseline"
duration = "2s"
sessions = 10
rate = 40

[[stages]]
name = "surge <script>alert(1)</script>"
duration = "2s"
sessions = 20
rate = 120
"#
        ),
    )
    .unwrap();
    let page = dir.join("loadgen-report.html");
    let args: Vec<OsString> = [
        "loadgen",
        "--scenario",
        scenario.to_str().unwrap(),
        "--threads",
        "1",
        "--quiet",
        "--html",
        page.to_str().unwrap(),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(loadgen::cli::main(args));
    });
    let code = rx
        .recv_timeout(RUN_LIMIT)
        .unwrap_or_else(|_| panic!("the run took longer than {RUN_LIMIT:?}"));
    assert_eq!(code, loadgen::cli::EXIT_PASS, "the budgets are loose");
    println!("HTML report: {}", page.display());

    let profile = work.join("chromium-profile");
    let dom = chromium(
        &profile,
        &[
            "--dump-dom".to_string(),
            format!("file://{}", page.display()),
        ],
    );
    let dom = String::from_utf8(dom.stdout).unwrap();
    assert!(dom.contains("data-verdict=\"pass\""), "{dom}");
    assert!(dom.contains(">PASS</span>"));
    assert!(!dom.contains("<script"), "a stage name became markup");
    assert!(dom.contains("surge &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(dom.contains(">baseline</td>"), "the stages table");
    for (id, at_least) in [("messages", 5), ("latency", 4), ("sessions", 2)] {
        let svg = chart(&dom, id);
        let paths = drawn_paths(svg);
        assert!(
            paths.len() >= at_least,
            "chart {id}: {} series drawn, {at_least} expected:\n{svg}",
            paths.len()
        );
        assert!(svg.contains(">baseline</text>"), "chart {id}: stage rule");
        assert!(
            svg.contains(">surge &lt;script&gt;"),
            "chart {id}: stage rule"
        );
    }
    // The percentile plot: one polyline per figure with samples.
    let polylines = dom.matches("<polyline").count();
    assert!(
        polylines >= 5,
        "connect, rtt, ttft, itl, reply: {polylines}"
    );
    assert!(dom.contains("points=\""));

    let png = dir.join("loadgen-report.png");
    let report = screenshot(&profile, &page, &png);
    // A blank page of the same size is the yardstick: a rendered report
    // (text, charts, tables) compresses far worse than an empty one.
    let blank_page = work.join("blank.html");
    std::fs::write(
        &blank_page,
        "<!DOCTYPE html><title>blank</title><body style=\"background:#f3f4f7\">",
    )
    .unwrap();
    let blank = screenshot(&profile, &blank_page, &work.join("blank.png"));
    assert!(
        report.len() > 10 * blank.len(),
        "the screenshot looks blank: {} bytes, a blank page {}",
        report.len(),
        blank.len()
    );
    println!("screenshot: {}", png.display());
    let _ = std::fs::remove_dir_all(&work);
}
