//! Pure binlog decoding: bytes in, values out, no I/O.
//!
//! * [`Decoder`] carries what one event needs from earlier ones (the FORMAT_DESCRIPTION, the checksum
//!   algorithm, the table maps and the per-table [`TablePlan`]s) and turns one raw event buffer
//!   (header + body + CRC, as the replica connection or [`BinlogFile`] hands it over) into an
//!   [`Event`].
//! * Rows events are decoded lazily: [`Decoder::rows`] gives a [`RowsReader`] that writes Canal's
//!   value strings (docs/protocol.md#values) for one row at a time into reused [`RowImage`] buffers.
//! * Nothing here panics, loops without progress or allocates more than the input could justify:
//!   every length read from the input is checked against the bytes that remain, and failures are
//!   [`DecodeError`]s that say what was being read and at which offset of the event.
//!
//! ```
//! use canal_core::binlog::decode::{BinlogFile, Decoder, EventData, RowImage};
//!
//! fn dump(file: &[u8]) -> Result<(), canal_core::binlog::decode::DecodeError> {
//!     let mut dec = Decoder::default();
//!     let (mut before, mut after) = (RowImage::new(), RowImage::new());
//!     for item in BinlogFile::new(file)? {
//!         let (_offset, buf) = item?;
//!         let ev = dec.decode(buf)?;
//!         if let EventData::Rows(rows) = &ev.data {
//!             let mut reader = dec.rows(rows)?;
//!             while reader.next_row(&mut before, &mut after)? {
//!                 for (cell, value) in after.iter() {
//!                     let col = &reader.plan().columns[cell.index as usize];
//!                     println!("{} sqlType={} {:?}", col.name, cell.sql_type, value);
//!                 }
//!             }
//!         }
//!     }
//!     Ok(())
//! }
//! ```

mod cursor;
mod event;
mod file;
pub mod javafmt;
mod json;
mod rows;
mod table_map;
mod value;

use std::collections::HashMap;
use std::sync::Arc;

pub use event::{
    ChecksumAlg, Event, EventData, EventHeader, FormatDescription, Gtid, GtidInterval, GtidSidSet,
    Heartbeat, IntVar, MariaGtid, PayloadEvents, Query, Rand, Rotate, RowsEvent, RowsKind,
    TransactionPayload, UserVar, UserVarValue, XaPrepare, event_type,
};
pub use file::{BINLOG_MAGIC, BinlogFile, BinlogReader};
pub use rows::{Cell, ColumnPlan, RowImage, RowsReader, TablePlan, mysql_type_fits, sql_types};
pub use table_map::{ColumnMeta, MapColumn, TableMap, TableSchema};
pub(crate) use value::ty;
pub use value::{TextCharset, TimeZoneOffset};

/// Why an event (or a row in it) could not be decoded. Offsets are byte offsets inside the event
/// buffer (header included) unless the variant says otherwise.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated {what}: {need} bytes needed at offset {offset}, {have} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes that were left.
        have: usize,
    },
    /// A field holds a value that cannot be right (bad length, unknown code...).
    #[error("invalid {what} at offset {offset}: {detail}")]
    Invalid {
        /// The field being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// What was wrong.
        detail: String,
    },
    /// A binlog file does not start with `\xfebin`.
    #[error("not a binlog file: magic is {found:02x?}, expected fe 62 69 6e")]
    BadMagic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// The event header's size disagrees with the buffer.
    #[error(
        "event at file offset {file_offset} declares size {declared}, but {available} bytes are available"
    )]
    BadEventSize {
        /// Offset of the event in its file or stream (0 for a standalone buffer).
        file_offset: u64,
        /// `event_size` from the header.
        declared: u64,
        /// What the buffer or file really has.
        available: u64,
    },
    /// The CRC32 stored in an event does not match its bytes.
    #[error(
        "checksum mismatch in event type {event_type} (log_pos {log_pos}): stored {stored:#010x}, computed {computed:#010x}"
    )]
    ChecksumMismatch {
        /// Event type code.
        event_type: u8,
        /// `log_pos` from its header.
        log_pos: u32,
        /// CRC found in the event.
        stored: u32,
        /// CRC of the event bytes.
        computed: u32,
    },
    /// A rows event refers to a table id no TABLE_MAP announced.
    #[error("rows event for table id {table_id} without a preceding TABLE_MAP")]
    UnknownTable {
        /// The table id.
        table_id: u64,
    },
    /// The schema supplied for a table has a different column count than its TABLE_MAP.
    #[error(
        "column count mismatch for `{schema}`.`{table}`: binlog has {binlog} columns, supplied schema has {supplied}"
    )]
    ColumnCountMismatch {
        /// Database name.
        schema: String,
        /// Table name.
        table: String,
        /// Columns in the TABLE_MAP.
        binlog: usize,
        /// Columns in the supplied [`TableSchema`].
        supplied: usize,
    },
    /// The schema supplied for a table gives a column a type the TABLE_MAP contradicts.
    #[error(
        "column type mismatch for `{schema}`.`{table}`: column {column} is binlog type {binlog_type}, supplied schema says `{supplied}`"
    )]
    ColumnTypeMismatch {
        /// Database name.
        schema: String,
        /// Table name.
        table: String,
        /// 0-based column index.
        column: usize,
        /// Real binlog type code of the column.
        binlog_type: u8,
        /// The supplied `mysqlType`.
        supplied: String,
    },
    /// A column type (or a type/meta combination) this decoder cannot read.
    #[error(
        "unsupported column type {column_type} (meta {meta:#06x}) in column {column} of `{schema}`.`{table}`"
    )]
    UnsupportedColumnType {
        /// Database name.
        schema: String,
        /// Table name.
        table: String,
        /// 0-based column index.
        column: usize,
        /// Binlog type code.
        column_type: u8,
        /// Type metadata.
        meta: u16,
    },
    /// A compressed payload (MySQL TRANSACTION_PAYLOAD, MariaDB compressed events) failed to inflate.
    #[error("cannot decompress {what}: {detail}")]
    Decompress {
        /// The payload kind.
        what: &'static str,
        /// The decompressor's message.
        detail: String,
    },
    /// Reading the underlying file failed.
    #[error("i/o error reading binlog: {0}")]
    Io(String),
}

/// Decoding options that are fixed for a decoder's lifetime.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Verify the CRC32 of events when the FORMAT_DESCRIPTION announces one (default true).
    pub verify_checksum: bool,
    /// Charset for text columns and query text (Canal's `connectionCharset`, default UTF-8).
    pub charset: TextCharset,
    /// Zone in which TIMESTAMP columns are rendered (Canal: the JVM's default zone; default UTC).
    pub time_zone: TimeZoneOffset,
    /// Pad BINARY(n) values with the trailing 0x00 bytes the server stripped, when the declared length
    /// is known (default true). Java Canal emits the stripped bytes; see `rows.rs`.
    pub pad_binary: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            verify_checksum: true,
            charset: TextCharset::Utf8,
            time_zone: TimeZoneOffset::UTC,
            pad_binary: true,
        }
    }
}

/// Per-stream decoding state: FORMAT_DESCRIPTION, checksum algorithm, table maps and plans, and the
/// caller-supplied schemas the plans are built from. Cloning is cheap (plans are shared) and gives a
/// snapshot, e.g. to decode rows events on worker threads.
#[derive(Debug, Clone)]
pub struct Decoder {
    opts: DecodeOptions,
    fde: FormatDescription,
    /// `None` until a FORMAT_DESCRIPTION was seen: the fake ROTATE a server sends first may then carry
    /// a CRC that nothing announced yet.
    checksum: Option<ChecksumAlg>,
    tables: HashMap<u64, Arc<TablePlan>>,
    schemas: HashMap<(String, String), Arc<TableSchema>>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DecodeOptions::default())
    }
}

impl Decoder {
    /// A decoder that has seen no event yet.
    pub fn new(opts: DecodeOptions) -> Self {
        Decoder {
            opts,
            fde: FormatDescription::default_v4(),
            checksum: None,
            tables: HashMap::new(),
            schemas: HashMap::new(),
        }
    }

    /// The options this decoder was built with.
    pub fn options(&self) -> &DecodeOptions {
        &self.opts
    }

    /// The FORMAT_DESCRIPTION in force (a v4 default before the first one).
    pub fn format_description(&self) -> &FormatDescription {
        &self.fde
    }

    /// The checksum algorithm in force, `None` before the first FORMAT_DESCRIPTION.
    pub fn checksum(&self) -> Option<ChecksumAlg> {
        self.checksum
    }

    /// Declares the checksum algorithm before any FORMAT_DESCRIPTION arrives (a replica that asked
    /// for `@master_binlog_checksum` knows it).
    pub fn set_checksum(&mut self, alg: ChecksumAlg) {
        self.checksum = Some(alg);
    }

    /// The plan built from the latest TABLE_MAP for `table_id`.
    pub fn table(&self, table_id: u64) -> Option<&Arc<TablePlan>> {
        self.tables.get(&table_id)
    }

    /// Supplies (or replaces) the schema of a table; it is used for the TABLE_MAPs that follow, and
    /// for plans already built for that table (they are rebuilt now).
    pub fn put_schema(&mut self, schema: TableSchema) {
        let key = (schema.schema.clone(), schema.table.clone());
        let schema = Arc::new(schema);
        self.schemas.insert(key, Arc::clone(&schema));
        let ids: Vec<u64> = self
            .tables
            .iter()
            .filter(|(_, p)| *p.map.schema == *schema.schema && *p.map.table == *schema.table)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(old) = self.tables.get(&id) {
                let plan = TablePlan::build(Arc::clone(&old.map), Some(&schema), &self.opts);
                self.tables.insert(id, Arc::new(plan));
            }
        }
    }

    /// Forgets a supplied schema (after a DDL, until the caller supplies the new one).
    pub fn remove_schema(&mut self, schema: &str, table: &str) {
        self.schemas.remove(&(schema.to_owned(), table.to_owned()));
    }

    /// Forgets every table map (Canal does this on ROTATE-less resets; MySQL re-sends maps per
    /// transaction anyway).
    pub fn clear_tables(&mut self) {
        self.tables.clear();
    }

    /// Decodes one event. `buf` is exactly one event: 19-byte header, body and, when the checksum
    /// algorithm is CRC32, the 4-byte CRC.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        self.decode_inner(buf, false)
    }

    /// Decodes one event taken out of a TRANSACTION_PAYLOAD: such events never carry a CRC.
    pub fn decode_payload_event<'a>(&mut self, buf: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        self.decode_inner(buf, true)
    }

    fn decode_inner<'a>(&mut self, buf: &'a [u8], no_crc: bool) -> Result<Event<'a>, DecodeError> {
        let header = EventHeader::parse(buf)?;
        if header.event_size as usize != buf.len() {
            return Err(DecodeError::BadEventSize {
                file_offset: 0,
                declared: u64::from(header.event_size),
                available: buf.len() as u64,
            });
        }
        if header.event_type == event_type::FORMAT_DESCRIPTION {
            let fde = FormatDescription::parse(buf)?;
            if fde.checksum == ChecksumAlg::Crc32 && self.opts.verify_checksum && !no_crc {
                verify_crc(buf, &header)?;
            }
            self.fde = fde.clone();
            self.checksum = Some(fde.checksum);
            // A new FORMAT_DESCRIPTION starts a new file (or a server restart): table ids restart.
            self.tables.clear();
            return Ok(Event { header, data: EventData::FormatDescription(fde) });
        }
        let body_end = match (no_crc, self.checksum) {
            (true, _) => buf.len(),
            (false, Some(ChecksumAlg::Crc32)) => {
                if buf.len() < event::HEADER_LEN + 4 {
                    return Err(DecodeError::Truncated {
                        what: "event checksum",
                        offset: event::HEADER_LEN,
                        need: 4,
                        have: buf.len() - event::HEADER_LEN,
                    });
                }
                if self.opts.verify_checksum {
                    verify_crc(buf, &header)?;
                }
                buf.len() - 4
            }
            (false, Some(_)) => buf.len(),
            // Before any FORMAT_DESCRIPTION: the fake ROTATE of a dump may carry a CRC that nothing
            // announced: a replica that declares itself checksum-aware gets one even before the FDE
            // (seen on MariaDB 10.11 with binlog_checksum CRC32 and NONE: a 13-byte name arrives as
            // 17 bytes). Strip 4 bytes only when they are a valid
            // CRC32 of the rest: a real name matching by chance has odds of 2^-32.
            (false, None) => {
                if buf.len() >= event::HEADER_LEN + 4 && crc_matches(buf) {
                    buf.len() - 4
                } else {
                    buf.len()
                }
            }
        };
        let data = event::parse_body(self, &header, &buf[..body_end])?;
        if let EventData::TableMap(map) = &data {
            let schema = self.schemas.get(&(map.schema.to_string(), map.table.to_string()));
            let plan = TablePlan::build(Arc::clone(map), schema.map(|s| &**s), &self.opts);
            self.tables.insert(map.table_id, Arc::new(plan));
        }
        Ok(Event { header, data })
    }

    /// A reader over the rows of a rows event, using the plan of its table.
    pub fn rows<'e>(&self, ev: &'e RowsEvent<'_>) -> Result<RowsReader<'e>, DecodeError> {
        let plan = self
            .tables
            .get(&ev.table_id)
            .ok_or(DecodeError::UnknownTable { table_id: ev.table_id })?;
        RowsReader::new(Arc::clone(plan), ev, &self.opts)
    }
}

fn crc_matches(buf: &[u8]) -> bool {
    let (body, tail) = buf.split_at(buf.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    event_crc(body) == stored
}

/// CRC32 of an event without its checksum. A FORMAT_DESCRIPTION's CRC is computed with
/// `LOG_EVENT_BINLOG_IN_USE_F` (flags bit 0x1, set while the file is open) cleared, as MySQL's
/// `event_checksum_test` does; the server rewrites that flag without updating the CRC.
fn event_crc(body: &[u8]) -> u32 {
    const FLAGS_OFFSET: usize = 17;
    if body.len() > FLAGS_OFFSET
        && body[4] == event_type::FORMAT_DESCRIPTION
        && body[FLAGS_OFFSET] & 1 != 0
    {
        let mut h = crc32fast::Hasher::new();
        h.update(&body[..FLAGS_OFFSET]);
        h.update(&[body[FLAGS_OFFSET] & !1]);
        h.update(&body[FLAGS_OFFSET + 1..]);
        return h.finalize();
    }
    crc32fast::hash(body)
}

fn verify_crc(buf: &[u8], header: &EventHeader) -> Result<(), DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Truncated {
            what: "event checksum",
            offset: 0,
            need: 4,
            have: buf.len(),
        });
    }
    let (body, tail) = buf.split_at(buf.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = event_crc(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch {
            event_type: header.event_type,
            log_pos: header.log_pos,
            stored,
            computed,
        });
    }
    Ok(())
}
