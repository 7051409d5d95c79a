//! SimpleConnector against the in-test server: handshake and auth, subscribe/get/ack/rollback,
//! Canal's late error ACKs, cancellation, and a hostile server.

use std::time::Duration;

use canal_client::entry::EventType;
use canal_client::{ClientError, ConnectorConfig, SimpleConnector, TimeUnit};
use canal_core::protocol::auth::{AuthConfig, client_password, password_hash_hex};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::fake::{self, FakeServer};

fn config() -> ConnectorConfig {
    ConnectorConfig::new("example").read_timeout(Duration::from_secs(5))
}

async fn connected(server: &FakeServer) -> SimpleConnector {
    let mut c = SimpleConnector::new(server.address(), config()).unwrap();
    c.connect().await.unwrap();
    c.subscribe("test\\..*").await.unwrap();
    c
}

#[tokio::test]
async fn auth_with_scrambled_password() {
    let server =
        FakeServer::start(AuthConfig::new("canal", &password_hash_hex(b"secret")).unwrap()).await;
    let mut ok = SimpleConnector::new(
        server.address(),
        config().credentials("canal", "secret").idle_timeout(Duration::from_secs(90)),
    )
    .unwrap();
    ok.connect().await.unwrap();
    assert!(ok.is_connected());
    let auth = server.state.lock().unwrap().auths[0].clone();
    assert_eq!(auth.username, "canal");
    // 40 lowercase hex digits of the scramble; timeouts in ms; no identity fields.
    let pw = String::from_utf8(auth.password.clone()).unwrap();
    assert_eq!(pw.len(), 40);
    assert!(pw.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{pw}");
    assert_eq!((auth.net_read_timeout, auth.net_write_timeout), (Some(90_000), Some(90_000)));
    assert!(auth.destination.is_empty() && auth.client_id.is_empty());

    for (user, password) in [("canal", "wrong"), ("canal", ""), ("other", "secret")] {
        let mut bad =
            SimpleConnector::new(server.address(), config().credentials(user, password)).unwrap();
        let err = bad.connect().await.unwrap_err();
        match err {
            ClientError::Auth { code, message } => {
                assert_eq!(code, 400);
                assert_eq!(message, format!("auth failed for user:{user}"));
            }
            other => panic!("expected an auth error, got {other:?}"),
        }
        assert!(!bad.is_connected());
    }
    // An empty password is sent empty.
    let empty = server.state.lock().unwrap().auths[2].clone();
    assert!(empty.password.is_empty());
    // And the token is the one the spec's scramble gives for the seed (checked by the server).
    assert_eq!(client_password(b"12345678", "").len(), 0);
}

#[tokio::test]
async fn connect_resubscribes_and_rolls_back() {
    let server = FakeServer::open().await;
    let mut c = connected(&server).await;
    assert_eq!(c.filter(), Some("test\\..*"));
    c.connect().await.unwrap();
    // The on-connect rollback has no reply: wait until the server has handled it.
    let rollbacks = |s: &fake::State| s.log.iter().filter(|l| *l == "ROLLBACK 0").count() == 2;
    server.wait_for("the reconnect's rollback", rollbacks).await;
    let log = server.log();
    // First connect: auth + rollback (nothing remembered yet), then the explicit subscribe.
    // Reconnect: auth, re-subscribe with the remembered filter, rollback(0).
    assert_eq!(
        log,
        [
            "AUTH ",
            "ROLLBACK 0",
            "SUB example 1001 \"test\\\\..*\"",
            "AUTH ",
            "SUB example 1001 \"test\\\\..*\"",
            "ROLLBACK 0"
        ],
        "{log:#?}"
    );
}

#[tokio::test]
async fn subscribe_get_ack_rollback() {
    let server = FakeServer::open().await;
    server.push([fake::begin(4), fake::insert("t1", 1, "a"), fake::insert("t1", 2, "b")]);
    let mut c = connected(&server).await;

    let m = c.get_without_ack(2, None, TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(m.id, 1);
    assert_eq!(m.entries.len(), 2);
    assert_eq!(m.raw_entries().len(), 2);
    let views: Vec<_> = m.row_changes().collect::<Result<_, _>>().unwrap();
    assert_eq!(views.len(), 1);
    let v = &views[0];
    assert_eq!((v.schema(), v.table(), v.event_type()), ("test", "t1", EventType::Insert));
    assert!(!v.is_ddl());
    assert_eq!(v.sql(), "");
    let row = v.rows().next().unwrap();
    assert!(row.before().is_empty());
    assert_eq!(row.after().get("id"), Some(Some("1")));
    assert_eq!(row.after().get("name"), Some(Some("a")));

    // Roll the batch back: the same entries come again, in a new batch.
    c.rollback(1).await.unwrap();
    let m = c.get_without_ack(2, Some(100), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!((m.id, m.entries.len()), (2, 2));
    c.ack(2).await.unwrap();

    let m = c.get(10, Some(Duration::from_millis(50))).await.unwrap();
    assert_eq!((m.id, m.entries.len()), (3, 1));
    assert_eq!(fake::row_name(&m.entries[0]), "b");
    // Acked by get.
    let m = c.get(10, None).await.unwrap();
    assert!(m.is_empty());
    assert_eq!(m.id, -1);

    c.unsubscribe().await.unwrap();
    assert_eq!(c.filter(), None);
    c.disconnect().await;
    assert!(!c.is_connected());
    let log = server.log();
    assert!(log.contains(&"GET 2 Some(-1) Some(2) Some(false)".to_owned()), "{log:#?}");
    assert!(log.contains(&"GET 10 Some(50) Some(2) Some(false)".to_owned()), "{log:#?}");
    assert!(log.contains(&"ACK 3".to_owned()), "{log:#?}");
    assert!(!log.contains(&"ACK -1".to_owned()), "an empty batch is not acked by get: {log:#?}");
    assert_eq!(server.state.lock().unwrap().outstanding.len(), 0);
}

#[tokio::test]
async fn non_raw_messages_and_default_batch_size() {
    let server = FakeServer::open().await;
    server.set(|s| s.raw = false);
    server.push((0..3).map(|i| fake::insert("t", i, "x")));
    let mut c = connected(&server).await;
    let m = c.get_without_ack(0, Some(-5), TimeUnit::Seconds).await.unwrap();
    assert_eq!(m.entries.len(), 3);
    assert!(server.log().contains(&"GET 1000 Some(-1) Some(3) Some(false)".to_owned()));
}

#[tokio::test]
async fn late_error_ack_is_reported_and_the_connection_stays_usable() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t", 1, "a")]);
    let mut c = connected(&server).await;
    // Ack of a batch that does not exist: no reply now, an error ACK later.
    let replied = server.replies();
    c.ack(99).await.unwrap();
    server.wait_replies(replied + 1).await;
    match c.get_without_ack(10, None, TimeUnit::Milliseconds).await {
        Err(ClientError::AckFailed { code: 400, message }) => {
            assert!(message.contains("batchId:99"), "{message}");
        }
        other => panic!("expected AckFailed, got {other:?}"),
    }
    assert!(c.is_connected());
    // The GET was not sent; the next one works and is in step.
    let m = c.get_without_ack(10, None, TimeUnit::Milliseconds).await.unwrap();
    assert_eq!((m.id, m.entries.len()), (1, 1));
    // Ack 0 is refused with 402.
    let replied = server.replies();
    c.ack(0).await.unwrap();
    server.wait_replies(replied + 1).await;
    assert!(matches!(c.ack(1).await, Err(ClientError::AckFailed { code: 402, .. })));
}

#[tokio::test]
async fn ambiguous_error_ack_closes_the_connection() {
    let server = FakeServer::open().await;
    server.set(|s| s.ack_error_delay = Duration::from_millis(150));
    server.push([fake::insert("t", 1, "a")]);
    let mut c = connected(&server).await;
    c.ack(42).await.unwrap();
    // The GET goes out before the error arrives: the error is read as the GET's reply, and the
    // real reply may still follow, so the connection is dropped.
    let err = c.get_without_ack(10, None, TimeUnit::Milliseconds).await.unwrap_err();
    assert!(matches!(err, ClientError::AckFailed { code: 400, .. }), "{err:?}");
    assert!(!c.is_connected());
    assert!(matches!(c.get(1, None).await, Err(ClientError::NotConnected)));
    // Reconnecting re-subscribes and rolls back; the batch comes again.
    c.connect().await.unwrap();
    let m = c.get_without_ack(10, None, TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(m.entries.len(), 1);
}

#[tokio::test]
async fn server_errors_are_typed() {
    let server = FakeServer::open().await;
    let mut c = SimpleConnector::new(server.address(), config()).unwrap();
    c.connect().await.unwrap();
    // GET before subscribing, right after the on-connect rollback (unconfirmed): the error
    // could be the rollback's, so the connection is closed; it is reported as the server's.
    let err = c.get_without_ack(1, None, TimeUnit::Milliseconds).await.unwrap_err();
    assert!(matches!(err, ClientError::Server { code: 400, .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(!c.is_connected());
    c.connect().await.unwrap();
    c.subscribe("").await.unwrap();
    c.unsubscribe().await.unwrap();
    // Now nothing is unconfirmed: a genuine error reply keeps the connection in step.
    let err = c.get_without_ack(1, None, TimeUnit::Milliseconds).await.unwrap_err();
    assert!(matches!(err, ClientError::Server { code: 400, .. }), "{err:?}");
    assert!(c.is_connected());
    server.set(|s| s.running = false);
    let err = c.subscribe("").await.unwrap_err();
    match &err {
        ClientError::Server { code: 400, message } => assert!(message.contains("start first")),
        other => panic!("{other:?}"),
    }
    server.set(|s| s.running = true);
    c.subscribe("").await.unwrap();
    server.set(|s| s.compression = Some(2));
    server.push([fake::insert("t", 1, "a")]);
    assert!(matches!(
        c.get_without_ack(1, None, TimeUnit::Milliseconds).await,
        Err(ClientError::Compression(2))
    ));
    // The server made a batch we cannot read: the connection is closed, so that the reconnect's
    // rollback gives it back.
    assert!(!c.is_connected());
}

#[tokio::test]
async fn cancelled_get_breaks_the_connection_instead_of_desyncing() {
    let server = FakeServer::open().await;
    let mut c = connected(&server).await;
    // A blocking GET (timeout 0) on an empty queue, cancelled by the caller.
    let r = tokio::time::timeout(
        Duration::from_millis(100),
        c.get_without_ack(1, Some(0), TimeUnit::Milliseconds),
    )
    .await;
    assert!(r.is_err(), "the GET should still be blocked");
    // Its reply is now in flight: the connector refuses to read it as another reply.
    let replied = server.replies();
    server.push([fake::insert("t", 7, "late")]);
    // The abandoned GET takes it (the server answers into the old connection).
    server.wait_replies(replied + 1).await;
    let err = c.get_without_ack(1, None, TimeUnit::Milliseconds).await.unwrap_err();
    assert!(matches!(err, ClientError::Broken { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(!c.is_connected());
    // Reconnect: rollback on connect makes the batch the cancelled GET took come again.
    c.connect().await.unwrap();
    let m = c.get_without_ack(1, Some(1000), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(m.entries.len(), 1);
    assert_eq!(fake::row_name(&m.entries[0]), "late");
}

#[tokio::test]
async fn read_timeout_and_closed_server() {
    let server = FakeServer::open().await;
    let mut c =
        SimpleConnector::new(server.address(), config().read_timeout(Duration::from_millis(100)))
            .unwrap();
    c.connect().await.unwrap();
    c.subscribe("").await.unwrap();
    // Waits 200 ms server-side plus 100 ms read timeout: fine.
    let m = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
    assert!(m.is_empty());
    server.kill();
    let err = c.get_without_ack(1, None, TimeUnit::Milliseconds).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = c.connect().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

/// A server that answers with garbage: typed errors, never a panic.
#[tokio::test]
async fn hostile_server_gives_typed_errors() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative length", vec![0x80, 0, 0, 0]),
        ("too large", vec![0x7f, 0xff, 0xff, 0xff]),
        ("not a packet", vec![0, 0, 0, 2, 0xff, 0xff]),
        ("ack instead of handshake", vec![0, 0, 0, 4, 0x10, 0x01, 0x18, 0x03]),
        ("handshake without version", vec![0, 0, 0, 4, 0x18, 0x01, 0x2a, 0x00]),
        ("bad handshake body", vec![0, 0, 0, 7, 0x10, 0x01, 0x18, 0x01, 0x2a, 0x01, 0xff]),
        ("truncated", vec![0, 0, 0, 9, 0x10]),
        ("nothing", vec![]),
    ];
    for (name, bytes) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let mut cfg = config();
        cfg.max_frame_len = 1024;
        let mut c = SimpleConnector::new(addr.to_string(), cfg).unwrap();
        let err = c.connect().await.expect_err(name);
        eprintln!("{name}: {err}");
        assert!(!c.is_connected(), "{name}");
        task.abort();
    }
}

/// Java's edge case (docs/protocol.md#requests: a failure without a reply): on a server where the destination does not run, the on-connect
/// rollback fails with an unsolicited 400 that a Java client reads as its SUBSCRIPTION's reply
/// (and the real reply as the next GET's). We report the 400 and close the connection instead
/// of reading out of step.
#[tokio::test]
async fn on_connect_rollback_failure_does_not_desync() {
    let server = FakeServer::open().await;
    server.set(|s| s.running = false);
    let mut c = SimpleConnector::new(server.address(), config()).unwrap();
    c.connect().await.unwrap();
    let err = c.subscribe("").await.unwrap_err();
    match &err {
        ClientError::Server { code: 400, message } => assert!(message.contains("start first")),
        other => panic!("{other:?}"),
    }
    assert!(err.is_transient());
    assert!(!c.is_connected());
}

/// After a good handshake and auth, a GET answered with garbage: typed errors, never a panic;
/// the connection is closed unless the frame was whole and only its entries were bad.
#[tokio::test]
async fn garbage_get_replies_give_typed_errors() {
    use canal_core::protocol::codec::frame_bytes;
    use canal_core::protocol::packets;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }
    let messages_with_bad_entry =
        frame_bytes(&packets::messages(5, vec![bytes::Bytes::from_static(b"\xff\xff\xff")]))
            .unwrap()
            .to_vec();
    let bad_messages_body = framed(&[0x10, 0x01, 0x18, 0x07, 0x2a, 0x02, 0x0a, 0xff]);
    let unknown_type = framed(&[0x10, 0x01, 0x18, 0x63]);
    let handshake_again = frame_bytes(&packets::handshake(b"12345678")).unwrap().to_vec();
    let ok_ack = frame_bytes(&packets::ack_ok()).unwrap().to_vec();
    let truncated = vec![0, 0, 0, 50, 0x10, 0x01];
    let huge = vec![0x10, 0, 0, 0];
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("bad entry", messages_with_bad_entry, true),
        ("bad messages body", bad_messages_body, false),
        ("unknown packet type", unknown_type, false),
        ("handshake again", handshake_again, false),
        ("success ack", ok_ack, false),
        ("truncated", truncated, false),
        ("huge", huge, false),
    ];
    for (name, reply, usable) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut reader = canal_core::protocol::codec::PacketReader::new(r);
            w.write_all(&frame_bytes(&packets::handshake(b"abcdefgh")).unwrap()).await.unwrap();
            while let Ok(Some(p)) = reader.read_packet().await {
                let t = canal_core::protocol::packet::PacketType::try_from(p.r#type).unwrap();
                use canal_core::protocol::packet::PacketType as T;
                match t {
                    T::Clientauthentication | T::Subscription => {
                        w.write_all(&frame_bytes(&packets::ack_ok()).unwrap()).await.unwrap()
                    }
                    T::Get => {
                        w.write_all(&reply).await.unwrap();
                        if reply.len() < 8 || reply[3] == 50 {
                            let _ = w.shutdown().await;
                        }
                    }
                    _ => {}
                }
            }
        });
        let mut cfg = config();
        cfg.max_frame_len = 4096;
        let mut c = SimpleConnector::new(addr.to_string(), cfg).unwrap();
        c.connect().await.unwrap();
        c.subscribe("").await.unwrap();
        let err = c.get_without_ack(1, None, TimeUnit::Milliseconds).await.expect_err(name);
        eprintln!("{name}: {err}");
        if usable {
            assert!(matches!(err, ClientError::BadEntry { batch_id: 5, index: 0, .. }), "{err:?}");
        }
        assert_eq!(c.is_connected(), usable, "{name}: {err:?}");
        task.abort();
    }
}
