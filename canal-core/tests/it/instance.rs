//! The whole pipeline against a live MariaDB: rows with boundaries and NULLs, multi-statement
//! transactions, ALTER TABLE between events with a replay from before it (fresh and persisted
//! schema history), start by GTID and by timestamp, and a dump connection KILLed mid-stream that
//! resumes with no gap and no duplicate.
#![cfg(feature = "mysql")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canal_core::binlog::replica::{MetaConnection, ReplicaConfig};
use canal_core::instance::{Instance, InstanceConfig, InstanceState, StartConfig};
use canal_core::position::{EntryPosition, LogIdentity, LogPosition, SourceAddress};
use canal_core::protocol::entry::{Entry, EntryType, EventType, RowChange};
use canal_core::store::{BatchMode, GetWait, StoreConfig};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use prost::Message;

use crate::support;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> (String, u32) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() % 1_000_000;
    let name = format!("in_{tag}_{}_{n}_{nanos}", std::process::id());
    let slave_id = 2_000_000 + (std::process::id() % 100_000) * 100 + n;
    (name, slave_id)
}

struct Ctx {
    url: String,
    admin: Conn,
    db: String,
    slave_id: u32,
}

impl Ctx {
    async fn new(tag: &str) -> Option<Ctx> {
        let url = support::service("CANAL_TEST_MYSQL")?;
        let admin_url = support::service("CANAL_TEST_MYSQL_ADMIN")?;
        Some(Ctx::on(url, &admin_url, tag).await)
    }

    /// A context on another server (a private instance).
    async fn on(url: String, admin_url: &str, tag: &str) -> Ctx {
        let (db, slave_id) = unique(tag);
        let mut admin = Conn::new(Opts::from_url(admin_url).unwrap()).await.expect("admin");
        admin.query_drop(format!("CREATE DATABASE `{db}`")).await.unwrap();
        Ctx { url, admin, db, slave_id }
    }

    async fn exec(&mut self, sql: &str) {
        let sql = sql.replace("$db", &self.db);
        self.admin.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn master_status(&mut self) -> (String, u64) {
        let row: (String, u64) = self
            .admin
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .map(|r: mysql_async::Row| {
                mysql_async::from_row_opt(r)
                    .map(|(f, p, _, _): (String, u64, String, String)| (f, p))
                    .unwrap()
            })
            .unwrap();
        row
    }

    fn config(&self) -> InstanceConfig {
        let source = ReplicaConfig::from_url(&self.url).unwrap().with_slave_id(self.slave_id);
        let mut cfg = InstanceConfig::new(self.db.clone(), source);
        cfg.store = StoreConfig { batch_mode: BatchMode::ItemSize, ..StoreConfig::default() };
        cfg.convert.filter =
            canal_core::filter::NameFilter::new(&format!("{}\\..*", self.db), "").unwrap();
        cfg.backoff = (Duration::from_millis(100), Duration::from_secs(1));
        cfg
    }
}

/// A row change as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    table: String,
    kind: EventType,
    before: BTreeMap<String, Option<String>>,
    after: BTreeMap<String, Option<String>>,
    mysql_types: BTreeMap<String, String>,
    /// Number of the transaction (BEGIN count) the change arrived in; 0 = outside any.
    txn: usize,
    in_txn: bool,
}

/// Everything read from the store, in order, with the transaction structure.
#[derive(Debug, Default)]
struct Seen {
    changes: Vec<Change>,
    begins: usize,
    ends: usize,
    ddl: Vec<String>,
    open: bool,
    /// BEGINs received while a transaction was open (a transaction's BEGIN sent twice).
    nested: usize,
    /// Every entry's binlog file and offset.
    positions: Vec<(String, i64)>,
}

impl Seen {
    fn add(&mut self, bytes: &[u8]) {
        let e = Entry::decode(bytes).unwrap();
        let h = e.header.clone().unwrap_or_default();
        self.positions.push((h.logfile_name().to_owned(), h.logfile_offset()));
        match e.entry_type() {
            EntryType::Transactionbegin => {
                self.nested += usize::from(self.open);
                self.begins += 1;
                self.open = true;
            }
            EntryType::Transactionend => {
                self.ends += 1;
                self.open = false;
            }
            _ => {
                let rc = RowChange::decode(e.store_value()).unwrap();
                if rc.is_ddl() {
                    self.ddl.push(rc.sql().to_owned());
                    return;
                }
                let table = e.header.clone().unwrap_or_default().table_name().to_owned();
                for r in &rc.row_datas {
                    let img = |cols: &[canal_core::protocol::entry::Column]| {
                        cols.iter()
                            .map(|c| {
                                (c.name().to_owned(), (!c.is_null()).then(|| c.value().to_owned()))
                            })
                            .collect::<BTreeMap<_, _>>()
                    };
                    let cols = if r.after_columns.is_empty() {
                        &r.before_columns
                    } else {
                        &r.after_columns
                    };
                    self.changes.push(Change {
                        table: table.clone(),
                        kind: rc.event_type(),
                        before: img(&r.before_columns),
                        after: img(&r.after_columns),
                        mysql_types: cols
                            .iter()
                            .map(|c| (c.name().to_owned(), c.mysql_type().to_owned()))
                            .collect(),
                        txn: self.begins,
                        in_txn: self.open,
                    });
                }
            }
        }
    }
}

/// Reads and acks batches until `done` holds (or 30 s pass).
async fn drain(inst: &Instance, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(seen) {
        assert!(Instant::now() < deadline, "timed out; status {:?}; seen {seen:#?}", inst.status());
        if let InstanceState::Failed { error } = inst.status().state {
            panic!("instance failed: {error}");
        }
        let batch =
            inst.store().get(1000, GetWait::Timeout(Duration::from_millis(200))).await.unwrap();
        if let Some(b) = batch {
            for e in &b.entries {
                seen.add(e);
            }
            inst.store().ack(b.end_seq).unwrap();
        }
    }
}

/// Runs `insert` (a row whose `id` is `id`, written after everything the test checks) and drains
/// until that row arrives, then removes it from `seen`: the positive signal that nothing written
/// before it is still on its way, a duplicate included (a transaction read again after a
/// reconnect comes before the marker in binlog order).
async fn drain_through_marker(
    c: &mut Ctx,
    inst: &Instance,
    seen: &mut Seen,
    insert: &str,
    id: &str,
) {
    c.exec(insert).await;
    let is_marker = |s: &Seen| {
        s.changes.iter().any(|ch| ch.after.get("id").is_some_and(|v| v.as_deref() == Some(id)))
    };
    drain(inst, seen, is_marker).await;
    let last = seen.changes.pop().expect("the marker");
    assert_eq!(last.after["id"].as_deref(), Some(id), "the marker is the last row");
}

fn row(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_owned))).collect()
}

#[tokio::test]
async fn rows_with_boundaries_nulls_and_transactions() {
    let Some(mut c) = Ctx::new("rows").await else { return };
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY, tiny TINYINT UNSIGNED, big BIGINT UNSIGNED, m MEDIUMINT, v VARCHAR(20), d DECIMAL(10,3), ts DATETIME(3) NULL)").await;
    let (file, pos) = c.master_status().await;
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    c.exec("INSERT INTO $db.t VALUES (1, 255, 18446744073709551615, -8388608, 'naïve', -1234567.891, '2024-02-29 23:59:59.999')").await;
    c.exec("BEGIN").await;
    c.exec("INSERT INTO $db.t VALUES (2, 0, 0, 8388607, NULL, 0.000, NULL)").await;
    c.exec("UPDATE $db.t SET v = 'x' WHERE id = 2").await;
    c.exec("COMMIT").await;
    c.exec("DELETE FROM $db.t WHERE id = 1").await;
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| s.changes.len() >= 4).await;
    let ch = &seen.changes;
    assert_eq!(ch.len(), 4, "{ch:#?}");
    assert_eq!(ch[0].kind, EventType::Insert);
    assert_eq!(
        ch[0].after,
        row(&[
            ("id", Some("1")),
            ("tiny", Some("255")),
            ("big", Some("18446744073709551615")),
            ("m", Some("-8388608")),
            ("v", Some("naïve")),
            ("d", Some("-1234567.891")),
            ("ts", Some("2024-02-29 23:59:59.999")),
        ])
    );
    assert_eq!(
        ch[0].mysql_types["big"], "bigint(20) unsigned",
        "mysqlType from the schema history"
    );
    assert_eq!(ch[1].after["v"], None);
    assert_eq!(ch[1].after["ts"], None);
    assert_eq!(ch[2].kind, EventType::Update);
    assert_eq!(ch[2].before["v"], None);
    assert_eq!(ch[2].after["v"], Some("x".into()));
    assert_eq!(ch[3].kind, EventType::Delete);
    assert_eq!(ch[3].before["id"], Some("1".into()));
    // Three transactions: the autocommit insert, the BEGIN..COMMIT pair, the delete. (Other
    // tests write to the same server concurrently: their filtered transactions may add empty
    // BEGIN/END pairs, so count by membership, not by total.)
    assert!(ch.iter().all(|c| c.in_txn), "every row change inside BEGIN..END");
    assert_eq!(ch[1].txn, ch[2].txn, "insert and update of one transaction");
    assert!(ch[0].txn < ch[1].txn && ch[2].txn < ch[3].txn);
    inst.stop().await;
}

#[tokio::test]
async fn alter_between_events_and_replay_from_before_it() {
    let Some(mut c) = Ctx::new("alter").await else { return };
    let (file, pos) = c.master_status().await;
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY, a VARCHAR(10), b INT)").await;
    c.exec("INSERT INTO $db.t VALUES (1, 'one', 10)").await;
    c.exec("ALTER TABLE $db.t ADD COLUMN c DECIMAL(5,2) AFTER a, DROP COLUMN b").await;
    c.exec("INSERT INTO $db.t VALUES (2, 'two', 2.50)").await;
    let (file2, pos2) = c.master_status().await;
    let _ = (file2, pos2);
    let data_dir = std::env::temp_dir().join(format!("canal-it-{}", c.db));
    let mut cfg = c.config();
    cfg.data_dir = Some(data_dir.clone());
    cfg.start =
        StartConfig { journal: Some(file.clone()), position: Some(pos), ..StartConfig::default() };
    let check = |seen: &Seen| {
        let ch = &seen.changes;
        assert_eq!(ch.len(), 2, "{ch:#?}");
        assert_eq!(ch[0].after, row(&[("id", Some("1")), ("a", Some("one")), ("b", Some("10"))]));
        assert_eq!(ch[0].mysql_types["b"], "int(11)");
        assert_eq!(ch[1].after, row(&[("id", Some("2")), ("a", Some("two")), ("c", Some("2.50"))]));
        assert_eq!(ch[1].mysql_types["c"], "decimal(5,2)");
    };
    // First run: the history learns the table from the CREATE in the stream.
    let inst = Instance::start(cfg.clone(), None);
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| s.changes.len() >= 2).await;
    check(&seen);
    // CREATE TABLE and ALTER TABLE of this table (QUERY-type statements such as other tests'
    // CREATE DATABASE are not name-filtered, as in Canal).
    assert_eq!(seen.ddl.iter().filter(|d| d.contains(" TABLE ")).count(), 2, "{:?}", seen.ddl);
    inst.stop().await;

    // Second run from the first INSERT (after the CREATE), with the persisted history: both
    // sides of the ALTER still decode with the shape in force at their position.
    let first_insert = {
        let mut probe = c.config();
        probe.start = cfg.start.clone();
        probe.data_dir = Some(data_dir.clone());
        let inst = Instance::start(probe, None);
        let mut p = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.is_none() {
            assert!(Instant::now() < deadline);
            if let Some(b) =
                inst.store().get(1000, GetWait::Timeout(Duration::from_millis(200))).await.unwrap()
            {
                for bytes in &b.entries {
                    let e = Entry::decode(bytes.clone()).unwrap();
                    if e.entry_type() == EntryType::Transactionbegin && p.is_none() {
                        let h = e.header.unwrap();
                        p = Some((h.logfile_name().to_owned(), h.logfile_offset() as u64));
                    }
                }
                inst.store().ack(b.end_seq).unwrap();
            }
        }
        inst.stop().await;
        p.unwrap()
    };
    let mut replay = cfg.clone();
    replay.start = StartConfig {
        journal: Some(first_insert.0),
        position: Some(first_insert.1),
        ..StartConfig::default()
    };
    let inst = Instance::start(replay, None);
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| s.changes.len() >= 2).await;
    check(&seen);
    inst.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn killed_dump_connection_resumes_without_gap_or_duplicate() {
    let Some(mut c) = Ctx::new("kill").await else { return };
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY, v INT)").await;
    let (file, pos) = c.master_status().await;
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    let mut seen = Seen::default();
    let mut next = 1;
    for round in 0..3 {
        for _ in 0..20 {
            c.exec(&format!("INSERT INTO $db.t VALUES ({next}, {round})")).await;
            next += 1;
        }
        let want = (next - 1) as usize;
        drain(&inst, &mut seen, |s| s.changes.len() >= want).await;
        // Kill the dump thread from another session; the instance must reconnect by itself.
        let id = loop {
            if let Some(id) = inst.status().dump_connection_id {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        c.exec(&format!("KILL CONNECTION {id}")).await;
        // Write while the instance is reconnecting.
        for _ in 0..5 {
            c.exec(&format!("INSERT INTO $db.t VALUES ({next}, {round})")).await;
            next += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while inst.status().dump_connection_id == Some(id) {
            assert!(Instant::now() < deadline, "no reconnect: {:?}", inst.status());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let total = (next - 1) as usize;
    drain(&inst, &mut seen, |s| s.changes.len() >= total).await;
    // Any duplicate would come before a row written now.
    let marker = format!("INSERT INTO $db.t VALUES ({next}, -1)");
    drain_through_marker(&mut c, &inst, &mut seen, &marker, &next.to_string()).await;
    let ids: Vec<i64> =
        seen.changes.iter().map(|ch| ch.after["id"].as_ref().unwrap().parse().unwrap()).collect();
    let expected: Vec<i64> = (1..next as i64).collect();
    assert_eq!(ids, expected, "every row exactly once, in order");
    inst.stop().await;
}

/// Kills the current dump connection from the admin session; returns its id.
async fn kill_dump(c: &mut Ctx, inst: &Instance) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        if let Some(id) = inst.status().dump_connection_id {
            break id;
        }
        assert!(Instant::now() < deadline, "no dump connection: {:?}", inst.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    c.exec(&format!("KILL CONNECTION {id}")).await;
    id
}

/// Transactions much larger than one store flush (a 256 KiB store budget: flushes of at most
/// 32 KiB or 64 entries), the dump connection KILLed inside each of them at a different point:
/// the reconnect resumes at the transaction's start and skips what the store already holds, so
/// every row arrives exactly once and every transaction has one BEGIN and one END.
#[tokio::test]
async fn killed_inside_big_transactions_every_row_once_one_begin_per_transaction() {
    let Some(mut c) = Ctx::new("bigtx").await else { return };
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY, pad VARCHAR(1000))").await;
    let (file, pos) = c.master_status().await;
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    cfg.store.memory_budget = 256 * 1024;
    cfg.transaction_size = 64;
    // Three transactions of 10 statements × 1000 rows of ~1 KB, ~10 MB of binlog each. After a
    // KILL the instance still reads what the socket buffers hold (measured: ~4.5 MB on
    // loopback); a kill at 10, 20 and 30 % of a transaction leaves more than that to read, so
    // the reconnect happens inside it.
    const TXNS: usize = 3;
    const STMTS: usize = 10;
    const ROWS: usize = 1000;
    let per_txn = STMTS * ROWS;
    let total = TXNS * per_txn;
    for t in 0..TXNS {
        c.exec("BEGIN").await;
        for s in 0..STMTS {
            let first = (t * STMTS + s) * ROWS + 1;
            c.exec(&format!(
                "INSERT INTO $db.t SELECT seq, REPEAT(CHAR(97 + seq % 26), 1000) \
                 FROM $db.seq_{first}_to_{}",
                first + ROWS - 1
            ))
            .await;
        }
        c.exec("COMMIT").await;
    }
    let inst = Instance::start(cfg, None);
    // Kill points, in rows received.
    let mut kills: Vec<usize> =
        (0..TXNS).rev().map(|t| t * per_txn + per_txn * (t + 1) / 10).collect();
    let mut seen = Seen::default();
    // Per kill: rows received at the kill and `replay_skipped` then.
    let mut at_kill: Vec<(usize, u64)> = Vec::new();
    let mut killed: Option<u32> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.changes.len() < total || killed.is_some() {
        assert!(Instant::now() < deadline, "timed out; status {:?}", inst.status());
        let status = inst.status();
        if let InstanceState::Failed { error } = &status.state {
            panic!("instance failed: {error}");
        }
        if killed.is_some_and(|id| status.dump_connection_id.is_some_and(|new| new != id)) {
            killed = None;
        }
        if killed.is_none() && kills.last().is_some_and(|k| seen.changes.len() >= *k) {
            kills.pop();
            at_kill.push((seen.changes.len(), status.replay_skipped));
            killed = Some(kill_dump(&mut c, &inst).await);
        }
        let batch =
            inst.store().get(64, GetWait::Timeout(Duration::from_millis(100))).await.unwrap();
        if let Some(b) = batch {
            for e in &b.entries {
                seen.add(e);
            }
            inst.store().ack(b.end_seq).unwrap();
        }
    }
    // Any duplicate would come before a row written now (in a transaction of its own, so the
    // per-transaction checks below still see exactly TXNS of them before it).
    let marker = total + 1;
    let insert = format!("INSERT INTO $db.t VALUES ({marker}, 'marker')");
    drain_through_marker(&mut c, &inst, &mut seen, &insert, &marker.to_string()).await;
    let ids: Vec<usize> =
        seen.changes.iter().map(|ch| ch.after["id"].as_ref().unwrap().parse().unwrap()).collect();
    assert_eq!(ids.len(), total, "every row exactly once");
    assert!(ids.iter().copied().eq(1..=total), "every row exactly once, in order");
    assert_eq!(seen.nested, 0, "a BEGIN inside an open transaction");
    assert_eq!(seen.begins, seen.ends, "every BEGIN has its END");
    assert!(!seen.open);
    for t in 0..TXNS {
        let rows = &seen.changes[t * per_txn..(t + 1) * per_txn];
        assert!(rows.iter().all(|r| r.in_txn && r.txn == rows[0].txn), "transaction {t} split");
        if t > 0 {
            assert!(seen.changes[(t - 1) * per_txn].txn < rows[0].txn);
        }
    }
    // Each reconnect resumed inside its transaction and skipped the stored part (a whole
    // transaction lies between two kill points, so each skip is over before the next kill).
    assert_eq!(at_kill.len(), TXNS, "{at_kill:?}");
    let mut skipped: Vec<u64> = at_kill.windows(2).map(|w| w[1].1 - w[0].1).collect();
    skipped.push(inst.status().replay_skipped - at_kill[at_kill.len() - 1].1);
    eprintln!(
        "kills at (rows, skipped before) {at_kill:?}: entries skipped per reconnect {skipped:?}"
    );
    assert!(skipped.iter().all(|n| *n > 0), "kills at {at_kill:?} skipped {skipped:?}");
    inst.stop().await;
}

#[tokio::test]
async fn start_by_gtid_and_by_timestamp() {
    let Some(mut c) = Ctx::new("start").await else { return };
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY)").await;
    c.exec("INSERT INTO $db.t VALUES (1)").await;
    let gtid: String =
        c.admin.query_first("SELECT @@global.gtid_binlog_pos").await.unwrap().unwrap();
    c.exec("INSERT INTO $db.t VALUES (2)").await;
    // Binlog times have second precision: leave a clear second between the two sides.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.exec("INSERT INTO $db.t VALUES (3)").await;

    let mut by_gtid = c.config();
    by_gtid.gtid_mode = true;
    by_gtid.start = StartConfig { gtid: Some(gtid), ..StartConfig::default() };
    let inst = Instance::start(by_gtid, None);
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| s.changes.len() >= 2).await;
    let ids: Vec<_> = seen.changes.iter().map(|c| c.after["id"].clone().unwrap()).collect();
    assert_eq!(ids, ["2", "3"], "GTID start resumes after the given GTID");
    inst.stop().await;

    let mut by_time = c.config();
    by_time.start = StartConfig { timestamp_ms: Some(target_ms), ..StartConfig::default() };
    let inst = Instance::start(by_time, None);
    let mut seen = Seen::default();
    // Rows 1 and 2 would come before 3; a marker written now shows nothing else is on its way.
    drain(&inst, &mut seen, |s| !s.changes.is_empty()).await;
    drain_through_marker(&mut c, &inst, &mut seen, "INSERT INTO $db.t VALUES (4)", "4").await;
    let ids: Vec<_> = seen.changes.iter().map(|c| c.after["id"].clone().unwrap()).collect();
    assert_eq!(ids, ["3"], "timestamp start skips what was written before");
    inst.stop().await;
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A cursor recorded against another MySQL address (a master switch) is not replayed as its file
/// and offset on the configured source: the start is the last transaction boundary before the
/// cursor's time minus `fallback_interval`, found by a binlog search. In GTID mode the cursor's
/// GTID set is used as it is. A cursor naming the configured source under another spelling
/// (`localhost` for 127.0.0.1) or naming no source (older writers) keeps its file and offset.
#[tokio::test]
async fn cursor_from_another_source_resumes_by_time_search_or_gtid() {
    let Some(mut c) = Ctx::new("switch").await else { return };
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY)").await;
    c.exec("INSERT INTO $db.t VALUES (1)").await;
    // Binlog times have second precision: a clear second on each side of the search target.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = now_ms();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.exec("INSERT INTO $db.t VALUES (2)").await;
    let gtid_after_2: String =
        c.admin.query_first("SELECT @@global.gtid_binlog_pos").await.unwrap().unwrap();
    let (file_before_3, pos_before_3) = c.master_status().await;
    // The cursor's time is after row 2: without the fallback interval the search would start
    // after it too.
    let fallback = Duration::from_secs(3);
    let cursor_ts = target + 3000;
    while now_ms() < cursor_ts + 1100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.exec("INSERT INTO $db.t VALUES (3)").await;
    // Where the search must land, found independently.
    let hit = {
        let mut meta = MetaConnection::open(&c.config().source).await.unwrap();
        let hit = meta.find_position_by_timestamp(target).await.unwrap();
        meta.close().await.unwrap();
        hit
    };
    let port = c.config().source.port;
    // A position that does not exist on this source: replaying it would fail ("purged").
    let elsewhere = EntryPosition::at("elsewhere-bin.000042", 1234)
        .with_timestamp(cursor_ts)
        .with_server_id(99)
        .with_gtid(gtid_after_2.clone());
    let other = LogPosition::new(SourceAddress::new("192.0.2.10", port), elsewhere.clone());

    // Row 3 is the last row written: once it arrived, every row before it that the start
    // position lets through has arrived too.
    let run = |cfg: InstanceConfig, cursor: LogPosition| async move {
        let inst = Instance::start(cfg, Some(cursor));
        let mut seen = Seen::default();
        let has_3 = |s: &Seen| s.changes.iter().any(|c| c.after["id"].as_deref() == Some("3"));
        drain(&inst, &mut seen, has_3).await;
        let status = inst.status();
        inst.stop().await;
        let ids: Vec<String> =
            seen.changes.iter().map(|c| c.after["id"].clone().unwrap()).collect();
        (ids, status, seen)
    };

    // File/offset mode: the search from the cursor's time minus the fallback interval.
    let mut cfg = c.config();
    cfg.fallback_interval = fallback;
    let (ids, status, seen) = run(cfg.clone(), other.clone()).await;
    assert_eq!(ids, ["2", "3"], "resumed at the time search, not at the cursor's file/offset");
    let start = EntryPosition::at(hit.file.clone(), hit.position as i64);
    assert_eq!(status.start, Some(start.clone()), "started at the timestamp-search position");
    let first = &seen.positions[0];
    assert!(
        EntryPosition::at(first.0.clone(), first.1).cmp_in_file_order(&start).is_ge(),
        "first entry {first:?} before the start {start:?}"
    );

    // GTID mode: the cursor's GTID set is host-independent and used as it is.
    let mut gtid_cfg = cfg.clone();
    gtid_cfg.gtid_mode = true;
    let (ids, status, _) = run(gtid_cfg, other.clone()).await;
    assert_eq!(ids, ["3"], "resumed after the cursor's GTID set");
    assert_eq!(status.start.and_then(|s| s.gtid), Some(gtid_after_2.clone()));

    // The same source under another name, and a cursor without identity: file and offset.
    let here = EntryPosition::at(file_before_3.clone(), pos_before_3 as i64).with_timestamp(1);
    let localhost = LogPosition::new(SourceAddress::new("localhost", port), here.clone());
    let (ids, status, _) = run(cfg.clone(), localhost).await;
    assert_eq!(ids, ["3"]);
    assert_eq!(status.start, Some(EntryPosition::at(file_before_3.clone(), pos_before_3 as i64)));
    let anonymous = LogPosition { identity: LogIdentity::default(), position: here };
    let (ids, _, _) = run(cfg.clone(), anonymous).await;
    assert_eq!(ids, ["3"]);

    // Another source and no time to search by: a typed error naming both, not a guess.
    let timeless = LogPosition::new(
        SourceAddress::new("192.0.2.10", port),
        EntryPosition::at("elsewhere-bin.000042", 1234),
    );
    let inst = Instance::start(cfg, Some(timeless));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let InstanceState::Failed { error } = inst.status().state {
            assert!(error.contains("192.0.2.10") && error.contains("no timestamp"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", inst.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inst.stop().await;
}

#[tokio::test]
async fn purged_position_is_a_definite_error_naming_it() {
    let Some(c) = Ctx::new("purged").await else { return };
    let mut cfg = c.config();
    cfg.start = StartConfig {
        journal: Some("no-such-binlog.000042".into()),
        position: Some(4),
        ..StartConfig::default()
    };
    let inst = Instance::start(cfg, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let InstanceState::Failed { error } = inst.status().state {
            assert!(error.contains("no-such-binlog.000042"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", inst.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inst.stop().await;
}

/// DDL whose text ends with `commit` or `begin` is DDL, not a transaction boundary: it reaches the
/// history, so the rows after it decode with the right columns (Java Canal's suffix rule takes
/// `ALTER TABLE t DROP COLUMN last_commit` for a COMMIT and then fails on the column count).
#[tokio::test]
async fn ddl_ending_with_commit_or_begin_reaches_the_history() {
    let Some(mut c) = Ctx::new("words").await else { return };
    let (file, pos) = c.master_status().await;
    c.exec("USE $db").await;
    c.exec("CREATE TABLE t (id INT PRIMARY KEY, last_commit INT, xcommit VARCHAR(5), v INT)").await;
    c.exec("INSERT INTO t VALUES (1, 10, 'x', 100)").await;
    c.exec("ALTER TABLE t DROP COLUMN last_commit").await;
    c.exec("INSERT INTO t VALUES (2, 'y', 200)").await;
    c.exec("alter table t drop xcommit").await;
    c.exec("INSERT INTO t VALUES (3, 300)").await;
    c.exec("CREATE TABLE x (id INT PRIMARY KEY, a INT)").await;
    c.exec("RENAME TABLE x TO begin").await;
    c.exec("INSERT INTO `begin` VALUES (1, 11)").await;
    c.exec("ALTER TABLE `begin` ADD COLUMN b INT").await;
    c.exec("INSERT INTO `begin` VALUES (2, 22, 222)").await;
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| s.changes.len() >= 5).await;
    let got: Vec<(&str, &BTreeMap<String, Option<String>>)> =
        seen.changes.iter().map(|ch| (ch.table.as_str(), &ch.after)).collect();
    let t1 = row(&[
        ("id", Some("1")),
        ("last_commit", Some("10")),
        ("xcommit", Some("x")),
        ("v", Some("100")),
    ]);
    let t2 = row(&[("id", Some("2")), ("xcommit", Some("y")), ("v", Some("200"))]);
    let t3 = row(&[("id", Some("3")), ("v", Some("300"))]);
    let b1 = row(&[("id", Some("1")), ("a", Some("11"))]);
    let b2 = row(&[("id", Some("2")), ("a", Some("22")), ("b", Some("222"))]);
    assert_eq!(
        got,
        [("t", &t1), ("t", &t2), ("t", &t3), ("begin", &b1), ("begin", &b2)],
        "{seen:#?}"
    );
    assert!(seen.changes.iter().all(|ch| ch.in_txn), "every row inside BEGIN..END");
    // The history followed the DDL: the binlog's FULL metadata (the shared server's setting) never
    // had to correct it.
    assert_eq!(inst.status().schema_corrections, 0, "{:?}", inst.status());
    for ddl in [
        "ALTER TABLE t DROP COLUMN last_commit",
        "alter table t drop xcommit",
        "RENAME TABLE x TO begin",
    ] {
        assert!(seen.ddl.iter().any(|d| d == ddl), "DDL entry for {ddl:?}: {:?}", seen.ddl);
    }
    inst.stop().await;
}

async fn wait_running(inst: &Instance) -> (u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = inst.status();
        if let (InstanceState::Running, Some(d), Some(m)) =
            (&s.state, s.dump_connection_id, s.meta_connection_id)
        {
            return (d, m);
        }
        assert!(Instant::now() < deadline, "not running: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The meta connection KILLed right before a table fetch is needed: the fetch reconnects and
/// retries, the rows keep their column names (never `@1`, `@2`), and the dump is not restarted.
#[tokio::test]
async fn killed_meta_connection_before_a_table_fetch_reconnects() {
    let Some(mut c) = Ctx::new("metakill").await else { return };
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY, name VARCHAR(10))").await;
    let (file, pos) = c.master_status().await;
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    let (dump_id, meta_id) = wait_running(&inst).await;
    c.exec(&format!("KILL CONNECTION {meta_id}")).await;
    // The kill has landed once the server no longer lists the connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: Option<u64> = c
            .admin
            .query_first(format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {meta_id}"
            ))
            .await
            .unwrap();
        if n == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "meta connection {meta_id} still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The history has never seen `t` (created before the start): its first rows need a fetch.
    c.exec("INSERT INTO $db.t VALUES (1, 'a')").await;
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| !s.changes.is_empty()).await;
    assert_eq!(seen.changes[0].after, row(&[("id", Some("1")), ("name", Some("a"))]));
    assert_eq!(seen.changes[0].mysql_types["name"], "varchar(10)");
    let s = inst.status();
    assert_eq!(s.dump_connection_id, Some(dump_id), "the dump was not restarted: {s:?}");
    assert!(
        s.meta_connection_id.is_some_and(|m| m != meta_id),
        "a new meta connection replaced the killed one: {s:?}"
    );
    inst.stop().await;
}

/// A table that exists but cannot be described (no privilege) is a definite error naming the
/// table, not rows with positional names.
#[tokio::test]
async fn table_fetch_without_privilege_is_a_typed_error_naming_the_table() {
    let Some(mut c) = Ctx::new("nopriv").await else { return };
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY)").await;
    let user = format!("np{}", &c.db[c.db.len().saturating_sub(12)..]);
    c.exec(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")).await;
    c.exec(&format!("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'")).await;
    let (file, pos) = c.master_status().await;
    let mut cfg = c.config();
    let addr = c.url.rsplit('@').next().unwrap().to_owned();
    cfg.source = ReplicaConfig::from_url(&format!("mysql://{user}:pw@{addr}"))
        .unwrap()
        .with_slave_id(c.slave_id);
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    wait_running(&inst).await;
    c.exec("INSERT INTO $db.t VALUES (1)").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        if let InstanceState::Failed { error } = inst.status().state {
            break error;
        }
        assert!(Instant::now() < deadline, "{:?}", inst.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains(&format!("`{}`.`t`", c.db)), "{error}");
    assert!(error.contains("1142"), "{error}");
    inst.stop().await;
    c.exec(&format!("DROP USER '{user}'@'%'")).await;
}

async fn failed_error(inst: &Instance) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let InstanceState::Failed { error } = inst.status().state {
            return error;
        }
        assert!(Instant::now() < deadline, "{:?}", inst.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The binlog is the tie-breaker, FULL metadata (on a private MariaDB, so that no other test's
/// `SET GLOBAL binlog_row_metadata` interferes): a history learnt from today's `SHOW CREATE TABLE`
/// for rows written before an ADD+DROP and before a signedness change. The binlog's names and
/// signedness win, the history is corrected (the ALTERs then apply on top) and the corrections are
/// counted.
#[tokio::test]
async fn full_row_metadata_overrides_a_disagreeing_history() {
    let Some(server) = PrivateMariadb::start("full", &["binlog_row_metadata=FULL"]) else {
        return;
    };
    let mut c = Ctx::on(server.url.clone(), &server.admin_url, "tiebreak").await;
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY, a VARCHAR(10), b INT)").await;
    c.exec("CREATE TABLE $db.s (id INT PRIMARY KEY, n INT)").await;
    let (file, pos) = c.master_status().await;
    c.exec("INSERT INTO $db.t VALUES (1, 'x', 10)").await;
    c.exec("INSERT INTO $db.s VALUES (1, 5)").await;
    c.exec("ALTER TABLE $db.t ADD COLUMN c DECIMAL(5,2) AFTER a, DROP COLUMN b").await;
    c.exec("ALTER TABLE $db.s MODIFY n INT UNSIGNED").await;
    c.exec("INSERT INTO $db.t VALUES (2, 'y', 2.50)").await;
    c.exec("INSERT INTO $db.s VALUES (2, 4294967295)").await;
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| s.changes.len() >= 4).await;
    let ch = &seen.changes;
    assert_eq!(ch[0].after, row(&[("id", Some("1")), ("a", Some("x")), ("b", Some("10"))]));
    assert_eq!(ch[0].mysql_types["b"], "int(11)");
    assert_eq!(ch[1].after, row(&[("id", Some("1")), ("n", Some("5"))]));
    assert_eq!(ch[1].mysql_types["n"], "int(11)");
    assert_eq!(ch[2].after, row(&[("id", Some("2")), ("a", Some("y")), ("c", Some("2.50"))]));
    assert_eq!(ch[2].mysql_types["c"], "decimal(5,2)");
    assert_eq!(ch[3].after, row(&[("id", Some("2")), ("n", Some("4294967295"))]));
    assert_eq!(ch[3].mysql_types["n"], "int(10) unsigned");
    assert_eq!(inst.status().schema_corrections, 2, "{:?}", inst.status());
    inst.stop().await;
}

/// A MariaDB of the test's own (`cargo xtask services instance up mariadb DIR --set ...`), stopped
/// by its PID file (`cargo xtask services instance down`) when dropped.
struct PrivateMariadb {
    dir: std::path::PathBuf,
    url: String,
    admin_url: String,
}

impl PrivateMariadb {
    fn xtask(args: &[&str]) -> std::process::Output {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        std::process::Command::new(cargo)
            .current_dir(root)
            .args(["xtask", "services", "instance"])
            .args(args)
            .output()
            .expect("run cargo xtask")
    }

    fn start(tag: &str, settings: &[&str]) -> Option<PrivateMariadb> {
        // Gated like the shared services: skipped without them unless integration is required.
        support::service("CANAL_TEST_MYSQL")?;
        let dir = std::env::temp_dir().join(format!("canal-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dir_s = dir.to_str().unwrap().to_owned();
        let mut args = vec!["up", "mariadb", dir_s.as_str()];
        for s in settings {
            args.extend(["--set", s]);
        }
        let out = Self::xtask(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let var = |k: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing: {stdout}"))
                .to_owned()
        };
        Some(PrivateMariadb {
            url: var("CANAL_TEST_MYSQL"),
            admin_url: var("CANAL_TEST_MYSQL_ADMIN"),
            dir,
        })
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        let out = Self::xtask(&["down", "mariadb", self.dir.to_str().unwrap()]);
        if out.status.success() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// On a private MariaDB with `binlog_row_metadata=MINIMAL` (no column names to fall back on) and
/// `lower_case_table_names=1`:
/// * `ALTER TABLE t DROP COLUMN last_commit` reaches the history (Java's suffix rule would take it
///   for a COMMIT and then fail on the column count);
/// * a definition that stopped fitting (DDL not logged, `sql_log_bin=0`) is fetched again once, for
///   a column-count change and for a type change that keeps the count;
/// * a fetch that cannot fit either (the table changed after the rows) is a typed error naming
///   the table and the position;
/// * table names in DDL (`MixedCase`, `MIXEDCASE`) and in TABLE_MAPs (`mixedcase`) are the same
///   history key: the ALTER applies to the table the rows use.
#[tokio::test]
async fn minimal_metadata_and_lower_case_table_names_on_a_private_server() {
    let Some(server) = PrivateMariadb::start(
        "minimal",
        &["binlog_row_metadata=MINIMAL", "lower_case_table_names=1"],
    ) else {
        return;
    };
    let mut c = Ctx::on(server.url.clone(), &server.admin_url, "minimal").await;
    let lctn: Option<u8> = c.admin.query_first("SELECT @@lower_case_table_names").await.unwrap();
    assert_eq!(lctn, Some(1));

    // DDL ending with COMMIT.
    let (file, pos) = c.master_status().await;
    c.exec("CREATE TABLE $db.w (id INT PRIMARY KEY, last_commit INT, v INT)").await;
    c.exec("INSERT INTO $db.w VALUES (1, 10, 100)").await;
    c.exec("ALTER TABLE $db.w DROP COLUMN last_commit").await;
    c.exec("INSERT INTO $db.w VALUES (2, 200)").await;
    c.exec("CREATE TABLE $db.MixedCase (id INT PRIMARY KEY, a INT)").await;
    c.exec("INSERT INTO $db.MixedCase VALUES (1, 1)").await;
    c.exec("ALTER TABLE $db.MIXEDCASE ADD COLUMN b INT").await;
    c.exec("INSERT INTO $db.mixedcase VALUES (2, 2, 2)").await;
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| s.changes.len() >= 4).await;
    let ch = &seen.changes;
    assert_eq!(
        ch[0].after,
        row(&[("id", Some("1")), ("last_commit", Some("10")), ("v", Some("100"))])
    );
    assert_eq!(ch[1].after, row(&[("id", Some("2")), ("v", Some("200"))]));
    assert_eq!(ch[2].table, "mixedcase");
    assert_eq!(ch[2].after, row(&[("id", Some("1")), ("a", Some("1"))]));
    assert_eq!(ch[3].after, row(&[("id", Some("2")), ("a", Some("2")), ("b", Some("2"))]));
    inst.stop().await;

    // Refetch once.
    c.exec("CREATE TABLE $db.tc (id INT PRIMARY KEY, a INT)").await;
    c.exec("CREATE TABLE $db.tt (id INT PRIMARY KEY, a INT)").await;
    let (file, pos) = c.master_status().await;
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    c.exec("INSERT INTO $db.tc VALUES (1, 1)").await;
    c.exec("INSERT INTO $db.tt VALUES (1, 1)").await;
    let mut seen = Seen::default();
    drain(&inst, &mut seen, |s| s.changes.len() >= 2).await;
    c.exec("SET SESSION sql_log_bin = 0").await;
    c.exec("ALTER TABLE $db.tc ADD COLUMN b VARCHAR(5)").await;
    c.exec("ALTER TABLE $db.tt MODIFY a VARCHAR(10)").await;
    c.exec("SET SESSION sql_log_bin = 1").await;
    c.exec("INSERT INTO $db.tc VALUES (2, 2, 'two')").await;
    c.exec("INSERT INTO $db.tt VALUES (2, 'two')").await;
    drain(&inst, &mut seen, |s| s.changes.len() >= 4).await;
    assert_eq!(
        seen.changes[2].after,
        row(&[("id", Some("2")), ("a", Some("2")), ("b", Some("two"))])
    );
    assert_eq!(seen.changes[3].after, row(&[("id", Some("2")), ("a", Some("two"))]));
    assert_eq!(seen.changes[3].mysql_types["a"], "varchar(10)");
    assert_eq!(inst.status().schema_corrections, 0);
    inst.stop().await;

    // A refetch that does not fit either: a typed error naming table and position.
    c.exec("CREATE TABLE $db.tx (id INT PRIMARY KEY, a INT)").await;
    let (file, pos) = c.master_status().await;
    c.exec("INSERT INTO $db.tx VALUES (1, 1)").await;
    c.exec("ALTER TABLE $db.tx ADD COLUMN b INT").await;
    let mut cfg = c.config();
    cfg.start =
        StartConfig { journal: Some(file.clone()), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    let error = failed_error(&inst).await;
    assert!(error.contains(&format!("`{}`.`tx`", c.db)), "{error}");
    assert!(error.contains(&format!("{file}:")), "names the position: {error}");
    assert!(error.contains("column count mismatch"), "{error}");
    inst.stop().await;
}

/// MariaDB's JSON (a LONGTEXT utf8mb4 with a json_valid CHECK) decodes as UTF-8 text whichever way
/// the history learnt the table: replaying its CREATE statement (type `json`) or from SHOW CREATE
/// TABLE (`longtext`).
#[tokio::test]
async fn mariadb_json_is_utf8_text_from_ddl_and_from_show_create_table() {
    let Some(mut c) = Ctx::new("json").await else { return };
    let (before_create, pos0) = c.master_status().await;
    c.exec("CREATE TABLE $db.j (id INT PRIMARY KEY, doc JSON) DEFAULT CHARSET=latin1").await;
    let (after_create, pos1) = c.master_status().await;
    let doc = r#"{"name": "Zoë", "city": "Zürich", "sym": "€✓"}"#;
    c.exec(&format!("INSERT INTO $db.j VALUES (1, '{doc}')")).await;
    for (file, pos, how) in
        [(before_create, pos0, "DDL replay"), (after_create, pos1, "SHOW CREATE TABLE")]
    {
        let mut cfg = c.config();
        cfg.start =
            StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
        let inst = Instance::start(cfg, None);
        let mut seen = Seen::default();
        drain(&inst, &mut seen, |s| !s.changes.is_empty()).await;
        assert_eq!(seen.changes[0].after["doc"].as_deref(), Some(doc), "{how}");
        inst.stop().await;
    }
}

/// A closed connect gate (a server whose lease on the running node lapsed) keeps the instance
/// off the source: after its dump connection is killed it waits in `Gated` instead of
/// reconnecting (a deposed owner's dump, same slave_id, would end the new owner's); opened
/// again, it resumes where it stopped, every row once.
#[tokio::test]
async fn closed_connect_gate_keeps_the_instance_off_the_source() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let Some(mut c) = Ctx::new("gate").await else { return };
    c.exec("CREATE TABLE $db.t (id INT PRIMARY KEY)").await;
    let (file, pos) = c.master_status().await;
    let open = Arc::new(AtomicBool::new(true));
    let mut cfg = c.config();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let gate = open.clone();
    cfg.connect_gate =
        Some(canal_core::instance::ConnectGate::new(move || gate.load(Ordering::SeqCst)));
    let inst = Instance::start(cfg, None);
    let mut seen = Seen::default();
    for i in 1..=5 {
        c.exec(&format!("INSERT INTO $db.t VALUES ({i})")).await;
    }
    drain(&inst, &mut seen, |s| s.changes.len() >= 5).await;

    open.store(false, Ordering::SeqCst);
    let killed = kill_dump(&mut c, &inst).await;
    for i in 6..=10 {
        c.exec(&format!("INSERT INTO $db.t VALUES ({i})")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while inst.status().state != InstanceState::Gated {
        assert!(Instant::now() < deadline, "not gated: {:?}", inst.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Three times the largest reconnect backoff (1 s): still gated, no dump, nothing stored.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let s = inst.status();
        assert_eq!(s.state, InstanceState::Gated, "{s:?}");
        assert_eq!(s.dump_connection_id, None, "{s:?}");
        assert!(inst.store().get(1000, GetWait::NonBlocking).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dumps: Vec<u64> = c
        .admin
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%' \
             AND ID = {killed}"
        ))
        .await
        .unwrap();
    assert!(dumps.is_empty(), "the killed dump is gone: {dumps:?}");

    open.store(true, Ordering::SeqCst);
    drain(&inst, &mut seen, |s| s.changes.len() >= 10).await;
    let ids: Vec<i64> =
        seen.changes.iter().map(|ch| ch.after["id"].as_ref().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<i64>>(), "every row once, in order");
    inst.stop().await;
}
