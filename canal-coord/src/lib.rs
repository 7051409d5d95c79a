//! Coordination for Canal HA: one session trait ([`Session`]) with ZooKeeper, etcd and embedded
//! local backends, Canal's node layout and JSON, the running-node policy ([`RunningMonitor`])
//! written once above the trait, and fenced cursor storage ([`CursorStore`]).
//!
//! This crate stores bytes and knows nothing of MySQL; `canal-core` depends on it, not the
//! other way round. The ZooKeeper and etcd backends are the `zookeeper` and `etcd` features
//! (default on); the local backend is always built, and a config naming a backend this build
//! lacks is a [`ConfigError`].

pub mod backend;
pub mod config;
pub mod coordinator;
pub mod cursor;
pub mod data;
pub mod error;
pub mod path;
pub mod running;
pub mod session;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{BackendKind, ConfigError, CoordConfig};
pub use coordinator::{ClusterRegistration, Coordinator};
pub use cursor::{CursorError, CursorOrder, CursorStore, FlushPolicy};
pub use data::{ClientRunningData, RunningData, ServerRunningData};
pub use error::CoordError;
pub use running::{
    ExitFlush, ExitReason, Gate, GrabAdvice, GrabGate, Lease, MonitorHandle, RunningEvent,
    RunningMonitor, RunningStatus,
};
pub use session::{
    Backend, Fence, Node, Session, SessionId, SessionState, Version, Watch, WatchEvent,
};
