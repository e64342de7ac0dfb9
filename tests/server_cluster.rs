//! Three real `zattd` processes on loopback: replication, failover, durability across restarts,
//! catch-up through a snapshot, membership changes and leadership transfer. Every wait is
//! bounded by a deadline; no test asserts on timing.

mod common;

use common::*;
use std::time::Duration;
use zatt::wire::client::{Consistency, Request, Response};

const T: Duration = Duration::from_secs(20);

#[test]
fn acknowledged_write_is_readable_on_every_server() {
    // Goal: a write the leader acknowledged reaches every replica. Method: put through the
    // leader, then poll each server with a stale (local) read until it shows the value.
    let c = Cluster::start(3, &[]);
    c.wait_leader(T);
    c.put("hello", "world");
    for id in 1..=3 {
        c.wait_value(id, "hello", Some("world"), T);
    }
}
