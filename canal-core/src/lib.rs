//! canal-core: Canal's data model (positions, wire protocol, entries) and, behind the default `mysql`
//! feature, the binlog pipeline that turns a MySQL/MariaDB replication stream into Canal entries.

#[cfg(feature = "mysql")]
pub mod binlog;
pub mod filter;
pub mod flat;
#[cfg(feature = "mysql")]
pub mod instance;
pub mod mq;
pub mod position;
pub mod protocol;
#[cfg(feature = "mysql")]
pub mod schema;
pub mod store;
pub mod view;
