//! Binlog events → Canal entries (docs/protocol.md#entries): transaction boundaries, row changes with Canal's
//! column semantics, DDL and queries, with filters applied and the schema in force at each event's
//! position.
//!
//! [`Converter`] is pure and synchronous: raw event bytes in, encoded entries out. It owns the
//! [`Decoder`] (table maps, FORMAT_DESCRIPTION) and, when given one, the [`SchemaHistory`]. When the
//! history does not know a table a rows event needs, `convert` returns
//! [`ConvertError::NeedTable`] *before* changing any state; the live pipeline then fetches
//! `SHOW CREATE TABLE`, records it and calls `convert` again with the same event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::decode::{ColumnMeta, TablePlan};
use super::decode::{
    DecodeError, DecodeOptions, Decoder, Event, EventData, EventHeader, Gtid, MariaGtid, Query,
    RowImage, RowsKind, TableMap, TableSchema, event_type,
};
use super::pbwrite::{self, column as col};
use super::replica::{GtidSet, MariadbGtid, MariadbGtidList, ServerUuid};
use super::tiebreak;
use crate::filter::{FieldFilter, NameFilter};
use crate::position::EntryPosition;
use crate::protocol::entry::{
    EntryType, EventType, Header, Pair, RowChange, TransactionBegin, TransactionEnd, Type,
};
use crate::schema::{
    HistoryError, Lookup, SchemaHistory, SchemaPosition, TableDef, TableName, TxnControl,
    transaction_control,
};
use crate::store::EntryKind;

/// What to emit and what to drop (`canal.instance.filter.*`).
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Table white/black lists.
    pub filter: NameFilter,
    /// Per-table column lists.
    pub field_filter: FieldFilter,
    /// Drop statement DML and rows-query/annotate text (`filter.query.dml`).
    pub filter_query_dml: bool,
    /// Drop QUERY-type statements such as GRANT (`filter.query.dcl`).
    pub filter_query_dcl: bool,
    /// Drop DDL entries (the schema history is still updated) (`filter.query.ddl`).
    pub filter_query_ddl: bool,
    /// Drop all rows events (`filter.rows`).
    pub filter_rows: bool,
    /// Skip rows events whose table cannot be decoded instead of failing (`filter.table.error`).
    pub skip_table_errors: bool,
    /// Fill `Header.gtid` and the `curtGtid*` props (GTID mode).
    pub gtid_mode: bool,
    /// Render integer types with the display width the source prints (`int(11)`), as MariaDB and
    /// MySQL before 8.0.19 do in `SHOW CREATE TABLE` and `information_schema`, also when the DDL
    /// the history learnt from wrote plain `INT`. Off for MySQL ≥ 8.0.19, which prints `int`.
    pub implicit_display_width: bool,
    /// Decoder options (charset, time zone, CRC checks).
    pub decode: DecodeOptions,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            filter: NameFilter::accept_all(),
            field_filter: FieldFilter::default(),
            filter_query_dml: false,
            filter_query_dcl: false,
            filter_query_ddl: false,
            filter_rows: false,
            skip_table_errors: false,
            gtid_mode: false,
            implicit_display_width: true,
            decode: DecodeOptions::default(),
        }
    }
}

/// One entry ready for the store.
#[derive(Clone, Debug)]
pub struct BuiltEntry {
    /// The encoded `Entry`.
    pub bytes: Bytes,
    /// Where its event starts (and the executed GTID set in GTID mode).
    pub position: EntryPosition,
    /// What it is.
    pub kind: EntryKind,
    /// Rows it carries.
    pub rows: usize,
    /// A dump may resume right after this entry's event without splitting a transaction (END,
    /// or a DDL/query outside any transaction).
    pub closes: bool,
}

/// Why an event could not be converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The event is undecodable (corrupt binlog, or a table whose schema does not fit).
    #[error("cannot decode event at {journal}:{offset}: {source}")]
    Decode {
        /// File of the event.
        journal: String,
        /// Start offset of the event.
        offset: u64,
        /// What the decoder said.
        #[source]
        source: DecodeError,
    },
    /// The schema history does not know a table the next rows need: fetch its definition,
    /// record it at `position`, and convert the same event again.
    #[error("schema of `{}`.`{}` is needed at {position:?}", table.schema, table.table)]
    NeedTable {
        /// The table.
        table: TableName,
        /// Where to record it.
        position: SchemaPosition,
    },
    /// Persisting the schema history failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The definition in force for a table does not fit its TABLE_MAP (column count, or a type
    /// the binlog contradicts) and the binlog carries no column names to take instead. The
    /// pipeline refetches the table once ([`Converter::refresh_table`]) and converts the same
    /// event again; if that does not help, this is the error, naming table and position.
    #[error("the definition of {table} does not fit the binlog at {position}: {source}")]
    TableMismatch {
        /// The table.
        table: TableName,
        /// The rows event's position.
        position: SchemaPosition,
        /// The mismatch.
        #[source]
        source: Box<DecodeError>,
    },
}

/// Counters of what was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Events converted.
    pub events: u64,
    /// Row images emitted.
    pub rows: u64,
    /// Events of a type the decoder does not know (skipped).
    pub unknown_events: u64,
    /// Rows events skipped by filters.
    pub filtered_events: u64,
    /// Rows events skipped because their table could not be decoded (`skip_table_errors`).
    pub skipped_table_errors: u64,
    /// TABLE_MAPs whose FULL metadata (names, signedness, charsets, members) disagreed with the
    /// schema history: the binlog's definition was used and recorded in the history.
    pub schema_corrections: u64,
}

/// The converter of one binlog stream.
#[derive(Debug)]
pub struct Converter {
    decoder: Decoder,
    opts: ConvertOptions,
    history: Option<SchemaHistory>,
    /// Schemas handed to the decoder, so a TABLE_MAP repeated per transaction rebuilds nothing.
    supplied: HashMap<(Arc<str>, Arc<str>), Arc<TableDef>>,
    /// Tables the source could not describe: never asked for again (binlog metadata is used).
    unavailable: HashSet<TableName>,
    /// The statement text (ROWS_QUERY / ANNOTATE_ROWS) of the next rows events: emitted before
    /// the first of them that passes the filters, so filtered tables leak no SQL text.
    pending_query: Option<(EventHeader, String)>,
    /// Between a BEGIN and its END.
    in_txn: bool,
    journal: Arc<str>,
    /// Executed GTID set string (GTID mode), as Canal's `Header.gtid`.
    gtid_set: String,
    /// The current transaction's GTID, logical clock values (GTID mode props).
    current_gtid: Option<(String, u64, u64)>,
    stats: ConvertStats,
    before: RowImage,
    after: RowImage,
    /// RowChange bytes per binlog row byte, smoothed over recent rows events (buffer sizing).
    expansion: f64,
    /// Encoded per-column constants of the last plan used.
    consts: Option<(Arc<TablePlan>, Arc<Vec<ColumnConst>>)>,
    /// The rest of a TRANSACTION_PAYLOAD converted in pieces ([`Converter::convert_pending`]).
    payload: Option<PendingPayload>,
    /// Entries and bytes after which one call stops converting a payload's events.
    payload_chunk: (usize, usize),
}

/// A TRANSACTION_PAYLOAD whose inner events are not all converted yet.
#[derive(Debug)]
struct PendingPayload {
    payload: super::decode::TransactionPayload,
    /// Offset of the next inner event in the inflated payload.
    next: usize,
    /// The payload event's header (file position of every inner event).
    outer: EventHeader,
}

impl Converter {
    /// A converter for a stream that starts in file `journal`.
    pub fn new(opts: ConvertOptions, history: Option<SchemaHistory>, journal: &str) -> Self {
        Self {
            decoder: Decoder::new(opts.decode.clone()),
            opts,
            history,
            supplied: HashMap::new(),
            unavailable: HashSet::new(),
            pending_query: None,
            in_txn: false,
            journal: Arc::from(journal),
            gtid_set: String::new(),
            current_gtid: None,
            stats: ConvertStats::default(),
            before: RowImage::new(),
            after: RowImage::new(),
            consts: None,
            expansion: 6.0,
            payload: None,
            payload_chunk: (usize::MAX, usize::MAX),
        }
    }

    /// The binlog file of the next event.
    pub fn journal(&self) -> &str {
        &self.journal
    }

    /// Sets the binlog file of the next event (a reader opening the next file).
    pub fn set_journal(&mut self, journal: &str) {
        self.journal = Arc::from(journal);
    }

    /// Records that the source cannot describe `table` (dropped since, no privilege): its rows are
    /// decoded with the binlog's own metadata and it is not asked for again.
    pub fn table_unavailable(&mut self, table: TableName) {
        self.unavailable.insert(table);
    }

    /// Counters.
    pub fn stats(&self) -> ConvertStats {
        self.stats
    }

    /// The schema history, to record tables fetched after [`ConvertError::NeedTable`].
    pub fn history_mut(&mut self) -> Option<&mut SchemaHistory> {
        self.history.as_mut()
    }

    /// The decoder (checksum algorithm of a live stream, table plans).
    pub fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Replaces the table white list (a client's subscription filter).
    pub fn set_filter(&mut self, filter: NameFilter) {
        self.opts.filter = filter;
    }

    /// Whether the last entry left a transaction open (a BEGIN without its END yet).
    pub fn in_transaction(&self) -> bool {
        self.in_txn
    }

    /// The executed GTID set after the last event (GTID mode).
    pub fn gtid_set(&self) -> &str {
        &self.gtid_set
    }

    /// Gives the schema history back (to keep it across reconnects).
    pub fn into_history(self) -> Option<SchemaHistory> {
        self.history
    }

    /// Sets the executed GTID set the stream starts from (GTID mode).
    pub fn set_gtid_set(&mut self, set: impl Into<String>) {
        self.gtid_set = set.into();
    }

    fn decode_error(&self, header: Option<&EventHeader>, source: DecodeError) -> ConvertError {
        let offset = header.map_or(0, start_offset);
        ConvertError::Decode { journal: self.journal.to_string(), offset, source }
    }

    /// Bounds what one call converts out of a TRANSACTION_PAYLOAD (a whole compressed
    /// transaction in one event): once `max_entries` entries or about `max_bytes` bytes are
    /// built, [`Self::convert`] returns and [`Self::has_pending`] says the rest waits for
    /// [`Self::convert_pending`]. Unbounded by default.
    pub fn set_payload_chunk(&mut self, max_entries: usize, max_bytes: usize) {
        self.payload_chunk = (max_entries.max(1), max_bytes.max(1));
    }

    /// Whether a TRANSACTION_PAYLOAD has inner events left for [`Self::convert_pending`].
    pub fn has_pending(&self) -> bool {
        self.payload.is_some()
    }

    /// Converts the next piece of a TRANSACTION_PAYLOAD (bounded as [`Self::set_payload_chunk`]
    /// says) and appends its entries to `out`. Nothing to do when [`Self::has_pending`] is false.
    ///
    /// # Errors
    /// As [`Self::convert`] (never `NeedTable`: the payload's tables were looked up before its
    /// first event was converted). After an error the rest of the payload is dropped.
    pub fn convert_pending(&mut self, out: &mut Vec<BuiltEntry>) -> Result<(), ConvertError> {
        let Some(mut pending) = self.payload.take() else { return Ok(()) };
        let first = out.len();
        let mut bytes = 0usize;
        loop {
            let mut frames = pending.payload.events_from(pending.next);
            let Some(inner) = frames.next() else { return Ok(()) };
            let inner = inner.map_err(|e| self.decode_error(Some(&pending.outer), e))?;
            pending.next = frames.offset();
            let ev = match self.decoder.decode_payload_event(inner) {
                Ok(ev) => ev,
                Err(e) => return Err(self.decode_error(Some(&pending.outer), e)),
            };
            let before = out.len();
            self.on_event(ev, out, Some(&pending.outer))?;
            bytes += out[before..].iter().map(|e| e.bytes.len()).sum::<usize>();
            if out.len() - first >= self.payload_chunk.0 || bytes >= self.payload_chunk.1 {
                if pending.next < pending.payload.payload.len() {
                    self.payload = Some(pending);
                }
                return Ok(());
            }
        }
    }

    /// Converts one raw event (header + body + CRC) and appends its entries to `out`.
    ///
    /// # Errors
    /// [`ConvertError::Decode`] for an undecodable event (unless `skip_table_errors` covers it),
    /// [`ConvertError::NeedTable`] when the history must learn a table first (nothing changed; call
    /// again), [`ConvertError::History`] when persisting a DDL fails.
    pub fn convert(&mut self, raw: &[u8], out: &mut Vec<BuiltEntry>) -> Result<(), ConvertError> {
        // A caller that did not finish a payload gets its rest first, so order is kept.
        if self.payload.is_some() {
            let chunk = std::mem::replace(&mut self.payload_chunk, (usize::MAX, usize::MAX));
            let r = self.convert_pending(out);
            self.payload_chunk = chunk;
            r?;
        }
        // A TABLE_MAP whose table the history does not know: ask for it before touching state.
        if self.history.is_some()
            && raw.len() > 4
            && raw[4] == event_type::TABLE_MAP
            && let Some(need) = self.table_needed(raw)
        {
            return Err(need);
        }
        let header = EventHeader::parse(raw).map_err(|e| self.decode_error(None, e))?;
        // Decoding a TRANSACTION_PAYLOAD only inflates it; the decoder's state changes when its
        // inner events are decoded (in `on_event`).
        let event = match self.decoder.decode(raw) {
            Ok(ev) => ev,
            Err(e) => return Err(self.decode_error(Some(&header), e)),
        };
        // The TABLE_MAPs inside a compressed transaction get the same lookups, also before any
        // inner event touches state, so that the retry after the answer starts afresh.
        if let EventData::TransactionPayload(p) = &event.data
            && self.history.is_some()
            && let Some(need) = self.payload_table_needed(&event.header, p)
        {
            return Err(need);
        }
        self.stats.events += 1;
        self.on_event(event, out, None)
    }

    /// A decoder that throws away what it learns, for peeking at table maps.
    fn probe_decoder(&self) -> Decoder {
        let mut probe = Decoder::new(self.opts.decode.clone());
        if let Some(alg) = self.decoder.checksum() {
            probe.set_checksum(alg);
        }
        probe
    }

    /// Peeks a TABLE_MAP's names (with a throw-away decode of the event body) and checks the
    /// history. `None` when the table is known, filtered out, or cannot be fetched anyway.
    fn table_needed(&self, raw: &[u8]) -> Option<ConvertError> {
        let ev = self.probe_decoder().decode(raw).ok()?;
        let EventData::TableMap(map) = ev.data else { return None };
        self.map_needed(&map, start_offset(&ev.header))
    }

    /// [`Self::table_needed`] for the TABLE_MAPs inside a TRANSACTION_PAYLOAD. Inner events have
    /// no position of their own: they are looked up, and recorded, at the payload's.
    fn payload_table_needed(
        &self,
        outer: &EventHeader,
        payload: &super::decode::TransactionPayload,
    ) -> Option<ConvertError> {
        let mut probe = None;
        for inner in payload.events() {
            // A framing or decode error is reported by `on_event` with its position.
            let Ok(inner) = inner else { return None };
            if inner.len() <= 4 || inner[4] != event_type::TABLE_MAP {
                continue;
            }
            let probe = probe.get_or_insert_with(|| self.probe_decoder());
            let Ok(ev) = probe.decode_payload_event(inner) else { return None };
            if let EventData::TableMap(map) = ev.data
                && let Some(need) = self.map_needed(&map, start_offset(outer))
            {
                return Some(need);
            }
        }
        None
    }

    /// Whether the history must learn the table of `map` (at `offset` of the current file).
    fn map_needed(&self, map: &TableMap, offset: u64) -> Option<ConvertError> {
        let history = self.history.as_ref()?;
        if !self.opts.filter.accepts(&map.schema, &map.table) {
            return None;
        }
        let name = TableName::new(map.schema.to_string(), map.table.to_string());
        if self.unavailable.contains(&name) {
            return None;
        }
        let pos = SchemaPosition::new(self.journal.to_string(), offset);
        match history.lookup(&map.schema, &map.table, &pos) {
            Lookup::Known(_) | Lookup::Absent => None,
            Lookup::Unknown | Lookup::NotTracked => {
                Some(ConvertError::NeedTable { table: name, position: pos })
            }
        }
    }

    fn header(
        &self,
        h: &EventHeader,
        schema: &str,
        table: &str,
        event_type: Option<EventType>,
        rows: Option<usize>,
    ) -> Header {
        let mut props = Vec::new();
        if self.opts.gtid_mode
            && let Some((gtid, sn, lct)) = &self.current_gtid
        {
            props.push(pair("curtGtid", gtid));
            props.push(pair("curtGtidSn", &sn.to_string()));
            props.push(pair("curtGtidLct", &lct.to_string()));
        }
        if let Some(n) = rows.filter(|n| *n > 0) {
            props.push(pair("rowsCount", &n.to_string()));
        }
        Header {
            version: Some(1),
            logfile_name: Some(self.journal.to_string()),
            logfile_offset: Some(start_offset(h) as i64),
            server_id: Some(i64::from(h.server_id)),
            serveren_code: Some("UTF-8".into()),
            execute_time: Some(i64::from(h.timestamp) * 1000),
            source_type: Some(Type::Mysql as i32),
            schema_name: Some(schema.to_owned()),
            table_name: Some(table.to_owned()),
            event_length: Some(i64::from(h.event_size)),
            event_type: event_type.map(|t| t as i32),
            props,
            gtid: (self.opts.gtid_mode && !self.gtid_set.is_empty()).then(|| self.gtid_set.clone()),
        }
    }

    fn push(
        &mut self,
        out: &mut Vec<BuiltEntry>,
        header: Header,
        entry_type: EntryType,
        store_value: &[u8],
        kind: EntryKind,
        rows: usize,
    ) {
        let mut buf = Vec::with_capacity(GAP + store_value.len());
        buf.resize(GAP, 0);
        buf.extend_from_slice(store_value);
        self.push_gapped(out, header, entry_type, buf, kind, rows);
    }

    /// Finishes an entry whose storeValue already sits in `buf` after a [`GAP`]-byte gap: the
    /// header and field keys are written into the gap, so the storeValue is never copied.
    fn push_gapped(
        &mut self,
        out: &mut Vec<BuiltEntry>,
        header: Header,
        entry_type: EntryType,
        mut buf: Vec<u8>,
        kind: EntryKind,
        rows: usize,
    ) {
        let position = EntryPosition {
            gtid: self.opts.gtid_mode.then(|| self.gtid_set.clone()),
            included: false,
            journal_name: header.logfile_name.clone(),
            position: header.logfile_offset,
            server_id: header.server_id,
            timestamp: header.execute_time,
        };
        let store_len = buf.len() - GAP;
        let mut prefix = Vec::with_capacity(128);
        pbwrite::bytes(&mut prefix, 1, &header.encode_to_vec());
        pbwrite::int(&mut prefix, 2, entry_type as i64);
        prefix.push(0x1a); // field 3, length-delimited
        pbwrite::varint(&mut prefix, store_len as u64);
        let bytes = if prefix.len() <= GAP {
            let start = GAP - prefix.len();
            buf[start..GAP].copy_from_slice(&prefix);
            Bytes::from(buf).slice(start..)
        } else {
            // A header larger than the gap (huge GTID sets): copy once.
            prefix.extend_from_slice(&buf[GAP..]);
            Bytes::from(prefix)
        };
        let closes = match kind {
            EntryKind::End => true,
            EntryKind::Ddl | EntryKind::Query => !self.in_txn,
            EntryKind::Begin { .. } | EntryKind::Rows => false,
        };
        match kind {
            EntryKind::Begin { .. } => self.in_txn = true,
            EntryKind::End => self.in_txn = false,
            _ => {}
        }
        out.push(BuiltEntry { bytes, position, kind, rows, closes });
    }

    fn on_event(
        &mut self,
        event: Event<'_>,
        out: &mut Vec<BuiltEntry>,
        outer: Option<&EventHeader>,
    ) -> Result<(), ConvertError> {
        // Events inside a TRANSACTION_PAYLOAD have no position of their own: they take the
        // payload's (file offset and size), but keep their own time and server id, as Java does
        // (docs/compatibility.md).
        let h = match outer {
            Some(o) => EventHeader {
                event_type: event.header.event_type,
                timestamp: event.header.timestamp,
                server_id: event.header.server_id,
                ..*o
            },
            None => event.header,
        };
        match event.data {
            EventData::Rotate(r) if !r.next_file.is_empty() => {
                self.journal = Arc::from(r.next_file.as_str());
            }
            EventData::Query(q) => {
                self.pending_query = None;
                self.on_query(&h, &q, out)?
            }
            EventData::Xid(xid) => {
                self.pending_query = None;
                self.push_end(&h, xid.to_string(), out);
            }
            EventData::TableMap(map) => self.on_table_map(&h, &map)?,
            EventData::Rows(rows) => self.on_rows(&h, &rows, out)?,
            EventData::TransactionPayload(p) if outer.is_none() => {
                self.payload = Some(PendingPayload { payload: p, next: 0, outer: h });
                self.convert_pending(out)?;
            }
            // A payload inside a payload (never written by MySQL): converted whole.
            EventData::TransactionPayload(p) => {
                for inner in p.events() {
                    let inner = inner.map_err(|e| self.decode_error(Some(&h), e))?;
                    let ev = match self.decoder.decode_payload_event(inner) {
                        Ok(ev) => ev,
                        Err(e) => return Err(self.decode_error(Some(&h), e)),
                    };
                    self.on_event(ev, out, Some(&h))?;
                }
            }
            EventData::Gtid(g) => self.on_mysql_gtid(&g),
            EventData::MariaGtid(g) => self.on_maria_gtid(&h, &g, out),
            EventData::RowsQuery(sql) | EventData::AnnotateRows(sql) => {
                self.pending_query = (!self.opts.filter_query_dml).then_some((h, sql));
            }
            EventData::Unknown { .. } => self.stats.unknown_events += 1,
            // No entry: FORMAT_DESCRIPTION, PREVIOUS_GTIDS, GTID lists, checkpoints, heartbeats,
            // INTVAR/RAND/USER_VAR (statement-format context), XA_PREPARE (its XA END already
            // closed the transaction), STOP, INCIDENT.
            _ => {}
        }
        Ok(())
    }

    /// Supplies the decoder with the history's definition of a mapped table. With FULL metadata
    /// the binlog is the tie-breaker: a definition that disagrees with it is replaced, for this
    /// event and in the history, by one built from the binlog (counted in
    /// [`ConvertStats::schema_corrections`]).
    fn on_table_map(&mut self, h: &EventHeader, map: &TableMap) -> Result<(), ConvertError> {
        let Some(history) = &self.history else { return Ok(()) };
        let pos = SchemaPosition::new(self.journal.to_string(), start_offset(h));
        let Lookup::Known(mut def) = history.lookup(&map.schema, &map.table, &pos) else {
            return Ok(());
        };
        if let Some(why) = tiebreak::disagreement(&def, map) {
            let fixed = tiebreak::def_from_binlog(&def, map);
            tracing::warn!(
                position = %pos,
                "schema history disagrees with the binlog's metadata for `{}`.`{}` ({why}); using the binlog's",
                map.schema,
                map.table
            );
            self.stats.schema_corrections += 1;
            if let Some(history) = self.history.as_mut() {
                history.record_table(&pos, fixed.clone())?;
            }
            def = Arc::new(fixed);
        }
        let key = (Arc::clone(&map.schema), Arc::clone(&map.table));
        let fresh = self.supplied.get(&key).is_none_or(|d| !Arc::ptr_eq(d, &def));
        if fresh {
            let mut schema = table_schema(&def, self.opts.implicit_display_width);
            // The decoder matches maps by the names the binlog spells (the history may fold them).
            schema.schema = map.schema.to_string();
            schema.table = map.table.to_string();
            self.decoder.put_schema(schema);
            self.supplied.insert(key, def);
        }
        Ok(())
    }

    /// Supplies the decoder again with the history's definition of `table` at `pos` (after the
    /// pipeline recorded a fresh `SHOW CREATE TABLE` answering [`ConvertError::TableMismatch`]).
    pub fn refresh_table(&mut self, table: &TableName, pos: &SchemaPosition) {
        let Some(history) = &self.history else { return };
        let lookup = history.lookup(&table.schema, &table.table, pos);
        let fold = history.options().lower_case_table_names;
        let same = |a: &str, b: &str| if fold { a.eq_ignore_ascii_case(b) } else { a == b };
        let mut keys: Vec<(Arc<str>, Arc<str>)> = self
            .supplied
            .keys()
            .filter(|(s, t)| same(s, &table.schema) && same(t, &table.table))
            .cloned()
            .collect();
        self.supplied.retain(|k, _| !keys.contains(k));
        match lookup {
            Lookup::Known(def) => {
                if keys.is_empty() {
                    keys.push((Arc::from(table.schema.as_str()), Arc::from(table.table.as_str())));
                }
                for (s, t) in keys {
                    let mut schema = table_schema(&def, self.opts.implicit_display_width);
                    schema.schema = s.to_string();
                    schema.table = t.to_string();
                    self.decoder.put_schema(schema);
                    self.supplied.insert((s, t), Arc::clone(&def));
                }
            }
            _ => self.decoder.remove_schema(&table.schema, &table.table),
        }
    }

    fn on_mysql_gtid(&mut self, g: &Gtid) {
        if g.anonymous {
            self.current_gtid = None;
            return;
        }
        let gtid = g.to_gtid_string();
        if self.opts.gtid_mode {
            // An unparsable set (not a MySQL one) is replaced by this transaction's GTID alone.
            let mut set: GtidSet = self.gtid_set.parse().unwrap_or_default();
            if set.add(ServerUuid(g.sid), g.tag.as_deref().unwrap_or(""), g.gno).is_ok() {
                self.gtid_set = set.to_string();
            }
        }
        self.current_gtid = Some((gtid, g.sequence_number, g.last_committed));
    }

    fn on_maria_gtid(&mut self, h: &EventHeader, g: &MariaGtid, out: &mut Vec<BuiltEntry>) {
        let gtid = g.to_string();
        if self.opts.gtid_mode {
            let mut list: MariadbGtidList = self.gtid_set.parse().unwrap_or_default();
            list.update(MariadbGtid {
                domain_id: g.domain_id,
                server_id: g.server_id,
                sequence: g.seq_no,
            });
            self.gtid_set = list.to_string();
        }
        self.current_gtid = Some((gtid, g.seq_no, g.commit_id.unwrap_or(0)));
        // MariaDB replaces the BEGIN query by its GTID event (capability 4); a standalone GTID
        // (DDL) opens no transaction.
        const FL_STANDALONE: u8 = 1;
        if g.flags & FL_STANDALONE == 0 {
            let begin = TransactionBegin { thread_id: Some(0), ..Default::default() };
            let header = self.header(h, "", "", None, None);
            let kind = EntryKind::Begin { gtid: self.opts.gtid_mode };
            self.push(out, header, EntryType::Transactionbegin, &begin.encode_to_vec(), kind, 0);
        }
    }

    fn on_query(
        &mut self,
        h: &EventHeader,
        q: &Query,
        out: &mut Vec<BuiltEntry>,
    ) -> Result<(), ConvertError> {
        let sql = q.sql.trim();
        // Transaction control is recognised by the statement's tokens, not by its text's suffix:
        // `ALTER TABLE t DROP COLUMN last_commit` is a DDL (docs/compatibility.md).
        match transaction_control(sql) {
            Some(TxnControl::XaStart { xid }) => {
                let props = vec![pair("XA_TYPE", "XA START"), pair("XA_XID", &xid)];
                self.push_begin(h, q.thread_id, props, out);
                return Ok(());
            }
            Some(TxnControl::XaEnd { xid }) => {
                let end = TransactionEnd {
                    transaction_id: Some("0".into()),
                    props: vec![pair("XA_TYPE", "XA END"), pair("XA_XID", &xid)],
                    ..Default::default()
                };
                let header = self.header(h, "", "", None, None);
                let value = end.encode_to_vec();
                self.push(out, header, EntryType::Transactionend, &value, EntryKind::End, 0);
                return Ok(());
            }
            Some(TxnControl::XaCommit { xid }) => {
                self.push_xa_outcome(h, sql, ("XA COMMIT", EventType::Xacommit), &xid, out);
                return Ok(());
            }
            Some(TxnControl::XaRollback { xid }) => {
                self.push_xa_outcome(h, sql, ("XA ROLLBACK", EventType::Xarollback), &xid, out);
                return Ok(());
            }
            Some(TxnControl::Begin) => {
                self.push_begin(h, q.thread_id, Vec::new(), out);
                return Ok(());
            }
            Some(TxnControl::Commit) => {
                self.push_end(h, "0".into(), out);
                return Ok(());
            }
            // XA PREPARE changes no table: a QUERY entry, as Canal emits it, below.
            Some(TxnControl::XaPrepare { .. }) | None => {}
        }
        // DDL, DCL or statement DML: classify (and apply to the history when there is one).
        let pos = SchemaPosition::new(self.journal.to_string(), start_offset(h));
        let parsed = match self.history.as_mut() {
            Some(history) => {
                let outcome = history.apply_ddl(&pos, &q.schema, sql)?;
                for name in outcome.changed.iter().chain(outcome.refresh.iter()) {
                    self.decoder.remove_schema(&name.schema, &name.table);
                    self.supplied.retain(|(s, t), _| !(**s == *name.schema && **t == *name.table));
                }
                outcome.query
            }
            None => crate::schema::classify_lenient(sql, &q.schema),
        };
        let et = EventType::try_from(parsed.event_type.code()).unwrap_or(EventType::Query);
        let dml = matches!(et, EventType::Insert | EventType::Update | EventType::Delete);
        let drop = (dml && self.opts.filter_query_dml)
            || (et == EventType::Query && self.opts.filter_query_dcl)
            || (parsed.is_ddl && et != EventType::Query && self.opts.filter_query_ddl)
            || !parsed.passes(|t| self.opts.filter.accepts(&t.schema, &t.table));
        if drop {
            return Ok(());
        }
        let rc = RowChange {
            event_type: Some(et as i32),
            is_ddl: Some(parsed.is_ddl),
            sql: Some(sql.to_owned()),
            ddl_schema_name: (!q.schema.is_empty()).then(|| q.schema.clone()),
            ..Default::default()
        };
        let header = self.header(h, &parsed.schema, &parsed.table, Some(et), None);
        let kind =
            if parsed.is_ddl && et != EventType::Query { EntryKind::Ddl } else { EntryKind::Query };
        self.push(out, header, EntryType::Rowdata, &rc.encode_to_vec(), kind, 0);
        Ok(())
    }

    fn on_rows(
        &mut self,
        h: &EventHeader,
        ev: &super::decode::RowsEvent<'_>,
        out: &mut Vec<BuiltEntry>,
    ) -> Result<(), ConvertError> {
        if self.opts.filter_rows {
            self.stats.filtered_events += 1;
            return Ok(());
        }
        let plan: Arc<TablePlan> = match self.decoder.table(ev.table_id) {
            Some(p) => Arc::clone(p),
            None => {
                let e = DecodeError::UnknownTable { table_id: ev.table_id };
                if self.opts.skip_table_errors {
                    self.stats.skipped_table_errors += 1;
                    return Ok(());
                }
                return Err(self.decode_error(Some(h), e));
            }
        };
        if !self.opts.filter.accepts(plan.schema(), plan.table()) {
            self.stats.filtered_events += 1;
            return Ok(());
        }
        // A definition that does not fit: before any state changes, so the pipeline can refetch
        // the table and convert the same event again.
        if let Some(e) = plan.mismatch_error() {
            if self.opts.skip_table_errors {
                self.stats.skipped_table_errors += 1;
                return Ok(());
            }
            return Err(ConvertError::TableMismatch {
                table: TableName::new(plan.schema().to_string(), plan.table().to_string()),
                position: SchemaPosition::new(self.journal.to_string(), start_offset(h)),
                source: Box::new(e),
            });
        }
        if let Some((qh, sql)) = self.pending_query.take() {
            let rc = RowChange {
                event_type: Some(EventType::Query as i32),
                sql: Some(sql),
                ..Default::default()
            };
            let header = self.header(&qh, "", "", Some(EventType::Query), None);
            self.push(out, header, EntryType::Rowdata, &rc.encode_to_vec(), EntryKind::Query, 0);
        }
        let et = match ev.kind {
            RowsKind::Write => EventType::Insert,
            RowsKind::Update | RowsKind::PartialUpdate => EventType::Update,
            RowsKind::Delete => EventType::Delete,
        };
        // Size the RowChange from what earlier events expanded to, so it is not regrown (each
        // regrowth copies every row written so far) nor left with much unused capacity (the
        // buffer becomes the stored entry).
        let estimate = (ev.rows.len() as f64 * self.expansion) as usize + 64;
        let mut rc = Vec::with_capacity(GAP + estimate);
        rc.resize(GAP, 0);
        pbwrite::int(&mut rc, 1, ev.table_id as i64);
        pbwrite::int(&mut rc, 2, et as i64);
        pbwrite::boolean(&mut rc, 10, false);
        let mut reader = match self.decoder.rows(ev) {
            Ok(r) => r,
            Err(e) => return self.table_error(h, e),
        };
        let mut before = std::mem::take(&mut self.before);
        let mut after = std::mem::take(&mut self.after);
        // Column encodings and field-filter verdicts that only depend on the plan: built once
        // per plan (per TABLE_MAP), not per row.
        let consts = match &self.consts {
            Some((p, k)) if Arc::ptr_eq(p, &plan) => Arc::clone(k),
            _ => {
                let k = Arc::new(column_consts(&plan, &self.opts.field_filter));
                self.consts = Some((Arc::clone(&plan), Arc::clone(&k)));
                k
            }
        };
        let empty = RowImage::new();
        let mut rows = 0usize;
        // Bytes of the RowData length varint, guessed from the previous row: the row is written
        // after a gap of that size, and moved in the rare case the guess was wrong.
        let mut len_guess = 2usize;
        let result = loop {
            match reader.next_row(&mut before, &mut after) {
                Ok(false) => break Ok(()),
                Ok(true) => {}
                Err(e) => break Err(e),
            }
            rows += 1;
            rc.push(0x62); // RowChange.rowDatas (12), length-delimited
            let len_at = rc.len();
            rc.resize(len_at + len_guess, 0);
            if !before.is_empty() {
                write_image(&mut rc, &consts, &before, None, 0x0a);
            }
            if !after.is_empty() {
                let cmp = if et == EventType::Update { &before } else { &empty };
                write_image(&mut rc, &consts, &after, Some(cmp), 0x12);
            }
            let row_len = rc.len() - len_at - len_guess;
            let mut len = [0u8; 10];
            let n = pbwrite::varint_into(&mut len, row_len as u64);
            if n == len_guess {
                rc[len_at..len_at + n].copy_from_slice(&len[..n]);
            } else {
                rc.splice(len_at..len_at + len_guess, len[..n].iter().copied());
                len_guess = n;
            }
        };
        self.before = before;
        self.after = after;
        if let Err(e) = result {
            return self.table_error(h, e);
        }
        self.stats.rows += rows as u64;
        if !ev.rows.is_empty() {
            let ratio = (rc.len() - GAP) as f64 / ev.rows.len() as f64;
            self.expansion = (0.7 * self.expansion + 0.3 * ratio * 1.05).clamp(1.0, 64.0);
        }
        let header = self.header(h, plan.schema(), plan.table(), Some(et), Some(rows));
        self.push_gapped(out, header, EntryType::Rowdata, rc, EntryKind::Rows, rows);
        Ok(())
    }

    /// `XA COMMIT` / `XA ROLLBACK`: a ROWDATA entry that ends the transaction (docs/protocol.md#entries).
    fn push_xa_outcome(
        &mut self,
        h: &EventHeader,
        sql: &str,
        (xa_type, et): (&str, EventType),
        xid: &str,
        out: &mut Vec<BuiltEntry>,
    ) {
        let rc = RowChange {
            event_type: Some(et as i32),
            sql: Some(sql.to_owned()),
            props: vec![pair("XA_TYPE", xa_type), pair("XA_XID", xid)],
            ..Default::default()
        };
        let header = self.header(h, "", "", Some(et), None);
        self.push(out, header, EntryType::Rowdata, &rc.encode_to_vec(), EntryKind::End, 0);
    }

    /// A TRANSACTIONEND entry: XID (its id), or a QUERY `COMMIT` (id 0, as Canal writes it).
    /// A TRANSACTIONBEGIN (a QUERY `BEGIN`, or `XA START` with its props).
    fn push_begin(
        &mut self,
        h: &EventHeader,
        thread_id: u32,
        props: Vec<Pair>,
        out: &mut Vec<BuiltEntry>,
    ) {
        let begin =
            TransactionBegin { thread_id: Some(i64::from(thread_id)), props, ..Default::default() };
        let header = self.header(h, "", "", None, None);
        let kind = EntryKind::Begin { gtid: self.opts.gtid_mode };
        self.push(out, header, EntryType::Transactionbegin, &begin.encode_to_vec(), kind, 0);
    }

    fn push_end(&mut self, h: &EventHeader, transaction_id: String, out: &mut Vec<BuiltEntry>) {
        let end = TransactionEnd { transaction_id: Some(transaction_id), ..Default::default() };
        let header = self.header(h, "", "", None, None);
        self.push(out, header, EntryType::Transactionend, &end.encode_to_vec(), EntryKind::End, 0);
        self.current_gtid = None;
    }

    fn table_error(&mut self, h: &EventHeader, e: DecodeError) -> Result<(), ConvertError> {
        if self.opts.skip_table_errors {
            self.stats.skipped_table_errors += 1;
            return Ok(());
        }
        Err(self.decode_error(Some(h), e))
    }
}

/// Writes one image as repeated Column (`tag` 0x0a = beforeColumns, 0x12 = afterColumns) straight
/// into the RowChange buffer, with Canal's `updated` flag: `compare` is the before image for after
/// columns (`None` for before columns: never updated; an empty image for inserts: always updated).
fn write_image(
    buf: &mut Vec<u8>,
    consts: &[ColumnConst],
    image: &RowImage,
    compare: Option<&RowImage>,
    tag: u8,
) {
    for (pos, cell) in image.cells().iter().enumerate() {
        let Some(k) = consts.get(cell.index as usize) else { continue };
        if !k.keep {
            continue;
        }
        let value = image.value_bytes(cell);
        let updated = match compare {
            None => false,
            Some(before) => {
                // Both images list their columns in order; usually the same ones.
                let b = match before.cells().get(pos) {
                    Some(b) if b.index == cell.index => Some(b),
                    _ => before.cells().iter().find(|b| b.index == cell.index),
                };
                match b {
                    Some(b) => before.value_bytes(b) != value,
                    None => true,
                }
            }
        };
        let usual_type = cell.sql_type == k.sql_type;
        let typed = if usual_type {
            k.fixed.len()
        } else {
            k.head.len() + 1 + pbwrite::varint_len(i64::from(cell.sql_type) as u64) + k.mid.len()
        };
        let value_len = value.map_or(0, |v| 1 + pbwrite::varint_len(v.len() as u64) + v.len());
        let len = typed + 4 + value_len + k.tail.len();
        buf.push(tag);
        pbwrite::varint(buf, len as u64);
        if usual_type {
            // index, sqlType, name, isKey, the updated and isNull keys and the value's key in one
            // copy; the two flags are then set in place.
            let at = buf.len() + k.fixed.len();
            match value {
                Some(_) => buf.extend_from_slice(&k.fixed_flags),
                None => buf.extend_from_slice(&k.fixed_flags[..k.fixed_flags.len() - 1]),
            }
            buf[at + 1] = u8::from(updated);
            buf[at + 3] = u8::from(value.is_none());
            if let Some(v) = value {
                pbwrite::varint(buf, v.len() as u64);
                buf.extend_from_slice(v);
            }
        } else {
            buf.extend_from_slice(&k.head);
            pbwrite::int(buf, col::SQL_TYPE, i64::from(cell.sql_type));
            buf.extend_from_slice(&k.mid);
            buf.extend_from_slice(&[
                UPDATED_KEY,
                u8::from(updated),
                IS_NULL_KEY,
                u8::from(value.is_none()),
            ]);
            if let Some(v) = value {
                pbwrite::bytes(buf, col::VALUE, v);
            }
        }
        if !k.tail.is_empty() {
            buf.extend_from_slice(&k.tail);
        }
    }
}

/// Key of Column.updated (a varint field).
const UPDATED_KEY: u8 = (col::UPDATED << 3) as u8;
/// Key of Column.isNull (a varint field).
const IS_NULL_KEY: u8 = (col::IS_NULL << 3) as u8;
/// Key of Column.value (length-delimited).
const VALUE_KEY: u8 = ((col::VALUE << 3) | 2) as u8;

/// The parts of a column's encoding that depend only on the table plan, encoded once per plan:
/// `index` (head), `name` + `isKey` (mid), `mysqlType` (tail), and whether the field filter
/// keeps the column.
#[derive(Debug, Clone, Default)]
struct ColumnConst {
    /// `head`, `sql_type_field` and `mid` in one piece: the usual case is one copy.
    fixed: Vec<u8>,
    /// `fixed`, then `updated` and `isNull` (both false) and the key of `value`.
    fixed_flags: Vec<u8>,
    head: Vec<u8>,
    /// The `sqlType` field for the column's usual type (negative codes take 11 bytes to encode;
    /// a value promoted to another type is encoded on the spot).
    sql_type: i32,
    sql_type_field: Vec<u8>,
    mid: Vec<u8>,
    tail: Vec<u8>,
    keep: bool,
}

fn column_consts(plan: &TablePlan, field_filter: &FieldFilter) -> Vec<ColumnConst> {
    plan.columns
        .iter()
        .map(|cp| {
            let mut k = ColumnConst::default();
            pbwrite::int(&mut k.head, col::INDEX, cp.index as i64);
            k.sql_type = cp.sql_type;
            pbwrite::int(&mut k.sql_type_field, col::SQL_TYPE, i64::from(cp.sql_type));
            pbwrite::bytes(&mut k.mid, col::NAME, cp.name.as_bytes());
            pbwrite::boolean(&mut k.mid, col::IS_KEY, cp.is_key);
            if let Some(t) = &cp.mysql_type {
                pbwrite::bytes(&mut k.tail, col::MYSQL_TYPE, t.as_bytes());
            }
            k.fixed = [&k.head[..], &k.sql_type_field, &k.mid].concat();
            k.fixed_flags = [&k.fixed[..], &[UPDATED_KEY, 0, IS_NULL_KEY, 0, VALUE_KEY]].concat();
            k.keep = field_filter.keeps(plan.schema(), plan.table(), &cp.name);
            k
        })
        .collect()
}

/// Room left before a storeValue for the entry's header and keys (see `push_gapped`).
const GAP: usize = 512;

/// Start offset of an event: `log_pos − event_size` (0 for artificial events and payload members).
pub fn start_offset(h: &EventHeader) -> u64 {
    u64::from(h.log_pos).saturating_sub(u64::from(h.event_size))
}

fn pair(key: &str, value: &str) -> Pair {
    Pair { key: Some(key.to_owned()), value: Some(value.to_owned()) }
}

/// The decoder's input shape for a table definition of the history; `display_width` adds the
/// implicit display widths (see [`ConvertOptions::implicit_display_width`]).
pub fn table_schema(def: &TableDef, display_width: bool) -> TableSchema {
    TableSchema {
        schema: def.schema.clone(),
        table: def.name.clone(),
        columns: def
            .columns
            .iter()
            .map(|c| ColumnMeta {
                name: c.name.clone(),
                mysql_type: if display_width {
                    with_display_width(&c.mysql_type)
                } else {
                    c.mysql_type.clone()
                },
                unsigned: c.unsigned,
                is_pk: c.is_pk,
                charset: c.effective_charset(def).map(str::to_owned),
            })
            .collect(),
    }
}

/// `int` → `int(11)`, `int unsigned` → `int(10) unsigned`, `decimal` → `decimal(10,0)`,
/// `decimal(5)` → `decimal(5,0)`, `bit` → `bit(1)`, `char` → `char(1)`, `year` → `year(4)`:
/// the widths MariaDB and MySQL 5.x print for types declared without one.
pub fn with_display_width(t: &str) -> String {
    let (base, rest) = match t.find(['(', ' ']) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let unsigned = rest.contains("unsigned");
    let width = match (base, unsigned) {
        ("tinyint", false) => "4",
        ("tinyint", true) => "3",
        ("smallint", false) => "6",
        ("smallint", true) => "5",
        ("mediumint", false) => "9",
        ("mediumint", true) => "8",
        ("int", false) => "11",
        ("int", true) => "10",
        ("bigint", _) => "20",
        ("bit" | "char" | "binary", _) => "1",
        ("year", _) => "4",
        ("decimal", _) => {
            return match rest.strip_prefix('(') {
                None => format!("decimal(10,0){rest}"),
                Some(r) if !r.split(')').next().unwrap_or_default().contains(',') => {
                    let (p, after) = r.split_once(')').unwrap_or((r, ""));
                    format!("decimal({p},0){after}")
                }
                Some(_) => t.to_owned(),
            };
        }
        _ => return t.to_owned(),
    };
    if rest.starts_with('(') { t.to_owned() } else { format!("{base}({width}){rest}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_widths_like_show_create_table() {
        for (from, to) in [
            ("int", "int(11)"),
            ("int unsigned", "int(10) unsigned"),
            ("int(5) unsigned zerofill", "int(5) unsigned zerofill"),
            ("bigint unsigned", "bigint(20) unsigned"),
            ("tinyint", "tinyint(4)"),
            ("decimal", "decimal(10,0)"),
            ("decimal(5)", "decimal(5,0)"),
            ("decimal(5,2) unsigned", "decimal(5,2) unsigned"),
            ("char", "char(1)"),
            ("varchar(20)", "varchar(20)"),
            ("double", "double"),
            ("enum('a','b')", "enum('a','b')"),
        ] {
            assert_eq!(with_display_width(from), to, "{from}");
        }
    }
}

#[cfg(test)]
mod gtid_tests {
    use super::*;

    /// The executed-set bookkeeping of GTID mode uses the replica module's GTID types.
    #[test]
    fn gtid_events_extend_the_executed_set() {
        let mut c =
            Converter::new(ConvertOptions { gtid_mode: true, ..Default::default() }, None, "b");
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        c.set_gtid_set(format!("{u}:1-4"));
        let sid = u.parse::<ServerUuid>().unwrap().0;
        let g = |gno| Gtid {
            anonymous: false,
            flags: 0,
            sid,
            tag: None,
            gno,
            last_committed: 0,
            sequence_number: 0,
        };
        c.on_mysql_gtid(&g(5));
        assert_eq!(c.gtid_set(), format!("{u}:1-5"));
        c.on_mysql_gtid(&g(7));
        assert_eq!(c.gtid_set(), format!("{u}:1-5:7"));

        let mut m =
            Converter::new(ConvertOptions { gtid_mode: true, ..Default::default() }, None, "b");
        m.set_gtid_set("0-1-8,1-2-3");
        let h = EventHeader {
            timestamp: 0,
            event_type: 162,
            server_id: 1,
            event_size: 0,
            log_pos: 0,
            flags: 0,
        };
        let mg = MariaGtid { domain_id: 0, server_id: 1, seq_no: 9, flags: 1, commit_id: None };
        m.on_maria_gtid(&h, &mg, &mut Vec::new());
        assert_eq!(m.gtid_set(), "0-1-9,1-2-3");
    }
}
