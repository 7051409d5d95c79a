//! The canal-server binary: `run` serves destinations, `config check` validates a conf dir,
//! `decode` prints binlog files as Canal entries, `admin` asks a running server's admin API.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "canal-server", version, about = "Alibaba Canal, rebuilt in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the configured destinations (until SIGTERM / Ctrl-C).
    Run(canal_server::cli::run::RunArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(canal_server::config::ConfigCommand),
    /// Decode binlog files into Canal FlatMessage JSON lines (or whole entries).
    Decode(canal_server::cli::decode::DecodeArgs),
    /// Ask a running server's admin API (list, release, reset-cursor).
    Admin(canal_server::cli::admin::AdminArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs its state changes; the one-shot tools only warnings.
    let default_log = if matches!(cli.command, Command::Run(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => canal_server::cli::run::run(args).await,
            Command::Config(cmd) => canal_server::config::run(cmd),
            Command::Decode(args) => canal_server::cli::decode::run(args).await,
            Command::Admin(args) => canal_server::cli::admin::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
