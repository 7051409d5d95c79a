//! Java's `Float.toString` / `Double.toString` output rules, which Canal uses for FLOAT, DOUBLE and
//! JSON doubles: the shortest digits that round-trip (what JDK 19+ prints; older JDKs occasionally
//! printed one more digit), plain notation for 1e-3 <= |v| < 1e7 with at least one fractional
//! digit (`100.0`), otherwise `d.dddE±n` (`1.5E10`, `1.0E-5`), and `NaN`, `Infinity`, `-0.0`.

use std::fmt::Write as _;

use super::value::TextOut;

/// A finite float's shortest round-trip decimal: `value = ±d1.d2d3… × 10^exp`, with no leading
/// or trailing zero digit (zero is the single digit `0`).
#[derive(Debug)]
struct Decimal {
    neg: bool,
    digits: [u8; 24],
    n: usize,
    exp: i32,
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        (self.neg, self.digits(), self.exp) == (other.neg, other.digits(), other.exp)
    }
}

impl Decimal {
    fn digits(&self) -> &[u8] {
        &self.digits[..self.n]
    }

    /// Reads ryu's (or Rust's `{:e}`) output: `-123.45`, `1.5e10`, `1e-7`, `0.00123`.
    fn parse(text: &str) -> Option<Decimal> {
        let b = text.as_bytes();
        let (neg, b) = match b.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, b),
        };
        let epos = b.iter().position(|&c| c == b'e' || c == b'E').unwrap_or(b.len());
        let (mantissa, exp_part) = b.split_at(epos);
        let mut exp: i32 = match exp_part.get(1..) {
            None => 0,
            Some(e) => std::str::from_utf8(e).ok()?.parse().ok()?,
        };
        let mut d = Decimal { neg, digits: [0; 24], n: 0, exp: 0 };
        let (mut point, mut int_digits, mut lead_zeros) = (false, 0i32, 0i32);
        for &c in mantissa {
            match c {
                b'.' => point = true,
                b'0' if d.n == 0 => lead_zeros += i32::from(point),
                b'0'..=b'9' => {
                    *d.digits.get_mut(d.n)? = c;
                    d.n += 1;
                    int_digits += i32::from(!point);
                }
                _ => return None,
            }
        }
        while d.n > 1 && d.digits[d.n - 1] == b'0' {
            d.n -= 1;
        }
        if d.n == 0 {
            d.digits[0] = b'0';
            d.n = 1;
            exp = 0;
        } else if int_digits > 0 {
            exp += int_digits - 1;
        } else {
            exp -= lead_zeros + 1;
        }
        d.exp = exp;
        Some(d)
    }
}

/// What `push_java_float` needs of `f32` and `f64`.
trait JavaFloat: Copy + std::fmt::Display + std::fmt::LowerExp + ryu::Float {
    /// Largest `e` such that every `d × 10^e` (one digit `d`) is exactly representable.
    const EXACT_EXP: i32;
    fn is_nan(self) -> bool;
    fn is_infinite(self) -> bool;
    fn is_positive(self) -> bool;
    /// Java's plain-notation range: 1e-3 <= |v| < 1e7, or zero.
    fn plain_range(self) -> bool;
}

impl JavaFloat for f64 {
    const EXACT_EXP: i32 = 15; // 9e15 < 2^53
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
    const EXACT_EXP: i32 = 6; // 9e6 < 2^24
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

/// The digits Java prints for a finite `v`: the shortest that round-trip (ryu), except that
/// when those are a single digit, Java (JDK 19+ spec) picks the 2-digit decimal closest to the
/// exact value instead (`4.9E-324`, not `5.0E-324`).
fn java_digits<F: JavaFloat>(v: F) -> Option<Decimal> {
    let d = Decimal::parse(ryu::Buffer::new().format_finite(v))?;
    // One digit times a small power of ten is exact: its closest 2-digit decimal is itself.
    if d.n > 1 || (0..=F::EXACT_EXP).contains(&d.exp) {
        return Some(d);
    }
    let mut exact = String::with_capacity(32);
    write!(exact, "{v:.1e}").ok()?;
    Decimal::parse(&exact)
}

/// Appends Java's `toString` of a float or double.
fn push_java_float<F: JavaFloat, O: TextOut + ?Sized>(out: &mut O, v: F) {
    if v.plain_range() {
        // In Java's plain range (1e-3 <= |v| < 1e7, and zero) ryu lays its shortest digits out
        // as Java does (`123.45`, `100.0`, `0.00123`, `-0.0`), and the single-digit rule of
        // `java_digits` never applies there (the closest 2-digit decimal of a one-digit shortest
        // value is that digit followed by 0 whenever ulp(v) < 0.05 × 10^exp, always true for
        // |v| >= 1e-3). Test: plain_range_fast_path_matches_the_general_one.
        out.ascii(ryu::Buffer::new().format_finite(v).as_bytes());
        return;
    }
    push_java_float_general(out, v);
}

/// [`push_java_float`] without the plain-range fast path.
fn push_java_float_general<F: JavaFloat, O: TextOut + ?Sized>(out: &mut O, v: F) {
    if v.is_nan() {
        out.ascii(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.ascii(if v.is_positive() { b"Infinity" } else { b"-Infinity" });
        return;
    }
    match java_digits(v) {
        Some(d) => push_java(out, &d, v.plain_range()),
        None => out.text(&v.to_string()),
    }
}

/// Appends `Double.toString(v)`.
pub(crate) fn push_double<O: TextOut + ?Sized>(out: &mut O, v: f64) {
    push_java_float(out, v);
}

/// Appends `Float.toString(v)`.
pub(crate) fn push_float<O: TextOut + ?Sized>(out: &mut O, v: f32) {
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

/// Lays a decimal out as Java does: plain (`123.45`, `0.00123`, `100.0`) or computerized
/// scientific notation (`1.5E10`, `1.0E-5`). Built in a stack buffer, appended once.
fn push_java<O: TextOut + ?Sized>(out: &mut O, d: &Decimal, plain: bool) {
    let mut buf = [0u8; 64];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = buf.get_mut(len..len + bytes.len()) {
            dst.copy_from_slice(bytes);
            len += bytes.len();
        }
    };
    if d.neg {
        put(b"-");
    }
    let digits = d.digits();
    if plain && d.exp >= 0 {
        let int_len = d.exp as usize + 1;
        if digits.len() > int_len {
            put(&digits[..int_len]);
            put(b".");
            put(&digits[int_len..]);
        } else {
            put(digits);
            for _ in digits.len()..int_len {
                put(b"0");
            }
            put(b".0");
        }
    } else if plain {
        put(b"0.");
        for _ in 0..(-d.exp - 1) {
            put(b"0");
        }
        put(digits);
    } else {
        put(&digits[..1]);
        put(b".");
        put(if digits.len() > 1 { &digits[1..] } else { b"0" });
        put(b"E");
        put(itoa::Buffer::new().format(d.exp).as_bytes());
    }
    out.ascii(&buf[..len]);
}

#[cfg(test)]
mod tests {
    /// ryu's digits, read as a [`Decimal`] and written back as `{:e}`, must agree with Rust's own
    /// `{:e}` (both are the shortest round-trip digits) for every kind of double and float. Where
    /// the exact value lies halfway between two shortest candidates, ryu takes the even digit, as
    /// Java 19+'s `toString` does, and Rust's `{:e}` may not: then both must read back as the
    /// same value, with as many digits.
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

    /// A decimal as Rust's `{:e}` prints it.
    fn lower_exp(d: &Decimal) -> String {
        let digits = std::str::from_utf8(d.digits()).unwrap();
        let sign = if d.neg { "-" } else { "" };
        let rest = if digits.len() > 1 { format!(".{}", &digits[1..]) } else { String::new() };
        format!("{sign}{}{rest}e{}", &digits[..1], d.exp)
    }

    #[test]
    fn ryu_digits_match_rust_lower_exp() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let check64 = |v: f64| {
            if !v.is_finite() {
                return;
            }
            let d = Decimal::parse(ryu::Buffer::new().format_finite(v)).unwrap();
            agree(&lower_exp(&d), &format!("{v:e}"), |t| t.parse::<f64>().unwrap() == v);
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
            check64(i as f64);
            let f = f32::from_bits(bits as u32);
            if f.is_finite() {
                let d = Decimal::parse(ryu::Buffer::new().format_finite(f)).unwrap();
                agree(&lower_exp(&d), &format!("{f:e}"), |t| t.parse::<f32>().unwrap() == f);
            }
        }
    }

    /// The shortcut for single digits times small powers of ten gives what the exact 2-digit
    /// rounding gives.
    #[test]
    fn exact_single_digits_skip_the_two_digit_rounding() {
        for e in 0..=15 {
            for d in 1..=9u32 {
                let v = f64::from(d) * 10f64.powi(e);
                assert_eq!(java_digits(v), Decimal::parse(&format!("{v:.1e}")), "{v}");
                assert_eq!(java_digits(-v), Decimal::parse(&format!("{:.1e}", -v)), "{v}");
            }
        }
        for e in 0..=6 {
            for d in 1..=9u8 {
                let v = f32::from(d) * 10f32.powi(e);
                assert_eq!(java_digits(v), Decimal::parse(&format!("{v:.1e}")), "{v}");
            }
        }
    }

    #[test]
    fn decimals_parse() {
        let p = |s: &str| {
            let d = Decimal::parse(s).unwrap();
            (d.neg, String::from_utf8(d.digits().to_vec()).unwrap(), d.exp)
        };
        assert_eq!(p("123.45"), (false, "12345".into(), 2));
        assert_eq!(p("-0.00123"), (true, "123".into(), -3));
        assert_eq!(p("1.5e10"), (false, "15".into(), 10));
        assert_eq!(p("1e-7"), (false, "1".into(), -7));
        assert_eq!(p("100.0"), (false, "1".into(), 2));
        assert_eq!(p("0.0"), (false, "0".into(), 0));
        assert_eq!(p("-0.0"), (true, "0".into(), 0));
        assert_eq!(p("4.9e-324"), (false, "49".into(), -324));
        assert!(Decimal::parse("1.2.3x").is_none());
        assert!(Decimal::parse("1e").is_none());
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

    /// The plain-range fast path (ryu's own layout) prints what the general path (digits, then
    /// Java's layout) prints, for doubles and floats: every one-digit value times 10^-3..10^6,
    /// the range edges, and a spread of bit patterns.
    #[test]
    fn plain_range_fast_path_matches_the_general_one() {
        fn check<F: JavaFloat>(v: F) {
            if !v.plain_range() {
                return;
            }
            let (mut fast, mut general) = (String::new(), String::new());
            push_java_float(&mut fast, v);
            push_java_float_general(&mut general, v);
            assert_eq!(fast, general, "{v:e}");
        }
        for e in -3..7 {
            for d in 1..=9u8 {
                for sign in [1.0, -1.0] {
                    check(sign * f64::from(d) * 10f64.powi(e));
                    check(sign as f32 * f32::from(d) * 10f32.powi(e));
                }
            }
        }
        for v in [0.0, -0.0, 1e-3, 9.999_999_999_999_999e6, 0.1 + 0.2, 1.0 / 3.0] {
            check(v);
            check(v as f32);
        }
        // A multiplicative walk over the plain range, and raw bit patterns inside it.
        let mut x = 1e-3f64;
        while x < 1e7 {
            check(x);
            check(-x);
            check(x as f32);
            x *= 1.000_37;
        }
        let mut bits = 0x3f50_624d_d2f1_a9fcu64; // 1e-3
        while f64::from_bits(bits) < 1e7 {
            check(f64::from_bits(bits));
            bits += 0x0000_0f1b_3c5d_7e9f;
        }
        let mut bits32 = 0x3a83_126fu32; // 1e-3f32
        while f32::from_bits(bits32) < 1e7 {
            check(f32::from_bits(bits32));
            bits32 += 0x0000_0a3d;
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
