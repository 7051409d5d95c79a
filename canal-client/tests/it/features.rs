//! A client built without a coordinator backend (`--no-default-features`) refuses that backend
//! with a message naming the missing feature, instead of failing obscurely or panicking.

#[cfg(not(all(feature = "zookeeper", feature = "etcd")))]
#[test]
fn a_coordinator_backend_left_out_of_the_build_is_named() {
    use std::process::Command;
    for (flag, addr, feature) in
        [("--zk", "127.0.0.1:2181", "zookeeper"), ("--etcd", "http://127.0.0.1:2379", "etcd")]
    {
        let built = match feature {
            "zookeeper" => cfg!(feature = "zookeeper"),
            _ => cfg!(feature = "etcd"),
        };
        if built {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_canal-client"))
            .args(["status", flag, addr, "--destination", "example"])
            .output()
            .expect("canal-client runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(stderr.contains(&format!("without its `{feature}` feature")), "{flag}: {stderr}");
    }
}
