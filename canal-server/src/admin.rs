//! The status and metrics HTTP endpoint (Canal's metrics port, 11112 by default): `GET /metrics`
//! in Prometheus text format, `GET /status` as JSON. A deliberately small HTTP/1.1 responder —
//! two read-only routes do not justify a web framework in the binary.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::balance::{BalanceReport, BalanceState};
use crate::server::{DestinationReport, RegistryView};

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, view: RegistryView) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let view = view.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), respond(sock, &view)).await;
        });
    }
}

async fn respond(mut sock: TcpStream, view: &RegistryView) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    // Read until the end of the request head (bounded by the buffer).
    while n < buf.len() {
        let k = sock.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            let reports = view.reports();
            let mut body = metrics(&reports);
            body.push_str(&server_metrics(&reports, view.balance().as_ref()));
            if let Some(r) = view.reload() {
                body.push_str(&reload_metrics(&r));
            }
            ("200 OK", "text/plain; version=0.0.4", body)
        }
        ("GET", "/status") | ("GET", "/") => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&serde_json::json!({
                "destinations": view.reports(),
                "balance": view.balance(),
                "reload": view.reload(),
            }))
            .unwrap_or_default(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "method not allowed\n".to_owned()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

/// Prometheus exposition of the server-wide numbers: destinations owned, and balancing (when on).
pub fn server_metrics(reports: &[DestinationReport], balance: Option<&BalanceReport>) -> String {
    let mut out = String::new();
    let mut one = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    let owned = reports.iter().filter(|r| r.active).count();
    one("canal_server_destinations_owned", "Destinations this server runs", "gauge", owned as f64);
    let Some(b) = balance else { return out };
    one(
        "canal_server_owned_weight",
        "Total balancing weight of the destinations this server runs",
        "gauge",
        b.owned_weight as f64,
    );
    one(
        "canal_server_balance_share",
        "This server's share: ceil(total weight / live servers) + slack",
        "gauge",
        b.share as f64,
    );
    one(
        "canal_server_balance_live_servers",
        "Live servers configured for at least one of this server's destinations",
        "gauge",
        b.live_servers as f64,
    );
    one(
        "canal_server_balance_handovers_total",
        "Destinations this server handed over to balance the cluster",
        "counter",
        b.handovers as f64,
    );
    one(
        "canal_server_balance_handover_timeouts_total",
        "Hand-overs no other server took within the bound",
        "counter",
        b.handover_timeouts as f64,
    );
    one(
        "canal_server_balance_refresh_failures_total",
        "Failed reads of the cluster view (retried)",
        "counter",
        b.refresh_failures as f64,
    );
    let _ = writeln!(
        out,
        "# HELP canal_server_balance_state 1 for the current balancing state\n# TYPE canal_server_balance_state gauge"
    );
    for st in [
        BalanceState::Unknown,
        BalanceState::Balanced,
        BalanceState::Surplus,
        BalanceState::HandingOver,
    ] {
        let name = serde_json::to_value(st).ok();
        let name = name.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
        let _ = writeln!(
            out,
            "canal_server_balance_state{{state=\"{name}\"}} {}",
            u8::from(b.state == st)
        );
    }
    out
}

/// Prometheus exposition of configuration reloads.
pub fn reload_metrics(r: &crate::server::ReloadSummary) -> String {
    format!(
        "# HELP canal_server_config_reloads_total Reloads of the configuration that changed destinations\n\
         # TYPE canal_server_config_reloads_total counter\ncanal_server_config_reloads_total {}\n\
         # HELP canal_server_config_reload_failures_total Reloads refused because the configuration was invalid (nothing changed)\n\
         # TYPE canal_server_config_reload_failures_total counter\ncanal_server_config_reload_failures_total {}\n",
        r.applied, r.failed
    )
}

/// Prometheus exposition of the reports.
pub fn metrics(reports: &[DestinationReport]) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, help: &str, kind: &str, value: &dyn Fn(&DestinationReport) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for r in reports {
                if let Some(v) = value(r) {
                    let _ = writeln!(
                        out,
                        "{name}{{destination=\"{}\"}} {v}",
                        r.destination.replace('"', "\\\"")
                    );
                }
            }
        };
    family(
        "canal_instance_active",
        "1 when this server runs the destination, 0 on standby",
        "gauge",
        &|r| Some(f64::from(u8::from(r.active))),
    );
    family(
        "canal_instance_activations_total",
        "Times this server became active for the destination",
        "counter",
        &|r| Some(r.activations as f64),
    );
    family(
        "canal_instance_delay_ms",
        "Milliseconds between now and the time of the last binlog event read",
        "gauge",
        &|r| r.delay_ms.map(|d| d as f64),
    );
    family(
        "canal_instance_rows_total",
        "Row changes put into the store since activation",
        "counter",
        &|r| r.active.then_some(r.rows as f64),
    );
    family(
        "canal_instance_schema_corrections_total",
        "Table definitions of the schema history that the binlog's FULL row metadata overrode",
        "counter",
        &|r| r.active.then_some(r.schema_corrections as f64),
    );
    family(
        "canal_instance_store_entries",
        "Entries held in the store (not acked)",
        "gauge",
        &|r| r.active.then_some(r.store_entries as f64),
    );
    family("canal_instance_store_bytes", "Bytes held in the store (not acked)", "gauge", &|r| {
        r.active.then_some(r.store_bytes as f64)
    });
    family("canal_instance_subscriptions", "Subscribed clients", "gauge", &|r| {
        r.active.then_some(r.clients.len() as f64)
    });
    family(
        "canal_instance_activation_failures_total",
        "Activation attempts that failed (coordinator reads); retried with backoff",
        "counter",
        &|r| Some(r.failures.activation_failures as f64),
    );
    family(
        "canal_instance_failures_total",
        "Instance runs that stopped on an error; restarted from the minimum acked cursor",
        "counter",
        &|r| Some(r.failures.instance_failures as f64),
    );
    family("canal_instance_restarts_total", "Instance restarts after a failure", "counter", &|r| {
        Some(r.failures.restarts as f64)
    });
    family(
        "canal_instance_consecutive_failures",
        "Current run of failures without progress; the node is released when it reaches supervisor.max_failures",
        "gauge",
        &|r| Some(f64::from(r.failures.consecutive_failures)),
    );
    family(
        "canal_instance_releases_total",
        "Times this server released the running node after too many consecutive failures",
        "counter",
        &|r| Some(r.failures.releases as f64),
    );
    family(
        "canal_mq_batches_total",
        "MQ mode: store batches the broker confirmed (then acked)",
        "counter",
        &|r| r.mq.as_ref().map(|m| m.batches as f64),
    );
    family("canal_mq_messages_total", "MQ mode: messages the broker confirmed", "counter", &|r| {
        r.mq.as_ref().map(|m| m.messages as f64)
    });
    family(
        "canal_mq_skipped_entries_total",
        "MQ mode: entries skipped at a resume because an earlier activation had published them",
        "counter",
        &|r| r.mq.as_ref().map(|m| m.skipped as f64),
    );
    family(
        "canal_mq_send_failures_total",
        "MQ mode: failed sends; each rolls back what was in flight and sends it again",
        "counter",
        &|r| r.mq.as_ref().map(|m| m.send_failures as f64),
    );
    out
}
