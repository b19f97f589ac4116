//! `--shard K/N` (issue 16) against real servers: one migration spread over processes.
//!
//! - `shards_sync_a_six_master_cluster`: a 6-master Redis 7.0 source cluster into a 3-master
//!   target by 3 `shake-sync --shard K/3` processes under a write load (INCR, RPUSH, APPEND
//!   spread over every slot): each shard takes 2 masters, every master exactly once. Shard 1 is
//!   killed with -9 and started again from another working directory: both its links resume
//!   with a partial resync, `sync_full` of every source master stays 1, and the data converges
//!   equal. Then, on the same clusters: `shake-check --shard K/3` finds nothing, and a key
//!   removed from (and one added to) the target is reported by exactly the shard whose masters
//!   serve its slot; `shake-dump --shard 1/3 -o DIR/` writes exactly its two masters' files;
//!   `shake-rump --shard 0/3` copies exactly its two masters' keys.

#[path = "live_common/mod.rs"]
mod live_common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

use live_common::{compare, snapshot, Profile, Snapshot};
use shake_tests::{free_port, http_get, require, Cluster, Flavor, Server};

fn bin(name: &str) -> PathBuf {
    let p = assert_cmd::cargo::cargo_bin(name);
    assert!(
        p.exists(),
        "the {name} binary is not built: run `cargo build --workspace --bins` first"
    );
    p
}

/// One shard's shake-sync, run from a working directory of its own.
struct Shard {
    k: u32,
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Shard {
    fn start(k: u32, source: &str, target: &str) -> Shard {
        let dir = tempfile::tempdir().expect("working dir");
        let log = dir.path().join("stderr.log");
        let port = free_port();
        let child = Command::new(bin("shake-sync"))
            .args(["--source", source, "--target", target])
            .args(["--shard", &format!("{k}/3")])
            .args(["--status-addr", &format!("127.0.0.1:{port}")])
            .args(["--log-interval", "1"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn shake-sync");
        Shard {
            k,
            child: Some(child),
            port,
            log,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The link names of /status once every link is incremental, and the /status body.
    fn wait_incremental(&mut self) -> (Vec<String>, String) {
        let t = Instant::now();
        loop {
            if let Some(body) = http_get(self.port, "/status") {
                let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
                let links = v["shards"].as_array().expect("shards").clone();
                if !links.is_empty() && links.iter().all(|l| l["phase"] == "incremental") {
                    let names = links
                        .iter()
                        .map(|l| l["name"].as_str().expect("name").to_string())
                        .collect();
                    return (names, body);
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("shard {} exited ({st}):\n{}", self.k, self.stderr());
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "shard {} not incremental within 90 s:\n{}",
                self.k,
                self.stderr()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                panic!(
                    "shard {} did not stop on SIGTERM:\n{}",
                    self.k,
                    self.stderr()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("--- shard {} stderr ---\n{}", self.k, self.stderr());
            }
        }
    }
}

/// Writes to keys spread over every slot until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    fn start(c: &Cluster) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (s2, o2) = (stop.clone(), ops.clone());
        let mut con = c.connection();
        let handle = std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !s2.load(Ordering::Relaxed) {
                let k = i % 300;
                let _: () = redis::cmd("INCR")
                    .arg(format!("n:{k}"))
                    .query(&mut con)
                    .expect("INCR");
                let _: () = redis::cmd("RPUSH")
                    .arg(format!("l:{}", k % 60))
                    .arg(i)
                    .query(&mut con)
                    .expect("RPUSH");
                let _: () = redis::cmd("APPEND")
                    .arg(format!("a:{}", k % 90))
                    .arg(format!("{i},"))
                    .query(&mut con)
                    .expect("APPEND");
                o2.fetch_add(3, Ordering::Relaxed);
                i += 1;
                if i % 64 == 0 {
                    sleep(Duration::from_millis(5));
                }
            }
        });
        Load {
            stop,
            ops,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.ops.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn data(c: &Cluster) -> Snapshot {
    let mut all = Snapshot {
        ttl_exact: true,
        ..Default::default()
    };
    for m in c.masters() {
        let s = snapshot(&mut m.client());
        all.keys.extend(
            s.keys
                .into_iter()
                .filter(|((_, k), _)| !k.starts_with(b"shake-sync:")),
        );
    }
    all
}

/// A key whose slot is in `range`.
fn key_in(c: &Cluster, prefix: &str, range: (u16, u16)) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| (range.0..=range.1).contains(&c.slot(k.as_bytes())))
        .expect("a key in the range")
}

fn check(src: &Cluster, dst: &Cluster, k: u32) -> (Option<i32>, String) {
    let out = Command::new(bin("shake-check"))
        .args(["--source", &src.url(), "--target", &dst.url()])
        .args(["--shard", &format!("{k}/3"), "--rounds", "1", "-q"])
        .output()
        .expect("shake-check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn shards_sync_a_six_master_cluster() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let conf = [("databases", "1"), ("repl-backlog-size", "64mb")];
    let src = Cluster::start_masters(flavor, 6, &conf);
    let dst = Cluster::start_with(flavor, &[("databases", "1")]);
    let ranges = src.ranges();
    let load = Load::start(&src);
    sleep(Duration::from_millis(300));

    let mut shards: Vec<Shard> = (0..3)
        .map(|k| Shard::start(k, &src.url(), &dst.url()))
        .collect();
    let mut covered = BTreeSet::new();
    for s in &mut shards {
        let (names, body) = s.wait_incremental();
        assert_eq!(
            names.len(),
            2,
            "shard {}: two masters expected: {body}",
            s.k
        );
        for n in names {
            // The link names end in /<first slot>: shard K has masters 2K and 2K+1.
            let first: u16 = n
                .rsplit('/')
                .next()
                .and_then(|f| f.parse().ok())
                .expect("first slot");
            let i = ranges
                .iter()
                .position(|r| r.0 == first)
                .expect("a master's first slot");
            assert_eq!(i / 2, s.k as usize, "{n} in shard {}", s.k);
            assert!(covered.insert(n.clone()), "{n} taken by two shards");
        }
    }
    assert_eq!(covered.len(), 6, "every master covered: {covered:?}");
    let full_before: Vec<u64> = src.masters().iter().map(|m| m.stat("sync_full")).collect();
    assert_eq!(full_before, [1; 6], "one full sync per source master");

    // kill -9 shard 1 under the load; start it again from another working directory.
    sleep(Duration::from_millis(800));
    shards[1].kill9();
    sleep(Duration::from_millis(500));
    shards[1] = Shard::start(1, &src.url(), &dst.url());
    let (_, body) = shards[1].wait_incremental();
    let v: serde_json::Value = serde_json::from_str(&body).expect("status");
    for l in v["shards"].as_array().expect("links") {
        assert_eq!(
            l["full_syncs"], 0,
            "restarted shard did a full sync: {body}"
        );
        assert_eq!(
            l["partial_syncs"], 1,
            "restarted shard did not resume: {body}"
        );
    }
    sleep(Duration::from_millis(800));
    let ops = load.finish();

    // Converge: the target equals the source, nothing lost or doubled.
    let t = Instant::now();
    loop {
        let (a, b) = (data(&src), data(&dst));
        let diffs = compare("source", &a, "target", &b, Profile::rebuilt(&a, &b));
        if diffs.is_empty() {
            eprintln!(
                "3 shards: equal, {} keys, {ops} writes, after {:.1}s",
                a.keys.len(),
                t.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not equal: {}",
            diffs.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
        );
        sleep(Duration::from_millis(300));
    }
    let full_after: Vec<u64> = src.masters().iter().map(|m| m.stat("sync_full")).collect();
    assert_eq!(
        full_after, full_before,
        "sync_full per source master changed"
    );
    for i in [2, 3] {
        assert!(
            src.masters()[i].stat("sync_partial_ok") >= 1,
            "master {i} (shard 1) saw no partial resync"
        );
    }
    for s in &mut shards {
        assert_eq!(
            s.stop(),
            Some(0),
            "shard {} on SIGTERM:\n{}",
            s.k,
            s.stderr()
        );
    }

    // shake-check by shards: equal; then one difference per side, found by its shard only.
    for k in 0..3 {
        let (code, out) = check(&src, &dst, k);
        assert_eq!(code, Some(0), "check shard {k}: {out}");
    }
    // A key on master 5 (shard 2's), and a new one in master 2's slots (shard 1's).
    let gone: String = redis::cmd("RANDOMKEY")
        .query(&mut src.masters()[5].client())
        .expect("RANDOMKEY");
    let mut dcon = dst.connection();
    let _: () = redis::cmd("DEL").arg(&gone).query(&mut dcon).expect("DEL");
    let extra = key_in(&dst, "extra:", ranges[2]);
    let _: () = redis::cmd("SET")
        .arg(&extra)
        .arg("x")
        .query(&mut dcon)
        .expect("SET");
    for k in 0..3 {
        let (code, out) = check(&src, &dst, k);
        match k {
            0 => assert_eq!(code, Some(0), "check shard 0: {out}"),
            1 => {
                assert_eq!(code, Some(1), "check shard 1: {out}");
                assert!(
                    out.contains(&extra) && out.contains("\"extra\"") && !out.contains(&gone),
                    "{out}"
                );
            }
            _ => {
                assert_eq!(code, Some(1), "check shard 2: {out}");
                assert!(
                    out.contains(&gone) && out.contains("\"missing\"") && !out.contains(&extra),
                    "{out}"
                );
            }
        }
    }

    // shake-dump --shard 1/3: the files of masters 2 and 3 only.
    let dir = tempfile::tempdir().expect("dump dir");
    let out = Command::new(bin("shake-dump"))
        .args(["--source", &src.url(), "--shard", "1/3", "-q", "-o"])
        .arg(format!("{}/", dir.path().display()))
        .output()
        .expect("shake-dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: BTreeSet<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = [2, 3]
        .iter()
        .map(|&i| format!("127.0.0.1_{}.rdb", src.masters()[i].port()))
        .collect();
    assert_eq!(files, want, "dump shard 1/3");

    // shake-rump --shard 0/3: the keys of masters 0 and 1 only.
    let rdst = Server::start(flavor);
    let out = Command::new(bin("shake-rump"))
        .args([
            "--source",
            &src.url(),
            "--target",
            &rdst.url(),
            "--shard",
            "0/3",
            "-q",
        ])
        .output()
        .expect("shake-rump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: u64 = src.masters()[..2]
        .iter()
        .map(|m| {
            redis::cmd("DBSIZE")
                .query::<u64>(&mut m.client())
                .expect("DBSIZE")
        })
        .sum();
    let got: u64 = redis::cmd("DBSIZE")
        .query(&mut rdst.client())
        .expect("DBSIZE");
    assert_eq!(got, want, "rump shard 0/3 copies exactly masters 0 and 1");
}
