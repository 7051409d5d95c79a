//! The unmodified PyPI `canal-python` 0.4 client against our server and a live MariaDB: connect,
//! subscribe (after its on-connect rollback), get without ack, roll back, get again, ack — and
//! the row values it decodes are the ones written.

use std::process::Command;
use std::time::Duration;

use canal_coord::config::CoordConfig;
use canal_server::server::{Server, ServerSettings};
use canal_server::session::SessionConfig;
use mysql_async::prelude::Queryable;

use crate::ha::fixture;
use crate::support;

#[tokio::test]
async fn canal_python_consumes_live_changes() {
    let Some(mut fx) = fixture("py").await else { return };
    let Some(venv) =
        support::python_venv("interop-venv", &["canal-python==0.4", "protobuf==3.20.3"])
    else {
        return;
    };
    let settings = ServerSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        register_address: None,
        session: SessionConfig::default(),
        coord: CoordConfig::default(),
        metrics_bind: None,
        mq: None,
        balance: Default::default(),
        admin_token: None,
        supervisor: Default::default(),
    };
    let server = Server::start(settings, vec![fx.instance.clone()]).await.unwrap();
    let t0 = std::time::Instant::now();
    while server.active_destinations().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let db = fx.db.clone();
    fx.admin
        .query_drop(format!(
            "ALTER TABLE `{db}`.t ADD COLUMN v VARCHAR(20) NULL, ADD COLUMN n DECIMAL(6,2)"
        ))
        .await
        .unwrap();
    fx.admin
        .query_drop(format!("INSERT INTO `{db}`.t VALUES (1, 'héllo', 12.50), (2, NULL, -0.01)"))
        .await
        .unwrap();
    fx.admin.query_drop(format!("UPDATE `{db}`.t SET v = 'bye' WHERE id = 1")).await.unwrap();
    fx.admin.query_drop(format!("DELETE FROM `{db}`.t WHERE id = 2")).await.unwrap();

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/canal_python_consumer.py");
    let addr = server.local_addr();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin/python"))
            .arg(script)
            .args([
                addr.ip().to_string(),
                addr.port().to_string(),
                db.clone(),
                format!("{db}\\..*"),
                "4".into(),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "canal-python failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let db = &fx.db;
    let expect = [
        serde_json::json!({"db": db, "table": "t", "type": "INSERT", "before": {}, "after": {"id": "1", "v": "héllo", "n": "12.50"}}),
        serde_json::json!({"db": db, "table": "t", "type": "INSERT", "before": {}, "after": {"id": "2", "v": null, "n": "-0.01"}}),
        serde_json::json!({"db": db, "table": "t", "type": "UPDATE", "before": {"id": "1", "v": "héllo", "n": "12.50"}, "after": {"id": "1", "v": "bye", "n": "12.50"}}),
        serde_json::json!({"db": db, "table": "t", "type": "DELETE", "before": {"id": "2", "v": null, "n": "-0.01"}, "after": {}}),
    ];
    assert_eq!(rows.len(), 4, "{stdout}");
    for (got, want) in rows.iter().zip(expect.iter()) {
        let mut got = got.clone();
        got.as_object_mut().unwrap().remove("batch");
        assert_eq!(&got, want);
    }
    server.shutdown().await;
}
