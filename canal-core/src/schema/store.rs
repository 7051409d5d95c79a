//! Where the schema history of a destination is shared between the servers that may run it: a
//! small storage abstraction ([`HistoryStore`]) and the self-describing form it stores
//! ([`HistoryMeta`], [`HistoryRecord`] chunks).
//!
//! The store belongs to the running node's owner: it loads the history when the destination
//! becomes active, before the first event is decoded, and writes every change before the entries
//! that depend on it reach the event store. canal-server implements it over the coordinator
//! (`/otter/canal/destinations/{dest}/schema/…`, docs/compatibility.md); the local data-dir file of
//! [`super::SchemaHistory::open`] is a cache of it.
//!
//! A failed read is an error, never an empty history: an empty history makes the pipeline take
//! today's `SHOW CREATE TABLE` for older rows, which is the mislabelling this exists to prevent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::history::{HistoryRecord, PendingSync};
use super::model::SchemaPosition;

/// A boxed future of a store operation.
pub type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, HistoryStoreError>> + Send + 'a>>;

/// Version of [`HistoryMeta`]'s format.
pub const META_VERSION: u32 = 1;

/// Largest piece of one record written as one node (ZooKeeper refuses nodes over 1 MB).
pub const CHUNK_BYTES: usize = 512 * 1024;

/// Records below the minimum client cursor that make the instance compact the history
/// ([`super::SchemaHistory::compact_below`]): the shared history holds at most this many records
/// more than the DDLs after the slowest client's cursor, plus one snapshot.
pub const COMPACT_RECORDS: usize = 16;

/// Errors of a [`HistoryStore`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryStoreError {
    /// The store could not be read or written (coordinator unavailable, session lost).
    #[error("schema history store: {what}")]
    Unavailable {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The write was refused because this process no longer owns the destination.
    #[error("schema history write fenced out: {what}")]
    Fenced {
        /// What was refused.
        what: String,
    },
    /// The stored history cannot be read back; it needs an operator.
    #[error("stored schema history is corrupt: {reason}")]
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// The source a history followed: positions of different sources do not compare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceIdentity {
    /// `host:port` the instance reads from.
    pub address: String,
    /// `@@server_id`.
    pub server_id: u32,
    /// `@@server_uuid` (MySQL; MariaDB has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_uuid: Option<String>,
}

impl SourceIdentity {
    /// Same server: the UUIDs match when both are known, else server id and address match.
    pub fn same_source(&self, other: &SourceIdentity) -> bool {
        match (&self.server_uuid, &other.server_uuid) {
            (Some(a), Some(b)) => a == b,
            _ => self.server_id == other.server_id && self.address == other.address,
        }
    }
}

/// What a stored history covers: its source and the binlog range it has followed without a gap
/// (`from` ≤ every position whose DDL it holds ≤ `to`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMeta {
    /// Format version ([`META_VERSION`]).
    pub v: u32,
    /// The source followed.
    pub source: SourceIdentity,
    /// Where following started (moves forward when records below the cursors are compacted).
    pub from: SchemaPosition,
    /// The furthest position known to have been followed.
    pub to: SchemaPosition,
}

/// A history as loaded from a store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredHistory {
    /// Coverage; `None` when nothing was ever stored.
    pub meta: Option<HistoryMeta>,
    /// Records in position order.
    pub records: Vec<HistoryRecord>,
}

/// The shared copy of one destination's schema history. Implementations are bound to one owner
/// (canal-server: the running node's fence) and refuse writes once it is no longer the owner.
pub trait HistoryStore: Send + Sync + fmt::Debug {
    /// Reads the whole history.
    ///
    /// # Errors
    /// `Unavailable` or `Corrupt`; never an empty history in place of an unreadable one.
    fn load(&self) -> StoreFuture<'_, StoredHistory>;

    /// Writes `change` (if any) and then `meta`.
    ///
    /// # Errors
    /// `Fenced` when this process no longer owns the destination, `Unavailable` otherwise; the
    /// caller keeps the change pending and writes it again.
    fn write<'a>(
        &'a self,
        meta: &'a HistoryMeta,
        change: Option<PendingSync<'a>>,
    ) -> StoreFuture<'a, ()>;
}

/// One record as the pieces stored in nodes of at most `max` bytes each (JSON, cut at byte
/// boundaries; [`join_chunks`] puts them back).
pub fn record_chunks(record: &HistoryRecord, max: usize) -> Vec<Vec<u8>> {
    let bytes = serde_json::to_vec(record).expect("history records serialize");
    bytes.chunks(max.max(1)).map(<[u8]>::to_vec).collect()
}

/// A record from its pieces, in order.
///
/// # Errors
/// `Corrupt` when the bytes are not one record.
pub fn join_chunks(chunks: &[Vec<u8>]) -> Result<HistoryRecord, HistoryStoreError> {
    let bytes = chunks.concat();
    serde_json::from_slice(&bytes)
        .map_err(|e| HistoryStoreError::Corrupt { reason: format!("record: {e}") })
}
