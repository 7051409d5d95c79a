//! Fuzz target for the binlog decoder and converter (cargo-fuzz, nightly): the input is a sequence
//! of events, decoded with one `Decoder` so FORMAT_DESCRIPTION and TABLE_MAP state reaches the
//! rows events, every row decoded, and converted to entries. Errors are expected; panics, hangs and
//! runaway allocations are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The body is shared with the stable mutation fuzzer (examples/fuzz_decode.rs).
    canal_core::binlog::fuzzing::exercise(data);
});
