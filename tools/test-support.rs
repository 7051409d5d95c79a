//! Shared by every crate's integration tests (included with `#[path]`): finds the real services that
//! `cargo xtask services up` started, and decides whether a test without its service skips or fails.

#![allow(dead_code)]

/// Endpoint of a test service from its environment variable (`CANAL_TEST_MYSQL`,
/// `CANAL_TEST_MYSQL_ADMIN`, `CANAL_TEST_ZK`, `CANAL_TEST_ETCD`, `CANAL_TEST_KAFKA`,
/// `CANAL_TEST_RABBITMQ`, ...).
///
/// When the variable is unset: with `CANAL_REQUIRE_INTEGRATION=1` (as `cargo xtask test` sets) the
/// test fails; otherwise it prints why it skips and returns `None`.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            if std::env::var("CANAL_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
                panic!(
                    "{var} is not set but CANAL_REQUIRE_INTEGRATION=1: run `cargo xtask services up`"
                );
            }
            skip(&format!("{var} is not set (run the tests through `cargo xtask test`)"));
            None
        }
    }
}

/// Path of a file under `../shared` (the project's reference material, outside the repository:
/// only fixtures whose licence keeps them out of the repository are read from there; the
/// permissively licensed ones are vendored under `canal-core/tests/fixtures`).
///
/// When the file is absent: with `CANAL_REQUIRE_SHARED=1` (as `cargo xtask test` sets whenever
/// `../shared` exists) the test fails; otherwise it records a skip ([`skip`]) and returns `None`.
pub fn shared_file(rel: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    let p = root.join(rel);
    if p.exists() {
        Some(p)
    } else {
        if std::env::var("CANAL_REQUIRE_SHARED").as_deref() == Ok("1") {
            panic!("{} is missing but CANAL_REQUIRE_SHARED=1", p.display());
        }
        skip(&format!("{} is absent (../shared is not part of the repository)", p.display()));
        None
    }
}

/// Records that the running test skips (part of) its work: prints `SKIP: <test>: <why>` and,
/// when `CANAL_TEST_LOG` names a file (as `cargo xtask test` sets), appends a `skip` line to it,
/// so the run's summary counts skips even though libtest hides a passing test's output.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    eprintln!("SKIP: {test}: {why}");
    log_line("skip", &format!("{test}: {why}"));
}

/// Records that the running test compared our decoding of one fixture with an independent oracle
/// (a `mysqlbinlog` sidecar, upstream expectations, python-mysql-replication); counted by
/// `cargo xtask test`'s summary.
pub fn oracle_checked(what: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    log_line("oracle", &format!("{test}: {what}"));
}

/// Appends `<kind>\t<text>` to `$CANAL_TEST_LOG` (one `write` of one line with O_APPEND, so the
/// lines of concurrent tests and test binaries do not interleave). A log that cannot be written
/// fails the test: the summary would otherwise undercount.
fn log_line(kind: &str, text: &str) {
    use std::io::Write;
    let Ok(path) = std::env::var("CANAL_TEST_LOG") else { return };
    let line = format!("{kind}\t{}\n", text.replace(['\n', '\t'], " "));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .unwrap_or_else(|e| panic!("CANAL_TEST_LOG {path}: {e}"));
}

/// The Python venv of the MQ tests: the third-party clients that read what canal-rs publishes
/// (PyPI confluent-kafka for Kafka, pika for RabbitMQ). One name and one pinned list, so that
/// every MQ test shares one venv: `python_venv(MQ_VENV, MQ_VENV_REQUIREMENTS)`.
pub const MQ_VENV: &str = "mq-venv";
/// Versions that install here (confluent-kafka ships manylinux wheels with librdkafka inside).
pub const MQ_VENV_REQUIREMENTS: &[&str] = &["confluent-kafka==2.16.1", "pika==1.3.2"];

/// A Python venv under the target dir with `requirements` installed (built once, reused while the
/// requirements are unchanged; built in a private directory and renamed into place so concurrent
/// test binaries neither see a half-built venv nor fight over one; tests of one binary asking at
/// the same time wait for one build). `CANAL_TEST_PYTHON` picks the
/// interpreter. Without python3/pip/PyPI: skip with a message, or fail when
/// `CANAL_REQUIRE_INTEGRATION=1`.
pub fn python_venv(name: &str, requirements: &[&str]) -> Option<std::path::PathBuf> {
    match build_venv(name, requirements) {
        Ok(v) => Some(v),
        Err(err) => {
            if std::env::var("CANAL_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
                panic!("python venv {name} unavailable but CANAL_REQUIRE_INTEGRATION=1: {err}");
            }
            skip(&format!("python venv {name} unavailable: {err}"));
            None
        }
    }
}

fn build_venv(name: &str, requirements: &[&str]) -> Result<std::path::PathBuf, String> {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    // Tests run as threads of one process: without this, two of them would build into the same
    // private directory (named by the pid) at once. A panicking holder leaves nothing to repair.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let venv = target.join(name);
    let marker = venv.join("requirements.ok");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(venv);
    }
    let tmp = target.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let python = std::env::var("CANAL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|err| format!("{what}: cannot run: {err}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
        }
    };
    let result = run(Command::new(&python).arg("-m").arg("venv").arg(&tmp), "python3 -m venv")
        .and_then(|()| {
            run(
                Command::new(tmp.join("bin/python"))
                    .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                    .args(requirements),
                "pip install",
            )
        })
        .and_then(|()| {
            std::fs::write(tmp.join("requirements.ok"), &wanted).map_err(|e| e.to_string())
        });
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err);
    }
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        // Another test binary finished the same venv meanwhile (and may be using it).
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another run won the race; use its venv if it is complete.
        let _ = std::fs::remove_dir_all(&tmp);
        if !marker.exists() {
            return Err("could not move the venv into place".into());
        }
    }
    Ok(venv)
}

/// Permissively licensed binlog fixtures in canal-core/tests/fixtures (see its README), by golden
/// name: canal-core's decoder goldens and canal-server's `decode` goldens cover each.
pub const LOCAL_BINLOGS: &[(&str, &str)] = &[
    ("blackbeam-json", "blackbeam/json.binlog.000001"),
    ("blackbeam-json-opaque", "blackbeam/json-opaque.binlog"),
    ("blackbeam-transaction-compression", "blackbeam/transaction_compression.000001"),
    ("blackbeam-enum-string-set", "blackbeam/mysql-enum-string-set.000001"),
    ("blackbeam-type-bit", "blackbeam/mysql_type_bit.000001"),
    ("blackbeam-time-issue", "blackbeam/time_issue.000001"),
    ("blackbeam-minimal-row-metadata", "blackbeam/minimal_row_metadata.000001"),
    ("blackbeam-invisible-columns", "blackbeam/binlog-invisible-columns.000001"),
    ("blackbeam-gtid-tag", "blackbeam/binlog_transaction_with_GTID_TAG.000001"),
    ("blackbeam-previous-gtid-no-tag", "blackbeam/binlog_transaction_previous_GTID_no_tag.000001"),
    ("blackbeam-vector", "blackbeam/vector.binlog"),
    ("blackbeam-mariadb", "blackbeam/mariadb-bin.000001"),
    ("osheroff-checksum-crc32", "osheroff/mysql-bin.checksum-crc32"),
    ("osheroff-checksum-none", "osheroff/mysql-bin.checksum-none"),
    ("osheroff-compressed", "osheroff/mysql-bin.compressed"),
    ("osheroff-aurora-padding", "osheroff/mysql-bin.aurora-padding"),
    ("canal-dbsync", "canal/dbsync-mysql-bin.000001"),
    ("canal-tsdb-2", "canal/tsdb-mysql-bin.000002"),
    ("canal-tsdb-3", "canal/tsdb-mysql-bin.000003"),
    ("rust-us-delete-rows-v2", "rust-us/8.0_32_delete_rows_v2.binlog.000001"),
    ("rust-us-write-rows-v2", "rust-us/5.7_30_write_rows_v2.log.bin"),
    ("rust-us-user-var", "rust-us/5.7_14_user_var.log.bin"),
    ("go-mysql-decimal", "go-mysql/tcb-eval002c-bin.003320"),
    ("zalora-01", "zalora/mysql-bin.01"),
    ("zalora-07-mariadb", "zalora/mysql-bin.07"),
];

/// Binlogs kept outside the repository (paths for [`shared_file`]): MariaDB 10.11 files generated
/// for this project.
pub const SHARED_BINLOGS: &[(&str, &str)] = &[
    ("mariadb-generated-1", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000001"),
    ("mariadb-generated-2", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000002"),
    ("mariadb-generated-3", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000003"),
    ("mariadb-generated-4", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000004"),
    ("mariadb-generated-5", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000005"),
    ("mariadb-generated-6", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000006"),
];
