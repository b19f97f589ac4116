//! Endpoints and connections: `redis://` URLs, TCP and TLS connections, AUTH, timeouts, and the
//! bounded backoff every reconnect uses. A `Connection` speaks RESP (requests and replies) and
//! also hands out raw bytes for the parts of the replication protocol that are not RESP.
//!
//! A `redis+sentinel://` endpoint names a master through Redis Sentinel: every
//! [`Connection::connect`] to it asks the sentinels for the master's address and checks with
//! `ROLE` that the node is a master, so every reconnect of every tool follows a failover.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::resp::{decode_reply, encode_command, Reply};

/// Where a server is and how to log in: `redis://[[user]:password@]host[:port][/db]`,
/// `rediss://` for TLS, or a master found through Sentinel:
/// `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]` (see
/// [`SentinelSet`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The server; for a sentinel endpoint, the first sentinel (the master is found at connect).
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: Option<u64>,
    pub tls: bool,
    /// `redis+sentinel://`: the sentinels and the master's name. `None` for a plain server, and
    /// for every node learned from a server ([`Endpoint::with_address`]).
    pub sentinel: Option<Arc<SentinelSet>>,
}

/// The sentinels of a `redis+sentinel://` endpoint and the name of the master they monitor. The
/// URL's user and password log in to the data nodes (master and replicas); the sentinels get
/// their own, from the query parameters `sentinel_user` and `sentinel_password` (or
/// `SHAKE_SENTINEL_PASSWORD`), and none when not given. TLS (`rediss+sentinel://`) and the
/// `--tls-*` options apply to sentinels and data nodes alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSet {
    /// `(host, port)` of each sentinel, in the order they are asked.
    pub nodes: Vec<(String, u16)>,
    /// The master's name, as in `sentinel monitor NAME ...`.
    pub master: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// The port of a sentinel when the URL gives none.
pub const SENTINEL_PORT: u16 = 26379;

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl SentinelSet {
    /// `host:port,host:port` of the sentinels, for messages.
    pub fn addresses(&self) -> String {
        let v: Vec<String> = self.nodes.iter().map(|(h, p)| host_port(h, *p)).collect();
        v.join(",")
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Prints the URL without the password, so it can go into logs and error messages.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let sentinel = if self.sentinel.is_some() {
            "+sentinel"
        } else {
            ""
        };
        write!(f, "{scheme}{sentinel}://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if let Some(s) = &self.sentinel {
            write!(f, "{}/{}", s.addresses(), s.master)?;
        } else if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if let Some(db) = self.db {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

/// `s` percent-encoded for the user-info part of a `redis://` URL (everything but RFC 3986's
/// unreserved characters), the inverse of `percent_decode`: config files' user names and
/// passwords become URLs that `Endpoint::parse` reads back unchanged.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` percent-decoded; the error names `what` (the user name, the password), never `s`, so a
/// password cannot leak through it.
fn percent_decode(s: &str, what: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let byte = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    format!("bad percent escape in the {what} (write %XX, e.g. %40 for @)")
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the {what} is not UTF-8 after percent-decoding"))
}

/// The user and password of a URL's `[[user]:password@]`, as redis-cli reads it: `user:password@`,
/// `:password@`, or `password@`. An empty password (`user:@`) means "none given", so
/// SHAKE_*_PASSWORD can supply it.
type Auth = (Option<String>, Option<String>);
fn parse_auth(auth: Option<&str>) -> Result<Auth, String> {
    Ok(match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => (
                (!u.is_empty())
                    .then(|| percent_decode(u, "user name"))
                    .transpose()?,
                (!p.is_empty())
                    .then(|| percent_decode(p, "password"))
                    .transpose()?,
            ),
            None => (None, Some(percent_decode(a, "password")?)),
        },
    })
}

/// `url` as it may appear in a message: the password of `[user]:password@` (or a lone
/// `password@`) replaced by `***`, whatever else is wrong with the URL. Every message that
/// echoes a URL the user typed goes through this (a parsed `Endpoint` prints without it).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // A sentinel URL's query may carry the sentinels' password.
    let (rest, query) = match split_query(rest) {
        (r, Some(q)) => {
            let q: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k == "sentinel_password" => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            (r, format!("?{}", q.join("&")))
        }
        (r, None) => (r, String::new()),
    };
    // The same split as `Endpoint::parse`.
    match split_auth(rest) {
        (None, _) => format!("{scheme}{rest}{query}"),
        (Some(auth), hostpart) => {
            let user = match auth.split_once(':') {
                Some((u, _)) => format!("{u}:"),
                None => String::new(),
            };
            format!("{scheme}{user}***@{hostpart}{query}")
        }
    }
}

/// The credentials and the rest of a URL after its scheme: they end at the last `@` (a password
/// may hold `@`), for parsing and redaction alike.
fn split_auth(rest: &str) -> (Option<&str>, &str) {
    match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    }
}

/// A sentinel URL's query (`?sentinel_user=...`) and the rest before it.
fn split_query(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    }
}

/// What is wrong with a `host[:port]` / `[v6]:port` part of an endpoint.
enum HostPortError {
    Unclosed,
    NoHost,
    Port,
}

/// `host[:port]` or `[ipv6][:port]`, with `default` for a missing or empty port.
fn split_host_port(s: &str, default: u16) -> Result<(String, u16), HostPortError> {
    let (host, port) = if let Some(h) = s.strip_prefix('[') {
        let end = h.find(']').ok_or(HostPortError::Unclosed)?;
        (h[..end].to_string(), h[end + 1..].strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(HostPortError::NoHost);
    }
    let port = match port {
        None | Some("") => default,
        Some(p) => p.parse::<u16>().map_err(|_| HostPortError::Port)?,
    };
    Ok((host, port))
}

impl Endpoint {
    /// Parses `redis://...`, `rediss://...`, `redis+sentinel://...`, `rediss+sentinel://...`,
    /// or a bare `host:port`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        if url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://") {
            return Endpoint::parse_sentinel(url);
        }
        let bad = |why: &str| {
            format!(
                "invalid endpoint {:?}: {why} (expected redis://[[user]:password@]host[:port][/db])",
                redact_url(url)
            )
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else if url.contains("://") {
            return Err(bad("unknown scheme"));
        } else if ["redis:", "rediss:", "redis+sentinel:", "rediss+sentinel:"]
            .iter()
            .any(|s| url.starts_with(s) && !url[s.len()..].bytes().all(|b| b.is_ascii_digit()))
        {
            // `redis:/host`, `redis:host`: a URL missing a slash, not a host named "redis"
            // (`redis:6379` is one, with a port).
            return Err(bad("a URL's scheme is followed by two slashes"));
        } else {
            (false, url)
        };
        let (auth, hostpart) = split_auth(rest);
        let (hostport, db) = match hostpart.find('/') {
            Some(i) => (&hostpart[..i], Some(&hostpart[i + 1..])),
            None => (hostpart, None),
        };
        let db = match db {
            None | Some("") => None,
            Some(d) => Some(
                d.parse::<u64>()
                    .map_err(|_| bad("the database must be a number"))?,
            ),
        };
        let (host, port) = split_host_port(hostport, 6379).map_err(|e| {
            bad(match e {
                HostPortError::Unclosed => "unclosed [",
                HostPortError::NoHost => "no host",
                HostPortError::Port => "the port must be a number from 1 to 65535",
            })
        })?;
        let (user, password) = parse_auth(auth).map_err(|e| bad(&e))?;
        Ok(Endpoint {
            host,
            port,
            user,
            password,
            db,
            tls,
            sentinel: None,
        })
    }

    /// `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db][?sentinel_user=U&sentinel_password=P]`.
    fn parse_sentinel(url: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| {
            format!(
                "invalid endpoint {:?}: {why} (expected redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db])",
                redact_url(url)
            )
        };
        let (tls, rest) = match url.strip_prefix("rediss+sentinel://") {
            Some(r) => (true, r),
            None => (false, url.strip_prefix("redis+sentinel://").unwrap_or(url)),
        };
        let (rest, query) = split_query(rest);
        let (auth, hostpart) = split_auth(rest);
        let (hosts, path) = hostpart
            .split_once('/')
            .ok_or_else(|| bad("no master name after the sentinels"))?;
        let (master, db) = match path.split_once('/') {
            Some((m, d)) => (m, Some(d)),
            None => (path, None),
        };
        if master.is_empty() {
            return Err(bad("no master name after the sentinels"));
        }
        let master = percent_decode(master, "master name").map_err(|e| bad(&e))?;
        let db = match db {
            None | Some("") => None,
            Some(d) => Some(
                d.parse::<u64>()
                    .map_err(|_| bad("the database must be a number"))?,
            ),
        };
        let mut nodes = Vec::new();
        for hp in hosts.split(',') {
            let (host, port) = split_host_port(hp, SENTINEL_PORT).map_err(|e| {
                bad(match e {
                    HostPortError::Unclosed => "unclosed [",
                    HostPortError::NoHost => "a sentinel without a host",
                    HostPortError::Port => "a sentinel's port must be a number from 1 to 65535",
                })
            })?;
            nodes.push((host, port));
        }
        let (user, password) = parse_auth(auth).map_err(|e| bad(&e))?;
        let (mut s_user, mut s_password) = (None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sentinel_user" => {
                    s_user = Some(percent_decode(v, "sentinel user").map_err(|e| bad(&e))?)
                }
                "sentinel_password" => {
                    s_password = Some(percent_decode(v, "sentinel password").map_err(|e| bad(&e))?)
                }
                _ => {
                    return Err(bad(&format!(
                        "unknown parameter {k:?} (known: sentinel_user, sentinel_password)"
                    )))
                }
            }
        }
        let (host, port) = nodes[0].clone();
        Ok(Endpoint {
            host,
            port,
            user,
            password,
            db,
            tls,
            sentinel: Some(Arc::new(SentinelSet {
                nodes,
                master,
                user: s_user.filter(|u| !u.is_empty()),
                password: s_password.filter(|p| !p.is_empty()),
            })),
        })
    }

    /// An endpoint given as `--source URL --source-sentinel-master NAME` (or `--target ...`;
    /// `flag` names the flag in messages): with a master name, `url` names the sentinels,
    /// `host[:port][,host[:port]...]` or a `redis://` / `rediss://` URL whose host part is
    /// them (port 26379 when left out; user, password, `/db` and the `sentinel_*` parameters as
    /// in the URL form), and the result is exactly what
    /// `redis+sentinel://...sentinels.../NAME[/db]` parses to: the URL is built and parsed by
    /// [`Endpoint::parse`], one code path. A `redis+sentinel://` URL too is accepted when it names
    /// the same master; another one is an error. Without a master name, [`Endpoint::parse`].
    pub fn parse_with_master(
        url: &str,
        master: Option<&str>,
        flag: &str,
    ) -> Result<Endpoint, String> {
        let Some(master) = master else {
            return Endpoint::parse(url);
        };
        if master.is_empty() {
            return Err(format!(
                "{flag}: the master's name is empty (the NAME of `sentinel monitor NAME ...`)"
            ));
        }
        if url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://") {
            let e = Endpoint::parse(url)?;
            let named = e
                .sentinel
                .as_ref()
                .map(|s| s.master.as_str())
                .unwrap_or_default();
            if named != master {
                return Err(format!(
                    "{flag} {master:?} and the URL {e}, which names the master {named:?}: name the master once (the URL's /MASTER or {flag})"
                ));
            }
            return Ok(e);
        }
        let (scheme, rest) = if let Some(r) = url.strip_prefix("rediss://") {
            ("rediss+sentinel", r)
        } else if let Some(r) = url.strip_prefix("redis://") {
            ("redis+sentinel", r)
        } else if url.contains("://") {
            return Err(format!(
                "invalid endpoint {:?} with {flag}: expected the sentinels as host[:port][,host[:port]...] or redis://[[user]:password@]host[:port][,host[:port]...][/db]",
                redact_url(url)
            ));
        } else {
            ("redis+sentinel", url)
        };
        let (rest, query) = split_query(rest);
        let (auth, hostpart) = split_auth(rest);
        let (hosts, db) = match hostpart.split_once('/') {
            Some((h, d)) => (h, Some(d)),
            None => (hostpart, None),
        };
        let mut built = format!("{scheme}://");
        if let Some(a) = auth {
            built.push_str(a);
            built.push('@');
        }
        built.push_str(hosts);
        built.push('/');
        built.push_str(&percent_encode(master));
        if let Some(d) = db.filter(|d| !d.is_empty()) {
            built.push('/');
            built.push_str(d);
        }
        if let Some(q) = query {
            built.push('?');
            built.push_str(q);
        }
        Endpoint::parse(&built)
    }

    /// A name for this endpoint that survives a failover: the sentinel set and master name for a
    /// sentinel endpoint, else `host:port` (shake-sync's default checkpoint name).
    pub fn stable_name(&self) -> String {
        match &self.sentinel {
            Some(s) => format!("sentinel:{}", s.master),
            None => self.address(),
        }
    }

    /// Takes the password from an environment variable when the URL has none, so it stays out
    /// of `ps` output.
    /// For a sentinel endpoint, the sentinels' password likewise comes from the variable named
    /// with `SENTINEL_PASSWORD` for `PASSWORD` (`SHAKE_SOURCE_SENTINEL_PASSWORD`).
    pub fn password_from_env(mut self, var: &str) -> Self {
        let from_env = |v: &str| std::env::var(v).ok().filter(|p| !p.is_empty());
        if self.password.is_none() {
            self.password = from_env(var);
        }
        if let Some(s) = &self.sentinel {
            if s.password.is_none() {
                let var = var.replace("PASSWORD", "SENTINEL_PASSWORD");
                if let Some(p) = from_env(&var) {
                    let mut s = (**s).clone();
                    s.password = Some(p);
                    self.sentinel = Some(Arc::new(s));
                }
            }
        }
        self
    }

    /// The same login, another node (for cluster nodes and replicas learned from a server, and
    /// the master a sentinel names): a node at a fixed address, never a sentinel endpoint.
    pub fn with_address(&self, host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            port,
            sentinel: None,
            ..self.clone()
        }
    }

    /// `host:port`; for a sentinel endpoint, the first sentinel's.
    pub fn address(&self) -> String {
        host_port(&self.host, self.port)
    }
}

#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificates to trust (else the system's). A server certificate
    /// that is itself in the file is trusted as it is: a self-signed certificate made with
    /// openssl's defaults is marked `CA:TRUE`, which chain validation refuses as a server's
    /// certificate (`CaUsedAsEndEntity`).
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints of server certificates trusted as they are (`--tls-pin-sha256`):
    /// when given, the server's certificate must be one of them, whatever the CAs say.
    pub pin_sha256: Vec<[u8; 32]>,
    /// Accept any server certificate. For tests and emergencies only.
    pub insecure: bool,
}

/// Parses a certificate fingerprint: 64 hex digits, colons (as openssl prints them) allowed,
/// optionally after `sha256:` / `SHA256 Fingerprint=`.
pub fn parse_sha256_pin(s: &str) -> Result<[u8; 32], String> {
    let t = s.trim();
    let t = t.rsplit_once('=').map_or(t, |(_, h)| h);
    let t = t.strip_prefix("sha256:").unwrap_or(t);
    let hex: String = t.chars().filter(|&c| c != ':').collect();
    let bad = || format!("{s:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Prints the `--tls-insecure` warning once per process, on the first TLS connection.
fn warn_insecure(endpoint: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "warning: --tls-insecure: the TLS certificate of {endpoint} (and of every other server) is not verified; anyone on the path can read and change the data"
        )
    });
}

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// How long a request may wait for its reply; `None` waits forever.
    pub reply_timeout: Option<Duration>,
    pub tls: TlsOptions,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Some(Duration::from_secs(60)),
            tls: TlsOptions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: no answer within {secs}s while {what}")]
    Timeout {
        endpoint: String,
        what: &'static str,
        secs: u64,
    },
    #[error("{endpoint}: connection error: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: the server closed the connection")]
    Closed { endpoint: String },
    #[error("{endpoint}: authentication failed: {message} (the password goes in the URL, redis://[user]:password@host, or in SHAKE_SOURCE_PASSWORD / SHAKE_TARGET_PASSWORD for that side)")]
    Auth { endpoint: String, message: String },
    #[error("{endpoint}: TLS: {message}")]
    Tls { endpoint: String, message: String },
    #[error("{endpoint}: {message}")]
    Protocol { endpoint: String, message: String },
}

impl NetError {
    /// The endpoint and the server's words, without the advice the message adds (for callers
    /// that give advice of their own).
    pub fn cause(&self) -> String {
        match self {
            NetError::Auth { endpoint, message } => format!("{endpoint}: {message}"),
            other => other.to_string(),
        }
    }

    /// True for failures a reconnect may cure (as opposed to a wrong password or a refusal).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            NetError::Connect { .. }
                | NetError::Timeout { .. }
                | NetError::Io { .. }
                | NetError::Closed { .. }
        )
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Capacity the write buffer keeps between flushes.
const WBUF_KEEP_BYTES: usize = 1 << 20;
/// A command at least this long is written from where it lies ([`Connection::write_now`]).
pub const WRITE_DIRECT_BYTES: usize = 1 << 20;

/// One connection to one server.
pub struct Connection {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    endpoint: Endpoint,
    reply_timeout: Option<Duration>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Connection({})", self.endpoint)
    }
}

impl Connection {
    /// Connects (TCP, then TLS for `rediss://`) and logs in (AUTH) when the endpoint has a
    /// password. Does not SELECT the endpoint's database: that is the caller's choice.
    ///
    /// For a sentinel endpoint: the master the sentinels name now (see [`connect_sentinel`]);
    /// the connection's [`Connection::endpoint`] is then that master's address.
    pub async fn connect(
        endpoint: &Endpoint,
        opts: &ConnectOptions,
    ) -> Result<Connection, NetError> {
        match &endpoint.sentinel {
            Some(s) => connect_sentinel(endpoint, s, opts).await,
            None => Connection::connect_node(endpoint, opts).await,
        }
    }

    async fn connect_node(
        endpoint: &Endpoint,
        opts: &ConnectOptions,
    ) -> Result<Connection, NetError> {
        let name = endpoint.to_string();
        let addr = endpoint.address();
        let tcp = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| NetError::Timeout {
                endpoint: name.clone(),
                what: "connecting",
                secs: opts.connect_timeout.as_secs(),
            })?
            .map_err(|source| NetError::Connect {
                endpoint: name.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if endpoint.tls {
            Box::new(tls_handshake(tcp, endpoint, opts).await?)
        } else {
            Box::new(tcp)
        };
        let mut conn = Connection {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: Vec::with_capacity(64 * 1024),
            endpoint: endpoint.clone(),
            reply_timeout: opts.reply_timeout,
        };
        if let Some(pass) = &endpoint.password {
            let reply = match &endpoint.user {
                Some(user) => {
                    conn.request(&["AUTH", user.as_str(), pass.as_str()])
                        .await?
                }
                None => conn.request(&["AUTH", pass.as_str()]).await?,
            };
            if let Some(e) = reply.error() {
                return Err(NetError::Auth {
                    endpoint: name,
                    message: e.to_string(),
                });
            }
        }
        Ok(conn)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn set_reply_timeout(&mut self, t: Option<Duration>) {
        self.reply_timeout = t;
    }

    fn io_err(&self, source: std::io::Error) -> NetError {
        NetError::Io {
            endpoint: self.endpoint.to_string(),
            source,
        }
    }

    pub fn protocol_err(&self, message: impl Into<String>) -> NetError {
        NetError::Protocol {
            endpoint: self.endpoint.to_string(),
            message: message.into(),
        }
    }

    /// Queues a command; nothing is sent until `flush`.
    pub fn queue<A: AsRef<[u8]>>(&mut self, argv: &[A]) {
        encode_command(&mut self.wbuf, argv);
    }

    /// Queues bytes that are already RESP.
    pub fn queue_raw(&mut self, resp: &[u8]) {
        self.wbuf.extend_from_slice(resp);
    }

    pub fn queued_bytes(&self) -> usize {
        self.wbuf.len()
    }

    pub async fn flush(&mut self) -> Result<(), NetError> {
        if !self.wbuf.is_empty() {
            let r = self.stream.write_all(&self.wbuf).await;
            self.wbuf.clear();
            if self.wbuf.capacity() > WBUF_KEEP_BYTES {
                // One long command must not keep its size of buffer for the connection's life.
                self.wbuf.shrink_to(WBUF_KEEP_BYTES);
            }
            r.map_err(|e| self.io_err(e))?;
        }
        self.stream.flush().await.map_err(|e| self.io_err(e))
    }

    /// Writes what is queued, then `resp` straight from the caller's memory (a long command is
    /// not copied into the write buffer).
    pub async fn write_now(&mut self, resp: &[u8]) -> Result<(), NetError> {
        if !self.wbuf.is_empty() {
            let r = self.stream.write_all(&self.wbuf).await;
            self.wbuf.clear();
            r.map_err(|e| self.io_err(e))?;
        }
        self.stream
            .write_all(resp)
            .await
            .map_err(|e| self.io_err(e))
    }

    /// Reads more bytes from the socket into the buffer; returns how many (0 at end of stream).
    pub async fn fill(&mut self) -> Result<usize, NetError> {
        if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        self.stream
            .read_buf(&mut self.rbuf)
            .await
            .map_err(|e| self.io_err(e))
    }

    async fn fill_timed(&mut self, what: &'static str) -> Result<(), NetError> {
        let n =
            match self.reply_timeout {
                Some(t) => tokio::time::timeout(t, self.fill()).await.map_err(|_| {
                    NetError::Timeout {
                        endpoint: self.endpoint.to_string(),
                        what,
                        secs: t.as_secs(),
                    }
                })??,
                None => self.fill().await?,
            };
        if n == 0 {
            return Err(NetError::Closed {
                endpoint: self.endpoint.to_string(),
            });
        }
        Ok(())
    }

    /// Reads the next reply. Error replies are `Ok(Reply::Error)`: what an error means is the
    /// caller's business.
    pub async fn read_reply(&mut self) -> Result<Reply, NetError> {
        loop {
            match decode_reply(&mut self.rbuf) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => self.fill_timed("waiting for a reply").await?,
                Err(m) => return Err(self.protocol_err(m)),
            }
        }
    }

    /// Sends one command and reads its reply.
    pub async fn request<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Reply, NetError> {
        self.queue(argv);
        self.flush().await?;
        self.read_reply().await
    }

    /// Like `request`, but an error reply becomes `NetError::Protocol` naming the command.
    pub async fn request_ok<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Reply, NetError> {
        let r = self.request(argv).await?;
        match r.error() {
            // A server that wants a password lets the connection in and refuses the first
            // command: that is a login failure, whatever command met it.
            Some(e) if e.starts_with("NOAUTH") || e.starts_with("WRONGPASS") => {
                Err(NetError::Auth {
                    endpoint: self.endpoint.to_string(),
                    message: e.to_string(),
                })
            }
            Some(e) => {
                let cmd = argv
                    .first()
                    .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                    .unwrap_or_default();
                Err(self.protocol_err(format!("{cmd} failed: {e}")))
            }
            None => Ok(r),
        }
    }

    /// The bytes read from the socket but not consumed yet.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }

    /// Up to `max` raw bytes: first from the buffer, else one read from the socket. Empty at
    /// end of stream.
    pub async fn read_raw(&mut self, max: usize) -> Result<Bytes, NetError> {
        if self.rbuf.is_empty() && self.fill().await? == 0 {
            return Ok(Bytes::new());
        }
        let n = max.min(self.rbuf.len());
        Ok(self.rbuf.split_to(n).freeze())
    }

    /// `INFO section` as a map of its `name:value` lines.
    pub async fn info(&mut self, section: &str) -> Result<HashMap<String, String>, NetError> {
        let r = self.request_ok(&["INFO", section]).await?;
        let text = r
            .as_text()
            .ok_or_else(|| self.protocol_err("INFO returned no text"))?;
        Ok(parse_info(&text))
    }

    /// The databases holding keys (`INFO keyspace`), ascending; when INFO is refused, every
    /// database `CONFIG GET databases` names, else database 0.
    pub async fn databases_with_keys(&mut self) -> Vec<u64> {
        match self.info("keyspace").await {
            Ok(info) => {
                let mut dbs: Vec<u64> = info
                    .keys()
                    .filter_map(|k| k.strip_prefix("db")?.parse().ok())
                    .collect();
                dbs.sort_unstable();
                dbs
            }
            Err(_) => {
                let n = self
                    .request(&["CONFIG", "GET", "databases"])
                    .await
                    .ok()
                    .and_then(|r| r.as_array().and_then(|a| a.get(1)).and_then(Reply::as_int))
                    .unwrap_or(1);
                (0..n.max(1) as u64).collect()
            }
        }
    }
}

/// Connects to the master `set` names: asks each sentinel in turn `SENTINEL
/// GET-MASTER-ADDR-BY-NAME`, connects to the address it gives and takes it only if `ROLE` says
/// master (a sentinel may not have seen a failover yet: the next one is asked). Sentinels that
/// cannot be reached, or a master that is not a master (yet), are transient failures: callers
/// retry with their backoff, and so follow a failover. No sentinel knowing the name is not.
async fn connect_sentinel(
    endpoint: &Endpoint,
    set: &SentinelSet,
    opts: &ConnectOptions,
) -> Result<Connection, NetError> {
    let mut problems = Vec::new();
    let mut unknown = false;
    let mut named = false;
    for (host, port) in &set.nodes {
        let sentinel = Endpoint {
            host: host.clone(),
            port: *port,
            user: set.user.clone(),
            password: set.password.clone(),
            db: None,
            tls: endpoint.tls,
            sentinel: None,
        };
        let at = host_port(host, *port);
        let reply = match Connection::connect_node(&sentinel, opts).await {
            Ok(mut c) => {
                c.request(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", set.master.as_str()])
                    .await
            }
            Err(e) => Err(e),
        };
        let addr = match reply {
            Ok(Reply::Nil) => {
                unknown = true;
                problems.push(format!("{at}: no master named {:?}", set.master));
                continue;
            }
            Ok(r) if r.error().is_some() => {
                problems.push(format!("{at}: {}", r.error().unwrap_or_default()));
                continue;
            }
            Ok(r) => match r.as_array() {
                Some([h, p]) => {
                    match (h.as_text(), p.as_text().and_then(|p| p.parse::<u16>().ok())) {
                        (Some(h), Some(p)) => (h.to_string(), p),
                        _ => {
                            problems.push(format!("{at}: an address that is not host and port"));
                            continue;
                        }
                    }
                }
                _ => {
                    problems.push(format!("{at}: an answer that is not an address"));
                    continue;
                }
            },
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        named = true;
        let node = endpoint.with_address(&addr.0, addr.1);
        let mut conn = match Connection::connect_node(&node, opts).await {
            Ok(c) => c,
            // A wrong password is the same on every node: say so now.
            Err(e @ NetError::Auth { .. }) | Err(e @ NetError::Tls { .. }) => return Err(e),
            Err(e) => {
                problems.push(format!("{at} names {}: {e}", node.address()));
                continue;
            }
        };
        match conn.request(&["ROLE"]).await {
            Ok(r) => {
                let role = r
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(Reply::as_text)
                    .map(|t| t.to_string());
                if role.as_deref() == Some("master") {
                    return Ok(conn);
                }
                problems.push(format!(
                    "{at} names {}, which is not a master (ROLE: {}); a failover is under way",
                    node.address(),
                    role.unwrap_or_else(|| r.error().unwrap_or("?").to_string())
                ));
            }
            Err(e) => problems.push(format!("{at} names {}: {e}", node.address())),
        }
    }
    let what = format!(
        "sentinels {} about master {:?}: {}",
        set.addresses(),
        set.master,
        problems.join("; ")
    );
    // Some sentinel answered that it knows no such master and none named one: a wrong name,
    // which no retry cures.
    if unknown && !named {
        return Err(NetError::Protocol {
            endpoint: endpoint.to_string(),
            message: format!("{what} (check the master name after the sentinels in the URL: it is the NAME of `sentinel monitor NAME` in the sentinels' config)"),
        });
    }
    Err(NetError::Connect {
        endpoint: endpoint.to_string(),
        source: std::io::Error::other(what),
    })
}

/// Parses INFO output into `name -> value`.
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

async fn tls_handshake(
    tcp: TcpStream,
    endpoint: &Endpoint,
    opts: &ConnectOptions,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, NetError> {
    use rustls::pki_types::ServerName;
    let name = endpoint.to_string();
    let tls_err = |m: String| NetError::Tls {
        endpoint: name.clone(),
        message: m,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let config = if opts.tls.insecure {
        warn_insecure(&name);
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifiers::AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let mut listed = Vec::new();
        match &opts.tls.ca_file {
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| {
                    tls_err(format!("cannot read --tls-ca {}: {e}", path.display()))
                })?;
                for c in certs {
                    let c = c.map_err(|e| {
                        tls_err(format!("bad certificate in {}: {e}", path.display()))
                    })?;
                    roots.add(c.clone()).map_err(|e| {
                        tls_err(format!("bad certificate in {}: {e}", path.display()))
                    })?;
                    listed.push(c);
                }
            }
            None if opts.tls.pin_sha256.is_empty() => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
            None => {}
        }
        let chain = if roots.is_empty() {
            None
        } else {
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| tls_err(format!("cannot use the CA certificates: {e}")))?,
            )
        };
        let verifier = verifiers::Pinned {
            chain,
            listed,
            pins: opts.tls.pin_sha256.clone(),
            provider,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    let server_name = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| tls_err(format!("{} is not a valid server name: {e}", endpoint.host)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(opts.connect_timeout, connector.connect(server_name, tcp))
        .await
        .map_err(|_| NetError::Timeout { endpoint: name.clone(), what: "the TLS handshake", secs: opts.connect_timeout.as_secs() })?
        .map_err(|e| tls_err(format!("handshake failed: {e} (--tls-ca names the CA, or the self-signed certificate, to trust; --tls-pin-sha256 pins the server's certificate; --tls-insecure skips verification)")))
}

/// The certificate verifiers: `Pinned` (the normal one) and `AcceptAnyCert` (`--tls-insecure`).
/// Both check the handshake's signatures with the certificate's key, so the server must hold
/// the private key of the certificate it presents.
mod verifiers {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Chain validation against the CAs, plus two ways to trust one certificate as it is: its
    /// SHA-256 among `pins` (then nothing else decides), or the certificate itself listed in
    /// the `--tls-ca` file (a self-signed server certificate, whatever its CA flag says).
    #[derive(Debug)]
    pub struct Pinned {
        pub chain: Option<Arc<WebPkiServerVerifier>>,
        pub listed: Vec<CertificateDer<'static>>,
        pub pins: Vec<[u8; 32]>,
        pub provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if !self.pins.is_empty() {
                let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
                if self.pins.iter().any(|p| p[..] == *digest.as_ref()) {
                    return Ok(ServerCertVerified::assertion());
                }
                let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
                return Err(rustls::Error::General(format!(
                    "the server's certificate has SHA-256 fingerprint {}, which --tls-pin-sha256 does not name",
                    hex.join(":")
                )));
            }
            let verdict = match &self.chain {
                Some(v) => v.verify_server_cert(end_entity, intermediates, name, ocsp, now),
                None => Err(rustls::Error::General(
                    "no CA certificates to verify with".into(),
                )),
            };
            match verdict {
                Err(_)
                    if self
                        .listed
                        .iter()
                        .any(|c| c.as_ref() == end_entity.as_ref()) =>
                {
                    Ok(ServerCertVerified::assertion())
                }
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            AcceptAnyCert(self.provider.clone()).verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            AcceptAnyCert(self.provider.clone()).verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// `--tls-insecure`: checks signatures but trusts any certificate.
    #[derive(Debug)]
    pub struct AcceptAnyCert(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Bounded exponential backoff: the one retry schedule of every reconnect and retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    tried: u32,
}

impl Backoff {
    pub fn new(attempts: u32, base: Duration, max: Duration) -> Self {
        Backoff {
            attempts,
            base,
            max,
            tried: 0,
        }
    }

    /// The delay before the next attempt, or `None` when the attempts are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.tried >= self.attempts {
            return None;
        }
        let d = self
            .base
            .saturating_mul(1u32 << self.tried.min(16))
            .min(self.max);
        self.tried += 1;
        Some(d)
    }

    pub fn tried(&self) -> u32 {
        self.tried
    }

    pub fn reset(&mut self) {
        self.tried = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("redis://app:s%40cret@10.0.0.1:7000/3").unwrap();
        assert_eq!(
            (
                e.host.as_str(),
                e.port,
                e.user.as_deref(),
                e.password.as_deref(),
                e.db,
                e.tls
            ),
            (
                "10.0.0.1",
                7000,
                Some("app"),
                Some("s@cret"),
                Some(3),
                false
            )
        );
        assert_eq!(e.to_string(), "redis://app@10.0.0.1:7000/3");
        let e = Endpoint::parse("rediss://:pw@[::1]").unwrap();
        assert_eq!(
            (
                e.host.as_str(),
                e.port,
                e.user,
                e.password.as_deref(),
                e.tls
            ),
            ("::1", 6379, None, Some("pw"), true)
        );
        assert_eq!(Endpoint::parse("localhost:6380").unwrap().port, 6380);
        assert!(Endpoint::parse("http://x").is_err());
        assert!(Endpoint::parse("redis://h:99999").is_err());
        assert!(Endpoint::parse("redis://h/x").is_err());
        // A slash short of a URL is a malformed URL, not a host named "redis".
        for bad in [
            "redis:/host",
            "redis:host:6379",
            "rediss:/h",
            "redis+sentinel:/s/m",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.contains("two slashes"), "{bad}: {e}");
        }
        let e = Endpoint::parse("redis:6380").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("redis", 6380));
    }

    #[test]
    fn parses_sentinel_urls() {
        let e = Endpoint::parse(
            "redis+sentinel://app:pw@10.0.0.1:5000,[::1],s3/my%2Fm/2?sentinel_user=su&sentinel_password=s%40p",
        )
        .unwrap();
        let s = e.sentinel.clone().unwrap();
        assert_eq!(
            s.nodes,
            vec![
                ("10.0.0.1".to_string(), 5000),
                ("::1".to_string(), SENTINEL_PORT),
                ("s3".to_string(), SENTINEL_PORT)
            ]
        );
        assert_eq!(
            (s.master.as_str(), s.user.as_deref(), s.password.as_deref()),
            ("my/m", Some("su"), Some("s@p"))
        );
        assert_eq!(
            (e.user.as_deref(), e.password.as_deref(), e.db, e.tls),
            (Some("app"), Some("pw"), Some(2), false)
        );
        assert_eq!(
            e.to_string(),
            "redis+sentinel://app@10.0.0.1:5000,[::1]:26379,s3:26379/my/m/2"
        );
        assert_eq!(e.stable_name(), "sentinel:my/m");
        // A node learned through it is a plain node with the data nodes' login.
        let n = e.with_address("10.0.0.9", 6379);
        assert_eq!(n.sentinel, None);
        assert_eq!(n.to_string(), "redis://app@10.0.0.9:6379/2");
        let e = Endpoint::parse("rediss+sentinel://h/m").unwrap();
        assert!(e.tls && e.sentinel.as_ref().unwrap().password.is_none());
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://h:1/m/x",
            "redis+sentinel://h:1/m?what=1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let e = Endpoint::parse("redis+sentinel://:SrcPw@h:1/m?sentinel_password=SenPw&x=1")
            .unwrap_err();
        assert!(!e.contains("SrcPw") && !e.contains("SenPw"), "{e}");
    }

    /// `--source SENTINELS --source-sentinel-master NAME` is the URL form, field for field.
    #[test]
    fn sentinel_master_flag_builds_the_url_form() {
        let flag = "--source-sentinel-master";
        let url = Endpoint::parse(
            "redis+sentinel://app:pw@10.0.0.1:5000,[::1],s3/my%2Fm/2?sentinel_password=s%40p",
        )
        .unwrap();
        for given in [
            "redis://app:pw@10.0.0.1:5000,[::1],s3/2?sentinel_password=s%40p",
            "redis+sentinel://app:pw@10.0.0.1:5000,[::1],s3/my%2Fm/2?sentinel_password=s%40p",
        ] {
            assert_eq!(
                Endpoint::parse_with_master(given, Some("my/m"), flag).unwrap(),
                url,
                "{given}"
            );
        }
        let bare = Endpoint::parse_with_master("h1,h2:5000", Some("mymaster"), flag).unwrap();
        assert_eq!(
            bare,
            Endpoint::parse("redis+sentinel://h1,h2:5000/mymaster").unwrap()
        );
        assert_eq!(bare.sentinel.as_ref().unwrap().nodes[0].1, SENTINEL_PORT);
        let tls = Endpoint::parse_with_master("rediss://h", Some("m"), flag).unwrap();
        assert_eq!(tls, Endpoint::parse("rediss+sentinel://h/m").unwrap());
        assert_eq!(
            Endpoint::parse_with_master("redis://h:1", None, flag).unwrap(),
            Endpoint::parse("redis://h:1").unwrap()
        );
        // Another master in the URL, an empty name, another scheme: one line each, no password.
        for (given, master, expect) in [
            (
                "redis+sentinel://:SrcPw@h/other",
                "m",
                "names the master \"other\"",
            ),
            ("redis://:SrcPw@h", "", "the master's name is empty"),
            ("http://:SrcPw@h", "m", "expected the sentinels"),
            ("redis://:SrcPw@h:x", "m", "port"),
        ] {
            let e = Endpoint::parse_with_master(given, Some(master), flag).unwrap_err();
            assert!(e.contains(expect), "{given}: {e}");
            assert!(!e.contains("SrcPw") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn messages_never_show_the_password() {
        for url in [
            "redis://:SrcPw@host:99999",
            "redis://app:SrcPw@host:99999",
            "rediss://SrcPw@host/x",
            "redis://app:Src@Pw@:1",
            "redis://app:SrcPw%zz@host",
            "redis://app:SrcPw%ff@host",
            "http://u:SrcPw@host",
        ] {
            let e = Endpoint::parse(url).unwrap_err();
            assert!(!e.contains("SrcPw") && e.contains("***"), "{url}: {e}");
        }
        assert_eq!(redact_url("redis://host:1"), "redis://host:1");
        assert_eq!(redact_url("redis://u:p@h"), "redis://u:***@h");
    }

    #[test]
    fn backoff_is_bounded() {
        let mut b = Backoff::new(4, Duration::from_millis(100), Duration::from_millis(250));
        let d: Vec<_> = std::iter::from_fn(|| b.next_delay()).collect();
        assert_eq!(
            d,
            vec![
                Duration::from_millis(100),
                Duration::from_millis(200),
                Duration::from_millis(250),
                Duration::from_millis(250)
            ]
        );
    }
}
