//! Schema history and DDL parser: real-world DDL from the shared fixtures (the MariaDB workload
//! script, QUERY events of every `mysqlbinlog` sidecar, and the server's own FULL row metadata as
//! an oracle), ALTER sequences, position-versioned lookups, persistence and corruption handling,
//! and property tests against a simple column-list model.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use canal_core::schema::{
    ApplyError, HistoryError, HistoryOptions, Lookup, QueryEventType, SchemaHistory,
    SchemaPosition, SnapshotTable, TableDef, parse_query, tokenize,
};
use proptest::prelude::*;

use crate::support;

// ---------------------------------------------------------------------------------------------
// helpers

/// A fresh directory under the system temp dir (removed at the end of the test when it passes).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "canal-schema-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn pos(file: &str, offset: u64) -> SchemaPosition {
    SchemaPosition::new(file, offset)
}

fn names(def: &TableDef) -> Vec<&str> {
    def.columns.iter().map(|c| c.name.as_str()).collect()
}

fn mem() -> SchemaHistory {
    SchemaHistory::new(HistoryOptions::default())
}

/// Splits a SQL script into statements at `;` outside quotes and comments.
fn split_script(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                cur.push(c);
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == '\\' && c != '`' {
                        if let Some(e) = chars.next() {
                            cur.push(e);
                        }
                    } else if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                cur.push('\n');
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                cur.push('\n');
            }
            ';' => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_owned());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// A QUERY event of a `mysqlbinlog` text dump: start offset, current database, statement text.
#[derive(Debug)]
struct QueryEvent {
    offset: u64,
    db: String,
    sql: String,
}

/// Extracts the QUERY events of a `mysqlbinlog -v` dump. Each event's block holds `use db`, `SET`
/// lines and finally the statement, each terminated by the `/*!*/;` delimiter.
fn query_events(text: &str) -> Vec<QueryEvent> {
    let mut out = Vec::new();
    let mut db = String::new();
    let mut offset = 0u64;
    let mut in_query = false;
    let mut body = String::new();
    let mut flush = |body: &mut String, offset: u64, in_query: bool, db: &mut String| {
        if in_query {
            for chunk in body.split("/*!*/;") {
                let stmt = chunk.trim();
                if let Some(rest) = stmt.strip_prefix("use ") {
                    *db = rest.trim().trim_matches('`').to_owned();
                    continue;
                }
                if stmt.is_empty()
                    || stmt.starts_with("SET ")
                    || stmt.starts_with("/*!\\C")
                    || stmt.starts_with("/*M!")
                    || stmt.starts_with('#')
                {
                    continue;
                }
                out.push(QueryEvent { offset, db: db.clone(), sql: stmt.to_owned() });
            }
        }
        body.clear();
    };
    for line in text.lines() {
        if let Some(at) = line.strip_prefix("# at ") {
            flush(&mut body, offset, in_query, &mut db);
            offset = at.trim().parse().unwrap_or(0);
            in_query = false;
            continue;
        }
        if line.starts_with('#')
            && (line.contains("\tQuery\t") || line.contains("\tQuery_compressed\t"))
        {
            in_query = true;
            continue;
        }
        if in_query && !line.starts_with('#') {
            body.push_str(line);
            body.push('\n');
        }
    }
    flush(&mut body, offset, in_query, &mut db);
    out
}

fn is_transaction_control(sql: &str) -> bool {
    let up = sql.trim().to_ascii_uppercase();
    up == "BEGIN"
        || up == "COMMIT"
        || up.starts_with("XA ")
        || up.starts_with("SAVEPOINT")
        || up.starts_with("ROLLBACK")
}

fn sidecars(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sidecars(&p, out);
        } else if p.to_string_lossy().ends_with(".mysqlbinlog.txt") {
            out.push(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// real-world corpus

#[test]
fn mariadb_workload_script_parses_and_replays() {
    let Some(path) =
        support::shared_file("fixtures/binlog/mariadb-10.11-generated/mariadb-all-types.sql")
    else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    let mut h = mem();
    let mut db = String::new();
    let mut n = 0u64;
    let mut at_before_alter = None;
    for stmt in split_script(&text) {
        n += 1;
        let q = parse_query(&stmt, &db).unwrap_or_else(|e| panic!("{stmt}: {e}"));
        if let Some(rest) = stmt.strip_prefix("USE ") {
            db = rest.trim().to_owned();
        }
        if stmt.starts_with("ALTER TABLE all_types ADD COLUMN") {
            at_before_alter = Some(pos("script.000001", n * 10 - 1));
        }
        let out = h.apply_ddl(&pos("script.000001", n * 10), &db, &stmt).unwrap();
        assert!(out.problems.is_empty(), "{stmt}: {:?}", out.problems);
        if stmt.starts_with("CREATE TABLE") {
            assert_eq!(q.event_type, QueryEventType::Create);
        }
    }
    let end = pos("script.000001", u64::MAX);
    let all = h.table_at("fx", "all_types", &end).expect("all_types");
    let cols = names(&all);
    let i = cols.iter().position(|c| *c == "c_int").unwrap();
    assert_eq!(cols[i + 1], "c_added");
    assert_eq!(*cols.last().unwrap(), "c_added_dec");
    let added = all.column("c_added").unwrap();
    assert_eq!(
        (added.mysql_type.as_str(), added.charset.as_deref()),
        ("varchar(64)", Some("latin1"))
    );
    assert_eq!(all.primary_key, vec!["id"]);
    assert_eq!(all.column("c_bool").unwrap().mysql_type, "tinyint(1)");
    assert_eq!(all.column("c_dec_u").unwrap().mysql_type, "decimal(8,3) unsigned");
    assert!(all.column("c_set64").unwrap().values.len() == 64);
    let before = h.table_at("fx", "all_types", &at_before_alter.unwrap()).unwrap();
    assert!(before.column("c_added").is_none());
    assert_eq!(before.columns.len() + 2, all.columns.len());
    // RENAME TABLE and DROP TABLE in the script.
    assert!(h.table_at("fx", "no_pk_myisam", &end).is_none());
    assert_eq!(names(&h.table_at("fx", "no_pk_myisam_renamed", &end).unwrap()), ["a", "b"]);
    assert!(h.table_at("fx", "tmp_drop", &end).is_none());
    assert_eq!(h.table_at("fx", "order_items", &end).unwrap().primary_key, ["order_id", "line_no"]);
    assert_eq!(h.table_at("fx", "big_enum", &end).unwrap().columns[1].values.len(), 300);
}

#[test]
fn every_mysqlbinlog_sidecar_query_classifies_and_applies() {
    // The vendored sidecars, then those of the fixtures that stay in ../shared.
    let mut files = Vec::new();
    sidecars(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"), &mut files);
    assert!(files.len() >= 15, "vendored sidecars: {files:?}");
    let std_data = "fixtures/binlog/mysql-public/blackbeam__rust_mysql_common";
    for rel in [
        format!("{std_data}/binlog_transaction_with_GTID.000001.mysqlbinlog.txt"),
        format!("{std_data}/binlog_transaction_with_anonymous_GTID.000001.mysqlbinlog.txt"),
        format!("{std_data}/rpl_unfiltered_hidden_gcol.000001.mysqlbinlog.txt"),
        format!("{std_data}/update-partial-row.binlog.mysqlbinlog.txt"),
        format!("{std_data}/write-partial-row.binlog.mysqlbinlog.txt"),
    ]
    .into_iter()
    .chain((1..=6).map(|n| {
        format!("fixtures/binlog/mariadb-10.11-generated/mariadb-bin.00000{n}.mysqlbinlog.txt")
    })) {
        files.extend(support::shared_file(&rel));
    }
    files.sort();
    let n_files = files.len();
    let mut total = 0;
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        let journal = f.file_name().unwrap().to_string_lossy().replace(".mysqlbinlog.txt", "");
        let mut h = mem();
        for ev in query_events(&text) {
            if is_transaction_control(&ev.sql) {
                continue;
            }
            total += 1;
            let q = parse_query(&ev.sql, &ev.db)
                .unwrap_or_else(|e| panic!("{}@{}: {}: {e}", f.display(), ev.offset, ev.sql));
            let out = h.apply_ddl(&pos(&journal, ev.offset), &ev.db, &ev.sql).unwrap();
            for p in &out.problems {
                // Tables created before the file starts are legitimately unknown here.
                assert!(
                    matches!(p, ApplyError::UnknownTable(_)),
                    "{}: {}: {p}",
                    f.display(),
                    ev.sql
                );
            }
            let up = ev.sql.to_ascii_uppercase();
            if up.starts_with("CREATE TABLE") {
                assert_eq!(q.event_type, QueryEventType::Create, "{}", ev.sql);
                assert!(!q.table.is_empty());
            } else if up.starts_with("DROP TABLE") {
                assert_eq!(q.event_type, QueryEventType::Erase, "{}", ev.sql);
            } else if up.starts_with("GRANT")
                || up.starts_with("CREATE USER")
                || up.starts_with("FLUSH")
            {
                assert_eq!(q.event_type, QueryEventType::Query);
            } else if up.starts_with("INSERT") {
                assert_eq!((q.event_type, q.is_ddl), (QueryEventType::Insert, false));
            }
        }
    }
    assert!(total > 50, "only {total} statements found");
    support::oracle_checked(&format!("{total} QUERY statements of {n_files} mysqlbinlog sidecars"));
}

/// Column list of a `# Columns(...)` block of `mysqlbinlog -vv --print-table-metadata`.
fn metadata_columns(lines: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let l = l.trim_start_matches("# Columns(").trim_start_matches('#').trim();
        let mut l = l.trim_end_matches(',');
        if i == lines.len() - 1 {
            l = l.strip_suffix(')').unwrap_or(l);
        }
        let (name, ty) = l.split_once(' ').unwrap();
        out.push((name.trim_matches('`').to_owned(), ty.to_owned()));
    }
    out
}

#[test]
fn history_matches_the_servers_full_row_metadata() {
    let dir = "fixtures/binlog/mariadb-10.11-generated";
    let (Some(ddl), Some(meta)) = (
        support::shared_file(&format!("{dir}/mariadb-bin.000001.mysqlbinlog.txt")),
        support::shared_file(&format!("{dir}/mariadb-bin.000002.mysqlbinlog-vv.txt")),
    ) else {
        return;
    };
    let mut h = mem();
    for ev in query_events(&String::from_utf8_lossy(&std::fs::read(ddl).unwrap())) {
        if !is_transaction_control(&ev.sql) {
            h.apply_ddl(&pos("mariadb-bin.000001", ev.offset), &ev.db, &ev.sql).unwrap();
        }
    }
    let text = String::from_utf8_lossy(&std::fs::read(meta).unwrap()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut checked = 0;
    let mut offset = 0u64;
    let mut i = 0;
    while i < lines.len() {
        if let Some(at) = lines[i].strip_prefix("# at ") {
            offset = at.trim().parse().unwrap();
        }
        let Some((_, mapped)) = lines[i].split_once("Table_map: ") else {
            i += 1;
            continue;
        };
        let (schema, table) = mapped.split_once(" mapped").unwrap().0.split_once('.').unwrap();
        let (schema, table) = (schema.trim_matches('`'), table.trim_matches('`'));
        let start = i + 1;
        let mut end = start;
        while !lines[end].starts_with("# Primary Key") && !lines[end].starts_with("# at") {
            end += 1;
        }
        let server = metadata_columns(&lines[start..end]);
        let pk: Vec<&str> = lines[end]
            .strip_prefix("# Primary Key(")
            .map(|s| s.trim_end_matches(')').split(',').map(str::trim).collect())
            .unwrap_or_default();
        let def = h
            .table_at(schema, table, &pos("mariadb-bin.000002", offset))
            .unwrap_or_else(|| panic!("{schema}.{table} unknown"));
        assert_eq!(names(&def), server.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>());
        assert_eq!(def.primary_key, pk, "{table}");
        for (col, (_, server_ty)) in def.columns.iter().zip(&server) {
            // MariaDB stores JSON as LONGTEXT, INET4/INET6/UUID as BINARY(n), and its metadata
            // claims UNSIGNED for the virtual column: those differ from the DDL by design.
            if ["c_json", "c_inet6", "c_uuid", "c_inet4", "c_gen_virtual"]
                .contains(&col.name.as_str())
            {
                continue;
            }
            let server_base =
                server_ty.split(" CHARSET").next().unwrap().split(" NOT NULL").next().unwrap();
            // The server upper-cases the type name (not ENUM members) and prints no integer
            // display width.
            let (base, rest) = match col.mysql_type.split_once('(') {
                Some((b, r)) => (b.to_ascii_uppercase(), format!("({r}")),
                None => match col.mysql_type.split_once(' ') {
                    Some((b, r)) => (b.to_ascii_uppercase(), format!(" {r}")),
                    None => (col.mysql_type.to_ascii_uppercase(), String::new()),
                },
            };
            let rest = rest.replace(" unsigned", " UNSIGNED").replace(" zerofill", " ZEROFILL");
            let mine = if base.ends_with("INT") && rest.starts_with('(') {
                format!("{base}{}", rest.split_once(')').unwrap().1)
            } else {
                format!("{base}{rest}")
            };
            assert_eq!(mine, server_base, "{table}.{}", col.name);
            assert_eq!(!col.nullable, server_ty.contains("NOT NULL"), "{table}.{}", col.name);
            if let Some(cs) = &col.charset {
                assert!(
                    server_ty.contains(&format!("CHARSET {cs} ")),
                    "{table}.{}: {server_ty}",
                    col.name
                );
            }
        }
        checked += 1;
        i = end;
    }
    assert!(checked >= 4, "checked {checked} table maps");
}

// ---------------------------------------------------------------------------------------------
// ALTER sequences and versioned lookups

#[test]
fn alter_sequence_column_order_and_types() {
    let mut h = mem();
    let steps = [
        "CREATE TABLE t (id INT NOT NULL, a VARCHAR(10), b INT, PRIMARY KEY (id))",
        "ALTER TABLE t ADD COLUMN c BIGINT(20) UNSIGNED FIRST",
        "ALTER TABLE t ADD d DATETIME(3) AFTER id, ADD COLUMN (e TEXT, f ENUM('x','y'))",
        "ALTER TABLE t DROP COLUMN a, MODIFY b DECIMAL(10,2) NOT NULL AFTER f",
        "ALTER TABLE t CHANGE COLUMN id pk BIGINT NOT NULL AUTO_INCREMENT FIRST",
        "ALTER TABLE t RENAME COLUMN e TO e2, ALTER COLUMN b SET DEFAULT 1",
        "ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (pk, c)",
        "ALTER TABLE t RENAME TO d2.u",
    ];
    let expected: [&[(&str, &str)]; 8] = [
        &[("id", "int"), ("a", "varchar(10)"), ("b", "int")],
        &[("c", "bigint(20) unsigned"), ("id", "int"), ("a", "varchar(10)"), ("b", "int")],
        &[
            ("c", "bigint(20) unsigned"),
            ("id", "int"),
            ("d", "datetime(3)"),
            ("a", "varchar(10)"),
            ("b", "int"),
            ("e", "text"),
            ("f", "enum('x','y')"),
        ],
        &[
            ("c", "bigint(20) unsigned"),
            ("id", "int"),
            ("d", "datetime(3)"),
            ("e", "text"),
            ("f", "enum('x','y')"),
            ("b", "decimal(10,2)"),
        ],
        &[
            ("pk", "bigint"),
            ("c", "bigint(20) unsigned"),
            ("d", "datetime(3)"),
            ("e", "text"),
            ("f", "enum('x','y')"),
            ("b", "decimal(10,2)"),
        ],
        &[
            ("pk", "bigint"),
            ("c", "bigint(20) unsigned"),
            ("d", "datetime(3)"),
            ("e2", "text"),
            ("f", "enum('x','y')"),
            ("b", "decimal(10,2)"),
        ],
        &[
            ("pk", "bigint"),
            ("c", "bigint(20) unsigned"),
            ("d", "datetime(3)"),
            ("e2", "text"),
            ("f", "enum('x','y')"),
            ("b", "decimal(10,2)"),
        ],
        &[],
    ];
    let pks: [&[&str]; 8] =
        [&["id"], &["id"], &["id"], &["id"], &["pk"], &["pk"], &["pk", "c"], &[]];
    for (i, sql) in steps.iter().enumerate() {
        let at = pos("bin.000001", 100 * (i as u64 + 1));
        let out = h.apply_ddl(&at, "d", sql).unwrap();
        assert!(out.problems.is_empty(), "{sql}: {:?}", out.problems);
        if i == 7 {
            assert!(h.table_at("d", "t", &at).is_none());
            assert_eq!(out.query.event_type, QueryEventType::Rename);
            let u = h.table_at("d2", "u", &at).unwrap();
            assert_eq!((u.schema.as_str(), u.name.as_str()), ("d2", "u"));
            assert_eq!(u.primary_key, ["pk", "c"]);
            continue;
        }
        let def = h.table_at("d", "t", &at).unwrap();
        let got: Vec<(&str, &str)> =
            def.columns.iter().map(|c| (c.name.as_str(), c.mysql_type.as_str())).collect();
        assert_eq!(got, expected[i], "after {sql}");
        assert_eq!(def.primary_key, pks[i], "after {sql}");
        for c in &def.columns {
            assert_eq!(c.is_pk, pks[i].contains(&c.name.as_str()), "{sql}: {}", c.name);
        }
    }
    // Every version is still there: look each one up again, in reverse order.
    for i in (0..7).rev() {
        let at = pos("bin.000001", 100 * (i as u64 + 1) + 50);
        let def = h.table_at("d", "t", &at).unwrap();
        assert_eq!(def.columns.len(), expected[i].len(), "version {i}");
    }
    assert!(h.table_at("d", "t", &pos("bin.000001", 99)).is_none(), "before CREATE");
    assert_eq!(h.lookup("d", "t", &pos("bin.000002", 4)), Lookup::Absent);
    assert_eq!(h.lookup("d", "nope", &pos("bin.000002", 4)), Lookup::NotTracked);
}

#[test]
fn positions_order_by_numeric_suffix_across_files() {
    let mut h = mem();
    h.apply_ddl(&pos("bin.999999", 500), "d", "CREATE TABLE t (a INT)").unwrap();
    h.apply_ddl(&pos("bin.1000000", 4), "d", "ALTER TABLE t ADD b INT").unwrap();
    assert_eq!(h.table_at("d", "t", &pos("bin.999999", 9000)).unwrap().columns.len(), 1);
    assert_eq!(h.table_at("d", "t", &pos("bin.1000000", 5)).unwrap().columns.len(), 2);
}

#[test]
fn rewind_replays_without_losing_later_versions() {
    let mut h = mem();
    let ddl = [
        (100, "CREATE TABLE t (a INT)"),
        (200, "ALTER TABLE t ADD b INT"),
        (300, "ALTER TABLE t ADD c INT"),
    ];
    for (o, sql) in ddl {
        assert!(!h.apply_ddl(&pos("bin.000001", o), "d", sql).unwrap().replayed);
    }
    let n = h.records().len();
    // The pipeline restarts from 150 and sees the ALTERs again.
    assert_eq!(h.table_at("d", "t", &pos("bin.000001", 150)).unwrap().columns.len(), 1);
    for (o, sql) in &ddl[1..] {
        let out = h.apply_ddl(&pos("bin.000001", *o), "d", sql).unwrap();
        assert!(out.replayed);
        assert_eq!(out.query.event_type, QueryEventType::Alter);
    }
    assert_eq!(h.records().len(), n);
    assert_eq!(h.table_at("d", "t", &pos("bin.000001", 250)).unwrap().columns.len(), 2);
    assert_eq!(h.table_at("d", "t", &pos("bin.000001", 350)).unwrap().columns.len(), 3);
}

#[test]
fn out_of_order_snapshot_reapplies_later_ddl() {
    let mut h = mem();
    // Unknown table: the ALTER cannot be applied and asks for a refresh.
    let out = h.apply_ddl(&pos("bin.000002", 100), "d", "ALTER TABLE t ADD c INT").unwrap();
    assert_eq!(out.refresh.len(), 1);
    assert_eq!(h.lookup("d", "t", &pos("bin.000002", 150)), Lookup::Unknown);
    // A snapshot from before that ALTER arrives later (e.g. the initial dump of an older start).
    h.record_snapshot(
        &pos("bin.000001", 4),
        &[SnapshotTable {
            schema: "d".into(),
            ddl: Some("CREATE TABLE `t` (`a` int(11) NOT NULL, PRIMARY KEY (`a`))".into()),
        }],
    )
    .unwrap();
    assert_eq!(names(&h.table_at("d", "t", &pos("bin.000001", 5)).unwrap()), ["a"]);
    assert_eq!(names(&h.table_at("d", "t", &pos("bin.000002", 150)).unwrap()), ["a", "c"]);
}

#[test]
fn refresh_after_unparseable_ddl() {
    let mut h = mem();
    h.apply_ddl(&pos("bin.000001", 100), "d", "CREATE TABLE t (a INT)").unwrap();
    let out = h.apply_ddl(&pos("bin.000001", 200), "d", "ALTER TABLE t FROBNICATE a").unwrap();
    assert!(matches!(out.problems[..], [ApplyError::Parse(_)]));
    assert_eq!(out.query.event_type, QueryEventType::Alter);
    assert_eq!(out.refresh, vec![canal_core::schema::TableName::new("d", "t")]);
    assert_eq!(h.lookup("d", "t", &pos("bin.000001", 250)), Lookup::Unknown);
    assert_eq!(names(&h.table_at("d", "t", &pos("bin.000001", 150)).unwrap()), ["a"]);
    h.record_snapshot(
        &pos("bin.000001", 200),
        &[SnapshotTable { schema: "d".into(), ddl: Some("CREATE TABLE t (a INT, z INT)".into()) }],
    )
    .unwrap();
    assert_eq!(names(&h.table_at("d", "t", &pos("bin.000001", 250)).unwrap()), ["a", "z"]);
    // CREATE TABLE ... SELECT: columns unknown.
    let out =
        h.apply_ddl(&pos("bin.000001", 300), "d", "CREATE TABLE c AS SELECT * FROM t").unwrap();
    assert_eq!(out.refresh.len(), 1);
    assert_eq!(h.lookup("d", "c", &pos("bin.000001", 301)), Lookup::Unknown);
}

#[test]
fn like_drop_database_and_lower_case_names() {
    let mut h =
        SchemaHistory::new(HistoryOptions { lower_case_table_names: true, ..Default::default() });
    h.apply_ddl(&pos("b.1", 10), "D", "CREATE TABLE T1 (A INT PRIMARY KEY, b CHAR(2))").unwrap();
    h.apply_ddl(&pos("b.1", 20), "d", "CREATE TABLE t2 LIKE t1").unwrap();
    let t2 = h.table_at("D", "T2", &pos("b.1", 25)).unwrap();
    assert_eq!((t2.name.as_str(), names(&t2)), ("t2", vec!["A", "b"]));
    assert_eq!(t2.primary_key, ["A"]);
    h.apply_ddl(&pos("b.1", 30), "", "DROP DATABASE d").unwrap();
    assert!(h.table_at("d", "t1", &pos("b.1", 31)).is_none());
    assert!(h.table_at("d", "t2", &pos("b.1", 31)).is_none());
    assert!(h.table_at("d", "t1", &pos("b.1", 29)).is_some());
    assert_eq!(h.tables_at(&pos("b.1", 29)).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// persistence

fn sample(h: &mut SchemaHistory) {
    h.record_snapshot(
        &pos("bin.000001", 4),
        &[SnapshotTable {
            schema: "d".into(),
            ddl: Some(
                "CREATE TABLE `t` (`a` int(11) NOT NULL, PRIMARY KEY (`a`)) ENGINE=InnoDB".into(),
            ),
        }],
    )
    .unwrap();
    h.apply_ddl(&pos("bin.000001", 100), "d", "ALTER TABLE t ADD b VARCHAR(5)").unwrap();
    h.apply_ddl(&pos("bin.000002", 100), "d", "ALTER TABLE t ADD c INT FIRST").unwrap();
}

#[test]
fn persistence_reloads_every_version() {
    let dir = TempDir::new("reload");
    let mut h = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    sample(&mut h);
    let reloaded = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    assert_eq!(reloaded.records(), h.records());
    for (p, cols) in [(50, vec!["a"]), (150, vec!["a", "b"])] {
        assert_eq!(names(&reloaded.table_at("d", "t", &pos("bin.000001", p)).unwrap()), cols);
    }
    assert_eq!(
        names(&reloaded.table_at("d", "t", &pos("bin.000003", 4)).unwrap()),
        ["c", "a", "b"]
    );
    // Records appended after a reload keep increasing sequence numbers.
    let mut reloaded = reloaded;
    reloaded.apply_ddl(&pos("bin.000003", 100), "d", "DROP TABLE t").unwrap();
    let again = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    assert!(again.table_at("d", "t", &pos("bin.000003", 101)).is_none());
    let seqs: Vec<u64> = again.records().iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
fn torn_last_line_is_dropped_and_appends_continue() {
    let dir = TempDir::new("torn");
    let mut h = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    sample(&mut h);
    let file = dir.0.join(canal_core::schema::HISTORY_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Simulate a crash in the middle of appending the third record.
    let torn = format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..lines[2].len() / 2]);
    std::fs::write(&file, torn).unwrap();
    let mut h = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    assert_eq!(h.records().len(), 2);
    assert_eq!(names(&h.latest("d", "t").unwrap()), ["a", "b"]);
    h.apply_ddl(&pos("bin.000002", 100), "d", "ALTER TABLE t ADD c INT FIRST").unwrap();
    let h = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    assert_eq!(names(&h.latest("d", "t").unwrap()), ["c", "a", "b"]);

    // A complete last record that lost only its newline is kept.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.trim_end()).unwrap();
    let mut h = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    assert_eq!(h.records().len(), 3);
    h.apply_ddl(&pos("bin.000002", 200), "d", "ALTER TABLE t DROP a").unwrap();
    let h = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    assert_eq!(names(&h.latest("d", "t").unwrap()), ["c", "b"]);
}

#[test]
fn corrupt_middle_line_is_an_error() {
    let dir = TempDir::new("corrupt");
    let mut h = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    sample(&mut h);
    let file = dir.0.join(canal_core::schema::HISTORY_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = "{\"v\":1,\"seq\":".to_owned();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    match SchemaHistory::open(&dir.0, HistoryOptions::default()) {
        Err(HistoryError::Corrupt { line, .. }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    lines[1] = lines[2].replace("\"v\":1", "\"v\":7");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    assert!(matches!(
        SchemaHistory::open(&dir.0, HistoryOptions::default()),
        Err(HistoryError::Corrupt { line: 2, .. })
    ));
}

#[test]
fn compaction_bounds_records_and_keeps_recent_versions() {
    let dir = TempDir::new("compact");
    let mut h = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    h.apply_ddl(&pos("bin.000001", 10), "d", "CREATE TABLE t (a INT)").unwrap();
    h.apply_ddl(&pos("bin.000001", 20), "d", "CREATE TABLE gone (a INT)").unwrap();
    for i in 0..20u64 {
        h.apply_ddl(&pos("bin.000001", 100 + i * 10), "d", &format!("ALTER TABLE t ADD c{i} INT"))
            .unwrap();
    }
    h.apply_ddl(&pos("bin.000001", 400), "d", "DROP TABLE gone").unwrap();
    assert!(h.compact_below(&pos("bin.000001", 250), 2).unwrap());
    assert_eq!(h.records().len(), 1 + 5 + 1);
    let at = |o| h.table_at("d", "t", &pos("bin.000001", o)).map(|d| d.columns.len());
    assert_eq!(at(255), Some(1 + 16));
    assert_eq!(at(295), Some(1 + 20));
    // Older positions get the compacted definition (the oldest one still known).
    assert_eq!(at(5), Some(1 + 15));
    let reloaded = SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    assert_eq!(reloaded.records(), h.records());
    assert!(reloaded.table_at("d", "gone", &pos("bin.000001", 401)).is_none());

    let mut bounded =
        SchemaHistory::new(HistoryOptions { retain_records: Some(5), ..Default::default() });
    bounded.apply_ddl(&pos("bin.000001", 10), "d", "CREATE TABLE t (a INT)").unwrap();
    for i in 0..50u64 {
        bounded
            .apply_ddl(&pos("bin.000001", 100 + i), "d", &format!("ALTER TABLE t ADD c{i} INT"))
            .unwrap();
        assert!(bounded.records().len() <= 10);
    }
    assert_eq!(bounded.latest("d", "t").unwrap().columns.len(), 51);
}

#[test]
fn divergent_ddl_at_a_recorded_position_replaces_it() {
    let mut h = mem();
    h.apply_ddl(&pos("bin.000001", 10), "d", "CREATE TABLE t (a INT)").unwrap();
    h.apply_ddl(&pos("bin.000001", 20), "d", "ALTER TABLE t ADD b INT").unwrap();
    h.apply_ddl(&pos("bin.000001", 30), "d", "ALTER TABLE t ADD c INT").unwrap();
    let out = h.apply_ddl(&pos("bin.000001", 20), "d", "ALTER TABLE t ADD z INT FIRST").unwrap();
    assert!(!out.replayed);
    assert_eq!(names(&h.table_at("d", "t", &pos("bin.000001", 25)).unwrap()), ["z", "a"]);
    assert_eq!(names(&h.table_at("d", "t", &pos("bin.000001", 35)).unwrap()), ["z", "a", "c"]);
}

// ---------------------------------------------------------------------------------------------
// properties

#[derive(Clone, Debug)]
enum Op {
    Add { ty: usize, pos: Option<usize> },
    Drop(usize),
    Modify { col: usize, ty: usize },
}

const TYPES: &[(&str, &str)] = &[
    ("INT", "int"),
    ("BIGINT(20) UNSIGNED", "bigint(20) unsigned"),
    ("VARCHAR(12)", "varchar(12)"),
    ("DECIMAL(8, 3)", "decimal(8,3)"),
    ("DATETIME(6)", "datetime(6)"),
    ("ENUM('a','b''c')", "enum('a','b''c')"),
    ("TEXT CHARACTER SET latin1", "text"),
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..TYPES.len(), proptest::option::of(0usize..20))
            .prop_map(|(ty, pos)| Op::Add { ty, pos }),
        (0usize..20).prop_map(Op::Drop),
        (0usize..20, 0..TYPES.len()).prop_map(|(col, ty)| Op::Modify { col, ty }),
    ]
}

proptest! {
    #[test]
    fn random_alters_match_a_column_list_model(ops in proptest::collection::vec(op(), 1..30)) {
        let mut h = mem();
        h.apply_ddl(&pos("bin.000001", 1), "d", "CREATE TABLE `t` (`id` INT PRIMARY KEY)").unwrap();
        let mut model: Vec<(String, &str)> = vec![("id".into(), "int")];
        let mut next = 0;
        // (position, model after the DDL there, its SQL) for the versioned checks below.
        #[allow(clippy::type_complexity)]
        let mut steps: Vec<(u64, Vec<(String, &str)>, String)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let sql = match op {
                Op::Add { ty, pos } => {
                    next += 1;
                    let name = format!("c{next}");
                    let (place, idx) = match pos {
                        None => (String::new(), model.len()),
                        Some(0) => (" FIRST".to_owned(), 0),
                        Some(p) => {
                            let after = (p - 1) % model.len();
                            (format!(" AFTER `{}`", model[after].0), after + 1)
                        }
                    };
                    model.insert(idx, (name.clone(), TYPES[*ty].1));
                    format!("ALTER TABLE t ADD COLUMN `{name}` {}{place}", TYPES[*ty].0)
                }
                Op::Drop(c) => {
                    if model.len() <= 1 { continue; }
                    let (name, _) = model.remove(c % model.len());
                    format!("ALTER TABLE `d`.`t` DROP COLUMN `{name}`")
                }
                Op::Modify { col, ty } => {
                    let c = col % model.len();
                    model[c].1 = TYPES[*ty].1;
                    format!("alter table t modify `{}` {} NOT NULL", model[c].0, TYPES[*ty].0)
                }
            };
            let out = h.apply_ddl(&pos("bin.000001", 10 + i as u64), "d", &sql).unwrap();
            prop_assert!(out.problems.is_empty(), "{}: {:?}", sql, out.problems);
            let def = h.latest("d", "t").unwrap();
            let got: Vec<(String, &str)> = def.columns.iter().map(|c| (c.name.clone(), c.mysql_type.as_str())).collect();
            let want: Vec<(String, &str)> = model.iter().map(|(n, t)| (n.clone(), *t)).collect();
            prop_assert_eq!(got, want, "after {}", sql);
            let has_id = model.iter().any(|(n, _)| n == "id");
            prop_assert_eq!(def.primary_key.clone(), if has_id { vec!["id".to_owned()] } else { vec![] });
            steps.push((10 + i as u64, model.clone(), sql));
        }
        // Every intermediate version is still answered at its position, in the history, in a copy
        // rebuilt from its records, and after replaying every DDL again (a rewind).
        let copy = rebuilt(h.records().to_vec());
        for (o, _, sql) in &steps {
            // A DDL that changed nothing was not recorded, so it is applied (again without effect).
            let again = h.apply_ddl(&pos("bin.000001", *o), "d", sql).unwrap();
            prop_assert!(again.replayed || again.changed.is_empty(), "{}: {:?}", sql, again);
        }
        for (o, m, _) in &steps {
            let want: Vec<(String, &str)> = m.iter().map(|(n, t)| (n.clone(), *t)).collect();
            for hist in [&h, &copy] {
                let def = hist.table_at("d", "t", &pos("bin.000001", *o)).unwrap();
                let got: Vec<(String, &str)> = def.columns.iter().map(|c| (c.name.clone(), c.mysql_type.as_str())).collect();
                prop_assert_eq!(&got, &want, "at {}", o);
            }
        }
    }

    #[test]
    fn tokenizer_and_parser_never_panic(s in "\\PC{0,200}") {
        let _ = tokenize(&s);
        let _ = parse_query(&s, "d");
        let _ = canal_core::schema::classify_lenient(&s, "d");
    }

    #[test]
    fn parser_never_panics_on_ddl_shaped_noise(
        words in proptest::collection::vec(prop_oneof![
            Just("CREATE"), Just("ALTER"), Just("TABLE"), Just("ADD"), Just("DROP"), Just("COLUMN"),
            Just("("), Just(")"), Just(","), Just("t"), Just("`x`"), Just("INT"), Just("'s'"),
            Just("PRIMARY"), Just("KEY"), Just("AFTER"), Just("FIRST"), Just("DEFAULT"), Just("."),
            Just("RENAME"), Just("TO"), Just("CHANGE"), Just("MODIFY"), Just(";"), Just("/*!50001"),
            Just("*/"), Just("ENUM"), Just("NOT"), Just("NULL"), Just("IF"), Just("EXISTS"),
        ], 0..25)
    ) {
        let sql = words.join(" ");
        let mut h = mem();
        let _ = h.apply_ddl(&pos("bin.000001", 1), "d", "CREATE TABLE t (a INT)");
        let _ = h.apply_ddl(&pos("bin.000001", 2), "d", &sql);
    }
}

// ---------------------------------------------------------------------------------------------
// hand-written corpus: SHOW CREATE TABLE / mysqldump shapes of MySQL 5.7, 8.x and MariaDB

/// (DDL, expected `(column, mysql_type)` list, expected primary key).
type Case = (&'static str, &'static [(&'static str, &'static str)], &'static [&'static str]);

const CREATE_CORPUS: &[Case] = &[
    (
        "CREATE TABLE `users` (\n  `id` bigint unsigned NOT NULL AUTO_INCREMENT,\n  `uuid` char(36) COLLATE utf8mb4_0900_ai_ci NOT NULL DEFAULT (uuid()),\n  `email` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_0900_ai_ci NOT NULL,\n  `meta` json DEFAULT NULL,\n  `secret` varchar(64) /*!80023 INVISIBLE */,\n  `created_at` timestamp NULL DEFAULT CURRENT_TIMESTAMP,\n  `updated_at` datetime(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),\n  `score` double(8,2) unsigned zerofill DEFAULT '0000.00',\n  `geo` point NOT NULL /*!80003 SRID 4326 */,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `uk_email` (`email`),\n  KEY `idx_fn` ((lower(`email`))),\n  SPATIAL KEY `sp` (`geo`),\n  FULLTEXT KEY `ft` (`email`) /*!50100 WITH PARSER `ngram` */ ,\n  CONSTRAINT `chk` CHECK ((`id` > 0))\n) ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci\n/*!50100 PARTITION BY HASH (`id`)\nPARTITIONS 4 */",
        &[
            ("id", "bigint unsigned"),
            ("uuid", "char(36)"),
            ("email", "varchar(255)"),
            ("meta", "json"),
            ("secret", "varchar(64)"),
            ("created_at", "timestamp"),
            ("updated_at", "datetime(6)"),
            ("score", "double(8,2) unsigned zerofill"),
            ("geo", "point"),
        ],
        &["id"],
    ),
    (
        "CREATE TABLE `t1` (\n  `a` int(11) NOT NULL DEFAULT '0' COMMENT 'it''s \"a\"; really',\n  `b` varchar(10) CHARACTER SET latin1 DEFAULT 'x,y)',\n  `c` tinyint(1) NOT NULL DEFAULT b'0',\n  `d` decimal(10,0) DEFAULT -1,\n  `e` set('x','y') NOT NULL DEFAULT '',\n  `f` text,\n  `g` int(11) GENERATED ALWAYS AS ((`a` + 1)) VIRTUAL,\n  `h` mediumblob,\n  `date` date DEFAULT NULL,\n  `type` year(4) DEFAULT NULL,\n  `status` enum('on','off') DEFAULT 'on',\n  PRIMARY KEY (`a`,`date`) USING BTREE,\n  KEY `k` (`b`(5)) COMMENT 'k',\n  CONSTRAINT `fk` FOREIGN KEY (`a`) REFERENCES `t0` (`id`) ON DELETE SET NULL ON UPDATE NO ACTION\n) ENGINE=InnoDB DEFAULT CHARSET=utf8 ROW_FORMAT=DYNAMIC COMMENT='table; comment'",
        &[
            ("a", "int(11)"),
            ("b", "varchar(10)"),
            ("c", "tinyint(1)"),
            ("d", "decimal(10,0)"),
            ("e", "set('x','y')"),
            ("f", "text"),
            ("g", "int(11)"),
            ("h", "mediumblob"),
            ("date", "date"),
            ("type", "year(4)"),
            ("status", "enum('on','off')"),
        ],
        &["a", "date"],
    ),
    (
        // MariaDB SHOW CREATE TABLE: lower-case function defaults, JSON check, PERSISTENT,
        // system versioning columns, COMPRESSED, INET6/UUID.
        "CREATE TABLE `m` (\n  `id` int(11) NOT NULL,\n  `ts` timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n  `j` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL CHECK (json_valid(`j`)),\n  `p` varchar(20) GENERATED ALWAYS AS (concat(`id`,'!')) STORED,\n  `z` blob /*M!100301 COMPRESSED*/ DEFAULT NULL,\n  `ip` inet6 DEFAULT NULL,\n  `u` uuid DEFAULT NULL,\n  `system` int DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci WITH SYSTEM VERSIONING",
        &[
            ("id", "int(11)"),
            ("ts", "timestamp"),
            ("j", "longtext"),
            ("p", "varchar(20)"),
            ("z", "blob"),
            ("ip", "inet6"),
            ("u", "uuid"),
            ("system", "int"),
        ],
        &["id"],
    ),
    (
        "create table if not exists db1.`weird``name` (`col ``x`` y` integer unsigned primary key, `2nd` national varchar(5), n numeric(5), f float(30), f2 float(7,3), r real, b bit, bb binary, vb varbinary(3) not null, tb tinyblob, lt long varchar, dt datetime(0), t time(6))",
        &[
            ("col `x` y", "int unsigned"),
            ("2nd", "varchar(5)"),
            ("n", "decimal(5,0)"),
            ("f", "double"),
            ("f2", "float(7,3)"),
            ("r", "double"),
            ("b", "bit(1)"),
            ("bb", "binary(1)"),
            ("vb", "varbinary(3)"),
            ("tb", "tinyblob"),
            ("lt", "mediumtext"),
            ("dt", "datetime"),
            ("t", "time(6)"),
        ],
        &["col `x` y"],
    ),
    (
        "/*!40101 SET character_set_client = utf8 */; CREATE TABLE `x` (`a` INT, CONSTRAINT PRIMARY KEY (`a`)) /*!50100 TABLESPACE ts1 */",
        &[("a", "int")],
        &["a"],
    ),
];

#[test]
fn create_table_corpus_shapes() {
    for (sql, want, pk) in CREATE_CORPUS {
        // The corpus is also valid as a snapshot (SHOW CREATE TABLE output), except for the
        // leading SET of the mysqldump-shaped case.
        let mut h = mem();
        let out = h.apply_ddl(&pos("b.000001", 10), "db1", sql).unwrap();
        assert!(out.problems.is_empty(), "{sql}: {:?}", out.problems);
        let name = out.changed.first().unwrap_or_else(|| panic!("{sql}: nothing changed"));
        let def = h.table_at(&name.schema, &name.table, &pos("b.000001", 11)).unwrap();
        let got: Vec<(&str, &str)> =
            def.columns.iter().map(|c| (c.name.as_str(), c.mysql_type.as_str())).collect();
        assert_eq!(got, *want, "{sql}");
        assert_eq!(def.primary_key, *pk, "{sql}");
    }
}

#[test]
fn alter_corpus_shapes() {
    let mut h = mem();
    let base = "CREATE TABLE t (id INT NOT NULL, a INT, b VARCHAR(5), PRIMARY KEY (id))";
    h.apply_ddl(&pos("b.000001", 1), "d", base).unwrap();
    let cases: &[(&str, QueryEventType, &[&str])] = &[
        ("ALTER TABLE t ADD COLUMN IF NOT EXISTS a INT", QueryEventType::Alter, &["id", "a", "b"]),
        (
            "ALTER TABLE t DROP COLUMN IF EXISTS nope, ALGORITHM=INSTANT",
            QueryEventType::Alter,
            &["id", "a", "b"],
        ),
        (
            "ALTER TABLE t ADD system INT, ADD period INT AFTER id",
            QueryEventType::Alter,
            &["id", "period", "a", "b", "system"],
        ),
        (
            "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES o (id) ON DELETE CASCADE",
            // Canal reports no item for a non-unique constraint, hence a bare QUERY.
            QueryEventType::Query,
            &["id", "period", "a", "b", "system"],
        ),
        (
            "ALTER TABLE t ADD UNIQUE INDEX u (b), ADD FULLTEXT (b)",
            QueryEventType::CIndex,
            &["id", "period", "a", "b", "system"],
        ),
        (
            "ALTER TABLE `t` DROP FOREIGN KEY `fk`, DROP INDEX u",
            QueryEventType::Alter,
            &["id", "period", "a", "b", "system"],
        ),
        (
            "ALTER TABLE t ENGINE=InnoDB ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=8 COMMENT 'x'",
            QueryEventType::Alter,
            &["id", "period", "a", "b", "system"],
        ),
        (
            "ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            QueryEventType::Alter,
            &["id", "period", "a", "b", "system"],
        ),
        (
            "ALTER ONLINE IGNORE TABLE t DROP period, DROP COLUMN system, LOCK = NONE",
            QueryEventType::Alter,
            &["id", "a", "b"],
        ),
        (
            "ALTER TABLE t CHANGE a a2 BIGINT FIRST, MODIFY COLUMN b VARCHAR(9) AFTER a2",
            QueryEventType::Alter,
            &["a2", "b", "id"],
        ),
        (
            "ALTER TABLE t ALTER COLUMN b SET DEFAULT 'x,y', ALTER b DROP DEFAULT, RENAME INDEX i1 TO i2",
            QueryEventType::Alter,
            &["a2", "b", "id"],
        ),
        (
            "ALTER TABLE t ADD COLUMN c INT, PARTITION BY KEY(id) PARTITIONS 2",
            QueryEventType::Alter,
            &["a2", "b", "id", "c"],
        ),
        ("ALTER TABLE t TRUNCATE PARTITION p0, p1", QueryEventType::Alter, &["a2", "b", "id", "c"]),
        (
            "/*!40000 ALTER TABLE `t` DISABLE KEYS */",
            QueryEventType::Alter,
            &["a2", "b", "id", "c"],
        ),
        ("CREATE INDEX i3 ON t (c)", QueryEventType::CIndex, &["a2", "b", "id", "c"]),
        ("DROP INDEX `PRIMARY` ON t", QueryEventType::DIndex, &["a2", "b", "id", "c"]),
    ];
    for (i, (sql, ty, cols)) in cases.iter().enumerate() {
        let at = pos("b.000001", 10 + i as u64);
        let out = h.apply_ddl(&at, "d", sql).unwrap();
        assert!(out.problems.is_empty(), "{sql}: {:?}", out.problems);
        assert_eq!(out.query.event_type, *ty, "{sql}");
        assert_eq!(names(&h.table_at("d", "t", &at).unwrap()), *cols, "{sql}");
    }
    let def = h.latest("d", "t").unwrap();
    assert!(def.primary_key.is_empty(), "DROP INDEX `PRIMARY` drops the primary key");
    assert_eq!(def.charset.as_deref(), Some("utf8mb4"));
    // MODIFY without a charset gives the column the table default again.
    assert_eq!(def.column("b").unwrap().effective_charset(&def), Some("utf8mb4"));
    let converted = h.table_at("d", "t", &pos("b.000001", 17)).unwrap();
    assert_eq!(converted.column("b").unwrap().charset.as_deref(), Some("utf8mb4"));
    assert_eq!(converted.column("b").unwrap().collation.as_deref(), Some("utf8mb4_bin"));
    // Versions before the CONVERT keep the old charset.
    let before = h.table_at("d", "t", &pos("b.000001", 16)).unwrap();
    assert_eq!(before.column("b").unwrap().charset, None);
}

#[test]
fn record_format_is_stable_and_shippable() {
    let mut h = mem();
    sample(&mut h);
    let line = serde_json::to_value(&h.records()[1]).unwrap();
    assert_eq!(line["v"], 1);
    assert_eq!(line["kind"], "ddl");
    assert_eq!(line["journal"], "bin.000001");
    assert_eq!(line["offset"], 100);
    assert_eq!(line["default_db"], "d");
    assert_eq!(line["sql"], "ALTER TABLE t ADD b VARCHAR(5)");
    let change = &line["changes"][0];
    assert_eq!(
        (&change["schema"], &change["table"], &change["state"]),
        (&"d".into(), &"t".into(), &"known".into())
    );
    assert_eq!(change["def"]["columns"][1]["mysql_type"], "varchar(5)");
    assert_eq!(change["def"]["primary_key"][0], "a");
    let snap = serde_json::to_value(&h.records()[0]).unwrap();
    assert_eq!(snap["kind"], "snapshot");
    assert!(snap["tables"][0]["ddl"].as_str().unwrap().starts_with("CREATE TABLE"));

    // Another server rebuilds the same history from the shipped records.
    let copy = rebuilt(h.records().to_vec());
    for o in [5, 150] {
        let p = pos("bin.000001", o);
        assert_eq!(copy.table_at("d", "t", &p), h.table_at("d", "t", &p));
    }
    assert_eq!(copy.latest("d", "t"), h.latest("d", "t"));
}

#[test]
fn a_crash_at_any_byte_recovers_a_prefix() {
    let dir = TempDir::new("anybyte");
    let mut h =
        SchemaHistory::open(&dir.0, HistoryOptions { sync: false, ..Default::default() }).unwrap();
    sample(&mut h);
    let file = dir.0.join(canal_core::schema::HISTORY_FILE);
    let full = std::fs::read(&file).unwrap();
    let all = h.records().to_vec();
    // Every 11th byte, plus every offset next to a line end (where off-by-one bugs live).
    let mut cuts: Vec<usize> = (0..=full.len()).step_by(11).collect();
    for (i, _) in full.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        cuts.extend([i.saturating_sub(1), i, i + 1, (i + 2).min(full.len())]);
    }
    cuts.push(full.len());
    for cut in cuts {
        std::fs::write(&file, &full[..cut]).unwrap();
        let reopened = SchemaHistory::open(&dir.0, HistoryOptions::default())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let n = reopened.records().len();
        assert_eq!(reopened.records(), &all[..n], "cut at {cut}");
        // Whole lines survive; only the torn one is lost.
        let complete = full[..cut].iter().filter(|&&b| b == b'\n').count();
        assert!(n == complete || n == complete + 1, "cut at {cut}: {n} records, {complete} lines");
    }
}

proptest! {
    #[test]
    fn opening_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dir = TempDir::new("garbage");
        std::fs::write(dir.0.join(canal_core::schema::HISTORY_FILE), &bytes).unwrap();
        let _ = SchemaHistory::open(&dir.0, HistoryOptions { sync: false, ..Default::default() });
    }
}

#[test]
fn untracked_tables_and_directly_recorded_definitions() {
    let mut h = mem();
    // An ALTER of a table the history never had: unknown from there on, and not tracked before
    // (it existed, with a shape nobody recorded), unlike a table created by DDL.
    let out = h.apply_ddl(&pos("bin.000001", 100), "d", "ALTER TABLE old ADD c INT").unwrap();
    assert!(matches!(out.problems[..], [ApplyError::UnknownTable(_)]));
    assert_eq!(h.lookup("d", "old", &pos("bin.000001", 50)), Lookup::NotTracked);
    assert_eq!(h.lookup("d", "old", &pos("bin.000001", 150)), Lookup::Unknown);
    h.apply_ddl(&pos("bin.000001", 200), "d", "CREATE TABLE fresh (a INT)").unwrap();
    assert_eq!(h.lookup("d", "fresh", &pos("bin.000001", 150)), Lookup::Absent);
    // Index-only DDL on an untracked table tells nothing and records nothing.
    let n = h.records().len();
    let out = h.apply_ddl(&pos("bin.000001", 300), "d", "CREATE INDEX i ON other (a)").unwrap();
    assert!(out.changed.is_empty() && out.problems.is_empty());
    assert_eq!(h.records().len(), n);

    // A definition from elsewhere (e.g. binlog FULL metadata) becomes a version like a snapshot.
    let mut def = (*h.latest("d", "fresh").unwrap()).clone();
    def.name = "meta".into();
    def.primary_key = vec!["A".into()];
    h.record_table(&pos("bin.000001", 400), def).unwrap();
    let meta = h.table_at("d", "meta", &pos("bin.000001", 401)).unwrap();
    assert_eq!(meta.primary_key, ["a"], "key names follow the column spelling");
    assert!(meta.columns[0].is_pk && !meta.columns[0].nullable);
}

#[test]
fn snapshot_parse_failures_are_reported_and_recorded_unknown() {
    let mut h = mem();
    let failed = h
        .record_snapshot(
            &pos("bin.000001", 4),
            &[
                SnapshotTable { schema: "d".into(), ddl: Some("CREATE TABLE ok (a INT)".into()) },
                SnapshotTable { schema: "d".into(), ddl: Some("CREATE TABLE bad (a INT".into()) },
                SnapshotTable {
                    schema: "d".into(),
                    ddl: Some("CREATE ALGORITHM=UNDEFINED VIEW v AS SELECT 1".into()),
                },
            ],
        )
        .unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, canal_core::schema::TableName::new("d", "bad"));
    assert!(h.table_at("d", "ok", &pos("bin.000001", 5)).is_some());
    assert_eq!(h.lookup("d", "bad", &pos("bin.000001", 5)), Lookup::Unknown);
}

#[test]
fn sakila_schema_from_a_mysql_binlog() {
    use std::io::Read;
    let Some(path) = support::shared_file(
        "fixtures/binlog/mysql-public/osheroff__mysql-binlog-connector-java/mysql-bin.sakila.gz.mysqlbinlog.txt.gz",
    ) else {
        return;
    };
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    let mut h = mem();
    let (mut routines, mut tables) = (0, 0);
    for ev in query_events(&text) {
        if is_transaction_control(&ev.sql) {
            continue;
        }
        let out = h.apply_ddl(&pos("mysql-bin.000001", ev.offset), &ev.db, &ev.sql).unwrap();
        assert!(out.problems.is_empty(), "{}: {:?}", ev.sql, out.problems);
        let up = ev.sql.to_ascii_uppercase();
        if up.starts_with("CREATE TABLE") {
            tables += 1;
            assert_eq!(out.query.event_type, QueryEventType::Create);
        } else if up.starts_with("CREATE DEFINER") || up.starts_with("CREATE ALGORITHM") {
            // Triggers (bodies full of `;` and INSERTs), views, procedures, functions.
            routines += 1;
            assert_eq!(
                (out.query.event_type, out.query.table.as_str()),
                (QueryEventType::Query, "")
            );
            assert!(out.changed.is_empty());
        }
    }
    assert_eq!((tables, routines), (16, 19));
    let end = pos("mysql-bin.000001", u64::MAX);
    assert_eq!(h.tables_at(&end).len(), 16);
    let film = h.table_at("sakila", "film", &end).unwrap();
    let got: Vec<(&str, &str)> =
        film.columns.iter().map(|c| (c.name.as_str(), c.mysql_type.as_str())).collect();
    assert_eq!(
        got,
        [
            ("film_id", "smallint unsigned"),
            ("title", "varchar(255)"),
            ("description", "text"),
            ("release_year", "year"),
            ("language_id", "tinyint unsigned"),
            ("original_language_id", "tinyint unsigned"),
            ("rental_duration", "tinyint unsigned"),
            ("rental_rate", "decimal(4,2)"),
            ("length", "smallint unsigned"),
            ("replacement_cost", "decimal(5,2)"),
            ("rating", "enum('G','PG','PG-13','R','NC-17')"),
            (
                "special_features",
                "set('Trailers','Commentaries','Deleted Scenes','Behind the Scenes')"
            ),
            ("last_update", "timestamp"),
        ]
    );
    assert_eq!(film.charset.as_deref(), Some("utf8"));
    assert_eq!(
        h.table_at("sakila", "film_actor", &end).unwrap().primary_key,
        ["actor_id", "film_id"]
    );
    let address = h.table_at("sakila", "address", &end).unwrap();
    assert_eq!(
        (address.columns.len(), address.primary_key.as_slice()),
        (8, &["address_id".to_owned()][..])
    );
}

#[test]
fn data_dir_history_is_locked_by_one_opener() {
    let dir = TempDir::new("lock");
    let h = SchemaHistory::open_exclusive(&dir.0, HistoryOptions::default()).unwrap();
    let second = SchemaHistory::open_exclusive(&dir.0, HistoryOptions::default());
    assert!(matches!(second, Err(HistoryError::Locked { .. })), "{second:?}");
    // Readers are not writers.
    SchemaHistory::open(&dir.0, HistoryOptions::default()).unwrap();
    drop(h);
    SchemaHistory::open_exclusive(&dir.0, HistoryOptions::default()).unwrap();
}

/// A definition fetched now (`SHOW CREATE TABLE`) is refused for rows before a DDL of the table
/// that the history has already seen: it describes the table after that DDL.
#[test]
fn current_snapshot_is_refused_before_a_known_later_ddl() {
    let mut h = mem();
    h.apply_ddl(&pos("bin.000002", 100), "d", "ALTER TABLE t ADD c INT").unwrap();
    let now = SnapshotTable {
        schema: "d".into(),
        ddl: Some("CREATE TABLE `t` (`a` int(11) NOT NULL, `c` int(11))".into()),
    };
    let t = canal_core::schema::TableName::new("d", "t");
    let err = h
        .record_current_snapshot(
            &pos("bin.000001", 4),
            std::slice::from_ref(&now),
            std::slice::from_ref(&t),
        )
        .unwrap_err();
    match err {
        HistoryError::SnapshotBeforeDdl { table, position, ddl } => {
            assert_eq!(table, t);
            assert_eq!(position, pos("bin.000001", 4));
            assert_eq!(ddl, pos("bin.000002", 100));
        }
        e => panic!("{e}"),
    }
    assert_eq!(h.lookup("d", "t", &pos("bin.000001", 5)), Lookup::NotTracked);
    // After that DDL (or for a table without a later DDL) it is recorded.
    h.record_current_snapshot(&pos("bin.000002", 200), &[now], &[t]).unwrap();
    assert_eq!(names(&h.table_at("d", "t", &pos("bin.000002", 201)).unwrap()), ["a", "c"]);
}

/// A history rebuilt from shipped records, as an activation does (`replace_records`).
fn rebuilt(records: Vec<canal_core::schema::HistoryRecord>) -> SchemaHistory {
    let mut h = SchemaHistory::new(HistoryOptions::default());
    h.replace_records(records).unwrap();
    h
}
