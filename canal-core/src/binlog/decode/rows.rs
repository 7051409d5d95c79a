//! Row decoding straight into Canal's value strings (docs/protocol.md#values): a [`TablePlan`] built once per
//! TABLE_MAP (types, metadata, signedness, names as `Arc<str>`) and a [`RowsReader`] that writes
//! each row image into a reused [`RowImage`] — one UTF-8 byte buffer for all values of the row, no
//! allocation per column. Everything that depends only on the table or the event (column kinds,
//! which columns are present) is worked out before the first row.
//!
//! Deliberate differences from Java Canal (all documented in the report and the golden tests):
//! * MEDIUMINT is sign-extended before the unsigned fix-up (Canal does this too; mysql_common did
//!   not), YEAR 0 is `0000`.
//! * BINARY(n) values are padded back to n bytes with the 0x00 the server stripped
//!   ([`super::DecodeOptions::pad_binary`]); Canal emits the stripped bytes.
//! * Without a supplied schema, FULL metadata decides text vs binary (charset 63 = binary), which
//!   is what Canal gets from its table-meta cache; with neither, TEXT columns are BLOB like in Canal.
//! * Old TIME with exactly 100 hours prints `100:..` (Canal's `d > 100` check prints `00`).
//! * VECTOR (MySQL 9) is rendered as ISO-8859-1 bytes with sqlType BLOB; Canal does not know the type.
//! * MariaDB INET6/UUID/INET4 (fixed BINARY in the binlog) are binary when the schema's type text
//!   names them: ISO-8859-1 bytes, sqlType BLOB, re-padded.

use std::borrow::Cow;
use std::sync::Arc;

use super::cursor::{be_uint, le_uint};
use super::event::{RowsEvent, RowsKind};
use super::table_map::{TableMap, TableSchema};
use super::value::{self, TextCharset, TimeZoneOffset, ty};
use super::{DecodeError, DecodeOptions, javafmt, json};

/// `java.sql.Types` codes Canal puts in `Column.sqlType`.
pub mod sql_types {
    #![allow(missing_docs)]
    pub const BIT: i32 = -7;
    pub const TINYINT: i32 = -6;
    pub const SMALLINT: i32 = 5;
    pub const INTEGER: i32 = 4;
    pub const BIGINT: i32 = -5;
    pub const REAL: i32 = 7;
    pub const DOUBLE: i32 = 8;
    pub const DECIMAL: i32 = 3;
    pub const CHAR: i32 = 1;
    pub const VARCHAR: i32 = 12;
    pub const DATE: i32 = 91;
    pub const TIME: i32 = 92;
    pub const TIMESTAMP: i32 = 93;
    pub const BINARY: i32 = -2;
    pub const VARBINARY: i32 = -3;
    pub const LONGVARBINARY: i32 = -4;
    pub const BLOB: i32 = 2004;
    pub const CLOB: i32 = 2005;
    pub const OTHER: i32 = 1111;
}
use sql_types as st;

/// How one column's bytes are read and rendered (precomputed from type + meta + schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tiny,
    Short,
    Int24,
    Long,
    LongLong,
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Bit {
        nbits: u16,
    },
    Timestamp,
    Timestamp2 {
        fsp: u8,
    },
    Datetime,
    Datetime2 {
        fsp: u8,
    },
    Time,
    Time2 {
        fsp: u8,
    },
    Date,
    Year,
    Enum {
        len: u8,
    },
    Set {
        len: u8,
    },
    /// BLOB/TEXT/GEOMETRY/VECTOR: `len_bytes` little-endian length, then the bytes.
    Blob {
        len_bytes: u8,
        text: bool,
    },
    /// VARCHAR/VAR_STRING/STRING: 1 or 2 length bytes; `pad_to` re-pads BINARY(n).
    Str {
        len_bytes: u8,
        binary: bool,
        pad_to: u16,
    },
    Json {
        len_bytes: u8,
    },
    Unsupported,
}

/// One column of a [`TablePlan`].
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// 0-based ordinal.
    pub index: usize,
    /// Name from the supplied schema, else FULL metadata, else `@<index+1>` (as mysqlbinlog).
    pub name: Arc<str>,
    /// Whether `name` is real (schema or metadata) rather than positional.
    pub name_known: bool,
    /// Type text from the supplied schema (Canal's `mysqlType`), if any.
    pub mysql_type: Option<Arc<str>>,
    /// Part of the primary key (schema, else metadata).
    pub is_key: bool,
    /// UNSIGNED (schema, else SIGNEDNESS metadata, else false).
    pub unsigned: bool,
    /// Nullable per the TABLE_MAP null bitmap.
    pub nullable: bool,
    /// Binlog type code.
    pub binlog_type: u8,
    /// Real type (ENUM/SET/STRING unpacked from STRING metadata).
    pub real_type: u8,
    /// Type metadata.
    pub meta: u16,
    /// sqlType of a non-NULL value before the per-value unsigned promotion.
    pub sql_type: i32,
    /// sqlType Canal reports for a NULL value of this column.
    pub null_sql_type: i32,
    kind: Kind,
}

/// Everything needed to decode the rows of one table, built once per TABLE_MAP (and rebuilt when
/// the caller supplies a new schema).
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// The TABLE_MAP it was built from.
    pub map: Arc<TableMap>,
    /// Columns in table order.
    pub columns: Vec<ColumnPlan>,
    /// A supplied schema had a different column count: `(binlog, supplied)`. Rows of this table then
    /// fail with [`DecodeError::ColumnCountMismatch`] until a matching schema is supplied.
    pub schema_mismatch: Option<(usize, usize)>,
    /// A supplied schema's column type contradicts the TABLE_MAP: `(column, its mysqlType)`. The
    /// schema is not used and rows fail with [`DecodeError::ColumnTypeMismatch`].
    pub type_mismatch: Option<(usize, String)>,
    /// Whether a supplied schema was used.
    pub has_schema: bool,
}

impl TablePlan {
    /// Database name.
    pub fn schema(&self) -> &Arc<str> {
        &self.map.schema
    }

    /// Table name.
    pub fn table(&self) -> &Arc<str> {
        &self.map.table
    }

    /// Builds the plan. A schema whose column count differs is not used (positional names), and the
    /// mismatch is recorded.
    pub fn build(
        map: Arc<TableMap>,
        schema: Option<&TableSchema>,
        opts: &DecodeOptions,
    ) -> TablePlan {
        let mut mismatch = None;
        let schema = match schema {
            Some(s) if s.columns.len() != map.columns.len() => {
                mismatch = Some((map.columns.len(), s.columns.len()));
                None
            }
            other => other,
        };
        let mut type_mismatch = None;
        let schema = match schema {
            Some(s) => {
                let bad = s
                    .columns
                    .iter()
                    .zip(&map.columns)
                    .position(|(c, mc)| !mysql_type_fits(&c.mysql_type, mc.real_type));
                match bad {
                    Some(i) => {
                        type_mismatch = Some((i, s.columns[i].mysql_type.clone()));
                        None
                    }
                    None => Some(s),
                }
            }
            None => None,
        };
        let columns = map
            .columns
            .iter()
            .enumerate()
            .map(|(i, mc)| {
                let sc = schema.map(|s| &s.columns[i]);
                let mysql_type: Option<Arc<str>> = sc.map(|c| Arc::from(c.mysql_type.as_str()));
                let lower_type = sc.map(|c| c.mysql_type.to_ascii_lowercase());
                let (name, name_known) = match (sc, &mc.name) {
                    (Some(c), _) => (Arc::from(c.name.as_str()), true),
                    (None, Some(n)) => (Arc::clone(n), true),
                    (None, None) => (Arc::from(format!("@{}", i + 1).as_str()), false),
                };
                let unsigned = match (sc, &lower_type) {
                    (Some(c), Some(t)) => c.unsigned || t.contains("unsigned"),
                    _ => mc.unsigned.unwrap_or(false),
                };
                let is_key = match sc {
                    Some(c) => c.is_pk,
                    None => mc.is_pk.unwrap_or(false),
                };
                // Binary strings: Canal looks for "binary" in the type text; without a schema the
                // binary collation (63) from FULL metadata says the same. MariaDB's INET6/UUID/INET4
                // are fixed BINARY in the binlog: treated as binary too (Canal would decode their
                // bytes as text and mangle them).
                let binary = match (&lower_type, sc) {
                    (Some(t), Some(c)) => {
                        t.contains("binary")
                            || ["inet6", "inet4", "uuid"].iter().any(|p| t.starts_with(p))
                            || c.charset.as_deref() == Some("binary")
                    }
                    _ => mc.charset == Some(63),
                };
                // TEXT vs BLOB: Canal's `isText` is an exact match on the type text; without a schema
                // a non-binary charset from metadata marks text. MariaDB's JSON is a LONGTEXT
                // (utf8mb4) in the binlog: text too, whether the schema came from its CREATE
                // statement (`json`) or from SHOW CREATE TABLE (`longtext`); MySQL's JSON has a
                // binlog type of its own and never reaches this.
                let text = match &lower_type {
                    Some(t) => matches!(
                        t.as_str(),
                        "tinytext" | "text" | "mediumtext" | "longtext" | "json"
                    ),
                    None => mc.charset.is_some_and(|c| c != 63),
                };
                let (kind, sql_type, null_sql_type) =
                    plan_kind(mc.real_type, mc.binlog_type, mc.meta, binary, text, opts);
                ColumnPlan {
                    index: i,
                    name,
                    name_known,
                    mysql_type,
                    is_key,
                    unsigned,
                    nullable: mc.nullable,
                    binlog_type: mc.binlog_type,
                    real_type: mc.real_type,
                    meta: mc.meta,
                    sql_type,
                    null_sql_type,
                    kind,
                }
            })
            .collect();
        TablePlan {
            map,
            columns,
            schema_mismatch: mismatch,
            type_mismatch,
            has_schema: schema.is_some(),
        }
    }

    /// The error rows of this table fail with when the supplied schema did not fit.
    pub fn mismatch_error(&self) -> Option<DecodeError> {
        if let Some((binlog, supplied)) = self.schema_mismatch {
            return Some(DecodeError::ColumnCountMismatch {
                schema: self.map.schema.to_string(),
                table: self.map.table.to_string(),
                binlog,
                supplied,
            });
        }
        let (column, supplied) = self.type_mismatch.clone()?;
        Some(DecodeError::ColumnTypeMismatch {
            schema: self.map.schema.to_string(),
            table: self.map.table.to_string(),
            column,
            binlog_type: self.map.columns.get(column).map_or(0, |c| c.real_type),
            supplied,
        })
    }
}

/// Every binlog type code the decoder reads; a type outside this list is never a contradiction.
const KNOWN_TYPES: &[u8] = &[
    ty::DECIMAL,
    ty::TINY,
    ty::SHORT,
    ty::LONG,
    ty::FLOAT,
    ty::DOUBLE,
    ty::TIMESTAMP,
    ty::LONGLONG,
    ty::INT24,
    ty::DATE,
    ty::TIME,
    ty::DATETIME,
    ty::YEAR,
    ty::NEWDATE,
    ty::VARCHAR,
    ty::BIT,
    ty::TIMESTAMP2,
    ty::DATETIME2,
    ty::TIME2,
    ty::JSON,
    ty::NEWDECIMAL,
    ty::ENUM,
    ty::SET,
    ty::TINY_BLOB,
    ty::MEDIUM_BLOB,
    ty::LONG_BLOB,
    ty::BLOB,
    ty::VAR_STRING,
    ty::STRING,
    ty::GEOMETRY,
];

const BLOBS: &[u8] = &[ty::TINY_BLOB, ty::MEDIUM_BLOB, ty::LONG_BLOB, ty::BLOB];

/// Whether a column type text (`mysqlType`, e.g. `int(10) unsigned`) can describe a column the
/// TABLE_MAP gives real type `real`. Only a known contradiction is `false` (an `int` column that
/// the binlog says is a VARCHAR); type names or binlog types this does not know fit.
pub fn mysql_type_fits(mysql_type: &str, real: u8) -> bool {
    let t = mysql_type.trim().to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or("");
    let expected: &[u8] = match base {
        "tinyint" | "bool" | "boolean" => &[ty::TINY],
        "smallint" => &[ty::SHORT],
        "mediumint" => &[ty::INT24],
        "int" | "integer" => &[ty::LONG],
        "bigint" | "serial" => &[ty::LONGLONG],
        "float" => &[ty::FLOAT, ty::DOUBLE],
        "double" | "real" => &[ty::DOUBLE],
        "decimal" | "numeric" | "dec" | "fixed" => &[ty::NEWDECIMAL, ty::DECIMAL],
        "bit" => &[ty::BIT],
        "timestamp" => &[ty::TIMESTAMP, ty::TIMESTAMP2],
        "datetime" => &[ty::DATETIME, ty::DATETIME2],
        "time" => &[ty::TIME, ty::TIME2],
        "date" => &[ty::DATE, ty::NEWDATE],
        "year" => &[ty::YEAR],
        "enum" => &[ty::ENUM],
        "set" => &[ty::SET],
        "char" | "binary" | "inet6" | "inet4" | "uuid" => &[ty::STRING],
        "varchar" | "varbinary" => &[ty::VARCHAR, ty::VAR_STRING],
        "tinyblob" | "blob" | "mediumblob" | "longblob" | "tinytext" | "text" | "mediumtext"
        | "longtext" => BLOBS,
        // MySQL's JSON type; MariaDB's JSON is a LONGTEXT.
        "json" => &[ty::JSON, ty::TINY_BLOB, ty::MEDIUM_BLOB, ty::LONG_BLOB, ty::BLOB],
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => &[ty::GEOMETRY],
        _ => return true,
    };
    !KNOWN_TYPES.contains(&real) || expected.contains(&real)
}

/// Decoder kind, non-NULL sqlType and NULL sqlType for a column (RowsLogBuffer `fetchValue` /
/// `mysqlToJavaType` followed by LogEventConvert's BINARY/BLOB remapping). The NULL type equals the
/// value type except for SET (BINARY, remapped to BLOB) and JSON/VECTOR (OTHER: `mysqlToJavaType`
/// does not list them).
fn plan_kind(
    real: u8,
    binlog_type: u8,
    meta: u16,
    binary: bool,
    text: bool,
    opts: &DecodeOptions,
) -> (Kind, i32, i32) {
    let blobish = if text { st::CLOB } else { st::BLOB };
    match real {
        ty::TINY => (Kind::Tiny, st::TINYINT, st::TINYINT),
        ty::SHORT => (Kind::Short, st::SMALLINT, st::SMALLINT),
        ty::INT24 => (Kind::Int24, st::INTEGER, st::INTEGER),
        ty::LONG => (Kind::Long, st::INTEGER, st::INTEGER),
        ty::LONGLONG => (Kind::LongLong, st::BIGINT, st::BIGINT),
        ty::FLOAT => (Kind::Float, st::REAL, st::REAL),
        ty::DOUBLE => (Kind::Double, st::DOUBLE, st::DOUBLE),
        ty::NEWDECIMAL => {
            let (precision, scale) = ((meta >> 8) as u8, (meta & 0xff) as u8);
            if value::decimal_bin_size(precision, scale).is_none() {
                return (Kind::Unsupported, st::OTHER, st::OTHER);
            }
            (Kind::Decimal { precision, scale }, st::DECIMAL, st::DECIMAL)
        }
        ty::BIT => {
            let nbits = (meta >> 8) * 8 + (meta & 0xff);
            if nbits == 0 || nbits > 64 {
                return (Kind::Unsupported, st::OTHER, st::OTHER);
            }
            (Kind::Bit { nbits }, st::BIT, st::BIT)
        }
        ty::TIMESTAMP => (Kind::Timestamp, st::TIMESTAMP, st::TIMESTAMP),
        ty::TIMESTAMP2 => (Kind::Timestamp2 { fsp: fsp(meta) }, st::TIMESTAMP, st::TIMESTAMP),
        ty::DATETIME => (Kind::Datetime, st::TIMESTAMP, st::TIMESTAMP),
        ty::DATETIME2 => (Kind::Datetime2 { fsp: fsp(meta) }, st::TIMESTAMP, st::TIMESTAMP),
        ty::TIME => (Kind::Time, st::TIME, st::TIME),
        ty::TIME2 => (Kind::Time2 { fsp: fsp(meta) }, st::TIME, st::TIME),
        ty::DATE | ty::NEWDATE => (Kind::Date, st::DATE, st::DATE),
        ty::YEAR => (Kind::Year, st::VARCHAR, st::VARCHAR),
        ty::ENUM => {
            let len = (meta & 0xff) as u8;
            if !(1..=2).contains(&len) {
                return (Kind::Unsupported, st::OTHER, st::OTHER);
            }
            (Kind::Enum { len }, st::INTEGER, st::INTEGER)
        }
        ty::SET => {
            let len = (meta & 0xff) as u8;
            if !(1..=8).contains(&len) {
                return (Kind::Unsupported, st::OTHER, st::OTHER);
            }
            // A NULL SET is BINARY in mysqlToJavaType, remapped to BLOB.
            (Kind::Set { len }, st::BIT, st::BLOB)
        }
        ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB | ty::BLOB => {
            let len_bytes = (meta & 0xff) as u8;
            if !(1..=4).contains(&len_bytes) {
                return (Kind::Unsupported, st::OTHER, st::OTHER);
            }
            (Kind::Blob { len_bytes, text }, blobish, blobish)
        }
        ty::GEOMETRY | ty::VECTOR => {
            let len_bytes = (meta & 0xff) as u8;
            if !(1..=4).contains(&len_bytes) {
                return (Kind::Unsupported, st::OTHER, st::OTHER);
            }
            let null = if real == ty::GEOMETRY { st::BLOB } else { st::OTHER };
            (Kind::Blob { len_bytes, text: false }, st::BLOB, null)
        }
        ty::JSON => {
            let len_bytes = (meta & 0xff) as u8;
            if !(1..=4).contains(&len_bytes) {
                return (Kind::Unsupported, st::OTHER, st::OTHER);
            }
            (Kind::Json { len_bytes }, st::VARCHAR, st::OTHER)
        }
        ty::VARCHAR | ty::VAR_STRING => {
            let len_bytes = if meta < 256 { 1 } else { 2 };
            let t = if binary { st::BLOB } else { st::VARCHAR };
            (Kind::Str { len_bytes, binary, pad_to: 0 }, t, t)
        }
        ty::STRING => {
            // Length from STRING metadata, including the long-CHAR packing (bits 4-5 of byte 0).
            let max_len = if binlog_type == ty::STRING && meta >= 256 {
                let byte0 = meta >> 8;
                (meta & 0xff) | (((byte0 & 0x30) ^ 0x30) << 4)
            } else {
                meta
            };
            let len_bytes = if max_len < 256 { 1 } else { 2 };
            let t = if binary { st::BLOB } else { st::CHAR };
            let pad_to = if binary && opts.pad_binary { max_len } else { 0 };
            (Kind::Str { len_bytes, binary, pad_to }, t, t)
        }
        _ => (Kind::Unsupported, st::OTHER, st::OTHER),
    }
}

fn fsp(meta: u16) -> u8 {
    (meta as u8).min(6)
}

/// One decoded cell: column ordinal, sqlType, NULL flag and the value's range in the row text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// 0-based column ordinal (Canal's `Column.index`).
    pub index: u32,
    /// java.sql.Types code after Canal's per-value promotion.
    pub sql_type: i32,
    /// SQL NULL.
    pub is_null: bool,
    start: usize,
    end: usize,
}

/// One row image: the present columns in order, their values stored back to back in one string.
/// Reuse one per image across rows; [`RowsReader::next_row`] clears it.
#[derive(Debug, Default, Clone)]
pub struct RowImage {
    cells: Vec<Cell>,
    /// The values back to back, always UTF-8: renderers append ASCII or decoded text only.
    text: Vec<u8>,
}

impl RowImage {
    /// An empty image.
    pub fn new() -> Self {
        RowImage::default()
    }

    /// Empties the image, keeping its buffers.
    pub fn clear(&mut self) {
        self.cells.clear();
        self.text.clear();
    }

    /// The cells, in column order (only the columns present in the image).
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// Whether the image holds no column.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The value text of a cell, `None` for NULL. The bytes are UTF-8 by construction, so this
    /// borrows (the lossy conversion never replaces anything).
    pub fn value(&self, cell: &Cell) -> Option<Cow<'_, str>> {
        (!cell.is_null).then(|| String::from_utf8_lossy(&self.text[cell.start..cell.end]))
    }

    /// The value's bytes (UTF-8), `None` for NULL; skips the UTF-8 check of `value` for callers
    /// that only copy bytes (the entry encoder).
    pub fn value_bytes(&self, cell: &Cell) -> Option<&[u8]> {
        (!cell.is_null).then(|| &self.text[cell.start..cell.end])
    }

    /// Byte length of a cell's value (0 for NULL).
    pub fn value_len(&self, cell: &Cell) -> usize {
        if cell.is_null { 0 } else { cell.end - cell.start }
    }

    /// Cells with their values.
    pub fn iter(&self) -> impl Iterator<Item = (&Cell, Option<Cow<'_, str>>)> + '_ {
        self.cells.iter().map(move |c| (c, self.value(c)))
    }

    /// The cell of column `index`, if present in the image.
    pub fn get(&self, index: usize) -> Option<(&Cell, Option<Cow<'_, str>>)> {
        self.cells.iter().find(|c| c.index as usize == index).map(|c| (c, self.value(c)))
    }
}

/// Reads the rows of one rows event, one row (or before/after pair) per call.
#[derive(Debug)]
pub struct RowsReader<'e> {
    plan: Arc<TablePlan>,
    ev: &'e RowsEvent<'e>,
    pos: usize,
    charset: TextCharset,
    tz: TimeZoneOffset,
    json_columns: usize,
    /// The columns present in before (0) and after (1) images, with each column's ordinal among
    /// the table's JSON columns (the partial-JSON bit it owns): the bitmaps are per event, so this
    /// is worked out once per event, not per row.
    present: [Vec<(u32, u32)>; 2],
    /// The date of the last TIMESTAMP rendered.
    epoch: value::EpochDays,
    /// JSON values are rendered here (the renderer writes a `String`), then appended.
    json_text: String,
}

impl<'e> RowsReader<'e> {
    pub(crate) fn new(
        plan: Arc<TablePlan>,
        ev: &'e RowsEvent<'_>,
        opts: &DecodeOptions,
    ) -> Result<Self, DecodeError> {
        if let Some(e) = plan.mismatch_error() {
            return Err(e);
        }
        if ev.column_count > plan.columns.len() {
            return Err(DecodeError::Invalid {
                what: "rows column count",
                offset: 0,
                detail: format!(
                    "rows event has {} columns, TABLE_MAP of `{}`.`{}` has {}",
                    ev.column_count,
                    plan.map.schema,
                    plan.map.table,
                    plan.columns.len()
                ),
            });
        }
        let json_columns = plan.map.json_column_count();
        // `RowsEvent<'a>` is covariant in 'a, so the reference shortens to `&'e RowsEvent<'e>`.
        let ev: &'e RowsEvent<'e> = ev;
        let present_before = present_columns(&plan, &ev.present_before, ev.column_count);
        let present_after = match &ev.present_after {
            Some(bits) => present_columns(&plan, bits, ev.column_count),
            None => present_before.clone(),
        };
        Ok(RowsReader {
            present: [present_before, present_after],
            plan,
            ev,
            pos: 0,
            charset: opts.charset,
            tz: opts.time_zone,
            json_columns,
            epoch: value::EpochDays::default(),
            json_text: String::new(),
        })
    }

    /// The plan the rows are decoded with (names, types, keys).
    pub fn plan(&self) -> &Arc<TablePlan> {
        &self.plan
    }

    /// Decodes the next row. Write events fill `after`, delete events `before`, updates both; the
    /// image not used is cleared. Returns `Ok(false)` when the event has no more rows.
    pub fn next_row(
        &mut self,
        before: &mut RowImage,
        after: &mut RowImage,
    ) -> Result<bool, DecodeError> {
        before.clear();
        after.clear();
        if self.pos >= self.ev.rows.len() {
            return Ok(false);
        }
        let start = self.pos;
        match self.ev.kind {
            RowsKind::Write => self.image(0, false, after)?,
            RowsKind::Delete => self.image(0, false, before)?,
            RowsKind::Update | RowsKind::PartialUpdate => {
                self.image(0, false, before)?;
                let partial = self.ev.kind == RowsKind::PartialUpdate;
                self.image(1, partial, after)?;
            }
        }
        // A row that consumes no bytes (zero columns present, from a corrupt header) would make
        // the caller loop forever on the same position.
        if self.pos == start {
            return Err(DecodeError::Invalid {
                what: "row image",
                offset: self.ev.rows_offset + start,
                detail: "row with no columns present".into(),
            });
        }
        Ok(true)
    }

    fn err_trunc(&self, what: &'static str, need: usize) -> DecodeError {
        let base = self.ev.rows_offset;
        DecodeError::Truncated {
            what,
            offset: base + self.pos,
            need,
            have: self.ev.rows.len().saturating_sub(self.pos),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'e [u8], DecodeError> {
        let rows: &'e [u8] = &self.ev.rows;
        if n > rows.len() - self.pos {
            return Err(self.err_trunc(what, n));
        }
        let s = &rows[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads one image of the columns `self.present[which]`.
    fn image(
        &mut self,
        which: usize,
        partial_image: bool,
        img: &mut RowImage,
    ) -> Result<(), DecodeError> {
        let present = std::mem::take(&mut self.present[which]);
        let r = self.image_of(&present, partial_image, img);
        self.present[which] = present;
        r
    }

    fn image_of(
        &mut self,
        present: &[(u32, u32)],
        partial_image: bool,
        img: &mut RowImage,
    ) -> Result<(), DecodeError> {
        // PARTIAL_UPDATE_ROWS after images start with value options and, for partial JSON, one bit
        // per JSON column of the table.
        let mut partial_bits: &[u8] = &[];
        if partial_image {
            let mut c = super::cursor::Cursor::with_base(
                &self.ev.rows[self.pos..],
                self.ev.rows_offset + self.pos,
            );
            let opts = c.lenenc("row value options")?;
            self.pos += c.pos();
            if opts & 1 != 0 {
                partial_bits = self.take(self.json_columns.div_ceil(8), "partial JSON bitmap")?;
            }
        }
        let nulls = self.take(present.len().div_ceil(8), "row null bitmap")?;
        img.cells.reserve(present.len());
        for (k, &(i, json_idx)) in present.iter().enumerate() {
            let i = i as usize;
            let is_null = bit(nulls, k);
            let col = &self.plan.columns[i];
            let col_is_json = col.binlog_type == ty::JSON;
            let start = img.text.len();
            if is_null {
                img.cells.push(Cell {
                    index: i as u32,
                    sql_type: col.null_sql_type,
                    is_null: true,
                    start,
                    end: start,
                });
                continue;
            }
            let diff = col_is_json && bit(partial_bits, json_idx as usize);
            let sql_type = self.value(i, diff, img)?;
            let end = img.text.len();
            img.cells.push(Cell { index: i as u32, sql_type, is_null: false, start, end });
        }
        Ok(())
    }

    /// Reads one non-NULL value of column `i` into `img.text`, returns its sqlType.
    fn value(&mut self, i: usize, json_diff: bool, img: &mut RowImage) -> Result<i32, DecodeError> {
        let col = &self.plan.columns[i];
        let kind = col.kind;
        let unsigned = col.unsigned;
        let mut sql_type = col.sql_type;
        let out = &mut img.text;
        match kind {
            Kind::Tiny => {
                let v = self.take(1, "TINYINT")?[0] as i8;
                if unsigned && v < 0 {
                    sql_type = st::SMALLINT;
                    value::push_u64(out, u64::from(v as u8));
                } else {
                    value::push_i64(out, i64::from(v));
                }
            }
            Kind::Short => {
                let v = le_uint(self.take(2, "SMALLINT")?) as u16 as i16;
                if unsigned && v < 0 {
                    sql_type = st::INTEGER;
                    value::push_u64(out, u64::from(v as u16));
                } else {
                    value::push_i64(out, i64::from(v));
                }
            }
            Kind::Int24 => {
                // Sign-extend the 24-bit value (mysql_common's eat_i24_le does not).
                let raw = le_uint(self.take(3, "MEDIUMINT")?) as u32;
                let v = ((raw << 8) as i32) >> 8;
                if unsigned && v < 0 {
                    value::push_u64(out, u64::from(raw));
                } else {
                    value::push_i64(out, i64::from(v));
                }
            }
            Kind::Long => {
                let v = le_uint(self.take(4, "INT")?) as u32 as i32;
                if unsigned && v < 0 {
                    sql_type = st::BIGINT;
                    value::push_u64(out, u64::from(v as u32));
                } else {
                    value::push_i64(out, i64::from(v));
                }
            }
            Kind::LongLong => {
                let v = le_uint(self.take(8, "BIGINT")?) as i64;
                if unsigned && v < 0 {
                    sql_type = st::DECIMAL;
                    value::push_u64(out, v as u64);
                } else {
                    value::push_i64(out, v);
                }
            }
            Kind::Float => {
                let b = self.take(4, "FLOAT")?;
                javafmt::push_float(out, f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
            Kind::Double => {
                let b = self.take(8, "DOUBLE")?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                javafmt::push_double(out, f64::from_le_bytes(a));
            }
            Kind::Decimal { precision, scale } => {
                let size = value::decimal_bin_size(precision, scale).unwrap_or(0);
                let b = self.take(size, "DECIMAL")?;
                value::decimal_to_string(b, precision, scale, out).map_err(|_| {
                    DecodeError::Invalid {
                        what: "DECIMAL",
                        offset: self.ev.rows_offset + self.pos - size,
                        detail: format!("bad DECIMAL({precision},{scale}) value"),
                    }
                })?;
            }
            Kind::Bit { nbits } => {
                let n = usize::from(nbits).div_ceil(8);
                let v = be_uint(self.take(n, "BIT")?);
                value::push_u64(out, v);
            }
            Kind::Timestamp => {
                let secs = le_uint(self.take(4, "TIMESTAMP")?) as u32;
                self.epoch.push(out, secs, self.tz);
            }
            Kind::Timestamp2 { fsp } => {
                let secs = be_uint(self.take(4, "TIMESTAMP2")?) as u32;
                let micros = self.frac(fsp, "TIMESTAMP2 fraction")?;
                self.epoch.push(out, secs, self.tz);
                value::push_frac(out, micros, fsp);
            }
            Kind::Datetime => {
                let v = le_uint(self.take(8, "DATETIME")?) as i64;
                if v == 0 {
                    out.extend_from_slice(b"0000-00-00 00:00:00");
                } else {
                    let v = v.unsigned_abs();
                    let (d, t) = (v / 1_000_000, v % 1_000_000);
                    value::push_datetime(
                        out,
                        (d / 10000) as u32,
                        (d % 10000 / 100) as u32,
                        (d % 100) as u32,
                        (t / 10000) as u32,
                        (t % 10000 / 100) as u32,
                        (t % 100) as u32,
                    );
                }
            }
            Kind::Datetime2 { fsp } => {
                let intpart = be_uint(self.take(5, "DATETIME2")?) as i64 - 0x80_0000_0000;
                let micros = self.frac(fsp, "DATETIME2 fraction")?;
                value::push_datetime2_int(out, intpart);
                value::push_frac(out, micros, fsp);
            }
            Kind::Time => {
                let raw = le_uint(self.take(3, "TIME")?) as u32;
                let v = ((raw << 8) as i32) >> 8;
                if v == 0 {
                    out.extend_from_slice(b"00:00:00");
                } else {
                    let u = v.unsigned_abs();
                    if v < 0 {
                        out.push(b'-');
                    }
                    let h = u / 10000;
                    if h >= 100 {
                        value::push_u64(out, u64::from(h));
                    } else {
                        value::push2(out, h);
                    }
                    out.push(b':');
                    value::push2(out, u % 10000 / 100);
                    out.push(b':');
                    value::push2(out, u % 100);
                }
            }
            Kind::Time2 { fsp } => self.time2(fsp, out)?,
            Kind::Date => {
                let v = le_uint(self.take(3, "DATE")?) as u32;
                if v == 0 {
                    out.extend_from_slice(b"0000-00-00");
                } else {
                    value::push4(out, v / (16 * 32));
                    out.push(b'-');
                    value::push2(out, v / 32 % 16);
                    out.push(b'-');
                    value::push2(out, v % 32);
                }
            }
            Kind::Year => {
                let v = self.take(1, "YEAR")?[0];
                if v == 0 {
                    out.extend_from_slice(b"0000");
                } else {
                    value::push_u64(out, u64::from(v) + 1900);
                }
            }
            Kind::Enum { len } => {
                let v = le_uint(self.take(usize::from(len), "ENUM")?);
                value::push_u64(out, v);
            }
            Kind::Set { len } => {
                let v = le_uint(self.take(usize::from(len), "SET")?);
                value::push_u64(out, v);
            }
            Kind::Blob { len_bytes, text } => {
                let n = le_uint(self.take(usize::from(len_bytes), "BLOB length")?) as usize;
                let b = self.take(n, "BLOB data")?;
                if text {
                    self.charset.decode_into_bytes(b, out);
                } else {
                    value::latin1_into(b, out);
                }
            }
            Kind::Str { len_bytes, binary, pad_to } => {
                let n = le_uint(self.take(usize::from(len_bytes), "string length")?) as usize;
                let b = self.take(n, "string data")?;
                if binary {
                    value::latin1_into(b, out);
                    if n < usize::from(pad_to) {
                        out.resize(out.len() + usize::from(pad_to) - n, 0);
                    }
                } else {
                    self.charset.decode_into_bytes(b, out);
                }
            }
            Kind::Json { len_bytes } => {
                let n = le_uint(self.take(usize::from(len_bytes), "JSON length")?) as usize;
                let at = self.ev.rows_offset + self.pos;
                let b = self.take(n, "JSON data")?;
                if n > 0 {
                    let mut text = std::mem::take(&mut self.json_text);
                    text.clear();
                    let r = if json_diff {
                        let name = Arc::clone(&self.plan.columns[i].name);
                        json::render_diff(b, &name, self.charset, &mut text)
                    } else {
                        json::render(b, self.charset, &mut text)
                    };
                    if r.is_ok() {
                        out.extend_from_slice(text.as_bytes());
                    }
                    self.json_text = text;
                    if let Err(e) = r {
                        return Err(DecodeError::Invalid {
                            what: "JSON value",
                            offset: at + e.offset,
                            detail: e.detail,
                        });
                    }
                }
            }
            Kind::Unsupported => {
                return Err(DecodeError::UnsupportedColumnType {
                    schema: self.plan.map.schema.to_string(),
                    table: self.plan.map.table.to_string(),
                    column: i,
                    column_type: col.binlog_type,
                    meta: col.meta,
                });
            }
        }
        Ok(sql_type)
    }

    /// Fractional seconds of DATETIME2/TIMESTAMP2 (big-endian, (fsp+1)/2 bytes) as microseconds.
    fn frac(&mut self, fsp: u8, what: &'static str) -> Result<u32, DecodeError> {
        let n = usize::from(fsp.div_ceil(2));
        let v = be_uint(self.take(n, what)?) as u32;
        Ok(match n {
            1 => v * 10_000,
            2 => v * 100,
            _ => v,
        })
    }

    /// TIME2: 3 bytes `1 sign bit | 1 unused | 10 hour | 6 minute | 6 second` offset by 0x800000, then
    /// the fraction; negative values store the fraction complemented (MySQL `my_time_packed_from_binary`).
    fn time2(&mut self, fsp: u8, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let packed: i64 = match fsp {
            1 | 2 => {
                let mut int = be_uint(self.take(3, "TIME2")?) as i64 - 0x80_0000;
                let mut frac = i64::from(self.take(1, "TIME2 fraction")?[0]);
                if int < 0 && frac > 0 {
                    int += 1;
                    frac -= 0x100;
                }
                (int << 24) + frac * 10_000
            }
            3 | 4 => {
                let mut int = be_uint(self.take(3, "TIME2")?) as i64 - 0x80_0000;
                let mut frac = be_uint(self.take(2, "TIME2 fraction")?) as i64;
                if int < 0 && frac > 0 {
                    int += 1;
                    frac -= 0x10000;
                }
                (int << 24) + frac * 100
            }
            5 | 6 => be_uint(self.take(6, "TIME2")?) as i64 - 0x8000_0000_0000,
            _ => (be_uint(self.take(3, "TIME2")?) as i64 - 0x80_0000) << 24,
        };
        let u = packed.unsigned_abs();
        value::push_hms(out, packed < 0, u >> 24);
        value::push_frac(out, (u % (1 << 24)) as u32, fsp);
        Ok(())
    }
}

/// The columns among the first `n` whose bit is set, each with its ordinal among the JSON columns
/// (`n` is at most the plan's column count: checked by [`RowsReader::new`]).
fn present_columns(plan: &TablePlan, bits: &[u8], n: usize) -> Vec<(u32, u32)> {
    let mut json = 0u32;
    let mut out = Vec::with_capacity(n);
    for (i, col) in plan.columns.iter().enumerate().take(n) {
        if bit(bits, i) {
            out.push((i as u32, json));
        }
        if col.binlog_type == ty::JSON {
            json += 1;
        }
    }
    out
}

fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binlog::decode::table_map::{ColumnMeta, MapColumn};
    use std::borrow::Cow;

    fn col(t: u8, meta: u16, unsigned: Option<bool>) -> MapColumn {
        MapColumn { nullable: true, unsigned, ..MapColumn::new(t, meta) }
    }

    /// Decodes one WRITE row of `columns` from `row` (null bitmap included) and returns
    /// `(sqlType, value)` per column.
    fn decode_row(
        columns: Vec<MapColumn>,
        schema: Option<TableSchema>,
        row: &[u8],
    ) -> Vec<(i32, Option<String>)> {
        let n = columns.len();
        let map = Arc::new(TableMap {
            table_id: 1,
            flags: 0,
            schema: Arc::from("db"),
            table: Arc::from("t"),
            columns,
            has_optional_metadata: false,
            has_column_names: false,
        });
        let opts = DecodeOptions::default();
        let plan = Arc::new(TablePlan::build(map, schema.as_ref(), &opts));
        let ev = RowsEvent {
            kind: RowsKind::Write,
            table_id: 1,
            flags: 1,
            extra: vec![],
            column_count: n,
            present_before: vec![0xff; n.div_ceil(8)],
            present_after: None,
            rows: Cow::Borrowed(row),
            rows_offset: 0,
        };
        let mut rd = RowsReader::new(plan, &ev, &opts).unwrap();
        let (mut b, mut a) = (RowImage::new(), RowImage::new());
        assert!(rd.next_row(&mut b, &mut a).unwrap());
        let out = a.iter().map(|(c, v)| (c.sql_type, v.map(Cow::into_owned))).collect();
        assert!(!rd.next_row(&mut b, &mut a).unwrap());
        out
    }

    fn v(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn mediumint_is_sign_extended() {
        // mysql_common's eat_i24_le decodes -1 as 16777215 and -8388608 as 8388608.
        let cols = vec![
            col(ty::INT24, 0, Some(false)),
            col(ty::INT24, 0, Some(false)),
            col(ty::INT24, 0, Some(true)),
        ];
        let row = [0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x80, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_row(cols, None, &row),
            [(4, v("-1")), (4, v("-8388608")), (4, v("16777215"))]
        );
    }

    #[test]
    fn year_zero_is_0000() {
        // mysql_common renders YEAR 0 as 1900.
        let row = [0x00, 0, 124, 255];
        assert_eq!(
            decode_row(vec![col(ty::YEAR, 0, None); 3], None, &row),
            [(12, v("0000")), (12, v("2024")), (12, v("2155"))]
        );
    }

    #[test]
    fn binary_keeps_trailing_zero_bytes() {
        // BINARY(8) 'ab\0\0\0\0\0\0' arrives as 2 bytes (the server strips the 0x00 padding;
        // mysql_common passes that on). With the schema saying binary(8) it is re-padded.
        let meta = (u16::from(ty::STRING) << 8) | 8;
        let schema = TableSchema {
            schema: "db".into(),
            table: "t".into(),
            columns: vec![ColumnMeta {
                name: "b".into(),
                mysql_type: "binary(8)".into(),
                ..Default::default()
            }],
        };
        let row = [0x00, 2, b'a', 0xff];
        assert_eq!(
            decode_row(vec![col(ty::STRING, meta, None)], Some(schema), &row),
            [(2004, v("a\u{ff}\0\0\0\0\0\0"))]
        );
        // Without a schema (or binary charset metadata) it is a CHAR, decoded as UTF-8 (lossy).
        assert_eq!(
            decode_row(vec![col(ty::STRING, meta, None)], None, &row),
            [(1, v("a\u{fffd}"))]
        );
    }

    #[test]
    fn unsigned_promotion_is_per_value() {
        let cols = vec![
            col(ty::TINY, 0, Some(true)),
            col(ty::TINY, 0, Some(true)),
            col(ty::SHORT, 0, Some(true)),
            col(ty::LONG, 0, Some(true)),
            col(ty::LONGLONG, 0, Some(true)),
            col(ty::LONGLONG, 0, Some(false)),
        ];
        let mut row = vec![0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        row.extend_from_slice(&[0xff; 8]);
        row.extend_from_slice(&[0xff; 8]);
        assert_eq!(
            decode_row(cols, None, &row),
            [
                (-6, v("127")),
                (5, v("255")),
                (4, v("65535")),
                (-5, v("4294967295")),
                (3, v("18446744073709551615")),
                (-5, v("-1")),
            ]
        );
    }

    #[test]
    fn temporal_values() {
        let cols = vec![
            col(ty::TIME2, 6, None),
            col(ty::TIME2, 2, None),
            col(ty::DATETIME2, 3, None),
            col(ty::DATETIME2, 0, None),
            col(ty::TIMESTAMP2, 6, None),
            col(ty::TIMESTAMP2, 0, None),
            col(ty::DATE, 0, None),
            col(ty::TIME, 0, None),
        ];
        let mut row = vec![0x00];
        // TIME(6) -00:00:00.500000: packed -500000 + 0x800000000000, big-endian 6 bytes.
        row.extend_from_slice(&(0x8000_0000_0000i64 - 500_000).to_be_bytes()[2..]);
        // TIME(2) -00:00:01.10: intpart -2 (0x7ffffe), frac 246.
        row.extend_from_slice(&[0x7f, 0xff, 0xfe, 246]);
        // DATETIME(3) 2024-02-29 23:59:59.123.
        let ym = 2024u64 * 13 + 2;
        let int = ((ym << 5 | 29) << 17) | (23 << 12 | 59 << 6 | 59);
        row.extend_from_slice(&(int + 0x80_0000_0000).to_be_bytes()[3..]);
        row.extend_from_slice(&1230u16.to_be_bytes());
        // DATETIME zero.
        row.extend_from_slice(&0x80_0000_0000u64.to_be_bytes()[3..]);
        // TIMESTAMP(6) 1.000001 and TIMESTAMP 0.
        row.extend_from_slice(&[0, 0, 0, 1, 0, 0, 1]);
        row.extend_from_slice(&[0, 0, 0, 0]);
        // DATE 2000-00-00 (zero parts kept): 2000*512.
        row.extend_from_slice(&(2000u32 * 512).to_le_bytes()[..3]);
        // TIME (old) -838:59:59 = -8385959.
        row.extend_from_slice(&(-8_385_959i32).to_le_bytes()[..3]);
        assert_eq!(
            decode_row(cols, None, &row),
            [
                (92, v("-00:00:00.500000")),
                (92, v("-00:00:01.10")),
                (93, v("2024-02-29 23:59:59.123")),
                (93, v("0000-00-00 00:00:00")),
                (93, v("1970-01-01 00:00:01.000001")),
                (93, v("0000-00-00 00:00:00")),
                (91, v("2000-00-00")),
                (92, v("-838:59:59")),
            ]
        );
    }

    #[test]
    fn truncated_rows_are_errors_not_panics() {
        let cols =
            vec![col(ty::LONGLONG, 0, None), col(ty::VARCHAR, 300, None), col(ty::BLOB, 4, None)];
        let mut full = vec![0x00];
        full.extend_from_slice(&7i64.to_le_bytes());
        full.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        full.extend_from_slice(&[2, 0, 0, 0, b'x', b'y']);
        for cut in 0..full.len() {
            let map = Arc::new(TableMap {
                table_id: 1,
                flags: 0,
                schema: Arc::from("db"),
                table: Arc::from("t"),
                columns: cols.clone(),
                has_optional_metadata: false,
                has_column_names: false,
            });
            let opts = DecodeOptions::default();
            let plan = Arc::new(TablePlan::build(map, None, &opts));
            let ev = RowsEvent {
                kind: RowsKind::Write,
                table_id: 1,
                flags: 1,
                extra: vec![],
                column_count: 3,
                present_before: vec![0x07],
                present_after: None,
                rows: Cow::Borrowed(&full[..cut]),
                rows_offset: 0,
            };
            let mut rd = RowsReader::new(plan, &ev, &opts).unwrap();
            let (mut b, mut a) = (RowImage::new(), RowImage::new());
            let r = rd.next_row(&mut b, &mut a);
            if cut == 0 {
                assert!(!r.unwrap());
            } else {
                assert!(matches!(r, Err(DecodeError::Truncated { .. })), "cut {cut}: {r:?}");
            }
        }
    }
}
