//! GTID positions: MySQL GTID sets (`uuid:1-5:7,uuid2:tag:1-3`, tags from MySQL 8.4) with their
//! COM_BINLOG_DUMP_GTID encoding, and MariaDB GTID lists (`domain-server-seq,...`) for
//! `@slave_connect_state`. Parsing validates everything, so values can be put into SQL safely.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use mysql_common::packets::{GnoInterval, Sid, Tag};

use super::error::ReplicaError;

fn invalid(what: &'static str, reason: impl Into<String>) -> ReplicaError {
    ReplicaError::InvalidInput { what, reason: reason.into() }
}

/// A MySQL server UUID (source id of a GTID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerUuid(pub [u8; 16]);

impl FromStr for ServerUuid {
    type Err = ReplicaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
        let dashes = s.bytes().filter(|&b| b == b'-').count();
        if hex.len() != 32 || !(dashes == 0 || dashes == 4) {
            return Err(invalid("GTID set", format!("'{s}' is not a UUID")));
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let txt =
                std::str::from_utf8(pair).map_err(|_| invalid("GTID set", "non-ASCII UUID"))?;
            out[i] = u8::from_str_radix(txt, 16)
                .map_err(|_| invalid("GTID set", format!("'{s}' is not a UUID")))?;
        }
        Ok(ServerUuid(out))
    }
}

impl fmt::Display for ServerUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A set of MySQL GTIDs: per (source UUID, tag) a normalized list of inclusive intervals.
/// Displays in MySQL's canonical form (lower-case UUIDs, sorted, merged intervals).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GtidSet {
    sets: BTreeMap<(ServerUuid, String), Vec<(u64, u64)>>,
}

impl GtidSet {
    /// An empty set (dumping from it means "from the first binlog").
    pub fn new() -> Self {
        Self::default()
    }

    /// `true` if the set holds no GTID.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Adds the inclusive range `start..=end` of transaction numbers of `uuid`/`tag` (`tag` is
    /// `""` for untagged GTIDs).
    ///
    /// # Errors
    /// [`ReplicaError::InvalidInput`] if `start` is 0, `start > end`, or the tag is invalid.
    pub fn add_range(
        &mut self,
        uuid: ServerUuid,
        tag: &str,
        start: u64,
        end: u64,
    ) -> Result<(), ReplicaError> {
        if start == 0 || start > end || end == u64::MAX {
            return Err(invalid("GTID set", format!("bad interval {start}-{end}")));
        }
        if !tag.is_empty() {
            validate_tag(tag)?;
        }
        let list = self.sets.entry((uuid, tag.to_ascii_lowercase())).or_default();
        list.push((start, end));
        list.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(list.len());
        for &(s, e) in list.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *list = merged;
        Ok(())
    }

    /// Adds one GTID.
    ///
    /// # Errors
    /// As [`GtidSet::add_range`].
    pub fn add(&mut self, uuid: ServerUuid, tag: &str, gno: u64) -> Result<(), ReplicaError> {
        self.add_range(uuid, tag, gno, gno)
    }

    /// `true` if the set contains `uuid[:tag]:gno`.
    pub fn contains(&self, uuid: ServerUuid, tag: &str, gno: u64) -> bool {
        self.sets
            .get(&(uuid, tag.to_ascii_lowercase()))
            .is_some_and(|l| l.iter().any(|&(s, e)| s <= gno && gno <= e))
    }

    /// The `Sid` blocks of COM_BINLOG_DUMP_GTID (intervals are half-open on the wire). Tagged
    /// entries switch mysql_common to the tagged (MySQL 8.4) wire format.
    pub(crate) fn to_sids(&self) -> Result<Vec<Sid<'static>>, ReplicaError> {
        let mut out = Vec::with_capacity(self.sets.len());
        for ((uuid, tag), list) in &self.sets {
            let mut sid = Sid::new(uuid.0)
                .with_intervals(list.iter().map(|&(s, e)| GnoInterval::new(s, e + 1)).collect());
            if !tag.is_empty() {
                let tag = Tag::new(tag.clone())
                    .map_err(|e| invalid("GTID set", format!("tag '{tag}': {e}")))?;
                sid = sid.with_tag(tag);
            }
            out.push(sid);
        }
        Ok(out)
    }
}

fn validate_tag(tag: &str) -> Result<(), ReplicaError> {
    let ok = !tag.is_empty()
        && tag.len() <= 32
        && tag.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(invalid("GTID set", format!("'{tag}' is not a valid GTID tag"))) }
}

impl FromStr for GtidSet {
    type Err = ReplicaError;

    /// Parses MySQL's text form: comma-separated `uuid(:tag)?(:interval)+` entries, intervals
    /// `n` or `a-b`, whitespace (e.g. the newlines of `@@gtid_executed`) ignored, `""` = empty.
    /// In a MySQL 8.4 entry a tag applies to the intervals after it (`uuid:1-3:tag:5`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = GtidSet::new();
        let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        for entry in cleaned.split(',').filter(|e| !e.is_empty()) {
            let mut parts = entry.split(':');
            let uuid: ServerUuid = parts.next().unwrap_or_default().parse()?;
            let mut tag = String::new();
            let mut any = false;
            for part in parts {
                if part.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                    let (a, b) = match part.split_once('-') {
                        Some((a, b)) => (a, b),
                        None => (part, part),
                    };
                    let a: u64 = a
                        .parse()
                        .map_err(|_| invalid("GTID set", format!("bad interval '{part}'")))?;
                    let b: u64 = b
                        .parse()
                        .map_err(|_| invalid("GTID set", format!("bad interval '{part}'")))?;
                    set.add_range(uuid, &tag, a, b)?;
                    any = true;
                } else {
                    validate_tag(part)?;
                    tag = part.to_ascii_lowercase();
                }
            }
            if !any {
                return Err(invalid("GTID set", format!("entry '{entry}' has no interval")));
            }
        }
        Ok(set)
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first_uuid = true;
        let mut last_uuid = None;
        for ((uuid, tag), list) in &self.sets {
            if last_uuid != Some(*uuid) {
                if !first_uuid {
                    f.write_str(",")?;
                }
                first_uuid = false;
                last_uuid = Some(*uuid);
                write!(f, "{uuid}")?;
            }
            if !tag.is_empty() {
                write!(f, ":{tag}")?;
            }
            for &(s, e) in list {
                if s == e { write!(f, ":{s}")? } else { write!(f, ":{s}-{e}")? }
            }
        }
        Ok(())
    }
}

/// One MariaDB GTID: `domain-server-sequence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MariadbGtid {
    /// Replication domain id.
    pub domain_id: u32,
    /// Server id of the writer.
    pub server_id: u32,
    /// Sequence number within the domain.
    pub sequence: u64,
}

impl fmt::Display for MariadbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain_id, self.server_id, self.sequence)
    }
}

impl FromStr for MariadbGtid {
    type Err = ReplicaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || invalid("MariaDB GTID", format!("'{s}' is not domain-server-sequence"));
        let mut it = s.trim().split('-');
        let (Some(d), Some(sv), Some(q), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        Ok(MariadbGtid {
            domain_id: d.parse().map_err(|_| bad())?,
            server_id: sv.parse().map_err(|_| bad())?,
            sequence: q.parse().map_err(|_| bad())?,
        })
    }
}

/// A MariaDB GTID position: at most one GTID per domain (`@@gtid_binlog_pos` format). Dumping
/// from it starts *after* each listed GTID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MariadbGtidList {
    by_domain: BTreeMap<u32, MariadbGtid>,
}

impl MariadbGtidList {
    /// The GTIDs, ordered by domain.
    pub fn gtids(&self) -> impl Iterator<Item = &MariadbGtid> {
        self.by_domain.values()
    }

    /// Records `gtid` as the latest of its domain (replacing the previous one).
    pub fn update(&mut self, gtid: MariadbGtid) {
        self.by_domain.insert(gtid.domain_id, gtid);
    }

    /// `true` when no domain is listed (dump from the start of the binlogs).
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

impl FromStr for MariadbGtidList {
    type Err = ReplicaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list = MariadbGtidList::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: MariadbGtid = part.parse()?;
            if list.by_domain.insert(g.domain_id, g).is_some() {
                return Err(invalid(
                    "MariaDB GTID",
                    format!("domain {} appears twice in '{s}'", g.domain_id),
                ));
            }
        }
        Ok(list)
    }
}

impl fmt::Display for MariadbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.by_domain.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::packets::ComBinlogDumpGtid;
    use mysql_common::proto::MySerialize;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "4f22fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn parse_display_normalizes() {
        let s: GtidSet = format!("{U2}:7, {U1}:1-5:6:9-10,\n{U1}:3").parse().unwrap();
        assert_eq!(s.to_string(), format!("{U1}:1-6:9-10,{U2}:7"));
        assert!(s.contains(U1.parse().unwrap(), "", 6));
        assert!(!s.contains(U1.parse().unwrap(), "", 7));
        assert_eq!("".parse::<GtidSet>().unwrap(), GtidSet::new());
        let upper: GtidSet = format!("{}:1", U1.to_uppercase()).parse().unwrap();
        assert_eq!(upper.to_string(), format!("{U1}:1"));
    }

    #[test]
    fn tagged() {
        let s: GtidSet = format!("{U1}:1-3:Tag_a:5:7-8").parse().unwrap();
        assert_eq!(s.to_string(), format!("{U1}:1-3:tag_a:5:7-8"));
        assert!(s.contains(U1.parse().unwrap(), "tag_a", 7));
        assert!(!s.contains(U1.parse().unwrap(), "", 5));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "x",
            "3e11fa47:1",
            U1,
            &format!("{U1}:0"),
            &format!("{U1}:5-3"),
            &format!("{U1}:1-x"),
            &format!("{U1}:9bad:1"),
            &format!("{U1}:1-18446744073709551615"),
        ] {
            assert!(bad.parse::<GtidSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn wire_encoding_is_half_open() {
        let s: GtidSet = format!("{U1}:1-5").parse().unwrap();
        let cmd = ComBinlogDumpGtid::new(7).with_sids(s.to_sids().unwrap());
        let mut buf = Vec::new();
        cmd.serialize(&mut buf);
        // 0x1e, flags(2), server id(4), name len(4), pos(8), data size(4), n_sids(8), uuid(16),
        // n_intervals(8), start(8), end(8)
        assert_eq!(buf[0], 0x1e);
        assert_eq!(u16::from_le_bytes([buf[1], buf[2]]) & 0x04, 0x04);
        let tail = &buf[buf.len() - 16..];
        assert_eq!(u64::from_le_bytes(tail[..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(tail[8..].try_into().unwrap()), 6);
    }

    #[test]
    fn mariadb_lists() {
        let l: MariadbGtidList = " 0-1-16, 2-5-9 ".parse().unwrap();
        assert_eq!(l.to_string(), "0-1-16,2-5-9");
        assert!("0-1-16,0-1-17".parse::<MariadbGtidList>().is_err());
        assert!("0-1-16';drop".parse::<MariadbGtidList>().is_err());
        assert!("0-1".parse::<MariadbGtidList>().is_err());
        assert!("".parse::<MariadbGtidList>().unwrap().is_empty());
    }

    proptest::proptest! {
        /// Display is canonical: parsing it gives the same set, and membership is preserved.
        #[test]
        fn display_parse_roundtrip(
            entries in proptest::collection::vec(
                (0u8..3, proptest::option::of("[a-z_][a-z0-9_]{0,8}"), 1u64..1000, 0u64..50),
                0..12,
            ),
            junk in ".{0,40}",
        ) {
            let mut set = GtidSet::new();
            for (u, tag, start, len) in &entries {
                let uuid = ServerUuid([*u; 16]);
                set.add_range(uuid, tag.as_deref().unwrap_or(""), *start, start + len).unwrap();
            }
            let text = set.to_string();
            let back: GtidSet = text.parse().unwrap();
            proptest::prop_assert_eq!(&back, &set);
            for (u, tag, start, len) in &entries {
                proptest::prop_assert!(back.contains(ServerUuid([*u; 16]), tag.as_deref().unwrap_or(""), start + len / 2));
            }
            let _ = junk.parse::<GtidSet>();
            let _ = junk.parse::<MariadbGtidList>();
        }
    }
}
