//! The end-to-end HA harness: MariaDB under continuous load (rows carrying sequence numbers), a
//! coordinator, two `canal-server` processes and two `canal-client tail --ha` consumers (client
//! HA: one consumes at a time) finding the server through the coordinator. Ten failovers of the
//! active server — SIGTERM, kill -9 and an operator's `"active":false`, in turn — plus a consumer
//! killed every other round, and at the end every written row has been received: none lost;
//! duplicates (batches not acked before a kill, re-delivered by design) are counted and reported,
//! as are the takeover times. Runs against ZooKeeper and against etcd.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support;
use canal_coord::config::CoordConfig;
use canal_coord::{Coordinator, path};
use mysql_async::prelude::Queryable;

use crate::ha::fixture;
use crate::ha_process::{DELAY_MS, SESSION_MS, etcd_coord, owner, spawn, write_conf, zk_coord};

const FAILOVERS: usize = 10;

pub(crate) fn client_bin() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_canal-server")).parent()?.to_path_buf();
    let bin = dir.join("canal-client");
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var("CANAL_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
        panic!("{} is missing: build the workspace (cargo test --workspace)", bin.display());
    }
    support::skip(&format!("{} is missing (run with --workspace)", bin.display()));
    None
}

async fn harness(
    backend: &str,
    coord_cfg: CoordConfig,
    coord_toml: String,
    client_coord: Vec<String>,
) {
    let Some(client) = client_bin() else { return };
    let Some(mut fx) = fixture(backend).await else { return };
    let instance = crate::ha_process::instance_toml(&fx);
    let root = std::env::temp_dir().join(format!("canal-harness-{}", fx.db));
    let confs = [root.join("a"), root.join("b")];
    for c in &confs {
        write_conf(c, &coord_toml, &fx.db, &instance);
    }
    let coord = Coordinator::new(coord_cfg.open_backend().unwrap());
    let dest = fx.db.clone();
    let mut servers = vec![Some(spawn(&confs[0])), None];
    crate::ha_process::wait_for(
        &coord,
        &dest,
        servers[0].as_ref().unwrap().addr.clone(),
        Duration::from_secs(20),
    )
    .await;
    servers[1] = Some(spawn(&confs[1]));

    // The consumers: two `canal-client tail --ha` with one client id, through the coordinator,
    // FlatMessage JSON on stdout; only the one holding the client running node consumes.
    let received: Arc<Mutex<BTreeMap<i64, u32>>> = Arc::default();
    let spawn_client = |received: Arc<Mutex<BTreeMap<i64, u32>>>| {
        let mut tail = Command::new(&client)
            .args([
                "tail",
                "--destination",
                &dest,
                "--batch-size",
                "50",
                "--format",
                "json",
                "--ha",
            ])
            .args(["--session-timeout-ms", &SESSION_MS.to_string()])
            .args(&client_coord)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("canal-client starts");
        let out = tail.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                for row in v["data"].as_array().into_iter().flatten() {
                    if let Some(id) = row["id"].as_str().and_then(|s| s.parse::<i64>().ok()) {
                        *received.lock().unwrap().entry(id).or_default() += 1;
                    }
                }
            }
        });
        (tail, reader)
    };
    let mut clients = vec![spawn_client(received.clone()), spawn_client(received.clone())];
    let mut client_kills = 0;

    // Continuous load: single-row and three-row transactions with increasing ids.
    let written = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (written, stop, db) = (written.clone(), stop.clone(), fx.db.clone());
        let admin = std::mem::replace(&mut fx.admin, {
            let admin_url = support::service("CANAL_TEST_MYSQL_ADMIN").unwrap();
            mysql_async::Conn::new(mysql_async::Opts::from_url(&admin_url).unwrap()).await.unwrap()
        });
        tokio::spawn(async move {
            let mut admin = admin;
            let mut next = 1i64;
            while !stop.load(Ordering::Relaxed) {
                let sql = if next % 4 == 0 {
                    format!("INSERT INTO `{db}`.t VALUES ({next}), ({}), ({})", next + 1, next + 2)
                } else {
                    format!("INSERT INTO `{db}`.t VALUES ({next})")
                };
                let n = if next % 4 == 0 { 3 } else { 1 };
                admin.query_drop(sql).await.expect("load insert");
                next += n;
                written.store(next - 1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut report = Vec::new();
    for i in 0..FAILOVERS {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (active_addr, _) = owner(&coord, &dest).await.expect("an active server");
        let idx = servers
            .iter()
            .position(|s| s.as_ref().is_some_and(|p| p.addr == active_addr))
            .expect("owner is ours");
        let other = 1 - idx;
        let other_addr = servers[other].as_ref().unwrap().addr.clone();
        let t0 = Instant::now();
        let how = match i % 3 {
            0 => {
                let pid = servers[idx].as_ref().unwrap().child.id();
                Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
                "SIGTERM"
            }
            1 => {
                servers[idx] = None; // Drop = SIGKILL
                "kill -9"
            }
            _ => {
                let s = coord.session().await.unwrap();
                let p = path::server_running(&dest);
                let n = s.get(&p).await.unwrap().unwrap();
                let data = format!("{{\"active\":false,\"address\":\"{active_addr}\"}}");
                let _ = s.put(&p, data.as_bytes(), Some(n.version)).await;
                "active:false"
            }
        };
        let limit = Duration::from_millis(SESSION_MS + DELAY_MS * 2 + 5000);
        crate::ha_process::wait_for(&coord, &dest, other_addr, limit).await;
        let took = t0.elapsed();
        report.push(format!("{how} {took:.2?}"));
        // Keep two servers: restart the one that went away (after SIGTERM it exits by itself).
        if how != "active:false" {
            servers[idx] = None;
            servers[idx] = Some(spawn(&confs[idx]));
        }
        // Every other round also kill -9 a consumer (the active one or the standby, in turn)
        // and start a new one: the client running node moves with the same 5 s rule.
        if i % 2 == 1 {
            let k = (i / 2) % 2;
            let _ = clients[k].0.kill();
            let _ = clients[k].0.wait();
            client_kills += 1;
            clients[k] = spawn_client(received.clone());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let total = written.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = received.lock().unwrap().len() as i64;
        if got >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (mut tail, reader) in clients {
        let _ = tail.kill();
        let _ = tail.wait();
        let _ = reader.join();
    }
    let received = received.lock().unwrap().clone();
    let missing: Vec<i64> = (1..=total).filter(|i| !received.contains_key(i)).collect();
    let duplicates: u32 = received.values().map(|n| n - 1).sum();
    eprintln!(
        "{backend} harness: {FAILOVERS} server failovers [{}], {client_kills} consumer kills; {total} rows written, {} received, {} missing, {duplicates} duplicates",
        report.join(", "),
        received.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "{backend}: rows lost: {:?}", &missing[..missing.len().min(20)]);
    assert!(received.keys().all(|k| (1..=total).contains(k)), "rows that were never written");
    drop(servers);
    coord.close().await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn zookeeper_ten_failovers_lose_nothing() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let (cfg, toml) = zk_coord(&servers);
    harness("zkh", cfg, toml, vec!["--zk".into(), servers]).await;
}

#[tokio::test]
async fn etcd_ten_failovers_lose_nothing() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    let (cfg, toml) = etcd_coord(&endpoint);
    harness("etcdh", cfg, toml, vec!["--etcd".into(), endpoint]).await;
}
