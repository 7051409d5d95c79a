//! A hand-written parser for the MySQL/MariaDB statements that change table shape, plus a
//! classifier that gives every other statement its Canal `EventType` and target table.
//!
//! It parses only what the history needs (names, columns, types, primary keys) and skips the rest
//! (indexes, constraints, defaults, table options, partitioning) by balanced-parenthesis scanning,
//! so that unusual but valid DDL still yields the right shape. A statement it cannot understand
//! is a [`ParseError`], never a panic: the caller then refreshes the table from the source.

use thiserror::Error;

use super::lexer::{LexError, Token, TokenKind, tokenize, tokenize_prefix};
use super::model::{ColumnDef, Generated};
use super::types::{RawType, canonical_type, is_textual, normalize};

/// Why a statement could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The text could not be tokenized.
    #[error(transparent)]
    Lex(#[from] LexError),
    /// A token other than the expected one.
    #[error("expected {expected} at byte {offset}, found `{found}`")]
    Unexpected {
        /// What the parser wanted.
        expected: &'static str,
        /// The token it got.
        found: String,
        /// Byte offset of that token.
        offset: usize,
    },
    /// The statement ended where more was required.
    #[error("expected {expected}, found the end of the statement")]
    UnexpectedEnd {
        /// What the parser wanted.
        expected: &'static str,
    },
    /// A well-formed construct this parser does not model (e.g. an unknown ALTER TABLE clause);
    /// its effect on the table shape is unknown.
    #[error("unsupported {what} at byte {offset}")]
    Unsupported {
        /// The construct.
        what: String,
        /// Byte offset where it starts.
        offset: usize,
    },
}

/// A possibly qualified object name (`db.t` or `t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectName {
    /// The database, when the name is qualified.
    pub schema: Option<String>,
    /// The object name.
    pub name: String,
}

/// Where ADD/MODIFY/CHANGE puts a column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnPosition {
    /// `FIRST`.
    First,
    /// `AFTER col`.
    After(String),
}

/// A column definition as written in CREATE/ALTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    /// The column (with `is_pk` false; see `inline_primary_key`).
    pub def: ColumnDef,
    /// `PRIMARY KEY` (or `KEY`) written on the column itself.
    pub inline_primary_key: bool,
    /// `FIRST` / `AFTER x` (ALTER only).
    pub position: Option<ColumnPosition>,
}

/// The body of a CREATE TABLE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateBody {
    /// Column list, primary key and table default charset/collation.
    Columns {
        /// Columns in order.
        columns: Vec<ColumnSpec>,
        /// Table-level PRIMARY KEY columns (empty when absent).
        primary_key: Vec<String>,
        /// `DEFAULT CHARSET=`.
        charset: Option<String>,
        /// `COLLATE=`.
        collation: Option<String>,
    },
    /// `CREATE TABLE t LIKE src`.
    Like(ObjectName),
    /// `CREATE TABLE t ... SELECT ...`: the columns depend on the query.
    Select,
}

/// One ALTER TABLE clause.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlterSpec {
    /// `ADD [COLUMN] [IF NOT EXISTS] def [FIRST|AFTER x]` or `ADD COLUMN (a ..., b ...)`.
    AddColumns {
        /// The new columns.
        columns: Vec<ColumnSpec>,
        /// MariaDB `IF NOT EXISTS`.
        if_not_exists: bool,
    },
    /// `DROP [COLUMN] [IF EXISTS] x`.
    DropColumn {
        /// The column.
        name: String,
        /// MariaDB `IF EXISTS`.
        if_exists: bool,
    },
    /// `MODIFY [COLUMN] [IF EXISTS] def [FIRST|AFTER x]`.
    ModifyColumn {
        /// New definition (same name).
        column: ColumnSpec,
        /// MariaDB `IF EXISTS`.
        if_exists: bool,
    },
    /// `CHANGE [COLUMN] [IF EXISTS] old def [FIRST|AFTER x]`.
    ChangeColumn {
        /// Old name.
        old: String,
        /// New definition and name.
        column: ColumnSpec,
        /// MariaDB `IF EXISTS`.
        if_exists: bool,
    },
    /// `RENAME COLUMN a TO b`.
    RenameColumn {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// `RENAME [TO|AS] t2`.
    RenameTable(ObjectName),
    /// `ADD [CONSTRAINT [x]] PRIMARY KEY (cols)`.
    AddPrimaryKey(Vec<String>),
    /// `DROP PRIMARY KEY`.
    DropPrimaryKey,
    /// `ADD INDEX/KEY/FULLTEXT/SPATIAL`, `ADD [CONSTRAINT] UNIQUE`: no shape change (CINDEX).
    AddIndex,
    /// `DROP INDEX/KEY x`, `DROP CONSTRAINT x` (DINDEX); `primary` when `x` is `PRIMARY`, which
    /// drops the primary key.
    DropIndex {
        /// The dropped index is the primary key.
        primary: bool,
    },
    /// `ADD [CONSTRAINT [x]] FOREIGN KEY ...` / `CHECK (...)`: no shape change, and Canal reports
    /// no item for it.
    AddConstraint,
    /// `CONVERT TO CHARACTER SET x [COLLATE y]`.
    ConvertCharset {
        /// New charset.
        charset: Option<String>,
        /// New collation.
        collation: Option<String>,
    },
    /// Table options (`ENGINE=`, `DEFAULT CHARSET=`, `COMMENT=`...).
    TableOptions {
        /// New table default charset, if stated.
        charset: Option<String>,
        /// New table default collation, if stated.
        collation: Option<String>,
    },
    /// Anything else that leaves the column list alone (foreign keys, checks, ALTER COLUMN ...
    /// DEFAULT, RENAME INDEX, ALGORITHM/LOCK, partition maintenance, ...).
    NoShapeChange,
}

/// A parsed statement.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Statement {
    /// `CREATE [OR REPLACE] [TEMPORARY] TABLE`.
    CreateTable {
        /// Table name.
        name: ObjectName,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// MariaDB `OR REPLACE`.
        or_replace: bool,
        /// `TEMPORARY` (never in the history: row events of temporary tables are not logged).
        temporary: bool,
        /// What the table is built from.
        body: CreateBody,
    },
    /// ALTER TABLE.
    AlterTable {
        /// Table name.
        name: ObjectName,
        /// Clauses in order.
        specs: Vec<AlterSpec>,
    },
    /// DROP TABLE a, b.
    DropTable {
        /// Tables.
        names: Vec<ObjectName>,
        /// `TEMPORARY`.
        temporary: bool,
    },
    /// RENAME TABLE a TO b, c TO d.
    RenameTable(Vec<(ObjectName, ObjectName)>),
    /// `TRUNCATE [TABLE] t`.
    Truncate(ObjectName),
    /// CREATE [UNIQUE|FULLTEXT|SPATIAL] INDEX ... ON t.
    CreateIndex(ObjectName),
    /// DROP INDEX x ON t (`primary` true for the `PRIMARY` index).
    DropIndex {
        /// The table.
        table: ObjectName,
        /// Whether the dropped index is the primary key.
        primary: bool,
    },
    /// CREATE DATABASE / SCHEMA.
    CreateDatabase(String),
    /// DROP DATABASE / SCHEMA.
    DropDatabase(String),
    /// `INSERT [INTO] t`.
    Insert(ObjectName),
    /// `REPLACE [INTO] t`.
    Replace(ObjectName),
    /// UPDATE t.
    Update(ObjectName),
    /// `DELETE [FROM] t`.
    Delete(ObjectName),
    /// Anything else (GRANT, CREATE USER, SET, CREATE VIEW, ...), by leading keyword (upper case).
    Other(String),
}

/// Parses every statement of `sql` (separated by `;`). Statements this parser does not model
/// become [`Statement::Other`]; CREATE/ALTER of routines, triggers and events and compound
/// statements swallow the rest of the text, because their bodies may contain `;` themselves.
pub fn parse_statements(sql: &str) -> Result<Vec<Statement>, ParseError> {
    parse_with_head(sql).map_err(|failed| failed.0)
}

/// Like [`parse_statements`], but on failure also returns what the first statement's head said
/// (kind and table name, e.g. an `AlterTable` without clauses), so that the caller knows which
/// table to refresh. Text that cannot be tokenized is retried on the prefix before the error.
pub(crate) fn parse_with_head(
    sql: &str,
) -> Result<Vec<Statement>, Box<(ParseError, Option<Statement>)>> {
    // Statement DML (STATEMENT/MIXED binlogs) is frequent and can be huge; its head is all that
    // matters, and a QUERY event holds a single statement.
    if let Ok(head) = tokenize_prefix(sql, 16) {
        let dml = ["INSERT", "REPLACE", "UPDATE", "DELETE"];
        if let Some(kw) = head.first().filter(|t| dml.iter().any(|k| t.is_kw(k))) {
            let mut p = Parser { toks: &head, pos: 0, partial: None };
            if let Ok(st) = p.dml(&kw.text.to_ascii_uppercase()) {
                return Ok(vec![st]);
            }
        }
    }
    let toks = match tokenize(sql) {
        Ok(t) => t,
        Err(e) => {
            let LexError::Unterminated { offset, .. } = &e;
            let head = sql.get(..*offset).and_then(|prefix| {
                let toks = tokenize(prefix).ok()?;
                let mut p = Parser { toks: &toks, pos: 0, partial: None };
                let _ = p.statement();
                p.partial
            });
            return Err(Box::new((e.into(), head)));
        }
    };
    let mut p = Parser { toks: &toks, pos: 0, partial: None };
    match p.statements() {
        Ok(v) => Ok(v),
        Err(e) => Err(Box::new((e, p.partial))),
    }
}

impl Parser<'_> {
    fn statements(&mut self) -> Result<Vec<Statement>, ParseError> {
        let p = self;
        let mut out = Vec::new();
        loop {
            while p.eat_punct(';') {}
            if p.at_end() {
                break;
            }
            let st = p.statement()?;
            out.push(st);
            if !p.at_end() && !p.eat_punct(';') {
                return Err(p.unexpected("`;` or the end of the statement"));
            }
        }
        Ok(out)
    }

    /// Remembers the head of the first statement for [`parse_with_head`].
    fn note_head(&mut self, st: Statement) {
        if self.partial.is_none() {
            self.partial = Some(st);
        }
    }
}

/// Parses the output of `SHOW CREATE TABLE` (or any single CREATE TABLE statement).
pub fn parse_create_table(sql: &str) -> Result<Statement, ParseError> {
    let st = parse_statements(sql)?;
    match st.into_iter().next() {
        Some(s @ Statement::CreateTable { .. }) => Ok(s),
        Some(other) => Err(ParseError::Unsupported {
            what: format!("statement {other:?} where CREATE TABLE was expected"),
            offset: 0,
        }),
        None => Err(ParseError::UnexpectedEnd { expected: "CREATE TABLE" }),
    }
}

struct Parser<'t> {
    toks: &'t [Token],
    pos: usize,
    /// The head of the first statement, kept for error reporting.
    partial: Option<Statement>,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.pos)
    }

    fn peek_n(&self, n: usize) -> Option<&'t Token> {
        self.toks.get(self.pos + n)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn at_stmt_end(&self) -> bool {
        self.peek().is_none_or(|t| t.is_punct(';'))
    }

    fn advance(&mut self) -> Option<&'t Token> {
        let t = self.toks.get(self.pos);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn peek_kw(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| t.is_kw(kw))
    }

    fn peek_kw_n(&self, n: usize, kw: &str) -> bool {
        self.peek_n(n).is_some_and(|t| t.is_kw(kw))
    }

    fn peek_punct(&self, c: char) -> bool {
        self.peek().is_some_and(|t| t.is_punct(c))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.peek_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_kws(&mut self, kws: &[&str]) -> bool {
        if kws.iter().enumerate().all(|(i, k)| self.peek_kw_n(i, k)) {
            self.pos += kws.len();
            true
        } else {
            false
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.peek_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn unexpected(&self, expected: &'static str) -> ParseError {
        match self.peek() {
            Some(t) => ParseError::Unexpected { expected, found: t.text.clone(), offset: t.offset },
            None => ParseError::UnexpectedEnd { expected },
        }
    }

    fn offset(&self) -> usize {
        self.peek().or(self.toks.last()).map_or(0, |t| t.offset)
    }

    fn expect_kw(&mut self, kw: &'static str) -> Result<(), ParseError> {
        if self.eat_kw(kw) { Ok(()) } else { Err(self.unexpected(kw)) }
    }

    fn expect_punct(&mut self, c: char, what: &'static str) -> Result<(), ParseError> {
        if self.eat_punct(c) { Ok(()) } else { Err(self.unexpected(what)) }
    }

    /// An identifier: unquoted word, backquoted name, or a `"..."` name (ANSI_QUOTES).
    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(t)
                if matches!(
                    t.kind,
                    TokenKind::Word | TokenKind::QuotedIdent | TokenKind::DoubleStr
                ) =>
            {
                self.pos += 1;
                Ok(t.text.clone())
            }
            _ => Err(self.unexpected("an identifier")),
        }
    }

    /// A name that may also be written as a `'string'` (charset and collation names).
    fn ident_or_string(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(t) if t.kind == TokenKind::Str => {
                self.pos += 1;
                Ok(t.text.clone())
            }
            _ => self.ident(),
        }
    }

    fn object_name(&mut self) -> Result<ObjectName, ParseError> {
        let first = self.ident()?;
        if self.peek_punct('.') && self.peek_n(1).is_some_and(|t| t.kind != TokenKind::Punct) {
            self.pos += 1;
            let name = self.ident()?;
            Ok(ObjectName { schema: Some(first), name })
        } else {
            Ok(ObjectName { schema: None, name: first })
        }
    }

    /// Skips a balanced `( ... )` group; the cursor must be on `(`.
    fn skip_group(&mut self) -> Result<(), ParseError> {
        self.expect_punct('(', "`(`")?;
        let mut depth = 1usize;
        while let Some(t) = self.advance() {
            if t.is_punct('(') {
                depth += 1;
            } else if t.is_punct(')') {
                depth -= 1;
                if depth == 0 {
                    return Ok(());
                }
            }
        }
        Err(ParseError::UnexpectedEnd { expected: "`)`" })
    }

    /// Skips to the next `,` or `)` at the current nesting level (not consuming it), or the end of
    /// the statement.
    fn skip_item(&mut self) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                None => return Ok(()),
                Some(t) if t.is_punct(',') || t.is_punct(')') || t.is_punct(';') => return Ok(()),
                Some(t) if t.is_punct('(') => self.skip_group()?,
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Skips to the end of the statement (not consuming `;`).
    fn skip_statement(&mut self) {
        while !self.at_stmt_end() {
            self.pos += 1;
        }
    }

    fn if_not_exists(&mut self) -> bool {
        self.eat_kws(&["IF", "NOT", "EXISTS"])
    }

    fn if_exists(&mut self) -> bool {
        self.eat_kws(&["IF", "EXISTS"])
    }

    /// MariaDB `WAIT n` / `NOWAIT` after a table name.
    fn skip_wait(&mut self) {
        if self.peek_kw("WAIT") && self.peek_n(1).is_some_and(|t| t.kind == TokenKind::Number) {
            self.pos += 2;
        } else {
            self.eat_kw("NOWAIT");
        }
    }

    fn statement(&mut self) -> Result<Statement, ParseError> {
        let Some(first) = self.peek() else {
            return Err(ParseError::UnexpectedEnd { expected: "a statement" });
        };
        let kw = if first.kind == TokenKind::Word {
            first.text.to_ascii_uppercase()
        } else {
            String::new()
        };
        match kw.as_str() {
            "CREATE" => self.create(),
            "ALTER" => self.alter(),
            "DROP" => self.drop(),
            "RENAME" if self.peek_kw_n(1, "TABLE") || self.peek_kw_n(1, "TABLES") => {
                self.pos += 2;
                self.rename_table()
            }
            "TRUNCATE" => {
                self.pos += 1;
                self.eat_kw("TABLE");
                let name = self.object_name()?;
                self.skip_wait();
                Ok(Statement::Truncate(name))
            }
            "INSERT" | "REPLACE" | "UPDATE" | "DELETE" => self.dml(&kw),
            _ => Ok(self.other(kw)),
        }
    }

    fn other(&mut self, kw: String) -> Statement {
        // Only routines, triggers, events and compound statements have bodies that contain `;`;
        // anything else (SET, GRANT, FLUSH, ...) ends at the next `;` like any statement.
        const BODIES: &[&str] =
            &["", "CREATE", "ALTER", "BEGIN", "DECLARE", "IF", "WHILE", "REPEAT", "LOOP", "CASE"];
        if BODIES.contains(&kw.as_str()) {
            self.pos = self.toks.len();
        } else {
            self.skip_statement();
        }
        Statement::Other(kw)
    }

    fn create(&mut self) -> Result<Statement, ParseError> {
        let start = self.pos;
        self.pos += 1; // CREATE
        let or_replace = self.eat_kws(&["OR", "REPLACE"]);
        let temporary = self.eat_kw("TEMPORARY");
        if self.eat_kw("TABLE") {
            return self.create_table(or_replace, temporary);
        }
        if self.eat_kw("DATABASE") || self.eat_kw("SCHEMA") {
            self.if_not_exists();
            let name = self.ident()?;
            self.skip_statement();
            return Ok(Statement::CreateDatabase(name));
        }
        // CREATE [ONLINE|OFFLINE] [UNIQUE|FULLTEXT|SPATIAL] INDEX
        let _ = self.eat_kw("ONLINE") || self.eat_kw("OFFLINE");
        let _ = self.eat_kw("UNIQUE") || self.eat_kw("FULLTEXT") || self.eat_kw("SPATIAL");
        if self.eat_kw("INDEX") {
            self.if_not_exists();
            self.ident()?;
            // Index name, optional `USING BTREE`, then ON table.
            while !self.at_stmt_end() && !self.peek_kw("ON") {
                self.pos += 1;
            }
            self.expect_kw("ON")?;
            let table = self.object_name()?;
            self.skip_statement();
            return Ok(Statement::CreateIndex(table));
        }
        self.pos = start;
        Ok(self.other("CREATE".to_owned()))
    }

    fn create_table(&mut self, or_replace: bool, temporary: bool) -> Result<Statement, ParseError> {
        let if_not_exists = self.if_not_exists();
        let name = self.object_name()?;
        self.note_head(Statement::CreateTable {
            name: name.clone(),
            if_not_exists,
            or_replace,
            temporary,
            body: CreateBody::Select,
        });
        let like = |p: &mut Self| -> Result<CreateBody, ParseError> {
            p.pos += 1;
            let src = p.object_name()?;
            Ok(CreateBody::Like(src))
        };
        let body = if self.peek_kw("LIKE") {
            let b = like(self)?;
            self.skip_statement();
            b
        } else if self.peek_punct('(') && self.peek_kw_n(1, "LIKE") {
            self.pos += 1;
            let b = like(self)?;
            self.expect_punct(')', "`)`")?;
            self.skip_statement();
            b
        } else if self.peek_punct('(') && !self.peek_kw_n(1, "SELECT") && !self.peek_kw_n(1, "WITH")
        {
            let (columns, primary_key) = self.table_elements()?;
            let (charset, collation, select) = self.table_tail();
            if select {
                CreateBody::Select
            } else {
                CreateBody::Columns { columns, primary_key, charset, collation }
            }
        } else {
            // No column list: `CREATE TABLE t [options] [AS] SELECT ...`.
            let (_, _, select) = self.table_tail();
            if !select {
                return Err(ParseError::Unsupported {
                    what: "CREATE TABLE without a column list, LIKE or SELECT".to_owned(),
                    offset: self.offset(),
                });
            }
            CreateBody::Select
        };
        Ok(Statement::CreateTable { name, if_not_exists, or_replace, temporary, body })
    }

    /// Scans table options after the column list up to the end of the statement: the default
    /// charset/collation, and whether a query follows (CREATE ... SELECT).
    fn table_tail(&mut self) -> (Option<String>, Option<String>, bool) {
        let mut charset = None;
        let mut collation = None;
        let mut select = false;
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            if depth == 0 && t.is_punct(';') {
                break;
            }
            if t.is_punct('(') {
                depth += 1;
            } else if t.is_punct(')') {
                depth = depth.saturating_sub(1);
            } else if t.is_kw("SELECT")
                || (depth == 0
                    && (t.is_kw("AS")
                        || (t.is_kw("WITH") && !self.peek_kw_n(1, "SYSTEM"))
                        || t.is_kw("VALUES")
                        || t.is_kw("TABLE")))
            {
                select = true;
            } else if depth == 0
                && !select
                && let Some((cs, co)) = self.charset_option()
            {
                charset = cs.or(charset);
                collation = co.or(collation);
                continue;
            }
            self.pos += 1;
        }
        (charset, collation, select)
    }

    /// At `[DEFAULT] CHARACTER SET [=] x`, `[DEFAULT] CHARSET [=] x` or `[DEFAULT] COLLATE [=] x`:
    /// consumes it and returns the charset or collation (lower case).
    fn charset_option(&mut self) -> Option<(Option<String>, Option<String>)> {
        let save = self.pos;
        self.eat_kw("DEFAULT");
        let is_cs = self.eat_kws(&["CHARACTER", "SET"]) || self.eat_kw("CHARSET");
        let is_co = !is_cs && self.eat_kw("COLLATE");
        if !is_cs && !is_co {
            self.pos = save;
            return None;
        }
        self.eat_punct('=');
        match self.ident_or_string() {
            Ok(v) => {
                let v = Some(v.to_ascii_lowercase());
                Some(if is_cs { (v, None) } else { (None, v) })
            }
            Err(_) => {
                self.pos = save;
                None
            }
        }
    }

    /// `( element, ... )` of CREATE TABLE: columns and the table-level primary key.
    fn table_elements(&mut self) -> Result<(Vec<ColumnSpec>, Vec<String>), ParseError> {
        self.expect_punct('(', "`(`")?;
        let mut columns = Vec::new();
        let mut pk = Vec::new();
        loop {
            if self.eat_punct(')') {
                break;
            }
            if self.eat_kw("CONSTRAINT") {
                let next_is_kind =
                    ["PRIMARY", "UNIQUE", "FOREIGN", "CHECK"].iter().any(|k| self.peek_kw(k));
                if !next_is_kind {
                    self.ident()?;
                }
            }
            if self.peek_kw("PRIMARY") {
                self.pos += 1;
                self.expect_kw("KEY")?;
                pk = self.key_parts()?;
                self.skip_item()?;
            } else if ["UNIQUE", "INDEX", "KEY", "FULLTEXT", "SPATIAL", "FOREIGN", "CHECK"]
                .iter()
                .any(|k| self.peek_kw(k))
                || (self.peek_kw("PERIOD") && self.peek_kw_n(1, "FOR"))
            {
                self.skip_item()?;
            } else {
                let col = self.column_spec(false)?;
                columns.push(col);
            }
            if self.eat_punct(',') {
                continue;
            }
            self.expect_punct(')', "`,` or `)` in the column list")?;
            break;
        }
        Ok((columns, pk))
    }

    /// `[USING x] (a, b(10) DESC, ...)`: the column names of a key.
    fn key_parts(&mut self) -> Result<Vec<String>, ParseError> {
        if self.eat_kw("USING") {
            self.ident()?;
        }
        // MySQL allows an index name before the parts: `PRIMARY KEY pk_name (a)`.
        if !self.peek_punct('(') {
            self.ident()?;
            if self.eat_kw("USING") {
                self.ident()?;
            }
        }
        self.expect_punct('(', "`(` before key parts")?;
        let mut names = Vec::new();
        loop {
            if self.peek_punct('(') {
                // Functional key part: no column name to record.
                self.skip_group()?;
            } else {
                names.push(self.ident()?);
                if self.peek_punct('(') {
                    self.skip_group()?; // prefix length
                }
            }
            let _ = self.eat_kw("ASC") || self.eat_kw("DESC");
            if self.eat_punct(',') {
                continue;
            }
            self.expect_punct(')', "`,` or `)` in key parts")?;
            return Ok(names);
        }
    }

    /// A column definition: `name type attributes... [FIRST | AFTER x]`.
    fn column_spec(&mut self, in_alter: bool) -> Result<ColumnSpec, ParseError> {
        let name = self.ident()?;
        let mut raw = self.column_type()?;
        let mut nullable = true;
        let mut auto_increment = raw.serial;
        let mut inline_pk = false;
        let mut generated = None;
        let mut position = None;
        if raw.serial {
            nullable = false;
        }
        while let Some(t) = self.peek() {
            if t.is_punct(',') || t.is_punct(')') || t.is_punct(';') {
                break;
            }
            if t.kind != TokenKind::Word {
                if t.is_punct('(') {
                    self.skip_group()?;
                } else {
                    self.pos += 1;
                }
                continue;
            }
            let w = t.text.to_ascii_uppercase();
            match w.as_str() {
                "NOT" if self.peek_kw_n(1, "NULL") => {
                    self.pos += 2;
                    nullable = false;
                }
                "NULL" => {
                    self.pos += 1;
                    nullable = true;
                }
                "DEFAULT" => {
                    self.pos += 1;
                    self.skip_value()?;
                }
                "AUTO_INCREMENT" => {
                    self.pos += 1;
                    auto_increment = true;
                }
                "UNIQUE" => {
                    self.pos += 1;
                    self.eat_kw("KEY");
                }
                "PRIMARY" => {
                    self.pos += 1;
                    self.eat_kw("KEY");
                    inline_pk = true;
                }
                "KEY" => {
                    self.pos += 1;
                    inline_pk = true;
                }
                "COMMENT" => {
                    self.pos += 1;
                    self.skip_value()?;
                }
                "CHARACTER" | "CHARSET" | "COLLATE" => match self.charset_option() {
                    Some((cs, co)) => {
                        raw.charset = cs.or(raw.charset.take());
                        raw.collation = co.or(raw.collation.take());
                    }
                    None => self.pos += 1,
                },
                "GENERATED" => {
                    self.pos += 1;
                    self.eat_kw("ALWAYS");
                }
                "AS" => {
                    self.pos += 1;
                    if self.peek_punct('(') {
                        self.skip_group()?;
                    }
                    generated.get_or_insert(Generated::Virtual);
                }
                "VIRTUAL" => {
                    self.pos += 1;
                    generated = Some(Generated::Virtual);
                }
                "STORED" | "PERSISTENT" => {
                    self.pos += 1;
                    generated = Some(Generated::Stored);
                }
                "ON" => {
                    // ON UPDATE CURRENT_TIMESTAMP[(n)] / ON DELETE|UPDATE <ref action>.
                    self.pos += 1;
                    let _ = self.eat_kw("UPDATE") || self.eat_kw("DELETE");
                    if self.eat_kw("SET") || self.eat_kw("NO") {
                        self.pos += usize::from(!self.at_stmt_end());
                    } else {
                        self.skip_value()?;
                    }
                }
                "REFERENCES" => {
                    self.pos += 1;
                    self.object_name()?;
                    if self.peek_punct('(') {
                        self.skip_group()?;
                    }
                }
                "CHECK" => {
                    self.pos += 1;
                    if self.peek_punct('(') {
                        self.skip_group()?;
                    }
                }
                "CONSTRAINT" => {
                    self.pos += 1;
                    if !self.peek_kw("CHECK") {
                        self.ident()?;
                    }
                }
                "FIRST" if in_alter => {
                    self.pos += 1;
                    position = Some(ColumnPosition::First);
                }
                "AFTER" if in_alter => {
                    self.pos += 1;
                    position = Some(ColumnPosition::After(self.ident()?));
                }
                _ => {
                    // COLUMN_FORMAT x, STORAGE x, SRID n, VISIBLE, INVISIBLE, COMPRESSED[=x],
                    // ENGINE_ATTRIBUTE='x', WITH/WITHOUT SYSTEM VERSIONING, ...: no shape effect.
                    self.pos += 1;
                }
            }
        }
        let (data_type, mysql_type, charset) = normalize(&raw);
        let collation = match (raw.collation, raw.binary_collation, &charset) {
            (Some(c), _, _) => Some(c),
            (None, true, Some(cs)) => Some(format!("{cs}_bin")),
            _ => None,
        };
        let def = ColumnDef {
            name,
            mysql_type,
            unsigned: super::types::is_numeric(&data_type)
                && (raw.unsigned || raw.zerofill || raw.serial),
            zerofill: raw.zerofill,
            nullable,
            charset: if is_textual(&data_type) { charset } else { None },
            collation: if is_textual(&data_type) { collation } else { None },
            values: raw.values,
            is_pk: false,
            auto_increment,
            generated,
            data_type,
        };
        Ok(ColumnSpec { def, inline_primary_key: inline_pk, position })
    }

    /// The type part of a column definition, up to the first column attribute.
    fn column_type(&mut self) -> Result<RawType, ParseError> {
        let t = match self.peek() {
            Some(t) if t.kind == TokenKind::Word => t,
            _ => return Err(self.unexpected("a column type")),
        };
        self.pos += 1;
        let word = t.text.to_ascii_lowercase();
        let next =
            self.peek().filter(|t| t.kind == TokenKind::Word).map(|t| t.text.to_ascii_lowercase());
        let (data_type, implied_cs, used) = canonical_type(&word, next.as_deref());
        if used {
            self.pos += 1;
        }
        // `NATIONAL CHAR VARYING`, `NCHAR VARYING` leave a trailing VARYING.
        let data_type = if data_type == "char" && self.eat_kw("VARYING") {
            "varchar".to_owned()
        } else {
            data_type
        };
        let mut raw =
            RawType { data_type, charset: implied_cs.map(str::to_owned), ..RawType::default() };
        match raw.data_type.as_str() {
            "bool" => raw.boolean = true,
            "serial" => raw.serial = true,
            _ => {}
        }
        if self.peek_punct('(') {
            self.pos += 1;
            loop {
                let Some(t) = self.advance() else {
                    return Err(ParseError::UnexpectedEnd {
                        expected: "`)` after type parameters",
                    });
                };
                match t.kind {
                    TokenKind::Str | TokenKind::DoubleStr
                        if matches!(raw.data_type.as_str(), "enum" | "set") =>
                    {
                        raw.values.push(t.text.clone());
                    }
                    TokenKind::Number | TokenKind::Word => raw.params.push(t.text.clone()),
                    TokenKind::Punct if t.text == ")" => break,
                    TokenKind::Punct if t.text == "," => {}
                    _ => {
                        return Err(ParseError::Unexpected {
                            expected: "a type parameter",
                            found: t.text.clone(),
                            offset: t.offset,
                        });
                    }
                }
            }
        }
        loop {
            if self.eat_kw("UNSIGNED") {
                raw.unsigned = true;
            } else if self.eat_kw("SIGNED") {
            } else if self.eat_kw("ZEROFILL") {
                raw.zerofill = true;
            } else if self.peek_kw("BINARY") {
                self.pos += 1;
                raw.binary_collation = true;
            } else if self.eat_kw("ASCII") {
                raw.charset = Some("latin1".to_owned());
            } else if self.eat_kw("UNICODE") {
                raw.charset = Some("ucs2".to_owned());
            } else if self.eat_kw("BYTE") {
                raw.charset = Some("binary".to_owned());
            } else if self.peek_kw("CHARACTER")
                || self.peek_kw("CHARSET")
                || self.peek_kw("COLLATE")
            {
                match self.charset_option() {
                    Some((cs, co)) => {
                        raw.charset = cs.or(raw.charset.take());
                        raw.collation = co.or(raw.collation.take());
                    }
                    None => break,
                }
            } else {
                break;
            }
        }
        Ok(raw)
    }

    /// Skips one value expression (DEFAULT, COMMENT, ON UPDATE): a literal with an optional sign or
    /// introducer, a function call, or a parenthesized expression.
    fn skip_value(&mut self) -> Result<(), ParseError> {
        let _ = self.eat_punct('-') || self.eat_punct('+');
        let Some(t) = self.peek() else {
            return Err(ParseError::UnexpectedEnd { expected: "a value" });
        };
        if t.is_punct('(') {
            return self.skip_group();
        }
        self.pos += 1;
        if t.kind == TokenKind::Word {
            if self.peek().is_some_and(|n| matches!(n.kind, TokenKind::Str | TokenKind::DoubleStr))
            {
                // _utf8mb4'x', X'00', DATE '2020-01-01'
                self.pos += 1;
            } else if self.peek_punct('(') {
                self.skip_group()?;
            }
        }
        // Adjacent string literals concatenate.
        while self.peek().is_some_and(|n| matches!(n.kind, TokenKind::Str | TokenKind::DoubleStr))
            && matches!(t.kind, TokenKind::Str | TokenKind::DoubleStr)
        {
            self.pos += 1;
        }
        Ok(())
    }

    fn alter(&mut self) -> Result<Statement, ParseError> {
        let start = self.pos;
        self.pos += 1; // ALTER
        let _ = self.eat_kw("ONLINE") || self.eat_kw("OFFLINE");
        self.eat_kw("IGNORE");
        if !self.eat_kw("TABLE") {
            self.pos = start;
            return Ok(self.other("ALTER".to_owned()));
        }
        self.if_exists();
        let name = self.object_name()?;
        self.note_head(Statement::AlterTable { name: name.clone(), specs: Vec::new() });
        self.skip_wait();
        let mut specs = Vec::new();
        while !self.at_stmt_end() {
            if self.peek_kw("PARTITION") || self.peek_kw("ORDER") || self.peek_kw("REMOVE") {
                // Partitioning / ORDER BY run to the end of the statement and change no columns.
                self.skip_statement();
                specs.push(AlterSpec::NoShapeChange);
                break;
            }
            specs.push(self.alter_spec()?);
            if self.at_stmt_end() {
                break;
            }
            if !self.eat_punct(',') {
                // Table options may follow each other without commas.
                if !self.starts_table_option() && !self.peek_kw("PARTITION") {
                    return Err(self.unexpected("`,` between ALTER TABLE clauses"));
                }
            }
        }
        Ok(Statement::AlterTable { name, specs })
    }

    fn starts_table_option(&self) -> bool {
        const OPTIONS: &[&str] = &[
            "ENGINE",
            "AUTO_INCREMENT",
            "AVG_ROW_LENGTH",
            "CHECKSUM",
            "TABLE_CHECKSUM",
            "COMMENT",
            "COMPRESSION",
            "CONNECTION",
            "DATA",
            "INDEX",
            "DELAY_KEY_WRITE",
            "ENCRYPTION",
            "ENCRYPTED",
            "ENCRYPTION_KEY_ID",
            "INSERT_METHOD",
            "KEY_BLOCK_SIZE",
            "MAX_ROWS",
            "MIN_ROWS",
            "PACK_KEYS",
            "PAGE_CHECKSUM",
            "PAGE_COMPRESSED",
            "PAGE_COMPRESSION_LEVEL",
            "PASSWORD",
            "ROW_FORMAT",
            "STATS_AUTO_RECALC",
            "STATS_PERSISTENT",
            "STATS_SAMPLE_PAGES",
            "TABLESPACE",
            "TRANSACTIONAL",
            "UNION",
            "DEFAULT",
            "CHARACTER",
            "CHARSET",
            "COLLATE",
            "SECONDARY_ENGINE",
            "SECONDARY_ENGINE_ATTRIBUTE",
            "ENGINE_ATTRIBUTE",
            "AUTOEXTEND_SIZE",
            "SEQUENCE",
            "IETF_QUOTES",
            "STORAGE",
            "WITH_SYSTEM_VERSIONING",
        ];
        // `INDEX DIRECTORY` is an option, `INDEX x (...)` is not valid here without ADD anyway.
        OPTIONS.iter().any(|o| self.peek_kw(o))
    }

    fn table_options(&mut self) -> AlterSpec {
        let mut charset = None;
        let mut collation = None;
        loop {
            match self.peek() {
                None => break,
                Some(t) if t.is_punct(',') || t.is_punct(';') => break,
                Some(t) if t.is_kw("PARTITION") => break,
                Some(_) => {}
            }
            if let Some((cs, co)) = self.charset_option() {
                charset = cs.or(charset);
                collation = co.or(collation);
                continue;
            }
            if self.peek_punct('(') {
                // UNION=(a,b)
                if self.skip_group().is_err() {
                    break;
                }
            } else {
                self.pos += 1;
            }
        }
        AlterSpec::TableOptions { charset, collation }
    }

    fn alter_spec(&mut self) -> Result<AlterSpec, ParseError> {
        let offset = self.offset();
        let Some(t) = self.peek() else {
            return Err(ParseError::UnexpectedEnd { expected: "an ALTER TABLE clause" });
        };
        let w = if t.kind == TokenKind::Word { t.text.to_ascii_uppercase() } else { String::new() };
        match w.as_str() {
            "ADD" => {
                self.pos += 1;
                self.alter_add()
            }
            "DROP" => {
                self.pos += 1;
                self.alter_drop()
            }
            "MODIFY" => {
                self.pos += 1;
                self.eat_kw("COLUMN");
                let if_exists = self.if_exists();
                let column = self.column_spec(true)?;
                Ok(AlterSpec::ModifyColumn { column, if_exists })
            }
            "CHANGE" => {
                self.pos += 1;
                self.eat_kw("COLUMN");
                let if_exists = self.if_exists();
                let old = self.ident()?;
                let column = self.column_spec(true)?;
                Ok(AlterSpec::ChangeColumn { old, column, if_exists })
            }
            "RENAME" => {
                self.pos += 1;
                if self.eat_kw("COLUMN") {
                    self.if_exists();
                    let from = self.ident()?;
                    self.expect_kw("TO")?;
                    let to = self.ident()?;
                    Ok(AlterSpec::RenameColumn { from, to })
                } else if self.eat_kw("INDEX") || self.eat_kw("KEY") {
                    self.skip_item()?;
                    Ok(AlterSpec::NoShapeChange)
                } else {
                    let _ = self.eat_kw("TO") || self.eat_kw("AS");
                    Ok(AlterSpec::RenameTable(self.object_name()?))
                }
            }
            "ALTER" => {
                // ALTER [COLUMN] c SET DEFAULT / DROP DEFAULT / SET [IN]VISIBLE, ALTER INDEX x
                // [IN]VISIBLE, ALTER CHECK|CONSTRAINT x [NOT] ENFORCED.
                self.pos += 1;
                self.skip_item()?;
                Ok(AlterSpec::NoShapeChange)
            }
            "CONVERT" => {
                self.pos += 1;
                self.expect_kw("TO")?;
                match self.charset_option() {
                    Some((charset, co)) => {
                        let mut collation = co;
                        if let Some((_, co)) = self.charset_option() {
                            collation = co.or(collation);
                        }
                        Ok(AlterSpec::ConvertCharset { charset, collation })
                    }
                    None => Err(self.unexpected("CHARACTER SET after CONVERT TO")),
                }
            }
            "ALGORITHM" | "LOCK" | "FORCE" | "ENABLE" | "DISABLE" | "DISCARD" | "IMPORT"
            | "WITH" | "WITHOUT" | "VALIDATION" | "NOWAIT" | "WAIT" => {
                self.pos += 1;
                self.skip_item()?;
                Ok(AlterSpec::NoShapeChange)
            }
            "COALESCE" | "REORGANIZE" | "EXCHANGE" | "ANALYZE" | "CHECK" | "OPTIMIZE"
            | "REBUILD" | "REPAIR" | "TRUNCATE" | "UPGRADE" | "SECONDARY_LOAD"
            | "SECONDARY_UNLOAD" => {
                // Partition maintenance: comma lists of partition names run to the end.
                self.skip_statement();
                Ok(AlterSpec::NoShapeChange)
            }
            _ if self.starts_table_option() => Ok(self.table_options()),
            _ => Err(ParseError::Unsupported {
                what: format!("ALTER TABLE clause `{}`", t.text),
                offset,
            }),
        }
    }

    fn alter_add(&mut self) -> Result<AlterSpec, ParseError> {
        if self.eat_kw("COLUMN") || self.peek_punct('(') || self.peek_kw("IF") {
            let if_not_exists = self.if_not_exists();
            if self.eat_punct('(') {
                let mut columns = Vec::new();
                loop {
                    columns.push(self.column_spec(false)?);
                    if self.eat_punct(',') {
                        continue;
                    }
                    self.expect_punct(')', "`,` or `)` in ADD COLUMN (...)")?;
                    break;
                }
                return Ok(AlterSpec::AddColumns { columns, if_not_exists });
            }
            let col = self.column_spec(true)?;
            return Ok(AlterSpec::AddColumns { columns: vec![col], if_not_exists });
        }
        let mut constraint = false;
        if self.eat_kw("CONSTRAINT") {
            constraint = true;
            self.if_not_exists();
            if !["PRIMARY", "UNIQUE", "FOREIGN", "CHECK"].iter().any(|k| self.peek_kw(k)) {
                self.ident()?;
            }
        }
        if self.eat_kw("PRIMARY") {
            self.expect_kw("KEY")?;
            let cols = self.key_parts()?;
            self.skip_item()?;
            return Ok(AlterSpec::AddPrimaryKey(cols));
        }
        if ["UNIQUE", "INDEX", "KEY", "FULLTEXT", "SPATIAL"].iter().any(|k| self.peek_kw(k)) {
            self.skip_item()?;
            return Ok(AlterSpec::AddIndex);
        }
        if ["FOREIGN", "CHECK"].iter().any(|k| self.peek_kw(k)) || constraint {
            self.skip_item()?;
            return Ok(AlterSpec::AddConstraint);
        }
        if self.peek_kw("PARTITION") || self.at_versioning() {
            self.skip_item()?;
            return Ok(AlterSpec::NoShapeChange);
        }
        let col = self.column_spec(true)?;
        Ok(AlterSpec::AddColumns { columns: vec![col], if_not_exists: false })
    }

    /// MariaDB `PERIOD FOR ...` / `SYSTEM VERSIONING`. Both words are unreserved, so `ADD system
    /// INT` still adds a column.
    fn at_versioning(&self) -> bool {
        (self.peek_kw("PERIOD") && self.peek_kw_n(1, "FOR"))
            || (self.peek_kw("SYSTEM") && self.peek_kw_n(1, "VERSIONING"))
    }

    fn alter_drop(&mut self) -> Result<AlterSpec, ParseError> {
        if self.eat_kws(&["PRIMARY", "KEY"]) {
            return Ok(AlterSpec::DropPrimaryKey);
        }
        if self.eat_kw("INDEX") || self.eat_kw("KEY") {
            self.if_exists();
            let name = self.ident()?;
            return Ok(AlterSpec::DropIndex { primary: name.eq_ignore_ascii_case("PRIMARY") });
        }
        if self.eat_kw("CONSTRAINT") {
            self.if_exists();
            let name = self.ident()?;
            return Ok(AlterSpec::DropIndex { primary: name.eq_ignore_ascii_case("PRIMARY") });
        }
        if self.peek_kw("FOREIGN") || self.peek_kw("CHECK") || self.at_versioning() {
            self.skip_item()?;
            return Ok(AlterSpec::NoShapeChange);
        }
        if self.peek_kw("PARTITION") {
            self.skip_statement();
            return Ok(AlterSpec::NoShapeChange);
        }
        self.eat_kw("COLUMN");
        let if_exists = self.if_exists();
        let name = self.ident()?;
        // `DROP COLUMN c RESTRICT|CASCADE` is accepted and ignored by MySQL.
        let _ = self.eat_kw("RESTRICT") || self.eat_kw("CASCADE");
        Ok(AlterSpec::DropColumn { name, if_exists })
    }

    fn drop(&mut self) -> Result<Statement, ParseError> {
        let start = self.pos;
        self.pos += 1; // DROP
        let temporary = self.eat_kw("TEMPORARY");
        if self.eat_kw("TABLE") || self.eat_kw("TABLES") {
            self.if_exists();
            let mut names = vec![self.object_name()?];
            while self.eat_punct(',') {
                names.push(self.object_name()?);
            }
            self.skip_wait();
            let _ = self.eat_kw("RESTRICT") || self.eat_kw("CASCADE");
            return Ok(Statement::DropTable { names, temporary });
        }
        if self.eat_kw("DATABASE") || self.eat_kw("SCHEMA") {
            self.if_exists();
            return Ok(Statement::DropDatabase(self.ident()?));
        }
        let _ = self.eat_kw("ONLINE") || self.eat_kw("OFFLINE");
        if self.eat_kw("INDEX") {
            self.if_exists();
            let idx = self.ident()?;
            self.expect_kw("ON")?;
            let table = self.object_name()?;
            self.skip_statement();
            return Ok(Statement::DropIndex {
                table,
                primary: idx.eq_ignore_ascii_case("PRIMARY"),
            });
        }
        self.pos = start;
        Ok(self.other("DROP".to_owned()))
    }

    fn rename_table(&mut self) -> Result<Statement, ParseError> {
        self.if_exists();
        let mut pairs = Vec::new();
        loop {
            let from = self.object_name()?;
            self.skip_wait();
            self.expect_kw("TO")?;
            let to = self.object_name()?;
            pairs.push((from, to));
            if !self.eat_punct(',') {
                break;
            }
        }
        Ok(Statement::RenameTable(pairs))
    }

    fn dml(&mut self, kw: &str) -> Result<Statement, ParseError> {
        self.pos += 1;
        for m in ["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "QUICK", "IGNORE"] {
            self.eat_kw(m);
        }
        if kw == "DELETE" {
            self.eat_kw("FROM");
        } else if kw != "UPDATE" {
            self.eat_kw("INTO");
        }
        let name = self.object_name()?;
        self.skip_statement();
        Ok(match kw {
            "INSERT" => Statement::Insert(name),
            "REPLACE" => Statement::Replace(name),
            "UPDATE" => Statement::Update(name),
            _ => Statement::Delete(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut v = parse_statements(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(v.len(), 1, "{sql}");
        v.remove(0)
    }

    fn columns(sql: &str) -> Vec<ColumnSpec> {
        match one(sql) {
            Statement::CreateTable { body: CreateBody::Columns { columns, .. }, .. } => columns,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_table_types_and_keys() {
        let sql = "CREATE TABLE IF NOT EXISTS `d`.`t` (\n  `id` int(11) unsigned NOT NULL AUTO_INCREMENT COMMENT 'x, y',\n  `name` varchar(20) CHARACTER SET latin1 COLLATE latin1_bin DEFAULT 'a,b',\n  price DECIMAL(10, 2) DEFAULT -1.5,\n  ts timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),\n  e ENUM('a','it''s') DEFAULT NULL,\n  g INT GENERATED ALWAYS AS (id + 1) STORED,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`name`(10)),\n  CONSTRAINT fk FOREIGN KEY (id) REFERENCES o (id) ON DELETE CASCADE\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='t'";
        match one(sql) {
            Statement::CreateTable {
                name,
                if_not_exists,
                body: CreateBody::Columns { columns, primary_key, charset, .. },
                ..
            } => {
                assert_eq!(name, ObjectName { schema: Some("d".into()), name: "t".into() });
                assert!(if_not_exists);
                assert_eq!(primary_key, vec!["id"]);
                assert_eq!(charset.as_deref(), Some("utf8mb4"));
                let types: Vec<_> = columns.iter().map(|c| c.def.mysql_type.as_str()).collect();
                assert_eq!(
                    types,
                    [
                        "int(11) unsigned",
                        "varchar(20)",
                        "decimal(10,2)",
                        "timestamp(3)",
                        "enum('a','it''s')",
                        "int"
                    ]
                );
                assert_eq!(columns[1].def.charset.as_deref(), Some("latin1"));
                assert_eq!(columns[1].def.collation.as_deref(), Some("latin1_bin"));
                assert!(!columns[0].def.nullable);
                assert!(columns[0].def.auto_increment);
                assert_eq!(columns[4].def.values, vec!["a", "it's"]);
                assert_eq!(columns[5].def.generated, Some(Generated::Stored));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn synonyms_and_inline_key() {
        let cols = columns(
            "create table t (a INTEGER KEY, b BOOL, c NUMERIC, d DOUBLE PRECISION, e NATIONAL CHAR VARYING(5), f SERIAL, g LONG VARBINARY, h CHAR(3) CHARACTER SET binary, i VARCHAR(4) BINARY)",
        );
        let types: Vec<_> = cols.iter().map(|c| c.def.mysql_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "int",
                "tinyint(1)",
                "decimal(10,0)",
                "double",
                "varchar(5)",
                "bigint unsigned",
                "mediumblob",
                "binary(3)",
                "varchar(4)"
            ]
        );
        assert!(cols[0].inline_primary_key);
        assert_eq!(cols[4].def.charset.as_deref(), Some("utf8mb3"));
        assert!(cols[5].def.auto_increment && !cols[5].def.nullable);
    }

    #[test]
    fn alter_specs() {
        let st = one(
            "ALTER TABLE t ADD COLUMN a INT FIRST, ADD b INT AFTER a, DROP c, MODIFY d TEXT, CHANGE e f INT, RENAME COLUMN g TO h, ADD INDEX i (a), DROP KEY j, ADD PRIMARY KEY (a), DROP PRIMARY KEY, RENAME TO u, ALGORITHM=INPLACE, LOCK=NONE, ENGINE=InnoDB DEFAULT CHARSET=latin1",
        );
        let Statement::AlterTable { specs, .. } = st else { panic!() };
        assert_eq!(specs.len(), 14, "{specs:#?}");
        assert!(
            matches!(&specs[0], AlterSpec::AddColumns { columns, .. } if columns[0].position == Some(ColumnPosition::First))
        );
        assert!(
            matches!(&specs[13], AlterSpec::TableOptions { charset: Some(c), .. } if c == "latin1")
        );
    }

    #[test]
    fn partition_clause_runs_to_end() {
        let st = one(
            "ALTER TABLE t ADD COLUMN x INT, PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN MAXVALUE)",
        );
        let Statement::AlterTable { specs, .. } = st else { panic!() };
        assert_eq!(specs.len(), 2);
    }

    #[test]
    fn unknown_alter_clause_is_typed_error() {
        let err = parse_statements("ALTER TABLE t FROBNICATE x").unwrap_err();
        assert!(matches!(err, ParseError::Unsupported { .. }), "{err}");
    }
}
