//! FlatMessage JSON written straight from an entry's bytes, for `decode`, `tail` and the MQ hot
//! path: the same bytes as [`crate::flat::FlatMessage`] serialized with serde_json (the
//! differential test `mq::tests::flat_json_equals_flat_message` holds the two together), without
//! decoding the entry into owned structs or building maps of owned strings. Rows can be written
//! in parts, for Java's `messagePartition` over FlatMessages.

use std::ops::Range;

use crate::flat::event_type_name;
use crate::protocol::entry::EventType;

use super::ViewError;
use super::wire::{self, EntryView, RawColumn, RowChangeView};

/// The columns of one image (field `image` of a RowData: 1 before, 2 after) into `out`.
fn read_columns<'a>(
    row: &'a [u8],
    image: u32,
    out: &mut Vec<RawColumn<'a>>,
) -> Result<(), ViewError> {
    out.clear();
    for f in wire::fields(row) {
        let f = f?;
        if f.number == image {
            out.push(RawColumn::parse(f.bytes)?);
        }
    }
    Ok(())
}

/// Byte equality of short strings (column names, types) without a memcmp call: the same slice,
/// or the same length and bytes.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    std::ptr::eq(a, b) || (a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y))
}

/// `raw` as text: `known` when it holds the same bytes (checked already), else checked here.
#[inline]
fn text<'a>(raw: &'a [u8], known: Option<&'a str>) -> Result<&'a str, ViewError> {
    match known {
        // Empty first: an absent field is a dangling empty slice, and a memcmp over one is
        // pathologically slow with AVX-512 masked loads (a microcode assist per call).
        Some(k) if raw.is_empty() && k.is_empty() => Ok(k),
        Some(k) if same(k.as_bytes(), raw) => Ok(k),
        _ => wire::utf8(raw),
    }
}

/// A column's value, `None` for SQL NULL (its text checked either way, as prost does), kept as
/// the bytes it is: checked to be UTF-8, written as is.
#[inline]
fn value_of<'a>(c: &RawColumn<'a>) -> Result<Option<&'a [u8]>, ViewError> {
    wire::check_utf8(c.value)?;
    Ok(if c.is_null { None } else { Some(c.value) })
}

/// Java's `LinkedHashMap.put` on a slice of pairs: replace in place, else append. The slot's
/// position (from the start of `map`).
fn put<'a, V>(map: &mut Vec<(&'a str, V)>, from: usize, key: &'a str, value: V) -> usize {
    match map[from..].iter_mut().position(|(k, _)| *k == key) {
        Some(i) => {
            map[from + i].1 = value;
            from + i
        }
        None => {
            map.push((key, value));
            map.len() - 1
        }
    }
}

fn event_type(raw: u64) -> EventType {
    // prost's getter: an unknown number reads as the proto2 default, UPDATE.
    EventType::try_from(raw as i32).unwrap_or(EventType::Update)
}

/// A column name and its value (`None` for NULL), checked UTF-8.
type Cell<'a> = (&'a str, Option<&'a [u8]>);

/// The FlatMessage of one ROWDATA entry, borrowed from its bytes. One value is reused entry
/// after entry (its buffers kept) as long as the entries' bytes live.
#[derive(Debug)]
pub struct FlatRows<'a> {
    database: &'a str,
    table: &'a str,
    gtid: &'a str,
    es: i64,
    sql: &'a str,
    is_ddl: bool,
    kind: &'static str,
    pk_names: Vec<&'a str>,
    sql_type: Vec<(&'a str, i32)>,
    mysql_type: Vec<(&'a str, &'a str)>,
    /// Cells of all data images, back to back (values checked UTF-8); `data[i]` is row i's range.
    cells: Vec<Cell<'a>>,
    data: Vec<Range<usize>>,
    /// Cells of all old images; `old[k]` is its range and the data row it belongs to.
    old_cells: Vec<Cell<'a>>,
    old: Vec<(Range<usize>, Option<usize>)>,
    /// Scratch: the columns of the current row's images and the updated-column set (names, and
    /// for the type-map names, a flag per type-map slot: membership without a search).
    cols: Vec<RawColumn<'a>>,
    updated: Vec<&'a str>,
    updated_slot: Vec<bool>,
    /// `"name":` of each `sql_type` name, JSON-escaped, back to back; `key_ends[j]` ends name j.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
}

impl Default for FlatRows<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> FlatRows<'a> {
    /// An empty message whose buffers [`parse`](Self::parse) reuses entry after entry.
    pub fn new() -> Self {
        FlatRows {
            database: "",
            table: "",
            gtid: "",
            es: 0,
            sql: "",
            is_ddl: false,
            kind: "",
            pk_names: Vec::new(),
            sql_type: Vec::new(),
            mysql_type: Vec::new(),
            cells: Vec::new(),
            data: Vec::new(),
            old_cells: Vec::new(),
            old: Vec::new(),
            cols: Vec::new(),
            updated: Vec::new(),
            updated_slot: Vec::new(),
            keys: Vec::new(),
            key_ends: Vec::new(),
        }
    }

    /// Becomes the FlatMessage of the ROWDATA entry `v` whose RowChange is `rc` (flat.rs's rules).
    ///
    /// # Errors
    /// Malformed protobuf or a string field that is not UTF-8.
    pub fn parse(&mut self, v: &EntryView<'a>, rc: &RowChangeView<'a>) -> Result<(), ViewError> {
        let et = event_type(rc.event_type.unwrap_or(v.header_event_type));
        let m = self;
        m.database = v.schema;
        m.table = v.table;
        m.gtid = v.gtid;
        m.es = v.execute_time;
        m.sql = rc.sql;
        m.is_ddl = rc.is_ddl;
        m.kind = event_type_name(et);
        m.pk_names.clear();
        m.sql_type.clear();
        m.mysql_type.clear();
        m.cells.clear();
        m.data.clear();
        m.old_cells.clear();
        m.old.clear();
        m.updated.clear();
        m.updated_slot.clear();
        if rc.is_ddl || !matches!(et, EventType::Insert | EventType::Update | EventType::Delete) {
            return Ok(());
        }
        let image = if et == EventType::Delete { 1 } else { 2 };
        let mut cols = std::mem::take(&mut m.cols);
        // Java accumulates the updated-column set across the rows of one entry.
        let mut updated = std::mem::take(&mut m.updated);
        for (i, row) in rc.rows.iter().enumerate() {
            let start = m.cells.len();
            if i > 0 && m.usual_row(row.bytes, image, &mut updated)? {
                m.data.push(start..m.cells.len());
                if et == EventType::Update {
                    m.old_image(row.bytes, &updated, true)?;
                }
                continue;
            }
            read_columns(row.bytes, image, &mut cols)?;
            // Same columns, same order as the type maps (distinct names): slots by position,
            // names as the type maps hold them (checked once).
            let same_layout = cols.len() == m.sql_type.len()
                && cols.iter().zip(&m.sql_type).all(|(c, (k, _))| same(c.name, k.as_bytes()));
            for (j, c) in cols.iter().enumerate() {
                let (name, slot);
                if same_layout {
                    (name, slot) = (m.sql_type[j].0, j);
                    m.sql_type[j].1 = c.sql_type;
                    m.mysql_type[j].1 = text(c.mysql_type, Some(m.mysql_type[j].1))?;
                    m.cells.push((name, value_of(c)?));
                } else {
                    name = wire::utf8(c.name)?;
                    let mysql_type = wire::utf8(c.mysql_type)?;
                    slot = put(&mut m.sql_type, 0, name, c.sql_type);
                    put(&mut m.mysql_type, 0, name, mysql_type);
                    put(&mut m.cells, start, name, value_of(c)?);
                    m.updated_slot.resize(m.sql_type.len(), false);
                }
                if i == 0 && c.is_key {
                    m.pk_names.push(name);
                }
                // Every name of a row is a type-map name: its slot says whether it is in the set.
                if c.updated && !m.updated_slot[slot] {
                    m.updated_slot[slot] = true;
                    updated.push(name);
                }
            }
            let has_image = m.cells.len() > start;
            if has_image {
                m.data.push(start..m.cells.len());
            }
            if et == EventType::Update {
                m.old_image(row.bytes, &updated, has_image)?;
            }
        }
        m.cols = cols;
        m.updated = updated;
        m.keys.clear();
        m.key_ends.clear();
        for (k, _) in &m.sql_type {
            write_str(&mut m.keys, k);
            m.keys.push(b':');
            m.key_ends.push(m.keys.len());
        }
        Ok(())
    }

    /// Reads image `image` of `row` (not the entry's first) into the cells when its columns are
    /// the type maps' (same names, same order), column by column as they are parsed. False when
    /// they are not: the cells are as before, and what else was set (types, updated set) the
    /// general path sets the same way for the same names.
    #[inline]
    fn usual_row(
        &mut self,
        row: &'a [u8],
        image: u32,
        updated: &mut Vec<&'a str>,
    ) -> Result<bool, ViewError> {
        let m = self;
        let start = m.cells.len();
        let (mut pos, mut j) = (0, 0);
        while let Some((number, bytes)) = wire::next_row_column(row, &mut pos)? {
            if number != image {
                continue;
            }
            let c = RawColumn::parse(bytes)?;
            let Some(&(name, _)) = m.sql_type.get(j).filter(|(k, _)| same(c.name, k.as_bytes()))
            else {
                m.cells.truncate(start);
                return Ok(false);
            };
            m.sql_type[j].1 = c.sql_type;
            m.mysql_type[j].1 = text(c.mysql_type, Some(m.mysql_type[j].1))?;
            m.cells.push((name, value_of(&c)?));
            if c.updated && !m.updated_slot[j] {
                m.updated_slot[j] = true;
                updated.push(name);
            }
            j += 1;
        }
        // (No columns at all: the general path leaves such a row out of the data.)
        if j == 0 || j != m.sql_type.len() {
            m.cells.truncate(start);
            return Ok(false);
        }
        Ok(true)
    }

    /// The old image of UPDATE row `row`: its before columns that are in the updated set.
    #[inline]
    fn old_image(
        &mut self,
        row: &'a [u8],
        updated: &[&'a str],
        has_image: bool,
    ) -> Result<(), ViewError> {
        let m = self;
        let ostart = m.old_cells.len();
        let (mut pos, mut j) = (0, 0);
        while let Some((number, bytes)) = wire::next_row_column(row, &mut pos)? {
            if number != 1 {
                continue;
            }
            let c = RawColumn::parse(bytes)?;
            let name = text(c.name, m.sql_type.get(j).map(|(k, _)| *k))?;
            text(c.mysql_type, m.mysql_type.get(j).map(|(_, t)| *t))?;
            let value = value_of(&c)?;
            let is_updated = match m.sql_type.get(j) {
                Some((k, _)) if std::ptr::eq(*k, name) => m.updated_slot[j],
                _ => updated.iter().any(|u| same(u.as_bytes(), name.as_bytes())),
            };
            if is_updated {
                put(&mut m.old_cells, ostart, name, value);
            }
            j += 1;
        }
        if m.old_cells.len() > ostart {
            m.old.push((ostart..m.old_cells.len(), has_image.then(|| m.data.len() - 1)));
        }
        Ok(())
    }

    /// `"name":` for a cell at position `j` of its image: the escaped key of type-map slot `j`
    /// when the cell holds that very name (rows of the usual layout), else written here.
    #[inline(always)]
    fn write_key(&self, o: &mut Vec<u8>, j: usize, name: &str) {
        if let Some((k, _)) = self.sql_type.get(j)
            && std::ptr::eq(*k, name)
        {
            let start = if j == 0 { 0 } else { self.key_ends[j - 1] };
            put_short(o, &self.keys[start..self.key_ends[j]]);
        } else {
            write_str(o, name);
            o.push(b':');
        }
    }

    pub(crate) fn is_ddl(&self) -> bool {
        self.is_ddl
    }

    pub(crate) fn table(&self) -> &str {
        self.table
    }

    pub(crate) fn database(&self) -> &str {
        self.database
    }

    pub(crate) fn pk_names(&self) -> &[&'a str] {
        &self.pk_names
    }

    /// The number of data rows.
    pub fn rows(&self) -> usize {
        self.data.len()
    }

    /// The value of column `name` in data row `row` (`None` for absent or NULL), as Java's
    /// `row.get(name)`.
    ///
    /// # Errors
    /// None in practice: values were checked to be UTF-8 when read.
    pub(crate) fn value(&self, row: usize, name: &str) -> Result<Option<&'a str>, ViewError> {
        let cell = self.cells[self.data[row].clone()].iter().find(|(k, _)| *k == name);
        cell.and_then(|(_, v)| *v).map(wire::utf8).transpose()
    }

    /// The JSON of the whole message.
    pub(crate) fn json(&self, id: i64, ts: i64) -> Vec<u8> {
        let mut o = Vec::with_capacity(256 + self.cells.len() * 24);
        self.write(&mut o, id, ts, None);
        o
    }

    /// The JSON of the part holding the data rows for which `keep(row)` holds, with their old
    /// images (Java's per-partition FlatMessage: same header, type maps and pkNames).
    pub(crate) fn json_of(&self, id: i64, ts: i64, keep: &mut dyn FnMut(usize) -> bool) -> Vec<u8> {
        let kept: Vec<bool> = (0..self.data.len()).map(&mut *keep).collect();
        let mut o = Vec::with_capacity(256 + self.cells.len() * 24);
        self.write(&mut o, id, ts, Some(&kept));
        o
    }

    /// Appends the JSON of the whole message (no line end) to `o`, as
    /// `FlatMessage::to_json` writes it for batch `id` at `ts`.
    pub fn write_json(&self, o: &mut Vec<u8>, id: i64, ts: i64) {
        self.write(o, id, ts, None);
    }

    /// The message, keeping the data rows `kept[row]` (all when `None`) and their old images.
    fn write(&self, o: &mut Vec<u8>, id: i64, ts: i64, kept: Option<&[bool]>) {
        o.extend_from_slice(b"{\"id\":");
        o.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        o.extend_from_slice(b",\"database\":");
        write_str(o, self.database);
        o.extend_from_slice(b",\"table\":");
        write_str(o, self.table);
        o.extend_from_slice(b",\"pkNames\":");
        if self.pk_names.is_empty() {
            o.extend_from_slice(b"null");
        } else {
            o.push(b'[');
            for (k, n) in self.pk_names.iter().enumerate() {
                if k > 0 {
                    o.push(b',');
                }
                write_str(o, n);
            }
            o.push(b']');
        }
        o.extend_from_slice(if self.is_ddl { b",\"isDdl\":true" } else { b",\"isDdl\":false" });
        o.extend_from_slice(b",\"type\":");
        write_str(o, self.kind);
        o.extend_from_slice(b",\"es\":");
        o.extend_from_slice(itoa::Buffer::new().format(self.es).as_bytes());
        o.extend_from_slice(b",\"ts\":");
        o.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
        o.extend_from_slice(b",\"sql\":");
        write_str(o, self.sql);
        o.extend_from_slice(b",\"sqlType\":");
        self.write_map(o, &self.sql_type, |o, v| {
            o.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes());
        });
        o.extend_from_slice(b",\"mysqlType\":");
        self.write_map(o, &self.mysql_type, |o, v| write_str(o, v));
        let keep = |row: usize| kept.is_none_or(|k| k[row]);
        o.extend_from_slice(b",\"data\":");
        let rows = self.data.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, r)| r);
        self.write_images(o, &self.cells, rows);
        o.extend_from_slice(b",\"old\":");
        let all = kept.is_none_or(|k| k.iter().all(|k| *k));
        let olds = self
            .old
            .iter()
            .filter(|(_, owner)| owner.is_some_and(keep) || (owner.is_none() && all))
            .map(|(r, _)| r);
        self.write_images(o, &self.old_cells, olds);
        o.extend_from_slice(b",\"gtid\":");
        write_str(o, self.gtid);
        o.push(b'}');
    }
}

impl FlatRows<'_> {
    /// A type map (its names are the type-map names, so the escaped keys apply), `null` when
    /// empty.
    fn write_map<V>(
        &self,
        o: &mut Vec<u8>,
        map: &[(&str, V)],
        mut value: impl FnMut(&mut Vec<u8>, &V),
    ) {
        if map.is_empty() {
            o.extend_from_slice(b"null");
            return;
        }
        o.push(b'{');
        for (k, (name, v)) in map.iter().enumerate() {
            if k > 0 {
                o.push(b',');
            }
            self.write_key(o, k, name);
            value(o, v);
        }
        o.push(b'}');
    }

    /// A list of row images, `null` when there is none (as flat.rs leaves an empty list out).
    fn write_images<'r>(
        &self,
        o: &mut Vec<u8>,
        cells: &[Cell<'_>],
        rows: impl Iterator<Item = &'r Range<usize>>,
    ) {
        let mut any = false;
        for r in rows {
            o.push(if any { b',' } else { b'[' });
            any = true;
            o.push(b'{');
            for (k, (name, v)) in cells[r.clone()].iter().enumerate() {
                if k > 0 {
                    o.push(b',');
                }
                self.write_key(o, k, name);
                match v {
                    Some(v) => write_bytes(o, v),
                    None => o.extend_from_slice(b"null"),
                }
            }
            o.push(b'}');
        }
        if any {
            o.push(b']');
        } else {
            o.extend_from_slice(b"null");
        }
    }
}

/// What each byte becomes inside a JSON string, as serde_json writes it: 0 as is, `u` as
/// `\u00XX`, anything else as that letter after a backslash.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// A JSON string as serde_json writes it: `"` and `\` escaped, control characters as `\b \t \n
/// \f \r` or `\u00XX` (lower-case hex), everything else (non-ASCII included) as is.
pub(crate) fn write_str(o: &mut Vec<u8>, s: &str) {
    write_bytes(o, s.as_bytes());
}

/// [`write_str`] of text known to be UTF-8, as its bytes.
#[inline]
pub(crate) fn write_bytes(o: &mut Vec<u8>, bytes: &[u8]) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    o.reserve(bytes.len() + 2);
    o.push(b'"');
    // Eight bytes at a time: a word that needs no escaping (no control byte, `"` or `\\`) is
    // copied as one (most values are short: no copy call per value), another byte by byte.
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word: [u8; 8] =
            [word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]];
        let w = u64::from_le_bytes(word);
        let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let quote = has_zero(w ^ (ONES * u64::from(b'"')));
        if control | quote | has_zero(w ^ (ONES * u64::from(b'\\'))) == 0 {
            o.extend_from_slice(&word);
        } else {
            word.iter().for_each(|&b| write_escaped(o, b));
        }
    }
    words.remainder().iter().for_each(|&b| write_escaped(o, b));
    o.push(b'"');
}

/// One byte inside a JSON string, escaped as serde_json does.
#[inline(always)]
fn write_escaped(o: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ESCAPE[b as usize] {
        0 => o.push(b),
        b'u' => o.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 0xf) as usize],
        ]),
        e => o.extend_from_slice(&[b'\\', e]),
    }
}

/// Appends `bytes` eight at a time (short keys: no copy call each).
#[inline]
fn put_short(o: &mut Vec<u8>, bytes: &[u8]) {
    o.reserve(bytes.len());
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        o.extend_from_slice(&[
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
    }
    for &b in words.remainder() {
        o.push(b);
    }
}
