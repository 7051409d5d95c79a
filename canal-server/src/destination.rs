//! One destination as clients see it (spec §1.6, §5): its event store, the subscribed clients
//! with their outstanding batches, and where acked cursors go.
//!
//! Java Canal's semantics are kept where clients can observe them: batch ids count from 1 per
//! client and instance lifetime; acks and single-batch rollbacks must name the smallest outstanding
//! batch; the store has one read pointer per destination; a GET takes a per-destination lock (so a
//! blocking GET stalls other GETs of the same destination, never those of another destination).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use canal_core::filter::FilterError;
use canal_core::position::{EntryPosition, LogIdentity, LogPosition};
use canal_core::store::{EventStore, GetWait, StoreBatch, StoreError};

/// Where acked cursors go (the coordinator or a file), and where they come from on subscribe.
pub trait CursorSink: Send + Sync + std::fmt::Debug {
    /// The stored cursor of `client_id`, if any.
    fn load(&self, destination: &str, client_id: i16) -> Option<LogPosition>;
    /// Records a new cursor after an ack. Implementations may flush later (Canal: every 1000 ms).
    fn update(&self, destination: &str, client_id: i16, position: &LogPosition);
    /// Records the client's subscription filter (persisted by Canal, re-applied on restart).
    fn subscribe(&self, destination: &str, client_id: i16, filter: &str);
    /// Forgets the client (Canal deletes its node recursively).
    fn unsubscribe(&self, destination: &str, client_id: i16);
}

/// Receives a client's non-empty subscription filter, which replaces the destination's white list.
pub trait FilterSink: Send + Sync + std::fmt::Debug {
    /// Applies `filter` to the running pipeline.
    ///
    /// # Errors
    /// The filter does not compile; the subscription is refused then.
    fn apply(&self, filter: &str) -> Result<(), FilterError>;
}

/// A request failed; the session turns this into Canal's error ACK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The destination exists but is not running here (standby, stopped, lazy and not started).
    #[error("destination:{0} should start first")]
    NotStarted(String),
    /// The client has not subscribed.
    #[error("client:{client_id} is not subscribe destination:{destination}")]
    NotSubscribed {
        /// Destination.
        destination: String,
        /// Client.
        client_id: i16,
    },
    /// An ack or rollback names an unknown batch.
    #[error("ack error , clientId:{client_id} batchId:{batch_id} is not exist , please check")]
    UnknownBatch {
        /// Client.
        client_id: i16,
        /// Batch named.
        batch_id: i64,
    },
    /// An ack or rollback names a batch that is not the oldest outstanding one.
    #[error("batchId:{batch_id} is not the firstly:{first}")]
    NotFirstBatch {
        /// Batch named.
        batch_id: i64,
        /// The oldest outstanding batch.
        first: i64,
    },
    /// The subscription filter does not compile.
    #[error("invalid subscription filter: {0}")]
    Filter(#[from] FilterError),
    /// The store refused (closed while stopping, inconsistent ack).
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
struct BatchRecord {
    end_seq: u64,
    ack: Option<EntryPosition>,
}

#[derive(Debug, Default)]
struct ClientState {
    filter: String,
    next_batch_id: i64,
    batches: BTreeMap<i64, BatchRecord>,
    cursor: Option<LogPosition>,
}

/// A batch handed to a client.
#[derive(Debug)]
pub struct ClientBatch {
    /// Its id (from 1 per client).
    pub id: i64,
    /// The store batch.
    pub batch: StoreBatch,
}

/// A running destination: created when its instance becomes active, closed when it stops.
#[derive(Debug)]
pub struct Destination {
    name: String,
    store: Arc<EventStore>,
    identity: LogIdentity,
    clients: Mutex<HashMap<i16, ClientState>>,
    get_lock: tokio::sync::Mutex<()>,
    cursors: Arc<dyn CursorSink>,
    filter: Arc<dyn FilterSink>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl Destination {
    /// A destination over `store`, whose entries come from the source named by `identity`.
    pub fn new(
        name: impl Into<String>,
        store: Arc<EventStore>,
        identity: LogIdentity,
        cursors: Arc<dyn CursorSink>,
        filter: Arc<dyn FilterSink>,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            identity,
            clients: Mutex::new(HashMap::new()),
            get_lock: tokio::sync::Mutex::new(()),
            cursors,
            filter,
            closed: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store.
    pub fn store(&self) -> &Arc<EventStore> {
        &self.store
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<i16, ClientState>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes `client_id` (or updates its filter). A client without a cursor gets the store's
    /// first position; a non-empty filter replaces the destination's white list.
    ///
    /// # Errors
    /// [`RequestError::Filter`] if the filter does not compile.
    pub fn subscribe(&self, client_id: i16, filter: &str) -> Result<(), RequestError> {
        if !filter.is_empty() {
            self.filter.apply(filter)?;
        }
        let mut clients = self.clients();
        let state = clients.entry(client_id).or_insert_with(|| ClientState {
            next_batch_id: 1,
            cursor: self.cursors.load(&self.name, client_id),
            ..ClientState::default()
        });
        state.filter = filter.to_owned();
        if state.cursor.is_none() {
            state.cursor = self
                .store
                .first_position()
                .map(|p| LogPosition { identity: self.identity.clone(), position: p });
        }
        drop(clients);
        self.cursors.subscribe(&self.name, client_id, filter);
        Ok(())
    }

    /// Whether `client_id` is subscribed.
    pub fn is_subscribed(&self, client_id: i16) -> bool {
        self.clients().contains_key(&client_id)
    }

    /// Removes the subscription and its outstanding batches.
    pub fn unsubscribe(&self, client_id: i16) {
        self.clients().remove(&client_id);
        self.cursors.unsubscribe(&self.name, client_id);
    }

    /// The clients subscribed, with their filters.
    pub fn subscriptions(&self) -> Vec<(i16, String)> {
        let mut v: Vec<_> = self.clients().iter().map(|(id, s)| (*id, s.filter.clone())).collect();
        v.sort();
        v
    }

    /// The cursor last acked by `client_id`.
    pub fn cursor(&self, client_id: i16) -> Option<LogPosition> {
        self.clients().get(&client_id).and_then(|s| s.cursor.clone())
    }

    /// Hands out the next batch (GET). `Ok(None)` when nothing is available; no id is used then.
    ///
    /// # Errors
    /// [`RequestError::NotSubscribed`]; [`RequestError::Store`] when the store closes.
    ///
    /// # Cancel safety
    /// Cancel safe: the store hands out a batch only when the call completes.
    pub async fn get(
        &self,
        client_id: i16,
        fetch_size: usize,
        wait: GetWait,
    ) -> Result<Option<ClientBatch>, RequestError> {
        self.require_subscribed(client_id)?;
        let _serial = self.get_lock.lock().await;
        let Some(batch) = self.store.get(fetch_size, wait).await? else {
            return Ok(None);
        };
        let mut clients = self.clients();
        let state = match clients.get_mut(&client_id) {
            Some(s) => s,
            None => {
                // Unsubscribed while waiting: give the entries back to the store.
                drop(clients);
                self.store.rollback();
                return Err(self.not_subscribed(client_id));
            }
        };
        let id = state.next_batch_id;
        state.next_batch_id += 1;
        state.batches.insert(id, BatchRecord { end_seq: batch.end_seq, ack: batch.ack.clone() });
        Ok(Some(ClientBatch { id, batch }))
    }

    /// Acks `batch_id`: it must be the oldest outstanding batch. Moves the cursor to the batch's
    /// last boundary (when it has one) and frees the store up to the batch end.
    ///
    /// # Errors
    /// [`RequestError::UnknownBatch`], [`RequestError::NotFirstBatch`],
    /// [`RequestError::NotSubscribed`], [`RequestError::Store`].
    pub fn ack(&self, client_id: i16, batch_id: i64) -> Result<(), RequestError> {
        let mut clients = self.clients();
        let state = clients.get_mut(&client_id).ok_or_else(|| self.not_subscribed(client_id))?;
        let record = take_first(state, client_id, batch_id)?;
        self.store.ack(record.end_seq)?;
        if let Some(ack) = record.ack {
            let pos = LogPosition { identity: self.identity.clone(), position: ack };
            // A cursor never moves backwards.
            let newer = state
                .cursor
                .as_ref()
                .is_none_or(|c| c.position.cmp_in_file_order(&pos.position).is_le());
            if newer {
                state.cursor = Some(pos.clone());
                drop(clients);
                self.cursors.update(&self.name, client_id, &pos);
            }
        }
        Ok(())
    }

    /// Rolls back: `batch_id == 0` drops every outstanding batch, otherwise only `batch_id`
    /// (which must be the oldest). Either way the store re-delivers everything not acked.
    /// Unsubscribed clients are ignored, as Java Canal ignores the rollback clients send on
    /// connect.
    ///
    /// # Errors
    /// [`RequestError::UnknownBatch`], [`RequestError::NotFirstBatch`].
    pub async fn rollback(&self, client_id: i16, batch_id: i64) -> Result<(), RequestError> {
        let _serial = self.get_lock.lock().await;
        let mut clients = self.clients();
        let Some(state) = clients.get_mut(&client_id) else {
            return Ok(());
        };
        if batch_id == 0 {
            state.batches.clear();
        } else {
            take_first(state, client_id, batch_id)?;
        }
        drop(clients);
        self.store.rollback();
        Ok(())
    }

    fn require_subscribed(&self, client_id: i16) -> Result<(), RequestError> {
        if self.is_subscribed(client_id) { Ok(()) } else { Err(self.not_subscribed(client_id)) }
    }

    fn not_subscribed(&self, client_id: i16) -> RequestError {
        RequestError::NotSubscribed { destination: self.name.clone(), client_id }
    }

    /// Stops handing out data: pending GETs fail, the store is emptied, and sessions waiting in
    /// [`Destination::wait_closed`] wake up (they close their connections).
    pub fn close(&self) {
        self.store.close();
        self.closed.send_replace(true);
    }

    /// Whether [`Destination::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the destination is closed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        // The sender lives in `self`, so `wait_for` can only end by seeing `true`.
        let _ = rx.wait_for(|closed| *closed).await;
    }
}

/// Removes `batch_id` if it is the client's oldest outstanding batch.
fn take_first(
    state: &mut ClientState,
    client_id: i16,
    batch_id: i64,
) -> Result<BatchRecord, RequestError> {
    let Some((&first, _)) = state.batches.first_key_value() else {
        return Err(RequestError::UnknownBatch { client_id, batch_id });
    };
    if !state.batches.contains_key(&batch_id) {
        return Err(RequestError::UnknownBatch { client_id, batch_id });
    }
    if first != batch_id {
        return Err(RequestError::NotFirstBatch { batch_id, first });
    }
    state.batches.remove(&batch_id).ok_or(RequestError::UnknownBatch { client_id, batch_id })
}

/// A cursor sink that keeps cursors in memory only (tests, and destinations without persistence).
#[derive(Debug, Default)]
pub struct MemoryCursors {
    inner: Mutex<MemoryCursorMap>,
}

/// (destination, client) → (filter, cursor).
type MemoryCursorMap = HashMap<(String, i16), (String, Option<LogPosition>)>;

impl MemoryCursors {
    fn lock(&self) -> MutexGuard<'_, MemoryCursorMap> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CursorSink for MemoryCursors {
    fn load(&self, destination: &str, client_id: i16) -> Option<LogPosition> {
        self.lock().get(&(destination.to_owned(), client_id)).and_then(|(_, c)| c.clone())
    }

    fn update(&self, destination: &str, client_id: i16, position: &LogPosition) {
        self.lock().entry((destination.to_owned(), client_id)).or_default().1 =
            Some(position.clone());
    }

    fn subscribe(&self, destination: &str, client_id: i16, filter: &str) {
        self.lock().entry((destination.to_owned(), client_id)).or_default().0 = filter.to_owned();
    }

    fn unsubscribe(&self, destination: &str, client_id: i16) {
        self.lock().remove(&(destination.to_owned(), client_id));
    }
}

/// A filter sink that only checks that filters compile (no pipeline attached).
#[derive(Debug, Default)]
pub struct CheckOnlyFilter;

impl FilterSink for CheckOnlyFilter {
    fn apply(&self, filter: &str) -> Result<(), FilterError> {
        canal_core::filter::TableFilter::white(filter).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use canal_core::position::SourceAddress;
    use canal_core::store::{BatchMode, EntryKind, StoreConfig, StoredEntry};

    fn dest() -> (Destination, Arc<MemoryCursors>) {
        let store = Arc::new(EventStore::new(StoreConfig {
            batch_mode: BatchMode::ItemSize,
            ..StoreConfig::default()
        }));
        let cursors = Arc::new(MemoryCursors::default());
        let d = Destination::new(
            "example",
            store,
            LogIdentity::new(SourceAddress::new("127.0.0.1", 3306)),
            cursors.clone(),
            Arc::new(CheckOnlyFilter),
        );
        (d, cursors)
    }

    async fn put_txn(d: &Destination, at: i64) {
        let e = |p: i64, kind| StoredEntry {
            bytes: Bytes::from(vec![p as u8]),
            position: EntryPosition::at("bin.000001", p),
            kind,
        };
        d.store()
            .put(vec![
                e(at, EntryKind::Begin { gtid: false }),
                e(at + 1, EntryKind::Rows),
                e(at + 2, EntryKind::End),
            ])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn batches_count_from_one_and_acks_go_in_order() {
        let (d, cursors) = dest();
        put_txn(&d, 10).await;
        put_txn(&d, 20).await;
        assert!(matches!(
            d.get(1001, 3, GetWait::NonBlocking).await,
            Err(RequestError::NotSubscribed { .. })
        ));
        d.subscribe(1001, "").unwrap();
        let b1 = d.get(1001, 3, GetWait::NonBlocking).await.unwrap().unwrap();
        let b2 = d.get(1001, 3, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!((b1.id, b2.id), (1, 2));
        assert!(d.get(1001, 3, GetWait::NonBlocking).await.unwrap().is_none());
        assert!(matches!(
            d.ack(1001, 2),
            Err(RequestError::NotFirstBatch { batch_id: 2, first: 1 })
        ));
        assert!(matches!(d.ack(1001, 7), Err(RequestError::UnknownBatch { .. })));
        d.ack(1001, 1).unwrap();
        assert_eq!(d.cursor(1001).unwrap().position.position, Some(12));
        assert_eq!(cursors.load("example", 1001).unwrap().position.position, Some(12));
        d.ack(1001, 2).unwrap();
        assert_eq!(d.cursor(1001).unwrap().position.position, Some(22));
    }

    #[tokio::test]
    async fn rollback_redelivers_and_keeps_ids_growing() {
        let (d, _) = dest();
        put_txn(&d, 10).await;
        d.subscribe(1001, "").unwrap();
        // Rollback of an unsubscribed client is ignored.
        d.rollback(5, 0).await.unwrap();
        let b1 = d.get(1001, 2, GetWait::NonBlocking).await.unwrap().unwrap();
        d.rollback(1001, 0).await.unwrap();
        assert!(matches!(d.ack(1001, b1.id), Err(RequestError::UnknownBatch { .. })));
        let again = d.get(1001, 2, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!(again.id, 2);
        assert_eq!(again.batch.entries, b1.batch.entries);
    }

    #[tokio::test]
    async fn new_subscriber_starts_at_store_head_and_bad_filter_is_refused() {
        let (d, _) = dest();
        put_txn(&d, 30).await;
        d.subscribe(1001, "").unwrap();
        assert_eq!(d.cursor(1001).unwrap().position.position, Some(30));
        assert!(matches!(d.subscribe(1002, "bad("), Err(RequestError::Filter(_))));
        assert!(!d.is_subscribed(1002));
        d.unsubscribe(1001);
        assert!(!d.is_subscribed(1001));
    }
}
