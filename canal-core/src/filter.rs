//! Canal's table and column filters (docs/protocol.md#filters): comma-separated, case-insensitive, full-match regexes
//! over `schema.table`, and per-table column white/black lists.
//!
//! Java Canal compiles a list by splitting on commas that are not inside `{}`, `[]`, `()` and not
//! escaped, sorting the patterns longest first, wrapping each as `^p$` and joining with `|`; the
//! target is lower-cased and the regex is case-insensitive. We do the same with the `regex` crate;
//! Perl-only constructs it lacks (back-references, look-around) are rejected with a typed error at
//! configuration time instead of failing later.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

/// A filter expression could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// One pattern of the list is not a valid regex (or uses a Perl-only construct).
    #[error("invalid filter pattern {pattern:?}: {source}")]
    Pattern {
        /// The offending pattern, as split from the list.
        pattern: String,
        /// What the regex compiler said.
        #[source]
        source: regex::Error,
    },
    /// A field-filter item is not of the form `schema.table:col1/col2`.
    #[error("invalid field filter item {0:?}: expected `schema.table:col1/col2`")]
    FieldItem(String),
}

/// Splits a filter list on top-level, unescaped commas (commas inside `{}`, `[]`, `()` or written
/// `\,` stay in the pattern). Empty items are dropped and items are trimmed.
pub fn split_patterns(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut escaped = false;
    for ch in list.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
            continue;
        }
        match ch {
            '\\' => {
                cur.push(ch);
                escaped = true;
            }
            '{' | '[' | '(' => {
                depth += 1;
                cur.push(ch);
            }
            '}' | ']' | ')' => {
                depth = depth.saturating_sub(1);
                cur.push(ch);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// A compiled table filter (`canal.instance.filter.regex` or `.black.regex`).
#[derive(Clone, Debug)]
pub struct TableFilter {
    source: String,
    regex: Option<Regex>,
    /// What an empty filter or an empty target answers: `true` for white lists, `false` for black
    /// lists, as Java Canal builds them.
    empty_matches: bool,
}

impl TableFilter {
    /// A white list: empty accepts everything.
    ///
    /// # Errors
    /// [`FilterError::Pattern`] naming the first pattern that does not compile.
    pub fn white(list: &str) -> Result<Self, FilterError> {
        Self::build(list, true)
    }

    /// A black list: empty blocks nothing.
    ///
    /// # Errors
    /// [`FilterError::Pattern`] naming the first pattern that does not compile.
    pub fn black(list: &str) -> Result<Self, FilterError> {
        Self::build(list, false)
    }

    fn empty(empty_matches: bool) -> Self {
        Self { source: String::new(), regex: None, empty_matches }
    }

    fn build(list: &str, empty_matches: bool) -> Result<Self, FilterError> {
        let mut patterns = split_patterns(list);
        for p in &patterns {
            Regex::new(&format!("^(?:{p})$"))
                .map_err(|source| FilterError::Pattern { pattern: p.clone(), source })?;
        }
        // Longest first, as Canal does, so that alternation order never hides a longer pattern.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let regex = if patterns.is_empty() {
            None
        } else {
            let joined: Vec<String> = patterns.iter().map(|p| format!("^(?:{p})$")).collect();
            let re = Regex::new(&format!("(?i){}", joined.join("|")))
                .map_err(|source| FilterError::Pattern { pattern: list.to_owned(), source })?;
            Some(re)
        };
        Ok(Self { source: list.to_owned(), regex, empty_matches })
    }

    /// The list as configured.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the filter has no pattern.
    pub fn is_empty(&self) -> bool {
        self.regex.is_none()
    }

    /// Whether `schema.table` matches (full match, case-insensitive).
    pub fn matches(&self, name: &str) -> bool {
        match &self.regex {
            None => self.empty_matches,
            Some(_) if name.is_empty() => self.empty_matches,
            Some(re) => re.is_match(&name.to_lowercase()),
        }
    }
}

/// The white list and black list of a destination together: an entry is kept iff the white list
/// matches and the black list does not. A client's subscription filter replaces the white list.
#[derive(Clone, Debug)]
pub struct NameFilter {
    white: TableFilter,
    black: TableFilter,
}

impl NameFilter {
    /// Both lists from their configured text.
    ///
    /// # Errors
    /// [`FilterError::Pattern`] for a pattern that does not compile.
    pub fn new(white: &str, black: &str) -> Result<Self, FilterError> {
        Ok(Self { white: TableFilter::white(white)?, black: TableFilter::black(black)? })
    }

    /// Accept everything.
    pub fn accept_all() -> Self {
        Self { white: TableFilter::empty(true), black: TableFilter::empty(false) }
    }

    /// Whether `schema`.`table` passes.
    pub fn accepts(&self, schema: &str, table: &str) -> bool {
        let mut name = String::with_capacity(schema.len() + table.len() + 1);
        name.push_str(schema);
        name.push('.');
        name.push_str(table);
        self.white.matches(&name) && !self.black.matches(&name)
    }

    /// Replaces the white list (a client's non-empty subscription filter); an empty `white` keeps
    /// the current one, as Java Canal does.
    ///
    /// # Errors
    /// [`FilterError::Pattern`] for a pattern that does not compile; the filter is unchanged then.
    pub fn with_white(&self, white: &str) -> Result<Self, FilterError> {
        if white.trim().is_empty() {
            return Ok(self.clone());
        }
        Ok(Self { white: TableFilter::white(white)?, black: self.black.clone() })
    }

    /// The white list.
    pub fn white(&self) -> &TableFilter {
        &self.white
    }

    /// The black list.
    pub fn black(&self) -> &TableFilter {
        &self.black
    }
}

/// Per-table column lists (`canal.instance.filter.field` / `.black.field`): `schema.table:c1/c2`
/// items separated by commas. Keys and names are compared upper-cased, as Canal does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldFilter {
    white: BTreeMap<String, BTreeSet<String>>,
    black: BTreeMap<String, BTreeSet<String>>,
}

fn parse_field_list(list: &str) -> Result<BTreeMap<String, BTreeSet<String>>, FilterError> {
    let mut map = BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (table, cols) =
            item.split_once(':').ok_or_else(|| FilterError::FieldItem(item.to_owned()))?;
        let table = table.trim();
        if table.is_empty() || !table.contains('.') {
            return Err(FilterError::FieldItem(item.to_owned()));
        }
        let cols: BTreeSet<String> =
            cols.split('/').map(|c| c.trim().to_uppercase()).filter(|c| !c.is_empty()).collect();
        map.insert(table.to_uppercase(), cols);
    }
    Ok(map)
}

impl FieldFilter {
    /// Both lists from their configured text.
    ///
    /// # Errors
    /// [`FilterError::FieldItem`] for an item without `schema.table:`.
    pub fn new(white: &str, black: &str) -> Result<Self, FilterError> {
        Ok(Self { white: parse_field_list(white)?, black: parse_field_list(black)? })
    }

    /// Whether no table has a column list.
    pub fn is_empty(&self) -> bool {
        self.white.is_empty() && self.black.is_empty()
    }

    /// Whether column `column` of `schema.table` is kept: a white list for the table keeps only
    /// its columns; otherwise a black list removes its columns.
    pub fn keeps(&self, schema: &str, table: &str, column: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        let key = format!("{schema}.{table}").to_uppercase();
        let col = column.to_uppercase();
        if let Some(cols) = self.white.get(&key) {
            return cols.contains(&col);
        }
        match self.black.get(&key) {
            Some(cols) => !cols.contains(&col),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_canal() {
        assert_eq!(split_patterns(r"canal\..*,mysql.test1"), vec![r"canal\..*", "mysql.test1"]);
        assert_eq!(split_patterns(r"db\.t_\d{1,2}, x\.(a,b)"), vec![r"db\.t_\d{1,2}", r"x\.(a,b)"]);
        assert_eq!(split_patterns(r"a\,b,c"), vec![r"a\,b", "c"]);
        assert_eq!(split_patterns(" , ,"), Vec::<String>::new());
    }

    #[test]
    fn white_list_semantics() {
        let all = TableFilter::white(r".*\..*").unwrap();
        assert!(all.matches("db.t"));
        let f = TableFilter::white(r"canal\..*,mysql.test1").unwrap();
        assert!(f.matches("canal.x"));
        assert!(f.matches("CANAL.X"), "case-insensitive");
        assert!(f.matches("mysqlxtest1"), "unescaped dot matches any char");
        assert!(!f.matches("canal"), "full match only");
        assert!(!f.matches("other.canal.x"));
        assert!(TableFilter::white("").unwrap().matches("any.thing"));
        assert!(f.matches(""), "empty target is accepted by a white list");
    }

    #[test]
    fn black_list_semantics() {
        let b = TableFilter::black(r"mysql\.slave_.*").unwrap();
        assert!(b.matches("mysql.slave_master_info"));
        assert!(!b.matches("db.t"));
        assert!(
            !TableFilter::black("").unwrap().matches("db.t"),
            "empty black list blocks nothing"
        );
        let nf = NameFilter::new(r".*\..*", r"mysql\.slave_.*").unwrap();
        assert!(nf.accepts("db", "t"));
        assert!(!nf.accepts("mysql", "slave_relay_log_info"));
    }

    #[test]
    fn subscription_replaces_white_only() {
        let nf = NameFilter::new(r"a\..*", r"a\.secret").unwrap();
        assert!(!nf.accepts("b", "t"));
        let sub = nf.with_white(r".*\..*").unwrap();
        assert!(sub.accepts("b", "t"));
        assert!(!sub.accepts("a", "secret"), "black list is never overridden");
        assert!(
            !nf.with_white("").unwrap().accepts("b", "t"),
            "empty filter keeps the configured one"
        );
    }

    #[test]
    fn bad_patterns_are_typed_errors() {
        let err = TableFilter::white(r"ok\..*,bad(").unwrap_err();
        assert!(
            matches!(err, FilterError::Pattern { ref pattern, .. } if pattern == "bad("),
            "{err}"
        );
        assert!(TableFilter::white(r"(a)\1").is_err(), "back-references are rejected, not misread");
    }

    #[test]
    fn field_filters() {
        let f = FieldFilter::new("db.t:id/name", "db.u:secret").unwrap();
        assert!(f.keeps("db", "t", "ID"));
        assert!(!f.keeps("db", "t", "other"));
        assert!(!f.keeps("DB", "U", "secret"));
        assert!(f.keeps("db", "u", "id"));
        assert!(f.keeps("x", "y", "z"));
        assert!(matches!(FieldFilter::new("nocolon", ""), Err(FilterError::FieldItem(_))));
    }
}
