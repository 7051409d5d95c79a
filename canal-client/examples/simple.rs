//! Connects to one canal server, subscribes, and prints row changes in a get + ack loop.
//!
//! `cargo run -p canal-client --example simple -- 127.0.0.1:11111 example 'test\..*'`

use std::time::Duration;

use canal_client::{ConnectorConfig, SimpleConnector, TimeUnit};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:11111".into());
    let destination = args.next().unwrap_or_else(|| "example".into());
    let filter = args.next().unwrap_or_default();
    let password = std::env::var("CANAL_PASSWORD").unwrap_or_default();
    let user = std::env::var("CANAL_USER").unwrap_or_default();

    let mut connector = SimpleConnector::new(
        address,
        ConnectorConfig::new(destination).credentials(user, password),
    )?;
    connector.connect().await?;
    connector.subscribe(&filter).await?;
    loop {
        // Wait up to a second for up to 100 units of data; ack only after printing.
        let batch = connector.get_without_ack(100, Some(1000), TimeUnit::Milliseconds).await?;
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for change in batch.row_changes() {
            let change = change?;
            if change.is_ddl() {
                println!(
                    "{} {}.{}: {}",
                    change.event_type_name(),
                    change.schema(),
                    change.table(),
                    change.sql()
                );
                continue;
            }
            for row in change.rows() {
                println!(
                    "{} {}.{} before={:?} after={:?}",
                    change.event_type_name(),
                    change.schema(),
                    change.table(),
                    row.before().to_map(),
                    row.after().to_map(),
                );
            }
        }
        connector.ack(batch.id).await?;
    }
}
