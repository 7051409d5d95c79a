//! HA with real processes: two `canal-server run` binaries on one destination with ZooKeeper,
//! and again with etcd, Canal's real 5 s takeover delay and short coordinator sessions.
//! SIGTERM to the active one, `kill -9` of the active one, and an operator's `"active":false`
//! (written with kazoo / etcdctl, as runbooks do) each move the destination to the other server;
//! the takeover times are measured and printed. The running node holds Canal's JSON.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use canal_coord::config::{BackendKind, CoordConfig};
use canal_coord::{Coordinator, path};

use crate::ha::fixture;
use crate::support;

pub const SESSION_MS: u64 = 2000;
pub const DELAY_MS: u64 = 5000;

pub struct Proc {
    pub child: Child,
    pub addr: String,
    /// The status/metrics HTTP address, when enabled.
    pub metrics: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(conf: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canal-server"))
        .args(["run", "--conf"])
        .arg(conf)
        .env("RUST_LOG", std::env::var("CANAL_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("canal-server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // "canal-server listening on 127.0.0.1:PORT, metrics on 127.0.0.1:PORT"
    let addr = line
        .split_whitespace()
        .nth(3)
        .map(|a| a.trim_end_matches(',').to_owned())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let metrics = line.split_once("metrics on ").map(|(_, m)| m.trim().to_owned());
    Proc { child, addr, metrics }
}

pub fn write_conf(dir: &Path, coord: &str, db: &str, instance: &str) {
    std::fs::create_dir_all(dir.join(db)).unwrap();
    std::fs::write(
        dir.join("canal.toml"),
        format!(
            "ip = \"127.0.0.1\"\nport = 0\nmetrics_port = 0\ndata_dir = \"{}\"\n[coord]\n{coord}\ntakeover_delay_ms = {DELAY_MS}\ncursor_flush_period_ms = 200\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join(db).join("instance.toml"), instance).unwrap();
}

/// Who the running node names, and its raw JSON.
pub async fn owner(coord: &Coordinator, dest: &str) -> Option<(String, String)> {
    let s = coord.session().await.ok()?;
    let node = s.get(&path::server_running(dest)).await.ok()??;
    let text = String::from_utf8(node.data).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((v["address"].as_str()?.to_owned(), text))
}

async fn wait_owner(coord: &Coordinator, dest: &str, who: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some((addr, json)) = owner(coord, dest).await
            && addr == who
        {
            assert_eq!(json, format!("{{\"active\":true,\"address\":\"{who}\"}}"));
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{who} did not take over within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (20 s at most) until `who` is a registered member of the destination's cluster: its
/// monitor has started, so it competes for the running node from now on.
async fn wait_member(coord: &Coordinator, dest: &str, who: &str) {
    let session = coord.session().await.unwrap();
    let t0 = Instant::now();
    loop {
        let members = session.children(&path::destination_cluster(dest)).await.unwrap();
        if members.iter().any(|m| m == who) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{who} never registered: {members:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `who` owns the destination's running node; returns how long that took.
pub async fn wait_for(coord: &Coordinator, dest: &str, who: String, limit: Duration) -> Duration {
    wait_owner(coord, dest, &who, limit).await
}

pub fn sigterm(p: &Proc) {
    let ok = Command::new("kill").arg("-TERM").arg(p.child.id().to_string()).status().unwrap();
    assert!(ok.success());
}

/// The `instance.toml` of a test fixture: its MariaDB, start position, slave id and database.
pub fn instance_toml(fx: &crate::ha::Fixture) -> String {
    let url = support::service("CANAL_TEST_MYSQL").unwrap();
    let opts = mysql_async::Opts::from_url(&url).unwrap();
    let start = fx.instance.start.clone();
    format!(
        "[master]\naddress = \"{}:{}\"\njournal_name = \"{}\"\nposition = {}\n[db]\nusername = \"{}\"\npassword = \"{}\"\nslave_id = {}\n[filter]\nregex = '{}\\..*'\n",
        opts.ip_or_hostname(),
        opts.tcp_port(),
        start.journal.unwrap(),
        start.position.unwrap(),
        opts.user().unwrap_or_default(),
        opts.pass().unwrap_or_default(),
        fx.instance.source.slave_id,
        fx.db
    )
}

async fn scenario(
    backend: &str,
    coord_cfg: CoordConfig,
    coord_toml: String,
    deactivate: impl Fn(&str, &str),
) {
    let Some(fx) = fixture(backend).await else { return };
    let instance = instance_toml(&fx);
    let root: PathBuf = std::env::temp_dir().join(format!("canal-ha-{}", fx.db));
    let (conf_a, conf_b) = (root.join("a"), root.join("b"));
    write_conf(&conf_a, &coord_toml, &fx.db, &instance);
    write_conf(&conf_b, &coord_toml, &fx.db, &instance);
    let coord = Coordinator::new(coord_cfg.open_backend().unwrap());
    let dest = fx.db.clone();
    let slack = Duration::from_secs(3);

    let a = spawn(&conf_a);
    wait_owner(&coord, &dest, &a.addr, Duration::from_secs(20)).await;
    let b = spawn(&conf_b);
    wait_member(&coord, &dest, &b.addr).await;

    // 1. SIGTERM: the active server releases; the standby serves within a second.
    let t0 = Instant::now();
    sigterm(&a);
    let took = t0.elapsed() + wait_owner(&coord, &dest, &b.addr, Duration::from_secs(10)).await;
    eprintln!("{backend}: SIGTERM takeover {took:?}");
    assert!(took < Duration::from_secs(1), "SIGTERM takeover took {took:?}");
    drop(a);

    // 2. kill -9: the session expires, then the standby waits the delay.
    let a = spawn(&conf_a);
    wait_member(&coord, &dest, &a.addr).await;
    let t0 = Instant::now();
    drop(b); // SIGKILL
    let limit = Duration::from_millis(SESSION_MS + DELAY_MS) + slack;
    let took = t0.elapsed() + wait_owner(&coord, &dest, &a.addr, limit).await;
    eprintln!(
        "{backend}: kill -9 takeover {took:?} (session {SESSION_MS} ms + delay {DELAY_MS} ms)"
    );
    assert!(took >= Duration::from_millis(DELAY_MS), "a standby must wait the delay");

    // 3. The operator writes "active":false: the owner lets go and the other server takes over.
    let b = spawn(&conf_b);
    wait_member(&coord, &dest, &b.addr).await;
    let t0 = Instant::now();
    deactivate(&path::server_running(&dest), &a.addr);
    let took = t0.elapsed()
        + wait_owner(&coord, &dest, &b.addr, Duration::from_millis(2 * DELAY_MS) + slack).await;
    eprintln!("{backend}: active:false switch {took:?}");
    drop(a);
    drop(b);
    coord.close().await;
    let _ = std::fs::remove_dir_all(&root);
}

/// The coordinator settings of the test's side (config) and of the servers' `canal.toml` lines,
/// for ZooKeeper at `servers` with [`SESSION_MS`] sessions.
pub fn zk_coord(servers: &str) -> (CoordConfig, String) {
    let mut cfg = CoordConfig { backend: Some(BackendKind::Zookeeper), ..CoordConfig::default() };
    cfg.zookeeper.servers = servers.to_owned();
    cfg.zookeeper.session_timeout_ms = SESSION_MS;
    (cfg, format!("zk_servers = \"{servers}\"\nzk_session_timeout_ms = {SESSION_MS}"))
}

/// As [`zk_coord`], for etcd at `endpoint` with leases of [`SESSION_MS`].
pub fn etcd_coord(endpoint: &str) -> (CoordConfig, String) {
    let mut cfg = CoordConfig { backend: Some(BackendKind::Etcd), ..CoordConfig::default() };
    cfg.etcd.endpoints = vec![endpoint.to_owned()];
    cfg.etcd.lease_ttl_secs = (SESSION_MS / 1000) as i64;
    let toml =
        format!("etcd_endpoints = [\"{endpoint}\"]\netcd_lease_ttl_s = {}", SESSION_MS / 1000);
    (cfg, toml)
}

#[tokio::test]
async fn zookeeper_process_failover() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(venv) = support::python_venv("kazoo-venv", &["kazoo==2.11.0"]) else { return };
    let (cfg, toml) = zk_coord(&servers);
    let python = venv.join("bin/python");
    scenario("zk", cfg, toml, |node, owner| {
        let script = "import json,sys\nfrom kazoo.client import KazooClient\nzk=KazooClient(hosts=sys.argv[1]); zk.start()\nd,_=zk.get(sys.argv[2])\nv=json.loads(d)\nassert v['address']==sys.argv[3], v\nv['active']=False\nzk.set(sys.argv[2], json.dumps(v, separators=(',',':')).encode())\nzk.stop()\n";
        let ok = Command::new(&python).args(["-c", script, &servers, node, owner]).status().unwrap();
        assert!(ok.success(), "kazoo write failed");
    })
    .await;
}

#[tokio::test]
async fn etcd_process_failover() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    let (cfg, toml) = etcd_coord(&endpoint);
    scenario("etcd", cfg, toml, |node, owner| {
        let etcdctl = |args: &[&str]| {
            let mut cmd = Command::new("etcdctl");
            for (k, _) in std::env::vars() {
                if k.starts_with("ETCD") {
                    cmd.env_remove(k);
                }
            }
            cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(&endpoint).args(args);
            cmd.output().expect("etcdctl runs")
        };
        let got = etcdctl(&["get", "--print-value-only", node]);
        let v: serde_json::Value = serde_json::from_slice(&got.stdout).expect("running JSON");
        assert_eq!(v["address"], owner);
        // Keep the owner's lease on the key, as an operator's `put --ignore-lease` does.
        let new = format!("{{\"active\":false,\"address\":\"{owner}\"}}");
        let out = etcdctl(&["put", "--ignore-lease", node, &new]);
        assert!(out.status.success(), "etcdctl put: {}", String::from_utf8_lossy(&out.stderr));
    })
    .await;
}
