//! The knowledge base end to end, on disk: ingest reports, re-ingest,
//! persistence and reload, search and confidence. No model files needed.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use common::eval;
use knowledge::{
    DocumentError, EmbedError, Embedder, FileOutcome, HashEmbedder, KbConfig, KbError,
    KnowledgeBase, Mode,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "kb-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Hash embedder that counts the texts it embeds and can be made to fail.
struct Counting {
    inner: HashEmbedder,
    id: String,
    texts: AtomicUsize,
    fail: AtomicBool,
}

impl Counting {
    fn new(id: &str) -> Arc<Counting> {
        Arc::new(Counting {
            inner: HashEmbedder::new(64),
            id: id.into(),
            texts: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        })
    }
}

impl Embedder for Counting {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        64
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(EmbedError::Remote("pool down".into()));
        }
        self.texts.fetch_add(texts.len(), Ordering::Relaxed);
        self.inner.embed(texts)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn outcome<'a>(r: &'a knowledge::IngestReport, name: &str) -> &'a FileOutcome {
    &r.files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not in {r}"))
        .outcome
}

#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<KnowledgeBase>();
    check::<knowledge::MiniLm>();
    check::<HashEmbedder>();
}

#[test]
fn ingest_folder_reports_each_file() {
    let data = TempDir::new("data");
    let src = TempDir::new("src");
    copy_dir(&eval::shop_dir(), &src.0);
    std::fs::write(src.0.join("help/logo.md"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::write(src.0.join("latin1.txt"), b"Caf\xe9 opening hours").unwrap();
    std::fs::write(src.0.join("manual.pdf"), b"%PDF-1.4").unwrap();
    std::fs::write(src.0.join("huge.txt"), vec![b'a'; 5000]).unwrap();
    std::fs::create_dir_all(src.0.join(".git")).unwrap();
    std::fs::write(src.0.join(".git/config.txt"), b"hidden").unwrap();
    std::fs::write(src.0.join(".draft.md"), b"hidden").unwrap();
    let config = KbConfig {
        limits: knowledge::DocLimits { max_bytes: 4096 },
        ..KbConfig::default()
    };
    let kb = KnowledgeBase::open(&data.0, "shop", None, config).unwrap();
    assert_eq!(kb.dir(), data.0.join("kb/shop"));
    assert_eq!(kb.mode(), Mode::Lexical);
    let r = kb.ingest_paths(&[&src.0]).unwrap();
    assert_eq!(r.added(), 14, "{r}");
    let codes: Vec<(&str, &str)> = r.rejected().iter().map(|e| (e.name(), e.code())).collect();
    assert_eq!(
        codes,
        [
            ("help/logo.md", "binary"),
            ("huge.txt", "too_large"),
            ("latin1.txt", "bad_encoding"),
            ("manual.pdf", "unsupported"),
        ]
    );
    assert!(!r
        .files
        .iter()
        .any(|f| f.name.contains("draft") || f.name.contains(".git")));
    assert_eq!(r.total_chunks, kb.len());
    assert!(kb.len() > 40, "{}", kb.len());
    let text = r.to_string();
    assert!(text.contains("added      help/shipping.md ("), "{text}");
    assert!(
        text.contains("rejected   latin1.txt: not UTF-8 text"),
        "{text}"
    );
    assert!(
        text.ends_with("14 added, 0 replaced, 0 unchanged, 4 rejected; ")
            || text.contains("14 added, 0 replaced, 0 unchanged, 4 rejected")
    );
    let json = serde_json::to_value(&r).unwrap();
    let shipping = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "help/shipping.md")
        .unwrap();
    assert_eq!(shipping["status"], "added");
    let bad = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "manual.pdf")
        .unwrap();
    assert_eq!(bad["error"]["code"], "unsupported");

    // A missing path is reported by name, and a file given directly is named
    // by its file name.
    let r = kb
        .ingest_paths(&[src.0.join("nope.md"), src.0.join("help/returns.md")])
        .unwrap();
    assert!(matches!(
        r.files[0].outcome,
        FileOutcome::Rejected(DocumentError::Io { .. })
    ));
    assert_eq!(r.files[1].name, "returns.md");
    assert!(matches!(r.files[1].outcome, FileOutcome::Added { .. }));

    // Sources: title, URL (front matter, else the relative path), heading path.
    let hits = kb.search("how long does shipping take to Canada?", 5);
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0].doc, "help/shipping.md");
    assert_eq!(hits[0].title, "Shipping and delivery");
    assert_eq!(hits[0].url, "https://fernhill.example/help/shipping");
    assert_eq!(
        hits[0].heading_path,
        ["Shipping and delivery", "Shipping to Canada"]
    );
    assert!(
        hits[0].text.contains("5 to 8 business days"),
        "{}",
        hits[0].text
    );
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let care = kb.search("how do I wash a down jacket", 1);
    assert_eq!(care[0].url, "pages/product-care.html");
    assert_eq!(care[0].title, "Caring for your gear");
    let c = kb.confidence(&hits);
    assert!(c > 0.5 && c <= 1.0, "{c}");
    let off = kb.search("what is the capital of Australia", 5);
    // Lexically, half of this question ("Australia") is on the shipping
    // page: below the good match, but BM25 cannot tell it is off-topic
    // (MiniLM can: tests/minilm.rs).
    assert!(kb.confidence(&off) < c, "{}", kb.confidence(&off));
    let off = kb.search("who painted the Mona Lisa?", 5);
    assert!(kb.confidence(&off) < 0.5, "{}", kb.confidence(&off));
    assert_eq!(kb.confidence(&[]), 0.0);
}

#[test]
fn reingest_skips_unchanged_and_replaces_changed() {
    let data = TempDir::new("data");
    let src = TempDir::new("src");
    copy_dir(&eval::shop_dir(), &src.0);
    let emb = Counting::new("counting-64");
    let kb = KnowledgeBase::open(
        &data.0,
        "shop",
        Some(emb.clone() as Arc<dyn Embedder>),
        KbConfig::default(),
    )
    .unwrap();
    assert_eq!(kb.mode(), Mode::Hybrid);
    let first = kb.ingest_paths(&[&src.0]).unwrap();
    assert_eq!(first.embedded, kb.len());
    let before = kb.chunks();

    // Nothing changed: all skipped, nothing embedded or written.
    let embedded = emb.texts.load(Ordering::Relaxed);
    let again = kb.ingest_paths(&[&src.0]).unwrap();
    assert_eq!(again.unchanged(), 14, "{again}");
    assert_eq!(again.embedded, 0);
    assert_eq!(emb.texts.load(Ordering::Relaxed), embedded);
    assert_eq!(kb.chunks(), before);

    // One section of one document changes.
    let path = src.0.join("help/shipping.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = text.replace(
        "usually arrive in 5 to 8 business days",
        "usually arrive in 4 to 6 business days",
    );
    assert_ne!(text, changed);
    std::fs::write(&path, changed).unwrap();
    let r = kb.ingest_paths(&[&src.0]).unwrap();
    assert_eq!(r.unchanged(), 13);
    let FileOutcome::Replaced { chunks, previous } = *outcome(&r, "help/shipping.md") else {
        panic!("{r}")
    };
    assert_eq!(chunks, previous);
    // Only the changed chunk was embedded; the others kept their vectors.
    assert_eq!(r.embedded, 1, "{r:?}");
    assert_eq!(r.reused, chunks - 1);
    let after = kb.chunks();
    let ids = |v: &[knowledge::Chunk], doc: &str| -> Vec<String> {
        v.iter()
            .filter(|c| c.doc == doc)
            .map(|c| c.id.clone())
            .collect()
    };
    let (old, new) = (
        ids(&before, "help/shipping.md"),
        ids(&after, "help/shipping.md"),
    );
    assert_eq!(old.iter().filter(|id| new.contains(id)).count(), chunks - 1);
    assert_eq!(
        ids(&before, "help/returns.md"),
        ids(&after, "help/returns.md")
    );
    // The old text is gone, the new one is found.
    assert!(!after
        .iter()
        .any(|c| c.text.contains("5 to 8 business days")));
    let hits = kb.search("how long does delivery to Canada take", 1);
    assert!(
        hits[0].text.contains("4 to 6 business days"),
        "{}",
        hits[0].text
    );

    // Removing a document removes its chunks.
    assert!(kb.remove_document("help/shipping.md").unwrap());
    assert!(!kb.remove_document("help/shipping.md").unwrap());
    assert!(kb.chunks().iter().all(|c| c.doc != "help/shipping.md"));
    assert_eq!(kb.documents().len(), 13);
}

#[test]
fn reload_from_disk() {
    let data = TempDir::new("data");
    let emb = Counting::new("counting-64");
    let dyn_emb = || Some(emb.clone() as Arc<dyn Embedder>);
    let (chunks, hits) = {
        let kb = KnowledgeBase::open(&data.0, "demo", dyn_emb(), KbConfig::default()).unwrap();
        kb.ingest_paths(&[eval::shop_dir()]).unwrap();
        (
            kb.chunks(),
            kb.search("can I pay with klarna in installments", 5),
        )
    };
    let embedded = emb.texts.load(Ordering::Relaxed);
    let kb = KnowledgeBase::open(&data.0, "demo", dyn_emb(), KbConfig::default()).unwrap();
    assert_eq!(
        emb.texts.load(Ordering::Relaxed),
        embedded,
        "vectors were loaded, not recomputed"
    );
    assert_eq!(kb.chunks(), chunks);
    assert_eq!(kb.documents().len(), 14);
    assert_eq!(kb.search("can I pay with klarna in installments", 5), hits);
    assert_eq!(
        kb.ingest_paths(&[eval::shop_dir()]).unwrap().unchanged(),
        14
    );
    drop(kb);

    // Another embedder: vectors recomputed at open, chunks kept.
    let other = Counting::new("other-64");
    let kb = KnowledgeBase::open(
        &data.0,
        "demo",
        Some(other.clone() as Arc<dyn Embedder>),
        KbConfig::default(),
    )
    .unwrap();
    assert_eq!(other.texts.load(Ordering::Relaxed), chunks.len());
    drop(kb);

    // A damaged vector file is ignored and recomputed.
    let vfile = data.0.join("kb/demo/vectors-counting-64.bin");
    let mut bytes = std::fs::read(&vfile).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&vfile, bytes).unwrap();
    let before = emb.texts.load(Ordering::Relaxed);
    let kb = KnowledgeBase::open(&data.0, "demo", dyn_emb(), KbConfig::default()).unwrap();
    assert_eq!(emb.texts.load(Ordering::Relaxed) - before, chunks.len());
    assert_eq!(kb.search("can I pay with klarna in installments", 5), hits);
    drop(kb);

    // Without an embedder: lexical over the same chunks.
    let kb = KnowledgeBase::open(&data.0, "demo", None, KbConfig::default()).unwrap();
    assert_eq!(kb.mode(), Mode::Lexical);
    assert_eq!(kb.len(), chunks.len());
    assert_eq!(
        kb.search("klarna installments", 1)[0].doc,
        "pages/payment.html"
    );
    drop(kb);

    // A damaged chunks.json is an error, not an empty knowledge base.
    std::fs::write(data.0.join("kb/demo/chunks.json"), b"{not json").unwrap();
    let err = KnowledgeBase::open(&data.0, "demo", None, KbConfig::default()).unwrap_err();
    assert!(matches!(err, KbError::Corrupt { .. }), "{err}");
}

#[test]
fn upload_one_document() {
    let data = TempDir::new("data");
    let kb = KnowledgeBase::open(&data.0, "demo", None, KbConfig::default()).unwrap();
    let html = b"<html><head><title>Opening hours</title></head><body><h1>Hours</h1>\
        <p>The Columbus store opens at 10 am every day.</p><h2>Holidays</h2><p>Closed on December 25.</p></body></html>";
    let r = kb.ingest_document("pages/hours.html", html).unwrap();
    assert_eq!(
        *outcome(&r, "pages/hours.html"),
        FileOutcome::Added { chunks: 2 }
    );
    let hit = &kb.search("when are you closed for christmas", 1)[0];
    assert_eq!(hit.title, "Opening hours");
    assert_eq!(hit.heading_path, ["Hours", "Holidays"]);
    assert_eq!(hit.url, "pages/hours.html");
    let r = kb.ingest_document("pages/hours.html", html).unwrap();
    assert_eq!(r.unchanged(), 1);
    let r = kb.ingest_document("notes.txt", b"bad \xff byte").unwrap();
    assert_eq!(r.rejected()[0].code(), "bad_encoding");
    let r = kb.ingest_document("../../etc/passwd", b"x").unwrap();
    assert_eq!(r.rejected()[0].code(), "bad_name");
    assert_eq!(kb.documents().len(), 1);
    assert!(matches!(
        KnowledgeBase::open(&data.0, "../x", None, KbConfig::default()),
        Err(KbError::BadSite(_))
    ));
}

#[test]
fn embedder_failure_changes_nothing() {
    let data = TempDir::new("data");
    let emb = Counting::new("counting-64");
    let kb = KnowledgeBase::open(
        &data.0,
        "demo",
        Some(emb.clone() as Arc<dyn Embedder>),
        KbConfig::default(),
    )
    .unwrap();
    kb.ingest_document("a.md", b"# Returns\n\nReturns are free within 60 days.")
        .unwrap();
    emb.fail.store(true, Ordering::Relaxed);
    let err = kb
        .ingest_document("b.md", b"# Shipping\n\nShipping takes 3 days.")
        .unwrap_err();
    assert!(
        matches!(err, KbError::Embed(EmbedError::Remote(_))),
        "{err}"
    );
    assert_eq!(kb.documents().len(), 1);
    // Search falls back to the lexical index when the query cannot be embedded.
    let hits = kb.search("are returns free", 3);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].doc, "a.md");
}

#[test]
fn lexical_quality_on_the_eval_set() {
    let data = TempDir::new("data");
    let kb = KnowledgeBase::open(&data.0, "eval", None, KbConfig::default()).unwrap();
    kb.ingest_paths(&[eval::shop_dir()]).unwrap();
    let qs = eval::questions();
    assert!(qs.iter().filter(|q| !q.doc.is_empty()).count() >= 60);
    let q = eval::measure(&kb, &qs);
    // Measured 0.935 / 0.811 (README); the bar leaves room for tuning.
    assert!(
        q.recall5 >= 0.9,
        "recall@5 {} misses {:#?}",
        q.recall5,
        q.misses
    );
    assert!(q.mrr >= 0.75, "MRR {}", q.mrr);
}

#[test]
fn approximate_index_agrees_on_the_eval_set() {
    let data = TempDir::new("data");
    let emb = Counting::new("counting-64");
    let kb = KnowledgeBase::open(
        &data.0,
        "eval",
        Some(emb as Arc<dyn Embedder>),
        KbConfig::default(),
    )
    .unwrap();
    kb.ingest_paths(&[eval::shop_dir()]).unwrap();
    assert!(!kb.ann_ready(), "small sites stay exact");
    let qs = eval::questions();
    let exact: Vec<_> = qs.iter().map(|q| kb.search(&q.text, 5)).collect();
    kb.build_ann_now();
    assert!(kb.ann_ready());
    let approx: Vec<_> = qs.iter().map(|q| kb.search(&q.text, 5)).collect();
    // Some 80 chunks, ef_search 64: the graph finds the same hits.
    let same = exact.iter().zip(&approx).filter(|(a, b)| a == b).count();
    assert!(same * 10 >= qs.len() * 9, "{same} of {}", qs.len());
}

/// Issue 12, lexically (no model): the demo's questions get the sentences
/// that answer them, and an off-topic one has no confidence.
#[test]
fn demo_questions_get_the_answering_sentences_lexically() {
    let data = TempDir::new("data");
    let kb = KnowledgeBase::open(&data.0, "demo", None, KbConfig::default()).unwrap();
    kb.ingest_paths(&[eval::shop_dir()]).unwrap();
    for (previous, question, want) in eval::DEMO_QUESTIONS {
        let (answer, _) = eval::demo_answer(&kb, *previous, question);
        assert!(answer.contains(want), "{question}: {answer}");
    }
    let (_, conf) = eval::demo_answer(&kb, None, "who painted the Mona Lisa?");
    assert!(conf < 0.35, "{conf}");
}
