//! The gateway pointed at a real model server's way of being served: over
//! `https` with a certificate from a private CA (`--inference-ca`), a bearer
//! key (`--api-key`) and a model name (`--model`) that the server demands,
//! answering a visitor's message end to end; and the start-up probe's log
//! line for each endpoint. The server is the simulator on a thread, with
//! rustls's server side; the CA and certificate are made here with rcgen.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use inference_client::sim::server::{bind, serve, ServerConfig};
use inference_client::{IoDriver, LatencyModel};
use serde_json::json;

const KEY: &str = "sk-gateway-test-key";
const MODEL: &str = "llama3.1:8b";

/// A private CA and a certificate for 127.0.0.1 signed by it, as PEM files
/// in `dir`: (CA, certificate, key).
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "gateway test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
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
    paths
}

/// The simulator over TLS, demanding the key and the model; its URL.
fn tls_sim(cert: &Path, key: &Path, driver: &str) -> String {
    let tls = inference_client::tls::server_config(cert, key).unwrap();
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ServerConfig {
        model: MODEL.into(),
        model_required: true,
        api_key: Some(KEY.into()),
        tls: Some(Arc::clone(&tls)),
        latency: LatencyModel {
            decode_step: Duration::from_millis(1),
            prefill_us_per_token: 1.0,
            ..LatencyModel::default()
        },
        ..ServerConfig::default()
    };
    let driver: IoDriver = driver.parse().unwrap();
    std::thread::spawn(move || {
        let _ = serve(listener, cfg, driver);
    });
    format!("https://{addr}/v1")
}

fn answers_over_https_with_a_private_ca(driver: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(dir.path());
    let url = tls_sim(&cert, &key, driver);
    let gw = Gateway::with(Opts {
        driver,
        args: &[
            "--inference",
            &url,
            "--inference-ca",
            ca.to_str().unwrap(),
            "--model",
            MODEL,
        ],
        env: &[("LC_INFERENCE_API_KEY", KEY)],
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    c.send(json!({"type": "message", "id": "m1", "text": "where is my parcel?"}));
    let seen = c.recv_until("done");
    let text = token_text(&seen);
    assert!(
        text.contains("where is my parcel?"),
        "the answer came from the server over TLS: {seen:?}"
    );
    let log = gw.log();
    let probe = log
        .lines()
        .find(|l| l.contains(&format!("inference endpoint {url}: ready")))
        .unwrap_or_else(|| panic!("no probe line in {log}"));
    assert!(probe.contains(MODEL), "{probe}");
    assert!(!log.contains(KEY), "the key never reaches the log");
}

fn a_wrong_key_is_logged_at_start(driver: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(dir.path());
    let url = tls_sim(&cert, &key, driver);
    let gw = Gateway::with(Opts {
        driver,
        args: &[
            "--inference",
            &url,
            "--inference-ca",
            ca.to_str().unwrap(),
            "--api-key",
            "sk-wrong-key-here",
        ],
        ..Default::default()
    });
    let needle = format!("inference endpoint {url}: the key was refused");
    let line = eventually("no probe line in the gateway's log", WAIT, || {
        gw.log()
            .lines()
            .find(|l| l.contains(&needle))
            .map(str::to_string)
    });
    assert!(line.contains("HTTP 401"), "{line}");
    assert!(!gw.log().contains("sk-wrong-key-here"));
}

both_drivers!(
    answers_over_https_with_a_private_ca,
    a_wrong_key_is_logged_at_start
);
