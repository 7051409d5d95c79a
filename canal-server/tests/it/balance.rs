//! Balanced ownership with real processes: three `canal-server run` binaries configured for the
//! same 30 destinations (one MariaDB table each), ZooKeeper and again etcd, Canal's 5 s takeover
//! delay and short sessions. After start each server runs 10 ± 1; SIGTERM one and its
//! destinations spread over the other two; start it again and it gets its share back through
//! graceful hand-overs (no destination unowned for longer than one); kill -9 one and the others
//! take its destinations after the session timeout and the delay. A writer inserts rows into
//! all 30 tables throughout and one in-process `ClusterConnector` per destination consumes
//! them: every row arrives (0 lost). Times and counts are printed for docs/operations.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canal_client::{Backoff, ClusterConfig, ClusterConnector, ConnectorConfig, Discovery};
use canal_coord::config::CoordConfig;
use canal_coord::{Coordinator, path};
use canal_core::protocol::entry::{EntryType, RowChange};
use mysql_async::prelude::Queryable;
use prost::Message as _;

use crate::ha::fixture;
use crate::ha_process::{
    DELAY_MS, Proc, SESSION_MS, etcd_coord, instance_toml, sigterm, spawn, write_conf, zk_coord,
};
use crate::support;

const DESTS: usize = 30;
const SERVERS: usize = 3;

/// The two backends' runs take turns: each is 3 servers and 30 replica streams.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Destination → owner address (`None`: free or being released), read from the coordinator;
/// `None` when the coordinator could not be read (the test's own short session may expire
/// under load: the next call opens a new one).
async fn owners(coord: &Coordinator, dests: &[String]) -> Option<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    let s = coord.session().await.ok()?;
    for d in dests {
        let owner = match s.get(&path::server_running(d)).await.ok()? {
            Some(n) => serde_json::from_slice::<serde_json::Value>(&n.data)
                .ok()
                .filter(|v| v["active"] != false)
                .and_then(|v| v["address"].as_str().map(str::to_owned)),
            None => None,
        };
        out.insert(d.clone(), owner);
    }
    Some(out)
}

fn counts(owners: &BTreeMap<String, Option<String>>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for o in owners.values().flatten() {
        *c.entry(o.clone()).or_default() += 1;
    }
    c
}

/// Samples ownership every 100 ms; per destination the longest spell without an owner since
/// the last `reset`.
#[derive(Default)]
struct Downtime {
    /// Destination → (unowned since, longest spell).
    spells: BTreeMap<String, (Option<Instant>, Duration)>,
}

impl Downtime {
    fn observe(&mut self, owners: &BTreeMap<String, Option<String>>, now: Instant) {
        for (d, o) in owners {
            let e = self.spells.entry(d.clone()).or_insert((None, Duration::ZERO));
            match (o, e.0) {
                (None, None) => e.0 = Some(now),
                (None, Some(since)) => e.1 = e.1.max(now - since),
                (Some(_), Some(since)) => {
                    // Owned again: the spell lasted until this sample at most.
                    e.1 = e.1.max(now - since);
                    e.0 = None;
                }
                (Some(_), None) => {}
            }
        }
    }

    fn reset(&mut self) {
        self.spells.clear();
    }

    fn longest(&self) -> (String, Duration) {
        self.spells
            .iter()
            .map(|(d, (_, l))| (d.clone(), *l))
            .max_by_key(|(_, l)| *l)
            .unwrap_or_default()
    }
}

/// Waits until `cond` holds for the current owners; returns how long that took.
async fn wait_owners(
    coord: &Coordinator,
    dests: &[String],
    what: &str,
    limit: Duration,
    cond: impl Fn(&BTreeMap<String, Option<String>>) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let o = owners(coord, dests).await.unwrap_or_default();
        if !o.is_empty() && cond(&o) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; owners per server {:?}, free {:?}",
            counts(&o),
            o.iter().filter(|(_, v)| v.is_none()).map(|(d, _)| d).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every destination owned by one of `among`.
fn owned_by(among: &[&str]) -> impl Fn(&BTreeMap<String, Option<String>>) -> bool {
    let among: Vec<String> = among.iter().map(|s| (*s).to_owned()).collect();
    move |o| o.values().all(|v| v.as_ref().is_some_and(|a| among.contains(a)))
}

/// Every destination owned by one of `among`, each of them owning `target ± 1`.
fn balanced(among: &[&str], target: usize) -> impl Fn(&BTreeMap<String, Option<String>>) -> bool {
    let among: Vec<String> = among.iter().map(|s| (*s).to_owned()).collect();
    move |o| {
        let c = counts(o);
        o.values().all(|v| v.as_ref().is_some_and(|a| among.contains(a)))
            && among.iter().all(|a| c.get(a).copied().unwrap_or(0).abs_diff(target) <= 1)
    }
}

/// One consumer per destination: ids received per destination (with repeats).
type Received = Arc<Mutex<BTreeMap<String, Vec<i64>>>>;

fn consume(coord: Arc<Coordinator>, dest: String, received: Received, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let cfg = ClusterConfig::new(
            ConnectorConfig::new(dest.clone()).read_timeout(Duration::from_secs(5)),
            Discovery::Coordinator(coord),
        )
        .backoff(Backoff::new(Duration::from_millis(20), Duration::from_millis(300)));
        let mut c = ClusterConnector::new(cfg).expect("connector");
        while !stop.load(Ordering::Relaxed) {
            if c.subscribe("").await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while !stop.load(Ordering::Relaxed) {
            let m = match c.get(100, Some(Duration::from_millis(200))).await {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("{dest}: get: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut ids: Vec<i64> = Vec::new();
            for e in &m.entries {
                if e.entry_type() != EntryType::Rowdata {
                    continue;
                }
                let rc = RowChange::decode(e.store_value()).expect("row change");
                for r in &rc.row_datas {
                    if let Some(c) = r.after_columns.first() {
                        ids.push(c.value().parse().expect("id"));
                    }
                }
            }
            received.lock().unwrap().entry(dest.clone()).or_default().extend(ids);
        }
        c.disconnect().await;
    });
}

/// Writes `canal.toml` (through the HA tests' helper) and 30 destination directories.
fn write_confs(dir: &Path, coord_toml: &str, dests: &[String], instance: &str, slave_base: u32) {
    write_conf(dir, coord_toml, &dests[0], "");
    let db_line = instance.lines().find(|l| l.starts_with("regex")).expect("regex line").to_owned();
    let slave_line =
        instance.lines().find(|l| l.starts_with("slave_id")).expect("slave line").to_owned();
    for (i, d) in dests.iter().enumerate() {
        std::fs::create_dir_all(dir.join(d)).unwrap();
        let db = db_line.trim_start_matches("regex = '").split("\\.").next().unwrap();
        let text = instance
            .replace(&db_line, &format!("regex = '{db}\\.t{i}'"))
            .replace(&slave_line, &format!("slave_id = {}", slave_base + i as u32));
        std::fs::write(dir.join(d).join("instance.toml"), text).unwrap();
    }
}

async fn scenario(backend: &str, coord_cfg: CoordConfig, coord_toml: String) {
    let _turn = SERIAL.lock().await;
    let Some(mut fx) = fixture(backend).await else { return };
    let t_start = Instant::now();
    let db = fx.db.clone();
    for i in 0..DESTS {
        fx.admin
            .query_drop(format!("CREATE TABLE `{db}`.t{i} (id BIGINT PRIMARY KEY)"))
            .await
            .unwrap();
    }
    let dests: Vec<String> = (0..DESTS).map(|i| format!("{db}_d{i:02}")).collect();
    let instance = instance_toml(&fx);
    // Distinct replica ids per destination (one per running instance), away from other tests'.
    let slave_base = 2_000_000_000 + (fx.instance.source.slave_id % 10_000_000) * 32;
    let root = std::env::temp_dir().join(format!("canal-balance-{db}"));
    let confs: Vec<_> = (0..SERVERS).map(|i| root.join(format!("s{i}"))).collect();
    for c in &confs {
        write_confs(c, &coord_toml, &dests, &instance, slave_base);
    }
    let coord = Coordinator::new(coord_cfg.open_backend().unwrap());

    // Writer: one row at a time into the 30 tables in turn; id = sequence number.
    let stop_writer = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<BTreeMap<String, Vec<i64>>>> = Arc::default();
    let url = support::service("CANAL_TEST_MYSQL_ADMIN").unwrap();
    let writer = {
        let (stop, written, db, dests) =
            (stop_writer.clone(), written.clone(), db.clone(), dests.clone());
        let mut conn =
            mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap()).await.unwrap();
        tokio::spawn(async move {
            let mut id = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let t = (id as usize) % DESTS;
                conn.query_drop(format!("INSERT INTO `{db}`.t{t} VALUES ({id})")).await.unwrap();
                written.lock().unwrap().entry(dests[t].clone()).or_default().push(id);
                id += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            conn.disconnect().await.unwrap();
        })
    };

    // 1. Three servers start: each runs 10 ± 1.
    let mut procs: Vec<Option<Proc>> = confs.iter().map(|c| Some(spawn(c))).collect();
    let addrs: Vec<String> = procs.iter().map(|p| p.as_ref().unwrap().addr.clone()).collect();
    let a: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let took =
        wait_owners(&coord, &dests, "balanced start", Duration::from_secs(90), balanced(&a, 10))
            .await;
    eprintln!("{backend}: 3 servers x {DESTS} destinations balanced {:?} after start", took);

    let received: Received = Arc::default();
    let stop_consumers = Arc::new(AtomicBool::new(false));
    for d in &dests {
        consume(coord.clone(), d.clone(), received.clone(), stop_consumers.clone());
    }

    // The downtime sampler.
    let downtime = Arc::new(Mutex::new(Downtime::default()));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (coord, dests, downtime, stop) =
            (coord.clone(), dests.clone(), downtime.clone(), stop_sampler.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(o) = owners(&coord, &dests).await {
                    downtime.lock().unwrap().observe(&o, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. SIGTERM server 0: its destinations go to the other two at once (graceful hand-overs:
    //    nobody waits the takeover delay), then 15 ± 1 each.
    let t0 = Instant::now();
    sigterm(procs[0].as_ref().unwrap());
    let taken = t0.elapsed()
        + wait_owners(
            &coord,
            &dests,
            "spread after SIGTERM",
            Duration::from_secs(30),
            owned_by(&a[1..]),
        )
        .await;
    let (worst, spell) = downtime.lock().unwrap().longest();
    let took = t0.elapsed()
        + wait_owners(
            &coord,
            &dests,
            "balance after SIGTERM",
            Duration::from_secs(60),
            balanced(&a[1..], 15),
        )
        .await;
    eprintln!(
        "{backend}: SIGTERM: its 10 destinations taken by the other 2 servers in {taken:?}, 15 +- 1 each in {took:?} (longest unowned: {worst} {spell:?})"
    );
    assert!(
        spell < Duration::from_millis(DELAY_MS),
        "{worst} was unowned for {spell:?}: a graceful hand-over must not wait the takeover delay"
    );
    let mut p0 = procs[0].take().unwrap();
    assert!(p0.child.wait().unwrap().success(), "graceful exit");

    // 3. Start it again: back to 10 ± 1 by graceful hand-overs, none unowned for as long as a
    //    crash costs (the takeover delay).
    downtime.lock().unwrap().reset();
    let t0 = Instant::now();
    procs[0] = Some(spawn(&confs[0]));
    let a0 = procs[0].as_ref().unwrap().addr.clone();
    let a: Vec<&str> = vec![&a0, &addrs[1], &addrs[2]];
    let took = t0.elapsed()
        + wait_owners(
            &coord,
            &dests,
            "rebalance after restart",
            Duration::from_secs(90),
            balanced(&a, 10),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (worst, spell) = downtime.lock().unwrap().longest();
    eprintln!(
        "{backend}: restart: back to 10 +- 1 each in {took:?}; longest unowned spell {worst} {spell:?}"
    );
    assert!(
        spell < Duration::from_millis(DELAY_MS),
        "{worst} was unowned for {spell:?} during a graceful rebalance"
    );

    // 4. kill -9 server 1: the other two take its destinations after session timeout + delay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    drop(procs[1].take()); // SIGKILL
    let survivors = [a0.as_str(), addrs[2].as_str()];
    let taken = t0.elapsed()
        + wait_owners(
            &coord,
            &dests,
            "takeover after kill -9",
            Duration::from_millis(SESSION_MS + DELAY_MS) + Duration::from_secs(20),
            owned_by(&survivors),
        )
        .await;
    let took = t0.elapsed()
        + wait_owners(
            &coord,
            &dests,
            "balance after kill -9",
            Duration::from_secs(60),
            balanced(&survivors, 15),
        )
        .await;
    eprintln!(
        "{backend}: kill -9: taken over in {taken:?}, 15 +- 1 each in {took:?} (session {SESSION_MS} ms + delay {DELAY_MS} ms)"
    );
    assert!(taken >= Duration::from_millis(DELAY_MS), "standbys must wait the delay");

    // 5. Every row written reached its destination's consumer.
    stop_writer.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut lost, mut dups, mut rows);
    loop {
        let w = written.lock().unwrap().clone();
        let r = received.lock().unwrap().clone();
        (lost, dups, rows) = (0usize, 0usize, 0usize);
        for (d, ids) in &w {
            rows += ids.len();
            let got: Vec<i64> = r.get(d).cloned().unwrap_or_default();
            let set: BTreeSet<i64> = got.iter().copied().collect();
            lost += ids.iter().filter(|i| !set.contains(i)).count();
            dups += got.len() - set.len();
        }
        if lost == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{backend}: rows written {rows}, lost {lost}, duplicates {dups}; wall time {:?}",
        t_start.elapsed()
    );
    assert_eq!(lost, 0, "rows lost");
    stop_consumers.store(true, Ordering::Relaxed);
    stop_sampler.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    for p in procs.iter().flatten() {
        sigterm(p);
    }
    for mut p in procs.into_iter().flatten() {
        let _ = p.child.wait();
    }
    coord.close().await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_three_servers_thirty_destinations_balanced() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let (cfg, toml) = zk_coord(&servers);
    scenario("zkbal", cfg, toml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_servers_thirty_destinations_balanced() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    let (cfg, toml) = etcd_coord(&endpoint);
    scenario("etcdbal", cfg, toml).await;
}

/// The balancer's reads of the cluster view fail (the first five, injected): no destination is
/// held back by it — a server that has never read a view grabs as without balancing, every
/// failure is counted, and once a read succeeds the server reports itself balanced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_view_reads_hold_nothing_back() {
    use canal_coord::testing::{Fault, FaultBackend, Op};
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(fx) = fixture("balfault").await else { return };
    let coord = crate::ha::zk(servers);
    let mut second = fx.instance.clone();
    second.destination = format!("{}_b", fx.db);
    second.source = second.source.clone().with_slave_id(fx.instance.source.slave_id + 500_000);
    let faults = (0..5).map(|_| (Op::Any, path::CLUSTER.to_owned(), Fault::Unavailable));
    let backend = Arc::new(FaultBackend::on_paths(coord.open_backend().unwrap(), faults));
    let s = canal_server::server::Server::start_with_backend(
        crate::ha::settings(coord),
        vec![fx.instance.clone(), second.clone()],
        backend.clone(),
    )
    .await
    .unwrap();
    for d in [&fx.db, &second.destination] {
        crate::ha::wait_active(&s, d, Duration::from_secs(15)).await;
    }
    let t0 = Instant::now();
    loop {
        let b = s.balance().expect("balancing is on");
        if b.state == canal_server::balance::BalanceState::Balanced {
            assert_eq!(b.refresh_failures, 5, "{b:?}");
            assert_eq!((b.owned, b.share, b.live_servers), (2, 2, 1), "{b:?}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "never balanced: {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(backend.pending_path_faults(), 0);
    s.shutdown().await;
}
