//! Where configuration values come from besides files: `CANAL_` environment variables and
//! command-line overrides (both figment providers emitting strings), and the helpers that name a
//! value's origin (file and key) in warnings and errors.

use std::collections::BTreeSet;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider, Source};

use super::legacy::{self, PropertiesFile};

/// Name of the environment provider.
pub const ENV_NAME: &str = "environment";
/// Name of the command-line override provider.
pub const CLI_NAME: &str = "command line";
/// Prefix of the environment variables read.
pub const ENV_PREFIX: &str = "CANAL_";

/// `CANAL_` environment variables: `CANAL_PORT=11112`, nested with `__`
/// (`CANAL_COORD__BACKEND=etcd`, `CANAL_INSTANCE__FILTER__REGEX=...`). Keys are lower-cased;
/// values stay strings (figment's own `Env` would turn `123456` into a number). Variables whose
/// first segment is not a server key (e.g. `CANAL_TEST_MYSQL_URL`) are not configuration and are
/// left out; empty values mean unset.
#[derive(Clone, Debug, Default)]
pub struct EnvProvider {
    vars: Vec<(String, String)>,
    top_keys: BTreeSet<String>,
}

impl EnvProvider {
    /// From explicit `(name, value)` pairs (tests; or `std::env::vars()`).
    pub fn new(
        vars: impl IntoIterator<Item = (String, String)>,
        top_keys: BTreeSet<String>,
    ) -> Self {
        Self { vars: vars.into_iter().collect(), top_keys }
    }

    /// The config key of an environment variable name, if it is one of ours.
    pub fn key_of(&self, name: &str) -> Option<String> {
        let rest = name.strip_prefix(ENV_PREFIX)?;
        let key = rest.to_ascii_lowercase().split("__").collect::<Vec<_>>().join(".");
        let top = key.split('.').next().unwrap_or_default();
        self.top_keys.contains(top).then_some(key)
    }

    /// `(key, value)` of every variable taken.
    pub fn entries(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .filter_map(|(k, v)| self.key_of(k).map(|key| (key, v.trim().to_owned())))
            .collect()
    }
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::from(ENV_NAME, Source::Custom("CANAL_ environment variables".into()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in self.entries() {
            legacy::insert_dotted(&mut dict, &key, Value::from(value))
                .map_err(figment::Error::from)?;
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// `key=value` overrides from the command line (dotted keys as in `canal.toml`).
#[derive(Clone, Debug, Default)]
pub struct CliProvider {
    pub(crate) values: Vec<(String, String)>,
}

impl Provider for CliProvider {
    fn metadata(&self) -> Metadata {
        Metadata::from(CLI_NAME, Source::Custom("command-line override".into()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in &self.values {
            legacy::insert_dotted(&mut dict, key, Value::from(value.clone()))
                .map_err(figment::Error::from)?;
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Where a value came from, for messages: a file, an environment variable, the command line.
pub fn describe(
    meta: Option<&Metadata>,
    key: &str,
    legacy: &[&PropertiesFile],
) -> (String, String) {
    let Some(meta) = meta else { return ("configuration".into(), key.to_owned()) };
    if meta.name == ENV_NAME {
        let var = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase().replace('.', "__"));
        return ("environment".into(), var);
    }
    if meta.name == CLI_NAME {
        return ("command line".into(), key.to_owned());
    }
    match &meta.source {
        Some(Source::File(path)) => {
            let shown = legacy
                .iter()
                .find(|f| f.path() == path.as_path())
                .and_then(|f| f.canal_key(key))
                .unwrap_or(key);
            (path.display().to_string(), shown.to_owned())
        }
        Some(Source::Custom(s)) => {
            let shown = legacy
                .iter()
                .find(|f| f.label() == Some(s.as_str()))
                .and_then(|f| f.canal_key(key))
                .unwrap_or(key);
            (s.clone(), shown.to_owned())
        }
        _ => (meta.name.to_string(), key.to_owned()),
    }
}

/// Every leaf key path of a figment's merged data (e.g. `coord.backend`).
pub fn leaf_keys(provider: &impl Provider) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(data) = provider.data() {
        for dict in data.values() {
            walk(dict, "", &mut out);
        }
    }
    out
}

/// Adds the leaf paths of `dict` (below `prefix`) to `out`.
pub fn walk(dict: &Dict, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in dict {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Dict(_, d) => walk(d, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

/// Keys `provider` sets that are not in `known`, sorted.
pub fn unknown_keys(provider: &impl Provider, known: &BTreeSet<String>) -> Vec<String> {
    leaf_keys(provider)
        .into_iter()
        // Passed to librdkafka as they are; it names the ones it does not know.
        .filter(|k| !known.contains(k) && !k.starts_with("mq.kafka.properties."))
        .collect()
}
