//! The binlog pipeline (feature `mysql`): the replica connection that dumps raw events, and the pure
//! decoder that turns event bytes into values.

pub mod decode;
pub mod replica;
