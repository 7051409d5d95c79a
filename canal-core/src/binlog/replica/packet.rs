//! Pure MySQL client/server protocol pieces: packet framing (sequence ids, >16 MB continuation)
//! and parsers for the few server packets the replica needs (handshake v10, OK, ERR, EOF, auth
//! switch, text result sets). Bytes in, values out; every length is checked, nothing panics.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::ReplicaError;

/// Largest payload of one physical packet; a payload of exactly this size means "continued".
pub(crate) const MAX_CHUNK: usize = 0xFF_FFFF;

/// Client capability flags we use (subset of `CLIENT_*`).
pub(crate) mod caps {
    pub const LONG_PASSWORD: u32 = 0x0000_0001;
    pub const LONG_FLAG: u32 = 0x0000_0004;
    pub const CONNECT_WITH_DB: u32 = 0x0000_0008;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;
    pub const DEPRECATE_EOF: u32 = 0x0100_0000;
}

/// Frames and unframes MySQL packets. Decoding is incremental over a caller-owned buffer and
/// consumes nothing until a whole logical packet (all continuation chunks) is present, which makes
/// socket reads built on it cancel-safe.
#[derive(Debug)]
pub(crate) struct PacketCodec {
    seq: u8,
    max_packet: usize,
}

impl PacketCodec {
    pub(crate) fn new(max_packet: usize) -> Self {
        Self { seq: 0, max_packet }
    }

    /// Starts a new command: the next packet written has sequence id 0.
    pub(crate) fn reset_seq(&mut self) {
        self.seq = 0;
    }

    /// Takes one logical packet from `buf`, or returns `Ok(None)` (consuming nothing) if it is
    /// incomplete.
    ///
    /// # Errors
    /// [`ReplicaError::Protocol`] on an unexpected sequence id, [`ReplicaError::PacketTooLarge`]
    /// as soon as the announced chunks exceed the limit.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ReplicaError> {
        let mut off = 0usize;
        let mut total = 0usize;
        let mut chunks = 0usize;
        let mut seq = self.seq;
        loop {
            let Some(head) = buf.get(off..off + 4) else { return Ok(None) };
            let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
            if head[3] != seq {
                return Err(ReplicaError::protocol(format!(
                    "packet sequence id {} where {} was expected",
                    head[3], seq
                )));
            }
            total += len;
            if total > self.max_packet {
                return Err(ReplicaError::PacketTooLarge { len: total, max: self.max_packet });
            }
            if buf.len() < off + 4 + len {
                return Ok(None);
            }
            off += 4 + len;
            seq = seq.wrapping_add(1);
            chunks += 1;
            if len < MAX_CHUNK {
                break;
            }
        }
        self.seq = seq;
        if chunks == 1 {
            buf.advance(4);
            return Ok(Some(buf.split_to(total).freeze()));
        }
        let mut out = BytesMut::with_capacity(total);
        let mut frame = buf.split_to(off);
        while !frame.is_empty() {
            let len =
                usize::from(frame[0]) | usize::from(frame[1]) << 8 | usize::from(frame[2]) << 16;
            frame.advance(4);
            out.put_slice(&frame[..len]);
            frame.advance(len);
        }
        Ok(Some(out.freeze()))
    }

    /// Bytes still missing from `buf` to complete the chunk being received (4 for a missing
    /// header; 0 when a whole logical packet is there), so a reader can size its buffer for a
    /// big packet at once instead of growing it step by step.
    pub(crate) fn missing(&self, buf: &[u8]) -> usize {
        let mut off = 0usize;
        loop {
            let Some(head) = buf.get(off..off + 4) else { return off + 4 - buf.len() };
            let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
            let end = off + 4 + len;
            if buf.len() < end {
                return end - buf.len();
            }
            if len < MAX_CHUNK {
                return 0;
            }
            off = end;
        }
    }

    /// Appends `payload` to `out` as one logical packet (split into chunks as needed).
    pub(crate) fn encode(&mut self, payload: &[u8], out: &mut BytesMut) {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_CHUNK);
            out.reserve(4 + n);
            // n <= 0xFFFFFF, so the three low bytes are the whole length.
            let len = n as u32;
            out.put_slice(&len.to_le_bytes()[..3]);
            out.put_u8(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.put_slice(&rest[..n]);
            rest = &rest[n..];
            if n < MAX_CHUNK {
                break;
            }
        }
    }
}

/// A bounds-checked reader over a packet payload.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn short(&self, need: usize) -> ReplicaError {
        ReplicaError::protocol(format!(
            "{} packet truncated: needed {need} more bytes, {} left",
            self.what,
            self.buf.len()
        ))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ReplicaError> {
        if self.buf.len() < n {
            return Err(self.short(n));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ReplicaError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ReplicaError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ReplicaError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ReplicaError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Bytes up to (not including) a NUL, which is consumed.
    pub(crate) fn nul_terminated(&mut self) -> Result<&'a [u8], ReplicaError> {
        match self.buf.iter().position(|&b| b == 0) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                Ok(s)
            }
            None => {
                Err(ReplicaError::protocol(format!("{} packet: missing NUL terminator", self.what)))
            }
        }
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// A length-encoded integer; `Ok(None)` for the NULL marker 0xFB.
    pub(crate) fn lenenc_int(&mut self) -> Result<Option<u64>, ReplicaError> {
        let first = self.u8()?;
        Ok(Some(match first {
            0..=0xFA => u64::from(first),
            0xFB => return Ok(None),
            0xFC => u64::from(self.u16()?),
            0xFD => {
                let b = self.bytes(3)?;
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16
            }
            0xFE => self.u64()?,
            0xFF => {
                return Err(ReplicaError::protocol(format!(
                    "{} packet: 0xFF is not a length-encoded integer",
                    self.what
                )));
            }
        }))
    }

    /// A length-encoded string; `Ok(None)` for NULL.
    pub(crate) fn lenenc_bytes(&mut self) -> Result<Option<&'a [u8]>, ReplicaError> {
        match self.lenenc_int()? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| self.short(usize::MAX))?;
                self.bytes(n).map(Some)
            }
        }
    }
}

/// The fields of an initial handshake packet (protocol 10) the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handshake {
    pub(crate) server_version: String,
    pub(crate) connection_id: u32,
    /// The 20-byte auth nonce (both scramble parts, without the trailing NUL).
    pub(crate) nonce: Vec<u8>,
    pub(crate) capabilities: u32,
    pub(crate) collation: u8,
    /// Default auth plugin, if the server announced one.
    pub(crate) auth_plugin: Option<String>,
}

/// Parses the server's initial handshake.
///
/// # Errors
/// [`ReplicaError::UnsupportedServer`] for protocol versions other than 10,
/// [`ReplicaError::Protocol`] for truncated or inconsistent packets.
pub(crate) fn parse_handshake(payload: &[u8]) -> Result<Handshake, ReplicaError> {
    let mut r = Reader::new(payload, "handshake");
    let proto = r.u8()?;
    if proto != 10 {
        return Err(ReplicaError::UnsupportedServer {
            reason: format!("handshake protocol version {proto} (only 10 is supported)"),
        });
    }
    let server_version = String::from_utf8_lossy(r.nul_terminated()?).into_owned();
    let connection_id = r.u32()?;
    let mut nonce = r.bytes(8)?.to_vec();
    r.u8()?; // filler
    let mut capabilities = u32::from(r.u16()?);
    let mut collation = 0;
    let mut auth_plugin = None;
    if r.remaining() > 0 {
        collation = r.u8()?;
        r.u16()?; // status flags
        capabilities |= u32::from(r.u16()?) << 16;
        let auth_data_len = usize::from(r.u8()?);
        r.bytes(10)?; // reserved (MariaDB puts its extended capabilities in the last 4)
        if capabilities & caps::SECURE_CONNECTION != 0 {
            // At least 13 bytes: 12 of nonce plus the NUL.
            let len = auth_data_len.saturating_sub(8).max(13);
            let part2 = r.bytes(len.min(r.remaining()))?;
            let part2 = match part2.split_last() {
                Some((0, head)) => head,
                _ => part2,
            };
            nonce.extend_from_slice(part2);
        }
        if capabilities & caps::PLUGIN_AUTH != 0 {
            let rest = r.rest();
            let name = match rest.split_last() {
                Some((0, head)) => head,
                _ => rest,
            };
            // Some servers put more after the NUL; the name ends at the first NUL.
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            auth_plugin = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(Handshake { server_version, connection_id, nonce, capabilities, collation, auth_plugin })
}

/// An ERR packet's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrPacket {
    pub(crate) code: u16,
    pub(crate) state: String,
    pub(crate) message: String,
}

impl ErrPacket {
    /// Converts into [`ReplicaError::Server`].
    pub(crate) fn into_error(self, op: &'static str) -> ReplicaError {
        ReplicaError::Server { op, code: self.code, state: self.state, message: self.message }
    }
}

/// Parses an ERR packet (first byte 0xFF), protocol 4.1 layout with optional SQLSTATE.
pub(crate) fn parse_err(payload: &[u8]) -> Result<ErrPacket, ReplicaError> {
    let mut r = Reader::new(payload, "error");
    if r.u8()? != 0xFF {
        return Err(ReplicaError::protocol("error packet does not start with 0xFF"));
    }
    let code = r.u16()?;
    let mut state = String::new();
    if r.buf.first() == Some(&b'#') && r.remaining() >= 6 {
        r.u8()?;
        state = String::from_utf8_lossy(r.bytes(5)?).into_owned();
    }
    let message = String::from_utf8_lossy(r.rest()).into_owned();
    Ok(ErrPacket { code, state, message })
}

/// `true` for an old-style EOF packet (0xFE header, shorter than 9 bytes).
pub(crate) fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xFE) && payload.len() < 9
}

/// An auth switch request: the plugin to switch to and its data (nonce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthSwitch {
    pub(crate) plugin: String,
    pub(crate) data: Vec<u8>,
}

/// Parses an auth switch request (0xFE). A bare 0xFE is the pre-4.1 "old password" switch, which
/// is reported as the `mysql_old_password` plugin.
pub(crate) fn parse_auth_switch(payload: &[u8]) -> Result<AuthSwitch, ReplicaError> {
    let mut r = Reader::new(payload, "auth switch");
    if r.u8()? != 0xFE {
        return Err(ReplicaError::protocol("auth switch packet does not start with 0xFE"));
    }
    if r.remaining() == 0 {
        return Ok(AuthSwitch { plugin: "mysql_old_password".into(), data: Vec::new() });
    }
    let plugin = String::from_utf8_lossy(r.nul_terminated()?).into_owned();
    let rest = r.rest();
    let data = match rest.split_last() {
        Some((0, head)) => head,
        _ => rest,
    };
    Ok(AuthSwitch { plugin, data: data.to_vec() })
}

/// One text-protocol row: a value per column, `None` for SQL NULL.
pub(crate) type TextRow = Vec<Option<Vec<u8>>>;

/// Parses one text-protocol row with `columns` values.
pub(crate) fn parse_text_row(payload: &[u8], columns: usize) -> Result<TextRow, ReplicaError> {
    let mut r = Reader::new(payload, "result row");
    let mut row = Vec::with_capacity(columns.min(4096));
    for _ in 0..columns {
        row.push(r.lenenc_bytes()?.map(<[u8]>::to_vec));
    }
    Ok(row)
}

/// Reads the column count of a result-set header packet.
pub(crate) fn parse_column_count(payload: &[u8]) -> Result<usize, ReplicaError> {
    let mut r = Reader::new(payload, "result set header");
    match r.lenenc_int()? {
        Some(n) if n > 0 && n <= 4096 => Ok(n as usize),
        other => Err(ReplicaError::protocol(format!("unusable column count {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bytes_of_the_chunk_being_received() {
        let mut codec = PacketCodec::new(64 << 20);
        for size in [0usize, 100, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 7] {
            let mut out = BytesMut::new();
            codec.reset_seq();
            codec.encode(&vec![7u8; size], &mut out);
            assert_eq!(codec.missing(&out), 0, "whole packet of {size}");
            assert_eq!(codec.missing(&out[..0]), 4);
            assert_eq!(codec.missing(&out[..2]), 2);
            // The first chunk's header says how much of it is missing.
            let first = size.min(MAX_CHUNK);
            assert_eq!(codec.missing(&out[..4]), first);
            if size >= MAX_CHUNK {
                // After a full first chunk: the next header, then the next chunk.
                let at = 4 + MAX_CHUNK;
                assert_eq!(codec.missing(&out[..at]), 4);
                assert_eq!(codec.missing(&out[..at + 4]), size - MAX_CHUNK);
            }
        }
    }

    #[test]
    fn framing_roundtrip_small_and_continued() {
        for size in [0usize, 1, 100, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 7, 2 * MAX_CHUNK] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut enc = PacketCodec::new(64 << 20);
            let mut wire = BytesMut::new();
            enc.encode(&payload, &mut wire);
            enc.encode(b"next", &mut wire);
            let mut dec = PacketCodec::new(64 << 20);
            // Feed byte ranges to prove that incomplete input consumes nothing.
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(5_000_000) {
                buf.extend_from_slice(chunk);
                while let Some(p) = dec.decode(&mut buf).unwrap() {
                    got.push(p);
                }
            }
            assert_eq!(got.len(), 2, "size {size}");
            assert_eq!(&got[0][..], &payload[..], "size {size}");
            assert_eq!(&got[1][..], b"next");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn framing_errors() {
        let mut dec = PacketCodec::new(10);
        let mut buf = BytesMut::from(&[0x05, 0, 0, 1, 1, 2, 3, 4, 5][..]);
        assert!(matches!(dec.decode(&mut buf), Err(ReplicaError::Protocol { .. })));
        let mut dec = PacketCodec::new(10);
        let mut buf = BytesMut::from(&[0xFF, 0xFF, 0x7F, 0][..]);
        assert!(matches!(dec.decode(&mut buf), Err(ReplicaError::PacketTooLarge { .. })));
        let mut dec = PacketCodec::new(10);
        let mut buf = BytesMut::from(&[0x05, 0, 0][..]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 3);
    }

    fn mariadb_handshake() -> Vec<u8> {
        let mut p = vec![10u8];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1-log\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        let caps: u32 = 0xF7FE | caps::PLUGIN_AUTH | caps::SECURE_CONNECTION;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn handshake_parses() {
        let h = parse_handshake(&mariadb_handshake()).unwrap();
        assert_eq!(h.connection_id, 42);
        assert_eq!(h.nonce, b"abcdefghijklmnopqrst");
        assert_eq!(h.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert!(h.server_version.contains("MariaDB"));
    }

    #[test]
    fn truncated_packets_never_panic() {
        let full = mariadb_handshake();
        for n in 0..full.len() {
            let _ = parse_handshake(&full[..n]);
        }
        let mut bad = full.clone();
        bad[20 + 36 - 5] = 0x80; // a wild auth-data length must not panic
        let _ = parse_handshake(&bad);
        let err = [0xFFu8, 0x15, 0x04, b'#', b'2', b'8', b'0', b'0', b'0', b'n', b'o'];
        for n in 0..err.len() {
            let _ = parse_err(&err[..n]);
        }
        let e = parse_err(&err).unwrap();
        assert_eq!((e.code, e.state.as_str(), e.message.as_str()), (1045, "28000", "no"));
        for n in 0..12 {
            let _ = parse_text_row(&[0xFE, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11][..n], 2);
        }
        assert!(
            parse_text_row(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 1).is_err()
        );
    }

    #[test]
    fn text_row_and_switch() {
        let row = parse_text_row(&[3, b'a', b'b', b'c', 0xFB, 0], 3).unwrap();
        assert_eq!(row, vec![Some(b"abc".to_vec()), None, Some(Vec::new())]);
        let sw =
            parse_auth_switch(b"\xfecaching_sha2_password\x00123456789012345678901\x00").unwrap();
        assert_eq!(sw.plugin, "caching_sha2_password");
        assert_eq!(sw.data.len(), 21);
    }
}
