//! Policy details on the local backend under paused time: the client's node rewrite, cluster
//! registration across sessions, periodic cursor flushing.

use std::sync::Arc;
use std::time::Duration;

use canal_coord::backend::local::LocalBackend;
use canal_coord::running::DEFAULT_DELAY;
use canal_coord::{
    ClientRunningData, ClusterRegistration, CoordError, Coordinator, CursorStore, FlushPolicy,
    RunningEvent, RunningMonitor, Session,
};

fn local() -> LocalBackend {
    LocalBackend::in_memory(Duration::from_secs(10))
}

async fn enter(rx: &mut tokio::sync::mpsc::UnboundedReceiver<RunningEvent>) -> canal_coord::Fence {
    match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
        Ok(Some(RunningEvent::ActiveEnter { fence })) => fence,
        other => panic!("expected ActiveEnter, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn client_rewrites_its_node_with_the_connection_address() {
    let b = local();
    let coord = Coordinator::new(Arc::new(b.clone()));
    let (m, mut rx) = RunningMonitor::client(
        coord.clone(),
        "example",
        1001,
        ClientRunningData::new("10.12.48.171", 1001),
        DEFAULT_DELAY,
    );
    let f1 = enter(&mut rx).await;
    let f2 = m
        .rewrite(ClientRunningData::new("10.12.48.171:50544", 1001))
        .await
        .unwrap()
        .expect("active");
    assert_ne!(f1, f2);
    assert_eq!(m.fence(), Some(f2.clone()));
    let s = b.session();
    let n = s.get(&canal_coord::path::client_running("example", 1001)).await.unwrap().unwrap();
    assert_eq!(n.data, br#"{"active":true,"address":"10.12.48.171:50544","clientId":1001}"#);
    // The old fence no longer holds; the new one does.
    let cursor = canal_coord::path::client_cursor("example", 1001);
    assert!(matches!(s.put_fenced(&cursor, b"1", &f1).await, Err(CoordError::Fenced { .. })));
    s.put_fenced(&cursor, b"1", &f2).await.unwrap();
    // Still ours after the rewrite (the address changed): no exit.
    tokio::time::sleep(DEFAULT_DELAY * 3).await;
    assert!(m.is_active());
    assert!(rx.try_recv().is_err());
    m.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cluster_nodes_are_recreated_on_a_new_session_and_removed_on_stop() {
    let b = local();
    let coord = Coordinator::new(Arc::new(b.clone()));
    let paths = vec![
        canal_coord::path::server_cluster_node("10.20.144.51:11111"),
        canal_coord::path::destination_cluster_node("example", "10.20.144.51:11111"),
    ];
    let reg = ClusterRegistration::start(coord.clone(), paths.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let obs = b.session();
    for p in &paths {
        assert!(obs.get(p).await.unwrap().unwrap().ephemeral_owner.is_some(), "{p}");
    }
    let s1 = coord.session().await.unwrap();
    s1.as_any().downcast_ref::<canal_coord::backend::local::LocalSession>().unwrap().expire();
    assert_eq!(obs.get(&paths[0]).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let s2 = coord.session().await.unwrap();
    assert_ne!(s1.id(), s2.id());
    for p in &paths {
        assert_eq!(
            obs.get(p).await.unwrap().unwrap().ephemeral_owner,
            Some(s2.id()),
            "{p} re-created"
        );
    }
    assert_eq!(obs.children(canal_coord::path::CLUSTER).await.unwrap(), ["10.20.144.51:11111"]);
    reg.stop().await;
    for p in &paths {
        assert_eq!(obs.get(p).await.unwrap(), None, "{p} removed on stop");
    }
}

#[tokio::test(start_paused = true)]
async fn periodic_flush_coalesces_acks_and_writes_every_period() {
    let b = local();
    let coord = Coordinator::new(Arc::new(b.clone()));
    let (m, mut rx) = RunningMonitor::server(
        coord.clone(),
        "example",
        canal_coord::ServerRunningData::new("10.20.144.51:11111"),
        DEFAULT_DELAY,
    );
    let fence = enter(&mut rx).await;
    let store = CursorStore::new(
        coord.clone(),
        FlushPolicy::Periodic(Duration::from_millis(1000)),
        |_: &[u8], _: &[u8]| None,
    );
    let flusher = store.spawn_flusher().expect("periodic");
    tokio::time::sleep(Duration::from_millis(10)).await; // the first tick fires at once
    let obs = b.session();
    let cursor = canal_coord::path::client_cursor("example", 1001);
    let t0 = tokio::time::Instant::now();
    for i in 0..5u8 {
        store.update("example", 1001, vec![b'0' + i], &fence).await.unwrap();
    }
    assert_eq!(store.get("example", 1001).await.unwrap(), Some(b"4".to_vec()));
    assert_eq!(obs.get(&cursor).await.unwrap(), None, "not written before the period");
    let (_, w) = obs.get_and_watch(&cursor).await.unwrap();
    w.changed().await;
    let took = t0.elapsed();
    assert!(took <= Duration::from_millis(1000) && took >= Duration::from_millis(980), "{took:?}");
    let n = obs.get(&cursor).await.unwrap().unwrap();
    assert_eq!(n.data, b"4", "only the latest cursor is written");
    flusher.abort();
    m.stop().await;
}

/// Removing a registration that fails on a coordinator hiccup (injected: the first two deletes
/// of the node answer "unavailable", the next one times out after it was applied) is retried: the
/// node is gone after `stop`, instead of naming this server as a candidate until its session ends.
#[tokio::test(start_paused = true)]
async fn a_failed_registration_delete_is_retried() {
    use canal_coord::testing::{Fault, FaultBackend, Op};
    let b = local();
    let node = canal_coord::path::destination_cluster_node("example", "10.20.144.51:11111");
    let faults = vec![
        (Op::Delete, node.clone(), Fault::Unavailable),
        (Op::Delete, node.clone(), Fault::Unavailable),
        (Op::Delete, node.clone(), Fault::AppliedButTimeout),
    ];
    let faulty = Arc::new(FaultBackend::on_paths(Arc::new(b.clone()), faults));
    let coord = Coordinator::new(faulty.clone());
    let reg = ClusterRegistration::start(coord.clone(), vec![node.clone()]);
    let obs = b.session();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while obs.get(&node).await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reg.stop().await;
    assert_eq!(faulty.pending_path_faults(), 0, "every injected fault was hit");
    assert_eq!(obs.get(&node).await.unwrap(), None, "removed despite the failed deletes");
}
