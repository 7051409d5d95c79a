//! `canal-server decode`: binlog files → Canal FlatMessage JSON lines (or whole entries as JSON),
//! through the same converter the server runs. For people, golden tests and benchmarks.
//!
//! Entries are printed from their bytes ([`canal_core::view`]) into one output buffer per chunk
//! of entries, written to stdout whole. With `--threads N`, N threads render the chunks while this
//! one decodes; chunk `i` goes to renderer `i mod N` and the writer takes the rendered chunks
//! back in the same round-robin order, so output order is the binlog's. Every channel is bounded,
//! so memory does not grow with the file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::{Context, bail};
use bytes::Bytes;
use canal_core::binlog::entry::{ConvertOptions, Converter};
use canal_core::binlog::pipeline::{LocalBinlogSource, convert_with_source};
use canal_core::binlog::replica::{MetaConnection, ReplicaConfig};
use canal_core::schema::{HistoryOptions, SchemaHistory};
use canal_core::view::{FlatRows, write_entry_json};

/// Output shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Canal's FlatMessage, one per ROWDATA entry.
    Flat,
    /// Every entry (BEGIN/END included) with its header and decoded storeValue.
    Entry,
    /// Nothing but a closing count line (for benchmarks).
    Count,
}

/// Arguments of `decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Binlog files, decoded in the order given (a ROTATE-less concatenation is fine).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Read table definitions from this server (`mysql://user:pass@host:port`) for names and
    /// mysqlType when the binlog carries no FULL row metadata.
    #[arg(long)]
    pub schema: Option<String>,
    /// Output shape.
    #[arg(long, value_enum, default_value_t = Format::Flat)]
    pub format: Format,
    /// Value of FlatMessage `ts` (default: the entry's execute time, so output is reproducible).
    #[arg(long)]
    pub ts: Option<i64>,
    /// Table white list (Canal filter syntax).
    #[arg(long, default_value = "")]
    pub filter: String,
    /// Table black list.
    #[arg(long, default_value = "")]
    pub black_filter: String,
    /// Skip CRC32 verification.
    #[arg(long)]
    pub no_checksum: bool,
    /// Render the output on this many threads while the main thread decodes (0: the decoding
    /// thread renders too). Output order is the same either way. Default: one less than the
    /// CPUs available, at most 4.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Entry bytes (and FlatMessage `ts`) rendered together: one FlatMessage reader reused across
/// them, one output buffer written whole.
type Chunk = Vec<(Bytes, i64)>;

/// A chunk is handed on once its entries hold this many bytes.
const CHUNK_BYTES: usize = 256 * 1024;
/// Output is written to stdout in pieces of about this size.
const OUT_BYTES: usize = 1 << 20;
/// A renderer's rendered chunks, and where the writer returns their buffers.
type FromRenderer = (Receiver<Vec<u8>>, SyncSender<Vec<u8>>);

/// Chunks queued per renderer (in and out): what bounds memory with `--threads`.
const QUEUE: usize = 2;

/// Appends the lines of `chunk` in `format` to `out`.
fn render(format: Format, chunk: &Chunk, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut flat = FlatRows::new();
    for (bytes, ts) in chunk {
        match format {
            Format::Flat => {
                if flat.parse_entry(bytes).context("re-reading an entry")? {
                    flat.write_json(out, 0, *ts);
                    out.push(b'\n');
                }
            }
            Format::Entry => {
                write_entry_json(out, bytes).context("re-reading an entry")?;
                out.push(b'\n');
            }
            Format::Count => {}
        }
    }
    Ok(())
}

/// Where chunks go: rendered here, or handed to renderer threads.
enum Sink {
    Inline { format: Format, out: Vec<u8>, stdout: std::io::Stdout },
    Threads(Pipeline),
}

impl Sink {
    fn new(format: Format, threads: usize) -> Self {
        if threads == 0 || format == Format::Count {
            Sink::Inline {
                format,
                out: Vec::with_capacity(OUT_BYTES * 2),
                stdout: std::io::stdout(),
            }
        } else {
            Sink::Threads(Pipeline::start(format, threads))
        }
    }

    fn push(&mut self, chunk: Chunk) -> anyhow::Result<()> {
        match self {
            Sink::Inline { format, out, stdout } => {
                render(*format, &chunk, out)?;
                if out.len() >= OUT_BYTES {
                    stdout.lock().write_all(out).context("writing to stdout")?;
                    out.clear();
                }
                Ok(())
            }
            Sink::Threads(p) => p.push(chunk),
        }
    }

    /// Writes what is left; `tail` last.
    fn finish(self, tail: &[u8]) -> anyhow::Result<()> {
        let mut out = match self {
            Sink::Inline { out, .. } => out,
            Sink::Threads(p) => {
                p.finish()?;
                Vec::new()
            }
        };
        out.extend_from_slice(tail);
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&out).context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
        Ok(())
    }
}

/// Renderer threads and the writer thread, joined by bounded channels.
struct Pipeline {
    to_renderers: Vec<SyncSender<Chunk>>,
    next: usize,
    renderers: Vec<Option<std::thread::JoinHandle<anyhow::Result<()>>>>,
    writer: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Pipeline {
    fn start(format: Format, threads: usize) -> Self {
        let mut to_renderers = Vec::new();
        let mut from_renderers = Vec::new();
        let mut renderers = Vec::new();
        for _ in 0..threads {
            let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(QUEUE);
            let (out_tx, out_rx) = sync_channel::<Vec<u8>>(QUEUE);
            // Written buffers come back for reuse (no fresh pages per chunk).
            let (free_tx, free_rx) = sync_channel::<Vec<u8>>(QUEUE + 1);
            let handle = std::thread::spawn(move || renderer(format, chunk_rx, out_tx, free_rx));
            renderers.push(Some(handle));
            to_renderers.push(chunk_tx);
            from_renderers.push((out_rx, free_tx));
        }
        let writer = std::thread::spawn(move || writer(from_renderers));
        Pipeline { to_renderers, next: 0, renderers, writer: Some(writer) }
    }

    fn push(&mut self, chunk: Chunk) -> anyhow::Result<()> {
        let i = self.next;
        self.next = (i + 1) % self.to_renderers.len();
        if self.to_renderers[i].send(chunk).is_ok() {
            return Ok(());
        }
        // Renderer i stopped: on its own error, or because the writer stopped on one.
        let why = match self.renderers[i].take().map(std::thread::JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => anyhow::anyhow!("a renderer thread panicked"),
            _ => match self.writer.take().map(std::thread::JoinHandle::join) {
                Some(Ok(Err(e))) => e,
                Some(Err(_)) => anyhow::anyhow!("the writer thread panicked"),
                _ => anyhow::anyhow!("the output threads stopped"),
            },
        };
        Err(why)
    }

    /// Waits for every chunk to be written; the first error of a thread, if any.
    fn finish(self) -> anyhow::Result<()> {
        drop(self.to_renderers);
        let joined = self.renderers.into_iter().flatten().map(|r| (r.join(), "a renderer"));
        let joined = joined.chain(self.writer.map(|w| (w.join(), "the writer")));
        let mut first_err = None;
        for (result, who) in joined {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(anyhow::anyhow!("{who} thread panicked"));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Reads one byte of every cache line of the chunk's entries, front to back: the lines come
/// from the decoding core in a stream the prefetcher can run ahead of, where the renderer's
/// first walk over an entry (row after row, each row's length leading to the next) would wait
/// for them one at a time.
fn warm(chunk: &Chunk) {
    let mut x = 0u8;
    for (bytes, _) in chunk {
        for line in bytes.chunks(64) {
            x ^= line[0];
        }
    }
    std::hint::black_box(x);
}

fn renderer(
    format: Format,
    chunks: Receiver<Chunk>,
    out: SyncSender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
) -> anyhow::Result<()> {
    for chunk in chunks {
        warm(&chunk);
        let mut buf = free.try_recv().unwrap_or_else(|_| Vec::with_capacity(OUT_BYTES * 2));
        buf.clear();
        render(format, &chunk, &mut buf)?;
        if out.send(buf).is_err() {
            // The writer stopped (its error is reported by finish()).
            return Ok(());
        }
    }
    Ok(())
}

/// Takes rendered chunks from the renderers in round-robin order (the order they were handed
/// out) and writes them; stops when the first renderer in turn has nothing more.
fn writer(from: Vec<FromRenderer>) -> anyhow::Result<()> {
    // `stdout` is a LineWriter: a buffer holding many lines goes out in one write, uncopied.
    let mut stdout = std::io::stdout().lock();
    'out: loop {
        for (rx, free) in &from {
            let Ok(buf) = rx.recv() else { break 'out };
            stdout.write_all(&buf).context("writing to stdout")?;
            // Full or gone: the renderer allocates instead.
            let _ = free.try_send(buf);
        }
    }
    stdout.flush().context("writing to stdout")?;
    Ok(())
}

/// Renderer threads when `--threads` is not given: one less than the CPUs this process may
/// use, at most 4 (beyond, the decoding thread is the limit); none on one CPU (or when
/// unknown), where a pipeline only adds hand-overs. On two CPUs: the decoder on one, a renderer
/// on the other (a second renderer only makes them share the two CPUs with more hand-overs).
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get() - 1).min(4)
}

/// Runs `decode`, writing to stdout.
///
/// # Errors
/// Unreadable or corrupt files, an unreachable schema source.
pub async fn run(args: DecodeArgs) -> anyhow::Result<()> {
    let mut opts = ConvertOptions {
        filter: canal_core::filter::NameFilter::new(&args.filter, &args.black_filter)
            .context("invalid --filter/--black-filter")?,
        ..ConvertOptions::default()
    };
    opts.decode.verify_checksum = !args.no_checksum;
    let mut conn = match &args.schema {
        Some(url) => {
            let cfg = ReplicaConfig::from_url(url).context("invalid --schema URL")?;
            Some(MetaConnection::open(&cfg).await.context("cannot connect to --schema server")?)
        }
        None => None,
    };
    let history = conn.as_ref().map(|_| SchemaHistory::new(HistoryOptions::default()));
    let first = args.files[0].file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let mut converter = Converter::new(opts, history, first);
    let mut source = LocalBinlogSource::new(args.files.clone(), None, 4)?;
    let threads = args.threads.unwrap_or_else(default_threads);
    let mut sink = Sink::new(args.format, threads);
    let mut chunk: Chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut entries = Vec::new();
    let mut journal = String::new();
    let (mut n_entries, mut n_rows) = (0u64, 0u64);
    loop {
        let event = source.next_event().context("reading binlog")?;
        let Some((file, raw)) = event else { break };
        if file != journal {
            journal = file.to_owned();
            converter.set_journal(file);
        }
        entries.clear();
        convert_with_source(&mut converter, conn.as_mut(), raw, &mut entries)
            .await
            .with_context(|| format!("decoding {journal}"))?;
        for e in entries.drain(..) {
            n_entries += 1;
            n_rows += e.rows as u64;
            if args.format == Format::Count {
                continue;
            }
            let ts = args.ts.unwrap_or_else(|| e.position.timestamp.unwrap_or(0));
            chunk_bytes += e.bytes.len();
            chunk.push((e.bytes, ts));
        }
        if chunk_bytes >= CHUNK_BYTES {
            sink.push(std::mem::take(&mut chunk))?;
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        sink.push(chunk)?;
    }
    let mut tail = String::new();
    if args.format == Format::Count {
        let stats = converter.stats();
        tail = format!(
            "{n_entries} entries, {n_rows} rows, {} events, {} unknown events\n",
            stats.events, stats.unknown_events
        );
    }
    sink.finish(tail.as_bytes())?;
    if n_entries == 0 && converter.stats().events == 0 {
        bail!("no events found");
    }
    Ok(())
}
