//! The event store of one destination (docs/protocol.md#store): a bounded queue of already-encoded entries with
//! one put pointer, one read (get) pointer and one ack pointer, as Java Canal's
//! `MemoryEventStoreWithBuffer`.
//!
//! Entries are kept as the protobuf bytes a client receives, so a GET copies byte slices and the
//! memory budget counts real bytes: what the store holds never exceeds `memory_budget`, except
//! a single put larger than the whole budget, which is admitted into an empty store (else it
//! could never go in). A full store makes `put` wait — back-pressure to the binlog reader; un-acked data
//! is never dropped. Batches may end inside a transaction; only the *ack position* is aligned to a
//! transaction boundary.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::position::EntryPosition;

/// How `fetch_size` of a GET is measured (`canal.instance.memory.batch.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMode {
    /// `fetch_size` is a number of entries.
    ItemSize,
    /// `fetch_size` is a number of `mem_unit`-byte units (Canal's default, with 1 KiB units).
    MemSize,
}

/// Store settings (`canal.instance.memory.*`, `canal.instance.get.ddl.isolation`).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Maximum number of entries held (`buffer.size`, default 16384).
    pub capacity: usize,
    /// Bytes per MEMSIZE unit (`buffer.memunit`, default 1024).
    pub mem_unit: usize,
    /// How GET sizes are measured.
    pub batch_mode: BatchMode,
    /// Bytes of un-acked entries after which `put` waits (default `capacity × mem_unit` = 16 MiB,
    /// as Java Canal).
    pub memory_budget: usize,
    /// Deliver each DDL entry in a batch of its own.
    pub ddl_isolation: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            capacity: 16384,
            mem_unit: 1024,
            batch_mode: BatchMode::MemSize,
            memory_budget: 16384 * 1024,
            ddl_isolation: false,
        }
    }
}

/// What an entry is, as far as the store cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// TRANSACTIONBEGIN; `gtid` tells whether the header carries a GTID (then it is not an ack
    /// boundary: a cursor there would claim the transaction as executed).
    Begin {
        /// The BEGIN carries a GTID.
        gtid: bool,
    },
    /// TRANSACTIONEND.
    End,
    /// A row change (ROWDATA with rows).
    Rows,
    /// A DDL statement (CREATE/ALTER/ERASE/RENAME/TRUNCATE/CINDEX/DINDEX).
    Ddl,
    /// Any other ROWDATA entry (QUERY, DCL, rows-query text).
    Query,
}

impl EntryKind {
    /// Whether a cursor may point at this entry (docs/protocol.md#cursors: BEGIN without GTID, END, DDL).
    pub fn is_boundary(self) -> bool {
        matches!(self, EntryKind::Begin { gtid: false } | EntryKind::End | EntryKind::Ddl)
    }
}

/// One encoded entry with what the store needs to know about it.
#[derive(Clone, Debug)]
pub struct StoredEntry {
    /// The serialized `Entry`, sent to clients as is.
    pub bytes: Bytes,
    /// Where the entry's event starts in the binlog.
    pub position: EntryPosition,
    /// Its kind.
    pub kind: EntryKind,
}

/// How long a GET may wait for its batch condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetWait {
    /// Return what is there now (Canal's `timeout = -1`).
    NonBlocking,
    /// Wait until the batch condition holds (Canal's `timeout ≤ 0`).
    Forever,
    /// Wait up to this long, then return what is there.
    Timeout(Duration),
}

impl GetWait {
    /// When a GET starting now must answer even without a full batch: `None` for
    /// [`GetWait::Forever`], and for a timeout too far away to be represented (Java's
    /// `Long.MAX_VALUE` seconds), which therefore waits like `Forever`.
    pub fn deadline(self) -> Option<tokio::time::Instant> {
        match self {
            GetWait::Timeout(d) => tokio::time::Instant::now().checked_add(d),
            _ => None,
        }
    }
}

/// When a GET answers: its [`GetWait`], and optionally a *linger* (a canal-rs extension, see
/// docs/protocol.md#get-linger): a waiting GET also answers, with the partial batch, once
/// entries are unread and none has been put for the linger. Under a steady stream puts keep
/// coming and batches fill as with Canal; when the stream stops (the binlog head is reached, a
/// single commit arrives) the client gets its rows after the linger instead of the whole wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetPolicy {
    /// How long the GET may wait for a full batch.
    pub wait: GetWait,
    /// Answer with what is unread once no put has come for this long (`None`: Canal's rule).
    pub linger: Option<Duration>,
}

impl From<GetWait> for GetPolicy {
    fn from(wait: GetWait) -> Self {
        GetPolicy { wait, linger: None }
    }
}

/// A batch handed out by `get`: a range of store sequence numbers.
#[derive(Clone, Debug)]
pub struct StoreBatch {
    /// Sequence of the first entry.
    pub first_seq: u64,
    /// Sequence of the last entry.
    pub end_seq: u64,
    /// The entries' bytes.
    pub entries: Vec<Bytes>,
    /// Position of the first entry.
    pub start: EntryPosition,
    /// Position of the last entry.
    pub end: EntryPosition,
    /// Position of the last boundary entry inside the batch: where a client's cursor moves when
    /// the batch is acked. `None` when the batch lies inside one transaction.
    pub ack: Option<EntryPosition>,
    /// Total bytes of the entries.
    pub bytes: usize,
}

/// Errors of store operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store was closed (instance stopping); nothing more is accepted or handed out.
    #[error("event store is closed")]
    Closed,
    /// An ack names a sequence that was never handed out or is already acked.
    #[error("ack of sequence {seq} outside the outstanding range {first}..={last}")]
    AckOutOfRange {
        /// The sequence acked.
        seq: u64,
        /// First un-acked sequence.
        first: u64,
        /// Last handed-out sequence (`first - 1` when none).
        last: u64,
    },
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Entries held (put but not acked).
    pub entries: usize,
    /// Bytes held.
    pub bytes: usize,
    /// Entries put but not yet handed out.
    pub unread: usize,
    /// Sequence of the next entry to put.
    pub next_seq: u64,
}

#[derive(Debug)]
struct Inner {
    /// Entries from `acked_seq + 1` on.
    queue: VecDeque<StoredEntry>,
    /// Sequence of `queue[0]`.
    base_seq: u64,
    /// Index into `queue` of the next entry to hand out.
    read_idx: usize,
    /// Bytes of all entries in `queue`.
    held_bytes: usize,
    /// Bytes of entries in `queue[..read_idx]`.
    read_bytes: usize,
    /// Puts waiting for room: no more data comes until something is acked.
    blocked_puts: usize,
    /// The fewest unread entries, or unread bytes, at which a waiting GET would answer (the
    /// smallest over the waiting GETs; `None` when none waits for a fuller batch). A put wakes
    /// the GETs only when it reaches one of them, not on every entry: each wake-up is a
    /// cross-thread hand-over that finds the batch still too small.
    wake_at: Option<(usize, usize)>,
    /// GET wake-ups by puts (for tests).
    put_wakes: u64,
    /// When the last put went in (for lingering GETs).
    last_put: Option<tokio::time::Instant>,
    closed: bool,
}

/// Counts a put as blocked while it lives (also when the put future is dropped).
struct BlockedPut<'a>(&'a EventStore);

impl Drop for BlockedPut<'_> {
    fn drop(&mut self) {
        self.0.lock().blocked_puts -= 1;
    }
}

/// The store. Cheap operations under a short lock; waiting happens outside it.
#[derive(Debug)]
pub struct EventStore {
    config: StoreConfig,
    inner: Mutex<Inner>,
    /// Signalled when entries are put (or on close).
    data: Notify,
    /// Signalled when space is freed (or on close).
    space: Notify,
}

impl EventStore {
    /// An empty store; sequences start at 1.
    pub fn new(config: StoreConfig) -> Self {
        let config = StoreConfig {
            capacity: config.capacity.max(1),
            mem_unit: config.mem_unit.max(1),
            memory_budget: config.memory_budget.max(1),
            ..config
        };
        Self {
            config,
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                base_seq: 1,
                read_idx: 0,
                held_bytes: 0,
                blocked_puts: 0,
                wake_at: None,
                put_wakes: 0,
                last_put: None,
                read_bytes: 0,
                closed: false,
            }),
            data: Notify::new(),
            space: Notify::new(),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-updated in a way that
        // matters more than stopping; keep serving rather than poisoning every later call.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_room(&self, inner: &Inner, n: usize, bytes: usize) -> bool {
        // Stricter than Java (which checks the bound before adding, so that one put overshoots
        // it): the put must fit, so the budget bounds memory. An empty store always accepts, so
        // a put larger than the whole budget cannot deadlock the pipeline.
        inner.queue.is_empty()
            || (inner.queue.len() + n <= self.config.capacity
                && inner.held_bytes + bytes <= self.config.memory_budget)
    }

    /// Appends entries (one flush of the transaction buffer) atomically, waiting while the store
    /// is full.
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the store is closed before or while waiting.
    ///
    /// # Cancel safety
    /// Cancel safe: either all entries were appended or none.
    pub async fn put(&self, entries: Vec<StoredEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let bytes: usize = entries.iter().map(|e| e.bytes.len()).sum();
        let mut blocked: Option<BlockedPut<'_>> = None;
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return Err(StoreError::Closed);
                }
                if self.has_room(&inner, entries.len(), bytes) {
                    for e in entries {
                        inner.held_bytes += e.bytes.len();
                        inner.queue.push_back(e);
                    }
                    inner.last_put = Some(tokio::time::Instant::now());
                    let unread =
                        (inner.queue.len() - inner.read_idx, inner.held_bytes - inner.read_bytes);
                    let wake = inner.wake_at.is_some_and(|(n, b)| unread.0 >= n || unread.1 >= b);
                    if wake {
                        inner.wake_at = None;
                        inner.put_wakes += 1;
                    }
                    drop(inner);
                    drop(blocked);
                    if wake {
                        self.data.notify_waiters();
                    }
                    return Ok(());
                }
                if blocked.is_none() {
                    // Waiting GETs stop waiting for a fuller batch: none can come before an ack.
                    inner.blocked_puts += 1;
                    inner.wake_at = None;
                    blocked = Some(BlockedPut(self));
                    drop(inner);
                    self.data.notify_waiters();
                }
            }
            notified.await;
        }
    }

    /// Whether a batch of `fetch_size` is ready under the configured mode, or as full as it can
    /// get: while a put waits for room, nothing more arrives before an ack, so waiting longer
    /// would only stall a client that holds un-acked batches, or asks for more than the budget
    /// (Java waits there until the GET times out, or forever).
    fn batch_ready(&self, inner: &Inner, fetch_size: usize) -> bool {
        let unread = inner.queue.len() - inner.read_idx;
        if inner.blocked_puts > 0 && unread > 0 {
            return true;
        }
        match self.config.batch_mode {
            BatchMode::ItemSize => unread >= fetch_size.max(1),
            BatchMode::MemSize => {
                inner.held_bytes - inner.read_bytes
                    >= fetch_size.max(1).saturating_mul(self.config.mem_unit)
            }
        }
    }

    /// Hands out the next batch after the read pointer.
    ///
    /// Returns `Ok(None)` when nothing is available when the wait ends. `fetch_size` counts entries
    /// (ITEMSIZE) or `mem_unit` units (MEMSIZE; at least one entry is always returned).
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the store is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: the read pointer moves only when a batch is returned.
    pub async fn get(
        &self,
        fetch_size: usize,
        policy: impl Into<GetPolicy>,
    ) -> Result<Option<StoreBatch>, StoreError> {
        let policy = policy.into();
        let deadline = policy.wait.deadline();
        loop {
            self.wait_ready(fetch_size, policy, deadline).await?;
            if let Some(taken) = self.take_if_due(fetch_size, policy, deadline)? {
                return Ok(taken);
            }
        }
    }

    /// Waits until a GET of `fetch_size` with `policy` (started when `deadline` was computed by
    /// [`GetWait::deadline`]) should answer: the batch condition holds, the deadline passed, the
    /// store lingered (see [`GetPolicy`]), or the wait is [`GetWait::NonBlocking`]. Takes
    /// nothing; another reader may take the entries before [`EventStore::take_if_due`] is called.
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the store is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is taken.
    pub async fn wait_ready(
        &self,
        fetch_size: usize,
        policy: GetPolicy,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), StoreError> {
        loop {
            let notified = self.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake = {
                let mut inner = self.lock();
                if inner.closed {
                    return Err(StoreError::Closed);
                }
                if self.due(&inner, fetch_size, policy, deadline) {
                    return Ok(());
                }
                // Wake me when a put makes my batch: so many entries, or so many bytes; a
                // lingering GET on an empty store at the first put (its linger starts there).
                let mine = if policy.linger.is_some() && inner.queue.len() == inner.read_idx {
                    (1, 1)
                } else {
                    match self.config.batch_mode {
                        BatchMode::ItemSize => (fetch_size.max(1), usize::MAX),
                        BatchMode::MemSize => {
                            (usize::MAX, fetch_size.max(1).saturating_mul(self.config.mem_unit))
                        }
                    }
                };
                inner.wake_at = Some(match inner.wake_at {
                    Some((n, b)) => (n.min(mine.0), b.min(mine.1)),
                    None => mine,
                });
                // Whichever comes first: the deadline, or the end of the linger as it stands
                // (a later put moves it; the next iteration looks again).
                match (deadline, Self::linger_ends(&inner, policy.linger)) {
                    (Some(d), Some(l)) => Some(d.min(l)),
                    (d, l) => d.or(l),
                }
            };
            match wake {
                Some(at) => {
                    // Time is up: the next loop iteration answers, or waits on.
                    let _ = tokio::time::timeout_at(at, notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// When a lingering GET answers if nothing more is put: `linger` after the last put, while
    /// entries are unread; `None` without a linger or with nothing unread.
    fn linger_ends(inner: &Inner, linger: Option<Duration>) -> Option<tokio::time::Instant> {
        if inner.queue.len() == inner.read_idx {
            return None;
        }
        // Unread entries were put, so there is a last put.
        let last = inner.last_put?;
        // A linger too long to represent never ends (the deadline, if any, still does).
        last.checked_add(linger?)
    }

    /// The answer of a GET now, without waiting: `Ok(Some(batch))` (`None` inside when nothing is
    /// unread) if it should answer now (see [`EventStore::wait_ready`]), `Ok(None)` if it should
    /// keep waiting.
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the store is closed.
    pub fn take_if_due(
        &self,
        fetch_size: usize,
        policy: GetPolicy,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Option<StoreBatch>>, StoreError> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        if !self.due(&inner, fetch_size, policy, deadline) {
            return Ok(None);
        }
        Ok(Some(self.take_batch(&mut inner, fetch_size)))
    }

    fn due(
        &self,
        inner: &Inner,
        fetch_size: usize,
        policy: GetPolicy,
        deadline: Option<tokio::time::Instant>,
    ) -> bool {
        if policy.wait == GetWait::NonBlocking || self.batch_ready(inner, fetch_size) {
            return true;
        }
        // `deadline` is `None` for `Forever` (and a timeout too far to represent).
        let now = tokio::time::Instant::now();
        deadline.is_some_and(|d| now >= d)
            || Self::linger_ends(inner, policy.linger).is_some_and(|l| now >= l)
    }

    fn take_batch(&self, inner: &mut Inner, fetch_size: usize) -> Option<StoreBatch> {
        let start = inner.read_idx;
        let avail = inner.queue.len() - start;
        if avail == 0 {
            return None;
        }
        let limit_bytes = fetch_size.max(1).saturating_mul(self.config.mem_unit);
        let mut end = start; // exclusive
        let mut bytes = 0usize;
        while end < inner.queue.len() {
            let e = &inner.queue[end];
            if self.config.ddl_isolation && e.kind == EntryKind::Ddl {
                if end == start {
                    bytes += e.bytes.len();
                    end += 1;
                }
                break;
            }
            let full = match self.config.batch_mode {
                BatchMode::ItemSize => end - start >= fetch_size.max(1),
                // Checked before adding, as Java does: the last entry may overshoot the limit.
                BatchMode::MemSize => end > start && bytes > limit_bytes,
            };
            if full {
                break;
            }
            bytes += e.bytes.len();
            end += 1;
        }
        let slice: Vec<&StoredEntry> = inner.queue.range(start..end).collect();
        let ack = slice.iter().rev().find(|e| e.kind.is_boundary()).map(|e| e.position.clone());
        let batch = StoreBatch {
            first_seq: inner.base_seq + start as u64,
            end_seq: inner.base_seq + end as u64 - 1,
            entries: slice.iter().map(|e| e.bytes.clone()).collect(),
            start: slice[0].position.clone(),
            end: slice[slice.len() - 1].position.clone(),
            ack,
            bytes,
        };
        inner.read_idx = end;
        inner.read_bytes += bytes;
        Some(batch)
    }

    /// Frees every entry up to and including `end_seq` (a batch's end), waking blocked puts.
    ///
    /// # Errors
    /// [`StoreError::AckOutOfRange`] when `end_seq` was not handed out or is already acked.
    pub fn ack(&self, end_seq: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let last = inner.base_seq + inner.read_idx as u64 - 1;
        if end_seq < inner.base_seq || end_seq > last {
            return Err(StoreError::AckOutOfRange { seq: end_seq, first: inner.base_seq, last });
        }
        let n = (end_seq - inner.base_seq + 1) as usize;
        let mut freed = 0;
        for e in inner.queue.drain(..n) {
            freed += e.bytes.len();
        }
        inner.base_seq = end_seq + 1;
        inner.read_idx -= n;
        inner.held_bytes -= freed;
        inner.read_bytes -= freed;
        drop(inner);
        self.space.notify_waiters();
        Ok(())
    }

    /// Moves the read pointer back to the ack pointer: everything handed out and not acked is
    /// handed out again.
    pub fn rollback(&self) {
        let mut inner = self.lock();
        inner.read_idx = 0;
        inner.read_bytes = 0;
        inner.wake_at = None;
        drop(inner);
        self.data.notify_waiters();
    }

    /// Position of the first un-acked entry (a new subscriber's initial cursor), if any.
    pub fn first_position(&self) -> Option<EntryPosition> {
        self.lock().queue.front().map(|e| EntryPosition { included: false, ..e.position.clone() })
    }

    /// Current counters.
    pub fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            entries: inner.queue.len(),
            bytes: inner.held_bytes,
            unread: inner.queue.len() - inner.read_idx,
            next_seq: inner.base_seq + inner.queue.len() as u64,
        }
    }

    /// Closes the store: waiting puts and gets return [`StoreError::Closed`]; held entries are
    /// dropped (a restarted instance re-reads from the clients' cursors).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.queue.clear();
        inner.held_bytes = 0;
        inner.read_bytes = 0;
        inner.read_idx = 0;
        inner.wake_at = None;
        drop(inner);
        self.data.notify_waiters();
        self.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(i: i64, kind: EntryKind, size: usize) -> StoredEntry {
        StoredEntry {
            bytes: Bytes::from(vec![i as u8; size]),
            position: EntryPosition::at("bin.000001", i),
            kind,
        }
    }

    fn txn(first: i64, rows: usize, size: usize) -> Vec<StoredEntry> {
        let mut v = vec![entry(first, EntryKind::Begin { gtid: false }, size)];
        for r in 0..rows {
            v.push(entry(first + 1 + r as i64, EntryKind::Rows, size));
        }
        v.push(entry(first + 1 + rows as i64, EntryKind::End, size));
        v
    }

    fn item_store(capacity: usize) -> EventStore {
        EventStore::new(StoreConfig {
            capacity,
            batch_mode: BatchMode::ItemSize,
            memory_budget: usize::MAX,
            ..StoreConfig::default()
        })
    }

    #[tokio::test]
    async fn item_batches_and_ack_position_at_last_boundary() {
        let s = item_store(64);
        s.put(txn(100, 3, 10)).await.unwrap(); // seq 1..=5: B R R R E
        s.put(txn(200, 3, 10)).await.unwrap(); // seq 6..=10
        let b = s.get(7, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!((b.first_seq, b.end_seq, b.entries.len()), (1, 7, 7));
        // Last boundary inside seq 1..=7 is the BEGIN of the second transaction (seq 6, pos 200).
        assert_eq!(b.ack.as_ref().unwrap().position, Some(200));
        let b2 = s.get(2, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!((b2.first_seq, b2.end_seq), (8, 9));
        assert!(b2.ack.is_none(), "rows only: no boundary");
        s.ack(b.end_seq).unwrap();
        assert_eq!(s.stats().entries, 3);
        assert_eq!(s.first_position().unwrap().position, Some(202));
    }

    #[tokio::test]
    async fn gtid_begin_is_not_a_boundary() {
        let s = item_store(64);
        let mut v =
            vec![entry(1, EntryKind::Begin { gtid: true }, 1), entry(2, EntryKind::Rows, 1)];
        v.push(entry(3, EntryKind::Rows, 1));
        s.put(v).await.unwrap();
        let b = s.get(10, GetWait::NonBlocking).await.unwrap().unwrap();
        assert!(b.ack.is_none());
    }

    #[tokio::test]
    async fn rollback_rewinds_to_ack_pointer() {
        let s = item_store(64);
        s.put(txn(1, 2, 1)).await.unwrap();
        let a = s.get(2, GetWait::NonBlocking).await.unwrap().unwrap();
        let b = s.get(2, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!((a.first_seq, b.first_seq), (1, 3));
        s.ack(a.end_seq).unwrap();
        s.rollback();
        let again = s.get(10, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!((again.first_seq, again.end_seq), (3, 4));
        assert_eq!(again.entries, b.entries);
    }

    #[tokio::test]
    async fn ack_out_of_range_is_an_error() {
        let s = item_store(64);
        s.put(txn(1, 1, 1)).await.unwrap();
        assert!(matches!(s.ack(1), Err(StoreError::AckOutOfRange { .. })), "not handed out yet");
        let b = s.get(10, GetWait::NonBlocking).await.unwrap().unwrap();
        s.ack(b.end_seq).unwrap();
        assert!(matches!(s.ack(b.end_seq), Err(StoreError::AckOutOfRange { .. })), "acked twice");
    }

    #[tokio::test]
    async fn memsize_batches_count_bytes_and_overshoot_by_one() {
        let s = EventStore::new(StoreConfig { mem_unit: 100, ..StoreConfig::default() });
        s.put((0..10).map(|i| entry(i, EntryKind::Rows, 60)).collect()).await.unwrap();
        // Limit 100 bytes: entries are added while the total before adding is ≤ 100 → 2 entries
        // (0 → 60 → 120 stops).
        let b = s.get(1, GetWait::NonBlocking).await.unwrap().unwrap();
        assert_eq!(b.entries.len(), 2);
        assert_eq!(b.bytes, 120);
        // A huge entry still comes alone.
        let big = EventStore::new(StoreConfig { mem_unit: 1, ..StoreConfig::default() });
        big.put(vec![entry(1, EntryKind::Rows, 5000)]).await.unwrap();
        assert_eq!(big.get(1, GetWait::NonBlocking).await.unwrap().unwrap().entries.len(), 1);
    }

    #[tokio::test]
    async fn ddl_isolation() {
        let s = EventStore::new(StoreConfig {
            batch_mode: BatchMode::ItemSize,
            ddl_isolation: true,
            ..StoreConfig::default()
        });
        s.put(vec![entry(1, EntryKind::Rows, 1), entry(2, EntryKind::Ddl, 1)]).await.unwrap();
        s.put(vec![entry(3, EntryKind::Ddl, 1), entry(4, EntryKind::Rows, 1)]).await.unwrap();
        let lens: Vec<usize> = [
            s.get(10, GetWait::NonBlocking).await.unwrap().unwrap(),
            s.get(10, GetWait::NonBlocking).await.unwrap().unwrap(),
            s.get(10, GetWait::NonBlocking).await.unwrap().unwrap(),
            s.get(10, GetWait::NonBlocking).await.unwrap().unwrap(),
        ]
        .iter()
        .map(|b| b.entries.len())
        .collect();
        assert_eq!(lens, vec![1, 1, 1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn put_waits_for_space_and_ack_releases_it() {
        let s = Arc::new(item_store(4));
        s.put(txn(1, 2, 1)).await.unwrap(); // 4 entries: full
        let s2 = s.clone();
        let putter = tokio::spawn(async move { s2.put(txn(10, 0, 1)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!putter.is_finished(), "a full store blocks the producer");
        let b = s.get(2, GetWait::NonBlocking).await.unwrap().unwrap();
        s.ack(b.end_seq).unwrap();
        putter.await.unwrap().unwrap();
        assert_eq!(s.stats().entries, 4);
    }

    /// A waiting GET is woken when a put completes its batch (or the store fills), not by
    /// every put before that; and it answers then with everything.
    #[tokio::test]
    async fn puts_wake_a_waiting_get_only_when_its_batch_is_there() {
        for mode in [BatchMode::MemSize, BatchMode::ItemSize] {
            let s = Arc::new(EventStore::new(StoreConfig {
                mem_unit: 100,
                batch_mode: mode,
                memory_budget: 10_000,
                ..StoreConfig::default()
            }));
            // MEMSIZE: 5 units = 500 bytes; ITEMSIZE: 5 entries.
            let s2 = s.clone();
            let getter = tokio::spawn(async move { s2.get(5, GetWait::Forever).await });
            // The GET is registered once it waits (its wake threshold is set).
            while s.lock().wake_at.is_none() {
                tokio::task::yield_now().await;
            }
            for i in 0..4 {
                s.put(vec![entry(i, EntryKind::Rows, 100)]).await.unwrap();
            }
            assert_eq!(s.lock().put_wakes, 0, "{mode:?}: woken before its batch was there");
            assert!(!getter.is_finished());
            s.put(vec![entry(4, EntryKind::Rows, 100)]).await.unwrap();
            let woken = tokio::time::timeout(Duration::from_secs(10), getter).await;
            let b = woken.expect("the GET was not woken").unwrap().unwrap().unwrap();
            assert_eq!(b.entries.len(), 5, "{mode:?}");
            assert_eq!(s.lock().put_wakes, 1, "{mode:?}");
        }
        // A put that cannot fit wakes the GET too (no fuller batch can come before an ack).
        let s = Arc::new(EventStore::new(StoreConfig {
            mem_unit: 100,
            batch_mode: BatchMode::MemSize,
            memory_budget: 300,
            ..StoreConfig::default()
        }));
        s.put(vec![entry(0, EntryKind::Rows, 200)]).await.unwrap();
        let s2 = s.clone();
        let getter = tokio::spawn(async move { s2.get(50, GetWait::Forever).await });
        while s.lock().wake_at.is_none() {
            tokio::task::yield_now().await;
        }
        let s3 = s.clone();
        let putter =
            tokio::spawn(async move { s3.put(vec![entry(1, EntryKind::Rows, 200)]).await });
        let woken = tokio::time::timeout(Duration::from_secs(10), getter).await;
        let b = woken.expect("the GET was not woken").unwrap().unwrap().unwrap();
        assert_eq!(b.entries.len(), 1);
        s.ack(b.end_seq).unwrap();
        putter.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn memory_budget_blocks_put() {
        let s = Arc::new(EventStore::new(StoreConfig {
            memory_budget: 1000,
            batch_mode: BatchMode::ItemSize,
            ..StoreConfig::default()
        }));
        s.put(vec![entry(1, EntryKind::Rows, 1000)]).await.unwrap();
        let s2 = s.clone();
        let putter = tokio::spawn(async move { s2.put(vec![entry(2, EntryKind::Rows, 10)]).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!putter.is_finished());
        let b = s.get(1, GetWait::NonBlocking).await.unwrap().unwrap();
        s.ack(b.end_seq).unwrap();
        putter.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn held_bytes_never_exceed_the_budget() {
        let s = Arc::new(EventStore::new(StoreConfig {
            memory_budget: 1000,
            batch_mode: BatchMode::ItemSize,
            ..StoreConfig::default()
        }));
        s.put(vec![entry(1, EntryKind::Rows, 600)]).await.unwrap();
        // 600 + 500 would pass the budget: the put waits although the store is under it.
        let s2 = s.clone();
        let putter =
            tokio::spawn(async move { s2.put(vec![entry(2, EntryKind::Rows, 500)]).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!putter.is_finished());
        assert_eq!(s.stats().bytes, 600);
        let b = s.get(1, GetWait::NonBlocking).await.unwrap().unwrap();
        s.ack(b.end_seq).unwrap();
        putter.await.unwrap().unwrap();
        assert_eq!(s.stats().bytes, 500);
        // A put larger than the whole budget goes into an empty store only.
        let s3 = s.clone();
        let big = tokio::spawn(async move { s3.put(vec![entry(3, EntryKind::Rows, 5000)]).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!big.is_finished());
        let b = s.get(1, GetWait::NonBlocking).await.unwrap().unwrap();
        s.ack(b.end_seq).unwrap();
        big.await.unwrap().unwrap();
        assert_eq!(s.stats().bytes, 5000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_put_ends_the_wait_for_a_fuller_batch() {
        let s = Arc::new(EventStore::new(StoreConfig {
            memory_budget: 1000,
            mem_unit: 1024,
            batch_mode: BatchMode::MemSize,
            ..StoreConfig::default()
        }));
        s.put(vec![entry(1, EntryKind::Rows, 600)]).await.unwrap();
        // A batch of 2 KiB can never fill under a 1000-byte budget; without a blocked put the
        // GET waits for it.
        let s2 = s.clone();
        let getter = tokio::spawn(async move { s2.get(2, GetWait::Forever).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!getter.is_finished());
        // The producer blocks: the GET gets what there is.
        let s3 = s.clone();
        let putter =
            tokio::spawn(async move { s3.put(vec![entry(2, EntryKind::Rows, 500)]).await });
        let b = getter.await.unwrap().unwrap().unwrap();
        assert_eq!((b.first_seq, b.end_seq), (1, 1));
        // The next GET waits: nothing is unread. The ack lets the put in; the GET still waits
        // for a fuller batch until the producer blocks again.
        let s4 = s.clone();
        let second = tokio::spawn(async move { s4.get(2, GetWait::Forever).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!second.is_finished());
        s.ack(b.end_seq).unwrap();
        putter.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!second.is_finished());
        let s5 = s.clone();
        let waiting =
            tokio::spawn(async move { s5.put(vec![entry(3, EntryKind::Rows, 900)]).await });
        let b = second.await.unwrap().unwrap().unwrap();
        assert_eq!((b.first_seq, b.end_seq), (2, 2));
        // A dropped waiting put is no longer counted.
        assert_eq!(s.lock().blocked_puts, 1);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(s.lock().blocked_puts, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn blocking_and_timed_gets() {
        let s = Arc::new(item_store(64));
        let t0 = tokio::time::Instant::now();
        assert!(s.get(5, GetWait::Timeout(Duration::from_millis(300))).await.unwrap().is_none());
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        s.put(vec![entry(1, EntryKind::Rows, 1)]).await.unwrap();
        // Timed get returns what is there at the deadline.
        let b = s.get(5, GetWait::Timeout(Duration::from_millis(300))).await.unwrap().unwrap();
        assert_eq!(b.entries.len(), 1);
        // A blocking get waits for the full batch.
        let s2 = s.clone();
        let getter = tokio::spawn(async move { s2.get(2, GetWait::Forever).await });
        s.put(vec![entry(2, EntryKind::Rows, 1)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!getter.is_finished());
        s.put(vec![entry(3, EntryKind::Rows, 1)]).await.unwrap();
        let b = getter.await.unwrap().unwrap().unwrap();
        assert_eq!((b.first_seq, b.end_seq), (2, 3));
    }

    fn lingering(wait: GetWait, ms: u64) -> GetPolicy {
        GetPolicy { wait, linger: Some(Duration::from_millis(ms)) }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_get_answers_once_puts_stop() {
        let s = Arc::new(item_store(64));
        let t0 = tokio::time::Instant::now();
        // Empty store: the linger starts at the first put, not at the GET.
        let s2 = s.clone();
        let getter = tokio::spawn(async move {
            s2.get(100, lingering(GetWait::Timeout(Duration::from_secs(1)), 5)).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!getter.is_finished(), "nothing put: the linger has not started");
        // Puts every 2 ms (quicker than the 5 ms linger) keep the GET waiting for its batch.
        for i in 1..=10 {
            s.put(vec![entry(i, EntryKind::Rows, 1)]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(!getter.is_finished(), "put {i}: the stream goes on");
        }
        let b = getter.await.unwrap().unwrap().unwrap();
        assert_eq!((b.first_seq, b.end_seq), (1, 10), "everything put, short of the batch");
        // 5 ms after the last put (at 50 + 18 ms), long before the 1 s timeout.
        assert_eq!(t0.elapsed(), Duration::from_millis(50 + 18 + 5));
        // Unread entries put long ago: answered at once.
        s.put(vec![entry(11, EntryKind::Rows, 1)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t1 = tokio::time::Instant::now();
        let b = s.get(100, lingering(GetWait::Forever, 5)).await.unwrap().unwrap();
        assert_eq!((b.first_seq, t1.elapsed()), (11, Duration::ZERO));
        // A full batch does not wait for the linger; the timeout still bounds an empty store.
        s.put((12..=14).map(|i| entry(i, EntryKind::Rows, 1)).collect()).await.unwrap();
        let b = s.get(3, lingering(GetWait::Forever, 5)).await.unwrap().unwrap();
        assert_eq!((b.end_seq, t1.elapsed()), (14, Duration::ZERO));
        let r = s.get(3, lingering(GetWait::Timeout(Duration::from_millis(30)), 5)).await;
        assert!(r.unwrap().is_none());
        assert_eq!(t1.elapsed(), Duration::from_millis(30));
        // Without a linger, Canal's rule: the partial batch waits for the timeout.
        s.put(vec![entry(15, EntryKind::Rows, 1)]).await.unwrap();
        let b = s.get(3, GetWait::Timeout(Duration::from_millis(30))).await.unwrap().unwrap();
        assert_eq!((b.end_seq, t1.elapsed()), (15, Duration::from_millis(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_linger_longer_than_the_timeout_leaves_canal_rule() {
        let s = item_store(64);
        s.put(vec![entry(1, EntryKind::Rows, 1)]).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let far = GetPolicy {
            wait: GetWait::Timeout(Duration::from_millis(40)),
            linger: Some(Duration::MAX),
        };
        let b = s.get(5, far).await.unwrap().unwrap();
        assert_eq!((b.end_seq, t0.elapsed()), (1, Duration::from_millis(40)));
    }

    #[tokio::test]
    async fn close_wakes_everyone() {
        let s = Arc::new(item_store(64));
        let s2 = s.clone();
        let getter = tokio::spawn(async move { s2.get(2, GetWait::Forever).await });
        tokio::task::yield_now().await;
        s.close();
        assert_eq!(getter.await.unwrap().unwrap_err(), StoreError::Closed);
        assert_eq!(s.put(txn(1, 1, 1)).await.unwrap_err(), StoreError::Closed);
    }
}
