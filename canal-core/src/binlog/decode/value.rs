//! Column type codes and the value renderers shared by the row loop and the JSON decoder: DECIMAL,
//! temporal types, text charsets and the time zone used for TIMESTAMP. Every renderer appends to a
//! caller-owned `String` so the row loop can reuse one buffer.

use std::borrow::Cow;

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
            TextCharset::Latin1 => out.extend(b.iter().map(|&x| char::from(x))),
        }
    }

    /// [`Self::decode_into`] for a row image's bytes. Only UTF-8 needs checking: invalid
    /// sequences become U+FFFD exactly as in [`Self::decode_into`].
    pub(crate) fn decode_into_bytes(&self, b: &[u8], out: &mut Vec<u8>) {
        match self {
            TextCharset::Utf8 => {
                if b.is_ascii() {
                    out.extend_from_slice(b);
                } else {
                    match std::str::from_utf8(b) {
                        Ok(s) => out.extend_from_slice(s.as_bytes()),
                        Err(_) => out.extend_from_slice(String::from_utf8_lossy(b).as_bytes()),
                    }
                }
            }
            TextCharset::Latin1 => latin1_into(b, out),
        }
    }
}

/// Where the value renderers append: a row image's bytes (`Vec<u8>`, UTF-8 by construction: only
/// ASCII and `str` text go in) or a `String` (the JSON renderer, user variables). Rendering into
/// bytes spares the UTF-8 check a `String` needs for text built on the stack.
pub(crate) trait TextOut {
    /// Appends bytes that are all ASCII (callers never pass anything else).
    fn ascii(&mut self, b: &[u8]);
    /// Appends one ASCII byte.
    fn ascii_byte(&mut self, b: u8);
    /// Appends text.
    fn text(&mut self, s: &str);
}

impl TextOut for Vec<u8> {
    #[inline]
    fn ascii(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
    #[inline]
    fn ascii_byte(&mut self, b: u8) {
        self.push(b);
    }
    #[inline]
    fn text(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

impl TextOut for String {
    #[inline]
    fn ascii(&mut self, b: &[u8]) {
        match std::str::from_utf8(b) {
            Ok(s) => self.push_str(s),
            // Not reached (callers pass ASCII); byte-per-char keeps the text well-formed anyway.
            Err(_) => self.extend(b.iter().map(|&c| char::from(c))),
        }
    }
    #[inline]
    fn ascii_byte(&mut self, b: u8) {
        self.push(char::from(b));
    }
    #[inline]
    fn text(&mut self, s: &str) {
        self.push_str(s);
    }
}

/// Appends bytes as ISO-8859-1 chars (UTF-8 encoded): how Canal renders BLOB/BINARY/GEOMETRY
/// values.
pub(crate) fn latin1_into(b: &[u8], out: &mut Vec<u8>) {
    if b.is_ascii() {
        out.extend_from_slice(b);
        return;
    }
    out.reserve(b.len() * 2);
    for &x in b {
        if x < 0x80 {
            out.push(x);
        } else {
            // U+0080..U+00FF: two bytes 110000xx 10xxxxxx.
            out.extend_from_slice(&[0xc0 | (x >> 6), 0x80 | (x & 0x3f)]);
        }
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

/// Two ASCII digits per value 0..100, for the integer and date renderers.
const DIGITS2: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Writes `v` right-aligned ending at `buf[end]` (exclusive), returns where its digits start.
fn digits_into(buf: &mut [u8; 20], mut v: u64) -> usize {
    let mut at = 20;
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&DIGITS2[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&DIGITS2[d..d + 2]);
    } else {
        at -= 1;
        buf[at] = b'0' + v as u8;
    }
    at
}

/// Appends an unsigned integer in decimal without going through `fmt` (the row loop's hottest
/// operation).
#[inline]
pub(crate) fn push_u64<O: TextOut + ?Sized>(out: &mut O, v: u64) {
    if v < 10 {
        out.ascii_byte(b'0' + v as u8);
        return;
    }
    let mut buf = [0u8; 20];
    let at = digits_into(&mut buf, v);
    out.ascii(&buf[at..]);
}

#[inline]
pub(crate) fn push_i64<O: TextOut + ?Sized>(out: &mut O, v: i64) {
    if v < 0 {
        let mut buf = [0u8; 20];
        let at = digits_into(&mut buf, v.unsigned_abs()) - 1;
        buf[at] = b'-';
        out.ascii(&buf[at..]);
        return;
    }
    push_u64(out, v as u64);
}

pub(crate) fn push2<O: TextOut + ?Sized>(out: &mut O, v: u32) {
    let d = (v % 100) as usize * 2;
    out.ascii(&DIGITS2[d..d + 2]);
}

pub(crate) fn push4<O: TextOut + ?Sized>(out: &mut O, v: u32) {
    if v >= 10000 {
        push_u64(out, u64::from(v));
        return;
    }
    push2(out, v / 100);
    push2(out, v % 100);
}

/// Appends the first `fsp` digits of a 6-digit microsecond value (Canal's `usecondsToStr`).
pub(crate) fn push_frac<O: TextOut + ?Sized>(out: &mut O, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    let mut digits = *b".000000";
    let mut v = micros.min(999_999);
    for d in digits[1..].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.ascii(&digits[..=usize::from(fsp.min(6))]);
}

/// Writes the last two decimal digits of `v` at `at`.
#[inline]
fn put2(b: &mut [u8], at: usize, v: u32) {
    let d = (v % 100) as usize * 2;
    b[at..at + 2].copy_from_slice(&DIGITS2[d..d + 2]);
}

/// `YYYY-MM-DD HH:MM:SS` from broken-down parts, no validation (zero parts are kept).
pub(crate) fn push_datetime<O: TextOut + ?Sized>(
    out: &mut O,
    y: u32,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
) {
    let mut b = *b"0000-00-00 00:00:00";
    put2(&mut b, 5, mo);
    put2(&mut b, 8, d);
    put2(&mut b, 11, h);
    put2(&mut b, 14, mi);
    put2(&mut b, 17, s);
    if y >= 10000 {
        push_u64(out, u64::from(y)); // five digits and more: printed in full, then the rest
        out.ascii(&b[4..]);
    } else {
        put2(&mut b, 0, y / 100);
        put2(&mut b, 2, y % 100);
        out.ascii(&b);
    }
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

/// Renders epoch seconds as `yyyy-MM-dd HH:mm:ss` in a time zone (0 is MySQL's zero TIMESTAMP),
/// remembering the last day rendered: rows of one event mostly share their day, and the calendar
/// arithmetic is then done once per day.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EpochDays {
    day: i64,
    /// `YYYY-MM-DD ` of `day`, when its year has four digits.
    text: [u8; 11],
}

impl Default for EpochDays {
    fn default() -> Self {
        EpochDays { day: i64::MIN, text: [0; 11] }
    }
}

impl EpochDays {
    /// Appends `secs` rendered in `tz`.
    pub(crate) fn push<O: TextOut + ?Sized>(&mut self, out: &mut O, secs: u32, tz: TimeZoneOffset) {
        if secs == 0 {
            out.ascii(b"0000-00-00 00:00:00");
            return;
        }
        let t = i64::from(secs) + i64::from(tz.seconds);
        let days = t.div_euclid(86_400);
        let sod = t.rem_euclid(86_400) as u32;
        if days != self.day {
            let (y, m, d) = civil_from_days(days);
            let y = y.max(0) as u32;
            if y >= 10000 {
                push_datetime(out, y, m, d, sod / 3600, sod / 60 % 60, sod % 60);
                return;
            }
            let mut b = *b"0000-00-00 ";
            put2(&mut b, 0, y / 100);
            put2(&mut b, 2, y % 100);
            put2(&mut b, 5, m);
            put2(&mut b, 8, d);
            self.day = days;
            self.text = b;
        }
        let mut b = [0u8; 19];
        b[..11].copy_from_slice(&self.text);
        b[11..].copy_from_slice(b"00:00:00");
        put2(&mut b, 11, sod / 3600);
        put2(&mut b, 14, sod / 60 % 60);
        put2(&mut b, 17, sod % 60);
        out.ascii(&b);
    }
}

/// DATETIME2 integer part (40 bits, offset removed) as `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn push_datetime2_int<O: TextOut + ?Sized>(out: &mut O, intpart: i64) {
    if intpart == 0 {
        out.ascii(b"0000-00-00 00:00:00");
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
pub(crate) fn push_hms<O: TextOut + ?Sized>(out: &mut O, negative: bool, hms: u64) {
    if negative {
        out.ascii_byte(b'-');
    }
    let h = ((hms >> 12) % (1 << 10)) as u32;
    if h >= 100 {
        push_u64(out, u64::from(h));
    } else {
        push2(out, h);
    }
    out.ascii_byte(b':');
    push2(out, ((hms >> 6) % 64) as u32);
    out.ascii_byte(b':');
    push2(out, (hms % 64) as u32);
}

/// Powers of ten up to 10^9 (DECIMAL digit groups).
const POW10: [u64; 10] =
    [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000];

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
pub(crate) fn decimal_to_string<O: TextOut + ?Sized>(
    b: &[u8],
    precision: u8,
    scale: u8,
    out: &mut O,
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
    // The sign is the inverted top bit; negative values have every bit inverted. The value's
    // bytes, sign-cleared and un-inverted, on the stack (at most 30 bytes for 65 digits).
    let negative = b[0] & 0x80 == 0;
    let mask: u8 = if negative { 0xff } else { 0 };
    let mut raw = [0u8; 32];
    for (r, &x) in raw.iter_mut().zip(&b[..size]) {
        *r = x ^ mask;
    }
    raw[0] ^= 0x80;
    let mut pos = 0usize;
    let mut read = |n: usize| -> u64 {
        let v = raw[pos..pos + n].iter().fold(0u64, |v, &x| (v << 8) | u64::from(x));
        pos += n;
        v
    };
    // Sign, digits and point, built on the stack and appended once. At most 9 groups (65 digits)
    // of at most 10 digits each (a corrupt 4-byte group can exceed its 9), so 128 bytes suffice.
    let mut text = [0u8; 128];
    let mut len = 0usize;
    // A group of `width` digits, zero-padded unless it leads; a corrupt group wider than its
    // width is printed whole, as `{v:0width$}` would.
    fn group(text: &mut [u8; 128], len: &mut usize, v: u64, width: usize, padded: bool) {
        let at = *len;
        if padded && v < POW10[width] {
            let mut x = v;
            for d in text[at..at + width].iter_mut().rev() {
                *d = b'0' + (x % 10) as u8;
                x /= 10;
            }
            *len += width;
        } else {
            let mut digits = [0u8; 20];
            let from = digits_into(&mut digits, v);
            text[at..at + 20 - from].copy_from_slice(&digits[from..]);
            *len += 20 - from;
        }
    }
    let sign = usize::from(negative);
    text[0] = b'-';
    len += sign;
    let mut wrote_int = false;
    let mut any_nonzero = false;
    if intg0x > 0 {
        let v = read(DIG2BYTES[intg0x]);
        if v != 0 {
            group(&mut text, &mut len, v, intg0x, false);
            wrote_int = true;
            any_nonzero = true;
        }
    }
    for _ in 0..intg0 {
        let v = read(4);
        if wrote_int || v != 0 {
            group(&mut text, &mut len, v, 9, wrote_int);
            wrote_int = true;
        }
        any_nonzero |= v != 0;
    }
    if !wrote_int {
        group(&mut text, &mut len, 0, 1, true);
    }
    if frac > 0 {
        text[len] = b'.';
        len += 1;
        for _ in 0..frac0 {
            let v = read(4);
            group(&mut text, &mut len, v, 9, true);
            any_nonzero |= v != 0;
        }
        if frac0x > 0 {
            let v = read(DIG2BYTES[frac0x]);
            group(&mut text, &mut len, v, frac0x, true);
            any_nonzero |= v != 0;
        }
    }
    // A negative zero (all digits zero) prints without the sign, as BigDecimal does.
    let from = usize::from(negative && !any_nonzero);
    out.ascii(&text[from..len]);
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

    fn push_epoch(out: &mut String, secs: u32, tz: TimeZoneOffset) {
        EpochDays::default().push(out, secs, tz);
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

    /// The remembered day is only reused for the same day: a walk across days, zones, the zero
    /// TIMESTAMP and back renders as fresh renderings do.
    #[test]
    fn remembered_days_render_like_fresh_ones() {
        let mut days = EpochDays::default();
        let mut secs = 1u32;
        let (mut cached, mut fresh) = (Vec::new(), String::new());
        for i in 0..20_000u32 {
            secs = secs.wrapping_add(if i % 7 == 0 { 86_399 } else { 3_601 + i });
            let secs = if i % 1000 == 999 { 0 } else { secs };
            for tz in [TimeZoneOffset::UTC, TimeZoneOffset::east(-5 * 3600)] {
                cached.clear();
                fresh.clear();
                days.push(&mut cached, secs, tz);
                push_epoch(&mut fresh, secs, tz);
                assert_eq!(String::from_utf8(cached.clone()).unwrap(), fresh, "{secs} {tz:?}");
            }
        }
    }

    #[test]
    fn decimal_groups_and_negative_zero() {
        // 12 digits, scale 2: groups of 1 + 9 digits before the point.
        assert_eq!(dec("800000000000", 12, 2), "0.00");
        assert_eq!(dec("7FFFFFFFFFFF", 12, 2), "0.00");
        assert_eq!(dec("810000000001", 12, 2), "1000000000.01");
        assert_eq!(dec("80000000010A", 12, 2), "1.10");
        assert_eq!(dec("7FFFFFFFFEF5", 12, 2), "-1.10");
    }
}
