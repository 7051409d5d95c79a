//! Canal's MQ mode, broker-independent part: which topic and partition each change goes to, and
//! the bytes of each message (FlatMessage JSON or the protobuf `Message` packet), as Java Canal's
//! MQ producers write them. canal-server's MQ workers hand the records to Kafka or RabbitMQ.
//!
//! Routing rules and formats are described in docs/configuration.md (MQ section).

use bytes::Bytes;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::flat::{FlatError, FlatMessage};
use crate::protocol::entry::Entry;
use crate::protocol::packet::{Messages, Packet, PacketType};

/// The routing and format settings of one destination (Java's `canal.mq.*` keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// `canal.mq.flatMessage`: FlatMessage JSON (one message per row entry) instead of the
    /// protobuf `Message` packet (one per batch).
    pub flat_message: bool,
    /// `canal.mq.topic`: the topic when no dynamic rule matches.
    pub topic: String,
    /// `canal.mq.dynamicTopic`: per-table topic rules.
    pub dynamic_topic: Option<String>,
    /// `canal.mq.partition`: the partition when no hash rule applies.
    pub partition: i32,
    /// `canal.mq.partitionsNum`: partitions of hashed topics.
    pub partitions_num: Option<u32>,
    /// `canal.mq.partitionHash`: hash rules (`db.table:pk1^pk2`, `$pk$`, regex forms).
    pub partition_hash: Option<String>,
    /// `canal.mq.dynamicTopicPartitionNum`: per-topic partition counts for dynamic topics.
    pub dynamic_topic_partition_num: Option<String>,
    /// `canal.mq.database.hash`: without a matching hash rule, hash by database name.
    pub database_hash: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            flat_message: true,
            topic: "example".to_owned(),
            dynamic_topic: None,
            partition: 0,
            partitions_num: None,
            partition_hash: None,
            dynamic_topic_partition_num: None,
            database_hash: true,
        }
    }
}

/// A routing rule that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// A `canal.mq.*` value does not parse.
    #[error("invalid {key} {value:?}: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An entry's RowChange does not decode.
    #[error(transparent)]
    Flat(#[from] FlatError),
    /// An entry's bytes do not decode.
    #[error("undecodable entry: {0}")]
    Entry(#[from] prost::DecodeError),
}

/// One message for the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqRecord {
    /// Topic (Kafka) or routing key (RabbitMQ).
    pub topic: String,
    /// Partition (Kafka only).
    pub partition: i32,
    /// The message bytes.
    pub payload: Vec<u8>,
}

/// Routes batches of entries to records.
#[derive(Clone, Debug)]
pub struct Router {
    config: RoutingConfig,
}

impl Router {
    /// A router for `config`.
    ///
    /// # Errors
    /// [`RoutingError::Config`] for a rule that does not parse.
    pub fn new(config: RoutingConfig) -> Result<Self, RoutingError> {
        Ok(Self { config })
    }

    /// The settings.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// The records of one store batch, in the order they must be sent (per topic and partition
    /// the binlog order). `raw` are the entries' serialized bytes (what the store holds),
    /// `batch_id` is FlatMessage's `id`, `now_ms` its `ts`.
    ///
    /// # Errors
    /// [`RoutingError`] when an entry does not decode.
    pub fn route(
        &self,
        batch_id: i64,
        raw: &[Bytes],
        now_ms: i64,
    ) -> Result<Vec<MqRecord>, RoutingError> {
        let c = &self.config;
        if !c.flat_message {
            let body = Messages { batch_id: 0, messages: raw.to_vec() };
            let packet = Packet {
                version: Some(1),
                r#type: PacketType::Messages as i32,
                body: body.encode_to_vec().into(),
                ..Packet::default()
            };
            return Ok(vec![MqRecord {
                topic: c.topic.clone(),
                partition: c.partition,
                payload: packet.encode_to_vec(),
            }]);
        }
        let mut out = Vec::new();
        for bytes in raw {
            let entry = Entry::decode(bytes.as_ref())?;
            if let Some(flat) = FlatMessage::from_entry(&entry, batch_id, now_ms)? {
                out.push(MqRecord {
                    topic: c.topic.clone(),
                    partition: c.partition,
                    payload: serde_json::to_vec(&flat).expect("FlatMessage serializes"),
                });
            }
        }
        Ok(out)
    }
}
