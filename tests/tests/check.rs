//! `shake-check` against real servers. Build the binary first: `cargo build -p shake-check`
//! (`cargo test -p shake-tests` does not build other packages' binaries).
//!
//! The "equal" side is made by the servers themselves: the target replicates the source
//! (REPLICAOF, then REPLICAOF NO ONE), so no shake code decides what equal means. Differences are
//! then injected with plain commands, and the test expects exactly one line per injected
//! difference, of the right kind, and nothing else.
//!
//! - `equal_data_<flavor>`: every type in its compact and large encodings (writer_common's fill:
//!   streams with groups, PEL, tombstones, exact scores, TTLs, binary key names), several
//!   databases, function libraries: nothing reported in every mode, live and from the RDB file.
//! - `differences_<flavor>`: missing, extra, each type's value (string, list, set, zset score one
//!   ulp off, hash, stream entry, group last id, pending count), type, TTL added / removed /
//!   changed, a TTL within the tolerance (not reported), a key in database 1, a binary key name,
//!   one field of a 1M-field hash, elements of big list/set/zset/stream; live and RDB sources;
//!   outline and length modes report only what they look at.
//! - `cluster_and_standalone`: a standalone source against a 3-master cluster and back.
//! - `rounds_recheck`: a difference fixed between rounds is not reported; one that stays is.
//! - `exit_codes`: 0, 1, 2 (unreachable target named in one line, bad arguments, a damaged RDB).

#[path = "live_common/mod.rs"]
mod live_common;
mod writer_common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;
use live_common::{now_ms, q};
use shake_tests::{require, Cluster, Flavor, Server};
use writer_common::fill;

fn bin() -> PathBuf {
    let mut dir = std::env::current_exe().expect("current_exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(format!("shake-check{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build -p shake-check` first",
        p.display()
    );
    p
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `(db, key, kind)` of every line.
type Found = BTreeSet<(u64, Vec<u8>, String)>;

impl Out {
    fn lines(&self) -> Found {
        let mut out = BTreeSet::new();
        for line in self.stdout.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
            if v.get("function").is_some() {
                out.insert((
                    u64::MAX,
                    v["function"].as_str().unwrap_or("?").as_bytes().to_vec(),
                    v["kind"].as_str().unwrap_or("?").to_string(),
                ));
                continue;
            }
            let key = match &v["key"] {
                serde_json::Value::String(s) => s.as_bytes().to_vec(),
                o => base64::engine::general_purpose::STANDARD
                    .decode(o["base64"].as_str().expect("key or {base64}"))
                    .expect("base64"),
            };
            for f in ["source", "target"] {
                assert!(v[f].is_string(), "{f} missing in {line}");
            }
            let added = out.insert((
                v["db"].as_u64().expect("db"),
                key,
                v["kind"].as_str().expect("kind").to_string(),
            ));
            assert!(added, "reported twice: {line}");
        }
        assert_eq!(
            out.len(),
            self.stdout.lines().count(),
            "one line per key:\n{}",
            self.stdout
        );
        out
    }
}

fn check(args: &[&str]) -> Out {
    let o = Command::new(bin())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("SHAKE_SOURCE")
        .env_remove("SHAKE_TARGET")
        .stdin(Stdio::null())
        .output()
        .expect("run shake-check");
    let out = Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(
        !out.stderr.contains("panicked"),
        "shake-check panicked:\n{}",
        out.stderr
    );
    out
}

fn check_pair(src: &str, dst: &str, extra: &[&str]) -> Out {
    let mut args = vec!["--source", src, "--target", dst, "--rounds", "1", "-q"];
    args.extend_from_slice(extra);
    check(&args)
}

fn expect(out: &Out, want: &Found, what: &str) {
    let got = out.lines();
    let show = |s: &Found| {
        s.iter()
            .map(|(db, k, kind)| format!("  db {db} {:?} {kind}", String::from_utf8_lossy(k)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        &got,
        want,
        "{what}: reported\n{}\nexpected\n{}\nstdout:\n{}\nstderr:\n{}",
        show(&got),
        show(want),
        out.stdout,
        out.stderr
    );
    let code = if want.is_empty() { 0 } else { 1 };
    assert_eq!(out.code, Some(code), "{what}: exit status\n{}", out.stderr);
}

/// Makes `dst` a copy of `src` by replication, then detaches it.
fn replicate(src: &Server, dst: &Server) {
    let mut c = dst.client();
    let _: () = q(
        &mut c,
        redis::cmd("REPLICAOF").arg("127.0.0.1").arg(src.port()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = src.info("replication");
        let d = dst.info("replication");
        let up = d.get("master_link_status").map(String::as_str) == Some("up")
            && d.get("master_sync_in_progress").map(String::as_str) == Some("0");
        if up && s.get("master_repl_offset") == d.get("slave_repl_offset") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica did not catch up: {d:?}\n{}",
            dst.log_tail()
        );
        sleep(Duration::from_millis(50));
    }
    let _: () = q(&mut c, redis::cmd("REPLICAOF").arg("NO").arg("ONE"));
}

fn select(con: &mut redis::Connection, db: i64) {
    let _: () = q(con, redis::cmd("SELECT").arg(db));
}

/// Keys in databases 1 and 2 and a function library, beside `fill`'s database 0.
fn fill_more(con: &mut redis::Connection, flavor: Flavor) {
    for db in [1, 2] {
        select(con, db);
        for i in 0..50 {
            let _: () = q(con, redis::cmd("SET").arg(format!("db{db}:{i}")).arg(i));
        }
        let _: () = q(con, redis::cmd("HSET").arg("h").arg("f").arg(db));
        let _: i64 = q(
            con,
            redis::cmd("PEXPIREAT").arg("h").arg(now_ms() + 3_600_000),
        );
    }
    select(con, 0);
    if flavor.is_7_0_or_later() {
        let _: String = q(
            con,
            redis::cmd("FUNCTION").arg("LOAD").arg(
                "#!lua name=checklib\nredis.register_function('checkf', function() return 1 end)",
            ),
        );
    }
}

fn equal_data(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let dst = Server::start(flavor);
    let mut con = src.client();
    fill(&mut con, flavor, now_ms());
    fill_more(&mut con, flavor);
    replicate(&src, &dst);
    for mode in ["full", "length", "outline"] {
        let out = check_pair(&src.url(), &dst.url(), &["--mode", mode]);
        expect(
            &out,
            &Found::new(),
            &format!("{flavor} equal, --mode {mode}"),
        );
        assert!(out.stderr.contains("0 difference(s)"), "{}", out.stderr);
    }
    let rdb = src.save();
    let out = check_pair(rdb.to_str().unwrap(), &dst.url(), &[]);
    expect(&out, &Found::new(), &format!("{flavor} equal, RDB source"));
    // A database in the URL compares that database only.
    let out = check_pair(
        &format!("{}/1", src.url()),
        &format!("{}/1", dst.url()),
        &[],
    );
    expect(&out, &Found::new(), &format!("{flavor} equal, database 1"));
}

#[test]
fn equal_data_redis70() {
    equal_data(Flavor::Redis70);
}

#[test]
fn equal_data_valkey91() {
    equal_data(Flavor::Valkey91);
}

#[test]
fn equal_data_redis62() {
    equal_data(Flavor::Redis62);
}

/// A double one ulp above `v`, as text that reads back to exactly it.
fn next_up(v: f64) -> String {
    format!("{:e}", f64::from_bits(v.to_bits() + 1))
}

fn set_key(con: &mut redis::Connection, k: &[u8], v: &str) {
    let _: () = q(con, redis::cmd("SET").arg(k).arg(v));
}

/// Source content for the difference tests (before replication); returns the deadline used
/// for the TTL keys.
fn fill_diff_keys(con: &mut redis::Connection, big_hash: bool) -> i64 {
    let at = now_ms() + 3_600_000;
    for k in [
        "d:missing",
        "d:string",
        "d:type",
        "d:ttl-add",
        "d:ttl-rm",
        "d:ttl-chg",
        "d:ttl-ok",
    ] {
        set_key(con, k.as_bytes(), "v");
    }
    for k in ["d:ttl-rm", "d:ttl-chg", "d:ttl-ok"] {
        let _: i64 = q(con, redis::cmd("PEXPIREAT").arg(k).arg(at));
    }
    set_key(con, b"d:bin\xff\x00name", "v");
    let _: i64 = q(
        con,
        redis::cmd("RPUSH").arg("d:list").arg(&["a", "b", "c", "d"]),
    );
    let _: i64 = q(con, redis::cmd("SADD").arg("d:set").arg(&["a", "b", "c"]));
    let _: i64 = q(
        con,
        redis::cmd("ZADD")
            .arg("d:zset")
            .arg("0.1")
            .arg("a")
            .arg("inf")
            .arg("b")
            .arg("-inf")
            .arg("c"),
    );
    let _: i64 = q(
        con,
        redis::cmd("HSET").arg("d:hash").arg(&["f", "1", "g", "2"]),
    );
    for s in ["d:s-entry", "d:s-group", "d:s-pending"] {
        for i in 1..=5 {
            let _: String = q(
                con,
                redis::cmd("XADD")
                    .arg(s)
                    .arg(format!("{i}-0"))
                    .arg("f")
                    .arg(i),
            );
        }
    }
    for s in ["d:s-group", "d:s-pending"] {
        let _: () = q(
            con,
            redis::cmd("XGROUP").arg("CREATE").arg(s).arg("g").arg("0"),
        );
        let _: redis::Value = q(
            con,
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(2)
                .arg("STREAMS")
                .arg(s)
                .arg(">"),
        );
    }
    // Big collections, compared in chunks.
    let items: Vec<String> = (0..5000).map(|i| format!("item-{i}")).collect();
    let _: i64 = q(con, redis::cmd("RPUSH").arg("d:biglist").arg(&items));
    let _: i64 = q(con, redis::cmd("SADD").arg("d:bigset").arg(&items));
    let mut z = redis::cmd("ZADD");
    z.arg("d:bigzset");
    for (i, m) in items.iter().enumerate() {
        z.arg(i as f64 / 7.0).arg(m);
    }
    let _: i64 = q(con, &z);
    let mut pipe = redis::pipe();
    for i in 1..=3000 {
        pipe.cmd("XADD")
            .arg("d:bigstream")
            .arg(format!("{i}-1"))
            .arg("n")
            .arg(i)
            .ignore();
    }
    let _: () = pipe.query(con).expect("d:bigstream");
    let _: () = q(
        con,
        redis::cmd("SET")
            .arg("d:bigstring")
            .arg("x".repeat(3 << 20)),
    );
    if big_hash {
        // 1M fields, 1000 per HSET, pipelined.
        let mut pipe = redis::pipe();
        for c in 0..1000 {
            let cmd = pipe.cmd("HSET").arg("d:bighash");
            for i in 0..1000 {
                let n = c * 1000 + i;
                cmd.arg(format!("field:{n}")).arg(format!("value:{n}"));
            }
            cmd.ignore();
        }
        let _: () = pipe.query(con).expect("d:bighash");
    }
    select(con, 1);
    set_key(con, b"d:db1", "v");
    set_key(con, b"d:db1-same", "v");
    select(con, 0);
    at
}

/// Changes the target; returns what must be reported.
fn inject(con: &mut redis::Connection, at: i64, big_hash: bool) -> Found {
    let mut want = Found::new();
    let mut add = |db: u64, k: &[u8], kind: &str| {
        want.insert((db, k.to_vec(), kind.to_string()));
    };
    let _: i64 = q(con, redis::cmd("DEL").arg("d:missing"));
    add(0, b"d:missing", "missing");
    set_key(con, b"d:extra", "x");
    add(0, b"d:extra", "extra");
    set_key(con, b"d:string", "w");
    add(0, b"d:string", "value");
    let _: () = q(con, redis::cmd("LSET").arg("d:list").arg(2).arg("C"));
    add(0, b"d:list", "value");
    let _: i64 = q(con, redis::cmd("SREM").arg("d:set").arg("b"));
    let _: i64 = q(con, redis::cmd("SADD").arg("d:set").arg("B"));
    add(0, b"d:set", "value");
    let _: i64 = q(
        con,
        redis::cmd("ZADD").arg("d:zset").arg(next_up(0.1)).arg("a"),
    );
    add(0, b"d:zset", "value");
    let _: i64 = q(con, redis::cmd("HSET").arg("d:hash").arg("g").arg("3"));
    add(0, b"d:hash", "value");
    // Same ids, one field value different.
    let _: i64 = q(con, redis::cmd("DEL").arg("d:s-entry"));
    for i in 1..=5 {
        let v = if i == 3 {
            "changed".to_string()
        } else {
            i.to_string()
        };
        let _: String = q(
            con,
            redis::cmd("XADD")
                .arg("d:s-entry")
                .arg(format!("{i}-0"))
                .arg("f")
                .arg(v),
        );
    }
    add(0, b"d:s-entry", "value");
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("SETID")
            .arg("d:s-group")
            .arg("g")
            .arg("1-0"),
    );
    add(0, b"d:s-group", "value");
    let _: i64 = q(
        con,
        redis::cmd("XACK").arg("d:s-pending").arg("g").arg("1-0"),
    );
    add(0, b"d:s-pending", "value");
    let _: i64 = q(con, redis::cmd("DEL").arg("d:type"));
    let _: i64 = q(con, redis::cmd("RPUSH").arg("d:type").arg("v"));
    add(0, b"d:type", "type");
    let _: i64 = q(con, redis::cmd("PEXPIREAT").arg("d:ttl-add").arg(at));
    add(0, b"d:ttl-add", "ttl");
    let _: i64 = q(con, redis::cmd("PERSIST").arg("d:ttl-rm"));
    add(0, b"d:ttl-rm", "ttl");
    let _: i64 = q(
        con,
        redis::cmd("PEXPIREAT").arg("d:ttl-chg").arg(at - 10_000),
    );
    add(0, b"d:ttl-chg", "ttl");
    // Within the default 2 s tolerance: not a difference.
    let _: i64 = q(con, redis::cmd("PEXPIREAT").arg("d:ttl-ok").arg(at - 1_000));
    set_key(con, b"d:bin\xff\x00name", "w");
    add(0, b"d:bin\xff\x00name", "value");
    let _: () = q(con, redis::cmd("LSET").arg("d:biglist").arg(4321).arg("X"));
    add(0, b"d:biglist", "value");
    let _: i64 = q(con, redis::cmd("SREM").arg("d:bigset").arg("item-4000"));
    let _: i64 = q(con, redis::cmd("SADD").arg("d:bigset").arg("item-x"));
    add(0, b"d:bigset", "value");
    let _: i64 = q(
        con,
        redis::cmd("ZADD")
            .arg("d:bigzset")
            .arg(next_up(3000.0 / 7.0))
            .arg("item-3000"),
    );
    add(0, b"d:bigzset", "value");
    let _: i64 = q(con, redis::cmd("XDEL").arg("d:bigstream").arg("2500-1"));
    add(0, b"d:bigstream", "value");
    let _: i64 = q(
        con,
        redis::cmd("SETRANGE")
            .arg("d:bigstring")
            .arg(2_500_000)
            .arg("y"),
    );
    add(0, b"d:bigstring", "value");
    if big_hash {
        let _: i64 = q(
            con,
            redis::cmd("HSET")
                .arg("d:bighash")
                .arg("field:777777")
                .arg("changed"),
        );
        add(0, b"d:bighash", "value");
    }
    select(con, 1);
    set_key(con, b"d:db1", "w");
    add(1, b"d:db1", "value");
    select(con, 0);
    want
}

fn differences(flavor: Flavor, big_hash: bool) {
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let dst = Server::start(flavor);
    let mut con = src.client();
    fill(&mut con, flavor, now_ms());
    let at = fill_diff_keys(&mut con, big_hash);
    replicate(&src, &dst);
    let out = check_pair(&src.url(), &dst.url(), &[]);
    expect(&out, &Found::new(), &format!("{flavor} before the changes"));
    let want = inject(&mut dst.client(), at, big_hash);
    let out = check_pair(&src.url(), &dst.url(), &[]);
    expect(&out, &want, &format!("{flavor} live source"));
    // The RDB file of the same source finds the same differences.
    let rdb = src.save();
    let out = check_pair(rdb.to_str().unwrap(), &dst.url(), &[]);
    expect(&out, &want, &format!("{flavor} RDB source"));
    // outline looks at existence, type and TTL; length also at element counts (of the injected
    // changes, only the XDEL from d:bigstream alters a length).
    let coarse: Found = want
        .iter()
        .filter(|(_, _, kind)| kind != "value")
        .cloned()
        .collect();
    let mut lengths = coarse.clone();
    lengths.insert((0, b"d:bigstream".to_vec(), "value".into()));
    for (mode, want) in [("outline", &coarse), ("length", &lengths)] {
        let out = check_pair(&src.url(), &dst.url(), &["--mode", mode]);
        expect(&out, want, &format!("{flavor} --mode {mode}"));
        let out = check_pair(rdb.to_str().unwrap(), &dst.url(), &["--mode", mode]);
        expect(&out, want, &format!("{flavor} RDB source, --mode {mode}"));
    }
    // A length difference is a value difference in length mode.
    let _: i64 = q(
        &mut dst.client(),
        redis::cmd("RPUSH").arg("d:list").arg("e"),
    );
    let mut with_len = lengths.clone();
    with_len.insert((0, b"d:list".to_vec(), "value".into()));
    let out = check_pair(&src.url(), &dst.url(), &["--mode", "length"]);
    expect(
        &out,
        &with_len,
        &format!("{flavor} --mode length, longer list"),
    );
    // --ignore-key and the filters leave keys out on both sides.
    let out = check_pair(
        &src.url(),
        &dst.url(),
        &["--ignore-key", "d:*", "--ignore-key", "d:bin*"],
    );
    expect(&out, &Found::new(), &format!("{flavor} --ignore-key d:*"));
    let out = check_pair(&src.url(), &dst.url(), &["--db", "1"]);
    let db1: Found = want.iter().filter(|(db, _, _)| *db == 1).cloned().collect();
    expect(&out, &db1, &format!("{flavor} --db 1"));
}

#[test]
fn differences_redis70() {
    differences(Flavor::Redis70, true);
}

#[test]
fn differences_valkey91() {
    differences(Flavor::Valkey91, false);
}

#[test]
fn differences_redis62() {
    differences(Flavor::Redis62, false);
}

#[test]
fn internal_keys_and_functions() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let dst = Server::start(flavor);
    let mut d = dst.client();
    set_key(&mut d, b"shake-sync:checkpoint", "replid 42");
    let out = check_pair(&src.url(), &dst.url(), &[]);
    expect(&out, &Found::new(), "an internal key is skipped");
    let out = check_pair(&src.url(), &dst.url(), &["--include-internal-keys"]);
    let want: Found = [(0, b"shake-sync:checkpoint".to_vec(), "extra".to_string())].into();
    expect(&out, &want, "--include-internal-keys");
    let _: String = q(
        &mut src.client(),
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("#!lua name=lib1\nredis.register_function('f1', function() return 1 end)"),
    );
    let out = check_pair(&src.url(), &dst.url(), &[]);
    let want: Found = [(u64::MAX, b"lib1".to_vec(), "missing".to_string())].into();
    expect(&out, &want, "a function library missing on the target");
    let out = check_pair(src.save().to_str().unwrap(), &dst.url(), &[]);
    expect(
        &out,
        &want,
        "a function library missing on the target, RDB source",
    );
}

/// The same keys, written through any connection (a cluster's or a server's).
fn small_data<C: redis::ConnectionLike>(con: &mut C) {
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("k:{i}"))
            .arg(i)
            .query(con)
            .expect("SET");
    }
    let _: i64 = redis::cmd("HSET")
        .arg("{tag}:hash")
        .arg(&["a", "1", "b", "2"])
        .query(con)
        .expect("HSET");
    let _: i64 = redis::cmd("ZADD")
        .arg("{tag}:zset")
        .arg("0.3")
        .arg("m")
        .query(con)
        .expect("ZADD");
    let _: i64 = redis::cmd("RPUSH")
        .arg("list")
        .arg(&["x", "y"])
        .query(con)
        .expect("RPUSH");
    let _: String = redis::cmd("XADD")
        .arg("stream")
        .arg("5-5")
        .arg("f")
        .arg("v")
        .query(con)
        .expect("XADD");
}

#[test]
fn cluster_and_standalone() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let cluster = Cluster::start(flavor);
    let single = Server::start(flavor);
    small_data(&mut cluster.connection());
    small_data(&mut single.client());
    let out = check_pair(&single.url(), &cluster.url(), &[]);
    expect(&out, &Found::new(), "standalone -> cluster, equal");
    let out = check_pair(&cluster.url(), &single.url(), &[]);
    expect(&out, &Found::new(), "cluster -> standalone, equal");
    let mut c = cluster.connection();
    let _: i64 = redis::cmd("DEL").arg("k:7").query(&mut c).expect("DEL");
    let _: () = redis::cmd("SET")
        .arg("k:8")
        .arg("changed")
        .query(&mut c)
        .expect("SET");
    let _: () = redis::cmd("SET")
        .arg("only-in-cluster")
        .arg(1)
        .query(&mut c)
        .expect("SET");
    let _: i64 = redis::cmd("ZADD")
        .arg("{tag}:zset")
        .arg(next_up(0.3))
        .arg("m")
        .query(&mut c)
        .expect("ZADD");
    let want: Found = [
        (0, b"k:7".to_vec(), "missing".to_string()),
        (0, b"k:8".to_vec(), "value".to_string()),
        (0, b"only-in-cluster".to_vec(), "extra".to_string()),
        (0, b"{tag}:zset".to_vec(), "value".to_string()),
    ]
    .into();
    let out = check_pair(&single.url(), &cluster.url(), &[]);
    expect(&out, &want, "standalone -> cluster");
    let reversed: Found = want
        .iter()
        .map(|(db, k, kind)| {
            let kind = match kind.as_str() {
                "missing" => "extra",
                "extra" => "missing",
                k => k,
            };
            (*db, k.clone(), kind.to_string())
        })
        .collect();
    let out = check_pair(&cluster.url(), &single.url(), &[]);
    expect(&out, &reversed, "cluster -> standalone");
    // An RDB of the standalone server against the cluster.
    let out = check_pair(single.save().to_str().unwrap(), &cluster.url(), &[]);
    expect(&out, &want, "RDB -> cluster");
    // A database other than 0 cannot go to a cluster unmapped.
    {
        let mut s = single.client();
        select(&mut s, 3);
        set_key(&mut s, b"in-db3", "v");
    }
    let out = check_pair(&single.url(), &cluster.url(), &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("--db-map") || out.stderr.contains("database 0"),
        "{}",
        out.stderr
    );
    let out = check_pair(&single.url(), &cluster.url(), &["--db-map", "*=0"]);
    let mut mapped = want.clone();
    mapped.insert((3, b"in-db3".to_vec(), "missing".to_string()));
    expect(
        &out,
        &mapped,
        "standalone with database 3 -> cluster, --db-map *=0",
    );
}

#[test]
fn rounds_recheck() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let dst = Server::start(flavor);
    small_data(&mut src.client());
    small_data(&mut dst.client());
    let mut d = dst.client();
    let _: i64 = q(&mut d, redis::cmd("DEL").arg("k:1"));
    set_key(&mut d, b"k:2", "stays different");
    let dir = tempfile::tempdir().expect("tempdir");
    let err_path = dir.path().join("stderr");
    let child = Command::new(bin())
        .args([
            "--source",
            &src.url(),
            "--target",
            &dst.url(),
            "--rounds",
            "3",
            "--interval",
            "1",
        ])
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn shake-check");
    // Once the first round has seen the differences, fix one of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&err_path)
        .unwrap_or_default()
        .contains("round 1: 2 key(s) differ")
    {
        assert!(
            Instant::now() < deadline,
            "no round 1 line: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        sleep(Duration::from_millis(20));
    }
    set_key(&mut d, b"k:1", "1");
    let o = child.wait_with_output().expect("wait");
    let out = Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    let want: Found = [(0, b"k:2".to_vec(), "value".to_string())].into();
    expect(
        &out,
        &want,
        "a fixed difference is not reported, a lasting one is",
    );
    assert!(out.stderr.contains("in 3 round(s)"), "{}", out.stderr);
    // With nothing left after round 2, the run stops there.
    set_key(&mut d, b"k:2", "2");
    let out = check(&[
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rounds",
        "3",
        "--interval",
        "0",
        "-q",
    ]);
    expect(&out, &Found::new(), "equal again");
    assert!(out.stderr.contains("in 1 round(s)"), "{}", out.stderr);
}

#[test]
fn exit_codes() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dead_url = format!("redis://127.0.0.1:{dead}");
    let out = check_pair(&src.url(), &dead_url, &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{dead}")),
        "{}",
        out.stderr
    );
    let out = check_pair(&dead_url, &src.url(), &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("source") && out.stderr.contains(&dead.to_string()),
        "{}",
        out.stderr
    );
    let out = check(&["--source", &src.url()]);
    assert_eq!(out.code, Some(2), "missing --target: {}", out.stderr);
    let out = check_pair(&src.url(), &src.url(), &["--mode", "deep"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = check_pair("/no/such/file.rdb", &src.url(), &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    // A damaged RDB: one line naming the file and the offset.
    set_key(&mut src.client(), b"k", &"v".repeat(5000));
    let rdb = src.save();
    let bytes = std::fs::read(&rdb).expect("read rdb");
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = dir.path().join("cut.rdb");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let out = check_pair(cut.to_str().unwrap(), &src.url(), &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("cut.rdb") && out.stderr.contains("offset"),
        "{}",
        out.stderr
    );
    let out = check_pair(rdb.to_str().unwrap(), &src.url(), &[]);
    expect(&out, &Found::new(), "equal");
    let _: i64 = q(&mut src.client(), redis::cmd("DEL").arg("k"));
    let out = check_pair(rdb.to_str().unwrap(), &src.url(), &[]);
    let want: Found = [(0, b"k".to_vec(), "missing".to_string())].into();
    expect(&out, &want, "missing");
}
