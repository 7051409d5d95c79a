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

/// The raw events of a fixture, in file order.
fn raw_events(rel: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel);
    let mut source = LocalBinlogSource::new(vec![path], None, 4).unwrap();
    let mut out = Vec::new();
    while let Some((_, raw)) = source.next_event().unwrap() {
        out.push(raw.to_vec());
    }
    out
}

/// MySQL 8 fixtures whose transactions are compressed (TRANSACTION_PAYLOAD).
const PAYLOAD_FIXTURES: &[&str] =
    &["blackbeam/transaction_compression.000001", "osheroff/mysql-bin.compressed"];

/// The (timestamp, server id) of every event inside the TRANSACTION_PAYLOAD events of `events`.
fn inner_headers(events: &[Vec<u8>]) -> Vec<(u32, u32)> {
    use canal_core::binlog::decode::{Decoder, EventData};
    let mut dec = Decoder::new(Default::default());
    let mut out = Vec::new();
    for raw in events {
        let ev = dec.decode(raw).unwrap();
        if let EventData::TransactionPayload(p) = ev.data {
            for inner in p.events() {
                let inner = canal_core::binlog::decode::EventHeader::parse(inner.unwrap()).unwrap();
                out.push((inner.timestamp, inner.server_id));
            }
        }
    }
    out
}

/// A TABLE_MAP inside a compressed transaction is looked up like an outer one: a converter whose
/// history does not know the table asks for it (NeedTable, at the payload's position) without
/// changing anything, asks again when called again unanswered, and once answered decodes the
/// rows with the answered definition's column names.
#[test]
fn inner_payload_table_maps_ask_for_their_table() {
    use canal_core::binlog::entry::ConvertError;
    use canal_core::schema::{HistoryOptions, SchemaHistory, SnapshotTable};
    for rel in PAYLOAD_FIXTURES {
        let events = raw_events(rel);
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        let history = SchemaHistory::new(HistoryOptions::default());
        let mut conv = Converter::new(ConvertOptions::default(), Some(history), name);
        let mut out = Vec::new();
        let mut asked = Vec::new();
        for raw in &events {
            loop {
                let before = out.len();
                match conv.convert(raw, &mut out) {
                    Ok(()) => break,
                    Err(ConvertError::NeedTable { table, position }) => {
                        assert_eq!(raw[4], 40, "{rel}: asked for {table} by a TRANSACTION_PAYLOAD");
                        assert_eq!(out.len(), before, "{rel}: NeedTable emitted nothing");
                        // Unanswered, the same question again: nothing changed.
                        match conv.convert(raw, &mut out) {
                            Err(ConvertError::NeedTable { table: t, position: p }) => {
                                assert_eq!((&t, &p), (&table, &position));
                            }
                            other => panic!("{rel}: retry without an answer gave {other:?}"),
                        }
                        // The fixtures' own column types (see their golden decodes), under
                        // names the binlog does not carry.
                        let v = |n: u32| format!("varchar({n}) CHARACTER SET utf8mb4 NOT NULL");
                        let types: Vec<String> = match (table.schema.as_str(), table.table.as_str())
                        {
                            ("test", "tb1") => vec!["int(11)".into()],
                            ("demo", "movies") => {
                                let mut t = vec!["int(11) NOT NULL".to_owned(), v(256)];
                                t.extend(["int(11) NOT NULL".to_owned(), v(256), v(256)]);
                                t.extend([v(1024), v(512), v(256), v(256), v(256), v(256)]);
                                t
                            }
                            t => panic!("{rel}: unexpected table {t:?}"),
                        };
                        let cols: Vec<String> = types
                            .iter()
                            .enumerate()
                            .map(|(i, ty)| format!("`learned_{i}` {ty}"))
                            .collect();
                        let ddl = format!("CREATE TABLE `{}` ({})", table.table, cols.join(", "));
                        let snap = SnapshotTable { schema: table.schema.clone(), ddl: Some(ddl) };
                        let failed = conv
                            .history_mut()
                            .unwrap()
                            .record_current_snapshot(
                                &position,
                                &[snap],
                                std::slice::from_ref(&table),
                            )
                            .unwrap();
                        assert!(failed.is_empty(), "{failed:?}");
                        asked.push(table);
                    }
                    Err(e) => panic!("{rel}: {e}"),
                }
            }
        }
        assert_eq!(asked.len(), 1, "{rel}: one table asked for once: {asked:?}");
        let mut rows = 0;
        for built in &out {
            let entry = Entry::decode(built.bytes.clone()).unwrap();
            if entry.entry_type() != EntryType::Rowdata {
                continue;
            }
            let header = entry.header.as_ref().unwrap();
            if header.table_name() != asked[0].table {
                continue;
            }
            let rc = RowChange::decode(entry.store_value()).unwrap();
            for row in &rc.row_datas {
                for c in row.before_columns.iter().chain(&row.after_columns) {
                    assert_eq!(c.name(), format!("learned_{}", c.index()), "{rel}");
                    rows += 1;
                }
            }
        }
        assert!(rows > 0, "{rel}: rows of the asked table were decoded");
    }
}

/// Entries built from events inside a TRANSACTION_PAYLOAD carry the inner event's own
/// timestamp and server id (as Java's), not the payload's: the payload header is rewritten to
/// another time and server id and the entries must not follow it.
#[test]
fn inner_payload_events_keep_their_header_time_and_server_id() {
    for rel in PAYLOAD_FIXTURES {
        let mut events = raw_events(rel);
        let inner = inner_headers(&events);
        assert!(!inner.is_empty(), "{rel}: has a payload");
        let mut payload_offsets = Vec::new();
        for raw in events.iter_mut().filter(|r| r[4] == 40) {
            let (ts, sid) = (4_000_000_000u32, 0xdead_beefu32);
            assert!(inner.iter().all(|&(t, s)| t != ts && s != sid));
            // Keep the CRC (when the fixture has one) right for the rewritten header.
            let body = raw.len() - 4;
            let had_crc = u32::from_le_bytes(raw[body..].try_into().unwrap())
                == crc32fast::hash(&raw[..body]);
            raw[0..4].copy_from_slice(&ts.to_le_bytes());
            raw[5..9].copy_from_slice(&sid.to_le_bytes());
            if had_crc {
                let fixed = crc32fast::hash(&raw[..body]);
                raw[body..].copy_from_slice(&fixed.to_le_bytes());
            }
            let size = u32::from_le_bytes(raw[9..13].try_into().unwrap());
            let log_pos = u32::from_le_bytes(raw[13..17].try_into().unwrap());
            payload_offsets.push(i64::from(log_pos - size));
        }
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        let mut conv = Converter::new(ConvertOptions::default(), None, name);
        let mut out = Vec::new();
        for raw in &events {
            conv.convert(raw, &mut out).unwrap_or_else(|e| panic!("{rel}: {e}"));
        }
        let mut checked = 0;
        for built in &out {
            let entry = Entry::decode(built.bytes.clone()).unwrap();
            let header = entry.header.as_ref().unwrap();
            if !payload_offsets.contains(&header.logfile_offset()) {
                continue;
            }
            let got = ((header.execute_time() / 1000) as u32, header.server_id() as u32);
            assert!(inner.contains(&got), "{rel}: entry header {got:?} is an inner event's");
            assert_eq!(built.position.timestamp, Some(header.execute_time()));
            assert_eq!(built.position.server_id, Some(header.server_id()));
            checked += 1;
        }
        assert!(checked >= 3, "{rel}: only {checked} entries from payloads");
    }
}

/// A compressed transaction is converted a piece at a time when the converter is bounded
/// (`set_payload_chunk`, as the instance sets it to its flush size): no call returns more than
/// the bound plus one inner event's entries, the rest waits in `convert_pending`, and the pieces
/// put together are byte for byte the entries of the unbounded conversion.
#[test]
fn payload_entries_come_in_bounded_pieces() {
    for rel in PAYLOAD_FIXTURES {
        let events = raw_events(rel);
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        let mut whole = Vec::new();
        let mut conv = Converter::new(ConvertOptions::default(), None, name);
        for raw in &events {
            conv.convert(raw, &mut whole).unwrap();
            assert!(!conv.has_pending(), "{rel}: unbounded leaves nothing pending");
        }
        for (max_entries, max_bytes) in [(1, usize::MAX), (2, usize::MAX), (usize::MAX, 1)] {
            let mut conv = Converter::new(ConvertOptions::default(), None, name);
            conv.set_payload_chunk(max_entries, max_bytes);
            let mut pieces = Vec::new();
            let mut split_payloads = 0;
            for raw in &events {
                let mut out = Vec::new();
                conv.convert(raw, &mut out).unwrap();
                let mut calls = vec![out.len()];
                pieces.append(&mut out);
                while conv.has_pending() {
                    conv.convert_pending(&mut out).unwrap();
                    calls.push(out.len());
                    pieces.append(&mut out);
                }
                if raw[4] == 40 {
                    assert!(calls.len() > 1, "{rel}: the payload came in pieces: {calls:?}");
                    split_payloads += 1;
                }
                // One inner event gives at most two entries (a statement text and its rows).
                let bound = max_entries.min(1_000) + 1;
                assert!(calls.iter().all(|n| *n <= bound), "{rel}: pieces {calls:?} > {bound}");
            }
            assert!(split_payloads > 0);
            assert_eq!(pieces.len(), whole.len(), "{rel}: same entries");
            for (a, b) in pieces.iter().zip(&whole) {
                assert_eq!(a.bytes, b.bytes, "{rel}: same entry bytes");
                assert_eq!(a.closes, b.closes);
            }
        }
        // A caller that converts the next event without asking for the rest gets the rest first.
        let mut conv = Converter::new(ConvertOptions::default(), None, name);
        conv.set_payload_chunk(1, usize::MAX);
        let mut out = Vec::new();
        for raw in &events {
            conv.convert(raw, &mut out).unwrap();
        }
        conv.convert_pending(&mut out).unwrap();
        let same = out.iter().zip(&whole).all(|(a, b)| a.bytes == b.bytes);
        assert!(out.len() == whole.len() && same, "{rel}: order kept");
    }
}

/// Every fixture converted without and with a field filter (a white list of every other column
/// for half of its tables, a black list of the first column for the others): the filtered
/// entries are the unfiltered ones with exactly the columns `FieldFilter::keeps` drops removed,
/// and everything else byte for byte the same.
#[test]
fn field_filters_drop_exactly_the_filtered_columns() {
    use std::collections::BTreeMap;

    use canal_core::filter::FieldFilter;
    use canal_core::protocol::entry::Column;

    /// The entries, and the events that failed to convert (by offset in the event stream).
    fn convert(file: &Path, opts: ConvertOptions) -> (Vec<Entry>, Vec<usize>) {
        let Ok(mut source) = LocalBinlogSource::new(vec![file.to_owned()], None, 4) else {
            return (Vec::new(), Vec::new());
        };
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let mut conv = Converter::new(opts, None, &name);
        let mut out = Vec::new();
        let mut failed = Vec::new();
        let mut n = 0;
        while let Ok(Some((_, raw))) = source.next_event() {
            // Odd fixture events fail: the same ones with or without the filter (compared).
            if conv.convert(raw, &mut out).is_err() {
                failed.push(n);
            }
            n += 1;
        }
        (out.iter().map(|b| Entry::decode(b.bytes.clone()).unwrap()).collect(), failed)
    }
    let plain_name = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "_@".contains(c));
    let (mut checked_rows, mut dropped) = (0, 0);
    for file in fixtures() {
        let (plain, plain_failed) = convert(&file, ConvertOptions::default());
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in plain.iter().filter(|e| e.entry_type() == EntryType::Rowdata) {
            let h = e.header.as_ref().unwrap();
            let rc = RowChange::decode(e.store_value()).unwrap();
            let Some(row) = rc.row_datas.first() else { continue };
            let key = format!("{}.{}", h.schema_name(), h.table_name());
            let cols =
                if row.after_columns.is_empty() { &row.before_columns } else { &row.after_columns };
            let names: Vec<String> = cols.iter().map(|c| c.name().to_owned()).collect();
            if plain_name(h.schema_name())
                && plain_name(h.table_name())
                && names.iter().all(|n| plain_name(n))
                && !names.is_empty()
            {
                tables.entry(key).or_insert(names);
            }
        }
        if tables.is_empty() {
            continue;
        }
        let (mut white, mut black) = (Vec::new(), Vec::new());
        for (i, (table, names)) in tables.iter().enumerate() {
            if i % 2 == 0 {
                let keep: Vec<&str> = names.iter().step_by(2).map(String::as_str).collect();
                white.push(format!("{table}:{}", keep.join("/")));
            } else {
                black.push(format!("{table}:{}", names[0]));
            }
        }
        let filter = FieldFilter::new(&white.join(","), &black.join(",")).unwrap();
        let opts = ConvertOptions { field_filter: filter.clone(), ..ConvertOptions::default() };
        let (filtered, filtered_failed) = convert(&file, opts);
        assert_eq!(
            plain_failed,
            filtered_failed,
            "{}: events failing with and without the filter",
            file.display()
        );
        assert_eq!(filtered.len(), plain.len(), "{file:?}");
        for (p, f) in plain.iter().zip(&filtered) {
            if p.entry_type() != EntryType::Rowdata {
                assert_eq!(p, f, "{file:?}");
                continue;
            }
            let h = p.header.as_ref().unwrap();
            let keep = |cols: &[Column]| -> Vec<Column> {
                cols.iter()
                    .filter(|c| filter.keeps(h.schema_name(), h.table_name(), c.name()))
                    .cloned()
                    .collect()
            };
            let (prc, frc) = (
                RowChange::decode(p.store_value()).unwrap(),
                RowChange::decode(f.store_value()).unwrap(),
            );
            assert_eq!(prc.row_datas.len(), frc.row_datas.len());
            for (pr, fr) in prc.row_datas.iter().zip(&frc.row_datas) {
                checked_rows += 1;
                dropped += pr.before_columns.len() + pr.after_columns.len()
                    - fr.before_columns.len()
                    - fr.after_columns.len();
                assert_eq!(keep(&pr.before_columns), fr.before_columns, "{file:?}");
                assert_eq!(keep(&pr.after_columns), fr.after_columns, "{file:?}");
            }
            assert_eq!(p.header, f.header, "{file:?}");
            assert_eq!(
                (prc.table_id, prc.event_type, &prc.sql, &prc.props),
                (frc.table_id, frc.event_type, &frc.sql, &frc.props)
            );
        }
    }
    assert!(checked_rows > 100, "fixtures gave only {checked_rows} rows");
    assert!(dropped > 100, "the filters dropped only {dropped} columns");
}
