//! Shared by every crate's integration tests (included with `#[path]`): finds the real services that
//! `cargo xtask services up` started, and decides whether a test without its service skips or fails.

#![allow(dead_code)]

/// Endpoint of a test service from its environment variable (`CANAL_TEST_MYSQL`,
/// `CANAL_TEST_MYSQL_ADMIN`, `CANAL_TEST_ZK`, `CANAL_TEST_ETCD`, ...).
///
/// When the variable is unset: with `CANAL_REQUIRE_INTEGRATION=1` (as `cargo xtask test` sets) the
/// test fails; otherwise it prints why it skips and returns `None`.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            if std::env::var("CANAL_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
                panic!("{var} is not set but CANAL_REQUIRE_INTEGRATION=1: run `cargo xtask services up`");
            }
            eprintln!("skipping: {var} is not set (run the tests through `cargo xtask test`)");
            None
        }
    }
}

/// Path of a file under `../shared` (the project's reference material), or `None` with a message
/// when that directory is absent (it is not part of the repository).
pub fn shared_file(rel: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    let p = root.join(rel);
    if p.exists() {
        Some(p)
    } else {
        if std::env::var("CANAL_REQUIRE_SHARED").as_deref() == Ok("1") {
            panic!("{} is missing but CANAL_REQUIRE_SHARED=1", p.display());
        }
        eprintln!("skipping: {} is absent (../shared is not part of the repository)", p.display());
        None
    }
}
