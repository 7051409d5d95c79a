//! `cargo xtask soak`: the long HA and DDL-under-failover harnesses
//! (canal-server/tests/it/soak.rs), one backend at a time, after the services are up. Separate
//! from `cargo xtask test` (whose 30-minute budget they would break); `.ci/run` runs both.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::services;
use crate::test::{ServicesGuard, cargo};

/// `cargo xtask soak [--failovers N] [ha|ddl]... [zk|etcd]...`.
pub fn run(args: &[&str]) -> Result<ExitCode> {
    let t0 = Instant::now();
    let mut failovers: Option<u32> = None;
    let mut workloads = Vec::new();
    let mut backends = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--failovers" => {
                let v = it.next().context("`--failovers` needs a number")?;
                failovers = Some(v.parse().with_context(|| format!("bad number `{v}`"))?);
            }
            "ha" | "ddl" => workloads.push(*a),
            "zk" | "zookeeper" => backends.push("zookeeper"),
            "etcd" => backends.push("etcd"),
            other => {
                bail!("unknown soak argument `{other}` (expected ha, ddl, zk, etcd, --failovers N)")
            }
        }
    }
    if workloads.is_empty() {
        workloads = vec!["ha", "ddl"];
    }
    if backends.is_empty() {
        backends = vec!["zookeeper", "etcd"];
    }

    let guard = ServicesGuard::arm()?;
    let mut results: Vec<(String, bool)> = Vec::new();
    // Before any cargo build of the workspace: cmake and curl for rdkafka's librdkafka build.
    let deps = services::apt::ensure_build_deps();
    if let Err(e) = &deps {
        eprintln!("xtask: error: {e:#}");
    }
    results.push(("build deps".into(), deps.is_ok()));
    let up = services::begin_test_run(std::process::id());
    if let Err(e) = &up {
        eprintln!("xtask: error: {e:#}");
    }
    results.push(("services up".into(), up.is_ok()));
    if up.is_ok() && deps.is_ok() {
        let mut env = services::read_env(&services::env_file()?)?;
        env.push(("CANAL_REQUIRE_INTEGRATION".into(), "1".into()));
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        env.push(("CANAL_XTASK".into(), exe.display().to_string()));
        if let Some(n) = failovers {
            env.push(("CANAL_SOAK_FAILOVERS".into(), n.to_string()));
        }
        if let Ok(p) = protoc_bin_vendored::protoc_bin_path() {
            env.push(("PROTOC".into(), p.display().to_string()));
        }
        // The harness runs `canal-client tail`; build it beside canal-server.
        let built = cargo(&env, &["build", "-p", "canal-client", "-p", "canal-server"]);
        results.push(("build".into(), built));
        if built {
            for w in &workloads {
                for b in &backends {
                    let name = format!("soak::soak_{w}_{b}");
                    let ok = cargo(
                        &env,
                        &[
                            "test",
                            "-p",
                            "canal-server",
                            "--test",
                            "it",
                            "--",
                            "--ignored",
                            "--exact",
                            "--nocapture",
                            &name,
                        ],
                    );
                    results.push((format!("{w} {b}"), ok));
                }
            }
        }
    }
    results.push(("services down".into(), guard.finish()));
    Ok(crate::test::summarize("soak", &results, t0, "; reports in target/soak/"))
}
