//! FlatMessage → Entry over every row entry the binlog fixtures give (canal-core's converter):
//! Entry → FlatMessage JSON → Entry → FlatMessage JSON is the same text, and the rebuilt entry
//! carries the original's rows (values, NULLs, keys; UPDATE before images from `old`).

use std::path::{Path, PathBuf};

use canal_client::mq::{RecordFormat, decode_record};
use canal_core::binlog::entry::{ConvertOptions, Converter};
use canal_core::binlog::pipeline::LocalBinlogSource;
use canal_core::flat::FlatMessage;
use canal_core::protocol::entry::{Column, Entry, EntryType, EventType, RowChange};
use prost::Message as _;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../canal-core/tests/fixtures");
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

fn cells(cols: &[Column]) -> Vec<(&str, Option<&str>, bool)> {
    cols.iter().map(|c| (c.name(), (!c.is_null()).then(|| c.value()), c.is_key())).collect()
}

#[test]
fn fixture_entries_round_trip_through_flat_messages() {
    let (mut entries, mut rows, mut updates, mut ddl, mut partial) = (0, 0, 0, 0, 0);
    for file in fixtures() {
        let Ok(mut source) = LocalBinlogSource::new(vec![file.clone()], None, 4) else { continue };
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut conv = Converter::new(ConvertOptions::default(), None, &name);
        let mut out = Vec::new();
        while let Ok(Some((_, raw))) = source.next_event() {
            // Deliberately odd fixture events are the decoder tests' business.
            let _ = conv.convert(raw, &mut out);
        }
        for built in &out {
            let entry = Entry::decode(built.bytes.clone()).unwrap();
            let Some(flat) = FlatMessage::from_entry(&entry, 42, 7).unwrap() else {
                assert_ne!(entry.entry_type(), EntryType::Rowdata);
                continue;
            };
            let json = flat.to_json();
            let back = decode_record(json.as_bytes(), RecordFormat::Auto)
                .unwrap_or_else(|e| panic!("{name}: {e}: {json}"));
            assert_eq!((back.batch_id, back.entries.len()), (42, 1));
            let again = FlatMessage::from_entry(&back.entries[0], 42, 7).unwrap().unwrap();
            assert_eq!(again.to_json(), json, "{name}: the JSON round trip");
            entries += 1;

            let orig = RowChange::decode(entry.store_value()).unwrap();
            let rebuilt = RowChange::decode(back.entries[0].store_value()).unwrap();
            assert_eq!(rebuilt.event_type(), orig.event_type());
            assert_eq!((rebuilt.is_ddl(), rebuilt.sql()), (orig.is_ddl(), orig.sql()));
            ddl += usize::from(orig.is_ddl());
            assert_eq!(rebuilt.row_datas.len(), flat.data.as_ref().map_or(0, Vec::len));
            if !matches!(
                orig.event_type(),
                EventType::Insert | EventType::Update | EventType::Delete
            ) {
                continue;
            }
            assert_eq!(rebuilt.row_datas.len(), orig.row_datas.len(), "{name}");
            for (r, o) in rebuilt.row_datas.iter().zip(&orig.row_datas) {
                rows += 1;
                assert_eq!(cells(&r.after_columns), cells(&o.after_columns), "{name}: after");
                // Canal's FlatMessage keeps a DELETE's before image whole, and an UPDATE's in
                // `data` + `old` when the before image has the after image's columns (full
                // images); minimal and partial-JSON images are not rebuilt (module docs).
                let names =
                    |cols: &[Column]| cols.iter().map(|c| c.name().to_owned()).collect::<Vec<_>>();
                let full = orig.event_type() == EventType::Delete
                    || names(&o.before_columns) == names(&o.after_columns);
                if full {
                    assert_eq!(
                        cells(&r.before_columns),
                        cells(&o.before_columns),
                        "{name}: before"
                    );
                    updates += usize::from(orig.event_type() == EventType::Update);
                } else {
                    partial += 1;
                }
            }
        }
    }
    assert!(
        entries > 100 && rows > 100 && updates > 10 && ddl > 10,
        "{entries} {rows} {updates} {ddl}"
    );
    eprintln!(
        "{entries} entries ({rows} rows, {updates} full-image updates, {partial} partial-image \
         updates, {ddl} DDL) round-tripped"
    );
}
