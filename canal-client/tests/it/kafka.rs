//! `canal_client::kafka::KafkaConnector` and `canal-client tail --kafka` against a real
//! Kafka-protocol broker (`CANAL_TEST_KAFKA`): records produced with rdkafka in both of Canal's
//! formats (built by canal-core's MQ router, as canal-server publishes them) come back as the
//! entries they were built from; ack commits the group's offsets (a second connector resumes
//! there), rollback seeks back to them, read_committed hides aborted transactions, bad records
//! are typed errors or skipped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use canal_client::kafka::{Isolation, KafkaBatch, KafkaConfig, KafkaConnector};
use canal_client::mq::{RecordError, RecordFormat};
use canal_client::{ClientError, EMPTY_BATCH_ID};
use canal_core::flat::FlatMessage;
use canal_core::mq::{Router, RoutingConfig};
use canal_core::protocol::entry::{Entry, EntryType, EventType, Header, RowChange, RowData};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::process::Command;

use crate::fake::{self, FakeServer};
use crate::support;

/// How long a test waits for records that were produced (group join included).
const DEADLINE: Duration = Duration::from_secs(30);

fn broker() -> Option<String> {
    support::service("CANAL_TEST_KAFKA")
}

/// A topic name no other test (or earlier run against the same broker) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

async fn create_topic(bootstrap: &str, partitions: i32) -> String {
    let name = unique("canal-client-it");
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(DEADLINE)))
        .await
        .expect("CreateTopics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    name
}

fn producer(bootstrap: &str, transactional_id: Option<&str>) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("enable.idempotence", "true").set("acks", "all");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
    }
    c.create().unwrap()
}

async fn send(p: &FutureProducer, topic: &str, partition: i32, payload: &[u8]) -> i64 {
    let record = FutureRecord::<(), [u8]>::to(topic).partition(partition).payload(payload);
    p.send(record, DEADLINE).await.map_err(|(e, _)| e).expect("delivered").offset
}

fn col(
    i: i32,
    name: &str,
    v: Option<&str>,
    key: bool,
    updated: bool,
) -> canal_client::entry::Column {
    let mut c = fake::col(i, name, v, key, updated);
    c.mysql_type = Some(if i == 0 { "bigint(20)" } else { "varchar(64)" }.into());
    c.sql_type = Some(if i == 0 { -5 } else { 12 });
    c
}

fn row_entry(et: EventType, rows: Vec<RowData>, offset: i64) -> Entry {
    let rc = RowChange {
        event_type: Some(et as i32),
        is_ddl: Some(false),
        row_datas: rows,
        ..RowChange::default()
    };
    Entry {
        header: Some(Header {
            version: Some(1),
            logfile_name: Some("mysql-bin.000001".into()),
            logfile_offset: Some(offset),
            schema_name: Some("shop".into()),
            table_name: Some("orders".into()),
            execute_time: Some(1_700_000_000_000 + offset),
            event_type: Some(et as i32),
            ..Header::default()
        }),
        entry_type: Some(EntryType::Rowdata as i32),
        store_value: Some(rc.encode_to_vec().into()),
    }
}

/// One transaction's entries: BEGIN, an INSERT of two rows, an UPDATE, a DELETE, a DDL.
fn transaction(base: i64) -> Vec<Entry> {
    let id = |n: i64| (base + n).to_string();
    let ddl = RowChange {
        event_type: Some(EventType::Alter as i32),
        is_ddl: Some(true),
        sql: Some("ALTER TABLE orders ADD note TEXT".into()),
        ..RowChange::default()
    };
    let mut alter = row_entry(EventType::Alter, vec![], base + 500);
    alter.store_value = Some(ddl.encode_to_vec().into());
    vec![
        fake::begin(base),
        row_entry(
            EventType::Insert,
            vec![
                RowData {
                    after_columns: vec![
                        col(0, "id", Some(&id(1)), true, true),
                        col(1, "name", Some("two words"), false, true),
                    ],
                    ..RowData::default()
                },
                RowData {
                    after_columns: vec![
                        col(0, "id", Some(&id(2)), true, true),
                        col(1, "name", None, false, true),
                    ],
                    ..RowData::default()
                },
            ],
            base + 100,
        ),
        row_entry(
            EventType::Update,
            vec![RowData {
                before_columns: vec![
                    col(0, "id", Some(&id(1)), true, false),
                    col(1, "name", Some("two words"), false, false),
                ],
                after_columns: vec![
                    col(0, "id", Some(&id(1)), true, false),
                    col(1, "name", Some("ü=1"), false, true),
                ],
                props: vec![],
            }],
            base + 200,
        ),
        row_entry(
            EventType::Delete,
            vec![RowData {
                before_columns: vec![
                    col(0, "id", Some(&id(2)), true, false),
                    col(1, "name", None, false, false),
                ],
                ..RowData::default()
            }],
            base + 300,
        ),
        alter,
    ]
}

fn raw(entries: &[Entry]) -> Vec<Bytes> {
    entries.iter().map(|e| Bytes::from(e.encode_to_vec())).collect()
}

fn payloads(flat: bool, batch_id: i64, entries: &[Entry]) -> Vec<Vec<u8>> {
    let router =
        Router::new(RoutingConfig { flat_message: flat, ..RoutingConfig::default() }).unwrap();
    router.route(batch_id, &raw(entries), 1234).unwrap().into_iter().map(|r| r.payload).collect()
}

/// The FlatMessage JSON of each row entry, with a fixed id and ts.
fn flat_json(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| FlatMessage::from_entry(e, 0, 0).unwrap())
        .map(|f| f.to_json())
        .collect()
}

/// Batches until `records` records were read (not acked), or panics at the deadline.
async fn take(c: &mut KafkaConnector, records: usize, max: usize) -> Vec<KafkaBatch> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut out = Vec::new();
    let mut n = 0;
    while n < records {
        assert!(tokio::time::Instant::now() < deadline, "only {n} of {records} records came");
        let b = c.get_records_without_ack(max.min(records - n), Duration::from_millis(200)).await;
        let b = b.expect("a batch");
        n += b.records.len();
        if !b.records.is_empty() {
            out.push(b);
        }
    }
    out
}

/// Reads for `quiet` and asserts that nothing comes.
async fn assert_nothing(c: &mut KafkaConnector, quiet: Duration) {
    let b = c.get_records_without_ack(10, quiet).await.unwrap();
    assert!(b.records.is_empty(), "unexpected records {:?}", b.records);
    assert_eq!(b.message.id, EMPTY_BATCH_ID);
}

fn offsets(batches: &[KafkaBatch]) -> Vec<(i32, i64)> {
    batches.iter().flat_map(|b| b.records.iter().map(|r| (r.partition, r.offset))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_and_protobuf_records_come_back_as_their_entries() {
    let Some(bootstrap) = broker() else { return };
    let topic = create_topic(&bootstrap, 2).await;
    let p = producer(&bootstrap, None);
    // Partition 0: a transaction as FlatMessages; partition 1: another as one protobuf packet.
    let flat_tx = transaction(1000);
    let proto_tx = transaction(2000);
    let flat_records = payloads(true, 7, &flat_tx);
    assert_eq!(flat_records.len(), 4, "one FlatMessage per row entry");
    for r in &flat_records {
        send(&p, &topic, 0, r).await;
    }
    let proto_records = payloads(false, 8, &proto_tx);
    assert_eq!(proto_records.len(), 1, "one packet per batch");
    send(&p, &topic, 1, &proto_records[0]).await;

    let mut c =
        KafkaConnector::open(&bootstrap, &topic, &unique("g"), RecordFormat::Auto).await.unwrap();
    let batches = take(&mut c, 5, 100).await;
    let mut flat_entries = Vec::new();
    let mut proto_entries = Vec::new();
    for b in &batches {
        for r in &b.records {
            let entries = &b.message.entries[r.entries.0..r.entries.1];
            match (r.partition, r.format) {
                (0, RecordFormat::Flat) => {
                    assert_eq!(r.canal_batch_id, 7);
                    flat_entries.extend_from_slice(entries);
                }
                (1, RecordFormat::Protobuf) => proto_entries.extend_from_slice(entries),
                other => panic!("record {r:?}: {other:?}"),
            }
        }
        // The message's raw bytes are its entries'.
        let decoded =
            canal_client::Message::decode(b.message.id, b.message.raw_entries().to_vec()).unwrap();
        assert_eq!(decoded, b.message);
    }
    // canal-server leaves BEGIN/END out of MQ packets (Java's MQ mode forces
    // filter.transaction.entry).
    assert_eq!(proto_entries, proto_tx[1..], "protobuf: the entries as published");
    assert_eq!(flat_json(&flat_entries), flat_json(&flat_tx), "flat: the same FlatMessages");
    // And the values through the row-change view, as TCP consumers read them.
    let msg = canal_client::Message::from_entries(1, flat_entries);
    let changes: Vec<_> = msg.row_changes().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        changes.iter().map(|c| c.event_type()).collect::<Vec<_>>(),
        [EventType::Insert, EventType::Update, EventType::Delete, EventType::Alter]
    );
    let ins: Vec<_> = changes[0].rows().map(|r| r.after().to_map()).collect();
    assert_eq!(ins[0].get("name"), Some(&Some("two words")));
    assert_eq!(ins[1].get("name"), Some(&None));
    let upd = changes[1].rows().next().unwrap();
    assert_eq!(upd.before().get("name"), Some(Some("two words")));
    assert_eq!(upd.after().get("name"), Some(Some("ü=1")));
    assert_eq!(upd.after().updated().collect::<Vec<_>>(), ["name"]);
    assert_eq!(upd.after().keys().collect::<Vec<_>>(), ["id"]);
    assert_eq!(changes[2].rows().next().unwrap().before().get("id"), Some(Some("1002")));
    assert_eq!(changes[3].sql(), "ALTER TABLE orders ADD note TEXT");
    assert_eq!((changes[0].schema(), changes[0].table()), ("shop", "orders"));
    assert_eq!(changes[0].execute_time(), 1_700_000_001_100);
    for b in &batches {
        c.ack(b.message.id).await.unwrap();
    }
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_commits_and_rollback_seeks_back_to_the_last_ack() {
    let Some(bootstrap) = broker() else { return };
    let topic = create_topic(&bootstrap, 1).await;
    let p = producer(&bootstrap, None);
    for i in 0..10 {
        for r in payloads(true, i, &[row_entry(EventType::Insert, vec![], i)]) {
            send(&p, &topic, 0, &r).await;
        }
    }
    let group = unique("g");
    let config = || KafkaConfig::new(&bootstrap, &topic, &group).format(RecordFormat::Flat);
    let mut a = KafkaConnector::connect(config()).await.unwrap();

    // Nothing committed yet: a rollback goes back to the first record read.
    let first = take(&mut a, 2, 2).await;
    assert_eq!(offsets(&first), [(0, 0), (0, 1)]);
    a.rollback(0).await.unwrap();
    assert!(matches!(a.ack(first[0].message.id).await, Err(ClientError::NoSuchBatch { .. })));
    let b1 = take(&mut a, 3, 3).await;
    assert_eq!(offsets(&b1), [(0, 0), (0, 1), (0, 2)], "read again after the rollback");
    let b2 = take(&mut a, 2, 2).await;
    let b3 = take(&mut a, 2, 2).await;
    assert_eq!(offsets(&b3), [(0, 5), (0, 6)]);
    // Acking b2 acks b1 too (offsets are positions); b3 stays outstanding.
    a.ack(b2[0].message.id).await.unwrap();
    assert_eq!(a.outstanding(), [b3[0].message.id]);
    assert!(matches!(
        a.ack(b1[0].message.id).await,
        Err(ClientError::NoSuchBatch { batch_id }) if batch_id == b1[0].message.id
    ));
    assert!(matches!(a.rollback(12345).await, Err(ClientError::NoSuchBatch { .. })));
    // Rollback: back to the committed offset 5.
    a.rollback(b3[0].message.id).await.unwrap();
    assert!(a.outstanding().is_empty());
    let again = take(&mut a, 3, 3).await;
    assert_eq!(offsets(&again), [(0, 5), (0, 6), (0, 7)]);
    a.ack(again[0].message.id).await.unwrap();
    let unacked = take(&mut a, 1, 1).await;
    assert_eq!(offsets(&unacked), [(0, 8)]);
    a.close().await;

    // Another connector of the group resumes after the last ack (offset 8 was not acked).
    let mut b = KafkaConnector::connect(config()).await.unwrap();
    let rest = take(&mut b, 2, 10).await;
    assert_eq!(offsets(&rest), [(0, 8), (0, 9)]);
    let m = b.get(10, Duration::from_millis(300)).await.unwrap();
    assert!(m.is_empty());
    b.ack(rest[0].message.id).await.unwrap();
    b.close().await;

    // A third starts at the end: nothing left.
    let mut c = KafkaConnector::connect(config()).await.unwrap();
    assert_nothing(&mut c, Duration::from_secs(3)).await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_hides_aborted_transactions() {
    let Some(bootstrap) = broker() else { return };
    let topic = create_topic(&bootstrap, 1).await;
    let p = producer(&bootstrap, Some(&unique("tx")));
    let payload =
        |i: i64| payloads(false, i, &[row_entry(EventType::Insert, vec![], i)]).pop().unwrap();
    p.init_transactions(DEADLINE).unwrap();
    p.begin_transaction().unwrap();
    for i in 0..3 {
        send(&p, &topic, 0, &payload(i)).await;
    }
    p.abort_transaction(DEADLINE).unwrap();
    p.begin_transaction().unwrap();
    for i in 3..5 {
        send(&p, &topic, 0, &payload(i)).await;
    }
    p.commit_transaction(DEADLINE).unwrap();

    let header_offsets = |batches: &[KafkaBatch]| -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.message.entries.iter().map(|e| e.header.as_ref().unwrap().logfile_offset())
            })
            .collect()
    };
    let mut committed =
        KafkaConnector::connect(KafkaConfig::new(&bootstrap, &topic, unique("g"))).await.unwrap();
    assert_eq!(committed.config().isolation, Isolation::ReadCommitted, "the default");
    let seen = take(&mut committed, 2, 10).await;
    assert_eq!(header_offsets(&seen), [3, 4], "only the committed transaction's records");
    assert_nothing(&mut committed, Duration::from_secs(2)).await;
    committed.close().await;

    let mut all = KafkaConnector::connect(
        KafkaConfig::new(&bootstrap, &topic, unique("g")).isolation(Isolation::ReadUncommitted),
    )
    .await
    .unwrap();
    let seen = take(&mut all, 5, 10).await;
    assert_eq!(header_offsets(&seen), [0, 1, 2, 3, 4], "read_uncommitted sees the aborted ones");
    all.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_typed_errors_or_skipped() {
    let Some(bootstrap) = broker() else { return };
    let topic = create_topic(&bootstrap, 1).await;
    let p = producer(&bootstrap, None);
    let good = |i| payloads(true, i, &[row_entry(EventType::Insert, vec![], i)]).pop().unwrap();
    send(&p, &topic, 0, &good(0)).await;
    send(&p, &topic, 0, b"not a canal message").await;
    send(&p, &topic, 0, br#"{"type":"INSERT","data":"#).await;
    send(&p, &topic, 0, &good(3)).await;

    let mut c =
        KafkaConnector::open(&bootstrap, &topic, &unique("g"), RecordFormat::Auto).await.unwrap();
    // The good record before the bad one comes first, the error on the next call.
    let first = take(&mut c, 1, 10).await;
    assert_eq!(offsets(&first), [(0, 0)]);
    let e = c.get_without_ack(10, DEADLINE).await.unwrap_err();
    match &e {
        ClientError::BadRecord { topic: t, partition: 0, offset: 1, source } => {
            assert_eq!(t, &topic);
            assert!(matches!(source, RecordError::Unrecognised(_)), "{source:?}");
        }
        e => panic!("{e:?}"),
    }
    assert!(e.to_string().contains(&format!("{topic}/0@1")), "{e}");
    let e = c.get_without_ack(10, DEADLINE).await.unwrap_err();
    assert!(
        matches!(e, ClientError::BadRecord { offset: 2, source: RecordError::Json(_), .. }),
        "{e:?}"
    );
    let last = take(&mut c, 1, 10).await;
    assert_eq!(offsets(&last), [(0, 3)]);
    // A rollback reads the bad records again.
    c.rollback(0).await.unwrap();
    assert_eq!(offsets(&take(&mut c, 1, 10).await), [(0, 0)]);
    assert!(matches!(
        c.get_without_ack(10, DEADLINE).await,
        Err(ClientError::BadRecord { offset: 1, .. })
    ));
    c.close().await;

    // Skipping: one batch of the two good records, and its ack commits past the bad ones.
    let group = unique("g");
    let skipping = || KafkaConfig::new(&bootstrap, &topic, &group).skip_bad_records(true);
    let mut s = KafkaConnector::connect(skipping()).await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "got {got:?}");
        let b = s.get_records_without_ack(10, Duration::from_millis(200)).await.unwrap();
        got.extend(b.records.iter().map(|r| r.offset));
        if b.message.id != EMPTY_BATCH_ID {
            s.ack(b.message.id).await.unwrap();
        }
    }
    assert_eq!(got, [0, 3]);
    s.close().await;
    let mut after = KafkaConnector::connect(skipping()).await.unwrap();
    assert_nothing(&mut after, Duration::from_secs(3)).await;
    after.close().await;
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canal-client"));
    c.kill_on_drop(true);
    c
}

async fn run(args: &[&str]) -> String {
    let out = tokio::time::timeout(DEADLINE, bin().args(args).output())
        .await
        .expect("canal-client finishes")
        .expect("canal-client runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "canal-client {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Drops the per-run fields (`id`: the batch id of the reader, `ts`: when it was printed).
fn without_id_ts(json_lines: &str) -> Vec<serde_json::Value> {
    json_lines
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            assert!(o.remove("id").is_some() && o.remove("ts").is_some(), "{l}");
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_kafka_prints_what_tail_prints_for_the_tcp_path() {
    let Some(bootstrap) = broker() else { return };
    let tx = transaction(3000);
    let flat_topic = create_topic(&bootstrap, 1).await;
    let proto_topic = create_topic(&bootstrap, 1).await;
    let p = producer(&bootstrap, None);
    for r in payloads(true, 1, &tx) {
        send(&p, &flat_topic, 0, &r).await;
    }
    for r in payloads(false, 1, &tx) {
        send(&p, &proto_topic, 0, &r).await;
    }
    // The TCP path: the same entries from the in-test canal server.
    let tcp = |format: &'static str| {
        let tx = tx.clone();
        async move {
            let server = FakeServer::open().await;
            server.push(tx);
            run(&["tail", "--server", &server.address(), "--format", format, "--timeout", "0.5"])
                .await
        }
    };
    let kafka = |topic: String, format: &'static str, extra: &'static [&'static str]| {
        let bootstrap = bootstrap.clone();
        async move {
            let group = unique("tail");
            let mut args = vec![
                "tail", "--kafka", &bootstrap, "--topic", &topic, "--group", &group, "--format",
                format, "--max", "5",
            ];
            args.extend_from_slice(extra);
            run(&args).await
        }
    };
    let tcp_table = tcp("table").await;
    assert_eq!(tcp_table.lines().count(), 5, "{tcp_table}");
    let tcp_json = tcp("json").await;
    for topic in [&flat_topic, &proto_topic] {
        assert_eq!(kafka(topic.clone(), "table", &[]).await, tcp_table, "table from {topic}");
        assert_eq!(
            without_id_ts(&kafka(topic.clone(), "json", &[]).await),
            without_id_ts(&tcp_json),
            "json from {topic}"
        );
    }
    let count = kafka(proto_topic.clone(), "count", &["--record-format", "protobuf"]).await;
    assert_eq!(count, "");

    // Acks commit the group's offsets; --max inside a batch leaves it uncommitted.
    let group = unique("tail");
    let tail = |extra: &'static [&'static str]| {
        let (bootstrap, topic, group) = (bootstrap.clone(), flat_topic.clone(), group.clone());
        async move {
            let mut args = vec![
                "tail",
                "--kafka",
                &bootstrap,
                "--topic",
                &topic,
                "--group",
                &group,
                "--format",
                "table",
                "--batch-size",
                "2",
            ];
            args.extend_from_slice(extra);
            run(&args).await
        }
    };
    let lines = |s: &str, skip: usize, take: usize| -> Vec<String> {
        s.lines().skip(skip).take(take).map(str::to_owned).collect()
    };
    // Batch 1 is the INSERT (2 rows) and the UPDATE: --max 2 stops inside it.
    assert_eq!(lines(&tail(&["--max", "2"]).await, 0, 9), lines(&tcp_table, 0, 2));
    // So it comes again, whole this time, and is committed.
    assert_eq!(lines(&tail(&["--max", "3"]).await, 0, 9), lines(&tcp_table, 0, 3));
    assert_eq!(lines(&tail(&["--timeout", "3"]).await, 0, 9), lines(&tcp_table, 3, 9));

    // A bad record stops tail with the record named, unless skipped.
    send(&p, &flat_topic, 0, b"\x00garbage").await;
    let out = tokio::time::timeout(
        DEADLINE,
        bin()
            .args(["tail", "--kafka", &bootstrap, "--topic", &flat_topic, "--group", &group])
            .args(["--timeout", "5"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{flat_topic}/0@4")), "{stderr}");
    let skipped = run(&[
        "tail",
        "--kafka",
        &bootstrap,
        "--topic",
        &flat_topic,
        "--group",
        &group,
        "--skip-bad-records",
        "--timeout",
        "3",
    ])
    .await;
    assert_eq!(skipped, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_after_a_rebalance_commits_only_the_partitions_still_assigned() {
    let Some(bootstrap) = broker() else { return };
    let topic = create_topic(&bootstrap, 2).await;
    let p = producer(&bootstrap, None);
    for partition in 0..2 {
        for i in 0..2 {
            let r = payloads(true, i, &[row_entry(EventType::Insert, vec![], i)]).pop().unwrap();
            send(&p, &topic, partition, &r).await;
        }
    }
    let group = unique("g");
    let config = || KafkaConfig::new(&bootstrap, &topic, &group);
    let mut a = KafkaConnector::connect(config()).await.unwrap();
    let read = take(&mut a, 4, 10).await;
    let mut seen = offsets(&read);
    seen.sort();
    assert_eq!(seen, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    // B joins: the group rebalances while A keeps polling; B gets one partition and, nothing
    // being committed, reads it from the start.
    let mut b = KafkaConnector::connect(config()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let b_read = loop {
        assert!(tokio::time::Instant::now() < deadline, "no rebalance within 60 s");
        // (An eager rebalance revokes A's partitions too: A may read its kept one again.)
        a.get_records_without_ack(10, Duration::from_millis(100)).await.unwrap();
        let got = b.get_records_without_ack(10, Duration::from_millis(100)).await.unwrap();
        if !got.records.is_empty() {
            break got;
        }
    };
    let moved = b_read.records[0].partition;
    // A acks everything it read: only its remaining partition is committed.
    let last = *a.outstanding().last().unwrap();
    a.ack(last).await.unwrap();
    assert!(a.outstanding().is_empty());
    b.close().await;
    a.close().await;
    let mut c = KafkaConnector::connect(config()).await.unwrap();
    let again = take(&mut c, 2, 10).await;
    assert_eq!(
        offsets(&again),
        [(moved, 0), (moved, 1)],
        "A's ack did not commit partition {moved}"
    );
    assert_nothing(&mut c, Duration::from_secs(2)).await;
    c.close().await;
}

/// `cargo xtask` as a command: the binary in `CANAL_XTASK` when set, else `cargo run -p xtask`
/// (as canal-server's broker tests start theirs).
fn xtask() -> std::process::Command {
    match std::env::var("CANAL_XTASK") {
        Ok(p) if !p.is_empty() => std::process::Command::new(p),
        _ => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut c = std::process::Command::new(cargo);
            c.args(["run", "-q", "-p", "xtask", "--"]);
            c.current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
            c
        }
    }
}

/// A private Kafka-protocol broker (`cargo xtask services instance up kafka DIR`), stopped by
/// `instance down` (by pid) when dropped.
struct PrivateKafka {
    dir: std::path::PathBuf,
    endpoint: String,
}

impl PrivateKafka {
    fn up(dir: &std::path::Path, extra: &[&str]) -> String {
        let out = xtask()
            .args(["services", "instance", "up", "kafka"])
            .arg(dir)
            .args(extra)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("xtask runs");
        assert!(out.status.success(), "xtask services instance up kafka failed");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.split_once('=').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no endpoint in {text:?}"))
    }

    fn start() -> Self {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("kafka"));
        std::fs::create_dir_all(&dir).unwrap();
        let endpoint = Self::up(&dir, &[]);
        PrivateKafka { dir, endpoint }
    }

    fn down(&self) {
        let status = xtask()
            .args(["services", "instance", "down", "kafka"])
            .arg(&self.dir)
            .status()
            .expect("xtask runs");
        assert!(status.success(), "xtask services instance down kafka failed");
    }

    fn up_again(&self) {
        let port = self.endpoint.rsplit(':').next().unwrap().to_owned();
        let again = Self::up(&self.dir, &["--port", &port, "--keep-data"]);
        assert_eq!(again, self.endpoint, "same endpoint after the restart");
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = xtask().args(["services", "instance", "down", "kafka"]).arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_waited_out_then_reading_resumes() {
    if broker().is_none() {
        return;
    }
    let kafka = tokio::task::spawn_blocking(PrivateKafka::start).await.unwrap();
    let bootstrap = kafka.endpoint.clone();
    let topic = create_topic(&bootstrap, 1).await;
    let record = |i| payloads(true, i, &[row_entry(EventType::Insert, vec![], i)]).pop().unwrap();
    {
        let p = producer(&bootstrap, None);
        send(&p, &topic, 0, &record(0)).await;
        send(&p, &topic, 0, &record(1)).await;
    }
    let mut c = KafkaConnector::connect(
        KafkaConfig::new(&bootstrap, &topic, unique("g")).set("reconnect.backoff.max.ms", "500"),
    )
    .await
    .unwrap();
    let first = take(&mut c, 2, 10).await;
    c.ack(first.last().unwrap().message.id).await.unwrap();

    let k = tokio::task::spawn_blocking(move || {
        kafka.down();
        kafka
    })
    .await
    .unwrap();
    // While the broker is down a get waits its time and returns an empty batch, not an error.
    let down = tokio::time::Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        let m = c.get_without_ack(10, Duration::from_millis(500)).await.expect("no error");
        assert!(m.is_empty());
    }
    let k = tokio::task::spawn_blocking(move || {
        k.up_again();
        k
    })
    .await
    .unwrap();
    {
        let p = producer(&bootstrap, None);
        send(&p, &topic, 0, &record(2)).await;
        send(&p, &topic, 0, &record(3)).await;
    }
    let rest = take(&mut c, 2, 10).await;
    assert_eq!(offsets(&rest), [(0, 2), (0, 3)], "after the outage, from where it was");
    c.ack(rest.last().unwrap().message.id).await.unwrap();
    c.close().await;
    drop(k);
}
