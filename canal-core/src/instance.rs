//! One destination's pipeline (Canal's "instance"): resolve the start position, dump from the
//! source, convert events to entries, group them by transaction and put them into the store —
//! reconnecting with backoff on transient errors and resuming after the last transaction that
//! reached the store, so a dropped connection leaves no gap and repeats nothing. A transaction
//! larger than one store flush may be partly stored when the connection drops: the dump resumes
//! at its start and the entries already stored are recognised and skipped
//! ([`PrefixSkipper`]), so no client sees its BEGIN twice.
//!
//! A cursor recorded against another MySQL address (a master switch) is not replayed as a file
//! and offset: the start is searched by its time minus `fallback_interval` (Canal's
//! `fallbackIntervalInSeconds`), or taken from its GTID set in GTID mode.
//!
//! Definite errors (purged binlog, bad credentials, non-ROW binlog, undecodable event) stop the
//! instance with a message naming the cause; [`Instance::status`] shows it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::{Instrument, info, warn};

use crate::binlog::entry::{BuiltEntry, ConvertError, ConvertOptions, Converter};
use crate::binlog::pipeline::{
    PipelineError, PrefixSkipper, Replay, ReplayMismatch, StoredPrefix, TransactionBuffer,
    convert_with_source,
};
use crate::binlog::replica::{
    Backoff, DumpOptions, DumpStart, MariadbGtidList, MetaConnection, ReplicaConfig,
    ReplicaConnection, ReplicaError, event_type,
};
use crate::filter::NameFilter;
use crate::position::{EntryPosition, LogPosition, SourceAddress};
use crate::schema::store::{
    COMPACT_RECORDS, HistoryMeta, HistoryStore, HistoryStoreError, META_VERSION, SourceIdentity,
    StoredHistory,
};
use crate::schema::{HistoryError, HistoryOptions, SchemaHistory, SchemaPosition};
use crate::store::{EventStore, StoreConfig, StoreError, StoredEntry};

/// Where to start when no cursor exists (`canal.instance.master.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartConfig {
    /// Binlog file (`master.journal.name`).
    pub journal: Option<String>,
    /// Offset in it (`master.position`).
    pub position: Option<u64>,
    /// Time in ms (`master.timestamp`): the last transaction boundary before it.
    pub timestamp_ms: Option<i64>,
    /// GTID set (`master.gtid`): MySQL `uuid:1-5` or MariaDB `d-s-n` (GTID mode).
    pub gtid: Option<String>,
}

/// Everything an instance needs.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    /// Destination name.
    pub destination: String,
    /// The source and the replication account.
    pub source: ReplicaConfig,
    /// Start position without a cursor.
    pub start: StartConfig,
    /// Dump by GTID and fill GTIDs into headers (`canal.instance.gtidon`).
    pub gtid_mode: bool,
    /// Filters and decoding options.
    pub convert: ConvertOptions,
    /// Store settings.
    pub store: StoreConfig,
    /// Transaction buffer size (`canal.instance.transaction.size`).
    pub transaction_size: usize,
    /// Where the schema history is kept (`None`: in memory only).
    pub data_dir: Option<PathBuf>,
    /// Reconnect backoff: first and largest delay.
    pub backoff: (Duration, Duration),
    /// Allowed `binlog_format` values.
    pub allowed_formats: Vec<String>,
    /// Allowed `binlog_row_image` values.
    pub allowed_images: Vec<String>,
    /// How far before a cursor's time the start is searched when the cursor was recorded against
    /// another source address (`canal.instance.fallbackIntervalInSeconds`, 60 s).
    pub fallback_interval: Duration,
    /// Asked before every connection to the source (the first and each reconnect): while it
    /// says no, the instance waits ([`InstanceState::Gated`]) instead of connecting. A server
    /// passes its lease on the running node: a deposed owner woken from a freeze must not
    /// open a binlog dump, which (same `slave_id`) would end the new owner's.
    pub connect_gate: Option<ConnectGate>,
}

/// "May connect to the source now" (see [`InstanceConfig::connect_gate`]).
#[derive(Clone)]
pub struct ConnectGate(Arc<dyn Fn() -> bool + Send + Sync>);

impl ConnectGate {
    /// A gate that asks `open` each time.
    pub fn new(open: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(open))
    }

    /// Whether connecting is allowed now.
    pub fn is_open(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for ConnectGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConnectGate").field(&self.is_open()).finish()
    }
}

impl InstanceConfig {
    /// Canal's defaults for `destination` reading `source`.
    pub fn new(destination: impl Into<String>, source: ReplicaConfig) -> Self {
        Self {
            destination: destination.into(),
            source,
            start: StartConfig::default(),
            gtid_mode: false,
            convert: ConvertOptions::default(),
            store: StoreConfig::default(),
            transaction_size: 1024,
            data_dir: None,
            backoff: (Duration::from_secs(1), Duration::from_secs(20)),
            allowed_formats: vec!["ROW".into()],
            allowed_images: vec!["FULL".into(), "MINIMAL".into(), "NOBLOB".into()],
            fallback_interval: Duration::from_secs(60),
            connect_gate: None,
        }
    }
}

/// What the instance is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Connecting or resolving the start position.
    Starting,
    /// Dumping.
    Running,
    /// Waiting to reconnect after a transient error.
    Reconnecting {
        /// The error.
        error: String,
        /// Attempts so far.
        attempt: u32,
    },
    /// Not connecting: the [`InstanceConfig::connect_gate`] is closed (a server whose lease on
    /// the running node lapsed, until it is confirmed again or the instance is stopped).
    Gated,
    /// Stopped by a definite error.
    Failed {
        /// The error.
        error: String,
    },
    /// Stopped on request.
    Stopped,
}

/// Observable progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceStatus {
    /// State.
    pub state: InstanceState,
    /// Where the dump started: the position resolved from the cursor (or a search by its
    /// time), or from the configured start.
    pub start: Option<EntryPosition>,
    /// Where a reconnect resumes: the start, then the position after the last transaction put
    /// into the store.
    pub resume: Option<EntryPosition>,
    /// Time (ms) of the last event read.
    pub last_event_ms: Option<i64>,
    /// Rows put into the store.
    pub rows: u64,
    /// Entries put into the store.
    pub entries: u64,
    /// Connection id of the current dump (what `KILL` takes).
    pub dump_connection_id: Option<u32>,
    /// Connection id of the current meta connection (table definitions, positions).
    pub meta_connection_id: Option<u32>,
    /// Entries read again after reconnects inside partly stored transactions and skipped (they
    /// were in the store already).
    pub replay_skipped: u64,
    /// Table definitions of the schema history that the binlog's FULL metadata overrode
    /// ([`crate::binlog::entry::ConvertStats::schema_corrections`]), since the instance started.
    pub schema_corrections: u64,
}

/// Why the instance stopped for good.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// The source failed (purged position, credentials, settings, network).
    #[error(transparent)]
    Source(#[from] ReplicaError),
    /// An event could not be converted.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The schema history could not be read or written.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The source could not describe a table its rows need.
    #[error("cannot read the definition of {table} from the source: {source}")]
    TableFetch {
        /// The table.
        table: crate::schema::TableName,
        /// What the meta connection said.
        #[source]
        source: ReplicaError,
    },
    /// A configured start GTID is malformed.
    #[error("invalid start GTID {0:?}")]
    BadGtid(String),
    /// The shared schema history could not be written (or this process no longer owns it).
    #[error(transparent)]
    HistoryStore(#[from] HistoryStoreError),
    /// The store was closed under the instance.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// After a reconnect, the source did not send again the entries of a partly stored
    /// transaction: its binlog changed under the same address.
    #[error(transparent)]
    Replay(#[from] ReplayMismatch),
    /// The cursor was recorded against another source and has no time to search by.
    #[error(
        "the cursor was recorded against {recorded}, the source is now {configured}, and it has no \
         timestamp to search the new source's binlog by (set a GTID start with gtid_mode, or \
         remove the cursor and set master.journal_name/position or master.timestamp)"
    )]
    SwitchedWithoutTime {
        /// The cursor's source.
        recorded: SourceAddress,
        /// The configured source.
        configured: SourceAddress,
    },
}

impl InstanceError {
    fn is_transient(&self) -> bool {
        match self {
            InstanceError::Source(e) | InstanceError::TableFetch { source: e, .. } => {
                e.is_transient()
            }
            // Retried: the change stays pending and is written before anything after it is
            // stored. Fenced and Corrupt are definite (not the owner any more; needs an operator).
            InstanceError::HistoryStore(HistoryStoreError::Unavailable { .. }) => true,
            // The previous instance of this destination in this process is still stopping (or
            // another process has the data dir): retried with backoff, not a definite stop.
            InstanceError::History(HistoryError::Locked { .. }) => true,
            InstanceError::Convert(ConvertError::History(_)) => false,
            _ => false,
        }
    }
}

impl From<PipelineError> for InstanceError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Convert(e) => InstanceError::Convert(e),
            PipelineError::TableFetch { table, source } => {
                InstanceError::TableFetch { table, source }
            }
        }
    }
}

/// A running instance.
#[derive(Debug)]
pub struct Instance {
    store: Arc<EventStore>,
    status: watch::Receiver<InstanceStatus>,
    stop: watch::Sender<bool>,
    filter: Arc<Mutex<Option<NameFilter>>>,
    /// Resolves when the pipeline thread has finished.
    done: Option<oneshot::Receiver<()>>,
    source: SourceAddress,
    floor: watch::Sender<Option<LogPosition>>,
}

/// The destination's schema history as shared between the servers that may run it (see
/// [`crate::schema::store`]): the store of the current owner and what it held on activation.
#[derive(Debug)]
pub struct SharedHistory {
    /// Where changes are written (fenced by the owner).
    pub store: Arc<dyn HistoryStore>,
    /// The history read from it on activation, before the instance starts; `None` makes the
    /// instance read it (a restart within the same activation).
    pub loaded: Option<StoredHistory>,
}

/// Where the next dump starts.
#[derive(Clone, Debug)]
enum Resume {
    /// Dump from this file and offset.
    FilePos(String, u64),
    /// MariaDB GTID position (after these).
    Maria(MariadbGtidList),
    /// MySQL executed set.
    Mysql(String),
}

impl Instance {
    /// Starts the pipeline. `cursor` is the minimum client cursor, if any (docs/protocol.md#cursors): parsing resumes
    /// at its event, so the client may see that boundary again (at-least-once).
    ///
    /// The pipeline runs on a thread of its own (`canal-<destination>`, with a single-threaded
    /// runtime), as Java Canal's parser thread: every entry is allocated on that one thread, so
    /// the allocator's per-thread arenas do not each grow to the store's size (with the pipeline
    /// task migrating between two runtime workers, the server's peak RSS was twice its heap), and
    /// a busy destination never delays another's pipeline or the client sessions.
    pub fn start(config: InstanceConfig, cursor: Option<LogPosition>) -> Self {
        Self::start_with_history(config, cursor, None)
    }

    /// [`Instance::start`] with the destination's shared schema history, loaded by the caller
    /// before anything is decoded. The local data-dir history becomes a cache of it; every
    /// change is written to `shared.store` before the entries after it reach the event store.
    /// On its first session the instance checks that the history covers the start position on
    /// this source, and otherwise takes the snapshot path (logged).
    pub fn start_with_history(
        config: InstanceConfig,
        cursor: Option<LogPosition>,
        shared: Option<SharedHistory>,
    ) -> Self {
        let store = Arc::new(EventStore::new(config.store.clone()));
        let initial = InstanceStatus {
            state: InstanceState::Starting,
            start: None,
            resume: None,
            last_event_ms: None,
            rows: 0,
            entries: 0,
            dump_connection_id: None,
            meta_connection_id: None,
            replay_skipped: 0,
            schema_corrections: 0,
        };
        let (status_tx, status) = watch::channel(initial);
        let (stop, stop_rx) = watch::channel(false);
        let filter = Arc::new(Mutex::new(None));
        let (floor, floor_rx) = watch::channel(None);
        let source = SourceAddress::new(config.source.host.clone(), config.source.port);
        let span = tracing::info_span!("instance", destination = %config.destination);
        let runner = Runner {
            cfg: config,
            store: store.clone(),
            status: status_tx,
            stop: stop_rx,
            filter: filter.clone(),
            history: None,
            shared: shared.map(|s| Shared {
                store: s.store,
                meta: None,
                loaded: s.loaded,
                opened: false,
                meta_dirty: false,
                checked: false,
            }),
            floor: floor_rx,
            floors: std::collections::VecDeque::new(),
            from_cursor: cursor.is_some(),
            cursor,
            stored: StoredPrefix::default(),
        };
        let (done_tx, done) = oneshot::channel();
        let name = format!("canal-{}", runner.cfg.destination);
        // The runner goes through a slot so that it can report a thread that did not start.
        let slot = Arc::new(Mutex::new(Some(runner)));
        let theirs = Arc::clone(&slot);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let runner = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(runner) = runner {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(runner.run().instrument(span)),
                    Err(e) => runner.fail(format!("cannot start the pipeline's runtime: {e}")),
                }
            }
            let _ = done_tx.send(());
        });
        if let Err(e) = spawned
            && let Some(runner) = slot.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            runner.fail(format!("cannot start the pipeline thread: {e}"));
        }
        Self { store, status, stop, filter, done: Some(done), source, floor }
    }

    /// The oldest position a client may still rewind to (the minimum acked cursor): schema
    /// history records before it are compacted into one snapshot once there are enough of them.
    pub fn set_history_floor(&self, min_cursor: Option<LogPosition>) {
        self.floor.send_replace(min_cursor);
    }

    /// The store entries go to.
    pub fn store(&self) -> &Arc<EventStore> {
        &self.store
    }

    /// The MySQL source (for cursor identities).
    pub fn source(&self) -> &SourceAddress {
        &self.source
    }

    /// Current status.
    pub fn status(&self) -> InstanceStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch_status(&self) -> watch::Receiver<InstanceStatus> {
        self.status.clone()
    }

    /// Replaces the table white list from the next event on (a client's subscription filter).
    pub fn set_filter(&self, filter: NameFilter) {
        *self.filter.lock().unwrap_or_else(|p| p.into_inner()) = Some(filter);
    }

    /// Stops the pipeline and closes the store (pending GETs fail; held entries are dropped: a
    /// restart re-reads from the cursors).
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        self.store.close();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.store.close();
    }
}

struct Runner {
    cfg: InstanceConfig,
    store: Arc<EventStore>,
    status: watch::Sender<InstanceStatus>,
    stop: watch::Receiver<bool>,
    filter: Arc<Mutex<Option<NameFilter>>>,
    history: Option<SchemaHistory>,
    shared: Option<Shared>,
    floor: watch::Receiver<Option<LogPosition>>,
    /// Minimum cursors seen and when, until they are old enough to compact below.
    floors: std::collections::VecDeque<(std::time::Instant, SchemaPosition)>,
    /// The first session starts from a client cursor (a position a previous owner delivered).
    from_cursor: bool,
    /// The minimum client cursor, until the first session has resolved it into a start.
    cursor: Option<LogPosition>,
    /// Entries of the open transaction already in the store (see [`PrefixSkipper`]).
    stored: StoredPrefix,
}

/// The runner's side of a [`SharedHistory`].
struct Shared {
    store: Arc<dyn HistoryStore>,
    meta: Option<HistoryMeta>,
    /// The history loaded on activation, until the local history is opened with it.
    loaded: Option<StoredHistory>,
    /// The local history was opened with the shared one.
    opened: bool,
    meta_dirty: bool,
    /// The coverage was checked against the first session's start.
    checked: bool,
}

/// Why one dump session ended.
enum SessionEnd {
    Stopped,
    Failed(InstanceError),
}

impl Runner {
    /// Ends for good: the status says why.
    fn fail(self, error: String) {
        tracing::error!("instance stopped: {error}");
        self.status.send_modify(|s| {
            s.state = InstanceState::Failed { error };
            s.dump_connection_id = None;
            s.meta_connection_id = None;
        });
    }

    async fn run(mut self) {
        // Resolved by the first session (a timestamp search needs the source).
        let mut resume: Option<Resume> = None;
        let mut backoff = Backoff::new(self.cfg.backoff.0, self.cfg.backoff.1);
        loop {
            if *self.stop.borrow() || !self.wait_for_gate().await {
                break;
            }
            let progress = |s: &InstanceStatus| (s.resume.clone(), s.entries);
            let before = progress(&self.status.borrow());
            match self.session(&mut resume).await {
                SessionEnd::Stopped => break,
                SessionEnd::Failed(e) if e.is_transient() => {
                    if progress(&self.status.borrow()) != before {
                        backoff.reset(); // progress was made: start the backoff over
                    }
                    let delay = backoff.next_delay();
                    warn!(
                        "source connection failed, reconnecting in {delay:?} from {}: {e}",
                        describe(&resume)
                    );
                    self.status.send_modify(|s| {
                        s.state = InstanceState::Reconnecting {
                            error: e.to_string(),
                            attempt: backoff.attempts(),
                        };
                        s.dump_connection_id = None;
                        s.meta_connection_id = None;
                    });
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
                SessionEnd::Failed(e) => return self.fail(e.to_string()),
            }
        }
        self.status.send_modify(|s| {
            s.state = InstanceState::Stopped;
            s.dump_connection_id = None;
            s.meta_connection_id = None;
        });
    }

    /// Waits while the connect gate is closed; false when stopped meanwhile.
    async fn wait_for_gate(&mut self) -> bool {
        let Some(gate) = self.cfg.connect_gate.clone() else { return true };
        if gate.is_open() {
            return true;
        }
        info!("not connecting to the source: this server's lease on the running node lapsed");
        let before = self.status.borrow().state.clone();
        self.status.send_modify(|s| {
            s.state = InstanceState::Gated;
            s.dump_connection_id = None;
            s.meta_connection_id = None;
        });
        let mut stop = self.stop.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
            if gate.is_open() {
                info!("lease confirmed again: connecting to the source");
                self.status.send_modify(|s| s.state = before);
                return true;
            }
        }
    }

    /// `lower_case_table_names`: whether the source folds table names (read at session start),
    /// so the history's keys fold them too.
    async fn open_history(
        &mut self,
        lower_case_table_names: bool,
    ) -> Result<SchemaHistory, InstanceError> {
        if let Some(h) = self.history.take() {
            if h.options().lower_case_table_names != lower_case_table_names {
                warn!(
                    "the source's lower_case_table_names changed while running; the schema history keeps folding names as it did (restart the destination)"
                );
            }
            return Ok(h);
        }
        let options = HistoryOptions { lower_case_table_names, ..HistoryOptions::default() };
        let mut history = match &self.cfg.data_dir {
            Some(dir) => SchemaHistory::open_exclusive(
                dir.join(&self.cfg.destination).join("schema"),
                options,
            )?,
            None => SchemaHistory::new(options),
        };
        if let Some(shared) = &mut self.shared {
            if shared.opened {
                // Reopened after a failed session: the shared copy may lack what the file has.
                history.mark_unsynced();
            } else {
                let loaded = match shared.loaded.take() {
                    Some(l) => l,
                    None => shared.store.load().await?,
                };
                // The shared copy wins; the local file (possibly from an older run) is its cache.
                shared.meta = loaded.meta;
                history.replace_records(loaded.records)?;
                shared.opened = true;
            }
        }
        Ok(history)
    }

    /// On the first session with a shared history: does the history cover `start` on this
    /// source? If not, takes the snapshot path explicitly (logged): tables are learnt again
    /// from the source at the start position.
    async fn check_coverage(
        &mut self,
        meta: &mut MetaConnection,
        history: &mut SchemaHistory,
        start: &Resume,
    ) -> Result<(), InstanceError> {
        let from_cursor = self.from_cursor;
        let address = format!("{}:{}", self.cfg.source.host, self.cfg.source.port);
        let Some(shared) = self.shared.as_mut().filter(|s| !s.checked) else { return Ok(()) };
        let server_id = meta.server_id().await?;
        let server_uuid = server_uuid(meta).await?;
        let source = SourceIdentity { address, server_id, server_uuid };
        // GTID starts have no file position here; the range check needs one.
        let at = match start {
            Resume::FilePos(f, p) => Some(SchemaPosition::new(f.clone(), *p)),
            _ => None,
        };
        let fresh = |at: &Option<SchemaPosition>| HistoryMeta {
            v: META_VERSION,
            source: source.clone(),
            from: at.clone().unwrap_or_else(|| SchemaPosition::new("", 0)),
            to: at.clone().unwrap_or_else(|| SchemaPosition::new("", 0)),
        };
        match &mut shared.meta {
            None => {
                info!(records = history.records().len(), "schema history: starts here");
                shared.meta = Some(fresh(&at));
                shared.meta_dirty = true;
            }
            Some(m) if !m.source.same_source(&source) => {
                warn!(
                    stored = ?m.source,
                    current = ?source,
                    "schema history belongs to another source: taking the snapshot path (tables are read again from the source)"
                );
                history.clear()?;
                shared.meta = Some(fresh(&at));
                shared.meta_dirty = true;
            }
            Some(m) => match &at {
                Some(p) if *p < m.from => {
                    warn!(
                        start = %p, from = %m.from,
                        "resuming before the schema history's start: tables are fetched at the resume position, and refused where the history has a later DDL of them"
                    );
                    m.from = p.clone();
                    shared.meta_dirty = true;
                }
                Some(p) if *p > m.to && !from_cursor => {
                    warn!(
                        start = %p, to = %m.to,
                        "start position is after what the schema history followed (a gap): taking the snapshot path"
                    );
                    history.clear()?;
                    shared.meta = Some(fresh(&at));
                    shared.meta_dirty = true;
                }
                _ => info!(
                    records = history.records().len(), from = %m.from, to = %m.to,
                    "schema history covers the start position"
                ),
            },
        }
        shared.checked = true;
        Ok(())
    }

    /// Where a client cursor says to start (docs/protocol.md#start-position): its GTID set in GTID mode; its file and
    /// offset when it was recorded against the configured source (or records no source, as older
    /// writers); otherwise (a master switch) the last transaction boundary before its time minus
    /// `fallback_interval`, found by a binlog search on the new source. `None`: the cursor names no
    /// position at all (the configured start applies).
    async fn cursor_resume(
        &self,
        c: &LogPosition,
        meta: &mut MetaConnection,
    ) -> Result<Option<Resume>, InstanceError> {
        if let Some(r) = gtid_resume(c, &self.cfg) {
            return Ok(Some(r));
        }
        let configured = SourceAddress::new(self.cfg.source.host.clone(), self.cfg.source.port);
        let switched = match &c.identity.source_address {
            Some(recorded) => !same_source(recorded, &configured).await?,
            None => false,
        };
        let time = c.position.timestamp.filter(|t| *t > 0);
        if !switched {
            if let Some(r) = file_resume(c) {
                return Ok(Some(r));
            }
            // Canal: a cursor with a time but no file searches by time − fallback as well.
            let Some(ts) = time else { return Ok(None) };
            return self.search_from(ts, meta).await.map(Some);
        }
        let recorded = c.identity.source_address.clone().unwrap_or_else(|| configured.clone());
        let Some(ts) = time else {
            return Err(InstanceError::SwitchedWithoutTime { recorded, configured });
        };
        warn!(
            "the cursor was recorded against {recorded}, the source is now {configured}: not \
             replaying its position {}:{} there, searching the binlog by time instead",
            c.position.journal_name.as_deref().unwrap_or(""),
            c.position.position.unwrap_or_default()
        );
        self.search_from(ts, meta).await.map(Some)
    }

    /// The last transaction boundary before `ts` − `fallback_interval`, logged at WARN.
    async fn search_from(
        &self,
        ts: i64,
        meta: &mut MetaConnection,
    ) -> Result<Resume, InstanceError> {
        let back = i64::try_from(self.cfg.fallback_interval.as_millis()).unwrap_or(i64::MAX);
        let target = ts.saturating_sub(back);
        let hit = meta.find_position_by_timestamp(target).await?;
        warn!(
            "resuming at {}:{} (the last transaction boundary before {target} ms = the cursor's time \
             {ts} ms − {:?}); entries after it that clients already received are sent again",
            hit.file, hit.position, self.cfg.fallback_interval
        );
        Ok(Resume::FilePos(hit.file, hit.position))
    }

    /// Resolves where to start when there is neither a cursor nor progress (docs/protocol.md#start-position).
    async fn initial_resume(&self, meta: &mut MetaConnection) -> Result<Resume, InstanceError> {
        let start = &self.cfg.start;
        if self.cfg.gtid_mode
            && let Some(g) = start.gtid.as_deref().filter(|g| !g.trim().is_empty())
        {
            return if meta.is_mariadb() {
                g.parse::<MariadbGtidList>()
                    .map(Resume::Maria)
                    .map_err(|_| InstanceError::BadGtid(g.to_owned()))
            } else {
                Ok(Resume::Mysql(g.to_owned()))
            };
        }
        if let Some(journal) = start.journal.as_deref().filter(|j| !j.is_empty()) {
            let pos = start.position.filter(|p| *p >= 4).unwrap_or(4);
            meta.check_position_available(journal, pos).await?;
            return Ok(Resume::FilePos(journal.to_owned(), pos));
        }
        if let Some(ts) = start.timestamp_ms.filter(|t| *t > 0) {
            let hit = meta.find_position_by_timestamp(ts).await?;
            return Ok(Resume::FilePos(hit.file, hit.position));
        }
        let status =
            meta.master_status().await?.ok_or_else(|| ReplicaError::UnsupportedServer {
                reason: "SHOW MASTER STATUS returned nothing (binary logging off?)".into(),
            })?;
        Ok(Resume::FilePos(status.file, status.position))
    }

    async fn session(&mut self, resume: &mut Option<Resume>) -> SessionEnd {
        match self.session_inner(resume).await {
            Ok(()) => SessionEnd::Stopped,
            Err(e) => SessionEnd::Failed(e),
        }
    }

    async fn session_inner(&mut self, resume: &mut Option<Resume>) -> Result<(), InstanceError> {
        self.status.send_modify(|s| s.state = InstanceState::Starting);
        let mut meta = MetaConnection::open(&self.cfg.source).await?;
        let formats: Vec<&str> = self.cfg.allowed_formats.iter().map(String::as_str).collect();
        let images: Vec<&str> = self.cfg.allowed_images.iter().map(String::as_str).collect();
        meta.check_binlog_settings(&formats, &images).await?;
        let start = match resume.clone() {
            Some(r) => r,
            None => {
                let from_cursor = match self.cursor.clone() {
                    Some(c) => self.cursor_resume(&c, &mut meta).await?,
                    None => None,
                };
                let r = match from_cursor {
                    Some(r) => r,
                    None => self.initial_resume(&mut meta).await?,
                };
                self.cursor = None;
                *resume = Some(r.clone());
                // Published before anything is stored: the server records it as the cursor of
                // clients that subscribed before the start was known.
                let pos = resume_position(resume);
                self.status.send_modify(|s| {
                    s.start = pos.clone();
                    s.resume = pos;
                });
                r
            }
        };
        if let Resume::FilePos(file, pos) = &start {
            meta.check_position_available(file, *pos).await?;
        }
        let dump_start = match &start {
            Resume::FilePos(file, pos) => DumpStart::FilePos { file: file.clone(), position: *pos },
            Resume::Maria(list) => DumpStart::MariadbGtid(list.clone()),
            Resume::Mysql(set) => {
                DumpStart::MysqlGtid(set.parse().map_err(|_| InstanceError::BadGtid(set.clone()))?)
            }
        };
        let journal = match &start {
            Resume::FilePos(file, _) => file.clone(),
            _ => String::new(),
        };
        // Table names are keys of the history: fold them as the source does (1 and 2 compare
        // names in lower case).
        let lower_case_table_names = meta.lower_case_table_names().await? != 0;
        let mut history = self.open_history(lower_case_table_names).await?;
        let checked = self.check_coverage(&mut meta, &mut history, &start).await;
        let synced = match checked {
            Ok(()) => self.sync_history(&mut history, None).await,
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            self.history = Some(history);
            return Err(e);
        }
        let mut opts = self.cfg.convert.clone();
        opts.gtid_mode = self.cfg.gtid_mode;
        // MySQL 8.0.19 stopped printing integer display widths; MariaDB never did.
        opts.implicit_display_width = meta.is_mariadb() || meta.version() < (8, 0, 19);
        // A partly stored transaction is read again with the filter it was converted with: a new
        // subscription filter applies from the next transaction on (see the event loop).
        let mut skipper =
            (!self.stored.is_empty()).then(|| PrefixSkipper::new(self.stored.clone()));
        if skipper.is_none()
            && let Some(f) = self.filter.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            self.cfg.convert.filter = f.clone();
            opts.filter = f;
        }
        let mut converter = Converter::new(opts, Some(history), &journal);
        let corrections_before = self.status.borrow().schema_corrections;
        match &start {
            Resume::Maria(list) => converter.set_gtid_set(list.to_string()),
            Resume::Mysql(set) => converter.set_gtid_set(set.clone()),
            Resume::FilePos(..) => {}
        }
        let conn = ReplicaConnection::connect(&self.cfg.source).await?;
        let mut stream = conn.dump(dump_start, DumpOptions::default()).await?;
        let conn_id = stream.info().connection_id;
        match &skipper {
            Some(_) => info!(
                "dumping from {} (connection {conn_id}); the next transaction's first {} entries \
                 are already stored and will be skipped",
                describe(resume),
                self.stored.entries()
            ),
            None => info!("dumping from {} (connection {conn_id})", describe(resume)),
        }
        self.status.send_modify(|s| {
            s.state = InstanceState::Running;
            s.dump_connection_id = Some(conn_id);
            s.meta_connection_id = Some(meta.connection_id());
        });
        // A flush is at most an eighth of the store's budget: a full store takes the next flush
        // as soon as an eighth of it is acked, and one transaction's flush never needs all of it.
        let flush_bytes = self.store.config().memory_budget / 8;
        let mut tbuf = TransactionBuffer::new(self.cfg.transaction_size, flush_bytes);
        // A compressed transaction is one event: its entries are built a flush at a time, so
        // that one event never holds more than the buffer would flush (docs/compatibility.md).
        converter.set_payload_chunk(self.cfg.transaction_size, flush_bytes);
        let mut entries: Vec<BuiltEntry> = Vec::new();
        let mut stop = self.stop.clone();
        let result = loop {
            let next = tokio::select! {
                ev = stream.next_event() => ev,
                _ = stop.wait_for(|s| *s) => break Ok(()),
            };
            let raw = match next {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    break Err(InstanceError::Source(ReplicaError::Io {
                        op: "binlog dump",
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the server ended the dump",
                        ),
                    }));
                }
                Err(e) => break Err(e.into()),
            };
            if raw.header.event_type == event_type::HEARTBEAT
                || raw.header.event_type == event_type::HEARTBEAT_V2
            {
                continue;
            }
            // Filter changes take effect between transactions, so that a transaction read again
            // after a reconnect gives the same entries as the first time.
            if skipper.is_none()
                && !converter.in_transaction()
                && let Some(f) = self.filter.lock().unwrap_or_else(|p| p.into_inner()).take()
            {
                self.cfg.convert.filter = f.clone();
                converter.set_filter(f);
            }
            entries.clear();
            if let Err(e) =
                convert_with_source(&mut converter, Some(&mut meta), &raw.bytes, &mut entries).await
            {
                break Err(e.into());
            }
            // A table fetch may have replaced a killed or broken meta connection.
            let meta_id = meta.connection_id();
            let corrections = corrections_before + converter.stats().schema_corrections;
            let st = self.status.borrow();
            let changed =
                st.meta_connection_id != Some(meta_id) || st.schema_corrections != corrections;
            drop(st);
            if changed {
                self.status.send_modify(|s| {
                    s.meta_connection_id = Some(meta_id);
                    s.schema_corrections = corrections;
                });
            }
            // The history changes of this event are shared before its entries are stored.
            let at = SchemaPosition::new(converter.journal(), u64::from(raw.header.log_pos));
            if let Some(h) = converter.history_mut()
                && let Err(e) = self.maintain_history(h, at.clone()).await
            {
                break Err(e);
            }
            let ts = i64::from(raw.header.timestamp) * 1000;
            if ts > 0 {
                // Watchers wake only when the second changes, not for every event: a wake-up is
                // a hand-over to another thread, per event it cost the decoding thread a twentieth
                // of its time.
                self.status.send_if_modified(|s| {
                    let changed = s.last_event_ms != Some(ts);
                    s.last_event_ms = Some(ts);
                    changed
                });
            }
            let event_end = u64::from(raw.header.log_pos);
            let mut outcome: Option<Result<(), InstanceError>> = None;
            loop {
                for e in entries.drain(..) {
                    if let Some(s) = skipper.as_mut() {
                        match s.check(&e) {
                            Ok(Replay::Skip) => {
                                self.status.send_modify(|st| st.replay_skipped += 1);
                                if s.is_done() {
                                    info!(
                                        "skipped the {} entries of the open transaction already stored",
                                        s.skipped()
                                    );
                                    skipper = None;
                                }
                                continue;
                            }
                            Ok(Replay::Deliver) => {}
                            Err(m) => {
                                outcome = Some(Err(m.into()));
                                break;
                            }
                        }
                    }
                    let ready = tbuf.push(e);
                    if ready.is_empty() {
                        continue;
                    }
                    match self.put(&ready, &mut stop).await {
                        Ok(()) => {}
                        Err(None) => {
                            outcome = Some(Ok(()));
                            break;
                        }
                        Err(Some(e)) => {
                            outcome = Some(Err(e));
                            break;
                        }
                    }
                    // After a flush that ends a transaction (or a DDL), a reconnect resumes right
                    // after this event; after one that leaves it open, the stored part is recorded
                    // so that a reconnect skips it.
                    let last = &ready[ready.len() - 1];
                    if last.closes {
                        *resume = Some(next_resume(&converter, &start, last, event_end));
                        let pos = resume_position(resume);
                        self.status.send_modify(|s| s.resume = pos);
                        // While the skipper waits for the stored part, what is stored before it
                        // (an empty transaction the buffer let through) moves the resume point but
                        // leaves the stored part as it is.
                        if skipper.is_none() {
                            self.stored.clear();
                        }
                    } else if skipper.is_none() {
                        self.stored.record(&ready);
                    } else {
                        // Before the stored part, only whole (empty) transactions can be stored:
                        // a flush that leaves one open there would sit between the resume point and
                        // the stored part, which the first session never produced.
                        let first = ready[0].position.clone();
                        outcome = Some(Err(ReplayMismatch::Missed {
                            expected: format!("{} stored entries", self.stored.entries()),
                            found: format!(
                                "an open flush at {}:{}",
                                first.journal_name.unwrap_or_default(),
                                first.position.unwrap_or_default()
                            ),
                        }
                        .into()));
                        break;
                    }
                }
                if outcome.is_some() || !converter.has_pending() {
                    break;
                }
                // The next piece of a compressed transaction (its tables were fetched before its
                // first piece).
                entries.clear();
                if let Err(e) = converter.convert_pending(&mut entries) {
                    outcome = Some(Err(PipelineError::from(e).into()));
                    break;
                }
                // Its history changes (binlog tie-break corrections) are shared before its
                // entries are stored.
                if let Some(h) = converter.history_mut()
                    && let Err(e) = self.maintain_history(h, at.clone()).await
                {
                    outcome = Some(Err(e));
                    break;
                }
            }
            if let Some(outcome) = outcome {
                break outcome;
            }
        };
        self.history = converter.into_history();
        stream.close().await;
        let _ = meta.close().await;
        result
    }

    /// Writes what the shared history lacks (records, coverage up to `at`).
    async fn sync_history(
        &mut self,
        history: &mut SchemaHistory,
        at: Option<SchemaPosition>,
    ) -> Result<(), InstanceError> {
        let Some(shared) = self.shared.as_mut() else { return Ok(()) };
        let Some(meta) = shared.meta.as_mut() else { return Ok(()) };
        let pending = history.pending_sync();
        if pending.is_none() && !shared.meta_dirty {
            return Ok(());
        }
        if let Some(at) = at.filter(|at| *at > meta.to) {
            meta.to = at;
        }
        shared.store.write(meta, pending).await?;
        history.mark_synced();
        shared.meta_dirty = false;
        Ok(())
    }

    /// After each event: compacts below the client cursors when enough records are there, and
    /// shares what changed.
    async fn maintain_history(
        &mut self,
        history: &mut SchemaHistory,
        at: SchemaPosition,
    ) -> Result<(), InstanceError> {
        if self.floor.has_changed().unwrap_or(false) {
            let floor = self.floor.borrow_and_update().clone();
            if let Some(f) = floor.as_ref().and_then(|c| SchemaPosition::from_entry(&c.position)) {
                self.floors.push_back((std::time::Instant::now(), f));
            }
        }
        // A client's cursor reaches the coordinator within its flush period (1 s by default);
        // compacting only below cursors known for FLOOR_SETTLE keeps a failover from resuming at
        // a persisted cursor older than the compacted range.
        let mut settled = None;
        while self.floors.front().is_some_and(|(t, _)| t.elapsed() >= FLOOR_SETTLE) {
            settled = self.floors.pop_front().map(|(_, f)| f);
        }
        if let Some(floor) = settled
            && history.compact_below(&floor, COMPACT_RECORDS)?
            && let Some(m) = self.shared.as_mut().and_then(|s| s.meta.as_mut())
            && floor > m.from
        {
            m.from = floor;
            if let Some(s) = self.shared.as_mut() {
                s.meta_dirty = true;
            }
        }
        self.sync_history(history, Some(at)).await
    }

    /// Puts one flush into the store; `Err(None)` when stopped while waiting.
    async fn put(
        &self,
        ready: &[BuiltEntry],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Option<InstanceError>> {
        let rows: u64 = ready.iter().map(|e| e.rows as u64).sum();
        let batch: Vec<StoredEntry> = ready
            .iter()
            .map(|e| StoredEntry {
                bytes: e.bytes.clone(),
                position: e.position.clone(),
                kind: e.kind,
            })
            .collect();
        let n = batch.len() as u64;
        tokio::select! {
            r = self.store.put(batch) => match r {
                Ok(()) => {}
                Err(StoreError::Closed) => return Err(None),
                Err(e) => return Err(Some(e.into())),
            },
            _ = stop.wait_for(|s| *s) => return Err(None),
        }
        self.status.send_modify(|s| {
            s.rows += rows;
            s.entries += n;
        });
        Ok(())
    }
}

/// How long a minimum cursor must have been known before the history is compacted below it.
const FLOOR_SETTLE: Duration = Duration::from_secs(10);

/// `@@server_uuid`, absent on MariaDB.
async fn server_uuid(meta: &mut MetaConnection) -> Result<Option<String>, InstanceError> {
    use mysql_async::prelude::Queryable;
    let row: Option<(String, String)> =
        meta.conn().query_first("SHOW VARIABLES LIKE 'server_uuid'").await.map_err(|source| {
            InstanceError::Source(ReplicaError::Meta { op: "show server_uuid", source })
        })?;
    Ok(row.map(|(_, v)| v).filter(|v| !v.is_empty()))
}

/// The resume point after an entry that closed a transaction: the next event in the same file
/// (file/pos mode), or the GTID position (GTID mode).
fn next_resume(converter: &Converter, start: &Resume, last: &BuiltEntry, event_end: u64) -> Resume {
    match start {
        Resume::Maria(_) => match converter.gtid_set().parse::<MariadbGtidList>() {
            Ok(list) => Resume::Maria(list),
            Err(_) => Resume::FilePos(converter.journal().to_owned(), event_end),
        },
        Resume::Mysql(_) => Resume::Mysql(converter.gtid_set().to_owned()),
        Resume::FilePos(..) => {
            let file = last.position.journal_name.clone().unwrap_or_default();
            Resume::FilePos(file, event_end)
        }
    }
}

fn resume_position(resume: &Option<Resume>) -> Option<EntryPosition> {
    match resume {
        Some(Resume::FilePos(f, p)) => Some(EntryPosition::at(f.clone(), *p as i64)),
        Some(Resume::Maria(l)) => {
            Some(EntryPosition { gtid: Some(l.to_string()), ..Default::default() })
        }
        Some(Resume::Mysql(s)) => {
            Some(EntryPosition { gtid: Some(s.clone()), ..Default::default() })
        }
        None => None,
    }
}

fn describe(resume: &Option<Resume>) -> String {
    match resume {
        Some(Resume::FilePos(f, p)) => format!("{f}:{p}"),
        Some(Resume::Maria(l)) => format!("MariaDB GTID {l}"),
        Some(Resume::Mysql(s)) => format!("GTID {s}"),
        None => "the configured start".into(),
    }
}

/// The GTID start of a cursor in GTID mode (host-independent), if it has one.
fn gtid_resume(c: &LogPosition, cfg: &InstanceConfig) -> Option<Resume> {
    if !cfg.gtid_mode {
        return None;
    }
    let g = c.position.gtid.as_deref().filter(|g| !g.is_empty())?;
    Some(match g.parse::<MariadbGtidList>() {
        Ok(list) => Resume::Maria(list),
        Err(_) => Resume::Mysql(g.to_owned()),
    })
}

/// The cursor's file and offset, when it has them.
fn file_resume(c: &LogPosition) -> Option<Resume> {
    let file = c.position.journal_name.clone().filter(|f| !f.is_empty())?;
    let pos = c.position.position.filter(|p| *p >= 4)? as u64;
    Some(Resume::FilePos(file, pos))
}

/// Whether a cursor's source address names the configured source: the same port and the same
/// host name (ASCII case ignored), or host names that resolve to a common address (Java Canal
/// writes the IP literal or a reverse-DNS name such as `localhost`).
///
/// # Errors
/// The configured host does not resolve (transient: the connection would fail too).
async fn same_source(
    recorded: &SourceAddress,
    configured: &SourceAddress,
) -> Result<bool, InstanceError> {
    if recorded.port != configured.port {
        return Ok(false);
    }
    if recorded.address.eq_ignore_ascii_case(&configured.address) {
        return Ok(true);
    }
    let ours: Vec<std::net::IpAddr> =
        tokio::net::lookup_host((configured.address.as_str(), configured.port))
            .await
            .map_err(|source| ReplicaError::Io { op: "resolve the source address", source })?
            .map(|a| a.ip())
            .collect();
    match tokio::net::lookup_host((recorded.address.as_str(), recorded.port)).await {
        Ok(theirs) => Ok(theirs.map(|a| a.ip()).any(|ip| ours.contains(&ip))),
        Err(e) => {
            // A name that does not resolve now cannot be shown to be the source we reach; the
            // timestamp search that follows re-sends at most the fallback interval, never skips.
            warn!(
                "cannot resolve the cursor's source {recorded} ({e}): treating it as another source"
            );
            Ok(false)
        }
    }
}
