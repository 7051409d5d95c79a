//! The `canal-client` binary: `tail` against the in-test server (JSON and table output, acks
//! after printing, `--max` and `--timeout`), `status` against real ZooKeeper/etcd.

use std::sync::Arc;
use std::time::Duration;

use canal_coord::backend::etcd::EtcdBackend;
use canal_coord::backend::zk::ZkBackend;
use canal_coord::{Backend, Coordinator, path};
use serde_json::Value;
use tokio::process::Command;

use crate::fake::{self, FakeServer};
use crate::support;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canal-client"));
    c.kill_on_drop(true);
    c
}

async fn run(cmd: &mut Command) -> (String, String) {
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("canal-client finishes")
        .expect("canal-client runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "canal-client failed: {stderr}\n{stdout}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_flat_json_and_acks() {
    let server = FakeServer::open().await;
    server.push([fake::begin(4), fake::insert("t1", 1, "a"), fake::insert("t1", 2, "b")]);
    let (out, _) = run(bin().args([
        "tail",
        "--server",
        &server.address(),
        "--destination",
        "example",
        "--filter",
        "test\\..*",
        "--timeout",
        "0.5",
    ]))
    .await;
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["database"], "test");
    assert_eq!(lines[0]["table"], "t1");
    assert_eq!(lines[0]["type"], "INSERT");
    assert_eq!(lines[0]["data"][0]["name"], "a");
    assert_eq!(lines[1]["data"][0]["id"], "2");
    assert_eq!(lines[0]["pkNames"][0], "id");
    let s = server.state.lock().unwrap();
    assert!(s.outstanding.is_empty(), "every printed batch is acked");
    assert!(s.log.iter().any(|l| l == "SUB example 1001 \"test\\\\..*\""), "{:?}", s.log);
    // Every GET asks for the default 1 ms linger (docs/protocol.md#get-linger).
    let gets: Vec<&String> = s.log.iter().filter(|l| l.starts_with("GET ")).collect();
    assert!(!gets.is_empty() && gets.iter().all(|l| l.ends_with(" linger 1000")), "{gets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_table_with_max_rolls_back_the_rest() {
    let server = FakeServer::open().await;
    server.push([fake::insert("t1", 1, "a"), fake::insert("t1", 2, "two words")]);
    let (out, _) = run(bin().args([
        "tail",
        "--server",
        &server.address(),
        "--format",
        "table",
        "--max",
        "1",
        "--batch-size",
        "10",
    ]))
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains("INSERT  test.t1 id=1 name=a"), "{out}");
    // The second row was not printed: its batch was rolled back, so it is still there. The
    // rollback is not answered: the client may exit before the server has read it.
    server
        .wait_for("the whole batch rolled back", |s| s.outstanding.is_empty() && s.queue.len() == 2)
        .await;
    let (out, _) = run(bin().args([
        "tail",
        "--server",
        &server.address(),
        "--format",
        "table",
        "--timeout",
        "0.3",
        "--linger-ms",
        "0",
    ]))
    .await;
    assert!(out.lines().nth(1).is_some_and(|l| l.contains("name=\"two words\"")), "{out}");
    // --linger-ms 0: Canal's GETs, without the field.
    let log = server.state.lock().unwrap().log.clone();
    let last_gets: Vec<&String> = log
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("SUB "))
        .filter(|l| l.starts_with("GET "))
        .collect();
    assert!(!last_gets.is_empty() && last_gets.iter().all(|l| !l.contains("linger")), "{log:?}");
    // A linger that is not a number of milliseconds in range is refused up front.
    for bad in ["-1", "NaN", "inf", "1e12", "soon"] {
        let out = bin()
            .args(["tail", "--server", &server.address(), &format!("--linger-ms={bad}")])
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--linger-ms"), "{bad}: {err}");
    }
}

async fn status_case(backend: Arc<dyn Backend>, coord_flag: &str, endpoint: &str, prefix: &str) {
    let dest = format!("client-status-{}", std::process::id());
    let session = Coordinator::new(backend).session().await.unwrap();
    session
        .create_ephemeral(&path::server_running(&dest), &fake::running_json("10.0.0.5:11111"))
        .await
        .unwrap();
    session
        .create_ephemeral(&path::destination_cluster_node(&dest, "10.0.0.5:11111"), b"")
        .await
        .unwrap();
    session
        .create_ephemeral(
            &path::client_running(&dest, 1001),
            br#"{"active":true,"address":"10.0.0.9:52314","clientId":1001}"#,
        )
        .await
        .unwrap();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        as i64
        - 60_000;
    let cursor = format!(
        r#"{{"@type":"com.alibaba.otter.canal.protocol.position.LogPosition","identity":{{"slaveId":-1,"sourceAddress":{{"address":"127.0.0.1","port":3306}}}},"postion":{{"gtid":"","included":false,"journalName":"mysql-bin.000003","position":5620,"serverId":1,"timestamp":{ts}}}}}"#
    );
    let cursor_path = path::client_cursor(&dest, 1001);
    let _ = session.delete(&cursor_path, None).await;
    session.create_persistent(&cursor_path, cursor.as_bytes()).await.unwrap();

    let mut args = vec!["status", coord_flag, endpoint, "--destination", &dest];
    if !prefix.is_empty() {
        args.extend(["--coord-prefix", prefix]);
    }
    let (out, _) = run(bin().args(&args).arg("--json")).await;
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["server"]["address"], "10.0.0.5:11111", "{v}");
    assert_eq!(v["members"][0], "10.0.0.5:11111");
    assert_eq!(v["client"]["address"], "10.0.0.9:52314");
    assert_eq!(v["cursor"]["postion"]["position"], 5620);
    let lag = v["lagMs"].as_i64().unwrap();
    assert!((60_000..120_000).contains(&lag), "lag {lag}");
    let (text, _) = run(bin().args(&args)).await;
    assert!(text.contains("active server: 10.0.0.5:11111"), "{text}");
    assert!(text.contains("cursor: mysql-bin.000003:5620"), "{text}");
    assert!(text.contains("lag: 6"), "{text}");
    session.delete(&cursor_path, None).await.unwrap();
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_from_zookeeper() {
    let Some(zk) = support::service("CANAL_TEST_ZK") else { return };
    status_case(Arc::new(ZkBackend::new(&zk, Duration::from_secs(10))), "--zk", &zk, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_from_etcd() {
    let Some(etcd) = support::service("CANAL_TEST_ETCD") else { return };
    let prefix = format!("/canal-client-cli-{}", std::process::id());
    status_case(
        Arc::new(EtcdBackend::new(vec![etcd.clone()], 5, &prefix)),
        "--etcd",
        &etcd,
        &prefix,
    )
    .await;
}

async fn tail_via_coordinator(backend: Arc<dyn Backend>, flags: &[&str]) {
    let dest = format!("client-tail-{}", std::process::id());
    let server = FakeServer::open().await;
    server.push([fake::insert("t1", 1, "via-coordinator")]);
    let session = Coordinator::new(backend).session().await.unwrap();
    session
        .create_ephemeral(&path::server_running(&dest), &fake::running_json(&server.address()))
        .await
        .unwrap();
    let mut args = vec!["tail", "--destination", &dest, "--format", "table", "--timeout", "0.5"];
    args.extend_from_slice(flags);
    let (out, _) = run(bin().args(&args)).await;
    assert!(out.contains("INSERT  test.t1 id=1 name=via-coordinator"), "{out}");
    assert!(server.state.lock().unwrap().outstanding.is_empty());
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_through_zookeeper() {
    let Some(zk) = support::service("CANAL_TEST_ZK") else { return };
    tail_via_coordinator(Arc::new(ZkBackend::new(&zk, Duration::from_secs(10))), &["--zk", &zk])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_through_etcd_with_prefix_and_ha() {
    let Some(etcd) = support::service("CANAL_TEST_ETCD") else { return };
    let prefix = format!("/canal-client-tail-{}", std::process::id());
    tail_via_coordinator(
        Arc::new(EtcdBackend::new(vec![etcd.clone()], 5, &prefix)),
        &["--etcd", &etcd, "--coord-prefix", &prefix, "--ha"],
    )
    .await;
}
