//! An exclusive lock on a file, held by a `flock` child process (util-linux), so that concurrent
//! `cargo xtask` runs in one checkout start, reuse and stop the shared services one at a time.
//!
//! `std::fs::File::lock` would do, but it is newer than the workspace's rust-version. The child
//! holds the lock until its stdin closes, which also happens when this process dies.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result, bail};

/// Held while alive; dropping it releases the lock.
#[derive(Debug)]
pub struct FileLock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl FileLock {
    /// Blocks until the lock on `path` is ours; says so when it has to wait.
    pub fn acquire(path: &Path) -> Result<Self> {
        if let Some(lock) = Self::spawn(path, true)? {
            return Ok(lock);
        }
        eprintln!("waiting for another xtask run to release {}", path.display());
        Self::spawn(path, false)?.context("flock gave up without the lock")
    }

    fn spawn(path: &Path, nonblocking: bool) -> Result<Option<Self>> {
        let mut cmd = Command::new("flock");
        if nonblocking {
            cmd.arg("-n");
        }
        let mut child = cmd
            .arg(path)
            .args(["sh", "-c", "echo locked; exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("running flock (util-linux)")?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("flock stdout")?)
            .read_line(&mut line)
            .context("reading from flock")?;
        if line.trim() == "locked" {
            return Ok(Some(Self { child, stdin }));
        }
        drop(stdin);
        let status = child.wait().context("waiting for flock")?;
        if nonblocking && status.code() == Some(1) {
            return Ok(None);
        }
        bail!("flock {} failed ({status})", path.display())
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
