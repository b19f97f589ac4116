//! Masters joining and leaving the SOURCE cluster while `shake-sync` runs (issue 12 item 3),
//! against real 3-master clusters of Redis 7.0 and of Valkey 9.1 (source) into a 3-master
//! target of the same flavor. Build the binaries first (`cargo build --workspace --bins`).
//!
//! `cluster_membership_redis70` / `_valkey91`, one sync through three steps, with the default
//! `--topology-interval` (10 s):
//!
//! - (a) a fourth master is added and `redis-cli --cluster rebalance --cluster-use-empty-masters`
//!   moves slots onto it (MIGRATE) under a write load with MULTI/EXEC and TTLs: the running
//!   shake-sync (no restart) starts a fourth link (one full sync of that master, none of the
//!   others), `/status` and `/metrics` say 4 links, and `shake-check` finds source and target
//!   equal;
//! - (c) `kill -9` of shake-sync, a restart: all four links resume with a partial resync (no
//!   full sync served by any master), equal again;
//! - (b) every slot of an original master moved away, then the master removed (`redis-cli
//!   --cluster del-node`): its link ends with one line, its checkpoint keys are deleted from the
//!   target, the sync goes on with 3 links, equal; a restart then resumes exactly 3 links.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use shake_tests::{free_port, http_get, require, tool_binary, Cluster, Flavor, Server};

/// A backlog that holds the loads of a kill -9 and restart.
const BACKLOG: (&str, &str) = ("repl-backlog-size", "64mb");
const ONE_DB: (&str, &str) = ("databases", "1");

/// A running shake-sync with its stderr in a file and its status on a port.
struct Sync {
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    status: u16,
}

impl Sync {
    fn start(src: &Cluster, dst: &Cluster) -> Sync {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let status = free_port();
        let child = Command::new(tool_binary("shake-sync"))
            .args(["--source", &src.url(), "--target", &dst.url()])
            .args(["--log-interval", "5", "--status-addr"])
            .arg(status.to_string())
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn shake-sync");
        Sync {
            child: Some(child),
            log,
            status,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `/status`, parsed.
    fn status(&self) -> serde_json::Value {
        http_get(self.status, "/status")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `/status` shows `n` links, every one incremental (the `links` count is
    /// checked by the callers).
    fn wait_links(&mut self, n: usize, limit: Duration) {
        let t = Instant::now();
        let mut last = serde_json::Value::Null;
        while t.elapsed() < limit {
            assert!(self.running(), "shake-sync exited:\n{}", self.stderr());
            last = self.status();
            let shards = last["shards"].as_array().cloned().unwrap_or_default();
            if shards.len() == n && shards.iter().all(|s| s["phase"] == "incremental") {
                return;
            }
            sleep(Duration::from_millis(200));
        }
        panic!(
            "not {n} incremental links after {limit:?}: {last}\n{}",
            self.stderr()
        );
    }

    fn wait_log(&mut self, what: &str, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.stderr().contains(what) {
                return;
            }
            assert!(self.running(), "shake-sync exited:\n{}", self.stderr());
            sleep(Duration::from_millis(200));
        }
        panic!("no {what:?} in the log after {limit:?}:\n{}", self.stderr());
    }

    fn kill9(mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stderr()
    }

    fn stop(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return (st.code(), self.stderr());
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("shake-sync did not stop within 30s:\n{}", self.stderr());
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("--- shake-sync stderr ---\n{}", self.stderr());
            }
        }
    }
}

fn full_syncs_served(nodes: &[Server]) -> Vec<u64> {
    nodes.iter().map(|m| m.stat("sync_full")).collect()
}

/// Whether a shake-sync log shows a full sync of a link (a first one, or a resume refused).
fn full_synced(log: &str) -> bool {
    log.contains("full sync from") || log.contains("): full sync")
}

/// Runs shake-check until it finds the clusters equal (exit 0), or fails with its last report.
fn check_equal(ctx: &str, src: &Cluster, dst: &Cluster, limit: Duration) {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < limit {
        let out = Command::new(tool_binary("shake-check"))
            .args(["--source", &src.url(), "--target", &dst.url(), "-q"])
            .output()
            .expect("run shake-check");
        if out.status.code() == Some(0) {
            eprintln!(
                "[{ctx}] shake-check: equal after {:.1}s",
                t.elapsed().as_secs_f64()
            );
            return;
        }
        last = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        sleep(Duration::from_secs(1));
    }
    panic!("[{ctx}] shake-check still finds differences after {limit:?}:\n{last}");
}

/// Checkpoint keys of link `name` on the target.
fn checkpoint_keys(dst: &Cluster, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in dst.masters() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("shake-sync:checkpoint:{name}*"))
            .query(&mut m.client())
            .expect("KEYS");
        out.extend(keys.into_iter().filter(|k| {
            // `<name>` itself or `<name>:<domain>`, not `<name>0...` of another link.
            k.len() == format!("shake-sync:checkpoint:{name}").len()
                || k.contains(&format!("{name}:"))
        }));
    }
    out
}

#[test]
fn cluster_membership_redis70() {
    membership(Flavor::Redis70);
}

#[test]
fn cluster_membership_valkey91() {
    membership(Flavor::Valkey91);
}

fn membership(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let mut src = Cluster::start_with(flavor, &[BACKLOG, ONE_DB]);
    let dst = Cluster::start_with(flavor, &[ONE_DB]);
    {
        let mut router = src.router();
        for k in 0..3000u64 {
            let mut p = redis::pipe();
            p.cmd("SET").arg(format!("cm:{k}")).arg(k).ignore();
            if k % 3 == 0 {
                p.cmd("PEXPIRE")
                    .arg(format!("cm:{k}"))
                    .arg(700_000 + k)
                    .ignore();
            }
            assert!(router.run(&format!("cm:{k}"), &p), "fill");
        }
    }
    let sync_name = src.masters()[0].addr().to_string();
    let mut sync = Sync::start(&src, &dst);
    sync.wait_links(3, Duration::from_secs(60));
    let before = full_syncs_served(src.masters());

    // (a) A fourth master, and a rebalance onto it under a write load.
    let stop = Arc::new(AtomicBool::new(false));
    let load = src.write_load("cm:", stop.clone());
    sleep(Duration::from_secs(1));
    let fourth = src.add_master().addr();
    src.rebalance(&[]);
    assert!(
        src.masters()[3].slots_served() > 0,
        "the rebalance gave it slots"
    );
    sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let ops = load.join().expect("load");
    // The data first: the keys the fourth master holds reach the target only through a link
    // of its own.
    check_equal(
        &format!("{flavor} (a) fourth master, rebalance, {ops} load operations"),
        &src,
        &dst,
        Duration::from_secs(90),
    );
    sync.wait_log(
        &format!("added: master {fourth} joined the source"),
        Duration::from_secs(5),
    );
    sync.wait_links(4, Duration::from_secs(60));
    assert_eq!(sync.status()["links"], 4, "/status links");
    let after = full_syncs_served(src.masters());
    assert_eq!(
        &after[..3],
        &before[..],
        "no further full sync of the first three masters"
    );
    assert_eq!(after[3], 1, "one full sync of the fourth master");
    assert_eq!(
        sync.stderr().matches("full sync from").count(),
        4,
        "the three at the start and the fourth master's"
    );
    let metrics = http_get(sync.status, "/metrics").unwrap_or_default();
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("shake_sync_up{"))
            .count(),
        4,
        "one shake_sync_up series per link: {metrics}"
    );
    assert!(sync.running(), "the same process, not restarted");

    // (c) kill -9 and a restart: the four links resume.
    let stop = Arc::new(AtomicBool::new(false));
    let load = src.write_load("cm:", stop.clone());
    sleep(Duration::from_millis(1500));
    let first_log = sync.kill9();
    sleep(Duration::from_millis(500));
    let mut sync = Sync::start(&src, &dst);
    sync.wait_links(4, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let ops = load.join().expect("load");
    let log = sync.stderr();
    assert_eq!(
        log.matches("resumed from offset").count(),
        4,
        "four partial resyncs:\n{log}"
    );
    assert!(!full_synced(&log), "{log}");
    check_equal(
        &format!("{flavor} (c) kill -9 and restart with four links, {ops} load operations"),
        &src,
        &dst,
        Duration::from_secs(60),
    );
    assert_eq!(full_syncs_served(src.masters()), after, "no full sync");

    // (b) An original master's slots moved away, then the master removed.
    let leaving = src.masters()[1].addr();
    let leaving_link = format!("{sync_name}/5461");
    assert!(
        !checkpoint_keys(&dst, &leaving_link).is_empty(),
        "the link of {leaving} is {leaving_link}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = src.write_load("cm:", stop.clone());
    let n = src.masters()[1].slots_served();
    src.reshard(1, 2, n, &["--cluster-pipeline", "20"]);
    assert_eq!(src.masters()[1].slots_served(), 0);
    let gone = src.remove_master(1);
    sync.wait_log(
        &format!("link {leaving_link} removed: its master {leaving}"),
        Duration::from_secs(60),
    );
    sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let ops = load.join().expect("load");
    sync.wait_links(3, Duration::from_secs(30));
    assert_eq!(sync.status()["links"], 3, "/status links");
    check_equal(
        &format!("{flavor} (b) master removed, {ops} load operations"),
        &src,
        &dst,
        Duration::from_secs(60),
    );
    assert!(
        checkpoint_keys(&dst, &leaving_link).is_empty(),
        "the removed link's checkpoint is deleted"
    );
    // (A Redis 7.0 master that lost its last slot turns into a replica of the master that took
    // it, which serves it a full sync: counted by that master, not ours.)
    let (code, log) = sync.stop();
    assert!(!full_synced(&log), "no full sync:\n{log}");
    assert_eq!(code, Some(0), "{log}");
    for l in [&first_log, &log] {
        assert!(
            !l.contains("BUSYKEY") && !l.contains("answered an error"),
            "{l}"
        );
    }
    // A restart resumes the three links there are, and not the removed one.
    let mut sync = Sync::start(&src, &dst);
    sync.wait_links(3, Duration::from_secs(60));
    let log = sync.stderr();
    assert_eq!(log.matches("resumed from offset").count(), 3, "{log}");
    assert!(!log.contains(&leaving_link), "{log}");
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    drop(gone);
}
