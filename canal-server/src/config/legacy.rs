//! Java Canal's `canal.properties` and `instance.properties` as a figment provider: the file is
//! parsed with `java-properties` (Java escaping: `\\.` is a regex `\.`, `\uXXXX`, continuation
//! lines) and each supported Canal key is renamed to ours through [`SERVER_KEYS`] and
//! [`INSTANCE_KEYS`]; the rest is reported, never an error.
//!
//! Values stay strings (no type inference: `dbPassword=0123` stays `"0123"`); they are trimmed,
//! and an empty value means unset, as in Canal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider, Source};

/// Server-scope Canal keys and the key they set in `canal.toml`.
pub const SERVER_KEYS: &[(&str, &str)] = &[
    ("canal.ip", "ip"),
    ("canal.register.ip", "register_ip"),
    ("canal.port", "port"),
    ("canal.metrics.pull.port", "metrics_port"),
    ("canal.user", "user"),
    ("canal.passwd", "passwd"),
    ("canal.destinations", "destinations"),
    ("canal.conf.dir", "conf_dir"),
    ("canal.file.data.dir", "data_dir"),
    // A non-empty connect string selects the zookeeper backend (inferred when `backend` is unset).
    ("canal.zkServers", "coord.zk_servers"),
    ("canal.zookeeper.flush.period", "coord.cursor_flush_period_ms"),
    // MQ mode (docs/configuration.md, "MQ mode").
    ("canal.serverMode", "mq.mode"),
    ("canal.mq.flatMessage", "mq.flat_message"),
    ("canal.mq.canalBatchSize", "mq.batch_size"),
    ("canal.mq.canalGetTimeout", "mq.get_timeout_ms"),
    ("canal.mq.database.hash", "mq.database_hash"),
    ("kafka.bootstrap.servers", "mq.kafka.bootstrap_servers"),
    ("kafka.acks", "mq.kafka.acks"),
    ("kafka.compression.type", "mq.kafka.compression_type"),
    ("kafka.batch.size", "mq.kafka.batch_size"),
    ("kafka.linger.ms", "mq.kafka.linger_ms"),
    ("kafka.max.request.size", "mq.kafka.max_request_size"),
    ("kafka.retries", "mq.kafka.retries"),
    ("kafka.transactional", "mq.kafka.transactional"),
    ("kafka.position.topic", "mq.kafka.position_topic"),
    ("rabbitmq.host", "mq.rabbitmq.host"),
    ("rabbitmq.virtual.host", "mq.rabbitmq.virtual_host"),
    ("rabbitmq.exchange", "mq.rabbitmq.exchange"),
    ("rabbitmq.username", "mq.rabbitmq.username"),
    ("rabbitmq.password", "mq.rabbitmq.password"),
    ("rabbitmq.queue", "mq.rabbitmq.queue"),
    ("rabbitmq.routingKey", "mq.rabbitmq.routing_key"),
    ("rabbitmq.deliveryMode", "mq.rabbitmq.delivery_mode"),
    ("canal.auto.scan", "auto_scan"),
    ("canal.auto.scan.interval", "auto_scan_interval_s"),
    // Balancing (ours; docs/configuration.md "Balancing").
    ("canal.balance.enabled", "balance.enabled"),
    ("canal.balance.slack", "balance.slack"),
    ("canal.balance.maxDeferMs", "balance.max_defer_ms"),
    ("canal.balance.refreshMs", "balance.refresh_ms"),
];

/// A destination's MQ routing keys (in `instance.properties`; in `canal.properties` they set the
/// `[instance.mq]` defaults) and the key they set in `instance.toml`.
pub const MQ_INSTANCE_KEYS: &[(&str, &str)] = &[
    ("canal.mq.topic", "mq.topic"),
    ("canal.mq.dynamicTopic", "mq.dynamic_topic"),
    ("canal.mq.partition", "mq.partition"),
    ("canal.mq.partitionsNum", "mq.partitions_num"),
    ("canal.mq.partitionHash", "mq.partition_hash"),
    ("canal.mq.dynamicTopicPartitionNum", "mq.dynamic_topic_partition_num"),
];

/// Instance-scope Canal keys (`canal.instance.` stripped) and the key they set in
/// `instance.toml`; in `canal.properties` they set the same key under `[instance]`.
pub const INSTANCE_KEYS: &[(&str, &str)] = &[
    ("balance.weight", "balance.weight"),
    ("balance.prefer", "balance.prefer"),
    ("master.address", "master.address"),
    ("master.journal.name", "master.journal_name"),
    ("master.position", "master.position"),
    ("master.timestamp", "master.timestamp"),
    ("master.gtid", "master.gtid"),
    ("dbUsername", "db.username"),
    ("dbPassword", "db.password"),
    ("mysql.slaveId", "db.slave_id"),
    ("connectionCharset", "db.connection_charset"),
    ("gtidon", "gtid_mode"),
    ("filter.regex", "filter.regex"),
    ("filter.black.regex", "filter.black_regex"),
    ("filter.field", "filter.field"),
    ("filter.black.field", "filter.black_field"),
    ("filter.query.dml", "filter.query_dml"),
    ("filter.query.dcl", "filter.query_dcl"),
    ("filter.query.ddl", "filter.query_ddl"),
    ("filter.rows", "filter.rows"),
    ("filter.table.error", "filter.table_error"),
    ("memory.buffer.size", "memory.buffer_size"),
    ("memory.buffer.memunit", "memory.buffer_memunit"),
    ("memory.batch.mode", "memory.batch_mode"),
    ("transaction.size", "transaction_size"),
    ("fallbackIntervalInSeconds", "fallback_interval_s"),
    ("get.ddl.isolation", "ddl_isolation"),
];

/// Canal keys that need no setting here when they hold the value shown (what canal-rs always
/// does), or any value when `None` (informational or replaced by our own mechanism). Other values
/// of these keys are reported as not supported.
const NO_OP_KEYS: &[(&str, Option<&str>)] = &[
    ("canal.id", None),
    ("canal.withoutNetty", Some("false")),
    ("canal.instance.global.mode", Some("spring")),
    ("canal.instance.global.lazy", Some("false")),
    ("canal.instance.destination", None),
    ("canal.instance.memory.rawEntry", Some("true")),
    ("canal.instance.filter.druid.ddl", Some("true")),
    ("canal.instance.filter.transaction.entry", Some("false")),
    ("canal.instance.detecting.enable", Some("false")),
    ("canal.instance.tsdb.enable", Some("true")),
    ("canal.instance.enableDruid", Some("false")),
    ("canal.instance.multi.stream.on", Some("false")),
];

/// Which file a provider reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `canal.properties`: server keys, and instance keys as `[instance]` defaults.
    Server,
    /// `instance.properties`: instance keys only.
    Instance,
}

/// The result of reading one properties file.
#[derive(Clone, Debug)]
pub struct PropertiesFile {
    path: PathBuf,
    scope: Scope,
    /// Our key → value.
    values: BTreeMap<String, String>,
    /// Our key → the Canal key it came from.
    origins: BTreeMap<String, String>,
    /// Keys with a value that canal-rs does not act on.
    ignored: Vec<String>,
    /// Set for environment variables: what to call them instead of a file.
    label: Option<String>,
}

/// What dotted Canal keys in the environment are called in messages.
pub const ENV_LABEL: &str = "environment (Canal keys)";

/// The figment name of properties providers.
pub const PROVIDER_NAME: &str = "Java properties file";

/// Maps a Canal key to ours for `scope`; `None` when unsupported.
pub fn map_key(key: &str, scope: Scope) -> Option<String> {
    if let Some(rest) = key.strip_prefix("canal.instance.") {
        let ours = INSTANCE_KEYS.iter().find(|(k, _)| *k == rest).map(|(_, v)| *v)?;
        return Some(match scope {
            Scope::Server => format!("instance.{ours}"),
            Scope::Instance => ours.to_owned(),
        });
    }
    if let Some((_, ours)) = MQ_INSTANCE_KEYS.iter().find(|(k, _)| *k == key) {
        return Some(match scope {
            Scope::Server => format!("instance.{ours}"),
            Scope::Instance => (*ours).to_owned(),
        });
    }
    match scope {
        Scope::Server => SERVER_KEYS.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned()),
        Scope::Instance => None,
    }
}

impl PropertiesFile {
    /// Reads and maps `path`.
    ///
    /// # Errors
    /// A message when the file cannot be read or is not a properties file.
    pub fn read(path: &Path, scope: Scope) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let raw =
            java_properties::read(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
        Ok(Self::from_map(path, scope, raw))
    }

    /// Maps already-parsed properties (what [`PropertiesFile::read`] does after parsing).
    pub fn from_map(
        path: &Path,
        scope: Scope,
        raw: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut out = Self {
            path: path.to_owned(),
            scope,
            values: BTreeMap::new(),
            origins: BTreeMap::new(),
            ignored: Vec::new(),
            label: None,
        };
        let sorted: BTreeMap<String, String> =
            raw.into_iter().map(|(k, v)| (k.trim().to_owned(), v)).collect();
        for (key, value) in &sorted {
            let key = key.as_str();
            let value = interpolate(value, &sorted, 0);
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if let Some(ours) = map_key(key, scope) {
                out.origins.insert(ours.clone(), key.to_owned());
                out.values.insert(ours, value.to_owned());
                continue;
            }
            let no_op = NO_OP_KEYS.iter().find(|(k, _)| *k == key).is_some_and(|(_, v)| match v {
                None => true,
                Some(v) => v.eq_ignore_ascii_case(value),
            });
            if !no_op {
                out.ignored.push(key.to_owned());
            }
        }
        out
    }

    /// Environment variables named by Canal keys (`canal.port=11112`,
    /// `canal.instance.master.address=db:3306`), as Canal's docker image passes them as JVM
    /// system properties: they override both `canal.properties` and `instance.properties`.
    /// Variables not starting with `canal.` are left out.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>, scope: Scope) -> Self {
        let vars = vars.into_iter().filter(|(k, _)| k.starts_with("canal."));
        let mut out = Self::from_map(Path::new(ENV_LABEL), scope, vars);
        out.label = Some(ENV_LABEL.to_owned());
        out
    }

    /// The label of environment-variable sources.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.ignored.is_empty()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Our keys with their values.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// The Canal key that set our `key`, if this file set it.
    pub fn canal_key(&self, key: &str) -> Option<&str> {
        self.origins.get(key).map(String::as_str)
    }

    /// Keys with a value that canal-rs does not act on (sorted).
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// The scope it was read with.
    pub fn scope(&self) -> Scope {
        self.scope
    }
}

impl Provider for PropertiesFile {
    fn metadata(&self) -> Metadata {
        match &self.label {
            Some(label) => Metadata::from(PROVIDER_NAME, Source::Custom(label.clone())),
            None => Metadata::from(PROVIDER_NAME, Source::File(self.path.clone())),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut dict = Dict::new();
        for (key, value) in &self.values {
            insert_dotted(&mut dict, key, Value::from(value.clone())).map_err(Error::from)?;
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Expands Spring-style placeholders `${key}` and `${key:default}` from the same file, as Canal's
/// sample uses them (`canal.file.data.dir = ${canal.conf.dir}`); an unknown key without a default
/// expands to nothing (unset).
fn interpolate(value: &str, props: &BTreeMap<String, String>, depth: usize) -> String {
    if depth > 8 || !value.contains("${") {
        return value.to_owned();
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // The matching `}`, allowing nested `${...}` in a default.
        let mut level = 1;
        let mut end = None;
        let bytes = after.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
                level += 1;
                i += 2;
                continue;
            }
            if bytes[i] == b'}' {
                level -= 1;
                if level == 0 {
                    end = Some(i);
                    break;
                }
            }
            i += 1;
        }
        let Some(end) = end else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(':') {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (inner.trim(), None),
        };
        match props.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&interpolate(v, props, depth + 1)),
            None => {
                if let Some(d) = default {
                    out.push_str(&interpolate(d, props, depth + 1));
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Inserts `value` at dotted `key` in `dict`, creating tables on the way.
///
/// # Errors
/// When a prefix of `key` already holds a value that is not a table.
pub fn insert_dotted(dict: &mut Dict, key: &str, value: Value) -> Result<(), String> {
    let mut parts = key.split('.').peekable();
    let mut cur = dict;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_owned(), value);
            return Ok(());
        }
        let entry = cur.entry(part.to_owned()).or_insert_with(|| Value::from(Dict::new()));
        cur = match entry {
            Value::Dict(_, d) => d,
            _ => return Err(format!("key {key:?} is both a value and a table")),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_covers_both_scopes() {
        assert_eq!(map_key("canal.port", Scope::Server).as_deref(), Some("port"));
        assert_eq!(map_key("canal.port", Scope::Instance), None);
        assert_eq!(map_key("canal.zkServers", Scope::Server).as_deref(), Some("coord.zk_servers"));
        assert_eq!(
            map_key("canal.instance.filter.black.regex", Scope::Instance).as_deref(),
            Some("filter.black_regex")
        );
        assert_eq!(
            map_key("canal.instance.memory.buffer.size", Scope::Server).as_deref(),
            Some("instance.memory.buffer_size")
        );
        assert_eq!(map_key("canal.instance.gtidon", Scope::Instance).as_deref(), Some("gtid_mode"));
        assert_eq!(map_key("canal.mq.accessChannel", Scope::Instance), None);
        // Canal keys are case-sensitive.
        assert_eq!(map_key("canal.zkservers", Scope::Server), None);
    }

    #[test]
    fn values_stay_strings_and_noise_is_reported() {
        let f = PropertiesFile::from_map(
            Path::new("x/instance.properties"),
            Scope::Instance,
            [
                ("canal.instance.dbPassword".to_owned(), "0123".to_owned()),
                ("canal.instance.master.journal.name".to_owned(), "  ".to_owned()),
                ("canal.mq.accessChannel".to_owned(), "local".to_owned()),
                ("canal.instance.tsdb.enable".to_owned(), "true".to_owned()),
                ("canal.instance.tsdb.enable.x".to_owned(), "true".to_owned()),
            ],
        );
        assert_eq!(f.values().get("db.password").map(String::as_str), Some("0123"));
        assert!(!f.values().contains_key("master.journal_name"));
        assert_eq!(f.ignored(), ["canal.instance.tsdb.enable.x", "canal.mq.accessChannel"]);
        assert_eq!(f.canal_key("db.password"), Some("canal.instance.dbPassword"));
    }

    #[test]
    fn placeholders_expand_from_the_same_file() {
        let props: BTreeMap<String, String> = [
            ("canal.conf.dir", "../conf"),
            ("canal.file.data.dir", "${canal.conf.dir}"),
            ("a", "${missing:${canal.file.data.dir}/x}-${missing}-${b:}"),
            ("self", "${self}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(interpolate("${canal.file.data.dir}", &props, 0), "../conf");
        assert_eq!(interpolate("${a}", &props, 0), "../conf/x--");
        assert_eq!(interpolate("${unclosed", &props, 0), "${unclosed");
        // Self-reference stops at the depth limit instead of recursing forever.
        assert!(interpolate("${self}", &props, 0).contains("${self}"));
        let f =
            PropertiesFile::from_map(Path::new("canal.properties"), Scope::Server, props.clone());
        assert_eq!(f.values().get("data_dir").map(String::as_str), Some("../conf"));
    }

    #[test]
    fn every_target_is_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for (_, v) in SERVER_KEYS.iter().chain(INSTANCE_KEYS) {
            assert!(seen.insert(*v), "{v} mapped twice");
        }
    }
}
