//! Hardening found by fault injection (issue 11): secrets never echoed in messages, output files
//! private and never written through a planted symlink, the status server never able to stall
//! a sync.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shake_tests::{require, Flavor, Server};

// ---------------------------------------------------------------------------------------------
// Binaries

/// A binary of this workspace (built by `cargo build --workspace --bins`).
fn bin(name: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(name)
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .env_remove("RUST_BACKTRACE")
        .env_remove("SHAKE_SOURCE_PASSWORD")
        .env_remove("SHAKE_TARGET_PASSWORD")
        .args(args)
        .output()
        .expect("the binary runs")
}

// ---------------------------------------------------------------------------------------------
// Item 4: a malformed URL never echoes its password

/// Every URL flag of every tool that takes one, given a URL whose port is out of range (and
/// other malformations): the message names the endpoint with the password replaced by `***`.
#[test]
fn malformed_urls_never_echo_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let rdb = dir.path().join("in.rdb");
    // A valid empty RDB (version 9), so restore gets as far as the target URL.
    let mut body = b"REDIS0009\xff".to_vec();
    body.extend_from_slice(&shake_core::crc64::crc64(&body).to_le_bytes());
    std::fs::write(&rdb, body).unwrap();
    let rdb = rdb.to_str().unwrap();
    let out = dir.path().join("out.rdb");
    let out = out.to_str().unwrap();
    let good = "redis://127.0.0.1:1";
    for bad in [
        "redis://:SrcPw@host:99999",
        "redis://app:SrcPw@host:99999",
        "rediss://app:SrcPw%zz@host:1",
        "redis://SrcPw@host/notanumber",
    ] {
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("shake-dump", vec!["--source", bad, "-o", out]),
            ("shake-restore", vec!["--target", bad, rdb]),
            ("shake-sync", vec!["--source", bad, "--target", good]),
            ("shake-sync", vec!["--source", good, "--target", bad]),
            ("shake-rump", vec!["--source", bad, "--target", good]),
            ("shake-rump", vec!["--source", good, "--target", bad]),
            ("shake-check", vec!["--source", bad, "--target", good]),
            ("shake-check", vec!["--source", good, "--target", bad]),
        ];
        for (tool, args) in cases {
            let o = run(tool, &args);
            let err = String::from_utf8_lossy(&o.stderr);
            let all = format!("{err}{}", String::from_utf8_lossy(&o.stdout));
            assert!(!o.status.success(), "{tool} {args:?} succeeded");
            assert!(
                !all.contains("SrcPw"),
                "{tool} {args:?} echoes the password:\n{all}"
            );
            assert!(
                err.contains("invalid endpoint") && err.contains("***"),
                "{tool} {args:?}: the message should name the endpoint, redacted:\n{err}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Item 6: structurally corrupt compact encodings behind a valid checksum

/// `rdb` with the first `old` after `from` replaced by `new`, and the CRC-64 trailer made valid
/// again.
fn patch_rdb(rdb: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let at = rdb
        .windows(old.len())
        .position(|w| w == old)
        .expect("the pattern is in the RDB");
    let mut out = rdb.to_vec();
    out[at..at + new.len()].copy_from_slice(new);
    let body = out.len() - 8;
    let crc = shake_core::crc64::crc64(&out[..body]);
    out[body..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn dbsize(s: &Server) -> u64 {
    redis::cmd("DBSIZE").query(&mut s.client()).unwrap()
}

/// The example: a list whose one listpack node says 201 elements where it holds 200, in
/// an RDB with a valid checksum. shake-decode and shake-restore refuse it naming the key and the
/// offset, and a Redis 7.0 target that does not sanitize payloads (its default) never receives
/// it from restore, rump or sync, while it would accept it (`--no-verify-values`).
#[test]
fn corrupt_listpack_count_is_refused_everywhere() {
    if !require(Flavor::Redis70) {
        return;
    }
    // One listpack node of the 200 integers 1..=200: 127 one-byte and 73 two-byte entries, each
    // with a one-byte back-length: 6 + 127*2 + 73*3 + 1 = 480 bytes.
    let mut src = Server::start_with(Flavor::Redis70, &[("rdbcompression", "no")]);
    let mut c = src.client();
    let _: () = redis::cmd("RPUSH")
        .arg("lst")
        .arg((1..=200).collect::<Vec<i32>>())
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let good = std::fs::read(src.save()).unwrap();
    let mut header = 480u32.to_le_bytes().to_vec();
    header.extend_from_slice(&200u16.to_le_bytes());
    let mut flipped = 480u32.to_le_bytes().to_vec();
    flipped.extend_from_slice(&201u16.to_le_bytes());
    let bad = patch_rdb(&good, &header, &flipped);
    let dir = tempfile::tempdir().unwrap();
    let bad_path = dir.path().join("bad.rdb");
    std::fs::write(&bad_path, &bad).unwrap();
    let bad_file = bad_path.to_str().unwrap();
    let names_it = |tool: &str, err: &str| {
        assert!(
            err.contains("listpack header says 201 elements, it holds 200")
                && err.contains("byte offset")
                && err.contains("\"lst\""),
            "{tool} should name the fault, the offset and the key:\n{err}"
        );
    };

    let o = run("shake-decode", &[bad_file]);
    assert_eq!(o.status.code(), Some(1));
    names_it("shake-decode", &String::from_utf8_lossy(&o.stderr));

    let dst = Server::start(Flavor::Redis70);
    let o = run("shake-restore", &["--target", &dst.url(), "-q", bad_file]);
    assert_eq!(o.status.code(), Some(1));
    names_it("shake-restore", &String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        dbsize(&dst),
        0,
        "the checking pass stops before anything is written"
    );
    // From stdin there is no checking pass: the key is refused all the same.
    let o = Command::new(bin("shake-restore"))
        .args(["--target", &dst.url(), "-q", "-"])
        .stdin(std::fs::File::open(&bad_path).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    names_it("shake-restore -", &String::from_utf8_lossy(&o.stderr));
    let exists: u64 = redis::cmd("EXISTS")
        .arg("lst")
        .query(&mut dst.client())
        .unwrap();
    assert_eq!(exists, 0, "the target never received the corrupt value");
    // The target itself does not look: unchecked, it takes the value (the hole being closed).
    let o = run(
        "shake-restore",
        &[
            "--target",
            &dst.url(),
            "-q",
            "--no-verify-values",
            "--on-conflict",
            "rewrite",
            bad_file,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exists: u64 = redis::cmd("EXISTS")
        .arg("lst")
        .query(&mut dst.client())
        .unwrap();
    assert_eq!(
        exists, 1,
        "Redis 7.0 without sanitize-dump-payload accepts the corrupt payload"
    );
    drop(dst);

    // A source that loaded the file (it does not sanitize either) serves the value as it is:
    // shake-rump (DUMP payloads) and shake-sync (the replication RDB) refuse it.
    src.stop();
    std::fs::write(src.rdb_path(), &bad).unwrap();
    src.restart();
    let dst = Server::start(Flavor::Redis70);
    let o = run(
        "shake-rump",
        &["--source", &src.url(), "--target", &dst.url(), "-q"],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("201 elements") && err.contains("\"lst\""),
        "shake-rump:\n{err}"
    );
    let exists: u64 = redis::cmd("EXISTS")
        .arg("lst")
        .query(&mut dst.client())
        .unwrap();
    assert_eq!(exists, 0, "rump never wrote the corrupt value");

    let o = Command::new(bin("shake-sync"))
        .args([
            "--source",
            &src.url(),
            "--target",
            &dst.url(),
            "--retry-for",
            "2",
        ])
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output_with_timeout(Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "shake-sync:\n{err}");
    assert!(
        err.contains("201 elements") && err.contains("\"lst\""),
        "shake-sync:\n{err}"
    );
    let exists: u64 = redis::cmd("EXISTS")
        .arg("lst")
        .query(&mut dst.client())
        .unwrap();
    assert_eq!(exists, 0, "sync never wrote the corrupt value");
}

/// `Command::output` with a deadline: a tool that hangs fails the test instead of blocking it.
trait OutputWithTimeout {
    fn output_with_timeout(&mut self, limit: Duration) -> Output;
}

impl OutputWithTimeout for Command {
    fn output_with_timeout(&mut self, limit: Duration) -> Output {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let mut child = self
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .spawn()
            .expect("the binary runs");
        let t = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{self:?} did not finish within {limit:?}:\n{}",
                    std::fs::read_to_string(err.path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: std::fs::read(out.path()).unwrap(),
            stderr: std::fs::read(err.path()).unwrap(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Item 5: output files are private and never written through a planted symlink

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// shake-dump's RDB, shake-rump's -o FILE and shake-decode's -o FILE are created 0600 under the
/// usual umask (022); a `FILE.part -> victim` symlink planted before shake-dump runs is refused
/// (the victim untouched, FILE never created); a stale regular FILE.part (a crashed run) is
/// replaced.
#[test]
fn output_files_are_private_and_never_follow_symlinks() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start(Flavor::Redis70);
    let _: () = redis::cmd("SET")
        .arg("secret")
        .arg("s3cr3t")
        .query(&mut src.client())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    // Every tool starts under umask 022 (the usual default), whatever the test runner's is.
    let run_in = |name: &str, args: &[&str]| {
        Command::new("sh")
            .arg("-c")
            .arg("umask 022; exec \"$0\" \"$@\"")
            .arg(bin(name))
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };

    // Planted symlink: refused, the victim unchanged, no out.rdb.
    std::fs::write(p("victim"), b"precious").unwrap();
    std::os::unix::fs::symlink(p("victim"), p("out.rdb.part")).unwrap();
    let out = p("out.rdb");
    let o = run_in(
        "shake-dump",
        &["--source", &src.url(), "-q", "-o", out.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "shake-dump wrote through the symlink:\n{err}"
    );
    assert!(
        err.contains("out.rdb.part") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(std::fs::read(p("victim")).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&out).is_err(),
        "out.rdb must not exist"
    );

    // A stale regular part file (as a kill -9 leaves it) does not block the next run.
    std::fs::remove_file(p("out.rdb.part")).unwrap();
    std::fs::write(p("out.rdb.part"), b"half a dump").unwrap();
    let o = run_in(
        "shake-dump",
        &["--source", &src.url(), "-q", "-o", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::symlink_metadata(&out)
        .unwrap()
        .file_type()
        .is_file());
    assert_eq!(mode(&out), 0o600, "the dump is private");
    assert!(!p("out.rdb.part").exists());

    let rump_out = p("rump.rdb");
    let o = run_in(
        "shake-rump",
        &[
            "--source",
            &src.url(),
            "-q",
            "-o",
            rump_out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode(&rump_out), 0o600, "rump's RDB is private");

    let decoded = p("decoded.jsonl");
    let o = run_in(
        "shake-decode",
        &[out.to_str().unwrap(), "-q", "-o", decoded.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&decoded)
        .unwrap()
        .contains("s3cr3t"));
    assert_eq!(mode(&decoded), 0o600, "the decoded values are private");
}

// ---------------------------------------------------------------------------------------------
// Item 7: the status endpoint cannot stall the sync

/// CPU seconds (user + system) `pid` has used, from /proc (clock ticks of 1/100 s on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}

fn http_status(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// With 64 file descriptors and 200 idle connections held open on --status-addr, shake-sync
/// keeps applying writes, reconnects to its source after a link cut, stays near idle on the CPU
/// (it spun at 97 % retrying accept without a pause), and answers /status again once the idle
/// connections are gone.
#[test]
fn idle_status_connections_never_stall_the_sync() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start(Flavor::Redis70);
    let dst = Server::start(Flavor::Redis70);
    let mut proxy = shake_tests::Proxy::start(src.addr());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(bin("shake-sync"))
        .args(["--source", &proxy.url(), "--target", &dst.url()])
        .args([
            "--status-addr",
            &format!("127.0.0.1:{port}"),
            "--log-interval",
            "1",
        ])
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let mut alive = |what: &str| {
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "shake-sync exited {what}:\n{}",
            stderr()
        );
    };
    let wait_for = |what: &str, limit: Duration, cond: &mut dyn FnMut() -> bool| {
        let t = Instant::now();
        while !cond() {
            assert!(
                t.elapsed() < limit,
                "{what} within {limit:?}:\n{}",
                stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("incremental", Duration::from_secs(30), &mut || {
        stderr().contains("incremental")
    });
    alive("before the flood");

    let idle: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(
        idle.len() >= 100,
        "only {} idle connections opened",
        idle.len()
    );
    std::thread::sleep(Duration::from_millis(500));

    let mut c = src.client();
    let on_target = |key: &str| -> bool {
        redis::cmd("GET")
            .arg(key)
            .query::<Option<String>>(&mut dst.client())
            .unwrap()
            .is_some()
    };
    let _: () = redis::cmd("SET")
        .arg("during-flood")
        .arg("1")
        .query(&mut c)
        .unwrap();
    wait_for(
        "a write during the flood applied",
        Duration::from_secs(20),
        &mut || on_target("during-flood"),
    );
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let share = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    assert!(
        share < 0.4,
        "shake-sync used {:.0} % CPU with idle status connections",
        share * 100.0
    );

    // The source link drops: the reconnect needs descriptors of its own.
    proxy.cut();
    let _: () = redis::cmd("SET")
        .arg("after-cut")
        .arg("1")
        .query(&mut c)
        .unwrap();
    wait_for(
        "a write after the link cut applied",
        Duration::from_secs(30),
        &mut || on_target("after-cut"),
    );
    alive("during the flood");

    drop(idle);
    wait_for(
        "/status answered after the flood",
        Duration::from_secs(20),
        &mut || http_status(port).is_some_and(|r| r.contains("\"phase\"")),
    );
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Item 10: the smaller ones (progress of a full sync, rotated passwords, a stop with a frozen
// target, a damaged end mark)

/// A `shake-sync` run with its stderr in a file.
struct SyncProc {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
}

impl SyncProc {
    fn start(args: &[&str], env: &[(&str, &str)]) -> SyncProc {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut c = Command::new(bin("shake-sync"));
        c.args(args)
            .args(["--log-interval", "1"])
            .env_remove("RUST_BACKTRACE")
            .env_remove("SHAKE_SOURCE_PASSWORD")
            .env_remove("SHAKE_TARGET_PASSWORD");
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        SyncProc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `cond` holds, failing if shake-sync exits first or `limit` passes.
    fn wait(&mut self, what: &str, limit: Duration, mut cond: impl FnMut(&str) -> bool) {
        let t = Instant::now();
        while !cond(&self.log()) {
            assert!(
                self.running(),
                "shake-sync exited before {what}:\n{}",
                self.log()
            );
            assert!(
                t.elapsed() < limit,
                "{what} not within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself (killed and a failure after `limit`).
    fn exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code(), t.elapsed());
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("shake-sync still running after {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for SyncProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set(s: &Server, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut s.client())
        .unwrap();
}

fn get(s: &Server, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(&mut s.client()).unwrap()
}

/// The one shard of `/status` on `port`, while it answers.
fn shard_status(port: u16) -> Option<serde_json::Value> {
    let body = shake_tests::http_get(port, "/status")?;
    let mut v: serde_json::Value = serde_json::from_str(&body).ok()?;
    // Before the first link connects, `shards` is an empty list: no shard yet, not an error.
    Some(v.get_mut("shards")?.get_mut(0)?.take())
}

/// `rdb_keys_applied` of /status advances while a full sync is applied (it stayed 0 and
/// jumped at the end): 20,000 keys at --qps 4000 take ~5 s, polled every 100 ms.
#[test]
fn full_sync_status_counts_keys_while_applying() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start(Flavor::Redis70);
    let dst = Server::start(Flavor::Redis70);
    let keys = 20_000u64;
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(keys)
        .query(&mut src.client())
        .unwrap();
    let port = shake_tests::free_port();
    let status_addr = format!("127.0.0.1:{port}");
    let mut sync = SyncProc::start(
        &[
            "--source",
            &src.url(),
            "--target",
            &dst.url(),
            "--qps",
            "4000",
            "--status-addr",
            &status_addr,
        ],
        &[],
    );
    let mut during = Vec::new();
    let t = Instant::now();
    loop {
        assert!(sync.running(), "shake-sync exited:\n{}", sync.log());
        assert!(t.elapsed() < Duration::from_secs(60), "{}", sync.log());
        if let Some(s) = shard_status(port) {
            let n = s["rdb_keys_applied"].as_u64().unwrap_or(0);
            match s["phase"].as_str() {
                Some("full_sync") => during.push(n),
                Some("incremental") => {
                    assert_eq!(n, keys, "after the full sync: {s}");
                    break;
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("rdb_keys_applied during the full sync: {during:?}");
    let between: Vec<u64> = during
        .iter()
        .copied()
        .filter(|&n| n > 0 && n < keys)
        .collect();
    assert!(
        between.len() >= 3,
        "rdb_keys_applied should advance during the full sync, saw {during:?}"
    );
    assert!(
        between.windows(2).all(|w| w[0] <= w[1]),
        "it only grows: {between:?}"
    );
    let metrics = shake_tests::http_get(port, "/metrics").unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shake_sync_rdb_keys_applied{")
                && l.ends_with(&format!(" {keys}"))),
        "{metrics}"
    );
}

/// A password rotated under a running sync (CONFIG SET requirepass on the source, then the link
/// cut): shake-sync retries for --retry-for, saying the source refused the password and where
/// to set it, and carries on once the old password is back; on the target, with the window
/// passed, it exits 1 with that one line.
#[test]
fn rotated_password_is_retried_for_retry_for() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start_with(Flavor::Redis70, &[("requirepass", "old-src")]);
    let dst = Server::start_with(Flavor::Redis70, &[("requirepass", "old-dst")]);
    let mut proxy = shake_tests::Proxy::start(src.addr());
    let env = [
        ("SHAKE_SOURCE_PASSWORD", "old-src"),
        ("SHAKE_TARGET_PASSWORD", "old-dst"),
    ];
    let mut sync = SyncProc::start(
        &[
            "--source",
            &proxy.url(),
            "--target",
            &dst.url(),
            "--retry-for",
            "60",
        ],
        &env,
    );
    sync.wait("incremental", Duration::from_secs(30), |l| {
        l.contains("incremental")
    });
    // The rig's client logs in with the password the server was started with.
    let mut src_con = src.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("new-src")
        .query(&mut src_con)
        .unwrap();
    proxy.cut();
    sync.wait("the refusal named", Duration::from_secs(20), |l| {
        l.contains("the source refused this sync's password") && l.contains("SHAKE_SOURCE_PASSWORD")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sync.running(),
        "shake-sync gave up at once:\n{}",
        sync.log()
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("old-src")
        .query(&mut src_con)
        .unwrap();
    set(&src, "after-rotation", "1");
    sync.wait(
        "the write after the password came back",
        Duration::from_secs(30),
        |_| get(&dst, "after-rotation").is_some(),
    );
    assert!(
        sync.log().contains("resumed from offset"),
        "a partial resync, not a new full sync:\n{}",
        sync.log()
    );
    drop(sync);

    // The target's password, with a short window: one line, exit 1.
    let mut sync = SyncProc::start(
        &[
            "--source",
            &proxy.url(),
            "--target",
            &dst.url(),
            "--retry-for",
            "3",
        ],
        &env,
    );
    sync.wait("incremental", Duration::from_secs(30), |l| {
        l.contains("incremental")
    });
    let mut dst_con = dst.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("new-dst")
        .query(&mut dst_con)
        .unwrap();
    // Every other connection to the target goes (shake-sync's among them).
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut dst_con)
        .unwrap();
    let (code, took) = sync.exit(Duration::from_secs(60));
    let log = sync.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        took >= Duration::from_secs(2),
        "gave up at once ({took:?}):\n{log}"
    );
    let last = log.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("giving up after")
            && last.contains("the target refused this sync's password")
            && last.contains("SHAKE_TARGET_PASSWORD"),
        "{log}"
    );
}

/// SIGTERM while the target is frozen (SIGSTOP): shake-sync ends within a bounded time with exit
/// 3 and one line saying the final checkpoint was not written and what a restart does (it
/// exited 0 after ~28 s, silent about it); the restart resumes and the counter is exact.
#[test]
fn stop_with_a_frozen_target_says_the_checkpoint_was_not_written() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start(Flavor::Redis70);
    let dst = Server::start(Flavor::Redis70);
    let args = ["--source", &src.url(), "--target", &dst.url()];
    let mut sync = SyncProc::start(&args, &[]);
    sync.wait("incremental", Duration::from_secs(30), |l| {
        l.contains("incremental")
    });
    let incr = |n: usize| {
        let mut c = src.client();
        for _ in 0..n {
            let _: i64 = redis::cmd("INCR").arg("counter").query(&mut c).unwrap();
        }
    };
    incr(100);
    sync.wait("the first writes", Duration::from_secs(20), |_| {
        get(&dst, "counter").as_deref() == Some("100")
    });
    let pid = dst.pid().unwrap().to_string();
    let _ = Command::new("kill").args(["-STOP", &pid]).status();
    incr(100);
    std::thread::sleep(Duration::from_millis(500));
    sync.signal("-TERM");
    let (code, took) = sync.exit(Duration::from_secs(40));
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let log = sync.log();
    eprintln!("exit {code:?} after {took:?}:\n{log}");
    assert_eq!(code, Some(3), "{log}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let last = log.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("the final checkpoint could not be written")
            && last.contains("resumes from the last checkpoint")
            && last.contains("nothing is lost"),
        "{log}"
    );
    // The restart resumes from the target's checkpoint: exactly 200.
    let mut sync = SyncProc::start(&args, &[]);
    sync.wait("the resumed writes", Duration::from_secs(30), |_| {
        get(&dst, "counter").as_deref() == Some("200")
    });
    sync.wait("resumed", Duration::from_secs(5), |l| {
        l.contains("resumed from offset")
    });
    incr(1);
    sync.wait("one more", Duration::from_secs(20), |_| {
        get(&dst, "counter").as_deref() == Some("201")
    });
    sync.signal("-TERM");
    let (code, _) = sync.exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", sync.log());
}

/// A diskless full sync whose end mark was changed on the way (one byte of the 40 after the
/// RDB, by a tampering proxy): reported at once as a corrupt replication stream naming the
/// endpoint, the mark expected and the bytes found, not as "nothing received for 15s".
#[test]
fn damaged_diskless_end_mark_is_a_corrupt_stream() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start_with(Flavor::Redis70, &[("repl-diskless-sync", "yes")]);
    let dst = Server::start(Flavor::Redis70);
    set(&src, "k", "v");
    let proxy = shake_tests::Proxy::start_tampering(src.addr(), shake_tests::EofMarkTamper::boxed);
    let mut sync = SyncProc::start(
        &[
            "--source",
            &proxy.url(),
            "--target",
            &dst.url(),
            "--retry-for",
            "5",
        ],
        &[],
    );
    let (code, took) = sync.exit(Duration::from_secs(60));
    let log = sync.log();
    eprintln!("exit {code:?} after {took:?}:\n{log}");
    assert_eq!(code, Some(1), "{log}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let last = log.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("corrupt replication stream")
            && last.contains(&format!("127.0.0.1:{}", proxy.port()))
            && last.contains("end mark")
            && last.contains("found"),
        "{log}"
    );
    assert!(!log.contains("nothing received"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// Mistakes a new user makes get a message that says what is wrong (issue 13, item 5)

/// A missing RDB file given to shake-check as `--source` is named as a missing file (not looked
/// up as a host); `redis:/host` is a malformed URL on every tool; a server that wants a password
/// and gets none is an authentication failure naming the endpoint and where the password goes,
/// on every tool, with a non-zero exit; a v3 config forcing a cluster target onto a standalone
/// server names that setting.
#[test]
fn mistakes_get_the_right_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("backup.rdb");
    let missing = missing.to_str().unwrap();
    let out = dir.path().join("out.rdb");
    let out = out.to_str().unwrap();
    let good = "redis://127.0.0.1:1";
    for source in [missing, "backup.rdb", dir.path().to_str().unwrap()] {
        let o = run("shake-check", &["--source", source, "--target", good]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{source}: {err}");
        assert!(
            (err.contains("does not exist") || err.contains("is not a file"))
                && err.contains(source)
                && !err.contains("lookup"),
            "{source}: {err}"
        );
    }

    let rdb = dir.path().join("in.rdb");
    let mut body = b"REDIS0009\xff".to_vec();
    body.extend_from_slice(&shake_core::crc64::crc64(&body).to_le_bytes());
    std::fs::write(&rdb, body).unwrap();
    let rdb = rdb.to_str().unwrap();
    let bad = "redis:/host";
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("shake-dump", vec!["--source", bad, "-o", out]),
        ("shake-restore", vec!["--target", bad, rdb]),
        ("shake-sync", vec!["--source", bad, "--target", good]),
        ("shake-rump", vec!["--source", good, "--target", bad]),
        ("shake-check", vec!["--source", bad, "--target", good]),
        ("shake-check", vec!["--source", good, "--target", bad]),
    ];
    for (tool, args) in &cases {
        let o = run(tool, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{tool} {args:?} succeeded");
        assert!(
            err.contains("invalid endpoint") && err.contains("two slashes"),
            "{tool} {args:?}: {err}"
        );
    }

    if !require(Flavor::Redis70) {
        return;
    }
    let locked = Server::start(Flavor::Redis70);
    let open = Server::start(Flavor::Redis70);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("Pw4test")
        .query(&mut locked.client())
        .unwrap();
    let (l, o) = (locked.url(), open.url());
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("shake-dump", vec!["--source", &l, "-o", out], "source"),
        ("shake-restore", vec!["--target", &l, rdb], "target"),
        ("shake-sync", vec!["--source", &l, "--target", &o], "source"),
        ("shake-sync", vec!["--source", &o, "--target", &l], "target"),
        ("shake-rump", vec!["--source", &l, "--target", &o], "source"),
        ("shake-rump", vec!["--source", &o, "--target", &l], "target"),
        (
            "shake-check",
            vec!["--source", &l, "--target", &o],
            "source",
        ),
        (
            "shake-check",
            vec!["--source", &o, "--target", &l],
            "target",
        ),
    ];
    for (tool, args, side) in &cases {
        let o = run(tool, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{tool} {args:?} succeeded");
        let env = format!("SHAKE_{}_PASSWORD", side.to_ascii_uppercase());
        assert!(
            err.contains(&format!("127.0.0.1:{}", locked.port()))
                && (err.contains("authentication failed")
                    || err.contains("refused this sync's password"))
                && err.contains(&env),
            "{tool} {args:?}: the message should name the {side}'s endpoint and {env}:\n{err}"
        );
    }

    // A RedisShake v3 config saying the standalone target is a cluster: the line names the
    // setting to change, though no flag was given.
    let cfg = dir.path().join("sync.toml");
    std::fs::write(
        &cfg,
        format!(
            "type = \"sync\"\n[source]\naddress = \"127.0.0.1:{}\"\n[target]\ntype = \"cluster\"\naddress = \"127.0.0.1:{}\"\n",
            open.port(),
            open.port()
        ),
    )
    .unwrap();
    let o = run("shake-sync", &["--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("is not a cluster node") && err.contains("type = \"cluster\""),
        "{err}"
    );
}
