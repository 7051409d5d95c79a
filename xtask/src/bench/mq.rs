//! MQ rows of `cargo xtask bench`: MariaDB → `canal-server run` in kafka / rabbitMQ mode → a
//! private broker, beside a producer-only baseline (the same number of messages of the same
//! sizes, same producer settings) into a broker of the same kind, so that the broker's own limit
//! is visible. Both sides are timed by the same watcher (`canal-server/examples/mq_bench.rs`),
//! from the first to the last message the broker confirmed; the canal side is only counted once
//! the watcher has read every expected row back.
//!
//! Each Kafka measurement gets a fresh noida-db (it snapshots its whole state about once a
//! second, so an older broker would be slower); RabbitMQ runs once, with a fresh queue per
//! measurement.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{BenchServer, proc_cpu_secs};
use crate::services::{self, Instance, Kind, Settings};

/// Which broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    Kafka,
    Rabbitmq,
}

/// One MQ configuration measured.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub broker: Broker,
    pub flat: bool,
    /// Kafka partitions; above 1 the topic is hashed by primary key (`partitionHash`).
    pub partitions: u32,
    /// `[mq] max_in_flight_batches` when not the default.
    pub in_flight: Option<usize>,
}

impl Variant {
    pub fn name(&self) -> String {
        let broker = match self.broker {
            Broker::Kafka => "Kafka",
            Broker::Rabbitmq => "RabbitMQ",
        };
        let hash = if self.partitions > 1 {
            format!(", {} partitions hashed by id", self.partitions)
        } else {
            String::new()
        };
        let window = self.in_flight.map(|n| format!(", {n} batches in flight")).unwrap_or_default();
        format!("{broker}, flatMessage={}{hash}{window}", self.flat)
    }

    fn format(&self) -> &'static str {
        if self.flat { "flat" } else { "protobuf" }
    }
}

/// What the watcher saw in one measurement.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub secs: f64,
    pub messages: u64,
    pub bytes: u64,
    /// canal-server's CPU seconds (user + system) over the whole run.
    pub server_cpu: Option<f64>,
    /// The broker's CPU seconds over the whole run.
    pub broker_cpu: Option<f64>,
    /// Messages the watcher could not read back (rows not counted in them).
    pub unverified: u64,
}

/// The measurements of one variant: canal-server and baseline, pairwise from the same run.
#[derive(Clone, Debug)]
pub struct MqResult {
    pub variant: Variant,
    pub rows: u64,
    pub canal: Vec<Sample>,
    pub baseline: Vec<Sample>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

impl MqResult {
    /// Median rows/s of canal-server.
    pub fn canal_rows_per_sec(&self) -> f64 {
        median(self.canal.iter().map(|s| self.rows as f64 / s.secs.max(1e-9)).collect())
    }
    /// Median rows/s of the baseline (the rows the same messages carry).
    pub fn baseline_rows_per_sec(&self) -> f64 {
        median(self.baseline.iter().map(|s| self.rows as f64 / s.secs.max(1e-9)).collect())
    }
    /// Median over runs of canal / baseline within one run.
    pub fn ratio(&self) -> f64 {
        median(self.canal.iter().zip(&self.baseline).map(|(c, b)| b.secs / c.secs).collect())
    }
    pub fn messages(&self) -> u64 {
        self.canal.first().map_or(0, |s| s.messages)
    }
    pub fn megabytes(&self) -> f64 {
        self.canal.first().map_or(0.0, |s| s.bytes as f64 / 1e6)
    }
    pub fn server_cpu(&self) -> Option<f64> {
        let v: Vec<f64> = self.canal.iter().filter_map(|s| s.server_cpu).collect();
        (!v.is_empty()).then(|| median(v))
    }
    pub fn broker_cpu(&self, baseline: bool) -> Option<f64> {
        let v: Vec<f64> = if baseline { &self.baseline } else { &self.canal }
            .iter()
            .filter_map(|s| s.broker_cpu)
            .collect();
        (!v.is_empty()).then(|| median(v))
    }
}

/// The bench's settings for the MQ rows.
pub struct Run<'a> {
    pub server_bin: &'a Path,
    pub helper_bin: &'a Path,
    pub out_dir: &'a Path,
    pub replica: &'a (String, String, String, u16),
    pub start_file: &'a str,
    pub rows: u64,
    pub runs: usize,
    pub variants: &'a [Variant],
}

/// A private broker instance, stopped (and its directory removed) when dropped.
struct PrivateBroker {
    kind: Kind,
    inst: Instance,
}

impl PrivateBroker {
    fn start(kind: Kind, dir: &Path) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        let inst = services::start_instance(kind, dir, None, &Settings::new(), false)?;
        Ok(Self { kind, inst })
    }

    fn endpoint(&self) -> Result<String> {
        let key = match self.kind {
            Kind::Kafka => "CANAL_TEST_KAFKA",
            _ => "CANAL_TEST_RABBITMQ",
        };
        super::env_value(&self.inst.env, key)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Err(e) = services::stop_instance(self.kind, &self.inst.dir) {
            eprintln!("    stopping the bench's {}: {e:#}", self.kind);
        }
        let _ = std::fs::remove_dir_all(&self.inst.dir);
    }
}

/// A watcher process that said `ready`.
struct Watcher {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Watcher {
    fn start(mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the mq_bench watcher")?;
        let mut stdout = BufReader::new(child.stdout.take().context("watcher stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the watcher did not get ready: {line:?}");
        }
        Ok(Self { child, stdout })
    }

    /// Waits for the watcher's result line.
    fn finish(mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the watcher failed ({status})");
        }
        serde_json::from_str(line.trim()).with_context(|| format!("watcher output {line:?}"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sample_of(v: &serde_json::Value) -> Result<Sample> {
    Ok(Sample {
        secs: v["secs"].as_f64().context("watcher output without secs")?,
        messages: v["messages"].as_u64().context("watcher output without messages")?,
        bytes: v["bytes"].as_u64().unwrap_or(0),
        server_cpu: None,
        broker_cpu: None,
        unverified: v["unverified"].as_u64().unwrap_or(0),
    })
}

/// Runs every variant `runs` times, canal-server and baseline back to back in each run.
pub fn measure(r: &Run<'_>) -> Result<Vec<MqResult>> {
    let rabbit = if r.variants.iter().any(|v| v.broker == Broker::Rabbitmq) {
        Some(PrivateBroker::start(Kind::Rabbitmq, &r.out_dir.join("mq-rabbitmq"))?)
    } else {
        None
    };
    let mut results = Vec::new();
    for (vi, v) in r.variants.iter().enumerate() {
        let mut res =
            MqResult { variant: *v, rows: r.rows, canal: Vec::new(), baseline: Vec::new() };
        for run in 0..r.runs.max(1) {
            let name = format!("bench-{vi}-{run}-{}", std::process::id());
            let sizes = r.out_dir.join("mq-sizes.txt");
            let canal = one(r, v, &name, rabbit.as_ref(), Side::Canal { sizes: &sizes })?;
            let base = one(
                r,
                v,
                &format!("{name}-base"),
                rabbit.as_ref(),
                Side::Baseline { sizes: &sizes, messages: canal.messages },
            )?;
            eprintln!(
                "    {}: canal-server {:.2} s ({:.0} rows/s, {} messages, {:.1} MB), baseline {:.2} s ({:.0} rows/s): {:.2}",
                v.name(),
                canal.secs,
                r.rows as f64 / canal.secs,
                canal.messages,
                canal.bytes as f64 / 1e6,
                base.secs,
                r.rows as f64 / base.secs,
                base.secs / canal.secs,
            );
            res.canal.push(canal);
            res.baseline.push(base);
        }
        results.push(res);
    }
    drop(rabbit);
    Ok(results)
}

enum Side<'a> {
    /// canal-server publishes; the watcher writes the messages' sizes to `sizes`.
    Canal { sizes: &'a Path },
    /// The producer-only baseline replays `sizes`.
    Baseline { sizes: &'a Path, messages: u64 },
}

/// One measurement into a fresh topic (and, for Kafka, a fresh broker) or queue.
fn one(
    r: &Run<'_>,
    v: &Variant,
    name: &str,
    rabbit: Option<&PrivateBroker>,
    side: Side<'_>,
) -> Result<Sample> {
    let kafka = match v.broker {
        Broker::Kafka => Some(PrivateBroker::start(Kind::Kafka, &r.out_dir.join("mq-kafka"))?),
        Broker::Rabbitmq => None,
    };
    let broker = match (&kafka, rabbit) {
        (Some(k), _) => k,
        (None, Some(b)) => b,
        (None, None) => bail!("no RabbitMQ started"),
    };
    let endpoint = broker.endpoint()?;
    let broker_cpu0 = proc_cpu_secs(broker.inst.pid);
    let mut watch = Command::new(r.helper_bin);
    match v.broker {
        Broker::Kafka => watch
            .args(["kafka-watch", "--bootstrap", &endpoint, "--topic", name])
            .args(["--partitions", &v.partitions.to_string()]),
        Broker::Rabbitmq => watch.args(["rabbit-watch", "--uri", &endpoint, "--queue", name]),
    };
    let metrics_file = r.out_dir.join("mq-metrics-addr");
    let _ = std::fs::remove_file(&metrics_file);
    match &side {
        Side::Canal { sizes } => watch
            .args(["--rows", &r.rows.to_string(), "--format", v.format(), "--sizes"])
            .arg(sizes)
            .arg("--metrics-file")
            .arg(&metrics_file),
        Side::Baseline { messages, .. } => watch.args(["--messages", &messages.to_string()]),
    };
    let watcher = Watcher::start(watch)?;
    let mut sample = match side {
        Side::Canal { .. } => {
            let (server_conf, instance_conf) = canal_conf(v, &endpoint, name)?;
            let server = BenchServer::start(
                r.server_bin,
                r.out_dir,
                r.replica,
                (r.start_file, 4),
                None,
                &server_conf,
                &instance_conf,
            )?;
            std::fs::write(&metrics_file, &server.metrics)?;
            let out = watcher.finish();
            let cpu = proc_cpu_secs(server.pid);
            drop(server);
            let mut s = sample_of(&out?)?;
            s.server_cpu = cpu;
            s
        }
        Side::Baseline { sizes, .. } => {
            let mut produce = Command::new(r.helper_bin);
            match v.broker {
                Broker::Kafka => produce.args(["kafka-produce", "--bootstrap", &endpoint]),
                Broker::Rabbitmq => produce.args(["rabbit-publish", "--uri", &endpoint]),
            };
            produce.arg(if v.broker == Broker::Kafka { "--topic" } else { "--queue" });
            produce.arg(name).arg("--sizes").arg(sizes);
            let t0 = Instant::now();
            let out = produce.stdout(Stdio::null()).output().context("running the baseline")?;
            if !out.status.success() {
                bail!("the baseline producer failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let mut s = sample_of(&watcher.finish()?)?;
            // The baseline's payloads are not canal messages: its bytes are the sizes replayed.
            s.bytes = 0;
            if t0.elapsed() > Duration::from_secs(600) {
                bail!("the baseline took more than 10 minutes");
            }
            s
        }
    };
    sample.broker_cpu = broker_cpu0.zip(proc_cpu_secs(broker.inst.pid)).map(|(a, b)| b - a);
    Ok(sample)
}

/// The `[mq]` of canal.toml and of the destination's instance.toml.
fn canal_conf(v: &Variant, endpoint: &str, topic: &str) -> Result<(String, String)> {
    // A metrics port of its own: the watcher's end signal when the topic cannot be read back.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = format!("metrics_port = {metrics_port}\n[mq]\nflat_message = {}\n", v.flat);
    if let Some(n) = v.in_flight {
        server.push_str(&format!("max_in_flight_batches = {n}\n"));
    }
    match v.broker {
        Broker::Kafka => {
            server.push_str(&format!(
                "mode = \"kafka\"\n[mq.kafka]\nbootstrap_servers = \"{endpoint}\"\n"
            ));
        }
        Broker::Rabbitmq => {
            // amqp://user:pass@host:port/vhost → host:port; the default exchange routes by
            // queue name, so the topic names the watcher's queue.
            let hostport = endpoint
                .rsplit_once('@')
                .and_then(|(_, r)| r.split('/').next())
                .context("a RabbitMQ URL without host")?;
            server
                .push_str(&format!("mode = \"rabbitmq\"\n[mq.rabbitmq]\nhost = \"{hostport}\"\n"));
        }
    }
    let mut instance = format!("[mq]\ntopic = \"{topic}\"\n");
    if v.partitions > 1 {
        instance.push_str(&format!(
            "partitions_num = {}\npartition_hash = \"canal_bench.t:id\"\n",
            v.partitions
        ));
    }
    Ok((server, instance))
}

/// The helper binary, built in release.
pub fn build_helper(release: &Path) -> Result<PathBuf> {
    let ok = Command::new(services::cargo_bin())
        .args(["build", "--release", "-p", "canal-server", "--example", "mq_bench"])
        .current_dir(services::workspace_root())
        .status()?;
    if !ok.success() {
        bail!("building the mq_bench helper failed");
    }
    Ok(release.join("examples/mq_bench"))
}
