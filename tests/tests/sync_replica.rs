//! `shake-sync --source-replica` (issue 17 part 4): each source master's link reads the stream
//! from a healthy replica of it, and from the master when there is none. Real Redis 7.0
//! servers; build the binaries first (`cargo build --workspace --bins`).
//!
//! - `sync_from_replicas_redis70`: a 3-master source cluster with one replica each into a
//!   3-master target, under a write load. Every link reads from its master's replica: the log
//!   names each replica, every replica served one full sync and has one sub-replica (ours), no
//!   master served a full sync or gained a replica connection. Then master 0's replica is killed
//!   -9: that link says it has no healthy replica and moves to master 0 with a partial resync
//!   (the master's `sync_partial_ok` grows, its `sync_full` does not). Then the replica is
//!   started again and shake-sync restarted: all three links resume from the replicas with
//!   partial resyncs (each replica's `sync_partial_ok`, no `sync_full` of the restarted one).
//!   shake-check finds source and target equal after each step.
//! - `sync_shard_without_replica_redis70`: master 2's replica is killed and forgotten before
//!   the start: that link says "no healthy replica (the master has no replica); replicating
//!   from the master ..." once, full-syncs from master 2, the other two from their replicas;
//!   equal.
//! - `sync_standalone_source_replica_redis70`: a standalone master with one replica: the link
//!   reads from the replica its `INFO replication` lists; the replica killed, the link moves to
//!   the master with a partial resync; equal.

mod live_common;
mod sync_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use live_common::*;
use shake_tests::{require, Cluster, Flavor, Server};
use sync_common::*;

fn connected_slaves(s: &Server) -> u64 {
    s.info("replication")
        .get("connected_slaves")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until the log holds `what` at least `n` times.
fn wait_log(sync: &mut Sync, what: &str, n: usize, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if sync.stderr().matches(what).count() >= n {
            return;
        }
        assert!(sync.running(), "shake-sync exited:\n{}", sync.stderr());
        sleep(Duration::from_millis(100));
    }
    panic!(
        "not {n} times {what:?} in the log after {limit:?}:\n{}",
        sync.stderr()
    );
}

fn wait_link_up(replica: &Server) {
    wait_until(
        &format!("the replica {} linked to its master", replica.url()),
        Duration::from_secs(30),
        &mut || {
            replica
                .info("replication")
                .get("master_link_status")
                .map(String::as_str)
                == Some("up")
        },
    );
}

/// The line a link says when it reads from `replica` of `master`.
fn reads_from(replica: &Server, master: &Server) -> String {
    format!(
        "replicating from 127.0.0.1:{}, a replica of the master 127.0.0.1:{}",
        replica.port(),
        master.port()
    )
}

#[test]
fn sync_from_replicas_redis70() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let mut src = Cluster::start_with_replicas(flavor, 3, 1, &[ONE_DB, BACKLOG]);
    let dst = Cluster::start_with(flavor, &[ONE_DB]);
    let full_before: Vec<u64> = src.masters().iter().map(|m| stat(m, "sync_full")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = cluster_load(&src, stop.clone());
    sleep(Duration::from_millis(300));

    // (1) Every link reads from its master's replica.
    let mut sync = Sync::start(&src.url(), &dst.url(), &["--source-replica"]);
    wait_log(&mut sync, "full sync applied", 3, Duration::from_secs(40));
    let log = sync.stderr();
    for (i, before) in full_before.iter().enumerate() {
        let (m, r) = (&src.masters()[i], &src.replicas_of(i)[0]);
        assert!(log.contains(&reads_from(r, m)), "link {i}:\n{log}");
        assert_eq!(
            stat(r, "sync_full"),
            1,
            "replica {i} served no full sync:\n{log}"
        );
        assert_eq!(connected_slaves(r), 1, "replica {i} has no sub-replica");
        assert_eq!(
            stat(m, "sync_full"),
            *before,
            "master {i} served a full sync:\n{log}"
        );
        assert_eq!(
            connected_slaves(m),
            1,
            "master {i}: a replica connection of ours"
        );
    }
    assert!(!log.contains("no healthy replica"), "{log}");
    sleep(Duration::from_secs(1));

    // (2) Master 0's replica dies: its link moves to master 0, with a partial resync.
    let m0 = src.masters()[0].port();
    let partial_before = stat(&src.masters()[0], "sync_partial_ok");
    src.replicas_mut()[0].kill();
    wait_log(
        &mut sync,
        &format!("); replicating from the master 127.0.0.1:{m0}"),
        1,
        Duration::from_secs(30),
    );
    wait_log(
        &mut sync,
        &format!("(partial resync from redis://127.0.0.1:{m0})"),
        1,
        Duration::from_secs(30),
    );
    let master0 = &src.masters()[0];
    assert!(
        stat(master0, "sync_partial_ok") > partial_before,
        "master 0 counted no partial resync:\n{}",
        sync.stderr()
    );
    assert_eq!(
        stat(master0, "sync_full"),
        full_before[0],
        "master 0 served a full sync:\n{}",
        sync.stderr()
    );
    sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    check_equal(
        "replica lost",
        &src.url(),
        &dst.url(),
        Duration::from_secs(30),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        log.matches("no healthy replica").count(),
        1,
        "one fallback line:\n{log}"
    );

    // (3) The replica back, shake-sync restarted: every link resumes from a replica.
    src.replicas_mut()[0].restart();
    wait_link_up(&src.replicas_of(0)[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = cluster_load(&src, stop.clone());
    let served: Vec<(u64, u64)> = src
        .replicas()
        .iter()
        .map(|r| (stat(r, "sync_full"), stat(r, "sync_partial_ok")))
        .collect();
    let mut sync = Sync::start(&src.url(), &dst.url(), &["--source-replica"]);
    wait_log(
        &mut sync,
        "(partial resync from",
        3,
        Duration::from_secs(30),
    );
    let log = sync.stderr();
    for (i, (full, partial)) in served.iter().enumerate() {
        let (m, r) = (&src.masters()[i], &src.replicas_of(i)[0]);
        assert!(
            log.contains(&format!(
                "(partial resync from redis://127.0.0.1:{}, a replica of redis://127.0.0.1:{})",
                r.port(),
                m.port()
            )),
            "link {i} did not resume from its replica:\n{log}"
        );
        assert_eq!(stat(r, "sync_full"), *full, "replica {i}:\n{log}");
        assert_eq!(
            stat(r, "sync_partial_ok"),
            partial + 1,
            "replica {i}:\n{log}"
        );
    }
    assert!(
        !log.contains("full sync from") && !log.contains("): full sync"),
        "{log}"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    check_equal(
        "resumed from replicas",
        &src.url(),
        &dst.url(),
        Duration::from_secs(30),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn sync_shard_without_replica_redis70() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let mut src = Cluster::start_with_replicas(flavor, 3, 1, &[ONE_DB]);
    let dst = Cluster::start_with(flavor, &[ONE_DB]);
    // Master 2 loses its replica for good: killed, and forgotten by every other node.
    let gone = node_id(&src.replicas_of(2)[0]);
    src.replicas_mut()[2].kill();
    for node in src.masters().iter().chain(&src.replicas()[..2]) {
        let _: () = q(
            &mut node.client(),
            redis::cmd("CLUSTER").arg("FORGET").arg(&gone),
        );
    }
    {
        let mut con = src.connection();
        for i in 0..300 {
            let _: () = redis::cmd("SET")
                .arg(format!("k:{i}"))
                .arg(i)
                .query(&mut con)
                .expect("SET");
        }
    }
    let full_before: Vec<u64> = src.masters().iter().map(|m| stat(m, "sync_full")).collect();
    let mut sync = Sync::start(&src.url(), &dst.url(), &["--source-replica"]);
    wait_log(&mut sync, "full sync applied", 3, Duration::from_secs(40));
    let m2 = src.masters()[2].port();
    let log = sync.stderr();
    assert!(
        log.contains(&format!(
            "no healthy replica (the master has no replica); replicating from the master 127.0.0.1:{m2}"
        )),
        "{log}"
    );
    assert_eq!(log.matches("no healthy replica").count(), 1, "{log}");
    for (i, before) in full_before.iter().enumerate().take(2) {
        let (m, r) = (&src.masters()[i], &src.replicas_of(i)[0]);
        assert!(log.contains(&reads_from(r, m)), "link {i}:\n{log}");
        assert_eq!(stat(m, "sync_full"), *before, "master {i}:\n{log}");
    }
    assert_eq!(
        stat(&src.masters()[2], "sync_full"),
        full_before[2] + 1,
        "master 2 served no full sync:\n{log}"
    );
    {
        let mut con = src.connection();
        for i in 0..300 {
            let _: () = redis::cmd("INCR")
                .arg(format!("n:{i}"))
                .query(&mut con)
                .expect("INCR");
        }
    }
    check_equal(
        "a shard without replica",
        &src.url(),
        &dst.url(),
        Duration::from_secs(30),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn sync_standalone_source_replica_redis70() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start_with(flavor, &[BACKLOG]);
    let mut replica = Server::start(flavor);
    let _: () = q(
        &mut replica.client(),
        redis::cmd("REPLICAOF").arg("127.0.0.1").arg(src.port()),
    );
    wait_link_up(&replica);
    // The master lists it as online only once the replica's first ACK has come.
    wait_until(
        "the master lists its replica online",
        Duration::from_secs(10),
        &mut || {
            src.info("replication")
                .get("slave0")
                .is_some_and(|l| l.contains("state=online"))
        },
    );
    let dst = Server::start(flavor);
    let mut con = src.client();
    for i in 0..200 {
        let _: () = q(&mut con, redis::cmd("SET").arg(format!("k:{i}")).arg(i));
    }
    let full_before = stat(&src, "sync_full");
    let mut sync = Sync::start(&src.url(), &dst.url(), &["--source-replica"]);
    wait_log(&mut sync, "full sync applied", 1, Duration::from_secs(20));
    let log = sync.stderr();
    assert!(log.contains(&reads_from(&replica, &src)), "{log}");
    assert_eq!(stat(&replica, "sync_full"), 1, "{log}");
    assert_eq!(stat(&src, "sync_full"), full_before, "{log}");
    assert_eq!(connected_slaves(&src), 1, "{log}");
    for i in 0..200 {
        let _: () = q(&mut con, redis::cmd("RPUSH").arg("l").arg(i));
    }
    sleep(Duration::from_millis(500));
    let partial_before = stat(&src, "sync_partial_ok");
    replica.kill();
    for i in 0..200 {
        let _: () = q(&mut con, redis::cmd("INCR").arg(format!("n:{}", i % 7)));
    }
    wait_log(
        &mut sync,
        &format!("(partial resync from redis://127.0.0.1:{})", src.port()),
        1,
        Duration::from_secs(30),
    );
    assert!(
        stat(&src, "sync_partial_ok") > partial_before,
        "{}",
        sync.stderr()
    );
    assert_eq!(stat(&src, "sync_full"), full_before, "{}", sync.stderr());
    check_equal(
        "standalone replica lost",
        &src.url(),
        &dst.url(),
        Duration::from_secs(20),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "); replicating from the master 127.0.0.1:{}",
            src.port()
        )),
        "{log}"
    );
}
