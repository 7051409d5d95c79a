//! Interop with canal-python 0.4, whose message classes are generated from Canal's own `.proto`
//! files: every packet body and every Entry message, built with every field set, is encoded on one
//! side and decoded on the other, in both directions (Python ➜ Rust and Rust ➜ Python), and the
//! two encodings must be byte-identical.
//!
//! The test builds a venv with `canal-python==0.4` and `protobuf==3.20.3` under the target dir
//! (reused when present) and runs `tests/interop/canal_interop.py`. Without python3/pip/PyPI it
//! skips, or fails when `CANAL_REQUIRE_INTEGRATION=1`. `CANAL_TEST_PYTHON` picks the interpreter.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use canal_core::protocol::body::Body;
use canal_core::protocol::entry as e;
use canal_core::protocol::packet as p;
use prost::Message;

const REQUIREMENTS: [&str; 2] = ["canal-python==0.4", "protobuf==3.20.3"];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/canal_interop.py")
}

fn venv_or_skip() -> Option<PathBuf> {
    crate::support::python_venv("interop-venv", &REQUIREMENTS)
}

// ---- The logical values, mirrored from canal_interop.py. ----

fn pair(k: &str, v: &str) -> e::Pair {
    e::Pair { key: Some(k.into()), value: Some(v.into()) }
}

fn column_a() -> e::Column {
    e::Column {
        index: Some(1),
        sql_type: Some(-5),
        name: Some("id".into()),
        is_key: Some(true),
        updated: Some(true),
        is_null: Some(false),
        props: vec![pair("c", "1")],
        value: Some("-9223372036854775808".into()),
        length: Some(20),
        mysql_type: Some("bigint(20)".into()),
    }
}

fn column_b() -> e::Column {
    e::Column {
        index: Some(3),
        sql_type: Some(12),
        name: Some("näme".into()),
        is_key: Some(true),
        updated: Some(true),
        is_null: Some(true),
        // Python's proto3 omits an empty string: that is an absent key here.
        props: vec![pair("k", "v"), e::Pair { key: None, value: Some("empty key".into()) }],
        value: Some("ü-välue ✓".into()),
        length: Some(255),
        mysql_type: Some("varchar(255)".into()),
    }
}

fn row_data() -> e::RowData {
    e::RowData {
        before_columns: vec![column_a()],
        after_columns: vec![column_a(), column_b()],
        props: vec![pair("rd", "x")],
    }
}

fn row_change() -> e::RowChange {
    e::RowChange {
        table_id: Some(108),
        event_type: Some(e::EventType::Delete as i32),
        is_ddl: Some(true),
        sql: Some("DELETE FROM `test`.`t1` WHERE id = 1".into()),
        row_datas: vec![row_data(), row_data()],
        props: vec![pair("XA_TYPE", "XA COMMIT"), pair("XA_XID", "'x1'")],
        ddl_schema_name: Some("test".into()),
    }
}

fn transaction_begin() -> e::TransactionBegin {
    e::TransactionBegin {
        execute_time: Some(1_700_000_000_123),
        transaction_id: Some("tx-1".into()),
        props: vec![pair("XA_TYPE", "XA START")],
        thread_id: Some(12345),
    }
}

fn transaction_end() -> e::TransactionEnd {
    e::TransactionEnd {
        execute_time: Some(1_700_000_000_456),
        transaction_id: Some("987654321".into()),
        props: vec![pair("XA_TYPE", "XA END"), pair("XA_XID", "'x1'")],
    }
}

fn header() -> e::Header {
    e::Header {
        version: Some(2),
        logfile_name: Some("mysql-bin.000001".into()),
        logfile_offset: Some(4),
        server_id: Some(4_294_967_295),
        serveren_code: Some("UTF-8".into()),
        execute_time: Some(1_700_000_000_000),
        source_type: Some(e::Type::Pgsql as i32),
        schema_name: Some("test".into()),
        table_name: Some("t1".into()),
        event_length: Some(64),
        event_type: Some(e::EventType::Delete as i32),
        props: vec![pair("rowsCount", "2"), pair("curtGtid", "uuid:5")],
        gtid: Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".into()),
    }
}

fn entry(entry_type: e::EntryType, store_value: Vec<u8>) -> e::Entry {
    e::Entry {
        header: Some(header()),
        entry_type: Some(entry_type as i32),
        store_value: Some(store_value.into()),
    }
}

fn bodies() -> Vec<(&'static str, Body)> {
    vec![
        (
            "handshake",
            Body::Handshake(p::Handshake {
                communication_encoding: Some("utf8".into()),
                seeds: (0xa0..0xa8).collect(),
                supported_compressions: p::Compression::Zlib as i32,
            }),
        ),
        (
            "client_auth",
            Body::ClientAuth(p::ClientAuth {
                username: "canal".into(),
                password: b"e3619321c1a937c46a0d8bd1dac39f93b27d4458".to_vec(),
                net_read_timeout: Some(3_600_000),
                net_write_timeout: Some(1_800_000),
                destination: "example".into(),
                client_id: "1001".into(),
                filter: "test\\..*".into(),
                start_timestamp: 1_700_000_000_000,
            }),
        ),
        (
            "ack",
            Body::Ack(p::Ack {
                error_code: Some(402),
                error_message: "batchId should assign value".into(),
            }),
        ),
        (
            "sub",
            Body::Sub(p::Sub {
                destination: "example".into(),
                client_id: "1001".into(),
                filter: ".*\\..*".into(),
            }),
        ),
        (
            "unsub",
            Body::Unsub(p::Unsub {
                destination: "example".into(),
                client_id: "1002".into(),
                filter: "test\\.t1".into(),
            }),
        ),
        (
            "get",
            Body::Get(p::Get {
                destination: "example".into(),
                client_id: "1001".into(),
                fetch_size: 1000,
                timeout: Some(30),
                unit: Some(3),
                auto_ack: Some(true),
                linger_micros: None,
            }),
        ),
        (
            "messages",
            Body::Messages(p::Messages {
                batch_id: 42,
                messages: vec![
                    Bytes::from_static(b"\x08\x01"),
                    Bytes::from_static(b"\x00\xff\x10"),
                    Bytes::from_static(b"raw"),
                ],
            }),
        ),
        (
            "client_ack",
            Body::ClientAck(p::ClientAck {
                destination: "example".into(),
                client_id: "1001".into(),
                batch_id: 7,
            }),
        ),
        (
            "client_rollback",
            Body::ClientRollback(p::ClientRollback {
                destination: "example".into(),
                client_id: "1001".into(),
                batch_id: 8,
            }),
        ),
        (
            "heartbeat",
            Body::HeartBeat(p::HeartBeat {
                send_timestamp: 1_700_000_000_123,
                start_timestamp: 1_699_999_999_000,
            }),
        ),
        (
            "dump",
            Body::Dump(p::Dump {
                journal: "mysql-bin.000003".into(),
                position: 4,
                timestamp: Some(1_700_000_000_000),
            }),
        ),
    ]
}

/// Checks a foreign encoding against a case's value; `Err` describes the difference.
type Check = Box<dyn Fn(&[u8]) -> Result<(), String>>;

/// One named message: Rust's encoding and a check of a foreign encoding against the value.
struct Case {
    name: String,
    encoded: Vec<u8>,
    check: Check,
}

fn case<M: Message + Default + PartialEq + Debug + 'static>(name: &str, want: M) -> Case {
    Case {
        name: name.to_owned(),
        encoded: want.encode_to_vec(),
        check: Box::new(move |bytes| {
            let got = M::decode(bytes).map_err(|err| format!("decode failed: {err}"))?;
            if got == want { Ok(()) } else { Err(format!("got {got:?}\n want {want:?}")) }
        }),
    }
}

fn packet_case(name: &str, body: Body) -> Case {
    let mut packet = body.to_packet();
    packet.magic_number = Some(17);
    packet.version = Some(1);
    packet.compression = Some(p::Compression::None as i32);
    let encoded = packet.encode_to_vec();
    Case {
        name: name.to_owned(),
        encoded,
        check: Box::new(move |bytes| {
            let got = p::Packet::decode(bytes).map_err(|err| format!("decode failed: {err}"))?;
            let envelope = |p: &p::Packet| (p.magic_number, p.version, p.r#type, p.compression);
            if envelope(&got) != envelope(&packet) {
                return Err(format!("got {got:?}\n want {packet:?}"));
            }
            let got_body = got.decode_body().map_err(|err| format!("body: {err}"))?;
            if got_body != body {
                return Err(format!("body: got {got_body:?}\n want {body:?}"));
            }
            Ok(())
        }),
    }
}

fn entry_case(
    name: &str,
    want: e::Entry,
    decode_store: fn(&[u8]) -> Result<String, String>,
) -> Case {
    let encoded = want.encode_to_vec();
    Case {
        name: name.to_owned(),
        encoded,
        check: Box::new(move |bytes| {
            let mut got = e::Entry::decode(bytes).map_err(|err| format!("decode failed: {err}"))?;
            let got_store = decode_store(got.store_value.as_deref().unwrap_or_default())?;
            let want_store = decode_store(want.store_value.as_deref().unwrap_or_default())?;
            if got_store != want_store {
                return Err(format!("storeValue: got {got_store}\n want {want_store}"));
            }
            got.store_value.clone_from(&want.store_value);
            if got != want {
                return Err(format!("got {got:?}\n want {want:?}"));
            }
            Ok(())
        }),
    }
}

fn decode_debug<M: Message + Default + Debug>(bytes: &[u8]) -> Result<String, String> {
    M::decode(bytes)
        .map(|m| format!("{m:?}"))
        .map_err(|err| format!("storeValue decode failed: {err}"))
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (name, body) in bodies() {
        let bare = match &body {
            Body::Handshake(m) => case(name, m.clone()),
            Body::ClientAuth(m) => case(name, m.clone()),
            Body::Ack(m) => case(name, m.clone()),
            Body::Sub(m) => case(name, m.clone()),
            Body::Unsub(m) => case(name, m.clone()),
            Body::Get(m) => case(name, m.clone()),
            Body::Messages(m) => case(name, m.clone()),
            Body::ClientAck(m) => case(name, m.clone()),
            Body::ClientRollback(m) => case(name, m.clone()),
            Body::HeartBeat(m) => case(name, *m),
            Body::Dump(m) => case(name, m.clone()),
            other => panic!("no bare case for {other:?}"),
        };
        out.push(Case { name: format!("body_{name}"), ..bare });
        out.push(packet_case(&format!("packet_{name}"), body));
    }
    out.push(case(
        "body_get_python_client",
        p::Get {
            destination: "example".into(),
            client_id: "1001".into(),
            fetch_size: 10,
            timeout: Some(-1),
            unit: Some(-1),
            auto_ack: Some(false),
            linger_micros: None,
        },
    ));
    out.push(case("body_ack_zero", p::Ack { error_code: Some(0), error_message: String::new() }));
    out.push(case("pair", pair("rowsCount", "2")));
    out.push(case("column", column_b()));
    out.push(case("row_data", row_data()));
    out.push(case("row_change", row_change()));
    out.push(case("transaction_begin", transaction_begin()));
    out.push(case("transaction_end", transaction_end()));
    out.push(case("header", header()));
    out.push(entry_case(
        "entry_rowdata",
        entry(e::EntryType::Rowdata, row_change().encode_to_vec()),
        decode_debug::<e::RowChange>,
    ));
    out.push(entry_case(
        "entry_end",
        entry(e::EntryType::Transactionend, transaction_end().encode_to_vec()),
        decode_debug::<e::TransactionEnd>,
    ));
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    canal_core::protocol::auth::hex_decode(text)
        .ok()
        .filter(|_| text.len().is_multiple_of(2))
        .ok_or_else(|| format!("bad hex from python: {text:?}"))
}

#[test]
fn canal_python_interop() {
    let Some(venv) = venv_or_skip() else {
        return;
    };
    let python = venv.join("bin/python");
    let cases = cases();
    let mut failures = Vec::new();

    // Python ➜ Rust.
    let out = Command::new(&python)
        .arg(script())
        .arg("emit")
        .output()
        .expect("run canal_interop.py emit");
    assert!(
        out.status.success(),
        "canal_interop.py emit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_python: BTreeMap<String, String> =
        serde_json::from_slice(&out.stdout).expect("emit prints a JSON object");
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    for name in from_python.keys() {
        if !names.contains(&name.as_str()) {
            failures.push(format!("{name}: python case has no Rust counterpart"));
        }
    }
    for c in &cases {
        let Some(text) = from_python.get(&c.name) else {
            failures.push(format!("{}: not emitted by python", c.name));
            continue;
        };
        let result = unhex(text).and_then(|bytes| {
            (c.check)(&bytes)?;
            if bytes != c.encoded {
                return Err(format!(
                    "decodes equal but bytes differ:\n python {}\n rust   {}",
                    text,
                    hex(&c.encoded)
                ));
            }
            Ok(())
        });
        match result {
            Ok(()) => eprintln!("python ➜ rust OK {}", c.name),
            Err(err) => failures.push(format!("python ➜ rust {}: {err}", c.name)),
        }
    }

    // Rust ➜ Python.
    let to_python: BTreeMap<&str, String> =
        cases.iter().map(|c| (c.name.as_str(), hex(&c.encoded))).collect();
    let mut child = Command::new(&python)
        .arg(script())
        .arg("check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run canal_interop.py check");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(&to_python).expect("json"))
        .expect("write to python");
    let out = child.wait_with_output().expect("python check output");
    let report = String::from_utf8_lossy(&out.stdout);
    let mut ok = 0;
    for line in report.lines() {
        if line.starts_with("OK ") {
            ok += 1;
            eprintln!("rust ➜ python {line}");
        } else {
            failures.push(format!("rust ➜ python {line}"));
        }
    }
    if !out.status.success() && failures.is_empty() {
        failures.push(format!(
            "canal_interop.py check failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if ok != cases.len() {
        failures.push(format!("python confirmed {ok} of {} cases", cases.len()));
    }
    assert!(failures.is_empty(), "interop differences:\n{}", failures.join("\n"));
}
