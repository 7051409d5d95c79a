//! Hot reload with a real `canal-server run` process, on ZooKeeper and on etcd: SIGHUP (and, on a second
//! server, `auto_scan`) re-reads the destinations. A new directory starts a destination, an
//! edited file restarts only that destination, a broken file is reported (the same message as
//! `config check`) and changes nothing, a removed directory stops the destination and releases
//! its running node — while a consumer of an unrelated destination keeps one connection and
//! receives every row.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canal_client::{Backoff, ClusterConfig, ClusterConnector, ConnectorConfig, Discovery};
use canal_coord::{Coordinator, path};
use canal_core::protocol::entry::{EntryType, RowChange};
use mysql_async::prelude::Queryable;
use prost::Message as _;

use crate::ha::fixture;
use crate::ha_process::{Proc, etcd_coord, instance_toml, owner, spawn, write_conf, zk_coord};
use crate::support;

/// `GET path` on the server's status port; the body.
async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8(buf).ok()?;
        Some(text.split_once("\r\n\r\n")?.1.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

/// Whether the server's `/status` shows `dest` active (activated: its epoch was bumped).
async fn active_here(metrics: &str, dest: &str) -> bool {
    let Some(body) = http_get(metrics, "/status").await else { return false };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["destination"] == dest && d["active"] == true)
}

/// The destination's activation count (`running-epoch`), 0 when absent.
async fn epoch(coord: &Coordinator, dest: &str) -> u64 {
    let s = coord.session().await.unwrap();
    match s.get(&path::server_running_epoch(dest)).await.unwrap() {
        Some(n) => String::from_utf8(n.data).unwrap().trim().parse().unwrap(),
        None => 0,
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) -> Duration {
    let t0 = Instant::now();
    while !cond().await {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill").arg(sig).arg(p.child.id().to_string()).status().unwrap();
    assert!(ok.success());
}

/// `instance` filtering table `table` of the fixture's database (and another replica id).
fn instance_for(instance: &str, table: &str, slave_offset: u32) -> String {
    let regex = instance.lines().find(|l| l.starts_with("regex")).unwrap();
    let db = regex.trim_start_matches("regex = '").split("\\.").next().unwrap();
    let slave = instance.lines().find(|l| l.starts_with("slave_id")).unwrap();
    let id: u32 = slave.trim_start_matches("slave_id = ").parse().unwrap();
    instance
        .replace(regex, &format!("regex = '{db}\\.{table}'"))
        // Far from the ids of other fixtures (consecutive) and of the balancing test (2e9+).
        .replace(slave, &format!("slave_id = {}", id + slave_offset * 500_000_000))
}

/// Puts `lines` at the top of `canal.toml` (before its `[coord]` table) and gives it a status
/// port.
fn prepend(conf: &Path, lines: &str) {
    let p = conf.join("canal.toml");
    let old = std::fs::read_to_string(&p).unwrap();
    let port = crate::soak::port_below_ephemeral();
    let old = old.replace("metrics_port = 0\n", &format!("metrics_port = {port}\n"));
    std::fs::write(&p, format!("{lines}{old}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_hot_reload_add_change_break_remove() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let (cfg, toml) = zk_coord(&servers);
    scenario("reloadzk", cfg, toml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_hot_reload_add_change_break_remove() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    let (cfg, toml) = etcd_coord(&endpoint);
    scenario("reloadetcd", cfg, toml).await;
}

async fn scenario(tag: &str, coord_cfg: canal_coord::config::CoordConfig, coord_toml: String) {
    let Some(mut fx) = fixture(tag).await else { return };
    let db = fx.db.clone();
    fx.admin.query_drop(format!("CREATE TABLE `{db}`.t2 (id INT PRIMARY KEY)")).await.unwrap();
    let instance = instance_toml(&fx);
    let keep = format!("{db}_keep");
    let added = format!("{db}_added");
    let root = std::env::temp_dir().join(format!("canal-reload-{db}"));
    let conf = root.join("a");
    write_conf(&conf, &coord_toml, &keep, &instance_for(&instance, "t", 0));
    prepend(&conf, "auto_scan = false\n");
    let coord = Coordinator::new(coord_cfg.open_backend().unwrap());
    let server = spawn(&conf);
    let metrics = server.metrics.clone().expect("metrics address");
    let me = server.addr.clone();
    let owned_by_me = |d: String| {
        let metrics = metrics.clone();
        move || {
            let (metrics, d) = (metrics.clone(), d.clone());
            async move { active_here(&metrics, &d).await }
        }
    };
    wait_until("keep active", Duration::from_secs(20), owned_by_me(keep.clone())).await;

    // The unrelated destination's consumer and a writer into its table.
    let received: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (stop, stop_writer) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let consumer = {
        let (coord, keep, received, stop) =
            (coord.clone(), keep.clone(), received.clone(), stop.clone());
        tokio::spawn(async move {
            let cfg = ClusterConfig::new(
                ConnectorConfig::new(keep).read_timeout(Duration::from_secs(5)),
                Discovery::Coordinator(coord),
            )
            .backoff(Backoff::new(Duration::from_millis(20), Duration::from_millis(300)));
            let mut c = ClusterConnector::new(cfg).unwrap();
            c.subscribe("").await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let m = c.get(100, Some(Duration::from_millis(200))).await.expect("get");
                for e in &m.entries {
                    if e.entry_type() != EntryType::Rowdata {
                        continue;
                    }
                    let rc = RowChange::decode(e.store_value()).unwrap();
                    for r in &rc.row_datas {
                        received.lock().unwrap().push(r.after_columns[0].value().parse().unwrap());
                    }
                }
            }
            let connections = c.connections();
            c.disconnect().await;
            connections
        })
    };
    let writer = {
        let url = support::service("CANAL_TEST_MYSQL_ADMIN").unwrap();
        let (db, stop) = (db.clone(), stop_writer.clone());
        let mut conn =
            mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap()).await.unwrap();
        tokio::spawn(async move {
            let mut id = 0i64;
            while !stop.load(Ordering::Relaxed) {
                conn.query_drop(format!("INSERT INTO `{db}`.t VALUES ({id})")).await.unwrap();
                id += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            conn.disconnect().await.unwrap();
            id
        })
    };
    let keep_epoch = epoch(&coord, &keep).await;

    // 1. A new directory + SIGHUP: the destination starts.
    let added_dir = conf.join(&added);
    std::fs::create_dir_all(&added_dir).unwrap();
    let v1 = instance_for(&instance, "t2", 1);
    std::fs::write(added_dir.join("instance.toml"), &v1).unwrap();
    signal(&server, "-HUP");
    let took =
        wait_until("added destination active", Duration::from_secs(20), owned_by_me(added.clone()))
            .await;
    eprintln!("reload: a new destination active {took:?} after SIGHUP");
    let e1 = epoch(&coord, &added).await;

    // 2. An edited file: only that destination restarts (a new activation).
    let v2 = format!("ddl_isolation = true\n{v1}");
    std::fs::write(added_dir.join("instance.toml"), &v2).unwrap();
    signal(&server, "-HUP");
    let took = wait_until("changed destination restarted", Duration::from_secs(30), || {
        let (coord, added, metrics) = (coord.clone(), added.clone(), metrics.clone());
        async move { epoch(&coord, &added).await > e1 && active_here(&metrics, &added).await }
    })
    .await;
    eprintln!("reload: a changed destination restarted in {took:?}");
    let e2 = epoch(&coord, &added).await;

    // 3. A broken file: reported (as `config check` reports it), nothing changes.
    std::fs::write(added_dir.join("instance.toml"), "[master\nbroken").unwrap();
    signal(&server, "-HUP");
    let status = {
        let metrics = metrics.clone();
        let t0 = Instant::now();
        loop {
            if let Some(body) = http_get(&metrics, "/status").await {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if v["reload"]["failed"].as_u64() >= Some(1) {
                    break v;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "the broken file was not reported");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reported = status["reload"]["last_error"].as_str().unwrap().to_owned();
    assert!(reported.contains("instance.toml"), "{reported}");
    let check = Command::new(env!("CARGO_BIN_EXE_canal-server"))
        .args(["config", "check", "--conf"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!check.status.success());
    let check_err = String::from_utf8_lossy(&check.stderr);
    assert!(
        check_err.contains(&reported),
        "config check said {check_err:?}, reload said {reported:?}"
    );
    let body = http_get(&metrics, "/metrics").await.unwrap();
    assert!(body.contains("canal_server_config_reload_failures_total 1"), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(owner(&coord, &added).await.is_some_and(|(a, _)| a == me), "still running");
    assert_eq!(epoch(&coord, &added).await, e2, "a broken file restarts nothing");

    // 4. The directory removed: the destination stops and its running node is released.
    std::fs::remove_dir_all(&added_dir).unwrap();
    signal(&server, "-HUP");
    let took = wait_until("removed destination released", Duration::from_secs(20), || {
        let (coord, added) = (coord.clone(), added.clone());
        async move { owner(&coord, &added).await.is_none() }
    })
    .await;
    eprintln!("reload: a removed destination released in {took:?}");
    let s = coord.session().await.unwrap();
    let registered = s.children(&path::destination_cluster(&added)).await.unwrap();
    assert!(registered.is_empty(), "registration left: {registered:?}");

    // The unrelated destination never moved, and its consumer saw every row on one connection.
    stop_writer.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert_eq!(epoch(&coord, &keep).await, keep_epoch, "the unrelated destination restarted");
    wait_until("every row of the unrelated destination", Duration::from_secs(30), || {
        let got: std::collections::BTreeSet<i64> =
            received.lock().unwrap().iter().copied().collect();
        async move { (0..written).all(|i| got.contains(&i)) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let connections = consumer.await.unwrap();
    assert_eq!(connections, 1, "the unrelated destination's consumer reconnected");
    eprintln!("reload: unrelated destination: {written} rows, 0 lost, 1 connection");

    // 5. `auto_scan`: a second server picks up a new and a removed directory by itself.
    let scanned = format!("{db}_scanned");
    let conf_b = root.join("b");
    write_conf(&conf_b, &coord_toml, &format!("{db}_keep_b"), &instance_for(&instance, "t", 2));
    prepend(&conf_b, "auto_scan = true\nauto_scan_interval_s = 1\n");
    let server_b = spawn(&conf_b);
    let dir = conf_b.join(&scanned);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("instance.toml"), instance_for(&instance, "t2", 3)).unwrap();
    let b = server_b.addr.clone();
    let took = wait_until("scanned destination active", Duration::from_secs(20), || {
        let (coord, scanned, b) = (coord.clone(), scanned.clone(), b.clone());
        async move { owner(&coord, &scanned).await.is_some_and(|(a, _)| a == b) }
    })
    .await;
    eprintln!("reload: auto_scan started a new destination in {took:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    wait_until("scanned destination released", Duration::from_secs(20), || {
        let (coord, scanned) = (coord.clone(), scanned.clone());
        async move { owner(&coord, &scanned).await.is_none() }
    })
    .await;

    for p in [&server, &server_b] {
        signal(p, "-TERM");
    }
    drop(server);
    drop(server_b);
    coord.close().await;
    let _ = std::fs::remove_dir_all(&root);
}
