//! Tests of the test rig itself (tests/src/lib.rs): every flavor's server starts, is the version
//! it claims, serves commands, restarts with its data, forms a cluster, honors a password, and is
//! gone once its handle drops. The other integration tests build on these guarantees.

use std::net::TcpStream;
use std::time::Duration;

use redis::Commands;
use shake_tests::*;

/// A standalone server of `flavor` answers SET/GET, reports the flavor's version, and keeps its
/// data across SAVE + restart on the same port.
fn standalone(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let mut server = Server::start(flavor);
    let version = server.version();
    assert!(
        version.starts_with(flavor.version_prefix()),
        "{flavor} server reports version {version}, expected {}x",
        flavor.version_prefix()
    );

    let mut con = server.client();
    let _: () = con.set("rig:key", "value").expect("SET");
    let got: String = con.get("rig:key").expect("GET");
    assert_eq!(got, "value");
    // DEBUG must be usable: tests use it (DEBUG RELOAD, DEBUG OBJECT) on every flavor.
    let _: String = redis::cmd("DEBUG")
        .arg("OBJECT")
        .arg("rig:key")
        .query(&mut con)
        .expect("DEBUG OBJECT");

    let rdb = server.save();
    assert_eq!(rdb, server.rdb_path());
    let port = server.port();
    server.restart();
    assert_eq!(server.port(), port, "restart keeps the port");
    let got: String = server.client().get("rig:key").expect("GET after restart");
    assert_eq!(
        got, "value",
        "the restarted {flavor} server loaded dump.rdb"
    );
}

/// A cluster of `flavor` covers all slots, and keys that hash to each master's slots can be
/// written and read through the cluster client, landing on the master that owns them.
fn cluster(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let cluster = Cluster::start(flavor);
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut cluster.masters()[0].client())
        .expect("CLUSTER INFO");
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");

    let mut con = cluster.connection();
    // {a}, {b}, {c} hash to slots 15495, 3300 and 7365: one key on each master.
    let keys = ["{a}k", "{b}k", "{c}k"];
    let mut owners: Vec<u16> = Vec::new();
    for key in keys {
        let _: () = con
            .set(key, format!("value of {key}"))
            .unwrap_or_else(|e| panic!("SET {key}: {e}"));
        let owner = cluster.master_for_key(key.as_bytes());
        let local: Option<String> = owner
            .client()
            .get(key)
            .unwrap_or_else(|e| panic!("GET {key} on its master: {e}"));
        assert_eq!(
            local.as_deref(),
            Some(format!("value of {key}").as_str()),
            "{key} on {}",
            owner.url()
        );
        owners.push(owner.port());
    }
    owners.sort_unstable();
    owners.dedup();
    assert_eq!(owners.len(), 3, "the keys landed on all three masters");
    for key in keys {
        let got: String = con.get(key).unwrap_or_else(|e| panic!("GET {key}: {e}"));
        assert_eq!(got, format!("value of {key}"));
    }
}

macro_rules! per_flavor {
    ($($name:ident => $flavor:expr),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[test]
            fn standalone() {
                super::standalone($flavor);
            }
            #[test]
            fn cluster() {
                super::cluster($flavor);
            }
        }
    )*};
}

per_flavor! {
    redis_6_2 => Flavor::Redis62,
    redis_7_0 => Flavor::Redis70,
    valkey_8_1 => Flavor::Valkey81,
    valkey_9_1 => Flavor::Valkey91,
}

#[test]
fn dropped_server_is_gone() {
    if !require(Flavor::Redis70) {
        return;
    }
    let server = Server::start(Flavor::Redis70);
    let addr = server.addr();
    let dir = server.dir().to_path_buf();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok(),
        "the server answers on {addr}"
    );
    drop(server);
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "nothing listens on {addr} once the Server is dropped"
    );
    assert!(
        !dir.exists(),
        "the server's directory {} is removed",
        dir.display()
    );
}

#[test]
fn killed_server_stops_answering() {
    if !require(Flavor::Redis70) {
        return;
    }
    let mut server = Server::start(Flavor::Redis70);
    server.kill();
    assert!(server.pid().is_none());
    assert!(TcpStream::connect_timeout(&server.addr(), Duration::from_secs(1)).is_err());
}

#[test]
fn password_server_refuses_unauthenticated_commands() {
    for flavor in Flavor::all() {
        if !require(flavor) {
            continue;
        }
        let server = Server::start_with(flavor, &[("requirepass", "s3cret/pw")]);
        assert_eq!(server.password(), Some("s3cret/pw"));
        assert_eq!(
            server.url_with_password(),
            format!("redis://:s3cret%2Fpw@127.0.0.1:{}", server.port())
        );

        let mut anonymous = redis::Client::open(server.url())
            .and_then(|client| client.get_connection())
            .unwrap_or_else(|e| panic!("{flavor}: connecting without a password: {e}"));
        let refused: redis::RedisResult<()> = anonymous.set("k", "v");
        let error = refused.expect_err("SET without AUTH must be refused");
        assert_eq!(error.code(), Some("NOAUTH"), "{flavor}: {error}");

        let _: () = server
            .client()
            .set("k", "v")
            .unwrap_or_else(|e| panic!("{flavor}: SET with the password: {e}"));
    }
}

#[test]
fn start_with_applies_config_and_reports_bad_config() {
    if !require(Flavor::Redis70) {
        return;
    }
    let server = Server::start_with(
        Flavor::Redis70,
        &[("repl-diskless-sync", "yes"), ("save", "900 1")],
    );
    let mut con = server.client();
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut con)
        .expect("CONFIG GET");
    assert_eq!(config, ["save", "900 1"]);

    let failure = std::panic::catch_unwind(|| {
        Server::start_with(Flavor::Redis70, &[("no-such-directive", "1")])
    })
    .expect_err("a bad directive fails the start");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("no-such-directive"),
        "the panic shows the server's complaint: {message}"
    );
}
