//! canal-core integration tests (one binary, modules per area).

#[path = "../../../tools/test-support.rs"]
mod support;

mod all_types;
mod codec;
mod decode;
mod entry;
mod instance;
mod interop;
mod position;
mod replica;
mod schema;
mod services;
