//! Append-only files as input (docs/shake-restore.md#aof-input): AOFs written by real servers
//! with `appendonly yes`, restored by shake-restore and compared with shake-check.
//!
//! - `aof_restore_redis70`, `aof_restore_redis82`, `aof_restore_valkey91`: a mixed data set
//!   (strings with TTLs, hashes, lists, sets, zsets with exact float scores, a stream with a
//!   consumer group and a pending entry, three databases, MULTI/EXEC, EXPIRE, DEL) written,
//!   BGREWRITEAOF, more writes (the incremental file), with `aof-timestamp-enabled yes`; then the
//!   multi-part directory restored into a fresh server. With `aof-use-rdb-preamble yes` (an RDB
//!   base) the target is compared with the source. With `aof-use-rdb-preamble no` (an AOF-form
//!   base) it is compared with a server that loaded the same AOF files itself: a server loading
//!   its own AOF-form rewrite does not get back every detail the source holds (a stream
//!   consumer's seen-time, a -0.0 score on 8.2), and the restore can only replay what the
//!   files say. The manifest given instead of the directory restores the same. On 7.0,
//!   `--rename-prefix` renames the RDB part's keys and the commands' (shake-check with the rule).
//! - `aof_restore_redis62_single_file`: Redis 6.2's one-file AOF, plain (no rewrite) and with
//!   an RDB preamble (after BGREWRITEAOF, more writes after it), each compared with a Redis 6.2
//!   that loaded the same file.
//! - `aof_restore_corpus_files`: every AOF of the corpus (`rdb-corpus/aof/`: an old-style AOF
//!   with an RDB preamble, plain AOFs of hashes with field TTLs) restored into a Redis 8.2 and
//!   compared with a Redis 8.2 that loaded the same file itself.
//! - `aof_torn_tail_and_damage`: the incremental file of a Redis 7.0 AOF cut in the middle of
//!   its last command: by default exit 1 with the offset and the redis-check-aof hint, nothing
//!   written; with `--aof-truncated skip` everything before it is applied, and the target equals
//!   a Redis 7.0 that loaded the cut AOF itself (`aof-load-truncated yes`). A damaged byte in the
//!   middle is an error with its offset even with skip.
//! - `aof_until_timestamps`: real `#TS:` annotations (writes on both sides of a second
//!   boundary): `--until` (unix seconds, then RFC 3339) applies the first writes only, equal to
//!   a server that got just those writes; an AOF without annotations and `--until` is refused
//!   naming the file and `aof-timestamp-enabled yes`.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shake_tests::{require, run_tool, shake_check, Flavor, Server};

fn cmd(c: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut q = redis::cmd(args[0]);
    for a in &args[1..] {
        q.arg(*a);
    }
    q.query(c)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

/// Writes before the rewrite: every type, TTLs, scores that need every bit, a consumer group
/// with a pending entry, three databases, a transaction.
fn fill_before(s: &Server) {
    let mut c = s.client();
    let c = &mut c;
    cmd(c, &["SET", "str", "v1"]);
    cmd(c, &["SET", "ttl:px", "v", "PX", "600000"]);
    cmd(c, &["SET", "bin\x00key", "a\r\nb"]);
    cmd(c, &["HSET", "hash", "f1", "v1", "f2", "v2", "f3", "v3"]);
    for i in 0..200 {
        cmd(c, &["HSET", "hash:big", &format!("f{i}"), &format!("v{i}")]);
        cmd(c, &["RPUSH", "list:big", &format!("e{i}")]);
        cmd(c, &["SADD", "set:big", &format!("m{i}")]);
        cmd(
            c,
            &[
                "ZADD",
                "zset:big",
                &format!("{}", i as f64 / 7.0),
                &format!("m{i}"),
            ],
        );
    }
    cmd(c, &["RPUSH", "list", "a", "b", "c"]);
    cmd(c, &["SADD", "set", "x", "y", "z"]);
    cmd(c, &["SADD", "intset", "1", "2", "3"]);
    cmd(
        c,
        &[
            "ZADD",
            "zset",
            "0.1234567891",
            "a",
            "1e-9",
            "b",
            "9007199254740993",
            "c",
            "inf",
            "d",
            "-inf",
            "e",
        ],
    );
    for i in 0..5 {
        // Explicit IDs: the --until test writes the same to two servers.
        cmd(
            c,
            &[
                "XADD",
                "stream",
                &format!("{}-1", i + 1),
                "n",
                &i.to_string(),
            ],
        );
    }
    cmd(c, &["XGROUP", "CREATE", "stream", "g1", "0"]);
    cmd(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "c1",
            "COUNT",
            "2",
            "STREAMS",
            "stream",
            ">",
        ],
    );
    cmd(c, &["EXPIRE", "hash", "9000"]);
    cmd(c, &["SET", "gone", "x"]);
    cmd(c, &["DEL", "gone"]);
    cmd(c, &["SELECT", "1"]);
    cmd(c, &["SET", "db1:a", "1"]);
    cmd(c, &["LPUSH", "db1:l", "p", "q"]);
    cmd(c, &["SELECT", "0"]);
    let _: () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("tx:a")
        .arg("1")
        .cmd("INCRBY")
        .arg("tx:b")
        .arg("5")
        .query(c)
        .expect("MULTI/EXEC");
}

/// Writes after the rewrite: what the incremental file holds.
fn fill_after(s: &Server) {
    let mut c = s.client();
    let c = &mut c;
    cmd(c, &["SET", "str", "v2", "EX", "5000"]);
    cmd(c, &["INCR", "counter"]);
    cmd(c, &["INCRBYFLOAT", "float", "0.1"]);
    cmd(c, &["HDEL", "hash", "f1"]);
    cmd(c, &["HSET", "hash", "f4", "v4"]);
    cmd(c, &["LPUSH", "list", "z"]);
    cmd(c, &["LPOP", "list:big"]);
    cmd(c, &["SREM", "set", "x"]);
    cmd(c, &["ZINCRBY", "zset", "0.5", "a"]);
    cmd(c, &["ZADD", "zset", "-2.5e-300", "f"]);
    cmd(c, &["XADD", "stream", "*", "after", "1"]);
    cmd(c, &["XADD", "stream2", "MAXLEN", "2", "*", "k", "v"]);
    cmd(c, &["PEXPIRE", "list", "7000000"]);
    cmd(c, &["DEL", "set:big"]);
    cmd(c, &["SETEX", "ttl:ex", "8000", "v"]);
    cmd(c, &["RENAME", "intset", "intset:renamed"]);
    cmd(c, &["SELECT", "1"]);
    cmd(c, &["DEL", "db1:a"]);
    cmd(c, &["SET", "db1:b", "2"]);
    cmd(c, &["SELECT", "3"]);
    cmd(c, &["HSET", "db3:h", "k", "v"]);
    cmd(c, &["SELECT", "0"]);
    let _: () = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg("tx:a")
        .cmd("LPUSH")
        .arg("tx:l")
        .arg("1")
        .arg("2")
        .query(c)
        .expect("MULTI/EXEC");
}

fn wait_rewrite(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = s.info("persistence");
        let busy = |k: &str| p.get(k).map(String::as_str) == Some("1");
        if !busy("aof_rewrite_in_progress") && !busy("aof_rewrite_scheduled") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "BGREWRITEAOF did not end in 30 s"
        );
        sleep(Duration::from_millis(50));
    }
}

fn rewrite(s: &Server) {
    cmd(&mut s.client(), &["BGREWRITEAOF"]);
    wait_rewrite(s);
}

fn restore(target: &Server, extra: &[&str], input: &Path) -> (Option<i32>, String) {
    let url = target.url();
    let input = input.to_string_lossy().into_owned();
    let mut args = vec!["--quiet", "--target", &url];
    args.extend_from_slice(extra);
    args.push(&input);
    run_tool("shake-restore", &args, &[])
}

fn dbsize_all(s: &Server) -> u64 {
    let ks = s.info("keyspace");
    ks.values()
        .filter_map(|v| {
            v.split(',')
                .next()?
                .strip_prefix("keys=")?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// A server of `flavor` that loaded the AOF in `files` itself (a multi-part directory's files,
/// or one `appendonly.aof`).
fn loaded_by_server(flavor: Flavor, files: &Path, single: bool) -> Server {
    let mut s = Server::start_with(flavor, &[("appendonly", "yes")]);
    s.stop();
    if single {
        std::fs::copy(files, s.dir().join("appendonly.aof")).expect("copy aof");
    } else {
        let dir = s.dir().join("appendonlydir");
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(files, &dir);
    }
    let _ = std::fs::remove_file(s.dir().join("dump.rdb"));
    s.restart();
    s
}

fn assert_same(what: &str, a: &Server, b: &Server) {
    let (same, text) = shake_check(&a.url(), &b.url(), &[]);
    assert!(same, "{what}: the two servers differ:\n{text}");
}

fn aof_restore(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    for preamble in ["yes", "no"] {
        let src = Server::start_with(
            flavor,
            &[
                ("appendonly", "yes"),
                ("appendfsync", "always"),
                ("aof-use-rdb-preamble", preamble),
                ("aof-timestamp-enabled", "yes"),
            ],
        );
        fill_before(&src);
        rewrite(&src);
        fill_after(&src);
        let dir = src.dir().join("appendonlydir");
        let manifest = std::fs::read_to_string(dir.join("appendonly.aof.manifest"))
            .expect("a multi-part AOF has a manifest");
        let base_kind = if preamble == "yes" {
            ".base.rdb"
        } else {
            ".base.aof"
        };
        assert!(manifest.contains(base_kind), "{flavor}: {manifest}");

        let target = Server::start(flavor);
        let (code, err) = restore(&target, &[], &dir);
        assert_eq!(code, Some(0), "{flavor} preamble {preamble}: {err}");
        assert!(err.contains("AOF commands applied"), "{err}");
        let reference;
        let expected = if preamble == "yes" {
            &src
        } else {
            reference = loaded_by_server(flavor, &dir, false);
            &reference
        };
        assert!(dbsize_all(expected) > 10);
        assert_same(
            &format!("{flavor} aof-use-rdb-preamble {preamble}"),
            expected,
            &target,
        );

        // The manifest names the same files.
        let target2 = Server::start(flavor);
        let (code, err) = restore(&target2, &[], &dir.join("appendonly.aof.manifest"));
        assert_eq!(code, Some(0), "{err}");
        assert_same("restored from the manifest", &target, &target2);

        if flavor == Flavor::Redis70 && preamble == "yes" {
            // --rename-prefix renames the RDB part's keys and every key of the commands.
            let target3 = Server::start(flavor);
            let (code, err) = restore(&target3, &["--rename-prefix", "hash=h2:"], &dir);
            assert_eq!(code, Some(0), "{err}");
            let (same, text) =
                shake_check(&src.url(), &target3.url(), &["--rename-prefix", "hash=h2:"]);
            assert!(same, "renamed: {text}");
            assert_eq!(
                cmd(&mut target3.client(), &["EXISTS", "hash", "hash:big"]),
                redis::Value::Int(0)
            );
        }
    }
}

#[test]
fn aof_restore_redis70() {
    aof_restore(Flavor::Redis70);
}

#[test]
fn aof_restore_redis82() {
    aof_restore(Flavor::Redis82);
}

#[test]
fn aof_restore_valkey91() {
    aof_restore(Flavor::Valkey91);
}

#[test]
fn aof_restore_redis62_single_file() {
    let flavor = Flavor::Redis62;
    if !require(flavor) {
        return;
    }
    // Plain: no rewrite, commands from the first byte.
    let src = Server::start_with(flavor, &[("appendonly", "yes"), ("appendfsync", "always")]);
    fill_before(&src);
    fill_after(&src);
    let aof = src.dir().join("appendonly.aof");
    let head = std::fs::read(&aof).expect("appendonly.aof");
    assert_eq!(
        head.first(),
        Some(&b'*'),
        "a plain AOF starts with a command"
    );
    let target = Server::start(flavor);
    let (code, err) = restore(&target, &[], &aof);
    assert_eq!(code, Some(0), "{err}");
    let reference = loaded_by_server(flavor, &aof, true);
    assert_same("6.2 plain AOF", &reference, &target);
    assert_same("6.2 plain AOF against its source", &src, &target);

    // With a preamble: BGREWRITEAOF, then writes after it.
    let src = Server::start_with(
        flavor,
        &[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("aof-use-rdb-preamble", "yes"),
        ],
    );
    fill_before(&src);
    rewrite(&src);
    fill_after(&src);
    let aof = src.dir().join("appendonly.aof");
    let head = std::fs::read(&aof).expect("appendonly.aof");
    assert!(
        head.starts_with(b"REDIS"),
        "the rewrite wrote an RDB preamble"
    );
    let target = Server::start(flavor);
    let (code, err) = restore(&target, &[], &aof);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("AOF commands applied"),
        "the tail was applied: {err}"
    );
    let reference = loaded_by_server(flavor, &aof, true);
    assert_same("6.2 AOF with preamble", &reference, &target);
    assert_same("6.2 AOF with preamble against its source", &src, &target);
}

/// Every AOF of the corpus (`rdb-corpus/aof/`: Redis's old-style AOF with an RDB preamble and
/// HDT3213/rdb's plain AOFs of hashes with field TTLs), restored into a Redis 8.2 and compared
/// with a Redis 8.2 that loaded the same file as its own `appendonly.aof` (upgraded to a
/// multi-part directory on start, as Redis 7+ does with an old-style file).
#[test]
fn aof_restore_corpus_files() {
    let flavor = Flavor::Redis82;
    if !require(flavor) {
        return;
    }
    let Some(corpus) = shake_tests::require_corpus() else {
        return;
    };
    let mut files = Vec::new();
    let mut dirs = vec![corpus.join("aof")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read corpus aof dir") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "aof") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 4,
        "the corpus has at least four AOFs: {files:?}"
    );
    for file in &files {
        let target = Server::start(flavor);
        let (code, err) = restore(&target, &[], file);
        assert_eq!(code, Some(0), "{}: {err}", file.display());
        let mut reference = Server::start_with(flavor, &[("appendonly", "yes")]);
        reference.stop();
        let _ = std::fs::remove_dir_all(reference.dir().join("appendonlydir"));
        let _ = std::fs::remove_file(reference.dir().join("dump.rdb"));
        std::fs::copy(file, reference.dir().join("appendonly.aof")).expect("copy aof");
        reference.restart();
        assert!(
            dbsize_all(&reference) > 0,
            "{}: the server loaded keys from it",
            file.display()
        );
        assert_same(&file.display().to_string(), &reference, &target);
    }
}

/// The incremental file of a multi-part AOF directory.
fn incr_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .expect("an incremental file")
}

#[test]
fn aof_torn_tail_and_damage() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start_with(flavor, &[("appendonly", "yes"), ("appendfsync", "always")]);
    fill_before(&src);
    rewrite(&src);
    fill_after(&src);
    let big = "x".repeat(5000);
    cmd(&mut src.client(), &["SET", "last", &big]);
    let scratch = tempfile::tempdir().expect("tempdir");
    let torn = scratch.path().join("torn");
    copy_dir(&src.dir().join("appendonlydir"), &torn);
    let incr = incr_file(&torn);
    let len = std::fs::metadata(&incr).expect("incr").len();
    // Cut inside the 5000-byte value of the last command.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&incr)
        .expect("open");
    f.set_len(len - 1000).expect("truncate");
    drop(f);
    let data = std::fs::read(&incr).expect("read");
    let last_start = data
        .windows(11)
        .rposition(|w| w == b"*3\r\n$3\r\nSET")
        .expect("the SET's frame") as u64;

    let target = Server::start(flavor);
    let (code, err) = restore(&target, &[], &torn);
    assert_eq!(code, Some(1), "{err}");
    let name = incr.display().to_string();
    assert!(
        err.contains(&format!(
            "{name}: truncated command at offset {last_start} (a crash mid-write?); redis-check-aof --fix {name}, or --aof-truncated skip"
        )),
        "{err}"
    );
    assert_eq!(dbsize_all(&target), 0, "nothing written: {err}");

    let (code, err) = restore(&target, &["--aof-truncated", "skip"], &torn);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("skipped the truncated command at offset"),
        "{err}"
    );
    let reference = loaded_by_server(flavor, &torn, false);
    assert_eq!(
        cmd(&mut reference.client(), &["EXISTS", "last"]),
        redis::Value::Int(0),
        "the server cut the torn command too"
    );
    assert_same("a torn AOF, skipped", &reference, &target);

    // A damaged byte in the middle of the incremental file: an error with its offset.
    let damaged = scratch.path().join("damaged");
    copy_dir(&src.dir().join("appendonlydir"), &damaged);
    let incr = incr_file(&damaged);
    let mut data = std::fs::read(&incr).expect("read");
    // The start of the middle one of the commands (a `*` after a CRLF).
    let starts: Vec<usize> = data
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w.starts_with(b"\r\n*") && w[3].is_ascii_digit())
        .map(|(i, _)| i + 2)
        .collect();
    assert!(starts.len() > 10, "the incremental file has commands");
    let at = starts[starts.len() / 2];
    data[at] = b'!';
    std::fs::write(&incr, &data).expect("write");
    let target = Server::start(flavor);
    for extra in [&[][..], &["--aof-truncated", "skip"][..]] {
        let (code, err) = restore(&target, extra, &damaged);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!("not a valid AOF command at offset {at}")),
            "{err}"
        );
        assert_eq!(dbsize_all(&target), 0, "nothing written: {err}");
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Sleeps until the wall clock is in a later second than `t`.
fn past_second(t: u64) {
    while now_secs() <= t {
        sleep(Duration::from_millis(50));
    }
    // The server's clock (server.unixtime) moves in its cron: give it a tick.
    sleep(Duration::from_millis(250));
}

#[test]
fn aof_until_timestamps() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start_with(
        flavor,
        &[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("aof-timestamp-enabled", "yes"),
        ],
    );
    // The first writes go to the source and to a reference server; after a second boundary,
    // more writes go to the source only.
    let reference = Server::start(flavor);
    let started = now_secs();
    fill_before(&src);
    fill_before(&reference);
    let first_done = now_secs();
    past_second(first_done);
    fill_after(&src);
    let dir = src.dir().join("appendonlydir");
    let incr = std::fs::read(incr_file(&dir)).expect("incr");
    let annotations = incr.windows(4).filter(|w| w == b"#TS:").count();
    assert!(
        annotations >= 2,
        "the AOF has #TS: annotations on both sides"
    );
    assert!(first_done >= started);

    let until = first_done.to_string();
    let target = Server::start(flavor);
    let (code, err) = restore(&target, &["--until", &until], &dir);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("stopped at offset") && err.contains("the first #TS: after --until"),
        "{err}"
    );
    assert_same("--until unix seconds", &reference, &target);

    // RFC 3339 of the same second.
    let rfc = {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{first_done}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let target = Server::start(flavor);
    let (code, err) = restore(&target, &["--until", &rfc], &dir);
    assert_eq!(code, Some(0), "{err}");
    assert_same("--until RFC 3339", &reference, &target);

    // Without annotations: refused, naming the file and the setting.
    let plain = Server::start_with(flavor, &[("appendonly", "yes"), ("appendfsync", "always")]);
    fill_before(&plain);
    let pdir = plain.dir().join("appendonlydir");
    let target = Server::start(flavor);
    let (code, err) = restore(&target, &["--until", &until], &pdir);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no #TS: annotations")
            && err.contains("aof-timestamp-enabled yes")
            && err.contains(&incr_file(&pdir).display().to_string()),
        "{err}"
    );
    assert_eq!(dbsize_all(&target), 0);
}
