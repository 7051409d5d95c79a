//! The status and metrics HTTP endpoint (Canal's metrics port, 11112 by default): `GET /metrics`
//! in Prometheus text format, `GET /status` as JSON, and the admin API under `/admin`
//! (docs/operations.md "Admin API"): list destinations and owners, release or move a
//! destination, reset a client's cursor. The admin routes answer loopback peers, or anyone presenting
//! `Authorization: Bearer <admin_token>` when a token is configured (then it is required from
//! loopback too). A deliberately small HTTP/1.1 responder — a handful of routes do not justify a
//! web framework in the binary.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::balance::{BalanceReport, BalanceState};
use crate::server::{DestinationReport, RegistryView};

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, view: RegistryView) {
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let view = view.clone();
        tokio::spawn(async move {
            // An admin request (a cursor reset searches the binlog) may take a while.
            let _ =
                tokio::time::timeout(Duration::from_secs(120), respond(sock, peer, &view)).await;
        });
    }
}

async fn respond(
    mut sock: TcpStream,
    peer: std::net::SocketAddr,
    view: &RegistryView,
) -> std::io::Result<()> {
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
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/admin" || path.starts_with("/admin/") {
        let auth = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case("authorization").then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        let (status, body) = match admin_allowed(view.admin_token.as_deref(), peer, &auth) {
            Err((status, why)) => (status, serde_json::json!({ "error": why })),
            Ok(()) => admin(view, method, path, query).await,
        };
        let body = serde_json::to_string_pretty(&body).unwrap_or_default();
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).await?;
        return sock.shutdown().await;
    }
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

/// Who may use the admin API: with a token, whoever presents it (`Bearer <token>`); without
/// one, loopback peers only.
fn admin_allowed(
    token: Option<&str>,
    peer: std::net::SocketAddr,
    auth: &str,
) -> Result<(), (&'static str, String)> {
    match token {
        Some(t) => {
            let given = auth.strip_prefix("Bearer ").unwrap_or("");
            // Compared in full whatever the first difference (no early exit on a prefix).
            let same = given.len() == t.len()
                && given.bytes().zip(t.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same {
                Ok(())
            } else {
                Err((
                    "401 Unauthorized",
                    "the admin API needs Authorization: Bearer <admin_token>".into(),
                ))
            }
        }
        None if peer.ip().is_loopback() => Ok(()),
        None => Err((
            "403 Forbidden",
            "the admin API answers loopback peers only unless admin_token is set".into(),
        )),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// Decodes `%XX` and `+` of a query value.
fn unescape(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cursor target of a reset request: exactly one of `position=FILE:OFFSET`, `gtid=SET`,
/// `timestamp=MS`.
fn cursor_target(query: &str) -> Result<crate::server::CursorTarget, String> {
    use crate::server::CursorTarget;
    let given: Vec<(&str, String)> = ["position", "gtid", "timestamp"]
        .into_iter()
        .filter_map(|k| query_param(query, k).map(|v| (k, unescape(v))))
        .collect();
    let [(kind, value)] = given.as_slice() else {
        return Err("give exactly one of position=FILE:OFFSET, gtid=SET, timestamp=MS".into());
    };
    match *kind {
        "position" => {
            let (file, off) = value
                .rsplit_once(':')
                .ok_or_else(|| format!("position {value:?} is not FILE:OFFSET"))?;
            let offset: i64 =
                off.parse().ok().filter(|o| *o >= 4).ok_or_else(|| {
                    format!("position {value:?}: the offset must be a number >= 4")
                })?;
            if file.is_empty() {
                return Err(format!("position {value:?} has no file"));
            }
            Ok(CursorTarget::Position { journal: file.to_owned(), offset })
        }
        "gtid" if !value.trim().is_empty() => Ok(CursorTarget::Gtid(value.trim().to_owned())),
        "gtid" => Err("gtid is empty".into()),
        _ => value
            .parse::<i64>()
            .ok()
            .filter(|t| *t > 0)
            .map(CursorTarget::Timestamp)
            .ok_or_else(|| format!("timestamp {value:?} is not a positive number of ms")),
    }
}

/// The admin routes (already authorized).
async fn admin(
    view: &RegistryView,
    method: &str,
    path: &str,
    query: &str,
) -> (&'static str, serde_json::Value) {
    use crate::server::AdminError;
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let r = match (method, parts.as_slice()) {
        ("GET", ["admin", "destinations"]) => view.admin_destinations().await,
        ("POST", ["admin", "destinations", dest, "release"]) => view.admin_release(dest).await,
        ("POST", ["admin", "destinations", dest, "stop"]) => {
            view.admin_stop_start(dest, false).await
        }
        ("POST", ["admin", "destinations", dest, "start"]) => {
            view.admin_stop_start(dest, true).await
        }
        ("POST", ["admin", "destinations", dest, "move"]) => match query_param(query, "to") {
            Some(to) if !to.is_empty() => view.admin_move(dest, &unescape(to)).await,
            _ => {
                return (
                    "400 Bad Request",
                    serde_json::json!({ "error": "move needs to=IP:PORT (a server's registered address)" }),
                );
            }
        },
        ("POST", ["admin", "destinations", dest, "cursor"]) => {
            let client = query_param(query, "client").unwrap_or("1001").parse::<i16>();
            let force = matches!(query_param(query, "force"), Some("true" | "1" | ""));
            match (client, cursor_target(query)) {
                (Err(_), _) => {
                    return (
                        "400 Bad Request",
                        serde_json::json!({ "error": "client must be a client id (a short)" }),
                    );
                }
                (_, Err(e)) => return ("400 Bad Request", serde_json::json!({ "error": e })),
                (Ok(c), Ok(t)) => view.admin_reset_cursor(dest, c, t, force).await,
            }
        }
        ("GET" | "POST", _) => {
            return (
                "404 Not Found",
                serde_json::json!({ "error": format!("no admin route {method} {path}") }),
            );
        }
        _ => {
            return (
                "405 Method Not Allowed",
                serde_json::json!({ "error": "method not allowed" }),
            );
        }
    };
    match r {
        Ok(v) => ("200 OK", v),
        Err(AdminError::NotFound(e)) => ("404 Not Found", serde_json::json!({ "error": e })),
        Err(AdminError::Conflict(e)) => ("409 Conflict", serde_json::json!({ "error": e })),
        Err(AdminError::Unavailable(e)) => {
            ("503 Service Unavailable", serde_json::json!({ "error": e }))
        }
    }
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
