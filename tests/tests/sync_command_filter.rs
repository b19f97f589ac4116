//! shake-sync's command filters (`--command`, `--command-group`, `--exclude-command`,
//! `--exclude-command-group`) against a real Redis 7.0 source and target. Build the binaries
//! first (`cargo build --workspace --bins`).
//!
//! - `groups_judge_the_stream_not_the_full_sync`: `--command-group STRING --command-group
//!   sorted_set --exclude-command append --exclude-command-group scripting`. The keys there
//!   before are all copied; of the stream only the string and sorted-set commands are applied,
//!   inside MULTI/EXEC too (the transaction keeps the rest; one left empty changes nothing),
//!   a script's effects are judged as the commands they are, FUNCTION LOAD is not applied, a
//!   DEL (generic) is not. The allowed keys compare equal with shake-check, the others are
//!   absent; after a restart the sync resumes and applies nothing twice.
//! - `names_and_refusals`: `--command SET --command HSET --command PEXPIREAT`: those alone, in
//!   and out of a transaction (an EXPIRE arrives as the PEXPIREAT Redis propagates it as); an
//!   unknown command or group, and MULTI, stop with exit 2 and one line
//!   naming it.
//! - `output_applies_the_same_filters`: `--output` (JSON lines) with `--command-group string
//!   --exclude-command del`: the command records are exactly the source's allowed commands, an
//!   emptied transaction is not written.

#[path = "live_common/mod.rs"]
mod live_common;
mod sync_common;

use std::time::Duration;

use shake_tests::{require, run_tool, shake_check, Flavor, Server};
use sync_common::{stat, wait_until, Sync};

const FLAVOR: Flavor = Flavor::Redis70;

fn cmd(c: &mut redis::Connection, argv: &[&str]) -> redis::Value {
    let mut k = redis::cmd(argv[0]);
    for a in &argv[1..] {
        k.arg(*a);
    }
    k.query(c)
        .unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")))
}

fn transaction(c: &mut redis::Connection, cmds: &[&[&str]]) {
    let mut p = redis::pipe();
    p.atomic();
    for argv in cmds {
        let mut k = redis::cmd(argv[0]);
        for a in &argv[1..] {
            k.arg(*a);
        }
        p.add_command(k);
    }
    let _: redis::Value = p.query(c).expect("MULTI/EXEC");
}

fn exists(s: &Server, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query(&mut s.client())
        .expect("EXISTS");
    n == 1
}

fn get(s: &Server, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut s.client())
        .expect("GET")
}

/// Waits until the target holds `key` = `value`: every command the source ran before it has
/// been judged (the stream is applied in order).
fn wait_for(dst: &Server, key: &str, value: &str) {
    wait_until(
        &format!("{key} on the target"),
        Duration::from_secs(30),
        &mut || get(dst, key).as_deref() == Some(value),
    );
}

fn assert_equal_keys(src: &Server, dst: &Server, regex: &str) {
    let (same, text) = shake_check(&src.url(), &dst.url(), &["--key-regex", regex]);
    assert!(same, "keys {regex} differ:\n{text}");
}

#[test]
fn groups_judge_the_stream_not_the_full_sync() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    let dst = Server::start(FLAVOR);
    let mut c = src.client();
    cmd(&mut c, &["SET", "pre:s", "v"]);
    cmd(&mut c, &["HSET", "pre:h", "f", "v"]);
    cmd(&mut c, &["RPUSH", "pre:l", "a", "b"]);
    let flags = [
        "--command-group",
        "STRING",
        "--command-group",
        "sorted_set",
        "--exclude-command",
        "append",
        "--exclude-command-group",
        "scripting",
    ];
    let mut sync = Sync::start(&src.url(), &dst.url(), &flags);
    sync.wait_incremental(Duration::from_secs(30));

    cmd(&mut c, &["SET", "a:s", "1"]);
    cmd(&mut c, &["APPEND", "a:s", "x"]);
    cmd(&mut c, &["HSET", "b:h", "f", "v"]);
    cmd(&mut c, &["ZADD", "a:z", "1", "m"]);
    cmd(&mut c, &["ZINCRBY", "a:z", "2", "m"]);
    transaction(
        &mut c,
        &[
            &["SET", "a:tx", "1"],
            &["HSET", "b:tx", "f", "v"],
            &["INCR", "a:tx"],
        ],
    );
    transaction(
        &mut c,
        &[&["HSET", "b:tx2", "f", "v"], &["LPUSH", "b:tx2l", "x"]],
    );
    let lib = "#!lua name=shakelib\nredis.register_function('shake_set', function(keys, args) return redis.call('SET', keys[1], 'fn') end)";
    cmd(&mut c, &["FUNCTION", "LOAD", lib]);
    cmd(&mut c, &["FCALL", "shake_set", "1", "a:fcall"]);
    cmd(
        &mut c,
        &[
            "EVAL",
            "redis.call('SET', KEYS[1], 'e'); redis.call('HSET', KEYS[2], 'f', 'v')",
            "2",
            "a:eval",
            "b:eval",
        ],
    );
    cmd(&mut c, &["DEL", "pre:h"]);
    cmd(&mut c, &["SET", "a:last", "done"]);
    wait_for(&dst, "a:last", "done");

    // FUNCTION LOAD is scripting: the target has no library. (FUNCTION DELETE, scripting too,
    // then leaves the source without one, for shake-check, which compares libraries.)
    let libs: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query(&mut dst.client())
        .expect("FUNCTION LIST");
    assert!(libs.is_empty(), "the target has functions: {libs:?}");
    cmd(&mut c, &["FUNCTION", "DELETE", "shakelib"]);
    cmd(&mut c, &["SET", "a:last", "deleted"]);
    wait_for(&dst, "a:last", "deleted");

    // The full sync copied every key; the allowed commands' keys are the source's.
    assert_equal_keys(&src, &dst, "^(pre:s|pre:l|a:z|a:tx|a:fcall|a:eval|a:last)$");
    // APPEND was left out; so were the hash and list commands, in transactions and scripts too.
    assert_eq!(get(&src, "a:s").as_deref(), Some("1x"));
    assert_eq!(get(&dst, "a:s").as_deref(), Some("1"));
    for k in ["b:h", "b:tx", "b:tx2", "b:tx2l", "b:eval"] {
        assert!(exists(&src, k), "{k} on the source");
        assert!(!exists(&dst, k), "{k} on the target");
    }
    // DEL is generic: not applied.
    assert!(!exists(&src, "pre:h") && exists(&dst, "pre:h"));
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");

    // What the filters left out moved the checkpoint on too: a restart resumes after it and
    // applies each allowed command once.
    let partial = stat(&src, "sync_partial_ok");
    let mut sync = Sync::start(&src.url(), &dst.url(), &flags);
    sync.wait_incremental(Duration::from_secs(30));
    cmd(&mut c, &["INCR", "a:tx"]);
    cmd(&mut c, &["HSET", "b:after", "f", "v"]);
    cmd(&mut c, &["SET", "a:last", "again"]);
    wait_for(&dst, "a:last", "again");
    assert!(
        stat(&src, "sync_partial_ok") > partial,
        "no partial resync:\n{}",
        sync.stderr()
    );
    assert_eq!(get(&dst, "a:tx").as_deref(), Some("3"));
    assert_equal_keys(&src, &dst, "^(pre:s|pre:l|a:z|a:tx|a:fcall|a:eval|a:last)$");
    assert!(!exists(&dst, "b:after"));
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn names_and_refusals() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    let dst = Server::start(FLAVOR);
    let mut sync = Sync::start(
        &src.url(),
        &dst.url(),
        &[
            "--command",
            "SET",
            "--command",
            "hset",
            "--command",
            "PexpireAt",
        ],
    );
    sync.wait_incremental(Duration::from_secs(30));
    let mut c = src.client();
    cmd(&mut c, &["SET", "c:1", "v"]);
    // Redis propagates EXPIRE as PEXPIREAT: the filters judge what the stream carries.
    cmd(&mut c, &["EXPIRE", "c:1", "1000"]);
    cmd(&mut c, &["INCR", "c:n"]);
    cmd(&mut c, &["HSET", "c:h", "f", "v"]);
    cmd(&mut c, &["HINCRBY", "c:hn", "f", "1"]);
    transaction(
        &mut c,
        &[
            &["SET", "c:t", "x"],
            &["LPUSH", "c:tl", "y"],
            &["EXPIRE", "c:t", "500"],
        ],
    );
    cmd(&mut c, &["SET", "c:last", "done"]);
    wait_for(&dst, "c:last", "done");
    assert_equal_keys(&src, &dst, "^c:(1|h|t|last)$");
    for k in ["c:n", "c:hn", "c:tl"] {
        assert!(exists(&src, k) && !exists(&dst, k), "{k}");
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg("c:t")
        .query(&mut dst.client())
        .unwrap();
    assert!(ttl > 0 && ttl <= 500, "TTL of c:t on the target: {ttl}");
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");

    let (s, t) = (src.url(), dst.url());
    for (flag, value, named) in [
        (
            "--command-group",
            "strings",
            "\"strings\": not a command group",
        ),
        (
            "--exclude-command-group",
            "TAIRZSET",
            "\"TAIRZSET\": not a command group",
        ),
        ("--command", "NOSUCH", "--command \"NOSUCH\": not a command"),
        (
            "--exclude-command",
            "MULTI",
            "--exclude-command \"MULTI\": MULTI, EXEC",
        ),
    ] {
        let (code, log) = run_tool(
            "shake-sync",
            &["--source", &s, "--target", &t, flag, value],
            &[],
        );
        assert_eq!(code, Some(2), "{flag} {value}:\n{log}");
        assert!(log.contains(named), "{flag} {value}:\n{log}");
        assert_eq!(log.lines().count(), 1, "one line:\n{log}");
        if flag.ends_with("group") {
            assert!(
                log.contains("sorted-set") && log.contains("scripting"),
                "{log}"
            );
        }
    }
    assert!(!exists(&dst, "shake-sync:checkpoint:x"));
}

#[test]
fn output_applies_the_same_filters() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("changes.jsonl");
    let f = file.to_string_lossy().into_owned();
    let mut c = src.client();
    cmd(&mut c, &["HSET", "pre:h", "f", "v"]);
    let mut sync = Sync::start_args(
        &[
            "--source",
            &src.url(),
            "--output",
            &f,
            "--command-group",
            "string",
            "--exclude-command",
            "del",
        ],
        &[],
    );
    sync.wait_incremental(Duration::from_secs(30));
    cmd(&mut c, &["SET", "o:1", "a"]);
    cmd(&mut c, &["HSET", "o:h", "f", "v"]);
    cmd(&mut c, &["DEL", "o:1"]);
    transaction(&mut c, &[&["HSET", "o:h2", "f", "v"]]);
    transaction(
        &mut c,
        &[
            &["SET", "o:2", "b"],
            &["HSET", "o:h3", "f", "v"],
            &["DEL", "o:2"],
        ],
    );
    cmd(&mut c, &["SET", "o:last", "z"]);
    wait_until("o:last in the output", Duration::from_secs(30), &mut || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("o:last"))
    });
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");

    let text = std::fs::read_to_string(&file).unwrap();
    let mut argvs = Vec::new();
    let mut snapshot_keys = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        if let Some(a) = v["argv"].as_array() {
            let a: Vec<&str> = a.iter().map(|x| x.as_str().unwrap()).collect();
            argvs.push(a.join(" "));
        } else if let Some(k) = v["key"].as_str() {
            snapshot_keys.push(k.to_string());
        }
    }
    // The snapshot is whole; of the stream, the string commands but DEL, the transaction with
    // one left kept as one, the one left empty not written.
    assert_eq!(snapshot_keys, ["pre:h"]);
    assert_eq!(
        argvs,
        ["SET o:1 a", "MULTI", "SET o:2 b", "EXEC", "SET o:last z"],
        "{text}"
    );
}
