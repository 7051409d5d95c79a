//! Canal's TCP protocol against a real socket: handshake, auth, subscribe/get/ack/rollback, Java's
//! error codes, and hostile input that must close one connection without disturbing others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use canal_core::position::{EntryPosition, LogIdentity, SourceAddress};
use canal_core::protocol::auth::{AuthConfig, password_hash_hex};
use canal_core::protocol::packet::{Ack, PacketType};
use canal_core::store::{BatchMode, EntryKind, EventStore, StoreConfig, StoredEntry};
use canal_server::destination::Destination;
use canal_server::session::{Availability, Registry, SessionConfig, serve};
use canal_server::testing::{CheckOnlyFilter, MemoryCursors};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::wire::{Client, messages};

#[derive(Debug, Default)]
struct TestRegistry {
    map: Mutex<HashMap<String, Availability>>,
}

impl Registry for TestRegistry {
    fn lookup(&self, name: &str) -> Availability {
        self.map.lock().unwrap().get(name).cloned().unwrap_or(Availability::Unknown)
    }
}

struct Server {
    addr: std::net::SocketAddr,
    dest: Arc<Destination>,
}

async fn start(auth: AuthConfig) -> Server {
    let store = Arc::new(EventStore::new(StoreConfig {
        batch_mode: BatchMode::ItemSize,
        ..StoreConfig::default()
    }));
    let dest = Arc::new(Destination::new(
        "example",
        store,
        LogIdentity::new(SourceAddress::new("127.0.0.1", 3306)),
        Arc::new(MemoryCursors::default()),
        Arc::new(CheckOnlyFilter),
    ));
    let registry = Arc::new(TestRegistry::default());
    registry.map.lock().unwrap().insert("example".into(), Availability::Running(dest.clone()));
    registry.map.lock().unwrap().insert("standby".into(), Availability::NotRunning);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reg: Arc<dyn Registry> = registry;
    let config = SessionConfig { auth, ..SessionConfig::default() };
    tokio::spawn(async move {
        while let Ok((sock, peer)) = listener.accept().await {
            tokio::spawn(serve(sock, peer.to_string(), reg.clone(), config.clone()));
        }
    });
    Server { addr, dest }
}

async fn put_rows(dest: &Destination, n: i64) {
    let mut v = vec![StoredEntry {
        bytes: Bytes::from_static(b"begin"),
        position: EntryPosition::at("bin.000001", 100),
        kind: EntryKind::Begin { gtid: false },
    }];
    for i in 0..n {
        v.push(StoredEntry {
            bytes: Bytes::from(format!("row{i}")),
            position: EntryPosition::at("bin.000001", 200 + i),
            kind: EntryKind::Rows,
        });
    }
    v.push(StoredEntry {
        bytes: Bytes::from_static(b"end"),
        position: EntryPosition::at("bin.000001", 900),
        kind: EntryKind::End,
    });
    dest.store().put(v).await.unwrap();
}

#[tokio::test]
async fn subscribe_get_ack_rollback_flow() {
    let srv = start(AuthConfig::open()).await;
    put_rows(&srv.dest, 3).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.auth("", None).await, Ack::default());
    // The Java client rolls back before subscribing: no reply.
    c.rollback(0).await;
    assert_eq!(c.subscribe("example", "1001").await, Ack::default());

    let first = c.get("example", 2, -1).await;
    assert_eq!(first.version, None, "raw-mode MESSAGES carry no version");
    let m1 = messages(first);
    assert_eq!(m1.batch_id, 1);
    assert_eq!(m1.messages, vec![Bytes::from_static(b"begin"), Bytes::from_static(b"row0")]);
    let m2 = messages(c.get("example", 2, -1).await);
    assert_eq!(m2.batch_id, 2);

    // Ack out of order: error 400 arrives as the reply to the next request.
    c.client_ack(2).await;
    let err = c.ack().await;
    assert_eq!(err.error_code, Some(400));
    assert!(err.error_message.contains("is not the firstly"), "{}", err.error_message);

    // Rollback everything: the rest is delivered again from the ack pointer.
    c.rollback(0).await;
    let again = messages(c.get("example", 10, -1).await);
    assert_eq!(again.batch_id, 3);
    assert_eq!(again.messages.len(), 5);
    c.client_ack(3).await;
    c.client_ack(-1).await; // ignored
    let empty = c.get("example", 10, -1).await;
    assert_eq!(empty.version, Some(1));
    assert_eq!(messages(empty).batch_id, -1);
    assert_eq!(srv.dest.cursor(1001).unwrap().position.position, Some(900));
    assert_eq!(srv.dest.store().stats().entries, 0);
}

#[tokio::test]
async fn java_error_codes() {
    let srv = start(AuthConfig::open()).await;
    let mut c = Client::connect(srv.addr).await;
    c.auth("", None).await;
    assert_eq!(c.subscribe("", "1001").await.error_code, Some(401));
    assert_eq!(c.subscribe("example", "not-a-short").await.error_code, Some(400));
    assert_eq!(c.subscribe("example", "70000").await.error_code, Some(400));
    let unknown = c.subscribe("nope", "1001").await;
    assert_eq!(unknown.error_code, Some(400));
    let standby = c.subscribe("standby", "1001").await;
    assert_eq!(standby.error_code, Some(400));
    assert!(standby.error_message.contains("should start first"));
    // GET before subscribing.
    let p = c.get("example", 1, -1).await;
    assert_eq!(Ack::decode(p.body).unwrap().error_code, Some(400));
    c.subscribe("example", "1001").await;
    c.client_ack(0).await;
    assert_eq!(c.ack().await.error_code, Some(402));
    c.client_ack(77).await;
    let unknown_batch = c.ack().await;
    assert_eq!(unknown_batch.error_code, Some(400));
    assert!(unknown_batch.error_message.contains("is not exist"));
    for t in [PacketType::Handshake, PacketType::Heartbeat, PacketType::Dump, PacketType::Shutdown]
    {
        c.send(t, vec![]).await;
        let a = c.ack().await;
        assert_eq!(a.error_code, Some(400));
        assert!(a.error_message.contains("is NOT supported"), "{}", a.error_message);
    }
    c.send(PacketType::Get, vec![0xff, 0xff, 0xff]).await;
    assert_eq!(c.ack().await.error_code, Some(400), "undecodable body: error ACK");
    // Still serving.
    assert_eq!(c.subscribe("example", "1001").await, Ack::default());
}

#[tokio::test]
async fn password_auth_keeps_socket_open_on_failure() {
    let srv = start(AuthConfig::new("canal", &password_hash_hex(b"secret")).unwrap()).await;
    let mut c = Client::connect(srv.addr).await;
    let bad = c.auth("canal", Some("wrong")).await;
    assert_eq!(bad.error_code, Some(400));
    assert_eq!(bad.error_message, "auth failed for user:canal");
    assert_eq!(c.auth("other", Some("secret")).await.error_code, Some(400));
    assert_eq!(c.auth("canal", None).await.error_code, Some(400));
    assert_eq!(c.auth("canal", Some("secret")).await, Ack::default());
    assert_eq!(c.subscribe("example", "1001").await, Ack::default());
}

#[tokio::test]
async fn hostile_frames_close_only_their_connection() {
    let srv = start(AuthConfig::open()).await;
    let mut good = Client::connect(srv.addr).await;
    good.auth("", None).await;

    // A length far beyond the maximum.
    let mut huge = Client::connect(srv.addr).await;
    huge.sock.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    assert!(huge.read().await.is_none(), "closed without allocating 2 GiB");
    // A negative length.
    let mut neg = Client::connect(srv.addr).await;
    neg.sock.write_all(&[0xff, 0xff, 0xff, 0xfe]).await.unwrap();
    assert!(neg.read().await.is_none());
    // Garbage protobuf after auth.
    let mut garbage = Client::connect(srv.addr).await;
    garbage.auth("", None).await;
    garbage.sock.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    assert!(garbage.read().await.is_none());
    // Random bytes in many shapes.
    let mut seed = 0x9e3779b97f4a7c15u64;
    for round in 0..50 {
        let mut c = Client::connect(srv.addr).await;
        let mut junk = Vec::new();
        for _ in 0..(round * 7 % 64 + 1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(seed as u8);
        }
        c.sock.write_all(&junk).await.unwrap();
        drop(c);
    }
    // The good client is unaffected.
    assert_eq!(good.subscribe("example", "1001").await, Ack::default());
}

/// canal-rs's GET linger (docs/protocol.md#get-linger): a partial batch is answered once the
/// store has had no put for the linger, not after the GET's timeout; without it (unset, 0 or
/// negative, as Canal's clients send) the GET waits out its timeout.
#[tokio::test]
async fn a_lingering_get_answers_when_puts_stop_and_others_wait_the_timeout() {
    let srv = start(AuthConfig::open()).await;
    let mut c = Client::connect(srv.addr).await;
    c.auth("", None).await;
    c.subscribe("example", "1001").await;
    for linger in [None, Some(0), Some(-5)] {
        put_rows(&srv.dest, 1).await;
        let t0 = std::time::Instant::now();
        let m = messages(c.get_lingering("example", 100, 300, linger).await);
        assert!(t0.elapsed() >= Duration::from_millis(290), "{linger:?}: {:?}", t0.elapsed());
        assert_eq!(m.messages.len(), 3, "{linger:?}");
        c.client_ack(m.batch_id).await;
    }
    // Rows put while the GET waits: answered 2 ms after the last put, long before the 4 s
    // timeout (the bound leaves room for a slow machine).
    let dest = srv.dest.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        put_rows(&dest, 2).await;
    });
    let t0 = std::time::Instant::now();
    let m = messages(c.get_lingering("example", 100, 4000, Some(2000)).await);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(m.messages.len(), 4);
    c.client_ack(m.batch_id).await;
    // Nothing put: the timeout still ends the GET, with an empty batch.
    let t0 = std::time::Instant::now();
    let p = c.get_lingering("example", 100, 200, Some(2000)).await;
    assert!(t0.elapsed() >= Duration::from_millis(190));
    assert_eq!(messages(p).batch_id, -1);
}

#[tokio::test]
async fn blocking_get_waits_and_stopping_destination_closes_sessions() {
    let srv = start(AuthConfig::open()).await;
    let mut c = Client::connect(srv.addr).await;
    c.auth("", None).await;
    c.subscribe("example", "1001").await;
    // Timed GET with nothing there: empty after the timeout.
    let t0 = std::time::Instant::now();
    let p = c.get("example", 1, 200).await;
    assert!(t0.elapsed() >= Duration::from_millis(190));
    assert_eq!(messages(p).batch_id, -1);
    // A blocking GET is answered when data arrives.
    let dest = srv.dest.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        put_rows(&dest, 1).await;
    });
    let m = messages(c.get("example", 3, 0).await);
    assert_eq!(m.messages.len(), 3);
    // Closing the destination (lost the running node) closes the session.
    srv.dest.close();
    let mut closed = false;
    for _ in 0..3 {
        match c.read().await {
            None => {
                closed = true;
                break;
            }
            Some(_) => continue,
        }
    }
    assert!(closed, "session closed after its destination stopped");
}
