//! The client's error type, split into transient errors (reconnect and carry on) and definite ones
//! (tell the caller).

use std::time::Duration;

use canal_core::protocol::{BodyError, FrameError};

/// An error of a connector operation.
///
/// [`ClientError::is_transient`] says whether reconnecting (possibly to another server) can help;
/// [`ClusterConnector`](crate::ClusterConnector) does that on its own for transient errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration cannot work (bad address, client id, batch size...).
    #[error("invalid client config '{key}': {reason}")]
    Config {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting to the server failed.
    #[error("cannot connect to canal server '{address}'")]
    Connect {
        /// The address tried.
        address: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The operation needs a connection and there is none: call `connect` first.
    #[error("not connected")]
    NotConnected,
    /// The connection is out of step with the server (an earlier operation was cancelled while
    /// its reply was in flight, or a reply was ambiguous) and was closed: reconnect.
    #[error("connection is broken ({reason}); reconnect")]
    Broken {
        /// What broke it.
        reason: &'static str,
    },
    /// The server closed the connection.
    #[error("canal server closed the connection")]
    Closed,
    /// Reading or writing the socket, or decoding a frame, failed.
    #[error("canal connection failed")]
    Frame(#[from] FrameError),
    /// No reply within the read timeout.
    #[error("no reply from the canal server within {0:?}")]
    Timeout(Duration),
    /// The server's first packet is not a version-1 HANDSHAKE.
    #[error("bad handshake from canal server: {0}")]
    Handshake(String),
    /// The server rejected the user name or password.
    #[error("authentication failed ({code}): {message}")]
    Auth {
        /// The server's error code (400).
        code: i32,
        /// The server's message, e.g. `auth failed for user:canal`.
        message: String,
    },
    /// The server answered the request with an error ACK.
    #[error("canal server error {code}: {message}")]
    Server {
        /// 400 generic, 401 missing destination/client id, 402 ack of batch 0.
        code: i32,
        /// The server's message (a Java server includes its stack trace).
        message: String,
    },
    /// An error ACK arrived for an earlier CLIENTACK or CLIENTROLLBACK (those are not answered
    /// on success, so a failure shows up later). The batches of this client were not acked as
    /// asked; un-acked data is delivered again after a rollback or reconnect.
    #[error("an earlier ack or rollback failed on the server ({code}): {message}")]
    AckFailed {
        /// The server's error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The server sent a packet that is not a valid reply to the request.
    #[error("unexpected {got} packet in reply to {request}")]
    UnexpectedPacket {
        /// The request sent.
        request: &'static str,
        /// What came back (packet type name or number).
        got: String,
    },
    /// A packet body did not decode.
    #[error("undecodable packet body")]
    Body(#[from] BodyError),
    /// A MESSAGES packet uses a compression the client does not implement (Java accepts only
    /// NONE and the proto2 placeholder 0).
    #[error("MESSAGES packet uses unsupported compression {0}")]
    Compression(i32),
    /// An entry of a batch is not a valid `Entry`. The batch was read completely, so the
    /// connection is still usable: ack or roll back `batch_id`.
    #[error("entry {index} of batch {batch_id} does not decode")]
    BadEntry {
        /// The batch the entry came in.
        batch_id: i64,
        /// The entry's index in the batch.
        index: usize,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// An entry's `storeValue` is not a valid RowChange.
    #[error("entry at {file}:{offset} has an undecodable RowChange")]
    BadRowChange {
        /// Binlog file of the entry.
        file: String,
        /// Offset of the entry.
        offset: i64,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// The batch was fetched on an earlier connection that is gone; the reconnect rolled it back
    /// and its entries will be delivered again. Nothing to do but carry on.
    #[error("batch {batch_id} was rolled back by a reconnect and will be delivered again")]
    BatchRolledBack {
        /// The batch.
        batch_id: i64,
    },
    /// No active canal server is known for the destination (no running node, no cluster member,
    /// empty address list).
    #[error("no alive canal server for destination '{destination}'")]
    NoServer {
        /// The destination.
        destination: String,
    },
    /// The coordinator failed.
    #[error("coordinator error")]
    Coord(#[from] canal_coord::CoordError),
    /// The cluster connector's total deadline passed while it kept failing; `last` is the last
    /// failure.
    #[error("gave up after {elapsed:?}: {last}")]
    DeadlineExceeded {
        /// Time spent retrying.
        elapsed: Duration,
        /// The last failure.
        last: Box<ClientError>,
    },
    /// A record read from a broker is not a Canal MQ message (neither FlatMessage JSON nor a
    /// protobuf MESSAGES packet, or malformed).
    #[error("record {topic}/{partition}@{offset} is not a Canal message")]
    BadRecord {
        /// Topic (Kafka) or queue.
        topic: String,
        /// Partition (0 where the broker has none).
        partition: i32,
        /// Offset in the partition.
        offset: i64,
        /// What is wrong with it.
        #[source]
        source: crate::mq::RecordError,
    },
    /// The batch id is not one of the connector's outstanding batches (already acked, rolled
    /// back, or never taken).
    #[error("batch {batch_id} is not outstanding")]
    NoSuchBatch {
        /// The batch.
        batch_id: i64,
    },
    /// The Kafka client failed (configuration, subscription, commit, seek, consume).
    #[cfg(feature = "kafka")]
    #[error("Kafka client failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The connector was shut down.
    #[error("connector is stopped")]
    Stopped,
}

impl ClientError {
    /// Whether reconnecting (to the same or another server) may help.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::NotConnected
            | ClientError::Broken { .. }
            | ClientError::Closed
            | ClientError::Frame(_)
            | ClientError::Timeout(_)
            | ClientError::Handshake(_)
            | ClientError::UnexpectedPacket { .. }
            | ClientError::Body(_)
            | ClientError::NoServer { .. } => true,
            // 400 is what a standby or a server without the destination answers; 401/402 are
            // the caller's mistakes.
            ClientError::Server { code, .. } => *code == 400,
            ClientError::Coord(e) => e.is_transient(),
            _ => false,
        }
    }
}
