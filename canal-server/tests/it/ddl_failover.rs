//! Issue 11's scenario with real processes and MariaDB: a client acks row 1 of each table; rows
//! 2–3; an ALTER per table (ADD+DROP, MODIFY signedness, CHANGE, RENAME COLUMN, charset change —
//! all keeping the column count — and an ADD that changes it); row 4. The active server is killed
//! -9; a standby with a FRESH data dir takes over and re-delivers rows 2–4; it is killed -9 and a
//! STALE standby (data dir of a run before the ALTERs) takes over and re-delivers them again.
//! Every re-delivered row must have the column names, mysqlType, sqlType and values of its own
//! position, with `binlog_row_metadata` MINIMAL and FULL.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use canal_coord::Coordinator;
use canal_coord::config::CoordConfig;
use canal_core::protocol::entry::{Entry, EntryType, RowChange};
use canal_core::protocol::packet::PacketType;
use mysql_async::prelude::Queryable;
use prost::Message;

use crate::ha::fixture;
use crate::ha_process::{Proc, etcd_coord, instance_toml, spawn, wait_for, zk_coord};
use crate::support;
use crate::wire::{Client, messages};

/// (name, mysqlType, sqlType, value or None for NULL)
type Col = (String, String, i32, Option<String>);
type Rows = BTreeMap<(String, i64), Vec<Col>>;

const TABLES: [(&str, &str, &str, &str); 6] = [
    // name, b column, value of b for row n ({n}), the ALTER
    ("t_adddrop", "b VARCHAR(10)", "'b{n}'", "ADD COLUMN c DECIMAL(5,2) AFTER a, DROP COLUMN b"),
    // Values that survive the conversion decode alike: the mysqlType tells the positions apart.
    ("t_sign", "b TINYINT", "{n}", "MODIFY b TINYINT UNSIGNED"),
    ("t_change", "b VARCHAR(10)", "'x{n}'", "CHANGE b b2 VARCHAR(20)"),
    ("t_rename", "b INT", "{n}{n}", "RENAME COLUMN b TO b3"),
    (
        "t_charset",
        "b VARCHAR(10) CHARACTER SET latin1",
        "'é{n}'",
        "MODIFY b VARCHAR(10) CHARACTER SET utf8mb4",
    ),
    ("t_count", "b INT", "{n}", "ADD COLUMN d INT"),
];

fn row4(table: &str) -> &'static str {
    match table {
        "t_adddrop" => "(4, 40, 4.50)",
        "t_sign" => "(4, 40, 200)",
        "t_change" => "(4, 40, 'x4')",
        "t_rename" => "(4, 40, 44)",
        "t_charset" => "(4, 40, 'ü4')",
        _ => "(4, 40, 4, 400)",
    }
}

fn write_conf(dir: &Path, coord: &str, db: &str, instance: &str) {
    std::fs::create_dir_all(dir.join(db)).unwrap();
    std::fs::write(
        dir.join("canal.toml"),
        format!(
            "ip = \"127.0.0.1\"\nport = 0\nmetrics_port = 0\ndata_dir = \"{}\"\n[coord]\n{coord}\ntakeover_delay_ms = 1000\ncursor_flush_period_ms = 100\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join(db).join("instance.toml"), instance).unwrap();
}

/// Reads rows until `want` arrived; acks each batch when `ack`.
async fn collect(addr: &str, dest: &str, want: usize, ack: bool) -> Rows {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut c = loop {
        let mut c = Client::connect(addr.parse().unwrap()).await;
        c.auth("", None).await;
        if c.subscribe(dest, "1001").await.error_code.is_none() {
            break c;
        }
        assert!(Instant::now() < deadline, "{addr} never served {dest}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut rows = Rows::new();
    while rows.len() < want {
        assert!(Instant::now() < deadline, "got {:?}, want {want}", rows.keys());
        let p = c.get(dest, 100, 200).await;
        assert_eq!(p.r#type, PacketType::Messages as i32, "{p:?}");
        let m = messages(p);
        if m.batch_id == -1 {
            continue;
        }
        for bytes in &m.messages {
            let e = Entry::decode(bytes.clone()).unwrap();
            if e.entry_type() != EntryType::Rowdata {
                continue;
            }
            let table = e.header.as_ref().unwrap().table_name().to_owned();
            let rc = RowChange::decode(e.store_value()).unwrap();
            for r in &rc.row_datas {
                let cols: Vec<Col> = r
                    .after_columns
                    .iter()
                    .map(|c| {
                        let v = (!c.is_null()).then(|| c.value().to_owned());
                        (c.name().to_owned(), c.mysql_type().to_owned(), c.sql_type(), v)
                    })
                    .collect();
                let id: i64 = cols[0].3.as_deref().unwrap().parse().unwrap();
                rows.insert((table.clone(), id), cols);
            }
        }
        if ack {
            c.client_ack_on(dest, m.batch_id).await;
        }
    }
    if ack {
        // An ack followed by an answered request is durable (the cursor is written before the
        // connection's next frame is read): a re-subscription, answered with an ACK, proves it.
        let r = c.subscribe(dest, "1001").await;
        assert!(r.error_code.is_none(), "{r:?}");
    }
    rows
}

fn names(cols: &[Col]) -> Vec<&str> {
    cols.iter().map(|c| c.0.as_str()).collect()
}

fn value<'a>(cols: &'a [Col], name: &str) -> Option<&'a str> {
    cols.iter().find(|c| c.0 == name).and_then(|c| c.3.as_deref())
}

/// Rows 2–3 as written (before the ALTER) and row 4 after it.
fn check_first_delivery(rows: &Rows) {
    for (t, ..) in TABLES {
        for n in [2i64, 3] {
            let cols = &rows[&(t.to_owned(), n)];
            assert_eq!(names(cols), ["id", "a", "b"], "{t} row {n}: {cols:?}");
            let b = match t {
                "t_adddrop" => format!("b{n}"),
                "t_sign" => n.to_string(),
                "t_change" => format!("x{n}"),
                "t_rename" => format!("{n}{n}"),
                "t_charset" => format!("é{n}"),
                _ => n.to_string(),
            };
            // A latin1 column arrives as U+FFFD today even when read live (a decoder issue, see
            // the report of issue 11); the re-deliveries are still compared with this delivery.
            if t != "t_charset" {
                assert_eq!(value(cols, "b"), Some(b.as_str()), "{t} row {n}: {cols:?}");
            }
        }
        let cols = &rows[&(t.to_owned(), 4)];
        let (want, col, v): (&[&str], &str, &str) = match t {
            "t_adddrop" => (&["id", "a", "c"], "c", "4.50"),
            "t_sign" => (&["id", "a", "b"], "b", "200"),
            "t_change" => (&["id", "a", "b2"], "b2", "x4"),
            "t_rename" => (&["id", "a", "b3"], "b3", "44"),
            "t_charset" => (&["id", "a", "b"], "b", "ü4"),
            _ => (&["id", "a", "b", "d"], "d", "400"),
        };
        assert_eq!(names(cols), want, "{t} row 4: {cols:?}");
        assert_eq!(value(cols, col), Some(v), "{t} row 4: {cols:?}");
    }
    // The signedness and the types are those of each row's own position.
    let sign2 = &rows[&("t_sign".to_owned(), 2)];
    let sign4 = &rows[&("t_sign".to_owned(), 4)];
    assert!(
        !sign2[2].1.contains("unsigned") && sign4[2].1.contains("unsigned"),
        "{sign2:?} {sign4:?}"
    );
    let adddrop2 = &rows[&("t_adddrop".to_owned(), 2)];
    assert!(adddrop2[2].1.starts_with("varchar"), "{adddrop2:?}");
}

fn sigterm(p: &mut Proc) {
    let ok = Command::new("kill").arg("-TERM").arg(p.child.id().to_string()).status().unwrap();
    assert!(ok.success());
    p.child.wait().unwrap();
}

/// The coordinator: ZooKeeper or etcd shared by the processes, or the local backend, whose store
/// (`{data_dir}/coord`) is carried from one process's data dir to the next (a restart on a new
/// data dir with the store kept).
enum Coord {
    Shared(CoordConfig, String),
    Local,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// `binlog_row_metadata` is global on the shared MariaDB: the scenarios set it one at a time, so
/// that one cannot restore another's mode in the middle of its run (or leave MINIMAL behind).
static ROW_METADATA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn scenario(tag: &str, coord: Coord, mode: &str) {
    let _serial = ROW_METADATA.lock().await;
    let Some(mut fx) = fixture(tag).await else { return };
    let admin = &mut fx.admin;
    let old: String =
        admin.query_first("SELECT @@global.binlog_row_metadata").await.unwrap().unwrap();
    admin.query_drop(format!("SET GLOBAL binlog_row_metadata = {mode}")).await.unwrap();
    let db = fx.db.clone();
    for (t, b, ..) in TABLES {
        admin
            .query_drop(format!("CREATE TABLE `{db}`.{t} (id INT PRIMARY KEY, a INT, {b})"))
            .await
            .unwrap();
    }
    // Start after the CREATEs: the history learns the tables from SHOW CREATE TABLE at row 1.
    let row: mysql_async::Row = admin.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    fx.instance.start.journal = Some(row.get(0).unwrap());
    fx.instance.start.position = Some(row.get(1).unwrap());
    let instance = instance_toml(&fx);
    let admin = &mut fx.admin;
    let insert = |t: &str, n: i64| {
        let b = TABLES.iter().find(|x| x.0 == t).unwrap().2.replace("{n}", &n.to_string());
        format!("INSERT INTO `{db}`.{t} VALUES ({n}, {}, {b})", n * 10)
    };
    let (coord_cfg, coord_toml) = match &coord {
        Coord::Shared(c, t) => (Some(c.clone()), t.clone()),
        Coord::Local => (None, "backend = \"local\"".to_owned()),
    };
    let root = std::env::temp_dir().join(format!("canal-ddlfo-{db}"));
    let (cs, ca, cb) = (root.join("s"), root.join("a"), root.join("b"));
    for c in [&cs, &ca, &cb] {
        write_conf(c, &coord_toml, &db, &instance);
    }
    let coord = coord_cfg.map(|c| Coordinator::new(c.open_backend().unwrap()));
    let limit = Duration::from_secs(30);
    // Waits for `who` to own the destination (the local store is private to its process: there
    // the client's subscription retries until the server serves).
    let owner = |who: String| {
        let coord = coord.clone();
        let db = db.clone();
        async move {
            if let Some(c) = &coord {
                wait_for(c, &db, who, limit).await;
            }
        }
    };
    let carry = |from: &Path, to: &Path| {
        if coord.is_none() {
            copy_dir(&from.join("data/coord"), &to.join("data/coord"));
        }
    };

    // S reads and a client acks row 1 of every table; S stops (its data dir is now stale).
    let mut s = spawn(&cs);
    owner(s.addr.clone()).await;
    for (t, ..) in TABLES {
        admin.query_drop(insert(t, 1)).await.unwrap();
    }
    collect(&s.addr, &db, TABLES.len(), true).await;
    sigterm(&mut s);

    // A (fresh) reads rows 2-3, the ALTERs and row 4; nothing is acked.
    carry(&cs, &ca);
    let a = spawn(&ca);
    owner(a.addr.clone()).await;
    for (t, .., alter) in TABLES {
        admin.query_drop(insert(t, 2)).await.unwrap();
        admin.query_drop(insert(t, 3)).await.unwrap();
        admin.query_drop(format!("ALTER TABLE `{db}`.{t} {alter}")).await.unwrap();
        admin.query_drop(format!("INSERT INTO `{db}`.{t} VALUES {}", row4(t))).await.unwrap();
    }
    let first = collect(&a.addr, &db, 3 * TABLES.len(), false).await;
    check_first_delivery(&first);

    // kill -9 A: B, with a fresh data dir, takes over and re-delivers rows 2-4.
    let b = if coord.is_some() {
        let b = spawn(&cb);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(a);
        b
    } else {
        drop(a);
        carry(&ca, &cb);
        spawn(&cb)
    };
    owner(b.addr.clone()).await;
    let again = collect(&b.addr, &db, 3 * TABLES.len(), false).await;
    assert_eq!(again, first, "{tag} {mode}: fresh standby");

    // kill -9 B: S, with its stale data dir, takes over and re-delivers them again.
    let s = if coord.is_some() {
        let s = spawn(&cs);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(b);
        s
    } else {
        drop(b);
        carry(&cb, &cs);
        spawn(&cs)
    };
    owner(s.addr.clone()).await;
    let again = collect(&s.addr, &db, 3 * TABLES.len(), false).await;
    assert_eq!(again, first, "{tag} {mode}: stale standby");
    eprintln!("{tag} {mode}: {} rows re-delivered twice with their own definitions", first.len());
    drop(s);
    fx.admin.query_drop(format!("SET GLOBAL binlog_row_metadata = {old}")).await.unwrap();
    if let Some(c) = coord {
        c.close().await;
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn zookeeper_ddl_failover_fresh_and_stale_standby() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    for mode in ["MINIMAL", "FULL"] {
        let (cfg, toml) = zk_coord(&servers);
        scenario("zkddl", Coord::Shared(cfg, toml), mode).await;
    }
}

#[tokio::test]
async fn etcd_ddl_failover_fresh_and_stale_standby() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    for mode in ["MINIMAL", "FULL"] {
        let (cfg, toml) = etcd_coord(&endpoint);
        scenario("etcdddl", Coord::Shared(cfg, toml), mode).await;
    }
}

#[tokio::test]
async fn local_ddl_restart_fresh_and_stale_data_dir() {
    if support::service("CANAL_TEST_MYSQL").is_none() {
        return;
    }
    for mode in ["MINIMAL", "FULL"] {
        scenario("localddl", Coord::Local, mode).await;
    }
}
