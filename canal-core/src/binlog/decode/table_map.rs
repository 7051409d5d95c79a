//! TABLE_MAP_EVENT: column types, per-type metadata, null bitmap and the optional metadata block
//! (MySQL 8 / MariaDB 10.5 `binlog_row_metadata`), plus the caller-supplied [`TableSchema`].

use std::sync::Arc;

use super::cursor::Cursor;
use super::value::ty;
use super::{DecodeError, Decoder};

/// One column as the TABLE_MAP describes it, with whatever the optional metadata added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapColumn {
    /// Binlog type code as written in the column-type array.
    pub binlog_type: u8,
    /// Real type: for `MYSQL_TYPE_STRING` the type packed in its metadata (ENUM, SET or STRING).
    pub real_type: u8,
    /// Type metadata, as MySQL's `log_event_print_value` uses it (see `value.rs`).
    pub meta: u16,
    /// The null bitmap says the column is nullable.
    pub nullable: bool,
    /// SIGNEDNESS optional metadata (numeric columns only).
    pub unsigned: Option<bool>,
    /// Collation id from DEFAULT_CHARSET / COLUMN_CHARSET (or the ENUM/SET variants).
    pub charset: Option<u16>,
    /// COLUMN_NAME.
    pub name: Option<Arc<str>>,
    /// ENUM_STR_VALUE / SET_STR_VALUE.
    pub values: Option<Arc<[String]>>,
    /// GEOMETRY_TYPE.
    pub geometry_type: Option<u64>,
    /// Part of the primary key (SIMPLE_PRIMARY_KEY or PRIMARY_KEY_WITH_PREFIX), when either was sent.
    pub is_pk: Option<bool>,
    /// COLUMN_VISIBILITY (false for INVISIBLE columns).
    pub visible: Option<bool>,
    /// VECTOR_DIMENSIONALITY.
    pub vector_dimension: Option<u64>,
}

impl MapColumn {
    /// A column of binlog type `t` with its metadata, before the optional metadata adds names,
    /// signedness, charsets and the rest (and before the null bitmap says it is nullable).
    pub(crate) fn new(t: u8, meta: u16) -> Self {
        MapColumn {
            binlog_type: t,
            real_type: real_type(t, meta),
            meta,
            nullable: false,
            unsigned: None,
            charset: None,
            name: None,
            values: None,
            geometry_type: None,
            is_pk: None,
            visible: None,
            vector_dimension: None,
        }
    }
}

/// TABLE_MAP_EVENT contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMap {
    /// Table id (valid until the next TABLE_MAP for the same id or the next file).
    pub table_id: u64,
    /// Table-map flags.
    pub flags: u16,
    /// Database name.
    pub schema: Arc<str>,
    /// Table name.
    pub table: Arc<str>,
    /// Columns in table order.
    pub columns: Vec<MapColumn>,
    /// Any optional metadata was present.
    pub has_optional_metadata: bool,
    /// COLUMN_NAME was present (`binlog_row_metadata=FULL`): Canal then trusts the binlog's names.
    pub has_column_names: bool,
}

impl TableMap {
    /// Number of JSON columns (the length of PARTIAL_UPDATE_ROWS' partial-column bitmap).
    pub fn json_column_count(&self) -> usize {
        self.columns.iter().filter(|c| c.binlog_type == ty::JSON).count()
    }
}

/// A table's schema as the caller knows it (from `SHOW CREATE TABLE` or a DDL history), for binlogs
/// without FULL row metadata. Names and `mysql_type` reach Canal's `Column.name` / `mysqlType`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSchema {
    /// Database name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Columns in table order.
    pub columns: Vec<ColumnMeta>,
}

/// One column of a [`TableSchema`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnMeta {
    /// Column name.
    pub name: String,
    /// Type text as `SHOW CREATE TABLE`/`DESC` prints it, e.g. `int(10) unsigned`, `varbinary(16)`.
    pub mysql_type: String,
    /// UNSIGNED (also inferred from `mysql_type` containing `unsigned`).
    pub unsigned: bool,
    /// Part of the PRIMARY KEY.
    pub is_pk: bool,
    /// Column charset name if known (`binary` marks binary strings); Canal itself decodes text with
    /// the connection charset, so this only refines binary detection.
    pub charset: Option<String>,
}

fn is_numeric(t: u8) -> bool {
    // YEAR is counted: both MySQL and MariaDB include it in the SIGNEDNESS bitmap (MariaDB 10.11's
    // bitmap for the `all_types` fixture has one bit per numeric column plus YEAR, flagged
    // unsigned; mysql_common counts it too).
    matches!(
        t,
        ty::TINY
            | ty::SHORT
            | ty::INT24
            | ty::LONG
            | ty::LONGLONG
            | ty::DECIMAL
            | ty::NEWDECIMAL
            | ty::FLOAT
            | ty::DOUBLE
            | ty::YEAR
    )
}

fn is_character(real: u8) -> bool {
    matches!(real, ty::STRING | ty::VAR_STRING | ty::VARCHAR | ty::BLOB)
}

fn is_enum_or_set(real: u8) -> bool {
    matches!(real, ty::ENUM | ty::SET)
}

/// Real type of a column (MySQL packs ENUM/SET and long CHAR into STRING metadata).
pub(crate) fn real_type(binlog_type: u8, meta: u16) -> u8 {
    if binlog_type == ty::STRING && meta >= 256 {
        let byte0 = (meta >> 8) as u8;
        if byte0 & 0x30 != 0x30 {
            // A long CHAR (> 255 bytes): bits 4-5 of byte0 hold length bits, inverted.
            return byte0 | 0x30;
        }
        if matches!(byte0, ty::ENUM | ty::SET | ty::STRING) {
            return byte0;
        }
    }
    binlog_type
}

pub(crate) fn parse(
    c: &mut Cursor<'_>,
    post: Option<u8>,
    dec: &Decoder,
) -> Result<TableMap, DecodeError> {
    let table_id =
        if post == Some(6) { u64::from(c.u32("table map id")?) } else { c.u48("table map id")? };
    let flags = c.u16("table map flags")?;
    let db_len = usize::from(c.u8("table map db length")?);
    let db = c.bytes(db_len, "table map db name")?;
    c.skip(1, "table map db terminator")?;
    let tbl_len = usize::from(c.u8("table map table length")?);
    let tbl = c.bytes(tbl_len, "table map table name")?;
    c.skip(1, "table map table terminator")?;
    let n = c.lenenc("table map column count")?;
    let n = usize::try_from(n).ok().filter(|&n| n <= c.remaining()).ok_or_else(|| {
        c.invalid("table map column count", format!("{n} columns in {} bytes", c.remaining()))
    })?;
    let types = c.bytes(n, "table map column types")?;
    let meta_len = c.lenenc("table map metadata length")?;
    let meta_len = usize::try_from(meta_len)
        .map_err(|_| c.invalid("table map metadata length", meta_len.to_string()))?;
    let meta_base = c.offset();
    let mut m = Cursor::with_base(c.bytes(meta_len, "table map metadata")?, meta_base);
    let mut columns = Vec::with_capacity(n);
    for &t in types {
        let meta = read_meta(&mut m, t)?;
        columns.push(MapColumn::new(t, meta));
    }
    let nulls = c.bytes(n.div_ceil(8), "table map null bitmap")?;
    for (i, col) in columns.iter_mut().enumerate() {
        col.nullable = nulls[i / 8] & (1 << (i % 8)) != 0;
    }
    let mut map = TableMap {
        table_id,
        flags,
        schema: Arc::from(dec.opts.charset.decode(db).as_ref()),
        table: Arc::from(dec.opts.charset.decode(tbl).as_ref()),
        columns,
        has_optional_metadata: !c.is_empty(),
        has_column_names: false,
    };
    parse_optional(c, &mut map)?;
    Ok(map)
}

fn read_meta(m: &mut Cursor<'_>, t: u8) -> Result<u16, DecodeError> {
    Ok(match t {
        ty::TINY_BLOB
        | ty::BLOB
        | ty::MEDIUM_BLOB
        | ty::LONG_BLOB
        | ty::DOUBLE
        | ty::FLOAT
        | ty::GEOMETRY
        | ty::TIME2
        | ty::DATETIME2
        | ty::TIMESTAMP2
        | ty::JSON
        | ty::VECTOR => u16::from(m.u8("column metadata")?),
        // Little-endian: max byte length for VARCHAR; (bits % 8, bytes) for BIT.
        ty::VARCHAR | ty::BIT => m.u16("column metadata")?,
        // Two bytes read as big-endian: (precision, scale) for NEWDECIMAL; (real type, length) for
        // STRING/ENUM/SET — the order Canal and mysqlbinlog use.
        ty::NEWDECIMAL | ty::STRING | ty::ENUM | ty::SET => {
            let hi = m.u8("column metadata")?;
            let lo = m.u8("column metadata")?;
            u16::from(hi) << 8 | u16::from(lo)
        }
        ty::TYPED_ARRAY => {
            // Multi-valued index arrays: the element type then its metadata. Rows never carry
            // values for these hidden columns in a decodable form; keep the element meta.
            let inner = m.u8("typed array element type")?;
            read_meta(m, inner)?
        }
        _ => 0,
    })
}

fn parse_optional(c: &mut Cursor<'_>, map: &mut TableMap) -> Result<(), DecodeError> {
    let n = map.columns.len();
    while !c.is_empty() {
        let field = c.u8("optional metadata type")?;
        let len = c.lenenc("optional metadata length")?;
        let len = usize::try_from(len)
            .map_err(|_| c.invalid("optional metadata length", len.to_string()))?;
        let base = c.offset();
        let mut v = Cursor::with_base(c.bytes(len, "optional metadata value")?, base);
        match field {
            // SIGNEDNESS: one bit per numeric column, most significant bit first.
            1 => {
                let bits = v.take_rest();
                let numeric = map.columns.iter_mut().filter(|c| is_numeric(c.real_type));
                for (k, col) in numeric.enumerate() {
                    let Some(byte) = bits.get(k / 8) else { break };
                    col.unsigned = Some(byte & (0x80 >> (k % 8)) != 0);
                }
            }
            // DEFAULT_CHARSET / ENUM_AND_SET_DEFAULT_CHARSET: default, then (index, charset) pairs
            // for the columns that differ; indexes count only the columns of the kind.
            2 | 10 => {
                let default = v.lenenc("default charset")? as u16;
                let mut pairs = Vec::new();
                while !v.is_empty() {
                    let idx = v.lenenc("charset column index")?;
                    let cs = v.lenenc("charset")? as u16;
                    pairs.push((idx, cs));
                }
                let pick: fn(u8) -> bool = if field == 2 { is_character } else { is_enum_or_set };
                for (k, col) in map.columns.iter_mut().filter(|c| pick(c.real_type)).enumerate() {
                    let cs = pairs.iter().find(|(i, _)| *i == k as u64).map_or(default, |p| p.1);
                    col.charset = Some(cs);
                }
            }
            // COLUMN_CHARSET / ENUM_AND_SET_COLUMN_CHARSET: one charset per column of the kind.
            3 | 11 => {
                let pick: fn(u8) -> bool = if field == 3 { is_character } else { is_enum_or_set };
                for col in map.columns.iter_mut().filter(|c| pick(c.real_type)) {
                    if v.is_empty() {
                        break;
                    }
                    col.charset = Some(v.lenenc("column charset")? as u16);
                }
            }
            // COLUMN_NAME: a length-prefixed name per column.
            4 => {
                for col in map.columns.iter_mut() {
                    if v.is_empty() {
                        break;
                    }
                    let l = v.lenenc("column name length")?;
                    let l = usize::try_from(l)
                        .map_err(|_| v.invalid("column name length", l.to_string()))?;
                    col.name = Some(Arc::from(
                        String::from_utf8_lossy(v.bytes(l, "column name")?).as_ref(),
                    ));
                }
                map.has_column_names = true;
            }
            // SET_STR_VALUE / ENUM_STR_VALUE: per SET (ENUM) column, a count then the strings.
            5 | 6 => {
                let want = if field == 5 { ty::SET } else { ty::ENUM };
                for col in map.columns.iter_mut().filter(|c| c.real_type == want) {
                    if v.is_empty() {
                        break;
                    }
                    let count = v.lenenc("enum/set value count")?;
                    if count > v.remaining() as u64 {
                        return Err(v.invalid("enum/set value count", count.to_string()));
                    }
                    let mut vals = Vec::with_capacity(count as usize);
                    for _ in 0..count {
                        let l = v.lenenc("enum/set value length")?;
                        let l = usize::try_from(l)
                            .map_err(|_| v.invalid("enum/set value length", l.to_string()))?;
                        vals.push(
                            String::from_utf8_lossy(v.bytes(l, "enum/set value")?).into_owned(),
                        );
                    }
                    col.values = Some(vals.into());
                }
            }
            7 => {
                for col in map.columns.iter_mut().filter(|c| c.binlog_type == ty::GEOMETRY) {
                    if v.is_empty() {
                        break;
                    }
                    col.geometry_type = Some(v.lenenc("geometry type")?);
                }
            }
            // SIMPLE_PRIMARY_KEY: column indexes; PRIMARY_KEY_WITH_PREFIX: (index, prefix) pairs.
            8 | 9 => {
                for col in map.columns.iter_mut() {
                    col.is_pk = Some(false);
                }
                while !v.is_empty() {
                    let idx = v.lenenc("primary key column")?;
                    if field == 9 {
                        v.lenenc("primary key prefix")?;
                    }
                    let col = usize::try_from(idx).ok().and_then(|i| map.columns.get_mut(i));
                    match col {
                        Some(col) => col.is_pk = Some(true),
                        None => {
                            return Err(v.invalid(
                                "primary key column",
                                format!("index {idx} of {n} columns"),
                            ));
                        }
                    }
                }
            }
            // COLUMN_VISIBILITY: one bit per column, most significant bit first.
            12 => {
                let bits = v.take_rest();
                for (i, col) in map.columns.iter_mut().enumerate() {
                    let Some(byte) = bits.get(i / 8) else { break };
                    col.visible = Some(byte & (0x80 >> (i % 8)) != 0);
                }
            }
            13 => {
                for col in map.columns.iter_mut().filter(|c| c.binlog_type == ty::VECTOR) {
                    if v.is_empty() {
                        break;
                    }
                    col.vector_dimension = Some(v.lenenc("vector dimensionality")?);
                }
            }
            // Unknown fields (future servers, forks) are skipped: their length is explicit.
            _ => {}
        }
    }
    Ok(())
}
