//! Remaining lease TTLs survive a crash: the leader checkpoints them through Raft, so a
//! restarted member resumes each lease where it was instead of granting it a full TTL again
//! (which would let a lease whose holder died live on indefinitely across restarts).
//!
//! etcd 3.4 checkpoints only every 5 minutes, with no flag to change it, so this runs
//! against Cairn only.

use std::time::{Duration, Instant};

use cairn_tests::{Server, Target, etcdctl, ok_stdout};

/// The remaining TTL `etcdctl lease timetolive` reports, and its whole line.
fn remaining(server: &Server, lease: &str) -> (i64, String) {
    let line = ok_stdout(&etcdctl(
        &server.endpoint(),
        &["lease", "timetolive", lease, "--keys"],
    ));
    let seconds = line
        .split("remaining(")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no remaining TTL in {line:?}"));
    (seconds, line)
}

#[test]
fn a_restart_resumes_each_lease_from_its_checkpointed_remaining_ttl() {
    if Target::from_env() == Target::Etcd {
        eprintln!("skipped: etcd 3.4 cannot shorten its 5-minute checkpoint interval");
        return;
    }
    let mut server = Server::start_with_args(&["--experimental-lease-checkpoint-interval", "1s"]);
    let granted = ok_stdout(&etcdctl(&server.endpoint(), &["lease", "grant", "600"]));
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let put = etcdctl(
        &server.endpoint(),
        &["put", "held", "v", &format!("--lease={lease}")],
    );
    assert_eq!(ok_stdout(&put), "OK\n");

    // Let the lease run down for a few checkpoint intervals.
    let deadline = Instant::now() + Duration::from_secs(30);
    while remaining(&server, &lease).0 > 595 {
        assert!(Instant::now() < deadline, "the lease's TTL never ran down");
        std::thread::sleep(Duration::from_millis(200));
    }
    server.kill9();
    server.restart();

    let (after, line) = remaining(&server, &lease);
    assert!(
        after <= 598,
        "the restart resumed from a checkpoint, not a fresh 600s TTL: {line}"
    );
    assert!(after > 0, "{line}");
    assert!(
        line.contains("attached keys([held])"),
        "attachments survive too: {line}"
    );
}
