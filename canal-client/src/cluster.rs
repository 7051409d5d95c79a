//! [`ClusterConnector`]: a connector that finds the active canal server itself (ZooKeeper/etcd
//! through canal-coord, or a static address list), survives server loss by reconnecting with
//! bounded exponential backoff, and optionally takes part in client HA (one active consumer per
//! client id, docs/protocol.md#client-ha).
//!
//! Differences from Java's `ClusterCanalConnector`: no retry-count cliff (retry forever with a
//! capped backoff, or until a configurable total deadline); a change of the destination's running
//! node interrupts even a blocking GET; an ack of a batch that a reconnect already rolled back is
//! not sent (it would only produce an error ACK) but reported as
//! [`ClientError::BatchRolledBack`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use canal_coord::running::DEFAULT_DELAY;
use canal_coord::{
    ClientRunningData, Coordinator, RunningData, RunningEvent, RunningMonitor, RunningStatus,
    ServerRunningData, WatchEvent, path,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::connector::{ConnectorConfig, SimpleConnector, TimeUnit, duration_ms};
use crate::error::ClientError;
use crate::message::{EMPTY_BATCH_ID, Message};

/// Where the cluster connector finds servers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Discovery {
    /// A fixed list of `host:port`, tried round-robin (Java's `SimpleNodeAccessStrategy`).
    Static(Vec<String>),
    /// The coordinator: the destination's running node (`ServerRunningData.address`), else a
    /// member of `…/{dest}/cluster` (Java's `ClusterNodeAccessStrategy`).
    Coordinator(Arc<Coordinator>),
}

/// Reconnect pacing: exponential from `initial`, capped at `max`; retries forever unless
/// `deadline` bounds the total time one call may spend retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// First pause.
    pub initial: Duration,
    /// Largest pause (Java's fixed retry interval is 5 s).
    pub max: Duration,
    /// Give up a call after this long (`None`: never).
    pub deadline: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(5), deadline: None }
    }
}

impl Backoff {
    /// A backoff from `initial` to `max`, without deadline.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial), deadline: None }
    }

    /// Builder-style: a total deadline per call.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// Settings of a [`ClusterConnector`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Per-connection settings (destination, client id, credentials, timeouts).
    pub connector: ConnectorConfig,
    /// Where servers are found.
    pub discovery: Discovery,
    /// Reconnect pacing.
    pub backoff: Backoff,
    /// Client HA: compete for `/otter/canal/destinations/{dest}/{clientId}/running` and consume
    /// only while owning it (needs [`Discovery::Coordinator`]).
    pub client_ha: bool,
    /// How long a standby waits after the client running node is deleted (Canal: 5 s).
    pub takeover_delay: Duration,
}

impl ClusterConfig {
    /// Settings with the default backoff and no client HA.
    pub fn new(connector: ConnectorConfig, discovery: Discovery) -> Self {
        ClusterConfig {
            connector,
            discovery,
            backoff: Backoff::default(),
            client_ha: false,
            takeover_delay: DEFAULT_DELAY,
        }
    }

    /// Builder-style: turn client HA on or off.
    pub fn client_ha(mut self, on: bool) -> Self {
        self.client_ha = on;
        self
    }

    /// Builder-style: the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// The client-HA part: our running-node monitor.
#[derive(Debug)]
struct ClientHa {
    monitor: RunningMonitor,
    events: mpsc::UnboundedReceiver<RunningEvent>,
    status: watch::Receiver<RunningStatus>,
    /// Holds the port of our initial `ip:port` identity, so two clients on one host never share
    /// an address (the monitor treats a node with our address as ours).
    _reserved: tokio::net::TcpSocket,
}

/// One operation, retried across reconnects.
#[derive(Debug)]
enum Op {
    Subscribe(String),
    Unsubscribe,
    Get(i32, Option<i64>, TimeUnit),
    Ack(i64),
    Rollback(i64),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Subscribe(_) => "subscribe",
            Op::Unsubscribe => "unsubscribe",
            Op::Get(..) => "get",
            Op::Ack(_) => "ack",
            Op::Rollback(_) => "rollback",
        }
    }
}

/// Why a running operation was interrupted from outside.
enum Interrupt {
    ServerMoved,
    HaLost,
}

/// A connector to whichever server is active for the destination (Java's
/// `ClusterCanalConnector`, plus `ClientRunningMonitor` when client HA is on).
///
/// Transient failures (I/O errors, the server going away, a standby answering 400, the running
/// node moving) are retried transparently: disconnect, pause (bounded exponential backoff),
/// reconnect to the server discovery names now, re-subscribe with the remembered filter and roll
/// back un-acked batches (they are delivered again: at-least-once). Definite errors (auth, bad
/// config, undecodable entries, a failed ack) are returned.
///
/// With client HA, every call waits while this client is a standby (as Java's calls block on
/// the running monitor's mutex); [`is_active`](Self::is_active) tells which it is.
///
/// Cancel safety, for every method: dropping a future abandons the call; if a request was in
/// flight the connection is closed and the next call reconnects (with a rollback), so nothing is
/// read out of step.
#[derive(Debug)]
pub struct ClusterConnector {
    config: ClusterConfig,
    current: Option<SimpleConnector>,
    filter: Option<String>,
    /// Batches fetched on the current connection and not yet acked or rolled back.
    outstanding: BTreeSet<i64>,
    /// An ack or rollback asked by the caller was sent on the current connection and not yet
    /// confirmed by a later reply.
    user_unconfirmed: bool,
    running: Option<(watch::Receiver<Option<String>>, JoinHandle<()>)>,
    ha: Option<ClientHa>,
    next: usize,
    reconnects: u64,
}

impl ClusterConnector {
    /// A connector; nothing is started until [`connect`](Self::connect) or the first call.
    ///
    /// # Errors
    /// [`ClientError::Config`] for bad settings (client HA without a coordinator, an empty
    /// static list).
    pub fn new(config: ClusterConfig) -> Result<Self, ClientError> {
        config.connector.validate()?;
        match &config.discovery {
            Discovery::Static(list) if list.is_empty() => {
                return Err(ClientError::Config {
                    key: "servers",
                    reason: "the address list is empty".into(),
                });
            }
            Discovery::Static(_) if config.client_ha => {
                return Err(ClientError::Config {
                    key: "client_ha",
                    reason: "client HA needs a coordinator (ZooKeeper or etcd)".into(),
                });
            }
            _ => {}
        }
        // Start at a per-process offset, as Java shuffles the candidates.
        let next = std::process::id() as usize;
        Ok(ClusterConnector {
            config,
            current: None,
            filter: None,
            outstanding: BTreeSet::new(),
            user_unconfirmed: false,
            running: None,
            ha: None,
            next,
            reconnects: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The server currently connected to.
    pub fn server(&self) -> Option<&str> {
        self.current.as_ref().filter(|c| c.is_connected()).map(SimpleConnector::address)
    }

    /// The local address of the current connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.current.as_ref().and_then(SimpleConnector::local_addr)
    }

    /// How many times a connection was (re)established.
    pub fn connections(&self) -> u64 {
        self.reconnects
    }

    /// Whether this client is the active consumer of its client id (always true without client
    /// HA).
    pub fn is_active(&self) -> bool {
        self.ha.as_ref().is_none_or(|h| h.monitor.is_active())
    }

    /// Starts discovery (and client HA) and connects to the active server, retrying transient
    /// failures as configured. With client HA this waits until this client becomes active.
    ///
    /// # Errors
    /// Definite errors ([`ClientError::Auth`], ...) and [`ClientError::DeadlineExceeded`].
    ///
    /// # Cancel safety
    /// Cancel safe: a half-made connection is dropped; the next call starts over.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.start_background();
        let started = Instant::now();
        let mut pause = self.config.backoff.initial;
        loop {
            self.wait_active().await?;
            if self.connected() {
                return Ok(());
            }
            match self.reconnect().await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => self.back_off(e, started, &mut pause).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Subscribes with `filter` and remembers it for reconnects (see
    /// [`SimpleConnector::subscribe`]).
    ///
    /// # Errors
    /// Definite errors only (401, auth...); transient ones are retried.
    ///
    /// # Cancel safety
    /// See the type's documentation.
    pub async fn subscribe(&mut self, filter: &str) -> Result<(), ClientError> {
        self.execute(Op::Subscribe(filter.to_owned())).await.map(|_| ())
    }

    /// Unsubscribes and forgets the filter.
    ///
    /// # Errors
    /// Definite errors only.
    ///
    /// # Cancel safety
    /// See the type's documentation.
    pub async fn unsubscribe(&mut self) -> Result<(), ClientError> {
        self.execute(Op::Unsubscribe).await.map(|_| ())
    }

    /// Fetches a batch and acks it (see [`SimpleConnector::get`] for `timeout`).
    ///
    /// # Errors
    /// Definite errors, and [`ClientError::AckFailed`] when an earlier ack failed (the
    /// connection was renewed and un-acked batches will come again).
    ///
    /// # Cancel safety
    /// See the type's documentation; a batch taken by a cancelled call is delivered again.
    pub async fn get(
        &mut self,
        batch_size: i32,
        timeout: Option<Duration>,
    ) -> Result<Message, ClientError> {
        let amount = timeout.map(duration_ms);
        let m = self.get_without_ack(batch_size, amount, TimeUnit::Milliseconds).await?;
        if m.id != EMPTY_BATCH_ID {
            self.ack(m.id).await?;
        }
        Ok(m)
    }

    /// Fetches a batch without acking it (see [`SimpleConnector::get_without_ack`]).
    ///
    /// # Errors
    /// As [`get`](Self::get), plus [`ClientError::BadEntry`] (ack or roll back that batch).
    ///
    /// # Cancel safety
    /// See the type's documentation.
    pub async fn get_without_ack(
        &mut self,
        batch_size: i32,
        timeout: Option<i64>,
        unit: TimeUnit,
    ) -> Result<Message, ClientError> {
        match self.execute(Op::Get(batch_size, timeout, unit)).await? {
            Some(m) => Ok(m),
            None => Ok(Message::default()),
        }
    }

    /// Acks a batch fetched on the current connection.
    ///
    /// # Errors
    /// [`ClientError::BatchRolledBack`] when the batch was fetched before a reconnect (it was
    /// rolled back and will come again; nothing is sent); [`ClientError::AckFailed`] when an
    /// earlier ack failed.
    ///
    /// # Cancel safety
    /// See the type's documentation.
    pub async fn ack(&mut self, batch_id: i64) -> Result<(), ClientError> {
        self.execute(Op::Ack(batch_id)).await.map(|_| ())
    }

    /// Rolls back one batch, or all with 0. A batch from before a reconnect is already rolled
    /// back: nothing is sent.
    ///
    /// # Errors
    /// As [`ack`](Self::ack), without `BatchRolledBack`.
    ///
    /// # Cancel safety
    /// See the type's documentation.
    pub async fn rollback(&mut self, batch_id: i64) -> Result<(), ClientError> {
        self.execute(Op::Rollback(batch_id)).await.map(|_| ())
    }

    /// Closes the connection, stops discovery and, with client HA, releases the client running
    /// node (a standby takes over after the takeover delay). The filter is kept; a later call
    /// starts everything again.
    ///
    /// # Cancel safety
    /// Cancel safe: the connection is closed; the release may not have happened.
    pub async fn disconnect(&mut self) {
        if let Some(mut c) = self.current.take() {
            c.disconnect().await;
        }
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
        if let Some(mut ha) = self.ha.take() {
            // Nothing of ours needs flushing before the client node goes: the monitor need not
            // wait for us to read its last `ActiveExit`.
            ha.events.close();
            ha.monitor.stop().await;
        }
    }

    // ---- internals ----

    fn connected(&self) -> bool {
        self.current.as_ref().is_some_and(SimpleConnector::is_connected)
    }

    fn drop_conn(&mut self) {
        self.current = None;
        self.outstanding.clear();
        self.user_unconfirmed = false;
    }

    fn start_background(&mut self) {
        let Discovery::Coordinator(coord) = &self.config.discovery else {
            return;
        };
        if self.running.is_none() {
            let (tx, rx) = watch::channel(None);
            let task = tokio::spawn(watch_running(
                coord.clone(),
                path::server_running(&self.config.connector.destination),
                tx,
            ));
            self.running = Some((rx, task));
        }
        if self.config.client_ha && self.ha.is_none() {
            match start_ha(coord.clone(), &self.config) {
                Ok(ha) => self.ha = Some(ha),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start client HA; retrying on the next call")
                }
            }
        }
    }

    /// With client HA: waits until this client owns its running node (dropping the connection
    /// when it lost it meanwhile).
    async fn wait_active(&mut self) -> Result<(), ClientError> {
        if self.config.client_ha && self.ha.is_none() {
            self.start_background();
            if self.ha.is_none() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Err(ClientError::NotConnected);
            }
        }
        let Some(ha) = self.ha.as_mut() else {
            return Ok(());
        };
        let mut exited = false;
        while let Ok(ev) = ha.events.try_recv() {
            if matches!(ev, RunningEvent::ActiveExit { .. }) {
                exited = true;
            }
        }
        loop {
            let status = ha.status.borrow_and_update().clone();
            match status {
                RunningStatus::Active(_) => break,
                RunningStatus::Stopped => return Err(ClientError::Stopped),
                _ => {
                    exited = true;
                    if ha.status.changed().await.is_err() {
                        return Err(ClientError::Stopped);
                    }
                }
            }
        }
        if exited && self.current.is_some() {
            tracing::info!("client running node was lost meanwhile; reconnecting");
            self.drop_conn();
        }
        Ok(())
    }

    /// The address to connect to now.
    async fn next_server(&mut self) -> Result<String, ClientError> {
        let dest = &self.config.connector.destination;
        let no_server = || ClientError::NoServer { destination: dest.clone() };
        match &self.config.discovery {
            Discovery::Static(list) => {
                let a = list[self.next % list.len()].clone();
                self.next = self.next.wrapping_add(1);
                Ok(a)
            }
            Discovery::Coordinator(coord) => {
                let session = coord.session().await?;
                if let Some(node) = session.get(&path::server_running(dest)).await? {
                    match ServerRunningData::from_bytes(&node.data) {
                        Ok(d) if d.active && !d.address.is_empty() => return Ok(d.address),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "unreadable server running node"),
                    }
                }
                let members: Vec<String> = session
                    .children(&path::destination_cluster(dest))
                    .await?
                    .into_iter()
                    .filter(|m| m.split(':').count() == 2)
                    .collect();
                if members.is_empty() {
                    return Err(no_server());
                }
                let a = members[self.next % members.len()].clone();
                self.next = self.next.wrapping_add(1);
                Ok(a)
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.drop_conn();
        let address = self.next_server().await?;
        let mut config = self.config.connector.clone();
        // The cluster connector always rolls back on connect: un-acked batches come again.
        config.rollback_on_connect = true;
        let mut conn = SimpleConnector::new(address.clone(), config)?;
        conn.remember_filter(self.filter.clone());
        conn.connect().await?;
        self.reconnects += 1;
        tracing::info!(server = %address, local = ?conn.local_addr(), "connected to canal server");
        if let (Some(ha), Some(local)) = (&self.ha, conn.local_addr()) {
            let id = self.config.connector.client_id;
            if let Err(e) = ha.monitor.rewrite(ClientRunningData::new(local.to_string(), id)).await
            {
                tracing::warn!(error = %e, "rewriting the client running node failed");
            }
        }
        self.current = Some(conn);
        Ok(())
    }

    async fn back_off(
        &mut self,
        error: ClientError,
        started: Instant,
        pause: &mut Duration,
    ) -> Result<(), ClientError> {
        if let Some(deadline) = self.config.backoff.deadline
            && started.elapsed() + *pause > deadline
        {
            return Err(ClientError::DeadlineExceeded {
                elapsed: started.elapsed(),
                last: Box::new(error),
            });
        }
        tracing::warn!(error = %error, pause = ?*pause, "canal server unavailable; reconnecting");
        tokio::time::sleep(*pause).await;
        *pause = (*pause * 2).min(self.config.backoff.max);
        Ok(())
    }

    /// Whether the running node names a server other than the one we are connected to.
    fn server_moved(&self) -> bool {
        let (Some((rx, _)), Some(c)) = (&self.running, &self.current) else {
            return false;
        };
        rx.borrow().as_deref().is_some_and(|a| a != c.address())
    }

    async fn execute(&mut self, op: Op) -> Result<Option<Message>, ClientError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "canal_client",
            destination = %self.config.connector.destination,
            client_id = self.config.connector.client_id,
        );
        self.execute_inner(op).instrument(span).await
    }

    async fn execute_inner(&mut self, op: Op) -> Result<Option<Message>, ClientError> {
        self.start_background();
        let started = Instant::now();
        let mut pause = self.config.backoff.initial;
        loop {
            self.wait_active().await?;
            if self.server_moved() {
                tracing::info!("the destination's running server changed; reconnecting");
                self.drop_conn();
            }
            if !self.connected() {
                // A batch of an earlier connection was rolled back by the reconnect.
                match op {
                    Op::Ack(id) if id != EMPTY_BATCH_ID && self.current.is_none() => {
                        return Err(ClientError::BatchRolledBack { batch_id: id });
                    }
                    Op::Rollback(_) if self.current.is_none() => return Ok(None),
                    _ => {}
                }
                if let Err(e) = self.reconnect().await {
                    if e.is_transient() {
                        self.back_off(e, started, &mut pause).await?;
                        continue;
                    }
                    return Err(e);
                }
            }
            match op {
                Op::Ack(id) if id != EMPTY_BATCH_ID && !self.outstanding.contains(&id) => {
                    return Err(ClientError::BatchRolledBack { batch_id: id });
                }
                Op::Rollback(id) if id != 0 && !self.outstanding.contains(&id) => return Ok(None),
                _ => {}
            }
            let result = self.run(&op).await;
            let error = match result {
                Ok(Ok(v)) => {
                    match &op {
                        Op::Subscribe(f) => self.filter = Some(f.clone()),
                        Op::Unsubscribe => self.filter = None,
                        Op::Get(..) => {
                            if let Some(m) = &v
                                && m.id != EMPTY_BATCH_ID
                            {
                                self.outstanding.insert(m.id);
                            }
                        }
                        Op::Ack(id) | Op::Rollback(id) => {
                            if *id == 0 {
                                self.outstanding.clear();
                            } else {
                                self.outstanding.remove(id);
                            }
                        }
                    }
                    // A batch fetched ahead was asked for before the caller's last ack: its
                    // reply confirms nothing, and the ack's error may come after it.
                    self.user_unconfirmed = matches!(op, Op::Ack(_) | Op::Rollback(_))
                        || self.current.as_ref().is_some_and(SimpleConnector::caller_unconfirmed);
                    return Ok(v);
                }
                Ok(Err(e)) => e,
                Err(Interrupt::ServerMoved) => {
                    tracing::info!(
                        op = op.name(),
                        "the destination's running server changed; reconnecting"
                    );
                    self.drop_conn();
                    continue;
                }
                Err(Interrupt::HaLost) => {
                    tracing::info!(
                        op = op.name(),
                        "lost the client running node; waiting to be active again"
                    );
                    self.drop_conn();
                    continue;
                }
            };
            if let ClientError::AckFailed { .. } = error
                && self.user_unconfirmed
            {
                // The caller's ack/rollback failed: say so (after renewing the connection,
                // whose rollback makes the un-acked batches come again).
                self.drop_conn();
                return Err(error);
            }
            // Only our own on-connect rollback was unconfirmed (e.g. a standby that does not
            // run the destination): an ordinary reconnect.
            let connection_ok = self.connected();
            if error.is_transient() || matches!(error, ClientError::AckFailed { .. }) {
                tracing::debug!(op = op.name(), error = %error, "operation failed; reconnecting");
                self.drop_conn();
                self.back_off(error, started, &mut pause).await?;
                continue;
            }
            if !connection_ok {
                self.drop_conn();
            }
            return Err(error);
        }
    }

    /// Runs `op` on the current connection, interrupted when the running node moves elsewhere or
    /// client HA is lost.
    async fn run(&mut self, op: &Op) -> Result<Result<Option<Message>, ClientError>, Interrupt> {
        let Some(conn) = self.current.as_mut() else {
            return Ok(Err(ClientError::NotConnected));
        };
        let connected_to = conn.address().to_owned();
        let mut running = self.running.as_ref().map(|(rx, _)| rx.clone());
        let mut ha = self.ha.as_ref().map(|h| h.status.clone());
        let moved = async {
            match running.as_mut() {
                Some(rx) => loop {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if rx.borrow().as_deref().is_some_and(|a| a != connected_to) {
                        return;
                    }
                },
                None => std::future::pending().await,
            }
        };
        let lost = async {
            match ha.as_mut() {
                Some(rx) => loop {
                    if !matches!(*rx.borrow_and_update(), RunningStatus::Active(_)) {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                },
                None => std::future::pending().await,
            }
        };
        let work = async {
            match op {
                Op::Subscribe(f) => conn.subscribe(f).await.map(|()| None),
                Op::Unsubscribe => conn.unsubscribe().await.map(|()| None),
                Op::Get(size, timeout, unit) => {
                    conn.get_without_ack(*size, *timeout, *unit).await.map(Some)
                }
                Op::Ack(id) => conn.ack(*id).await.map(|()| None),
                Op::Rollback(id) => conn.rollback(*id).await.map(|()| None),
            }
        };
        tokio::select! {
            biased;
            () = lost => Err(Interrupt::HaLost),
            () = moved => Err(Interrupt::ServerMoved),
            r = work => Ok(r),
        }
    }
}

impl Drop for ClusterConnector {
    fn drop(&mut self) {
        // The HA monitor aborts its own task when dropped (its node then goes with the session).
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

/// Follows the destination's running node and publishes the active server's address.
async fn watch_running(coord: Arc<Coordinator>, node: String, tx: watch::Sender<Option<String>>) {
    loop {
        let session = match coord.session().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "running-node watcher: no session");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match session.get_and_watch(&node).await {
            Ok((n, w)) => {
                let address = n
                    .and_then(|n| ServerRunningData::from_bytes(&n.data).ok())
                    .filter(|d| d.active)
                    .map(|d| d.address);
                tx.send_if_modified(|cur| {
                    if *cur != address {
                        tracing::debug!(server = ?address, "destination running node");
                        *cur = address;
                        true
                    } else {
                        false
                    }
                });
                if tx.is_closed() {
                    return;
                }
                if let WatchEvent::SessionLost(_) = w.changed().await {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "running-node watcher: read failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn start_ha(coord: Arc<Coordinator>, config: &ClusterConfig) -> Result<ClientHa, ClientError> {
    let ip = local_ip();
    let io = |source| ClientError::Connect { address: format!("{ip}:0"), source };
    let socket = match ip {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(io)?;
    socket.bind(SocketAddr::new(ip, 0)).map_err(io)?;
    let port = socket.local_addr().map_err(io)?.port();
    let id = config.connector.client_id;
    let me = ClientRunningData::new(format!("{ip}:{port}"), id);
    let (monitor, events) =
        RunningMonitor::client(coord, &config.connector.destination, id, me, config.takeover_delay);
    let status = monitor.status();
    Ok(ClientHa { monitor, events, status, _reserved: socket })
}

/// This host's outward IP (the address a UDP socket would use), else loopback.
fn local_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
