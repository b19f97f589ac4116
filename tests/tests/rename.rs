//! `--rename-prefix OLD=NEW` (docs/cli.md#key-renames): keys get their target names.
//!
//! - `rename_restore_redis70`: an RDB of Redis 7.0 restored into Redis 7.0 with two rules (one
//!   renaming, one stripping): the renamed keys exist on the target with the source's exact
//!   values and TTLs (read from both servers directly), the source names do not, a key no rule
//!   matches keeps its name; a `--key` filter judges the source name; a reserved NEW and a
//!   duplicated OLD are refused with exit 2 and nothing written; shake-check with the RDB as
//!   its source passes with the same rules and finds differences without them.
//! - `rename_rump_redis70`: shake-rump with three rules (one with a hash tag in NEW, one strip)
//!   into a standalone target and into a three-master cluster (where most keys change slot with
//!   their name): every source key, read back by type and members, is on the target under its
//!   new name and nothing else is; shake-check with the rules passes, without them it does not;
//!   then `--follow` carries writes and a delete under their new names.
//! - `rename_sync_redis70`: shake-sync with the same rules from a standalone Redis 7.0 into a
//!   standalone target and a cluster at once, under stream writes of many kinds: single-key
//!   writes, MSET across slots (split by the new names' slots), DEL/UNLINK, RENAME of a renamed
//!   key (to a renamed and to an unrenamed name), COPY, SMOVE, LMOVE, ZUNIONSTORE, SORT ... STORE,
//!   BITOP, LMPOP, a stream with a group, a Lua script (propagated as its effects), a
//!   MULTI/EXEC, keys no rule matches, and an INCR the targets refuse (a list under the new
//!   name), repaired from the source's old name; both targets converge to the renamed source,
//!   and shake-check agrees with the rules and disagrees without them.
//! - `rename_sync_refuses_patterns_redis70`: a `SORT ... BY pattern STORE` in the stream, which
//!   reads keys a rename cannot place, stops the sync with exit 1 and one line naming SORT and
//!   the offset.

mod live_common;
mod sync_common;

use live_common::{assert_no_diffs, compare, snapshot, Profile, Snapshot};
use sync_common::{cluster_snapshot, converge, data_of, Sync};

use std::process::Command;

use std::time::{Duration, Instant};

use shake_tests::{require, run_tool, shake_check, tool_binary, Cluster, Flavor, Server};

fn restore(url: &str, args: &[&str], rdb: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(tool_binary("shake-restore"))
        .arg("--quiet")
        .args(args)
        .arg("--target")
        .arg(url)
        .arg(rdb)
        .output()
        .expect("run shake-restore");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The key's type and value, in an order that does not depend on the server's hash seed.
fn value(c: &mut redis::Connection, k: &str) -> (String, Vec<String>) {
    let t: String = redis::cmd("TYPE").arg(k).query(c).expect("TYPE");
    let mut cmd = match t.as_str() {
        "string" => redis::cmd("GET"),
        "list" => redis::cmd("LRANGE"),
        "set" => redis::cmd("SMEMBERS"),
        "hash" => redis::cmd("HGETALL"),
        "zset" => redis::cmd("ZRANGE"),
        other => panic!("{k}: unexpected type {other}"),
    };
    cmd.arg(k);
    match t.as_str() {
        "list" => {
            cmd.arg(0).arg(-1);
        }
        "zset" => {
            cmd.arg(0).arg(-1).arg("WITHSCORES");
        }
        _ => {}
    }
    let mut v: Vec<String> = if t == "string" {
        vec![cmd.query(c).expect("GET")]
    } else {
        cmd.query(c).expect("read")
    };
    if t == "set" {
        v.sort();
    }
    if t == "hash" {
        let mut pairs: Vec<String> = v.chunks(2).map(|p| p.join("=")).collect();
        pairs.sort();
        v = pairs;
    }
    (t, v)
}

fn pttl(c: &mut redis::Connection, k: &str) -> i64 {
    redis::cmd("PTTL").arg(k).query(c).expect("PTTL")
}

fn keys(c: &mut redis::Connection) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(c).expect("KEYS");
    k.sort();
    k
}

#[test]
fn rename_restore_redis70() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let mut s = src.client();
    let setup: &[&[&str]] = &[
        &["SET", "user:1", "alice"],
        &["SET", "user:admin:1", "root", "PX", "3600000"],
        &["RPUSH", "user:list", "a", "b", "c"],
        &["HSET", "tmp:h", "f", "v", "g", "w"],
        &["ZADD", "tmp:z", "1.5", "m", "2", "n"],
        &["SADD", "other", "x", "y"],
    ];
    for c in setup {
        let mut cmd = redis::cmd(c[0]);
        for a in &c[1..] {
            cmd.arg(*a);
        }
        let _: redis::Value = cmd.query(&mut s).expect("fill");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rdb = tmp.path().join("src.rdb");
    std::fs::copy(src.save(), &rdb).expect("copy the RDB");

    // Two rules: the longest OLD wins ("user:admin:" over "user:"), "tmp:" is stripped.
    let dst = Server::start(flavor);
    let rules = [
        "--rename-prefix",
        "user:=u:",
        "--rename-prefix",
        "user:admin:=adm:",
        "--rename-prefix",
        "tmp:=",
    ];
    let (code, err) = restore(&dst.url(), &rules, &rdb);
    assert_eq!(code, Some(0), "{err}");
    let mut d = dst.client();
    let expect = [
        ("user:1", "u:1"),
        ("user:admin:1", "adm:1"),
        ("user:list", "u:list"),
        ("tmp:h", "h"),
        ("tmp:z", "z"),
        ("other", "other"),
    ];
    let mut want: Vec<String> = expect.iter().map(|(_, t)| t.to_string()).collect();
    want.sort();
    assert_eq!(keys(&mut d), want, "the target's keys");
    for (from, to) in expect {
        assert_eq!(
            value(&mut s, from),
            value(&mut d, to),
            "{from} -> {to}: the value differs"
        );
        let (a, b) = (pttl(&mut s, from), pttl(&mut d, to));
        assert!(
            (a < 0 && a == b) || (a > 0 && (a - b).abs() < 5000),
            "{from} -> {to}: TTL {a} on the source, {b} on the target"
        );
    }

    // --key judges the source name.
    let dst2 = Server::start(flavor);
    let mut args = rules.to_vec();
    args.extend(["--key", "user:*"]);
    let (code, err) = restore(&dst2.url(), &args, &rdb);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        keys(&mut dst2.client()),
        vec!["adm:1".to_string(), "u:1".into(), "u:list".into()]
    );

    // Refused rules: exit 2, one line, nothing written.
    let dst3 = Server::start(flavor);
    for bad in [
        &["--rename-prefix", "a:=shake-sync:a:"][..],
        &["--rename-prefix", "a:=b:", "--rename-prefix", "a:=c:"],
        &["--rename-prefix", "no-equals-sign"],
    ] {
        let (code, err) = restore(&dst3.url(), bad, &rdb);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert!(err.contains("--rename-prefix"), "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{bad:?}: {err}");
    }
    assert!(keys(&mut dst3.client()).is_empty());

    // shake-check with the RDB as its source: equal under the rules, not without them.
    let rdb_arg = rdb.to_str().expect("utf-8 path");
    let mut with = rules.to_vec();
    with.extend(["--rounds", "1"]);
    let (same, text) = shake_check(rdb_arg, &dst.url(), &with);
    assert!(same, "shake-check with the rules: {text}");
    let (same, text) = shake_check(rdb_arg, &dst.url(), &["--rounds", "1"]);
    assert!(
        !same,
        "shake-check without the rules finds differences: {text}"
    );
}

// ---- rump and sync --------------------------------------------------------------------------

/// The rules of the rump and sync tests: the longest OLD wins, one NEW carries a hash tag (every
/// key it renames goes to one slot), one rule strips its prefix; other keys keep their names.
const RULES: &[(&str, &str)] = &[("user:", "u:"), ("user:admin:", "adm{a}:"), ("tmp:", "")];

fn rule_args() -> Vec<String> {
    RULES
        .iter()
        .flat_map(|(o, n)| ["--rename-prefix".to_string(), format!("{o}={n}")])
        .collect()
}

/// The target name of `key` under [`RULES`], as docs/cli.md states the rules (written out here,
/// independently of shake-core).
fn renamed(key: &[u8]) -> Vec<u8> {
    let best = RULES
        .iter()
        .filter(|(o, _)| key.starts_with(o.as_bytes()))
        .max_by_key(|(o, _)| o.len());
    match best {
        Some((o, n)) => [n.as_bytes(), &key[o.len()..]].concat(),
        None => key.to_vec(),
    }
}

/// The source as the target should hold it: every key under its new name.
fn renamed_snapshot(s: Snapshot) -> Snapshot {
    Snapshot {
        keys: s
            .keys
            .into_iter()
            .map(|((db, k), v)| ((db, renamed(&k)), v))
            .collect(),
        ..s
    }
}

fn run(c: &mut redis::Connection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query(c).unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

/// Keys of every type under every rule, before the copy.
fn fill(c: &mut redis::Connection) {
    let setup: &[&[&str]] = &[
        &["SET", "user:1", "alice"],
        &["SET", "user:admin:1", "root", "PX", "3600000"],
        &["RPUSH", "user:list", "a", "b", "c"],
        &["HSET", "tmp:h", "f", "v", "g", "w"],
        &["ZADD", "tmp:z", "1.5", "m", "2", "n"],
        &["SADD", "other", "x", "y", "z"],
        &["XADD", "user:stream", "1-1", "f", "v"],
        &["SET", "user:gone", "x"],
        &["SET", "tmp:gone2", "x"],
        &["SET", "user:{r}:old", "o"],
        &["SET", "user:{r}:x", "x"],
        &["HSET", "user:{c}:src", "a", "1"],
        &["SADD", "user:{s}:a", "m", "n"],
        &["RPUSH", "user:{l}:a", "1", "2", "3"],
        &["ZADD", "user:{z}:a", "1", "p", "2", "q"],
        &["ZADD", "user:{z}:b", "3", "q", "4", "r"],
        &["RPUSH", "user:{o}:list", "c", "a", "b"],
        &["SET", "user:{b}:x", "abc"],
        &["SET", "user:{b}:y", "abd"],
        &["RPUSH", "user:{p}:b", "x", "y"],
    ];
    for a in setup {
        run(c, a);
    }
    for i in 0..200 {
        run(c, &["SET", &format!("user:n:{i}"), &i.to_string()]);
    }
}

fn assert_converges(ctx: &str, src: &Server, read_target: &dyn Fn() -> Snapshot) {
    converge(
        ctx,
        &|| renamed_snapshot(data_of(snapshot(&mut src.client()))),
        read_target,
        Duration::from_secs(30),
    );
}

/// [`assert_converges`] for shake-rump, whose TTLs come from PTTL (a millisecond or so off).
fn assert_rump_converges(ctx: &str, src: &Server, read_target: &dyn Fn() -> Snapshot) {
    let t = Instant::now();
    let mut diffs = Vec::new();
    while t.elapsed() < Duration::from_secs(30) {
        let want = renamed_snapshot(snapshot(&mut src.client()));
        let profile = Profile {
            consumer_times: true,
            ttl_tolerance_ms: 1500,
            entries_read: true,
        };
        diffs = compare("source", &want, "target", &read_target(), profile);
        if diffs.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_no_diffs(ctx, &diffs);
}

/// shake-check with the rules passes; without them it finds differences.
fn assert_check(ctx: &str, source: &str, target: &str) {
    let rules = rule_args();
    let mut with: Vec<&str> = rules.iter().map(String::as_str).collect();
    with.extend(["--rounds", "3", "--interval", "1"]);
    let (same, text) = shake_check(source, target, &with);
    assert!(same, "[{ctx}] shake-check with the rules: {text}");
    let (same, text) = shake_check(source, target, &["--rounds", "1"]);
    assert!(
        !same && text.contains("missing") && text.contains("extra"),
        "[{ctx}] shake-check without the rules finds the keys missing and extra: {text}"
    );
}

#[test]
fn rename_rump_redis70() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    fill(&mut src.client());
    let rules = rule_args();
    let src_url = src.url();
    let rump = |target: &str, extra: &[&str]| {
        let mut args = vec!["--quiet", "--source", src_url.as_str(), "--target", target];
        args.extend(rules.iter().map(String::as_str));
        args.extend_from_slice(extra);
        run_tool("shake-rump", &args, &[])
    };

    // A standalone target.
    let dst = Server::start(flavor);
    let (code, err) = rump(&dst.url(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_rump_converges("rump standalone", &src, &|| snapshot(&mut dst.client()));
    assert_check("rump standalone", &src.url(), &dst.url());

    // A cluster target: the slot follows the new name.
    let cluster = Cluster::start_with(flavor, &[("databases", "1")]);
    let names: Vec<Vec<u8>> = snapshot(&mut src.client())
        .keys
        .into_keys()
        .map(|(_, k)| k)
        .collect();
    let moved = names
        .iter()
        .filter(|k| cluster.slot(k) != cluster.slot(&renamed(k)))
        .count();
    assert!(moved > 100, "only {moved} keys change slot with their name");
    let (code, err) = rump(&cluster.url(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_rump_converges("rump cluster", &src, &|| cluster_snapshot(&cluster));
    assert_check("rump cluster", &src.url(), &cluster.url());

    // --follow: writes and deletes after the scan arrive under the new names.
    let dst2 = Server::start(flavor);
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut args = vec![
        "--source".to_string(),
        src.url(),
        "--target".into(),
        dst2.url(),
        "--follow".into(),
    ];
    args.extend(rules.iter().cloned());
    let mut child = Command::new(tool_binary("shake-rump"))
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("run shake-rump --follow");
    let mut d = dst2.client();
    let t = Instant::now();
    while !keys(&mut d).contains(&"u:n:199".to_string()) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the scan did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut s = src.client();
    for a in [
        &["SET", "user:late", "1"][..],
        &["DEL", "user:1"],
        &["HSET", "tmp:h", "f2", "v2"],
        &["SET", "user:admin:2", "two"],
        &["SET", "plain", "p"],
        &["RPUSH", "user:list", "d"],
    ] {
        run(&mut s, a);
    }
    assert_rump_converges("rump --follow", &src, &|| snapshot(&mut dst2.client()));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let t = Instant::now();
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("shake-rump --follow did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert_eq!(code, Some(0), "{err}");
}

/// The stream writes of [`rename_sync_redis70`]: multi-key commands keep their keys in one slot
/// (a hash tag) so a cluster target can run them; single-key ones change slot with the name.
const STREAM_WRITES: &[&[&str]] = &[
    &["SET", "user:1", "bob"],
    &["INCR", "user:ctr"],
    &["APPEND", "tmp:s", "xyz"],
    &["HSET", "user:h", "f", "v"],
    &["EXPIRE", "user:h", "3600"],
    &["SET", "user:admin:9", "nine", "EX", "600"],
    &[
        "MSET",
        "user:{m}:1",
        "a",
        "user:{m}:2",
        "b",
        "other:{m}:3",
        "c",
    ],
    &[
        "MSET", "user:a", "1", "user:b", "2", "tmp:c", "3", "plain:d", "4",
    ],
    &["DEL", "user:gone"],
    &["UNLINK", "tmp:gone2"],
    &["RENAME", "user:{r}:old", "user:{r}:new"],
    &["RENAME", "user:{r}:x", "other:{r}:x"],
    &["COPY", "user:{c}:src", "user:{c}:dst"],
    &["SMOVE", "user:{s}:a", "user:{s}:b", "m"],
    &["LMOVE", "user:{l}:a", "tmp:{l}:b", "LEFT", "RIGHT"],
    &[
        "ZUNIONSTORE",
        "user:{z}:dst",
        "2",
        "user:{z}:a",
        "user:{z}:b",
        "WEIGHTS",
        "1",
        "2",
    ],
    &["SORT", "user:{o}:list", "ALPHA", "STORE", "user:{o}:sorted"],
    &["BITOP", "AND", "user:{b}:d", "user:{b}:x", "user:{b}:y"],
    &["LMPOP", "2", "user:{p}:a", "user:{p}:b", "LEFT"],
    &["XADD", "user:stream", "2-1", "g", "w"],
    &["XGROUP", "CREATE", "user:stream", "grp", "0"],
    &[
        "EVAL",
        "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])",
        "2",
        "user:{e}:a",
        "user:{e}:b",
        "lua",
    ],
    &["SADD", "plain:set", "q"],
    &["SPOP", "other"],
];

#[test]
fn rename_sync_redis70() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    fill(&mut src.client());
    let single = Server::start(flavor);
    let cluster = Cluster::start_with(flavor, &[("databases", "1")]);
    let rules = rule_args();
    let extra: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut s1 = Sync::start(&src.url(), &single.url(), &extra);
    let mut s2 = Sync::start(&src.url(), &cluster.url(), &extra);
    s1.wait_incremental(Duration::from_secs(60));
    s2.wait_incremental(Duration::from_secs(60));

    // A key of the wrong type on the targets, under the new name: the stream's INCR is refused
    // there, and the repair reads the source's key under its old name.
    run(&mut single.client(), &["RPUSH", "u:clash", "x"]);
    {
        let mut cc = cluster.connection();
        let _: i64 = redis::cmd("RPUSH")
            .arg("u:clash")
            .arg("x")
            .query(&mut cc)
            .expect("RPUSH on the cluster");
    }
    let mut c = src.client();
    run(&mut c, &["INCR", "user:clash"]);
    for a in STREAM_WRITES {
        run(&mut c, a);
    }
    // A source transaction: one transaction on the target (its keys share a slot).
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("INCR")
        .arg("user:{t}:n")
        .cmd("SADD")
        .arg("user:{t}:set")
        .arg("a")
        .cmd("RPUSH")
        .arg("tmp:{t}:l")
        .arg("x")
        .cmd("RENAME")
        .arg("user:{t}:n")
        .arg("user:{t}:m");
    let _: redis::Value = pipe.query(&mut c).expect("MULTI/EXEC");

    assert_converges("sync standalone", &src, &|| {
        data_of(snapshot(&mut single.client()))
    });
    assert_converges("sync cluster", &src, &|| cluster_snapshot(&cluster));
    assert_check("sync standalone", &src.url(), &single.url());
    assert_check("sync cluster", &src.url(), &cluster.url());
    for (s, what) in [(s1, "standalone"), (s2, "cluster")] {
        let (code, err) = s.stop();
        assert_eq!(code, Some(0), "shake-sync into the {what} target: {err}");
        assert!(
            err.contains("1 errors, 1 keys repaired"),
            "shake-sync into the {what} target: the refused INCR and its repair, nothing else: {err}"
        );
    }
}

#[test]
fn rename_sync_refuses_patterns_redis70() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    let dst = Server::start(flavor);
    let mut c = src.client();
    run(&mut c, &["RPUSH", "user:l", "2", "1"]);
    let rules = rule_args();
    let extra: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut s = Sync::start(&src.url(), &dst.url(), &extra);
    s.wait_incremental(Duration::from_secs(60));
    run(&mut c, &["SORT", "user:l", "BY", "w_*", "STORE", "user:d"]);
    let t = Instant::now();
    while s.running() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "shake-sync went on past SORT ... BY: {}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, err) = s.stop();
    assert_eq!(code, Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("SORT"))
        .unwrap_or_else(|| panic!("no line names SORT: {err}"));
    assert!(
        line.contains("--rename-prefix") && line.contains("offset"),
        "the line says why and where: {line}"
    );
    // Nothing after the refusal reached the target: the sorted copy is not there.
    assert!(!keys(&mut dst.client()).contains(&"u:d".to_string()));
}
