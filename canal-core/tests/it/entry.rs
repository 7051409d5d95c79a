//! Entries built from every fixture binlog: the hand-written protobuf encoding of row entries is
//! exactly what prost writes for the same message (so Java's proto2 parser reads it), every
//! transaction is BEGIN … END, and Canal's column semantics hold (INSERT after-columns updated,
//! before-columns never updated, UPDATE flags match value changes).
#![cfg(feature = "mysql")]

use std::path::{Path, PathBuf};

use canal_core::binlog::entry::{ConvertOptions, Converter};
use canal_core::binlog::pipeline::LocalBinlogSource;
use canal_core::protocol::entry::{Entry, EntryType, EventType, RowChange};
use prost::Message;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap().flatten() {
        if dir.path().is_dir() {
            for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn row_entries_are_canonical_protobuf_with_canal_semantics() {
    let mut checked_rows = 0;
    for file in fixtures() {
        let Ok(mut source) = LocalBinlogSource::new(vec![file.clone()], None, 4) else { continue };
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let mut conv = Converter::new(ConvertOptions::default(), None, &name);
        let mut out = Vec::new();
        while let Ok(Some((_, raw))) = source.next_event() {
            // Some fixtures hold deliberately odd events; conversion errors are the decoder
            // tests' business. Entries that were built must be right.
            let _ = conv.convert(raw, &mut out);
        }
        for built in &out {
            let entry = Entry::decode(built.bytes.clone()).expect("entry decodes");
            assert_eq!(
                entry.encode_to_vec(),
                built.bytes.as_ref(),
                "{name}: canonical Entry bytes"
            );
            if entry.entry_type() != EntryType::Rowdata {
                continue;
            }
            let rc = RowChange::decode(entry.store_value()).unwrap();
            assert_eq!(rc.encode_to_vec(), entry.store_value(), "{name}: canonical RowChange");
            let header = entry.header.as_ref().unwrap();
            assert_eq!(header.logfile_offset, built.position.position);
            for row in &rc.row_datas {
                checked_rows += 1;
                assert!(
                    row.before_columns.iter().all(|c| !c.updated()),
                    "{name}: before never updated"
                );
                match rc.event_type() {
                    EventType::Insert => {
                        assert!(row.before_columns.is_empty());
                        assert!(
                            row.after_columns.iter().all(|c| c.updated()),
                            "{name}: insert updated"
                        );
                    }
                    EventType::Delete => assert!(row.after_columns.is_empty()),
                    EventType::Update => {
                        for a in &row.after_columns {
                            let b = row.before_columns.iter().find(|b| b.index == a.index);
                            let changed = match b {
                                None => true,
                                Some(b) => (b.is_null(), b.value()) != (a.is_null(), a.value()),
                            };
                            assert_eq!(
                                a.updated(),
                                changed,
                                "{name}: updated flag of {}",
                                a.name()
                            );
                        }
                    }
                    _ => {}
                }
                for c in row.before_columns.iter().chain(&row.after_columns) {
                    assert_eq!(
                        c.value.is_none(),
                        c.is_null(),
                        "{name}: value unset exactly when NULL"
                    );
                }
            }
        }
    }
    assert!(checked_rows > 100, "fixtures gave only {checked_rows} rows");
}

/// The short CI run of the fuzz body (decoder + converter): every fixture with bytes flipped and
/// cut at strided positions. The long run is `cargo run --release -p canal-core --example
/// fuzz_decode` (and `cargo fuzz` on nightly).
#[test]
fn decoder_and_converter_survive_mutations() {
    let mut execs = 0;
    for file in fixtures() {
        let Ok(bytes) = std::fs::read(&file) else { continue };
        if !bytes.starts_with(&canal_core::binlog::decode::BINLOG_MAGIC) {
            continue;
        }
        let step = (bytes.len() / 150).max(1);
        for at in (4..bytes.len()).step_by(step) {
            for x in [0xffu8, 0x80, 0x01] {
                let mut m = bytes.clone();
                m[at] ^= x;
                canal_core::binlog::fuzzing::exercise(&m);
                execs += 1;
            }
            canal_core::binlog::fuzzing::exercise(&bytes[..at]);
            execs += 1;
        }
    }
    assert!(execs > 1000, "only {execs} executions");
}
