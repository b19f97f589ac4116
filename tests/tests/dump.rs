//! `shake-dump` against real servers: the RDB it writes is the source's data, byte for byte a
//! valid RDB, loadable by the same server version, and nothing is left behind when it fails.
//!
//! - every flavor (Redis 6.2, Redis 7.0, Valkey 8.1, Valkey 9.1) with `repl-diskless-sync` yes
//!   and no: the file ends exactly with its CRC-64 trailer (no end mark, no trailing bytes), a
//!   fresh server of the same version loads it natively with identical data (and functions),
//!   `shake-decode` reads it with identical data, and `shake-dump -o - | shake-decode -` and
//!   `shake-dump -o - | shake-restore --target URL -` (into an empty server of the same version)
//!   reproduce the source;
//! - a password in the URL or in SHAKE_SOURCE_PASSWORD; an ACL user; a wrong or missing password
//!   and a user without +psync give a one-line error and no file;
//! - the source killed mid-transfer (diskless, slowed by `rdb-key-save-delay`) and while it is
//!   still writing its snapshot (disk-based): exit 1, an error naming the bytes received, no file;
//! - a three-master cluster dumped into a directory: one file per master named by host and port,
//!   together every key, each file only its master's keys; `-o -` and `-o FILE` on a cluster are
//!   usage errors; `--single-node` dumps one node;
//! - `--functions-only` on 7.0+ (functions, no keys) and its clear refusal on 6.2;
//! - a renamed PSYNC (`--psync-command`), the SYNC fall-back, and the refusal message when both
//!   are gone;
//! - `--help` and usage errors.
//!
//! `cargo test -p shake-tests` does not build other packages' binaries: build them first
//! (`cargo build -p shake-dump -p shake-decode -p shake-restore`, or `cargo test --workspace` /
//! `scripts/test`).

mod live_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use live_common::*;
use shake_tests::{require, Cluster, Flavor, Server, CLUSTER_SLOT_RANGES};

// ---------------------------------------------------------------------------------------------
// Binaries

/// A binary of another workspace package, beside the test executable (`target/<profile>/`).
fn bin(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("current_exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{name} is not built at {}: run `cargo build -p shake-dump -p shake-decode -p shake-restore` \
         first (or `cargo test --workspace`)",
        path.display()
    );
    path
}

fn dump_cmd() -> Command {
    let mut c = Command::new(bin("shake-dump"));
    c.env_remove("RUST_BACKTRACE")
        .env_remove("SHAKE_SOURCE_PASSWORD")
        .stdin(Stdio::null());
    c
}

/// Runs shake-dump with `args`; returns its output (status not checked).
fn dump(args: &[&str]) -> Output {
    dump_cmd().args(args).output().expect("run shake-dump")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs shake-dump and insists on success; returns stderr.
fn dump_ok(ctx: &str, args: &[&str]) -> String {
    let out = dump(args);
    assert!(
        out.status.success(),
        "[{ctx}] shake-dump {args:?} exited {}: {}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// Runs shake-dump expecting exit `code`; returns stderr (which must be one line).
fn dump_fails(ctx: &str, code: i32, args: &[&str]) -> String {
    let out = dump(args);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "[{ctx}] shake-dump {args:?}: expected exit {code}, got {}; stderr: {err}",
        out.status
    );
    assert_one_line_error(ctx, &err);
    err
}

fn assert_one_line_error(ctx: &str, err: &str) {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "[{ctx}] expected a one-line error, got: {err}"
    );
    assert!(
        lines[0].starts_with("shake-dump: ") && !err.contains("panicked"),
        "[{ctx}] {err}"
    );
}

fn decode_jsonl(ctx: &str, rdb: &Path) -> String {
    let out = Command::new(bin("shake-decode"))
        .arg(rdb)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run shake-decode");
    assert!(
        out.status.success(),
        "[{ctx}] shake-decode {} exited {}: {}",
        rdb.display(),
        out.status,
        text(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("[{ctx}] non-UTF-8 JSON: {e}"))
}

/// `shake-dump -o - ... | shake-decode -`: both must succeed; returns the JSON lines.
fn dump_pipe_decode(ctx: &str, dump_args: &[&str]) -> String {
    let mut decode = Command::new(bin("shake-decode"));
    decode.arg("-");
    let out = dump_pipe(ctx, dump_args, decode);
    String::from_utf8(out).expect("UTF-8 JSON")
}

/// `shake-dump -o - ... | <reader>`: both must succeed; returns the reader's stdout.
fn dump_pipe(ctx: &str, dump_args: &[&str], mut reader: Command) -> Vec<u8> {
    let mut d = dump_cmd()
        .args(dump_args)
        .args(["-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shake-dump");
    let dump_out = d.stdout.take().expect("piped stdout");
    let dec = reader
        .env_remove("RUST_BACKTRACE")
        .stdin(dump_out)
        .output()
        .expect("run the reader of shake-dump's stdout");
    let d = d.wait_with_output().expect("wait for shake-dump");
    assert!(
        d.status.success(),
        "[{ctx}] shake-dump -o - exited {}: {}",
        d.status,
        text(&d.stderr)
    );
    assert!(
        dec.status.success(),
        "[{ctx}] {:?} exited {}: {}",
        reader.get_program(),
        dec.status,
        text(&dec.stderr)
    );
    dec.stdout
}

// ---------------------------------------------------------------------------------------------
// Checks on the file itself

/// The RDB file is one RDB and nothing else: the right magic, and its last 8 bytes are the
/// CRC-64 of everything before them (so no end mark and no trailing byte was written).
fn assert_exact_rdb(ctx: &str, path: &Path) {
    let b = fs::read(path).unwrap_or_else(|e| panic!("[{ctx}] read {}: {e}", path.display()));
    assert!(
        b.starts_with(b"REDIS") || b.starts_with(b"VALKEY"),
        "[{ctx}] {} starts with {:?}",
        path.display(),
        text(&b[..b.len().min(9)])
    );
    assert!(b.len() > 9 + 8, "[{ctx}] {} is too short", path.display());
    let (body, trailer) = b.split_at(b.len() - 8);
    let stored = u64::from_le_bytes(trailer.try_into().expect("8 bytes"));
    assert_eq!(
        stored,
        shake_core::crc64::crc64(body),
        "[{ctx}] {}: the last 8 bytes are not the CRC-64 of the rest: trailing bytes or a damaged transfer",
        path.display()
    );
    assert_eq!(
        body.last(),
        Some(&0xff),
        "[{ctx}] no EOF opcode before the trailer"
    );
}

fn assert_no_leftovers(ctx: &str, dir: &Path) {
    let parts: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(
        parts.is_empty(),
        "[{ctx}] partial files left behind: {parts:?}"
    );
}

/// Starts a fresh server of `flavor` that loads `rdb` at startup (as its dump.rdb).
fn server_loading(flavor: Flavor, rdb: &Path) -> Server {
    let mut s = Server::start(flavor);
    fs::copy(rdb, s.rdb_path()).expect("copy the dump into the server's dir");
    // The rig's servers have no save points, so the shutdown does not overwrite the file.
    s.restart();
    s
}

// ---------------------------------------------------------------------------------------------
// Data

fn cmd(con: &mut redis::Connection, c: &mut redis::Cmd) {
    let _: redis::Value = q(con, c);
}

const FUNCTION_LIB: &str =
    "#!lua name=dumplib\nredis.register_function('dumpf', function(keys, args) return #keys end)";

/// Every type in its small and large encodings, TTLs, several databases, functions (7.0+) and
/// hash field TTLs (Valkey 9.1): enough for a transfer of several hundred kB.
fn fill(con: &mut redis::Connection, flavor: Flavor) {
    let far = now_ms() + 86_400_000;
    cmd(con, redis::cmd("SET").arg("str:int").arg("12345"));
    cmd(con, redis::cmd("SET").arg("str:short").arg("hello"));
    cmd(
        con,
        redis::cmd("SET").arg("str:lzf").arg("abc".repeat(5000)),
    );
    cmd(
        con,
        redis::cmd("SET")
            .arg("str:bin")
            .arg((0..=255u8).collect::<Vec<u8>>()),
    );
    cmd(con, redis::cmd("SET").arg(&b"key\xff\x00bin"[..]).arg("v"));
    cmd(
        con,
        redis::cmd("SET")
            .arg("str:ttl")
            .arg("t")
            .arg("PXAT")
            .arg(far),
    );
    cmd(
        con,
        redis::cmd("RPUSH")
            .arg("list:small")
            .arg(&["a", "b", "1", "2"]),
    );
    let big: Vec<String> = (0..20_000).map(|i| format!("element-{i}")).collect();
    for chunk in big.chunks(1000) {
        cmd(con, redis::cmd("RPUSH").arg("list:big").arg(chunk));
    }
    cmd(con, redis::cmd("PEXPIREAT").arg("list:big").arg(far));
    cmd(
        con,
        redis::cmd("SADD")
            .arg("set:int")
            .arg((1..100).collect::<Vec<i32>>()),
    );
    cmd(
        con,
        redis::cmd("SADD").arg("set:small").arg(&["x", "y", "z"]),
    );
    let members: Vec<String> = (0..3000).map(|i| format!("member-{i}")).collect();
    cmd(con, redis::cmd("SADD").arg("set:big").arg(&members));
    cmd(
        con,
        redis::cmd("ZADD")
            .arg("zset:small")
            .arg(&["1", "a", "2.5", "b", "-inf", "c"]),
    );
    let mut z = redis::cmd("ZADD");
    z.arg("zset:big");
    for i in 0..2000 {
        z.arg(i as f64 * 1.000_1 - 77.3).arg(format!("m{i}"));
    }
    cmd(con, &mut z);
    cmd(
        con,
        redis::cmd("HSET")
            .arg("hash:small")
            .arg(&["f1", "v1", "f2", "2"]),
    );
    let mut h = redis::cmd("HSET");
    h.arg("hash:big");
    for i in 0..2000 {
        h.arg(format!("field-{i}")).arg(format!("value-{}", i * 7));
    }
    cmd(con, &mut h);
    for i in 0..200 {
        cmd(
            con,
            redis::cmd("XADD")
                .arg("stream")
                .arg(format!("{}-1", 1000 + i))
                .arg("n")
                .arg(i)
                .arg("payload")
                .arg("p".repeat(i % 50)),
        );
    }
    cmd(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream")
            .arg("g1")
            .arg("0"),
    );
    cmd(
        con,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g1")
            .arg("alice")
            .arg("COUNT")
            .arg(5)
            .arg("STREAMS")
            .arg("stream")
            .arg(">"),
    );
    cmd(
        con,
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(5000)
            .arg("pop")
            .arg(64),
    );
    for db in [1, 5] {
        cmd(con, redis::cmd("SELECT").arg(db));
        cmd(con, redis::cmd("SET").arg(format!("in-db-{db}")).arg(db));
        cmd(con, redis::cmd("HSET").arg("h").arg("db").arg(db));
    }
    cmd(con, redis::cmd("SELECT").arg(0));
    if flavor.is_7_0_or_later() {
        cmd(con, redis::cmd("FUNCTION").arg("LOAD").arg(FUNCTION_LIB));
    }
    if flavor == Flavor::Valkey91 {
        cmd(
            con,
            redis::cmd("HSET")
                .arg("hash:fttl")
                .arg(&["a", "1", "b", "2"]),
        );
        cmd(
            con,
            redis::cmd("HPEXPIREAT")
                .arg("hash:fttl")
                .arg(far)
                .arg("FIELDS")
                .arg(1)
                .arg("a"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every flavor, disk-based and diskless

fn roundtrip(flavor: Flavor, diskless: bool) {
    if !require(flavor) {
        return;
    }
    let mode = if diskless { "diskless" } else { "disk-based" };
    let ctx = format!("{flavor} {mode}");
    let source = Server::start_with(
        flavor,
        &[("repl-diskless-sync", if diskless { "yes" } else { "no" })],
    );
    let mut con = source.client();
    fill(&mut con, flavor);
    let want = snapshot(&mut con);
    let want_functions = if flavor.is_7_0_or_later() {
        function_libraries(&mut con)
    } else {
        Vec::new()
    };

    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("dump.rdb");
    let url = source.url();
    let file_arg = file.to_str().expect("UTF-8 path");
    let err = dump_ok(&ctx, &["--source", &url, "-o", file_arg]);
    assert!(err.contains("checksum verified"), "[{ctx}] summary: {err}");
    assert!(
        err.contains(&format!("{mode} transfer")),
        "[{ctx}] summary: {err}"
    );
    // Valkey 9.1 sends its own format only to a replica that announces a 9.x version; the
    // hash field TTLs in the data would fail the older one.
    if flavor == Flavor::Valkey91 {
        assert!(err.contains("RDB VALKEY 80"), "[{ctx}] summary: {err}");
    }
    assert_no_leftovers(&ctx, tmp.path());
    assert_exact_rdb(&ctx, &file);

    // shake-decode reads it, with the source's data.
    let decoded = snapshot_from_jsonl(&decode_jsonl(&ctx, &file));
    assert_no_diffs(
        &format!("[{ctx}] source vs shake-decode of the dump"),
        &compare(
            "source",
            &want,
            "decoded",
            &decoded,
            Profile::exact(&want, &decoded),
        ),
    );

    // The same server version loads it natively, with the same data and functions.
    let loaded = server_loading(flavor, &file);
    let mut lcon = loaded.client();
    let got = snapshot(&mut lcon);
    assert_no_diffs(
        &format!("[{ctx}] source vs a {flavor} server that loaded the dump"),
        &compare("source", &want, "loaded", &got, Profile::exact(&want, &got)),
    );
    if flavor.is_7_0_or_later() {
        assert_eq!(
            function_libraries(&mut lcon),
            want_functions,
            "[{ctx}] functions"
        );
    }

    // Through a pipe, into shake-decode.
    let piped = snapshot_from_jsonl(&dump_pipe_decode(&ctx, &["--source", &url, "-q"]));
    assert_no_diffs(
        &format!("[{ctx}] source vs shake-dump -o - | shake-decode -"),
        &compare(
            "source",
            &want,
            "piped",
            &piped,
            Profile::exact(&want, &piped),
        ),
    );

    // Through a pipe, into shake-restore on an empty server of the same version.
    let target = Server::start(flavor);
    let mut restore = Command::new(bin("shake-restore"));
    restore.args(["--target", &target.url(), "-q", "-"]);
    dump_pipe(&ctx, &["--source", &url, "-q"], restore);
    let mut tcon = target.client();
    let restored = snapshot(&mut tcon);
    assert_no_diffs(
        &format!("[{ctx}] source vs shake-dump -o - | shake-restore -"),
        &compare(
            "source",
            &want,
            "restored",
            &restored,
            Profile::exact(&want, &restored),
        ),
    );
    if flavor.is_7_0_or_later() {
        assert_eq!(
            function_libraries(&mut tcon),
            want_functions,
            "[{ctx}] functions through shake-restore"
        );
    }
}

#[test]
fn dump_redis_6_2_disk() {
    roundtrip(Flavor::Redis62, false);
}
#[test]
fn dump_redis_6_2_diskless() {
    roundtrip(Flavor::Redis62, true);
}
#[test]
fn dump_redis_7_0_disk() {
    roundtrip(Flavor::Redis70, false);
}
#[test]
fn dump_redis_7_0_diskless() {
    roundtrip(Flavor::Redis70, true);
}
#[test]
fn dump_valkey_8_1_disk() {
    roundtrip(Flavor::Valkey81, false);
}
#[test]
fn dump_valkey_8_1_diskless() {
    roundtrip(Flavor::Valkey81, true);
}
#[test]
fn dump_valkey_9_1_disk() {
    roundtrip(Flavor::Valkey91, false);
}
#[test]
fn dump_valkey_9_1_diskless() {
    roundtrip(Flavor::Valkey91, true);
}

// ---------------------------------------------------------------------------------------------
// Logins

#[test]
fn password_sources_and_wrong_passwords() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let source = Server::start_with(flavor, &[("requirepass", "s3cret:@/x")]);
    let mut con = source.client();
    cmd(&mut con, redis::cmd("SET").arg("k").arg("v"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("pw.rdb");
    let f = file.to_str().expect("UTF-8 path");

    // In the URL (percent-encoded by the rig).
    dump_ok(
        "password in URL",
        &["--source", &source.url_with_password(), "-o", f],
    );
    assert_exact_rdb("password in URL", &file);
    fs::remove_file(&file).expect("rm");

    // From the environment.
    let out = dump_cmd()
        .args(["--source", &source.url(), "-o", f])
        .env("SHAKE_SOURCE_PASSWORD", "s3cret:@/x")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "password from env: {}",
        text(&out.stderr)
    );
    assert_exact_rdb("password from env", &file);
    fs::remove_file(&file).expect("rm");

    // Wrong password: one line naming the endpoint, no file.
    let url = format!("redis://:Zq9notit@127.0.0.1:{}", source.port());
    let err = dump_fails("wrong password", 1, &["--source", &url, "-o", f]);
    assert!(
        err.contains("authentication failed")
            && err.contains(&format!("127.0.0.1:{}", source.port())),
        "wrong password: {err}"
    );
    assert!(
        !err.contains("Zq9notit"),
        "the password must not be printed: {err}"
    );
    // No password at all.
    let err = dump_fails("no password", 1, &["--source", &source.url(), "-o", f]);
    assert!(err.contains("SHAKE_SOURCE_PASSWORD"), "no password: {err}");
    assert!(!file.exists(), "a failed dump left {}", file.display());
    assert_no_leftovers("passwords", tmp.path());
}

#[test]
fn acl_users() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let source = Server::start(flavor);
    let mut con = source.client();
    cmd(&mut con, redis::cmd("SET").arg("k").arg("v"));
    cmd(
        &mut con,
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("dumper")
            .arg("on")
            .arg(">dpw")
            .arg("+replconf")
            .arg("+psync")
            .arg("+info"),
    );
    cmd(
        &mut con,
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("reader")
            .arg("on")
            .arg(">rpw")
            .arg("+info")
            .arg("+replconf")
            .arg("+get"),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("acl.rdb");
    let f = file.to_str().expect("UTF-8 path");
    let port = source.port();

    let url = format!("redis://dumper:dpw@127.0.0.1:{port}");
    dump_ok("ACL user", &["--source", &url, "-o", f]);
    assert_exact_rdb("ACL user", &file);
    fs::remove_file(&file).expect("rm");

    // The user in the URL, the password from the environment.
    let out = dump_cmd()
        .args([
            "--source",
            &format!("redis://dumper:@127.0.0.1:{port}"),
            "-o",
            f,
        ])
        .env("SHAKE_SOURCE_PASSWORD", "dpw")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "ACL user, password from env: {}",
        text(&out.stderr)
    );
    assert_exact_rdb("ACL user, password from env", &file);
    fs::remove_file(&file).expect("rm");

    // A replication-only user cannot run INFO: it must say what the source is.
    cmd(
        &mut con,
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("replonly")
            .arg("on")
            .arg(">opw")
            .arg("+replconf")
            .arg("+psync"),
    );
    let url = format!("redis://replonly:opw@127.0.0.1:{port}");
    let err = dump_fails("ACL user without +info", 1, &["--source", &url, "-o", f]);
    assert!(err.contains("--no-source-cluster"), "{err}");
    dump_ok(
        "ACL user without +info, --single-node",
        &["--source", &url, "--single-node", "-o", f],
    );
    assert_exact_rdb("ACL user without +info", &file);
    fs::remove_file(&file).expect("rm");

    let url = format!("redis://reader:rpw@127.0.0.1:{port}");
    let err = dump_fails("ACL user without +psync", 1, &["--source", &url, "-o", f]);
    assert!(
        err.contains("may not replicate") && err.contains("+psync"),
        "{err}"
    );

    let url = format!("redis://dumper:nope@127.0.0.1:{port}");
    let err = dump_fails("ACL user, wrong password", 1, &["--source", &url, "-o", f]);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!file.exists());
    assert_no_leftovers("ACL", tmp.path());
}

// ---------------------------------------------------------------------------------------------
// Failures mid-way

/// The pids of a process's children (a server's BGSAVE child), from /proc.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills the server and its fork child (which would otherwise go on writing its snapshot).
fn kill_with_children(server: &mut Server) {
    let kids = server.pid().map(children).unwrap_or_default();
    server.kill();
    for k in kids {
        let _ = Command::new("kill").arg("-9").arg(k.to_string()).status();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shake-dump did not exit within {limit:?} after the source died");
        }
        sleep(Duration::from_millis(20));
    }
}

/// A source of 20 MB whose snapshot takes about 12 s (`rdb-key-save-delay`), disk-based or
/// diskless.
fn slow_snapshot_source(flavor: Flavor, diskless: bool) -> Server {
    let source = Server::start_with(
        flavor,
        &[
            ("repl-diskless-sync", if diskless { "yes" } else { "no" }),
            // DEBUG POPULATE's values are zero-padded: keep them 1 kB in the RDB too.
            ("rdbcompression", "no"),
        ],
    );
    let mut con = source.client();
    // 20 MB. The fork child flushes a diskless stream in pieces of about 512 kB: with 1 kB
    // values the first piece comes after ~500 keys.
    cmd(
        &mut con,
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(20_000)
            .arg("key")
            .arg(1000),
    );
    // Microseconds per key in the snapshot child: the whole snapshot would take ~12 s.
    cmd(
        &mut con,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("rdb-key-save-delay")
            .arg(500),
    );
    source
}

fn killed_source(diskless: bool) {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let ctx = if diskless {
        "source killed mid-transfer"
    } else {
        "source killed while writing its snapshot"
    };
    let mut source = slow_snapshot_source(flavor, diskless);
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("big.rdb");
    let part = tmp.path().join("big.rdb.part");
    let mut child = dump_cmd()
        .args([
            "--source",
            &source.url(),
            "-o",
            file.to_str().expect("UTF-8"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shake-dump");
    let deadline = Instant::now() + Duration::from_secs(20);
    if diskless {
        // Kill once bytes are flowing.
        while fs::metadata(&part).map(|m| m.len()).unwrap_or(0) == 0 {
            assert!(
                Instant::now() < deadline,
                "[{ctx}] no RDB byte arrived within 20 s"
            );
            sleep(Duration::from_millis(10));
        }
    } else {
        // Kill while the BGSAVE child is writing the file the transfer would come from.
        while source
            .info("persistence")
            .get("rdb_bgsave_in_progress")
            .map(String::as_str)
            != Some("1")
        {
            assert!(
                Instant::now() < deadline,
                "[{ctx}] no BGSAVE started within 20 s"
            );
            sleep(Duration::from_millis(10));
        }
        sleep(Duration::from_millis(200));
    }
    kill_with_children(&mut source);
    let status = wait_exit(&mut child, Duration::from_secs(15));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "[{ctx}] exit status; stderr: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("shake-dump: ") && last.contains("link lost"),
        "[{ctx}] {err}"
    );
    if diskless {
        let n: u64 = last
            .split("after ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("[{ctx}] no byte count in: {last}"));
        assert!(n > 0, "[{ctx}] {last}");
    } else {
        assert!(last.contains("no RDB byte received yet"), "[{ctx}] {last}");
    }
    assert!(!file.exists(), "[{ctx}] {} exists", file.display());
    assert!(!part.exists(), "[{ctx}] {} was left behind", part.display());
}

/// SIGINT and SIGTERM while RDB bytes flow (a slowed diskless snapshot): exit 1 with one line
/// saying the dump was interrupted (or terminated) and the partial output removed; neither
/// FILE nor FILE.part is left.
#[test]
fn dump_stopped_by_signal() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let source = slow_snapshot_source(flavor, true);
    let tmp = tempfile::tempdir().expect("tempdir");
    for (signal, word) in [("INT", "interrupted"), ("TERM", "terminated")] {
        let file = tmp.path().join(format!("{word}.rdb"));
        let part = tmp.path().join(format!("{word}.rdb.part"));
        let mut child = dump_cmd()
            .args([
                "--source",
                &source.url(),
                "-o",
                file.to_str().expect("UTF-8"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shake-dump");
        let deadline = Instant::now() + Duration::from_secs(20);
        while fs::metadata(&part).map(|m| m.len()).unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "no RDB byte arrived within 20 s");
            sleep(Duration::from_millis(10));
        }
        let st = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let status = wait_exit(&mut child, Duration::from_secs(15));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("read stderr");
        assert_eq!(status.code(), Some(1), "SIG{signal}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains(&format!("{word}; partial output removed")),
            "SIG{signal}: {err}"
        );
        assert!(
            !file.exists() && !part.exists(),
            "SIG{signal}: output left behind"
        );
        // The source's snapshot child for us ends with the link.
        let deadline = Instant::now() + Duration::from_secs(20);
        while source
            .info("replication")
            .get("connected_slaves")
            .map(String::as_str)
            != Some("0")
        {
            assert!(Instant::now() < deadline, "the replica link did not end");
            sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn source_killed_mid_transfer() {
    killed_source(true);
}

#[test]
fn source_killed_while_preparing_the_snapshot() {
    killed_source(false);
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// `shake-decode --format keys` of a file: the keys (db 0) it holds.
fn keys_of(rdb: &Path) -> Vec<String> {
    let out = Command::new(bin("shake-decode"))
        .arg(rdb)
        .args(["--format", "keys"])
        .output()
        .expect("run shake-decode");
    assert!(out.status.success(), "shake-decode: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn cluster_to_directory() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let cluster = Cluster::start(flavor);
    let mut con = cluster.connection();
    let keys: Vec<String> = (0..3000).map(|i| format!("ckey:{i}")).collect();
    for k in &keys {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(k)
            .query(&mut con)
            .expect("SET");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("backup");
    let dir_arg = format!("{}/", dir.display());
    let err = dump_ok("cluster", &["--source", &cluster.url(), "-o", &dir_arg]);
    assert!(err.contains("3 masters"), "{err}");

    let mut all: Vec<String> = Vec::new();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want_names: Vec<String> = cluster
        .masters()
        .iter()
        .map(|m| format!("127.0.0.1_{}.rdb", m.port()))
        .collect();
    want_names.sort();
    assert_eq!(
        names, want_names,
        "one file per master, named by host and port"
    );
    for (i, m) in cluster.masters().iter().enumerate() {
        let path = dir.join(format!("127.0.0.1_{}.rdb", m.port()));
        assert_exact_rdb("cluster", &path);
        let (first, last) = CLUSTER_SLOT_RANGES[i];
        let held = keys_of(&path);
        assert!(!held.is_empty(), "{} holds no key", path.display());
        for k in held.iter().take(50) {
            let slot = cluster.slot(k.as_bytes());
            assert!(
                (first..=last).contains(&slot),
                "{k} (slot {slot}) is in the file of the master serving {first}-{last}"
            );
        }
        all.extend(held);
    }
    all.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(all, want, "the files together hold every key exactly once");

    // --cluster goes straight to the topology; on a standalone server it is an error.
    let dir2 = format!("{}/", tmp.path().join("forced").display());
    dump_ok(
        "--cluster",
        &["--source", &cluster.url(), "--cluster", "-q", "-o", &dir2],
    );
    assert_eq!(
        fs::read_dir(&dir2).expect("read_dir").count(),
        3,
        "--cluster"
    );
    let standalone = Server::start(flavor);
    let err = dump_fails(
        "--cluster on a standalone server",
        1,
        &["--source", &standalone.url(), "--cluster", "-o", &dir2],
    );
    assert!(err.contains("not a cluster"), "{err}");

    // One stream cannot carry three RDBs; one file cannot either.
    let err = dump_fails(
        "cluster to stdout",
        2,
        &["--source", &cluster.url(), "-o", "-"],
    );
    assert!(err.contains("cluster") && err.contains("DIR/"), "{err}");
    let f = tmp.path().join("one.rdb");
    let err = dump_fails(
        "cluster to a file",
        2,
        &["--source", &cluster.url(), "-o", f.to_str().expect("UTF-8")],
    );
    assert!(err.contains("--no-source-cluster"), "{err}");
    // Unless only this node is wanted.
    dump_ok(
        "single node",
        &[
            "--source",
            &cluster.url(),
            "--single-node",
            "-q",
            "-o",
            f.to_str().expect("UTF-8"),
        ],
    );
    let n = keys_of(&f).len();
    let first_master = keys_of(&dir.join(format!("127.0.0.1_{}.rdb", cluster.masters()[0].port())));
    assert_eq!(
        n,
        first_master.len(),
        "--single-node dumps only the node named"
    );
}

/// A disk-based source busy with a BGSAVE of its own makes a new replica wait for the next one,
/// sending `\n` keep-alives before `+FULLRESYNC` meanwhile.
#[test]
fn keepalives_before_fullresync() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let source = Server::start_with(flavor, &[("repl-diskless-sync", "no")]);
    let mut con = source.client();
    cmd(&mut con, redis::cmd("DEBUG").arg("POPULATE").arg(2000));
    cmd(
        &mut con,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("rdb-key-save-delay")
            .arg(1000),
    );
    cmd(&mut con, &mut redis::cmd("BGSAVE"));
    // The running BGSAVE keeps its (slow) setting; the one for the dump is fast.
    cmd(
        &mut con,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("rdb-key-save-delay")
            .arg(0),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("k.rdb");
    let started = Instant::now();
    dump_ok(
        "keep-alives",
        &[
            "--source",
            &source.url(),
            "-q",
            "-o",
            file.to_str().expect("UTF-8"),
        ],
    );
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the dump did not wait for the running BGSAVE ({:?}): the test proves nothing",
        started.elapsed()
    );
    assert_exact_rdb("keep-alives", &file);
    assert_eq!(keys_of(&file).len(), 2000);
}

// ---------------------------------------------------------------------------------------------
// Functions only

#[test]
fn functions_only() {
    for flavor in [Flavor::Redis70, Flavor::Valkey81, Flavor::Valkey91] {
        if !require(flavor) {
            continue;
        }
        let ctx = format!("{flavor} --functions-only");
        let source = Server::start(flavor);
        let mut con = source.client();
        cmd(
            &mut con,
            redis::cmd("FUNCTION").arg("LOAD").arg(FUNCTION_LIB),
        );
        cmd(&mut con, redis::cmd("SET").arg("k").arg("v"));
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("functions.rdb");
        let err = dump_ok(
            &ctx,
            &[
                "--source",
                &source.url(),
                "--functions-only",
                "-o",
                file.to_str().expect("UTF-8"),
            ],
        );
        assert!(err.contains("0 keys, 1 functions"), "[{ctx}] {err}");
        assert_exact_rdb(&ctx, &file);
        assert!(
            decode_jsonl(&ctx, &file).trim().is_empty(),
            "[{ctx}] keys in the dump"
        );
        let loaded = server_loading(flavor, &file);
        let mut lcon = loaded.client();
        let size: i64 = q(&mut lcon, &redis::cmd("DBSIZE"));
        assert_eq!(size, 0, "[{ctx}] keys loaded");
        assert_eq!(
            function_libraries(&mut lcon),
            vec![FUNCTION_LIB.to_string()],
            "[{ctx}]"
        );
    }
    if require(Flavor::Redis62) {
        let source = Server::start(Flavor::Redis62);
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("functions.rdb");
        let err = dump_fails(
            "redis-6.2 --functions-only",
            1,
            &[
                "--source",
                &source.url(),
                "--functions-only",
                "-o",
                file.to_str().expect("UTF-8"),
            ],
        );
        assert!(err.contains("not supported"), "{err}");
        assert!(!file.exists());
        assert_no_leftovers("redis-6.2 --functions-only", tmp.path());
    }
}

// ---------------------------------------------------------------------------------------------
// Renamed and missing PSYNC

#[test]
fn renamed_psync_and_sync_fallback() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("r.rdb");
    let f = file.to_str().expect("UTF-8");

    // A managed-service look: PSYNC renamed, SYNC gone.
    let source = Server::start_with(
        flavor,
        &[
            ("rename-command", "PSYNC CLOUDPSYNC"),
            ("rename-command", "SYNC \"\""),
        ],
    );
    cmd(&mut source.client(), redis::cmd("SET").arg("k").arg("v"));
    let err = dump_fails("renamed PSYNC", 1, &["--source", &source.url(), "-o", f]);
    assert!(
        err.contains("refuses replication")
            && err.contains("shake-rump")
            && err.contains("--psync-command"),
        "{err}"
    );
    assert!(!file.exists());
    dump_ok(
        "--psync-command",
        &[
            "--source",
            &source.url(),
            "--psync-command",
            "CLOUDPSYNC",
            "-o",
            f,
        ],
    );
    assert_exact_rdb("--psync-command", &file);
    fs::remove_file(&file).expect("rm");

    // No PSYNC at all: the original SYNC still works.
    let source = Server::start_with(flavor, &[("rename-command", "PSYNC \"\"")]);
    let mut con = source.client();
    fill(&mut con, flavor);
    let want = snapshot(&mut con);
    dump_ok("SYNC fall-back", &["--source", &source.url(), "-o", f]);
    assert_exact_rdb("SYNC fall-back", &file);
    let got = snapshot_from_jsonl(&decode_jsonl("SYNC fall-back", &file));
    assert_no_diffs(
        "SYNC fall-back",
        &compare("source", &want, "dump", &got, Profile::exact(&want, &got)),
    );
}

// ---------------------------------------------------------------------------------------------
// Command line

#[test]
fn help_lists_every_flag_with_defaults() {
    let out = dump(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--source",
        "--output",
        "--functions-only",
        "--psync-command",
        "--source-cluster",
        "--no-source-cluster",
        "--tls-ca",
        "--tls-insecure",
        "--connect-timeout",
        "--timeout",
        "--quiet",
        "--log-interval",
        "SHAKE_SOURCE_PASSWORD",
        "[default: PSYNC]",
        "[default: 10]",
        "[default: 30]",
        "[env: SHAKE_SOURCE=]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn usage_errors_and_unreachable_sources() {
    let out = dump(&[]);
    assert_eq!(out.status.code(), Some(2), "no arguments");
    let err = dump_fails("bad URL", 2, &["--source", "http://x", "-o", "x.rdb"]);
    assert!(err.contains("invalid endpoint"), "{err}");
    let err = dump_fails(
        "TLS flags without rediss",
        2,
        &[
            "--source",
            "redis://127.0.0.1:1",
            "--tls-insecure",
            "-o",
            "x.rdb",
        ],
    );
    assert!(err.contains("rediss://"), "{err}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("x.rdb");
    let err = dump_fails(
        "nothing listening",
        1,
        &[
            "--source",
            "redis://127.0.0.1:1",
            "-o",
            f.to_str().expect("UTF-8"),
        ],
    );
    assert!(
        err.contains("cannot connect to redis://127.0.0.1:1"),
        "{err}"
    );
    assert!(!f.exists());
}
