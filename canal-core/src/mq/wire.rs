//! Just enough protobuf wire reading to route and split entries without decoding them into owned
//! structs: the schema, table and type of an entry, the rows of its RowChange and the key columns
//! of a row, all as borrowed slices; plus the MESSAGES packet encoders Canal's MQ producers use.

use super::RoutingError;

/// One field of a message: its number and the bytes of its value (the payload for
/// length-delimited fields, the varint's value for varints) and of the whole field.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) varint: u64,
    pub(crate) bytes: &'a [u8],
    pub(crate) whole: &'a [u8],
}

fn malformed(what: &'static str) -> RoutingError {
    RoutingError::Malformed(what)
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, RoutingError> {
    // Most keys and lengths are one byte.
    if let Some(&b) = buf.get(*pos)
        && b < 0x80
    {
        *pos += 1;
        return Ok(u64::from(b));
    }
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| malformed("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

/// The fields of a message, in wire order.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub(crate) fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf, pos: 0 }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<Field<'a>, RoutingError> {
        let start = self.pos;
        let key = read_varint(self.buf, &mut self.pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| malformed("field number"))?;
        if number == 0 {
            return Err(malformed("field number 0"));
        }
        let (varint, bytes) = match key & 7 {
            0 => (read_varint(self.buf, &mut self.pos)?, &self.buf[self.pos..self.pos]),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
                let end = end.ok_or_else(|| malformed("truncated fixed field"))?;
                let b = &self.buf[self.pos..end];
                self.pos = end;
                (0, b)
            }
            2 => {
                let len = read_varint(self.buf, &mut self.pos)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.pos.checked_add(l))
                    .filter(|&e| e <= self.buf.len())
                    .ok_or_else(|| malformed("length past the end"))?;
                let b = &self.buf[self.pos..end];
                self.pos = end;
                (len, b)
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        Ok(Field { number, varint, bytes, whole: &self.buf[start..self.pos] })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, RoutingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let r = self.field();
        if r.is_err() {
            // Stop after the first error.
            self.pos = self.buf.len();
        }
        Some(r)
    }
}

pub(crate) fn utf8(b: &[u8]) -> Result<&str, RoutingError> {
    std::str::from_utf8(b).map_err(|_| malformed("string field is not UTF-8"))
}

/// Entry types (entry.proto).
pub(crate) const ENTRY_TRANSACTION_BEGIN: u64 = 1;
pub(crate) const ENTRY_ROWDATA: u64 = 2;
pub(crate) const ENTRY_TRANSACTION_END: u64 = 3;
/// Event types used by the split.
pub(crate) const EVENT_UPDATE: u64 = 2;
pub(crate) const EVENT_DELETE: u64 = 3;

/// What routing needs of an entry, borrowed from its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryView<'a> {
    pub(crate) entry_type: u64,
    pub(crate) schema: &'a str,
    pub(crate) table: &'a str,
    /// The header's event type (proto2 default UPDATE).
    pub(crate) header_event_type: u64,
    pub(crate) execute_time: i64,
    pub(crate) gtid: &'a str,
    pub(crate) store_value: &'a [u8],
}

impl EntryView<'_> {
    pub(crate) fn is_transaction_edge(&self) -> bool {
        matches!(self.entry_type, ENTRY_TRANSACTION_BEGIN | ENTRY_TRANSACTION_END)
    }
}

pub(crate) fn entry_view(bytes: &[u8]) -> Result<EntryView<'_>, RoutingError> {
    let mut v = EntryView {
        entry_type: ENTRY_ROWDATA,
        schema: "",
        table: "",
        header_event_type: EVENT_UPDATE,
        execute_time: 0,
        gtid: "",
        store_value: &[],
    };
    for f in fields(bytes) {
        let f = f?;
        match f.number {
            1 => {
                for h in fields(f.bytes) {
                    let h = h?;
                    match h.number {
                        6 => v.execute_time = h.varint as i64,
                        8 => v.schema = utf8(h.bytes)?,
                        9 => v.table = utf8(h.bytes)?,
                        11 => v.header_event_type = h.varint,
                        13 => v.gtid = utf8(h.bytes)?,
                        _ => {}
                    }
                }
            }
            // prost's getter: 0 or an unknown number reads as the default, ROWDATA.
            2 => {
                let t = f.varint as i32;
                v.entry_type = if (1..=5).contains(&t) { t as u64 } else { ENTRY_ROWDATA };
            }
            3 => v.store_value = f.bytes,
            _ => {}
        }
    }
    Ok(v)
}

/// A RowChange, borrowed: its flags and the byte ranges needed to rebuild it with one row.
#[derive(Debug)]
pub(crate) struct RowChangeView<'a> {
    /// Event type if present.
    pub(crate) event_type: Option<u64>,
    pub(crate) is_ddl: bool,
    pub(crate) sql: &'a str,
    /// The whole `rowDatas` fields (tag, length, payload), in order.
    pub(crate) rows: Vec<Field<'a>>,
    /// Fields numbered below `rowDatas` (12), and above it, in wire order.
    pub(crate) before_rows: Vec<&'a [u8]>,
    pub(crate) after_rows: Vec<&'a [u8]>,
}

pub(crate) fn row_change_view(bytes: &[u8]) -> Result<RowChangeView<'_>, RoutingError> {
    let mut v = RowChangeView {
        event_type: None,
        is_ddl: false,
        sql: "",
        rows: Vec::new(),
        before_rows: Vec::new(),
        after_rows: Vec::new(),
    };
    for f in fields(bytes) {
        let f = f?;
        match f.number {
            2 => v.event_type = Some(f.varint),
            10 => v.is_ddl = f.varint != 0,
            11 => v.sql = utf8(f.bytes)?,
            _ => {}
        }
        match f.number.cmp(&12) {
            std::cmp::Ordering::Less => v.before_rows.push(f.whole),
            std::cmp::Ordering::Equal => v.rows.push(f),
            std::cmp::Ordering::Greater => v.after_rows.push(f.whole),
        }
    }
    Ok(v)
}

/// One column of a row, borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ColumnView<'a> {
    pub(crate) name: &'a str,
    pub(crate) is_key: bool,
    /// The value (`""` when absent, as Java's getter answers).
    pub(crate) value: &'a str,
}

/// Calls `each` for the columns of `row` (a RowData payload): the before image when `before`,
/// else the after image.
pub(crate) fn for_each_column<'a>(
    row: &'a [u8],
    before: bool,
    mut each: impl FnMut(ColumnView<'a>),
) -> Result<(), RoutingError> {
    let wanted = if before { 1 } else { 2 };
    for f in fields(row) {
        let f = f?;
        if f.number != wanted {
            continue;
        }
        let mut c = ColumnView::default();
        for cf in fields(f.bytes) {
            let cf = cf?;
            match cf.number {
                3 => c.name = utf8(cf.bytes)?,
                4 => c.is_key = cf.varint != 0,
                8 => c.value = utf8(cf.bytes)?,
                _ => {}
            }
        }
        each(c);
    }
    Ok(())
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bytes of `entry` with its storeValue replaced by a RowChange holding only `row` (Java's
/// `Entry.newBuilder(entry)` + `RowChange.newBuilder(rc).clearRowDatas().addRowDatas(row)`).
/// Fields keep field-number order, as Java's serializer writes them.
pub(crate) fn one_row_entry(
    entry: &[u8],
    rc: &RowChangeView<'_>,
    row: &Field<'_>,
) -> Result<Vec<u8>, RoutingError> {
    let rc_len: usize = rc.before_rows.iter().map(|b| b.len()).sum::<usize>()
        + row.whole.len()
        + rc.after_rows.iter().map(|b| b.len()).sum::<usize>();
    let mut early: [&[u8]; 2] = [&[], &[]];
    let mut later: Vec<&[u8]> = Vec::new();
    for f in fields(entry) {
        let f = f?;
        match f.number {
            1 | 2 => early[f.number as usize - 1] = f.whole,
            3 => {}
            _ => later.push(f.whole),
        }
    }
    let len = early[0].len()
        + early[1].len()
        + 1
        + varint_len(rc_len as u64)
        + rc_len
        + later.iter().map(|b| b.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(early[0]);
    out.extend_from_slice(early[1]);
    out.push(0x1a); // field 3, length-delimited
    put_varint(&mut out, rc_len as u64);
    for b in &rc.before_rows {
        out.extend_from_slice(b);
    }
    out.extend_from_slice(row.whole);
    for b in &rc.after_rows {
        out.extend_from_slice(b);
    }
    for b in later {
        out.extend_from_slice(b);
    }
    Ok(out)
}

/// A MESSAGES packet (Canal's `CanalMessageSerializerUtil.serializer`).
///
/// Raw form (`raw`, Java's store keeps entry bytes): `type` and `body`, no `version`, and the
/// body's `batch_id` always written. Entry form (entries re-serialized, as after a topic or
/// partition split): `version = 1`, `type`, `body`, and no `batch_id`.
pub(crate) fn messages_packet<B: AsRef<[u8]>>(raw: bool, batch_id: i64, entries: &[B]) -> Vec<u8> {
    let mut body_len = if raw { 1 + varint_len(batch_id as u64) } else { 0 };
    for e in entries {
        let n = e.as_ref().len();
        body_len += 1 + varint_len(n as u64) + n;
    }
    let mut out = Vec::with_capacity(body_len + 16);
    if !raw {
        out.extend_from_slice(&[0x10, 0x01]); // field 2 (version) = 1
    }
    out.extend_from_slice(&[0x18, 0x07]); // field 3 (type) = MESSAGES
    out.push(0x2a); // field 5 (body)
    put_varint(&mut out, body_len as u64);
    if raw {
        out.push(0x08); // Messages field 1 (batch_id)
        put_varint(&mut out, batch_id as u64);
    }
    for e in entries {
        let e = e.as_ref();
        out.push(0x12); // Messages field 2
        put_varint(&mut out, e.len() as u64);
        out.extend_from_slice(e);
    }
    out
}
