//! Fuzz target for the binlog decoder: the input is a sequence of events (each framed by its own
//! header), decoded with one `Decoder` so that FORMAT_DESCRIPTION and TABLE_MAP state reaches the
//! rows events; every rows event is decoded to the end, payloads included. Errors are expected;
//! panics, hangs and runaway allocations are bugs.
#![no_main]

use canal_core::binlog::decode::{BinlogFile, DecodeOptions, Decoder, EventData, RowImage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // CRC checks would reject almost every mutated input before the interesting parsers run.
    let opts = DecodeOptions { verify_checksum: false, ..DecodeOptions::default() };
    let mut dec = Decoder::new(opts);
    // Accept inputs with or without the file magic, so seeds can be whole binlog files.
    let mut owned;
    let file = if data.starts_with(&[0xfe, b'b', b'i', b'n']) {
        data
    } else {
        owned = vec![0xfe, b'b', b'i', b'n'];
        owned.extend_from_slice(data);
        &owned[..]
    };
    let Ok(events) = BinlogFile::new(file) else { return };
    let (mut before, mut after) = (RowImage::new(), RowImage::new());
    for item in events {
        let Ok((_, buf)) = item else { break };
        let Ok(ev) = dec.decode(buf) else { continue };
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
                    if let EventData::Rows(r) = &ev.data {
                        if let Ok(mut rows) = dec.rows(r) {
                            while let Ok(true) = rows.next_row(&mut before, &mut after) {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
});
