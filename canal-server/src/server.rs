//! The server process: destinations under HA, the Canal TCP listener, cursors in the coordinator.
//!
//! Every configured destination has a [`RunningMonitor`] competing for
//! `/otter/canal/destinations/{dest}/running`. On `ActiveEnter` the server reads the clients'
//! cursors and filters, starts the [`Instance`] from the minimum cursor and serves it; on
//! `ActiveExit` (release, `active:false`, lost session, deposed) it closes the destination — and
//! with it every client session using it — and stops the instance at once (fencing: Java Canal
//! keeps running, which gives split brain). Cursor writes carry the running node's fence, so a
//! deposed server cannot move a cursor; the writer of one activation stops with it.
//!
//! Failures are retried, never turned into defaults: a coordinator read that fails during
//! activation is retried with backoff (starting at the source's head instead would skip rows),
//! and a failed instance is restarted from the minimum acked cursor; after
//! [`SupervisorConfig::max_failures`] consecutive failures the server releases the running node
//! so that another server can try, and says why in the log, `/status` and `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use canal_coord::{
    Backend, ClusterRegistration, CoordConfig, CoordError, Coordinator, CursorError, CursorStore,
    ExitFlush, Fence, FlushPolicy, MonitorHandle, RunningData, RunningEvent, RunningMonitor,
    ServerRunningData, path,
};
use canal_core::binlog::replica::Backoff;
use canal_core::filter::{FilterError, NameFilter};
use canal_core::instance::{ConnectGate, Instance, InstanceConfig, InstanceState, SharedHistory};
use canal_core::position::{LogIdentity, LogPosition};

use crate::history_store::load_shared_history;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, warn};

use crate::destination::{CursorSink, Destination, FilterSink};
use crate::session::{self, Availability, Registry, SessionConfig};

/// Send buffer of client connections: a 1 MiB batch (the default GET) goes out in a few
/// writes instead of dozens of wake-ups as the default 16 KiB buffer drains (the kernel doubles
/// the value and caps it at `net.core.wmem_max`).
const SEND_BUFFER: usize = 4 << 20;

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
    /// Retries, restarts and when to hand a destination over.
    pub supervisor: SupervisorConfig,
    /// MQ mode: publish every destination into a broker instead of serving TCP clients.
    pub mq: Option<crate::mq::MqSettings>,
    /// Balanced ownership across the cluster (`[balance]`; docs/operations.md "Balancing").
    pub balance: crate::balance::BalanceSettings,
    /// Bearer token of the admin API (`admin_token`); without one the API answers loopback
    /// peers only.
    pub admin_token: Option<String>,
}

/// A destination's place in the server.
#[derive(Debug)]
struct Slot {
    name: String,
    config: InstanceConfig,
    state: Mutex<SlotState>,
    status: watch::Sender<DestinationStatus>,
    /// MQ mode counters of this destination on this server.
    mq: Arc<crate::mq::MqMetrics>,
    /// Operators' requests to the destination's driver (admin API).
    admin: mpsc::UnboundedSender<AdminCmd>,
    /// Releases the destination's running node (admin API); replaced when an operator starts a
    /// stopped destination again.
    handle: Mutex<MonitorHandle>,
}

/// Where an operator resets a client's cursor to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CursorTarget {
    /// A binlog file and offset (a transaction boundary).
    Position {
        /// Binlog file.
        journal: String,
        /// Offset.
        offset: i64,
    },
    /// A GTID set (destinations in `gtid_mode`).
    Gtid(String),
    /// The last transaction boundary at or before this time (ms since the epoch), found by a
    /// search of the source's binlog.
    Timestamp(i64),
}

/// An operator's request to one destination's driver.
#[derive(Debug)]
pub enum AdminCmd {
    /// Reset `client_id`'s cursor: the run stops (queued cursors written), the cursor is
    /// written under the activation's fence, and the destination starts again from it.
    ResetCursor {
        /// The client.
        client_id: i16,
        /// Where to.
        target: CursorTarget,
        /// The new cursor's JSON, or why not.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Stop competing for the destination on this server: the run stops (cursors written), the
    /// running node is released and the registration removed, until `Start`.
    Stop {
        /// Done.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Compete for a stopped destination again.
    Start {
        /// Done.
        reply: oneshot::Sender<Result<String, String>>,
    },
}

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Standby,
    Running {
        instance: Arc<Instance>,
        destination: Arc<Destination>,
    },
    /// Active, but the instance failed; it restarts after a pause.
    Failed {
        reason: String,
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
    /// An operator stopped it on this server (admin API): it does not compete until started.
    pub stopped: bool,
    /// Failures, restarts and releases (also in `/status` and `/metrics`).
    pub failures: FailureCounts,
}

/// A destination's failures on this server, shown by `/status` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FailureCounts {
    /// Current run of failures (activation attempts or instance runs) without progress.
    pub consecutive_failures: u32,
    /// Activation attempts that failed (coordinator reads).
    pub activation_failures: u64,
    /// Instance runs that ended in failure.
    pub instance_failures: u64,
    /// Instance restarts after a failure.
    pub restarts: u64,
    /// Times this server released the node after too many consecutive failures.
    pub releases: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Why the node was last released after failures.
    pub released: Option<String>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry sessions use.
#[derive(Debug)]
struct ServerRegistry {
    /// The configured destinations (a reload adds and removes some).
    slots: std::sync::RwLock<BTreeMap<String, Arc<Slot>>>,
    /// MQ mode: the store of every destination belongs to its MQ worker.
    mq_mode: bool,
}

impl ServerRegistry {
    fn slots(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn slots_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Registry for ServerRegistry {
    fn lookup(&self, name: &str) -> Availability {
        let slot = self.slots().get(name).cloned();
        match slot {
            None => Availability::Unknown,
            // The store has one reader; in MQ mode that is the MQ worker.
            Some(_) if self.mq_mode => Availability::Failed(format!(
                "destination:{name} is in MQ mode: consume it from the broker"
            )),
            Some(slot) => match &*slot.lock() {
                SlotState::Running { destination, .. } => {
                    Availability::Running(destination.clone())
                }
                SlotState::Failed { reason } => Availability::Failed(reason.clone()),
                SlotState::Standby => Availability::NotRunning,
            },
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    registry: Arc<ServerRegistry>,
    /// Every configured destination's driver, by name.
    runs: BTreeMap<String, DestRun>,
    /// What starting a destination needs.
    ctx: DestCtx,
    /// Stops the balancer (each destination has its own stop).
    stop: watch::Sender<bool>,
    /// `/otter/canal/cluster/{ip:port}`: removed first on shutdown, so that the others stop
    /// counting this server before it releases its destinations.
    registration: Option<ClusterRegistration>,
    tasks: Vec<JoinHandle<()>>,
    balance_task: Option<JoinHandle<()>>,
    reload: Arc<ReloadStatus>,
}

/// One configured destination: its driver (monitor, activations, instance) and its
/// `…/{dest}/cluster/{ip:port}` registration.
#[derive(Debug)]
struct DestRun {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// What it was started with (see [`DestinationSpec::fingerprint`]).
    fingerprint: String,
}

/// What starting a destination needs.
#[derive(Debug)]
struct DestCtx {
    coord: Arc<Coordinator>,
    cursors: Arc<CursorStore>,
    address: String,
    delay: Duration,
    supervisor: SupervisorConfig,
    mq: Option<Arc<crate::mq::MqSettings>>,
    balancer: Option<Arc<crate::balance::Balancer>>,
}

/// A destination as a (re)load hands it to the server.
#[derive(Debug, Clone)]
pub struct DestinationSpec {
    /// The instance settings.
    pub config: InstanceConfig,
    /// Balancing weight and preferred servers.
    pub balance: crate::balance::DestinationBalance,
    /// Equal fingerprints = nothing to restart: the effective settings, plus the instance
    /// file's text (which also covers values the settings' `Debug` hides, like passwords).
    pub fingerprint: String,
}

impl DestinationSpec {
    /// A spec of `config`; `source` is the text it was read from (empty when none).
    pub fn new(
        config: InstanceConfig,
        balance: crate::balance::DestinationBalance,
        source: &str,
    ) -> Self {
        let fingerprint = format!("{config:?}\n{balance:?}\n{source}");
        Self { config, balance, fingerprint }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Destinations started.
    pub added: Vec<String>,
    /// Destinations stopped (their running nodes released).
    pub removed: Vec<String>,
    /// Destinations restarted with new settings.
    pub restarted: Vec<String>,
}

impl ReloadReport {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.restarted.is_empty()
    }
}

/// Reloads of the configuration, for `/metrics` and `/status`.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    applied: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What `/status` shows of reloads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadSummary {
    /// Reloads that changed something.
    pub applied: u64,
    /// Reloads refused because the configuration was invalid (nothing was changed).
    pub failed: u64,
    /// The last refusal's message (cleared by the next successful reload).
    pub last_error: Option<String>,
}

impl ReloadStatus {
    fn summary(&self) -> ReloadSummary {
        use std::sync::atomic::Ordering::Relaxed;
        ReloadSummary {
            applied: self.applied.load(Relaxed),
            failed: self.failed.load(Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
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
        let backend = settings.coord.open_backend().context("coordinator configuration")?;
        Self::start_with_backend(settings, destinations, backend).await
    }

    /// Like [`Server::start`], over the given coordination backend instead of the one
    /// `settings.coord` names (tests wrap a real backend in a fault-injecting one).
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start_with_backend(
        settings: ServerSettings,
        destinations: Vec<InstanceConfig>,
        backend: Arc<dyn Backend>,
    ) -> anyhow::Result<Server> {
        let specs = destinations
            .into_iter()
            .map(|c| {
                let b = settings.balance.destinations.get(&c.destination).cloned();
                DestinationSpec::new(c, b.unwrap_or_default(), "")
            })
            .collect();
        Self::start_specs(settings, specs, backend).await
    }

    /// Like [`Server::start_with_backend`], with destinations as a (re)load produces them
    /// (their fingerprints decide what a later [`Server::reload`] restarts).
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start_specs(
        settings: ServerSettings,
        specs: Vec<DestinationSpec>,
        backend: Arc<dyn Backend>,
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
        let coord = Coordinator::new(backend);
        let cursors = CursorStore::new(coord.clone(), settings.coord.flush_policy(), cursor_order);
        let mut tasks = Vec::new();
        if let Some(t) = cursors.spawn_flusher() {
            tasks.push(t);
        }
        let registry = Arc::new(ServerRegistry {
            slots: std::sync::RwLock::new(BTreeMap::new()),
            mq_mode: settings.mq.is_some(),
        });
        let registration = Some(ClusterRegistration::start(
            coord.clone(),
            vec![path::server_cluster_node(&address)],
        ));
        let (stop, stop_rx) = watch::channel(false);
        let balancer = settings.balance.enabled.then(|| {
            crate::balance::Balancer::new(
                coord.clone(),
                address.clone(),
                settings.balance.clone(),
                settings.coord.takeover_delay(),
                specs.iter().map(|s| s.config.destination.clone()),
            )
        });
        let ctx = DestCtx {
            coord: coord.clone(),
            cursors: cursors.clone(),
            address: address.clone(),
            delay: settings.coord.takeover_delay(),
            supervisor: settings.supervisor.clone(),
            mq: settings.mq.clone().map(Arc::new),
            balancer: balancer.clone(),
        };
        let mut runs = BTreeMap::new();
        for spec in specs {
            let name = spec.config.destination.clone();
            runs.insert(name, ctx.start_destination(&registry, spec));
        }

        let reg: Arc<dyn Registry> = registry.clone();
        let session_cfg = settings.session.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((sock, peer)) => {
                        // As Java Canal's server: no Nagle delay, and SO_KEEPALIVE so that the
                        // sessions of vanished peers end (with the OS's keepalive timing).
                        if let Err(e) = sock.set_nodelay(true) {
                            tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                        }
                        if let Err(e) = socket2::SockRef::from(&sock).set_keepalive(true) {
                            tracing::debug!(%peer, "cannot set SO_KEEPALIVE: {e}");
                        }
                        if let Err(e) =
                            socket2::SockRef::from(&sock).set_send_buffer_size(SEND_BUFFER)
                        {
                            tracing::debug!(%peer, "cannot set SO_SNDBUF: {e}");
                        }
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

        let balance_task = balancer.as_ref().and_then(|b| b.spawn(stop_rx));
        let reload = Arc::new(ReloadStatus::default());
        let metrics_addr = match settings.metrics_bind {
            Some(bind) => {
                let l = TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("cannot listen on {bind} for metrics"))?;
                let addr = l.local_addr()?;
                let mut view = registry_view(&registry, balancer.clone(), Some(reload.clone()));
                view.coord = Some(coord.clone());
                view.admin_token = settings.admin_token.clone().filter(|t| !t.is_empty());
                tasks.push(tokio::spawn(crate::admin::serve(l, view)));
                Some(addr)
            }
            None => None,
        };
        info!(%local_addr, %address, backend = ?settings.coord.backend_kind(), "canal-server started");
        Ok(Server {
            local_addr,
            metrics_addr,
            registry,
            runs,
            ctx,
            stop,
            registration,
            tasks,
            balance_task,
            reload,
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

    /// What `/status` shows, one report per destination.
    pub fn reports(&self) -> Vec<DestinationReport> {
        registry_view(&self.registry, None, None).reports()
    }

    /// Balancing on this server (`None` when off).
    pub fn balance(&self) -> Option<crate::balance::BalanceReport> {
        self.ctx.balancer.as_ref().map(|b| b.report())
    }

    /// The configured destinations.
    pub fn destinations(&self) -> Vec<String> {
        self.runs.keys().cloned().collect()
    }

    /// Applies a new set of destinations: starts the new ones, stops (releasing their running
    /// nodes) the ones no longer configured, and restarts, one at a time, the ones whose
    /// fingerprint changed; the others are not touched.
    pub async fn reload(&mut self, specs: Vec<DestinationSpec>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let wanted: BTreeMap<String, DestinationSpec> =
            specs.into_iter().map(|s| (s.config.destination.clone(), s)).collect();
        let gone: Vec<String> =
            self.runs.keys().filter(|d| !wanted.contains_key(*d)).cloned().collect();
        for d in gone {
            info!(destination = %d, "reload: stopping the destination (no longer configured)");
            self.stop_destination(&d).await;
            report.removed.push(d);
        }
        for (d, spec) in wanted {
            match self.runs.get(&d) {
                Some(run) if run.fingerprint == spec.fingerprint => {}
                Some(_) => {
                    info!(destination = %d, "reload: restarting the destination (settings changed)");
                    self.stop_destination(&d).await;
                    let run = self.ctx.start_destination(&self.registry, spec);
                    self.runs.insert(d.clone(), run);
                    report.restarted.push(d);
                }
                None => {
                    info!(destination = %d, "reload: starting the destination");
                    let run = self.ctx.start_destination(&self.registry, spec);
                    self.runs.insert(d.clone(), run);
                    report.added.push(d);
                }
            }
        }
        if !report.is_empty() {
            self.reload.applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        *self.reload.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        report
    }

    /// Records a reload refused because the configuration did not load (nothing changed).
    pub fn reload_failed(&self, error: &str) {
        self.reload.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.reload.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_owned());
    }

    /// Stops one destination as a shutdown does (graceful: cursors flushed, node released),
    /// removes its registration and forgets it.
    async fn stop_destination(&mut self, name: &str) {
        let Some(run) = self.runs.remove(name) else { return };
        run.stop.send_replace(true);
        if let Err(e) = run.task.await {
            warn!(destination = name, "destination task ended abnormally: {e}");
        }
        if let Some(b) = &self.ctx.balancer {
            b.remove_destination(name);
        }
        self.registry.slots_mut().remove(name);
    }

    /// Destinations running here now.
    pub fn active_destinations(&self) -> Vec<String> {
        self.registry
            .slots()
            .values()
            .filter(|s| matches!(&*s.lock(), SlotState::Running { .. }))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Graceful stop (SIGTERM): for every destination, stop sessions and the instance, write
    /// the queued cursors while still the owner, then release the running node (a standby takes
    /// over without waiting for session expiry); close the coordination session.
    pub async fn shutdown(mut self) {
        // Leave the cluster first: the others' balancers stop counting this server (and its
        // load) before its destinations come free.
        if let Some(r) = self.registration.take() {
            r.stop().await;
        }
        self.stop.send_replace(true);
        if let Some(t) = self.balance_task.take()
            && let Err(e) = t.await
        {
            warn!("balance task ended abnormally: {e}");
        }
        // Every destination at once (each hands over as soon as its cursors are written).
        for run in self.runs.values() {
            run.stop.send_replace(true);
        }
        let runs = std::mem::take(&mut self.runs);
        for (name, run) in runs {
            if let Err(e) = run.task.await {
                warn!(destination = %name, "destination task ended abnormally: {e}");
            }
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.ctx.coord.close().await;
        info!("canal-server stopped");
    }
}

impl DestCtx {
    /// Registers the destination, starts competing for its running node and its driver.
    fn start_destination(&self, registry: &Arc<ServerRegistry>, spec: DestinationSpec) -> DestRun {
        let cfg = spec.config;
        let name = cfg.destination.clone();
        let (status, _) = watch::channel(DestinationStatus {
            name: name.clone(),
            ..DestinationStatus::default()
        });
        if let Some(b) = &self.balancer {
            b.add_destination(&name, spec.balance);
        }
        let compete = Compete {
            coord: self.coord.clone(),
            address: self.address.clone(),
            delay: self.delay,
            name: name.clone(),
            balancer: self.balancer.clone(),
        };
        let (registration, monitor, events) = compete.start();
        let (admin, admin_rx) = mpsc::unbounded_channel();
        let slot = Arc::new(Slot {
            name: name.clone(),
            config: cfg,
            state: Mutex::new(SlotState::Standby),
            status,
            mq: Arc::default(),
            admin,
            handle: Mutex::new(monitor.handle()),
        });
        registry.slots_mut().insert(name.clone(), slot.clone());
        let (stop, stop_rx) = watch::channel(false);
        let driver = Driver {
            slot,
            coord: self.coord.clone(),
            cursors: self.cursors.clone(),
            monitor: Some(monitor),
            events,
            stop: stop_rx,
            admin: admin_rx,
            cfg: self.supervisor.clone(),
            mq: self.mq.clone(),
            compete,
            registration: Some(registration),
        };
        let span = tracing::info_span!("destination", destination = %name);
        let task = tokio::spawn(driver.run().instrument(span));
        DestRun { stop, task, fingerprint: spec.fingerprint }
    }
}

/// Starts competing for one destination's running node: its `…/{dest}/cluster/{ip:port}`
/// registration and its monitor (gated by the balancer, which tracks it).
#[derive(Debug)]
struct Compete {
    coord: Arc<Coordinator>,
    address: String,
    delay: Duration,
    name: String,
    balancer: Option<Arc<crate::balance::Balancer>>,
}

impl Compete {
    fn start(
        &self,
    ) -> (ClusterRegistration, RunningMonitor, mpsc::UnboundedReceiver<RunningEvent>) {
        let registration = ClusterRegistration::start(
            self.coord.clone(),
            vec![path::destination_cluster_node(&self.name, &self.address)],
        );
        let (monitor, events) = RunningMonitor::start_gated(
            self.coord.clone(),
            path::server_running(&self.name),
            ServerRunningData::new(self.address.clone()),
            self.delay,
            self.balancer.as_ref().map(|b| b.gate(&self.name)),
        );
        if let Some(b) = &self.balancer {
            b.attach(&self.name, monitor.status(), monitor.handle());
        }
        (registration, monitor, events)
    }
}

/// How one destination's activations and instance runs are supervised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// Consecutive failures (activation attempts, or instance runs that stored nothing) after
    /// which this server releases the running node so that another server can try.
    pub max_failures: u32,
    /// Pause before the first retry; it doubles on each failure up to `backoff_max`.
    pub backoff: Duration,
    /// Longest pause between retries.
    pub backoff_max: Duration,
    /// Bound of one activation attempt (reading the clients from the coordinator).
    pub activation_timeout: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            activation_timeout: Duration::from_secs(30),
        }
    }
}

/// Why [`Driver::serve`] returned.
#[derive(Debug)]
enum Outcome {
    /// The monitor reported this (ActiveExit, or an ActiveEnter not preceded by one): handle it.
    Event(RunningEvent),
    /// The server is shutting down.
    Stop,
    /// The monitor's channel closed.
    Closed,
    /// This server released the node after too many consecutive failures.
    Released,
    /// An operator's request that needs the run stopped, the activation kept.
    Admin(AdminCmd),
}

impl Outcome {
    /// A graceful exit's hand-shake: the node is still ours until it is done.
    fn final_flush(&self) -> Option<&ExitFlush> {
        match self {
            Outcome::Event(RunningEvent::ActiveExit { flush, .. }) if flush.fence().is_some() => {
                Some(flush)
            }
            _ => None,
        }
    }

    /// Whether what the activation queued is still to be written: shutdown, or a graceful exit.
    fn graceful(&self) -> bool {
        matches!(self, Outcome::Stop | Outcome::Admin(_)) || self.final_flush().is_some()
    }

    /// Whether the activation (its fence, in the cursor store) is over: all but an operator's
    /// request, after which the same activation serves again.
    fn ends_activation(&self) -> bool {
        !matches!(self, Outcome::Admin(AdminCmd::ResetCursor { .. }))
    }
}

/// How one instance run ended.
enum RunEnd {
    Outcome(Outcome),
    Failed { error: String, progressed: bool },
}

/// The clients of a destination as read from the coordinator at activation.
#[derive(Debug, Default)]
struct Plan {
    /// Client id → (cursor, filter).
    known: BTreeMap<i16, (Option<LogPosition>, String)>,
    /// Where the instance starts: the minimum cursor.
    min_cursor: Option<LogPosition>,
    /// The subscription filter in force (the highest client id's non-empty one).
    filter: Option<String>,
}

/// Follows one destination's monitor: activates on ActiveEnter (retrying, then releasing the
/// node after [`SupervisorConfig::max_failures`]), supervises the instance (restarts after a
/// failure from the minimum acked cursor, releases after too many), stops on ActiveExit.
struct Driver {
    slot: Arc<Slot>,
    coord: Arc<Coordinator>,
    cursors: Arc<CursorStore>,
    monitor: Option<RunningMonitor>,
    events: mpsc::UnboundedReceiver<RunningEvent>,
    stop: watch::Receiver<bool>,
    admin: mpsc::UnboundedReceiver<AdminCmd>,
    cfg: SupervisorConfig,
    mq: Option<Arc<crate::mq::MqSettings>>,
    /// Starts competing again after an operator's stop.
    compete: Compete,
    /// `…/{dest}/cluster/{ip:port}` while competing.
    registration: Option<ClusterRegistration>,
}

/// A destination's MQ worker of one instance run.
struct MqRun {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), crate::mq::MqError>>,
    /// The task's result was taken (by [`Driver::watch_run`]): it must not be awaited again.
    ended: bool,
}

impl MqRun {
    /// Graceful: lets the worker finish what is in flight (bounded by its drain limit).
    async fn finish(self) {
        if self.ended {
            return;
        }
        self.stop.send_replace(true);
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("MQ worker ended with: {e}"),
            Err(e) if e.is_panic() => tracing::error!("the MQ worker panicked: {e}"),
            // Cancelled: only `abort` cancels it, and that consumed the handle.
            Err(e) => tracing::debug!("the MQ worker was cancelled: {e}"),
        }
    }

    async fn abort(self) {
        if self.ended {
            return;
        }
        self.task.abort();
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!("the MQ worker panicked: {e}");
        }
    }
}

/// The resume marker of a destination's MQ worker, in the coordinator beside client 1001's
/// cursor, written through the activation's ordered, fenced writer.
#[derive(Debug)]
struct CoordMarkerStore {
    dest: String,
    coord: Arc<Coordinator>,
    sink: Arc<CoordCursorSink>,
    /// The latest marker this activation stored: an instance restart within the activation
    /// resumes from it even when its write is still queued.
    latest: Mutex<Option<crate::mq::ResumeMarker>>,
}

fn marker_path(dest: &str) -> String {
    format!("{}/mq_marker", path::client(dest, crate::mq::MQ_CLIENT_ID))
}

#[async_trait::async_trait]
impl crate::mq::MarkerStore for CoordMarkerStore {
    async fn load(&self) -> Result<Option<crate::mq::ResumeMarker>, crate::mq::MqError> {
        if let Some(m) = self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(Some(m));
        }
        let p = marker_path(&self.dest);
        let read = async {
            let s = self.coord.session().await?;
            s.get(&p).await
        };
        match read.await {
            Ok(Some(node)) => crate::mq::ResumeMarker::from_bytes(&node.data).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(crate::mq::MqError::Transient(format!("reading {p}: {e}"))),
        }
    }

    fn store(&self, marker: &crate::mq::ResumeMarker) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(marker.clone());
        self.sink.send(CursorOp::Put(marker_path(&self.dest), marker.to_bytes()));
    }
}

impl Driver {
    async fn run(mut self) {
        let mut next: Option<RunningEvent> = None;
        loop {
            let ev = match next.take() {
                Some(ev) => ev,
                None => {
                    let mut stop = self.stop.clone();
                    let idle = tokio::select! {
                        ev = self.events.recv(), if self.monitor.is_some() => ev.map(Ok),
                        Some(cmd) = self.admin.recv() => Some(Err(cmd)),
                        _ = stop.wait_for(|s| *s) => None,
                    };
                    match idle {
                        None => break,
                        Some(Ok(ev)) => ev,
                        Some(Err(cmd)) => {
                            self.idle_admin(cmd).await;
                            continue;
                        }
                    }
                }
            };
            match ev {
                RunningEvent::ActiveEnter { fence } => {
                    info!("active: starting the instance");
                    let mut outcome = self.serve(fence.clone()).await;
                    // An operator's reset: done between two runs of the same activation.
                    while let Outcome::Admin(AdminCmd::ResetCursor { client_id, target, reply }) =
                        outcome
                    {
                        let cmd = AdminCmd::ResetCursor { client_id, target, reply };
                        self.admin_cmd(cmd, Some(&fence)).await;
                        info!("active: starting the instance again");
                        outcome = self.serve(fence.clone()).await;
                    }
                    match outcome {
                        Outcome::Event(ev) => next = Some(ev),
                        Outcome::Stop | Outcome::Closed => break,
                        // The run was stopped and its cursors written: give the node up.
                        Outcome::Admin(cmd) => self.idle_admin(cmd).await,
                        Outcome::Released => {}
                    }
                }
                RunningEvent::ActiveExit { reason, .. } => {
                    tracing::debug!(?reason, "no longer active (nothing was running)");
                }
                _ => {}
            }
        }
        self.stop_competing().await;
    }

    /// Removes the registration, then gives the running node up (released if held): as a
    /// shutdown leaves the cluster first, so that once the node is free no client or balancer
    /// still counts this server for the destination.
    async fn stop_competing(&mut self) {
        if let Some(r) = self.registration.take() {
            r.stop().await;
        }
        if let Some(m) = self.monitor.take() {
            // Whatever was queued is written (graceful teardown): the monitor need not wait for
            // us to read its last `ActiveExit`.
            self.events.close();
            m.stop().await;
        }
    }

    /// An operator's request while no run is going (standby, or stopped).
    async fn idle_admin(&mut self, cmd: AdminCmd) {
        match cmd {
            AdminCmd::Stop { reply } => {
                let r = if self.monitor.is_none() {
                    Ok(format!("{} was already stopped on this server", self.slot.name))
                } else {
                    info!("stopped by an operator: releasing the running node");
                    self.stop_competing().await;
                    self.slot.status.send_modify(|s| s.stopped = true);
                    Ok(format!("{} stopped on this server", self.slot.name))
                };
                // The operator may have given up waiting.
                let _ = reply.send(r);
            }
            AdminCmd::Start { reply } => {
                let r = if self.monitor.is_some() {
                    Ok(format!("{} is not stopped on this server", self.slot.name))
                } else {
                    info!("started by an operator: competing for the running node again");
                    let (registration, monitor, events) = self.compete.start();
                    *self.slot.handle.lock().unwrap_or_else(|p| p.into_inner()) = monitor.handle();
                    self.registration = Some(registration);
                    self.monitor = Some(monitor);
                    self.events = events;
                    self.slot.status.send_modify(|s| s.stopped = false);
                    Ok(format!("{} started on this server", self.slot.name))
                };
                let _ = reply.send(r);
            }
            cmd => self.admin_cmd(cmd, None).await,
        }
    }

    /// Carries out an operator's request; `fence` is the activation's while active here (the
    /// run is stopped and its queued cursors written).
    async fn admin_cmd(&mut self, cmd: AdminCmd, fence: Option<&Fence>) {
        match cmd {
            AdminCmd::ResetCursor { client_id, target, reply } => {
                let r = match fence {
                    None if self.monitor.is_none() => {
                        Err(format!("destination {} is stopped on this server", self.slot.name))
                    }
                    None => Err(format!(
                        "destination {} is not active on this server: ask its owner",
                        self.slot.name
                    )),
                    Some(f) => self.reset_cursor(client_id, &target, f).await,
                };
                match &r {
                    Ok(c) => info!(client_id, cursor = %c, "an operator reset the cursor"),
                    Err(e) => warn!(client_id, "cursor reset refused: {e}"),
                }
                // The operator may have given up waiting.
                let _ = reply.send(r);
            }
            AdminCmd::Stop { reply } | AdminCmd::Start { reply } => {
                // Handled by `idle_admin`; here only if a run is going, which cannot be.
                let _ = reply.send(Err("busy: try again".into()));
            }
        }
    }

    async fn reset_cursor(
        &self,
        client_id: i16,
        target: &CursorTarget,
        fence: &Fence,
    ) -> Result<String, String> {
        let cfg = &self.slot.config;
        let source =
            canal_core::position::SourceAddress::new(cfg.source.host.clone(), cfg.source.port);
        let position = match target {
            CursorTarget::Position { journal, offset } => {
                canal_core::position::EntryPosition::at(journal.clone(), *offset)
            }
            CursorTarget::Gtid(g) => {
                if !cfg.gtid_mode {
                    return Err(format!(
                        "destination {} is not in gtid_mode: reset by position or timestamp",
                        self.slot.name
                    ));
                }
                canal_core::position::EntryPosition { gtid: Some(g.clone()), ..Default::default() }
            }
            CursorTarget::Timestamp(ts) => {
                let search = async {
                    let mut meta =
                        canal_core::binlog::replica::MetaConnection::open(&cfg.source).await?;
                    meta.find_position_by_timestamp(*ts).await
                };
                let hit = tokio::time::timeout(self.cfg.activation_timeout, search)
                    .await
                    .map_err(|_| {
                        format!(
                            "the binlog search took longer than {:?}",
                            self.cfg.activation_timeout
                        )
                    })?
                    .map_err(|e| format!("searching the binlog for {ts} ms: {e}"))?;
                let offset = i64::try_from(hit.position)
                    .map_err(|_| format!("binlog offset {} out of range", hit.position))?;
                canal_core::position::EntryPosition {
                    timestamp: Some(hit.timestamp_ms),
                    ..canal_core::position::EntryPosition::at(hit.file, offset)
                }
            }
        };
        let cursor = LogPosition { identity: LogIdentity::new(source), position };
        let json = cursor.to_cursor_json();
        self.cursors
            .reset(&self.slot.name, client_id, json.clone().into_bytes(), fence)
            .await
            .map_err(|e| format!("writing the cursor: {e}"))?;
        Ok(cursor.to_plain_json())
    }

    /// Runs `fut` unless the monitor reports an event or the server stops first.
    /// An operator's `Start` while running is answered here and does not interrupt `fut`; a
    /// reset or a stop does.
    async fn until_exit<F: std::future::Future>(&mut self, fut: F) -> Result<F::Output, Outcome> {
        let mut stop = self.stop.clone();
        tokio::pin!(fut);
        loop {
            let cmd = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return Err(Outcome::Stop),
                ev = self.events.recv() => return Err(match ev {
                    Some(ev) => Outcome::Event(ev),
                    None => Outcome::Closed,
                }),
                Some(cmd) = self.admin.recv() => cmd,
                r = &mut fut => return Ok(r),
            };
            match cmd {
                AdminCmd::Start { reply } => {
                    // The operator may have given up waiting.
                    let _ = reply.send(Ok(format!("{} is running on this server", self.slot.name)));
                }
                cmd => return Err(Outcome::Admin(cmd)),
            }
        }
    }

    /// Serves one activation (one fence) until it ends.
    async fn serve(&mut self, fence: Fence) -> Outcome {
        let dest = self.slot.name.clone();
        let mut backoff = Backoff::new(self.cfg.backoff, self.cfg.backoff_max);
        let mut failures = 0u32;
        let limit = self.cfg.activation_timeout;
        let (coord, cursors) = (self.coord.clone(), self.cursors.clone());
        let (plan, history) = loop {
            // Cursors cached or queued by an earlier activation are dropped before reading.
            let attempt = tokio::time::timeout(limit, async {
                cursors
                    .activate(&dest, &fence)
                    .context("starting the cursor store's activation")?;
                let plan = read_clients(&dest, &coord, &cursors).await?;
                // The schema history is read before anything is decoded; a failed read fails
                // the activation (never an empty history).
                let history = load_shared_history(&coord, &dest, &fence).await?;
                anyhow::Ok((plan, history))
            });
            let err = match self.until_exit(attempt).await {
                Err(o) => {
                    if o.ends_activation() {
                        self.cursors.forget(&dest);
                    }
                    return o;
                }
                Ok(Ok(Ok(loaded))) => break loaded,
                Ok(Ok(Err(e))) => e,
                Ok(Err(_)) => anyhow::anyhow!("reading the clients took longer than {limit:?}"),
            };
            failures += 1;
            let why = format!("cannot read the clients or the schema history: {err:#}");
            warn!(attempt = failures, "activation failed: {why}");
            self.slot.status.send_modify(|s| {
                s.failures.activation_failures += 1;
                s.failures.consecutive_failures = failures;
                s.failures.last_error = Some(why.clone());
            });
            if failures >= self.cfg.max_failures {
                return self.release(failures, why).await;
            }
            let delay = backoff.next_delay();
            info!("retrying the activation in {delay:?}");
            if let Err(o) = self.until_exit(tokio::time::sleep(delay)).await {
                if o.ends_activation() {
                    self.cursors.forget(&dest);
                }
                return o;
            }
        };
        info!(
            clients = plan.known.len(),
            cursor = ?plan.min_cursor.as_ref().map(|c| &c.position),
            "starting instance"
        );
        let sink = Arc::new(CoordCursorSink::start(
            dest.clone(),
            self.cursors.clone(),
            self.coord.clone(),
            fence,
            &plan,
            self.cfg.activation_timeout,
        ));
        // The MQ resume marker of this activation (kept across its instance restarts).
        let markers = self.mq.as_ref().map(|_| {
            Arc::new(CoordMarkerStore {
                dest: dest.clone(),
                coord: self.coord.clone(),
                sink: sink.clone(),
                latest: Mutex::new(None),
            })
        });
        let mut start = plan.min_cursor.clone();
        self.slot.status.send_modify(|s| {
            s.active = true;
            s.activations += 1;
            s.failures.consecutive_failures = failures;
        });
        // A failed run's destination: its sessions stay (answering the failure) until the next
        // run starts.
        let mut failed: Option<Arc<Destination>> = None;
        // The first run gets the history read above; a restart reads it again in the instance.
        let store = history.store.clone();
        let mut loaded = history.loaded;
        loop {
            let shared = SharedHistory { store: store.clone(), loaded: loaded.take() };
            let (instance, destination) = self.start_run(start.clone(), &sink, shared);
            if let Some(old) = failed.take() {
                old.close();
            }
            *self.slot.lock() =
                SlotState::Running { instance: instance.clone(), destination: destination.clone() };
            let mut mq = self.start_mq(&destination, &markers);
            let (error, progressed) =
                match self.watch_run(&instance, &destination, &sink, mq.as_mut()).await {
                    RunEnd::Outcome(o) => {
                        self.teardown(Some((instance, destination)), &sink, &o, mq).await;
                        return o;
                    }
                    RunEnd::Failed { error, progressed } => (error, progressed),
                };
            if let Some(w) = mq.take() {
                w.abort().await;
            }
            // Restart from the minimum acked cursor: what the store held un-acked is read again.
            start = min_position(
                sink.min_cursor(),
                destination.floor().map(|p| LogPosition {
                    identity: LogIdentity::new(instance.source().clone()),
                    position: p,
                }),
            );
            if progressed {
                failures = 0;
                backoff.reset();
            }
            failures += 1;
            let why = format!("instance failed: {error}");
            warn!(failures, restart_from = ?start.as_ref().map(|c| &c.position), "{why}");
            destination.fail(error.clone());
            *self.slot.lock() = SlotState::Failed { reason: error.clone() };
            stop_instance(instance).await;
            failed = Some(destination);
            self.slot.status.send_modify(|s| {
                s.failures.instance_failures += 1;
                s.failures.consecutive_failures = failures;
                s.failures.last_error = Some(why.clone());
            });
            if failures >= self.cfg.max_failures {
                self.teardown(None, &sink, &Outcome::Stop, None).await;
                if let Some(old) = failed.take() {
                    old.close();
                }
                return self.release(failures, why).await;
            }
            let delay = backoff.next_delay();
            info!("restarting the instance in {delay:?}");
            if let Err(o) = self.until_exit(tokio::time::sleep(delay)).await {
                self.teardown(None, &sink, &o, None).await;
                if let Some(old) = failed.take() {
                    old.close();
                }
                return o;
            }
            self.slot.status.send_modify(|s| s.failures.restarts += 1);
        }
    }

    /// Starts one instance run from `start` and the destination clients see.
    fn start_run(
        &self,
        start: Option<LogPosition>,
        sink: &Arc<CoordCursorSink>,
        history: SharedHistory,
    ) -> (Arc<Instance>, Arc<Destination>) {
        let mut config = self.slot.config.clone();
        // The last subscription filter wins, as in Canal; it compiled when it was subscribed.
        if let Some(f) = sink.filter() {
            match config.convert.filter.with_white(&f) {
                Ok(filter) => config.convert.filter = filter,
                Err(e) => warn!(
                    "subscription filter {f:?} does not compile; using the configured one: {e}"
                ),
            }
        }
        let black = config.convert.filter.black().source().to_owned();
        if let Some(m) = &self.monitor {
            // A deposed owner woken from a freeze does not reconnect to the source (its binlog
            // dump would end the new owner's: same slave_id) while its lease is lapsed.
            let lease = m.lease();
            config.connect_gate = Some(ConnectGate::new(move || lease.valid()));
        }
        let instance = Arc::new(Instance::start_with_history(config, start.clone(), Some(history)));
        sink.attach(&instance);
        let identity = LogIdentity::new(instance.source().clone());
        let filter = InstanceFilter { instance: Arc::downgrade(&instance), black };
        let cursors: Arc<dyn CursorSink> = sink.clone();
        let mut destination = Destination::new(
            self.slot.name.clone(),
            instance.store().clone(),
            identity,
            cursors,
            Arc::new(filter),
        )
        .with_progress(instance.watch_status());
        if let Some(m) = &self.monitor {
            // No data leaves this server once its lease on the running node lapses.
            destination = destination.with_lease(m.lease());
        }
        let destination = Arc::new(destination);
        if let Some(c) = start {
            destination.set_floor(c.position.clone());
            sink.fill_missing(&c);
        }
        (instance, destination)
    }

    /// In MQ mode, starts the destination's MQ worker: it opens the producer (retrying a broker
    /// that cannot be reached) and publishes until stopped.
    fn start_mq(
        &self,
        destination: &Arc<Destination>,
        markers: &Option<Arc<CoordMarkerStore>>,
    ) -> Option<MqRun> {
        let settings = self.mq.clone()?;
        let dest = self.slot.name.clone();
        let routing = settings.routing.get(&dest).cloned();
        let markers: Arc<dyn crate::mq::MarkerStore> = markers.clone()?;
        let (stop, stop_rx) = watch::channel(false);
        let destination = destination.clone();
        let metrics = self.slot.mq.clone();
        let task = tokio::spawn(
            async move {
                let routing = routing.ok_or_else(|| {
                    crate::mq::MqError::Config(format!("no MQ routing configured for {dest}"))
                })?;
                let router = canal_core::mq::Router::new(routing)?;
                let mut backoff =
                    Backoff::new(settings.worker.backoff, settings.worker.backoff_max);
                let producer = loop {
                    match crate::mq::open_producer(&settings, &dest).await {
                        Ok(p) => break p,
                        Err(e) if e.is_transient() => {
                            let delay = backoff.next_delay();
                            warn!("cannot open the MQ producer, retrying in {delay:?}: {e}");
                            let mut stop = stop_rx.clone();
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = stop.wait_for(|s| *s) => return Ok(()),
                            }
                        }
                        Err(e) => return Err(e),
                    }
                };
                crate::mq::Worker {
                    destination,
                    router,
                    producer,
                    markers,
                    config: settings.worker.clone(),
                    metrics,
                }
                .run(stop_rx)
                .await
            }
            .instrument(tracing::Span::current()),
        );
        Some(MqRun { stop, task, ended: false })
    }

    /// Follows the instance (and its MQ worker) until it fails or the activation ends. Records
    /// the start position as the cursor of clients without one as soon as the instance has
    /// resolved it.
    async fn watch_run(
        &mut self,
        instance: &Instance,
        destination: &Destination,
        sink: &CoordCursorSink,
        mut mq: Option<&mut MqRun>,
    ) -> RunEnd {
        let mut status = instance.watch_status();
        let identity = LogIdentity::new(instance.source().clone());
        loop {
            let st = status.borrow_and_update().clone();
            if destination.floor().is_none()
                && let Some(r) = st.resume
                && destination.set_floor(r.clone())
            {
                sink.fill_missing(&LogPosition { identity: identity.clone(), position: r });
            }
            if let InstanceState::Failed { error } = st.state {
                return RunEnd::Failed { error, progressed: st.entries > 0 };
            }
            let worker_end = async {
                match mq.as_mut() {
                    Some(w) if !w.ended => {
                        let r = (&mut w.task).await;
                        w.ended = true;
                        r
                    }
                    _ => std::future::pending().await,
                }
            };
            let changed = async {
                tokio::select! {
                    r = status.changed() => Ok(r),
                    w = worker_end => Err(w),
                }
            };
            match self.until_exit(changed).await {
                Err(o) => return RunEnd::Outcome(o),
                Ok(Err(worker)) => {
                    let error = match worker {
                        Ok(Ok(())) => "the MQ worker stopped".to_owned(),
                        Ok(Err(e)) => format!("MQ: {e}"),
                        Err(e) => format!("the MQ worker ended abnormally: {e}"),
                    };
                    return RunEnd::Failed { error, progressed: st.entries > 0 };
                }
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(_))) => {
                    // The pipeline thread ended without saying it failed (nothing stops it but
                    // us): treat it as a failure rather than serve a destination that reads
                    // nothing.
                    if let InstanceState::Failed { error } = &status.borrow().state {
                        return RunEnd::Failed {
                            error: error.clone(),
                            progressed: status.borrow().entries > 0,
                        };
                    }
                    return RunEnd::Failed {
                        error: "the pipeline ended".into(),
                        progressed: st.entries > 0,
                    };
                }
            }
        }
    }

    /// Stops serving: closes the destination (and its sessions), stops the instance, then either
    /// writes what the cursor sink has queued and flushes the cursors (graceful: shutdown, a
    /// release or `active:false`, while the monitor still holds the node for us — "flush before
    /// you let go", see [`ExitFlush`]) or drops it (the node is lost: not ours to write).
    async fn teardown(
        &self,
        run: Option<(Arc<Instance>, Arc<Destination>)>,
        sink: &CoordCursorSink,
        why: &Outcome,
        mq: Option<MqRun>,
    ) {
        let graceful = why.graceful();
        if let Some(f) = why.final_flush().and_then(ExitFlush::fence) {
            sink.refence(f);
            self.cursors.refence(&self.slot.name, f);
        }
        if let Some(w) = mq {
            // Graceful: what the broker confirms in time is acked, so the cursor written below
            // covers it; the rest is published again by the next owner.
            if graceful { w.finish().await } else { w.abort().await }
        }
        let old = std::mem::take(&mut *self.slot.lock());
        drop(old);
        if let Some((instance, destination)) = run {
            destination.close();
            stop_instance(instance).await;
        }
        if graceful {
            // Every client's latest cursor once more, under the final fence: a write refused
            // between an operator's `active:false` and our noticing it (fenced by the old
            // version) is not lost. Unchanged cursors are rewritten as they are.
            sink.rewrite_latest();
            if !sink.drain(self.cfg.activation_timeout).await {
                warn!("the cursor writes queued by this activation did not finish in time");
            }
            if let Err(e) = self.cursors.flush().await {
                warn!("final cursor flush: {e}");
            }
        }
        sink.abort().await;
        if why.ends_activation() {
            self.cursors.forget(&self.slot.name);
        }
        self.slot.status.send_modify(|s| s.active = false);
        if let Some(f) = why.final_flush() {
            f.done();
        }
    }

    /// Gives the running node up after `failures` consecutive failures so that another server
    /// can try; this one competes again after the takeover delay.
    async fn release(&mut self, failures: u32, why: String) -> Outcome {
        tracing::error!(
            failures,
            "releasing the running node after {failures} consecutive failures: {why}"
        );
        self.slot.status.send_modify(|s| {
            s.active = false;
            s.failures.releases += 1;
            s.failures.consecutive_failures = failures;
            s.failures.released = Some(why);
        });
        *self.slot.lock() = SlotState::Standby;
        // Ends the cursor store's activation (teardown did already, if the instance had run).
        self.cursors.forget(&self.slot.name);
        if let Some(m) = &self.monitor {
            // Returns once `ActiveExit` is reported; `run` reads (and drops) it, which ends the
            // monitor's wait for a flush: the teardown wrote (or dropped) everything already.
            m.release().await;
        }
        Outcome::Released
    }
}

async fn stop_instance(instance: Arc<Instance>) {
    match Arc::try_unwrap(instance) {
        Ok(i) => i.stop().await,
        Err(shared) => drop(shared), // dropping the last handle stops it too
    }
}

/// The earlier of two restart positions.
fn min_position(a: Option<LogPosition>, b: Option<LogPosition>) -> Option<LogPosition> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.cmp_for_restart(&a).is_lt() { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Reads the destination's clients (cursor, filter) from the coordinator. Every read error is
/// an error (never "no clients": that would start at the source's head and skip rows), and so is
/// a cursor that does not parse, naming its node.
async fn read_clients(
    dest: &str,
    coord: &Arc<Coordinator>,
    cursors: &Arc<CursorStore>,
) -> anyhow::Result<Plan> {
    let session = coord.session().await.context("no coordination session")?;
    let dpath = path::destination(dest);
    let children = session
        .children(&dpath)
        .await
        .with_context(|| format!("listing the clients in {dpath}"))?;
    let mut plan = Plan::default();
    for child in children {
        // Other children (`running`, `cluster`) are not clients; Canal's ids are shorts.
        let Ok(id) = child.parse::<i16>() else { continue };
        let cpath = path::client_cursor(dest, id);
        let cursor =
            match cursors.get(dest, id).await.with_context(|| format!("reading {cpath}"))? {
                Some(bytes) => Some(
                    LogPosition::from_json(&bytes)
                        .with_context(|| format!("unreadable cursor in {cpath}"))?,
                ),
                None => None,
            };
        let fpath = path::client_filter(dest, id);
        let filter = match session.get(&fpath).await.with_context(|| format!("reading {fpath}"))? {
            Some(node) => String::from_utf8(node.data)
                .with_context(|| format!("unreadable subscription filter in {fpath}"))?,
            None => String::new(),
        };
        plan.known.insert(id, (cursor, filter));
    }
    plan.min_cursor =
        plan.known.values().filter_map(|(c, _)| c.clone()).min_by(|a, b| a.cmp_for_restart(b));
    // The last subscription filter wins, as in Canal.
    plan.filter = plan.known.values().rev().map(|(_, f)| f).find(|f| !f.is_empty()).cloned();
    Ok(plan)
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
    /// A node of the activation's own (the MQ resume marker), written fenced.
    Put(String, Vec<u8>),
    Subscribe(i16, String),
    Unsubscribe(i16),
    /// Answered once every earlier op is done, with the first write refused since the last
    /// `Drained` (if any).
    Drained(oneshot::Sender<Option<String>>),
}

impl std::fmt::Debug for CursorOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorOp")
    }
}

#[derive(Debug, Default)]
struct SinkState {
    /// Every client known to this activation and its latest cursor.
    cursors: HashMap<i16, Option<LogPosition>>,
    /// The last non-empty subscription filter (Canal: the last one wins).
    filter: Option<String>,
    /// The running instance, told the minimum cursor (its schema history is compacted below).
    instance: std::sync::Weak<Instance>,
}

/// Cursors and subscriptions of one activation (one fence), written to the coordinator in order
/// by one task, fenced by the running node. It outlives instance restarts within the activation
/// (its cursors are where a restart begins) and ends with it: [`CoordCursorSink::abort`] stops
/// the task and drops what was queued, so nothing a previous activation queued is written later.
#[derive(Debug)]
struct CoordCursorSink {
    state: Mutex<SinkState>,
    /// The fence of the activation, moved by [`CoordCursorSink::refence`] for the final writes.
    fence: Arc<Mutex<Fence>>,
    /// With a cursor write on every ack: how long [`CursorSink::persisted`] waits.
    sync_limit: Option<Duration>,
    tx: mpsc::UnboundedSender<CursorOp>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl CoordCursorSink {
    fn start(
        dest: String,
        cursors: Arc<CursorStore>,
        coord: Arc<Coordinator>,
        fence: Fence,
        plan: &Plan,
        sync_limit: Duration,
    ) -> Self {
        let sync_limit = (cursors.policy() == FlushPolicy::EveryAck).then_some(sync_limit);
        let (tx, rx) = mpsc::unbounded_channel::<CursorOp>();
        let fence = Arc::new(Mutex::new(fence));
        let task = tokio::spawn(
            write_ops(dest, cursors, coord, fence.clone(), rx).instrument(tracing::Span::current()),
        );
        let state = SinkState {
            cursors: plan.known.iter().map(|(id, (c, _))| (*id, c.clone())).collect(),
            filter: plan.filter.clone(),
            instance: std::sync::Weak::new(),
        };
        Self { state: Mutex::new(state), fence, sync_limit, tx, task: Mutex::new(Some(task)) }
    }

    /// The same activation at a new version of the running node (see [`ExitFlush::fence`]):
    /// the writes still queued use it. A fence of another activation is ignored.
    fn refence(&self, fence: &Fence) {
        let mut f = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        if f.epoch_path == fence.epoch_path && f.epoch == fence.epoch {
            *f = fence.clone();
        }
    }

    fn state(&self) -> MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, op: CursorOp) {
        // Fails only after `abort`: the activation is over and its writes must not happen.
        if self.tx.send(op).is_err() {
            tracing::debug!("cursor write after the activation ended: dropped");
        }
    }

    /// The minimum cursor of the activation's clients (acked, or recorded at subscription).
    /// The instance of the current run: told the minimum cursor now and on every ack.
    fn attach(&self, instance: &Arc<Instance>) {
        self.state().instance = Arc::downgrade(instance);
        instance.set_history_floor(self.min_cursor());
    }

    fn min_cursor(&self) -> Option<LogPosition> {
        self.state().cursors.values().flatten().min_by(|a, b| a.cmp_for_restart(b)).cloned()
    }

    fn filter(&self) -> Option<String> {
        self.state().filter.clone()
    }

    /// Records `position` as the cursor of every known client that has none.
    fn fill_missing(&self, position: &LogPosition) {
        let bytes = position.to_cursor_json().into_bytes();
        let mut st = self.state();
        for (id, c) in st.cursors.iter_mut() {
            if c.is_none() {
                *c = Some(position.clone());
                self.send(CursorOp::Update(*id, bytes.clone()));
            }
        }
    }

    /// Queues every known client's latest cursor again (see [`Driver::teardown`]).
    fn rewrite_latest(&self) {
        let st = self.state();
        for (id, c) in &st.cursors {
            if let Some(c) = c {
                self.send(CursorOp::Update(*id, c.to_cursor_json().into_bytes()));
            }
        }
    }

    /// Waits (up to `limit`) until every queued write is done; false if it did not finish.
    async fn drain(&self, limit: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(CursorOp::Drained(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(_)))
    }

    /// Stops the writer; queued writes are dropped.
    async fn abort(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            t.abort();
            // An aborted task's JoinError is the expected outcome; a panic was already reported.
            if let Err(e) = t.await
                && e.is_panic()
            {
                tracing::error!("the cursor writer panicked: {e}");
            }
        }
    }
}

impl Drop for CoordCursorSink {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

/// Why a cursor op could not be applied.
enum OpError {
    /// Retrying cannot help (fenced out: no longer the owner; a cursor moving backwards).
    Definite(anyhow::Error),
    /// Retry (connection loss, timeout).
    Retry(anyhow::Error),
}

fn classify_coord(e: CoordError) -> OpError {
    if matches!(e, CoordError::Fenced { .. }) {
        OpError::Definite(e.into())
    } else {
        OpError::Retry(e.into())
    }
}

/// The cursor sink's writer: applies ops in order, retrying each with backoff until it is done
/// or cannot succeed.
async fn write_ops(
    dest: String,
    cursors: Arc<CursorStore>,
    coord: Arc<Coordinator>,
    fence: Arc<Mutex<Fence>>,
    mut rx: mpsc::UnboundedReceiver<CursorOp>,
) {
    let mut refused: Option<String> = None;
    let mut queue: std::collections::VecDeque<CursorOp> = Default::default();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(op) => queue.push_back(op),
                None => break,
            }
        }
        // What else is queued: a cursor (or marker) superseded by a later one of the same client
        // (path) is not written — cursors only move forward, so the latest says it all. This keeps
        // the coordinator from lagging behind fast acks (MQ mode acks many batches a second).
        while let Ok(op) = rx.try_recv() {
            queue.push_back(op);
        }
        let op = queue.pop_front().expect("not empty");
        // Only up to the next `Drained`: a waiter must find what was queued before it written.
        let before_drained = || queue.iter().take_while(|o| !matches!(o, CursorOp::Drained(_)));
        let superseded = match &op {
            CursorOp::Update(id, _) => before_drained()
                .take_while(|o| {
                    !matches!(o, CursorOp::Unsubscribe(u) | CursorOp::Subscribe(u, _) if u == id)
                })
                .any(|o| matches!(o, CursorOp::Update(u, _) if u == id)),
            CursorOp::Put(p, _) => before_drained().any(|o| matches!(o, CursorOp::Put(q, _) if q == p)),
            _ => false,
        };
        if superseded {
            continue;
        }
        if let CursorOp::Drained(reply) = op {
            // The waiter may have given up: nothing to do then.
            let _ = reply.send(refused.take());
            continue;
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let current = fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match apply_op(&dest, &cursors, &coord, &current, &op).await {
                Ok(()) => break,
                Err(OpError::Definite(e)) => {
                    warn!("coordinator write dropped: {e:#}");
                    refused.get_or_insert_with(|| format!("{e:#}"));
                    break;
                }
                Err(OpError::Retry(e)) => {
                    let delay = backoff.next_delay();
                    warn!("coordinator write failed, retrying in {delay:?}: {e:#}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

async fn apply_op(
    dest: &str,
    cursors: &CursorStore,
    coord: &Coordinator,
    fence: &Fence,
    op: &CursorOp,
) -> Result<(), OpError> {
    match op {
        CursorOp::Update(id, bytes) => {
            match cursors.update(dest, *id, bytes.clone(), fence).await {
                Ok(()) => Ok(()),
                Err(CursorError::Coord(e)) => Err(classify_coord(e)),
                Err(e) => Err(OpError::Definite(e.into())),
            }
        }
        CursorOp::Subscribe(id, filter) => {
            let s = coord.session().await.map_err(classify_coord)?;
            // Fenced like cursors: a deposed server records no subscription.
            s.put_fenced(&path::client(dest, *id), b"", fence).await.map_err(classify_coord)?;
            if !filter.is_empty() {
                s.put_fenced(&path::client_filter(dest, *id), filter.as_bytes(), fence)
                    .await
                    .map_err(classify_coord)?;
            }
            Ok(())
        }
        CursorOp::Unsubscribe(id) => {
            let s = coord.session().await.map_err(classify_coord)?;
            for p in [
                path::client_filter(dest, *id),
                path::client_cursor(dest, *id),
                path::client(dest, *id),
            ] {
                // Fenced like every write of an activation: a deposed server deletes nothing.
                match s.delete_fenced(&p, fence).await {
                    Ok(()) | Err(CoordError::NoNode { .. }) => {}
                    // The client's own running node (client HA) lives under it: it stays.
                    Err(CoordError::NotEmpty { .. }) => {
                        tracing::debug!(path = %p, "client node not empty: kept");
                    }
                    Err(e) => return Err(classify_coord(e)),
                }
            }
            Ok(())
        }
        CursorOp::Put(p, bytes) => {
            let s = coord.session().await.map_err(classify_coord)?;
            s.put_fenced(p, bytes, fence).await.map(drop).map_err(classify_coord)
        }
        CursorOp::Drained(_) => Ok(()),
    }
}

impl CursorSink for CoordCursorSink {
    fn load(&self, _destination: &str, client_id: i16) -> Option<LogPosition> {
        self.state().cursors.get(&client_id).cloned().flatten()
    }

    fn update(&self, _destination: &str, client_id: i16, position: &LogPosition) {
        let instance = {
            let mut st = self.state();
            st.cursors.insert(client_id, Some(position.clone()));
            st.instance.upgrade()
        };
        if let Some(i) = instance {
            i.set_history_floor(self.min_cursor());
        }
        self.send(CursorOp::Update(client_id, position.to_cursor_json().into_bytes()));
    }

    fn subscribe(&self, _destination: &str, client_id: i16, filter: &str) {
        {
            let mut st = self.state();
            st.cursors.entry(client_id).or_insert(None);
            if !filter.is_empty() {
                st.filter = Some(filter.to_owned());
            }
        }
        self.send(CursorOp::Subscribe(client_id, filter.to_owned()));
    }

    fn unsubscribe(&self, _destination: &str, client_id: i16) {
        self.state().cursors.remove(&client_id);
        self.send(CursorOp::Unsubscribe(client_id));
    }

    fn persisted(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            // Periodic flushing (Java's behaviour) promises nothing per ack.
            let Some(limit) = self.sync_limit else { return Ok(()) };
            let (tx, rx) = oneshot::channel();
            if self.tx.send(CursorOp::Drained(tx)).is_err() {
                return Err("the activation ended".into());
            }
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(None)) => Ok(()),
                Ok(Ok(Some(refused))) => Err(refused),
                Ok(Err(_)) => Err("the activation ended".into()),
                Err(_) => Err(format!("the coordinator did not take the write within {limit:?}")),
            }
        })
    }
}

/// What the admin endpoint reads.
#[derive(Debug, Clone)]
pub struct RegistryView {
    registry: Arc<ServerRegistry>,
    balancer: Option<Arc<crate::balance::Balancer>>,
    reload: Option<Arc<ReloadStatus>>,
    coord: Option<Arc<Coordinator>>,
    /// The admin API's bearer token (see [`ServerSettings::admin_token`]).
    pub(crate) admin_token: Option<String>,
}

/// Why an admin request was refused (the HTTP status follows from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// No such destination here (404).
    NotFound(String),
    /// Not possible now (409): not the owner, consumers still connected, a failed reset.
    Conflict(String),
    /// The coordinator could not be read (503).
    Unavailable(String),
}

fn registry_view(
    r: &Arc<ServerRegistry>,
    balancer: Option<Arc<crate::balance::Balancer>>,
    reload: Option<Arc<ReloadStatus>>,
) -> RegistryView {
    RegistryView { registry: r.clone(), balancer, reload, coord: None, admin_token: None }
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
    /// An operator stopped it on this server (it does not compete until started).
    pub stopped: bool,
    /// Pipeline state (when active).
    pub state: Option<String>,
    /// Milliseconds behind the source (now − last event time).
    pub delay_ms: Option<i64>,
    /// Rows put into the store since activation.
    pub rows: u64,
    /// Table definitions of the schema history the binlog's FULL metadata overrode.
    pub schema_corrections: u64,
    /// Entries held in the store.
    pub store_entries: usize,
    /// Bytes held in the store.
    pub store_bytes: usize,
    /// Subscribed clients and their cursors.
    pub clients: Vec<ClientReport>,
    /// MQ mode: what this server published for the destination.
    pub mq: Option<MqReport>,
    /// Failures, restarts and releases (flattened into the report's JSON).
    #[serde(flatten)]
    pub failures: FailureCounts,
}

/// MQ mode counters of a destination on this server (since the server started).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MqReport {
    /// Store batches the broker confirmed (then acked).
    pub batches: u64,
    /// Messages the broker confirmed.
    pub messages: u64,
    /// Entries skipped at resumes because an earlier activation had published them.
    pub skipped: u64,
    /// Failed sends (each rolled back what was in flight and sent it again).
    pub send_failures: u64,
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
    /// Balancing on this server (`None` when off, or with a single destination).
    pub fn balance(&self) -> Option<crate::balance::BalanceReport> {
        self.balancer.as_ref().map(|b| b.report())
    }

    fn slot(&self, dest: &str) -> Result<Arc<Slot>, AdminError> {
        self.registry
            .slots()
            .get(dest)
            .cloned()
            .ok_or_else(|| AdminError::NotFound(format!("no destination {dest} on this server")))
    }

    /// The coordinator's session, for an admin request (503 without one).
    async fn coord_session(&self) -> Result<Arc<dyn canal_coord::Session>, AdminError> {
        let coord =
            self.coord.as_ref().ok_or_else(|| AdminError::Unavailable("no coordinator".into()))?;
        coord.session().await.map_err(|e| AdminError::Unavailable(e.to_string()))
    }

    /// The owner address in the destination's running node (`None`: free, or being released).
    async fn owner(&self, dest: &str) -> Result<Option<String>, AdminError> {
        let s = self.coord_session().await?;
        let node = s
            .get(&path::server_running(dest))
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        Ok(node.and_then(|n| {
            ServerRunningData::from_bytes(&n.data).ok().filter(|d| d.active).map(|d| d.address)
        }))
    }

    /// Admin API: every destination of this server with its owner (from the coordinator),
    /// whether it runs here, and its clients.
    ///
    /// # Errors
    /// The coordinator cannot be read.
    pub async fn admin_destinations(&self) -> Result<serde_json::Value, AdminError> {
        let mut out = Vec::new();
        for r in self.reports() {
            let owner = self.owner(&r.destination).await?;
            out.push(serde_json::json!({
                "destination": r.destination,
                "owner": owner,
                "active_here": r.active,
                "state": r.state,
                "clients": r.clients,
            }));
        }
        Ok(serde_json::json!({ "destinations": out }))
    }

    /// Admin API: releases the destination if this server runs it (a standby takes over).
    ///
    /// # Errors
    /// Unknown destination; not running here.
    pub async fn admin_release(&self, dest: &str) -> Result<serde_json::Value, AdminError> {
        let slot = self.slot(dest)?;
        if !slot.status.borrow().active {
            return Err(AdminError::Conflict(format!(
                "destination {dest} does not run on this server (owner: {})",
                self.owner(dest).await?.unwrap_or_else(|| "none".into())
            )));
        }
        let handle = slot.handle.lock().unwrap_or_else(|p| p.into_inner()).clone();
        handle.release().await;
        Ok(serde_json::json!({ "released": dest }))
    }

    /// Admin API: stops (`start == false`) or starts the destination on this server.
    ///
    /// # Errors
    /// Unknown destination; it is being removed.
    pub async fn admin_stop_start(
        &self,
        dest: &str,
        start: bool,
    ) -> Result<serde_json::Value, AdminError> {
        let slot = self.slot(dest)?;
        let (reply, rx) = oneshot::channel();
        let cmd = if start { AdminCmd::Start { reply } } else { AdminCmd::Stop { reply } };
        slot.admin
            .send(cmd)
            .map_err(|_| AdminError::Conflict(format!("destination {dest} is being removed")))?;
        match rx.await {
            Ok(Ok(msg)) => Ok(serde_json::json!({ "destination": dest, "result": msg })),
            Ok(Err(e)) => Err(AdminError::Conflict(e)),
            Err(_) => {
                Err(AdminError::Conflict(format!("destination {dest} was removed meanwhile")))
            }
        }
    }

    /// Admin API: moves the destination this server runs to the server `to` (registered for
    /// it): a directed release, so that `to` takes it at once and the others wait the takeover
    /// delay (and take it then if `to` does not).
    ///
    /// # Errors
    /// Unknown destination; not running here; `to` is not a live server configured for it.
    pub async fn admin_move(&self, dest: &str, to: &str) -> Result<serde_json::Value, AdminError> {
        let slot = self.slot(dest)?;
        let owner = self.owner(dest).await?;
        if !slot.status.borrow().active {
            return Err(AdminError::Conflict(format!(
                "destination {dest} does not run on this server (owner: {}): ask the owner",
                owner.unwrap_or_else(|| "none".into())
            )));
        }
        if owner.as_deref() == Some(to) {
            return Err(AdminError::Conflict(format!("{to} already runs {dest}")));
        }
        let s = self.coord_session().await?;
        let members = s
            .children(&path::destination_cluster(dest))
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        if !members.iter().any(|m| m == to) {
            return Err(AdminError::Conflict(format!(
                "{to} is not a live server configured for {dest} (those are: {})",
                members.join(", ")
            )));
        }
        let handle = slot.handle.lock().unwrap_or_else(|p| p.into_inner()).clone();
        handle.release_to(to).await;
        Ok(serde_json::json!({ "moved": dest, "to": to }))
    }

    /// Admin API: resets `client_id`'s cursor on the owner. Refused while a consumer of that
    /// client is connected here or holds its client running node, unless `force` (the reset
    /// then closes its session: it reconnects and reads from the new cursor).
    ///
    /// # Errors
    /// Unknown destination; not the owner; consumers connected; the reset failed.
    pub async fn admin_reset_cursor(
        &self,
        dest: &str,
        client_id: i16,
        target: CursorTarget,
        force: bool,
    ) -> Result<serde_json::Value, AdminError> {
        let slot = self.slot(dest)?;
        let running = match &*slot.lock() {
            SlotState::Running { destination, .. } => Some(destination.clone()),
            _ => None,
        };
        let Some(destination) = running else {
            return Err(AdminError::Conflict(format!(
                "destination {dest} does not run on this server (owner: {}): ask the owner",
                self.owner(dest).await?.unwrap_or_else(|| "none".into())
            )));
        };
        if !force {
            let connected = destination.connected(client_id);
            if connected > 0 {
                return Err(AdminError::Conflict(format!(
                    "client {client_id} has {connected} consumer session(s) connected to \
                     {dest}: stop them first, or force"
                )));
            }
            let s = self.coord_session().await?;
            let ha = s
                .get(&path::client_running(dest, client_id))
                .await
                .map_err(|e| AdminError::Unavailable(e.to_string()))?;
            if ha.is_some() {
                return Err(AdminError::Conflict(format!(
                    "client {client_id} of {dest} has a running consumer (its client running \
                     node exists): stop it first, or force"
                )));
            }
        }
        let (reply, rx) = oneshot::channel();
        slot.admin
            .send(AdminCmd::ResetCursor { client_id, target, reply })
            .map_err(|_| AdminError::Conflict(format!("destination {dest} is stopping")))?;
        match rx.await {
            Ok(Ok(cursor)) => Ok(serde_json::json!({
                "destination": dest,
                "client_id": client_id,
                "cursor": serde_json::from_str::<serde_json::Value>(&cursor)
                    .unwrap_or(serde_json::Value::String(cursor)),
            })),
            Ok(Err(e)) => Err(AdminError::Conflict(e)),
            Err(_) => Err(AdminError::Conflict(format!("destination {dest} stopped meanwhile"))),
        }
    }

    /// Configuration reloads.
    pub fn reload(&self) -> Option<ReloadSummary> {
        self.reload.as_ref().map(|r| r.summary())
    }

    /// Current reports, one per destination.
    pub fn reports(&self) -> Vec<DestinationReport> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let slots: Vec<Arc<Slot>> = self.registry.slots().values().cloned().collect();
        let mq_mode = self.registry.mq_mode;
        slots
            .iter()
            .map(|slot| {
                let st = slot.status.borrow().clone();
                let mut r = DestinationReport {
                    destination: slot.name.clone(),
                    active: st.active,
                    activations: st.activations,
                    stopped: st.stopped,
                    state: None,
                    delay_ms: None,
                    rows: 0,
                    schema_corrections: 0,
                    store_entries: 0,
                    store_bytes: 0,
                    clients: Vec::new(),
                    mq: mq_mode.then(|| {
                        use std::sync::atomic::Ordering::Relaxed;
                        MqReport {
                            batches: slot.mq.batches.load(Relaxed),
                            messages: slot.mq.messages.load(Relaxed),
                            skipped: slot.mq.skipped.load(Relaxed),
                            send_failures: slot.mq.send_failures.load(Relaxed),
                        }
                    }),
                    failures: st.failures.clone(),
                };
                let state = slot.lock();
                if let SlotState::Failed { reason } = &*state {
                    r.state = Some(format!("failed: {reason}"));
                }
                if let SlotState::Running { instance, destination } = &*state {
                    let status = instance.status();
                    r.state = Some(match &status.state {
                        InstanceState::Starting => "starting".into(),
                        InstanceState::Running => "running".into(),
                        InstanceState::Reconnecting { error, .. } => {
                            format!("reconnecting: {error}")
                        }
                        InstanceState::Failed { error } => format!("failed: {error}"),
                        InstanceState::Stopped => "stopped".into(),
                        InstanceState::Gated => "waiting for the lease".into(),
                    });
                    r.delay_ms = status.last_event_ms.map(|t| (now - t).max(0));
                    r.rows = status.rows;
                    r.schema_corrections = status.schema_corrections;
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
