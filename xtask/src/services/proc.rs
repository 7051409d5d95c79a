//! Server processes: start under `setsid` with logs to a file, wait for readiness, check that a pid
//! is still ours, and stop by pid (TERM, wait, KILL).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::START_TIMEOUT;

/// What to run for a server.
#[derive(Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The instance directory: working directory, pid file location, and the string that
    /// `/proc/PID/cmdline` must contain for the process to count as ours.
    pub dir: PathBuf,
    /// stdout and stderr go here (appended).
    pub log: PathBuf,
    /// Variables removed from the inherited environment (exact names).
    pub env_remove: Vec<String>,
    /// Variables removed by prefix (e.g. `ETCD_`).
    pub env_remove_prefixes: Vec<String>,
    pub env_set: Vec<(String, String)>,
    /// The pid file's name in `dir` (`server.pid` for the server itself).
    pub pid_file: &'static str,
}

/// A server that was spawned but may not be ready yet.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    pub pid: u32,
    pid_file: PathBuf,
    log: PathBuf,
    log_start: u64,
}

/// Starts the server in its own session (via `setsid`, which execs in place, so the child's pid
/// is the server's) with stdin from /dev/null, and writes the pid file.
pub fn spawn(l: &Launch) -> Result<Spawned> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)
        .with_context(|| format!("opening log {}", l.log.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log.try_clone().context("duplicating the log file handle")?;
    let mut cmd = Command::new("setsid");
    cmd.arg(&l.program)
        .args(&l.args)
        .current_dir(&l.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if l.env_remove.iter().any(|r| r == k)
            || l.env_remove_prefixes.iter().any(|p| k.starts_with(p.as_str()))
        {
            cmd.env_remove(k);
        }
    }
    for (k, v) in &l.env_set {
        cmd.env(k, v);
    }
    let child = cmd.spawn().with_context(|| format!("spawning setsid {}", l.program.display()))?;
    let pid = child.id();
    let pid_file = l.dir.join(l.pid_file);
    fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    Ok(Spawned { child, pid, pid_file, log: l.log.clone(), log_start })
}

impl Spawned {
    /// Polls `ready` until it returns true, failing with the log tail if the server exits or the
    /// deadline ([`START_TIMEOUT`]) passes. The server is left running on success; on failure it
    /// is stopped.
    pub fn wait_ready(self, what: &str, dir: &Path, ready: impl FnMut() -> bool) -> Result<u32> {
        self.wait_ready_within(what, dir, START_TIMEOUT, ready)
    }

    /// [`Spawned::wait_ready`] with a deadline of `timeout` (for slow starters like RabbitMQ).
    pub fn wait_ready_within(
        mut self,
        what: &str,
        dir: &Path,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("polling the server process")? {
                let _ = fs::remove_file(&self.pid_file);
                bail!(
                    "{what} exited during start ({status}); log {}:\n{}",
                    self.log.display(),
                    self.log_tail()
                );
            }
            if ready() {
                return Ok(self.pid);
            }
            if Instant::now() > deadline {
                let tail = self.log_tail();
                let _ = terminate(self.pid, dir, Duration::from_secs(10));
                let _ = fs::remove_file(&self.pid_file);
                bail!(
                    "{what} was not ready after {} s; log {}:\n{tail}",
                    timeout.as_secs(),
                    self.log.display()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The last ~40 lines this start wrote to the log.
    fn log_tail(&self) -> String {
        log_tail(&self.log, self.log_start)
    }
}

/// The last ~40 lines of `path` after byte `from`.
pub fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    lines[start..].iter().map(|l| format!("    {l}\n")).collect()
}

/// The pid in a pid file, if the file exists and parses.
pub fn read_pid(pid_file: &Path) -> Result<Option<u32>> {
    match fs::read_to_string(pid_file) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", pid_file.display())),
    }
}

/// True when `pid` exists, is not a zombie, and its command line mentions `dir` (guards against
/// a pid reused by an unrelated process).
pub fn is_ours(pid: u32, dir: &Path) -> bool {
    alive(pid)
        && fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let needle = dir.as_os_str().as_encoded_bytes();
                c.windows(needle.len()).any(|w| w == needle)
            })
            .unwrap_or(false)
}

/// True when `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends `signal` (e.g. `TERM`) to `pid` through the shell's `kill` builtin, which every Debian
/// image has (the `kill` binary comes from procps, which slim images lack).
fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", signal, &pid.to_string()])
        .status()
        .context("running sh -c kill")?;
    if !status.success() && alive(pid) {
        bail!("kill -s {signal} {pid} failed ({status})");
    }
    Ok(())
}

/// SIGTERM, wait up to `timeout`, then SIGKILL; each signal only after re-checking that the pid
/// is still ours.
pub fn terminate(pid: u32, dir: &Path, timeout: Duration) -> Result<()> {
    if !is_ours(pid, dir) {
        return Ok(());
    }
    send_signal(pid, "TERM")?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return Ok(());
        }
        sleep(Duration::from_millis(20));
    }
    if is_ours(pid, dir) {
        eprintln!("pid {pid} still runs {} s after SIGTERM; sending SIGKILL", timeout.as_secs());
        send_signal(pid, "KILL")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            if Instant::now() > deadline {
                bail!("pid {pid} survived SIGKILL for 10 s");
            }
            sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_ours_only_when_its_cmdline_names_the_dir() {
        let me = std::process::id();
        let argv0 = std::env::args().next().unwrap();
        assert!(is_ours(me, Path::new(&argv0)));
        assert!(!is_ours(me, Path::new("/no/such/canal/dir")));
        assert!(!alive(u32::MAX), "no such pid");
    }

    #[test]
    fn read_pid_handles_missing_and_garbage() {
        let dir = std::env::temp_dir().join(format!("xtask-pid-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("server.pid");
        assert_eq!(read_pid(&f).unwrap(), None);
        fs::write(&f, "123\n").unwrap();
        assert_eq!(read_pid(&f).unwrap(), Some(123));
        fs::write(&f, "garbage").unwrap();
        assert_eq!(read_pid(&f).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
