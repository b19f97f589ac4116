//! The live state of a long-running sync, per source shard, and its two views: the HTTP endpoint
//! (`--status-addr`: Prometheus text on `/metrics`, JSON on `/status`) and the periodic status
//! line on stderr. The sync engine writes a [`ShardStatus`] per link; readers take snapshots.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Where a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Handshake,
    FullSync,
    Incremental,
    Reconnecting,
    Stopped,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Handshake,
        Phase::FullSync,
        Phase::Incremental,
        Phase::Reconnecting,
        Phase::Stopped,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::FullSync => "full_sync",
            Phase::Incremental => "incremental",
            Phase::Reconnecting => "reconnecting",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }
}

/// One source shard's link.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// The link's checkpoint name.
    pub name: String,
    /// The source master currently replicated from (`host:port`); for a sentinel source, the
    /// address the sentinels gave the link's last connection (empty before the first one).
    pub source: String,
    /// A sentinel source's master name (`--source-sentinel-master`, `redis+sentinel://.../NAME`):
    /// the status line shows `NAME at host:port`. `null` for any other source.
    pub sentinel_master: Option<String>,
    /// The node the link reads that master's stream from: the master itself, or one of its
    /// replicas (`--source-replica`); empty before the first session.
    pub read_from: String,
    pub phase: Phase,
    pub replid: String,
    /// Full-sync RDB bytes received and keys applied (of the current or last full sync).
    pub rdb_bytes_received: u64,
    pub rdb_bytes_applied: u64,
    pub rdb_keys_applied: u64,
    /// The source's own replication offset (`master_repl_offset`, polled).
    pub source_offset: u64,
    /// The last command-stream byte read from the source.
    pub received_offset: u64,
    /// The offset up to which every command is on the target (what the checkpoint says).
    pub applied_offset: u64,
    /// `source_offset - applied_offset`.
    pub lag_bytes: u64,
    /// How long ago the oldest byte not yet applied arrived (0 when caught up).
    pub lag_ms: u64,
    pub commands_applied: u64,
    pub ops_per_sec: f64,
    pub errors: u64,
    /// Keys re-copied from the source after the target refused a command (`--on-target-error
    /// repair`).
    pub repaired_keys: u64,
    /// Keys removed after full syncs because the new snapshot no longer held them (a fallback
    /// full sync: see `sync::prune`).
    pub pruned_keys: u64,
    pub reconnects: u64,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    pub last_error: Option<String>,
    /// The link ended for good (its master left the source cluster): no longer shown.
    #[serde(skip)]
    pub removed: bool,
}

impl ShardStatus {
    /// The status of a link whose source is `seed`: a sentinel source is its master's name
    /// until a connection finds where the master is (the first sentinel's address would say
    /// nothing about the master).
    pub fn for_seed(name: &str, seed: &crate::net::Endpoint) -> Self {
        match &seed.sentinel {
            Some(s) => ShardStatus {
                sentinel_master: Some(s.master.clone()),
                ..ShardStatus::new(name, "")
            },
            None => ShardStatus::new(name, &seed.address()),
        }
    }

    /// The source as the status line shows it: `host:port`, or `NAME at host:port` for a
    /// sentinel source.
    pub fn source_shown(&self) -> String {
        match &self.sentinel_master {
            Some(m) if self.source.is_empty() => format!("{m} (sentinel master)"),
            Some(m) => format!("{m} at {}", self.source),
            None => self.source.clone(),
        }
    }

    pub fn new(name: &str, source: &str) -> Self {
        ShardStatus {
            name: name.to_string(),
            source: source.to_string(),
            sentinel_master: None,
            read_from: String::new(),
            phase: Phase::Handshake,
            replid: String::new(),
            rdb_bytes_received: 0,
            rdb_bytes_applied: 0,
            rdb_keys_applied: 0,
            source_offset: 0,
            received_offset: 0,
            applied_offset: 0,
            lag_bytes: 0,
            lag_ms: 0,
            commands_applied: 0,
            ops_per_sec: 0.0,
            errors: 0,
            repaired_keys: 0,
            pruned_keys: 0,
            reconnects: 0,
            full_syncs: 0,
            partial_syncs: 0,
            last_error: None,
            removed: false,
        }
    }
}

/// Every shard of one sync.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    shards: Arc<Mutex<Vec<Arc<Mutex<ShardStatus>>>>>,
    /// The `shard` label of every metric (see [`StatusBoard::set_shard`]).
    shard: Arc<Mutex<String>>,
}

impl StatusBoard {
    pub fn add(&self, s: ShardStatus) -> Arc<Mutex<ShardStatus>> {
        let cell = Arc::new(Mutex::new(s));
        if let Ok(mut v) = self.shards.lock() {
            v.push(cell.clone());
        }
        cell
    }

    /// The links shown: every one added, but those removed (see [`StatusBoard::remove`]).
    pub fn snapshot(&self) -> Vec<ShardStatus> {
        let Ok(v) = self.shards.lock() else {
            return Vec::new();
        };
        v.iter()
            .filter_map(|c| c.lock().ok().map(|s| s.clone()))
            .filter(|s| !s.removed)
            .collect()
    }

    /// A link that ended for good leaves the views. (Its cell stays in place, so the rates of
    /// the others keep their clocks.)
    pub fn remove(&self, cell: &Arc<Mutex<ShardStatus>>) {
        if let Ok(mut s) = cell.lock() {
            s.removed = true;
        }
    }

    /// The JSON of `/status`: `links` is how many links the sync has now (one per source
    /// master of this shard), `shards` their states.
    pub fn to_json(&self) -> String {
        let shards = self.snapshot();
        serde_json::json!({ "links": shards.len(), "shards": shards }).to_string()
    }

    /// The label every metric of this process carries as `shard`: the index K of `--shard K/N`,
    /// "0" for a sync that is not sharded. Set once, before the links start.
    pub fn set_shard(&self, shard: &str) {
        if let Ok(mut l) = self.shard.lock() {
            *l = shard.to_string();
        }
    }

    /// The Prometheus text of `/metrics`. Every series carries `shard` (this process's shard),
    /// `link` (the link's checkpoint name: one source master, stable across its failovers) and
    /// `source` (the master replicated from now), so a dashboard sums over shards and masters.
    /// Names and types follow Prometheus' conventions (`promtool check metrics` passes):
    /// counters end in `_total`, durations are in seconds, sizes in bytes.
    pub fn to_prometheus(&self) -> String {
        let shards = self.snapshot();
        let shard = self.shard.lock().map(|l| l.clone()).unwrap_or_default();
        let shard = if shard.is_empty() {
            "0".to_string()
        } else {
            shard
        };
        let labels = |s: &ShardStatus| {
            format!(
                "shard=\"{}\",link=\"{}\",source=\"{}\"",
                escape(&shard),
                escape(&s.name),
                escape(&s.source)
            )
        };
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, f: &dyn Fn(&ShardStatus) -> f64| {
            let _ = writeln!(out, "# HELP shake_sync_{name} {help}");
            let _ = writeln!(out, "# TYPE shake_sync_{name} {kind}");
            for s in &shards {
                let _ = writeln!(out, "shake_sync_{name}{{{}}} {}", labels(s), f(s));
            }
        };
        use Kind::{Counter, Gauge};
        #[derive(Clone, Copy)]
        enum Kind {
            Gauge,
            Counter,
        }
        let table: [(&str, Kind, &str, &dyn Fn(&ShardStatus) -> f64); 17] = [
            ("rdb_bytes_received", Gauge, "RDB bytes received in the current or last full sync", &|s| s.rdb_bytes_received as f64),
            ("rdb_bytes_applied", Gauge, "RDB bytes applied to the target in the current or last full sync", &|s| s.rdb_bytes_applied as f64),
            ("rdb_keys_applied", Gauge, "keys applied in the current or last full sync", &|s| s.rdb_keys_applied as f64),
            ("source_offset", Gauge, "the source master's replication offset (master_repl_offset), bytes", &|s| s.source_offset as f64),
            ("received_offset", Gauge, "the last command-stream offset read from the source, bytes", &|s| s.received_offset as f64),
            ("applied_offset", Gauge, "the offset up to which the target holds every command (the checkpoint), bytes", &|s| s.applied_offset as f64),
            ("lag_bytes", Gauge, "source offset minus applied offset", &|s| s.lag_bytes as f64),
            ("lag_seconds", Gauge, "age of the oldest byte received and not yet applied (0 when caught up)", &|s| s.lag_ms as f64 / 1000.0),
            ("ops_per_second", Gauge, "commands applied per second over the last interval", &|s| s.ops_per_sec),
            ("commands_applied_total", Counter, "commands of the stream written to the target", &|s| s.commands_applied as f64),
            ("errors_total", Counter, "error replies from the target inside applied transactions", &|s| s.errors as f64),
            ("reconnects_total", Counter, "link sessions started over after a fault", &|s| s.reconnects as f64),
            ("full_syncs_total", Counter, "full synchronisations", &|s| s.full_syncs as f64),
            ("partial_syncs_total", Counter, "partial resynchronisations (+CONTINUE)", &|s| s.partial_syncs as f64),
            ("repaired_keys_total", Counter, "keys re-copied from the source after the target refused a command", &|s| s.repaired_keys as f64),
            ("pruned_keys_total", Counter, "keys removed after a full sync because the new snapshot no longer held them", &|s| s.pruned_keys as f64),
            ("up", Gauge, "1 while the link runs (handshake, full sync, incremental, reconnecting), 0 stopped or failed", &|s| (!matches!(s.phase, Phase::Stopped | Phase::Failed)) as u8 as f64),
        ];
        for (name, kind, help, f) in table {
            let kind = match kind {
                Gauge => "gauge",
                Counter => "counter",
            };
            metric(name, kind, help, f);
        }
        // No per-process "links" gauge: every series carries shard, link and source, so the
        // number of links is `count by (shard) (shake_sync_up)` (a removed link leaves it).
        let _ = writeln!(
            out,
            "# HELP shake_sync_phase 1 for the phase the link is in, 0 for the others"
        );
        let _ = writeln!(out, "# TYPE shake_sync_phase gauge");
        for s in &shards {
            for p in Phase::ALL {
                let _ = writeln!(
                    out,
                    "shake_sync_phase{{{},phase=\"{}\"}} {}",
                    labels(s),
                    p.as_str(),
                    (s.phase == p) as u8
                );
            }
        }
        out
    }

    /// One status line per shard, for stderr.
    pub fn lines(&self) -> Vec<String> {
        // `master via replica` when the link reads from a replica (--source-replica).
        let from = |s: &ShardStatus| {
            if s.read_from.is_empty() || s.read_from == s.source {
                s.source_shown()
            } else {
                format!("{} via {}", s.source_shown(), s.read_from)
            }
        };
        self.snapshot()
            .iter()
            .map(|s| match s.phase {
                Phase::FullSync => format!(
                    "{} <- {}: full sync, {} RDB bytes received, {} keys applied",
                    s.name,
                    from(s),
                    s.rdb_bytes_received,
                    s.rdb_keys_applied
                ),
                _ => format!(
                    "{} <- {}: {}, applied offset {}, lag {} bytes / {} ms, {:.0} ops/s, {} commands, {} errors, {} keys repaired, {} reconnects",
                    s.name,
                    from(s),
                    s.phase.as_str(),
                    s.applied_offset,
                    s.lag_bytes,
                    s.lag_ms,
                    s.ops_per_sec,
                    s.commands_applied,
                    s.errors,
                    s.repaired_keys,
                    s.reconnects
                ),
            })
            .collect()
    }

    /// Recomputes each shard's ops/s from its command count; call at a steady interval.
    pub fn tick_rates(&self, last: &mut Vec<(u64, Instant)>) {
        let Ok(v) = self.shards.lock() else { return };
        while last.len() < v.len() {
            // A shard seen for the first time has no rate yet: start its clock.
            let n = v[last.len()]
                .lock()
                .map(|s| s.commands_applied)
                .unwrap_or(0);
            last.push((n, Instant::now()));
        }
        for (cell, prev) in v.iter().zip(last.iter_mut()) {
            if let Ok(mut s) = cell.lock() {
                let dt = prev.1.elapsed().as_secs_f64();
                if dt > 0.0 {
                    s.ops_per_sec = s.commands_applied.saturating_sub(prev.0) as f64 / dt;
                }
                *prev = (s.commands_applied, Instant::now());
            }
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Most status connections open at once. A scraper needs one; more wait in the kernel's accept
/// queue, which costs this process no file descriptor, so a flood of idle connections can never
/// take the descriptors the sync needs for its own connections.
const MAX_CONNECTIONS: usize = 8;
/// How long a connection may take to send its request, and then to take the reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` and `/status` on `addr` until the process ends. Binding happens before it
/// returns, so a bad address is reported at start.
///
/// The sync never depends on this server: it runs in its own task, holds at most
/// `MAX_CONNECTIONS` connections, closes one that is idle for `REQUEST_TIMEOUT` or slow to read
/// its reply, and backs off (up to a second) when `accept` fails, e.g. with no file descriptors
/// left (EMFILE), instead of retrying in a busy loop.
pub async fn serve(addr: SocketAddr, board: StatusBoard) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        let mut backoff =
            crate::net::Backoff::new(u32::MAX, Duration::from_millis(20), Duration::from_secs(1));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => {
                    backoff.reset();
                    sock
                }
                Err(_) => {
                    drop(slot);
                    if let Some(d) = backoff.next_delay() {
                        tokio::time::sleep(d).await;
                    }
                    continue;
                }
            };
            let board = board.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let mut req = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                // Only the request line matters; give a slow client a moment, not forever.
                let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let line = String::from_utf8_lossy(&req);
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let (status, ctype, body) = match path {
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", board.to_prometheus()),
                    "/status" => ("200 OK", "application/json", board.to_json()),
                    _ => (
                        "404 Not Found",
                        "text/plain",
                        "shake-sync serves /metrics and /status\n".to_string(),
                    ),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tokio::time::timeout(REPLY_TIMEOUT, async {
                    sock.write_all(head.as_bytes()).await?;
                    sock.write_all(body.as_bytes()).await?;
                    sock.shutdown().await
                })
                .await;
            });
        }
    });
    Ok(bound)
}
