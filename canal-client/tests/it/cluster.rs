//! ClusterConnector: discovery through the coordinator's running node and cluster members (local
//! backend, and real ZooKeeper/etcd when available) or a static list; reconnect when the server
//! goes away or the running node moves; late error ACKs; the total deadline.

use std::sync::Arc;
use std::time::Duration;

use canal_client::{
    Backoff, ClientError, ClusterConfig, ClusterConnector, ConnectorConfig, Discovery, TimeUnit,
};
use canal_coord::backend::etcd::EtcdBackend;
use canal_coord::backend::local::LocalBackend;
use canal_coord::backend::zk::ZkBackend;
use canal_coord::{Backend, Coordinator, Session, path};

use crate::fake::{self, FakeServer};
use crate::support;

fn connector() -> ConnectorConfig {
    ConnectorConfig::new("example").read_timeout(Duration::from_secs(5))
}

fn fast() -> Backoff {
    Backoff::new(Duration::from_millis(20), Duration::from_millis(200))
}

fn cluster(discovery: Discovery) -> ClusterConnector {
    ClusterConnector::new(ClusterConfig::new(connector(), discovery).backoff(fast())).unwrap()
}

async fn set_running(session: &Arc<dyn Session>, dest: &str, addr: &str) {
    let p = path::server_running(dest);
    match session.get(&p).await.unwrap() {
        Some(_) => {
            session.put(&p, &fake::running_json(addr), None).await.unwrap();
        }
        None => {
            session.create_ephemeral(&p, &fake::running_json(addr)).await.unwrap();
        }
    }
}

#[tokio::test]
async fn static_list_skips_dead_servers() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t", 1, "a")]);
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut c = cluster(Discovery::Static(vec![dead.clone(), server.address()]));
    c.subscribe("").await.unwrap();
    assert_eq!(c.server(), Some(server.address().as_str()));
    let m = c.get(10, Some(Duration::from_millis(100))).await.unwrap();
    assert_eq!(m.entries.len(), 1);

    // With only dead servers and a deadline, the call gives up.
    let mut c = ClusterConnector::new(
        ClusterConfig::new(connector(), Discovery::Static(vec![dead]))
            .backoff(fast().with_deadline(Duration::from_millis(300))),
    )
    .unwrap();
    let err = c.subscribe("").await.unwrap_err();
    match err {
        ClientError::DeadlineExceeded { last, .. } => {
            assert!(matches!(*last, ClientError::Connect { .. }), "{last:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        ClusterConnector::new(ClusterConfig::new(connector(), Discovery::Static(vec![]))).is_err()
    );
}

/// The running node names A; A dies with an un-acked batch; B becomes running: the client
/// reconnects to B, re-subscribes with its filter and rolls back, and carries on.
async fn failover(backend: Arc<dyn Backend>, dest: &str) {
    let a = FakeServer::open().await;
    let b = FakeServer::open().await;
    a.push([fake::insert("t", 1, "from-a")]);
    b.push([fake::insert("t", 2, "from-b")]);
    // Batch ids are per server; keep them apart so the ack below names A's batch only.
    b.set(|s| s.next_batch = 100);
    let admin = Coordinator::new(backend.clone());
    let session = admin.session().await.unwrap();
    set_running(&session, dest, &a.address()).await;

    let coord = Coordinator::new(backend);
    let mut cfg = connector();
    cfg.destination = dest.to_owned();
    let mut c = ClusterConnector::new(
        ClusterConfig::new(cfg, Discovery::Coordinator(coord.clone())).backoff(fast()),
    )
    .unwrap();
    c.subscribe("test\\..*").await.unwrap();
    assert_eq!(c.server(), Some(a.address().as_str()));
    let m = c.get_without_ack(10, Some(100), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "from-a");

    a.kill();
    set_running(&session, dest, &b.address()).await;
    let m2 = c.get_without_ack(10, Some(1000), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m2.entries[0]), "from-b");
    assert_eq!(c.server(), Some(b.address().as_str()));
    let log = b.log();
    assert_eq!(log[1], format!("SUB {dest} 1001 \"test\\\\..*\""), "{log:#?}");
    assert_eq!(log[2], "ROLLBACK 0", "{log:#?}");
    // A's batch died with A's connection: acking it is pointless and says so.
    assert!(matches!(c.ack(m.id).await, Err(ClientError::BatchRolledBack { .. })));
    c.ack(m2.id).await.unwrap();
    c.disconnect().await;
    session.close().await;
    coord.close().await;
}

#[tokio::test]
async fn failover_local_backend() {
    failover(Arc::new(LocalBackend::in_memory(Duration::from_secs(10))), "example").await;
}

#[tokio::test]
async fn failover_zookeeper() {
    let Some(zk) = support::service("CANAL_TEST_ZK") else { return };
    let dest = format!("client-failover-{}", std::process::id());
    failover(Arc::new(ZkBackend::new(&zk, Duration::from_secs(10))), &dest).await;
}

#[tokio::test]
async fn failover_etcd() {
    let Some(etcd) = support::service("CANAL_TEST_ETCD") else { return };
    let dest = format!("client-failover-{}", std::process::id());
    let prefix = format!("/canal-client-test-{}", std::process::id());
    failover(Arc::new(EtcdBackend::new(vec![etcd], 5, &prefix)), &dest).await;
}

/// A blocking GET on A is interrupted when the running node moves to B.
#[tokio::test]
async fn running_node_change_interrupts_a_blocking_get() {
    let a = FakeServer::open().await;
    let b = FakeServer::open().await;
    b.push([fake::insert("t", 2, "from-b")]);
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::in_memory(Duration::from_secs(10)));
    let admin = Coordinator::new(backend.clone());
    let session = admin.session().await.unwrap();
    set_running(&session, "example", &a.address()).await;
    let mut c = cluster(Discovery::Coordinator(Coordinator::new(backend)));
    c.subscribe("").await.unwrap();
    let switch = {
        let session = session.clone();
        let b = b.address();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            set_running(&session, "example", &b).await;
        })
    };
    // Blocks on A forever (timeout 0) unless the switch interrupts it.
    let m = tokio::time::timeout(Duration::from_secs(5), c.get(10, Some(Duration::ZERO)))
        .await
        .expect("interrupted by the running-node change")
        .unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "from-b");
    switch.await.unwrap();
    // A saw the abandoned GET; B the reconnect.
    assert!(a.log().iter().any(|l| l.starts_with("GET")));
    assert_eq!(c.connections(), 2);
}

/// Without a running node the client picks a member of `…/{dest}/cluster`; a standby that does
/// not run the destination answers 400 and the client moves on.
#[tokio::test]
async fn cluster_members_when_nothing_runs() {
    let standby = FakeServer::open().await;
    standby.set(|s| s.running = false);
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::in_memory(Duration::from_secs(10)));
    let admin = Coordinator::new(backend.clone());
    let session = admin.session().await.unwrap();
    session
        .create_ephemeral(&path::destination_cluster_node("example", &standby.address()), b"")
        .await
        .unwrap();
    let mut c = ClusterConnector::new(
        ClusterConfig::new(connector(), Discovery::Coordinator(Coordinator::new(backend)))
            .backoff(fast().with_deadline(Duration::from_millis(400))),
    )
    .unwrap();
    let err = c.subscribe("").await.unwrap_err();
    assert!(matches!(err, ClientError::DeadlineExceeded { .. }), "{err:?}");
    assert!(standby.log().iter().any(|l| l.starts_with("SUB")));

    // Nothing registered at all: no server.
    session
        .delete(&path::destination_cluster_node("example", &standby.address()), None)
        .await
        .unwrap();
    let err = c.subscribe("").await.unwrap_err();
    match err {
        ClientError::DeadlineExceeded { last, .. } => {
            assert!(matches!(*last, ClientError::NoServer { .. }), "{last:?}")
        }
        other => panic!("{other:?}"),
    }

    // A running member: used.
    let live = FakeServer::open().await;
    session
        .create_ephemeral(&path::destination_cluster_node("example", &live.address()), b"")
        .await
        .unwrap();
    c.subscribe("").await.unwrap();
    assert_eq!(c.server(), Some(live.address().as_str()));
}

/// The caller's failed ack is reported once; the connector renews the connection (rollback) and
/// the un-acked batch comes again.
#[tokio::test]
async fn failed_ack_is_reported_then_reconnects() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t", 1, "a")]);
    let mut c = cluster(Discovery::Static(vec![server.address()]));
    c.subscribe("").await.unwrap();
    let m = c.get_without_ack(10, None, TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(m.id, 1);
    // Ack out of order: the server refuses it (later, on the wire).
    server.set(|s| {
        s.outstanding.insert(0, Vec::new());
    });
    let replied = server.replies();
    c.ack(1).await.unwrap();
    server.wait_replies(replied + 1).await;
    let err = c.get_without_ack(10, None, TimeUnit::Milliseconds).await.unwrap_err();
    assert!(matches!(err, ClientError::AckFailed { .. }), "{err:?}");
    server.set(|s| {
        s.outstanding.remove(&0);
    });
    let m = c.get_without_ack(10, None, TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "a");
    assert_eq!(c.connections(), 2);
}

/// A subscribed client of `server` with `config` and fetching ahead.
async fn prefetching(server: &FakeServer, config: ConnectorConfig) -> ClusterConnector {
    let config =
        ClusterConfig::new(config.prefetch(true), Discovery::Static(vec![server.address()]));
    let mut c = ClusterConnector::new(config.backoff(fast())).unwrap();
    c.subscribe("").await.unwrap();
    c
}

/// The row names of the next `n` one-row batches, each acked (empty batches skipped).
async fn read_acking(c: &mut ClusterConnector, n: usize) -> Vec<String> {
    let mut rows = Vec::new();
    while rows.len() < n {
        let m = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
        if !m.is_empty() {
            rows.push(fake::row_name(&m.entries[0]));
            c.ack(m.id).await.unwrap();
        }
    }
    rows
}

/// Fetch ahead: the next GET is on the wire as soon as a batch comes, a second one goes in the
/// same write as the batch's ack (two ahead at most), their batches are what the next calls
/// return, acks go on in order, and every row comes once, in order.
#[tokio::test]
async fn prefetch_fetches_the_next_batch_ahead() {
    let server = FakeServer::open().await;
    let names = ["a", "b", "c", "d", "e"];
    server.push((1..=5).map(|i| fake::insert("t", i, names[i as usize - 1])));
    let mut c = prefetching(&server, connector()).await;
    let gets = |s: &fake::State| s.log.iter().filter(|l| l.starts_with("GET")).count();
    let mut rows = Vec::new();
    for n in 1..=5 {
        let m = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
        rows.push(fake::row_name(&m.entries[0]));
        // The first batch's reply sent the GET for the next one; later ones find one ahead.
        server.wait_for("the GET ahead", |s| gets(s) == n + 1).await;
        c.ack(m.id).await.unwrap();
        // The ack took a second GET ahead with it, read right after it.
        server.wait_for("the GET with the ack", |s| gets(s) == n + 2).await;
        let log = server.log();
        let at = log.iter().rposition(|l| l.starts_with("ACK")).unwrap();
        assert_eq!(log[at], format!("ACK {}", m.id), "{log:?}");
        assert!(log[at + 1].starts_with("GET"), "{log:?}");
        // Never more than two batches handed out ahead of the caller.
        let outstanding = server.state.lock().unwrap().outstanding.len();
        assert!(outstanding <= 2, "{outstanding} batches outstanding after ack {n}: {log:?}");
    }
    assert_eq!(rows, names);
    let m = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
    assert!(m.is_empty());
    server.wait_for("every batch acked", |s| s.outstanding.is_empty()).await;
    assert_eq!(c.connections(), 1);
}

/// An ack that fails while a GET is ahead (its error comes after that GET's batch) is reported,
/// the connection renewed, and the un-acked rows come again: none is lost.
#[tokio::test]
async fn prefetch_a_failed_ack_behind_a_get_ahead_loses_nothing() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t", 1, "a"), fake::insert("t", 2, "b"), fake::insert("t", 3, "c")]);
    let mut c = prefetching(&server, connector()).await;
    let m1 = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m1.entries[0]), "a");
    // The server refuses the ack (an older batch is "outstanding").
    server.set(|s| {
        s.outstanding.insert(0, Vec::new());
    });
    c.ack(m1.id).await.unwrap();
    // The batch fetched ahead comes first; the ack's error after it.
    let m2 = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m2.entries[0]), "b");
    let err = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap_err();
    assert!(matches!(err, ClientError::AckFailed { .. }), "{err:?}");
    server.set(|s| {
        s.outstanding.remove(&0);
    });
    // The renewed connection's rollback gives back everything un-acked: a, b, c in order.
    assert_eq!(read_acking(&mut c, 3).await, ["a", "b", "c"]);
    assert_eq!(c.connections(), 2);
}

/// A rollback with a batch fetched ahead rolls back that batch too (rollback 0): both rows come
/// again.
#[tokio::test]
async fn prefetch_rollback_gives_back_the_batch_fetched_ahead() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t", 1, "a"), fake::insert("t", 2, "b")]);
    let mut c = prefetching(&server, connector()).await;
    let m1 = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
    server.wait_for("the batch fetched ahead", |s| s.outstanding.len() == 2).await;
    c.rollback(m1.id).await.unwrap();
    server.wait_for("both rows back", |s| s.queue.len() == 2 && s.outstanding.is_empty()).await;
    assert!(server.log().iter().any(|l| l == "ROLLBACK 0"), "{:?}", server.log());
    let m = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "a");
    assert_eq!(c.connections(), 1);
}

/// With two GETs ahead (one from the batch's reply, one from the ack), a rollback reads both
/// replies and rolls back everything: every un-acked row comes again, in order.
#[tokio::test]
async fn prefetch_rollback_with_two_ahead_gives_back_both() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t", 1, "a"), fake::insert("t", 2, "b"), fake::insert("t", 3, "c")]);
    let mut c = prefetching(&server, connector()).await;
    let m1 = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
    c.ack(m1.id).await.unwrap();
    // b and c are both handed out ahead.
    server.wait_for("two batches fetched ahead", |s| s.outstanding.len() == 2).await;
    let m2 = c.get_without_ack(1, Some(200), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m2.entries[0]), "b");
    c.rollback(m2.id).await.unwrap();
    server.wait_for("b and c back", |s| s.queue.len() == 2 && s.outstanding.is_empty()).await;
    assert!(server.log().iter().any(|l| l == "ROLLBACK 0"), "{:?}", server.log());
    assert_eq!(read_acking(&mut c, 2).await, ["b", "c"]);
    assert_eq!(c.connections(), 1);
}

/// Disconnecting with a GET ahead does not wait for its reply (a rollback would): the
/// connection closes at once and the next connect's rollback gives the batches back.
#[tokio::test]
async fn prefetch_disconnect_does_not_wait_for_the_get_ahead() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t", 1, "a")]);
    let mut cfg = connector();
    cfg.rollback_on_disconnect = true;
    let mut c = prefetching(&server, cfg).await;
    // The GET ahead finds nothing and waits its 30 s on the server.
    let m = c.get_without_ack(1, Some(30_000), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "a");
    let gets = |s: &fake::State| s.log.iter().filter(|l| l.starts_with("GET")).count();
    server.wait_for("the GET ahead", |s| gets(s) == 2).await;
    let replied = server.replies();
    c.disconnect().await;
    assert_eq!(server.replies(), replied, "disconnect waited for the GET ahead's reply");
    // Nothing after the GET ahead (the on-connect rollback came first).
    let log = server.log();
    assert!(log.last().is_some_and(|l| l.starts_with("GET")), "{log:?}");
    // The next connection's rollback gives the row back.
    let mut c = cluster(Discovery::Static(vec![server.address()]));
    c.subscribe("").await.unwrap();
    let m = c.get_without_ack(1, Some(1_000), TimeUnit::Milliseconds).await.unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "a");
}

/// A cancelled call leaves no stale reply behind: the next call reconnects.
#[tokio::test]
async fn cancelled_call_reconnects() {
    let server = FakeServer::open().await;
    let mut c = cluster(Discovery::Static(vec![server.address()]));
    c.subscribe("").await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(100), c.get(1, Some(Duration::ZERO))).await;
    assert!(r.is_err());
    let replied = server.replies();
    server.push([fake::insert("t", 1, "a")]);
    // The abandoned GET takes the row (into the old connection); the reconnect's rollback
    // brings it back.
    server.wait_replies(replied + 1).await;
    let m = c.get(1, Some(Duration::from_secs(1))).await.unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "a");
    assert_eq!(c.connections(), 2);
}
