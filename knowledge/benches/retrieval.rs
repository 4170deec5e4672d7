//! Retrieval bench: quality of each embedding choice on the eval set
//! (recall@5, recall@1, MRR, confidence separation), ingest throughput, and
//! query latency of the exact and HNSW vector indexes and of BM25 at 1k, 10k
//! and 100k chunks (synthesised from the eval set's chunks).
//!
//! Quality is measured on both question sets: `eval/questions.toml` (what
//! the chunking, the weights and the confidence ramp were tuned on) and
//! `eval/questions-holdout.toml` (never tuned on).
//!
//! `cargo bench -p knowledge --bench retrieval` (MiniLM rows need the model:
//! `knowledge/fetch-model.sh`, or `LC_MODEL_DIR`). `KB_BENCH_MAX_CHUNKS`
//! caps the scale section (default 100000); `KB_BENCH_QUALITY_ONLY=1` stops
//! after the quality table; `KB_BENCH_VERBOSE=1` lists the questions each
//! candidate misses (and with `KB_BENCH_SCORES=FILE` appends every
//! question's best score and confidence to FILE).

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/eval.rs"]
mod eval;

use knowledge::embed::{default_model_dir, Embedder, HashEmbedder, MiniLm};
use knowledge::index::{normalize, VectorIndex};
use knowledge::lexical::Bm25;
use knowledge::{KbConfig, KnowledgeBase, Mode};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kb-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// The confidence at which the calibration separates answerable from
/// unanswerable questions.
const LINE: f32 = 0.5;
/// The demo site's `human_below_confidence` (gateway/src/sites.rs): below
/// it the answer says the help pages do not cover the question.
const DEMO_LINE: f32 = 0.35;

/// An embedder shared between knowledge bases.
type SharedEmbedder = Arc<dyn Embedder>;

struct Candidate {
    name: String,
    embedder: Option<Arc<dyn Embedder>>,
    mode: Mode,
    weight: f32,
}

fn main() {
    let max_chunks: usize = std::env::var("KB_BENCH_MAX_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let verbose = std::env::var_os("KB_BENCH_VERBOSE").is_some();
    let qs = eval::questions();
    let holdout = eval::holdout();
    for (name, set) in [
        ("questions.toml", &qs),
        ("questions-holdout.toml", &holdout),
    ] {
        let answerable = set.iter().filter(|q| !q.doc.is_empty()).count();
        println!(
            "eval set {name}: {} documents in eval/shop, {} questions ({} answerable, {} without an answer)",
            walk_count(&eval::shop_dir()),
            set.len(),
            answerable,
            set.len() - answerable
        );
    }
    let model_dir = default_model_dir();
    let minilm: Option<Arc<dyn Embedder>> = match MiniLm::load(&model_dir) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            println!("MiniLM rows skipped: {e}");
            None
        }
    };
    let hash: Arc<dyn Embedder> = Arc::new(HashEmbedder::new(384));
    let mut cands = vec![
        Candidate {
            name: "lexical BM25".into(),
            embedder: None,
            mode: Mode::Lexical,
            weight: 0.0,
        },
        Candidate {
            name: "hash-384 dense".into(),
            embedder: Some(hash.clone()),
            mode: Mode::Dense,
            weight: 1.0,
        },
        Candidate {
            name: "hash-384 + BM25 w=0.5".into(),
            embedder: Some(hash.clone()),
            mode: Mode::Hybrid,
            weight: 0.5,
        },
    ];
    if let Some(m) = &minilm {
        cands.push(Candidate {
            name: "MiniLM dense".into(),
            embedder: Some(m.clone()),
            mode: Mode::Dense,
            weight: 1.0,
        });
        for w in [0.3f32, 0.5, 0.7] {
            cands.push(Candidate {
                name: format!("MiniLM + BM25 w={w}"),
                embedder: Some(m.clone()),
                mode: Mode::Hybrid,
                weight: w,
            });
        }
    }

    let sets = [("tuning", &qs), ("holdout", &holdout)];
    println!(
        "\n## Retrieval quality on the eval set (doc-level; confidence lines {} (the calibration's) and {} (the demo site's human_below_confidence))",
        LINE, DEMO_LINE
    );
    println!(
        "| candidate | set | recall@5 | recall@1 | MRR@10 | query p50 ms | query p99 ms | best score answerable p10/p50 | unanswerable p50/p90 | separating score (balanced acc.) | answerable conf>={LINE} | unanswerable conf<{LINE} | answerable conf>={DEMO_LINE} | unanswerable conf<{DEMO_LINE} |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &cands {
        let dir = tmpdir("q");
        let config = KbConfig {
            mode: Some(c.mode),
            hybrid_weight: c.weight,
            ..KbConfig::default()
        };
        let kb =
            KnowledgeBase::open_dir(dir.clone(), "eval", c.embedder.clone(), config).expect("open");
        let report = kb.ingest_paths(&[eval::shop_dir()]).expect("ingest");
        assert!(report.rejected().is_empty(), "{report}");
        let mut lat = Vec::new();
        for _ in 0..3 {
            for question in &qs {
                let t = Instant::now();
                std::hint::black_box(kb.search(&question.text, 5));
                lat.push(ms(t.elapsed()));
            }
        }
        let (p50, p99) = (pct(&mut lat, 50.0), pct(&mut lat, 99.0));
        for (set, questions) in sets {
            let q = eval::measure(&kb, questions);
            let share = |v: &[f32], f: &dyn Fn(f32) -> bool| {
                v.iter().filter(|&&c| f(c)).count() as f64 * 100.0 / v.len().max(1) as f64
            };
            let sep = eval::best_threshold(&q.top_answerable, &q.top_unanswerable);
            println!(
                "| {} | {set} | {:.3} | {:.3} | {:.3} | {p50:.2} | {p99:.2} | {:.2}/{:.2} | {:.2}/{:.2} | {:.3} ({:.2}) | {:.0}% | {:.0}% | {:.0}% | {:.0}% |",
                c.name,
                q.recall5,
                q.recall1,
                q.mrr,
                eval::percentile(&q.top_answerable, 10.0),
                eval::percentile(&q.top_answerable, 50.0),
                eval::percentile(&q.top_unanswerable, 50.0),
                eval::percentile(&q.top_unanswerable, 90.0),
                sep.0,
                sep.1,
                share(&q.conf_answerable, &|c| c >= LINE),
                share(&q.conf_unanswerable, &|c| c < LINE),
                share(&q.conf_answerable, &|c| c >= DEMO_LINE),
                share(&q.conf_unanswerable, &|c| c < DEMO_LINE),
            );
            if verbose {
                for (text, want, got) in &q.misses {
                    println!("    miss: {text:?} wants {want}, top 5: {got:?}");
                }
                if let Some(path) = std::env::var_os("KB_BENCH_SCORES") {
                    // One line per question: candidate, set, answerable, best score, confidence.
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .expect("scores file");
                    for (s, c2) in q.top_answerable.iter().zip(&q.conf_answerable) {
                        writeln!(f, "{}\t{set}\t1\t{s}\t{c2}", c.name).expect("write");
                    }
                    for (s, c2) in q.top_unanswerable.iter().zip(&q.conf_unanswerable) {
                        writeln!(f, "{}\t{set}\t0\t{s}\t{c2}", c.name).expect("write");
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    if std::env::var_os("KB_BENCH_QUALITY_ONLY").is_some() {
        return;
    }

    println!("\n## Ingest throughput (decode, chunk, embed, index, persist)");
    println!("| embedder | documents | chunks | seconds | chunks/s |");
    println!("|---|---|---|---|---|");
    let mut ingest_rows: Vec<(&str, Option<SharedEmbedder>, usize)> = vec![
        ("none (BM25 only)", None, 40),
        ("hash-384", Some(hash.clone()), 40),
    ];
    if let Some(m) = &minilm {
        ingest_rows.push(("all-MiniLM-L6-v2", Some(m.clone()), 5));
    }
    let files = eval_files();
    for (name, emb, copies) in ingest_rows {
        let dir = tmpdir("ingest");
        let kb =
            KnowledgeBase::open_dir(dir.clone(), "eval", emb, KbConfig::default()).expect("open");
        // `copies` renamed copies of the eval set (all new text), written
        // to a folder and ingested at once.
        let src = tmpdir("src");
        let mut docs = 0;
        for i in 0..copies {
            for (rel, bytes) in &files {
                let p = src.join(format!("copy{i}")).join(rel);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                std::fs::write(p, bytes).expect("write");
                docs += 1;
            }
        }
        let t = Instant::now();
        let report_chunks = kb.ingest_paths(&[&src]).expect("ingest").total_chunks;
        let _ = std::fs::remove_dir_all(&src);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "| {name} | {docs} | {report_chunks} | {secs:.2} | {:.0} |",
            report_chunks as f64 / secs
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Query embedding latency alone.
    for (name, e) in [
        ("hash-384", Some(hash.clone())),
        ("all-MiniLM-L6-v2", minilm.clone()),
    ] {
        let Some(e) = e else { continue };
        let mut lat = Vec::new();
        for q in &qs {
            let t = Instant::now();
            std::hint::black_box(e.embed(&[&q.text]).expect("embed"));
            lat.push(ms(t.elapsed()));
        }
        println!(
            "\nquery embedding {name}: p50 {:.2} ms, p99 {:.2} ms",
            pct(&mut lat, 50.0),
            pct(&mut lat, 99.0)
        );
    }

    // Scale: synthesised chunks around the eval set's real vectors and texts.
    let base_embedder = minilm.clone().unwrap_or_else(|| hash.clone());
    println!(
        "\n## Query latency at scale ({} vectors, 384 dims, k=5; exact scan vs HNSW (instant-distance, M=32, ef_construction=64, ef_search=64, built on 2 threads); BM25 over synthesised texts)",
        base_embedder.id()
    );
    let dir = tmpdir("scale");
    let kb = KnowledgeBase::open_dir(dir.clone(), "eval", None, KbConfig::default()).expect("open");
    kb.ingest_paths(&[eval::shop_dir()]).expect("ingest");
    let chunks = kb.chunks();
    let _ = std::fs::remove_dir_all(&dir);
    let texts: Vec<String> = chunks.iter().map(|c| c.index_text()).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let base = base_embedder.embed(&refs).expect("embed");
    let qtexts: Vec<&str> = qs.iter().map(|q| q.text.as_str()).collect();
    let qvecs = base_embedder.embed(&qtexts).expect("embed");
    let dim = base_embedder.dim();
    println!("| chunks | exact p50 ms | exact p99 ms | HNSW build s | HNSW p50 ms | HNSW p99 ms | HNSW recall@5 vs exact (ids / source chunks) | BM25 build s | BM25 p50 ms | BM25 p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words: Vec<&str> = texts.iter().flat_map(|t| t.split_whitespace()).collect();
    for n in [1_000usize, 10_000, 100_000] {
        if n > max_chunks {
            continue;
        }
        let vectors: Vec<Arc<[f32]>> = (0..n)
            .map(|i| {
                let b = &base[i % base.len()];
                let mut v: Vec<f32> = b.iter().map(|x| x + 0.03 * rng.normal()).collect();
                normalize(&mut v);
                Arc::from(v)
            })
            .collect();
        let exact = VectorIndex::new(dim, vectors.clone(), usize::MAX);
        let t = Instant::now();
        let ann = VectorIndex::new(dim, vectors, 0);
        let build = t.elapsed().as_secs_f64();
        let (mut le, mut la) = (Vec::new(), Vec::new());
        let mut agree = 0usize;
        let mut agree_src = 0usize;
        let rounds = if n >= 100_000 { 2 } else { 5 };
        for _ in 0..rounds {
            for q in &qvecs {
                let t = Instant::now();
                let e = std::hint::black_box(exact.exact(q, 5));
                le.push(ms(t.elapsed()));
                let t = Instant::now();
                let a = std::hint::black_box(ann.approximate(q, 5).expect("ann"));
                la.push(ms(t.elapsed()));
                agree += a.iter().filter(|h| e.iter().any(|x| x.0 == h.0)).count();
                // The same eval chunks behind the synthetic ones?
                let b = base.len();
                agree_src += a
                    .iter()
                    .filter(|h| e.iter().any(|x| x.0 % b == h.0 % b))
                    .count();
            }
        }
        // BM25 over n texts: the eval chunks with a third of their words
        // replaced by synthetic ones, so that texts differ.
        let synth: Vec<String> = (0..n)
            .map(|i| {
                texts[i % texts.len()]
                    .split_whitespace()
                    .map(|w| {
                        if rng.next() % 3 == 0 {
                            format!(
                                "{}{}",
                                words[(rng.next() % words.len() as u64) as usize],
                                rng.next() % 97
                            )
                        } else {
                            w.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let t = Instant::now();
        let bm = Bm25::build(synth.iter().map(String::as_str));
        let bm_build = t.elapsed().as_secs_f64();
        let mut lb = Vec::new();
        for _ in 0..rounds {
            for q in &qs {
                let t = Instant::now();
                std::hint::black_box(bm.search(&q.text, 5));
                lb.push(ms(t.elapsed()));
            }
        }
        println!(
            "| {n} | {:.3} | {:.3} | {:.1} | {:.3} | {:.3} | {:.3} / {:.3} | {:.2} | {:.3} | {:.3} |",
            pct(&mut le, 50.0),
            pct(&mut le, 99.0),
            build,
            pct(&mut la, 50.0),
            pct(&mut la, 99.0),
            agree as f64 / (5 * rounds * qvecs.len()) as f64,
            agree_src as f64 / (5 * rounds * qvecs.len()) as f64,
            bm_build,
            pct(&mut lb, 50.0),
            pct(&mut lb, 99.0),
        );
    }
}

fn walk_count(dir: &std::path::Path) -> usize {
    eval_files_in(dir).len()
}

fn eval_files() -> Vec<(String, Vec<u8>)> {
    eval_files_in(&eval::shop_dir())
}

fn eval_files_in(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}
