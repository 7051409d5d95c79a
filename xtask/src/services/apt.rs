//! Installs the Debian packages of the test services and of the workspace's build when their files
//! are missing, without letting the packages start system services.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Kind, find_program, is_root};

/// Serialises concurrent installs from several checkouts on one machine (apt itself would only
/// wait on the dpkg lock, but the temporary policy-rc.d must not be removed under another run).
const LOCK: &str = "/var/lock/canal-test-services-apt.lock";
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const APT_OPTS: [&str; 6] =
    ["install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600"];

/// Debian packages for `kind` and whether everything it needs is present.
fn packages(kind: Kind) -> (&'static [&'static str], bool) {
    match kind {
        Kind::Mariadb => (
            &["mariadb-server", "mariadb-client"],
            ["mariadbd", "mariadb-install-db", "mariadb"].iter().all(|p| find_program(p).is_some()),
        ),
        // Not `zookeeperd`: that one ships an init script that would start a system ZooKeeper.
        Kind::Zookeeper => (
            &["zookeeper", "libslf4j-java", "liblog4j1.2-java"],
            super::zookeeper::JARS.iter().all(|j| Path::new(j).is_file())
                && find_program("java").is_some(),
        ),
        Kind::Etcd => (
            &["etcd-server", "etcd-client"],
            find_program("etcd").is_some() && find_program("etcdctl").is_some(),
        ),
        // Built with cargo into a per-machine cache instead (kafka.rs).
        Kind::Kafka => (&[], true),
        Kind::Rabbitmq => (&["rabbitmq-server"], super::rabbitmq::installed()),
    }
}

/// Debian packages that the workspace's build needs: librdkafka is built from source by
/// rdkafka's `cmake-build` feature (root Cargo.toml), which needs cmake and curl's headers.
const BUILD_DEPS: [&str; 2] = ["cmake", "libcurl4-openssl-dev"];

/// Are the [`BUILD_DEPS`] present? curl.h is looked for in /usr/include and its multiarch
/// subdirectories (Debian puts it in /usr/include/x86_64-linux-gnu/curl/).
fn build_deps_present() -> bool {
    let curl_h = Path::new("/usr/include/curl/curl.h").is_file()
        || fs::read_dir("/usr/include").is_ok_and(|dirs| {
            dirs.filter_map(Result::ok).any(|d| d.path().join("curl/curl.h").is_file())
        });
    find_program("cmake").is_some() && curl_h
}

/// Installs the packages of `kinds` whose files are missing. Not root: prints the command to run
/// and fails.
pub fn ensure_installed(kinds: &[Kind]) -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    for &k in kinds {
        let (pkgs, present) = packages(k);
        if !present {
            missing.extend_from_slice(pkgs);
        }
    }
    install_missing(&missing, "the test services")?;
    for &k in kinds {
        if !packages(k).1 {
            bail!("{k}: files still missing after installing {}", packages(k).0.join(" "));
        }
    }
    Ok(())
}

/// Installs the Debian packages that building the workspace needs ([`BUILD_DEPS`]) when they
/// are missing; call before any `cargo build` of the workspace. Not root: prints the command
/// to run and fails.
pub fn ensure_build_deps() -> Result<()> {
    if build_deps_present() {
        return Ok(());
    }
    install_missing(&BUILD_DEPS, "building the workspace (rdkafka's librdkafka)")?;
    if !build_deps_present() {
        bail!("cmake or curl/curl.h still missing after installing {}", BUILD_DEPS.join(" "));
    }
    Ok(())
}

/// `apt-get install`s `missing` under the machine-wide install lock (nothing when empty).
fn install_missing(missing: &[&str], what: &str) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let line = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get {} {}",
        APT_OPTS.join(" "),
        missing.join(" ")
    );
    if !is_root() {
        bail!(
            "packages for {what} are missing and this is not root; as root run:\n  \
             {line}\n(with /usr/sbin/policy-rc.d exiting 101 so that no system service starts)"
        );
    }
    eprintln!("installing {} (under flock {LOCK})", missing.join(" "));
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let status = Command::new("flock")
        .arg(LOCK)
        .arg(&exe)
        .args(["services", "apt-install-locked"])
        .args(missing)
        .status()
        .context("running flock (util-linux)")?;
    if !status.success() {
        bail!("installing {} failed ({status}); the command was:\n  {line}", missing.join(" "));
    }
    Ok(())
}

/// Runs `apt-get update` and `apt-get install` for `pkgs`, with a temporary policy-rc.d (exit
/// 101) when none exists. Called under the install lock by [`ensure_installed`].
pub fn install_locked(pkgs: &[&str]) -> Result<()> {
    let _policy = PolicyRcD::ensure()?;
    apt_get(&["update", "-q"])?;
    let mut args: Vec<&str> = APT_OPTS.to_vec();
    args.extend_from_slice(pkgs);
    apt_get(&args)
}

fn apt_get(args: &[&str]) -> Result<()> {
    eprintln!("+ apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// A policy-rc.d that forbids service starts, removed on drop if this run created it.
struct PolicyRcD {
    created: bool,
}

impl PolicyRcD {
    const CONTENT: &str =
        "#!/bin/sh\n# temporary, from `cargo xtask services`: start no services\nexit 101\n";

    fn ensure() -> Result<Self> {
        let path = Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(Self { created: false });
        }
        fs::write(path, Self::CONTENT).with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {POLICY_RC_D} executable"))?;
        eprintln!("created a temporary {POLICY_RC_D} (exit 101)");
        Ok(Self { created: true })
    }
}

impl Drop for PolicyRcD {
    fn drop(&mut self) {
        if self.created && fs::read_to_string(POLICY_RC_D).is_ok_and(|c| c == Self::CONTENT) {
            match fs::remove_file(POLICY_RC_D) {
                Ok(()) => eprintln!("removed the temporary {POLICY_RC_D}"),
                Err(e) => eprintln!("warning: could not remove {POLICY_RC_D}: {e}"),
            }
        }
    }
}
