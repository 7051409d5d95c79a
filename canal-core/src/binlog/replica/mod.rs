//! The replica connection: register as a replica and dump raw binlog events.
//!
//! * [`ReplicaConnection`] — our own small client over tokio + mysql_common packet types
//!   (handshake v10, `mysql_native_password`, `caching_sha2_password` incl. RSA full auth,
//!   framing with >16 MB continuation), Canal's session setup, COM_REGISTER_SLAVE and
//!   COM_BINLOG_DUMP (flag `BINLOG_SEND_ANNOTATE_ROWS_EVENT`) / COM_BINLOG_DUMP_GTID / MariaDB
//!   GTID. mysql_async's binlog stream is not used because it cannot set dump flags, so on
//!   MariaDB it cannot get ANNOTATE_ROWS together with GTIDs.
//! * [`BinlogStream`] — yields [`RawEvent`]s: each event's bytes exactly as in the binlog (header,
//!   body, CRC32 trailer when checksums are on, including the first fake ROTATE), with the
//!   checksum algorithm that applies to it.
//! * [`MetaConnection`] — a mysql_async connection for start-position resolution (Canal §9.2):
//!   master status, binlog list, purged checks, GTID positions, format checks, timestamp search.
//! * [`ReplicaError`] — typed errors with [`ReplicaError::is_transient`]; [`Backoff`] and
//!   [`retry_transient`] for the reconnect loop the pipeline drives.
//!
//! Pure protocol logic (framing, packet parsing, auth, GTID sets, event headers) lives in
//! submodules without I/O and is unit-tested on bytes; `client` and `meta` do the I/O.

mod auth;
mod backoff;
mod client;
mod error;
mod event;
mod gtid;
mod meta;
mod packet;

pub use backoff::{Backoff, retry_transient};
pub use client::{
    BINLOG_SEND_ANNOTATE_ROWS_EVENT, BinlogStream, DumpOptions, DumpStart, ReplicaConfig,
    ReplicaConnection, ServerInfo,
};
pub use error::{ER_MASTER_FATAL_ERROR_READING_BINLOG, ReplicaError};
pub use event::{
    CHECKSUM_LEN, ChecksumAlg, EVENT_HEADER_LEN, EventHeader, LOG_EVENT_ARTIFICIAL_F, RawEvent,
    event_type,
};
pub use gtid::{GtidSet, MariadbGtid, MariadbGtidList, ServerUuid};
pub use meta::{
    BinlogFile, BoundaryKind, DEFAULT_ALLOWED_FORMATS, DEFAULT_ALLOWED_IMAGES, MasterStatus,
    MetaConnection, TimestampPosition,
};
