//! A private Kafka-protocol broker: `noida-db` (crates.io) with only its Kafka service.
//!
//! No Apache Kafka or Redpanda package is reachable from here (Debian, crates.io, PyPI); noida-db
//! 0.2.3 is a single-binary broker that librdkafka clients (rdkafka, confluent-kafka, kcat) use
//! with idempotent producers, all codecs, consumer groups and transactions. It is built once per
//! machine with `cargo install` into a cache outside the checkout ([`ensure_noida`]).
//!
//! What noida-db keeps across a restart (read in its source, 0.2.3, `src/persistence.rs` and
//! `src/kafka/mod.rs`, and checked by stopping and restarting a broker on its data dir): the whole
//! broker state is one JSON snapshot, `DATA/kafka.json` (topics, record batches, producer
//! sequence numbers, committed group offsets), loaded at start when present. It is written
//! atomically (temp file + rename) on SIGTERM/SIGINT and, while running, about one second after a
//! data-changing request. So a SIGTERM restart loses nothing (checked: 6 keyed records in a
//! 3-partition topic read back with confluent-kafka after `instance down` + `instance up
//! --keep-data`); a SIGKILL loses what was acked in the last ~1 s (checked: records produced with
//! acks=all 0.1 s before a SIGKILL were gone after the restart, their topic too; no fsync
//! either). Transactions open at save time come back aborted, and producer epochs (fencing) are
//! not saved.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::lock::FileLock;
use super::proc::{self, Launch};
use super::{Instance, Kind, Settings, data_subdir};

/// The pinned broker: a young, single-author project, so one exact version.
pub const NOIDA_VERSION: &str = "0.2.3";
/// The build takes about 8 minutes of one core on the project's machine.
const NOIDA_BUILD_MINUTES: u32 = 8;

/// Where machine-wide tools are cached: `$CANAL_TOOLS_CACHE`, else `$HOME/.cache/canal-rs`.
fn cache_root_from(tools_cache: Option<OsString>, home: Option<OsString>) -> Result<PathBuf> {
    match (tools_cache, home) {
        (Some(c), _) if !c.is_empty() => Ok(PathBuf::from(c)),
        (_, Some(h)) if !h.is_empty() => Ok(PathBuf::from(h).join(".cache/canal-rs")),
        _ => bail!("neither CANAL_TOOLS_CACHE nor HOME is set: no place to cache noida-db"),
    }
}

/// The install root of the pinned noida-db under the cache root (`cargo install --root` layout).
fn noida_root(cache: &Path) -> PathBuf {
    cache.join(format!("noida-db-{NOIDA_VERSION}"))
}

/// The binary in an install root.
fn noida_bin(root: &Path) -> PathBuf {
    root.join("bin/noida-db")
}

/// True when `bin` runs and reports the pinned version.
fn usable(bin: &Path) -> bool {
    bin.is_file()
        && Command::new(bin).arg("version").output().is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim() == format!("noida-db {NOIDA_VERSION}")
        })
}

/// The cached noida-db binary, built first when the cache lacks it: `cargo install
/// noida-db@VERSION --locked --no-default-features --features kafka` into a private root next to
/// the final one, checked, then renamed into place. A file lock in the cache makes concurrent
/// checkouts wait for one build instead of each building.
pub fn ensure_noida() -> Result<PathBuf> {
    let cache = cache_root_from(std::env::var_os("CANAL_TOOLS_CACHE"), std::env::var_os("HOME"))?;
    let root = noida_root(&cache);
    let bin = noida_bin(&root);
    if usable(&bin) {
        return Ok(bin);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let _lock = FileLock::acquire(&cache.join(format!("noida-db-{NOIDA_VERSION}.lock")))?;
    if usable(&bin) {
        return Ok(bin); // another checkout built it while this one waited
    }
    let tmp = cache.join(format!("noida-db-{NOIDA_VERSION}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    eprintln!(
        "kafka: building the test broker noida-db {NOIDA_VERSION} into {} (once per machine; \
         about {NOIDA_BUILD_MINUTES} min)",
        root.display()
    );
    let t0 = std::time::Instant::now();
    // An explicit --target-dir: an inherited CARGO_TARGET_DIR would otherwise put the build
    // into the workspace's target dir. Run from the cache so that the workspace's
    // .cargo/config.toml does not apply.
    let status = Command::new(super::cargo_bin())
        .args(["install", &format!("noida-db@{NOIDA_VERSION}"), "--locked"])
        .args(["--no-default-features", "--features", "kafka", "--root"])
        .arg(&tmp)
        .arg("--target-dir")
        .arg(tmp.join("build"))
        .current_dir(&cache)
        .status()
        .context("running cargo install noida-db")?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "`cargo install noida-db@{NOIDA_VERSION} --locked --no-default-features --features \
             kafka` failed ({status}); it needs crates.io (or a vendored registry)"
        );
    }
    if !usable(&noida_bin(&tmp)) {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!("the freshly built {} does not report version {NOIDA_VERSION}", tmp.display());
    }
    let _ = std::fs::remove_dir_all(tmp.join("build"));
    if root.exists() {
        // A broken earlier install (it failed `usable`).
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    std::fs::rename(&tmp, &root)
        .with_context(|| format!("moving {} to {}", tmp.display(), root.display()))?;
    eprintln!("kafka: noida-db built in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(bin)
}

/// Starts a Kafka-protocol broker in `dir` (data in `dir/data`) on 127.0.0.1:`port` (a free one
/// when `None`) and waits until it answers an ApiVersions request. `keep_data` restarts it on the
/// data of an earlier run in `dir` (see the module docs for what survives). noida-db has no
/// settings to pass.
///
/// Endpoint: `CANAL_TEST_KAFKA=127.0.0.1:PORT` (a bootstrap server list of one).
pub fn start_kafka(
    dir: &Path,
    port: Option<u16>,
    settings: &Settings,
    keep_data: bool,
) -> Result<Instance> {
    if !settings.is_empty() {
        bail!("kafka (noida-db) takes no --set settings");
    }
    let bin = ensure_noida()?;
    let port = match port {
        Some(p) => p,
        None => super::free_port()?,
    };
    super::check_port_free(port)?;
    let data = data_subdir(dir, "data", keep_data)?;
    let args: Vec<OsString> = vec![
        "start".into(),
        "--only".into(),
        "kafka".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--kafka-port".into(),
        port.to_string().into(),
        "--data-dir".into(),
        data.into_os_string(),
    ];
    let spawned = proc::spawn(&Launch {
        program: bin,
        args,
        dir: dir.to_owned(),
        log: dir.join("kafka.log"),
        env_remove: vec![],
        env_remove_prefixes: vec!["NOIDA_".into()],
        env_set: vec![("NO_COLOR".into(), "1".into())],
        pid_file: super::PID_FILE,
    })?;
    let pid = spawned.wait_ready("kafka (noida-db)", dir, || api_versions(port).is_ok())?;
    Ok(Instance {
        kind: Kind::Kafka,
        dir: dir.to_owned(),
        pid,
        env: vec![("CANAL_TEST_KAFKA".into(), format!("127.0.0.1:{port}"))],
    })
}

const CORRELATION_ID: i32 = 0x6361_6e61;

/// An ApiVersions v0 request (api key 18): size, key, version, correlation id, client id.
fn api_versions_request() -> Vec<u8> {
    let client = b"canal-xtask";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    let mut req = (body.len() as i32).to_be_bytes().to_vec();
    req.extend_from_slice(&body);
    req
}

/// Checks an ApiVersions v0 response body (after the size): our correlation id, error code 0,
/// and a non-empty list of APIs. Returns the number of APIs.
fn parse_api_versions(resp: &[u8]) -> Result<usize> {
    if resp.len() < 10 {
        bail!("ApiVersions response too short ({} bytes)", resp.len());
    }
    let corr = i32::from_be_bytes(resp[0..4].try_into()?);
    let error = i16::from_be_bytes(resp[4..6].try_into()?);
    let count = i32::from_be_bytes(resp[6..10].try_into()?);
    if corr != CORRELATION_ID {
        bail!("ApiVersions response for correlation id {corr}");
    }
    if error != 0 {
        bail!("ApiVersions error code {error}");
    }
    if count <= 0 {
        bail!("ApiVersions lists no APIs");
    }
    Ok(count as usize)
}

/// Sends ApiVersions to 127.0.0.1:`port` and checks the answer.
fn api_versions(port: u16) -> Result<usize> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(&api_versions_request())?;
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if !(10..=1 << 20).contains(&size) {
        bail!("ApiVersions response size {size}");
    }
    let mut resp = vec![0u8; size as usize];
    s.read_exact(&mut resp)?;
    parse_api_versions(&resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_canal_tools_cache_else_under_home() {
        let c = |t: Option<&str>, h: Option<&str>| {
            cache_root_from(t.map(Into::into), h.map(Into::into)).map_err(|e| e.to_string())
        };
        assert_eq!(c(Some("/c"), Some("/h")).unwrap(), Path::new("/c"));
        assert_eq!(c(None, Some("/h")).unwrap(), Path::new("/h/.cache/canal-rs"));
        assert_eq!(
            c(Some(""), Some("/h")).unwrap(),
            Path::new("/h/.cache/canal-rs"),
            "empty = unset"
        );
        assert!(c(None, None).unwrap_err().contains("CANAL_TOOLS_CACHE"));
        assert!(c(Some(""), Some("")).is_err());
        let root = noida_root(Path::new("/c"));
        assert_eq!(noida_bin(&root), Path::new("/c/noida-db-0.2.3/bin/noida-db"));
    }

    #[test]
    fn a_missing_or_wrong_binary_is_not_usable() {
        assert!(!usable(Path::new("/no/such/noida-db")));
        // Runs, but is not noida-db: `true version` prints nothing.
        assert!(!usable(Path::new("/bin/true")));
    }

    #[test]
    fn api_versions_request_and_response() {
        let req = api_versions_request();
        let size = i32::from_be_bytes(req[0..4].try_into().unwrap()) as usize;
        assert_eq!(size, req.len() - 4);
        assert_eq!(&req[4..8], &[0, 18, 0, 0], "api key 18, version 0");
        let mut ok = CORRELATION_ID.to_be_bytes().to_vec();
        ok.extend_from_slice(&0i16.to_be_bytes());
        ok.extend_from_slice(&2i32.to_be_bytes());
        assert_eq!(parse_api_versions(&ok).unwrap(), 2);
        let mut err = ok.clone();
        err[4..6].copy_from_slice(&35i16.to_be_bytes()); // UNSUPPORTED_VERSION
        assert!(parse_api_versions(&err).is_err());
        let mut other = ok.clone();
        other[0] ^= 1;
        assert!(parse_api_versions(&other).is_err());
        assert!(parse_api_versions(&ok[..6]).is_err());
    }
}
