//! Typed view of a packet's body, plus the parsing rules Java Canal's server applies to request
//! fields: `client_id` as a Java `short`, and GET's timeout/unit.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use super::packet::{
    Ack, ClientAck, ClientAuth, ClientRollback, Dump, Get, Handshake, HeartBeat, Messages, Packet,
    PacketType, Sub, Unsub,
};

/// A packet's body, decoded according to the packet's type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Body {
    /// HANDSHAKE (server → client).
    Handshake(Handshake),
    /// CLIENTAUTHENTICATION.
    ClientAuth(ClientAuth),
    /// ACK (server → client).
    Ack(Ack),
    /// SUBSCRIPTION.
    Sub(Sub),
    /// UNSUBSCRIPTION.
    Unsub(Unsub),
    /// GET.
    Get(Get),
    /// MESSAGES (server → client).
    Messages(Messages),
    /// CLIENTACK.
    ClientAck(ClientAck),
    /// CLIENTROLLBACK.
    ClientRollback(ClientRollback),
    /// SHUTDOWN: declared by Canal without a body message; any body is ignored.
    Shutdown,
    /// DUMP (unused by Canal).
    Dump(Dump),
    /// HEARTBEAT (unused by Canal).
    HeartBeat(HeartBeat),
}

/// Why a packet's body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// `Packet.type` is not a packet type with a body (0, or a number Canal does not define).
    #[error("unknown packet type {0}")]
    UnknownType(i32),
    /// The body is not a valid message of the type `Packet.type` announces.
    #[error("undecodable {packet_type:?} body")]
    Decode {
        /// The announced type.
        packet_type: PacketType,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
}

impl Body {
    /// Decodes `packet.body` as the message its `type` announces. `bytes` fields share memory
    /// with the packet's body (no copy of MESSAGES entries).
    ///
    /// # Errors
    /// [`BodyError::UnknownType`] for type 0 or an unknown number, [`BodyError::Decode`] for a body
    /// that does not decode.
    pub fn decode(packet: &Packet) -> Result<Self, BodyError> {
        let packet_type = PacketType::try_from(packet.r#type)
            .map_err(|_| BodyError::UnknownType(packet.r#type))?;
        let body = packet.body.clone();
        let wrap = |source| BodyError::Decode { packet_type, source };
        Ok(match packet_type {
            PacketType::Unspecified => return Err(BodyError::UnknownType(packet.r#type)),
            PacketType::Handshake => Self::Handshake(Handshake::decode(body).map_err(wrap)?),
            PacketType::Clientauthentication => {
                Self::ClientAuth(ClientAuth::decode(body).map_err(wrap)?)
            }
            PacketType::Ack => Self::Ack(Ack::decode(body).map_err(wrap)?),
            PacketType::Subscription => Self::Sub(Sub::decode(body).map_err(wrap)?),
            PacketType::Unsubscription => Self::Unsub(Unsub::decode(body).map_err(wrap)?),
            PacketType::Get => Self::Get(Get::decode(body).map_err(wrap)?),
            PacketType::Messages => Self::Messages(Messages::decode(body).map_err(wrap)?),
            PacketType::Clientack => Self::ClientAck(ClientAck::decode(body).map_err(wrap)?),
            PacketType::Clientrollback => {
                Self::ClientRollback(ClientRollback::decode(body).map_err(wrap)?)
            }
            PacketType::Shutdown => Self::Shutdown,
            PacketType::Dump => Self::Dump(Dump::decode(body).map_err(wrap)?),
            PacketType::Heartbeat => Self::HeartBeat(HeartBeat::decode(body).map_err(wrap)?),
        })
    }

    /// The packet type that carries this body.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Handshake(_) => PacketType::Handshake,
            Self::ClientAuth(_) => PacketType::Clientauthentication,
            Self::Ack(_) => PacketType::Ack,
            Self::Sub(_) => PacketType::Subscription,
            Self::Unsub(_) => PacketType::Unsubscription,
            Self::Get(_) => PacketType::Get,
            Self::Messages(_) => PacketType::Messages,
            Self::ClientAck(_) => PacketType::Clientack,
            Self::ClientRollback(_) => PacketType::Clientrollback,
            Self::Shutdown => PacketType::Shutdown,
            Self::Dump(_) => PacketType::Dump,
            Self::HeartBeat(_) => PacketType::Heartbeat,
        }
    }

    /// The encoded body message (empty for [`Body::Shutdown`]).
    pub fn encode_body(&self) -> Bytes {
        let v = match self {
            Self::Handshake(m) => m.encode_to_vec(),
            Self::ClientAuth(m) => m.encode_to_vec(),
            Self::Ack(m) => m.encode_to_vec(),
            Self::Sub(m) => m.encode_to_vec(),
            Self::Unsub(m) => m.encode_to_vec(),
            Self::Get(m) => m.encode_to_vec(),
            Self::Messages(m) => m.encode_to_vec(),
            Self::ClientAck(m) => m.encode_to_vec(),
            Self::ClientRollback(m) => m.encode_to_vec(),
            Self::Shutdown => Vec::new(),
            Self::Dump(m) => m.encode_to_vec(),
            Self::HeartBeat(m) => m.encode_to_vec(),
        };
        v.into()
    }

    /// The packet a client sends for this body: type and body only, no `version`, `magic_number`
    /// or `compression` (as the Java client and canal-python do). Server replies are built by
    /// [`super::packets`] instead, which set `version = 1`.
    pub fn to_packet(&self) -> Packet {
        Packet {
            magic_number: None,
            version: None,
            r#type: self.packet_type() as i32,
            compression: None,
            body: self.encode_body(),
        }
    }
}

impl Packet {
    /// Decodes this packet's body by its type; see [`Body::decode`].
    ///
    /// # Errors
    /// As [`Body::decode`].
    pub fn decode_body(&self) -> Result<Body, BodyError> {
        Body::decode(self)
    }
}

/// A `client_id` that Java's `Short.parseShort` would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client id {value:?} is not a 16-bit signed decimal number")]
pub struct ClientIdError {
    /// The rejected text.
    pub value: String,
}

/// Parses a request's `client_id` like Java's `Short.parseShort`: an optional `+`/`-` and ASCII
/// decimal digits (leading zeros allowed), in -32768..=32767. Unlike Java, non-ASCII Unicode
/// digits are rejected; Canal clients only ever send ASCII ("1001").
///
/// # Errors
/// [`ClientIdError`] for empty, non-numeric (including surrounding whitespace) or out-of-range text.
pub fn parse_client_id(value: &str) -> Result<i16, ClientIdError> {
    value.parse::<i16>().map_err(|_| ClientIdError { value: value.to_owned() })
}

/// What a GET asks the server to do when no batch is ready yet (docs/protocol.md#requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetTimeout {
    /// `timeout == -1`: return at once, possibly with an empty batch.
    NonBlocking,
    /// `timeout <= 0` other than -1, or unset: block until the batch condition is met.
    Blocking,
    /// `timeout > 0`: wait up to this long, then return whatever is available.
    Wait(Duration),
}

impl GetTimeout {
    /// Interprets a GET's `timeout` and `unit` as Java Canal does. Unset fields read as 0, as a
    /// proto3 getter does (so an unset timeout blocks, and an unset unit means nanoseconds).
    pub fn from_get(get: &Get) -> Self {
        Self::from_parts(get.timeout.unwrap_or(0), get.unit.unwrap_or(0))
    }

    /// Interprets a raw timeout and unit; see [`GetTimeout::from_get`] and [`unit_duration`].
    pub fn from_parts(timeout: i64, unit: i32) -> Self {
        match timeout {
            -1 => Self::NonBlocking,
            t if t <= 0 => Self::Blocking,
            t => Self::Wait(unit_duration(t.unsigned_abs(), unit)),
        }
    }
}

/// `amount` of Java `TimeUnit` number `unit` (0 ns, 1 µs, 2 ms, 3 s, 4 min, 5 h, 6 days; any other
/// value means milliseconds), saturating at [`Duration::MAX`].
pub fn unit_duration(amount: u64, unit: i32) -> Duration {
    let secs = |factor: u64| amount.checked_mul(factor).map_or(Duration::MAX, Duration::from_secs);
    match unit {
        0 => Duration::from_nanos(amount),
        1 => Duration::from_micros(amount),
        3 => Duration::from_secs(amount),
        4 => secs(60),
        5 => secs(3600),
        6 => secs(86_400),
        _ => Duration::from_millis(amount),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_like_parse_short() {
        assert_eq!(parse_client_id("1001"), Ok(1001));
        assert_eq!(parse_client_id("+7"), Ok(7));
        assert_eq!(parse_client_id("-32768"), Ok(-32768));
        assert_eq!(parse_client_id("0032767"), Ok(32767));
        for bad in ["", "+", "-", "32768", "-32769", " 1", "1 ", "1a", "0x10", "1.0"] {
            assert!(parse_client_id(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn get_timeouts() {
        let get = |timeout, unit| Get { timeout, unit, ..Get::default() };
        assert_eq!(GetTimeout::from_get(&get(Some(-1), Some(2))), GetTimeout::NonBlocking);
        assert_eq!(GetTimeout::from_get(&get(None, None)), GetTimeout::Blocking);
        assert_eq!(GetTimeout::from_get(&get(Some(0), Some(3))), GetTimeout::Blocking);
        assert_eq!(GetTimeout::from_get(&get(Some(-5), Some(3))), GetTimeout::Blocking);
        assert_eq!(
            GetTimeout::from_get(&get(Some(5), None)),
            GetTimeout::Wait(Duration::from_nanos(5))
        );
        let wait = |unit| GetTimeout::from_parts(2, unit);
        assert_eq!(wait(1), GetTimeout::Wait(Duration::from_micros(2)));
        assert_eq!(wait(2), GetTimeout::Wait(Duration::from_millis(2)));
        assert_eq!(wait(3), GetTimeout::Wait(Duration::from_secs(2)));
        assert_eq!(wait(4), GetTimeout::Wait(Duration::from_secs(120)));
        assert_eq!(wait(5), GetTimeout::Wait(Duration::from_secs(7200)));
        assert_eq!(wait(6), GetTimeout::Wait(Duration::from_secs(172_800)));
        assert_eq!(wait(-1), GetTimeout::Wait(Duration::from_millis(2)));
        assert_eq!(wait(7), GetTimeout::Wait(Duration::from_millis(2)));
        assert_eq!(GetTimeout::from_parts(i64::MAX, 6), GetTimeout::Wait(Duration::MAX));
    }

    #[test]
    fn body_errors_are_typed() {
        let p = |t: i32, body: &'static [u8]| Packet {
            r#type: t,
            body: Bytes::from_static(body),
            ..Packet::default()
        };
        assert!(matches!(Body::decode(&p(0, b"")), Err(BodyError::UnknownType(0))));
        assert!(matches!(Body::decode(&p(13, b"")), Err(BodyError::UnknownType(13))));
        assert!(matches!(
            Body::decode(&p(6, b"\x0a\x05ab")),
            Err(BodyError::Decode { packet_type: PacketType::Get, .. })
        ));
        assert_eq!(Body::decode(&p(9, b"\xff")).unwrap(), Body::Shutdown);
        assert_eq!(Body::decode(&p(3, b"")).unwrap(), Body::Ack(Ack::default()));
    }
}
