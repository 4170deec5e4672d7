//! Embeds the widget's built files (`widget/dist/`) into the binary, each with
//! a gzip copy made at the best compression level and an ETag of its content,
//! so the gateway serves them with no file system and no work per request;
//! and names the git commit built (`LC_GIT_COMMIT`, for `lc_build_info`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

fn main() {
    git_commit();
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../widget/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out_dir);
    let mut files: Vec<_> = std::fs::read_dir(&dist)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut code = String::from("/// Every embedded file.\npub static ASSETS: &[Asset] = &[\n");
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_string();
        let raw = std::fs::read(&path).expect("read widget file");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&raw).expect("gzip");
        let gz = gz.finish().expect("gzip");
        std::fs::write(out.join(format!("{name}.raw")), &raw).expect("write");
        std::fs::write(out.join(format!("{name}.gz")), &gz).expect("write");
        // FNV-1a 64: a content hash for ETags, not a security boundary.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in &raw {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        let ctype = match path.extension().and_then(|e| e.to_str()) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("html") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("json") => "application/json",
            _ => "application/octet-stream",
        };
        let _ = writeln!(
            code,
            "    Asset {{ name: {name:?}, content_type: {ctype:?}, etag: \"\\\"{h:016x}\\\"\", raw: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.raw\")), gzip: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.gz\")) }},"
        );
    }
    code.push_str("];\n");
    std::fs::write(out.join("assets.rs"), code).expect("write assets.rs");
}

/// Sets `LC_GIT_COMMIT` to the checked-out commit when the sources are a git
/// work tree and `git` runs; otherwise leaves it unset (`unknown` at run
/// time), so a tarball or a build without git still builds.
fn git_commit() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(manifest)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=LC_GIT_COMMIT={commit}");
    // Built again when HEAD moves: a checkout changes HEAD, a commit the
    // branch's ref (or packed-refs, where refs are packed). Only existing
    // paths are named; a missing one would rerun this script every build.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for w in watch {
        if let Some(p) = git(&["rev-parse", "--git-path", &w]) {
            let p = manifest.join(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}
