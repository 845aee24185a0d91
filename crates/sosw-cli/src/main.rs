//! `sosw`: the embedded sosw binary. It parses the command line, wires the SQLite store and the local adapters
//! into the engine, runs one library call per command, and renders the result. Exit codes: 0 ok, 2 usage or config
//! error, 1 runtime error.

// First: its `outln!` is used by the others.
#[macro_use]
mod output;
mod app;
mod args;
mod cli;
mod commands;
mod daemon;
mod maintenance;
mod schedule;
mod showcase;
mod tasks;

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

/// A usage or config error: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a file or a pipe they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// The services (`run`: the daemon and its API; `demo` and `bench`, which stand in for it) use every core. Every
/// other command is one pass that waits on I/O, whose tasks gain nothing from a second thread but cross-thread
/// wake-ups: one thread runs it (an AWS Orchestrator pass invoking 2,000 tasks spent a third less CPU,
/// `bench/peers/run --only aws`).
fn runtime_for(command: &cli::Command) -> tokio::runtime::Builder {
    match command {
        cli::Command::Run { .. } | cli::Command::Demo(_) | cli::Command::Bench(_) => {
            tokio::runtime::Builder::new_multi_thread()
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.global.verbose);
    let runtime = match runtime_for(&cli.command).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("sosw: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)).and_then(|()| output::written()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("sosw: error: {e:#}");
            let usage = e.chain().any(|c| c.downcast_ref::<UsageError>().is_some());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
