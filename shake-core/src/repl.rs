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
//!
//! A dump (shake-dump) is [`full_sync`], then [`Transfer::next_chunk`] until `None`, then
//! [`Transfer::finish`]. A sync (shake-sync) is [`start_sync`] with or without a [`Resume`]
//! point, the same transfer for a full sync, then the [`ReplStream`].

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Instant;

use crate::net::{Connection, NetError};
use crate::rdb::{ChecksumStatus, Header, Item, ParserOptions, RdbError, RdbParser};

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
            let stop = self.stop.clone();
            let stopped = async move {
                match stop {
                    Some(mut s) => {
                        let _ = s.wait_for(|v| *v).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let deadline = async move {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
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

/// The handshake before PSYNC. AUTH has been done by [`Connection::connect`].
pub async fn handshake(conn: &mut Connection, opts: &ReplOptions) -> Result<(), ReplError> {
    let name = conn.endpoint().to_string();
    let port = opts.listening_port.to_string();
    let r = conn
        .request(&["REPLCONF", "listening-port", port.as_str()])
        .await?;
    if let Some(e) = r.error() {
        return Err(classify_error(&name, "REPLCONF", e));
    }
    // Without these capabilities a source sends `$<len>` transfers only and no PSYNC2 ids;
    // servers too old to know them are still usable, so an error here is not fatal.
    let _ = conn
        .request(&["REPLCONF", "capa", "eof", "capa", "psync2"])
        .await?;
    // Valkey 9 sends a replica that does not announce its version an RDB in the older REDIS0011
    // format (streamed, whatever repl-diskless-sync says), and its snapshot fails on data that
    // format cannot hold (hash field TTLs): the link just closes after +FULLRESYNC. Announcing the
    // source's own version gets its native format, the one it writes to its own disk. Redis has
    // no such option; a source that hides INFO is simply not told.
    match conn.info("server").await {
        Ok(info) => {
            if let Some(v) = info.get("valkey_version") {
                let _ = conn.request(&["REPLCONF", "version", v.as_str()]).await?;
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
    Ok(())
}

/// A full sync, as a dump wants it: the handshake, then `PSYNC ? -1` (or SYNC). Returns the
/// transfer positioned at the first RDB byte.
pub async fn full_sync(conn: Connection, opts: &ReplOptions) -> Result<Transfer, ReplError> {
    match start_sync(conn, opts, None).await? {
        SyncStart::Full(t) => Ok(t),
        SyncStart::Continue(s) => Err(s
            .link
            .conn
            .protocol_err("the source answered a full sync request with +CONTINUE")
            .into()),
    }
}

/// The handshake, then `PSYNC <replid> <offset+1>` when resuming or `PSYNC ? -1`; falls back to
/// `SYNC` when the server does not know PSYNC (under its configured name).
pub async fn start_sync(
    mut conn: Connection,
    opts: &ReplOptions,
    resume: Option<&Resume>,
) -> Result<SyncStart, ReplError> {
    handshake(&mut conn, opts).await?;
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
    if let Some(rest) = text.strip_prefix("+FULLRESYNC") {
        let mut parts = rest.split_whitespace();
        let replid = parts.next().map(str::to_string);
        let offset = parts.next().and_then(|o| o.parse::<u64>().ok());
        let (Some(replid), Some(offset)) = (replid, offset) else {
            return Err(link
                .conn
                .protocol_err(format!("malformed reply to {psync}: {text:?}"))
                .into());
        };
        link.offset = offset;
        return Transfer::start(link, Some(replid), Some(offset), opts)
            .await
            .map(SyncStart::Full);
    }
    if text.starts_with('$') {
        // Redis decides between PSYNC and SYNC by the command's name, so a renamed PSYNC runs
        // as SYNC: the transfer follows directly, without replication id or offset.
        return Transfer::from_header(link, &line, None, None, opts)
            .await
            .map(SyncStart::Full);
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
        return Ok(SyncStart::Continue(ReplStream::new(link, Some(replid))));
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
            .map(SyncStart::Full);
    }
    Err(link
        .conn
        .protocol_err(format!("unexpected reply to {psync}: {text:?}"))
        .into())
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
        })
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
        let replid = self.replid.take();
        Ok((ReplStream::new(self.link, replid), summary))
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
    link: Link,
    replid: Option<String>,
}

impl ReplStream {
    fn new(mut link: Link, replid: Option<String>) -> ReplStream {
        // The first ACK goes out at the first wait, then one a second: a diskless source starts
        // the stream on the first ACK it gets after it has noticed the end of its snapshot, and
        // one that arrives before that is ignored, so a single ACK is not enough.
        link.acking = true;
        link.next_tick = Instant::now();
        ReplStream { link, replid }
    }

    /// The source's replication id (`None` after a SYNC).
    pub fn replid(&self) -> Option<&str> {
        self.replid.as_deref()
    }

    /// Offset of the last applied byte of the command stream.
    pub fn offset(&self) -> u64 {
        self.link.offset
    }

    /// Records that `n` more bytes of the command stream were applied.
    pub fn advance(&mut self, n: u64) {
        self.link.offset += n;
    }

    /// Bytes received and not consumed yet.
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.link.conn.buffer()
    }

    /// Makes [`ReplStream::fill`] return 0 as soon as `stop` turns true.
    pub fn stop_on(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        self.link.stop = Some(stop);
    }

    /// Waits for more bytes (into [`ReplStream::buffer`]), ACKing on the timer meanwhile.
    /// Returns 0 only when a stop set with [`ReplStream::stop_on`] was asked for.
    pub async fn fill(&mut self) -> Result<usize, ReplError> {
        let offset = self.link.offset;
        self.link
            .wait_for_data(&|| format!("in the command stream at offset {offset}"), 0)
            .await
    }

    /// [`ReplStream::fill`], waiting at most `wait`: `None` when nothing came meanwhile.
    pub async fn fill_within(
        &mut self,
        wait: std::time::Duration,
    ) -> Result<Option<usize>, ReplError> {
        let offset = self.link.offset;
        let until = tokio::time::Instant::now() + wait;
        self.link
            .wait_for_data_until(
                &|| format!("in the command stream at offset {offset}"),
                0,
                Some(until),
            )
            .await
    }

    /// Sends `REPLCONF ACK <offset>` now.
    pub async fn ack(&mut self) -> Result<(), ReplError> {
        Ok(self.link.send_ack().await?)
    }

    pub fn connection(&mut self) -> &mut Connection {
        &mut self.link.conn
    }

    pub fn into_connection(self) -> Connection {
        self.link.conn
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
