//! The admin API on the metrics port (ZooKeeper and etcd, live MariaDB, in-process servers and the real
//! `canal-server admin` CLI): who may use it (loopback without a token; with a token, only its
//! bearer; off loopback, nobody without one), listing owners, a cursor reset by timestamp that
//! is refused while the client's consumer is connected and then makes the destination deliver
//! again from that time, a release that hands the destination to the other server, a move
//! that brings it back by name, and stop / start of a destination on one server.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canal_server::server::Server;
use mysql_async::prelude::Queryable;

use crate::ha::{consume, etcd, fixture, settings, wait_active, zk};
use crate::support;
use crate::wire::Client;

/// `method target` with optional bearer token; (status, body).
async fn request(addr: &str, method: &str, target: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(
        format!("{method} {target} HTTP/1.1\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_owned())
}

fn cli(metrics: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canal-server"));
    cmd.args(["admin", "--server", metrics]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.env_remove("CANAL_ADMIN_TOKEN").args(args).output().expect("canal-server admin runs")
}

/// An address of this host that is not loopback (the interface of the default route), if any.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_admin_api_auth_list_reset_by_timestamp_release() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let coord = zk(servers.clone());
    scenario("adminzk", coord, vec!["--zk".into(), servers]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_admin_api_auth_list_reset_by_timestamp_release() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    let coord = etcd(endpoint.clone());
    scenario("adminetcd", coord, vec!["--etcd".into(), endpoint]).await;
}

/// `client_coord`: how `canal-client` finds the same coordinator.
async fn scenario(
    tag: &str,
    coord_cfg: canal_coord::config::CoordConfig,
    client_coord: Vec<String>,
) {
    let Some(mut fx) = fixture(tag).await else { return };
    let dest = fx.db.clone();
    let a = Server::start(settings(coord_cfg.clone()), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&a, &dest, Duration::from_secs(20)).await;
    let mut sb = settings(coord_cfg.clone());
    sb.admin_token = Some("s3cret".into());
    let b = Server::start(sb, vec![fx.instance.clone()]).await.unwrap();
    let (ma, mb) = (a.metrics_addr().unwrap().to_string(), b.metrics_addr().unwrap().to_string());

    // Who may ask. Without a token: loopback only. With one: its bearer only.
    let (st, _) = request(&ma, "GET", "/admin/destinations", None).await;
    assert_eq!(st, 200);
    let (st, body) = request(&mb, "GET", "/admin/destinations", None).await;
    assert_eq!(st, 401, "{body}");
    let (st, _) = request(&mb, "GET", "/admin/destinations", Some("s3cre")).await;
    assert_eq!(st, 401);
    let (st, _) =
        request(&mb, "POST", &format!("/admin/destinations/{dest}/release"), Some("wrong")).await;
    assert_eq!(st, 401);
    let (st, body) = request(&mb, "GET", "/admin/destinations", Some("s3cret")).await;
    assert_eq!(st, 200, "{body}");
    // The list names the owner (server A) on both servers.
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["destinations"][0]["owner"], a.local_addr().to_string(), "{v}");
    assert_eq!(v["destinations"][0]["active_here"], false);
    let out = cli(&mb, None, &["list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{out:?}");
    let out = cli(&mb, Some("s3cret"), &["list"]);
    assert!(out.status.success(), "{out:?}");
    // Off loopback, a server without a token answers nobody.
    match non_loopback_ip() {
        Some(ip) => {
            let mut s = settings(coord_cfg.clone());
            s.metrics_bind = Some(std::net::SocketAddr::new(ip, 0));
            let c = Server::start(s, vec![]).await.unwrap();
            let mc = c.metrics_addr().unwrap().to_string();
            let (st, body) = request(&mc, "GET", "/admin/destinations", None).await;
            assert_eq!(st, 403, "{body}");
            // Status and metrics stay open.
            assert_eq!(request(&mc, "GET", "/metrics", None).await.0, 200);
            c.shutdown().await;
        }
        None => eprintln!("admin: no non-loopback address on this host; 403 not checked"),
    }

    // Rows 1..5, a time T, rows 6..10 (binlog times have second precision: a second apart).
    for i in 1..=5 {
        fx.admin.query_drop(format!("INSERT INTO `{dest}`.t VALUES ({i})")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 6..=10 {
        fx.admin.query_drop(format!("INSERT INTO `{dest}`.t VALUES ({i})")).await.unwrap();
    }
    let ids = consume(a.local_addr(), &dest, 10).await;
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());

    // Fenced: refused while the client's consumer is connected, on a standby, and with a bad
    // target; then by timestamp through the CLI.
    let mut c = Client::connect(a.local_addr()).await;
    c.auth("", None).await;
    assert_eq!(c.subscribe(&dest, "1001").await.error_code, None);
    let target = format!("/admin/destinations/{dest}/cursor?client=1001&timestamp={t}");
    let (st, body) = request(&ma, "POST", &target, None).await;
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("connected"), "{body}");
    drop(c);
    let (st, body) = request(&mb, "POST", &target, Some("s3cret")).await;
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("does not run on this server"), "{body}");
    let (st, body) = request(
        &ma,
        "POST",
        &format!("/admin/destinations/{dest}/cursor?position=nofile&timestamp=1"),
        None,
    )
    .await;
    assert_eq!(st, 400, "{body}");
    // The dropped session ends asynchronously: retry the reset for a moment.
    let t0 = std::time::Instant::now();
    let out = loop {
        let out = cli(
            &ma,
            None,
            &["reset-cursor", &dest, "--client", "1001", "--timestamp", &t.to_string()],
        );
        if out.status.success() || t0.elapsed() > Duration::from_secs(10) {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("admin: reset by timestamp {t}: {answer}");
    assert!(answer["cursor"]["postion"]["timestamp"].as_i64().unwrap() <= t, "{answer}");
    // The destination delivers again from T: rows 6..10, nothing before.
    wait_active(&a, &dest, Duration::from_secs(20)).await;
    let ids = consume(a.local_addr(), &dest, 5).await;
    assert_eq!(ids, (6..=10).collect::<Vec<_>>());

    // `canal-client status --admin` shows what the owner's admin API says, beside the
    // coordinator's view; without the token the other server refuses it.
    if let Some(client) = crate::ha_harness::client_bin() {
        let status = |admin: &str, token: Option<&str>| {
            let mut cmd = Command::new(&client);
            cmd.arg("status").args(&client_coord).args(["--destination", &dest, "--json"]);
            cmd.args(["--admin", admin]).env_remove("CANAL_ADMIN_TOKEN");
            if let Some(t) = token {
                cmd.args(["--admin-token", t]);
            }
            cmd.output().expect("canal-client runs")
        };
        let out = status(&ma, None);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["admin"]["owner"], a.local_addr().to_string(), "{v}");
        assert_eq!(v["admin"]["active_here"], true, "{v}");
        assert_eq!(v["server"]["address"], a.local_addr().to_string(), "{v}");
        let out = status(&mb, None);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{out:?}");
        let out = status(&mb, Some("s3cret"));
        assert!(out.status.success(), "{out:?}");
    }

    // Release through the CLI: the other server takes over.
    let out = cli(&ma, None, &["release", &dest]);
    assert!(out.status.success(), "{out:?}");
    wait_active(&b, &dest, Duration::from_secs(20)).await;
    let (st, body) =
        request(&ma, "POST", &format!("/admin/destinations/{dest}/release"), None).await;
    assert_eq!(st, 409, "{body}");

    // Move it back by name (a directed release); an unknown target is refused.
    let (st, body) = request(
        &mb,
        "POST",
        &format!("/admin/destinations/{dest}/move?to=10.9.9.9:1"),
        Some("s3cret"),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    let t0 = std::time::Instant::now();
    let out = cli(&mb, Some("s3cret"), &["move", &dest, "--to", &a.local_addr().to_string()]);
    assert!(out.status.success(), "{out:?}");
    wait_active(&a, &dest, Duration::from_secs(20)).await;
    let took = t0.elapsed();
    eprintln!("admin: moved to the named server in {took:?}");
    // With two servers any graceful hand-over goes to the other one; that a directed one skips
    // the other standbys is `conformance::*::directed_release_goes_to_the_named_candidate`.

    // Stop on A: B takes over and A no longer competes (its registration is gone); start: A
    // registers and competes again.
    let coord = canal_coord::Coordinator::new(coord_cfg.open_backend().unwrap());
    let members = || async {
        let s = coord.session().await.unwrap();
        s.children(&canal_coord::path::destination_cluster(&dest)).await.unwrap()
    };
    let out = cli(&ma, None, &["stop", &dest]);
    assert!(out.status.success(), "{out:?}");
    wait_active(&b, &dest, Duration::from_secs(20)).await;
    assert!(!members().await.contains(&a.local_addr().to_string()), "A still registered");
    let (_, body) = request(&ma, "GET", "/status", None).await;
    assert!(body.contains("\"stopped\": true"), "{body}");
    let (st, body) = request(&ma, "POST", &target, None).await;
    assert_eq!(st, 409, "{body}");
    let out = cli(&ma, None, &["start", &dest]);
    assert!(out.status.success(), "{out:?}");
    let t0 = std::time::Instant::now();
    while !members().await.contains(&a.local_addr().to_string()) {
        assert!(t0.elapsed() < Duration::from_secs(10), "A did not register again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B stops: A, competing again, takes over.
    let (st, body) =
        request(&mb, "POST", &format!("/admin/destinations/{dest}/stop"), Some("s3cret")).await;
    assert_eq!(st, 200, "{body}");
    wait_active(&a, &dest, Duration::from_secs(20)).await;
    coord.close().await;
    b.shutdown().await;
    a.shutdown().await;
}
