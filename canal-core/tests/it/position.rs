//! Property tests: LogPosition JSON round-trips and keeps fastjson's shape (sorted keys, nulls
//! omitted, `@type` first on cursors) for arbitrary positions.

use canal_core::position::{
    EntryPosition, LOG_POSITION_TYPE, LogIdentity, LogPosition, SourceAddress,
};
use proptest::prelude::*;

fn arb_position() -> impl Strategy<Value = LogPosition> {
    let source = proptest::option::of(
        ("[a-z0-9.-]{1,20}", any::<u16>()).prop_map(|(a, p)| SourceAddress::new(a, p)),
    );
    let entry = (
        proptest::option::of("[ -~]{0,30}"),
        any::<bool>(),
        proptest::option::of("[a-z-]{1,10}\\.[0-9]{6}"),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(gtid, included, journal_name, position, server_id, timestamp)| {
            EntryPosition { gtid, included, journal_name, position, server_id, timestamp }
        });
    (any::<i64>(), source, entry).prop_map(|(slave_id, source_address, position)| LogPosition {
        identity: LogIdentity { slave_id, source_address },
        position,
    })
}

/// Re-serializes through serde_json's sorted map: the canonical fastjson key order.
fn sorted(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    serde_json::to_string(&v).unwrap()
}

/// Rewrites every object with its keys in reverse order.
fn reversed(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .rev()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), reversed(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        other => serde_json::to_string(other).unwrap(),
    }
}

proptest! {
    #[test]
    fn cursor_json_round_trips(p in arb_position()) {
        let cursor = p.to_cursor_json();
        let prefix = format!("{{\"@type\":\"{LOG_POSITION_TYPE}\",");
        prop_assert!(cursor.starts_with(&prefix), "{}", cursor);
        prop_assert_eq!(&sorted(&cursor), &cursor);
        prop_assert_eq!(LogPosition::from_json(cursor.as_bytes()).unwrap(), p.clone());
        let plain = p.to_plain_json();
        prop_assert!(!plain.contains("@type"));
        prop_assert_eq!(&sorted(&plain), &plain);
        prop_assert_eq!(LogPosition::from_json(plain.as_bytes()).unwrap(), p);
    }

    #[test]
    fn any_key_order_reads_the_same(p in arb_position()) {
        let v: serde_json::Value = serde_json::from_str(&p.to_cursor_json()).unwrap();
        prop_assert_eq!(LogPosition::from_json(reversed(&v).as_bytes()).unwrap(), p);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = LogPosition::from_json(&bytes);
    }
}
