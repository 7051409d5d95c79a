//! Proves the test services are real (owned by the services helper): MariaDB writes ROW binlog
//! events, and the `canal` account can read them.
#![cfg(feature = "mysql")]

use std::time::{SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};

use crate::support;

async fn connect(url: &str) -> Conn {
    let opts = Opts::from_url(url).unwrap_or_else(|e| panic!("bad mysql url {url}: {e}"));
    Conn::new(opts).await.unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// `SHOW BINLOG EVENTS IN 'file'` as (event type, info) pairs.
async fn binlog_events(conn: &mut Conn, file: &str) -> Vec<(String, String)> {
    let rows: Vec<Row> = conn
        .query(format!("SHOW BINLOG EVENTS IN '{file}'"))
        .await
        .unwrap_or_else(|e| panic!("SHOW BINLOG EVENTS IN '{file}': {e}"));
    rows.into_iter()
        .map(|r| {
            let ty: String = r.get("Event_type").expect("Event_type column");
            let info: String = r.get("Info").expect("Info column");
            (ty, info)
        })
        .collect()
}

/// The `table_id: N` of a Table_map / rows event's Info.
fn table_id(info: &str) -> Option<&str> {
    info.strip_prefix("table_id: ")?.split_whitespace().next()
}

/// Whether `events` hold a Table_map for `db.table` followed by a `Write_rows_v1` for its table id.
fn has_write_rows(events: &[(String, String)], db: &str, table: &str) -> bool {
    let mapped = format!("({db}.{table})");
    events.iter().enumerate().any(|(i, (ty, info))| {
        ty == "Table_map"
            && info.ends_with(&mapped)
            && events[i + 1..].iter().any(|(ty2, info2)| {
                ty2 == "Write_rows_v1"
                    && table_id(info2).is_some()
                    && table_id(info2) == table_id(info)
            })
    })
}

#[tokio::test]
async fn mariadb_writes_row_events_that_canal_user_can_read() {
    let Some(admin_url) = support::service("CANAL_TEST_MYSQL_ADMIN") else { return };
    let Some(canal_url) = support::service("CANAL_TEST_MYSQL") else { return };
    let Some(datadir) = support::service("CANAL_TEST_MYSQL_DATADIR") else { return };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    let db = format!("canal_it_services_{}_{nanos}", std::process::id());

    let mut admin = connect(&admin_url).await;
    admin.query_drop(format!("CREATE DATABASE `{db}`")).await.expect("create database");
    admin
        .query_drop(format!(
            "CREATE TABLE `{db}`.`t1` (id INT PRIMARY KEY, name VARCHAR(32)) ENGINE=InnoDB"
        ))
        .await
        .expect("create table");
    admin.query_drop(format!("INSERT INTO `{db}`.`t1` VALUES (1, 'alice')")).await.expect("insert");

    // Everything below runs as `canal`, proving its grants (BINLOG MONITOR, SELECT).
    let mut canal = connect(&canal_url).await;
    let settings: Option<(String, String, String, String)> = canal
        .query_first(
            "SELECT @@global.binlog_format, @@global.binlog_row_image, \
             @@global.binlog_row_metadata, @@global.binlog_checksum",
        )
        .await
        .expect("read binlog settings as canal");
    let status: Option<Row> = canal.query_first("SHOW MASTER STATUS").await.expect("master status");
    let current: String = status.expect("binary logging is on").get(0).expect("File column");
    let mut events = binlog_events(&mut canal, &current).await;
    let mut found_in = has_write_rows(&events, &db, "t1").then(|| current.clone());
    if found_in.is_none() {
        // Another test may have rotated the binlog between the insert and SHOW MASTER STATUS.
        let logs: Vec<Row> = canal.query("SHOW BINARY LOGS").await.expect("show binary logs");
        for log in logs.iter().rev() {
            let file: String = log.get(0).expect("Log_name column");
            events = binlog_events(&mut canal, &file).await;
            if has_write_rows(&events, &db, "t1") {
                found_in = Some(file);
                break;
            }
        }
    }
    let selected: Option<String> = canal
        .query_first(format!("SELECT name FROM `{db}`.`t1` WHERE id = 1"))
        .await
        .expect("select");

    // Clean up before asserting, so that a failure leaves nothing behind.
    admin.query_drop(format!("DROP DATABASE `{db}`")).await.expect("drop database");
    admin.disconnect().await.expect("disconnect admin");
    canal.disconnect().await.expect("disconnect canal");

    assert_eq!(
        settings,
        Some(("ROW".into(), "FULL".into(), "FULL".into(), "CRC32".into())),
        "binlog settings"
    );
    assert_eq!(selected.as_deref(), Some("alice"));
    let file = found_in.unwrap_or_else(|| {
        panic!("no Table_map + Write_rows_v1 for `{db}`.`t1` in any binlog (current {current})")
    });
    // The env's datadir is where the binlog files are, so tests can read them directly.
    let path = std::path::Path::new(&datadir).join(&file);
    let head = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(head.starts_with(b"\xfebin"), "{} starts with the binlog magic", path.display());
}
