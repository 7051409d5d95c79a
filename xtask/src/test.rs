//! `cargo xtask test`: services up, fmt, clippy, the workspace's tests against the real services,
//! services down (also on failure, panic and Ctrl-C).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::services;

/// Features off by default that the check builds, lints and tests too (their tests need the
/// services this run starts): the workspace's MQ code.
const OPTIONAL_FEATURES: &str = "canal-client/kafka";

/// Runs the whole check. `args` before `--` go to `cargo test`, the rest to the test binaries.
pub fn run(args: &[&str]) -> Result<ExitCode> {
    let t0 = Instant::now();
    let (cargo_args, bin_args) = match args.iter().position(|a| *a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };

    // Services this run starts are stopped at its end (by the last of several concurrent runs);
    // services a developer started by hand stay up.
    let guard = ServicesGuard::arm()?;

    let mut results: Vec<(&str, bool)> = Vec::new();
    let mut test_log: Option<(PathBuf, bool)> = None;
    // Before any cargo build of the workspace: cmake and curl for rdkafka's librdkafka build.
    let deps = services::apt::ensure_build_deps();
    if let Err(e) = &deps {
        eprintln!("xtask: error: {e:#}");
    }
    results.push(("build deps", deps.is_ok()));
    let up = services::begin_test_run(std::process::id());
    if let Err(e) = &up {
        eprintln!("xtask: error: {e:#}");
    }
    results.push(("services up", up.is_ok()));

    if up.is_ok() && deps.is_ok() {
        let mut env = services::read_env(&services::env_file()?)?;
        env.push(("CANAL_REQUIRE_INTEGRATION".into(), "1".into()));
        // The reference material beside the repository (fixtures whose licence keeps them out of
        // it): when it is there, a test that cannot find its file fails instead of skipping.
        let shared = services::workspace_root().join("../shared");
        if shared.is_dir() {
            env.push(("CANAL_REQUIRE_SHARED".into(), "1".into()));
        }
        // Tests append `skip` and `oracle` lines here (tools/test-support.rs); the summary
        // counts them.
        let log =
            services::target_dir()?.join(format!("xtask-test-log-{}.txt", std::process::id()));
        if let Err(e) = std::fs::remove_file(&log)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e).with_context(|| format!("removing {}", log.display()));
        }
        env.push(("CANAL_TEST_LOG".into(), log.display().to_string()));
        test_log = Some((log, shared.is_dir()));
        match protoc_bin_vendored::protoc_bin_path() {
            Ok(p) => env.push(("PROTOC".into(), p.display().to_string())),
            Err(e) => eprintln!("xtask: warning: no vendored protoc ({e}); using tools/protoc"),
        }

        results.push(("fmt", cargo(&env, &["fmt", "--all", "--", "--check"])));
        results.push((
            "clippy",
            cargo(
                &env,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--features",
                    OPTIONAL_FEATURES,
                    "--",
                    "-D",
                    "warnings",
                ],
            ),
        ));
        // Report every failing test binary, not just the first.
        let mut test_args = vec!["test", "--no-fail-fast"];
        if !cargo_args.iter().any(|a| *a == "-p" || a.starts_with("--package")) {
            test_args.extend(["--workspace", "--features", OPTIONAL_FEATURES]);
        }
        test_args.extend_from_slice(cargo_args);
        if !bin_args.is_empty() {
            test_args.push("--");
            test_args.extend_from_slice(bin_args);
        }
        // A test binary killed by a signal fails the run like a failed assertion, and is named:
        // a crash is a bug to explain (docs/notes/sigsegv.md), never a flake to retry.
        let tests = cargo_tests(&env, &test_args);
        for crash in &tests.crashed {
            eprintln!("xtask: error: test binary killed by a signal: {crash}");
        }
        results.push(("tests", tests.passed));
        // The packaged binaries must run from wherever the tarball is unpacked.
        if cargo_args.is_empty() && bin_args.is_empty() {
            eprintln!("\n==> cargo xtask dist (package, unpack, run)");
            let dist = crate::dist::build().and_then(|a| crate::dist::check(&a));
            if let Err(e) = &dist {
                eprintln!("xtask: error: {e:#}");
            }
            results.push(("dist", dist.is_ok()));
        }
    }

    results.push(("services down", guard.finish()));

    let suffix = match &test_log {
        Some((log, shared)) => {
            // Absent when no test wrote to it (no skip, no oracle): that is zero of each.
            let text = match std::fs::read_to_string(log) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {}", log.display())),
            };
            let counts = TestLog::parse(&text);
            for line in &counts.skipped {
                eprintln!("xtask: skipped: {line}");
            }
            let _ = std::fs::remove_file(log);
            counts.summary(*shared)
        }
        None => String::new(),
    };
    Ok(summarize("test", &results, t0, &suffix))
}

/// What the tests recorded in `CANAL_TEST_LOG` (tools/test-support.rs): one `kind\ttext` line
/// per skip or oracle comparison.
#[derive(Debug, Default, PartialEq)]
struct TestLog {
    /// Fixtures compared with an independent oracle (mysqlbinlog, upstream expectations, pmr).
    oracle: usize,
    /// What skipped, as `test: why`.
    skipped: Vec<String>,
}

impl TestLog {
    fn parse(text: &str) -> Self {
        let mut log = TestLog::default();
        for line in text.lines() {
            match line.split_once('\t') {
                Some(("oracle", _)) => log.oracle += 1,
                Some(("skip", what)) => log.skipped.push(what.to_owned()),
                _ => {}
            }
        }
        log
    }

    /// `; oracle checks: N, skipped: M (../shared absent)` for the summary line.
    fn summary(&self, shared: bool) -> String {
        format!(
            "; oracle checks: {}, skipped: {}{}",
            self.oracle,
            self.skipped.len(),
            if shared { "" } else { " (../shared absent)" }
        )
    }
}

/// Prints `xtask <command>: PASSED|FAILED (step ok, step FAILED, …) in N s<suffix>` and gives the
/// exit code: success only when every step succeeded.
pub(crate) fn summarize(
    command: &str,
    results: &[(impl std::fmt::Display, bool)],
    t0: std::time::Instant,
    suffix: &str,
) -> ExitCode {
    let ok = results.iter().all(|(_, ok)| *ok);
    let summary: Vec<String> = results
        .iter()
        .map(|(step, ok)| format!("{step} {}", if *ok { "ok" } else { "FAILED" }))
        .collect();
    println!(
        "xtask {command}: {} ({}) in {:.0} s{suffix}",
        if ok { "PASSED" } else { "FAILED" },
        summary.join(", "),
        t0.elapsed().as_secs_f64()
    );
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Runs one cargo step in the workspace root with `env` added; true on success.
pub(crate) fn cargo(env: &[(String, String)], args: &[&str]) -> bool {
    eprintln!("\n==> cargo {}", args.join(" "));
    let t0 = Instant::now();
    let status = Command::new(services::cargo_bin())
        .args(args)
        .current_dir(services::workspace_root())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status();
    let ok = match status {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("==> cargo {} failed ({s})", args.join(" "));
            false
        }
        Err(e) => {
            eprintln!("==> could not run cargo {}: {e}", args.join(" "));
            false
        }
    };
    eprintln!("==> {:.1} s", t0.elapsed().as_secs_f64());
    ok
}

/// What `cargo test` reported.
#[derive(Debug, Default)]
struct TestOutcome {
    passed: bool,
    /// Test binaries killed by a signal, as cargo names them: "`/path/it-…` (signal: 11,
    /// SIGSEGV: invalid memory reference)".
    crashed: Vec<String>,
}

/// The binary and signal of a cargo line "process didn't exit successfully: `BIN` (signal: N,
/// NAME: …)", if the line is one.
fn killed_by_signal(line: &str) -> Option<String> {
    let rest = line.split("process didn't exit successfully: ").nth(1)?;
    rest.contains("(signal: ").then(|| rest.trim().to_owned())
}

/// `cargo test …`, its stderr passed through and watched for test binaries killed by a signal.
fn cargo_tests(env: &[(String, String)], args: &[&str]) -> TestOutcome {
    use std::io::{BufRead, BufReader};
    eprintln!("\n==> cargo {}", args.join(" "));
    let t0 = Instant::now();
    let child = Command::new(services::cargo_bin())
        .args(args)
        .current_dir(services::workspace_root())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("==> could not run cargo {}: {e}", args.join(" "));
            return TestOutcome::default();
        }
    };
    let mut crashed = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            crashed.extend(killed_by_signal(&line));
            eprintln!("{line}");
        }
    }
    let passed = match child.wait() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("==> cargo {} failed ({s})", args.join(" "));
            false
        }
        Err(e) => {
            eprintln!("==> cargo {}: {e}", args.join(" "));
            false
        }
    };
    eprintln!("==> {:.1} s", t0.elapsed().as_secs_f64());
    // A killed binary fails the step even if cargo's exit status said otherwise.
    TestOutcome { passed: passed && crashed.is_empty(), crashed }
}

/// Ends the test run ([`services::end_test_run`]): explicitly through [`ServicesGuard::finish`],
/// from `Drop` on an early return or panic, and through a watchdog process when this process dies
/// (Ctrl-C).
#[derive(Debug)]
pub(crate) struct ServicesGuard {
    armed: bool,
    watchdog: Option<(Child, ChildStdin)>,
}

impl ServicesGuard {
    /// Starts the watchdog: this binary, in its own session (so the terminal's SIGINT skips it),
    /// reading a pipe whose write end only this process holds.
    pub(crate) fn arm() -> Result<Self> {
        let exe: PathBuf = std::env::current_exe().context("locating the xtask binary")?;
        let mut child = Command::new("setsid")
            .arg(exe)
            .arg("services")
            .arg(services::GUARD_CMD)
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("spawning the services watchdog")?;
        let stdin = child.stdin.take().context("watchdog stdin")?;
        Ok(Self { armed: true, watchdog: Some((child, stdin)) })
    }

    /// Ends the run now and disarms the watchdog; true on success.
    pub(crate) fn finish(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        let ok = if std::mem::take(&mut self.armed) {
            eprintln!("\n==> services down");
            match services::end_test_run(std::process::id()) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("xtask: error: {e:#}");
                    false
                }
            }
        } else {
            true
        };
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            let _ = stdin.write_all(b"disarm\n");
            drop(stdin);
            let _ = child.wait();
        }
        ok
    }
}

impl Drop for ServicesGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::{TestLog, killed_by_signal};

    #[test]
    fn counts_oracle_checks_and_skips_from_the_test_log() {
        let log = TestLog::parse(
            "oracle\tdecode::a: x.mysqlbinlog.txt: 12 values\n\
             skip\tdecode::b: ../shared is absent\n\
             oracle\tdecode::c: y\n\
             garbage line\n",
        );
        assert_eq!(log.oracle, 2);
        assert_eq!(log.skipped, ["decode::b: ../shared is absent"]);
        assert_eq!(log.summary(false), "; oracle checks: 2, skipped: 1 (../shared absent)");
        assert_eq!(TestLog::parse("").summary(true), "; oracle checks: 0, skipped: 0");
    }

    #[test]
    fn names_the_binary_and_signal_of_a_killed_test_binary() {
        let line = "  process didn't exit successfully: `/w/target/debug/deps/it-b6ec6243f1e2803c \
                    zookeeper` (signal: 11, SIGSEGV: invalid memory reference)";
        assert_eq!(
            killed_by_signal(line).as_deref(),
            Some(
                "`/w/target/debug/deps/it-b6ec6243f1e2803c zookeeper` (signal: 11, SIGSEGV: \
                 invalid memory reference)"
            )
        );
        // A failed assertion exits with a status, not a signal.
        let failed =
            "  process didn't exit successfully: `/w/target/debug/deps/it-1` (exit status: 101)";
        assert_eq!(killed_by_signal(failed), None);
        assert_eq!(killed_by_signal("test result: ok. 3 passed"), None);
    }
}
