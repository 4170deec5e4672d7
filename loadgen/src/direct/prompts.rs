//! What direct mode asks the server: prompts and how many tokens each should
//! get back. A JSONL file (`--prompts`, one `{"prompt": "...",
//! "output_tokens": N}` a line), synthetic prompts drawn from token-count
//! distributions (`--input-tokens`, `--output-tokens`), or the scenario's
//! texts. Sans-IO apart from reading the file; every draw is seeded.
//!
//! Token counts are loadgen's estimate, [`inference_client::count_tokens`]
//! (one token per four bytes): a synthetic prompt of `N` tokens is `N` random
//! three-letter words joined by single spaces, `4N - 1` bytes, which the
//! estimate counts as exactly `N` and a BPE tokenizer as about `N` (a common
//! short word with its leading space is one token in Llama-3 and Qwen-2 class
//! vocabularies). Random words keep prompts distinct, so a server's prefix
//! cache does not make later requests cheaper than the first.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Output tokens asked for when nothing says how many.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 128;

/// A distribution of token counts: `N`, `normal:MEAN,STDDEV` or
/// `uniform:MIN..MAX`. Draws are rounded and clamped at 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenDist {
    /// Always `N`.
    Constant(u32),
    /// Normal with this mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
    },
    /// Uniform over `min..=max`.
    Uniform {
        /// Smallest.
        min: u32,
        /// Largest.
        max: u32,
    },
}

/// A token-count distribution that could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("'{0}' is not a token count distribution: write N, normal:MEAN,STDDEV or uniform:MIN..MAX (such as 128, normal:500,50 or uniform:100..300)")]
pub struct DistError(pub String);

impl FromStr for TokenDist {
    type Err = DistError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DistError(s.to_string());
        let t = s.trim();
        if let Some(rest) = t.strip_prefix("normal:") {
            let (m, sd) = rest.split_once(',').ok_or_else(err)?;
            let mean: f64 = m.trim().parse().map_err(|_| err())?;
            let stddev: f64 = sd.trim().parse().map_err(|_| err())?;
            if !(mean.is_finite() && mean >= 1.0 && stddev.is_finite() && stddev >= 0.0) {
                return Err(err());
            }
            return Ok(TokenDist::Normal { mean, stddev });
        }
        if let Some(rest) = t.strip_prefix("uniform:") {
            let (a, b) = rest.split_once("..").ok_or_else(err)?;
            let min: u32 = a.trim().parse().map_err(|_| err())?;
            let max: u32 = b.trim().parse().map_err(|_| err())?;
            if min > max || max == 0 {
                return Err(err());
            }
            return Ok(TokenDist::Uniform { min, max });
        }
        match t.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(TokenDist::Constant(n)),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for TokenDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenDist::Constant(n) => write!(f, "{n}"),
            TokenDist::Normal { mean, stddev } => write!(f, "normal:{mean},{stddev}"),
            TokenDist::Uniform { min, max } => write!(f, "uniform:{min}..{max}"),
        }
    }
}

impl Serialize for TokenDist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // TOML may give a bare number for the constant form.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string().parse(),
            Raw::S(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl TokenDist {
    /// One draw, at least 1.
    pub fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> u32 {
        let v = match *self {
            TokenDist::Constant(n) => return n.max(1),
            TokenDist::Normal { mean, stddev } => match Normal::new(mean, stddev) {
                Ok(d) => d.sample(rng),
                // Parsing checked the parameters; keep the mean if they slip.
                Err(_) => mean,
            },
            TokenDist::Uniform { min, max } => return rng.random_range(min..=max).max(1),
        };
        v.round().clamp(1.0, f64::from(u32::MAX)) as u32
    }

    /// The mean of the distribution (before clamping).
    pub fn mean(&self) -> f64 {
        match *self {
            TokenDist::Constant(n) => f64::from(n),
            TokenDist::Normal { mean, .. } => mean,
            TokenDist::Uniform { min, max } => (f64::from(min) + f64::from(max)) / 2.0,
        }
    }
}

/// One prompt and the tokens its answer should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The text sent (the user message, or the completions prompt).
    pub text: String,
    /// `max_tokens` of the request.
    pub output_tokens: u32,
}

/// A prompts file that cannot be used.
#[derive(Debug, Error)]
pub enum PromptsError {
    /// The file could not be read.
    #[error("cannot read prompts file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line is not a prompt.
    #[error("prompts file {path} line {line}: {message}; each line must be {{\"prompt\": \"...\", \"output_tokens\": N}} (output_tokens optional)")]
    Line {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// No line holds a prompt.
    #[error("prompts file {0} holds no prompt")]
    Empty(PathBuf),
}

#[derive(Deserialize)]
struct Line {
    prompt: String,
    #[serde(default)]
    output_tokens: Option<u32>,
}

/// Reads a JSONL prompts file; a line without `output_tokens` draws it from
/// `output` (or takes [`DEFAULT_OUTPUT_TOKENS`]).
pub fn load_jsonl(
    path: &Path,
    output: Option<&TokenDist>,
    seed: u64,
) -> Result<Vec<Prompt>, PromptsError> {
    let body = std::fs::read_to_string(path).map_err(|source| PromptsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_jsonl(&body, path, output, seed)
}

/// Parses the text of a JSONL prompts file (`path` names it in errors).
pub fn parse_jsonl(
    body: &str,
    path: &Path,
    output: Option<&TokenDist>,
    seed: u64,
) -> Result<Vec<Prompt>, PromptsError> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x0070_726f_6d70_7473);
    let mut out = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| PromptsError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let l: Line = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if l.prompt.trim().is_empty() {
            return Err(bad("the prompt is empty".into()));
        }
        let output_tokens = match l.output_tokens {
            Some(0) => return Err(bad("output_tokens must be at least 1".into())),
            Some(n) => n,
            None => output.map_or(DEFAULT_OUTPUT_TOKENS, |d| d.sample(&mut rng)),
        };
        out.push(Prompt {
            text: l.prompt,
            output_tokens,
        });
    }
    if out.is_empty() {
        return Err(PromptsError::Empty(path.to_path_buf()));
    }
    Ok(out)
}

/// Texts as prompts, each asking for a draw of `output` (or
/// [`DEFAULT_OUTPUT_TOKENS`]).
pub fn from_texts(texts: &[String], output: Option<&TokenDist>, seed: u64) -> Vec<Prompt> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x0074_6578_7473);
    texts
        .iter()
        .map(|t| Prompt {
            text: t.clone(),
            output_tokens: output.map_or(DEFAULT_OUTPUT_TOKENS, |d| d.sample(&mut rng)),
        })
        .collect()
}

/// Three-letter words: with their separating space, four bytes each, which
/// is one token by loadgen's estimate and about one in a BPE vocabulary.
const WORDS: [&str; 64] = [
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
    "one", "our", "out", "day", "get", "has", "him", "his", "how", "man", "new", "now", "old",
    "see", "two", "way", "who", "boy", "did", "its", "let", "put", "say", "she", "too", "use",
    "box", "car", "cat", "dog", "red", "sun", "sea", "sky", "top", "low", "big", "end", "far",
    "few", "got", "run", "set", "sit", "ten", "yes", "yet", "ask", "own", "map", "key",
];

/// A text of random words whose [`inference_client::count_tokens`] estimate
/// is exactly `tokens` (at least 1).
pub fn words_for_tokens(tokens: u32, rng: &mut Xoshiro256PlusPlus) -> String {
    let n = tokens.max(1) as usize;
    let mut s = String::with_capacity(4 * n);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

/// Synthetic request number `k` of a run seeded `seed`: its own prompt of a
/// draw of `input` tokens asking for a draw of `output`. Each request is
/// drawn from its own seed, so any worker can make any request, and the same
/// seed makes the same run.
pub fn synthetic(input: &TokenDist, output: &TokenDist, seed: u64, k: u64) -> Prompt {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(
        seed ^ k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let input_tokens = input.sample(&mut rng);
    let output_tokens = output.sample(&mut rng);
    Prompt {
        text: words_for_tokens(input_tokens, &mut rng),
        output_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_client::count_tokens;

    #[test]
    fn distributions_parse_print_and_refuse() {
        for s in ["128", "normal:500,50", "uniform:100..300", "normal:1,0"] {
            let d: TokenDist = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(" 7 ".parse::<TokenDist>(), Ok(TokenDist::Constant(7)));
        for bad in [
            "0",
            "-3",
            "x",
            "normal:500",
            "normal:0,1",
            "normal:5,-1",
            "uniform:5..3",
            "uniform:0..0",
            "uniform:1-3",
            "poisson:3",
        ] {
            let e = bad.parse::<TokenDist>().unwrap_err().to_string();
            assert!(e.contains("normal:MEAN,STDDEV"), "{bad}: {e}");
        }
        let v: TokenDist = serde_json::from_str("64").unwrap();
        assert_eq!(v, TokenDist::Constant(64));
        let v: TokenDist = serde_json::from_str("\"uniform:1..2\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"uniform:1..2\"");
    }

    #[test]
    fn draws_are_seeded_and_clamped_at_one() {
        let mut a = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut b = Xoshiro256PlusPlus::seed_from_u64(1);
        let wide = TokenDist::Normal {
            mean: 2.0,
            stddev: 50.0,
        };
        let xs: Vec<u32> = (0..500).map(|_| wide.sample(&mut a)).collect();
        let ys: Vec<u32> = (0..500).map(|_| wide.sample(&mut b)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x >= 1));
        assert!(
            xs.iter().filter(|&&x| x == 1).count() > 100,
            "half the draws clamp"
        );
        let u = TokenDist::Uniform { min: 0, max: 3 };
        let us: Vec<u32> = (0..200).map(|_| u.sample(&mut a)).collect();
        assert!(us.iter().all(|&x| (1..=3).contains(&x)));
        let n = TokenDist::Normal {
            mean: 500.0,
            stddev: 50.0,
        };
        let mean = (0..2000).map(|_| f64::from(n.sample(&mut a))).sum::<f64>() / 2000.0;
        assert!((mean - 500.0).abs() < 5.0, "{mean}");
        assert_eq!(TokenDist::Constant(9).sample(&mut a), 9);
    }

    #[test]
    fn synthetic_prompts_hit_their_token_count_exactly() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for n in 1..300 {
            let s = words_for_tokens(n, &mut rng);
            assert_eq!(count_tokens(&s), n, "{s:?}");
            assert_eq!(s.split(' ').count(), n as usize);
        }
        let input = TokenDist::Uniform { min: 10, max: 20 };
        let output = TokenDist::Constant(5);
        let p = synthetic(&input, &output, 7, 0);
        assert_eq!(
            p,
            synthetic(&input, &output, 7, 0),
            "same seed, same request"
        );
        assert_ne!(p.text, synthetic(&input, &output, 7, 1).text);
        assert!((10..=20).contains(&count_tokens(&p.text)));
        assert_eq!(p.output_tokens, 5);
    }

    #[test]
    fn jsonl_lines_are_read_and_bad_ones_named() {
        let path = Path::new("p.jsonl");
        let body = "{\"prompt\": \"hi there\", \"output_tokens\": 3}\n\n{\"prompt\": \"second\", \"source\": \"x\"}\n";
        let ps = parse_jsonl(body, path, None, 0).unwrap();
        assert_eq!(
            ps,
            [
                Prompt {
                    text: "hi there".into(),
                    output_tokens: 3
                },
                Prompt {
                    text: "second".into(),
                    output_tokens: DEFAULT_OUTPUT_TOKENS
                },
            ]
        );
        let drawn = parse_jsonl(body, path, Some(&TokenDist::Constant(9)), 0).unwrap();
        assert_eq!(drawn[1].output_tokens, 9);
        for (text, line, what) in [
            ("{\"prompt\": \"a\"}\nnot json\n", 2, "expected"),
            ("\n\n{\"output_tokens\": 3}\n", 3, "prompt"),
            ("{\"prompt\": \"  \"}\n", 1, "empty"),
            (
                "{\"prompt\": \"a\", \"output_tokens\": 0}\n",
                1,
                "at least 1",
            ),
            ("{\"prompt\": 5}\n", 1, "invalid type"),
        ] {
            let e = parse_jsonl(text, path, None, 0).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, PromptsError::Line { line: l, .. } if l == line),
                "{text:?}: {msg}"
            );
            assert!(msg.contains("p.jsonl line") && msg.contains(what), "{msg}");
        }
        assert!(matches!(
            parse_jsonl("\n \n", path, None, 0),
            Err(PromptsError::Empty(_))
        ));
        assert!(matches!(
            load_jsonl(Path::new("/nonexistent/p.jsonl"), None, 0),
            Err(PromptsError::Read { .. })
        ));
    }

    #[test]
    fn texts_become_prompts() {
        let ps = from_texts(&["a".into(), "b".into()], None, 0);
        assert_eq!(ps.len(), 2);
        assert!(ps.iter().all(|p| p.output_tokens == DEFAULT_OUTPUT_TOKENS));
        let ps = from_texts(&["a".into()], Some(&TokenDist::Constant(4)), 0);
        assert_eq!(ps[0].output_tokens, 4);
    }
}
