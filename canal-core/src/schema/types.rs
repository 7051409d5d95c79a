//! Column type normalization: turns the type words of a column definition into the
//! `mysql_type`/`data_type` pair documented on [`crate::schema::ColumnDef`].

/// A column type as written, before normalization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawType {
    /// Canonical base type (synonyms already resolved), lower case.
    pub data_type: String,
    /// Numeric parameters as written, e.g. `["10", "2"]`.
    pub params: Vec<String>,
    /// ENUM/SET members.
    pub values: Vec<String>,
    pub unsigned: bool,
    pub zerofill: bool,
    /// Charset implied by the type (`NCHAR` → utf8mb3) or stated after it.
    pub charset: Option<String>,
    pub collation: Option<String>,
    /// `BINARY` attribute on a character type (binary collation of the charset).
    pub binary_collation: bool,
    /// `BOOL`/`BOOLEAN`: printed as `tinyint(1)`.
    pub boolean: bool,
    /// `SERIAL`: `bigint unsigned NOT NULL AUTO_INCREMENT UNIQUE`.
    pub serial: bool,
}

/// Resolves a (possibly multi-word, already lower-cased) type name to its canonical base type and
/// an implied charset. `next` is the following word (lower case), if any; the returned bool says
/// whether it was consumed.
pub(crate) fn canonical_type(
    word: &str,
    next: Option<&str>,
) -> (String, Option<&'static str>, bool) {
    const NATIONAL: Option<&str> = Some("utf8mb3");
    let (t, cs, used): (&str, Option<&'static str>, bool) = match (word, next) {
        ("double", Some("precision")) => ("double", None, true),
        ("character" | "char", Some("varying")) => ("varchar", None, true),
        ("national", Some("varchar")) => ("varchar", NATIONAL, true),
        ("national", Some("char" | "character")) => ("char", NATIONAL, true),
        ("nchar", Some("varchar" | "varying")) => ("varchar", NATIONAL, true),
        ("nchar", _) => ("char", NATIONAL, false),
        ("nvarchar", _) => ("varchar", NATIONAL, false),
        ("long", Some("varbinary")) => ("mediumblob", None, true),
        ("long", Some("varchar")) => ("mediumtext", None, true),
        ("long", _) => ("mediumtext", None, false),
        ("character", _) => ("char", None, false),
        ("varcharacter", _) => ("varchar", None, false),
        ("integer" | "int4", _) => ("int", None, false),
        ("int1", _) => ("tinyint", None, false),
        ("int2", _) => ("smallint", None, false),
        ("int3" | "middleint", _) => ("mediumint", None, false),
        ("int8", _) => ("bigint", None, false),
        ("dec" | "numeric" | "fixed", _) => ("decimal", None, false),
        ("real" | "float8", _) => ("double", None, false),
        ("float4", _) => ("float", None, false),
        ("boolean", _) => ("bool", None, false),
        (other, _) => (other, None, false),
    };
    // `national char varying` consumed only "char"; the caller drops a following "varying".
    (t.to_owned(), cs, used)
}

/// Whether `data_type` is numeric (UNSIGNED/ZEROFILL apply).
pub(crate) fn is_numeric(data_type: &str) -> bool {
    matches!(
        data_type,
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "decimal" | "float" | "double"
    )
}

/// Whether `data_type` stores characters (charset applies).
pub(crate) fn is_textual(data_type: &str) -> bool {
    matches!(
        data_type,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
    )
}

/// Maximum bytes per character of common charsets (for `TEXT(n)` sizing); 4 when unknown, which is
/// utf8mb4, the default since MySQL 8.0.
fn mb_max_len(charset: Option<&str>) -> u64 {
    match charset.unwrap_or("utf8mb4") {
        "latin1" | "ascii" | "binary" | "latin2" | "cp1250" | "cp1251" | "cp1252" => 1,
        "gbk" | "gb2312" | "big5" | "ucs2" | "sjis" | "euckr" => 2,
        "utf8" | "utf8mb3" | "ujis" | "eucjpms" => 3,
        "gb18030" | "utf16" | "utf16le" | "utf32" | "utf8mb4" => 4,
        _ => 4,
    }
}

fn sized_lob(kind: &str, bytes: u64) -> String {
    let prefix = match bytes {
        0..=255 => "tiny",
        256..=65_535 => "",
        65_536..=16_777_215 => "medium",
        _ => "long",
    };
    format!("{prefix}{kind}")
}

/// The normalized result: `(data_type, mysql_type, charset)`.
pub(crate) fn normalize(raw: &RawType) -> (String, String, Option<String>) {
    let mut dt = raw.data_type.clone();
    let mut charset = raw.charset.clone();
    let p0 = raw.params.first().map(String::as_str);
    let p0n = p0.and_then(|p| p.parse::<u64>().ok());

    // `CHARACTER SET binary` turns character types into their binary twins, as MySQL does.
    if charset.as_deref() == Some("binary") {
        let twin = match dt.as_str() {
            "char" => Some("binary"),
            "varchar" => Some("varbinary"),
            "tinytext" => Some("tinyblob"),
            "text" => Some("blob"),
            "mediumtext" => Some("mediumblob"),
            "longtext" => Some("longblob"),
            _ => None,
        };
        if let Some(t) = twin {
            dt = t.to_owned();
            charset = None;
        }
    }

    let with_params = |name: &str, params: &[String]| {
        if params.is_empty() { name.to_owned() } else { format!("{name}({})", params.join(",")) }
    };
    let mut ty = match dt.as_str() {
        "bool" => {
            dt = "tinyint".to_owned();
            "tinyint(1)".to_owned()
        }
        "serial" => {
            dt = "bigint".to_owned();
            "bigint".to_owned()
        }
        "decimal" => match raw.params.as_slice() {
            [] => "decimal(10,0)".to_owned(),
            [p] => format!("decimal({p},0)"),
            ps => with_params("decimal", ps),
        },
        "float" if raw.params.len() == 1 => {
            if p0n.is_some_and(|p| p > 24) {
                dt = "double".to_owned();
                "double".to_owned()
            } else {
                "float".to_owned()
            }
        }
        "char" | "binary" | "bit" if raw.params.is_empty() => format!("{dt}(1)"),
        "time" | "datetime" | "timestamp" if p0n == Some(0) => dt.clone(),
        "blob" | "text" if p0n.is_some() => {
            let n = p0n.unwrap_or(0);
            let bytes =
                if dt == "text" { n.saturating_mul(mb_max_len(charset.as_deref())) } else { n };
            dt = sized_lob(&dt, bytes);
            dt.clone()
        }
        "enum" | "set" => {
            let vals: Vec<String> =
                raw.values.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect();
            format!("{dt}({})", vals.join(","))
        }
        _ => with_params(&dt, &raw.params),
    };
    let unsigned = raw.unsigned || raw.zerofill || raw.serial;
    if is_numeric(&dt) {
        if unsigned {
            ty.push_str(" unsigned");
        }
        if raw.zerofill {
            ty.push_str(" zerofill");
        }
    }
    (dt, ty, charset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dt: &str, params: &[&str]) -> RawType {
        RawType {
            data_type: dt.into(),
            params: params.iter().map(|s| s.to_string()).collect(),
            ..RawType::default()
        }
    }

    #[test]
    fn defaults_mysql_always_prints() {
        assert_eq!(normalize(&raw("decimal", &[])).1, "decimal(10,0)");
        assert_eq!(normalize(&raw("decimal", &["5"])).1, "decimal(5,0)");
        assert_eq!(normalize(&raw("char", &[])).1, "char(1)");
        assert_eq!(normalize(&raw("bit", &[])).1, "bit(1)");
        assert_eq!(normalize(&raw("datetime", &["0"])).1, "datetime");
        assert_eq!(normalize(&raw("datetime", &["3"])).1, "datetime(3)");
        assert_eq!(normalize(&raw("float", &["30"])).1, "double");
        assert_eq!(normalize(&raw("float", &["7", "4"])).1, "float(7,4)");
        assert_eq!(normalize(&raw("blob", &["100"])).1, "tinyblob");
        assert_eq!(normalize(&raw("blob", &["70000"])).1, "mediumblob");
        assert_eq!(normalize(&raw("text", &["100"])).1, "text");
        assert_eq!(normalize(&raw("int", &["11"])).1, "int(11)");
    }

    #[test]
    fn unsigned_zerofill_and_binary_charset() {
        let mut r = raw("int", &["10"]);
        r.zerofill = true;
        assert_eq!(normalize(&r).1, "int(10) unsigned zerofill");
        let mut r = raw("varchar", &["8"]);
        r.charset = Some("binary".into());
        let (dt, ty, cs) = normalize(&r);
        assert_eq!((dt.as_str(), ty.as_str(), cs), ("varbinary", "varbinary(8)", None));
        let mut r = raw("enum", &[]);
        r.values = vec!["a".into(), "it's".into()];
        assert_eq!(normalize(&r).1, "enum('a','it''s')");
    }
}
