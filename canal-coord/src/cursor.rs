//! Cursor storage: each client's cursor (LogPosition JSON bytes, opaque here) at
//! `/otter/canal/destinations/{dest}/{clientId}/cursor`, flushed on every ack or periodically
//! (Canal's default 1000 ms), never moving backwards, and written only under the writer's fence.
//!
//! This crate knows nothing of MySQL: the caller supplies the ordering of cursors
//! ([`CursorOrder`], e.g. comparing `LogPosition`s).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::coordinator::Coordinator;
use crate::error::CoordError;
use crate::path;
use crate::session::Fence;

/// Canal's `canal.zookeeper.flush.period` / `canal.file.flush.period` default.
pub const DEFAULT_FLUSH_PERIOD: Duration = Duration::from_millis(1000);

/// Orders two cursors (current, new). `Some(Ordering::Greater)` means the new one is behind the
/// current one and is refused; `None` (incomparable, e.g. another source) is accepted.
pub trait CursorOrder: Send + Sync {
    /// Compares the current cursor with a new one.
    fn compare(&self, current: &[u8], new: &[u8]) -> Option<Ordering>;
}

impl<F> CursorOrder for F
where
    F: Fn(&[u8], &[u8]) -> Option<Ordering> + Send + Sync,
{
    fn compare(&self, current: &[u8], new: &[u8]) -> Option<Ordering> {
        self(current, new)
    }
}

/// When updates reach the coordination service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every update is written before `update` returns.
    EveryAck,
    /// Updates are kept in memory and the latest per client is written by [`CursorStore::flush`]
    /// (the task from [`CursorStore::spawn_flusher`] calls it every period).
    Periodic(Duration),
}

/// Errors of cursor storage.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// The new cursor is behind the stored one (definite: a caller bug or a stale ack).
    #[error("cursor of client {client_id} on '{destination}' would move backwards")]
    Backwards {
        /// The destination.
        destination: String,
        /// The client id.
        client_id: i16,
    },
    /// The coordination backend refused or failed the write. [`CoordError::Fenced`] means this
    /// process no longer owns the running node and must stop.
    #[error(transparent)]
    Coord(#[from] CoordError),
}

type Key = (String, i16);

#[derive(Debug, Default)]
struct Slot {
    /// Latest cursor known (written or pending).
    latest: Option<Vec<u8>>,
    /// A cursor not yet written, with the fence it must be written under.
    pending: Option<(Vec<u8>, Fence)>,
}

/// Reads and writes clients' cursors through a [`Coordinator`].
pub struct CursorStore {
    coord: Arc<Coordinator>,
    order: Box<dyn CursorOrder>,
    policy: FlushPolicy,
    slots: Mutex<BTreeMap<Key, Slot>>,
}

impl std::fmt::Debug for CursorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorStore").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl CursorStore {
    /// A store over `coord`, ordering cursors with `order`.
    pub fn new(
        coord: Arc<Coordinator>,
        policy: FlushPolicy,
        order: impl CursorOrder + 'static,
    ) -> Arc<Self> {
        Arc::new(CursorStore {
            coord,
            order: Box::new(order),
            policy,
            slots: Mutex::new(BTreeMap::new()),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's cursor: the latest accepted update, else the stored one, else `None`.
    ///
    /// # Errors
    /// Coordination errors reading the node.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn get(&self, dest: &str, client_id: i16) -> Result<Option<Vec<u8>>, CursorError> {
        let key = (dest.to_owned(), client_id);
        if let Some(c) = self.slots().get(&key).and_then(|s| s.latest.clone()) {
            return Ok(Some(c));
        }
        let session = self.coord.session().await?;
        let stored = session.get(&path::client_cursor(dest, client_id)).await?.map(|n| n.data);
        let mut slots = self.slots();
        let slot = slots.entry(key).or_default();
        if slot.latest.is_none() {
            slot.latest = stored.clone();
        }
        Ok(slot.latest.clone())
    }

    /// Records an acked cursor, written under `fence` (the running node of the destination that
    /// this process owns). With [`FlushPolicy::EveryAck`] it is written before returning.
    ///
    /// # Errors
    /// [`CursorError::Backwards`] when behind the latest cursor; with `EveryAck`, coordination
    /// errors of the write ([`CoordError::Fenced`] when the fence no longer holds).
    ///
    /// # Cancel safety
    /// Cancel safe: the update is recorded before any await; a cancelled write is retried by the
    /// next flush.
    pub async fn update(
        &self,
        dest: &str,
        client_id: i16,
        cursor: Vec<u8>,
        fence: &Fence,
    ) -> Result<(), CursorError> {
        // Load the stored cursor first so that the first update is checked too.
        self.get(dest, client_id).await?;
        {
            let mut slots = self.slots();
            let slot = slots.entry((dest.to_owned(), client_id)).or_default();
            if let Some(cur) = &slot.latest {
                if self.order.compare(cur, &cursor) == Some(Ordering::Greater) {
                    return Err(CursorError::Backwards { destination: dest.to_owned(), client_id });
                }
            }
            slot.latest = Some(cursor.clone());
            slot.pending = Some((cursor, fence.clone()));
        }
        match self.policy {
            FlushPolicy::EveryAck => self.flush_one(dest, client_id).await,
            FlushPolicy::Periodic(_) => Ok(()),
        }
    }

    /// Writes every pending cursor. A fenced-out cursor is dropped (never written) and reported.
    ///
    /// # Errors
    /// The first failure; the other clients are still flushed.
    ///
    /// # Cancel safety
    /// Cancel safe: unwritten cursors stay pending.
    pub async fn flush(&self) -> Result<(), CursorError> {
        let keys: Vec<Key> = self
            .slots()
            .iter()
            .filter(|(_, s)| s.pending.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut first = None;
        for (dest, client) in keys {
            if let Err(e) = self.flush_one(&dest, client).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn flush_one(&self, dest: &str, client_id: i16) -> Result<(), CursorError> {
        let key = (dest.to_owned(), client_id);
        let Some((bytes, fence)) = self.slots().get(&key).and_then(|s| s.pending.clone()) else {
            return Ok(());
        };
        let session = self.coord.session().await?;
        let res = session.put_fenced(&path::client_cursor(dest, client_id), &bytes, &fence).await;
        let mut slots = self.slots();
        let slot = slots.entry(key).or_default();
        let still_same = slot.pending.as_ref().is_some_and(|(b, f)| *b == bytes && *f == fence);
        match res {
            Ok(_) => {
                if still_same {
                    slot.pending = None;
                }
                Ok(())
            }
            Err(e @ CoordError::Fenced { .. }) => {
                // Not ours any more: forget it so that the new owner's cursor is re-read.
                tracing::warn!(
                    destination = dest,
                    client_id,
                    "cursor write fenced out: no longer the owner"
                );
                if still_same {
                    slot.pending = None;
                    slot.latest = None;
                }
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets cached cursors (e.g. after losing ownership) so the next `get` re-reads them.
    pub fn forget(&self, dest: &str) {
        self.slots().retain(|(d, _), _| d != dest);
    }

    /// With [`FlushPolicy::Periodic`], spawns the task that flushes every period (errors are
    /// logged); `None` with `EveryAck`.
    pub fn spawn_flusher(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let FlushPolicy::Periodic(period) = self.policy else { return None };
        let me = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = me.upgrade() else { return };
                if let Err(e) = store.flush().await {
                    tracing::warn!(error = %e, "cursor flush failed");
                }
            }
        }))
    }
}
