//! Property tests: whatever bytes a server sends as entries or as a frame, decoding gives values
//! or typed errors, never a panic. Entries are valid ones with random bytes overwritten and a
//! random cut, so decoding gets deep before it fails.

use bytes::Bytes;
use canal_client::Message;
use canal_core::protocol::codec::FrameDecoder;
use proptest::prelude::*;
use prost::Message as _;

use crate::fake;

fn mangled_entry() -> impl Strategy<Value = Vec<u8>> {
    let base = fake::insert("t", 1, "value").encode_to_vec();
    let len = base.len();
    (proptest::collection::vec((0..len, any::<u8>()), 0..4), 0..=len).prop_map(
        move |(flips, cut)| {
            let mut b = base.clone();
            for (i, v) in flips {
                b[i] = v;
            }
            b.truncate(cut.max(1));
            b
        },
    )
}

proptest! {
    #[test]
    fn mangled_entries_never_panic(
        id in any::<i64>(),
        raw in proptest::collection::vec(mangled_entry(), 0..4),
    ) {
        let raw: Vec<Bytes> = raw.into_iter().map(Bytes::from).collect();
        if let Ok(m) = Message::decode(id, raw) {
            for rc in m.row_changes().flatten() {
                let _ = (rc.schema(), rc.table(), rc.event_type_name(), rc.sql(), rc.position());
                for row in rc.rows() {
                    let _ = (row.before().to_map(), row.after().to_map(), row.current().len());
                }
            }
            let _ = m.flat_messages(0);
            let _ = m.row_count();
        }
    }

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Ok((p, _)) = FrameDecoder::with_max_frame_len(1024).decode_slice(&bytes) {
            let _ = p.decode_body();
        }
    }
}
