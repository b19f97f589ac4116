//! Being a replica: the replication handshake, PSYNC/SYNC, the full-sync RDB transfer and the
//! hand-over to the command stream.
//!
//! This module owns:
//!
//! - the handshake (`REPLCONF listening-port`, `REPLCONF capa eof capa psync2`, `REPLCONF version`
//!   on Valkey, `REPLCONF rdb-only 1` where the server knows it, `REPLCONF rdb-filter-only
//!   functions` for a functions-only snapshot); AUTH is done by [`Connection::connect`];
//! - `PSYNC ? -1` (or `PSYNC <replid> <offset>` to resume) under a configurable command name, with
//!   a fall-back to `SYNC` for servers that do not know PSYNC, and the explanation of a refusal;
//! - the replication framing that is not RESP: bare `\n` keep-alives, `+FULLRESYNC <replid>
//!   <offset>` / `+CONTINUE`, and the RDB transfer as `$<len>\r\n<bytes>` (no trailing CRLF) or
//!   `$EOF:<40-byte mark>\r\n<bytes><mark>`. It is read raw from the [`Connection`]'s buffer and
//!   socket; the RESP codec never sees it;
//! - `REPLCONF ACK <offset>` on a one-second timer once the command stream begins. None is sent
//!   during the RDB transfer: a source expects none before the replica is online, and an ACK
//!   still unread in an rdb-only source's socket when it closes the link after the RDB turns the
//!   close into a TCP reset, which destroys the end of the RDB still in our receive buffer (seen
//!   with Redis 7.0, disk-based: the link "reset" after 22.9 of 24.8 MB);
//! - checking the RDB while it streams: the bytes go through [`RdbParser`] on a blocking thread
//!   (structure and CRC-64 both checked), so a dump is known good when its last byte arrives. The
//!   RDB format itself stays in [`crate::rdb`]; this module only knows where the transfer ends;
//! - handing the connection over, with the bytes already read after the RDB, as a [`ReplStream`]
//!   positioned at the start of the command stream (what shake-sync reads next).
//! - the full sync over two connections, when [`ReplOptions::dual_channel`] asks for it and the
//!   source offers it: Valkey's dual-channel replication (`+DUALCHANNELSYNC`, a second
//!   connection with `REPLCONF rdb-channel 1` and `SYNC`, `$ENDOFF`, then `REPLCONF
//!   set-rdb-client-id` and `PSYNC <replid> <offset+1>` on the first) and Redis's RDB channel
//!   (`+RDBCHANNELSYNC <id>`, a second connection with `REPLCONF main-ch-client-id <id>` and
//!   `PSYNC ? -1`); the first connection's stream is read into a [`Spool`] by a task from the
//!   start, and the [`ReplStream`] after the RDB takes its bytes from there. A step that fails
//!   ends both connections and the request is made again over one ([`Channels::FellBack`]).
//!
//! A dump (shake-dump) is [`full_sync`], then [`Transfer::next_chunk`] until `None`, then
//! [`Transfer::finish`]. A sync (shake-sync) is [`start_sync`] with or without a [`Resume`]
//! point, the same transfer for a full sync, then the [`ReplStream`].

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Instant;

use crate::net::{ConnectOptions, Connection, NetError};
use crate::rdb::{ChecksumStatus, Header, Item, ParserOptions, RdbError, RdbParser};
use crate::spool::{Spool, SpoolError, SpoolOptions};

/// Length of the `$EOF:` end mark (a run id's length, `CONFIG_RUN_ID_SIZE`).
pub const MARK_LEN: usize = 40;

/// Longest line accepted before the transfer (`+FULLRESYNC ...`, `$EOF:...`, an error).
const MAX_LINE: usize = 64 * 1024;

/// The size `Transfer::next_chunk` gathers before it hands out a chunk. A socket read brings
/// ~20 kB on loopback; handing each to the writer and the checking thread separately cost more
/// CPU in syscalls and thread wake-ups than the transfer itself (and that CPU is taken from the
/// source's snapshot child when both share a machine).
const CHUNK_TARGET: usize = 512 * 1024;

/// Longest a chunk is held back while gathering, so a slow source still shows steady progress.
const GATHER_TIME: Duration = Duration::from_millis(50);

/// Chunks in flight between the socket and the checking thread: at most ~4 MB.
const VERIFY_QUEUE: usize = 8;

/// How a replica link behaves.
#[derive(Debug, Clone)]
pub struct ReplOptions {
    /// The name of PSYNC on this server; managed services rename it.
    pub psync_command: String,
    /// Announced with `REPLCONF listening-port`; only shown in the source's `INFO replication`.
    pub listening_port: u16,
    /// Ask for `REPLCONF rdb-only 1`: the source keeps no replication backlog for us and closes
    /// the link after the RDB. Right for a dump, wrong for a sync. Servers that do not know it
    /// (before 6.2) are simply not asked.
    pub rdb_only: bool,
    /// Ask for an RDB that holds only the functions (`REPLCONF rdb-filter-only functions`,
    /// Redis 7.0+ / Valkey); fails on servers without it.
    pub functions_only: bool,
    /// Interval of `REPLCONF ACK` while waiting for the source.
    pub ack_interval: Duration,
    /// Give up when the source sends nothing (not even a keep-alive) for this long. Sources send
    /// a `\n` every second while they prepare a snapshot on disk.
    pub idle_timeout: Duration,
    /// Check the transferred RDB (structure and CRC-64) while it streams. Off for a caller that
    /// parses the RDB itself anyway (the parser checks the CRC too).
    pub verify: bool,
    /// Offer the source a full sync over two connections (Valkey 8.0+ dual-channel replication,
    /// Redis 8.0+ RDB channel): the RDB on a second one, the command stream meanwhile on the
    /// first, read into a [`Spool`] here so the source's buffer for us stays small. `None`: one
    /// connection, as every server before those does it.
    pub dual_channel: Option<DualChannel>,
}

/// What a full sync over two connections needs besides the first one.
#[derive(Debug, Clone)]
pub struct DualChannel {
    /// How the RDB channel, a second connection to the same node, is opened.
    pub connect: ConnectOptions,
    /// Where the command stream waits while the RDB is applied.
    pub spool: SpoolOptions,
}

impl Default for ReplOptions {
    fn default() -> Self {
        ReplOptions {
            psync_command: "PSYNC".into(),
            listening_port: 0,
            rdb_only: false,
            functions_only: false,
            ack_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            verify: true,
            dual_channel: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error(transparent)]
    Net(#[from] NetError),
    /// The server does not offer replication at all (managed services disable it).
    #[error("{endpoint} refuses replication ({command}: {message}); managed services often disable SYNC/PSYNC: copy with shake-rump instead, or, if the provider renamed PSYNC, name it with --psync-command")]
    Refused {
        endpoint: String,
        command: String,
        message: String,
    },
    /// An ACL user without the replication commands.
    #[error("{endpoint}: the user may not replicate ({command}: {message}); grant it +psync +replconf (and +sync for servers without PSYNC), or copy with shake-rump")]
    Denied {
        endpoint: String,
        command: String,
        message: String,
    },
    #[error("{endpoint}: {what} is not supported by this server ({message})")]
    Unsupported {
        endpoint: String,
        what: &'static str,
        message: String,
    },
    /// The source answered with an error (a replica without its master, loading, a failed BGSAVE).
    #[error("{endpoint}: {command} failed: {message}")]
    Source {
        endpoint: String,
        command: String,
        message: String,
    },
    #[error("{endpoint}: replication link lost {during}: {cause}")]
    LinkLost {
        endpoint: String,
        during: String,
        cause: String,
        /// RDB bytes received before the link broke.
        received: u64,
    },
    #[error("{endpoint}: nothing received from the source for {secs}s {during}")]
    Idle {
        endpoint: String,
        secs: u64,
        during: String,
    },
    #[error("{endpoint}: the RDB received is not valid: {source}")]
    Rdb { endpoint: String, source: RdbError },
    /// The command stream that waits while the RDB is applied could not be held.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Where a resumed sync picks up: the source's replication id and the offset of the last byte
/// of the command stream that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub replid: String,
    pub offset: u64,
}

/// How the source answered the sync request.
pub enum SyncStart {
    /// A full resynchronisation: the RDB comes first.
    Full(Transfer),
    /// `+CONTINUE`: the command stream resumes right after the resume offset.
    Continue(ReplStream),
}

/// How the RDB transfer is framed.
enum Framing {
    /// `$<len>`: exactly this many bytes.
    Len(u64),
    /// `$EOF:<mark>`: up to the mark (diskless). `shift` is the Horspool skip table of the mark.
    Mark {
        mark: [u8; MARK_LEN],
        shift: Box<[usize; 256]>,
    },
}

/// The connection plus the waiting machinery every phase shares: the ACK timer and the idle
/// timeout.
struct Link {
    conn: Connection,
    name: String,
    ack_interval: Duration,
    idle_timeout: Duration,
    /// ACKs go out only in the command-stream phase (see the module doc for why not earlier).
    acking: bool,
    /// The offset ACKed: the `+FULLRESYNC` offset until the caller applies commands.
    offset: u64,
    next_tick: Instant,
    last_data: Instant,
    /// When set and it turns true, a wait ends early with 0 bytes (a stop was asked for).
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Link {
    fn new(conn: Connection, opts: &ReplOptions) -> Link {
        let now = Instant::now();
        Link {
            name: conn.endpoint().to_string(),
            conn,
            ack_interval: opts.ack_interval,
            idle_timeout: opts.idle_timeout,
            acking: false,
            offset: 0,
            next_tick: now + opts.ack_interval,
            last_data: now,
            stop: None,
        }
    }

    async fn send_ack(&mut self) -> Result<(), NetError> {
        let offset = self.offset.to_string();
        self.conn.queue(&["REPLCONF", "ACK", offset.as_str()]);
        self.conn.flush().await
    }

    /// Reads more bytes into the connection's buffer, sending ACKs on the timer meanwhile.
    /// `during` describes the phase for error messages; `received` is the RDB byte count so far.
    async fn wait_for_data(
        &mut self,
        during: &(dyn Fn() -> String + Sync),
        received: u64,
    ) -> Result<usize, ReplError> {
        self.wait_for_data_until(during, received, None)
            .await
            .map(|n| n.unwrap_or(0))
    }

    /// `wait_for_data`, giving up at `until` with `None` (nothing read, nothing lost).
    async fn wait_for_data_until(
        &mut self,
        during: &(dyn Fn() -> String + Sync),
        received: u64,
        until: Option<tokio::time::Instant>,
    ) -> Result<Option<usize>, ReplError> {
        loop {
            if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
                return Ok(Some(0));
            }
            let tick = tokio::time::sleep_until(self.next_tick);
            let stopped = stop_requested(self.stop.clone());
            let deadline = deadline_at(until);
            tokio::select! {
                // Reading into the buffer is cancel-safe; an ACK being written is not, so the
                // stop and the deadline are only heard here, never inside the tick's write.
                _ = stopped => return Ok(Some(0)),
                _ = deadline => return Ok(None),
                r = self.conn.fill() => {
                    let cause = match r {
                        Ok(0) => "the server closed the connection".to_string(),
                        Ok(n) => {
                            self.last_data = Instant::now();
                            return Ok(Some(n));
                        }
                        Err(NetError::Io { source, .. }) => source.to_string(),
                        Err(e) => e.to_string(),
                    };
                    return Err(ReplError::LinkLost {
                        endpoint: self.name.clone(),
                        during: during(),
                        cause,
                        received,
                    });
                }
                _ = tick => {
                    self.next_tick = Instant::now() + self.ack_interval;
                    if self.last_data.elapsed() >= self.idle_timeout {
                        return Err(ReplError::Idle {
                            endpoint: self.name.clone(),
                            secs: self.idle_timeout.as_secs(),
                            during: during(),
                        });
                    }
                    if self.acking {
                        self.send_ack().await.map_err(|e| ReplError::LinkLost {
                            endpoint: self.name.clone(),
                            during: during(),
                            cause: e.to_string(),
                            received,
                        })?;
                    }
                }
            }
        }
    }

    /// The next line ending in CRLF, skipping the bare `\n` keep-alives a source sends while it
    /// prepares the snapshot. The line is not RESP-decoded: `$EOF:<mark>` is not RESP.
    async fn read_line(
        &mut self,
        during: &(dyn Fn() -> String + Sync),
    ) -> Result<Vec<u8>, ReplError> {
        loop {
            let buf = self.conn.buffer();
            let skip = buf.iter().take_while(|&&b| b == b'\n').count();
            buf.advance(skip);
            if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = buf.split_to(p).to_vec();
                buf.advance(2);
                return Ok(line);
            }
            if buf.len() > MAX_LINE {
                return Err(self
                    .conn
                    .protocol_err(format!("a line of more than {MAX_LINE} bytes {}", during()))
                    .into());
            }
            self.wait_for_data(during, 0).await?;
        }
    }

    fn reply_error(&self, command: &str, message: &str) -> ReplError {
        classify_error(&self.name, command, message)
    }
}

/// What an error reply to a replication command means.
fn classify_error(endpoint: &str, command: &str, message: &str) -> ReplError {
    let endpoint = endpoint.to_string();
    let upper = message.to_ascii_uppercase();
    if upper.starts_with("NOAUTH") || upper.starts_with("WRONGPASS") {
        ReplError::Net(NetError::Auth {
            endpoint,
            message: message.to_string(),
        })
    } else if upper.starts_with("NOPERM") {
        ReplError::Denied {
            endpoint,
            command: command.to_string(),
            message: message.to_string(),
        }
    } else if is_unknown_command(message) {
        ReplError::Refused {
            endpoint,
            command: command.to_string(),
            message: message.to_string(),
        }
    } else {
        ReplError::Source {
            endpoint,
            command: command.to_string(),
            message: message.to_string(),
        }
    }
}

/// "ERR unknown command 'PSYNC', with args beginning with: ..." (a disabled or renamed command).
fn is_unknown_command(message: &str) -> bool {
    message.to_ascii_lowercase().contains("unknown command")
}

/// The handshake before PSYNC. AUTH has been done by [`Connection::connect`]. Returns the
/// source's Valkey version, if it is a Valkey server that says so.
pub async fn handshake(
    conn: &mut Connection,
    opts: &ReplOptions,
) -> Result<Option<String>, ReplError> {
    let name = conn.endpoint().to_string();
    let port = opts.listening_port.to_string();
    let r = conn
        .request(&["REPLCONF", "listening-port", port.as_str()])
        .await?;
    if let Some(e) = r.error() {
        return Err(classify_error(&name, "REPLCONF", e));
    }
    // Without these capabilities a source sends `$<len>` transfers only and no PSYNC2 ids;
    // servers too old to know them are still usable, so an error here is not fatal. A server
    // ignores the capabilities it does not know, so both names of the two-connection full sync
    // go to every server: Valkey's `dual-channel`, Redis's `rdb-channel-repl`.
    let mut capa = vec!["REPLCONF", "capa", "eof", "capa", "psync2"];
    if opts.dual_channel.is_some() {
        capa.extend(["capa", "dual-channel", "capa", "rdb-channel-repl"]);
    }
    let _ = conn.request(&capa).await?;
    // Valkey 9 sends a replica that does not announce its version an RDB in the older REDIS0011
    // format (streamed, whatever repl-diskless-sync says), and its snapshot fails on data that
    // format cannot hold (hash field TTLs): the link just closes after +FULLRESYNC. Announcing the
    // source's own version gets its native format, the one it writes to its own disk. Redis has
    // no such option; a source that hides INFO is simply not told.
    let mut version = None;
    match conn.info("server").await {
        Ok(info) => {
            if let Some(v) = info.get("valkey_version") {
                let _ = conn.request(&["REPLCONF", "version", v.as_str()]).await?;
                version = Some(v.clone());
            }
        }
        Err(NetError::Protocol { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if opts.rdb_only {
        // Servers before 6.2 do not know rdb-only: they keep a backlog for us; harmless.
        let _ = conn.request(&["REPLCONF", "rdb-only", "1"]).await?;
    }
    if opts.functions_only {
        let r = conn
            .request(&["REPLCONF", "rdb-filter-only", "functions"])
            .await?;
        if let Some(e) = r.error() {
            return Err(ReplError::Unsupported {
                endpoint: name,
                what: "a functions-only snapshot (REPLCONF rdb-filter-only, Redis 7.0+ / Valkey)",
                message: e.to_string(),
            });
        }
    }
    Ok(version)
}

/// A full sync, as a dump wants it: the handshake, then `PSYNC ? -1` (or SYNC). Returns the
/// transfer positioned at the first RDB byte.
pub async fn full_sync(conn: Connection, opts: &ReplOptions) -> Result<Transfer, ReplError> {
    match start_sync(conn, opts, None).await? {
        SyncStart::Full(t) => Ok(t),
        SyncStart::Continue(s) => {
            Err(s.protocol_err("the source answered a full sync request with +CONTINUE"))
        }
    }
}

/// How the full sync's RDB and the command stream after it travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channels {
    /// On one connection: the RDB, then the stream (every server; the source buffers the
    /// stream for us while the RDB is applied).
    One,
    /// Valkey's dual-channel replication (`+DUALCHANNELSYNC`): the RDB on a second connection,
    /// the stream meanwhile on the first, buffered here.
    ValkeyDualChannel,
    /// Redis's RDB channel (`+RDBCHANNELSYNC`): the same, as Redis 8 does it.
    RedisRdbChannel,
    /// The source offered two connections but a step of it failed (the reason); the full sync
    /// went on over one.
    FellBack(String),
}

impl Channels {
    /// How the log says it.
    pub fn describe(&self) -> String {
        match self {
            Channels::One => "one connection".into(),
            Channels::ValkeyDualChannel => {
                "two connections (Valkey dual-channel replication: the RDB on the second, the command stream meanwhile buffered here)".into()
            }
            Channels::RedisRdbChannel => {
                "two connections (Redis RDB channel: the RDB on the second, the command stream meanwhile buffered here)".into()
            }
            Channels::FellBack(why) => format!(
                "one connection: the source offered a second one for the RDB, but {why}"
            ),
        }
    }
}

/// The handshake, then `PSYNC <replid> <offset+1>` when resuming or `PSYNC ? -1`; falls back to
/// `SYNC` when the server does not know PSYNC (under its configured name). With
/// [`ReplOptions::dual_channel`], a source that answers with a full sync over two connections
/// gets it; if any step of that fails, the connections are closed and the request is made again
/// over one ([`Channels::FellBack`]).
pub async fn start_sync(
    conn: Connection,
    opts: &ReplOptions,
    resume: Option<&Resume>,
) -> Result<SyncStart, ReplError> {
    let mut endpoint = conn.endpoint().clone();
    endpoint.sentinel = None;
    match start_once(conn, opts, resume).await? {
        Ok(started) => Ok(started),
        Err(why) => {
            let Some(dual) = &opts.dual_channel else {
                return Err(ReplError::Source {
                    endpoint: endpoint.to_string(),
                    command: opts.psync_command.clone(),
                    message: why,
                });
            };
            let conn = Connection::connect(&endpoint, &dual.connect).await?;
            let single = ReplOptions {
                dual_channel: None,
                ..opts.clone()
            };
            match start_once(conn, &single, resume).await? {
                Ok(SyncStart::Full(mut t)) => {
                    t.channels = Channels::FellBack(why);
                    Ok(SyncStart::Full(t))
                }
                Ok(other) => Ok(other),
                Err(why) => Err(ReplError::Source {
                    endpoint: endpoint.to_string(),
                    command: opts.psync_command.clone(),
                    message: why,
                }),
            }
        }
    }
}

/// One attempt of [`start_sync`]; the inner `Err` is a failed step of a two-connection full
/// sync (what failed), which the caller answers by trying again over one.
async fn start_once(
    mut conn: Connection,
    opts: &ReplOptions,
    resume: Option<&Resume>,
) -> Result<Result<SyncStart, String>, ReplError> {
    let version = handshake(&mut conn, opts).await?;
    let mut link = Link::new(conn, opts);
    let psync = opts.psync_command.as_str();
    let (replid, offset) = match resume {
        // PSYNC names the first byte wanted, one past the last one applied.
        Some(r) => (r.replid.clone(), (r.offset + 1).to_string()),
        None => ("?".to_string(), "-1".to_string()),
    };
    link.conn.queue(&[psync, replid.as_str(), offset.as_str()]);
    link.conn.flush().await?;
    let during = || format!("while waiting for the reply to {psync}");
    let line = link.read_line(&during).await?;
    let text = String::from_utf8_lossy(&line).into_owned();
    if let Some(dual) = &opts.dual_channel {
        if text.trim_end() == "+DUALCHANNELSYNC" {
            return Ok(valkey_dual_channel(link, opts, dual, version.as_deref()).await);
        }
        if let Some(id) = text.strip_prefix("+RDBCHANNELSYNC ") {
            let id = id.trim().to_string();
            return Ok(redis_rdb_channel(link, opts, dual, &id).await);
        }
    }
    if let Some(rest) = text.strip_prefix("+FULLRESYNC") {
        let Some((replid, offset)) = parse_fullresync(rest) else {
            return Err(link
                .conn
                .protocol_err(format!("malformed reply to {psync}: {text:?}"))
                .into());
        };
        link.offset = offset;
        return Transfer::start(link, Some(replid), Some(offset), opts)
            .await
            .map(|t| Ok(SyncStart::Full(t)));
    }
    if text.starts_with('$') {
        // Redis decides between PSYNC and SYNC by the command's name, so a renamed PSYNC runs
        // as SYNC: the transfer follows directly, without replication id or offset.
        return Transfer::from_header(link, &line, None, None, opts)
            .await
            .map(|t| Ok(SyncStart::Full(t)));
    }
    if let Some(rest) = text.strip_prefix("+CONTINUE") {
        let Some(resume) = resume else {
            return Err(link
                .conn
                .protocol_err(format!("{psync} ? -1 answered with {text:?}"))
                .into());
        };
        // With PSYNC2 the source may continue under a new replication id (after a failover).
        let replid = rest
            .split_whitespace()
            .next()
            .map_or_else(|| resume.replid.clone(), str::to_string);
        link.offset = resume.offset;
        return Ok(Ok(SyncStart::Continue(ReplStream::new(link, Some(replid)))));
    }
    if let Some(err) = text.strip_prefix('-') {
        if !is_unknown_command(err) {
            return Err(link.reply_error(psync, err));
        }
        // No PSYNC here (or not under this name): try the original SYNC, which replies with the
        // transfer directly, without replication id or offset.
        let psync_error = err.to_string();
        link.conn.queue(&["SYNC"]);
        link.conn.flush().await?;
        let during = || "while waiting for the reply to SYNC".to_string();
        let line = link.read_line(&during).await?;
        if let Some(err) = line.strip_prefix(b"-") {
            let err = String::from_utf8_lossy(err);
            let e = link.reply_error("SYNC", &err);
            return Err(match e {
                ReplError::Refused { endpoint, .. } => ReplError::Refused {
                    endpoint,
                    command: format!("{psync} and SYNC"),
                    message: format!("{psync_error}; {err}"),
                },
                other => other,
            });
        }
        return Transfer::from_header(link, &line, None, None, opts)
            .await
            .map(|t| Ok(SyncStart::Full(t)));
    }
    Err(link
        .conn
        .protocol_err(format!("unexpected reply to {psync}: {text:?}"))
        .into())
}

/// `<replid> <offset>` after `+FULLRESYNC`.
fn parse_fullresync(rest: &str) -> Option<(String, u64)> {
    let mut parts = rest.split_whitespace();
    let replid = parts.next()?.to_string();
    let offset = parts.next()?.parse::<u64>().ok()?;
    Some((replid, offset))
}

/// `$ENDOFF:<offset> <replid> <db> <client id>`: what a Valkey source tells the RDB channel of a
/// dual-channel full sync before the RDB (the snapshot's offset, its replication id, the
/// database selected at that offset, -1 for none, and the RDB channel's client id).
fn parse_endoff(line: &str) -> Option<(u64, String, Option<u64>, String)> {
    let rest = line.strip_prefix("$ENDOFF:")?;
    let mut parts = rest.split_whitespace();
    let offset = parts.next()?.parse::<u64>().ok()?;
    let replid = parts.next()?.to_string();
    let db = parts.next()?.parse::<i64>().ok()?;
    let id = parts.next()?.to_string();
    if replid.len() != MARK_LEN || id.parse::<u64>().is_err() || parts.next().is_some() {
        return None;
    }
    Some((offset, replid, u64::try_from(db).ok(), id))
}

/// Opens the RDB channel: a second connection to the node `main` is connected to, told it is
/// one (the REPLCONF every two-connection full sync starts with, `extra` added).
async fn open_rdb_channel(
    mut endpoint: crate::net::Endpoint,
    dual: &DualChannel,
    opts: &ReplOptions,
    extra: &[&str],
) -> Result<Link, String> {
    endpoint.sentinel = None;
    let mut conn = Connection::connect(&endpoint, &dual.connect)
        .await
        .map_err(|e| format!("the second connection failed ({e})"))?;
    let port = opts.listening_port.to_string();
    let mut args = vec![
        "REPLCONF",
        "capa",
        "eof",
        "rdb-only",
        "1",
        "rdb-channel",
        "1",
    ];
    args.extend_from_slice(extra);
    args.extend(["listening-port", port.as_str()]);
    let r = conn
        .request(&args)
        .await
        .map_err(|e| format!("the second connection failed ({e})"))?;
    if let Some(e) = r.error() {
        return Err(format!("it refused the second connection's REPLCONF ({e})"));
    }
    Ok(Link::new(conn, opts))
}

/// Valkey's dual-channel full sync, after `+DUALCHANNELSYNC` on `main`: the RDB channel asks
/// for the snapshot with `SYNC` and learns its end offset (`$ENDOFF`); `main` is tied to it
/// (`REPLCONF set-rdb-client-id`) and continues from that offset (`PSYNC <replid>
/// <offset+1>`, `+CONTINUE`), and its stream is read into the spool from then on. The `Err` is
/// the step that failed.
async fn valkey_dual_channel(
    mut main: Link,
    opts: &ReplOptions,
    dual: &DualChannel,
    version: Option<&str>,
) -> Result<SyncStart, String> {
    let mut rdb = open_rdb_channel(main.conn.endpoint().clone(), dual, opts, &[]).await?;
    if let Some(v) = version {
        // See `handshake`: without it Valkey 9 sends the older RDB format.
        let _ = rdb.conn.request(&["REPLCONF", "version", v]).await;
    }
    rdb.conn.queue(&["SYNC"]);
    rdb.conn
        .flush()
        .await
        .map_err(|e| format!("the second connection failed ({e})"))?;
    let during = || "while waiting for the snapshot's end offset ($ENDOFF)".to_string();
    let line = rdb
        .read_line(&during)
        .await
        .map_err(|e| format!("the second connection failed ({e})"))?;
    let text = String::from_utf8_lossy(&line).into_owned();
    let Some((offset, replid, db, id)) = parse_endoff(&text) else {
        if let Some(e) = text.strip_prefix('-') {
            return Err(format!("it refused SYNC on the second connection ({e})"));
        }
        return Err(format!(
            "its answer to SYNC on the second connection was {}, not $ENDOFF",
            crate::text::quote_bytes(&line[..line.len().min(120)])
        ));
    };
    let r = main
        .conn
        .request(&["REPLCONF", "set-rdb-client-id", id.as_str()])
        .await
        .map_err(|e| format!("the first connection failed ({e})"))?;
    if let Some(e) = r.error() {
        return Err(format!("it refused REPLCONF set-rdb-client-id ({e})"));
    }
    let from = (offset + 1).to_string();
    let psync = opts.psync_command.as_str();
    main.conn.queue(&[psync, replid.as_str(), from.as_str()]);
    main.conn
        .flush()
        .await
        .map_err(|e| format!("the first connection failed ({e})"))?;
    let during = || format!("while waiting for the reply to {psync} on the first connection");
    let line = main
        .read_line(&during)
        .await
        .map_err(|e| format!("the first connection failed ({e})"))?;
    if !line.starts_with(b"+CONTINUE") {
        return Err(format!(
            "it answered {psync} {replid} {from} on the first connection with {}",
            crate::text::quote_bytes(&line[..line.len().min(120)])
        ));
    }
    main.offset = offset;
    let channel = MainChannel::start(main, dual)?;
    let mut t = Transfer::start(rdb, Some(replid), Some(offset), opts)
        .await
        .map_err(|e| format!("the second connection failed ({e})"))?;
    t.main = Some(channel);
    t.channels = Channels::ValkeyDualChannel;
    t.start_db = db;
    Ok(SyncStart::Full(t))
}

/// Redis's RDB-channel full sync, after `+RDBCHANNELSYNC <id>` on `main` (`id`: its client id):
/// the RDB channel names it (`REPLCONF main-ch-client-id`) and asks for the snapshot (`PSYNC ?
/// -1`, `+FULLRESYNC`); `main` carries the stream from the snapshot's offset on, read into the
/// spool at once. The `Err` is the step that failed.
async fn redis_rdb_channel(
    main: Link,
    opts: &ReplOptions,
    dual: &DualChannel,
    id: &str,
) -> Result<SyncStart, String> {
    if id.parse::<u64>().is_err() {
        return Err(format!("+RDBCHANNELSYNC named no client id ({id:?})"));
    }
    let mut rdb = open_rdb_channel(
        main.conn.endpoint().clone(),
        dual,
        opts,
        &["main-ch-client-id", id],
    )
    .await?;
    // The stream may start before the RDB does: read it from now on.
    let channel = MainChannel::start(main, dual)?;
    let psync = opts.psync_command.as_str();
    rdb.conn.queue(&[psync, "?", "-1"]);
    rdb.conn
        .flush()
        .await
        .map_err(|e| format!("the second connection failed ({e})"))?;
    let during = || format!("while waiting for the reply to {psync} on the second connection");
    let line = rdb
        .read_line(&during)
        .await
        .map_err(|e| format!("the second connection failed ({e})"))?;
    let text = String::from_utf8_lossy(&line).into_owned();
    let Some((replid, offset)) = text.strip_prefix("+FULLRESYNC").and_then(parse_fullresync) else {
        return Err(format!(
            "it answered {psync} ? -1 on the second connection with {}",
            crate::text::quote_bytes(&line[..line.len().min(120)])
        ));
    };
    rdb.offset = offset;
    let mut t = Transfer::start(rdb, Some(replid), Some(offset), opts)
        .await
        .map_err(|e| format!("the second connection failed ({e})"))?;
    t.main = Some(channel);
    t.channels = Channels::RedisRdbChannel;
    Ok(SyncStart::Full(t))
}

/// What the main channel's reader and the stream's consumer share besides the spool.
struct MainShared {
    /// The offset to ACK: the last byte applied (set by the consumer).
    offset: AtomicU64,
    /// ACKs go out once the RDB is applied (a source expects none before; a Valkey source puts
    /// the replica online at the first one).
    acking: AtomicBool,
    /// An ACK now, please (the consumer committed something).
    ack_now: tokio::sync::Notify,
    /// Why the reader stopped.
    error: std::sync::Mutex<Option<ReplError>>,
}

/// The first connection of a two-connection full sync: a task reads its command stream into a
/// [`Spool`] from the start (so the source's buffer for us stays small however long the RDB
/// takes to apply), and keeps doing so for the life of the stream; the consumer
/// ([`ReplStream`]) takes the bytes from the spool.
struct MainChannel {
    spool: Arc<Spool>,
    shared: Arc<MainShared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MainChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MainChannel {
    fn start(link: Link, dual: &DualChannel) -> Result<MainChannel, String> {
        let spool = Spool::new(
            dual.spool.clone(),
            format!(
                "the command stream of {} buffered during the full sync",
                link.name
            ),
        )
        .map_err(|e| format!("the spool could not be set up ({e})"))?;
        let spool = Arc::new(spool);
        let shared = Arc::new(MainShared {
            offset: AtomicU64::new(link.offset),
            acking: AtomicBool::new(false),
            ack_now: tokio::sync::Notify::new(),
            error: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(read_main(link, spool.clone(), shared.clone()));
        Ok(MainChannel {
            spool,
            shared,
            task,
        })
    }

    /// The reader's error, once it has stopped with one.
    fn take_error(&self) -> Option<ReplError> {
        if !self.spool.ended() {
            return None;
        }
        self.shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

async fn read_main(link: Link, spool: Arc<Spool>, shared: Arc<MainShared>) {
    let r = read_main_loop(link, &spool, &shared).await;
    let message = r.err().map(|e| {
        let m = e.to_string();
        *shared.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        m
    });
    spool.end(message);
}

async fn read_main_loop(
    mut link: Link,
    spool: &Spool,
    shared: &MainShared,
) -> Result<(), ReplError> {
    let during = "in the command stream read while the full sync's RDB is applied";
    let lost = |name: &str, cause: String| ReplError::LinkLost {
        endpoint: name.to_string(),
        during: during.to_string(),
        cause,
        received: 0,
    };
    let mut started = false;
    loop {
        let may_read = spool.may_read();
        let tick = tokio::time::sleep_until(link.next_tick);
        tokio::select! {
            // Reading into the buffer is cancel-safe; the ACKs are written in the branches'
            // bodies, never inside a future another branch could cancel.
            r = link.conn.fill(), if may_read => {
                match r {
                    Ok(0) => return Err(lost(&link.name, "the server closed the connection".into())),
                    Ok(_) => {
                        link.last_data = Instant::now();
                        let buf = link.conn.buffer();
                        if !started {
                            // A Redis source sends a replica waiting for its snapshot to start a
                            // `\n` a second (its fork can wait repl-diskless-sync-delay); they are
                            // no part of the stream or its offsets.
                            let skip = buf.iter().take_while(|&&b| b == b'\n').count();
                            buf.advance(skip);
                            started = !buf.is_empty();
                        }
                        let bytes = buf.split().freeze();
                        spool.push(bytes)?;
                    }
                    Err(NetError::Io { source, .. }) => return Err(lost(&link.name, source.to_string())),
                    Err(e) => return Err(lost(&link.name, e.to_string())),
                }
            }
            _ = spool.room.notified(), if !may_read => {}
            _ = shared.ack_now.notified() => {
                if shared.acking.load(Ordering::Relaxed) {
                    link.offset = shared.offset.load(Ordering::Relaxed);
                    link.send_ack().await.map_err(|e| lost(&link.name, e.to_string()))?;
                }
            }
            _ = tick => {
                link.next_tick = Instant::now() + link.ack_interval;
                let acking = shared.acking.load(Ordering::Relaxed);
                if !may_read || !acking {
                    // Not reading is our choice, and while the RDB is applied the source need
                    // not send anything here (the RDB channel has its own timeout).
                    link.last_data = Instant::now();
                } else if link.last_data.elapsed() >= link.idle_timeout {
                    return Err(ReplError::Idle {
                        endpoint: link.name.clone(),
                        secs: link.idle_timeout.as_secs(),
                        during: during.to_string(),
                    });
                }
                if acking {
                    link.offset = shared.offset.load(Ordering::Relaxed);
                    link.send_ack().await.map_err(|e| lost(&link.name, e.to_string()))?;
                }
            }
        }
    }
}

/// What the RDB check found.
#[derive(Debug, Clone)]
pub struct RdbSummary {
    pub header: Header,
    pub keys: u64,
    pub functions: u64,
    pub checksum: ChecksumStatus,
    /// The CRC-64 of the RDB bytes before the trailer.
    pub crc64: u64,
}

/// The RDB check running on a blocking thread, fed through a bounded queue.
struct Verifier {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    handle: tokio::task::JoinHandle<Result<RdbSummary, RdbError>>,
}

/// `io::Read` over the queue of chunks; end of input when the sender is gone.
struct QueueReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for QueueReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

impl Verifier {
    fn start(keys: Arc<AtomicU64>) -> Verifier {
        let (tx, rx) = tokio::sync::mpsc::channel(VERIFY_QUEUE);
        let reader = QueueReader {
            rx,
            cur: Bytes::new(),
        };
        let handle = tokio::task::spawn_blocking(move || check_rdb(reader, &keys));
        Verifier {
            tx: Some(tx),
            handle,
        }
    }
}

/// Parses the whole RDB (values skipped, not decoded), which checks its structure and its
/// CRC-64, and insists that nothing follows its end.
fn check_rdb(reader: QueueReader, keys: &AtomicU64) -> Result<RdbSummary, RdbError> {
    let opts = ParserOptions {
        // A dump must not fail only because the source is newer than this reader: its CRC and
        // known types are still checked, and a type it cannot walk still fails.
        relaxed_version: true,
        verify_checksum: true,
        // The CRC covers transfer damage; the blobs' own structure is checked where they are
        // written (shake-restore), not on every dump (no LZF decompression here).
        verify_values: false,
        ..ParserOptions::default()
    };
    let mut p = RdbParser::with_options(reader, opts);
    let header = p.header()?;
    let mut summary = RdbSummary {
        header,
        keys: 0,
        functions: 0,
        checksum: ChecksumStatus::Absent,
        crc64: 0,
    };
    while let Some(item) = p.next_item()? {
        match item {
            Item::Key(_) => {
                summary.keys += 1;
                keys.store(summary.keys, Ordering::Relaxed);
            }
            Item::Function(_) => summary.functions += 1,
            Item::End { checksum, crc64 } => {
                summary.checksum = checksum;
                summary.crc64 = crc64;
            }
            _ => {}
        }
    }
    let end = p.offset();
    let (mut reader, rest) = p.into_parts();
    let mut extra = rest.len() as u64;
    let mut sink = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => extra += n as u64,
            Err(e) => return Err(RdbError::new(crate::rdb::RdbErrorKind::Io(e), end)),
        }
    }
    if extra > 0 {
        return Err(RdbError::corrupt(
            format!("{extra} bytes follow the end of the RDB inside the transfer"),
            end,
        ));
    }
    Ok(summary)
}

/// A full-sync RDB transfer in progress. Hand out its bytes with [`Transfer::next_chunk`]; then
/// [`Transfer::finish`] for the check's verdict and the command stream.
pub struct Transfer {
    link: Link,
    replid: Option<String>,
    start_offset: Option<u64>,
    framing: Framing,
    received: u64,
    done: bool,
    /// Bytes at the front of the buffer already searched for the end mark.
    searched: usize,
    verifier: Option<Verifier>,
    keys: Arc<AtomicU64>,
    /// The last bytes handed out (up to [`MARK_LEN`]) of a diskless transfer: what follows the
    /// RDB's end when its parser stops before the end mark ([`Transfer::expect_end_mark`]).
    tail: Vec<u8>,
    /// How the RDB and the stream travel; with two connections, `link` is the RDB channel and
    /// `main` reads the stream meanwhile.
    channels: Channels,
    main: Option<MainChannel>,
    /// The source database the stream is in at its first byte, when the source said so (Valkey's
    /// `$ENDOFF`); otherwise the stream selects one before its first command.
    start_db: Option<u64>,
}

impl Transfer {
    async fn start(
        mut link: Link,
        replid: Option<String>,
        offset: Option<u64>,
        opts: &ReplOptions,
    ) -> Result<Transfer, ReplError> {
        let during = || {
            "while the source prepared the snapshot (no RDB byte received yet; if the source is up, its log says why it gave up)"
                .to_string()
        };
        let line = link.read_line(&during).await?;
        if let Some(err) = line.strip_prefix(b"-") {
            return Err(link.reply_error("the full sync", &String::from_utf8_lossy(err)));
        }
        Transfer::from_header(link, &line, replid, offset, opts).await
    }

    /// Builds the transfer from its header line (`$<len>` or `$EOF:<mark>`).
    async fn from_header(
        link: Link,
        line: &[u8],
        replid: Option<String>,
        offset: Option<u64>,
        opts: &ReplOptions,
    ) -> Result<Transfer, ReplError> {
        let framing =
            parse_transfer_header(line).map_err(|m| ReplError::from(link.conn.protocol_err(m)))?;
        let keys = Arc::new(AtomicU64::new(0));
        let verifier = opts.verify.then(|| Verifier::start(keys.clone()));
        Ok(Transfer {
            link,
            replid,
            start_offset: offset,
            framing,
            received: 0,
            done: false,
            searched: 0,
            verifier,
            keys,
            tail: Vec::new(),
            channels: Channels::One,
            main: None,
            start_db: None,
        })
    }

    /// How the RDB and the command stream travel.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Bytes of the command stream read meanwhile (two connections only): (total, on disk now).
    pub fn buffered(&self) -> Option<(u64, u64)> {
        self.main
            .as_ref()
            .map(|m| (m.spool.pushed(), m.spool.held().1))
    }

    /// The main channel's failure, if its reader stopped with one: the transfer stops with it.
    fn main_failed(&mut self) -> Result<(), ReplError> {
        match self.main.as_ref().and_then(MainChannel::take_error) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The source's replication id (`None` after a SYNC, which has none).
    pub fn replid(&self) -> Option<&str> {
        self.replid.as_deref()
    }

    /// The replication offset the command stream starts at (`None` after a SYNC).
    pub fn offset(&self) -> Option<u64> {
        self.start_offset
    }

    /// The RDB's size, when the source announced it (`$<len>`); unknown for diskless transfers.
    pub fn size(&self) -> Option<u64> {
        match self.framing {
            Framing::Len(n) => Some(n),
            Framing::Mark { .. } => None,
        }
    }

    /// Whether the source streams the RDB as it writes it (`$EOF:` framing).
    pub fn is_diskless(&self) -> bool {
        matches!(self.framing, Framing::Mark { .. })
    }

    /// RDB bytes handed out so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Keys the check has walked past so far (0 when not checking).
    pub fn keys_seen(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    pub fn endpoint(&self) -> &str {
        &self.link.name
    }

    fn during(&self) -> String {
        match self.framing {
            Framing::Len(n) => format!("after {} of {n} bytes of the RDB", self.received),
            Framing::Mark { .. } => format!(
                "after {} bytes of the RDB (diskless transfer, size unknown)",
                self.received
            ),
        }
    }

    /// The next piece of the RDB (512 kB, or what arrived within 50 ms of the piece's first
    /// byte), exactly as the source sent it, or `None` after the last byte. The end mark of a
    /// diskless transfer is never part of a chunk.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ReplError> {
        let mut gather_until = None;
        let mut target = CHUNK_TARGET;
        // The stream read meanwhile could not be held (the spool's cap): no point in more RDB.
        self.main_failed()?;
        loop {
            if self.done {
                return Ok(None);
            }
            let buf = self.link.conn.buffer();
            let chunk = match &self.framing {
                Framing::Len(total) => {
                    let remaining = total - self.received;
                    if remaining == 0 {
                        self.done = true;
                        continue;
                    }
                    if (buf.len() as u64) >= remaining {
                        self.done = true;
                        Some(buf.split_to(remaining as usize).freeze())
                    } else if !buf.is_empty() && buf.len() >= target {
                        Some(buf.split_to(buf.len()).freeze())
                    } else {
                        None
                    }
                }
                Framing::Mark { mark, shift } => {
                    // Searched from where the last search stopped (minus a possible mark start).
                    let from = self.searched.saturating_sub(MARK_LEN - 1).min(buf.len());
                    if let Some(p) = find_mark(&buf[from..], mark, shift) {
                        let chunk = buf.split_to(from + p).freeze();
                        buf.advance(MARK_LEN);
                        self.done = true;
                        Some(chunk)
                    } else if buf.len() >= MARK_LEN && buf.len() - (MARK_LEN - 1) >= target {
                        // Keep back what could be the start of the mark.
                        let n = buf.len() - (MARK_LEN - 1);
                        Some(buf.split_to(n).freeze())
                    } else {
                        self.searched = buf.len();
                        None
                    }
                }
            };
            if chunk.is_some() {
                self.searched = 0;
                // One allocation for the next chunk, instead of growth by doubling (and copying)
                // from the 64 kB a read reserves.
                buf.reserve(CHUNK_TARGET + 64 * 1024);
            }
            match chunk {
                Some(c) if c.is_empty() => continue,
                Some(c) => {
                    self.received += c.len() as u64;
                    if let Framing::Mark { .. } = self.framing {
                        let keep = c.len().min(MARK_LEN);
                        self.tail.extend_from_slice(&c[c.len() - keep..]);
                        let over = self.tail.len().saturating_sub(MARK_LEN);
                        self.tail.drain(..over);
                    }
                    self.check(&c).await?;
                    return Ok(Some(c));
                }
                None => {
                    let received = self.received;
                    let during = self.during();
                    let ready = match self.framing {
                        Framing::Len(_) => self.link.conn.buffer().len(),
                        Framing::Mark { .. } => {
                            self.link.conn.buffer().len().saturating_sub(MARK_LEN - 1)
                        }
                    };
                    if ready == 0 {
                        self.link
                            .wait_for_data(&|| during.clone(), received)
                            .await?;
                        continue;
                    }
                    // Bytes ready: gather more, but not for long. Cancelling the wait loses
                    // nothing (a read is cancel-safe, and no ACK goes out in this phase).
                    let until = *gather_until.get_or_insert_with(|| Instant::now() + GATHER_TIME);
                    let describe = || during.clone();
                    let wait = self.link.wait_for_data(&describe, received);
                    match tokio::time::timeout_at(until, wait).await {
                        Ok(r) => {
                            r?;
                        }
                        Err(_) => target = 1,
                    }
                }
            }
        }
    }

    /// A diskless transfer whose RDB ended (its parser read the checksum trailer, `rdb_len`
    /// bytes in) before [`Transfer::next_chunk`] saw the end mark: the mark must follow the
    /// RDB's last byte at once. Waits for the mark's 40 bytes (not for the idle timeout: a
    /// source sends nothing more before it is ACKed) and either consumes them, as `next_chunk`
    /// would have, or says the stream is corrupt, with what was expected and what was found.
    /// Call it only after a cancelled `next_chunk` (no chunk in hand); for a transfer framed by
    /// its length there is nothing to check.
    pub async fn expect_end_mark(&mut self, rdb_len: u64) -> Result<(), ReplError> {
        let Framing::Mark { mark, .. } = &self.framing else {
            return Ok(());
        };
        let mark = *mark;
        // Bytes handed out past the RDB's end (the parser left them unread).
        let extra = self.received.saturating_sub(rdb_len);
        loop {
            if self.done && extra == 0 {
                return Ok(());
            }
            let buf = self.link.conn.buffer();
            let mut found: Vec<u8> = Vec::with_capacity(MARK_LEN);
            let from_tail = (extra as usize).min(self.tail.len());
            found.extend_from_slice(&self.tail[self.tail.len() - from_tail..]);
            let more = MARK_LEN.saturating_sub(found.len()).min(buf.len());
            found.extend_from_slice(&buf[..more]);
            if extra == 0 && found == mark {
                buf.advance(MARK_LEN);
                self.done = true;
                return Ok(());
            }
            if found.len() >= MARK_LEN || self.done || extra > MARK_LEN as u64 {
                let found = if extra > MARK_LEN as u64 {
                    format!(
                        "{extra} more bytes, the last of them {}",
                        crate::text::quote_bytes(&found)
                    )
                } else {
                    crate::text::quote_bytes(&found)
                };
                return Err(self
                    .link
                    .conn
                    .protocol_err(format!(
                        "corrupt replication stream: the RDB of the diskless full sync ends at byte {rdb_len}, where the transfer's end mark {} announced by `$EOF:` must follow; found {found} instead (the bytes were changed between the source and here)",
                        crate::text::quote_bytes(&mark)
                    ))
                    .into());
            }
            let during = format!(
                "after the last byte of the RDB ({rdb_len} bytes), waiting for the diskless transfer's end mark"
            );
            let received = self.received;
            self.link
                .wait_for_data(&|| during.clone(), received)
                .await?;
        }
    }

    /// Gives a chunk to the checking thread; surfaces its verdict if it has already failed.
    async fn check(&mut self, chunk: &Bytes) -> Result<(), ReplError> {
        let Some(v) = &mut self.verifier else {
            return Ok(());
        };
        let Some(tx) = &v.tx else {
            return Ok(());
        };
        if tx.send(chunk.clone()).await.is_ok() {
            return Ok(());
        }
        // The checker stopped early: it found something wrong.
        match self.verdict().await {
            Ok(_) => Err(self
                .link
                .conn
                .protocol_err(format!(
                    "the RDB ended before the transfer did ({})",
                    self.during()
                ))
                .into()),
            Err(e) => Err(e),
        }
    }

    /// Waits for the check's result (the queue is closed first, so it sees the end).
    async fn verdict(&mut self) -> Result<Option<RdbSummary>, ReplError> {
        let Some(mut v) = self.verifier.take() else {
            return Ok(None);
        };
        v.tx = None;
        let name = self.link.name.clone();
        match (&mut v.handle).await {
            Ok(Ok(summary)) => Ok(Some(summary)),
            Ok(Err(e)) => Err(ReplError::Rdb {
                endpoint: name,
                source: e,
            }),
            Err(e) => Err(self
                .link
                .conn
                .protocol_err(format!("the RDB check stopped: {e}"))
                .into()),
        }
    }

    /// After the last chunk: the check's verdict (`None` when not checking) and the link,
    /// positioned at the first byte of the command stream.
    pub async fn finish(mut self) -> Result<(ReplStream, Option<RdbSummary>), ReplError> {
        if !self.done {
            let during = self.during();
            return Err(self
                .link
                .conn
                .protocol_err(format!(
                    "finish called {during}, before the end of the transfer"
                ))
                .into());
        }
        let summary = self.verdict().await?;
        self.main_failed()?;
        let replid = self.replid.take();
        match self.main.take() {
            Some(main) => {
                let offset = self.start_offset.unwrap_or(self.link.offset);
                Ok((
                    ReplStream::spooled(main, replid, offset, self.start_db),
                    summary,
                ))
            }
            None => Ok((ReplStream::new(self.link, replid), summary)),
        }
    }
}

/// Parses `$<len>` or `$EOF:<40-byte mark>`.
fn parse_transfer_header(line: &[u8]) -> Result<Framing, String> {
    let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    let Some(rest) = line.strip_prefix(b"$") else {
        return Err(format!(
            "expected the RDB transfer ($<length> or $EOF:<mark>), got {:?}",
            shown()
        ));
    };
    if let Some(m) = rest.strip_prefix(b"EOF:") {
        let mark: [u8; MARK_LEN] = m.try_into().map_err(|_| {
            format!(
                "the diskless end mark must be {MARK_LEN} bytes, got {:?}",
                shown()
            )
        })?;
        let mut shift = Box::new([MARK_LEN; 256]);
        for (i, &b) in mark[..MARK_LEN - 1].iter().enumerate() {
            shift[b as usize] = MARK_LEN - 1 - i;
        }
        return Ok(Framing::Mark { mark, shift });
    }
    let len = std::str::from_utf8(rest)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("bad RDB transfer length in {:?}", shown()))?;
    Ok(Framing::Len(len))
}

/// The first position of `mark` in `hay` (Horspool: a diskless transfer can be gigabytes, and
/// most bytes of an RDB are not even among the mark's hex digits, so most steps skip 40 bytes).
fn find_mark(hay: &[u8], mark: &[u8; MARK_LEN], shift: &[usize; 256]) -> Option<usize> {
    let mut i = 0;
    while i + MARK_LEN <= hay.len() {
        let last = hay[i + MARK_LEN - 1];
        if last == mark[MARK_LEN - 1] && hay[i..i + MARK_LEN] == mark[..] {
            return Some(i);
        }
        i += shift[last as usize];
    }
    None
}

/// The replication link after the RDB (or after `+CONTINUE`): the command stream follows,
/// starting with the bytes already in [`ReplStream::buffer`].
///
/// The offset is the replication offset of the last command-stream byte the caller has applied;
/// it starts at the `+FULLRESYNC` offset (or the resume offset) and the caller advances it.
/// [`ReplStream::fill`] sends `REPLCONF ACK <offset>` when it starts waiting and then every second
/// while it waits, which keeps the source from dropping the link (`repl-timeout`) and is also what
/// makes a diskless source start the stream (it waits for an ACK after the end mark).
pub struct ReplStream {
    feed: Feed,
    replid: Option<String>,
    /// The source database at the stream's first byte, when the source said so.
    start_db: Option<u64>,
}

/// Where a [`ReplStream`]'s bytes come from.
#[allow(clippy::large_enum_variant)] // one per link; boxing the hot one would cost a hop per read
enum Feed {
    /// The connection itself.
    Direct(Link),
    /// The spool the main channel of a two-connection full sync is read into.
    Spooled(Box<Spooled>),
}

struct Spooled {
    main: MainChannel,
    /// Bytes taken from the spool and not consumed yet (what [`ReplStream::buffer`] is).
    buf: BytesMut,
    offset: u64,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// The consumer has once found the spool empty: from then on it is a read-ahead of bounded
    /// memory, and a slow target slows the reading instead of spilling to disk.
    caught_up: bool,
    /// Bytes that were waiting in the spool when the stream began.
    backlog: (u64, u64),
}

impl ReplStream {
    fn new(mut link: Link, replid: Option<String>) -> ReplStream {
        // The first ACK goes out at the first wait, then one a second: a diskless source starts
        // the stream on the first ACK it gets after it has noticed the end of its snapshot, and
        // one that arrives before that is ignored, so a single ACK is not enough.
        link.acking = true;
        link.next_tick = Instant::now();
        ReplStream {
            feed: Feed::Direct(link),
            replid,
            start_db: None,
        }
    }

    fn spooled(
        main: MainChannel,
        replid: Option<String>,
        offset: u64,
        start_db: Option<u64>,
    ) -> ReplStream {
        // The RDB is applied: ACKs from now on, the first at once (as a replica does once it
        // has loaded the RDB).
        main.shared.offset.store(offset, Ordering::Relaxed);
        main.shared.acking.store(true, Ordering::Relaxed);
        main.shared.ack_now.notify_one();
        let held = main.spool.held();
        ReplStream {
            feed: Feed::Spooled(Box::new(Spooled {
                main,
                buf: BytesMut::new(),
                offset,
                stop: None,
                caught_up: false,
                backlog: (held.0 + held.1, held.1),
            })),
            replid,
            start_db,
        }
    }

    /// The source's replication id (`None` after a SYNC).
    pub fn replid(&self) -> Option<&str> {
        self.replid.as_deref()
    }

    /// The source database the stream is in at its first byte, when the source said so (a
    /// Valkey dual-channel full sync); otherwise the stream selects one before its first
    /// command (a full sync) or is where the checkpoint says (a resume).
    pub fn start_db(&self) -> Option<u64> {
        self.start_db
    }

    /// With two connections: the bytes of the stream that were waiting when it began (total,
    /// of them on disk).
    pub fn waiting(&self) -> Option<(u64, u64)> {
        match &self.feed {
            Feed::Direct(_) => None,
            Feed::Spooled(s) => Some(s.backlog),
        }
    }

    /// With two connections: bytes that went to disk so far, and the most at once.
    pub fn spilled(&self) -> Option<(u64, u64)> {
        match &self.feed {
            Feed::Direct(_) => None,
            Feed::Spooled(s) => Some(s.main.spool.spilled()),
        }
    }

    /// Offset of the last applied byte of the command stream.
    pub fn offset(&self) -> u64 {
        match &self.feed {
            Feed::Direct(l) => l.offset,
            Feed::Spooled(s) => s.offset,
        }
    }

    /// Records that `n` more bytes of the command stream were applied.
    pub fn advance(&mut self, n: u64) {
        match &mut self.feed {
            Feed::Direct(l) => l.offset += n,
            Feed::Spooled(s) => s.offset += n,
        }
    }

    /// Bytes received and not consumed yet.
    pub fn buffer(&mut self) -> &mut BytesMut {
        match &mut self.feed {
            Feed::Direct(l) => l.conn.buffer(),
            Feed::Spooled(s) => &mut s.buf,
        }
    }

    /// Makes [`ReplStream::fill`] return 0 as soon as `stop` turns true.
    pub fn stop_on(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        match &mut self.feed {
            Feed::Direct(l) => l.stop = Some(stop),
            Feed::Spooled(s) => s.stop = Some(stop),
        }
    }

    /// Waits for more bytes (into [`ReplStream::buffer`]), ACKing on the timer meanwhile.
    /// Returns 0 only when a stop set with [`ReplStream::stop_on`] was asked for.
    pub async fn fill(&mut self) -> Result<usize, ReplError> {
        match &mut self.feed {
            Feed::Direct(link) => {
                let offset = link.offset;
                link.wait_for_data(&|| format!("in the command stream at offset {offset}"), 0)
                    .await
            }
            Feed::Spooled(s) => s.fill(None).await.map(|n| n.unwrap_or(0)),
        }
    }

    /// [`ReplStream::fill`], waiting at most `wait`: `None` when nothing came meanwhile.
    pub async fn fill_within(
        &mut self,
        wait: std::time::Duration,
    ) -> Result<Option<usize>, ReplError> {
        let until = tokio::time::Instant::now() + wait;
        match &mut self.feed {
            Feed::Direct(link) => {
                let offset = link.offset;
                link.wait_for_data_until(
                    &|| format!("in the command stream at offset {offset}"),
                    0,
                    Some(until),
                )
                .await
            }
            Feed::Spooled(s) => s.fill(Some(until)).await,
        }
    }

    /// Sends `REPLCONF ACK <offset>` now.
    pub async fn ack(&mut self) -> Result<(), ReplError> {
        match &mut self.feed {
            Feed::Direct(l) => Ok(l.send_ack().await?),
            Feed::Spooled(s) => {
                // The reader owns the connection: it sends it.
                s.main.shared.offset.store(s.offset, Ordering::Relaxed);
                s.main.shared.ack_now.notify_one();
                Ok(())
            }
        }
    }

    fn protocol_err(&self, message: &str) -> ReplError {
        match &self.feed {
            Feed::Direct(l) => l.conn.protocol_err(message).into(),
            Feed::Spooled(s) => ReplError::Source {
                endpoint: s.main.spool.dir().display().to_string(),
                command: "PSYNC".into(),
                message: message.to_string(),
            },
        }
    }
}

impl Spooled {
    /// The next bytes from the spool into `buf`; `Some(0)` on a stop, `None` at `until`.
    async fn fill(
        &mut self,
        until: Option<tokio::time::Instant>,
    ) -> Result<Option<usize>, ReplError> {
        loop {
            if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
                return Ok(Some(0));
            }
            if let Some(b) = self.main.spool.take()? {
                self.buf.extend_from_slice(&b);
                return Ok(Some(b.len()));
            }
            if !self.caught_up {
                self.caught_up = true;
                self.main.spool.stop_spilling();
            }
            if let Some(e) = self.main.take_error() {
                return Err(e);
            }
            if self.main.spool.ended() {
                return Err(ReplError::LinkLost {
                    endpoint: self.main.spool.dir().display().to_string(),
                    during: "in the command stream".into(),
                    cause: "its reader stopped".into(),
                    received: 0,
                });
            }
            let stopped = stop_requested(self.stop.clone());
            let deadline = deadline_at(until);
            tokio::select! {
                _ = self.main.spool.data.notified() => {}
                _ = stopped => return Ok(Some(0)),
                _ = deadline => return Ok(None),
            }
        }
    }
}

/// Resolves once `stop` turns true; never without one.
async fn stop_requested(stop: Option<tokio::sync::watch::Receiver<bool>>) {
    match stop {
        Some(mut s) => {
            let _ = s.wait_for(|v| *v).await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Resolves at `until`; never without one.
async fn deadline_at(until: Option<tokio::time::Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark_of(s: &str) -> Framing {
        parse_transfer_header(format!("$EOF:{s}").as_bytes()).unwrap()
    }

    #[test]
    fn parses_transfer_headers() {
        assert!(matches!(
            parse_transfer_header(b"$182").unwrap(),
            Framing::Len(182)
        ));
        assert!(matches!(
            mark_of("cc219fb13b4f5054dfa9225fa96ace4c4f522ade"),
            Framing::Mark { .. }
        ));
        for bad in [&b"$"[..], b"$-1", b"$12x", b"+OK", b"$EOF:abc", b""] {
            assert!(parse_transfer_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn finds_the_mark_anywhere() {
        let m = "68f23545c32beebb6e133ce0732aa5d518d59229";
        let Framing::Mark { mark, shift } = mark_of(m) else {
            panic!()
        };
        let naive = |h: &[u8]| h.windows(MARK_LEN).position(|w| w == mark);
        // Hex-heavy material (the worst case for the skip table), binary, and partial marks.
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut hay = Vec::new();
        for i in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            hay.push(if i % 3 == 0 {
                m.as_bytes()[(x % 40) as usize]
            } else {
                x as u8
            });
            if i % 997 == 0 {
                hay.extend_from_slice(&m.as_bytes()[..(x % 39) as usize]);
            }
        }
        assert_eq!(find_mark(&hay, &mark, &shift), None);
        assert_eq!(naive(&hay), None);
        for at in [0, 1, 39, 40, 41, 5000, hay.len()] {
            let mut h = hay.clone();
            h.splice(at..at, m.bytes());
            assert_eq!(find_mark(&h, &mark, &shift), Some(at));
            assert_eq!(find_mark(&h[..at + MARK_LEN - 1], &mark, &shift), None);
        }
    }

    #[test]
    fn parses_the_two_connection_replies() {
        let id = "a0be1b9b06d76bb5ebdd8bf609aba706d289af4c";
        assert_eq!(
            parse_endoff(&format!("$ENDOFF:0 {id} 0 7")),
            Some((0, id.to_string(), Some(0), "7".to_string()))
        );
        // Valkey 9.1 before any SELECT: no database.
        assert_eq!(
            parse_endoff(&format!("$ENDOFF:238256 {id} -1 8")),
            Some((238256, id.to_string(), None, "8".to_string()))
        );
        for bad in [
            format!("$ENDOFF:x {id} 0 7"),
            format!("$ENDOFF:1 {id} 0"),
            "$ENDOFF:1 abc 0 7".to_string(),
            format!("$ENDOFF:1 {id} 0 7 extra"),
            format!("$ENDOFF:1 {id} 0 -7"),
            format!("$EOF:{id}"),
            "-NOPERM no".to_string(),
        ] {
            assert_eq!(parse_endoff(&bad), None, "{bad}");
        }
        assert_eq!(
            parse_fullresync(&format!(" {id} 42")),
            Some((id.to_string(), 42))
        );
        assert_eq!(parse_fullresync(&format!(" {id}")), None);
        assert_eq!(parse_fullresync(" x -1"), None);
    }

    #[test]
    fn classifies_refusals() {
        let e = classify_error("redis://h:1", "PSYNC", "ERR unknown command 'PSYNC'");
        assert!(matches!(e, ReplError::Refused { .. }));
        assert!(e.to_string().contains("shake-rump"));
        let e = classify_error(
            "redis://h:1",
            "PSYNC",
            "NOPERM User u has no permissions to run the 'psync' command",
        );
        assert!(matches!(e, ReplError::Denied { .. }));
        let e = classify_error("redis://h:1", "REPLCONF", "NOAUTH Authentication required.");
        assert!(matches!(e, ReplError::Net(NetError::Auth { .. })));
        let e = classify_error("redis://h:1", "PSYNC", "LOADING Redis is loading");
        assert!(matches!(e, ReplError::Source { .. }));
    }
}
