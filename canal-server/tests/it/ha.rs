//! Two servers, one destination, a real coordinator (ZooKeeper and etcd from `cargo xtask
//! services`) and a live MariaDB: exactly one serves; a graceful shutdown hands over; the new
//! owner resumes from the acked cursor with no row lost; the coordinator holds Canal's JSON.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canal_coord::config::{BackendKind, CoordConfig};
use canal_core::binlog::replica::ReplicaConfig;
use canal_core::instance::{InstanceConfig, StartConfig};
use canal_core::position::LogPosition;
use canal_core::protocol::entry::{Entry, EntryType, RowChange};
use canal_core::protocol::packet::PacketType;
use canal_server::server::{Server, ServerSettings};
use canal_server::session::SessionConfig;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use prost::Message;

use crate::support;
use crate::wire::{Client, messages};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Fixture {
    pub admin: Conn,
    pub db: String,
    pub instance: InstanceConfig,
}

pub async fn fixture(tag: &str) -> Option<Fixture> {
    let url = support::service("CANAL_TEST_MYSQL")?;
    let admin_url = support::service("CANAL_TEST_MYSQL_ADMIN")?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() % 1_000_000;
    let db = format!("ha_{tag}_{}_{n}_{nanos}", std::process::id());
    let mut admin = Conn::new(Opts::from_url(&admin_url).unwrap()).await.unwrap();
    admin.query_drop(format!("CREATE DATABASE `{db}`")).await.unwrap();
    admin.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY)")).await.unwrap();
    let (file, pos): (String, u64) = {
        let row: mysql_async::Row = admin.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        (row.get(0).unwrap(), row.get(1).unwrap())
    };
    let slave_id = 3_000_000 + (std::process::id() % 100_000) * 10 + n;
    let source = ReplicaConfig::from_url(&url).unwrap().with_slave_id(slave_id);
    let mut instance = InstanceConfig::new(db.clone(), source);
    instance.convert.filter =
        canal_core::filter::NameFilter::new(&format!("{db}\\..*"), "").unwrap();
    instance.start =
        StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    instance.backoff = (Duration::from_millis(100), Duration::from_secs(1));
    Some(Fixture { admin, db, instance })
}

pub fn settings(coord: CoordConfig) -> ServerSettings {
    ServerSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        register_address: None,
        session: SessionConfig::default(),
        coord,
        metrics_bind: Some("127.0.0.1:0".parse().unwrap()),
        mq: None,
        balance: Default::default(),
        admin_token: None,
        supervisor: Default::default(),
    }
}

pub async fn wait_active(s: &Server, dest: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while !s.active_destinations().iter().any(|d| d == dest) {
        assert!(t0.elapsed() < limit, "{dest} not active after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

/// Subscribes and reads row ids until `want` ids arrived, acking each batch.
pub async fn consume(addr: std::net::SocketAddr, dest: &str, want: usize) -> Vec<i64> {
    let mut c = Client::connect(addr).await;
    c.auth("", None).await;
    c.rollback_on(dest, 0).await;
    assert_eq!(c.subscribe(dest, "1001").await.error_code, None);
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < want {
        assert!(Instant::now() < deadline, "got {ids:?}, want {want}");
        let p = c.get(dest, 100, 200).await;
        assert_eq!(p.r#type, PacketType::Messages as i32);
        let m = messages(p);
        if m.batch_id == -1 {
            continue;
        }
        for bytes in &m.messages {
            let e = Entry::decode(bytes.clone()).unwrap();
            if e.entry_type() != EntryType::Rowdata {
                continue;
            }
            let rc = RowChange::decode(e.store_value()).unwrap();
            for r in &rc.row_datas {
                ids.push(r.after_columns[0].value().parse().unwrap());
            }
        }
        c.client_ack_on(dest, m.batch_id).await;
    }
    ids
}

async fn handover(coord: CoordConfig, tag: &str) {
    let Some(mut fx) = fixture(tag).await else { return };
    let a = Server::start(settings(coord.clone()), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&a, &fx.db, Duration::from_secs(15)).await;
    let b = Server::start(settings(coord.clone()), vec![fx.instance.clone()]).await.unwrap();
    for i in 1..=10 {
        fx.admin.query_drop(format!("INSERT INTO `{}`.t VALUES ({i})", fx.db)).await.unwrap();
    }
    let ids = consume(a.local_addr(), &fx.db, 10).await;
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    assert!(b.active_destinations().is_empty(), "never two active");
    // The standby refuses clients with Canal's error.
    let mut c = Client::connect(b.local_addr()).await;
    c.auth("", None).await;
    assert_eq!(c.subscribe(&fx.db, "1001").await.error_code, Some(400));

    // Rows written while the active server goes away are not lost.
    for i in 11..=20 {
        fx.admin.query_drop(format!("INSERT INTO `{}`.t VALUES ({i})", fx.db)).await.unwrap();
    }
    let t0 = Instant::now();
    a.shutdown().await;
    let took = t0.elapsed() + wait_active(&b, &fx.db, Duration::from_secs(30)).await;
    eprintln!("{tag}: graceful takeover in {took:?}");
    let ids = consume(b.local_addr(), &fx.db, 10).await;
    assert!(ids.contains(&11) && ids.contains(&20), "resumed from the acked cursor: {ids:?}");
    assert!(ids.iter().all(|i| *i >= 11), "acked rows are not delivered again: {ids:?}");
    b.shutdown().await;
}

pub fn zk(servers: String) -> CoordConfig {
    let mut c = CoordConfig { backend: Some(BackendKind::Zookeeper), ..CoordConfig::default() };
    c.zookeeper.servers = servers;
    c.zookeeper.session_timeout_ms = 2000;
    c.takeover_delay_ms = 500;
    c.cursor_flush_period_ms = 100;
    c
}

pub fn etcd(endpoint: String) -> CoordConfig {
    let mut c = CoordConfig { backend: Some(BackendKind::Etcd), ..CoordConfig::default() };
    c.etcd.endpoints = vec![endpoint];
    c.etcd.lease_ttl_secs = 2;
    c.takeover_delay_ms = 500;
    c.cursor_flush_period_ms = 100;
    c
}

#[tokio::test]
async fn zookeeper_handover_resumes_from_cursor() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    handover(zk(servers), "zk").await;
}

#[tokio::test]
async fn etcd_handover_resumes_from_cursor() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    handover(etcd(endpoint), "etcd").await;
}

#[tokio::test]
async fn cursor_and_running_json_in_zookeeper() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = fixture("json").await else { return };
    let a = Server::start(settings(zk(servers.clone())), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&a, &fx.db, Duration::from_secs(15)).await;
    fx.admin.query_drop(format!("INSERT INTO `{}`.t VALUES (1)", fx.db)).await.unwrap();
    consume(a.local_addr(), &fx.db, 1).await;
    let coord = canal_coord::Coordinator::new(zk(servers).open_backend().unwrap());
    let s = coord.session().await.unwrap();
    let running = s.get(&canal_coord::path::server_running(&fx.db)).await.unwrap().unwrap();
    let expected = format!("{{\"active\":true,\"address\":\"{}\"}}", a.local_addr());
    assert_eq!(String::from_utf8(running.data).unwrap(), expected);
    // The client's cursor (written where it could first receive, then on every ack).
    let cursor_path = canal_coord::path::client_cursor(&fx.db, 1001);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cursor = loop {
        if let Some(n) = s.get(&cursor_path).await.unwrap() {
            break n;
        }
        assert!(std::time::Instant::now() < deadline, "no cursor at {cursor_path}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = String::from_utf8(cursor.data).unwrap();
    assert!(text.starts_with("{\"@type\":\"com.alibaba.otter.canal.protocol.position.LogPosition\",\"identity\":{\"slaveId\":-1,"), "{text}");
    let pos = LogPosition::from_json(text.as_bytes()).unwrap();
    assert!(pos.position.journal_name.is_some() && pos.position.position.is_some());
    let cluster = s.children(&canal_coord::path::destination_cluster(&fx.db)).await.unwrap();
    assert_eq!(cluster, vec![a.local_addr().to_string()]);
    coord.close().await;
    a.shutdown().await;
}

/// "Flush before you let go": an operator's `active:false` lands while the last ack is still
/// queued (cursor flush period of a minute); the owner writes it before it gives the node up,
/// so the next owner re-sends nothing that was acked.
async fn active_false_flushes_acked_cursor(mut coord: CoordConfig, tag: &str) {
    let Some(mut fx) = fixture(tag).await else { return };
    coord.cursor_flush_period_ms = 60_000;
    let a = Server::start(settings(coord.clone()), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&a, &fx.db, Duration::from_secs(15)).await;
    let b = Server::start(settings(coord.clone()), vec![fx.instance.clone()]).await.unwrap();
    for i in 1..=10 {
        fx.admin.query_drop(format!("INSERT INTO `{}`.t VALUES ({i})", fx.db)).await.unwrap();
    }
    assert_eq!(consume(a.local_addr(), &fx.db, 10).await, (1..=10).collect::<Vec<_>>());
    let op = canal_coord::Coordinator::new(coord.open_backend().unwrap());
    let s = op.session().await.unwrap();
    let running = canal_coord::path::server_running(&fx.db);
    let off = format!("{{\"active\":false,\"address\":\"{}\"}}", a.local_addr());
    s.put(&running, off.as_bytes(), None).await.unwrap();
    wait_active(&b, &fx.db, Duration::from_secs(30)).await;
    for i in 11..=20 {
        fx.admin.query_drop(format!("INSERT INTO `{}`.t VALUES ({i})", fx.db)).await.unwrap();
    }
    let ids = consume(b.local_addr(), &fx.db, 10).await;
    assert_eq!(ids, (11..=20).collect::<Vec<_>>(), "acked rows re-sent after active:false");
    op.close().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn zookeeper_active_false_flushes_acked_cursor() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    active_false_flushes_acked_cursor(zk(servers), "zkoff").await;
}

#[tokio::test]
async fn etcd_active_false_flushes_acked_cursor() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    active_false_flushes_acked_cursor(etcd(endpoint), "etcdoff").await;
}

/// With the default (a cursor write on every ack) an ack followed by any answered request on
/// the same connection is durable: the coordinator holds the cursor at (or past) the acked
/// batch's last entry as soon as the next GET is answered, without any flush period.
#[tokio::test]
async fn ack_then_answered_request_is_durable() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = fixture("everyack").await else { return };
    let mut coord = zk(servers);
    coord.cursor_flush_period_ms = CoordConfig::default().cursor_flush_period_ms;
    assert_eq!(coord.cursor_flush_period_ms, 0, "every ack is the default");
    let a = Server::start(settings(coord.clone()), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&a, &fx.db, Duration::from_secs(15)).await;
    let mut c = Client::connect(a.local_addr()).await;
    c.auth("", None).await;
    assert_eq!(c.subscribe(&fx.db, "1001").await.error_code, None);
    let op = canal_coord::Coordinator::new(coord.open_backend().unwrap());
    let s = op.session().await.unwrap();
    let cursor_path = canal_coord::path::client_cursor(&fx.db, 1001);
    for round in 1..=3 {
        fx.admin.query_drop(format!("INSERT INTO `{}`.t VALUES ({round})", fx.db)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Up to the batch holding the row's transaction end: the cursor moves to the last
        // transaction boundary of an acked batch (a batch may end inside the transaction).
        let mut seen_row = false;
        let (batch, last) = loop {
            assert!(Instant::now() < deadline, "row {round} not delivered");
            let m = messages(c.get(&fx.db, 100, 200).await);
            let entries: Vec<Entry> =
                m.messages.iter().map(|b| Entry::decode(b.clone()).unwrap()).collect();
            seen_row |= entries.iter().any(|e| e.entry_type() == EntryType::Rowdata);
            let end = entries.iter().rev().find(|e| e.entry_type() == EntryType::Transactionend);
            if seen_row && let Some(end) = end {
                break (m.batch_id, end.clone());
            }
            if m.batch_id != -1 {
                c.client_ack_on(&fx.db, m.batch_id).await;
            }
        };
        c.client_ack_on(&fx.db, batch).await;
        // Any answered request: the ack before it is durable now.
        assert_eq!(c.get(&fx.db, 100, 50).await.r#type, PacketType::Messages as i32);
        let stored = s.get(&cursor_path).await.unwrap().expect("cursor written");
        let pos = LogPosition::from_json(&stored.data).unwrap().position;
        let h = last.header.clone().unwrap();
        let want = (h.logfile_name().to_owned(), h.logfile_offset());
        let got = (pos.journal_name.clone().unwrap(), pos.position.unwrap());
        assert!(got >= want, "round {round}: stored cursor {got:?} is behind the acked {want:?}");
    }
    op.close().await;
    a.shutdown().await;
}
