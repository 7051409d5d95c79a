//! Generates Canal's protobuf types from `proto/*.proto` with prost-build, parsing the files with
//! protox (pure Rust) so no system `protoc` is needed.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    const FILES: [&str; 2] = ["proto/packet.proto", "proto/entry.proto"];
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["proto"])?;
    prost_build::Config::new()
        // Zero-copy for the payload-carrying fields: frame bodies and entry bytes are sliced out of
        // the read buffer instead of copied into fresh Vecs.
        .bytes([
            ".canal.packet.Packet.body",
            ".canal.packet.Messages.messages",
            ".canal.entry.Entry.store_value",
        ])
        .compile_fds(fds)?;
    Ok(())
}
