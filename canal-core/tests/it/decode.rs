//! Golden tests for the pure binlog decoder: every event and every row of the fixture binlogs rendered
//! to a stable text form and compared with `tests/golden/*.txt` (regenerate with `UPDATE_EXPECT=1`),
//! plus checks of specific values against the upstream expectations and mysqlbinlog sidecars listed
//! in `../shared/fixtures/binlog/PROVENANCE.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use canal_core::binlog::decode::{
    BinlogFile, BinlogReader, ColumnMeta, DecodeError, DecodeOptions, Decoder, EventData, RowImage,
    RowsKind, TableSchema, event_type,
};

use crate::support;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// Values longer than this are shown as length + prefix + FNV hash, to keep golden files small.
const MAX_SHOWN: usize = 120;

fn show_value(v: &str) -> String {
    let esc = |s: &str| s.escape_debug().to_string();
    if v.chars().count() <= MAX_SHOWN {
        format!("\"{}\"", esc(v))
    } else {
        let prefix: String = v.chars().take(40).collect();
        let h = v
            .bytes()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        format!("<{} chars \"{}\"… fnv={h:016x}>", v.chars().count(), esc(&prefix))
    }
}

fn type_name(t: u8) -> String {
    use event_type as e;
    let n = match t {
        e::QUERY => "QUERY",
        e::STOP => "STOP",
        e::ROTATE => "ROTATE",
        e::INTVAR => "INTVAR",
        e::RAND => "RAND",
        e::USER_VAR => "USER_VAR",
        e::FORMAT_DESCRIPTION => "FORMAT_DESCRIPTION",
        e::XID => "XID",
        e::TABLE_MAP => "TABLE_MAP",
        e::WRITE_ROWS_V1 => "WRITE_ROWS_V1",
        e::UPDATE_ROWS_V1 => "UPDATE_ROWS_V1",
        e::DELETE_ROWS_V1 => "DELETE_ROWS_V1",
        e::HEARTBEAT => "HEARTBEAT",
        e::ROWS_QUERY => "ROWS_QUERY",
        e::WRITE_ROWS_V2 => "WRITE_ROWS_V2",
        e::UPDATE_ROWS_V2 => "UPDATE_ROWS_V2",
        e::DELETE_ROWS_V2 => "DELETE_ROWS_V2",
        e::GTID => "GTID",
        e::ANONYMOUS_GTID => "ANONYMOUS_GTID",
        e::PREVIOUS_GTIDS => "PREVIOUS_GTIDS",
        e::XA_PREPARE => "XA_PREPARE",
        e::PARTIAL_UPDATE_ROWS => "PARTIAL_UPDATE_ROWS",
        e::TRANSACTION_PAYLOAD => "TRANSACTION_PAYLOAD",
        e::HEARTBEAT_V2 => "HEARTBEAT_V2",
        e::GTID_TAGGED => "GTID_TAGGED",
        e::MARIA_ANNOTATE_ROWS => "MARIA_ANNOTATE_ROWS",
        e::MARIA_BINLOG_CHECKPOINT => "MARIA_BINLOG_CHECKPOINT",
        e::MARIA_GTID => "MARIA_GTID",
        e::MARIA_GTID_LIST => "MARIA_GTID_LIST",
        e::MARIA_QUERY_COMPRESSED => "MARIA_QUERY_COMPRESSED",
        e::MARIA_WRITE_ROWS_COMPRESSED_V1 => "MARIA_WRITE_ROWS_COMPRESSED_V1",
        e::MARIA_UPDATE_ROWS_COMPRESSED_V1 => "MARIA_UPDATE_ROWS_COMPRESSED_V1",
        e::MARIA_DELETE_ROWS_COMPRESSED_V1 => "MARIA_DELETE_ROWS_COMPRESSED_V1",
        _ => return format!("type{t}"),
    };
    n.to_owned()
}

fn short(s: &str) -> String {
    show_value(s)
}

/// Decoded view of one fixture: the golden text plus the rows for value checks.
#[derive(Default)]
struct Dump {
    text: String,
    /// (schema.table, kind, before, after) with `name=value` strings (`NULL` for null).
    rows: Vec<RowRec>,
    events: usize,
    unknown: usize,
}

#[derive(Debug, Clone)]
struct RowRec {
    table: String,
    kind: RowsKind,
    before: Vec<(String, Option<String>, i32)>,
    after: Vec<(String, Option<String>, i32)>,
}

impl RowRec {
    fn after(&self, col: &str) -> Option<&str> {
        self.after.iter().find(|c| c.0 == col).and_then(|c| c.1.as_deref())
    }
    fn before(&self, col: &str) -> Option<&str> {
        self.before.iter().find(|c| c.0 == col).and_then(|c| c.1.as_deref())
    }
    fn image(&self) -> &[(String, Option<String>, i32)] {
        if self.kind == RowsKind::Delete { &self.before } else { &self.after }
    }
}

fn decode_file(bytes: &[u8], opts: DecodeOptions, schemas: Vec<TableSchema>) -> Dump {
    let mut dec = Decoder::new(opts);
    for s in schemas {
        dec.put_schema(s);
    }
    let mut d = Dump::default();
    let file = match BinlogFile::new(bytes) {
        Ok(f) => f,
        Err(e) => {
            writeln!(d.text, "error: {e}").unwrap();
            return d;
        }
    };
    for item in file {
        let (at, buf) = match item {
            Ok(x) => x,
            Err(e) => {
                writeln!(d.text, "framing error: {e}").unwrap();
                break;
            }
        };
        dump_event(&mut dec, &mut d, at, buf, false);
    }
    d
}

fn dump_event(dec: &mut Decoder, d: &mut Dump, at: u64, buf: &[u8], inner: bool) {
    d.events += 1;
    let ind = if inner { "    " } else { "" };
    let ev = match if inner { dec.decode_payload_event(buf) } else { dec.decode(buf) } {
        Ok(ev) => ev,
        Err(e) => {
            writeln!(d.text, "{ind}@{at} error: {e}").unwrap();
            return;
        }
    };
    let h = ev.header;
    write!(
        d.text,
        "{ind}@{at} {} ts={} server={} size={} next={}",
        type_name(h.event_type),
        h.timestamp,
        h.server_id,
        h.event_size,
        h.log_pos
    )
    .unwrap();
    if h.flags != 0 {
        write!(d.text, " flags={:#x}", h.flags).unwrap();
    }
    d.text.push('\n');
    let t = &mut d.text;
    match &ev.data {
        EventData::FormatDescription(f) => {
            writeln!(
                t,
                "{ind}  v{} server={:?} header={} checksum={:?} post_headers={}",
                f.binlog_version,
                f.server_version,
                f.header_len,
                f.checksum,
                f.post_header_lens.len()
            )
            .unwrap();
        }
        EventData::Rotate(r) => {
            writeln!(t, "{ind}  next={:?} pos={}", r.next_file, r.position).unwrap()
        }
        EventData::Query(q) => writeln!(
            t,
            "{ind}  thread={} exec={} err={} db={:?} sql={}",
            q.thread_id,
            q.exec_time,
            q.error_code,
            q.schema,
            short(&q.sql)
        )
        .unwrap(),
        EventData::Xid(x) => writeln!(t, "{ind}  xid={x}").unwrap(),
        EventData::TableMap(m) => {
            writeln!(
                t,
                "{ind}  id={} `{}`.`{}` columns={} optional={} names={}",
                m.table_id,
                m.schema,
                m.table,
                m.columns.len(),
                m.has_optional_metadata,
                m.has_column_names
            )
            .unwrap();
            for (i, c) in m.columns.iter().enumerate() {
                write!(
                    t,
                    "{ind}    [{i}] type={} real={} meta={:#x} null={}",
                    c.binlog_type, c.real_type, c.meta, c.nullable
                )
                .unwrap();
                if let Some(n) = &c.name {
                    write!(t, " name={n}").unwrap();
                }
                if let Some(u) = c.unsigned {
                    write!(t, " unsigned={u}").unwrap();
                }
                if let Some(cs) = c.charset {
                    write!(t, " charset={cs}").unwrap();
                }
                if let Some(v) = &c.values {
                    write!(t, " values={v:?}").unwrap();
                }
                if let Some(g) = c.geometry_type {
                    write!(t, " geometry={g}").unwrap();
                }
                if let Some(p) = c.is_pk {
                    write!(t, " pk={p}").unwrap();
                }
                if let Some(v) = c.visible {
                    write!(t, " visible={v}").unwrap();
                }
                if let Some(v) = c.vector_dimension {
                    write!(t, " dim={v}").unwrap();
                }
                t.push('\n');
            }
        }
        EventData::Rows(r) => {
            let plan = dec.table(r.table_id).cloned();
            let name =
                plan.as_ref().map(|p| format!("{}.{}", p.schema(), p.table())).unwrap_or_default();
            writeln!(
                t,
                "{ind}  {:?} table_id={} `{}` flags={:#x} columns={} extra={}",
                r.kind,
                r.table_id,
                name,
                r.flags,
                r.column_count,
                r.extra.len()
            )
            .unwrap();
            match dec.rows(r) {
                Err(e) => writeln!(t, "{ind}  rows error: {e}").unwrap(),
                Ok(mut rd) => {
                    let (mut b, mut a) = (RowImage::new(), RowImage::new());
                    let mut n = 0;
                    loop {
                        match rd.next_row(&mut b, &mut a) {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => {
                                writeln!(t, "{ind}  row {n} error: {e}").unwrap();
                                break;
                            }
                        }
                        let plan = rd.plan();
                        let mut rec = RowRec {
                            table: name.clone(),
                            kind: r.kind,
                            before: vec![],
                            after: vec![],
                        };
                        for (label, img) in [("B", &b), ("A", &a)] {
                            for (cell, v) in img.iter() {
                                let col = &plan.columns[cell.index as usize];
                                let shown = v.map_or_else(|| "NULL".to_owned(), show_value);
                                writeln!(
                                    t,
                                    "{ind}    {n}{label} [{}] {} sql={} {}",
                                    cell.index, col.name, cell.sql_type, shown
                                )
                                .unwrap();
                                let entry =
                                    (col.name.to_string(), v.map(str::to_owned), cell.sql_type);
                                if label == "B" {
                                    rec.before.push(entry)
                                } else {
                                    rec.after.push(entry)
                                }
                            }
                        }
                        d.rows.push(rec);
                        n += 1;
                    }
                }
            }
        }
        EventData::TransactionPayload(p) => {
            writeln!(
                t,
                "{ind}  compression={} uncompressed={} inflated={}",
                p.compression,
                p.uncompressed_size,
                p.payload.len()
            )
            .unwrap();
            let payload = p.payload.clone();
            for (i, inner_ev) in ev_payload_events(&payload).into_iter().enumerate() {
                match inner_ev {
                    Ok(buf) => dump_event(dec, d, i as u64, buf, true),
                    Err(e) => writeln!(d.text, "    payload framing error: {e}").unwrap(),
                }
            }
        }
        EventData::Gtid(g) => writeln!(
            t,
            "{ind}  {} anonymous={} flags={} last_committed={} seq={}",
            g.to_gtid_string(),
            g.anonymous,
            g.flags,
            g.last_committed,
            g.sequence_number
        )
        .unwrap(),
        EventData::PreviousGtids(s) => {
            for set in s {
                let iv: Vec<String> =
                    set.intervals.iter().map(|i| format!("[{},{})", i.start, i.end)).collect();
                writeln!(t, "{ind}  {:02x?} tag={:?} {}", set.sid, set.tag, iv.join(" ")).unwrap();
            }
        }
        EventData::RowsQuery(s) => writeln!(t, "{ind}  {}", short(s)).unwrap(),
        EventData::Heartbeat(hb) => {
            writeln!(t, "{ind}  {:?} {:?}", hb.log_file, hb.log_pos).unwrap()
        }
        EventData::IntVar(v) => writeln!(t, "{ind}  kind={} value={}", v.kind, v.value).unwrap(),
        EventData::Rand(r) => writeln!(t, "{ind}  seed1={} seed2={}", r.seed1, r.seed2).unwrap(),
        EventData::UserVar(u) => writeln!(t, "{ind}  {}", u.to_sql()).unwrap(),
        EventData::XaPrepare(x) => writeln!(
            t,
            "{ind}  one_phase={} format={} gtrid={:?} bqual={:?}",
            x.one_phase,
            x.format_id,
            String::from_utf8_lossy(&x.gtrid),
            String::from_utf8_lossy(&x.bqual)
        )
        .unwrap(),
        EventData::Stop => {}
        EventData::Incident { code, message } => {
            writeln!(t, "{ind}  code={code} {message:?}").unwrap()
        }
        EventData::AnnotateRows(s) => writeln!(t, "{ind}  {}", short(s)).unwrap(),
        EventData::BinlogCheckpoint(s) => writeln!(t, "{ind}  {s:?}").unwrap(),
        EventData::MariaGtid(g) => {
            writeln!(t, "{ind}  {g} flags={:#x} commit_id={:?}", g.flags, g.commit_id).unwrap()
        }
        EventData::MariaGtidList(l) => {
            let s: Vec<String> = l.iter().map(|g| g.to_string()).collect();
            writeln!(t, "{ind}  [{}]", s.join(", ")).unwrap();
        }
        EventData::Unknown { event_type } => {
            d.unknown += 1;
            writeln!(t, "{ind}  unknown type {event_type}").unwrap();
        }
        other => writeln!(t, "{ind}  {other:?}").unwrap(),
    }
}

fn ev_payload_events(payload: &[u8]) -> Vec<Result<&[u8], DecodeError>> {
    canal_core::binlog::decode::TransactionPayload {
        compression: 255,
        uncompressed_size: 0,
        payload: payload.to_vec(),
    }
    .events()
    .map(|r| r.map(|s| s.len()))
    .scan(0usize, |pos, r| {
        Some(match r {
            Ok(n) => {
                let s = &payload[*pos..*pos + n];
                *pos += n;
                Ok(s)
            }
            Err(e) => Err(e),
        })
    })
    .collect()
}

/// Compares `actual` with `tests/golden/<name>.txt`, or rewrites it under `UPDATE_EXPECT=1`.
fn check_golden(name: &str, actual: &str) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.txt"));
    if std::env::var("UPDATE_EXPECT").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run with UPDATE_EXPECT=1 to create it)", path.display())
    });
    if expected != actual {
        let line = expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{} differs from the decoder's output at line {} (run with UPDATE_EXPECT=1 and review the diff)\nexpected: {:?}\nactual:   {:?}",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

/// Permissively licensed fixtures copied into `tests/fixtures` (see its README).
const LOCAL: &[(&str, &str)] = &[
    ("blackbeam-json", "blackbeam/json.binlog.000001"),
    ("blackbeam-json-opaque", "blackbeam/json-opaque.binlog"),
    ("blackbeam-transaction-compression", "blackbeam/transaction_compression.000001"),
    ("blackbeam-enum-string-set", "blackbeam/mysql-enum-string-set.000001"),
    ("blackbeam-type-bit", "blackbeam/mysql_type_bit.000001"),
    ("blackbeam-time-issue", "blackbeam/time_issue.000001"),
    ("blackbeam-minimal-row-metadata", "blackbeam/minimal_row_metadata.000001"),
    ("blackbeam-invisible-columns", "blackbeam/binlog-invisible-columns.000001"),
    ("blackbeam-gtid-tag", "blackbeam/binlog_transaction_with_GTID_TAG.000001"),
    ("blackbeam-previous-gtid-no-tag", "blackbeam/binlog_transaction_previous_GTID_no_tag.000001"),
    ("blackbeam-vector", "blackbeam/vector.binlog"),
    ("blackbeam-mariadb", "blackbeam/mariadb-bin.000001"),
    ("osheroff-checksum-crc32", "osheroff/mysql-bin.checksum-crc32"),
    ("osheroff-checksum-none", "osheroff/mysql-bin.checksum-none"),
    ("osheroff-compressed", "osheroff/mysql-bin.compressed"),
    ("osheroff-aurora-padding", "osheroff/mysql-bin.aurora-padding"),
    ("canal-dbsync", "canal/dbsync-mysql-bin.000001"),
    ("canal-tsdb-2", "canal/tsdb-mysql-bin.000002"),
    ("canal-tsdb-3", "canal/tsdb-mysql-bin.000003"),
    ("rust-us-delete-rows-v2", "rust-us/8.0_32_delete_rows_v2.binlog.000001"),
    ("rust-us-write-rows-v2", "rust-us/5.7_30_write_rows_v2.log.bin"),
    ("rust-us-user-var", "rust-us/5.7_14_user_var.log.bin"),
    ("go-mysql-decimal", "go-mysql/tcb-eval002c-bin.003320"),
    ("zalora-01", "zalora/mysql-bin.01"),
    ("zalora-07-mariadb", "zalora/mysql-bin.07"),
];

/// Fixtures that stay in ../shared: MariaDB 10.11 files generated for this project.
const SHARED_GOLDEN: &[(&str, &str)] = &[
    ("mariadb-generated-1", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000001"),
    ("mariadb-generated-2", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000002"),
    ("mariadb-generated-3", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000003"),
    ("mariadb-generated-4", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000004"),
    ("mariadb-generated-5", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000005"),
    ("mariadb-generated-6", "fixtures/binlog/mariadb-10.11-generated/mariadb-bin.000006"),
];

fn local(rel: &str) -> Dump {
    let bytes = std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    decode_file(&bytes, DecodeOptions::default(), vec![])
}

fn shared(rel: &str) -> Option<Dump> {
    let p = support::shared_file(rel)?;
    Some(decode_file(&std::fs::read(p).unwrap(), DecodeOptions::default(), vec![]))
}

#[test]
fn golden_local_fixtures() {
    for (name, rel) in LOCAL {
        let d = local(rel);
        check_golden(name, &d.text);
    }
}

#[test]
fn golden_generated_mariadb_fixtures() {
    for (name, rel) in SHARED_GOLDEN {
        let Some(d) = shared(rel) else { return };
        check_golden(name, &d.text);
    }
}

#[test]
fn no_fixture_has_decode_errors() {
    for (_, rel) in LOCAL {
        let d = local(rel);
        assert!(
            !d.text.contains("error"),
            "{rel}:\n{}",
            d.text.lines().filter(|l| l.contains("error")).collect::<Vec<_>>().join("\n")
        );
    }
    for (_, rel) in SHARED_GOLDEN {
        let Some(d) = shared(rel) else { return };
        assert!(
            !d.text.contains(" error"),
            "{rel}:\n{}",
            d.text.lines().filter(|l| l.contains(" error")).collect::<Vec<_>>().join("\n")
        );
    }
}
