//! Test support (feature `testing`): the conformance suite every backend must pass, written once
//! as generic async fns over a [`Harness`] (Materialize's `consensus_impl_test` style), the
//! harnesses of the three backends, and a fault-injecting backend wrapper.
//!
//! Local runs under paused tokio time with the real 5 s delay and exact assertions; ZooKeeper and
//! etcd run in real time with a shorter delay and windows ([`Harness::slack`]).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::backend::etcd::{EtcdBackend, EtcdSession};
use crate::backend::local::{LocalBackend, LocalSession};
use crate::backend::zk::{ZkBackend, ZkSession};
use crate::coordinator::Coordinator;
use crate::cursor::{CursorError, CursorStore, FlushPolicy};
use crate::data::{RunningData, ServerRunningData};
use crate::error::{CoordError, Result};
use crate::running::{
    ExitReason, Gate, GrabAdvice, GrabGate, HANDOVER_NOTICE, RunningEvent, RunningMonitor,
};
use crate::session::{
    Backend, Fence, Node, Session, SessionId, SessionState, Version, Watch, WatchEvent,
};

/// The standby delay for the real backends: long enough that "at once" (within [`REAL_SLACK`])
/// and "after the delay" stay apart when the machine is loaded (a rejoin once took 709 ms while
/// a compiler shared the two cores, against 500 ms delay / 400 ms slack before).
const REAL_DELAY: Duration = Duration::from_millis(1500);
/// Allowed lateness of timed events on the real backends (less than [`REAL_DELAY`]).
const REAL_SLACK: Duration = Duration::from_millis(1000);

/// What the conformance suite needs from a backend under test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend's name.
    fn name(&self) -> &'static str;
    /// The backend (shared by all sessions of a case).
    fn backend(&self) -> Arc<dyn Backend>;
    /// A path unique to this run and case, under which the case writes.
    fn root(&self, case: &str) -> String {
        unique_root(case)
    }
    /// The takeover delay the monitors use (default: 1.5 s, for the real backends).
    fn delay(&self) -> Duration {
        REAL_DELAY
    }
    /// Allowed lateness of timed events (default: 1 s, for the real backends; zero under paused
    /// time).
    fn slack(&self) -> Duration {
        REAL_SLACK
    }
    /// After a crash, the ephemeral must stay at least `.0` and be gone by `.1`.
    fn expiry_bounds(&self) -> (Duration, Duration);
    /// A session that [`Harness::crash`] can kill without closing.
    async fn open_crashable(&self) -> Arc<dyn Session>;
    /// Kills the session's owner without closing it (heartbeats stop).
    fn crash(&self, s: &Arc<dyn Session>);
    /// Makes the service expire the session now; returns when the session sees it.
    async fn expire(&self, s: &Arc<dyn Session>);
}

static RUN: AtomicU64 = AtomicU64::new(0);

fn unique_root(case: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "/canal-coord-test/{}-{}-{}/{case}",
        std::process::id(),
        nanos,
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// The local backend in memory, for paused-time runs with the real 5 s delay.
#[derive(Debug)]
pub struct LocalHarness {
    backend: LocalBackend,
}

impl LocalHarness {
    /// Session timeout used by crash simulation.
    pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

    /// A fresh in-memory store.
    pub fn new() -> Self {
        LocalHarness { backend: LocalBackend::in_memory(Self::SESSION_TIMEOUT) }
    }
}

impl Default for LocalHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Harness for LocalHarness {
    fn name(&self) -> &'static str {
        "local"
    }
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.backend.clone())
    }
    fn delay(&self) -> Duration {
        crate::running::DEFAULT_DELAY
    }
    fn slack(&self) -> Duration {
        Duration::ZERO
    }
    fn expiry_bounds(&self) -> (Duration, Duration) {
        (Self::SESSION_TIMEOUT, Self::SESSION_TIMEOUT)
    }
    async fn open_crashable(&self) -> Arc<dyn Session> {
        self.backend.session()
    }
    fn crash(&self, s: &Arc<dyn Session>) {
        downcast::<LocalSession>(s).crash();
    }
    async fn expire(&self, s: &Arc<dyn Session>) {
        downcast::<LocalSession>(s).expire();
    }
}

/// A real ZooKeeper server (real time, shorter delay).
#[derive(Debug)]
pub struct ZkHarness {
    backend: ZkBackend,
    timeout: Duration,
}

impl ZkHarness {
    /// Sessions of `session_timeout` on `servers` (`127.0.0.1:PORT`).
    pub fn new(servers: &str, session_timeout: Duration) -> Self {
        ZkHarness { backend: ZkBackend::new(servers, session_timeout), timeout: session_timeout }
    }
}

#[async_trait]
impl Harness for ZkHarness {
    fn name(&self) -> &'static str {
        "zookeeper"
    }
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.backend.clone())
    }
    fn expiry_bounds(&self) -> (Duration, Duration) {
        // The last ping may have been sent up to a third of the timeout before the crash; the
        // server rounds expiry up to its tick.
        (self.timeout / 2, self.timeout + Duration::from_millis(1500))
    }
    async fn open_crashable(&self) -> Arc<dyn Session> {
        self.backend.open_detached_session().await.expect("zookeeper session")
    }
    fn crash(&self, s: &Arc<dyn Session>) {
        downcast::<ZkSession>(s).crash();
    }
    async fn expire(&self, s: &Arc<dyn Session>) {
        downcast::<ZkSession>(s).expire().await.expect("expire zookeeper session");
    }
}

/// A real etcd server (real time, shorter delay).
#[derive(Debug)]
pub struct EtcdHarness {
    backend: EtcdBackend,
    ttl: Duration,
}

impl EtcdHarness {
    /// Leases of `ttl_secs` on `endpoint` (`http://127.0.0.1:PORT`).
    pub fn new(endpoint: &str, ttl_secs: i64) -> Self {
        EtcdHarness {
            backend: EtcdBackend::new(vec![endpoint.to_owned()], ttl_secs, ""),
            ttl: Duration::from_secs(ttl_secs as u64),
        }
    }
}

#[async_trait]
impl Harness for EtcdHarness {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.backend.clone())
    }
    fn expiry_bounds(&self) -> (Duration, Duration) {
        // Renewals happen every ttl/3; etcd checks lease expiry every 500 ms.
        (self.ttl / 2, self.ttl + Duration::from_millis(1500))
    }
    async fn open_crashable(&self) -> Arc<dyn Session> {
        self.backend.open_session().await.expect("etcd session")
    }
    fn crash(&self, s: &Arc<dyn Session>) {
        downcast::<EtcdSession>(s).crash();
    }
    async fn expire(&self, s: &Arc<dyn Session>) {
        downcast::<EtcdSession>(s).expire().await.expect("expire etcd session");
    }
}

fn downcast<T: 'static>(s: &Arc<dyn Session>) -> &T {
    let any: &dyn Any = s.as_any();
    any.downcast_ref::<T>()
        .or_else(|| {
            any.downcast_ref::<FaultSession>().and_then(|f| f.inner.as_any().downcast_ref::<T>())
        })
        .expect("session of the harness's backend")
}

async fn open(h: &impl Harness) -> Arc<dyn Session> {
    h.backend().open_session().await.expect("open session")
}

async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Waits for the next event of a monitor (bounded by 60 s of tokio time).
pub async fn next_event(rx: &mut mpsc::UnboundedReceiver<RunningEvent>) -> RunningEvent {
    within(Duration::from_secs(60), "a running event", rx.recv()).await.expect("monitor alive")
}

async fn expect_enter(rx: &mut mpsc::UnboundedReceiver<RunningEvent>) -> Fence {
    match next_event(rx).await {
        RunningEvent::ActiveEnter { fence } => fence,
        other => panic!("expected ActiveEnter, got {other:?}"),
    }
}

async fn expect_exit(rx: &mut mpsc::UnboundedReceiver<RunningEvent>) -> ExitReason {
    match next_event(rx).await {
        RunningEvent::ActiveExit { reason, .. } => reason,
        other => panic!("expected ActiveExit, got {other:?}"),
    }
}

/// Asserts `elapsed` is within `[lo, lo + slack]` (exact under paused time).
fn assert_at(h: &impl Harness, what: &str, elapsed: Duration, lo: Duration) {
    eprintln!("{} {what}: {elapsed:?} (expected {lo:?} +{:?})", h.name(), h.slack());
    assert!(
        elapsed >= lo && elapsed <= lo + h.slack(),
        "{} {what}: took {elapsed:?}, expected {lo:?} (+{:?})",
        h.name(),
        h.slack()
    );
}

/// No event for `d` (a standby stays standby).
async fn quiet(rx: &mut mpsc::UnboundedReceiver<RunningEvent>, d: Duration) {
    if let Ok(Some(ev)) = tokio::time::timeout(d, rx.recv()).await {
        panic!("unexpected event {ev:?}");
    }
}

const SERVER_A: &[u8] = br#"{"active":true,"address":"10.20.144.51:11111","cid":1}"#;

fn monitor(
    h: &impl Harness,
    path: &str,
    addr: &str,
) -> (Arc<Coordinator>, RunningMonitor, mpsc::UnboundedReceiver<RunningEvent>) {
    let coord = Coordinator::new(h.backend());
    let (m, rx) = RunningMonitor::start(
        coord.clone(),
        path.to_owned(),
        ServerRunningData::new(addr),
        h.delay(),
    );
    (coord, m, rx)
}

/// An ephemeral node belongs to one session; its bytes come back exactly.
pub async fn ephemeral_exclusive(h: &impl Harness) {
    let p = format!("{}/running", h.root("ephemeral_exclusive"));
    let (a, b) = (open(h).await, open(h).await);
    let v = a.create_ephemeral(&p, SERVER_A).await.unwrap();
    assert!(matches!(b.create_ephemeral(&p, b"x").await, Err(CoordError::NodeExists { .. })));
    assert!(matches!(a.create_ephemeral(&p, b"x").await, Err(CoordError::NodeExists { .. })));
    let n = b.get(&p).await.unwrap().expect("node");
    assert_eq!(n.data, SERVER_A);
    assert_eq!(n.version, v);
    assert_eq!(n.ephemeral_owner, Some(a.id()));
    a.close().await;
    b.close().await;
}

/// Closing a session removes its ephemerals at once and fires watches.
pub async fn close_removes_promptly(h: &impl Harness) {
    let p = format!("{}/running", h.root("close_removes_promptly"));
    let (a, b) = (open(h).await, open(h).await);
    a.create_ephemeral(&p, SERVER_A).await.unwrap();
    let (n, w) = b.get_and_watch(&p).await.unwrap();
    assert!(n.is_some());
    let t0 = Instant::now();
    a.close().await;
    assert_eq!(
        within(Duration::from_secs(5), "delete watch", w.changed()).await,
        WatchEvent::Deleted
    );
    assert_at(h, "close → delete", t0.elapsed(), Duration::ZERO);
    assert_eq!(b.get(&p).await.unwrap(), None);
    assert!(a.get(&p).await.is_err(), "a closed session must refuse operations");
    b.close().await;
}

/// A crash without close removes the ephemeral within the expiry bound, and not before.
pub async fn crash_expires_within_bound(h: &impl Harness) {
    let p = format!("{}/running", h.root("crash_expires"));
    let a = h.open_crashable().await;
    let b = open(h).await;
    a.create_ephemeral(&p, SERVER_A).await.unwrap();
    let (_, w) = b.get_and_watch(&p).await.unwrap();
    let (lo, hi) = h.expiry_bounds();
    let t0 = Instant::now();
    h.crash(&a);
    drop(a);
    let early = lo.saturating_sub(Duration::from_millis(1));
    tokio::time::sleep(early).await;
    assert!(b.get(&p).await.unwrap().is_some(), "{}: ephemeral gone before {lo:?}", h.name());
    let ev = within(hi, "expiry", w.changed()).await;
    let took = t0.elapsed();
    eprintln!("{} crash → ephemeral gone: {took:?} (bounds {lo:?}..{hi:?})", h.name());
    assert_eq!(ev, WatchEvent::Deleted);
    assert!(took >= lo && took <= hi, "{}: expiry after {took:?}, bounds {lo:?}..{hi:?}", h.name());
    b.close().await;
}

/// Persistent nodes outlive their creator's session.
pub async fn durable_nodes_survive(h: &impl Harness) {
    let p = format!("{}/example/1001/cursor", h.root("durable"));
    let a = open(h).await;
    a.create_persistent(&p, b"{\"cursor\":1}").await.unwrap();
    a.close().await;
    let b = open(h).await;
    let n = b.get(&p).await.unwrap().expect("durable node");
    assert_eq!(n.data, b"{\"cursor\":1}");
    assert_eq!(n.ephemeral_owner, None);
    assert!(matches!(b.create_persistent(&p, b"").await, Err(CoordError::NodeExists { .. })));
    b.close().await;
}

/// Compare-and-set and versioned delete.
pub async fn compare_and_set(h: &impl Harness) {
    let p = format!("{}/node", h.root("cas"));
    let s = open(h).await;
    assert!(matches!(s.put(&p, b"x", None).await, Err(CoordError::NoNode { .. })));
    let v0 = s.create_persistent(&p, b"0").await.unwrap();
    let v1 = s.put(&p, b"1", Some(v0)).await.unwrap();
    assert_ne!(v0, v1);
    assert!(matches!(s.put(&p, b"2", Some(v0)).await, Err(CoordError::BadVersion { .. })));
    assert_eq!(s.get(&p).await.unwrap().unwrap().data, b"1");
    let v2 = s.put(&p, b"2", None).await.unwrap();
    assert!(matches!(s.delete(&p, Some(v1)).await, Err(CoordError::BadVersion { .. })));
    s.delete(&p, Some(v2)).await.unwrap();
    assert!(matches!(s.delete(&p, None).await, Err(CoordError::NoNode { .. })));
    s.close().await;
}

/// Children lists never show ephemerals of expired sessions.
pub async fn children_exclude_expired(h: &impl Harness) {
    let root = h.root("children");
    let (a, b) = (open(h).await, open(h).await);
    a.create_ephemeral(&format!("{root}/10.0.0.1:11111"), b"").await.unwrap();
    b.create_ephemeral(&format!("{root}/10.0.0.2:11111"), b"").await.unwrap();
    b.create_persistent(&format!("{root}/1001"), b"").await.unwrap();
    assert_eq!(b.children(&root).await.unwrap(), ["10.0.0.1:11111", "10.0.0.2:11111", "1001"]);
    h.expire(&a).await;
    assert!(a.state().is_terminal());
    assert_eq!(b.children(&root).await.unwrap(), ["10.0.0.2:11111", "1001"]);
    assert!(b.children(&format!("{root}/absent")).await.unwrap().is_empty());
    b.close().await;
}

/// One-shot watches report create, change and delete in order, and children changes.
pub async fn watch_event_order(h: &impl Harness) {
    let root = h.root("watch_order");
    let p = format!("{root}/running");
    let (w_s, m) = (open(h).await, open(h).await);
    let (n, w) = w_s.get_and_watch(&p).await.unwrap();
    assert_eq!(n, None);
    m.create_persistent(&p, b"1").await.unwrap();
    assert_eq!(within(Duration::from_secs(5), "created", w.changed()).await, WatchEvent::Created);
    let (n, w) = w_s.get_and_watch(&p).await.unwrap();
    assert_eq!(n.unwrap().data, b"1");
    m.put(&p, b"2", None).await.unwrap();
    assert_eq!(
        within(Duration::from_secs(5), "changed", w.changed()).await,
        WatchEvent::DataChanged
    );
    let (n, w) = w_s.get_and_watch(&p).await.unwrap();
    assert_eq!(n.unwrap().data, b"2", "a read after the event sees the change");
    m.delete(&p, None).await.unwrap();
    assert_eq!(within(Duration::from_secs(5), "deleted", w.changed()).await, WatchEvent::Deleted);

    let (c, w) = w_s.children_and_watch(&root).await.unwrap();
    assert!(c.is_empty(), "{c:?}");
    m.create_ephemeral(&format!("{root}/child"), b"").await.unwrap();
    let ev = within(Duration::from_secs(5), "children", w.changed()).await;
    assert!(matches!(ev, WatchEvent::ChildrenChanged | WatchEvent::Created), "{ev:?}");
    assert_eq!(w_s.children(&root).await.unwrap(), ["child"]);
    let (_, w) = w_s.children_and_watch(&root).await.unwrap();
    m.close().await;
    assert_eq!(
        within(Duration::from_secs(5), "child gone", w.changed()).await,
        WatchEvent::ChildrenChanged
    );
    let (_, w) = w_s.get_and_watch(&p).await.unwrap();
    w_s.close().await;
    assert!(matches!(
        within(Duration::from_secs(5), "session lost", w.changed()).await,
        WatchEvent::SessionLost(_)
    ));
}

/// A running node that vanishes without a hand-over (its owner crashed, or a blip deleted it)
/// is taken over by a standby no earlier than `delay` after the delete.
pub async fn standby_takes_over_after_delay(h: &impl Harness) {
    let p = format!("{}/running", h.root("takeover"));
    let owner = open(h).await;
    owner.create_ephemeral(&p, SERVER_A).await.unwrap();
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    quiet(&mut rb, h.delay() * 2).await;
    let t0 = Instant::now();
    owner.delete(&p, None).await.unwrap();
    let fence = expect_enter(&mut rb).await;
    assert_at(h, "standby takeover", t0.elapsed(), h.delay());
    assert_eq!(mb.fence(), Some(fence));
    mb.stop().await;
    owner.close().await;
}

/// A graceful stop (SIGTERM) marks the node released before deleting it, so a standby takes
/// over at once instead of waiting `delay`.
pub async fn graceful_stop_hands_over_at_once(h: &impl Harness) {
    let p = format!("{}/running", h.root("graceful"));
    let (_ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    quiet(&mut rb, h.delay() / 5).await;
    let t0 = Instant::now();
    ma.stop().await;
    assert_eq!(expect_exit(&mut ra).await, ExitReason::Stopped);
    expect_enter(&mut rb).await;
    assert_at(
        h,
        "takeover after a graceful stop",
        t0.elapsed(),
        (h.delay() / 5).min(Duration::from_millis(200)),
    );
    mb.stop().await;
}

/// The last owner re-grabs at once when its node is deleted under it.
pub async fn last_owner_regrabs_at_once(h: &impl Harness) {
    let p = format!("{}/running", h.root("regrab"));
    let (_ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    tokio::time::sleep(h.delay() / 5).await;
    let op = open(h).await;
    let t0 = Instant::now();
    op.delete(&p, None).await.unwrap();
    assert_eq!(expect_exit(&mut ra).await, ExitReason::Deposed);
    expect_enter(&mut ra).await;
    assert_at(h, "last owner re-grab", t0.elapsed(), Duration::ZERO);
    quiet(&mut rb, h.delay() * 2).await;
    let n = op.get(&p).await.unwrap().unwrap();
    assert_eq!(ServerRunningData::from_bytes(&n.data).unwrap().address, "10.0.0.1:11111");
    ma.stop().await;
    mb.stop().await;
    op.close().await;
}

/// An operator's `active:false` makes the owner release; a standby that saw the switch takes
/// over as soon as the node is gone (Java standbys wait `delay`; both are safe because the owner
/// stops serving before it deletes).
pub async fn active_false_hands_over(h: &impl Harness) {
    let p = format!("{}/running", h.root("active_false"));
    let (_ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    tokio::time::sleep(h.delay() / 5).await;
    let op = open(h).await;
    let t0 = Instant::now();
    op.put(&p, br#"{"active":false,"address":"10.0.0.1:11111"}"#, None).await.unwrap();
    assert_eq!(expect_exit(&mut ra).await, ExitReason::Deactivated);
    assert_at(h, "release on active:false", t0.elapsed(), Duration::ZERO);
    expect_enter(&mut rb).await;
    assert_at(
        h,
        "handover after active:false",
        t0.elapsed(),
        (h.delay() / 5).min(Duration::from_millis(200)),
    );
    quiet(&mut ra, h.delay() * 2).await;
    assert!(!ma.is_active());
    ma.stop().await;
    mb.stop().await;
    op.close().await;
}

/// `release()` (SIGTERM) announces `active:false`, deletes the node, and a standby takes over at
/// once; the releasing server does not compete again before `delay`.
pub async fn release_hands_over(h: &impl Harness) {
    let p = format!("{}/running", h.root("release"));
    let (_ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    tokio::time::sleep(h.delay() / 5).await;
    let t0 = Instant::now();
    ma.release().await;
    assert_eq!(expect_exit(&mut ra).await, ExitReason::Released);
    expect_enter(&mut rb).await;
    assert_at(
        h,
        "handover after release",
        t0.elapsed(),
        (h.delay() / 5).min(Duration::from_millis(200)),
    );
    ma.stop().await;
    mb.stop().await;
}

/// A directed release (an operator's move) goes to the named candidate at once, even past a
/// balancing gate that would defer; another standby waits `delay` and finds it held.
pub async fn directed_release_goes_to_the_named_candidate(h: &impl Harness) {
    let p = format!("{}/running", h.root("directed"));
    let (_ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    let defer = GrabAdvice::Defer(Duration::from_millis(50));
    let (mc, mut rc, _) = gated(h, &p, "10.0.0.3:11111", defer, h.delay() * 4);
    tokio::time::sleep(h.delay() / 5).await;
    let t0 = Instant::now();
    assert!(ma.handle().release_to("10.0.0.3:11111").await);
    assert_eq!(expect_exit(&mut ra).await, ExitReason::Released);
    expect_enter(&mut rc).await;
    assert_at(
        h,
        "directed hand-over",
        t0.elapsed(),
        (h.delay() / 5).min(Duration::from_millis(200)),
    );
    quiet(&mut rb, h.delay() * 2).await;
    assert!(!mb.is_active());
    ma.stop().await;
    mb.stop().await;
    mc.stop().await;
}

/// A gate that always gives the same advice, counting how often it was asked.
#[derive(Debug)]
struct FixedGate(GrabAdvice, AtomicU64);

impl GrabGate for FixedGate {
    fn advise(&self) -> GrabAdvice {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0
    }
}

fn gated(
    h: &impl Harness,
    path: &str,
    addr: &str,
    advice: GrabAdvice,
    max_defer: Duration,
) -> (RunningMonitor, mpsc::UnboundedReceiver<RunningEvent>, Arc<FixedGate>) {
    let gate = Arc::new(FixedGate(advice, AtomicU64::new(0)));
    let (m, rx) = RunningMonitor::start_gated(
        Coordinator::new(h.backend()),
        path.to_owned(),
        ServerRunningData::new(addr),
        h.delay(),
        Some(Gate { gate: gate.clone(), max_defer }),
    );
    (m, rx, gate)
}

/// A balancing gate only delays a grab: a free node whose only candidate's gate keeps deferring
/// is taken by that candidate once `max_defer` has passed — never left free.
pub async fn gate_never_leaves_the_node_free(h: &impl Harness) {
    let p = format!("{}/running", h.root("gate_bound"));
    // Not a multiple of the gate's retry: the last wait is shorter than the 10 ms minimum
    // between asks (it must end at the bound, not panic or overshoot).
    let max_defer = h.delay() + Duration::from_millis(5);
    let t0 = Instant::now();
    let (m, mut rx, gate) =
        gated(h, &p, "10.0.0.1:11111", GrabAdvice::Defer(Duration::from_millis(100)), max_defer);
    expect_enter(&mut rx).await;
    assert_at(h, "grab despite a deferring gate", t0.elapsed(), max_defer);
    assert!(gate.1.load(Ordering::Relaxed) >= 2, "the gate was asked");
    m.stop().await;
}

/// A hand-over goes to the candidate whose gate says grab; the one whose gate defers stays
/// standby while the node is held, and its deferral bound restarts with each free spell.
pub async fn gate_defers_to_another_candidate(h: &impl Harness) {
    let p = format!("{}/running", h.root("gate_defer"));
    let (_ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    let defer = GrabAdvice::Defer(Duration::from_millis(50));
    let (mb, mut rb, _) = gated(h, &p, "10.0.0.2:11111", defer, h.delay() * 2);
    let (mc, mut rc, _) = gated(h, &p, "10.0.0.3:11111", GrabAdvice::Grab, h.delay() * 2);
    tokio::time::sleep(h.delay() / 5).await;
    let t0 = Instant::now();
    ma.stop().await;
    expect_enter(&mut rc).await;
    assert_at(
        h,
        "handover to the grabbing candidate",
        t0.elapsed(),
        (h.delay() / 5).min(Duration::from_millis(200)),
    );
    quiet(&mut rb, h.delay() * 3).await;
    assert!(!mb.is_active());
    // The holder goes away: the deferring candidate is the only one left and takes the node
    // within its bound (a graceful stop's notice, then `max_defer` of deferring).
    let t1 = Instant::now();
    mc.stop().await;
    expect_enter(&mut rb).await;
    let notice = (h.delay() / 5).min(Duration::from_millis(200));
    assert_at(h, "takeover by the deferring candidate", t1.elapsed(), notice + h.delay() * 2);
    mb.stop().await;
}

/// The owner's lease ("may serve now"): valid while active, kept valid by the monitor's
/// re-confirming reads (it lasts only `delay / 2` from each), void at once on an exit, and
/// never valid for a standby.
pub async fn lease_follows_ownership(h: &impl Harness) {
    let p = format!("{}/running", h.root("lease"));
    let (_ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    // The standby starts once A owns the node: started together, either may win the create.
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    let lease = ma.lease();
    assert!(ma.may_serve() && lease.valid(), "the new owner may serve");
    assert!(!mb.may_serve(), "a standby never may serve");
    // Well past `delay / 2`: the re-confirming reads renewed the lease all along.
    let until = Instant::now() + h.delay() * 2;
    while Instant::now() < until {
        assert!(lease.valid(), "lease lapsed while the owner was confirming its node");
        tokio::time::sleep(h.delay() / 20).await;
    }
    ma.release().await;
    assert!(!lease.valid(), "released: no longer may serve");
    assert_eq!(expect_exit(&mut ra).await, ExitReason::Released);
    expect_enter(&mut rb).await;
    assert!(mb.may_serve() && !lease.valid());
    ma.stop().await;
    mb.stop().await;
}

/// "Flush before you let go": a graceful exit (`release()`, an operator's `active:false`)
/// reports `ActiveExit` with an armed [`crate::ExitFlush`] and keeps the node until it is done.
/// Meanwhile writes under its fence succeed (after `active:false`, at the operator's version,
/// where the activation's own fence is already refused) and no standby enters; `done` hands
/// over at once; a flush that never completes is given up after `delay / 5`.
pub async fn graceful_exit_flushes_first(h: &impl Harness) {
    let root = h.root("exit_flush");
    let p = format!("{root}/running");
    let cursor = format!("{root}/1001/cursor");
    let (ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    let (cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    quiet(&mut rb, h.delay() / 5).await;
    let exit_flush = |ev: RunningEvent, want: ExitReason| match ev {
        RunningEvent::ActiveExit { reason, flush } if reason == want => {
            let fence = flush.fence().expect("a graceful exit hands out a fence").clone();
            (flush, fence)
        }
        other => panic!("expected ActiveExit({want:?}) with a flush, got {other:?}"),
    };

    // Release: the node stays ours until the flush is done.
    ma.release().await;
    let (flush, fa) = exit_flush(next_event(&mut ra).await, ExitReason::Released);
    let sa = ca.session().await.unwrap();
    sa.put_fenced(&cursor, b"1", &fa).await.expect("written under the still-valid fence");
    quiet(&mut rb, h.delay() / 10).await;
    let t0 = Instant::now();
    flush.done();
    let fb = expect_enter(&mut rb).await;
    assert_at(h, "handover after the flush", t0.elapsed(), HANDOVER_NOTICE.min(h.delay() / 5));
    assert!(matches!(sa.put_fenced(&cursor, b"2", &fa).await, Err(CoordError::Fenced { .. })));

    // active:false: the fence handed out is the operator's version; a flush never completed is
    // given up after `delay / 5`.
    let op = open(h).await;
    let t0 = Instant::now();
    op.put(&p, br#"{"active":false,"address":"10.0.0.2:11111"}"#, None).await.unwrap();
    let (flush, fb2) = exit_flush(next_event(&mut rb).await, ExitReason::Deactivated);
    let sb = cb.session().await.unwrap();
    assert!(matches!(sb.put_fenced(&cursor, b"3", &fb).await, Err(CoordError::Fenced { .. })));
    sb.put_fenced(&cursor, b"3", &fb2).await.expect("written at the operator's version");
    expect_enter(&mut ra).await;
    assert_at(
        h,
        "handover after an unfinished flush",
        t0.elapsed(),
        h.delay() / 5 + HANDOVER_NOTICE.min(h.delay() / 5),
    );
    drop(flush);
    assert_eq!(op.get(&cursor).await.unwrap().unwrap().data, b"3");
    ma.stop().await;
    mb.stop().await;
    op.close().await;
}

/// When the owner's session expires it stops serving at once (fencing), and rejoins on a new
/// session; as the last owner that did not release, it re-grabs at once.
pub async fn owner_session_expiry_fences(h: &impl Harness) {
    let p = format!("{}/running", h.root("expiry_fences"));
    let (ca, ma, mut ra) = monitor(h, &p, "10.0.0.1:11111");
    expect_enter(&mut ra).await;
    // The standby waits longer than a real client needs to notice its expiry, so that the old
    // owner's immediate re-grab is what the case observes.
    let cb = Coordinator::new(h.backend());
    let (mb, mut rb) = RunningMonitor::start(
        cb,
        p.clone(),
        ServerRunningData::new("10.0.0.2:11111"),
        h.delay() * 6,
    );
    tokio::time::sleep(h.delay() / 5).await;
    let old = ca.session().await.unwrap();
    h.expire(&old).await;
    let t0 = Instant::now();
    // The node may vanish (Deposed) before the client sees its expiry (SessionLost).
    let reason = expect_exit(&mut ra).await;
    assert!(matches!(reason, ExitReason::SessionLost | ExitReason::Deposed), "{reason:?}");
    assert_at(h, "fencing on expiry", t0.elapsed(), Duration::ZERO);
    // Rejoin: on a new session, and as the last owner, at once.
    let obs = open(h).await;
    let mut last_exit = Instant::now();
    loop {
        match next_event(&mut ra).await {
            RunningEvent::ActiveEnter { .. } => {
                // (ZooKeeper: the old client may briefly win its session back before the steal
                // closes it; wait for the grab on the new session.)
                let owner = obs.get(&p).await.unwrap().and_then(|n| n.ephemeral_owner);
                if owner.is_some_and(|o| o != old.id()) {
                    break;
                }
            }
            RunningEvent::ActiveExit { .. } => last_exit = Instant::now(),
        }
    }
    // Measured from the last exit: a ZooKeeper client may win its stolen session back once
    // before it sees the expiry.
    assert_at(h, "last owner rejoins", last_exit.elapsed(), Duration::ZERO);
    let new = ca.session().await.unwrap();
    assert_ne!(new.id(), old.id(), "rejoined on a new session");
    assert_eq!(obs.get(&p).await.unwrap().unwrap().ephemeral_owner, Some(new.id()));
    quiet(&mut rb, h.delay() * 2).await;
    assert!(!mb.is_active());
    ma.stop().await;
    mb.stop().await;
    obs.close().await;
}

/// Hands out one pre-opened session first (e.g. a crashable one), then fresh sessions.
#[derive(Debug)]
struct Preopened {
    first: Mutex<Option<Arc<dyn Session>>>,
    inner: Arc<dyn Backend>,
}

#[async_trait]
impl Backend for Preopened {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn open_session(&self) -> Result<Arc<dyn Session>> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        match first {
            Some(s) => Ok(s),
            None => self.inner.open_session().await,
        }
    }
}

/// The owner's process dies without closing its session: a standby takes over once the
/// session has expired and `delay` has passed (Canal's failover), not before.
pub async fn owner_crash_takeover(h: &impl Harness) {
    let p = format!("{}/running", h.root("crash_takeover"));
    let crashable = h.open_crashable().await;
    let ca = Coordinator::new(Arc::new(Preopened {
        first: Mutex::new(Some(crashable.clone())),
        inner: h.backend(),
    }));
    let (ma, mut ra) =
        RunningMonitor::start(ca, p.clone(), ServerRunningData::new("10.0.0.1:11111"), h.delay());
    expect_enter(&mut ra).await;
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    tokio::time::sleep(h.delay() / 5).await;
    let t0 = Instant::now();
    // The process dies: its monitor stops running and its session stops heartbeating.
    drop(ma);
    h.crash(&crashable);
    drop(crashable);
    let (lo, hi) = h.expiry_bounds();
    let fence = expect_enter(&mut rb).await;
    let took = t0.elapsed();
    eprintln!(
        "{} crash → standby active: {took:?} (bounds {:?}..{:?})",
        h.name(),
        lo + h.delay(),
        hi + h.delay()
    );
    assert!(
        took >= lo + h.delay() && took <= hi + h.delay() + h.slack(),
        "{}: takeover after {took:?}",
        h.name()
    );
    assert_eq!(mb.fence(), Some(fence));
    mb.stop().await;
}

/// An indeterminate create (applied or not) never waits `delay` for our own node and never
/// yields two owners.
pub async fn indeterminate_create(h: &impl Harness) {
    for fault in [Fault::AppliedButTimeout, Fault::TimeoutNotApplied] {
        let p = format!("{}/running", h.root("indeterminate"));
        let faulty = FaultBackend::scripted(h.backend(), [(Op::CreateEphemeral, fault)]);
        let coord = Coordinator::new(Arc::new(faulty));
        let t0 = Instant::now();
        let (ma, mut ra) = RunningMonitor::start(
            coord,
            p.clone(),
            ServerRunningData::new("10.0.0.1:11111"),
            h.delay(),
        );
        let fence = expect_enter(&mut ra).await;
        assert_at(h, "settling an indeterminate create", t0.elapsed(), Duration::ZERO);
        let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
        quiet(&mut rb, h.delay() * 2).await;
        assert_eq!(ma.fence(), Some(fence.clone()));
        let n = open(h).await;
        let node = n.get(&p).await.unwrap().unwrap();
        assert_eq!(node.version, fence.version);
        assert_eq!(node.data, ServerRunningData::new("10.0.0.1:11111").to_bytes());
        ma.stop().await;
        expect_enter(&mut rb).await;
        mb.stop().await;
        n.close().await;
    }
}

/// Takes the running node as a monitor does: creates it, bumps the epoch, returns the fence.
pub async fn take_running(s: &Arc<dyn Session>, running: &str, data: &[u8]) -> Fence {
    let version = s.create_ephemeral(running, data).await.unwrap();
    let epoch_path = crate::path::running_epoch(running);
    let (epoch, _) =
        crate::running::bump_epoch(s, running, version, &epoch_path).await.expect("bump epoch");
    Fence { path: running.to_owned(), version, epoch_path, epoch }
}

/// Cursor writes by a server that lost the running node are refused, not applied; cursors
/// never move backwards. On ZooKeeper a re-created running node starts again at version 0, so
/// the epoch is what refuses the old owner there.
pub async fn fenced_cursor_writes(h: &impl Harness) {
    let root = h.root("fenced");
    let running = format!("{root}/running");
    let cursor = format!("{root}/1001/cursor");
    let a = open(h).await;
    let op = open(h).await;
    let fa = take_running(&a, &running, SERVER_A).await;
    a.put_fenced(&cursor, b"1", &fa).await.unwrap();
    a.put_fenced(&cursor, b"2", &fa).await.unwrap();
    assert_eq!(op.get(&cursor).await.unwrap().unwrap().data, b"2");
    // An operator rewrites the running node: the old fence no longer holds.
    op.put(&running, br#"{"active":false,"address":"10.20.144.51:11111"}"#, None).await.unwrap();
    assert!(matches!(a.put_fenced(&cursor, b"3", &fa).await, Err(CoordError::Fenced { .. })));
    assert!(matches!(a.delete_fenced(&cursor, &fa).await, Err(CoordError::Fenced { .. })));
    assert_eq!(op.get(&cursor).await.unwrap().unwrap().data, b"2");
    // The owner's session expires and another server takes over.
    h.expire(&a).await;
    let b = open(h).await;
    let fb = take_running(&b, &running, b"{\"active\":true,\"address\":\"b:1\"}").await;
    let r = a.put_fenced(&cursor, b"4", &fa).await;
    assert!(matches!(r, Err(CoordError::Fenced { .. } | CoordError::SessionExpired)), "{r:?}");
    // The old owner on a new session: the fence is what refuses it.
    let a2 = open(h).await;
    let r = a2.put_fenced(&cursor, b"4", &fa).await;
    assert!(matches!(r, Err(CoordError::Fenced { .. })), "{r:?}");
    assert_eq!(op.get(&cursor).await.unwrap().unwrap().data, b"2");
    b.put_fenced(&cursor, b"5", &fb).await.unwrap();
    // Deleted and re-created by someone else while the old owner's session is alive. ZooKeeper
    // gives the new node the old one's version: only the epoch tells them apart.
    b.delete(&running, None).await.unwrap();
    let c = open(h).await;
    let fc = take_running(&c, &running, b"{\"active\":true,\"address\":\"c:1\"}").await;
    eprintln!("{}: running node versions {:?} then {:?}", h.name(), fb.version, fc.version);
    let r = b.put_fenced(&cursor, b"6", &fb).await;
    assert!(matches!(r, Err(CoordError::Fenced { .. })), "{r:?}");
    let r = b.delete_fenced(&cursor, &fb).await;
    assert!(matches!(r, Err(CoordError::Fenced { .. })), "{r:?}");
    assert_eq!(op.get(&cursor).await.unwrap().unwrap().data, b"5");
    // The current owner deletes under its fence; a second delete finds nothing.
    c.delete_fenced(&cursor, &fc).await.unwrap();
    assert_eq!(op.get(&cursor).await.unwrap(), None);
    assert!(matches!(c.delete_fenced(&cursor, &fc).await, Err(CoordError::NoNode { .. })));
    c.put_fenced(&cursor, b"5", &fc).await.unwrap();
    c.close().await;
    a2.close().await;
    b.close().await;

    // Through the cursor store: ordering by the caller's comparison, fencing by the monitor.
    let coord = Coordinator::new(h.backend());
    // A destination name unique to this run (its nodes live in Canal's real layout).
    let dest = h.root("fenced_store").trim_start_matches("/canal-coord-test/").replace('/', "-");
    let running = crate::path::server_running(&dest);
    let (m, mut rx) = RunningMonitor::start(
        coord.clone(),
        running.clone(),
        ServerRunningData::new("10.0.0.9:11111"),
        h.delay(),
    );
    let fence = expect_enter(&mut rx).await;
    let store = CursorStore::new(coord.clone(), FlushPolicy::EveryAck, |cur: &[u8], new: &[u8]| {
        let n = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
        Some(n(cur)?.cmp(&n(new)?))
    });
    store.update(&dest, 1001, b"10".to_vec(), &fence).await.unwrap();
    assert!(matches!(
        store.update(&dest, 1001, b"9".to_vec(), &fence).await,
        Err(CursorError::Backwards { .. })
    ));
    store.update(&dest, 1001, b"11".to_vec(), &fence).await.unwrap();
    m.stop().await;
    let r = store.update(&dest, 1001, b"12".to_vec(), &fence).await;
    assert!(matches!(r, Err(CursorError::Coord(CoordError::Fenced { .. }))), "{r:?}");
    let s = open(h).await;
    assert_eq!(s.get(&crate::path::client_cursor(&dest, 1001)).await.unwrap().unwrap().data, b"11");
    s.close().await;
    coord.close().await;
    op.close().await;
}

/// How the owner loses the destination in [`stale_owner_refused`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deposal {
    /// An operator writes `active:false` into its running node.
    ActiveFalse,
    /// It releases the node (SIGTERM, admin release).
    Release,
    /// Its session expires (its process is paused, so it does not rejoin).
    Expiry,
}

/// A deposed owner can neither move nor delete a cursor once a standby has taken over: its
/// fenced write and delete, sent on its coordinator's session (a new one after an expiry), are
/// refused, and the new owner's succeed. On ZooKeeper the new owner's running node has the same
/// version as the old one's (both re-created at 0), so there the epoch is what refuses.
async fn stale_owner_refused(h: &impl Harness, how: Deposal) {
    let root = h.root(&format!("stale_owner_{how:?}"));
    let running = format!("{root}/running");
    let cursor = format!("{root}/1001/cursor");
    let (ca, ma, mut ra) = monitor(h, &running, "10.0.0.1:11111");
    let fa = expect_enter(&mut ra).await;
    ca.session().await.unwrap().put_fenced(&cursor, b"1", &fa).await.unwrap();
    let (cb, mb, mut rb) = monitor(h, &running, "10.0.0.2:11111");
    quiet(&mut rb, h.delay() / 5).await;
    let op = open(h).await;
    let mut ma = Some(ma);
    match how {
        Deposal::ActiveFalse => {
            op.put(&running, br#"{"active":false,"address":"10.0.0.1:11111"}"#, None)
                .await
                .unwrap();
            assert_eq!(expect_exit(&mut ra).await, ExitReason::Deactivated);
        }
        Deposal::Release => {
            ma.as_ref().expect("monitor").release().await;
            assert_eq!(expect_exit(&mut ra).await, ExitReason::Released);
        }
        Deposal::Expiry => {
            // The process stalls (its monitor does nothing more) and its session expires.
            drop(ma.take());
            let old = ca.session().await.unwrap();
            h.expire(&old).await;
        }
    }
    let fb = expect_enter(&mut rb).await;
    let stale = ca.session().await.unwrap();
    let refused_by = |r: Result<()>| match r {
        Err(CoordError::Fenced { fence, .. }) => fence,
        other => panic!("{} {how:?}: stale owner's operation not refused: {other:?}", h.name()),
    };
    let w = refused_by(stale.put_fenced(&cursor, b"2", &fa).await.map(|_| ()));
    let d = refused_by(stale.delete_fenced(&cursor, &fa).await);
    eprintln!(
        "{} {how:?}: running node versions {:?} (old) {:?} (new); refused by {w} / {d}",
        h.name(),
        fa.version,
        fb.version
    );
    if fa.version == fb.version {
        // The running node cannot tell them apart: the epoch did.
        assert_eq!(w, fa.epoch_path);
        assert_eq!(d, fa.epoch_path);
    }
    assert_eq!(op.get(&cursor).await.unwrap().unwrap().data, b"1");
    let owner = cb.session().await.unwrap();
    owner.put_fenced(&cursor, b"3", &fb).await.unwrap();
    assert_eq!(op.get(&cursor).await.unwrap().unwrap().data, b"3");
    owner.delete_fenced(&cursor, &fb).await.unwrap();
    assert_eq!(op.get(&cursor).await.unwrap(), None);
    if let Some(ma) = ma {
        ma.stop().await;
    }
    mb.stop().await;
    ca.close().await;
    op.close().await;
}

/// A stale owner writing or deleting a cursor after an operator's `active:false` is refused.
pub async fn stale_owner_refused_after_active_false(h: &impl Harness) {
    stale_owner_refused(h, Deposal::ActiveFalse).await;
}

/// A stale owner writing or deleting a cursor after it released the node is refused.
pub async fn stale_owner_refused_after_release(h: &impl Harness) {
    stale_owner_refused(h, Deposal::Release).await;
}

/// A stale owner writing or deleting a cursor after its session expired (and a standby took
/// over) is refused, on its new session.
pub async fn stale_owner_refused_after_expiry(h: &impl Harness) {
    stale_owner_refused(h, Deposal::Expiry).await;
}

/// Waits until `path` exists (bounded by 10 s).
async fn wait_exists(s: &Arc<dyn Session>, path: &str) {
    within(Duration::from_secs(10), "the node to appear", async {
        while s.get(path).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// An owner that cannot bump the epoch never serves. An error, a bump applied but unanswered,
/// and one slower than `delay / 2` are each retried after a pause, without `ActiveEnter`, while
/// a standby waits; the owner enters with the epoch its last bump wrote. After
/// [`crate::running::MAX_BUMP_FAILURES`] failures in a row it releases the node and the standby
/// serves; never two active.
pub async fn epoch_bump_failure_blocks_enter(h: &impl Harness) {
    let p = format!("{}/running", h.root("bump_failure"));
    let epoch_path = crate::path::running_epoch(&p);
    let obs = open(h).await;
    let faults = [
        (Op::PutFenced, Fault::Unavailable),
        (Op::PutFenced, Fault::AppliedButTimeout),
        (Op::PutFenced, Fault::Delay(h.delay())),
    ];
    let ca = Coordinator::new(Arc::new(FaultBackend::scripted(h.backend(), faults)));
    let t0 = Instant::now();
    let (ma, mut ra) =
        RunningMonitor::start(ca, p.clone(), ServerRunningData::new("10.0.0.1:11111"), h.delay());
    wait_exists(&obs, &p).await;
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    let fence = expect_enter(&mut ra).await;
    // Three pauses and one bump cut off at delay / 2 before the successful one.
    let least = Duration::from_millis(600) + h.delay() / 2;
    eprintln!("{}: entered after failed bumps in {:?} (least {least:?})", h.name(), t0.elapsed());
    assert!(t0.elapsed() >= least, "{}: entered after {:?}", h.name(), t0.elapsed());
    assert!(!mb.is_active());
    let e = obs.get(&epoch_path).await.unwrap().expect("epoch node");
    // The unanswered bump was applied (1); the successful one wrote 2.
    assert_eq!(e.data, b"2");
    assert_eq!(e.version, fence.epoch);
    quiet(&mut rb, h.delay() * 2).await;
    ma.stop().await;
    expect_enter(&mut rb).await;
    mb.stop().await;

    // Every bump fails: the node is released and the standby serves; the owner never did.
    let p = format!("{}/running", h.root("bump_gives_up"));
    let faults =
        (0..crate::running::MAX_BUMP_FAILURES).map(|_| (Op::PutFenced, Fault::Unavailable));
    let ca = Coordinator::new(Arc::new(FaultBackend::scripted(h.backend(), faults)));
    let (ma, mut ra) =
        RunningMonitor::start(ca, p.clone(), ServerRunningData::new("10.0.0.1:11111"), h.delay());
    wait_exists(&obs, &p).await;
    let (_cb, mb, mut rb) = monitor(h, &p, "10.0.0.2:11111");
    let fb = expect_enter(&mut rb).await;
    assert!(!ma.is_active());
    assert!(ra.try_recv().is_err(), "the owner that could not bump must not have served");
    let n = obs.get(&p).await.unwrap().expect("standby's node");
    assert_eq!(ServerRunningData::from_bytes(&n.data).unwrap().address, "10.0.0.2:11111");
    assert_eq!(obs.get(&crate::path::running_epoch(&p)).await.unwrap().unwrap().version, fb.epoch);
    quiet(&mut ra, h.delay() * 2).await;
    ma.stop().await;
    mb.stop().await;
    obs.close().await;
}

#[track_caller]
fn fenced(r: std::result::Result<(), CursorError>) {
    assert!(matches!(r, Err(CursorError::Coord(CoordError::Fenced { .. }))), "{r:?}");
}

/// Another process moves the epoch between the owner's read of it and its bump: the bump is
/// refused (a compare-and-set), the owner re-reads and bumps again, and enters with the epoch
/// after the other one.
pub async fn epoch_bump_conflict_retries(h: &impl Harness) {
    let p = format!("{}/running", h.root("bump_conflict"));
    let epoch_path = crate::path::running_epoch(&p);
    let obs = open(h).await;
    let hold = h.delay() / 4;
    // The first bump is held back long enough for the other write to land; the second goes.
    let faults =
        [(Op::PutFenced, Fault::Delay(hold)), (Op::PutFenced, Fault::Delay(Duration::ZERO))];
    let faulty = Arc::new(FaultBackend::scripted(h.backend(), faults));
    let ca = Coordinator::new(faulty.clone());
    let (ma, mut ra) =
        RunningMonitor::start(ca, p.clone(), ServerRunningData::new("10.0.0.1:11111"), h.delay());
    // The owner created the epoch node (at 0) and is holding its bump: move it from outside.
    wait_exists(&obs, &epoch_path).await;
    tokio::time::sleep(hold / 2).await;
    let e = obs.get(&epoch_path).await.unwrap().expect("epoch node");
    assert_eq!(e.data, b"0", "{}: the owner bumped before the other write", h.name());
    obs.put(&epoch_path, b"5", Some(e.version)).await.unwrap();
    let fence = expect_enter(&mut ra).await;
    assert_eq!(faulty.scripted_left(), 0, "{}: the owner bumped only once", h.name());
    let e = obs.get(&epoch_path).await.unwrap().expect("epoch node");
    assert_eq!(e.data, b"6");
    assert_eq!(e.version, fence.epoch);
    ma.stop().await;
    obs.close().await;
}

fn numeric_order(cur: &[u8], new: &[u8]) -> Option<std::cmp::Ordering> {
    let n = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    Some(n(cur)?.cmp(&n(new)?))
}

/// The cursor store's queue belongs to one activation: a newer activation's first update (or
/// [`CursorStore::activate`]) drops what an older one queued, `forget` drops the queue and
/// ends the activation, and late updates under an old fence are refused — all without a write,
/// even when the service would still accept it.
pub async fn cursor_store_one_activation(h: &impl Harness) {
    let coord = Coordinator::new(h.backend());
    let dest = h.root("one_activation").trim_start_matches("/canal-coord-test/").replace('/', "-");
    let running = crate::path::server_running(&dest);
    let (m, mut rx) = RunningMonitor::start(
        coord.clone(),
        running.clone(),
        ServerRunningData::new("10.0.0.9:11111"),
        h.delay(),
    );
    let f1 = expect_enter(&mut rx).await;
    let store = CursorStore::new(
        coord.clone(),
        FlushPolicy::Periodic(Duration::from_secs(3600)),
        numeric_order,
    );
    let obs = open(h).await;
    let stored = async |id: i16| {
        obs.get(&crate::path::client_cursor(&dest, id)).await.unwrap().map(|n| n.data)
    };
    store.update(&dest, 1001, b"10".to_vec(), &f1).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(stored(1001).await.as_deref(), Some(&b"10"[..]));
    // Queued by the first activation, not flushed yet.
    store.update(&dest, 1001, b"11".to_vec(), &f1).await.unwrap();
    // Our node is deleted: as its last owner we re-grab at once, with a new epoch.
    obs.delete(&running, None).await.unwrap();
    assert_eq!(expect_exit(&mut rx).await, ExitReason::Deposed);
    let f2 = expect_enter(&mut rx).await;
    assert!(f1.is_older_than(&f2), "{f1:?} {f2:?}");
    // No forget (as if the exit were missed): the new activation's first update drops the queue.
    store.update(&dest, 1002, b"20".to_vec(), &f2).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(stored(1001).await.as_deref(), Some(&b"10"[..]));
    assert_eq!(stored(1002).await.as_deref(), Some(&b"20"[..]));
    assert_eq!(store.get(&dest, 1001).await.unwrap().as_deref(), Some(&b"10"[..]));
    // Late updates of the first activation are refused.
    fenced(store.update(&dest, 1001, b"12".to_vec(), &f1).await);
    fenced(store.activate(&dest, &f1));
    // forget ends the activation: its queue is dropped, its fence refused.
    store.update(&dest, 1001, b"13".to_vec(), &f2).await.unwrap();
    store.forget(&dest);
    store.flush().await.unwrap();
    assert_eq!(stored(1001).await.as_deref(), Some(&b"10"[..]));
    fenced(store.update(&dest, 1001, b"14".to_vec(), &f2).await);
    // A third activation queues a cursor; a later one known to the store (here made up) drops
    // it although the service would still take it under the third one's fence.
    obs.delete(&running, None).await.unwrap();
    assert_eq!(expect_exit(&mut rx).await, ExitReason::Deposed);
    let f3 = expect_enter(&mut rx).await;
    store.update(&dest, 1001, b"15".to_vec(), &f3).await.unwrap();
    store.activate(&dest, &Fence { epoch: Version(f3.epoch.0 + 1), ..f3.clone() }).unwrap();
    store.flush().await.unwrap();
    assert_eq!(stored(1001).await.as_deref(), Some(&b"10"[..]));
    obs.put_fenced(&crate::path::client_cursor(&dest, 1001), b"16", &f3).await.unwrap();
    assert_eq!(stored(1001).await.as_deref(), Some(&b"16"[..]));
    m.stop().await;
    coord.close().await;
    obs.close().await;
}

// ---------------------------------------------------------------------------------------------
// Fault injection

/// Which operation a scripted fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `create_ephemeral`.
    CreateEphemeral,
    /// `delete`.
    Delete,
    /// `get_and_watch`.
    GetAndWatch,
    /// `get`.
    Get,
    /// `put` (compare-and-set or not).
    Put,
    /// `create_persistent`.
    CreatePersistent,
    /// `put_fenced` (cursor writes, and the epoch bump of an activation).
    PutFenced,
    /// `delete_fenced`.
    DeleteFenced,
    /// `children`.
    Children,
    /// Any operation.
    Any,
}

/// A fault injected into one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The operation is delayed by this much before it reaches the service.
    Delay(Duration),
    /// Fails without reaching the service.
    Unavailable,
    /// Applied, but the answer is lost (timeout after send).
    AppliedButTimeout,
    /// Not applied, and the answer is a timeout.
    TimeoutNotApplied,
    /// The session expires instead.
    Expire,
}

/// Probabilities (per operation) of the random faults, and the bound of injected delays.
#[derive(Clone, Copy, Debug)]
pub struct FaultRates {
    /// Delay before the operation.
    pub delay: f64,
    /// Longest injected delay.
    pub max_delay: Duration,
    /// Long delay (a process pause or a stalled connection), up to `max_long_delay`.
    pub long_delay: f64,
    /// Longest long delay (may exceed the takeover delay).
    pub max_long_delay: Duration,
    /// Fail without applying.
    pub unavailable: f64,
    /// Apply, then report a timeout.
    pub applied_but_timeout: f64,
    /// Do not apply, report a timeout.
    pub timeout_not_applied: f64,
    /// Expire the session.
    pub expire: f64,
}

#[derive(Debug)]
struct Plan {
    rng: Option<Mutex<StdRng>>,
    rates: Option<FaultRates>,
    script: Mutex<VecDeque<(Op, Fault)>>,
    /// Faults for an operation on one path: (op, path, fault).
    on_path: Mutex<VecDeque<(Op, String, Fault)>>,
}

impl Plan {
    fn next(&self, op: Op, path: &str, write: bool) -> Option<Fault> {
        {
            let mut s = self.on_path.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = s.iter().position(|(o, p, _)| (*o == op || *o == Op::Any) && p == path)
            {
                return s.remove(i).map(|(_, _, f)| f);
            }
        }
        {
            let mut s = self.script.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = s.iter().position(|(o, _)| *o == op || *o == Op::Any) {
                return s.remove(i).map(|(_, f)| f);
            }
        }
        let (rng, r) = (self.rng.as_ref()?, self.rates?);
        let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
        let x: f64 = rng.random();
        let mut acc = r.expire;
        if x < acc {
            return Some(Fault::Expire);
        }
        acc += r.unavailable;
        if x < acc {
            return Some(Fault::Unavailable);
        }
        if write {
            acc += r.applied_but_timeout;
            if x < acc {
                return Some(Fault::AppliedButTimeout);
            }
            acc += r.timeout_not_applied;
            if x < acc {
                return Some(Fault::TimeoutNotApplied);
            }
        }
        acc += r.long_delay;
        if x < acc {
            let ms = rng.random_range(0..=r.max_long_delay.as_millis() as u64);
            return Some(Fault::Delay(Duration::from_millis(ms)));
        }
        acc += r.delay;
        if x < acc {
            let ms = rng.random_range(0..=r.max_delay.as_millis() as u64);
            return Some(Fault::Delay(Duration::from_millis(ms)));
        }
        None
    }
}

/// A backend whose sessions inject faults: scripted ones first, then seeded random ones.
/// Expiry faults need the local backend (they expire the wrapped [`LocalSession`]).
#[derive(Debug)]
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    plan: Arc<Plan>,
}

impl FaultBackend {
    /// Scripted faults not injected yet (each is used by the first matching operation).
    pub fn scripted_left(&self) -> usize {
        self.plan.script.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Injects exactly these faults, each into the next matching operation.
    pub fn scripted(
        inner: Arc<dyn Backend>,
        script: impl IntoIterator<Item = (Op, Fault)>,
    ) -> Self {
        FaultBackend {
            inner,
            plan: Arc::new(Plan {
                rng: None,
                rates: None,
                script: Mutex::new(script.into_iter().collect()),
                on_path: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Injects exactly these faults, each into the next matching operation on exactly that path
    /// (other operations pass through).
    pub fn on_paths(
        inner: Arc<dyn Backend>,
        script: impl IntoIterator<Item = (Op, String, Fault)>,
    ) -> Self {
        FaultBackend {
            inner,
            plan: Arc::new(Plan {
                rng: None,
                rates: None,
                script: Mutex::new(VecDeque::new()),
                on_path: Mutex::new(script.into_iter().collect()),
            }),
        }
    }

    /// Faults of [`FaultBackend::on_paths`] not injected yet.
    pub fn pending_path_faults(&self) -> usize {
        self.plan.on_path.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Injects random faults at `rates`, reproducibly from `seed`.
    pub fn random(inner: Arc<dyn Backend>, seed: u64, rates: FaultRates) -> Self {
        FaultBackend {
            inner,
            plan: Arc::new(Plan {
                rng: Some(Mutex::new(StdRng::seed_from_u64(seed))),
                rates: Some(rates),
                script: Mutex::new(VecDeque::new()),
                on_path: Mutex::new(VecDeque::new()),
            }),
        }
    }
}

#[async_trait]
impl Backend for FaultBackend {
    fn name(&self) -> &'static str {
        "fault"
    }

    async fn open_session(&self) -> Result<Arc<dyn Session>> {
        let inner = self.inner.open_session().await?;
        Ok(Arc::new(FaultSession { inner, plan: self.plan.clone() }))
    }
}

/// A session of [`FaultBackend`].
#[derive(Debug)]
pub struct FaultSession {
    inner: Arc<dyn Session>,
    plan: Arc<Plan>,
}

impl FaultSession {
    /// The wrapped session.
    pub fn inner(&self) -> &Arc<dyn Session> {
        &self.inner
    }

    /// Runs `op` under the next fault.
    async fn run<T>(
        &self,
        op: Op,
        path: &str,
        write: bool,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let name = match op {
            Op::CreateEphemeral | Op::CreatePersistent => "create",
            Op::Delete | Op::DeleteFenced => "delete",
            Op::Put | Op::PutFenced => "put",
            _ => "op",
        };
        let timeout = || CoordError::Indeterminate {
            op: name,
            path: path.to_owned(),
            reason: "injected timeout".into(),
        };
        match self.plan.next(op, path, write) {
            None => f.await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                f.await
            }
            Some(Fault::Unavailable) => Err(CoordError::Unavailable { reason: "injected".into() }),
            Some(Fault::AppliedButTimeout) => {
                let _ = f.await;
                Err(timeout())
            }
            Some(Fault::TimeoutNotApplied) => Err(timeout()),
            Some(Fault::Expire) => {
                if let Some(l) = self.inner.as_any().downcast_ref::<LocalSession>() {
                    l.expire();
                    Err(CoordError::SessionExpired)
                } else {
                    f.await
                }
            }
        }
    }
}

#[async_trait]
impl Session for FaultSession {
    fn id(&self) -> SessionId {
        self.inner.id()
    }
    fn state(&self) -> SessionState {
        self.inner.state()
    }
    fn state_watcher(&self) -> watch::Receiver<SessionState> {
        self.inner.state_watcher()
    }
    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }
    async fn create_ephemeral(&self, path: &str, data: &[u8]) -> Result<Version> {
        self.run(Op::CreateEphemeral, path, true, self.inner.create_ephemeral(path, data)).await
    }
    async fn create_persistent(&self, path: &str, data: &[u8]) -> Result<Version> {
        self.run(Op::CreatePersistent, path, true, self.inner.create_persistent(path, data)).await
    }
    async fn ensure_persistent(&self, path: &str) -> Result<()> {
        self.run(Op::Any, path, true, self.inner.ensure_persistent(path)).await
    }
    async fn get(&self, path: &str) -> Result<Option<Node>> {
        self.run(Op::Get, path, false, self.inner.get(path)).await
    }
    async fn get_and_watch(&self, path: &str) -> Result<(Option<Node>, Watch)> {
        self.run(Op::GetAndWatch, path, false, self.inner.get_and_watch(path)).await
    }
    async fn put(&self, path: &str, data: &[u8], expected: Option<Version>) -> Result<Version> {
        self.run(Op::Put, path, true, self.inner.put(path, data, expected)).await
    }
    async fn put_fenced(&self, path: &str, data: &[u8], fence: &Fence) -> Result<Version> {
        self.run(Op::PutFenced, path, true, self.inner.put_fenced(path, data, fence)).await
    }
    async fn delete_fenced(&self, path: &str, fence: &Fence) -> Result<()> {
        self.run(Op::DeleteFenced, path, true, self.inner.delete_fenced(path, fence)).await
    }
    async fn delete(&self, path: &str, expected: Option<Version>) -> Result<()> {
        self.run(Op::Delete, path, true, self.inner.delete(path, expected)).await
    }
    async fn children(&self, path: &str) -> Result<Vec<String>> {
        self.run(Op::Children, path, false, self.inner.children(path)).await
    }
    async fn children_and_watch(&self, path: &str) -> Result<(Vec<String>, Watch)> {
        self.run(Op::Any, path, false, self.inner.children_and_watch(path)).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
