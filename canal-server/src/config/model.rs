//! The typed configuration as written in `conf/canal.toml` and `conf/<destination>/instance.toml`
//! (serde structs; every instance key is optional so the server's `[instance]` defaults apply).
//!
//! Values may arrive as strings (legacy `.properties` files, environment variables): numbers and
//! booleans are read with figment's lossy extraction, and text fields accept numbers too, so
//! `dbPassword=0123` stays `"0123"` and `password = 123456` in TOML is not an error.

use std::path::PathBuf;

use canal_coord::BackendKind;
use serde::{Deserialize, Deserializer, Serialize};

/// `conf/canal.toml`: how the server listens, which destinations it serves, where it keeps state,
/// how it coordinates with other servers, and defaults for every instance. `Debug` hides `passwd`
/// (password-equivalent for Canal's protocol) and database passwords.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Bind address of the client TCP port (`canal.ip`); empty = all interfaces.
    #[serde(deserialize_with = "text")]
    pub ip: String,
    /// Address published to the coordinator (`canal.register.ip`); empty = `ip`, then the local
    /// host's address.
    #[serde(deserialize_with = "text")]
    pub register_ip: String,
    /// Client TCP port (`canal.port`).
    pub port: u16,
    /// Prometheus exporter port (`canal.metrics.pull.port`); 0 disables it.
    pub metrics_port: u16,
    /// Client user (`canal.user`); empty = any user.
    #[serde(deserialize_with = "text")]
    pub user: String,
    /// Hex of SHA1(SHA1(password)) (`canal.passwd`, MySQL `PASSWORD()` without the `*`); empty =
    /// no password.
    #[serde(deserialize_with = "text")]
    pub passwd: String,
    /// Destinations served (`canal.destinations`): a TOML array or a comma list; empty = every
    /// subdirectory of `conf_dir` holding an `instance.toml` or `instance.properties`.
    #[serde(deserialize_with = "list")]
    pub destinations: Vec<String>,
    /// Directory holding `<destination>/instance.toml` (`canal.conf.dir`); default: the
    /// directory of the server file. Relative paths are taken from that directory.
    pub conf_dir: Option<PathBuf>,
    /// Root for local state: schema history, local coordinator data (`canal.file.data.dir`);
    /// default `<conf_dir>/../data`. Relative paths are taken from the server file's directory.
    pub data_dir: Option<PathBuf>,
    /// Coordination (HA and cursors).
    pub coord: CoordSection,
    /// Retries of failed activations and instances, and when to hand a destination over.
    pub supervisor: SupervisorSection,
    /// Defaults for every instance (`canal.instance.*` in `canal.properties`).
    pub instance: InstanceFileConfig,
    /// MQ mode (`canal.serverMode`, `canal.mq.*`, `kafka.*`, `rabbitmq.*`).
    pub mq: MqSection,
    /// Balanced ownership of destinations across servers.
    pub balance: BalanceSection,
    /// Re-read the destinations every `auto_scan_interval_s` (`canal.auto.scan`); SIGHUP
    /// re-reads them in any case.
    pub auto_scan: bool,
    /// Seconds between scans (`canal.auto.scan.interval`, at least 1).
    pub auto_scan_interval_s: u64,
    /// Bearer token of the admin API on the metrics port; empty = loopback peers only.
    #[serde(deserialize_with = "text")]
    pub admin_token: String,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("ip", &self.ip)
            .field("register_ip", &self.register_ip)
            .field("port", &self.port)
            .field("metrics_port", &self.metrics_port)
            .field("user", &self.user)
            .field("passwd", &redacted(!self.passwd.is_empty()))
            .field("destinations", &self.destinations)
            .field("conf_dir", &self.conf_dir)
            .field("data_dir", &self.data_dir)
            .field("coord", &self.coord)
            .field("supervisor", &self.supervisor)
            .field("instance", &self.instance)
            .field("mq", &self.mq)
            .field("balance", &self.balance)
            .field("auto_scan", &self.auto_scan)
            .field("auto_scan_interval_s", &self.auto_scan_interval_s)
            .field("admin_token", &redacted(!self.admin_token.is_empty()))
            .finish()
    }
}

fn redacted(set: bool) -> &'static str {
    if set { "<redacted>" } else { "<empty>" }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ip: String::new(),
            register_ip: String::new(),
            port: 11111,
            metrics_port: 11112,
            user: String::new(),
            passwd: String::new(),
            destinations: Vec::new(),
            conf_dir: None,
            data_dir: None,
            coord: CoordSection::default(),
            supervisor: SupervisorSection::default(),
            instance: InstanceFileConfig::default(),
            mq: MqSection::default(),
            balance: BalanceSection::default(),
            auto_scan: true,
            auto_scan_interval_s: 5,
            admin_token: String::new(),
        }
    }
}

/// `[balance]`: how the servers of a cluster share the destinations they are configured for
/// (docs/operations.md "Balancing"). Only servers with two or more destinations balance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BalanceSection {
    /// Balance (default true); false = every server competes for every destination, as Java
    /// Canal does.
    pub enabled: bool,
    /// Weight a server may hold above `ceil(W / N)` before it hands destinations over
    /// (default 0).
    pub slack: u32,
    /// Longest a server at its share leaves a free destination to others before taking it
    /// itself, in ms (default 10000).
    pub max_defer_ms: u64,
    /// Period of the cluster view's refresh, in ms (default 1000).
    pub refresh_ms: u64,
}

impl Default for BalanceSection {
    fn default() -> Self {
        Self { enabled: true, slack: 0, max_defer_ms: 10_000, refresh_ms: 1000 }
    }
}

/// An instance's `[balance]`: its weight and preferred servers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceBalanceSection {
    /// Weight in the share (default 1, at least 1).
    pub weight: Option<u32>,
    /// Servers (`ip:port` as registered) that run this destination whenever one of them is live.
    #[serde(deserialize_with = "list")]
    pub prefer: Vec<String>,
}

/// Where changes go (`canal.serverMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerMode {
    /// Canal's TCP protocol: clients GET and ACK.
    #[default]
    Tcp,
    /// Publish into Kafka.
    Kafka,
    /// Publish into RabbitMQ.
    Rabbitmq,
}

impl<'de> Deserialize<'de> for ServerMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d)?;
        // Canal spells them `tcp`, `kafka`, `rabbitMQ` (and `rocketMQ`, `pulsarMQ`).
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(ServerMode::Tcp),
            "kafka" => Ok(ServerMode::Kafka),
            "rabbitmq" => Ok(ServerMode::Rabbitmq),
            "rocketmq" | "pulsarmq" => Err(serde::de::Error::custom(format!(
                "server mode {s:?} is not supported by canal-rs (tcp, kafka, rabbitMQ)"
            ))),
            _ => Err(serde::de::Error::custom(format!(
                "unknown server mode {s:?} (tcp, kafka, rabbitMQ)"
            ))),
        }
    }
}

/// `[mq]`: MQ mode. In `kafka` or `rabbitmq` mode the active server of each destination reads
/// its store as client 1001 and publishes every change; a batch is acked (and the cursor moves)
/// only once the broker confirmed all of its messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MqSection {
    /// `canal.serverMode`.
    pub mode: ServerMode,
    /// FlatMessage JSON instead of protobuf (`canal.mq.flatMessage`, true).
    pub flat_message: bool,
    /// Entries (ITEMSIZE) or memunits (MEMSIZE) per store batch (`canal.mq.canalBatchSize`, 50).
    pub batch_size: usize,
    /// How long a store GET waits for a full batch, in ms (`canal.mq.canalGetTimeout`, 100).
    pub get_timeout_ms: u64,
    /// Mix the database name's hash into the column hashes of `partitionHash` rules, as Java
    /// does (`canal.mq.database.hash`, true).
    pub database_hash: bool,
    /// Batches sent and not yet confirmed, at most (back-pressure; canal-rs only, default 8).
    pub max_in_flight_batches: usize,
    /// Pause before the first retry of a failed send, in ms; doubles up to `retry_backoff_max_ms`.
    pub retry_backoff_ms: u64,
    /// Longest pause between retries of a failed send, in ms.
    pub retry_backoff_max_ms: u64,
    /// Kafka producer settings (`kafka.*`).
    pub kafka: KafkaSection,
    /// RabbitMQ producer settings (`rabbitmq.*`).
    pub rabbitmq: RabbitmqSection,
}

impl Default for MqSection {
    fn default() -> Self {
        Self {
            mode: ServerMode::Tcp,
            flat_message: true,
            batch_size: 50,
            get_timeout_ms: 100,
            database_hash: true,
            max_in_flight_batches: 8,
            retry_backoff_ms: 500,
            retry_backoff_max_ms: 10_000,
            kafka: KafkaSection::default(),
            rabbitmq: RabbitmqSection::default(),
        }
    }
}

/// `[mq.kafka]`: the Kafka producer (librdkafka). `properties` are passed to librdkafka as they
/// are and override the named keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSection {
    /// `kafka.bootstrap.servers` (`host:port,...`).
    #[serde(deserialize_with = "text")]
    pub bootstrap_servers: String,
    /// `kafka.acks` (`all`). Idempotence needs `all`.
    #[serde(deserialize_with = "text")]
    pub acks: String,
    /// `kafka.compression.type`: none, gzip, snappy, lz4, zstd.
    #[serde(deserialize_with = "text")]
    pub compression_type: String,
    /// `kafka.batch.size` in bytes (16384).
    pub batch_size: u64,
    /// `kafka.linger.ms` (1).
    pub linger_ms: u64,
    /// `kafka.max.request.size` in bytes (1048576; librdkafka's `message.max.bytes`).
    pub max_request_size: u64,
    /// `kafka.retries`: librdkafka's internal resends of a failed produce request (unset: its
    /// default). Sends that still fail are retried by the worker with backoff.
    pub retries: Option<u32>,
    /// Idempotent producer (default true; needs `acks=all`).
    pub idempotence: bool,
    /// `kafka.transactional`: each batch's messages and the destination's position in one Kafka
    /// transaction (see docs/configuration.md).
    pub transactional: bool,
    /// Topic holding the positions of transactional mode (compacted, one key per destination).
    #[serde(deserialize_with = "text")]
    pub position_topic: String,
    /// More librdkafka properties, e.g. `"message.timeout.ms" = "60000"`.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            acks: "all".into(),
            compression_type: "none".into(),
            batch_size: 16_384,
            linger_ms: 1,
            max_request_size: 1_048_576,
            retries: None,
            idempotence: true,
            transactional: false,
            position_topic: "canal_positions".into(),
            properties: std::collections::BTreeMap::new(),
        }
    }
}

/// `[mq.rabbitmq]`: the RabbitMQ producer. Messages are published to `exchange` with the topic
/// as routing key, persistent, with publisher confirms.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RabbitmqSection {
    /// `rabbitmq.host`: `host` or `host:port` (port 5672 by default).
    #[serde(deserialize_with = "text")]
    pub host: String,
    /// `rabbitmq.virtual.host` (`/`).
    #[serde(deserialize_with = "text")]
    pub virtual_host: String,
    /// `rabbitmq.exchange` (empty = the default exchange: the routing key names a queue).
    #[serde(deserialize_with = "text")]
    pub exchange: String,
    /// `rabbitmq.username`.
    #[serde(deserialize_with = "text")]
    pub username: String,
    /// `rabbitmq.password`.
    #[serde(deserialize_with = "text")]
    pub password: String,
    /// `rabbitmq.queue`: when set, declared durable and bound to `exchange` with `routing_key`.
    #[serde(deserialize_with = "opt_text")]
    pub queue: Option<String>,
    /// `rabbitmq.routingKey`: the binding key of `queue`.
    #[serde(deserialize_with = "opt_text")]
    pub routing_key: Option<String>,
    /// `rabbitmq.deliveryMode`: as in Java Canal, the TYPE of `exchange` (direct, fanout, topic,
    /// headers); when set, the exchange is declared durable with it.
    #[serde(deserialize_with = "opt_text")]
    pub delivery_mode: Option<String>,
}

impl Default for RabbitmqSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            virtual_host: "/".into(),
            exchange: String::new(),
            username: "guest".into(),
            password: "guest".into(),
            queue: None,
            routing_key: None,
            delivery_mode: None,
        }
    }
}

impl std::fmt::Debug for RabbitmqSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitmqSection")
            .field("host", &self.host)
            .field("virtual_host", &self.virtual_host)
            .field("exchange", &self.exchange)
            .field("username", &self.username)
            .field("password", &redacted(!self.password.is_empty()))
            .field("queue", &self.queue)
            .field("routing_key", &self.routing_key)
            .field("delivery_mode", &self.delivery_mode)
            .finish()
    }
}

/// An instance's `[mq]` routing (`canal.mq.*` of `instance.properties`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceMqSection {
    /// `canal.mq.topic` (default `example`).
    #[serde(deserialize_with = "opt_text")]
    pub topic: Option<String>,
    /// `canal.mq.dynamicTopic`.
    #[serde(deserialize_with = "opt_text")]
    pub dynamic_topic: Option<String>,
    /// `canal.mq.partition` (0).
    pub partition: Option<i32>,
    /// `canal.mq.partitionsNum`.
    pub partitions_num: Option<u32>,
    /// `canal.mq.partitionHash`.
    #[serde(deserialize_with = "opt_text")]
    pub partition_hash: Option<String>,
    /// `canal.mq.dynamicTopicPartitionNum`.
    #[serde(deserialize_with = "opt_text")]
    pub dynamic_topic_partition_num: Option<String>,
}

/// `[supervisor]`: how failed activations and instances are retried, and when this server gives
/// a destination up so that another server can try.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupervisorSection {
    /// Consecutive failures (activation attempts, or instance runs that stored nothing) after
    /// which the server releases the destination's running node (at least 1).
    pub max_failures: u32,
    /// Pause before the first retry, in ms; doubles on each failure.
    pub backoff_ms: u64,
    /// Longest pause between retries, in ms.
    pub backoff_max_ms: u64,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        Self { max_failures: 5, backoff_ms: 1000, backoff_max_ms: 30_000 }
    }
}

/// `[coord]`: which coordination service holds running nodes and cursors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordSection {
    /// `local`, `zookeeper` or `etcd`; when unset: `zookeeper` if `zk_servers` is set, else
    /// `etcd` if `etcd_endpoints` is set, else `local`.
    pub backend: Option<BackendKind>,
    /// ZooKeeper connect string `host:port,host:port[/chroot]` (`canal.zkServers`).
    #[serde(deserialize_with = "text")]
    pub zk_servers: String,
    /// Requested ZooKeeper session timeout in ms (default 90000, what canal-coord uses).
    pub zk_session_timeout_ms: u64,
    /// etcd endpoints `http://host:port` (array or comma list).
    #[serde(deserialize_with = "list")]
    pub etcd_endpoints: Vec<String>,
    /// TTL of the etcd session lease in seconds (default 10).
    pub etcd_lease_ttl_s: i64,
    /// How long standbys wait after the running node disappears, in ms (Canal: 5000).
    pub takeover_delay_ms: u64,
    /// Prefix for every key: the etcd key prefix, or the ZooKeeper chroot when `zk_servers` has
    /// none (`/name`, default none).
    #[serde(deserialize_with = "text")]
    pub key_prefix: String,
    /// Cursor flush period in ms; 0 (the default) writes on every ack before the connection's
    /// next frame is read (`canal.zookeeper.flush.period`; Java's default is 1000).
    pub cursor_flush_period_ms: u64,
}

impl Default for CoordSection {
    fn default() -> Self {
        Self {
            backend: None,
            zk_servers: String::new(),
            zk_session_timeout_ms: 90_000,
            etcd_endpoints: Vec::new(),
            etcd_lease_ttl_s: 10,
            takeover_delay_ms: 5000,
            key_prefix: String::new(),
            cursor_flush_period_ms: 0,
        }
    }
}

/// `conf/<destination>/instance.toml`, and the server's `[instance]` section. Unset keys take
/// the server's value, then the built-in default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceFileConfig {
    /// The MySQL source and the start position.
    pub master: MasterSection,
    /// The replication account and connection settings.
    pub db: DbSection,
    /// Dump by GTID (`canal.instance.gtidon`, default false).
    pub gtid_mode: Option<bool>,
    /// Table and event filters.
    pub filter: FilterSection,
    /// Event store.
    pub memory: MemorySection,
    /// Transaction buffer size, a power of two (`canal.instance.transaction.size`, 1024).
    pub transaction_size: Option<usize>,
    /// Seconds before a cursor's time to search from when the cursor was recorded against
    /// another source address (`canal.instance.fallbackIntervalInSeconds`, 60).
    pub fallback_interval_s: Option<u64>,
    /// Deliver each DDL in a batch of its own (`canal.instance.get.ddl.isolation`, false).
    pub ddl_isolation: Option<bool>,
    /// Zone TIMESTAMP values are rendered in: `UTC` (default) or an offset like `+08:00`.
    #[serde(deserialize_with = "opt_text")]
    pub time_zone: Option<String>,
    /// MQ routing of this destination (MQ mode only).
    pub mq: InstanceMqSection,
    /// Balancing weight and preferred servers.
    pub balance: InstanceBalanceSection,
}

/// `[master]`: where to read from and where to start without a cursor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterSection {
    /// `host:port` (`canal.instance.master.address`); required.
    #[serde(deserialize_with = "opt_text")]
    pub address: Option<String>,
    /// Start binlog file (`canal.instance.master.journal.name`).
    #[serde(deserialize_with = "opt_text")]
    pub journal_name: Option<String>,
    /// Start offset (`canal.instance.master.position`).
    pub position: Option<u64>,
    /// Start time in ms since the epoch (`canal.instance.master.timestamp`).
    pub timestamp: Option<i64>,
    /// Start GTID set (`canal.instance.master.gtid`).
    #[serde(deserialize_with = "opt_text")]
    pub gtid: Option<String>,
}

/// `[db]`: the replication account (`Debug` hides the password).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DbSection {
    /// MySQL user (`canal.instance.dbUsername`; Canal's default `retl`).
    #[serde(deserialize_with = "opt_text")]
    pub username: Option<String>,
    /// Its password (`canal.instance.dbPassword`; Canal's default `retl`).
    #[serde(deserialize_with = "opt_text")]
    pub password: Option<String>,
    /// Server id we register with (`canal.instance.mysql.slaveId`); 0 or unset = derived from
    /// the destination name and the register address.
    pub slave_id: Option<u32>,
    /// Charset of text values (`canal.instance.connectionCharset`): UTF-8 (default), utf8mb4,
    /// latin1 or ISO-8859-1.
    #[serde(deserialize_with = "opt_text")]
    pub connection_charset: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let mut c = ServerConfig {
            passwd: "E3619321C1A937C46A0D8BD1DAC39F93B27D4458".into(),
            ..ServerConfig::default()
        };
        c.instance.db.password = Some("s3cret".into());
        let text = format!("{c:?}");
        assert!(!text.contains("E3619321") && !text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}

impl std::fmt::Debug for DbSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSection")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|p| redacted(!p.is_empty())))
            .field("slave_id", &self.slave_id)
            .field("connection_charset", &self.connection_charset)
            .finish()
    }
}

/// `[filter]`: which tables, columns and events reach clients (docs/protocol.md#filters).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterSection {
    /// Table white list (`canal.instance.filter.regex`, default `.*\..*`).
    #[serde(deserialize_with = "opt_text")]
    pub regex: Option<String>,
    /// Table black list (`canal.instance.filter.black.regex`, default none).
    #[serde(deserialize_with = "opt_text")]
    pub black_regex: Option<String>,
    /// Column white lists `schema.table:c1/c2,...` (`canal.instance.filter.field`).
    #[serde(deserialize_with = "opt_text")]
    pub field: Option<String>,
    /// Column black lists (`canal.instance.filter.black.field`).
    #[serde(deserialize_with = "opt_text")]
    pub black_field: Option<String>,
    /// Drop statement DML and rows-query text (`canal.instance.filter.query.dml`).
    pub query_dml: Option<bool>,
    /// Drop QUERY statements such as GRANT (`canal.instance.filter.query.dcl`).
    pub query_dcl: Option<bool>,
    /// Drop DDL entries (`canal.instance.filter.query.ddl`).
    pub query_ddl: Option<bool>,
    /// Drop all rows events (`canal.instance.filter.rows`).
    pub rows: Option<bool>,
    /// Skip rows events of tables that cannot be decoded (`canal.instance.filter.table.error`).
    pub table_error: Option<bool>,
}

/// `[memory]`: the event store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemorySection {
    /// Entries held, a power of two (`canal.instance.memory.buffer.size`, 16384).
    pub buffer_size: Option<usize>,
    /// Bytes per MEMSIZE unit (`canal.instance.memory.buffer.memunit`, 1024).
    pub buffer_memunit: Option<usize>,
    /// `MEMSIZE` or `ITEMSIZE` (`canal.instance.memory.batch.mode`, MEMSIZE).
    #[serde(deserialize_with = "opt_text")]
    pub batch_mode: Option<String>,
    /// Bytes of un-acked entries after which the reader waits (default size × memunit).
    pub memory_budget: Option<usize>,
}

/// A scalar read as text: strings as they are, numbers and booleans in their usual form.
struct TextVisitor;

impl serde::de::Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_char<E: serde::de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(TextVisitor)
}

fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            text(d).map(Some)
        }
    }
    d.deserialize_option(V)
}

/// A TOML array of strings, or one comma-separated string (`canal.destinations=a,b`).
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of strings or a comma-separated string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(split_list(v))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            struct Item(String);
            impl<'de> Deserialize<'de> for Item {
                fn deserialize<D2: Deserializer<'de>>(d: D2) -> Result<Self, D2::Error> {
                    text(d).map(Item)
                }
            }
            let mut out = Vec::new();
            while let Some(Item(s)) = seq.next_element()? {
                let s = s.trim();
                if !s.is_empty() {
                    out.push(s.to_owned());
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// Splits a comma list, trimming items and dropping empty ones.
pub(crate) fn split_list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}
