//! The stages around the [`Converter`]: fetching table definitions the history lacks, grouping
//! entries into store flushes like Canal's `EventTransactionBuffer` (with its empty-transaction
//! throttle), and reading binlog files from a directory (Canal's local-binlog mode).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::decode::{BinlogReader, DecodeError};
use super::entry::{BuiltEntry, ConvertError, Converter};
use super::replica::{MetaConnection, ReplicaError};
use crate::position::{EntryPosition, compare_journal};
use crate::schema::{SnapshotTable, TableName};
use crate::store::EntryKind;

/// Why [`convert_with_source`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The event could not be converted.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The source could not describe a table that rows need (after reconnecting and retrying
    /// transient failures, see [`MetaConnection::show_create_table`]).
    #[error("cannot read the definition of {table} from the source: {source}")]
    TableFetch {
        /// The table.
        table: TableName,
        /// What the meta connection said.
        #[source]
        source: ReplicaError,
    },
}

impl PipelineError {
    /// Whether reconnecting and resuming may help (a table fetch that failed transiently).
    pub fn is_transient(&self) -> bool {
        matches!(self, PipelineError::TableFetch { source, .. } if source.is_transient())
    }
}

/// Converts one event, answering [`ConvertError::NeedTable`] from the source over `meta`.
///
/// Only a table the source says does not exist (or whose `SHOW CREATE TABLE` text cannot be
/// parsed) is marked unavailable, so that its rows use the binlog's own metadata; a table that
/// exists is never decoded with positional `@N` names because a fetch failed.
///
/// # Errors
/// Conversion errors other than `NeedTable`; [`PipelineError::TableFetch`] when the meta
/// connection failed for good (transient when it gave up on a transient error).
///
/// # Cancel safety
/// Not cancel safe: a table fetch may be interrupted mid-result.
pub async fn convert_with_source(
    converter: &mut Converter,
    meta: Option<&mut MetaConnection>,
    raw: &[u8],
    out: &mut Vec<BuiltEntry>,
) -> Result<(), PipelineError> {
    let mut meta = meta;
    let mut refetched = false;
    loop {
        match converter.convert(raw, out) {
            // Java's rule, extended to types: a definition that does not fit is fetched again
            // once; if the source's current definition does not fit either, the error stands.
            Err(ConvertError::TableMismatch { table, position, source })
                if !refetched && meta.is_some() && converter.history_mut().is_some() =>
            {
                refetched = true;
                tracing::warn!(
                    position = %position,
                    "the definition of {table} does not fit the binlog ({source}); fetching it again"
                );
                let ddl = match meta.as_deref_mut() {
                    Some(m) => m.show_create_table(&table.schema, &table.table).await,
                    None => Ok(None),
                };
                let ddl = match ddl {
                    Ok(Some(ddl)) => ddl,
                    // Gone since: nothing better to fetch; the mismatch stands.
                    Ok(None) => {
                        return Err(ConvertError::TableMismatch { table, position, source }.into());
                    }
                    Err(source) => return Err(PipelineError::TableFetch { table, source }),
                };
                if let Some(history) = converter.history_mut() {
                    let snap = SnapshotTable { schema: table.schema.clone(), ddl: Some(ddl) };
                    // Fetched now: refused where the history has a later DDL of the table (the
                    // mismatch then stands).
                    match history.record_current_snapshot(
                        &position,
                        &[snap],
                        std::slice::from_ref(&table),
                    ) {
                        Ok(_) => {}
                        Err(crate::schema::HistoryError::SnapshotBeforeDdl { .. }) => {
                            let e = ConvertError::TableMismatch { table, position, source };
                            return Err(e.into());
                        }
                        Err(e) => return Err(ConvertError::from(e).into()),
                    }
                }
                converter.refresh_table(&table, &position);
            }
            Err(ConvertError::NeedTable { table, position }) => {
                let ddl = match meta.as_deref_mut() {
                    Some(m) => match m.show_create_table(&table.schema, &table.table).await {
                        Ok(d) => d,
                        Err(source) => return Err(PipelineError::TableFetch { table, source }),
                    },
                    None => None,
                };
                match (ddl, converter.history_mut()) {
                    (Some(ddl), Some(history)) => {
                        let snap = SnapshotTable { schema: table.schema.clone(), ddl: Some(ddl) };
                        // Fetched now: refused where the history has a later DDL of the table.
                        let failed = history
                            .record_current_snapshot(
                                &position,
                                &[snap],
                                std::slice::from_ref(&table),
                            )
                            .map_err(ConvertError::from)?;
                        if !failed.is_empty() {
                            tracing::warn!(
                                "cannot parse the definition of {table}: {}; its rows use the binlog's metadata",
                                failed[0].1
                            );
                            converter.table_unavailable(table);
                        }
                    }
                    _ => converter.table_unavailable(table),
                }
            }
            other => return other.map_err(PipelineError::from),
        }
    }
}

/// Groups entries into the units the store receives, as Canal's transaction buffer does: a
/// transaction is flushed at its END (or in pieces of `max_entries` entries or `max_bytes`
/// bytes, whichever comes first), DDL and queries alone. The byte bound keeps one flush a small
/// part of the store's memory budget: with 1024 entries of ~40 KB (big multi-row events) a flush
/// alone would be 40 MB.
/// Empty transactions (BEGIN + END, all rows filtered) are dropped except one every
/// `empty_interval` or every `empty_threshold`, so cursors keep moving on a filtered stream.
#[derive(Debug)]
pub struct TransactionBuffer {
    buf: Vec<BuiltEntry>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    empty_interval: Duration,
    empty_threshold: u64,
    empty_seen: u64,
    last_empty_flush: Instant,
}

impl TransactionBuffer {
    /// Flushes of at most `max_entries` entries (Canal's default 1024) and about `max_bytes`
    /// bytes (the last entry may pass it); one empty transaction kept per 5 s or per 8192.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            bytes: 0,
            max_entries: max_entries.max(2),
            max_bytes: max_bytes.max(1),
            empty_interval: Duration::from_secs(5),
            empty_threshold: 8192,
            empty_seen: 0,
            last_empty_flush: Instant::now(),
        }
    }

    /// Adds one entry; returns what is ready to be stored (possibly nothing).
    pub fn push(&mut self, e: BuiltEntry) -> Vec<BuiltEntry> {
        let mut ready = Vec::new();
        self.bytes += e.bytes.len();
        match e.kind {
            EntryKind::Begin { .. } => {
                ready = self.take();
                self.bytes = e.bytes.len();
                self.buf.push(e);
            }
            EntryKind::Rows => {
                self.buf.push(e);
                if self.buf.len() >= self.max_entries || self.bytes >= self.max_bytes {
                    ready = self.take();
                }
            }
            EntryKind::End => {
                self.buf.push(e);
                ready = self.flush_transaction();
            }
            EntryKind::Ddl | EntryKind::Query => {
                self.buf.push(e);
                ready = self.take();
            }
        }
        ready
    }

    fn take(&mut self) -> Vec<BuiltEntry> {
        self.bytes = 0;
        std::mem::take(&mut self.buf)
    }

    fn flush_transaction(&mut self) -> Vec<BuiltEntry> {
        let empty = self.buf.len() == 2 && matches!(self.buf[0].kind, EntryKind::Begin { .. });
        if !empty {
            return self.take();
        }
        self.empty_seen += 1;
        let now = Instant::now();
        if self.empty_seen >= self.empty_threshold
            || now.duration_since(self.last_empty_flush) >= self.empty_interval
        {
            self.empty_seen = 0;
            self.last_empty_flush = now;
            self.take()
        } else {
            self.buf.clear();
            self.bytes = 0;
            Vec::new()
        }
    }

    /// Whatever is buffered (end of input).
    pub fn drain(&mut self) -> Vec<BuiltEntry> {
        self.take()
    }
}

/// What of an open transaction has reached the store: the entries put since the last resume
/// point (flushes of a transaction larger than one store flush), as a count, the first and last
/// positions and a digest of every entry's identity (event position, time, server id, kind, rows).
/// O(1) in size, however long the transaction.
///
/// A reconnect resumes at the last transaction boundary and reads these entries again; a
/// [`PrefixSkipper`] built from this recognises and drops them, so a client never receives the
/// transaction's BEGIN twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredPrefix {
    entries: u64,
    first: Option<EntryMark>,
    last: Option<EntryMark>,
    digest: u64,
}

/// Where an entry came from, as far as recognising it again goes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EntryMark {
    journal: Option<String>,
    offset: Option<i64>,
    kind: u8,
}

impl EntryMark {
    fn of(e: &BuiltEntry) -> Self {
        Self {
            journal: e.position.journal_name.clone(),
            offset: e.position.position,
            kind: kind_code(e.kind),
        }
    }

    fn position(&self) -> EntryPosition {
        EntryPosition {
            journal_name: self.journal.clone(),
            position: self.offset,
            ..EntryPosition::default()
        }
    }
}

impl std::fmt::Display for EntryMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            0 => "BEGIN",
            1 => "END",
            2 => "rows",
            3 => "DDL",
            _ => "query",
        };
        write!(
            f,
            "{kind} at {}:{}",
            self.journal.as_deref().unwrap_or("?"),
            self.offset.map_or_else(|| "?".to_owned(), |o| o.to_string())
        )
    }
}

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Begin { .. } => 0,
        EntryKind::End => 1,
        EntryKind::Rows => 2,
        EntryKind::Ddl => 3,
        EntryKind::Query => 4,
    }
}

/// Folds one entry's identity into a digest. `DefaultHasher::new()` has fixed keys, so the same
/// entries give the same digest within the process (the digest is never persisted). The bytes are
/// left out on purpose: a table definition fetched on the reconnect (one that was unavailable
/// before) changes `mysqlType` strings, not which entries the binlog holds.
fn fold(digest: u64, e: &BuiltEntry) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    digest.hash(&mut h);
    e.position.journal_name.hash(&mut h);
    e.position.position.hash(&mut h);
    e.position.timestamp.hash(&mut h);
    e.position.server_id.hash(&mut h);
    kind_code(e.kind).hash(&mut h);
    e.rows.hash(&mut h);
    e.closes.hash(&mut h);
    h.finish()
}

impl StoredPrefix {
    /// Nothing of an open transaction is stored.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Entries stored.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Appends a flush that was put into the store.
    pub fn record(&mut self, flush: &[BuiltEntry]) {
        for e in flush {
            if self.first.is_none() {
                self.first = Some(EntryMark::of(e));
            }
            self.digest = fold(self.digest, e);
            self.entries += 1;
        }
        if let Some(e) = flush.last() {
            self.last = Some(EntryMark::of(e));
        }
    }

    /// Forgets everything (a flush that closes the transaction was stored: the resume point
    /// moved past it).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// What to do with an entry read again after a reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Not stored before: buffer and store it.
    Deliver,
    /// Already stored: drop it.
    Skip,
}

/// The entries read again after a reconnect are not those that were stored: the source's binlog
/// changed under the same address (a failover behind a VIP, a reset binlog). Nothing was
/// skipped or delivered wrongly when this is returned; the instance must stop.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayMismatch {
    /// The stream passed the stored transaction's first entry without producing it.
    #[error(
        "resuming inside a partly stored transaction: expected its first stored entry ({expected}), \
         the source sent {found} instead"
    )]
    Missed {
        /// The first stored entry.
        expected: String,
        /// What the source sent.
        found: String,
    },
    /// The transaction ended (or a boundary came) before all stored entries were read again.
    #[error(
        "resuming inside a partly stored transaction of {stored} stored entries: the source closed \
         it after {seen} ({at})"
    )]
    Shorter {
        /// Entries stored before the reconnect.
        stored: u64,
        /// Entries read again when the boundary came.
        seen: u64,
        /// The closing entry.
        at: String,
    },
    /// As many entries were read again as were stored, but they are not the same ones.
    #[error(
        "resuming inside a partly stored transaction: its {stored} stored entries ended with \
         {expected}, the {stored} entries read again end with {found} or differ before it"
    )]
    Different {
        /// Entries stored before the reconnect.
        stored: u64,
        /// The last stored entry.
        expected: String,
        /// The last entry read again.
        found: String,
    },
}

/// Recognises the entries of a [`StoredPrefix`] when the dump resumes at the transaction boundary
/// before them: entries before the prefix's first are delivered (they were never stored — empty
/// transactions the buffer dropped), then exactly `prefix.entries()` entries are skipped, each
/// folded into the digest, and the digest and the last position must equal the stored ones.
/// Any difference is a [`ReplayMismatch`], never a silent skip.
#[derive(Clone, Debug)]
pub struct PrefixSkipper {
    expected: StoredPrefix,
    seen: u64,
    digest: u64,
}

impl PrefixSkipper {
    /// A skipper for the entries of `expected`.
    pub fn new(expected: StoredPrefix) -> Self {
        Self { expected, seen: 0, digest: 0 }
    }

    /// Every stored entry has been read again (later entries are new).
    pub fn is_done(&self) -> bool {
        self.seen >= self.expected.entries
    }

    /// Whether the first stored entry has been recognised (entries are being skipped).
    pub fn started(&self) -> bool {
        self.seen > 0
    }

    /// Entries skipped so far.
    pub fn skipped(&self) -> u64 {
        self.seen
    }

    /// Decides for the next entry of the resumed stream.
    ///
    /// # Errors
    /// [`ReplayMismatch`] when the stream does not reproduce the stored entries.
    pub fn check(&mut self, e: &BuiltEntry) -> Result<Replay, ReplayMismatch> {
        if self.is_done() {
            return Ok(Replay::Deliver);
        }
        if self.seen == 0 {
            let Some(first) = &self.expected.first else { return Ok(Replay::Deliver) };
            let mark = EntryMark::of(e);
            if mark != *first {
                // Same event, other kind: entries of one event belong to one transaction, whose
                // earliest entry is the stored first one, so the stream differs.
                if mark.position().cmp_in_file_order(&first.position()) == std::cmp::Ordering::Less
                {
                    return Ok(Replay::Deliver);
                }
                return Err(ReplayMismatch::Missed {
                    expected: first.to_string(),
                    found: mark.to_string(),
                });
            }
        }
        self.digest = fold(self.digest, e);
        self.seen += 1;
        if self.seen == self.expected.entries {
            let mark = EntryMark::of(e);
            if self.digest != self.expected.digest || Some(&mark) != self.expected.last.as_ref() {
                return Err(ReplayMismatch::Different {
                    stored: self.expected.entries,
                    expected: self
                        .expected
                        .last
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    found: mark.to_string(),
                });
            }
        } else if e.closes {
            // A stored prefix never holds a closing entry: a flush ending with one moves the
            // resume point and clears the prefix.
            return Err(ReplayMismatch::Shorter {
                stored: self.expected.entries,
                seen: self.seen,
                at: EntryMark::of(e).to_string(),
            });
        }
        Ok(Replay::Skip)
    }
}

/// Binlog files of a directory in binlog order (`*.index` and sidecars skipped: only files that
/// start with the binlog magic count).
///
/// # Errors
/// The directory cannot be read.
pub fn binlog_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && has_magic(p))
        .collect();
    files.sort_by(|a, b| {
        compare_journal(
            a.file_name().and_then(|n| n.to_str()),
            b.file_name().and_then(|n| n.to_str()),
        )
    });
    Ok(files)
}

fn has_magic(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(p).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && magic == super::decode::BINLOG_MAGIC
}

/// Reads binlog files one after the other from a start file and offset: Canal's local-binlog
/// source. Each event comes with its file name; a truncated last event is a typed error.
#[derive(Debug)]
pub struct LocalBinlogSource {
    files: Vec<PathBuf>,
    next_file: usize,
    start_offset: u64,
    skip_to: u64,
    current: Option<(String, BinlogReader<BufReader<File>>)>,
}

/// Reading local binlog files failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalSourceError {
    /// A file could not be opened.
    #[error("cannot open binlog file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a binlog, or is corrupt or truncated.
    #[error("binlog file {file}: {source}")]
    Decode {
        /// The file.
        file: String,
        /// What is wrong.
        #[source]
        source: DecodeError,
    },
    /// The start file is not among the files.
    #[error("start file {0} is not in the binlog directory")]
    NoStartFile(String),
}

impl LocalBinlogSource {
    /// Reads `files` in order, starting at `start_file` (its name, or the first file when `None`)
    /// and `start_offset` in it (4 or 0 = from the beginning).
    ///
    /// # Errors
    /// [`LocalSourceError::NoStartFile`] when `start_file` is not among `files`.
    pub fn new(
        files: Vec<PathBuf>,
        start_file: Option<&str>,
        start_offset: u64,
    ) -> Result<Self, LocalSourceError> {
        let next_file = match start_file {
            None => 0,
            Some(name) => files
                .iter()
                .position(|p| p.file_name().and_then(|n| n.to_str()) == Some(name))
                .ok_or_else(|| LocalSourceError::NoStartFile(name.to_owned()))?,
        };
        Ok(Self { files, next_file, start_offset, skip_to: 0, current: None })
    }

    /// The next event as `(file name, event bytes)`, `Ok(None)` after the last file.
    ///
    /// # Errors
    /// [`LocalSourceError`] for unreadable, foreign or corrupt files.
    pub fn next_event(&mut self) -> Result<Option<(&str, &[u8])>, LocalSourceError> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.get(self.next_file).cloned() else {
                    return Ok(None);
                };
                self.skip_to = std::mem::take(&mut self.start_offset);
                self.next_file += 1;
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                let file = File::open(&path)
                    .map_err(|source| LocalSourceError::Open { path: path.clone(), source })?;
                let reader = BinlogReader::new(BufReader::with_capacity(1 << 16, file))
                    .map_err(|source| LocalSourceError::Decode { file: name.clone(), source })?;
                self.current = Some((name, reader));
            }
            let Some((name, reader)) = self.current.as_mut() else { continue };
            match reader.next_event() {
                Ok(Some((offset, bytes))) => {
                    // The FORMAT_DESCRIPTION always passes (it describes the file); other events
                    // before the start offset are skipped.
                    let is_fde =
                        bytes.get(4) == Some(&super::decode::event_type::FORMAT_DESCRIPTION);
                    if offset < self.skip_to && !is_fde {
                        continue;
                    }
                    break;
                }
                Ok(None) => {
                    self.current = None;
                    continue;
                }
                Err(source) => {
                    return Err(LocalSourceError::Decode { file: name.clone(), source });
                }
            }
        }
        // The event stays in the reader's buffer (no copy), borrowed again once the loop no
        // longer needs `self` mutably. The loop only breaks with a file open, so this is `Some`.
        Ok(self.current.as_ref().map(|(name, reader)| (name.as_str(), reader.last_event())))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::position::EntryPosition;

    fn e(kind: EntryKind, len: usize) -> BuiltEntry {
        BuiltEntry {
            bytes: Bytes::from(vec![0u8; len]),
            position: EntryPosition::default(),
            kind,
            rows: usize::from(kind == EntryKind::Rows),
            closes: kind == EntryKind::End,
        }
    }

    fn kinds(v: &[BuiltEntry]) -> Vec<EntryKind> {
        v.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn a_transaction_is_flushed_at_its_end() {
        let mut t = TransactionBuffer::new(1024, 1 << 20);
        assert!(t.push(e(EntryKind::Begin { gtid: false }, 10)).is_empty());
        assert!(t.push(e(EntryKind::Rows, 10)).is_empty());
        let out = t.push(e(EntryKind::End, 10));
        assert_eq!(
            kinds(&out),
            [EntryKind::Begin { gtid: false }, EntryKind::Rows, EntryKind::End]
        );
        assert!(t.drain().is_empty());
    }

    #[test]
    fn big_transactions_are_flushed_by_count_or_bytes() {
        // By count: 4 entries.
        let mut t = TransactionBuffer::new(4, usize::MAX);
        assert!(t.push(e(EntryKind::Begin { gtid: false }, 1)).is_empty());
        assert!(t.push(e(EntryKind::Rows, 1)).is_empty());
        assert!(t.push(e(EntryKind::Rows, 1)).is_empty());
        assert_eq!(t.push(e(EntryKind::Rows, 1)).len(), 4);
        // By bytes: the entry that reaches 1000 bytes ends the flush.
        let mut t = TransactionBuffer::new(1024, 1000);
        assert!(t.push(e(EntryKind::Begin { gtid: false }, 100)).is_empty());
        assert!(t.push(e(EntryKind::Rows, 500)).is_empty());
        assert_eq!(t.push(e(EntryKind::Rows, 400)).len(), 3);
        // The count starts over after a flush (the BEGIN's bytes count toward the next one).
        assert!(t.push(e(EntryKind::Rows, 999)).is_empty());
        assert_eq!(kinds(&t.push(e(EntryKind::Rows, 1))), [EntryKind::Rows, EntryKind::Rows]);
        assert!(t.push(e(EntryKind::Begin { gtid: false }, 600)).is_empty());
        assert_eq!(t.push(e(EntryKind::Rows, 400)).len(), 2);
    }

    fn at(kind: EntryKind, file: &str, offset: i64) -> BuiltEntry {
        BuiltEntry {
            position: EntryPosition::at(file, offset).with_timestamp(1_700_000_000_000),
            ..e(kind, 10)
        }
    }

    /// An empty transaction, then one of `rows` rows events, then another small one.
    fn stream(rows: usize) -> Vec<BuiltEntry> {
        let mut v = vec![
            at(EntryKind::Begin { gtid: false }, "b.000001", 50),
            at(EntryKind::End, "b.000001", 80),
            at(EntryKind::Begin { gtid: false }, "b.000001", 100),
        ];
        for i in 0..rows {
            v.push(at(EntryKind::Rows, "b.000001", 200 + 100 * i as i64));
        }
        v.push(at(EntryKind::End, "b.000001", 200 + 100 * rows as i64));
        v.push(at(EntryKind::Begin { gtid: false }, "b.000002", 4));
        v.push(at(EntryKind::Rows, "b.000002", 40));
        v.push(at(EntryKind::End, "b.000002", 80));
        v
    }

    fn offsets(v: &[BuiltEntry]) -> Vec<(Option<String>, Option<i64>)> {
        v.iter().map(|e| (e.position.journal_name.clone(), e.position.position)).collect()
    }

    /// What the instance does with one session: buffer, store, record the open transaction's
    /// stored prefix, move the resume index after a closing flush; the session dies after
    /// `fail_after` stored flushes. Returns whether the stream was consumed to its end.
    fn session(
        input: &[BuiltEntry],
        resume: &mut usize,
        prefix: &mut StoredPrefix,
        store: &mut Vec<BuiltEntry>,
        fail_after: usize,
        skipped: &mut u64,
    ) -> Result<bool, ReplayMismatch> {
        let mut t = TransactionBuffer::new(3, usize::MAX);
        t.empty_interval = Duration::from_secs(3600); // drop every empty transaction
        let mut skipper = (!prefix.is_empty()).then(|| PrefixSkipper::new(prefix.clone()));
        let mut flushes = 0;
        for (i, entry) in input.iter().enumerate().skip(*resume) {
            if let Some(s) = skipper.as_mut()
                && s.check(entry)? == Replay::Skip
            {
                *skipped += 1;
                if s.is_done() {
                    skipper = None;
                }
                continue;
            }
            let ready = t.push(entry.clone());
            if ready.is_empty() {
                continue;
            }
            store.extend(ready.iter().cloned());
            if ready[ready.len() - 1].closes {
                *resume = i + 1;
                if skipper.is_none() {
                    prefix.clear();
                }
            } else {
                assert!(skipper.is_none(), "only closing flushes come before the prefix");
                prefix.record(&ready);
            }
            flushes += 1;
            if flushes == fail_after {
                return Ok(false);
            }
        }
        Ok(true)
    }

    #[test]
    fn a_reconnect_inside_a_stored_transaction_skips_exactly_the_stored_entries() {
        let input = stream(10);
        // Every kill point, and several kills in one run (flushes of 3 entries: the big
        // transaction takes four).
        for fail_after in 1..8 {
            let mut resume = 0;
            let mut prefix = StoredPrefix::default();
            let mut store = Vec::new();
            let mut skipped = 0;
            let mut sessions = 0;
            while !session(&input, &mut resume, &mut prefix, &mut store, fail_after, &mut skipped)
                .unwrap()
            {
                sessions += 1;
                assert!(sessions < 100);
            }
            // The empty transaction is dropped; every other entry is stored exactly once.
            assert_eq!(offsets(&store), offsets(&input[2..]), "fail_after {fail_after}");
            let begins = store.iter().filter(|e| matches!(e.kind, EntryKind::Begin { .. })).count();
            assert_eq!(begins, 2, "one BEGIN per transaction");
            if fail_after < 4 {
                assert!(skipped > 0, "fail_after {fail_after}: a reconnect inside the transaction");
            }
        }
    }

    #[test]
    fn the_skipper_delivers_what_precedes_the_prefix_and_what_follows_it() {
        let input = stream(4);
        let mut prefix = StoredPrefix::default();
        prefix.record(&input[2..4]); // BEGIN, rows
        prefix.record(&input[4..5]); // rows
        assert_eq!(prefix.entries(), 3);
        let mut s = PrefixSkipper::new(prefix);
        let got: Vec<Replay> = input.iter().map(|e| s.check(e).unwrap()).collect();
        use Replay::{Deliver as D, Skip as S};
        assert_eq!(got, [D, D, S, S, S, D, D, D, D, D, D]);
        assert!(s.is_done());
        assert_eq!(s.skipped(), 3);
    }

    #[test]
    fn a_different_stream_is_a_typed_error_never_a_silent_skip() {
        let input = stream(4);
        let mut prefix = StoredPrefix::default();
        prefix.record(&input[2..5]);

        // The source went past the stored BEGIN without producing it.
        let mut s = PrefixSkipper::new(prefix.clone());
        let err = s.check(&at(EntryKind::Begin { gtid: false }, "b.000001", 150)).unwrap_err();
        assert!(matches!(err, ReplayMismatch::Missed { .. }), "{err}");
        assert!(err.to_string().contains("b.000001:100"), "{err}");
        // Same event, another kind.
        let mut s = PrefixSkipper::new(prefix.clone());
        let err = s.check(&at(EntryKind::Rows, "b.000001", 100)).unwrap_err();
        assert!(matches!(err, ReplayMismatch::Missed { .. }), "{err}");
        // Another file sorts after.
        let mut s = PrefixSkipper::new(prefix.clone());
        assert!(s.check(&at(EntryKind::Begin { gtid: false }, "b.000002", 4)).is_err());

        // The transaction ends before the stored entries are all read again.
        let mut s = PrefixSkipper::new(prefix.clone());
        assert_eq!(s.check(&input[2]).unwrap(), Replay::Skip);
        let err = s.check(&at(EntryKind::End, "b.000001", 200)).unwrap_err();
        assert!(matches!(err, ReplayMismatch::Shorter { stored: 3, seen: 2, .. }), "{err}");

        // As many entries, one of them elsewhere: the digest differs.
        let mut s = PrefixSkipper::new(prefix.clone());
        assert_eq!(s.check(&input[2]).unwrap(), Replay::Skip);
        assert_eq!(s.check(&at(EntryKind::Rows, "b.000001", 250)).unwrap(), Replay::Skip);
        let err = s.check(&input[4]).unwrap_err();
        assert!(matches!(err, ReplayMismatch::Different { stored: 3, .. }), "{err}");
        // Same positions, another row count.
        let mut s = PrefixSkipper::new(prefix.clone());
        let mut fat = input[3].clone();
        fat.rows = 7;
        s.check(&input[2]).unwrap();
        s.check(&fat).unwrap();
        assert!(matches!(s.check(&input[4]), Err(ReplayMismatch::Different { .. })));
        // Same entries except the last one's position.
        let mut s = PrefixSkipper::new(prefix);
        s.check(&input[2]).unwrap();
        s.check(&input[3]).unwrap();
        assert!(s.check(&at(EntryKind::Rows, "b.000001", 301)).is_err());
    }

    #[test]
    fn a_prefix_recorded_flush_by_flush_equals_one_recorded_at_once() {
        let input = stream(6);
        let mut a = StoredPrefix::default();
        a.record(&input[2..4]);
        a.record(&[]);
        a.record(&input[4..7]);
        let mut b = StoredPrefix::default();
        b.record(&input[2..7]);
        assert_eq!(a, b);
        a.clear();
        assert!(a.is_empty());
        assert_eq!(PrefixSkipper::new(a).check(&input[0]).unwrap(), Replay::Deliver);
    }

    #[test]
    fn empty_transactions_are_thinned() {
        let mut t = TransactionBuffer::new(1024, 1 << 20);
        t.empty_threshold = 3;
        t.empty_interval = Duration::from_secs(3600);
        let mut flushed = 0;
        for _ in 0..9 {
            assert!(t.push(e(EntryKind::Begin { gtid: false }, 10)).is_empty());
            flushed += usize::from(!t.push(e(EntryKind::End, 10)).is_empty());
        }
        assert_eq!(flushed, 3);
        // A DDL goes alone, right away.
        assert_eq!(kinds(&t.push(e(EntryKind::Ddl, 10))), [EntryKind::Ddl]);
    }
}
