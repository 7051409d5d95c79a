//! The three coordination backends: embedded local, ZooKeeper and etcd.

pub mod etcd;
pub mod local;
pub mod zk;
