//! Column type codes and the value renderers shared by the row loop and the JSON decoder: DECIMAL,
//! temporal types, text charsets and the time zone used for TIMESTAMP. Every renderer appends to a
//! caller-owned `String` so the row loop can reuse one buffer.

use std::borrow::Cow;
use std::fmt::Write as _;

/// MySQL column type codes (`enum_field_types`); the full list, some only for reference.
#[allow(dead_code)]
pub(crate) mod ty {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const TYPED_ARRAY: u8 = 20;
    pub const VECTOR: u8 = 242;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// Charset used to turn text bytes into strings (Canal's `canal.instance.connectionCharset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TextCharset {
    /// UTF-8 (also what Canal uses for `UTF8MB4`). Invalid sequences become U+FFFD, as Java's
    /// `new String(bytes, UTF_8)` does; no error is raised.
    #[default]
    Utf8,
    /// ISO-8859-1: every byte maps to the char with the same code (never fails).
    Latin1,
}

impl TextCharset {
    /// Decodes `b`, borrowing when no conversion is needed.
    pub fn decode<'a>(&self, b: &'a [u8]) -> Cow<'a, str> {
        match self {
            TextCharset::Utf8 => String::from_utf8_lossy(b),
            TextCharset::Latin1 => {
                if b.is_ascii() {
                    Cow::Borrowed(std::str::from_utf8(b).unwrap_or_default())
                } else {
                    Cow::Owned(b.iter().map(|&x| char::from(x)).collect())
                }
            }
        }
    }

    /// Appends the decoded text of `b` to `out`.
    pub fn decode_into(&self, b: &[u8], out: &mut String) {
        match self {
            TextCharset::Utf8 => match std::str::from_utf8(b) {
                Ok(s) => out.push_str(s),
                Err(_) => out.push_str(&String::from_utf8_lossy(b)),
            },
            TextCharset::Latin1 => latin1_into(b, out),
        }
    }
}

/// Appends bytes as ISO-8859-1 chars: how Canal renders BLOB/BINARY/GEOMETRY values.
pub(crate) fn latin1_into(b: &[u8], out: &mut String) {
    out.reserve(b.len());
    for &x in b {
        out.push(char::from(x));
    }
}

/// A fixed offset from UTC for rendering TIMESTAMP values. Java Canal uses the JVM's default zone;
/// a fixed offset covers servers run in UTC or a zone without DST, and keeps this crate free of a tz
/// database (the caller can recompute the offset per event if it needs DST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeZoneOffset {
    /// Seconds east of UTC.
    pub seconds: i32,
}

impl TimeZoneOffset {
    /// UTC.
    pub const UTC: TimeZoneOffset = TimeZoneOffset { seconds: 0 };

    /// An offset of `seconds` east of UTC (e.g. `8 * 3600` for Asia/Shanghai).
    pub fn east(seconds: i32) -> Self {
        TimeZoneOffset { seconds }
    }
}

/// Appends an unsigned integer in decimal without going through `fmt` (the row loop's hottest
/// operation).
pub(crate) fn push_u64(out: &mut String, v: u64) {
    // itoa: two digits per step and one push_str, instead of a char push per digit.
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends `v` zero-padded to at least `width` digits (`{v:0width$}`).
pub(crate) fn push_padded(out: &mut String, v: u64, width: usize) {
    let mut b = itoa::Buffer::new();
    let digits = b.format(v);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

pub(crate) fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

pub(crate) fn push2(out: &mut String, v: u32) {
    out.push(char::from(b'0' + ((v / 10) % 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

pub(crate) fn push4(out: &mut String, v: u32) {
    if v >= 10000 {
        let _ = write!(out, "{v}");
        return;
    }
    push2(out, v / 100);
    push2(out, v % 100);
}

/// Appends the first `fsp` digits of a 6-digit microsecond value (Canal's `usecondsToStr`).
pub(crate) fn push_frac(out: &mut String, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    let mut digits = *b".000000";
    let mut v = micros.min(999_999);
    for d in digits[1..].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    push_ascii(out, &digits[..=usize::from(fsp.min(6))]);
}

/// Appends ASCII bytes built on the stack (one copy instead of a push per character).
fn push_ascii(out: &mut String, b: &[u8]) {
    out.push_str(std::str::from_utf8(b).unwrap_or_default());
}

/// Writes the last two decimal digits of `v` at `at`.
fn put2(b: &mut [u8], at: usize, v: u32) {
    b[at] = b'0' + ((v / 10) % 10) as u8;
    b[at + 1] = b'0' + (v % 10) as u8;
}

/// `YYYY-MM-DD HH:MM:SS` from broken-down parts, no validation (zero parts are kept).
pub(crate) fn push_datetime(out: &mut String, y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) {
    let mut b = *b"0000-00-00 00:00:00";
    let from = if y >= 10000 {
        push4(out, y); // five digits and more: printed in full, then the rest
        4
    } else {
        put2(&mut b, 0, y / 100);
        put2(&mut b, 2, y % 100);
        0
    };
    put2(&mut b, 5, mo);
    put2(&mut b, 8, d);
    put2(&mut b, 11, h);
    put2(&mut b, 14, mi);
    put2(&mut b, 17, s);
    push_ascii(out, &b[from..]);
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), valid for any i64 input the
/// 32-bit TIMESTAMP can produce.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Epoch seconds rendered as `yyyy-MM-dd HH:mm:ss` in `tz` (0 is MySQL's zero TIMESTAMP).
pub(crate) fn push_epoch(out: &mut String, secs: u32, tz: TimeZoneOffset) {
    if secs == 0 {
        out.push_str("0000-00-00 00:00:00");
        return;
    }
    let t = i64::from(secs) + i64::from(tz.seconds);
    let days = t.div_euclid(86_400);
    let sod = t.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    push_datetime(out, y.max(0) as u32, m, d, sod / 3600, sod / 60 % 60, sod % 60);
}

/// DATETIME2 integer part (40 bits, offset removed) as `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn push_datetime2_int(out: &mut String, intpart: i64) {
    if intpart == 0 {
        out.push_str("0000-00-00 00:00:00");
        return;
    }
    let v = intpart.unsigned_abs();
    let ymd = v >> 17;
    let ym = ymd >> 5;
    let hms = v % (1 << 17);
    push_datetime(
        out,
        (ym / 13) as u32,
        (ym % 13) as u32,
        (ymd % 32) as u32,
        (hms >> 12) as u32,
        ((hms >> 6) % 64) as u32,
        (hms % 64) as u32,
    );
}

/// `[-]HH:MM:SS` from packed `hour<<12 | minute<<6 | second`; hours of 100 and more printed in full.
pub(crate) fn push_hms(out: &mut String, negative: bool, hms: u64) {
    if negative {
        out.push('-');
    }
    let h = ((hms >> 12) % (1 << 10)) as u32;
    if h >= 100 {
        let _ = write!(out, "{h}");
    } else {
        push2(out, h);
    }
    out.push(':');
    push2(out, ((hms >> 6) % 64) as u32);
    out.push(':');
    push2(out, (hms % 64) as u32);
}

/// Bytes a DECIMAL(precision, scale) value occupies in a row.
pub(crate) fn decimal_bin_size(precision: u8, scale: u8) -> Option<usize> {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    if precision == 0 || precision > 65 || scale > 30 || scale > precision {
        return None;
    }
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    Some(intg / 9 * 4 + DIG2BYTES[intg % 9] + frac / 9 * 4 + DIG2BYTES[frac % 9])
}

/// Renders MySQL's binary DECIMAL as a plain string keeping the declared scale (Java's
/// `BigDecimal.toPlainString` of the value Canal builds), e.g. `12.50`, `-0.001`, `0`.
/// Errors when the meta is impossible or `b` is shorter than the value.
pub(crate) fn decimal_to_string(
    b: &[u8],
    precision: u8,
    scale: u8,
    out: &mut String,
) -> Result<usize, ()> {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let size = decimal_bin_size(precision, scale).ok_or(())?;
    if b.len() < size {
        return Err(());
    }
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (frac / 9, frac % 9);
    // The sign is the inverted top bit; negative values have every bit inverted.
    let negative = b[0] & 0x80 == 0;
    let mask: u8 = if negative { 0xff } else { 0 };
    let mut pos = 0usize;
    let mut read = |n: usize| -> u64 {
        let mut v = 0u64;
        for i in 0..n {
            let mut x = b[pos + i] ^ mask;
            if pos + i == 0 {
                x ^= 0x80;
            }
            v = (v << 8) | u64::from(x);
        }
        pos += n;
        v
    };
    let start = out.len();
    if negative {
        out.push('-');
    }
    let digits_start = out.len();
    let mut wrote_int = false;
    let push_group = |out: &mut String, v: u64, width: usize, wrote: &mut bool| {
        if *wrote {
            push_padded(out, v, width);
        } else if v != 0 {
            push_u64(out, v);
            *wrote = true;
        }
    };
    if intg0x > 0 {
        let v = read(DIG2BYTES[intg0x]);
        push_group(out, v, intg0x, &mut wrote_int);
    }
    for _ in 0..intg0 {
        let v = read(4);
        push_group(out, v, 9, &mut wrote_int);
    }
    if !wrote_int {
        out.push('0');
    }
    if frac > 0 {
        out.push('.');
        for _ in 0..frac0 {
            let v = read(4);
            push_padded(out, v, 9);
        }
        if frac0x > 0 {
            let v = read(DIG2BYTES[frac0x]);
            push_padded(out, v, frac0x);
        }
    }
    // A negative zero (all digits zero) prints without the sign, as BigDecimal does.
    if negative && out[digits_start..].bytes().all(|c| c == b'0' || c == b'.') {
        out.replace_range(start..digits_start, "");
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(hex: &str, p: u8, s: u8) -> String {
        let b: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut out = String::new();
        decimal_to_string(&b, p, s, &mut out).unwrap();
        out
    }

    #[test]
    fn decimal_examples_from_mysql_docs() {
        // 1234567890.1234 as DECIMAL(14,4): the example in MySQL's decimal.c.
        assert_eq!(dec("810DFB38D204D2", 14, 4), "1234567890.1234");
        assert_eq!(dec("7EF204C72DFB2D", 14, 4), "-1234567890.1234");
        assert_eq!(dec("80000000", 5, 2), "0.00");
        assert_eq!(dec("8000", 4, 0), "0");
    }

    #[test]
    fn integers() {
        let mut s = String::new();
        for v in [0i64, 7, -7, 1234567890, i64::MIN, i64::MAX] {
            s.clear();
            push_i64(&mut s, v);
            assert_eq!(s, v.to_string());
        }
        s.clear();
        push_u64(&mut s, u64::MAX);
        assert_eq!(s, u64::MAX.to_string());
    }

    #[test]
    fn epoch_rendering() {
        let mut s = String::new();
        push_epoch(&mut s, 1_700_000_000, TimeZoneOffset::UTC);
        assert_eq!(s, "2023-11-14 22:13:20");
        s.clear();
        push_epoch(&mut s, 1_700_000_000, TimeZoneOffset::east(8 * 3600));
        assert_eq!(s, "2023-11-15 06:13:20");
        s.clear();
        push_epoch(&mut s, 0, TimeZoneOffset::UTC);
        assert_eq!(s, "0000-00-00 00:00:00");
    }
}
