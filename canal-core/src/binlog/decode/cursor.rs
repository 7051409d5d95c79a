//! A bounds-checked little reader over one event's bytes: every read names what it reads, so a short
//! buffer becomes a [`DecodeError::Truncated`] with the offset instead of a panic.

use super::DecodeError;

/// Reader over a byte slice. `base` is added to positions in errors so that offsets are relative to
/// the start of the event buffer even when the cursor covers only part of it.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0, base: 0 }
    }

    pub(crate) fn with_base(buf: &'a [u8], base: usize) -> Self {
        Cursor { buf, pos: 0, base }
    }

    /// Offset of the next byte, relative to the event start.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn truncated(&self, what: &'static str, need: usize) -> DecodeError {
        DecodeError::Truncated { what, offset: self.offset(), need, have: self.remaining() }
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn skip(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        self.bytes(n, what).map(|_| ())
    }

    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let s = self.bytes(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u24(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(3, what)?;
        Ok(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u48(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(le_uint(self.bytes(6, what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// MySQL length-encoded integer (the "packed" integer of the client protocol and rows events).
    pub(crate) fn lenenc(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let first = self.u8(what)?;
        match first {
            0..=0xfa => Ok(u64::from(first)),
            // 0xfb is NULL in result sets; in binlog contexts it never appears, treat it as 251 like
            // MySQL's net_field_length_ll does for robustness.
            0xfb => Ok(251),
            0xfc => Ok(u64::from(self.u16(what)?)),
            0xfd => Ok(u64::from(self.u24(what)?)),
            0xfe => self.u64(what),
            0xff => Err(DecodeError::Invalid {
                what,
                offset: self.offset() - 1,
                detail: "length-encoded integer starts with 0xff".into(),
            }),
        }
    }

    /// Variable-length unsigned integer of MySQL's serialization library (tagged GTIDs): the number of
    /// trailing one bits of the first byte is the count of extra bytes.
    pub(crate) fn varlen_uint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let first = *self.rest().first().ok_or_else(|| self.truncated(what, 1))?;
        let ones = first.trailing_ones() as usize;
        if ones == 8 {
            self.skip(1, what)?;
            return self.u64(what);
        }
        let n = ones + 1;
        let b = self.bytes(n, what)?;
        let mut raw = [0u8; 8];
        raw[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(raw) >> n)
    }

    /// Zig-zag signed variant of [`Self::varlen_uint`].
    pub(crate) fn varlen_int(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let u = self.varlen_uint(what)?;
        let mag = (u >> 1) as i64;
        Ok(if u & 1 != 0 { -mag - 1 } else { mag })
    }

    pub(crate) fn invalid(&self, what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid { what, offset: self.offset(), detail: detail.into() }
    }
}

/// Little-endian unsigned integer of up to 8 bytes.
pub(crate) fn le_uint(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Big-endian unsigned integer of up to 8 bytes.
pub(crate) fn be_uint(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}
