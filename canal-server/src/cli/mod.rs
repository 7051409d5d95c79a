//! Command-line entry points of the canal-server binary.

pub mod admin;
pub mod decode;
pub mod run;
