//! Canal's FlatMessage (docs/protocol.md#flatmessage): one JSON object per ROWDATA entry, as Canal's MQ modes and
//! canal-adapter consume it. Built from a decoded [`Entry`]; BEGIN/END entries give nothing.
//!
//! Keys appear in the Java class's order, column maps in column order, and nulls are written
//! (fastjson's WriteNulls), so output diffs cleanly against Java Canal's.

use prost::Message;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::protocol::entry::{Column, Entry, EntryType, EventType, Header, RowChange};

/// An ordered string-keyed map that serializes in insertion order (Java's LinkedHashMap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> OrderedMap<V> {
    /// Inserts or replaces `key`, keeping the first insertion's place.
    pub fn put(&mut self, key: &str, value: V) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Canal's FlatMessage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlatMessage {
    /// Batch id the entry was delivered in (0 outside a server).
    pub id: i64,
    /// Schema of the entry.
    pub database: String,
    /// Table of the entry.
    pub table: String,
    /// Primary-key column names (from the first row); null for DDL and tables without a key.
    pub pk_names: Option<Vec<String>>,
    /// Whether the entry is DDL.
    pub is_ddl: bool,
    /// Event type name, e.g. `INSERT`, `ALTER`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Execute time of the event (ms).
    pub es: i64,
    /// Time the message was built (ms).
    pub ts: i64,
    /// SQL text: the DDL or query; `""` for rows.
    pub sql: String,
    /// Column → java.sql.Types code.
    pub sql_type: Option<OrderedMap<i32>>,
    /// Column → MySQL type text.
    pub mysql_type: Option<OrderedMap<String>>,
    /// Row images: after image for INSERT/UPDATE, before image for DELETE.
    pub data: Option<Vec<OrderedMap<Option<String>>>>,
    /// UPDATE only: per row, the changed columns' old values.
    pub old: Option<Vec<OrderedMap<Option<String>>>>,
    /// GTID of the entry's header (`""` when not in GTID mode).
    pub gtid: String,
}

/// An entry's storeValue could not be decoded as a RowChange.
#[derive(Debug, thiserror::Error)]
#[error("entry at {file}:{offset} has an undecodable RowChange: {source}")]
pub struct FlatError {
    file: String,
    offset: i64,
    #[source]
    source: prost::DecodeError,
}

impl FlatError {
    /// The error for `entry`, naming its binlog position.
    pub(crate) fn new(entry: &Entry, source: prost::DecodeError) -> Self {
        let h = entry.header.as_ref();
        // A header-less entry has no position to name; empty/0 only label the message.
        Self {
            file: h.map(|h| h.logfile_name().to_owned()).unwrap_or_default(),
            offset: h.map(|h| h.logfile_offset()).unwrap_or_default(),
            source,
        }
    }
}

/// Canal's name of an event type (Java's `EventType.toString()`).
pub fn event_type_name(t: EventType) -> &'static str {
    match t {
        EventType::Insert => "INSERT",
        EventType::Update => "UPDATE",
        EventType::Delete => "DELETE",
        EventType::Create => "CREATE",
        EventType::Alter => "ALTER",
        EventType::Erase => "ERASE",
        EventType::Query => "QUERY",
        EventType::Truncate => "TRUNCATE",
        EventType::Rename => "RENAME",
        EventType::Cindex => "CINDEX",
        EventType::Dindex => "DINDEX",
        EventType::Gtid => "GTID",
        EventType::Xacommit => "XACOMMIT",
        EventType::Xarollback => "XAROLLBACK",
        EventType::Mheartbeat => "MHEARTBEAT",
    }
}

fn value_of(c: &Column) -> Option<String> {
    if c.is_null() { None } else { Some(c.value().to_owned()) }
}

impl FlatMessage {
    /// The FlatMessage of `entry`, or `None` for entries that have none (BEGIN, END, heartbeat).
    ///
    /// `id` is the batch id and `ts` the build time in ms (a parameter so output can be
    /// reproducible).
    ///
    /// # Errors
    /// [`FlatError`] when a ROWDATA entry's storeValue is not a RowChange.
    pub fn from_entry(entry: &Entry, id: i64, ts: i64) -> Result<Option<Self>, FlatError> {
        if entry.entry_type() != EntryType::Rowdata {
            return Ok(None);
        }
        let rc = RowChange::decode(entry.store_value())
            .map_err(|source| FlatError::new(entry, source))?;
        Ok(Self::from_decoded(entry, &rc, id, ts))
    }

    /// As [`from_entry`](Self::from_entry), with the entry's RowChange already decoded (`rc`),
    /// for callers that decoded it anyway.
    pub fn from_decoded(entry: &Entry, rc: &RowChange, id: i64, ts: i64) -> Option<Self> {
        Self::build(entry, rc, id, ts, None)
    }

    /// As [`from_decoded`](Self::from_decoded), also telling, for each element of `old`, the
    /// index in `data` of the row it belongs to (`None` for a row without a data image), so that
    /// MQ partitioning can split rows and their old images together (the reference the MQ
    /// tests compare the MQ path's own FlatMessage writer with).
    #[cfg(test)]
    pub(crate) fn from_decoded_with_old_rows(
        entry: &Entry,
        rc: &RowChange,
        id: i64,
        ts: i64,
        old_rows: &mut Vec<Option<usize>>,
    ) -> Option<Self> {
        Self::build(entry, rc, id, ts, Some(old_rows))
    }

    fn build(
        entry: &Entry,
        rc: &RowChange,
        id: i64,
        ts: i64,
        old_rows: Option<&mut Vec<Option<usize>>>,
    ) -> Option<Self> {
        if entry.entry_type() != EntryType::Rowdata {
            return None;
        }
        let default = Header::default();
        let header = entry.header.as_ref().unwrap_or(&default);
        Some(Self::from_row_change(
            rc,
            id,
            ts,
            header.schema_name(),
            header.table_name(),
            header.execute_time(),
            header.gtid(),
            header.event_type(),
            old_rows,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn from_row_change(
        rc: &RowChange,
        id: i64,
        ts: i64,
        database: &str,
        table: &str,
        es: i64,
        gtid: &str,
        header_type: EventType,
        mut old_rows: Option<&mut Vec<Option<usize>>>,
    ) -> Self {
        let event_type = if rc.event_type.is_some() { rc.event_type() } else { header_type };
        let mut msg = FlatMessage {
            id,
            database: database.to_owned(),
            table: table.to_owned(),
            pk_names: None,
            is_ddl: rc.is_ddl(),
            kind: event_type_name(event_type).to_owned(),
            es,
            ts,
            sql: rc.sql().to_owned(),
            sql_type: None,
            mysql_type: None,
            data: None,
            old: None,
            gtid: gtid.to_owned(),
        };
        if rc.is_ddl() {
            return msg;
        }
        let mut sql_type = OrderedMap::default();
        let mut mysql_type = OrderedMap::default();
        let mut data = Vec::new();
        let mut old = Vec::new();
        let mut pk_names: Vec<String> = Vec::new();
        // Java accumulates the updated-column set across the rows of one entry; so do we.
        let mut updated: Vec<String> = Vec::new();
        for (i, row) in rc.row_datas.iter().enumerate() {
            if !matches!(event_type, EventType::Insert | EventType::Update | EventType::Delete) {
                continue;
            }
            let columns = if event_type == EventType::Delete {
                &row.before_columns
            } else {
                &row.after_columns
            };
            let mut image = OrderedMap(Vec::with_capacity(columns.len()));
            // The usual case: this row has exactly the columns, in the order, that the type maps
            // already hold (distinct names). Then each map slot is found by position, without a
            // search per column; otherwise the general path below.
            let same_layout = columns.len() == sql_type.0.len()
                && columns.iter().zip(&sql_type.0).all(|(c, (k, _))| c.name() == k);
            for (j, c) in columns.iter().enumerate() {
                if i == 0 && c.is_key() {
                    pk_names.push(c.name().to_owned());
                }
                if same_layout {
                    sql_type.0[j].1 = c.sql_type();
                    if mysql_type.0[j].1 != c.mysql_type() {
                        mysql_type.0[j].1 = c.mysql_type().to_owned();
                    }
                    image.0.push((c.name().to_owned(), value_of(c)));
                } else {
                    sql_type.put(c.name(), c.sql_type());
                    mysql_type.put(c.name(), c.mysql_type().to_owned());
                    image.put(c.name(), value_of(c));
                }
                if c.updated() && !updated.iter().any(|u| u == c.name()) {
                    updated.push(c.name().to_owned());
                }
            }
            let has_image = !image.is_empty();
            if has_image {
                data.push(image);
            }
            if event_type == EventType::Update {
                let mut before = OrderedMap::default();
                for c in &row.before_columns {
                    if updated.iter().any(|u| u == c.name()) {
                        before.put(c.name(), value_of(c));
                    }
                }
                if !before.is_empty() {
                    old.push(before);
                    if let Some(rows) = old_rows.as_deref_mut() {
                        rows.push(has_image.then(|| data.len() - 1));
                    }
                }
            }
        }
        // Java creates the list on the first key column, so a table without a key gives null.
        msg.pk_names = (!pk_names.is_empty()).then_some(pk_names);
        msg.sql_type = (!sql_type.is_empty()).then_some(sql_type);
        msg.mysql_type = (!mysql_type.is_empty()).then_some(mysql_type);
        msg.data = (!data.is_empty()).then_some(data);
        msg.old = (!old.is_empty()).then_some(old);
        msg
    }

    /// The JSON text (one line).
    pub fn to_json(&self) -> String {
        // Strings, integers and ordered maps always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::entry::RowData;

    fn col(i: i32, name: &str, v: Option<&str>, key: bool, updated: bool) -> Column {
        Column {
            index: Some(i),
            sql_type: Some(4),
            name: Some(name.into()),
            is_key: Some(key),
            updated: Some(updated),
            is_null: Some(v.is_none()),
            value: v.map(Into::into),
            mysql_type: Some("int(11)".into()),
            ..Default::default()
        }
    }

    fn entry(rc: RowChange, et: EventType) -> Entry {
        Entry {
            header: Some(Header {
                schema_name: Some("db".into()),
                table_name: Some("t".into()),
                execute_time: Some(1000),
                event_type: Some(et as i32),
                ..Default::default()
            }),
            entry_type: Some(EntryType::Rowdata as i32),
            store_value: Some(rc.encode_to_vec().into()),
        }
    }

    #[test]
    fn rows_with_other_column_layouts_keep_java_map_semantics() {
        let mut typed = col(3, "c", Some("3"), false, false);
        typed.sql_type = Some(12);
        typed.mysql_type = Some("varchar(3)".into());
        let rows = vec![
            vec![col(1, "a", Some("1"), true, false), col(2, "b", None, false, false)],
            // Same names, other order: the maps keep first-seen order, the row its own.
            vec![col(2, "b", Some("2"), false, false), col(1, "a", Some("1"), true, false)],
            // One more column, and a changed type for `a` (the last row's type wins).
            vec![
                {
                    let mut a = col(1, "a", Some("9"), true, false);
                    a.mysql_type = Some("bigint(20)".into());
                    a
                },
                col(2, "b", Some("8"), false, false),
                typed,
            ],
            vec![col(1, "a", Some("7"), true, false)],
            // Back to the maps' layout (the positional path): `a`'s type changes again.
            vec![
                {
                    let mut a = col(1, "a", Some("6"), true, false);
                    a.mysql_type = Some("bigint(20)".into());
                    a
                },
                col(2, "b", Some("5"), false, false),
                col(3, "c", None, false, false),
            ],
        ];
        let rc = RowChange {
            event_type: Some(EventType::Insert as i32),
            is_ddl: Some(false),
            row_datas: rows
                .into_iter()
                .map(|after_columns| RowData { after_columns, ..Default::default() })
                .collect(),
            ..Default::default()
        };
        let f = FlatMessage::from_entry(&entry(rc, EventType::Insert), 1, 2).unwrap().unwrap();
        let keys = |m: &OrderedMap<Option<String>>| {
            m.0.iter()
                .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null")))
                .collect::<Vec<_>>()
        };
        let data = f.data.unwrap();
        assert_eq!(keys(&data[0]), ["a=1", "b=null"]);
        assert_eq!(keys(&data[1]), ["b=2", "a=1"]);
        assert_eq!(keys(&data[2]), ["a=9", "b=8", "c=3"]);
        assert_eq!(keys(&data[3]), ["a=7"]);
        assert_eq!(keys(&data[4]), ["a=6", "b=5", "c=null"]);
        let mysql: Vec<_> = f.mysql_type.unwrap().0;
        assert_eq!(
            mysql,
            [
                ("a".into(), "bigint(20)".into()),
                ("b".into(), "int(11)".into()),
                ("c".into(), "int(11)".into())
            ],
            "the last row sets each column's type"
        );
        let sql: Vec<_> = f.sql_type.unwrap().0;
        assert_eq!(sql, [("a".into(), 4), ("b".into(), 4), ("c".into(), 4)]);
        assert_eq!(f.pk_names, Some(vec!["a".to_owned()]));
    }

    #[test]
    fn update_has_data_and_old_of_changed_columns() {
        let rc = RowChange {
            event_type: Some(EventType::Update as i32),
            is_ddl: Some(false),
            sql: Some(String::new()),
            row_datas: vec![RowData {
                before_columns: vec![
                    col(0, "id", Some("1"), true, false),
                    col(1, "v", None, false, false),
                ],
                after_columns: vec![
                    col(0, "id", Some("1"), true, false),
                    col(1, "v", Some("7"), false, true),
                ],
                props: vec![],
            }],
            ..Default::default()
        };
        let m = FlatMessage::from_entry(&entry(rc, EventType::Update), 3, 5).unwrap().unwrap();
        assert_eq!(
            m.to_json(),
            r#"{"id":3,"database":"db","table":"t","pkNames":["id"],"isDdl":false,"type":"UPDATE","es":1000,"ts":5,"sql":"","sqlType":{"id":4,"v":4},"mysqlType":{"id":"int(11)","v":"int(11)"},"data":[{"id":"1","v":"7"}],"old":[{"v":null}],"gtid":""}"#
        );
    }

    #[test]
    fn delete_uses_before_image_and_ddl_has_nulls() {
        let rc = RowChange {
            event_type: Some(EventType::Delete as i32),
            row_datas: vec![RowData {
                before_columns: vec![col(0, "id", Some("9"), true, false)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let m = FlatMessage::from_entry(&entry(rc, EventType::Delete), 0, 0).unwrap().unwrap();
        assert_eq!(m.data.unwrap()[0].get("id"), Some(&Some("9".to_owned())));
        assert!(m.old.is_none());

        let ddl = RowChange {
            event_type: Some(EventType::Alter as i32),
            is_ddl: Some(true),
            sql: Some("alter table t add c int".into()),
            ..Default::default()
        };
        let m = FlatMessage::from_entry(&entry(ddl, EventType::Alter), 0, 0).unwrap().unwrap();
        assert!(m.is_ddl);
        let json = m.to_json();
        assert!(json.contains(r#""pkNames":null"#) && json.contains(r#""data":null"#), "{json}");
    }

    #[test]
    fn begin_has_no_flat_message_and_garbage_is_an_error() {
        let begin =
            Entry { entry_type: Some(EntryType::Transactionbegin as i32), ..Default::default() };
        assert!(FlatMessage::from_entry(&begin, 0, 0).unwrap().is_none());
        let bad = Entry {
            entry_type: Some(EntryType::Rowdata as i32),
            store_value: Some(vec![0xff, 0xff].into()),
            ..Default::default()
        };
        assert!(FlatMessage::from_entry(&bad, 0, 0).is_err());
    }
}
