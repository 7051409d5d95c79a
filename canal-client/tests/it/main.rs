//! canal-client integration tests (one binary, modules per area).

#[path = "../../../tools/test-support.rs"]
mod support;

#[cfg(all(feature = "zookeeper", feature = "etcd"))]
mod cli;
#[cfg(all(feature = "zookeeper", feature = "etcd"))]
mod cluster;
mod fake;
mod features;
mod fuzz;
mod ha;
mod interop;
#[cfg(feature = "kafka")]
mod kafka;
mod mq_flat;
mod simple;
