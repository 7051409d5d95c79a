//! Consumes a destination through ZooKeeper: the active server is found from its running node,
//! server loss is survived by reconnecting, and client HA makes sure only one instance of the
//! client id consumes at a time (start two and stop the first).
//!
//! `cargo run -p canal-client --example cluster -- 127.0.0.1:2181 example`

use std::sync::Arc;
use std::time::Duration;

use canal_client::{ClientError, ClusterConfig, ClusterConnector, ConnectorConfig, Discovery};
use canal_coord::Coordinator;
use canal_coord::backend::zk::ZkBackend;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let zk = args.next().unwrap_or_else(|| "127.0.0.1:2181".into());
    let destination = args.next().unwrap_or_else(|| "example".into());

    let coord = Coordinator::new(Arc::new(ZkBackend::new(&zk, Duration::from_secs(90))));
    let config =
        ClusterConfig::new(ConnectorConfig::new(destination), Discovery::Coordinator(coord))
            .client_ha(true);
    let mut connector = ClusterConnector::new(config)?;
    connector.subscribe("").await?;
    loop {
        let batch = connector.get_without_ack(100, Some(1000), Default::default()).await?;
        if batch.is_empty() {
            continue;
        }
        for flat in batch.flat_messages(0)? {
            println!("{}", flat.to_json());
        }
        match connector.ack(batch.id).await {
            // A reconnect rolled the batch back: it will come again (at-least-once).
            Ok(()) | Err(ClientError::BatchRolledBack { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
