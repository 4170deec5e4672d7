//! The `gateway` binary: parse the configuration, start the workers, wait for
//! SIGTERM or SIGINT, shut down gracefully.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use gateway::config::{Cli, Command, Config, KbCommand};
use gateway::server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::PrintConfig) = cli.command {
        match toml::to_string_pretty(&config) {
            Ok(s) => {
                print!("{s}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("gateway: cannot print the configuration: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(Command::Kb(KbCommand::Add {
        site,
        data_dir,
        paths,
    })) = &cli.command
    {
        let dir = data_dir.clone().unwrap_or_else(|| config.data_dir.clone());
        return match gateway::kb::add(&config, &dir, site, paths) {
            Ok(a) => {
                if a.site_created {
                    println!("site '{site}' made with default settings");
                }
                println!("retrieval: {}", a.mode);
                println!("{}", a.report);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway kb add: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // Test-only: reproduce Docker's default seccomp profile, which denies
    // io_uring_setup, to prove the epoll fallback. Installed before any thread.
    if std::env::var_os("LC_TEST_DENY_IO_URING").is_some() {
        if let Err(e) = server::sys::deny_io_uring() {
            eprintln!("gateway: cannot install the io_uring seccomp filter: {e}");
            return ExitCode::FAILURE;
        }
        tracing::warn!("LC_TEST_DENY_IO_URING is set: io_uring_setup is denied in this process");
    }

    // Signals are blocked before the workers start so only the waiting thread takes them.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gateway: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match server::start(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One machine-readable line on stdout for scripts and tests; logs go to stderr.
    println!("LISTENING {}", running.addr);
    let _ = std::io::stdout().flush();

    if let Some(sig) = signals.forever().next() {
        tracing::info!(
            signal = sig,
            "shutting down: no new connections, sessions closed with 1001"
        );
    }
    running.shutdown();
    match running.join() {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
