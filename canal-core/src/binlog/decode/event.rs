//! Event framing and the typed event enum: the v4 header, FORMAT_DESCRIPTION, and one parser per
//! event type (MySQL and MariaDB), each reading only what the body really holds.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use super::cursor::Cursor;
use super::table_map::{self, TableMap};
use super::{DecodeError, Decoder};

/// Length of the v4 common header.
pub const HEADER_LEN: usize = 19;

/// Event type codes (MySQL `Log_event_type`, MariaDB extensions from 160).
pub mod event_type {
    #![allow(missing_docs)]
    pub const START_V3: u8 = 1;
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const ROTATE: u8 = 4;
    pub const INTVAR: u8 = 5;
    pub const RAND: u8 = 13;
    pub const USER_VAR: u8 = 14;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const INCIDENT: u8 = 26;
    pub const HEARTBEAT: u8 = 27;
    pub const IGNORABLE: u8 = 28;
    pub const ROWS_QUERY: u8 = 29;
    pub const WRITE_ROWS_V2: u8 = 30;
    pub const UPDATE_ROWS_V2: u8 = 31;
    pub const DELETE_ROWS_V2: u8 = 32;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const TRANSACTION_CONTEXT: u8 = 36;
    pub const VIEW_CHANGE: u8 = 37;
    pub const XA_PREPARE: u8 = 38;
    pub const PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const HEARTBEAT_V2: u8 = 41;
    pub const GTID_TAGGED: u8 = 42;
    pub const MARIA_ANNOTATE_ROWS: u8 = 160;
    pub const MARIA_BINLOG_CHECKPOINT: u8 = 161;
    pub const MARIA_GTID: u8 = 162;
    pub const MARIA_GTID_LIST: u8 = 163;
    pub const MARIA_START_ENCRYPTION: u8 = 164;
    pub const MARIA_QUERY_COMPRESSED: u8 = 165;
    pub const MARIA_WRITE_ROWS_COMPRESSED_V1: u8 = 166;
    pub const MARIA_UPDATE_ROWS_COMPRESSED_V1: u8 = 167;
    pub const MARIA_DELETE_ROWS_COMPRESSED_V1: u8 = 168;
    pub const MARIA_WRITE_ROWS_COMPRESSED: u8 = 169;
    pub const MARIA_UPDATE_ROWS_COMPRESSED: u8 = 170;
    pub const MARIA_DELETE_ROWS_COMPRESSED: u8 = 171;
}

/// The 19-byte v4 common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    /// Seconds since the epoch when the statement started.
    pub timestamp: u32,
    /// Event type code ([`event_type`]).
    pub event_type: u8,
    /// Server id of the originating server.
    pub server_id: u32,
    /// Total event size, header and checksum included.
    pub event_size: u32,
    /// Position of the next event in the file (0 for artificial events and inside payloads).
    pub log_pos: u32,
    /// Header flags (`LOG_EVENT_ARTIFICIAL_F` = 0x20, ...).
    pub flags: u16,
}

impl EventHeader {
    /// `LOG_EVENT_ARTIFICIAL_F`: set on the fake ROTATE/FORMAT_DESCRIPTION of a dump.
    pub const ARTIFICIAL: u16 = 0x20;

    /// Parses the first 19 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf);
        Ok(EventHeader {
            timestamp: c.u32("event header timestamp")?,
            event_type: c.u8("event header type")?,
            server_id: c.u32("event header server_id")?,
            event_size: c.u32("event header event_size")?,
            log_pos: c.u32("event header log_pos")?,
            flags: c.u16("event header flags")?,
        })
    }

    /// Start offset of this event in its file (`log_pos - event_size`), as Canal reports it; `None`
    /// for artificial or payload events whose `log_pos` is 0.
    pub fn start_pos(&self) -> Option<u32> {
        self.log_pos.checked_sub(self.event_size).filter(|_| self.log_pos != 0)
    }

    /// `true` for events the dump thread made up (the fake ROTATE before each file's events).
    pub fn is_artificial(&self) -> bool {
        self.flags & Self::ARTIFICIAL != 0 || self.log_pos == 0
    }
}

/// Checksum algorithm announced in the FORMAT_DESCRIPTION footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlg {
    /// No checksum.
    Off,
    /// CRC32 (ISO-HDLC), 4 bytes at the end of every event.
    Crc32,
    /// Undefined/unknown value in the footer (treated as no checksum).
    Other(u8),
}

/// FORMAT_DESCRIPTION_EVENT contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatDescription {
    /// Binlog format version (4).
    pub binlog_version: u16,
    /// Server version string, e.g. `8.0.32` or `10.11.19-MariaDB-0+deb12u1-log`.
    pub server_version: String,
    /// Creation timestamp.
    pub create_timestamp: u32,
    /// Common header length (19).
    pub header_len: u8,
    /// Post-header length per event type (index = type - 1).
    pub post_header_lens: Vec<u8>,
    /// Checksum algorithm of the events that follow.
    pub checksum: ChecksumAlg,
}

impl FormatDescription {
    /// What a v4 stream implies before its FORMAT_DESCRIPTION arrives.
    pub fn default_v4() -> Self {
        FormatDescription {
            binlog_version: 4,
            server_version: String::new(),
            create_timestamp: 0,
            header_len: HEADER_LEN as u8,
            post_header_lens: Vec::new(),
            checksum: ChecksumAlg::Off,
        }
    }

    /// True for MariaDB servers (version string contains `MariaDB`).
    pub fn is_mariadb(&self) -> bool {
        self.server_version.contains("MariaDB")
    }

    /// Post-header length of `event_type`, or `None` when this FDE does not list it.
    pub fn post_header_len(&self, event_type: u8) -> Option<u8> {
        self.post_header_lens.get(usize::from(event_type).checked_sub(1)?).copied()
    }

    /// Parses a whole FORMAT_DESCRIPTION event (header included).
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::with_base(buf.get(HEADER_LEN..).unwrap_or(&[]), HEADER_LEN);
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                what: "event header",
                offset: 0,
                need: HEADER_LEN,
                have: buf.len(),
            });
        }
        let binlog_version = c.u16("binlog version")?;
        let raw_version = c.bytes(50, "server version")?;
        let end = raw_version.iter().position(|&b| b == 0).unwrap_or(raw_version.len());
        let server_version = String::from_utf8_lossy(&raw_version[..end]).into_owned();
        let create_timestamp = c.u32("create timestamp")?;
        let header_len = c.u8("header length")?;
        if usize::from(header_len) < HEADER_LEN {
            return Err(DecodeError::Invalid {
                what: "header length",
                offset: HEADER_LEN + 56,
                detail: format!("{header_len} < 19"),
            });
        }
        let rest = c.take_rest();
        // Servers from MySQL 5.6.1 / MariaDB 5.3 on end the FDE with the checksum algorithm byte and a
        // 4-byte checksum slot (present even when the algorithm is OFF).
        let (post, checksum) = if has_checksum_footer(&server_version) && rest.len() >= 5 {
            let alg = rest[rest.len() - 5];
            let alg = match alg {
                0 => ChecksumAlg::Off,
                1 => ChecksumAlg::Crc32,
                x => ChecksumAlg::Other(x),
            };
            (&rest[..rest.len() - 5], alg)
        } else {
            (rest, ChecksumAlg::Off)
        };
        Ok(FormatDescription {
            binlog_version,
            server_version,
            create_timestamp,
            header_len,
            post_header_lens: post.to_vec(),
            checksum,
        })
    }
}

/// Whether a server of this version writes the checksum footer in its FDE (MySQL >= 5.6.1; every
/// MariaDB that can write one reports a version >= 5.3 or 10.x).
fn has_checksum_footer(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    let mut n = [0u32; 3];
    for slot in &mut n {
        *slot = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    }
    if version.contains("MariaDB") {
        return (n[0], n[1]) >= (5, 3);
    }
    (n[0], n[1], n[2]) >= (5, 6, 1)
}

/// One decoded event.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// Common header.
    pub header: EventHeader,
    /// Typed body.
    pub data: EventData<'a>,
}

/// The typed body of an event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventData<'a> {
    /// FORMAT_DESCRIPTION_EVENT.
    FormatDescription(FormatDescription),
    /// ROTATE_EVENT (real or fake).
    Rotate(Rotate),
    /// QUERY_EVENT, or MariaDB QUERY_COMPRESSED_EVENT after inflating.
    Query(Query),
    /// XID_EVENT: the commit of an XA-capable (InnoDB) transaction.
    Xid(u64),
    /// TABLE_MAP_EVENT.
    TableMap(Arc<TableMap>),
    /// WRITE/UPDATE/DELETE_ROWS v1/v2, PARTIAL_UPDATE_ROWS, MariaDB compressed rows.
    Rows(RowsEvent<'a>),
    /// TRANSACTION_PAYLOAD_EVENT (inflated).
    TransactionPayload(TransactionPayload),
    /// GTID_LOG_EVENT, ANONYMOUS_GTID_LOG_EVENT, GTID_TAGGED_LOG_EVENT.
    Gtid(Gtid),
    /// PREVIOUS_GTIDS_LOG_EVENT.
    PreviousGtids(Vec<GtidSidSet>),
    /// ROWS_QUERY_LOG_EVENT: the statement behind the next rows events.
    RowsQuery(String),
    /// HEARTBEAT_LOG_EVENT (v1) and HEARTBEAT_LOG_EVENT_V2.
    Heartbeat(Heartbeat),
    /// INTVAR_EVENT.
    IntVar(IntVar),
    /// RAND_EVENT.
    Rand(Rand),
    /// USER_VAR_EVENT.
    UserVar(UserVar),
    /// XA_PREPARE_LOG_EVENT.
    XaPrepare(XaPrepare),
    /// STOP_EVENT.
    Stop,
    /// INCIDENT_EVENT: code and message.
    Incident {
        /// Incident code.
        code: u16,
        /// Message.
        message: String,
    },
    /// MariaDB ANNOTATE_ROWS_EVENT: the statement behind the next rows events.
    AnnotateRows(String),
    /// MariaDB BINLOG_CHECKPOINT_EVENT: the oldest binlog still needed for crash recovery.
    BinlogCheckpoint(String),
    /// MariaDB GTID_EVENT.
    MariaGtid(MariaGtid),
    /// MariaDB GTID_LIST_EVENT.
    MariaGtidList(Vec<MariaGtid>),
    /// Any other type (the caller skips and counts it).
    Unknown {
        /// Event type code.
        event_type: u8,
    },
}

/// ROTATE_EVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotate {
    /// Position in the next file.
    pub position: u64,
    /// Next file name.
    pub next_file: String,
}

/// QUERY_EVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Session (thread) id.
    pub thread_id: u32,
    /// Execution time in seconds.
    pub exec_time: u32,
    /// Error code the statement had on the source.
    pub error_code: u16,
    /// Current database of the session (may be empty).
    pub schema: String,
    /// Statement text, decoded with the connection charset.
    pub sql: String,
}

/// Kind of a rows event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsKind {
    /// WRITE_ROWS (INSERT): after images only.
    Write,
    /// UPDATE_ROWS: before and after images.
    Update,
    /// DELETE_ROWS: before images only.
    Delete,
    /// PARTIAL_UPDATE_ROWS: before and after images; JSON columns of the after image may be diffs.
    PartialUpdate,
}

/// A rows event, with its row data still encoded (decode it with [`Decoder::rows`]).
#[derive(Debug, Clone)]
pub struct RowsEvent<'a> {
    /// Insert, update or delete.
    pub kind: RowsKind,
    /// Table id of the TABLE_MAP it refers to.
    pub table_id: u64,
    /// Rows flags (`STMT_END_F` = 1, ...).
    pub flags: u16,
    /// v2 extra data (raw), empty for v1.
    pub extra: Vec<u8>,
    /// Column count of the images.
    pub column_count: usize,
    /// Columns present in the before image (or the only image).
    pub present_before: Vec<u8>,
    /// Columns present in the after image (updates only).
    pub present_after: Option<Vec<u8>>,
    /// Encoded rows (inflated for MariaDB compressed events).
    pub rows: Cow<'a, [u8]>,
    /// Offset of `rows` in the event buffer (0 when it was inflated), for error offsets.
    pub rows_offset: usize,
}

impl RowsEvent<'_> {
    /// `STMT_END_F`: the last rows event of a statement.
    pub fn is_statement_end(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// TRANSACTION_PAYLOAD_EVENT, already inflated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionPayload {
    /// Compression type (0 = zstd, 255 = none).
    pub compression: u64,
    /// Declared uncompressed size.
    pub uncompressed_size: u64,
    /// The inner events, back to back, without checksums.
    pub payload: Vec<u8>,
}

impl TransactionPayload {
    /// Frames the inner events; decode each with [`Decoder::decode_payload_event`].
    pub fn events(&self) -> PayloadEvents<'_> {
        self.events_from(0)
    }

    /// Frames the inner events from byte `offset` of the inflated payload (a
    /// [`PayloadEvents::offset`] returned before).
    pub fn events_from(&self, offset: usize) -> PayloadEvents<'_> {
        PayloadEvents { buf: &self.payload, pos: offset, failed: false }
    }
}

/// Iterator over the events inside a [`TransactionPayload`].
#[derive(Debug)]
pub struct PayloadEvents<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl PayloadEvents<'_> {
    /// Offset of the next inner event in the inflated payload.
    pub fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for PayloadEvents<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let r = EventHeader::parse(rest).and_then(|h| {
            let size = h.event_size as usize;
            if size < HEADER_LEN || size > rest.len() {
                Err(DecodeError::BadEventSize {
                    file_offset: self.pos as u64,
                    declared: u64::from(h.event_size),
                    available: rest.len() as u64,
                })
            } else {
                Ok(&rest[..size])
            }
        });
        match &r {
            Ok(ev) => self.pos += ev.len(),
            Err(_) => self.failed = true,
        }
        Some(r)
    }
}

/// A MySQL GTID event (GTID, ANONYMOUS_GTID or tagged GTID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gtid {
    /// True for ANONYMOUS_GTID_LOG_EVENT.
    pub anonymous: bool,
    /// GTID flags (bit 0: may have been committed in parallel... `FLAG_MAY_HAVE_SBR`).
    pub flags: u8,
    /// Source UUID.
    pub sid: [u8; 16],
    /// Tag (MySQL 8.4+ tagged GTIDs).
    pub tag: Option<String>,
    /// Transaction number.
    pub gno: u64,
    /// Logical clock: last committed (0 when absent, as in 5.6).
    pub last_committed: u64,
    /// Logical clock: sequence number.
    pub sequence_number: u64,
}

impl Gtid {
    /// `uuid[:tag]:gno`, as MySQL prints it.
    pub fn to_gtid_string(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{}:{}", format_uuid(&self.sid), t, self.gno),
            None => format!("{}:{}", format_uuid(&self.sid), self.gno),
        }
    }
}

/// Formats 16 bytes as a lowercase hyphenated UUID.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// An interval `[start, end)` of GTID numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GtidInterval {
    /// First number.
    pub start: u64,
    /// One past the last number.
    pub end: u64,
}

/// One source (and tag) of a PREVIOUS_GTIDS set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GtidSidSet {
    /// Source UUID.
    pub sid: [u8; 16],
    /// Tag, for tagged sets.
    pub tag: Option<String>,
    /// Intervals.
    pub intervals: Vec<GtidInterval>,
}

/// HEARTBEAT_LOG_EVENT (v1: name only; v2: name and position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Current binlog file of the source.
    pub log_file: String,
    /// Position (v2 only; v1 carries it in the header's `log_pos`).
    pub log_pos: Option<u64>,
}

/// INTVAR_EVENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntVar {
    /// 1 = LAST_INSERT_ID, 2 = INSERT_ID.
    pub kind: u8,
    /// Value.
    pub value: u64,
}

/// RAND_EVENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rand {
    /// First seed.
    pub seed1: u64,
    /// Second seed.
    pub seed2: u64,
}

/// USER_VAR_EVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserVar {
    /// Variable name (without `@`).
    pub name: String,
    /// Value, `None` for NULL.
    pub value: Option<UserVarValue>,
}

/// Value of a USER_VAR_EVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserVarValue {
    /// STRING_RESULT, with its collation id.
    String {
        /// Collation id.
        charset: u32,
        /// Raw bytes.
        bytes: Vec<u8>,
    },
    /// REAL_RESULT rendered like Java's `Double.toString`.
    Real(String),
    /// INT_RESULT (`unsigned` from the flags byte).
    Int {
        /// Raw 8 bytes as a signed value.
        value: i64,
        /// The UNSIGNED flag.
        unsigned: bool,
    },
    /// DECIMAL_RESULT as a plain string.
    Decimal(String),
    /// A result type this decoder does not know, raw.
    Other {
        /// Type code.
        value_type: u8,
        /// Raw bytes.
        bytes: Vec<u8>,
    },
}

impl UserVar {
    /// Canal-style text rendering (`SET @name := value`), for the QUERY entry Canal builds.
    pub fn to_sql(&self) -> String {
        let v = match &self.value {
            None => "NULL".to_owned(),
            Some(UserVarValue::String { bytes, .. }) => {
                format!("'{}'", String::from_utf8_lossy(bytes).replace('\'', "''"))
            }
            Some(UserVarValue::Real(s)) | Some(UserVarValue::Decimal(s)) => s.clone(),
            Some(UserVarValue::Int { value, unsigned }) => {
                if *unsigned {
                    (*value as u64).to_string()
                } else {
                    value.to_string()
                }
            }
            Some(UserVarValue::Other { bytes, .. }) => format!("0x{}", hex(bytes)),
        };
        format!("SET @{} := {}", self.name, v)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// XA_PREPARE_LOG_EVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XaPrepare {
    /// XA COMMIT ... ONE PHASE.
    pub one_phase: bool,
    /// XID format id.
    pub format_id: i32,
    /// Global transaction id part.
    pub gtrid: Vec<u8>,
    /// Branch qualifier part.
    pub bqual: Vec<u8>,
}

/// A MariaDB GTID `domain-server-seq`, with the GTID event's flags where it came from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtid {
    /// Replication domain.
    pub domain_id: u32,
    /// Originating server id.
    pub server_id: u32,
    /// Sequence number.
    pub seq_no: u64,
    /// GTID event flags2 (`FL_STANDALONE` = 1, `FL_GROUP_COMMIT_ID` = 2, `FL_TRANSACTIONAL` = 4,
    /// ...); 0 in GTID lists.
    pub flags: u8,
    /// Group-commit id when `FL_GROUP_COMMIT_ID` is set.
    pub commit_id: Option<u64>,
}

impl std::fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain_id, self.server_id, self.seq_no)
    }
}

impl MariaGtid {
    /// `FL_STANDALONE`: no terminating XID/COMMIT follows (DDL, MyISAM).
    pub fn is_standalone(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Body of the event, with the common header and checksum removed; honours the FDE's header length
/// (extra header bytes are skipped) and post-header lengths.
pub(crate) fn parse_body<'a>(
    dec: &Decoder,
    header: &EventHeader,
    buf: &'a [u8],
) -> Result<EventData<'a>, DecodeError> {
    use event_type as t;
    let hlen = usize::from(dec.fde.header_len).max(HEADER_LEN);
    if buf.len() < hlen {
        return Err(DecodeError::Truncated {
            what: "event header",
            offset: 0,
            need: hlen,
            have: buf.len(),
        });
    }
    let mut c = Cursor::with_base(&buf[hlen..], hlen);
    let ty = header.event_type;
    let post = dec.fde.post_header_len(ty);
    Ok(match ty {
        t::ROTATE => {
            let position = if post == Some(0) { 4 } else { c.u64("rotate position")? };
            let name = c.take_rest();
            EventData::Rotate(Rotate {
                position,
                next_file: String::from_utf8_lossy(name).into_owned(),
            })
        }
        t::QUERY | t::MARIA_QUERY_COMPRESSED => {
            EventData::Query(parse_query(dec, &mut c, post, ty)?)
        }
        t::XID => EventData::Xid(c.u64("xid")?),
        t::TABLE_MAP => EventData::TableMap(Arc::new(table_map::parse(&mut c, post, dec)?)),
        t::WRITE_ROWS_V1
        | t::UPDATE_ROWS_V1
        | t::DELETE_ROWS_V1
        | t::WRITE_ROWS_V2
        | t::UPDATE_ROWS_V2
        | t::DELETE_ROWS_V2
        | t::PARTIAL_UPDATE_ROWS
        | t::MARIA_WRITE_ROWS_COMPRESSED_V1
        | t::MARIA_UPDATE_ROWS_COMPRESSED_V1
        | t::MARIA_DELETE_ROWS_COMPRESSED_V1
        | t::MARIA_WRITE_ROWS_COMPRESSED
        | t::MARIA_UPDATE_ROWS_COMPRESSED
        | t::MARIA_DELETE_ROWS_COMPRESSED => EventData::Rows(parse_rows(&mut c, post, ty)?),
        t::TRANSACTION_PAYLOAD => EventData::TransactionPayload(parse_payload(&mut c)?),
        t::GTID | t::ANONYMOUS_GTID => {
            EventData::Gtid(parse_gtid(&mut c, ty == t::ANONYMOUS_GTID)?)
        }
        t::GTID_TAGGED => EventData::Gtid(parse_tagged_gtid(&mut c)?),
        t::PREVIOUS_GTIDS => EventData::PreviousGtids(parse_previous_gtids(&mut c)?),
        t::ROWS_QUERY => {
            // One length byte (often wrong for statements over 255 bytes), then the text to the end.
            c.skip(1, "rows query length")?;
            EventData::RowsQuery(dec.opts.charset.decode(c.take_rest()).into_owned())
        }
        t::HEARTBEAT => EventData::Heartbeat(Heartbeat {
            log_file: String::from_utf8_lossy(c.take_rest()).into_owned(),
            log_pos: None,
        }),
        t::HEARTBEAT_V2 => EventData::Heartbeat(parse_heartbeat_v2(&mut c)?),
        t::INTVAR => {
            EventData::IntVar(IntVar { kind: c.u8("intvar type")?, value: c.u64("intvar value")? })
        }
        t::RAND => {
            EventData::Rand(Rand { seed1: c.u64("rand seed1")?, seed2: c.u64("rand seed2")? })
        }
        t::USER_VAR => EventData::UserVar(parse_user_var(&mut c)?),
        t::XA_PREPARE => EventData::XaPrepare(parse_xa_prepare(&mut c)?),
        t::STOP => EventData::Stop,
        t::INCIDENT => {
            let code = c.u16("incident code")?;
            let len = usize::from(c.u8("incident message length")?);
            let msg = c.bytes(len, "incident message")?;
            EventData::Incident { code, message: String::from_utf8_lossy(msg).into_owned() }
        }
        t::MARIA_ANNOTATE_ROWS => {
            EventData::AnnotateRows(dec.opts.charset.decode(c.take_rest()).into_owned())
        }
        t::MARIA_BINLOG_CHECKPOINT => {
            let len = c.u32("checkpoint name length")? as usize;
            let name = c.bytes(len, "checkpoint name")?;
            EventData::BinlogCheckpoint(String::from_utf8_lossy(name).into_owned())
        }
        t::MARIA_GTID => EventData::MariaGtid(parse_maria_gtid(&mut c, header.server_id)?),
        t::MARIA_GTID_LIST => EventData::MariaGtidList(parse_maria_gtid_list(&mut c)?),
        other => EventData::Unknown { event_type: other },
    })
}

fn parse_query(
    dec: &Decoder,
    c: &mut Cursor<'_>,
    post: Option<u8>,
    ty: u8,
) -> Result<Query, DecodeError> {
    let thread_id = c.u32("query thread id")?;
    let exec_time = c.u32("query exec time")?;
    let db_len = usize::from(c.u8("query db length")?);
    let error_code = c.u16("query error code")?;
    // v1/v3 QUERY post-headers (11 bytes) have no status-variable block.
    let status_len = if post.is_none_or(|p| p >= 13) {
        usize::from(c.u16("query status vars length")?)
    } else {
        0
    };
    // Extra post-header bytes a future server might add.
    if let Some(p) = post.filter(|&p| p > 13) {
        c.skip(usize::from(p) - 13, "query post-header")?;
    }
    // Status variables are skipped as one block: their layout changes between versions and Canal
    // does not need them.
    c.skip(status_len, "query status vars")?;
    let db = c.bytes(db_len, "query db name")?;
    c.skip(1, "query db terminator")?;
    let text = c.take_rest();
    let sql = if ty == event_type::MARIA_QUERY_COMPRESSED {
        let inflated = maria_inflate(text, "QUERY_COMPRESSED_EVENT")?;
        dec.opts.charset.decode(&inflated).into_owned()
    } else {
        dec.opts.charset.decode(text).into_owned()
    };
    Ok(Query {
        thread_id,
        exec_time,
        error_code,
        schema: String::from_utf8_lossy(db).into_owned(),
        sql,
    })
}

fn parse_rows<'a>(
    c: &mut Cursor<'a>,
    post: Option<u8>,
    ty: u8,
) -> Result<RowsEvent<'a>, DecodeError> {
    use event_type as t;
    let kind = match ty {
        t::WRITE_ROWS_V1
        | t::WRITE_ROWS_V2
        | t::MARIA_WRITE_ROWS_COMPRESSED_V1
        | t::MARIA_WRITE_ROWS_COMPRESSED => RowsKind::Write,
        t::UPDATE_ROWS_V1
        | t::UPDATE_ROWS_V2
        | t::MARIA_UPDATE_ROWS_COMPRESSED_V1
        | t::MARIA_UPDATE_ROWS_COMPRESSED => RowsKind::Update,
        t::PARTIAL_UPDATE_ROWS => RowsKind::PartialUpdate,
        _ => RowsKind::Delete,
    };
    let v2 = matches!(
        ty,
        t::WRITE_ROWS_V2
            | t::UPDATE_ROWS_V2
            | t::DELETE_ROWS_V2
            | t::PARTIAL_UPDATE_ROWS
            | t::MARIA_WRITE_ROWS_COMPRESSED
            | t::MARIA_UPDATE_ROWS_COMPRESSED
            | t::MARIA_DELETE_ROWS_COMPRESSED
    );
    let compressed =
        (t::MARIA_WRITE_ROWS_COMPRESSED_V1..=t::MARIA_DELETE_ROWS_COMPRESSED).contains(&ty);
    // Table ids are 6 bytes since 5.1.4; a 6-byte post-header means the old 4-byte id.
    let table_id =
        if post == Some(6) { u64::from(c.u32("rows table id")?) } else { c.u48("rows table id")? };
    let flags = c.u16("rows flags")?;
    let mut extra = Vec::new();
    if v2 {
        let len = usize::from(c.u16("rows extra data length")?);
        let body = len
            .checked_sub(2)
            .ok_or_else(|| c.invalid("rows extra data length", format!("{len} < 2")))?;
        extra = c.bytes(body, "rows extra data")?.to_vec();
    }
    let column_count = c.lenenc("rows column count")?;
    let column_count = usize::try_from(column_count)
        .ok()
        .filter(|&n| n <= 4096 && n.div_ceil(8) <= c.remaining())
        .ok_or_else(|| c.invalid("rows column count", format!("{column_count} columns")))?;
    let nb = column_count.div_ceil(8);
    let present_before = c.bytes(nb, "rows columns-present bitmap")?.to_vec();
    let present_after = if matches!(kind, RowsKind::Update | RowsKind::PartialUpdate) {
        Some(c.bytes(nb, "rows columns-present-after bitmap")?.to_vec())
    } else {
        None
    };
    let rows_offset = c.offset();
    let data = c.take_rest();
    let (rows, rows_offset) = if compressed {
        (Cow::Owned(maria_inflate(data, "compressed rows event")?), 0)
    } else {
        (Cow::Borrowed(data), rows_offset)
    };
    Ok(RowsEvent {
        kind,
        table_id,
        flags,
        extra,
        column_count,
        present_before,
        present_after,
        rows,
        rows_offset,
    })
}

/// Largest inflated size accepted for one compressed event or payload. A server's
/// `max_allowed_packet` tops out at 1 GiB, so nothing legitimate is larger.
const MAX_INFLATED: usize = 1 << 30;

/// MariaDB's compressed-event body: one header byte `0x80 | n` (n = bytes of the uncompressed
/// length, 1..4), the length big-endian, then a zlib stream.
fn maria_inflate(data: &[u8], what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let bad = |detail: String| DecodeError::Decompress { what, detail };
    let first = *data.first().ok_or_else(|| bad("empty body".into()))?;
    let n = usize::from(first & 0x07);
    if n == 0 || n > 4 || data.len() < 1 + n {
        return Err(bad(format!("bad header byte {first:#04x}")));
    }
    let len = data[1..=n].iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
    if len > MAX_INFLATED {
        return Err(bad(format!("declared size {len} is too large")));
    }
    let mut out = Vec::with_capacity(len.min(data.len().saturating_mul(64)));
    let mut z = flate2::read::ZlibDecoder::new(&data[1 + n..]).take(len as u64 + 1);
    z.read_to_end(&mut out).map_err(|e| bad(e.to_string()))?;
    if out.len() != len {
        return Err(bad(format!("inflated to {} bytes, header says {len}", out.len())));
    }
    Ok(out)
}

fn parse_payload(c: &mut Cursor<'_>) -> Result<TransactionPayload, DecodeError> {
    let mut size = None;
    let mut compression = None;
    let mut uncompressed_size = 0u64;
    loop {
        let field = c.lenenc("payload field type")?;
        if field == 0 {
            break;
        }
        let len = c.lenenc("payload field length")?;
        let len =
            usize::try_from(len).map_err(|_| c.invalid("payload field length", len.to_string()))?;
        let start = c.pos();
        let val = {
            let mut sub = Cursor::with_base(c.bytes(len, "payload field")?, c.offset() - len);
            sub.lenenc("payload field value")?
        };
        debug_assert!(c.pos() == start + len);
        match field {
            1 => size = Some(val),
            2 => compression = Some(val),
            3 => uncompressed_size = val,
            // Unknown fields are skipped: their length is explicit.
            _ => {}
        }
    }
    let size = size.ok_or_else(|| c.invalid("transaction payload", "no payload size field"))?;
    let compression =
        compression.ok_or_else(|| c.invalid("transaction payload", "no compression type field"))?;
    let size = usize::try_from(size).map_err(|_| c.invalid("payload size", size.to_string()))?;
    let data = c.bytes(size, "transaction payload data")?;
    let payload = match compression {
        0 => {
            if uncompressed_size > MAX_INFLATED as u64 {
                return Err(DecodeError::Decompress {
                    what: "TRANSACTION_PAYLOAD",
                    detail: format!("declared size {uncompressed_size} is too large"),
                });
            }
            let mut out =
                Vec::with_capacity((uncompressed_size as usize).min(data.len().saturating_mul(64)));
            let dec = zstd::stream::read::Decoder::new(data).map_err(|e| {
                DecodeError::Decompress { what: "TRANSACTION_PAYLOAD", detail: e.to_string() }
            })?;
            dec.take(MAX_INFLATED as u64 + 1).read_to_end(&mut out).map_err(|e| {
                DecodeError::Decompress { what: "TRANSACTION_PAYLOAD", detail: e.to_string() }
            })?;
            if out.len() > MAX_INFLATED {
                return Err(DecodeError::Decompress {
                    what: "TRANSACTION_PAYLOAD",
                    detail: "inflated size exceeds 1 GiB".into(),
                });
            }
            out
        }
        255 => data.to_vec(),
        other => {
            return Err(DecodeError::Decompress {
                what: "TRANSACTION_PAYLOAD",
                detail: format!("unknown compression type {other}"),
            });
        }
    };
    Ok(TransactionPayload { compression, uncompressed_size, payload })
}

fn parse_gtid(c: &mut Cursor<'_>, anonymous: bool) -> Result<Gtid, DecodeError> {
    let flags = c.u8("gtid flags")?;
    let sid = c.array::<16>("gtid sid")?;
    let gno = c.u64("gtid gno")?;
    let mut last_committed = 0;
    let mut sequence_number = 0;
    // 5.6 GTIDs end here; from 5.7 a logical-clock block (type code 2) follows.
    if c.rest().first() == Some(&2) {
        c.skip(1, "gtid logical clock type")?;
        last_committed = c.u64("gtid last_committed")?;
        sequence_number = c.u64("gtid sequence_number")?;
    }
    // Commit timestamps, transaction length and server versions may follow; Canal does not use them.
    Ok(Gtid { anonymous, flags, sid, tag: None, gno, last_committed, sequence_number })
}

/// GTID_TAGGED_LOG_EVENT: MySQL's serialization format v2 — a version byte, the self-inclusive
/// payload size, the last non-ignorable field id, then `(field id, value)` pairs.
fn parse_tagged_gtid(c: &mut Cursor<'_>) -> Result<Gtid, DecodeError> {
    let start = c.pos();
    let version = c.u8("tagged gtid serialization version")?;
    if version != 2 {
        return Err(c.invalid("tagged gtid serialization version", version.to_string()));
    }
    let payload_size = c.varlen_uint("tagged gtid payload size")?;
    let last_non_ignorable = c.varlen_uint("tagged gtid last non-ignorable field")?;
    let consumed = (c.pos() - start) as u64;
    let fields_len = payload_size
        .checked_sub(consumed)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| c.invalid("tagged gtid payload size", payload_size.to_string()))?;
    let base = c.offset();
    let mut f = Cursor::with_base(c.bytes(fields_len, "tagged gtid fields")?, base);
    let mut g = Gtid {
        anonymous: false,
        flags: 0,
        sid: [0; 16],
        tag: None,
        gno: 0,
        last_committed: 0,
        sequence_number: 0,
    };
    while !f.is_empty() {
        let id = f.varlen_uint("tagged gtid field id")?;
        match id {
            0 => g.flags = f.varlen_uint("tagged gtid flags")? as u8,
            1 => {
                for b in &mut g.sid {
                    *b = f.varlen_uint("tagged gtid sid")? as u8;
                }
            }
            2 => g.gno = f.varlen_int("tagged gtid gno")?.max(0) as u64,
            3 => {
                let len = f.varlen_uint("tagged gtid tag length")?;
                let len = usize::try_from(len)
                    .map_err(|_| f.invalid("tagged gtid tag length", len.to_string()))?;
                g.tag =
                    Some(String::from_utf8_lossy(f.bytes(len, "tagged gtid tag")?).into_owned());
            }
            4 => g.last_committed = f.varlen_int("tagged gtid last_committed")?.max(0) as u64,
            5 => g.sequence_number = f.varlen_int("tagged gtid sequence_number")?.max(0) as u64,
            6..=11 => {
                f.varlen_uint("tagged gtid field")?;
            }
            _ if id <= last_non_ignorable => {
                return Err(
                    f.invalid("tagged gtid field id", format!("unknown non-ignorable field {id}"))
                );
            }
            // An unknown ignorable field: its length is unknowable, and nothing we need follows it.
            _ => break,
        }
    }
    if g.tag.as_deref() == Some("") {
        g.tag = None;
    }
    Ok(g)
}

fn parse_previous_gtids(c: &mut Cursor<'_>) -> Result<Vec<GtidSidSet>, DecodeError> {
    let head = c.u64("previous gtids count")?;
    let tagged = head >> 56 != 0;
    let n = if tagged { (head >> 8) & ((1 << 48) - 1) } else { head & ((1 << 56) - 1) };
    // Each entry has at least 24 bytes: bound the count by the input before allocating.
    if n > (c.remaining() / 24) as u64 {
        return Err(
            c.invalid("previous gtids count", format!("{n} entries in {} bytes", c.remaining()))
        );
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let sid = c.array::<16>("previous gtids sid")?;
        let tag = if tagged {
            let len = c.varlen_uint("previous gtids tag length")?;
            let len = usize::try_from(len)
                .map_err(|_| c.invalid("previous gtids tag length", len.to_string()))?;
            let t = c.bytes(len, "previous gtids tag")?;
            (!t.is_empty()).then(|| String::from_utf8_lossy(t).into_owned())
        } else {
            None
        };
        let k = c.u64("previous gtids interval count")?;
        if k > (c.remaining() / 16) as u64 {
            return Err(c.invalid("previous gtids interval count", k.to_string()));
        }
        let mut intervals = Vec::with_capacity(k as usize);
        for _ in 0..k {
            let start = c.u64("previous gtids interval start")?;
            let end = c.u64("previous gtids interval end")?;
            intervals.push(GtidInterval { start, end });
        }
        out.push(GtidSidSet { sid, tag, intervals });
    }
    Ok(out)
}

fn parse_heartbeat_v2(c: &mut Cursor<'_>) -> Result<Heartbeat, DecodeError> {
    // Type-length-value fields: 0 = end, 1 = log file name, 2 = log position (packed integer).
    let mut hb = Heartbeat { log_file: String::new(), log_pos: None };
    while !c.is_empty() {
        let ty = c.lenenc("heartbeat field type")?;
        if ty == 0 {
            break;
        }
        let len = c.lenenc("heartbeat field length")?;
        let len = usize::try_from(len)
            .map_err(|_| c.invalid("heartbeat field length", len.to_string()))?;
        let base = c.offset();
        let v = c.bytes(len, "heartbeat field")?;
        match ty {
            1 => hb.log_file = String::from_utf8_lossy(v).into_owned(),
            2 => hb.log_pos = Some(Cursor::with_base(v, base).lenenc("heartbeat log position")?),
            _ => {}
        }
    }
    Ok(hb)
}

fn parse_user_var(c: &mut Cursor<'_>) -> Result<UserVar, DecodeError> {
    let name_len = c.u32("user var name length")? as usize;
    let name = String::from_utf8_lossy(c.bytes(name_len, "user var name")?).into_owned();
    let is_null = c.u8("user var null flag")? != 0;
    if is_null {
        return Ok(UserVar { name, value: None });
    }
    let ty = c.u8("user var type")?;
    let charset = c.u32("user var charset")?;
    let len = c.u32("user var value length")? as usize;
    let bytes = c.bytes(len, "user var value")?;
    let flags = if c.is_empty() { 0 } else { c.u8("user var flags")? };
    let value = match ty {
        0 => UserVarValue::String { charset, bytes: bytes.to_vec() },
        1 if bytes.len() == 8 => {
            let v = f64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
            UserVarValue::Real(super::javafmt::double_to_string(v))
        }
        2 if bytes.len() == 8 => UserVarValue::Int {
            value: i64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])),
            unsigned: flags & 1 != 0,
        },
        4 if bytes.len() >= 2 => {
            let precision = bytes[0];
            let scale = bytes[1];
            let mut s = String::new();
            super::value::decimal_to_string(&bytes[2..], precision, scale, &mut s)
                .map_err(|_| c.invalid("user var decimal", format!("({precision},{scale})")))?;
            UserVarValue::Decimal(s)
        }
        other => UserVarValue::Other { value_type: other, bytes: bytes.to_vec() },
    };
    Ok(UserVar { name, value: Some(value) })
}

fn parse_xa_prepare(c: &mut Cursor<'_>) -> Result<XaPrepare, DecodeError> {
    let one_phase = c.u8("xa prepare one_phase")? != 0;
    let format_id = c.u32("xa format id")? as i32;
    let gtrid_len = c.u32("xa gtrid length")? as usize;
    let bqual_len = c.u32("xa bqual length")? as usize;
    if gtrid_len > 64 || bqual_len > 64 {
        return Err(c.invalid("xa xid lengths", format!("gtrid {gtrid_len}, bqual {bqual_len}")));
    }
    let gtrid = c.bytes(gtrid_len, "xa gtrid")?.to_vec();
    let bqual = c.bytes(bqual_len, "xa bqual")?.to_vec();
    Ok(XaPrepare { one_phase, format_id, gtrid, bqual })
}

fn parse_maria_gtid(c: &mut Cursor<'_>, server_id: u32) -> Result<MariaGtid, DecodeError> {
    let seq_no = c.u64("mariadb gtid seq_no")?;
    let domain_id = c.u32("mariadb gtid domain_id")?;
    let flags = c.u8("mariadb gtid flags")?;
    let commit_id = if flags & 2 != 0 { Some(c.u64("mariadb gtid commit_id")?) } else { None };
    // XA xid and extra flags may follow; Canal does not need them.
    Ok(MariaGtid { domain_id, server_id, seq_no, flags, commit_id })
}

fn parse_maria_gtid_list(c: &mut Cursor<'_>) -> Result<Vec<MariaGtid>, DecodeError> {
    let n = c.u32("mariadb gtid list count")? & 0x0fff_ffff;
    if n as usize > c.remaining() / 16 {
        return Err(c.invalid(
            "mariadb gtid list count",
            format!("{n} entries in {} bytes", c.remaining()),
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let domain_id = c.u32("mariadb gtid list domain")?;
        let server_id = c.u32("mariadb gtid list server")?;
        let seq_no = c.u64("mariadb gtid list seq_no")?;
        out.push(MariaGtid { domain_id, server_id, seq_no, flags: 0, commit_id: None });
    }
    Ok(out)
}
