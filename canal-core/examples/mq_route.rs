//! Throughput of MQ routing (`canal_core::mq::Router::route`) on generated row entries: rows/s
//! for protobuf and FlatMessage, without and with a `$pk$` partition hash, for one-row and
//! 50-row entries. No broker involved: this is the CPU cost the MQ worker adds per row.
//!
//! Rows per second of wall time and of process CPU time (from /proc, Linux) are printed: on a
//! shared machine the CPU figure is the one to compare.
//!
//! `cargo run --release -p canal-core --example mq_route -- [ROWS]`

use std::time::Instant;

use bytes::Bytes;
use canal_core::mq::{Router, RoutingConfig};
use canal_core::protocol::entry::{
    Column, Entry, EntryType, EventType, Header, RowChange, RowData,
};
use prost::Message as _;

fn entry(first_id: u64, rows: usize) -> Bytes {
    let row = |id: u64| {
        let mut cols = vec![Column {
            index: Some(0),
            sql_type: Some(-5),
            name: Some("id".into()),
            is_key: Some(true),
            updated: Some(false),
            is_null: Some(false),
            value: Some(id.to_string()),
            mysql_type: Some("bigint(20)".into()),
            ..Default::default()
        }];
        for c in 1..10 {
            cols.push(Column {
                index: Some(c),
                sql_type: Some(12),
                name: Some(format!("col_{c}")),
                is_key: Some(false),
                updated: Some(false),
                is_null: Some(false),
                value: Some(format!("value {c} of row {id}")),
                mysql_type: Some("varchar(64)".into()),
                ..Default::default()
            });
        }
        RowData { after_columns: cols, ..Default::default() }
    };
    let rc = RowChange {
        table_id: Some(42),
        event_type: Some(EventType::Insert as i32),
        is_ddl: Some(false),
        row_datas: (0..rows as u64).map(|k| row(first_id + k)).collect(),
        ..Default::default()
    };
    Entry {
        header: Some(Header {
            version: Some(1),
            logfile_name: Some("mysql-bin.000001".into()),
            logfile_offset: Some(4),
            server_id: Some(1),
            execute_time: Some(1_700_000_000_000),
            schema_name: Some("bench".into()),
            table_name: Some("orders".into()),
            event_type: Some(EventType::Insert as i32),
            ..Default::default()
        }),
        entry_type: Some(EntryType::Rowdata as i32),
        store_value: Some(rc.encode_to_vec().into()),
    }
    .encode_to_vec()
    .into()
}

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks per second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    for rows_per_entry in [1usize, 50] {
        // Batches of ~1000 rows, as the MQ worker GETs them.
        let per_batch = (1000 / rows_per_entry).max(1);
        let batch: Vec<Bytes> =
            (0..per_batch).map(|e| entry((e * rows_per_entry) as u64, rows_per_entry)).collect();
        let batches = total / (per_batch * rows_per_entry);
        // The reference: prost decode + FlatMessage + serde_json (what the router did before it
        // wrote FlatMessage JSON from the entry bytes).
        {
            let start = Instant::now();
            let cpu_start = cpu_seconds();
            let mut bytes = 0usize;
            for b in 0..batches {
                for e in &batch {
                    let entry = Entry::decode(e.clone())?;
                    if let Some(f) = canal_core::flat::FlatMessage::from_entry(&entry, b as i64, 0)?
                    {
                        bytes += serde_json::to_vec(&f)?.len();
                    }
                }
            }
            let rows = batches * per_batch * rows_per_entry;
            println!(
                "{rows_per_entry:>2} rows/entry  reference FlatMessage+serde_json {:>10.0} rows/s  {:>10.0} rows/cpu-s  {:.1} MB",
                rows as f64 / start.elapsed().as_secs_f64(),
                rows as f64 / (cpu_seconds() - cpu_start).max(0.01),
                bytes as f64 / 1e6
            );
        }
        for flat in [false, true] {
            for hash in [false, true] {
                let router = Router::new(RoutingConfig {
                    flat_message: flat,
                    partitions_num: hash.then_some(16),
                    partition_hash: hash.then(|| "bench.orders:$pk$".to_owned()),
                    ..RoutingConfig::default()
                })?;
                let start = Instant::now();
                let cpu_start = cpu_seconds();
                let mut bytes = 0usize;
                let mut records = 0usize;
                for b in 0..batches {
                    for r in router.route(b as i64, &batch, 0)? {
                        bytes += r.payload.len();
                        records += 1;
                    }
                }
                let secs = start.elapsed().as_secs_f64();
                let cpu = (cpu_seconds() - cpu_start).max(0.01);
                let rows = batches * per_batch * rows_per_entry;
                println!(
                    "{rows_per_entry:>2} rows/entry  flat={flat:<5} hash={hash:<5}  {:>10.0} rows/s  {:>10.0} rows/cpu-s  {records} records  {:.1} MB",
                    rows as f64 / secs,
                    rows as f64 / cpu,
                    bytes as f64 / 1e6
                );
            }
        }
    }
    Ok(())
}
