//! Table metadata: a MySQL/MariaDB DDL parser and a versioned schema history, so that every row
//! event is decoded with the table shape in force at its binlog position (Canal's TSDB,
//! docs/compatibility.md), and QUERY events get Canal's `EventType` and header names
//! (docs/protocol.md#entries).
//!
//! * [`parse_query`] / [`classify_lenient`]: QUERY text → [`ParsedQuery`] (event type, `isDdl`,
//!   header schema/table, every target for the name filter: docs/protocol.md#filters).
//! * [`parse_statements`]: the statement AST ([`Statement`]) for the shape-changing DDL.
//! * [`SchemaHistory`]: snapshots (`SHOW CREATE TABLE` text) and DDL applied in binlog order,
//!   queried with [`SchemaHistory::table_at`]; optionally persisted as JSON lines.
//!
//! Everything here is pure except [`SchemaHistory::open`] and the methods that persist, which use
//! blocking `std::fs` (DDL is rare; call them from `spawn_blocking` if a runtime thread matters).
//! Nothing here talks to MySQL: fetching `SHOW CREATE TABLE` is the caller's job.
//!
//! Typical use by the pipeline:
//! 1. On start, `SchemaHistory::open(data_dir)`; if it is empty, fetch `SHOW CREATE TABLE` for the
//!    whitelisted tables and [`SchemaHistory::record_snapshot`] them at the start position.
//! 2. For each QUERY event (not BEGIN/COMMIT/XA): [`SchemaHistory::apply_ddl`] at the event's start
//!    position with its database; the outcome's `query` fills the entry; for every name in
//!    `refresh`, fetch `SHOW CREATE TABLE` and `record_snapshot` it at the same position.
//! 3. For each rows event: [`SchemaHistory::lookup`] at the event's position; on
//!    [`Lookup::NotTracked`] or [`Lookup::Unknown`] fetch and record the table, then decode. The
//!    decoder's per-column input maps one to one: `name`, `mysql_type`, `unsigned`, `is_pk`, and
//!    [`ColumnDef::effective_charset`] (`CHARACTER SET binary` columns already have binary types).
//! 4. Name filters (docs/protocol.md#filters) on DDL: [`ParsedQuery::passes`] (RENAME passes if either name does). Apply
//!    DDL to the history whether or not it passes, so a table renamed into the filter is known.
//!
//! # Where this differs from Java Canal, and what is not modelled
//! * `mysql_type` is normalized the way the server prints `COLUMN_TYPE` (see [`ColumnDef`]);
//!   Canal's DDL replay (Druid) keeps the DDL's spelling, so `DECIMAL` is `decimal` there and
//!   `decimal(10,0)` here. Integer display widths are kept as written in both.
//! * When a statement cannot be parsed, Canal reports `QUERY` with no schema; here the statement's
//!   head still gives its type and table ([`classify_lenient`]) so the caller knows what to
//!   refresh. Statements both parsers understand are classified alike, including Canal's quirks:
//!   `REPLACE` is `QUERY`, `ALTER TABLE ... ADD FOREIGN KEY` alone is a bare `QUERY`,
//!   `ADD PRIMARY KEY`/`ADD UNIQUE` are `CINDEX`.
//! * `ALTER TABLE ... CONVERT TO CHARACTER SET` changes column charsets but not the TEXT → MEDIUMTEXT
//!   widening MySQL may apply; temporary tables never enter the history (ROW format does not log
//!   their rows); MariaDB system-versioning columns (`row_start`/`row_end`) and the implicit
//!   `NOT NULL` of old-style TIMESTAMP columns (`explicit_defaults_for_timestamp=0`) are not
//!   modelled. A refresh (`SHOW CREATE TABLE` + [`SchemaHistory::record_snapshot`]) corrects all
//!   of them.
//! * Positions of different sources do not compare: a history recorded against another source is
//!   cleared ([`SchemaHistory::clear`]) and tables are learnt again (docs/compatibility.md).

mod apply;
mod history;
mod lexer;
mod model;
mod parser;
mod query;
pub mod store;
mod types;

pub use apply::ApplyError;
pub use history::{
    DdlOutcome, HISTORY_FILE, HistoryError, HistoryOptions, HistoryRecord, LOCK_FILE, Lookup,
    PendingSync, RecordBody, SchemaHistory, SnapshotTable, TableChange,
};
pub use lexer::{LexError, Token, TokenKind, tokenize};
pub use model::{ColumnDef, Generated, SchemaPosition, TableDef, TableName, TableState};
pub use parser::{
    AlterSpec, ColumnPosition, ColumnSpec, CreateBody, ObjectName, ParseError, Statement,
    parse_create_table, parse_statements,
};
pub use query::{
    ParsedQuery, QueryEventType, QueryTarget, TxnControl, classify, classify_lenient, parse_query,
    transaction_control,
};
