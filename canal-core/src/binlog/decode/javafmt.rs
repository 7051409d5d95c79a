//! Java's `Float.toString` / `Double.toString` output rules, which Canal uses for FLOAT, DOUBLE and
//! JSON doubles: the shortest digits that round-trip (what JDK 19+ prints; older JDKs occasionally
//! printed one more digit), plain notation for 1e-3 <= |v| < 1e7 with at least one fractional
//! digit (`100.0`), otherwise `d.dddE±n` (`1.5E10`, `1.0E-5`), and `NaN`, `Infinity`, `-0.0`.

use std::fmt::Write as _;

/// Small stack buffer for `{:e}` output, so formatting a column allocates nothing.
struct StackBuf {
    buf: [u8; 40],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        let end = self.len + b.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

/// Appends `Double.toString(v)`.
pub fn push_double(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let mut sb = StackBuf { buf: [0; 40], len: 0 };
    // Rust's `{:e}` prints the shortest digits that round-trip, in the form `-d.ddde-n`. When that
    // is a single digit, Java (JDK 19+ spec) picks the 2-digit decimal closest to the exact value
    // instead (`4.9E-324`, not `5.0E-324`): `{:.1e}` rounds the exact value to 2 digits.
    if write!(sb, "{v:e}").is_err() {
        let _ = write!(out, "{v}");
        return;
    }
    if !sb.buf[..sb.len].contains(&b'.') {
        sb.len = 0;
        if write!(sb, "{v:.1e}").is_err() {
            let _ = write!(out, "{v}");
            return;
        }
    }
    push_java(out, &sb.buf[..sb.len], v.abs() >= 1e-3 && v.abs() < 1e7 || v == 0.0);
}

/// Appends `Float.toString(v)`.
pub fn push_float(out: &mut String, v: f32) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let mut sb = StackBuf { buf: [0; 40], len: 0 };
    if write!(sb, "{v:e}").is_err() {
        let _ = write!(out, "{v}");
        return;
    }
    if !sb.buf[..sb.len].contains(&b'.') {
        sb.len = 0;
        if write!(sb, "{v:.1e}").is_err() {
            let _ = write!(out, "{v}");
            return;
        }
    }
    push_java(out, &sb.buf[..sb.len], v.abs() >= 1e-3 && v.abs() < 1e7 || v == 0.0);
}

/// `Double.toString(v)` as a new string.
pub fn double_to_string(v: f64) -> String {
    let mut s = String::new();
    push_double(&mut s, v);
    s
}

/// `Float.toString(v)` as a new string.
pub fn float_to_string(v: f32) -> String {
    let mut s = String::new();
    push_float(&mut s, v);
    s
}

/// Rewrites Rust's `{:e}` output (`-1.2345e-7`) into Java's layout.
fn push_java(out: &mut String, sci: &[u8], plain: bool) {
    let (neg, sci) = match sci.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, sci),
    };
    let epos = sci.iter().position(|&c| c == b'e').unwrap_or(sci.len());
    let (mant, exp) = sci.split_at(epos);
    let exp: i32 = std::str::from_utf8(exp.get(1..).unwrap_or(b"0"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Significant digits without the point: value = 0.d1d2d3... * 10^(exp+1).
    let mut digits = [0u8; 32];
    let mut n = 0;
    for &c in mant {
        if c.is_ascii_digit() && n < digits.len() {
            digits[n] = c;
            n += 1;
        }
    }
    // Trailing zeros carry nothing (`1.0e2` from the 2-digit path is the digit 1).
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = &digits[..n.max(1)];
    if neg {
        out.push('-');
    }
    if plain {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            for i in 0..int_len {
                out.push(char::from(*digits.get(i).unwrap_or(&b'0')));
            }
            out.push('.');
            if digits.len() > int_len {
                for &d in &digits[int_len..] {
                    out.push(char::from(d));
                }
            } else {
                out.push('0');
            }
        } else {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            for &d in digits {
                out.push(char::from(d));
            }
        }
    } else {
        out.push(char::from(digits[0]));
        out.push('.');
        if digits.len() > 1 {
            for &d in &digits[1..] {
                out.push(char::from(d));
            }
        } else {
            out.push('0');
        }
        out.push('E');
        let _ = write!(out, "{exp}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_like_java() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.5e10, "1.5E10"),
            (1.0e-5, "1.0E-5"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (1234567.0, "1234567.0"),
            (1.0e7, "1.0E7"),
            (12345678.9, "1.23456789E7"),
            (100.0, "100.0"),
            (-3.25, "-3.25"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::MAX, "1.7976931348623157E308"),
            (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
            (4.9e-324, "4.9E-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (123.456, "123.456"),
            (1.0e23, "1.0E23"),
            (2.0e-3, "0.002"),
            (-1.7976931348623157e308, "-1.7976931348623157E308"),
        ];
        for (v, want) in cases {
            assert_eq!(double_to_string(*v), *want, "{v:e}");
        }
    }

    #[test]
    fn floats_like_java() {
        let cases: &[(f32, &str)] = &[
            (1.0, "1.0"),
            (1.1, "1.1"),
            (3.4028235e38, "3.4028235E38"),
            (1.4e-45, "1.4E-45"),
            (1.5e10, "1.5E10"),
            (0.5, "0.5"),
            (-123.45, "-123.45"),
            (1.0e-3, "0.001"),
            (9999999.0, "9999999.0"),
            (1.0e7, "1.0E7"),
            (f32::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(float_to_string(*v), *want, "{v:e}");
        }
    }
}
