//! The running-node policy (Canal's ServerRunningMonitor / ClientRunningMonitor), written once
//! over [`Session`] and used by servers and clients alike.
//!
//! Rules (docs/protocol.md#server-ha, #client-ha), and where we are stricter than Java Canal:
//! - Grab by creating the EPHEMERAL node with our data; at start a candidate tries at once. We
//!   report `ActiveEnter` only after a read has confirmed the node and armed the watch on it, so
//!   an owner is never active without a watch (creates are bounded by `delay / 2`).
//! - When the node is deleted, the last owner that did not release re-grabs at once (within
//!   `delay` of losing it: stale knowledge never skips the delay later); everyone
//!   else waits `delay` (5 s) first; an owner that released waits `delay` plus a fifth, so that
//!   a release really hands over (Java lets the releasing server race the standbys at 5 s).
//! - An operator's `active:false` with our address makes us release (delete) and wait `delay`.
//! - An indeterminate create is settled by re-reading: a node with our address owned by our
//!   session is ours (we never wait `delay` for it and never create a second owner); a leftover
//!   with our address from an older session is deleted and re-grabbed at once.
//! - Epoch (ours, not Java's): before reporting `ActiveEnter` the owner moves the destination's
//!   epoch forward — the persistent sibling [`path::running_epoch`] of the running node, written
//!   compare-and-set and fenced by the running node — and re-confirms its node; the [`Fence`] it
//!   hands out carries both versions. Every fenced write or delete checks both, so a deposed
//!   owner's cursor write either landed before the bump (and the new owner, which reads cursors
//!   only after it, sees it) or is refused, on every backend (ZooKeeper re-creates a running node
//!   at version 0, so the running node alone cannot tell owners apart). No bump, no
//!   `ActiveEnter`: a failed bump (bounded by `delay / 2`) is retried after a pause, and after
//!   [`MAX_BUMP_FAILURES`] in a row the node is released so that a standby can try.
//! - Stricter: when the session disconnects or expires, or another owner's data appears, the
//!   owner stops serving at once (`ActiveExit`) — Java keeps running and risks split brain — and
//!   rejoins as a candidate, on a new session if the old one ended. An owner that cannot
//!   re-confirm its node (re-read and re-arm the watch) within `delay / 2` also stops serving,
//!   since a standby may take over `delay` after a delete the owner has not seen yet.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::coordinator::Coordinator;
use crate::data::{ClientRunningData, RunningData, ServerRunningData};
use crate::error::CoordError;
use crate::path;
use crate::session::{Fence, Node, Session, SessionState, Version, WatchEvent, session_lost};

/// Canal's takeover delay for standbys (`delayTime = 5` seconds).
pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);

/// How long a releasing owner leaves its release marker in place before deleting the node, so
/// that standbys' watches read it (capped at a fifth of the takeover delay).
pub(crate) const HANDOVER_NOTICE: Duration = Duration::from_millis(200);

/// Our node's JSON as a stopped owner leaves it just before deleting it: `"active":false` plus
/// `"released":true` (keys stay sorted, as fastjson writes them; Java readers ignore the extra
/// field). Only an owner that has already stopped serving writes `released`, which is what makes
/// it safe for standbys to compete at once when that node goes.
///
/// A directed release (an operator's move) adds `"to":"ip:port"`: only that candidate competes at
/// once; the others wait `delay` as after a crash, so the node goes to the named server unless it
/// does not take it (then a standby does, `delay` later).
fn released_marker(me: &[u8], to: Option<&str>) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(me).ok()?;
    let o = v.as_object_mut()?;
    o.insert("active".into(), serde_json::Value::Bool(false));
    o.insert("released".into(), serde_json::Value::Bool(true));
    if let Some(t) = to {
        o.insert("to".into(), serde_json::Value::String(t.to_owned()));
    }
    serde_json::to_vec(&v).ok()
}

/// The candidate a directed release names (see [`released_marker`]).
fn released_to(data: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(data).ok()?.get("to")?.as_str().map(str::to_owned)
}

/// Whether a node's data carries the marker of [`released_marker`].
fn is_released_marker(data: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("released").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// Pause after a transient failure before trying again.
const RETRY: Duration = Duration::from_millis(200);

/// Failed epoch bumps in a row after which a monitor that holds the running node without
/// serving releases it, so that a standby (maybe with a healthier path to the service) can try.
pub const MAX_BUMP_FAILURES: u32 = 5;

/// What a [`GrabGate`] tells a monitor about to create a free running node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrabAdvice {
    /// Create it now.
    Grab,
    /// Leave it to another candidate for now; ask again after this long.
    Defer(Duration),
}

/// A policy consulted before a monitor creates a free running node (the server's balancer: do
/// not grab beyond your share while an under-loaded candidate exists). It only ever delays a
/// grab: the create itself stays the backend's atomic ephemeral create, and a gate that keeps
/// deferring is ignored once [`Gate::max_defer`] has passed since it first deferred, so a node
/// never stays free because of it.
pub trait GrabGate: Send + Sync + std::fmt::Debug + 'static {
    /// Asked each time the node is free and this monitor's turn to create it has come.
    fn advise(&self) -> GrabAdvice;

    /// After a create the gate allowed: `true` when it created the node, `false` when another
    /// candidate holds it or the create failed (an indeterminate create is settled by the
    /// following read and reported by neither).
    fn created(&self, won: bool) {
        let _ = won;
    }
}

/// A [`GrabGate`] and the bound on how long it may hold a free node back.
#[derive(Clone, Debug)]
pub struct Gate {
    /// The policy.
    pub gate: Arc<dyn GrabGate>,
    /// After deferring for this long (counted from the first deferral while the node is free),
    /// the monitor creates the node whatever the gate says.
    pub max_defer: Duration,
}

/// Whether this monitor currently owns the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunningStatus {
    /// Not the owner (competing or waiting).
    Standby,
    /// The owner: serve, and fence writes with this.
    Active(Fence),
    /// The monitor stopped.
    Stopped,
}

/// Transitions reported to the code that runs the destination (or consumes it).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunningEvent {
    /// We own the node: start serving.
    ActiveEnter {
        /// Proof of ownership for fenced writes.
        fence: Fence,
    },
    /// Stop serving now.
    ActiveExit {
        /// Why.
        reason: ExitReason,
        /// On a graceful exit (release, `active:false`, stop): the monitor keeps the node until
        /// this is done (or dropped, or `delay / 5` passed), so that queued writes still go
        /// through under [`ExitFlush::fence`]. Inert on the other exits.
        flush: ExitFlush,
    },
}

/// "Flush before you let go": handed out with a graceful `ActiveExit`. While it is pending the
/// monitor neither marks the node released nor deletes it, and nobody else can take a node that
/// still exists, so writes under [`ExitFlush::fence`] are still an owner's writes. Call
/// [`ExitFlush::done`] once the queued cursors and subscriptions are written; dropping every
/// clone counts as done. The monitor waits at most `delay / 5` (and logs when it gave up).
///
/// Compares equal to every other `ExitFlush`: it carries no state an event comparison should see.
#[derive(Clone, Debug, Default)]
pub struct ExitFlush {
    inner: Option<Arc<ExitFlushInner>>,
}

#[derive(Debug)]
struct ExitFlushInner {
    fence: Fence,
    done: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl ExitFlush {
    fn armed(fence: Fence, done: oneshot::Sender<()>) -> Self {
        Self {
            inner: Some(Arc::new(ExitFlushInner {
                fence,
                done: std::sync::Mutex::new(Some(done)),
            })),
        }
    }

    /// The fence the final writes must use (`None` on an exit that allows none): the last
    /// activation's, at the node's current version (an operator's `active:false` rewrote it).
    pub fn fence(&self) -> Option<&Fence> {
        self.inner.as_ref().map(|i| &i.fence)
    }

    /// The final writes are done: the monitor may give the node up now.
    pub fn done(&self) {
        if let Some(i) = &self.inner {
            let tx = i.done.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(tx) = tx {
                // The monitor may have stopped waiting: nothing to do then.
                let _ = tx.send(());
            }
        }
    }
}

impl PartialEq for ExitFlush {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ExitFlush {}

/// Why an owner stopped serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// [`RunningMonitor::release`] was called.
    Released,
    /// An operator wrote `active:false` into our node.
    Deactivated,
    /// The session disconnected or ended.
    SessionLost,
    /// The node vanished or another owner's data appeared.
    Deposed,
    /// [`RunningMonitor::stop`] was called.
    Stopped,
}

#[derive(Debug)]
enum Command {
    /// Release, optionally directed to one candidate's address.
    Release(oneshot::Sender<()>, Option<String>),
    Rewrite {
        data: Vec<u8>,
        address: String,
        reply: oneshot::Sender<Result<Option<Fence>, CoordError>>,
    },
    Stop(oneshot::Sender<()>),
}

/// "May serve now": the owner's lease. The monitor renews it on every read that finds the node
/// still ours (and re-reads every `delay / 6` while active); it lasts `delay / 2` from when that
/// read was sent, less than any standby needs to take over (the node must first vanish, a session
/// timeout after our last heartbeat, then `delay` pass). tokio's `Instant` is monotonic and keeps
/// counting while the process is stopped (SIGSTOP), so a woken owner sees its lease expired at
/// once, before its monitor has run at all. Check it right before answering with data.
#[derive(Clone, Debug)]
pub struct Lease {
    status: watch::Receiver<RunningStatus>,
    expiry: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Lease {
    /// Active, and ownership confirmed recently enough.
    pub fn valid(&self) -> bool {
        let active = matches!(*self.status.borrow(), RunningStatus::Active(_));
        let expiry = *self.expiry.lock().unwrap_or_else(|p| p.into_inner());
        active && expiry.is_some_and(|e| Instant::now() < e)
    }
}

/// A cloneable handle on a [`RunningMonitor`] for code that does not own it (a balancer, an
/// operator's API): it can ask the monitor to release its node.
#[derive(Clone, Debug)]
pub struct MonitorHandle {
    cmds: mpsc::UnboundedSender<Command>,
}

impl MonitorHandle {
    /// As [`RunningMonitor::release`]. Returns false when the monitor has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: the release still happens.
    pub async fn release(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Release(tx, None)).is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// A directed release (an operator's move): as [`MonitorHandle::release`], and the release
    /// marker names `to`, so that only that candidate takes the node at once; the others wait
    /// the takeover delay (and take it if `to` does not). Returns false when the monitor has
    /// stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: the release still happens.
    pub async fn release_to(&self, to: &str) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Release(tx, Some(to.to_owned()))).is_err() {
            return false;
        }
        rx.await.is_ok()
    }
}

/// One running node's monitor: competes for it, and reports when this process must serve.
#[derive(Debug)]
pub struct RunningMonitor {
    path: String,
    lease: Lease,
    cmds: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<RunningStatus>,
    task: Option<JoinHandle<()>>,
}

impl RunningMonitor {
    /// Starts competing for `path` with `me` as the node's data. Events arrive on the returned
    /// receiver; [`RunningMonitor::status`] gives the current state.
    pub fn start<D: RunningData>(
        coord: Arc<Coordinator>,
        path: String,
        me: D,
        delay: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<RunningEvent>) {
        Self::start_gated(coord, path, me, delay, None)
    }

    /// As [`RunningMonitor::start`], asking `gate` before each create of the free node (see
    /// [`GrabGate`]). Without a gate the policy is exactly [`RunningMonitor::start`]'s.
    pub fn start_gated<D: RunningData>(
        coord: Arc<Coordinator>,
        path: String,
        me: D,
        delay: Duration,
        gate: Option<Gate>,
    ) -> (Self, mpsc::UnboundedReceiver<RunningEvent>) {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (st_tx, st_rx) = watch::channel(RunningStatus::Standby);
        let expiry = Arc::new(std::sync::Mutex::new(None));
        let lease = Lease { status: st_rx.clone(), expiry: expiry.clone() };
        let runner = MonitorLoop {
            expiry,
            read_issued: Instant::now(),
            coord,
            path: path.clone(),
            me_bytes: me.to_bytes(),
            me_address: me.address().to_owned(),
            kind: std::marker::PhantomData::<fn() -> D>,
            delay,
            status: st_tx,
            events: ev_tx,
            cmds: cmd_rx,
            session: None,
            active: None,
            at_once_until: None,
            handover_seen: false,
            lost_ownership: false,
            released: false,
            fresh: true,
            grab_at: None,
            epoch_path: path::running_epoch(&path),
            bumped: None,
            bump_failures: 0,
            recheck_at: None,
            gate,
            deferred_since: None,
            release_to: None,
            directed: false,
        };
        let span = tracing::info_span!("running", path = %path);
        let task = tokio::spawn(tracing::Instrument::instrument(runner.run(), span));
        (RunningMonitor { path, lease, cmds: cmd_tx, status: st_rx, task: Some(task) }, ev_rx)
    }

    /// A handle that can release the node (see [`MonitorHandle`]).
    pub fn handle(&self) -> MonitorHandle {
        MonitorHandle { cmds: self.cmds.clone() }
    }

    /// A server's monitor of `/otter/canal/destinations/{dest}/running`.
    pub fn server(
        coord: Arc<Coordinator>,
        dest: &str,
        me: ServerRunningData,
        delay: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<RunningEvent>) {
        Self::start(coord, path::server_running(dest), me, delay)
    }

    /// A client's monitor of `/otter/canal/destinations/{dest}/{clientId}/running`.
    pub fn client(
        coord: Arc<Coordinator>,
        dest: &str,
        client_id: i16,
        me: ClientRunningData,
        delay: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<RunningEvent>) {
        Self::start(coord, path::client_running(dest, client_id), me, delay)
    }

    /// The node this monitor competes for.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A receiver of the current status.
    pub fn status(&self) -> watch::Receiver<RunningStatus> {
        self.status.clone()
    }

    /// The fence while active.
    pub fn fence(&self) -> Option<Fence> {
        match &*self.status.borrow() {
            RunningStatus::Active(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// Whether this monitor owns the node now.
    pub fn is_active(&self) -> bool {
        matches!(*self.status.borrow(), RunningStatus::Active(_))
    }

    /// "May serve now" (see [`Lease`]).
    pub fn may_serve(&self) -> bool {
        self.lease.valid()
    }

    /// A handle on the lease, for the code that answers clients.
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// Gives the node up (admin "release", too many failures): stops serving (`ActiveExit`, with
    /// an [`ExitFlush`] to complete), deletes the node so a standby takes over, and waits `delay`
    /// before competing again. Returns once `ActiveExit` is reported; the node is given up after
    /// the flush (or `delay / 5`).
    ///
    /// # Cancel safety
    /// Cancel safe: the release still happens.
    pub async fn release(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Release(tx, None)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Replaces our data (Canal's client rewrites its node with the `ip:port` of its connection
    /// once connected). While active the node is rewritten at once, compare-and-set on our
    /// version, and the new fence is returned (use it for later fenced writes); otherwise the new
    /// data is used for the next grab.
    ///
    /// # Errors
    /// [`CoordError::BadVersion`] / [`CoordError::NoNode`] when the node changed under us (we
    /// are about to lose it), session and backend errors.
    ///
    /// # Cancel safety
    /// Cancel safe: the rewrite still happens.
    pub async fn rewrite<D: RunningData>(&self, data: D) -> Result<Option<Fence>, CoordError> {
        let (reply, rx) = oneshot::channel();
        let cmd =
            Command::Rewrite { data: data.to_bytes(), address: data.address().to_owned(), reply };
        if self.cmds.send(cmd).is_err() {
            return Err(CoordError::SessionClosed);
        }
        rx.await.unwrap_or(Err(CoordError::SessionClosed))
    }

    /// Stops the monitor: an owner stops serving and deletes the node.
    ///
    /// # Cancel safety
    /// Cancel safe: the stop still happens.
    pub async fn stop(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Dropping a monitor without [`RunningMonitor::stop`] stops its task but leaves an owned node
/// until the session ends.
impl Drop for RunningMonitor {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

struct MonitorLoop<D> {
    coord: Arc<Coordinator>,
    /// The lease's end (see [`Lease`]); `None` while not active.
    expiry: Arc<std::sync::Mutex<Option<Instant>>>,
    /// When the last read of the node was sent (an `ActiveEnter` it confirms leases from then).
    read_issued: Instant,
    path: String,
    /// Our address: a node holding it is ours (Canal compares addresses).
    me_address: String,
    me_bytes: Vec<u8>,
    kind: std::marker::PhantomData<fn() -> D>,
    delay: Duration,
    status: watch::Sender<RunningStatus>,
    events: mpsc::UnboundedSender<RunningEvent>,
    cmds: mpsc::UnboundedReceiver<Command>,
    session: Option<Arc<dyn Session>>,
    active: Option<Fence>,
    /// Until then a missing node is grabbed without waiting `delay`: our own node vanished
    /// while we served it (or our session ended), or our own create is being settled. Bounded,
    /// so that stale knowledge never lets us skip the delay much later.
    at_once_until: Option<Instant>,
    /// The node last read held another owner's release marker: that owner has stopped serving
    /// and is handing over (SIGTERM, or an operator's switch), so when the node goes we compete
    /// at once instead of waiting out a possible blip.
    handover_seen: bool,
    /// We were serving when the session was lost (and have not seen another owner since).
    lost_ownership: bool,
    /// We gave the node up (release or `active:false`) and have not owned it since.
    released: bool,
    /// Nothing read yet: a missing node is grabbed at once.
    fresh: bool,
    /// When to try creating the node.
    grab_at: Option<Instant>,
    /// The epoch node of our running node.
    epoch_path: String,
    /// Our last successful epoch bump, made while the running node was ours at `.running`;
    /// consumed by the next read of the node, which enters if the node is still ours there.
    bumped: Option<Bumped>,
    /// Epoch bumps that failed in a row.
    bump_failures: u32,
    /// When to re-read the node and retry a failed epoch bump.
    recheck_at: Option<Instant>,
    /// Consulted before each create (see [`GrabGate`]).
    gate: Option<Gate>,
    /// When the gate first deferred a grab of the node while it was free; cleared when the node
    /// is seen held, or when we enter.
    deferred_since: Option<Instant>,
    /// The address a release in progress names (an operator's move), for its marker.
    release_to: Option<String>,
    /// The last owner's release named us: the gate is not asked for this grab.
    directed: bool,
}

/// A successful epoch bump.
#[derive(Clone, Copy, Debug)]
struct Bumped {
    /// Version of our running node when we bumped.
    running: Version,
    /// Version of the epoch node our bump wrote.
    epoch: Version,
    /// The epoch (count of activations) our bump wrote.
    number: u64,
}

enum Next {
    Wait,
    Again,
}

/// One activation's epoch bump: reads the epoch node (creating it at 0 when absent), then checks
/// that the running node is still ours at `running` — read after the epoch, so that an owner
/// who grabbed and bumped after us is seen, whatever versions ZooKeeper reuses — and writes
/// the next epoch fenced by both nodes (so it is also a compare-and-set of the epoch). Returns
/// the epoch node's new version and the epoch.
///
/// # Errors
/// [`CoordError::Fenced`] when the running node is no longer ours at `running` or another
/// activation bumped in between; [`CoordError::Backend`] when the epoch node holds something
/// other than a count; session and backend errors.
pub(crate) async fn bump_epoch(
    session: &Arc<dyn Session>,
    running_path: &str,
    running: Version,
    epoch_path: &str,
) -> Result<(Version, u64), CoordError> {
    let current = match session.get(epoch_path).await? {
        Some(n) => n,
        None => {
            match session.create_persistent(epoch_path, b"0").await {
                Ok(_) | Err(CoordError::NodeExists { .. }) => {}
                Err(e) => return Err(e),
            }
            session
                .get(epoch_path)
                .await?
                .ok_or_else(|| CoordError::NoNode { path: epoch_path.to_owned() })?
        }
    };
    let number = std::str::from_utf8(&current.data)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| CoordError::Backend {
            reason: format!(
                "epoch node '{epoch_path}' holds {:?}, not a count of activations",
                String::from_utf8_lossy(&current.data)
            ),
        })?;
    let next = number.checked_add(1).ok_or_else(|| CoordError::Backend {
        reason: format!("epoch node '{epoch_path}' is at its maximum ({number})"),
    })?;
    let ours = session.get(running_path).await?.is_some_and(|n| {
        n.version == running && n.ephemeral_owner.is_none_or(|o| o == session.id())
    });
    if !ours {
        return Err(CoordError::Fenced {
            path: epoch_path.to_owned(),
            fence: running_path.to_owned(),
        });
    }
    let fence = Fence {
        path: running_path.to_owned(),
        version: running,
        epoch_path: epoch_path.to_owned(),
        epoch: current.version,
    };
    let version = session.put_fenced(epoch_path, next.to_string().as_bytes(), &fence).await?;
    Ok((version, next))
}

/// Runs `fut` unless the session leaves `Connected` first (then `None`).
async fn guard<T>(session: &Arc<dyn Session>, fut: impl Future<Output = T>) -> Option<T> {
    let lost = session_lost(session.state_watcher());
    tokio::select! {
        biased;
        _ = lost => None,
        r = fut => Some(r),
    }
}

impl<D: RunningData> MonitorLoop<D> {
    async fn run(mut self) {
        loop {
            let Some(session) = self.ensure_session().await else { return };
            if session.state() != SessionState::Connected {
                self.lose();
                if !self.wait_connected(&session).await {
                    return;
                }
                continue;
            }

            if self.active.is_none()
                && self.grab_at.is_some_and(|t| t <= Instant::now())
                && let Some(wait) = self.gate_defers()
            {
                // Not now: re-read (arming the watch) and ask again later.
                self.grab_at = Some(Instant::now() + wait);
            } else if self.active.is_none() && self.grab_at.is_some_and(|t| t <= Instant::now()) {
                self.grab_at = None;
                // Competing again ends an earlier release.
                self.released = false;
                // Bounded, so that a create decided now cannot take effect much later.
                let create = tokio::time::timeout(
                    self.delay / 2,
                    session.create_ephemeral(&self.path, &self.me_bytes),
                );
                let settle = Some(Instant::now() + self.delay / 2);
                let outcome = guard(&session, create).await;
                if let Some(g) = &self.gate {
                    match &outcome {
                        Some(Ok(Ok(_))) => g.gate.created(true),
                        Some(Ok(Err(e))) if !e.is_indeterminate() => g.gate.created(false),
                        _ => {}
                    }
                }
                match outcome {
                    None => continue,
                    // Created: we become active once the read below, which arms the watch, has
                    // confirmed it, so we never serve without a watch on our node.
                    Some(Ok(Ok(v))) => {
                        tracing::debug!(version = v.0, "created the running node; confirming");
                        self.at_once_until = settle;
                    }
                    Some(Ok(Err(CoordError::NodeExists { .. }))) => {}
                    Some(Ok(Err(e))) if e.is_indeterminate() => {
                        tracing::warn!(error = %e, "create of the running node is indeterminate; re-reading");
                        self.at_once_until = settle;
                    }
                    Some(Err(_)) => {
                        tracing::warn!("create of the running node timed out; re-reading");
                        self.at_once_until = settle;
                    }
                    Some(Ok(Err(e))) if e.is_session_lost() => continue,
                    Some(Ok(Err(e))) => {
                        tracing::warn!(error = %e, "create of the running node failed");
                        self.grab_at = Some(Instant::now() + RETRY);
                    }
                }
            }

            // An owner that cannot confirm its ownership within half the takeover delay stops
            // serving: a standby may take over `delay` after a delete it has not seen yet.
            let limit = self.active.as_ref().map(|_| self.delay / 2);
            // The lease counts from when the confirming read was sent.
            let issued = Instant::now();
            self.read_issued = issued;
            let read = guard(&session, async {
                match limit {
                    Some(l) => {
                        tokio::time::timeout(l, session.get_and_watch(&self.path)).await.ok()
                    }
                    None => Some(session.get_and_watch(&self.path).await),
                }
            });
            let (node, watch) = match read.await {
                None => {
                    self.lose();
                    continue;
                }
                Some(None) => {
                    tracing::warn!("re-reading the running node timed out; stopping (fencing)");
                    self.lose();
                    continue;
                }
                Some(Some(Ok(x))) => x,
                Some(Some(Err(e))) => {
                    // Without a watch we would not see a takeover: stop serving (fencing).
                    self.lose();
                    if !e.is_session_lost() {
                        tracing::warn!(error = %e, "reading the running node failed");
                        if !self.pause(RETRY).await {
                            return;
                        }
                    }
                    continue;
                }
            };
            let next = self.reconcile(&session, node).await;
            if self.active.is_some() {
                self.renew(issued);
            }
            match next {
                Next::Again => continue,
                Next::Wait => {}
            }
            // While active, ownership is re-confirmed every `delay / 6` (renewing the lease).
            let reconfirm_at = self.active.as_ref().map(|_| issued + self.delay / 6);

            let lost = session_lost(session.state_watcher());
            let grab_at = self.grab_at.filter(|_| self.active.is_none());
            let recheck_at = self.recheck_at.take().filter(|_| self.active.is_none());
            tokio::select! {
                biased;
                _ = lost => self.lose(),
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Release(tx, to)) => {
                        self.release_to = to;
                        self.release(&session, tx).await;
                        self.release_to = None;
                    }
                    Some(Command::Rewrite { data, address, reply }) => {
                        let r = self.rewrite(&session, data, address).await;
                        let _ = reply.send(r);
                    }
                    Some(Command::Stop(tx)) => {
                        self.shutdown(&session).await;
                        let _ = tx.send(());
                        return;
                    }
                    None => {
                        self.shutdown(&session).await;
                        return;
                    }
                },
                ev = watch.changed() => {
                    tracing::debug!(event = ?ev, "running node watch fired");
                    if ev == WatchEvent::Deleted && self.active.is_some() {
                        // Stop serving before anything else: a standby may take over after
                        // `delay`, and the re-read below could be slow.
                        tracing::warn!("our running node was deleted");
                        self.exit(ExitReason::Deposed);
                        self.at_once_until = Some(Instant::now() + self.delay);
                    }
                }
                _ = async { tokio::time::sleep_until(grab_at.unwrap_or_else(Instant::now)).await }, if grab_at.is_some() => {}
                _ = async { tokio::time::sleep_until(recheck_at.unwrap_or_else(Instant::now)).await }, if recheck_at.is_some() => {}
                _ = async { tokio::time::sleep_until(reconfirm_at.unwrap_or_else(Instant::now)).await }, if reconfirm_at.is_some() => {}
            }
        }
    }

    /// The live session, or a new one; `None` when stopped while waiting.
    async fn ensure_session(&mut self) -> Option<Arc<dyn Session>> {
        loop {
            if let Some(s) = &self.session {
                if !s.state().is_terminal() {
                    return Some(s.clone());
                }
                self.lose();
                self.session = None;
                // The session ended while we owned the node: as its last owner we re-grab at
                // once, counting from now (a client may learn of its expiry long after it lost
                // the connection).
                if self.lost_ownership {
                    self.at_once_until = Some(Instant::now() + self.delay);
                }
            }
            match self.coord.session().await {
                Ok(s) => {
                    if !self.fresh {
                        tracing::info!(
                            session = s.id(),
                            "rejoining as a candidate on a new session"
                        );
                    }
                    self.session = Some(s.clone());
                    return Some(s);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no coordination session; retrying");
                    if !self.pause(Duration::from_millis(500)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Waits until the session is connected again or ended; false when stopped meanwhile.
    async fn wait_connected(&mut self, session: &Arc<dyn Session>) -> bool {
        let mut st = session.state_watcher();
        loop {
            let s = *st.borrow_and_update();
            if s == SessionState::Connected || s.is_terminal() {
                return true;
            }
            tokio::select! {
                r = st.changed() => if r.is_err() { return true },
                cmd = self.cmds.recv() => if !self.idle_command(cmd) { return false },
            }
        }
    }

    /// Serves a command while not active (waiting for a session or pausing); false when it
    /// stopped the monitor.
    fn idle_command(&mut self, cmd: Option<Command>) -> bool {
        match cmd {
            Some(Command::Release(tx, _)) => {
                self.released = true;
                let _ = tx.send(());
                true
            }
            Some(Command::Rewrite { data, address, reply }) => {
                // Not active here: only the next grab uses it.
                self.me_bytes = data;
                self.me_address = address;
                let _ = reply.send(Ok(None));
                true
            }
            Some(Command::Stop(tx)) => {
                self.set_stopped();
                let _ = tx.send(());
                false
            }
            None => {
                self.set_stopped();
                false
            }
        }
    }

    /// Sleeps, serving commands; false when stopped meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                cmd = self.cmds.recv() => if !self.idle_command(cmd) { return false },
            }
        }
    }

    async fn reconcile(&mut self, session: &Arc<dyn Session>, node: Option<Node>) -> Next {
        let now = Instant::now();
        // A bump counts only for the read that follows it.
        let bumped = self.bumped.take();
        let Some(n) = node else {
            self.bump_failures = 0;
            if self.active.is_some() {
                tracing::warn!("our running node vanished");
                self.exit(ExitReason::Deposed);
                self.at_once_until = Some(now + self.delay);
            }
            if self.grab_at.is_none() {
                let at_once = self.fresh
                    || (!self.released
                        && (self.handover_seen || self.at_once_until.is_some_and(|t| now < t)));
                self.grab_at = Some(if at_once {
                    now
                } else if self.released {
                    // A release hands over: the releasing owner waits `delay` like everyone,
                    // plus a fifth, so that a standby (which tries at `delay`) wins the race.
                    now + self.delay + self.delay / 5
                } else {
                    now + self.delay
                });
            }
            self.fresh = false;
            self.handover_seen = false;
            return if self.grab_at.is_some_and(|t| t <= now) { Next::Again } else { Next::Wait };
        };
        self.fresh = false;
        self.grab_at = None;
        let parsed = D::from_bytes(&n.data);
        if let Err(e) = &parsed {
            tracing::warn!(error = %e, "running node holds unreadable data; treating it as another owner's");
        }
        let addr_me = parsed.as_ref().is_ok_and(|d| d.address() == self.me_address);
        let to = released_to(&n.data);
        self.handover_seen = !addr_me
            && is_released_marker(&n.data)
            && to.as_deref().is_none_or(|t| t == self.me_address);
        // Named by a directed release: take it whatever a balancing gate would say.
        self.directed = !addr_me && to.as_deref() == Some(self.me_address.as_str());
        if !addr_me {
            self.bump_failures = 0;
            if self.active.is_some() {
                tracing::warn!("another owner holds the running node; stopping");
                self.exit(ExitReason::Deposed);
            }
            self.at_once_until = None;
            self.lost_ownership = false;
            self.deferred_since = None;
            // Someone else owns it now: our own release (if any) is over, so a later hand-over
            // by that owner lets us compete at once like any standby.
            self.released = false;
            return Next::Wait;
        }
        let deactivated = parsed.as_ref().is_ok_and(|d| !d.active());
        let owned = n.ephemeral_owner.is_none_or(|o| o == session.id());
        if owned && !deactivated && !self.released {
            match &self.active {
                Some(f) if f.version == n.version => {}
                Some(f) => {
                    // Rewritten with our address and active: still ours, at a new version.
                    let fence = Fence { version: n.version, ..f.clone() };
                    self.active = Some(fence.clone());
                    self.status.send_replace(RunningStatus::Active(fence));
                }
                None => match bumped {
                    // Bumped while the node was ours at this version, and it still is: serve.
                    Some(b) if b.running == n.version => {
                        tracing::info!(
                            epoch = b.number,
                            "the running node holds our address: it is ours"
                        );
                        let fence = Fence {
                            path: self.path.clone(),
                            version: n.version,
                            epoch_path: self.epoch_path.clone(),
                            epoch: b.epoch,
                        };
                        self.enter(fence, b.number);
                    }
                    _ => return self.bump(session, n.version).await,
                },
            }
            return Next::Wait;
        }
        // Our address, but not to keep: deactivated by an operator, released by us (and the
        // delete was lost), or a leftover of an older session of ours.
        if deactivated {
            tracing::info!("operator set active:false on our running node; releasing");
            // Still our node (our address, our session): the final writes use its new version.
            let at = self.active.clone().map(|f| Fence { version: n.version, ..f });
            self.exit_flushed(ExitReason::Deactivated, at, None).await;
            self.released = true;
        } else if self.released {
            self.exit(ExitReason::Released);
        } else {
            self.exit(ExitReason::Deposed);
            self.at_once_until = Some(now + self.delay / 2);
        }
        let version =
            if deactivated { self.announce_release(session, n.version).await } else { n.version };
        match guard(session, session.delete(&self.path, Some(version))).await {
            None => Next::Again,
            Some(Ok(()))
            | Some(Err(CoordError::NoNode { .. }))
            | Some(Err(CoordError::BadVersion { .. })) => Next::Again,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "deleting our running node failed");
                if self.pause(RETRY).await { Next::Again } else { Next::Wait }
            }
        }
    }

    /// Moves the epoch forward while our node is at `running`, before we serve. On success the
    /// node is re-read (`Again`) and we enter if it is still ours at that version; on failure
    /// we retry after [`RETRY`] without serving, and give the node up after
    /// [`MAX_BUMP_FAILURES`] failures in a row.
    async fn bump(&mut self, session: &Arc<dyn Session>, running: Version) -> Next {
        let bump = tokio::time::timeout(
            self.delay / 2,
            bump_epoch(session, &self.path, running, &self.epoch_path),
        );
        let failure = match guard(session, bump).await {
            None => return Next::Again,
            Some(Ok(Ok((epoch, number)))) => {
                tracing::debug!(epoch = number, "bumped the epoch; confirming");
                self.bumped = Some(Bumped { running, epoch, number });
                self.bump_failures = 0;
                return Next::Again;
            }
            Some(Ok(Err(e))) if e.is_session_lost() => return Next::Again,
            Some(Ok(Err(e))) => e.to_string(),
            Some(Err(_)) => format!("timed out after {:?}", self.delay / 2),
        };
        self.bump_failures += 1;
        tracing::warn!(
            error = %failure,
            failures = self.bump_failures,
            "bumping the epoch failed; not serving"
        );
        if self.bump_failures < MAX_BUMP_FAILURES {
            self.recheck_at = Some(Instant::now() + RETRY);
            return Next::Wait;
        }
        tracing::warn!(
            failures = self.bump_failures,
            "cannot bump the epoch; releasing the running node so that a standby can try"
        );
        self.bump_failures = 0;
        self.released = true;
        let version = self.announce_release(session, running).await;
        match guard(session, session.delete(&self.path, Some(version))).await {
            Some(Err(e)) => {
                // Re-read: `reconcile` deletes a node of ours that we released.
                tracing::warn!(error = %e, "releasing the running node failed");
                self.recheck_at = Some(Instant::now() + RETRY);
                Next::Wait
            }
            _ => Next::Again,
        }
    }

    async fn rewrite(
        &mut self,
        session: &Arc<dyn Session>,
        data: Vec<u8>,
        address: String,
    ) -> Result<Option<Fence>, CoordError> {
        let Some(f) = self.active.clone() else {
            self.me_bytes = data;
            self.me_address = address;
            return Ok(None);
        };
        match guard(session, session.put(&self.path, &data, Some(f.version))).await {
            None => Err(CoordError::Unavailable { reason: "session lost during rewrite".into() }),
            Some(Ok(v)) => {
                self.me_bytes = data;
                self.me_address = address;
                let fence = Fence { version: v, ..f };
                self.active = Some(fence.clone());
                self.status.send_replace(RunningStatus::Active(fence.clone()));
                Ok(Some(fence))
            }
            Some(Err(e)) => Err(e),
        }
    }

    /// Answers `reported` once `ActiveExit` is reported (the caller may be the one that reads
    /// the events and completes the flush), then gives the node up.
    async fn release(&mut self, session: &Arc<dyn Session>, reported: oneshot::Sender<()>) {
        self.released = true;
        let mut reported = Some(reported);
        if let Some(f) = self.active.clone() {
            self.exit_flushed(ExitReason::Released, Some(f.clone()), reported.take()).await;
            let version = self.announce_release(session, f.version).await;
            // A lost delete is retried by `reconcile` (our address + released).
            if let Some(Err(e)) = guard(session, session.delete(&f.path, Some(version))).await {
                tracing::warn!(error = %e, "deleting the running node on release failed");
            }
        }
        if let Some(tx) = reported {
            let _ = tx.send(());
        }
    }

    /// After we stopped serving: marks our node released (so standbys that read it compete at
    /// once when it goes, instead of waiting `delay` as after a crash — SIGTERM hands over in
    /// well under a second) and gives their watches a moment to see it. Returns the node's
    /// version for the delete. A standby that misses the marker waits `delay`, which is safe.
    async fn announce_release(&mut self, session: &Arc<dyn Session>, version: Version) -> Version {
        let Some(bytes) = released_marker(&self.me_bytes, self.release_to.as_deref()) else {
            return version;
        };
        match guard(session, session.put(&self.path, &bytes, Some(version))).await {
            Some(Ok(v)) => {
                tokio::time::sleep(HANDOVER_NOTICE.min(self.delay / 5)).await;
                v
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "announcing the release failed");
                version
            }
            None => version,
        }
    }

    async fn shutdown(&mut self, session: &Arc<dyn Session>) {
        let version = match self.active.clone() {
            Some(f) => Some(f.version),
            // Not active, but the node may still be ours (an exit after a slow re-read, or a
            // create whose answer was lost): give it up too.
            None => match guard(session, session.get(&self.path)).await {
                Some(Ok(Some(n)))
                    if n.ephemeral_owner == Some(session.id())
                        && D::from_bytes(&n.data).is_ok_and(|d| d.address() == self.me_address) =>
                {
                    Some(n.version)
                }
                _ => None,
            },
        };
        // No flush hand-shake: whoever stops the monitor has finished with the node (a server
        // writes its queued cursors before it stops the monitor).
        self.exit(ExitReason::Stopped);
        if let Some(v) = version {
            // Stopping is a graceful hand-over too (SIGTERM): let standbys compete at once.
            let v = self.announce_release(session, v).await;
            let _ = guard(session, session.delete(&self.path, Some(v))).await;
        }
        self.set_stopped();
    }

    fn set_stopped(&mut self) {
        self.exit(ExitReason::Stopped);
        self.status.send_replace(RunningStatus::Stopped);
    }

    /// Asks the gate (if any) whether to hold a grab back: `Some(wait)` to ask again after
    /// `wait`. Never once [`Gate::max_defer`] has passed since the first deferral.
    fn gate_defers(&mut self) -> Option<Duration> {
        if self.directed {
            return None;
        }
        let gate = self.gate.as_ref()?;
        let now = Instant::now();
        let since = *self.deferred_since.get_or_insert(now);
        let left = gate.max_defer.saturating_sub(now - since);
        if left.is_zero() {
            tracing::info!(
                deferred = ?(now - since),
                "no other candidate took the free node within the balancing bound; taking it"
            );
            return None;
        }
        match gate.gate.advise() {
            GrabAdvice::Grab => None,
            GrabAdvice::Defer(d) => {
                tracing::debug!(retry = ?d, "leaving the free node to another candidate for now");
                // At least 10 ms between asks, never past the bound (`left` > 0 here, maybe < 10 ms).
                Some(d.max(Duration::from_millis(10)).min(left))
            }
        }
    }

    fn enter(&mut self, fence: Fence, epoch: u64) {
        tracing::info!(version = fence.version.0, epoch, "active: serving");
        self.deferred_since = None;
        self.directed = false;
        self.active = Some(fence.clone());
        self.at_once_until = None;
        self.lost_ownership = false;
        self.released = false;
        self.grab_at = None;
        self.renew(self.read_issued);
        self.status.send_replace(RunningStatus::Active(fence.clone()));
        let _ = self.events.send(RunningEvent::ActiveEnter { fence });
    }

    /// Stops serving because the session (or our view of the node) was lost; we may re-grab at
    /// once for a while, as the last owner that did not release.
    fn lose(&mut self) {
        if self.active.is_some() {
            self.exit(ExitReason::SessionLost);
            self.at_once_until = Some(Instant::now() + self.delay);
            self.lost_ownership = true;
        }
    }

    /// Extends the lease to `delay / 2` after `issued` (see [`Lease`]).
    fn renew(&mut self, issued: Instant) {
        *self.expiry.lock().unwrap_or_else(|p| p.into_inner()) = Some(issued + self.delay / 2);
    }

    fn exit(&mut self, reason: ExitReason) {
        *self.expiry.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if self.active.take().is_some() {
            tracing::info!(?reason, "no longer active: stop serving");
            self.status.send_replace(RunningStatus::Standby);
            let flush = ExitFlush::default();
            // A closed receiver: nobody serves this node any more.
            let _ = self.events.send(RunningEvent::ActiveExit { reason, flush });
        }
    }

    /// A graceful exit while the node is still ours at `fence`: reports `ActiveExit` with an
    /// armed [`ExitFlush`] and waits (at most `delay / 5`) until the consumer has written what
    /// it queued, before the caller marks the node released and deletes it.
    /// `reported` is answered as soon as the event is sent.
    async fn exit_flushed(
        &mut self,
        reason: ExitReason,
        fence: Option<Fence>,
        reported: Option<oneshot::Sender<()>>,
    ) {
        let reported = move || {
            if let Some(tx) = reported {
                // The caller may have stopped waiting.
                let _ = tx.send(());
            }
        };
        *self.expiry.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let Some(fence) = fence else {
            self.exit(reason);
            return reported();
        };
        if self.active.take().is_none() {
            return reported();
        }
        tracing::info!(?reason, "no longer active: stop serving (flushing first)");
        self.status.send_replace(RunningStatus::Standby);
        let (tx, rx) = oneshot::channel();
        let flush = ExitFlush::armed(fence, tx);
        let sent = self.events.send(RunningEvent::ActiveExit { reason, flush }).is_ok();
        reported();
        if !sent {
            return;
        }
        let limit = self.delay / 5;
        let started = Instant::now();
        match tokio::time::timeout(limit, rx).await {
            // Done, or dropped (nothing to flush).
            Ok(_) => tracing::debug!(took = ?started.elapsed(), "final writes done"),
            Err(_) => tracing::warn!(
                "the final writes did not finish within {limit:?}; releasing the node anyway"
            ),
        }
    }
}
