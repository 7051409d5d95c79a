//! Table metadata: a MySQL/MariaDB DDL parser and a versioned schema history, so that every row
//! event is decoded with the table shape in force at its binlog position (Canal's TSDB,
//! canal-compat §9.3), and QUERY events get Canal's `EventType` and header names (§2.3).
//!
//! * [`parse_query`] / [`classify_lenient`]: QUERY text → [`ParsedQuery`] (event type, `isDdl`,
//!   header schema/table, every target for the name filter of §8).
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
//!    [`Lookup::NotTracked`] or [`Lookup::Unknown`] fetch and record the table, then decode.

mod apply;
mod history;
mod lexer;
mod model;
mod parser;
mod query;
mod types;

pub use apply::ApplyError;
pub use history::{
    DdlOutcome, HISTORY_FILE, HistoryError, HistoryOptions, HistoryRecord, Lookup, RecordBody,
    SchemaHistory, SnapshotTable, TableChange,
};
pub use lexer::{LexError, Token, TokenKind, tokenize};
pub use model::{ColumnDef, Generated, SchemaPosition, TableDef, TableName, TableState};
pub use parser::{
    AlterSpec, ColumnPosition, ColumnSpec, CreateBody, ObjectName, ParseError, Statement,
    parse_create_table, parse_statements,
};
pub use query::{
    ParsedQuery, QueryEventType, QueryTarget, classify, classify_lenient, parse_query,
};
