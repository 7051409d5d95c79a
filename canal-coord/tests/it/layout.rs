//! Canal's layout and JSON as other clients see them: nodes written by our monitors, cluster
//! registration and cursor store are read back with Python's kazoo (ZooKeeper) and `etcdctl`,
//! and compared field for field (and byte for byte) with what Java Canal writes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use canal_coord::backend::etcd::EtcdBackend;
use canal_coord::backend::zk::ZkBackend;
use canal_coord::{
    Backend, ClientRunningData, ClusterRegistration, Coordinator, CursorStore, FlushPolicy,
    RunningEvent, RunningMonitor, ServerRunningData,
};

/// A cursor as canal-core writes it (LogPosition with `@type`).
const CURSOR: &str = r#"{"@type":"com.alibaba.otter.canal.protocol.position.LogPosition","identity":{"slaveId":-1,"sourceAddress":{"address":"127.0.0.1","port":3306}},"postion":{"gtid":"","included":false,"journalName":"mysql-bin.000003","position":5620,"serverId":1,"timestamp":1700000000000}}"#;

struct Written {
    dest: String,
    server: String,
    paths: Vec<(String, Vec<u8>, bool)>,
}

/// Writes a server's and a client's nodes through the public API; keeps them alive while the
/// returned guard lives.
async fn write_layout(backend: Arc<dyn Backend>) -> (Written, impl Sized) {
    let unique = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    );
    let dest = format!("layout{unique}");
    let server = format!("10.20.144.51:{}", 10000 + (std::process::id() % 50000));
    let coord = Coordinator::new(backend);
    let reg = ClusterRegistration::start(
        coord.clone(),
        vec![
            canal_coord::path::server_cluster_node(&server),
            canal_coord::path::destination_cluster_node(&dest, &server),
        ],
    );
    let (sm, mut se) = RunningMonitor::server(
        coord.clone(),
        &dest,
        ServerRunningData::new(server.clone()),
        Duration::from_millis(500),
    );
    let fence = match tokio::time::timeout(Duration::from_secs(10), se.recv()).await {
        Ok(Some(RunningEvent::ActiveEnter { fence })) => fence,
        other => panic!("server monitor did not become active: {other:?}"),
    };
    let (cm, mut ce) = RunningMonitor::client(
        coord.clone(),
        &dest,
        1001,
        ClientRunningData::new("10.12.48.171:50544", 1001),
        Duration::from_millis(500),
    );
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), ce.recv()).await,
        Ok(Some(RunningEvent::ActiveEnter { .. }))
    ));
    let store = CursorStore::new(coord.clone(), FlushPolicy::EveryAck, |_: &[u8], _: &[u8]| None);
    store.update(&dest, 1001, CURSOR.as_bytes().to_vec(), &fence).await.unwrap();
    let s = coord.session().await.unwrap();
    s.create_persistent(&canal_coord::path::client_filter(&dest, 1001), b".*\\..*").await.unwrap();
    // Wait for the registrations.
    for _ in 0..100 {
        if s.get(&canal_coord::path::destination_cluster_node(&dest, &server))
            .await
            .unwrap()
            .is_some()
            && s.get(&canal_coord::path::server_cluster_node(&server)).await.unwrap().is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paths = vec![
        (
            canal_coord::path::server_running(&dest),
            format!(r#"{{"active":true,"address":"{server}"}}"#).into_bytes(),
            true,
        ),
        (
            canal_coord::path::client_running(&dest, 1001),
            br#"{"active":true,"address":"10.12.48.171:50544","clientId":1001}"#.to_vec(),
            true,
        ),
        // Our epoch nodes (not Java's; Java ignores them): one activation each.
        (canal_coord::path::server_running_epoch(&dest), b"1".to_vec(), false),
        (canal_coord::path::client_running_epoch(&dest, 1001), b"1".to_vec(), false),
        (canal_coord::path::client_cursor(&dest, 1001), CURSOR.as_bytes().to_vec(), false),
        (canal_coord::path::client_filter(&dest, 1001), b".*\\..*".to_vec(), false),
        (canal_coord::path::server_cluster_node(&server), Vec::new(), true),
        (canal_coord::path::destination_cluster_node(&dest, &server), Vec::new(), true),
    ];
    (Written { dest, server, paths }, (coord, reg, sm, cm, store))
}

/// Checks one JSON document against Canal's: same keys in alphabetical order, same values.
fn same_json(path: &str, got: &[u8], want: &[u8]) {
    assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(want), "{path}: bytes differ");
    if want.first() == Some(&b'{') {
        let g: serde_json::Value = serde_json::from_slice(got).unwrap();
        let w: serde_json::Value = serde_json::from_slice(want).unwrap();
        assert_eq!(g, w, "{path}: fields differ");
        let keys: Vec<&String> = g.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{path}: keys not alphabetical");
    }
}

fn venv() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kazoo-2.11.0-venv");
    let py = dir.join("bin/python");
    let ok = |py: &PathBuf| {
        Command::new(py).args(["-c", "import kazoo"]).status().is_ok_and(|s| s.success())
    };
    if ok(&py) {
        return py;
    }
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kazoo-venv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let st =
        Command::new("python3").args(["-m", "venv"]).arg(&tmp).status().expect("python3 -m venv");
    assert!(st.success(), "python3 -m venv failed");
    let st = Command::new(tmp.join("bin/pip"))
        .args(["install", "-q", "kazoo==2.11.0"])
        .status()
        .expect("pip");
    assert!(st.success(), "pip install kazoo==2.11.0 failed");
    // Another test process may have won the race; either venv works.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(ok(&py), "kazoo venv at {} is unusable", dir.display());
    py
}

const KAZOO_READ: &str = r#"
import json, sys
from kazoo.client import KazooClient
zk = KazooClient(hosts=sys.argv[1]); zk.start(timeout=10)
out = {}
for p in sys.argv[3:]:
    data, stat = zk.get(p)
    out[p] = {"data": (data or b"").hex(), "ephemeral": stat.ephemeralOwner != 0}
out["children"] = sorted(zk.get_children("/otter/canal/destinations/" + sys.argv[2]))
zk.stop()
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_nodes_read_by_kazoo_match_canal() {
    let Some(zk) = crate::support::service("CANAL_TEST_ZK") else { return };
    let (w, guard) = write_layout(Arc::new(ZkBackend::new(&zk, Duration::from_secs(4)))).await;
    let py = tokio::task::spawn_blocking(venv).await.unwrap();
    let mut cmd = Command::new(py);
    cmd.args(["-c", KAZOO_READ, &zk, &w.dest]);
    for (p, _, _) in &w.paths {
        cmd.arg(p);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    assert!(out.status.success(), "kazoo: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (p, want, eph) in &w.paths {
        let hex = got[p]["data"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        same_json(p, &bytes, want);
        assert_eq!(got[p]["ephemeral"].as_bool().unwrap(), *eph, "{p}: ephemeral flag");
    }
    // Java takes only numeric children for clients, so `running-epoch` is invisible to it.
    assert_eq!(got["children"], serde_json::json!(["1001", "cluster", "running", "running-epoch"]));
    let _ = w.server;
    drop(guard);
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new("etcdctl");
    for (k, _) in std::env::vars() {
        if (k.starts_with("ETCD_") || k.starts_with("ETCDCTL_")) && k != "ETCDCTL_API" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keys_read_by_etcdctl_match_canal() {
    let Some(ep) = crate::support::service("CANAL_TEST_ETCD") else { return };
    let (w, guard) = write_layout(Arc::new(EtcdBackend::new(vec![ep.clone()], 5, ""))).await;
    for (p, want, eph) in &w.paths {
        let (ep1, p1) = (ep.clone(), p.clone());
        let value =
            tokio::task::spawn_blocking(move || etcdctl(&ep1, &["get", &p1, "--print-value-only"]))
                .await
                .unwrap();
        // etcdctl prints the value and a newline.
        let value = value.strip_suffix(b"\n").unwrap_or(&value);
        same_json(p, value, want);
        let (ep2, p2) = (ep.clone(), p.clone());
        let json = tokio::task::spawn_blocking(move || etcdctl(&ep2, &["get", &p2, "-w", "json"]))
            .await
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let lease = j["kvs"][0]["lease"].as_i64().unwrap_or(0);
        assert_eq!(lease != 0, *eph, "{p}: lease (ephemeral) flag");
    }
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_prefix_is_prepended_to_canals_keys() {
    let Some(ep) = crate::support::service("CANAL_TEST_ETCD") else { return };
    let prefix = format!("/canal-prefix-test-{}", std::process::id());
    let b = EtcdBackend::new(vec![ep.clone()], 5, &prefix);
    let s = b.open_session().await.unwrap();
    let cursor = canal_coord::path::client_cursor("example", 1001);
    s.create_persistent(&cursor, CURSOR.as_bytes()).await.unwrap();
    assert_eq!(s.children("/otter/canal/destinations/example").await.unwrap(), ["1001"]);
    let key = format!("{prefix}{cursor}");
    let ep2 = ep.clone();
    let value =
        tokio::task::spawn_blocking(move || etcdctl(&ep2, &["get", &key, "--print-value-only"]))
            .await
            .unwrap();
    assert_eq!(value.strip_suffix(b"\n").unwrap_or(&value), CURSOR.as_bytes());
    let unprefixed =
        tokio::task::spawn_blocking(move || etcdctl(&ep, &["get", &cursor, "--print-value-only"]))
            .await
            .unwrap();
    assert_ne!(unprefixed.strip_suffix(b"\n").unwrap_or(&unprefixed), CURSOR.as_bytes());
    s.delete(&canal_coord::path::client_cursor("example", 1001), None).await.unwrap();
    s.close().await;
}
