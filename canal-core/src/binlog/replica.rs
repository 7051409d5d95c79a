//! The replica connection: register as a replica and dump raw binlog events.
