//! Frame codec: a 4-byte big-endian signed length followed by that many bytes of `Packet`.
//!
//! The core ([`encode_frame`], [`FrameDecoder`], [`encode_raw_messages_frame`]) is pure: bytes in,
//! values out, no I/O. [`PacketReader`], [`read_packet`] and [`write_packet`] put it on top of tokio's
//! `AsyncRead`/`AsyncWrite`.
//!
//! Java Canal enforces no maximum frame size; we bound every frame by a configurable maximum
//! ([`DEFAULT_MAX_FRAME_LEN`] unless told otherwise) and never reserve memory for a claimed length:
//! buffers grow only as bytes actually arrive, so a hostile length prefix costs nothing.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::packet::{Packet, PacketType};

/// Length of the frame header (the big-endian `i32` length prefix).
pub const HEADER_LEN: usize = 4;

/// Default upper bound of a frame's payload length: 64 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// Largest payload the 4-byte signed length prefix can describe.
const WIRE_MAX_FRAME_LEN: usize = i32::MAX as usize;

/// How much the async reader asks the OS for at most per read, so that buffer growth follows the
/// bytes that actually arrive rather than the length a peer claims.
const READ_CHUNK: usize = 64 * 1024;

/// Errors of the frame codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix is negative. The stream cannot be resynchronised.
    #[error("frame length {length} is negative")]
    NegativeLength {
        /// The length prefix as read.
        length: i32,
    },
    /// The frame is longer than the maximum frame length (when decoding: the configured maximum;
    /// when encoding: what the 4-byte length prefix can express). Nothing was allocated for it; the
    /// stream cannot be resynchronised.
    #[error("frame length {length} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The (claimed or required) payload length.
        length: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The input ended inside a frame (inside the header or the payload).
    #[error("input ended inside a frame: {missing} more bytes were expected")]
    Truncated {
        /// How many more bytes the frame needed.
        missing: usize,
    },
    /// A complete frame's payload is not a valid `Packet`. The frame has been consumed, so the
    /// stream is still positioned at the next frame.
    #[error("frame payload is not a valid packet")]
    Decode(#[from] prost::DecodeError),
    /// Reading or writing the underlying stream failed.
    #[error("i/o error on the packet stream")]
    Io(#[from] std::io::Error),
}

/// Checks a payload length against what the length prefix can express.
fn check_encodable(length: usize) -> Result<(), FrameError> {
    if length > WIRE_MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { length, max: WIRE_MAX_FRAME_LEN });
    }
    Ok(())
}

/// Appends `packet` as one frame (length prefix + encoded packet) to `dst`.
///
/// # Errors
/// [`FrameError::TooLarge`] if the encoded packet does not fit the 4-byte signed length prefix
/// (over 2 GiB); `dst` is then left unchanged. The decode-side maximum is not applied here.
pub fn encode_frame(packet: &Packet, dst: &mut BytesMut) -> Result<(), FrameError> {
    let length = packet.encoded_len();
    check_encodable(length)?;
    dst.reserve(HEADER_LEN + length);
    // `check_encodable` bounded the length by i32::MAX.
    dst.put_u32(length as u32);
    // BytesMut grows on demand, so encoding cannot run out of space; map the impossible error
    // rather than panic.
    packet.encode(dst).map_err(|_| FrameError::TooLarge { length, max: WIRE_MAX_FRAME_LEN })
}

/// Encodes `packet` as one frame into a fresh buffer.
///
/// # Errors
/// As [`encode_frame`].
pub fn frame_bytes(packet: &Packet) -> Result<Bytes, FrameError> {
    let mut dst = BytesMut::new();
    encode_frame(packet, &mut dst)?;
    Ok(dst.freeze())
}

/// Appends a raw-mode MESSAGES frame to `dst`, byte for byte as Java Canal's server writes it when
/// its store keeps raw entries (the default) and the batch is not empty.
///
/// The packet holds only field 3 (`type` = MESSAGES) then field 5 (`body`), where the body is
/// `Messages { batch_id (always written), messages... }`; there is **no** `version` field. `entries`
/// are already-encoded `Entry` messages, copied once, straight into `dst`. Empty batches are sent
/// differently, see [`super::packets::empty_messages`].
///
/// # Errors
/// [`FrameError::TooLarge`] if the packet does not fit the 4-byte length prefix; `dst` is then left
/// unchanged.
pub fn encode_raw_messages_frame<B: AsRef<[u8]>>(
    batch_id: i64,
    entries: &[B],
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let mut head = BytesMut::new();
    let mut cuts = Vec::with_capacity(entries.len());
    raw_messages_frame_head(batch_id, entries, &mut head, &mut cuts)?;
    dst.reserve(head.len() + entries.iter().map(|e| e.as_ref().len()).sum::<usize>());
    let mut from = 0;
    for (e, &cut) in entries.iter().zip(&cuts) {
        dst.put_slice(&head[from..cut]);
        dst.put_slice(e.as_ref());
        from = cut;
    }
    dst.put_slice(&head[from..]);
    Ok(())
}

/// The bytes of [`encode_raw_messages_frame`]'s frame that are not entry bytes, for writing the
/// frame without copying the entries ([`write_raw_messages_frame`]): `head` is cleared and gets
/// them, and `cuts[i]` is where entry `i` goes, so the frame is `head[..cuts[0]]`, `entries[0]`,
/// `head[cuts[0]..cuts[1]]`, `entries[1]`, …, `head[cuts[n-1]..]`.
///
/// # Errors
/// [`FrameError::TooLarge`] if the packet does not fit the 4-byte length prefix.
pub fn raw_messages_frame_head<B: AsRef<[u8]>>(
    batch_id: i64,
    entries: &[B],
    head: &mut BytesMut,
    cuts: &mut Vec<usize>,
) -> Result<(), FrameError> {
    head.clear();
    cuts.clear();
    // Messages body: field 1 varint, then one length-delimited field 2 per entry.
    let mut body_len = 1 + encoded_len_varint(batch_id as u64);
    for e in entries {
        let n = e.as_ref().len();
        body_len = body_len.saturating_add(1 + encoded_len_varint(n as u64) + n);
    }
    // Packet: `18 07` then `2a <len> <body>`.
    let packet_len = body_len.saturating_add(2 + 1 + encoded_len_varint(body_len as u64));
    check_encodable(packet_len)?;
    head.reserve(HEADER_LEN + 16 + entries.len() * 6);
    head.put_u32(packet_len as u32);
    head.put_u8(0x18); // field 3, varint
    head.put_u8(PacketType::Messages as u8);
    head.put_u8(0x2a); // field 5, length-delimited
    encode_varint(body_len as u64, head);
    head.put_u8(0x08); // Messages field 1, varint
    encode_varint(batch_id as u64, head);
    for e in entries {
        head.put_u8(0x12); // Messages field 2, length-delimited
        encode_varint(e.as_ref().len() as u64, head);
        cuts.push(head.len());
    }
    Ok(())
}

/// Writes the raw-mode MESSAGES frame of [`encode_raw_messages_frame`] with vectored writes
/// straight from the entries' bytes (no copy into a frame buffer) and flushes it. `head` and
/// `cuts` are scratch space, reused between calls.
///
/// # Cancel safety
/// **Not** cancel safe, as [`write_packet`]: a part of the frame may have been written.
///
/// # Errors
/// [`FrameError::TooLarge`] (nothing written), [`FrameError::Io`].
pub async fn write_raw_messages_frame<W: AsyncWrite + Unpin, B: AsRef<[u8]>>(
    writer: &mut W,
    batch_id: i64,
    entries: &[B],
    head: &mut BytesMut,
    cuts: &mut Vec<usize>,
) -> Result<(), FrameError> {
    use std::io::IoSlice;
    raw_messages_frame_head(batch_id, entries, head, cuts)?;
    // Slices per writev: well under Linux's IOV_MAX (1024).
    const PER_CALL: usize = 512;
    let mut parts: Vec<IoSlice<'_>> = Vec::with_capacity(2 * entries.len() + 1);
    let mut from = 0;
    for (e, &cut) in entries.iter().zip(cuts.iter()) {
        parts.push(IoSlice::new(&head[from..cut]));
        let e = e.as_ref();
        if !e.is_empty() {
            parts.push(IoSlice::new(e));
        }
        from = cut;
    }
    parts.push(IoSlice::new(&head[from..]));
    let mut rest = &mut parts[..];
    while !rest.is_empty() {
        let n = rest.len().min(PER_CALL);
        let written = writer.write_vectored(&rest[..n]).await?;
        if written == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        IoSlice::advance_slices(&mut rest, written);
    }
    writer.flush().await?;
    Ok(())
}

/// Incremental frame decoder over a caller-owned buffer.
///
/// It never allocates for a claimed length and never reserves space in the caller's buffer: it only
/// looks at the bytes already there. Payloads are split off the buffer without copying, and
/// `bytes` fields of the decoded `Packet` (the body) share that memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self { max_frame_len: DEFAULT_MAX_FRAME_LEN }
    }

    /// A decoder that rejects payloads longer than `max_frame_len` bytes (values above `i32::MAX`
    /// act as `i32::MAX`, the largest length the prefix can carry).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self { max_frame_len: max_frame_len.min(WIRE_MAX_FRAME_LEN) }
    }

    /// The maximum payload length this decoder accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Validates the length prefix at the start of `buf`, if the header is complete.
    fn payload_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let length = i32::from_be_bytes(*header);
        let Ok(length) = usize::try_from(length) else {
            return Err(FrameError::NegativeLength { length });
        };
        if length > self.max_frame_len {
            return Err(FrameError::TooLarge { length, max: self.max_frame_len });
        }
        Ok(Some(length))
    }

    /// How many more bytes `buf` needs before the next frame is complete (0 if it already is).
    ///
    /// # Errors
    /// [`FrameError::NegativeLength`] or [`FrameError::TooLarge`] if the header is complete and bad.
    pub fn missing(&self, buf: &[u8]) -> Result<usize, FrameError> {
        Ok(match self.payload_len(buf)? {
            None => HEADER_LEN - buf.len(),
            Some(n) => (HEADER_LEN + n).saturating_sub(buf.len()),
        })
    }

    /// Takes the next complete frame's payload off the front of `buf` (without copying), or returns
    /// `Ok(None)` and leaves `buf` untouched when more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::NegativeLength`] or [`FrameError::TooLarge`] for a bad header; `buf` is left
    /// untouched and the stream is unusable.
    pub fn decode_frame(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(length) = self.payload_len(buf)? else {
            return Ok(None);
        };
        if buf.len() - HEADER_LEN < length {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(length).freeze()))
    }

    /// Takes the next complete frame off the front of `buf` and decodes its `Packet`, or returns
    /// `Ok(None)` and leaves `buf` untouched when more bytes are needed.
    ///
    /// # Errors
    /// As [`decode_frame`](Self::decode_frame), plus [`FrameError::Decode`] when the payload is not a
    /// valid `Packet` (the frame is consumed, so decoding can go on with the next one).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, FrameError> {
        match self.decode_frame(buf)? {
            None => Ok(None),
            Some(payload) => Ok(Some(Packet::decode(payload)?)),
        }
    }

    /// Decodes one frame from a complete, finite input (a whole message in a byte slice), e.g. in a
    /// test or a fuzz target. Returns the packet and the number of bytes consumed.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] if `input` ends inside the frame, otherwise as
    /// [`decode`](Self::decode).
    pub fn decode_slice(&self, input: &[u8]) -> Result<(Packet, usize), FrameError> {
        let missing = self.missing(input)?;
        if missing > 0 {
            return Err(FrameError::Truncated { missing });
        }
        // `missing` succeeded with a complete header, so the prefix is valid.
        let length = self.payload_len(input)?.unwrap_or(0);
        let end = HEADER_LEN + length;
        let packet = Packet::decode(&input[HEADER_LEN..end])?;
        Ok((packet, end))
    }
}

/// A cancel-safe packet reader: the bytes read so far live in the reader, not in the future.
///
/// Prefer this over [`read_packet`] in a `tokio::select!` loop (e.g. racing a shutdown signal).
#[derive(Debug)]
pub struct PacketReader<R> {
    reader: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    /// Wraps `reader` with the default maximum frame length.
    pub fn new(reader: R) -> Self {
        Self::with_decoder(reader, FrameDecoder::new())
    }

    /// Wraps `reader` with the given decoder (and so its maximum frame length).
    pub fn with_decoder(reader: R, decoder: FrameDecoder) -> Self {
        Self { reader, buf: BytesMut::new(), decoder }
    }

    /// Reads the next frame's payload. `Ok(None)` means the peer closed the stream cleanly between
    /// frames.
    ///
    /// Buffer memory grows with the bytes that arrive (at most 64 KiB per read), never with the
    /// claimed length; a frame over the maximum is rejected as soon as its header is read.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped before completion, every byte read so far stays in the
    /// reader's buffer and the next call continues where this one stopped.
    ///
    /// # Errors
    /// [`FrameError::Io`] on a read error, [`FrameError::Truncated`] if the stream ends inside a
    /// frame, [`FrameError::NegativeLength`]/[`FrameError::TooLarge`] for a bad header.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(payload) = self.decoder.decode_frame(&mut self.buf)? {
                return Ok(Some(payload));
            }
            let missing = self.decoder.missing(&self.buf)?;
            self.buf.reserve(missing.min(READ_CHUNK));
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated { missing })
                };
            }
        }
    }

    /// Reads and decodes the next packet. `Ok(None)` means the peer closed the stream cleanly
    /// between frames.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`read_frame`](Self::read_frame).
    ///
    /// # Errors
    /// As [`read_frame`](Self::read_frame), plus [`FrameError::Decode`] for a payload that is not a
    /// `Packet` (that frame is consumed; the next call reads the following one).
    pub async fn read_packet(&mut self) -> Result<Option<Packet>, FrameError> {
        match self.read_frame().await? {
            None => Ok(None),
            Some(payload) => Ok(Some(Packet::decode(payload)?)),
        }
    }

    /// The bytes read but not yet returned as a frame.
    pub fn buffer(&self) -> &BytesMut {
        &self.buf
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    /// The wrapped reader, mutably. Reading from it directly desynchronises the frame stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// Unwraps the reader; bytes still buffered are returned with it.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.reader, self.buf)
    }
}

/// Reads one packet from `reader`, accepting payloads of at most `max_frame_len` bytes. `Ok(None)`
/// means the stream ended cleanly before the first header byte.
///
/// Memory grows with the bytes that arrive, never with the claimed length.
///
/// # Cancel safety
/// **Not** cancel safe: bytes of a partly read frame are lost if the future is dropped, and the
/// stream is then out of sync. Use [`PacketReader`] where the read may be cancelled.
///
/// # Errors
/// [`FrameError::Io`] on a read error, [`FrameError::Truncated`] if the stream ends inside a frame,
/// [`FrameError::NegativeLength`]/[`FrameError::TooLarge`] for a bad header,
/// [`FrameError::Decode`] for a payload that is not a `Packet`.
pub async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_len: usize,
) -> Result<Option<Packet>, FrameError> {
    let decoder = FrameDecoder::with_max_frame_len(max_frame_len);
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { missing: HEADER_LEN - got })
            };
        }
        got += n;
    }
    let length = decoder.payload_len(&header)?.unwrap_or(0);
    let mut payload = Vec::with_capacity(length.min(READ_CHUNK));
    (&mut *reader).take(length as u64).read_to_end(&mut payload).await?;
    if payload.len() < length {
        return Err(FrameError::Truncated { missing: length - payload.len() });
    }
    Ok(Some(Packet::decode(Bytes::from(payload))?))
}

/// Writes `packet` as one frame to `writer` and flushes it.
///
/// # Cancel safety
/// **Not** cancel safe: if the future is dropped mid-write, part of the frame may have been written
/// and the stream is then corrupt; close the connection in that case.
///
/// # Errors
/// [`FrameError::TooLarge`] if the packet does not fit a frame (nothing is written), otherwise
/// [`FrameError::Io`].
pub async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: &Packet,
) -> Result<(), FrameError> {
    let frame = frame_bytes(packet)?;
    write_frame(writer, &frame).await
}

/// Writes several packets with one write (one wake-up of the peer for all) and flushes.
///
/// # Cancel safety
/// **Not** cancel safe, as [`write_packet`].
///
/// # Errors
/// [`FrameError::TooLarge`] if a packet does not fit a frame (nothing is written), otherwise
/// [`FrameError::Io`].
pub async fn write_packets<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packets: &[Packet],
) -> Result<(), FrameError> {
    let mut frames = BytesMut::new();
    for p in packets {
        encode_frame(p, &mut frames)?;
    }
    write_frame(writer, &frames).await
}

/// Writes an already-encoded frame (e.g. from [`encode_raw_messages_frame`]) and flushes it.
///
/// # Cancel safety
/// **Not** cancel safe, as [`write_packet`].
///
/// # Errors
/// [`FrameError::Io`].
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), FrameError> {
    writer.write_all(frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::Messages;

    #[test]
    fn raw_messages_matches_prost_without_version() {
        let entries = [Bytes::from_static(b"\x01\x02"), Bytes::from(vec![7u8; 300])];
        let mut raw = BytesMut::new();
        encode_raw_messages_frame(42, &entries, &mut raw).unwrap();
        // The same bytes as a Packet with `type` and `body` only.
        let body = Messages { batch_id: 42, messages: entries.to_vec() };
        let packet = Packet {
            r#type: PacketType::Messages as i32,
            body: body.encode_to_vec().into(),
            ..Packet::default()
        };
        assert_eq!(raw.freeze(), frame_bytes(&packet).unwrap());
    }

    /// The vectored frame is the copied frame, byte for byte, through a writer that takes a
    /// few bytes per call (partial writes in the middle of a slice), for any entry sizes.
    #[tokio::test]
    async fn vectored_raw_messages_equal_the_copied_frame() {
        struct Dribble(Vec<u8>, usize);
        impl AsyncWrite for Dribble {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.1 += 1;
                let n = buf.len().min(1 + self.1 % 7);
                self.0.extend_from_slice(&buf[..n]);
                std::task::Poll::Ready(Ok(n))
            }
            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                // Across slices: up to three of them, partly.
                let this = self.get_mut();
                let mut n = 0;
                for b in bufs.iter().take(3) {
                    this.1 += 1;
                    let take = b.len().min(1 + this.1 % 5);
                    this.0.extend_from_slice(&b[..take]);
                    n += take;
                    if take < b.len() {
                        break;
                    }
                }
                std::task::Poll::Ready(Ok(n))
            }
            fn is_write_vectored(&self) -> bool {
                true
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        let (mut head, mut cuts) = (BytesMut::new(), Vec::new());
        for sizes in [vec![], vec![0], vec![3, 0, 200, 1], vec![130; 700], vec![0; 600]] {
            let entries: Vec<Bytes> =
                sizes.iter().enumerate().map(|(i, n)| Bytes::from(vec![i as u8; *n])).collect();
            let mut copied = BytesMut::new();
            encode_raw_messages_frame(-7, &entries, &mut copied).unwrap();
            let mut w = Dribble(Vec::new(), 0);
            write_raw_messages_frame(&mut w, -7, &entries, &mut head, &mut cuts).await.unwrap();
            assert_eq!(w.0, &copied[..], "{sizes:?}");
        }
    }

    #[test]
    fn raw_messages_writes_batch_id_zero_and_no_version() {
        let mut raw = BytesMut::new();
        encode_raw_messages_frame::<&[u8]>(0, &[], &mut raw).unwrap();
        assert_eq!(&raw[..], &[0, 0, 0, 6, 0x18, 0x07, 0x2a, 0x02, 0x08, 0x00]);
    }

    #[test]
    fn decoder_rejects_bad_headers_without_touching_the_buffer() {
        let d = FrameDecoder::with_max_frame_len(10);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(d.decode(&mut buf), Err(FrameError::NegativeLength { length: -1 })));
        let mut buf = BytesMut::from(&[0, 0, 0, 11][..]);
        assert!(matches!(d.decode(&mut buf), Err(FrameError::TooLarge { length: 11, max: 10 })));
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn decoder_waits_for_complete_frames_and_resyncs_after_garbage() {
        let d = FrameDecoder::new();
        // A garbage payload (field 0 is invalid) followed by a good empty packet.
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 0x00, 0, 0, 0][..]);
        assert!(matches!(d.decode(&mut buf), Err(FrameError::Decode(_))));
        assert!(d.decode(&mut buf).unwrap().is_none());
        buf.put_u8(0);
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Packet::default()));
        assert!(buf.is_empty());
        assert!(matches!(
            d.decode_slice(&[0, 0, 0, 5, 1]),
            Err(FrameError::Truncated { missing: 4 })
        ));
    }

    #[tokio::test]
    async fn packet_reader_is_cancel_safe() {
        use tokio::io::AsyncWriteExt;
        let packet = crate::protocol::packets::ack_error(400, "cancel me");
        let frame = frame_bytes(&packet).unwrap();
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = PacketReader::new(rx);
        tx.write_all(&frame[..7]).await.unwrap();
        // Poll the read once (it consumes the 7 bytes, then waits), then drop it.
        tokio::select! {
            biased;
            r = reader.read_packet() => panic!("frame is incomplete, got {r:?}"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(reader.buffer().len(), 7);
        tx.write_all(&frame[7..]).await.unwrap();
        assert_eq!(reader.read_packet().await.unwrap(), Some(packet));
    }

    #[tokio::test]
    async fn async_helpers_round_trip_and_report_truncation() {
        let packet = crate::protocol::packets::ack_error(402, "x");
        let mut wire = Vec::new();
        write_packet(&mut wire, &packet).await.unwrap();
        write_packet(&mut wire, &packet).await.unwrap();

        let mut r = &wire[..];
        assert_eq!(read_packet(&mut r, 100).await.unwrap(), Some(packet.clone()));
        let mut reader = PacketReader::new(r);
        assert_eq!(reader.read_packet().await.unwrap(), Some(packet.clone()));
        assert_eq!(reader.read_packet().await.unwrap(), None);

        let cut = &wire[..wire.len() / 2 - 2];
        let mut r = cut;
        assert!(matches!(read_packet(&mut r, 100).await, Err(FrameError::Truncated { .. })));
        let mut reader = PacketReader::new(cut);
        assert!(matches!(reader.read_packet().await, Err(FrameError::Truncated { .. })));
        let mut r = &wire[..];
        assert!(matches!(
            read_packet(&mut r, 4).await,
            Err(FrameError::TooLarge { length: 12, max: 4 })
        ));
    }
}
