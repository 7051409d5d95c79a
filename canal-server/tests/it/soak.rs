//! The soak harness (`cargo xtask soak`; `#[ignore]`d here, too long for `cargo xtask test`):
//! MariaDB under continuous load, a PRIVATE coordinator (ZooKeeper or etcd, started through
//! `cargo xtask services instance up` so that the harness can restart it), two `canal-server`
//! processes and two `canal-client tail --ha` consumers, and ≥ 30 failovers of the active server
//! in a mix of five kinds:
//!
//! - `SIGTERM` (graceful handover), `kill -9`, an operator's `"active":false`;
//! - coordinator restart during activation: `SIGTERM` to the active server, then the coordinator
//!   server is killed by pid and started again on its port and data dir while the standby is
//!   taking over (whether the activation really overlapped the outage is measured and reported);
//! - session expiry forced: the active server is `SIGSTOP`ped until the standby serves, then
//!   `SIGCONT`: it must step down without serving or writing.
//!
//! Two workloads:
//! - `ha` (issue 12): multi-statement transactions of up to 40 rows, each bigger than a store
//!   flush (`transaction_size = 8` in instance.toml), rows carrying (transaction, index, size);
//! - `ddl` (issue 11): DML on three tables interleaved with random ALTERs (ADD/DROP/MODIFY/CHANGE
//!   COLUMN, ADD+DROP keeping the count, charset change); the writer logs each row image it wrote
//!   (column name → value) under a write sequence number carried by the row.
//!
//! Checks (none is weakened to pass; a failing check fails the test after the whole report):
//! - lost: every committed row (ha) / write (ddl) is received at least once;
//! - unknown / mislabelled: a received row that does not match what the writer wrote (ddl: column
//!   names and values of that very write);
//! - re-sent within one connection: a consumer's output between two "connected to canal server"
//!   lines never goes back (a BEGIN … BEGIN of one transaction in one session);
//! - re-sent acked rows: after a reconnect, a row seen before may come again only if it was in a
//!   batch that was not known to be acked (the last batch of a connection), or belongs to the
//!   transaction of such a batch (or one whose END entry may have been in it: its last row ends
//!   the batch before) re-sent whole from its first row;
//! - never two active: `/status` of both servers polled every 25 ms (a definite overlap: one server
//!   reports active in a sample taken entirely between two active samples of the other), and the
//!   servers' own log lines ("active: starting the instance" against the other's "no longer
//!   active", "canal-server stopped" or its death), frozen time excluded;
//! - cursor never moves backwards in the coordinator (a deposed writer);
//! - every takeover completes (the new owner reports active) within its bound.
//!
//! The report (per backend: failovers by kind, takeover times, rows written/received/lost/
//! duplicated, violations) goes to stderr and to `target/soak/<workload>-<backend>.txt`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canal_coord::config::CoordConfig;
use canal_coord::{Coordinator, path};
use canal_core::position::LogPosition;
use mysql_async::prelude::Queryable;

use crate::ha::fixture;
use crate::ha_process::{SESSION_MS, etcd_coord, instance_toml, owner, zk_coord};
use crate::support;

/// The standby's wait after a lost session (Canal's is 5 s; shorter keeps the soak in budget).
const DELAY_MS: u64 = 1000;
const CLIENT_ID: i16 = 1001;

#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
enum Kind {
    Sigterm,
    Kill9,
    ActiveFalse,
    CoordRestart,
    SessionExpiry,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sigterm => "SIGTERM",
            Kind::Kill9 => "kill -9",
            Kind::ActiveFalse => "active:false",
            Kind::CoordRestart => "coordinator restart",
            Kind::SessionExpiry => "session expiry (SIGSTOP)",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Ha,
    Ddl,
}

fn failovers() -> usize {
    std::env::var("CANAL_SOAK_FAILOVERS").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

/// xorshift64*: reproducible with `CANAL_SOAK_SEED`.
struct Rng(u64);
impl Rng {
    fn new() -> Self {
        let seed = std::env::var("CANAL_SOAK_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
                | 1,
        );
        eprintln!("soak: seed {seed} (CANAL_SOAK_SEED repeats the failover timing choices)");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn since(t0: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(t0).as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// The private coordinator.

fn xtask() -> Command {
    match std::env::var("CANAL_XTASK") {
        Ok(p) if !p.is_empty() => Command::new(p),
        _ => {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.args(["run", "-q", "-p", "xtask", "--"]);
            c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
            c
        }
    }
}

pub(crate) struct CoordServer {
    service: &'static str,
    dir: PathBuf,
    port: u16,
    pub(crate) endpoint: String,
}

impl CoordServer {
    pub(crate) fn start(
        service: &'static str,
        dir: &Path,
        port: Option<u16>,
        keep: bool,
    ) -> CoordServer {
        let endpoint = Self::launch(service, dir, port, keep);
        // `host:port`, or a URL with the port after the last `:` (amqp://u:p@host:port/vhost).
        let tail = endpoint.rsplit(':').next().unwrap();
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let port = digits.parse().unwrap_or_else(|_| panic!("no port in {endpoint}"));
        CoordServer { service, dir: dir.to_owned(), port, endpoint }
    }

    /// `xtask services instance up`; returns the endpoint.
    fn launch(service: &str, dir: &Path, port: Option<u16>, keep: bool) -> String {
        let mut c = xtask();
        c.args(["services", "instance", "up", service]).arg(dir);
        if let Some(p) = port {
            c.args(["--port", &p.to_string()]);
        }
        if keep {
            c.arg("--keep-data");
        }
        let out = c.stderr(Stdio::inherit()).output().expect("xtask runs");
        assert!(out.status.success(), "xtask services instance up {service} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.split_once('=').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no endpoint in {text:?}"))
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("server.pid")).ok()?.trim().parse().ok()
    }

    /// Kills the coordinator server by its pid (SIGKILL) and waits until it is gone.
    pub(crate) fn kill(&self) {
        let pid = self.pid().expect("coordinator pid file");
        signal(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(pid) {
            assert!(Instant::now() < deadline, "coordinator pid {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A zombie leader does not mean its threads have closed their sockets yet.
        while std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "port {} still taken after SIGKILL", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` (e.g. `STOP`, `CONT`) to the server process.
    pub(crate) fn signal(&self, sig: &str) {
        signal(self.pid().expect("service pid file"), sig);
    }

    /// Stops it gracefully (`xtask services instance down`, SIGTERM by pid), keeping its data.
    pub(crate) fn stop(&self) {
        let ok = xtask()
            .args(["services", "instance", "down", self.service])
            .arg(&self.dir)
            .status()
            .expect("xtask runs");
        assert!(ok.success(), "xtask services instance down {} failed", self.service);
    }

    /// Starts it again on its port and data.
    pub(crate) fn start_again(&mut self) {
        let again = Self::launch(self.service, &self.dir, Some(self.port), true);
        assert_eq!(again, self.endpoint);
    }
}

impl Drop for CoordServer {
    fn drop(&mut self) {
        let _ =
            xtask().args(["services", "instance", "down", self.service]).arg(&self.dir).status();
    }
}

/// A free port below Linux's ephemeral range (32768-60999). The coordinator restarts on its port
/// while clients keep reconnecting to it; with a port in the ephemeral range a client's connect
/// can bind that very port as its local end and connect to itself (TCP simultaneous open), and
/// the coordinator can then no longer bind it ("Address already in use"), as seen in this
/// harness's first runs.
pub(crate) fn port_below_ephemeral() -> u16 {
    // Several tests of one process pick ports: each call draws from its own sequence, so that two
    // tests asking at the same moment do not both get the same still-free port.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut rng = Rng(std::process::id() as u64 * 7919 + 1 + call * 104_729);
    for _ in 0..1000 {
        let port = 20_000 + rng.below(12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-32000");
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// canal-server processes, their logs and /status.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    ActivateStart,
    Deactivate,
    Stopped,
    Died,
    Frozen,
    Thawed,
    WriteFailed,
    ActivateFailed,
}

type Timeline = Arc<Mutex<Vec<(Instant, Ev)>>>;

struct Server {
    label: String,
    child: Child,
    addr: String,
    metrics: String,
    events: Timeline,
    /// Warnings and errors of its log (first few kept for the report).
    notable: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn spawn(conf: &Path, label: String, logs: &Path, t0: Instant) -> Server {
        // A free port for /status (metrics_port = 0 would turn it off).
        let metrics_port =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_canal-server"))
            .args(["run", "--conf"])
            .arg(conf)
            .arg("--set")
            .arg(format!("metrics_port={metrics_port}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("canal-server starts");
        let events: Timeline = Arc::default();
        let notable: Arc<Mutex<Vec<String>>> = Arc::default();
        let err = child.stderr.take().unwrap();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{label}.log")))
            .unwrap();
        {
            let (events, notable) = (events.clone(), notable.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let now = Instant::now();
                    let _ = writeln!(log, "[{:9.3}] {line}", since(t0, now));
                    let ev = if line.contains("active: starting the instance") {
                        Some(Ev::ActivateStart)
                    } else if line.contains("no longer active") {
                        Some(Ev::Deactivate)
                    } else if line.contains("canal-server stopped") {
                        Some(Ev::Stopped)
                    } else if line.contains("coordinator write failed")
                        || line.contains("coordinator write dropped")
                    {
                        Some(Ev::WriteFailed)
                    } else if line.contains("cannot start the instance")
                        || line.contains("activation failed")
                        || line.contains("releasing the running node after")
                    {
                        Some(Ev::ActivateFailed)
                    } else {
                        None
                    };
                    if let Some(ev) = ev {
                        events.lock().unwrap().push((now, ev));
                    }
                    if line.contains(" WARN ")
                        || line.contains(" ERROR ")
                        || line.contains("panicked")
                    {
                        let mut n = notable.lock().unwrap();
                        if n.len() < 400 {
                            n.push(format!("[{:.3}] {line}", since(t0, now)));
                        }
                    }
                }
            });
        }
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        // "canal-server listening on 127.0.0.1:PORT, metrics on 127.0.0.1:PORT"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 7, "{label}: unexpected first line {line:?}");
        let addr = words[3].trim_end_matches(',').to_owned();
        let metrics = words[6].to_owned();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        Server { label, child, addr, metrics, events, notable }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn mark(&self, ev: Ev) {
        self.events.lock().unwrap().push((Instant::now(), ev));
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.mark(Ev::Died);
    }

    /// Waits up to `limit` for the process to exit by itself; true if it did.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.mark(Ev::Died);
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A SIGSTOPped process must be continued to die cleanly.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `active` of `dest` in a server's `/status`; `None` when it does not answer in 200 ms.
async fn status_active(metrics: &str, dest: &str) -> Option<bool> {
    let fut = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(metrics).await.ok()?;
        s.write_all(b"GET /status HTTP/1.0\r\n\r\n").await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8(buf).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["destinations"]
            .as_array()?
            .iter()
            .find(|d| d["destination"] == dest)
            .and_then(|d| d["active"].as_bool())
    };
    tokio::time::timeout(Duration::from_millis(200), fut).await.ok().flatten()
}

/// One `/status` sample: asked at `sent`, answered at `got`.
#[derive(Clone, Copy)]
struct Sample {
    sent: Instant,
    got: Instant,
    active: Option<bool>,
}

type Samples = Arc<Mutex<BTreeMap<String, Vec<Sample>>>>;
type Live = Arc<Mutex<Vec<(String, String)>>>;

fn spawn_status_poller(
    live: Live,
    dest: String,
    samples: Samples,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let targets = live.lock().unwrap().clone();
            let polls = targets.into_iter().map(|(label, metrics)| {
                let dest = dest.clone();
                async move {
                    let sent = Instant::now();
                    let active = status_active(&metrics, &dest).await;
                    (label, Sample { sent, got: Instant::now(), active })
                }
            });
            for (label, s) in futures_join(polls).await {
                samples.lock().unwrap().entry(label).or_default().push(s);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

async fn futures_join<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Two servers active at once, `from`..`to`.
struct Overlap {
    x: String,
    y: String,
    from: Instant,
    to: Instant,
}

/// Definite overlaps from `/status`: server Y answered "active" in a sample taken entirely
/// between two consecutive "active" samples of server X (so X was active all along, unless it
/// flapped within 25 ms).
fn status_overlaps(samples: &BTreeMap<String, Vec<Sample>>) -> Vec<Overlap> {
    let mut found = Vec::new();
    for (x, xs) in samples {
        let spans: Vec<(Instant, Instant)> = xs
            .windows(2)
            .filter(|w| w[0].active == Some(true) && w[1].active == Some(true))
            .map(|w| (w[0].got, w[1].sent))
            .collect();
        for (y, ys) in samples {
            if x == y {
                continue;
            }
            for s in ys.iter().filter(|s| s.active == Some(true)) {
                if spans.iter().any(|(a, b)| *a <= s.sent && s.got <= *b) {
                    found.push(Overlap { x: x.clone(), y: y.clone(), from: s.sent, to: s.got });
                }
            }
        }
    }
    found
}

/// Active intervals from a server's log: from "active: starting the instance" to the first of
/// "no longer active", "canal-server stopped" or its death; frozen (SIGSTOP) time cut out.
fn log_intervals(events: &[(Instant, Ev)], end: Instant) -> Vec<(Instant, Instant)> {
    let mut out = Vec::new();
    let mut open: Option<Instant> = None;
    let mut frozen_active = false;
    for &(t, ev) in events {
        match ev {
            Ev::ActivateStart if open.is_none() => open = Some(t),
            Ev::Deactivate | Ev::Stopped | Ev::Died => {
                if let Some(a) = open.take() {
                    out.push((a, t));
                }
                frozen_active = false;
            }
            Ev::Frozen => {
                if let Some(a) = open.take() {
                    out.push((a, t));
                    frozen_active = true;
                }
            }
            // Woken while it believed itself active: active again until it notices.
            Ev::Thawed if frozen_active => {
                open = Some(t);
                frozen_active = false;
            }
            _ => {}
        }
    }
    if let Some(a) = open {
        out.push((a, end));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Consumers: `canal-client tail --ha`, stdout and stderr merged into one ordered pipe.

#[derive(Clone, Debug)]
struct Got {
    /// Consumer process number, connection number within it, batch id.
    proc_: usize,
    conn: usize,
    /// The canal server of that connection (from the client's "connected to canal server" line).
    server: String,
    batch: i64,
    at: Instant,
    table: String,
    kind: String,
    row: BTreeMap<String, Option<String>>,
}

/// The text of a log line without terminal colour sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct Consumer {
    child: Child,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Its last log lines (not rows): quoted when it exits by itself.
    tail: Arc<Mutex<std::collections::VecDeque<String>>>,
}

impl Consumer {
    fn spawn(
        client: &Path,
        dest: &str,
        coord_args: &[String],
        n: usize,
        got: Arc<Mutex<Vec<Got>>>,
        log: &Path,
    ) -> Consumer {
        // stderr into stdout (one ordered stream: rows and "connected" lines), by the shell
        // that then execs the client (same pid).
        let mut child = Command::new("sh")
            .args(["-c", "exec \"$0\" \"$@\" 2>&1"])
            .arg(client)
            .args(["tail", "--destination", dest, "--batch-size", "20", "--format", "json", "--ha"])
            .args(["--session-timeout-ms", &SESSION_MS.to_string()])
            .args(coord_args)
            .env("RUST_LOG", "canal_client=info,warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("canal-client starts");
        let r = child.stdout.take().unwrap();
        let mut logf = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let tail = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let tail_w = tail.clone();
        let reader = std::thread::spawn(move || {
            let mut conn = 0usize;
            let mut server = String::new();
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if !line.starts_with('{') {
                    let line = strip_ansi(&line);
                    let _ = writeln!(logf, "consumer {n}: {line}");
                    let mut t = tail_w.lock().unwrap();
                    if t.len() == 5 {
                        t.pop_front();
                    }
                    t.push_back(line.clone());
                    drop(t);
                    if line.contains("connected to canal server") {
                        conn += 1;
                        server = line
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("server="))
                            .unwrap_or("?")
                            .to_owned();
                    }
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    let _ = writeln!(logf, "consumer {n}: unparsable {line}");
                    continue;
                };
                if v["isDdl"] == true {
                    continue;
                }
                let at = Instant::now();
                let batch = v["id"].as_i64().unwrap_or(-1);
                let table = v["table"].as_str().unwrap_or("").to_owned();
                let kind = v["type"].as_str().unwrap_or("").to_owned();
                let mut g = got.lock().unwrap();
                for row in v["data"].as_array().into_iter().flatten() {
                    let Some(obj) = row.as_object() else { continue };
                    let row = obj
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                        .collect();
                    g.push(Got {
                        proc_: n,
                        conn,
                        server: server.clone(),
                        batch,
                        at,
                        table: table.clone(),
                        kind: kind.clone(),
                        row,
                    });
                }
            }
        });
        Consumer { child, reader: Some(reader), tail }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Consumer {
    /// Also when a check or the writer panics: no `tail` outlives the run.
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Writers.

/// ha: what was committed, transaction by transaction: (txn, first id, size).
type TxnLog = Arc<Mutex<Vec<(i64, i64, i64)>>>;

async fn ha_writer(mut conn: mysql_async::Conn, db: String, log: TxnLog, stop: Arc<AtomicBool>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pad: String = "p".repeat(200);
    let (mut txn, mut next) = (1i64, 1i64);
    while !stop.load(Ordering::Relaxed) {
        let n = if txn % 5 == 0 { 1 } else { 12 + rng.below(29) as i64 };
        let mut tx = conn.start_transaction(Default::default()).await.expect("BEGIN");
        for k in 0..n {
            tx.query_drop(format!(
                "INSERT INTO `{db}`.t (id, txn, k, n, pad) VALUES ({}, {txn}, {k}, {n}, '{pad}')",
                next + k
            ))
            .await
            .expect("insert");
        }
        tx.commit().await.expect("COMMIT");
        log.lock().unwrap().push((txn, next, n));
        next += n;
        txn += 1;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Int,
    BigInt,
    Varchar { len: u32, latin1: bool },
    Decimal,
}

impl Ty {
    fn sql(self) -> String {
        match self {
            Ty::Int => "INT".into(),
            Ty::BigInt => "BIGINT".into(),
            Ty::Varchar { len, latin1 } => format!(
                "VARCHAR({len}) CHARACTER SET {}",
                if latin1 { "latin1" } else { "utf8mb4" }
            ),
            Ty::Decimal => "DECIMAL(8,2)".into(),
        }
    }
    /// (SQL literal, the value as a FlatMessage carries it) for write `w`.
    fn value(self, w: i64) -> (String, String) {
        match self {
            Ty::Int => ((w % 100_000).to_string(), (w % 100_000).to_string()),
            // Small enough for INT and DECIMAL(8,2): MODIFY between them never fails.
            Ty::BigInt => {
                let v = (w % 10_000 * 10 + 7).to_string();
                (v.clone(), v)
            }
            // Canal decodes text with the connection charset (UTF-8), not the column's own
            // (docs/compatibility.md, "Text charset"): the latin1 byte of 'é' arrives as U+FFFD,
            // exactly as Java Canal delivers it. A utf8mb4 column keeps 'é'.
            Ty::Varchar { latin1: true, .. } => (format!("'v{w}é'"), format!("v{w}\u{FFFD}")),
            Ty::Varchar { latin1: false, .. } => (format!("'v{w}é'"), format!("v{w}é")),
            Ty::Decimal => {
                let v = format!("{}.{:02}", w % 100_000, w % 100);
                (v.clone(), v)
            }
        }
    }
    fn random(rng: &mut Rng) -> Ty {
        match rng.below(5) {
            0 => Ty::Int,
            1 => Ty::BigInt,
            2 => Ty::Decimal,
            3 => Ty::Varchar { len: 40, latin1: true },
            _ => Ty::Varchar { len: 40, latin1: false },
        }
    }
}

/// ddl: each write's row image, by write sequence number: (table, id, column → value), and its
/// transaction (number, index in it).
type Image = (String, i64, BTreeMap<String, Option<String>>, (i64, i64));
type WriteLog = Arc<Mutex<HashMap<i64, Image>>>;

const DDL_TABLES: [&str; 3] = ["d1", "d2", "d3"];

async fn ddl_setup(conn: &mut mysql_async::Conn, db: &str) {
    for t in DDL_TABLES {
        conn.query_drop(format!(
            "CREATE TABLE `{db}`.{t} (id INT PRIMARY KEY, wseq BIGINT NOT NULL, c1 {}, c2 INT)",
            Ty::Varchar { len: 40, latin1: false }.sql()
        ))
        .await
        .unwrap();
    }
}

struct DdlStats {
    alters: AtomicU64,
    alter_kinds: Mutex<BTreeMap<&'static str, u64>>,
}

async fn ddl_writer(
    mut conn: mysql_async::Conn,
    db: String,
    log: WriteLog,
    stats: Arc<DdlStats>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    // Per table: the dynamic columns in order (id, wseq first, never altered), rows that exist.
    let mut cols: Vec<Vec<(String, Ty)>> = DDL_TABLES
        .iter()
        .map(|_| {
            vec![("c1".into(), Ty::Varchar { len: 40, latin1: false }), ("c2".into(), Ty::Int)]
        })
        .collect();
    let mut rows: Vec<i64> = vec![0; DDL_TABLES.len()];
    let mut next_col = 3u64;
    let mut wseq = 1i64;
    let mut txn = 0i64;
    while !stop.load(Ordering::Relaxed) {
        if rng.below(100) < 12 {
            let ti = rng.below(3) as usize;
            let t = DDL_TABLES[ti];
            let c = &mut cols[ti];
            let mut fresh = || {
                next_col += 1;
                format!("c{next_col}")
            };
            let (sql, what) = match rng.below(6) {
                0 => {
                    let (name, ty) = (fresh(), Ty::random(&mut rng));
                    let at = rng.below(c.len() as u64 + 1) as usize;
                    let pos = if at == 0 {
                        " AFTER wseq".to_owned()
                    } else {
                        format!(" AFTER {}", c[at - 1].0)
                    };
                    c.insert(at, (name.clone(), ty));
                    (format!("ADD COLUMN {name} {}{pos}", ty.sql()), "ADD")
                }
                1 if c.len() > 1 => {
                    let (name, _) = c.remove(rng.below(c.len() as u64) as usize);
                    (format!("DROP COLUMN {name}"), "DROP")
                }
                2 => {
                    let i = rng.below(c.len() as u64) as usize;
                    let ty = match c[i].1 {
                        Ty::Int => Ty::BigInt,
                        Ty::BigInt => Ty::Decimal,
                        Ty::Varchar { len, latin1 } => {
                            Ty::Varchar { len: if len == 40 { 60 } else { 40 }, latin1 }
                        }
                        Ty::Decimal => Ty::Int,
                    };
                    c[i].1 = ty;
                    (format!("MODIFY COLUMN {} {}", c[i].0, ty.sql()), "MODIFY")
                }
                3 => {
                    let i = rng.below(c.len() as u64) as usize;
                    let name = fresh();
                    let old = std::mem::replace(&mut c[i].0, name.clone());
                    (format!("CHANGE COLUMN {old} {name} {}", c[i].1.sql()), "CHANGE")
                }
                4 => {
                    let i = rng.below(c.len() as u64) as usize;
                    let (old, _) = c.remove(i);
                    let (name, ty) = (fresh(), Ty::random(&mut rng));
                    c.insert(i.min(c.len()), (name.clone(), ty));
                    let after = if i == 0 { "wseq".to_owned() } else { c[i - 1].0.clone() };
                    (
                        format!("DROP COLUMN {old}, ADD COLUMN {name} {} AFTER {after}", ty.sql()),
                        "ADD+DROP",
                    )
                }
                _ => {
                    let Some(i) = c.iter().position(|(_, ty)| matches!(ty, Ty::Varchar { .. }))
                    else {
                        continue;
                    };
                    let Ty::Varchar { len, latin1 } = c[i].1 else { unreachable!() };
                    c[i].1 = Ty::Varchar { len, latin1: !latin1 };
                    (format!("MODIFY COLUMN {} {}", c[i].0, c[i].1.sql()), "CHARSET")
                }
            };
            conn.query_drop(format!("ALTER TABLE `{db}`.{t} {sql}"))
                .await
                .unwrap_or_else(|e| panic!("ALTER TABLE {t} {sql}: {e}"));
            stats.alters.fetch_add(1, Ordering::Relaxed);
            *stats.alter_kinds.lock().unwrap().entry(what).or_default() += 1;
            continue;
        }
        // A transaction of 1-6 INSERTs/UPDATEs over the tables; every write sets every column.
        let n = 1 + rng.below(6);
        txn += 1;
        let mut tx = conn.start_transaction(Default::default()).await.expect("BEGIN");
        let mut pending = Vec::new();
        for idx in 0..n as i64 {
            let ti = rng.below(3) as usize;
            let t = DDL_TABLES[ti];
            let update = rows[ti] > 0 && rng.below(3) == 0;
            let id = if update { 1 + rng.below(rows[ti] as u64) as i64 } else { rows[ti] + 1 };
            let mut image = BTreeMap::new();
            image.insert("id".to_owned(), Some(id.to_string()));
            image.insert("wseq".to_owned(), Some(wseq.to_string()));
            let mut names = vec!["id".to_owned(), "wseq".to_owned()];
            let mut lits = vec![id.to_string(), wseq.to_string()];
            for (name, ty) in &cols[ti] {
                let (lit, shown) = ty.value(wseq);
                image.insert(name.clone(), Some(shown));
                names.push(name.clone());
                lits.push(lit);
            }
            let sql = if update {
                let sets: Vec<String> =
                    names.iter().zip(&lits).skip(1).map(|(n, l)| format!("{n} = {l}")).collect();
                format!("UPDATE `{db}`.{t} SET {} WHERE id = {id}", sets.join(", "))
            } else {
                rows[ti] += 1;
                format!(
                    "INSERT INTO `{db}`.{t} ({}) VALUES ({})",
                    names.join(", "),
                    lits.join(", ")
                )
            };
            tx.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            pending.push((wseq, (t.to_owned(), id, image, (txn, idx))));
            wseq += 1;
        }
        tx.commit().await.expect("COMMIT");
        log.lock().unwrap().extend(pending);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Checks on what the consumers printed.

/// When the run started and when each failover began (for naming the failover a finding follows).
struct Ctx {
    t0: Instant,
    rounds: Vec<(Instant, String)>,
}

impl Ctx {
    /// The last failover that began before `t`.
    fn after(&self, t: Instant) -> String {
        self.rounds
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map_or_else(|| "before any failover".into(), |(_, name)| name.clone())
    }
}

struct Verdict {
    lines: Vec<String>,
    violations: Vec<String>,
}

/// Unique row key for the delivery checks.
fn key_of(g: &Got, w: Workload) -> Option<i64> {
    match w {
        Workload::Ha => g.row.get("id")?.as_deref()?.parse().ok(),
        Workload::Ddl => g.row.get("wseq")?.as_deref()?.parse().ok(),
    }
}

/// The delivery checks shared by both workloads: re-sent within one connection; re-sent rows that
/// were acked (a row seen before may come again after a reconnect only if it was in the last batch
/// of a connection, or its transaction was, and the transaction is re-sent from its first row).
/// `txn_of(key)` gives (transaction, index in it).
fn delivery_checks(
    got: &[Got],
    w: Workload,
    txn_of: &dyn Fn(i64) -> Option<(i64, i64)>,
    cx: &Ctx,
    v: &mut Verdict,
) {
    let t0 = cx.t0;
    // Per consumer connection, in order.
    let mut conns: BTreeMap<(usize, usize), Vec<&Got>> = BTreeMap::new();
    for g in got {
        conns.entry((g.proc_, g.conn)).or_default().push(g);
    }
    // Unacked: the last two batches of each connection. `tail` fetches ahead: the GET for batch
    // N+1 is sent before batch N is printed and acked (with N's reply, or in the same write as
    // the ack of N-1), so the server handles that ack after answering N+1; when a connection
    // ends, N+1 (the last printed) and N may both be un-acked. The ack of N-1 went before the GET
    // of N+1, so it was handled before N+1 was answered (docs/client.md, fetching ahead).
    const UNACKED: usize = 2;
    let mut unacked_keys = BTreeSet::new();
    let mut unacked_txns = BTreeSet::new();
    // A transaction's last row (every row is received at least once, or `lost` says so).
    let mut last_index: HashMap<i64, i64> = HashMap::new();
    for g in got {
        if let Some((t, i)) = key_of(g, w).and_then(txn_of) {
            let m = last_index.entry(t).or_insert(i);
            *m = (*m).max(i);
        }
    }
    for rows in conns.values() {
        let mut batches: Vec<i64> = Vec::new();
        for g in rows.iter() {
            if batches.last() != Some(&g.batch) {
                batches.push(g.batch);
            }
        }
        let tail = &batches[batches.len().saturating_sub(UNACKED)..];
        for g in rows.iter().filter(|g| tail.contains(&g.batch)) {
            if let Some(k) = key_of(g, w) {
                unacked_keys.insert(k);
                if let Some((t, _)) = txn_of(k) {
                    unacked_txns.insert(t);
                }
            }
        }
        // A transaction whose last row ends the batch before those has its END entry (the ack
        // boundary: the cursor moves to the last BEGIN/END of an acked batch) in an unacked
        // batch: the cursor stays at its BEGIN and the whole transaction comes again. Rows show
        // no END entry, so any transaction ending in that batch counts.
        let Some(&prev) = batches.len().checked_sub(UNACKED + 1).map(|i| &batches[i]) else {
            continue;
        };
        for g in rows.iter().filter(|g| g.batch == prev) {
            if let Some((t, i)) = key_of(g, w).and_then(txn_of)
                && last_index.get(&t) == Some(&i)
            {
                unacked_txns.insert(t);
            }
        }
    }
    let mut within = 0u64;
    let mut within_examples = Vec::new();
    let mut within_after: BTreeMap<String, u64> = BTreeMap::new();
    for ((p, c), rows) in &conns {
        let mut max = i64::MIN;
        for g in rows {
            let Some(k) = key_of(g, w) else { continue };
            if k <= max {
                within += 1;
                *within_after.entry(cx.after(g.at)).or_default() += 1;
                if within_examples.len() < 5 {
                    within_examples.push(format!(
                        "consumer {p} connection {c}: row {k} (txn, index {:?}) at {:.3} s after row {max}, batch {}",
                        txn_of(k),
                        since(t0, g.at),
                        g.batch
                    ));
                }
            }
            max = max.max(k);
        }
    }
    if within > 0 {
        v.violations.push(format!(
            "{within} rows re-sent within one connection (no reconnect between), after failovers {within_after:?}; first: {}",
            within_examples.join("; ")
        ));
    }
    // Across connections: in arrival order, a row seen before.
    let mut seen: HashMap<i64, u32> = HashMap::new();
    let (mut dup_ok, mut dup_bad) = (0u64, 0u64);
    let mut bad_examples = Vec::new();
    let mut bad_after: BTreeMap<String, u64> = BTreeMap::new();
    let mut order: Vec<&Got> = got.iter().collect();
    order.sort_by_key(|g| g.at);
    // A re-delivery run inside one connection: (proc, conn) → first re-sent row's index in txn.
    let mut run_start: HashMap<(usize, usize, i64), i64> = HashMap::new();
    for g in order {
        let Some(k) = key_of(g, w) else { continue };
        let n = seen.entry(k).or_default();
        *n += 1;
        if *n == 1 {
            continue;
        }
        let txn = txn_of(k);
        let ok = unacked_keys.contains(&k)
            || txn.is_some_and(|(t, idx)| {
                let start = *run_start.entry((g.proc_, g.conn, t)).or_insert(idx);
                unacked_txns.contains(&t) && start == 0
            });
        if ok {
            dup_ok += 1;
        } else {
            dup_bad += 1;
            *bad_after.entry(cx.after(g.at)).or_default() += 1;
            if bad_examples.len() < 5 {
                bad_examples.push(format!(
                    "row {k} (txn, index {txn:?}) again at {:.3} s on consumer {} connection {}",
                    since(t0, g.at),
                    g.proc_,
                    g.conn
                ));
            }
        }
    }
    v.lines.push(format!(
        "duplicates: {dup_ok} re-sent from unacked batches (whole transactions), {dup_bad} re-sent acked rows"
    ));
    if dup_bad > 0 {
        v.violations.push(format!(
            "{dup_bad} acked rows re-sent, after failovers {bad_after:?}; first: {}",
            bad_examples.join("; ")
        ));
    }
}

fn check_ha(got: &[Got], log: &[(i64, i64, i64)], cx: &Ctx) -> Verdict {
    let mut v = Verdict { lines: Vec::new(), violations: Vec::new() };
    let total: i64 = log.iter().map(|(_, _, n)| n).sum();
    let mut txn_of_id: HashMap<i64, (i64, i64, i64)> = HashMap::new();
    for &(t, first, n) in log {
        for k in 0..n {
            txn_of_id.insert(first + k, (t, k, n));
        }
    }
    let mut count: HashMap<i64, u32> = HashMap::new();
    let mut unknown = Vec::new();
    for g in got {
        let id = key_of(g, Workload::Ha);
        let fields: Option<(i64, i64, i64)> = (|| {
            let f = |c: &str| g.row.get(c)?.as_deref()?.parse::<i64>().ok();
            Some((f("txn")?, f("k")?, f("n")?))
        })();
        match (id, fields) {
            (Some(id), Some(f)) if txn_of_id.get(&id) == Some(&f) => {
                *count.entry(id).or_default() += 1;
            }
            _ => unknown.push(format!(
                "{:?}",
                g.row.iter().filter(|(k, _)| *k != "pad").collect::<Vec<_>>()
            )),
        }
    }
    let lost: Vec<i64> = (1..=total).filter(|i| !count.contains_key(i)).collect();
    let dups: u32 = count.values().map(|n| n - 1).sum();
    v.lines.push(format!(
        "rows: {total} written in {} transactions, {} received ({} distinct), {} lost, {dups} duplicate deliveries",
        log.len(),
        got.len(),
        count.len(),
        lost.len()
    ));
    if !lost.is_empty() {
        let txns: BTreeSet<i64> =
            lost.iter().filter_map(|i| txn_of_id.get(i).map(|t| t.0)).collect();
        v.violations.push(format!(
            "{} rows lost (ids {:?}…, transactions {:?}…)",
            lost.len(),
            &lost[..lost.len().min(10)],
            txns.iter().take(10).collect::<Vec<_>>()
        ));
    }
    if !unknown.is_empty() {
        v.violations.push(format!(
            "{} rows never written or with wrong fields: {:?}",
            unknown.len(),
            &unknown[..unknown.len().min(3)]
        ));
    }
    // Transactions whose rows came a different number of times: a prefix (re-delivery from the
    // transaction's first row after a batch holding its beginning was not acked) or a suffix
    // (resumed at an acked cursor inside the transaction). Whether each re-sent row was allowed
    // is judged by `delivery_checks`; this is the figure.
    let (mut prefix, mut suffix, mut other) = (0u32, 0u32, 0u32);
    for &(_, first, n) in log {
        let counts: Vec<u32> =
            (first..first + n).map(|i| count.get(&i).copied().unwrap_or(0)).collect();
        if counts.iter().all(|c| *c == counts[0]) {
            continue;
        }
        if counts.windows(2).all(|w| w[0] >= w[1]) {
            prefix += 1;
        } else if counts.windows(2).all(|w| w[0] <= w[1]) {
            suffix += 1;
        } else {
            other += 1;
        }
    }
    v.lines.push(format!(
        "transactions partly re-sent: {prefix} from their first row (the client saw a prefix, then the whole), {suffix} from inside (resumed at the cursor), {other} otherwise"
    ));
    let txn_of = |id: i64| txn_of_id.get(&id).map(|&(t, k, _)| (t, k));
    delivery_checks(got, Workload::Ha, &txn_of, cx, &mut v);
    v
}

fn check_ddl(got: &[Got], log: &HashMap<i64, Image>, cx: &Ctx) -> Verdict {
    let t0 = cx.t0;
    let mut mis_after: BTreeMap<String, u64> = BTreeMap::new();
    let mut v = Verdict { lines: Vec::new(), violations: Vec::new() };
    let mut checked = 0u64;
    let (mut wrong_names, mut wrong_values, mut no_wseq) = (0u64, 0u64, 0u64);
    let mut examples = Vec::new();
    let mut received = BTreeSet::new();
    for g in got {
        let Some(w) = key_of(g, Workload::Ddl) else {
            no_wseq += 1;
            if examples.len() < 8 {
                examples.push(format!("{}.{} row without a wseq: {:?}", g.table, g.kind, g.row));
            }
            continue;
        };
        checked += 1;
        let Some((table, _, image, _)) = log.get(&w) else {
            no_wseq += 1;
            if examples.len() < 8 {
                examples.push(format!("{} row with unknown wseq {w}: {:?}", g.table, g.row));
            }
            continue;
        };
        received.insert(w);
        let names: BTreeSet<&String> = g.row.keys().collect();
        let want: BTreeSet<&String> = image.keys().collect();
        if *table != g.table || names != want {
            wrong_names += 1;
            *mis_after.entry(cx.after(g.at)).or_default() += 1;
            if examples.len() < 8 {
                examples.push(format!(
                    "wseq {w} ({} at {:.3} s, consumer {} conn {}): {}.{:?} expected {table}.{:?}",
                    g.kind,
                    since(t0, g.at),
                    g.proc_,
                    g.conn,
                    g.table,
                    g.row,
                    image
                ));
            }
        } else if g.row != *image {
            wrong_values += 1;
            *mis_after.entry(cx.after(g.at)).or_default() += 1;
            if examples.len() < 8 {
                examples.push(format!(
                    "wseq {w} ({} at {:.3} s, consumer {} conn {}): values {:?} expected {:?}",
                    g.kind,
                    since(t0, g.at),
                    g.proc_,
                    g.conn,
                    g.row,
                    image
                ));
            }
        }
    }
    let lost: Vec<i64> = log.keys().filter(|w| !received.contains(w)).copied().collect();
    let mislabelled = wrong_names + wrong_values + no_wseq;
    v.lines.push(format!(
        "rows checked {checked} of {} writes: mislabelled {mislabelled} ({wrong_names} wrong column names, {wrong_values} wrong values, {no_wseq} unidentifiable), lost {}",
        log.len(),
        lost.len()
    ));
    if mislabelled > 0 {
        v.violations.push(format!(
            "{mislabelled} mislabelled rows, after failovers {mis_after:?}; first: {}",
            examples.join("; ")
        ));
    }
    if !lost.is_empty() {
        let mut l = lost.clone();
        l.sort_unstable();
        v.violations.push(format!("{} writes lost: wseq {:?}…", l.len(), &l[..l.len().min(10)]));
    }
    let txn_of = |w: i64| log.get(&w).map(|e| e.3);
    delivery_checks(got, Workload::Ddl, &txn_of, cx, &mut v);
    v
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Round {
    t: Instant,
    kind: Kind,
    at: f64,
    took: Option<Duration>,
    note: String,
}

fn write_conf(dir: &Path, coord: &str, db: &str, instance: &str) {
    std::fs::create_dir_all(dir.join(db)).unwrap();
    std::fs::write(
        dir.join("canal.toml"),
        format!(
            "ip = \"127.0.0.1\"\nport = 0\nmetrics_port = 0\ndata_dir = \"{}\"\n[coord]\n{coord}\ntakeover_delay_ms = {DELAY_MS}\ncursor_flush_period_ms = 0\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join(db).join("instance.toml"), instance).unwrap();
}

async fn soak(backend: &'static str, workload: Workload) {
    let Some(client) = client_bin() else { return };
    let tag = match (workload, backend) {
        (Workload::Ha, "zk") => "skz",
        (Workload::Ha, _) => "ske",
        (Workload::Ddl, "zk") => "sdz",
        (Workload::Ddl, _) => "sde",
    };
    let Some(mut fx) = fixture(tag).await else { return };
    let t0 = Instant::now();
    let wname = match workload {
        Workload::Ha => "ha",
        Workload::Ddl => "ddl",
    };
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("..").join("soak");
    let root = out_dir.join(format!("{wname}-{backend}"));
    let _ = std::fs::remove_dir_all(&root);
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut coord_server = CoordServer::start(
        if backend == "zk" { "zk" } else { "etcd" },
        &root.join("coordinator"),
        Some(port_below_ephemeral()),
        false,
    );
    let (coord_cfg, coord_toml, coord_args): (CoordConfig, String, Vec<String>) = if backend == "zk"
    {
        let (c, t) = zk_coord(&coord_server.endpoint);
        (c, t, vec!["--zk".into(), coord_server.endpoint.clone()])
    } else {
        let (c, t) = etcd_coord(&coord_server.endpoint);
        (c, t, vec!["--etcd".into(), coord_server.endpoint.clone()])
    };

    // Tables, then the instance: a transaction buffer of 8 entries, so that one transaction of
    // the load spans several store flushes.
    let instance =
        format!("transaction_size = 8\n{}[memory]\nmemory_budget = 262144\n", instance_toml(&fx));
    match workload {
        Workload::Ha => fx
            .admin
            .query_drop(format!(
                "CREATE TABLE `{}`.t2 (id BIGINT PRIMARY KEY, txn BIGINT NOT NULL, k INT NOT NULL, n INT NOT NULL, pad VARCHAR(255))",
                fx.db
            ))
            .await
            .unwrap(),
        Workload::Ddl => ddl_setup(&mut fx.admin, &fx.db).await,
    }
    if workload == Workload::Ha {
        // The fixture's `t(id)` is replaced by the transaction table.
        fx.admin.query_drop(format!("DROP TABLE `{}`.t", fx.db)).await.unwrap();
        fx.admin.query_drop(format!("RENAME TABLE `{0}`.t2 TO `{0}`.t", fx.db)).await.unwrap();
    }
    let confs = [root.join("a"), root.join("b")];
    for c in &confs {
        write_conf(c, &coord_toml, &fx.db, &instance);
    }
    let dest = fx.db.clone();
    let coord = Coordinator::new(coord_cfg.open_backend().unwrap());
    let mut spawned = 0usize;
    let mut label = |i: usize| {
        spawned += 1;
        format!("{}{spawned}", if i == 0 { "a" } else { "b" })
    };
    let mut servers: Vec<Server> = Vec::new();
    servers.push(Server::spawn(&confs[0], label(0), &logs, t0));
    wait_takeover(&coord, &dest, &servers[0], Duration::from_secs(30))
        .await
        .expect("first activation");
    servers.push(Server::spawn(&confs[1], label(1), &logs, t0));
    // Both servers' timelines, including the ones replaced during the run.
    let mut retired: Vec<Server> = Vec::new();

    let live: Live = Arc::new(Mutex::new(
        servers.iter().map(|s| (s.label.clone(), s.metrics.clone())).collect(),
    ));
    let samples: Samples = Arc::default();
    let stop_poll = Arc::new(AtomicBool::new(false));
    let poller =
        spawn_status_poller(live.clone(), dest.clone(), samples.clone(), stop_poll.clone());
    // The client cursor must never move backwards.
    let regressions: Arc<Mutex<Vec<String>>> = Arc::default();
    let cursor_poller = {
        let (coord_cfg, dest, regressions, stop) =
            (coord_cfg.clone(), dest.clone(), regressions.clone(), stop_poll.clone());
        tokio::spawn(async move {
            let coord = Coordinator::new(coord_cfg.open_backend().unwrap());
            let mut best: Option<(String, i64)> = None;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let Ok(s) = coord.session().await else { continue };
                let Ok(Some(node)) = s.get(&path::client_cursor(&dest, CLIENT_ID)).await else {
                    continue;
                };
                let Ok(pos) = LogPosition::from_json(&node.data) else {
                    regressions.lock().unwrap().push(format!(
                        "unparsable cursor {:?}",
                        String::from_utf8_lossy(&node.data)
                    ));
                    continue;
                };
                let (Some(j), Some(p)) = (pos.position.journal_name, pos.position.position) else {
                    continue;
                };
                let now = (j, p);
                if let Some(b) = &best
                    && now < *b
                {
                    regressions.lock().unwrap().push(format!(
                        "{:.3} s: cursor {now:?} after {b:?}",
                        since(t0, Instant::now())
                    ));
                    continue;
                }
                best = Some(now);
            }
            coord.close().await;
        })
    };

    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let consumer_log = logs.join("consumers.log");
    let mut nproc = 0usize;
    let mut spawn_consumer = |got: &Arc<Mutex<Vec<Got>>>| {
        nproc += 1;
        Consumer::spawn(&client, &dest, &coord_args, nproc, got.clone(), &consumer_log)
    };
    let mut consumers = [spawn_consumer(&got), spawn_consumer(&got)];
    let (mut consumer_kills, mut consumer_exits) = (0u32, 0u32);

    // The load.
    let stop = Arc::new(AtomicBool::new(false));
    let writer_conn = {
        let admin_url = support::service("CANAL_TEST_MYSQL_ADMIN").unwrap();
        mysql_async::Conn::new(mysql_async::Opts::from_url(&admin_url).unwrap()).await.unwrap()
    };
    let txn_log: TxnLog = Arc::default();
    let write_log: WriteLog = Arc::default();
    let ddl_stats = Arc::new(DdlStats { alters: AtomicU64::new(0), alter_kinds: Mutex::default() });
    let load = match workload {
        Workload::Ha => {
            tokio::spawn(ha_writer(writer_conn, dest.clone(), txn_log.clone(), stop.clone()))
        }
        Workload::Ddl => tokio::spawn(ddl_writer(
            writer_conn,
            dest.clone(),
            write_log.clone(),
            ddl_stats.clone(),
            stop.clone(),
        )),
    };

    let mut kinds: Vec<Kind> = match workload {
        Workload::Ha => vec![
            Kind::Sigterm,
            Kind::Kill9,
            Kind::ActiveFalse,
            Kind::CoordRestart,
            Kind::SessionExpiry,
        ],
        Workload::Ddl => vec![Kind::Sigterm, Kind::Kill9, Kind::ActiveFalse],
    };
    // CANAL_SOAK_KINDS=0,3 runs only those kinds (0 SIGTERM, 1 kill -9, 2 active:false,
    // 3 coordinator restart, 4 session expiry), e.g. to reproduce one finding.
    if let Ok(only) = std::env::var("CANAL_SOAK_KINDS") {
        let all = [
            Kind::Sigterm,
            Kind::Kill9,
            Kind::ActiveFalse,
            Kind::CoordRestart,
            Kind::SessionExpiry,
        ];
        kinds = only
            .split(',')
            .filter_map(|k| all.get(k.trim().parse::<usize>().ok()?).copied())
            .collect();
        assert!(!kinds.is_empty(), "CANAL_SOAK_KINDS={only}: no kind");
    }
    let mut rng = Rng::new();
    let mut rounds: Vec<Round> = Vec::new();
    let mut violations: Vec<String> = Vec::new();
    let mut thawed: Vec<(String, Instant, Instant)> = Vec::new();
    let n = failovers();
    for i in 0..n {
        let kind = kinds[i % kinds.len()];
        tokio::time::sleep(Duration::from_millis(800 + rng.below(700))).await;
        // Who is active now (it must be one of ours, and it must say so).
        let Some(idx) = active_index(&coord, &dest, &servers, Duration::from_secs(30)).await else {
            violations
                .push(format!("round {i}: no active server within 30 s before {}", kind.name()));
            break;
        };
        let other = 1 - idx;
        let at = since(t0, Instant::now());
        let t_action = Instant::now();
        let mut note = String::new();
        let limit = Duration::from_millis(SESSION_MS + DELAY_MS) + Duration::from_secs(15);
        match kind {
            Kind::Sigterm => signal(servers[idx].pid(), "TERM"),
            Kind::Kill9 => servers[idx].kill9(),
            Kind::ActiveFalse => {
                let data = format!("{{\"active\":false,\"address\":\"{}\"}}", servers[idx].addr);
                match coord.session().await {
                    Ok(s) => {
                        let p = path::server_running(&dest);
                        match s.get(&p).await {
                            Ok(Some(node)) => {
                                if let Err(e) = s.put(&p, data.as_bytes(), Some(node.version)).await
                                {
                                    note = format!("active:false write failed: {e}");
                                }
                            }
                            other => note = format!("running node read: {other:?}"),
                        }
                    }
                    Err(e) => note = format!("no session: {e}"),
                }
            }
            Kind::CoordRestart => {
                signal(servers[idx].pid(), "TERM");
                // Every other restart waits for the standby's "active: starting the instance"
                // line, so that the coordinator dies while the standby reads its clients,
                // cursors and schema history; the others land at a random point of the takeover.
                if (i / kinds.len()).is_multiple_of(2) {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let started = || {
                        servers[other]
                            .events
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|(t, e)| *e == Ev::ActivateStart && *t >= t_action)
                    };
                    while !started() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(rng.below(250))).await;
                }
                let t_kill = Instant::now();
                coord_server.kill();
                let raced = servers[other]
                    .events
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(t, e)| *e == Ev::ActivateStart && *t >= t_action && *t <= t_kill);
                tokio::task::block_in_place(|| coord_server.start_again());
                note = format!(
                    "coordinator down {:.2?} from {:.0} ms after SIGTERM; standby activation began {} the kill",
                    t_kill.elapsed(),
                    (t_kill - t_action).as_secs_f64() * 1000.0,
                    if raced { "before" } else { "after" }
                );
            }
            Kind::SessionExpiry => {
                signal(servers[idx].pid(), "STOP");
                servers[idx].mark(Ev::Frozen);
            }
        }
        let took = wait_takeover(&coord, &dest, &servers[other], limit).await;
        match took {
            Some(_) => {}
            None => violations.push(format!(
                "round {i} ({}): {} did not take over within {limit:?}",
                kind.name(),
                servers[other].label
            )),
        }
        let took = took.map(|_| t_action.elapsed());
        match kind {
            Kind::Sigterm | Kind::CoordRestart
                if !tokio::task::block_in_place(|| {
                    servers[idx].wait_exit(Duration::from_secs(20))
                }) =>
            {
                note.push_str(&format!(
                    "; {} did not exit within 20 s of SIGTERM (killed)",
                    servers[idx].label
                ));
                violations.push(format!(
                    "round {i} ({}): {} still running 20 s after SIGTERM",
                    kind.name(),
                    servers[idx].label
                ));
                servers[idx].kill9();
            }
            Kind::SessionExpiry => {
                // Stay frozen a little longer than the takeover, then wake it: it must step down.
                tokio::time::sleep(Duration::from_millis(500)).await;
                signal(servers[idx].pid(), "CONT");
                servers[idx].mark(Ev::Thawed);
                let t_cont = Instant::now();
                let mut stepped = None;
                while t_cont.elapsed() < Duration::from_secs(15) {
                    if status_active(&servers[idx].metrics, &dest).await == Some(false) {
                        stepped = Some(t_cont.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                thawed.push((
                    servers[idx].label.clone(),
                    t_cont,
                    t_cont + stepped.unwrap_or(Duration::from_secs(15)),
                ));
                match stepped {
                    Some(d) => note = format!("woken server stepped down {d:.2?} after SIGCONT"),
                    None => violations.push(format!(
                        "round {i}: {} still reports active 15 s after SIGCONT",
                        servers[idx].label
                    )),
                }
            }
            _ => {}
        }
        rounds.push(Round { t: t_action, kind, at, took, note });
        // Keep two servers.
        if matches!(kind, Kind::Sigterm | Kind::Kill9 | Kind::CoordRestart) {
            let fresh = Server::spawn(&confs[idx], label(idx), &logs, t0);
            let old = std::mem::replace(&mut servers[idx], fresh);
            retired.push(old);
        }
        *live.lock().unwrap() =
            servers.iter().map(|s| (s.label.clone(), s.metrics.clone())).collect();
        // Consumers: kill one every third round; replace any that exited by itself.
        if i % 3 == 2 {
            let k = (i / 3) % 2;
            consumers[k].kill();
            consumer_kills += 1;
            consumers[k] = spawn_consumer(&got);
        }
        for c in consumers.iter_mut() {
            if let Ok(Some(st)) = c.child.try_wait() {
                consumer_exits += 1;
                // Its last words are read to the end of its output first.
                if let Some(r) = c.reader.take() {
                    let _ = r.join();
                }
                let last: Vec<String> = c.tail.lock().unwrap().iter().cloned().collect();
                violations.push(format!(
                    "round {i} ({}): a consumer exited by itself ({st}); its last lines: {last:#?}",
                    kind.name()
                ));
                c.kill();
                *c = spawn_consumer(&got);
            }
        }
    }

    // Drain: stop the load and wait until everything written has arrived.
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let want: BTreeSet<i64> = match workload {
        Workload::Ha => {
            let total: i64 = txn_log.lock().unwrap().iter().map(|t| t.2).sum();
            (1..=total).collect()
        }
        Workload::Ddl => write_log.lock().unwrap().keys().copied().collect(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have: BTreeSet<i64> =
            got.lock().unwrap().iter().filter_map(|g| key_of(g, workload)).collect();
        if want.is_subset(&have) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for c in consumers.iter_mut() {
        c.kill();
    }
    stop_poll.store(true, Ordering::Relaxed);
    poller.await.unwrap();
    cursor_poller.await.unwrap();
    let end = Instant::now();

    // Never two active, from the logs: an activation of one server inside another's active
    // interval (frozen time excluded).
    let all: Vec<&Server> = retired.iter().chain(servers.iter()).collect();
    let mut log_ov = Vec::new();
    let intervals: Vec<(String, Vec<(Instant, Instant)>)> = all
        .iter()
        .map(|s| (s.label.clone(), log_intervals(&s.events.lock().unwrap(), end)))
        .collect();
    for (x, xi) in &intervals {
        for (y, yi) in &intervals {
            if x >= y {
                continue;
            }
            for a in xi {
                for b in yi {
                    let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
                    if lo < hi {
                        log_ov.push(Overlap { x: x.clone(), y: y.clone(), from: lo, to: hi });
                    }
                }
            }
        }
    }
    // A server frozen while active must not deliver anything once woken (the new owner has
    // taken over by then): rows on a connection to it from its SIGCONT until it activates again
    // (a later failover may legitimately make it the owner again).
    let mut served_woken: BTreeMap<String, u64> = BTreeMap::new();
    for s in &all {
        let events = s.events.lock().unwrap().clone();
        // From SIGCONT: what reaches the client while it is frozen was sent before.
        for (i, (f, _)) in events.iter().enumerate().filter(|(_, (_, e))| *e == Ev::Thawed) {
            let until =
                events[i..].iter().find(|(_, e)| *e == Ev::ActivateStart).map_or(end, |(t, _)| *t);
            let n = got
                .lock()
                .unwrap()
                .iter()
                .filter(|g| g.server == s.addr && g.at >= *f && g.at < until)
                .count();
            if n > 0 {
                *served_woken
                    .entry(format!("{} woken at {:.3} s", s.label, since(t0, *f)))
                    .or_default() += n as u64;
            }
        }
    }
    let status_ov = status_overlaps(&samples.lock().unwrap());
    // An overlap inside the window between SIGCONT and the woken server's step-down is the
    // frozen-server case: reported as a figure (it could not know), not counted as a violation;
    // what it did in that window is judged by the row, cursor and write checks.
    let woken = |o: &Overlap| {
        thawed.iter().any(|(l, a, b)| (*l == o.x || *l == o.y) && o.from <= *b && *a <= o.to)
    };
    let show = |o: &Overlap| {
        format!(
            "{} and {} both active {:.3}-{:.3} s ({:.0} ms)",
            o.x,
            o.y,
            since(t0, o.from),
            since(t0, o.to),
            (o.to - o.from).as_secs_f64() * 1000.0
        )
    };
    let (status_woken, status_ov): (Vec<Overlap>, Vec<Overlap>) =
        status_ov.into_iter().partition(|o| woken(o));
    let (log_woken, log_ov): (Vec<Overlap>, Vec<Overlap>) =
        log_ov.into_iter().partition(|o| woken(o));
    let status_ov: Vec<String> = status_ov.iter().map(show).collect();
    let log_overlaps: Vec<String> = log_ov.iter().map(show).collect();
    let woken_ms = log_woken
        .iter()
        .chain(&status_woken)
        .map(|o| (o.to - o.from).as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);

    // The report.
    let mut r = String::new();
    let _ = writeln!(
        r,
        "soak {wname} on {backend}: {} failovers in {:.0} s, destination {dest}",
        rounds.len(),
        since(t0, end)
    );
    let mut by_kind: BTreeMap<Kind, Vec<&Round>> = BTreeMap::new();
    for x in &rounds {
        by_kind.entry(x.kind).or_default().push(x);
    }
    for (k, rs) in &by_kind {
        let mut t: Vec<f64> = rs.iter().filter_map(|x| x.took.map(|d| d.as_secs_f64())).collect();
        t.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            t.get(((t.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
        };
        let _ = writeln!(
            r,
            "  {:<26} {:>3} failovers, takeover (action → new owner reports active) min {:.2} s / median {:.2} s / max {:.2} s",
            k.name(),
            rs.len(),
            pct(0.0),
            pct(0.5),
            pct(1.0)
        );
    }
    for (i, x) in rounds.iter().enumerate() {
        let _ = writeln!(
            r,
            "    #{i:<2} {:7.2} s {:<26} {}{}",
            x.at,
            x.kind.name(),
            x.took.map_or("no takeover".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            if x.note.is_empty() { String::new() } else { format!("  ({})", x.note) }
        );
    }
    let _ = writeln!(
        r,
        "  consumers: {nproc} processes, {consumer_kills} killed by the harness, {consumer_exits} exited by themselves"
    );
    if workload == Workload::Ddl {
        let _ = writeln!(
            r,
            "  ALTERs: {} ({:?})",
            ddl_stats.alters.load(Ordering::Relaxed),
            ddl_stats.alter_kinds.lock().unwrap()
        );
    }
    let got = got.lock().unwrap().clone();
    // Every delivery, for looking into a finding.
    let mut tsv = String::from("at_s\tconsumer\tconnection\tserver\tbatch\ttable\ttype\tkey\n");
    for g in &got {
        let _ = writeln!(
            tsv,
            "{:.3}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            since(t0, g.at),
            g.proc_,
            g.conn,
            g.server,
            g.batch,
            g.table,
            g.kind,
            key_of(g, workload).map_or("?".into(), |k| k.to_string())
        );
    }
    std::fs::write(logs.join("deliveries.tsv"), tsv).unwrap();
    let cx = Ctx {
        t0,
        rounds: rounds
            .iter()
            .enumerate()
            .map(|(i, x)| (x.t, format!("#{i} {}", x.kind.name())))
            .collect(),
    };
    let verdict = match workload {
        Workload::Ha => check_ha(&got, &txn_log.lock().unwrap(), &cx),
        Workload::Ddl => {
            let log = write_log.lock().unwrap().clone();
            check_ddl(&got, &log, &cx)
        }
    };
    for l in &verdict.lines {
        let _ = writeln!(r, "  {l}");
    }
    violations.extend(verdict.violations);
    let _ = writeln!(
        r,
        "  never two active: {} definite /status overlaps, {} log-interval overlaps",
        status_ov.len(),
        log_overlaps.len()
    );
    let _ = writeln!(
        r,
        "  woken after session expiry (SIGCONT until step-down): {} log / {} /status overlaps with the new owner, longest {woken_ms:.0} ms",
        log_woken.len(),
        status_woken.len()
    );
    if !status_ov.is_empty() {
        violations.push(format!(
            "two active by /status: {}",
            status_ov.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    if !log_overlaps.is_empty() {
        violations.push(format!(
            "two active by the logs: {}",
            log_overlaps.iter().take(8).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    let _ = writeln!(
        r,
        "  rows delivered by a woken server (after SIGCONT, before it owned the destination again): {}",
        served_woken.values().sum::<u64>()
    );
    if !served_woken.is_empty() {
        violations.push(format!(
            "a deposed (frozen, then woken) server delivered rows: {served_woken:?}"
        ));
    }
    let regressions = regressions.lock().unwrap().clone();
    let _ = writeln!(r, "  cursor moved backwards: {} times", regressions.len());
    if !regressions.is_empty() {
        violations.push(format!(
            "cursor moved backwards: {}",
            regressions.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    let (mut write_failed, mut activate_failed) = (0, 0);
    for s in &all {
        for (_, e) in s.events.lock().unwrap().iter() {
            match e {
                Ev::WriteFailed => write_failed += 1,
                Ev::ActivateFailed => activate_failed += 1,
                _ => {}
            }
        }
    }
    let _ = writeln!(
        r,
        "  server logs: {activate_failed} failed activations, {write_failed} failed coordinator writes (logs in {})",
        logs.display()
    );
    let _ = writeln!(r, "  VIOLATIONS: {}", violations.len());
    for v in &violations {
        let _ = writeln!(r, "   - {v}");
    }
    let mut notable = String::new();
    for s in &all {
        for l in s.notable.lock().unwrap().iter().take(30) {
            let _ = writeln!(notable, "{}: {l}", s.label);
        }
    }
    eprintln!("{r}");
    std::fs::write(
        out_dir.join(format!("{wname}-{backend}.txt")),
        format!("{r}\nserver warnings (first 30 per process):\n{notable}"),
    )
    .unwrap();

    drop(servers);
    drop(retired);
    coord.close().await;
    drop(coord_server);
    assert!(
        violations.is_empty(),
        "soak {wname} on {backend}: {} violations (report above)",
        violations.len()
    );
    let _ = std::fs::remove_dir_all(root.join("a"));
    let _ = std::fs::remove_dir_all(root.join("b"));
}

fn client_bin() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_canal-server")).parent()?.to_path_buf();
    let bin = dir.join("canal-client");
    if bin.exists() {
        return Some(bin);
    }
    panic!("{} is missing: build it first (cargo xtask soak does)", bin.display());
}

/// The index of the server that owns the running node and reports active in `/status`.
async fn active_index(
    coord: &Coordinator,
    dest: &str,
    servers: &[Server],
    limit: Duration,
) -> Option<usize> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some((addr, _)) = owner(coord, dest).await
            && let Some(i) = servers.iter().position(|s| s.addr == addr)
            && status_active(&servers[i].metrics, dest).await == Some(true)
        {
            return Some(i);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Waits until `s` owns the running node and reports the destination active.
async fn wait_takeover(
    coord: &Coordinator,
    dest: &str,
    s: &Server,
    limit: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if owner(coord, dest).await.is_some_and(|(a, _)| a == s.addr)
            && status_active(&s.metrics, dest).await == Some(true)
        {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: run by `cargo xtask soak`"]
async fn soak_ha_zookeeper() {
    soak("zk", Workload::Ha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: run by `cargo xtask soak`"]
async fn soak_ha_etcd() {
    soak("etcd", Workload::Ha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: run by `cargo xtask soak`"]
async fn soak_ddl_zookeeper() {
    soak("zk", Workload::Ddl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: run by `cargo xtask soak`"]
async fn soak_ddl_etcd() {
    soak("etcd", Workload::Ddl).await;
}
