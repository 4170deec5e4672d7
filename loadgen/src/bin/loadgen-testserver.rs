//! `loadgen-testserver`: a small protocol v1 server to aim loadgen at, for
//! tests and for measuring loadgen itself. Prints `listening on ADDR` on
//! stdout once ready and exits after `--max-duration`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use loadgen::testserver::{self, script::Behaviour, Config};
use loadgen::units::Dur;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen-testserver",
    version,
    about = "A protocol v1 test server for loadgen"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Threads, each with its own runtime and SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Delay from a message to its ack.
    #[arg(long, default_value = "0")]
    ack_delay: Dur,
    /// Tokens per reply (0: ack only).
    #[arg(long, default_value_t = 0)]
    tokens: u32,
    /// Time from the ack to the first token and between tokens.
    #[arg(long, default_value = "10ms")]
    token_interval: Dur,
    /// Refuse every Nth message with busy (0: never).
    #[arg(long, default_value_t = 0)]
    busy_every: u64,
    /// retry_after_ms of a busy refusal.
    #[arg(long, default_value_t = 250)]
    busy_retry_ms: u64,
    /// Start a stall this long after the first message.
    #[arg(long)]
    stall_after: Option<Dur>,
    /// How long the stall holds every frame back.
    #[arg(long, default_value = "1s")]
    stall_for: Dur,
    /// Serve messages one at a time, each taking this long (0: no queue):
    /// a server with a capacity of 1 / service-time messages a second, whose
    /// latency grows without bound when offered more (a knee for sweeps).
    #[arg(long, default_value = "0")]
    service_time: Dur,
    /// Use epoll even where io_uring works.
    #[arg(long)]
    epoll: bool,
    /// Exit after this long.
    #[arg(long, default_value = "10m")]
    max_duration: Dur,
}

fn main() {
    let a = Args::parse();
    let (soft, _) = loadgen::system::raise_nofile_limit();
    let cfg = Config {
        listen: a.listen,
        threads: a.threads,
        epoll: a.epoll,
        behaviour: Behaviour {
            ack_delay: a.ack_delay.0,
            tokens: a.tokens,
            token_interval: a.token_interval.0,
            busy_every: a.busy_every,
            busy_retry_ms: a.busy_retry_ms,
            stall_after: a.stall_after.map(|d| d.0),
            stall_for: a.stall_for.0,
            service_time: a.service_time.0,
        },
    };
    match testserver::spawn(cfg) {
        Ok(addr) => {
            println!("listening on {addr} (open files {soft})");
            let _ = std::io::stdout().flush();
            std::thread::sleep(a.max_duration.0.max(Duration::from_millis(1)));
        }
        Err(e) => {
            eprintln!("loadgen-testserver: cannot listen on {}: {e}", a.listen);
            std::process::exit(2);
        }
    }
}
