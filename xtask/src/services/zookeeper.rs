//! A private standalone ZooKeeper (Debian's jars, `java QuorumPeerMain` run directly).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::proc::{self, Launch};
use super::{Instance, Kind, Settings, data_subdir, find_program};

/// Jars from the Debian packages `zookeeper`, `libslf4j-java` and `liblog4j1.2-java`. The
/// zookeeper jar's manifest brings in netty, jetty, jackson and slf4j-api.
pub const JARS: [&str; 3] = [
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
];

const LOG4J: &str = "\
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
";

/// zoo.cfg for `dir` and `port`, `settings` replacing or adding keys.
///
/// A 200 ms tick with a 400 ms minimum session timeout lets tests use ~1 s sessions (expiry is
/// rounded up to the next tick); the maximum stays at 60 s so that clients asking for Canal-like
/// timeouts are not clamped. The AdminServer (0.0.0.0:8080 by default) is off, and `srvr` is
/// whitelisted because `ruok` answers before the server serves.
fn zoo_cfg(dir: &Path, port: u16, settings: &Settings) -> String {
    let mut lines: Vec<(String, String)> = vec![
        ("tickTime".into(), "200".into()),
        ("minSessionTimeout".into(), "400".into()),
        ("maxSessionTimeout".into(), "60000".into()),
        ("initLimit".into(), "10".into()),
        ("syncLimit".into(), "5".into()),
        ("dataDir".into(), format!("{}/data", dir.display())),
        ("clientPort".into(), port.to_string()),
        ("clientPortAddress".into(), "127.0.0.1".into()),
        ("maxClientCnxns".into(), "0".into()),
        ("admin.enableServer".into(), "false".into()),
        ("4lw.commands.whitelist".into(), "srvr,ruok,stat,mntr,conf,cons".into()),
        ("autopurge.purgeInterval".into(), "0".into()),
    ];
    for (k, v) in settings {
        match lines.iter_mut().find(|(lk, _)| lk == k) {
            Some(line) => line.1 = v.clone(),
            None => lines.push((k.clone(), v.clone())),
        }
    }
    let mut out = String::from("# written by `cargo xtask services`; rewritten on every start\n");
    for (k, v) in lines {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

/// Starts a fresh standalone ZooKeeper in `dir` on `port` (a free one when `None`) and waits until
/// `srvr` reports `Mode: standalone`. `settings` override zoo.cfg keys (e.g. `tickTime=100`).
/// `dir` must be absolute. `keep_data` starts on the data of an earlier run (a restart).
///
/// Endpoint: `CANAL_TEST_ZK=127.0.0.1:PORT`.
pub fn start_zookeeper(
    dir: &Path,
    port: Option<u16>,
    settings: &Settings,
    keep_data: bool,
) -> Result<Instance> {
    let port = match port {
        Some(p) => p,
        None => super::free_port()?,
    };
    super::check_port_free(port)?;
    let java = find_program("java").context("`java` not found (zookeeper needs a JRE)")?;
    data_subdir(dir, "data", keep_data)?;
    let conf = dir.join("conf");
    fs::create_dir_all(&conf).with_context(|| format!("creating {}", conf.display()))?;
    let cfg = conf.join("zoo.cfg");
    fs::write(&cfg, zoo_cfg(dir, port, settings))
        .with_context(|| format!("writing {}", cfg.display()))?;
    let log4j = conf.join("log4j.properties");
    fs::write(&log4j, LOG4J).with_context(|| format!("writing {}", log4j.display()))?;

    let mut classpath = conf.display().to_string();
    for jar in JARS {
        classpath.push(':');
        classpath.push_str(jar);
    }
    let args: Vec<String> = vec![
        "-Xmx256m".into(),
        "-XX:+UseSerialGC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-Djava.net.preferIPv4Stack=true".into(),
        "-Dzookeeper.admin.enableServer=false".into(),
        format!("-Dlog4j.configuration=file:{}", log4j.display()),
        format!("-Dzookeeper.log.dir={}", dir.display()),
        "-cp".into(),
        classpath,
        "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
        cfg.display().to_string(),
    ];
    let spawned = proc::spawn(&Launch {
        program: java,
        args: args.into_iter().map(Into::into).collect(),
        dir: dir.to_owned(),
        log: dir.join("zookeeper.log"),
        env_remove: vec!["JAVA_TOOL_OPTIONS".into(), "JDK_JAVA_OPTIONS".into()],
        env_remove_prefixes: vec![],
        env_set: vec![],
        pid_file: super::PID_FILE,
    })?;
    let pid = spawned.wait_ready("zookeeper", dir, || {
        four_letter(port, "srvr").is_ok_and(|r| r.contains("Mode: standalone"))
    })?;
    Ok(Instance {
        kind: Kind::Zookeeper,
        dir: dir.to_owned(),
        pid,
        env: vec![("CANAL_TEST_ZK".into(), format!("127.0.0.1:{port}"))],
    })
}

/// Sends a four-letter word and returns the reply.
fn four_letter(port: u16, word: &str) -> Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .context("connecting to zookeeper")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(word.as_bytes())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_replace_defaults() {
        let mut s = Settings::new();
        s.insert("tickTime".into(), "100".into());
        let cfg = zoo_cfg(Path::new("/x/zk"), 2182, &s);
        assert!(cfg.contains("\ntickTime=100\n") && !cfg.contains("tickTime=200"), "{cfg}");
        assert!(cfg.contains("\nclientPortAddress=127.0.0.1\n"), "{cfg}");
        assert!(cfg.contains("\nadmin.enableServer=false\n"), "{cfg}");
        assert!(cfg.contains("\ndataDir=/x/zk/data\n"), "{cfg}");
    }
}
