//! The client against frames encoded by canal-python 0.4's protobuf classes (generated from
//! Canal's own `.proto` files): HANDSHAKE, ACKs and MESSAGES (Java's versioned shape and the
//! raw-mode shape without `version`) with real-looking entries, replayed by a scripted server;
//! the client's row view must show what Python put in.
//!
//! The venv (`canal-python==0.4`, `protobuf==3.20.3`) is the one canal-core's interop test builds
//! under the target dir, reused when present. Without python3/pip/PyPI the test skips, or fails
//! when `CANAL_REQUIRE_INTEGRATION=1`. `CANAL_TEST_PYTHON` picks the interpreter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use canal_client::{ClientError, ConnectorConfig, Message, SimpleConnector, TimeUnit};
use canal_core::protocol::auth::{client_password, hex_decode};
use canal_core::protocol::body::Body;
use canal_core::protocol::codec::{PacketReader, write_frame};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const REQUIREMENTS: [&str; 2] = ["canal-python==0.4", "protobuf==3.20.3"];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/client_interop.py")
}

fn venv_or_skip() -> Option<PathBuf> {
    crate::support::python_venv("interop-venv", &REQUIREMENTS)
}

/// The row view of a batch, in the shape the Python script describes its entries.
fn describe(m: &Message) -> Vec<Value> {
    m.row_changes()
        .map(|rc| {
            let rc = rc.expect("row change decodes");
            let image = |c: canal_client::Columns<'_>| -> Value {
                c.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>().into()
            };
            let (file, offset) = rc.position();
            json!({
                "batch": m.id,
                "schema": rc.schema(),
                "table": rc.table(),
                "type": rc.event_type_name(),
                "isDdl": rc.is_ddl(),
                "sql": rc.sql(),
                "file": file,
                "offset": offset,
                "rows": rc.rows().map(|r| json!({"before": image(r.before()), "after": image(r.after())})).collect::<Vec<_>>(),
            })
        })
        .collect()
}

#[tokio::test]
async fn python_encoded_frames_decode_into_the_row_view() {
    let Some(venv) = venv_or_skip() else { return };
    let out = Command::new(venv.join("bin/python"))
        .arg(script())
        .output()
        .expect("run client_interop.py");
    assert!(out.status.success(), "client_interop.py: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON from python");
    let frames: BTreeMap<String, Vec<u8>> = doc["frames"]
        .as_object()
        .expect("frames")
        .iter()
        .map(|(k, v)| (k.clone(), hex_decode(v.as_str().expect("hex")).expect("hex")))
        .collect();
    let expect = doc["expect"].as_array().expect("expect").clone();

    // The scripted server: Python's frames in the order of a Java server's replies.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let (r, mut w) = sock.into_split();
        let mut reader = PacketReader::new(r);
        let mut seen = Vec::new();
        let send = |name: &str| frames[name].clone();
        write_frame(&mut w, &send("handshake")).await.unwrap();
        let mut gets = ["messages", "messages_raw", "empty", "ack_error"].into_iter();
        while let Ok(Some(p)) = reader.read_packet().await {
            let body = p.decode_body().expect("client bodies decode");
            let reply = match &body {
                Body::ClientAuth(a) => {
                    let want = client_password(&(1..=8).collect::<Vec<u8>>(), "canal");
                    assert_eq!(String::from_utf8_lossy(&a.password), want);
                    Some(send("ack_ok"))
                }
                Body::Sub(_) | Body::Unsub(_) => Some(send("ack_ok")),
                Body::Get(_) => gets.next().map(send),
                _ => None,
            };
            seen.push(format!("{:?}", body.packet_type()));
            if let Some(f) = reply {
                write_frame(&mut w, &f).await.unwrap();
            }
        }
        seen
    });

    let mut c = SimpleConnector::new(
        addr.to_string(),
        ConnectorConfig::new("example")
            .credentials("canal", "canal")
            .read_timeout(Duration::from_secs(5)),
    )
    .unwrap();
    c.connect().await.unwrap();
    c.subscribe("shop\\..*").await.unwrap();
    let m1 = c.get_without_ack(100, None, TimeUnit::Milliseconds).await.unwrap();
    let m2 = c.get_without_ack(100, None, TimeUnit::Milliseconds).await.unwrap();
    let m3 = c.get_without_ack(100, None, TimeUnit::Milliseconds).await.unwrap();
    assert_eq!((m1.id, m1.entries.len()), (7, 4));
    assert_eq!((m2.id, m2.entries.len()), (8, 2));
    assert!(m3.is_empty() && m3.id == -1);
    let mut got = describe(&m1);
    got.extend(describe(&m2));
    assert_eq!(Value::from(got), Value::from(expect));
    // FlatMessage from the same entries: the UPDATE's old values are the updated columns.
    let flats = m1.flat_messages(0).unwrap();
    assert_eq!(flats.len(), 2);
    let upd = &flats[1];
    assert_eq!(upd.kind, "UPDATE");
    assert_eq!(upd.pk_names.as_deref(), Some(&["id".to_owned()][..]));
    let old = upd.old.as_ref().unwrap();
    assert_eq!(old[0].get("name"), Some(&Some("a".to_owned())));
    assert_eq!(old[0].get("email"), Some(&None));
    // Python's error ACK as a GET reply, with nothing unconfirmed: the server's error.
    match c.get_without_ack(100, None, TimeUnit::Milliseconds).await {
        Err(ClientError::Server { code: 400, message }) => {
            assert_eq!(message, "something goes wrong with channel")
        }
        other => panic!("{other:?}"),
    }
    assert!(c.is_connected());
    c.ack(7).await.unwrap();
    c.disconnect().await;
    let seen = server.await.unwrap();
    assert_eq!(
        seen,
        [
            "Clientauthentication",
            "Clientrollback",
            "Subscription",
            "Get",
            "Get",
            "Get",
            "Get",
            "Clientack"
        ]
        .map(String::from),
        "{seen:?}"
    );
}
