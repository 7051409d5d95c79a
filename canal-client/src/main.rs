//! The `canal-client` binary.
fn main() {}
