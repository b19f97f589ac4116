//! Tests of shake-core's client (`shake_core::client`) against real servers: cluster detection
//! and master discovery, the pipelined connection, and the standalone/cluster target with its
//! redirections (MOVED, ASK), retries (TRYAGAIN), reconnects and failures.
//!
//! Slot migrations are driven by hand, as `redis-cli --cluster reshard` does them: SETSLOT
//! IMPORTING on the destination, MIGRATING on the source, MIGRATE the keys, SETSLOT NODE.

use std::future::Future;
use std::thread;
use std::time::Duration;

use redis::Commands;
use shake_core::client::{
    discover_masters, is_cluster, slot_of, ClientError, Idempotent, Pipeline, PipelineOptions,
    RetryPolicy, Target, TargetOptions,
};
use shake_core::net::{ConnectOptions, Connection, Endpoint};
use shake_core::resp::{encode_command, Reply};
use shake_tests::*;

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Bounds every wait on the client, so a hang fails the test instead of blocking it forever.
async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
}

fn endpoint(url: &str) -> Endpoint {
    Endpoint::parse(url).unwrap_or_else(|e| panic!("{e}"))
}

fn cmd<A: AsRef<[u8]>>(argv: &[A]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(&mut out, argv);
    out
}

fn is_ok(r: &Reply) -> bool {
    r.as_bytes() == Some(b"OK")
}

fn options(window: usize) -> TargetOptions {
    TargetOptions {
        window: PipelineOptions {
            max_commands: window,
            max_bytes: 1 << 20,
        },
        ..TargetOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster detection and discovery

/// The masters `discover_masters` finds are the rig's three, in slot order: CLUSTER SHARDS on
/// 7.0+, the CLUSTER SLOTS fallback on 6.2.
fn discovers_masters(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let cluster = Cluster::start(flavor);
    // Seed with the last master, so the result's order cannot come from the seed.
    let seed = endpoint(&cluster.masters()[2].url());
    block_on(async {
        let masters = discover_masters(&seed, &ConnectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ports: Vec<u16> = masters.iter().map(|m| m.port).collect();
        let expected: Vec<u16> = cluster.masters().iter().map(Server::port).collect();
        assert_eq!(ports, expected, "{flavor}: masters in slot order");

        let mut conn = Connection::connect(&seed, &ConnectOptions::default())
            .await
            .unwrap();
        assert!(
            is_cluster(&mut conn).await.unwrap(),
            "{flavor} cluster node"
        );
    });
}

#[test]
fn discovers_masters_redis70_shards() {
    discovers_masters(Flavor::Redis70);
}

#[test]
fn discovers_masters_redis62_slots_fallback() {
    discovers_masters(Flavor::Redis62);
}

#[test]
fn discovers_masters_valkey91() {
    discovers_masters(Flavor::Valkey91);
}

#[test]
fn standalone_is_not_a_cluster() {
    if !require(Flavor::Redis70) {
        return;
    }
    let server = Server::start(Flavor::Redis70);
    let ep = endpoint(&server.url());
    block_on(async {
        let mut conn = Connection::connect(&ep, &ConnectOptions::default())
            .await
            .unwrap();
        assert!(!is_cluster(&mut conn).await.unwrap());
        match discover_masters(&ep, &ConnectOptions::default()).await {
            Err(ClientError::NotCluster { endpoint }) => assert_eq!(endpoint, ep.to_string()),
            other => panic!("expected NotCluster, got {other:?}"),
        }
        let forced = TargetOptions {
            cluster: Some(true),
            ..TargetOptions::default()
        };
        match Target::<()>::connect(&ep, forced).await {
            Err(e @ ClientError::NotCluster { .. }) => {
                assert!(e.to_string().contains(&ep.address()), "{e}")
            }
            other => panic!("expected NotCluster, got {other:?}"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Pipeline

/// Thousands of INCRBYs through a window of 8 commands / 300 bytes: every reply is the running
/// sum of its own key, so a reply matched to the wrong command shows; the window is never
/// exceeded; a command larger than the byte window still goes through.
#[test]
fn pipeline_matches_every_reply_with_a_small_window() {
    if !require(Flavor::Redis70) {
        return;
    }
    let server = Server::start(Flavor::Redis70);
    let ep = endpoint(&server.url());
    block_on(bounded("the pipeline", async {
        let conn = Connection::connect(&ep, &ConnectOptions::default())
            .await
            .unwrap();
        let window = PipelineOptions {
            max_commands: 8,
            max_bytes: 300,
        };
        let mut pipe: Pipeline<(usize, i64)> = Pipeline::new(conn, window);
        let mut sums = [0i64; 37];
        let mut checked = 0;
        let mut check = |(i, expected): (usize, i64), reply: Reply| {
            assert_eq!(reply, Reply::Int(expected), "reply to command {i}");
            checked += 1;
        };
        for i in 0..5000usize {
            let k = i % 37;
            sums[k] += i as i64;
            let c = cmd(&["INCRBY".to_string(), format!("counter:{k}"), i.to_string()]);
            pipe.submit(&c, (i, sums[k])).await.unwrap();
            assert!(pipe.in_flight() <= 8, "{} in flight", pipe.in_flight());
            assert!(
                pipe.in_flight_bytes() <= 300,
                "{} bytes",
                pipe.in_flight_bytes()
            );
            while let Some((tag, reply)) = pipe.try_completion() {
                check(tag, reply);
            }
        }
        let big = "x".repeat(1000);
        pipe.submit(&cmd(&["SET", "big", big.as_str()]), (usize::MAX, 0))
            .await
            .unwrap();
        let mut rest = pipe.drain().await.unwrap();
        let (tag, reply) = rest.pop().expect("the big SET's reply");
        assert_eq!(tag.0, usize::MAX);
        assert!(is_ok(&reply), "{reply:?}");
        for (tag, reply) in rest {
            check(tag, reply);
        }
        assert_eq!(checked, 5000);
        assert_eq!(pipe.next_completion().await.unwrap(), None);
    }));
    let mut con = server.client();
    let got: i64 = con.get("counter:0").unwrap();
    assert_eq!(got, (0..5000).filter(|i| i % 37 == 0).sum::<i64>());
    let big: String = con.get("big").unwrap();
    assert_eq!(big.len(), 1000);
}

// ---------------------------------------------------------------------------------------------
// Standalone target

/// A standalone target writes to the URL's database and follows `select`; a reply that is an
/// error (WRONGTYPE) is handed to the caller with its tag.
#[test]
fn standalone_target_selects_databases_and_returns_error_replies() {
    if !require(Flavor::Redis70) {
        return;
    }
    let server = Server::start(Flavor::Redis70);
    let ep = endpoint(&format!("{}/3", server.url()));
    block_on(bounded("the standalone target", async {
        let mut t: Target<String> = Target::connect(&ep, options(16)).await.unwrap();
        assert!(!t.is_cluster());
        assert_eq!(t.masters(), vec![ep.clone()]);
        for i in 0..100 {
            let k = format!("k{i}");
            t.submit(
                Some(k.as_bytes()),
                cmd(&["SET", &k, "db3"]),
                Idempotent::Yes,
                k.clone(),
            )
            .await
            .unwrap();
        }
        t.select(5).unwrap();
        t.submit(
            Some(b"k0"),
            cmd(&["SET", "k0", "db5"]),
            Idempotent::Yes,
            "db5".into(),
        )
        .await
        .unwrap();
        t.submit(
            Some(b"k0"),
            cmd(&["LPUSH", "k0", "x"]),
            Idempotent::No,
            "wrongtype".into(),
        )
        .await
        .unwrap();
        let done = t.drain().await.unwrap();
        assert_eq!(done.len(), 102);
        for (tag, reply) in &done {
            if tag == "wrongtype" {
                assert!(
                    reply.error().is_some_and(|e| e.starts_with("WRONGTYPE")),
                    "{reply:?}"
                );
            } else {
                assert!(is_ok(reply), "{tag}: {reply:?}");
            }
        }
        let dbsize = t.broadcast(&["DBSIZE"]).await.unwrap();
        assert_eq!(dbsize.len(), 1);
        assert_eq!(
            dbsize[0].1,
            Reply::Int(1),
            "DBSIZE of db 5 (broadcast follows select)"
        );
    }));
    let mut con = server.client();
    redis::cmd("SELECT").arg(3).query::<()>(&mut con).unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 100);
    let v: String = con.get("k0").unwrap();
    assert_eq!(v, "db3");
    redis::cmd("SELECT").arg(5).query::<()>(&mut con).unwrap();
    let v: String = con.get("k0").unwrap();
    assert_eq!(v, "db5");
}

/// Queues `DEBUG SLEEP` and then `n` commands built by `make`, so that they are all in flight
/// (unanswered) when the server is killed during the sleep.
async fn submit_behind_a_sleep(
    t: &mut Target<usize>,
    n: usize,
    idem: Idempotent,
    make: impl Fn(usize) -> Vec<u8>,
) {
    t.submit(
        None,
        cmd(&["DEBUG", "SLEEP", "1"]),
        Idempotent::Yes,
        usize::MAX,
    )
    .await
    .unwrap();
    for i in 0..n {
        t.submit(Some(format!("k{i}").as_bytes()), make(i), idem, i)
            .await
            .unwrap();
    }
}

/// Kills `server` after `delay`, from another thread, and optionally starts it again.
fn kill_later(mut server: Server, delay: Duration, restart: bool) -> thread::JoinHandle<Server> {
    thread::spawn(move || {
        thread::sleep(delay);
        server.kill();
        if restart {
            thread::sleep(Duration::from_millis(200));
            server.restart();
        }
        server
    })
}

/// A standalone server killed with INCRs in flight: the target cannot know which were applied,
/// so it stops with an error naming the endpoint and the INCR, instead of hanging or resending.
#[test]
fn standalone_killed_with_unsafe_commands_in_flight_fails_clearly() {
    if !require(Flavor::Redis70) {
        return;
    }
    let server = Server::start(Flavor::Redis70);
    let ep = endpoint(&server.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut t: Target<usize> = rt.block_on(Target::connect(&ep, options(1000))).unwrap();
    rt.block_on(submit_behind_a_sleep(&mut t, 200, Idempotent::No, |i| {
        cmd(&["INCR".to_string(), format!("k{i}")])
    }));
    let killer = kill_later(server, Duration::from_millis(300), false);
    let err = rt
        .block_on(bounded("flush_all", t.flush_all()))
        .expect_err("the server died with INCRs unanswered");
    let _server = killer.join().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, ClientError::UnsafeResend { .. }), "{msg}");
    assert!(msg.contains(&ep.address()), "names the endpoint: {msg}");
    assert!(
        msg.contains("INCR \"k0\""),
        "names the first unsafe command: {msg}"
    );
    // The target stays failed.
    let again = rt.block_on(t.submit(Some(b"x"), cmd(&["SET", "x", "1"]), Idempotent::Yes, 0));
    assert!(
        matches!(again, Err(ClientError::Failed { .. })),
        "{again:?}"
    );
}

/// A standalone server killed for good with idempotent commands in flight: a bounded number of
/// reconnects, then an error naming the endpoint.
#[test]
fn standalone_killed_for_good_gives_up_after_bounded_reconnects() {
    if !require(Flavor::Redis70) {
        return;
    }
    let server = Server::start(Flavor::Redis70);
    let ep = endpoint(&server.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = TargetOptions {
        reconnect: RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(20),
            max: Duration::from_millis(50),
        },
        ..options(1000)
    };
    let mut t: Target<usize> = rt.block_on(Target::connect(&ep, opts)).unwrap();
    rt.block_on(submit_behind_a_sleep(&mut t, 200, Idempotent::Yes, |i| {
        cmd(&["SET".to_string(), format!("k{i}"), "v".into()])
    }));
    let killer = kill_later(server, Duration::from_millis(300), false);
    let err = rt
        .block_on(bounded("flush_all", t.flush_all()))
        .expect_err("the server is gone");
    let _server = killer.join().unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err, ClientError::Unreachable { attempts: 3, .. }),
        "{msg}"
    );
    assert!(msg.contains(&ep.address()), "names the endpoint: {msg}");
    assert_eq!(
        t.stats().reconnects,
        4,
        "one lost connection + 3 refused attempts"
    );
}

/// A standalone server killed and started again while idempotent commands were in flight: the
/// target reconnects, selects its database again, resends them in order, and all land.
#[test]
fn standalone_restarted_gets_the_unanswered_commands_again() {
    if !require(Flavor::Redis70) {
        return;
    }
    let server = Server::start(Flavor::Redis70);
    let ep = endpoint(&format!("{}/2", server.url()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = TargetOptions {
        reconnect: RetryPolicy {
            attempts: 30,
            base: Duration::from_millis(20),
            max: Duration::from_millis(300),
        },
        ..options(1000)
    };
    let mut t: Target<usize> = rt.block_on(Target::connect(&ep, opts)).unwrap();
    // Two SETs of the same key: the later one must win after the resend too.
    rt.block_on(submit_behind_a_sleep(&mut t, 300, Idempotent::Yes, |i| {
        let k = if i == 299 {
            "k0".to_string()
        } else {
            format!("k{i}")
        };
        cmd(&["SET".to_string(), k, format!("v{i}")])
    }));
    let killer = kill_later(server, Duration::from_millis(300), true);
    let done = rt
        .block_on(bounded("drain", t.drain()))
        .unwrap_or_else(|e| panic!("{e}"));
    let server = killer.join().unwrap();
    assert_eq!(done.len(), 301);
    assert!(done.iter().all(|(_, r)| is_ok(r)), "{done:?}");
    let stats = t.stats();
    assert!(stats.resent >= 300, "{stats:?}");
    let mut con = server.client();
    redis::cmd("SELECT").arg(2).query::<()>(&mut con).unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 299, "every key in db 2 of the restarted server");
    let v: String = con.get("k0").unwrap();
    assert_eq!(v, "v299", "resent in order");
}

// ---------------------------------------------------------------------------------------------
// Cluster target

/// Writes `n` keys through a cluster target with a small window and reads them back with the
/// redis crate's cluster client; every master got its share; no redirection was needed.
fn cluster_routes_writes(flavor: Flavor, n: usize) {
    if !require(flavor) {
        return;
    }
    let cluster = Cluster::start(flavor);
    let ep = endpoint(&cluster.url());
    block_on(bounded("the cluster target", async {
        let mut t: Target<usize> = Target::connect(&ep, options(64)).await.unwrap();
        assert!(t.is_cluster());
        let ports: Vec<u16> = t.masters().iter().map(|m| m.port).collect();
        let expected: Vec<u16> = cluster.masters().iter().map(Server::port).collect();
        assert_eq!(ports, expected);
        let mut completions = 0;
        for i in 0..n {
            let k = format!("key:{i}");
            let c = cmd(&["SET".to_string(), k.clone(), format!("value:{i}")]);
            t.submit(Some(k.as_bytes()), c, Idempotent::Yes, i)
                .await
                .unwrap();
            while let Some((_, r)) = t.try_completion() {
                assert!(is_ok(&r), "{r:?}");
                completions += 1;
            }
        }
        for (_, r) in t.drain().await.unwrap() {
            assert!(is_ok(&r), "{r:?}");
            completions += 1;
        }
        assert_eq!(completions, n);
        let stats = t.stats();
        assert_eq!(
            (stats.moved, stats.asks, stats.retries),
            (0, 0, 0),
            "{stats:?}"
        );
        let sizes = t.broadcast(&["DBSIZE"]).await.unwrap();
        let sizes: Vec<i64> = sizes.iter().map(|(_, r)| r.as_int().unwrap()).collect();
        assert_eq!(sizes.iter().sum::<i64>(), n as i64, "{sizes:?}");
        assert!(
            sizes.iter().all(|&s| s > n as i64 / 5),
            "every master got keys: {sizes:?}"
        );
    }));
    let mut con = cluster.connection();
    for i in 0..n {
        let v: String = con.get(format!("key:{i}")).unwrap();
        assert_eq!(v, format!("value:{i}"));
    }
}

#[test]
fn cluster_routes_10k_writes_redis70() {
    cluster_routes_writes(Flavor::Redis70, 10_000);
}

#[test]
fn cluster_routes_writes_redis62_slots_fallback() {
    cluster_routes_writes(Flavor::Redis62, 3_000);
}

/// A cluster opened as standalone answers MOVED: the target says what is wrong.
#[test]
fn cluster_forced_standalone_says_it_is_a_cluster() {
    if !require(Flavor::Redis70) {
        return;
    }
    let cluster = Cluster::start(Flavor::Redis70);
    let ep = endpoint(&cluster.url());
    block_on(bounded("the target", async {
        let opts = TargetOptions {
            cluster: Some(false),
            ..TargetOptions::default()
        };
        let mut t: Target<usize> = Target::connect(&ep, opts).await.unwrap();
        // Keys on every master: at least one is not on the first.
        for i in 0..30 {
            let k = format!("key:{i}");
            t.submit(
                Some(k.as_bytes()),
                cmd(&["SET", k.as_str(), "v"]),
                Idempotent::Yes,
                i,
            )
            .await
            .ok();
        }
        let err = t
            .flush_all()
            .await
            .expect_err("MOVED on a standalone target");
        assert!(matches!(err, ClientError::NotStandalone { .. }), "{err}");
        assert!(err.to_string().contains("cluster"), "{err}");
    }));
}

fn node_id(server: &Server) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut server.client())
        .unwrap()
}

/// The index of the master owning `slot`, and the next one (where the slot will move).
fn owner_and_next(slot: u16) -> (usize, usize) {
    let src = CLUSTER_SLOT_RANGES
        .iter()
        .position(|&(a, b)| (a..=b).contains(&slot))
        .unwrap();
    (src, (src + 1) % 3)
}

fn start_migration(cluster: &Cluster, slot: u16, src: usize, dst: usize) {
    let (s, d) = (&cluster.masters()[src], &cluster.masters()[dst]);
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(node_id(s))
        .query::<()>(&mut d.client())
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(node_id(d))
        .query::<()>(&mut s.client())
        .unwrap();
}

/// MIGRATEs the keys of `slot` from `src` to `dst`: all of them, or only `only`.
fn migrate_keys(cluster: &Cluster, slot: u16, src: usize, dst: usize, only: Option<&[&str]>) {
    let (s, d) = (&cluster.masters()[src], &cluster.masters()[dst]);
    let mut con = s.client();
    loop {
        let keys: Vec<String> = match only {
            Some(keys) => keys.iter().map(|k| k.to_string()).collect(),
            None => redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut con)
                .unwrap(),
        };
        if keys.is_empty() {
            return;
        }
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(d.port())
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query::<()>(&mut con)
            .unwrap();
        if only.is_some() {
            return;
        }
    }
}

fn finish_migration(cluster: &Cluster, slot: u16, dst: usize) {
    let id = node_id(&cluster.masters()[dst]);
    // The destination first, as redis-cli does, so the slot always has an owner that knows it.
    let order = [dst, (dst + 1) % 3, (dst + 2) % 3];
    for i in order {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&id)
            .query::<()>(&mut cluster.masters()[i].client())
            .unwrap();
    }
}

fn count_in_slot(server: &Server, slot: u16) -> i64 {
    redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut server.client())
        .unwrap()
}

/// SETs `k` to `v-k` through the target, tagged with the key.
async fn set(t: &mut Target<String>, k: String) {
    let c = cmd(&["SET".to_string(), k.clone(), format!("v-{k}")]);
    let key = k.clone();
    t.submit(Some(key.as_bytes()), c, Idempotent::Yes, k)
        .await
        .unwrap()
}

/// A slot moves while the target writes to it: during the migration new keys get ASK (and go
/// to the importing node with ASKING, a transaction included); after it, every command in flight
/// gets MOVED and is resent to the new owner in its original order (an RPUSH sequence stays in
/// order); every write lands.
#[test]
fn cluster_follows_ask_and_moved_during_a_slot_migration() {
    if !require(Flavor::Redis70) {
        return;
    }
    let cluster = Cluster::start(Flavor::Redis70);
    let ep = endpoint(&cluster.url());
    let slot = slot_of(b"{mv}");
    assert_eq!(slot, cluster.slot(b"{mv}"));
    let (src, dst) = owner_and_next(slot);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut t: Target<String> = rt.block_on(Target::connect(&ep, options(64))).unwrap();
    let check_ok = |done: Vec<(String, Reply)>| {
        for (k, r) in &done {
            assert!(is_ok(r), "{k}: {r:?}");
        }
        done.len()
    };

    // Before: plain writes.
    rt.block_on(bounded("phase 1", async {
        for i in 0..200 {
            set(&mut t, format!("{{mv}}:a:{i}")).await;
            set(&mut t, format!("other:a:{i}")).await;
        }
        assert_eq!(check_ok(t.drain().await.unwrap()), 400);
    }));

    // During: the slot is MIGRATING on src, its keys already on dst.
    start_migration(&cluster, slot, src, dst);
    migrate_keys(&cluster, slot, src, dst, None);
    rt.block_on(bounded("phase 2", async {
        for i in 0..200 {
            set(&mut t, format!("{{mv}}:b:{i}")).await;
            set(&mut t, format!("other:b:{i}")).await;
        }
        let tx = ["MULTI", "SET {mv}:tx 41", "INCR {mv}:tx", "EXEC"]
            .iter()
            .map(|c| cmd(&c.split(' ').collect::<Vec<_>>()).into())
            .collect();
        t.submit_group(Some(slot), tx, Idempotent::No, "tx".into())
            .await
            .unwrap();
        let done = t.drain().await.unwrap();
        assert_eq!(done.len(), 401);
        for (k, r) in done {
            if k == "tx" {
                let replies = r.as_array().unwrap_or_else(|| panic!("{r:?}"));
                assert_eq!(replies.len(), 4, "{r:?}");
                assert_eq!(
                    replies[3],
                    Reply::Array(vec![Reply::Status("OK".into()), Reply::Int(42)]),
                    "EXEC's reply: {r:?}"
                );
            } else {
                assert!(is_ok(&r), "{k}: {r:?}");
            }
        }
    }));
    let stats = t.stats();
    assert!(
        stats.asks >= 201,
        "new keys and the transaction were asked over: {stats:?}"
    );
    assert_eq!(stats.moved, 0, "{stats:?}");
    assert_eq!(count_in_slot(&cluster.masters()[src], slot), 0);
    assert_eq!(count_in_slot(&cluster.masters()[dst], slot), 401);

    // After: the slot belongs to dst; the target still thinks src.
    finish_migration(&cluster, slot, dst);
    rt.block_on(bounded("phase 3", async {
        for i in 0..1000 {
            let c = cmd(&["RPUSH".to_string(), "{mv}:list".into(), i.to_string()]);
            t.submit(Some(b"{mv}:list"), c, Idempotent::No, format!("rpush {i}"))
                .await
                .unwrap();
            if i % 5 == 0 {
                set(&mut t, format!("{{mv}}:c:{i}")).await;
                set(&mut t, format!("other:c:{i}")).await;
            }
        }
        let done = t.drain().await.unwrap();
        assert_eq!(done.len(), 1400);
        // RPUSH answers the new length: in submission order, 1..=1000.
        let lens: Vec<i64> = done
            .iter()
            .filter(|(k, _)| k.starts_with("rpush"))
            .map(|(k, r)| r.as_int().unwrap_or_else(|| panic!("{k}: {r:?}")))
            .collect();
        assert_eq!(lens, (1..=1000).collect::<Vec<i64>>());
    }));
    let stats = t.stats();
    assert!(stats.moved > 0, "{stats:?}");
    assert_eq!(
        t.topology().master_for_slot(slot).map(|m| m.port),
        Some(cluster.masters()[dst].port())
    );

    let mut con = cluster.connection();
    let list: Vec<i64> = con.lrange("{mv}:list", 0, -1).unwrap();
    assert_eq!(
        list,
        (0..1000).collect::<Vec<i64>>(),
        "RPUSHes applied in order"
    );
    for prefix in ["{mv}:a", "{mv}:b", "other:a", "other:b"] {
        for i in 0..200 {
            let k = format!("{prefix}:{i}");
            let v: Option<String> = con.get(&k).unwrap();
            assert_eq!(v, Some(format!("v-{k}")));
        }
    }
    let tx: i64 = con.get("{mv}:tx").unwrap();
    assert_eq!(tx, 42);
    assert_eq!(count_in_slot(&cluster.masters()[dst], slot), 401 + 1 + 200);
}

/// A multi-key command on a slot half migrated gets TRYAGAIN; the target retries it with
/// backoff until the migration ends (then follows the MOVED) and it succeeds. A command for the
/// same slot submitted meanwhile waits behind it.
#[test]
fn cluster_retries_tryagain_until_the_migration_ends() {
    if !require(Flavor::Redis70) {
        return;
    }
    let cluster = Cluster::start(Flavor::Redis70);
    let ep = endpoint(&cluster.url());
    let slot = slot_of(b"{ta}");
    let (src, dst) = owner_and_next(slot);
    {
        let mut con = cluster.connection();
        let _: () = con.set("{ta}:1", "old").unwrap();
        let _: () = con.set("{ta}:2", "old").unwrap();
    }
    start_migration(&cluster, slot, src, dst);
    migrate_keys(&cluster, slot, src, dst, Some(&["{ta}:1"]));
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(500));
            migrate_keys(&cluster, slot, src, dst, None);
            finish_migration(&cluster, slot, dst);
        });
        block_on(bounded("the MSET", async {
            let mut t: Target<&str> = Target::connect(&ep, options(16)).await.unwrap();
            let c = cmd(&["MSET", "{ta}:1", "new1", "{ta}:2", "new2"]);
            t.submit_to_slot(slot, c, Idempotent::Yes, "mset")
                .await
                .unwrap();
            // A key of another slot on the same master: once its reply is in, the MSET's
            // TRYAGAIN (sent before it on the same connection) has been handled.
            let probe = (0..)
                .map(|i| format!("probe:{i}"))
                .find(|k| {
                    let s = slot_of(k.as_bytes());
                    s != slot && owner_and_next(s).0 == src
                })
                .unwrap();
            let c = cmd(&["SET", probe.as_str(), "x"]);
            t.submit(Some(probe.as_bytes()), c, Idempotent::Yes, "probe")
                .await
                .unwrap();
            let (tag, r) = t.next_completion().await.unwrap().expect("a completion");
            assert_eq!(
                tag, "probe",
                "the MSET cannot be done before the migration ends"
            );
            assert!(is_ok(&r), "{r:?}");
            assert!(t.stats().retries >= 1, "{:?}", t.stats());
            // Submitted after the MSET was told to try again: must still be applied after it.
            let c = cmd(&["SET", "{ta}:1", "last"]);
            t.submit(Some(b"{ta}:1"), c, Idempotent::Yes, "set")
                .await
                .unwrap();
            let done = t.drain().await.unwrap();
            let tags: Vec<&str> = done.iter().map(|(t, _)| *t).collect();
            assert_eq!(tags, ["mset", "set"]);
            assert!(done.iter().all(|(_, r)| is_ok(r)), "{done:?}");
            let stats = t.stats();
            assert!(stats.retries >= 1, "TRYAGAIN was retried: {stats:?}");
            assert!(stats.moved >= 1, "then MOVED was followed: {stats:?}");
        }));
    });
    let mut con = cluster.connection();
    let v: Vec<String> = con.mget(&["{ta}:1", "{ta}:2"]).unwrap();
    assert_eq!(
        v,
        ["last", "new2"],
        "the later SET was applied after the retried MSET"
    );
}
