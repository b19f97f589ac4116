//! `shake-restore` against real servers (issue 3 §4). Every test runs the built binary, so build
//! it first: `cargo build -p shake-restore -p shake-decode` (`cargo test -p shake-tests` does not
//! build other packages' binaries).
//!
//! - `restore_matrix_from_<flavor>`: a source of each flavor filled with every type in its
//!   compact and large encodings (streams with groups, PEL, consumers, tombstones; scores that
//!   need every bit; TTLs; hash field TTLs on Valkey 9.1), SAVEd, and restored into every flavor,
//!   every downgrade included: database 0 with default settings (fast and portable paths),
//!   database 1 with `--big-key-bytes 1024` (most collections as command batches). Each is
//!   compared key by key with the source as far as the target version can show it. From 9.1
//!   into a target without field TTLs the default refuses naming the key, `--field-ttls drop`
//!   works and reports the count.
//! - `restore_into_cluster_and_db_map`: a multi-database RDB into a 3-master cluster without
//!   `--db-map` (refused before anything is written, the message explains `--db-map`), with
//!   `--db-map '*=0'`, then re-run with rewrite and big keys; and into a standalone server with
//!   and without a mapping.
//! - `restore_conflict_policies`: panic (exit 1, the key named), ignore (the target's keys and
//!   function library kept, the count reported), rewrite (replaced), and a second rewrite run
//!   leaving the target identical to the source, each with and without big keys.
//! - `restore_scores_exact_on_every_path`: 0.1234567891, 1e-9, 2^53+1, -0.0, inf, -inf through
//!   the fast, portable, big-key (from a loadable and from a non-loadable encoding) paths.
//! - `restore_big_keys_peak_rss`: a list of 2M elements and a hash of 1M fields, the child's peak
//!   RSS under 64 MiB with the default settings and with `--big-key-bytes 8388608`.
//! - `restore_corpus_into_redis_7_0`: every valid corpus file a Redis 7.0 can hold, restored and
//!   compared with its decode (the target SAVEd and decoded; both sides through shake-decode).
//! - `restore_target_killed_midway`: the target killed (under panic: nothing resent; under
//!   rewrite: bounded reconnects) or frozen with SIGSTOP (the reply timeout): a clear one-line
//!   error naming the endpoint, exit 1, no hang.
//! - `restore_expired_keys_and_keep_lru`: keys whose TTL passed are skipped and counted;
//!   `--keep-lru` passes IDLETIME (LRU policy) and FREQ (LFU policy).
//! - `restore_stdin_and_several_files`: `cat FILE | shake-restore -`, two files in one run, a
//!   file and stdin, a damaged file (nothing written).
//!
//! `SHAKE_KEEP_TMP=1` keeps the scratch directories (the RDBs) for a post-mortem;
//! `SHAKE_RSS_BIG_KEY_BYTES=33554432,16777216` adds thresholds to the RSS test's figures.

#[path = "live_common/mod.rs"]
mod live_common;
mod writer_common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use live_common::*;
use shake_tests::{require, Cluster, Flavor, Server};
use writer_common::{config_set, db_view, fill, project};

// ---------------------------------------------------------------------------------------------
// Running the binaries

fn bin(name: &str) -> PathBuf {
    let guess = std::env::current_exe().ok().and_then(|p| {
        p.parent()?
            .parent()
            .map(|d| d.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
    });
    if std::env::var_os(format!("CARGO_BIN_EXE_{name}")).is_none()
        && !guess.as_ref().is_some_and(|p| p.exists())
    {
        panic!("the {name} binary is not built: run `cargo build -p shake-restore -p shake-decode` first");
    }
    assert_cmd::cargo::cargo_bin(name)
}

/// What a finished run left behind.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stderr: String,
    secs: f64,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// The summary line (`... keys written (...) ...`).
    fn summary(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.contains("keys written"))
            .unwrap_or_else(|| panic!("no summary line in stderr:\n{}", self.stderr))
    }
    /// The number printed just before `label` in the summary line (0 when the label is absent,
    /// as the dropped-field-TTL clause is when nothing was dropped).
    fn stat(&self, label: &str) -> u64 {
        let line = self.summary();
        let Some(i) = line.find(label) else { return 0 };
        let before = line[..i].trim_end();
        let digits: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no number before {label:?} in {line:?}"))
    }
}

/// Runs `cmd` with `stdin` (bytes written from a thread; or /dev/null), killing it and failing
/// after `limit`.
fn run_limited(mut cmd: Command, stdin: Option<Vec<u8>>, limit: Duration) -> Out {
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("SHAKE_TARGET")
        .env_remove("SHAKE_TARGET_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let feeder = stdin.map(|bytes| {
        let mut w = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&bytes);
        })
    });
    let (out, err) = collect_output(&mut child);
    let code = wait_limited(&mut child, limit, &format!("{cmd:?}"));
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let _ = out.join(); // shake-restore prints nothing on stdout
    Out {
        code,
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        secs: started.elapsed().as_secs_f64(),
    }
}

type Reader = std::thread::JoinHandle<Vec<u8>>;

fn collect_output(child: &mut Child) -> (Reader, Reader) {
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    (
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = so.read_to_end(&mut b);
            b
        }),
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = se.read_to_end(&mut b);
            b
        }),
    )
}

fn wait_limited(child: &mut Child, limit: Duration, what: &str) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?} (killed)");
        }
        sleep(Duration::from_millis(20));
    }
}

fn restore_cmd(url: &str, args: &[&str], files: &[&Path]) -> Command {
    let mut c = Command::new(bin("shake-restore"));
    c.arg("--target")
        .arg(url)
        .arg("--quiet")
        .arg("--log-interval")
        .arg("0")
        .args(args)
        .args(files);
    c
}

/// `shake-restore --target URL ARGS FILES`, at most two minutes.
fn restore(url: &str, args: &[&str], files: &[&Path]) -> Out {
    let out = run_limited(
        restore_cmd(url, args, files),
        None,
        Duration::from_secs(120),
    );
    eprintln!(
        "  shake-restore {args:?} -> {:?} in {:.2}s: {}",
        out.code,
        out.secs,
        out.stderr.trim_end()
    );
    out
}

/// Like [`restore`], and it must succeed.
fn restore_ok(ctx: &str, url: &str, args: &[&str], files: &[&Path]) -> Out {
    let out = restore(url, args, files);
    assert!(
        out.ok(),
        "[{ctx}] shake-restore {args:?} exited {:?}:\n{}",
        out.code,
        out.stderr
    );
    out
}

/// The JSON lines of `shake-decode FILE`.
fn decode_file(rdb: &Path) -> String {
    let out = Command::new(bin("shake-decode"))
        .arg("--quiet")
        .arg(rdb)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run shake-decode");
    assert!(
        out.status.success(),
        "shake-decode {} exited {}: {}",
        rdb.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("shake-decode prints UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Servers and data

/// A target with deep payload validation where the server has it (Valkey 9.1 does not).
fn start_target(f: Flavor) -> Server {
    start_target_with(f, &[])
}

fn start_target_with(f: Flavor, config: &[(&str, &str)]) -> Server {
    let s = Server::start_with(f, config);
    let mut con = s.client();
    let _: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("sanitize-dump-payload")
        .arg("yes")
        .query(&mut con);
    s
}

/// SAVE, then copy the file out of the server's directory (a later SAVE would overwrite it).
fn save_copy(server: &Server, dir: &Path, name: &str) -> PathBuf {
    let saved = server.save();
    let dst = dir.join(name);
    std::fs::copy(&saved, &dst).expect("copy the RDB");
    dst
}

/// A scratch directory (kept after the test when SHAKE_KEEP_TMP is set, for a post-mortem).
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shake-restore-test-")
        .disable_cleanup(std::env::var_os("SHAKE_KEEP_TMP").is_some())
        .tempdir()
        .expect("temporary directory")
}

fn dbsize(con: &mut redis::Connection) -> i64 {
    q(con, &redis::cmd("DBSIZE"))
}

fn total_keys(server: &Server) -> i64 {
    let info = server.info("keyspace");
    info.iter()
        .filter(|(k, _)| k.starts_with("db"))
        .map(|(_, v)| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Every key of the three masters as one snapshot (database 0 only: cluster nodes are started
/// with `databases 1`, so `snapshot` does not try to SELECT others).
fn cluster_snapshot(cluster: &Cluster) -> Snapshot {
    let mut all = Snapshot {
        ttl_exact: true,
        ..Default::default()
    };
    for m in cluster.masters() {
        let s = snapshot(&mut m.client());
        all.ttl_exact &= s.ttl_exact;
        for (k, v) in s.keys {
            assert!(
                all.keys.insert(k.clone(), v).is_none(),
                "{} held by two masters",
                show_key(&k)
            );
        }
    }
    all
}

/// A snapshot with every key moved to database `db`.
fn in_db(s: &Snapshot, db: i64) -> Snapshot {
    Snapshot {
        keys: s
            .keys
            .iter()
            .map(|((_, k), v)| ((db, k.clone()), v.clone()))
            .collect(),
        ttl_exact: s.ttl_exact,
        errors: s.errors.clone(),
    }
}

fn field_ttl_count(s: &Snapshot) -> u64 {
    s.keys
        .values()
        .map(|k| k.field_expire_at_ms.len() as u64)
        .sum()
}

/// A source with a little of everything: strings, small and big collections, a stream with a
/// group and pending entries, TTLs, and a function library on 7.0+.
fn small_fill(con: &mut redis::Connection, flavor: Flavor, prefix: &str) {
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("SET")
            .arg(format!("{prefix}str:{i}"))
            .arg(format!("value {i}"))
            .ignore();
    }
    pipe.cmd("RPUSH")
        .arg(format!("{prefix}list"))
        .arg(&["a", "b", "c"])
        .ignore();
    let big: Vec<String> = (0..5000).map(|i| format!("element-{i}")).collect();
    pipe.cmd("RPUSH")
        .arg(format!("{prefix}list:big"))
        .arg(&big)
        .ignore();
    pipe.cmd("HSET")
        .arg(format!("{prefix}hash"))
        .arg(&["f1", "v1", "f2", "v2"])
        .ignore();
    let hbig: Vec<String> = (0..2000)
        .flat_map(|i| [format!("field-{i}"), format!("value-{i}")])
        .collect();
    pipe.cmd("HSET")
        .arg(format!("{prefix}hash:big"))
        .arg(&hbig)
        .ignore();
    pipe.cmd("SADD")
        .arg(format!("{prefix}set"))
        .arg(&["x", "y", "z"])
        .ignore();
    pipe.cmd("ZADD")
        .arg(format!("{prefix}zset"))
        .arg(&["1.5", "a", "-0.25", "b"])
        .ignore();
    for i in 1..=400 {
        pipe.cmd("XADD")
            .arg(format!("{prefix}stream"))
            .arg(format!("{i}-1"))
            .arg("n")
            .arg(i)
            .arg("pad")
            .arg("some padding to make the stream big")
            .ignore();
    }
    pipe.cmd("XGROUP")
        .arg("CREATE")
        .arg(format!("{prefix}stream"))
        .arg("g")
        .arg("0")
        .ignore();
    pipe.cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("alice")
        .arg("COUNT")
        .arg(7)
        .arg("STREAMS")
        .arg(format!("{prefix}stream"))
        .arg(">")
        .ignore();
    pipe.cmd("XDEL")
        .arg(format!("{prefix}stream"))
        .arg("2-1")
        .arg("300-1")
        .ignore();
    pipe.cmd("PEXPIRE")
        .arg(format!("{prefix}str:7"))
        .arg(86_400_000)
        .ignore();
    pipe.cmd("PEXPIRE")
        .arg(format!("{prefix}list:big"))
        .arg(86_400_000)
        .ignore();
    let _: () = pipe.query(con).expect("small fill");
    if flavor.is_7_0_or_later() && prefix.is_empty() {
        let _: String = q(
            con,
            redis::cmd("FUNCTION").arg("LOAD").arg(
                "#!lua name=srclib\nredis.register_function('srcfn', function() return 1 end)",
            ),
        );
    }
}

const TARGET_LIB: &str =
    "#!lua name=srclib\nredis.register_function('targetfn', function() return 2 end)";

// ---------------------------------------------------------------------------------------------
// 1. Every version into every version

#[test]
fn restore_matrix_from_redis_6_2() {
    matrix(Flavor::Redis62);
}

#[test]
fn restore_matrix_from_redis_7_0() {
    matrix(Flavor::Redis70);
}

#[test]
fn restore_matrix_from_valkey_8_1() {
    matrix(Flavor::Valkey81);
}

#[test]
fn restore_matrix_from_valkey_9_1() {
    matrix(Flavor::Valkey91);
}

/// Redis 8.2 (RDB 12, hash field TTLs) joins the matrix at its most telling pairs: down to 7.0,
/// across to Valkey 9.1 (field TTLs kept, re-encoded as Valkey's HASH_2), into itself.
#[test]
fn restore_matrix_from_redis_8_2() {
    matrix_to(
        Flavor::Redis82,
        &[Flavor::Redis70, Flavor::Valkey91, Flavor::Redis82],
    );
}

/// Valkey 9.1 into Redis 8.2: HASH_2 field TTLs re-encoded as Redis's HASH_METADATA.
#[test]
fn restore_valkey_9_1_into_redis_8_2() {
    matrix_to(Flavor::Valkey91, &[Flavor::Redis82]);
}

/// Redis 7.0 up to Redis 8.2 (8.2 <-> 7.0 both ways, with the pair above).
#[test]
fn restore_redis_7_0_into_redis_8_2() {
    matrix_to(Flavor::Redis70, &[Flavor::Redis82]);
}

fn matrix(source: Flavor) {
    matrix_to(source, &Flavor::matrix());
}

fn matrix_to(source: Flavor, targets: &[Flavor]) {
    if !require(source) {
        return;
    }
    let started = Instant::now();
    let tmp = tempdir();
    let src = Server::start(source);
    let mut con = src.client();
    fill(&mut con, source, now_ms());
    let truth = db_view(&snapshot(&mut con), 0);
    let rdb = save_copy(&src, tmp.path(), "source.rdb");
    let field_ttls = field_ttl_count(&truth);
    let n = truth.keys.len() as u64;

    let mut problems = Vec::new();
    for &target in targets {
        if !require(target) {
            continue;
        }
        let ctx = format!("{source} -> {target}");
        eprintln!("[{ctx}]");
        let dst = start_target(target);
        let url = dst.url();
        let mut extra: Vec<&str> = Vec::new();
        if field_ttls > 0 && !target.has_field_ttls() {
            // The default refuses, naming a key with a field TTL and the way out.
            let out = restore(&url, &[], &[&rdb]);
            if out.code != Some(1)
                || !out.stderr.contains("key \"hash:fttl:")
                || !out.stderr.contains("drop")
            {
                problems.push(format!(
                    "[{ctx}] default field-TTL policy: expected exit 1 naming a hash:fttl: key and 'drop', got {:?}: {}",
                    out.code, out.stderr
                ));
            }
            let _: () = q(&mut dst.client(), &redis::cmd("FLUSHALL"));
            extra = vec!["--field-ttls", "drop"];
        }

        // Database 0: default settings.
        let out = restore_ok(&ctx, &url, &extra, &[&rdb]);
        let (written, transcoded, big) = (
            out.stat("keys written"),
            out.stat("transcoded"),
            out.stat("big keys as commands"),
        );
        if written != n || big != 0 {
            problems.push(format!(
                "[{ctx}] {written} keys written ({big} big), expected {n} (0 big): {}",
                out.summary()
            ));
        }
        if target == source && transcoded != 0 {
            problems.push(format!(
                "[{ctx}] {transcoded} keys transcoded into the same version"
            ));
        }
        if target < source && transcoded == 0 {
            problems.push(format!(
                "[{ctx}] a downgrade transcoded nothing: {}",
                out.summary()
            ));
        }
        let want_dropped = if extra.is_empty() { 0 } else { field_ttls };
        if out.stat("hash field TTLs dropped") != want_dropped {
            problems.push(format!(
                "[{ctx}] expected {want_dropped} field TTLs dropped: {}",
                out.summary()
            ));
        }

        // Database 1: most collections as batches of commands.
        let mut big_args = extra.clone();
        big_args.extend(["--db-map", "0=1", "--big-key-bytes", "1024"]);
        let out = restore(&url, &big_args, &[&rdb]);
        if !out.ok() {
            problems.push(format!(
                "[{ctx}] big-key run exited {:?}: {}",
                out.code,
                out.stderr.trim_end()
            ));
        } else {
            if out.stat("keys written") != n || out.stat("big keys as commands") < 5 {
                problems.push(format!("[{ctx}] big-key run: {}", out.summary()));
            }
            if out.stat("hash field TTLs dropped") != want_dropped {
                problems.push(format!(
                    "[{ctx}] big-key run: expected {want_dropped} field TTLs dropped: {}",
                    out.summary()
                ));
            }
        }

        let expected = project(&truth, target);
        let got = snapshot(&mut dst.client());
        let mut db0 = db_view(&got, 0);
        forget_unrecorded(&expected, &mut db0);
        problems.extend(compare(
            source.name(),
            &expected,
            &format!("{target} db 0"),
            &db0,
            Profile::exact(&expected, &db0),
        ));
        let mut db1 = db_view(&got, 1);
        forget_unrecorded(&expected, &mut db1);
        problems.extend(compare(
            source.name(),
            &expected,
            &format!("{target} db 1 (big keys)"),
            &db1,
            Profile::rebuilt(&expected, &db1),
        ));
        let others: Vec<i64> = got
            .keys
            .keys()
            .map(|(db, _)| *db)
            .filter(|db| *db > 1)
            .collect();
        if !others.is_empty() {
            problems.push(format!("[{ctx}] keys in unexpected databases {others:?}"));
        }
    }
    eprintln!(
        "[{source}] {n} keys into every flavor in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_no_diffs(&format!("restore matrix from {source}"), &problems);
}

// ---------------------------------------------------------------------------------------------
// 2. Cluster, databases

#[test]
fn restore_into_cluster_and_db_map() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempdir();
    let src = Server::start(flavor);
    let mut con = src.client();
    fill(&mut con, flavor, now_ms());
    for db in [1, 2] {
        let _: () = q(&mut con, redis::cmd("SELECT").arg(db));
        small_fill(&mut con, flavor, &format!("db{db}:"));
    }
    let _: () = q(&mut con, redis::cmd("SELECT").arg(0));
    let _: String = q(
        &mut con,
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("#!lua name=clusterlib\nredis.register_function('f', function() return 1 end)"),
    );
    let libs = function_libraries(&mut con);
    let truth = snapshot(&mut con);
    let rdb = save_copy(&src, tmp.path(), "multi-db.rdb");
    let merged = in_db(&truth, 0);
    assert_eq!(
        merged.keys.len(),
        truth.keys.len(),
        "key names are distinct across databases"
    );
    let mut problems = Vec::new();

    // Cluster without a mapping: refused up front, nothing written.
    let cluster = Cluster::start_with(flavor, &[("databases", "1")]);
    let url = cluster.url();
    let out = restore(&url, &[], &[&rdb]);
    assert_eq!(
        out.code,
        Some(1),
        "multi-db into a cluster without --db-map: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--db-map") && out.stderr.contains("cluster"),
        "the refusal explains --db-map: {}",
        out.stderr
    );
    assert_eq!(
        out.stderr.trim_end().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
    let held: i64 = cluster.masters().iter().map(total_keys).sum();
    assert_eq!(held, 0, "nothing may be written before the refusal");

    // With --db-map '*=0': every key, on the master owning its slot.
    let out = restore_ok("cluster", &url, &["--db-map", "*=0"], &[&rdb]);
    assert_eq!(
        out.stat("keys written"),
        truth.keys.len() as u64,
        "{}",
        out.summary()
    );
    for m in cluster.masters() {
        assert!(
            total_keys(m) > 10,
            "every master got keys ({} has {})",
            m.url(),
            total_keys(m)
        );
    }
    let got = cluster_snapshot(&cluster);
    problems.extend(compare(
        "source",
        &merged,
        "cluster",
        &got,
        Profile::exact(&merged, &got),
    ));

    // Again with rewrite, big keys as commands (DEL first on each node): still identical.
    let out = restore_ok(
        "cluster rewrite",
        &url,
        &[
            "--db-map",
            "*=0",
            "--on-conflict",
            "rewrite",
            "--big-key-bytes",
            "1024",
        ],
        &[&rdb],
    );
    assert!(out.stat("big keys as commands") > 5, "{}", out.summary());
    let got = cluster_snapshot(&cluster);
    problems.extend(compare(
        "source",
        &merged,
        "cluster after rewrite",
        &got,
        Profile::rebuilt(&merged, &got),
    ));
    // The function library went to every master (FUNCTION LOAD, then LOAD REPLACE).
    for m in cluster.masters() {
        let got = function_libraries(&mut m.client());
        if got != libs {
            problems.push(format!("{}: libraries {got:?}, expected {libs:?}", m.url()));
        }
    }
    drop(cluster);

    // Standalone without a mapping: databases kept.
    let dst = start_target(flavor);
    restore_ok("standalone", &dst.url(), &[], &[&rdb]);
    let got = snapshot(&mut dst.client());
    problems.extend(compare(
        "source",
        &truth,
        "standalone",
        &got,
        Profile::exact(&truth, &got),
    ));

    // Standalone with mappings: 1 -> 0 next to database 0's own keys, everything else -> 5.
    let dst = start_target(flavor);
    restore_ok(
        "standalone db-map",
        &dst.url(),
        &["--db-map", "1=0", "--db-map", "*=5"],
        &[&rdb],
    );
    let mut want = Snapshot {
        ttl_exact: truth.ttl_exact,
        ..Default::default()
    };
    for ((db, k), v) in &truth.keys {
        let to = if *db == 1 { 0 } else { 5 };
        want.keys.insert((to, k.clone()), v.clone());
    }
    let got = snapshot(&mut dst.client());
    problems.extend(compare(
        "mapped source",
        &want,
        "standalone",
        &got,
        Profile::exact(&want, &got),
    ));

    // A database in the URL receives every key.
    let dst = start_target(flavor);
    restore_ok("url db", &format!("{}/7", dst.url()), &[], &[&rdb]);
    let got = snapshot(&mut dst.client());
    let want = in_db(&truth, 7);
    problems.extend(compare(
        "source",
        &want,
        "url /7",
        &got,
        Profile::exact(&want, &got),
    ));

    assert_no_diffs("cluster and db-map", &problems);
}

// ---------------------------------------------------------------------------------------------
// 3. Conflict policies and re-runs

#[test]
fn restore_conflict_policies() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempdir();
    let src = Server::start(flavor);
    let mut con = src.client();
    small_fill(&mut con, flavor, "");
    let truth = snapshot(&mut con);
    let src_lib = function_libraries(&mut con);
    let rdb = save_copy(&src, tmp.path(), "source.rdb");
    let conflicting = ["str:3", "list", "list:big", "stream"];

    // A target holding other values under some of the source's names.
    let prepared = |with_lib: bool| -> (Server, Snapshot) {
        let dst = start_target(flavor);
        let mut c = dst.client();
        let _: () = q(&mut c, redis::cmd("SET").arg("str:3").arg("the target's"));
        let _: i64 = q(&mut c, redis::cmd("RPUSH").arg("list").arg("t1"));
        let _: i64 = q(
            &mut c,
            redis::cmd("RPUSH").arg("list:big").arg("t1").arg("t2"),
        );
        let _: String = q(
            &mut c,
            redis::cmd("XADD")
                .arg("stream")
                .arg("5-5")
                .arg("t")
                .arg("1"),
        );
        let _: () = q(&mut c, redis::cmd("SET").arg("target-only").arg("1"));
        if with_lib {
            let _: String = q(&mut c, redis::cmd("FUNCTION").arg("LOAD").arg(TARGET_LIB));
        }
        let pre = snapshot(&mut c);
        (dst, pre)
    };

    let mut problems = Vec::new();
    for big in [false, true] {
        let big_args: &[&str] = if big {
            &["--big-key-bytes", "1024"]
        } else {
            &[]
        };
        let tag = if big { "big keys" } else { "default" };
        let profile_of = |a: &Snapshot, b: &Snapshot| {
            if big {
                Profile::rebuilt(a, b)
            } else {
                Profile::exact(a, b)
            }
        };

        // panic (the default): exit 1, the key named.
        let (dst, _) = prepared(false);
        let out = restore(&dst.url(), big_args, &[&rdb]);
        let named = conflicting
            .iter()
            .any(|k| out.stderr.contains(&format!("key \"{k}\" already exists")));
        if out.code != Some(1) || !named || out.stderr.trim_end().lines().count() != 1 {
            problems.push(format!(
                "[panic, {tag}] expected exit 1 and one line naming a conflicting key, got {:?}: {}",
                out.code, out.stderr
            ));
        }

        // ignore: the target's keys and library kept, the count reported.
        let (dst, pre) = prepared(true);
        let mut args = big_args.to_vec();
        args.extend(["--on-conflict", "ignore"]);
        let out = restore_ok(&format!("ignore, {tag}"), &dst.url(), &args, &[&rdb]);
        if out.stat("conflicts kept") != conflicting.len() as u64
            || out.stat("keys written") != (truth.keys.len() - conflicting.len()) as u64
            || out.stat("kept)") != 1
        {
            problems.push(format!("[ignore, {tag}] counts: {}", out.summary()));
        }
        let mut want = truth.clone();
        want.keys.extend(pre.keys.clone());
        let mut c = dst.client();
        let got = snapshot(&mut c);
        problems.extend(compare(
            "source+target",
            &want,
            &format!("ignore, {tag}"),
            &got,
            profile_of(&want, &got),
        ));
        let libs = function_libraries(&mut c);
        if libs != vec![TARGET_LIB.to_string()] {
            problems.push(format!(
                "[ignore, {tag}] libraries {libs:?}, expected the target's"
            ));
        }

        // rewrite: replaced; a second run changes nothing.
        let (dst, _) = prepared(true);
        let mut args = big_args.to_vec();
        args.extend(["--on-conflict", "rewrite"]);
        let mut want = truth.clone();
        let target_only = (0, b"target-only".to_vec());
        want.keys
            .insert(target_only.clone(), pre.keys[&target_only].clone());
        for run in 1..=2 {
            let out = restore_ok(
                &format!("rewrite #{run}, {tag}"),
                &dst.url(),
                &args,
                &[&rdb],
            );
            if out.stat("keys written") != truth.keys.len() as u64
                || out.stat("conflicts kept") != 0
            {
                problems.push(format!("[rewrite #{run}, {tag}] counts: {}", out.summary()));
            }
            if big && out.stat("big keys as commands") < 3 {
                problems.push(format!(
                    "[rewrite #{run}, {tag}] no big keys: {}",
                    out.summary()
                ));
            }
            let mut c = dst.client();
            let got = snapshot(&mut c);
            problems.extend(compare(
                "source",
                &want,
                &format!("rewrite #{run}, {tag}"),
                &got,
                profile_of(&want, &got),
            ));
            let libs = function_libraries(&mut c);
            if libs != src_lib {
                problems.push(format!(
                    "[rewrite #{run}, {tag}] libraries {libs:?}, expected {src_lib:?}"
                ));
            }
        }
    }

    // A function library that exists, under panic: an error naming the library, exit 1.
    let dst = start_target(flavor);
    let _: String = q(
        &mut dst.client(),
        redis::cmd("FUNCTION").arg("LOAD").arg(TARGET_LIB),
    );
    let out = restore(&dst.url(), &[], &[&rdb]);
    if out.code != Some(1) || !out.stderr.contains("srclib") {
        problems.push(format!(
            "[panic, library exists] expected exit 1 naming srclib, got {:?}: {}",
            out.code, out.stderr
        ));
    }
    assert_no_diffs("conflict policies", &problems);
}

// ---------------------------------------------------------------------------------------------
// 4. Scores

const SCORES: [&str; 6] = [
    "0.1234567891",
    "1e-9",
    "9007199254740993",
    "-0.0",
    "inf",
    "-inf",
];

#[test]
fn restore_scores_exact_on_every_path() {
    let (source, old) = (Flavor::Redis70, Flavor::Redis62);
    if !require(source) || !require(old) {
        return;
    }
    let tmp = tempdir();
    let src = Server::start(source);
    let mut con = src.client();
    let zadd = |con: &mut redis::Connection, key: &str, pad: usize| {
        let mut c = redis::cmd("ZADD");
        c.arg(key);
        for (i, s) in SCORES.iter().enumerate() {
            c.arg(*s).arg(format!("m{i}"));
        }
        for i in 0..pad {
            c.arg(format!("{}", i as f64 * 0.001 + 1.0 / 3.0))
                .arg(format!("padding-member-{i:04}"));
        }
        let _: i64 = q(con, &c);
    };
    // Listpacks (RDB type 17: not loadable by 6.2), small and over 1024 bytes.
    zadd(&mut con, "z:lp", 0);
    zadd(&mut con, "z:lp:big", 100);
    // Skiplists (ZSET_2, binary doubles).
    config_set(&mut con, "zset-max-listpack-entries", 0);
    zadd(&mut con, "z:sl", 0);
    zadd(&mut con, "z:sl:big", 100);
    let truth = snapshot(&mut con);
    for (k, st) in &truth.keys {
        let Val::ZSet(z) = &st.val else {
            panic!("zset")
        };
        for (i, s) in SCORES.iter().enumerate() {
            let want = s.parse::<f64>().unwrap().to_bits();
            let got = z[format!("m{i}").as_bytes()];
            // A listpack keeps the score as text, and 7.0 writes -0.0 there as "0".
            let lp_zero = k.1.starts_with(b"z:lp") && *s == "-0.0" && got == 0;
            assert!(
                got == want || lp_zero,
                "source {}: m{i} is {:?}, expected {s}",
                show_key(k),
                f64::from_bits(got)
            );
        }
    }
    let rdb = save_copy(&src, tmp.path(), "scores.rdb");

    let mut problems = Vec::new();
    for target in [source, old] {
        // Skiplists stay skiplists on the target too: a server converts a small zset it loads
        // into its compact encoding, where 7.0 writes -0.0 as "0" (the server's doing, not ours).
        let dst = start_target_with(target, &[("zset-max-ziplist-entries", "0")]);
        // db 0: fast (7.0) / portable (6.2); db 1: big keys as ZADD batches, from a loadable
        // encoding (skiplist) and, into 6.2, from one that is not (listpack).
        let out = restore_ok(&format!("scores into {target}"), &dst.url(), &[], &[&rdb]);
        let want_transcoded = if target == old { 2 } else { 0 };
        if out.stat("transcoded") != want_transcoded || out.stat("big keys as commands") != 0 {
            problems.push(format!("[{target}] paths: {}", out.summary()));
        }
        let out = restore_ok(
            &format!("scores into {target}, big keys"),
            &dst.url(),
            &["--db-map", "0=1", "--big-key-bytes", "1024"],
            &[&rdb],
        );
        if out.stat("big keys as commands") != 2 || out.stat("transcoded") != want_transcoded / 2 {
            problems.push(format!("[{target}] big-key paths: {}", out.summary()));
        }
        let got = snapshot(&mut dst.client());
        for db in [0, 1] {
            let view = db_view(&got, db);
            problems.extend(compare(
                source.name(),
                &truth,
                &format!("{target} db {db}"),
                &view,
                Profile::exact(&truth, &view),
            ));
        }
    }
    assert_no_diffs("scores", &problems);
}

// ---------------------------------------------------------------------------------------------
// 5. Peak RSS with big keys

const RSS_LIMIT_KB: u64 = 64 * 1024;

/// Runs shake-restore and returns (its output, its peak RSS in KiB): from `/usr/bin/time -f %M`
/// when installed, else by polling VmHWM in /proc.
fn restore_rss(url: &str, args: &[&str], file: &Path) -> (Out, u64) {
    let time = Path::new("/usr/bin/time");
    if time.is_file() {
        let dir = tempdir();
        let rss_file = dir.path().join("rss");
        let mut c = Command::new(time);
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file);
        c.arg(bin("shake-restore"))
            .arg("--target")
            .arg(url)
            .arg("--quiet")
            .args(args)
            .arg(file);
        let out = run_limited(c, None, Duration::from_secs(300));
        let kb = std::fs::read_to_string(&rss_file)
            .ok()
            .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no RSS from /usr/bin/time: {}", out.stderr));
        return (out, kb);
    }
    let mut c = restore_cmd(url, args, &[file]);
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let started = Instant::now();
    let mut child = c.spawn().expect("spawn shake-restore");
    let (_so, se) = collect_output(&mut child);
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    let code = loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "shake-restore did not finish");
        sleep(Duration::from_millis(5));
    };
    let out = Out {
        code,
        stderr: String::from_utf8_lossy(&se.join().unwrap()).into_owned(),
        secs: started.elapsed().as_secs_f64(),
    };
    (out, peak)
}

#[test]
fn restore_big_keys_peak_rss() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempdir();
    let src = Server::start(flavor);
    let mut con = src.client();
    // Lua fills faster than three million round trips; values are not LZF-friendly runs.
    let _: () = q(
        &mut con,
        redis::cmd("EVAL")
            .arg(
                "for i = 1, 2000000, 1000 do local t = {} \
                 for j = i, i + 999 do t[#t + 1] = 'element:' .. (j * 7919 % 1000003) end \
                 redis.call('RPUSH', KEYS[1], unpack(t)) end \
                 for i = 1, 1000000, 500 do local t = {} \
                 for j = i, i + 499 do t[#t + 1] = 'field:' .. j; t[#t + 1] = 'value:' .. (j * 104729 % 1000033) end \
                 redis.call('HSET', KEYS[2], unpack(t)) end",
            )
            .arg(2)
            .arg("big:list")
            .arg("big:hash"),
    );
    let rdb = save_copy(&src, tmp.path(), "big.rdb");
    eprintln!(
        "RDB of a 2M-element list and a 1M-field hash: {} MiB",
        std::fs::metadata(&rdb).unwrap().len() >> 20
    );
    let check = |dst: &Server| {
        let mut c = dst.client();
        let llen: i64 = q(&mut c, redis::cmd("LLEN").arg("big:list"));
        let hlen: i64 = q(&mut c, redis::cmd("HLEN").arg("big:hash"));
        assert_eq!((llen, hlen), (2_000_000, 1_000_000));
        for (cmd, key, arg) in [
            ("LINDEX", "big:list", "1234567"),
            ("HGET", "big:hash", "field:777777"),
        ] {
            let a: Vec<u8> = q(&mut src.client(), redis::cmd(cmd).arg(key).arg(arg));
            let b: Vec<u8> = q(&mut c, redis::cmd(cmd).arg(key).arg(arg));
            assert_eq!(a, b, "{cmd} {key} {arg}");
        }
    };
    let mut figures = Vec::new();
    let extra: Vec<String> = std::env::var("SHAKE_RSS_BIG_KEY_BYTES")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut runs: Vec<Vec<&str>> = vec![vec![], vec!["--big-key-bytes", "8388608"]];
    // More thresholds to measure (SHAKE_RSS_BIG_KEY_BYTES=33554432,16777216): figures only.
    runs.extend(extra.iter().map(|b| vec!["--big-key-bytes", b.as_str()]));
    for args in runs {
        let dst = start_target(flavor);
        let (out, kb) = restore_rss(&dst.url(), &args, &rdb);
        assert!(out.ok(), "shake-restore {args:?}: {}", out.stderr);
        check(&dst);
        eprintln!(
            "shake-restore {args:?}: peak RSS {} KiB ({:.1} MiB) in {:.1}s: {}",
            kb,
            kb as f64 / 1024.0,
            out.secs,
            out.summary()
        );
        figures.push((args, kb));
    }
    for (args, kb) in figures.iter().take(2) {
        assert!(
            *kb < RSS_LIMIT_KB,
            "peak RSS {kb} KiB with {args:?} is over {RSS_LIMIT_KB} KiB (all runs: {figures:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The corpus into Redis 7.0

/// Why a corpus file is not restored into a Redis 7.0, or None when it is.
fn corpus_skip(entry: &Json) -> Option<String> {
    // An AOF's commands are not in the decoded snapshot this test compares with.
    if entry
        .get("file")
        .and_then(Json::as_str)
        .is_some_and(|f| f.starts_with("aof/"))
    {
        return Some(
            "an AOF: aof.rs's aof_restore_corpus_files compares it with a server's own load".into(),
        );
    }
    if entry.get("invalid") == Some(&Json::Bool(true)) {
        return Some("invalid input (must fail, not restore)".into());
    }
    let Some(scan) = entry.get("scan").filter(|s| **s != Json::Null) else {
        return Some("not an RDB".into());
    };
    let magic = entry.get("magic").and_then(Json::as_str).unwrap_or("");
    let version = entry.get("rdb_version").and_then(Json::as_i64).unwrap_or(0);
    if magic.is_empty() {
        return Some("not an RDB".into());
    }
    if scan
        .get("redis_check_rdb_7_0_15")
        .and_then(Json::as_str)
        .is_some_and(|r| r.starts_with("error"))
    {
        return Some("redis-check-rdb 7.0.15 rejects it: a Redis 7.0 cannot hold it".into());
    }
    if (magic == "REDIS" && version > 12) || (magic == "VALKEY" && version > 81) {
        return Some(format!(
            "{magic} RDB version {version}: newer than any server we run"
        ));
    }
    let types: Vec<String> = scan
        .get("rdb_types")
        .and_then(Json::as_arr)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    if types.iter().any(|t| t.contains("MODULE")) {
        return Some("module values: Redis 7.0 has no such module".into());
    }
    if types
        .iter()
        .any(|t| t.contains("PRE_GA") && magic == "REDIS")
    {
        return Some("Redis 7.4 release-candidate hash field TTL encodings (pre-GA)".into());
    }
    let opcodes: Vec<String> = scan
        .get("opcodes")
        .and_then(Json::as_arr)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    if opcodes.iter().any(|o| o == "FUNCTION_PRE_GA") {
        return Some("functions in the 7.0 release-candidate format".into());
    }
    None
}

/// What a file's content looks like after a restore into Redis 7.0 at `now`: keys whose TTL
/// passed are gone, hash fields whose TTL passed are gone and the others lose their TTL
/// (`--field-ttls drop`), and stream details the file does not record are not compared.
fn corpus_expected(decoded: &Snapshot, now: i64) -> Snapshot {
    let mut want = decoded.clone();
    want.keys
        .retain(|_, st| st.expire_at_ms.is_none_or(|t| t > now));
    for st in want.keys.values_mut() {
        if let Val::Hash(h) = &mut st.val {
            for (f, t) in &st.field_expire_at_ms {
                if *t <= now {
                    h.remove(f);
                }
            }
        }
        st.field_expire_at_ms.clear();
    }
    want
}

/// Forgets in `got` the stream details `want` does not record: a newer target derives first
/// id, max-deleted id, entries-added, entries-read and consumer active times that an older
/// source never stored (or its XINFO never showed).
fn forget_unrecorded(want: &Snapshot, got: &mut Snapshot) {
    for (k, st) in got.keys.iter_mut() {
        let (Val::Stream(g), Some(Val::Stream(w))) =
            (&mut st.val, want.keys.get(k).map(|s| &s.val))
        else {
            continue;
        };
        if w.first_id.is_none() {
            g.first_id = None;
        }
        if w.max_deleted_id.is_none() {
            g.max_deleted_id = None;
        }
        if w.entries_added.is_none() {
            g.entries_added = None;
        }
        for (name, gg) in g.groups.iter_mut() {
            let Some(wg) = w.groups.get(name) else {
                continue;
            };
            if wg.entries_read == EntriesRead::NotStored {
                gg.entries_read = EntriesRead::NotStored;
            }
            for (c, gc) in gg.consumers.iter_mut() {
                if wg
                    .consumers
                    .get(c)
                    .is_some_and(|x| x.active_time_ms.is_none())
                {
                    gc.active_time_ms = None;
                }
            }
        }
    }
}

/// [`forget_unrecorded`], and the consumer active times a file records but RDB 10 cannot keep.
fn corpus_project(want: &mut Snapshot, got: &mut Snapshot) {
    forget_unrecorded(want, got);
    for (k, st) in want.keys.iter_mut() {
        let (Val::Stream(w), Some(Val::Stream(g))) = (&mut st.val, got.keys.get(k).map(|s| &s.val))
        else {
            continue;
        };
        for (name, wg) in w.groups.iter_mut() {
            let Some(gg) = g.groups.get(name) else {
                continue;
            };
            for (c, wc) in wg.consumers.iter_mut() {
                if gg
                    .consumers
                    .get(c)
                    .is_some_and(|x| x.active_time_ms.is_none())
                {
                    wc.active_time_ms = None;
                }
            }
        }
    }
}

#[test]
fn restore_corpus_into_redis_7_0() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let Some(corpus) = shake_tests::require_corpus() else {
        return;
    };
    let text = std::fs::read_to_string(corpus.join("MANIFEST.json")).expect("MANIFEST.json");
    let manifest = parse_json(&text).expect("MANIFEST.json is JSON");
    // Zsets stay skiplists: a server converts a small zset it loads into a listpack, where 7.0
    // writes -0.0 as "0" (the server's doing; files hold -0.0 in ZSET_2 values).
    let dst = start_target_with(flavor, &[("zset-max-ziplist-entries", "0")]);
    let mut con = dst.client();
    let mut problems = Vec::new();
    let (mut restored, mut skipped) = (0, 0);
    let started = Instant::now();
    for entry in manifest.as_arr().expect("an array") {
        let name = entry
            .get("file")
            .and_then(Json::as_str)
            .expect("file")
            .to_string();
        if let Some(why) = corpus_skip(entry) {
            eprintln!("SKIP {name}: {why}");
            skipped += 1;
            continue;
        }
        let file = corpus.join(&name);
        let _: () = q(&mut con, &redis::cmd("FLUSHALL"));
        let _: () = q(&mut con, redis::cmd("FUNCTION").arg("FLUSH"));
        let decoded = snapshot_from_jsonl(&decode_file(&file));
        let now = now_ms();
        let out = restore(&dst.url(), &["--field-ttls", "drop"], &[&file]);
        // A key twice in one database: Redis refuses to load such a file ("Duplicated key found
        // in RDB file"); under --on-conflict panic the restore stops naming it.
        let dups: Vec<&String> = decoded
            .errors
            .iter()
            .filter(|e| e.ends_with("printed twice"))
            .collect();
        if !dups.is_empty() {
            eprintln!("{name}: duplicate keys {dups:?}");
            if out.code != Some(1) || !out.stderr.contains("already exists") {
                problems.push(format!(
                    "{name}: a key twice in one database, expected a conflict error: {:?} {}",
                    out.code, out.stderr
                ));
            }
            skipped += 1;
            continue;
        }
        if !out.ok() {
            problems.push(format!(
                "{name}: shake-restore exited {:?}: {}",
                out.code,
                out.stderr.trim_end()
            ));
            continue;
        }
        restored += 1;
        let mut want = corpus_expected(&decoded, now);
        let saved = dst.save();
        let mut got = snapshot_from_jsonl(&decode_file(&saved));
        // A TTL that passes between the restore and the SAVE: the server may still hold the key.
        got.keys.retain(|k, st| {
            want.keys.contains_key(k) || st.expire_at_ms.is_none_or(|t| t > now_ms())
        });
        corpus_project(&mut want, &mut got);
        problems.extend(
            compare(
                "file",
                &want,
                "redis-7.0",
                &got,
                Profile::exact(&want, &got),
            )
            .into_iter()
            .map(|d| format!("{name}: {d}")),
        );
        let expired = (decoded.keys.len() - want.keys.len()) as u64;
        if out.stat("expired skipped") != expired {
            problems.push(format!(
                "{name}: expected {expired} expired keys skipped: {}",
                out.summary()
            ));
        }
    }
    eprintln!(
        "{restored} corpus files restored and compared, {skipped} skipped, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(restored > 50, "only {restored} corpus files restored");
    assert_no_diffs("corpus into redis-7.0", &problems);
}

// ---------------------------------------------------------------------------------------------
// 7. The target goes away

/// Starts `shake-restore ARGS RDB` into `dst` and returns once the target holds `keys` keys
/// (the restore still running), with its stderr being collected.
fn restore_until_written(dst: &Server, args: &[&str], rdb: &Path, keys: i64) -> (Child, Reader) {
    let mut c = restore_cmd(&dst.url(), args, &[rdb]);
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = c.spawn().expect("spawn shake-restore");
    let (_so, se) = collect_output(&mut child);
    let mut watch = dst.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dbsize(&mut watch) < keys {
        assert!(
            Instant::now() < deadline,
            "the restore did not start writing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "shake-restore ended early"
        );
        sleep(Duration::from_millis(20));
    }
    (child, se)
}

#[test]
fn restore_target_killed_midway() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempdir();
    let src = Server::start(flavor);
    let mut con = src.client();
    let _: () = q(
        &mut con,
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(400_000)
            .arg("key")
            .arg(64),
    );
    let rdb = save_copy(&src, tmp.path(), "big.rdb");
    // panic: RESTORE is not idempotent, nothing is resent; rewrite: RESTORE ... REPLACE may be
    // resent, so the client reconnects a bounded number of times (about 18 s against a closed
    // port); frozen: the target stops answering (SIGSTOP), the reply timeout must fire. (Frozen
    // under rewrite gives up only after every reconnect waited out its timeout: about 50 s with
    // --timeout 3, too slow for this suite.)
    for (case, policy) in [
        ("killed", "panic"),
        ("killed", "rewrite"),
        ("frozen", "panic"),
    ] {
        let mut dst = start_target(flavor);
        let endpoint = format!("127.0.0.1:{}", dst.port());
        // Slowed so that it is surely mid-way when the target goes away.
        let (mut child, se) = restore_until_written(
            &dst,
            &["--qps", "40000", "--timeout", "3", "--on-conflict", policy],
            &rdb,
            20_000,
        );
        if case == "killed" {
            dst.kill();
        } else {
            let pid = dst.pid().expect("running").to_string();
            let st = Command::new("kill")
                .arg("-STOP")
                .arg(&pid)
                .status()
                .unwrap();
            assert!(st.success(), "kill -STOP {pid}");
        }
        let gone = Instant::now();
        let code = wait_limited(
            &mut child,
            Duration::from_secs(90),
            &format!("shake-restore after the target was {case} ({policy})"),
        );
        let took = gone.elapsed();
        let stderr = String::from_utf8_lossy(&se.join().unwrap()).into_owned();
        eprintln!(
            "[{case}, {policy}] exit {code:?} {:.1}s after: {}",
            took.as_secs_f64(),
            stderr.trim_end()
        );
        assert_eq!(code, Some(1), "[{case}, {policy}] exit status: {stderr}");
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "[{case}, {policy}] one line on stderr: {stderr}"
        );
        assert!(
            lines[0].contains(&endpoint),
            "[{case}, {policy}] the error names {endpoint}: {}",
            lines[0]
        );
        assert!(
            took < Duration::from_secs(45),
            "[{case}, {policy}] shake-restore took {took:?} to give up"
        );
        // Dropping the server SIGKILLs it, stopped or not.
    }
}

/// SIGINT and SIGTERM mid-restore (slowed with --qps): exit 130 / 143 with the summary of what
/// was written, which is exactly what the target holds (no key started after the signal, every
/// key handed over written, a big key in parts finished: no `shake-building:` key left); a
/// rerun with `--on-conflict ignore` completes it. A conflict under `panic` says how many keys
/// were written before it.
#[test]
fn restore_stopped_by_signal() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempdir();
    let src = Server::start(flavor);
    let mut con = src.client();
    let total: i64 = 200_000;
    let _: () = q(
        &mut con,
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(total)
            .arg("key")
            .arg(64),
    );
    let rdb = save_copy(&src, tmp.path(), "big.rdb");
    // Values over --big-key-bytes (1024): every key through the big-key path, written under a
    // temporary name and renamed into place.
    let big_src = Server::start(flavor);
    let mut big_con = big_src.client();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for batch in 0..(total / 4 / 1000) {
        let mut p = redis::pipe();
        for i in 0..1000 {
            // LZF cannot bring them under the threshold.
            let value = shake_tests::incompressible(2048, &mut x);
            p.cmd("SET")
                .arg(format!("key:{}", batch * 1000 + i))
                .arg(value)
                .ignore();
        }
        let _: () = p.query(&mut big_con).expect("SET batch");
    }
    let big_rdb = save_copy(&big_src, tmp.path(), "big-values.rdb");
    for (signal, code, extra, rdb, total) in [
        ("INT", 130, &[][..], &rdb, total),
        (
            "TERM",
            143,
            &["--big-key-bytes", "1024"][..],
            &big_rdb,
            total / 4,
        ),
    ] {
        let dst = start_target(flavor);
        let mut args = vec!["--qps", "40000"];
        args.extend_from_slice(extra);
        let (mut child, se) = restore_until_written(&dst, &args, rdb, 10_000);
        let mut watch = dst.client();
        let st = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{signal}");
        let exit = wait_limited(
            &mut child,
            Duration::from_secs(60),
            "shake-restore after a signal",
        );
        let stderr = String::from_utf8_lossy(&se.join().unwrap()).into_owned();
        eprintln!("[SIG{signal}] exit {exit:?}: {}", stderr.trim_end());
        assert_eq!(exit, Some(code), "SIG{signal}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("stopped by SIG{signal}")))
            .unwrap_or_else(|| panic!("no 'stopped by SIG{signal}' line: {stderr}"));
        let written: i64 = line
            .split(" keys written")
            .next()
            .and_then(|h| h.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no key count in {line}"));
        let held = dbsize(&mut watch);
        assert_eq!(
            written, held,
            "the summary counts what the target holds: {line}"
        );
        assert!(held < total, "stopped before the end: {held} of {total}");
        let building: Vec<String> = q(&mut watch, redis::cmd("KEYS").arg("shake-building:*"));
        assert!(building.is_empty(), "half-built keys left: {building:?}");
        restore_ok(
            "rerun after a signal",
            &dst.url(),
            &["--on-conflict", "ignore"],
            &[rdb],
        );
        assert_eq!(dbsize(&mut watch), total, "the rerun completes it");
    }

    // A conflict under panic: the line says how many keys were written before it.
    let dst = start_target(flavor);
    let mut watch = dst.client();
    let _: () = q(&mut watch, redis::cmd("SET").arg("key:150000").arg("there"));
    let out = restore(&dst.url(), &[], &[&rdb]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    let held = dbsize(&mut watch);
    if held > 1 {
        let before: i64 = out
            .stderr
            .split(" keys had been written before it")
            .next()
            .and_then(|h| h.rsplit('(').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no count of keys written before the conflict: {}",
                    out.stderr
                )
            });
        assert!(
            before >= 1 && before < held,
            "{before} written before, {held} held: {}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Expired keys, LRU/LFU

#[test]
fn restore_expired_keys_and_keep_lru() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempdir();

    // Keys that expire between the SAVE and the restore.
    let src = Server::start(flavor);
    let mut con = src.client();
    let at = now_ms() + 1500;
    for i in 0..10 {
        let _: () = q(&mut con, redis::cmd("SET").arg(format!("live:{i}")).arg(i));
    }
    let _: () = q(
        &mut con,
        redis::cmd("SET")
            .arg("live:ttl")
            .arg("x")
            .arg("PX")
            .arg(3_600_000),
    );
    for i in 0..5 {
        let _: () = q(&mut con, redis::cmd("SET").arg(format!("dying:{i}")).arg(i));
        let _: i64 = q(
            &mut con,
            redis::cmd("PEXPIREAT").arg(format!("dying:{i}")).arg(at),
        );
    }
    let _: i64 = q(
        &mut con,
        redis::cmd("RPUSH").arg("dying:list").arg(&["a", "b"]),
    );
    let _: i64 = q(&mut con, redis::cmd("PEXPIREAT").arg("dying:list").arg(at));
    let rdb = save_copy(&src, tmp.path(), "expiring.rdb");
    let live = db_view(&snapshot(&mut con), 0);
    let live = Snapshot {
        keys: live
            .keys
            .into_iter()
            .filter(|(k, _)| k.1.starts_with(b"live:"))
            .collect(),
        ..live
    };
    while now_ms() <= at + 50 {
        sleep(Duration::from_millis(50));
    }
    let dst = start_target(flavor);
    let out = restore_ok("expired", &dst.url(), &[], &[&rdb]);
    assert_eq!(out.stat("expired skipped"), 6, "{}", out.summary());
    assert_eq!(out.stat("keys written"), 11, "{}", out.summary());
    let got = snapshot(&mut dst.client());
    assert_no_diffs(
        "expired keys",
        &compare("source", &live, "target", &got, Profile::exact(&live, &got)),
    );

    // LRU: an idle time set on the source with RESTORE ... IDLETIME travels in the RDB.
    let lru = Server::start_with(flavor, &[("maxmemory-policy", "allkeys-lru")]);
    let mut c = lru.client();
    let _: () = q(&mut c, redis::cmd("SET").arg("tmp").arg("v"));
    let payload: Vec<u8> = q(&mut c, redis::cmd("DUMP").arg("tmp"));
    let _: () = q(
        &mut c,
        redis::cmd("RESTORE")
            .arg("idle")
            .arg(0)
            .arg(&payload)
            .arg("IDLETIME")
            .arg(5000),
    );
    let rdb = save_copy(&lru, tmp.path(), "lru.rdb");
    for (keep, want_idle) in [(true, true), (false, false)] {
        let dst = start_target_with(flavor, &[("maxmemory-policy", "allkeys-lru")]);
        let args: &[&str] = if keep { &["--keep-lru"] } else { &[] };
        restore_ok("lru", &dst.url(), args, &[&rdb]);
        let idle: i64 = q(
            &mut dst.client(),
            redis::cmd("OBJECT").arg("IDLETIME").arg("idle"),
        );
        assert_eq!(
            (4990..=5100).contains(&idle),
            want_idle,
            "OBJECT IDLETIME after a restore with {args:?}: {idle}"
        );
    }

    // LFU: a frequency set with RESTORE ... FREQ.
    let lfu = Server::start_with(flavor, &[("maxmemory-policy", "allkeys-lfu")]);
    let mut c = lfu.client();
    let _: () = q(
        &mut c,
        redis::cmd("RESTORE")
            .arg("hot")
            .arg(0)
            .arg(&payload)
            .arg("FREQ")
            .arg(200),
    );
    let rdb = save_copy(&lfu, tmp.path(), "lfu.rdb");
    for (keep, want) in [(true, true), (false, false)] {
        let dst = start_target_with(flavor, &[("maxmemory-policy", "allkeys-lfu")]);
        let args: &[&str] = if keep { &["--keep-lru"] } else { &[] };
        restore_ok("lfu", &dst.url(), args, &[&rdb]);
        let freq: i64 = q(
            &mut dst.client(),
            redis::cmd("OBJECT").arg("FREQ").arg("hot"),
        );
        assert_eq!(
            freq == 200,
            want,
            "OBJECT FREQ after a restore with {args:?}: {freq}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. stdin, several files, a damaged file

#[test]
fn restore_stdin_and_several_files() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempdir();
    let a = Server::start(flavor);
    small_fill(&mut a.client(), flavor, "a:");
    let a_rdb = save_copy(&a, tmp.path(), "a.rdb");
    let a_snap = snapshot(&mut a.client());
    let b = Server::start(flavor);
    small_fill(&mut b.client(), flavor, "b:");
    let b_rdb = save_copy(&b, tmp.path(), "b.rdb");
    let mut both = a_snap.clone();
    both.keys.extend(snapshot(&mut b.client()).keys);
    let mut problems = Vec::new();

    // cat FILE | shake-restore --target URL -
    let dst = start_target(flavor);
    let script = format!(
        "cat '{}' | '{}' --target '{}' --quiet -",
        a_rdb.display(),
        bin("shake-restore").display(),
        dst.url()
    );
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&script);
    let out = run_limited(sh, None, Duration::from_secs(60));
    assert!(out.ok(), "{script}: {}", out.stderr);
    assert_eq!(
        out.stat("keys written"),
        a_snap.keys.len() as u64,
        "{}",
        out.summary()
    );
    let got = snapshot(&mut dst.client());
    problems.extend(compare(
        "a.rdb",
        &a_snap,
        "stdin",
        &got,
        Profile::exact(&a_snap, &got),
    ));

    // Two files in one run.
    let dst = start_target(flavor);
    let out = restore_ok("two files", &dst.url(), &[], &[&a_rdb, &b_rdb]);
    assert_eq!(
        out.stat("keys written"),
        both.keys.len() as u64,
        "{}",
        out.summary()
    );
    let got = snapshot(&mut dst.client());
    problems.extend(compare(
        "a.rdb+b.rdb",
        &both,
        "two files",
        &got,
        Profile::exact(&both, &got),
    ));

    // A file, then stdin.
    let dst = start_target(flavor);
    let out = run_limited(
        restore_cmd(&dst.url(), &[], &[&a_rdb, Path::new("-")]),
        Some(std::fs::read(&b_rdb).unwrap()),
        Duration::from_secs(60),
    );
    assert!(out.ok(), "file then stdin: {}", out.stderr);
    let got = snapshot(&mut dst.client());
    problems.extend(compare(
        "a.rdb+b.rdb",
        &both,
        "file then stdin",
        &got,
        Profile::exact(&both, &got),
    ));

    // A damaged second file: the pre-pass finds it before anything is written.
    let mut bytes = std::fs::read(&b_rdb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let bad = tmp.path().join("bad.rdb");
    std::fs::write(&bad, &bytes).unwrap();
    let dst = start_target(flavor);
    let out = restore(&dst.url(), &[], &[&a_rdb, &bad]);
    if out.code != Some(1) || !out.stderr.contains("bad.rdb") || total_keys(&dst) != 0 {
        problems.push(format!(
            "damaged file: expected exit 1 naming bad.rdb and an empty target, got {:?}, {} keys: {}",
            out.code,
            total_keys(&dst),
            out.stderr
        ));
    }
    // The same on stdin: exit 1 (keys before the damage may have been written).
    let dst = start_target(flavor);
    let out = run_limited(
        restore_cmd(&dst.url(), &[], &[Path::new("-")]),
        Some(bytes),
        Duration::from_secs(60),
    );
    if out.code != Some(1) || out.stderr.trim_end().lines().count() != 1 {
        problems.push(format!(
            "damaged stdin: expected exit 1 and one line, got {:?}: {}",
            out.code, out.stderr
        ));
    }
    assert_no_diffs("stdin and several files", &problems);
}

// ---------------------------------------------------------------------------------------------
// Issue 11 item 3: an interrupted big key never survives truncated.

/// A big list (as command batches, slowed by --qps) with a TTL: the restore is killed mid-key.
/// The key itself is never visible incomplete (it is built under a temporary name and renamed
/// into place), so a rerun with `--on-conflict ignore` writes it whole, with its TTL, and
/// removes the leftover.
#[test]
fn restore_interrupted_big_key_rerun_with_ignore() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempdir();
    let src = Server::start(flavor);
    let mut con = src.client();
    const N: usize = 60_000;
    for start in (0..N).step_by(10_000) {
        let mut c = redis::cmd("RPUSH");
        c.arg("big");
        for i in start..start + 10_000 {
            c.arg(i);
        }
        let _: () = q(&mut con, &c);
    }
    let _: () = q(&mut con, redis::cmd("PEXPIRE").arg("big").arg(3_600_000));
    let rdb = save_copy(&src, tmp.path(), "big.rdb");
    let dst = start_target(flavor);
    let args = ["--big-key-bytes", "1024", "--qps", "10"];
    let mut c = restore_cmd(&dst.url(), &args, &[&rdb]);
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut child = c.spawn().expect("spawn shake-restore");
    let mut watch = dst.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Mid-key: some elements are on the target.
    while dbsize(&mut watch) == 0 {
        assert!(
            Instant::now() < deadline,
            "the restore did not start writing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "shake-restore ended early"
        );
        sleep(Duration::from_millis(20));
    }
    sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let visible: i64 = q(&mut watch, redis::cmd("EXISTS").arg("big"));
    assert_eq!(visible, 0, "the key is visible while incomplete");

    restore_ok(
        "rerun",
        &dst.url(),
        &["--on-conflict", "ignore", "--big-key-bytes", "1024"],
        &[&rdb],
    );
    let len: usize = q(&mut watch, redis::cmd("LLEN").arg("big"));
    assert_eq!(len, N, "the rerun kept a truncated key");
    let ttl: i64 = q(&mut watch, redis::cmd("PTTL").arg("big"));
    assert!(ttl > 3_000_000, "TTL after the rerun: {ttl}");
    let keys: Vec<String> = q(&mut watch, redis::cmd("KEYS").arg("*"));
    assert_eq!(keys, vec!["big".to_string()], "leftovers of the killed run");
    let first: Vec<String> = q(&mut watch, redis::cmd("LRANGE").arg("big").arg(0).arg(2));
    assert_eq!(first, ["0", "1", "2"]);
}
