//! The test brokers that `cargo xtask services` starts (noida-db for Kafka, RabbitMQ) work with
//! the third-party clients the MQ tests read with: PyPI confluent-kafka (idempotent producer,
//! acks=all, a 3-partition topic, a consumer group) and pika (publisher confirms).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

/// Runs `python script args` in the MQ venv and returns its stdout lines as JSON values;
/// panics with its stderr when it fails or outlives `limit`.
fn run_python(
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
        &[bootstrap, topic.clone(), "3".into(), count.to_string()],
        Duration::from_secs(120),
    );
    assert_eq!(lines[0], serde_json::json!({"partitions": 3}), "topic metadata");
    let records = &lines[1..];
    assert_eq!(records.len(), count, "every produced record is consumed once");

    // Per partition: offsets 0, 1, 2 … in order; per key: one partition, values in produce order.
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
    for (key, (_, values)) in &by_key {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(values, &sorted, "key {key}: produce order kept");
    }
    let all: usize = by_key.values().map(|(_, v)| v.len()).sum();
    assert_eq!(all, count);
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
    let bodies: Vec<&str> = lines.iter().map(|l| l["body"].as_str().unwrap()).collect();
    let expect: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expect, "every confirmed message, once, in publish order");
    assert!(lines.iter().all(|l| l["redelivered"] == false), "first deliveries only");
}
