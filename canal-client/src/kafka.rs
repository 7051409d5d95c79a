//! Consuming what canal-server (or Java Canal) publishes to Kafka in MQ mode, as [`Message`]s:
//! the same type the TCP connectors return, so downstream code handles both.
//!
//! [`KafkaConnector`] is a Kafka consumer in a consumer group (librdkafka through `rdkafka`)
//! with Canal's get / ack / rollback model mapped onto offsets:
//!
//! * [`get_without_ack`](KafkaConnector::get_without_ack) takes up to `max_records` records
//!   (waiting up to a timeout for the first one) and decodes them ([`crate::mq`]: FlatMessage
//!   JSON or the protobuf MESSAGES packet) into one [`Message`] with a batch id of this
//!   connector's own numbering;
//! * [`ack`](KafkaConnector::ack) commits, per partition, the offset after the batch's last
//!   record (synchronously; auto-commit is off). Kafka offsets are positions, so acking a batch
//!   also acks every earlier outstanding batch;
//! * [`rollback`](KafkaConnector::rollback) forgets every outstanding batch and seeks each
//!   assigned partition back to its committed offset (Java's `KafkaCanalConnector.rollback`),
//!   or, where the group has committed nothing yet, to the first offset this connector read;
//! * isolation `read_committed` by default, so records of aborted (and still open) producer
//!   transactions are never delivered (canal-server's transactional mode relies on it).
//!
//! A record that is neither format, or malformed, is [`ClientError::BadRecord`] naming its topic,
//! partition and offset; with [`KafkaConfig::skip_bad_records`] it is logged and skipped instead
//! (its offset is committed with the batch's). Records that came before a bad record in the same
//! call are returned first and the error on the next call. After the error the connector is past
//! the record: carry on (a later ack commits past it) or roll back (it comes again).
//!
//! ```no_run
//! # async fn demo() -> Result<(), canal_client::ClientError> {
//! use canal_client::kafka::KafkaConnector;
//! use canal_client::mq::RecordFormat;
//! let mut c = KafkaConnector::open("127.0.0.1:9092", "example", "my-group", RecordFormat::Auto)
//!     .await?;
//! let batch = c.get_without_ack(100, std::time::Duration::from_secs(1)).await?;
//! for change in batch.row_changes() {
//!     let change = change?;
//!     println!("{}.{} {} rows", change.schema(), change.table(), change.rows().len());
//! }
//! c.ack(batch.id).await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
#[cfg(test)]
use std::time::Instant;

use bytes::Bytes;
use canal_core::protocol::entry::Entry;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::error::ClientError;
use crate::message::{EMPTY_BATCH_ID, Message};
use crate::mq::{RecordFormat, decode_record};

/// Which records a consumer sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones).
    #[default]
    ReadCommitted,
    /// Every record, including those of aborted transactions.
    ReadUncommitted,
}

/// Where a group without a committed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest record kept (the default here; Java's connector starts at the end).
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// Settings of a [`KafkaConnector`].
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Topics to subscribe to (a name starting with `^` is a regex, as librdkafka reads it).
    pub topics: Vec<String>,
    /// Consumer group: the committed offsets (acks) are the group's.
    pub group_id: String,
    /// Record format (auto-detected per record by default).
    pub format: RecordFormat,
    /// Transaction isolation (default read_committed).
    pub isolation: Isolation,
    /// Start of a group that has committed nothing.
    pub start: StartFrom,
    /// Log and skip records that do not decode instead of returning
    /// [`ClientError::BadRecord`].
    pub skip_bad_records: bool,
    /// Time limit of each commit, committed-offset query and seek.
    pub operation_timeout: Duration,
    /// Further librdkafka consumer settings (`security.protocol`, `session.timeout.ms`…),
    /// applied last.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Settings for `topic` in `group_id` on `bootstrap_servers`, everything else default.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        topic: impl Into<String>,
        group_id: impl Into<String>,
    ) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topics: vec![topic.into()],
            group_id: group_id.into(),
            format: RecordFormat::Auto,
            isolation: Isolation::ReadCommitted,
            start: StartFrom::Earliest,
            skip_bad_records: false,
            operation_timeout: Duration::from_secs(10),
            properties: Vec::new(),
        }
    }

    /// Subscribes to these topics instead.
    pub fn topics<I: IntoIterator<Item = S>, S: Into<String>>(mut self, topics: I) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the record format.
    pub fn format(mut self, format: RecordFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets the isolation level.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Sets where a group without committed offsets starts.
    pub fn start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Skips (with a warning) records that do not decode.
    pub fn skip_bad_records(mut self, skip: bool) -> Self {
        self.skip_bad_records = skip;
        self
    }

    /// Adds a librdkafka consumer setting.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    fn validate(&self) -> Result<(), ClientError> {
        let bad = |key, reason: &str| Err(ClientError::Config { key, reason: reason.to_owned() });
        if self.bootstrap_servers.trim().is_empty() {
            return bad("bootstrap_servers", "empty");
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return bad("topics", "no topic, or an empty topic name");
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id", "empty");
        }
        Ok(())
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set(
                "isolation.level",
                match self.isolation {
                    Isolation::ReadCommitted => "read_committed",
                    Isolation::ReadUncommitted => "read_uncommitted",
                },
            )
            .set(
                "auto.offset.reset",
                match self.start {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            );
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Where one record of a batch came from, and what it held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The format it was in.
    pub format: RecordFormat,
    /// Canal's batch id it carried (FlatMessage `id`; a protobuf packet's `Messages.batchId`,
    /// 0 after a split by topic or partition).
    pub canal_batch_id: i64,
    /// Its entries: `message.entries[entries.0..entries.1]`.
    pub entries: (usize, usize),
}

/// A batch with the records it was decoded from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KafkaBatch {
    /// The batch: ack or roll back `message.id`.
    pub message: Message,
    /// Its records, in the order they were read (per partition: offset order).
    pub records: Vec<RecordInfo>,
}

type Partition = (String, i32);

#[derive(Debug)]
struct Outstanding {
    id: i64,
    /// Per partition, the offset after the batch's last record.
    next: BTreeMap<Partition, i64>,
}

/// A Canal MQ consumer on Kafka: see the [module docs](self).
pub struct KafkaConnector {
    config: KafkaConfig,
    consumer: Arc<StreamConsumer>,
    next_id: i64,
    outstanding: VecDeque<Outstanding>,
    /// The first offset read from each partition since the last rollback: where a rollback
    /// goes when the group has no committed offset.
    first_read: BTreeMap<Partition, i64>,
    /// Per partition, the offset after the last record read (skipped bad records included).
    read_to: BTreeMap<Partition, i64>,
    /// A bad record met after other records of the same call; returned by the next call.
    stashed: Option<ClientError>,
    /// A get is under way, or was cancelled (its records were read but never handed out).
    interrupted: bool,
}

impl std::fmt::Debug for KafkaConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConnector")
            .field("config", &self.config)
            .field("next_id", &self.next_id)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

impl KafkaConnector {
    /// A connector for `topic` in `group` on `bootstrap` reading `format` records, with the other
    /// settings default (read_committed, earliest, bad records are errors).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn open(
        bootstrap: &str,
        topic: &str,
        group: &str,
        format: RecordFormat,
    ) -> Result<Self, ClientError> {
        Self::connect(KafkaConfig::new(bootstrap, topic, group).format(format)).await
    }

    /// Creates the consumer and subscribes to the topics. The group is joined (and partitions
    /// assigned) in the background; the first `get` waits for it within its timeout.
    ///
    /// # Errors
    /// [`ClientError::Config`] for unusable settings, [`ClientError::Kafka`] when librdkafka
    /// refuses the configuration or the subscription.
    pub async fn connect(config: KafkaConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let consumer: StreamConsumer = config.client_config().create()?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self {
            config,
            consumer: Arc::new(consumer),
            next_id: 1,
            outstanding: VecDeque::new(),
            first_read: BTreeMap::new(),
            read_to: BTreeMap::new(),
            stashed: None,
            interrupted: false,
        })
    }

    /// The settings.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The underlying rdkafka consumer (for metadata and lag queries; seeking or committing
    /// through it bypasses the connector's bookkeeping).
    pub fn consumer(&self) -> &StreamConsumer {
        &self.consumer
    }

    /// Ids of the batches taken and neither acked nor rolled back, oldest first.
    pub fn outstanding(&self) -> Vec<i64> {
        self.outstanding.iter().map(|o| o.id).collect()
    }

    /// Takes a batch and acks it at once (Java's `getList` with auto-ack).
    ///
    /// # Errors
    /// As [`get_without_ack`](Self::get_without_ack) and [`ack`](Self::ack).
    pub async fn get(
        &mut self,
        max_records: usize,
        wait: Duration,
    ) -> Result<Message, ClientError> {
        let m = self.get_without_ack(max_records, wait).await?;
        if m.id != EMPTY_BATCH_ID {
            self.ack(m.id).await?;
        }
        Ok(m)
    }

    /// Takes up to `max_records` records (0 means 1) as one batch, waiting up to `wait` for the
    /// first; then takes only what has already arrived. An empty batch has id -1; a batch of
    /// records that were all skipped (`skip_bad_records`) has an id and no entries: ack it to
    /// commit past them.
    ///
    /// # Errors
    /// [`ClientError::BadRecord`] for a record that does not decode (unless skipping),
    /// [`ClientError::Kafka`] for a consumer error other than the transient ones (broker down or
    /// unreachable, leader or coordinator moving, topic not created yet), which librdkafka
    /// recovers from: those are logged and the call keeps waiting until `wait` is over.
    ///
    /// # Cancel safety
    /// Records read before a cancellation are lost to this call; the next `get` (or an explicit
    /// [`rollback`](Self::rollback)) rolls back to the committed offsets so that they come
    /// again (batches outstanding before are then forgotten, as by any rollback).
    pub async fn get_without_ack(
        &mut self,
        max_records: usize,
        wait: Duration,
    ) -> Result<Message, ClientError> {
        Ok(self.get_records_without_ack(max_records, wait).await?.message)
    }

    /// As [`get_without_ack`](Self::get_without_ack), with each record's topic, partition,
    /// offset and format.
    ///
    /// # Errors
    /// As [`get_without_ack`](Self::get_without_ack).
    ///
    /// # Cancel safety
    /// As [`get_without_ack`](Self::get_without_ack).
    pub async fn get_records_without_ack(
        &mut self,
        max_records: usize,
        wait: Duration,
    ) -> Result<KafkaBatch, ClientError> {
        if self.interrupted {
            // An earlier call was cancelled after reading records it never handed out: a later
            // ack would commit past them. Read everything un-acked again instead.
            tracing::warn!("an earlier get was cancelled; rolling back to the committed offsets");
            self.rollback(0).await?;
        }
        self.interrupted = true;
        let result = self.take_records(max_records, wait).await;
        self.interrupted = false;
        result
    }

    async fn take_records(
        &mut self,
        max_records: usize,
        wait: Duration,
    ) -> Result<KafkaBatch, ClientError> {
        if let Some(e) = self.stashed.take() {
            return Err(e);
        }
        let max_records = max_records.max(1);
        let consumer = Arc::clone(&self.consumer);
        let mut entries: Vec<Entry> = Vec::new();
        let mut raw: Vec<Bytes> = Vec::new();
        let mut records = Vec::new();
        let mut next: BTreeMap<Partition, i64> = BTreeMap::new();
        let mut taken = 0usize;
        let deadline = tokio::time::Instant::now() + wait;
        while taken < max_records {
            // tokio's timeout polls the receive once before looking at the clock, so a zero
            // limit takes a record that is already there.
            let msg = match tokio::time::timeout_at(
                if taken == 0 { deadline } else { tokio::time::Instant::now() },
                consumer.recv(),
            )
            .await
            {
                Err(_) => break,
                Ok(Err(e)) if is_transient(&e) => {
                    // librdkafka reconnects and retries on its own; these only report it.
                    tracing::warn!(error = %e, "Kafka consumer: transient error, still waiting");
                    if taken == 0 {
                        continue;
                    }
                    break;
                }
                Ok(Err(e)) => {
                    if taken == 0 {
                        return Err(e.into());
                    }
                    self.stashed = Some(e.into());
                    break;
                }
                Ok(Ok(m)) => m,
            };
            taken += 1;
            let key = (msg.topic().to_owned(), msg.partition());
            let offset = msg.offset();
            self.first_read.entry(key.clone()).or_insert(offset);
            self.read_to.insert(key.clone(), offset + 1);
            let decoded = decode_record(msg.payload().unwrap_or_default(), self.config.format);
            drop(msg);
            match decoded {
                Ok(d) => {
                    let start = entries.len();
                    entries.extend(d.entries);
                    raw.extend(d.raw);
                    records.push(RecordInfo {
                        topic: key.0.clone(),
                        partition: key.1,
                        offset,
                        format: d.format,
                        canal_batch_id: d.batch_id,
                        entries: (start, entries.len()),
                    });
                    next.insert(key, offset + 1);
                }
                Err(source) => {
                    let err = ClientError::BadRecord {
                        topic: key.0.clone(),
                        partition: key.1,
                        offset,
                        source,
                    };
                    if self.config.skip_bad_records {
                        let cause = std::error::Error::source(&err).map(ToString::to_string);
                        tracing::warn!(error = %err, cause, "skipping a record that does not decode");
                        next.insert(key, offset + 1);
                        continue;
                    }
                    if records.is_empty() && next.is_empty() {
                        return Err(err);
                    }
                    self.stashed = Some(err);
                    break;
                }
            }
        }
        if next.is_empty() {
            return Ok(KafkaBatch {
                message: Message::from_parts(EMPTY_BATCH_ID, entries, raw),
                records,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding.push_back(Outstanding { id, next });
        Ok(KafkaBatch { message: Message::from_parts(id, entries, raw), records })
    }

    /// Acks batch `batch_id` and every earlier outstanding batch: commits, per partition, the
    /// offset after their last record (synchronously). Partitions that a rebalance has moved to
    /// another group member are left out (logged): that member reads them from the group's
    /// committed offset, so their records are delivered again there.
    ///
    /// # Errors
    /// [`ClientError::NoSuchBatch`] when the batch is not outstanding (already acked, rolled
    /// back, or never taken); [`ClientError::Kafka`] when the commit fails (e.g. the partitions
    /// were reassigned to another group member: their records go to it from the last committed
    /// offsets). The batches stay outstanding after a failed commit.
    pub async fn ack(&mut self, batch_id: i64) -> Result<(), ClientError> {
        let Some(pos) = self.outstanding.iter().position(|o| o.id == batch_id) else {
            return Err(ClientError::NoSuchBatch { batch_id });
        };
        let mut tpl = TopicPartitionList::new();
        let mut offsets: BTreeMap<&Partition, i64> = BTreeMap::new();
        for o in self.outstanding.iter().take(pos + 1) {
            for (k, v) in &o.next {
                let slot = offsets.entry(k).or_insert(*v);
                *slot = (*slot).max(*v);
            }
        }
        let offsets: Vec<(Partition, i64)> =
            offsets.into_iter().map(|(k, v)| (k.clone(), v)).collect();
        let consumer = Arc::clone(&self.consumer);
        blocking(move || {
            // Only partitions still assigned: one that a rebalance moved to another member is
            // read there from the group's committed offset (its records come again, at least
            // once), and committing our older offset could move that member's progress back.
            let assigned = consumer.assignment()?;
            for ((topic, partition), offset) in &offsets {
                if assigned.find_partition(topic, *partition).is_some() {
                    tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
                } else {
                    tracing::warn!(
                        topic,
                        partition,
                        offset,
                        "not committing a partition that is no longer assigned to this consumer"
                    );
                }
            }
            if tpl.count() == 0 {
                return Ok(());
            }
            consumer.commit(&tpl, CommitMode::Sync)
        })
        .await?;
        self.outstanding.drain(..=pos);
        Ok(())
    }

    /// Rolls back every outstanding batch (`batch_id` only has to be outstanding, or 0 for
    /// "all"; Kafka positions cannot skip a batch): each assigned partition is sought back to the
    /// group's committed offset, or to the first offset read where nothing is committed. Their
    /// records are delivered again.
    ///
    /// # Errors
    /// [`ClientError::NoSuchBatch`] for a batch id that is not outstanding (nothing is done);
    /// [`ClientError::Kafka`] when the committed offsets cannot be read or a seek fails (the
    /// outstanding batches are then forgotten all the same; roll back again to retry).
    pub async fn rollback(&mut self, batch_id: i64) -> Result<(), ClientError> {
        if batch_id != 0 && !self.outstanding.iter().any(|o| o.id == batch_id) {
            return Err(ClientError::NoSuchBatch { batch_id });
        }
        self.outstanding.clear();
        self.stashed = None;
        let consumer = Arc::clone(&self.consumer);
        let timeout = self.config.operation_timeout;
        let first_read = self.first_read.clone();
        let read_to = self.read_to.clone();
        blocking(move || {
            let assignment = consumer.assignment()?;
            let committed = consumer.committed_offsets(assignment.clone(), timeout)?;
            let mut seek = TopicPartitionList::new();
            for e in committed.elements() {
                let key = (e.topic().to_owned(), e.partition());
                let Some(&read) = read_to.get(&key) else {
                    // Nothing read from this partition since the last rollback.
                    continue;
                };
                let target = match e.offset() {
                    Offset::Offset(o) => o,
                    // Nothing committed: back to where this connector started reading.
                    _ => match first_read.get(&key) {
                        Some(&first) => first,
                        None => continue,
                    },
                };
                if target < read {
                    seek.add_partition_offset(&key.0, key.1, Offset::Offset(target))?;
                }
            }
            if seek.count() == 0 {
                return Ok(());
            }
            let result = consumer.seek_partitions(seek, timeout)?;
            for e in result.elements() {
                e.error()?;
            }
            Ok(())
        })
        .await?;
        // Read again from the sought offsets: they are the new starting points.
        self.first_read.clear();
        self.read_to.clear();
        self.interrupted = false;
        Ok(())
    }

    /// Leaves the group (un-acked records go to the other members from the committed offsets)
    /// and closes the consumer.
    pub async fn close(self) {
        let consumer = self.consumer;
        // Dropping the consumer closes it (librdkafka leaves the group; this blocks briefly).
        let closed = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the Kafka consumer failed");
        }
    }
}

/// Whether a consumer error only reports a condition librdkafka recovers from by itself
/// (broker down or unreachable, leader or coordinator moving, a topic not created yet): `get`
/// logs it and keeps waiting instead of failing.
fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
        )
    )
}

/// Runs a blocking librdkafka call off the async runtime's worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> rdkafka::error::KafkaResult<T> + Send + 'static,
) -> Result<T, ClientError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        // The closure panicked (librdkafka calls do not) or the runtime is shutting down.
        Err(e) => Err(ClientError::Stopped)
            .inspect_err(|_| tracing::warn!(error = %e, "Kafka call did not complete")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CANAL_TEST_KAFKA`, with tools/test-support.rs's rule (which needs an integration-test
    /// build): unset fails under `CANAL_REQUIRE_INTEGRATION=1`, else skips.
    fn kafka_service() -> Option<String> {
        match std::env::var("CANAL_TEST_KAFKA") {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
            _ => {
                assert!(
                    std::env::var("CANAL_REQUIRE_INTEGRATION").as_deref() != Ok("1"),
                    "CANAL_TEST_KAFKA is not set but CANAL_REQUIRE_INTEGRATION=1"
                );
                eprintln!("skipping: CANAL_TEST_KAFKA is not set");
                None
            }
        }
    }

    /// Records a get read and never handed out (its future was dropped) come again: the next
    /// get rolls back instead of letting a later ack commit past them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_a_cancelled_get_come_again() {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::producer::{FutureProducer, FutureRecord};

        let Some(bootstrap) = kafka_service() else { return };
        let topic = format!("canal-client-cancel-{}-{:?}", std::process::id(), Instant::now());
        let topic = topic.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "");
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        for r in admin
            .create_topics(
                [&NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap()
        {
            r.unwrap();
        }
        let p: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        for i in 0..3 {
            let json = format!(r#"{{"type":"QUERY","sql":"q{i}"}}"#);
            let record = FutureRecord::<(), str>::to(&topic).partition(0).payload(&json);
            p.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        }
        let group = format!("{topic}-g");
        let mut c =
            KafkaConnector::connect(KafkaConfig::new(&bootstrap, &topic, &group)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut first = KafkaBatch::default();
        while first.records.is_empty() {
            assert!(Instant::now() < deadline, "no record came");
            first = c.get_records_without_ack(1, Duration::from_millis(200)).await.unwrap();
        }
        assert_eq!(first.records[0].offset, 0);
        // A get that read offset 1 and was dropped before returning it.
        c.interrupted = true;
        let lost = c.take_records(1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(lost.records[0].offset, 1);
        drop(lost);
        // The next get rolls back (nothing committed: to the first offset read) and reads 0 again.
        let again = c.get_records_without_ack(3, Duration::from_secs(5)).await.unwrap();
        assert_eq!(again.records.first().map(|r| r.offset), Some(0), "{again:?}");
        assert!(matches!(c.ack(first.message.id).await, Err(ClientError::NoSuchBatch { .. })));
        c.close().await;
    }

    #[tokio::test]
    async fn unusable_settings_are_typed_errors() {
        for (config, key) in [
            (KafkaConfig::new(" ", "t", "g"), "bootstrap_servers"),
            (KafkaConfig::new("127.0.0.1:9", "", "g"), "topics"),
            (KafkaConfig::new("127.0.0.1:9", "t", "g").topics(Vec::<String>::new()), "topics"),
            (KafkaConfig::new("127.0.0.1:9", "t", ""), "group_id"),
        ] {
            match KafkaConnector::connect(config).await {
                Err(ClientError::Config { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        let bad = KafkaConfig::new("127.0.0.1:9", "t", "g").set("no.such.setting", "1");
        assert!(matches!(KafkaConnector::connect(bad).await, Err(ClientError::Kafka(_))));
        let bad = KafkaConfig::new("127.0.0.1:9", "t", "g").set("session.timeout.ms", "x");
        assert!(matches!(KafkaConnector::connect(bad).await, Err(ClientError::Kafka(_))));
    }

    #[tokio::test]
    async fn acks_and_rollbacks_of_unknown_batches_are_refused_without_a_broker() {
        let mut c =
            KafkaConnector::connect(KafkaConfig::new("127.0.0.1:9", "t", "g")).await.unwrap();
        assert!(matches!(c.ack(1).await, Err(ClientError::NoSuchBatch { batch_id: 1 })));
        assert!(matches!(c.rollback(3).await, Err(ClientError::NoSuchBatch { batch_id: 3 })));
        assert!(c.outstanding().is_empty());
        // Nothing reachable: an empty batch after the wait, not an error (the broker may come).
        let m = c.get_without_ack(5, Duration::from_millis(300)).await.unwrap();
        assert_eq!(m.id, EMPTY_BATCH_ID);
        c.close().await;
    }
}
