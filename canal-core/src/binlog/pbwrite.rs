//! A tiny protobuf writer for the hot path: row entries are encoded straight from decoded row
//! images into Canal's `Entry` bytes, without building a message tree per column. Field numbers
//! and "set → emitted" follow `proto/entry.proto`; tests check the bytes against prost.

use bytes::BufMut;

/// Wire type of varint fields.
const VARINT: u32 = 0;
/// Wire type of length-delimited fields.
const LEN: u32 = 2;

/// Appends a base-128 varint.
#[inline]
pub(crate) fn varint(buf: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Writes a base-128 varint at the start of `out`, returns its length.
pub(crate) fn varint_into(out: &mut [u8; 10], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

/// Bytes a varint of `v` takes.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from((field << 3) | wire));
}

/// An `int32`/`int64`/`enum` field (negative values take 10 bytes, as protobuf requires).
#[inline]
pub(crate) fn int(buf: &mut Vec<u8>, field: u32, v: i64) {
    key(buf, field, VARINT);
    varint(buf, v as u64);
}

/// A `bool` field.
pub(crate) fn boolean(buf: &mut Vec<u8>, field: u32, v: bool) {
    key(buf, field, VARINT);
    buf.push(u8::from(v));
}

/// A `string`/`bytes` field.
#[inline]
pub(crate) fn bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    key(buf, field, LEN);
    varint(buf, v.len() as u64);
    buf.put_slice(v);
}

/// Column field numbers (`proto/entry.proto`).
pub(crate) mod column {
    pub(crate) const INDEX: u32 = 1;
    pub(crate) const SQL_TYPE: u32 = 2;
    pub(crate) const NAME: u32 = 3;
    pub(crate) const IS_KEY: u32 = 4;
    pub(crate) const UPDATED: u32 = 5;
    pub(crate) const IS_NULL: u32 = 6;
    pub(crate) const VALUE: u32 = 8;
    pub(crate) const MYSQL_TYPE: u32 = 10;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::entry::Column;
    use prost::Message;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX, (-5i64) as u64] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(varint_len(v), b.len(), "{v}");
            let mut at = [0u8; 10];
            let n = varint_into(&mut at, v);
            assert_eq!(at[..n], b[..], "{v}");
        }
    }

    #[test]
    fn matches_prost_encoding() {
        let c = Column {
            index: Some(3),
            sql_type: Some(-5),
            name: Some("id".into()),
            is_key: Some(true),
            updated: Some(false),
            is_null: Some(false),
            value: Some("18446744073709551615".into()),
            mysql_type: Some("bigint(20) unsigned".into()),
            ..Default::default()
        };
        let mut buf = Vec::new();
        int(&mut buf, column::INDEX, 3);
        int(&mut buf, column::SQL_TYPE, -5);
        bytes(&mut buf, column::NAME, b"id");
        boolean(&mut buf, column::IS_KEY, true);
        boolean(&mut buf, column::UPDATED, false);
        boolean(&mut buf, column::IS_NULL, false);
        bytes(&mut buf, column::VALUE, b"18446744073709551615");
        bytes(&mut buf, column::MYSQL_TYPE, b"bigint(20) unsigned");
        assert_eq!(buf, c.encode_to_vec());
    }
}
