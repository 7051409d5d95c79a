//! `canal-server run`: load the configuration, serve every destination under HA, and on SIGTERM
//! or Ctrl-C hand the destinations over (flush cursors, release running nodes, close sessions)
//! and exit 0.

use std::path::PathBuf;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::{LoadOptions, load};
use crate::server::Server;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration directory: `canal.toml` (or Canal's `canal.properties`) and one
    /// sub-directory per destination.
    #[arg(long, default_value = "conf")]
    pub conf: PathBuf,
    /// Override a configuration key, e.g. `--set port=11112` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Runs the server until SIGTERM/SIGINT.
///
/// # Errors
/// Invalid configuration, a port that cannot be bound, an unusable coordinator.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut opts = LoadOptions::new().with_process_env();
    for o in &args.overrides {
        opts = opts.with_override_arg(o)?;
    }
    let cfg = load(&args.conf, &opts)?;
    for w in &cfg.warnings {
        warn!("{w}");
    }
    if cfg.destinations.is_empty() {
        warn!("no destination configured in {}", args.conf.display());
    }
    let server = Server::start(cfg.server_settings(), cfg.instances()).await?;
    // One line on stdout for scripts and tests: where we listen.
    println!(
        "canal-server listening on {}{}",
        server.local_addr(),
        server.metrics_addr().map(|a| format!(", metrics on {a}")).unwrap_or_default()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: handing over and stopping"),
        _ = tokio::signal::ctrl_c() => info!("interrupted: handing over and stopping"),
    }
    server.shutdown().await;
    Ok(())
}
