//! `cargo xtask bench`: one generated binlog of ≥ 1 M row images on a 10-column mixed-type table,
//! measured in one run, side by side on the same machine:
//! * `decode`: text vs text, `canal-server decode` printing FlatMessage JSON (by default, which
//!   renders on CPUs - 1 threads beside the decoding one, and on one thread) and whole entries as
//!   JSON, beside `mysqlbinlog -v --base64-output=DECODE-ROWS` on the same files (every
//!   process's output to /dev/null, the tools interleaved round by round, medians, ratios within
//!   each round); plus `decode --format count` (binlog → Canal entries, nothing printed), and
//!   decode's peak RSS over one file beside all of them (an error if it grows with the input);
//! * `e2e`: MariaDB → `canal-server run` → a client that acks every batch (`canal-client tail`),
//!   with the server's peak RSS;
//! * `mq`: MariaDB → `canal-server run` in kafka / rabbitMQ mode → a private broker, beside a
//!   producer-only baseline of the same messages into the same kind of broker (`bench::mq`).
//!
//! Results go to stdout and, as markdown plus an SVG chart, to `target/bench/`. Figures are
//! wall-clock best-of-N on a shared machine: compare ratios from the same run, not absolutes.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::services::{self, Kind};

mod latency;
mod mq;

const TABLE: &str = "CREATE TABLE canal_bench.t (id BIGINT PRIMARY KEY, a INT, b INT UNSIGNED, \
    c VARCHAR(64), d DECIMAL(12,2), e DATETIME(3), f TIMESTAMP NULL, g TEXT, h TINYINT, i DOUBLE)";

/// One measured tool.
#[derive(Debug, Clone)]
struct Measure {
    name: String,
    rows: u64,
    secs: f64,
    peak_rss_kb: Option<u64>,
    /// CPU seconds (user + system) per process, when measured.
    cpu: Vec<(&'static str, f64)>,
    /// Anything else worth a line (end-to-end memory split).
    note: String,
    /// × mysqlbinlog, the median of the per-round ratios (when measured round by round).
    ratio: Option<f64>,
}

impl Measure {
    fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.secs.max(1e-9)
    }
}

/// Which measurements to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Only {
    All,
    Decode,
    E2e,
    Mq,
    /// The text paths: decode side by side and end to end (no latency, no MQ).
    Text,
}

/// Entry point: `cargo xtask bench [--rows N] [--runs N] [--only decode|e2e|mq|text]`.
pub fn run(args: &[&str]) -> Result<()> {
    let mut rows: u64 = 1_000_000;
    let mut runs = 3;
    let mut only = Only::All;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--rows" => rows = it.next().context("--rows needs a number")?.parse()?,
            "--runs" => runs = it.next().context("--runs needs a number")?.parse()?,
            "--only" => {
                only = match *it.next().context("--only needs decode, e2e, mq or text")? {
                    "decode" => Only::Decode,
                    "e2e" => Only::E2e,
                    "mq" => Only::Mq,
                    "text" => Only::Text,
                    other => bail!("--only {other}: use decode, e2e, mq or text"),
                }
            }
            other => {
                bail!(
                    "unknown bench option `{other}` (use --rows N, --runs N, --only decode|e2e|mq|text)"
                )
            }
        }
    }
    let started = services::up(&[Kind::Mariadb])?;
    let result = bench(rows, runs, only);
    if !started.is_empty() {
        let _ = services::down(&started);
    }
    result
}

fn env_value(env: &[(String, String)], key: &str) -> Result<String> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .with_context(|| format!("{key} missing from the services env file"))
}

/// `mysql://user[:pass]@host:port` → (user, pass, host, port).
fn parse_url(url: &str) -> Result<(String, String, String, u16)> {
    let rest = url.strip_prefix("mysql://").context("not a mysql:// URL")?;
    let (cred, hostport) = rest.rsplit_once('@').context("URL without user")?;
    let (user, pass) = cred.split_once(':').unwrap_or((cred, ""));
    let (host, port) = hostport.rsplit_once(':').context("URL without port")?;
    Ok((user.into(), pass.into(), host.into(), port.trim_end_matches('/').parse()?))
}

fn sql(admin: &(String, String, String, u16), statement: &str) -> Result<String> {
    let (user, pass, host, port) = admin;
    let mut cmd = Command::new("mariadb");
    cmd.args(["-h", host, "-P", &port.to_string(), "-u", user, "--batch", "--skip-column-names"]);
    if !pass.is_empty() {
        cmd.arg(format!("-p{pass}"));
    }
    let out = cmd.args(["-e", statement]).output().context("running the mariadb client")?;
    if !out.status.success() {
        bail!("SQL failed: {statement}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn bench(rows: u64, runs: usize, only: Only) -> Result<()> {
    let env = services::read_env(&services::env_file()?)?;
    let admin = parse_url(&env_value(&env, "CANAL_TEST_MYSQL_ADMIN")?)?;
    let replica = parse_url(&env_value(&env, "CANAL_TEST_MYSQL")?)?;
    let datadir = PathBuf::from(env_value(&env, "CANAL_TEST_MYSQL_DATADIR")?);
    let out_dir = services::target_dir()?.join("bench");
    std::fs::create_dir_all(&out_dir)?;

    eprintln!("==> generating {rows} row images");
    sql(&admin, "DROP DATABASE IF EXISTS canal_bench; CREATE DATABASE canal_bench")?;
    sql(&admin, TABLE)?;
    sql(&admin, "FLUSH BINARY LOGS")?;
    let status = sql(&admin, "SHOW MASTER STATUS")?;
    let start_file = status.split_whitespace().next().context("no SHOW MASTER STATUS")?.to_owned();
    let chunk = 100_000u64;
    let mut done = 0;
    while done < rows {
        let n = chunk.min(rows - done);
        sql(
            &admin,
            &format!(
                "USE canal_bench; INSERT INTO canal_bench.t SELECT seq, seq*7, seq*3, CONCAT('name-', seq), seq/100, \
                 '2024-01-02 03:04:05.678', FROM_UNIXTIME(1700000000 + seq), REPEAT('x', seq % 50), \
                 seq % 100, seq/3 FROM seq_{}_to_{}",
                done + 1,
                done + n
            ),
        )?;
        done += n;
    }
    sql(&admin, "FLUSH BINARY LOGS")?;
    let logs = sql(&admin, "SHOW BINARY LOGS")?;
    let names: Vec<String> =
        logs.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    let from = names.iter().position(|n| *n == start_file).context("start file not listed")?;
    let files: Vec<PathBuf> =
        names[from..names.len() - 1].iter().map(|n| datadir.join(n)).collect();
    let bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    eprintln!("==> {} binlog file(s), {:.1} MB", files.len(), bytes as f64 / 1e6);

    eprintln!("==> building release binaries");
    services::apt::ensure_build_deps()?;
    let ok = Command::new(services::cargo_bin())
        .args(["build", "--release", "-p", "canal-server", "-p", "canal-client"])
        .current_dir(services::workspace_root())
        .status()?;
    if !ok.success() {
        bail!("release build failed");
    }
    let release = services::target_dir()?.join("release");
    let server_bin = release.join("canal-server");
    let client_bin = release.join("canal-client");

    let mut results = Vec::new();
    let mut latencies = Vec::new();
    let mut mq_results = Vec::new();
    if matches!(only, Only::All | Only::Decode | Only::Text) {
        decode_side_by_side(
            &mut results,
            runs,
            rows,
            &server_bin,
            &files,
            &out_dir,
            &replica,
            &start_file,
            only != Only::Text,
        )?;
    }
    if matches!(only, Only::All | Only::E2e | Only::Text) {
        eprintln!("==> end to end: MariaDB → canal-server → canal-client (ack every batch)");
        // Median of `runs` with Canal's default store budget and tail's defaults; the JSON
        // client once more with a quarter of it (peak RSS under back-pressure), and once with
        // Canal's GET rule (`--linger-ms 0`: the last, partial batch waits out --wait-ms).
        let variants = [("count", None, true), ("json", None, true), ("json", Some(4 << 20), true)];
        for (format, budget, linger) in variants.into_iter().chain([("json", None, false)]) {
            let n = if budget.is_none() && linger { runs.max(1) } else { 1 };
            let mut all: Vec<Measure> = Vec::new();
            for _ in 0..n {
                let m = end_to_end(&E2e {
                    server_bin: &server_bin,
                    client_bin: &client_bin,
                    out_dir: &out_dir,
                    replica: &replica,
                    start_file: &start_file,
                    rows,
                    format,
                    budget,
                    linger,
                })?;
                all.push(m);
            }
            all.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            let n = all.len();
            if n > 0 {
                let mut m = all.swap_remove(n / 2);
                if n > 1 {
                    m.name = format!("{} (median of {n})", m.name);
                }
                results.push(m);
            }
        }
    }
    if matches!(only, Only::All | Only::E2e) {
        eprintln!("==> latency: commit on MariaDB → row printed by canal-client tail");
        for (batch_size, wait_ms, linger_ms) in [(1, 100, 0), (1024, 100, 0), (1024, 100, 1)] {
            let l = latency::measure(&latency::Run {
                server_bin: &server_bin,
                client_bin: &client_bin,
                out_dir: &out_dir,
                admin: &admin,
                replica: &replica,
                rows: 1000,
                gap: Duration::from_millis(5),
                batch_size,
                wait_ms,
                linger_ms,
            })?;
            eprintln!(
                "    {}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.name, l.p50, l.p99, l.max
            );
            latencies.push(l);
        }
    }
    if matches!(only, Only::All | Only::Mq) {
        eprintln!(
            "==> MQ: MariaDB → canal-server → broker, beside a producer-only baseline (median of {runs})"
        );
        let helper_bin = mq::build_helper(&release)?;
        use mq::{Broker, Variant};
        let v =
            |broker, flat, partitions, in_flight| Variant { broker, flat, partitions, in_flight };
        // The defaults, then protobuf with a wider in-flight window (one protobuf message per
        // store batch, so the default 8 batches are 8 messages awaiting confirmation).
        let variants = [
            v(Broker::Kafka, false, 1, None),
            v(Broker::Kafka, true, 1, None),
            v(Broker::Kafka, false, 3, None),
            v(Broker::Kafka, false, 1, Some(64)),
            v(Broker::Rabbitmq, false, 1, None),
            v(Broker::Rabbitmq, true, 1, None),
            v(Broker::Rabbitmq, false, 1, Some(64)),
        ];
        mq_results = mq::measure(&mq::Run {
            server_bin: &server_bin,
            helper_bin: &helper_bin,
            out_dir: &out_dir,
            replica: &replica,
            start_file: &start_file,
            rows,
            runs,
            variants: &variants,
        })?;
    }
    report(&results, &latencies, &mq_results, &out_dir, rows, bytes)
}

/// canal-rs decode, mysqlbinlog and python-mysql-replication over the same binlog.
#[allow(clippy::too_many_arguments)]
fn decode_side_by_side(
    results: &mut Vec<Measure>,
    runs: usize,
    rows: u64,
    server_bin: &Path,
    files: &[PathBuf],
    out_dir: &Path,
    replica: &(String, String, String, u16),
    start_file: &str,
    with_python: bool,
) -> Result<()> {
    let mysqlbinlog = if Command::new("mariadb-binlog").arg("--version").output().is_ok() {
        "mariadb-binlog"
    } else {
        "mysqlbinlog"
    };
    let decode = |args: &[&str]| {
        let mut cmd = Command::new(server_bin);
        cmd.arg("decode").args(args).args(files);
        cmd
    };
    let tools: Vec<(String, Command)> = vec![
        ("mysqlbinlog -v (DECODE-ROWS), text".into(), {
            let mut cmd = Command::new(mysqlbinlog);
            cmd.args(["-v", "--base64-output=DECODE-ROWS"]).args(files);
            cmd
        }),
        // The default renders on CPUs - 1 threads (at most 4) beside the decoding one.
        ("canal-rs decode, FlatMessage JSON".into(), decode(&[])),
        (
            "canal-rs decode --threads 0 (one thread), FlatMessage JSON".into(),
            decode(&["--threads", "0"]),
        ),
        ("canal-rs decode --format entry, Entry JSON".into(), decode(&["--format", "entry"])),
        (
            "canal-rs decode → Entry, nothing printed (--format count)".into(),
            decode(&["--format", "count"]),
        ),
    ];
    let mut measured = rounds(runs, rows, &tools)?;
    rss_independent_of_size(&mut measured[1], server_bin, files)?;
    results.extend(measured);
    if !with_python {
        return Ok(());
    }
    match pyrepl_venv(out_dir) {
        Ok(python) => {
            let script = services::workspace_root().join("xtask/python/pyrepl_count.py");
            let (user, pass, host, port) = &replica;
            let m = best_of(1, "python-mysql-replication 1.0.17", rows, || {
                let mut cmd = Command::new(&python);
                cmd.arg(&script).args([host.as_str(), &port.to_string(), user, pass]);
                cmd.args([start_file, "canal_bench", &rows.to_string()]);
                cmd
            })?;
            results.push(m);
        }
        Err(e) => eprintln!("    python-mysql-replication skipped: {e:#}"),
    }
    Ok(())
}

/// `decode`'s peak RSS over the smallest file beside `flat`'s over all of them (the same
/// command): memory must not grow with the input, whose entries are rendered and written as
/// they are decoded. Noted on `flat`; an error when the larger input took more than 1.25× the
/// memory (+2 MB for allocator noise).
fn rss_independent_of_size(flat: &mut Measure, server_bin: &Path, files: &[PathBuf]) -> Result<()> {
    let size = |f: &PathBuf| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
    let total: u64 = files.iter().map(size).sum();
    // The smallest file that still holds rows (the last one of a run may be a few hundred bytes).
    let Some(small) = files.iter().filter(|f| size(f) > 1 << 20).min_by_key(|f| size(f)) else {
        return Ok(());
    };
    let m = best_of(1, "canal-rs decode, FlatMessage JSON, one file", 0, || {
        let mut cmd = Command::new(server_bin);
        cmd.arg("decode").arg(small);
        cmd
    })?;
    let (Some(one), Some(all)) = (m.peak_rss_kb, flat.peak_rss_kb) else { return Ok(()) };
    let mb = |b: u64| b as f64 / 1e6;
    flat.note = format!(
        "peak RSS {:.1} MB over {:.1} MB of binlog, {:.1} MB over one {:.1} MB file",
        all as f64 / 1024.0,
        mb(total),
        one as f64 / 1024.0,
        mb(size(small))
    );
    eprintln!("    {}", flat.note);
    if all as f64 > one as f64 * 1.25 + 2048.0 {
        bail!("decode's memory grows with its input: {}", flat.note);
    }
    Ok(())
}

/// Runs every tool once per round, `runs` rounds (stdout to /dev/null), and reports each tool's
/// median time, peak RSS (from `/usr/bin/time`), and its median ratio to the first tool's time
/// within a round (tools interleaved, so a busy moment of the shared machine hits all alike).
fn rounds(runs: usize, rows: u64, tools: &[(String, Command)]) -> Result<Vec<Measure>> {
    let time = Path::new("/usr/bin/time").exists();
    let runs = runs.max(1);
    let mut secs = vec![Vec::new(); tools.len()];
    let mut rss = vec![None; tools.len()];
    for _ in 0..runs {
        for (i, (name, inner)) in tools.iter().enumerate() {
            let mut cmd = if time {
                let mut c = Command::new("/usr/bin/time");
                c.args(["-f", "%M"]).arg(inner.get_program()).args(inner.get_args());
                c
            } else {
                let mut c = Command::new(inner.get_program());
                c.args(inner.get_args());
                c
            };
            let t0 = Instant::now();
            let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
            secs[i].push(t0.elapsed().as_secs_f64());
            if !out.status.success() {
                bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let kb: Option<u64> = time
                .then(|| String::from_utf8_lossy(&out.stderr).lines().last()?.trim().parse().ok())
                .flatten();
            rss[i] = rss[i].max(kb);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = Vec::new();
    for (i, (name, _)) in tools.iter().enumerate() {
        let ratios: Vec<f64> = secs[0].iter().zip(&secs[i]).map(|(base, t)| base / t).collect();
        let m = Measure {
            name: format!("{name}, median of {runs}"),
            rows,
            secs: median(secs[i].clone()),
            peak_rss_kb: rss[i],
            cpu: Vec::new(),
            note: String::new(),
            ratio: Some(median(ratios)),
        };
        eprintln!(
            "    {}: {:.2} s, {:.0} rows/s, {:.2}× {}",
            m.name,
            m.secs,
            m.rows_per_sec(),
            m.ratio.unwrap_or(0.0),
            tools[0].0
        );
        out.push(m);
    }
    Ok(out)
}

/// Runs `make()` `runs` times (stdout discarded), keeps the fastest, with peak RSS from
/// `/usr/bin/time` when available.
fn best_of(runs: usize, name: &str, rows: u64, make: impl Fn() -> Command) -> Result<Measure> {
    let mut best: Option<Measure> = None;
    let time = Path::new("/usr/bin/time").exists();
    for _ in 0..runs.max(1) {
        let inner = make();
        let mut cmd = if time {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "%M"]).arg(inner.get_program()).args(inner.get_args());
            c
        } else {
            inner
        };
        let t0 = Instant::now();
        let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
        let secs = t0.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let rss = time
            .then(|| String::from_utf8_lossy(&out.stderr).lines().last()?.trim().parse().ok())
            .flatten();
        if best.as_ref().is_none_or(|b| secs < b.secs) {
            best = Some(Measure {
                name: name.into(),
                rows,
                secs,
                peak_rss_kb: rss,
                cpu: Vec::new(),
                note: String::new(),
                ratio: None,
            });
        }
    }
    let m = best.context("no run")?;
    eprintln!("    {}: {:.2} s, {:.0} rows/s", m.name, m.secs, m.rows_per_sec());
    Ok(m)
}

/// A venv with PyPI `mysql-replication` under `target/bench/`, built once.
fn pyrepl_venv(out_dir: &Path) -> Result<PathBuf> {
    let venv = out_dir.join("pyrepl-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("ok");
    if marker.exists() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status()?;
    if !ok.success() {
        bail!("python3 -m venv failed");
    }
    let ok = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "mysql-replication==1.0.17",
        ])
        .status()?;
    if !ok.success() {
        bail!("pip install mysql-replication failed");
    }
    std::fs::write(&marker, "")?;
    Ok(python)
}

/// One end-to-end run's settings.
struct E2e<'a> {
    server_bin: &'a Path,
    client_bin: &'a Path,
    out_dir: &'a Path,
    replica: &'a (String, String, String, u16),
    start_file: &'a str,
    rows: u64,
    /// `canal-client tail --format`: `count` (every entry decoded, rows counted from the
    /// RowChange framing) or `json` (every column decoded, one FlatMessage JSON line per row
    /// change, to /dev/null).
    format: &'a str,
    /// The store's memory budget in bytes (`None`: the default, 16 MiB).
    budget: Option<usize>,
    /// `tail`'s default GET linger (false: `--linger-ms 0`, Canal's GET rule).
    linger: bool,
}

/// A `canal-server run` on local coordination with one destination, `bench`, started at a
/// binlog position; stopped (TERM, then KILL) when dropped.
struct BenchServer {
    child: std::process::Child,
    pid: u32,
    addr: String,
    /// The `/metrics` address (`host:port`).
    metrics: String,
}

impl BenchServer {
    fn start(
        server_bin: &Path,
        out_dir: &Path,
        replica: &(String, String, String, u16),
        (journal, position): (&str, u64),
        budget: Option<usize>,
        server_extra: &str,
        instance_extra: &str,
    ) -> Result<BenchServer> {
        let conf = out_dir.join("conf");
        let _ = std::fs::remove_dir_all(&conf);
        let _ = std::fs::remove_dir_all(out_dir.join("data"));
        std::fs::create_dir_all(conf.join("bench"))?;
        std::fs::write(
            conf.join("canal.toml"),
            format!(
                "ip = \"127.0.0.1\"\nport = 0\n{}data_dir = \"{}\"\n{server_extra}",
                // `server_extra` may choose a metrics port (top-level keys first).
                if server_extra.starts_with("metrics_port") { "" } else { "metrics_port = 0\n" },
                out_dir.join("data").display()
            ),
        )?;
        let (user, pass, host, port) = replica;
        std::fs::write(
            conf.join("bench").join("instance.toml"),
            format!(
                "[master]\naddress = \"{host}:{port}\"\njournal_name = \"{journal}\"\n\
                 position = {position}\n[db]\nusername = \"{user}\"\npassword = \"{pass}\"\n\
                 [filter]\nregex = 'canal_bench\\..*'\n{}{instance_extra}",
                budget.map(|b| format!("[memory]\nmemory_budget = {b}\n")).unwrap_or_default()
            ),
        )?;
        let mut child = Command::new(server_bin)
            .args(["run", "--conf"])
            .arg(&conf)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting canal-server")?;
        let pid = child.id();
        let mut line = String::new();
        let stdout = child.stdout.take().context("server stdout")?;
        let mut server = BenchServer { child, pid, addr: String::new(), metrics: String::new() };
        BufReader::new(stdout).read_line(&mut line)?;
        server.addr =
            line.split_whitespace().nth(3).unwrap_or_default().trim_end_matches(',').to_owned();
        // "canal-server listening on ADDR, metrics on MADDR"
        server.metrics = line.split_whitespace().nth(6).unwrap_or_default().to_owned();
        if server.addr.is_empty() {
            bail!("canal-server did not say where it listens: {line:?}");
        }
        Ok(server)
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn end_to_end(e: &E2e<'_>) -> Result<Measure> {
    let E2e { server_bin, client_bin, out_dir, replica, start_file, rows, format, budget, linger } =
        *e;
    let server = BenchServer::start(server_bin, out_dir, replica, (start_file, 4), budget, "", "")?;
    let (pid, addr) = (server.pid, server.addr.clone());
    let mariadb_pid =
        services::running(Kind::Mariadb, &services::default_dir(Kind::Mariadb)?)?.map(|i| i.pid);
    let mariadb_cpu0 = mariadb_pid.and_then(proc_cpu_secs);
    let t0 = Instant::now();
    let time = Path::new("/usr/bin/time").exists();
    let mut client = if time {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%U %S"]).arg(client_bin);
        c
    } else {
        Command::new(client_bin)
    };
    let client = client
        .args(["tail", "--server", &addr, "--destination", "bench", "--batch-size", "1024"])
        .args(["--max", &rows.to_string(), "--format", format, "--timeout", "120"])
        .args(if linger { &[][..] } else { &["--linger-ms", "0"][..] })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let secs = t0.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    };
    let rss = kb("VmHWM:");
    // At the end the store is as full as it got (un-acked or unread entries of a slow client):
    // anonymous memory is what the budget bounds; file-backed is the mapped program.
    let rss_split = kb("RssAnon:").zip(kb("RssFile:"));
    let mut cpu = Vec::new();
    if let Some(c) = proc_cpu_secs(pid) {
        cpu.push(("server", c));
    }
    drop(server);
    let client = client.context("running canal-client")?;
    if !client.status.success() {
        bail!("canal-client tail failed: {}", String::from_utf8_lossy(&client.stderr));
    }
    let client_cpu: Option<f64> = String::from_utf8_lossy(&client.stderr)
        .lines()
        .last()
        .filter(|_| time)
        .map(|l| l.split_whitespace().filter_map(|x| x.parse::<f64>().ok()).sum());
    if let Some(c) = client_cpu {
        cpu.push(("client", c));
    }
    if let (Some(a), Some(b)) = (mariadb_cpu0, mariadb_pid.and_then(proc_cpu_secs)) {
        cpu.push(("mariadb", b - a));
    }
    let mut m = Measure {
        name: format!(
            "canal-rs end to end, client --format {format}{}{}",
            budget.map(|b| format!(", store {} MiB", b >> 20)).unwrap_or_default(),
            if linger { "" } else { ", --linger-ms 0 (Canal's GET rule)" }
        ),
        rows,
        secs,
        peak_rss_kb: rss,
        cpu,
        note: String::new(),
        ratio: None,
    };
    if let Some((anon, file)) = rss_split {
        m.note = format!(
            "RSS at the end {:.1} MB anonymous + {:.1} MB file-backed",
            anon as f64 / 1024.0,
            file as f64 / 1024.0
        );
    }
    eprintln!(
        "    {}: {:.2} s, {:.0} rows/s, server peak RSS {:?} KB, CPU {}",
        m.name,
        m.secs,
        m.rows_per_sec(),
        m.peak_rss_kb,
        cpu_text(&m.cpu)
    );
    Ok(m)
}

/// User + system CPU seconds of a live process, from `/proc/<pid>/stat`.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

fn cpu_text(cpu: &[(&str, f64)]) -> String {
    cpu.iter().map(|(who, s)| format!("{who} {s:.2} s")).collect::<Vec<_>>().join(", ")
}

fn report(
    results: &[Measure],
    latencies: &[latency::Latency],
    mq_results: &[mq::MqResult],
    out_dir: &Path,
    rows: u64,
    bytes: u64,
) -> Result<()> {
    let base =
        results.iter().find(|m| m.name.starts_with("mysqlbinlog")).map(Measure::rows_per_sec);
    let mut md = String::new();
    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    writeln!(md, "# canal-rs benchmark\n")?;
    writeln!(
        md,
        "{rows} row images, {:.1} MB of binlog, 10-column table; {cores} cores, {host}.\n",
        bytes as f64 / 1e6
    )?;
    writeln!(md, "| tool | seconds | rows/s | × mysqlbinlog | peak RSS | CPU |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---|")?;
    for m in results {
        let ratio = m
            .ratio
            .or_else(|| base.map(|b| m.rows_per_sec() / b))
            .map(|r| format!("{r:.2}"))
            .unwrap_or_default();
        let rss = m
            .peak_rss_kb
            .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
            .unwrap_or_else(|| "–".into());
        writeln!(
            md,
            "| {} | {:.2} | {:.0} | {ratio} | {rss} | {} |",
            m.name,
            m.secs,
            m.rows_per_sec(),
            cpu_text(&m.cpu)
        )?;
    }
    for m in results.iter().filter(|m| !m.note.is_empty()) {
        writeln!(md, "\n{}: {}.", m.name, m.note)?;
    }
    if results.iter().any(|m| m.name.contains("end to end")) {
        writeln!(
            md,
            "\nEnd to end: peak RSS is the server's (store budget 16 MiB, Canal's default, unless \
             noted); CPU is user + system seconds of each process during the run."
        )?;
    }
    if !latencies.is_empty() {
        writeln!(md, "\nLatency, commit on MariaDB → row printed by `canal-client tail`:\n")?;
        writeln!(md, "| load, client | rows | p50 | p99 | max |")?;
        writeln!(md, "|---|---:|---:|---:|---:|")?;
        for l in latencies {
            writeln!(
                md,
                "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
                l.name, l.rows, l.p50, l.p99, l.max
            )?;
        }
    }
    if !mq_results.is_empty() {
        mq_report(&mut md, mq_results)?;
    }
    print!("{md}");
    std::fs::write(out_dir.join("results.md"), &md)?;
    std::fs::write(out_dir.join("results.svg"), svg(results))?;
    eprintln!("==> wrote {0}/results.md and {0}/results.svg", out_dir.display());
    Ok(())
}

fn mq_report(md: &mut String, mq_results: &[mq::MqResult]) -> Result<()> {
    let runs = mq_results.iter().map(|r| r.canal.len()).max().unwrap_or(0);
    writeln!(
        md,
        "\nMQ mode, MariaDB → canal-server → broker (first to last message confirmed by the \
         broker, every row read back), beside a producer-only baseline of the same messages \
         (count, sizes, partitions, producer settings) into the same kind of broker; median of \
         {runs} runs, ratio = median of canal/baseline within each run:\n"
    )?;
    writeln!(
        md,
        "| broker, format | messages | MB | canal-server rows/s | baseline rows/s | canal / baseline | server CPU | broker CPU (canal, baseline) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    let secs = |c: Option<f64>| c.map(|c| format!("{c:.2} s")).unwrap_or_else(|| "–".into());
    for r in mq_results {
        writeln!(
            md,
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.2} | {} | {}, {} |",
            r.variant.name(),
            r.messages(),
            r.megabytes(),
            r.canal_rows_per_sec(),
            r.baseline_rows_per_sec(),
            r.ratio(),
            secs(r.server_cpu()),
            secs(r.broker_cpu(false)),
            secs(r.broker_cpu(true)),
        )?;
    }
    for r in mq_results {
        let n: u64 = r.canal.iter().map(|s| s.unverified).max().unwrap_or(0);
        if n > 0 {
            writeln!(
                md,
                "\n{}: up to {n} of {} messages could not be read back from noida-db (its \
                 \"Bad message format\" batches), so their rows were not counted there; the end is \
                 canal-server's /metrics saying every row was stored and acked (acks follow \
                 broker confirms), with its confirmed message count equal to the broker's.",
                r.variant.name(),
                r.messages()
            )?;
        }
    }
    writeln!(
        md,
        "\nBrokers: a private noida-db (Kafka protocol; a fresh one per measurement) and a private \
         RabbitMQ (a fresh durable queue per measurement, persistent messages, publisher \
         confirms). Kafka: acks=all, idempotent, canal-server's default librdkafka settings on \
         both sides."
    )?;
    Ok(())
}

/// A horizontal bar chart of rows/s.
fn svg(results: &[Measure]) -> String {
    let max = results.iter().map(Measure::rows_per_sec).fold(1.0, f64::max);
    let (w, bar, gap, left) = (760.0, 28.0, 14.0, 300.0);
    let h = 50.0 + results.len() as f64 * (bar + gap);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">rows per second (higher is better)</text>\n"
    );
    for (i, m) in results.iter().enumerate() {
        let y = 40.0 + i as f64 * (bar + gap);
        let len = (w - left - 110.0) * m.rows_per_sec() / max;
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.0}\">{}</text><rect x=\"{left}\" y=\"{y:.0}\" width=\"{len:.0}\" height=\"{bar}\" fill=\"{}\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\">{:.0}</text>",
            y + bar * 0.65,
            m.name.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"),
            if m.name.starts_with("canal-rs") { "#2b7bb9" } else { "#999" },
            left + len + 6.0,
            y + bar * 0.65,
            m.rows_per_sec()
        );
    }
    s.push_str("</svg>\n");
    s
}
