//! The HTTP surface: static widget files with caching, health, metrics, the
//! admin API over the wire, keep-alive.

mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::json;

#[test]
fn widget_js_is_precompressed_and_cacheable() {
    let gw = Gateway::start("auto");
    let r = request(
        gw.addr,
        "GET",
        "/widget.js",
        &[("Accept-Encoding", "gzip, br")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(r.header("cache-control").unwrap().contains("max-age"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let etag = r.header("etag").expect("etag").to_owned();
    assert_eq!(&r.body[..2], &[0x1f, 0x8b], "a gzip body");
    let again = request(
        gw.addr,
        "GET",
        "/widget.js",
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let plain = request(gw.addr, "GET", "/widget.js", &[], b"");
    assert_eq!(plain.status, 200);
    assert!(plain.header("content-encoding").is_none());
    assert_ne!(&plain.body[..2], &[0x1f, 0x8b]);
}

#[test]
fn accept_encoding_weights_are_honoured() {
    let gw = Gateway::start("auto");
    let encoding = |accept: &str| {
        let r = request(
            gw.addr,
            "GET",
            "/widget.js",
            &[("Accept-Encoding", accept)],
            b"",
        );
        assert_eq!(r.status, 200);
        r.header("content-encoding").map(str::to_owned)
    };
    // A weight below 1 still accepts (it was refused for containing "q=0").
    assert_eq!(encoding("gzip;q=0.5").as_deref(), Some("gzip"));
    assert_eq!(encoding("*").as_deref(), Some("gzip"));
    assert_eq!(encoding("gzip;q=0"), None);
    assert_eq!(encoding("gzip;q=0.5, identity"), None);
}

#[test]
fn demo_page_and_chat_frame() {
    let gw = Gateway::start("auto");
    let r = request(gw.addr, "GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains("widget.js"),
        "the demo page loads the widget"
    );
    let f = request(gw.addr, "GET", "/chat?site=demo", &[], b"");
    assert_eq!(f.status, 200);
    assert!(f
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors 'self'"));
    assert_eq!(
        request(gw.addr, "GET", "/chat?site=nope", &[], b"").status,
        404
    );
}

#[test]
fn health_metrics_and_unknown_routes() {
    let gw = Gateway::start("auto");
    let h = request(gw.addr, "GET", "/healthz", &[], b"");
    assert_eq!((h.status, h.body.as_slice()), (200, &b"ok\n"[..]));
    let m = request(gw.addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8(m.body).unwrap();
    for name in [
        "lc_connections_open",
        "lc_sessions",
        "lc_frames_received_total",
        "lc_frames_sent_total",
        "lc_bytes_received_total",
        "lc_bytes_sent_total",
        "lc_errors_total{code=\"bad_request\"}",
        "lc_io_driver{worker=\"0\"",
        "lc_worker_connections{worker=\"1\"}",
        "lc_worker_cpu_seconds_total{worker=\"0\"}",
        "lc_ack_latency_seconds_bucket{le=\"+Inf\"}",
        "lc_retrieval_queue_depth 0",
        "lc_retrieval_wait_seconds_count",
        "lc_retrieval_search_seconds_bucket{le=\"+Inf\"}",
        "lc_desk_agents_online 0",
        "lc_desk_waiting 0",
        "lc_desk_longest_wait_seconds",
        "lc_build_info{version=\"",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    assert_eq!(
        request(gw.addr, "GET", "/nothing-here", &[], b"").status,
        404
    );
    let log = gw.log();
    assert!(log.contains("gateway listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes in a log that is not a terminal: {log:?}"
    );
    assert_eq!(request(gw.addr, "DELETE", "/healthz", &[], b"").status, 405);
    assert_eq!(
        request(gw.addr, "GET", "/ws", &[], b"").status,
        400,
        "a chat request must name its site"
    );
    assert_eq!(
        request(gw.addr, "GET", "/echo", &[], b"").status,
        404,
        "echo is off unless --echo"
    );
}

#[test]
fn ack_latency_is_recorded() {
    let gw = Gateway::start("auto");
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    c.send(json!({"type": "message", "id": "m", "text": "count me"}));
    c.recv_until("ack");
    let m = String::from_utf8(request(gw.addr, "GET", "/metrics", &[], b"").body).unwrap();
    assert!(m.contains("lc_ack_latency_seconds_count 1\n"), "{m}");
    assert!(m.contains("lc_messages_total 1\n"));
}

#[test]
fn keep_alive_and_pipelining() {
    let gw = Gateway::start("auto");
    let mut s = tcp(gw.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
}

#[test]
fn admin_api_manages_sites() {
    let token = "test-admin-token-0123456789";
    let gw = Gateway::with(Opts {
        driver: "auto",
        args: &["--admin-token", token],
        ..Default::default()
    });
    let auth = format!("Bearer {token}");
    assert_eq!(
        request(gw.addr, "GET", "/admin/sites", &[], b"").status,
        401
    );
    assert_eq!(
        request(
            gw.addr,
            "GET",
            "/admin/sites",
            &[("Authorization", "Bearer nope")],
            b""
        )
        .status,
        403
    );
    let body = json!({"allowed_origins": ["https://shop.example"], "theme": {"accent": "#123"}})
        .to_string();
    let r = request(
        gw.addr,
        "PUT",
        "/admin/sites/shop",
        &[("Authorization", &auth)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // The new site works at once, with its origin.
    let mut c = connect(&gw, "/ws?site=shop", None, Some("https://shop.example")).unwrap();
    assert_eq!(c.hello()["config"]["theme"]["accent"], "#123");
    assert!(connect(&gw, "/ws?site=shop", None, Some("https://other.example")).is_err());
    assert_eq!(
        request(
            gw.addr,
            "DELETE",
            "/admin/sites/shop",
            &[("Authorization", &auth)],
            b""
        )
        .status,
        204
    );
    match connect(&gw, "/ws?site=shop", None, None) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn admin_api_refuses_a_wrong_token() {
    let gw = Gateway::start("auto");
    assert_eq!(
        request(
            gw.addr,
            "GET",
            "/admin/sites",
            &[("Authorization", "Bearer x")],
            b""
        )
        .status,
        403
    );
}

#[test]
fn sites_from_the_config_file() {
    let gw = Gateway::with(Opts {
        driver: "auto",
        config: Some(
            r##"
            [sites.acme]
            allowed_origins = ["https://acme.example"]
            title = "ACME help"
            theme = { accent = "#e00" }
            [[sites.acme.triggers]]
            after_seconds = 20
            message = "Stuck?"
            "##,
        ),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=acme", None, Some("https://acme.example")).unwrap();
    let cfg = c.hello()["config"].clone();
    assert_eq!(cfg["title"], "ACME help");
    assert_eq!(cfg["triggers"][0]["message"], "Stuck?");
    assert!(
        cfg.get("instructions").is_none(),
        "instructions stay on the server"
    );
    // demo still exists alongside.
    assert!(connect(&gw, "/ws?site=demo", None, None).is_ok());
}

#[test]
fn bad_config_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "listn = \"x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listn"));
}

#[test]
fn print_config_shows_the_demo_site() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("print-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let printed = gateway::config::Config::from_toml(&text).expect("it parses back");
    let demo = printed
        .sites
        .get("demo")
        .expect("the built-in demo site is printed");
    assert!(!demo.instructions.is_empty());
}
