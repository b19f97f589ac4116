//! `redis+sentinel://` endpoints against a real master, replicas and three sentinels
//! (`redis-server --sentinel`, Debian's Redis 7.0; the rig's [`Sentinels`]). Build the
//! binaries first: `cargo build --workspace --bins`.
//!
//! - `restore_and_rump_through_sentinels`: shake-restore writes an RDB to the master the
//!   sentinels name (by URL, and by a RedisShake v4 shake.toml with `sentinel = true`);
//!   shake-rump copies from it into a plain server; each compared key by key.
//! - `wrong_name_or_no_sentinel`: a master name no sentinel knows, and sentinels that are all
//!   down: one line naming the sentinels and the name, exit 1, nothing written.
//! - `sync_follows_a_source_failover`: shake-sync from a sentinel source under an INCR load;
//!   `SENTINEL FAILOVER` during the sync; the link continues from the promoted replica with a
//!   partial resync (`+CONTINUE`: one full sync in the log, the new master served none to
//!   shake-sync) and the target ends equal to the source.
//! - `master_flag_on_rump_and_sync`: `--source-sentinel-master NAME` / `--target-sentinel-master
//!   NAME` with `--source`/`--target` naming the sentinels (a bare `host:port,host:port` list and a
//!   `redis://` URL): shake-rump copies from the master into a plain server and from a plain
//!   server into the master; shake-sync from the master: the status line and `/status` show the
//!   master's name and its address (not a sentinel's), and after `SENTINEL FAILOVER` the new
//!   master's; the target ends equal. The flag with a `redis+sentinel://` URL naming another
//!   master: exit 2, one line naming both.
//! - `sync_follows_a_target_failover`: shake-sync into a sentinel target under an INCR load,
//!   `SENTINEL FAILOVER` of the target during the sync: the sync starts again from the
//!   checkpoint the new master holds, by a partial resync of the source (one full sync in the
//!   log); the target ends equal, every counter exact (nothing lost or applied twice).

#[path = "live_common/mod.rs"]
mod live_common;
mod sync_common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{sleep, JoinHandle};
use std::time::Duration;

use live_common::*;
use shake_tests::{free_port, http_get, require, Flavor, Sentinels, Server};
use sync_common::{bin, converge, data_of, Sync};

const FLAVOR: Flavor = Flavor::Redis70;

fn run(tool: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin(tool))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A few keys of each type, some with a TTL, in databases 0 and 2.
fn small_fill(con: &mut redis::Connection) {
    for db in [0, 2] {
        let _: () = redis::cmd("SELECT").arg(db).query(con).unwrap();
        for i in 0..200 {
            let _: () = redis::pipe()
                .cmd("SET")
                .arg(format!("s:{i}"))
                .arg(format!("v{i}"))
                .cmd("HSET")
                .arg(format!("h:{}", i % 10))
                .arg(format!("f{i}"))
                .arg(i)
                .cmd("RPUSH")
                .arg(format!("l:{}", i % 7))
                .arg(i)
                .cmd("ZADD")
                .arg("z")
                .arg(i)
                .arg(format!("m{i}"))
                .cmd("SADD")
                .arg(format!("set:{}", i % 5))
                .arg(i)
                .query(con)
                .unwrap();
        }
        let _: () = redis::cmd("PEXPIRE")
            .arg("s:1")
            .arg(600_000)
            .query(con)
            .unwrap();
    }
    let _: () = redis::cmd("SELECT").arg(0).query(con).unwrap();
}

fn same(ctx: &str, a: &Server, b: &Server) {
    let (x, y) = (
        data_of(snapshot(&mut a.client())),
        data_of(snapshot(&mut b.client())),
    );
    assert!(!x.keys.is_empty(), "[{ctx}] nothing to compare");
    // shake-rump reads a TTL as PTTL and sets it as a deadline: a millisecond may slip.
    let profile = Profile {
        ttl_tolerance_ms: 50,
        ..Profile::rebuilt(&x, &y)
    };
    let diffs = compare("source", &x, "target", &y, profile);
    assert_no_diffs(ctx, &diffs);
}

#[test]
fn restore_and_rump_through_sentinels() {
    if !require(FLAVOR) {
        return;
    }
    let set = Sentinels::start(FLAVOR, 1, 3);
    let src = Server::start(FLAVOR);
    small_fill(&mut src.client());
    let rdb = src.save();
    let (code, err) = run(
        "shake-restore",
        &["--target", &set.url(), "--quiet", rdb.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "shake-restore to {}:\n{err}", set.url());
    same("restore -> sentinel master", &src, set.master());
    // The same through a RedisShake v4 shake.toml naming the sentinel ([redis_writer]
    // sentinel = true, master): a second run over the same keys, replacing them.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("shake.toml");
    std::fs::write(
        &toml,
        format!(
            "[rdb_reader]\nfilepath = \"{}\"\n[redis_writer]\naddress = \"127.0.0.1:{}\"\nsentinel = true\nmaster = \"{}\"\n[advanced]\nrdb_restore_command_behavior = \"rewrite\"\n",
            rdb.display(),
            set.sentinels[1].port(),
            set.name
        ),
    )
    .unwrap();
    let _: () = redis::cmd("SET")
        .arg("s:2")
        .arg("changed")
        .query(&mut set.master().client())
        .unwrap();
    let (code, err) = run("shake-restore", &["--config", toml.to_str().unwrap()]);
    assert_eq!(code, Some(0), "shake-restore --config:\n{err}");
    same("restore --config -> sentinel master", &src, set.master());

    let dst = Server::start(FLAVOR);
    let (code, err) = run(
        "shake-rump",
        &["--source", &set.url(), "--target", &dst.url(), "--quiet"],
    );
    assert_eq!(code, Some(0), "shake-rump from {}:\n{err}", set.url());
    same("rump sentinel master -> plain", set.master(), &dst);
}

#[test]
fn wrong_name_or_no_sentinel() {
    if !require(FLAVOR) {
        return;
    }
    let set = Sentinels::start(FLAVOR, 0, 2);
    let src = Server::start(FLAVOR);
    small_fill(&mut src.client());
    let rdb = src.save();
    let ports: Vec<u16> = set.sentinels.iter().map(|s| s.port()).collect();
    let wrong = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/no-such-master",
        ports[0], ports[1]
    );
    let (a, b) = (free_port(), free_port());
    let down = format!("redis+sentinel://127.0.0.1:{a},127.0.0.1:{b}/{}", set.name);
    for (url, names) in [(&wrong, vec![ports[0], ports[1]]), (&down, vec![a, b])] {
        let (code, err) = run(
            "shake-restore",
            &["--target", url, "--quiet", rdb.to_str().unwrap()],
        );
        assert_eq!(code, Some(1), "{url}: expected exit 1:\n{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{url}: expected one line:\n{err}");
        let name = url.rsplit('/').next().unwrap();
        assert!(lines[0].contains(&format!("{name:?}")), "{url}: {err}");
        for p in names {
            assert!(lines[0].contains(&format!("127.0.0.1:{p}")), "{url}: {err}");
        }
        assert!(!err.contains("panick"), "{err}");
    }
    // Nothing was written anywhere.
    let n: u64 = redis::cmd("DBSIZE")
        .query(&mut set.master().client())
        .unwrap();
    assert_eq!(n, 0);
}

/// INCRs `c:0..K` on whichever master `url_of()` names, one command at a time, until `stop`;
/// while `pause` is set it waits. Returns how many INCRs each counter got acknowledged.
fn incr_load(
    master_port: Arc<std::sync::atomic::AtomicU16>,
    pause: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut counts = vec![0u64; 50];
        let mut i = 0usize;
        let mut con: Option<(u16, redis::Connection)> = None;
        while !stop.load(Ordering::SeqCst) {
            if pause.load(Ordering::SeqCst) {
                sleep(Duration::from_millis(10));
                continue;
            }
            let port = master_port.load(Ordering::SeqCst);
            if con.as_ref().map(|c| c.0) != Some(port) {
                let c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .and_then(|c| c.get_connection());
                match c {
                    Ok(c) => con = Some((port, c)),
                    Err(_) => {
                        sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
            let k = i % counts.len();
            let r: redis::RedisResult<i64> = redis::cmd("INCR")
                .arg(format!("c:{k}"))
                .query(&mut con.as_mut().unwrap().1);
            if r.is_ok() {
                counts[k] += 1;
                i += 1;
            } else {
                con = None;
            }
            if i % 20 == 0 {
                sleep(Duration::from_millis(2));
            }
        }
        counts
    })
}

fn counters(s: &Server) -> Vec<u64> {
    let mut con = s.client();
    (0..50)
        .map(|k| {
            redis::cmd("GET")
                .arg(format!("c:{k}"))
                .query::<Option<u64>>(&mut con)
                .unwrap()
                .unwrap_or(0)
        })
        .collect()
}

/// Waits until every replica of the set has the master's replication offset.
fn caught_up(set: &Sentinels) {
    sync_common::wait_until("replicas caught up", Duration::from_secs(30), &mut || {
        let off = |s: &Server| s.info("replication").get("master_repl_offset").cloned();
        let m = off(set.master());
        set.nodes.iter().all(|n| off(n) == m)
    });
}

#[test]
fn sync_follows_a_source_failover() {
    if !require(FLAVOR) {
        return;
    }
    let mut set = Sentinels::start(FLAVOR, 1, 3);
    small_fill(&mut set.master().client());
    let target = Server::start(FLAVOR);
    let port = Arc::new(std::sync::atomic::AtomicU16::new(set.master().port()));
    let (pause, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let load = incr_load(port.clone(), pause.clone(), stop.clone());
    let mut sync = Sync::start(&set.url(), &target.url(), &[]);
    sync.wait_incremental(Duration::from_secs(60));
    sleep(Duration::from_millis(500));
    // The writers move to the new master as a sentinel-aware client would; the old master's
    // last writes reach the replica before it is promoted (as with a crashed master, which
    // takes no writes after the replica's promotion).
    pause.store(true, Ordering::SeqCst);
    caught_up(&set);
    let served_before: Vec<u64> = set.nodes.iter().map(|n| n.stat("sync_full")).collect();
    let new = set.failover();
    port.store(set.master().port(), Ordering::SeqCst);
    pause.store(false, Ordering::SeqCst);
    sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let counts = load.join().unwrap();
    let master = set.master();
    converge(
        "source failover",
        &|| data_of(snapshot(&mut master.client())),
        &|| data_of(snapshot(&mut target.client())),
        Duration::from_secs(60),
    );
    assert_eq!(counters(&target), counters(master));
    assert!(counts.iter().sum::<u64>() > 0);
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    eprintln!("--- shake-sync ---\n{log}");
    let full = log.matches("full sync applied").count();
    assert_eq!(
        full, 1,
        "expected one full sync (the first), got {full}:\n{log}"
    );
    // The new master served full syncs only to the old master (now its replica), if at all.
    let served = master.stat("sync_full") - served_before[new];
    assert!(
        served <= 1,
        "the new master served {served} full syncs:\n{log}"
    );
}

#[test]
fn sync_follows_a_target_failover() {
    if !require(FLAVOR) {
        return;
    }
    // The old master takes writes for seconds after the promotion, until the sentinels demote
    // it: the source's backlog must still hold the stream from the checkpoint the new master
    // has (the default 1 MB is a few seconds of this load).
    let source = Server::start_with(FLAVOR, &[("repl-backlog-size", "64mb")]);
    small_fill(&mut source.client());
    let mut set = Sentinels::start(FLAVOR, 1, 3);
    let port = Arc::new(std::sync::atomic::AtomicU16::new(source.port()));
    let (pause, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let load = incr_load(port, pause, stop.clone());
    let mut sync = Sync::start(&source.url(), &set.url(), &[]);
    sync.wait_incremental(Duration::from_secs(60));
    sleep(Duration::from_secs(1));
    set.failover();
    sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let counts = load.join().unwrap();
    let master = set.master();
    converge(
        "target failover",
        &|| data_of(snapshot(&mut source.client())),
        &|| data_of(snapshot(&mut master.client())),
        Duration::from_secs(90),
    );
    assert_eq!(counters(master), counts, "counters on the new master");
    assert_eq!(counters(&source), counts, "counters on the source");
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    eprintln!("--- shake-sync ---\n{log}");
    // Started again from the new master's checkpoint, by a partial resync of the source.
    assert!(
        log.contains("starting again from the target's checkpoint"),
        "{log}"
    );
    let full = log.matches("full sync applied").count();
    assert_eq!(
        full, 1,
        "expected one full sync (the first), got {full}:\n{log}"
    );
}

/// The first link of shake-sync's `/status`.
fn first_link(port: u16) -> Option<serde_json::Value> {
    let body = http_get(port, "/status")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["shards"].get(0).cloned()
}

#[test]
fn master_flag_on_rump_and_sync() {
    if !require(FLAVOR) {
        return;
    }
    let mut set = Sentinels::start(FLAVOR, 1, 2);
    let ports: Vec<u16> = set.sentinels.iter().map(|s| s.port()).collect();
    let bare = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let url = format!("redis://127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let name = set.name.clone();

    // shake-rump into the master (bare sentinel list), then out of it (redis:// URL).
    let src = Server::start(FLAVOR);
    small_fill(&mut src.client());
    let (code, err) = run(
        "shake-rump",
        &[
            "--source",
            &src.url(),
            "--target",
            &bare,
            "--target-sentinel-master",
            &name,
            "--quiet",
        ],
    );
    assert_eq!(code, Some(0), "shake-rump into {name} via {bare}:\n{err}");
    same("rump plain -> sentinel master (flag)", &src, set.master());
    let dst = Server::start(FLAVOR);
    let (code, err) = run(
        "shake-rump",
        &[
            "--source",
            &url,
            "--source-sentinel-master",
            &name,
            "--target",
            &dst.url(),
            "--quiet",
        ],
    );
    assert_eq!(code, Some(0), "shake-rump from {name} via {url}:\n{err}");
    same("rump sentinel master (flag) -> plain", set.master(), &dst);

    // A flag and a URL naming another master: one line, exit 2, before anything is done.
    let other = format!("redis+sentinel://{bare}/someone-else");
    for tool in ["shake-rump", "shake-sync"] {
        let (code, err) = run(
            tool,
            &[
                "--source",
                &other,
                "--source-sentinel-master",
                &name,
                "--target",
                &dst.url(),
            ],
        );
        assert_eq!(code, Some(2), "{tool}:\n{err}");
        assert_eq!(err.lines().count(), 1, "{tool}: one line:\n{err}");
        assert!(
            err.contains(&format!("{name:?}")) && err.contains("\"someone-else\""),
            "{tool}: {err}"
        );
    }

    // shake-sync: the link shows the master by name and where it is, before and after a
    // failover.
    let target = Server::start(FLAVOR);
    let status = free_port();
    let status_addr = format!("127.0.0.1:{status}");
    let mut sync = Sync::start(
        &bare,
        &target.url(),
        &[
            "--source-sentinel-master",
            &name,
            "--status-addr",
            &status_addr,
        ],
    );
    sync.wait_incremental(Duration::from_secs(60));
    let at = |port: u16| format!("127.0.0.1:{port}");
    let shows = |want: &str| {
        first_link(status).is_some_and(|l| {
            l["source"] == want && l["read_from"] == want && l["sentinel_master"] == name.as_str()
        })
    };
    let old = set.master().port();
    sync_common::wait_until(
        "/status names the master",
        Duration::from_secs(10),
        &mut || shows(&at(old)),
    );
    let line = format!("<- {name} at {}", at(old));
    sync_common::wait_until(
        "the status line names the master",
        Duration::from_secs(10),
        &mut || sync.stderr().contains(&line),
    );
    for p in &ports {
        assert!(
            !sync.stderr().contains(&format!("<- {}", at(*p))),
            "{}",
            sync.stderr()
        );
    }
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("failover")
        .query(&mut set.master().client())
        .unwrap();
    caught_up(&set);
    set.failover();
    let new = set.master().port();
    assert_ne!(new, old);
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("failover")
        .query(&mut set.master().client())
        .unwrap();
    sync_common::wait_until(
        "/status names the new master",
        Duration::from_secs(60),
        &mut || shows(&at(new)),
    );
    let master = set.master();
    converge(
        "sync from the sentinel master (flag)",
        &|| data_of(snapshot(&mut master.client())),
        &|| data_of(snapshot(&mut target.client())),
        Duration::from_secs(60),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
}
