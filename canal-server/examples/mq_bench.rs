//! The MQ bench's broker-side helper, run as a process by `cargo xtask bench` (xtask depends on
//! no workspace crate and must not build librdkafka):
//!
//! * `kafka-watch` / `rabbit-watch` create a fresh topic / queue, say `ready`, then sample the
//!   broker's confirmed message count (the sum of the topic's high watermarks; the queue's
//!   message count from a passive `queue.declare`) every few milliseconds on a thread of their
//!   own. When the count stops moving, they read the messages and count their rows (FlatMessage
//!   JSON or protobuf packets); once every expected row is there, they print the time from the
//!   first sample that saw a message to the first that saw the final count, and write the
//!   messages' partitions and sizes for the baseline.
//! * `kafka-produce` / `rabbit-publish` are the producer-only baselines: the same number of
//!   messages of the same sizes into the same broker, with canal-server's producer settings
//!   (Kafka: `client_config` of the default `[mq.kafka]`, acks=all, idempotent; RabbitMQ:
//!   persistent, mandatory, publisher confirms), measured by a watcher with `--messages`.
//!
//! Output: one JSON line on stdout (`{"secs":..,"messages":..,"bytes":..,"rows":..}`).

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use canal_core::protocol::entry::{Entry, EntryType, RowChange};
use canal_core::protocol::packet::{Messages, Packet};
use clap::{Parser, Subcommand};
use prost::Message as _;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// What the watcher waits for.
#[derive(clap::Args, Clone)]
struct Until {
    /// Rows to see (canal-server's messages, counted by decoding them).
    #[arg(long)]
    rows: Option<u64>,
    /// `flat` (FlatMessage JSON) or `protobuf` (Canal's packet), with `--rows`.
    #[arg(long, default_value = "flat")]
    format: String,
    /// Messages to see (the baseline's).
    #[arg(long)]
    messages: Option<u64>,
    /// Where to write `partition size` per message (with `--rows`).
    #[arg(long)]
    sizes: Option<PathBuf>,
    /// A file where the bench writes canal-server's metrics address (`host:port`) once it
    /// runs: the end signal when the topic cannot be read back.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates `topic` and measures what arrives in it.
    KafkaWatch {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[command(flatten)]
        until: Until,
    },
    /// Produces the messages listed in `sizes` into `topic`.
    KafkaProduce {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        sizes: PathBuf,
    },
    /// Declares `queue` (durable) and measures what arrives in it.
    RabbitWatch {
        #[arg(long)]
        uri: String,
        #[arg(long)]
        queue: String,
        #[command(flatten)]
        until: Until,
    },
    /// Publishes the messages listed in `sizes` into `queue` (default exchange).
    RabbitPublish {
        #[arg(long)]
        uri: String,
        #[arg(long)]
        queue: String,
        #[arg(long)]
        sizes: PathBuf,
        /// Unconfirmed messages at most.
        #[arg(long, default_value_t = 4096)]
        window: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    match cli.cmd {
        Cmd::KafkaWatch { bootstrap, topic, partitions, until } => {
            rt.block_on(kafka::create_topic(&bootstrap, &topic, partitions))?;
            let broker = kafka::Watch::new(&bootstrap, &topic, partitions)?;
            watch(broker, &until)
        }
        Cmd::KafkaProduce { bootstrap, topic, sizes } => kafka::produce(&bootstrap, &topic, &sizes),
        Cmd::RabbitWatch { uri, queue, until } => {
            let broker = rabbit::Watch::open(rt.handle().clone(), &uri, &queue)?;
            watch(broker, &until)
        }
        Cmd::RabbitPublish { uri, queue, sizes, window } => {
            rt.block_on(rabbit::publish(&uri, &queue, &sizes, window))
        }
    }
}

/// A broker seen by the watcher.
trait Broker {
    /// A counter of confirmed messages, cheap to call from the sampler thread.
    fn sampler(&self) -> Result<Box<dyn FnMut() -> Result<u64> + Send>>;
    /// Reads the messages not read yet (at least those counted so far), giving each one's
    /// partition and payload to `f`.
    fn read_new(&mut self, f: &mut dyn FnMut(i32, &[u8]) -> Result<()>) -> Result<()>;
    /// Frees what the measurement left in the broker.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Rows in one message of canal-server.
fn rows_in(format: &str, payload: &[u8]) -> Result<u64> {
    match format {
        "flat" => {
            let v: serde_json::Value =
                serde_json::from_slice(payload).context("a FlatMessage that is not JSON")?;
            Ok(v["data"].as_array().map_or(0, |d| d.len() as u64))
        }
        "protobuf" => {
            let packet = Packet::decode(payload).context("not a Canal packet")?;
            let messages = Messages::decode(packet.body).context("not a MESSAGES body")?;
            let mut n = 0;
            for bytes in messages.messages {
                let e = Entry::decode(bytes).context("not an Entry")?;
                if e.entry_type() == EntryType::Rowdata {
                    n += RowChange::decode(e.store_value())
                        .context("not a RowChange")?
                        .row_datas
                        .len() as u64;
                }
            }
            Ok(n)
        }
        other => bail!("--format {other}: use flat or protobuf"),
    }
}

fn watch(mut broker: impl Broker, until: &Until) -> Result<()> {
    let expect_rows = until.rows;
    let expect_messages = until.messages;
    if expect_rows.is_some() == expect_messages.is_some() {
        bail!("give exactly one of --rows and --messages");
    }
    // Samples (time, confirmed messages), taken on a thread of their own so that reading the
    // messages never delays one.
    let samples: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let latest = Arc::new(AtomicU64::new(0));
    let mut sample = broker.sampler()?;
    println!("ready");
    std::io::stdout().flush()?;
    let sampler = {
        let (samples, stop, latest) = (samples.clone(), stop.clone(), latest.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut last = u64::MAX;
            while !stop.load(Ordering::Relaxed) {
                let n = sample()?;
                if n != last {
                    samples.lock().expect("sampler lock").push((Instant::now(), n));
                    latest.store(n, Ordering::Relaxed);
                    last = n;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(until.timeout_secs);
    let (mut rows, mut messages, mut bytes) = (0u64, 0u64, 0u64);
    let mut sizes = Vec::new();
    let mut sample_payload: Option<Vec<u8>> = None;
    let mut still_since = (Instant::now(), 0u64);
    let mut unverified = 0u64;
    let result = loop {
        if sampler.is_finished() {
            break Err(anyhow::anyhow!("the sampler stopped"));
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "timed out: {} messages confirmed, {rows} rows read",
                latest.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = latest.load(Ordering::Relaxed);
        if let Some(m) = expect_messages {
            if now >= m {
                messages = now;
                break Ok(());
            }
            continue;
        }
        if now != still_since.1 {
            still_since = (Instant::now(), now);
            continue;
        }
        // The count has not moved for a while: read what came and count its rows.
        if now == 0 || now == messages || still_since.0.elapsed() < Duration::from_millis(300) {
            continue;
        }
        let format = until.format.as_str();
        let read = broker.read_new(&mut |partition, payload| {
            rows += rows_in(format, payload)?;
            messages += 1;
            bytes += payload.len() as u64;
            sizes.push((partition, payload.len()));
            if sample_payload.is_none() {
                sample_payload = Some(payload.to_vec());
            }
            Ok(())
        });
        if let Err(e) = read {
            // noida-db 0.2.3 serves some record batches of a long topic as "Bad message format"
            // to librdkafka consumers. Then the rows cannot be counted from the topic: the end is
            // canal-server's own word (every row stored and the store empty, i.e. every batch
            // confirmed by the broker and acked), its confirmed message count must equal the
            // broker's, and the unread messages' sizes are the mean of the read ones (reported
            // as `unverified`).
            let Some(file) = &until.metrics_file else { break Err(e) };
            eprintln!("cannot read every message back ({e:#}); asking canal-server");
            let want = expect_rows.expect("checked");
            let final_count = match server_done(file, want, deadline) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            while latest.load(Ordering::Relaxed) < final_count && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let now = latest.load(Ordering::Relaxed);
            if now != final_count {
                break Err(anyhow::anyhow!(
                    "canal-server confirmed {final_count} messages, the broker holds {now}"
                ));
            }
            unverified = now - messages;
            let mean = bytes.checked_div(messages).unwrap_or(0) as usize;
            let parts: Vec<i32> = {
                let mut p: Vec<i32> = sizes.iter().map(|s| s.0).collect();
                p.sort_unstable();
                p.dedup();
                if p.is_empty() { vec![0] } else { p }
            };
            for i in 0..unverified {
                sizes.push((parts[i as usize % parts.len()], mean));
            }
            messages = now;
            bytes += unverified * mean as u64;
            break Ok(());
        }
        let want = expect_rows.expect("checked");
        if rows > want {
            break Err(anyhow::anyhow!("{rows} rows arrived, {want} expected: duplicates"));
        }
        if rows == want {
            break Ok(());
        }
    };
    stop.store(true, Ordering::Relaxed);
    sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))??;
    result?;
    broker.finish()?;
    let samples = samples.lock().expect("sampler lock");
    let first = samples.iter().find(|(_, n)| *n > 0).context("no message seen")?.0;
    let last = samples.iter().find(|(_, n)| *n >= messages).context("final count not sampled")?.0;
    if let Some(path) = &until.sizes {
        let mut out = String::new();
        for (p, s) in &sizes {
            out.push_str(&format!("{p} {s}\n"));
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
        if let Some(s) = &sample_payload {
            std::fs::write(path.with_extension("sample"), s)?;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "secs": (last - first).as_secs_f64(),
            "messages": messages,
            "bytes": bytes,
            "rows": rows,
            "unverified": unverified,
        })
    );
    Ok(())
}

/// Waits until canal-server's `/metrics` say every one of `want` rows was stored and the store
/// is empty (every batch confirmed by the broker and acked); returns the messages it confirmed.
fn server_done(file: &Path, want: u64, deadline: Instant) -> Result<u64> {
    loop {
        if Instant::now() > deadline {
            bail!("canal-server did not publish {want} rows in time");
        }
        std::thread::sleep(Duration::from_millis(50));
        let Ok(addr) = std::fs::read_to_string(file) else { continue };
        let mut conn = std::net::TcpStream::connect(addr.trim())
            .with_context(|| format!("connecting to canal-server's metrics at {addr}"))?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut conn, &mut text)?;
        let value = |name: &str| -> Option<f64> {
            let mut found = None;
            for l in text.lines().filter(|l| l.starts_with(name)) {
                let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
                *found.get_or_insert(0.0) += v;
            }
            found
        };
        let rows = value("canal_instance_rows_total").unwrap_or(0.0) as u64;
        let stored = value("canal_instance_store_entries").unwrap_or(f64::NAN);
        let Some(messages) = value("canal_mq_messages_total") else { continue };
        if rows >= want && stored == 0.0 {
            return Ok(messages as u64);
        }
    }
}

/// The baseline's messages: (partition, payload) filled from the watcher's sample payload.
fn load_sizes(path: &Path) -> Result<Vec<(i32, usize)>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let (p, s) = line.split_once(' ').context("a sizes line without a space")?;
        out.push((p.parse()?, s.parse()?));
    }
    Ok(out)
}

/// `len` bytes of the sample message repeated (so that a compressing producer sees data like
/// canal-server's); each baseline message is a prefix of it.
fn payload(sample: &[u8], len: usize) -> Vec<u8> {
    if sample.is_empty() {
        return vec![b'x'; len];
    }
    sample.iter().copied().cycle().take(len).collect()
}

fn sample_of(sizes: &Path) -> Result<Vec<u8>> {
    let p = sizes.with_extension("sample");
    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
}

mod kafka {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use anyhow::{Result, bail};
    use canal_server::config::KafkaSection;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message as _;
    use rdkafka::producer::{
        BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
    };
    use rdkafka::types::RDKafkaErrorCode;
    use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

    pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
        let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for r in admin.create_topics([&t], &AdminOptions::new()).await? {
            r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
        }
        Ok(())
    }

    pub struct Watch {
        bootstrap: String,
        topic: String,
        partitions: i32,
        reader: BaseConsumer,
        /// Next offset to read per partition.
        next: Vec<i64>,
    }

    fn consumer(bootstrap: &str) -> Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "canal-bench-watch")
            .set("enable.auto.commit", "false")
            .set("fetch.max.bytes", "104857600")
            // noida-db 0.2.3 answers a fetch cut at the partition limit with a batch librdkafka
            // cannot parse ("Bad message format"): ask for whole partitions.
            .set("max.partition.fetch.bytes", "104857600")
            .create()?)
    }

    impl Watch {
        pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Result<Self> {
            let reader = consumer(bootstrap)?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
            reader.assign(&tpl)?;
            Ok(Self {
                bootstrap: bootstrap.to_owned(),
                topic: topic.to_owned(),
                partitions,
                reader,
                next: vec![0; partitions as usize],
            })
        }

        fn high_watermarks(c: &BaseConsumer, topic: &str, partitions: i32) -> Result<Vec<i64>> {
            (0..partitions)
                .map(|p| {
                    let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
                    Ok(high)
                })
                .collect()
        }
    }

    impl super::Broker for Watch {
        fn sampler(&self) -> Result<Box<dyn FnMut() -> Result<u64> + Send>> {
            let c = consumer(&self.bootstrap)?;
            let (topic, partitions) = (self.topic.clone(), self.partitions);
            Ok(Box::new(move || {
                Ok(Self::high_watermarks(&c, &topic, partitions)?.iter().sum::<i64>() as u64)
            }))
        }

        fn read_new(&mut self, f: &mut dyn FnMut(i32, &[u8]) -> Result<()>) -> Result<()> {
            let high = Self::high_watermarks(&self.reader, &self.topic, self.partitions)?;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while self.next.iter().zip(&high).any(|(n, h)| n < h) {
                if std::time::Instant::now() > deadline {
                    bail!("reading {} did not reach {high:?} (at {:?})", self.topic, self.next);
                }
                match self.reader.poll(Duration::from_millis(200)) {
                    None => {}
                    Some(Ok(m)) => {
                        let p = m.partition();
                        f(p, m.payload().unwrap_or_default())?;
                        self.next[p as usize] = m.offset() + 1;
                    }
                    // Reported, then the consumer goes on (until the deadline).
                    Some(Err(e)) => eprintln!("reading {}: {e:?}", self.topic),
                }
            }
            Ok(())
        }
    }

    struct Counting {
        delivered: AtomicU64,
        failed: AtomicU64,
    }

    impl ClientContext for Counting {}

    impl ProducerContext for Counting {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
            match result {
                Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
                Err((e, _)) => {
                    eprintln!("delivery failed: {e}");
                    self.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    /// The minimal producer: canal-server's librdkafka settings, one send per message.
    pub fn produce(bootstrap: &str, topic: &str, sizes: &std::path::Path) -> Result<()> {
        let list = super::load_sizes(sizes)?;
        let sample = super::sample_of(sizes)?;
        let section =
            KafkaSection { bootstrap_servers: bootstrap.to_owned(), ..KafkaSection::default() };
        let config = canal_server::mq::kafka::client_config(&section);
        let ctx = Counting { delivered: AtomicU64::new(0), failed: AtomicU64::new(0) };
        let producer: ThreadedProducer<Counting> = config.create_with_context(ctx)?;
        let body = super::payload(&sample, list.iter().map(|m| m.1).max().unwrap_or(0));
        for &(p, size) in &list {
            let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&body[..size]).partition(p);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => bail!("send: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(120))?;
        let ctx = producer.context();
        let (ok, failed) =
            (ctx.delivered.load(Ordering::Relaxed), ctx.failed.load(Ordering::Relaxed));
        if failed > 0 || ok != list.len() as u64 {
            bail!("{ok} of {} delivered, {failed} failed", list.len());
        }
        println!("{}", serde_json::json!({ "messages": ok }));
        Ok(())
    }
}

mod rabbit {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use anyhow::{Context, Result, bail};
    use lapin::options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
    use tokio::runtime::Handle;

    pub struct Watch {
        rt: Handle,
        uri: String,
        queue: String,
        // Kept open for the channel.
        _conn: Connection,
        ch: Channel,
        /// Messages taken out of the queue so far (the sampler adds them to the queue's count).
        taken: Arc<AtomicU64>,
    }

    async fn channel(uri: &str) -> Result<(Connection, Channel)> {
        let conn = Connection::connect(uri, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to {uri}"))?;
        let ch = conn.create_channel().await?;
        Ok((conn, ch))
    }

    impl Watch {
        pub fn open(rt: Handle, uri: &str, queue: &str) -> Result<Self> {
            let (conn, ch) = rt.block_on(channel(uri))?;
            let opts = QueueDeclareOptions { durable: true, ..Default::default() };
            rt.block_on(ch.queue_declare(queue.into(), opts, FieldTable::default()))?;
            Ok(Self {
                rt,
                uri: uri.to_owned(),
                queue: queue.to_owned(),
                _conn: conn,
                ch,
                taken: Arc::default(),
            })
        }
    }

    impl super::Broker for Watch {
        fn sampler(&self) -> Result<Box<dyn FnMut() -> Result<u64> + Send>> {
            let (conn, ch) = self.rt.block_on(channel(&self.uri))?;
            let (rt, queue, taken) = (self.rt.clone(), self.queue.clone(), self.taken.clone());
            Ok(Box::new(move || {
                let _open = &conn;
                let opts = QueueDeclareOptions { passive: true, ..Default::default() };
                let q = rt.block_on(ch.queue_declare(
                    queue.as_str().into(),
                    opts,
                    FieldTable::default(),
                ))?;
                Ok(taken.load(Ordering::Relaxed) + u64::from(q.message_count()))
            }))
        }

        fn read_new(&mut self, f: &mut dyn FnMut(i32, &[u8]) -> Result<()>) -> Result<()> {
            let opts = BasicGetOptions { no_ack: true };
            while let Some(m) =
                self.rt.block_on(self.ch.basic_get(self.queue.as_str().into(), opts))?
            {
                self.taken.fetch_add(1, Ordering::Relaxed);
                f(0, &m.delivery.data)?;
            }
            Ok(())
        }

        fn finish(&mut self) -> Result<()> {
            let opts = QueueDeleteOptions::default();
            self.rt.block_on(self.ch.queue_delete(self.queue.as_str().into(), opts))?;
            Ok(())
        }
    }

    pub async fn publish(
        uri: &str,
        queue: &str,
        sizes: &std::path::Path,
        window: usize,
    ) -> Result<()> {
        let list = super::load_sizes(sizes)?;
        let sample = super::sample_of(sizes)?;
        let (conn, ch) = channel(uri).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let props =
            BasicProperties::default().with_delivery_mode(2).with_content_type("text/plain".into());
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        let mut pending = std::collections::VecDeque::new();
        let mut confirmed = 0u64;
        let body = super::payload(&sample, list.iter().map(|m| m.1).max().unwrap_or(0));
        for &(_, size) in &list {
            let c = ch
                .basic_publish("".into(), queue.into(), opts, &body[..size], props.clone())
                .await
                .context("basic.publish")?;
            pending.push_back(c);
            if pending.len() >= window {
                check(pending.pop_front().expect("non-empty").await?)?;
                confirmed += 1;
            }
        }
        while let Some(c) = pending.pop_front() {
            check(c.await?)?;
            confirmed += 1;
        }
        conn.close(0, "done".into()).await?;
        println!("{}", serde_json::json!({ "messages": confirmed }));
        Ok(())
    }

    fn check(c: Confirmation) -> Result<()> {
        match c {
            Confirmation::Ack(None) => Ok(()),
            other => bail!("not confirmed: {other:?}"),
        }
    }
}
