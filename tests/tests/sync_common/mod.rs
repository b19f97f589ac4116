//! What the shake-sync test files share (`sync.rs`, `topology.rs`): a running shake-sync
//! ([`Sync`]), snapshots of a cluster and converging to equal, a cluster write load that follows
//! MOVED/ASK itself ([`Router`], [`cluster_load`]), and resharding with `redis-cli --cluster`.
//! Each test file includes it with `mod sync_common;` beside `live_common`.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

use super::live_common::*;
use shake_tests::{Cluster, Server};

pub fn bin(name: &str) -> PathBuf {
    let p = assert_cmd::cargo::cargo_bin(name);
    assert!(
        p.exists(),
        "the {name} binary is not built: run `cargo build --workspace --bins` first"
    );
    p
}

/// A running shake-sync with its stderr going to a file.
pub struct Sync {
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Sync {
    pub fn start(source: &str, target: &str, extra: &[&str]) -> Sync {
        let mut args = vec![
            "--source",
            source,
            "--target",
            target,
            "--log-interval",
            "1",
        ];
        args.extend_from_slice(extra);
        Self::start_args(&args, &[])
    }

    /// shake-sync with exactly these arguments and extra environment variables (a `--config`
    /// file that names source and target itself).
    pub fn start_args(args: &[&str], env: &[(&str, &str)]) -> Sync {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(bin("shake-sync"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn shake-sync");
        Sync {
            child: Some(child),
            log,
        }
    }

    pub fn stderr(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits until the log shows the incremental phase (the full sync is applied).
    pub fn wait_incremental(&mut self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            let log = self.stderr();
            if log.contains("incremental") || log.contains("resumed from offset") {
                return;
            }
            assert!(self.running(), "shake-sync exited early:\n{log}");
            sleep(Duration::from_millis(50));
        }
        panic!(
            "shake-sync not incremental after {limit:?}:\n{}",
            self.stderr()
        );
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// SIGTERM, then the exit code and stderr.
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.signal("-TERM");
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return (st.code(), self.stderr());
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!(
                    "shake-sync did not stop within 30s of SIGTERM:\n{}",
                    self.stderr()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stderr()
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

/// A snapshot without shake-sync's own keys.
pub fn data_of(s: Snapshot) -> Snapshot {
    Snapshot {
        keys: s
            .keys
            .into_iter()
            .filter(|((_, k), _)| !k.starts_with(b"shake-sync:"))
            .collect(),
        ..s
    }
}

pub fn cluster_snapshot(c: &Cluster) -> Snapshot {
    let mut all = Snapshot {
        ttl_exact: true,
        ..Default::default()
    };
    for m in c.masters() {
        let s = snapshot(&mut m.client());
        all.ttl_exact &= s.ttl_exact;
        all.keys.extend(s.keys);
    }
    data_of(all)
}

/// Polls until `read_target()` equals `want` (as `project`ed), or fails with the differences.
pub fn converge(
    ctx: &str,
    read_source: &dyn Fn() -> Snapshot,
    read_target: &dyn Fn() -> Snapshot,
    limit: Duration,
) {
    let t = Instant::now();
    let mut diffs = Vec::new();
    while t.elapsed() < limit {
        let want = read_source();
        let got = read_target();
        // What a replica cannot know either: see Profile::entries_read.
        let profile = Profile {
            entries_read: false,
            ..Profile::rebuilt(&want, &got)
        };
        diffs = compare("source", &want, "target", &got, profile);
        if diffs.is_empty() {
            eprintln!(
                "[{ctx}] equal ({} keys) after {:.1}s",
                want.keys.len(),
                t.elapsed().as_secs_f64()
            );
            return;
        }
        sleep(Duration::from_millis(300));
    }
    assert_no_diffs(ctx, &diffs);
}

pub fn stat(server: &Server, name: &str) -> u64 {
    server
        .info("stats")
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Cluster nodes with one database, so snapshots do not SELECT others.
pub const ONE_DB: (&str, &str) = ("databases", "1");

/// A backlog that holds several seconds of the test loads.
pub const BACKLOG: (&str, &str) = ("repl-backlog-size", "64mb");

/// Writes to a cluster through direct connections, following MOVED and ASK itself (so that a
/// MULTI/EXEC goes to one node as one transaction, which a cluster client cannot do). A write
/// that fails during a migration (TRYAGAIN, a transaction on a slot being moved) is just lost:
/// the source says what stuck.
pub struct Router {
    conns: std::collections::HashMap<u16, redis::Connection>,
    owner: Vec<u16>,
    seed: u16,
    /// Announced port -> the port really connected to (a node announced behind a proxy).
    alias: std::collections::HashMap<u16, u16>,
}

impl Router {
    pub fn new(c: &Cluster) -> Router {
        let mut r = Router {
            conns: Default::default(),
            owner: vec![c.masters()[0].port(); 16384],
            seed: c.masters()[0].port(),
            alias: Default::default(),
        };
        r.refresh();
        r
    }

    /// Writes for the node announced at `announced` go to `real` (not through its proxy).
    pub fn alias(mut self, announced: u16, real: u16) -> Router {
        self.alias.insert(announced, real);
        self
    }

    pub fn conn(&mut self, port: u16) -> &mut redis::Connection {
        let real = self.alias.get(&port).copied().unwrap_or(port);
        self.conns.entry(port).or_insert_with(|| {
            redis::Client::open(format!("redis://127.0.0.1:{real}"))
                .and_then(|c| c.get_connection())
                .expect("connect to a cluster node")
        })
    }

    /// Re-reads who owns which slot (CLUSTER SLOTS).
    pub fn refresh(&mut self) {
        let seed = self.seed;
        let slots: redis::RedisResult<Vec<Vec<redis::Value>>> =
            redis::cmd("CLUSTER").arg("SLOTS").query(self.conn(seed));
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => Some(*i as usize),
            _ => None,
        };
        for range in slots.unwrap_or_default() {
            let (Some(first), Some(last)) =
                (range.first().and_then(int), range.get(1).and_then(int))
            else {
                continue;
            };
            let port = match range.get(2) {
                Some(redis::Value::Array(node)) => node.get(1).and_then(int),
                _ => None,
            };
            if let Some(port) = port {
                for s in first..=last.min(16383) {
                    self.owner[s] = port as u16;
                }
            }
        }
    }

    /// Runs `pipe` (commands on keys of `key`'s slot) where the slot lives; true if it ran.
    pub fn run(&mut self, key: &str, pipe: &redis::Pipeline) -> bool {
        let slot = shake_core::client::slot_of(key.as_bytes()) as usize;
        let mut port = self.owner[slot];
        let mut asking = false;
        for _ in 0..4 {
            let r: redis::RedisResult<redis::Value> = if asking {
                let mut p = redis::pipe();
                p.cmd("ASKING").ignore();
                for c in pipe.cmd_iter() {
                    p.add_command(c.clone());
                }
                p.query(self.conn(port))
            } else {
                pipe.query(self.conn(port))
            };
            let Err(e) = r else { return true };
            match (e.kind(), e.redirect_node()) {
                (redis::ErrorKind::Ask, Some((addr, _))) => {
                    port = addr
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok())
                        .unwrap_or(port);
                    asking = true;
                }
                (redis::ErrorKind::Moved, Some(_)) => {
                    self.refresh();
                    port = self.owner[slot];
                    asking = false;
                }
                _ => {
                    if e.to_string().contains("MOVED") {
                        self.refresh();
                    }
                    return false;
                }
            }
        }
        false
    }
}

/// A write load on a cluster until stopped: strings with TTLs, INCR, hashes, deletions, and
/// MULTI/EXEC transactions on hash-tagged keys.
pub fn cluster_load(c: &Cluster, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    cluster_load_through(Router::new(c), stop)
}

/// [`cluster_load`] through a given router.
pub fn cluster_load_through(mut router: Router, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let (mut i, mut x) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
        while !stop.load(Ordering::Relaxed) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 3000;
            let key = format!("rs:{k}");
            let mut p = redis::pipe();
            match i % 6 {
                0 => p
                    .cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .arg("PX")
                    .arg(900_000 + k)
                    .ignore(),
                1 => p.cmd("INCR").arg(format!("rs:{k}:n")).ignore(),
                2 => p
                    .cmd("HSET")
                    .arg(format!("rs:{k}:h"))
                    .arg(i % 5)
                    .arg(i)
                    .ignore(),
                3 => p.cmd("DEL").arg(&key).ignore(),
                _ => {
                    let tag = format!("{{tx{}}}", k % 200);
                    p.atomic()
                        .cmd("INCRBY")
                        .arg(format!("{tag}:n"))
                        .arg(3)
                        .ignore()
                        .cmd("RPUSH")
                        .arg(format!("{tag}:l"))
                        .arg(i)
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(format!("{tag}:l"))
                        .arg(800_000)
                        .ignore()
                }
            };
            let key = match i % 6 {
                1 => format!("rs:{k}:n"),
                2 => format!("rs:{k}:h"),
                4 | 5 => format!("{{tx{}}}", k % 200),
                _ => key,
            };
            router.run(&key, &p);
            i += 1;
        }
        i
    })
}

pub fn node_id(s: &Server) -> String {
    q(&mut s.client(), redis::cmd("CLUSTER").arg("MYID"))
}

/// `redis-cli --cluster reshard`: `slots` slots from master `from` to master `to` (MIGRATE).
pub fn reshard(c: &Cluster, from: &Server, to: &Server, slots: u32, extra: &[&str]) {
    let out = Command::new(shake_tests::redis_cli())
        .args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", c.masters()[0].port()),
        ])
        .args([
            "--cluster-from",
            &node_id(from),
            "--cluster-to",
            &node_id(to),
        ])
        .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
        .args(extra)
        .output()
        .expect("run redis-cli --cluster reshard");
    assert!(
        out.status.success(),
        "redis-cli --cluster reshard failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `MIGRATE` of `keys` from the node of `con` to `to`, as redis-cli --cluster does.
pub fn migrate_keys(con: &mut redis::Connection, to: &Server, keys: &[String]) {
    let mut migrate = redis::cmd("MIGRATE");
    migrate
        .arg("127.0.0.1")
        .arg(to.port())
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(keys);
    let _: () = q(con, &migrate);
}

pub fn full_syncs_served(c: &Cluster) -> u64 {
    c.masters().iter().map(|m| stat(m, "sync_full")).sum()
}

/// Polls `f` until it returns true, or panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, f: &mut dyn FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return;
        }
        sleep(Duration::from_millis(50));
    }
    panic!("{what}: not after {limit:?}");
}

/// Runs shake-check (`source` against `target`, any node of each) until it finds them equal
/// (exit 0), or fails with its last report after `limit`.
pub fn check_equal(ctx: &str, source: &str, target: &str, limit: Duration) {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < limit {
        let out = Command::new(bin("shake-check"))
            .args(["--source", source, "--target", target, "-q"])
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
        sleep(Duration::from_millis(500));
    }
    panic!("[{ctx}] shake-check still finds differences after {limit:?}:\n{last}");
}
