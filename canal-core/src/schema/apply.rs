//! Applies parsed DDL to a catalog view, producing the new state of every table it touches.
//! Pure: the history decides where the view comes from and where the result goes.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;

use super::model::{ColumnDef, TableDef, TableName, TableState};
use super::parser::{
    AlterSpec, ColumnPosition, ColumnSpec, CreateBody, ObjectName, ParseError, Statement,
};

/// Why a DDL could not be applied exactly; the tables involved become
/// [`TableState::Unknown`] and must be refreshed from the source.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The statement could not be parsed.
    #[error("cannot parse DDL: {0}")]
    Parse(#[from] ParseError),
    /// The DDL changes a table the history has no definition for (created before the history
    /// started and not in a snapshot, or left unknown by an earlier DDL).
    #[error("table {0} is not known to the schema history")]
    UnknownTable(TableName),
    /// A column the DDL refers to does not exist.
    #[error("column `{column}` does not exist in {table}")]
    MissingColumn {
        /// The table.
        table: TableName,
        /// The column.
        column: String,
    },
    /// ADD or CHANGE would create a second column with the same name.
    #[error("column `{column}` already exists in {table}")]
    DuplicateColumn {
        /// The table.
        table: TableName,
        /// The column.
        column: String,
    },
}

/// Read access to the table states in force where a DDL applies.
pub(crate) trait CatalogView {
    /// The state of a table, or `None` when the history never heard of it.
    fn state(&self, name: &TableName) -> Option<TableState>;
    /// Names of the tables of `schema` that exist (known or unknown).
    fn tables_in(&self, schema: &str) -> Vec<TableName>;
}

/// The result of applying one QUERY event.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// New state of every touched table.
    pub changes: BTreeMap<TableName, TableState>,
    /// Problems; the tables concerned are `Unknown` in `changes`.
    pub problems: Vec<ApplyError>,
}

pub(crate) struct Ctx<'a> {
    pub default_db: &'a str,
    /// `lower_case_table_names`: fold schema and table names to lower case.
    pub lower: bool,
}

impl Ctx<'_> {
    pub(crate) fn fold(&self, s: &str) -> String {
        if self.lower { s.to_lowercase() } else { s.to_owned() }
    }

    fn key(&self, o: &ObjectName) -> TableName {
        TableName::new(
            self.fold(o.schema.as_deref().unwrap_or(self.default_db)),
            self.fold(&o.name),
        )
    }
}

struct Overlay<'v> {
    base: &'v dyn CatalogView,
    pending: BTreeMap<TableName, TableState>,
}

impl Overlay<'_> {
    fn get(&self, name: &TableName) -> Option<TableState> {
        self.pending.get(name).cloned().or_else(|| self.base.state(name))
    }

    fn set(&mut self, name: TableName, state: TableState) {
        self.pending.insert(name, state);
    }
}

/// Applies `statements` (one QUERY event) on top of `view`.
pub(crate) fn apply(statements: &[Statement], ctx: &Ctx<'_>, view: &dyn CatalogView) -> Applied {
    let mut ov = Overlay { base: view, pending: BTreeMap::new() };
    let mut problems = Vec::new();
    for st in statements {
        apply_one(st, ctx, &mut ov, &mut problems);
    }
    // Drop no-op entries so that replays and index-only DDL leave no versions behind.
    let changes = ov
        .pending
        .into_iter()
        .filter(|(name, state)| view.state(name).as_ref() != Some(state))
        .collect();
    Applied { changes, problems }
}

fn build_table(name: &TableName, body: &CreateBody) -> Option<TableDef> {
    let CreateBody::Columns { columns, primary_key, charset, collation } = body else {
        return None;
    };
    let mut pk = primary_key.clone();
    if pk.is_empty() {
        pk = columns.iter().filter(|c| c.inline_primary_key).map(|c| c.def.name.clone()).collect();
    }
    let mut def = TableDef {
        schema: name.schema.clone(),
        name: name.table.clone(),
        columns: columns.iter().map(|c| c.def.clone()).collect(),
        primary_key: pk,
        charset: charset.clone(),
        collation: collation.clone(),
    };
    def.sync_primary_key();
    Some(def)
}

/// A table definition built from one CREATE TABLE statement (a snapshot's `SHOW CREATE TABLE`).
pub(crate) fn table_from_create(st: &Statement, schema: &str, lower: bool) -> Option<TableDef> {
    let Statement::CreateTable { name, body, .. } = st else { return None };
    let ctx = Ctx { default_db: schema, lower };
    build_table(&ctx.key(name), body)
}

fn renamed(def: &TableDef, to: &TableName) -> TableDef {
    let mut d = def.clone();
    d.schema.clone_from(&to.schema);
    d.name.clone_from(&to.table);
    d
}

fn apply_one(st: &Statement, ctx: &Ctx<'_>, ov: &mut Overlay<'_>, problems: &mut Vec<ApplyError>) {
    match st {
        // Temporary tables shadow real ones only in their session and their rows are not logged
        // in ROW format, so they never enter the history.
        Statement::CreateTable { temporary: true, .. }
        | Statement::DropTable { temporary: true, .. } => {}
        Statement::CreateTable { name, if_not_exists, or_replace, body, .. } => {
            let key = ctx.key(name);
            let exists =
                matches!(ov.get(&key), Some(TableState::Known { .. } | TableState::Unknown));
            if exists && *if_not_exists && !*or_replace {
                return;
            }
            let state = match body {
                CreateBody::Like(src) => match ov.get(&ctx.key(src)) {
                    Some(TableState::Known { def }) => {
                        TableState::Known { def: Arc::new(renamed(&def, &key)) }
                    }
                    _ => {
                        problems.push(ApplyError::UnknownTable(ctx.key(src)));
                        TableState::Unknown
                    }
                },
                CreateBody::Select => TableState::Unknown,
                CreateBody::Columns { .. } => match build_table(&key, body) {
                    Some(def) => TableState::Known { def: Arc::new(def) },
                    None => TableState::Unknown,
                },
            };
            ov.set(key, state);
        }
        Statement::AlterTable { name, specs } => alter(ctx.key(name), specs, ctx, ov, problems),
        Statement::DropTable { names, .. } => {
            for n in names {
                ov.set(ctx.key(n), TableState::Dropped);
            }
        }
        Statement::RenameTable(pairs) => {
            for (from, to) in pairs {
                let (from, to) = (ctx.key(from), ctx.key(to));
                let state = match ov.get(&from) {
                    Some(TableState::Known { def }) => {
                        TableState::Known { def: Arc::new(renamed(&def, &to)) }
                    }
                    Some(TableState::Unknown) => TableState::Unknown,
                    _ => {
                        problems.push(ApplyError::UnknownTable(from.clone()));
                        TableState::Unknown
                    }
                };
                ov.set(from, TableState::Dropped);
                ov.set(to, state);
            }
        }
        Statement::DropIndex { table, primary: true } => {
            alter(ctx.key(table), &[AlterSpec::DropPrimaryKey], ctx, ov, problems)
        }
        Statement::DropDatabase(db) => {
            let db = ctx.fold(db);
            let mut names = ov.base.tables_in(&db);
            names.extend(ov.pending.keys().filter(|k| k.schema == db).cloned());
            for n in names {
                ov.set(n, TableState::Dropped);
            }
        }
        Statement::Truncate(_)
        | Statement::CreateIndex(_)
        | Statement::DropIndex { .. }
        | Statement::CreateDatabase(_)
        | Statement::Insert(_)
        | Statement::Replace(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Other(_) => {}
    }
}

fn alter(
    key: TableName,
    specs: &[AlterSpec],
    ctx: &Ctx<'_>,
    ov: &mut Overlay<'_>,
    problems: &mut Vec<ApplyError>,
) {
    let rename_to = specs.iter().rev().find_map(|s| match s {
        AlterSpec::RenameTable(to) => Some(ctx.key(to)),
        _ => None,
    });
    let target = rename_to.clone().unwrap_or_else(|| key.clone());
    let state = match ov.get(&key) {
        Some(TableState::Known { def }) => {
            let mut def = (*def).clone();
            match alter_def(&mut def, &key, specs) {
                Ok(()) => {
                    def.schema.clone_from(&target.schema);
                    def.name.clone_from(&target.table);
                    TableState::Known { def: Arc::new(def) }
                }
                Err(e) => {
                    problems.push(e);
                    TableState::Unknown
                }
            }
        }
        Some(TableState::Unknown) => TableState::Unknown,
        Some(TableState::Dropped) | None => {
            let shape_change = specs.iter().any(|s| {
                !matches!(
                    s,
                    AlterSpec::AddIndex
                        | AlterSpec::DropIndex { primary: false }
                        | AlterSpec::AddConstraint
                        | AlterSpec::NoShapeChange
                        | AlterSpec::TableOptions { .. }
                )
            });
            if !shape_change && rename_to.is_none() {
                // An index-only change to a table we never tracked tells us nothing.
                return;
            }
            problems.push(ApplyError::UnknownTable(key.clone()));
            TableState::Unknown
        }
    };
    if rename_to.is_some() && target != key {
        ov.set(key, TableState::Dropped);
    }
    ov.set(target, state);
}

fn find(def: &TableDef, table: &TableName, name: &str) -> Result<usize, ApplyError> {
    def.column_index(name)
        .ok_or_else(|| ApplyError::MissingColumn { table: table.clone(), column: name.to_owned() })
}

fn place(
    def: &mut TableDef,
    table: &TableName,
    col: ColumnDef,
    at: Option<&ColumnPosition>,
    default: usize,
) -> Result<(), ApplyError> {
    let idx = match at {
        None => default,
        Some(ColumnPosition::First) => 0,
        Some(ColumnPosition::After(a)) => find(def, table, a)? + 1,
    };
    def.columns.insert(idx.min(def.columns.len()), col);
    Ok(())
}

fn set_inline_pk(def: &mut TableDef, spec: &ColumnSpec) {
    if spec.inline_primary_key {
        def.primary_key = vec![spec.def.name.clone()];
    }
}

fn alter_def(def: &mut TableDef, table: &TableName, specs: &[AlterSpec]) -> Result<(), ApplyError> {
    for spec in specs {
        match spec {
            AlterSpec::AddColumns { columns, if_not_exists } => {
                for c in columns {
                    if def.column_index(&c.def.name).is_some() {
                        if *if_not_exists {
                            continue;
                        }
                        return Err(ApplyError::DuplicateColumn {
                            table: table.clone(),
                            column: c.def.name.clone(),
                        });
                    }
                    let end = def.columns.len();
                    place(def, table, c.def.clone(), c.position.as_ref(), end)?;
                    set_inline_pk(def, c);
                }
            }
            AlterSpec::DropColumn { name, if_exists } => match def.column_index(name) {
                Some(i) => {
                    def.columns.remove(i);
                }
                None if *if_exists => {}
                None => {
                    return Err(ApplyError::MissingColumn {
                        table: table.clone(),
                        column: name.clone(),
                    });
                }
            },
            AlterSpec::ModifyColumn { column, if_exists }
            | AlterSpec::ChangeColumn { column, if_exists, .. } => {
                let old = match spec {
                    AlterSpec::ChangeColumn { old, .. } => old,
                    _ => &column.def.name,
                };
                let Some(i) = def.column_index(old) else {
                    if *if_exists {
                        continue;
                    }
                    return Err(ApplyError::MissingColumn {
                        table: table.clone(),
                        column: old.clone(),
                    });
                };
                let new_name = &column.def.name;
                if !new_name.eq_ignore_ascii_case(old) && def.column_index(new_name).is_some() {
                    return Err(ApplyError::DuplicateColumn {
                        table: table.clone(),
                        column: new_name.clone(),
                    });
                }
                def.columns.remove(i);
                place(def, table, column.def.clone(), column.position.as_ref(), i)?;
                for k in &mut def.primary_key {
                    if k.eq_ignore_ascii_case(old) {
                        k.clone_from(new_name);
                    }
                }
                set_inline_pk(def, column);
            }
            AlterSpec::RenameColumn { from, to } => {
                let i = find(def, table, from)?;
                if !to.eq_ignore_ascii_case(from) && def.column_index(to).is_some() {
                    return Err(ApplyError::DuplicateColumn {
                        table: table.clone(),
                        column: to.clone(),
                    });
                }
                def.columns[i].name.clone_from(to);
                for k in &mut def.primary_key {
                    if k.eq_ignore_ascii_case(from) {
                        k.clone_from(to);
                    }
                }
            }
            AlterSpec::AddPrimaryKey(cols) => {
                for c in cols {
                    find(def, table, c)?;
                }
                def.primary_key.clone_from(cols);
            }
            AlterSpec::DropPrimaryKey | AlterSpec::DropIndex { primary: true } => {
                def.primary_key.clear()
            }
            AlterSpec::ConvertCharset { charset, collation } => {
                // Character columns take the new charset. MySQL may also widen TEXT types to keep
                // their capacity in characters; that is not modelled (mysql_type keeps the old name).
                for c in &mut def.columns {
                    if super::types::is_textual(&c.data_type) {
                        if charset.is_some() {
                            c.charset.clone_from(charset);
                        }
                        c.collation.clone_from(collation);
                    }
                }
                if charset.is_some() {
                    def.charset.clone_from(charset);
                }
                def.collation.clone_from(collation);
            }
            AlterSpec::TableOptions { charset, collation } => {
                if charset.is_some() {
                    def.charset.clone_from(charset);
                }
                if collation.is_some() {
                    def.collation.clone_from(collation);
                }
            }
            AlterSpec::RenameTable(_)
            | AlterSpec::AddIndex
            | AlterSpec::DropIndex { primary: false }
            | AlterSpec::AddConstraint
            | AlterSpec::NoShapeChange => {}
        }
        def.sync_primary_key();
    }
    Ok(())
}
