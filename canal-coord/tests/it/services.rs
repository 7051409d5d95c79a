//! Proves the test services are real (owned by the services helper): a ZooKeeper ephemeral node
//! goes with its session, and an etcd key goes with its lease.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client as Etcd, PutOptions};
use zookeeper_client::{Acls, Client as Zk, CreateMode, EventType};

use crate::support;

/// A name no earlier run on the same services used.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

async fn zk_connect(endpoint: &str) -> Zk {
    Zk::connector()
        // Long enough that only closing the session, not expiry, can explain a fast removal.
        .with_session_timeout(Duration::from_secs(10))
        .connect(endpoint)
        .await
        .unwrap_or_else(|e| panic!("connecting to zookeeper at {endpoint}: {e}"))
}

#[tokio::test]
async fn zookeeper_ephemeral_node_goes_with_its_session() {
    let Some(endpoint) = support::service("CANAL_TEST_ZK") else { return };
    let dir = format!("/canal-it/{}", unique("services"));
    let node = format!("{dir}/running");

    let owner = zk_connect(&endpoint).await;
    let observer = zk_connect(&endpoint).await;
    assert_ne!(owner.session_id(), observer.session_id(), "two sessions");

    owner
        .mkdir(&dir, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
        .await
        .expect("mkdir -p the test directory");
    owner
        .create(&node, b"owner", &CreateMode::Ephemeral.with_acls(Acls::anyone_all()))
        .await
        .expect("create the ephemeral node");

    // The other session sees it, with the owner's session as ephemeral owner.
    let (data, stat) = observer.get_data(&node).await.expect("observer reads the node");
    assert_eq!(data, b"owner");
    assert_eq!(stat.ephemeral_owner, owner.session_id().0, "node belongs to the owner's session");

    // Watch for the deletion, then close the owner's session by dropping its only client.
    let (exists, watcher) = observer.check_and_watch_stat(&node).await.expect("exists-watch");
    assert!(exists.is_some());
    let t0 = Instant::now();
    drop(owner);
    let event = tokio::time::timeout(Duration::from_secs(5), watcher.changed())
        .await
        .expect("the node was not deleted within 5 s of closing its session");
    assert_eq!(event.event_type, EventType::NodeDeleted);
    assert_eq!(event.path, node);
    // Well below the 10 s session timeout: the close removed it, not expiry.
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    assert!(observer.check_stat(&node).await.expect("check_stat").is_none(), "node is gone");

    observer.delete(&dir, None).await.expect("remove the test directory");
}

async fn etcd_connect(endpoint: &str) -> Etcd {
    Etcd::connect([endpoint], None)
        .await
        .unwrap_or_else(|e| panic!("connecting to etcd at {endpoint}: {e}"))
}

#[tokio::test]
async fn etcd_key_goes_with_its_revoked_lease() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    let mut etcd = etcd_connect(&endpoint).await;
    let key = format!("/canal-it/{}/running", unique("services"));

    // A long TTL, so that only the revoke can remove the key during the test.
    let lease = etcd.lease_grant(60, None).await.expect("lease grant");
    etcd.put(key.as_str(), "owner", Some(PutOptions::new().with_lease(lease.id())))
        .await
        .expect("put with lease");

    let got = etcd.get(key.as_str(), None).await.expect("get");
    let kv = got.kvs().first().expect("the key exists");
    assert_eq!(kv.value(), b"owner");
    assert_eq!(kv.lease(), lease.id(), "the key is attached to the lease");

    etcd.lease_revoke(lease.id()).await.expect("lease revoke");
    let got = etcd.get(key.as_str(), None).await.expect("get after revoke");
    assert!(got.kvs().is_empty(), "revoking the lease deleted the key");
}

#[tokio::test]
async fn etcd_key_goes_when_its_lease_expires() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    let mut etcd = etcd_connect(&endpoint).await;
    let key = format!("/canal-it/{}/expiring", unique("services"));

    let lease = etcd.lease_grant(1, None).await.expect("lease grant");
    etcd.put(key.as_str(), "x", Some(PutOptions::new().with_lease(lease.id())))
        .await
        .expect("put with lease");
    assert_eq!(etcd.get(key.as_str(), None).await.expect("get").kvs().len(), 1);

    // No keep-alive: the key must go once the TTL (1 s, etcd's minimum here) has passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if etcd.get(key.as_str(), None).await.expect("get").kvs().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the key outlived its 1 s lease by 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
