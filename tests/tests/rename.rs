//! `--rename-prefix OLD=NEW` (docs/cli.md): keys get their target names.
//!
//! - `rename_restore_redis70`: an RDB of Redis 7.0 restored into Redis 7.0 with two rules (one
//!   renaming, one stripping): the renamed keys exist on the target with the source's exact
//!   values and TTLs (read from both servers directly), the source names do not, a key no rule
//!   matches keeps its name; a `--key` filter judges the source name; a reserved NEW and a
//!   duplicated OLD are refused with exit 2 and nothing written.

use std::process::Command;

use shake_tests::{require, tool_binary, Flavor, Server};

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
}
