//! Client HA: one active consumer per client id through the client running node (docs/protocol.md#client-ha),
//! on the local backend with real sockets (so real time and a short takeover delay).

use std::sync::Arc;
use std::time::Duration;

use canal_client::{Backoff, ClusterConfig, ClusterConnector, ConnectorConfig, Discovery};
use canal_coord::backend::local::LocalBackend;
use canal_coord::{Backend, ClientRunningData, Coordinator, RunningData, path};

use crate::fake::{self, FakeServer};

const DELAY: Duration = Duration::from_millis(1000);

fn ha_client(backend: &Arc<dyn Backend>) -> ClusterConnector {
    let coord = Coordinator::new(backend.clone());
    let mut cfg = ClusterConfig::new(
        ConnectorConfig::new("example").read_timeout(Duration::from_secs(5)),
        Discovery::Coordinator(coord),
    )
    .client_ha(true)
    .backoff(Backoff::new(Duration::from_millis(20), Duration::from_millis(200)));
    cfg.takeover_delay = DELAY;
    ClusterConnector::new(cfg).unwrap()
}

/// Makes the fake server the destination's only cluster member (persistent, so it outlives the
/// admin session).
async fn register(backend: &Arc<dyn Backend>, server: &FakeServer) {
    let s = Coordinator::new(backend.clone()).session().await.unwrap();
    let node = path::destination_cluster_node("example", &server.address());
    s.create_persistent(&node, b"").await.unwrap();
}

async fn running_node(backend: &Arc<dyn Backend>) -> Option<ClientRunningData> {
    let s = Coordinator::new(backend.clone()).session().await.unwrap();
    let n = s.get(&path::client_running("example", 1001)).await.unwrap()?;
    s.close().await;
    Some(ClientRunningData::from_bytes(&n.data).unwrap())
}

#[tokio::test]
async fn one_active_consumer_and_handover_on_release() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t", 1, "a"), fake::insert("t", 2, "b")]);
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::in_memory(Duration::from_secs(10)));
    register(&backend, &server).await;
    let mut c1 = ha_client(&backend);
    c1.subscribe("").await.unwrap();
    assert!(c1.is_active());
    // The node was rewritten with the connection's local ip:port.
    let node = running_node(&backend).await.expect("client running node");
    assert_eq!(node.address, c1.local_addr().unwrap().to_string());
    assert_eq!((node.active, node.client_id), (true, 1001));
    let m = c1.get(1, Some(Duration::from_millis(100))).await.unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "a");

    // A second instance of the same client id stays standby.
    let mut c2 = ha_client(&backend);
    let standby = tokio::spawn(async move {
        c2.subscribe("").await.unwrap();
        let m = c2.get(1, Some(Duration::from_millis(500))).await.unwrap();
        (c2, m)
    });
    tokio::time::sleep(DELAY * 2).await;
    assert!(!standby.is_finished(), "the standby must not consume while another is active");

    // The active one leaves gracefully: it marks its node released, so the standby takes over
    // at once instead of waiting out the takeover delay.
    let left = tokio::time::Instant::now();
    c1.disconnect().await;
    let (c2, m) = tokio::time::timeout(Duration::from_secs(5), standby).await.unwrap().unwrap();
    let took = left.elapsed();
    assert!(took < DELAY, "a graceful hand-over took {took:?}, as long as the delay");
    assert_eq!(fake::row_name(&m.entries[0]), "b");
    let node = running_node(&backend).await.expect("client running node");
    assert_eq!(node.address, c2.local_addr().unwrap().to_string());
}

/// An operator's `active:false` on the active client's node hands consumption over: the active
/// one stops (its blocking GET is interrupted), marks the node released, and the standby takes
/// over.
#[tokio::test]
async fn operator_switch_hands_over() {
    let server = FakeServer::open().await;
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::in_memory(Duration::from_secs(10)));
    register(&backend, &server).await;
    let mut c1 = ha_client(&backend);
    c1.subscribe("").await.unwrap();
    let c1_addr = c1.local_addr().unwrap().to_string();
    let mut c2 = ha_client(&backend);
    let c2_task = tokio::spawn(async move {
        c2.subscribe("").await.unwrap();
        let m = c2.get(1, Some(Duration::from_secs(2))).await.unwrap();
        (c2, m)
    });
    // c1 blocks in a GET on an empty queue (c2, a standby, sends none).
    let gets = |s: &fake::State| s.log.iter().filter(|l| l.starts_with("GET")).count();
    let gets_before = gets(&server.state.lock().unwrap());
    let c1_task = tokio::spawn(async move {
        let r = tokio::time::timeout(Duration::from_secs(3), c1.get(1, Some(Duration::ZERO))).await;
        (c1, r.is_ok())
    });
    server.wait_for("c1's blocking GET", |s| gets(s) > gets_before).await;
    let admin = Coordinator::new(backend.clone()).session().await.unwrap();
    let off = format!(r#"{{"active":false,"address":"{c1_addr}","clientId":1001}}"#);
    admin.put(&path::client_running("example", 1001), off.as_bytes(), None).await.unwrap();
    // c2 becomes active after the delay (its node then carries its connection's address) and
    // gets the row; c1 does not.
    let deadline = tokio::time::Instant::now() + DELAY * 10;
    loop {
        if let Some(n) = running_node(&backend).await
            && n.active
            && n.address.contains(':')
            && n.address != c1_addr
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "c2 never became active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.push([fake::insert("t", 1, "for-c2")]);
    let (c2, m) = tokio::time::timeout(Duration::from_secs(5), c2_task).await.unwrap().unwrap();
    assert_eq!(fake::row_name(&m.entries[0]), "for-c2");
    assert!(c2.is_active());
    let (c1, c1_got) = c1_task.await.unwrap();
    assert!(!c1_got, "c1 must not get data after releasing its running node");
    assert!(!c1.is_active());
}
