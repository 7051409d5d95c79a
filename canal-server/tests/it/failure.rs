//! Failure paths with a real MariaDB and real coordinators: coordinator errors during activation
//! are retried (never "no clients", which would start at the source's head and skip rows), an
//! unparsable cursor is a hard error and the node is released, a client that never acked fails
//! over to where it subscribed, a failing instance is restarted from the cursor and then
//! released, GET timeouts of any size, and a half-open client beside a consuming one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use canal_coord::config::CoordConfig;
use canal_coord::path;
use canal_coord::testing::{Fault, FaultBackend, Op};
use canal_core::instance::StartConfig;
use canal_core::protocol::packet::{Get, PacketType, Sub};
use canal_core::store::BatchMode;
use canal_server::server::{DestinationReport, Server, ServerSettings, SupervisorConfig};
use mysql_async::prelude::Queryable;
use prost::Message;

use crate::ha::{consume, etcd, fixture, settings, wait_active, zk};
use crate::support;
use crate::wire::{Client, messages};

fn fast(coord: CoordConfig, max_failures: u32) -> ServerSettings {
    let mut s = settings(coord);
    s.supervisor = SupervisorConfig {
        max_failures,
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        activation_timeout: Duration::from_secs(10),
    };
    s
}

fn report(s: &Server, dest: &str) -> DestinationReport {
    s.reports().into_iter().find(|r| r.destination == dest).expect("a report")
}

/// Waits until the destination's report satisfies `cond`.
async fn wait_report(
    s: &Server,
    dest: &str,
    limit: Duration,
    cond: impl Fn(&DestinationReport) -> bool,
) -> DestinationReport {
    let t0 = Instant::now();
    loop {
        let r = report(s, dest);
        if cond(&r) {
            return r;
        }
        assert!(t0.elapsed() < limit, "condition not met after {limit:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn insert(admin: &mut mysql_async::Conn, db: &str, ids: std::ops::RangeInclusive<i64>) {
    for i in ids {
        admin.query_drop(format!("INSERT INTO `{db}`.t VALUES ({i})")).await.unwrap();
    }
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}

/// One error on each coordinator read of activation (children, the cursor, the filter): the
/// standby retries and resumes from the cursor; it never starts at the head (its config has no
/// start position, so the head would skip the rows written while no server ran).
async fn activation_read_errors(coord: CoordConfig, tag: &str) {
    let Some(mut fx) = fixture(tag).await else { return };
    let a = Server::start(fast(coord.clone(), 5), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&a, &fx.db, Duration::from_secs(15)).await;
    insert(&mut fx.admin, &fx.db, 1..=5).await;
    assert_eq!(consume(a.local_addr(), &fx.db, 5).await, (1..=5).collect::<Vec<_>>());
    // The ack has no reply: it was processed once the store is empty.
    wait_report(&a, &fx.db, Duration::from_secs(10), |r| r.store_entries == 0).await;
    a.shutdown().await;
    insert(&mut fx.admin, &fx.db, 6..=10).await;

    let mut head = fx.instance.clone();
    head.start = StartConfig::default();
    let faults = [
        (Op::Children, path::destination(&fx.db), Fault::Unavailable),
        (Op::Get, path::client_cursor(&fx.db, 1001), Fault::TimeoutNotApplied),
        (Op::Get, path::client_filter(&fx.db, 1001), Fault::Unavailable),
    ];
    let backend = Arc::new(FaultBackend::on_paths(coord.open_backend().unwrap(), faults));
    let b = Server::start_with_backend(fast(coord, 5), vec![head], backend.clone()).await.unwrap();
    wait_active(&b, &fx.db, Duration::from_secs(30)).await;
    assert_eq!(backend.pending_path_faults(), 0, "every fault was injected");
    let r = report(&b, &fx.db);
    assert_eq!(r.failures.activation_failures, 3, "{r:?}");
    assert_eq!(r.failures.releases, 0, "{r:?}");
    let last = r.failures.last_error.unwrap_or_default();
    assert!(last.contains(&path::client_filter(&fx.db, 1001)), "{last}");
    let ids = sorted(consume(b.local_addr(), &fx.db, 5).await);
    assert_eq!(ids, (6..=10).collect::<Vec<_>>(), "rows written while no server ran");
    b.shutdown().await;
}

#[tokio::test]
async fn zookeeper_activation_read_errors_retry_instead_of_starting_at_the_head() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    activation_read_errors(zk(servers), "actzk").await;
}

#[tokio::test]
async fn etcd_activation_read_errors_retry_instead_of_starting_at_the_head() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    activation_read_errors(etcd(endpoint), "actetcd").await;
}

#[tokio::test]
async fn unparsable_cursor_is_a_hard_error_then_the_node_is_released() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(fx) = fixture("badcur").await else { return };
    let coord = canal_coord::Coordinator::new(zk(servers.clone()).open_backend().unwrap());
    let s = coord.session().await.unwrap();
    let cpath = path::client_cursor(&fx.db, 1001);
    s.create_persistent(&cpath, b"{not a cursor").await.unwrap();
    let server = Server::start(fast(zk(servers), 2), vec![fx.instance.clone()]).await.unwrap();
    let r =
        wait_report(&server, &fx.db, Duration::from_secs(20), |r| r.failures.releases >= 1).await;
    let why = r.failures.released.unwrap_or_default();
    assert!(why.contains(&cpath) && why.contains("unreadable cursor"), "{why}");
    assert_eq!(r.activations, 0, "never served from a guessed position");
    assert!(r.failures.activation_failures >= 2);
    server.shutdown().await;
    s.delete(&cpath, None).await.unwrap();
    coord.close().await;
}

#[tokio::test]
async fn a_client_that_never_acked_fails_over_to_where_it_subscribed() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = fixture("noack").await else { return };
    // No start position: without a recorded cursor a new owner would start at the head.
    let mut head = fx.instance.clone();
    head.start = StartConfig::default();
    let a = Server::start(fast(zk(servers.clone()), 5), vec![head.clone()]).await.unwrap();
    wait_active(&a, &fx.db, Duration::from_secs(15)).await;
    let mut c = Client::connect(a.local_addr()).await;
    c.auth("", None).await;
    assert_eq!(c.subscribe(&fx.db, "1001").await.error_code, None);
    // The subscription's cursor reaches the coordinator (whether the head was resolved before
    // or after the subscribe).
    let coord = canal_coord::Coordinator::new(zk(servers.clone()).open_backend().unwrap());
    let s = coord.session().await.unwrap();
    let t0 = Instant::now();
    while s.get(&path::client_cursor(&fx.db, 1001)).await.unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(15), "no cursor recorded at subscription");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    insert(&mut fx.admin, &fx.db, 1..=5).await;
    drop(c);
    a.shutdown().await;
    let b = Server::start(fast(zk(servers), 5), vec![head]).await.unwrap();
    wait_active(&b, &fx.db, Duration::from_secs(15)).await;
    let ids = sorted(consume(b.local_addr(), &fx.db, 5).await);
    assert_eq!(ids, (1..=5).collect::<Vec<_>>(), "rows written after the subscription");
    b.shutdown().await;
    coord.close().await;
}

async fn kill_user_connections(admin: &mut mysql_async::Conn, user: &str) {
    let ids: Vec<u64> = admin
        .exec("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", (user,))
        .await
        .unwrap();
    for id in ids {
        // The connection may have ended meanwhile.
        if let Err(e) = admin.query_drop(format!("KILL CONNECTION {id}")).await {
            eprintln!("kill {id}: {e}");
        }
    }
}

async fn grant(admin: &mut mysql_async::Conn, user: &str) {
    admin.query_drop(format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")).await.unwrap();
    admin
        .query_drop(format!(
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '{user}'@'%'"
        ))
        .await
        .unwrap();
}

/// The source's credentials are revoked: the instance fails; clients get Canal's error (not
/// empty batches) while it is restarted with backoff; once the account is back it resumes from
/// the acked cursor with nothing lost; revoked again it fails `max_failures` times and the
/// server releases the node.
#[tokio::test]
async fn a_failing_instance_restarts_from_the_cursor_then_releases_the_node() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = fixture("fail").await else { return };
    let user = format!("u{}", &fx.db[fx.db.len().saturating_sub(20)..]).replace('-', "_");
    grant(&mut fx.admin, &user).await;
    let mut cfg = fx.instance.clone();
    cfg.source.user = user.clone();
    cfg.source.password = "pw".into();
    let mut settings = fast(zk(servers), 4);
    settings.supervisor.backoff = Duration::from_millis(1500);
    settings.supervisor.backoff_max = Duration::from_millis(1500);
    let server = Server::start(settings, vec![cfg]).await.unwrap();
    wait_active(&server, &fx.db, Duration::from_secs(15)).await;
    insert(&mut fx.admin, &fx.db, 1..=3).await;
    assert_eq!(consume(server.local_addr(), &fx.db, 3).await, vec![1, 2, 3]);
    let mut subscribed = Client::connect(server.local_addr()).await;
    subscribed.auth("", None).await;
    assert_eq!(subscribed.subscribe(&fx.db, "1001").await.error_code, None);

    fx.admin.query_drop(format!("DROP USER '{user}'@'%'")).await.unwrap();
    kill_user_connections(&mut fx.admin, &user).await;
    insert(&mut fx.admin, &fx.db, 4..=6).await;
    wait_report(&server, &fx.db, Duration::from_secs(30), |r| r.failures.instance_failures >= 1)
        .await;
    // While failed (the restart is 1.5 s away), a subscribed client's GET gets Canal's error
    // with the reason, not an empty batch.
    let p = subscribed.get(&fx.db, 10, 100).await;
    assert_eq!(p.r#type, PacketType::Ack as i32, "{p:?}");
    let ack = canal_core::protocol::packet::Ack::decode(p.body).unwrap();
    assert_eq!(ack.error_code, Some(400), "{ack:?}");
    assert!(ack.error_message.contains("failed") && ack.error_message.contains(&user), "{ack:?}");
    drop(subscribed);
    // New connections too.
    let t0 = Instant::now();
    loop {
        let mut c = Client::connect(server.local_addr()).await;
        c.auth("", None).await;
        let ack = c.subscribe(&fx.db, "1001").await;
        if ack.error_code == Some(400) {
            assert!(ack.error_message.contains("failed"), "{ack:?}");
            break;
        }
        // Between two runs a restart may be serving for a moment.
        assert!(t0.elapsed() < Duration::from_secs(10), "no error while failed: {ack:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = report(&server, &fx.db);
    assert!(
        r.failures.last_error.as_deref().is_some_and(|e| e.contains("instance failed")),
        "{r:?}"
    );
    assert_eq!(r.failures.releases, 0);

    grant(&mut fx.admin, &user).await;
    let r = wait_report(&server, &fx.db, Duration::from_secs(30), |r| {
        r.state.as_deref() == Some("running")
    })
    .await;
    assert!(r.failures.restarts >= 1, "{r:?}");
    let ids = sorted(consume(server.local_addr(), &fx.db, 3).await);
    assert_eq!(ids, vec![4, 5, 6], "acked rows are not repeated, the rest is not lost");

    fx.admin.query_drop(format!("DROP USER '{user}'@'%'")).await.unwrap();
    kill_user_connections(&mut fx.admin, &user).await;
    let r =
        wait_report(&server, &fx.db, Duration::from_secs(30), |r| r.failures.releases >= 1).await;
    assert!(r.failures.released.as_deref().is_some_and(|w| w.contains("instance failed")), "{r:?}");
    assert!(r.failures.instance_failures >= 4, "{r:?}");
    server.shutdown().await;
    fx.admin.query_drop(format!("DROP USER IF EXISTS '{user}'@'%'")).await.unwrap();
}

/// A server whose instance keeps failing (its source password is wrong) releases the node after
/// `max_failures` and the standby, configured right, takes over and delivers the rows.
#[tokio::test]
async fn a_server_whose_instance_keeps_failing_hands_over_to_a_standby() {
    let Some(endpoint) = support::service("CANAL_TEST_ETCD") else { return };
    let Some(mut fx) = fixture("handfail").await else { return };
    let mut broken = fx.instance.clone();
    broken.source.password = "wrong password".into();
    let a = Server::start(fast(etcd(endpoint.clone()), 3), vec![broken]).await.unwrap();
    wait_active(&a, &fx.db, Duration::from_secs(15)).await;
    let b = Server::start(fast(etcd(endpoint), 3), vec![fx.instance.clone()]).await.unwrap();
    insert(&mut fx.admin, &fx.db, 1..=5).await;
    let r = wait_report(&a, &fx.db, Duration::from_secs(30), |r| r.failures.releases >= 1).await;
    assert!(r.failures.instance_failures >= 3, "{r:?}");
    assert!(r.failures.released.as_deref().is_some_and(|w| w.contains("instance failed")), "{r:?}");
    wait_active(&b, &fx.db, Duration::from_secs(15)).await;
    assert_eq!(consume(b.local_addr(), &fx.db, 5).await, (1..=5).collect::<Vec<_>>());
    assert!(a.active_destinations().is_empty(), "never two active");
    a.shutdown().await;
    b.shutdown().await;
}

/// Subscribe writes the client's node, filter and cursor (fenced); unsubscribe deletes them with
/// fenced deletes.
#[tokio::test]
async fn unsubscribe_deletes_the_client_nodes_with_fenced_deletes() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(fx) = fixture("unsub").await else { return };
    let server =
        Server::start(fast(zk(servers.clone()), 5), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&server, &fx.db, Duration::from_secs(15)).await;
    let mut c = Client::connect(server.local_addr()).await;
    c.auth("", None).await;
    let filter = format!("{}\\..*", fx.db);
    let sub = Sub { destination: fx.db.clone(), client_id: "1001".into(), filter: filter.clone() };
    c.send(PacketType::Subscription, sub.encode_to_vec()).await;
    assert_eq!(c.ack().await.error_code, None);
    let coord = canal_coord::Coordinator::new(zk(servers).open_backend().unwrap());
    let s = coord.session().await.unwrap();
    let (cpath, fpath) = (path::client_cursor(&fx.db, 1001), path::client_filter(&fx.db, 1001));
    let t0 = Instant::now();
    while s.get(&cpath).await.unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(15), "no cursor recorded at subscription");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.get(&fpath).await.unwrap().unwrap().data, filter.as_bytes());
    let unsub = canal_core::protocol::packet::Unsub {
        destination: fx.db.clone(),
        client_id: "1001".into(),
        filter: String::new(),
    };
    c.send(PacketType::Unsubscription, unsub.encode_to_vec()).await;
    assert_eq!(c.ack().await.error_code, None);
    let t0 = Instant::now();
    while s.get(&path::client(&fx.db, 1001)).await.unwrap().is_some() {
        assert!(t0.elapsed() < Duration::from_secs(15), "client node still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
    coord.close().await;
}

fn get_body(dest: &str, fetch: i32, timeout: i64, unit: i32) -> Vec<u8> {
    Get {
        destination: dest.into(),
        client_id: "1001".into(),
        fetch_size: fetch,
        timeout: Some(timeout),
        unit: Some(unit),
        auto_ack: Some(false),
        linger_micros: None,
    }
    .encode_to_vec()
}

/// `Long.MAX_VALUE` in every `TimeUnit` (NANOSECONDS = 0 … DAYS = 6) never panics the session:
/// with a batch there it answers at once; without one it waits (overflow = forever) until data
/// comes.
#[tokio::test]
async fn get_with_long_max_timeout_in_every_unit() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = fixture("maxget").await else { return };
    let mut cfg = fx.instance.clone();
    cfg.store.batch_mode = BatchMode::ItemSize;
    let server = Server::start(fast(zk(servers), 5), vec![cfg]).await.unwrap();
    wait_active(&server, &fx.db, Duration::from_secs(15)).await;
    let mut c = Client::connect(server.local_addr()).await;
    c.auth("", None).await;
    assert_eq!(c.subscribe(&fx.db, "1001").await.error_code, None);
    // Three one-row transactions: nine entries, one per GET below.
    insert(&mut fx.admin, &fx.db, 1..=3).await;
    for unit in 0..=6 {
        c.send(PacketType::Get, get_body(&fx.db, 1, i64::MAX, unit)).await;
        let m = messages(c.read().await.expect("the session is alive"));
        assert_eq!(m.messages.len(), 1, "unit {unit}");
        c.client_ack_on(&fx.db, m.batch_id).await;
    }
    for unit in [0, 3, 6] {
        // Nothing unread beyond the last two entries: a full batch of 10 needs new rows.
        c.send(PacketType::Get, get_body(&fx.db, 10, i64::MAX, unit)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let base = 100 + i64::from(unit) * 10;
        insert(&mut fx.admin, &fx.db, base..=base + 3).await;
        let m = messages(c.read().await.expect("answered once the batch is full"));
        assert_eq!(m.messages.len(), 10, "unit {unit}");
        c.client_ack_on(&fx.db, m.batch_id).await;
    }
    server.shutdown().await;
}

/// A client that sends a GET and never reads again (a half-open socket) holds nothing another
/// client needs: the same client id reconnecting consumes every row, promptly.
#[tokio::test]
async fn a_half_open_client_does_not_stall_its_reconnection() {
    let Some(servers) = support::service("CANAL_TEST_ZK") else { return };
    let Some(mut fx) = fixture("halfopen").await else { return };
    let server = Server::start(fast(zk(servers), 5), vec![fx.instance.clone()]).await.unwrap();
    wait_active(&server, &fx.db, Duration::from_secs(15)).await;
    let mut stale = Client::connect(server.local_addr()).await;
    stale.auth("", None).await;
    assert_eq!(stale.subscribe(&fx.db, "1001").await.error_code, None);
    // A blocking GET (timeout 0), then silence: never read, never close.
    stale.send(PacketType::Get, get_body(&fx.db, 1000, 0, 2)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another client id waits for a batch that never fills, and never reads either (with a
    // per-destination lock held while waiting, as in Java, it would stall every other GET).
    let mut other = Client::connect(server.local_addr()).await;
    other.auth("", None).await;
    let sub = Sub { destination: fx.db.clone(), client_id: "1002".into(), filter: String::new() };
    other.send(PacketType::Subscription, sub.encode_to_vec()).await;
    assert_eq!(other.ack().await.error_code, None);
    let mut get = Get::decode(get_body(&fx.db, 100_000, 0, 2).as_slice()).unwrap();
    get.client_id = "1002".into();
    other.send(PacketType::Get, get.encode_to_vec()).await;

    insert(&mut fx.admin, &fx.db, 1..=20).await;
    let t0 = Instant::now();
    let ids = consume(server.local_addr(), &fx.db, 20).await;
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    // The stale connection's GET was answered empty when 1001 subscribed again; its socket
    // buffer holds that answer.
    let p = stale.read().await.expect("an answer in the buffer");
    let m = messages(p);
    assert_eq!(m.batch_id, -1, "superseded: took nothing");
    server.shutdown().await;
}
