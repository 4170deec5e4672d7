//! `gateway kb add`: ingest into the data directory the server uses, make the
//! site when it is new, skip what is unchanged, name and skip bad files.

mod common;

use std::path::Path;
use std::process::Command;

use common::{connect, Gateway, Opts};

fn kb_add(data: &Path, site: &str, paths: &[&Path]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["kb", "add", "--site", site, "--data-dir"])
        .arg(data)
        .args(paths)
        // Lexical retrieval: fast, and the same whatever the machine has cached.
        .env("LC_MODEL_DIR", data.join("no-model-here"))
        .output()
        .expect("run gateway kb add");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn kb_add_ingests_skips_and_names_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../knowledge/eval/shop");

    let (ok, out) = kb_add(&data, "fernhill", &[&docs]);
    assert!(ok, "{out}");
    assert!(
        out.contains("site 'fernhill' made with default settings"),
        "{out}"
    );
    assert!(out.contains("retrieval: lexical"), "{out}");
    assert!(out.contains("added      help/shipping.md"), "{out}");
    assert!(out.contains("0 rejected"), "{out}");

    // Again: nothing changed, nothing re-embedded; a binary file is named and skipped.
    let bad = tmp.path().join("logo.md");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").unwrap();
    let (ok, out) = kb_add(&data, "fernhill", &[&docs, &bad]);
    assert!(ok, "{out}");
    assert!(out.contains("unchanged  help/shipping.md"), "{out}");
    assert!(out.contains("rejected   logo.md"), "{out}");
    assert!(
        out.contains("0 added, 0 replaced, 14 unchanged, 1 rejected"),
        "{out}"
    );

    // A path that is not there is an error, and nothing runs.
    let (ok, out) = kb_add(&data, "fernhill", &[&tmp.path().join("nope")]);
    assert!(!ok);
    assert!(out.contains("no such file or folder"), "{out}");

    // The server on that data directory knows the new site.
    let gw = Gateway::with(Opts {
        data_dir: Some(&data),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=fernhill", None, None).expect("the new site serves");
    c.hello();
    gw.stop();
}
