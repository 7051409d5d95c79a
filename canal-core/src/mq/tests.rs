//! Tests of MQ routing: Java-computed hashes (tests/java), every rule form, the errors, flat and
//! protobuf payloads decoded back, and per-key order through a split.

use bytes::Bytes;
use prost::Message as _;
use serde_json::Value;

use super::*;
use crate::protocol::entry::{Column, Entry, EntryType, EventType, Header, RowChange, RowData};
use crate::protocol::packet::{Messages, Packet, PacketType};

/// Same order as `SAMPLES` in tests/java/MqHash.java.
const SAMPLES: [&str; 20] = [
    "",
    "a",
    "id",
    "test",
    "1",
    "12345",
    "-1",
    "2026-12-05 12:00:00",
    "\u{4e2d}\u{6587}",
    "\u{1F600}",
    "caf\u{e9}",
    "polygenelubricants",
    "GydZG_",
    "DESIGNING WORKHOUSES",
    "a\u{0}b",
    "The quick brown fox jumps over the lazy dog",
    "\u{ff}\u{100}\u{ffff}",
    "orders",
    "order_item",
    "mytest",
];
const COUNTS: [u32; 7] = [1, 2, 3, 7, 16, 1024, 2_147_483_647];
const JAVA_EXPECTED: &str = include_str!("../../tests/java/expected.txt");

fn col(name: &str, value: Option<&str>, key: bool) -> Column {
    Column {
        index: Some(0),
        sql_type: Some(12),
        name: Some(name.into()),
        is_key: Some(key),
        updated: Some(false),
        is_null: Some(value.is_none()),
        value: value.map(Into::into),
        mysql_type: Some("varchar(20)".into()),
        ..Default::default()
    }
}

/// A ROWDATA entry; `rows` are the row images (after for INSERT/UPDATE, before for DELETE).
/// UPDATE rows get a before image whose non-key values are prefixed `old-`.
fn rows_entry(schema: &str, table: &str, et: EventType, rows: Vec<Vec<Column>>) -> Bytes {
    let row_datas = rows
        .into_iter()
        .map(|cols| match et {
            EventType::Delete => RowData { before_columns: cols, ..Default::default() },
            EventType::Update => {
                let before = cols
                    .iter()
                    .map(|c| {
                        let mut b = c.clone();
                        if !c.is_key() {
                            b.value = Some(format!("old-{}", c.value()));
                            b.is_null = Some(false);
                        }
                        b
                    })
                    .collect();
                let after = cols
                    .into_iter()
                    .map(|mut c| {
                        c.updated = Some(!c.is_key());
                        c
                    })
                    .collect();
                RowData { before_columns: before, after_columns: after, ..Default::default() }
            }
            _ => RowData { after_columns: cols, ..Default::default() },
        })
        .collect();
    let rc = RowChange {
        table_id: Some(7),
        event_type: Some(et as i32),
        is_ddl: Some(false),
        sql: Some(String::new()),
        row_datas,
        ..Default::default()
    };
    entry_with(schema, table, et, EntryType::Rowdata, rc.encode_to_vec())
}

fn entry_with(schema: &str, table: &str, et: EventType, t: EntryType, store: Vec<u8>) -> Bytes {
    Entry {
        header: Some(Header {
            version: Some(1),
            logfile_name: Some("mysql-bin.000001".into()),
            logfile_offset: Some(4),
            server_id: Some(1),
            execute_time: Some(1_700_000_000_000),
            schema_name: Some(schema.into()),
            table_name: Some(table.into()),
            event_type: Some(et as i32),
            gtid: Some(String::new()),
            ..Default::default()
        }),
        entry_type: Some(t as i32),
        store_value: Some(store.into()),
    }
    .encode_to_vec()
    .into()
}

fn ddl_entry(schema: &str, table: &str, sql: &str) -> Bytes {
    let rc = RowChange {
        event_type: Some(EventType::Alter as i32),
        is_ddl: Some(true),
        sql: Some(sql.into()),
        ..Default::default()
    };
    entry_with(schema, table, EventType::Alter, EntryType::Rowdata, rc.encode_to_vec())
}

fn edge(t: EntryType) -> Bytes {
    entry_with("", "", EventType::Update, t, vec![0x08, 0x01])
}

/// Rows of `(id, v)` into `db.t` as one INSERT entry.
fn insert(db: &str, table: &str, rows: &[(&str, &str)]) -> Bytes {
    let rows = rows
        .iter()
        .map(|(id, v)| vec![col("id", Some(id), true), col("v", Some(v), false)])
        .collect();
    rows_entry(db, table, EventType::Insert, rows)
}

fn router(f: impl FnOnce(&mut RoutingConfig)) -> Router {
    let mut c = RoutingConfig::default();
    f(&mut c);
    Router::new(c).expect("valid config")
}

fn json(r: &MqRecord) -> Value {
    serde_json::from_slice(&r.payload).expect("FlatMessage JSON")
}

fn packet(r: &MqRecord) -> (Packet, Messages, Vec<Entry>) {
    let p = Packet::decode(r.payload.as_slice()).expect("packet");
    assert_eq!(p.r#type, PacketType::Messages as i32);
    let m = Messages::decode(p.body.clone()).expect("messages");
    let entries = m.messages.iter().map(|b| Entry::decode(b.clone()).expect("entry")).collect();
    (p, m, entries)
}

fn rows_of(e: &Entry) -> Vec<RowData> {
    RowChange::decode(e.store_value()).expect("row change").row_datas
}

fn after_value(r: &RowData, name: &str) -> String {
    let cols = if r.after_columns.is_empty() { &r.before_columns } else { &r.after_columns };
    cols.iter().find(|c| c.name() == name).map(|c| c.value().to_owned()).unwrap_or_default()
}

// ---------------------------------------------------------------- Java's numbers

#[test]
fn hashes_and_partitions_equal_javas() {
    let mut checked = 0;
    for line in JAVA_EXPECTED.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let parts: Vec<u32> =
            f[f.len() - COUNTS.len()..].iter().map(|p| p.parse().unwrap()).collect();
        let h = match f[0] {
            "str" => {
                let i: usize = f[1].parse().unwrap();
                let h = java_string_hash(SAMPLES[i]);
                assert_eq!(h.to_string(), f[2], "hashCode of sample {i} {:?}", SAMPLES[i]);
                h
            }
            "row" => {
                let idx: Vec<usize> = f[1].split(',').map(|i| i.parse().unwrap()).collect();
                let mut h = if f[2] == "1" { java_string_hash(SAMPLES[idx[0]]) } else { 0 };
                for &k in &idx[1..] {
                    h ^= java_string_hash(SAMPLES[k]);
                }
                assert_eq!(h.to_string(), f[3], "{line}");
                h
            }
            other => panic!("unknown line kind {other}"),
        };
        for (n, p) in COUNTS.iter().zip(parts) {
            assert_eq!(java_partition(h, *n), p, "{line}: {n} partitions");
        }
        checked += 1;
    }
    assert_eq!(checked, 38, "expected.txt has every sample and row");
}

/// The router itself, end to end, against Java's row lines: each row of expected.txt as a
/// protobuf and a flat row, under every partition count.
#[test]
fn router_partitions_rows_as_java_does() {
    for line in JAVA_EXPECTED.lines().filter(|l| l.starts_with("row ")) {
        let f: Vec<&str> = line.split(' ').collect();
        let idx: Vec<usize> = f[1].split(',').map(|i| i.parse().unwrap()).collect();
        let database_hash = f[2] == "1";
        let parts: Vec<u32> = f[4..].iter().map(|p| p.parse().unwrap()).collect();
        let db = SAMPLES[idx[0]];
        let cols: Vec<Column> = idx[1..]
            .iter()
            .enumerate()
            .map(|(k, &s)| col(&format!("c{k}"), Some(SAMPLES[s]), k == 0))
            .collect();
        let names: Vec<String> = (0..cols.len()).map(|k| format!("c{k}")).collect();
        let entry = rows_entry(db, "t", EventType::Insert, vec![cols]);
        for (n, want) in COUNTS.iter().zip(&parts) {
            for flat in [true, false] {
                let r = router(|c| {
                    c.flat_message = flat;
                    c.partitions_num = Some(*n);
                    c.database_hash = database_hash;
                    c.partition_hash = Some(format!(".*\\..*:{}", names.join("^")));
                });
                let out = r.route(1, std::slice::from_ref(&entry), 0).unwrap();
                assert_eq!(out.len(), 1, "{line}");
                assert_eq!(out[0].partition as u32, *want, "{line}, {n} partitions, flat {flat}");
            }
        }
    }
}

/// Runs tests/java/MqHash.java when a JDK is on PATH and compares its output with the committed
/// expected.txt (so the embedded numbers are Java's, not ours).
#[test]
fn java_program_still_prints_expected_txt() {
    let javac_ok = std::process::Command::new("javac")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !javac_ok {
        eprintln!(
            "SKIPPED: no javac on PATH; expected.txt is checked by hashes_and_partitions_equal_javas"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("canal-mqhash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/MqHash.java");
    let st = std::process::Command::new("javac").arg("-d").arg(&dir).arg(src).status().unwrap();
    assert!(st.success(), "javac failed");
    let out =
        std::process::Command::new("java").arg("-cp").arg(&dir).arg("MqHash").output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "java failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), JAVA_EXPECTED);
}

// ---------------------------------------------------------------- plain routing

#[test]
fn flat_default_one_record_per_row_entry_on_the_fixed_partition() {
    let r = router(|c| {
        c.topic = "orders.all".into();
        c.partition = 2;
    });
    let batch = [
        edge(EntryType::Transactionbegin),
        insert("shop", "orders", &[("1", "a"), ("2", "b")]),
        edge(EntryType::Transactionend),
        ddl_entry("shop", "orders", "alter table orders add c int"),
    ];
    let out = r.route(9, &batch, 1234).unwrap();
    assert_eq!(out.len(), 2);
    // No dynamic topic: the topic is used as written (dots kept).
    assert!(out.iter().all(|o| o.topic == "orders.all" && o.partition == 2));
    let j = json(&out[0]);
    assert_eq!(j["id"], 9);
    assert_eq!(j["ts"], 1234);
    assert_eq!(j["type"], "INSERT");
    assert_eq!(j["data"][1]["id"], "2");
    assert_eq!(json(&out[1])["isDdl"], true);
}

#[test]
fn protobuf_unsplit_is_javas_raw_packet_with_the_stored_bytes() {
    let batch = [
        edge(EntryType::Transactionbegin),
        insert("shop", "orders", &[("1", "a")]),
        edge(EntryType::Transactionend),
    ];
    let r = router(|c| c.flat_message = false);
    let out = r.route(77, &batch, 0).unwrap();
    assert_eq!(out.len(), 1);
    let (p, m, _) = packet(&out[0]);
    assert_eq!(p.version, None, "raw form has no version");
    assert_eq!(m.batch_id, 77);
    assert_eq!(m.messages, vec![batch[1].clone()], "BEGIN/END filtered, bytes untouched");
    // Byte layout: type, body(batch_id, entry).
    let mut want = vec![0x18, 0x07, 0x2a];
    let mut len_prefix = Vec::new();
    wire::put_varint(&mut len_prefix, batch[1].len() as u64);
    let body_len = 2 + 1 + len_prefix.len() + batch[1].len();
    wire::put_varint(&mut want, body_len as u64);
    want.extend_from_slice(&[0x08, 77, 0x12]);
    wire::put_varint(&mut want, batch[1].len() as u64);
    want.extend_from_slice(&batch[1]);
    assert_eq!(out[0].payload, want);

    let keep = router(|c| {
        c.flat_message = false;
        c.filter_transaction_entry = false;
    });
    let (_, m, _) = packet(&keep.route(77, &batch, 0).unwrap()[0]);
    assert_eq!(m.messages, batch.to_vec());
    // Only BEGIN/END: nothing to send.
    assert!(r.route(1, &[edge(EntryType::Transactionbegin)], 0).unwrap().is_empty());
    assert!(r.route(1, &[], 0).unwrap().is_empty());
}

// ---------------------------------------------------------------- dynamic topics

fn topics_of(r: &Router, batch: &[Bytes]) -> Vec<(String, Vec<String>)> {
    // topic → "db.table" of each flat record, in order.
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for rec in r.route(1, batch, 0).unwrap() {
        let j = json(&rec);
        let name = format!("{}.{}", j["database"].as_str().unwrap(), j["table"].as_str().unwrap());
        match out.iter_mut().find(|(t, _)| *t == rec.topic) {
            Some((_, v)) => v.push(name),
            None => out.push((rec.topic.clone(), vec![name])),
        }
    }
    out
}

#[test]
fn dynamic_topic_every_rule_form() {
    let batch = [
        insert("Shop", "Orders", &[("1", "a")]),
        insert("shop", "items", &[("2", "b")]),
        insert("mytest", "t1", &[("3", "c")]),
        insert("logs", "l1", &[("4", "d")]),
        insert("other", "x", &[("5", "e")]),
        insert("bank", "acct", &[("6", "f")]),
    ];
    let r = router(|c| {
        c.topic = "default.topic".into();
        // schema.table, schema, regex over schema.table, topic:regex over schema, topic:name.
        c.dynamic_topic = Some("shop.orders, mytest\\..*;logs ,money:ban.*,  shop".into());
    });
    assert_eq!(
        topics_of(&r, &batch),
        [
            ("shop_orders".to_owned(), vec!["Shop.Orders".to_owned()]),
            ("shop".to_owned(), vec!["shop.items".to_owned()]),
            ("mytest_t1".to_owned(), vec!["mytest.t1".to_owned()]),
            ("logs".to_owned(), vec!["logs.l1".to_owned()]),
            // No rule: the default topic, dots replaced as Java's producers do.
            ("default_topic".to_owned(), vec!["other.x".to_owned()]),
            ("money".to_owned(), vec!["bank.acct".to_owned()]),
        ]
    );
}

#[test]
fn dynamic_topic_tries_every_rule_on_the_table_before_the_schema() {
    let r = router(|c| c.dynamic_topic = Some("s, s.t, by_regex:s\\.u.*".into()));
    let batch = [
        insert("s", "t", &[("1", "a")]),
        insert("s", "u1", &[("1", "a")]),
        insert("s", "v", &[("1", "a")]),
    ];
    let got: Vec<String> = r.route(1, &batch, 0).unwrap().into_iter().map(|o| o.topic).collect();
    assert_eq!(got, ["s_t", "by_regex", "s"]);
    // A regex without `\.` only ever matches the schema; one with `\.` only `schema.table`.
    let r = router(|c| c.dynamic_topic = Some("sch:s.*, tab:x\\..*".into()));
    let batch = [insert("s1", "t", &[("1", "a")]), insert("x", "y", &[("1", "a")])];
    let got: Vec<String> = r.route(1, &batch, 0).unwrap().into_iter().map(|o| o.topic).collect();
    assert_eq!(got, ["sch", "tab"]);
}

#[test]
fn dynamic_topic_protobuf_groups_entries_and_drops_transaction_edges() {
    let r = router(|c| {
        c.flat_message = false;
        c.dynamic_topic = Some("a".into());
    });
    let batch = [
        edge(EntryType::Transactionbegin),
        insert("a", "t", &[("1", "x")]),
        insert("b", "t", &[("2", "y")]),
        insert("a", "u", &[("3", "z")]),
        ddl_entry("a", "", "create database a"),
        edge(EntryType::Transactionend),
    ];
    let out = r.route(5, &batch, 0).unwrap();
    let topics: Vec<&str> = out.iter().map(|o| o.topic.as_str()).collect();
    assert_eq!(topics, ["a", "example"], "a DDL without table goes to the default topic");
    let (p, m, _) = packet(&out[0]);
    assert_eq!(p.version, Some(1), "entry form after a topic split");
    assert_eq!(m.batch_id, 0, "entry form has no batch id");
    assert_eq!(m.messages, vec![batch[1].clone(), batch[3].clone()]);
    let (_, m, _) = packet(&out[1]);
    assert_eq!(m.messages, vec![batch[2].clone(), batch[4].clone()]);
}

// ---------------------------------------------------------------- partition hash

fn part(h: i32, n: u32) -> i32 {
    java_partition(h, n) as i32
}

#[test]
fn partition_hash_columns_split_flat_rows_with_their_old_images() {
    let r = router(|c| {
        c.partitions_num = Some(16);
        c.partition_hash = Some("shop.orders:id".into());
    });
    let rows: Vec<Vec<Column>> = ["1", "2", "3", "1"]
        .iter()
        .enumerate()
        .map(|(k, id)| vec![col("id", Some(id), true), col("v", Some(&k.to_string()), false)])
        .collect();
    let e = rows_entry("shop", "orders", EventType::Update, rows);
    let out = r.route(3, &[e], 0).unwrap();
    let db = java_string_hash("shop");
    let want = |id: &str| part(db ^ java_string_hash(id), 16);
    let mut seen = 0;
    let mut last = -1;
    for rec in &out {
        assert!(rec.partition > last, "parts ascend by partition");
        last = rec.partition;
        let j = json(rec);
        let data = j["data"].as_array().unwrap();
        let old = j["old"].as_array().unwrap();
        assert_eq!(data.len(), old.len());
        for (d, o) in data.iter().zip(old) {
            assert_eq!(rec.partition, want(d["id"].as_str().unwrap()));
            assert_eq!(
                o["v"],
                format!("old-{}", d["v"].as_str().unwrap()),
                "old image follows its row"
            );
            seen += 1;
        }
        assert_eq!(j["pkNames"], serde_json::json!(["id"]));
        assert_eq!(j["sqlType"]["v"], 12);
    }
    assert_eq!(seen, 4);
    // The two rows of id 1 are in one part, in binlog order.
    let p1 = out.iter().find(|o| o.partition == want("1")).unwrap();
    let vs: Vec<String> = json(p1)["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["id"] == "1")
        .map(|d| d["v"].as_str().unwrap().into())
        .collect();
    assert_eq!(vs, ["0", "3"]);
}

#[test]
fn partition_hash_auto_pk_table_regex_multiple_rules_and_fallbacks() {
    let r = router(|c| {
        c.partitions_num = Some(7);
        c.database_hash = false;
        c.partition_hash =
            Some("shop.orders:$PK$; shop\\.item.*:v ,shop.audit, shop\\..*:missing".into());
    });
    let h = |s: &str| java_string_hash(s);
    let batch = [
        insert("shop", "orders", &[("10", "a")]), // $pk$ (case-insensitive)
        insert("shop", "items", &[("11", "b")]),  // regex rule, column v
        insert("shop", "audit", &[("12", "c"), ("13", "d")]), // table hash, not split
        insert("shop", "zzz", &[("14", "e")]),    // last rule: column absent → hash 0
        insert("other", "x", &[("15", "f")]),     // no rule → 0
        ddl_entry("shop", "orders", "alter table orders add c int"), // DDL → 0
    ];
    let out = r.route(1, &batch, 0).unwrap();
    let got: Vec<(String, i32)> =
        out.iter().map(|o| (json(o)["table"].as_str().unwrap().to_owned(), o.partition)).collect();
    assert_eq!(
        got,
        [
            ("orders".into(), part(h("10"), 7)),
            ("items".into(), part(h("b"), 7)),
            ("audit".into(), part(h("audit"), 7)),
            ("zzz".into(), 0),
            ("x".into(), 0),
            ("orders".into(), 0),
        ]
    );
    assert_eq!(
        json(&out[2])["data"].as_array().unwrap().len(),
        2,
        "table hash keeps the entry whole"
    );
}

#[test]
fn partition_hash_without_partitions_num_uses_one_partition_and_ignores_partition() {
    let r = router(|c| {
        c.partition = 3;
        c.partition_hash = Some("shop.orders:id".into());
    });
    let out = r.route(1, &[insert("shop", "orders", &[("1", "a"), ("2", "b")])], 0).unwrap();
    assert_eq!(out.iter().map(|o| o.partition).collect::<Vec<_>>(), [0]);
    // A table that no rule matches also goes to partition 0, not canal.mq.partition.
    let out = r.route(1, &[insert("shop", "x", &[("1", "a")])], 0).unwrap();
    assert_eq!(out[0].partition, 0);
}

#[test]
fn dynamic_topic_partition_num_per_topic_plain_and_regex() {
    let r = router(|c| {
        c.partitions_num = Some(2);
        c.dynamic_topic = Some("shop.orders,shop.items,logs".into());
        c.dynamic_topic_partition_num = Some("shop_orders:16;shop_i.*:1000".into());
        c.partition_hash = Some(".*\\..*:id".into());
    });
    assert_eq!(r.partitions_of("SHOP_ORDERS"), Some(16));
    assert_eq!(r.partitions_of("shop_items"), Some(1000));
    assert_eq!(r.partitions_of("logs"), Some(2));
    let batch = [
        insert("shop", "orders", &[("5", "a")]),
        insert("shop", "items", &[("5", "a")]),
        insert("logs", "l", &[("5", "a")]),
    ];
    let out = r.route(1, &batch, 0).unwrap();
    let h = |db: &str| java_string_hash(db) ^ java_string_hash("5");
    let got: Vec<(&str, i32)> = out.iter().map(|o| (o.topic.as_str(), o.partition)).collect();
    assert_eq!(
        got,
        [
            ("shop_orders", part(h("shop"), 16)),
            ("shop_items", part(h("shop"), 1000)),
            ("logs", part(h("logs"), 2))
        ]
    );
    let unconfigured = router(|_| {});
    assert_eq!(unconfigured.partitions_of("example"), None);
}

#[test]
fn protobuf_split_one_row_per_entry_and_per_key_order_across_the_batch() {
    let n = 5;
    let r = router(|c| {
        c.flat_message = false;
        c.partitions_num = Some(n);
        c.partition_hash = Some("shop.orders:id,shop.whole".into());
    });
    // Interleaved keys over several entries and event types; a DDL; a table-hash entry.
    let mut batch = vec![edge(EntryType::Transactionbegin)];
    let mut expected: Vec<(String, String)> = Vec::new();
    for round in 0..6 {
        let rows: Vec<(String, String)> = (0..8)
            .map(|k| (format!("{}", (k * 7 + round) % 11), format!("r{round}k{k}")))
            .collect();
        let refs: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        batch.push(insert("shop", "orders", &refs));
        expected.extend(rows);
    }
    let del = rows_entry(
        "shop",
        "orders",
        EventType::Delete,
        vec![vec![col("id", Some("3"), true), col("v", Some("gone"), false)]],
    );
    batch.push(del);
    expected.push(("3".into(), "gone".into()));
    let ddl = ddl_entry("shop", "orders", "alter table orders add c int");
    batch.push(ddl.clone());
    let whole = insert("shop", "whole", &[("1", "a"), ("2", "b")]);
    batch.push(whole.clone());
    batch.push(edge(EntryType::Transactionend));

    let out = r.route(4, &batch, 0).unwrap();
    let mut per_key: std::collections::BTreeMap<String, (i32, Vec<String>)> = Default::default();
    let original = Entry::decode(batch[1].clone()).unwrap();
    let original_rc = RowChange::decode(original.store_value()).unwrap();
    let mut saw_ddl = false;
    let mut saw_whole = false;
    for rec in &out {
        let (p, m, entries) = packet(rec);
        assert_eq!((p.version, m.batch_id), (Some(1), 0));
        for (bytes, e) in m.messages.iter().zip(&entries) {
            assert_eq!(e.entry_type(), EntryType::Rowdata, "no BEGIN/END");
            if *bytes == ddl {
                assert_eq!(rec.partition, 0);
                saw_ddl = true;
                continue;
            }
            if *bytes == whole {
                assert_eq!(rec.partition, part(java_string_hash("whole"), n));
                saw_whole = true;
                continue;
            }
            let mut header = e.header.clone().unwrap();
            header.event_type = original.header.as_ref().unwrap().event_type;
            assert_eq!(Some(header), original.header, "header kept");
            let rows = rows_of(e);
            assert_eq!(rows.len(), 1, "Java writes one row per split entry");
            // Byte-identical to Java's builder: the entry with a one-row RowChange.
            let rc = RowChange::decode(e.store_value()).unwrap();
            let want_rc = RowChange {
                row_datas: rc.row_datas.clone(),
                event_type: rc.event_type,
                ..original_rc.clone()
            };
            let want = Entry { store_value: Some(want_rc.encode_to_vec().into()), ..e.clone() };
            assert_eq!(bytes.as_ref(), want.encode_to_vec().as_slice());
            let id = after_value(&rows[0], "id");
            assert_eq!(rec.partition, part(java_string_hash("shop") ^ java_string_hash(&id), n));
            let slot = per_key.entry(id).or_insert((rec.partition, Vec::new()));
            assert_eq!(slot.0, rec.partition, "one key, one partition");
            slot.1.push(after_value(&rows[0], "v"));
        }
    }
    assert!(saw_ddl && saw_whole);
    for (id, (_, got)) in &per_key {
        let want: Vec<&String> = expected.iter().filter(|(k, _)| k == id).map(|(_, v)| v).collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "key {id} keeps binlog order");
    }
    assert_eq!(per_key.values().map(|(_, v)| v.len()).sum::<usize>(), expected.len());
}

#[test]
fn rabbitmq_routing_ignores_partitions() {
    let r = router(|c| {
        c.partition = 4;
        c.partitions_num = Some(8);
        c.partition_hash = Some("shop.orders:id".into());
        c.dynamic_topic = Some("shop".into());
    });
    let out = r
        .route_unpartitioned(1, &[insert("shop", "orders", &[("1", "a"), ("2", "b")])], 0)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].topic.as_str(), out[0].partition), ("shop", 0));
    assert_eq!(json(&out[0])["data"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------- errors

#[test]
fn every_bad_value_is_a_typed_error_naming_key_and_item() {
    type Set = Box<dyn Fn(&mut RoutingConfig)>;
    let cases: Vec<(Set, &str, &str)> = vec![
        (Box::new(|c| c.topic = " ".into()), "canal.mq.topic", " "),
        (Box::new(|c| c.partition = -1), "canal.mq.partition", "-1"),
        (Box::new(|c| c.partitions_num = Some(0)), "canal.mq.partitionsNum", "0"),
        (Box::new(|c| c.partitions_num = Some(u32::MAX)), "canal.mq.partitionsNum", "4294967295"),
        (Box::new(|c| c.dynamic_topic = Some("a,b(".into())), "canal.mq.dynamicTopic", "b("),
        (Box::new(|c| c.dynamic_topic = Some(":a.*".into())), "canal.mq.dynamicTopic", ":a.*"),
        (Box::new(|c| c.dynamic_topic = Some("t:".into())), "canal.mq.dynamicTopic", "t:"),
        (
            Box::new(|c| c.dynamic_topic = Some("t:(a)\\1".into())),
            "canal.mq.dynamicTopic",
            "t:(a)\\1",
        ),
        (
            Box::new(|c| c.partition_hash = Some("a.b:id;c\\.[d:id".into())),
            "canal.mq.partitionHash",
            "c\\.[d:id",
        ),
        (Box::new(|c| c.partition_hash = Some("a.b:".into())), "canal.mq.partitionHash", "a.b:"),
        (Box::new(|c| c.partition_hash = Some("a.b:^".into())), "canal.mq.partitionHash", "a.b:^"),
        (Box::new(|c| c.partition_hash = Some(":id".into())), "canal.mq.partitionHash", ":id"),
        (
            Box::new(|c| c.dynamic_topic_partition_num = Some("t".into())),
            "canal.mq.dynamicTopicPartitionNum",
            "t",
        ),
        (
            Box::new(|c| c.dynamic_topic_partition_num = Some("t:x".into())),
            "canal.mq.dynamicTopicPartitionNum",
            "t:x",
        ),
        (
            Box::new(|c| c.dynamic_topic_partition_num = Some("t:0".into())),
            "canal.mq.dynamicTopicPartitionNum",
            "t:0",
        ),
        (
            Box::new(|c| c.dynamic_topic_partition_num = Some("t:-3".into())),
            "canal.mq.dynamicTopicPartitionNum",
            "t:-3",
        ),
        (
            Box::new(|c| c.dynamic_topic_partition_num = Some("t:99999999999".into())),
            "canal.mq.dynamicTopicPartitionNum",
            "t:99999999999",
        ),
        (
            Box::new(|c| c.dynamic_topic_partition_num = Some("t*(:3".into())),
            "canal.mq.dynamicTopicPartitionNum",
            "t*(:3",
        ),
    ];
    for (set, key, value) in cases {
        let mut c = RoutingConfig::default();
        set(&mut c);
        match Router::new(c) {
            Err(RoutingError::Config { key: k, value: v, reason }) => {
                assert_eq!((k, v.as_str()), (key, value), "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{key} {value:?}: expected a config error, got {other:?}"),
        }
    }
    // Empty lists are absent, as in Java.
    router(|c| {
        c.dynamic_topic = Some(" ;, ".into());
        c.partition_hash = Some(String::new());
    });
}

#[test]
fn undecodable_entries_are_errors_not_panics() {
    let garbage = Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let bad_rc =
        entry_with("shop", "orders", EventType::Insert, EntryType::Rowdata, vec![0x62, 0x05, 0x01]);
    for flat in [true, false] {
        let plain = router(|c| c.flat_message = flat);
        let hashed = router(|c| {
            c.flat_message = flat;
            c.partitions_num = Some(3);
            c.partition_hash = Some("shop.orders:id".into());
        });
        assert!(plain.route(1, std::slice::from_ref(&garbage), 0).is_err(), "flat {flat}");
        assert!(hashed.route(1, std::slice::from_ref(&garbage), 0).is_err(), "flat {flat}");
        assert!(hashed.route(1, std::slice::from_ref(&bad_rc), 0).is_err(), "flat {flat}");
    }
    // Arbitrary bytes never panic (either outcome is fine: a flipped bit may still decode).
    let r = router(|c| {
        c.flat_message = false;
        c.partitions_num = Some(3);
        c.partition_hash = Some(".*\\..*:$pk$".into());
        c.dynamic_topic = Some(".*".into());
    });
    let good = insert("shop", "orders", &[("1", "a")]);
    for cut in 0..good.len() {
        let _ = r.route(1, &[good.slice(..cut)], 0);
        let mut flipped = good.to_vec();
        flipped[cut] ^= 0x80;
        let _ = r.route(1, &[Bytes::from(flipped)], 0);
    }
}

// ---------------------------------------------------------------- properties

/// One generated row: (schema index, table index, event, key, sequence number).
type GenRow = (usize, usize, EventType, u8, usize);

/// Rows seen in the output, per (schema, table, key): the (topic, partition) they were in and
/// their sequence numbers in output order.
type Seen = std::collections::BTreeMap<(String, String, String), (Vec<(String, i32)>, Vec<usize>)>;

fn collect_rows(out: &[MqRecord], flat: bool) -> Seen {
    let mut seen = Seen::default();
    let mut note = |db: &str, t: &str, id: String, seq: usize, rec: &MqRecord| {
        let slot = seen.entry((db.to_owned(), t.to_owned(), id)).or_default();
        let place = (rec.topic.clone(), rec.partition);
        if !slot.0.contains(&place) {
            slot.0.push(place);
        }
        slot.1.push(seq);
    };
    for rec in out {
        if flat {
            let j = json(rec);
            for d in j["data"].as_array().into_iter().flatten() {
                let seq: usize = d["v"].as_str().unwrap().parse().unwrap();
                note(
                    j["database"].as_str().unwrap(),
                    j["table"].as_str().unwrap(),
                    d["id"].as_str().unwrap().to_owned(),
                    seq,
                    rec,
                );
            }
        } else {
            let (_, _, entries) = packet(rec);
            for e in &entries {
                let h = e.header.as_ref().unwrap();
                for r in rows_of(e) {
                    let seq: usize = after_value(&r, "v").parse().unwrap();
                    note(h.schema_name(), h.table_name(), after_value(&r, "id"), seq, rec);
                }
            }
        }
    }
    seen
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever the rules, every row arrives exactly once, all rows of one key value share one
    /// topic and partition, and they arrive in binlog order.
    #[test]
    fn every_row_once_one_place_per_key_in_order(
        raw_rows in proptest::collection::vec((0usize..3, 0usize..3, 0usize..3, 0u8..12, 1usize..4), 1..60),
        flat in proptest::bool::ANY,
        partitions in 1u32..9,
        database_hash in proptest::bool::ANY,
        rule in 0usize..5,
        dynamic in proptest::bool::ANY,
    ) {
        const DBS: [&str; 3] = ["shop", "Bank", "logs"];
        const TABLES: [&str; 3] = ["orders", "items", "t"];
        // Group consecutive generated rows into entries of 1–3 rows of one table and event.
        let mut rows: Vec<GenRow> = Vec::new();
        let mut batch = Vec::new();
        let mut seq = 0;
        for (db, t, ev, key, n) in raw_rows {
            let et = [EventType::Insert, EventType::Update, EventType::Delete][ev];
            let mut cols = Vec::new();
            for k in 0..n {
                let id = key.wrapping_add(k as u8) % 12;
                rows.push((db, t, et, id, seq));
                cols.push(vec![col("id", Some(&id.to_string()), true), col("v", Some(&seq.to_string()), false)]);
                seq += 1;
            }
            batch.push(rows_entry(DBS[db], TABLES[t], et, cols));
        }
        let hash = [
            "shop.orders:id",
            ".*\\..*:$pk$",
            "shop\\..*:ID;bank.items",
            "logs.t:id^v",
            "nothing.here:id",
        ][rule];
        let r = router(|c| {
            c.flat_message = flat;
            c.partitions_num = Some(partitions);
            c.database_hash = database_hash;
            c.partition_hash = Some(hash.to_owned());
            if dynamic {
                c.dynamic_topic = Some("shop,bank\\..*,l:log.*".to_owned());
            }
        });
        let out = r.route(1, &batch, 0).unwrap();
        let seen = collect_rows(&out, flat);
        let mut total = 0;
        for ((db, t, id), (places, seqs)) in &seen {
            // `logs.t:id^v` hashes by the sequence too: one place per key only for the others.
            if rule != 3 {
                proptest::prop_assert_eq!(places.len(), 1, "{}.{} id {} in {:?}", db, t, id, places);
            }
            let want: Vec<usize> = rows
                .iter()
                .filter(|(d, tt, _, k, _)| DBS[*d] == db && TABLES[*tt] == t && k.to_string() == *id)
                .map(|r| r.4)
                .collect();
            if rule == 3 {
                // Spread over partitions: only the order within one partition is kept.
                let mut sorted = seqs.clone();
                sorted.sort_unstable();
                proptest::prop_assert_eq!(&sorted, &want, "{}.{} id {}", db, t, id);
            } else {
                proptest::prop_assert_eq!(seqs, &want, "{}.{} id {}", db, t, id);
            }
            total += seqs.len();
        }
        proptest::prop_assert_eq!(total, rows.len());
        for rec in &out {
            proptest::prop_assert!((rec.partition as u32) < partitions);
        }
    }
}

// ---------------------------------------------------------------- FlatMessage writer vs flat.rs

pub(crate) fn arb_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just(String::new()),
        "[a-z0-9_]{1,6}",
        Just("q\"uote\\back/slash".to_owned()),
        Just("ctl\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}".to_owned()),
        Just("\u{4e2d}\u{6587} caf\u{e9} \u{1F600}".to_owned()),
    ]
}

pub(crate) fn arb_column() -> impl proptest::strategy::Strategy<Value = Column> {
    use proptest::prelude::*;
    (
        prop::sample::select(vec!["id", "v", "Name", "\u{fc}\"x", "id2"]),
        proptest::option::of(-10i32..100),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(arb_text()),
        proptest::option::of(prop::sample::select(vec!["int(11)", "varchar(3)", ""])),
    )
        .prop_map(|(name, sql_type, is_key, updated, is_null, value, mysql_type)| Column {
            index: Some(0),
            sql_type,
            name: Some(name.to_owned()),
            is_key,
            updated,
            is_null,
            value,
            mysql_type: mysql_type.map(str::to_owned),
            ..Default::default()
        })
}

pub(crate) fn arb_row() -> impl proptest::strategy::Strategy<Value = RowData> {
    use proptest::prelude::*;
    (proptest::collection::vec(arb_column(), 0..4), proptest::collection::vec(arb_column(), 0..4))
        .prop_map(|(before_columns, after_columns)| RowData {
            before_columns,
            after_columns,
            ..Default::default()
        })
}

fn arb_entry() -> impl proptest::strategy::Strategy<Value = Entry> {
    use proptest::prelude::*;
    let row = arb_row();
    let rc = (
        proptest::option::of(prop::sample::select(vec![0i32, 1, 2, 3, 4, 7, 99])),
        proptest::option::of(any::<bool>()),
        proptest::option::of(arb_text()),
        proptest::collection::vec(row, 0..5),
    )
        .prop_map(|(event_type, is_ddl, sql, row_datas)| RowChange {
            table_id: Some(1),
            event_type,
            is_ddl,
            sql,
            row_datas,
            ..Default::default()
        });
    let header = (
        arb_text(),
        arb_text(),
        proptest::option::of(any::<i64>()),
        proptest::option::of(arb_text()),
        proptest::option::of(prop::sample::select(vec![1i32, 2, 3, 5])),
    )
        .prop_map(|(schema, table, execute_time, gtid, event_type)| Header {
            schema_name: Some(schema),
            table_name: Some(table),
            execute_time,
            gtid,
            event_type,
            ..Default::default()
        });
    (proptest::option::of(header), rc).prop_map(|(header, rc)| Entry {
        header,
        entry_type: Some(EntryType::Rowdata as i32),
        store_value: Some(rc.encode_to_vec().into()),
    })
}

/// sqlType, isKey, updated, isNull, value, mysqlType.
type UsualCell = (i32, bool, bool, bool, Option<String>, &'static str);

/// Rows of one layout (distinct names, every Column field set: the layout canal-rs and Canal
/// write, read by the fast paths), now and then a row of another shape, as UPDATEs, INSERTs or
/// DELETEs.
fn arb_usual_entry() -> impl proptest::strategy::Strategy<Value = Entry> {
    use proptest::prelude::*;
    let names = proptest::sample::subsequence(vec!["id", "v", "Name", "\u{fc}\"x", "id2"], 1..5)
        .prop_shuffle();
    let image = || {
        let cell = (
            -10i32..100,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(arb_text()),
            prop::sample::select(vec!["int(11)", "varchar(3)", ""]),
        );
        proptest::collection::vec(cell, 5)
    };
    let row = (image(), image(), proptest::option::of(arb_row()), 0..6u8);
    (names, proptest::collection::vec(row, 1..6), prop::sample::select(vec![1i32, 2, 3])).prop_map(
        |(names, rows, event_type)| {
            let columns = |cells: &[UsualCell]| {
                names
                    .iter()
                    .zip(cells)
                    .enumerate()
                    .map(|(i, (n, (t, key, upd, null, v, mt)))| Column {
                        index: Some(i as i32),
                        sql_type: Some(*t),
                        name: Some((*n).to_owned()),
                        is_key: Some(*key),
                        updated: Some(*upd),
                        is_null: Some(*null),
                        value: v.clone(),
                        mysql_type: Some((*mt).to_owned()),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>()
            };
            let row_datas = rows
                .into_iter()
                .map(|(before, after, other, pick)| match other {
                    Some(other) if pick == 0 => other,
                    _ => RowData {
                        before_columns: if event_type == 1 { vec![] } else { columns(&before) },
                        after_columns: if event_type == 3 { vec![] } else { columns(&after) },
                        ..Default::default()
                    },
                })
                .collect();
            let rc = RowChange {
                table_id: Some(1),
                event_type: Some(event_type),
                row_datas,
                ..Default::default()
            };
            Entry {
                header: Some(Header {
                    schema_name: Some("db".into()),
                    table_name: Some("t".into()),
                    ..Default::default()
                }),
                entry_type: Some(EntryType::Rowdata as i32),
                store_value: Some(rc.encode_to_vec().into()),
            }
        },
    )
}

/// The MQ path's FlatMessage bytes equal flat.rs + serde_json's, whole and split by partition
/// (against the FlatMessage-based reference split).
fn check_flat_json(
    entry: &Entry,
    id: i64,
    ts: i64,
    partitions: u32,
    database_hash: bool,
    rule: usize,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let bytes = entry.encode_to_vec();
    let view = wire::entry_view(&bytes).unwrap();
    let rcv = wire::row_change_view(view.store_value).unwrap();
    let mut fast = FlatRows::new();
    // A reused message must not keep anything of the previous entry.
    let other = insert("x", "y", &[("1", "a"), ("2", "b")]);
    let ov = wire::entry_view(&other).unwrap();
    let orc = wire::row_change_view(ov.store_value).unwrap();
    fast.parse(&ov, &orc).unwrap();
    fast.parse(&view, &rcv).unwrap();
    let rc = RowChange::decode(entry.store_value()).unwrap();
    let mut old_rows = Vec::new();
    let reference =
        FlatMessage::from_decoded_with_old_rows(entry, &rc, id, ts, &mut old_rows).unwrap();
    proptest::prop_assert_eq!(
        String::from_utf8(fast.json(id, ts)).unwrap(),
        serde_json::to_string(&reference).unwrap()
    );
    let mode = [
        HashMode::Columns(vec!["id".into()]),
        HashMode::PrimaryKey,
        HashMode::Columns(vec!["v".into(), "Name".into(), "id".into()]),
        HashMode::Table,
    ];
    let want: Vec<(u32, String)> =
        split_flat(reference, &old_rows, Some(&mode[rule]), partitions, database_hash)
            .into_iter()
            .map(|(p, f)| (p, serde_json::to_string(&f).unwrap()))
            .collect();
    let got: Vec<(u32, String)> =
        match flat_partitions(&fast, Some(&mode[rule]), partitions, database_hash).unwrap() {
            FlatParts::Whole(p) => vec![(p, String::from_utf8(fast.json(id, ts)).unwrap())],
            FlatParts::Rows(parts) => {
                let mut ps = parts.clone();
                ps.sort_unstable();
                ps.dedup();
                ps.into_iter()
                    .map(|p| {
                        let json = fast.json_of(id, ts, &mut |r| parts[r] == p);
                        (p, String::from_utf8(json).unwrap())
                    })
                    .collect()
            }
        };
    proptest::prop_assert_eq!(got, want);
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Any RowData entry.
    #[test]
    fn flat_json_equals_flat_message(
        entry in arb_entry(),
        id in proptest::prelude::any::<i64>(),
        ts in proptest::prelude::any::<i64>(),
        partitions in 1u32..6,
        database_hash in proptest::bool::ANY,
        rule in 0usize..4,
    ) {
        check_flat_json(&entry, id, ts, partitions, database_hash, rule)?;
    }

    /// Entries whose rows mostly share one layout (the fast paths of `FlatRows::parse`).
    #[test]
    fn flat_json_equals_flat_message_on_usual_layouts(
        entry in arb_usual_entry(),
        id in proptest::prelude::any::<i64>(),
        partitions in 1u32..6,
        database_hash in proptest::bool::ANY,
        rule in 0usize..4,
    ) {
        check_flat_json(&entry, id, 7, partitions, database_hash, rule)?;
    }
}
