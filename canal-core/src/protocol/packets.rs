//! The packets Canal's server sends, built byte for byte as Java Canal builds them (docs/protocol.md#packets, #byte-examples).
//!
//! Server packets carry `version = 1` (HANDSHAKE, ACK, non-raw MESSAGES); the only exception, the
//! raw-mode MESSAGES frame, is laid out by [`super::codec::raw_messages_frame_head`]: the server
//! writes it from the stored entries with [`super::codec::write_raw_messages_frame`], tests build
//! it whole with [`super::codec::encode_raw_messages_frame`].

use bytes::Bytes;
use prost::Message;

use super::packet::{Ack, Handshake, Messages, Packet, PacketType};

/// The `Packet.version` the server writes.
pub const SERVER_VERSION: i32 = 1;

/// Error code for a generic failure: auth failure, unsupported packet type, any exception.
pub const ERROR_GENERIC: i32 = 400;
/// Error code when a request's destination or client id is empty.
pub const ERROR_MISSING_IDENTITY: i32 = 401;
/// Error code for a CLIENTACK with batch id 0.
pub const ERROR_ACK_BATCH_ZERO: i32 = 402;

/// The batch id of an empty MESSAGES reply.
pub const EMPTY_BATCH_ID: i64 = -1;

fn server_packet(packet_type: PacketType, body: Bytes) -> Packet {
    Packet {
        magic_number: None,
        version: Some(SERVER_VERSION),
        r#type: packet_type as i32,
        compression: None,
        body,
    }
}

/// The HANDSHAKE the server sends on accept: `seeds` only (Java sends 8 random bytes, see
/// [`super::auth::random_seed`]); encoding and compressions are left unset.
pub fn handshake(seeds: &[u8]) -> Packet {
    let body = Handshake {
        communication_encoding: None,
        seeds: seeds.to_vec(),
        supported_compressions: 0,
    };
    server_packet(PacketType::Handshake, body.encode_to_vec().into())
}

/// The success ACK: an empty body, so the frame is `00 00 00 04 10 01 18 03`.
pub fn ack_ok() -> Packet {
    server_packet(PacketType::Ack, Bytes::new())
}

/// An error ACK with `error_code` (written even when 0) and `message`.
pub fn ack_error(error_code: i32, message: impl Into<String>) -> Packet {
    let body = Ack { error_code: Some(error_code), error_message: message.into() };
    server_packet(PacketType::Ack, body.encode_to_vec().into())
}

/// The error ACK for a failed authentication: `400 "auth failed for user:<username>"`.
pub fn auth_failed(username: &str) -> Packet {
    ack_error(ERROR_GENERIC, format!("auth failed for user:{username}"))
}

/// The error ACK for a packet type the session does not handle:
/// `400 "packet type: <NAME> is NOT supported!"`, with Java's enum name (`UNRECOGNIZED` for a
/// number that is not a known type).
pub fn unsupported_type(packet_type: i32) -> Packet {
    let name = PacketType::try_from(packet_type).map(|t| t.as_str_name()).unwrap_or("UNRECOGNIZED");
    ack_error(ERROR_GENERIC, format!("packet type: {name} is NOT supported!"))
}

/// A non-raw MESSAGES packet (`version = 1`); `entries` are encoded `Entry` messages.
pub fn messages(batch_id: i64, entries: Vec<Bytes>) -> Packet {
    let body = Messages { batch_id, messages: entries };
    server_packet(PacketType::Messages, body.encode_to_vec().into())
}

/// The reply to a GET that found nothing: `version = 1`, `batch_id = -1`, no entries.
pub fn empty_messages() -> Packet {
    messages(EMPTY_BATCH_ID, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::{encode_raw_messages_frame, frame_bytes};
    use bytes::BytesMut;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    }

    // The byte examples of docs/protocol.md#byte-examples.
    #[test]
    fn handshake_bytes() {
        let seed = [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7];
        assert_eq!(
            hex(&frame_bytes(&handshake(&seed)).unwrap()),
            "00 00 00 10 10 01 18 01 2a 0a 12 08 a0 a1 a2 a3 a4 a5 a6 a7"
        );
    }

    #[test]
    fn ack_bytes() {
        assert_eq!(hex(&frame_bytes(&ack_ok()).unwrap()), "00 00 00 04 10 01 18 03");
        assert_eq!(
            hex(&frame_bytes(&ack_error(402, "x")).unwrap()),
            "00 00 00 0c 10 01 18 03 2a 06 08 92 03 12 01 78"
        );
        // An explicit zero error code is written.
        assert_eq!(
            hex(&frame_bytes(&ack_error(0, "")).unwrap()),
            "00 00 00 08 10 01 18 03 2a 02 08 00"
        );
    }

    #[test]
    fn empty_messages_bytes() {
        assert_eq!(
            hex(&frame_bytes(&empty_messages()).unwrap()),
            "00 00 00 11 10 01 18 07 2a 0b 08 ff ff ff ff ff ff ff ff ff 01"
        );
    }

    #[test]
    fn raw_messages_bytes() {
        let mut raw = BytesMut::new();
        encode_raw_messages_frame(5, &[&b"\x10\x02"[..], &b""[..]], &mut raw).unwrap();
        assert_eq!(hex(&raw), "00 00 00 0c 18 07 2a 08 08 05 12 02 10 02 12 00");
    }

    #[test]
    fn java_client_get_bytes() {
        use crate::protocol::body::Body;
        use crate::protocol::packet::Get;
        let get = Body::Get(Get {
            destination: "example".into(),
            client_id: "1001".into(),
            fetch_size: 1000,
            timeout: Some(-1),
            unit: Some(2),
            auto_ack: Some(false),
            linger_micros: None,
        });
        assert_eq!(
            hex(&frame_bytes(&get.to_packet()).unwrap()),
            "00 00 00 25 18 06 2a 21 0a 07 65 78 61 6d 70 6c 65 12 04 31 30 30 31 18 e8 07 \
             20 ff ff ff ff ff ff ff ff ff 01 28 02 30 00"
        );
    }

    #[test]
    fn error_texts() {
        let ack = |p: Packet| Ack::decode(p.body).unwrap();
        assert_eq!(ack(auth_failed("bob")).error_message, "auth failed for user:bob");
        assert_eq!(
            ack(unsupported_type(11)).error_message,
            "packet type: HEARTBEAT is NOT supported!"
        );
        assert_eq!(
            ack(unsupported_type(99)).error_message,
            "packet type: UNRECOGNIZED is NOT supported!"
        );
    }
}
