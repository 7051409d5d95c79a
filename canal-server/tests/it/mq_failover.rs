//! MQ mode through failover, with real processes: two `canal-server run` in kafka mode on one
//! destination (ZooKeeper, short sessions, Canal's 5 s delay), a writer inserting rows the whole
//! time, a private broker. In turn: SIGTERM of the active server, kill -9 of the active server, an
//! operator's `"active":false`, a broker restart, the broker unreachable for 10 s, and the active
//! server frozen (SIGSTOP) past its session. Then every row must be in the topic (0 lost). At-least-once mode: duplicates only of
//! what was unconfirmed when a server died (bounded by the in-flight window); transactional
//! mode: a read_committed consumer sees every row exactly once.

#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use canal_coord::{Coordinator, path};
use mysql_async::prelude::Queryable;

use crate::ha::fixture;
use crate::ha_process::{
    DELAY_MS, Proc, SESSION_MS, instance_toml, owner, spawn, wait_for, zk_coord,
};
use crate::mq::{flat_rows, kafka, unique};
use crate::soak::{CoordServer, port_below_ephemeral};
use crate::support;

const PARTITIONS: i32 = 3;
/// Store batch size (entries) and in-flight window of the servers: they bound at-least-once
/// duplicates.
const BATCH: usize = 20;
const IN_FLIGHT: usize = 4;

fn write_conf(dir: &Path, coord: &str, db: &str, instance: &str, broker: &str) {
    std::fs::create_dir_all(dir.join(db)).unwrap();
    std::fs::write(
        dir.join("canal.toml"),
        format!(
            "ip = \"127.0.0.1\"\nport = 0\nmetrics_port = 0\ndata_dir = \"{}\"\n\
             [coord]\n{coord}\ntakeover_delay_ms = {DELAY_MS}\n\
             [supervisor]\nbackoff_ms = 200\nbackoff_max_ms = 2000\nmax_failures = 100\n\
             [mq]\nbatch_size = {BATCH}\nmax_in_flight_batches = {IN_FLIGHT}\n\
             retry_backoff_ms = 200\nretry_backoff_max_ms = 2000\n{broker}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join(db).join("instance.toml"), instance).unwrap();
}

fn sigterm(p: &Proc) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Inserts transactions of 1..=12 rows with increasing ids until told to stop; writes nothing
/// while `pause` is set.
async fn writer(
    mut admin: mysql_async::Conn,
    db: String,
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    next: Arc<AtomicI64>,
) {
    let mut size = 1;
    while !stop.load(Ordering::Relaxed) {
        if pause.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let from = next.load(Ordering::Relaxed);
        let values: Vec<String> = (from..from + size).map(|i| format!("({i})")).collect();
        admin.query_drop("BEGIN").await.unwrap();
        admin
            .query_drop(format!("INSERT INTO `{db}`.t (id) VALUES {}", values.join(",")))
            .await
            .unwrap();
        admin.query_drop("COMMIT").await.unwrap();
        next.store(from + size, Ordering::Relaxed);
        size = size % 12 + 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the writer wrote `more` rows beyond now.
async fn rows_flow(next: &AtomicI64, more: i64) {
    let target = next.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "the writer is stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many distinct row ids of `0..want` the topic holds (reads until all are there or `limit`).
fn read_ids(bootstrap: &str, topic: &str, txn: bool, want: i64, limit: Duration) -> i64 {
    let msgs = kafka::read(bootstrap, topic, txn, limit, |m| {
        let mut seen = std::collections::HashSet::new();
        for (p, _, payload) in m {
            for r in flat_rows(*p, payload) {
                seen.insert(r.id);
            }
        }
        seen.len() as i64 >= want
    });
    let mut seen = std::collections::HashSet::new();
    for (p, _, payload) in &msgs {
        for r in flat_rows(*p, payload) {
            seen.insert(r.id);
        }
    }
    seen.len() as i64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    KafkaAtLeastOnce,
    KafkaTransactional,
    Rabbitmq,
}

/// Reads every message of the RabbitMQ queue `queue` (consuming them) until `want` distinct ids
/// arrived or `limit`.
async fn drain_queue(
    url: &str,
    queue: &str,
    want: i64,
    limit: Duration,
) -> Vec<(i32, i64, Vec<u8>)> {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    let conn =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while (seen.len() as i64) < want && Instant::now() < deadline {
        match ch.basic_get(queue.into(), BasicGetOptions::default()).await.unwrap() {
            Some(m) => {
                for r in flat_rows(0, &m.delivery.data) {
                    seen.insert(r.id);
                }
                out.push((0, out.len() as i64, m.delivery.data.clone()));
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    conn.close(0, "done".into()).await.unwrap();
    out
}

/// One failover scenario at a time: each runs two servers, a private broker and a writer, and
/// they measure takeovers; running them side by side on a 2-core machine only measures the load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn failover_under_load(mode: Mode) {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    // The broker of this test is private (restarted and frozen); the shared one's variable says
    // whether brokers are part of this run.
    let shared = if mode == Mode::Rabbitmq { "CANAL_TEST_RABBITMQ" } else { "CANAL_TEST_KAFKA" };
    if support::service(shared).is_none() {
        return;
    }
    let txn = mode == Mode::KafkaTransactional;
    let tag = match mode {
        Mode::KafkaAtLeastOnce => "mqfa",
        Mode::KafkaTransactional => "mqft",
        Mode::Rabbitmq => "mqfr",
    };
    let Some(fx) = fixture(tag).await else { return };
    let root: PathBuf = std::env::temp_dir().join(format!("canal-mqf-{}", fx.db));
    let service = if mode == Mode::Rabbitmq { "rabbitmq" } else { "kafka" };
    let mut broker =
        CoordServer::start(service, &root.join("broker"), Some(port_below_ephemeral()), false);
    let endpoint = broker.endpoint.clone();
    let topic = unique("canal-mqf");
    let (broker_toml, routing) = match mode {
        Mode::Rabbitmq => {
            // amqp://guest:guest@127.0.0.1:PORT/%2f; the producer declares the durable queue and
            // the default exchange routes by its name (the topic).
            let hostport = endpoint.split('@').nth(1).unwrap().split('/').next().unwrap();
            (
                format!(
                    "mode = \"rabbitmq\"\n[mq.rabbitmq]\nhost = \"{hostport}\"\nqueue = \"{topic}\"\n"
                ),
                format!("[mq]\ntopic = \"{topic}\"\n"),
            )
        }
        _ => {
            kafka::create_topic(&endpoint, &topic, PARTITIONS).await;
            (
                format!(
                    "mode = \"kafka\"\n[mq.kafka]\nbootstrap_servers = \"{endpoint}\"\n\
                     transactional = {txn}\nposition_topic = \"{}-positions\"\n\
                     [mq.kafka.properties]\n\"message.timeout.ms\" = \"60000\"\n\
                     \"transaction.timeout.ms\" = \"60000\"\n",
                    fx.db
                ),
                format!(
                    "[mq]\ntopic = \"{topic}\"\npartitions_num = {PARTITIONS}\npartition_hash = \"{}.t:id\"\n",
                    fx.db
                ),
            )
        }
    };
    let (coord_cfg, coord_toml) = zk_coord(&servers);
    // ITEMSIZE: a store batch is BATCH entries, so the in-flight window is exact.
    let instance = format!("{}[memory]\nbatch_mode = \"ITEMSIZE\"\n{routing}", instance_toml(&fx));
    let (conf_a, conf_b) = (root.join("a"), root.join("b"));
    write_conf(&conf_a, &coord_toml, &fx.db, &instance, &broker_toml);
    write_conf(&conf_b, &coord_toml, &fx.db, &instance, &broker_toml);
    let coord = Coordinator::new(coord_cfg.open_backend().unwrap());
    let dest = fx.db.clone();
    let limit = Duration::from_millis(SESSION_MS + 2 * DELAY_MS + 10_000);

    let mut a = Some(spawn(&conf_a));
    wait_for(&coord, &dest, a.as_ref().unwrap().addr.clone(), Duration::from_secs(20)).await;
    let mut b = Some(spawn(&conf_b));

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI64::new(0));
    let url = support::service("CANAL_TEST_MYSQL_ADMIN").unwrap();
    let conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap()).await.unwrap();
    let pause = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(conn, fx.db.clone(), stop.clone(), pause.clone(), next.clone()));
    rows_flow(&next, 300).await;

    let mut log = Vec::new();
    let at = |next: &AtomicI64| format!(" (at row {})", next.load(Ordering::Relaxed));
    // 1. SIGTERM of the active server (A).
    let t0 = Instant::now();
    sigterm(a.as_ref().unwrap());
    wait_for(&coord, &dest, b.as_ref().unwrap().addr.clone(), limit).await;
    log.push(format!("SIGTERM {:.2?}{}", t0.elapsed(), at(&next)));
    a = None;
    a.replace(spawn(&conf_a));
    rows_flow(&next, 300).await;

    // 2. kill -9 of the active server (B).
    let t0 = Instant::now();
    b = None;
    wait_for(&coord, &dest, a.as_ref().unwrap().addr.clone(), limit).await;
    log.push(format!("kill -9 {:.2?}{}", t0.elapsed(), at(&next)));
    b.replace(spawn(&conf_b));
    rows_flow(&next, 300).await;

    // 3. The operator's "active":false on the active server (A).
    let t0 = Instant::now();
    let s = coord.session().await.unwrap();
    let p = path::server_running(&dest);
    let n = s.get(&p).await.unwrap().unwrap();
    let active = a.as_ref().unwrap().addr.clone();
    let data = format!("{{\"active\":false,\"address\":\"{active}\"}}");
    s.put(&p, data.as_bytes(), Some(n.version)).await.unwrap();
    wait_for(&coord, &dest, b.as_ref().unwrap().addr.clone(), limit).await;
    log.push(format!("active:false {:.2?}{}", t0.elapsed(), at(&next)));
    rows_flow(&next, 300).await;

    // 4. Broker restart, on its port and data. The Kafka test broker (noida-db) snapshots on
    //    SIGTERM while it still serves, so what it acknowledges during its shutdown is lost (a
    //    Kafka broker keeps it: that loss would be the broker's, not ours): the writer pauses and
    //    the restart happens once the topic holds every row written so far. RabbitMQ restarts
    //    under load (it confirms persistent messages of durable queues once stored). Sends in
    //    flight during an outage are what step 5 covers.
    if mode != Mode::Rabbitmq {
        pause.store(true, Ordering::Relaxed);
        let written = next.load(Ordering::Relaxed);
        let (bs, tp) = (endpoint.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            let got = read_ids(&bs, &tp, txn, written, Duration::from_secs(120));
            assert!(
                got >= written,
                "before the broker restart: {got} of {written} rows in the topic"
            );
        })
        .await
        .unwrap();
    }
    let t0 = Instant::now();
    broker.stop();
    broker.start_again();
    pause.store(false, Ordering::Relaxed);
    log.push(format!("broker restart {:.2?}{}", t0.elapsed(), at(&next)));
    rows_flow(&next, 300).await;

    // 5. Broker unreachable for 10 s under load: frozen (SIGSTOP), then thawed (SIGCONT).
    broker.signal("STOP");
    let t0 = Instant::now();
    rows_flow(&next, 200).await;
    let rest = Duration::from_secs(10).saturating_sub(t0.elapsed());
    tokio::time::sleep(rest).await; // the outage itself, not a synchronisation
    broker.signal("CONT");
    log.push(format!("broker unreachable 10 s{}", at(&next)));
    rows_flow(&next, 300).await;

    // 6. The active server (B) frozen past its session (SIGSTOP): A takes over; B, thawed, must
    //    notice its lapsed lease before publishing what its store still holds.
    let frozen = b.as_ref().unwrap().child.id().to_string();
    let ok = std::process::Command::new("kill").args(["-STOP", &frozen]).status().unwrap();
    assert!(ok.success());
    let t0 = Instant::now();
    wait_for(&coord, &dest, a.as_ref().unwrap().addr.clone(), limit).await;
    log.push(format!("SIGSTOP {:.2?}{}", t0.elapsed(), at(&next)));
    let ok = std::process::Command::new("kill").args(["-CONT", &frozen]).status().unwrap();
    assert!(ok.success());
    rows_flow(&next, 300).await;

    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let total = next.load(Ordering::Relaxed);
    eprintln!("{mode:?}: {total} rows written; {}", log.join(", "));
    assert!(owner(&coord, &dest).await.is_some(), "someone still owns the destination");

    // Every row reaches the broker.
    let msgs = if mode == Mode::Rabbitmq {
        drain_queue(&endpoint, &topic, total, Duration::from_secs(120)).await
    } else {
        let (bs, tp) = (endpoint.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            kafka::read(&bs, &tp, txn, Duration::from_secs(120), |m| {
                let mut seen = std::collections::HashSet::new();
                for (p, _, payload) in m {
                    for r in flat_rows(*p, payload) {
                        seen.insert(r.id);
                    }
                }
                seen.len() as i64 >= total
            })
        })
        .await
        .unwrap()
    };
    let mut count: BTreeMap<i64, usize> = BTreeMap::new();
    let mut partition_of: BTreeMap<i64, i32> = BTreeMap::new();
    for (p, _, payload) in &msgs {
        for r in flat_rows(*p, payload) {
            *count.entry(r.id).or_default() += 1;
            assert_eq!(
                *partition_of.entry(r.id).or_insert(*p),
                *p,
                "id {} in two partitions",
                r.id
            );
        }
    }
    let lost: Vec<i64> = (0..total).filter(|i| !count.contains_key(i)).collect();
    let dups: usize = count.values().map(|n| n - 1).sum();
    eprintln!("MQ failover {mode:?}: {total} rows, lost {}, duplicates {dups}", lost.len());
    assert!(lost.is_empty(), "{} rows lost: {:?}", lost.len(), &lost[..lost.len().min(20)]);
    if txn {
        assert_eq!(dups, 0, "a read_committed consumer sees every row once");
    } else {
        // A kill -9, the two broker outages and the frozen owner may each leave what was in
        // flight unconfirmed: at most the in-flight window, IN_FLIGHT batches of BATCH entries of
        // at most 12 rows.
        let bound = 4 * IN_FLIGHT * BATCH * 12;
        assert!(
            dups <= bound,
            "{dups} duplicates, more than the in-flight window allows ({bound})"
        );
    }
    drop(a);
    drop(b);
    coord.close().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_at_least_once_through_failovers_and_broker_outages() {
    failover_under_load(Mode::KafkaAtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transactional_exactly_once_through_failovers_and_broker_outages() {
    failover_under_load(Mode::KafkaTransactional).await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_at_least_once_through_failovers_and_broker_outages() {
    failover_under_load(Mode::Rabbitmq).await;
}
