//! The server process: destinations under HA, the Canal TCP listener, cursors in the coordinator.
//!
//! Every configured destination has a [`RunningMonitor`] competing for
//! `/otter/canal/destinations/{dest}/running`. On `ActiveEnter` the server reads the clients'
//! cursors and filters, starts the [`Instance`] from the minimum cursor and serves it; on
//! `ActiveExit` (release, `active:false`, lost session, deposed) it closes the destination — and
//! with it every client session using it — and stops the instance at once (fencing: Java Canal
//! keeps running, which gives split brain). Cursor writes carry the running node's fence, so a
//! deposed server cannot move a cursor.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use canal_coord::{
    ClusterRegistration, CoordConfig, Coordinator, CursorStore, Fence, RunningEvent,
    RunningMonitor, ServerRunningData, path,
};
use canal_core::filter::{FilterError, NameFilter};
use canal_core::instance::{Instance, InstanceConfig, InstanceState};
use canal_core::position::{LogIdentity, LogPosition};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, warn};

use crate::destination::{CursorSink, Destination, FilterSink};
use crate::session::{self, Lookup, Registry, SessionConfig};

/// How the server process runs.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address the Canal protocol listens on (`canal.ip:canal.port`; port 0 picks one).
    pub bind: SocketAddr,
    /// Address published in the coordinator (`canal.register.ip:port`); `None` = the bound one.
    pub register_address: Option<String>,
    /// Per-session settings (auth, frame limits, timeouts).
    pub session: SessionConfig,
    /// Coordination backend and HA timing.
    pub coord: CoordConfig,
    /// Where the status/metrics HTTP endpoint listens (`None` = disabled).
    pub metrics_bind: Option<SocketAddr>,
}

/// A destination's place in the server.
#[derive(Debug)]
struct Slot {
    name: String,
    config: InstanceConfig,
    state: Mutex<SlotState>,
    status: watch::Sender<DestinationStatus>,
}

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Standby,
    Running {
        instance: Arc<Instance>,
        destination: Arc<Destination>,
    },
}

/// A destination as the status endpoint shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DestinationStatus {
    /// Name.
    pub name: String,
    /// Whether this server runs it.
    pub active: bool,
    /// The owner's address as last seen in the running node.
    pub running_owner: Option<String>,
    /// Times this server became active.
    pub activations: u64,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry sessions use.
#[derive(Debug)]
struct ServerRegistry {
    slots: BTreeMap<String, Arc<Slot>>,
}

impl Registry for ServerRegistry {
    fn lookup(&self, name: &str) -> Lookup {
        match self.slots.get(name) {
            None => Lookup::Unknown,
            Some(slot) => match &*slot.lock() {
                SlotState::Running { destination, .. } => Lookup::Running(destination.clone()),
                SlotState::Standby => Lookup::NotRunning,
            },
        }
    }

    fn request_start(&self, name: &str) {
        // Every configured destination already competes for its running node from boot; a
        // subscribe on a standby just tells the client to go to the active server.
        tracing::debug!(destination = name, "subscribe on a standby destination");
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    registry: Arc<ServerRegistry>,
    monitors: Vec<(String, RunningMonitor, JoinHandle<()>)>,
    registration: Option<ClusterRegistration>,
    cursors: Arc<CursorStore>,
    coord: Arc<Coordinator>,
    tasks: Vec<JoinHandle<()>>,
}

fn cursor_order(cur: &[u8], new: &[u8]) -> Option<std::cmp::Ordering> {
    let a = LogPosition::from_json(cur).ok()?;
    let b = LogPosition::from_json(new).ok()?;
    Some(a.cmp_for_restart(&b))
}

impl Server {
    /// Binds the listener, opens the coordinator and starts competing for every destination.
    ///
    /// # Errors
    /// The port cannot be bound, the coordinator configuration is invalid.
    pub async fn start(
        settings: ServerSettings,
        destinations: Vec<InstanceConfig>,
    ) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let local_addr = listener.local_addr()?;
        let address = settings.register_address.clone().unwrap_or_else(|| {
            let ip = if local_addr.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                local_addr.ip()
            };
            format!("{ip}:{}", local_addr.port())
        });
        let backend = settings.coord.open_backend().context("coordinator configuration")?;
        let coord = Coordinator::new(backend);
        let cursors = CursorStore::new(coord.clone(), settings.coord.flush_policy(), cursor_order);
        let mut tasks = Vec::new();
        if let Some(t) = cursors.spawn_flusher() {
            tasks.push(t);
        }
        let mut slots = BTreeMap::new();
        for cfg in destinations {
            let (status, _) = watch::channel(DestinationStatus {
                name: cfg.destination.clone(),
                ..DestinationStatus::default()
            });
            let slot = Arc::new(Slot {
                name: cfg.destination.clone(),
                config: cfg,
                state: Mutex::new(SlotState::Standby),
                status,
            });
            slots.insert(slot.name.clone(), slot);
        }
        let registry = Arc::new(ServerRegistry { slots });
        let mut reg_paths = vec![path::server_cluster_node(&address)];
        reg_paths
            .extend(registry.slots.keys().map(|d| path::destination_cluster_node(d, &address)));
        let registration = Some(ClusterRegistration::start(coord.clone(), reg_paths));

        let mut monitors = Vec::new();
        for slot in registry.slots.values() {
            let (monitor, events) = RunningMonitor::server(
                coord.clone(),
                &slot.name,
                ServerRunningData::new(address.clone()),
                settings.coord.takeover_delay(),
            );
            let span = tracing::info_span!("destination", destination = %slot.name);
            let task = tokio::spawn(
                drive(slot.clone(), events, coord.clone(), cursors.clone()).instrument(span),
            );
            monitors.push((slot.name.clone(), monitor, task));
        }

        let reg: Arc<dyn Registry> = registry.clone();
        let session_cfg = settings.session.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((sock, peer)) => {
                        let _ = sock.set_nodelay(true);
                        let span = tracing::debug_span!("session", %peer);
                        tokio::spawn(
                            session::serve(
                                sock,
                                peer.to_string(),
                                reg.clone(),
                                session_cfg.clone(),
                            )
                            .instrument(span),
                        );
                    }
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));

        let metrics_addr = match settings.metrics_bind {
            Some(bind) => {
                let l = TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("cannot listen on {bind} for metrics"))?;
                let addr = l.local_addr()?;
                tasks.push(tokio::spawn(crate::admin::serve(l, registry_view(&registry))));
                Some(addr)
            }
            None => None,
        };
        info!(%local_addr, %address, backend = ?settings.coord.backend_kind(), "canal-server started");
        Ok(Server {
            local_addr,
            metrics_addr,
            registry,
            monitors,
            registration,
            cursors,
            coord,
            tasks,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The status/metrics HTTP address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Destinations running here now.
    pub fn active_destinations(&self) -> Vec<String> {
        self.registry
            .slots
            .values()
            .filter(|s| matches!(&*s.lock(), SlotState::Running { .. }))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Graceful stop (SIGTERM): flush cursors while still the owner, release every running node
    /// (a standby takes over without waiting for session expiry), stop instances and sessions,
    /// close the coordination session.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.cursors.flush().await {
            warn!("final cursor flush: {e}");
        }
        for (_, monitor, task) in self.monitors.drain(..) {
            monitor.stop().await;
            let _ = task.await;
        }
        if let Some(r) = self.registration.take() {
            r.stop().await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.coord.close().await;
        info!("canal-server stopped");
    }
}

/// Follows one destination's monitor: start on ActiveEnter, stop on ActiveExit.
async fn drive(
    slot: Arc<Slot>,
    mut events: mpsc::UnboundedReceiver<RunningEvent>,
    coord: Arc<Coordinator>,
    cursors: Arc<CursorStore>,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            RunningEvent::ActiveEnter { fence } => {
                info!("active: starting the instance");
                match activate(&slot, &coord, &cursors, fence).await {
                    Ok(()) => slot.status.send_modify(|s| {
                        s.active = true;
                        s.activations += 1;
                    }),
                    Err(e) => warn!("cannot start the instance: {e:#}"),
                }
            }
            RunningEvent::ActiveExit { reason } => {
                info!(?reason, "no longer active: stopping the instance");
                deactivate(&slot).await;
                cursors.forget(&slot.name);
                slot.status.send_modify(|s| s.active = false);
            }
            _ => {}
        }
    }
    deactivate(&slot).await;
}

async fn deactivate(slot: &Slot) {
    let old = std::mem::take(&mut *slot.lock());
    if let SlotState::Running { instance, destination } = old {
        destination.close();
        match Arc::try_unwrap(instance) {
            Ok(i) => i.stop().await,
            Err(shared) => drop(shared), // dropping the last handle stops it too
        }
    }
}

/// Reads the destination's clients (cursor, filter) from the coordinator and starts serving.
async fn activate(
    slot: &Arc<Slot>,
    coord: &Arc<Coordinator>,
    cursors: &Arc<CursorStore>,
    fence: Fence,
) -> anyhow::Result<()> {
    let session = coord.session().await?;
    let dest = &slot.name;
    let mut known: HashMap<i16, (Option<LogPosition>, String)> = HashMap::new();
    for child in session.children(&path::destination(dest)).await.unwrap_or_default() {
        let Ok(id) = child.parse::<i16>() else { continue };
        let cursor = match cursors.get(dest, id).await {
            Ok(Some(bytes)) => LogPosition::from_json(&bytes).ok(),
            _ => None,
        };
        let filter = session
            .get(&path::client_filter(dest, id))
            .await
            .ok()
            .flatten()
            .map(|n| String::from_utf8_lossy(&n.data).into_owned())
            .unwrap_or_default();
        known.insert(id, (cursor, filter));
    }
    let min_cursor =
        known.values().filter_map(|(c, _)| c.clone()).min_by(|a, b| a.cmp_for_restart(b));
    let mut config = slot.config.clone();
    // The last subscription filter wins, as in Canal.
    if let Some((_, (_, f))) =
        known.iter().filter(|(_, (_, f))| !f.is_empty()).max_by_key(|(id, _)| **id)
    {
        config.convert.filter = config.convert.filter.with_white(f)?;
    }
    info!(clients = known.len(), cursor = ?min_cursor.as_ref().map(|c| &c.position), "starting instance");
    let black = config.convert.filter.black().source().to_owned();
    let instance = Arc::new(Instance::start(config, min_cursor));
    let identity = LogIdentity::new(instance.source().clone());
    let sink = CoordCursorSink::start(dest.clone(), cursors.clone(), coord.clone(), fence, known);
    let filter = InstanceFilter { instance: Arc::downgrade(&instance), black };
    let destination = Arc::new(Destination::new(
        dest.clone(),
        instance.store().clone(),
        identity,
        Arc::new(sink),
        Arc::new(filter),
    ));
    *slot.lock() = SlotState::Running { instance, destination };
    Ok(())
}

/// Applies a client's subscription filter to the running instance (the black list stays).
#[derive(Debug)]
struct InstanceFilter {
    instance: std::sync::Weak<Instance>,
    black: String,
}

impl FilterSink for InstanceFilter {
    fn apply(&self, filter: &str) -> Result<(), FilterError> {
        let f = NameFilter::new(filter, &self.black)?;
        if let Some(i) = self.instance.upgrade() {
            i.set_filter(f);
        }
        Ok(())
    }
}

enum CursorOp {
    Update(i16, Vec<u8>),
    Subscribe(i16, String),
    Unsubscribe(i16),
}

/// Cursors and subscriptions of one active destination, written to the coordinator in order by
/// one task, fenced by the running node.
#[derive(Debug)]
struct CoordCursorSink {
    cache: Mutex<HashMap<i16, Option<LogPosition>>>,
    tx: mpsc::UnboundedSender<CursorOp>,
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for CursorOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorOp")
    }
}

impl CoordCursorSink {
    fn start(
        dest: String,
        cursors: Arc<CursorStore>,
        coord: Arc<Coordinator>,
        fence: Fence,
        known: HashMap<i16, (Option<LogPosition>, String)>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<CursorOp>();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let op = tokio::select! {
                    op = rx.recv() => match op { Some(op) => op, None => return },
                    _ = &mut stop_rx => return,
                };
                let result: anyhow::Result<()> = async {
                    match op {
                        CursorOp::Update(id, bytes) => {
                            cursors.update(&dest, id, bytes, &fence).await?;
                        }
                        CursorOp::Subscribe(id, filter) => {
                            let s = coord.session().await?;
                            s.ensure_persistent(&path::client(&dest, id)).await?;
                            let fp = path::client_filter(&dest, id);
                            if !filter.is_empty() {
                                if s.get(&fp).await?.is_some() {
                                    s.put(&fp, filter.as_bytes(), None).await?;
                                } else {
                                    s.create_persistent(&fp, filter.as_bytes()).await?;
                                }
                            }
                        }
                        CursorOp::Unsubscribe(id) => {
                            let s = coord.session().await?;
                            for p in [
                                path::client_filter(&dest, id),
                                path::client_cursor(&dest, id),
                                path::client(&dest, id),
                            ] {
                                let _ = s.delete(&p, None).await;
                            }
                        }
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = result {
                    warn!(destination = %dest, "coordinator write failed: {e:#}");
                }
            }
        });
        let cache = known.into_iter().map(|(id, (c, _))| (id, c)).collect();
        Self { cache: Mutex::new(cache), tx, _stop: stop_tx }
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<i16, Option<LogPosition>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CursorSink for CoordCursorSink {
    fn load(&self, _destination: &str, client_id: i16) -> Option<LogPosition> {
        self.cache().get(&client_id).cloned().flatten()
    }

    fn update(&self, _destination: &str, client_id: i16, position: &LogPosition) {
        self.cache().insert(client_id, Some(position.clone()));
        let _ = self.tx.send(CursorOp::Update(client_id, position.to_cursor_json().into_bytes()));
    }

    fn subscribe(&self, _destination: &str, client_id: i16, filter: &str) {
        let _ = self.tx.send(CursorOp::Subscribe(client_id, filter.to_owned()));
    }

    fn unsubscribe(&self, _destination: &str, client_id: i16) {
        self.cache().remove(&client_id);
        let _ = self.tx.send(CursorOp::Unsubscribe(client_id));
    }
}

/// What the admin endpoint reads.
#[derive(Debug, Clone)]
pub struct RegistryView {
    slots: Vec<Arc<Slot>>,
}

fn registry_view(r: &ServerRegistry) -> RegistryView {
    RegistryView { slots: r.slots.values().cloned().collect() }
}

/// One destination's numbers for `/metrics` and `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DestinationReport {
    /// Name.
    pub destination: String,
    /// Served by this server.
    pub active: bool,
    /// Times it became active here.
    pub activations: u64,
    /// Pipeline state (when active).
    pub state: Option<String>,
    /// Milliseconds behind the source (now − last event time).
    pub delay_ms: Option<i64>,
    /// Rows put into the store since activation.
    pub rows: u64,
    /// Entries held in the store.
    pub store_entries: usize,
    /// Bytes held in the store.
    pub store_bytes: usize,
    /// Subscribed clients and their cursors.
    pub clients: Vec<ClientReport>,
}

/// One client of a destination.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientReport {
    /// Client id.
    pub client_id: i16,
    /// Subscription filter.
    pub filter: String,
    /// Cursor JSON (as stored in the coordinator).
    pub cursor: Option<serde_json::Value>,
}

impl RegistryView {
    /// Current reports, one per destination.
    pub fn reports(&self) -> Vec<DestinationReport> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.slots
            .iter()
            .map(|slot| {
                let st = slot.status.borrow().clone();
                let mut r = DestinationReport {
                    destination: slot.name.clone(),
                    active: st.active,
                    activations: st.activations,
                    state: None,
                    delay_ms: None,
                    rows: 0,
                    store_entries: 0,
                    store_bytes: 0,
                    clients: Vec::new(),
                };
                if let SlotState::Running { instance, destination } = &*slot.lock() {
                    let status = instance.status();
                    r.state = Some(match &status.state {
                        InstanceState::Starting => "starting".into(),
                        InstanceState::Running => "running".into(),
                        InstanceState::Reconnecting { error, .. } => {
                            format!("reconnecting: {error}")
                        }
                        InstanceState::Failed { error } => format!("failed: {error}"),
                        InstanceState::Stopped => "stopped".into(),
                    });
                    r.delay_ms = status.last_event_ms.map(|t| (now - t).max(0));
                    r.rows = status.rows;
                    let stats = destination.store().stats();
                    r.store_entries = stats.entries;
                    r.store_bytes = stats.bytes;
                    r.clients = destination
                        .subscriptions()
                        .into_iter()
                        .map(|(id, filter)| ClientReport {
                            client_id: id,
                            filter,
                            cursor: destination
                                .cursor(id)
                                .and_then(|c| serde_json::from_str(&c.to_plain_json()).ok()),
                        })
                        .collect();
                }
                r
            })
            .collect()
    }
}
