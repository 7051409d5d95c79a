//! `canal-server decode`: binlog files → Canal FlatMessage JSON lines (or whole entries as JSON),
//! through the same converter the server runs. For people, golden tests and benchmarks.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use canal_core::binlog::entry::{ConvertOptions, Converter};
use canal_core::binlog::pipeline::{LocalBinlogSource, convert_with_source};
use canal_core::binlog::replica::{MetaConnection, ReplicaConfig};
use canal_core::flat::FlatMessage;
use canal_core::protocol::entry::{
    Column, Entry, EntryType, Header, Pair, RowChange, TransactionBegin, TransactionEnd,
};
use canal_core::schema::{HistoryOptions, SchemaHistory};
use prost::Message;
use serde_json::{Map, Value, json};

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
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
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
        for e in &entries {
            n_entries += 1;
            n_rows += e.rows as u64;
            match args.format {
                Format::Count => {}
                Format::Flat => {
                    let entry = Entry::decode(e.bytes.clone()).context("re-reading an entry")?;
                    let ts = args.ts.unwrap_or_else(|| e.position.timestamp.unwrap_or(0));
                    if let Some(flat) = FlatMessage::from_entry(&entry, 0, ts)? {
                        writeln!(out, "{}", flat.to_json())?;
                    }
                }
                Format::Entry => {
                    let entry = Entry::decode(e.bytes.clone()).context("re-reading an entry")?;
                    writeln!(out, "{}", entry_json(&entry)?)?;
                }
            }
        }
    }
    if args.format == Format::Count {
        let stats = converter.stats();
        writeln!(
            out,
            "{n_entries} entries, {n_rows} rows, {} events, {} unknown events",
            stats.events, stats.unknown_events
        )?;
    }
    out.flush()?;
    if n_entries == 0 && converter.stats().events == 0 {
        bail!("no events found");
    }
    Ok(())
}

fn pairs(ps: &[Pair]) -> Value {
    Value::Array(ps.iter().map(|p| json!({"key": p.key(), "value": p.value()})).collect())
}

fn header_json(h: &Header) -> Value {
    let mut m = Map::new();
    m.insert("version".into(), json!(h.version()));
    m.insert("logfileName".into(), json!(h.logfile_name()));
    m.insert("logfileOffset".into(), json!(h.logfile_offset()));
    m.insert("serverId".into(), json!(h.server_id()));
    m.insert("serverenCode".into(), json!(h.serveren_code()));
    m.insert("executeTime".into(), json!(h.execute_time()));
    m.insert("sourceType".into(), json!(h.source_type().as_str_name()));
    m.insert("schemaName".into(), json!(h.schema_name()));
    m.insert("tableName".into(), json!(h.table_name()));
    m.insert("eventLength".into(), json!(h.event_length()));
    if h.event_type.is_some() {
        m.insert("eventType".into(), json!(h.event_type().as_str_name()));
    }
    if !h.props.is_empty() {
        m.insert("props".into(), pairs(&h.props));
    }
    if let Some(g) = &h.gtid {
        m.insert("gtid".into(), json!(g));
    }
    Value::Object(m)
}

fn column_json(c: &Column) -> Value {
    let mut m = Map::new();
    m.insert("index".into(), json!(c.index()));
    m.insert("sqlType".into(), json!(c.sql_type()));
    m.insert("name".into(), json!(c.name()));
    m.insert("isKey".into(), json!(c.is_key()));
    m.insert("updated".into(), json!(c.updated()));
    m.insert("isNull".into(), json!(c.is_null()));
    if c.value.is_some() {
        m.insert("value".into(), json!(c.value()));
    }
    if c.mysql_type.is_some() {
        m.insert("mysqlType".into(), json!(c.mysql_type()));
    }
    Value::Object(m)
}

/// The whole entry as JSON, with Canal's (camelCase) field names.
fn entry_json(e: &Entry) -> anyhow::Result<Value> {
    let mut m = Map::new();
    m.insert("header".into(), header_json(&e.header.clone().unwrap_or_default()));
    m.insert("entryType".into(), json!(e.entry_type().as_str_name()));
    let store = e.store_value();
    let value = match e.entry_type() {
        EntryType::Transactionbegin => {
            let b = TransactionBegin::decode(store)?;
            json!({"threadId": b.thread_id(), "props": pairs(&b.props)})
        }
        EntryType::Transactionend => {
            let t = TransactionEnd::decode(store)?;
            json!({"transactionId": t.transaction_id(), "props": pairs(&t.props)})
        }
        _ => {
            let rc = RowChange::decode(store)?;
            let rows: Vec<Value> = rc
                .row_datas
                .iter()
                .map(|r| {
                    json!({
                        "beforeColumns": r.before_columns.iter().map(column_json).collect::<Vec<_>>(),
                        "afterColumns": r.after_columns.iter().map(column_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut m = Map::new();
            if rc.table_id.is_some() {
                m.insert("tableId".into(), json!(rc.table_id()));
            }
            m.insert("eventType".into(), json!(rc.event_type().as_str_name()));
            m.insert("isDdl".into(), json!(rc.is_ddl()));
            if rc.sql.is_some() {
                m.insert("sql".into(), json!(rc.sql()));
            }
            if rc.ddl_schema_name.is_some() {
                m.insert("ddlSchemaName".into(), json!(rc.ddl_schema_name()));
            }
            if !rc.props.is_empty() {
                m.insert("props".into(), pairs(&rc.props));
            }
            m.insert("rowDatas".into(), Value::Array(rows));
            Value::Object(m)
        }
    };
    m.insert("storeValue".into(), value);
    Ok(Value::Object(m))
}
