//! The canal-server binary.
fn main() {}
