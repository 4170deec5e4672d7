//! What pointing the service at a real model server needs, against
//! `inference-sim` acting as one: a bearer key and a model name it demands
//! (401 and 404 with OpenAI's error body), the start-up probe's report of
//! each, the log naming the endpoint and the cause of a failed reply, and an
//! `https` upstream whose certificate is signed by a private CA (made here
//! with rcgen), on both io drivers.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{collect, Sim, WAIT};
use inference_client::probe::Health;
use inference_client::{
    ApiKey, Backend, ChatMessage, EndpointConfig, Event, GenerateRequest, InferenceError, Role,
    Service, ServiceConfig,
};

/// Everything the service logs in this test process (tests run in
/// parallel, so each looks for its own endpoint's URL).
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("inference_client=debug")
            .with_ansi(false)
            .with_writer(move || Capture(w.clone()))
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines that mention `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&log().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn service(url: &str, driver: &str, f: impl FnOnce(&mut ServiceConfig)) -> Service {
    log();
    let mut cfg = ServiceConfig {
        io_driver: driver.parse().unwrap_or_default(),
        health_interval: Duration::ZERO,
        ..ServiceConfig::with_backend(Backend::Endpoints(vec![EndpointConfig::new(url)]))
    };
    f(&mut cfg);
    Service::start(cfg).expect("service starts")
}

fn ask(id: u64) -> GenerateRequest {
    GenerateRequest::new(
        id,
        vec![ChatMessage::new(Role::User, "where is my parcel?")],
        64,
    )
}

/// One request's final event.
fn answer(service: &Service, id: u64) -> Event {
    let (tx, rx) = flume::unbounded();
    let client = service.client(Box::new(tx));
    client.submit(ask(id));
    collect(&rx, id, &mut Vec::new()).last
}

/// A raw `/v1/` request: (status, JSON body).
fn raw(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let auth = auth.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let method = if body.is_empty() { "GET" } else { "POST" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_default())
}

const KEY: &str = "sk-sim-right-key";
const MODEL: &str = "llama3.1:8b";

#[test]
fn the_simulator_refuses_like_openai() {
    let sim = Sim::start(&["--api-key", KEY, "--model", MODEL]);
    let chat = |model: &str| {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
    };
    let (status, body) = raw(sim.addr, "/v1/chat/completions", None, &chat(MODEL));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key"));
    let (status, body) = raw(sim.addr, "/v1/models", Some("sk-wrong"), "");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["message"], "Incorrect API key provided.");
    let (status, body) = raw(
        sim.addr,
        "/v1/chat/completions",
        Some(KEY),
        &chat("default"),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`default`"));
    let (status, body) = raw(sim.addr, "/v1/models", Some(KEY), "");
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["id"], MODEL);
    // Without the flags it accepts anyone and any name, as before.
    let open = Sim::start(&[]);
    assert_eq!(
        raw(open.addr, "/v1/chat/completions", None, &chat("x")).0,
        200
    );
}

fn key_and_model_are_sent(driver: &str) {
    let sim = Sim::start(&["--api-key", KEY, "--model", MODEL, "--io-driver", driver]);
    let s = service(&sim.url(), driver, |c| {
        c.model = MODEL.into();
        c.api_key = ApiKey::new(KEY);
    });
    let probes = s.probes(WAIT);
    assert_eq!(probes.len(), 1);
    assert!(probes[0].is_ready(), "{}", probes[0]);
    assert_eq!(probes[0].url, sim.url());
    assert!(matches!(answer(&s, 1), Event::Done { .. }));
    let ready = log_lines(&format!("inference endpoint {}: ready", sim.url()));
    assert_eq!(ready.len(), 1, "the probe's line is logged");
    assert!(ready[0].contains(MODEL), "{}", ready[0]);
    assert!(log_lines(KEY).is_empty(), "the key never reaches the log");
}

fn a_refused_key_is_named(driver: &str) {
    let sim = Sim::start(&["--api-key", KEY, "--io-driver", driver]);
    let s = service(&sim.url(), driver, |c| c.api_key = ApiKey::new("sk-wrong"));
    let probes = s.probes(WAIT);
    assert!(
        matches!(
            probes[0].health,
            Health::KeyRefused {
                status: 401,
                key_sent: true,
                ..
            }
        ),
        "{:?}",
        probes[0]
    );
    assert!(probes[0].to_string().starts_with("the key was refused"));
    // The request fails over to no one, and the log says why.
    assert_eq!(
        answer(&s, 1),
        Event::Failed {
            id: 1,
            error: InferenceError::Unavailable
        }
    );
    let lines = log_lines(&format!(
        "inference endpoint {}: /v1/chat/completions failed",
        sim.url()
    ));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("the key was refused"), "{}", lines[0]);
    assert!(
        lines[0].contains("Incorrect API key provided"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(
        log_lines("sk-wrong").is_empty(),
        "the key never reaches the log"
    );

    // No key at all: the probe says one is needed.
    let s = service(&sim.url(), driver, |_| {});
    let p = &s.probes(WAIT)[0];
    assert!(
        matches!(
            p.health,
            Health::KeyRefused {
                key_sent: false,
                ..
            }
        ),
        "{p:?}"
    );
    assert!(p.to_string().contains("--api-key"), "{p}");
}

fn an_unknown_model_is_named(driver: &str) {
    let sim = Sim::start(&["--model", MODEL, "--io-driver", driver]);
    let s = service(&sim.url(), driver, |_| {}); // sends "default"
    let p = &s.probes(WAIT)[0];
    assert_eq!(
        p.health,
        Health::Ready {
            models: vec![MODEL.into()],
            model_listed: false
        }
    );
    let line = p.to_string();
    assert!(
        line.contains("does not list the model \"default\""),
        "{line}"
    );
    assert!(line.contains(MODEL) && line.contains("--model"), "{line}");
    assert!(matches!(answer(&s, 1), Event::Failed { .. }));
    let lines = log_lines(&format!(
        "inference endpoint {}: /v1/chat/completions failed",
        sim.url()
    ));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("HTTP 404"), "{}", lines[0]);
    assert!(
        lines[0].contains("\"default\" is not served"),
        "{}",
        lines[0]
    );
}

fn an_unreachable_endpoint_is_named(driver: &str) {
    let mut sim = Sim::start(&[]);
    let url = sim.url();
    sim.kill();
    let s = service(&url, driver, |_| {});
    let p = &s.probes(WAIT)[0];
    assert!(matches!(p.health, Health::Unreachable(_)), "{p:?}");
    // Refused, as a rule; reset when the dead port's last state lingers.
    let lines = log_lines(&format!("inference endpoint {url}: unreachable: "));
    assert_eq!(lines.len(), 1, "{p:?} {:?}", log_lines(&url));
}

/// A private CA and a certificate for 127.0.0.1 and localhost signed by it,
/// as PEM files: (CA, certificate, key).
fn test_ca(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "livechat test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

fn https_with_a_private_ca(driver: &str) {
    let (ca, cert, key) = test_ca(driver);
    let sim = Sim::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--api-key",
        KEY,
        "--io-driver",
        driver,
    ]);
    let url = format!("https://{}", sim.addr);
    let s = service(&url, driver, |c| {
        c.ca_file = Some(ca.clone());
        c.api_key = ApiKey::new(KEY);
    });
    let p = &s.probes(WAIT)[0];
    assert!(p.is_ready(), "{p}");
    let (tx, rx) = flume::unbounded();
    let client = s.client(Box::new(tx));
    let mut stash = Vec::new();
    // Two requests: the second rides the kept-alive TLS connection.
    for id in 1..=2 {
        client.submit(ask(id));
        let o = collect(&rx, id, &mut stash);
        assert!(matches!(o.last, Event::Done { .. }), "{:?}", o.last);
        assert!(o.text.contains("where is my parcel?"), "{}", o.text);
    }

    // Without the CA the certificate is not trusted, and the log says so.
    let s = service(&url, driver, |c| c.api_key = ApiKey::new(KEY));
    let p = &s.probes(WAIT)[0];
    match &p.health {
        Health::Unreachable(why) => {
            assert!(why.contains("TLS handshake failed"), "{why}");
            assert!(why.contains("--inference-ca"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // A plain-http client at the TLS port fails as a broken reply, not a hang.
    let s = service(&sim.url(), driver, |_| {});
    assert!(!s.probes(WAIT)[0].is_ready());
}

#[test]
fn a_missing_ca_file_is_a_start_error() {
    let cfg = ServiceConfig {
        ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
        ..ServiceConfig::with_backend(Backend::Endpoints(vec![EndpointConfig::new(
            "https://127.0.0.1:9",
        )]))
    };
    match Service::start(cfg) {
        Err(InferenceError::Config(m)) => assert!(m.contains("/nonexistent/ca.pem"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started without its CA file"),
    }
}

both_drivers!(
    key_and_model_are_sent,
    a_refused_key_is_named,
    an_unknown_model_is_named,
    an_unreachable_endpoint_is_named,
    https_with_a_private_ca,
);
