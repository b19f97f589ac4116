//! TLS end to end: a real redis-server 7.0 listening with TLS (certificates made by openssl for
//! this test), reached through `rediss://` by shake-restore and shake-dump: verified against the
//! test CA with --tls-ca, refused without it (naming the fix), accepted with --tls-insecure.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command as Process;

use assert_cmd::Command;
use shake_tests::{require, Flavor, Server};

fn run(cmd: &mut Process) {
    let out = cmd.output().expect("openssl runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, in `dir`.
fn make_certs(dir: &Path) {
    let d = |f: &str| dir.join(f);
    run(Process::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=shake-test-ca",
        ])
        .arg("-keyout")
        .arg(d("ca.key"))
        .arg("-out")
        .arg(d("ca.pem")));
    run(Process::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(d("server.key"))
        .arg("-out")
        .arg(d("server.csr")));
    std::fs::write(
        d("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(Process::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(d("server.csr"))
        .arg("-CA")
        .arg(d("ca.pem"))
        .arg("-CAkey")
        .arg(d("ca.key"))
        .arg("-out")
        .arg(d("server.pem"))
        .arg("-extfile")
        .arg(d("ext.cnf")));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn restore_and_dump_over_tls() {
    if !require(Flavor::Redis70) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls_port = free_port().to_string();
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let tls = Server::start_with(
        Flavor::Redis70,
        &[
            ("tls-port", tls_port.as_str()),
            ("tls-cert-file", cert.as_str()),
            ("tls-key-file", key.as_str()),
            ("tls-ca-cert-file", ca.as_str()),
            ("tls-auth-clients", "no"),
            ("tls-replication", "yes"),
        ],
    );
    let url = format!("rediss://127.0.0.1:{tls_port}");

    // A small source RDB.
    let source = Server::start(Flavor::Redis70);
    let mut c = source.client();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("RPUSH")
        .arg("list")
        .arg(&["a", "b", "c"])
        .query(&mut c)
        .unwrap();
    let rdb = source.save();

    // Verified against the test CA.
    Command::cargo_bin("shake-restore")
        .unwrap()
        .env_remove("RUST_BACKTRACE")
        .args(["--target", &url, "--tls-ca", &ca, "-q"])
        .arg(&rdb)
        .assert()
        .success();
    let mut t = tls.client();
    let n: u64 = redis::cmd("DBSIZE").query(&mut t).unwrap();
    assert_eq!(n, 101, "keys restored over TLS");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("list")
        .arg(0)
        .arg(-1)
        .query(&mut t)
        .unwrap();
    assert_eq!(list, vec!["a", "b", "c"]);

    // Without the CA the certificate is not trusted: a clear one-line refusal naming the fix.
    let out = Command::cargo_bin("shake-restore")
        .unwrap()
        .env_remove("RUST_BACKTRACE")
        .args(["--target", &url, "--on-conflict", "rewrite", "-q"])
        .arg(&rdb)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS") && err.contains("--tls-ca") && err.trim().lines().count() == 1,
        "{err}"
    );

    // --tls-insecure skips verification.
    Command::cargo_bin("shake-restore")
        .unwrap()
        .args([
            "--target",
            &url,
            "--tls-insecure",
            "--on-conflict",
            "rewrite",
            "-q",
        ])
        .arg(&rdb)
        .assert()
        .success();

    // shake-dump over TLS gives an RDB that decodes to the same keys.
    let out_dir = tempfile::tempdir().unwrap();
    let dump = out_dir.path().join("tls.rdb");
    Command::cargo_bin("shake-dump")
        .unwrap()
        .args(["--source", &url, "--tls-ca", &ca, "-q", "-o"])
        .arg(&dump)
        .assert()
        .success();
    let keys = Command::cargo_bin("shake-decode")
        .unwrap()
        .arg(&dump)
        .args(["--format", "keys"])
        .output()
        .unwrap();
    assert!(keys.status.success());
    assert_eq!(String::from_utf8_lossy(&keys.stdout).lines().count(), 101);
}

/// A self-signed server certificate made with openssl's defaults (`CA:TRUE`, no subjectAltName):
/// chain validation refuses it as a server's certificate (CaUsedAsEndEntity), which pushed users
/// to --tls-insecure. Given to --tls-ca it is trusted as it is; --tls-pin-sha256 with its
/// fingerprint (as openssl prints it) trusts it too, a wrong pin is refused naming the
/// certificate's fingerprint, and --tls-insecure works but says so on stderr.
#[test]
fn self_signed_certificates_can_be_pinned() {
    if !require(Flavor::Redis70) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let d = |f: &str| certs.path().join(f);
    run(Process::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(d("self.key"))
        .arg("-out")
        .arg(d("self.pem")));
    let fp = Process::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(d("self.pem"))
        .output()
        .unwrap();
    let fp = String::from_utf8(fp.stdout).unwrap();
    let fp = fp.trim().rsplit('=').next().unwrap().to_string();
    assert_eq!(fp.len(), 95, "openssl printed {fp:?}");
    let tls_port = free_port().to_string();
    let (cert, key) = (
        d("self.pem").display().to_string(),
        d("self.key").display().to_string(),
    );
    let tls = Server::start_with(
        Flavor::Redis70,
        &[
            ("tls-port", tls_port.as_str()),
            ("tls-cert-file", cert.as_str()),
            ("tls-key-file", key.as_str()),
            ("tls-ca-cert-file", cert.as_str()),
            ("tls-auth-clients", "no"),
        ],
    );
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut tls.client())
        .unwrap();
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let out = tempfile::tempdir().unwrap();
    let rdb = out.path().join("self.rdb");
    let dump = |trust: &[&str]| {
        let _ = std::fs::remove_file(&rdb);
        Command::cargo_bin("shake-dump")
            .unwrap()
            .env_remove("RUST_BACKTRACE")
            .args(["--source", &url, "-q", "-o"])
            .arg(&rdb)
            .args(trust)
            .output()
            .unwrap()
    };
    let o = dump(&["--tls-ca", &cert]);
    assert!(
        o.status.success(),
        "--tls-ca self.pem: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = dump(&["--tls-pin-sha256", &fp]);
    assert!(
        o.status.success(),
        "--tls-pin-sha256: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let wrong = "00".repeat(32);
    let o = dump(&["--tls-pin-sha256", &wrong]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "a wrong pin: {err}");
    assert!(
        err.contains(&fp) && err.contains("--tls-pin-sha256"),
        "{err}"
    );
    let o = dump(&["--tls-insecure"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "--tls-insecure: {err}");
    assert!(
        err.contains("warning: --tls-insecure"),
        "a real run warns: {err}"
    );

    // The shared connection flags (shake-restore) pin the same way.
    Command::cargo_bin("shake-restore")
        .unwrap()
        .env_remove("RUST_BACKTRACE")
        .args([
            "--target",
            &url,
            "--tls-pin-sha256",
            &fp,
            "--on-conflict",
            "rewrite",
            "-q",
        ])
        .arg(&rdb)
        .assert()
        .success();
}
