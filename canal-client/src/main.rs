//! The `canal-client` binary: `tail` a destination (FlatMessage JSON lines or a readable table,
//! acking after printing) from a canal server or, with the `kafka` feature, from the Kafka topics
//! canal-server's MQ mode publishes to; and show a destination's `status` from the coordinator
//! (active server, client running node, cursor and lag).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use canal_client::entry::EventType;
use canal_client::view::{self, FlatRows, Image};
use canal_client::{
    ClientError, ClusterConfig, ClusterConnector, ConnectorConfig, Discovery, Message, TimeUnit,
};
use canal_coord::{
    ClientRunningData, CoordConfig, Coordinator, RunningData, ServerRunningData, path,
};
use canal_core::position::LogPosition;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "canal-client", version, about = "Consume and inspect Canal destinations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a destination's changes as they come, acking each batch after printing it.
    Tail(Box<TailArgs>),
    /// Show a destination's active server, client running node, cursor and lag.
    Status(StatusArgs),
}

/// Where the coordinator is.
#[derive(Debug, Args)]
struct CoordArgs {
    /// ZooKeeper servers (`host:port,host:port[/chroot]`).
    #[arg(long, conflicts_with = "etcd")]
    zk: Option<String>,
    /// etcd endpoints (`http://host:port`, comma-separated).
    #[arg(long)]
    etcd: Option<String>,
    /// Prefix of every coordinator key (etcd key prefix, or a ZooKeeper chroot), e.g. `/canal`.
    #[arg(long)]
    coord_prefix: Option<String>,
    /// Coordinator session timeout in ms (ZooKeeper session; etcd lease TTL, rounded up to
    /// seconds): how long a crashed client holds its HA node. Default: the coordinator's (90 s
    /// ZooKeeper, 10 s etcd).
    #[arg(long)]
    session_timeout_ms: Option<u64>,
}

impl CoordArgs {
    fn coordinator(&self) -> Result<Option<Arc<Coordinator>>> {
        let mut config = CoordConfig::default();
        let prefix = self.coord_prefix.clone().unwrap_or_default();
        if let Some(zk) = &self.zk {
            config.zookeeper.servers =
                if prefix.is_empty() { zk.clone() } else { format!("{zk}{prefix}") };
        } else if let Some(etcd) = &self.etcd {
            config.etcd.endpoints = etcd.split(',').map(|e| e.trim().to_owned()).collect();
            config.etcd.prefix = prefix;
        } else {
            return Ok(None);
        }
        if let Some(ms) = self.session_timeout_ms {
            config.zookeeper.session_timeout_ms = ms;
            config.etcd.lease_ttl_secs = ms.div_ceil(1000).max(1) as i64;
        }
        let backend = config.open_backend().context("coordinator settings")?;
        Ok(Some(Coordinator::new(backend)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One FlatMessage JSON object per row-change entry.
    Json,
    /// One readable line per row.
    Table,
    /// Nothing printed: decode, count toward --max and ack (for throughput measurements).
    Count,
}

/// Which client of which destination.
#[derive(Debug, Args)]
struct ClientArgs {
    /// Destination (Canal instance).
    #[arg(long, default_value = "example")]
    destination: String,
    /// Client id.
    #[arg(long, default_value_t = 1001)]
    client_id: i16,
}

#[derive(Debug, Args)]
struct TailArgs {
    /// Canal server(s), `host:port` (comma-separated or repeated: tried in turn).
    #[cfg_attr(
        feature = "kafka",
        arg(long, value_delimiter = ',', required_unless_present_any = ["zk", "etcd", "kafka"])
    )]
    #[cfg_attr(
        not(feature = "kafka"),
        arg(long, value_delimiter = ',', required_unless_present_any = ["zk", "etcd"])
    )]
    server: Vec<String>,
    #[cfg(feature = "kafka")]
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    coord: CoordArgs,
    #[command(flatten)]
    who: ClientArgs,
    /// Subscription filter (empty keeps the server's).
    #[arg(long, default_value = "")]
    filter: String,
    /// Batch size (in the server's batch mode units; with --kafka: records).
    #[arg(long, default_value_t = 1000)]
    batch_size: i32,
    /// How long one GET waits for its batch to fill before taking what there is (ms): the
    /// longest a row waits in the server when traffic is light. Lower means less latency and
    /// more requests while idle.
    #[arg(long, default_value_t = 100)]
    wait_ms: u64,
    /// A GET also answers once the server has put nothing new for this long (ms, fractions
    /// allowed; a canal-rs extension, Canal's servers ignore it): the rows of a commit are
    /// printed that long after it instead of after --wait-ms, while a busy stream still fills
    /// batches. 0: Canal's rule (full batch or --wait-ms).
    #[arg(long, default_value_t = 1.0, value_parser = linger_ms)]
    linger_ms: f64,
    /// canal.user of the server.
    #[arg(long, default_value = "")]
    user: String,
    /// Password (when absent: the CANAL_PASSWORD environment variable, else none).
    #[arg(long)]
    password: Option<String>,
    /// Stop once this many rows were printed (the batch is then acked only if printed whole).
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds without data.
    #[arg(long)]
    timeout: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Take part in client HA (with a coordinator): only one instance of the client id consumes.
    #[arg(long)]
    ha: bool,
}

/// Reading the Kafka topics of canal-server's MQ mode instead of a canal server.
#[cfg(feature = "kafka")]
#[derive(Debug, Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port[,host:port]`): consume the MQ topics instead of a
    /// canal server; acks commit the group's offsets.
    #[arg(long, value_name = "BOOTSTRAP", conflicts_with_all = ["server", "zk", "etcd", "ha"])]
    kafka: Option<String>,
    /// With --kafka: topic(s) to read (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    topic: Vec<String>,
    /// With --kafka: consumer group, whose committed offsets are where the next run resumes
    /// [default: canal-client-tail].
    #[arg(long)]
    group: Option<String>,
    /// With --kafka: format of the records, `auto` (per record), `flat` (FlatMessage JSON) or
    /// `protobuf` [default: auto].
    #[arg(long)]
    record_format: Option<canal_client::mq::RecordFormat>,
    /// With --kafka: where a group without committed offsets starts [default: earliest].
    #[arg(long, value_enum)]
    start: Option<Start>,
    /// With --kafka: also show records of aborted or open transactions (default:
    /// read_committed).
    #[arg(long)]
    read_uncommitted: bool,
    /// With --kafka: log and skip records that are not Canal messages instead of stopping.
    #[arg(long)]
    skip_bad_records: bool,
}

#[cfg(feature = "kafka")]
impl KafkaArgs {
    /// Whether a Kafka-only flag was given.
    fn any(&self) -> bool {
        !self.topic.is_empty()
            || self.group.is_some()
            || self.record_format.is_some()
            || self.start.is_some()
            || self.read_uncommitted
            || self.skip_bad_records
    }
}

#[cfg(feature = "kafka")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Start {
    /// The oldest record kept.
    Earliest,
    /// Records produced from now on.
    Latest,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    coord: CoordArgs,
    #[command(flatten)]
    who: ClientArgs,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
    /// Also ask a server's admin API (`host:port` of its metrics port) for the destination:
    /// its owner, pipeline state and the clients' cursors as that server sees them.
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// The server's admin token (also read from `CANAL_ADMIN_TOKEN`).
    #[arg(long)]
    admin_token: Option<String>,
}

/// The destination's entry of a server's `GET /admin/destinations` (docs/operations.md "Admin
/// API").
async fn admin_entry(addr: &str, token: Option<&str>, dest: &str) -> Result<serde_json::Value> {
    let limit = Duration::from_secs(30);
    let v = canal_client::admin::request(addr, "GET", "/admin/destinations", token, limit).await?;
    v["destinations"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["destination"] == dest).cloned())
        .with_context(|| format!("{addr} has no destination {dest}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        match cli.command {
            Command::Tail(args) => tail(*args).await,
            Command::Status(args) => status(args).await,
        }
    })
}

/// `--linger-ms`: a finite number of milliseconds, 0 to an hour.
fn linger_ms(s: &str) -> Result<f64, String> {
    let ms: f64 = s.parse().map_err(|e| format!("{s:?} is not a number of milliseconds: {e}"))?;
    if !(0.0..=3_600_000.0).contains(&ms) {
        return Err(format!("{ms} ms is outside 0 ..= 3600000 (an hour)"));
    }
    Ok(ms)
}

/// The password: the flag, else `CANAL_PASSWORD` (keeps it out of the process list), else none.
fn password(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("CANAL_PASSWORD").ok()).unwrap_or_default()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

async fn tail(args: TailArgs) -> Result<()> {
    #[cfg(feature = "kafka")]
    match args.kafka.kafka.clone() {
        Some(bootstrap) => return tail_kafka(&bootstrap, &args).await,
        None if args.kafka.any() => {
            bail!(
                "--topic, --group, --record-format, --start, --read-uncommitted and --skip-bad-records need --kafka"
            )
        }
        None => {}
    }
    let mut conn_config = ConnectorConfig::new(args.who.destination.clone())
        .client_id(args.who.client_id)
        .credentials(args.user.clone(), password(args.password.clone()));
    conn_config.rollback_on_disconnect = false;
    // Printed from the entry bytes in place (`print_batch`): nothing to decode up front.
    conn_config.decode_entries = false;
    // The server makes and sends the next batch while this one is printed.
    conn_config.prefetch = true;
    conn_config.linger =
        (args.linger_ms > 0.0).then(|| Duration::from_secs_f64(args.linger_ms / 1000.0));
    let discovery = match args.coord.coordinator()? {
        Some(coord) => Discovery::Coordinator(coord),
        None => Discovery::Static(args.server.clone()),
    };
    if args.ha && matches!(discovery, Discovery::Static(_)) {
        bail!("--ha needs --zk or --etcd");
    }
    let mut client =
        ClusterConnector::new(ClusterConfig::new(conn_config, discovery).client_ha(args.ha))
            .context("client settings")?;
    let idle = args.timeout.map(Duration::from_secs_f64);
    let result = tokio::select! {
        r = consume(&mut client, &args, idle) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    client.disconnect().await;
    result
}

async fn consume(
    client: &mut ClusterConnector,
    args: &TailArgs,
    idle: Option<Duration>,
) -> Result<()> {
    client.subscribe(&args.filter).await.context("subscribing")?;
    let mut printed: u64 = 0;
    let mut last_data = tokio::time::Instant::now();
    let stdout = std::io::stdout();
    let mut buf = Vec::new();
    loop {
        // Never longer than the idle timeout, so that it is checked.
        let wait = idle
            .map_or(args.wait_ms, |d| (d.as_millis() as u64).min(args.wait_ms))
            .clamp(1, i64::MAX as u64) as i64;
        let batch =
            match client.get_without_ack(args.batch_size, Some(wait), TimeUnit::Milliseconds).await
            {
                Ok(b) => b,
                Err(ClientError::BadEntry { batch_id, index, source }) => {
                    bail!("entry {index} of batch {batch_id} does not decode: {source}")
                }
                // An earlier ack failed on a server that went away: the connection was renewed
                // and the un-acked batches come again, so keep consuming.
                Err(e @ ClientError::AckFailed { .. }) => {
                    tracing::warn!("{e}; the batches are delivered again");
                    continue;
                }
                Err(e) => return Err(e).context("fetching a batch"),
            };
        if batch.is_empty() {
            if idle.is_some_and(|d| last_data.elapsed() >= d) {
                return Ok(());
            }
            continue;
        }
        last_data = tokio::time::Instant::now();
        let whole = print_next(&stdout, &mut buf, &batch, args, &mut printed)?;
        if whole {
            match client.ack(batch.id).await {
                Ok(()) | Err(ClientError::BatchRolledBack { .. }) => {}
                Err(e @ ClientError::AckFailed { .. }) => {
                    tracing::warn!("{e}; the batches are delivered again");
                }
                Err(e) => return Err(e).context("acking"),
            }
        } else {
            // Stopped inside the batch: what was not printed must come again.
            client.rollback(batch.id).await.context("rolling back")?;
        }
        if args.max.is_some_and(|m| printed >= m) {
            return Ok(());
        }
    }
}

#[cfg(feature = "kafka")]
async fn tail_kafka(bootstrap: &str, args: &TailArgs) -> Result<()> {
    use canal_client::kafka::{Isolation, KafkaConfig, KafkaConnector, StartFrom};
    let k = &args.kafka;
    if k.topic.is_empty() {
        bail!("--kafka needs --topic");
    }
    if !args.filter.is_empty() {
        bail!("--filter does not apply to --kafka (the server filters what it publishes)");
    }
    let group = k.group.clone().unwrap_or_else(|| "canal-client-tail".to_owned());
    let config = KafkaConfig::new(bootstrap, "", group)
        .topics(k.topic.clone())
        .format(k.record_format.unwrap_or_default())
        .isolation(if k.read_uncommitted {
            Isolation::ReadUncommitted
        } else {
            Isolation::ReadCommitted
        })
        .start(match k.start {
            Some(Start::Latest) => StartFrom::Latest,
            Some(Start::Earliest) | None => StartFrom::Earliest,
        })
        .skip_bad_records(k.skip_bad_records);
    let mut client = KafkaConnector::connect(config).await.context("Kafka consumer settings")?;
    let idle = args.timeout.map(Duration::from_secs_f64);
    let result = tokio::select! {
        r = consume_kafka(&mut client, args, idle) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    client.close().await;
    result
}

#[cfg(feature = "kafka")]
async fn consume_kafka(
    client: &mut canal_client::kafka::KafkaConnector,
    args: &TailArgs,
    idle: Option<Duration>,
) -> Result<()> {
    let mut printed: u64 = 0;
    let mut last_data = tokio::time::Instant::now();
    let stdout = std::io::stdout();
    let mut buf = Vec::new();
    let max_records = usize::try_from(args.batch_size).unwrap_or(0).max(1);
    loop {
        let wait = idle.map_or(args.wait_ms, |d| (d.as_millis() as u64).min(args.wait_ms)).max(1);
        let batch = match client.get_without_ack(max_records, Duration::from_millis(wait)).await {
            Ok(b) => b,
            Err(e @ ClientError::BadRecord { .. }) => {
                return Err(anyhow::Error::new(e).context(
                    "stopping at a record that does not decode (--skip-bad-records skips such \
                     records)",
                ));
            }
            Err(e) => return Err(e).context("reading from Kafka"),
        };
        if batch.id == canal_client::EMPTY_BATCH_ID {
            if idle.is_some_and(|d| last_data.elapsed() >= d) {
                return Ok(());
            }
            continue;
        }
        last_data = tokio::time::Instant::now();
        let whole = print_next(&stdout, &mut buf, &batch, args, &mut printed)?;
        if whole {
            client.ack(batch.id).await.context("committing the offsets")?;
        } else {
            // Stopped inside the batch: not committed, so the next run prints its rest again
            // (from the start of the batch, as the TCP path's rollback).
            client.rollback(batch.id).await.context("rolling back")?;
        }
        if args.max.is_some_and(|m| printed >= m) {
            return Ok(());
        }
    }
}

/// Prints `batch` (up to what is left of `--max`) into `buf`, writes it to stdout whole and
/// flushes; adds the rows printed to `printed`. True when the whole batch was printed (then it
/// may be acked).
fn print_next(
    stdout: &std::io::Stdout,
    buf: &mut Vec<u8>,
    batch: &Message,
    args: &TailArgs,
    printed: &mut u64,
) -> Result<bool> {
    let remaining = args.max.map(|m| m.saturating_sub(*printed));
    buf.clear();
    let (rows, whole) = print_batch(buf, batch, args.format, remaining)?;
    let mut out = stdout.lock();
    out.write_all(buf).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    *printed += rows;
    Ok(whole)
}

/// Prints the row changes of `batch` into `out`, read in place from the entry bytes; returns
/// the rows printed (a row change without rows counts one) and whether all were.
fn print_batch(
    out: &mut Vec<u8>,
    batch: &Message,
    format: Format,
    remaining: Option<u64>,
) -> Result<(u64, bool)> {
    let ts = now_ms();
    let mut rows = 0u64;
    if format == Format::Count {
        for n in batch.row_counts() {
            if remaining.is_some_and(|r| rows >= r) {
                return Ok((rows, false));
            }
            rows += n.context("decoding a row change")?.max(1) as u64;
        }
        return Ok((rows, true));
    }
    let mut flat = FlatRows::new();
    let mut before = Vec::new();
    for (index, v) in batch.views().enumerate() {
        let bad = || format!("entry {index} of batch {} does not decode", batch.id);
        let v = v.with_context(bad)?;
        if v.entry_type != view::ENTRY_ROWDATA {
            continue;
        }
        if remaining.is_some_and(|r| rows >= r) {
            return Ok((rows, false));
        }
        let rc = view::row_change_view(v.store_value).with_context(bad)?;
        rows += match format {
            Format::Json => {
                flat.parse(&v, &rc).with_context(bad)?;
                flat.write_json(out, batch.id, ts);
                out.push(b'\n');
                rc.rows().len().max(1) as u64
            }
            Format::Table => print_table(out, &v, &rc, &mut before).with_context(bad)?,
            Format::Count => rc.rows().len().max(1) as u64,
        };
    }
    Ok((rows, true))
}

/// One line per row (`column=value`, `old→new` for changed columns of an UPDATE), or one line
/// with the statement for DDL and row-less changes.
fn print_table<'a>(
    out: &mut Vec<u8>,
    v: &view::EntryView<'a>,
    rc: &view::RowChangeView<'a>,
    before: &mut Vec<view::ColumnView<'a>>,
) -> Result<u64> {
    let when = v.execute_time;
    let name = format!("{}.{}", v.schema, v.table);
    // The RowChange's event type, else the header's (prost's getters: unknown reads UPDATE).
    let et = EventType::try_from(rc.event_type().unwrap_or(v.header_event_type) as i32)
        .unwrap_or(EventType::Update);
    let kind = canal_core::flat::event_type_name(et);
    if rc.is_ddl() || rc.rows().len() == 0 {
        writeln!(out, "{when} {kind:<7} {name} {}", rc.sql().replace('\n', " "))?;
        return Ok(1);
    }
    let mut n = 0;
    for row in rc.rows() {
        write!(out, "{when} {kind:<7} {name} ")?;
        let mut sep = "";
        if et == EventType::Update {
            before.clear();
            for c in view::columns(row, Image::Before) {
                before.push(c?);
            }
            for c in view::columns(row, Image::After) {
                let c = c?;
                let new = c.value();
                write!(out, "{sep}{}=", c.name)?;
                match before.iter().find(|b| b.name == c.name).map(view::ColumnView::value) {
                    Some(old) if old != new => {
                        show(out, old)?;
                        out.extend_from_slice("→".as_bytes());
                    }
                    _ => {}
                }
                show(out, new)?;
                sep = " ";
            }
        } else {
            let image = if et == EventType::Delete { Image::Before } else { Image::After };
            for c in view::columns(row, image) {
                let c = c?;
                write!(out, "{sep}{}=", c.name)?;
                show(out, c.value())?;
                sep = " ";
            }
        }
        out.push(b'\n');
        n += 1;
    }
    Ok(n)
}

fn show(out: &mut Vec<u8>, v: Option<&str>) -> std::io::Result<()> {
    match v {
        None => out.extend_from_slice(b"NULL"),
        Some(s) if s.is_empty() || s.contains([' ', '=', '\n', '\t']) => write!(out, "{s:?}")?,
        Some(s) => out.extend_from_slice(s.as_bytes()),
    }
    Ok(())
}

async fn status(args: StatusArgs) -> Result<()> {
    let admin = match &args.admin {
        Some(addr) => {
            let token =
                args.admin_token.clone().or_else(|| std::env::var("CANAL_ADMIN_TOKEN").ok());
            Some(
                admin_entry(
                    addr,
                    token.as_deref().filter(|t| !t.is_empty()),
                    &args.who.destination,
                )
                .await?,
            )
        }
        None => None,
    };
    let Some(coord) = args.coord.coordinator()? else {
        if let Some(a) = admin {
            // The admin API alone: what that server knows.
            println!(
                "{}",
                if args.json { a.to_string() } else { serde_json::to_string_pretty(&a)? }
            );
            return Ok(());
        }
        bail!("status needs --zk or --etcd (or --admin)");
    };
    let session = coord.session().await.context("opening a coordinator session")?;
    let dest = &args.who.destination;
    let server = match session.get(&path::server_running(dest)).await? {
        Some(n) => Some(
            ServerRunningData::from_bytes(&n.data).context("reading the server running node")?,
        ),
        None => None,
    };
    let members = session.children(&path::destination_cluster(dest)).await?;
    let client = match session.get(&path::client_running(dest, args.who.client_id)).await? {
        Some(n) => Some(
            ClientRunningData::from_bytes(&n.data).context("reading the client running node")?,
        ),
        None => None,
    };
    let cursor = match session.get(&path::client_cursor(dest, args.who.client_id)).await? {
        Some(n) => Some(LogPosition::from_json(&n.data).context("reading the client cursor")?),
        None => None,
    };
    let filter = session
        .get(&path::client_filter(dest, args.who.client_id))
        .await?
        .map(|n| String::from_utf8_lossy(&n.data).into_owned());
    session.close().await;

    let lag_ms = cursor.as_ref().and_then(|c| c.position.timestamp).map(|t| now_ms() - t);
    if args.json {
        let v = serde_json::json!({
            "destination": dest,
            "server": server.as_ref().map(|s| serde_json::json!({"address": s.address, "active": s.active})),
            "members": members,
            "clientId": args.who.client_id,
            "client": client.as_ref().map(|c| serde_json::json!({"address": c.address, "active": c.active})),
            "filter": filter,
            "cursor": cursor,
            "lagMs": lag_ms,
            "admin": admin,
        });
        println!("{v}");
        return Ok(());
    }
    println!("destination: {dest}");
    match &server {
        Some(s) => println!(
            "active server: {}{}",
            s.address,
            if s.active { "" } else { " (releasing: active=false)" }
        ),
        None => println!("active server: none"),
    }
    println!(
        "cluster members: {}",
        if members.is_empty() { "none".to_owned() } else { members.join(", ") }
    );
    println!("client {}:", args.who.client_id);
    match &client {
        Some(c) => println!(
            "  running consumer: {}{}",
            c.address,
            if c.active { "" } else { " (inactive)" }
        ),
        None => println!("  running consumer: none"),
    }
    if let Some(f) = &filter {
        println!("  filter: {f}");
    }
    match &cursor {
        Some(c) => {
            let p = &c.position;
            println!(
                "  cursor: {}:{} (server id {}, timestamp {}){}",
                p.journal_name.as_deref().unwrap_or("?"),
                p.position.map_or("?".to_owned(), |v| v.to_string()),
                p.server_id.map_or("?".to_owned(), |v| v.to_string()),
                p.timestamp.map_or("?".to_owned(), |v| v.to_string()),
                p.gtid
                    .as_deref()
                    .filter(|g| !g.is_empty())
                    .map_or(String::new(), |g| format!(" gtid {g}")),
            );
            match lag_ms {
                Some(l) => println!("  lag: {:.3} s", l as f64 / 1000.0),
                None => println!("  lag: unknown (cursor has no timestamp)"),
            }
        }
        None => println!("  cursor: none"),
    }
    if let Some(a) = &admin {
        println!(
            "server (admin API): owner {}, {}, state {}",
            a["owner"].as_str().unwrap_or("none"),
            if a["active_here"] == true { "runs here" } else { "not running here" },
            a["state"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! `tail`'s in-place printing against the decoded-entry forms it replaced (FlatMessage +
    //! serde_json, and the table printed from decoded columns).

    use canal_client::entry::{Column, Entry, EntryType, Header, RowChange, RowData};
    use prost::Message as _;

    use super::*;

    fn col(name: &str, value: Option<&str>, updated: bool) -> Column {
        Column {
            index: Some(0),
            sql_type: Some(12),
            name: Some(name.into()),
            is_key: Some(name == "id"),
            updated: Some(updated),
            is_null: Some(value.is_none()),
            value: value.map(str::to_owned),
            mysql_type: Some("varchar(9)".into()),
            ..Default::default()
        }
    }

    fn entry(et: Option<EventType>, rows: Vec<RowData>, sql: Option<&str>) -> Entry {
        let rc = RowChange {
            event_type: et.map(|e| e as i32),
            is_ddl: Some(sql.is_some() && et == Some(EventType::Create)),
            sql: sql.map(str::to_owned),
            row_datas: rows,
            ..Default::default()
        };
        Entry {
            header: Some(Header {
                schema_name: Some("db".into()),
                table_name: Some("t \"q\"".into()),
                execute_time: Some(1_700_000_000_123),
                event_type: Some(EventType::Insert as i32),
                ..Default::default()
            }),
            entry_type: Some(EntryType::Rowdata as i32),
            store_value: Some(rc.encode_to_vec().into()),
        }
    }

    fn batch() -> Message {
        let row = |before: Vec<Column>, after: Vec<Column>| RowData {
            before_columns: before,
            after_columns: after,
            ..Default::default()
        };
        let edge = |t: EntryType| Entry { entry_type: Some(t as i32), ..Default::default() };
        Message::from_entries(
            42,
            vec![
                edge(EntryType::Transactionbegin),
                entry(
                    None,
                    vec![
                        row(vec![], vec![col("id", Some("1"), true), col("n", Some("a b"), true)]),
                        row(vec![], vec![col("id", Some("2"), true), col("n", None, true)]),
                    ],
                    None,
                ),
                entry(
                    Some(EventType::Update),
                    vec![row(
                        vec![col("id", Some("1"), false), col("n", Some("x=1"), false)],
                        vec![col("id", Some("1"), false), col("n", Some("ctl\t\"\u{1}"), true)],
                    )],
                    None,
                ),
                entry(
                    Some(EventType::Delete),
                    vec![row(vec![col("id", Some("2"), false), col("n", Some(""), false)], vec![])],
                    None,
                ),
                entry(Some(EventType::Create), vec![], Some("CREATE TABLE t (\n id int)")),
                edge(EntryType::Transactionend),
            ],
        )
    }

    /// The table as it was printed from decoded entries.
    fn reference_table(m: &Message) -> String {
        let show = |v: Option<&str>| match v {
            None => "NULL".to_owned(),
            Some(s) if s.is_empty() || s.contains([' ', '=', '\n', '\t']) => format!("{s:?}"),
            Some(s) => s.to_owned(),
        };
        let mut out = String::new();
        for change in m.row_changes() {
            let change = change.unwrap();
            let when = change.execute_time();
            let name = format!("{}.{}", change.schema(), change.table());
            let kind = change.event_type_name();
            if change.is_ddl() || change.rows().len() == 0 {
                out += &format!("{when} {kind:<7} {name} {}\n", change.sql().replace('\n', " "));
                continue;
            }
            for row in change.rows() {
                let cells: Vec<String> = if change.event_type() == EventType::Update {
                    let before = row.before();
                    row.after()
                        .iter()
                        .map(|(col, v)| match before.get(col) {
                            Some(old) if old != v => format!("{col}={}→{}", show(old), show(v)),
                            _ => format!("{col}={}", show(v)),
                        })
                        .collect()
                } else {
                    row.current().iter().map(|(col, v)| format!("{col}={}", show(v))).collect()
                };
                out += &format!("{when} {kind:<7} {name} {}\n", cells.join(" "));
            }
        }
        out
    }

    #[test]
    fn table_and_json_equal_the_decoded_forms() {
        let decoded = batch();
        let undecoded = Message::undecoded(decoded.id, decoded.raw_entries().to_vec());
        for m in [&decoded, &undecoded] {
            let mut out = Vec::new();
            assert_eq!(print_batch(&mut out, m, Format::Table, None).unwrap(), (5, true));
            assert_eq!(String::from_utf8(out).unwrap(), reference_table(&decoded));

            let mut out = Vec::new();
            assert_eq!(print_batch(&mut out, m, Format::Json, None).unwrap(), (5, true));
            let got = String::from_utf8(out).unwrap();
            let lines: Vec<&str> = got.lines().collect();
            // The timestamp is the printing time: compare with the reference at that `ts`.
            let ts = serde_json::from_str::<serde_json::Value>(lines[0]).unwrap()["ts"]
                .as_i64()
                .unwrap();
            let want: Vec<String> =
                decoded.flat_messages(ts).unwrap().iter().map(|f| f.to_json()).collect();
            assert_eq!(lines, want);

            let mut out = Vec::new();
            assert_eq!(print_batch(&mut out, m, Format::Table, Some(3)).unwrap(), (3, false));
        }
    }
}
