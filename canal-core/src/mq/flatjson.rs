//! FlatMessage JSON written straight from an entry's bytes, for the MQ hot path: the same bytes
//! as [`crate::flat::FlatMessage`] serialized with serde_json (the differential test
//! `mq::tests::flat_json_equals_flat_message` holds the two together), without decoding the entry
//! into owned structs or building maps of owned strings. Rows can be written in parts, for Java's
//! `messagePartition` over FlatMessages.

use std::ops::Range;

use crate::flat::event_type_name;
use crate::protocol::entry::EventType;

use super::RoutingError;
use super::wire::{self, EntryView, RowChangeView};

/// One column, borrowed.
#[derive(Clone, Copy, Debug, Default)]
struct Col<'a> {
    name: &'a str,
    sql_type: i32,
    is_key: bool,
    updated: bool,
    is_null: bool,
    value: &'a str,
    mysql_type: &'a str,
}

impl<'a> Col<'a> {
    fn value(&self) -> Option<&'a str> {
        if self.is_null { None } else { Some(self.value) }
    }
}

/// The columns of one image (field `image` of a RowData: 1 before, 2 after) into `out`.
fn read_columns<'a>(row: &'a [u8], image: u32, out: &mut Vec<Col<'a>>) -> Result<(), RoutingError> {
    out.clear();
    for f in wire::fields(row) {
        let f = f?;
        if f.number != image {
            continue;
        }
        let mut c = Col::default();
        for cf in wire::fields(f.bytes) {
            let cf = cf?;
            match cf.number {
                2 => c.sql_type = cf.varint as i32,
                3 => c.name = wire::utf8(cf.bytes)?,
                4 => c.is_key = cf.varint != 0,
                5 => c.updated = cf.varint != 0,
                6 => c.is_null = cf.varint != 0,
                8 => c.value = wire::utf8(cf.bytes)?,
                10 => c.mysql_type = wire::utf8(cf.bytes)?,
                _ => {}
            }
        }
        out.push(c);
    }
    Ok(())
}

/// Java's `LinkedHashMap.put` on a slice of pairs: replace in place, else append.
fn put<'a, V>(map: &mut Vec<(&'a str, V)>, from: usize, key: &'a str, value: V) {
    match map[from..].iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => map.push((key, value)),
    }
}

fn event_type(raw: u64) -> EventType {
    // prost's getter: an unknown number reads as the proto2 default, UPDATE.
    EventType::try_from(raw as i32).unwrap_or(EventType::Update)
}

/// The FlatMessage of one ROWDATA entry, borrowed from its bytes.
#[derive(Debug)]
pub(crate) struct FlatRows<'a> {
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
    /// Cells of all data images, back to back; `data[i]` is row i's range.
    cells: Vec<(&'a str, Option<&'a str>)>,
    data: Vec<Range<usize>>,
    /// Cells of all old images; `old[k]` is its range and the data row it belongs to.
    old_cells: Vec<(&'a str, Option<&'a str>)>,
    old: Vec<(Range<usize>, Option<usize>)>,
    /// Scratch: the columns of the current row's images and the updated-column set.
    cols: Vec<Col<'a>>,
    before: Vec<Col<'a>>,
    updated: Vec<&'a str>,
}

impl<'a> FlatRows<'a> {
    /// An empty message whose buffers [`parse`](Self::parse) reuses entry after entry.
    pub(crate) fn new() -> Self {
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
            before: Vec::new(),
            updated: Vec::new(),
        }
    }

    /// Becomes the FlatMessage of the ROWDATA entry `v` whose RowChange is `rc` (flat.rs's rules).
    pub(crate) fn parse(
        &mut self,
        v: &EntryView<'a>,
        rc: &RowChangeView<'a>,
    ) -> Result<(), RoutingError> {
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
        if rc.is_ddl || !matches!(et, EventType::Insert | EventType::Update | EventType::Delete) {
            return Ok(());
        }
        let image = if et == EventType::Delete { 1 } else { 2 };
        let mut cols = std::mem::take(&mut m.cols);
        let mut before = std::mem::take(&mut m.before);
        // Java accumulates the updated-column set across the rows of one entry.
        let mut updated = std::mem::take(&mut m.updated);
        for (i, row) in rc.rows.iter().enumerate() {
            read_columns(row.bytes, image, &mut cols)?;
            // Same columns, same order as the type maps (distinct names): slots by position.
            let same_layout = cols.len() == m.sql_type.len()
                && cols.iter().zip(&m.sql_type).all(|(c, (k, _))| c.name == *k);
            let start = m.cells.len();
            for (j, c) in cols.iter().enumerate() {
                if i == 0 && c.is_key {
                    m.pk_names.push(c.name);
                }
                if same_layout {
                    m.sql_type[j].1 = c.sql_type;
                    m.mysql_type[j].1 = c.mysql_type;
                    m.cells.push((c.name, c.value()));
                } else {
                    put(&mut m.sql_type, 0, c.name, c.sql_type);
                    put(&mut m.mysql_type, 0, c.name, c.mysql_type);
                    put(&mut m.cells, start, c.name, c.value());
                }
                if c.updated && !updated.contains(&c.name) {
                    updated.push(c.name);
                }
            }
            let has_image = m.cells.len() > start;
            if has_image {
                m.data.push(start..m.cells.len());
            }
            if et == EventType::Update {
                read_columns(row.bytes, 1, &mut before)?;
                let ostart = m.old_cells.len();
                for c in &before {
                    if updated.contains(&c.name) {
                        put(&mut m.old_cells, ostart, c.name, c.value());
                    }
                }
                if m.old_cells.len() > ostart {
                    m.old.push((ostart..m.old_cells.len(), has_image.then(|| m.data.len() - 1)));
                }
            }
        }
        m.cols = cols;
        m.before = before;
        m.updated = updated;
        Ok(())
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

    pub(crate) fn rows(&self) -> usize {
        self.data.len()
    }

    /// The value of column `name` in data row `row` (`None` for absent or NULL), as Java's
    /// `row.get(name)`.
    pub(crate) fn value(&self, row: usize, name: &str) -> Option<&'a str> {
        self.cells[self.data[row].clone()].iter().find(|(k, _)| *k == name).and_then(|(_, v)| *v)
    }

    /// The JSON of the whole message.
    pub(crate) fn json(&self, id: i64, ts: i64) -> Vec<u8> {
        self.json_of(id, ts, &mut |_| true)
    }

    /// The JSON of the part holding the data rows for which `keep(row)` holds, with their old
    /// images (Java's per-partition FlatMessage: same header, type maps and pkNames).
    pub(crate) fn json_of(&self, id: i64, ts: i64, keep: &mut dyn FnMut(usize) -> bool) -> Vec<u8> {
        let mut o = Vec::with_capacity(256 + self.cells.len() * 24);
        o.extend_from_slice(b"{\"id\":");
        o.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        o.extend_from_slice(b",\"database\":");
        write_str(&mut o, self.database);
        o.extend_from_slice(b",\"table\":");
        write_str(&mut o, self.table);
        o.extend_from_slice(b",\"pkNames\":");
        if self.pk_names.is_empty() {
            o.extend_from_slice(b"null");
        } else {
            o.push(b'[');
            for (k, n) in self.pk_names.iter().enumerate() {
                if k > 0 {
                    o.push(b',');
                }
                write_str(&mut o, n);
            }
            o.push(b']');
        }
        o.extend_from_slice(if self.is_ddl { b",\"isDdl\":true" } else { b",\"isDdl\":false" });
        o.extend_from_slice(b",\"type\":");
        write_str(&mut o, self.kind);
        o.extend_from_slice(b",\"es\":");
        o.extend_from_slice(itoa::Buffer::new().format(self.es).as_bytes());
        o.extend_from_slice(b",\"ts\":");
        o.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
        o.extend_from_slice(b",\"sql\":");
        write_str(&mut o, self.sql);
        o.extend_from_slice(b",\"sqlType\":");
        write_map(&mut o, &self.sql_type, |o, v| {
            o.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes());
        });
        o.extend_from_slice(b",\"mysqlType\":");
        write_map(&mut o, &self.mysql_type, |o, v| write_str(o, v));
        let kept: Vec<bool> = (0..self.data.len()).map(&mut *keep).collect();
        o.extend_from_slice(b",\"data\":");
        write_images(
            &mut o,
            &self.cells,
            self.data.iter().zip(&kept).filter(|(_, k)| **k).map(|(r, _)| r),
        );
        o.extend_from_slice(b",\"old\":");
        let olds = self
            .old
            .iter()
            .filter(|(_, owner)| {
                owner.is_some_and(|d| kept[d]) || (owner.is_none() && kept.iter().all(|k| *k))
            })
            .map(|(r, _)| r);
        write_images(&mut o, &self.old_cells, olds);
        o.extend_from_slice(b",\"gtid\":");
        write_str(&mut o, self.gtid);
        o.push(b'}');
        o
    }
}

fn write_map<V>(o: &mut Vec<u8>, map: &[(&str, V)], mut value: impl FnMut(&mut Vec<u8>, &V)) {
    if map.is_empty() {
        o.extend_from_slice(b"null");
        return;
    }
    o.push(b'{');
    for (k, (name, v)) in map.iter().enumerate() {
        if k > 0 {
            o.push(b',');
        }
        write_str(o, name);
        o.push(b':');
        value(o, v);
    }
    o.push(b'}');
}

/// A list of row images, `null` when there is none (as flat.rs leaves an empty list out).
fn write_images<'r>(
    o: &mut Vec<u8>,
    cells: &[(&str, Option<&str>)],
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
            write_str(o, name);
            o.push(b':');
            match v {
                Some(v) => write_str(o, v),
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

/// A JSON string as serde_json writes it: `"` and `\` escaped, control characters as `\b \t \n
/// \f \r` or `\u00XX` (lower-case hex), everything else (non-ASCII included) as is.
fn write_str(o: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    o.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        o.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            o.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            o.extend_from_slice(short);
        }
        start = i + 1;
    }
    o.extend_from_slice(&bytes[start..]);
    o.push(b'"');
}
