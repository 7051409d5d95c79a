//! `SchemaHistory`: every table definition the source had, versioned by binlog position, so that a
//! row event is decoded with the schema in force where it was written — also when the pipeline
//! resumes from a position older than later ALTERs (Java Canal's TSDB; here kept in the coordinator: docs/compatibility.md#schema-history-in-the-coordinator).
//!
//! # Model
//! The history is an ordered list of *records*, each at a [`SchemaPosition`] (the start offset of
//! the QUERY event, or the position a snapshot was taken at) plus an insertion sequence number that
//! orders records at the same position. A record is either a DDL (its SQL text and default
//! database) or a snapshot (table definitions fetched from the source with `SHOW CREATE TABLE`).
//! Each record stores the states it produced for the tables it touched; the per-table versions
//! derive from them. [`SchemaHistory::table_at`] returns the latest version at or before a
//! position.
//!
//! * **Replays are idempotent**: applying the same SQL again at a position that already has it is a
//!   no-op, so rewinding to an older position and reading forward again loses nothing.
//! * **Out-of-order records** (a DDL or snapshot at a position before later records, e.g. a refresh
//!   after a rewind) are inserted in place and the later DDL records are re-applied on top. A
//!   different SQL at a position that already has a DDL means the source diverged: the old record
//!   is replaced.
//! * **Before the first record** of a table: if that record is a snapshot, its definition is
//!   returned (the best knowledge there is — the same table Canal would fetch live); if it is a
//!   DDL (the table was created inside the history), the table did not exist.
//!
//! # Persistence
//! With [`SchemaHistory::open`], records are appended as JSON lines to `schema-history.jsonl` in the
//! data directory (one record per line, `fsync`ed by default; DDL is rare). The file is
//! self-contained — every record carries the resulting table definitions, not only SQL — so a
//! standby server can load it without re-parsing, and an upgraded parser cannot change history. On
//! open the file is replayed; a torn last line (crash during append) is cut off with a warning; a
//! bad line followed by good ones is [`HistoryError::Corrupt`]. Out-of-order inserts and
//! compaction rewrite the file atomically (temp file + rename). One process writes a directory at a
//! time.
//!
//! # Bounded memory
//! [`SchemaHistory::compact`] folds every record before a position into one snapshot record of the
//! tables that exist there (dropped tables disappear) and rewrites the file. Call it with the oldest
//! position a client may still rewind to (the minimum acked cursor); older positions then get the
//! compacted definitions. [`HistoryOptions::retain_records`] does the same automatically, keeping
//! the newest N records.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::apply::{self, ApplyError, CatalogView, Ctx};
use super::model::{SchemaPosition, TableDef, TableName, TableState, cmp_position};
use super::parser::{self, ParseError};
use super::query::{ParsedQuery, classify, classify_lenient};

/// File name of the history log inside the data directory.
pub const HISTORY_FILE: &str = "schema-history.jsonl";

/// File locked (`flock`) by the process that has the history of a data directory open.
pub const LOCK_FILE: &str = ".lock";

/// Version of the JSON-lines record format.
const FORMAT_VERSION: u32 = 1;

/// Errors of the schema history (persistence only: SQL problems are reported in outcomes).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// Reading or writing the history file failed.
    #[error("schema history i/o on `{path}`")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record in the middle of the history file is unreadable; the file needs an operator.
    #[error("schema history `{path}` is corrupt at line {line}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Another process (or another open history in this one) holds the data directory's lock.
    #[error("schema history `{path}` is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A definition fetched from the source now was to be used at a position before a DDL of
    /// the same table that the history has already seen: it would mislabel the rows in between.
    #[error(
        "cannot decode `{}`.`{}` at {position}: its definition there is unknown and the current one is newer than the DDL at {ddl} (resume from a later position or restore the schema history)",
        table.schema,
        table.table
    )]
    SnapshotBeforeDdl {
        /// The table.
        table: TableName,
        /// Where its definition was needed.
        position: SchemaPosition,
        /// The first later DDL of the table in the history.
        ddl: SchemaPosition,
    },
}

/// How a history behaves.
#[derive(Clone, Debug)]
pub struct HistoryOptions {
    /// The source runs with `lower_case_table_names` ≠ 0: schema and table names are folded to
    /// lower case on input and lookup. Column names are always case-insensitive.
    pub lower_case_table_names: bool,
    /// Keep about this many records: when the log holds twice as many, all but the newest `n` are
    /// compacted into one snapshot record automatically.
    /// `None` keeps everything until [`SchemaHistory::compact`] is called.
    pub retain_records: Option<usize>,
    /// `fsync` the file after every append (default true).
    pub sync: bool,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        Self { lower_case_table_names: false, retain_records: None, sync: true }
    }
}

/// One table of a snapshot: the database and its `SHOW CREATE TABLE` text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTable {
    /// Database of the table (SHOW CREATE TABLE prints unqualified names).
    pub schema: String,
    /// The CREATE TABLE text; absent for definitions recorded directly or by compaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddl: Option<String>,
}

/// What a history has that its shared copy (see [`crate::schema::store`]) does not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingSync<'h> {
    /// Records were added at the end: `records` go at indices `first..`.
    Append {
        /// Index of the first new record.
        first: usize,
        /// The new records.
        records: &'h [HistoryRecord],
    },
    /// Records changed in place (out-of-order insert, compaction, truncation): the whole list.
    Replace(&'h [HistoryRecord]),
}

/// What a record is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RecordBody {
    /// A QUERY event's text.
    Ddl {
        /// The event's current database.
        default_db: String,
        /// The statement text.
        sql: String,
    },
    /// Definitions fetched from the source.
    Snapshot {
        /// The tables and their DDL text.
        tables: Vec<SnapshotTable>,
    },
}

/// The new state of one table after a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableChange {
    /// Database.
    pub schema: String,
    /// Table.
    pub table: String,
    /// New state.
    #[serde(flatten)]
    pub state: TableState,
}

/// One line of the history log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// Record format version (1).
    pub v: u32,
    /// Insertion sequence number (orders records at the same position).
    pub seq: u64,
    /// Binlog file of the position.
    pub journal: String,
    /// Offset of the position.
    pub offset: u64,
    /// DDL or snapshot.
    #[serde(flatten)]
    pub body: RecordBody,
    /// Resulting table states.
    pub changes: Vec<TableChange>,
}

impl HistoryRecord {
    /// The record's position.
    pub fn position(&self) -> SchemaPosition {
        SchemaPosition::new(self.journal.clone(), self.offset)
    }

    fn key(&self) -> (SchemaPosition, u64) {
        (self.position(), self.seq)
    }

    /// Compares the record's position with `pos` without allocating.
    fn cmp_pos(&self, pos: &SchemaPosition) -> std::cmp::Ordering {
        cmp_position(&self.journal, self.offset, &pos.journal, pos.offset)
    }

    fn is_at(&self, pos: &SchemaPosition) -> bool {
        self.cmp_pos(pos).is_eq()
    }
}

/// What [`SchemaHistory::apply_ddl`] did.
#[derive(Clone, Debug)]
pub struct DdlOutcome {
    /// Canal's classification of the statement (header type, schema, table, isDdl). When the text
    /// could not be fully parsed this comes from its head (see [`classify_lenient`]).
    pub query: ParsedQuery,
    /// Tables whose state changed.
    pub changed: Vec<TableName>,
    /// Tables now [`TableState::Unknown`]: fetch `SHOW CREATE TABLE` and call
    /// [`SchemaHistory::record_snapshot`] at the same position.
    pub refresh: Vec<TableName>,
    /// Why tables became unknown (parse errors, unknown tables or columns).
    pub problems: Vec<ApplyError>,
    /// The same SQL was already recorded at this position (a replay after a rewind): nothing
    /// changed.
    pub replayed: bool,
}

/// What [`SchemaHistory::lookup`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The definition in force.
    Known(Arc<TableDef>),
    /// The table does not exist there (dropped, renamed away, or created later).
    Absent,
    /// The table exists but its shape is unknown: refresh it from the source.
    Unknown,
    /// The history has never heard of the table: fetch it from the source.
    NotTracked,
}

#[derive(Clone, Debug)]
struct Version {
    key: (SchemaPosition, u64),
    state: TableState,
    from_snapshot: bool,
}

/// A versioned store of table definitions keyed by binlog position. See the module docs.
#[derive(Debug)]
pub struct SchemaHistory {
    options: HistoryOptions,
    /// Sorted by `(position, seq)`.
    records: Vec<HistoryRecord>,
    /// Per schema, per table, sorted by key. Nested so that lookups borrow `&str` and allocate
    /// nothing on the rows-event path.
    versions: BTreeMap<String, BTreeMap<String, Vec<Version>>>,
    next_seq: u64,
    file: Option<PathBuf>,
    /// Exclusive lock on the data directory's `.lock` file, held while the history is open.
    lock: Option<File>,
    /// Records `0..synced` are in the shared copy, in this order, unless `replaced`.
    synced: usize,
    /// Records changed in place since the last sync.
    replaced: bool,
}

struct ViewAt<'h> {
    history: &'h SchemaHistory,
    key: (SchemaPosition, u64),
}

impl CatalogView for ViewAt<'_> {
    fn state(&self, name: &TableName) -> Option<TableState> {
        self.history.state_at_key(&name.schema, &name.table, &self.key)
    }

    fn tables_in(&self, schema: &str) -> Vec<TableName> {
        let Some(tables) = self.history.versions.get(schema) else { return Vec::new() };
        tables
            .keys()
            .filter(|t| {
                matches!(
                    self.history.state_at_key(schema, t, &self.key),
                    Some(TableState::Known { .. } | TableState::Unknown)
                )
            })
            .map(|t| TableName::new(schema, t.clone()))
            .collect()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io { path: path.to_owned(), source }
}

impl SchemaHistory {
    /// An empty in-memory history (nothing is persisted).
    pub fn new(options: HistoryOptions) -> Self {
        Self {
            options,
            records: Vec::new(),
            versions: BTreeMap::new(),
            next_seq: 1,
            file: None,
            lock: None,
            synced: 0,
            replaced: false,
        }
    }

    /// Opens (creating it if needed) the history persisted in `dir` and replays it.
    ///
    /// # Errors
    /// [`HistoryError::Io`] when the directory or file cannot be read or created,
    /// [`HistoryError::Corrupt`] when a record other than the last one is unreadable. A torn last
    /// line is truncated away with a warning.
    pub fn open(dir: impl AsRef<Path>, options: HistoryOptions) -> Result<Self, HistoryError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(HISTORY_FILE);
        let mut history = Self::new(options);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut records = Vec::new();
        let mut valid_len = 0usize;
        let mut bad: Option<(usize, String)> = None;
        let mut missing_newline = false;
        let mut pos = 0usize;
        let mut line_no = 0usize;
        while pos < text.len() {
            line_no += 1;
            let end = text[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i);
            let line = &text[pos..end.unwrap_or(text.len())];
            let next = end.map_or(text.len(), |e| e + 1);
            pos = next;
            if line.iter().all(u8::is_ascii_whitespace) {
                if bad.is_none() {
                    valid_len = next;
                }
                continue;
            }
            match serde_json::from_slice::<HistoryRecord>(line) {
                Ok(r) if r.v == FORMAT_VERSION => {
                    if let Some((line, reason)) = bad {
                        return Err(HistoryError::Corrupt { path, line, reason });
                    }
                    records.push(r);
                    valid_len = next;
                    // A complete last record whose newline did not make it to disk is kept; the
                    // newline is added before the next append.
                    missing_newline = end.is_none();
                }
                Ok(r) => {
                    return Err(HistoryError::Corrupt {
                        path,
                        line: line_no,
                        reason: format!("unsupported record version {}", r.v),
                    });
                }
                Err(e) => bad = bad.or(Some((line_no, e.to_string()))),
            }
        }
        if let Some((line, reason)) = bad {
            tracing::warn!(
                path = %path.display(),
                line,
                %reason,
                "schema history ends with a torn record; dropping it"
            );
            let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
            f.set_len(valid_len as u64).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
        if missing_newline {
            let mut f = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
            f.write_all(b"\n").map_err(io_err(&path))?;
            f.sync_data().map_err(io_err(&path))?;
        }
        records.sort_by_key(HistoryRecord::key);
        history.next_seq = records.iter().map(|r| r.seq + 1).max().unwrap_or(1);
        history.records = records;
        history.rebuild_versions();
        history.synced = history.records.len();
        history.file = Some(path);
        Ok(history)
    }

    /// [`Self::open`] for the one process that writes `dir`: takes an exclusive lock on its
    /// [`LOCK_FILE`] first, held until the history is dropped (the kernel releases it when the
    /// process dies, also by `kill -9`). Readers (tools) use [`Self::open`].
    ///
    /// # Errors
    /// [`HistoryError::Locked`] when another process (or another open history in this one)
    /// holds the lock; otherwise as [`Self::open`].
    pub fn open_exclusive(
        dir: impl AsRef<Path>,
        options: HistoryOptions,
    ) -> Result<Self, HistoryError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // Released by the kernel when the file is closed, also when the process is killed.
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(HistoryError::Locked { path: lock_path });
            }
            Err(e) => return Err(io_err(&lock_path)(e.into())),
        }
        let mut history = Self::open(dir, options)?;
        history.lock = Some(lock);
        Ok(history)
    }

    /// The options in use.
    pub fn options(&self) -> &HistoryOptions {
        &self.options
    }

    /// All records, ordered by position.
    pub fn records(&self) -> &[HistoryRecord] {
        &self.records
    }

    /// Position of the oldest record, if any.
    pub fn first_position(&self) -> Option<SchemaPosition> {
        self.records.first().map(HistoryRecord::position)
    }

    /// Position of the newest record, if any.
    pub fn last_position(&self) -> Option<SchemaPosition> {
        self.records.last().map(HistoryRecord::position)
    }

    fn fold<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if self.options.lower_case_table_names && s.chars().any(char::is_uppercase) {
            Cow::Owned(s.to_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    }

    fn versions_of(&self, schema: &str, table: &str) -> Option<&[Version]> {
        self.versions.get(schema)?.get(table).map(Vec::as_slice)
    }

    /// The state after the last version with `key` ≤ `key`; before the first version, a
    /// snapshot's state (the best knowledge there is) or `None`.
    fn state_at_key(
        &self,
        schema: &str,
        table: &str,
        key: &(SchemaPosition, u64),
    ) -> Option<TableState> {
        let versions = self.versions_of(schema, table)?;
        Self::pick(versions, versions.partition_point(|v| v.key <= *key))
    }

    fn pick(versions: &[Version], n: usize) -> Option<TableState> {
        match n {
            0 => versions.first().filter(|v| v.from_snapshot).map(|v| v.state.clone()),
            n => Some(versions[n - 1].state.clone()),
        }
    }

    /// What the history knows about `schema.table` for an event at `pos` (records at `pos` itself
    /// included; a row event never shares a position with a QUERY event).
    pub fn lookup(&self, schema: &str, table: &str, pos: &SchemaPosition) -> Lookup {
        let (schema, table) = (self.fold(schema), self.fold(table));
        let Some(versions) = self.versions_of(&schema, &table) else { return Lookup::NotTracked };
        // Every record at `pos` counts, whatever its sequence number.
        match Self::pick(versions, versions.partition_point(|v| v.key.0 <= *pos)) {
            Some(TableState::Known { def }) => Lookup::Known(def),
            Some(TableState::Dropped) => Lookup::Absent,
            Some(TableState::Unknown) => Lookup::Unknown,
            None => match versions.first() {
                // Before a DDL that produced a definition (CREATE, RENAME ... TO it) the table did
                // not exist. Before a DROP or an ALTER of a table the history never had, it did
                // exist, with a shape nobody recorded.
                Some(Version { state: TableState::Known { .. }, .. }) => Lookup::Absent,
                _ => Lookup::NotTracked,
            },
        }
    }

    /// The definition of `schema.table` in force at `pos`, if known.
    pub fn table_at(
        &self,
        schema: &str,
        table: &str,
        pos: &SchemaPosition,
    ) -> Option<Arc<TableDef>> {
        match self.lookup(schema, table, pos) {
            Lookup::Known(def) => Some(def),
            _ => None,
        }
    }

    /// The newest known definition of `schema.table`.
    pub fn latest(&self, schema: &str, table: &str) -> Option<Arc<TableDef>> {
        match self.versions_of(&self.fold(schema), &self.fold(table))?.last()?.state.clone() {
            TableState::Known { def } => Some(def),
            _ => None,
        }
    }

    /// Every table known at `pos`, ordered by name.
    pub fn tables_at(&self, pos: &SchemaPosition) -> Vec<Arc<TableDef>> {
        self.versions
            .values()
            .flat_map(BTreeMap::values)
            .filter_map(|v| match Self::pick(v, v.partition_point(|v| v.key.0 <= *pos)) {
                Some(TableState::Known { def }) => Some(def),
                _ => None,
            })
            .collect()
    }

    /// Applies the QUERY event `sql` found at `pos` with current database `default_db`, recording
    /// it if it changes any table. Statements that change nothing (DML, GRANT, index changes) are
    /// classified but not recorded.
    ///
    /// # Errors
    /// Only persistence errors; SQL that cannot be parsed or applied is reported in the outcome
    /// (`problems`, `refresh`) and leaves the tables involved unknown.
    pub fn apply_ddl(
        &mut self,
        pos: &SchemaPosition,
        default_db: &str,
        sql: &str,
    ) -> Result<DdlOutcome, HistoryError> {
        // Replay of a DDL recorded before (rewind): nothing to do.
        let lo = self.records.partition_point(|r| r.cmp_pos(pos).is_lt());
        let at_pos = || self.records[lo..].iter().take_while(|r| r.is_at(pos));
        if let Some(existing) = at_pos().find(|r| {
            matches!(&r.body, RecordBody::Ddl { sql: s, default_db: d } if s == sql && d == default_db)
        }) {
            return Ok(DdlOutcome {
                query: classify_lenient(sql, default_db),
                changed: existing.changes.iter().map(|c| TableName::new(c.schema.clone(), c.table.clone())).collect(),
                refresh: Vec::new(),
                problems: Vec::new(),
                replayed: true,
            });
        }
        // A different DDL at a position that already has one: the source diverged. Forget the old
        // one before computing the new one's effect.
        let is_old = |r: &HistoryRecord| r.is_at(pos) && matches!(r.body, RecordBody::Ddl { .. });
        let diverged = at_pos().any(is_old);
        if diverged {
            tracing::warn!(position = %pos, "schema history: a different DDL at a recorded position; replacing it");
            self.records.retain(|r| !is_old(r));
            self.rebuild_versions();
        }
        let seq = self.next_seq;
        let key = (pos.clone(), seq);
        let (query, applied) = self.compute(&key, default_db, sql);
        let refresh = applied
            .changes
            .iter()
            .filter(|(_, s)| matches!(s, TableState::Unknown))
            .map(|(k, _)| k.clone())
            .collect();
        let changed: Vec<TableName> = applied.changes.keys().cloned().collect();
        let outcome =
            DdlOutcome { query, changed, refresh, problems: applied.problems, replayed: false };
        if !diverged && applied.changes.is_empty() {
            return Ok(outcome);
        }
        let record = HistoryRecord {
            v: FORMAT_VERSION,
            seq,
            journal: pos.journal.clone(),
            offset: pos.offset,
            body: RecordBody::Ddl { default_db: default_db.to_owned(), sql: sql.to_owned() },
            changes: to_changes(applied.changes),
        };
        self.insert(record, diverged)?;
        Ok(outcome)
    }

    /// What the shared copy of this history lacks, if anything. Call [`Self::mark_synced`] once
    /// it is written; until then the same changes (and any later ones) stay pending.
    pub fn pending_sync(&self) -> Option<PendingSync<'_>> {
        if self.replaced {
            Some(PendingSync::Replace(&self.records))
        } else if self.synced < self.records.len() {
            Some(PendingSync::Append { first: self.synced, records: &self.records[self.synced..] })
        } else {
            None
        }
    }

    /// The shared copy may differ in any way: the next sync replaces it whole.
    pub fn mark_unsynced(&mut self) {
        self.replaced = true;
    }

    /// The shared copy now holds every record.
    pub fn mark_synced(&mut self) {
        self.synced = self.records.len();
        self.replaced = false;
    }

    /// Replaces every record with `records` (the shared copy, loaded on activation), rewriting
    /// the local file, which is a cache of it. Nothing is pending afterwards.
    ///
    /// # Errors
    /// Persistence errors.
    pub fn replace_records(&mut self, mut records: Vec<HistoryRecord>) -> Result<(), HistoryError> {
        records.sort_by_key(HistoryRecord::key);
        self.next_seq = records.iter().map(|r| r.seq + 1).max().unwrap_or(1);
        self.records = records;
        self.rebuild_versions();
        self.rewrite()?;
        self.mark_synced();
        Ok(())
    }

    /// Forgets every record (the history belongs to another source, or has a gap): tables are
    /// learnt again from the source. The shared copy is replaced at the next sync.
    ///
    /// # Errors
    /// Persistence errors.
    pub fn clear(&mut self) -> Result<(), HistoryError> {
        self.records.clear();
        self.versions.clear();
        self.rewrite()
    }

    /// The first DDL record after `pos` that changed `table`, if any.
    pub fn next_ddl_of(&self, table: &TableName, pos: &SchemaPosition) -> Option<SchemaPosition> {
        let (schema, name) = (self.fold(&table.schema), self.fold(&table.table));
        let from = self.records.partition_point(|r| r.cmp_pos(pos).is_le());
        self.records[from..]
            .iter()
            .find(|r| {
                matches!(r.body, RecordBody::Ddl { .. })
                    && r.changes.iter().any(|c| c.schema == schema && c.table == name)
            })
            .map(HistoryRecord::position)
    }

    /// Records definitions fetched from the source just now (`SHOW CREATE TABLE`) for rows at
    /// `pos`, like [`Self::record_snapshot`], but refuses a table that a DDL already in the
    /// history changed after `pos`: today's definition is newer than that DDL, so it does not
    /// describe the rows before it.
    ///
    /// # Errors
    /// [`HistoryError::SnapshotBeforeDdl`] (nothing recorded), persistence errors.
    pub fn record_current_snapshot(
        &mut self,
        pos: &SchemaPosition,
        tables: &[SnapshotTable],
        names: &[TableName],
    ) -> Result<Vec<(TableName, ParseError)>, HistoryError> {
        for name in names {
            if let Some(ddl) = self.next_ddl_of(name, pos) {
                return Err(HistoryError::SnapshotBeforeDdl {
                    table: name.clone(),
                    position: pos.clone(),
                    ddl,
                });
            }
        }
        self.record_snapshot(pos, tables)
    }

    /// Records definitions fetched from the source at `pos` (the initial dump, or a refresh after
    /// an outcome asked for one): each `SHOW CREATE TABLE` text replaces what the history had for
    /// that table from `pos` on. Returns, per table that could not be parsed, its name and the
    /// error; those tables are recorded as unknown.
    ///
    /// # Errors
    /// Only persistence errors.
    pub fn record_snapshot(
        &mut self,
        pos: &SchemaPosition,
        tables: &[SnapshotTable],
    ) -> Result<Vec<(TableName, ParseError)>, HistoryError> {
        let lower = self.options.lower_case_table_names;
        let mut changes = BTreeMap::new();
        let mut failed = Vec::new();
        for t in tables {
            let Some(ddl) = &t.ddl else { continue };
            match parser::parse_create_table(ddl) {
                Ok(st) => {
                    if let Some(def) = apply::table_from_create(&st, &t.schema, lower) {
                        changes.insert(def.table_name(), TableState::Known { def: Arc::new(def) });
                    } else {
                        // CREATE TABLE ... SELECT / LIKE cannot be SHOW CREATE TABLE output.
                        let name = classify(std::slice::from_ref(&st), &t.schema);
                        let name = TableName::new(
                            self.fold(&name.schema).into_owned(),
                            self.fold(&name.table).into_owned(),
                        );
                        failed.push((
                            name.clone(),
                            ParseError::Unsupported {
                                what: "snapshot DDL without a column list".to_owned(),
                                offset: 0,
                            },
                        ));
                        changes.insert(name, TableState::Unknown);
                    }
                }
                Err(e) => {
                    let q = classify_lenient(ddl, &t.schema);
                    if !q.table.is_empty() {
                        let name = TableName::new(
                            self.fold(&q.schema).into_owned(),
                            self.fold(&q.table).into_owned(),
                        );
                        changes.insert(name.clone(), TableState::Unknown);
                        failed.push((name, e));
                    } else {
                        failed.push((
                            TableName::new(self.fold(&t.schema).into_owned(), String::new()),
                            e,
                        ));
                    }
                }
            }
        }
        self.insert_snapshot(pos, tables.to_vec(), changes)?;
        Ok(failed)
    }

    /// Records a definition obtained elsewhere (binlog metadata, `information_schema`) at `pos`.
    ///
    /// # Errors
    /// Only persistence errors.
    pub fn record_table(
        &mut self,
        pos: &SchemaPosition,
        def: TableDef,
    ) -> Result<(), HistoryError> {
        let mut def = def;
        def.schema = self.fold(&def.schema).into_owned();
        def.name = self.fold(&def.name).into_owned();
        def.sync_primary_key();
        let schema = def.schema.clone();
        let changes =
            BTreeMap::from([(def.table_name(), TableState::Known { def: Arc::new(def) })]);
        self.insert_snapshot(pos, vec![SnapshotTable { schema, ddl: None }], changes)
    }

    fn insert_snapshot(
        &mut self,
        pos: &SchemaPosition,
        tables: Vec<SnapshotTable>,
        changes: BTreeMap<TableName, TableState>,
    ) -> Result<(), HistoryError> {
        if changes.is_empty() {
            return Ok(());
        }
        let record = HistoryRecord {
            v: FORMAT_VERSION,
            seq: self.next_seq,
            journal: pos.journal.clone(),
            offset: pos.offset,
            body: RecordBody::Snapshot { tables },
            changes: to_changes(changes),
        };
        self.insert(record, false)
    }

    /// Parses and applies `sql` against the state in force just before `key`.
    fn compute(
        &self,
        key: &(SchemaPosition, u64),
        default_db: &str,
        sql: &str,
    ) -> (ParsedQuery, apply::Applied) {
        let ctx = Ctx { default_db, lower: self.options.lower_case_table_names };
        let view = ViewAt { history: self, key: key.clone() };
        match parser::parse_with_head(sql) {
            Ok(statements) => {
                (classify(&statements, default_db), apply::apply(&statements, &ctx, &view))
            }
            Err(failed) => {
                let (e, head) = *failed;
                let query = classify(head.as_slice(), default_db);
                let mut applied = apply::Applied::default();
                // Every table the statement names is now of unknown shape, except where it says
                // the table goes away.
                for t in &query.targets {
                    if t.table.is_empty() || !query.is_ddl {
                        continue;
                    }
                    let name = TableName::new(ctx.fold(&t.schema), ctx.fold(&t.table));
                    applied.changes.insert(name, TableState::Unknown);
                }
                if query.targets.iter().all(|t| t.table.is_empty()) {
                    tracing::warn!(error = %e, "schema history: cannot parse DDL and cannot tell its table");
                }
                applied.problems.push(ApplyError::Parse(e));
                (query, applied)
            }
        }
    }

    /// Inserts a record in position order, re-applies later DDL when it is not the newest, and
    /// persists it.
    fn insert(&mut self, record: HistoryRecord, force_rewrite: bool) -> Result<(), HistoryError> {
        self.next_seq = self.next_seq.max(record.seq + 1);
        let key = record.key();
        let idx = self.records.partition_point(|r| r.key() <= key);
        let at_end = idx == self.records.len();
        self.records.insert(idx, record);
        if at_end && !force_rewrite {
            self.push_versions(idx);
            self.append(idx)?;
        } else {
            self.replay_from(idx);
            self.rewrite()?;
        }
        if let Some(keep) = self.options.retain_records {
            // Compact only once the log has doubled, so a burst of DDL rewrites the file once per
            // `keep` records rather than on every record.
            let keep = keep.max(1);
            if self.records.len() > 2 * keep {
                let from = self.records[self.records.len() - keep].position();
                self.compact(&from)?;
            }
        }
        Ok(())
    }

    fn push_versions(&mut self, idx: usize) {
        let r = &self.records[idx];
        let from_snapshot = matches!(r.body, RecordBody::Snapshot { .. });
        for c in &r.changes {
            self.versions
                .entry(c.schema.clone())
                .or_default()
                .entry(c.table.clone())
                .or_default()
                .push(Version { key: r.key(), state: c.state.clone(), from_snapshot });
        }
    }

    fn rebuild_versions(&mut self) {
        self.versions.clear();
        for i in 0..self.records.len() {
            self.push_versions(i);
        }
    }

    /// Drops versions from record `idx` on and rebuilds them, re-applying DDL records' SQL so they
    /// see the records inserted before them.
    fn replay_from(&mut self, idx: usize) {
        let key = self.records[idx].key();
        for tables in self.versions.values_mut() {
            for versions in tables.values_mut() {
                versions.retain(|v| v.key < key);
            }
            tables.retain(|_, v| !v.is_empty());
        }
        self.versions.retain(|_, t| !t.is_empty());
        for i in idx..self.records.len() {
            if let RecordBody::Ddl { default_db, sql } = &self.records[i].body {
                let (_, applied) = self.compute(&self.records[i].key(), default_db, sql);
                self.records[i].changes = to_changes(applied.changes);
            }
            self.push_versions(i);
        }
    }

    /// [`Self::compact`] at `floor` (the minimum client cursor) once at least `min_records`
    /// records lie before it, so that compaction rewrites the history once per `min_records`
    /// DDLs rather than on every cursor move. Returns whether it compacted.
    ///
    /// # Errors
    /// Persistence errors.
    pub fn compact_below(
        &mut self,
        floor: &SchemaPosition,
        min_records: usize,
    ) -> Result<bool, HistoryError> {
        let below = self.records.partition_point(|r| r.cmp_pos(floor).is_lt());
        if below < min_records.max(2) {
            return Ok(false);
        }
        self.compact(floor)?;
        Ok(true)
    }

    /// Folds all records before `keep_from` into one snapshot record holding the tables that exist
    /// at the last of them, then rewrites the file. Lookups before `keep_from` afterwards return
    /// those definitions.
    ///
    /// # Errors
    /// Persistence errors.
    fn compact(&mut self, keep_from: &SchemaPosition) -> Result<(), HistoryError> {
        let n = self.records.partition_point(|r| r.cmp_pos(keep_from).is_lt());
        if n == 0 || (n == 1 && matches!(self.records[0].body, RecordBody::Snapshot { .. })) {
            return Ok(());
        }
        let last = self.records[n - 1].clone();
        // The folded snapshot takes the key of the last folded record, so it still sorts before
        // every kept record.
        let key = last.key();
        let mut changes = Vec::new();
        for (schema, tables) in &self.versions {
            for (table, versions) in tables {
                let n = versions.partition_point(|v| v.key <= key);
                if let Some(state @ (TableState::Known { .. } | TableState::Unknown)) =
                    Self::pick(versions, n)
                {
                    changes.push(TableChange {
                        schema: schema.clone(),
                        table: table.clone(),
                        state,
                    });
                }
            }
        }
        let snapshot = HistoryRecord {
            v: FORMAT_VERSION,
            seq: last.seq,
            journal: last.journal,
            offset: last.offset,
            body: RecordBody::Snapshot { tables: Vec::new() },
            changes,
        };
        self.records.splice(0..n, [snapshot]);
        self.rebuild_versions();
        tracing::info!(folded = n, kept = self.records.len() - 1, before = %keep_from, "schema history compacted");
        self.rewrite()
    }

    fn append(&self, idx: usize) -> Result<(), HistoryError> {
        let Some(path) = &self.file else { return Ok(()) };
        let mut line = serde_json::to_vec(&self.records[idx]).expect("history records serialize");
        line.push(b'\n');
        let mut f =
            OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
        f.write_all(&line).map_err(io_err(path))?;
        if self.options.sync {
            f.sync_data().map_err(io_err(path))?;
        }
        Ok(())
    }

    fn rewrite(&mut self) -> Result<(), HistoryError> {
        self.replaced = true;
        let Some(path) = &self.file else { return Ok(()) };
        let tmp = path.with_extension("jsonl.tmp");
        let mut buf = Vec::new();
        for r in &self.records {
            serde_json::to_writer(&mut buf, r).expect("history records serialize");
            buf.push(b'\n');
        }
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&buf).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Some(dir) = path.parent() {
            // Make the rename durable; not every platform can open a directory, so ignore failures.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

fn to_changes(changes: BTreeMap<TableName, TableState>) -> Vec<TableChange> {
    changes
        .into_iter()
        .map(|(k, state)| TableChange { schema: k.schema, table: k.table, state })
        .collect()
}
