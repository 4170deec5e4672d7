//! Grounded answers end to end: the demo site's built-in knowledge base,
//! uploads through the admin API, `done.sources` and `confidence`, a low
//! confidence asking for a person, sources kept in the transcript, and the
//! pool's `/v1/embeddings` over HTTP as the embedder.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use inference_client::sim::server::{bind, serve, ServerConfig};
use inference_client::{IoDriver, LatencyModel};
use serde_json::{json, Value};

const TOKEN: &str = "grounding-test-admin-token";

fn ask(c: &mut Client, id: &str, text: &str) -> (String, Value) {
    c.send(json!({"type": "message", "id": id, "text": text}));
    let seen = c.recv_until("done");
    (token_text(&seen), seen.last().cloned().unwrap_or_default())
}

fn admin(gw: &Gateway, method: &str, path: &str, body: &[u8]) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    request(gw.addr, method, path, &[("Authorization", &auth)], body)
}

fn demo_answers_from_its_knowledge_base(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[knowledge]\nembedder = \"lexical\"\n"),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    let (text, done) = ask(&mut c, "m1", "How long does shipping to Canada take?");
    assert!(text.contains("Canada"), "an extractive answer: {text}");
    assert!(
        text.contains("business days"),
        "the answer quotes the help page: {text}"
    );
    let sources = done["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 5, "{done}");
    assert_eq!(sources[0]["url"], "https://fernhill.example/help/shipping");
    for s in sources {
        for field in ["chunk", "title", "url"] {
            assert!(s[field].as_str().is_some_and(|v| !v.is_empty()), "{s}");
        }
    }
    let scores: Vec<f64> = sources.iter().filter_map(|s| s["score"].as_f64()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    let confidence = done["confidence"].as_f64().unwrap();
    assert!(confidence > 0.5, "{done}");

    // A short follow-up is searched with the question before it, and read
    // with it: the duration asked for first is in the answer (issue 12).
    let (text, done) = ask(&mut c, "m2", "and to Japan?");
    assert!(text.contains("Japan"), "{text}");
    assert!(text.contains("7 to 14 business days"), "{text}");
    assert!(done["sources"][0]["url"]
        .as_str()
        .is_some_and(|u| u.contains("shipping")));

    // The sources stay with the reply in the transcript.
    let cookie = c.cookie.clone().expect("session cookie");
    drop(c);
    let mut again = connect(&gw, "/ws?site=demo", Some(&cookie), None).unwrap();
    let welcome = again.hello();
    let replies: Vec<&Value> = welcome["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["from"] == "ai")
        .collect();
    assert_eq!(replies.len(), 2, "{welcome}");
    assert_eq!(
        replies[0]["sources"][0]["url"],
        "https://fernhill.example/help/shipping"
    );
}

both_drivers!(demo_answers_from_its_knowledge_base);

/// Issue 12: the demo answers what its pages say (the phone number from the
/// contact page, final-sale items from the returns page), and below the
/// site's `human_below_confidence` says its pages do not cover the question
/// and offers a person, citing nothing, instead of quoting the nearest
/// sentence.
fn demo_answers_what_its_pages_say(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[knowledge]\nembedder = \"lexical\"\n"),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    let (text, _) = ask(&mut c, "m1", "what is your phone number?");
    assert!(text.contains("1-800-555-0148"), "{text}");
    let (text, done) = ask(&mut c, "m2", "can I return sale items?");
    assert!(text.contains("Final Sale"), "{text}");
    assert!(!text.contains("sales tax"), "{text}");
    assert!(
        done["sources"][0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("returns")),
        "{done}"
    );
    let (text, done) = ask(&mut c, "m3", "who painted the Mona Lisa?");
    assert_eq!(
        text,
        inference_client::sim::answer::NOT_COVERED_ANSWER,
        "{done}"
    );
    assert!(
        done["sources"].as_array().is_none_or(|s| s.is_empty()),
        "nothing is cited: {done}"
    );
    assert!(done["confidence"].as_f64().unwrap() < 0.35, "{done}");
}

both_drivers!(demo_answers_what_its_pages_say);

#[test]
fn uploads_ground_answers_and_a_weak_match_asks_for_a_person() {
    let cfg = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[knowledge]\nembedder = \"lexical\"\ndemo = false\n\
         [sites.shop]\nhuman_below_confidence = 0.4\n\
         rules = [\"Never discuss competitor pricing.\"]\n"
    );
    let gw = Gateway::with(Opts {
        driver: "auto",
        config: Some(&cfg),
        ..Default::default()
    });
    let returns = b"# Returns\n\n## Time limit\n\nYou can return shoes and clothing within \
        30 days of delivery, unworn, with the tags on. Refunds reach your card within 5 \
        business days of the parcel arriving at our warehouse.\n";
    let r = admin(&gw, "PUT", "/admin/sites/shop/kb/help/returns.md", returns);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["files"][0]["status"], "added");
    let r = admin(&gw, "PUT", "/admin/sites/shop/kb/help/returns.md", returns);
    assert_eq!(r.json()["files"][0]["status"], "unchanged");
    // A bad file is named and refused; the knowledge base keeps what it had.
    let r = admin(
        &gw,
        "PUT",
        "/admin/sites/shop/kb/photo.html",
        b"\0\x01\x02PNG",
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["files"][0]["name"], "photo.html");
    assert_eq!(r.json()["files"][0]["error"]["code"], "binary");
    // Larger than an ordinary request body, from the admin only.
    let big = format!("# Care\n\n{}", "Wash cold and dry flat. ".repeat(14_000));
    assert!(big.len() > 256 * 1024);
    let r = admin(&gw, "PUT", "/admin/sites/shop/kb/care.md", big.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = request(
        gw.addr,
        "PUT",
        "/admin/sites/shop/kb/care2.md",
        &[("Authorization", "Bearer not-the-admin-token-at-all")],
        big.as_bytes(),
    );
    assert_eq!(r.status, 413);
    let r = request(gw.addr, "GET", "/admin/sites/shop/kb", &[], b"");
    assert_eq!(r.status, 401);
    let listed = admin(&gw, "GET", "/admin/sites/shop/kb", b"").json();
    assert_eq!(listed["documents"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed["mode"], "lexical");

    let mut c = connect(&gw, "/ws?site=shop", None, None).unwrap();
    c.hello();
    let (text, done) = ask(&mut c, "m1", "Can I return shoes after 30 days?");
    assert!(text.contains("30 days"), "{text}");
    assert_eq!(done["sources"][0]["url"], "help/returns.md");
    assert!(done["confidence"].as_f64().unwrap() >= 0.4, "{done}");

    // Nothing in the knowledge base matches: low confidence, a person is
    // asked for (none is online, so the visitor hears that at once).
    c.send(json!({"type": "message", "id": "m2", "text": "Who painted the Mona Lisa?"}));
    let seen = c.recv_until("agent");
    let done = seen.iter().find(|m| m["type"] == "done").expect("done");
    assert!(done["confidence"].as_f64().unwrap() < 0.4, "{done}");
    assert_eq!(seen.last().unwrap()["event"], "none_available");

    // Removed, the document no longer grounds answers.
    let r = admin(&gw, "DELETE", "/admin/sites/shop/kb/help/returns.md", b"");
    assert_eq!(r.status, 204);
    let found = admin(
        &gw,
        "GET",
        "/admin/sites/shop/kb/search?q=return+shoes+30+days",
        b"",
    )
    .json();
    assert!(found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["url"] != "help/returns.md"));
}

/// Starts a simulated inference server on a thread; returns its address.
fn sim() -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ServerConfig {
        latency: LatencyModel {
            decode_step: std::time::Duration::from_millis(1),
            prefill_us_per_token: 1.0,
            ..LatencyModel::default()
        },
        ..ServerConfig::default()
    };
    std::thread::spawn(move || {
        let _ = serve(listener, cfg, IoDriver::Auto);
    });
    addr
}

#[test]
fn the_pool_embeds_over_http() {
    let addr = sim();
    let url = format!("http://{addr}");
    let cfg = format!("[admin]\ntoken = \"{TOKEN}\"\n[knowledge]\nembedder = \"pool\"\n");
    let gw = Gateway::with(Opts {
        driver: "auto",
        args: &["--inference", &url],
        config: Some(&cfg),
        ..Default::default()
    });
    let listed = admin(&gw, "GET", "/admin/sites/demo/kb", b"").json();
    assert_eq!(listed["embedder"], "pool-default", "{listed}");
    assert_eq!(listed["mode"], "hybrid");
    let stats = request(addr, "GET", "/admin/stats", &[], b"").json();
    let before = stats["embedding_requests"].as_u64().unwrap();
    assert!(before >= 2, "the probe and the demo's chunks: {stats}");

    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    let (text, done) = ask(&mut c, "m1", "What sizes do your jackets come in?");
    assert!(!text.is_empty());
    assert!(
        done["sources"][0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("sizing")),
        "{done}"
    );
    let stats = request(addr, "GET", "/admin/stats", &[], b"").json();
    assert!(
        stats["embedding_requests"].as_u64().unwrap() > before,
        "the question was embedded by the pool: {stats}"
    );
}
