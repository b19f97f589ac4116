//! The container image (issue 16): `scripts/build-image.sh` builds it with podman, FROM scratch,
//! from the already-built debug binaries (the documented build uses `--release`; the image is
//! the same but for the binaries' size), into podman storage of the test's own, and the tools
//! run from it against real servers on loopback (`--network host`):
//!
//! - `image_holds_the_tools_and_nothing_else`: the image's files (the six binaries, exactly the
//!   libraries `ldd` lists plus the loader, nsswitch.conf, the CA bundle, passwd with the user,
//!   no shell), its user (numeric, non-root), command and environment.
//! - `image_dump_restore_and_sync_resume`: `shake-dump -o -` piped into `shake-restore -`, each
//!   in its own container, the source named `localhost` (so glibc resolves a name inside the
//!   image); then shake-sync in a container, stopped with `podman stop` (SIGTERM: exit 0, the
//!   checkpoint recorded) and started again in a new container: a partial resync, equal data.
//!
//! Where podman cannot run containers (a sandbox refusing it), the second test says so on
//! stderr and checks only what the first one does.

#[path = "live_common/mod.rs"]
mod live_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use live_common::{compare, snapshot, Profile, Snapshot};
use shake_tests::{free_port, http_get, require, require_tool, workspace_root, Flavor, Server};

const TOOLS: [&str; 6] = [
    "shake-dump",
    "shake-restore",
    "shake-decode",
    "shake-sync",
    "shake-rump",
    "shake-check",
];

/// Podman with storage in a temporary directory: nothing is left in the machine's storage, and
/// the options suit a rootful sandbox without systemd (vfs, cgroupfs, file events; runc, which
/// copes with hybrid cgroups where crun does not).
struct Podman {
    bin: PathBuf,
    dir: tempfile::TempDir,
    image: String,
}

impl Podman {
    fn new() -> Option<Podman> {
        let bin = require_tool(
            "podman",
            &[],
            "run scripts/install-deploy-tools.sh (apt-get install podman buildah runc)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("shake-podman")
            .tempdir()
            .expect("podman storage dir");
        Some(Podman {
            bin,
            dir,
            image: "localhost/shake-rs:test".to_string(),
        })
    }

    fn global_opts(&self) -> String {
        let d = self.dir.path().display();
        let mut o = format!(
            "--root {d}/root --runroot {d}/run --storage-driver vfs --cgroup-manager cgroupfs --events-backend file"
        );
        if Path::new("/usr/bin/runc").exists() || Path::new("/usr/sbin/runc").exists() {
            o.push_str(" --runtime runc");
        }
        o
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(self.global_opts().split(' '));
        c
    }

    /// Builds the image from target/debug with the project's script.
    fn build(&self) {
        let root = workspace_root();
        let bins = debug_bins();
        let out = Command::new("bash")
            .arg(root.join("scripts/build-image.sh"))
            .args([
                "--bin-dir",
                &bins.display().to_string(),
                "--tag",
                &self.image,
            ])
            .env("PODMAN", &self.bin)
            .env("PODMAN_OPTS", self.global_opts())
            .current_dir(&root)
            .output()
            .expect("run scripts/build-image.sh");
        assert!(
            out.status.success(),
            "scripts/build-image.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run` options for a tool run: host network, limits the sandbox allows setting.
    fn run_args<'a>(&'a self, name: Option<&'a str>, tool_args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["run", "--rm", "--network", "host"];
        v.extend([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ]);
        if let Some(n) = name {
            v.extend(["--name", n]);
        }
        v.push(&self.image);
        v.extend_from_slice(tool_args);
        v
    }

    /// The path of every file and directory in the image (from `podman export` of a container
    /// created, not started).
    fn files(&self) -> Vec<String> {
        let id = self.ok(&["create", &self.image]).trim().to_string();
        let tar = self.dir.path().join("export.tar");
        self.ok(&["export", "-o", &tar.display().to_string(), &id]);
        self.ok(&["rm", &id]);
        let out = Command::new("tar")
            .arg("-tf")
            .arg(&tar)
            .output()
            .expect("tar -t");
        assert!(out.status.success(), "tar -t of the export failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("/{}", l.trim_start_matches("./").trim_end_matches('/')))
            .collect()
    }

    fn read_file(&self, path: &str) -> String {
        let tar = self.dir.path().join("export.tar");
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg(path.trim_start_matches('/'))
            .output()
            .expect("tar -x");
        assert!(out.status.success(), "{path} is not in the image");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers a failed test left running; then the storage (vfs layers are plain files).
        let _ = self.output(&["rm", "--all", "--force", "--time", "2"]);
        let _ = self.output(&["rmi", "--all", "--force"]);
    }
}

fn debug_bins() -> PathBuf {
    let p = assert_cmd::cargo::cargo_bin("shake-sync");
    assert!(
        p.exists(),
        "the binaries are not built: run `cargo build --workspace --bins` first"
    );
    p.parent().expect("bin dir").to_path_buf()
}

/// The libraries the loader needs for the tools, as `ldd` names them.
fn ldd_libs() -> Vec<String> {
    let mut libs = Vec::new();
    for t in TOOLS {
        let out = Command::new("ldd")
            .arg(debug_bins().join(t))
            .output()
            .expect("ldd");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            let path = match line.split_once("=> ") {
                Some((_, rest)) => rest.split(' ').next().unwrap_or(""),
                None => line.split(' ').next().unwrap_or(""),
            };
            if path.starts_with('/') && !libs.iter().any(|l| l == path) {
                libs.push(path.to_string());
            }
        }
    }
    libs
}

fn check_image(p: &Podman) {
    let cfg = p.ok(&[
        "image",
        "inspect",
        &p.image,
        "--format",
        "{{.Config.User}}|{{json .Config.Cmd}}|{{json .Config.Entrypoint}}|{{json .Config.Env}}",
    ]);
    let parts: Vec<&str> = cfg.trim().split('|').collect();
    assert_eq!(parts[0], "65532:65532", "user: {cfg}");
    assert_eq!(parts[1], r#"["shake-sync","--help"]"#, "cmd: {cfg}");
    assert!(
        parts[2] == "null" || parts[2] == "[]",
        "no entrypoint expected: {cfg}"
    );
    assert!(parts[3].contains("PATH=/usr/local/bin"), "env: {cfg}");

    let files = p.files();
    let has = |f: &str| files.iter().any(|x| x == f);
    for t in TOOLS {
        assert!(
            has(&format!("/usr/local/bin/{t}")),
            "{t} missing: {files:?}"
        );
    }
    for lib in ldd_libs() {
        assert!(has(&lib), "{lib} (ldd) missing from the image: {files:?}");
    }
    for f in [
        "/etc/nsswitch.conf",
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/passwd",
        "/etc/group",
    ] {
        assert!(has(f), "{f} missing: {files:?}");
    }
    for absent in [
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/bash",
        "/usr/bin/apt-get",
        "/usr/bin/dpkg",
    ] {
        assert!(!has(absent), "{absent} should not be in the image");
    }
    assert!(
        p.read_file("/etc/nsswitch.conf")
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["hosts:", "files", "dns"]),
        "nsswitch.conf must resolve hosts from files, then DNS"
    );
    assert!(
        p.read_file("/etc/passwd").contains(":65532:65532:"),
        "passwd has no line for the image's user"
    );
    assert!(
        p.read_file("/etc/ssl/certs/ca-certificates.crt")
            .contains("BEGIN CERTIFICATE"),
        "CA bundle is empty"
    );
    eprintln!(
        "image {}: user 65532, {} files, libraries {:?}",
        p.image,
        files.len(),
        ldd_libs()
    );
}

#[test]
fn image_holds_the_tools_and_nothing_else() {
    let Some(p) = Podman::new() else { return };
    p.build();
    check_image(&p);
}

fn fill(server: &Server, prefix: &str, n: usize) {
    let mut con = server.client();
    for i in 0..n {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{prefix}:s:{i}"))
            .arg(format!("v{i}"));
        pipe.cmd("RPUSH")
            .arg(format!("{prefix}:l:{}", i % 7))
            .arg(i);
        pipe.cmd("HSET")
            .arg(format!("{prefix}:h:{}", i % 5))
            .arg(format!("f{i}"))
            .arg(i * 3);
        pipe.cmd("ZADD")
            .arg(format!("{prefix}:z"))
            .arg(i as f64 / 7.0)
            .arg(format!("m{i}"));
        pipe.cmd("INCR").arg(format!("{prefix}:counter"));
        if i % 10 == 0 {
            pipe.cmd("SET")
                .arg(format!("{prefix}:ttl:{i}"))
                .arg("x")
                .arg("EX")
                .arg(3600);
        }
        pipe.query::<()>(&mut con).expect("fill");
    }
}

fn data(server: &Server) -> Snapshot {
    let s = snapshot(&mut server.client());
    Snapshot {
        keys: s
            .keys
            .into_iter()
            .filter(|((_, k), _)| !k.starts_with(b"shake-sync:"))
            .collect(),
        ..s
    }
}

fn wait_equal(ctx: &str, a: &Server, b: &Server, limit: Duration) {
    let t = Instant::now();
    loop {
        let (x, y) = (data(a), data(b));
        let diffs = compare("source", &x, "target", &y, Profile::rebuilt(&x, &y));
        if diffs.is_empty() {
            eprintln!("[{ctx}] equal, {} keys", x.keys.len());
            return;
        }
        assert!(
            t.elapsed() < limit,
            "[{ctx}] not equal after {limit:?}: {}",
            diffs.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
        );
        sleep(Duration::from_millis(200));
    }
}

/// Polls `/status` until `pred` holds for its body; the body then.
fn wait_status(port: u16, child: &mut Child, what: &str, pred: &dyn Fn(&str) -> bool) -> String {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(60) {
        if let Some(body) = http_get(port, "/status") {
            if pred(&body) {
                return body;
            }
            last = body;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("shake-sync's container exited ({st}) before {what}: {last}");
        }
        sleep(Duration::from_millis(100));
    }
    panic!("no {what} within 60 s: {last}");
}

#[test]
fn image_dump_restore_and_sync_resume() {
    if !require(Flavor::Redis70) {
        return;
    }
    let Some(p) = Podman::new() else { return };
    p.build();
    // Can this machine run a container at all?
    let probe = p.output(&p.run_args(None, &["shake-dump", "--version"]));
    if !probe.status.success() {
        eprintln!(
            "NOTE: podman cannot run containers here ({}); the image was built and inspected instead",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        check_image(&p);
        return;
    }

    // dump | restore, each tool in its own container, the source by name.
    let src = Server::start_with(Flavor::Redis70, &[("repl-backlog-size", "16mb")]);
    let dst = Server::start(Flavor::Redis70);
    fill(&src, "a", 300);
    let source_url = format!("redis://localhost:{}", src.port());
    let mut dump = p
        .cmd()
        .args(p.run_args(
            None,
            &["shake-dump", "--source", &source_url, "-o", "-", "-q"],
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman run shake-dump");
    let mut restore_args = p.run_args(None, &[]);
    restore_args.insert(1, "-i");
    let target_url = dst.url();
    restore_args.extend(["shake-restore", "--target", &target_url, "-"]);
    let restore = p
        .cmd()
        .args(&restore_args)
        .stdin(dump.stdout.take().expect("dump stdout"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman run shake-restore")
        .wait_with_output()
        .expect("restore");
    let dump = dump.wait_with_output().expect("dump");
    assert!(
        dump.status.success(),
        "shake-dump in the image: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(
        restore.status.success(),
        "shake-restore in the image: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    wait_equal("dump | restore", &src, &dst, Duration::from_secs(5));

    // A sync in a container; stopped; resumed from another container.
    let sync_dst = Server::start(Flavor::Redis70);
    let status_port = free_port();
    let status_addr = format!("127.0.0.1:{status_port}");
    let sync_target = sync_dst.url();
    let sync_args = [
        "shake-sync",
        "--source",
        &source_url,
        "--target",
        &sync_target,
        "--status-addr",
        &status_addr,
        "--log-interval",
        "1",
    ];
    let start = |name: &str| -> Child {
        p.cmd()
            .args(p.run_args(Some(name), &sync_args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman run shake-sync")
    };
    let incremental = |b: &str| b.contains("\"phase\":\"incremental\"");
    let mut first = start("shake-sync-1");
    wait_status(
        status_port,
        &mut first,
        "the incremental phase",
        &incremental,
    );
    fill(&src, "b", 100);
    wait_equal("sync", &src, &sync_dst, Duration::from_secs(30));
    p.ok(&["stop", "--time", "20", "shake-sync-1"]);
    let out = first.wait_with_output().expect("first sync");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shake-sync after podman stop: {log}");
    assert!(
        log.contains("stopped at offset"),
        "no checkpoint line: {log}"
    );

    fill(&src, "c", 100);
    let mut second = start("shake-sync-2");
    let body = wait_status(status_port, &mut second, "the resumed link", &incremental);
    assert!(
        body.contains("\"partial_syncs\":1") && body.contains("\"full_syncs\":0"),
        "the restarted sync did not resume with a partial resync: {body}"
    );
    fill(&src, "d", 50);
    wait_equal("sync resumed", &src, &sync_dst, Duration::from_secs(30));
    p.ok(&["stop", "--time", "20", "shake-sync-2"]);
    let out = second.wait_with_output().expect("second sync");
    assert!(
        out.status.success(),
        "second shake-sync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The dump was one full sync; the sync's first start another; the resume none.
    assert_eq!(src.stat("sync_full"), 2, "full syncs on the source");
    assert!(
        src.stat("sync_partial_ok") >= 1,
        "no partial resync on the source"
    );
}
