//! Live sync: keeping a target in step with a source, as a replica would, with checkpoints on
//! the target so a restart resumes exactly where the target stands.
//!
//! - [`checkpoint`]: the checkpoint keys on the target, their values, reading them back;
//! - [`stream`]: applying the command stream in transactions that carry the checkpoint;
//! - [`asm`]: atomic slot migrations on a cluster source (what the links drop, where they wait);
//! - [`repair`]: keys the target refused, re-copied from the source (`--on-target-error`);
//! - [`handover`]: the order between a cluster source's links when keys migrate between masters;
//! - [`prune`]: after a fallback full sync, removing the keys the source deleted;
//! - [`link`]: one replication link (one source master): connect, resume or full sync, stream,
//!   and start over from the checkpoint after any fault;
//! - [`output`]: `--output`: the sync written out as a change stream (JSON lines or RESP)
//!   instead of applied to a target, resumable from its state file;
//! - [`members`]: the set of links while the sync runs: a link for a master that joins the
//!   source cluster, the end of one whose master left;
//! - this module: the whole sync, one link per source master at the start, status, stopping.
//!
//! The replica side of the protocol is [`crate::repl`]; writing RDB data is [`crate::apply`];
//! the target client is [`crate::client`]. None of that is repeated here.

pub mod asm;
pub mod checkpoint;
pub mod handover;
pub mod link;
pub mod members;
pub mod output;
pub mod prune;
pub mod repair;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::apply::{ApplyError, ApplyOptions};
use crate::client::{ClientError, Topology};
use crate::net::{ConnectOptions, Connection, Endpoint, NetError};
use crate::observe::status::{ShardStatus, StatusBoard};
use crate::repl::{ReplError, ReplOptions};

pub use link::LinkSpec;
pub use stream::StreamOptions;

/// Everything a sync needs.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub source: Endpoint,
    /// `None`: detect.
    pub source_cluster: Option<bool>,
    pub target: Endpoint,
    pub target_cluster: Option<bool>,
    pub connect: ConnectOptions,
    pub repl: ReplOptions,
    /// For the full sync (conflict policy, filters, db map, big keys).
    pub apply: ApplyOptions,
    /// For the command stream.
    pub stream: StreamOptions,
    /// Commands in flight per target connection.
    pub pipeline: usize,
    /// FLUSHALL every target master before a full sync (re-seeding an old primary).
    pub flush_target: bool,
    /// When a full sync removes the keys of its scope the new snapshot did not hold
    /// ([`prune`]).
    pub prune: prune::PrunePolicy,
    /// `--source-replica`: each link reads its master's stream from a healthy replica of it
    /// when there is one ([`crate::replica`]), else from the master, saying so.
    pub source_replica: bool,
    /// The checkpoint name (per link: plus `/<first slot>` for a cluster source shard).
    pub checkpoint_name: String,
    /// Keep retrying a failing link this long before giving up.
    pub retry_for: Duration,
    pub status_addr: Option<SocketAddr>,
    pub quiet: bool,
    pub log_interval: Option<Duration>,
    pub relaxed_version: bool,
    /// `--shard K/N`: only the links of this shard's source masters (see [`crate::shard`]).
    pub shard: crate::shard::Shard,
    /// How often a cluster source's topology is read for masters that joined or left
    /// (`--topology-interval`; streams showing slots moving prompt a read sooner).
    pub topology_interval: Duration,
}

/// The default of [`SyncSettings::topology_interval`].
pub const TOPOLOGY_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The source or its link failed; the message names the endpoint.
    #[error("{0}")]
    Link(#[from] ReplError),
    /// The source sent something we cannot apply (named, with its offset).
    #[error("{0}")]
    Source(String),
    /// The target's connection failed in a way a fresh start from the checkpoint cures.
    #[error("{0}")]
    Target(String),
    /// Anything a retry cannot cure.
    #[error("{0}")]
    Fatal(String),
    /// A server refused this sync's password (rotated while the sync ran, or mistyped). A
    /// link that has worked before retries it for `--retry-for` (the old password may be put
    /// back); at the first start it is final.
    #[error("the {side} refused this sync's password ({}): set the current one in the --{side} URL or {}, or put the old one back on the server", source.cause(), side.password_env())]
    Auth { side: Side, source: NetError },
    /// Stopped (SIGTERM/SIGINT), but the target did not answer in time to record the final
    /// checkpoint; the message says what a restart does.
    #[error("{0}")]
    Unrecorded(String),
}

/// Which end of the sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    /// Where the password of this side can also come from.
    pub fn password_env(self) -> &'static str {
        match self {
            Side::Source => "SHAKE_SOURCE_PASSWORD",
            Side::Target => "SHAKE_TARGET_PASSWORD",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

impl SyncError {
    /// Faults a new session (reconnect, resume from the checkpoint) can cure.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Link(e) => match e {
                ReplError::LinkLost { .. } | ReplError::Idle { .. } => true,
                ReplError::Net(n) => n.is_transient(),
                // A source that is loading, or a replica whose master is away (failover).
                ReplError::Source { message, .. } => {
                    message.starts_with("LOADING") || message.contains("NOMASTERLINK")
                }
                _ => false,
            },
            SyncError::Target(_) => true,
            SyncError::Source(_)
            | SyncError::Fatal(_)
            | SyncError::Auth { .. }
            | SyncError::Unrecorded(_) => false,
        }
    }

    /// The same error, an authentication failure of the source link named as such (the target
    /// side's are named where they are converted: [`SyncError::from_client`], `from_net`).
    pub fn name_credential(self) -> SyncError {
        match self {
            SyncError::Link(ReplError::Net(source @ NetError::Auth { .. })) => SyncError::Auth {
                side: Side::Source,
                source,
            },
            other => other,
        }
    }

    pub fn from_client(e: ClientError) -> SyncError {
        if let ClientError::Net(source @ NetError::Auth { .. }) = e {
            return SyncError::Auth {
                side: Side::Target,
                source,
            };
        }
        match &e {
            ClientError::Net(n) if n.is_transient() => SyncError::Target(e.to_string()),
            ClientError::Unreachable { .. }
            | ClientError::UnsafeResend { .. }
            | ClientError::PartialGroup { .. }
            | ClientError::Retries { .. }
            | ClientError::NoOwner { .. }
            | ClientError::MasterChanged { .. }
            | ClientError::Failed { .. } => SyncError::Target(e.to_string()),
            _ => SyncError::Fatal(e.to_string()),
        }
    }

    pub fn from_apply(e: ApplyError) -> SyncError {
        match e {
            // The client's own errors were rendered to text by the apply layer; a connection
            // that broke mid full sync is worth a new attempt.
            ApplyError::Client(m) => SyncError::Target(m),
            other => SyncError::Fatal(other.to_string()),
        }
    }

    pub fn from_net(e: NetError) -> SyncError {
        if let NetError::Auth { .. } = e {
            return SyncError::Auth {
                side: Side::Target,
                source: e,
            };
        }
        if e.is_transient() {
            SyncError::Target(e.to_string())
        } else {
            SyncError::Fatal(e.to_string())
        }
    }
}

/// The final word of a sync that was stopped.
#[derive(Debug, Clone)]
pub struct SyncSummary {
    pub shards: Vec<ShardStatus>,
    pub seconds: f64,
}

/// The links of a sync: one for a standalone source, one per master of a cluster source; of
/// those, the ones of this process's shard (`--shard`).
pub async fn plan_links(s: &SyncSettings) -> Result<Vec<LinkSpec>, SyncError> {
    let mut links = all_links(s).await?;
    links.retain(|l| s.shard.takes(l.first_slot));
    Ok(links)
}

/// Whether the source is a cluster (`--source-cluster` / `--no-source-cluster` say; else
/// detected).
async fn source_is_cluster(s: &SyncSettings) -> Result<bool, SyncError> {
    if let Some(c) = s.source_cluster {
        return Ok(c);
    }
    let mut conn = Connection::connect(&s.source, &s.connect)
        .await
        .map_err(|e| SyncError::Fatal(format!("source: {e}")))?;
    crate::client::is_cluster(&mut conn)
        .await
        .map_err(|e| SyncError::Fatal(format!("source: {e}")))
}

async fn all_links(s: &SyncSettings) -> Result<Vec<LinkSpec>, SyncError> {
    if !source_is_cluster(s).await? {
        return Ok(vec![LinkSpec {
            name: s.checkpoint_name.clone(),
            seed: s.source.clone(),
            first_slot: None,
            source_nodes: vec![s.source.clone()],
            handover: None,
            joined: false,
            flush: link::Flush::No,
        }]);
    }
    let mut conn = Connection::connect(&s.source, &s.connect)
        .await
        .map_err(|e| SyncError::Fatal(format!("source: {e}")))?;
    let topo = Topology::fetch(&mut conn)
        .await
        .map_err(|e| SyncError::Fatal(format!("source: {e}")))?;
    let masters = topo.masters().to_vec();
    let mut links = Vec::new();
    for (i, m) in masters.iter().enumerate() {
        let first = topo.ranges_of(i).first().map(|r| r.0).unwrap_or(0);
        links.push(LinkSpec {
            name: format!("{}/{first}", s.checkpoint_name),
            seed: m.clone(),
            first_slot: Some(first),
            source_nodes: masters.clone(),
            handover: None,
            joined: false,
            flush: link::Flush::No,
        });
    }
    name_by_history(s, &mut links).await?;
    Ok(links)
}

/// A cluster source's link keeps its name while slots move: on a start, each master takes the
/// name of the checkpoint whose replication id is in its history (`master_replid`, or
/// `master_replid2` after a failover), whatever its first slot is now. A master without one
/// takes `<name>/<first slot>`, or `<name>/<node id>` when another master holds that name.
async fn name_by_history(s: &SyncSettings, links: &mut [LinkSpec]) -> Result<(), SyncError> {
    let target = link::connect_stream_target(s).await?;
    let (masters, cluster) = (target.masters(), target.is_cluster());
    drop(target);
    let db = if cluster { 0 } else { s.stream.checkpoint_db };
    let pattern = checkpoint::CheckpointKeys::links_pattern(&s.checkpoint_name);
    // Existing links: name -> replication id.
    let mut existing: Vec<(String, String)> = Vec::new();
    for node in &masters {
        let mut conn = Connection::connect(node, &s.connect)
            .await
            .map_err(SyncError::from_net)?;
        for k in link::scan_keys(&mut conn, db, &pattern).await? {
            let Some(name) = checkpoint::CheckpointKeys::low_water_link(&s.checkpoint_name, &k)
            else {
                continue;
            };
            let r = conn
                .request(&[&b"GET"[..], &k])
                .await
                .map_err(SyncError::from_net)?;
            if let Some(c) = r
                .as_bytes()
                .and_then(|v| checkpoint::Checkpoint::parse(v).ok())
            {
                existing.push((name, c.replid));
            }
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    let mut taken: Vec<String> = Vec::new();
    let mut unnamed = Vec::new();
    for (i, spec) in links.iter_mut().enumerate() {
        let mut conn = Connection::connect(&spec.seed, &s.connect)
            .await
            .map_err(|e| SyncError::Fatal(format!("source: {e}")))?;
        let info = conn
            .info("replication")
            .await
            .map_err(|e| SyncError::Fatal(format!("source {}: {e}", spec.seed)))?;
        let history: Vec<&String> = ["master_replid", "master_replid2"]
            .iter()
            .filter_map(|k| info.get(*k))
            .collect();
        let found = existing
            .iter()
            .find(|(n, r)| history.contains(&r) && !taken.contains(n));
        match found {
            Some((n, _)) => {
                spec.name = n.clone();
                taken.push(n.clone());
            }
            None => unnamed.push((i, conn)),
        }
    }
    for (i, mut conn) in unnamed {
        if taken.contains(&links[i].name) {
            let r = conn
                .request(&[&b"CLUSTER"[..], b"MYID"])
                .await
                .map_err(|e| SyncError::Fatal(format!("source {}: {e}", links[i].seed)))?;
            let id = r
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            let Some(id) = id else {
                return Err(SyncError::Fatal(format!(
                    "source {}: CLUSTER MYID answered {r:?}",
                    links[i].seed
                )));
            };
            links[i].name = format!("{}/{id}", s.checkpoint_name);
        }
        taken.push(links[i].name.clone());
    }
    Ok(())
}

/// `--flush-target` over the links. One link owns the target: it empties it before each of its
/// full syncs. Several links (a cluster source) share it, and a FLUSHALL at one link's full sync
/// would wipe what the others wrote, whenever their full syncs end. So the target is emptied
/// once, here, before any link starts, when none of them has a checkpoint to resume from (a
/// fresh sync: every link will full-sync); when some have, nothing is emptied and a link that
/// still needs a full sync stops with an error saying so (see [`link::Flush`]).
async fn plan_flush(s: &SyncSettings, links: &mut [LinkSpec]) -> Result<(), SyncError> {
    if !s.flush_target {
        return Ok(());
    }
    // A cluster source's one master may be joined by others while the sync runs: it shares.
    if links.len() == 1 && links[0].first_slot.is_none() {
        links[0].flush = link::Flush::EachFullSync;
        return Ok(());
    }
    let mut target = link::connect_stream_target(s).await?;
    let (masters, cluster) = (target.masters(), target.is_cluster());
    let mut resumable = Vec::new();
    for l in links.iter() {
        let keys = checkpoint::CheckpointKeys::new(&l.name, cluster);
        let (applied, _) = link::read_checkpoint(s, &masters, &keys).await?;
        if applied.resume_offset().is_some() {
            resumable.push(l.name.clone());
        }
    }
    let flushed_at_start = resumable.is_empty();
    if flushed_at_start {
        link::flush_target(&mut target).await?;
        if !s.quiet {
            eprintln!(
                "shake-sync: target flushed once for the {} links, before any of them starts (--flush-target)",
                links.len()
            );
        }
    } else if !s.quiet {
        eprintln!(
            "shake-sync: --flush-target: the target is not emptied, since links {} have checkpoints to resume from (a link that needs a full sync stops)",
            resumable.join(", ")
        );
    }
    for l in links.iter_mut() {
        l.flush = link::Flush::Shared { flushed_at_start };
    }
    Ok(())
}

/// Runs the sync until `stop` turns true (then drains, checkpoints and returns) or a link fails
/// for good (then the other links are stopped the same way and the error is returned). A
/// cluster source's links follow its masters meanwhile (see [`members`]).
pub async fn run(
    s: SyncSettings,
    board: StatusBoard,
    stop: watch::Receiver<bool>,
) -> Result<SyncSummary, SyncError> {
    let started = Instant::now();
    if let Some(d) = &s.repl.dual_channel {
        // What a killed run spooled is of no use to anyone now.
        crate::spool::sweep_stale(&d.spool.dir);
    }
    let cluster = source_is_cluster(&s).await?;
    let links = plan_links(&s).await?;
    if links.is_empty() {
        // More shards than masters: this one idles (serving /status) until it is stopped, so
        // a StatefulSet of any N stays up; the other shards do the work. A master that joins
        // with its first slot in this shard's range gets a link here.
        let masters = all_links(&s).await.map(|l| l.len()).unwrap_or(0);
        eprintln!("shake-sync: {}", s.shard.nothing_to_do(masters));
        if !cluster {
            let mut stop = stop;
            let _ = stop.wait_for(|v| *v).await;
            return Ok(SyncSummary {
                shards: Vec::new(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    let mut links = links;
    plan_flush(&s, &mut links).await?;
    let settings = Arc::new(s);
    let (inner_stop_tx, inner_stop) = watch::channel(false);
    // The outside stop reaches the links through our own switch, which a failing link also
    // flips to stop its siblings.
    let relay = {
        let mut outer = stop.clone();
        let mut inner = inner_stop.clone();
        let tx = inner_stop_tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = outer.wait_for(|v| *v) => { let _ = tx.send(true); }
                _ = inner.wait_for(|v| *v) => {}
            }
        })
    };
    // A cluster source may gain masters: its links always share a handover board.
    let order = cluster.then(|| handover::Board::new(settings.connect.clone(), inner_stop.clone()));
    let mut members = members::Members::new(
        settings.clone(),
        board.clone(),
        order,
        inner_stop,
        inner_stop_tx,
    );
    for spec in links {
        members.start(spec);
    }
    let r = members.run(cluster).await;
    relay.abort();
    r?;
    Ok(SyncSummary {
        shards: board.snapshot(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// shake-sync's own preflight line per link: where its checkpoint is, and whether a start now
/// would resume (the source still has that history and its backlog holds the offset) or do a
/// full sync. Reads only. Also says whether any link has a checkpoint on the target (then the
/// target's keys are this sync's own, and conflicts do not apply to them).
pub async fn preflight_checkpoints(s: &SyncSettings) -> (Vec<crate::preflight::Check>, bool) {
    let mut ours = false;
    let checks = preflight_links(s, &mut ours).await;
    (checks, ours)
}

async fn preflight_links(s: &SyncSettings, ours: &mut bool) -> Vec<crate::preflight::Check> {
    use crate::preflight::Check;
    const NAME: &str = "sync.checkpoint";
    let links = match plan_links(s).await {
        Ok(l) => l,
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("cannot list the source's shards: {e}"),
                "fix the source connection first",
            )]
        }
    };
    let target = match link::connect_stream_target(s).await {
        Ok(t) => t,
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("cannot read checkpoints: {e}"),
                "fix the target connection first",
            )]
        }
    };
    let (masters, cluster) = (target.masters(), target.is_cluster());
    drop(target);
    let mut out = Vec::new();
    for spec in links {
        let keys = checkpoint::CheckpointKeys::new(&spec.name, cluster);
        let key = String::from_utf8_lossy(&keys.low_water()).into_owned();
        let applied = match link::read_checkpoint(s, &masters, &keys).await {
            Ok((a, _)) => a,
            Err(e) => {
                out.push(Check::fail(
                    NAME,
                    format!("{key}: {e}"),
                    "fix the target connection first",
                ));
                continue;
            }
        };
        if applied.low_water.is_none() {
            out.push(Check::ok(
                NAME,
                format!("no checkpoint {key} on the target: the first run starts with a full sync"),
            ));
            continue;
        }
        *ours = true;
        let Some((replid, offset)) = applied.resume_offset() else {
            out.push(Check::warn(NAME, format!("{key} marks a full sync that did not finish"), "the next run does the full sync again, replacing this link's keys (--on-conflict rewrite for them)"));
            continue;
        };
        let info = match Connection::connect(&spec.seed, &s.connect).await {
            Ok(mut c) => c.info("replication").await.ok(),
            Err(_) => None,
        };
        let Some(info) = info else {
            out.push(Check::warn(
                NAME,
                format!(
                    "{key}: {replid} offset {offset}; {} did not answer INFO replication",
                    spec.seed
                ),
                "check the source",
            ));
            continue;
        };
        let num = |k: &str| {
            info.get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(-1)
        };
        let same = info.get("master_replid").is_some_and(|v| *v == replid)
            || (info.get("master_replid2").is_some_and(|v| *v == replid)
                && offset as i64 + 1 <= num("second_repl_offset"));
        let first = num("repl_backlog_first_byte_offset");
        let end = num("master_repl_offset");
        let held = first >= 0 && (offset as i64 + 1) >= first && offset as i64 <= end;
        if same && held {
            out.push(Check::ok(NAME, format!("{key}: {replid} offset {offset}; the source's backlog holds it ({first}..{end}): a start resumes with a partial resync")));
        } else if same {
            out.push(Check::warn(NAME, format!("{key}: offset {offset} is outside the source's backlog ({first}..{end})"), "a start does a full sync (keys of this link are replaced); raise repl-backlog-size to survive longer stops"));
        } else {
            out.push(Check::warn(NAME, format!("{key} is for replication id {replid}, the source now has {}", info.get("master_replid").map(String::as_str).unwrap_or("?")), "a start does a full sync: the source restarted or is another server; check --source and --checkpoint-name"));
        }
    }
    out
}
