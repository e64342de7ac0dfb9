//! `DistributedDict` against real `zattd` servers: with the default policy (`Always`) every read
//! reflects every write acknowledged before it, even when the dict is connected to a follower
//! and the writes come from another client. Every wait is bounded; nothing asserts on timing.

mod common;

use std::time::Duration;

use common::Cluster;
use zatt::client::{Client, ClientConfig, DistributedDict};

fn patient() -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    }
}

#[test]
fn always_reads_from_a_follower_see_every_write_acknowledged_before_them() {
    // Goal: the promise of `RefreshPolicy::Always` (issue: 63 of 200 reads from a follower
    // missed another client's acknowledged write when refreshes were stale by default).
    // Method: 200 rounds of "another client writes k = i and is acknowledged, then the dict,
    // connected to a follower, reads k"; every read must return i.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap();
    let endpoints = cluster.endpoints();
    let mut writer = Client::connect(&endpoints, patient()).unwrap();
    let mut d = DistributedDict::connect(&[&follower.addr], patient()).unwrap();
    let mut missed = Vec::new();
    for i in 0..200u32 {
        let v = i.to_string();
        writer.put("k", &v).unwrap();
        if d.get("k").unwrap() != Some(v.into_bytes()) {
            missed.push(i);
        }
    }
    assert!(
        missed.is_empty(),
        "reads that missed the acknowledged write: {missed:?}"
    );
}
