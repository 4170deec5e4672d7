//! The `gateway` binary: parse the configuration, start the workers, say
//! where to open the demo and the dashboard (and, at a first start, the
//! secrets made for them), wait for SIGTERM or SIGINT, shut down gracefully.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
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
        // The sites the server would serve: the built-in demo site and
        // those saved through the admin API included.
        let mut effective = config.clone();
        match gateway::sites::SiteRegistry::load(&config.sites, Some(&config.data_dir)) {
            Ok(sites) => {
                effective.sites = sites
                    .all()
                    .iter()
                    .map(|(id, s)| (id.clone(), s.config.clone()))
                    .collect();
            }
            Err(e) => {
                eprintln!("gateway: {e}");
                return ExitCode::from(2);
            }
        }
        match toml::to_string_pretty(&effective) {
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
        // Colour codes only for a person at a terminal, not in a log file.
        .with_ansi(std::io::stderr().is_terminal())
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
    // A machine-readable first line on stdout for scripts and tests, then
    // what a person needs; logs go to stderr. Write errors are ignored: a
    // reader that took the first line and left must not stop the server.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "LISTENING {}", running.addr);
    let _ = out.write_all(welcome(running.addr, running.made.as_ref()).as_bytes());
    let _ = out.flush();
    drop(out);

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

/// What a person reads on stdout at start: the secrets a first start made
/// (shown this once), and the addresses to open.
fn welcome(addr: SocketAddr, made: Option<&gateway::first_start::Made>) -> String {
    // A wildcard address is not one a browser can open.
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let base = format!("http://{host}:{}", addr.port());
    let mut s = String::new();
    if let Some(m) = made {
        s.push_str(
            "First start without an admin token: these were made, and are shown only now \
             (the data directory keeps their hashes; remove its admin-token.sha256 for new ones).\n",
        );
        s.push_str(&format!(
            "  admin token: {}   (Authorization: Bearer ... on {base}/admin/)\n",
            m.admin_token
        ));
        if let Some((agent, token)) = &m.agent {
            s.push_str(&format!(
                "  agent token: {token}   ({}, admin of the demo site: sign in at {base}/agent)\n",
                agent.name
            ));
        }
    }
    s.push_str(&format!(
        "Open {base}/ for the demo page, {base}/agent for the agent dashboard.\n"
    ));
    s
}
