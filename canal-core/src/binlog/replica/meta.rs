//! The meta connection (mysql_async): start-position helpers (docs/protocol.md#start-position) — current end
//! (`SHOW MASTER STATUS` / `SHOW BINARY LOG STATUS`), the binlog file list, purged-position
//! checks, GTID positions, server id, binlog format checks — and the search by timestamp, which
//! scans files newest→oldest with a non-blocking dump of its own.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use super::backoff::Backoff;
use super::client::{DumpOptions, DumpStart, ReplicaConfig, ReplicaConnection};
use super::error::ReplicaError;
use super::event::event_type;
use super::gtid::{GtidSet, MariadbGtidList};

/// Binlog formats Canal's row pipeline accepts by default.
pub const DEFAULT_ALLOWED_FORMATS: &[&str] = &["ROW"];
/// Row images the pipeline accepts by default (full before/after images).
pub const DEFAULT_ALLOWED_IMAGES: &[&str] = &["FULL"];

/// The server's current binlog end (`SHOW MASTER STATUS`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterStatus {
    /// Current binlog file.
    pub file: String,
    /// Offset of its end.
    pub position: u64,
    /// `Executed_Gtid_Set` (MySQL), when reported and non-empty.
    pub executed_gtid_set: Option<String>,
}

/// One row of `SHOW BINARY LOGS`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BinlogFile {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// What kind of transaction boundary a timestamp search returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BoundaryKind {
    /// The start of a transaction (MariaDB GTID, MySQL GTID, or `BEGIN` query): dumping from
    /// here yields that transaction whole.
    TransactionStart,
    /// Right after a commit (XID, `COMMIT` query, or a DDL statement).
    AfterCommit,
}

/// Result of [`MetaConnection::find_position_by_timestamp`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimestampPosition {
    /// Binlog file.
    pub file: String,
    /// Offset to dump from.
    pub position: u64,
    /// Time of the boundary event, milliseconds since the epoch (second precision).
    pub timestamp_ms: i64,
    /// Which boundary it is.
    pub kind: BoundaryKind,
}

/// Attempts of [`MetaConnection::show_create_table`] before a transient error is given up.
pub const TABLE_FETCH_ATTEMPTS: u32 = 5;
/// How long one `SHOW CREATE TABLE` may take before the connection is replaced.
pub const TABLE_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain SQL connection to the server the replica dumps from.
#[derive(Debug)]
pub struct MetaConnection {
    conn: Conn,
    cfg: ReplicaConfig,
    is_mariadb: bool,
    version: (u16, u16, u16),
}

fn text(row: &Row, idx: usize) -> Option<String> {
    match row.as_ref(idx)? {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true)),
    }
}

fn number(row: &Row, idx: usize, what: &'static str) -> Result<u64, ReplicaError> {
    let v = text(row, idx).unwrap_or_default();
    v.trim().parse().map_err(|_| ReplicaError::protocol(format!("{what} '{v}' is not a number")))
}

impl MetaConnection {
    /// Opens the meta connection with the replica's credentials.
    ///
    /// # Errors
    /// `Meta` with the driver error (transient for I/O, definite for e.g. access denied).
    ///
    /// # Cancel safety
    /// Dropping the future drops the half-open connection.
    pub async fn open(cfg: &ReplicaConfig) -> Result<Self, ReplicaError> {
        let mut conn = Conn::new(cfg.meta_opts()).await.map_err(ReplicaError::meta("connect"))?;
        let version: Option<String> =
            conn.query_first("SELECT VERSION()").await.map_err(ReplicaError::meta("version"))?;
        let version = version.unwrap_or_default();
        Ok(MetaConnection {
            is_mariadb: version.contains("MariaDB"),
            version: conn.server_version(),
            conn,
            cfg: cfg.clone(),
        })
    }

    /// The server's id of this connection (what `KILL` takes).
    pub fn connection_id(&self) -> u32 {
        self.conn.id()
    }

    /// Replaces the connection by a new one (after it was killed, timed out or broke).
    ///
    /// # Errors
    /// `Meta` when the server cannot be reached; the old connection is kept then.
    ///
    /// # Cancel safety
    /// Dropping the future drops the half-open new connection; the old one is kept.
    pub async fn reconnect(&mut self) -> Result<(), ReplicaError> {
        let conn =
            Conn::new(self.cfg.meta_opts()).await.map_err(ReplicaError::meta("reconnect"))?;
        // The old connection is broken or was killed: dropping it sends no goodbye that could
        // wait on a dead socket.
        drop(std::mem::replace(&mut self.conn, conn));
        Ok(())
    }

    /// `SHOW CREATE TABLE` of one table: `Ok(None)` only when the server says the table or its
    /// database does not exist (1146 `ER_NO_SUCH_TABLE`, 1049 `ER_BAD_DB_ERROR`).
    ///
    /// A transient failure (connection killed or lost, server restarting, no answer within
    /// [`TABLE_FETCH_TIMEOUT`]) reconnects and tries again, [`TABLE_FETCH_ATTEMPTS`] times in all
    /// with a backoff from 100 ms to 2 s; a table that exists is never given up on silently.
    ///
    /// # Errors
    /// The first definite error (e.g. 1142, no privilege), or the last transient one after the
    /// attempts ran out.
    ///
    /// # Cancel safety
    /// Not cancel-safe (mysql_async may leave the connection mid-result).
    pub async fn show_create_table(
        &mut self,
        schema: &str,
        table: &str,
    ) -> Result<Option<String>, ReplicaError> {
        const OP: &str = "show create table";
        let sql = format!(
            "SHOW CREATE TABLE `{}`.`{}`",
            schema.replace('`', "``"),
            table.replace('`', "``")
        );
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let query = self.conn.query_first::<Row, _>(sql.as_str());
            let err = match tokio::time::timeout(TABLE_FETCH_TIMEOUT, query).await {
                // A view answers with other columns; the caller's parser reports it.
                Ok(Ok(row)) => return Ok(row.and_then(|r| text(&r, 1))),
                Ok(Err(mysql_async::Error::Server(e))) if e.code == 1146 || e.code == 1049 => {
                    return Ok(None);
                }
                Ok(Err(source)) => ReplicaError::Meta { op: OP, source },
                Err(_) => ReplicaError::Timeout { op: OP, after: TABLE_FETCH_TIMEOUT },
            };
            if !err.is_transient() || attempt >= TABLE_FETCH_ATTEMPTS {
                return Err(err);
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                error = %err,
                attempt,
                ?delay,
                "cannot read the definition of `{schema}`.`{table}`; reconnecting the meta connection"
            );
            tokio::time::sleep(delay).await;
            // A failed reconnect counts as an attempt: the next round queries the old (broken)
            // connection, fails fast and comes back here.
            if let Err(e) = self.reconnect().await {
                if !e.is_transient() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "meta connection reconnect failed");
            }
        }
    }

    /// `true` for MariaDB.
    pub fn is_mariadb(&self) -> bool {
        self.is_mariadb
    }

    /// (major, minor, patch) of the server.
    pub fn version(&self) -> (u16, u16, u16) {
        self.version
    }

    /// The underlying mysql_async connection, for queries not covered here (table metadata).
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    async fn rows(&mut self, op: &'static str, sql: &str) -> Result<Vec<Row>, ReplicaError> {
        self.conn.query(sql).await.map_err(ReplicaError::meta(op))
    }

    /// The current end of the binlog: `SHOW MASTER STATUS`, or `SHOW BINARY LOG STATUS` on
    /// MySQL ≥ 8.4. `Ok(None)` when binary logging is off.
    ///
    /// # Errors
    /// `Meta` for query failures (e.g. missing REPLICATION CLIENT privilege).
    ///
    /// # Cancel safety
    /// Not cancel-safe (mysql_async may leave the connection mid-result).
    pub async fn master_status(&mut self) -> Result<Option<MasterStatus>, ReplicaError> {
        let sql = if !self.is_mariadb && self.version >= (8, 4, 0) {
            "SHOW BINARY LOG STATUS"
        } else {
            "SHOW MASTER STATUS"
        };
        let rows = self.rows("show master status", sql).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let file = text(row, 0).unwrap_or_default();
        if file.is_empty() {
            return Ok(None);
        }
        Ok(Some(MasterStatus {
            file,
            position: number(row, 1, "binlog position")?,
            executed_gtid_set: if row.len() > 4 {
                text(row, 4).filter(|s| !s.is_empty())
            } else {
                None
            },
        }))
    }

    /// `SHOW BINARY LOGS`, oldest first.
    ///
    /// # Errors
    /// `Meta` for query failures (error 1381 when binary logging is off).
    ///
    /// # Cancel safety
    /// Not cancel-safe.
    pub async fn binary_logs(&mut self) -> Result<Vec<BinlogFile>, ReplicaError> {
        let rows = self.rows("show binary logs", "SHOW BINARY LOGS").await?;
        rows.iter()
            .map(|r| {
                Ok(BinlogFile {
                    name: text(r, 0).unwrap_or_default(),
                    size: number(r, 1, "binlog size")?,
                })
            })
            .collect()
    }

    /// Checks that `file:position` can still be dumped: the file is listed by
    /// `SHOW BINARY LOGS` and `position` is not past its end.
    ///
    /// # Errors
    /// [`ReplicaError::Purged`] naming `file:position` and the oldest available file; `Meta`
    /// for query failures.
    ///
    /// # Cancel safety
    /// Not cancel-safe.
    pub async fn check_position_available(
        &mut self,
        file: &str,
        position: u64,
    ) -> Result<(), ReplicaError> {
        let logs = self.binary_logs().await?;
        let oldest = logs.first().map(|f| f.name.clone());
        let requested = format!("{file}:{position}");
        match logs.iter().find(|f| f.name == file) {
            None => Err(ReplicaError::Purged {
                requested,
                oldest_available: oldest,
                detail: "the file is not in SHOW BINARY LOGS (purged or never existed)".into(),
            }),
            Some(f) if position > f.size || position < 4 => Err(ReplicaError::Purged {
                requested,
                oldest_available: oldest,
                detail: format!("the offset is outside the file (size {})", f.size),
            }),
            Some(_) => Ok(()),
        }
    }

    /// `@@global.gtid_binlog_pos` (MariaDB): the GTID of the last transaction per domain.
    ///
    /// # Errors
    /// `UnsupportedServer` on MySQL; `Meta`/`InvalidInput` for query or parse failures.
    ///
    /// # Cancel safety
    /// Not cancel-safe.
    pub async fn mariadb_gtid_binlog_pos(&mut self) -> Result<MariadbGtidList, ReplicaError> {
        if !self.is_mariadb {
            return Err(ReplicaError::UnsupportedServer {
                reason: "gtid_binlog_pos exists only on MariaDB".into(),
            });
        }
        let v: Option<String> = self
            .conn
            .query_first("SELECT @@global.gtid_binlog_pos")
            .await
            .map_err(ReplicaError::meta("select gtid_binlog_pos"))?;
        v.unwrap_or_default().parse()
    }

    /// `@@global.gtid_executed` (MySQL).
    ///
    /// # Errors
    /// `UnsupportedServer` on MariaDB; `Meta`/`InvalidInput` for query or parse failures.
    ///
    /// # Cancel safety
    /// Not cancel-safe.
    pub async fn mysql_gtid_executed(&mut self) -> Result<GtidSet, ReplicaError> {
        if self.is_mariadb {
            return Err(ReplicaError::UnsupportedServer {
                reason: "gtid_executed is MySQL's; use mariadb_gtid_binlog_pos".into(),
            });
        }
        let v: Option<String> = self
            .conn
            .query_first("SELECT @@global.gtid_executed")
            .await
            .map_err(ReplicaError::meta("select gtid_executed"))?;
        v.unwrap_or_default().parse()
    }

    /// `@@lower_case_table_names`: 0 (names as written, case-sensitive), 1 (stored in lower case)
    /// or 2 (stored as written, compared in lower case).
    ///
    /// # Errors
    /// `Meta` for query failures.
    ///
    /// # Cancel safety
    /// Not cancel-safe.
    pub async fn lower_case_table_names(&mut self) -> Result<u8, ReplicaError> {
        let v: Option<u8> = self
            .conn
            .query_first("SELECT @@lower_case_table_names")
            .await
            .map_err(ReplicaError::meta("select lower_case_table_names"))?;
        v.ok_or_else(|| ReplicaError::UnsupportedServer {
            reason: "@@lower_case_table_names is empty".into(),
        })
    }

    /// `@@server_id`.
    ///
    /// # Errors
    /// `Meta` for query failures.
    ///
    /// # Cancel safety
    /// Not cancel-safe.
    pub async fn server_id(&mut self) -> Result<u32, ReplicaError> {
        let v: Option<u32> = self
            .conn
            .query_first("SELECT @@server_id")
            .await
            .map_err(ReplicaError::meta("select server_id"))?;
        Ok(v.unwrap_or_default())
    }

    /// Checks `log_bin`, `binlog_format` and `binlog_row_image` against allowed values (e.g.
    /// [`DEFAULT_ALLOWED_FORMATS`], [`DEFAULT_ALLOWED_IMAGES`]; comparison ignores case).
    /// A server without `binlog_row_image` (MySQL < 5.6) counts as FULL.
    ///
    /// # Errors
    /// `BinlogSettings` naming the offending variable; `UnsupportedServer` when binary logging
    /// is off; `Meta` for query failures.
    ///
    /// # Cancel safety
    /// Not cancel-safe.
    pub async fn check_binlog_settings(
        &mut self,
        allowed_formats: &[&str],
        allowed_images: &[&str],
    ) -> Result<(), ReplicaError> {
        let rows = self
            .rows(
                "show variables",
                "SHOW VARIABLES WHERE Variable_name IN ('log_bin','binlog_format','binlog_row_image')",
            )
            .await?;
        let get = |name: &str| {
            rows.iter()
                .find(|r| text(r, 0).is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .and_then(|r| text(r, 1))
        };
        if !get("log_bin").is_some_and(|v| v.eq_ignore_ascii_case("ON") || v == "1") {
            return Err(ReplicaError::UnsupportedServer {
                reason: "binary logging is off (log_bin)".into(),
            });
        }
        let checks = [
            ("binlog_format", get("binlog_format").unwrap_or_default(), allowed_formats),
            (
                "binlog_row_image",
                get("binlog_row_image").unwrap_or_else(|| "FULL".into()),
                allowed_images,
            ),
        ];
        for (variable, value, allowed) in checks {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
                return Err(ReplicaError::BinlogSettings {
                    variable: variable.into(),
                    value,
                    allowed: allowed.iter().map(|s| s.to_string()).collect(),
                });
            }
        }
        Ok(())
    }

    /// `KILL CONNECTION <id>` — how Canal stops a dump thread the server would otherwise keep.
    ///
    /// # Errors
    /// `Meta` (e.g. unknown thread id 1094, or missing privilege).
    ///
    /// # Cancel safety
    /// Not cancel-safe.
    pub async fn kill_connection(&mut self, connection_id: u32) -> Result<(), ReplicaError> {
        self.conn
            .query_drop(format!("KILL CONNECTION {connection_id}"))
            .await
            .map_err(ReplicaError::meta("kill connection"))
    }

    /// Finds where to start so that nothing at or after `target_ms` (milliseconds since the
    /// epoch) is missed (docs/protocol.md#start-position): scans binlog files from the newest to the oldest,
    /// each from offset 4 until an event with time ≥ target or the file's end, and returns the
    /// last transaction boundary with time < target in the newest file that has one.
    ///
    /// Differences from Java Canal, both on purpose: a transaction start is returned as the
    /// *start* offset of its first event (Canal takes the offset after `BEGIN`, which on
    /// MariaDB would lose the GTID event), and GTID events count as transaction starts.
    ///
    /// The scan dumps without registering, with `cfg.slave_id` like Canal; a live dump with the
    /// same slave id may be disconnected by the server meanwhile.
    ///
    /// # Errors
    /// `PositionNotFound` when no file has a boundary before the target; connection errors of
    /// the scan and the meta queries.
    ///
    /// # Cancel safety
    /// Not cancel-safe for this connection; the scan connection is dropped.
    pub async fn find_position_by_timestamp(
        &mut self,
        target_ms: i64,
    ) -> Result<TimestampPosition, ReplicaError> {
        let logs = self.binary_logs().await?;
        let mut searched = Vec::new();
        for file in logs.iter().rev() {
            searched.push(file.name.clone());
            if let Some(hit) = scan_file_for_timestamp(&self.cfg, &file.name, target_ms).await? {
                return Ok(hit);
            }
        }
        Err(ReplicaError::PositionNotFound { target_ms, searched })
    }

    /// Closes the connection politely.
    ///
    /// # Errors
    /// `Meta` if the server cannot be told; the connection is gone either way.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection.
    pub async fn close(self) -> Result<(), ReplicaError> {
        self.conn.disconnect().await.map_err(ReplicaError::meta("disconnect"))
    }
}

/// Scans one file (see [`MetaConnection::find_position_by_timestamp`]).
async fn scan_file_for_timestamp(
    cfg: &ReplicaConfig,
    file: &str,
    target_ms: i64,
) -> Result<Option<TimestampPosition>, ReplicaError> {
    let conn = ReplicaConnection::connect(cfg).await?;
    let start = DumpStart::FilePos { file: file.to_string(), position: 4 };
    let mut stream = conn
        .dump(start, DumpOptions::default().with_non_blocking(true).with_skip_register(true))
        .await?;
    let mut best: Option<TimestampPosition> = None;
    let mut in_txn = false;
    let mut standalone = false;
    while let Some(ev) = stream.next_event().await? {
        let h = ev.header;
        if h.event_type == event_type::ROTATE {
            if h.is_artificial() {
                continue;
            }
            break; // the real ROTATE ends this file
        }
        if h.event_type == event_type::HEARTBEAT || h.event_type == event_type::HEARTBEAT_V2 {
            continue;
        }
        if h.timestamp != 0 && i64::from(h.timestamp) * 1000 >= target_ms {
            break;
        }
        let ts_ms = i64::from(h.timestamp) * 1000;
        let mut hit = |position: u32, kind| {
            best = Some(TimestampPosition {
                file: file.to_string(),
                position: u64::from(position),
                timestamp_ms: ts_ms,
                kind,
            });
        };
        match h.event_type {
            event_type::MARIA_GTID
            | event_type::GTID
            | event_type::ANONYMOUS_GTID
            | event_type::GTID_TAGGED => {
                if let Some(start) = h.start_pos() {
                    hit(start, BoundaryKind::TransactionStart);
                }
                in_txn = true;
                // MariaDB flags2 bit 0 (FL_STANDALONE): a DDL without BEGIN/COMMIT. MySQL GTIDs
                // are followed by BEGIN for DML, so treat them as standalone until BEGIN.
                standalone = ev.mariadb_gtid_flags().is_none_or(|f| f & 1 != 0);
            }
            event_type::XID => {
                hit(h.log_pos, BoundaryKind::AfterCommit);
                in_txn = false;
            }
            event_type::QUERY => {
                let q = ev.query_text().unwrap_or_default();
                let q = String::from_utf8_lossy(q);
                let q = q.trim();
                if q.eq_ignore_ascii_case("BEGIN") {
                    if !in_txn && let Some(start) = h.start_pos() {
                        hit(start, BoundaryKind::TransactionStart);
                    }
                    in_txn = true;
                    standalone = false;
                } else if q.eq_ignore_ascii_case("COMMIT") || !in_txn || standalone {
                    hit(h.log_pos, BoundaryKind::AfterCommit);
                    in_txn = false;
                    standalone = false;
                }
            }
            _ => {}
        }
    }
    // Dropping the stream closes the scan connection.
    drop(stream);
    Ok(best)
}
