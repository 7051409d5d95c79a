//! canal-client: a Rust client for Canal servers (canal-rs and Java Canal), speaking Canal's TCP
//! protocol with canal-core's codec and no MySQL code.
//!
//! * [`SimpleConnector`]: one connection to one server (Java's `SimpleCanalConnector`):
//!   connect (handshake, scrambled-password auth), subscribe, get / get-without-ack, ack,
//!   rollback, unsubscribe, disconnect.
//! * [`ClusterConnector`]: finds the active server through the coordinator (the destination's
//!   running node, else its cluster members) or a static list, reconnects on server loss with
//!   bounded exponential backoff (re-subscribing and rolling back, as Java's cluster connector),
//!   and optionally takes part in client HA (one active consumer per client id).
//! * [`Message`] and the row-change view ([`RowChangeView`], [`RowView`], [`Columns`]); [`view`]
//!   reads entries in place from their bytes (borrowed `&str`s, FlatMessage / Entry JSON written
//!   straight into a buffer) for the fast path.
//! * [`mq`]: what Canal's MQ mode publishes (FlatMessage JSON, protobuf MESSAGES packets) back
//!   into entries; with the `kafka` feature, `kafka::KafkaConnector` consumes Kafka topics as
//!   [`Message`]s with get / ack / rollback mapped onto the group's offsets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), canal_client::ClientError> {
//! use canal_client::{ConnectorConfig, SimpleConnector};
//! let mut c = SimpleConnector::new("127.0.0.1:11111", ConnectorConfig::new("example"))?;
//! c.connect().await?;
//! c.subscribe(".*\\..*").await?;
//! let batch = c.get_without_ack(100, Some(1000), canal_client::TimeUnit::Milliseconds).await?;
//! for change in batch.row_changes() {
//!     let change = change?;
//!     for row in change.rows() {
//!         println!("{}.{} {} {:?}", change.schema(), change.table(), change.event_type_name(),
//!             row.current().to_map());
//!     }
//! }
//! c.ack(batch.id).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod cluster;
pub mod connector;
pub mod error;
#[cfg(feature = "kafka")]
pub mod kafka;

pub mod message;
pub mod mq;
/// Entries read in place from their bytes (canal-core's views and printers), for consumers that
/// print, filter or forward without decoding entries into owned structs: see
/// [`Message::views`] and [`ConnectorConfig::decode_entries`].
pub use canal_core::view;
pub use cluster::{Backoff, ClusterConfig, ClusterConnector, Discovery};
pub use connector::{ConnectorConfig, DEFAULT_CLIENT_ID, SimpleConnector, TimeUnit};
pub use error::ClientError;
pub use message::{Columns, EMPTY_BATCH_ID, Message, RowChangeView, RowView, Rows};

/// canal-core's protocol types, re-exported so users need no direct dependency.
pub use canal_core::protocol::entry;
