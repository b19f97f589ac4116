//! `shake-rump` against real servers. Every test runs the built binaries, so build them first:
//! `cargo build --workspace --bins`.
//!
//! - `rump_matrix_from_<flavor>`: a source of each flavor filled with every type in its compact
//!   and large encodings (strings incl. int-encoded, lists, intset/listpack/hashtable sets,
//!   zsets with scores that need every bit, hashes, streams with groups and PEL, TTLs, binary
//!   key names, hash field TTLs on Valkey 9.1) in two databases, copied into the same version
//!   and every older one (the portable path) and compared key by key by the redis crate; into
//!   the same version once more with `--big-key-bytes 1024` (big keys decoded from their DUMP
//!   payloads into commands).
//! - `rump_cluster_targets`: cluster -> cluster, standalone with two databases -> cluster
//!   (refused without `--db-map`, nothing written; with `--db-map '*=0'`).
//! - `rump_conflict_policies`: a second run over a filled target with panic (exit 1, the key
//!   named; a function library named), ignore (the target's values and library kept and
//!   counted), rewrite (replaced; twice, with and without big keys: no duplicated elements).
//! - `rump_to_file`: `-o FILE` from Redis 7.0 (REDIS0010) and Valkey 9.1 (VALKEY080), read back
//!   by shake-decode and by shake-restore, compared with the source; no FILE.part left behind.
//! - `rump_follow_converges`: `--follow` while another client sets, deletes, appends and lets
//!   keys expire, during the scan and after it; the target converges to the source, SIGINT ends
//!   with exit 0, and notify-keyspace-events is put back.
//! - `rump_counts_vanished_keys`: keys deleted while the copy runs are skipped and counted; keys
//!   nobody touched all arrive.

#[path = "live_common/mod.rs"]
mod live_common;
mod writer_common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use live_common::*;
use shake_tests::{require, Cluster, Flavor, Server};
use writer_common::{fill, project};

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
        panic!("the {name} binary is not built: run `cargo build --workspace --bins` first");
    }
    assert_cmd::cargo::cargo_bin(name)
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
    fn summary(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.contains("keys copied") || l.contains("keys written"))
            .unwrap_or_else(|| panic!("no summary line in stderr:\n{}", self.stderr))
    }
    /// The number just before `label` in the summary line (0 when the label is absent).
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

fn prepare(cmd: &mut Command) {
    for v in [
        "RUST_BACKTRACE",
        "SHAKE_SOURCE",
        "SHAKE_TARGET",
        "SHAKE_SOURCE_PASSWORD",
        "SHAKE_TARGET_PASSWORD",
    ] {
        cmd.env_remove(v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
}

fn collect(
    child: &mut Child,
) -> (
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<Vec<u8>>,
) {
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

fn run(name: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(bin(name));
    cmd.args(args);
    prepare(&mut cmd);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let (o, e) = collect(&mut child);
    let code = wait_limited(
        &mut child,
        Duration::from_secs(120),
        &format!("{name} {args:?}"),
    );
    let out = Out {
        code,
        stdout: o.join().unwrap(),
        stderr: String::from_utf8_lossy(&e.join().unwrap()).into_owned(),
    };
    eprintln!(
        "  {name} {args:?} -> {:?} in {:.2}s: {}",
        out.code,
        started.elapsed().as_secs_f64(),
        out.stderr.trim_end()
    );
    out
}

/// `shake-rump --source SRC --target DST ARGS`.
fn rump(src: &str, dst: &str, args: &[&str]) -> Out {
    let mut all = vec!["--source", src, "--target", dst, "--quiet"];
    all.extend_from_slice(args);
    run("shake-rump", &all)
}

fn rump_ok(ctx: &str, src: &str, dst: &str, args: &[&str]) -> Out {
    let out = rump(src, dst, args);
    assert!(
        out.ok(),
        "[{ctx}] shake-rump {args:?} exited {:?}:\n{}",
        out.code,
        out.stderr
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Servers and data

/// A target with deep payload validation where the server has it.
fn start_target(f: Flavor) -> Server {
    let s = Server::start(f);
    let _: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("sanitize-dump-payload")
        .arg("yes")
        .query(&mut s.client());
    s
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shake-rump-test-")
        .disable_cleanup(std::env::var_os("SHAKE_KEEP_TMP").is_some())
        .tempdir()
        .expect("temporary directory")
}

/// A few keys of each type in database `db`, binary names included.
fn small_db(con: &mut redis::Connection, db: i64, prefix: &str) {
    let _: () = q(con, redis::cmd("SELECT").arg(db));
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("SET")
            .arg(format!("{prefix}s:{i}"))
            .arg(i * 1000)
            .ignore();
    }
    pipe.cmd("SET")
        .arg([prefix.as_bytes(), b"\x00\xff\r\n bin"].concat())
        .arg(&b"\x01\x02"[..])
        .ignore();
    pipe.cmd("RPUSH")
        .arg(format!("{prefix}list"))
        .arg(&["x", "y", "z"])
        .ignore();
    pipe.cmd("HSET")
        .arg(format!("{prefix}hash"))
        .arg(&["f", "v", "g", "w"])
        .ignore();
    pipe.cmd("SADD")
        .arg(format!("{prefix}set"))
        .arg(&["1", "2", "300000"])
        .ignore();
    pipe.cmd("ZADD")
        .arg(format!("{prefix}zset"))
        .arg(&["0.1", "a", "-inf", "b"])
        .ignore();
    pipe.cmd("XADD")
        .arg(format!("{prefix}stream"))
        .arg("5-1")
        .arg("k")
        .arg("v")
        .ignore();
    pipe.cmd("SET")
        .arg(format!("{prefix}ttl"))
        .arg("t")
        .arg("PX")
        .arg(3_600_000)
        .ignore();
    let _: () = pipe.query(con).expect("small fill");
    let _: () = q(con, redis::cmd("SELECT").arg(0));
}

/// TTLs through PTTL are exact to a few milliseconds; the rest is exact.
fn rump_profile() -> Profile {
    Profile {
        consumer_times: true,
        ttl_tolerance_ms: 1500,
        entries_read: true,
    }
}

fn rebuilt_profile() -> Profile {
    Profile {
        consumer_times: false,
        ttl_tolerance_ms: 1500,
        entries_read: true,
    }
}

/// Stream fields the expected side does not record are not compared (as in the restore tests).
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

fn field_ttl_count(s: &Snapshot) -> u64 {
    s.keys
        .values()
        .map(|k| k.field_expire_at_ms.len() as u64)
        .sum()
}

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

fn total_keys(server: &Server) -> i64 {
    server
        .info("keyspace")
        .iter()
        .filter(|(k, _)| k.starts_with("db"))
        .map(|(_, v)| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// 1. Every version into the same and every older version

#[test]
fn rump_matrix_from_redis_6_2() {
    matrix(Flavor::Redis62);
}

#[test]
fn rump_matrix_from_redis_7_0() {
    matrix(Flavor::Redis70);
}

#[test]
fn rump_matrix_from_valkey_8_1() {
    matrix(Flavor::Valkey81);
}

#[test]
fn rump_matrix_from_valkey_9_1() {
    matrix(Flavor::Valkey91);
}

/// Redis 8.2 (RDB 12, hash field TTLs) at its telling pairs, as in the restore matrix: down to
/// 7.0 (field TTLs dropped on request), across to Valkey 9.1 (field TTLs kept, re-encoded as
/// Valkey's HASH_2), into itself.
#[test]
fn rump_matrix_from_redis_8_2() {
    matrix_to(
        Flavor::Redis82,
        &[Flavor::Redis70, Flavor::Valkey91, Flavor::Redis82],
    );
}

/// Valkey 9.1 into Redis 8.2: HASH_2 field TTLs re-encoded as Redis's HASH_METADATA.
#[test]
fn rump_valkey_9_1_into_redis_8_2() {
    matrix_to(Flavor::Valkey91, &[Flavor::Redis82]);
}

/// Redis 7.0 up to Redis 8.2 (8.2 <-> 7.0 both ways, with the pair above).
#[test]
fn rump_redis_7_0_into_redis_8_2() {
    matrix_to(Flavor::Redis70, &[Flavor::Redis82]);
}

/// `source` into itself and every older flavor of the matrix.
fn matrix(source: Flavor) {
    let targets: Vec<Flavor> = Flavor::matrix()
        .into_iter()
        .filter(|&t| t <= source)
        .collect();
    matrix_to(source, &targets);
}

fn matrix_to(source: Flavor, targets: &[Flavor]) {
    if !require(source) {
        return;
    }
    let started = Instant::now();
    let src = Server::start(source);
    let mut con = src.client();
    fill(&mut con, source, now_ms());
    small_db(&mut con, 2, "two:");
    let truth = snapshot(&mut con);
    let n = truth.keys.len() as u64;
    let field_ttls = field_ttl_count(&truth);
    let mut problems = Vec::new();
    for &target in targets {
        if !require(target) {
            continue;
        }
        let ctx = format!("{source} -> {target}");
        eprintln!("[{ctx}]");
        let dst = start_target(target);
        let mut args: Vec<&str> = Vec::new();
        if field_ttls > 0 && !target.has_field_ttls() {
            args.extend(["--field-ttls", "drop"]);
        }
        let out = rump_ok(&ctx, &src.url(), &dst.url(), &args);
        if out.stat("keys copied") != n || out.stat("keys scanned") != n {
            problems.push(format!(
                "[{ctx}] expected {n} keys copied and scanned: {}",
                out.summary()
            ));
        }
        if out.stat("vanished skipped") != 0 || out.stat("big keys as commands") != 0 {
            problems.push(format!(
                "[{ctx}] nothing may vanish or go as commands: {}",
                out.summary()
            ));
        }
        let transcoded = out.stat("transcoded");
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
        let expected = project(&truth, target);
        let mut got = snapshot(&mut dst.client());
        forget_unrecorded(&expected, &mut got);
        problems.extend(compare(
            source.name(),
            &expected,
            &target.to_string(),
            &got,
            rump_profile(),
        ));

        if target == source {
            // Big keys: every collection over 1 KiB decoded from its payload into commands.
            let dst = start_target(target);
            let out = rump_ok(&ctx, &src.url(), &dst.url(), &["--big-key-bytes", "1024"]);
            if out.stat("keys copied") != n || out.stat("big keys as commands") < 5 {
                problems.push(format!("[{ctx}] big-key run: {}", out.summary()));
            }
            let mut got = snapshot(&mut dst.client());
            forget_unrecorded(&expected, &mut got);
            problems.extend(compare(
                source.name(),
                &expected,
                &format!("{target} (big keys)"),
                &got,
                rebuilt_profile(),
            ));
        }
    }
    eprintln!(
        "[{source}] {n} keys into {targets:?} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_no_diffs(&format!("rump from {source} into {targets:?}"), &problems);
}

// ---------------------------------------------------------------------------------------------
// 2. Clusters

#[test]
fn rump_cluster_targets() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Cluster::start_with(flavor, &[("databases", "1")]);
    let dst = Cluster::start_with(flavor, &[("databases", "1")]);
    {
        let mut c = src.connection();
        for i in 0..3000 {
            let _: () = redis::cmd("SET")
                .arg(format!("c:{i}"))
                .arg(format!("v{i}"))
                .query(&mut c)
                .unwrap();
        }
        let items: Vec<String> = (0..3000).map(|i| format!("item-{i}")).collect();
        let _: () = redis::cmd("RPUSH")
            .arg("{tag}list")
            .arg(&items)
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg("{tag}hash")
            .arg(&["a", "1", "b", "2"])
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("ZADD")
            .arg("zs")
            .arg(&["0.30000000000000004", "m", "1e-9", "n"])
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("ttl")
            .arg("x")
            .arg("PX")
            .arg(3_600_000)
            .query(&mut c)
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg("st")
            .arg("1-1")
            .arg("f")
            .arg("v")
            .query(&mut c)
            .unwrap();
    }
    let truth = cluster_snapshot(&src);
    let out = rump_ok("cluster -> cluster", &src.url(), &dst.url(), &[]);
    assert_eq!(
        out.stat("keys copied"),
        truth.keys.len() as u64,
        "{}",
        out.summary()
    );
    let got = cluster_snapshot(&dst);
    assert_no_diffs(
        "cluster -> cluster",
        &compare(
            "source cluster",
            &truth,
            "target cluster",
            &got,
            rump_profile(),
        ),
    );

    // Standalone with two databases into the same cluster.
    let sa = Server::start(flavor);
    let mut con = sa.client();
    small_db(&mut con, 0, "sa0:");
    small_db(&mut con, 1, "sa1:");
    let sa_truth = snapshot(&mut con);
    let before: i64 = dst.masters().iter().map(total_keys).sum();
    let out = rump(&sa.url(), &dst.url(), &[]);
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
    let after: i64 = dst.masters().iter().map(total_keys).sum();
    assert_eq!(before, after, "nothing may be written before the refusal");
    let out = rump_ok(
        "standalone -> cluster",
        &sa.url(),
        &dst.url(),
        &["--db-map", "*=0"],
    );
    assert_eq!(
        out.stat("keys copied"),
        sa_truth.keys.len() as u64,
        "{}",
        out.summary()
    );
    let got = cluster_snapshot(&dst);
    let mut want = truth.clone();
    for ((_, k), v) in &sa_truth.keys {
        want.keys.insert((0, k.clone()), v.clone());
    }
    assert_no_diffs(
        "standalone (2 databases) -> cluster",
        &compare("sources", &want, "target cluster", &got, rump_profile()),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Conflict policies

#[test]
fn rump_conflict_policies() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let mut con = src.client();
    small_db(&mut con, 0, "");
    let big: Vec<String> = (0..5000).map(|i| format!("element-{i}")).collect();
    let _: () = q(&mut con, redis::cmd("RPUSH").arg("biglist").arg(&big));
    let lib = "#!lua name=srclib\nredis.register_function('srcfn', function() return 1 end)";
    let _: String = q(&mut con, redis::cmd("FUNCTION").arg("LOAD").arg(lib));
    let truth = snapshot(&mut con);
    let n = truth.keys.len() as u64;

    let dst = start_target(flavor);
    let mut tcon = dst.client();
    let _: () = q(
        &mut tcon,
        redis::cmd("SET").arg("s:7").arg("the target's own"),
    );
    let _: () = q(
        &mut tcon,
        redis::cmd("RPUSH").arg("list").arg("target-element"),
    );

    // panic: exit 1 naming a key that exists.
    let out = rump(&src.url(), &dst.url(), &["--no-functions"]);
    assert_eq!(out.code, Some(1), "panic: {}", out.stderr);
    assert!(
        (out.stderr.contains("\"s:7\"") || out.stderr.contains("\"list\""))
            && out.stderr.contains("already exists"),
        "panic names the key: {}",
        out.stderr
    );
    // ... and a function library that exists.
    let tlib = "#!lua name=srclib\nredis.register_function('targetfn', function() return 2 end)";
    let _: String = q(&mut tcon, redis::cmd("FUNCTION").arg("LOAD").arg(tlib));
    let out = rump(&src.url(), &dst.url(), &[]);
    assert_eq!(out.code, Some(1), "panic on a library: {}", out.stderr);
    assert!(
        out.stderr.contains("srclib"),
        "names the library: {}",
        out.stderr
    );

    // ignore: the target's values and library stay.
    let _: () = q(&mut tcon, &redis::cmd("FLUSHALL"));
    let _: () = q(
        &mut tcon,
        redis::cmd("SET").arg("s:7").arg("the target's own"),
    );
    let _: () = q(
        &mut tcon,
        redis::cmd("RPUSH").arg("list").arg("target-element"),
    );
    let out = rump_ok(
        "ignore",
        &src.url(),
        &dst.url(),
        &["--on-conflict", "ignore"],
    );
    assert_eq!(out.stat("conflicts kept"), 2, "{}", out.summary());
    assert_eq!(out.stat("keys copied"), n - 2, "{}", out.summary());
    assert_eq!(
        out.stat("kept)"),
        1,
        "the library is kept: {}",
        out.summary()
    );
    let s7: String = q(&mut tcon, redis::cmd("GET").arg("s:7"));
    assert_eq!(s7, "the target's own");
    let l: Vec<String> = q(&mut tcon, redis::cmd("LRANGE").arg("list").arg(0).arg(-1));
    assert_eq!(l, vec!["target-element"]);
    let f: i64 = q(&mut tcon, redis::cmd("FCALL").arg("targetfn").arg(0));
    assert_eq!(f, 2);

    // rewrite, twice, with and without big keys: the target ends equal to the source.
    for (i, extra) in [&[][..], &["--big-key-bytes", "1024"][..], &[][..]]
        .iter()
        .enumerate()
    {
        let mut args = vec!["--on-conflict", "rewrite"];
        args.extend_from_slice(extra);
        let out = rump_ok("rewrite", &src.url(), &dst.url(), &args);
        assert_eq!(out.stat("keys copied"), n, "run {i}: {}", out.summary());
        let got = snapshot(&mut tcon);
        assert_no_diffs(
            &format!("rewrite run {i} {extra:?}"),
            &compare("source", &truth, "target", &got, rebuilt_profile()),
        );
        assert_eq!(function_libraries(&mut tcon), function_libraries(&mut con));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. -o FILE

#[test]
fn rump_to_file() {
    for (flavor, magic) in [
        (Flavor::Redis70, "REDIS0010"),
        (Flavor::Valkey91, "VALKEY080"),
    ] {
        if !require(flavor) {
            continue;
        }
        let tmp = tempdir();
        let src = Server::start(flavor);
        let mut con = src.client();
        fill(&mut con, flavor, now_ms());
        small_db(&mut con, 3, "three:");
        if flavor.is_7_0_or_later() {
            let lib = "#!lua name=filelib\nredis.register_function('ff', function() return 1 end)";
            let _: String = q(&mut con, redis::cmd("FUNCTION").arg("LOAD").arg(lib));
        }
        let truth = snapshot(&mut con);
        let file = tmp.path().join("backup.rdb");
        let fname = file.to_str().unwrap();
        let out = run(
            "shake-rump",
            &["--source", &src.url(), "-o", fname, "--quiet"],
        );
        assert!(out.ok(), "[{flavor}] -o FILE: {}", out.stderr);
        assert_eq!(
            out.stat("keys copied"),
            truth.keys.len() as u64,
            "{}",
            out.summary()
        );
        assert!(out.summary().contains(magic), "{}", out.summary());
        let bytes = std::fs::read(&file).expect("the file exists");
        assert_eq!(&bytes[..9], magic.as_bytes(), "[{flavor}] header");
        assert!(
            !Path::new(&format!("{fname}.part")).exists(),
            "no .part left"
        );

        // shake-decode reads it, and it holds what the source holds.
        let dec = run("shake-decode", &["--quiet", fname]);
        assert!(dec.ok(), "[{flavor}] shake-decode: {}", dec.stderr);
        let decoded = snapshot_from_jsonl(&String::from_utf8(dec.stdout).unwrap());
        let mut d = decoded.clone();
        forget_unrecorded(&truth, &mut d);
        assert_no_diffs(
            &format!("{flavor} -o FILE, decoded"),
            &compare("source", &truth, "decoded file", &d, rump_profile()),
        );

        // shake-restore loads it into a server of the same version.
        let dst = start_target(flavor);
        let r = run(
            "shake-restore",
            &[
                "--target",
                &dst.url(),
                "--quiet",
                "--log-interval",
                "0",
                fname,
            ],
        );
        assert!(r.ok(), "[{flavor}] shake-restore: {}", r.stderr);
        let mut got = snapshot(&mut dst.client());
        forget_unrecorded(&truth, &mut got);
        assert_no_diffs(
            &format!("{flavor} -o FILE, restored"),
            &compare("source", &truth, "restored file", &got, rump_profile()),
        );
        if flavor.is_7_0_or_later() {
            assert_eq!(
                function_libraries(&mut dst.client()),
                function_libraries(&mut con)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. --follow and vanishing keys

/// Writes for `for_how_long`: overwrites, deletes, appends, short TTLs.
fn churn(url: String, for_how_long: Duration) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let client = redis::Client::open(url).unwrap();
        let mut con = client.get_connection().unwrap();
        let started = Instant::now();
        let mut round = 0u64;
        while started.elapsed() < for_how_long {
            let mut pipe = redis::pipe();
            for j in 0..50u64 {
                let i = (round * 7919 + j * 104729) % 20_000;
                match j % 5 {
                    0 => pipe
                        .cmd("SET")
                        .arg(format!("k:{i}"))
                        .arg(format!("new {round}")),
                    1 => pipe.cmd("DEL").arg(format!("k:{i}")),
                    2 => pipe.cmd("RPUSH").arg("follow:list").arg(round),
                    3 => pipe
                        .cmd("SET")
                        .arg(format!("short:{round}:{j}"))
                        .arg("x")
                        .arg("PX")
                        .arg(150),
                    _ => pipe.cmd("HSET").arg("follow:hash").arg(i).arg(round),
                };
                pipe.ignore();
            }
            let _: () = pipe.query(&mut con).unwrap();
            round += 1;
            sleep(Duration::from_millis(5));
        }
        round
    })
}

fn fill_strings(con: &mut redis::Connection, n: u64) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("SET")
            .arg(format!("k:{i}"))
            .arg(format!("value {i}"))
            .ignore();
    }
    let _: () = pipe.query(con).unwrap();
}

#[test]
fn rump_follow_converges() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let dst = start_target(flavor);
    let mut con = src.client();
    fill_strings(&mut con, 20_000);
    small_db(&mut con, 4, "four:");
    let before: String = {
        let v: Vec<String> = q(
            &mut con,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("notify-keyspace-events"),
        );
        v[1].clone()
    };

    let mut cmd = Command::new(bin("shake-rump"));
    cmd.args([
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--follow",
        "--quiet",
        "--count",
        "100",
    ]);
    prepare(&mut cmd);
    let mut child = cmd.spawn().expect("run shake-rump --follow");
    let (_o, e) = collect(&mut child);
    // Writes while the scan runs and after it.
    sleep(Duration::from_millis(100));
    let rounds = churn(src.url(), Duration::from_millis(2500))
        .join()
        .unwrap();
    let mut con_db4 = src.client();
    let _: () = q(&mut con_db4, redis::cmd("SELECT").arg(4));
    let _: () = q(&mut con_db4, redis::cmd("DEL").arg("four:list"));
    let _: () = q(&mut con_db4, redis::cmd("SET").arg("four:late").arg("late"));
    assert!(rounds > 10, "the writer ran {rounds} rounds");

    // Converges: compare until equal (short TTLs expire on both sides meanwhile).
    let deadline = Instant::now() + Duration::from_secs(20);
    let diffs = loop {
        let want = snapshot(&mut con);
        let got = snapshot(&mut dst.client());
        let diffs = compare("source", &want, "target", &got, rump_profile());
        if diffs.is_empty() || Instant::now() > deadline {
            break diffs;
        }
        sleep(Duration::from_millis(300));
    };
    // SIGINT: the follow ends, the summary comes, exit 0.
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let code = wait_limited(
        &mut child,
        Duration::from_secs(20),
        "shake-rump --follow after SIGINT",
    );
    let stderr = String::from_utf8_lossy(&e.join().unwrap()).into_owned();
    eprintln!("{stderr}");
    assert_no_diffs("--follow under writes", &diffs);
    assert_eq!(code, Some(0), "exit after SIGINT: {stderr}");
    let out = Out {
        code,
        stdout: Vec::new(),
        stderr,
    };
    assert!(
        out.stat("events") > 0 && out.stat("keys re-copied") > 0,
        "{}",
        out.summary()
    );
    assert!(
        out.stat("deleted") > 0,
        "deletes reached the target: {}",
        out.summary()
    );
    let after: Vec<String> = q(
        &mut con,
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events"),
    );
    assert_eq!(after[1], before, "notify-keyspace-events is put back");
}

#[test]
fn rump_follow_refuses_without_notifications() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let dst = Server::start(flavor);
    // A user who may not run CONFIG (as on managed services): the message says what to set.
    let _: () = q(
        &mut src.client(),
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("limited")
            .arg("on")
            .arg(">secret")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-config"),
    );
    let url = format!("redis://limited:secret@127.0.0.1:{}", src.port());
    let out = rump(&url, &dst.url(), &["--follow"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("notify-keyspace-events") && out.stderr.contains("KEA"),
        "the error says what to set: {}",
        out.stderr
    );
    assert_eq!(
        out.stderr.trim_end().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
}

#[test]
fn rump_counts_vanished_keys() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let mut con = src.client();
    for attempt in 0..4 {
        let dst = start_target(flavor);
        let _: () = q(&mut con, &redis::cmd("FLUSHALL"));
        fill_strings(&mut con, 60_000);
        let url = src.url();
        // Deletes the even keys while the copy runs.
        let deleter = std::thread::spawn(move || {
            let client = redis::Client::open(url).unwrap();
            let mut con = client.get_connection().unwrap();
            let mut deleted = 0u64;
            for chunk in (0..60_000u64).step_by(2).collect::<Vec<_>>().chunks(200) {
                let mut pipe = redis::pipe();
                for i in chunk {
                    pipe.cmd("DEL").arg(format!("k:{i}")).ignore();
                }
                let _: () = pipe.query(&mut con).unwrap();
                deleted += chunk.len() as u64;
                sleep(Duration::from_millis(2));
            }
            deleted
        });
        let out = rump_ok("vanish", &src.url(), &dst.url(), &["--count", "50"]);
        deleter.join().unwrap();
        let (copied, vanished, scanned) = (
            out.stat("keys copied"),
            out.stat("vanished skipped"),
            out.stat("keys scanned"),
        );
        assert_eq!(copied + vanished, scanned, "{}", out.summary());
        // Every odd key arrives with its value.
        let mut tcon = dst.client();
        let odd: Vec<String> = (1..60_000u64)
            .step_by(2)
            .map(|i| format!("k:{i}"))
            .collect();
        for chunk in odd.chunks(1000) {
            let vals: Vec<Option<String>> = q(&mut tcon, redis::cmd("MGET").arg(chunk));
            for (k, v) in chunk.iter().zip(vals) {
                let i: u64 = k[2..].parse().unwrap();
                assert_eq!(v.as_deref(), Some(format!("value {i}").as_str()), "{k}");
            }
        }
        // Nothing arrives that the source never had.
        let held = total_keys(&dst) as u64;
        assert_eq!(held, copied, "target holds what was copied");
        if vanished > 0 {
            eprintln!("attempt {attempt}: {vanished} keys vanished and were counted");
            return;
        }
    }
    panic!("no key vanished in four attempts: the deleter never overlapped the copy");
}

// ---------------------------------------------------------------------------------------------
// 6. Writes the target refuses (issue 12)

/// shake-rump --follow with stderr in a file, to watch while it runs.
fn follow_logged(src: &Server, dst: &Server, extra: &[&str]) -> (Child, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut cmd = Command::new(bin("shake-rump"));
    cmd.args([
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--follow",
        "--quiet",
    ])
    .args(extra);
    prepare(&mut cmd);
    cmd.stderr(log.reopen().expect("log"));
    (cmd.spawn().expect("run shake-rump --follow"), log)
}

fn read_log(f: &tempfile::NamedTempFile) -> String {
    std::fs::read_to_string(f.path()).unwrap_or_default()
}

/// Waits until `dst` has `key` with `value`.
fn wait_value(dst: &Server, key: &str, value: &str, what: &str, log: &tempfile::NamedTempFile) {
    let t = Instant::now();
    let mut con = dst.client();
    loop {
        let v: Option<String> = q(&mut con, redis::cmd("GET").arg(key));
        if v.as_deref() == Some(value) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what}: {key} is {v:?}; shake-rump's log:\n{}",
            read_log(log)
        );
        sleep(Duration::from_millis(50));
    }
}

/// `--follow`: a write the target refuses (out of memory for a moment) is repaired — read from
/// the source again and rewritten once the target takes it — and counted in the summary; with
/// `--on-target-error stop` the copy ends at the first refusal, naming the key and the cause.
#[test]
fn rump_follow_repairs_what_the_target_refused() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let dst = Server::start(flavor);
    let mut scon = src.client();
    let mut dcon = dst.client();
    let _: () = q(&mut scon, redis::cmd("SET").arg("first").arg("1"));
    let (mut child, log) = follow_logged(&src, &dst, &[]);
    wait_value(&dst, "first", "1", "the scan", &log);
    let _: () = q(
        &mut dcon,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"),
    );
    let _: () = q(&mut scon, redis::cmd("SET").arg("oom:k").arg("v1"));
    let t = Instant::now();
    while !read_log(&log).contains("repairing key \"oom:k\"") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no repair attempt:\n{}",
            read_log(&log)
        );
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "exited:\n{}",
            read_log(&log)
        );
        sleep(Duration::from_millis(20));
    }
    let _: () = q(
        &mut dcon,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0"),
    );
    wait_value(&dst, "oom:k", "v1", "the repair", &log);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let code = wait_limited(
        &mut child,
        Duration::from_secs(20),
        "shake-rump after SIGINT",
    );
    let out = Out {
        code,
        stdout: Vec::new(),
        stderr: read_log(&log),
    };
    assert_eq!(code, Some(0), "{}", out.stderr);
    assert_eq!(out.stat("keys repaired"), 1, "{}", out.summary());

    // stop: the first refusal ends the copy, naming the key.
    let _: () = q(&mut scon, redis::cmd("SET").arg("second").arg("2"));
    let (mut child, log) = follow_logged(
        &src,
        &dst,
        &["--on-conflict", "rewrite", "--on-target-error", "stop"],
    );
    wait_value(&dst, "second", "2", "the scan", &log);
    let _: () = q(
        &mut dcon,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"),
    );
    let _: () = q(&mut scon, redis::cmd("SET").arg("oom:k2").arg("v2"));
    let code = wait_limited(
        &mut child,
        Duration::from_secs(20),
        "shake-rump --on-target-error stop",
    );
    let _: () = q(
        &mut dcon,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0"),
    );
    let stderr = read_log(&log);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        last.contains("\"oom:k2\"") && last.contains("OOM"),
        "the last line does not name the key and the cause:\n{stderr}"
    );
}
