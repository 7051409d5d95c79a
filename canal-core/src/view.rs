//! Entries read in place from their protobuf bytes, and printed from there: borrowed views of an
//! Entry, its RowChange and the columns of a row (`wire`), Canal's FlatMessage JSON
//! ([`FlatRows`], the same bytes as [`crate::flat::FlatMessage`] + serde_json) and the whole Entry
//! as JSON ([`write_entry_json`], the same bytes as prost + a serde_json map of Canal's field
//! names). No owned string per column: the printers of `canal-server decode`, `canal-client tail`
//! and the MQ workers write from the entry bytes into one output buffer.
//!
//! The differential tests `mq::tests::flat_json_equals_flat_message` and
//! `view::tests::entry_json_equals_serde` hold the printers to the owned-struct forms; the
//! `decode` goldens (canal-server/tests/golden/decode) hold the output byte for byte.

mod flat_json;
pub(crate) mod wire;

pub use flat_json::FlatRows;
pub(crate) use flat_json::{write_bytes, write_str};
pub use wire::{
    ColumnView, ENTRY_ROWDATA, ENTRY_TRANSACTION_BEGIN, ENTRY_TRANSACTION_END, EntryView, Image,
    RowChangeView, columns, entry_view, row_change_view,
};

use crate::protocol::entry::{EntryType, EventType, Type};

/// Bytes that are not the protobuf message they should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed entry bytes: {0}")]
pub struct ViewError(pub &'static str);

impl<'a> FlatRows<'a> {
    /// Reads the ROWDATA entry `entry` (Entry message bytes) as its FlatMessage; false, and
    /// nothing read, for other entry types (they have no FlatMessage).
    ///
    /// # Errors
    /// Malformed protobuf or a string field that is not UTF-8.
    pub fn parse_entry(&mut self, entry: &'a [u8]) -> Result<bool, ViewError> {
        let v = entry_view(entry)?;
        if v.entry_type != ENTRY_ROWDATA {
            return Ok(false);
        }
        let rc = row_change_view(v.store_value)?;
        self.parse(&v, &rc)?;
        Ok(true)
    }
}

fn int(o: &mut Vec<u8>, v: impl itoa::Integer) {
    o.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `key` (`,"name":` with its punctuation) and a string value.
fn str_field(o: &mut Vec<u8>, key: &[u8], v: &str) {
    o.extend_from_slice(key);
    write_str(o, v);
}

/// `key` and an integer value.
fn int_field(o: &mut Vec<u8>, key: &[u8], v: impl itoa::Integer) {
    o.extend_from_slice(key);
    int(o, v);
}

fn event_type_name(raw: u64) -> &'static str {
    // prost's getter: an unknown number reads as the proto2 default, UPDATE.
    EventType::try_from(raw as i32).unwrap_or(EventType::Update).as_str_name()
}

/// `[{"key":..,"value":..},..]` of the Pair messages `pairs`.
fn write_pairs(o: &mut Vec<u8>, pairs: &[&[u8]]) -> Result<(), ViewError> {
    o.push(b'[');
    for (i, p) in pairs.iter().enumerate() {
        let (mut key, mut value) = ("", "");
        for f in wire::fields(p) {
            let f = f?;
            match f.number {
                1 => key = wire::utf8(f.bytes)?,
                2 => value = wire::utf8(f.bytes)?,
                _ => {}
            }
        }
        if i > 0 {
            o.push(b',');
        }
        str_field(o, b"{\"key\":", key);
        str_field(o, b",\"value\":", value);
        o.push(b'}');
    }
    o.push(b']');
    Ok(())
}

/// The header, merged over every occurrence of the field as prost merges them.
fn write_header(o: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), ViewError> {
    let (mut version, mut logfile_offset, mut server_id, mut execute_time) = (1i32, 0i64, 0i64, 0);
    let (mut logfile_name, mut serveren_code, mut schema, mut table) = ("", "", "", "");
    let (mut source_type, mut event_length) = (Type::Mysql, 0i64);
    let (mut event_type, mut gtid) = (None, None);
    let mut props: Vec<&[u8]> = Vec::new();
    for part in parts {
        for f in wire::fields(part) {
            let f = f?;
            match f.number {
                1 => version = f.varint as i32,
                2 => logfile_name = wire::utf8(f.bytes)?,
                3 => logfile_offset = f.varint as i64,
                4 => server_id = f.varint as i64,
                5 => serveren_code = wire::utf8(f.bytes)?,
                6 => execute_time = f.varint as i64,
                7 => source_type = Type::try_from(f.varint as i32).unwrap_or(Type::Mysql),
                8 => schema = wire::utf8(f.bytes)?,
                9 => table = wire::utf8(f.bytes)?,
                10 => event_length = f.varint as i64,
                11 => event_type = Some(f.varint),
                12 => props.push(f.bytes),
                13 => gtid = Some(wire::utf8(f.bytes)?),
                _ => {}
            }
        }
    }
    // serde_json's map sorts keys.
    int_field(o, b"{\"eventLength\":", event_length);
    if let Some(t) = event_type {
        str_field(o, b",\"eventType\":", event_type_name(t));
    }
    int_field(o, b",\"executeTime\":", execute_time);
    if let Some(g) = gtid {
        str_field(o, b",\"gtid\":", g);
    }
    str_field(o, b",\"logfileName\":", logfile_name);
    int_field(o, b",\"logfileOffset\":", logfile_offset);
    if !props.is_empty() {
        o.extend_from_slice(b",\"props\":");
        write_pairs(o, &props)?;
    }
    str_field(o, b",\"schemaName\":", schema);
    int_field(o, b",\"serverId\":", server_id);
    str_field(o, b",\"serverenCode\":", serveren_code);
    str_field(o, b",\"sourceType\":", source_type.as_str_name());
    str_field(o, b",\"tableName\":", table);
    int_field(o, b",\"version\":", version);
    o.push(b'}');
    Ok(())
}

/// One Column message, keys sorted; `value` and `mysqlType` only when present.
fn write_column(o: &mut Vec<u8>, bytes: &[u8]) -> Result<(), ViewError> {
    let c = wire::RawColumn::parse(bytes)?;
    wire::check_utf8(c.name)?;
    wire::check_utf8(c.value)?;
    wire::check_utf8(c.mysql_type)?;
    int_field(o, b"{\"index\":", c.index);
    o.extend_from_slice(match (c.is_key, c.is_null) {
        (false, false) => b",\"isKey\":false,\"isNull\":false",
        (false, true) => b",\"isKey\":false,\"isNull\":true",
        (true, false) => b",\"isKey\":true,\"isNull\":false",
        (true, true) => b",\"isKey\":true,\"isNull\":true",
    });
    if c.has_mysql_type {
        o.extend_from_slice(b",\"mysqlType\":");
        write_bytes(o, c.mysql_type);
    }
    o.extend_from_slice(b",\"name\":");
    write_bytes(o, c.name);
    int_field(o, b",\"sqlType\":", c.sql_type);
    o.extend_from_slice(if c.updated { b",\"updated\":true" } else { b",\"updated\":false" });
    if c.has_value {
        o.extend_from_slice(b",\"value\":");
        write_bytes(o, c.value);
    }
    o.push(b'}');
    Ok(())
}

/// One image (`image`: 1 before, 2 after) of a RowData message as a JSON list.
fn write_image(o: &mut Vec<u8>, row: &[u8], image: u32) -> Result<(), ViewError> {
    o.push(b'[');
    let mut first = true;
    let mut pos = 0;
    while let Some((number, column)) = wire::next_row_column(row, &mut pos)? {
        if number == image {
            if !first {
                o.push(b',');
            }
            first = false;
            write_column(o, column)?;
        }
    }
    o.push(b']');
    Ok(())
}

fn write_row_change(o: &mut Vec<u8>, bytes: &[u8]) -> Result<(), ViewError> {
    let (mut table_id, mut event_type, mut is_ddl) = (None, EventType::Update as u64, false);
    let (mut sql, mut ddl_schema) = (None, None);
    let (mut rows, mut props): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
    for f in wire::fields(bytes) {
        let f = f?;
        match f.number {
            1 => table_id = Some(f.varint as i64),
            2 => event_type = f.varint,
            10 => is_ddl = f.varint != 0,
            11 => sql = Some(wire::utf8(f.bytes)?),
            12 => rows.push(f.bytes),
            13 => props.push(f.bytes),
            14 => ddl_schema = Some(wire::utf8(f.bytes)?),
            _ => {}
        }
    }
    o.push(b'{');
    if let Some(s) = ddl_schema {
        str_field(o, b"\"ddlSchemaName\":", s);
        o.push(b',');
    }
    str_field(o, b"\"eventType\":", event_type_name(event_type));
    o.extend_from_slice(if is_ddl { b",\"isDdl\":true" } else { b",\"isDdl\":false" });
    if !props.is_empty() {
        o.extend_from_slice(b",\"props\":");
        write_pairs(o, &props)?;
    }
    o.extend_from_slice(b",\"rowDatas\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        o.extend_from_slice(b"{\"afterColumns\":");
        write_image(o, r, 2)?;
        o.extend_from_slice(b",\"beforeColumns\":");
        write_image(o, r, 1)?;
        o.push(b'}');
    }
    o.push(b']');
    if let Some(s) = sql {
        str_field(o, b",\"sql\":", s);
    }
    if let Some(t) = table_id {
        int_field(o, b",\"tableId\":", t);
    }
    o.push(b'}');
    Ok(())
}

/// TransactionBegin (`begin`) or TransactionEnd: its props and thread or transaction id.
fn write_transaction(o: &mut Vec<u8>, bytes: &[u8], begin: bool) -> Result<(), ViewError> {
    let (mut thread_id, mut transaction_id) = (0i64, "");
    let mut props: Vec<&[u8]> = Vec::new();
    for f in wire::fields(bytes) {
        let f = f?;
        match f.number {
            2 => transaction_id = wire::utf8(f.bytes)?,
            3 => props.push(f.bytes),
            4 if begin => thread_id = f.varint as i64,
            _ => {}
        }
    }
    o.extend_from_slice(b"{\"props\":");
    write_pairs(o, &props)?;
    if begin {
        int_field(o, b",\"threadId\":", thread_id);
    } else {
        str_field(o, b",\"transactionId\":", transaction_id);
    }
    o.push(b'}');
    Ok(())
}

/// Appends the whole Entry (Entry message bytes) as JSON, no line end: `entryType`, `header`
/// and the decoded `storeValue` with Canal's camelCase field names, keys sorted, proto2 defaults
/// for absent fields (the form `canal-server decode --format entry` prints).
///
/// # Errors
/// Malformed protobuf or a string field that is not UTF-8 (`o` then holds a partial object).
pub fn write_entry_json(o: &mut Vec<u8>, entry: &[u8]) -> Result<(), ViewError> {
    let mut headers: [&[u8]; 2] = [&[], &[]];
    let mut extra_headers: Vec<&[u8]> = Vec::new();
    let mut n_headers = 0;
    let (mut entry_type, mut store) = (EntryType::Rowdata, &[][..]);
    for f in wire::fields(entry) {
        let f = f?;
        match f.number {
            1 => {
                if n_headers < 2 {
                    headers[n_headers] = f.bytes;
                } else {
                    extra_headers.push(f.bytes);
                }
                n_headers += 1;
            }
            // prost's getter: 0 or an unknown number reads as the default, ROWDATA.
            2 => entry_type = EntryType::try_from(f.varint as i32).unwrap_or(EntryType::Rowdata),
            3 => store = f.bytes,
            _ => {}
        }
    }
    str_field(o, b"{\"entryType\":", entry_type.as_str_name());
    o.extend_from_slice(b",\"header\":");
    if extra_headers.is_empty() {
        write_header(o, &headers[..n_headers.min(2)])?;
    } else {
        let all: Vec<&[u8]> = headers.iter().copied().chain(extra_headers).collect();
        write_header(o, &all)?;
    }
    o.extend_from_slice(b",\"storeValue\":");
    match entry_type {
        EntryType::Transactionbegin => write_transaction(o, store, true)?,
        EntryType::Transactionend => write_transaction(o, store, false)?,
        _ => write_row_change(o, store)?,
    }
    o.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests;
