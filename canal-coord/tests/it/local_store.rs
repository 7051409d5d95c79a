//! The local backend keeps durable nodes (cursors) across restarts, atomically, and drops
//! ephemerals.

use std::time::Duration;

use canal_coord::backend::local::{LocalBackend, STORE_FILE};
use canal_coord::{CoordConfig, Coordinator, Session};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("coord-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test]
async fn cursors_survive_restart_and_ephemerals_do_not() {
    let dir = temp_dir("restart");
    let cursor = canal_coord::path::client_cursor("example", 1001);
    let running = canal_coord::path::server_running("example");
    {
        let b = LocalBackend::open(&dir, Duration::from_secs(10)).unwrap();
        let s = b.session();
        let v = s
            .create_ephemeral(&running, br#"{"active":true,"address":"10.20.144.51:11111"}"#)
            .await
            .unwrap();
        let epoch_path = canal_coord::path::server_running_epoch("example");
        let epoch = s.create_persistent(&epoch_path, b"1").await.unwrap();
        let fence = canal_coord::Fence { path: running.clone(), version: v, epoch_path, epoch };
        s.put_fenced(&cursor, br#"{"postion":1}"#, &fence).await.unwrap();
        s.create_persistent("/bin", &[0, 159, 146, 150]).await.unwrap();
        // The process stops without closing anything.
        std::mem::forget(s);
    }
    assert!(dir.join(STORE_FILE).exists());
    assert!(!dir.join(format!("{STORE_FILE}.tmp")).exists());
    let b = LocalBackend::open(&dir, Duration::from_secs(10)).unwrap();
    let s = b.session();
    assert_eq!(s.get(&cursor).await.unwrap().unwrap().data, br#"{"postion":1}"#);
    assert_eq!(s.get("/bin").await.unwrap().unwrap().data, [0, 159, 146, 150]);
    assert_eq!(s.get(&running).await.unwrap(), None, "ephemerals do not survive a restart");
    let epoch = canal_coord::path::server_running_epoch("example");
    assert_eq!(s.get(&epoch).await.unwrap().unwrap().data, b"1", "the epoch survives a restart");
    // Versions keep growing across restarts (a fence from before never matches again).
    let v = s.create_persistent("/after", b"").await.unwrap();
    assert!(v.0 > 3, "{v:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn default_config_opens_a_local_store_under_data_dir() {
    let dir = temp_dir("config");
    let mut cfg = CoordConfig::default();
    cfg.local.data_dir = Some(dir.clone());
    let coord = Coordinator::new(cfg.open_backend().unwrap());
    let s = coord.session().await.unwrap();
    s.create_persistent("/otter/canal/destinations/example/1001/filter", b".*\\..*").await.unwrap();
    coord.close().await;
    let coord = Coordinator::new(cfg.open_backend().unwrap());
    let s = coord.session().await.unwrap();
    assert_eq!(
        s.get("/otter/canal/destinations/example/1001/filter").await.unwrap().unwrap().data,
        b".*\\..*"
    );
    assert_eq!(s.children("/otter/canal/destinations/example").await.unwrap(), ["1001"]);
    let _ = std::fs::remove_dir_all(&dir);
}
