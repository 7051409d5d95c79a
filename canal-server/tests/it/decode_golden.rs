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

const FORMATS: &[&str] = &["flat", "entry", "count"];

fn fixtures() -> Vec<(&'static str, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../canal-core/tests/fixtures");
    let mut all: Vec<_> =
        support::LOCAL_BINLOGS.iter().map(|(n, rel)| (*n, root.join(rel))).collect();
    for (n, rel) in support::SHARED_BINLOGS {
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
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
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
            let single = decode(&file, format, &["--threads", "0"]);
            check(name, format, &single);
            // Renderer threads change nothing in the output (the default: one less than the CPUs).
            for threads in [&["--threads", "1"][..], &["--threads", "3"], &[]] {
                let threaded = decode(&file, format, threads);
                assert!(threaded == single, "{name} --format {format} {threads:?} differs");
            }
        }
    }
}

/// Several files in one run (chunks spanning files, many chunks through the threads): the
/// same output with and without renderer threads.
#[test]
fn decode_threads_keep_order_over_many_chunks() {
    // Every fixture, eight times over: several MB of output, dozens of chunks.
    let one: Vec<PathBuf> = fixtures().into_iter().map(|(_, f)| f).collect();
    let files: Vec<&PathBuf> = std::iter::repeat_n(&one, 8).flatten().collect();
    for format in ["flat", "entry"] {
        let run = |extra: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_canal-server"))
                .args(["decode", "--format", format, "--no-checksum"])
                .args(extra)
                .args(&files)
                .output()
                .expect("run canal-server decode");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        let single = run(&["--threads", "0"]);
        assert!(single.len() > 1 << 20, "{} bytes: too little to span chunks", single.len());
        assert!(run(&["--threads", "2"]) == single, "--format {format} --threads 2 differs");
    }
}
