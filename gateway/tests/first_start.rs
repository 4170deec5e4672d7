//! A start without a configured admin token, over real sockets: the first
//! makes an admin token and a demo admin agent and prints them once with the
//! addresses to open; the next prints the addresses only, and both secrets
//! still work. A configured token makes nothing.

mod common;

use common::{request, Gateway, Opts};
use serde_json::Value;

fn start(driver: &str, data: &std::path::Path, args: &[&str]) -> Gateway {
    Gateway::with(Opts {
        driver,
        data_dir: Some(data),
        args,
        ..Default::default()
    })
}

/// The value after `label` on the line that has it.
fn secret(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} line: {lines:?}"))
        .to_string()
}

fn admin_sites(gw: &Gateway, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    request(
        gw.addr,
        "GET",
        "/admin/sites",
        &[("Authorization", &auth)],
        b"",
    )
    .status
}

/// Signs in at the dashboard: the status and the account.
fn agent_login(gw: &Gateway, token: &str) -> (u16, Value) {
    let body = serde_json::json!({ "token": token }).to_string();
    let r = request(
        gw.addr,
        "POST",
        "/agent/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn assert_open_line(gw: &Gateway, lines: &[String]) {
    let open = lines.last().expect("a line");
    assert!(
        open.contains(&format!("http://{}/ ", gw.addr))
            && open.contains(&format!("http://{}/agent", gw.addr)),
        "{open}"
    );
}

fn first_start_prints_secrets_once(driver: &str) {
    let data = tempfile::tempdir().expect("temp dir");
    let gw = start(driver, data.path(), &[]);
    let lines = gw.stdout_until("Open ");
    assert_open_line(&gw, &lines);
    let admin = secret(&lines, "admin token:");
    let agent = secret(&lines, "agent token:");
    assert_eq!(admin_sites(&gw, &admin), 200, "{lines:?}");
    assert_eq!(admin_sites(&gw, "lcadm_wrong"), 403);
    let (status, account) = agent_login(&gw, &agent);
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["role"], "admin");
    assert_eq!(account["sites"][0], "demo");
    let kept = std::fs::read_to_string(data.path().join("admin-token.sha256")).expect("kept");
    assert!(!kept.contains(&admin), "the token is kept hashed");
    gw.stop();

    let gw = start(driver, data.path(), &[]);
    let lines = gw.stdout_until("Open ");
    assert_open_line(&gw, &lines);
    assert_eq!(lines.len(), 1, "no secret is printed again: {lines:?}");
    assert_eq!(admin_sites(&gw, &admin), 200, "the same token still works");
    assert_eq!(agent_login(&gw, &agent).0, 200, "and the agent's");
    gw.stop();
}

fn a_configured_token_makes_nothing(driver: &str) {
    let data = tempfile::tempdir().expect("temp dir");
    let gw = start(
        driver,
        data.path(),
        &["--admin-token", "configured-admin-token"],
    );
    let lines = gw.stdout_until("Open ");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(admin_sites(&gw, "configured-admin-token"), 200);
    assert!(!data.path().join("admin-token.sha256").exists());
    gw.stop();
}

both_drivers!(
    first_start_prints_secrets_once,
    a_configured_token_makes_nothing
);
