//! Real test services on loopback (MariaDB, ZooKeeper, etcd, a Kafka-protocol broker, RabbitMQ):
//! start, stop, status, and the env file that integration tests read.
//!
//! Every instance lives in its own directory (`target/services/<name>/` for the default ones):
//! config, data, log, `server.pid` and an `env` file with its endpoints. Servers run under
//! `setsid` with stdin from /dev/null, bind 127.0.0.1 only, on ports picked at run time. Stopping
//! goes by pid file and checks `/proc/PID/cmdline` for the instance directory first; nothing is
//! ever killed by name.

pub mod apt;
mod etcd;
mod kafka;
mod lock;
mod mariadb;
mod proc;
mod rabbitmq;
mod zookeeper;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use etcd::start_etcd;
pub use kafka::start_kafka;
pub use mariadb::start_mariadb;
pub use rabbitmq::start_rabbitmq;
pub use zookeeper::start_zookeeper;

/// Overrides of a service's defaults: my.cnf lines for MariaDB, zoo.cfg lines for ZooKeeper,
/// `--KEY=VALUE` flags for etcd, rabbitmq.conf lines for RabbitMQ (none for Kafka).
pub type Settings = BTreeMap<String, String>;

/// The internal subcommand behind [`guard_until_stdin_closes`].
pub const GUARD_CMD: &str = "guard-until-stdin-closes";

/// A kind of test service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mariadb,
    Zookeeper,
    Etcd,
    /// A Kafka-protocol broker (noida-db).
    Kafka,
    Rabbitmq,
}

impl Kind {
    pub const ALL: [Kind; 5] =
        [Kind::Mariadb, Kind::Zookeeper, Kind::Etcd, Kind::Kafka, Kind::Rabbitmq];

    /// Directory name of the default instance under `target/services/`.
    fn dir_name(self) -> &'static str {
        match self {
            Kind::Mariadb => "mariadb",
            Kind::Zookeeper => "zookeeper",
            Kind::Etcd => "etcd",
            Kind::Kafka => "kafka",
            Kind::Rabbitmq => "rabbitmq",
        }
    }

    /// How long a server may take to exit after SIGTERM before it gets SIGKILL.
    fn stop_timeout(self) -> Duration {
        match self {
            Kind::Mariadb => Duration::from_secs(60),
            Kind::Zookeeper | Kind::Etcd | Kind::Kafka | Kind::Rabbitmq => Duration::from_secs(30),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Kind::Mariadb => "mariadb",
            Kind::Zookeeper => "zookeeper",
            Kind::Etcd => "etcd",
            Kind::Kafka => "kafka",
            Kind::Rabbitmq => "rabbitmq",
        })
    }
}

impl FromStr for Kind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "mysql" | "mariadb" | "db" => Kind::Mariadb,
            "zk" | "zookeeper" => Kind::Zookeeper,
            "etcd" => Kind::Etcd,
            "kafka" => Kind::Kafka,
            "rabbitmq" | "rabbit" | "amqp" => Kind::Rabbitmq,
            _ => bail!("unknown service `{s}` (expected mysql, zk, etcd, kafka or rabbitmq)"),
        })
    }
}

/// A running instance: its directory, server pid and endpoints (`KEY=VALUE`).
#[derive(Debug, Clone)]
pub struct Instance {
    pub kind: Kind,
    pub dir: PathBuf,
    pub pid: u32,
    pub env: Vec<(String, String)>,
}

/// Marker file that makes a directory ours, so that a fresh start may wipe its data.
const MARKER: &str = ".canal-test-service";
const PID_FILE: &str = "server.pid";
const ENV_FILE: &str = "env";
/// Readiness deadline for each server start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace's target directory (honours `CARGO_TARGET_DIR` and cargo config).
pub fn target_dir() -> Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d.clone());
    }
    let out = Command::new(cargo_bin())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .context("running `cargo metadata`")?;
    if !out.status.success() {
        bail!("`cargo metadata` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing `cargo metadata` output")?;
    let dir = meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` has no `target_directory`")?;
    Ok(DIR.get_or_init(|| dir).clone())
}

/// The workspace root (parent of the xtask crate).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace")
}

/// `$CARGO` when run through cargo, else `cargo`.
pub fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// `target/services`, created if needed.
pub fn services_dir() -> Result<PathBuf> {
    let dir = target_dir()?.join("services");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The combined env file that `cargo xtask test` exports and developers can `source`.
pub fn env_file() -> Result<PathBuf> {
    Ok(services_dir()?.join(ENV_FILE))
}

/// Directory of the default instance of `kind`.
pub fn default_dir(kind: Kind) -> Result<PathBuf> {
    Ok(services_dir()?.join(kind.dir_name()))
}

/// `services up`: install what is missing, then start (or reuse) each default instance, then
/// rewrite the env file. Returns the kinds that this call started (not already running).
pub fn up(kinds: &[Kind]) -> Result<Vec<Kind>> {
    let _lock = lock_services()?;
    let started = up_locked(kinds)?;
    // Started by hand: no test run owns these, so none will stop them.
    update_test_owned(|owned| owned.retain(|k| !started.contains(k)))?;
    Ok(started)
}

fn up_locked(kinds: &[Kind]) -> Result<Vec<Kind>> {
    apt::ensure_installed(kinds)?;
    let mut started = Vec::new();
    for &kind in kinds {
        let dir = default_dir(kind)?;
        if let Some(inst) = running(kind, &dir)? {
            eprintln!("{kind}: already running (pid {}), reusing it", inst.pid);
            continue;
        }
        // Ports are picked just before the start; another process may grab one in between, so
        // an early exit is retried with new ports a couple of times.
        let mut attempt = 1;
        loop {
            match start_instance(kind, &dir, None, &Settings::new(), false) {
                Ok(_) => break,
                Err(e) if attempt < 3 && format!("{e:#}").contains("exited during start") => {
                    eprintln!("{kind}: start attempt {attempt} failed, retrying: {e:#}");
                    attempt += 1;
                }
                Err(e) => {
                    write_env_file()?;
                    return Err(e);
                }
            }
        }
        started.push(kind);
    }
    let path = write_env_file()?;
    eprintln!("endpoints written to {}:", path.display());
    eprint!("{}", fs::read_to_string(&path).unwrap_or_default());
    Ok(started)
}

/// `services down`: stop each default instance that runs.
pub fn down(kinds: &[Kind]) -> Result<()> {
    let _lock = lock_services()?;
    down_locked(kinds)?;
    update_test_owned(|owned| owned.retain(|k| !kinds.contains(k)))
}

fn down_locked(kinds: &[Kind]) -> Result<()> {
    let mut errors = Vec::new();
    for &kind in kinds {
        if let Err(e) = stop_instance(kind, &default_dir(kind)?) {
            errors.push(format!("{kind}: {e:#}"));
        }
    }
    write_env_file()?;
    if !errors.is_empty() {
        bail!("stopping services failed:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

/// `services status`: one line per service; true when all run.
pub fn status(kinds: &[Kind]) -> Result<bool> {
    let mut all = true;
    for &kind in kinds {
        all &= print_instance_status(kind, &default_dir(kind)?)?;
    }
    Ok(all)
}

/// Prints one status line for the instance in `dir`; true when it runs.
pub fn print_instance_status(kind: Kind, dir: &Path) -> Result<bool> {
    match running(kind, dir)? {
        Some(inst) => {
            let endpoints: Vec<String> = inst.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{:<9} running  pid {:<7} {} ({})",
                inst.kind,
                inst.pid,
                endpoints.join(" "),
                inst.dir.display()
            );
            Ok(true)
        }
        None => {
            println!("{kind:<9} stopped  ({})", dir.display());
            Ok(false)
        }
    }
}

/// Starts a fresh instance of `kind` in `dir` (reusing it when it already runs) on `port`, or on a
/// free port when `None`. Data from an earlier run in `dir` is wiped first, unless `keep_data`
/// (all but MariaDB: a restart of a stopped instance on its data, as the soak harness does to
/// restart a coordinator under load, and the MQ tests a broker); logs are kept beside. This is the entry point for
/// test harnesses that need a private extra instance.
pub fn start_instance(
    kind: Kind,
    dir: &Path,
    port: Option<u16>,
    settings: &Settings,
    keep_data: bool,
) -> Result<Instance> {
    apt::ensure_installed(&[kind])?;
    let dir = prepare_dir(dir)?;
    if let Some(inst) = running(kind, &dir)? {
        return Ok(inst);
    }
    let t0 = std::time::Instant::now();
    let inst = match kind {
        Kind::Mariadb if keep_data => bail!("--keep-data is not supported for mariadb"),
        Kind::Mariadb => start_mariadb(&dir, port, settings),
        Kind::Zookeeper => start_zookeeper(&dir, port, settings, keep_data),
        Kind::Etcd => start_etcd(&dir, port, settings, keep_data),
        Kind::Kafka => start_kafka(&dir, port, settings, keep_data),
        Kind::Rabbitmq => start_rabbitmq(&dir, port, settings, keep_data),
    }
    .with_context(|| format!("starting {kind} in {}", dir.display()))?;
    let env: String = inst.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    fs::write(dir.join(ENV_FILE), env).context("writing the instance env file")?;
    eprintln!(
        "{kind}: started (pid {}) in {:.2} s: {}",
        inst.pid,
        t0.elapsed().as_secs_f64(),
        inst.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    Ok(inst)
}

/// Stops the instance in `dir` if it runs: SIGTERM, wait, then SIGKILL. Then the helper
/// processes of the instance (RabbitMQ's epmd), also when the server itself was already gone.
pub fn stop_instance(kind: Kind, dir: &Path) -> Result<()> {
    if !dir.exists() {
        eprintln!("{kind}: not running (no {})", dir.display());
        return Ok(());
    }
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let server = stop_server(kind, &dir);
    let helpers = match kind {
        Kind::Rabbitmq => rabbitmq::stop_epmd(&dir),
        Kind::Mariadb | Kind::Zookeeper | Kind::Etcd | Kind::Kafka => Ok(()),
    };
    server.and(helpers)
}

fn stop_server(kind: Kind, dir: &Path) -> Result<()> {
    let pid_file = dir.join(PID_FILE);
    let Some(pid) = proc::read_pid(&pid_file)? else {
        eprintln!("{kind}: not running");
        return Ok(());
    };
    if !proc::is_ours(pid, dir) {
        eprintln!("{kind}: not running (stale pid file, pid {pid} is gone or not ours)");
        let _ = fs::remove_file(&pid_file);
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    proc::terminate(pid, dir, kind.stop_timeout())
        .with_context(|| format!("stopping {kind} (pid {pid})"))?;
    let _ = fs::remove_file(&pid_file);
    let _ = fs::remove_file(dir.join(ENV_FILE));
    eprintln!("{kind}: stopped (pid {pid}) in {:.2} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// The instance in `dir` if its server runs, with the endpoints from its env file.
pub fn running(kind: Kind, dir: &Path) -> Result<Option<Instance>> {
    let Ok(dir) = dir.canonicalize() else { return Ok(None) };
    let Some(pid) = proc::read_pid(&dir.join(PID_FILE))? else { return Ok(None) };
    if !proc::is_ours(pid, &dir) {
        return Ok(None);
    }
    let env = read_env(&dir.join(ENV_FILE))?;
    Ok(Some(Instance { kind, dir, pid, env }))
}

/// Rewrites `target/services/env` from the default instances that run now.
fn write_env_file() -> Result<PathBuf> {
    let mut out = String::new();
    let mut any = false;
    for kind in Kind::ALL {
        if let Some(inst) = running(kind, &default_dir(kind)?)? {
            any = true;
            for (k, v) in inst.env {
                out.push_str(&format!("{k}={v}\n"));
            }
        }
    }
    let dir = services_dir()?;
    if any {
        out.push_str(&format!("CANAL_TEST_SERVICES_DIR={}\n", dir.display()));
    }
    let path = dir.join(ENV_FILE);
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments are skipped).
pub fn read_env(path: &Path) -> Result<Vec<(String, String)>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// Creates `dir` (or checks that an existing non-empty one is ours) and returns its absolute path.
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let marker = dir.join(MARKER);
    if !marker.exists() {
        let empty = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} is not empty and has no {MARKER} marker; refusing to use it for a test service",
                dir.display()
            );
        }
        fs::write(&marker, "made by `cargo xtask services`; data here is wiped on start\n")
            .with_context(|| format!("writing {}", marker.display()))?;
    }
    Ok(dir)
}

/// `dir/name`, kept as it is when `keep`, else made fresh ([`fresh_subdir`]).
fn data_subdir(dir: &Path, name: &str, keep: bool) -> Result<PathBuf> {
    if !keep {
        return fresh_subdir(dir, name);
    }
    let sub = dir.join(name);
    fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
    Ok(sub)
}

/// Removes `dir/name` (a previous run's data) and creates it empty.
fn fresh_subdir(dir: &Path, name: &str) -> Result<PathBuf> {
    let sub = dir.join(name);
    if sub.exists() {
        fs::remove_dir_all(&sub).with_context(|| format!("removing old {}", sub.display()))?;
    }
    fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
    Ok(sub)
}

/// Holds the lock that serialises `up`, `down` and the test-run bookkeeping in one checkout.
fn lock_services() -> Result<lock::FileLock> {
    lock::FileLock::acquire(&services_dir()?.join(".lock"))
}

/// Directory of the live `cargo xtask test` runs (one file per run, named by its pid).
fn test_runs_dir() -> Result<PathBuf> {
    let dir = services_dir()?.join("test-runs");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The services that test runs started and the last run to finish stops.
fn update_test_owned(f: impl FnOnce(&mut Vec<Kind>)) -> Result<()> {
    let path = services_dir()?.join("test-owned");
    let mut owned: Vec<Kind> = fs::read_to_string(&path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .collect();
    f(&mut owned);
    if owned.is_empty() {
        let _ = fs::remove_file(&path);
        return Ok(());
    }
    let text: Vec<String> = owned.iter().map(ToString::to_string).collect();
    fs::write(&path, text.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Registers test run `pid` and brings all services up. Services this starts are test-owned:
/// the last test run to finish stops them. Services someone started by hand are only reused.
/// Several test runs in one checkout thus share one set of services.
pub fn begin_test_run(pid: u32) -> Result<()> {
    let _lock = lock_services()?;
    let run = test_runs_dir()?.join(pid.to_string());
    fs::write(&run, "").with_context(|| format!("writing {}", run.display()))?;
    let mut starting = Vec::new();
    for kind in Kind::ALL {
        if running(kind, &default_dir(kind)?)?.is_none() {
            starting.push(kind);
        }
    }
    // Recorded before starting, so that a failed start is still cleaned up at the end.
    update_test_owned(|owned| {
        for k in starting {
            if !owned.contains(&k) {
                owned.push(k);
            }
        }
    })?;
    up_locked(&Kind::ALL).map(drop)
}

/// Unregisters test run `pid`; when no other test run is alive, stops the test-owned services.
pub fn end_test_run(pid: u32) -> Result<()> {
    let _lock = lock_services()?;
    let dir = test_runs_dir()?;
    let _ = fs::remove_file(dir.join(pid.to_string()));
    let mut others = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let other = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok());
        match other {
            Some(p) if proc::is_ours(p, Path::new("xtask")) => others.push(p),
            _ => {
                let _ = fs::remove_file(&path); // a run that died without its watchdog
            }
        }
    }
    let path = services_dir()?.join("test-owned");
    let owned: Vec<Kind> = fs::read_to_string(&path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .collect();
    if owned.is_empty() {
        eprintln!("no services to stop (none was started by a test run)");
        return Ok(());
    }
    if !others.is_empty() {
        eprintln!("leaving the services running for the other test run(s): pid {others:?}");
        return Ok(());
    }
    let result = down_locked(&owned);
    update_test_owned(|o| o.clear())?;
    result
}

/// Runs until stdin reaches EOF, then ends test run `pid` ([`end_test_run`]) unless the parent
/// wrote `disarm` first. This is how `cargo xtask test` stops its services even when it dies
/// from Ctrl-C: the watchdog runs in its own session, so the terminal's SIGINT does not reach it,
/// and the pipe closes when the parent dies, however it dies.
pub fn guard_until_stdin_closes(pid: u32) -> Result<()> {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    if input.trim() == "disarm" {
        return Ok(());
    }
    eprintln!("xtask: the test run ended abnormally; stopping the services it started");
    let result = end_test_run(pid);
    eprintln!(
        "xtask test: INTERRUPTED (the run died before finishing); services down {}",
        if result.is_ok() { "ok" } else { "FAILED" }
    );
    result
}

/// A free TCP port on 127.0.0.1 (bind port 0, read it, release it).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr().context("reading a bound address")?.port())
}

/// Two distinct free ports (both held while picking, so they differ).
fn free_port_pair() -> Result<(u16, u16)> {
    let a = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    let b = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// `n` distinct free ports (all held while picking, so they differ).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0"))
        .collect::<Result<_>>()?;
    held.iter().map(|l| Ok(l.local_addr().context("reading a bound address")?.port())).collect()
}

/// Fails when something already listens on `port` (a clash would otherwise show up only as a
/// server that exits during start).
fn check_port_free(port: u16) -> Result<()> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| format!("port 127.0.0.1:{port} is already in use"))
}

/// Is this process running as root?
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Finds an executable in PATH, then in the sbin/bin directories that a non-root PATH may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_their_short_and_long_names() {
        assert_eq!("mysql".parse::<Kind>().unwrap(), Kind::Mariadb);
        assert_eq!("zk".parse::<Kind>().unwrap(), Kind::Zookeeper);
        assert_eq!("etcd".parse::<Kind>().unwrap(), Kind::Etcd);
        assert_eq!("kafka".parse::<Kind>().unwrap(), Kind::Kafka);
        assert_eq!("rabbitmq".parse::<Kind>().unwrap(), Kind::Rabbitmq);
        for k in Kind::ALL {
            assert_eq!(k.to_string().parse::<Kind>().unwrap(), k, "Display round-trips");
        }
        assert!("redis".parse::<Kind>().is_err());
    }

    #[test]
    fn env_files_are_key_value_lines() {
        let dir = std::env::temp_dir().join(format!("xtask-env-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("env");
        assert!(read_env(&f).unwrap().is_empty(), "a missing file is empty");
        fs::write(&f, "# c\nA=1\n\nB=x=y\n").unwrap();
        assert_eq!(
            read_env(&f).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn free_ports_are_free_and_distinct() {
        let (a, b) = free_port_pair().unwrap();
        assert_ne!(a, b);
        let three = free_ports(3).unwrap();
        assert!(three[0] != three[1] && three[1] != three[2] && three[0] != three[2]);
        check_port_free(a).unwrap();
        let held = std::net::TcpListener::bind(("127.0.0.1", free_port().unwrap())).unwrap();
        assert!(check_port_free(held.local_addr().unwrap().port()).is_err());
    }
}
