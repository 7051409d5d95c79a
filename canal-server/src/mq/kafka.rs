//! The Kafka producer of MQ mode (librdkafka through `rdkafka`).
//!
//! At-least-once mode: an idempotent producer with `acks=all` (librdkafka keeps per-partition
//! order through its own retries); a batch is confirmed when every delivery report came back
//! without error.
//!
//! Transactional mode (`kafka.transactional`): one producer per destination with
//! `transactional.id = canal-<destination>`; `init_transactions` fences any older producer of the
//! same destination (a deposed owner can no longer commit) and aborts what it left open. Each
//! batch is one transaction holding its messages and the destination's resume marker, written to
//! the compacted position topic under the destination's name.

use std::time::Duration;

use canal_core::mq::MqRecord;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::{Confirmation, MqError, Producer, Transactional};
use crate::config::model::KafkaSection;

/// How long transactional calls (init, commit, abort) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// A Kafka producer for one destination.
pub struct KafkaProducer {
    producer: FutureProducer,
    config: ClientConfig,
    transactional: bool,
    position_topic: String,
    destination: String,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("transactional", &self.transactional)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

/// The librdkafka settings of `section` (named keys first, then `properties`).
pub fn client_config(section: &KafkaSection) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &section.bootstrap_servers)
        .set("acks", &section.acks)
        .set("compression.type", &section.compression_type)
        .set("batch.size", section.batch_size.to_string())
        .set("linger.ms", section.linger_ms.to_string())
        .set("message.max.bytes", section.max_request_size.to_string())
        .set("enable.idempotence", section.idempotence.to_string());
    if let Some(r) = section.retries {
        c.set("message.send.max.retries", r.to_string());
    }
    for (k, v) in &section.properties {
        c.set(k, v);
    }
    c
}

fn classify(e: &KafkaError) -> MqError {
    use RDKafkaErrorCode as C;
    let fatal = match e {
        KafkaError::Transaction(t) => t.is_fatal() || !t.is_retriable() && !t.txn_requires_abort(),
        _ => matches!(
            e.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::UnknownPartition
                    | C::InvalidMessage
                    | C::InvalidRecord
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::TransactionalIdAuthorizationFailed
                    | C::ProducerFenced
                    | C::InvalidProducerEpoch
                    | C::OutOfOrderSequenceNumber
                    | C::InvalidTransactionalState
                    | C::Fatal
            )
        ),
    };
    if fatal { MqError::Fatal(e.to_string()) } else { MqError::Transient(e.to_string()) }
}

fn config_error(e: KafkaError) -> MqError {
    match e {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(..) => {
            MqError::Config(format!("Kafka producer settings: {e}"))
        }
        other => classify(&other),
    }
}

impl KafkaProducer {
    /// Creates the producer of `destination` (and in transactional mode: the position topic if
    /// missing, then `init_transactions`, which fences older producers of the destination).
    ///
    /// # Errors
    /// [`MqError::Config`] for settings librdkafka refuses; broker errors.
    pub async fn open(section: &KafkaSection, destination: &str) -> Result<Self, MqError> {
        if section.bootstrap_servers.trim().is_empty() {
            return Err(MqError::Config("kafka.bootstrap.servers is empty".into()));
        }
        let mut config = client_config(section);
        if section.transactional {
            if !section.idempotence {
                return Err(MqError::Config(
                    "kafka.transactional needs the idempotent producer".into(),
                ));
            }
            if section.position_topic.trim().is_empty() {
                return Err(MqError::Config("kafka.position.topic is empty".into()));
            }
            config.set("transactional.id", format!("canal-{destination}"));
        }
        let producer: FutureProducer = config.create().map_err(config_error)?;
        let me = Self {
            producer,
            config,
            transactional: section.transactional,
            position_topic: section.position_topic.clone(),
            destination: destination.to_owned(),
        };
        if me.transactional {
            me.ensure_position_topic().await?;
            let p = me.producer.clone();
            tokio::task::spawn_blocking(move || p.init_transactions(TXN_TIMEOUT))
                .await
                .map_err(|e| MqError::Transient(format!("init_transactions task: {e}")))?
                .map_err(|e| classify(&e))?;
        }
        Ok(me)
    }

    async fn ensure_position_topic(&self) -> Result<(), MqError> {
        let admin: AdminClient<DefaultClientContext> =
            self.config.create().map_err(config_error)?;
        let topic = NewTopic::new(&self.position_topic, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics([&topic], &opts).await.map_err(|e| classify(&e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(MqError::Transient(format!("creating position topic {t}: {code}")));
                }
            }
        }
        Ok(())
    }

    fn enqueue(
        &self,
        records: &[MqRecord],
    ) -> Result<Vec<rdkafka::producer::DeliveryFuture>, MqError> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let mut record =
                FutureRecord::<(), [u8]>::to(&r.topic).payload(&r.payload).partition(r.partition);
            loop {
                match self.producer.send_result(record) {
                    Ok(f) => {
                        out.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's queue is full: serve delivery reports, then try again.
                        self.producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                    Err((e, _)) => return Err(producer_error(&self.producer, &e)),
                }
            }
        }
        Ok(out)
    }
}

/// The error of a failed call, fatal when the producer itself is in a fatal state (librdkafka
/// then refuses everything: only a new producer can go on, which a new run opens).
fn producer_error(producer: &FutureProducer, e: &KafkaError) -> MqError {
    if let Some((code, reason)) = producer.client().fatal_error() {
        return MqError::Fatal(format!("{e} (the producer is in a fatal state: {code}: {reason})"));
    }
    classify(e)
}

async fn confirm_all(
    producer: FutureProducer,
    futures: Vec<rdkafka::producer::DeliveryFuture>,
) -> Result<(), MqError> {
    for f in futures {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(producer_error(&producer, &e)),
            Err(_) => return Err(MqError::Transient("the producer was dropped".into())),
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, records: Vec<MqRecord>) -> Result<Confirmation, MqError> {
        let futures = self.enqueue(&records)?;
        Ok(Box::pin(confirm_all(self.producer.clone(), futures)))
    }

    fn transactional(&self) -> Option<&dyn Transactional> {
        if self.transactional { Some(self) } else { None }
    }
}

#[async_trait::async_trait]
impl Transactional for KafkaProducer {
    async fn committed_marker(&self) -> Result<Option<Vec<u8>>, MqError> {
        let mut cfg = self.config.clone();
        for k in [
            "transactional.id",
            "acks",
            "compression.type",
            "batch.size",
            "linger.ms",
            "enable.idempotence",
            "message.send.max.retries",
        ] {
            cfg.remove(k);
        }
        cfg.set("group.id", format!("canal-marker-{}", self.destination))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        let topic = self.position_topic.clone();
        let dest = self.destination.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, MqError> {
            let consumer: BaseConsumer = cfg.create().map_err(config_error)?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Beginning).map_err(|e| classify(&e))?;
            consumer.assign(&tpl).map_err(|e| classify(&e))?;
            let deadline = std::time::Instant::now() + TXN_TIMEOUT;
            let mut last = None;
            loop {
                if std::time::Instant::now() > deadline {
                    return Err(MqError::Transient(format!(
                        "reading the position topic {topic} did not reach its end within {TXN_TIMEOUT:?}"
                    )));
                }
                match consumer.poll(Duration::from_millis(200)) {
                    None => {}
                    Some(Ok(m)) if m.key() == Some(dest.as_bytes()) => {
                        last = m.payload().map(<[u8]>::to_vec);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(KafkaError::PartitionEOF(_))) => return Ok(last),
                    Some(Err(e)) => return Err(classify(&e)),
                }
            }
        })
        .await
        .map_err(|e| MqError::Transient(format!("position reader task: {e}")))?
    }

    async fn commit(&self, records: Vec<MqRecord>, marker: Vec<u8>) -> Result<(), MqError> {
        self.producer.begin_transaction().map_err(|e| classify(&e))?;
        let sent = async {
            let mut futures = self.enqueue(&records)?;
            let marker_record = FutureRecord::to(&self.position_topic)
                .partition(0)
                .key(self.destination.as_bytes())
                .payload(&marker);
            futures.push(self.producer.send_result(marker_record).map_err(|(e, _)| classify(&e))?);
            let p = self.producer.clone();
            tokio::task::spawn_blocking(move || p.commit_transaction(TXN_TIMEOUT))
                .await
                .map_err(|e| MqError::Transient(format!("commit task: {e}")))?
                .map_err(|e| classify(&e))?;
            confirm_all(self.producer.clone(), futures).await
        }
        .await;
        if let Err(e) = &sent {
            let p = self.producer.clone();
            let aborted =
                tokio::task::spawn_blocking(move || p.abort_transaction(TXN_TIMEOUT)).await;
            match aborted {
                Ok(Ok(())) => {}
                // The producer cannot abort (fenced, fatal): nothing more can be committed with
                // it; the run ends and the next one opens a new producer.
                Ok(Err(a)) => return Err(MqError::Fatal(format!("{e}; then abort failed: {a}"))),
                Err(j) => return Err(MqError::Fatal(format!("{e}; then abort task failed: {j}"))),
            }
        }
        sent
    }
}
