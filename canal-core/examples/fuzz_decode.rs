//! A stable-toolchain mutation fuzzer for the binlog decoder and converter (cargo-fuzz needs
//! nightly): seeded random mutations of the fixture binlogs — byte flips, overwrites with
//! boundary values, truncations, duplicated and dropped ranges, length fields set to extremes —
//! each run through `canal_core::binlog::fuzzing::exercise`. A panic stops the run with the seed
//! and iteration to reproduce it, and writes the input to `fuzz-crash.bin`.
//!
//! `cargo run --release -p canal-core --example fuzz_decode -- [EXECS] [SEED]`

use std::path::Path;
use std::time::Instant;

use canal_core::binlog::fuzzing::exercise;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/fixtures").flatten() {
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if let Ok(bytes) = std::fs::read(f.path())
                && bytes.starts_with(&[0xfe, b'b', b'i', b'n'])
            {
                files.push(bytes);
            }
        }
    }
    files.sort();
    files
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if d.len() < 8 {
            break;
        }
        let at = 4 + rng.below(d.len() - 4);
        match rng.below(7) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d[at] = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.below(5)],
            2 => d.truncate(at),
            3 => {
                let len = rng.below(64).min(d.len() - at);
                let chunk = d[at..at + len].to_vec();
                let to = 4 + rng.below(d.len() - 4);
                d.splice(to..to, chunk);
            }
            4 => {
                let len = rng.below(64).min(d.len() - at);
                d.drain(at..at + len);
            }
            5 => {
                // A 32-bit little-endian field (event sizes, lengths) set to an extreme.
                let v: u32 = [0, 1, 19, 0x7fff_ffff, 0xffff_ffff][rng.below(5)];
                let end = (at + 4).min(d.len());
                d[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
            _ => {
                let v = rng.next().to_le_bytes();
                let end = (at + 8).min(d.len());
                d[at..end].copy_from_slice(&v[..end - at]);
            }
        }
    }
    d
}

fn main() {
    let mut args = std::env::args().skip(1);
    let execs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15);
    let corpus = corpus();
    assert!(!corpus.is_empty(), "no fixture binlogs");
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let mut decoded = 0usize;
    for i in 0..execs {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base);
        match std::panic::catch_unwind(|| exercise(&input)) {
            Ok(n) => decoded += n,
            Err(_) => {
                eprintln!("PANIC at exec {i} (seed {seed}); input of {} bytes", input.len());
                let _ = std::fs::write("fuzz-crash.bin", &input);
                std::process::exit(1);
            }
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!("{} execs, {:.0} s", i + 1, t0.elapsed().as_secs_f64());
        }
    }
    println!(
        "{execs} execs over {} fixture files in {:.1} s, no crash ({decoded} events decoded)",
        corpus.len(),
        t0.elapsed().as_secs_f64()
    );
}
