//! MQ mode acceptance of issue #16 against the brokers of `cargo xtask services` (noida-db for
//! the Kafka protocol, RabbitMQ):
//! - every MariaDB column type reaches Kafka and RabbitMQ, as FlatMessage JSON and as protobuf,
//!   equal to what a TCP client of another server reads from the same binlog range (protobuf
//!   entries byte for byte; FlatMessage byte for byte against `canal_core::flat::FlatMessage` of
//!   the TCP entries, and field by field against the entries' columns);
//! - each form of Java Canal's routing rules (`canal.mq.dynamicTopic`, `canal.mq.partitionHash`,
//!   `canal.mq.dynamicTopicPartitionNum`, `canal.mq.database.hash`) puts every row in the topic
//!   and partition Java's formula gives, every row once, in binlog order per key;
//! - third-party consumers (PyPI confluent-kafka and pika) read the exact bytes.
#![cfg(all(feature = "kafka", feature = "rabbitmq"))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use canal_core::binlog::replica::ReplicaConfig;
use canal_core::flat::FlatMessage;
use canal_core::instance::{InstanceConfig, StartConfig};
use canal_core::mq::{RoutingConfig, java_partition, java_string_hash};
use canal_core::protocol::entry::{Entry, EntryType, EventType, RowChange};
use canal_core::protocol::packet::{Messages, Packet, PacketType};
use canal_server::config::ServerMode;
use canal_server::mq::MqSettings;
use canal_server::server::Server;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use prost::Message as _;
use serde_json::{Map, Value, json};

use crate::ha::{settings, wait_active, zk};
use crate::mq::{kafka::create_topic, mq_settings};
use crate::support;
use crate::wire::{Client, messages};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A database name no other run uses (lower case: Canal lower-cases names in topics).
fn unique_db(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("mqt_{tag}_{}_{n}_{}", std::process::id(), nanos % 1_000_000)
}

/// An instance named `name` reading `schemas` from `file:pos` with a slave id of its own.
fn instance(name: &str, schemas: &[&str], file: &str, pos: u64) -> InstanceConfig {
    let url = support::service("CANAL_TEST_MYSQL").expect("checked by the caller");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let slave_id = 5_000_000 + (std::process::id() % 10_000) * 1000 + n % 1000;
    let source = ReplicaConfig::from_url(&url).unwrap().with_slave_id(slave_id);
    let mut i = InstanceConfig::new(name.to_owned(), source);
    let white: Vec<String> = schemas.iter().map(|s| format!("{s}\\..*")).collect();
    i.convert.filter = canal_core::filter::NameFilter::new(&white.join(","), "").unwrap();
    i.start = StartConfig {
        journal: Some(file.to_owned()),
        position: Some(pos),
        ..StartConfig::default()
    };
    i.backoff = (Duration::from_millis(100), Duration::from_secs(1));
    i
}

async fn admin() -> Conn {
    let url = support::service("CANAL_TEST_MYSQL_ADMIN").expect("checked by the caller");
    Conn::new(Opts::from_url(&url).unwrap()).await.unwrap()
}

async fn master_status(admin: &mut Conn) -> (String, u64) {
    let row: mysql_async::Row = admin.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    (row.get(0).unwrap(), row.get(1).unwrap())
}

/// Starts a server for `instances` (MQ mode when `mq` is set) and waits until each is active.
async fn start(zk_servers: &str, mq: Option<MqSettings>, instances: Vec<InstanceConfig>) -> Server {
    let mut coord = zk(zk_servers.to_owned());
    // No failover here: long enough that a loaded machine never loses the lease (a server
    // serves only within `delay / 2` of confirming its node) or the session mid-test.
    coord.takeover_delay_ms = 5000;
    coord.zookeeper.session_timeout_ms = 10_000;
    let mut s = settings(coord);
    s.mq = mq;
    let names: Vec<String> = instances.iter().map(|i| i.destination.clone()).collect();
    let server = Server::start(s, instances).await.unwrap();
    for n in &names {
        wait_active(&server, n, Duration::from_secs(20)).await;
    }
    server
}

/// One Kafka record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

/// Reads every partition of `topics` (name, partitions) from the beginning, without a consumer
/// group (assigned partitions), until `done` says so; fails after `limit`.
async fn read_kafka(
    topics: &[(String, i32)],
    limit: Duration,
    done: impl Fn(&[Record]) -> bool + Send + 'static,
) -> Vec<Record> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let bootstrap = support::service("CANAL_TEST_KAFKA").expect("checked by the caller");
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", crate::mq::unique("canal-types"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for (t, n) in &topics {
            for p in 0..*n {
                tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
            }
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + limit;
        let mut out: Vec<Record> = Vec::new();
        while !done(&out) {
            assert!(
                Instant::now() < deadline,
                "Kafka: not done after {limit:?}: {} records: {:#?}",
                out.len(),
                out.iter().map(|r| summary(&r.payload)).collect::<Vec<_>>()
            );
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => out.push(Record {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                }),
                Some(Err(e)) => eprintln!("consumer: {e}"),
            }
        }
        out
    })
    .await
    .unwrap()
}

/// The entries of a protobuf `Packet{MESSAGES}` payload.
fn packet_entries(payload: &[u8]) -> Vec<Bytes> {
    let packet = Packet::decode(payload).expect("a Packet");
    assert_eq!(packet.r#type, PacketType::Messages as i32, "a MESSAGES packet");
    Messages::decode(packet.body).expect("Messages").messages
}

/// What a payload holds, for failure messages: each FlatMessage's or entry's type and table.
fn summary(payload: &[u8]) -> String {
    if payload.first() == Some(&b'{') {
        let v: Value = serde_json::from_slice(payload).unwrap_or_default();
        let rows = v["data"].as_array().map_or(0, Vec::len);
        return format!("flat {}.{} {} ({rows} rows)", v["database"], v["table"], v["type"]);
    }
    let entries: Vec<String> = packet_entries(payload).iter().map(|e| entry_summary(e)).collect();
    entries.join(", ")
}

fn entry_summary(bytes: &[u8]) -> String {
    let (e, rc) = decode(bytes);
    let h = e.header.clone().unwrap_or_default();
    format!(
        "{:?} {}.{} {:?} {}",
        e.entry_type(),
        h.schema_name(),
        h.table_name(),
        h.event_type(),
        rc.map_or(String::new(), |rc| format!("{} rows {}", rc.row_datas.len(), rc.sql()))
    )
}

fn decode(bytes: &[u8]) -> (Entry, Option<RowChange>) {
    let e = Entry::decode(bytes).expect("an Entry");
    let rc =
        (e.entry_type() == EntryType::Rowdata).then(|| RowChange::decode(e.store_value()).unwrap());
    (e, rc)
}

fn is_transaction_edge(bytes: &[u8]) -> bool {
    matches!(decode(bytes).0.entry_type(), EntryType::Transactionbegin | EntryType::Transactionend)
}

// ---------------------------------------------------------------------------------------------
// Every column type
// ---------------------------------------------------------------------------------------------

/// Every column type MariaDB has: the `all_types` table of the MariaDB fixtures
/// (`fixtures/binlog/mariadb-10.11-generated/mariadb-all-types.sql` in ../shared, also used by
/// canal-core's `all_types` test), an ENUM of 300 members (2-byte storage), and tables with a
/// composite key and without a key.
const ALL_TYPES_DDL: &[&str] = &[
    "CREATE TABLE all_types (
  id            INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  c_tinyint     TINYINT, c_tinyint_u TINYINT UNSIGNED, c_bool BOOL,
  c_smallint    SMALLINT, c_smallint_u SMALLINT UNSIGNED,
  c_mediumint   MEDIUMINT, c_mediumint_u MEDIUMINT UNSIGNED,
  c_int         INT, c_int_u INT UNSIGNED, c_bigint BIGINT, c_bigint_u BIGINT UNSIGNED,
  c_float       FLOAT, c_double DOUBLE,
  c_dec_10_2    DECIMAL(10,2), c_dec_5_0 DECIMAL(5,0), c_dec_20_10 DECIMAL(20,10),
  c_dec_65_30   DECIMAL(65,30), c_dec_u DECIMAL(8,3) UNSIGNED,
  c_bit1        BIT(1), c_bit13 BIT(13), c_bit64 BIT(64),
  c_date        DATE, c_time TIME, c_time3 TIME(3), c_time6 TIME(6),
  c_datetime    DATETIME, c_datetime3 DATETIME(3), c_datetime6 DATETIME(6),
  c_timestamp   TIMESTAMP NULL DEFAULT NULL, c_timestamp6 TIMESTAMP(6) NULL DEFAULT NULL,
  c_year        YEAR,
  c_char10      CHAR(10), c_char255_mb4 CHAR(255) CHARACTER SET utf8mb4,
  c_varchar     VARCHAR(100), c_varchar_long VARCHAR(1000),
  c_varchar_latin1 VARCHAR(50) CHARACTER SET latin1, c_varchar_gbk VARCHAR(50) CHARACTER SET gbk,
  c_binary8     BINARY(8), c_varbinary VARBINARY(64),
  c_tinyblob    TINYBLOB, c_blob BLOB, c_mediumblob MEDIUMBLOB, c_longblob LONGBLOB,
  c_tinytext    TINYTEXT, c_text TEXT, c_mediumtext MEDIUMTEXT, c_longtext LONGTEXT,
  c_enum        ENUM('red','green','blue'), c_set SET('a','b','c','d'),
  c_set64       SET('s01','s02','s03','s04','s05','s06','s07','s08','s09','s10','s11','s12','s13','s14','s15','s16',
                    's17','s18','s19','s20','s21','s22','s23','s24','s25','s26','s27','s28','s29','s30','s31','s32',
                    's33','s34','s35','s36','s37','s38','s39','s40','s41','s42','s43','s44','s45','s46','s47','s48',
                    's49','s50','s51','s52','s53','s54','s55','s56','s57','s58','s59','s60','s61','s62','s63','s64'),
  c_json        JSON,
  c_geometry    GEOMETRY, c_point POINT, c_linestring LINESTRING, c_polygon POLYGON,
  c_multipoint  MULTIPOINT, c_geomcoll GEOMETRYCOLLECTION,
  c_inet6       INET6, c_uuid UUID, c_inet4 INET4,
  c_gen_virtual INT AS (c_int * 2) VIRTUAL,
  c_gen_stored  VARCHAR(120) AS (CONCAT(c_varchar, '!')) PERSISTENT
) ENGINE=InnoDB",
    "CREATE TABLE order_items (order_id BIGINT UNSIGNED NOT NULL, line_no SMALLINT UNSIGNED NOT NULL,
  sku CHAR(8) NOT NULL, qty INT NOT NULL, PRIMARY KEY (order_id, line_no)) ENGINE=InnoDB",
    "CREATE TABLE no_pk (a INT, b VARCHAR(20)) ENGINE=InnoDB",
];

const ALL_TYPES_COLUMNS: &str = "c_tinyint, c_tinyint_u, c_bool, c_smallint, c_smallint_u,
  c_mediumint, c_mediumint_u, c_int, c_int_u, c_bigint, c_bigint_u, c_float, c_double, c_dec_10_2,
  c_dec_5_0, c_dec_20_10, c_dec_65_30, c_dec_u, c_bit1, c_bit13, c_bit64, c_date, c_time, c_time3,
  c_time6, c_datetime, c_datetime3, c_datetime6, c_timestamp, c_timestamp6, c_year, c_char10,
  c_char255_mb4, c_varchar, c_varchar_long, c_varchar_latin1, c_varchar_gbk, c_binary8, c_varbinary,
  c_tinyblob, c_blob, c_mediumblob, c_longblob, c_tinytext, c_text, c_mediumtext, c_longtext, c_enum,
  c_set, c_set64, c_json, c_geometry, c_point, c_linestring, c_polygon, c_multipoint, c_geomcoll, c_inet6,
  c_uuid, c_inet4";

/// The fixture workload's rows (typical values; extremes; all NULL; zero dates with a 70 000-byte
/// blob and text; a multi-row insert), its updates and deletes, a multi-table transaction, a
/// table without a key, then a DDL and the sentinel row `zz_done`.
fn all_types_workload() -> Vec<String> {
    let typical = "(1, 2, TRUE, 300, 40000, 70000, 8000000,
  123456789, 3000000000, 1234567890123, 10000000000000000000, 1.5, 3.141592653589793, 12345.67, 99999, 1234567890.0123456789,
  '12345678901234567890123456789012345.123456789012345678901234567890', 12345.678,
  b'1', b'1010101010101', b'1000000000000000000000000000000000000000000000000000000000000001',
  '2024-02-29', '12:34:56', '12:34:56.789', '-01:02:03.000004', '2024-02-29 23:59:59', '2024-02-29 23:59:59.123', '2024-02-29 23:59:59.654321',
  '2024-02-29 12:00:00', '2038-01-19 03:14:07.999999', 2024, 'char10', 'utf8mb4 😀 你好 éàü', 'hello, world', REPEAT('x', 300), 'café latin1', '中文gbk',
  x'0102030405060708', x'DEADBEEF', x'00FF', 'blob value', x'0001020304', x'FFFEFD', 'tiny text', 'text value', 'medium text', 'long text 😀',
  'green', 'a,c', 's01,s33,s64', '{\"k\": \"v\", \"n\": 1, \"arr\": [1, 2.5, null, true], \"nested\": {\"x\": \"y\"}}',
  ST_GeomFromText('POINT(1 1)'), ST_GeomFromText('POINT(1.5 -2.25)'), ST_GeomFromText('LINESTRING(0 0,1 1,2 2)'),
  ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))'), ST_GeomFromText('MULTIPOINT(0 0,1 1)'),
  ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 2),LINESTRING(0 0,1 1))'),
  '2001:db8::ff00:42:8329', '123e4567-e89b-12d3-a456-426614174000', '192.168.0.1')";
    let extremes = "(-128, 255, FALSE, -32768, 65535, -8388608, 16777215,
  -2147483648, 4294967295, -9223372036854775808, 18446744073709551615, -3.4e38, -1.7976931348623157e308,
  -99999999.99, -99999, -9999999999.9999999999,
  '-99999999999999999999999999999999999.999999999999999999999999999999', 0.001,
  b'0', b'1111111111111', b'1111111111111111111111111111111111111111111111111111111111111111',
  '1000-01-01', '-838:59:59', '838:59:58.999', '-838:59:59.000000', '1000-01-01 00:00:00', '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999',
  '1970-01-01 00:00:01', '1970-01-01 00:00:01.000001', 1901, '', '', '', '', '', '',
  x'0000000000000000', x'', x'', x'', x'', x'', '', '', '', '',
  'red', '', '', '[]', ST_GeomFromText('POINT(0 0)'), ST_GeomFromText('POINT(-180 -90)'), ST_GeomFromText('LINESTRING(0 0,0 0)'),
  ST_GeomFromText('POLYGON((0 0,1 0,0 1,0 0))'), ST_GeomFromText('MULTIPOINT(0 0)'), ST_GeomFromText('GEOMETRYCOLLECTION EMPTY'),
  '::', '00000000-0000-0000-0000-000000000000', '0.0.0.0')";
    vec![
        format!("INSERT INTO all_types ({ALL_TYPES_COLUMNS}) VALUES {typical}"),
        format!("INSERT INTO all_types ({ALL_TYPES_COLUMNS}) VALUES {extremes}"),
        "INSERT INTO all_types (id) VALUES (NULL)".into(),
        "INSERT INTO all_types (c_date, c_datetime, c_datetime6, c_timestamp, c_year, c_mediumblob, c_longtext, c_dec_10_2, c_time6)
VALUES ('0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00.000000', '0000-00-00 00:00:00', 0000,
        REPEAT(x'AB', 70000), REPEAT('L', 70000), 0.00, '00:00:00.000001')".into(),
        "INSERT INTO all_types (c_int, c_varchar, c_dec_10_2, c_datetime6, c_enum, c_json)
VALUES (1, 'row-a', 1.10, '2020-01-01 00:00:00.000001', 'red', '{\"a\": 1}'),
       (2, 'row-b', 2.20, '2020-01-01 00:00:00.100000', 'green', '{\"b\": [1, 2]}'),
       (3, 'row-c', -3.30, '2020-01-01 00:00:00.999999', 'blue', 'null')".into(),
        "UPDATE all_types SET c_int = c_int + 1, c_varchar = 'updated', c_dec_10_2 = -0.01, c_time6 = '23:59:59.999999',
  c_datetime6 = '2025-06-30 23:59:59.5', c_enum = 'blue', c_set = 'b,d', c_bit13 = b'0000000000001',
  c_json = JSON_SET(c_json, '$.k', 'v2'), c_point = ST_GeomFromText('POINT(3 4)'), c_uuid = '11111111-2222-3333-4444-555555555555'
WHERE id = 1".into(),
        "UPDATE all_types SET c_tinyint = 7, c_text = CONCAT('upd-', id) WHERE id IN (5, 6, 7)".into(),
        "UPDATE all_types SET c_varchar = 'was null' WHERE id = 3".into(),
        "DELETE FROM all_types WHERE id = 3".into(),
        "BEGIN".into(),
        "INSERT INTO order_items VALUES (1, 1, 'SKU-0001', 2), (1, 2, 'SKU-0002', 1)".into(),
        "UPDATE order_items SET qty = qty + 1 WHERE order_id = 1".into(),
        "DELETE FROM order_items WHERE order_id = 1 AND line_no = 2".into(),
        "INSERT INTO no_pk VALUES (1, 'no key'), (2, NULL)".into(),
        "UPDATE no_pk SET b = 'no key (upd)' WHERE a = 2".into(),
        "INSERT INTO big_enum VALUES (1, 'v001'), (2, 'v255'), (3, 'v256'), (4, 'v300')".into(),
        "UPDATE big_enum SET e = 'v299' WHERE id = 4".into(),
        "DELETE FROM all_types WHERE id = 2".into(),
        "COMMIT".into(),
        "CREATE TABLE zz_done (id INT PRIMARY KEY)".into(),
        "INSERT INTO zz_done VALUES (1)".into(),
    ]
}

/// Whether `bytes` is the sentinel row (the last change of the workload).
fn is_sentinel_entry(bytes: &[u8]) -> bool {
    let (e, rc) = decode(bytes);
    let h = e.header.unwrap_or_default();
    h.table_name() == "zz_done"
        && rc.is_some_and(|rc| !rc.is_ddl() && rc.event_type() == EventType::Insert)
}

fn is_sentinel_flat(payload: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(payload).expect("FlatMessage JSON");
    v["table"] == "zz_done" && v["type"] == "INSERT"
}

/// A database with every column type, the workload already run after `(file, pos)`.
struct AllTypes {
    db: String,
    file: String,
    pos: u64,
}

async fn all_types(tag: &str) -> Option<AllTypes> {
    support::service("CANAL_TEST_MYSQL")?;
    support::service("CANAL_TEST_MYSQL_ADMIN")?;
    let mut admin = admin().await;
    let db = unique_db(tag);
    for s in [
        "SET @@session.time_zone = '+00:00'",
        "SET @@session.sql_mode = 'NO_ENGINE_SUBSTITUTION'",
        "SET NAMES utf8mb4",
    ] {
        admin.query_drop(s).await.unwrap();
    }
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}` DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        ))
        .await
        .unwrap();
    admin.query_drop(format!("USE `{db}`")).await.unwrap();
    let members: Vec<String> = (1..=300).map(|i| format!("'v{i:03}'")).collect();
    let big_enum = format!(
        "CREATE TABLE big_enum (id INT PRIMARY KEY, e ENUM({})) ENGINE=InnoDB",
        members.join(",")
    );
    for s in ALL_TYPES_DDL.iter().copied().chain([big_enum.as_str()]) {
        admin.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let (file, pos) = master_status(&mut admin).await;
    for s in all_types_workload() {
        admin.query_drop(&s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    admin.disconnect().await.unwrap();
    Some(AllTypes { db, file, pos })
}

/// Reads `dest` over the Canal TCP protocol until the sentinel row; every entry, in order.
async fn tcp_entries(addr: SocketAddr, dest: &str) -> Vec<Bytes> {
    let mut c = Client::connect(addr).await;
    c.auth("", None).await;
    assert_eq!(c.subscribe(dest, "1001").await.error_code, None);
    let mut out: Vec<Bytes> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The sentinel's transaction END may follow in the next batch: the comparisons leave it out.
    while !out.iter().any(|e| is_sentinel_entry(e)) {
        assert!(Instant::now() < deadline, "TCP: no sentinel after {} entries", out.len());
        let m = messages(c.get(dest, 100, 200).await);
        if m.batch_id == -1 {
            continue;
        }
        out.extend(m.messages.iter().cloned());
        c.client_ack_on(dest, m.batch_id).await;
    }
    out
}

/// Reads `queue` (declared by the caller) until `done`; every message body, in order.
async fn read_rabbit(
    ch: &lapin::Channel,
    queue: &str,
    done: impl Fn(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "RabbitMQ {queue}: not done after {} messages: {:#?}",
            out.len(),
            out.iter().map(|p| summary(p)).collect::<Vec<_>>()
        );
        match ch.basic_get(queue.into(), BasicGetOptions::default()).await.unwrap() {
            Some(m) => {
                out.push(m.delivery.data.clone());
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    out
}

async fn declare_queue(ch: &lapin::Channel, queue: &str, bind: Option<(&str, &str)>) {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue.into(), opts, FieldTable::default()).await.unwrap();
    if let Some((exchange, key)) = bind {
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
}

/// What Java's FlatMessage holds for `entry`, worked out here from the entry's columns (not
/// through `canal_core::flat`): data (after image, before image for DELETE), isNull as JSON
/// null, sqlType/mysqlType per column, pkNames of the first row's key columns, old values of
/// the columns flagged `updated` (the set accumulated over the entry's rows, as Java does).
fn expected_flat_fields(entry: &Entry) -> Value {
    let h = entry.header.clone().unwrap_or_default();
    let rc = RowChange::decode(entry.store_value()).unwrap();
    let kind = if rc.event_type.is_some() { rc.event_type() } else { h.event_type() };
    let mut v = json!({
        "database": h.schema_name(),
        "table": h.table_name(),
        "isDdl": rc.is_ddl(),
        "type": format!("{kind:?}").to_uppercase(),
        "es": h.execute_time(),
        "sql": rc.sql(),
        "gtid": h.gtid(),
        "pkNames": null, "sqlType": null, "mysqlType": null, "data": null, "old": null,
    });
    if rc.is_ddl() {
        return v;
    }
    let mut pk = Vec::new();
    let mut sql_type = Map::new();
    let mut mysql_type = Map::new();
    let mut data = Vec::new();
    let mut old = Vec::new();
    let mut updated: Vec<String> = Vec::new();
    let value = |c: &canal_core::protocol::entry::Column| {
        if c.is_null() { Value::Null } else { Value::String(c.value().to_owned()) }
    };
    for (i, row) in rc.row_datas.iter().enumerate() {
        if !matches!(kind, EventType::Insert | EventType::Update | EventType::Delete) {
            continue;
        }
        let cols = if kind == EventType::Delete { &row.before_columns } else { &row.after_columns };
        let mut image = Map::new();
        for c in cols {
            image.insert(c.name().to_owned(), value(c));
            sql_type.insert(c.name().to_owned(), json!(c.sql_type()));
            mysql_type.insert(c.name().to_owned(), json!(c.mysql_type()));
            if i == 0 && c.is_key() {
                pk.push(c.name().to_owned());
            }
            if c.updated() && !updated.iter().any(|u| u == c.name()) {
                updated.push(c.name().to_owned());
            }
        }
        if !image.is_empty() {
            data.push(Value::Object(image));
        }
        if kind == EventType::Update {
            let before: Map<String, Value> = row
                .before_columns
                .iter()
                .filter(|c| updated.iter().any(|u| u == c.name()))
                .map(|c| (c.name().to_owned(), value(c)))
                .collect();
            if !before.is_empty() {
                old.push(Value::Object(before));
            }
        }
    }
    let some = |present: bool, x: Value| if present { x } else { Value::Null };
    v["pkNames"] = some(!pk.is_empty(), json!(pk));
    v["sqlType"] = some(!sql_type.is_empty(), Value::Object(sql_type));
    v["mysqlType"] = some(!mysql_type.is_empty(), Value::Object(mysql_type));
    v["data"] = some(!data.is_empty(), Value::Array(data));
    v["old"] = some(!old.is_empty(), Value::Array(old));
    v
}

/// `items` up to and including the first one `last` accepts (the sentinel). The server reads
/// the binlog of the whole MariaDB: QUERY entries of other tests' statements (`CREATE
/// DATABASE` is not name-filtered, as in Java) may follow the sentinel, differently on each
/// path depending on when its reader stopped; before the sentinel every path has the same.
fn through<T>(items: &[T], last: impl Fn(&T) -> bool) -> &[T] {
    let end = items.iter().position(last).expect("the sentinel was read");
    &items[..=end]
}

/// Checks that the FlatMessage payloads published (in order) are exactly those of the TCP
/// entries: byte for byte against `canal_core::flat::FlatMessage` with the published `id`
/// and `ts`, and field by field against the entries' columns. `since_ms` bounds `ts`.
fn check_flat_equals_tcp(what: &str, published: &[Vec<u8>], tcp: &[Bytes], since_ms: i64) {
    let published = through(published, |p| is_sentinel_flat(p));
    let rows: Vec<&Bytes> =
        tcp.iter().filter(|b| decode(b).0.entry_type() == EntryType::Rowdata).collect();
    let rows = through(&rows, |e| is_sentinel_entry(e));
    let texts: Vec<String> =
        published.iter().map(|p| String::from_utf8_lossy(p).chars().take(200).collect()).collect();
    assert_eq!(
        published.len(),
        rows.len(),
        "{what}: one FlatMessage per ROWDATA entry of the TCP path; got {texts:#?}"
    );
    let now = now_ms();
    let mut last_id = 0;
    for (i, (payload, bytes)) in published.iter().zip(rows.iter()).enumerate() {
        let got: Value = serde_json::from_slice(payload).expect("FlatMessage JSON");
        let id = got["id"].as_i64().expect("id");
        let ts = got["ts"].as_i64().expect("ts");
        assert!(id >= last_id && id > 0, "{what} #{i}: batch id {id} after {last_id}");
        last_id = id;
        assert!((since_ms..=now).contains(&ts), "{what} #{i}: ts {ts} outside the run");
        let entry = Entry::decode(bytes.as_ref()).unwrap();
        // Field by field against the entry (independent of canal_core::flat).
        let mut want = expected_flat_fields(&entry);
        want["id"] = json!(id);
        want["ts"] = json!(ts);
        assert_eq!(got, want, "{what} #{i}: FlatMessage fields");
        // Byte for byte: key order, null writing and number formats of canal_core::flat.
        let flat = FlatMessage::from_entry(&entry, id, ts).unwrap().expect("a FlatMessage");
        assert_eq!(
            String::from_utf8_lossy(payload),
            flat.to_json(),
            "{what} #{i}: FlatMessage bytes"
        );
    }
}

/// Checks that the protobuf payloads published carry exactly the TCP entries (transaction
/// begin/end left out, as Java's `filterTransactionEntry` does in MQ mode), byte for byte.
fn check_protobuf_equals_tcp(what: &str, published: &[Vec<u8>], tcp: &[Bytes]) {
    let want: Vec<&Bytes> = tcp.iter().filter(|b| !is_transaction_edge(b)).collect();
    let want = through(&want, |e| is_sentinel_entry(e));
    let got: Vec<Bytes> = published.iter().flat_map(|p| packet_entries(p)).collect();
    let got = through(&got, |e| is_sentinel_entry(e));
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            g == *w,
            "{what}: entry {i} differs from the TCP path's:\n got {:?}\nwant {:?}",
            decode(g),
            decode(w)
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: entry count (TCP {} entries)", tcp.len());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The test sees the values it wrote (not two empty paths agreeing).
fn check_values_present(tcp: &[Bytes]) {
    let flat: Vec<String> = tcp
        .iter()
        .filter_map(|b| FlatMessage::from_entry(&Entry::decode(b.as_ref()).unwrap(), 0, 0).unwrap())
        .map(|f| f.to_json())
        .collect();
    let all = flat.join("\n");
    if std::env::var_os("CANAL_TEST_DUMP").is_some() {
        eprintln!("{all}");
    }
    for needle in [
        "\"c_bigint_u\":\"18446744073709551615\"",
        "\"c_bigint\":\"-9223372036854775808\"",
        "\"c_char255_mb4\":\"utf8mb4 😀 你好 éàü\"",
        // gbk and latin1 columns are decoded with the connection charset, as Java does
        // (docs/compatibility.md), so their text is not checked here.
        "\"c_varchar\":\"hello, world\"",
        "\"c_time6\":\"-838:59:59.000000\"",
        "\"c_date\":\"0000-00-00\"",
        "\"c_varchar\":\"updated\"",
        "\"c_set64\":\"",
        "\"e\":\"300\"",
        "\"pkNames\":null",
        "\"old\":[{",
        "\"c_tinyint\":null",
        "\"type\":\"DELETE\"",
        "\"isDdl\":true",
        "\"pkNames\":[\"order_id\",\"line_no\"]",
    ] {
        let key = needle.split(':').next().unwrap();
        let near: Vec<&str> =
            all.match_indices(key).map(|(i, _)| &all[i..(i + 80).min(all.len())]).take(3).collect();
        assert!(all.contains(needle), "the TCP path's FlatMessages lack {needle}: {near:?}");
    }
    let long = flat.iter().find(|f| f.contains(&"L".repeat(70_000))).map(String::len);
    assert!(long.is_some(), "the 70 000-character text arrives");
}

/// The TCP path and four MQ paths (Kafka and RabbitMQ, flat and protobuf) over the same binlog
/// range of an [`AllTypes`] database, each a destination of its own.
struct Paths {
    servers: Vec<Server>,
    tcp_addr: SocketAddr,
    tcp_dest: String,
    kafka_flat: String,
    kafka_pb: String,
    rabbit_flat: String,
    rabbit_pb: String,
    rabbit: (lapin::Connection, lapin::Channel),
}

/// Creates the topics, the exchange and the queues (`{key}` bound to the exchange by `key`,
/// and `{key}-py` beside it when `python_queues`), then starts a TCP server, a Kafka server and
/// a RabbitMQ server.
async fn start_paths(fx: &AllTypes, zk_servers: &str, python_queues: bool) -> Paths {
    use lapin::options::ExchangeDeclareOptions;
    use lapin::types::FieldTable;

    let bootstrap = support::service("CANAL_TEST_KAFKA").expect("checked by the caller");
    let amqp = support::service("CANAL_TEST_RABBITMQ").expect("checked by the caller");
    let db = fx.db.as_str();
    let (kafka_flat, kafka_pb) = (format!("{db}-flat"), format!("{db}-pb"));
    let (rabbit_flat, rabbit_pb) = (format!("{db}-rflat"), format!("{db}-rpb"));
    create_topic(&bootstrap, &kafka_flat, 1).await;
    create_topic(&bootstrap, &kafka_pb, 1).await;
    let conn =
        lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let exchange = format!("{db}-x");
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for key in [&rabbit_flat, &rabbit_pb] {
        declare_queue(&ch, key, Some((&exchange, key))).await;
        if python_queues {
            declare_queue(&ch, &format!("{key}-py"), Some((&exchange, key))).await;
        }
    }
    let inst = |suffix: &str| instance(&format!("{db}_{suffix}"), &[db], &fx.file, fx.pos);
    let routing = |topic: &str, flat: bool| RoutingConfig {
        flat_message: flat,
        topic: topic.to_owned(),
        ..RoutingConfig::default()
    };
    let tcp = start(zk_servers, None, vec![inst("tcp")]).await;
    let mut mq = mq_settings(ServerMode::Kafka, &format!("{db}_kf"), routing(&kafka_flat, true));
    mq.routing.insert(format!("{db}_kp"), routing(&kafka_pb, false));
    let kafka = start(zk_servers, Some(mq), vec![inst("kf"), inst("kp")]).await;
    let mut mq =
        mq_settings(ServerMode::Rabbitmq, &format!("{db}_rf"), routing(&rabbit_flat, true));
    mq.routing.insert(format!("{db}_rp"), routing(&rabbit_pb, false));
    mq.rabbitmq.exchange = exchange;
    let rabbit = start(zk_servers, Some(mq), vec![inst("rf"), inst("rp")]).await;
    Paths {
        tcp_addr: tcp.local_addr(),
        servers: vec![tcp, kafka, rabbit],
        tcp_dest: format!("{db}_tcp"),
        kafka_flat,
        kafka_pb,
        rabbit_flat,
        rabbit_pb,
        rabbit: (conn, ch),
    }
}

impl Paths {
    /// What each path delivered up to the sentinel: (TCP entries, Kafka flat, Kafka protobuf,
    /// RabbitMQ flat, RabbitMQ protobuf).
    async fn read_all(&self) -> (Vec<Bytes>, Vec<Record>, Vec<Record>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let flat_done = |r: &[Record]| r.iter().any(|r| is_sentinel_flat(&r.payload));
        let pb_done = |r: &[Record]| {
            r.iter().any(|r| packet_entries(&r.payload).iter().any(|e| is_sentinel_entry(e)))
        };
        let limit = Duration::from_secs(30);
        let ch = &self.rabbit.1;
        let (kf_topics, kp_topics) = ([(self.kafka_flat.clone(), 1)], [(self.kafka_pb.clone(), 1)]);
        let (tcp, kf, kp, rf, rp) = tokio::join!(
            tcp_entries(self.tcp_addr, &self.tcp_dest),
            read_kafka(&kf_topics, limit, flat_done),
            read_kafka(&kp_topics, limit, pb_done),
            read_rabbit(ch, &self.rabbit_flat, |m| m.iter().any(|p| is_sentinel_flat(p))),
            read_rabbit(ch, &self.rabbit_pb, |m| {
                m.iter().any(|p| packet_entries(p).iter().any(|e| is_sentinel_entry(e)))
            }),
        );
        (tcp, kf, kp, rf, rp)
    }

    async fn shutdown(self) {
        for s in &self.servers {
            for r in s.reports() {
                if let Some(mq) = r.mq {
                    assert_eq!(mq.send_failures, 0, "{}: {mq:?}", r.destination);
                }
            }
        }
        for s in self.servers {
            s.shutdown().await;
        }
        self.rabbit.0.close(0, "done".into()).await.unwrap();
    }
}

/// Issue #16: every column type arrives in FlatMessage JSON and protobuf form, through Kafka and
/// RabbitMQ, equal to the TCP path's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_reaches_kafka_and_rabbitmq_equal_to_the_tcp_path() {
    let Some(_) = support::service("CANAL_TEST_KAFKA") else { return };
    let Some(_) = support::service("CANAL_TEST_RABBITMQ") else { return };
    let Some(zk_servers) = support::service("CANAL_TEST_ZK") else { return };
    let since = now_ms();
    let Some(fx) = all_types("types").await else { return };
    let paths = start_paths(&fx, &zk_servers, false).await;
    let (tcp, kf, kp, rf, rp) = paths.read_all().await;
    check_values_present(&tcp);
    let payloads = |r: &[Record]| r.iter().map(|r| r.payload.clone()).collect::<Vec<_>>();
    check_flat_equals_tcp("Kafka flat", &payloads(&kf), &tcp, since);
    check_protobuf_equals_tcp("Kafka protobuf", &payloads(&kp), &tcp);
    check_flat_equals_tcp("RabbitMQ flat", &rf, &tcp, since);
    check_protobuf_equals_tcp("RabbitMQ protobuf", &rp, &tcp);
    eprintln!(
        "{} TCP entries; Kafka {} flat + {} protobuf messages; RabbitMQ {} + {}",
        tcp.len(),
        kf.len(),
        kp.len(),
        rf.len(),
        rp.len()
    );
    paths.shutdown().await;
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Issue #16: third-party consumers (PyPI confluent-kafka for Kafka, pika for RabbitMQ) read
/// what canal-server published, every row of every column type, as the exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumers_read_every_row_from_kafka_and_rabbitmq() {
    let Some(bootstrap) = support::service("CANAL_TEST_KAFKA") else { return };
    let Some(amqp) = support::service("CANAL_TEST_RABBITMQ") else { return };
    let Some(zk_servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(venv) = support::python_venv(support::MQ_VENV, support::MQ_VENV_REQUIREMENTS) else {
        return;
    };
    let since = now_ms();
    let Some(fx) = all_types("py").await else { return };
    let paths = start_paths(&fx, &zk_servers, true).await;
    // The Rust readers tell how many messages there are; the Python ones must read those.
    let (tcp, kf, kp, rf, rp) = paths.read_all().await;
    let spawn = |args: Vec<String>| {
        let venv = venv.clone();
        tokio::task::spawn_blocking(move || {
            crate::brokers::run_python(&venv, "mq_consume.py", &args, Duration::from_secs(60))
        })
    };
    let kafka_args = |topic: &str, n: usize| {
        vec!["kafka".into(), bootstrap.clone(), topic.to_owned(), "1".into(), n.to_string()]
    };
    let rabbit_args = |key: &str, n: usize| {
        vec!["rabbitmq".into(), amqp.clone(), format!("{key}-py"), n.to_string()]
    };
    let (py_kf, py_kp, py_rf, py_rp) = tokio::join!(
        spawn(kafka_args(&paths.kafka_flat, kf.len())),
        spawn(kafka_args(&paths.kafka_pb, kp.len())),
        spawn(rabbit_args(&paths.rabbit_flat, rf.len())),
        spawn(rabbit_args(&paths.rabbit_pb, rp.len())),
    );
    let bytes_of = |lines: &[Value]| -> Vec<Vec<u8>> {
        lines.iter().map(|l| hex(l["value"].as_str().unwrap())).collect()
    };
    let (py_kf, py_kp, py_rf, py_rp) =
        (py_kf.unwrap(), py_kp.unwrap(), py_rf.unwrap(), py_rp.unwrap());
    // confluent-kafka saw the same records at the same offsets as rdkafka.
    for (what, py, rs) in [("flat", &py_kf, &kf), ("protobuf", &py_kp, &kp)] {
        let got: Vec<(i64, i64, Vec<u8>)> = py
            .iter()
            .map(|l| {
                (
                    l["partition"].as_i64().unwrap(),
                    l["offset"].as_i64().unwrap(),
                    hex(l["value"].as_str().unwrap()),
                )
            })
            .collect();
        let want: Vec<(i64, i64, Vec<u8>)> =
            rs.iter().map(|r| (i64::from(r.partition), r.offset, r.payload.clone())).collect();
        assert!(got == want, "confluent-kafka read other {what} records than rdkafka");
    }
    // And what they read is every row of the TCP path, exactly.
    check_flat_equals_tcp("confluent-kafka flat", &bytes_of(&py_kf), &tcp, since);
    check_protobuf_equals_tcp("confluent-kafka protobuf", &bytes_of(&py_kp), &tcp);
    check_flat_equals_tcp("pika flat", &bytes_of(&py_rf), &tcp, since);
    check_protobuf_equals_tcp("pika protobuf", &bytes_of(&py_rp), &tcp);
    // Python's own JSON parse of the flat messages agrees with ours.
    for l in py_kf.iter().chain(&py_rf) {
        let ours: Value = serde_json::from_slice(&hex(l["value"].as_str().unwrap())).unwrap();
        for k in ["database", "table", "type", "isDdl", "data"] {
            assert_eq!(l["flat"][k], ours[k], "Python's parse of {k}");
        }
    }
    let rows: usize = py_kf.iter().map(|l| l["flat"]["data"].as_array().map_or(0, Vec::len)).sum();
    eprintln!(
        "Python read {} + {} Kafka and {} + {} RabbitMQ messages ({rows} flat rows)",
        py_kf.len(),
        py_kp.len(),
        py_rf.len(),
        py_rp.len()
    );
    paths.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Routing rules
// ---------------------------------------------------------------------------------------------

/// A row image: column name → value (`None` for SQL NULL).
type Row = BTreeMap<String, Option<String>>;

/// One row change as a consumer sees it.
#[derive(Clone, Debug)]
struct Change {
    topic: String,
    partition: i32,
    schema: String,
    table: String,
    kind: String,
    row: Row,
    /// UPDATE: the old values of the changed columns (FlatMessage `old`, or the before image's
    /// columns whose after column is flagged `updated`).
    old: Option<Row>,
}

fn to_row(v: &Value) -> Row {
    v.as_object()
        .expect("a row object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
        .collect()
}

/// The row changes of a FlatMessage payload.
fn flat_changes(r: &Record) -> Vec<Change> {
    let v: Value = serde_json::from_slice(&r.payload).expect("FlatMessage JSON");
    let Some(data) = v["data"].as_array() else { return Vec::new() };
    let old = v["old"].as_array();
    if let Some(old) = old {
        // Java keeps `old[i]` with `data[i]`, also in the parts of a split message.
        assert_eq!(old.len(), data.len(), "one old image per row: {v}");
    }
    data.iter()
        .enumerate()
        .map(|(i, row)| Change {
            topic: r.topic.clone(),
            partition: r.partition,
            schema: v["database"].as_str().unwrap().to_owned(),
            table: v["table"].as_str().unwrap().to_owned(),
            kind: v["type"].as_str().unwrap().to_owned(),
            row: to_row(row),
            old: old.map(|o| to_row(&o[i])),
        })
        .collect()
}

/// The row changes of a protobuf packet payload (before image for DELETE, after otherwise).
fn packet_changes(r: &Record) -> Vec<Change> {
    let mut out = Vec::new();
    for bytes in packet_entries(&r.payload) {
        let (e, rc) = decode(&bytes);
        let Some(rc) = rc.filter(|rc| !rc.is_ddl()) else { continue };
        let h = e.header.unwrap_or_default();
        let kind = rc.event_type();
        for rd in &rc.row_datas {
            let cols =
                if kind == EventType::Delete { &rd.before_columns } else { &rd.after_columns };
            out.push(Change {
                topic: r.topic.clone(),
                partition: r.partition,
                schema: h.schema_name().to_owned(),
                table: h.table_name().to_owned(),
                kind: format!("{kind:?}").to_uppercase(),
                row: cols
                    .iter()
                    .map(|c| (c.name().to_owned(), (!c.is_null()).then(|| c.value().to_owned())))
                    .collect(),
                old: (kind == EventType::Update).then(|| {
                    rd.before_columns
                        .iter()
                        .filter(|b| {
                            rd.after_columns.iter().any(|a| a.name() == b.name() && a.updated())
                        })
                        .map(|c| {
                            (c.name().to_owned(), (!c.is_null()).then(|| c.value().to_owned()))
                        })
                        .collect()
                }),
            });
        }
    }
    out
}

/// Java Canal's partition of a row under a column rule (`db.table:c1^c2`, or `$pk$` with the
/// key columns): `h = db.hashCode()` (when `canal.mq.database.hash`, else 0) XOR each
/// column value's `String.hashCode()` (a NULL or missing value counts as `""`), then
/// `Math.abs(Math.abs(h) % n)`.
fn java_row_partition(db: Option<&str>, row: &Row, columns: &[&str], n: u32) -> i32 {
    let mut h = db.map_or(0, java_string_hash);
    for c in columns {
        h ^= java_string_hash(row.get(*c).cloned().flatten().as_deref().unwrap_or(""));
    }
    java_partition(h, n) as i32
}

/// Java Canal's partition of a table-only hash rule: `Math.abs(Math.abs(table.hashCode()) % n)`.
fn java_table_partition(table: &str, n: u32) -> i32 {
    java_partition(java_string_hash(table), n) as i32
}

/// Two schemas with the same workload shape: `a.orders (id)`, `a.items (a, b)` with a
/// composite key, `b.orders (id)`; multi-byte hash values, multi-row statements (one entry,
/// many rows), transactions across tables, updates and deletes. Run before the server starts
/// (from the recorded position), so every run publishes the same changes.
struct RouteFixture {
    a: String,
    b: String,
    file: String,
    pos: u64,
    /// Per key (schema, table, key values): the (type, seq) of each change, in binlog order.
    want: BTreeMap<(String, String, String), Vec<(String, i64)>>,
}

impl RouteFixture {
    fn rows(&self) -> usize {
        self.want.values().map(Vec::len).sum()
    }
}

async fn route_fixture(tag: &str) -> Option<RouteFixture> {
    support::service("CANAL_TEST_MYSQL")?;
    support::service("CANAL_TEST_MYSQL_ADMIN")?;
    let mut admin = admin().await;
    admin.query_drop("SET NAMES utf8mb4").await.unwrap();
    let a = unique_db(tag);
    let b = format!("{a}_b");
    let orders = "(id INT PRIMARY KEY, k1 VARCHAR(40), k2 INT, seq INT NOT NULL)";
    for s in [
        format!("CREATE DATABASE `{a}` DEFAULT CHARACTER SET utf8mb4"),
        format!("CREATE DATABASE `{b}` DEFAULT CHARACTER SET utf8mb4"),
        format!("CREATE TABLE `{a}`.orders {orders}"),
        format!(
            "CREATE TABLE `{a}`.items (a INT, b VARCHAR(20), seq INT NOT NULL, PRIMARY KEY (a, b))"
        ),
        format!("CREATE TABLE `{b}`.orders {orders}"),
    ] {
        admin.query_drop(&s).await.unwrap();
    }
    let (file, pos) = master_status(&mut admin).await;
    let mut want: BTreeMap<(String, String, String), Vec<(String, i64)>> = BTreeMap::new();
    let mut push = |s: &str, t: &str, k: String, kind: &str, seq: i64| {
        want.entry((s.to_owned(), t.to_owned(), k)).or_default().push((kind.to_owned(), seq));
    };
    let k1 = |i: i64| format!("kü{}😀", i % 7);
    let mut sql = Vec::new();
    for chunk in (0..24).collect::<Vec<i64>>().chunks(6) {
        let v: Vec<String> =
            chunk.iter().map(|i| format!("({i}, '{}', {}, 0)", k1(*i), i % 4)).collect();
        let it: Vec<String> = chunk.iter().map(|i| format!("({}, 'b{i}', 0)", i % 6)).collect();
        // One transaction over both tables.
        sql.push("BEGIN".to_owned());
        sql.push(format!("INSERT INTO `{a}`.orders VALUES {}", v.join(",")));
        sql.push(format!("INSERT INTO `{a}`.items VALUES {}", it.join(",")));
        sql.push("COMMIT".to_owned());
        for i in chunk {
            push(&a, "orders", i.to_string(), "INSERT", 0);
            push(&a, "items", format!("{}|b{i}", i % 6), "INSERT", 0);
        }
    }
    let v: Vec<String> = (0..16).map(|i| format!("({i}, '{}', {}, 0)", k1(i), i % 4)).collect();
    sql.push(format!("INSERT INTO `{b}`.orders VALUES {}", v.join(",")));
    (0..16).for_each(|i| push(&b, "orders", i.to_string(), "INSERT", 0));
    for seq in 1..=2 {
        sql.push(format!("UPDATE `{a}`.orders SET seq = seq + 1 WHERE id % 3 = 0"));
        (0..24)
            .filter(|i| i % 3 == 0)
            .for_each(|i| push(&a, "orders", i.to_string(), "UPDATE", seq));
    }
    sql.push(format!("UPDATE `{a}`.items SET seq = seq + 1 WHERE a IN (1, 2)"));
    (0..24)
        .filter(|i| [1, 2].contains(&(i % 6)))
        .for_each(|i| push(&a, "items", format!("{}|b{i}", i % 6), "UPDATE", 1));
    sql.push(format!("UPDATE `{b}`.orders SET seq = seq + 1 WHERE id % 2 = 0"));
    (0..16).filter(|i| i % 2 == 0).for_each(|i| push(&b, "orders", i.to_string(), "UPDATE", 1));
    sql.push(format!("DELETE FROM `{a}`.orders WHERE id % 5 = 0"));
    for i in (0..24).filter(|i| i % 5 == 0) {
        let seq = if i % 3 == 0 { 2 } else { 0 };
        push(&a, "orders", i.to_string(), "DELETE", seq);
    }
    sql.push(format!("DELETE FROM `{b}`.orders WHERE id % 7 = 0"));
    for i in (0..16).filter(|i| i % 7 == 0) {
        push(&b, "orders", i.to_string(), "DELETE", i64::from(i % 2 == 0));
    }
    for s in &sql {
        admin.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    admin.disconnect().await.unwrap();
    Some(RouteFixture { a, b, file, pos, want })
}

/// Where a row must go: (topic, partition), from its schema, table and values.
type Expect = Box<dyn Fn(&str, &str, &Row) -> (String, i32) + Send>;

/// Runs `fx`'s changes through a Kafka-mode server with `routing`, reads every partition of
/// `topics` (created first with their partition counts), and checks: every row arrives once,
/// in the topic and partition `expect` gives, in binlog order per key; at least
/// `min_targets` distinct (topic, partition) pairs are used (so the rule is really exercised).
/// `batch_size` replaces the worker's store batch (default 50; the store counts 1 KiB units):
/// 1 makes every few entries a batch of its own, so many batches are in flight at once.
/// Returns the changes seen.
async fn run_route_case(
    fx: &RouteFixture,
    routing: RoutingConfig,
    topics: &[(&str, i32)],
    min_targets: usize,
    expect: Expect,
    batch_size: Option<usize>,
) -> Vec<Change> {
    let bootstrap = support::service("CANAL_TEST_KAFKA").expect("checked by the caller");
    let zk_servers = support::service("CANAL_TEST_ZK").expect("checked by the caller");
    for (t, n) in topics {
        create_topic(&bootstrap, t, *n).await;
    }
    let flat = routing.flat_message;
    let dest = format!("{}_d", fx.a);
    let inst = instance(&dest, &[&fx.a, &fx.b], &fx.file, fx.pos);
    let mut mq = mq_settings(ServerMode::Kafka, &dest, routing);
    if let Some(b) = batch_size {
        mq.worker.batch_size = b;
    }
    let server = start(&zk_servers, Some(mq), vec![inst]).await;
    let changes_of = move |r: &Record| if flat { flat_changes(r) } else { packet_changes(r) };
    let total = fx.rows();
    let topics: Vec<(String, i32)> = topics.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect();
    let records = read_kafka(&topics, Duration::from_secs(30), move |r| {
        r.iter().map(|r| changes_of(r).len()).sum::<usize>() >= total
    })
    .await;
    let changes: Vec<Change> = records.iter().flat_map(changes_of).collect();
    check_routed(fx, &changes, &expect, min_targets);
    let report = server.reports().into_iter().find(|r| r.destination == dest).unwrap();
    let mq = report.mq.expect("an MQ report");
    assert_eq!(mq.send_failures, 0, "{mq:?}");
    if batch_size == Some(1) {
        assert!(mq.batches >= 5, "small batches were asked for: {mq:?}");
    }
    server.shutdown().await;
    changes
}

/// Every change in the place `expect` gives; every row of `fx` once, in binlog order per key;
/// at least `min_targets` places used.
fn check_routed(fx: &RouteFixture, changes: &[Change], expect: &Expect, min_targets: usize) {
    let mut misrouted = Vec::new();
    let mut seen: BTreeMap<(String, String, String), Vec<(String, i64)>> = BTreeMap::new();
    let mut targets = std::collections::BTreeSet::new();
    for c in changes {
        let want = expect(&c.schema, &c.table, &c.row);
        if (c.topic.clone(), c.partition) != want {
            misrouted.push(format!(
                "{}.{} {} {:?} in {}#{} instead of {}#{}",
                c.schema, c.table, c.kind, c.row, c.topic, c.partition, want.0, want.1
            ));
        }
        targets.insert(want);
        let v = |k: &str| c.row.get(k).cloned().flatten().unwrap_or_default();
        let key = if c.table == "items" { format!("{}|{}", v("a"), v("b")) } else { v("id") };
        let seq: i64 = v("seq").parse().unwrap();
        // Every update of the workload changes `seq` only, by one.
        let old_seq: Row = [("seq".to_owned(), Some((seq - 1).to_string()))].into();
        let want_old = (c.kind == "UPDATE").then_some(old_seq);
        assert_eq!(c.old, want_old, "old image of {c:?}");
        seen.entry((c.schema.clone(), c.table.clone(), key))
            .or_default()
            .push((c.kind.clone(), seq));
    }
    assert!(
        misrouted.is_empty(),
        "{} of {} rows misrouted: {:#?}",
        misrouted.len(),
        changes.len(),
        &misrouted[..misrouted.len().min(10)]
    );
    // Every row once, in binlog order per key (each key lives in one partition).
    for (key, want) in &fx.want {
        assert_eq!(seen.get(key), Some(want), "changes of {key:?}");
    }
    assert_eq!(seen.len(), fx.want.len(), "no change of a key that was never written");
    assert!(
        targets.len() >= min_targets,
        "only {targets:?} used: the case does not exercise its rule"
    );
}

fn flat_routing(topic: &str) -> RoutingConfig {
    RoutingConfig { topic: topic.to_owned(), ..RoutingConfig::default() }
}

/// `canal.mq.dynamicTopic = schema`: every table of the schema goes to the topic named after it;
/// other schemas go to `canal.mq.topic`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_topic_schema_name() {
    let Some(fx) = route_fixture("dts").await else { return };
    let (a, default) = (fx.a.clone(), format!("{}-default", fx.a));
    let routing = RoutingConfig { dynamic_topic: Some(a.clone()), ..flat_routing(&default) };
    let (ea, ed) = (a.clone(), default.clone());
    let expect: Expect =
        Box::new(move |s, _, _| (if s == ea { ea.clone() } else { ed.clone() }, 0));
    run_route_case(&fx, routing, &[(&a, 1), (&default, 1)], 2, expect, None).await;
}

/// `canal.mq.dynamicTopic = schema.table` (matched case-insensitively): the topic is the
/// lower-cased `schema.table` with Java's `.` → `_`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_topic_schema_dot_table_becomes_underscored_topic() {
    let Some(fx) = route_fixture("dtt").await else { return };
    let a = fx.a.clone();
    let default = format!("{a}-default");
    let topic = format!("{a}_orders");
    let rule = format!("{}.ORDERS", a.to_uppercase());
    let routing = RoutingConfig { dynamic_topic: Some(rule), ..flat_routing(&default) };
    let (t, d) = (topic.clone(), default.clone());
    let expect: Expect =
        Box::new(move |s, tb, _| (if s == a && tb == "orders" { t.clone() } else { d.clone() }, 0));
    run_route_case(&fx, routing, &[(&topic, 1), (&default, 1)], 2, expect, None).await;
}

/// `canal.mq.dynamicTopic` regexes: one with `\.` matches `schema.table` names only (topic
/// `schema_table`); one without matches schema names only (topic = the schema), even where it
/// would also match `schema.table`; all rules are tried on `schema.table` before `schema`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_topic_regex_table_and_schema_forms() {
    let Some(fx) = route_fixture("dtr").await else { return };
    let (a, b) = (fx.a.clone(), fx.b.clone());
    let default = format!("{a}-default");
    let items = format!("{a}_items");
    let rule = format!("{a}\\.item.*,{a}.*");
    let routing = RoutingConfig { dynamic_topic: Some(rule), ..flat_routing(&default) };
    let (ea, eb, ei) = (a.clone(), b.clone(), items.clone());
    let expect: Expect = Box::new(move |s, t, _| {
        let topic = match (s, t) {
            (s, "items") if s == ea => ei.clone(),
            (s, _) if s == ea => ea.clone(),
            _ => eb.clone(),
        };
        (topic, 0)
    });
    let topics = [(items.as_str(), 1), (a.as_str(), 1), (b.as_str(), 1), (default.as_str(), 1)];
    run_route_case(&fx, routing, &topics, 3, expect, None).await;
}

/// `canal.mq.dynamicTopic = topic:regex` lists (`,` and `;` separated): the first matching
/// item wins, its explicit topic is used (with `.` → `_`), a plain name matches a schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_topic_topic_colon_regex_list_first_match_wins() {
    let Some(fx) = route_fixture("dtl").await else { return };
    let (a, b) = (fx.a.clone(), fx.b.clone());
    let default = format!("{a}-default");
    let rule = format!("{a}-one:{a}\\.orders;{a}.two:{a}\\..*, {a}-three:{b}");
    let (one, two, three) = (format!("{a}-one"), format!("{a}_two"), format!("{a}-three"));
    let routing = RoutingConfig { dynamic_topic: Some(rule), ..flat_routing(&default) };
    let (ea, e1, e2, e3) = (a.clone(), one.clone(), two.clone(), three.clone());
    let expect: Expect = Box::new(move |s, t, _| {
        let topic = match (s, t) {
            (s, "orders") if s == ea => e1.clone(),
            (s, _) if s == ea => e2.clone(),
            _ => e3.clone(),
        };
        (topic, 0)
    });
    let topics = [(one.as_str(), 1), (two.as_str(), 1), (three.as_str(), 1), (default.as_str(), 1)];
    run_route_case(&fx, routing, &topics, 3, expect, None).await;
}

/// `canal.mq.partitionHash = db.table:c1^c2`: rows hashed by the named columns (multi-byte
/// values, database hash mixed in); an unmatched table goes to partition 0 whatever
/// `canal.mq.partition` says (Java's `messagePartition`).
async fn partition_hash_columns(flat: bool) {
    let Some(fx) = route_fixture(if flat { "phc" } else { "phcp" }).await else { return };
    let a = fx.a.clone();
    let topic = format!("{a}-t");
    let routing = RoutingConfig {
        flat_message: flat,
        partition: 1,
        partitions_num: Some(4),
        partition_hash: Some(format!("{a}.orders:k1^k2,{a}.items:b^a")),
        ..flat_routing(&topic)
    };
    let t = topic.clone();
    let expect: Expect = Box::new(move |s, tb, row| {
        let p = match tb {
            _ if s != a => 0,
            "orders" => java_row_partition(Some(&a), row, &["k1", "k2"], 4),
            _ => java_row_partition(Some(&a), row, &["b", "a"], 4),
        };
        (t.clone(), p)
    });
    run_route_case(&fx, routing, &[(&topic, 4)], 4, expect, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_hash_columns_flat() {
    partition_hash_columns(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_hash_columns_protobuf() {
    partition_hash_columns(false).await;
}

/// `canal.mq.partitionHash = db.table:$pk$`: rows hashed by their key columns (composite for
/// `items`), with the database's hash.
async fn partition_hash_pk(flat: bool) {
    let Some(fx) = route_fixture(if flat { "php" } else { "phpp" }).await else { return };
    let (a, b) = (fx.a.clone(), fx.b.clone());
    let topic = format!("{a}-t");
    let routing = RoutingConfig {
        flat_message: flat,
        partitions_num: Some(5),
        partition_hash: Some(format!("{a}.orders:$pk$,{a}.items:$pk$;{b}.orders:$pk$")),
        ..flat_routing(&topic)
    };
    let t = topic.clone();
    let expect: Expect = Box::new(move |s, tb, row| {
        let pk: &[&str] = if tb == "items" { &["a", "b"] } else { &["id"] };
        (t.clone(), java_row_partition(Some(s), row, pk, 5))
    });
    run_route_case(&fx, routing, &[(&topic, 5)], 5, expect, Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_hash_primary_key_flat() {
    partition_hash_pk(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_hash_primary_key_protobuf() {
    partition_hash_pk(false).await;
}

/// `canal.mq.partitionHash = db.table` (no columns): every row of a table goes to the partition
/// of the table name's hash (no database hash); unmatched tables to partition 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_hash_table_only() {
    let Some(fx) = route_fixture("pht").await else { return };
    let a = fx.a.clone();
    let topic = format!("{a}-t");
    // A partition count that tells the two tables and the unmatched partition 0 apart.
    let n = (3..=16)
        .find(|&n| {
            let (o, i) = (java_table_partition("orders", n), java_table_partition("items", n));
            o != i && o != 0 && i != 0
        })
        .expect("some count separates them");
    let routing = RoutingConfig {
        partitions_num: Some(n),
        partition_hash: Some(format!("{a}.orders,{a}.items")),
        ..flat_routing(&topic)
    };
    let t = topic.clone();
    let expect: Expect =
        Box::new(move |s, tb, _| (t.clone(), if s == a { java_table_partition(tb, n) } else { 0 }));
    run_route_case(&fx, routing, &[(&topic, n as i32)], 3, expect, None).await;
}

/// `canal.mq.partitionHash` with regex table patterns (`.*\.orders:id`, `db\.it[a-z]+:$pk$`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_hash_regex_patterns() {
    let Some(fx) = route_fixture("phr").await else { return };
    let a = fx.a.clone();
    let topic = format!("{a}-t");
    let routing = RoutingConfig {
        partitions_num: Some(3),
        partition_hash: Some(format!(".*\\.orders:id;{a}\\.it[a-z]+:$pk$")),
        ..flat_routing(&topic)
    };
    let t = topic.clone();
    let expect: Expect = Box::new(move |s, tb, row| {
        let cols: &[&str] = if tb == "items" { &["a", "b"] } else { &["id"] };
        (t.clone(), java_row_partition(Some(s), row, cols, 3))
    });
    run_route_case(&fx, routing, &[(&topic, 3)], 3, expect, None).await;
}

/// `canal.mq.dynamicTopicPartitionNum` (plain and regex topic names) gives each dynamic topic
/// its partition count; other topics use `canal.mq.partitionsNum`.
async fn dynamic_topic_partition_num(flat: bool) {
    let Some(fx) = route_fixture(if flat { "dpn" } else { "dpnp" }).await else { return };
    let (a, b) = (fx.a.clone(), fx.b.clone());
    let default = format!("{a}-default");
    let (orders, items) = (format!("{a}_orders"), format!("{a}_items"));
    let routing = RoutingConfig {
        flat_message: flat,
        dynamic_topic: Some(format!("{a}\\..*")),
        dynamic_topic_partition_num: Some(format!("{orders}:4,{a}_it.*:2")),
        partitions_num: Some(3),
        partition_hash: Some(".*\\..*:$pk$".to_owned()),
        ..flat_routing(&default)
    };
    let (eo, ei, ed) = (orders.clone(), items.clone(), default.clone());
    let expect: Expect = Box::new(move |s, tb, row| match tb {
        "items" => (ei.clone(), java_row_partition(Some(s), row, &["a", "b"], 2)),
        _ if s == a => (eo.clone(), java_row_partition(Some(s), row, &["id"], 4)),
        _ => {
            assert_eq!(s, b);
            (ed.clone(), java_row_partition(Some(s), row, &["id"], 3))
        }
    });
    let topics = [(orders.as_str(), 4), (items.as_str(), 2), (default.as_str(), 3)];
    run_route_case(&fx, routing, &topics, 9, expect, Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_topic_partition_num_flat() {
    dynamic_topic_partition_num(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_topic_partition_num_protobuf() {
    dynamic_topic_partition_num(false).await;
}

/// `canal.mq.database.hash = false`: the database name's hash is left out of row hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_hash_without_database_hash() {
    let Some(fx) = route_fixture("phn").await else { return };
    let a = fx.a.clone();
    let topic = format!("{a}-t");
    let routing = RoutingConfig {
        partitions_num: Some(5),
        partition_hash: Some(format!("{a}.orders:$pk$")),
        database_hash: false,
        ..flat_routing(&topic)
    };
    let t = topic.clone();
    let ea = a.clone();
    let expect: Expect = Box::new(move |s, tb, row| {
        let p =
            if s == ea && tb == "orders" { java_row_partition(None, row, &["id"], 5) } else { 0 };
        (t.clone(), p)
    });
    let changes = run_route_case(&fx, routing, &[(&topic, 5)], 5, expect, None).await;
    // The case tells the two settings apart: with the database hash some rows would move.
    let moved = changes
        .iter()
        .filter(|c| c.schema == a && c.table == "orders")
        .filter(|c| {
            java_row_partition(None, &c.row, &["id"], 5)
                != java_row_partition(Some(&a), &c.row, &["id"], 5)
        })
        .count();
    assert!(moved > 0, "database.hash would not change any partition here");
}

/// RabbitMQ (Java's `CanalRabbitMQProducer`): the dynamic topic, with `.` → `_`, is the routing
/// key on `rabbitmq.exchange`; partition rules do not apply (nothing is split or hashed).
async fn rabbitmq_dynamic_topic_routing_keys(flat: bool) {
    use lapin::options::ExchangeDeclareOptions;
    use lapin::types::FieldTable;

    let Some(amqp) = support::service("CANAL_TEST_RABBITMQ") else { return };
    let Some(zk_servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(fx) = route_fixture(if flat { "rdt" } else { "rdtp" }).await else { return };
    let a = fx.a.clone();
    let default = format!("{a}-default");
    let (orders, items) = (format!("{a}_orders"), format!("{a}_it"));
    let routing = RoutingConfig {
        flat_message: flat,
        dynamic_topic: Some(format!("{a}\\.orders,{a}.it:{a}\\.items")),
        partitions_num: Some(3),
        partition_hash: Some(format!("{a}.orders:$pk$")),
        ..flat_routing(&default)
    };
    let conn =
        lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let exchange = format!("{a}-x");
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let keys = [orders.clone(), items.clone(), default.clone()];
    for k in &keys {
        declare_queue(&ch, k, Some((&exchange, k))).await;
    }
    let dest = format!("{a}_d");
    let inst = instance(&dest, &[&fx.a, &fx.b], &fx.file, fx.pos);
    let mut mq = mq_settings(ServerMode::Rabbitmq, &dest, routing);
    mq.rabbitmq.exchange = exchange;
    let server = start(&zk_servers, Some(mq), vec![inst]).await;
    // Each queue in turn until every row arrived.
    let mut changes: Vec<Change> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while changes.len() < fx.rows() {
        assert!(Instant::now() < deadline, "RabbitMQ: {} of {} rows", changes.len(), fx.rows());
        let mut got = false;
        for k in &keys {
            use lapin::options::{BasicAckOptions, BasicGetOptions};
            if let Some(m) =
                ch.basic_get(k.as_str().into(), BasicGetOptions::default()).await.unwrap()
            {
                let r = Record {
                    topic: k.clone(),
                    partition: 0,
                    offset: 0,
                    payload: m.delivery.data.clone(),
                };
                changes.extend(if flat { flat_changes(&r) } else { packet_changes(&r) });
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
                got = true;
            }
        }
        if !got {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ea = a.clone();
    let expect: Expect = Box::new(move |s, t, _| {
        let key = match t {
            _ if s != ea => default.clone(),
            "orders" => orders.clone(),
            _ => items.clone(),
        };
        (key, 0)
    });
    check_routed(&fx, &changes, &expect, 3);
    let report = server.reports().into_iter().find(|r| r.destination == dest).unwrap();
    let mq = report.mq.expect("an MQ report");
    assert_eq!(mq.send_failures, 0, "{mq:?}");
    server.shutdown().await;
    conn.close(0, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_dynamic_topic_routing_keys_flat() {
    rabbitmq_dynamic_topic_routing_keys(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_dynamic_topic_routing_keys_protobuf() {
    rabbitmq_dynamic_topic_routing_keys(false).await;
}
