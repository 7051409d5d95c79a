//! canal-server configuration: `conf/canal.toml` and `conf/<destination>/instance.toml` (or Java
//! Canal's `canal.properties` / `instance.properties`), loaded with figment in the order
//! defaults → file → `CANAL_` environment → command-line overrides, checked, and resolved into one
//! [`InstanceConfig`] per destination.
//!
//! Unknown keys are warnings naming the file and key; invalid values are errors naming them.
//! `docs/configuration.md` has the full key table and the legacy key map.

pub mod check;
pub mod legacy;
pub mod model;
pub mod resolve;
pub mod sources;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use canal_coord::CoordConfig;
use canal_core::instance::InstanceConfig;
use canal_core::protocol::auth::{AuthConfig, AuthConfigError};
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::{Figment, Provider};

pub use check::{CheckArgs, ConfigCommand, check, run};
pub use model::{
    CoordSection, DbSection, FilterSection, InstanceFileConfig, InstanceMqSection, KafkaSection,
    MasterSection, MemorySection, MqSection, RabbitmqSection, ServerConfig, ServerMode,
    SupervisorSection,
};

use legacy::{PropertiesFile, Scope};
use sources::{CliProvider, EnvProvider};

/// The server file of the TOML format.
pub const SERVER_TOML: &str = "canal.toml";
/// The server file of Java Canal.
pub const SERVER_PROPERTIES: &str = "canal.properties";
/// A destination's file in the TOML format.
pub const INSTANCE_TOML: &str = "instance.toml";
/// A destination's file of Java Canal.
pub const INSTANCE_PROPERTIES: &str = "instance.properties";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is invalid: `origin` is the file (or `environment`, `command line`), `key` the key
    /// as written there (the Canal key for `.properties` files, the variable for the environment).
    #[error("{origin}: invalid value for '{key}': {message}")]
    Invalid {
        /// Where the value came from.
        origin: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A file cannot be read or parsed.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The configuration directory has neither `canal.toml` nor `canal.properties`.
    #[error("no canal.toml or canal.properties in '{}'", .0.display())]
    NoServerFile(PathBuf),
    /// A destination is misnamed or has no instance file.
    #[error("destination '{name}': {message}")]
    Destination {
        /// The destination.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line override is not `key=value`.
    #[error("override {0:?} is not key=value")]
    Override(String),
}

/// Inputs besides the files: environment variables and command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    env: Vec<(String, String)>,
    overrides: Vec<(String, String)>,
}

impl LoadOptions {
    /// No environment, no overrides (the files alone).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the process's `CANAL_` and `canal.` variables (what the binary does); variables that
    /// are not UTF-8 are skipped.
    pub fn with_process_env(self) -> Self {
        self.with_env(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Uses these variables as the environment (tests use an explicit map instead of the process
    /// environment).
    pub fn with_env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets `key` (dotted, as in `canal.toml`) to `value`, over everything else.
    pub fn with_override(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.push((key.into(), value.into()));
        self
    }

    /// Adds a `key=value` override.
    ///
    /// # Errors
    /// [`ConfigError::Override`] without `=` or with an empty key.
    pub fn with_override_arg(self, arg: &str) -> Result<Self, ConfigError> {
        match arg.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(self.with_override(k.trim(), v.trim())),
            _ => Err(ConfigError::Override(arg.to_owned())),
        }
    }
}

/// One destination, ready to start.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// Its name.
    pub name: String,
    /// The instance file it was read from.
    pub file: PathBuf,
    /// The settings the instance runs with.
    pub instance: InstanceConfig,
    /// Its MQ routing (used in MQ mode only; checked then).
    pub mq: canal_core::mq::RoutingConfig,
    /// Its balancing weight and preferred servers.
    pub balance: crate::balance::DestinationBalance,
}

/// Everything the server needs, checked.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The server settings as extracted (paths not yet resolved: see `conf_dir`, `data_dir`).
    pub server: ServerConfig,
    /// The server file read (`canal.toml` or `canal.properties`).
    pub server_file: PathBuf,
    /// Where destination directories live.
    pub conf_dir: PathBuf,
    /// Root of local state.
    pub data_dir: PathBuf,
    /// Client authentication from `user` / `passwd`.
    pub auth: AuthConfig,
    /// Coordination settings for `canal_coord` (the local backend keeps its data in
    /// `<data_dir>/coord`).
    pub coord: CoordConfig,
    /// The destinations, sorted by name when discovered by scanning, else in configured order.
    pub destinations: Vec<DestinationConfig>,
    /// Unknown and ignored keys, naming file and key.
    pub warnings: Vec<String>,
}

impl LoadedConfig {
    /// The process settings for [`crate::server::Server::start`]: listen on `ip:port` (all
    /// interfaces when `ip` is empty), publish `register_ip:port` when set, serve metrics on the
    /// same address at `metrics_port` unless it is 0, authenticate with `user`/`passwd`.
    pub fn server_settings(&self) -> crate::server::ServerSettings {
        let ip = self
            .server
            .ip
            .trim()
            .parse::<std::net::IpAddr>()
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let register = self.server.register_ip.trim();
        let register_address = (!register.is_empty()).then(|| {
            if register.contains(':') && !register.starts_with('[') {
                format!("[{register}]:{}", self.server.port)
            } else {
                format!("{register}:{}", self.server.port)
            }
        });
        crate::server::ServerSettings {
            bind: std::net::SocketAddr::new(ip, self.server.port),
            register_address,
            session: crate::session::SessionConfig {
                auth: self.auth.clone(),
                ..Default::default()
            },
            coord: self.coord.clone(),
            metrics_bind: (self.server.metrics_port != 0)
                .then(|| std::net::SocketAddr::new(ip, self.server.metrics_port)),
            supervisor: crate::server::SupervisorConfig {
                max_failures: self.server.supervisor.max_failures.max(1),
                backoff: std::time::Duration::from_millis(self.server.supervisor.backoff_ms),
                backoff_max: std::time::Duration::from_millis(
                    self.server.supervisor.backoff_max_ms,
                ),
                ..Default::default()
            },
            mq: self.mq_settings(),
            balance: self.balance_settings(),
            admin_token: Some(self.server.admin_token.clone()).filter(|t| !t.is_empty()),
        }
    }

    /// Balancing settings: `[balance]` and each destination's weight and `prefer` list.
    pub fn balance_settings(&self) -> crate::balance::BalanceSettings {
        let b = &self.server.balance;
        crate::balance::BalanceSettings {
            enabled: b.enabled,
            slack: b.slack,
            max_defer: std::time::Duration::from_millis(b.max_defer_ms),
            refresh: std::time::Duration::from_millis(b.refresh_ms.max(1)),
            destinations: self
                .destinations
                .iter()
                .map(|d| (d.name.clone(), d.balance.clone()))
                .collect(),
        }
    }

    /// MQ mode settings, `None` in TCP mode.
    pub fn mq_settings(&self) -> Option<crate::mq::MqSettings> {
        let m = &self.server.mq;
        if m.mode == ServerMode::Tcp {
            return None;
        }
        Some(crate::mq::MqSettings {
            mode: m.mode,
            worker: crate::mq::WorkerConfig {
                batch_size: m.batch_size,
                get_timeout: std::time::Duration::from_millis(m.get_timeout_ms),
                max_in_flight: m.max_in_flight_batches,
                backoff: std::time::Duration::from_millis(m.retry_backoff_ms),
                backoff_max: std::time::Duration::from_millis(m.retry_backoff_max_ms),
                ..Default::default()
            },
            kafka: m.kafka.clone(),
            rabbitmq: m.rabbitmq.clone(),
            routing: self.destinations.iter().map(|d| (d.name.clone(), d.mq.clone())).collect(),
        })
    }

    /// Every destination as [`crate::server::Server::start_specs`] and
    /// [`crate::server::Server::reload`] take it. The fingerprint covers the instance file's
    /// text, so any edit of it restarts the destination.
    pub fn specs(&self) -> Vec<crate::server::DestinationSpec> {
        self.destinations
            .iter()
            .map(|d| {
                // Read just now by `load`; a file that vanished since counts as changed.
                let text = match std::fs::read(&d.file) {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => format!("<unreadable: {e}>"),
                };
                crate::server::DestinationSpec::new(d.instance.clone(), d.balance.clone(), &text)
            })
            .collect()
    }

    /// The instance settings of every destination, in order.
    pub fn instances(&self) -> Vec<InstanceConfig> {
        self.destinations.iter().map(|d| d.instance.clone()).collect()
    }
}

/// Loads and checks the server configuration in `conf_dir` and every destination.
///
/// # Errors
/// [`ConfigError`] naming the file and key of the first invalid value, or the file that cannot be
/// read.
pub fn load(conf_dir: &Path, opts: &LoadOptions) -> Result<LoadedConfig, ConfigError> {
    let base = normalize(&std::path::absolute(conf_dir).unwrap_or_else(|_| conf_dir.to_owned()));
    let mut warnings = Vec::new();
    let toml_path = base.join(SERVER_TOML);
    let props_path = base.join(SERVER_PROPERTIES);
    let known_server = server_keys();
    let top_keys: BTreeSet<String> =
        known_server.iter().map(|k| k.split('.').next().unwrap_or_default().to_owned()).collect();

    let mut legacy_files: Vec<PropertiesFile> = Vec::new();
    let mut fig = Figment::from(Serialized::defaults(ServerConfig::default()));
    let server_file = if toml_path.is_file() {
        fig = fig.merge(toml_file(&toml_path, &props_path, &known_server, &mut warnings)?);
        toml_path
    } else if props_path.is_file() {
        let file = PropertiesFile::read(&props_path, Scope::Server)
            .map_err(|message| ConfigError::File { path: props_path.clone(), message })?;
        push_ignored(&mut warnings, &file);
        fig = fig.merge(file.clone());
        legacy_files.push(file);
        props_path
    } else {
        return Err(ConfigError::NoServerFile(base));
    };
    // Canal's own keys as variable names (`canal.port=11112`, Canal's docker image style).
    let canal_env = PropertiesFile::from_env(opts.env.iter().cloned(), Scope::Server);
    if !canal_env.is_empty() {
        push_ignored(&mut warnings, &canal_env);
        fig = fig.merge(canal_env.clone());
        legacy_files.push(canal_env);
    }
    let env = EnvProvider::new(opts.env.iter().cloned(), top_keys);
    for key in sources::unknown_keys(&env, &known_server) {
        let (_, var) = sources::describe(Some(&env.metadata()), &key, &[]);
        warnings.push(format!("environment: unknown variable '{var}' ignored"));
    }
    fig = fig.merge(env);
    let cli = CliProvider { values: opts.overrides.clone() };
    for key in sources::unknown_keys(&cli, &known_server) {
        warnings.push(format!("command line: unknown key '{key}' ignored"));
    }
    fig = fig.merge(cli);

    let legacy_refs: Vec<&PropertiesFile> = legacy_files.iter().collect();
    let server: ServerConfig = fig.extract_lossy().map_err(|e| map_figment(e, &legacy_refs))?;
    let defaults_name = Serialized::defaults(ServerConfig::default()).metadata().name;
    // A value nobody set is blamed on the server file: that is where it would be fixed.
    let origin_of = |key: &str| match fig.find_metadata(key) {
        Some(m) if m.name != defaults_name => sources::describe(Some(m), key, &legacy_refs),
        _ => (server_file.display().to_string(), key.to_owned()),
    };
    let bad = |key: &str, message: String| {
        let (origin, key) = origin_of(key);
        ConfigError::Invalid { origin, key, message }
    };

    // Port 0 picks a free port (tests, demos); the bound address is printed and published, which
    // cannot work with a fixed register_ip.
    if server.port == 0 && !server.register_ip.trim().is_empty() {
        return Err(bad("port", "0 (pick a free port) cannot be combined with register_ip".into()));
    }
    if server.metrics_port != 0 && server.metrics_port == server.port {
        return Err(bad("metrics_port", format!("{} is also the client port", server.port)));
    }
    if server.mq.mode != ServerMode::Tcp {
        if server.mq.batch_size == 0 {
            return Err(bad("mq.batch_size", "must be at least 1".into()));
        }
        if server.mq.max_in_flight_batches == 0 {
            return Err(bad("mq.max_in_flight_batches", "must be at least 1".into()));
        }
        if server.mq.retry_backoff_ms == 0
            || server.mq.retry_backoff_max_ms < server.mq.retry_backoff_ms
        {
            return Err(bad(
                "mq.retry_backoff_max_ms",
                "backoffs must be positive and the maximum at least the first".into(),
            ));
        }
        if server.mq.mode == ServerMode::Kafka
            && server.mq.kafka.bootstrap_servers.trim().is_empty()
        {
            return Err(bad("mq.kafka.bootstrap_servers", "is required in kafka mode".into()));
        }
        if server.mq.mode == ServerMode::Rabbitmq && server.mq.rabbitmq.host.trim().is_empty() {
            return Err(bad("mq.rabbitmq.host", "is required in rabbitMQ mode".into()));
        }
    }
    if !server.ip.trim().is_empty() && server.ip.trim().parse::<std::net::IpAddr>().is_err() {
        return Err(bad("ip", format!("{:?} is not an IP address (empty = all)", server.ip)));
    }
    let auth = AuthConfig::new(server.user.trim(), server.passwd.trim()).map_err(|e| match e {
        AuthConfigError::UserWithoutPasswd { .. } => bad("passwd", e.to_string()),
        other => bad("passwd", other.to_string()),
    })?;

    let server_dir = server_file.parent().map(Path::to_owned).unwrap_or_else(|| base.clone());
    let conf_dir = match &server.conf_dir {
        Some(d) => normalize(&server_dir.join(d)),
        None => base.clone(),
    };
    let data_dir = match &server.data_dir {
        Some(d) => normalize(&server_dir.join(d)),
        None => conf_dir.parent().map(|p| p.join("data")).unwrap_or_else(|| conf_dir.join("data")),
    };
    let coord = coord_config(&server.coord, &data_dir).map_err(|(k, m)| bad(k, m))?;

    let names = if server.destinations.is_empty() {
        scan_destinations(&conf_dir)?
    } else {
        let mut seen = BTreeSet::new();
        for d in &server.destinations {
            if !seen.insert(d.as_str()) {
                return Err(bad("destinations", format!("{d:?} is listed twice")));
            }
        }
        server.destinations.clone()
    };
    let register_ip = if server.register_ip.trim().is_empty() {
        server.ip.trim()
    } else {
        server.register_ip.trim()
    };
    let known_instance = instance_keys();
    let mut destinations = Vec::new();
    for name in names {
        check_destination_name(&name)?;
        let dir = conf_dir.join(&name);
        let toml = dir.join(INSTANCE_TOML);
        let props = dir.join(INSTANCE_PROPERTIES);
        let mut inst_legacy = Vec::new();
        let (file, inst_fig) = if toml.is_file() {
            let provider = toml_file(&toml, &props, &known_instance, &mut warnings)?;
            (toml, Figment::from(provider))
        } else if props.is_file() {
            let f = PropertiesFile::read(&props, Scope::Instance)
                .map_err(|message| ConfigError::File { path: props.clone(), message })?;
            push_ignored(&mut warnings, &f);
            inst_legacy.push(f.clone());
            (props, Figment::from(f))
        } else {
            return Err(ConfigError::Destination {
                name,
                message: format!(
                    "no {INSTANCE_TOML} or {INSTANCE_PROPERTIES} in '{}'",
                    dir.display()
                ),
            });
        };
        let inst_env = PropertiesFile::from_env(opts.env.iter().cloned(), Scope::Instance);
        let inst_fig = if inst_env.values().is_empty() {
            inst_fig
        } else {
            inst_legacy.push(inst_env.clone());
            inst_fig.merge(inst_env)
        };
        let inst_refs: Vec<&PropertiesFile> = inst_legacy.iter().collect();
        let file_cfg: InstanceFileConfig =
            inst_fig.extract_lossy().map_err(|e| map_figment(e, &inst_refs))?;
        let merged = resolve::merge(&file_cfg, &server.instance);
        let origin = |key: &str| -> (String, String) {
            if is_set(&inst_fig, key) {
                return sources::describe(inst_fig.find_metadata(key), key, &inst_refs);
            }
            let server_key = format!("instance.{key}");
            if is_set(&fig, &server_key) {
                return origin_of(&server_key);
            }
            (file.display().to_string(), key.to_owned())
        };
        let instance = resolve::instance_config(&name, &merged, register_ip, &data_dir, &origin)?;
        if merged.master.position.is_some() && merged.master.journal_name.is_none() {
            let (o, k) = origin("master.position");
            warnings.push(format!("{o}: '{k}' is set without a journal name and is not used"));
        }
        if merged.master.gtid.is_some() && !instance.gtid_mode {
            let (o, k) = origin("master.gtid");
            warnings.push(format!("{o}: '{k}' is only used with gtid_mode = true"));
        }
        let mq = routing_config(&server.mq, &merged.mq);
        if server.mq.mode != ServerMode::Tcp
            && let Err(e) = canal_core::mq::Router::new(mq.clone())
        {
            let key = match &e {
                canal_core::mq::RoutingError::Config { key, .. } => {
                    legacy::MQ_INSTANCE_KEYS.iter().find(|(k, _)| k == key).map_or("mq", |(_, v)| v)
                }
                _ => "mq",
            };
            let (origin, key) = origin(key);
            return Err(ConfigError::Invalid { origin, key, message: e.to_string() });
        }
        let balance = crate::balance::DestinationBalance {
            weight: merged.balance.weight.unwrap_or(1),
            prefer: merged.balance.prefer.iter().map(|p| p.trim().to_owned()).collect(),
        };
        if balance.weight == 0 {
            let (origin, key) = origin("balance.weight");
            return Err(ConfigError::Invalid { origin, key, message: "must be at least 1".into() });
        }
        if let Some(bad) = balance.prefer.iter().find(|p| resolve::parse_address(p).is_err()) {
            let (origin, key) = origin("balance.prefer");
            return Err(ConfigError::Invalid {
                origin,
                key,
                message: format!("{bad:?} is not a server address ip:port"),
            });
        }
        destinations.push(DestinationConfig { name, file, instance, mq, balance });
    }

    if destinations.is_empty() {
        warnings.push(format!(
            "{}: no destinations (no directory of '{}' holds {INSTANCE_TOML} or \
             {INSTANCE_PROPERTIES})",
            server_file.display(),
            conf_dir.display()
        ));
    }
    Ok(LoadedConfig {
        server,
        server_file,
        conf_dir,
        data_dir,
        auth,
        coord,
        destinations,
        warnings,
    })
}

/// The routing of one destination: the server's format keys and the instance's routing keys.
pub fn routing_config(
    server: &model::MqSection,
    instance: &model::InstanceMqSection,
) -> canal_core::mq::RoutingConfig {
    let d = canal_core::mq::RoutingConfig::default();
    canal_core::mq::RoutingConfig {
        flat_message: server.flat_message,
        topic: instance.topic.clone().unwrap_or(d.topic),
        dynamic_topic: instance.dynamic_topic.clone(),
        partition: instance.partition.unwrap_or(d.partition),
        partitions_num: instance.partitions_num,
        partition_hash: instance.partition_hash.clone(),
        dynamic_topic_partition_num: instance.dynamic_topic_partition_num.clone(),
        database_hash: server.database_hash,
        // Java's MQ mode forces `canal.instance.filter.transaction.entry` on.
        filter_transaction_entry: true,
    }
}

/// Every key `canal.toml` knows (dotted; `instance.*` included), from the structs themselves.
pub fn server_keys() -> BTreeSet<String> {
    sources::leaf_keys(&Serialized::defaults(ServerConfig::default()))
}

/// Every key `instance.toml` knows.
pub fn instance_keys() -> BTreeSet<String> {
    sources::leaf_keys(&Serialized::defaults(InstanceFileConfig::default()))
}

/// Whether `fig` holds a value (not the "unset" placeholder) at `key`.
fn is_set(fig: &Figment, key: &str) -> bool {
    matches!(fig.find_value(key), Ok(v) if !matches!(v, Value::Empty(..)))
}

/// Fails with the file's parse error, if any.
/// A TOML config file (server or instance), which wins over the `.properties` file beside it:
/// parsed (a syntax error names the file), with a warning for the ignored `.properties` file and
/// for every key not in `known`.
fn toml_file(
    toml: &Path,
    props: &Path,
    known: &BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Result<figment::providers::Data<Toml>, ConfigError> {
    if props.is_file() {
        warnings.push(format!("{}: ignored because {} exists", props.display(), toml.display()));
    }
    let provider = Toml::file_exact(toml);
    check_provider(&provider, toml)?;
    for key in sources::unknown_keys(&provider, known) {
        warnings.push(format!("{}: unknown key '{key}' ignored", toml.display()));
    }
    Ok(provider)
}

fn check_provider(provider: &impl Provider, path: &Path) -> Result<(), ConfigError> {
    provider
        .data()
        .map(drop)
        .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.kind.to_string() })
}

fn push_ignored(warnings: &mut Vec<String>, file: &PropertiesFile) {
    if !file.ignored().is_empty() {
        warnings.push(format!(
            "{}: ignored, not supported by canal-rs: {}",
            file.path().display(),
            file.ignored().join(", ")
        ));
    }
}

/// The first error of a failed extraction, with its origin and key.
fn map_figment(err: figment::Error, legacy: &[&PropertiesFile]) -> ConfigError {
    let first = err.into_iter().next();
    let Some(e) = first else {
        return ConfigError::Invalid {
            origin: "configuration".into(),
            key: String::new(),
            message: "cannot be read".into(),
        };
    };
    let key = e.path.join(".");
    let (origin, key) = sources::describe(e.metadata.as_ref(), &key, legacy);
    ConfigError::Invalid { origin, key, message: e.kind.to_string() }
}

/// Removes `.` and `..` components lexically (no symlink resolution, the path may not exist).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Destinations name directories and coordinator paths: no separators, no dots-only names.
fn check_destination_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Destination {
            name: name.to_owned(),
            message: "is not a valid destination name".into(),
        })
    }
}

/// Every subdirectory of `conf_dir` holding an instance file, sorted.
///
/// # Errors
/// [`ConfigError::File`] when the directory cannot be listed.
pub fn scan_destinations(conf_dir: &Path) -> Result<Vec<String>, ConfigError> {
    let io =
        |e: std::io::Error| ConfigError::File { path: conf_dir.to_owned(), message: e.to_string() };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(conf_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if (path.join(INSTANCE_TOML).is_file() || path.join(INSTANCE_PROPERTIES).is_file())
            && let Some(name) = entry.file_name().to_str()
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The `[coord]` section as `canal_coord` settings, validated; errors name our key.
fn coord_config(c: &CoordSection, data_dir: &Path) -> Result<CoordConfig, (&'static str, String)> {
    let mut out = CoordConfig {
        backend: c.backend,
        takeover_delay_ms: c.takeover_delay_ms,
        cursor_flush_period_ms: c.cursor_flush_period_ms,
        ..CoordConfig::default()
    };
    let prefix = c.key_prefix.trim();
    let mut servers = c.zk_servers.trim().to_owned();
    if !prefix.is_empty() && !servers.is_empty() {
        if servers.contains('/') {
            return Err((
                "coord.key_prefix",
                "zk_servers already has a chroot; set only one of them".into(),
            ));
        }
        servers.push_str(prefix);
    }
    out.zookeeper.servers = servers;
    out.zookeeper.session_timeout_ms = c.zk_session_timeout_ms;
    out.etcd.endpoints = c.etcd_endpoints.clone();
    out.etcd.lease_ttl_secs = c.etcd_lease_ttl_s;
    out.etcd.prefix = prefix.to_owned();
    out.local.data_dir = Some(data_dir.join("coord"));
    if let Err(e) = out.validate() {
        let key = match e.key {
            "zookeeper.servers" => "coord.zk_servers",
            "zookeeper.session_timeout_ms" => "coord.zk_session_timeout_ms",
            "etcd.endpoints" => "coord.etcd_endpoints",
            "etcd.lease_ttl_secs" => "coord.etcd_lease_ttl_s",
            "etcd.prefix" => "coord.key_prefix",
            "takeover_delay_ms" => "coord.takeover_delay_ms",
            _ => "coord",
        };
        return Err((key, format!("{:?}: {}", e.value, e.reason)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_come_from_the_structs() {
        let known = sources::leaf_keys(&Serialized::defaults(ServerConfig::default()));
        for k in
            ["port", "conf_dir", "coord.backend", "instance.master.address", "instance.time_zone"]
        {
            assert!(known.contains(k), "{k} missing from {known:?}");
        }
        // Every legacy mapping lands on a key the structs know.
        for (_, ours) in legacy::SERVER_KEYS {
            assert!(known.contains(*ours), "{ours}");
        }
        for (_, ours) in legacy::INSTANCE_KEYS {
            assert!(known.contains(&format!("instance.{ours}")), "{ours}");
        }
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize(Path::new("/a/conf/../data")), PathBuf::from("/a/data"));
        assert_eq!(normalize(Path::new("/a/conf/./x")), PathBuf::from("/a/conf/x"));
    }
}
