//! shake-sync's full sync over two connections (issue 15 item 1): Valkey's dual-channel
//! replication and Redis 8's RDB channel, the command stream read meanwhile into the spool.
//! Build the binaries first (`cargo build --workspace --bins`).
//!
//! Each source snapshots slowly (`rdb-key-save-delay`) while a write load runs, so the stream
//! written during the snapshot is what the spool holds; the source's replica output buffer is
//! tight (`client-output-buffer-limit replica 256kb 128kb 1`, far below what that stream takes).
//!
//! - `dual_channel_full_sync_valkey81`, `_valkey91`, `_redis82`: the full sync goes over two
//!   connections (the source's `INFO replication` shows the RDB channel while it runs; our log
//!   says so), the stream spills to `--spool-dir` past a 64 KiB `--spool-memory`, the target
//!   converges equal to the source (shake-check), the spool files are gone afterwards, the
//!   source never dropped us for its output buffer and served exactly one full sync.
//! - `dual_channel_spool_cap`: `--spool-max` too small for the stream: one error line naming
//!   the cap and the flags, a non-zero exit, no spool file left; a restart with room converges.
//! - `dual_channel_fallbacks`: a Valkey source with `dual-channel-replication-enabled no`, and a
//!   Redis 8.2 source with `--no-dual-channel`: one connection, as before, and equal.
//! - `dual_channel_refused_step_falls_back`: a Valkey 9.1 source with dual-channel on, read by
//!   an ACL user without SYNC (what the second connection sends): one line naming the refusal,
//!   the full sync over one connection, equal.
//! - `dual_channel_preflight`: `--preflight`'s `source.output-buffer` on Valkey 9.1 and Redis
//!   8.2 sources that offer two connections: OK, not used (the spool takes the writes); with
//!   `--no-dual-channel` the usual estimate against the source's 256 KiB limit.
//! - `dual_channel_kill9_while_applying_the_buffered_stream_valkey91`, `_redis82`: kill -9 while
//!   the buffered stream is being applied (throttled by `--qps`); the restart resumes from the
//!   checkpoint (a partial resync, no second full sync) and the target ends equal: nothing lost,
//!   nothing applied twice, so the offsets the spooled stream was checkpointed at are the
//!   source's (Redis keeps its default `repl-diskless-sync-delay 5`, so the first connection gets
//!   the `\n` keep-alives of a replica waiting for the fork before the stream).

#[path = "live_common/mod.rs"]
mod live_common;
mod sync_common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

use shake_tests::{require, Flavor, Server};
use sync_common::*;

/// Keys in the snapshot; with `rdb-key-save-delay` (microseconds a key) the snapshot takes
/// KEYS * DELAY.
const KEYS: usize = 3000;
const SAVE_DELAY: &str = "1000";

/// The source's settings for a full sync over two connections, as each server's docs ask:
/// Valkey needs `dual-channel-replication-enabled yes` on the primary (off by default) and a
/// diskless sync (`repl-diskless-sync yes`, the default since 7.0); Redis 8.2 offers the RDB
/// channel by default (`repl-rdb-channel yes`) for diskless syncs too.
fn source_config(flavor: Flavor, dual: bool) -> Vec<(&'static str, &'static str)> {
    let mut c = vec![
        ("repl-diskless-sync", "yes"),
        ("client-output-buffer-limit", "replica 256kb 128kb 1"),
        ("repl-backlog-size", "64mb"),
    ];
    if flavor.is_valkey() {
        c.push(("repl-diskless-sync-delay", "0"));
        c.push((
            "dual-channel-replication-enabled",
            if dual { "yes" } else { "no" },
        ));
    } else {
        c.push(("repl-rdb-channel", if dual { "yes" } else { "no" }));
    }
    c
}

fn fill(server: &Server) {
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        pipe.cmd("SET")
            .arg(format!("base:{i}"))
            .arg(format!("{i}-{}", "x".repeat(40)))
            .ignore();
    }
    pipe.cmd("RPUSH").arg("base:list").arg(1).arg(2).ignore();
    pipe.query::<()>(&mut con).expect("fill");
}

/// Writes until stopped: counters, appends, lists, hashes, sets and fresh keys, so applying a
/// command twice or losing one shows.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    fn start(server: &Server, prefix: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (s2, o2) = (stop.clone(), ops.clone());
        let mut con = server.client();
        let handle = std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !s2.load(Ordering::Relaxed) {
                let k = i % 64;
                let mut pipe = redis::pipe();
                pipe.cmd("INCR").arg(format!("{prefix}ctr:{k}")).ignore();
                pipe.cmd("APPEND")
                    .arg(format!("{prefix}app:{k}"))
                    .arg(format!("{i},"))
                    .ignore();
                pipe.cmd("LPUSH")
                    .arg(format!("{prefix}list:{k}"))
                    .arg(i)
                    .ignore();
                pipe.cmd("HSET")
                    .arg(format!("{prefix}hash:{k}"))
                    .arg(format!("f{}", i % 11))
                    .arg(i)
                    .ignore();
                pipe.cmd("SET")
                    .arg(format!("{prefix}new:{i}"))
                    .arg("y".repeat(100))
                    .ignore();
                if i.is_multiple_of(7) {
                    pipe.cmd("DEL")
                        .arg(format!("base:{}", i % KEYS as u64))
                        .ignore();
                }
                if pipe.query::<()>(&mut con).is_err() {
                    break;
                }
                i += 1;
                o2.fetch_add(1, Ordering::Relaxed);
                if i.is_multiple_of(50) {
                    sleep(Duration::from_millis(2));
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

fn spool_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".spool"))
                .collect()
        })
        .unwrap_or_default()
}

/// What the source's `INFO replication` says of a replica on an RDB channel, if anything.
fn rdb_channel_seen(src: &Server) -> Option<String> {
    src.info("replication").into_iter().find_map(|(k, v)| {
        (k.starts_with("slave")
            && (v.contains("type=rdb-channel")
                || v.contains("type=main-channel")
                || v.contains("state=send_bulk_and_stream")))
        .then(|| format!("{k}:{v}"))
    })
}

/// A counter of the source's `INFO stats` that must be there.
fn stat_of(src: &Server, name: &str) -> u64 {
    src.info("stats")
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{} has no {name} in INFO stats", src.flavor()))
}

fn full_sync_over_two_connections(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let ctx = format!("{flavor}");
    let src = Server::start_with(flavor, &source_config(flavor, true));
    let dst = Server::start(flavor);
    fill(&src);
    let mut con = src.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(SAVE_DELAY)
        .query(&mut con)
        .expect("rdb-key-save-delay");
    let spool = tempfile::tempdir().expect("spool dir");
    let spool_dir = spool.path().join("spool");
    let load = Load::start(&src, "w:");
    sleep(Duration::from_millis(200));
    let mut sync = Sync::start(
        &src.url(),
        &dst.url(),
        &[
            "--spool-memory",
            "64k",
            "--spool-dir",
            spool_dir.to_str().expect("utf-8 path"),
        ],
    );
    // The RDB channel, as the source itself lists it, while the snapshot runs.
    let mut seen = None;
    let t = Instant::now();
    while seen.is_none() && t.elapsed() < Duration::from_secs(20) {
        seen = rdb_channel_seen(&src);
        assert!(sync.running(), "[{ctx}] exited:\n{}", sync.stderr());
        sleep(Duration::from_millis(20));
    }
    let seen = seen.unwrap_or_else(|| {
        panic!(
            "[{ctx}] the source never listed an RDB channel:\n{}",
            sync.stderr()
        )
    });
    eprintln!("[{ctx}] source: {seen}");
    // Spilled while the RDB is applied.
    let mut spilled = false;
    wait_until(
        &format!("[{ctx}] spool files"),
        Duration::from_secs(20),
        &mut || {
            spilled |= !spool_files(&spool_dir).is_empty();
            spilled || sync.stderr().contains("incremental")
        },
    );
    sync.wait_incremental(Duration::from_secs(60));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg("0")
        .query(&mut con)
        .expect("rdb-key-save-delay");
    sleep(Duration::from_millis(500));
    let ops = load.finish();
    check_equal(&ctx, &src.url(), &dst.url(), Duration::from_secs(60));
    let log = sync.stderr();
    assert!(
        log.contains("full sync over two connections"),
        "[{ctx}] {log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("RDB applied; now the"))
        .unwrap_or_else(|| panic!("[{ctx}] no buffered-stream line:\n{log}"));
    let on_disk: u64 = line
        .split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        spilled && on_disk > 0,
        "[{ctx}] nothing spilled past --spool-memory 64k: {line}"
    );
    // What one connection would have made the source hold for us, far past its hard limit of
    // 256 KiB: the second connection is what kept the link.
    let waiting: u64 = line
        .split("now the ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        waiting > 4 * 256 * 1024,
        "[{ctx}] the stream written during the snapshot is too small to prove anything: {line}"
    );
    assert_eq!(
        spool_files(&spool_dir),
        Vec::<String>::new(),
        "[{ctx}] spool files left after the buffered stream was applied"
    );
    assert_eq!(
        stat_of(&src, "client_output_buffer_limit_disconnections"),
        0,
        "[{ctx}] the source dropped a client for its output buffer"
    );
    assert_eq!(stat(&src, "sync_full"), 1, "[{ctx}] full syncs:\n{log}");
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "[{ctx}] {log}");
    eprintln!("[{ctx}] {ops} load batches; {line}");
}

#[test]
fn dual_channel_full_sync_valkey81() {
    full_sync_over_two_connections(Flavor::Valkey81);
}

#[test]
fn dual_channel_full_sync_valkey91() {
    full_sync_over_two_connections(Flavor::Valkey91);
}

#[test]
fn dual_channel_full_sync_redis82() {
    full_sync_over_two_connections(Flavor::Redis82);
}

#[test]
fn dual_channel_spool_cap() {
    let flavor = Flavor::Valkey91;
    if !require(flavor) {
        return;
    }
    let src = Server::start_with(flavor, &source_config(flavor, true));
    let dst = Server::start(flavor);
    fill(&src);
    let mut con = src.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(SAVE_DELAY)
        .query(&mut con)
        .expect("rdb-key-save-delay");
    let spool = tempfile::tempdir().expect("spool dir");
    let dir = spool.path().to_str().expect("utf-8 path").to_string();
    let load = Load::start(&src, "w:");
    let mut sync = Sync::start(
        &src.url(),
        &dst.url(),
        &[
            "--spool-memory",
            "16k",
            "--spool-max",
            "64k",
            "--spool-dir",
            &dir,
        ],
    );
    wait_until("shake-sync stops", Duration::from_secs(60), &mut || {
        !sync.running()
    });
    let (code, log) = sync.stop();
    assert_eq!(code, Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("--spool-max")).collect();
    assert_eq!(errors.len(), 1, "one line naming the cap:\n{log}");
    assert!(
        errors[0].contains("--spool-max 65536")
            && errors[0].contains("--spool-memory")
            && errors[0].contains("--no-dual-channel"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        spool_files(spool.path()),
        Vec::<String>::new(),
        "spool left"
    );
    // With room, the same source converges (the interrupted full sync is done again).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg("0")
        .query(&mut con)
        .expect("rdb-key-save-delay");
    let mut sync = Sync::start(&src.url(), &dst.url(), &["--spool-dir", &dir]);
    sync.wait_incremental(Duration::from_secs(60));
    load.finish();
    check_equal(
        "after the cap",
        &src.url(),
        &dst.url(),
        Duration::from_secs(60),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn dual_channel_fallbacks() {
    for (flavor, setting_on, extra) in [
        (Flavor::Valkey91, false, &[][..]),
        (Flavor::Valkey81, false, &[][..]),
        (Flavor::Redis82, true, &["--no-dual-channel"][..]),
    ] {
        if !require(flavor) {
            continue;
        }
        let ctx = format!("{flavor} {extra:?}");
        let mut config = source_config(flavor, setting_on);
        // One connection: the source holds the stream for us, so its default limit.
        config.retain(|(k, _)| *k != "client-output-buffer-limit");
        let src = Server::start_with(flavor, &config);
        let dst = Server::start(flavor);
        fill(&src);
        let load = Load::start(&src, "w:");
        let mut sync = Sync::start(&src.url(), &dst.url(), extra);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            assert_eq!(rdb_channel_seen(&src), None, "[{ctx}]");
            sleep(Duration::from_millis(20));
        }
        sync.wait_incremental(Duration::from_secs(60));
        load.finish();
        check_equal(&ctx, &src.url(), &dst.url(), Duration::from_secs(60));
        let (code, log) = sync.stop();
        assert_eq!(code, Some(0), "[{ctx}] {log}");
        assert!(log.contains("full sync from"), "[{ctx}] {log}");
        assert!(!log.contains("two connections"), "[{ctx}] {log}");
    }
}

#[test]
fn dual_channel_kill9_while_applying_the_buffered_stream_valkey91() {
    kill9_while_applying_the_buffered_stream(Flavor::Valkey91);
}

#[test]
fn dual_channel_kill9_while_applying_the_buffered_stream_redis82() {
    kill9_while_applying_the_buffered_stream(Flavor::Redis82);
}

fn kill9_while_applying_the_buffered_stream(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let src = Server::start_with(flavor, &source_config(flavor, true));
    let dst = Server::start(flavor);
    fill(&src);
    let mut con = src.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(SAVE_DELAY)
        .query(&mut con)
        .expect("rdb-key-save-delay");
    let spool = tempfile::tempdir().expect("spool dir");
    let dir = spool.path().to_str().expect("utf-8 path").to_string();
    let load = Load::start(&src, "w:");
    // Throttled, so the buffered stream takes a while to apply.
    let sync = Sync::start(
        &src.url(),
        &dst.url(),
        &[
            "--spool-memory",
            "64k",
            "--spool-dir",
            &dir,
            "--qps",
            "2000",
        ],
    );
    assert!(
        stat_of(&src, "sync_full") <= 1,
        "[{flavor}] full syncs before the kill"
    );
    wait_until(
        "the buffered stream being applied",
        Duration::from_secs(60),
        &mut || sync.stderr().contains("RDB applied; now the"),
    );
    sleep(Duration::from_millis(300));
    let log = sync.kill9();
    eprintln!(
        "killed:\n{}",
        log.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg("0")
        .query(&mut con)
        .expect("rdb-key-save-delay");
    let full_before = stat(&src, "sync_full");
    let mut sync = Sync::start(&src.url(), &dst.url(), &["--spool-dir", &dir]);
    sync.wait_incremental(Duration::from_secs(60));
    sleep(Duration::from_millis(500));
    let ops = load.finish();
    check_equal(
        "kill -9 resume",
        &src.url(),
        &dst.url(),
        Duration::from_secs(60),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("resumed from offset"),
        "no partial resync:\n{log}"
    );
    assert_eq!(
        stat(&src, "sync_full"),
        full_before,
        "a second full sync:\n{log}"
    );
    // What the killed process had spooled is deleted by the next start.
    assert_eq!(
        spool_files(spool.path()),
        Vec::<String>::new(),
        "spool left"
    );
    eprintln!("{ops} load batches");
}

#[test]
fn dual_channel_refused_step_falls_back() {
    let flavor = Flavor::Valkey91;
    if !require(flavor) {
        return;
    }
    let mut config = source_config(flavor, true);
    config.retain(|(k, _)| *k != "client-output-buffer-limit");
    let src = Server::start_with(flavor, &config);
    let dst = Server::start(flavor);
    fill(&src);
    // A user that may do everything but SYNC, which the second connection of Valkey's
    // dual-channel full sync sends: the source offers two connections, then refuses a step.
    let mut con = src.client();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("shake")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-sync")
        .query(&mut con)
        .expect("ACL SETUSER");
    let url = format!("redis://shake:pw@127.0.0.1:{}", src.port());
    let load = Load::start(&src, "w:");
    let mut sync = Sync::start(&url, &dst.url(), &[]);
    sync.wait_incremental(Duration::from_secs(60));
    load.finish();
    check_equal(
        "refused step",
        &src.url(),
        &dst.url(),
        Duration::from_secs(60),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the source offered a second one for the RDB, but"))
        .collect();
    assert_eq!(lines.len(), 1, "one fall-back line:\n{log}");
    assert!(lines[0].contains("NOPERM"), "{log}");
    assert!(!log.contains("two connections"), "{log}");
}

#[test]
fn dual_channel_preflight() {
    for flavor in [Flavor::Valkey91, Flavor::Redis82] {
        if !require(flavor) {
            continue;
        }
        let src = Server::start_with(flavor, &source_config(flavor, true));
        let dst = Server::start(flavor);
        fill(&src);
        let line = |extra: &[&str]| {
            let out = std::process::Command::new(bin("shake-sync"))
                .args([
                    "--source",
                    &src.url(),
                    "--target",
                    &dst.url(),
                    "--preflight",
                ])
                .args(extra)
                .output()
                .expect("run shake-sync --preflight");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            text.lines()
                .find(|l| l.contains("source.output-buffer"))
                .unwrap_or_else(|| panic!("[{flavor}] no output-buffer line:\n{text}"))
                .to_string()
        };
        let two = line(&[]);
        assert!(
            two.starts_with("OK") && two.contains("two connections"),
            "[{flavor}] {two}"
        );
        let one = line(&["--no-dual-channel"]);
        assert!(
            one.contains("replica output buffer") && one.contains("256.0 KiB"),
            "[{flavor}] {one}"
        );
    }
}
