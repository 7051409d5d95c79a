//! The body shared by the fuzz target (`canal-core/fuzz`, cargo-fuzz on nightly) and the stable
//! mutation fuzzer (`cargo run --release -p canal-core --example fuzz_decode`): decode a byte
//! string as a binlog — every event with one decoder, every row of every rows event, payloads
//! included — and convert it to Canal entries. Errors are expected; panics, hangs and runaway
//! allocations are bugs.

use super::decode::{BinlogFile, DecodeOptions, Decoder, EventData, RowImage};
use super::entry::{ConvertOptions, Converter};

/// Exercises the decoder and the converter on `data` (with or without the binlog magic).
/// Returns how many events decoded without error.
pub fn exercise(data: &[u8]) -> usize {
    // CRC checks would reject almost every mutated input before the interesting parsers run.
    let opts = DecodeOptions { verify_checksum: false, ..DecodeOptions::default() };
    let owned;
    let file = if data.starts_with(&super::decode::BINLOG_MAGIC) {
        data
    } else {
        owned = [&super::decode::BINLOG_MAGIC[..], data].concat();
        &owned[..]
    };
    let Ok(events) = BinlogFile::new(file) else { return 0 };
    let mut dec = Decoder::new(opts.clone());
    let mut conv =
        Converter::new(ConvertOptions { decode: opts, ..ConvertOptions::default() }, None, "fuzz");
    let mut out = Vec::new();
    let (mut before, mut after) = (RowImage::new(), RowImage::new());
    let mut ok = 0;
    for item in events {
        let Ok((_, buf)) = item else { break };
        out.clear();
        let _ = conv.convert(buf, &mut out);
        let Ok(ev) = dec.decode(buf) else { continue };
        ok += 1;
        match &ev.data {
            EventData::Rows(r) => {
                if let Ok(mut rows) = dec.rows(r) {
                    while let Ok(true) = rows.next_row(&mut before, &mut after) {}
                }
            }
            EventData::TransactionPayload(p) => {
                let p = p.clone();
                for inner in p.events() {
                    let Ok(inner) = inner else { break };
                    let Ok(ev) = dec.decode_payload_event(inner) else { continue };
                    if let EventData::Rows(r) = &ev.data
                        && let Ok(mut rows) = dec.rows(r)
                    {
                        while let Ok(true) = rows.next_row(&mut before, &mut after) {}
                    }
                }
            }
            _ => {}
        }
    }
    ok
}
