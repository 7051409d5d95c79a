//! Classification of QUERY-event statements into Canal's `EventType`, `isDdl` flag and header
//! schema/table (docs/protocol.md#entries), as Java Canal's Druid-based `DruidDdlParser` does it.

use serde::{Deserialize, Serialize};

use super::model::TableName;
use super::parser::{AlterSpec, ObjectName, ParseError, Statement, parse_with_head};

/// Canal's `EventType` for a QUERY event, with the protobuf enum numbers of `EntryProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QueryEventType {
    /// Statement-format INSERT (no rows).
    Insert,
    /// Statement-format UPDATE.
    Update,
    /// Statement-format DELETE.
    Delete,
    /// CREATE TABLE.
    Create,
    /// ALTER TABLE.
    Alter,
    /// DROP TABLE.
    Erase,
    /// Everything else (CREATE/DROP DATABASE, GRANT, SET, REPLACE, ...).
    Query,
    /// TRUNCATE TABLE.
    Truncate,
    /// RENAME TABLE, ALTER TABLE ... RENAME.
    Rename,
    /// CREATE INDEX, ALTER TABLE ADD INDEX/UNIQUE/PRIMARY KEY.
    #[serde(rename = "CINDEX")]
    CIndex,
    /// DROP INDEX, ALTER TABLE DROP INDEX/KEY/CONSTRAINT.
    #[serde(rename = "DINDEX")]
    DIndex,
}

impl QueryEventType {
    /// The `EntryProtocol.EventType` enum number.
    pub fn code(self) -> i32 {
        match self {
            Self::Insert => 1,
            Self::Update => 2,
            Self::Delete => 3,
            Self::Create => 4,
            Self::Alter => 5,
            Self::Erase => 6,
            Self::Query => 7,
            Self::Truncate => 8,
            Self::Rename => 9,
            Self::CIndex => 10,
            Self::DIndex => 11,
        }
    }

    /// Whether Canal's name filter applies to this type (docs/protocol.md#filters: DDL on tables is filtered by
    /// `schema.table`; QUERY and statement DML are not).
    pub fn is_name_filtered(self) -> bool {
        matches!(
            self,
            Self::Create
                | Self::Alter
                | Self::Erase
                | Self::Truncate
                | Self::Rename
                | Self::CIndex
                | Self::DIndex
        )
    }
}

/// One table a statement acts on (Canal's `DdlResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryTarget {
    /// Event type of this item.
    pub event_type: QueryEventType,
    /// Schema (the event's default database when the statement did not qualify the name).
    pub schema: String,
    /// Table (`""` for database-level statements).
    pub table: String,
    /// For RENAME: the old name.
    pub old: Option<TableName>,
}

/// What Canal needs to turn a QUERY event into an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedQuery {
    /// `Header.eventType` / `RowChange.eventType`: the first item's type.
    pub event_type: QueryEventType,
    /// `RowChange.isDdl`: false only for INSERT/UPDATE/DELETE.
    pub is_ddl: bool,
    /// `Header.schemaName` (first item).
    pub schema: String,
    /// `Header.tableName` (first item; `""` when none).
    pub table: String,
    /// Every item (one per dropped/renamed table and per ALTER TABLE clause, as Druid reports).
    pub targets: Vec<QueryTarget>,
}

impl ParsedQuery {
    /// Canal's DDL name filter (docs/protocol.md#filters): true when the statement is not name-filtered, or when any
    /// target — for RENAME either its new or its old name — is accepted by `accept`.
    pub fn passes(&self, mut accept: impl FnMut(&TableName) -> bool) -> bool {
        if !self.event_type.is_name_filtered() {
            return true;
        }
        self.targets.iter().any(|t| {
            accept(&TableName::new(t.schema.clone(), t.table.clone()))
                || t.old.as_ref().is_some_and(&mut accept)
        })
    }

    fn from_targets(targets: Vec<QueryTarget>) -> Self {
        let (event_type, schema, table) = match targets.first() {
            Some(t) => (t.event_type, t.schema.clone(), t.table.clone()),
            None => (QueryEventType::Query, String::new(), String::new()),
        };
        let is_ddl = !matches!(
            event_type,
            QueryEventType::Insert | QueryEventType::Update | QueryEventType::Delete
        );
        Self { event_type, is_ddl, schema, table, targets }
    }
}

/// A QUERY event that is a transaction-control statement, not DDL or DML (docs/protocol.md#entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnControl {
    /// `BEGIN [WORK]` (MySQL writes it before a transaction's rows).
    Begin,
    /// `COMMIT [WORK] [AND [NO] CHAIN] [[NO] RELEASE]` (transactions on non-transactional
    /// tables, MariaDB without XID).
    Commit,
    /// `XA START|BEGIN xid [JOIN|RESUME]`.
    XaStart {
        /// The text after `XA START`, trimmed (Canal's `XA_XID`).
        xid: String,
    },
    /// `XA END xid [SUSPEND [FOR MIGRATE]]`.
    XaEnd {
        /// The text after `XA END`, trimmed.
        xid: String,
    },
    /// `XA PREPARE xid`.
    XaPrepare {
        /// The text after `XA PREPARE`, trimmed.
        xid: String,
    },
    /// `XA COMMIT xid [ONE PHASE]`.
    XaCommit {
        /// The text after `XA COMMIT`, trimmed.
        xid: String,
    },
    /// `XA ROLLBACK xid`.
    XaRollback {
        /// The text after `XA ROLLBACK`, trimmed.
        xid: String,
    },
}

/// Recognises the transaction-control statements of a QUERY event by their tokens: the whole
/// statement must be `BEGIN` or `COMMIT` (with their optional words), case-insensitively, with any
/// whitespace and comments around it and an optional `;`; XA statements start with `XA` and their
/// verb. Anything else — notably DDL that merely *ends* with the word, such as
/// `ALTER TABLE t DROP COLUMN last_commit` or `RENAME TABLE a TO begin` — is `None` and goes to
/// the DDL classifier. (Java Canal tests the text's suffix instead; see docs/compatibility.md.)
pub fn transaction_control(sql: &str) -> Option<TxnControl> {
    // Control statements are a handful of tokens; DML can be megabytes: read only a prefix.
    const MAX: usize = 16;
    let toks = super::lexer::tokenize_prefix(sql, MAX).ok()?;
    let first = toks.first()?;
    // The statement's words, without a final `;`; `None` when the prefix did not reach the end.
    let whole = || -> Option<&[super::lexer::Token]> {
        if toks.len() >= MAX {
            return None;
        }
        match toks.split_last() {
            Some((last, rest)) if last.is_punct(';') => Some(rest),
            _ => Some(&toks[..]),
        }
    };
    let words = |ts: &[super::lexer::Token], allowed: &[&str]| {
        ts.iter().all(|t| allowed.iter().any(|a| t.is_kw(a)))
    };
    if first.is_kw("BEGIN") {
        let ts = whole()?;
        return (ts.len() == 1 || (ts.len() == 2 && ts[1].is_kw("WORK")))
            .then_some(TxnControl::Begin);
    }
    if first.is_kw("COMMIT") {
        let ts = whole()?;
        return words(&ts[1..], &["WORK", "AND", "NO", "CHAIN", "RELEASE"])
            .then_some(TxnControl::Commit);
    }
    if first.is_kw("XA") {
        let verb = toks.get(1).filter(|t| t.kind == super::lexer::TokenKind::Word)?;
        // The xid is the rest of the text after the verb, as Canal reports it.
        let xid = sql.get(verb.offset + verb.text.len()..)?.trim().to_owned();
        return match verb.text.to_ascii_uppercase().as_str() {
            "START" | "BEGIN" => Some(TxnControl::XaStart { xid }),
            "END" => Some(TxnControl::XaEnd { xid }),
            "PREPARE" => Some(TxnControl::XaPrepare { xid }),
            "COMMIT" => Some(TxnControl::XaCommit { xid }),
            "ROLLBACK" => Some(TxnControl::XaRollback { xid }),
            _ => None,
        };
    }
    None
}

/// Parses and classifies a QUERY event's text. `default_db` is the event's current database
/// (`USE db`), used for unqualified names.
pub fn parse_query(sql: &str, default_db: &str) -> Result<ParsedQuery, ParseError> {
    let statements = super::parser::parse_statements(sql)?;
    Ok(classify(&statements, default_db))
}

/// Like [`parse_query`] but never fails: when the text cannot be fully parsed, the statement's head
/// (`ALTER TABLE t ...`) still gives the type and table, and anything else is `QUERY` on the
/// default database, which is what the entry header needs.
pub fn classify_lenient(sql: &str, default_db: &str) -> ParsedQuery {
    match parse_with_head(sql) {
        Ok(st) => classify(&st, default_db),
        Err(failed) => classify(failed.1.as_slice(), default_db),
    }
}

/// Classifies parsed statements. Like Canal's `DruidDdlParser`, every statement contributes its
/// items (one per table, per RENAME pair, per ALTER TABLE clause; none for statements it does not
/// model such as GRANT, SET or REPLACE, and none for ADD FOREIGN KEY / CHECK clauses) and the header
/// comes from the first item. Without any item the header is `QUERY` with empty schema and table.
pub fn classify(statements: &[Statement], default_db: &str) -> ParsedQuery {
    let mut targets = Vec::new();
    for st in statements {
        statement_targets(st, default_db, &mut targets);
    }
    ParsedQuery::from_targets(targets)
}

fn statement_targets(st: &Statement, default_db: &str, out: &mut Vec<QueryTarget>) {
    let qualify = |name: &ObjectName| {
        TableName::new(
            name.schema.clone().unwrap_or_else(|| default_db.to_owned()),
            name.name.clone(),
        )
    };
    let target = |event_type, name: &ObjectName| {
        let n = qualify(name);
        QueryTarget { event_type, schema: n.schema, table: n.table, old: None }
    };
    let rename = |from: &ObjectName, to: &ObjectName| QueryTarget {
        old: Some(qualify(from)),
        ..target(QueryEventType::Rename, to)
    };
    match st {
        Statement::CreateTable { name, .. } => out.push(target(QueryEventType::Create, name)),
        Statement::AlterTable { name, specs } if specs.is_empty() => {
            out.push(target(QueryEventType::Alter, name))
        }
        Statement::AlterTable { name, specs } => out.extend(specs.iter().filter_map(|s| match s {
            AlterSpec::RenameTable(to) => Some(rename(name, to)),
            AlterSpec::AddIndex | AlterSpec::AddPrimaryKey(_) => {
                Some(target(QueryEventType::CIndex, name))
            }
            AlterSpec::DropIndex { .. } => Some(target(QueryEventType::DIndex, name)),
            AlterSpec::AddConstraint => None,
            _ => Some(target(QueryEventType::Alter, name)),
        })),
        Statement::DropTable { names, .. } => {
            out.extend(names.iter().map(|n| target(QueryEventType::Erase, n)))
        }
        Statement::RenameTable(pairs) => out.extend(pairs.iter().map(|(f, t)| rename(f, t))),
        Statement::Truncate(n) => out.push(target(QueryEventType::Truncate, n)),
        Statement::CreateIndex(n) => out.push(target(QueryEventType::CIndex, n)),
        Statement::DropIndex { table, .. } => out.push(target(QueryEventType::DIndex, table)),
        Statement::CreateDatabase(db) | Statement::DropDatabase(db) => out.push(QueryTarget {
            event_type: QueryEventType::Query,
            schema: db.clone(),
            table: String::new(),
            old: None,
        }),
        Statement::Insert(n) => out.push(target(QueryEventType::Insert, n)),
        Statement::Update(n) => out.push(target(QueryEventType::Update, n)),
        Statement::Delete(n) => out.push(target(QueryEventType::Delete, n)),
        // Canal's Druid parser has no branch for REPLACE (a separate statement class in Druid).
        Statement::Replace(_) | Statement::Other(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(sql: &str) -> ParsedQuery {
        parse_query(sql, "d").unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn mapping_follows_canal() {
        let cases = [
            ("CREATE TABLE t (a int)", QueryEventType::Create, "d", "t"),
            ("alter table x.t add column b int", QueryEventType::Alter, "x", "t"),
            ("ALTER TABLE t ADD INDEX i (a)", QueryEventType::CIndex, "d", "t"),
            ("ALTER TABLE t ADD UNIQUE (a)", QueryEventType::CIndex, "d", "t"),
            ("ALTER TABLE t DROP INDEX i", QueryEventType::DIndex, "d", "t"),
            ("ALTER TABLE t DROP CONSTRAINT c", QueryEventType::DIndex, "d", "t"),
            ("ALTER TABLE t RENAME TO u", QueryEventType::Rename, "d", "u"),
            (
                "DROP TABLE IF EXISTS `a`, b.c /* generated by server */",
                QueryEventType::Erase,
                "d",
                "a",
            ),
            ("RENAME TABLE a TO b, c TO d", QueryEventType::Rename, "d", "b"),
            ("TRUNCATE t", QueryEventType::Truncate, "d", "t"),
            ("CREATE UNIQUE INDEX i ON t (a)", QueryEventType::CIndex, "d", "t"),
            ("DROP INDEX i ON x.t", QueryEventType::DIndex, "x", "t"),
            ("CREATE DATABASE IF NOT EXISTS n", QueryEventType::Query, "n", ""),
            ("DROP SCHEMA n", QueryEventType::Query, "n", ""),
            ("INSERT INTO t VALUES (1)", QueryEventType::Insert, "d", "t"),
            ("update x.t set a=1", QueryEventType::Update, "x", "t"),
            ("DELETE FROM t WHERE a=1", QueryEventType::Delete, "d", "t"),
            ("REPLACE INTO t VALUES (1)", QueryEventType::Query, "", ""),
            ("GRANT ALL ON *.* TO 'a'@'%'", QueryEventType::Query, "", ""),
            (
                "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (b)",
                QueryEventType::Query,
                "",
                "",
            ),
            ("ALTER TABLE t ADD CHECK (a > 0), ADD c INT", QueryEventType::Alter, "d", "t"),
            ("ALTER TABLE t DROP INDEX `PRIMARY`", QueryEventType::DIndex, "d", "t"),
            ("ALTER TABLE t DROP PRIMARY KEY", QueryEventType::Alter, "d", "t"),
            ("ALTER TABLE t ADD PRIMARY KEY (a)", QueryEventType::CIndex, "d", "t"),
            ("SET NAMES utf8; DROP TABLE x", QueryEventType::Erase, "d", "x"),
            ("/*!40000 ALTER TABLE `t` DISABLE KEYS */", QueryEventType::Alter, "d", "t"),
        ];
        for (sql, ty, schema, table) in cases {
            let p = q(sql);
            assert_eq!(
                (p.event_type, p.schema.as_str(), p.table.as_str()),
                (ty, schema, table),
                "{sql}"
            );
            assert_eq!(
                p.is_ddl,
                !matches!(
                    ty,
                    QueryEventType::Insert | QueryEventType::Update | QueryEventType::Delete
                )
            );
        }
    }

    #[test]
    fn statement_dml_is_classified_from_its_head() {
        let mut sql = String::from("INSERT IGNORE INTO `x`.`big` VALUES ");
        for i in 0..10_000 {
            sql.push_str(&format!("({i}, 'v;{i}'),"));
        }
        // Not even well-formed at the end: only the head is read.
        sql.push_str("('unterminated");
        let p = q(&sql);
        assert_eq!(
            (p.event_type, p.schema.as_str(), p.table.as_str()),
            (QueryEventType::Insert, "x", "big")
        );
        assert!(!p.is_ddl);
    }

    #[test]
    fn transaction_control_is_a_whole_statement() {
        use TxnControl as C;
        let xa = |x: &str| x.to_owned();
        for (sql, want) in [
            ("BEGIN", Some(C::Begin)),
            ("  begin  ", Some(C::Begin)),
            ("/* x */ BEGIN /* y */", Some(C::Begin)),
            ("BEGIN WORK;", Some(C::Begin)),
            ("COMMIT", Some(C::Commit)),
            ("commit work and no chain no release", Some(C::Commit)),
            ("COMMIT /* implicit, from Xid_log_event */", Some(C::Commit)),
            ("# c\nCOMMIT", Some(C::Commit)),
            ("XA START X'31',X'',1", Some(C::XaStart { xid: xa("X'31',X'',1") })),
            ("xa begin 'a'", Some(C::XaStart { xid: xa("'a'") })),
            ("XA END X'31',X'',1", Some(C::XaEnd { xid: xa("X'31',X'',1") })),
            ("XA PREPARE 'a'", Some(C::XaPrepare { xid: xa("'a'") })),
            ("XA COMMIT 'a' ONE PHASE", Some(C::XaCommit { xid: xa("'a' ONE PHASE") })),
            ("XA ROLLBACK 'a'", Some(C::XaRollback { xid: xa("'a'") })),
            // DDL that only ends with the words.
            ("ALTER TABLE t DROP COLUMN last_commit", None),
            ("ALTER TABLE t DROP COLUMN xcommit", None),
            ("ALTER TABLE t ADD COLUMN `commit` INT", None),
            ("RENAME TABLE a TO begin", None),
            ("DROP TABLE `begin` /* generated by server */", None),
            ("CREATE TABLE begin (id INT)", None),
            ("TRUNCATE TABLE commit", None),
            ("BEGIN NOT ATOMIC SELECT 1; END", None),
            ("COMMIT; DROP TABLE t", None),
            ("commit_log", None),
            ("XA", None),
            ("XA RECOVER", None),
            ("", None),
        ] {
            assert_eq!(transaction_control(sql), want, "{sql:?}");
        }
        // DDL that ends with the words classifies as DDL.
        let p = q("ALTER TABLE t DROP COLUMN last_commit");
        assert_eq!((p.event_type, p.table.as_str()), (QueryEventType::Alter, "t"));
        let p = q("RENAME TABLE a TO begin");
        assert_eq!((p.event_type, p.table.as_str()), (QueryEventType::Rename, "begin"));
    }

    #[test]
    fn rename_filter_accepts_either_name() {
        let p = q("RENAME TABLE secret.a TO open.b");
        assert!(p.passes(|n| n.schema == "open"));
        assert!(p.passes(|n| n.schema == "secret"));
        assert!(!p.passes(|n| n.schema == "other"));
        assert!(q("GRANT ALL ON *.* TO x").passes(|_| false));
    }

    #[test]
    fn lenient_classification_keeps_the_head() {
        let p = classify_lenient("ALTER TABLE d2.t FROBNICATE", "d");
        assert_eq!(
            (p.event_type, p.schema.as_str(), p.table.as_str()),
            (QueryEventType::Alter, "d2", "t")
        );
        let p = classify_lenient("ALTER TABLE t COMMENT 'unterminated", "d");
        assert_eq!((p.event_type, p.table.as_str()), (QueryEventType::Alter, "t"));
    }
}
