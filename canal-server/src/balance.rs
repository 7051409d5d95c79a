//! Balanced ownership of many destinations across the servers of one cluster
//! (docs/operations.md "Balancing").
//!
//! Every server keeps a view of the cluster read from the coordinator: the live servers
//! (`/otter/canal/cluster/{ip:port}`), which servers are configured for each of its destinations
//! (`…/{dest}/cluster/{ip:port}`) and who runs each (`…/{dest}/running`). Its share of the total
//! weight `W` of the destinations it is configured for, across the `N` live servers configured
//! for any of them, is `⌈W / N⌉ + slack`. Two rules follow, and nothing else:
//!
//! - **Gate** ([`BalanceGate`], a [`GrabGate`] on each destination's running monitor): a server
//!   at its share leaves a free destination to a live candidate that is below its share (or to a
//!   live server of the destination's `prefer` list); among servers all at their share, to the
//!   least loaded. The gate only delays: the create is still the coordinator's ephemeral create,
//!   and after `max_defer` the monitor grabs whatever the gate says, so no destination stays
//!   unowned because of balancing.
//! - **Hand-over** (the balancer task): a server above its share with a live candidate that would
//!   stay within its own share releases one destination through the ordinary release path
//!   (flush, `active:false`, delete), waits until another server holds it, then looks again.
//!   A destination is also handed to a live server of its `prefer` list.
//!
//! Every decision is taken on the coordinator (ephemeral create, release); the view only decides
//! who *tries*. A stale or failed view can delay a grab by at most `max_defer`, or make one hand-
//! over that the next view corrects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use canal_coord::{
    Coordinator, GrabAdvice, GrabGate, MonitorHandle, RunningData, RunningStatus,
    ServerRunningData, path,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

/// How a server balances (`[balance]` in `canal.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceSettings {
    /// Off: every server competes for every destination as Java Canal does.
    pub enabled: bool,
    /// Destinations' weight a server may hold above `⌈W / N⌉` before it hands one over.
    pub slack: u32,
    /// Longest a gate may hold a free destination back (then anyone takes it).
    pub max_defer: Duration,
    /// Period of the view's refresh (it is also refreshed when the server list changes, and
    /// when a gate defers).
    pub refresh: Duration,
    /// Per destination: weight and preferred servers (absent = weight 1, no preference).
    pub destinations: BTreeMap<String, DestinationBalance>,
}

impl Default for BalanceSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            slack: 0,
            max_defer: Duration::from_secs(10),
            refresh: Duration::from_secs(1),
            destinations: BTreeMap::new(),
        }
    }
}

/// A destination's balancing settings (`[balance]` in its `instance.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationBalance {
    /// Its weight in the share (≥ 1).
    pub weight: u32,
    /// Servers (`ip:port` as registered) that should run it whenever one of them is live.
    pub prefer: Vec<String>,
}

impl Default for DestinationBalance {
    fn default() -> Self {
        Self { weight: 1, prefer: Vec::new() }
    }
}

/// The cluster as last read from the coordinator.
#[derive(Clone, Debug, Default)]
struct View {
    /// Live servers (`/otter/canal/cluster` children).
    live: BTreeSet<String>,
    /// Per destination: the owner's address (`None`: free, or being released).
    owners: BTreeMap<String, Option<String>>,
    /// Per destination: servers registered for it.
    candidates: BTreeMap<String, BTreeSet<String>>,
}

/// One destination of this server, as the balancer tracks it.
#[derive(Debug)]
struct Mine {
    status: watch::Receiver<RunningStatus>,
    /// Releases the destination (always set by the server; unit tests have no monitor).
    handle: Option<MonitorHandle>,
    /// A grab the gate allowed, counted until the monitor is active (or this passes).
    reserved_until: Option<Instant>,
}

/// Where balancing stands on this server (`/metrics`, `/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceState {
    /// No view of the cluster yet.
    Unknown,
    /// Within its share.
    Balanced,
    /// Above its share, but no live candidate could take a destination within its own share.
    Surplus,
    /// Handing a destination over.
    HandingOver,
    /// Balancing is off, or there is nothing to balance (fewer than two destinations).
    Disabled,
}

/// What `/status` shows of balancing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BalanceReport {
    /// This server's registered address.
    pub address: String,
    /// State.
    pub state: BalanceState,
    /// Destinations running here.
    pub owned: usize,
    /// Their total weight.
    pub owned_weight: u64,
    /// `⌈W / N⌉ + slack` (0 before the first view).
    pub share: u64,
    /// Live servers configured for at least one of this server's destinations (itself
    /// included).
    pub live_servers: usize,
    /// Destinations handed over to another server.
    pub handovers: u64,
    /// Hand-overs nobody took within the bound (this server may have taken it back).
    pub handover_timeouts: u64,
    /// Refreshes of the view that failed.
    pub refresh_failures: u64,
}

#[derive(Debug)]
struct State {
    view: Option<View>,
    /// The first read of the view was tried (without a view after that, the gate does not
    /// hold grabs back: balancing must not make a coordinator that fails reads worse).
    attempted: bool,
    mine: BTreeMap<String, Mine>,
    state: BalanceState,
}

/// The balancer of one server.
#[derive(Debug)]
pub struct Balancer {
    me: String,
    settings: BalanceSettings,
    delay: Duration,
    coord: Arc<Coordinator>,
    /// This server's destinations and their settings (they change on a reload). Never locked
    /// while `state` is being locked.
    conf: std::sync::RwLock<DestConf>,
    /// The destinations changed.
    conf_changed: Notify,
    state: Mutex<State>,
    kick: Notify,
    handovers: AtomicU64,
    handover_timeouts: AtomicU64,
    refresh_failures: AtomicU64,
}

/// The destinations a balancer knows.
#[derive(Debug, Default)]
struct DestConf {
    dests: BTreeSet<String>,
    settings: BTreeMap<String, DestinationBalance>,
}

/// Retry of a deferred grab.
const DEFER_RETRY: Duration = Duration::from_millis(250);
/// Refreshes are at least this far apart.
const MIN_REFRESH: Duration = Duration::from_millis(200);

impl Balancer {
    /// A balancer for `me` over `dests`; `delay` is the takeover delay.
    pub fn new(
        coord: Arc<Coordinator>,
        me: String,
        settings: BalanceSettings,
        delay: Duration,
        dests: impl IntoIterator<Item = String>,
    ) -> Arc<Self> {
        let state = if settings.enabled { BalanceState::Unknown } else { BalanceState::Disabled };
        let per_dest = settings.destinations.clone();
        Arc::new(Self {
            me,
            settings,
            delay,
            coord,
            conf: std::sync::RwLock::new(DestConf {
                dests: dests.into_iter().collect(),
                settings: per_dest,
            }),
            conf_changed: Notify::new(),
            state: Mutex::new(State { view: None, attempted: false, mine: BTreeMap::new(), state }),
            kick: Notify::new(),
            handovers: AtomicU64::new(0),
            handover_timeouts: AtomicU64::new(0),
            refresh_failures: AtomicU64::new(0),
        })
    }

    /// Whether balancing is on.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// How long a gate may hold a free destination back.
    pub fn max_defer(&self) -> Duration {
        self.settings.max_defer
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a destination's monitor (its status and a handle to release it).
    pub fn attach(
        &self,
        dest: &str,
        status: watch::Receiver<RunningStatus>,
        handle: MonitorHandle,
    ) {
        self.attach_inner(dest, status, Some(handle));
    }

    fn attach_inner(
        &self,
        dest: &str,
        status: watch::Receiver<RunningStatus>,
        handle: Option<MonitorHandle>,
    ) {
        self.lock().mine.insert(dest.to_owned(), Mine { status, handle, reserved_until: None });
    }

    fn conf(&self) -> std::sync::RwLockReadGuard<'_, DestConf> {
        self.conf.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A destination added on a reload (its monitor is attached separately), or new settings
    /// of one.
    pub fn add_destination(&self, dest: &str, balance: DestinationBalance) {
        {
            let mut c = self.conf.write().unwrap_or_else(|p| p.into_inner());
            c.dests.insert(dest.to_owned());
            c.settings.insert(dest.to_owned(), balance);
        }
        self.conf_changed.notify_one();
        self.kick.notify_one();
    }

    /// A destination removed on a reload.
    pub fn remove_destination(&self, dest: &str) {
        {
            let mut c = self.conf.write().unwrap_or_else(|p| p.into_inner());
            c.dests.remove(dest);
            c.settings.remove(dest);
        }
        self.lock().mine.remove(dest);
        self.conf_changed.notify_one();
        self.kick.notify_one();
    }

    /// Whether there is anything to balance: two or more destinations (one destination keeps
    /// the plain HA policy; the gate always says grab and nothing is read).
    fn active(&self) -> bool {
        self.conf().dests.len() > 1
    }

    fn weight(&self, dest: &str) -> u64 {
        self.conf().settings.get(dest).map_or(1, |d| u64::from(d.weight.max(1)))
    }

    fn prefer(&self, dest: &str) -> Vec<String> {
        self.conf().settings.get(dest).map(|d| d.prefer.clone()).unwrap_or_default()
    }

    /// Live servers configured for any of our destinations, ourselves included.
    fn live_servers(&self, view: &View) -> BTreeSet<String> {
        let mut n: BTreeSet<String> = view
            .candidates
            .values()
            .flatten()
            .filter(|c| view.live.contains(*c))
            .cloned()
            .collect();
        n.insert(self.me.clone());
        n
    }

    fn share(&self, view: &View) -> u64 {
        let total: u64 = {
            let c = self.conf();
            c.dests
                .iter()
                .map(|d| c.settings.get(d).map_or(1, |b| u64::from(b.weight.max(1))))
                .sum()
        };
        let n = self.live_servers(view).len() as u64;
        total.div_ceil(n.max(1)) + u64::from(self.settings.slack)
    }

    /// Weight this server holds: active destinations, plus grabs allowed and not yet settled
    /// (but not `except`'s: the one being asked about again) when `reserved` is set.
    fn my_load(&self, st: &State, reserved: bool, except: Option<&str>) -> u64 {
        let now = Instant::now();
        let others = |d: &str| {
            st.view
                .as_ref()
                .and_then(|v| v.owners.get(d))
                .and_then(Option::as_ref)
                .is_some_and(|o| *o != self.me)
        };
        st.mine
            .iter()
            .filter(|(d, m)| {
                matches!(*m.status.borrow(), RunningStatus::Active(_))
                    || (reserved
                        && m.reserved_until.is_some_and(|t| now < t)
                        && !others(d)
                        && except != Some(d.as_str()))
            })
            .map(|(d, _)| self.weight(d))
            .sum()
    }

    /// Weight another server holds, as the view says (our destinations only).
    fn load_of(&self, view: &View, who: &str) -> u64 {
        view.owners
            .iter()
            .filter(|(_, o)| o.as_deref() == Some(who))
            .map(|(d, _)| self.weight(d))
            .sum()
    }

    /// Live servers other than us registered for `dest`.
    fn other_candidates<'a>(&'a self, view: &'a View, dest: &str) -> Vec<&'a String> {
        view.candidates
            .get(dest)
            .into_iter()
            .flatten()
            .filter(|c| **c != self.me && view.live.contains(*c))
            .collect()
    }

    /// The gate's advice for `dest` (see the module documentation).
    fn advise(&self, dest: &str) -> GrabAdvice {
        if !self.active() {
            return GrabAdvice::Grab;
        }
        let mut st = self.lock();
        let Some(view) = st.view.clone() else {
            if st.attempted {
                return GrabAdvice::Grab;
            }
            self.kick.notify_one();
            return GrabAdvice::Defer(Duration::from_millis(50));
        };
        let w = self.weight(dest);
        let prefer = self.prefer(dest);
        let others = self.other_candidates(&view, dest);
        let grab = if prefer.contains(&self.me) {
            true
        } else if others.iter().any(|c| prefer.contains(c)) {
            false
        } else {
            let share = self.share(&view);
            let mine = self.my_load(&st, true, Some(dest));
            if mine + w <= share {
                true
            } else if others.iter().any(|c| self.load_of(&view, c) + w <= share) {
                false
            } else {
                // Everybody is at their share: the least loaded takes it.
                !others.iter().any(|c| self.load_of(&view, c) < mine)
            }
        };
        if grab {
            if let Some(m) = st.mine.get_mut(dest) {
                // Until the activation is confirmed (or the create lost): bounded, since an
                // activation may fail without a report to the gate.
                m.reserved_until = Some(Instant::now() + self.settings.max_defer);
            }
            GrabAdvice::Grab
        } else {
            self.kick.notify_one();
            GrabAdvice::Defer(DEFER_RETRY)
        }
    }

    /// The gate of one destination's monitor.
    pub fn gate(self: &Arc<Self>, dest: &str) -> canal_coord::Gate {
        canal_coord::Gate {
            gate: Arc::new(BalanceGate { balancer: self.clone(), dest: dest.to_owned() }),
            max_defer: self.settings.max_defer,
        }
    }

    /// Reads the view from the coordinator.
    async fn read_view(
        &self,
        previous: Option<&View>,
        fresh_candidates: bool,
    ) -> Result<(View, canal_coord::Watch), canal_coord::CoordError> {
        let s = self.coord.session().await?;
        let (live, watch) = s.children_and_watch(path::CLUSTER).await?;
        let mut view = View { live: live.into_iter().collect(), ..View::default() };
        // Who is registered for a destination changes when servers come and go: re-read it
        // then (and now and then), not on every refresh.
        let candidates = match previous {
            Some(p) if !fresh_candidates && p.live == view.live => Some(p.candidates.clone()),
            _ => None,
        };
        // One request per node, all in flight at once (a refresh is 30 round trips otherwise).
        let mut reads = tokio::task::JoinSet::new();
        let dests: Vec<String> = self.conf().dests.iter().cloned().collect();
        for d in &dests {
            let (s, d) = (s.clone(), d.clone());
            let with_candidates = candidates.is_none();
            reads.spawn(async move {
                let node = s.get(&path::server_running(&d)).await?;
                let cands = match with_candidates {
                    true => Some(s.children(&path::destination_cluster(&d)).await?),
                    false => None,
                };
                Ok::<_, canal_coord::CoordError>((d, node, cands))
            });
        }
        view.candidates = candidates.unwrap_or_default();
        while let Some(r) = reads.join_next().await {
            let (d, node, cands) = r.map_err(|e| canal_coord::CoordError::Backend {
                reason: format!("cluster view read task: {e}"),
            })??;
            let owner = match node {
                Some(n) => match ServerRunningData::from_bytes(&n.data) {
                    // `active:false`: released, or being released: nobody's load.
                    Ok(r) if r.active() => Some(r.address().to_owned()),
                    Ok(_) => None,
                    Err(e) => {
                        debug!(destination = %d, "unreadable running node: {e}");
                        None
                    }
                },
                None => None,
            };
            if let Some(c) = cands {
                view.candidates.insert(d.clone(), c.into_iter().collect());
            }
            view.owners.insert(d, owner);
        }
        Ok((view, watch))
    }

    /// A report for `/status` and `/metrics`.
    pub fn report(&self) -> BalanceReport {
        let st = self.lock();
        let owned: Vec<&String> = st
            .mine
            .iter()
            .filter(|(_, m)| matches!(*m.status.borrow(), RunningStatus::Active(_)))
            .map(|(d, _)| d)
            .collect();
        let (share, live) = match &st.view {
            Some(v) => (self.share(v), self.live_servers(v).len()),
            None => (0, 0),
        };
        BalanceReport {
            address: self.me.clone(),
            state: if self.active() { st.state } else { BalanceState::Disabled },
            owned: owned.len(),
            owned_weight: owned.iter().map(|d| self.weight(d)).sum(),
            share,
            live_servers: live,
            handovers: self.handovers.load(Ordering::Relaxed),
            handover_timeouts: self.handover_timeouts.load(Ordering::Relaxed),
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
        }
    }

    /// Starts the refresh and hand-over task (nothing when balancing is off).
    pub fn spawn(self: &Arc<Self>, stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        if !self.settings.enabled {
            return None;
        }
        let me = self.clone();
        let span = tracing::info_span!("balance");
        Some(tokio::spawn(me.run(stop).instrument(span)))
    }

    async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        // Servers started together see each other before the first grab (their gates defer
        // until this first view): they split the destinations at once instead of one taking
        // them all and handing most of them over.
        let grace = self.settings.refresh.min(self.settings.max_defer / 2);
        let mut s = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = s.wait_for(|s| *s) => return,
        }
        // The view keeps being refreshed while a hand-over waits for its taker: the gates of
        // the other destinations must not decide on a stale view meanwhile.
        let (views_tx, views_rx) = watch::channel(0u64);
        tokio::join!(self.refresh_loop(stop.clone(), views_tx), self.handover_loop(stop, views_rx));
    }

    /// Reads the view: at once when the server list changes or a gate deferred (at most every
    /// [`MIN_REFRESH`]), else every `refresh`. Counts views in `views`.
    async fn refresh_loop(&self, mut stop: watch::Receiver<bool>, views: watch::Sender<u64>) {
        let mut last = Instant::now() - MIN_REFRESH;
        let mut count = 0u64;
        loop {
            // One destination: nothing to balance, nothing to read.
            while !self.active() {
                self.lock().view = None;
                tokio::select! {
                    _ = self.conf_changed.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            // Refreshes are spaced, whatever asks for them.
            let wait = MIN_REFRESH.saturating_sub(last.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            last = Instant::now();
            count += 1;
            let previous = self.lock().view.clone();
            let read = self.read_view(previous.as_ref(), count.is_multiple_of(10)).await;
            self.lock().attempted = true;
            let watch = match read {
                Ok((view, watch)) => {
                    self.lock().view = Some(view);
                    views.send_modify(|n| *n += 1);
                    Some(watch)
                }
                Err(e) => {
                    self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    warn!("balance: reading the cluster view failed (retrying): {e}");
                    None
                }
            };
            let changed = async {
                match watch {
                    Some(w) => {
                        w.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changed => debug!("balance: the server list changed"),
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(self.settings.refresh) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// After each new view: hands one destination over if this server is above its share (or
    /// holds one whose preferred server is live), and waits until it is taken.
    async fn handover_loop(
        &self,
        mut stop: watch::Receiver<bool>,
        mut views: watch::Receiver<u64>,
    ) {
        loop {
            tokio::select! {
                r = views.changed() => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Some((dest, Some(handle))) = self.pick_handover() {
                self.hand_over(&dest, handle, &mut stop).await;
                // Decide the next one on a view read after this hand-over.
                views.borrow_and_update();
                self.kick.notify_one();
            }
        }
    }

    /// A destination to hand over now, if any (and sets the state).
    fn pick_handover(&self) -> Option<(String, Option<MonitorHandle>)> {
        let mut st = self.lock();
        let view = st.view.clone()?;
        let share = self.share(&view);
        let mine = self.my_load(&st, false, None);
        let active: Vec<String> = st
            .mine
            .iter()
            .filter(|(_, m)| matches!(*m.status.borrow(), RunningStatus::Active(_)))
            .map(|(d, _)| d.clone())
            .collect();
        // A destination whose preferred server is live goes there.
        let preferred = active.iter().rev().find(|d| {
            let prefer = self.prefer(d);
            !prefer.contains(&self.me)
                && self.other_candidates(&view, d).iter().any(|c| prefer.contains(c))
        });
        let surplus = || {
            (mine > share)
                .then(|| {
                    active.iter().rev().find(|d| {
                        let w = self.weight(d);
                        !self.prefer(d).contains(&self.me)
                            && self
                                .other_candidates(&view, d)
                                .iter()
                                .any(|c| self.load_of(&view, c) + w <= share)
                    })
                })
                .flatten()
        };
        let pick = preferred.or_else(surplus).cloned();
        st.state = match (&pick, mine > share) {
            (Some(_), _) => BalanceState::HandingOver,
            (None, true) => BalanceState::Surplus,
            (None, false) => BalanceState::Balanced,
        };
        let m = st.mine.get_mut(pick.as_ref()?)?;
        m.reserved_until = None;
        let handle = m.handle.clone();
        Some((pick?, handle))
    }

    /// Releases `dest` through the ordinary release path and waits (bounded) until another
    /// server holds it.
    async fn hand_over(&self, dest: &str, handle: MonitorHandle, stop: &mut watch::Receiver<bool>) {
        info!(destination = %dest, "balance: handing over (above share)");
        let t0 = Instant::now();
        if !handle.release().await {
            return;
        }
        let limit = self.delay * 2 + self.settings.max_defer;
        let running = path::server_running(dest);
        loop {
            let taken = async {
                let s = self.coord.session().await?;
                Ok::<_, canal_coord::CoordError>(s.get(&running).await?.and_then(|n| {
                    ServerRunningData::from_bytes(&n.data)
                        .ok()
                        .filter(|r| r.active() && r.address() != self.me)
                        .map(|r| r.address().to_owned())
                }))
            };
            match taken.await {
                Ok(Some(by)) => {
                    self.handovers.fetch_add(1, Ordering::Relaxed);
                    info!(destination = %dest, to = %by, took = ?t0.elapsed(), "balance: handed over");
                    return;
                }
                Ok(None) => {}
                Err(e) => debug!(destination = %dest, "balance: reading the running node: {e}"),
            }
            if t0.elapsed() > limit {
                self.handover_timeouts.fetch_add(1, Ordering::Relaxed);
                warn!(destination = %dest, "balance: nobody took the destination within {limit:?}");
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// The [`GrabGate`] of one destination.
#[derive(Debug)]
pub struct BalanceGate {
    balancer: Arc<Balancer>,
    dest: String,
}

impl GrabGate for BalanceGate {
    fn advise(&self) -> GrabAdvice {
        self.balancer.advise(&self.dest)
    }

    fn created(&self, won: bool) {
        if !won {
            // Another server won the race: the allowed grab no longer counts as our load.
            if let Some(m) = self.balancer.lock().mine.get_mut(&self.dest) {
                m.reserved_until = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canal_coord::backend::local::LocalBackend;
    use canal_coord::{Fence, Version};

    const ME: &str = "10.0.0.1:11111";
    const B: &str = "10.0.0.2:11111";
    const C: &str = "10.0.0.3:11111";

    struct Fixture {
        bal: Arc<Balancer>,
        status: BTreeMap<String, watch::Sender<RunningStatus>>,
    }

    fn fixture(n: usize, settings: BalanceSettings) -> Fixture {
        let coord = Coordinator::new(Arc::new(LocalBackend::in_memory(Duration::from_secs(10))));
        let dests: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        let bal = Balancer::new(coord, ME.into(), settings, Duration::from_secs(5), dests.clone());
        let mut status = BTreeMap::new();
        for d in &dests {
            let (tx, rx) = watch::channel(RunningStatus::Standby);
            bal.attach_inner(d, rx, None);
            status.insert(d.clone(), tx);
        }
        Fixture { bal, status }
    }

    impl Fixture {
        /// `owners[i]` owns `d{i}` (ours flips our monitor to Active); every server in `live`
        /// is live and registered for every destination.
        fn set(&self, owners: &[Option<&str>], live: &[&str]) {
            let mut view =
                View { live: live.iter().map(|s| (*s).to_owned()).collect(), ..View::default() };
            for (i, o) in owners.iter().enumerate() {
                let d = format!("d{i}");
                view.owners.insert(d.clone(), o.map(str::to_owned));
                view.candidates.insert(d.clone(), view.live.clone());
                let st = if *o == Some(ME) {
                    RunningStatus::Active(Fence {
                        path: d.clone(),
                        version: Version(0),
                        epoch_path: d.clone(),
                        epoch: Version(0),
                    })
                } else {
                    RunningStatus::Standby
                };
                self.status[&d].send_replace(st);
            }
            self.bal.lock().view = Some(view);
        }
    }

    fn defers(a: GrabAdvice) -> bool {
        matches!(a, GrabAdvice::Defer(_))
    }

    #[test]
    fn a_server_at_its_share_leaves_a_free_destination_to_an_under_loaded_one() {
        let f = fixture(6, BalanceSettings::default());
        // 6 destinations, 3 servers: share 2. We hold 2, B holds 1.
        f.set(&[Some(ME), Some(ME), Some(B), Some(C), Some(C), None], &[ME, B, C]);
        assert!(defers(f.bal.advise("d5")));
        // d5's only other candidate, B, is at its share and holds no less than we do (C is not
        // configured for d5): we take it.
        f.set(&[Some(ME), Some(ME), Some(B), Some(B), Some(C), None], &[ME, B, C]);
        f.bal.lock().view.as_mut().unwrap().candidates.get_mut("d5").unwrap().remove(C);
        assert_eq!(f.bal.advise("d5"), GrabAdvice::Grab);
        // Below our share we always grab.
        f.set(&[Some(ME), None, Some(B), Some(B), Some(C), None], &[ME, B, C]);
        assert_eq!(f.bal.advise("d5"), GrabAdvice::Grab);
    }

    #[test]
    fn an_allowed_grab_counts_until_it_is_lost() {
        let f = fixture(4, BalanceSettings::default());
        // 4 destinations, 2 servers: share 2; we hold 1, B holds 1.
        f.set(&[Some(ME), Some(B), None, None], &[ME, B]);
        assert_eq!(f.bal.advise("d2"), GrabAdvice::Grab);
        // The grab of d2 is pending: we are at our share, B is below it.
        assert!(defers(f.bal.advise("d3")));
        // B won d2: our reservation no longer counts.
        let gate = BalanceGate { balancer: f.bal.clone(), dest: "d2".into() };
        gate.created(false);
        assert_eq!(f.bal.advise("d3"), GrabAdvice::Grab);
    }

    #[test]
    fn prefer_and_weight() {
        let mut settings = BalanceSettings::default();
        settings
            .destinations
            .insert("d0".into(), DestinationBalance { weight: 1, prefer: vec![B.into()] });
        settings.destinations.insert("d1".into(), DestinationBalance { weight: 3, prefer: vec![] });
        let f = fixture(3, settings.clone());
        // d0 prefers B: while B is live we leave it, even holding nothing.
        f.set(&[None, None, None], &[ME, B]);
        assert!(defers(f.bal.advise("d0")));
        f.set(&[None, None, None], &[ME]);
        assert_eq!(f.bal.advise("d0"), GrabAdvice::Grab);
        // Weights 1 + 3 + 1 over 2 servers: share 3. Holding d2 (1), d1 (3) would exceed it
        // while B (0) could take it within its share.
        f.set(&[None, None, Some(ME)], &[ME, B]);
        assert!(defers(f.bal.advise("d1")));
        // We hold d0 that prefers B, now live: it is handed over first.
        f.set(&[Some(ME), None, None], &[ME, B]);
        assert_eq!(f.bal.pick_handover().map(|(d, _)| d).as_deref(), Some("d0"));
        // A preferred server that is not live changes nothing.
        let f = fixture(3, settings);
        f.set(&[Some(ME), None, None], &[ME, C]);
        assert!(f.bal.pick_handover().is_none());
        assert_eq!(f.bal.report().state, BalanceState::Balanced);
    }

    #[test]
    fn surplus_is_handed_over_only_to_a_server_that_stays_within_its_share() {
        let f = fixture(6, BalanceSettings::default());
        // 6 over 2: share 3. We hold 4, B 2: hand one over.
        f.set(&[Some(ME), Some(ME), Some(ME), Some(ME), Some(B), Some(B)], &[ME, B]);
        assert!(f.bal.pick_handover().is_some());
        assert_eq!(f.bal.report().state, BalanceState::HandingOver);
        // With a slack of 1 (share 4) that is balanced.
        let f = fixture(6, BalanceSettings { slack: 1, ..BalanceSettings::default() });
        f.set(&[Some(ME), Some(ME), Some(ME), Some(ME), Some(B), Some(B)], &[ME, B]);
        assert!(f.bal.pick_handover().is_none());
        assert_eq!(f.bal.report().state, BalanceState::Balanced);
        // 7 over 3 (share 3): we hold 5, B and C 1 each... B would stay within its share.
        let f = fixture(7, BalanceSettings::default());
        f.set(&[Some(ME), Some(ME), Some(ME), Some(ME), Some(ME), Some(B), Some(C)], &[ME, B, C]);
        assert!(f.bal.pick_handover().is_some());
        // Above the share, but the only other server is not configured for what we hold:
        // nothing to hand over, the state says surplus.
        let f = fixture(6, BalanceSettings::default());
        f.set(&[Some(ME), Some(ME), Some(ME), Some(ME), Some(B), Some(B)], &[ME, B]);
        for d in ["d0", "d1", "d2", "d3"] {
            f.bal.lock().view.as_mut().unwrap().candidates.get_mut(d).unwrap().remove(B);
        }
        assert!(f.bal.pick_handover().is_none());
        assert_eq!(f.bal.report().state, BalanceState::Surplus);
    }

    #[test]
    fn without_a_view_the_gate_waits_for_the_first_read_only() {
        let f = fixture(2, BalanceSettings::default());
        assert!(defers(f.bal.advise("d0")));
        f.bal.lock().attempted = true;
        assert_eq!(f.bal.advise("d0"), GrabAdvice::Grab);
    }
}
