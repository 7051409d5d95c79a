//! canal-client integration tests (one binary, modules per area).

#[path = "../../../tools/test-support.rs"]
mod support;

mod cli;
mod cluster;
mod fake;
mod fuzz;
mod ha;
mod interop;
#[cfg(feature = "kafka")]
mod kafka;
mod mq_flat;
mod simple;
