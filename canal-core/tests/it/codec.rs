//! Property tests of the frame codec: hostile input never panics and never makes the decoder
//! allocate for a claimed length; truncated frames wait or fail typed; packets round-trip.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use canal_core::protocol::codec::{
    FrameDecoder, FrameError, HEADER_LEN, PacketReader, encode_frame, encode_raw_messages_frame,
    frame_bytes,
};
use canal_core::protocol::packet::{Messages, Packet, PacketType};
use proptest::prelude::*;
use prost::Message;
use tokio::io::{AsyncRead, ReadBuf};

/// An in-memory stream that hands out at most `chunk` bytes per read.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len() - self.pos).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    (
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<i32>()),
        prop_oneof![0i32..=12, any::<i32>()],
        proptest::option::of(0i32..=4),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(magic_number, version, r#type, compression, body)| Packet {
            magic_number,
            version,
            r#type,
            compression,
            body: body.into(),
        })
}

/// Feeds `input` to `decoder` in `chunk`-sized pieces; returns the packets and the first error.
/// Checks on the way that the decoder never reserves buffer space and never returns a payload over
/// its maximum.
fn feed(decoder: &FrameDecoder, input: &[u8], chunk: usize) -> (Vec<Packet>, Option<FrameError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let capacity = buf.capacity();
            match decoder.decode_frame(&mut buf) {
                Ok(Some(payload)) => {
                    assert!(payload.len() <= decoder.max_frame_len());
                    match Packet::decode(payload) {
                        Ok(p) => out.push(p),
                        Err(err) => return (out, Some(err.into())),
                    }
                }
                Ok(None) => {
                    assert_eq!(buf.capacity(), capacity, "decoder must not reserve");
                    break;
                }
                Err(err) => return (out, Some(err)),
            }
        }
    }
    (out, None)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(
        input in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..600,
        chunk in 1usize..64,
    ) {
        let decoder = FrameDecoder::with_max_frame_len(max);
        let (_packets, err) = feed(&decoder, &input, chunk);
        if let Some(err) = err {
            prop_assert!(matches!(
                err,
                FrameError::NegativeLength { .. } | FrameError::TooLarge { .. } | FrameError::Decode(_)
            ), "unexpected error kind");
        }
        let _ = decoder.decode_slice(&input);

        // The async reader: its buffer follows the bytes that arrive, not claimed lengths.
        let limit = 2 * (input.len() + HEADER_LEN) + 2 * 64 * 1024;
        runtime().block_on(async {
            let stream = Chunked { data: input.clone(), pos: 0, chunk };
            let mut reader = PacketReader::with_decoder(stream, decoder);
            loop {
                let r = reader.read_frame().await;
                assert!(reader.buffer().capacity() <= limit);
                match r {
                    Ok(Some(payload)) => assert!(payload.len() <= max),
                    Ok(None) | Err(FrameError::Truncated { .. }) => break,
                    Err(FrameError::NegativeLength { .. } | FrameError::TooLarge { .. }) => break,
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
        });
    }

    #[test]
    fn huge_claimed_lengths_allocate_nothing(length in any::<i32>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut input = length.to_be_bytes().to_vec();
        input.extend_from_slice(&tail);
        let decoder = FrameDecoder::new();
        let mut buf = BytesMut::from(&input[..]);
        let capacity = buf.capacity();
        let r = decoder.decode(&mut buf);
        prop_assert_eq!(buf.capacity(), capacity);
        if length < 0 {
            prop_assert!(
                matches!(r, Err(FrameError::NegativeLength { length: l }) if l == length),
                "negative length must be rejected"
            );
        } else if length as usize > decoder.max_frame_len() {
            prop_assert!(matches!(r, Err(FrameError::TooLarge { .. })), "over max must be rejected");
        }
        runtime().block_on(async {
            let mut reader = PacketReader::new(&input[..]);
            let _ = reader.read_packet().await;
            // Never more than one read chunk for a claim the stream does not back.
            assert!(reader.buffer().capacity() <= 2 * (input.len() + 64 * 1024));
        });
    }

    #[test]
    fn truncated_frames_wait_or_fail_typed(packet in arb_packet(), cut_seed in any::<prop::sample::Index>()) {
        let frame = frame_bytes(&packet).unwrap();
        let cut = cut_seed.index(frame.len());
        let decoder = FrameDecoder::new();
        let mut buf = BytesMut::from(&frame[..cut]);
        prop_assert!(decoder.decode(&mut buf).unwrap().is_none());
        prop_assert_eq!(buf.len(), cut);
        // Before the header is complete only the header's missing bytes are known.
        let missing_want = if cut < HEADER_LEN { HEADER_LEN - cut } else { frame.len() - cut };
        prop_assert!(
            matches!(decoder.decode_slice(&frame[..cut]), Err(FrameError::Truncated { missing }) if missing == missing_want),
            "decode_slice must report the missing bytes"
        );
        // A payload cut short but with a consistent length prefix: a packet or a decode error.
        if cut > HEADER_LEN {
            let mut relabelled = BytesMut::new();
            relabelled.extend_from_slice(&((cut - HEADER_LEN) as u32).to_be_bytes());
            relabelled.extend_from_slice(&frame[HEADER_LEN..cut]);
            match decoder.decode(&mut relabelled) {
                Ok(Some(_)) | Err(FrameError::Decode(_)) => {}
                other => prop_assert!(false, "unexpected {other:?}"),
            }
            prop_assert!(relabelled.is_empty());
        }
        runtime().block_on(async {
            let mut reader = PacketReader::new(&frame[..cut]);
            let r = reader.read_packet().await;
            if cut == 0 {
                assert!(matches!(r, Ok(None)));
            } else {
                assert!(matches!(r, Err(FrameError::Truncated { .. })), "{r:?}");
            }
            let mut r2 = &frame[..cut];
            let r = canal_core::protocol::codec::read_packet(&mut r2, 1 << 20).await;
            assert!(if cut == 0 { matches!(r, Ok(None)) } else { matches!(r, Err(FrameError::Truncated { .. })) });
        });
    }

    #[test]
    fn packets_round_trip(packets in proptest::collection::vec(arb_packet(), 1..6), chunk in 1usize..80) {
        let mut wire = BytesMut::new();
        for p in &packets {
            encode_frame(p, &mut wire).unwrap();
        }
        let (decoded, err) = feed(&FrameDecoder::new(), &wire, chunk);
        prop_assert!(err.is_none());
        prop_assert_eq!(&decoded, &packets);

        let from_reader = runtime().block_on(async {
            let mut reader = PacketReader::new(Chunked { data: wire.to_vec(), pos: 0, chunk });
            let mut out = Vec::new();
            while let Some(p) = reader.read_packet().await.unwrap() {
                out.push(p);
            }
            out
        });
        prop_assert_eq!(&from_reader, &packets);
    }

    #[test]
    fn raw_messages_decode_as_versionless_packets(
        batch_id in any::<i64>(),
        entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..5),
    ) {
        let mut wire = BytesMut::new();
        encode_raw_messages_frame(batch_id, &entries, &mut wire).unwrap();
        let packet = FrameDecoder::new().decode(&mut wire).unwrap().unwrap();
        prop_assert!(wire.is_empty());
        prop_assert_eq!(packet.version, None);
        prop_assert_eq!(packet.compression, None);
        prop_assert_eq!(packet.r#type, PacketType::Messages as i32);
        let body = Messages::decode(packet.body).unwrap();
        prop_assert_eq!(body.batch_id, batch_id);
        let want: Vec<Bytes> = entries.into_iter().map(Bytes::from).collect();
        prop_assert_eq!(body.messages, want);
    }
}
