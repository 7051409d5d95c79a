//! canal-server integration tests (one binary, modules per area).

#[path = "../../../tools/test-support.rs"]
mod support;

mod admin;
mod balance;
mod brokers;
mod canal_python;
mod config;
mod ddl_failover;
mod decode_golden;
mod failure;
mod ha;
mod ha_harness;
mod ha_process;
mod mq;
mod mq_failover;
mod mq_types;
mod reload;
mod schema_history;
mod session;
mod soak;
mod wire;
