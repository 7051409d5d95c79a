//! `canal-server config check`: load everything, print what the server would run with, and fail
//! naming the file and key of any invalid value.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use canal_coord::BackendKind;
use canal_core::binlog::decode::TextCharset;
use canal_core::store::BatchMode;

use super::{ConfigError, LoadOptions, LoadedConfig, load};

/// `canal-server config ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Load the server file and every destination, print a summary and the warnings; exit
    /// non-zero naming the file and key of an invalid value.
    Check(CheckArgs),
}

/// Arguments of `config check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Configuration directory: canal.toml (or canal.properties) and one directory per
    /// destination holding instance.toml (or instance.properties).
    #[arg(long, value_name = "DIR", default_value = "conf")]
    pub conf: PathBuf,
    /// Override a key of canal.toml, e.g. `--set port=11112` or `--set coord.backend=etcd`
    /// (repeatable; applied after the environment).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Ignore `CANAL_` environment variables.
    #[arg(long)]
    pub no_env: bool,
}

impl CheckArgs {
    /// The load options these arguments ask for.
    ///
    /// # Errors
    /// [`ConfigError::Override`] for a `--set` without `=`.
    pub fn load_options(&self) -> Result<LoadOptions, ConfigError> {
        let mut opts = LoadOptions::new();
        if !self.no_env {
            opts = opts.with_process_env();
        }
        for s in &self.set {
            opts = opts.with_override_arg(s)?;
        }
        Ok(opts)
    }
}

/// Runs a `config` subcommand, printing to stdout.
///
/// # Errors
/// The configuration error (its message names file and key).
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check(args) => {
            let opts = args.load_options()?;
            let text = check(&args.conf, &opts)?;
            print!("{text}");
            Ok(())
        }
    }
}

/// Loads `conf_dir` and returns the summary `config check` prints.
///
/// # Errors
/// [`ConfigError`] naming the file and key of the first invalid value.
pub fn check(conf_dir: &Path, opts: &LoadOptions) -> Result<String, ConfigError> {
    load(conf_dir, opts).map(|c| summary(&c))
}

/// A human-readable summary of a loaded configuration.
pub fn summary(c: &LoadedConfig) -> String {
    let mut s = String::new();
    let s_ = &mut s;
    let _ = writeln!(s_, "server file: {}", c.server_file.display());
    let ip = if c.server.ip.is_empty() { "all interfaces" } else { c.server.ip.as_str() };
    let _ = writeln!(s_, "listen: {ip} port {}", c.server.port);
    if !c.server.register_ip.is_empty() {
        let _ = writeln!(s_, "register ip: {}", c.server.register_ip);
    }
    let metrics = match c.server.metrics_port {
        0 => "disabled".to_owned(),
        p => format!("port {p}"),
    };
    let _ = writeln!(s_, "metrics: {metrics}");
    let auth = if !c.auth.requires_password() {
        "open (no canal.passwd)".to_owned()
    } else if c.server.user.is_empty() {
        "password required (any user)".to_owned()
    } else {
        format!("user {:?} with password", c.server.user)
    };
    let _ = writeln!(s_, "auth: {auth}");
    let coord = match c.coord.backend_kind() {
        BackendKind::Local => format!("local (data in {})", c.data_dir.join("coord").display()),
        BackendKind::Zookeeper => format!(
            "zookeeper {} (session timeout {} ms)",
            c.coord.zookeeper.servers, c.coord.zookeeper.session_timeout_ms
        ),
        BackendKind::Etcd => format!(
            "etcd {} (lease ttl {} s{})",
            c.coord.etcd.endpoints.join(","),
            c.coord.etcd.lease_ttl_secs,
            if c.coord.etcd.prefix.is_empty() {
                String::new()
            } else {
                format!(", prefix {}", c.coord.etcd.prefix)
            }
        ),
    };
    let _ = writeln!(
        s_,
        "coordinator: {coord}; takeover delay {} ms; cursor flush {} ms",
        c.coord.takeover_delay_ms, c.coord.cursor_flush_period_ms
    );
    let _ = writeln!(s_, "conf dir: {}", c.conf_dir.display());
    let _ = writeln!(s_, "data dir: {}", c.data_dir.display());
    let _ = writeln!(s_, "destinations: {}", c.destinations.len());
    for d in &c.destinations {
        let i = &d.instance;
        let _ = writeln!(s_, "  {} ({})", d.name, d.file.display());
        let _ = writeln!(
            s_,
            "    source: {}:{} user {:?} slave_id {}",
            i.source.host, i.source.port, i.source.user, i.source.slave_id
        );
        let mut start = Vec::new();
        if let Some(j) = &i.start.journal {
            start.push(format!("journal {j}"));
        }
        if let Some(p) = i.start.position {
            start.push(format!("position {p}"));
        }
        if let Some(t) = i.start.timestamp_ms {
            start.push(format!("timestamp {t}"));
        }
        if let Some(g) = &i.start.gtid {
            start.push(format!("gtid {g}"));
        }
        let start = if start.is_empty() { "current position".to_owned() } else { start.join(", ") };
        let _ = writeln!(s_, "    start: {start}; gtid mode {}", i.gtid_mode);
        let black = i.convert.filter.black().source();
        let _ = writeln!(
            s_,
            "    filter: {}{}",
            i.convert.filter.white().source(),
            if black.is_empty() { String::new() } else { format!(" except {black}") }
        );
        let mut drops = Vec::new();
        for (on, what) in [
            (i.convert.filter_query_dml, "query dml"),
            (i.convert.filter_query_dcl, "query dcl"),
            (i.convert.filter_query_ddl, "ddl"),
            (i.convert.filter_rows, "rows"),
            (i.convert.skip_table_errors, "table errors (skipped)"),
        ] {
            if on {
                drops.push(what);
            }
        }
        if !i.convert.field_filter.is_empty() {
            drops.push("columns (field filters)");
        }
        if !drops.is_empty() {
            let _ = writeln!(s_, "    drops: {}", drops.join(", "));
        }
        let mode = match i.store.batch_mode {
            BatchMode::MemSize => "MEMSIZE",
            BatchMode::ItemSize => "ITEMSIZE",
        };
        let _ = writeln!(
            s_,
            "    store: {} entries, {} B units, {mode}, budget {} B{}; transaction size {}",
            i.store.capacity,
            i.store.mem_unit,
            i.store.memory_budget,
            if i.store.ddl_isolation { ", ddl isolated" } else { "" },
            i.transaction_size
        );
        let charset = match i.convert.decode.charset {
            TextCharset::Latin1 => "ISO-8859-1",
            _ => "UTF-8",
        };
        let tz = i.convert.decode.time_zone.seconds;
        let sign = if tz < 0 { '-' } else { '+' };
        let _ = writeln!(
            s_,
            "    decode: charset {charset}, time zone {sign}{:02}:{:02}",
            tz.unsigned_abs() / 3600,
            tz.unsigned_abs() % 3600 / 60
        );
    }
    if c.warnings.is_empty() {
        let _ = writeln!(s_, "warnings: none");
    } else {
        let _ = writeln!(s_, "warnings: {}", c.warnings.len());
        for w in &c.warnings {
            let _ = writeln!(s_, "  warning: {w}");
        }
    }
    s
}
