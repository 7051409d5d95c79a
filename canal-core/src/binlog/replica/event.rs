//! Raw binlog events as the dump delivers them, and the tiny header helper the replica needs
//! (type, positions, time). Full decoding is the decoder's job (`binlog::decode`).

use bytes::Bytes;

use super::error::ReplicaError;
use super::packet;

/// Length of the v4 common event header.
pub const EVENT_HEADER_LEN: usize = 19;
/// Length of the CRC32 trailer of a checksummed event.
pub const CHECKSUM_LEN: usize = 4;
/// Header flag `LOG_EVENT_ARTIFICIAL_F`: the event was made up by the dump thread (fake ROTATE).
pub const LOG_EVENT_ARTIFICIAL_F: u16 = EventHeader::ARTIFICIAL;

/// Event type codes (MySQL and MariaDB numbering): the decoder's.
pub use crate::binlog::decode::event_type;

/// Binlog checksum algorithm (`binlog_checksum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChecksumAlg {
    /// No checksum (`NONE`).
    Off,
    /// A 4-byte CRC32 trailer on every event.
    Crc32,
}

impl ChecksumAlg {
    /// Parses the value of `@@global.binlog_checksum` (`NONE`/`CRC32`, any case).
    pub fn from_variable(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "NONE" | "OFF" | "" => Some(ChecksumAlg::Off),
            "CRC32" => Some(ChecksumAlg::Crc32),
            _ => None,
        }
    }

    /// Number of trailer bytes the algorithm appends.
    pub fn trailer_len(self) -> usize {
        match self {
            ChecksumAlg::Off => 0,
            ChecksumAlg::Crc32 => CHECKSUM_LEN,
        }
    }
}

/// The common v4 event header: the decoder's, so both sides of the pipeline read it one way.
pub use crate::binlog::decode::EventHeader;

/// One binlog event exactly as in the binlog: 19-byte header, body, and — when `checksum` is
/// [`ChecksumAlg::Crc32`] — the 4-byte CRC32 trailer.
///
/// Fake ROTATE events are passed through unchanged, *not* stripped. When they carry a trailer it
/// is a valid CRC32 of the event (verified against MariaDB 10.11), and `checksum` says so:
/// * the first fake ROTATE of a dump uses the connection's algorithm (`@master_binlog_checksum`,
///   which we set to `@@global.binlog_checksum`), even when the requested file was written with
///   another one;
/// * later fake ROTATEs (after a real ROTATE) use the algorithm of the file just finished;
/// * a FORMAT_DESCRIPTION declares its file's algorithm, which applies to it and the events
///   after it.
///
/// So a decoder that drops `checksum.trailer_len()` bytes reads clean file names, where
/// mysql_async — which has seen no FORMAT_DESCRIPTION yet — leaves 4 bytes of CRC in the name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// The parsed common header.
    pub header: EventHeader,
    /// The whole event.
    pub bytes: Bytes,
    /// Whether the last 4 bytes of `bytes` are a CRC32. Tracks FORMAT_DESCRIPTION events (which
    /// state their file's algorithm); before the first one it is the connection's algorithm.
    pub checksum: ChecksumAlg,
}

impl RawEvent {
    /// Wraps one event, checking that the header's size matches the bytes.
    ///
    /// # Errors
    /// [`ReplicaError::Protocol`] for a short event or a size mismatch.
    pub fn new(bytes: Bytes, checksum: ChecksumAlg) -> Result<Self, ReplicaError> {
        let header = EventHeader::parse(&bytes)
            .map_err(|e| ReplicaError::protocol(format!("binlog event header: {e}")))?;
        if header.event_size as usize != bytes.len() {
            return Err(ReplicaError::protocol(format!(
                "event of type {} says {} bytes but the packet carries {}",
                header.event_type,
                header.event_size,
                bytes.len()
            )));
        }
        let checksum = if header.event_type == event_type::FORMAT_DESCRIPTION {
            fde_checksum(&bytes).unwrap_or(checksum)
        } else {
            checksum
        };
        if bytes.len() < EVENT_HEADER_LEN + checksum.trailer_len() {
            return Err(ReplicaError::protocol("event shorter than its header and checksum"));
        }
        Ok(RawEvent { header, bytes, checksum })
    }

    /// The body: after the header, without the checksum trailer.
    pub fn body(&self) -> &[u8] {
        &self.bytes[EVENT_HEADER_LEN..self.bytes.len() - self.checksum.trailer_len()]
    }

    /// For a ROTATE event: the next file name and the position in it.
    pub fn rotate(&self) -> Option<(String, u64)> {
        if self.header.event_type != event_type::ROTATE {
            return None;
        }
        let body = self.body();
        let (pos, name) = body.split_at_checked(8)?;
        let pos = u64::from_le_bytes(pos.try_into().ok()?);
        Some((String::from_utf8_lossy(name).into_owned(), pos))
    }

    /// For a QUERY event: the statement text (`BEGIN`, `COMMIT`, DDL...).
    pub fn query_text(&self) -> Option<&[u8]> {
        if self.header.event_type != event_type::QUERY {
            return None;
        }
        // post-header: thread id 4, exec time 4, db len 1, error code 2, status vars len 2.
        let body = self.body();
        let db_len = usize::from(*body.get(8)?);
        let status_len = usize::from(u16::from_le_bytes([*body.get(11)?, *body.get(12)?]));
        body.get(13 + status_len + db_len + 1..)
    }

    /// For a MariaDB GTID event: the flags2 byte (bit 0 = standalone, i.e. no BEGIN/COMMIT).
    pub fn mariadb_gtid_flags(&self) -> Option<u8> {
        if self.header.event_type != event_type::MARIA_GTID {
            return None;
        }
        self.body().get(12).copied()
    }
}

/// The algorithm a FORMAT_DESCRIPTION event declares for its file (the byte before the 4-byte
/// checksum slot, present since MySQL 5.6.1 / MariaDB 5.3).
fn fde_checksum(event: &[u8]) -> Option<ChecksumAlg> {
    // header 19 + binlog version 2 + server version 50 + create time 4 + header length 1.
    if event.len() < EVENT_HEADER_LEN + 57 + 5 {
        return None;
    }
    match event[event.len() - 5] {
        0 => Some(ChecksumAlg::Off),
        1 => Some(ChecksumAlg::Crc32),
        _ => None,
    }
}

/// What one packet of a binlog dump stream carries.
#[derive(Debug)]
pub(crate) enum StreamPacket {
    /// An event (the 0x00 prefix removed).
    Event(Bytes),
    /// End of stream (non-blocking dump reached the end).
    Eof,
    /// An error packet.
    Err(packet::ErrPacket),
}

/// Classifies one dump-stream packet.
pub(crate) fn classify(payload: Bytes) -> Result<StreamPacket, ReplicaError> {
    match payload.first() {
        Some(0x00) => Ok(StreamPacket::Event(payload.slice(1..))),
        Some(0xFE) if payload.len() < 9 => Ok(StreamPacket::Eof),
        Some(0xFF) => Ok(StreamPacket::Err(packet::parse_err(&payload)?)),
        Some(b) => Err(ReplicaError::protocol(format!(
            "binlog stream packet starts with 0x{b:02x} (expected 0x00, 0xFE or 0xFF)"
        ))),
        None => Err(ReplicaError::protocol("empty binlog stream packet")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// CRC32 (IEEE) as binlog checksums use it; bitwise, for tests only.
    pub(crate) fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            }
        }
        !c
    }

    fn event(ty: u8, body: &[u8], log_pos: u32, crc: bool) -> Bytes {
        let size = (EVENT_HEADER_LEN + body.len() + if crc { 4 } else { 0 }) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&0u32.to_le_bytes());
        v.push(ty);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&log_pos.to_le_bytes());
        v.extend_from_slice(&0x20u16.to_le_bytes());
        v.extend_from_slice(body);
        if crc {
            let c = crc32(&v);
            v.extend_from_slice(&c.to_le_bytes());
        }
        Bytes::from(v)
    }

    #[test]
    fn fake_rotate_with_crc() {
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"binlog.000001");
        let ev =
            RawEvent::new(event(event_type::ROTATE, &body, 0, true), ChecksumAlg::Crc32).unwrap();
        assert!(ev.header.is_artificial());
        assert_eq!(ev.rotate(), Some(("binlog.000001".to_string(), 4)));
        assert_eq!(ev.header.start_pos(), None);
    }

    #[test]
    fn size_mismatch_and_short_events_are_errors() {
        let mut bad = event(event_type::XID, &[1, 2, 3, 4, 5, 6, 7, 8], 100, true).to_vec();
        bad.push(0);
        assert!(RawEvent::new(Bytes::from(bad), ChecksumAlg::Crc32).is_err());
        for n in 0..19 {
            assert!(RawEvent::new(Bytes::from(vec![0u8; n]), ChecksumAlg::Off).is_err());
        }
        // A header claiming 19 bytes cannot also carry a checksum.
        let tiny = event(event_type::XID, &[], 19, false);
        assert!(RawEvent::new(tiny.clone(), ChecksumAlg::Crc32).is_err());
        assert!(RawEvent::new(tiny, ChecksumAlg::Off).is_ok());
    }

    #[test]
    fn query_text_and_classify() {
        let mut body = vec![0u8; 13];
        body[8] = 2; // db len
        body[11] = 0; // no status vars
        body.extend_from_slice(b"db\0BEGIN");
        let ev =
            RawEvent::new(event(event_type::QUERY, &body, 200, false), ChecksumAlg::Off).unwrap();
        assert_eq!(ev.query_text(), Some(&b"BEGIN"[..]));
        assert_eq!(ev.header.start_pos(), Some(200 - ev.header.event_size));
        assert!(matches!(classify(Bytes::from_static(&[0xFE, 0, 0, 2, 0])), Ok(StreamPacket::Eof)));
        assert!(classify(Bytes::new()).is_err());
        assert!(classify(Bytes::from_static(&[0x01])).is_err());
        assert!(matches!(
            classify(Bytes::from_static(b"\xff\xd4\x04#HY000Could not find first log file")),
            Ok(StreamPacket::Err(e)) if e.code == 1236
        ));
    }

    proptest::proptest! {
        /// Whatever the network sends, the pure parsers return values or errors, never panic.
        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            crc in proptest::prelude::any::<bool>(),
        ) {
            let _ = packet::parse_handshake(&data);
            let _ = packet::parse_err(&data);
            let _ = packet::parse_auth_switch(&data);
            let _ = packet::parse_text_row(&data, 3);
            let _ = packet::parse_column_count(&data);
            let mut codec = packet::PacketCodec::new(300);
            let mut buf = bytes::BytesMut::from(&data[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            let _ = classify(Bytes::from(data.clone()));
            let alg = if crc { ChecksumAlg::Crc32 } else { ChecksumAlg::Off };
            // Make the size field agree often enough to reach the body accessors.
            let mut ev = data;
            if ev.len() >= EVENT_HEADER_LEN {
                let n = ev.len() as u32;
                ev[9..13].copy_from_slice(&n.to_le_bytes());
            }
            if let Ok(e) = RawEvent::new(Bytes::from(ev), alg) {
                let _ = e.body();
                let _ = e.rotate();
                let _ = e.query_text();
                let _ = e.mariadb_gtid_flags();
                let _ = e.header.start_pos();
            }
        }
    }
}
