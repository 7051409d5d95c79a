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

/// Writes the shortest round-trip digits of a finite float as Rust's `{:e}` does (`-d.ddde-n`,
/// or `de-n` for one digit), from ryu's output, which is several times faster than `{:e}`'s
/// Grisu/Dragon path on the row hot path.
fn write_shortest_exp(sb: &mut StackBuf, ryu_out: &str) -> std::fmt::Result {
    let (neg, body) = match ryu_out.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, ryu_out),
    };
    let (mantissa, exp) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| std::fmt::Error)?),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = [0u8; 40];
    let mut n = 0;
    let mut exp10 = exp;
    let int_sig = int.trim_start_matches('0');
    if int_sig.is_empty() {
        // 0.000ddd: the first significant digit is after the leading fractional zeros.
        let zeros = frac.len() - frac.trim_start_matches('0').len();
        exp10 += -(zeros as i32) - 1;
        for &d in frac.trim_start_matches('0').as_bytes() {
            *digits.get_mut(n).ok_or(std::fmt::Error)? = d;
            n += 1;
        }
    } else {
        exp10 += int_sig.len() as i32 - 1;
        for &d in int_sig.as_bytes().iter().chain(frac.as_bytes()) {
            *digits.get_mut(n).ok_or(std::fmt::Error)? = d;
            n += 1;
        }
    }
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    if n == 0 {
        digits[0] = b'0';
        n = 1;
        exp10 = 0;
    }
    if neg {
        sb.write_str("-")?;
    }
    sb.write_str(std::str::from_utf8(&digits[..1]).map_err(|_| std::fmt::Error)?)?;
    if n > 1 {
        sb.write_str(".")?;
        sb.write_str(std::str::from_utf8(&digits[1..n]).map_err(|_| std::fmt::Error)?)?;
    }
    write!(sb, "e{exp10}")
}

/// What `push_java_float` needs of `f32` and `f64`.
trait JavaFloat: Copy + std::fmt::Display + std::fmt::LowerExp + ryu::Float {
    fn is_nan(self) -> bool;
    fn is_infinite(self) -> bool;
    fn is_positive(self) -> bool;
    /// Java's plain-notation range: 1e-3 <= |v| < 1e7, or zero.
    fn plain_range(self) -> bool;
}

impl JavaFloat for f64 {
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn is_infinite(self) -> bool {
        f64::is_infinite(self)
    }
    fn is_positive(self) -> bool {
        self > 0.0
    }
    fn plain_range(self) -> bool {
        self.abs() >= 1e-3 && self.abs() < 1e7 || self == 0.0
    }
}

impl JavaFloat for f32 {
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn is_infinite(self) -> bool {
        f32::is_infinite(self)
    }
    fn is_positive(self) -> bool {
        self > 0.0
    }
    fn plain_range(self) -> bool {
        self.abs() >= 1e-3 && self.abs() < 1e7 || self == 0.0
    }
}

/// Appends Java's `toString` of a float or double.
fn push_java_float<F: JavaFloat>(out: &mut String, v: F) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v.is_positive() { "Infinity" } else { "-Infinity" });
        return;
    }
    let mut sb = StackBuf { buf: [0; 40], len: 0 };
    // The shortest digits that round-trip, in the form `-d.ddde-n`. When that is a single digit,
    // Java (JDK 19+ spec) picks the 2-digit decimal closest to the exact value instead
    // (`4.9E-324`, not `5.0E-324`): `{:.1e}` rounds the exact value to 2 digits.
    if write_shortest_exp(&mut sb, ryu::Buffer::new().format_finite(v)).is_err() {
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
    push_java(out, &sb.buf[..sb.len], v.plain_range());
}

/// Appends `Double.toString(v)`.
pub fn push_double(out: &mut String, v: f64) {
    push_java_float(out, v);
}

/// Appends `Float.toString(v)`.
pub fn push_float(out: &mut String, v: f32) {
    push_java_float(out, v);
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
    use super::{StackBuf, write_shortest_exp};

    /// ryu's digits rewritten as `{:e}` must agree with Rust's own `{:e}` (both are the shortest
    /// round-trip digits) for every kind of double and float. Where the exact value lies halfway
    /// between two shortest candidates, ryu takes the even digit, as Java 19+'s `toString` does,
    /// and Rust's `{:e}` may not: then both must read back as the same value, with as many digits.
    fn agree(ours: &str, rust: &str, reads_back: impl Fn(&str) -> bool) {
        if ours == rust {
            return;
        }
        let (om, _) = ours.split_once('e').unwrap();
        let (rm, _) = rust.split_once('e').unwrap();
        assert_eq!(om.len(), rm.len(), "{ours} vs {rust}");
        assert!(reads_back(ours) && reads_back(rust), "{ours} vs {rust}");
        let last = om.as_bytes()[om.len() - 1];
        assert_eq!((last - b'0') % 2, 0, "tie must go to the even digit: {ours} vs {rust}");
    }

    #[test]
    fn ryu_path_matches_rust_lower_exp() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let check64 = |v: f64| {
            if !v.is_finite() {
                return;
            }
            let mut sb = StackBuf { buf: [0; 40], len: 0 };
            write_shortest_exp(&mut sb, ryu::Buffer::new().format_finite(v)).unwrap();
            agree(std::str::from_utf8(&sb.buf[..sb.len]).unwrap(), &format!("{v:e}"), |t| {
                t.parse::<f64>().unwrap() == v
            });
        };
        for special in
            [0.0, -0.0, 1.0, 0.1, 1e-7, 1e22, 123.456, 5e-324, f64::MAX, f64::MIN_POSITIVE]
        {
            check64(special);
        }
        for i in 0..200_000u64 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let bits = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            check64(f64::from_bits(bits));
            check64((i as f64) / 3.0);
            let f = f32::from_bits(bits as u32);
            if f.is_finite() {
                let mut sb = StackBuf { buf: [0; 40], len: 0 };
                write_shortest_exp(&mut sb, ryu::Buffer::new().format_finite(f)).unwrap();
                agree(std::str::from_utf8(&sb.buf[..sb.len]).unwrap(), &format!("{f:e}"), |t| {
                    t.parse::<f32>().unwrap() == f
                });
            }
        }
    }

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
