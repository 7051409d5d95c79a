//! The shared schema history in the coordinator (canal-server's `history_store`): records
//! chunked under ZooKeeper's node limit, bounded by compaction below the cursors, fenced writes,
//! and failed reads that are errors, never an empty history.

use std::sync::Arc;
use std::time::Instant;

use canal_coord::backend::local::LocalBackend;
use canal_coord::testing::{Fault, FaultBackend, Op, take_running};
use canal_coord::{Backend, Coordinator, Fence, Session, path};
use canal_core::schema::store::{
    COMPACT_RECORDS, HistoryMeta, HistoryStore, HistoryStoreError, META_VERSION, SourceIdentity,
};
use canal_core::schema::{HistoryOptions, SchemaHistory, SchemaPosition, SnapshotTable};
use canal_server::history_store::{CoordHistoryStore, load_shared_history};

use crate::ha::{etcd, zk};
use crate::support;

fn meta(from: SchemaPosition) -> HistoryMeta {
    HistoryMeta {
        v: META_VERSION,
        source: SourceIdentity {
            address: "127.0.0.1:3306".into(),
            server_id: 1,
            server_uuid: None,
        },
        from: from.clone(),
        to: from,
    }
}

fn unique(tag: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("hist_{tag}_{}_{nanos}", std::process::id())
}

/// Takes the destination's running node as a monitor does; the fence of that ownership.
async fn own(s: &Arc<dyn Session>, dest: &str) -> Fence {
    let data = b"{\"active\":true,\"address\":\"test\"}";
    take_running(s, &path::server_running(dest), data).await
}

/// Every node under the destination's `schema` node: (count, bytes).
async fn footprint(s: &Arc<dyn Session>, dest: &str) -> (usize, usize) {
    let mut stack = vec![path::schema_history(dest)];
    let (mut n, mut bytes) = (0, 0);
    while let Some(p) = stack.pop() {
        if let Some(node) = s.get(&p).await.unwrap() {
            n += 1;
            bytes += node.data.len();
        }
        for c in s.children(&p).await.unwrap() {
            stack.push(format!("{p}/{c}"));
        }
    }
    (n, bytes)
}

async fn cleanup(s: &Arc<dyn Session>, dest: &str) {
    // Depth-first delete of the test's destination.
    let mut order = Vec::new();
    let mut stack = vec![path::destination(dest)];
    while let Some(p) = stack.pop() {
        for c in s.children(&p).await.unwrap_or_default() {
            stack.push(format!("{p}/{c}"));
        }
        order.push(p);
    }
    for p in order.into_iter().rev() {
        let _ = s.delete(&p, None).await;
    }
}

fn wide_table(i: usize, columns: usize) -> SnapshotTable {
    let cols: Vec<String> = (0..columns)
        .map(|c| format!("`column_with_a_long_name_{c:04}` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci DEFAULT NULL COMMENT 'padding padding padding'"))
        .collect();
    SnapshotTable {
        schema: "d".into(),
        ddl: Some(format!(
            "CREATE TABLE `wide_{i}` (`id` int(11) NOT NULL, {}, PRIMARY KEY (`id`))",
            cols.join(", ")
        )),
    }
}

/// A compacted snapshot of many wide tables is bigger than ZooKeeper's 1 MB node limit: it is
/// stored in pieces and loads back identical.
async fn chunked_round_trip(coord: Arc<Coordinator>, tag: &str) {
    let dest = unique(tag);
    let s = coord.session().await.unwrap();
    let fence = own(&s, &dest).await;
    let mut h = SchemaHistory::new(HistoryOptions::default());
    let at = SchemaPosition::new("bin.000001", 4);
    let tables: Vec<SnapshotTable> = (0..40).map(|i| wide_table(i, 120)).collect();
    h.record_snapshot(&at, &tables).unwrap();
    h.apply_ddl(&SchemaPosition::new("bin.000001", 100), "d", "ALTER TABLE wide_0 ADD z INT")
        .unwrap();
    assert!(h.compact_below(&SchemaPosition::new("bin.000001", 200), 2).unwrap());
    let record_bytes = serde_json::to_vec(&h.records()[0]).unwrap().len();
    assert!(record_bytes > 1024 * 1024, "the snapshot must exceed 1 MB: {record_bytes} bytes");
    let store = CoordHistoryStore::new(coord.clone(), &dest, fence.clone());
    store.write(&meta(at.clone()), h.pending_sync()).await.unwrap();
    h.mark_synced();
    let pieces = s.children(&format!("{}/gen-1", path::schema_history(&dest))).await.unwrap();
    assert!(pieces.len() >= 3, "{record_bytes} bytes in {pieces:?}");
    eprintln!("{tag}: one {record_bytes}-byte snapshot record stored as {} nodes", pieces.len());
    // A later record is appended to the same generation.
    h.apply_ddl(&SchemaPosition::new("bin.000001", 300), "d", "ALTER TABLE wide_1 ADD y INT")
        .unwrap();
    store.write(&meta(at.clone()), h.pending_sync()).await.unwrap();

    let loaded = CoordHistoryStore::new(coord.clone(), &dest, fence.clone()).load().await.unwrap();
    assert_eq!(loaded.records, h.records());
    assert_eq!(loaded.meta, Some(meta(at)));
    let reread = rebuilt(loaded.records);
    let w1 = reread.table_at("d", "wide_1", &SchemaPosition::new("bin.000001", 301)).unwrap();
    assert_eq!(w1.columns.len(), 122);
    cleanup(&s, &dest).await;
    coord.close().await;
}

#[tokio::test]
async fn zookeeper_history_record_over_1mb_is_chunked() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    chunked_round_trip(Coordinator::new(zk(servers).open_backend().unwrap()), "zk").await;
}

#[tokio::test]
async fn etcd_history_record_over_1mb_is_chunked() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    chunked_round_trip(Coordinator::new(etcd(endpoint).open_backend().unwrap()), "etcd").await;
}

/// `ddls` DDLs with the cursor following 3 DDLs behind: the instance's policy
/// (`compact_below(cursor, COMPACT_RECORDS)`, then the write) keeps the stored history bounded.
async fn bounded_after_ddls(coord: Arc<Coordinator>, tag: &str, ddls: usize) {
    let dest = unique(tag);
    let s = coord.session().await.unwrap();
    let fence = own(&s, &dest).await;
    let store = CoordHistoryStore::new(coord.clone(), &dest, fence);
    let mut h = SchemaHistory::new(HistoryOptions::default());
    let pos = |i: usize| {
        SchemaPosition::new(format!("bin.{:06}", 1 + i / 1000), 4 + (i % 1000) as u64 * 100)
    };
    let mut m = meta(pos(0));
    for t in 0..5 {
        let at = SchemaPosition::new("bin.000001", t);
        h.apply_ddl(&at, "d", &format!("CREATE TABLE t{t} (id INT PRIMARY KEY, a INT)")).unwrap();
    }
    let (mut max_nodes, mut max_bytes) = (0, 0);
    let t0 = Instant::now();
    for i in 1..=ddls {
        let t = i % 5;
        let sql = if ((i - 1) / 5) % 2 == 0 {
            format!("ALTER TABLE t{t} ADD COLUMN c INT")
        } else {
            format!("ALTER TABLE t{t} DROP COLUMN c")
        };
        assert!(h.apply_ddl(&pos(i), "d", &sql).unwrap().problems.is_empty(), "{sql}");
        if i > 3 {
            let floor = pos(i - 3);
            if h.compact_below(&floor, COMPACT_RECORDS).unwrap() {
                m.from = floor;
            }
        }
        m.to = pos(i);
        store.write(&m, h.pending_sync()).await.unwrap();
        h.mark_synced();
        if i % 500 == 0 {
            let (n, b) = footprint(&s, &dest).await;
            max_nodes = max_nodes.max(n);
            max_bytes = max_bytes.max(b);
        }
    }
    let (n, b) = footprint(&s, &dest).await;
    eprintln!(
        "{tag}: after {ddls} DDLs in {:?}: {n} nodes, {b} bytes now; at most {max_nodes} nodes, {max_bytes} bytes (sampled every 500)",
        t0.elapsed()
    );
    // One snapshot, up to 2 × COMPACT_RECORDS records, meta, the schema and generation nodes.
    assert!(n <= 2 * COMPACT_RECORDS + 4, "{n} nodes");
    assert!(max_nodes <= 2 * COMPACT_RECORDS + 4, "{max_nodes} nodes");
    assert!(max_bytes < 64 * 1024, "{max_bytes} bytes");
    // And it still answers: t1 at the last position has what the last DDL left.
    let loaded = store.load().await.unwrap();
    let reread = rebuilt(loaded.records);
    let cols = reread.table_at("d", "t0", &pos(ddls)).unwrap().columns.len();
    assert_eq!(cols, h.table_at("d", "t0", &pos(ddls)).unwrap().columns.len());
    cleanup(&s, &dest).await;
    coord.close().await;
}

#[tokio::test]
async fn local_history_bounded_after_10k_ddls() {
    let backend = LocalBackend::in_memory(std::time::Duration::from_secs(10));
    bounded_after_ddls(Coordinator::new(Arc::new(backend)), "local", 10_000).await;
}

#[tokio::test]
async fn zookeeper_history_bounded_after_1k_ddls() {
    // 10 000 take about two minutes on ZooKeeper here; the local backend runs the 10 000.
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    bounded_after_ddls(Coordinator::new(zk(servers).open_backend().unwrap()), "zk", 1000).await;
}

/// A history write by a server that no longer owns the destination is refused (and the instance
/// stops on it: `InstanceError::HistoryStore(Fenced)` is definite).
#[tokio::test]
async fn zookeeper_history_write_is_fenced() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let coord = Coordinator::new(zk(servers).open_backend().unwrap());
    let dest = unique("fence");
    let s = coord.session().await.unwrap();
    let fence = own(&s, &dest).await;
    let store = CoordHistoryStore::new(coord.clone(), &dest, fence.clone());
    let at = SchemaPosition::new("bin.000001", 4);
    store.write(&meta(at.clone()), None).await.unwrap();
    // Another owner: the running node is deleted and re-created by someone else.
    s.delete(&fence.path, None).await.unwrap();
    let other =
        Coordinator::new(zk(support::service("CANAL_TEST_ZK").unwrap()).open_backend().unwrap());
    let os = other.session().await.unwrap();
    own(&os, &dest).await;
    os.put(&fence.path, b"{\"active\":true,\"address\":\"other\"}", None).await.unwrap();
    let err = store.write(&meta(at), None).await.unwrap_err();
    assert!(matches!(err, HistoryStoreError::Fenced { .. }), "{err}");
    other.close().await;
    cleanup(&s, &dest).await;
    coord.close().await;
}

/// The coordinator fails the history read at activation: the load is an error (activation fails
/// and is retried), never an empty history; once the coordinator answers, the history is there.
#[tokio::test]
async fn failed_history_read_is_an_error_not_an_empty_history() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let dest = unique("fault");
    // Write a history with a plain session.
    let coord = Coordinator::new(zk(servers.clone()).open_backend().unwrap());
    let s = coord.session().await.unwrap();
    let fence = own(&s, &dest).await;
    let mut h = SchemaHistory::new(HistoryOptions::default());
    let at = SchemaPosition::new("bin.000001", 4);
    h.apply_ddl(&at, "d", "CREATE TABLE t (id INT PRIMARY KEY, b INT)").unwrap();
    CoordHistoryStore::new(coord.clone(), &dest, fence.clone())
        .write(&meta(at.clone()), h.pending_sync())
        .await
        .unwrap();
    // Each read of the load fails once in turn: meta, the listing, the record.
    for k in 0..3 {
        let inner: Arc<dyn Backend> = zk(servers.clone()).open_backend().unwrap();
        let script: Vec<(Op, Fault)> = (0..=k)
            .map(|i| {
                (
                    Op::Any,
                    if i == k {
                        Fault::Unavailable
                    } else {
                        Fault::Delay(std::time::Duration::ZERO)
                    },
                )
            })
            .collect();
        let faulty = Coordinator::new(Arc::new(FaultBackend::scripted(inner, script)));
        let err = load_shared_history(&faulty, &dest, &fence).await.unwrap_err();
        assert!(matches!(err, HistoryStoreError::Unavailable { .. }), "read {k}: {err}");
        // The next attempt (the activation retry) gets the history.
        let shared = load_shared_history(&faulty, &dest, &fence).await.unwrap();
        assert_eq!(shared.loaded.unwrap().records, h.records(), "read {k}");
        faulty.close().await;
    }
    cleanup(&s, &dest).await;
    coord.close().await;
}

/// A running instance whose history write is fenced out (another server owns the destination
/// now) stops: the DDL's entries never reach the store.
#[tokio::test]
async fn instance_stops_when_its_history_write_is_fenced() {
    use canal_core::instance::{Instance, InstanceState, SharedHistory};
    use canal_core::schema::store::StoredHistory;
    use mysql_async::prelude::Queryable;
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = crate::ha::fixture("hfence").await else { return };
    let coord = Coordinator::new(zk(servers.clone()).open_backend().unwrap());
    let s = coord.session().await.unwrap();
    let fence = own(&s, &fx.db).await;
    let store = Arc::new(CoordHistoryStore::new(coord.clone(), &fx.db, fence.clone()));
    let shared = SharedHistory { store, loaded: Some(StoredHistory::default()) };
    let instance = Instance::start_with_history(fx.instance.clone(), None, Some(shared));
    let mut st = instance.watch_status();
    let deadline = std::time::Duration::from_secs(20);
    tokio::time::timeout(deadline, st.wait_for(|s| s.state == InstanceState::Running))
        .await
        .expect("running")
        .unwrap();
    // Another server takes the destination over.
    s.delete(&fence.path, None).await.unwrap();
    let other = Coordinator::new(zk(servers).open_backend().unwrap());
    let os = other.session().await.unwrap();
    own(&os, &fx.db).await;
    fx.admin.query_drop(format!("ALTER TABLE `{}`.t ADD COLUMN z INT", fx.db)).await.unwrap();
    let failed = tokio::time::timeout(
        deadline,
        st.wait_for(|s| matches!(s.state, InstanceState::Failed { .. })),
    )
    .await
    .expect("the instance stops")
    .unwrap()
    .clone();
    let InstanceState::Failed { error } = failed.state else { unreachable!() };
    assert!(error.contains("fenced"), "{error}");
    assert_eq!(failed.entries, 0, "the DDL entry was not stored");
    instance.stop().await;
    other.close().await;
    cleanup(&s, &fx.db).await;
    coord.close().await;
}

/// A history rebuilt from shipped records, as an activation does (`replace_records`).
fn rebuilt(records: Vec<canal_core::schema::HistoryRecord>) -> SchemaHistory {
    let mut h = SchemaHistory::new(HistoryOptions::default());
    h.replace_records(records).unwrap();
    h
}
