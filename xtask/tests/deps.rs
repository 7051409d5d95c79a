//! Keeps the dependency direction of ARCHITECTURE.md true: canal-coord knows no other workspace
//! crate and no MySQL; canal-core may use canal-coord; canal-client builds without any MySQL
//! crate (and, without its `kafka` feature, without librdkafka); only binaries read config files
//! (figment); xtask depends on no workspace crate.

use std::collections::BTreeMap;
use std::process::Command;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Declared (normal + build) dependencies of every workspace member, by package name.
fn declared_deps() -> BTreeMap<String, Vec<(String, bool)>> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let mut map = BTreeMap::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let deps = pkg["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| {
                (
                    d["name"].as_str().unwrap_or_default().to_owned(),
                    d["optional"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        map.insert(pkg["name"].as_str().expect("name").to_owned(), deps);
    }
    map
}

fn names(deps: &[(String, bool)]) -> Vec<&str> {
    deps.iter().map(|(n, _)| n.as_str()).collect()
}

const WORKSPACE: [&str; 5] = ["canal-core", "canal-coord", "canal-server", "canal-client", "xtask"];
const MYSQL: [&str; 2] = ["mysql_async", "mysql_common"];

#[test]
fn declared_dependency_direction() {
    let deps = declared_deps();
    for member in WORKSPACE {
        assert!(deps.contains_key(member), "workspace member {member} missing");
    }
    let coord = names(&deps["canal-coord"]);
    for forbidden in WORKSPACE.iter().chain(MYSQL.iter()).chain(["figment"].iter()) {
        assert!(!coord.contains(forbidden), "canal-coord must not depend on {forbidden}");
    }
    let core = &deps["canal-core"];
    for (name, optional) in core {
        assert!(
            !["canal-server", "canal-client", "xtask", "figment"].contains(&name.as_str()),
            "canal-core must not depend on {name}"
        );
        if MYSQL.contains(&name.as_str()) {
            assert!(optional, "canal-core's {name} must sit behind the `mysql` feature");
        }
    }
    for (name, optional) in &deps["canal-client"] {
        if name == "rdkafka" {
            assert!(optional, "canal-client's rdkafka must sit behind the `kafka` feature");
        }
    }
    let client = names(&deps["canal-client"]);
    assert!(!client.contains(&"canal-server"), "canal-client must not depend on canal-server");
    for m in MYSQL {
        assert!(!client.contains(&m), "canal-client must not depend on {m}");
    }
    let xtask = names(&deps["xtask"]);
    for member in WORKSPACE {
        assert!(!xtask.contains(&member), "xtask must not depend on workspace crate {member}");
    }
}

/// `cargo tree -p <package> -e <edges> <extra…>`, one `name vX` line per package.
fn cargo_tree(package: &str, edges: &str, extra: &[&str]) -> String {
    let out = cargo()
        .args(["tree", "-p", package, "-e", edges, "--prefix", "none", "--format", "{p}"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of `tree` naming one of `crates`.
fn having(tree: &str, crates: &[&str]) -> Vec<String> {
    tree.lines()
        .filter(|l| crates.iter().any(|c| l.starts_with(&format!("{c} "))))
        .map(str::to_owned)
        .collect()
}

#[test]
fn canal_client_tree_has_no_mysql_code() {
    let tree = cargo_tree("canal-client", "normal,build", &[]);
    assert!(
        tree.lines().any(|l| l.starts_with("canal-core ")),
        "canal-client should use canal-core:\n{tree}"
    );
    let mysql: Vec<&str> = tree.lines().filter(|l| l.starts_with("mysql")).collect();
    assert!(mysql.is_empty(), "canal-client's dependency tree contains MySQL crates: {mysql:?}");
    // The Kafka consumer is the `kafka` feature's: the default client builds no librdkafka.
    let kafka = having(&tree, &["rdkafka"]);
    assert!(kafka.is_empty(), "canal-client's default tree contains {kafka:?}");
}

#[test]
fn canal_server_without_default_features_has_no_broker_clients() {
    // The lean TCP-only server: MQ producers are the `kafka` and `rabbitmq` features'.
    let brokers = ["rdkafka", "lapin"];
    let lean = having(&cargo_tree("canal-server", "normal", &["--no-default-features"]), &brokers);
    assert!(lean.is_empty(), "lean canal-server has {lean:?}");
    let full = cargo_tree("canal-server", "normal", &[]);
    assert_eq!(
        having(&full, &brokers).len(),
        2,
        "default canal-server has rdkafka and lapin: {full}"
    );
}

#[test]
fn canal_client_without_default_features_has_no_coordinator_clients() {
    // A downstream crate with a static server list: neither ZooKeeper's nor etcd's client (nor
    // etcd's protobuf build) is in the tree; with the default features, both are.
    let clients = ["zookeeper-client", "etcd-client"];
    let lean = cargo_tree("canal-client", "normal,build", &["--no-default-features"]);
    assert!(lean.lines().any(|l| l.starts_with("canal-coord ")), "lean client uses canal-coord");
    assert!(
        having(&lean, &clients).is_empty(),
        "lean canal-client has {:?}",
        having(&lean, &clients)
    );
    let full = cargo_tree("canal-client", "normal,build", &[]);
    assert_eq!(having(&full, &clients).len(), 2, "default canal-client has both: {full}");
}
