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
