//! `shake-sync --output`: the change stream out, against a real Redis 7.0 source. Each test
//! writes a small mixed dataset and a stream of writes (a transaction, DEL, EXPIRE, a database
//! switch), stops shake-sync with SIGTERM, restarts it on the same output, writes more, stops it
//! again, then replays the whole output into a fresh server and has shake-check compare it with
//! the source:
//! - JSON lines to a file: offsets strictly increase, none twice across the restart; replayed by
//!   converting the snapshot's key lines to commands and sending each command record;
//! - RESP to a file: the file passes `redis-check-aof` and `redis-cli --pipe` replays it;
//! - RESP to standard output (a pipe), resumed through `--output-state`.
//!
//! Build the binaries first: `cargo build -p shake-sync -p shake-check`.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use shake_tests::{require, tool_binary, Flavor, Server};

/// A running shake-sync --output, its stdout going to `stdout` when given.
struct Run {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Run {
    fn start(args: &[&str], stdout: Option<&Path>) -> Run {
        let log = tempfile::NamedTempFile::new().expect("log");
        let out = match stdout {
            // Appending: the second run continues the first one's stream, as a pipe would.
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("stdout file"),
            ),
            None => Stdio::null(),
        };
        let child = Command::new(tool_binary("shake-sync"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn shake-sync");
        Run { child, log }
    }

    fn stderr(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Waits for the log to show the stream phase.
    fn wait_streaming(&mut self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            let log = self.stderr();
            if log.contains("incremental from here") || log.contains("resumed from offset") {
                return;
            }
            assert!(
                matches!(self.child.try_wait(), Ok(None)),
                "shake-sync exited early:\n{log}"
            );
            sleep(Duration::from_millis(50));
        }
        panic!("shake-sync did not reach the stream:\n{}", self.stderr());
    }

    /// SIGTERM; asserts exit 0; returns the log.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = self.stderr();
                assert_eq!(st.code(), Some(0), "shake-sync exit:\n{log}");
                return log;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no stop:\n{}",
                self.stderr()
            );
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmd(c: &mut redis::Connection, argv: &[&str]) {
    let mut k = redis::cmd(argv[0]);
    for a in &argv[1..] {
        k.arg(*a);
    }
    let _: redis::Value = k.query(c).expect("command");
}

/// The dataset before the first start: every collection type, a TTL, two databases.
fn seed(src: &Server) {
    let mut c = src.client();
    cmd(&mut c, &["SET", "s", "one"]);
    cmd(&mut c, &["SET", "gone", "x"]);
    cmd(&mut c, &["RPUSH", "l", "a", "b", "c"]);
    cmd(&mut c, &["HSET", "h", "f1", "v1", "f2", "v2"]);
    cmd(&mut c, &["SADD", "set", "m1", "m2"]);
    cmd(&mut c, &["ZADD", "z", "1.5", "a", "-2", "b"]);
    cmd(&mut c, &["SET", "ttl", "t", "PX", "500000"]);
    cmd(&mut c, &["SELECT", "2"]);
    cmd(&mut c, &["SET", "in2", "v"]);
}

/// Writes during a run; `round` keeps the two runs' keys apart.
fn writes(src: &Server, round: &str) {
    let mut c = src.client();
    let mut t = redis::pipe();
    t.atomic()
        .cmd("SET")
        .arg(format!("tx:{round}"))
        .arg("1")
        .cmd("INCR")
        .arg("counter")
        .cmd("LPUSH")
        .arg("l")
        .arg(round);
    let _: redis::Value = t.query(&mut c).expect("transaction");
    cmd(&mut c, &["DEL", "gone"]);
    cmd(&mut c, &["SET", "gone", round]);
    cmd(&mut c, &["EXPIRE", "h", "300000"]);
    cmd(&mut c, &["HSET", "h", "f3", round]);
    cmd(&mut c, &["SELECT", "3"]);
    cmd(&mut c, &["SET", &format!("db3:{round}"), "x"]);
    cmd(&mut c, &["SELECT", "2"]);
    cmd(&mut c, &["DEL", "in2"]);
    cmd(&mut c, &["SADD", "s2", round]);
}

/// shake-check finds the two servers equal (it retries while the replay settles).
fn check_equal(src: &Server, dst: &Server) {
    let out = Command::new(tool_binary("shake-check"))
        .args(["--source", &src.url(), "--target", &dst.url(), "-q"])
        .output()
        .expect("run shake-check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "shake-check finds differences:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two runs on the same output with writes before, during and between them.
fn two_runs(src: &Server, args: &[&str], stdout: Option<&Path>) {
    seed(src);
    let mut a = Run::start(args, stdout);
    a.wait_streaming();
    writes(src, "r1");
    sleep(Duration::from_millis(300));
    let log = a.stop();
    assert!(log.contains("stopped at offset"), "{log}");
    // Written while nothing reads: the restart resumes from the recorded offset.
    writes(src, "gap");
    let mut b = Run::start(args, stdout);
    b.wait_streaming();
    let log = b.stderr();
    writes(src, "r2");
    sleep(Duration::from_millis(300));
    let log2 = b.stop();
    assert!(
        log.contains("resumed from offset"),
        "no partial resync:\n{log2}"
    );
}

fn str_of(v: &serde_json::Value) -> String {
    v.as_str().expect("the test's data is UTF-8").to_string()
}

/// Sends a JSON lines output to `dst`: key lines become the commands that build them, command
/// records are sent as they are, in their database.
fn replay_jsonl(text: &str, dst: &Server) {
    let mut c = dst.client();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let db = v["db"].as_u64();
        if v.get("meta").is_some() {
            continue;
        }
        cmd(&mut c, &["SELECT", &db.expect("db").to_string()]);
        if let Some(argv) = v["argv"].as_array() {
            let argv: Vec<String> = argv.iter().map(str_of).collect();
            let r: Vec<&str> = argv.iter().map(String::as_str).collect();
            cmd(&mut c, &r);
            continue;
        }
        let key = str_of(&v["key"]);
        let val = &v["value"];
        let mut argv: Vec<String> = match v["type"].as_str().expect("type") {
            "string" => vec!["SET".into(), key.clone(), str_of(val)],
            "list" => ["RPUSH".into(), key.clone()]
                .into_iter()
                .chain(val.as_array().expect("list").iter().map(str_of))
                .collect(),
            "set" => ["SADD".into(), key.clone()]
                .into_iter()
                .chain(val.as_array().expect("set").iter().map(str_of))
                .collect(),
            "hash" => {
                let mut a = vec!["HSET".to_string(), key.clone()];
                for (f, x) in val.as_object().expect("hash") {
                    a.push(f.clone());
                    a.push(str_of(x));
                }
                a
            }
            "zset" => {
                let mut a = vec!["ZADD".to_string(), key.clone()];
                for p in val.as_array().expect("zset") {
                    a.push(p[1].to_string());
                    a.push(str_of(&p[0]));
                }
                a
            }
            other => panic!("type {other} is not in the test's data"),
        };
        let r: Vec<&str> = argv.iter().map(String::as_str).collect();
        cmd(&mut c, &r);
        if let Some(ms) = v["expire_at_ms"].as_u64() {
            argv = vec!["PEXPIREAT".into(), key, ms.to_string()];
            let r: Vec<&str> = argv.iter().map(String::as_str).collect();
            cmd(&mut c, &r);
        }
    }
}

fn pipe_into(file: &Path, dst: &Server) {
    let out = Command::new(shake_tests::redis_cli())
        .args(["-p", &dst.port().to_string(), "--pipe"])
        .stdin(std::fs::File::open(file).expect("output"))
        .output()
        .expect("redis-cli --pipe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("errors: 0"),
        "redis-cli --pipe: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn jsonl_file_resumes_without_duplicates_and_replays_equal() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start(Flavor::Redis70);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("changes.jsonl");
    let f = file.to_str().expect("path");
    two_runs(&src, &["--source", &src.url(), "--output", f], None);
    let text = std::fs::read_to_string(&file).expect("output");
    // Offsets of the command records: strictly increasing, so none is written twice.
    let mut last = 0;
    let mut records = 0;
    let mut multi = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
        if let Some(o) = v.get("offset").filter(|_| v.get("argv").is_some()) {
            let o = o.as_u64().expect("offset");
            assert!(o > last, "offset {o} after {last}:\n{text}");
            last = o;
            records += 1;
            multi += (v["argv"][0] == "MULTI") as u32;
        }
    }
    assert_eq!(multi, 3, "one MULTI per round:\n{text}");
    assert!(records >= 30, "{records} records:\n{text}");
    assert_eq!(text.matches("snapshot-begin").count(), 1, "{text}");
    let state = std::fs::read_to_string(format!("{f}.state")).expect("state");
    assert!(
        state.contains(&format!(" {last} ")),
        "{state}\nlast offset {last}"
    );
    let dst = Server::start(Flavor::Redis70);
    replay_jsonl(&text, &dst);
    check_equal(&src, &dst);
}

#[test]
fn resp_file_is_an_aof_that_replays_equal() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start(Flavor::Redis70);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("changes.aof");
    let f = file.to_str().expect("path");
    let args = [
        "--source",
        &src.url(),
        "--output",
        f,
        "--output-format",
        "resp",
    ];
    two_runs(&src, &args, None);
    let check = Command::new("redis-check-aof")
        .arg(&file)
        .output()
        .expect("redis-check-aof");
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success() && said.contains("is valid"),
        "redis-check-aof: {said}"
    );
    let dst = Server::start(Flavor::Redis70);
    pipe_into(&file, &dst);
    check_equal(&src, &dst);
}

#[test]
fn stdout_pipe_resumes_through_output_state() {
    if !require(Flavor::Redis70) {
        return;
    }
    let src = Server::start(Flavor::Redis70);
    let dir = tempfile::tempdir().expect("dir");
    let piped = dir.path().join("piped.aof");
    let state = dir.path().join("state");
    let s = state.to_str().expect("path");
    let args = [
        "--source",
        &src.url(),
        "--output",
        "-",
        "--output-format",
        "resp",
        "--output-state",
        s,
    ];
    two_runs(&src, &args, Some(&piped));
    assert!(std::fs::read_to_string(&state)
        .expect("state")
        .contains("shard "));
    let dst = Server::start(Flavor::Redis70);
    pipe_into(&piped, &dst);
    check_equal(&src, &dst);
}
