//! MQ mode end to end: a live MariaDB, a coordinator, canal-server publishing into the test
//! brokers of `cargo xtask services` (noida-db for the Kafka protocol, RabbitMQ), and the test
//! reading the topics back: every row once, hashed by primary key, in binlog order per key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use canal_core::mq::RoutingConfig;
use canal_core::protocol::entry::{Entry, EntryType, RowChange};
use canal_core::protocol::packet::{Messages, Packet};
use canal_server::config::{KafkaSection, RabbitmqSection, ServerMode};
use canal_server::mq::{MqSettings, WorkerConfig};
use canal_server::server::{Server, ServerSettings};
use mysql_async::prelude::Queryable;
use prost::Message as _;

use crate::ha::{Fixture, fixture, settings, wait_active, zk};
use crate::support;

/// A name no earlier run used on a broker that outlives test runs.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{prefix}-{}-{}", std::process::id(), nanos.as_nanos())
}

/// MQ settings for one destination.
pub fn mq_settings(mode: ServerMode, dest: &str, routing: RoutingConfig) -> MqSettings {
    let mut kafka = KafkaSection::default();
    if let Some(b) = support::service("CANAL_TEST_KAFKA") {
        kafka.bootstrap_servers = b;
    }
    let mut rabbitmq = RabbitmqSection::default();
    if let Some(url) = support::service("CANAL_TEST_RABBITMQ") {
        // amqp://guest:guest@127.0.0.1:PORT/%2f
        let hostport = url.split('@').nth(1).unwrap().split('/').next().unwrap();
        rabbitmq.host = hostport.to_owned();
    }
    MqSettings {
        mode,
        worker: WorkerConfig {
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..WorkerConfig::default()
        },
        kafka,
        rabbitmq,
        routing: [(dest.to_owned(), routing)].into_iter().collect(),
    }
}

fn server_settings(zk_servers: String, mq: MqSettings) -> ServerSettings {
    let mut s = settings(zk(zk_servers));
    s.mq = Some(mq);
    s
}

/// Inserts ids `from..to` in transactions of `per_txn` rows, then updates every third one.
async fn write_rows(fx: &mut Fixture, from: i64, to: i64, per_txn: i64) {
    let db = fx.db.clone();
    let mut id = from;
    while id < to {
        let end = (id + per_txn).min(to);
        let values: Vec<String> = (id..end).map(|i| format!("({i})")).collect();
        fx.admin.query_drop("BEGIN").await.unwrap();
        fx.admin
            .query_drop(format!("INSERT INTO `{db}`.t (id) VALUES {}", values.join(",")))
            .await
            .unwrap();
        fx.admin.query_drop("COMMIT").await.unwrap();
        id = end;
    }
}

/// One row as a consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRow {
    pub partition: i32,
    pub kind: String,
    pub id: i64,
}

/// The rows of a FlatMessage JSON payload.
pub fn flat_rows(partition: i32, payload: &[u8]) -> Vec<SeenRow> {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("FlatMessage JSON");
    let kind = v["type"].as_str().unwrap().to_owned();
    let Some(data) = v["data"].as_array() else { return Vec::new() };
    data.iter()
        .map(|row| SeenRow {
            partition,
            kind: kind.clone(),
            id: row["id"].as_str().unwrap().parse().unwrap(),
        })
        .collect()
}

/// The rows of a protobuf `Packet{MESSAGES}` payload.
pub fn packet_rows(partition: i32, payload: &[u8]) -> Vec<SeenRow> {
    let packet = Packet::decode(payload).expect("a Packet");
    let messages = Messages::decode(packet.body).expect("Messages");
    let mut out = Vec::new();
    for bytes in messages.messages {
        let e = Entry::decode(bytes).unwrap();
        if e.entry_type() != EntryType::Rowdata {
            continue;
        }
        let rc = RowChange::decode(e.store_value()).unwrap();
        let kind = format!("{:?}", rc.event_type()).to_uppercase();
        for r in &rc.row_datas {
            let cols =
                if r.after_columns.is_empty() { &r.before_columns } else { &r.after_columns };
            out.push(SeenRow {
                partition,
                kind: kind.clone(),
                id: cols[0].value().parse().unwrap(),
            });
        }
    }
    out
}

/// Checks `rows` hold each of `ids` exactly once as INSERT, all rows of one id in one partition.
pub fn check_once(rows: &[SeenRow], ids: std::ops::Range<i64>) {
    let mut inserts: BTreeMap<i64, usize> = BTreeMap::new();
    let mut partition_of: BTreeMap<i64, i32> = BTreeMap::new();
    for r in rows {
        if r.kind == "INSERT" {
            *inserts.entry(r.id).or_default() += 1;
        }
        let p = *partition_of.entry(r.id).or_insert(r.partition);
        assert_eq!(p, r.partition, "id {} in two partitions", r.id);
    }
    let missing: Vec<i64> = ids.clone().filter(|i| !inserts.contains_key(i)).collect();
    let dup: Vec<(i64, usize)> =
        inserts.iter().filter(|(_, n)| **n > 1).map(|(i, n)| (*i, *n)).collect();
    assert!(
        missing.is_empty(),
        "{} ids never published: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(dup.is_empty(), "ids published more than once: {dup:?}");
}

#[cfg(feature = "kafka")]
pub mod kafka {
    use std::time::{Duration, Instant};

    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    use rdkafka::{Offset, TopicPartitionList};

    /// Creates `topic` with `partitions`.
    pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
        let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let r = admin.create_topics([&t], &AdminOptions::new()).await.unwrap();
        for x in r {
            x.unwrap();
        }
    }

    /// Reads every partition of `topic` from the start (assigned explicitly: no consumer group)
    /// until `done` says so (or `limit`); returns (partition, offset, payload) in consumption
    /// order.
    pub fn read(
        bootstrap: &str,
        topic: &str,
        read_committed: bool,
        limit: Duration,
        done: impl Fn(&[(i32, i64, Vec<u8>)]) -> bool,
    ) -> Vec<(i32, i64, Vec<u8>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", super::unique("canal-test"))
            .set("enable.auto.commit", "false")
            .set(
                "isolation.level",
                if read_committed { "read_committed" } else { "read_uncommitted" },
            )
            .create()
            .unwrap();
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let partitions = md.topics()[0].partitions().len() as i32;
        assert!(partitions > 0, "topic {topic} has no partitions");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        // `done` looks at everything read: asked when the topic is idle or every 1000 messages,
        // not after each one (that would be quadratic).
        let mut check = true;
        while !(check && done(&out)) && Instant::now() < deadline {
            check = false;
            match consumer.poll(Duration::from_millis(100)) {
                None => check = true,
                Some(Ok(m)) => out.push((
                    m.partition(),
                    m.offset(),
                    m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                )),
                Some(Err(e)) => eprintln!("consumer: {e}"),
            }
            check |= out.len() % 1000 == 0;
        }
        if !done(&out) {
            for p in 0..partitions {
                let w = consumer.fetch_watermarks(topic, p, Duration::from_secs(5));
                eprintln!("{topic}[{p}] watermarks {w:?}");
            }
        }
        out
    }
}

#[cfg(feature = "kafka")]
async fn kafka_round_trip(flat: bool) {
    let Some(bootstrap) = support::service("CANAL_TEST_KAFKA") else { return };
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = fixture(if flat { "mqkf" } else { "mqkp" }).await else { return };
    let topic = unique("canal-mq");
    kafka::create_topic(&bootstrap, &topic, 3).await;
    let routing = RoutingConfig {
        flat_message: flat,
        topic: topic.clone(),
        partitions_num: Some(3),
        partition_hash: Some(format!("{}.t:id", fx.db)),
        ..RoutingConfig::default()
    };
    let mq = mq_settings(ServerMode::Kafka, &fx.db, routing);
    let server =
        Server::start(server_settings(servers, mq), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&server, &fx.db, Duration::from_secs(20)).await;
    write_rows(&mut fx, 0, 300, 7).await;
    let db = fx.db.clone();
    fx.admin
        .query_drop(format!("UPDATE `{db}`.t SET id = id + 1000 WHERE id % 50 = 0"))
        .await
        .unwrap();
    let decode = |(p, _, payload): &(i32, i64, Vec<u8>)| {
        if flat { flat_rows(*p, payload) } else { packet_rows(*p, payload) }
    };
    let want = 300 + 6;
    let msgs = kafka::read(&bootstrap, &topic, false, Duration::from_secs(60), |m| {
        m.iter().map(|x| decode(x).len()).sum::<usize>() >= want
    });
    let rows: Vec<SeenRow> = msgs.iter().flat_map(decode).collect();
    check_once(&rows, 0..300);
    let partitions: std::collections::BTreeSet<i32> = rows.iter().map(|r| r.partition).collect();
    assert!(partitions.len() == 3, "300 keys hashed over 3 partitions, got {partitions:?}");
    // Per partition, the inserts come in binlog (id) order.
    for p in partitions {
        let ids: Vec<i64> =
            rows.iter().filter(|r| r.partition == p && r.kind == "INSERT").map(|r| r.id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "partition {p} out of binlog order");
    }
    let updates = rows.iter().filter(|r| r.kind == "UPDATE").count();
    assert_eq!(updates, 6, "the 6 updates");
    let report = server.reports().into_iter().find(|r| r.destination == fx.db).unwrap();
    let mq = report.mq.expect("an MQ report");
    assert!(mq.messages > 0 && mq.send_failures == 0, "{mq:?}");
    server.shutdown().await;
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_flat_messages_every_row_once_hashed_by_pk() {
    kafka_round_trip(true).await;
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_protobuf_messages_every_row_once_hashed_by_pk() {
    kafka_round_trip(false).await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_flat_messages_every_row_once_in_order() {
    use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    let Some(url) = support::service("CANAL_TEST_RABBITMQ") else { return };
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = fixture("mqrf").await else { return };
    let queue = unique("canal-mq");
    // The default exchange routes by queue name: the topic names the queue.
    let conn =
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let routing = RoutingConfig { topic: queue.clone(), ..RoutingConfig::default() };
    let mq = mq_settings(ServerMode::Rabbitmq, &fx.db, routing);
    let server =
        Server::start(server_settings(servers, mq), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&server, &fx.db, Duration::from_secs(20)).await;
    write_rows(&mut fx, 0, 200, 9).await;
    let mut rows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows.len() < 200 && Instant::now() < deadline {
        match ch.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap() {
            Some(m) => {
                rows.extend(flat_rows(0, &m.delivery.data));
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    check_once(&rows, 0..200);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, (0..200).collect::<Vec<_>>(), "one queue: binlog order");
    server.shutdown().await;
    conn.close(0, "done".into()).await.unwrap();
}
