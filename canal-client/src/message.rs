//! What a GET returns: a [`Message`] (batch id, decoded entries and their raw bytes) and a
//! row-change view over its entries ([`RowChangeView`], [`RowView`], [`Columns`]); for reading
//! the bytes in place without decoding, [`Message::views`] and [`crate::view`].

use std::collections::BTreeMap;

use bytes::Bytes;
use canal_core::flat::{FlatError, FlatMessage, event_type_name};
use canal_core::protocol::entry::{
    Column, Entry, EntryType, EventType, Header, RowChange, RowData,
};
use canal_core::view::{ENTRY_ROWDATA, EntryView, ViewError, entry_view};
use prost::Message as _;

use crate::error::ClientError;

/// The batch id of an empty batch.
pub const EMPTY_BATCH_ID: i64 = -1;

/// One batch, as Java's `Message`: the batch id and its entries.
///
/// Entries are decoded eagerly; the raw bytes of every entry are kept too (sharing the packet's
/// buffer, no copy), for forwarding without re-encoding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    /// The batch id (`-1` when the batch is empty: nothing to ack).
    pub id: i64,
    /// The decoded entries, in order.
    pub entries: Vec<Entry>,
    raw: Vec<Bytes>,
}

impl Message {
    /// Decodes a batch's entries.
    ///
    /// # Errors
    /// [`ClientError::BadEntry`] naming the first entry that does not decode.
    pub fn decode(id: i64, raw: Vec<Bytes>) -> Result<Self, ClientError> {
        let entries = raw
            .iter()
            .enumerate()
            .map(|(index, b)| {
                Entry::decode(b.clone()).map_err(|source| ClientError::BadEntry {
                    batch_id: id,
                    index,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Message { id, entries, raw })
    }

    /// A batch whose entries are not decoded: [`entries`](Self::entries) is empty, read it
    /// through [`views`](Self::views) or [`raw_entries`](Self::raw_entries).
    pub fn undecoded(id: i64, raw: Vec<Bytes>) -> Self {
        Message { id, entries: Vec::new(), raw }
    }

    /// The entries read in place from their bytes, in order (no copy, no owned strings): the
    /// fast path for printing, e.g. with [`crate::view::FlatRows`] or
    /// [`crate::view::write_entry_json`]. Works whether or not the entries were decoded.
    ///
    /// # Errors
    /// Each item is a [`ViewError`] when that entry's bytes are malformed.
    pub fn views(&self) -> impl Iterator<Item = Result<EntryView<'_>, ViewError>> {
        self.raw.iter().map(|b| entry_view(b))
    }

    /// A message from entries (for tests and forwarding); the raw bytes are encoded here.
    pub fn from_entries(id: i64, entries: Vec<Entry>) -> Self {
        let raw = entries.iter().map(|e| Bytes::from(e.encode_to_vec())).collect();
        Message { id, entries, raw }
    }

    /// A message from entries and their bytes (which the caller guarantees match).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn from_parts(id: i64, entries: Vec<Entry>, raw: Vec<Bytes>) -> Self {
        debug_assert_eq!(entries.len(), raw.len());
        Message { id, entries, raw }
    }

    /// The entries' bytes as the server sent them.
    pub fn raw_entries(&self) -> &[Bytes] {
        &self.raw
    }

    /// Whether the batch carries no entries (batch id -1).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The row changes of the ROWDATA entries (transaction BEGIN/END are skipped), in order.
    ///
    /// # Errors
    /// Each item is [`ClientError::BadRowChange`] when that entry's storeValue does not decode.
    pub fn row_changes(&self) -> impl Iterator<Item = Result<RowChangeView<'_>, ClientError>> {
        self.entries.iter().filter(|e| e.entry_type() == EntryType::Rowdata).map(RowChangeView::new)
    }

    /// The number of row images of each ROWDATA entry, in order, counted from the RowChange's
    /// wire form without decoding its columns: for consumers that only count, several times
    /// cheaper than [`row_changes`](Self::row_changes).
    ///
    /// # Errors
    /// Each item is [`ClientError::BadRowChange`] when that entry's storeValue does not decode,
    /// [`ClientError::BadEntry`] when the entry itself does not (batches left undecoded).
    pub fn row_counts(&self) -> impl Iterator<Item = Result<usize, ClientError>> + '_ {
        self.raw.iter().enumerate().filter_map(|(index, b)| {
            let counted = entry_view(b)
                .ok()
                .map(|v| (v.entry_type == ENTRY_ROWDATA).then(|| count_row_datas(v.store_value)));
            match counted {
                Some(None) => None,
                Some(Some(Some(n))) => Some(Ok(n)),
                // Malformed: let the full decoder name the problem (or count what it accepts).
                _ => match Entry::decode(b.clone()) {
                    Err(source) => {
                        Some(Err(ClientError::BadEntry { batch_id: self.id, index, source }))
                    }
                    Ok(e) if e.entry_type() != EntryType::Rowdata => None,
                    Ok(e) => Some(RowChangeView::new(&e).map(|v| v.rows().len())),
                },
            }
        })
    }

    /// The number of row images in the batch (rows of INSERT/UPDATE/DELETE row changes).
    pub fn row_count(&self) -> usize {
        self.row_counts().filter_map(Result::ok).sum()
    }

    /// Canal's FlatMessages of this batch (one per ROWDATA entry), built at `ts` (ms).
    ///
    /// # Errors
    /// [`FlatError`] for an entry whose storeValue does not decode.
    pub fn flat_messages(&self, ts: i64) -> Result<Vec<FlatMessage>, FlatError> {
        let mut out = Vec::new();
        for e in &self.entries {
            if let Some(f) = FlatMessage::from_entry(e, self.id, ts)? {
                out.push(f);
            }
        }
        Ok(out)
    }
}

/// The `rowDatas` (field 12) of an encoded RowChange, counted by walking its top-level fields;
/// `None` when the bytes are not a well-formed message.
fn count_row_datas(mut b: &[u8]) -> Option<usize> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut rows = 0;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        if key >> 3 == 0 {
            return None;
        }
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                b = b.get(len..)?;
                if key >> 3 == 12 {
                    rows += 1;
                }
            }
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    Some(rows)
}

/// A ROWDATA entry with its RowChange decoded.
#[derive(Clone, Debug)]
pub struct RowChangeView<'a> {
    entry: &'a Entry,
    header: Option<&'a Header>,
    row_change: RowChange,
}

impl<'a> RowChangeView<'a> {
    /// Decodes `entry`'s storeValue as a RowChange (whatever the entry type says).
    ///
    /// # Errors
    /// [`ClientError::BadRowChange`] when it does not decode.
    pub fn new(entry: &'a Entry) -> Result<Self, ClientError> {
        let header = entry.header.as_ref();
        let row_change =
            RowChange::decode(entry.store_value()).map_err(|source| ClientError::BadRowChange {
                file: header.map(|h| h.logfile_name().to_owned()).unwrap_or_default(),
                offset: header.map(|h| h.logfile_offset()).unwrap_or_default(),
                source,
            })?;
        Ok(RowChangeView { entry, header, row_change })
    }

    /// The entry.
    pub fn entry(&self) -> &'a Entry {
        self.entry
    }

    /// The decoded RowChange.
    pub fn row_change(&self) -> &RowChange {
        &self.row_change
    }

    /// The schema (database) name.
    pub fn schema(&self) -> &'a str {
        self.header.map(|h| h.schema_name()).unwrap_or_default()
    }

    /// The table name.
    pub fn table(&self) -> &'a str {
        self.header.map(|h| h.table_name()).unwrap_or_default()
    }

    /// The event type: the RowChange's when set, else the header's (proto2 default UPDATE).
    pub fn event_type(&self) -> EventType {
        if self.row_change.event_type.is_some() {
            self.row_change.event_type()
        } else {
            self.header.map(|h| h.event_type()).unwrap_or(EventType::Update)
        }
    }

    /// Canal's name of the event type (`INSERT`, `ALTER`...).
    pub fn event_type_name(&self) -> &'static str {
        event_type_name(self.event_type())
    }

    /// Whether the change is DDL.
    pub fn is_ddl(&self) -> bool {
        self.row_change.is_ddl()
    }

    /// The SQL text (DDL and queries; empty for row events unless rows-query logging is on).
    pub fn sql(&self) -> &str {
        self.row_change.sql()
    }

    /// The session's current schema of a DDL (`ddlSchemaName`).
    pub fn ddl_schema(&self) -> &str {
        self.row_change.ddl_schema_name()
    }

    /// Event time in ms since the epoch.
    pub fn execute_time(&self) -> i64 {
        self.header.map(|h| h.execute_time()).unwrap_or_default()
    }

    /// Binlog file and start offset of the event.
    pub fn position(&self) -> (&'a str, i64) {
        self.header.map(|h| (h.logfile_name(), h.logfile_offset())).unwrap_or_default()
    }

    /// The header's GTID (executed set in GTID mode, else empty).
    pub fn gtid(&self) -> &'a str {
        self.header.map(|h| h.gtid()).unwrap_or_default()
    }

    /// The rows.
    pub fn rows(&self) -> Rows<'_> {
        Rows { inner: self.row_change.row_datas.iter(), event_type: self.event_type() }
    }
}

/// Iterator over the rows of a [`RowChangeView`].
#[derive(Clone, Debug)]
pub struct Rows<'a> {
    inner: std::slice::Iter<'a, RowData>,
    event_type: EventType,
}

impl<'a> Iterator for Rows<'a> {
    type Item = RowView<'a>;

    fn next(&mut self) -> Option<RowView<'a>> {
        self.inner.next().map(|data| RowView { data, event_type: self.event_type })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Rows<'_> {}

/// One row of a row change: its before and after images.
#[derive(Clone, Copy, Debug)]
pub struct RowView<'a> {
    data: &'a RowData,
    event_type: EventType,
}

impl<'a> RowView<'a> {
    /// The before image (DELETE: the row; UPDATE: the old values; INSERT: empty).
    pub fn before(&self) -> Columns<'a> {
        Columns(&self.data.before_columns)
    }

    /// The after image (INSERT: the row; UPDATE: the new values; DELETE: empty).
    pub fn after(&self) -> Columns<'a> {
        Columns(&self.data.after_columns)
    }

    /// The image that describes the row as it is now: before for DELETE, after otherwise (as
    /// FlatMessage `data`).
    pub fn current(&self) -> Columns<'a> {
        if self.event_type == EventType::Delete { self.before() } else { self.after() }
    }

    /// The raw RowData.
    pub fn data(&self) -> &'a RowData {
        self.data
    }
}

/// The columns of one row image, in table order.
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a>(&'a [Column]);

impl<'a> Columns<'a> {
    /// The columns.
    pub fn as_slice(&self) -> &'a [Column] {
        self.0
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The column named `name` (exact match).
    pub fn column(&self, name: &str) -> Option<&'a Column> {
        self.0.iter().find(|c| c.name() == name)
    }

    /// The value of column `name`: `None` when there is no such column, `Some(None)` for SQL
    /// NULL.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.column(name).map(value_of)
    }

    /// `(name, value)` pairs in column order; `None` values are SQL NULL.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        self.0.iter().map(|c| (c.name(), value_of(c)))
    }

    /// The image as a map from column name to value (sorted by name).
    pub fn to_map(&self) -> BTreeMap<&'a str, Option<&'a str>> {
        self.iter().collect()
    }

    /// Names of the columns flagged as updated.
    pub fn updated(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(|c| c.updated()).map(|c| c.name())
    }

    /// Names of the primary-key columns.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(|c| c.is_key()).map(|c| c.name())
    }
}

fn value_of(c: &Column) -> Option<&str> {
    if c.is_null() { None } else { Some(c.value()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, value: Option<&str>, key: bool, updated: bool) -> Column {
        Column {
            name: Some(name.into()),
            value: value.map(Into::into),
            is_null: Some(value.is_none()),
            is_key: Some(key),
            updated: Some(updated),
            ..Column::default()
        }
    }

    fn update_entry() -> Entry {
        let rc = RowChange {
            event_type: Some(EventType::Update as i32),
            is_ddl: Some(false),
            row_datas: vec![RowData {
                before_columns: vec![
                    col("id", Some("1"), true, false),
                    col("v", None, false, false),
                ],
                after_columns: vec![
                    col("id", Some("1"), true, false),
                    col("v", Some("x"), false, true),
                ],
                props: vec![],
            }],
            ..RowChange::default()
        };
        Entry {
            header: Some(Header {
                schema_name: Some("test".into()),
                table_name: Some("t".into()),
                logfile_name: Some("bin.000001".into()),
                logfile_offset: Some(400),
                ..Header::default()
            }),
            entry_type: Some(EntryType::Rowdata as i32),
            store_value: Some(rc.encode_to_vec().into()),
        }
    }

    #[test]
    fn row_view_reads_images() {
        let begin =
            Entry { entry_type: Some(EntryType::Transactionbegin as i32), ..Entry::default() };
        let m = Message::from_entries(7, vec![begin, update_entry()]);
        let decoded = Message::decode(7, m.raw_entries().to_vec()).unwrap();
        assert_eq!(decoded, m);
        let views: Vec<_> = m.row_changes().collect::<Result<_, _>>().unwrap();
        assert_eq!(views.len(), 1);
        let v = &views[0];
        assert_eq!((v.schema(), v.table(), v.event_type()), ("test", "t", EventType::Update));
        assert_eq!(v.position(), ("bin.000001", 400));
        assert!(!v.is_ddl());
        let row = v.rows().next().unwrap();
        assert_eq!(row.before().get("v"), Some(None));
        assert_eq!(row.after().get("v"), Some(Some("x")));
        assert_eq!(row.after().get("nope"), None);
        assert_eq!(row.after().updated().collect::<Vec<_>>(), ["v"]);
        assert_eq!(row.after().keys().collect::<Vec<_>>(), ["id"]);
        assert_eq!(row.current().to_map().get("id"), Some(&Some("1")));
        assert_eq!(m.row_count(), 1);
        assert_eq!(m.flat_messages(0).unwrap().len(), 1);
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        let err = Message::decode(3, vec![Bytes::from_static(b"\xff\xff")]).unwrap_err();
        assert!(matches!(err, ClientError::BadEntry { batch_id: 3, index: 0, .. }));
        let e = Entry {
            entry_type: Some(EntryType::Rowdata as i32),
            store_value: Some(Bytes::from_static(b"\x0a\xff")),
            ..Entry::default()
        };
        let m = Message::from_entries(1, vec![e]);
        assert!(matches!(m.row_changes().next(), Some(Err(ClientError::BadRowChange { .. }))));
        assert!(matches!(m.row_counts().next(), Some(Err(ClientError::BadRowChange { .. }))));
        assert_eq!(m.row_count(), 0);
    }

    #[test]
    fn rows_are_counted_without_decoding_columns() {
        let mut e = update_entry();
        let mut rc = RowChange::decode(e.store_value()).unwrap();
        for n in [0usize, 1, 3, 200] {
            rc.row_datas = std::iter::repeat_n(rc_row(), n).collect();
            rc.props = vec![];
            rc.sql = Some("x".repeat(n));
            e.store_value = Some(rc.encode_to_vec().into());
            assert_eq!(count_row_datas(e.store_value()), Some(n));
        }
        // Every truncation of a well-formed RowChange either counts what prost decodes or is
        // refused; never a panic.
        let bytes = e.store_value().to_vec();
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            if let Some(n) = count_row_datas(part)
                && let Ok(full) = RowChange::decode(part)
            {
                assert_eq!(full.row_datas.len(), n, "cut at {cut}");
            }
        }
        assert_eq!(count_row_datas(&[0x00]), None, "field 0");
        assert_eq!(count_row_datas(&[0x63]), None, "group wire type");
        assert_eq!(count_row_datas(&[0x62, 0x05, 1]), None, "length past the end");
        assert_eq!(count_row_datas(&[0x08, 0xff]), None, "unterminated varint");
    }

    fn rc_row() -> RowData {
        RowData { after_columns: vec![col("id", Some("9"), true, true)], ..RowData::default() }
    }
}
