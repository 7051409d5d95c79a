//! Project automation: `cargo xtask services up|down|status`, `cargo xtask test`,
//! `cargo xtask soak` and `cargo xtask bench`.

mod bench;
mod demo;
mod dist;
mod services;
mod soak;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::services::{Kind, Settings};

const USAGE: &str = "\
usage:
  cargo xtask services up     [SERVICE]...        start the test services (all by default: mysql,
                                                  zk, etcd, kafka, rabbitmq), install missing Debian
                                                  packages (and build the Kafka-protocol broker
                                                  noida-db once per machine, ~8 min), write
                                                  target/services/env
  cargo xtask services down   [SERVICE]...        stop them (only our own processes, by pid)
  cargo xtask services status [SERVICE]...        print their state; exit 0 only if all run
  cargo xtask services instance up   SERVICE DIR [--port N] [--set KEY=VALUE]... [--keep-data]
                                                  start a private extra instance in DIR and print
                                                  its KEY=VALUE endpoints (e.g. a ZooKeeper with
                                                  --set tickTime=100, a MariaDB with
                                                  --set max_binlog_size=4096); --keep-data
                                                  restarts a zk/etcd/kafka/rabbitmq on its earlier
                                                  data (pass its --port to keep the endpoint)
  cargo xtask services instance down SERVICE DIR
  cargo xtask services instance status SERVICE DIR
  cargo xtask test [CARGO_TEST_ARGS]... [-- TEST_BINARY_ARGS]...
                                                  services up, fmt --check, clippy -D warnings,
                                                  cargo test --workspace with the services' env and
                                                  CANAL_REQUIRE_INTEGRATION=1, then stop the services
                                                  this run started (also on failure and Ctrl-C; the
                                                  last of concurrent runs stops them; services
                                                  started by hand stay up)
  cargo xtask soak [--failovers N] [ha|ddl]... [zk|etcd]...
                                                  the long HA and DDL-under-failover harnesses
                                                  (30 failovers per backend by default, one backend
                                                  at a time); reports in target/soak/
  cargo xtask dist                                release build packaged as
                                                  target/dist/canal-rs-<version>-<target>.tar.gz
                                                  (+ .sha256), then unpacked and run from a temp dir
  cargo xtask demo [--rounds N]                   MariaDB → canal-server → canal-client tail on
                                                  loopback: watch changes arrive (stops by itself)
  cargo xtask bench [--rows N] [--runs N]         generate a binlog of N (1 000 000) row images and
                                                  measure decode and end-to-end rows/s side by side
                                                  with mysqlbinlog; table and SVG in target/bench/";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["services", "up", rest @ ..] => {
            services::up(&parse_kinds(rest)?)?;
            Ok(ExitCode::SUCCESS)
        }
        ["services", "down", rest @ ..] => {
            services::down(&parse_kinds(rest)?)?;
            Ok(ExitCode::SUCCESS)
        }
        ["services", "status", rest @ ..] => {
            let all_running = services::status(&parse_kinds(rest)?)?;
            Ok(if all_running { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        ["services", "instance", action, kind, dir, rest @ ..] => {
            let kind: Kind = kind.parse()?;
            let dir = PathBuf::from(dir);
            match *action {
                "up" => {
                    let (port, settings, keep) = parse_instance_flags(rest)?;
                    let inst = services::start_instance(kind, &dir, port, &settings, keep)?;
                    for (k, v) in &inst.env {
                        println!("{k}={v}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                "down" if rest.is_empty() => {
                    services::stop_instance(kind, &dir)?;
                    Ok(ExitCode::SUCCESS)
                }
                "status" if rest.is_empty() => {
                    let running = services::print_instance_status(kind, &dir)?;
                    Ok(if running { ExitCode::SUCCESS } else { ExitCode::from(3) })
                }
                _ => bail!("bad `services instance` arguments\n{USAGE}"),
            }
        }
        // Internal: the Ctrl-C guard of `cargo xtask test` (see test.rs).
        ["services", services::GUARD_CMD, pid] => {
            services::guard_until_stdin_closes(pid.parse().context("bad pid")?)?;
            Ok(ExitCode::SUCCESS)
        }
        ["services", "apt-install-locked", pkgs @ ..] => {
            services::apt::install_locked(pkgs)?;
            Ok(ExitCode::SUCCESS)
        }
        ["test", rest @ ..] => test::run(rest),
        ["soak", rest @ ..] => soak::run(rest),
        ["bench", rest @ ..] => bench::run(rest).map(|()| ExitCode::SUCCESS),
        ["demo", rest @ ..] => demo::run(rest).map(|()| ExitCode::SUCCESS),
        ["dist", rest @ ..] => dist::run_dist(rest).map(|()| ExitCode::SUCCESS),
        [] | ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("unknown command `{}`\n{USAGE}", args.join(" ")),
    }
}

/// Service names from the command line; none means all of them.
fn parse_kinds(args: &[&str]) -> Result<Vec<Kind>> {
    if args.is_empty() {
        return Ok(Kind::ALL.to_vec());
    }
    let mut kinds = Vec::new();
    for a in args {
        let k: Kind = a.parse()?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    Ok(kinds)
}

fn parse_instance_flags(args: &[&str]) -> Result<(Option<u16>, Settings, bool)> {
    let mut port = None;
    let mut keep = false;
    let mut settings = Settings::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--port" => {
                let v = it.next().context("`--port` needs a value")?;
                port = Some(v.parse().with_context(|| format!("bad port `{v}`"))?);
            }
            "--set" => {
                let v = it.next().context("`--set` needs KEY=VALUE")?;
                let (k, val) = v
                    .split_once('=')
                    .with_context(|| format!("`--set {v}`: expected KEY=VALUE"))?;
                settings.insert(k.trim().to_owned(), val.trim().to_owned());
            }
            "--keep-data" => keep = true,
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    Ok((port, settings, keep))
}
