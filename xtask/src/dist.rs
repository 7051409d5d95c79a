//! `cargo xtask dist`: a release build packaged like Canal's deployer —
//! `target/dist/canal-rs-<version>-<target>.tar.gz` holding `bin/canal-server`,
//! `bin/canal-client`, `conf/canal.toml`, `conf/example/instance.toml`, a systemd unit, README and
//! LICENSE — plus its `.sha256`. `check` unpacks an archive into a temporary directory and runs the
//! shipped binaries there (`--version`, `config check` on the shipped conf), which is what
//! `cargo xtask test` does after the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::services;

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn host_target() -> Result<String> {
    let vv = run(Command::new("rustc").arg("-vV"), "rustc -vV")?;
    vv.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host line")
}

fn version() -> Result<String> {
    let toml = std::fs::read_to_string(services::workspace_root().join("Cargo.toml"))?;
    toml.lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.trim().strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .context("no version in [workspace.package]")
}

/// Builds the archive; returns its path.
pub fn build() -> Result<PathBuf> {
    services::apt::ensure_build_deps()?;
    let root = services::workspace_root();
    let status = Command::new(services::cargo_bin())
        .args(["build", "--release", "-p", "canal-server", "-p", "canal-client"])
        // The shipped client reads canal-server's MQ topics too (`tail --kafka`).
        .args(["--features", "canal-client/kafka"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("release build failed");
    }
    let target = services::target_dir()?;
    let name = format!("canal-rs-{}-{}", version()?, host_target()?);
    let dist = target.join("dist");
    let stage = dist.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "conf/example"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    let copy = |from: &Path, to: &str| -> Result<()> {
        std::fs::copy(from, stage.join(to))
            .with_context(|| format!("copying {} to {to}", from.display()))
            .map(drop)
    };
    copy(&target.join("release/canal-server"), "bin/canal-server")?;
    copy(&target.join("release/canal-client"), "bin/canal-client")?;
    // The release profile keeps line tables for profiling; the shipped binaries need none.
    for b in ["bin/canal-server", "bin/canal-client"] {
        if let Err(e) = run(Command::new("strip").arg(stage.join(b)), "strip") {
            eprintln!("xtask: warning: not stripping {b}: {e:#}");
        }
    }
    copy(&root.join("conf/canal.toml"), "conf/canal.toml")?;
    copy(&root.join("conf/example/instance.toml"), "conf/example/instance.toml")?;
    copy(&root.join("dist/canal-server.service"), "canal-server.service")?;
    copy(&root.join("README.md"), "README.md")?;
    copy(&root.join("LICENSE"), "LICENSE")?;
    let archive = dist.join(format!("{name}.tar.gz"));
    run(Command::new("tar").arg("-C").arg(&dist).arg("-czf").arg(&archive).arg(&name), "tar")?;
    let sum = run(Command::new("sha256sum").arg(&archive), "sha256sum")?;
    let digest = sum.split_whitespace().next().context("sha256sum output")?;
    std::fs::write(
        dist.join(format!("{name}.tar.gz.sha256")),
        format!("{digest}  {name}.tar.gz\n"),
    )?;
    eprintln!("==> {} (sha256 {digest})", archive.display());
    Ok(archive)
}

/// Unpacks `archive` into a fresh temporary directory and runs the binaries from there: the
/// tarball must work wherever it is unpacked.
pub fn check(archive: &Path) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("canal-rs-dist-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<()> {
        run(Command::new("tar").arg("-C").arg(&tmp).arg("-xzf").arg(archive), "tar -x")?;
        let top = std::fs::read_dir(&tmp)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .context("the archive has no top directory")?;
        for f in ["bin/canal-server", "bin/canal-client", "conf/canal.toml", "LICENSE", "README.md"]
        {
            if !top.join(f).exists() {
                bail!("the archive lacks {f}");
            }
        }
        let v = run(
            Command::new(top.join("bin/canal-server")).arg("--version"),
            "canal-server --version",
        )?;
        if !v.starts_with("canal-server ") {
            bail!("unexpected --version output {v:?}");
        }
        run(Command::new(top.join("bin/canal-client")).arg("--version"), "canal-client --version")?;
        let help = run(
            Command::new(top.join("bin/canal-client")).args(["tail", "--help"]),
            "canal-client tail --help",
        )?;
        if !help.contains("--kafka") {
            bail!("the shipped canal-client lacks `tail --kafka` (feature kafka)");
        }
        // Run from an unrelated directory: nothing may depend on the checkout.
        let summary = run(
            Command::new(top.join("bin/canal-server"))
                .args(["config", "check", "--no-env", "--conf"])
                .arg(top.join("conf"))
                .current_dir(&tmp),
            "canal-server config check",
        )?;
        if !summary.contains("destinations: 1") {
            bail!("config check of the shipped conf: {summary}");
        }
        eprintln!("==> dist check: {} runs from {}", v.trim(), top.display());
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// `cargo xtask dist`.
pub fn run_dist(args: &[&str]) -> Result<()> {
    if !args.is_empty() {
        bail!("`cargo xtask dist` takes no arguments");
    }
    let archive = build()?;
    check(&archive)
}
