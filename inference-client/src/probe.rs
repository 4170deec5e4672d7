//! What an endpoint's replies say, in words for the operator's log, sans-IO:
//! the start-up probe (`GET /v1/models`: reachable? the key accepted? the
//! configured model served?) and the cause of a failed call. The service's
//! transport does the I/O and logs these; the gateway only starts it.

use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::Fault;
use crate::openai;

/// What the probe of one endpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// It answered with its list of models.
    Ready {
        /// The models it serves.
        models: Vec<String>,
        /// Whether the configured model is among them.
        model_listed: bool,
    },
    /// 401 or 403: the key was refused (or the server wants one and none is
    /// configured).
    KeyRefused {
        /// The status.
        status: u16,
        /// Whether a key was sent.
        key_sent: bool,
        /// The server's message.
        message: String,
    },
    /// Another error status.
    Status {
        /// The status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A 2xx whose body is not an OpenAI model list.
    Malformed(String),
    /// No reply: refused, unreachable, timed out, TLS refused.
    Unreachable(String),
}

/// The probe of one endpoint, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The endpoint's URL, as configured.
    pub url: String,
    /// The model name the service sends it.
    pub model: String,
    /// What it found.
    pub health: Health,
}

impl ProbeReport {
    /// Whether the endpoint can serve: it answered and lists the model.
    pub fn is_ready(&self) -> bool {
        matches!(
            self.health,
            Health::Ready {
                model_listed: true,
                ..
            }
        )
    }
}

/// The probes' reports as they arrive, readable from any thread (see
/// [`crate::Service::probes`]).
#[derive(Debug, Default)]
pub struct ProbeBoard {
    reports: Mutex<Vec<Option<ProbeReport>>>,
    arrived: Condvar,
}

impl ProbeBoard {
    /// A board for `n` endpoints.
    pub fn new(n: usize) -> Self {
        ProbeBoard {
            reports: Mutex::new(vec![None; n]),
            arrived: Condvar::new(),
        }
    }

    /// Posts endpoint `i`'s report.
    pub fn post(&self, i: usize, report: ProbeReport) {
        let mut r = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = r.get_mut(i) {
            *slot = Some(report);
        }
        self.arrived.notify_all();
    }

    /// The reports, waiting up to `wait` for all of them; those that have
    /// arrived by then, in endpoint order.
    pub fn wait(&self, wait: Duration) -> Vec<ProbeReport> {
        let end = Instant::now() + wait;
        let mut r = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        while r.iter().any(Option::is_none) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            r = match self.arrived.wait_timeout(r, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        r.iter().flatten().cloned().collect()
    }
}

/// The most model names a log line lists.
const LISTED: usize = 8;

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let model = &self.model;
        match &self.health {
            Health::Ready {
                models,
                model_listed,
            } => {
                let mut names = models
                    .iter()
                    .take(LISTED)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if models.len() > LISTED {
                    names.push_str(&format!(" and {} more", models.len() - LISTED));
                }
                if *model_listed {
                    write!(f, "ready: serves {model:?} (models: {names})")
                } else if models.is_empty() {
                    write!(f, "reachable, but lists no model (requests name {model:?})")
                } else {
                    write!(
                        f,
                        "reachable, but does not list the model {model:?} (models: {names}); \
                         set the model name (--model / LC_INFERENCE_MODEL / [inference] model)"
                    )
                }
            }
            Health::KeyRefused {
                status,
                key_sent: true,
                message,
            } => write!(f, "the key was refused (HTTP {status}: {message})"),
            Health::KeyRefused {
                status, message, ..
            } => write!(
                f,
                "the server wants a key and none is configured (HTTP {status}: {message}); set \
                 --api-key / LC_INFERENCE_API_KEY / [inference] api_key"
            ),
            Health::Status { status: 404, .. } => write!(
                f,
                "no /v1/models here (HTTP 404): is the URL the server's OpenAI-compatible base, \
                 such as http://host:port or http://host:port/v1?"
            ),
            Health::Status { status, message } => write!(f, "HTTP {status}: {message}"),
            Health::Malformed(why) => write!(f, "the reply is not an OpenAI model list: {why}"),
            Health::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// Whether `model` is among `models`; a name without a tag also matches
/// its `:latest` (as Ollama resolves it).
pub fn lists_model(models: &[String], model: &str) -> bool {
    models
        .iter()
        .any(|m| m == model || (!model.contains(':') && *m == format!("{model}:latest")))
}

/// Judges a reply to `GET /v1/models`.
pub fn judge(status: u16, body: &[u8], model: &str, key_sent: bool) -> Health {
    match status {
        200..=299 => match openai::parse_models(body) {
            Ok(models) => Health::Ready {
                model_listed: lists_model(&models, model),
                models,
            },
            Err(e) => Health::Malformed(e.to_string()),
        },
        401 | 403 => Health::KeyRefused {
            status,
            key_sent,
            message: openai::error_message(body),
        },
        _ => Health::Status {
            status,
            message: openai::error_message(body),
        },
    }
}

/// The probe's finding when no reply came.
pub fn unreachable(fault: &Fault) -> Health {
    Health::Unreachable(fault.to_string())
}

/// The cause of a failed call, in words: the fault, plus what it most
/// likely means when the status says (a refused key, an unknown model).
pub fn explain(fault: &Fault, model: &str, key_sent: bool) -> String {
    match fault {
        Fault::Status {
            status: 401 | 403, ..
        } if key_sent => format!("the key was refused ({fault})"),
        Fault::Status {
            status: 401 | 403, ..
        } => format!("the server wants a key and none is configured ({fault})"),
        Fault::Status { status: 404, .. } => {
            format!("the model {model:?} is not served there, or the URL's path is wrong ({fault})")
        }
        _ => fault.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(health: Health) -> String {
        ProbeReport {
            url: "http://gpu:8000".into(),
            model: "llama3.1:8b".into(),
            health,
        }
        .to_string()
    }

    #[test]
    fn model_lists() {
        let body = br#"{"object":"list","data":[{"id":"llama3.1:8b","object":"model"},{"id":"qwen2.5:7b","object":"model"}]}"#;
        let h = judge(200, body, "llama3.1:8b", false);
        assert_eq!(
            h,
            Health::Ready {
                models: vec!["llama3.1:8b".into(), "qwen2.5:7b".into()],
                model_listed: true
            }
        );
        assert!(report(h).starts_with("ready: serves \"llama3.1:8b\""));
        let h = judge(200, body, "default", false);
        let line = report(Health::Ready {
            models: vec!["qwen2.5:7b".into()],
            model_listed: false,
        });
        assert!(matches!(
            h,
            Health::Ready {
                model_listed: false,
                ..
            }
        ));
        assert!(line.contains("does not list the model"), "{line}");
        assert!(line.contains("qwen2.5:7b"), "{line}");
        assert!(line.contains("--model"), "{line}");
        assert!(lists_model(&["llama3.1:latest".into()], "llama3.1"));
        assert!(!lists_model(&["llama3.1:8b".into()], "llama3.1"));
        assert!(matches!(
            judge(200, b"<html>", "m", false),
            Health::Malformed(_)
        ));
    }

    #[test]
    fn refusals_are_named() {
        let body = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let line = report(judge(401, body, "m", true));
        assert!(line.starts_with("the key was refused"), "{line}");
        assert!(line.contains("Incorrect API key provided"), "{line}");
        let line = report(judge(401, body, "m", false));
        assert!(line.contains("none is configured"), "{line}");
        assert!(report(judge(404, b"", "m", false)).contains("no /v1/models here"));
        let f = Fault::Connect("127.0.0.1:9: Connection refused".into());
        let line = report(unreachable(&f));
        assert!(
            line.starts_with("unreachable: cannot connect: 127.0.0.1:9"),
            "{line}"
        );
    }

    #[test]
    fn failed_calls_say_why() {
        let st = |status| Fault::Status {
            status,
            retry_after: None,
            body: "nope".into(),
        };
        assert!(explain(&st(401), "m", true).starts_with("the key was refused"));
        assert!(explain(&st(401), "m", false).contains("none is configured"));
        assert!(explain(&st(404), "llama3.1:8b", true).contains("\"llama3.1:8b\" is not served"));
        assert_eq!(explain(&st(500), "m", true), "HTTP 500: nope");
    }
}
