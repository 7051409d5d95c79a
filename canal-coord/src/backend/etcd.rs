//! etcd v3 backend over `etcd-client`: the same key strings as ZooKeeper paths (under an optional
//! prefix); ephemerals are keys on the session's lease, kept alive by a task; create-if-absent is
//! a txn on `create_revision == 0`; versions are mod revisions (store-wide, never repeated);
//! fenced writes and deletes are txns comparing the mod revisions of the fence's running key and
//! epoch key.
//!
//! etcd has no parent nodes: creates do not write parent keys (only
//! [`Session::ensure_persistent`] writes an empty key), and children are derived from the keys
//! under `path/`.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as etcd;
use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{CoordError, Result};
use crate::session::{
    Backend, Fence, Node, Session, SessionId, SessionState, Version, Watch, WatchEvent,
    session_lost, validate_path,
};

/// Opens etcd sessions (one lease each) on one cluster.
#[derive(Clone, Debug)]
pub struct EtcdBackend {
    endpoints: Vec<String>,
    ttl: i64,
    prefix: String,
}

impl EtcdBackend {
    /// `endpoints` as `http://host:port`; `lease_ttl_secs` bounds how long a dead owner's
    /// ephemerals stay; `prefix` is prepended to every key (`""` for none).
    pub fn new(endpoints: Vec<String>, lease_ttl_secs: i64, prefix: &str) -> Self {
        EtcdBackend { endpoints, ttl: lease_ttl_secs.max(1), prefix: prefix.to_owned() }
    }

    async fn connect(&self) -> Result<Arc<EtcdSession>> {
        let unavailable = |e: etcd::Error| CoordError::Unavailable {
            reason: format!("etcd {:?}: {e}", self.endpoints),
        };
        let opts = etcd::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let mut client =
            etcd::Client::connect(&self.endpoints, Some(opts)).await.map_err(unavailable)?;
        let lease = client.lease_grant(self.ttl, None).await.map_err(unavailable)?.id();
        let (keeper, stream) = client.lease_keep_alive(lease).await.map_err(unavailable)?;
        let (tx, _) = watch::channel(SessionState::Connected);
        let ttl = Duration::from_secs(self.ttl as u64);
        let task = tokio::spawn(keep_alive(client.clone(), lease, ttl, keeper, stream, tx.clone()));
        Ok(Arc::new(EtcdSession {
            client,
            lease,
            ttl,
            prefix: self.prefix.clone(),
            state: tx,
            task: Mutex::new(Some(task)),
        }))
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn open_session(&self) -> Result<Arc<dyn Session>> {
        Ok(self.connect().await?)
    }
}

/// Renews the lease every ttl/3. A failed renewal makes the session Disconnected; no
/// successful renewal for a whole ttl (or the server saying the lease is gone) makes it Expired.
async fn keep_alive(
    mut client: etcd::Client,
    lease: i64,
    ttl: Duration,
    mut keeper: etcd::LeaseKeeper,
    mut stream: etcd::LeaseKeepAliveStream,
    state: watch::Sender<SessionState>,
) {
    let mut last_ok = Instant::now();
    let step = ttl / 3;
    loop {
        tokio::time::sleep(step).await;
        let renew = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(step, renew).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                last_ok = Instant::now();
                state.send_replace(SessionState::Connected);
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease, "etcd lease expired");
                state.send_replace(SessionState::Expired);
                return;
            }
            other => {
                if last_ok.elapsed() >= ttl {
                    tracing::warn!(lease, "etcd lease not renewed for a whole ttl: expired");
                    state.send_replace(SessionState::Expired);
                    return;
                }
                tracing::warn!(lease, result = ?other.map(|r| r.map(|_| ())), "etcd lease renewal failed");
                state.send_replace(SessionState::Disconnected);
                if let Ok(Ok((k, s))) =
                    tokio::time::timeout(step, client.lease_keep_alive(lease)).await
                {
                    keeper = k;
                    stream = s;
                }
            }
        }
    }
}

/// An etcd session: a lease and the task keeping it alive.
pub struct EtcdSession {
    client: etcd::Client,
    lease: i64,
    ttl: Duration,
    prefix: String,
    state: watch::Sender<SessionState>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for EtcdSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSession")
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .field("prefix", &self.prefix)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

fn map_err(e: etcd::Error, op: &'static str, path: &str, write: bool) -> CoordError {
    if let etcd::Error::GRpcStatus(s) = &e {
        if s.message().contains("lease not found") {
            return CoordError::SessionExpired;
        }
        // gRPC codes: 1 cancelled, 2 unknown, 4 deadline exceeded, 14 unavailable.
        let code: i32 = s.code().into();
        let transient = matches!(code, 1 | 2 | 4 | 14);
        if transient && write {
            return CoordError::Indeterminate { op, path: path.to_owned(), reason: e.to_string() };
        }
        if transient {
            return CoordError::Unavailable { reason: e.to_string() };
        }
    }
    match e {
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) if write => {
            CoordError::Indeterminate { op, path: path.to_owned(), reason: e.to_string() }
        }
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => {
            CoordError::Unavailable { reason: e.to_string() }
        }
        other => CoordError::Backend { reason: format!("{op} '{path}': {other}") },
    }
}

impl EtcdSession {
    /// Simulates the owner dying: the keep-alive task stops without revoking the lease, so the
    /// keys stay until the lease's TTL runs out.
    pub fn crash(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        self.state.send_replace(SessionState::Closed);
    }

    /// Makes the lease end now (revoked from this client, as if it had run out): its keys go and
    /// the session becomes Expired. For tests.
    ///
    /// # Errors
    /// [`CoordError::Unavailable`] when etcd cannot be reached.
    ///
    /// # Cancel safety
    /// Not cancel safe: the keep-alive task is stopped first; a cancelled call leaves the lease
    /// to run out.
    pub async fn expire(&self) -> Result<()> {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        let r = self.client.clone().lease_revoke(self.lease).await;
        self.state.send_replace(SessionState::Expired);
        r.map(|_| ()).map_err(|e| CoordError::Unavailable { reason: e.to_string() })
    }

    fn key(&self, path: &str) -> Result<String> {
        validate_path(path)?;
        match *self.state.borrow() {
            SessionState::Expired => return Err(CoordError::SessionExpired),
            SessionState::Closed => return Err(CoordError::SessionClosed),
            _ => {}
        }
        Ok(format!("{}{}", self.prefix, path))
    }

    /// The compares of a fenced operation: the running node and the epoch node are both at the
    /// fence's mod revisions (a missing key has mod revision 0, which no fence holds).
    fn fence_cmps(&self, fence: &Fence) -> Result<[Compare; 2]> {
        Ok([
            Compare::mod_revision(self.key(&fence.path)?, CompareOp::Equal, fence.version.0),
            Compare::mod_revision(self.key(&fence.epoch_path)?, CompareOp::Equal, fence.epoch.0),
        ])
    }

    /// What a refused fenced operation reads, to name the fence node that moved.
    fn fence_reads(&self, fence: &Fence) -> Result<[TxnOp; 1]> {
        Ok([TxnOp::get(self.key(&fence.path)?, None)])
    }

    fn child_prefix(&self, path: &str) -> Result<String> {
        let k = self.key(path)?;
        Ok(if path == "/" { k } else { format!("{k}/") })
    }

    fn node(kv: &etcd::KeyValue) -> Node {
        Node {
            data: kv.value().to_vec(),
            version: Version(kv.mod_revision()),
            ephemeral_owner: (kv.lease() != 0).then_some(kv.lease()),
        }
    }

    async fn create(&self, path: &str, data: &[u8], lease: Option<i64>) -> Result<Version> {
        let key = self.key(path)?;
        let mut opts = PutOptions::new();
        if let Some(l) = lease {
            opts = opts.with_lease(l);
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, data, Some(opts))]);
        let r = self.client.clone().txn(txn).await.map_err(|e| map_err(e, "create", path, true))?;
        if !r.succeeded() {
            return Err(CoordError::NodeExists { path: path.to_owned() });
        }
        Ok(Version(r.header().map_or(0, |h| h.revision())))
    }

    fn children_of(prefix: &str, keys: &[etcd::KeyValue]) -> Vec<String> {
        let mut names: Vec<String> = keys
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|rest| rest.split('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn watch_from(&self, key: String, revision: i64, prefix: bool) -> Watch {
        let mut client = self.client.clone();
        let lost = session_lost(self.state.subscribe());
        Watch::new(async move {
            let events = async move {
                let mut opts = WatchOptions::new().with_start_revision(revision + 1);
                if prefix {
                    opts = opts.with_prefix();
                }
                let Ok(mut stream) = client.watch(key, Some(opts)).await else {
                    return WatchEvent::SessionLost(SessionState::Disconnected);
                };
                loop {
                    let msg = match stream.message().await {
                        Ok(Some(m)) => m,
                        _ => return WatchEvent::SessionLost(SessionState::Disconnected),
                    };
                    if msg.canceled() {
                        return WatchEvent::SessionLost(SessionState::Disconnected);
                    }
                    for ev in msg.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let deleted = ev.event_type() == etcd::EventType::Delete;
                        if !prefix {
                            return if deleted {
                                WatchEvent::Deleted
                            } else if kv.version() == 1 {
                                WatchEvent::Created
                            } else {
                                WatchEvent::DataChanged
                            };
                        }
                        // Children: a key under the prefix appeared or vanished.
                        if deleted || kv.version() == 1 {
                            return WatchEvent::ChildrenChanged;
                        }
                    }
                }
            };
            tokio::select! {
                ev = events => ev,
                s = lost => WatchEvent::SessionLost(s),
            }
        })
    }
}

#[async_trait]
impl Session for EtcdSession {
    fn id(&self) -> SessionId {
        self.lease
    }

    fn state(&self) -> SessionState {
        *self.state.borrow()
    }

    fn state_watcher(&self) -> watch::Receiver<SessionState> {
        self.state.subscribe()
    }

    fn timeout(&self) -> Duration {
        self.ttl
    }

    async fn create_ephemeral(&self, path: &str, data: &[u8]) -> Result<Version> {
        self.create(path, data, Some(self.lease)).await
    }

    async fn create_persistent(&self, path: &str, data: &[u8]) -> Result<Version> {
        self.create(path, data, None).await
    }

    async fn ensure_persistent(&self, path: &str) -> Result<()> {
        if path == "/" {
            return Ok(());
        }
        match self.create(path, b"", None).await {
            Ok(_) | Err(CoordError::NodeExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, path: &str) -> Result<Option<Node>> {
        let key = self.key(path)?;
        let r =
            self.client.clone().get(key, None).await.map_err(|e| map_err(e, "get", path, false))?;
        Ok(r.kvs().first().map(Self::node))
    }

    async fn get_and_watch(&self, path: &str) -> Result<(Option<Node>, Watch)> {
        let key = self.key(path)?;
        let r = self
            .client
            .clone()
            .get(key.clone(), None)
            .await
            .map_err(|e| map_err(e, "get", path, false))?;
        let rev = r.header().map_or(0, |h| h.revision());
        let node = r.kvs().first().map(Self::node);
        Ok((node, self.watch_from(key, rev, false)))
    }

    async fn put(&self, path: &str, data: &[u8], expected: Option<Version>) -> Result<Version> {
        let key = self.key(path)?;
        let cmp = expected_cmp(&key, expected);
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key.clone(), data, Some(PutOptions::new().with_ignore_lease()))])
            .or_else([TxnOp::get(key, None)]);
        let r = self.client.clone().txn(txn).await.map_err(|e| map_err(e, "put", path, true))?;
        if r.succeeded() {
            return Ok(Version(r.header().map_or(0, |h| h.revision())));
        }
        Err(missing_or_moved(&r, path))
    }

    async fn put_fenced(&self, path: &str, data: &[u8], fence: &Fence) -> Result<Version> {
        let key = self.key(path)?;
        let txn = Txn::new()
            .when(self.fence_cmps(fence)?)
            .and_then([TxnOp::put(key, data, None)])
            .or_else(self.fence_reads(fence)?);
        let r = self.client.clone().txn(txn).await.map_err(|e| map_err(e, "put", path, true))?;
        if !r.succeeded() {
            return Err(fenced(&r, path, fence));
        }
        Ok(Version(r.header().map_or(0, |h| h.revision())))
    }

    async fn delete_fenced(&self, path: &str, fence: &Fence) -> Result<()> {
        let key = self.key(path)?;
        let txn = Txn::new()
            .when(self.fence_cmps(fence)?)
            .and_then([TxnOp::delete(key, None)])
            .or_else(self.fence_reads(fence)?);
        let r = self.client.clone().txn(txn).await.map_err(|e| map_err(e, "delete", path, true))?;
        if !r.succeeded() {
            return Err(fenced(&r, path, fence));
        }
        let deleted = r
            .op_responses()
            .iter()
            .any(|op| matches!(op, TxnOpResponse::Delete(d) if d.deleted() > 0));
        if deleted { Ok(()) } else { Err(CoordError::NoNode { path: path.to_owned() }) }
    }

    async fn delete(&self, path: &str, expected: Option<Version>) -> Result<()> {
        let key = self.key(path)?;
        let cmp = expected_cmp(&key, expected);
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::delete(key.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let r = self.client.clone().txn(txn).await.map_err(|e| map_err(e, "delete", path, true))?;
        if r.succeeded() {
            return Ok(());
        }
        Err(missing_or_moved(&r, path))
    }

    async fn children(&self, path: &str) -> Result<Vec<String>> {
        let prefix = self.child_prefix(path)?;
        let r = self
            .client
            .clone()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .map_err(|e| map_err(e, "children", path, false))?;
        Ok(Self::children_of(&prefix, r.kvs()))
    }

    async fn children_and_watch(&self, path: &str) -> Result<(Vec<String>, Watch)> {
        let prefix = self.child_prefix(path)?;
        let r = self
            .client
            .clone()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .map_err(|e| map_err(e, "children", path, false))?;
        let rev = r.header().map_or(0, |h| h.revision());
        let names = Self::children_of(&prefix, r.kvs());
        Ok((names, self.watch_from(prefix, rev, true)))
    }

    async fn close(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        if !self.state.borrow().is_terminal() {
            let revoke = self.client.clone();
            let mut revoke = revoke;
            if let Err(e) =
                tokio::time::timeout(Duration::from_secs(2), revoke.lease_revoke(self.lease))
                    .await
                    .map_err(|_| "timed out".to_owned())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            {
                tracing::warn!(lease = self.lease, error = %e, "etcd lease revoke failed; keys stay until the ttl runs out");
            }
        }
        self.state.send_replace(SessionState::Closed);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for EtcdSession {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        // Like ZooKeeper's client: dropping an open session closes it (best effort, in the
        // background); a crashed, closed or expired one is left alone.
        if !self.state.borrow().is_terminal()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let mut client = self.client.clone();
            let lease = self.lease;
            rt.spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
            });
        }
    }
}

/// The compare of a conditional put/delete: the node is at `expected`, or (`None`) exists.
fn expected_cmp(key: &str, expected: Option<Version>) -> Compare {
    match expected {
        Some(v) => Compare::mod_revision(key, CompareOp::Equal, v.0),
        None => Compare::create_revision(key, CompareOp::Greater, 0),
    }
}

/// The refusal of a fenced operation: names the running node if it moved, else the epoch node.
fn fenced(r: &etcd::TxnResponse, path: &str, fence: &Fence) -> CoordError {
    let running_held = r.op_responses().iter().any(|op| {
        matches!(op, TxnOpResponse::Get(g)
            if g.kvs().first().is_some_and(|kv| kv.mod_revision() == fence.version.0))
    });
    let node = if running_held { &fence.epoch_path } else { &fence.path };
    CoordError::Fenced { path: path.to_owned(), fence: node.clone() }
}

fn missing_or_moved(r: &etcd::TxnResponse, path: &str) -> CoordError {
    let present = r
        .op_responses()
        .iter()
        .any(|op| matches!(op, TxnOpResponse::Get(g) if !g.kvs().is_empty()));
    if present {
        CoordError::BadVersion { path: path.to_owned() }
    } else {
        CoordError::NoNode { path: path.to_owned() }
    }
}
