//! `--preflight` against real servers: each check's OK side and its WARN/FAIL side made real on
//! a live server, and, where the run itself can show it, the real run agreeing with the verdict
//! (a FAIL for PSYNC is a dump that fails; a portable-path WARN is a restore that transcodes; a
//! conflict FAIL is a restore that stops on that key; a multi-DB FAIL is a restore that refuses).
//!
//! - `dump_preflight`: OK on a plain source; PSYNC and SYNC renamed away in the config file
//!   (FAIL, suggests shake-rump); PSYNC renamed to CLOUDPSYNC (FAIL without, OK with
//!   `--psync-command`); a wrong and a missing password (FAIL); ACL users with and without
//!   +psync on 7.0 (ACL DRYRUN) and 6.2 (MULTI/DISCARD); `--json` agreeing with the text; the
//!   source's `sync_full` and DBSIZE unchanged.
//! - `sync_buffers_and_backlog`: through the core API shake-sync will call: a source taking
//!   writes at about 1 MB/s; `client-output-buffer-limit "replica 1mb 1mb 0"` (FAIL) and the
//!   default (OK); a 16 kB backlog (WARN) and a 512 MB one (OK); a target with
//!   allkeys-lru (FAIL), volatile-lru (WARN), noeviction (OK).
//! - `restore_portable_field_ttls_functions`: a Valkey 9.1 RDB with listpack data into Redis 6.2
//!   (WARN portable path; the real restore transcodes), with a hash field TTL (FAIL; WARN with
//!   `--field-ttls drop`), a Redis 7.0 RDB with a function library into Redis 6.2 (FAIL).
//! - `restore_memory_and_conflicts`: a target whose maxmemory is below the file (FAIL); a key of
//!   the file already on the target (FAIL under panic naming it, OK under rewrite; the real
//!   restore stops on it).
//! - `restore_into_cluster`: a multi-database RDB into a cluster without `--db-map` (FAIL; the
//!   real restore refuses) and with it (OK); a slot unassigned with CLUSTER DELSLOTS (FAIL).
//!
//! Build the binaries first: `cargo build -p shake-dump -p shake-restore`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use shake_core::net::{ConnectOptions, Endpoint};
use shake_core::preflight::{Preflight, Report, Status};
use shake_tests::{require, Cluster, Flavor, Server};

fn bin(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("current_exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{name} is not built at {}: run `cargo build -p shake-dump -p shake-restore` first",
        path.display()
    );
    path
}

fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(bin(tool))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("SHAKE_SOURCE_PASSWORD")
        .env_remove("SHAKE_TARGET_PASSWORD")
        .env_remove("SHAKE_TARGET")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One parsed line of the text report.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    status: String,
    name: String,
    rest: String,
}

/// Runs `tool args --preflight` as text and as JSON; checks that both agree and that the exit
/// code is 1 exactly when something failed. Returns the checks by name.
fn preflight(ctx: &str, tool: &str, args: &[&str]) -> HashMap<String, Line> {
    let mut a = args.to_vec();
    a.push("--preflight");
    let out = run(tool, &a);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "[{ctx}] {stderr}");
    let mut lines = Vec::new();
    let mut summary = None;
    for l in stdout.lines() {
        if l.starts_with("preflight: ") {
            summary = Some(l.to_string());
            continue;
        }
        let (status, rest) = l
            .split_once(' ')
            .unwrap_or_else(|| panic!("[{ctx}] bad line {l:?}"));
        let rest = rest.trim_start();
        let (name, rest) = rest
            .split_once(": ")
            .unwrap_or_else(|| panic!("[{ctx}] bad line {l:?}"));
        assert!(
            ["OK", "WARN", "FAIL"].contains(&status),
            "[{ctx}] bad status in {l:?}"
        );
        lines.push(Line {
            status: status.into(),
            name: name.into(),
            rest: rest.into(),
        });
    }
    let failed = lines.iter().any(|l| l.status == "FAIL");
    assert!(
        summary.is_some(),
        "[{ctx}] no summary line in:\n{stdout}{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(if failed { 1 } else { 0 }),
        "[{ctx}] exit code vs report:\n{stdout}{stderr}"
    );

    // The JSON form: one document with the same checks.
    a.push("--json");
    let jout = run(tool, &a);
    let doc: serde_json::Value = serde_json::from_slice(&jout.stdout)
        .unwrap_or_else(|e| panic!("[{ctx}] --json is not JSON ({e}): {}", text(&jout.stdout)));
    assert_eq!(doc["ok"], serde_json::Value::Bool(!failed), "[{ctx}] {doc}");
    assert_eq!(
        jout.status.code(),
        out.status.code(),
        "[{ctx}] json exit code"
    );
    let checks = doc["checks"].as_array().expect("checks array");
    assert_eq!(checks.len(), lines.len(), "[{ctx}] {doc}\n{stdout}");
    for (c, l) in checks.iter().zip(&lines) {
        assert_eq!(c["name"].as_str(), Some(l.name.as_str()), "[{ctx}]");
        assert_eq!(
            c["status"].as_str().map(str::to_ascii_uppercase).as_deref(),
            Some(l.status.as_str()),
            "[{ctx}] {}",
            l.name
        );
        // The text is `found -> advice`; found text can differ between the two runs only in
        // measured figures (rates), so compare the checks that do not measure.
        if !matches!(
            l.name.as_str(),
            "source.backlog" | "source.output-buffer" | "pair.memory"
        ) {
            let found = c["found"].as_str().unwrap_or_default();
            assert!(
                l.rest.starts_with(found),
                "[{ctx}] {found:?} vs {:?}",
                l.rest
            );
        }
    }
    let mut map = HashMap::new();
    for l in lines {
        map.insert(l.name.clone(), l);
    }
    map
}

fn expect(ctx: &str, checks: &HashMap<String, Line>, name: &str, status: &str) -> String {
    let l = checks
        .get(name)
        .unwrap_or_else(|| panic!("[{ctx}] no {name} line in {checks:#?}"));
    assert_eq!(l.status, status, "[{ctx}] {name}: {}", l.rest);
    l.rest.clone()
}

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, cmd: &redis::Cmd) -> T {
    cmd.query(con)
        .unwrap_or_else(|e| panic!("command failed: {e}"))
}

fn info_field(s: &Server, section: &str, field: &str) -> String {
    s.info(section).get(field).cloned().unwrap_or_default()
}

fn dbsize(s: &Server, db: i64) -> i64 {
    let mut c = s.client();
    q::<()>(&mut c, redis::cmd("SELECT").arg(db));
    q(&mut c, &redis::cmd("DBSIZE"))
}

fn config_set(s: &Server, name: &str, value: &str) {
    let mut c = s.client();
    q::<()>(&mut c, redis::cmd("CONFIG").arg("SET").arg(name).arg(value));
}

/// `n` strings of 1000 bytes that do not compress (so an RDB is as big as its data), and a
/// small set, hash and list (listpack-encoded on 7.2+/Valkey).
fn fill(s: &Server, db: i64, n: usize) {
    let mut c = s.client();
    q::<()>(&mut c, redis::cmd("SELECT").arg(db));
    let mut p = redis::pipe();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (db as u64);
    for i in 0..n {
        let value = shake_tests::incompressible(1000, &mut x);
        p.cmd("SET").arg(format!("k{i}")).arg(value).ignore();
    }
    p.cmd("SADD").arg("set").arg("a").arg("b").arg("c").ignore();
    p.cmd("HSET").arg("hash").arg("f").arg("v").ignore();
    p.cmd("RPUSH").arg("list").arg("a").arg("b").ignore();
    p.query::<()>(&mut c).expect("fill");
}

// ---------------------------------------------------------------------------------------------

#[test]
fn dump_preflight() {
    for flavor in [Flavor::Redis70, Flavor::Redis62] {
        if !require(flavor) {
            continue;
        }
        let ctx = format!("{flavor} plain");
        let source = Server::start(flavor);
        fill(&source, 0, 200);
        let before = (
            info_field(&source, "stats", "sync_full"),
            dbsize(&source, 0),
        );
        let c = preflight(&ctx, "shake-dump", &["--source", &source.url()]);
        expect(&ctx, &c, "source.connect", "OK");
        expect(&ctx, &c, "source.replication", "OK");
        expect(&ctx, &c, "source.output-buffer", "OK");
        expect(&ctx, &c, "source.backlog", "OK");
        let ks = expect(&ctx, &c, "source.keyspace", "OK");
        assert!(
            ks.contains(&format!("db0: {} keys", dbsize(&source, 0))),
            "[{ctx}] {ks}"
        );
        // Nothing was written and no sync was started.
        assert_eq!(
            (
                info_field(&source, "stats", "sync_full"),
                dbsize(&source, 0)
            ),
            before,
            "[{ctx}] the preflight changed the source"
        );

        // ACL users: with and without the replication commands.
        let mut con = source.client();
        q::<()>(
            &mut con,
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("app")
                .arg("on")
                .arg(">pw")
                .arg("+@read")
                .arg("+info")
                .arg("+replconf")
                .arg("+multi")
                .arg("+discard")
                .arg("+acl"),
        );
        q::<()>(
            &mut con,
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("rep")
                .arg("on")
                .arg(">pw")
                .arg("+@read")
                .arg("+info")
                .arg("+replconf")
                .arg("+psync")
                .arg("+sync")
                .arg("+multi")
                .arg("+discard")
                .arg("+acl"),
        );
        let app = format!("redis://app:pw@127.0.0.1:{}", source.port());
        let ctx = format!("{flavor} user without +psync");
        let c = preflight(&ctx, "shake-dump", &["--source", &app]);
        let r = expect(&ctx, &c, "source.replication", "FAIL");
        assert!(r.contains("+psync"), "[{ctx}] {r}");
        // The real dump agrees.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.rdb");
        let out = run("shake-dump", &["--source", &app, "-o", f.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "[{ctx}] the real dump: {}",
            text(&out.stderr)
        );
        let rep = format!("redis://rep:pw@127.0.0.1:{}", source.port());
        let ctx = format!("{flavor} user with +psync");
        let c = preflight(&ctx, "shake-dump", &["--source", &rep]);
        expect(&ctx, &c, "source.replication", "OK");
        assert_eq!(
            info_field(&source, "stats", "sync_full"),
            before.0,
            "[{ctx}] a sync was started"
        );
    }

    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    // PSYNC and SYNC renamed away in the config file: a managed service's look.
    let ctx = "PSYNC and SYNC renamed away";
    let source = Server::start_with(
        flavor,
        &[
            ("rename-command", "PSYNC \"\""),
            ("rename-command", "SYNC \"\""),
        ],
    );
    let c = preflight(ctx, "shake-dump", &["--source", &source.url()]);
    let r = expect(ctx, &c, "source.replication", "FAIL");
    assert!(r.contains("shake-rump"), "[{ctx}] {r}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rdb");
    let out = run(
        "shake-dump",
        &["--source", &source.url(), "-o", f.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "[{ctx}] the real dump: {}",
        text(&out.stderr)
    );

    // Renamed to CLOUDPSYNC: refused under the default name, accepted under its own.
    let ctx = "PSYNC renamed";
    let source = Server::start_with(
        flavor,
        &[
            ("rename-command", "PSYNC CLOUDPSYNC"),
            ("rename-command", "SYNC \"\""),
        ],
    );
    let c = preflight(ctx, "shake-dump", &["--source", &source.url()]);
    expect(ctx, &c, "source.replication", "FAIL");
    let c = preflight(
        ctx,
        "shake-dump",
        &["--source", &source.url(), "--psync-command", "CLOUDPSYNC"],
    );
    let r = expect(ctx, &c, "source.replication", "OK");
    assert!(r.contains("CLOUDPSYNC"), "[{ctx}] {r}");
    assert_eq!(info_field(&source, "stats", "sync_full"), "0", "[{ctx}]");

    // Passwords.
    let source = Server::start_with(flavor, &[("requirepass", "s3cret")]);
    let ctx = "wrong password";
    let bad = format!("redis://:nope@127.0.0.1:{}", source.port());
    let c = preflight(ctx, "shake-dump", &["--source", &bad]);
    let r = expect(ctx, &c, "source.connect", "FAIL");
    assert!(r.contains("password"), "[{ctx}] {r}");
    assert_eq!(c.len(), 1, "[{ctx}] nothing else can be checked: {c:#?}");
    let ctx = "no password";
    let c = preflight(ctx, "shake-dump", &["--source", &source.url()]);
    let r = expect(ctx, &c, "source.connect", "FAIL");
    assert!(
        r.contains("NOAUTH") && r.contains("SHAKE_SOURCE_PASSWORD"),
        "[{ctx}] {r}"
    );
    let ctx = "right password";
    let c = preflight(
        ctx,
        "shake-dump",
        &["--source", &source.url_with_password()],
    );
    let r = expect(ctx, &c, "source.connect", "OK");
    assert!(r.contains("AUTH accepted"), "[{ctx}] {r}");

    // --help documents the flags.
    for tool in ["shake-dump", "shake-restore"] {
        let h = text(&run(tool, &["--help"]).stdout);
        assert!(
            h.contains("--preflight") && h.contains("--json"),
            "{tool} --help: {h}"
        );
    }
}

/// A writer thread: about 1 MB/s of SETs until dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(s: &Server) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut con = s.client();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let mut p = redis::pipe();
                for _ in 0..10 {
                    p.cmd("SET")
                        .arg(format!("w{}", i % 1000))
                        .arg(vec![b'w'; 10_000])
                        .ignore();
                    i += 1;
                }
                let _ = p.query::<()>(&mut con);
                sleep(Duration::from_millis(100));
            }
        });
        // instantaneous_input_kbps averages the last ~1.6 s.
        sleep(Duration::from_secs(2));
        Writer {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn status_of(r: &Report, name: &str) -> (Status, String) {
    let c = r
        .checks()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} in\n{}", r.text()));
    (c.status, format!("{} -> {}", c.found, c.advice))
}

fn sync_report(source: &Server, target: &Server) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pf = Preflight::new(ConnectOptions::default());
    let s = Endpoint::parse(&source.url()).unwrap();
    let t = Endpoint::parse(&target.url()).unwrap();
    rt.block_on(pf.sync(&s, &t))
}

#[test]
fn sync_buffers_and_backlog() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let source = Server::start(flavor);
    let target = Server::start(flavor);
    fill(&source, 0, 3000); // a few MB
    let writer = Writer::start(&source);

    config_set(&source, "client-output-buffer-limit", "replica 1mb 1mb 0");
    config_set(&source, "repl-backlog-size", "16kb");
    let r = sync_report(&source, &target);
    let (s, t) = status_of(&r, "source.output-buffer");
    assert_eq!(
        s,
        Status::Fail,
        "1mb replica buffer under ~1 MB/s of writes: {t}\n{}",
        r.text()
    );
    let (s, t) = status_of(&r, "source.backlog");
    assert_eq!(s, Status::Warn, "16 kB backlog: {t}");

    config_set(
        &source,
        "client-output-buffer-limit",
        "replica 268435456 67108864 60",
    );
    config_set(&source, "repl-backlog-size", "512mb");
    let r = sync_report(&source, &target);
    let (s, t) = status_of(&r, "source.output-buffer");
    assert_eq!(s, Status::Ok, "default buffer: {t}");
    let (s, t) = status_of(&r, "source.backlog");
    assert_eq!(s, Status::Ok, "512 MB backlog: {t}");
    drop(writer);

    // The target's eviction policy.
    config_set(&target, "maxmemory", "1gb");
    for (policy, want) in [
        ("allkeys-lru", Status::Fail),
        ("volatile-lru", Status::Warn),
        ("noeviction", Status::Ok),
    ] {
        config_set(&target, "maxmemory-policy", policy);
        let r = sync_report(&source, &target);
        let (s, t) = status_of(&r, "target.eviction");
        assert_eq!(s, want, "{policy}: {t}");
        assert_eq!(r.ok(), want != Status::Fail, "{policy}:\n{}", r.text());
    }
    // The sync preflight started no sync and wrote nothing.
    assert_eq!(info_field(&source, "stats", "sync_full"), "0");
    assert_eq!(dbsize(&target, 0), 0);
}

#[test]
fn restore_portable_field_ttls_functions() {
    if !require(Flavor::Valkey91) || !require(Flavor::Redis62) || !require(Flavor::Redis70) {
        return;
    }
    let v91 = Server::start(Flavor::Valkey91);
    fill(&v91, 0, 100);
    let rdb = v91.save();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.rdb");
    std::fs::copy(&rdb, &plain).unwrap();
    let r62 = Server::start(Flavor::Redis62);
    let target = r62.url();
    let file = plain.to_str().unwrap();

    let ctx = "Valkey 9.1 listpacks into Redis 6.2";
    let c = preflight(ctx, "shake-restore", &["--target", &target, file]);
    expect(ctx, &c, "source.file", "OK");
    let f = expect(ctx, &c, "pair.format", "WARN");
    assert!(
        f.contains("portable path") && f.contains("listpack"),
        "[{ctx}] {f}"
    );
    expect(ctx, &c, "pair.conflicts", "OK");
    assert_eq!(dbsize(&r62, 0), 0, "[{ctx}] the preflight wrote");
    // The real restore takes the portable path for them.
    let out = run("shake-restore", &["--target", &target, file]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "[{ctx}] {err}");
    let transcoded: u64 = err
        .split(" transcoded")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("[{ctx}] no transcoded count in {err}"));
    assert!(transcoded > 0, "[{ctx}] {err}");

    // Same version into a fresh Valkey 9.1: fast path.
    let v91b = Server::start(Flavor::Valkey91);
    let c = preflight(
        "9.1 into 9.1",
        "shake-restore",
        &["--target", &v91b.url(), file],
    );
    expect("9.1 into 9.1", &c, "pair.format", "OK");

    // A hash field TTL: Redis 7.0 cannot hold it.
    let mut con = v91.client();
    q::<()>(
        &mut con,
        redis::cmd("HSET")
            .arg("ttlhash")
            .arg("f")
            .arg("v")
            .arg("g")
            .arg("w"),
    );
    q::<()>(
        &mut con,
        redis::cmd("HEXPIRE")
            .arg("ttlhash")
            .arg(100000)
            .arg("FIELDS")
            .arg(1)
            .arg("f"),
    );
    let rdb = v91.save();
    let ttl = dir.path().join("ttl.rdb");
    std::fs::copy(&rdb, &ttl).unwrap();
    let r70 = Server::start(Flavor::Redis70);
    let ctx = "field TTLs into Redis 7.0";
    let c = preflight(
        ctx,
        "shake-restore",
        &["--target", &r70.url(), ttl.to_str().unwrap()],
    );
    let f = expect(ctx, &c, "pair.field-ttls", "FAIL");
    assert!(f.contains("--field-ttls drop"), "[{ctx}] {f}");
    let c = preflight(
        ctx,
        "shake-restore",
        &[
            "--target",
            &r70.url(),
            "--field-ttls",
            "drop",
            ttl.to_str().unwrap(),
        ],
    );
    expect(ctx, &c, "pair.field-ttls", "WARN");
    assert_eq!(dbsize(&r70, 0), 0);

    // Functions into a server without FUNCTION.
    let src70 = Server::start(Flavor::Redis70);
    let mut con = src70.client();
    q::<()>(
        &mut con,
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("#!lua name=lib\nredis.register_function('f', function() return 1 end)"),
    );
    q::<()>(&mut con, redis::cmd("SET").arg("a").arg("b"));
    let rdb = src70.save();
    let ctx = "functions into Redis 6.2";
    let r62b = Server::start(Flavor::Redis62);
    let c = preflight(
        ctx,
        "shake-restore",
        &["--target", &r62b.url(), rdb.to_str().unwrap()],
    );
    let f = expect(ctx, &c, "pair.functions", "FAIL");
    assert!(f.contains("1 function libraries"), "[{ctx}] {f}");
    let c = preflight(
        ctx,
        "shake-restore",
        &["--target", &r70.url(), rdb.to_str().unwrap()],
    );
    expect(ctx, &c, "pair.functions", "OK");
}

#[test]
fn restore_memory_and_conflicts() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let source = Server::start(flavor);
    fill(&source, 0, 5000); // ~5 MB
    let rdb = source.save();
    let file = rdb.to_str().unwrap();
    let target = Server::start(flavor);

    let ctx = "empty target";
    let c = preflight(ctx, "shake-restore", &["--target", &target.url(), file]);
    expect(ctx, &c, "pair.memory", "OK");
    expect(ctx, &c, "pair.conflicts", "OK");
    expect(ctx, &c, "target.eviction", "OK");

    // maxmemory just above what the target uses: the file cannot fit.
    let used: u64 = info_field(&target, "memory", "used_memory")
        .parse()
        .unwrap();
    config_set(&target, "maxmemory", &(used + (1 << 20)).to_string());
    let ctx = "small maxmemory";
    let c = preflight(ctx, "shake-restore", &["--target", &target.url(), file]);
    expect(ctx, &c, "pair.memory", "FAIL");
    config_set(&target, "maxmemory", "0");

    // A non-empty target under panic: a key that is not in the file is a WARN (a sample cannot
    // prove there is no conflict)...
    let mut con = target.client();
    q::<()>(&mut con, redis::cmd("SET").arg("other").arg("mine"));
    let ctx = "unrelated key under panic";
    let c = preflight(ctx, "shake-restore", &["--target", &target.url(), file]);
    let f = expect(ctx, &c, "pair.conflicts", "WARN");
    assert!(f.contains("db0 holds 1 keys"), "[{ctx}] {f}");

    // ... half of the file's keys already there is a FAIL naming one of them.
    let mut p = redis::pipe();
    for i in 0..2500 {
        p.cmd("SET").arg(format!("k{i}")).arg("mine").ignore();
    }
    p.query::<()>(&mut con).expect("fill the target");
    let ctx = "conflicts under panic";
    let c = preflight(ctx, "shake-restore", &["--target", &target.url(), file]);
    let f = expect(ctx, &c, "pair.conflicts", "FAIL");
    assert!(f.contains("exist there, e.g. \"k"), "[{ctx}] {f}");
    assert_eq!(dbsize(&target, 0), 2501, "[{ctx}] the preflight wrote");
    let ctx = "conflicts under rewrite";
    let c = preflight(
        ctx,
        "shake-restore",
        &["--target", &target.url(), "--on-conflict", "rewrite", file],
    );
    expect(ctx, &c, "pair.conflicts", "OK");
    // The real restore under panic stops on such a key.
    let out = run("shake-restore", &["--target", &target.url(), file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn restore_into_cluster() {
    let flavor = Flavor::Redis70;
    if !require(flavor) {
        return;
    }
    let source = Server::start(flavor);
    fill(&source, 0, 50);
    fill(&source, 3, 50);
    let rdb = source.save();
    let file = rdb.to_str().unwrap();
    let cluster = Cluster::start(flavor);

    let ctx = "multi-db into a cluster";
    let c = preflight(ctx, "shake-restore", &["--target", &cluster.url(), file]);
    expect(ctx, &c, "target.slots", "OK");
    let f = expect(ctx, &c, "pair.databases", "FAIL");
    assert!(f.contains("has keys in db3 ("), "[{ctx}] {f}");
    let out = run("shake-restore", &["--target", &cluster.url(), file]);
    assert_eq!(out.status.code(), Some(1), "[{ctx}] {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--db-map"),
        "[{ctx}] {}",
        text(&out.stderr)
    );
    let c = preflight(
        ctx,
        "shake-restore",
        &["--target", &cluster.url(), "--db-map", "*=0", file],
    );
    expect(ctx, &c, "pair.databases", "OK");
    let f = expect(ctx, &c, "target.connect", "OK");
    assert!(f.contains("cluster of 3 masters"), "[{ctx}] {f}");

    // A slot range without a master.
    let m0 = &cluster.masters()[0];
    let mut con = m0.client();
    q::<()>(
        &mut con,
        redis::cmd("CLUSTER").arg("DELSLOTSRANGE").arg(100).arg(199),
    );
    let ctx = "slots 100-199 unassigned";
    let c = preflight(
        ctx,
        "shake-restore",
        &["--target", &m0.url(), "--db-map", "*=0", file],
    );
    let f = expect(ctx, &c, "target.slots", "FAIL");
    assert!(
        f.contains("100-199") && f.contains("100 of 16384"),
        "[{ctx}] {f}"
    );
    for m in cluster.masters() {
        assert_eq!(dbsize(m, 0), 0, "[{ctx}] the preflight wrote");
    }
}
