//! The coordination session trait every backend implements, and the values it deals in.
//!
//! The trait is deliberately small (ZooKeeper's model): nodes addressed by `/`-separated paths
//! hold bytes and a [`Version`]; ephemeral nodes belong to a session and vanish when it closes or
//! expires; watches are one-shot. Policies ([`crate::running`], [`crate::cursor`]) are written
//! once on top of it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{CoordError, Result};

/// Identity of a session, unique within its backend (ZooKeeper session id, etcd lease id,
/// local counter).
pub type SessionId = i64;

/// Version of a node, compared for compare-and-set and fencing.
///
/// ZooKeeper: the node's data version. etcd and local: the node's modification revision, which
/// is unique across the whole store, so a re-created node never repeats an old version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub i64);

/// A node as read: its bytes, version and (for ephemerals) the owning session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's data, byte for byte.
    pub data: Vec<u8>,
    /// The version to pass to compare-and-set or a versioned delete.
    pub version: Version,
    /// The session owning an ephemeral node, `None` for a persistent one.
    pub ephemeral_owner: Option<SessionId>,
}

/// Proof of ownership carried by a fenced write or delete: the running node at the version its
/// owner confirmed, and the destination's epoch node at the version the owner's activation
/// wrote. A fenced operation is refused once either has moved: the running node is gone or
/// rewritten, or a later activation bumped the epoch.
///
/// The epoch is what tells owners apart on every backend: ZooKeeper numbers a node's versions
/// from 0 again when it is re-created, so the running node alone cannot tell a deposed owner's
/// node from its successor's; the epoch node is persistent and every activation moves it
/// forward (see [`crate::running`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    /// Path of the node that must still be held (a `running` node).
    pub path: String,
    /// Version the node must still have.
    pub version: Version,
    /// Path of the persistent epoch node bumped by this activation
    /// ([`crate::path::running_epoch`] of `path`).
    pub epoch_path: String,
    /// Version the epoch node must still have: the one this activation's bump wrote. Versions
    /// of one epoch node only grow (it is never deleted), so a larger one is a later activation.
    pub epoch: Version,
}

impl Fence {
    /// Whether this fence belongs to an earlier activation of the same running node than
    /// `other`.
    pub fn is_older_than(&self, other: &Fence) -> bool {
        self.epoch_path == other.epoch_path && self.epoch < other.epoch
    }
}

/// State of a session as its owner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// Connected; operations are served.
    Connected,
    /// The connection is lost; the session may still be alive on the server. Owners stop
    /// serving (they cannot know whether they still own anything) until it reconnects.
    Disconnected,
    /// Terminal: the session expired and its ephemeral nodes are gone.
    Expired,
    /// Terminal: the session was closed by its owner.
    Closed,
}

impl SessionState {
    /// Expired and Closed are terminal: a new session is needed.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Expired | SessionState::Closed)
    }
}

/// What fired a one-shot [`Watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The watched node was created.
    Created,
    /// The watched node's data changed.
    DataChanged,
    /// The watched node was deleted.
    Deleted,
    /// A child of the watched node was created or deleted.
    ChildrenChanged,
    /// The session ended or lost its connection before anything else happened; re-read on a live
    /// session.
    SessionLost(SessionState),
}

/// A one-shot watch: resolves once, with the first change after it was armed.
///
/// Dropping it cancels it.
pub struct Watch {
    inner: Pin<Box<dyn Future<Output = WatchEvent> + Send>>,
}

impl Watch {
    /// Wraps a future resolving to the watch's event (used by backends).
    pub fn new(fut: impl Future<Output = WatchEvent> + Send + 'static) -> Self {
        Watch { inner: Box::pin(fut) }
    }

    /// Waits for the event.
    ///
    /// Cancel safety: dropping the future drops the watch; nothing is lost but the watch itself.
    pub async fn changed(self) -> WatchEvent {
        self.inner.await
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watch")
    }
}

/// Opens sessions on one coordination service.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Short name for logs (`local`, `zookeeper`, `etcd`).
    fn name(&self) -> &'static str;

    /// Opens a new session.
    ///
    /// # Errors
    /// [`CoordError::Unavailable`] when the service cannot be reached, other variants for
    /// definite failures.
    ///
    /// # Cancel safety
    /// Cancel safe: a half-opened session is dropped (and so closed).
    async fn open_session(&self) -> Result<Arc<dyn Session>>;
}

/// One coordination session.
///
/// Paths are absolute, `/`-separated, without a trailing slash. Creates make missing parents
/// (as empty persistent nodes), as Canal does on `NoNode`. Every method fails with
/// [`CoordError::SessionExpired`] / [`CoordError::SessionClosed`] once the session has ended.
///
/// Cancel safety of every async method: dropping the future abandons the request; a write may
/// or may not have been applied (as with [`CoordError::Indeterminate`]), so re-read after
/// cancelling a write.
#[async_trait]
pub trait Session: Send + Sync + fmt::Debug + 'static {
    /// This session's id.
    fn id(&self) -> SessionId;

    /// Current state.
    fn state(&self) -> SessionState;

    /// A receiver that sees every later state change.
    fn state_watcher(&self) -> watch::Receiver<SessionState>;

    /// Session timeout: how long after its last heartbeat the service expires the session.
    fn timeout(&self) -> Duration;

    /// Creates an ephemeral node owned by this session.
    ///
    /// # Errors
    /// [`CoordError::NodeExists`] when taken; [`CoordError::Indeterminate`] when the answer was
    /// lost (re-read the node: if it holds our data and this session owns it, it is ours).
    async fn create_ephemeral(&self, path: &str, data: &[u8]) -> Result<Version>;

    /// Creates a persistent node (and missing parents).
    ///
    /// # Errors
    /// [`CoordError::NodeExists`] when present.
    async fn create_persistent(&self, path: &str, data: &[u8]) -> Result<Version>;

    /// Creates the persistent node and its parents if missing; idempotent.
    ///
    /// # Errors
    /// Backend and session errors only.
    async fn ensure_persistent(&self, path: &str) -> Result<()>;

    /// Reads a node; `None` when absent.
    ///
    /// # Errors
    /// Backend and session errors only.
    async fn get(&self, path: &str) -> Result<Option<Node>>;

    /// Reads a node and arms a one-shot watch for its creation, data change or deletion.
    ///
    /// # Errors
    /// Backend and session errors only.
    async fn get_and_watch(&self, path: &str) -> Result<(Option<Node>, Watch)>;

    /// Replaces an existing node's data, if `expected` is given only at that version
    /// (compare-and-set). An ephemeral node stays ephemeral.
    ///
    /// # Errors
    /// [`CoordError::NoNode`], [`CoordError::BadVersion`], [`CoordError::Indeterminate`].
    async fn put(&self, path: &str, data: &[u8], expected: Option<Version>) -> Result<Version>;

    /// Writes a persistent node (creating it and its parents if missing) only while `fence`
    /// holds: the running node and the epoch node are both still at the fence's versions,
    /// checked atomically with the write (ZooKeeper: one multi-op with two version checks;
    /// etcd: one txn comparing both mod revisions; local: under the store's lock). A deposed
    /// owner's write is therefore refused on every backend, whatever the new owner's running
    /// node version is, because the new owner bumped the epoch before it served.
    ///
    /// # Errors
    /// [`CoordError::Fenced`] when the fence no longer holds; session errors.
    async fn put_fenced(&self, path: &str, data: &[u8], fence: &Fence) -> Result<Version>;

    /// Deletes a node only while `fence` holds, atomically with the same two checks as
    /// [`Session::put_fenced`].
    ///
    /// # Errors
    /// [`CoordError::Fenced`] when the fence no longer holds (checked first);
    /// [`CoordError::NoNode`] when the fence holds and the node is absent;
    /// [`CoordError::NotEmpty`] (ZooKeeper, local) when it has children; session errors.
    async fn delete_fenced(&self, path: &str, fence: &Fence) -> Result<()>;

    /// Deletes a node, if `expected` is given only at that version.
    ///
    /// # Errors
    /// [`CoordError::NoNode`], [`CoordError::BadVersion`], [`CoordError::NotEmpty`].
    async fn delete(&self, path: &str, expected: Option<Version>) -> Result<()>;

    /// Names (not paths) of the node's children, sorted; empty when the node is absent.
    /// Ephemerals of ended sessions are never listed.
    ///
    /// # Errors
    /// Backend and session errors only.
    async fn children(&self, path: &str) -> Result<Vec<String>>;

    /// Like [`Session::children`], and arms a one-shot watch that fires when a child is created
    /// or deleted (or the node itself is created or deleted).
    ///
    /// # Errors
    /// Backend and session errors only.
    async fn children_and_watch(&self, path: &str) -> Result<(Vec<String>, Watch)>;

    /// Closes the session: its ephemeral nodes are deleted at once and its watches fire with
    /// [`WatchEvent::SessionLost`]. Idempotent; never fails (a failure to tell the service only
    /// makes the ephemerals wait for expiry).
    async fn close(&self);

    /// For tests: downcasting to the backend's session type (crash and expiry simulation).
    fn as_any(&self) -> &dyn Any;
}

/// Checks that `path` is absolute, has no empty segment and no trailing slash.
///
/// # Errors
/// [`CoordError::InvalidPath`] naming the rule broken.
pub fn validate_path(path: &str) -> Result<()> {
    let bad = |reason| Err(CoordError::InvalidPath { path: path.to_owned(), reason });
    if !path.starts_with('/') {
        return bad("not absolute");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad("trailing slash");
    }
    if path[1..].split('/').any(str::is_empty) {
        return bad("empty segment");
    }
    Ok(())
}

/// The parent of a valid path (`None` for `/`).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Shared by backends: maps a terminal state to the error operations return.
pub(crate) fn ended(state: SessionState) -> Option<CoordError> {
    match state {
        SessionState::Expired => Some(CoordError::SessionExpired),
        SessionState::Closed => Some(CoordError::SessionClosed),
        _ => None,
    }
}

/// A watch that resolves when the session leaves `Connected` (used to make one-shot watches
/// fire on session loss).
pub(crate) async fn session_lost(mut rx: watch::Receiver<SessionState>) -> SessionState {
    loop {
        let s = *rx.borrow_and_update();
        if s != SessionState::Connected {
            return s;
        }
        if rx.changed().await.is_err() {
            return SessionState::Closed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(validate_path("/otter/canal").is_ok());
        assert!(validate_path("/").is_ok());
        assert!(validate_path("otter").is_err());
        assert!(validate_path("/a/").is_err());
        assert!(validate_path("/a//b").is_err());
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
    }
}
