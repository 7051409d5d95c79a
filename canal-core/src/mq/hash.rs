//! Java's hashing as Canal's MQ producers use it: `String.hashCode` over UTF-16 code units, and
//! `Math.abs(Math.abs(h) % n)` to pick a partition (see docs/configuration.md, "MQ routing").

/// Java's `String.hashCode()` of `s`: `h = 31 * h + unit` over the string's UTF-16 code units,
/// in wrapping 32-bit arithmetic. A character outside the BMP counts as its two surrogates.
pub fn java_string_hash(s: &str) -> i32 {
    let mut h: i32 = 0;
    if s.is_ascii() {
        // One UTF-16 unit per byte: skip the UTF-8 decoding.
        for &b in s.as_bytes() {
            h = h.wrapping_mul(31).wrapping_add(i32::from(b));
        }
    } else {
        for unit in s.encode_utf16() {
            h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
        }
    }
    h
}

/// The partition Canal computes for `hash` among `partitions` (> 0):
/// `Math.abs(Math.abs(hash) % partitions)`.
///
/// `Math.abs(Integer.MIN_VALUE)` is `Integer.MIN_VALUE` in Java, so the inner remainder can be
/// negative; the outer `abs` folds it back, which is why a key whose hash is `MIN_VALUE` still
/// lands on a fixed partition.
pub fn java_partition(hash: i32, partitions: u32) -> u32 {
    debug_assert!(partitions > 0 && partitions <= i32::MAX as u32);
    let n = i32::try_from(partitions).unwrap_or(i32::MAX).max(1);
    (hash.wrapping_abs() % n).unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_non_ascii_agree_with_the_definition() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
        // U+1F600 is the surrogate pair D83D DE00.
        let expect = 0xD83Di32.wrapping_mul(31).wrapping_add(0xDE00);
        assert_eq!(java_string_hash("\u{1F600}"), expect);
    }

    #[test]
    fn min_value_lands_on_a_valid_partition() {
        for n in 1..=64u32 {
            let p = java_partition(i32::MIN, n);
            assert!(p < n, "{n}: {p}");
            // -2147483648 % n, then abs.
            assert_eq!(i64::from(p), (i64::from(i32::MIN) % i64::from(n)).abs());
        }
        assert_eq!(java_partition(-7, 3), 1);
        assert_eq!(java_partition(i32::MAX, 1), 0);
    }
}
