//! The three coordination backends: embedded local (always built), ZooKeeper (feature
//! `zookeeper`) and etcd (feature `etcd`).

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod local;
#[cfg(feature = "zookeeper")]
pub mod zk;
