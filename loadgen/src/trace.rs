//! `--trace FILE`: production traffic replayed as it happened. Each line of
//! the JSONL file is one visitor message, `{"at_ms": N, "text": "...",
//! "session": "..."}`: sent `at_ms` after the start on the session named
//! (opened shortly before its first message, closed after its last), so the
//! arrival shape, the sessions' sizes and the texts are the recorded ones.
//! Figures count from each line's time, as in the open model.
//!
//! Parsing and the split over workers are here; the worker carries it out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// How long before its first message a trace session connects: visitors
/// open the page before they type.
pub const OPEN_AHEAD: Duration = Duration::from_secs(1);

/// A trace that cannot be replayed.
#[derive(Debug, Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line is not a trace entry.
    #[error("trace {path}, line {line}: {message}; each line is {{\"at_ms\": N, \"text\": \"...\", \"session\": \"...\"}}")]
    Line {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Nothing to replay.
    #[error("trace {0} has no entries")]
    Empty(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    at_ms: u64,
    text: String,
    session: String,
}

/// One message of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// When it is due, from the start of the run.
    pub at: Duration,
    /// Which session sends it (an index into [`Trace::sessions`]).
    pub session: u32,
    /// Which text (an index into [`Trace::texts`]).
    pub text: u32,
}

/// A whole trace, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Entries by due time (ties in file order).
    pub entries: Vec<Entry>,
    /// Session names, by index.
    pub sessions: Vec<String>,
    /// Distinct texts, by index.
    pub texts: Vec<String>,
}

impl Trace {
    /// Reads a trace file.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let body = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Trace::parse(&body, path)
    }

    /// Parses a trace's JSONL text (`path` names it in errors).
    pub fn parse(body: &str, path: &Path) -> Result<Trace, TraceError> {
        let mut sessions: Vec<String> = Vec::new();
        let mut by_name: HashMap<String, u32> = HashMap::new();
        let mut texts: Vec<String> = Vec::new();
        let mut by_text: HashMap<String, u32> = HashMap::new();
        let mut entries = Vec::new();
        for (i, line) in body.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |message: String| TraceError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let raw: RawEntry = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            if raw.text.trim().is_empty() {
                return Err(bad("the text is empty".into()));
            }
            if raw.session.is_empty() {
                return Err(bad("the session is empty".into()));
            }
            let next = sessions.len() as u32;
            let session = *by_name.entry(raw.session.clone()).or_insert_with(|| {
                sessions.push(raw.session);
                next
            });
            let next = texts.len() as u32;
            let text = *by_text.entry(raw.text.clone()).or_insert_with(|| {
                texts.push(raw.text);
                next
            });
            entries.push(Entry {
                at: Duration::from_millis(raw.at_ms),
                session,
                text,
            });
        }
        if entries.is_empty() {
            return Err(TraceError::Empty(path.to_path_buf()));
        }
        // Stable: messages of one instant keep their file order.
        entries.sort_by_key(|e| e.at);
        Ok(Trace {
            entries,
            sessions,
            texts,
        })
    }

    /// When the last message is due.
    pub fn span(&self) -> Duration {
        self.entries.last().map_or(Duration::ZERO, |e| e.at)
    }

    /// Whether session `s` belongs to share `part` of `parts` (shards and
    /// workers): each session goes whole to one of them.
    pub fn is_mine(session: u32, part: u64, parts: u64) -> bool {
        parts <= 1 || u64::from(session) % parts == part
    }

    /// Each session's first and last due time, by session index.
    pub fn session_spans(&self) -> Vec<(Duration, Duration)> {
        let mut spans = vec![(Duration::MAX, Duration::ZERO); self.sessions.len()];
        for e in &self.entries {
            let s = &mut spans[e.session as usize];
            s.0 = s.0.min(e.at);
            s.1 = s.1.max(e.at);
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"
{"at_ms": 1200, "text": "Do you ship to Canada?", "session": "b"}
{"at_ms": 0, "text": "Hi", "session": "a"}
{"at_ms": 1200, "text": "Hi", "session": "c"}

{"at_ms": 3000, "text": "Thanks", "session": "a"}
"#;

    #[test]
    fn a_trace_is_read_in_time_order_with_sessions_and_texts_shared() {
        let t = Trace::parse(TRACE, Path::new("t.jsonl")).unwrap();
        let at: Vec<u64> = t.entries.iter().map(|e| e.at.as_millis() as u64).collect();
        assert_eq!(at, [0, 1200, 1200, 3000]);
        assert_eq!(t.sessions, ["b", "a", "c"]);
        assert_eq!(t.texts.len(), 3, "\"Hi\" is kept once");
        // Ties keep file order: b's message before c's.
        assert_eq!((t.entries[1].session, t.entries[2].session), (0, 2));
        assert_eq!(t.span(), Duration::from_millis(3000));
        let spans = t.session_spans();
        assert_eq!(spans[1], (Duration::ZERO, Duration::from_millis(3000)));
        // Every session goes to exactly one of three workers.
        for s in 0..3 {
            assert_eq!((0..3).filter(|&p| Trace::is_mine(s, p, 3)).count(), 1);
        }
    }

    #[test]
    fn the_shipped_sample_trace_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/trace-sample.jsonl");
        let t = Trace::load(&path).unwrap();
        assert_eq!(t.sessions.len(), 8);
        assert!(t.entries.len() >= 10);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        for (body, want) in [
            ("{\"at_ms\": 1, \"text\": \"a\"}\n", "line 1"),
            (
                "{\"at_ms\": 1, \"text\": \"a\", \"session\": \"s\"}\nnot json\n",
                "line 2",
            ),
            (
                "{\"at_ms\": -4, \"text\": \"a\", \"session\": \"s\"}\n",
                "line 1",
            ),
            (
                "{\"at_ms\": 1, \"text\": \" \", \"session\": \"s\"}\n",
                "empty",
            ),
        ] {
            let e = Trace::parse(body, Path::new("t.jsonl"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("t.jsonl"), "{body}: {e}");
        }
        assert!(matches!(
            Trace::parse("\n\n", Path::new("t.jsonl")),
            Err(TraceError::Empty(_))
        ));
    }
}
