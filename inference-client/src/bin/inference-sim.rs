//! `inference-sim`: the simulated GPU inference server over the
//! OpenAI-compatible HTTP API. Prints `LISTENING <addr>` on stdout when ready.
//!
//! ```text
//! inference-sim --listen 127.0.0.1:0 --decode-step-ms 20 --kv-capacity 64
//! inference-sim --model llama3.1:8b --api-key sk-test --tls-cert cert.pem --tls-key key.pem
//! ```

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use inference_client::sim::server::{bind, serve, Faults, ServerConfig};
use inference_client::{IoDriver, LatencyModel};

/// A simulated GPU inference server speaking the OpenAI-compatible API.
#[derive(Debug, Parser)]
#[command(name = "inference-sim", version)]
struct Args {
    /// Address to listen on (port 0: any free port; see the LISTENING line).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// Serve only this model: requests naming another get 404, as from a
    /// real server [default: any name is accepted, "sim" is reported].
    #[arg(long)]
    model: Option<String>,
    /// Demand `Authorization: Bearer KEY` on /v1/ routes (401 otherwise).
    #[arg(long, env = "INFERENCE_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Serve https with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Prefill cost per prompt token, microseconds.
    #[arg(long, default_value_t = 100.0)]
    prefill_us_per_token: f64,
    /// One decode step with one sequence in the batch, milliseconds.
    #[arg(long, default_value_t = 20.0)]
    decode_step_ms: f64,
    /// Extra decode step time per additional sequence, as a fraction of the step.
    #[arg(long, default_value_t = 0.015)]
    batch_slowdown: f64,
    /// Most sequences decoding at once; more wait in a queue.
    #[arg(long, default_value_t = 64)]
    kv_capacity: usize,
    /// Most prompt tokens prefilled in one iteration (a longer prompt goes alone).
    #[arg(long, default_value_t = 8192)]
    max_prefill_tokens: u32,
    /// Each step's time is scaled by a uniform factor in 1 +- jitter.
    #[arg(long, default_value_t = 0.0)]
    jitter: f64,
    /// Seed of the jitter and of --fail-rate.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most tokens per answer, whatever the request asks.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Dimensions of embedding vectors.
    #[arg(long, default_value_t = 384)]
    embedding_dim: usize,
    /// Fault: answer this fraction of /v1/ requests with HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Fault: answer every /v1/ request with this status.
    #[arg(long)]
    http_status: Option<u16>,
    /// Fault: with --http-status, send Retry-After with this many seconds.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Fault: stop sending after this many tokens of a stream (the connection stays open).
    #[arg(long)]
    stall_after_tokens: Option<u32>,
    /// Fault: close the connection after this many tokens of a stream, without `[DONE]`.
    #[arg(long)]
    drop_after_tokens: Option<u32>,
    /// Fault: answer /v1/ requests with bytes that are not HTTP.
    #[arg(long)]
    garbage: bool,
    /// Fault: answer /health with 503.
    #[arg(long)]
    unhealthy: bool,
    /// io driver: auto (io_uring, else epoll), uring, epoll.
    #[arg(long, default_value = "auto")]
    io_driver: IoDriver,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if !(a.decode_step_ms.is_finite() && a.decode_step_ms >= 0.0) {
        eprintln!("inference-sim: --decode-step-ms must be a non-negative number");
        return ExitCode::from(2);
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => match inference_client::tls::server_config(c, k) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("inference-sim: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let cfg = ServerConfig {
        model_required: a.model.is_some(),
        model: a.model.unwrap_or_else(|| "sim".into()),
        api_key: a.api_key.filter(|k| !k.is_empty()),
        tls,
        latency: LatencyModel {
            prefill_us_per_token: a.prefill_us_per_token,
            decode_step: std::time::Duration::from_secs_f64(a.decode_step_ms / 1e3),
            batch_slowdown: a.batch_slowdown,
            kv_capacity: a.kv_capacity,
            max_prefill_tokens: a.max_prefill_tokens,
            jitter: a.jitter,
            seed: a.seed,
        },
        max_tokens: a.max_tokens,
        embedding_dim: a.embedding_dim,
        faults: Faults {
            http_status: a.http_status,
            retry_after_secs: a.retry_after,
            fail_rate: a.fail_rate,
            stall_after_tokens: a.stall_after_tokens,
            drop_after_tokens: a.drop_after_tokens,
            garbage: a.garbage,
            unhealthy: a.unhealthy,
        },
        ..Default::default()
    };
    if let Err(e) = cfg.latency.validate() {
        eprintln!("inference-sim: {e}");
        return ExitCode::from(2);
    }
    let addr = match std::net::ToSocketAddrs::to_socket_addrs(&a.listen)
        .ok()
        .and_then(|mut i| i.next())
    {
        Some(a) => a,
        None => {
            eprintln!("inference-sim: cannot resolve {}", a.listen);
            return ExitCode::from(2);
        }
    };
    let listener = match bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("inference-sim: cannot listen on {}: {e}", a.listen);
            return ExitCode::from(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("inference-sim: {e}");
            return ExitCode::from(1);
        }
    };
    println!("LISTENING {addr}");
    let _ = std::io::stdout().flush();
    match serve(listener, cfg, a.io_driver) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inference-sim: {e}");
            ExitCode::from(1)
        }
    }
}
