//! MySQL binary JSON (`MYSQL_TYPE_JSON` row values) rendered as Canal's `JsonConversion` does:
//! `{"k": v, "k2": v2}`, `[a, b]`, doubles via Java `Double.toString`, Canal's string escaping,
//! opaque DECIMAL unquoted, opaque temporals quoted with 6 fraction digits, other opaque values as
//! text. Also PARTIAL_UPDATE_ROWS JSON diffs rendered as Canal's `JSON_REPLACE(col, 'path', v)`.

use std::fmt::Write as _;

use super::cursor::{Cursor, le_uint};
use super::javafmt;
use super::value::{TextCharset, decimal_to_string, push_datetime2_int, push_frac, push_hms, ty};

/// Deeper documents are rejected (MySQL's own limit is 100).
const MAX_DEPTH: usize = 150;

/// Why a JSON value could not be rendered: a message and the offset inside the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub detail: String,
    pub offset: usize,
}

fn err(detail: impl Into<String>, offset: usize) -> JsonError {
    JsonError { detail: detail.into(), offset }
}

struct Renderer<'a> {
    charset: TextCharset,
    /// Values visited; a document that visits more values than it has bytes reuses offsets to fan
    /// out (a crafted "zip bomb"), so it is refused instead of rendered exponentially.
    visits: usize,
    budget: usize,
    _doc: &'a [u8],
}

/// Renders a whole binary JSON value (type byte first). An empty value renders as `""`... nothing:
/// Canal emits an empty string for a zero-length JSON column, the caller handles that.
pub(crate) fn render(doc: &[u8], charset: TextCharset, out: &mut String) -> Result<(), JsonError> {
    let (&t, body) = doc.split_first().ok_or_else(|| err("empty JSON value", 0))?;
    let mut r = Renderer { charset, visits: 0, budget: doc.len() + 16, _doc: doc };
    r.value(t, body, 1, out, 0)
}

impl Renderer<'_> {
    fn value(
        &mut self,
        t: u8,
        b: &[u8],
        base: usize,
        out: &mut String,
        depth: usize,
    ) -> Result<(), JsonError> {
        self.visits += 1;
        if self.visits > self.budget {
            return Err(err("JSON value references more values than it has bytes", base));
        }
        if depth > MAX_DEPTH {
            return Err(err("JSON nesting too deep", base));
        }
        match t {
            0x00 => self.container(b, base, false, true, out, depth),
            0x01 => self.container(b, base, true, true, out, depth),
            0x02 => self.container(b, base, false, false, out, depth),
            0x03 => self.container(b, base, true, false, out, depth),
            0x04 => {
                match b.first() {
                    Some(0) => out.push_str("null"),
                    Some(1) => out.push_str("true"),
                    Some(2) => out.push_str("false"),
                    _ => return Err(err("bad JSON literal", base)),
                }
                Ok(())
            }
            0x05 => int(b, 2, true, base, out),
            0x06 => int(b, 2, false, base, out),
            0x07 => int(b, 4, true, base, out),
            0x08 => int(b, 4, false, base, out),
            0x09 => int(b, 8, true, base, out),
            0x0a => int(b, 8, false, base, out),
            0x0b => {
                let v = b.get(..8).ok_or_else(|| err("truncated JSON double", base))?;
                javafmt::push_double(out, f64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
                Ok(())
            }
            0x0c => {
                let mut c = Cursor::with_base(b, base);
                let len = varlen(&mut c)?;
                let s =
                    c.bytes(len, "JSON string").map_err(|_| err("truncated JSON string", base))?;
                out.push('"');
                escape(&self.charset.decode(s), out);
                out.push('"');
                Ok(())
            }
            0x0f => self.opaque(b, base, out),
            other => Err(err(format!("unknown JSON type {other:#04x}"), base)),
        }
    }

    fn container(
        &mut self,
        b: &[u8],
        base: usize,
        large: bool,
        object: bool,
        out: &mut String,
        depth: usize,
    ) -> Result<(), JsonError> {
        let w = if large { 4 } else { 2 };
        let rd = |at: usize| -> Result<usize, JsonError> {
            b.get(at..at + w)
                .map(|x| le_uint(x) as usize)
                .ok_or_else(|| err("truncated JSON container", base + at))
        };
        let count = rd(0)?;
        let size = rd(w)?;
        if size > b.len() {
            return Err(err(format!("JSON container size {size} exceeds {} bytes", b.len()), base));
        }
        let b = &b[..size];
        let key_entry = if object { w + 2 } else { 0 };
        let value_entry = 1 + w;
        let header = 2 * w + count.saturating_mul(key_entry + value_entry);
        if header > size {
            return Err(err(format!("JSON container of {count} elements in {size} bytes"), base));
        }
        out.push(if object { '{' } else { '[' });
        for i in 0..count {
            if i > 0 {
                out.push_str(", ");
            }
            if object {
                let ke = 2 * w + i * key_entry;
                let koff = le_uint(&b[ke..ke + w]) as usize;
                let klen = le_uint(&b[ke + w..ke + w + 2]) as usize;
                let key = b
                    .get(koff..koff.saturating_add(klen))
                    .ok_or_else(|| err("JSON key out of bounds", base + ke))?;
                out.push('"');
                escape(&self.charset.decode(key), out);
                out.push_str("\": ");
            }
            let ve = 2 * w + count * key_entry + i * value_entry;
            let vt = b[ve];
            let inline = match vt {
                0x04..=0x06 => true,
                0x07 | 0x08 => large,
                _ => false,
            };
            if inline {
                self.value(vt, &b[ve + 1..ve + 1 + w], base + ve + 1, out, depth + 1)?;
            } else {
                let off = le_uint(&b[ve + 1..ve + 1 + w]) as usize;
                // Values live after the header: an offset into the header (or the container itself)
                // is corrupt, and refusing it also guarantees each level is strictly smaller.
                if off < header || off >= size {
                    return Err(err(
                        format!("JSON value offset {off} outside {header}..{size}"),
                        base + ve,
                    ));
                }
                self.value(vt, &b[off..], base + off, out, depth + 1)?;
            }
        }
        out.push(if object { '}' } else { ']' });
        Ok(())
    }

    fn opaque(&mut self, b: &[u8], base: usize, out: &mut String) -> Result<(), JsonError> {
        let mut c = Cursor::with_base(b, base);
        let field_type =
            c.u8("JSON opaque type").map_err(|_| err("truncated JSON opaque", base))?;
        let len = varlen(&mut c)?;
        let data = c.bytes(len, "JSON opaque").map_err(|_| err("truncated JSON opaque", base))?;
        match field_type {
            ty::NEWDECIMAL => {
                if data.len() < 2 {
                    return Err(err("truncated JSON decimal", base));
                }
                decimal_to_string(&data[2..], data[0], data[1], out)
                    .map_err(|_| err("bad JSON decimal", base))?;
            }
            ty::TIME => {
                let packed = packed_i64(data, base)?;
                out.push('"');
                if packed == 0 {
                    out.push_str("00:00:00");
                } else {
                    let u = packed.unsigned_abs();
                    push_hms(out, packed < 0, u >> 24);
                    push_frac(out, (u % (1 << 24)) as u32, 6);
                }
                out.push('"');
            }
            ty::DATE | ty::DATETIME | ty::TIMESTAMP => {
                // Canal renders DATE like DATETIME (`2012-03-18 00:00:00.000000`); MySQL prints
                // `2012-03-18`. We follow Canal: its clients see this text.
                let packed = packed_i64(data, base)?;
                out.push('"');
                if packed == 0 {
                    out.push_str("0000-00-00 00:00:00");
                } else {
                    let u = packed.unsigned_abs();
                    push_datetime2_int(out, (u >> 24) as i64);
                    push_frac(out, (u % (1 << 24)) as u32, 6);
                }
                out.push('"');
            }
            _ => {
                // Canal decodes other opaque values (BLOB, BIT, GEOMETRY...) as text; MySQL would print
                // `base64:typeNN:...`. Canal's text is what its clients see.
                out.push('"');
                escape(&self.charset.decode(data), out);
                out.push('"');
            }
        }
        Ok(())
    }
}

fn packed_i64(data: &[u8], base: usize) -> Result<i64, JsonError> {
    let b = data.get(..8).ok_or_else(|| err("truncated JSON temporal", base))?;
    Ok(i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

fn int(b: &[u8], n: usize, signed: bool, base: usize, out: &mut String) -> Result<(), JsonError> {
    let v = b.get(..n).ok_or_else(|| err("truncated JSON integer", base))?;
    let u = le_uint(v);
    if signed {
        let shift = 64 - 8 * n as u32;
        let _ = write!(out, "{}", ((u << shift) as i64) >> shift);
    } else {
        let _ = write!(out, "{u}");
    }
    Ok(())
}

/// JSON's variable-length length: 7 bits per byte, low bits first, at most 5 bytes.
fn varlen(c: &mut Cursor<'_>) -> Result<usize, JsonError> {
    let mut v: u64 = 0;
    for i in 0..5 {
        let b = c.u8("JSON length").map_err(|_| err("truncated JSON length", c.offset()))?;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return usize::try_from(v).map_err(|_| err("JSON length too large", c.offset()));
        }
    }
    Err(err("JSON length longer than 5 bytes", c.offset()))
}

/// Canal's `escapse`: quotes, backslash, `\n`, `\r`, `\t`, other controls and U+007F..U+00A0 as
/// lowercase `\u00xx`.
pub(crate) fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (0x7f..=0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Renders a PARTIAL_UPDATE_ROWS JSON diff as Canal's `JsonDiffConversion.print_json_diff` does:
/// nested function calls in reverse order, e.g. `JSON_REPLACE(col, '$.age', 26)`, consecutive
/// operations of the same kind sharing one call.
pub(crate) fn render_diff(
    diff: &[u8],
    column: &str,
    charset: TextCharset,
    out: &mut String,
) -> Result<(), JsonError> {
    struct Op<'a> {
        name: &'static str,
        path: &'a [u8],
        value: Option<&'a [u8]>,
    }
    let mut ops = Vec::new();
    let mut c = Cursor::new(diff);
    while !c.is_empty() {
        let code =
            c.u8("JSON diff operation").map_err(|_| err("truncated JSON diff", c.offset()))?;
        let plen = c
            .lenenc("JSON diff path length")
            .map_err(|_| err("truncated JSON diff", c.offset()))?;
        let plen = usize::try_from(plen).map_err(|_| err("JSON diff path too long", c.offset()))?;
        let path = c
            .bytes(plen, "JSON diff path")
            .map_err(|_| err("truncated JSON diff path", c.offset()))?;
        let name = match code {
            0 => "JSON_REPLACE",
            1 if path.last() == Some(&b']') => "JSON_ARRAY_INSERT",
            1 => "JSON_INSERT",
            2 => "JSON_REMOVE",
            other => return Err(err(format!("invalid JSON diff operation {other}"), c.offset())),
        };
        let value = if code != 2 {
            let vlen = c
                .lenenc("JSON diff value length")
                .map_err(|_| err("truncated JSON diff", c.offset()))?;
            let vlen =
                usize::try_from(vlen).map_err(|_| err("JSON diff value too long", c.offset()))?;
            Some(
                c.bytes(vlen, "JSON diff value")
                    .map_err(|_| err("truncated JSON diff value", c.offset()))?,
            )
        } else {
            None
        };
        ops.push(Op { name, path, value });
    }
    for i in (0..ops.len()).rev() {
        if i == 0 || ops[i - 1].name != ops[i].name {
            out.push_str(ops[i].name);
            out.push('(');
        }
    }
    out.push_str(column);
    if ops.is_empty() {
        return Ok(());
    }
    out.push_str(", ");
    for (i, op) in ops.iter().enumerate() {
        out.push('\'');
        out.push_str(&charset.decode(op.path));
        out.push('\'');
        if let Some(v) = op.value {
            out.push_str(", ");
            render(v, charset, out)?;
        }
        if i + 1 == ops.len() || ops[i + 1].name != op.name {
            out.push(')');
        }
        if i + 1 < ops.len() {
            out.push_str(", ");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(doc: &[u8]) -> String {
        let mut s = String::new();
        render(doc, TextCharset::Utf8, &mut s).unwrap();
        s
    }

    #[test]
    fn small_object_and_array() {
        // {"a": 1, "b": [true, "x"]}
        let mut doc = vec![0x00];
        let obj: Vec<u8> = vec![
            2, 0, // count
            0, 0, // size (patched)
            18, 0, 1, 0, // key a at 18
            19, 0, 1, 0, // key b at 19
            0x05, 1, 0, // int16 1 inline
            0x02, 20, 0, // array at 20
            b'a', b'b', // keys
            // array at 20: count 2, size 14, entries (literal true inline), (string at 10)
            2, 0, 12, 0, 0x04, 1, 0, 0x0c, 10, 0, 1, b'x',
        ];
        let mut obj = obj;
        let size = obj.len() as u16;
        obj[2..4].copy_from_slice(&size.to_le_bytes());
        doc.extend_from_slice(&obj);
        assert_eq!(r(&doc), r#"{"a": 1, "b": [true, "x"]}"#);
    }

    #[test]
    fn escaping_like_canal() {
        let mut s = String::new();
        escape("a\"b\\\n\u{1}\u{7f}é", &mut s);
        assert_eq!(s, "a\\\"b\\\\\\n\\u0001\\u007fé");
    }

    #[test]
    fn self_referencing_offsets_are_refused() {
        // An array whose element points at the array header itself.
        let doc = [0x02, 1, 0, 7, 0, 0x02, 0, 0];
        let mut s = String::new();
        assert!(render(&doc, TextCharset::Utf8, &mut s).is_err());
    }
}
