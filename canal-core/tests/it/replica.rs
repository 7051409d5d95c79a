//! Live tests of the replica connection against a real MariaDB (`CANAL_TEST_MYSQL` = replication
//! user, `CANAL_TEST_MYSQL_ADMIN` = root for DDL/DML), plus a scripted fake server for the
//! caching_sha2_password paths MariaDB does not have. Every test uses its own database, table
//! and slave id so they can run concurrently against one server.
#![cfg(feature = "mysql")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canal_core::binlog::replica::{
    Backoff, BinlogStream, ChecksumAlg, DumpOptions, DumpStart, MariadbGtidList, MetaConnection,
    RawEvent, ReplicaConfig, ReplicaConnection, ReplicaError, event_type, retry_transient,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use crate::support;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name and slave id unique to this test run and call.
fn unique(tag: &str) -> (String, u32) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let name = format!("rp_{tag}_{}_{n}_{nanos}", std::process::id());
    // Keep clear of the server's own id (1) and of other processes running the same tests.
    let slave_id = 1_000_000 + (std::process::id() % 100_000) * 100 + n;
    (name, slave_id)
}

struct Ctx {
    cfg: ReplicaConfig,
    admin: Conn,
    db: String,
}

impl Ctx {
    /// Connects to both services and creates database `db` with table `t(id int primary key,
    /// v varchar(64))`; `None` (skip) when the services are not configured.
    async fn new(tag: &str) -> Option<Ctx> {
        let url = support::service("CANAL_TEST_MYSQL")?;
        let admin_url = support::service("CANAL_TEST_MYSQL_ADMIN")?;
        let (db, slave_id) = unique(tag);
        let cfg = ReplicaConfig::from_url(&url).expect("replica url").with_slave_id(slave_id);
        let mut admin =
            Conn::new(Opts::from_url(&admin_url).expect("admin url")).await.expect("admin connect");
        admin.query_drop(format!("CREATE DATABASE `{db}`")).await.expect("create db");
        admin
            .query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(64))"))
            .await
            .expect("create table");
        Some(Ctx { cfg, admin, db })
    }

    async fn exec(&mut self, sql: &str) {
        let sql = sql.replace("$db", &self.db);
        self.admin.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn meta(&self) -> MetaConnection {
        MetaConnection::open(&self.cfg).await.expect("meta connection")
    }

    async fn end_position(&self) -> DumpStart {
        let mut meta = self.meta().await;
        let st = meta.master_status().await.expect("master status").expect("binlog on");
        DumpStart::FilePos { file: st.file, position: st.position }
    }

    async fn dump(&self, start: DumpStart) -> BinlogStream {
        ReplicaConnection::connect(&self.cfg)
            .await
            .expect("replica connect")
            .dump(start, DumpOptions::default())
            .await
            .expect("dump")
    }

    async fn drop_db(mut self) {
        let db = self.db.clone();
        let _ = self.admin.query_drop(format!("DROP DATABASE `{db}`")).await;
    }
}

/// CRC32 (IEEE), as binlog checksums use it.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn assert_crc(ev: &RawEvent) {
    if ev.checksum == ChecksumAlg::Crc32 {
        let (data, tail) = ev.bytes.split_at(ev.bytes.len() - 4);
        assert_eq!(
            crc32(data),
            u32::from_le_bytes(tail.try_into().unwrap()),
            "bad CRC on event type {}",
            ev.header.event_type
        );
    }
}

/// (db, table) of a TABLE_MAP event.
fn table_map_names(ev: &RawEvent) -> Option<(Vec<u8>, Vec<u8>)> {
    if ev.header.event_type != event_type::TABLE_MAP {
        return None;
    }
    let b = ev.body();
    let db_len = usize::from(*b.get(8)?);
    let db = b.get(9..9 + db_len)?.to_vec();
    let t_len = usize::from(*b.get(9 + db_len + 1)?);
    let t = b.get(9 + db_len + 2..9 + db_len + 2 + t_len)?.to_vec();
    Some((db, t))
}

fn table_id(ev: &RawEvent) -> Option<u64> {
    let b = ev.body().get(..6)?;
    Some(b.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
}

/// Reads events until `done` says so; panics after `limit`.
async fn read_until(
    stream: &mut BinlogStream,
    limit: Duration,
    mut done: impl FnMut(&RawEvent) -> bool,
) -> Vec<RawEvent> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, stream.next_event())
            .await
            .unwrap_or_else(|_| panic!("no matching event within {limit:?} ({} read)", out.len()))
            .expect("next_event")
            .expect("stream ended");
        assert_crc(&ev);
        let stop = done(&ev);
        out.push(ev);
        if stop {
            return out;
        }
    }
}

/// The SQL text of a MariaDB ANNOTATE_ROWS event.
fn annotate_text(ev: &RawEvent) -> Option<String> {
    (ev.header.event_type == event_type::MARIA_ANNOTATE_ROWS)
        .then(|| String::from_utf8_lossy(ev.body()).into_owned())
}

#[tokio::test]
async fn dump_from_file_pos_receives_row_events() {
    let Some(mut cx) = Ctx::new("filepos").await else { return };
    let start = cx.end_position().await;
    let DumpStart::FilePos { file, .. } = &start else { unreachable!() };
    let file = file.clone();
    cx.exec("INSERT INTO `$db`.t VALUES (1,'a'),(2,'b')").await;
    cx.exec("UPDATE `$db`.t SET v='c' WHERE id=1").await;
    cx.exec("DELETE FROM `$db`.t WHERE id=2").await;

    let mut stream = cx.dump(start).await;
    assert!(stream.info().is_mariadb, "these tests expect MariaDB");
    // The first event is the fake ROTATE naming the requested file; with CRC32 its trailer is a
    // real CRC (checked in read_until), so the name is clean once the trailer is dropped.
    let first = stream.next_event().await.expect("first event").expect("stream open");
    assert_eq!(first.header.event_type, event_type::ROTATE);
    assert!(first.header.is_artificial());
    assert_crc(&first);
    assert_eq!(first.rotate().expect("rotate body").0, file);

    let (db, tbl) = (cx.db.clone().into_bytes(), b"t".to_vec());
    let mut ours = None;
    let mut kinds = Vec::new();
    read_until(&mut stream, Duration::from_secs(20), |ev| {
        if let Some((d, t)) = table_map_names(ev)
            && d == db
            && t == tbl
        {
            ours = table_id(ev);
        }
        let ty = ev.header.event_type;
        let rows = (event_type::WRITE_ROWS_V1..=event_type::DELETE_ROWS_V1).contains(&ty)
            || (event_type::WRITE_ROWS_V2..=event_type::DELETE_ROWS_V2).contains(&ty);
        if rows && ours.is_some() && table_id(ev) == ours {
            kinds.push(ty);
        }
        kinds.len() == 3
    })
    .await;
    assert_eq!(
        kinds,
        vec![event_type::WRITE_ROWS_V1, event_type::UPDATE_ROWS_V1, event_type::DELETE_ROWS_V1]
    );
    assert!(stream.last_log_pos() > 4);
    stream.close().await;
    cx.drop_db().await;
}

#[tokio::test]
async fn annotate_rows_arrive_with_mariadb_gtid_events() {
    let Some(mut cx) = Ctx::new("annotate").await else { return };
    let start = cx.end_position().await;
    cx.exec("INSERT INTO `$db`.t VALUES (7,'annotated')").await;
    let mut stream = cx.dump(start).await;
    let needle = format!("INSERT INTO `{}`.t VALUES (7,'annotated')", cx.db);
    let events = read_until(&mut stream, Duration::from_secs(20), |ev| {
        annotate_text(ev).is_some_and(|t| t == needle)
    })
    .await;
    let at = events.len() - 1;
    // The transaction starts with a MariaDB GTID event, then the annotation, then TABLE_MAP.
    let gtid_before = events[..at]
        .iter()
        .rev()
        .find(|e| e.header.event_type == event_type::MARIA_GTID)
        .expect("a GTID event before the ANNOTATE_ROWS");
    assert!(gtid_before.header.log_pos <= events[at].header.start_pos().unwrap());
    let next = read_until(&mut stream, Duration::from_secs(10), |ev| {
        ev.header.event_type == event_type::TABLE_MAP
    })
    .await;
    let tm = next.last().unwrap();
    assert_eq!(table_map_names(tm).unwrap().0, cx.db.as_bytes());
    stream.close().await;
    cx.drop_db().await;
}

/// (domain, server, seq) of a MariaDB GTID event.
fn mariadb_gtid(ev: &RawEvent) -> Option<(u32, u32, u64)> {
    if ev.header.event_type != event_type::MARIA_GTID {
        return None;
    }
    let b = ev.body();
    let seq = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?);
    Some((domain, ev.header.server_id, seq))
}

#[tokio::test]
async fn mariadb_gtid_start_resumes_after_the_given_gtid() {
    let Some(mut cx) = Ctx::new("gtid").await else { return };
    cx.exec("INSERT INTO `$db`.t VALUES (1,'before')").await;
    let mut meta = cx.meta().await;
    let pos: MariadbGtidList = meta.mariadb_gtid_binlog_pos().await.expect("gtid_binlog_pos");
    let g = *pos.gtids().find(|g| g.domain_id == 0).expect("domain 0");
    cx.exec("INSERT INTO `$db`.t VALUES (2,'after')").await;

    let mut stream = cx.dump(DumpStart::MariadbGtid(pos.clone())).await;
    let before = format!("INSERT INTO `{}`.t VALUES (1,'before')", cx.db);
    let after = format!("INSERT INTO `{}`.t VALUES (2,'after')", cx.db);
    let mut first_gtid = None;
    let events = read_until(&mut stream, Duration::from_secs(20), |ev| {
        if first_gtid.is_none() {
            first_gtid = mariadb_gtid(ev);
        }
        annotate_text(ev).is_some_and(|t| t == after)
    })
    .await;
    assert_eq!(first_gtid, Some((0, g.server_id, g.sequence + 1)), "starts right after {g}");
    assert!(events.iter().all(|e| annotate_text(e).is_none_or(|t| t != before)));
    stream.close().await;
    let _ = meta.close().await;
    cx.drop_db().await;
}

#[tokio::test]
async fn timestamp_search_returns_a_boundary_before_the_target() {
    let Some(mut cx) = Ctx::new("ts").await else { return };
    cx.exec("INSERT INTO `$db`.t VALUES (1,'old')").await;
    // Binlog times have one-second resolution: keep clear of the target on both sides.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let target_ms: i64 = {
        let v: Option<i64> = cx
            .admin
            .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)")
            .await
            .unwrap();
        v.unwrap()
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cx.exec("INSERT INTO `$db`.t VALUES (2,'new')").await;

    let mut meta = cx.meta().await;
    let hit = meta.find_position_by_timestamp(target_ms).await.expect("timestamp search");
    assert!(hit.timestamp_ms < target_ms, "{hit:?} vs {target_ms}");
    let mut stream =
        cx.dump(DumpStart::FilePos { file: hit.file.clone(), position: hit.position }).await;
    let old = format!("INSERT INTO `{}`.t VALUES (1,'old')", cx.db);
    let new = format!("INSERT INTO `{}`.t VALUES (2,'new')", cx.db);
    let events = read_until(&mut stream, Duration::from_secs(20), |ev| {
        annotate_text(ev).is_some_and(|t| t == new)
    })
    .await;
    assert!(events.iter().all(|e| annotate_text(e).is_none_or(|t| t != old)));
    // No event of the dump (after the initial artificial ones) predates the boundary's second.
    let real = events.iter().filter(|e| !e.header.is_artificial() && e.header.timestamp != 0);
    for e in real.filter(|e| e.header.event_type != event_type::FORMAT_DESCRIPTION) {
        assert!(i64::from(e.header.timestamp) * 1000 >= hit.timestamp_ms, "{hit:?}");
    }
    // A target before every binlog finds nothing: a definite error.
    let err = meta.find_position_by_timestamp(1000).await.unwrap_err();
    assert!(matches!(err, ReplicaError::PositionNotFound { .. }), "{err}");
    assert!(!err.is_transient());
    stream.close().await;
    let _ = meta.close().await;
    cx.drop_db().await;
}

#[tokio::test]
async fn missing_position_is_a_definite_error_naming_it() {
    let Some(cx) = Ctx::new("purged").await else { return };
    // The dump itself: error 1236 from the server.
    let requested = "rp-no-such-bin.000042";
    let mut stream = cx.dump(DumpStart::FilePos { file: requested.into(), position: 4 }).await;
    let err = tokio::time::timeout(Duration::from_secs(10), stream.next_event())
        .await
        .expect("answer within 10 s")
        .expect_err("dump of a missing file must fail");
    match &err {
        ReplicaError::Purged { requested: r, .. } => assert_eq!(r, &format!("{requested}:4")),
        other => panic!("expected Purged, got {other}"),
    }
    assert!(!err.is_transient());
    assert!(err.to_string().contains(requested));

    // A MariaDB GTID the server never wrote: 1236 as well, naming the GTID.
    let ghost: MariadbGtidList = "0-1-4000000000".parse().unwrap();
    let mut stream = cx.dump(DumpStart::MariadbGtid(ghost)).await;
    // The server may send the fake ROTATE/FORMAT_DESCRIPTION first.
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next_event()).await {
            Ok(Err(e)) => break e,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("a blocking dump does not end by itself"),
            Err(_) => panic!("no error for a GTID the server never wrote"),
        }
    };
    eprintln!("ghost GTID: {err}");
    assert!(
        matches!(&err, ReplicaError::Purged { requested, .. } if requested.contains("0-1-4000000000")),
        "{err:?}"
    );

    // The meta check, before dumping.
    let mut meta = cx.meta().await;
    let logs = meta.binary_logs().await.expect("binary logs");
    let err = meta.check_position_available(requested, 4).await.unwrap_err();
    match &err {
        ReplicaError::Purged { requested: r, oldest_available, .. } => {
            assert_eq!(r, &format!("{requested}:4"));
            assert_eq!(oldest_available.as_deref(), Some(logs[0].name.as_str()));
        }
        other => panic!("expected Purged, got {other}"),
    }
    let last = logs.last().unwrap();
    meta.check_position_available(&last.name, 4).await.expect("start of a present file");
    let beyond = meta.check_position_available(&last.name, last.size + 1_000_000).await;
    assert!(matches!(beyond, Err(ReplicaError::Purged { .. })));
    let _ = meta.close().await;
    cx.drop_db().await;
}

#[tokio::test]
async fn server_checks_and_positions() {
    let Some(cx) = Ctx::new("meta").await else { return };
    let mut meta = cx.meta().await;
    assert!(meta.is_mariadb());
    meta.check_binlog_settings(&["ROW"], &["FULL"]).await.expect("ROW/FULL server");
    let err = meta.check_binlog_settings(&["STATEMENT"], &["FULL"]).await.unwrap_err();
    assert!(
        matches!(err, ReplicaError::BinlogSettings { ref variable, .. } if variable == "binlog_format")
    );
    assert!(!err.is_transient());
    assert!(meta.server_id().await.expect("server id") > 0);
    let st = meta.master_status().await.unwrap().unwrap();
    let logs = meta.binary_logs().await.unwrap();
    assert_eq!(logs.last().unwrap().name, st.file);
    assert!(matches!(
        meta.mysql_gtid_executed().await,
        Err(ReplicaError::UnsupportedServer { .. })
    ));
    // The dump connection's own view.
    let conn = ReplicaConnection::connect(&cx.cfg).await.expect("connect");
    assert_eq!(conn.info().checksum, ChecksumAlg::Crc32);
    assert!(conn.info().version >= (10, 0, 0));
    let err = conn
        .dump(DumpStart::MysqlGtid(Default::default()), DumpOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicaError::UnsupportedServer { .. }));
    // Bad credentials are definite.
    let mut bad = cx.cfg.clone();
    bad.password = "wrong".into();
    let err = ReplicaConnection::connect(&bad).await.unwrap_err();
    assert!(matches!(err, ReplicaError::Auth { code: 1045, .. }), "{err}");
    assert!(!err.is_transient());
    let _ = meta.close().await;
    cx.drop_db().await;
}

#[tokio::test]
async fn heartbeats_keep_an_idle_dump_alive() {
    let Some(cx) = Ctx::new("heartbeat").await else { return };
    let mut cfg = cx.cfg.clone().with_heartbeat_period(Duration::from_millis(300));
    cfg.read_timeout_margin = Duration::from_millis(700);
    let mut meta = cx.meta().await;
    let st = meta.master_status().await.unwrap().unwrap();
    let mut stream = ReplicaConnection::connect(&cfg)
        .await
        .unwrap()
        .dump(DumpStart::FilePos { file: st.file, position: st.position }, DumpOptions::default())
        .await
        .unwrap();
    let mut beats = 0;
    let started = Instant::now();
    while beats < 2 {
        let ev = stream.next_event().await.expect("heartbeats prevent the read timeout").unwrap();
        if ev.header.event_type == event_type::HEARTBEAT {
            beats += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    stream.close().await;
    let _ = meta.close().await;
    cx.drop_db().await;
}

/// Reads events, recording ANNOTATE_ROWS texts of our table and the last commit boundary
/// (file, XID end offset) after each, until `stop` texts were seen or an error occurs.
struct Tracker {
    texts: Vec<String>,
    boundary_file: String,
    boundary: Option<(String, u64, usize)>,
}

impl Tracker {
    fn see(&mut self, stream: &BinlogStream, ev: &RawEvent, db: &str) {
        if let Some(t) = annotate_text(ev)
            && t.contains(db)
        {
            self.texts.push(t);
        }
        if let Some(f) = stream.current_file() {
            self.boundary_file = f.to_string();
        }
        if ev.header.event_type == event_type::XID {
            self.boundary =
                Some((self.boundary_file.clone(), u64::from(ev.header.log_pos), self.texts.len()));
        }
    }
}

#[tokio::test]
async fn killed_dump_is_transient_and_resuming_from_the_boundary_has_no_gap() {
    let Some(mut cx) = Ctx::new("kill").await else { return };
    let start = cx.end_position().await;
    for i in 1..=3 {
        cx.exec(&format!("INSERT INTO `$db`.t VALUES ({i},'row')")).await;
    }
    let text = |db: &str, i: u32| format!("INSERT INTO `{db}`.t VALUES ({i},'row')");
    let db = cx.db.clone();
    let mut stream = cx.dump(start).await;
    let mut tr = Tracker { texts: Vec::new(), boundary_file: String::new(), boundary: None };
    // Read until the commit of row 2: that is the last boundary "persisted" before the kill.
    let mut persisted = None;
    while persisted.is_none() {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.next_event())
            .await
            .expect("events")
            .expect("next_event")
            .expect("open");
        tr.see(&stream, &ev, &db);
        if ev.header.event_type == event_type::XID && tr.texts.last() == Some(&text(&db, 2)) {
            persisted = tr.boundary.clone();
        }
    }
    let (file, pos, seen) = persisted.unwrap();
    assert_eq!(seen, 2);

    let mut meta = cx.meta().await;
    meta.kill_connection(stream.info().connection_id).await.expect("kill dump thread");
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next_event()).await {
            Ok(Ok(Some(_))) => continue, // events already on the wire may still arrive
            Ok(Ok(None)) => panic!("a blocking dump does not end by itself"),
            Ok(Err(e)) => break e,
            Err(_) => panic!("the killed dump was not noticed within 30 s"),
        }
    };
    assert!(err.is_transient(), "killed dump must be transient: {err:?}");
    for i in 4..=5 {
        cx.exec(&format!("INSERT INTO `$db`.t VALUES ({i},'row')")).await;
    }

    // Reconnect from the persisted boundary (with the backoff helper the pipeline will use).
    let cfg = cx.cfg.clone();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
    let mut stream =
        retry_transient(&mut backoff, 5, || {
            let cfg = cfg.clone();
            let start = DumpStart::FilePos { file: file.clone(), position: pos };
            async move {
                ReplicaConnection::connect(&cfg).await?.dump(start, DumpOptions::default()).await
            }
        })
        .await
        .expect("reconnect");
    let mut tr = Tracker { texts: Vec::new(), boundary_file: file.clone(), boundary: None };
    while tr.texts.last() != Some(&text(&db, 5)) {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.next_event())
            .await
            .expect("events after resume")
            .expect("next_event")
            .expect("open");
        assert_crc(&ev);
        tr.see(&stream, &ev, &db);
    }
    assert_eq!(tr.texts, vec![text(&db, 3), text(&db, 4), text(&db, 5)], "no gap, no repeat");
    stream.close().await;
    let _ = meta.close().await;
    cx.drop_db().await;
}

// ---- caching_sha2_password against a scripted server (MariaDB has no such plugin) ----

mod fake {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub const NONCE: &[u8; 20] = b"abcdefghijklmnopqrst";
    pub const PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCyr/2dCG8LWmjPKAae9GQ1Fc9/
byE+gJO8m99CNxWwIk9wm/9ubgrH8o6jQt75yfxsKGS+Cgw/3BBECG6TT0pRdywR
3nPGoRMAk4tZ9TEJWvv/JfvKO+Jm3w6XJIFfVnE9oTg5ZR6KHNzKeuc74kZn1cEh
ZcuSk4EYSsAcrzNYcwIDAQAB
-----END PUBLIC KEY-----
";

    pub async fn read(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).await.unwrap();
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).await.unwrap();
        (h[3], p)
    }

    pub async fn write(s: &mut TcpStream, seq: u8, p: &[u8]) {
        let mut v = (p.len() as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.extend_from_slice(p);
        s.write_all(&v).await.unwrap();
    }

    pub fn handshake() -> Vec<u8> {
        let mut p = vec![10u8];
        p.extend_from_slice(b"8.4.0-fake\0");
        p.extend_from_slice(&9u32.to_le_bytes());
        p.extend_from_slice(&NONCE[..8]);
        p.push(0);
        let caps: u32 = 0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0020_0000 | 0x1 | 0x4 | 0x2000;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(255);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(&NONCE[8..]);
        p.push(0);
        p.extend_from_slice(b"caching_sha2_password\0");
        p
    }

    pub const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

    /// Serves one login (`full` = ask for the full path), then answers every query: OK, except
    /// the checksum select, which gets a one-row result set `CRC32`. Returns what the client
    /// sent during authentication.
    pub async fn serve(listener: TcpListener, full: bool) -> Vec<Vec<u8>> {
        serve_then(listener, full, None).await
    }

    /// Like [`serve`]; then, with `stream = Some(raw)`, accepts COM_REGISTER_SLAVE and
    /// COM_BINLOG_DUMP, writes `raw` (already framed) and keeps the socket open until the
    /// client closes it (at most 5 s).
    pub async fn serve_then(
        listener: TcpListener,
        full: bool,
        stream: Option<Vec<u8>>,
    ) -> Vec<Vec<u8>> {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        write(&mut s, 0, &handshake()).await;
        let (seq, resp) = read(&mut s).await;
        assert_eq!(seq, 1);
        got.push(resp);
        if full {
            write(&mut s, 2, &[0x01, 0x04]).await;
            let (_, req) = read(&mut s).await;
            got.push(req);
            let mut key = vec![0x01];
            key.extend_from_slice(PEM.as_bytes());
            write(&mut s, 4, &key).await;
            let (_, enc) = read(&mut s).await;
            got.push(enc);
            write(&mut s, 6, OK).await;
        } else {
            write(&mut s, 2, &[0x01, 0x03]).await;
            write(&mut s, 3, OK).await;
        }
        loop {
            let mut h = [0u8; 4];
            if s.read_exact(&mut h).await.is_err() {
                return got;
            }
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            let mut p = vec![0u8; len];
            s.read_exact(&mut p).await.unwrap();
            if p.ends_with(b"select @@global.binlog_checksum") {
                write(&mut s, 1, &[1]).await;
                let mut col = Vec::new();
                for part in [&b"def"[..], b"", b"", b"", b"c", b""] {
                    col.push(part.len() as u8);
                    col.extend_from_slice(part);
                }
                col.extend_from_slice(&[0x0c, 63, 0, 5, 0, 0, 0, 253, 0, 0, 0, 0, 0]);
                write(&mut s, 2, &col).await;
                write(&mut s, 3, &[0xFE, 0, 0, 2, 0]).await;
                write(&mut s, 4, b"\x05CRC32").await;
                write(&mut s, 5, &[0xFE, 0, 0, 2, 0]).await;
                let Some(raw) = stream else { return got };
                // Optional COM_REGISTER_SLAVE, then the dump command; both are recorded.
                let dump = loop {
                    let (_, cmd) = read(&mut s).await;
                    got.push(cmd.clone());
                    if cmd[0] != 0x15 {
                        break cmd;
                    }
                    write(&mut s, 1, OK).await;
                };
                assert!(matches!(dump[0], 0x12 | 0x1e), "a dump command");
                s.write_all(&raw).await.unwrap();
                // Hold the socket until the client hangs up (at most 5 s).
                let mut sink = [0u8; 64];
                let hold = std::time::Duration::from_secs(5);
                let _ = tokio::time::timeout(hold, s.read(&mut sink)).await;
                return got;
            }
            write(&mut s, 1, OK).await;
        }
    }
}

async fn sha2_login(full: bool) -> (Result<ReplicaConnection, ReplicaError>, Vec<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(fake::serve(listener, full));
    let mut cfg = ReplicaConfig::new("127.0.0.1", port, "u", "secret");
    cfg.connect_timeout = Duration::from_secs(5);
    let conn = ReplicaConnection::connect(&cfg).await;
    (conn, server.await.unwrap())
}

#[tokio::test]
async fn caching_sha2_fast_path() {
    let (conn, got) = sha2_login(false).await;
    let conn = conn.expect("fast auth login");
    assert_eq!(conn.info().checksum, ChecksumAlg::Crc32);
    assert!(!conn.info().is_mariadb);
    // The handshake response carries the SHA-256 scramble and the plugin name.
    let resp = &got[0];
    let expected = mysql_common::scramble::scramble_sha256(fake::NONCE, b"secret").unwrap();
    let at = resp.windows(32).position(|w| w == expected).expect("scramble in response");
    assert_eq!(resp[at - 1], 32);
    assert!(resp.ends_with(b"caching_sha2_password\0"));
}

#[tokio::test]
async fn caching_sha2_full_path_requests_the_key_and_sends_rsa() {
    let (conn, got) = sha2_login(true).await;
    conn.expect("full auth login");
    assert_eq!(got[1], vec![0x02], "public key request");
    assert_eq!(got[2].len(), 128, "RSA-1024 ciphertext");
}

/// Opens a dump against the fake server that then sends `raw`, and returns the first
/// `next_event` result.
async fn fake_dump(raw: Vec<u8>, max_packet: usize) -> Result<Option<RawEvent>, ReplicaError> {
    let start = DumpStart::FilePos { file: "b.000001".into(), position: 4 };
    fake_dump_from(start, raw, max_packet).await.0
}

/// Like [`fake_dump`] from `start`; also returns the packets the client sent after the session
/// setup (register, dump).
async fn fake_dump_from(
    start: DumpStart,
    raw: Vec<u8>,
    max_packet: usize,
) -> (Result<Option<RawEvent>, ReplicaError>, Vec<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(fake::serve_then(listener, false, Some(raw)));
    let mut cfg = ReplicaConfig::new("127.0.0.1", port, "u", "secret")
        .with_heartbeat_period(Duration::from_millis(200));
    cfg.read_timeout_margin = Duration::from_millis(100);
    cfg.max_packet_size = max_packet;
    let mut stream = ReplicaConnection::connect(&cfg)
        .await
        .expect("fake login")
        .dump(start, DumpOptions::default())
        .await
        .expect("dump command");
    let r = stream.next_event().await;
    drop(stream);
    let got = server.await.unwrap();
    (r, got[1..].to_vec())
}

fn framed(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    v.push(seq);
    v.extend_from_slice(payload);
    v
}

#[tokio::test]
async fn silent_binlog_socket_times_out_transiently() {
    let started = Instant::now();
    let err = fake_dump(Vec::new(), 1 << 20).await.expect_err("no heartbeat arrives");
    assert!(matches!(err, ReplicaError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn malformed_stream_packets_are_typed_errors() {
    // A packet that is neither event, EOF nor ERR.
    let err = fake_dump(framed(1, &[0x07, 1, 2, 3]), 1 << 20).await.unwrap_err();
    assert!(matches!(err, ReplicaError::Protocol { .. }), "{err:?}");
    assert!(!err.is_transient());
    // An event whose header size disagrees with the packet.
    let mut ev = vec![0u8; 1 + 19 + 8];
    ev[1 + 4] = event_type::XID;
    ev[1 + 9..1 + 13].copy_from_slice(&999u32.to_le_bytes());
    let err = fake_dump(framed(1, &ev), 1 << 20).await.unwrap_err();
    assert!(matches!(err, ReplicaError::Protocol { .. }), "{err:?}");
    // A wrong sequence id.
    let err = fake_dump(framed(9, &[0xFE, 0, 0, 2, 0]), 1 << 20).await.unwrap_err();
    assert!(matches!(err, ReplicaError::Protocol { .. }), "{err:?}");
    // A length above the limit fails on the header alone, without waiting for the body.
    let err = fake_dump(vec![0xFF, 0xFF, 0xFF, 1], 1 << 20).await.unwrap_err();
    assert!(matches!(err, ReplicaError::PacketTooLarge { .. }), "{err:?}");
    assert!(!err.is_transient());
    // 1236 about a missing start becomes Purged naming the start; other 1236 DumpRejected.
    let err = fake_dump(
        framed(1, b"\xff\xd4\x04#HY000Could not find first log file name in binary log index file"),
        1 << 20,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ReplicaError::Purged { requested, .. } if requested == "b.000001:4"),
        "{err:?}"
    );
    let err =
        fake_dump(framed(1, b"\xff\xd4\x04#HY000binlog truncated in the middle of event"), 1 << 20)
            .await
            .unwrap_err();
    assert!(
        matches!(&err, ReplicaError::DumpRejected { requested, code: 1236, .. } if requested == "b.000001:4"),
        "{err:?}"
    );
    assert!(!err.is_transient());
    // EOF ends the stream cleanly.
    assert!(fake_dump(framed(1, &[0xFE, 0, 0, 2, 0]), 1 << 20).await.unwrap().is_none());
}

#[tokio::test]
async fn events_over_16_mib_span_several_packets() {
    let Some(mut cx) = Ctx::new("big").await else { return };
    // REPEAT() yields NULL above max_allowed_packet, and the session value is read-only, so
    // raise the global (only ever upwards) and use a fresh connection for the insert.
    let cur: Option<u64> =
        cx.admin.query_first("SELECT @@global.max_allowed_packet").await.unwrap();
    if cur.unwrap_or(0) < 64 << 20 {
        cx.exec("SET GLOBAL max_allowed_packet = 67108864").await;
    }
    let admin_url = support::service("CANAL_TEST_MYSQL_ADMIN").unwrap();
    let mut big = Conn::new(Opts::from_url(&admin_url).unwrap()).await.unwrap();
    cx.exec("CREATE TABLE `$db`.b (id INT PRIMARY KEY, data LONGBLOB)").await;
    let start = cx.end_position().await;
    big.query_drop(format!("INSERT INTO `{}`.b VALUES (1, REPEAT('x', 17000000))", cx.db))
        .await
        .expect("insert a 17 MB row");
    let mut stream = cx.dump(start).await;
    let db = cx.db.clone().into_bytes();
    let mut ours = None;
    let events = read_until(&mut stream, Duration::from_secs(30), |ev| {
        if let Some((d, t)) = table_map_names(ev)
            && d == db
            && t == b"b"
        {
            ours = table_id(ev);
        }
        ev.header.event_type == event_type::WRITE_ROWS_V1 && ours.is_some() && table_id(ev) == ours
    })
    .await;
    let ev = events.last().unwrap();
    assert!(ev.bytes.len() > 0xFF_FFFF, "event of {} bytes", ev.bytes.len());
    assert_eq!(ev.header.event_size as usize, ev.bytes.len());
    // read_until verified the CRC over the reassembled bytes; the payload is intact too.
    assert!(ev.body().windows(64).any(|w| w.iter().all(|&b| b == b'x')));
    stream.close().await;
    let _ = big.disconnect().await;
    cx.drop_db().await;
}

#[tokio::test]
async fn mysql_gtid_dump_sends_the_encoded_set_without_registering() {
    let set: canal_core::binlog::replica::GtidSet =
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7".parse().unwrap();
    let (r, sent) =
        fake_dump_from(DumpStart::MysqlGtid(set), framed(1, &[0xFE, 0, 0, 2, 0]), 1 << 20).await;
    assert!(r.unwrap().is_none());
    assert_eq!(sent.len(), 1, "COM_BINLOG_DUMP_GTID only, no COM_REGISTER_SLAVE");
    let cmd = &sent[0];
    assert_eq!(cmd[0], 0x1e);
    assert_eq!(u16::from_le_bytes([cmd[1], cmd[2]]), 0x04, "BINLOG_THROUGH_GTID");
    // name length 0, position 4, then the SID block: 1 SID, its UUID, 2 intervals [1,6) [7,8).
    assert_eq!(&cmd[7..11], &0u32.to_le_bytes());
    assert_eq!(&cmd[11..19], &4u64.to_le_bytes());
    let block = &cmd[23..];
    assert_eq!(&block[..8], &1u64.to_le_bytes());
    assert_eq!(&block[8..12], &[0x3e, 0x11, 0xfa, 0x47]);
    let ivals: Vec<u64> =
        block[32..].chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(ivals, vec![1, 6, 7, 8]);
}

#[tokio::test]
async fn file_pos_dump_registers_then_sends_flag_2() {
    let start = DumpStart::FilePos { file: "b.000001".into(), position: 4 };
    let (r, sent) = fake_dump_from(start, framed(1, &[0xFE, 0, 0, 2, 0]), 1 << 20).await;
    assert!(r.unwrap().is_none());
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0][0], 0x15, "COM_REGISTER_SLAVE first");
    assert_eq!(&sent[0][1..5], &1234u32.to_le_bytes(), "default slave id");
    assert_eq!(sent[1][0], 0x12);
    assert_eq!(u16::from_le_bytes([sent[1][5], sent[1][6]]), 2, "BINLOG_SEND_ANNOTATE_ROWS_EVENT");
}

/// Throughput of the raw stream (no decoding): a non-blocking dump of every binlog on the
/// server. Run by hand: `CANAL_REPLICA_BENCH=1 cargo test --release --test it -- --ignored
/// --nocapture dump_throughput`.
#[tokio::test]
#[ignore = "measurement, run by hand"]
async fn dump_throughput() {
    if std::env::var("CANAL_REPLICA_BENCH").as_deref() != Ok("1") {
        return;
    }
    let Some(url) = support::service("CANAL_TEST_MYSQL") else { return };
    let (_, slave_id) = unique("bench");
    let cfg = ReplicaConfig::from_url(&url).unwrap().with_slave_id(slave_id);
    let mut meta = MetaConnection::open(&cfg).await.unwrap();
    let first = meta.binary_logs().await.unwrap().remove(0);
    let started = Instant::now();
    let mut stream = ReplicaConnection::connect(&cfg)
        .await
        .unwrap()
        .dump(
            DumpStart::FilePos { file: first.name, position: 4 },
            DumpOptions::default().with_non_blocking(true),
        )
        .await
        .unwrap();
    let (mut events, mut bytes) = (0u64, 0u64);
    while let Some(ev) = stream.next_event().await.unwrap() {
        events += 1;
        bytes += ev.bytes.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{events} events, {:.1} MB in {secs:.3} s = {:.0} MB/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs
    );
}
