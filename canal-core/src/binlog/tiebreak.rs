//! The binlog as the tie-breaker: a TABLE_MAP with FULL optional metadata (`binlog_row_metadata=
//! FULL`: column names, signedness, charsets, ENUM/SET values) is compared with the schema
//! history's definition, and on disagreement a definition built from the binlog replaces it for
//! that position (see [`super::entry::Converter`] and docs/compatibility.md).

use super::decode::{MapColumn, TableMap, mysql_type_fits, ty};
use crate::schema::{ColumnDef, TableDef};

const BINARY_COLLATION: u16 = 63;

fn is_numeric(real: u8) -> bool {
    matches!(
        real,
        ty::TINY
            | ty::SHORT
            | ty::INT24
            | ty::LONG
            | ty::LONGLONG
            | ty::DECIMAL
            | ty::NEWDECIMAL
            | ty::FLOAT
            | ty::DOUBLE
    )
}

fn is_stringish(real: u8) -> bool {
    matches!(
        real,
        ty::STRING
            | ty::VAR_STRING
            | ty::VARCHAR
            | ty::BLOB
            | ty::TINY_BLOB
            | ty::MEDIUM_BLOB
            | ty::LONG_BLOB
    )
}

/// Whether the history's column is a binary string (its charset or type says so).
fn def_is_binary(c: &ColumnDef, def: &TableDef) -> bool {
    let t = c.mysql_type.to_ascii_lowercase();
    t.contains("binary")
        || t.contains("blob")
        || c.effective_charset(def).is_some_and(|cs| cs.eq_ignore_ascii_case("binary"))
}

/// Why the history's definition disagrees with a TABLE_MAP that carries FULL metadata, or `None`
/// when they agree (or the map carries no column names, so there is nothing to compare).
pub(crate) fn disagreement(def: &TableDef, map: &TableMap) -> Option<String> {
    if !map.has_column_names {
        return None;
    }
    if def.columns.len() != map.columns.len() {
        return Some(format!(
            "the binlog has {} columns, the history {}",
            map.columns.len(),
            def.columns.len()
        ));
    }
    for (i, (c, mc)) in def.columns.iter().zip(&map.columns).enumerate() {
        if let Some(name) = &mc.name
            && **name != *c.name
        {
            return Some(format!(
                "column {i} is `{name}` in the binlog, `{}` in the history",
                c.name
            ));
        }
        if !mysql_type_fits(&c.mysql_type, mc.real_type) {
            return Some(format!(
                "column `{}` is binlog type {} but `{}` in the history",
                c.name, mc.real_type, c.mysql_type
            ));
        }
        if is_numeric(mc.real_type)
            && let Some(unsigned) = mc.unsigned
            && unsigned != c.unsigned
        {
            return Some(format!(
                "column `{}` is {} in the binlog",
                c.name,
                if unsigned { "unsigned" } else { "signed" }
            ));
        }
        if let Some(values) = &mc.values
            && matches!(mc.real_type, ty::ENUM | ty::SET)
            && **values != *c.values
        {
            return Some(format!("the members of `{}` differ: {values:?} in the binlog", c.name));
        }
        if is_stringish(mc.real_type)
            && let Some(cs) = mc.charset
            && (cs == BINARY_COLLATION) != def_is_binary(c, def)
        {
            return Some(format!(
                "column `{}` is {} in the binlog",
                c.name,
                if cs == BINARY_COLLATION { "binary" } else { "text" }
            ));
        }
    }
    None
}

/// The table as the binlog describes it: every column keeps what the history knew about a
/// column of the same name and a fitting type (type text, nullability, keys), with the binlog's
/// name, signedness and members; other columns get a type text derived from the binlog.
pub(crate) fn def_from_binlog(def: &TableDef, map: &TableMap) -> TableDef {
    let columns: Vec<ColumnDef> = map
        .columns
        .iter()
        .enumerate()
        .map(|(i, mc)| {
            let name = mc.name.as_deref().map_or_else(|| format!("@{}", i + 1), str::to_owned);
            let known = def
                .column(&name)
                .filter(|c| mysql_type_fits(&c.mysql_type, mc.real_type))
                .filter(|c| {
                    !is_stringish(mc.real_type)
                        || mc
                            .charset
                            .is_none_or(|cs| (cs == BINARY_COLLATION) == def_is_binary(c, def))
                });
            let mut c = match known {
                Some(c) => c.clone(),
                None => column_from_map(mc),
            };
            c.name = name;
            if is_numeric(mc.real_type)
                && let Some(unsigned) = mc.unsigned
                && unsigned != c.unsigned
            {
                c.unsigned = unsigned;
                c.mysql_type = with_signedness(&c.mysql_type, unsigned);
                c.zerofill &= unsigned;
            }
            if let Some(values) =
                mc.values.as_deref().filter(|_| matches!(mc.real_type, ty::ENUM | ty::SET))
                && values != c.values.as_slice()
            {
                c.values = values.to_vec();
                c.mysql_type = members_type(&c.data_type, values);
            }
            if let Some(pk) = mc.is_pk {
                c.is_pk = pk;
            }
            c.nullable = mc.nullable;
            c
        })
        .collect();
    let primary_key = columns.iter().filter(|c| c.is_pk).map(|c| c.name.clone()).collect();
    TableDef {
        schema: def.schema.clone(),
        name: def.name.clone(),
        columns,
        primary_key,
        charset: def.charset.clone(),
        collation: def.collation.clone(),
    }
}

/// The type text with the other signedness: ` unsigned` added or removed, and an integer display
/// width dropped when it is the one the server prints by default for the old signedness
/// (`int(10) unsigned` → `int`, which the converter renders `int(11)` where widths are printed).
fn with_signedness(mysql_type: &str, unsigned: bool) -> String {
    let t = mysql_type.replace(" unsigned", "").replace(" zerofill", "");
    let default_width = |base: &str, unsigned: bool| match (base, unsigned) {
        ("tinyint", false) => Some("4"),
        ("tinyint", true) => Some("3"),
        ("smallint", false) => Some("6"),
        ("smallint", true) => Some("5"),
        ("mediumint", false) => Some("9"),
        ("mediumint", true) => Some("8"),
        ("int", false) => Some("11"),
        ("int", true) => Some("10"),
        ("bigint", _) => Some("20"),
        _ => None,
    };
    let t = match t.split_once('(') {
        Some((base, rest)) => match rest.split_once(')') {
            Some((width, after)) if default_width(base, !unsigned) == Some(width) => {
                format!("{base}{after}")
            }
            _ => t.clone(),
        },
        None => t.clone(),
    };
    if unsigned { format!("{t} unsigned") } else { t }
}

fn members_type(data_type: &str, values: &[String]) -> String {
    let quoted: Vec<String> =
        values.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect();
    format!("{data_type}({})", quoted.join(","))
}

/// Charset name and maximum bytes per character of the collations servers use by default; `None`
/// for others (the character length of a string column is then unknown).
fn collation_charset(id: u16) -> Option<(&'static str, u16)> {
    Some(match id {
        63 => ("binary", 1),
        5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => ("latin1", 1),
        11 | 65 => ("ascii", 1),
        33 | 83 | 192..=215 | 223 => ("utf8mb3", 3),
        45 | 46 | 224..=247 | 255..=323 => ("utf8mb4", 4),
        28 | 87 => ("gbk", 2),
        _ => return None,
    })
}

/// A column derived from the TABLE_MAP alone: the type text the server would print, as far as
/// the binlog tells it.
fn column_from_map(mc: &MapColumn) -> ColumnDef {
    let cs = mc.charset.and_then(collation_charset);
    let binary = mc.charset == Some(BINARY_COLLATION);
    let chars =
        |bytes: u16| cs.map_or(u32::from(bytes), |(_, mb)| u32::from(bytes) / u32::from(mb.max(1)));
    let fsp = |m: u16| if m == 0 { String::new() } else { format!("({m})") };
    let meta = mc.meta;
    let (data_type, mysql_type): (String, String) = match mc.real_type {
        ty::TINY => ("tinyint".into(), "tinyint".into()),
        ty::SHORT => ("smallint".into(), "smallint".into()),
        ty::INT24 => ("mediumint".into(), "mediumint".into()),
        ty::LONG => ("int".into(), "int".into()),
        ty::LONGLONG => ("bigint".into(), "bigint".into()),
        ty::FLOAT => ("float".into(), "float".into()),
        ty::DOUBLE => ("double".into(), "double".into()),
        ty::NEWDECIMAL | ty::DECIMAL => {
            ("decimal".into(), format!("decimal({},{})", meta >> 8, meta & 0xff))
        }
        ty::BIT => ("bit".into(), format!("bit({})", (meta >> 8) * 8 + (meta & 0xff))),
        ty::TIMESTAMP | ty::TIMESTAMP2 => ("timestamp".into(), format!("timestamp{}", fsp(meta))),
        ty::DATETIME | ty::DATETIME2 => ("datetime".into(), format!("datetime{}", fsp(meta))),
        ty::TIME | ty::TIME2 => ("time".into(), format!("time{}", fsp(meta))),
        ty::DATE | ty::NEWDATE => ("date".into(), "date".into()),
        ty::YEAR => ("year".into(), "year".into()),
        ty::JSON => ("json".into(), "json".into()),
        ty::GEOMETRY => ("geometry".into(), "geometry".into()),
        ty::ENUM => ("enum".into(), "enum".into()),
        ty::SET => ("set".into(), "set".into()),
        ty::VARCHAR | ty::VAR_STRING if binary => {
            ("varbinary".into(), format!("varbinary({meta})"))
        }
        ty::VARCHAR | ty::VAR_STRING => ("varchar".into(), format!("varchar({})", chars(meta))),
        ty::STRING => {
            let byte0 = meta >> 8;
            let len =
                if meta >= 256 { (meta & 0xff) | (((byte0 & 0x30) ^ 0x30) << 4) } else { meta };
            if binary {
                ("binary".into(), format!("binary({len})"))
            } else {
                ("char".into(), format!("char({})", chars(len)))
            }
        }
        ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB | ty::BLOB => {
            let size = ["tiny", "", "medium", "long"][usize::from((meta & 0xff).clamp(1, 4) - 1)];
            let t = if mc.charset.is_some() && !binary {
                format!("{size}text")
            } else {
                format!("{size}blob")
            };
            (t.clone(), t)
        }
        _ => (String::new(), String::new()),
    };
    let mut c = ColumnDef {
        name: String::new(),
        mysql_type,
        data_type: data_type.clone(),
        unsigned: false,
        zerofill: false,
        nullable: mc.nullable,
        charset: cs.map(|(name, _)| name.to_owned()),
        collation: None,
        values: Vec::new(),
        is_pk: mc.is_pk.unwrap_or(false),
        auto_increment: false,
        generated: None,
    };
    if let Some(values) = mc.values.as_deref() {
        c.values = values.to_vec();
        c.mysql_type = members_type(&data_type, values);
    }
    c
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schema::{HistoryOptions, SchemaHistory, SchemaPosition, SnapshotTable};

    fn def(ddl: &str) -> TableDef {
        let mut h = SchemaHistory::new(HistoryOptions::default());
        let pos = SchemaPosition::new("b.1", 4);
        let snap = SnapshotTable { schema: "d".into(), ddl: Some(ddl.into()) };
        assert!(h.record_snapshot(&pos, &[snap]).unwrap().is_empty());
        h.tables_at(&pos)[0].as_ref().clone()
    }

    fn col(t: u8, meta: u16, name: &str) -> MapColumn {
        let mut c = MapColumn::new(t, meta);
        c.name = Some(Arc::from(name));
        c
    }

    fn map(columns: Vec<MapColumn>) -> TableMap {
        TableMap {
            table_id: 1,
            flags: 0,
            schema: Arc::from("d"),
            table: Arc::from("t"),
            columns,
            has_optional_metadata: true,
            has_column_names: true,
        }
    }

    #[test]
    fn agreeing_metadata_changes_nothing() {
        let d = def("CREATE TABLE t (id int NOT NULL, v varchar(10), PRIMARY KEY (id))");
        let mut v = col(ty::VARCHAR, 40, "v");
        v.charset = Some(45);
        let m = map(vec![col(ty::LONG, 0, "id"), v]);
        assert_eq!(disagreement(&d, &m), None);
        // Without names (MINIMAL) there is nothing to compare.
        let mut m = map(vec![col(ty::LONG, 0, "x")]);
        m.has_column_names = false;
        assert_eq!(disagreement(&d, &m), None);
    }

    #[test]
    fn names_signedness_members_and_binary_disagree() {
        let d = def(
            "CREATE TABLE t (id int unsigned NOT NULL, e enum('a','b'), s varbinary(4), c decimal(5,2), PRIMARY KEY (id))",
        );
        let mut id = col(ty::LONG, 0, "id");
        id.unsigned = Some(false);
        id.is_pk = Some(true);
        let mut e = col(ty::STRING, (u16::from(ty::ENUM) << 8) | 1, "e");
        e.real_type = ty::ENUM;
        e.values = Some(Arc::from(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]));
        let mut s = col(ty::VARCHAR, 16, "s");
        s.charset = Some(45);
        let b = col(ty::LONG, 0, "b");
        let m = map(vec![id, e, s, b]);
        let why = disagreement(&d, &m).unwrap();
        assert!(why.contains("signed"), "{why}");
        let fixed = def_from_binlog(&d, &m);
        let types: Vec<(&str, &str)> =
            fixed.columns.iter().map(|c| (c.name.as_str(), c.mysql_type.as_str())).collect();
        assert_eq!(
            types,
            [("id", "int"), ("e", "enum('a','b','c')"), ("s", "varchar(4)"), ("b", "int")]
        );
        assert_eq!(fixed.primary_key, ["id"]);
        assert_eq!(disagreement(&fixed, &m), None, "the fixed definition agrees");
    }

    #[test]
    fn signedness_flips_drop_default_widths() {
        assert_eq!(with_signedness("int(10) unsigned", false), "int");
        assert_eq!(with_signedness("int(11)", true), "int unsigned");
        assert_eq!(with_signedness("int(5) unsigned zerofill", false), "int(5)");
        assert_eq!(with_signedness("bigint(20)", true), "bigint unsigned");
    }
}
