//! The conformance suite (`canal_coord::testing`) run against every backend: local under paused
//! time with the real 5 s delay, ZooKeeper and etcd as real servers in real time.

use std::time::Duration;

use canal_coord::testing::{EtcdHarness, ZkHarness};

/// ZooKeeper session timeout for the suite (the test server allows ~1 s sessions).
pub const ZK_SESSION: Duration = Duration::from_millis(1500);
/// etcd lease TTL for the suite.
pub const ETCD_TTL_SECS: i64 = 2;

pub fn zk() -> Option<ZkHarness> {
    crate::support::service("CANAL_TEST_ZK").map(|s| ZkHarness::new(&s, ZK_SESSION))
}

pub fn etcd() -> Option<EtcdHarness> {
    crate::support::service("CANAL_TEST_ETCD").map(|e| EtcdHarness::new(&e, ETCD_TTL_SECS))
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    canal_coord::testing::$case(&canal_coord::testing::LocalHarness::new()).await;
                }
            )*
        }
        mod zookeeper {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(h) = super::zk() else { return };
                    canal_coord::testing::$case(&h).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(h) = super::etcd() else { return };
                    canal_coord::testing::$case(&h).await;
                }
            )*
        }
    };
}

conformance!(
    ephemeral_exclusive,
    close_removes_promptly,
    crash_expires_within_bound,
    durable_nodes_survive,
    compare_and_set,
    children_exclude_expired,
    watch_event_order,
    standby_takes_over_after_delay,
    graceful_stop_hands_over_at_once,
    last_owner_regrabs_at_once,
    active_false_hands_over,
    release_hands_over,
    graceful_exit_flushes_first,
    lease_follows_ownership,
    indeterminate_create,
    owner_session_expiry_fences,
    owner_crash_takeover,
    fenced_cursor_writes,
    stale_owner_refused_after_active_false,
    stale_owner_refused_after_release,
    stale_owner_refused_after_expiry,
    epoch_bump_failure_blocks_enter,
    epoch_bump_conflict_retries,
    cursor_store_one_activation,
    gate_never_leaves_the_node_free,
    gate_defers_to_another_candidate,
    directed_release_goes_to_the_named_candidate,
);
