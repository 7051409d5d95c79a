//! Binlog positions as Canal names and serializes them: `LogPosition` = `LogIdentity` (where the
//! entry came from) + `EntryPosition` (journal file, offset, time, server id, GTID).
//!
//! The JSON is what Java Canal (fastjson2) writes to ZooKeeper and `meta.dat`: keys in alphabetical
//! order, absent values omitted, the historical misspelling `postion`, and — for ZooKeeper cursors
//! only — a leading `"@type"`. Readers accept any key order, unknown keys, host names or IP
//! literals in `sourceAddress.address`, and an `@type` or its absence.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The Java class name that Canal's ZooKeeper readers require in a cursor's `@type`.
pub const LOG_POSITION_TYPE: &str = "com.alibaba.otter.canal.protocol.position.LogPosition";

/// The network address of the MySQL server an entry came from (`java.net.InetSocketAddress` as
/// fastjson writes it). `address` may be an IP literal or a host name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceAddress {
    /// Host name or IP literal.
    pub address: String,
    /// TCP port.
    pub port: u16,
}

impl SourceAddress {
    /// A source address from its parts.
    pub fn new(address: impl Into<String>, port: u16) -> Self {
        Self { address: address.into(), port }
    }
}

impl fmt::Display for SourceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.address, self.port)
    }
}

/// Which source produced a position. Canal always writes `slaveId = -1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogIdentity {
    /// Always -1 in positions Canal writes; kept for round-trips.
    #[serde(default = "minus_one")]
    pub slave_id: i64,
    /// The MySQL server; absent in some hand-written cursors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
}

fn minus_one() -> i64 {
    -1
}

impl LogIdentity {
    /// The identity Canal writes for entries read from `source`.
    pub fn new(source: SourceAddress) -> Self {
        Self { slave_id: -1, source_address: Some(source) }
    }
}

impl Default for LogIdentity {
    fn default() -> Self {
        Self { slave_id: -1, source_address: None }
    }
}

/// A point in the binlog: the *start* offset of an event (Canal's `Header.logfileOffset`), its
/// file, its time in milliseconds, the server that wrote it and, in GTID mode, the executed GTID
/// set after it. Field order is alphabetical because fastjson writes it that way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryPosition {
    /// Executed GTID set string (`""` when not in GTID mode; absent in old cursors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// Only meaningful inside the in-memory store; `false` in everything Canal persists.
    #[serde(default)]
    pub included: bool,
    /// Binlog file name, e.g. `mysql-bin.000003`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_name: Option<String>,
    /// Start offset of the event in `journal_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// MySQL `server_id` of the event header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<i64>,
    /// Event time in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

impl EntryPosition {
    /// A file + offset position.
    pub fn at(journal_name: impl Into<String>, position: i64) -> Self {
        Self {
            journal_name: Some(journal_name.into()),
            position: Some(position),
            ..Self::default()
        }
    }

    /// Builder-style: set the event time (ms).
    pub fn with_timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Builder-style: set the server id.
    pub fn with_server_id(mut self, server_id: i64) -> Self {
        self.server_id = Some(server_id);
        self
    }

    /// Builder-style: set the GTID set string.
    pub fn with_gtid(mut self, gtid: impl Into<String>) -> Self {
        self.gtid = Some(gtid.into());
        self
    }

    /// Orders two positions of the same source by journal file, then offset, as Canal does when it
    /// picks the minimum client cursor. File names compare by base name, then by the numeric
    /// suffix as a number, so `bin.1000000` sorts after `bin.999999`. Missing parts sort first.
    pub fn cmp_in_file_order(&self, other: &Self) -> Ordering {
        compare_journal(self.journal_name.as_deref(), other.journal_name.as_deref())
            .then(self.position.cmp(&other.position))
    }
}

/// Compares binlog file names by base name, then numeric suffix (lexically when not numeric).
pub fn compare_journal(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => {
            let (abase, asuf) = a.rsplit_once('.').unwrap_or((a, ""));
            let (bbase, bsuf) = b.rsplit_once('.').unwrap_or((b, ""));
            abase.cmp(bbase).then_with(|| match (asuf.parse::<u64>(), bsuf.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => asuf.cmp(bsuf),
            })
        }
    }
}

/// Canal's `LogPosition`: the cursor stored per client and the parser's resume point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// Where the position came from.
    #[serde(default)]
    pub identity: LogIdentity,
    /// The position itself, under Canal's historical key `postion`.
    #[serde(rename = "postion", alias = "position", default)]
    pub position: EntryPosition,
}

/// The JSON of a position could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PositionJsonError {
    /// The text is not JSON or does not have LogPosition's shape.
    #[error("invalid LogPosition JSON: {0}")]
    Invalid(#[from] serde_json::Error),
    /// An `@type` names a class other than LogPosition.
    #[error("unexpected \"@type\" {0:?} in LogPosition JSON")]
    WrongType(String),
}

#[derive(Serialize)]
struct Typed<'a> {
    #[serde(rename = "@type")]
    ty: &'static str,
    identity: &'a LogIdentity,
    postion: &'a EntryPosition,
}

#[derive(Deserialize)]
struct MaybeTyped {
    #[serde(rename = "@type", default)]
    ty: Option<String>,
    #[serde(flatten)]
    inner: LogPosition,
}

impl LogPosition {
    /// A position read from `source`.
    pub fn new(source: SourceAddress, position: EntryPosition) -> Self {
        Self { identity: LogIdentity::new(source), position }
    }

    /// The JSON of a ZooKeeper cursor node: with the leading `@type` that Java readers require.
    pub fn to_cursor_json(&self) -> String {
        let typed =
            Typed { ty: LOG_POSITION_TYPE, identity: &self.identity, postion: &self.position };
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_string(&typed).unwrap_or_default()
    }

    /// The JSON used in `meta.dat` and the `/parse` node: the same shape without `@type`.
    pub fn to_plain_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a position written by Java Canal or by us, with or without `@type`.
    ///
    /// # Errors
    /// [`PositionJsonError::Invalid`] for text that is not a LogPosition,
    /// [`PositionJsonError::WrongType`] when `@type` names another class.
    pub fn from_json(text: &[u8]) -> Result<Self, PositionJsonError> {
        let parsed: MaybeTyped = serde_json::from_slice(text)?;
        match parsed.ty {
            Some(ty) if ty != LOG_POSITION_TYPE => Err(PositionJsonError::WrongType(ty)),
            _ => Ok(parsed.inner),
        }
    }

    /// Canal's rule for "which cursor is earlier" when choosing where parsing restarts: positions
    /// of the same source compare by file and offset; positions of different sources (a master
    /// switch) by timestamp.
    pub fn cmp_for_restart(&self, other: &Self) -> Ordering {
        if self.identity.source_address == other.identity.source_address {
            self.position.cmp_in_file_order(&other.position)
        } else {
            self.position.timestamp.cmp(&other.position.timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cursor example of Canal's AdminGuide, byte for byte.
    const ADMIN_GUIDE_CURSOR: &str = r#"{"@type":"com.alibaba.otter.canal.protocol.position.LogPosition","identity":{"slaveId":-1,"sourceAddress":{"address":"10.20.144.15","port":3306}},"postion":{"included":false,"journalName":"mysql-bin.002253","position":2574756,"timestamp":1363688722000}}"#;

    #[test]
    fn admin_guide_cursor_round_trips_byte_for_byte() {
        let p = LogPosition::from_json(ADMIN_GUIDE_CURSOR.as_bytes()).unwrap();
        assert_eq!(p.identity.slave_id, -1);
        assert_eq!(p.identity.source_address, Some(SourceAddress::new("10.20.144.15", 3306)));
        assert_eq!(p.position.journal_name.as_deref(), Some("mysql-bin.002253"));
        assert_eq!(p.position.position, Some(2574756));
        assert_eq!(p.position.timestamp, Some(1363688722000));
        assert_eq!(p.position.server_id, None);
        assert_eq!(p.position.gtid, None);
        assert!(!p.position.included);
        assert_eq!(p.to_cursor_json(), ADMIN_GUIDE_CURSOR);
        let plain = p.to_plain_json();
        assert!(!plain.contains("@type"));
        assert_eq!(
            plain,
            ADMIN_GUIDE_CURSOR.replace(&format!("\"@type\":\"{LOG_POSITION_TYPE}\","), "")
        );
    }

    #[test]
    fn full_cursor_has_fastjson_key_order() {
        let p = LogPosition::new(
            SourceAddress::new("localhost", 3306),
            EntryPosition::at("mysql-bin.000003", 5620)
                .with_server_id(1)
                .with_timestamp(1700000000000)
                .with_gtid(""),
        );
        assert_eq!(
            p.to_cursor_json(),
            r#"{"@type":"com.alibaba.otter.canal.protocol.position.LogPosition","identity":{"slaveId":-1,"sourceAddress":{"address":"localhost","port":3306}},"postion":{"gtid":"","included":false,"journalName":"mysql-bin.000003","position":5620,"serverId":1,"timestamp":1700000000000}}"#
        );
    }

    #[test]
    fn reads_any_key_order_unknown_keys_and_no_type() {
        let text = br#"{"postion":{"timestamp":5,"position":4,"journalName":"b.000001","included":true,"extra":1},
            "identity":{"sourceAddress":{"port":13306,"address":"db.example"},"slaveId":-1},"other":[1]}"#;
        let p = LogPosition::from_json(text).unwrap();
        assert_eq!(
            p.position,
            EntryPosition { included: true, ..EntryPosition::at("b.000001", 4).with_timestamp(5) }
        );
        assert_eq!(p.identity.source_address.unwrap().address, "db.example");
    }

    #[test]
    fn rejects_foreign_type_and_garbage() {
        let other = br#"{"@type":"com.alibaba.otter.canal.protocol.position.PositionRange","identity":{},"postion":{}}"#;
        assert!(matches!(LogPosition::from_json(other), Err(PositionJsonError::WrongType(_))));
        assert!(matches!(
            LogPosition::from_json(b"{\"postion\":3}"),
            Err(PositionJsonError::Invalid(_))
        ));
        assert!(LogPosition::from_json(b"\xff").is_err());
    }

    #[test]
    fn journal_order_is_numeric_on_the_suffix() {
        let a = EntryPosition::at("mysql-bin.999999", 900);
        let b = EntryPosition::at("mysql-bin.1000000", 4);
        assert_eq!(a.cmp_in_file_order(&b), Ordering::Less);
        assert_eq!(b.cmp_in_file_order(&a), Ordering::Greater);
        let c = EntryPosition::at("mysql-bin.000002", 4);
        let d = EntryPosition::at("mysql-bin.000002", 120);
        assert_eq!(c.cmp_in_file_order(&d), Ordering::Less);
    }

    #[test]
    fn restart_order_uses_time_across_sources() {
        let a = LogPosition::new(
            SourceAddress::new("h1", 1),
            EntryPosition::at("x.000009", 9).with_timestamp(10),
        );
        let b = LogPosition::new(
            SourceAddress::new("h2", 1),
            EntryPosition::at("x.000001", 1).with_timestamp(20),
        );
        assert_eq!(a.cmp_for_restart(&b), Ordering::Less);
    }
}
