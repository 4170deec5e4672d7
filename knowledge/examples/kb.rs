//! A small command line over the library, for trying a knowledge base by
//! hand (the gateway's `gateway kb add` is the real one):
//!
//! ```text
//! cargo run -p knowledge --release --example kb -- DATA_DIR SITE add PATH...
//! cargo run -p knowledge --release --example kb -- DATA_DIR SITE search QUESTION...
//! ```
//!
//! MiniLM is used when its files are found (`LC_MODEL_DIR` or the default
//! directory), else the lexical index. `search` prints the hits, the
//! confidence and the `Sources:` block the way the gateway's prompt builder
//! writes it for the model.

use knowledge::embed::{default_model_dir, Embedder, MiniLm};
use knowledge::{KbConfig, KnowledgeBase};
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(data), Some(site), Some(cmd)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: kb DATA_DIR SITE (add PATH... | search QUESTION...)");
        return ExitCode::from(2);
    };
    let embedder: Option<Arc<dyn Embedder>> = match MiniLm::load(&default_model_dir()) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            eprintln!("no embedding model ({e}); lexical retrieval only");
            None
        }
    };
    let kb = match KnowledgeBase::open(data.as_ref(), site, embedder, KbConfig::default()) {
        Ok(kb) => kb,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rest = &args[3..];
    match cmd.as_str() {
        "add" => match kb.ingest_paths(rest) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        "search" => {
            let question = rest.join(" ");
            let hits = kb.search(&question, 5);
            for (i, h) in hits.iter().enumerate() {
                println!(
                    "{}. {:.3} {} [{}] {} > {}",
                    i + 1,
                    h.score,
                    h.chunk_id,
                    h.url,
                    h.title,
                    h.heading_path.join(" > ")
                );
            }
            println!(
                "confidence {:.2} ({} mode)\n",
                kb.confidence(&hits),
                kb.mode().as_str()
            );
            print!("{}", knowledge::sources_block(&hits));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("unknown command {cmd:?}: add or search");
            ExitCode::from(2)
        }
    }
}
