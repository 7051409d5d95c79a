//! `canal-server decode` output, byte for byte, over every binlog fixture and every format,
//! compared with `tests/golden/decode/` (regenerate with `UPDATE_EXPECT=1` and review the diff).
//! The same goldens hold `--threads N` to the single-threaded output.
//!
//! Outputs up to [`FULL_TEXT_LIMIT`] bytes are stored as text; longer ones (the 800 KB entry
//! dump of a generated MariaDB file) as one `length FNV-1a` line per output line, which still
//! names the first differing line.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support;

const FULL_TEXT_LIMIT: usize = 64 * 1024;

/// The fixtures of canal-core's decoder goldens (canal-core/tests/it/decode.rs), by golden name.
const LOCAL: &[(&str, &str)] = &[
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

/// MariaDB 10.11 files generated for this project (kept outside the repository).
const SHARED: &[(&str, &str)] = &[
    ("mariadb-generated-1", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000001"),
    ("mariadb-generated-2", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000002"),
    ("mariadb-generated-3", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000003"),
    ("mariadb-generated-4", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000004"),
    ("mariadb-generated-5", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000005"),
    ("mariadb-generated-6", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000006"),
];

const FORMATS: &[&str] = &["flat", "entry", "count"];

fn fixtures() -> Vec<(&'static str, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../canal-core/tests/fixtures");
    let mut all: Vec<_> = LOCAL.iter().map(|(n, rel)| (*n, root.join(rel))).collect();
    for (n, rel) in SHARED {
        if let Some(p) = support::shared_file(rel) {
            all.push((*n, p));
        }
    }
    all
}

fn decode(file: &Path, format: &str, extra: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_canal-server"))
        .args(["decode", "--format", format])
        .args(extra)
        .arg(file)
        .output()
        .expect("run canal-server decode");
    assert!(
        out.status.success(),
        "decode --format {format} {extra:?} {}: {}\n{}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// What is stored for `output`: the text itself, or its line digests when it is long.
fn stored_form(output: &[u8]) -> (Vec<u8>, &'static str) {
    if output.len() <= FULL_TEXT_LIMIT {
        return (output.to_vec(), "");
    }
    let mut s = String::new();
    for line in output.split_inclusive(|&b| b == b'\n') {
        s.push_str(&format!("{} {:016x}\n", line.len(), fnv1a(line)));
    }
    (s.into_bytes(), ".digest")
}

fn check(name: &str, format: &str, output: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/decode");
    let (stored, suffix) = stored_form(output);
    let path = dir.join(format!("{name}.{format}{suffix}"));
    if std::env::var("UPDATE_EXPECT").as_deref() == Ok("1") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, &stored).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run with UPDATE_EXPECT=1 to create it)", path.display())
    });
    if expected != stored {
        let (e, a) = (String::from_utf8_lossy(&expected), String::from_utf8_lossy(&stored));
        let line = e.lines().zip(a.lines()).position(|(x, y)| x != y).unwrap_or(0);
        panic!(
            "{} differs at line {} (expected {} bytes, got {})\nexpected: {:?}\nactual:   {:?}",
            path.display(),
            line + 1,
            expected.len(),
            stored.len(),
            e.lines().nth(line),
            a.lines().nth(line)
        );
    }
}

#[test]
fn decode_output_matches_goldens() {
    for (name, file) in fixtures() {
        for format in FORMATS {
            check(name, format, &decode(&file, format, &[]));
        }
    }
}
