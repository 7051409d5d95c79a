//! The process's coordination handle: one live session shared by every monitor, replaced by a
//! new one after expiry; and cluster-node registration that follows it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use crate::error::{CoordError, Result};
use crate::session::{Backend, Session};

/// One coordination service as the process uses it: a backend plus the current session.
///
/// Every monitor of a server shares this session (as Java Canal shares one ZkClient); when it
/// expires, the first caller of [`Coordinator::session`] opens a new one and everyone rejoins on
/// it.
#[derive(Debug)]
pub struct Coordinator {
    backend: Arc<dyn Backend>,
    current: Mutex<Option<Arc<dyn Session>>>,
}

impl Coordinator {
    /// Wraps a backend; no session is opened until first asked for.
    pub fn new(backend: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Coordinator { backend, current: Mutex::new(None) })
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The current session, or a new one when there is none or it has ended.
    ///
    /// # Errors
    /// What [`Backend::open_session`] reports.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn session(&self) -> Result<Arc<dyn Session>> {
        let mut cur = self.current.lock().await;
        if let Some(s) = cur.as_ref()
            && !s.state().is_terminal()
        {
            return Ok(s.clone());
        }
        let s = self.backend.open_session().await?;
        tracing::info!(
            backend = self.backend.name(),
            session = s.id(),
            "coordination session opened"
        );
        *cur = Some(s.clone());
        Ok(s)
    }

    /// Closes the current session (its ephemerals go at once). Monitors see the session end.
    ///
    /// # Cancel safety
    /// Cancel safe; the session may be left open.
    pub async fn close(&self) {
        let s = self.current.lock().await.take();
        if let Some(s) = s {
            s.close().await;
        }
    }
}

/// Ephemeral registration nodes (`/otter/canal/cluster/{addr}`,
/// `…/{dest}/cluster/{addr}`) kept present on every session, as Canal re-creates them after
/// each new ZooKeeper session.
#[derive(Debug)]
pub struct ClusterRegistration {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ClusterRegistration {
    /// Starts keeping `paths` registered (empty data) on `coord`'s session.
    pub fn start(coord: Arc<Coordinator>, paths: Vec<String>) -> Self {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                let session = tokio::select! {
                    _ = &mut stop_rx => return,
                    s = coord.session() => s,
                };
                let session = match session {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster registration: no session, retrying");
                        tokio::select! {
                            _ = &mut stop_rx => return,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        }
                    }
                };
                let mut all_ok = true;
                for p in &paths {
                    if let Err(e) = register(session.as_ref(), p).await {
                        all_ok = false;
                        tracing::warn!(path = %p, error = %e, "cluster registration failed");
                    }
                }
                let mut state = session.state_watcher();
                // After a failure, retry soon; otherwise only a new session needs re-registration.
                let wait = if all_ok {
                    Duration::from_secs(365 * 86400)
                } else {
                    Duration::from_millis(500)
                };
                let retry = tokio::time::sleep(wait);
                tokio::pin!(retry);
                loop {
                    let s = *state.borrow_and_update();
                    if s.is_terminal() {
                        break;
                    }
                    tokio::select! {
                        _ = &mut stop_rx => {
                            for p in &paths {
                                unregister(session.as_ref(), p).await;
                            }
                            return;
                        }
                        _ = &mut retry => break,
                        r = state.changed() => if r.is_err() { break },
                    }
                }
            }
        });
        ClusterRegistration { stop: Some(stop_tx), task }
    }

    /// Deletes the registration nodes and stops.
    ///
    /// # Cancel safety
    /// Not cancel safe: the nodes may stay until the session ends.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ClusterRegistration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deletes a registration node, retrying transient failures for a few seconds: a node left
/// behind would name this server as a candidate (for clients and balancers) until its session
/// ends. Gone already, or the session ended: nothing to do.
async fn unregister(session: &dyn Session, path: &str) {
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=6 {
        match session.delete(path, None).await {
            Ok(()) | Err(CoordError::NoNode { .. }) => return,
            Err(e) if e.is_session_lost() => return,
            Err(e) if e.is_transient() && attempt < 6 => {
                tracing::debug!(path, error = %e, "removing the registration failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "registration left until the session ends");
                return;
            }
        }
    }
}

async fn register(session: &dyn Session, path: &str) -> Result<()> {
    match session.create_ephemeral(path, b"").await {
        Ok(_) => Ok(()),
        Err(CoordError::NodeExists { .. }) | Err(CoordError::Indeterminate { .. }) => {
            match session.get(path).await? {
                Some(n) if n.ephemeral_owner == Some(session.id()) => Ok(()),
                // A leftover of one of our own older sessions (or someone else's with our
                // address): replace it so it does not vanish with that session.
                Some(n) => {
                    let _ = session.delete(path, Some(n.version)).await;
                    session.create_ephemeral(path, b"").await.map(|_| ())
                }
                None => session.create_ephemeral(path, b"").await.map(|_| ()),
            }
        }
        Err(e) => Err(e),
    }
}
