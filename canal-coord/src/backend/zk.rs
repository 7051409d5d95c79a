//! ZooKeeper backend over `zookeeper-client` (Java Canal's own service): nodes, ephemerals and
//! watches map one to one; fenced writes and deletes are multi-ops with version checks on the
//! fence's running node and epoch node.
//!
//! The client has no `close()`: the session closes when the last clone of the client drops, so
//! the session keeps the only long-lived clone and drops it on [`Session::close`]. Expired and
//! Closed are terminal; the [`Coordinator`](crate::Coordinator) opens a new session and the
//! policies re-create their ephemerals.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use zookeeper_client as zk;

use crate::error::{CoordError, Result};
use crate::session::{
    Backend, Fence, Node, Session, SessionId, SessionState, Version, Watch, WatchEvent, parent,
    session_lost, validate_path,
};

/// Opens ZooKeeper sessions on one ensemble.
#[derive(Clone, Debug)]
pub struct ZkBackend {
    servers: String,
    session_timeout: Duration,
}

impl ZkBackend {
    /// `servers` is `host:port,host:port[/chroot]`; `session_timeout` is requested (the server
    /// clamps it to its min/max).
    pub fn new(servers: &str, session_timeout: Duration) -> Self {
        ZkBackend { servers: servers.to_owned(), session_timeout }
    }

    /// Opens a session that dropping does not close: [`ZkSession::crash`] then leaves it to
    /// expire, as when the owning process dies. For tests.
    ///
    /// # Errors
    /// As [`Backend::open_session`].
    ///
    /// # Cancel safety
    /// Cancel safe (a half-open detached session expires on its own).
    pub async fn open_detached_session(&self) -> Result<Arc<ZkSession>> {
        self.connect(true).await
    }

    async fn connect(&self, detached: bool) -> Result<Arc<ZkSession>> {
        let mut connector = zk::Client::connector().with_session_timeout(self.session_timeout);
        if detached {
            connector = connector.with_detached();
        }
        let limit = self.session_timeout.max(Duration::from_secs(2)) * 2;
        let client = match tokio::time::timeout(limit, connector.connect(&self.servers)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(CoordError::Unavailable {
                    reason: format!("zookeeper {}: {e}", self.servers),
                });
            }
            Err(_) => {
                return Err(CoordError::Unavailable {
                    reason: format!("zookeeper {}: connect timed out", self.servers),
                });
            }
        };
        let (tx, _) = watch::channel(SessionState::Connected);
        let task = tokio::spawn(follow_state(client.state_watcher(), tx.clone()));
        Ok(Arc::new(ZkSession {
            servers: self.servers.clone(),
            id: client.session_id().0,
            timeout: client.session_timeout(),
            client: Mutex::new(Some(client)),
            state: tx,
            task,
        }))
    }
}

#[async_trait]
impl Backend for ZkBackend {
    fn name(&self) -> &'static str {
        "zookeeper"
    }

    async fn open_session(&self) -> Result<Arc<dyn Session>> {
        Ok(self.connect(false).await?)
    }
}

/// How often [`follow_state`] reads the client's session state.
const STATE_POLL: Duration = Duration::from_millis(10);

/// Follows the client's session state into ours; ends with a terminal state.
///
/// It reads the state (`peek_state`) every [`STATE_POLL`] instead of awaiting
/// `StateWatcher::changed`: that future waits on asyncs-sync 0.4's `Notify`, whose `notify_all`
/// leaves a dequeued waiter linked to a guard node on the notifying thread's stack. A waiter
/// dropped while `notify_all` runs (our task aborted on close or crash, or dropped when the
/// runtime shuts down, while the client publishes Closed) then unlinks itself through that guard
/// and writes a stack address into another thread's stack: the SIGSEGV with the instruction
/// pointer on the stack of issue 17 (docs/notes/sigsegv.md). Without a waiter, `notify_all`
/// never builds the guard. The poll adds at most 10 ms to the client's own detection, which
/// takes a tick of `session timeout / 20` or more.
async fn follow_state(sw: zk::StateWatcher, state: watch::Sender<SessionState>) {
    let mut tick = tokio::time::interval(STATE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = map_state(sw.peek_state());
        // A terminal state set by the session itself (close, crash, expire) is never overwritten.
        state.send_if_modified(|cur| {
            let change = !cur.is_terminal() && *cur != s;
            if change {
                *cur = s;
            }
            change
        });
        if state.borrow().is_terminal() {
            return;
        }
    }
}

fn map_state(s: zk::SessionState) -> SessionState {
    match s {
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
            SessionState::Connected
        }
        zk::SessionState::Disconnected => SessionState::Disconnected,
        zk::SessionState::Expired => SessionState::Expired,
        _ => SessionState::Closed,
    }
}

/// A ZooKeeper session.
#[derive(Debug)]
pub struct ZkSession {
    servers: String,
    id: SessionId,
    timeout: Duration,
    client: Mutex<Option<zk::Client>>,
    state: watch::Sender<SessionState>,
    task: tokio::task::JoinHandle<()>,
}

fn map_err(e: zk::Error, op: &'static str, path: &str, write: bool) -> CoordError {
    let path = path.to_owned();
    match e {
        zk::Error::NoNode => CoordError::NoNode { path },
        zk::Error::NodeExists => CoordError::NodeExists { path },
        zk::Error::BadVersion => CoordError::BadVersion { path },
        zk::Error::NotEmpty => CoordError::NotEmpty { path },
        zk::Error::SessionExpired => CoordError::SessionExpired,
        zk::Error::ClientClosed => CoordError::SessionClosed,
        zk::Error::ConnectionLoss | zk::Error::Timeout if write => {
            CoordError::Indeterminate { op, path, reason: e.to_string() }
        }
        zk::Error::ConnectionLoss
        | zk::Error::Timeout
        | zk::Error::NoHosts
        | zk::Error::Throttled => CoordError::Unavailable { reason: e.to_string() },
        other => CoordError::Backend { reason: format!("{op} '{path}': {other}") },
    }
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

fn map_event(ev: zk::WatchedEvent) -> WatchEvent {
    match ev.event_type {
        zk::EventType::NodeCreated => WatchEvent::Created,
        zk::EventType::NodeDeleted => WatchEvent::Deleted,
        zk::EventType::NodeDataChanged => WatchEvent::DataChanged,
        zk::EventType::NodeChildrenChanged => WatchEvent::ChildrenChanged,
        zk::EventType::Session => WatchEvent::SessionLost(map_state(ev.session_state)),
    }
}

impl ZkSession {
    /// Simulates the owner dying without closing: drops the client without a close request.
    /// Only a detached session ([`ZkBackend::open_detached_session`]) then lingers until the
    /// server expires it; a normal one is closed by the drop.
    pub fn crash(&self) {
        self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.task.abort();
        self.state.send_replace(SessionState::Closed);
    }

    /// Makes the server expire this session now, as after a partition longer than the timeout:
    /// a second client attaches to the session and closes it, so this client sees Expired.
    /// For tests.
    ///
    /// # Errors
    /// [`CoordError::Unavailable`] when the second client cannot attach.
    ///
    /// # Cancel safety
    /// Cancel safe; the session may or may not have been expired.
    pub async fn expire(&self) -> Result<()> {
        let c = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(CoordError::SessionClosed)?;
        let info = c.session().clone();
        drop(c);
        let mut st = self.state.subscribe();
        let mut last = String::new();
        // Our own client reconnects as soon as the server hands its connection to the thief,
        // and may win the session back; retry until the close gets through.
        for _ in 0..3 {
            if st.borrow().is_terminal() {
                return Ok(());
            }
            match zk::Client::connector()
                .with_session(info.clone())
                .with_session_timeout(self.timeout)
                .with_connection_timeout(Duration::from_secs(2))
                .connect(&self.servers)
                .await
            {
                Ok(thief) => drop(thief),
                Err(e) => last = e.to_string(),
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), st.wait_for(|s| s.is_terminal()))
                .await;
        }
        if st.borrow().is_terminal() {
            return Ok(());
        }
        // Stealing the session keeps losing the race against our own reconnecting client (seen
        // on loaded machines): end the session from our side instead. Dropping the client closes
        // it on the server (its ephemerals go, as on expiry) and we report Expired, which is what
        // an expiry looks like to everything above the session.
        tracing::debug!("attach to session failed ({last}); closing it from this side");
        self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.task.abort();
        // The drop sends the close without waiting for it: wait until the server refuses the
        // session, so that its ephemerals are gone when we report Expired (as after a real
        // expiry), not a moment later.
        for _ in 0..10 {
            match zk::Client::connector()
                .with_session(info.clone())
                .with_session_timeout(self.timeout)
                .with_connection_timeout(Duration::from_secs(2))
                .connect(&self.servers)
                .await
            {
                Ok(thief) => drop(thief), // still there: this attach closes it, check again
                Err(zk::Error::SessionExpired) => break,
                Err(e) => tracing::debug!("checking the closed session: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.state.send_replace(SessionState::Expired);
        Ok(())
    }

    fn client(&self, path: &str) -> Result<zk::Client> {
        validate_path(path)?;
        match *self.state.borrow() {
            SessionState::Expired => return Err(CoordError::SessionExpired),
            SessionState::Closed => return Err(CoordError::SessionClosed),
            _ => {}
        }
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(CoordError::SessionClosed)
    }

    fn watch(&self, w: zk::OneshotWatcher) -> Watch {
        let lost = session_lost(self.state.subscribe());
        Watch::new(async move {
            tokio::select! {
                ev = w.changed() => map_event(ev),
                s = lost => WatchEvent::SessionLost(s),
            }
        })
    }

    async fn mkparent(&self, c: &zk::Client, path: &str) -> Result<()> {
        match parent(path) {
            Some("/") | None => Ok(()),
            Some(p) => c.mkdir(p, &persistent()).await.map_err(|e| map_err(e, "mkdir", p, true)),
        }
    }

    async fn create(
        &self,
        path: &str,
        data: &[u8],
        opts: &zk::CreateOptions<'_>,
    ) -> Result<Version> {
        let c = self.client(path)?;
        for _ in 0..3 {
            match c.create(path, data, opts).await {
                Ok((stat, _)) => return Ok(Version(stat.version.max(0) as i64)),
                Err(zk::Error::NoNode) => self.mkparent(&c, path).await?,
                Err(e) => return Err(map_err(e, "create", path, true)),
            }
        }
        Err(CoordError::NoNode { path: path.to_owned() })
    }
}

#[async_trait]
impl Session for ZkSession {
    fn id(&self) -> SessionId {
        self.id
    }

    fn state(&self) -> SessionState {
        *self.state.borrow()
    }

    fn state_watcher(&self) -> watch::Receiver<SessionState> {
        self.state.subscribe()
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn create_ephemeral(&self, path: &str, data: &[u8]) -> Result<Version> {
        self.create(path, data, &ephemeral()).await
    }

    async fn create_persistent(&self, path: &str, data: &[u8]) -> Result<Version> {
        self.create(path, data, &persistent()).await
    }

    async fn ensure_persistent(&self, path: &str) -> Result<()> {
        let c = self.client(path)?;
        if path == "/" {
            return Ok(());
        }
        c.mkdir(path, &persistent()).await.map_err(|e| map_err(e, "mkdir", path, true))
    }

    async fn get(&self, path: &str) -> Result<Option<Node>> {
        let c = self.client(path)?;
        match c.get_data(path).await {
            Ok((data, stat)) => Ok(Some(node(data, &stat))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(map_err(e, "get", path, false)),
        }
    }

    async fn get_and_watch(&self, path: &str) -> Result<(Option<Node>, Watch)> {
        let c = self.client(path)?;
        loop {
            match c.get_and_watch_data(path).await {
                Ok((data, stat, w)) => return Ok((Some(node(data, &stat)), self.watch(w))),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(map_err(e, "get", path, false)),
            }
            match c.check_and_watch_stat(path).await {
                Ok((None, w)) => return Ok((None, self.watch(w))),
                // Created in between: read it with a data watch.
                Ok((Some(_), _)) => continue,
                Err(e) => return Err(map_err(e, "exists", path, false)),
            }
        }
    }

    async fn put(&self, path: &str, data: &[u8], expected: Option<Version>) -> Result<Version> {
        let c = self.client(path)?;
        let stat = c
            .set_data(path, data, expected.map(|v| v.0 as i32))
            .await
            .map_err(|e| map_err(e, "put", path, true))?;
        Ok(Version(stat.version as i64))
    }

    async fn put_fenced(&self, path: &str, data: &[u8], fence: &Fence) -> Result<Version> {
        let c = self.client(path)?;
        let arg = |e: zk::Error| map_err(e, "put", path, true);
        for _ in 0..3 {
            let mut m = fenced_multi(&c, fence).map_err(arg)?;
            m.add_set_data(path, data, None).map_err(arg)?;
            match m.commit().await {
                Ok(r) => {
                    let v = match r.get(FENCE_CHECKS) {
                        Some(zk::MultiWriteResult::SetData { stat }) => stat.version as i64,
                        _ => 0,
                    };
                    return Ok(Version(v));
                }
                Err(zk::MultiWriteError::OperationFailed { index, .. }) if index < FENCE_CHECKS => {
                    return Err(fenced(path, fence, index));
                }
                Err(zk::MultiWriteError::OperationFailed { source: zk::Error::NoNode, .. }) => {}
                Err(zk::MultiWriteError::OperationFailed { source, .. }) => {
                    return Err(arg(source));
                }
                Err(zk::MultiWriteError::RequestFailed { source }) => return Err(arg(source)),
            }
            // The node is missing: create it (parents first, outside the multi: harmless).
            self.mkparent(&c, path).await?;
            let mut m = fenced_multi(&c, fence).map_err(arg)?;
            m.add_create(path, data, &persistent()).map_err(arg)?;
            match m.commit().await {
                // ZOOKEEPER-4026: the stat of a create inside a multi may be invalid; a new node
                // is at version 0.
                Ok(_) => return Ok(Version(0)),
                Err(zk::MultiWriteError::OperationFailed { index, .. }) if index < FENCE_CHECKS => {
                    return Err(fenced(path, fence, index));
                }
                Err(zk::MultiWriteError::OperationFailed {
                    source: zk::Error::NodeExists, ..
                }) => {}
                Err(zk::MultiWriteError::OperationFailed { source, .. }) => {
                    return Err(arg(source));
                }
                Err(zk::MultiWriteError::RequestFailed { source }) => return Err(arg(source)),
            }
        }
        Err(CoordError::Backend {
            reason: format!("put '{path}': node kept appearing and vanishing"),
        })
    }

    async fn delete_fenced(&self, path: &str, fence: &Fence) -> Result<()> {
        let c = self.client(path)?;
        let arg = |e: zk::Error| map_err(e, "delete", path, true);
        let mut m = fenced_multi(&c, fence).map_err(arg)?;
        m.add_delete(path, None).map_err(arg)?;
        match m.commit().await {
            Ok(_) => Ok(()),
            Err(zk::MultiWriteError::OperationFailed { index, .. }) if index < FENCE_CHECKS => {
                Err(fenced(path, fence, index))
            }
            Err(zk::MultiWriteError::OperationFailed { source, .. }) => Err(arg(source)),
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(arg(source)),
        }
    }

    async fn delete(&self, path: &str, expected: Option<Version>) -> Result<()> {
        let c = self.client(path)?;
        c.delete(path, expected.map(|v| v.0 as i32))
            .await
            .map_err(|e| map_err(e, "delete", path, true))
    }

    async fn children(&self, path: &str) -> Result<Vec<String>> {
        let c = self.client(path)?;
        match c.list_children(path).await {
            Ok(mut v) => {
                v.sort();
                Ok(v)
            }
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(map_err(e, "children", path, false)),
        }
    }

    async fn children_and_watch(&self, path: &str) -> Result<(Vec<String>, Watch)> {
        let c = self.client(path)?;
        loop {
            match c.list_and_watch_children(path).await {
                Ok((mut v, w)) => {
                    v.sort();
                    return Ok((v, self.watch(w)));
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(map_err(e, "children", path, false)),
            }
            match c.check_and_watch_stat(path).await {
                Ok((None, w)) => return Ok((Vec::new(), self.watch(w))),
                Ok((Some(_), _)) => continue,
                Err(e) => return Err(map_err(e, "exists", path, false)),
            }
        }
    }

    async fn close(&self) {
        // Dropping the last clone sends the close request; in-flight operations hold clones
        // only until they finish.
        let c = self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(c);
        self.task.abort();
        self.state.send_replace(SessionState::Closed);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for ZkSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Number of operations [`fenced_multi`] puts before the guarded one.
const FENCE_CHECKS: usize = 2;

/// A multi-op that first checks both nodes of `fence` (running node, then epoch node) at their
/// versions; the caller adds the guarded operation. A check fails if the node is gone or at
/// another version, and then nothing of the multi-op is applied.
fn fenced_multi<'a>(
    c: &'a zk::Client,
    fence: &Fence,
) -> std::result::Result<zk::MultiWriter<'a>, zk::Error> {
    let mut m = c.new_multi_writer();
    m.add_check_version(&fence.path, zk_version(fence.version))?;
    m.add_check_version(&fence.epoch_path, zk_version(fence.epoch))?;
    Ok(m)
}

/// A version we handed out (ZooKeeper's `i32` data version) back in ZooKeeper's type; a value
/// that does not fit can only come from another backend and never matches (-2 is no version).
fn zk_version(v: Version) -> i32 {
    i32::try_from(v.0).unwrap_or(-2)
}

/// The refusal of a fenced operation whose check number `index` failed.
fn fenced(path: &str, fence: &Fence, index: usize) -> CoordError {
    let node = if index == 0 { &fence.path } else { &fence.epoch_path };
    CoordError::Fenced { path: path.to_owned(), fence: node.clone() }
}

fn node(data: Vec<u8>, stat: &zk::Stat) -> Node {
    Node {
        data,
        version: Version(stat.version as i64),
        ephemeral_owner: (stat.ephemeral_owner != 0).then_some(stat.ephemeral_owner),
    }
}
