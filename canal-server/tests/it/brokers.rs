//! The test brokers that `cargo xtask services` starts (noida-db for Kafka, RabbitMQ) work with
//! the third-party clients the MQ tests read with: PyPI confluent-kafka (idempotent producer,
//! acks=all, a 3-partition topic, a consumer group) and pika (publisher confirms); and a private
//! broker restarted on its port and data (`instance down`, `instance up --port P --keep-data`)
//! still holds what it confirmed before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

/// Runs `python script args` in the MQ venv and returns its stdout lines as JSON values;
/// panics with its stderr when it fails or outlives `limit`.
pub fn run_python(
    venv: &Path,
    script: &str,
    args: &[String],
    limit: Duration,
) -> Vec<serde_json::Value> {
    let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let mut child = Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let pid = child.id();
    // Read both pipes on threads so that a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out_pipe, &mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err_pipe, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling python") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().expect("killing python");
            child.wait().expect("reaping python");
            panic!("{} (pid {pid}) ran longer than {limit:?}", script.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap().expect("python stdout");
    let stderr = err.join().unwrap().expect("python stderr");
    assert!(status.success(), "{} failed ({status}):\n{stderr}\n{stdout}", script.display());
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// A name no earlier run used on a broker that outlives test runs.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{prefix}-{}-{}", std::process::id(), nanos.as_nanos())
}

#[test]
fn kafka_broker_round_trips_with_confluent_kafka() {
    let Some(bootstrap) = support::service("CANAL_TEST_KAFKA") else { return };
    let Some(venv) = support::python_venv(support::MQ_VENV, support::MQ_VENV_REQUIREMENTS) else {
        return;
    };
    let topic = unique("smoke");
    let count = 60;
    let lines = run_python(
        &venv,
        "kafka_roundtrip.py",
        &[bootstrap, topic, "3".into(), count.to_string()],
        Duration::from_secs(120),
    );
    assert_eq!(lines[0], serde_json::json!({"partitions": 3}), "topic metadata");
    check_kafka_records(&lines[1..], count);
}

/// The records of kafka_roundtrip.py: all `count`, once; per partition offsets 0, 1, 2 … in
/// order; per key one partition and the produce order.
fn check_kafka_records(records: &[serde_json::Value], count: usize) {
    assert_eq!(records.len(), count, "every produced record is consumed once");
    let mut offsets: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut by_key: BTreeMap<String, (i64, Vec<usize>)> = BTreeMap::new();
    for r in records {
        let partition = r["partition"].as_i64().unwrap();
        offsets.entry(partition).or_default().push(r["offset"].as_i64().unwrap());
        let key = r["key"].as_str().unwrap().to_owned();
        let value = r["value"].as_str().unwrap();
        let i: usize = value.strip_prefix('v').unwrap().parse().unwrap();
        assert_eq!(key, format!("k{}", i % 7), "key and value travel together");
        let entry = by_key.entry(key.clone()).or_insert((partition, Vec::new()));
        assert_eq!(entry.0, partition, "key {key} is in one partition");
        entry.1.push(i);
    }
    for (p, offs) in &offsets {
        let expect: Vec<i64> = (0..offs.len() as i64).collect();
        assert_eq!(offs, &expect, "partition {p}: dense offsets in order");
    }
    assert!(offsets.len() >= 2, "7 keys spread over the 3 partitions: {offsets:?}");
    let mut all: Vec<usize> = Vec::new();
    for (key, (_, values)) in &by_key {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(values, &sorted, "key {key}: produce order kept");
        all.extend(values);
    }
    all.sort_unstable();
    assert_eq!(all, (0..count).collect::<Vec<_>>(), "each value once");
}

#[test]
fn rabbitmq_broker_round_trips_with_pika_confirms() {
    let Some(url) = support::service("CANAL_TEST_RABBITMQ") else { return };
    let Some(venv) = support::python_venv(support::MQ_VENV, support::MQ_VENV_REQUIREMENTS) else {
        return;
    };
    let name = unique("smoke");
    let count = 50;
    let lines = run_python(
        &venv,
        "rabbitmq_roundtrip.py",
        &[url, format!("{name}-x"), name, count.to_string()],
        Duration::from_secs(120),
    );
    check_rabbitmq_messages(&lines, count);
}

/// The messages of rabbitmq_roundtrip.py: m0 … m{count-1}, once, in publish order, first
/// deliveries.
fn check_rabbitmq_messages(lines: &[serde_json::Value], count: usize) {
    let bodies: Vec<&str> = lines.iter().map(|l| l["body"].as_str().unwrap()).collect();
    let expect: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expect, "every confirmed message, once, in publish order");
    assert!(lines.iter().all(|l| l["redelivered"] == false), "first deliveries only");
}

/// `cargo xtask` as a command: the binary in `CANAL_XTASK` when set (as `cargo xtask soak` does),
/// else `cargo run -p xtask` in the workspace (the same rule as soak.rs's coordinator servers).
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

/// A private broker from `cargo xtask services instance up`, stopped by `instance down` (SIGTERM
/// by pid) and started again with `--port P --keep-data`, as MQ failover tests restart theirs.
struct PrivateBroker {
    kind: &'static str,
    dir: tempfile::TempDir,
    endpoint: String,
    port: u16,
}

impl PrivateBroker {
    fn start(kind: &'static str) -> PrivateBroker {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{kind}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let endpoint = Self::up(kind, dir.path(), &[]);
        // 127.0.0.1:P for Kafka, amqp://guest:guest@127.0.0.1:P/%2f for RabbitMQ.
        let after_host = endpoint.split("127.0.0.1:").nth(1).expect("a loopback endpoint");
        let port = after_host.split('/').next().unwrap().parse().unwrap();
        PrivateBroker { kind, dir, endpoint, port }
    }

    fn up(kind: &str, dir: &Path, extra: &[&str]) -> String {
        let out = xtask()
            .args(["services", "instance", "up", kind])
            .arg(dir)
            .args(extra)
            .stderr(Stdio::inherit())
            .output()
            .expect("xtask runs");
        assert!(out.status.success(), "xtask services instance up {kind} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.split_once('=').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no endpoint in {text:?}"))
    }

    fn down(&self) {
        let status = xtask()
            .args(["services", "instance", "down", self.kind])
            .arg(self.dir.path())
            .status()
            .expect("xtask runs");
        assert!(status.success(), "xtask services instance down {} failed", self.kind);
    }

    /// Stops it, checks that its port is closed, and starts it again on its port and data.
    fn restart(&self) {
        self.down();
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "{} still answers on {} after instance down",
            self.kind,
            self.port
        );
        let port = self.port.to_string();
        let again = Self::up(self.kind, self.dir.path(), &["--port", &port, "--keep-data"]);
        assert_eq!(again, self.endpoint, "same endpoint after the restart");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ =
            xtask().args(["services", "instance", "down", self.kind]).arg(self.dir.path()).status();
    }
}

#[test]
fn private_kafka_keeps_acked_records_across_a_restart() {
    if support::service("CANAL_TEST_KAFKA").is_none() {
        return;
    }
    let Some(venv) = support::python_venv(support::MQ_VENV, support::MQ_VENV_REQUIREMENTS) else {
        return;
    };
    let broker = PrivateBroker::start("kafka");
    let args = |mode: &str| -> Vec<String> {
        let b = broker.endpoint.clone();
        vec![b, "restart".into(), "3".into(), "40".into(), mode.into()]
    };
    let limit = Duration::from_secs(120);
    let produced = run_python(&venv, "kafka_roundtrip.py", &args("produce"), limit);
    assert_eq!(produced, vec![serde_json::json!({"partitions": 3})]);
    broker.restart();
    let records = run_python(&venv, "kafka_roundtrip.py", &args("consume"), limit);
    check_kafka_records(&records, 40);
}

#[test]
fn private_rabbitmq_keeps_confirmed_messages_across_a_restart() {
    if support::service("CANAL_TEST_RABBITMQ").is_none() {
        return;
    }
    let Some(venv) = support::python_venv(support::MQ_VENV, support::MQ_VENV_REQUIREMENTS) else {
        return;
    };
    let broker = PrivateBroker::start("rabbitmq");
    let args = |mode: &str| -> Vec<String> {
        let url = broker.endpoint.clone();
        vec![url, "restart-x".into(), "restart".into(), "30".into(), mode.into()]
    };
    let limit = Duration::from_secs(120);
    assert!(run_python(&venv, "rabbitmq_roundtrip.py", &args("produce"), limit).is_empty());
    broker.restart();
    let lines = run_python(&venv, "rabbitmq_roundtrip.py", &args("consume"), limit);
    check_rabbitmq_messages(&lines, 30);
}
