//! Embedded single-node backend: an in-process tree whose durable nodes (cursors) persist under a
//! data directory, whose ephemerals vanish with their session, and which can simulate session
//! expiry and crashes for tests.
//!
//! Versions are store-wide revisions (like etcd's), persisted with the nodes, so they never
//! repeat, even across restarts. Persistence rewrites one JSON file atomically (temp file,
//! fsync, rename) after every change to a durable node.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::error::{CoordError, Result};
use crate::session::{
    Backend, Fence, Node, Session, SessionId, SessionState, Version, Watch, WatchEvent, ended,
    parent, validate_path,
};

/// Name of the file holding durable nodes inside the data directory.
pub const STORE_FILE: &str = "coord-nodes.json";

/// The embedded backend. Clones share one store.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    store: Arc<Store>,
    session_timeout: Duration,
}

impl LocalBackend {
    /// A store that keeps nothing on disk (tests, single runs).
    pub fn in_memory(session_timeout: Duration) -> Self {
        LocalBackend { store: Arc::new(Store::new(None, Tree::default())), session_timeout }
    }

    /// Opens (or creates) the store under `data_dir`, loading the durable nodes kept there.
    ///
    /// # Errors
    /// [`CoordError::Io`] when the directory cannot be created or the file cannot be read or
    /// parsed.
    pub fn open(data_dir: &Path, session_timeout: Duration) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CoordError::Io { path, source }
        };
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let file = data_dir.join(STORE_FILE);
        let mut tree = Tree::default();
        match std::fs::read(&file) {
            Ok(bytes) => {
                let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| CoordError::Io {
                    path: file.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
                tree.revision = saved.revision;
                for (path, n) in saved.nodes {
                    let data = n.data()?;
                    tree.nodes.insert(path, Entry { data, version: n.version, owner: None });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&file)(e)),
        }
        Ok(LocalBackend {
            store: Arc::new(Store::new(Some(data_dir.to_owned()), tree)),
            session_timeout,
        })
    }

    /// Opens a session (synchronous: nothing to wait for).
    pub fn session(&self) -> Arc<LocalSession> {
        let mut t = self.store.lock();
        t.next_session += 1;
        let id = t.next_session;
        let (tx, _) = watch::channel(SessionState::Connected);
        t.sessions.insert(id, tx.clone());
        drop(t);
        Arc::new(LocalSession {
            id,
            store: self.store.clone(),
            state: tx,
            timeout: self.session_timeout,
            crashed: Default::default(),
        })
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn open_session(&self) -> Result<Arc<dyn Session>> {
        Ok(self.session())
    }
}

#[derive(Debug)]
struct Store {
    tree: Mutex<Tree>,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Entry>,
    revision: i64,
    next_session: SessionId,
    sessions: HashMap<SessionId, watch::Sender<SessionState>>,
    watches: Vec<Pending>,
}

#[derive(Debug, Clone)]
struct Entry {
    data: Vec<u8>,
    version: i64,
    owner: Option<SessionId>,
}

#[derive(Debug)]
struct Pending {
    path: String,
    children: bool,
    session: SessionId,
    tx: oneshot::Sender<WatchEvent>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    revision: i64,
    nodes: BTreeMap<String, SavedNode>,
}

/// A durable node on disk: UTF-8 data as text (readable), anything else as hex.
#[derive(Serialize, Deserialize)]
struct SavedNode {
    version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
}

impl SavedNode {
    fn new(e: &Entry) -> Self {
        match std::str::from_utf8(&e.data) {
            Ok(s) => SavedNode { version: e.version, text: Some(s.to_owned()), hex: None },
            Err(_) => SavedNode {
                version: e.version,
                text: None,
                hex: Some(e.data.iter().map(|b| format!("{b:02x}")).collect()),
            },
        }
    }

    fn data(&self) -> Result<Vec<u8>> {
        if let Some(t) = &self.text {
            return Ok(t.as_bytes().to_vec());
        }
        let hex = self.hex.as_deref().unwrap_or("");
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|e| CoordError::Backend { reason: format!("bad hex in local store: {e}") })
    }
}

enum Fire {
    Data(WatchEvent),
    Children,
}

impl Store {
    fn new(data_dir: Option<PathBuf>, tree: Tree) -> Self {
        Store { tree: Mutex::new(tree), data_dir }
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        // A panic while holding the lock leaves a consistent tree (every mutation is a single
        // map operation), so a poisoned lock is still usable.
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, t: &Tree) -> Result<()> {
        let Some(dir) = &self.data_dir else { return Ok(()) };
        let saved = Saved {
            revision: t.revision,
            nodes: t
                .nodes
                .iter()
                .filter(|(_, e)| e.owner.is_none())
                .map(|(p, e)| (p.clone(), SavedNode::new(e)))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&saved)
            .map_err(|e| CoordError::Backend { reason: format!("serialize local store: {e}") })?;
        let tmp = dir.join(format!("{STORE_FILE}.tmp"));
        let dst = dir.join(STORE_FILE);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dst)
        };
        write().map_err(|source| CoordError::Io { path: dst.clone(), source })
    }
}

impl Tree {
    fn check(&self, session: SessionId) -> Result<()> {
        match self.sessions.get(&session) {
            Some(tx) => match ended(*tx.borrow()) {
                Some(e) => Err(e),
                None => Ok(()),
            },
            None => Err(CoordError::SessionClosed),
        }
    }

    /// Refuses a fenced operation on `path` unless the fence's running node and epoch node are
    /// both at its versions (called under the lock, so the check and the operation are atomic).
    fn check_fence(&self, path: &str, fence: &Fence) -> Result<()> {
        for (node, version) in [(&fence.path, fence.version), (&fence.epoch_path, fence.epoch)] {
            if self.nodes.get(node).is_none_or(|e| e.version != version.0) {
                return Err(CoordError::Fenced { path: path.to_owned(), fence: node.clone() });
            }
        }
        Ok(())
    }

    fn bump(&mut self) -> i64 {
        self.revision += 1;
        self.revision
    }

    fn fire(&mut self, path: &str, what: Fire) {
        let (hit, keep): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.watches).into_iter().partition(|w| match &what {
                Fire::Data(WatchEvent::Deleted) => w.path == path,
                Fire::Data(_) => w.path == path && !w.children,
                Fire::Children => w.path == path && w.children,
            });
        self.watches = keep;
        for w in hit {
            let ev = match &what {
                Fire::Data(WatchEvent::Deleted) if w.children => WatchEvent::Deleted,
                Fire::Data(ev) => ev.clone(),
                Fire::Children => WatchEvent::ChildrenChanged,
            };
            let _ = w.tx.send(ev);
        }
    }

    /// Creates missing parents as persistent nodes; returns whether anything durable changed.
    fn make_parents(&mut self, path: &str) -> Result<bool> {
        let mut missing = Vec::new();
        let mut p = parent(path);
        while let Some(pp) = p {
            if pp == "/" || self.nodes.contains_key(pp) {
                if let Some(e) = self.nodes.get(pp)
                    && e.owner.is_some()
                {
                    return Err(CoordError::Backend {
                        reason: format!("ephemeral node '{pp}' cannot have children"),
                    });
                }
                break;
            }
            missing.push(pp.to_owned());
            p = parent(pp);
        }
        let changed = !missing.is_empty();
        for pp in missing.into_iter().rev() {
            let v = self.bump();
            self.nodes.insert(pp.clone(), Entry { data: Vec::new(), version: v, owner: None });
            self.fire(&pp, Fire::Data(WatchEvent::Created));
            if let Some(gp) = parent(&pp) {
                self.fire(gp, Fire::Children);
            }
        }
        Ok(changed)
    }

    fn create(&mut self, path: &str, data: &[u8], owner: Option<SessionId>) -> Result<(i64, bool)> {
        if self.nodes.contains_key(path) {
            return Err(CoordError::NodeExists { path: path.to_owned() });
        }
        let parents = self.make_parents(path)?;
        let v = self.bump();
        self.nodes.insert(path.to_owned(), Entry { data: data.to_vec(), version: v, owner });
        self.fire(path, Fire::Data(WatchEvent::Created));
        if let Some(p) = parent(path) {
            self.fire(p, Fire::Children);
        }
        Ok((v, parents || owner.is_none()))
    }

    fn set(&mut self, path: &str, data: &[u8]) -> (i64, bool) {
        let v = self.bump();
        let e = self.nodes.get_mut(path).expect("caller checked presence");
        e.data = data.to_vec();
        e.version = v;
        let durable = e.owner.is_none();
        self.fire(path, Fire::Data(WatchEvent::DataChanged));
        (v, durable)
    }

    fn remove(&mut self, path: &str) -> bool {
        let Some(e) = self.nodes.remove(path) else { return false };
        self.fire(path, Fire::Data(WatchEvent::Deleted));
        if let Some(p) = parent(path) {
            self.fire(p, Fire::Children);
        }
        e.owner.is_none()
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = if path == "/" { "/".to_owned() } else { format!("{path}/") };
        self.nodes.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn children(&self, path: &str) -> Vec<String> {
        let prefix = if path == "/" { "/".to_owned() } else { format!("{path}/") };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| {
                let rest = &k[prefix.len()..];
                (!rest.contains('/')).then(|| rest.to_owned())
            })
            .collect()
    }

    /// Ends a session: its ephemerals are deleted (watchers fire) and its watches fire with
    /// `SessionLost`, all under one lock, so no one can observe the nodes gone while the
    /// session still looks alive.
    fn end_session(&mut self, id: SessionId, state: SessionState) {
        let Some(tx) = self.sessions.get(&id) else { return };
        if tx.borrow().is_terminal() {
            return;
        }
        tx.send_replace(state);
        let (mine, keep): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.watches).into_iter().partition(|w| w.session == id);
        self.watches = keep;
        for w in mine {
            let _ = w.tx.send(WatchEvent::SessionLost(state));
        }
        let owned: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, e)| e.owner == Some(id))
            .map(|(p, _)| p.clone())
            .collect();
        for p in owned {
            self.remove(&p);
        }
    }
}

/// A session on the local backend.
#[derive(Debug)]
pub struct LocalSession {
    id: SessionId,
    store: Arc<Store>,
    state: watch::Sender<SessionState>,
    timeout: Duration,
    crashed: std::sync::atomic::AtomicBool,
}

impl LocalSession {
    /// Simulates the service expiring this session now (as after a long partition).
    pub fn expire(&self) {
        self.store.lock().end_session(self.id, SessionState::Expired);
    }

    /// Simulates the owner crashing without closing: nothing is deleted now; the session
    /// expires `timeout` later (as a service notices missing heartbeats). Uses tokio time, so
    /// it is exact under a paused clock.
    pub fn crash(&self) {
        self.crashed.store(true, std::sync::atomic::Ordering::SeqCst);
        let store = self.store.clone();
        let id = self.id;
        let timeout = self.timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            store.lock().end_session(id, SessionState::Expired);
        });
    }

    fn watch_on(&self, t: &mut Tree, path: &str, children: bool) -> Watch {
        let (tx, rx) = oneshot::channel();
        t.watches.push(Pending { path: path.to_owned(), children, session: self.id, tx });
        Watch::new(async move { rx.await.unwrap_or(WatchEvent::SessionLost(SessionState::Closed)) })
    }

    fn node(e: &Entry) -> Node {
        Node { data: e.data.clone(), version: Version(e.version), ephemeral_owner: e.owner }
    }

    fn locked(&self, path: &str) -> Result<MutexGuard<'_, Tree>> {
        validate_path(path)?;
        let t = self.store.lock();
        t.check(self.id)?;
        Ok(t)
    }
}

#[async_trait]
impl Session for LocalSession {
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
        let mut t = self.locked(path)?;
        let (v, durable) = t.create(path, data, Some(self.id))?;
        if durable {
            self.store.persist(&t)?;
        }
        Ok(Version(v))
    }

    async fn create_persistent(&self, path: &str, data: &[u8]) -> Result<Version> {
        let mut t = self.locked(path)?;
        let (v, _) = t.create(path, data, None)?;
        self.store.persist(&t)?;
        Ok(Version(v))
    }

    async fn ensure_persistent(&self, path: &str) -> Result<()> {
        let mut t = self.locked(path)?;
        if path == "/" || t.nodes.contains_key(path) {
            return Ok(());
        }
        t.create(path, b"", None)?;
        self.store.persist(&t)
    }

    async fn get(&self, path: &str) -> Result<Option<Node>> {
        let t = self.locked(path)?;
        Ok(t.nodes.get(path).map(Self::node))
    }

    async fn get_and_watch(&self, path: &str) -> Result<(Option<Node>, Watch)> {
        let mut t = self.locked(path)?;
        let node = t.nodes.get(path).map(Self::node);
        let w = self.watch_on(&mut t, path, false);
        Ok((node, w))
    }

    async fn put(&self, path: &str, data: &[u8], expected: Option<Version>) -> Result<Version> {
        let mut t = self.locked(path)?;
        let Some(e) = t.nodes.get(path) else {
            return Err(CoordError::NoNode { path: path.to_owned() });
        };
        if expected.is_some_and(|v| v.0 != e.version) {
            return Err(CoordError::BadVersion { path: path.to_owned() });
        }
        let (v, durable) = t.set(path, data);
        if durable {
            self.store.persist(&t)?;
        }
        Ok(Version(v))
    }

    async fn put_fenced(&self, path: &str, data: &[u8], fence: &Fence) -> Result<Version> {
        let mut t = self.locked(path)?;
        t.check_fence(path, fence)?;
        let v = if t.nodes.contains_key(path) {
            t.set(path, data).0
        } else {
            t.create(path, data, None)?.0
        };
        self.store.persist(&t)?;
        Ok(Version(v))
    }

    async fn delete_fenced(&self, path: &str, fence: &Fence) -> Result<()> {
        let mut t = self.locked(path)?;
        t.check_fence(path, fence)?;
        if !t.nodes.contains_key(path) {
            return Err(CoordError::NoNode { path: path.to_owned() });
        }
        if t.has_children(path) {
            return Err(CoordError::NotEmpty { path: path.to_owned() });
        }
        if t.remove(path) {
            self.store.persist(&t)?;
        }
        Ok(())
    }

    async fn delete(&self, path: &str, expected: Option<Version>) -> Result<()> {
        let mut t = self.locked(path)?;
        let Some(e) = t.nodes.get(path) else {
            return Err(CoordError::NoNode { path: path.to_owned() });
        };
        if expected.is_some_and(|v| v.0 != e.version) {
            return Err(CoordError::BadVersion { path: path.to_owned() });
        }
        if t.has_children(path) {
            return Err(CoordError::NotEmpty { path: path.to_owned() });
        }
        if t.remove(path) {
            self.store.persist(&t)?;
        }
        Ok(())
    }

    async fn children(&self, path: &str) -> Result<Vec<String>> {
        let t = self.locked(path)?;
        Ok(t.children(path))
    }

    async fn children_and_watch(&self, path: &str) -> Result<(Vec<String>, Watch)> {
        let mut t = self.locked(path)?;
        let c = t.children(path);
        let w = self.watch_on(&mut t, path, true);
        Ok((c, w))
    }

    async fn close(&self) {
        self.store.lock().end_session(self.id, SessionState::Closed);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        // Like ZooKeeper's client: dropping the last handle closes the session, unless it
        // "crashed", in which case the crash timer expires it.
        if self.crashed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut t = self.store.lock();
        t.end_session(self.id, SessionState::Closed);
        t.sessions.remove(&self.id);
    }
}
