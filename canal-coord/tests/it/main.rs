//! canal-coord integration tests (one binary, modules per area).

#[path = "../../../tools/test-support.rs"]
mod support;

mod conformance;
mod fault;
mod layout;
mod local_store;
mod policy;
mod services;
mod zk_session;
