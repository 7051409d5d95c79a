//! A private single-node etcd.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::proc::{self, Launch};
use super::{Instance, Kind, Settings, data_subdir, find_program};

/// Starts a fresh single-node etcd in `dir` (data in `dir/data`) with its client URL on `port` (a
/// free one when `None`) and a free peer port, and waits until `/health` is true. `settings` add
/// or replace `--KEY=VALUE` flags. `dir` must be absolute. `keep_data` restarts on the data of an
/// earlier run, with the peer port it had (kept in `dir/peer-port`).
///
/// The short heartbeat/election (50/500 ms) makes the first election fast; with one voter this is
/// safe. Inherited `ETCD_*`/`ETCDCTL_*` variables would clash with the flags ("conflicting
/// environment variable ... is shadowed"), so they are removed.
///
/// Endpoint: `CANAL_TEST_ETCD=http://127.0.0.1:PORT`.
pub fn start_etcd(
    dir: &Path,
    port: Option<u16>,
    settings: &Settings,
    keep_data: bool,
) -> Result<Instance> {
    let peer_file = dir.join("peer-port");
    let old_peer = if keep_data {
        let text = std::fs::read_to_string(&peer_file)
            .with_context(|| format!("--keep-data: reading {}", peer_file.display()))?;
        Some(text.trim().parse::<u16>().context("--keep-data: bad peer-port file")?)
    } else {
        None
    };
    let (port, peer_port) = match (port, old_peer) {
        (Some(p), Some(peer)) => (p, peer),
        (Some(p), None) => (p, super::free_port()?),
        (None, Some(peer)) => (super::free_port()?, peer),
        (None, None) => super::free_port_pair()?,
    };
    super::check_port_free(port)?;
    let etcd = find_program("etcd").context("`etcd` not found")?;
    let data = data_subdir(dir, "data", keep_data)?;
    std::fs::write(&peer_file, peer_port.to_string())
        .with_context(|| format!("writing {}", peer_file.display()))?;
    let client_url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut flags: Vec<(String, String)> = vec![
        ("name".into(), "canal-test".into()),
        ("data-dir".into(), data.display().to_string()),
        ("listen-client-urls".into(), client_url.clone()),
        ("advertise-client-urls".into(), client_url.clone()),
        ("listen-peer-urls".into(), peer_url.clone()),
        ("initial-advertise-peer-urls".into(), peer_url.clone()),
        ("initial-cluster".into(), format!("canal-test={peer_url}")),
        ("initial-cluster-state".into(), "new".into()),
        ("initial-cluster-token".into(), format!("canal-test-{port}")),
        ("heartbeat-interval".into(), "50".into()),
        ("election-timeout".into(), "500".into()),
    ];
    for (k, v) in settings {
        let k = k.trim_start_matches('-');
        match flags.iter_mut().find(|(fk, _)| fk == k) {
            Some(f) => f.1 = v.clone(),
            None => flags.push((k.to_owned(), v.clone())),
        }
    }
    let spawned = proc::spawn(&Launch {
        program: etcd,
        args: flags.iter().map(|(k, v)| format!("--{k}={v}").into()).collect(),
        dir: dir.to_owned(),
        log: dir.join("etcd.log"),
        env_remove: vec![],
        env_remove_prefixes: vec!["ETCD_".into(), "ETCDCTL_".into()],
        env_set: vec![("ETCDCTL_API".into(), "3".into())],
        pid_file: super::PID_FILE,
    })?;
    let pid = spawned.wait_ready("etcd", dir, || healthy(port))?;
    Ok(Instance {
        kind: Kind::Etcd,
        dir: dir.to_owned(),
        pid,
        env: vec![("CANAL_TEST_ETCD".into(), client_url)],
    })
}

/// `GET /health` answers `{"health":"true"}`.
fn healthy(port: u16) -> bool {
    let get = || -> Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    };
    get().is_ok_and(|r| r.replace(' ', "").contains("\"health\":\"true\""))
}
