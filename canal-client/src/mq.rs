//! Reading what Canal's MQ mode publishes (Kafka, RabbitMQ), broker-independent: a record's bytes
//! back into [`Entry`]s.
//!
//! Canal's MQ producers write one of two formats (docs/client.md, "Consuming MQ topics"):
//!
//! * **FlatMessage** JSON (`canal.mq.flatMessage = true`): one record per ROWDATA entry.
//!   [`parse_flat_message`] reads it and [`flat_to_entry`] turns it back into an [`Entry`]
//!   carrying a [`RowChange`], so code written against the TCP client's [`Message`] handles it.
//! * **protobuf** (`flatMessage = false`): one record per batch, the bytes of
//!   `Packet{version=1, type=MESSAGES, body=Messages{messages=[serialized Entry…]}}`, read by
//!   [`decode_packet`].
//!
//! [`decode_record`] takes either (or detects which: a FlatMessage is a JSON object, so it starts
//! with `{`, a byte no `Packet` can start with).
//!
//! # What a FlatMessage cannot carry
//!
//! A FlatMessage is a lossy view of its entry; the entry rebuilt from it has:
//!
//! * no binlog position: `logfileName`, `logfileOffset`, `serverId`, `serverenCode`,
//!   `eventLength` and the header's `props` (`rowsCount`, `curtGtid`…) are unset; only the
//!   header's schema, table, event type, `executeTime` (`es`) and `gtid` come back;
//! * no transaction boundaries: TRANSACTIONBEGIN/END entries are not published in this format;
//! * per column: `index` is the column's place in the record's `data` map (the table ordinal
//!   when the row image is full), `length` and `props` are unset, and `sqlType`/`mysqlType` are
//!   the entry-wide maps' values (Canal keeps one type per column name, the last row's, so a
//!   value-dependent type such as an unsigned INT promoted to BIGINT is the same on every row);
//! * `isKey` from `pkNames` (taken from the entry's first row), `updated` from `old`: INSERT
//!   columns are all updated, DELETE columns none, UPDATE after-columns those named in the row's
//!   `old` map. Canal accumulates that set across the rows of one entry, so on a multi-row
//!   UPDATE a later row may name a column that it did not change (its old and new values are
//!   then equal); Canal also leaves out empty `old` maps, which (the set only grows) can only be
//!   the first rows', so `old` is matched to the last rows of `data`;
//! * the UPDATE before image is the after image with the `old` values put back: exact for full
//!   row images (`binlog_row_image=FULL`), not for minimal ones;
//! * RowChange `tableId`, `props` and a DDL's `ddlSchemaName` are unset; the record's `id`
//!   (Canal's batch id) and `ts` (when it was built) are not part of the entry.
//!
//! [`Message`]: crate::Message

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use canal_core::flat::{FlatMessage, OrderedMap};
use canal_core::protocol::entry::{
    Column, Entry, EntryType, EventType, Header, RowChange, RowData, Type,
};
use canal_core::protocol::packet::{Compression, Messages, Packet, PacketType};
use prost::Message as _;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

/// The format of an MQ record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RecordFormat {
    /// Detect per record: JSON object → FlatMessage, otherwise protobuf packet.
    #[default]
    Auto,
    /// FlatMessage JSON (`canal.mq.flatMessage = true`).
    Flat,
    /// The protobuf `Packet` of a batch (`canal.mq.flatMessage = false`).
    Protobuf,
}

impl std::str::FromStr for RecordFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "flat" | "json" | "flatmessage" => Ok(Self::Flat),
            "protobuf" | "proto" | "binary" => Ok(Self::Protobuf),
            _ => Err(format!("unknown record format {s:?} (auto, flat, protobuf)")),
        }
    }
}

impl fmt::Display for RecordFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Flat => "flat",
            Self::Protobuf => "protobuf",
        })
    }
}

/// Why a record is not a Canal MQ message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record has no payload (a tombstone).
    #[error("the record has no payload")]
    Empty,
    /// Auto-detection: the bytes are neither a JSON object nor a `Packet`.
    #[error("neither a FlatMessage nor a protobuf packet: {0}")]
    Unrecognised(prost::DecodeError),
    /// The bytes are not a JSON FlatMessage (not JSON, not an object, a field of the wrong type,
    /// no `type`).
    #[error("not a FlatMessage: {0}")]
    Json(#[from] serde_json::Error),
    /// The FlatMessage parses but describes no entry Canal writes.
    #[error("inconsistent FlatMessage: {0}")]
    Flat(String),
    /// The bytes are not a protobuf `Packet`.
    #[error("not a protobuf packet: {0}")]
    Packet(prost::DecodeError),
    /// The MESSAGES packet's body is not a `Messages`.
    #[error("the MESSAGES packet's body does not decode: {0}")]
    Body(prost::DecodeError),
    /// The packet is not a MESSAGES packet.
    #[error("packet type {0} is not MESSAGES")]
    PacketType(i32),
    /// The packet's body is compressed with something the client does not implement (Java
    /// accepts only NONE and the proto2 placeholder).
    #[error("packet uses unsupported compression {0}")]
    Compression(i32),
    /// An entry of the packet does not decode.
    #[error("entry {index} of the packet does not decode: {source}")]
    Entry {
        /// Its index in `Messages.messages`.
        index: usize,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
}

/// What one record decoded to.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedRecord {
    /// The format it was in.
    pub format: RecordFormat,
    /// Canal's batch id: the FlatMessage's `id`, or the packet's `Messages.batchId` (set when
    /// the server sent the batch whole, 0 after a split by topic or partition).
    pub batch_id: i64,
    /// The entries, decoded.
    pub entries: Vec<Entry>,
    /// The entries' bytes: as published (protobuf) or as re-encoded here (FlatMessage).
    pub raw: Vec<Bytes>,
}

/// Decodes one record's payload in `format` ([`RecordFormat::Auto`]: a payload starting with
/// `{` is a FlatMessage, anything else a packet).
///
/// # Errors
/// [`RecordError`] naming what is wrong; never panics.
pub fn decode_record(payload: &[u8], format: RecordFormat) -> Result<DecodedRecord, RecordError> {
    if payload.is_empty() {
        return Err(RecordError::Empty);
    }
    let format = match format {
        RecordFormat::Auto if payload[0] == b'{' => RecordFormat::Flat,
        RecordFormat::Auto => {
            return decode_packet(payload).map_err(|e| match e {
                RecordError::Packet(e) => RecordError::Unrecognised(e),
                e => e,
            });
        }
        f => f,
    };
    if format == RecordFormat::Protobuf {
        return decode_packet(payload);
    }
    let flat = parse_flat_message(payload)?;
    let entry = flat_to_entry(&flat)?;
    let raw = Bytes::from(entry.encode_to_vec());
    Ok(DecodedRecord {
        format: RecordFormat::Flat,
        batch_id: flat.id,
        entries: vec![entry],
        raw: vec![raw],
    })
}

/// Decodes a protobuf MESSAGES packet (`flatMessage = false`) into its entries, as Java's
/// `CanalMessageDeserializer`.
///
/// # Errors
/// [`RecordError::Packet`], [`RecordError::PacketType`], [`RecordError::Compression`],
/// [`RecordError::Body`], [`RecordError::Entry`].
pub fn decode_packet(payload: &[u8]) -> Result<DecodedRecord, RecordError> {
    let packet = Packet::decode(payload).map_err(RecordError::Packet)?;
    if packet.r#type != PacketType::Messages as i32 {
        return Err(RecordError::PacketType(packet.r#type));
    }
    let compression = packet.compression.unwrap_or(0);
    if compression != Compression::Unspecified as i32 && compression != Compression::None as i32 {
        return Err(RecordError::Compression(compression));
    }
    let messages = Messages::decode(packet.body).map_err(RecordError::Body)?;
    let entries = messages
        .messages
        .iter()
        .enumerate()
        .map(|(index, b)| {
            Entry::decode(b.clone()).map_err(|source| RecordError::Entry { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedRecord {
        format: RecordFormat::Protobuf,
        batch_id: messages.batch_id,
        entries,
        raw: messages.messages,
    })
}

/// Parses FlatMessage JSON as Canal's producers write it (fields in any order, unknown fields
/// ignored, `null` for absent strings and numbers accepted as Java's fastjson does, numbers and
/// booleans in `data`/`old` taken as their text). Column maps keep their order.
///
/// # Errors
/// [`RecordError::Json`] for anything that is not such an object (`type` is required).
pub fn parse_flat_message(json: &[u8]) -> Result<FlatMessage, RecordError> {
    let w: WireFlat = serde_json::from_slice(json)?;
    Ok(FlatMessage {
        id: w.id.unwrap_or(0),
        database: w.database.unwrap_or_default(),
        table: w.table.unwrap_or_default(),
        pk_names: w.pk_names,
        is_ddl: w.is_ddl.unwrap_or(false),
        kind: w.kind,
        es: w.es.unwrap_or(0),
        ts: w.ts.unwrap_or(0),
        sql: w.sql.unwrap_or_default(),
        sql_type: w.sql_type.map(|m| OrderedMap(m.0)),
        mysql_type: w.mysql_type.map(|m| OrderedMap(m.0)),
        data: w.data.map(|rows| rows.into_iter().map(text_row).collect()),
        old: w.old.map(|rows| rows.into_iter().map(text_row).collect()),
        gtid: w.gtid.unwrap_or_default(),
    })
}

/// The entry a FlatMessage was built from, as far as it carries it (see the module docs for
/// what it cannot).
///
/// # Errors
/// [`RecordError::Flat`] for a `type` Canal does not have, rows on an event that has none (DDL,
/// QUERY…), or more `old` maps than `data` rows.
pub fn flat_to_entry(f: &FlatMessage) -> Result<Entry, RecordError> {
    let event_type = EventType::from_str_name(&f.kind)
        .ok_or_else(|| RecordError::Flat(format!("unknown type {:?}", f.kind)))?;
    let data = f.data.as_deref().unwrap_or_default();
    let old = f.old.as_deref().unwrap_or_default();
    let is_rows = matches!(event_type, EventType::Insert | EventType::Update | EventType::Delete);
    if !data.is_empty() && (f.is_ddl || !is_rows) {
        return Err(RecordError::Flat(format!(
            "{} {} has row data",
            f.kind,
            if f.is_ddl { "DDL" } else { "event" }
        )));
    }
    if !old.is_empty() && event_type != EventType::Update {
        return Err(RecordError::Flat(format!("{} has `old` values", f.kind)));
    }
    if old.len() > data.len() {
        return Err(RecordError::Flat(format!(
            "{} `old` maps for {} `data` rows",
            old.len(),
            data.len()
        )));
    }
    let pk: &[String] = f.pk_names.as_deref().unwrap_or_default();
    let column = |index: usize, name: &str, value: &Option<String>, updated: bool| Column {
        index: Some(i32::try_from(index).unwrap_or(i32::MAX)),
        sql_type: f.sql_type.as_ref().and_then(|m| m.get(name)).copied(),
        name: Some(name.to_owned()),
        is_key: Some(pk.iter().any(|k| k == name)),
        updated: Some(updated),
        is_null: Some(value.is_none()),
        props: vec![],
        value: value.clone(),
        length: None,
        mysql_type: f
            .mysql_type
            .as_ref()
            .and_then(|m| m.get(name))
            .filter(|t| !t.is_empty())
            .cloned(),
    };
    // Canal drops empty `old` maps; they can only be the first rows' (see the module docs).
    let old_offset = data.len() - old.len();
    let row_datas = data
        .iter()
        .enumerate()
        .map(|(i, row)| match event_type {
            EventType::Insert => RowData {
                after_columns: row
                    .0
                    .iter()
                    .enumerate()
                    .map(|(j, (name, v))| column(j, name, v, true))
                    .collect(),
                ..RowData::default()
            },
            EventType::Delete => RowData {
                before_columns: row
                    .0
                    .iter()
                    .enumerate()
                    .map(|(j, (name, v))| column(j, name, v, false))
                    .collect(),
                ..RowData::default()
            },
            _ => {
                let changed = i.checked_sub(old_offset).map(|k| &old[k]);
                let before = row
                    .0
                    .iter()
                    .enumerate()
                    .map(|(j, (name, v))| {
                        column(j, name, changed.and_then(|o| o.get(name)).unwrap_or(v), false)
                    })
                    .collect();
                let after = row
                    .0
                    .iter()
                    .enumerate()
                    .map(|(j, (name, v))| {
                        column(j, name, v, changed.is_some_and(|o| o.get(name).is_some()))
                    })
                    .collect();
                RowData { before_columns: before, after_columns: after, props: vec![] }
            }
        })
        .collect();
    let rc = RowChange {
        table_id: None,
        event_type: Some(event_type as i32),
        is_ddl: Some(f.is_ddl),
        sql: (!f.sql.is_empty()).then(|| f.sql.clone()),
        row_datas,
        props: vec![],
        ddl_schema_name: None,
    };
    Ok(Entry {
        header: Some(Header {
            version: Some(1),
            source_type: Some(Type::Mysql as i32),
            execute_time: Some(f.es),
            schema_name: Some(f.database.clone()),
            table_name: Some(f.table.clone()),
            event_type: Some(event_type as i32),
            gtid: (!f.gtid.is_empty()).then(|| f.gtid.clone()),
            ..Header::default()
        }),
        entry_type: Some(EntryType::Rowdata as i32),
        store_value: Some(rc.encode_to_vec().into()),
    })
}

/// FlatMessage as it may arrive (Java writes `null` for unset boxed fields).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFlat {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    pk_names: Option<Vec<String>>,
    #[serde(default)]
    is_ddl: Option<bool>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    es: Option<i64>,
    #[serde(default)]
    ts: Option<i64>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    sql_type: Option<Ordered<i32>>,
    #[serde(default)]
    mysql_type: Option<Ordered<String>>,
    #[serde(default)]
    data: Option<Vec<Ordered<Option<Text>>>>,
    #[serde(default)]
    old: Option<Vec<Ordered<Option<Text>>>>,
    #[serde(default)]
    gtid: Option<String>,
}

/// A JSON object read in document order (a later duplicate key replaces the value in place, as
/// a Java LinkedHashMap does).
struct Ordered<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered<V>, A::Error> {
                let mut m = OrderedMap(Vec::with_capacity(a.size_hint().unwrap_or(0)));
                while let Some((k, v)) = a.next_entry::<String, V>()? {
                    m.put(&k, v);
                }
                Ok(Ordered(m.0))
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

/// A column value: a string, or a number or boolean taken as its JSON text.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Text(s)),
            v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                Ok(Text(v.to_string()))
            }
            v => Err(serde::de::Error::custom(format!(
                "a column value must be a string, number, boolean or null, not {v}"
            ))),
        }
    }
}

/// A `data`/`old` row with its values as text.
fn text_row(row: Ordered<Option<Text>>) -> OrderedMap<Option<String>> {
    OrderedMap(row.0.into_iter().map(|(k, v)| (k, v.map(|t| t.0))).collect())
}

#[cfg(test)]
mod tests {
    use canal_core::mq::{Router, RoutingConfig};

    use super::*;

    fn col(i: i32, name: &str, v: Option<&str>, key: bool, updated: bool) -> Column {
        Column {
            index: Some(i),
            sql_type: Some(if i == 0 { 4 } else { 12 }),
            name: Some(name.into()),
            is_key: Some(key),
            updated: Some(updated),
            is_null: Some(v.is_none()),
            value: v.map(Into::into),
            mysql_type: Some(if i == 0 { "int(11)" } else { "varchar(20)" }.into()),
            ..Column::default()
        }
    }

    fn entry(et: EventType, rows: Vec<RowData>, ddl: Option<&str>) -> Entry {
        let rc = RowChange {
            event_type: Some(et as i32),
            is_ddl: Some(ddl.is_some()),
            sql: ddl.map(Into::into),
            row_datas: rows,
            ..RowChange::default()
        };
        Entry {
            header: Some(Header {
                version: Some(1),
                logfile_name: Some("bin.000003".into()),
                logfile_offset: Some(4711),
                server_id: Some(1),
                schema_name: Some("shop".into()),
                table_name: Some("t".into()),
                execute_time: Some(1_700_000_000_000),
                event_type: Some(et as i32),
                gtid: Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".into()),
                ..Header::default()
            }),
            entry_type: Some(EntryType::Rowdata as i32),
            store_value: Some(rc.encode_to_vec().into()),
        }
    }

    fn json(e: &Entry) -> String {
        FlatMessage::from_entry(e, 9, 10).unwrap().unwrap().to_json()
    }

    /// Entry → FlatMessage → JSON → Entry → FlatMessage gives the same JSON.
    fn round_trip(e: &Entry) -> Entry {
        let text = json(e);
        let back = decode_record(text.as_bytes(), RecordFormat::Auto).unwrap();
        assert_eq!((back.format, back.batch_id, back.entries.len()), (RecordFormat::Flat, 9, 1));
        assert_eq!(Entry::decode(back.raw[0].clone()).unwrap(), back.entries[0]);
        assert_eq!(json(&back.entries[0]), text);
        back.entries.into_iter().next().unwrap()
    }

    fn rows(e: &Entry) -> Vec<RowData> {
        RowChange::decode(e.store_value()).unwrap().row_datas
    }

    #[test]
    fn insert_and_delete_come_back_with_canal_column_semantics() {
        let ins = entry(
            EventType::Insert,
            vec![RowData {
                after_columns: vec![
                    col(0, "id", Some("1"), true, true),
                    col(1, "v", None, false, true),
                ],
                ..RowData::default()
            }],
            None,
        );
        let back = round_trip(&ins);
        assert_eq!(rows(&back), rows(&ins), "an INSERT of a full row comes back whole");
        let h = back.header.as_ref().unwrap();
        assert_eq!(
            (h.schema_name(), h.table_name(), h.event_type()),
            ("shop", "t", EventType::Insert)
        );
        assert_eq!(h.execute_time(), 1_700_000_000_000);
        assert_eq!(h.gtid(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5");
        assert_eq!((h.logfile_name(), h.logfile_offset()), ("", 0), "positions are not carried");

        let del = entry(
            EventType::Delete,
            vec![RowData {
                before_columns: vec![
                    col(0, "id", Some("2"), true, false),
                    col(1, "v", Some("x y"), false, false),
                ],
                ..RowData::default()
            }],
            None,
        );
        assert_eq!(rows(&round_trip(&del)), rows(&del));
    }

    #[test]
    fn update_before_images_and_flags_come_back_from_old() {
        let upd = |id: &str, before: [Option<&str>; 2], after: [Option<&str>; 2]| RowData {
            before_columns: vec![
                col(0, "id", Some(id), true, false),
                col(1, "v", before[0], false, false),
                col(2, "w", before[1], false, false),
            ],
            after_columns: vec![
                col(0, "id", Some(id), true, false),
                col(1, "v", after[0], false, before[0] != after[0]),
                col(2, "w", after[1], false, before[1] != after[1]),
            ],
            props: vec![],
        };
        // Row 1 changes nothing (Canal writes no `old` for it), row 2 changes v, row 3 w: Canal's
        // accumulated set makes row 3's `old` name v too.
        let e = entry(
            EventType::Update,
            vec![
                upd("1", [Some("a"), Some("b")], [Some("a"), Some("b")]),
                upd("2", [None, Some("b")], [Some("x"), Some("b")]),
                upd("3", [Some("c"), Some("d")], [Some("c"), None]),
            ],
            None,
        );
        let text = json(&e);
        assert!(text.contains(r#""old":[{"v":null},{"v":"c","w":"d"}]"#), "{text}");
        let back = rows(&round_trip(&e));
        let orig = rows(&e);
        for (b, o) in back.iter().zip(&orig) {
            assert_eq!(b.before_columns, o.before_columns, "before image");
        }
        assert_eq!(back[0].after_columns, orig[0].after_columns);
        assert_eq!(back[1].after_columns, orig[1].after_columns);
        // The one thing lost: row 3's v is flagged although unchanged (Canal's accumulated set).
        let flags: Vec<_> = back[2].after_columns.iter().map(|c| c.updated()).collect();
        assert_eq!(flags, [false, true, true]);
    }

    #[test]
    fn ddl_and_query_come_back_without_rows() {
        let ddl = entry(EventType::Alter, vec![], Some("ALTER TABLE t ADD c INT"));
        let back = round_trip(&ddl);
        let rc = RowChange::decode(back.store_value()).unwrap();
        assert!(rc.is_ddl());
        assert_eq!((rc.event_type(), rc.sql()), (EventType::Alter, "ALTER TABLE t ADD c INT"));
        let q = entry(EventType::Query, vec![], None);
        assert_eq!(
            RowChange::decode(round_trip(&q).store_value()).unwrap().event_type(),
            EventType::Query
        );
    }

    #[test]
    fn java_written_flat_messages_parse() {
        // Another key order, nulls for boxed fields, an unknown field, no gtid (older Canal),
        // numbers and booleans as values.
        let text = r#"{"data":[{"id":1,"b":true,"s":"x","n":null}],"database":"d","es":5,
            "id":3,"isDdl":false,"mysqlType":{"id":"int","b":"bit(1)","s":"text","n":"int"},
            "old":null,"pkNames":["id"],"sql":"","sqlType":{"id":4,"b":-7,"s":2005,"n":4},
            "table":"t","ts":6,"type":"INSERT","extra":{"a":[1]}}"#;
        let f = parse_flat_message(text.as_bytes()).unwrap();
        assert_eq!((f.id, f.es, f.ts, f.gtid.as_str()), (3, 5, 6, ""));
        let e = flat_to_entry(&f).unwrap();
        let after = &rows(&e)[0].after_columns;
        let got: Vec<_> = after
            .iter()
            .map(|c| {
                (c.name(), c.value.as_deref(), c.is_key(), c.sql_type(), c.mysql_type(), c.index())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("id", Some("1"), true, 4, "int", 0),
                ("b", Some("true"), false, -7, "bit(1)", 1),
                ("s", Some("x"), false, 2005, "text", 2),
                ("n", None, false, 4, "int", 3),
            ]
        );
        let minimal = parse_flat_message(br#"{"type":"DELETE","database":null}"#).unwrap();
        assert_eq!(rows(&flat_to_entry(&minimal).unwrap()).len(), 0);
    }

    #[test]
    fn bad_records_are_typed_errors() {
        let flat = |s: &str| decode_record(s.as_bytes(), RecordFormat::Auto).unwrap_err();
        assert!(matches!(decode_record(b"", RecordFormat::Auto), Err(RecordError::Empty)));
        assert!(matches!(flat("{"), RecordError::Json(_)));
        assert!(matches!(flat(r#"{"id":1}"#), RecordError::Json(_)), "no type");
        assert!(matches!(flat(r#"{"type":1}"#), RecordError::Json(_)));
        assert!(matches!(flat(r#"{"type":"INSERT","data":[{"a":[1]}]}"#), RecordError::Json(_)));
        assert!(matches!(flat(r#"{"type":"INSERT","data":{"a":"1"}}"#), RecordError::Json(_)));
        assert!(matches!(flat(r#"{"type":"INSERT","id":"x"}"#), RecordError::Json(_)));
        assert!(matches!(flat(r#"{"type":"UPSERT"}"#), RecordError::Flat(_)));
        assert!(matches!(
            flat(r#"{"type":"ALTER","isDdl":true,"data":[{"a":"1"}]}"#),
            RecordError::Flat(_)
        ));
        assert!(matches!(
            flat(r#"{"type":"INSERT","data":[{"a":"1"}],"old":[{"a":"2"}]}"#),
            RecordError::Flat(_)
        ));
        assert!(matches!(
            flat(r#"{"type":"UPDATE","data":[{"a":"1"}],"old":[{},{}]}"#),
            RecordError::Flat(_)
        ));
        assert!(
            matches!(flat("{\"type\":\"INSERT\"}\u{0}"), RecordError::Json(_)),
            "trailing bytes"
        );
        // Not JSON and not a packet.
        let e = decode_record(b"hello world", RecordFormat::Auto).unwrap_err();
        assert!(matches!(e, RecordError::Unrecognised(_)), "{e:?}");
        // A JSON record read as protobuf, and a packet read as JSON.
        let e = decode_record(br#"{"type":"INSERT"}"#, RecordFormat::Protobuf).unwrap_err();
        assert!(matches!(e, RecordError::Packet(_)), "{e:?}");
        let packet = |p: Packet| p.encode_to_vec();
        let good = packet(Packet {
            version: Some(1),
            r#type: PacketType::Messages as i32,
            body: Messages { batch_id: 0, messages: vec![] }.encode_to_vec().into(),
            ..Packet::default()
        });
        assert!(matches!(decode_record(&good, RecordFormat::Flat), Err(RecordError::Json(_))));
        assert!(decode_record(&good, RecordFormat::Auto).unwrap().entries.is_empty());
        let ack = packet(Packet { r#type: PacketType::Ack as i32, ..Packet::default() });
        assert!(matches!(decode_record(&ack, RecordFormat::Auto), Err(RecordError::PacketType(3))));
        let zlib = packet(Packet {
            r#type: PacketType::Messages as i32,
            compression: Some(Compression::Zlib as i32),
            ..Packet::default()
        });
        assert!(matches!(
            decode_record(&zlib, RecordFormat::Auto),
            Err(RecordError::Compression(2))
        ));
        let bad_entry = packet(Packet {
            r#type: PacketType::Messages as i32,
            body: Messages {
                batch_id: 0,
                messages: vec![Bytes::new(), Bytes::from_static(b"\xff")],
            }
            .encode_to_vec()
            .into(),
            ..Packet::default()
        });
        assert!(matches!(
            decode_record(&bad_entry, RecordFormat::Auto),
            Err(RecordError::Entry { index: 1, .. })
        ));
        let bad_body = packet(Packet {
            r#type: PacketType::Messages as i32,
            body: Bytes::from_static(b"\x12\x05ab"),
            ..Packet::default()
        });
        assert!(matches!(decode_record(&bad_body, RecordFormat::Auto), Err(RecordError::Body(_))));
        // Every prefix and byte flip of a good record gives a value or an error, never a panic.
        let text = json(&entry(
            EventType::Insert,
            vec![RowData {
                after_columns: vec![col(0, "id", Some("1"), true, true)],
                ..RowData::default()
            }],
            None,
        ));
        for cut in 0..text.len() {
            let _ = decode_record(&text.as_bytes()[..cut], RecordFormat::Auto);
            let mut b = text.as_bytes().to_vec();
            b[cut] ^= 0x20;
            let _ = decode_record(&b, RecordFormat::Auto);
        }
    }

    #[test]
    fn canal_core_router_records_decode_in_both_formats() {
        let begin =
            Entry { entry_type: Some(EntryType::Transactionbegin as i32), ..Entry::default() };
        let ins = entry(
            EventType::Insert,
            vec![RowData {
                after_columns: vec![col(0, "id", Some("7"), true, true)],
                ..RowData::default()
            }],
            None,
        );
        let raw: Vec<Bytes> =
            [&begin, &ins].iter().map(|e| Bytes::from(e.encode_to_vec())).collect();
        // Transaction entries kept, so that a packet of several entries of each type is read.
        let proto = Router::new(RoutingConfig {
            flat_message: false,
            filter_transaction_entry: false,
            ..RoutingConfig::default()
        })
        .unwrap()
        .route(5, &raw, 6)
        .unwrap();
        assert_eq!(proto.len(), 1);
        let d = decode_record(&proto[0].payload, RecordFormat::Auto).unwrap();
        assert_eq!(d.format, RecordFormat::Protobuf);
        assert_eq!(d.entries, [begin, ins.clone()]);
        assert_eq!(d.raw, raw);

        let flat = Router::new(RoutingConfig::default()).unwrap().route(5, &raw, 6).unwrap();
        assert_eq!(flat.len(), 1, "BEGIN has no FlatMessage");
        let d = decode_record(&flat[0].payload, RecordFormat::Flat).unwrap();
        assert_eq!(d.batch_id, 5);
        assert_eq!(
            FlatMessage::from_entry(&d.entries[0], 5, 6).unwrap().unwrap().to_json().as_bytes(),
            flat[0].payload
        );
    }

    #[test]
    fn format_names_parse() {
        for f in [RecordFormat::Auto, RecordFormat::Flat, RecordFormat::Protobuf] {
            assert_eq!(f.to_string().parse::<RecordFormat>(), Ok(f));
        }
        assert!("xml".parse::<RecordFormat>().is_err());
    }
}
