//! Canal's TCP wire protocol: the generated protobuf types, the length-prefixed frame codec, the
//! packets the server sends, typed body decoding, and the password scramble.
//!
//! Layout:
//! * [`packet`]: `Packet` and its body messages (proto3, Canal's `CanalProtocol`).
//! * [`entry`]: `Entry` and friends (proto2, Canal's `EntryProtocol`/`CanalEntry`): explicit
//!   presence everywhere, no enum value 0, proto2 defaults on read (absent event type = UPDATE).
//! * [`codec`]: 4-byte big-endian length + `Packet` frames, bounded by a maximum frame size; an
//!   incremental decoder, async read/write helpers and the raw-mode MESSAGES encoder.
//! * [`packets`]: the exact packets the server sends (handshake, ACKs, MESSAGES).
//! * [`body`]: a typed view of a packet's body, `client_id` and GET timeout parsing.
//! * [`auth`]: the MySQL-style password scramble and the server's accept/reject decision.

pub mod auth;
pub mod body;
pub mod codec;
pub mod packets;

/// Packet envelope and body messages, generated from `proto/packet.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod packet {
    include!(concat!(env!("OUT_DIR"), "/canal.packet.rs"));
}

/// Entry model (proto2), generated from `proto/entry.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod entry {
    include!(concat!(env!("OUT_DIR"), "/canal.entry.rs"));
}

pub use body::{Body, BodyError, ClientIdError, GetTimeout};
pub use codec::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, FrameError, PacketReader};
pub use entry::Entry;
pub use packet::{Compression, Packet, PacketType};

#[cfg(test)]
mod tests {
    use super::entry::{self, EntryType, EventType, Type};
    use prost::Message;

    /// Absent fields read with Java's proto2 defaults, and a 0 on the wire (which a proto2 Java
    /// client keeps as an unknown value) reads as the default too.
    #[test]
    fn entry_reads_with_proto2_defaults() {
        let e = entry::Entry::default();
        assert_eq!(e.entry_type(), EntryType::Rowdata);
        let h = entry::Header::default();
        assert_eq!(
            (h.version(), h.source_type(), h.event_type()),
            (1, Type::Mysql, EventType::Update)
        );
        let rc = entry::RowChange::default();
        assert_eq!((rc.event_type(), rc.is_ddl()), (EventType::Update, false));
        assert!(!entry::Column::default().is_null());

        // Header.eventType = 0 on the wire.
        let h = entry::Header::decode(&[0x58, 0x00][..]).unwrap();
        assert_eq!(h.event_type, Some(0));
        assert_eq!(h.event_type(), EventType::Update);
    }

    /// Set fields are written even when they equal the default (Java's "set → emitted"); unset
    /// ones are not.
    #[test]
    fn entry_writes_what_is_set() {
        let c = entry::Column {
            is_null: Some(false),
            updated: Some(false),
            name: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(c.encode_to_vec(), [0x1a, 0x00, 0x28, 0x00, 0x30, 0x00]);
        assert!(entry::Header::default().encode_to_vec().is_empty());
    }
}
