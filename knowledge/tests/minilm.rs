//! all-MiniLM-L6-v2 through candle. Needs the model files (from
//! `knowledge/fetch-model.sh`, found through `LC_MODEL_DIR` or the default
//! directory); without them each test prints why and passes.

mod common;

use common::eval;
use knowledge::embed::{default_model_dir, Embedder, MiniLm};
use knowledge::index::dot;
use knowledge::{KbConfig, KnowledgeBase, Mode};
use std::io::Write;
use std::sync::{Arc, OnceLock};

/// Says why a test is skipped, on the real stderr (libtest hides a passing
/// test's `eprintln!`).
fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "minilm tests: {why}");
}

/// The model, or `None` (with the reason printed) when its files are absent
/// or this is a debug build (unoptimised candle takes half a minute per test;
/// `make test` runs the release build).
fn model() -> Option<&'static MiniLm> {
    static MODEL: OnceLock<Option<MiniLm>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            if cfg!(debug_assertions) {
                skip("skipped in a debug build (run with --release)");
                return None;
            }
            let dir = default_model_dir();
            match MiniLm::load(&dir) {
                Ok(m) => Some(m),
                Err(e) => {
                    skip(&format!(
                        "skipped: {e} (set LC_MODEL_DIR or run knowledge/fetch-model.sh)"
                    ));
                    None
                }
            }
        })
        .as_ref()
}

#[test]
fn missing_files_are_named() {
    let dir = std::env::temp_dir().join(format!("kb-no-model-{}", std::process::id()));
    let err = MiniLm::load(&dir).unwrap_err();
    assert_eq!(
        err,
        knowledge::EmbedError::MissingFile(dir.join("config.json"))
    );
    assert!(!MiniLm::present(&dir));
}

/// The similarities sentence-transformers prints for this model in its
/// README example (0.6660, 0.1046, 0.1411).
#[test]
fn matches_sentence_transformers() {
    let Some(m) = model() else { return };
    assert_eq!(m.dim(), 384);
    let v = m
        .embed(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ])
        .unwrap();
    for x in &v {
        assert!((dot(x, x) - 1.0).abs() < 1e-4, "unit length");
    }
    let (a, b, c) = (dot(&v[0], &v[1]), dot(&v[0], &v[2]), dot(&v[1], &v[2]));
    assert!((a - 0.6660).abs() < 0.002, "{a}");
    assert!((b - 0.1046).abs() < 0.002, "{b}");
    assert!((c - 0.1411).abs() < 0.002, "{c}");
    // Batched with padding, alone, or in another order: the same vectors.
    let alone = m.embed(&["He drove to the stadium."]).unwrap();
    assert!(dot(&alone[0], &v[2]) > 0.9999);
    // Over-long input is cut, not an error.
    let long = "word ".repeat(2000);
    assert_eq!(m.embed(&[&long, ""]).unwrap().len(), 2);
}

/// Hybrid MiniLM + BM25 on the eval set.
#[test]
fn hybrid_quality_on_the_eval_set() {
    let Some(m) = model() else { return };
    let data = std::env::temp_dir().join(format!("kb-minilm-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let emb: Arc<dyn Embedder> = Arc::new(MiniLm::load(&default_model_dir()).unwrap());
    let _ = m;
    let kb = KnowledgeBase::open(&data, "eval", Some(emb), KbConfig::default()).unwrap();
    assert_eq!(kb.mode(), Mode::Hybrid);
    kb.ingest_paths(&[eval::shop_dir()]).unwrap();
    let q = eval::measure(&kb, &eval::questions());
    let _ = std::fs::remove_dir_all(&data);
    // Measured 0.989 / 0.919 (README).
    assert!(
        q.recall5 >= 0.95,
        "recall@5 {} misses {:#?}",
        q.recall5,
        q.misses
    );
    assert!(q.mrr >= 0.85, "MRR {}", q.mrr);
    let unanswered = q.conf_unanswerable.iter().filter(|&&c| c < 0.5).count();
    assert!(
        unanswered * 10 >= q.conf_unanswerable.len() * 8,
        "{:?}",
        q.conf_unanswerable
    );
}

/// Issue 12: with MiniLM, the demo's questions get the sentences that
/// answer them, and an off-topic one falls below the demo site's line.
#[test]
fn demo_questions_get_the_answering_sentences() {
    let Some(_) = model() else { return };
    let data = std::env::temp_dir().join(format!("kb-minilm-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let emb: Arc<dyn Embedder> = Arc::new(MiniLm::load(&default_model_dir()).unwrap());
    let kb = KnowledgeBase::open(&data, "demo", Some(emb), KbConfig::default()).unwrap();
    kb.ingest_paths(&[eval::shop_dir()]).unwrap();
    for (previous, question, want) in eval::DEMO_QUESTIONS {
        let (answer, conf) = eval::demo_answer(&kb, *previous, question);
        assert!(answer.contains(want), "{question}: {answer}");
        assert!(conf >= 0.5, "{question}: {conf}");
    }
    let (_, conf) = eval::demo_answer(&kb, None, "who painted the Mona Lisa?");
    let _ = std::fs::remove_dir_all(&data);
    // Below the demo site's human_below_confidence (0.35).
    assert!(conf < 0.35, "{conf}");
}
