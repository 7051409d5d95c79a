//! The in-place printers against the owned-struct forms: [`write_entry_json`] against prost +
//! a serde_json map (what `canal-server decode --format entry` printed before), over arbitrary
//! entries of every type.

use prost::Message as _;
use serde_json::{Map, Value, json};

use super::*;
use crate::mq::tests::{arb_row, arb_text};
use crate::protocol::entry::{
    Column, Entry, Header, Pair, RowChange, TransactionBegin, TransactionEnd,
};

fn pairs(ps: &[Pair]) -> Value {
    Value::Array(ps.iter().map(|p| json!({"key": p.key(), "value": p.value()})).collect())
}

fn header_json(h: &Header) -> Value {
    let mut m = Map::new();
    m.insert("version".into(), json!(h.version()));
    m.insert("logfileName".into(), json!(h.logfile_name()));
    m.insert("logfileOffset".into(), json!(h.logfile_offset()));
    m.insert("serverId".into(), json!(h.server_id()));
    m.insert("serverenCode".into(), json!(h.serveren_code()));
    m.insert("executeTime".into(), json!(h.execute_time()));
    m.insert("sourceType".into(), json!(h.source_type().as_str_name()));
    m.insert("schemaName".into(), json!(h.schema_name()));
    m.insert("tableName".into(), json!(h.table_name()));
    m.insert("eventLength".into(), json!(h.event_length()));
    if h.event_type.is_some() {
        m.insert("eventType".into(), json!(h.event_type().as_str_name()));
    }
    if !h.props.is_empty() {
        m.insert("props".into(), pairs(&h.props));
    }
    if let Some(g) = &h.gtid {
        m.insert("gtid".into(), json!(g));
    }
    Value::Object(m)
}

fn column_json(c: &Column) -> Value {
    let mut m = Map::new();
    m.insert("index".into(), json!(c.index()));
    m.insert("sqlType".into(), json!(c.sql_type()));
    m.insert("name".into(), json!(c.name()));
    m.insert("isKey".into(), json!(c.is_key()));
    m.insert("updated".into(), json!(c.updated()));
    m.insert("isNull".into(), json!(c.is_null()));
    if c.value.is_some() {
        m.insert("value".into(), json!(c.value()));
    }
    if c.mysql_type.is_some() {
        m.insert("mysqlType".into(), json!(c.mysql_type()));
    }
    Value::Object(m)
}

/// The reference: the entry decoded with prost, then a serde_json map (sorted keys).
fn entry_json_reference(e: &Entry) -> Value {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&e.header.clone().unwrap_or_default()));
    m.insert("entryType".into(), json!(e.entry_type().as_str_name()));
    let store = e.store_value();
    let value = match e.entry_type() {
        EntryType::Transactionbegin => {
            let b = TransactionBegin::decode(store).unwrap();
            json!({"threadId": b.thread_id(), "props": pairs(&b.props)})
        }
        EntryType::Transactionend => {
            let t = TransactionEnd::decode(store).unwrap();
            json!({"transactionId": t.transaction_id(), "props": pairs(&t.props)})
        }
        _ => {
            let rc = RowChange::decode(store).unwrap();
            let rows: Vec<Value> = rc
                .row_datas
                .iter()
                .map(|r| {
                    json!({
                        "beforeColumns": r.before_columns.iter().map(column_json).collect::<Vec<_>>(),
                        "afterColumns": r.after_columns.iter().map(column_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut m = Map::new();
            if rc.table_id.is_some() {
                m.insert("tableId".into(), json!(rc.table_id()));
            }
            m.insert("eventType".into(), json!(rc.event_type().as_str_name()));
            m.insert("isDdl".into(), json!(rc.is_ddl()));
            if rc.sql.is_some() {
                m.insert("sql".into(), json!(rc.sql()));
            }
            if rc.ddl_schema_name.is_some() {
                m.insert("ddlSchemaName".into(), json!(rc.ddl_schema_name()));
            }
            if !rc.props.is_empty() {
                m.insert("props".into(), pairs(&rc.props));
            }
            m.insert("rowDatas".into(), Value::Array(rows));
            Value::Object(m)
        }
    };
    m.insert("storeValue".into(), value);
    Value::Object(m)
}

fn arb_pairs() -> impl proptest::strategy::Strategy<Value = Vec<Pair>> {
    use proptest::prelude::*;
    proptest::collection::vec(
        (proptest::option::of(arb_text()), proptest::option::of(arb_text()))
            .prop_map(|(key, value)| Pair { key, value }),
        0..3,
    )
}

fn arb_any_entry() -> impl proptest::strategy::Strategy<Value = Entry> {
    use proptest::prelude::*;
    let row = arb_row();
    let rc = (
        proptest::option::of(any::<i64>()),
        proptest::option::of(prop::sample::select(vec![0i32, 1, 2, 3, 4, 7, 99])),
        proptest::option::of(any::<bool>()),
        proptest::option::of(arb_text()),
        proptest::collection::vec(row, 0..4),
        arb_pairs(),
        proptest::option::of(arb_text()),
    )
        .prop_map(|(table_id, event_type, is_ddl, sql, row_datas, props, ddl_schema_name)| {
            RowChange { table_id, event_type, is_ddl, sql, row_datas, props, ddl_schema_name }
                .encode_to_vec()
        });
    let begin = (proptest::option::of(any::<i64>()), arb_pairs(), proptest::option::of(arb_text()))
        .prop_map(|(thread_id, props, transaction_id)| {
            TransactionBegin { execute_time: Some(1), transaction_id, props, thread_id }
                .encode_to_vec()
        });
    let end =
        (arb_pairs(), proptest::option::of(arb_text())).prop_map(|(props, transaction_id)| {
            TransactionEnd { execute_time: None, transaction_id, props }.encode_to_vec()
        });
    let header = (
        (
            proptest::option::of(-3i32..3),
            proptest::option::of(arb_text()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(arb_text()),
            proptest::option::of(any::<i64>()),
        ),
        (
            proptest::option::of(prop::sample::select(vec![0i32, 1, 2, 3, 9])),
            proptest::option::of(arb_text()),
            proptest::option::of(arb_text()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(prop::sample::select(vec![0i32, 1, 2, 5, 15, 99])),
            arb_pairs(),
            proptest::option::of(arb_text()),
        ),
    )
        .prop_map(
            |(
                (version, logfile_name, logfile_offset, server_id, serveren_code, execute_time),
                (source_type, schema_name, table_name, event_length, event_type, props, gtid),
            )| Header {
                version,
                logfile_name,
                logfile_offset,
                server_id,
                serveren_code,
                execute_time,
                source_type,
                schema_name,
                table_name,
                event_length,
                event_type,
                props,
                gtid,
            },
        );
    let entry_type = proptest::option::of(prop::sample::select(vec![0i32, 1, 2, 3, 4, 5, 42]));
    (proptest::option::of(header), entry_type, rc, begin, end).prop_map(
        |(header, entry_type, rc, begin, end)| {
            let t = Entry { entry_type, ..Default::default() }.entry_type();
            let store = match t {
                EntryType::Transactionbegin => begin,
                EntryType::Transactionend => end,
                _ => rc,
            };
            Entry { header, entry_type, store_value: Some(store.into()) }
        },
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// `write_entry_json` writes what prost + serde_json write, for every entry type, absent
    /// and present optional fields, unknown enum numbers and text needing escapes.
    #[test]
    fn entry_json_equals_serde(entry in arb_any_entry()) {
        let bytes = entry.encode_to_vec();
        let mut out = b"prefix".to_vec();
        write_entry_json(&mut out, &bytes).unwrap();
        let want = serde_json::to_string(&entry_json_reference(&entry)).unwrap();
        proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), format!("prefix{want}"));
    }
}

#[test]
fn malformed_entries_are_errors() {
    let mut out = Vec::new();
    for bad in [&b"\x0a\x05ab"[..], b"\x1a\x02\x62\x05", b"\x0a\x02\x12\x01", b"\xff"] {
        assert!(write_entry_json(&mut out, bad).is_err(), "{bad:?}");
        let mut flat = FlatRows::new();
        assert!(flat.parse_entry(bad).is_err(), "{bad:?}");
    }
}

proptest::proptest! {
    /// The word-at-a-time string writer escapes as serde_json does, at every offset.
    #[test]
    fn write_str_equals_serde(s in "(\\PC|[\\x00-\\x1f\"\\\\\u{7f}\u{80}\u{ff}]){0,40}") {
        let mut out = Vec::new();
        write_str(&mut out, &s);
        proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

    /// A Column read in place is what prost decodes, whether its fields are all set (the layout
    /// read straight through), some absent, or followed by bytes of another shape (read field by
    /// field).
    #[test]
    fn column_view_equals_prost(
        c in crate::mq::tests::arb_column(),
        fill in proptest::bool::ANY,
        sql_type in -1_000_000i32..1_000_000,
        index in 0i32..100_000,
        tail in proptest::collection::vec(proptest::num::u8::ANY, 0..3),
    ) {
        let mut c = c;
        if fill {
            c.index = Some(index);
            c.sql_type = Some(sql_type);
            c.is_key = Some(c.is_key());
            c.updated = Some(c.updated());
            c.is_null = Some(c.is_null());
        }
        let mut bytes = c.encode_to_vec();
        bytes.extend_from_slice(&tail);
        // The straight-through reading and the field-by-field one agree on every input.
        match (wire::RawColumn::parse(&bytes), wire::RawColumn::parse_any(&bytes)) {
            (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
            (a, b) => proptest::prop_assert!(a.is_err() && b.is_err(), "{a:?} vs {b:?}"),
        }
        if let Ok(want) = Column::decode(&bytes[..]) {
            {
                let got = ColumnView::parse(&bytes).unwrap();
                proptest::prop_assert_eq!(got.index, want.index());
                proptest::prop_assert_eq!(got.sql_type, want.sql_type());
                proptest::prop_assert_eq!(got.name, want.name());
                proptest::prop_assert_eq!(got.is_key, want.is_key());
                proptest::prop_assert_eq!(got.updated, want.updated());
                proptest::prop_assert_eq!(got.is_null, want.is_null());
                proptest::prop_assert_eq!(got.value, want.value());
                proptest::prop_assert_eq!(got.mysql_type, want.mysql_type());
            }
        }
    }
}

/// An unknown group field (deprecated wire types 3/4) is stepped over as prost skips it, its
/// inner fields never read as the message's; unmatched group keys are errors, as for prost.
#[test]
fn unknown_groups_are_skipped_as_prost_does() {
    let c = Column { index: Some(3), name: Some("id".into()), ..Default::default() };
    // Group 15 holding field 1 = 9 (would be `index` if read as the column's) and a nested group.
    let group = [0x7b, 0x08, 0x09, 0x83, 0x01, 0x10, 0x02, 0x84, 0x01, 0x7c];
    let mut bytes = c.encode_to_vec();
    bytes.extend_from_slice(&group);
    let want = Column::decode(&bytes[..]).unwrap();
    let got = ColumnView::parse(&bytes).unwrap();
    assert_eq!((got.index, got.name), (want.index(), want.name()));
    assert_eq!(got.index, 3);
    let raw = wire::RawColumn::parse_any(&bytes).unwrap();
    assert_eq!(wire::RawColumn::parse(&bytes).unwrap(), raw);
    // The same group inside a RowData: skipped, the columns read.
    let mut row = Vec::new();
    row.push(0x12);
    row.push(c.encode_to_vec().len() as u8);
    row.extend_from_slice(&c.encode_to_vec());
    row.extend_from_slice(&group);
    let cols: Vec<_> = columns(&row, Image::After).collect::<Result<_, _>>().unwrap();
    assert_eq!(cols.len(), 1);
    // An end group of another group, an end group alone, a group never closed: errors.
    for bad in [&[0x7b, 0x84, 0x01][..], &[0x7c], &[0x7b, 0x08, 0x01]] {
        let mut b = c.encode_to_vec();
        b.extend_from_slice(bad);
        assert!(Column::decode(&b[..]).is_err(), "{bad:?}");
        assert!(ColumnView::parse(&b).is_err(), "{bad:?}");
    }
}
