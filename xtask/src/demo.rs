//! `cargo xtask demo`: the newcomer's first command. Starts a private MariaDB on loopback
//! (installing it when missing and allowed), a `canal-server` on embedded coordination, writes
//! some changes, and shows them arriving in `canal-client tail`. Everything it started stops at
//! the end, and on Ctrl-C (a watchdog stops the services; the server hands over and exits).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::services;
use crate::test::ServicesGuard;

/// Entry point: `cargo xtask demo [--rounds N]`.
pub fn run(args: &[&str]) -> Result<()> {
    let mut rounds: u32 = 5;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--rounds" => rounds = it.next().context("--rounds needs a number")?.parse()?,
            other => bail!("unknown demo option `{other}` (use --rounds N)"),
        }
    }
    let guard = ServicesGuard::arm()?;
    services::begin_test_run(std::process::id())?;
    let result = demo(rounds);
    guard.finish();
    result
}

fn admin_sql(url: &str, statement: &str) -> Result<String> {
    let rest = url.strip_prefix("mysql://").context("admin URL")?;
    let (user, hostport) = rest.rsplit_once('@').context("admin URL")?;
    let (host, port) = hostport.rsplit_once(':').context("admin URL")?;
    let out = Command::new("mariadb")
        .args([
            "-h",
            host,
            "-P",
            port.trim_end_matches('/'),
            "-u",
            user,
            "--batch",
            "--skip-column-names",
        ])
        .args(["-e", statement])
        .output()
        .context("running the mariadb client")?;
    if !out.status.success() {
        bail!("SQL failed: {statement}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn demo(rounds: u32) -> Result<()> {
    let env = services::read_env(&services::env_file()?)?;
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let admin = get("CANAL_TEST_MYSQL_ADMIN").context("no MariaDB endpoint")?;
    let replica = get("CANAL_TEST_MYSQL").context("no MariaDB endpoint")?;

    eprintln!("==> building canal-server and canal-client");
    services::apt::ensure_build_deps()?;
    let ok = Command::new(services::cargo_bin())
        .args(["build", "--quiet", "-p", "canal-server", "-p", "canal-client"])
        .current_dir(services::workspace_root())
        .status()?;
    if !ok.success() {
        bail!("build failed");
    }
    let bin = services::target_dir()?.join("debug");

    admin_sql(
        &admin,
        "DROP DATABASE IF EXISTS demo; CREATE DATABASE demo; CREATE TABLE demo.orders (id INT PRIMARY KEY, customer VARCHAR(32), amount DECIMAL(10,2), status ENUM('new','paid','shipped'), created DATETIME(3))",
    )?;
    let status = admin_sql(&admin, "SHOW MASTER STATUS")?;
    let mut cols = status.split_whitespace();
    let (file, pos) =
        (cols.next().context("master status")?, cols.next().context("master status")?);

    let dir = services::target_dir()?.join("demo");
    let _ = std::fs::remove_dir_all(&dir);
    let conf = dir.join("conf");
    std::fs::create_dir_all(conf.join("demo"))?;
    std::fs::write(
        conf.join("canal.toml"),
        format!(
            "ip = \"127.0.0.1\"\nport = 0\nmetrics_port = 0\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )?;
    let rest = replica.strip_prefix("mysql://").context("replica URL")?;
    let (cred, hostport) = rest.rsplit_once('@').context("replica URL")?;
    let (user, pass) = cred.split_once(':').unwrap_or((cred, ""));
    std::fs::write(
        conf.join("demo").join("instance.toml"),
        format!(
            "[master]\naddress = \"{}\"\njournal_name = \"{file}\"\nposition = {pos}\n[db]\nusername = \"{user}\"\npassword = \"{pass}\"\n[filter]\nregex = 'demo\\..*'\n",
            hostport.trim_end_matches('/')
        ),
    )?;

    eprintln!("==> starting canal-server (embedded coordination)");
    let mut server = Command::new(bin.join("canal-server"))
        .args(["run", "--conf"])
        .arg(&conf)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting canal-server")?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let addr = line.split_whitespace().nth(3).unwrap_or_default().trim_end_matches(',').to_owned();
    eprintln!("    {}", line.trim());

    // Each round shows 5 row changes plus, from MariaDB's ANNOTATE_ROWS, the text of its 3
    // statements: 8 lines in `tail`.
    let per_round = 8u32;
    eprintln!("==> canal-client tail: every change written below arrives here");
    let mut client = Command::new(bin.join("canal-client"))
        .args(["tail", "--server", &addr, "--destination", "demo", "--format", "table"])
        .args(["--max", &(rounds * per_round).to_string(), "--timeout", "60"])
        .spawn()
        .context("starting canal-client")?;

    for r in 0..rounds {
        let base = r * 3;
        let sql = format!(
            "INSERT INTO demo.orders VALUES ({a}, 'alice', 19.90, 'new', NOW(3)), ({b}, 'bob', 5.00, 'new', NOW(3)), ({c}, 'carol', 120.00, 'new', NOW(3)); \
             UPDATE demo.orders SET status = 'paid', amount = amount + 1 WHERE id = {a}; DELETE FROM demo.orders WHERE id = {b}",
            a = base + 1,
            b = base + 2,
            c = base + 3
        );
        admin_sql(&admin, &sql)?;
        eprintln!(
            "==> round {}/{rounds}: 3 inserts, 1 update, 1 delete written to demo.orders",
            r + 1
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let client_ok = client.wait()?.success();
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    let _ = server.wait();
    if !client_ok {
        bail!("canal-client did not receive every change");
    }
    eprintln!(
        "==> demo done: {} row changes went MariaDB → canal-server → canal-client",
        rounds * 5
    );
    Ok(())
}
