//! RedisShake v4 `shake.toml` files, read unchanged by `--config`, against real servers. Each
//! file is our own equivalent of a template RedisShake ships (not a copy); each run is compared
//! with shake-check against a run of the same tool with our own flags (or the source), and the
//! notes on stderr are checked: each ignored key reported once, used keys never.
//!
//! - `v4_sync_standalone`: `[sync_reader]` → shake-sync with `${VAR}` addresses, mixed-case
//!   keys, an unknown key, `block_key_prefix`, `block_db`, `block_command`, and the template's
//!   `[advanced]`/`[module]`; same data as the flags (`--exclude-key`, `--exclude-db`).
//! - `v4_sync_cluster`: cluster → cluster (`cluster = true` on both sides), equal to the source;
//!   `prefer_replica = true` runs as `--source-replica` (masters without replicas are read,
//!   each saying so).
//! - `v4_scan_reader_filter`: `[scan_reader]` run through shake-sync's front door (it runs
//!   shake-rump): `dbs`, `allow_key_prefix`/`allow_key_suffix`, `block_key_suffix`, `allow_db`,
//!   `rdb_restore_command_behavior = "rewrite"`; same data as shake-rump's flags.
//! - `v4_scan_ksn_follows`: `ksn = true` → `--follow`: a write after the scan arrives.
//! - `v4_aof_reader`: `[aof_reader]` with a Redis 7.0 multi-part AOF directory as `filepath`
//!   restores what the source holds; `timestamp` = a second before the last writes becomes
//!   `--until` and leaves them out (equal to a server that got only the first writes).
//! - `v4_rdb_reader_skip`: `[rdb_reader]` with `rdb_restore_command_behavior = "skip"` over a
//!   target holding a conflicting key; same data as shake-restore's flags (the key kept).
//! - `v4_file_writer_aof`: `[file_writer]` with `type = "aof"` → `shake-sync --output FILE
//!   --output-format resp`; the file replayed with `redis-cli --pipe` equals the source.
//! - `v4_command_groups`: `allow_command_group = ["STRING", "HASH", "TRANSACTIONS"]`,
//!   `block_command = ["HDEL"]`, `block_command_group = ["SCRIPTING"]` run unchanged: the full
//!   sync copies every key; of the stream the string and hash commands are applied (inside
//!   MULTI/EXEC too) but HDEL: the allowed keys equal the source's (shake-check), a list's and a
//!   set's keys are absent, HDEL's field is still there.
//! - `v4_refusals`: an unset `${VAR}`, an unknown `allow_command_group`, `sentinel = true`
//!   without `master`, `sync_aof = false` each stop with exit 2 and a line naming the key;
//!   nothing is written.

#[path = "live_common/mod.rs"]
mod live_common;
mod sync_common;

use std::path::Path;
use std::time::Duration;

use shake_tests::{require, run_tool, shake_check, Cluster, Flavor, Server};
use sync_common::{cluster_snapshot, converge, data_of, Sync};

const FLAVOR: Flavor = Flavor::Redis70;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p.to_string_lossy().into_owned()
}

fn set(s: &Server, db: i64, pairs: &[(&str, &str)]) {
    let mut con = s.client();
    let _: () = redis::cmd("SELECT").arg(db).query(&mut con).unwrap();
    for (k, v) in pairs {
        let _: () = redis::cmd("SET").arg(*k).arg(*v).query(&mut con).unwrap();
    }
}

fn keys(s: &Server, db: i64) -> Vec<String> {
    let mut con = s.client();
    let _: () = redis::cmd("SELECT").arg(db).query(&mut con).unwrap();
    let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    k.retain(|k| !k.starts_with("shake-sync:"));
    k.sort();
    k
}

fn assert_equal(a: &str, b: &str, what: &str) {
    let (same, text) = shake_check(a, b, &[]);
    assert!(same, "{what}: {a} and {b} differ:\n{text}");
}

fn assert_noted_once(log: &str, keys: &[&str]) {
    for key in keys {
        assert_eq!(
            log.matches(&format!("{key} ignored")).count(),
            1,
            "{key} not reported exactly once:\n{log}"
        );
    }
}

fn assert_not_noted(log: &str, keys: &[&str]) {
    for key in keys {
        assert!(
            !log.contains(&format!("{key} ignored")),
            "{key} reported as ignored:\n{log}"
        );
    }
}

// The [advanced] and [module] sections as RedisShake's templates have them (our own text).
fn advanced(behavior: &str) -> String {
    format!(
        r#"
[advanced]
rdb_restore_command_behavior = "{behavior}"
dir = "data"
ncpu = 0
pprof_port = 0
status_port = 0
log_file = "shake.log"
log_level = "info"
log_interval = 5
pipeline_count_limit = 1024
target_redis_client_max_querybuf_len = 1073741824
target_redis_proto_max_bulk_len = 512_000_000
aws_psync = ""
empty_db_before_sync = false

[module]
target_mbbloom_version = 20603
"#
    )
}

#[test]
fn v4_sync_standalone() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    let (a, b) = (Server::start(FLAVOR), Server::start(FLAVOR));
    set(&src, 0, &[("k1", "v1"), ("k2", "v2"), ("tmp:1", "t")]);
    set(&src, 2, &[("other", "db2")]);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "shake.toml",
        &format!(
            r#"[Sync_Reader]
Cluster = false
ADDRESS = "${{SRC_ADDR}}"
username = ""
password = ""
tls = false
sync_rdb = true
sync_aof = true
prefer_replica = false
try_diskless = false
colour = "blue"

[redis_writer]
cluster = false
sentinel = false
master = ""
address = "127.0.0.1:${{DST_PORT}}"
username = ""
password = ""
tls = false
off_reply = false

[filter]
block_key_prefix = ["tmp:"]
block_db = [2]
block_command = ["del"]
{}"#,
            advanced("panic")
                .replace("[advanced]", "[Advanced]")
                .replace("log_interval", "LOG_Interval")
        ),
    );
    let env = [
        ("SRC_ADDR", format!("127.0.0.1:{}", src.port())),
        ("DST_PORT", a.port().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut by_file = Sync::start_args(&["--config", &file, "--log-interval", "1"], &env);
    let mut by_flags = Sync::start(
        &src.url(),
        &b.url(),
        &[
            "--source-single-node",
            "--exclude-db",
            "2",
            "--exclude-key",
            "tmp:*",
            "--exclude-command",
            "DEL",
        ],
    );
    by_file.wait_incremental(Duration::from_secs(30));
    by_flags.wait_incremental(Duration::from_secs(30));
    // block_command = ["del"]: the source's DEL is not applied (k1 stays on the targets).
    let _: () = redis::cmd("DEL")
        .arg("k1")
        .query(&mut src.client())
        .unwrap();
    set(&src, 0, &[("after", "the full sync"), ("tmp:2", "t")]);
    set(&src, 2, &[("late", "db2")]);
    // The flags run is the reference: the file's run must converge to it.
    let want = ["after", "k1", "k2"];
    let t = std::time::Instant::now();
    while (keys(&a, 0) != want || keys(&b, 0) != want) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    converge(
        "v4 sync against the flags run",
        &|| data_of(live_common::snapshot(&mut b.client())),
        &|| data_of(live_common::snapshot(&mut a.client())),
        Duration::from_secs(20),
    );
    let (code, log) = by_file.stop();
    assert_eq!(code, Some(0), "{log}");
    let (code, flags_log) = by_flags.stop();
    assert_eq!(code, Some(0), "{flags_log}");
    assert_equal(&a.url(), &b.url(), "config run against flags run");
    assert_eq!(keys(&a, 0), want, "block_key_prefix left out tmp:*");
    assert!(keys(&a, 2).is_empty(), "block_db = [2] left out database 2");
    assert_noted_once(
        &log,
        &[
            "sync_reader.colour",
            "sync_reader.try_diskless",
            "advanced.dir",
            "advanced.ncpu",
            "advanced.pprof_port",
            "advanced.log_file",
            "advanced.log_level",
            "advanced.target_redis_client_max_querybuf_len",
            "module.target_mbbloom_version",
        ],
    );
    assert_not_noted(
        &log,
        &[
            "address",
            "password",
            "cluster",
            "rdb_restore_command_behavior",
            "log_interval",
            "pipeline_count_limit",
            "target_redis_proto_max_bulk_len",
            "status_port",
            "off_reply",
        ],
    );
}

#[test]
fn v4_sync_cluster() {
    if !require(FLAVOR) {
        return;
    }
    let src = Cluster::start_with(FLAVOR, &[sync_common::ONE_DB]);
    let dst = Cluster::start_with(FLAVOR, &[sync_common::ONE_DB]);
    {
        let mut con = src.connection();
        for i in 0..300 {
            let _: () = redis::cmd("SET")
                .arg(format!("key:{i}"))
                .arg(i)
                .query(&mut con)
                .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "shake.toml",
        &format!(
            "[sync_reader]\ncluster = true\nprefer_replica = true\naddress = \"127.0.0.1:{}\"\n\n[redis_writer]\ncluster = true\naddress = \"127.0.0.1:{}\"\n{}",
            src.masters()[0].port(),
            dst.masters()[1].port(),
            advanced("panic")
        ),
    );
    let mut sync = Sync::start_args(&["--config", &file, "--log-interval", "1"], &[]);
    sync.wait_incremental(Duration::from_secs(60));
    {
        let mut con = src.connection();
        let _: () = redis::cmd("SET")
            .arg("late")
            .arg("1")
            .query(&mut con)
            .unwrap();
    }
    converge(
        "v4 cluster sync",
        &|| cluster_snapshot(&src),
        &|| cluster_snapshot(&dst),
        Duration::from_secs(30),
    );
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_equal(
        &src.url(),
        &dst.url(),
        "cluster config run against the source",
    );
    assert_eq!(cluster_snapshot(&dst).keys.len(), 301);
    // prefer_replica = true is --source-replica: masters without replicas say so and are read.
    assert_eq!(
        log.matches("no healthy replica (the master has no replica); replicating from the master")
            .count(),
        3,
        "{log}"
    );
    assert!(!log.contains("prefer_replica"), "{log}");
}

#[test]
fn v4_scan_reader_filter() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    let (a, b) = (Server::start(FLAVOR), Server::start(FLAVOR));
    for db in [0, 1, 3] {
        set(
            &src,
            db,
            &[
                ("user:1", "u"),
                ("user:2:tmp", "t"),
                ("order:9:active", "o"),
                ("cache:x", "c"),
            ],
        );
    }
    // Both targets already hold a key the copy rewrites.
    set(&a, 0, &[("user:1", "old")]);
    set(&b, 0, &[("user:1", "old")]);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "scan.toml",
        &format!(
            r#"[scan_reader]
cluster = false
address = "127.0.0.1:{}"
tls = false
dbs = [0, 1]
scan = true
ksn = false
count = 1

[redis_writer]
address = "127.0.0.1:{}"

[filter]
allow_key_prefix = ["user:"]
allow_key_suffix = [":active"]
allow_db = [0, 3]
block_key_prefix = []
block_key_suffix = [":tmp"]
function = ""
{}"#,
            src.port(),
            a.port(),
            advanced("rewrite")
        ),
    );
    // The front door: shake-sync runs shake-rump for a [scan_reader] file.
    let (code, log) = run_tool("shake-sync", &["--config", &file], &[]);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("running") && log.contains("shake-rump"),
        "{log}"
    );
    let (code, flags_log) = run_tool(
        "shake-rump",
        &[
            "--source",
            &src.url(),
            "--target",
            &b.url(),
            "--db",
            "0",
            "--key-regex",
            "^user:|:active$",
            "--exclude-key",
            "*:tmp",
            "--on-conflict",
            "rewrite",
            "--no-source-cluster",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{flags_log}");
    assert_equal(&a.url(), &b.url(), "scan config run against flags run");
    // dbs = [0, 1] and allow_db = [0, 3]: database 0 only, keys by prefix or suffix.
    assert_eq!(keys(&a, 0), vec!["order:9:active", "user:1"]);
    assert!(keys(&a, 1).is_empty() && keys(&a, 3).is_empty());
    let v: String = redis::cmd("GET")
        .arg("user:1")
        .query(&mut a.client())
        .unwrap();
    assert_eq!(v, "u", "rewrite replaced the target's key");
    assert_noted_once(&log, &["advanced.dir", "module.target_mbbloom_version"]);
    assert_not_noted(&log, &["filter.function", "count", "dbs", "allow_db"]);
}

#[test]
fn v4_scan_ksn_follows() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    let dst = Server::start(FLAVOR);
    set(&src, 0, &[("before", "1")]);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "scan.toml",
        &format!(
            "[scan_reader]\naddress = \"127.0.0.1:{}\"\nksn = true\ncount = 100\n[redis_writer]\naddress = \"127.0.0.1:{}\"\n[advanced]\nrdb_restore_command_behavior = \"rewrite\"\n",
            src.port(),
            dst.port()
        ),
    );
    let child = std::process::Command::new(shake_tests::tool_binary("shake-rump"))
        .args(["--config", &file])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn shake-rump");
    let t = std::time::Instant::now();
    while keys(&dst, 0).is_empty() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    set(&src, 0, &[("after", "2")]);
    while keys(&dst, 0).len() < 2 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_equal(&src.url(), &dst.url(), "ksn = true follows the source");
    assert_eq!(keys(&dst, 0), vec!["after", "before"], "{log}");
}

#[test]
fn v4_rdb_reader_skip() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    set(&src, 0, &[("a", "1"), ("b", "2")]);
    set(&src, 4, &[("c", "3")]);
    let rdb = src.save();
    let (a, b) = (Server::start(FLAVOR), Server::start(FLAVOR));
    set(&a, 0, &[("a", "theirs")]);
    set(&b, 0, &[("a", "theirs")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&rdb, dir.path().join("dump.rdb")).unwrap();
    // A relative filepath is read from advanced.dir, as RedisShake does.
    let file = write(
        dir.path(),
        "rdb.toml",
        &format!(
            "[rdb_reader]\nfilepath = \"dump.rdb\"\n\n[redis_writer]\ncluster = false\naddress = \"127.0.0.1:{}\"\n\n[advanced]\ndir = \"{}\"\nrdb_restore_command_behavior = \"skip\"\nlog_interval = 5\n",
            a.port(),
            dir.path().display()
        ),
    );
    let (code, log) = run_tool("shake-restore", &["--config", &file], &[]);
    assert_eq!(code, Some(0), "{log}");
    let (code, flags_log) = run_tool(
        "shake-restore",
        &[
            "--target",
            &b.url(),
            "--on-conflict",
            "ignore",
            rdb.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{flags_log}");
    assert_equal(&a.url(), &b.url(), "rdb config run against flags run");
    let v: String = redis::cmd("GET").arg("a").query(&mut a.client()).unwrap();
    assert_eq!(v, "theirs", "skip kept the target's key");
    assert_eq!(keys(&a, 4), vec!["c"]);
    assert_noted_once(&log, &["advanced.dir"]);
}

#[test]
fn v4_refusals() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    let dst = Server::start(FLAVOR);
    set(&src, 0, &[("k", "v")]);
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[sync_reader]\naddress = \"127.0.0.1:{}\"\n[redis_writer]\naddress = \"127.0.0.1:{}\"\n",
        src.port(),
        dst.port()
    );
    let cases = [
        (
            base.replace("127.0.0.1:", "${NO_SUCH_SHAKE_VAR}:"),
            "NO_SUCH_SHAKE_VAR",
        ),
        (
            format!("{base}[filter]\nallow_command_group = [\"STRINGS\"]\n"),
            "filter.allow_command_group \"STRINGS\": not a command group",
        ),
        (
            base.replace("[redis_writer]\n", "[redis_writer]\nsentinel = true\n"),
            "redis_writer.sentinel",
        ),
        (
            base.replace("[redis_writer]\n", "sync_aof = false\n[redis_writer]\n"),
            "sync_reader.sync_aof",
        ),
    ];
    for (i, (text, named)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{i}.toml"), text);
        let (code, log) = run_tool("shake-sync", &["--config", &file], &[]);
        assert_eq!(code, Some(2), "{named}:\n{log}");
        assert!(log.contains(named), "{named} not named:\n{log}");
        assert_eq!(log.lines().count(), 1, "one line:\n{log}");
    }
    assert!(keys(&dst, 0).is_empty(), "nothing was written");
}

#[test]
fn v4_command_groups() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    let dst = Server::start(FLAVOR);
    set(&src, 0, &[("pre:s", "v")]);
    let mut c = src.client();
    let _: () = redis::cmd("RPUSH")
        .arg("pre:l")
        .arg("a")
        .query(&mut c)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[sync_reader]
cluster = false
address = "127.0.0.1:{}"
username = ""
password = ""
tls = false
sync_rdb = true
sync_aof = true

[redis_writer]
cluster = false
address = "127.0.0.1:{}"
username = ""
password = ""
tls = false

[filter]
allow_keys = []
allow_key_prefix = []
allow_db = []
block_key_prefix = []
allow_command = []
block_command = ["HDEL"]
allow_command_group = ["STRING", "HASH", "TRANSACTIONS"]
block_command_group = ["SCRIPTING"]
"#,
        src.port(),
        dst.port()
    );
    let file = write(dir.path(), "groups.toml", &text);
    let mut sync = Sync::start_args(&["--config", &file, "--log-interval", "1"], &[]);
    sync.wait_incremental(Duration::from_secs(30));
    let run = |c: &mut redis::Connection, argv: &[&str]| {
        let mut k = redis::cmd(argv[0]);
        for a in &argv[1..] {
            k.arg(*a);
        }
        let _: redis::Value = k.query(c).unwrap();
    };
    run(&mut c, &["SET", "s:1", "a"]);
    run(&mut c, &["APPEND", "s:1", "b"]);
    run(&mut c, &["HSET", "h:1", "f", "v", "g", "w"]);
    run(&mut c, &["HDEL", "h:1", "g"]);
    run(&mut c, &["LPUSH", "l:1", "x"]);
    run(&mut c, &["RPUSH", "pre:l", "b"]);
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("s:tx")
        .arg("1")
        .cmd("SADD")
        .arg("set:tx")
        .arg("m")
        .cmd("INCR")
        .arg("s:tx")
        .query(&mut c)
        .unwrap();
    run(&mut c, &["SET", "s:last", "done"]);
    let t = std::time::Instant::now();
    loop {
        let v: Option<String> = redis::cmd("GET")
            .arg("s:last")
            .query(&mut dst.client())
            .unwrap();
        if v.as_deref() == Some("done") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "s:last never arrived:\n{}",
            sync.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_not_noted(
        &log,
        &[
            "filter.allow_command_group",
            "filter.block_command_group",
            "filter.block_command",
        ],
    );
    let (same, report) = shake_check(&src.url(), &dst.url(), &["--key-regex", "^(s:.*|pre:s)$"]);
    assert!(same, "the string keys differ:\n{report}");
    // HDEL was blocked: the target's hash keeps g; the list and set commands were not allowed.
    let h: Vec<String> = redis::cmd("HKEYS")
        .arg("h:1")
        .query(&mut dst.client())
        .unwrap();
    assert_eq!(h, ["f", "g"]);
    assert_eq!(
        keys(&dst, 0),
        ["h:1", "pre:l", "pre:s", "s:1", "s:last", "s:tx"]
    );
    let l: Vec<String> = redis::cmd("LRANGE")
        .arg("pre:l")
        .arg(0)
        .arg(-1)
        .query(&mut dst.client())
        .unwrap();
    assert_eq!(
        l,
        ["a"],
        "the full sync copied pre:l, the stream's RPUSH was left out"
    );
}

#[test]
fn v4_file_writer_aof() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start(FLAVOR);
    set(&src, 0, &[("a", "1"), ("b", "2")]);
    set(&src, 1, &[("c", "3")]);
    let dir = tempfile::tempdir().unwrap();
    let aof = dir.path().join("out.aof");
    let text = format!(
        "[sync_reader]\naddress = \"127.0.0.1:{}\"\n[file_writer]\nfilepath = \"{}\"\ntype = \"aof\"\nunknown_key = 1\n",
        src.port(),
        aof.display()
    );
    let file = write(dir.path(), "file.toml", &text);
    let mut sync = Sync::start_args(&["--config", &file], &[]);
    sync.wait_incremental(Duration::from_secs(20));
    set(&src, 2, &[("after", "x")]);
    // Stopped once the stream's write is in the file (a fixed sleep was too short under load).
    let t = std::time::Instant::now();
    while !std::fs::read(&aof)
        .map(|b| b.windows(5).any(|w| w == b"after"))
        .unwrap_or(false)
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the write after the full sync never reached {}",
            aof.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, log) = sync.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_noted_once(&log, &["file_writer.unknown_key"]);
    assert_not_noted(&log, &["file_writer.filepath", "file_writer.type"]);
    let dst = Server::start(FLAVOR);
    let out = std::process::Command::new(shake_tests::redis_cli())
        .args(["-p", &dst.port().to_string(), "--pipe"])
        .stdin(std::fs::File::open(&aof).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_equal(&src.url(), &dst.url(), "[file_writer] type = aof replayed");
}

#[test]
fn v4_aof_reader() {
    if !require(FLAVOR) {
        return;
    }
    let src = Server::start_with(
        FLAVOR,
        &[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("aof-timestamp-enabled", "yes"),
        ],
    );
    let reference = Server::start(FLAVOR);
    set(&src, 0, &[("a", "1"), ("b", "2")]);
    set(&reference, 0, &[("a", "1"), ("b", "2")]);
    let first = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Past the second of the first writes (and a tick of the server's clock).
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= first
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(250));
    set(&src, 0, &[("a", "changed"), ("c", "3")]);
    let aofdir = src.dir().join("appendonlydir");
    let dir = tempfile::tempdir().unwrap();
    for (ts, expected) in [(0u64, &src), (first, &reference)] {
        let dst = Server::start(FLAVOR);
        let file = write(
            dir.path(),
            "aof.toml",
            &format!(
                "[aof_reader]\nfilepath = \"{}\"\ntimestamp = {ts}\n\n[redis_writer]\naddress = \"127.0.0.1:{}\"\n",
                aofdir.display(),
                dst.port()
            ),
        );
        let (code, log) = run_tool("shake-restore", &["--config", &file], &[]);
        assert_eq!(code, Some(0), "{log}");
        assert_equal(
            &expected.url(),
            &dst.url(),
            &format!("[aof_reader] timestamp = {ts}"),
        );
    }
}
