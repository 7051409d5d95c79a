//! Errors of the replica connection, split into *transient* (reconnect and resume) and *definite*
//! (stop and tell the operator).

use std::io;
use std::time::Duration;

/// Server error codes that mean "the connection went away, try again": the server is shutting
/// down or restarting, the connection or query was killed, too many connections, or a network
/// failure the server noticed first.
const TRANSIENT_SERVER_CODES: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN
    1077, // ER_NORMAL_SHUTDOWN
    1078, // ER_GOT_SIGNAL
    1079, // ER_SHUTDOWN_COMPLETE
    1152, // ER_ABORTING_CONNECTION
    1153, // ER_NET_PACKET_TOO_LARGE (net buffer hiccup on the server; Canal retries)
    1158, // ER_NET_READ_ERROR
    1159, // ER_NET_READ_INTERRUPTED
    1160, // ER_NET_ERROR_ON_WRITE
    1161, // ER_NET_WRITE_INTERRUPTED
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
    1317, // ER_QUERY_INTERRUPTED
    1927, // ER_CONNECTION_KILLED (MariaDB)
    2006, // CR_SERVER_GONE_ERROR (relayed)
    2013, // CR_SERVER_LOST (relayed)
    3169, // ER_SESSION_WAS_KILLED (MySQL 8)
];

/// Replication error 1236 (`ER_MASTER_FATAL_ERROR_READING_BINLOG`): the requested binlog file,
/// position or GTID is not (or no longer) on the server.
pub const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

/// Everything that can go wrong on the replica (dump) connection and its meta connection.
///
/// Use [`ReplicaError::is_transient`] to decide between reconnecting with backoff (resuming from
/// the last transaction boundary) and stopping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// A socket operation failed or the peer closed the connection (transient).
    #[error("i/o error during {op}: {source}")]
    Io {
        /// What was being done (`"connect"`, `"read binlog event"`, ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server sent nothing for longer than allowed (transient). On the binlog socket the limit
    /// is the heartbeat period plus a margin, so a silent server is a dead server.
    #[error("timed out after {after:?} during {op}")]
    Timeout {
        /// What was being waited for.
        op: &'static str,
        /// The limit that expired.
        after: Duration,
    },
    /// The server answered with an error packet. Transient or definite depending on `code`
    /// (shutdown, killed connection, too many connections are transient).
    #[error("server error {code} ({state}) during {op}: {message}")]
    Server {
        /// What was being done.
        op: &'static str,
        /// MySQL error number.
        code: u16,
        /// SQLSTATE, empty if the server sent none.
        state: String,
        /// The server's message.
        message: String,
    },
    /// The server rejected the credentials, or the account cannot log in (definite).
    #[error("authentication of user '{user}' failed: {message}")]
    Auth {
        /// The user name that was tried.
        user: String,
        /// Server error code (0 if the failure was detected locally).
        code: u16,
        /// The server's or our explanation.
        message: String,
    },
    /// The account uses an authentication method this client cannot perform (definite).
    #[error("authentication plugin '{plugin}' is not supported: {reason}")]
    AuthUnsupported {
        /// Plugin name the server asked for.
        plugin: String,
        /// Why it cannot be done (e.g. full caching_sha2 auth needs TLS or an RSA key exchange).
        reason: String,
    },
    /// The requested start is not on the server any more (purged) or never was (definite).
    /// Raised from replication error 1236 on the dump and from the `SHOW BINARY LOGS` check.
    #[error(
        "binlog position {requested} is not available on the server (oldest available: {}): {detail}",
        oldest_available.as_deref().unwrap_or("unknown")
    )]
    Purged {
        /// The start that was asked for (`file:pos`, a GTID set, or a MariaDB GTID list).
        requested: String,
        /// The oldest binlog file still present, when known.
        oldest_available: Option<String>,
        /// The server's message or our explanation.
        detail: String,
    },
    /// The server refused to continue the dump for another reason than a missing start (error
    /// 1236 about e.g. a corrupt or truncated binlog, or an oversized event) (definite).
    #[error("binlog dump from {requested} rejected by the server (error {code}): {message}")]
    DumpRejected {
        /// The start that was asked for.
        requested: String,
        /// Server error code (1236).
        code: u16,
        /// The server's message.
        message: String,
    },
    /// A server setting makes row-based CDC impossible, e.g. `binlog_format=STATEMENT` or
    /// `binlog_row_image=MINIMAL` (definite).
    #[error("server variable '{variable}' is '{value}', expected one of {allowed:?}")]
    BinlogSettings {
        /// The variable name.
        variable: String,
        /// Its current value.
        value: String,
        /// Values that would be accepted.
        allowed: Vec<String>,
    },
    /// The server lacks something this client needs, e.g. binary logging is off or the protocol
    /// is too old (definite).
    #[error("unsupported server: {reason}")]
    UnsupportedServer {
        /// What is missing.
        reason: String,
    },
    /// The server sent bytes that do not follow the protocol (definite: retrying would read the
    /// same bytes again).
    #[error("protocol violation: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// A packet announced a size above the configured limit (definite).
    #[error("packet of {len} bytes exceeds the limit of {max} bytes")]
    PacketTooLarge {
        /// Announced length so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A timestamp search found no transaction boundary before the target in any binlog file
    /// (definite).
    #[error("no transaction boundary before timestamp {target_ms} ms in binlog files {searched:?}")]
    PositionNotFound {
        /// The target time in milliseconds since the epoch.
        target_ms: i64,
        /// Files that were scanned, newest first.
        searched: Vec<String>,
    },
    /// Configuration or argument error, e.g. an unparsable URL or GTID set (definite).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// An error of the meta connection (mysql_async), classified by its kind.
    #[error("meta connection error during {op}: {source}")]
    Meta {
        /// What was being done.
        op: &'static str,
        /// The driver error.
        #[source]
        source: mysql_async::Error,
    },
}

impl ReplicaError {
    /// `true` when reconnecting (with backoff) and resuming from the last transaction boundary may
    /// succeed: connection drops, timeouts, server restarts, killed connections. `false` for
    /// errors that need an operator: bad credentials, purged binlog, wrong binlog format,
    /// unsupported server, protocol violations, bad input.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicaError::Io { .. } | ReplicaError::Timeout { .. } => true,
            ReplicaError::Server { code, .. } => is_transient_code(*code),
            ReplicaError::Auth { code, .. } => is_transient_code(*code),
            ReplicaError::Meta { source, .. } => match source {
                mysql_async::Error::Io(_) => true,
                mysql_async::Error::Server(e) => is_transient_code(e.code),
                mysql_async::Error::Driver(d) => matches!(
                    d,
                    mysql_async::DriverError::ConnectionClosed
                        | mysql_async::DriverError::PoolDisconnected
                ),
                _ => false,
            },
            ReplicaError::AuthUnsupported { .. }
            | ReplicaError::Purged { .. }
            | ReplicaError::DumpRejected { .. }
            | ReplicaError::BinlogSettings { .. }
            | ReplicaError::UnsupportedServer { .. }
            | ReplicaError::Protocol { .. }
            | ReplicaError::PacketTooLarge { .. }
            | ReplicaError::PositionNotFound { .. }
            | ReplicaError::InvalidInput { .. } => false,
        }
    }

    /// The MySQL error number when the server reported one.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            ReplicaError::Server { code, .. } | ReplicaError::DumpRejected { code, .. } => {
                Some(*code)
            }
            ReplicaError::Auth { code, .. } if *code != 0 => Some(*code),
            ReplicaError::Meta { source: mysql_async::Error::Server(e), .. } => Some(e.code),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        ReplicaError::Io { op, source }
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        ReplicaError::Protocol { reason: reason.into() }
    }

    pub(crate) fn meta(op: &'static str) -> impl FnOnce(mysql_async::Error) -> Self {
        move |source| ReplicaError::Meta { op, source }
    }
}

fn is_transient_code(code: u16) -> bool {
    TRANSIENT_SERVER_CODES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let io = ReplicaError::io("read", io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(io.is_transient());
        let killed = ReplicaError::Server {
            op: "read binlog event",
            code: 1927,
            state: "70100".into(),
            message: "Connection was killed".into(),
        };
        assert!(killed.is_transient());
        let purged = ReplicaError::Purged {
            requested: "binlog.000001:4".into(),
            oldest_available: Some("binlog.000007".into()),
            detail: "could not find first log file name".into(),
        };
        assert!(!purged.is_transient());
        assert!(purged.to_string().contains("binlog.000001:4"));
        assert!(purged.to_string().contains("binlog.000007"));
        let auth =
            ReplicaError::Auth { user: "canal".into(), code: 1045, message: "denied".into() };
        assert!(!auth.is_transient());
        let busy =
            ReplicaError::Auth { user: "canal".into(), code: 1040, message: "too many".into() };
        assert!(busy.is_transient());
    }
}
