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
use crate::position::compare_journal;
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
    loop {
        match converter.convert(raw, out) {
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
    event: Vec<u8>,
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
        Ok(Self { files, next_file, start_offset, skip_to: 0, current: None, event: Vec::new() })
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
                    self.event.clear();
                    self.event.extend_from_slice(bytes);
                }
                Ok(None) => {
                    self.current = None;
                    continue;
                }
                Err(source) => {
                    return Err(LocalSourceError::Decode { file: name.clone(), source });
                }
            }
            let name = self.current.as_ref().map_or("", |(n, _)| n.as_str());
            return Ok(Some((name, &self.event)));
        }
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
