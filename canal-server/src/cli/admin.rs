//! `canal-server admin …`: the admin API of a running server (docs/operations.md "Admin API")
//! from the command line. Prints the server's JSON answer; exits non-zero with its error.

use anyhow::bail;

/// Arguments of `admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The server's status/metrics address (`host:port` of `metrics_port`).
    #[arg(long, default_value = "127.0.0.1:11112")]
    pub server: String,
    /// The server's `admin_token` (also read from `CANAL_ADMIN_TOKEN`).
    #[arg(long)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Admin requests.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// The server's destinations, their owners (from the coordinator) and clients.
    List,
    /// Release a destination this server runs: a standby takes over.
    Release {
        /// The destination.
        destination: String,
    },
    /// Stop a destination on this server: its run stops, its running node is released and the
    /// server no longer competes for it (until `start` or a restart of the server).
    Stop {
        /// The destination.
        destination: String,
    },
    /// Let this server compete for a stopped destination again.
    Start {
        /// The destination.
        destination: String,
    },
    /// Move a destination this server runs to another server configured for it.
    Move {
        /// The destination.
        destination: String,
        /// The server to move it to (`ip:port` as registered).
        #[arg(long)]
        to: String,
    },
    /// Reset a client's cursor (on the server running the destination). Refused while that
    /// client's consumers are connected, unless --force.
    ResetCursor {
        /// The destination.
        destination: String,
        /// The client id.
        #[arg(long, default_value_t = 1001)]
        client: i16,
        /// A binlog position `FILE:OFFSET` (a transaction boundary).
        #[arg(long, group = "to")]
        position: Option<String>,
        /// A GTID set (destinations in gtid_mode).
        #[arg(long, group = "to")]
        gtid: Option<String>,
        /// A time in ms since the epoch: the last transaction boundary at or before it.
        #[arg(long, group = "to")]
        timestamp: Option<i64>,
        /// Reset even while consumers are connected (their sessions are closed).
        #[arg(long)]
        force: bool,
    },
}

fn escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends the request and prints the answer.
///
/// # Errors
/// The server cannot be reached, or refused (its message).
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let (method, target) = match &args.command {
        AdminCommand::List => ("GET", "/admin/destinations".to_owned()),
        AdminCommand::Release { destination } => {
            ("POST", format!("/admin/destinations/{}/release", escape(destination)))
        }
        AdminCommand::Stop { destination } => {
            ("POST", format!("/admin/destinations/{}/stop", escape(destination)))
        }
        AdminCommand::Start { destination } => {
            ("POST", format!("/admin/destinations/{}/start", escape(destination)))
        }
        AdminCommand::Move { destination, to } => {
            ("POST", format!("/admin/destinations/{}/move?to={}", escape(destination), escape(to)))
        }
        AdminCommand::ResetCursor { destination, client, position, gtid, timestamp, force } => {
            let to = match (position, gtid, timestamp) {
                (Some(p), None, None) => format!("position={}", escape(p)),
                (None, Some(g), None) => format!("gtid={}", escape(g)),
                (None, None, Some(t)) => format!("timestamp={t}"),
                _ => bail!("give one of --position, --gtid, --timestamp"),
            };
            let force = if *force { "&force=true" } else { "" };
            (
                "POST",
                format!(
                    "/admin/destinations/{}/cursor?client={client}&{to}{force}",
                    escape(destination)
                ),
            )
        }
    };
    let token = args.token.or_else(|| std::env::var("CANAL_ADMIN_TOKEN").ok());
    let limit = std::time::Duration::from_secs(30);
    let v = canal_client::admin::request(&args.server, method, &target, token.as_deref(), limit)
        .await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
