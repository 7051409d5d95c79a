//! A private MariaDB writing ROW binlogs, with the `canal` replication account.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::proc::{self, Launch};
use super::{Instance, Kind, Settings, find_program, fresh_subdir, is_root};

/// Variables that the mariadb tools read and that would break the root login or redirect it.
const ENV_REMOVE: [&str; 4] = ["MYSQL_PWD", "MYSQL_HOST", "MYSQL_TCP_PORT", "MYSQL_UNIX_PORT"];

/// The accounts, created with `sql_log_bin=0` so that a fresh binlog holds no test noise. With
/// `skip-name-resolve`, a TCP login from 127.0.0.1 does not match `root@localhost`, hence the
/// extra root account. `REPLICATION CLIENT` is an alias of `BINLOG MONITOR` on 10.11.
const ACCOUNTS_SQL: &str = "\
SET sql_log_bin=0;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'canal'@'%' IDENTIFIED BY 'canal';
GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'canal'@'%';
FLUSH PRIVILEGES;
";

/// my.cnf `[mysqld]` lines for an instance in `dir` on `port`, with `settings` replacing or
/// adding keys (`-` and `_` are the same in a key).
fn my_cnf(dir: &Path, port: u16, settings: &Settings) -> String {
    let d = dir.display();
    let mut lines: Vec<(String, String)> = vec![
        ("datadir".into(), format!("{d}/data")),
        ("socket".into(), format!("{d}/mysqld.sock")),
        ("pid-file".into(), format!("{d}/mysqld.pid")),
        ("log-error".into(), format!("{d}/mariadbd.err")),
        ("tmpdir".into(), format!("{d}/tmp")),
        ("port".into(), port.to_string()),
        ("bind-address".into(), "127.0.0.1".into()),
        ("skip-name-resolve".into(), String::new()),
        ("log-bin".into(), format!("{d}/data/binlog")),
        ("server-id".into(), "1".into()),
        ("binlog_format".into(), "ROW".into()),
        ("binlog_row_image".into(), "FULL".into()),
        ("binlog_row_metadata".into(), "FULL".into()),
        ("binlog_checksum".into(), "CRC32".into()),
        ("max_binlog_size".into(), "16M".into()),
        ("sync_binlog".into(), "0".into()),
        ("innodb_flush_log_at_trx_commit".into(), "2".into()),
        ("innodb_buffer_pool_size".into(), "64M".into()),
        ("innodb_log_file_size".into(), "32M".into()),
        ("performance_schema".into(), "OFF".into()),
        ("character-set-server".into(), "utf8mb4".into()),
        ("collation-server".into(), "utf8mb4_general_ci".into()),
    ];
    if is_root() {
        lines.insert(0, ("user".into(), "root".into()));
    }
    let norm = |k: &str| k.trim().replace('-', "_");
    for (k, v) in settings {
        match lines.iter_mut().find(|(lk, _)| norm(lk) == norm(k)) {
            Some(line) => line.1 = v.clone(),
            None => lines.push((k.clone(), v.clone())),
        }
    }
    let mut out = String::from("# written by `cargo xtask services`; rewritten on every start\n");
    out.push_str("[mysqld]\n");
    for (k, v) in lines {
        if v.is_empty() {
            out.push_str(&format!("{k}\n"));
        } else {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

/// Starts a fresh MariaDB in `dir` (data in `dir/data`, binlogs `dir/data/binlog.NNNNNN`) on
/// `port` (a free one when `None`), waits until it answers, and creates the accounts
/// `root@127.0.0.1` (no password) and `canal`/`canal` (SELECT, REPLICATION SLAVE, REPLICATION
/// CLIENT, BINLOG MONITOR). `dir` must be absolute.
///
/// Endpoints: `CANAL_TEST_MYSQL`, `CANAL_TEST_MYSQL_ADMIN`, `CANAL_TEST_MYSQL_DATADIR`,
/// `CANAL_TEST_MYSQL_SOCKET`.
pub fn start_mariadb(dir: &Path, port: Option<u16>, settings: &Settings) -> Result<Instance> {
    let port = match port {
        Some(p) => p,
        None => super::free_port()?,
    };
    super::check_port_free(port)?;
    let mariadbd = find_program("mariadbd").context("`mariadbd` not found")?;
    let install_db =
        find_program("mariadb-install-db").context("`mariadb-install-db` not found")?;
    let client = find_program("mariadb").context("`mariadb` (client) not found")?;

    let data = fresh_subdir(dir, "data")?;
    fresh_subdir(dir, "tmp")?;
    let _ = fs::remove_file(dir.join("mysqld.sock"));
    // A fresh error log per start, so that failure reports show only this start.
    let _ = fs::remove_file(dir.join("mariadbd.err"));
    let cnf = dir.join("my.cnf");
    fs::write(&cnf, my_cnf(dir, port, settings))
        .with_context(|| format!("writing {}", cnf.display()))?;
    let defaults = format!("--defaults-file={}", cnf.display());

    let install_log = dir.join("install-db.log");
    let log = fs::File::create(&install_log)
        .with_context(|| format!("creating {}", install_log.display()))?;
    let status = Command::new(&install_db)
        .arg(&defaults) // must come first
        .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-log-bin"])
        .arg(format!("--datadir={}", data.display()))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating a file handle")?)
        .stderr(log)
        .envs_removed(&ENV_REMOVE)
        .status()
        .with_context(|| format!("running {}", install_db.display()))?;
    if !status.success() {
        let err_log = dir.join("mariadbd.err");
        bail!(
            "mariadb-install-db failed ({status}); server log {}:\n{}",
            err_log.display(),
            proc::log_tail(&err_log, 0)
        );
    }

    let socket = dir.join("mysqld.sock");
    let spawned = proc::spawn(&Launch {
        program: mariadbd,
        args: vec![defaults.into()], // --defaults-file must be the first option
        dir: dir.to_owned(),
        // The same file as log-error: the server's stdout/stderr say little, its error log all.
        log: dir.join("mariadbd.err"),
        env_remove: ENV_REMOVE.map(String::from).to_vec(),
        env_remove_prefixes: vec![],
        env_set: vec![],
        pid_file: super::PID_FILE,
    })?;
    let pid = spawned.wait_ready("mariadbd", dir, || {
        socket.exists() && run_sql(&client, &socket, "SELECT 1").is_ok()
    })?;
    if let Err(e) = run_sql(&client, &socket, ACCOUNTS_SQL) {
        let _ = proc::terminate(pid, dir, Kind::Mariadb.stop_timeout());
        return Err(e.context("creating the test accounts"));
    }
    Ok(Instance {
        kind: Kind::Mariadb,
        dir: dir.to_owned(),
        pid,
        env: vec![
            ("CANAL_TEST_MYSQL".into(), format!("mysql://canal:canal@127.0.0.1:{port}")),
            ("CANAL_TEST_MYSQL_ADMIN".into(), format!("mysql://root@127.0.0.1:{port}")),
            ("CANAL_TEST_MYSQL_DATADIR".into(), data.display().to_string()),
            ("CANAL_TEST_MYSQL_SOCKET".into(), socket.display().to_string()),
        ],
    })
}

/// Runs SQL as root over the unix socket with the `mariadb` client.
fn run_sql(client: &Path, socket: &Path, sql: &str) -> Result<()> {
    let mut child = Command::new(client)
        .arg("--no-defaults")
        .arg("--protocol=socket")
        .arg(format!("--socket={}", socket.display()))
        .args(["-uroot", "--batch", "--silent", "--connect-timeout=2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .envs_removed(&ENV_REMOVE)
        .spawn()
        .context("spawning the mariadb client")?;
    child
        .stdin
        .take()
        .context("mariadb client stdin")?
        .write_all(sql.as_bytes())
        .context("writing SQL to the mariadb client")?;
    let out = child.wait_with_output().context("waiting for the mariadb client")?;
    if !out.status.success() {
        bail!("mariadb client failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `Command::env_remove` for several names.
trait EnvsRemoved {
    fn envs_removed(&mut self, names: &[&str]) -> &mut Self;
}

impl EnvsRemoved for Command {
    fn envs_removed(&mut self, names: &[&str]) -> &mut Self {
        for n in names {
            self.env_remove(n);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_replace_defaults_with_dash_and_underscore_alike() {
        let mut s = Settings::new();
        s.insert("max-binlog-size".into(), "4096".into());
        s.insert("binlog_row_metadata".into(), "NO_LOG".into());
        s.insert("gtid_strict_mode".into(), "1".into());
        let cnf = my_cnf(Path::new("/x/db"), 3307, &s);
        assert!(cnf.contains("\nmax_binlog_size=4096\n"), "{cnf}");
        assert!(!cnf.contains("16M"), "{cnf}");
        assert!(cnf.contains("\nbinlog_row_metadata=NO_LOG\n"), "{cnf}");
        assert!(cnf.ends_with("gtid_strict_mode=1\n"), "{cnf}");
        assert!(cnf.contains("\nport=3307\n") && cnf.contains("\nbind-address=127.0.0.1\n"));
        assert!(cnf.contains("\nlog-bin=/x/db/data/binlog\n"), "{cnf}");
        assert_eq!(cnf.contains("\nuser=root\n"), is_root());
    }
}
