//! `loadgen`: see `loadgen --help` and docs/load-testing.md.

fn main() {
    std::process::exit(loadgen::cli::main(std::env::args_os()));
}
