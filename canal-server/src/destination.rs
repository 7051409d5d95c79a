//! One destination as clients see it (docs/protocol.md#requests, #cursors): its event store, the subscribed clients
//! with their outstanding batches, and where acked cursors go.
//!
//! Java Canal's semantics are kept where clients can observe them: batch ids count from 1 per
//! client and instance lifetime; acks and single-batch rollbacks must name the smallest outstanding
//! batch; the store has one read pointer per destination.
//!
//! Stricter than Java, which holds a per-destination lock while a GET waits: no lock is held
//! across a GET's wait or a socket write, so a client that stops reading (a half-open socket)
//! never stalls another client. A GET takes its batch and records it in one step under the
//! clients' lock; a newer subscribe or rollback of the same client id (its reconnection) makes a
//! still-waiting older GET of that id answer empty instead of taking the next batch.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use canal_core::filter::FilterError;
use canal_core::instance::InstanceStatus;
use canal_core::position::{EntryPosition, LogIdentity, LogPosition};
use canal_core::store::{EventStore, GetPolicy, StoreBatch, StoreError};
use tokio::sync::{Notify, watch};

/// Where acked cursors go (the coordinator or a file), and where they come from on subscribe.
pub trait CursorSink: Send + Sync + std::fmt::Debug {
    /// The stored cursor of `client_id`, if any.
    fn load(&self, destination: &str, client_id: i16) -> Option<LogPosition>;
    /// Records a new cursor after an ack. Implementations may flush later (Canal: every 1000 ms;
    /// [`CursorSink::persisted`] waits for it when writing on every ack).
    fn update(&self, destination: &str, client_id: i16, position: &LogPosition);
    /// Records the client's subscription filter (persisted by Canal, re-applied on restart).
    fn subscribe(&self, destination: &str, client_id: i16, filter: &str);
    /// Forgets the client (Canal deletes its node recursively).
    fn unsubscribe(&self, destination: &str, client_id: i16);
    /// Waits until what was recorded so far is durable, when this sink persists on every ack
    /// (the session calls it before it reads the connection's next frame); the error says why
    /// it is not. Default: nothing to wait for (periodic flushing, or nothing persisted).
    fn persisted(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(())))
    }
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
    /// The destination's instance failed; the server restarts it (or hands it to another server).
    #[error("destination:{destination} failed: {reason}")]
    Failed {
        /// Destination.
        destination: String,
        /// Why the instance stopped.
        reason: String,
    },
    /// The store refused (closed while stopping, inconsistent ack).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An ack's cursor (or a subscription) could not be made durable: the client must not
    /// assume it was.
    #[error("destination:{destination} cursor not persisted: {reason}")]
    NotPersisted {
        /// Destination.
        destination: String,
        /// Why.
        reason: String,
    },
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
    /// Bumped by every subscribe and rollback of this client id: a GET that started under an
    /// older generation takes nothing (it was superseded, e.g. by the client's reconnection).
    generation: u64,
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
    /// Wakes waiting GETs when a client's generation changes.
    superseded: Notify,
    cursors: Arc<dyn CursorSink>,
    filter: Arc<dyn FilterSink>,
    closed: watch::Sender<bool>,
    /// A transaction boundary at or before every entry the store holds or will hold: where the
    /// instance started, then the last acked boundary. `None` until the start is resolved.
    floor: Mutex<Option<EntryPosition>>,
    /// The instance's progress (its `resume` position), when attached.
    progress: Option<watch::Receiver<InstanceStatus>>,
    /// Why the instance failed, once it did.
    failure: Mutex<Option<String>>,
    /// The owner's lease on the running node, when attached: no data is served without it.
    lease: Option<canal_coord::Lease>,
    /// Open sessions subscribed, per client id (see [`Destination::presence`]).
    connected: Arc<Mutex<HashMap<i16, usize>>>,
}

/// A session subscribed as one client id, counted by [`Destination::connected`] until dropped.
#[derive(Debug)]
pub struct Presence {
    counts: Arc<Mutex<HashMap<i16, usize>>>,
    client_id: i16,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.client_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.client_id);
            }
        }
    }
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
            superseded: Notify::new(),
            connected: Arc::default(),
            cursors,
            filter,
            closed: watch::Sender::new(false),
            floor: Mutex::new(None),
            progress: None,
            failure: Mutex::new(None),
            lease: None,
        }
    }

    /// Attaches the instance's status, whose `resume` position gives a new subscriber its exact
    /// first position while the store is empty.
    pub fn with_progress(mut self, progress: watch::Receiver<InstanceStatus>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Attaches the running node's lease: [`Destination::may_serve`] follows it.
    pub fn with_lease(mut self, lease: canal_coord::Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Whether this server may answer with data (or apply an ack) now: its lease on the running
    /// node holds (always, without one attached).
    pub fn may_serve(&self) -> bool {
        self.lease.as_ref().is_none_or(canal_coord::Lease::valid)
    }

    /// Sets the floor (see [`Destination::floor`]) if it is not known yet, and records it as the
    /// cursor of every subscribed client that has none (they subscribed before the instance
    /// resolved where it starts). Returns whether it was set.
    pub fn set_floor(&self, position: EntryPosition) -> bool {
        {
            let mut floor = lock(&self.floor);
            if floor.is_some() {
                return false;
            }
            *floor = Some(position.clone());
        }
        let pos = LogPosition { identity: self.identity.clone(), position };
        let mut missing = Vec::new();
        for (id, state) in self.clients().iter_mut() {
            if state.cursor.is_none() {
                state.cursor = Some(pos.clone());
                missing.push(*id);
            }
        }
        for id in missing {
            self.cursors.update(&self.name, id, &pos);
        }
        true
    }

    /// A transaction boundary at or before every entry the store holds or will hold (where the
    /// instance started, then the last acked boundary): restarting there repeats at most what no
    /// client has acked. `None` while the instance has not resolved its start.
    pub fn floor(&self) -> Option<EntryPosition> {
        lock(&self.floor).clone()
    }

    /// The first position a client subscribing now can receive, as a transaction boundary: the
    /// instance's resume point when the store holds nothing (exact), else the floor.
    fn subscribe_position(&self) -> Option<EntryPosition> {
        // Read the resume point before looking at the store: the instance puts a transaction
        // before it publishes the point after it, so an empty store seen afterwards means
        // nothing was put after that point.
        let resume = self.progress.as_ref().and_then(|p| p.borrow().resume.clone());
        if self.store.stats().entries == 0
            && let Some(r) = resume
        {
            return Some(r);
        }
        self.floor()
    }

    /// Marks the destination failed (its instance stopped with `reason`): pending and later GETs
    /// fail with [`RequestError::Failed`]; sessions stay open until [`Destination::close`].
    pub fn fail(&self, reason: impl Into<String>) {
        *lock(&self.failure) = Some(reason.into());
        self.store.close();
        self.superseded.notify_waiters();
    }

    /// Why the instance failed, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    fn store_error(&self, e: StoreError) -> RequestError {
        match self.failure() {
            Some(reason) => RequestError::Failed { destination: self.name.clone(), reason },
            None => RequestError::Store(e),
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

    /// The source the destination's entries come from.
    pub fn identity(&self) -> &LogIdentity {
        &self.identity
    }

    /// Subscribes `client_id` (or updates its filter). A client without a cursor gets one
    /// recorded at the first position it can receive (Canal records the store's first position),
    /// so that a failover before its first ack resumes there and not at the source's head; when
    /// that position is not known yet, [`Destination::set_floor`] records it. A non-empty filter
    /// replaces the destination's white list. A GET of the same client id still waiting (on an
    /// older connection) answers empty.
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
        state.generation += 1;
        let mut first = None;
        if state.cursor.is_none() {
            state.cursor = self
                .subscribe_position()
                .map(|p| LogPosition { identity: self.identity.clone(), position: p });
            first.clone_from(&state.cursor);
        }
        drop(clients);
        self.superseded.notify_waiters();
        self.cursors.subscribe(&self.name, client_id, filter);
        if let Some(pos) = first {
            self.cursors.update(&self.name, client_id, &pos);
        }
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

    /// Counts a session subscribed as `client_id` until the returned guard is dropped.
    pub fn presence(&self, client_id: i16) -> Presence {
        *self.connected.lock().unwrap_or_else(|p| p.into_inner()).entry(client_id).or_default() +=
            1;
        Presence { counts: self.connected.clone(), client_id }
    }

    /// Open sessions subscribed as `client_id` (an operator's cursor reset waits for none).
    pub fn connected(&self, client_id: i16) -> usize {
        self.connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&client_id)
            .copied()
            .unwrap_or(0)
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
    /// Waits without holding any lock; `Ok(None)` too when a newer subscribe or rollback of the
    /// same client id superseded this GET while it waited.
    ///
    /// # Errors
    /// [`RequestError::NotSubscribed`]; [`RequestError::Failed`] when the instance failed;
    /// [`RequestError::Store`] when the store closes.
    ///
    /// # Cancel safety
    /// Cancel safe: a batch is taken and recorded in one step, only when the call completes.
    pub async fn get(
        &self,
        client_id: i16,
        fetch_size: usize,
        policy: impl Into<GetPolicy>,
    ) -> Result<Option<ClientBatch>, RequestError> {
        let policy = policy.into();
        let deadline = policy.wait.deadline();
        let generation = self
            .clients()
            .get(&client_id)
            .map(|s| s.generation)
            .ok_or_else(|| self.not_subscribed(client_id))?;
        loop {
            let superseded = self.superseded.notified();
            tokio::pin!(superseded);
            superseded.as_mut().enable();
            if self.clients().get(&client_id).is_some_and(|s| s.generation == generation) {
                tokio::select! {
                    r = self.store.wait_ready(fetch_size, policy, deadline) => {
                        r.map_err(|e| self.store_error(e))?;
                    }
                    _ = &mut superseded => {}
                }
            }
            let mut clients = self.clients();
            let state =
                clients.get_mut(&client_id).ok_or_else(|| self.not_subscribed(client_id))?;
            if state.generation != generation {
                return Ok(None);
            }
            let taken = self
                .store
                .take_if_due(fetch_size, policy, deadline)
                .map_err(|e| self.store_error(e))?;
            // Not due: another GET took what was there first; wait again.
            let Some(taken) = taken else { continue };
            let Some(batch) = taken else { return Ok(None) };
            let id = state.next_batch_id;
            state.next_batch_id += 1;
            state
                .batches
                .insert(id, BatchRecord { end_seq: batch.end_seq, ack: batch.ack.clone() });
            return Ok(Some(ClientBatch { id, batch }));
        }
    }

    /// Waits until the cursors and subscriptions recorded so far are durable (see
    /// [`CursorSink::persisted`]).
    ///
    /// # Errors
    /// [`RequestError::NotPersisted`].
    pub async fn persisted(&self) -> Result<(), RequestError> {
        self.cursors
            .persisted()
            .await
            .map_err(|reason| RequestError::NotPersisted { destination: self.name.clone(), reason })
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
        self.store.ack(record.end_seq).map_err(|e| self.store_error(e))?;
        if let Some(ack) = record.ack {
            {
                // The store now holds nothing before this boundary.
                let mut floor = lock(&self.floor);
                if floor.as_ref().is_none_or(|f| f.cmp_in_file_order(&ack).is_le()) {
                    *floor = Some(ack.clone());
                }
            }
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
    pub fn rollback(&self, client_id: i16, batch_id: i64) -> Result<(), RequestError> {
        let mut clients = self.clients();
        let Some(state) = clients.get_mut(&client_id) else {
            return Ok(());
        };
        if batch_id == 0 {
            state.batches.clear();
        } else {
            take_first(state, client_id, batch_id)?;
        }
        state.generation += 1;
        // Under the clients' lock, so that no GET takes a batch between the records and the
        // read pointer being reset.
        self.store.rollback();
        drop(clients);
        self.superseded.notify_waiters();
        Ok(())
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CheckOnlyFilter, MemoryCursors};
    use bytes::Bytes;
    use canal_core::position::SourceAddress;
    use canal_core::store::{BatchMode, EntryKind, GetWait, StoreConfig, StoredEntry};

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
        d.rollback(5, 0).unwrap();
        let b1 = d.get(1001, 2, GetWait::NonBlocking).await.unwrap().unwrap();
        d.rollback(1001, 0).unwrap();
        assert!(matches!(d.ack(1001, b1.id), Err(RequestError::UnknownBatch { .. })));
        let again = d.get(1001, 2, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!(again.id, 2);
        assert_eq!(again.batch.entries, b1.batch.entries);
    }

    #[tokio::test]
    async fn new_subscriber_gets_a_recorded_cursor_and_bad_filter_is_refused() {
        let (d, cursors) = dest();
        put_txn(&d, 30).await;
        // Where the instance started is not known yet: recorded once it is.
        d.subscribe(1001, "").unwrap();
        assert_eq!(d.cursor(1001), None);
        assert!(d.set_floor(EntryPosition::at("bin.000001", 4)));
        assert!(!d.set_floor(EntryPosition::at("bin.000001", 8)), "set once");
        assert_eq!(cursors.load("example", 1001).unwrap().position.position, Some(4));
        // Known: a later subscriber gets the floor at once (the store is not empty).
        d.subscribe(1003, "").unwrap();
        assert_eq!(cursors.load("example", 1003).unwrap().position.position, Some(4));
        // An ack moves the floor to its boundary.
        let b = d.get(1003, 3, GetWait::NonBlocking).await.unwrap().unwrap();
        d.ack(1003, b.id).unwrap();
        assert_eq!(d.floor().unwrap().position, Some(32));
        assert!(matches!(d.subscribe(1002, "bad("), Err(RequestError::Filter(_))));
        assert!(!d.is_subscribed(1002));
        d.unsubscribe(1001);
        assert!(!d.is_subscribed(1001));
    }

    #[tokio::test]
    async fn a_waiting_get_holds_no_lock_and_is_superseded_by_a_resubscribe() {
        let (d, _) = dest();
        let d = Arc::new(d);
        d.subscribe(1001, "").unwrap();
        d.subscribe(1002, "").unwrap();
        // Client 1001 waits forever (a half-open socket never answers).
        let d2 = d.clone();
        let stuck = tokio::spawn(async move { d2.get(1001, 3, GetWait::Forever).await });
        tokio::task::yield_now().await;
        // Another client's timed GET answers on time.
        let t0 = tokio::time::Instant::now();
        let r = d.get(1002, 3, GetWait::Timeout(std::time::Duration::from_millis(100))).await;
        assert!(r.unwrap().is_none());
        assert!(t0.elapsed() < std::time::Duration::from_secs(2));
        // 1001 reconnects and subscribes again: the old GET answers empty and takes nothing.
        d.subscribe(1001, "").unwrap();
        assert!(stuck.await.unwrap().unwrap().is_none());
        put_txn(&d, 10).await;
        let b = d.get(1001, 3, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!(b.id, 1);
        // A timeout too large for an Instant waits like Forever instead of panicking.
        let far = GetWait::Timeout(std::time::Duration::MAX);
        assert!(far.deadline().is_none());
        let r =
            tokio::time::timeout(std::time::Duration::from_millis(50), d.get(1001, 3, far)).await;
        assert!(r.is_err(), "still waiting for a full batch");
    }

    #[tokio::test]
    async fn a_failed_destination_answers_gets_with_its_reason() {
        let (d, _) = dest();
        let d = Arc::new(d);
        d.subscribe(1001, "").unwrap();
        let d2 = d.clone();
        let waiting = tokio::spawn(async move { d2.get(1001, 3, GetWait::Forever).await });
        tokio::task::yield_now().await;
        d.fail("access denied");
        match waiting.await.unwrap() {
            Err(RequestError::Failed { reason, .. }) => assert_eq!(reason, "access denied"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d.get(1001, 3, GetWait::NonBlocking).await,
            Err(RequestError::Failed { .. })
        ));
        assert!(!d.is_closed(), "sessions stay until the destination closes");
    }
}
