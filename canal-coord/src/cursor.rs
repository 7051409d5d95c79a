//! Cursor storage: each client's cursor (LogPosition JSON bytes, opaque here) at
//! `/otter/canal/destinations/{dest}/{clientId}/cursor`, flushed on every ack or periodically
//! (Canal's default 1000 ms), never moving backwards, and written only under the writer's fence.
//!
//! Queued cursors belong to one activation of their destination: a cursor queued under a fence
//! from an older epoch than the destination's latest activation (or from an activation that
//! [`CursorStore::forget`] ended) is dropped, never written, and a late update under such a
//! fence is refused. The backend refuses such writes too (the fence's epoch moved); this keeps
//! them from being attempted at all and keeps their cursors out of the cache.
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

/// The latest activation of a destination seen by the store.
#[derive(Debug)]
struct Activation {
    fence: Fence,
    /// [`CursorStore::forget`] ended it: its fence writes nothing more.
    ended: bool,
}

#[derive(Debug, Default)]
struct State {
    clients: BTreeMap<Key, ClientCursor>,
    activations: BTreeMap<String, Activation>,
}

impl State {
    /// Whether a write under `fence` belongs to an activation of `dest` that is over: an older
    /// epoch than the latest one, or the latest one after `forget`.
    fn is_stale(&self, dest: &str, fence: &Fence) -> bool {
        self.activations.get(dest).is_some_and(|a| {
            fence.is_older_than(&a.fence)
                || (a.ended
                    && fence.epoch_path == a.fence.epoch_path
                    && fence.epoch == a.fence.epoch)
        })
    }

    /// Records `fence` as the latest activation of `dest` if it is newer, dropping what older
    /// activations queued or cached. Refuses a fence of an activation that is over.
    fn admit(&mut self, dest: &str, path: &str, fence: &Fence) -> Result<(), CoordError> {
        if self.is_stale(dest, fence) {
            return Err(CoordError::Fenced {
                path: path.to_owned(),
                fence: fence.epoch_path.clone(),
            });
        }
        let newer = self
            .activations
            .get(dest)
            .is_none_or(|a| a.fence.epoch_path != fence.epoch_path || a.fence.epoch < fence.epoch);
        if newer {
            self.activations
                .insert(dest.to_owned(), Activation { fence: fence.clone(), ended: false });
            for ((d, client_id), client) in self.clients.iter_mut() {
                let stale = client.pending.as_ref().is_some_and(|(_, f)| f != fence);
                if d == dest && stale {
                    tracing::warn!(
                        destination = dest,
                        client_id,
                        "dropping a cursor queued by an earlier activation"
                    );
                    // Its cursor may be ahead of what is stored: re-read it.
                    client.pending = None;
                    client.latest = None;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ClientCursor {
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
    state: Mutex<State>,
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
            state: Mutex::new(State::default()),
        })
    }

    /// When updates reach the coordination service.
    pub fn policy(&self) -> FlushPolicy {
        self.policy
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change under the lock is a single map operation or a loop of independent
        // ones, so a poisoned lock still guards consistent maps.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new activation of `dest` (call on `ActiveEnter`, with its fence): cursors queued
    /// or cached by earlier activations are dropped, and later updates under their fences are
    /// refused. [`CursorStore::update`] does the same on the first update under a newer fence.
    ///
    /// # Errors
    /// [`CoordError::Fenced`] when `fence` is older than an activation already seen, or is the
    /// one [`CursorStore::forget`] ended.
    pub fn activate(&self, dest: &str, fence: &Fence) -> Result<(), CursorError> {
        self.state().admit(dest, &path::destination(dest), fence).map_err(CursorError::from)
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
        if let Some(c) = self.state().clients.get(&key).and_then(|s| s.latest.clone()) {
            return Ok(Some(c));
        }
        let session = self.coord.session().await?;
        let stored = session.get(&path::client_cursor(dest, client_id)).await?.map(|n| n.data);
        let mut state = self.state();
        let client = state.clients.entry(key).or_default();
        if client.latest.is_none() {
            client.latest = stored.clone();
        }
        Ok(client.latest.clone())
    }

    /// Records an acked cursor, written under `fence` (the running node of the destination that
    /// this process owns). With [`FlushPolicy::EveryAck`] it is written before returning.
    ///
    /// # Errors
    /// [`CursorError::Backwards`] when behind the latest cursor; [`CoordError::Fenced`] at once
    /// when `fence` belongs to an activation that is over (see [`CursorStore::activate`]); with
    /// `EveryAck`, coordination errors of the write ([`CoordError::Fenced`] when the fence no
    /// longer holds).
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
        let cursor_path = path::client_cursor(dest, client_id);
        // A new activation drops the old one's cached cursors before we load the stored one.
        self.state().admit(dest, &cursor_path, fence)?;
        // Load the stored cursor first so that the first update is checked too.
        self.get(dest, client_id).await?;
        {
            let mut state = self.state();
            // Re-checked: `forget` or a newer activation may have come while we read.
            state.admit(dest, &cursor_path, fence)?;
            let client = state.clients.entry((dest.to_owned(), client_id)).or_default();
            if let Some(cur) = &client.latest
                && self.order.compare(cur, &cursor) == Some(Ordering::Greater)
            {
                return Err(CursorError::Backwards { destination: dest.to_owned(), client_id });
            }
            client.latest = Some(cursor.clone());
            client.pending = Some((cursor, fence.clone()));
        }
        match self.policy {
            FlushPolicy::EveryAck => self.flush_one(dest, client_id).await,
            FlushPolicy::Periodic(_) => Ok(()),
        }
    }

    /// An operator's reset: writes `cursor` under `fence` now, even behind the latest one (the
    /// only way a cursor moves backwards), and makes it the latest, dropping what was pending.
    /// The client's node is created when missing. The caller has stopped serving the
    /// destination (nothing acks meanwhile) and keeps `fence`'s activation.
    ///
    /// # Errors
    /// [`CoordError::Fenced`] when `fence` no longer holds (or its activation is over);
    /// coordination errors of the writes (nothing is cached then).
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may land without the cache knowing; read it back.
    pub async fn reset(
        &self,
        dest: &str,
        client_id: i16,
        cursor: Vec<u8>,
        fence: &Fence,
    ) -> Result<(), CursorError> {
        let cursor_path = path::client_cursor(dest, client_id);
        self.state().admit(dest, &cursor_path, fence)?;
        let session = self.coord.session().await?;
        if session.get(&path::client(dest, client_id)).await?.is_none() {
            session.put_fenced(&path::client(dest, client_id), b"", fence).await?;
        }
        session.put_fenced(&cursor_path, &cursor, fence).await?;
        let mut state = self.state();
        state.admit(dest, &cursor_path, fence)?;
        let client = state.clients.entry((dest.to_owned(), client_id)).or_default();
        client.latest = Some(cursor);
        client.pending = None;
        Ok(())
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
            .state()
            .clients
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
        let cursor_path = path::client_cursor(dest, client_id);
        let (bytes, fence) = {
            let mut state = self.state();
            let Some((bytes, fence)) = state.clients.get(&key).and_then(|s| s.pending.clone())
            else {
                return Ok(());
            };
            if state.is_stale(dest, &fence) {
                // Queued by an activation that is over: never written.
                if let Some(client) = state.clients.get_mut(&key) {
                    client.pending = None;
                    client.latest = None;
                }
                return Err(
                    CoordError::Fenced { path: cursor_path, fence: fence.epoch_path }.into()
                );
            }
            (bytes, fence)
        };
        let session = self.coord.session().await?;
        let res = session.put_fenced(&cursor_path, &bytes, &fence).await;
        let mut state = self.state();
        // Forgotten meanwhile: nothing to update.
        let Some(client) = state.clients.get_mut(&key) else {
            return res.map(|_| ()).map_err(Into::into);
        };
        let still_same = client.pending.as_ref().is_some_and(|(b, f)| *b == bytes && *f == fence);
        match res {
            Ok(_) => {
                if still_same {
                    client.pending = None;
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
                    client.pending = None;
                    client.latest = None;
                }
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Moves the destination's current activation to `fence`, the same activation (epoch) at a
    /// new version of its running node (an operator's `active:false` rewrote it while it stays
    /// ours): its queued cursors are written under `fence` from now on. Used for the final
    /// writes of a graceful exit ([`crate::ExitFlush`]). A fence of another activation is ignored.
    pub fn refence(&self, dest: &str, fence: &Fence) {
        let same = |f: &Fence| f.epoch_path == fence.epoch_path && f.epoch == fence.epoch;
        let mut state = self.state();
        match state.activations.get_mut(dest) {
            Some(a) if same(&a.fence) && !a.ended => a.fence = fence.clone(),
            _ => return,
        }
        for ((d, _), client) in state.clients.iter_mut() {
            if let Some((_, f)) = &mut client.pending
                && d == dest
                && same(f)
            {
                *f = fence.clone();
            }
        }
    }

    /// Ends the destination's current activation (call on `ActiveExit`): its cached cursors
    /// and queued writes are dropped (never written; the next `get` re-reads the stored ones),
    /// and later updates under its fence are refused.
    pub fn forget(&self, dest: &str) {
        let mut state = self.state();
        state.clients.retain(|(d, _), s| {
            if d == dest && s.pending.is_some() {
                tracing::info!(destination = dest, "dropping a queued cursor: activation over");
            }
            d != dest
        });
        if let Some(a) = state.activations.get_mut(dest) {
            a.ended = true;
        }
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
