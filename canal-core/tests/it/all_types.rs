//! Every MariaDB column type, live: the `all_types` table of the shared MariaDB fixtures (48
//! columns: every integer width signed and unsigned, DECIMAL up to 65 digits, FLOAT/DOUBLE, BIT,
//! DATE/TIME/DATETIME/TIMESTAMP with fractions, YEAR, CHAR/VARCHAR in utf8mb4/latin1/gbk,
//! BINARY/VARBINARY/BLOBs/TEXTs, ENUM/SET, JSON, every GEOMETRY kind, INET6/UUID/INET4, generated
//! columns) is created in a fresh database of the test server, the fixture workload's phase-2
//! statements (insert with boundary values, update, delete) are run with the same fixed session
//! time, and the instance's entries must carry exactly the values our converter reads from the
//! binlog MariaDB wrote for the same statements when the fixtures were recorded
//! (`mariadb-bin.000002`, FULL row metadata). The SQL and the recorded binlog come from
//! `../shared`; the test skips with a message when it is absent.
#![cfg(feature = "mysql")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use canal_core::binlog::entry::{ConvertOptions, Converter};
use canal_core::binlog::pipeline::LocalBinlogSource;
use canal_core::binlog::replica::ReplicaConfig;
use canal_core::instance::{Instance, InstanceConfig, InstanceState, StartConfig};
use canal_core::protocol::entry::{Entry, EntryType, RowChange};
use canal_core::store::{BatchMode, GetWait, StoreConfig};
use mysql_async::prelude::Queryable;
use prost::Message;

use crate::support;

type Row = BTreeMap<u32, Option<String>>;

/// (event type, before image by column index, after image by column index) of every row change
/// of table `all_types` in `entries`, leaving out the auto-increment `id` (index 0), which
/// depends on what ran before.
fn changes<'a>(entries: impl Iterator<Item = &'a [u8]>) -> Vec<(i32, Row, Row)> {
    let mut out = Vec::new();
    for bytes in entries {
        let e = Entry::decode(bytes).unwrap();
        if e.entry_type() != EntryType::Rowdata
            || e.header.as_ref().unwrap().table_name() != "all_types"
        {
            continue;
        }
        let rc = RowChange::decode(e.store_value()).unwrap();
        if rc.is_ddl() || rc.row_datas.is_empty() {
            continue;
        }
        for r in &rc.row_datas {
            let img = |cols: &[canal_core::protocol::entry::Column]| -> Row {
                cols.iter()
                    .filter(|c| c.index() != 0)
                    .map(|c| (c.index() as u32, (!c.is_null()).then(|| c.value().to_owned())))
                    .collect()
            };
            out.push((rc.event_type() as i32, img(&r.before_columns), img(&r.after_columns)));
        }
    }
    out
}

/// The statements of the fixture workload between two markers (`;` at the end of a line ends
/// one), with the database renamed.
fn statements(sql: &str, from: &str, to: &str, db: &str) -> Vec<String> {
    let start = sql.find(from).expect("start marker");
    let end = start + sql[start..].find(to).expect("end marker");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql[start..end].lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(cur.trim().trim_end_matches(';').replace(" fx.", &format!(" `{db}`.")));
            cur.clear();
        }
    }
    out
}

#[tokio::test]
async fn every_mariadb_type_live_matches_the_recorded_binlog() {
    let Some(url) = support::service("CANAL_TEST_MYSQL") else { return };
    let Some(admin_url) = support::service("CANAL_TEST_MYSQL_ADMIN") else { return };
    let dir = "fixtures/binlog/mariadb-10.11-generated";
    let Some(sql_path) = support::shared_file(&format!("{dir}/mariadb-all-types.sql")) else {
        return;
    };
    let Some(recorded) = support::shared_file(&format!("{dir}/mariadb-bin.000002")) else {
        return;
    };
    let sql = std::fs::read_to_string(sql_path).unwrap();

    // The oracle: the recorded binlog of the same statements, through the same converter.
    let mut source = LocalBinlogSource::new(vec![recorded], None, 4).unwrap();
    let mut conv = Converter::new(ConvertOptions::default(), None, "mariadb-bin.000002");
    let mut recorded_entries = Vec::new();
    while let Some((_, raw)) = source.next_event().unwrap() {
        conv.convert(raw, &mut recorded_entries).unwrap();
    }
    let expected = changes(recorded_entries.iter().map(|e| e.bytes.as_ref()));
    assert_eq!(expected.len(), 3, "recorded insert, update, delete of the 'full' row");

    // Live: same table, same statements, same session time, fresh database.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let db = format!("at_{}_{}", std::process::id(), nanos % 1_000_000);
    let mut admin =
        mysql_async::Conn::new(mysql_async::Opts::from_url(&admin_url).unwrap()).await.unwrap();
    for s in [
        "SET @@session.time_zone = '+00:00'",
        "SET @@session.timestamp = 1700000000",
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
    let create = statements(&sql, "CREATE TABLE all_types (", "-- ENUM with > 255 members", &db);
    let alter = statements(
        &sql,
        "ALTER TABLE all_types ADD COLUMN c_added",
        "INSERT INTO all_types (c_int, c_added",
        &db,
    );
    let modify = statements(
        &sql,
        "ALTER TABLE all_types MODIFY COLUMN c_added",
        "ALTER TABLE orders ADD INDEX",
        &db,
    );
    let phase2 = statements(
        &sql,
        "SET @@session.timestamp = 1700000100;",
        "INSERT INTO big_enum VALUES (5",
        &db,
    );
    assert_eq!((create.len(), alter.len(), modify.len(), phase2.len()), (1, 1, 1, 4), "{phase2:?}");
    for s in create.iter().chain(&alter).chain(&modify) {
        admin.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let row: mysql_async::Row = admin.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let (file, pos): (String, u64) = (row.get(0).unwrap(), row.get(1).unwrap());
    for s in &phase2 {
        admin.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }

    let slave_id = 4_000_000 + std::process::id() % 100_000;
    let mut cfg = InstanceConfig::new(
        db.clone(),
        ReplicaConfig::from_url(&url).unwrap().with_slave_id(slave_id),
    );
    cfg.store = StoreConfig { batch_mode: BatchMode::ItemSize, ..StoreConfig::default() };
    cfg.convert.filter = canal_core::filter::NameFilter::new(&format!("{db}\\..*"), "").unwrap();
    cfg.start = StartConfig { journal: Some(file), position: Some(pos), ..StartConfig::default() };
    let inst = Instance::start(cfg, None);
    let mut live_entries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while changes(live_entries.iter().map(|b: &bytes::Bytes| b.as_ref())).len() < 3 {
        assert!(Instant::now() < deadline, "timed out: {:?}", inst.status());
        if let InstanceState::Failed { error } = inst.status().state {
            panic!("instance failed: {error}");
        }
        if let Some(b) =
            inst.store().get(1000, GetWait::Timeout(Duration::from_millis(200))).await.unwrap()
        {
            live_entries.extend(b.entries.iter().cloned());
            inst.store().ack(b.end_seq).unwrap();
        }
    }
    inst.stop().await;
    let live = changes(live_entries.iter().map(|b| b.as_ref()));
    assert_eq!(live.len(), 3);
    for (i, (l, r)) in live.iter().zip(&expected).enumerate() {
        assert_eq!(l.0, r.0, "change {i}: event type");
        for (image, (got, want)) in [("before", (&l.1, &r.1)), ("after", (&l.2, &r.2))] {
            for (idx, value) in want {
                assert_eq!(got.get(idx), Some(value), "change {i}, {image} column {idx}");
            }
        }
        assert_eq!((l.1.len(), l.2.len()), (r.1.len(), r.2.len()), "change {i}: column counts");
    }
    // The boundary values really are there (not two empty images agreeing).
    let after = &live[0].2;
    assert!(after.values().any(|v| v.as_deref() == Some("200")), "TINYINT UNSIGNED 200");
    assert!(
        after.values().any(|v| v.as_deref() == Some("18000000000000000000")),
        "BIGINT UNSIGNED"
    );
    assert!(after.values().any(|v| v.as_deref() == Some("-00:00:00.500000")), "negative TIME(6)");
    admin.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
}
