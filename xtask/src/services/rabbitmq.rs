//! A private RabbitMQ (Debian's `rabbitmq-server`, run directly, no systemd) with its own `epmd`.
//!
//! The Erlang VM registers its node name with an epmd (Erlang port mapper) on `ERL_EPMD_PORT`, and
//! starts one as a daemon when none answers, which would leave a process nobody holds the pid
//! of. So each instance first starts its own `epmd -port E` in the foreground (pid in
//! `epmd.pid`) on a port of its own, then the node `rabbit@localhost`; two instances (two
//! checkouts, or a test's private broker beside the shared one) thus never share an epmd or a
//! node name registry. Everything binds 127.0.0.1: epmd through `ERL_EPMD_ADDRESS` (it adds
//! the loopback interfaces, also ::1), AMQP through `RABBITMQ_NODE_IP_ADDRESS`, the distribution
//! port through `-kernel inet_dist_use_interface`.
//!
//! `RABBITMQ_ALLOW_INPUT` makes Debian's start script `exec` the VM (instead of running it
//! under a shell that traps signals), so the pid we hold is the VM's own and SIGTERM stops the
//! broker cleanly (about 1 s); `-noinput` keeps the VM off its stdin. Mnesia (queues, durable
//! messages), the cookie's `HOME` and the logs all live in the instance directory; a restart
//! with `keep_data` reuses them and the epmd and distribution ports (file `ports`), and durable
//! queues with persistent messages come back.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::proc::{self, Launch};
use super::{Instance, Kind, Settings, data_subdir, find_program};

/// Debian's start script (package `rabbitmq-server`).
pub const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const EPMD_PID_FILE: &str = "epmd.pid";
const PORTS_FILE: &str = "ports";
/// The AMQP port opened 7–22 s after the start on the project's 2-core machine under load.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The epmd and Erlang distribution ports of an instance, kept for restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    epmd: u16,
    dist: u16,
}

impl Ports {
    fn to_file(self) -> String {
        format!("epmd={}\ndist={}\n", self.epmd, self.dist)
    }

    fn parse(text: &str) -> Result<Ports> {
        let (mut epmd, mut dist) = (None, None);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=').with_context(|| format!("bad line `{line}`"))?;
            let v: u16 = v.trim().parse().with_context(|| format!("bad port in `{line}`"))?;
            match k.trim() {
                "epmd" => epmd = Some(v),
                "dist" => dist = Some(v),
                other => bail!("unknown key `{other}`"),
            }
        }
        Ok(Ports { epmd: epmd.context("no epmd port")?, dist: dist.context("no dist port")? })
    }
}

/// rabbitmq.conf: `settings` as `key = value` lines (RabbitMQ's sysctl-like format).
fn rabbitmq_conf(settings: &Settings) -> String {
    let mut out = String::from(
        "# written by `cargo xtask services`; rewritten on every start. Listeners, node name and\n\
         # directories come from RABBITMQ_* variables (see xtask/src/services/rabbitmq.rs).\n",
    );
    for (k, v) in settings {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

/// Starts a fresh RabbitMQ in `dir` with AMQP on 127.0.0.1:`port` (a free one when `None`) and
/// waits until the AMQP port answers the protocol header with `Connection.Start`. `settings`
/// become rabbitmq.conf lines (e.g. `--set vm_memory_high_watermark.relative=0.2`). `dir` must
/// be absolute. `keep_data` restarts on the data and ports of an earlier run in `dir`.
///
/// Endpoint: `CANAL_TEST_RABBITMQ=amqp://guest:guest@127.0.0.1:PORT/%2f` (`guest` may log in
/// from loopback only, which is all these tests need).
pub fn start_rabbitmq(
    dir: &Path,
    port: Option<u16>,
    settings: &Settings,
    keep_data: bool,
) -> Result<Instance> {
    let script = Path::new(SERVER_SCRIPT);
    if !script.is_file() {
        bail!("{SERVER_SCRIPT} not found (Debian package rabbitmq-server)");
    }
    let epmd_bin = find_program("epmd").context("`epmd` not found (Debian package erlang-base)")?;
    // A leftover epmd of a run whose broker died (or was killed by a test).
    stop_epmd(dir)?;

    let ports_file = dir.join(PORTS_FILE);
    let fresh = super::free_ports(3)?;
    let ports = if keep_data {
        let text = fs::read_to_string(&ports_file)
            .with_context(|| format!("--keep-data: reading {}", ports_file.display()))?;
        Ports::parse(&text).with_context(|| format!("--keep-data: {}", ports_file.display()))?
    } else {
        Ports { epmd: fresh[0], dist: fresh[1] }
    };
    let port = port.unwrap_or(fresh[2]);
    if [ports.epmd, ports.dist].contains(&port) {
        bail!("AMQP port {port} is this instance's epmd or distribution port");
    }
    for p in [port, ports.epmd, ports.dist] {
        super::check_port_free(p)?;
    }
    fs::write(&ports_file, ports.to_file())
        .with_context(|| format!("writing {}", ports_file.display()))?;

    let mnesia = data_subdir(dir, "mnesia", keep_data)?;
    let home = data_subdir(dir, "home", keep_data)?;
    let log = dir.join("log");
    fs::create_dir_all(&log).with_context(|| format!("creating {}", log.display()))?;
    let conf = dir.join("rabbitmq.conf");
    fs::write(&conf, rabbitmq_conf(settings))
        .with_context(|| format!("writing {}", conf.display()))?;
    // No plugins (the management plugin would listen on 0.0.0.0:15672).
    let plugins = dir.join("enabled_plugins");
    fs::write(&plugins, "[].\n").with_context(|| format!("writing {}", plugins.display()))?;
    // An empty env file instead of /etc/rabbitmq/rabbitmq-env.conf.
    let env_conf = dir.join("rabbitmq-env.conf");
    fs::write(&env_conf, "").with_context(|| format!("writing {}", env_conf.display()))?;

    start_epmd(dir, &epmd_bin, ports.epmd)?;

    let path = |p: &Path| p.display().to_string();
    let env_set: Vec<(String, String)> = vec![
        ("HOME".into(), path(&home)),
        ("RABBITMQ_NODENAME".into(), "rabbit@localhost".into()),
        ("RABBITMQ_NODE_IP_ADDRESS".into(), "127.0.0.1".into()),
        ("RABBITMQ_NODE_PORT".into(), port.to_string()),
        ("RABBITMQ_DIST_PORT".into(), ports.dist.to_string()),
        ("ERL_EPMD_PORT".into(), ports.epmd.to_string()),
        ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
        ("RABBITMQ_MNESIA_BASE".into(), path(&mnesia)),
        ("RABBITMQ_LOG_BASE".into(), path(&log)),
        ("RABBITMQ_CONFIG_FILE".into(), path(&conf)),
        ("RABBITMQ_ADVANCED_CONFIG_FILE".into(), path(&dir.join("advanced.config"))),
        ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), path(&plugins)),
        ("RABBITMQ_CONF_ENV_FILE".into(), path(&env_conf)),
        ("RABBITMQ_ALLOW_INPUT".into(), "1".into()),
        (
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(),
            "-noinput -kernel inet_dist_use_interface {127,0,0,1}".into(),
        ),
    ];
    let spawned = proc::spawn(&Launch {
        program: script.to_owned(),
        // An Erlang user flag that nothing reads: it puts the instance directory on the command
        // line from the first exec on (the pid check of `proc::is_ours`).
        args: vec!["-canal_test_dir".into(), dir.as_os_str().to_owned()],
        dir: dir.to_owned(),
        log: dir.join("rabbitmq.log"),
        // Inherited RabbitMQ/Erlang variables would override ours (ERL_FLAGS, ERL_AFLAGS ...);
        // NOTIFY_SOCKET would make the script think it runs under systemd.
        env_remove: vec!["NOTIFY_SOCKET".into()],
        env_remove_prefixes: vec!["RABBITMQ_".into(), "ERL_".into()],
        env_set,
        pid_file: super::PID_FILE,
    });
    let ready = spawned.and_then(|s| {
        s.wait_ready_within("rabbitmq", dir, START_TIMEOUT, || amqp_ready(port).is_ok())
    });
    let pid = match ready {
        Ok(pid) => pid,
        Err(e) => {
            if let Err(e2) = stop_epmd(dir) {
                eprintln!("rabbitmq: also failed to stop its epmd: {e2:#}");
            }
            return Err(e);
        }
    };
    Ok(Instance {
        kind: Kind::Rabbitmq,
        dir: dir.to_owned(),
        pid,
        env: vec![(
            "CANAL_TEST_RABBITMQ".into(),
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        )],
    })
}

/// Starts `epmd -port PORT` in the foreground, bound to loopback, and waits until it answers.
/// It runs through a symlink `dir/epmd` so that its command line names the instance directory
/// (epmd takes no extra arguments), which is what `proc::is_ours` checks before any signal.
fn start_epmd(dir: &Path, epmd_bin: &Path, port: u16) -> Result<u32> {
    let target =
        epmd_bin.canonicalize().with_context(|| format!("resolving {}", epmd_bin.display()))?;
    let link = dir.join("epmd");
    match fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", link.display())),
    }
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    let spawned = proc::spawn(&Launch {
        program: link,
        args: vec!["-port".into(), port.to_string().into()],
        dir: dir.to_owned(),
        log: dir.join("epmd.log"),
        env_remove: vec![],
        env_remove_prefixes: vec!["ERL_".into()],
        env_set: vec![("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into())],
        pid_file: EPMD_PID_FILE,
    })?;
    spawned.wait_ready("epmd", dir, || epmd_names(port).is_ok())
}

/// Stops the instance's epmd (by its pid file) if it runs.
pub fn stop_epmd(dir: &Path) -> Result<()> {
    let pid_file = dir.join(EPMD_PID_FILE);
    let Some(pid) = proc::read_pid(&pid_file)? else { return Ok(()) };
    if proc::is_ours(pid, dir) {
        proc::terminate(pid, dir, Duration::from_secs(10))
            .with_context(|| format!("stopping epmd (pid {pid})"))?;
    }
    let _ = fs::remove_file(&pid_file);
    Ok(())
}

/// epmd's NAMES request (`n`): the reply starts with epmd's own port.
fn epmd_names(port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(&[0, 1, b'n'])?;
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply)?;
    let got = u32::from_be_bytes(reply);
    if got != u32::from(port) {
        bail!("epmd on {port} says its port is {got}");
    }
    Ok(())
}

/// True when `reply` (to the AMQP 0-9-1 protocol header) is a method frame on channel 0 carrying
/// Connection.Start (class 10, method 10).
fn is_connection_start(reply: &[u8]) -> bool {
    reply.len() >= 11 && reply[0] == 1 && reply[1..3] == [0, 0] && reply[7..11] == [0, 10, 0, 10]
}

/// Sends the AMQP 0-9-1 header to 127.0.0.1:`port` and checks for Connection.Start.
fn amqp_ready(port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"AMQP\x00\x00\x09\x01")?;
    let mut reply = [0u8; 11];
    s.read_exact(&mut reply)?;
    if !is_connection_start(&reply) {
        bail!("unexpected AMQP reply {reply:?}");
    }
    Ok(())
}

/// The files of the Debian package that [`start_rabbitmq`] runs.
pub fn installed() -> bool {
    Path::new(SERVER_SCRIPT).is_file() && find_program("epmd").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_file_round_trips_and_rejects_garbage() {
        let p = Ports { epmd: 24369, dist: 25672 };
        assert_eq!(Ports::parse(&p.to_file()).unwrap(), p);
        assert!(Ports::parse("epmd=1\n").is_err(), "dist missing");
        assert!(Ports::parse("epmd=1\ndist=x\n").is_err());
        assert!(Ports::parse("epmd=1\ndist=2\nfoo=3\n").is_err());
        assert!(Ports::parse("").is_err());
    }

    #[test]
    fn settings_become_conf_lines() {
        let mut s = Settings::new();
        s.insert("vm_memory_high_watermark.relative".into(), "0.2".into());
        let conf = rabbitmq_conf(&s);
        assert!(conf.contains("\nvm_memory_high_watermark.relative = 0.2\n"), "{conf}");
        assert!(rabbitmq_conf(&Settings::new()).lines().all(|l| l.starts_with('#')));
    }

    #[test]
    fn recognises_connection_start() {
        // The first bytes RabbitMQ 3.10 sent here: frame type 1, channel 0, size, class 10
        // method 10, version 0-9.
        let start = b"\x01\x00\x00\x00\x00\x01\xf0\x00\n\x00\n\x00\t";
        assert!(is_connection_start(start));
        // A server that does not speak 0-9-1 answers with its own protocol header.
        assert!(!is_connection_start(b"AMQP\x00\x00\x09\x01\x00\x00\x00"));
        assert!(!is_connection_start(&start[..8]));
    }
}
