//! The table model the history stores and the row decoder consumes: `TableDef`, `ColumnDef`, the
//! binlog position the history is keyed by, and the per-table state a DDL leaves behind.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::position::{EntryPosition, compare_journal};

/// A fully qualified table name. Schema and table are kept as the server spells them; see
/// [`crate::schema::HistoryOptions::lower_case_table_names`] for servers that fold names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableName {
    /// Database (schema) name.
    pub schema: String,
    /// Table name.
    pub table: String,
}

impl TableName {
    /// A name from its parts.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        Self { schema: schema.into(), table: table.into() }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`.`{}`", self.schema, self.table)
    }
}

/// How a generated column is stored (MariaDB's `PERSISTENT` is `Stored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Generated {
    /// Computed on read (`VIRTUAL`, the default).
    Virtual,
    /// Computed on write and stored (`STORED` / `PERSISTENT`).
    Stored,
}

/// One column as the row decoder needs it.
///
/// `mysql_type` is what Canal puts in `Column.mysqlType`: the type as `SHOW CREATE TABLE` /
/// `information_schema.COLUMNS.COLUMN_TYPE` prints it, built from the DDL text:
/// * the type name is lower-cased and synonyms are resolved (`INTEGER` → `int`, `NUMERIC` →
///   `decimal`, `BOOL` → `tinyint(1)`, `REAL` → `double`, `NVARCHAR` → `varchar`, `SERIAL` →
///   `bigint unsigned`, `CHAR(n) CHARACTER SET binary` → `binary(n)`, ...);
/// * integer display widths are kept exactly as the DDL says them: `INT(11)` → `int(11)`, `INT` →
///   `int`. MySQL 5.7 would print `int(11)` for the latter and MySQL 8.0.19+ prints `int` for both;
///   the DDL text cannot tell which server it ran on, and Canal (Druid over the DDL) does the same;
/// * parameters MySQL always prints are filled in: `DECIMAL` → `decimal(10,0)`, `DECIMAL(5)` →
///   `decimal(5,0)`, `CHAR` → `char(1)`, `BINARY` → `binary(1)`, `BIT` → `bit(1)`; a zero
///   fractional-seconds precision is dropped (`DATETIME(0)` → `datetime`);
/// * `FLOAT(p)` becomes `float` (p ≤ 24) or `double`; `BLOB(n)`/`TEXT(n)` become the smallest blob or
///   text type that holds n bytes (characters × the charset's maximum bytes for text);
/// * ENUM/SET members are re-quoted with `'` (a quote inside doubled): `enum('a','it''s')`;
/// * ` unsigned` and ` zerofill` are appended for numeric types (ZEROFILL implies UNSIGNED).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name as written (without backquotes).
    pub name: String,
    /// Normalized column type text (see the type docs).
    pub mysql_type: String,
    /// Base type keyword, lower case, synonyms resolved: `int`, `varchar`, `decimal`, `enum`, ...
    pub data_type: String,
    /// `UNSIGNED` (or `ZEROFILL`) on a numeric type.
    pub unsigned: bool,
    /// `ZEROFILL`.
    #[serde(default)]
    pub zerofill: bool,
    /// Whether NULL is allowed (false for `NOT NULL` and for primary-key columns).
    pub nullable: bool,
    /// `CHARACTER SET` stated on the column (lower case); `None` means the table default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    /// `COLLATE` stated on the column (lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// ENUM / SET members in declaration order (unescaped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Part of the PRIMARY KEY (unique keys do not count, as in Canal's `Column.isKey`).
    pub is_pk: bool,
    /// `AUTO_INCREMENT`.
    #[serde(default)]
    pub auto_increment: bool,
    /// Generated column kind, if the column is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<Generated>,
}

impl ColumnDef {
    /// The column's charset, falling back to the table default when the column states none.
    pub fn effective_charset<'a>(&'a self, table: &'a TableDef) -> Option<&'a str> {
        self.charset.as_deref().or(table.charset.as_deref())
    }
}

/// A table's shape at one point of the binlog.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableDef {
    /// Database name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns in ordinal order (the order of row images in the binlog).
    pub columns: Vec<ColumnDef>,
    /// PRIMARY KEY column names in key order (empty when the table has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// Table default charset (`DEFAULT CHARSET=`), lower case, if stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    /// Table default collation, lower case, if stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
}

impl TableDef {
    /// The table's qualified name.
    pub fn table_name(&self) -> TableName {
        TableName::new(self.schema.clone(), self.name.clone())
    }

    /// Index of a column by name. Column names are case-insensitive in MySQL.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// A column by name (case-insensitive).
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.column_index(name).map(|i| &self.columns[i])
    }

    /// Re-derives `is_pk`/`nullable` from `primary_key` and drops key parts whose column no longer
    /// exists (MySQL removes a dropped column from every index). Called after every change so the
    /// two views can never disagree.
    pub(crate) fn sync_primary_key(&mut self) {
        let columns = &self.columns;
        self.primary_key.retain(|k| columns.iter().any(|c| c.name.eq_ignore_ascii_case(k)));
        for c in &mut self.columns {
            c.is_pk = self.primary_key.iter().any(|k| k.eq_ignore_ascii_case(&c.name));
            if c.is_pk {
                // MySQL silently makes every PRIMARY KEY column NOT NULL.
                c.nullable = false;
            }
        }
        // Key names follow the column's spelling so renames and case differences stay consistent.
        for k in &mut self.primary_key {
            if let Some(c) = self.columns.iter().find(|c| c.name.eq_ignore_ascii_case(k)) {
                k.clone_from(&c.name);
            }
        }
    }
}

/// What a table is at a position, as the history knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum TableState {
    /// The definition in force.
    Known {
        /// The definition.
        #[serde(with = "arc_def")]
        def: Arc<TableDef>,
    },
    /// The table does not exist (dropped or renamed away).
    Dropped,
    /// The table exists but its columns are unknown (`CREATE TABLE ... SELECT`, a DDL that could
    /// not be parsed or applied): refresh it from the source with `SHOW CREATE TABLE`.
    Unknown,
}

/// A binlog position the history is keyed by: the *start* offset of the event (Canal's
/// `Header.logfileOffset`) in a journal file. Ordered by file base name, then the numeric suffix
/// as a number (`bin.1000000` after `bin.999999`, via [`compare_journal`]), then offset.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchemaPosition {
    /// Binlog file name, e.g. `mysql-bin.000003`.
    pub journal: String,
    /// Start offset of the event in `journal`.
    pub offset: u64,
}

impl SchemaPosition {
    /// A position from its parts.
    pub fn new(journal: impl Into<String>, offset: u64) -> Self {
        Self { journal: journal.into(), offset }
    }

    /// The position of a Canal `EntryPosition`, if it has a file and a non-negative offset.
    pub fn from_entry(p: &EntryPosition) -> Option<Self> {
        let offset = u64::try_from(p.position?).ok()?;
        Some(Self::new(p.journal_name.clone()?, offset))
    }
}

impl Ord for SchemaPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_position(&self.journal, self.offset, &other.journal, other.offset)
    }
}

/// The order of [`SchemaPosition`] on borrowed parts.
pub(crate) fn cmp_position(aj: &str, ao: u64, bj: &str, bo: u64) -> Ordering {
    // Fast path for the common case (same file) on the rows-event lookup path.
    if aj == bj {
        return ao.cmp(&bo);
    }
    compare_journal(Some(aj), Some(bj))
        .then(ao.cmp(&bo))
        // Tie-break so Ord agrees with Eq for names compare_journal considers equal.
        .then_with(|| aj.cmp(bj))
}

impl PartialOrd for SchemaPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SchemaPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.journal, self.offset)
    }
}

/// Serde for `Arc<TableDef>` without serde's `rc` feature (the workspace does not enable it).
mod arc_def {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::TableDef;

    pub(super) fn serialize<S: Serializer>(def: &Arc<TableDef>, s: S) -> Result<S::Ok, S::Error> {
        def.as_ref().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<TableDef>, D::Error> {
        TableDef::deserialize(d).map(Arc::new)
    }
}
