//! Typed coordination config (serde; the binaries load it with figment) and its validation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(feature = "etcd")]
use crate::backend::etcd::EtcdBackend;
use crate::backend::local::LocalBackend;
#[cfg(feature = "zookeeper")]
use crate::backend::zk::ZkBackend;
use crate::cursor::FlushPolicy;
use crate::error::CoordError;
use crate::session::Backend;

/// Which coordination service to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded single-node store.
    Local,
    /// ZooKeeper (Java Canal's layout and JSON).
    Zookeeper,
    /// etcd v3 (the same key strings under `etcd.prefix`).
    Etcd,
}

/// Coordination settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordConfig {
    /// The backend; when absent: ZooKeeper if `zookeeper.servers` is set, else etcd if
    /// `etcd.endpoints` is set, else local.
    pub backend: Option<BackendKind>,
    /// ZooKeeper settings.
    pub zookeeper: ZkConfig,
    /// etcd settings.
    pub etcd: EtcdConfig,
    /// Local backend settings.
    pub local: LocalConfig,
    /// How long standbys wait after the running node is deleted (Canal: 5000 ms).
    pub takeover_delay_ms: u64,
    /// Cursor flush period; 0 (the default) writes on every ack, before the connection's next
    /// frame is read, so an ack followed by any answered request is durable. Canal (Java)
    /// flushes every 1000 ms: an ack can be lost with a crash within that period.
    pub cursor_flush_period_ms: u64,
}

/// ZooKeeper settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZkConfig {
    /// `host:port,host:port[/chroot]` (Canal's `canal.zkServers`).
    pub servers: String,
    /// Requested session timeout (Canal: 90000 ms).
    pub session_timeout_ms: u64,
}

/// etcd settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// `http://host:port` endpoints.
    pub endpoints: Vec<String>,
    /// TTL of the session lease, in seconds.
    pub lease_ttl_secs: i64,
    /// Prepended to every key (default none): `{prefix}/otter/canal/...`.
    pub prefix: String,
}

/// Local backend settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Where durable nodes (cursors) are kept; `None` keeps them in memory only.
    pub data_dir: Option<PathBuf>,
    /// Simulated session timeout (only matters for crash simulation).
    pub session_timeout_ms: u64,
}

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig {
            backend: None,
            zookeeper: ZkConfig::default(),
            etcd: EtcdConfig::default(),
            local: LocalConfig::default(),
            takeover_delay_ms: 5000,
            cursor_flush_period_ms: 0,
        }
    }
}

impl Default for ZkConfig {
    fn default() -> Self {
        ZkConfig { servers: String::new(), session_timeout_ms: 90_000 }
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig { endpoints: Vec::new(), lease_ttl_secs: 10, prefix: String::new() }
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig { data_dir: None, session_timeout_ms: 10_000 }
    }
}

/// A config value that cannot work, naming its key.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
#[error("invalid coordination config '{key}' = '{value}': {reason}")]
pub struct ConfigError {
    /// The key, dotted (`zookeeper.servers`).
    pub key: &'static str,
    /// The offending value as written.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl CoordConfig {
    /// The backend in effect (explicit, or inferred from which service is configured).
    pub fn backend_kind(&self) -> BackendKind {
        self.backend.unwrap_or(if !self.zookeeper.servers.trim().is_empty() {
            BackendKind::Zookeeper
        } else if !self.etcd.endpoints.is_empty() {
            BackendKind::Etcd
        } else {
            BackendKind::Local
        })
    }

    /// The takeover delay.
    pub fn takeover_delay(&self) -> Duration {
        Duration::from_millis(self.takeover_delay_ms)
    }

    /// The cursor flush policy.
    pub fn flush_policy(&self) -> FlushPolicy {
        match self.cursor_flush_period_ms {
            0 => FlushPolicy::EveryAck,
            ms => FlushPolicy::Periodic(Duration::from_millis(ms)),
        }
    }

    /// Checks the settings of the backend in effect.
    ///
    /// # Errors
    /// The first bad key with its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, value: String, reason| Err(ConfigError { key, value, reason });
        match self.backend_kind() {
            BackendKind::Zookeeper => {
                let s = self.zookeeper.servers.trim();
                if !cfg!(feature = "zookeeper") {
                    return err(
                        "backend",
                        "zookeeper".into(),
                        "canal-coord was built without its `zookeeper` feature",
                    );
                }
                if s.is_empty() {
                    return err(
                        "zookeeper.servers",
                        s.to_owned(),
                        "required when backend = \"zookeeper\"",
                    );
                }
                let hosts = s.split('/').next().unwrap_or("");
                for h in hosts.split(',') {
                    let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok {
                        return err(
                            "zookeeper.servers",
                            s.to_owned(),
                            "each server must be host:port",
                        );
                    }
                }
                if self.zookeeper.session_timeout_ms < 100 {
                    return err(
                        "zookeeper.session_timeout_ms",
                        self.zookeeper.session_timeout_ms.to_string(),
                        "must be at least 100",
                    );
                }
            }
            BackendKind::Etcd => {
                if !cfg!(feature = "etcd") {
                    return err(
                        "backend",
                        "etcd".into(),
                        "canal-coord was built without its `etcd` feature",
                    );
                }
                if self.etcd.endpoints.is_empty() {
                    return err(
                        "etcd.endpoints",
                        String::new(),
                        "required when backend = \"etcd\"",
                    );
                }
                for e in &self.etcd.endpoints {
                    if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 9 {
                        return err(
                            "etcd.endpoints",
                            e.clone(),
                            "must be http://host:port or https://host:port",
                        );
                    }
                }
                if self.etcd.lease_ttl_secs < 1 {
                    return err(
                        "etcd.lease_ttl_secs",
                        self.etcd.lease_ttl_secs.to_string(),
                        "must be at least 1",
                    );
                }
                let p = &self.etcd.prefix;
                if !p.is_empty() && (!p.starts_with('/') || p.ends_with('/')) {
                    return err(
                        "etcd.prefix",
                        p.clone(),
                        "must be empty or start with '/' and not end with '/'",
                    );
                }
            }
            BackendKind::Local => {
                if self.local.session_timeout_ms == 0 {
                    return err("local.session_timeout_ms", "0".into(), "must be positive");
                }
            }
        }
        if self.takeover_delay_ms > 3_600_000 {
            return err(
                "takeover_delay_ms",
                self.takeover_delay_ms.to_string(),
                "must be at most one hour",
            );
        }
        Ok(())
    }

    /// Validates and opens the backend in effect (connections are made per session).
    ///
    /// # Errors
    /// [`OpenError::Config`] for bad settings; [`OpenError::Coord`] when the local store cannot
    /// be opened.
    pub fn open_backend(&self) -> Result<Arc<dyn Backend>, OpenError> {
        self.validate()?;
        Ok(match self.backend_kind() {
            BackendKind::Local => {
                let timeout = Duration::from_millis(self.local.session_timeout_ms);
                match &self.local.data_dir {
                    Some(dir) => Arc::new(LocalBackend::open(dir, timeout)?),
                    None => Arc::new(LocalBackend::in_memory(timeout)),
                }
            }
            #[cfg(feature = "zookeeper")]
            BackendKind::Zookeeper => Arc::new(ZkBackend::new(
                self.zookeeper.servers.trim(),
                Duration::from_millis(self.zookeeper.session_timeout_ms),
            )),
            #[cfg(feature = "etcd")]
            BackendKind::Etcd => Arc::new(EtcdBackend::new(
                self.etcd.endpoints.clone(),
                self.etcd.lease_ttl_secs,
                &self.etcd.prefix,
            )),
            // `validate` already refuses a backend this build lacks; refuse it here too.
            #[cfg(not(all(feature = "zookeeper", feature = "etcd")))]
            kind => {
                return Err(OpenError::Config(ConfigError {
                    key: "backend",
                    value: format!("{kind:?}").to_lowercase(),
                    reason: "canal-coord was built without this backend's feature",
                }));
            }
        })
    }
}

/// Why [`CoordConfig::open_backend`] failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The backend could not be opened.
    #[error(transparent)]
    Coord(#[from] CoordError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_local() {
        let c = CoordConfig::default();
        assert_eq!(c.backend_kind(), BackendKind::Local);
        c.validate().unwrap();
        assert_eq!(c.takeover_delay(), Duration::from_secs(5));
        assert_eq!(c.flush_policy(), FlushPolicy::EveryAck);
    }

    #[test]
    fn infers_zookeeper_and_names_bad_keys() {
        let c: CoordConfig = serde_json::from_str(
            r#"{"zookeeper":{"servers":"127.0.0.1:2181,10.0.0.2:2181/canal"}}"#,
        )
        .unwrap();
        assert_eq!(c.backend_kind(), BackendKind::Zookeeper);
        c.validate().unwrap();
        let c: CoordConfig = serde_json::from_str(r#"{"zookeeper":{"servers":"nohost"}}"#).unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "zookeeper.servers");
        assert_eq!(e.value, "nohost");
        assert!(e.to_string().contains("'zookeeper.servers' = 'nohost'"), "{e}");
        let c: CoordConfig =
            serde_json::from_str(r#"{"backend":"etcd","etcd":{"endpoints":["127.0.0.1:2379"]}}"#)
                .unwrap();
        assert_eq!(c.validate().unwrap_err().key, "etcd.endpoints");
        let c: CoordConfig = serde_json::from_str(r#"{"backend":"etcd"}"#).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "etcd.endpoints");
        assert!(serde_json::from_str::<CoordConfig>(r#"{"backend":"consul"}"#).is_err());
        assert!(serde_json::from_str::<CoordConfig>(r#"{"zk":{}}"#).is_err());
    }

    /// A backend left out of the build is a config error naming it, never a panic.
    #[test]
    fn a_backend_without_its_feature_is_a_config_error() {
        let zk: CoordConfig =
            serde_json::from_str(r#"{"zookeeper":{"servers":"127.0.0.1:2181"}}"#).unwrap();
        let etcd: CoordConfig =
            serde_json::from_str(r#"{"etcd":{"endpoints":["http://127.0.0.1:2379"]}}"#).unwrap();
        for (c, built) in [(zk, cfg!(feature = "zookeeper")), (etcd, cfg!(feature = "etcd"))] {
            match c.validate() {
                Ok(()) => assert!(built),
                Err(e) => {
                    assert!(!built, "{e}");
                    assert_eq!(e.key, "backend");
                    assert!(matches!(c.open_backend(), Err(OpenError::Config(_))));
                }
            }
        }
    }
}
