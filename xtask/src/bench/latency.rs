//! Latency of the whole path, commit on MariaDB → row printed by `canal-client tail`: single-row
//! transactions at a steady rate, each carrying its commit-time clock (`NOW(6)` in µs since the
//! epoch), against the client's clock when it prints the row (FlatMessage `ts`, ms). Same
//! machine, same clock.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{BenchServer, sql};

/// Percentiles of one run, in ms.
#[derive(Debug, Clone)]
pub(super) struct Latency {
    pub(super) name: String,
    pub(super) rows: usize,
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

/// What one run does.
pub(super) struct Run<'a> {
    pub(super) server_bin: &'a Path,
    pub(super) client_bin: &'a Path,
    pub(super) out_dir: &'a Path,
    pub(super) admin: &'a (String, String, String, u16),
    pub(super) replica: &'a (String, String, String, u16),
    /// Rows written, one transaction each.
    pub(super) rows: usize,
    /// Pause between two writes.
    pub(super) gap: Duration,
    /// `tail --batch-size` (MEMSIZE units of 1 KiB).
    pub(super) batch_size: u32,
    /// `tail --wait-ms`.
    pub(super) wait_ms: u64,
    /// `tail --linger-ms` (0: Canal's GET rule).
    pub(super) linger_ms: u64,
}

pub(super) fn measure(r: &Run<'_>) -> Result<Latency> {
    sql(
        r.admin,
        "CREATE DATABASE IF NOT EXISTS canal_bench; DROP TABLE IF EXISTS canal_bench.lat; \
         CREATE TABLE canal_bench.lat (id BIGINT AUTO_INCREMENT PRIMARY KEY, us BIGINT NOT NULL)",
    )?;
    let status = sql(r.admin, "SHOW MASTER STATUS")?;
    let mut fields = status.split_whitespace();
    let file = fields.next().context("no SHOW MASTER STATUS")?.to_owned();
    let pos: u64 = fields.next().context("no position")?.parse()?;
    let server =
        BenchServer::start(r.server_bin, r.out_dir, r.replica, (&file, pos), None, "", "")?;
    let mut client = Command::new(r.client_bin)
        .args(["tail", "--server", &server.addr, "--destination", "bench", "--format", "json"])
        .args(["--batch-size", &r.batch_size.to_string(), "--wait-ms", &r.wait_ms.to_string()])
        .args(["--linger-ms", &r.linger_ms.to_string()])
        // Until 3 s without data (--max would also count the rows-query entries).
        .args(["--timeout", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting canal-client")?;
    let stdout = client.stdout.take().context("client stdout")?;
    let reader = std::thread::spawn(move || read_latencies(stdout));
    // Let the client connect and subscribe before the first write.
    std::thread::sleep(Duration::from_secs(1));
    write_rows(r)?;
    let status = client.wait()?;
    let mut lat = reader.join().map_err(|_| anyhow::anyhow!("latency reader panicked"))??;
    drop(server);
    if !status.success() {
        bail!("canal-client tail failed ({status})");
    }
    if lat.len() != r.rows {
        bail!("{} rows arrived, {} were written", lat.len(), r.rows);
    }
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        name: format!(
            "a row every {} ms, tail --batch-size {} --wait-ms {} --linger-ms {}",
            r.gap.as_millis(),
            r.batch_size,
            r.wait_ms,
            r.linger_ms
        ),
        rows: lat.len(),
        p50: at(0.5),
        p99: at(0.99),
        max: lat[lat.len() - 1],
    })
}

/// Single-row autocommit INSERTs through one `mariadb` client, `DO SLEEP` between them.
fn write_rows(r: &Run<'_>) -> Result<()> {
    let (user, pass, host, port) = r.admin;
    let mut cmd = Command::new("mariadb");
    cmd.args(["-h", host, "-P", &port.to_string(), "-u", user, "--batch"]);
    if !pass.is_empty() {
        cmd.arg(format!("-p{pass}"));
    }
    let mut writer = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running the mariadb client")?;
    let mut script = String::new();
    let sleep = r.gap.as_secs_f64();
    for _ in 0..r.rows {
        script.push_str(
            "INSERT INTO canal_bench.lat (us) VALUES (UNIX_TIMESTAMP(NOW(6)) * 1000000);\n",
        );
        script.push_str(&format!("DO SLEEP({sleep:.4});\n"));
    }
    writer.stdin.take().context("mariadb stdin")?.write_all(script.as_bytes())?;
    let status = writer.wait()?;
    if !status.success() {
        bail!("writing the latency rows failed ({status})");
    }
    Ok(())
}

/// One latency (ms) per row of `canal_bench.lat` in the client's FlatMessage lines.
fn read_latencies(out: impl std::io::Read) -> Result<Vec<f64>> {
    let mut lat = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line?;
        let msg: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("client printed a line that is not JSON: {line}"))?;
        if msg["table"] != "lat" || msg["type"] != "INSERT" {
            continue;
        }
        let ts = msg["ts"].as_i64().context("FlatMessage without ts")?;
        for row in msg["data"].as_array().into_iter().flatten() {
            let us: i64 = row["us"].as_str().context("row without us")?.parse()?;
            lat.push((ts * 1000 - us) as f64 / 1000.0);
        }
    }
    Ok(lat)
}
