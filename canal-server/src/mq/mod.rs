//! MQ mode (`canal.serverMode = kafka | rabbitMQ`): the active server of a destination reads its
//! store as client [`MQ_CLIENT_ID`] and publishes every change into a broker, in Java Canal's
//! formats (FlatMessage JSON or the protobuf `Message` packet; routing in `canal_core::mq`).
//!
//! Delivery is at-least-once through any failover: a store batch is acked — and the client's
//! cursor moves — only after the broker confirmed every message of it (Kafka `acks=all` with the
//! idempotent producer, RabbitMQ publisher confirms). A failed send rolls back every batch not
//! yet acked and sends them again after a backoff. At most `max_in_flight_batches` batches are
//! unconfirmed (back-pressure: the store fills, then the binlog reader waits).
//!
//! After each confirmed batch the worker records a *resume marker* (the position of the last
//! entry published) beside the cursor. A cursor can only point at a transaction boundary, so an
//! activation resuming from it reads again the entries of a transaction that were already
//! published; the marker lets it skip exactly those. In Kafka transactional mode the marker is
//! committed in the same Kafka transaction as the messages, so read_committed consumers see
//! every row once. See docs/configuration.md ("MQ mode") for the guarantees.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use canal_core::binlog::replica::Backoff;
use canal_core::mq::{MqRecord, Router, RoutingError};
use canal_core::position::{EntryPosition, LogIdentity};
use canal_core::protocol::entry::Entry;
use canal_core::store::GetWait;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::model::{KafkaSection, RabbitmqSection, ServerMode};
use crate::destination::{Destination, RequestError};

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

/// The client id the MQ worker reads the store as (Java Canal's MQ mode uses the same).
pub const MQ_CLIENT_ID: i16 = 1001;

/// MQ mode settings of the server, per destination routing included.
#[derive(Clone, Debug)]
pub struct MqSettings {
    /// Kafka or RabbitMQ.
    pub mode: ServerMode,
    /// How the worker reads and retries.
    pub worker: WorkerConfig,
    /// Kafka producer settings.
    pub kafka: KafkaSection,
    /// RabbitMQ producer settings.
    pub rabbitmq: RabbitmqSection,
    /// Routing of each destination.
    pub routing: std::collections::BTreeMap<String, canal_core::mq::RoutingConfig>,
}

/// How the MQ worker reads the store and retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Store batch size (entries in ITEMSIZE mode, memunits in MEMSIZE mode).
    pub batch_size: usize,
    /// How long a GET waits for a full batch.
    pub get_timeout: Duration,
    /// Unconfirmed batches at most.
    pub max_in_flight: usize,
    /// First retry pause.
    pub backoff: Duration,
    /// Longest retry pause.
    pub backoff_max: Duration,
    /// How long a graceful stop waits for the broker to confirm what is in flight.
    pub drain_limit: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch_size: 50,
            get_timeout: Duration::from_millis(100),
            max_in_flight: 8,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            drain_limit: Duration::from_secs(10),
        }
    }
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqError {
    /// The producer settings are unusable (never retried).
    #[error("MQ configuration: {0}")]
    Config(String),
    /// The broker or the connection failed; retried with backoff.
    #[error("broker: {0}")]
    Transient(String),
    /// The broker refused for good (message too large, unknown partition, unroutable message,
    /// fenced by a newer producer): the destination fails and is restarted by the supervisor.
    #[error("broker refused: {0}")]
    Fatal(String),
    /// This binary was built without the producer.
    #[error("serverMode {mode} needs canal-server built with the `{feature}` feature")]
    NotCompiled {
        /// The mode asked for.
        mode: &'static str,
        /// The cargo feature.
        feature: &'static str,
    },
    /// An entry could not be routed or rendered.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// The destination refused a request (closed, failed).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// This server's lease on the running node lapsed (e.g. it was stopped past its session
    /// timeout): another server may own the destination, so nothing is published until the
    /// lease is renewed (or the activation ends).
    #[error("the lease on the running node lapsed: not publishing")]
    LeaseLapsed,
    /// The resume marker read back does not parse.
    #[error("unreadable MQ resume marker: {0}")]
    Marker(String),
}

impl MqError {
    /// Whether sending again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, MqError::Transient(_) | MqError::LeaseLapsed)
    }
}

/// Resolves when the broker confirmed every record of one send.
pub type Confirmation = Pin<Box<dyn Future<Output = Result<(), MqError>> + Send>>;

/// A broker producer.
#[async_trait::async_trait]
pub trait Producer: Send + Sync + fmt::Debug {
    /// Hands `records` to the broker client in order, waiting while its buffer is full; the
    /// returned future resolves once the broker confirmed every one of them.
    ///
    /// # Errors
    /// [`MqError`] when the records cannot be handed over.
    async fn send(&self, records: Vec<MqRecord>) -> Result<Confirmation, MqError>;

    /// Whether records go to partitions (Kafka) or only to a routing key (RabbitMQ, where
    /// Canal's partition keys do not apply).
    fn partitioned(&self) -> bool {
        true
    }

    /// The transactional side, when this producer commits batches in broker transactions.
    fn transactional(&self) -> Option<&dyn Transactional> {
        None
    }
}

/// A producer that commits each batch with the destination's resume marker in one broker
/// transaction (Kafka transactional mode).
#[async_trait::async_trait]
pub trait Transactional: Send + Sync {
    /// The marker last committed for the destination (read_committed), if any.
    ///
    /// # Errors
    /// [`MqError`] when it cannot be read: never "none" on an error.
    async fn committed_marker(&self) -> Result<Option<Vec<u8>>, MqError>;

    /// Sends `records` and `marker` in one transaction and commits it; on error the transaction
    /// is aborted (nothing of it is visible to read_committed consumers).
    ///
    /// # Errors
    /// [`MqError`].
    async fn commit(&self, records: Vec<MqRecord>, marker: Vec<u8>) -> Result<(), MqError>;
}

/// Opens the producer of `destination` for `settings.mode`.
///
/// # Errors
/// [`MqError::Config`], [`MqError::NotCompiled`], or a broker error while connecting.
pub async fn open_producer(
    settings: &MqSettings,
    destination: &str,
) -> Result<Arc<dyn Producer>, MqError> {
    match settings.mode {
        ServerMode::Tcp => Err(MqError::Config("serverMode tcp has no producer".into())),
        #[cfg(feature = "kafka")]
        ServerMode::Kafka => {
            Ok(Arc::new(kafka::KafkaProducer::open(&settings.kafka, destination).await?))
        }
        #[cfg(not(feature = "kafka"))]
        ServerMode::Kafka => {
            let _ = destination;
            Err(MqError::NotCompiled { mode: "kafka", feature: "kafka" })
        }
        #[cfg(feature = "rabbitmq")]
        ServerMode::Rabbitmq => {
            Ok(Arc::new(rabbitmq::RabbitProducer::open(&settings.rabbitmq).await?))
        }
        #[cfg(not(feature = "rabbitmq"))]
        ServerMode::Rabbitmq => Err(MqError::NotCompiled { mode: "rabbitMQ", feature: "rabbitmq" }),
    }
}

/// Where the last published entry was: a resume after it skips what is not after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeMarker {
    /// The source address the positions belong to (`LogIdentity` of the destination).
    pub source: String,
    /// Position of the last entry published.
    pub last: EntryPosition,
    /// How many entries at exactly `last` were published (payload transactions give several
    /// entries one position).
    pub at_last: u64,
}

impl ResumeMarker {
    /// JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("marker serializes")
    }

    /// From JSON bytes.
    ///
    /// # Errors
    /// [`MqError::Marker`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MqError> {
        serde_json::from_slice(bytes).map_err(|e| MqError::Marker(e.to_string()))
    }
}

fn source_of(identity: &LogIdentity) -> String {
    serde_json::to_string(&identity.source_address).expect("an address serializes")
}

/// Skips, at the start of an activation, the entries a previous one already published.
#[derive(Debug)]
struct Skipper {
    marker: Option<ResumeMarker>,
    seen_at_last: u64,
}

impl Skipper {
    /// Drops from the front of `entries` every entry at or before the marker. Once an entry
    /// after the marker is seen, the skipper is spent.
    fn apply(&mut self, entries: &mut Vec<bytes::Bytes>) -> Result<usize, MqError> {
        let Some(m) = &self.marker else { return Ok(0) };
        let mut skip = 0;
        for bytes in entries.iter() {
            let pos = entry_position(bytes)?;
            match pos.cmp_in_file_order(&m.last) {
                std::cmp::Ordering::Less => skip += 1,
                std::cmp::Ordering::Equal if self.seen_at_last < m.at_last => {
                    self.seen_at_last += 1;
                    skip += 1;
                }
                _ => {
                    self.marker = None;
                    break;
                }
            }
        }
        entries.drain(..skip);
        Ok(skip)
    }
}

fn entry_position(bytes: &[u8]) -> Result<EntryPosition, MqError> {
    let entry = Entry::decode(bytes).map_err(RoutingError::from)?;
    let h = entry.header.unwrap_or_default();
    Ok(EntryPosition {
        journal_name: Some(h.logfile_name().to_owned()),
        position: Some(h.logfile_offset()),
        timestamp: Some(h.execute_time()),
        server_id: Some(h.server_id()),
        gtid: None,
        included: false,
    })
}

/// The marker after publishing `entries` (non-empty), continuing `prev`.
fn next_marker(
    source: &str,
    entries: &[bytes::Bytes],
    prev: Option<&ResumeMarker>,
) -> Result<ResumeMarker, MqError> {
    let last = entry_position(entries.last().expect("non-empty batch"))?;
    let mut at_last = 0u64;
    for bytes in entries.iter().rev() {
        if entry_position(bytes)?.cmp_in_file_order(&last).is_eq() {
            at_last += 1;
        } else {
            break;
        }
    }
    // Every entry of the batch is at `last`: the previous batch may have ended there too.
    if at_last == entries.len() as u64
        && let Some(p) = prev
        && p.source == source
        && p.last.cmp_in_file_order(&last).is_eq()
    {
        at_last += p.at_last;
    }
    Ok(ResumeMarker { source: source.to_owned(), last, at_last })
}

/// Counters of one server's MQ workers (summed over destinations; shown by `/metrics`).
#[derive(Debug, Default)]
pub struct MqMetrics {
    /// Batches confirmed by the broker and acked.
    pub batches: AtomicU64,
    /// Messages confirmed.
    pub messages: AtomicU64,
    /// Entries skipped at a resume because a previous activation published them.
    pub skipped: AtomicU64,
    /// Failed sends (each rolls back what was in flight).
    pub send_failures: AtomicU64,
}

/// Where the worker keeps its resume marker between activations.
#[async_trait::async_trait]
pub trait MarkerStore: Send + Sync + fmt::Debug {
    /// The marker, if any.
    ///
    /// # Errors
    /// A read failure (never "none").
    async fn load(&self) -> Result<Option<ResumeMarker>, MqError>;
    /// Records `marker` (queued behind the cursor of the same ack).
    fn store(&self, marker: &ResumeMarker);
}

/// One destination's MQ worker for one instance run.
#[derive(Debug)]
pub struct Worker {
    pub(crate) destination: Arc<Destination>,
    pub(crate) router: Router,
    pub(crate) producer: Arc<dyn Producer>,
    pub(crate) markers: Arc<dyn MarkerStore>,
    pub(crate) config: WorkerConfig,
    pub(crate) metrics: Arc<MqMetrics>,
}

struct InFlight {
    batch_id: i64,
    confirmation: Confirmation,
    marker: Option<ResumeMarker>,
    messages: u64,
}

impl Worker {
    /// Publishes until `stop` turns true (then waits up to the drain limit for what is in
    /// flight and acks it) or a fatal error. Transient broker errors are retried forever with
    /// backoff; fatal ones end the run with the error (the supervisor restarts the instance).
    ///
    /// # Errors
    /// [`MqError`] that retrying cannot fix; [`MqError::Request`] when the destination closes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), MqError> {
        let dest = self.destination.clone();
        dest.subscribe(MQ_CLIENT_ID, "")?;
        let source = source_of(dest.identity());
        let transactional = self.producer.transactional();
        let start_marker = match transactional {
            Some(t) => match t.committed_marker().await? {
                Some(b) => Some(ResumeMarker::from_bytes(&b)?),
                None => None,
            },
            None => self.markers.load().await?,
        };
        let start_marker = start_marker.filter(|m| {
            let same = m.source == source;
            if !same {
                warn!(
                    marker_source = %m.source,
                    %source,
                    "the resume marker belongs to another source: entries after the cursor may be published again"
                );
            }
            same
        });
        if let Some(m) = &start_marker {
            info!(last = ?m.last, at_last = m.at_last, "resuming after the last published entry");
        }
        let mut skipper = Skipper { marker: start_marker.clone(), seen_at_last: 0 };
        let mut last_marker = start_marker.clone();
        // The marker of the last batch the broker confirmed.
        let mut confirmed = start_marker;
        let mut inflight: std::collections::VecDeque<InFlight> = Default::default();
        let mut backoff = Backoff::new(self.config.backoff, self.config.backoff_max);
        let wait = GetWait::Timeout(self.config.get_timeout);
        loop {
            if *stop.borrow() {
                return self.drain(inflight, &mut confirmed).await;
            }
            let can_get = inflight.len() < self.config.max_in_flight.max(1);
            let step: Result<(), MqError> = tokio::select! {
                biased;
                _ = async { stop.wait_for(|s| *s).await.map(drop) } => continue,
                r = async { inflight.front_mut().expect("checked").confirmation.as_mut().await },
                    if !inflight.is_empty() => {
                    match r {
                        Ok(()) => {
                            let done = inflight.pop_front().expect("checked");
                            self.acked(done, &mut confirmed)?;
                            backoff.reset();
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                got = dest.get(MQ_CLIENT_ID, self.config.batch_size, wait), if can_get => {
                    match got? {
                        None => Ok(()),
                        // A lapsed lease: another server may be publishing; hand nothing over.
                        Some(_) if !dest.may_serve() => Err(MqError::LeaseLapsed),
                        Some(batch) => {
                            let mut entries = batch.batch.entries;
                            let skipped = skipper.apply(&mut entries)?;
                            self.metrics.skipped.fetch_add(skipped as u64, Ordering::Relaxed);
                            let marker = if entries.is_empty() {
                                None
                            } else {
                                Some(next_marker(&source, &entries, last_marker.as_ref())?)
                            };
                            let now = now_ms();
                            let records = if self.producer.partitioned() {
                                self.router.route(batch.id, &entries, now)?
                            } else {
                                self.router.route_unpartitioned(batch.id, &entries, now)?
                            };
                            let messages = records.len() as u64;
                            let sent = match (transactional, &marker) {
                                (Some(t), Some(m)) => match t.commit(records, m.to_bytes()).await {
                                    Ok(()) => Ok(Box::pin(std::future::ready(Ok(()))) as Confirmation),
                                    Err(e) => Err(e),
                                },
                                _ => self.producer.send(records).await,
                            };
                            match sent {
                                Ok(confirmation) => {
                                    if marker.is_some() {
                                        last_marker.clone_from(&marker);
                                    }
                                    inflight.push_back(InFlight { batch_id: batch.id, confirmation, marker, messages });
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            }
                        }
                    }
                }
            };
            if let Err(e) = step {
                if !e.is_transient() {
                    return Err(e);
                }
                self.metrics.send_failures.fetch_add(1, Ordering::Relaxed);
                // Everything not acked is delivered again, from the oldest unacked batch.
                inflight.clear();
                dest.rollback(MQ_CLIENT_ID, 0)?;
                // The next batch continues from what was confirmed, not from what was sent.
                last_marker.clone_from(&confirmed);
                let delay = backoff.next_delay();
                warn!("publishing failed, sending again in {delay:?}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = async { stop.wait_for(|s| *s).await.map(drop) } => return Ok(()),
                }
            }
        }
    }

    fn acked(&self, done: InFlight, confirmed: &mut Option<ResumeMarker>) -> Result<(), MqError> {
        self.destination.ack(MQ_CLIENT_ID, done.batch_id)?;
        if let Some(m) = done.marker {
            self.markers.store(&m);
            *confirmed = Some(m);
        }
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics.messages.fetch_add(done.messages, Ordering::Relaxed);
        Ok(())
    }

    /// Graceful stop: waits (bounded) for the broker to confirm what is in flight and acks it,
    /// so that the cursor written at hand-over covers it.
    async fn drain(
        &self,
        mut inflight: std::collections::VecDeque<InFlight>,
        confirmed: &mut Option<ResumeMarker>,
    ) -> Result<(), MqError> {
        let limit = self.config.drain_limit;
        let done = tokio::time::timeout(limit, async {
            while let Some(mut f) = inflight.pop_front() {
                match f.confirmation.as_mut().await {
                    Ok(()) => self.acked(f, confirmed)?,
                    Err(e) => {
                        warn!("unconfirmed at hand-over (published again by the next owner): {e}");
                        return Ok(());
                    }
                }
            }
            Ok::<(), MqError>(())
        })
        .await;
        match done {
            Ok(r) => r,
            Err(_) => {
                warn!(
                    "the broker did not confirm the in-flight batches within {limit:?}; the next owner publishes them again"
                );
                Ok(())
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use canal_core::protocol::entry::Header;

    use super::*;

    fn entry_at(file: &str, offset: i64) -> bytes::Bytes {
        let e = Entry {
            header: Some(Header {
                logfile_name: Some(file.to_owned()),
                logfile_offset: Some(offset),
                ..Header::default()
            }),
            ..Entry::default()
        };
        e.encode_to_vec().into()
    }

    fn marker(file: &str, offset: i64, at_last: u64) -> ResumeMarker {
        ResumeMarker {
            source: "s".into(),
            last: EntryPosition {
                journal_name: Some(file.into()),
                position: Some(offset),
                ..EntryPosition::default()
            },
            at_last,
        }
    }

    #[test]
    fn the_skipper_drops_exactly_what_the_marker_covers() {
        let mut entries =
            vec![entry_at("b.000001", 100), entry_at("b.000001", 200), entry_at("b.000001", 300)];
        let mut s = Skipper { marker: Some(marker("b.000001", 200, 1)), seen_at_last: 0 };
        assert_eq!(s.apply(&mut entries).unwrap(), 2);
        assert_eq!(entries.len(), 1);
        assert_eq!(entry_position(&entries[0]).unwrap().position, Some(300));
        // Spent: later batches are left alone even if they were to go backwards.
        let mut later = vec![entry_at("b.000001", 150)];
        assert_eq!(s.apply(&mut later).unwrap(), 0);
        assert_eq!(later.len(), 1);
    }

    #[test]
    fn the_skipper_counts_entries_sharing_the_last_position_across_batches() {
        // A payload transaction: four entries at one position, two of them published.
        let mut s = Skipper { marker: Some(marker("b.000002", 50, 2)), seen_at_last: 0 };
        let mut first = vec![entry_at("b.000002", 50)];
        assert_eq!(s.apply(&mut first).unwrap(), 1);
        assert!(first.is_empty());
        let mut second = vec![entry_at("b.000002", 50), entry_at("b.000002", 50)];
        assert_eq!(s.apply(&mut second).unwrap(), 1, "the second of two published");
        assert_eq!(second.len(), 1, "the third is new");
        // A later binlog file is after the marker.
        let mut s = Skipper { marker: Some(marker("b.000002", 50, 1)), seen_at_last: 0 };
        let mut next_file = vec![entry_at("b.000003", 4)];
        assert_eq!(s.apply(&mut next_file).unwrap(), 0);
    }

    #[test]
    fn markers_count_trailing_entries_at_the_last_position() {
        let batch = vec![entry_at("b.1", 10), entry_at("b.1", 20), entry_at("b.1", 20)];
        let m = next_marker("s", &batch, None).unwrap();
        assert_eq!((m.last.position, m.at_last), (Some(20), 2));
        // A batch wholly at the previous marker's position continues its count.
        let more = vec![entry_at("b.1", 20)];
        let m2 = next_marker("s", &more, Some(&m)).unwrap();
        assert_eq!(m2.at_last, 3);
        // ... but not the count of another source's marker.
        let other = ResumeMarker { source: "t".into(), ..m.clone() };
        assert_eq!(next_marker("s", &more, Some(&other)).unwrap().at_last, 1);
        let round = ResumeMarker::from_bytes(&m2.to_bytes()).unwrap();
        assert_eq!(round, m2);
        assert!(matches!(ResumeMarker::from_bytes(b"{"), Err(MqError::Marker(_))));
    }

    #[test]
    fn an_undecodable_entry_is_a_routing_error_not_a_skip() {
        let mut s = Skipper { marker: Some(marker("b.1", 1, 1)), seen_at_last: 0 };
        let mut bad = vec![bytes::Bytes::from_static(&[0xff, 0xff, 0xff])];
        assert!(matches!(s.apply(&mut bad), Err(MqError::Routing(_))));
    }
}
