//! The binlog pipeline (feature `mysql`): the replica connection that dumps raw events, the pure
//! decoder that turns event bytes into values, and the converter that turns events into Canal
//! entries.

pub mod decode;
pub mod entry;
#[doc(hidden)]
pub mod fuzzing;
mod pbwrite;
pub mod pipeline;
pub mod replica;
mod tiebreak;
