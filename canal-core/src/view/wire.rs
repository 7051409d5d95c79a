//! Just enough protobuf wire reading to route, split and print entries without decoding them into
//! owned structs: the header of an entry, the rows of its RowChange and the columns of a row, all
//! as borrowed slices; plus the MESSAGES packet encoders Canal's MQ producers use.

use super::ViewError;

/// One field of a message: its number and the bytes of its value (the payload for
/// length-delimited fields, the varint's value for varints) and of the whole field.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) varint: u64,
    pub(crate) bytes: &'a [u8],
    pub(crate) whole: &'a [u8],
    /// A group (deprecated wire types 3/4): stepped over, never yielded.
    group: bool,
}

fn malformed(what: &'static str) -> ViewError {
    ViewError(what)
}

#[inline(always)]
fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, ViewError> {
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

/// The payload of a length-delimited field whose length varint starts at `pos`; `pos` moves past
/// it.
#[inline(always)]
fn read_len_delimited<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], ViewError> {
    let len = read_varint(buf, pos)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| malformed("length past the end"))?;
    let b = &buf[*pos..end];
    *pos = end;
    Ok(b)
}

/// Steps over the rest of group `number` (its start-group key was just read), nested groups
/// included, as prost skips an unknown group: up to its end-group key. A field of a group is
/// never a field of the message around it.
fn skip_group(buf: &[u8], pos: &mut usize, number: u64) -> Result<(), ViewError> {
    // prost's recursion limit.
    const DEPTH: usize = 100;
    let mut open = vec![number];
    while let Some(&inner) = open.last() {
        let key = read_varint(buf, pos)?;
        let n = key >> 3;
        match key & 7 {
            0 => {
                read_varint(buf, pos)?;
            }
            1 | 5 => {
                let len = if key & 7 == 1 { 8 } else { 4 };
                *pos = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or_else(|| malformed("truncated fixed field"))?;
            }
            2 => {
                read_len_delimited(buf, pos)?;
            }
            3 if open.len() < DEPTH => open.push(n),
            4 if n == inner => {
                open.pop();
            }
            4 => return Err(malformed("end group of another group")),
            3 => return Err(malformed("groups nested too deep")),
            _ => return Err(malformed("unsupported wire type")),
        }
    }
    Ok(())
}

/// The fields of a message, in wire order.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

#[inline]
pub(crate) fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf, pos: 0 }
}

impl<'a> Fields<'a> {
    #[inline(always)]
    fn field(&mut self) -> Result<Field<'a>, ViewError> {
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
                let b = read_len_delimited(self.buf, &mut self.pos)?;
                (b.len() as u64, b)
            }
            // A group (no field we read is one): stepped over whole, then skipped by the
            // iterator, as prost skips an unknown field.
            3 => {
                skip_group(self.buf, &mut self.pos, u64::from(number))?;
                return Ok(Field { number, varint: 0, bytes: &[], whole: &[], group: true });
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        Ok(Field { number, varint, bytes, whole: &self.buf[start..self.pos], group: false })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, ViewError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pos >= self.buf.len() {
                return None;
            }
            let r = self.field();
            match r {
                Ok(f) if f.group => continue,
                Ok(_) => {}
                // Stop after the first error.
                Err(_) => self.pos = self.buf.len(),
            }
            return Some(r);
        }
    }
}

/// The next column of a RowData payload from `pos` on: its image field number (1 before, 2
/// after) and its Column bytes, as [`fields`] would yield them; other fields are stepped over.
#[inline]
pub(crate) fn next_row_column<'a>(
    row: &'a [u8],
    pos: &mut usize,
) -> Result<Option<(u32, &'a [u8])>, ViewError> {
    while let Some(&key) = row.get(*pos) {
        // The usual keys, 0x0a and 0x12: fields 1 and 2, length-delimited.
        if key == 0x0a || key == 0x12 {
            *pos += 1;
            return Ok(Some((u32::from(key >> 3), read_len_delimited(row, pos)?)));
        }
        let mut f = Fields { buf: row, pos: *pos };
        let field = f.field()?;
        *pos = f.pos;
        if !field.group && (field.number == 1 || field.number == 2) {
            return Ok(Some((field.number, field.bytes)));
        }
    }
    Ok(None)
}

/// Checks that `b` is UTF-8 (as prost checks string fields). Most text is ASCII: one pass over
/// its words, not the UTF-8 decoder's per-call cost.
#[inline]
pub(crate) fn check_utf8(b: &[u8]) -> Result<(), ViewError> {
    if !b.is_ascii() {
        utf8(b)?;
    }
    Ok(())
}

#[inline]
pub(crate) fn utf8(b: &[u8]) -> Result<&str, ViewError> {
    std::str::from_utf8(b).map_err(|_| malformed("string field is not UTF-8"))
}

/// Entry type TRANSACTIONBEGIN (entry.proto).
pub const ENTRY_TRANSACTION_BEGIN: u64 = 1;
/// Entry type ROWDATA.
pub const ENTRY_ROWDATA: u64 = 2;
/// Entry type TRANSACTIONEND.
pub const ENTRY_TRANSACTION_END: u64 = 3;
/// Event types used by the split.
pub(crate) const EVENT_UPDATE: u64 = 2;
pub(crate) const EVENT_DELETE: u64 = 3;

/// What routing and printing need of an entry, borrowed from its bytes.
#[derive(Clone, Copy, Debug)]
pub struct EntryView<'a> {
    /// Entry type number (prost's getter: 0 or unknown reads as ROWDATA).
    pub entry_type: u64,
    /// The header's schema name.
    pub schema: &'a str,
    /// The header's table name.
    pub table: &'a str,
    /// The header's event type (proto2 default UPDATE).
    pub header_event_type: u64,
    /// The header's execute time (ms).
    pub execute_time: i64,
    /// The header's GTID (`""` when absent).
    pub gtid: &'a str,
    /// The storeValue bytes (a RowChange for ROWDATA entries).
    pub store_value: &'a [u8],
}

impl EntryView<'_> {
    /// TRANSACTIONBEGIN or TRANSACTIONEND.
    pub fn is_transaction_edge(&self) -> bool {
        matches!(self.entry_type, ENTRY_TRANSACTION_BEGIN | ENTRY_TRANSACTION_END)
    }
}

/// The view of an Entry message's bytes.
///
/// # Errors
/// Malformed protobuf or a string field that is not UTF-8.
pub fn entry_view(bytes: &[u8]) -> Result<EntryView<'_>, ViewError> {
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
pub struct RowChangeView<'a> {
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

/// The view of a RowChange message's bytes.
///
/// # Errors
/// Malformed protobuf or a `sql` that is not UTF-8.
pub fn row_change_view(bytes: &[u8]) -> Result<RowChangeView<'_>, ViewError> {
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

impl<'a> RowChangeView<'a> {
    /// The RowChange's event type number, if present (else the header's applies).
    pub fn event_type(&self) -> Option<u64> {
        self.event_type
    }

    /// A DDL statement.
    pub fn is_ddl(&self) -> bool {
        self.is_ddl
    }

    /// The statement text (`""` when absent).
    pub fn sql(&self) -> &'a str {
        self.sql
    }

    /// The RowData payloads, in order (read their columns with [`columns`]).
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        self.rows.iter().map(|f| f.bytes)
    }
}

/// Which image of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// `beforeColumns`.
    Before,
    /// `afterColumns`.
    After,
}

/// The columns of one image of a RowData payload, in order.
pub fn columns(
    row: &[u8],
    image: Image,
) -> impl Iterator<Item = Result<ColumnView<'_>, ViewError>> {
    let wanted = if image == Image::Before { 1 } else { 2 };
    fields(row).filter_map(move |f| match f {
        Ok(f) if f.number == wanted => Some(ColumnView::parse(f.bytes)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// One column of a row image, borrowed from the entry bytes (proto2 getters' defaults for
/// absent fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColumnView<'a> {
    /// Position in the table.
    pub index: i32,
    /// `java.sql.Types` code.
    pub sql_type: i32,
    /// Column name.
    pub name: &'a str,
    /// Part of the primary key.
    pub is_key: bool,
    /// Changed by this row (after images of UPDATE).
    pub updated: bool,
    /// SQL NULL.
    pub is_null: bool,
    /// The value as text (`""` when absent, as Java's getter answers).
    pub value: &'a str,
    /// MySQL column type (`""` when absent).
    pub mysql_type: &'a str,
}

impl<'a> ColumnView<'a> {
    /// The column of a Column message's bytes.
    ///
    /// # Errors
    /// Malformed protobuf or a string field that is not UTF-8.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ViewError> {
        let r = RawColumn::parse(bytes)?;
        Ok(ColumnView {
            index: r.index,
            sql_type: r.sql_type,
            name: utf8(r.name)?,
            is_key: r.is_key,
            updated: r.updated,
            is_null: r.is_null,
            value: utf8(r.value)?,
            mysql_type: utf8(r.mysql_type)?,
        })
    }

    /// The value, `None` for SQL NULL.
    pub fn value(&self) -> Option<&'a str> {
        if self.is_null { None } else { Some(self.value) }
    }
}

/// A column with its text fields not yet checked for UTF-8 (callers that see the same name in
/// every row check it once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawColumn<'a> {
    pub(crate) index: i32,
    pub(crate) sql_type: i32,
    pub(crate) name: &'a [u8],
    pub(crate) is_key: bool,
    pub(crate) updated: bool,
    pub(crate) is_null: bool,
    pub(crate) value: &'a [u8],
    pub(crate) mysql_type: &'a [u8],
    /// Whether `value` / `mysql_type` were present (proto2 presence).
    pub(crate) has_value: bool,
    pub(crate) has_mysql_type: bool,
}

impl<'a> RawColumn<'a> {
    /// The loop of `fields`, unrolled for the hottest message (every column of every row).
    #[inline(always)]
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, ViewError> {
        match Self::parse_canonical(bytes) {
            Some(c) => Ok(c),
            None => Self::parse_any(bytes),
        }
    }

    /// A column laid out as canal-rs and Canal write one: fields 1, 2, 3, 4, 5, 6, then 8 and 10
    /// when present, each once, booleans as one byte 0 or 1. Straight-line reading, no dispatch
    /// per field; `None` (then [`parse_any`](Self::parse_any) reads it) for any other layout.
    /// Inlined whole, so the column is built in registers, not moved through the stack.
    #[inline(always)]
    fn parse_canonical(b: &'a [u8]) -> Option<Self> {
        #[inline(always)]
        fn key(b: &[u8], pos: &mut usize, k: u8) -> bool {
            let hit = b.get(*pos) == Some(&k);
            *pos += usize::from(hit);
            hit
        }
        /// isKey, updated and isNull (fields 4, 5, 6): six bytes read at once.
        #[inline(always)]
        fn booleans(b: &[u8], pos: &mut usize) -> Option<(bool, bool, bool)> {
            match b.get(*pos..*pos + 6) {
                Some(&[0x20, k, 0x28, u, 0x30, n]) if (k | u | n) <= 1 => {
                    *pos += 6;
                    Some((k == 1, u == 1, n == 1))
                }
                _ => None,
            }
        }
        // A malformed length here sends the column to `parse_any`, which names the error.
        let bytes = |b: &'a [u8], pos: &mut usize| read_len_delimited(b, pos).ok();
        let mut pos = 0;
        if !key(b, &mut pos, 0x08) {
            return None;
        }
        let index = read_varint(b, &mut pos).ok()? as i32;
        if !key(b, &mut pos, 0x10) {
            return None;
        }
        let sql_type = read_varint(b, &mut pos).ok()? as i32;
        if !key(b, &mut pos, 0x1a) {
            return None;
        }
        let name = bytes(b, &mut pos)?;
        let (is_key, updated, is_null) = booleans(b, &mut pos)?;
        let has_value = key(b, &mut pos, 0x42);
        let value = if has_value { bytes(b, &mut pos)? } else { &[] };
        let has_mysql_type = key(b, &mut pos, 0x52);
        let mysql_type = if has_mysql_type { bytes(b, &mut pos)? } else { &[] };
        (pos == b.len()).then_some(RawColumn {
            index,
            sql_type,
            name,
            is_key,
            updated,
            is_null,
            value,
            mysql_type,
            has_value,
            has_mysql_type,
        })
    }

    /// Any valid Column message (fields in any order, repeated, unknown).
    #[cold]
    #[inline(never)]
    pub(crate) fn parse_any(bytes: &'a [u8]) -> Result<Self, ViewError> {
        let mut c = RawColumn::default();
        let mut pos = 0;
        while pos < bytes.len() {
            let key = read_varint(bytes, &mut pos)?;
            let number = key >> 3;
            if number == 0 || number > u64::from(u32::MAX) {
                return Err(malformed(if number == 0 { "field number 0" } else { "field number" }));
            }
            match key & 7 {
                0 => {
                    let v = read_varint(bytes, &mut pos)?;
                    match number {
                        1 => c.index = v as i32,
                        2 => c.sql_type = v as i32,
                        4 => c.is_key = v != 0,
                        5 => c.updated = v != 0,
                        6 => c.is_null = v != 0,
                        _ => {}
                    }
                }
                2 => {
                    let b = read_len_delimited(bytes, &mut pos)?;
                    match number {
                        3 => c.name = b,
                        8 => (c.value, c.has_value) = (b, true),
                        10 => (c.mysql_type, c.has_mysql_type) = (b, true),
                        _ => {}
                    }
                }
                t @ (1 | 5) => {
                    let n = if t == 1 { 8 } else { 4 };
                    pos = pos
                        .checked_add(n)
                        .filter(|&e| e <= bytes.len())
                        .ok_or_else(|| malformed("truncated fixed field"))?;
                }
                3 => skip_group(bytes, &mut pos, number)?,
                _ => return Err(malformed("unsupported wire type")),
            }
        }
        Ok(c)
    }
}

/// Calls `each` for the columns of `row` (a RowData payload): the before image when `before`,
/// else the after image.
pub(crate) fn for_each_column<'a>(
    row: &'a [u8],
    before: bool,
    mut each: impl FnMut(ColumnView<'a>),
) -> Result<(), ViewError> {
    let wanted = if before { 1 } else { 2 };
    for f in fields(row) {
        let f = f?;
        if f.number == wanted {
            each(ColumnView::parse(f.bytes)?);
        }
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
) -> Result<Vec<u8>, ViewError> {
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
