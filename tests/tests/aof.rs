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
//!   with an RDB preamble, plain AOFs of hashes with field TTLs) restored into a Redis 8.2, and
//!   decoded to RESP and replayed into another, each compared with a Redis 8.2 that loaded the
//!   same file itself.
//! - `aof_torn_tail_and_damage`: the incremental file of a Redis 7.0 AOF cut in the middle of
//!   its last command: by default exit 1 with the offset and the redis-check-aof hint, nothing
//!   written; with `--aof-truncated skip` everything before it is applied, and the target equals
//!   a Redis 7.0 that loaded the cut AOF itself (`aof-load-truncated yes`). A damaged byte in the
//!   middle is an error with its offset even with skip.
//! - `aof_until_timestamps`: real `#TS:` annotations (writes on both sides of a second
//!   boundary): `--until` (unix seconds, then RFC 3339) applies the first writes only, equal to
//!   the server's own load of its AOF cut at the first annotation later than TIME (a second
//!   server given the same writes differs in its relative TTLs by the time between them); an
//!   AOF without annotations and `--until` is refused naming the file and
//!   `aof-timestamp-enabled yes`.
//! - `aof_decode_redis70`, `aof_decode_redis82`, `aof_decode_valkey91`: shake-decode on the
//!   multi-part AOF (`aof-use-rdb-preamble` yes and no, `aof-timestamp-enabled yes`):
//!   `--format resp` piped by `redis-cli --pipe` into a fresh server equals a server that loaded
//!   the AOF itself; the incremental file's JSON records are the writes made after the rewrite
//!   (first key and database, in order), each `offset` at a command's first byte and each `ts`
//!   the file's last `#TS:` before it, and sent back as commands onto a server that loaded the
//!   base alone they give the same data; `--format keys` and `memory` refuse (exit 2, naming the
//!   input and the format, nothing written).
//! - `aof_decode_until_and_torn_tail` (7.0): `--until` as RESP equals what the server loads of
//!   its AOF cut at the first annotation later than TIME, and the JSON records are the full
//!   run's up to there (none later than TIME); a torn last command is exit 1 with its file and
//!   offset and every record before it; `--aof-truncated skip` as RESP equals the server's load
//!   of the cut AOF; `--key` is refused for commands.
//! - `aof_offsets_name_the_part_file` (7.0): a multi-part AOF with an AOF-form base (two
//!   command parts) whose incremental file's INCR the target refuses (WRONGTYPE): the message
//!   names the incremental file and an offset within it, after the INCR.
//! - `aof_decode_redis62_single_file`: shake-decode on Redis 6.2's one-file AOF with an RDB
//!   preamble: RESP piped into a fresh 6.2 equals a 6.2 that loaded the file; the JSON lines are
//!   the RDB part's keys, then command records of the same file naming the later writes in
//!   order; `--format keys` lists the RDB part's keys, then refuses the commands (exit 2).
//! - `rdb_with_bytes_after_its_checksum` (7.0): an RDB with bytes after its checksum that are
//!   not commands: shake-restore and shake-decode leave them unread with one line saying how
//!   many, the restore equals the source, the key list is complete (exit 0).
//! - `aof_preflight` (7.0): `shake-restore --preflight --json` on a multi-part AOF: the RDB
//!   base's `source.file` check, `source.aof` counting the writes made after the rewrite (in
//!   the incremental file, databases 0, 1, 3; db3 in `pair.databases`), a torn tail FAIL with
//!   its file and offset and exit 1, WARN under `--aof-truncated skip`, `--until` on an AOF
//!   without annotations FAIL naming `aof-timestamp-enabled yes`; the target stays empty.

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
        // shake-decode's RESP of it, replayed, holds the same.
        let resp = target.dir().join("decoded.resp");
        let (code, err, _) = decode(&["--format", "resp"], file, &resp);
        assert_eq!(code, Some(0), "{}: {err}", file.display());
        let replayed = Server::start(flavor);
        pipe_into(&replayed, &resp);
        assert_same(
            &format!("{} decoded", file.display()),
            &reference,
            &replayed,
        );
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

/// A server of `flavor` that loaded the multi-part AOF in `dir` cut at its incremental file's
/// first `#TS:` annotation later than `until`: what `--until` must give, as the server itself
/// reads it.
fn loaded_up_to(flavor: Flavor, dir: &Path, until: u64) -> Server {
    let scratch = tempfile::tempdir().expect("tempdir");
    let cut = scratch.path().join("cut");
    copy_dir(dir, &cut);
    let cut_incr = incr_file(&cut);
    let data = std::fs::read(&cut_incr).expect("incr");
    let later = data
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"#TS:")
        .map(|(i, _)| i)
        .find(|&i| {
            let line = &data[i + 4..];
            let end = line.iter().position(|&b| b == b'\r').expect("CRLF");
            let t: u64 = std::str::from_utf8(&line[..end]).unwrap().parse().unwrap();
            t > until
        })
        .expect("an annotation after the first writes");
    std::fs::write(&cut_incr, &data[..later]).expect("cut");
    loaded_by_server(flavor, &cut, false)
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
    // The first writes, then after a second boundary more writes. The reference is the
    // server's own load of its AOF cut at the first annotation after the first writes (a second
    // server given the same writes would differ in its relative TTLs by the time between).
    let started = now_secs();
    fill_before(&src);
    let first_done = now_secs();
    past_second(first_done);
    fill_after(&src);
    let dir = src.dir().join("appendonlydir");
    let reference = loaded_up_to(flavor, &dir, first_done);
    assert!(dbsize_all(&reference) > 10);
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

// ---------------------------------------------------------------------------------------------
// shake-decode on AOFs (docs/shake-decode.md#aof-input)

/// `shake-decode ARGS INPUT -o OUT`: exit code, stderr, and what it wrote.
fn decode(extra: &[&str], input: &Path, out: &Path) -> (Option<i32>, String, Vec<u8>) {
    let input = input.to_string_lossy().into_owned();
    let out_s = out.to_string_lossy().into_owned();
    let mut args = vec!["--quiet", "-o", &out_s];
    args.extend_from_slice(extra);
    args.push(&input);
    let _ = std::fs::remove_file(out);
    let (code, err) = run_tool("shake-decode", &args, &[]);
    let written = std::fs::read(out).unwrap_or_default();
    (code, err, written)
}

/// `redis-cli --pipe` of `resp` into `target`: every reply must be a success.
fn pipe_into(target: &Server, resp: &Path) {
    let out = std::process::Command::new(shake_tests::redis_cli())
        .arg("-p")
        .arg(target.port().to_string())
        .arg("--pipe")
        .stdin(std::fs::File::open(resp).expect("resp file"))
        .output()
        .expect("run redis-cli --pipe");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("errors: 0"),
        "redis-cli --pipe: {text}"
    );
}

/// The JSON lines of a decode, parsed.
fn records(jsonl: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(jsonl)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A byte string of the JSON lines format.
fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        _ => base64::engine::general_purpose::STANDARD
            .decode(v["base64"].as_str().expect("a byte string"))
            .expect("base64"),
    }
}

/// The first key and database of each write of `fill_after` (a transaction's writes between
/// its MULTI and EXEC), in order: what its incremental file's command records must name.
const AFTER_WRITES: &[(&str, u64)] = &[
    ("str", 0),
    ("counter", 0),
    ("float", 0),
    ("hash", 0),
    ("hash", 0),
    ("list", 0),
    ("list:big", 0),
    ("set", 0),
    ("zset", 0),
    ("zset", 0),
    ("stream", 0),
    ("stream2", 0),
    ("list", 0),
    ("set:big", 0),
    ("ttl:ex", 0),
    ("intset", 0),
    ("db1:a", 1),
    ("db1:b", 1),
    ("db3:h", 3),
    ("MULTI", 0),
    ("tx:a", 0),
    ("tx:l", 0),
    ("EXEC", 0),
];

/// A server of `flavor` that loaded the base file of the multi-part AOF in `dir` only (its
/// manifest without the incremental files).
fn base_only(flavor: Flavor, dir: &Path) -> Server {
    let scratch = tempfile::tempdir().expect("tempdir");
    let copy = scratch.path().join("base");
    copy_dir(dir, &copy);
    let manifest = copy.join("appendonly.aof.manifest");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("type i"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&manifest, kept).expect("manifest");
    loaded_by_server(flavor, &copy, false)
}

/// Sends the command records of `recs` from `file` (argv, in the database each names) to `s`.
fn apply_records(s: &Server, recs: &[&serde_json::Value]) {
    let mut c = s.client();
    for r in recs {
        let argv: Vec<Vec<u8>> = r["argv"]
            .as_array()
            .expect("argv")
            .iter()
            .map(json_bytes)
            .collect();
        let db = r["db"].as_u64().expect("db").to_string();
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
        if name != "MULTI" && name != "EXEC" {
            redis::cmd("SELECT")
                .arg(&db)
                .query::<()>(&mut c)
                .expect("SELECT");
        }
        let mut q = redis::cmd(&name);
        for a in &argv[1..] {
            q.arg(a.as_slice());
        }
        q.query::<redis::Value>(&mut c)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn aof_decode(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = scratch.path().join("out");
    for preamble in ["yes", "no"] {
        let tag = format!("{flavor} aof-use-rdb-preamble {preamble}");
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
        let reference = loaded_by_server(flavor, &dir, false);
        assert!(dbsize_all(&reference) > 10, "{tag}");

        // RESP: piped into a fresh server, it gives what the server made of its own AOF.
        let (code, err, resp) = decode(&["--format", "resp"], &dir, &out);
        assert_eq!(code, Some(0), "{tag}: {err}");
        assert!(resp.starts_with(b"*"), "{tag}: RESP output");
        let target = Server::start(flavor);
        pipe_into(&target, &out);
        assert_same(&format!("{tag}: decoded as RESP"), &reference, &target);

        // JSON lines: the incremental file's records are the writes made after the rewrite,
        // in order, each in its database; sent back as commands onto the base alone they give
        // the whole AOF's data.
        let (code, err, jsonl) = decode(&[], &dir, &out);
        assert_eq!(code, Some(0), "{tag}: {err}");
        let recs = records(&jsonl);
        let incr = incr_file(&dir).display().to_string();
        let after: Vec<&serde_json::Value> = recs
            .iter()
            .filter(|r| r["file"].as_str() == Some(incr.as_str()))
            .collect();
        let named: Vec<(String, u64)> = after
            .iter()
            .map(|r| {
                let argv = r["argv"].as_array().expect("argv");
                let name = argv[0].as_str().unwrap_or_default().to_ascii_uppercase();
                // A transaction's bounds: the database is not theirs (7.0 writes the SELECT
                // before the MULTI, 8.2 and Valkey 9.1 after it).
                if name == "MULTI" || name == "EXEC" {
                    return (name, 0);
                }
                let key = String::from_utf8_lossy(&json_bytes(&argv[1])).into_owned();
                (key, r["db"].as_u64().expect("db"))
            })
            .collect();
        let want: Vec<(String, u64)> = AFTER_WRITES
            .iter()
            .map(|(k, db)| (k.to_string(), *db))
            .collect();
        assert_eq!(named, want, "{tag}: the incremental file's records");
        let data = std::fs::read(&incr).expect("incr");
        for r in &after {
            // `offset` is where the command starts in `file`; `ts` its #TS: annotation.
            let at = r["offset"].as_u64().expect("offset") as usize;
            assert_eq!(data.get(at), Some(&b'*'), "{tag}: {r}");
            // The file's last annotation before it; before the first one (the server writes
            // one when the second changes) the time is the previous file's, if it had one.
            let before = &data[..at];
            match before.windows(4).rposition(|w| w == b"#TS:") {
                Some(i) => {
                    let line = &before[i + 4..];
                    let end = line.iter().position(|&b| b == b'\r').expect("CRLF");
                    let ts: i64 = std::str::from_utf8(&line[..end]).unwrap().parse().unwrap();
                    assert_eq!(r["ts"].as_i64(), Some(ts), "{tag}: {r}");
                }
                None => assert!(r["ts"].is_null() || r["ts"].as_i64().is_some(), "{r}"),
            }
        }
        assert!(
            after.iter().any(|r| r["ts"].as_i64().is_some()) || preamble == "yes",
            "{tag}: records with a time"
        );
        if preamble == "yes" {
            // The base is an RDB: key records, then the commands.
            assert!(recs[0].get("key").is_some(), "{tag}: {}", recs[0]);
            assert_eq!(
                after.len(),
                recs.iter().filter(|r| r.get("argv").is_some()).count()
            );
        } else {
            let base = recs
                .iter()
                .filter(|r| r["file"].as_str().is_some_and(|f| f.ends_with(".base.aof")))
                .count();
            assert!(
                base > 10,
                "{tag}: the AOF-form base's commands are records too"
            );
        }
        let replayed = base_only(flavor, &dir);
        apply_records(&replayed, &after);
        assert_same(
            &format!("{tag}: base + JSON records"),
            &reference,
            &replayed,
        );

        // Formats that describe keys refuse the commands, naming the format, the input and what
        // to use instead.
        for format in ["keys", "memory"] {
            let (code, err, written) = decode(&["--format", format], &dir, &out);
            assert_eq!(code, Some(2), "{tag} {format}: {err}");
            assert!(
                err.contains(&dir.display().to_string())
                    && err.contains(&format!("--format {format}"))
                    && err.contains("use --format jsonl"),
                "{err}"
            );
            assert!(written.is_empty(), "nothing written");
        }
    }
}

#[test]
fn aof_decode_redis70() {
    aof_decode(Flavor::Redis70);
}

#[test]
fn aof_decode_redis82() {
    aof_decode(Flavor::Redis82);
}

#[test]
fn aof_decode_valkey91() {
    aof_decode(Flavor::Valkey91);
}

#[test]
fn aof_decode_until_and_torn_tail() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = scratch.path().join("out");
    let src = Server::start_with(
        flavor,
        &[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("aof-timestamp-enabled", "yes"),
        ],
    );
    fill_before(&src);
    let first_done = now_secs();
    past_second(first_done);
    fill_after(&src);
    let big = "x".repeat(5000);
    cmd(&mut src.client(), &["SET", "last", &big]);
    let dir = src.dir().join("appendonlydir");
    let until = first_done.to_string();
    // What the server makes of its AOF cut at the first annotation later than TIME.
    let reference = loaded_up_to(flavor, &dir, first_done);
    assert!(dbsize_all(&reference) > 10);

    // --until: the RESP output is the first writes only.
    let (code, err, _) = decode(&["--format", "resp", "--until", &until], &dir, &out);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("stopped at offset") && err.contains("the first #TS: after --until"),
        "{err}"
    );
    let target = Server::start(flavor);
    pipe_into(&target, &out);
    assert_same("decode --until as RESP", &reference, &target);
    // The JSON lines stop at the same place: no record is later than TIME.
    let (code, err, all) = decode(&[], &dir, &out);
    assert_eq!(code, Some(0), "{err}");
    let (code, err, upto) = decode(&["--until", &until], &dir, &out);
    assert_eq!(code, Some(0), "{err}");
    let (all, upto) = (records(&all), records(&upto));
    assert!(upto.len() < all.len(), "--until left commands out");
    assert_eq!(all[..upto.len()], upto[..], "the same records up to there");
    assert!(upto
        .iter()
        .all(|r| r["ts"].as_i64().is_some_and(|t| t <= first_done as i64)));
    assert!(all[upto.len()..]
        .iter()
        .all(|r| r["ts"].as_i64().is_some_and(|t| t > first_done as i64)));

    // A torn last command: its file and offset, exit 1, the records before it written.
    let torn = scratch.path().join("torn");
    copy_dir(&dir, &torn);
    let incr = incr_file(&torn);
    let len = std::fs::metadata(&incr).expect("incr").len();
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
    let name = incr.display().to_string();
    let (code, err, written) = decode(&[], &torn, &out);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{name}: truncated command at offset {last_start} (a crash mid-write?)"
        )),
        "{err}"
    );
    assert_eq!(
        records(&written).len(),
        all.len() - 1,
        "every record before the torn one"
    );
    let (code, err, _) = decode(
        &["--format", "resp", "--aof-truncated", "skip"],
        &torn,
        &out,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "{name}: skipped the truncated command at offset {last_start}"
        )),
        "{err}"
    );
    let target = Server::start(flavor);
    pipe_into(&target, &out);
    let loaded = loaded_by_server(flavor, &torn, false);
    assert_same("decode of a torn AOF, skipped", &loaded, &target);

    // Key filters choose an RDB's keys, not commands.
    let (code, err, _) = decode(&["--key", "str*"], &dir, &out);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--key") && err.contains(&dir.display().to_string()),
        "{err}"
    );
}

/// `shake-restore --preflight --json` on `input`: exit code and the checks by name.
fn preflight(
    target: &Server,
    extra: &[&str],
    input: &Path,
) -> (Option<i32>, Vec<serde_json::Value>) {
    let url = target.url();
    let input = input.to_string_lossy().into_owned();
    let mut args = vec!["--target", url.as_str(), "--preflight", "--json"];
    args.extend_from_slice(extra);
    args.push(&input);
    let out = std::process::Command::new(shake_tests::tool_binary("shake-restore"))
        .args(&args)
        .env_remove("SHAKE_TARGET")
        .output()
        .expect("run shake-restore --preflight");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code(),
        doc["checks"].as_array().cloned().unwrap_or_default(),
    )
}

fn check_named<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {checks:?}"))
}

#[test]
fn aof_preflight() {
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
    fill_before(&src);
    rewrite(&src);
    // A new second: the server annotates the incremental file's first command with it.
    past_second(now_secs());
    fill_after(&src);
    let dir = src.dir().join("appendonlydir");
    let incr = incr_file(&dir).display().to_string();
    let target = Server::start(flavor);

    // The base's RDB checks as for any RDB, the commands counted: the writes after the rewrite.
    let (code, checks) = preflight(&target, &[], &dir);
    assert_eq!(code, Some(0), "{checks:?}");
    let file = check_named(&checks, "source.file");
    assert!(
        file["found"]
            .as_str()
            .unwrap()
            .contains(".base.rdb: REDIS RDB 10"),
        "{file}"
    );
    let aof = check_named(&checks, "source.aof");
    assert_eq!(aof["status"], "ok", "{aof}");
    let found = aof["found"].as_str().unwrap();
    assert!(
        found.starts_with(&format!("{} AOF commands to apply", AFTER_WRITES.len()))
            && found.contains(&format!("{incr}: {}", AFTER_WRITES.len()))
            && found.contains("databases 0, 1, 3")
            && found.contains("written 20"),
        "{found}"
    );
    // The commands' databases reach the database check.
    let dbs = check_named(&checks, "pair.databases");
    assert!(dbs["found"].as_str().unwrap().contains("db3"), "{dbs}");

    // A torn tail: FAIL with the file and offset (exit 1); under skip a WARN.
    let scratch = tempfile::tempdir().expect("tempdir");
    let torn = scratch.path().join("torn");
    copy_dir(&dir, &torn);
    let torn_incr = incr_file(&torn);
    let len = std::fs::metadata(&torn_incr).expect("incr").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&torn_incr)
        .expect("open");
    f.set_len(len - 3).expect("truncate");
    drop(f);
    let name = torn_incr.display().to_string();
    let (code, checks) = preflight(&target, &[], &torn);
    assert_eq!(code, Some(1), "{checks:?}");
    let aof = check_named(&checks, "source.aof");
    assert_eq!(aof["status"], "fail", "{aof}");
    let found = aof["found"].as_str().unwrap();
    assert!(
        found.starts_with(&format!("{name}: truncated command at offset ")),
        "{found}"
    );
    let (code, checks) = preflight(&target, &["--aof-truncated", "skip"], &torn);
    assert_eq!(code, Some(0), "{checks:?}");
    let aof = check_named(&checks, "source.aof");
    assert_eq!(aof["status"], "warn", "{aof}");
    assert!(
        aof["found"]
            .as_str()
            .unwrap()
            .contains(&format!("{name}: skipped the truncated command at offset")),
        "{aof}"
    );

    // --until on an AOF without annotations: FAIL naming the setting.
    let plain = Server::start_with(flavor, &[("appendonly", "yes"), ("appendfsync", "always")]);
    fill_before(&plain);
    let (code, checks) = preflight(
        &target,
        &["--until", "1700000000"],
        &plain.dir().join("appendonlydir"),
    );
    assert_eq!(code, Some(1), "{checks:?}");
    let aof = check_named(&checks, "source.aof");
    assert!(
        aof["status"] == "fail"
            && aof["advice"]
                .as_str()
                .unwrap()
                .contains("aof-timestamp-enabled yes"),
        "{aof}"
    );
    assert_eq!(dbsize_all(&target), 0, "preflight writes nothing");
}

#[test]
fn aof_offsets_name_the_part_file() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    // An AOF-form base: two command parts, whose offsets the applier counts across both.
    let src = Server::start_with(
        flavor,
        &[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("aof-use-rdb-preamble", "no"),
        ],
    );
    fill_before(&src);
    rewrite(&src);
    fill_after(&src);
    let dir = src.dir().join("appendonlydir");
    let incr = incr_file(&dir);
    let data = std::fs::read(&incr).expect("incr");
    let frame = b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n";
    let at = data
        .windows(frame.len())
        .position(|w| w == frame)
        .expect("the INCR in the incremental file");
    // The target holds `counter` as a list: the INCR is refused, and the message names the
    // incremental file and an offset in it: the end of the batch of commands the INCR went in
    // (after the INCR, within the file), not one counted across the two parts.
    let target = Server::start(flavor);
    cmd(&mut target.client(), &["RPUSH", "counter", "x"]);
    let (code, err) = restore(&target, &[], &dir);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("WRONGTYPE"), "{err}");
    let of = format!(" of {})", incr.display());
    let head = &err[..err.find(&of).unwrap_or_else(|| panic!("{of}: {err}"))];
    let named: usize = head
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("an offset before {of}: {err}"));
    assert!(
        (at + frame.len()..=data.len()).contains(&named),
        "offset {named} of the incremental file: after the INCR ({at}), within its {} bytes: {err}",
        data.len()
    );
}

#[test]
fn aof_decode_redis62_single_file() {
    let flavor = Flavor::Redis62;
    if !require(flavor) {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = scratch.path().join("out");
    // One file with an RDB preamble: BGREWRITEAOF, then writes after it.
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
    let reference = loaded_by_server(flavor, &aof, true);
    let (code, err, _) = decode(&["--format", "resp"], &aof, &out);
    assert_eq!(code, Some(0), "{err}");
    let target = Server::start(flavor);
    pipe_into(&target, &out);
    assert_same(
        "6.2 AOF with preamble, decoded as RESP",
        &reference,
        &target,
    );

    // JSON lines: the RDB part's keys, then the commands after it, in the same file.
    let (code, err, jsonl) = decode(&[], &aof, &out);
    assert_eq!(code, Some(0), "{err}");
    let recs = records(&jsonl);
    let first_cmd = recs
        .iter()
        .position(|r| r.get("argv").is_some())
        .expect("command records");
    assert!(first_cmd > 10 && recs[..first_cmd].iter().all(|r| r.get("key").is_some()));
    let cmds = &recs[first_cmd..];
    assert!(cmds.iter().all(|r| r["file"] == aof.display().to_string()));
    let named: Vec<String> = cmds
        .iter()
        .filter_map(|r| {
            let argv = r["argv"].as_array()?;
            let name = argv[0].as_str()?.to_ascii_uppercase();
            Some(if name == "MULTI" || name == "EXEC" {
                name
            } else {
                String::from_utf8_lossy(&json_bytes(&argv[1])).into_owned()
            })
        })
        .collect();
    let want: Vec<String> = AFTER_WRITES.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        named, want,
        "the commands after the preamble are the later writes"
    );

    // The key list: the RDB part's keys are listed, then the commands after it are refused.
    let (code, err, listed) = decode(&["--format", "keys"], &aof, &out);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}: AOF commands follow its RDB part from offset",
            aof.display()
        )) && err.contains("--format keys"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&listed).lines().count(),
        first_cmd,
        "the RDB part's keys were listed"
    );
}

#[test]
fn rdb_with_bytes_after_its_checksum() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let src = Server::start(flavor);
    fill_before(&src);
    let rdb = src.save();
    let scratch = tempfile::tempdir().expect("tempdir");
    let padded = scratch.path().join("padded.rdb");
    let mut bytes = std::fs::read(&rdb).expect("dump.rdb");
    let end = bytes.len();
    let junk = b"\x00\x00junk left by a copy tool";
    bytes.extend_from_slice(junk);
    std::fs::write(&padded, &bytes).expect("write");
    // Not AOF commands (no `*` or `#`): not read, one line says so; the RDB is used.
    let target = Server::start(flavor);
    let (code, err) = run_tool(
        "shake-restore",
        &["--target", &target.url(), padded.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let note = format!(
        "{}: the {} bytes after the RDB's end (offset {end}) are not AOF commands; not read",
        padded.display(),
        junk.len()
    );
    assert!(err.contains(&note), "{note}: {err}");
    assert_same("an RDB with bytes after it", &src, &target);
    let out = scratch.path().join("keys");
    let (code, err, listed) = decode(&["--format", "keys"], &padded, &out);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&note.replace("shake-restore", "shake-decode")),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&listed).lines().count() as u64,
        dbsize_all(&src)
    );
}
