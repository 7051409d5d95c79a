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
//! * [`MetaConnection`] — a mysql_async connection for start-position resolution (docs/protocol.md#start-position):
//!   master status, binlog list, purged checks, GTID positions, format checks, timestamp search.
//! * [`ReplicaError`] — typed errors with [`ReplicaError::is_transient`]; [`Backoff`] and
//!   [`retry_transient`] for the reconnect loop the pipeline drives.
//!
//! Pure protocol logic (framing, packet parsing, auth, GTID sets, event headers) lives in
//! submodules without I/O and is unit-tested on bytes; `client` and `meta` do the I/O.
//!
//! ```no_run
//! use std::time::Duration;
//! use canal_core::binlog::replica::*;
//!
//! # async fn run() -> Result<(), ReplicaError> {
//! let cfg = ReplicaConfig::from_url("mysql://canal:canal@127.0.0.1:3306")?.with_slave_id(1234);
//! let mut meta = MetaConnection::open(&cfg).await?;
//! meta.check_binlog_settings(DEFAULT_ALLOWED_FORMATS, DEFAULT_ALLOWED_IMAGES).await?;
//! let end = meta.master_status().await?.expect("binary logging is on");
//! // The caller owns the resume position: the last transaction boundary it persisted.
//! let mut resume = DumpStart::FilePos { file: end.file, position: end.position };
//! let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
//! loop {
//!     let start = resume.clone();
//!     let mut stream = retry_transient(&mut backoff, 10, || {
//!         let (cfg, start) = (cfg.clone(), start.clone());
//!         async move { ReplicaConnection::connect(&cfg).await?.dump(start, DumpOptions::default()).await }
//!     })
//!     .await?;
//!     let err = loop {
//!         match stream.next_event().await {
//!             Ok(Some(ev)) => {
//!                 // hand `ev.bytes` (and `ev.checksum`) to the decoder; after a commit, record
//!                 // `stream.current_file()` + `ev.header.log_pos` as the new `resume`.
//!                 if ev.header.event_type == event_type::XID {
//!                     let file = stream.current_file().unwrap_or_default().to_string();
//!                     resume = DumpStart::FilePos { file, position: ev.header.log_pos.into() };
//!                 }
//!             }
//!             Ok(None) => unreachable!("blocking dumps do not end"),
//!             Err(e) => break e,
//!         }
//!     };
//!     if !err.is_transient() {
//!         return Err(err); // purged binlog, bad settings...: tell the operator
//!     }
//! }
//! # }
//! ```

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
    MetaConnection, TABLE_FETCH_ATTEMPTS, TABLE_FETCH_TIMEOUT, TimestampPosition,
};
