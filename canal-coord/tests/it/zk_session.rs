//! ZooKeeper sessions ending while the client publishes their last state: the scenario of the
//! SIGSEGV in issue 17 (docs/notes/sigsegv.md), looped. Before the fix, a session's state task
//! waited on zookeeper-client's state channel and was dropped (aborted on close or crash, or
//! dropped with its runtime) while the client published Closed; asyncs-sync 0.4's `Notify` then
//! wrote a stack address into the publishing worker's stack, about 3 times per 1000 session ends
//! here, and a tokio worker jumped to it now and then. The loops are short by default;
//! `CANAL_ZK_END_LOOPS=2000` runs them long.

use std::sync::Arc;
use std::time::Duration;

use canal_coord::backend::zk::ZkBackend;
use canal_coord::{CoordError, Session, SessionState};

const SESSION: Duration = Duration::from_millis(1500);

fn loops() -> usize {
    std::env::var("CANAL_ZK_END_LOOPS").ok().and_then(|s| s.parse().ok()).unwrap_or(100)
}

/// Crash, close and (every fifth round) expiry, four sessions at a time, each ended just after its state task has
/// started waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_while_the_client_publishes_their_state() {
    let Some(servers) = crate::support::service("CANAL_TEST_ZK") else { return };
    let backend = Arc::new(ZkBackend::new(&servers, SESSION));
    let rounds = loops().div_ceil(4);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                let s = backend.open_detached_session().await.expect("session");
                tokio::time::sleep(Duration::from_millis(1)).await;
                s.crash();
                assert_eq!(s.state(), SessionState::Closed);

                let s = backend.open_detached_session().await.expect("session");
                tokio::time::sleep(Duration::from_millis(1)).await;
                s.close().await;
                assert_eq!(s.state(), SessionState::Closed);
                let r = s.get("/").await;
                assert!(matches!(r, Err(CoordError::SessionClosed)), "{r:?}");

                // Expiry takes up to seconds when our client wins its session back from the
                // thief (ZkSession::expire): every fifth round only.
                if round % 5 == 0 {
                    let s = backend.open_detached_session().await.expect("session");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    s.expire().await.expect("expire");
                    assert_eq!(s.state(), SessionState::Expired);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("no task panicked");
    }
}

/// Runtimes dropped with sessions open, as at the end of every test and of a server: the
/// runtime's workers drop the client's tasks and ours concurrently.
#[test]
fn runtimes_shut_down_with_sessions_open() {
    let Some(servers) = crate::support::service("CANAL_TEST_ZK") else { return };
    let backend = ZkBackend::new(&servers, SESSION);
    for _ in 0..loops() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let open = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(backend.open_detached_session().await.expect("session"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            v
        });
        assert!(open.iter().all(|s| s.state() == SessionState::Connected));
        drop(rt);
        drop(open);
    }
}
