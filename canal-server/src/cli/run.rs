//! `canal-server run`: load the configuration, serve every destination under HA, and on SIGTERM
//! or Ctrl-C hand the destinations over (flush cursors, release running nodes, close sessions)
//! and exit 0.

use std::path::PathBuf;

use anyhow::Context;
use tracing::{error, info, warn};

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
    let settings = cfg.server_settings();
    let backend = settings.coord.open_backend().context("coordinator configuration")?;
    let mut server = Server::start_specs(settings, cfg.specs(), backend).await?;
    // One line on stdout for scripts and tests: where we listen.
    println!(
        "canal-server listening on {}{}",
        server.local_addr(),
        server.metrics_addr().map(|a| format!(", metrics on {a}")).unwrap_or_default()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let scan = cfg
        .server
        .auto_scan
        .then(|| std::time::Duration::from_secs(cfg.server.auto_scan_interval_s.max(1)));
    let mut reloader = Reloader { conf: args.conf.clone(), opts, last_error: None };
    loop {
        let tick = async {
            match scan {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => {
                info!("SIGTERM: handing over and stopping");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                info!("interrupted: handing over and stopping");
                break;
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading the destinations");
                reloader.reload(&mut server, true).await;
            }
            _ = tick => reloader.reload(&mut server, false).await,
        }
    }
    server.shutdown().await;
    Ok(())
}

/// Re-reads the configuration and applies its destinations (`canal.auto.scan`, SIGHUP).
struct Reloader {
    conf: PathBuf,
    opts: LoadOptions,
    /// The last refusal, reported once (a scan every few seconds must not repeat it).
    last_error: Option<String>,
}

impl Reloader {
    /// Loads the configuration as `run` and `config check` do. Invalid: reported (named file
    /// and key), and nothing changes — every destination keeps running as it is. Valid: new
    /// destinations start, removed ones stop (releasing their nodes), changed ones restart.
    async fn reload(&mut self, server: &mut Server, asked: bool) {
        let cfg = match load(&self.conf, &self.opts) {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                if asked || self.last_error.as_ref() != Some(&msg) {
                    error!(
                        "configuration not reloaded (the destinations keep running as they are): {msg}"
                    );
                    server.reload_failed(&msg);
                }
                self.last_error = Some(msg);
                return;
            }
        };
        if self.last_error.take().is_some() {
            info!("the configuration loads again");
        }
        let report = server.reload(cfg.specs()).await;
        if !report.is_empty() || asked {
            for w in &cfg.warnings {
                warn!("{w}");
            }
            info!(
                added = ?report.added,
                removed = ?report.removed,
                restarted = ?report.restarted,
                "configuration reloaded"
            );
        }
    }
}
