//! Canal's MQ mode, broker-independent part: which topic and partition each change goes to, and
//! the bytes of each message (FlatMessage JSON or the protobuf `Message` packet), as Java Canal's
//! MQ producers write them. canal-server's MQ workers hand the records to Kafka or RabbitMQ.
//!
//! Routing rules and formats are described in docs/configuration.md ("MQ routing").
//!
//! Entries are read in place (`wire`): only entries that a partition rule splits are re-encoded,
//! and FlatMessage JSON is written straight from the entry bytes (`flatjson`), byte for byte what
//! [`crate::flat::FlatMessage`] + serde_json give. `hash` is Java's `String.hashCode` and
//! partition formula; `rules` parses the `canal.mq.*` lists.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::flat::FlatError;
#[cfg(test)]
use crate::flat::{FlatMessage, OrderedMap};

pub mod hash;
mod rules;

use crate::view::{FlatRows, ViewError, wire};
pub use hash::{java_partition, java_string_hash};
use rules::{DynamicTopics, HashMode, PartitionHash, TopicPartitions};
use wire::{EntryView, RowChangeView};

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
    /// `canal.mq.database.hash`: mix the database name's hash into every row hash of a
    /// column (`pk1^pk2`, `$pk$`) rule, as Java does by default.
    pub database_hash: bool,
    /// `canal.instance.filter.transaction.entry` (forced on in Java's MQ mode): leave
    /// TRANSACTIONBEGIN/END entries out of the unsplit protobuf message, as Java's store does
    /// when the flag is on. Split and flat messages never carry them.
    pub filter_transaction_entry: bool,
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
            filter_transaction_entry: true,
        }
    }
}

/// A routing rule that cannot be used, or an entry that cannot be routed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// A `canal.mq.*` value does not parse.
    #[error("invalid {key} {value:?}: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// Its value (the offending item of a list).
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An entry's RowChange does not decode (for callers decoding FlatMessages themselves; the
    /// router reports undecodable bytes as [`RoutingError::Malformed`]).
    #[error(transparent)]
    Flat(#[from] FlatError),
    /// An entry's bytes do not decode (for callers decoding entries with prost themselves).
    #[error("undecodable entry: {0}")]
    Entry(#[from] prost::DecodeError),
    /// An entry's bytes are not valid protobuf (found while reading them in place).
    #[error("malformed entry bytes: {0}")]
    Malformed(&'static str),
    /// A FlatMessage could not be written as JSON.
    #[error("FlatMessage to JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<crate::view::ViewError> for RoutingError {
    fn from(e: crate::view::ViewError) -> Self {
        RoutingError::Malformed(e.0)
    }
}

/// One message for the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqRecord {
    /// Topic (Kafka) or routing key (RabbitMQ).
    pub topic: String,
    /// Partition (Kafka only; 0 from [`Router::route_unpartitioned`]).
    pub partition: i32,
    /// The message bytes. Java Canal sends no Kafka key, and neither do we.
    pub payload: Vec<u8>,
}

/// Where the entries of one table go, computed once per table and cached.
#[derive(Clone, Debug)]
struct TableRoute {
    /// The final topic (after Java's `.` → `_` in dynamic mode).
    topic: Arc<str>,
    /// The first matching `canal.mq.partitionHash` rule.
    hash_rule: Option<usize>,
}

/// Tables whose route is cached; beyond this many the cache starts over (bounded memory with
/// many short-lived tables).
const ROUTE_CACHE_MAX: usize = 65_536;

/// Routes batches of entries to records.
#[derive(Clone, Debug)]
pub struct Router {
    config: RoutingConfig,
    default_topic: Arc<str>,
    dynamic_topics: Option<DynamicTopics>,
    partition_hash: Option<PartitionHash>,
    topic_partitions: Option<TopicPartitions>,
    cache: Arc<Mutex<HashMap<Box<str>, TableRoute>>>,
}

/// A rule list that has no item at all counts as absent (Java tests for an empty string).
fn present(list: &Option<String>) -> Option<&str> {
    list.as_deref().filter(|s| s.split([',', ';']).any(|i| !i.trim().is_empty()))
}

impl Router {
    /// A router for `config`: every rule is parsed and every regex compiled here.
    ///
    /// # Errors
    /// [`RoutingError::Config`] naming the key and the item that does not parse.
    pub fn new(config: RoutingConfig) -> Result<Self, RoutingError> {
        let bad = |key: &'static str, value: String, reason: &str| RoutingError::Config {
            key,
            value,
            reason: reason.to_owned(),
        };
        if config.topic.trim().is_empty() {
            return Err(bad("canal.mq.topic", config.topic.clone(), "empty topic"));
        }
        if config.partition < 0 {
            return Err(bad("canal.mq.partition", config.partition.to_string(), "negative"));
        }
        if let Some(n) = config.partitions_num
            && (n == 0 || n > i32::MAX as u32)
        {
            return Err(bad("canal.mq.partitionsNum", n.to_string(), "must be 1..=2147483647"));
        }
        let dynamic_topics =
            present(&config.dynamic_topic).map(DynamicTopics::parse).transpose()?;
        let partition_hash =
            present(&config.partition_hash).map(PartitionHash::parse).transpose()?;
        let topic_partitions =
            present(&config.dynamic_topic_partition_num).map(TopicPartitions::parse).transpose()?;
        Ok(Self {
            default_topic: Arc::from(config.topic.as_str()),
            config,
            dynamic_topics,
            partition_hash,
            topic_partitions,
            cache: Arc::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// The partition count Java Canal uses for `topic` (a final topic name, as in
    /// [`MqRecord::topic`]): the first matching `canal.mq.dynamicTopicPartitionNum` rule, else
    /// `canal.mq.partitionsNum`, else `None` (hashing then uses one partition).
    pub fn partitions_of(&self, topic: &str) -> Option<u32> {
        self.topic_partitions
            .as_ref()
            .and_then(|t| t.count_for(topic))
            .or(self.config.partitions_num)
    }

    /// The records of one store batch for Kafka, in the order they must be sent (per topic and
    /// partition the binlog order). `raw` are the entries' serialized bytes (what the store
    /// holds), `batch_id` is FlatMessage's `id` and the raw packet's batch id, `now_ms`
    /// FlatMessage's `ts`.
    ///
    /// Topics come in the order of their first entry; within a topic, partitions ascend for a
    /// split protobuf batch, and each FlatMessage's parts follow it in ascending partition order.
    ///
    /// # Errors
    /// [`RoutingError`] when an entry does not decode.
    pub fn route(
        &self,
        batch_id: i64,
        raw: &[Bytes],
        now_ms: i64,
    ) -> Result<Vec<MqRecord>, RoutingError> {
        self.route_batch(batch_id, raw, now_ms, true)
    }

    /// As [`route`](Self::route) for brokers without partitions (Java's RabbitMQ producer): the
    /// topic rules apply (the topic is the routing key), `canal.mq.partition*` do not, and every
    /// record has partition 0.
    ///
    /// # Errors
    /// [`RoutingError`] when an entry does not decode.
    pub fn route_unpartitioned(
        &self,
        batch_id: i64,
        raw: &[Bytes],
        now_ms: i64,
    ) -> Result<Vec<MqRecord>, RoutingError> {
        self.route_batch(batch_id, raw, now_ms, false)
    }

    fn route_batch(
        &self,
        batch_id: i64,
        raw: &[Bytes],
        now_ms: i64,
        partitioned: bool,
    ) -> Result<Vec<MqRecord>, RoutingError> {
        let mut out = Vec::new();
        if raw.is_empty() {
            return Ok(out);
        }
        let views = raw.iter().map(|b| wire::entry_view(b)).collect::<Result<Vec<_>, _>>()?;
        let needs_hash = partitioned && self.partition_hash.is_some();
        let routes: Vec<Option<TableRoute>> = if self.dynamic_topics.is_some() || needs_hash {
            // A poisoned lock only means another thread panicked between two whole inserts; the
            // map itself is consistent, so keep using it.
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let mut key = String::new();
            views
                .iter()
                .map(|v| {
                    (!v.is_transaction_edge()).then(|| self.table_route(&mut cache, &mut key, v))
                })
                .collect()
        } else {
            Vec::new()
        };
        let route_of = |i: usize| routes.get(i).and_then(Option::as_ref);
        if self.dynamic_topics.is_some() {
            // Java's messageTopics: BEGIN/END dropped, one sub-message per topic.
            let mut groups: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
            for (i, r) in routes.iter().enumerate() {
                let Some(r) = r else { continue };
                match groups.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &r.topic) || **t == *r.topic) {
                    Some((_, g)) => g.push(i),
                    None => groups.push((r.topic.clone(), vec![i])),
                }
            }
            for (topic, indices) in groups {
                self.emit(
                    &mut out,
                    &topic,
                    &indices,
                    raw,
                    &views,
                    &route_of,
                    batch_id,
                    now_ms,
                    partitioned,
                    false,
                )?;
            }
        } else {
            let indices: Vec<usize> = (0..raw.len()).collect();
            let topic = self.default_topic.clone();
            self.emit(
                &mut out,
                &topic,
                &indices,
                raw,
                &views,
                &route_of,
                batch_id,
                now_ms,
                partitioned,
                true,
            )?;
        }
        Ok(out)
    }

    fn table_route(
        &self,
        cache: &mut HashMap<Box<str>, TableRoute>,
        key: &mut String,
        v: &EntryView<'_>,
    ) -> TableRoute {
        key.clear();
        key.push_str(v.schema);
        key.push('\0');
        key.push_str(v.table);
        if let Some(r) = cache.get(key.as_str()) {
            return r.clone();
        }
        let topic = match &self.dynamic_topics {
            None => self.default_topic.clone(),
            Some(d) => {
                let t = d.topic_for(v.schema, v.table);
                let t = t.as_deref().unwrap_or(&self.config.topic);
                // Java's producers replace dots in every topic of the dynamic path.
                Arc::from(t.replace('.', "_").as_str())
            }
        };
        let hash_rule = self.partition_hash.as_ref().and_then(|h| h.rule_for(v.schema, v.table));
        let r = TableRoute { topic, hash_rule };
        if cache.len() >= ROUTE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(Box::from(key.as_str()), r.clone());
        r
    }

    /// The records of the entries `indices` for `topic`. `raw_mode`: the batch was not split by
    /// topic, so an unsplit protobuf message is Java's raw-entry packet.
    #[allow(clippy::too_many_arguments)]
    fn emit<'a>(
        &self,
        out: &mut Vec<MqRecord>,
        topic: &str,
        indices: &[usize],
        raw: &[Bytes],
        views: &[EntryView<'_>],
        route_of: &dyn Fn(usize) -> Option<&'a TableRoute>,
        batch_id: i64,
        now_ms: i64,
        partitioned: bool,
        raw_mode: bool,
    ) -> Result<(), RoutingError> {
        let hash = if partitioned { self.partition_hash.as_ref() } else { None };
        let partitions = self.partitions_of(topic).unwrap_or(1);
        let fixed_partition = if partitioned { self.config.partition } else { 0 };
        let record = |partition: u32, payload: Vec<u8>| MqRecord {
            topic: topic.to_owned(),
            partition: partition as i32,
            payload,
        };
        if self.config.flat_message {
            let mut flat = FlatRows::new();
            for &i in indices {
                let v = &views[i];
                // BEGIN/END and other non-row entries have no FlatMessage.
                if v.entry_type != wire::ENTRY_ROWDATA {
                    continue;
                }
                let rc = wire::row_change_view(v.store_value)?;
                flat.parse(v, &rc)?;
                match hash {
                    None => out.push(MqRecord {
                        topic: topic.to_owned(),
                        partition: fixed_partition,
                        payload: flat.json(batch_id, now_ms),
                    }),
                    Some(h) => {
                        let rule = route_of(i).and_then(|r| r.hash_rule).map(|r| h.mode(r));
                        let db_hash = self.config.database_hash;
                        match flat_partitions(&flat, rule, partitions, db_hash)? {
                            FlatParts::Whole(p) => out.push(record(p, flat.json(batch_id, now_ms))),
                            FlatParts::Rows(parts) => {
                                let mut ps: Vec<u32> = parts.clone();
                                ps.sort_unstable();
                                ps.dedup();
                                for p in ps {
                                    let json =
                                        flat.json_of(batch_id, now_ms, &mut |r| parts[r] == p);
                                    out.push(record(p, json));
                                }
                            }
                        }
                    }
                }
            }
            return Ok(());
        }
        let Some(h) = hash else {
            // One message for the whole (sub-)batch.
            let keep = |i: &&usize| {
                !(raw_mode
                    && self.config.filter_transaction_entry
                    && views[**i].is_transaction_edge())
            };
            let kept: Vec<&Bytes> = indices.iter().filter(keep).map(|&i| &raw[i]).collect();
            if !kept.is_empty() {
                out.push(MqRecord {
                    topic: topic.to_owned(),
                    partition: fixed_partition,
                    payload: wire::messages_packet(raw_mode, batch_id, &kept),
                });
            }
            return Ok(());
        };
        // Java's messagePartition over protobuf entries.
        let mut parts: BTreeMap<u32, Vec<EntryBytes<'_>>> = BTreeMap::new();
        for &i in indices {
            let v = &views[i];
            if v.is_transaction_edge() {
                continue;
            }
            let whole = EntryBytes::Raw(&raw[i]);
            if v.entry_type != wire::ENTRY_ROWDATA {
                parts.entry(0).or_default().push(whole);
                continue;
            }
            let rc = wire::row_change_view(v.store_value)?;
            let rule = route_of(i).and_then(|r| r.hash_rule).map(|r| h.mode(r));
            match rule {
                _ if rc.is_ddl || rc.rows.is_empty() => parts.entry(0).or_default().push(whole),
                None => parts.entry(0).or_default().push(whole),
                Some(HashMode::Table) => {
                    let p = java_partition(java_string_hash(v.table), partitions);
                    parts.entry(p).or_default().push(whole);
                }
                Some(mode) => {
                    for row in &rc.rows {
                        let p = row_partition(
                            v,
                            &rc,
                            row.bytes,
                            mode,
                            partitions,
                            self.config.database_hash,
                        )?;
                        let bytes = wire::one_row_entry(&raw[i], &rc, row)?;
                        parts.entry(p).or_default().push(EntryBytes::Owned(bytes));
                    }
                }
            }
        }
        for (p, entries) in parts {
            out.push(record(p, wire::messages_packet(false, 0, &entries)));
        }
        Ok(())
    }
}

/// An entry's bytes in a split message: the stored bytes, or a re-encoded one-row entry.
enum EntryBytes<'a> {
    Raw(&'a Bytes),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for EntryBytes<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Raw(b) => b,
            Self::Owned(v) => v,
        }
    }
}

/// The partition of one protobuf row under a column rule (Java's `messagePartition` over
/// entries): the database's hash (if `database_hash`) XOR the hash of each matching column's
/// value, taken from the before image for DELETE and the after image otherwise.
fn row_partition(
    v: &EntryView<'_>,
    rc: &RowChangeView<'_>,
    row: &[u8],
    mode: &HashMode,
    partitions: u32,
    database_hash: bool,
) -> Result<u32, RoutingError> {
    let mut h = if database_hash { java_string_hash(v.schema) } else { 0 };
    // Java reads RowChange.eventType (proto2 default UPDATE when absent).
    let before = rc.event_type.unwrap_or(wire::EVENT_UPDATE) == wire::EVENT_DELETE;
    wire::for_each_column(row, before, |c| {
        let hit = match mode {
            HashMode::PrimaryKey => c.is_key,
            HashMode::Columns(names) => names.iter().any(|n| rules::eq_ignore_case(n, c.name)),
            HashMode::Table => false,
        };
        if hit {
            h ^= java_string_hash(c.value);
        }
    })?;
    Ok(java_partition(h, partitions))
}

/// Where the rows of one FlatMessage go.
enum FlatParts {
    /// The message unchanged, to one partition.
    Whole(u32),
    /// Row i to partition `parts[i]` (at least two distinct partitions).
    Rows(Vec<u32>),
}

/// Java's `messagePartition` over a FlatMessage: DDL, row-less messages and tables without a
/// rule to partition 0, a table rule by the table's hash, a column rule row by row (the database
/// hash XOR each named column's value hash, NULL or absent counting as nothing).
fn flat_partitions(
    flat: &FlatRows<'_>,
    rule: Option<&HashMode>,
    partitions: u32,
    database_hash: bool,
) -> Result<FlatParts, ViewError> {
    let mode = match rule {
        _ if flat.is_ddl() || flat.rows() == 0 => return Ok(FlatParts::Whole(0)),
        None => return Ok(FlatParts::Whole(0)),
        Some(HashMode::Table) => {
            let p = java_partition(java_string_hash(flat.table()), partitions);
            return Ok(FlatParts::Whole(p));
        }
        Some(m) => m,
    };
    let db_hash = if database_hash { java_string_hash(flat.database()) } else { 0 };
    let parts = (0..flat.rows())
        .map(|row| {
            let mut h = db_hash;
            let names: &mut dyn Iterator<Item = &str> = match mode {
                HashMode::Columns(names) => &mut names.iter().map(String::as_str),
                _ => &mut flat.pk_names().iter().copied(),
            };
            for name in names {
                if let Some(value) = flat.value(row, name)? {
                    h ^= java_string_hash(value);
                }
            }
            Ok(java_partition(h, partitions))
        })
        .collect::<Result<Vec<u32>, ViewError>>()?;
    Ok(if parts.iter().all(|&p| p == parts[0]) {
        // Java's single part holds the same fields, rows and old images: the same JSON.
        FlatParts::Whole(parts[0])
    } else {
        FlatParts::Rows(parts)
    })
}

/// Java's `messagePartition` over a FlatMessage: the parts, in ascending partition order.
/// The reference the differential tests compare [`flat_partitions`] and [`FlatRows`] with.
#[cfg(test)]
/// `old_rows[k]` is the data row that `flat.old[k]` belongs to.
fn split_flat(
    mut flat: FlatMessage,
    old_rows: &[Option<usize>],
    rule: Option<&HashMode>,
    partitions: u32,
    database_hash: bool,
) -> Vec<(u32, FlatMessage)> {
    let has_rows = flat.data.as_ref().is_some_and(|d| !d.is_empty());
    let mode = match rule {
        _ if flat.is_ddl || !has_rows => return vec![(0, flat)],
        None => return vec![(0, flat)],
        Some(HashMode::Table) => {
            return vec![(java_partition(java_string_hash(&flat.table), partitions), flat)];
        }
        Some(m) => m,
    };
    let pk_names: &[String] = match mode {
        HashMode::Columns(names) => names,
        _ => flat.pk_names.as_deref().unwrap_or_default(),
    };
    let db_hash = if database_hash { java_string_hash(&flat.database) } else { 0 };
    let row_partition = |row: &OrderedMap<Option<String>>| {
        let mut h = db_hash;
        for name in pk_names {
            // A missing column or a SQL NULL hashes as "" (0), as in Java.
            if let Some(Some(value)) = row.get(name) {
                h ^= java_string_hash(value);
            }
        }
        java_partition(h, partitions)
    };
    let data = flat.data.as_deref().unwrap_or_default();
    let row_parts: Vec<u32> = data.iter().map(row_partition).collect();
    let first = row_parts[0];
    if row_parts.iter().all(|&p| p == first) {
        // Java's single part holds the same fields, rows and old images: the same JSON.
        return vec![(first, flat)];
    }
    let data = flat.data.take().unwrap_or_default();
    let old = flat.old.take().unwrap_or_default();
    let mut parts: BTreeMap<u32, FlatMessage> = BTreeMap::new();
    for (row, p) in data.into_iter().zip(&row_parts) {
        let part = parts.entry(*p).or_insert_with(|| flat.clone());
        part.data.get_or_insert_with(Vec::new).push(row);
    }
    for (image, owner) in old.into_iter().zip(old_rows) {
        if let Some(part) = owner.and_then(|d| row_parts.get(d)).and_then(|p| parts.get_mut(p)) {
            part.old.get_or_insert_with(Vec::new).push(image);
        }
    }
    parts.into_iter().collect()
}

#[cfg(test)]
pub(crate) mod tests;
