//! The dump client: a small MySQL client over tokio's `TcpStream` that authenticates, prepares
//! the session like Canal, registers as a replica and streams raw binlog events. It exists
//! because mysql_async's binlog stream cannot set dump flags (MariaDB ANNOTATE_ROWS) nor choose
//! `@master_binlog_checksum`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use mysql_common::packets::{BinlogDumpFlags, ComBinlogDump, ComBinlogDumpGtid, ComRegisterSlave};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth;
use super::error::{ER_MASTER_FATAL_ERROR_READING_BINLOG, ReplicaError};
use super::event::{ChecksumAlg, RawEvent, StreamPacket, classify, event_type};
use super::gtid::{GtidSet, MariadbGtidList};
use super::packet::{self, PacketCodec, TextRow, caps};

/// MariaDB dump flag `BINLOG_SEND_ANNOTATE_ROWS_EVENT` (same bit as MySQL's
/// `BINLOG_THROUGH_POSITION`, which MySQL ignores on COM_BINLOG_DUMP).
pub const BINLOG_SEND_ANNOTATE_ROWS_EVENT: u16 = 0x02;

/// How to reach the server and present ourselves as a replica. Build with
/// [`ReplicaConfig::new`] or [`ReplicaConfig::from_url`], then adjust fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct ReplicaConfig {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Replication user (needs REPLICATION SLAVE, REPLICATION CLIENT / BINLOG MONITOR, SELECT).
    pub user: String,
    /// Its password.
    pub password: String,
    /// Our server id in COM_REGISTER_SLAVE / COM_BINLOG_DUMP (Canal's `slaveId`). Must differ
    /// from every other replica of the server: a second dump with the same id kills the first.
    pub slave_id: u32,
    /// `@master_heartbeat_period`: the server sends a HEARTBEAT event when idle this long.
    pub heartbeat_period: Duration,
    /// Added to the heartbeat period to get the binlog socket read timeout (Canal: 15 s + 10 s).
    pub read_timeout_margin: Duration,
    /// Limit for TCP connect, handshake and each non-dump command.
    pub connect_timeout: Duration,
    /// Largest packet (event) accepted; bigger announcements fail with `PacketTooLarge`.
    pub max_packet_size: usize,
    /// The server's RSA public key (PEM) for caching_sha2_password full authentication.
    pub server_public_key: Option<String>,
    /// Without `server_public_key`, ask the server for its key during full authentication
    /// (as Canal's driver does). Off means such logins fail with `AuthUnsupported`.
    pub allow_public_key_retrieval: bool,
}

impl fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("slave_id", &self.slave_id)
            .field("heartbeat_period", &self.heartbeat_period)
            .field("read_timeout_margin", &self.read_timeout_margin)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_packet_size", &self.max_packet_size)
            .field("allow_public_key_retrieval", &self.allow_public_key_retrieval)
            .finish_non_exhaustive()
    }
}

impl ReplicaConfig {
    /// A configuration with Canal's defaults: slave id 1234, heartbeat 15 s, read timeout
    /// 25 s, connect timeout 10 s, packets up to 1 GiB, public key retrieval allowed.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        ReplicaConfig {
            host: host.into(),
            port,
            user: user.into(),
            password: password.into(),
            slave_id: 1234,
            heartbeat_period: Duration::from_secs(15),
            read_timeout_margin: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1 << 30,
            server_public_key: None,
            allow_public_key_retrieval: true,
        }
    }

    /// Parses `mysql://user:password@host:port` (the form of the test-service variables).
    ///
    /// # Errors
    /// [`ReplicaError::InvalidInput`] for a URL mysql_async cannot parse.
    pub fn from_url(url: &str) -> Result<Self, ReplicaError> {
        let opts = mysql_async::Opts::from_url(url)
            .map_err(|e| ReplicaError::InvalidInput { what: "MySQL URL", reason: e.to_string() })?;
        Ok(Self::new(
            opts.ip_or_hostname(),
            opts.tcp_port(),
            opts.user().unwrap_or_default(),
            opts.pass().unwrap_or_default(),
        ))
    }

    /// Sets the slave id.
    pub fn with_slave_id(mut self, slave_id: u32) -> Self {
        self.slave_id = slave_id;
        self
    }

    /// Sets the heartbeat period (the read timeout follows it).
    pub fn with_heartbeat_period(mut self, period: Duration) -> Self {
        self.heartbeat_period = period;
        self
    }

    /// The binlog socket read timeout: heartbeat period + margin, or `None` (wait forever) when
    /// heartbeats are off.
    pub fn binlog_read_timeout(&self) -> Option<Duration> {
        if self.heartbeat_period.is_zero() {
            None
        } else {
            Some(self.heartbeat_period + self.read_timeout_margin)
        }
    }

    /// mysql_async options for the meta connection to the same server as the same user.
    pub(crate) fn meta_opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false)
            .into()
    }
}

/// Where a dump starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpStart {
    /// A binlog file and the offset of the first event to send (4 = start of file).
    FilePos {
        /// Binlog file name, e.g. `binlog.000003`.
        file: String,
        /// Offset in that file (COM_BINLOG_DUMP carries 32 bits).
        position: u64,
    },
    /// MySQL GTID auto-positioning: everything not in this executed set (COM_BINLOG_DUMP_GTID).
    MysqlGtid(GtidSet),
    /// MariaDB GTID: everything after these GTIDs (`@slave_connect_state`).
    MariadbGtid(MariadbGtidList),
}

impl fmt::Display for DumpStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpStart::FilePos { file, position } => write!(f, "{file}:{position}"),
            DumpStart::MysqlGtid(set) => write!(f, "gtid '{set}'"),
            DumpStart::MariadbGtid(list) => write!(f, "mariadb gtid '{list}'"),
        }
    }
}

/// Dump options beyond the start position (default: blocking, registered).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DumpOptions {
    /// `BINLOG_DUMP_NON_BLOCK`: the server ends the stream (EOF) at the end of the last binlog
    /// instead of waiting for new events.
    pub non_blocking: bool,
    /// Skip COM_REGISTER_SLAVE (used by scans; the live dump registers like Canal).
    pub skip_register: bool,
}

/// What the handshake and session setup learnt about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The version string from the handshake (MariaDB's starts with `5.5.5-`).
    pub server_version: String,
    /// Parsed (major, minor, patch); for MariaDB the real version after the `5.5.5-` prefix.
    pub version: (u16, u16, u16),
    /// `true` for MariaDB.
    pub is_mariadb: bool,
    /// Connection (thread) id — what `KILL CONNECTION` takes.
    pub connection_id: u32,
    /// `@@global.binlog_checksum` at connect time, also sent as `@master_binlog_checksum`.
    pub checksum: ChecksumAlg,
}

impl DumpOptions {
    /// Sets `BINLOG_DUMP_NON_BLOCK` (end the stream at the end of the last binlog).
    pub fn with_non_blocking(mut self, yes: bool) -> Self {
        self.non_blocking = yes;
        self
    }

    /// Skips COM_REGISTER_SLAVE.
    pub fn with_skip_register(mut self, yes: bool) -> Self {
        self.skip_register = yes;
        self
    }
}

/// Parses `"5.5.5-10.11.19-MariaDB-..."` / `"8.4.0"` into numbers.
pub(crate) fn parse_version(v: &str) -> (u16, u16, u16) {
    let v = v.strip_prefix("5.5.5-").unwrap_or(v);
    let mut nums =
        v.split(|c: char| !c.is_ascii_digit()).take(3).map(|s| s.parse::<u16>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

/// Socket plus framing state. Reads go through a persistent buffer, so a dropped read future
/// loses nothing (cancel safety).
#[derive(Debug)]
struct PacketIo {
    stream: TcpStream,
    codec: PacketCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl PacketIo {
    /// Ensures room for the next read. When the buffer is short of what the chunk being received
    /// still needs (at least 16 KiB), the unconsumed bytes move to a fresh buffer sized for that
    /// chunk (at least 64 KiB). Unlike `BytesMut::reserve`, which doubles and then keeps its
    /// capacity, this sizes a big packet's buffer once and lets its memory go as soon as the
    /// events sliced from it are dropped. A packet of several 16 MiB chunks grows the buffer at
    /// least twofold per chunk, so a 1 GiB event is not copied once per chunk.
    fn make_room(&mut self) {
        let spare = self.rbuf.capacity() - self.rbuf.len();
        let mut want = self.codec.missing(&self.rbuf).max(16 * 1024);
        if self.rbuf.len() > packet::MAX_CHUNK {
            want = want.max(self.rbuf.len());
        }
        let oversized = self.rbuf.is_empty() && self.rbuf.capacity() > 1 << 20;
        if spare < want || oversized {
            let mut fresh = BytesMut::with_capacity(self.rbuf.len() + want.max(64 * 1024));
            fresh.extend_from_slice(&self.rbuf);
            self.rbuf = fresh;
        }
    }

    async fn read(
        &mut self,
        op: &'static str,
        limit: Option<Duration>,
    ) -> Result<Bytes, ReplicaError> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.rbuf)? {
                return Ok(p);
            }
            self.make_room();
            let read = self.stream.read_buf(&mut self.rbuf);
            let n = match limit {
                Some(t) => tokio::time::timeout(t, read)
                    .await
                    .map_err(|_| ReplicaError::Timeout { op, after: t })?,
                None => read.await,
            }
            .map_err(|e| ReplicaError::io(op, e))?;
            if n == 0 {
                return Err(ReplicaError::io(
                    op,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ),
                ));
            }
        }
    }

    async fn write(
        &mut self,
        payload: &[u8],
        op: &'static str,
        limit: Duration,
    ) -> Result<(), ReplicaError> {
        self.wbuf.clear();
        self.codec.encode(payload, &mut self.wbuf);
        tokio::time::timeout(limit, self.stream.write_all(&self.wbuf))
            .await
            .map_err(|_| ReplicaError::Timeout { op, after: limit })?
            .map_err(|e| ReplicaError::io(op, e))
    }

    /// Sends a command packet (sequence id restarts at 0).
    async fn command(
        &mut self,
        payload: &[u8],
        op: &'static str,
        limit: Duration,
    ) -> Result<(), ReplicaError> {
        self.codec.reset_seq();
        self.write(payload, op, limit).await
    }
}

/// An authenticated connection prepared for dumping (session variables set like Canal).
#[derive(Debug)]
pub struct ReplicaConnection {
    io: PacketIo,
    info: ServerInfo,
    cfg: ReplicaConfig,
    local_addr: Option<SocketAddr>,
}

impl ReplicaConnection {
    /// Connects, authenticates (`mysql_native_password`, `caching_sha2_password` incl. the RSA
    /// full path), and runs Canal's session setup: timeouts, `set names 'binary'`,
    /// `@master_binlog_checksum`, `@slave_uuid`, `@mariadb_slave_capability='4'`,
    /// `@master_heartbeat_period`; then reads `@@global.binlog_checksum`.
    ///
    /// # Errors
    /// `Io`/`Timeout` (transient) when the server is unreachable; `Auth`, `AuthUnsupported`
    /// (definite) for login problems; `Protocol`/`UnsupportedServer` for servers that do not
    /// speak protocol 4.1.
    ///
    /// # Cancel safety
    /// Dropping the future drops the half-open connection; nothing else is affected.
    pub async fn connect(cfg: &ReplicaConfig) -> Result<Self, ReplicaError> {
        let limit = cfg.connect_timeout;
        let stream = tokio::time::timeout(limit, TcpStream::connect((cfg.host.as_str(), cfg.port)))
            .await
            .map_err(|_| ReplicaError::Timeout { op: "connect", after: limit })?
            .map_err(|e| ReplicaError::io("connect", e))?;
        let _ = stream.set_nodelay(true);
        let local_addr = stream.local_addr().ok();
        let mut io = PacketIo {
            stream,
            codec: PacketCodec::new(cfg.max_packet_size),
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::new(),
        };
        let first = io.read("read handshake", Some(limit)).await?;
        if first.first() == Some(&0xFF) {
            return Err(packet::parse_err(&first)?.into_error("handshake"));
        }
        let hs = packet::parse_handshake(&first)?;
        if hs.capabilities & caps::PROTOCOL_41 == 0 {
            return Err(ReplicaError::UnsupportedServer {
                reason: format!("'{}' does not speak protocol 4.1", hs.server_version),
            });
        }
        authenticate(&mut io, cfg, &hs).await?;
        let is_mariadb = hs.server_version.contains("MariaDB");
        let mut conn = ReplicaConnection {
            io,
            info: ServerInfo {
                version: parse_version(&hs.server_version),
                server_version: hs.server_version,
                is_mariadb,
                connection_id: hs.connection_id,
                checksum: ChecksumAlg::Off,
            },
            cfg: cfg.clone(),
            local_addr,
        };
        conn.session_setup().await?;
        Ok(conn)
    }

    /// What the handshake and session setup learnt about the server.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    async fn session_setup(&mut self) -> Result<(), ReplicaError> {
        let heartbeat_ns = self.cfg.heartbeat_period.as_nanos().min(u128::from(u64::MAX));
        let statements = [
            "set wait_timeout=9999999".to_string(),
            "set net_write_timeout=7200".to_string(),
            "set net_read_timeout=7200".to_string(),
            "set names 'binary'".to_string(),
            "set @master_binlog_checksum= @@global.binlog_checksum".to_string(),
            "set @slave_uuid=uuid()".to_string(),
            "SET @mariadb_slave_capability='4'".to_string(),
            format!("SET @master_heartbeat_period={heartbeat_ns}"),
        ];
        for sql in &statements {
            // Like Canal: a refused setting is logged, not fatal; a dead connection is fatal.
            match self.query(sql).await {
                Ok(_) => {}
                Err(e @ ReplicaError::Server { .. }) if !e.is_transient() => {
                    tracing::warn!(statement = %sql, error = %e, "session setup statement failed");
                }
                Err(e) => return Err(e),
            }
        }
        self.info.checksum = match self.query("select @@global.binlog_checksum").await {
            Ok(rows) => {
                let v = rows
                    .first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.as_deref())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                ChecksumAlg::from_variable(&v).ok_or_else(|| ReplicaError::UnsupportedServer {
                    reason: format!("unknown binlog_checksum '{v}'"),
                })?
            }
            // Servers before MySQL 5.6.1 have no checksums (and no such variable).
            Err(ReplicaError::Server { code: 1193, .. }) => ChecksumAlg::Off,
            Err(e) => return Err(e),
        };
        Ok(())
    }

    /// Runs one statement over the text protocol and returns its rows (empty for statements
    /// without a result set).
    ///
    /// # Errors
    /// `Server` for SQL errors; `Io`/`Timeout` for connection problems; `Protocol` for bad
    /// packets.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropping the future mid-way leaves the connection unusable.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<TextRow>, ReplicaError> {
        let limit = self.cfg.connect_timeout;
        let mut cmd = Vec::with_capacity(sql.len() + 1);
        cmd.push(0x03);
        cmd.extend_from_slice(sql.as_bytes());
        self.io.command(&cmd, "query", limit).await?;
        let first = self.io.read("query", Some(limit)).await?;
        match first.first() {
            Some(0x00) => return Ok(Vec::new()),
            Some(0xFF) => return Err(packet::parse_err(&first)?.into_error("query")),
            Some(0xFB) => return Err(ReplicaError::protocol("server asked for LOCAL INFILE")),
            _ => {}
        }
        let columns = packet::parse_column_count(&first)?;
        for _ in 0..columns {
            self.io.read("query", Some(limit)).await?;
        }
        let eof = self.io.read("query", Some(limit)).await?;
        if !packet::is_eof(&eof) {
            return Err(ReplicaError::protocol("missing EOF after column definitions"));
        }
        let mut rows = Vec::new();
        loop {
            let p = self.io.read("query", Some(limit)).await?;
            if packet::is_eof(&p) {
                return Ok(rows);
            }
            if p.first() == Some(&0xFF) {
                return Err(packet::parse_err(&p)?.into_error("query"));
            }
            rows.push(packet::parse_text_row(&p, columns)?);
        }
    }

    async fn expect_ok(&mut self, op: &'static str) -> Result<(), ReplicaError> {
        let p = self.io.read(op, Some(self.cfg.connect_timeout)).await?;
        match p.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(packet::parse_err(&p)?.into_error(op)),
            _ => Err(ReplicaError::protocol(format!("{op}: expected OK or ERR"))),
        }
    }

    /// COM_REGISTER_SLAVE with our slave id and local address (as Canal reports it).
    async fn register_slave(&mut self) -> Result<(), ReplicaError> {
        let host = self.local_addr.map(|a| a.ip().to_string()).unwrap_or_default();
        let port = self.local_addr.map(|a| a.port()).unwrap_or(0);
        let cmd = ComRegisterSlave::new(self.cfg.slave_id)
            .with_hostname(host.as_bytes())
            .with_user(self.cfg.user.as_bytes())
            .with_password(self.cfg.password.as_bytes())
            .with_port(port);
        let mut buf = Vec::new();
        cmd.serialize(&mut buf);
        let limit = self.cfg.connect_timeout;
        self.io.command(&buf, "register slave", limit).await?;
        self.expect_ok("register slave").await
    }

    /// Starts the dump and turns the connection into an event stream.
    ///
    /// * file/pos → COM_REGISTER_SLAVE, then COM_BINLOG_DUMP with flag
    ///   [`BINLOG_SEND_ANNOTATE_ROWS_EVENT`] (so MariaDB sends ANNOTATE_ROWS next to GTIDs);
    /// * MySQL GTID → COM_BINLOG_DUMP_GTID with the encoded set (no registration, like Canal);
    /// * MariaDB GTID → `@slave_connect_state`, `@slave_gtid_strict_mode=0`,
    ///   `@slave_gtid_ignore_duplicates=0`, registration, COM_BINLOG_DUMP with an empty file.
    ///
    /// A start the server does not have (error 1236) is reported by the first
    /// [`BinlogStream::next_event`] call as [`ReplicaError::Purged`] (other 1236 errors, e.g. a
    /// corrupt binlog, as [`ReplicaError::DumpRejected`]).
    ///
    /// # Errors
    /// `UnsupportedServer` for a GTID flavour the server does not have; `InvalidInput` for a
    /// position above 4 GiB; connection errors as in [`ReplicaConnection::query`].
    ///
    /// # Cancel safety
    /// Not cancel-safe (the connection is consumed).
    pub async fn dump(
        mut self,
        start: DumpStart,
        options: DumpOptions,
    ) -> Result<BinlogStream, ReplicaError> {
        let limit = self.cfg.connect_timeout;
        let mut flags = BinlogDumpFlags::empty();
        if options.non_blocking {
            flags |= BinlogDumpFlags::BINLOG_DUMP_NON_BLOCK;
        }
        let mut buf = Vec::new();
        match &start {
            DumpStart::FilePos { file, position } => {
                let pos = u32::try_from(*position).map_err(|_| ReplicaError::InvalidInput {
                    what: "binlog position",
                    reason: format!("{position} does not fit COM_BINLOG_DUMP (use GTID mode)"),
                })?;
                if !options.skip_register {
                    self.register_slave().await?;
                }
                ComBinlogDump::new(self.cfg.slave_id)
                    .with_pos(pos)
                    .with_flags(
                        flags | BinlogDumpFlags::from_bits_retain(BINLOG_SEND_ANNOTATE_ROWS_EVENT),
                    )
                    .with_filename(file.as_bytes())
                    .serialize(&mut buf);
            }
            DumpStart::MysqlGtid(set) => {
                if self.info.is_mariadb {
                    return Err(ReplicaError::UnsupportedServer {
                        reason: "MariaDB has no COM_BINLOG_DUMP_GTID; use a MariaDB GTID start"
                            .into(),
                    });
                }
                ComBinlogDumpGtid::new(self.cfg.slave_id)
                    .with_sids(set.to_sids()?)
                    .with_filename(&b""[..])
                    .with_pos(4)
                    .with_flags(flags)
                    .serialize(&mut buf);
            }
            DumpStart::MariadbGtid(list) => {
                if !self.info.is_mariadb {
                    return Err(ReplicaError::UnsupportedServer {
                        reason: "MariaDB GTID positions need a MariaDB server".into(),
                    });
                }
                // The list was parsed into numbers, so it is safe inside the quotes.
                self.query(&format!("SET @slave_connect_state='{list}'")).await?;
                self.query("SET @slave_gtid_strict_mode=0").await?;
                self.query("SET @slave_gtid_ignore_duplicates=0").await?;
                if !options.skip_register {
                    self.register_slave().await?;
                }
                ComBinlogDump::new(self.cfg.slave_id)
                    .with_pos(0)
                    .with_flags(
                        flags | BinlogDumpFlags::from_bits_retain(BINLOG_SEND_ANNOTATE_ROWS_EVENT),
                    )
                    .with_filename(&b""[..])
                    .serialize(&mut buf);
            }
        }
        self.io.command(&buf, "binlog dump", limit).await?;
        tracing::info!(start = %start, slave_id = self.cfg.slave_id,
            connection_id = self.info.connection_id, "binlog dump started");
        let read_timeout = self.cfg.binlog_read_timeout();
        let checksum = self.info.checksum;
        let current_file = match &start {
            DumpStart::FilePos { file, .. } => Some(file.clone()),
            _ => None,
        };
        Ok(BinlogStream {
            io: self.io,
            info: self.info,
            start,
            read_timeout,
            checksum,
            current_file,
            last_log_pos: 0,
            finished: false,
        })
    }
}

/// A running dump: yields raw events in binlog order.
#[derive(Debug)]
pub struct BinlogStream {
    io: PacketIo,
    info: ServerInfo,
    start: DumpStart,
    read_timeout: Option<Duration>,
    checksum: ChecksumAlg,
    current_file: Option<String>,
    last_log_pos: u32,
    finished: bool,
}

impl BinlogStream {
    /// The next event, or `Ok(None)` once a non-blocking dump reached the end of the binlogs.
    /// Heartbeats (type 27) are returned like any event; the caller drops them.
    ///
    /// # Errors
    /// * `Timeout` (transient) when nothing, not even a heartbeat, arrived within the heartbeat
    ///   period plus margin;
    /// * `Io` (transient) when the connection dropped (e.g. the dump thread was killed);
    /// * `Server` for an error packet, transient for shutdown/kill codes;
    /// * `Purged` (definite) for error 1236 saying the start is missing or purged, naming the
    ///   start that was asked for; `DumpRejected` (definite) for other 1236 errors;
    /// * `Protocol`/`PacketTooLarge` (definite) for malformed packets.
    ///
    /// # Cancel safety
    /// Cancel-safe: bytes already read stay buffered, so dropping the future (e.g. in
    /// `tokio::select!`) and calling again loses no event.
    pub async fn next_event(&mut self) -> Result<Option<RawEvent>, ReplicaError> {
        if self.finished {
            return Ok(None);
        }
        let payload = self.io.read("read binlog event", self.read_timeout).await?;
        match classify(payload)? {
            StreamPacket::Event(bytes) => {
                let ev = RawEvent::new(bytes, self.checksum)?;
                match ev.header.event_type {
                    event_type::FORMAT_DESCRIPTION => self.checksum = ev.checksum,
                    event_type::ROTATE => {
                        if let Some((name, _)) = ev.rotate() {
                            self.current_file = Some(name);
                        }
                    }
                    _ => {}
                }
                if ev.header.log_pos != 0 {
                    self.last_log_pos = ev.header.log_pos;
                }
                Ok(Some(ev))
            }
            StreamPacket::Eof => {
                self.finished = true;
                Ok(None)
            }
            StreamPacket::Err(e) if e.code == ER_MASTER_FATAL_ERROR_READING_BINLOG => {
                let requested = self.start.to_string();
                if is_missing_position_message(&e.message) {
                    Err(ReplicaError::Purged {
                        requested,
                        oldest_available: None,
                        detail: format!("server error 1236: {}", e.message),
                    })
                } else {
                    Err(ReplicaError::DumpRejected { requested, code: e.code, message: e.message })
                }
            }
            StreamPacket::Err(e) => Err(e.into_error("read binlog event")),
        }
    }

    /// The server as seen at connect time (its `connection_id` is this dump's thread).
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The start this dump was opened with.
    pub fn start(&self) -> &DumpStart {
        &self.start
    }

    /// The binlog file the last ROTATE named (the requested file before any event arrived).
    pub fn current_file(&self) -> Option<&str> {
        self.current_file.as_deref()
    }

    /// `log_pos` (next-event offset) of the last non-artificial event, 0 before the first.
    pub fn last_log_pos(&self) -> u32 {
        self.last_log_pos
    }

    /// The checksum algorithm that applies to the next event.
    pub fn checksum(&self) -> ChecksumAlg {
        self.checksum
    }

    /// Closes the socket. The server notices at its next write.
    ///
    /// # Cancel safety
    /// Dropping the future is fine; the socket closes when the stream is dropped.
    pub async fn close(mut self) {
        let _ = self.io.stream.shutdown().await;
    }
}

/// Whether a 1236 message says the start is not (or no longer) in the binlogs, as opposed to
/// e.g. a corrupt or truncated binlog at that place.
fn is_missing_position_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "could not find",             // first log file / next log / GTID state
        "purged",                     // MySQL: master purged required binary logs
        "not in the master's binlog", // MariaDB GTID
        "position > file size",       // start past the end of the file
        "does not exist",
    ]
    .iter()
    .any(|p| m.contains(p))
}

async fn authenticate(
    io: &mut PacketIo,
    cfg: &ReplicaConfig,
    hs: &packet::Handshake,
) -> Result<(), ReplicaError> {
    let limit = Some(cfg.connect_timeout);
    let mut plugin = match hs.auth_plugin.as_deref() {
        Some(p @ (auth::NATIVE | auth::CACHING_SHA2)) => p.to_string(),
        _ => auth::NATIVE.to_string(),
    };
    let mut nonce = hs.nonce.clone();
    let scramble = auth::scramble_for(&plugin, &cfg.password, &nonce).unwrap_or_default();
    let client_caps = caps::LONG_PASSWORD
        | caps::LONG_FLAG
        | caps::PROTOCOL_41
        | caps::TRANSACTIONS
        | caps::SECURE_CONNECTION
        | caps::PLUGIN_AUTH
        | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA;
    let client_caps = (client_caps & hs.capabilities) | caps::PROTOCOL_41;
    debug_assert_eq!(client_caps & (caps::CONNECT_WITH_DB | caps::DEPRECATE_EOF), 0);
    let mut resp = BytesMut::new();
    resp.put_u32_le(client_caps);
    resp.put_u32_le(16 * 1024 * 1024);
    resp.put_u8(33); // utf8_general_ci; the session switches to binary right after
    resp.put_slice(&[0; 23]);
    resp.put_slice(cfg.user.as_bytes());
    resp.put_u8(0);
    // At most 32 bytes, so the length-encoded and the one-byte length forms coincide.
    resp.put_u8(scramble.len() as u8);
    resp.put_slice(&scramble);
    if client_caps & caps::PLUGIN_AUTH != 0 {
        resp.put_slice(plugin.as_bytes());
        resp.put_u8(0);
    }
    io.write(&resp, "authenticate", cfg.connect_timeout).await?;
    let auth_err =
        |code: u16, message: String| ReplicaError::Auth { user: cfg.user.clone(), code, message };
    let mut rounds = 0;
    loop {
        rounds += 1;
        if rounds > 8 {
            return Err(ReplicaError::protocol("authentication did not finish after 8 rounds"));
        }
        let p = io.read("authenticate", limit).await?;
        match p.first() {
            Some(0x00) => return Ok(()),
            Some(0xFF) => {
                let e = packet::parse_err(&p)?;
                return Err(auth_err(e.code, e.message));
            }
            Some(0xFE) => {
                let sw = packet::parse_auth_switch(&p)?;
                let Some(data) = auth::scramble_for(&sw.plugin, &cfg.password, &sw.data) else {
                    return Err(ReplicaError::AuthUnsupported {
                        plugin: sw.plugin,
                        reason: "only mysql_native_password and caching_sha2_password are \
                                 implemented"
                            .into(),
                    });
                };
                plugin = sw.plugin;
                nonce = sw.data;
                io.write(&data, "authenticate", cfg.connect_timeout).await?;
            }
            Some(0x01) if plugin == auth::CACHING_SHA2 => match p.get(1) {
                Some(&auth::SHA2_FAST_AUTH_OK) => {}
                Some(&auth::SHA2_PERFORM_FULL_AUTH) => {
                    let pem = match &cfg.server_public_key {
                        Some(k) => k.as_bytes().to_vec(),
                        None if cfg.allow_public_key_retrieval => {
                            io.write(
                                &[auth::SHA2_REQUEST_PUBLIC_KEY],
                                "authenticate",
                                cfg.connect_timeout,
                            )
                            .await?;
                            let key = io.read("authenticate", limit).await?;
                            match key.split_first() {
                                Some((0x01, pem)) => pem.to_vec(),
                                Some((0xFF, _)) => {
                                    let e = packet::parse_err(&key)?;
                                    return Err(auth_err(e.code, e.message));
                                }
                                _ => {
                                    return Err(ReplicaError::protocol(
                                        "expected the server's RSA public key",
                                    ));
                                }
                            }
                        }
                        None => {
                            return Err(ReplicaError::AuthUnsupported {
                                plugin,
                                reason: "full authentication needs TLS or the server's RSA key \
                                         (set server_public_key or allow_public_key_retrieval)"
                                    .into(),
                            });
                        }
                    };
                    let enc = auth::rsa_encrypt_password(&cfg.password, &nonce, &pem)?;
                    io.write(&enc, "authenticate", cfg.connect_timeout).await?;
                }
                other => {
                    return Err(ReplicaError::protocol(format!(
                        "unexpected caching_sha2_password status {other:?}"
                    )));
                }
            },
            _ => {
                return Err(ReplicaError::protocol(format!(
                    "unexpected packet during authentication (plugin '{plugin}')"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("5.5.5-10.11.19-MariaDB-0+deb12u1-log"), (10, 11, 19));
        assert_eq!(parse_version("8.4.0"), (8, 4, 0));
        assert_eq!(parse_version("garbage"), (0, 0, 0));
    }

    #[test]
    fn dump_command_carries_annotate_flag() {
        let mut buf = Vec::new();
        ComBinlogDump::new(77)
            .with_pos(4)
            .with_flags(BinlogDumpFlags::from_bits_retain(BINLOG_SEND_ANNOTATE_ROWS_EVENT))
            .with_filename(&b"binlog.000001"[..])
            .serialize(&mut buf);
        assert_eq!(buf[0], 0x12);
        assert_eq!(&buf[1..5], &4u32.to_le_bytes());
        assert_eq!(&buf[5..7], &2u16.to_le_bytes());
        assert_eq!(&buf[7..11], &77u32.to_le_bytes());
        assert_eq!(&buf[11..], b"binlog.000001");
    }

    #[test]
    fn url_and_debug_redacts() {
        let c = ReplicaConfig::from_url("mysql://canal:secret@127.0.0.1:13406").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.user.as_str()), ("127.0.0.1", 13406, "canal"));
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.binlog_read_timeout(), Some(Duration::from_secs(25)));
        assert!(ReplicaConfig::from_url("not a url").is_err());
    }
}
