//! canal-server as a library: destinations as clients see them, the Canal TCP protocol sessions,
//! configuration, and the process that runs instances under HA.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod config;
pub mod destination;
pub mod history_store;
pub mod mq;
pub mod server;
pub mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
