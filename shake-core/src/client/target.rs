//! [`Target`]: writing to a standalone server or a cluster through one API.
//!
//! The target owns one [`Pipeline`] per node, routes each command by the hash slot of its key
//! (cluster), follows MOVED and ASK, retries what the server says is temporary, reconnects when a
//! connection drops, and hands back `(tag, Reply)` completions. It runs entirely inside the
//! caller's task: no background task, no lock; progress happens while the caller awaits
//! [`Target::submit`], [`Target::next_completion`] or [`Target::flush_all`]. Its futures are not
//! cancel-safe: do not race them in a `select!`.
//!
//! # Ordering
//!
//! Commands are ordered by *domain*: on a cluster, the hash slot of the key (commands without a
//! key form one more domain); on a standalone server, everything is one domain. Within a domain,
//! commands are sent in submission order, and a command is never sent to a node while an earlier
//! command of its domain is waiting to be resent or is still in flight on another node. So after
//! a MOVED, the commands that were in flight behind the redirected one (they get MOVED too) are
//! resent in their original order, before anything newer. The one reordering left is
//! unavoidable with pipelining: when a command gets a retryable error (TRYAGAIN, LOADING, ...),
//! the commands of its domain already in flight behind it may succeed before its retry.
//! Completions come back in the order replies are read: by domain in submission order (but for
//! that exception), interleaved across domains.
//!
//! # Retries
//!
//! - MOVED: the slot's owner is updated at once from the reply, the topology is refreshed (at most
//!   every [`REFRESH_INTERVAL`]), and the command is resent to the new owner.
//! - ASK: `ASKING` + the command go to the named node, once; the topology is not changed.
//! - TRYAGAIN, CLUSTERDOWN, LOADING, BUSY (a script is running), and READONLY on a cluster (a
//!   failover turned the node into a replica): resent after [`TargetOptions::retry`]'s backoff.
//! - A sentinel target (`redis+sentinel://`): every reconnect asks the sentinels for the
//!   master ([`crate::net`]), and READONLY (the master was demoted in a failover) is retried
//!   like on a cluster, on a new connection to whichever master the sentinels name then. A
//!   reconnect that lands on another master than before is counted in
//!   [`TargetStats::failovers`]; with [`Target::fail_on_master_change`] it fails the target
//!   instead ([`ClientError::MasterChanged`]), for a caller that must start again from what the
//!   new master holds (shake-sync's checkpoint).
//! - A lost connection (or a reply timeout): the node is reconnected after
//!   [`TargetOptions::reconnect`]'s backoff and the unanswered commands are resent, in order, but
//!   only if every one of them was submitted as [`Idempotent::Yes`]: a command that may or may not
//!   have been applied (INCR, RPUSH) cannot be sent again without risking doing it twice, so the
//!   target fails with [`ClientError::UnsafeResend`] naming the endpoint and that command.
//! - Any other error reply (BUSYKEY, WRONGTYPE, OOM, ...) is the command's reply: the caller
//!   decides what it means.
//!
//! Every bound (reconnects, retries, redirects) ends in an error naming the endpoint and the
//! command; after such an error the target refuses further use.

use std::collections::{HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::net::{Backoff, ConnectOptions, Connection, Endpoint, NetError};
use crate::resp::{encode_command, Reply};

use super::pipeline::{Pipeline, PipelineOptions};
use super::topology::{cluster_databases, is_cluster, Topology, SLOTS};
use super::{describe_command, slot_of, ClientError};

/// The topology is re-read at most this often, however many MOVED replies arrive: the MOVED
/// reply itself already says where the slot went.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Whether a command may be sent a second time when it is unknown whether the first one was
/// applied (its connection dropped before the reply came).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    /// Applying it twice leaves the same result as once: `RESTORE ... REPLACE`, SET, DEL, HSET,
    /// PEXPIREAT, SELECT.
    Yes,
    /// Applying it twice differs: RPUSH, INCR, APPEND, XADD with `*`, RESTORE without REPLACE
    /// (the second fails with BUSYKEY).
    No,
}

/// A bounded exponential backoff, as settings (see [`Backoff`]).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.attempts, self.base, self.max)
    }
}

/// How to connect to a target and how hard to try.
#[derive(Debug, Clone)]
pub struct TargetOptions {
    /// `None`: ask the server (`INFO cluster`); `Some` forces cluster or standalone mode.
    pub cluster: Option<bool>,
    pub connect: ConnectOptions,
    /// The window of each node's connection.
    pub window: PipelineOptions,
    /// Resending a command that got TRYAGAIN, CLUSTERDOWN, LOADING, BUSY, READONLY (cluster), or
    /// whose slot has no master: per command.
    pub retry: RetryPolicy,
    /// Reconnecting to a node after its connection dropped or a connect failed: per node, reset
    /// by every reply from it.
    pub reconnect: RetryPolicy,
    /// MOVED/ASK hops one command may take before the target gives up.
    pub max_redirects: u32,
}

impl Default for TargetOptions {
    /// Retries for about 20 s (a failover takes a few seconds, a LOADING server as long as its
    /// RDB takes to load: raise `retry` for big ones); reconnects for about 20 s.
    fn default() -> Self {
        TargetOptions {
            cluster: None,
            connect: ConnectOptions::default(),
            window: PipelineOptions::default(),
            retry: RetryPolicy {
                attempts: 25,
                base: Duration::from_millis(20),
                max: Duration::from_secs(1),
            },
            reconnect: RetryPolicy {
                attempts: 10,
                base: Duration::from_millis(100),
                max: Duration::from_secs(3),
            },
            max_redirects: 16,
        }
    }
}

/// Counters of what the target had to do besides sending commands (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetStats {
    /// Commands answered (completions produced).
    pub completed: u64,
    /// MOVED replies followed.
    pub moved: u64,
    /// ASK replies followed.
    pub asks: u64,
    /// Commands resent after TRYAGAIN, CLUSTERDOWN, LOADING, BUSY, READONLY or an unserved slot.
    pub retries: u64,
    /// Connections lost or refused.
    pub reconnects: u64,
    /// Commands resent after a lost connection.
    pub resent: u64,
    /// Topology reads after the first.
    pub refreshes: u64,
    /// Reconnects of a sentinel target that found another master than before.
    pub failovers: u64,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Slot(u16),
    /// No key: the first master (on a standalone target, the server).
    Any,
}

enum Payload {
    One(Bytes),
    Group { cmds: Vec<Bytes>, transaction: bool },
}

struct Op<T> {
    seq: u64,
    tag: T,
    payload: Payload,
    route: Route,
    db: u64,
    idem: Idempotent,
    /// Node to send to once, with ASKING first (an ASK redirection).
    ask: Option<usize>,
    redirects: u32,
    retry: Option<Backoff>,
    not_before: Option<Instant>,
    bytes: usize,
}

impl<T> Op<T> {
    fn describe(&self) -> String {
        match &self.payload {
            Payload::One(c) => describe_command(c),
            Payload::Group { cmds, .. } => {
                let first = cmds
                    .iter()
                    .map(|c| describe_command(c))
                    .find(|d| !d.eq_ignore_ascii_case("MULTI"))
                    .unwrap_or_else(|| "an empty group".into());
                format!("{first} (in a group of {} commands)", cmds.len())
            }
        }
    }
}

/// What a node's pipeline carries: the caller's commands, and the SELECTs the target adds.
enum Entry<T> {
    User(Op<T>),
    Select(u64),
}

struct Node<T> {
    endpoint: Endpoint,
    pipe: Option<Pipeline<Entry<T>>>,
    /// The database selected on the current connection.
    db: u64,
    reconnect: Backoff,
    /// No connect attempt before this (after a failure).
    retry_at: Option<Instant>,
    last_error: Option<String>,
    /// A sentinel target: the address of the master the last connection reached.
    master_at: Option<String>,
    /// A sentinel target: the node answered READONLY (demoted); reconnect once nothing is in
    /// flight, to whichever master the sentinels name.
    reresolve: bool,
}

/// What a reply asks the router to do.
enum Outcome {
    Done,
    Moved {
        slot: u16,
        host: String,
        port: u16,
    },
    Ask {
        host: String,
        port: u16,
    },
    Retry {
        error: String,
        refresh: bool,
    },
    /// A group failed after some of its commands ran, and it is not idempotent.
    Partial(String),
}

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// A standalone server or a cluster to write to. `T` is the caller's tag for each command (a key
/// name, a counter, an id): it comes back with the command's reply.
pub struct Target<T> {
    seed: Endpoint,
    opts: TargetOptions,
    cluster: bool,
    topology: Topology,
    nodes: Vec<Node<T>>,
    /// Commands waiting to be (re)sent, in submission order (`seq`).
    queue: VecDeque<Op<T>>,
    queue_bytes: usize,
    /// Per domain: commands in `queue`.
    dom_queued: Vec<u32>,
    /// Per domain: commands in flight, all on the node `dom_node`.
    dom_inflight: Vec<u32>,
    dom_node: Vec<u32>,
    done: VecDeque<(T, Reply)>,
    db: u64,
    /// Databases the target offers (standalone: not limited here, the server judges SELECT; a
    /// cluster: `cluster-databases`, 1 but on Valkey 9+).
    databases: u64,
    seq: u64,
    stale: bool,
    last_refresh: Option<Instant>,
    refresh_hint: Option<Endpoint>,
    failed: Option<String>,
    stats: TargetStats,
    scratch: HashSet<usize>,
    /// See [`Target::fail_on_master_change`].
    fail_on_master_change: bool,
}

impl<T> std::fmt::Debug for Target<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Target({}, {})",
            self.seed,
            if self.cluster {
                "cluster"
            } else {
                "standalone"
            }
        )
    }
}

impl<T: Send> Target<T> {
    /// Connects to `seed` (logging in), finds out whether it is a cluster (unless
    /// `opts.cluster` says), and on a cluster reads the topology. The other nodes are connected
    /// when the first command for them comes. The endpoint's database (`/db`) is selected before
    /// the first command; a cluster has only database 0.
    pub async fn connect(seed: &Endpoint, opts: TargetOptions) -> Result<Target<T>, ClientError> {
        let mut conn = Connection::connect(seed, &opts.connect).await?;
        let cluster = match opts.cluster {
            Some(c) => c,
            None => is_cluster(&mut conn).await?,
        };
        let db = seed.db.unwrap_or(0);
        let domains = if cluster { SLOTS + 1 } else { 1 };
        let mut t = Target {
            seed: seed.clone(),
            cluster,
            topology: Topology::single(seed.clone()),
            nodes: Vec::new(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            dom_queued: vec![0; domains],
            dom_inflight: vec![0; domains],
            dom_node: vec![0; domains],
            done: VecDeque::new(),
            db,
            databases: u64::MAX,
            seq: 0,
            stale: false,
            last_refresh: None,
            refresh_hint: None,
            failed: None,
            stats: TargetStats::default(),
            scratch: HashSet::new(),
            fail_on_master_change: false,
            opts,
        };
        if cluster {
            t.databases = cluster_databases(&mut conn).await?;
            if db >= t.databases {
                return Err(ClientError::ClusterDb {
                    endpoint: seed.to_string(),
                    db,
                    databases: t.databases,
                });
            }
            t.topology = Topology::fetch(&mut conn).await?;
            if t.topology.masters().is_empty() {
                return Err(ClientError::Topology {
                    endpoint: seed.to_string(),
                    message: "the cluster has no master serving any slot".into(),
                });
            }
            t.last_refresh = Some(Instant::now());
            for m in t.topology.masters().to_vec() {
                t.node_index(&m.host, m.port);
            }
        }
        // Keep the seed's connection when it is a node we will write to.
        let i = t.node_index(&seed.host, seed.port);
        if seed.sentinel.is_some() {
            t.nodes[i].master_at = Some(conn.endpoint().address());
        }
        if !cluster || t.topology.masters().iter().any(|m| same_addr(m, seed)) {
            t.nodes[i].pipe = Some(Pipeline::new(conn, t.opts.window));
        }
        Ok(t)
    }

    /// A sentinel target: fail ([`ClientError::MasterChanged`]) instead of going on when a
    /// reconnect finds another master than before. What the old master acknowledged last may
    /// not have reached the new one (replication is asynchronous): a caller that keeps its own
    /// record of what the target holds (shake-sync's checkpoint) must read it again there.
    pub fn fail_on_master_change(&mut self) {
        self.fail_on_master_change = true;
    }

    /// Whether the target is a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The endpoint the target was opened with.
    pub fn seed(&self) -> &Endpoint {
        &self.seed
    }

    /// The masters: every master serving a slot on a cluster (as last read, in slot order), the
    /// server itself otherwise.
    pub fn masters(&self) -> Vec<Endpoint> {
        if self.cluster {
            self.topology.masters().to_vec()
        } else {
            vec![self.seed.clone()]
        }
    }

    /// The cluster topology as last read (standalone: the server serves every slot).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn stats(&self) -> TargetStats {
        self.stats
    }

    /// Whether database `db` exists on the target as far as the client can tell: on a cluster,
    /// those below `cluster-databases` (only 0 but on Valkey 9+); a standalone server judges
    /// SELECT itself.
    pub fn has_db(&self, db: u64) -> bool {
        db < self.databases
    }

    /// How many databases a cluster target has (`cluster-databases`); `None` for a standalone
    /// server.
    pub fn cluster_databases(&self) -> Option<u64> {
        self.cluster.then_some(self.databases)
    }

    /// The database later commands go to (on a cluster, one below `cluster-databases`). The
    /// target sends SELECT itself, on each connection, when needed, also after a reconnect.
    pub fn select(&mut self, db: u64) -> Result<(), ClientError> {
        if !self.has_db(db) {
            return Err(ClientError::ClusterDb {
                endpoint: self.seed.to_string(),
                db,
                databases: self.databases,
            });
        }
        self.db = db;
        Ok(())
    }

    /// Sends `cmd` (one encoded command, see [`crate::resp::CommandBuilder`]) for `key`: on a
    /// cluster, to the master of the key's slot; `None` (a command without a key) to the first
    /// master. Waits only when the windows are full. The reply comes back with `tag` from
    /// [`Target::try_completion`] / [`Target::next_completion`]: collect completions as you go,
    /// they are held until collected.
    pub async fn submit(
        &mut self,
        key: Option<&[u8]>,
        cmd: impl Into<Bytes>,
        idem: Idempotent,
        tag: T,
    ) -> Result<(), ClientError> {
        let route = match key {
            Some(k) => Route::Slot(slot_of(k)),
            None => Route::Any,
        };
        self.enqueue(route, Payload::One(cmd.into()), idem, tag)
            .await
    }

    /// Like [`Target::submit`], for a command whose slot is known (e.g. several keys with one
    /// hash tag).
    pub async fn submit_to_slot(
        &mut self,
        slot: u16,
        cmd: impl Into<Bytes>,
        idem: Idempotent,
        tag: T,
    ) -> Result<(), ClientError> {
        self.check_slot(slot)?;
        self.enqueue(Route::Slot(slot), Payload::One(cmd.into()), idem, tag)
            .await
    }

    /// Sends several commands back to back on one connection, never split or interleaved with
    /// others: `MULTI ... EXEC`, or a batch that must stay together. `slot` routes them (`None`:
    /// the first master). The completion is one `Reply::Array` with every command's reply in
    /// order (for `MULTI ... EXEC`: `+OK`, `+QUEUED`..., then EXEC's array).
    ///
    /// A group redirected or retried is resent whole, which is safe when nothing in it ran: a
    /// transaction (first command MULTI) whose EXEC failed, or a group whose every reply is a
    /// redirection. Otherwise it is resent only if `idem` is `Yes`; if not, the target fails with
    /// [`ClientError::PartialGroup`].
    pub async fn submit_group(
        &mut self,
        slot: Option<u16>,
        cmds: Vec<Bytes>,
        idem: Idempotent,
        tag: T,
    ) -> Result<(), ClientError> {
        let route = match slot {
            Some(s) => {
                self.check_slot(s)?;
                Route::Slot(s)
            }
            None => Route::Any,
        };
        // MULTI has no arguments, so its encoding is fixed; checked without decoding, since
        // readers send many small groups.
        let transaction = cmds.first().is_some_and(|c| {
            c.len() == 15
                && c.starts_with(b"*1\r\n$5\r\n")
                && c[8..13].eq_ignore_ascii_case(b"MULTI")
        });
        self.enqueue(route, Payload::Group { cmds, transaction }, idem, tag)
            .await
    }

    /// A completion already received, if any (never waits).
    pub fn try_completion(&mut self) -> Option<(T, Reply)> {
        self.done.pop_front()
    }

    /// The next completion, waiting for it; `None` when nothing is outstanding.
    pub async fn next_completion(&mut self) -> Result<Option<(T, Reply)>, ClientError> {
        loop {
            if let Some(c) = self.done.pop_front() {
                return Ok(Some(c));
            }
            self.process_ready()?;
            if !self.done.is_empty() {
                continue;
            }
            if self.is_idle() {
                return Ok(None);
            }
            self.step().await?;
        }
    }

    /// Waits until every command submitted so far is answered (retries included). The
    /// completions stay to be collected.
    pub async fn flush_all(&mut self) -> Result<(), ClientError> {
        loop {
            self.check_failed()?;
            self.process_ready()?;
            if self.is_idle() {
                return Ok(());
            }
            self.step().await?;
        }
    }

    /// [`Target::flush_all`], then every completion not collected yet.
    pub async fn drain(&mut self) -> Result<Vec<(T, Reply)>, ClientError> {
        self.flush_all().await?;
        Ok(self.done.drain(..).collect())
    }

    /// Commands submitted and not answered yet (queued for a resend or in flight).
    pub fn outstanding(&self) -> usize {
        self.queue.len()
            + self
                .nodes
                .iter()
                .filter_map(|n| n.pipe.as_ref())
                .map(|p| p.in_flight() + p.ready())
                .sum::<usize>()
    }

    /// Completions waiting to be collected.
    pub fn completed(&self) -> usize {
        self.done.len()
    }

    /// Runs `argv` on every master (the server itself when standalone), after every command
    /// submitted before has been answered, each on a connection of its own: FLUSHALL,
    /// FUNCTION LOAD, or reading INFO / CONFIG GET / DBSIZE. Retryable errors are retried; other
    /// error replies are returned as replies.
    pub async fn broadcast<A: AsRef<[u8]>>(
        &mut self,
        argv: &[A],
    ) -> Result<Vec<(Endpoint, Reply)>, ClientError> {
        self.flush_all().await?;
        let mut out = Vec::new();
        // Only Sync parts of `self` may be held across the awaits below, so that this future
        // stays Send (a `Connection` is Send but not Sync).
        let (opts, cluster, db) = (self.opts.clone(), self.cluster, self.db);
        for m in self.masters() {
            let r = request_on(&opts, cluster, db, &m, argv).await?;
            out.push((m, r));
        }
        Ok(out)
    }

    fn check_slot(&self, slot: u16) -> Result<(), ClientError> {
        if slot as usize >= SLOTS {
            return Err(ClientError::BadSlot { slot });
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<(), ClientError> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(ClientError::Failed {
                endpoint: self.seed.to_string(),
                error: why.clone(),
            }),
        }
    }

    /// Records a fatal error: the target is unusable from now on.
    fn fail(&mut self, e: ClientError) -> ClientError {
        if self.failed.is_none() {
            self.failed = Some(e.to_string());
        }
        e
    }

    fn domain_of(&self, route: Route) -> usize {
        match (self.cluster, route) {
            (false, _) => 0,
            (true, Route::Slot(s)) => s as usize,
            (true, Route::Any) => SLOTS,
        }
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self
                .nodes
                .iter()
                .filter_map(|n| n.pipe.as_ref())
                .all(|p| p.in_flight() == 0 && p.ready() == 0)
    }

    fn node_index(&mut self, host: &str, port: u16) -> usize {
        if let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.endpoint.host == host && n.endpoint.port == port)
        {
            return i;
        }
        // A sentinel seed stays itself (its reconnects ask the sentinels); every other node is
        // the one at that address.
        let endpoint = if self.seed.sentinel.is_some()
            && !self.cluster
            && host == self.seed.host
            && port == self.seed.port
        {
            self.seed.clone()
        } else {
            self.seed.with_address(host, port)
        };
        self.nodes.push(Node {
            endpoint,
            pipe: None,
            db: 0,
            reconnect: self.opts.reconnect.backoff(),
            retry_at: None,
            last_error: None,
            master_at: None,
            reresolve: false,
        });
        self.nodes.len() - 1
    }

    async fn enqueue(
        &mut self,
        route: Route,
        payload: Payload,
        idem: Idempotent,
        tag: T,
    ) -> Result<(), ClientError> {
        self.check_failed()?;
        let bytes = match &payload {
            Payload::One(c) => c.len(),
            Payload::Group { cmds, .. } => cmds.iter().map(Bytes::len).sum(),
        };
        self.seq += 1;
        let op = Op {
            seq: self.seq,
            tag,
            payload,
            route,
            db: self.db,
            idem,
            ask: None,
            redirects: 0,
            retry: None,
            not_before: None,
            bytes,
        };
        self.insert(op);
        self.dispatch_pending().await?;
        self.process_ready()?;
        // Commands waiting for a resend are bounded like the windows: stop taking new ones
        // until the backlog drains.
        let w = self.opts.window;
        while self.queue.len() > w.max_commands.max(1) || self.queue_bytes > w.max_bytes.max(1) {
            self.step().await?;
        }
        Ok(())
    }

    /// Puts `op` into the queue at its place by submission order.
    fn insert(&mut self, op: Op<T>) {
        let d = self.domain_of(op.route);
        self.dom_queued[d] += 1;
        self.queue_bytes += op.bytes;
        let at = self.queue.partition_point(|o| o.seq < op.seq);
        self.queue.insert(at, op);
    }

    fn take_queued(&mut self, i: usize) -> Option<Op<T>> {
        let op = self.queue.remove(i)?;
        let d = self.domain_of(op.route);
        self.dom_queued[d] = self.dom_queued[d].saturating_sub(1);
        self.queue_bytes -= op.bytes;
        Some(op)
    }

    /// Where a queued command goes now, or `None` when no master serves its slot.
    fn node_for(&mut self, route: Route, ask: Option<usize>) -> Option<usize> {
        if let Some(n) = ask {
            return Some(n);
        }
        if !self.cluster {
            return Some(self.node_index(&self.seed.host.clone(), self.seed.port));
        }
        let ep = match route {
            Route::Slot(s) => self.topology.master_for_slot(s)?,
            Route::Any => self.topology.masters().first()?,
        };
        let (host, port) = (ep.host.clone(), ep.port);
        Some(self.node_index(&host, port))
    }

    /// Sends every queued command that may go now (see the module documentation on ordering).
    async fn dispatch_pending(&mut self) -> Result<(), ClientError> {
        if self.queue.is_empty() {
            return Ok(());
        }
        self.maybe_refresh().await;
        let mut blocked = std::mem::take(&mut self.scratch);
        blocked.clear();
        let mut now = Instant::now();
        let mut i = 0;
        while i < self.queue.len() {
            let (route, ask, not_before) = {
                let op = &self.queue[i];
                (op.route, op.ask, op.not_before)
            };
            let d = self.domain_of(route);
            if blocked.contains(&d) || not_before.is_some_and(|t| t > now) {
                blocked.insert(d);
                i += 1;
                continue;
            }
            let Some(n) = self.node_for(route, ask) else {
                // No master serves the slot (a failover in progress): wait and re-read.
                self.stale = true;
                self.stats.retries += 1;
                let op = &mut self.queue[i];
                let delay = op
                    .retry
                    .get_or_insert_with(|| self.opts.retry.backoff())
                    .next_delay();
                match delay {
                    Some(delay) => op.not_before = Some(now + delay),
                    None => {
                        let e = ClientError::NoOwner {
                            endpoint: self.seed.to_string(),
                            slot: match route {
                                Route::Slot(s) => s,
                                Route::Any => 0,
                            },
                            command: op.describe(),
                            attempts: self.opts.retry.attempts,
                        };
                        self.scratch = blocked;
                        return Err(self.fail(e));
                    }
                }
                blocked.insert(d);
                i += 1;
                continue;
            };
            let node_waits = self.nodes[n].retry_at.is_some_and(|t| t > now);
            let other_node_busy = self.dom_inflight[d] > 0 && self.dom_node[d] as usize != n;
            if node_waits || other_node_busy {
                blocked.insert(d);
                i += 1;
                continue;
            }
            let Some(op) = self.take_queued(i) else { break };
            match self.dispatch_to(n, op).await {
                Ok(true) => {}
                Ok(false) => {
                    // A connection failed and its commands went back into the queue: start over.
                    blocked.clear();
                    now = Instant::now();
                    i = 0;
                }
                Err(e) => {
                    self.scratch = blocked;
                    return Err(e);
                }
            }
        }
        self.scratch = blocked;
        Ok(())
    }

    /// Sends `op` on node `n`'s connection (connecting first if needed). Returns false when a
    /// connection failed on the way: `op` and whatever was in flight are back in the queue.
    async fn dispatch_to(&mut self, n: usize, op: Op<T>) -> Result<bool, ClientError> {
        let node = &mut self.nodes[n];
        if node.reresolve && node.pipe.as_ref().is_none_or(|p| p.in_flight() == 0) {
            node.pipe = None;
            node.reresolve = false;
        }
        if self.nodes[n].pipe.is_none() {
            let ep = self.nodes[n].endpoint.clone();
            match Connection::connect(&ep, &self.opts.connect).await {
                Ok(conn) => {
                    if ep.sentinel.is_some() {
                        let now = conn.endpoint().address();
                        let before = self.nodes[n].master_at.replace(now.clone());
                        if before.as_ref().is_some_and(|b| *b != now) {
                            self.stats.failovers += 1;
                            if self.fail_on_master_change {
                                self.insert(op);
                                let err = ClientError::MasterChanged {
                                    endpoint: ep.to_string(),
                                    from: before.unwrap_or_default(),
                                    to: now,
                                };
                                return Err(self.fail(err));
                            }
                        }
                    }
                    let node = &mut self.nodes[n];
                    node.pipe = Some(Pipeline::new(conn, self.opts.window));
                    node.db = 0;
                    node.retry_at = None;
                }
                Err(e) if e.is_transient() => {
                    self.insert(op);
                    self.node_failed(n, e)?;
                    return Ok(false);
                }
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        let d = self.domain_of(op.route);
        let mut parts: Vec<Bytes> = Vec::with_capacity(2);
        if op.ask.is_some() {
            parts.push(Bytes::from_static(ASKING));
        }
        let unit = match &op.payload {
            Payload::One(c) => {
                parts.push(c.clone());
                op.ask.is_some()
            }
            Payload::Group { cmds, .. } => {
                parts.extend(cmds.iter().cloned());
                true
            }
        };
        let len: usize = parts.iter().map(Bytes::len).sum();
        let select = (self.nodes[n].db != op.db).then_some(op.db);
        // Wait for room here rather than inside the pipeline, so that a failure while waiting
        // leaves `op` in our hands to requeue.
        let room = async {
            let Some(pipe) = self.nodes[n].pipe.as_mut() else {
                return Ok(());
            };
            while !pipe.has_room(len + if select.is_some() { 32 } else { 0 }) {
                pipe.read_some().await?;
            }
            Ok::<(), NetError>(())
        };
        if let Err(e) = room.await {
            self.connection_lost(n, e, Some(op))?;
            return Ok(false);
        }
        let Some(pipe) = self.nodes[n].pipe.as_mut() else {
            self.insert(op);
            return Ok(false);
        };
        let mut sent = Ok(());
        if let Some(db) = select {
            let mut cmd = Vec::new();
            encode_command(&mut cmd, &["SELECT".to_string(), db.to_string()]);
            sent = pipe.submit(&cmd, Entry::Select(db)).await;
            self.nodes[n].db = db;
        }
        if sent.is_ok() {
            self.dom_inflight[d] += 1;
            self.dom_node[d] = n as u32;
            let Some(pipe) = self.nodes[n].pipe.as_mut() else {
                return Ok(false);
            };
            sent = if unit {
                let refs: Vec<&[u8]> = parts.iter().map(|b| &b[..]).collect();
                pipe.submit_unit(&refs, Entry::User(op)).await
            } else {
                pipe.submit(&parts[0], Entry::User(op)).await
            };
        } else {
            // The SELECT failed to go out; `op` never reached the pipeline.
            self.insert(op);
        }
        match sent {
            Ok(()) => Ok(true),
            Err(e) => {
                self.connection_lost(n, e, None)?;
                Ok(false)
            }
        }
    }

    /// A connect attempt to node `n` failed: wait before the next one, or give up.
    fn node_failed(&mut self, n: usize, e: NetError) -> Result<(), ClientError> {
        self.stats.reconnects += 1;
        if self.cluster {
            self.stale = true;
        }
        let node = &mut self.nodes[n];
        node.last_error = Some(e.to_string());
        match node.reconnect.next_delay() {
            Some(d) => {
                node.retry_at = Some(Instant::now() + d);
                Ok(())
            }
            None => {
                let err = ClientError::Unreachable {
                    endpoint: node.endpoint.to_string(),
                    attempts: node.reconnect.tried(),
                    last: e.to_string(),
                };
                Err(self.fail(err))
            }
        }
    }

    /// Node `n`'s connection failed. The replies that arrived are handled; the commands without
    /// a reply are requeued if all may be sent twice, else the target fails.
    fn connection_lost(
        &mut self,
        n: usize,
        e: NetError,
        unsent: Option<Op<T>>,
    ) -> Result<(), ClientError> {
        let Some(mut pipe) = self.nodes[n].pipe.take() else {
            if let Some(op) = unsent {
                self.insert(op);
            }
            return Ok(());
        };
        self.nodes[n].db = 0;
        while let Some((entry, reply)) = pipe.try_completion() {
            self.handle_reply(n, entry, reply)?;
        }
        let mut lost = Vec::new();
        for entry in pipe.take_unanswered() {
            if let Entry::User(op) = entry {
                let d = self.domain_of(op.route);
                self.dom_inflight[d] = self.dom_inflight[d].saturating_sub(1);
                lost.push(op);
            }
        }
        if !e.is_transient() {
            return Err(self.fail(e.into()));
        }
        if let Some(op) = lost.iter().find(|op| op.idem == Idempotent::No) {
            let err = ClientError::UnsafeResend {
                endpoint: self.nodes[n].endpoint.to_string(),
                command: op.describe(),
                unanswered: lost.len(),
                source: e,
            };
            return Err(self.fail(err));
        }
        self.stats.resent += lost.len() as u64;
        for op in lost.into_iter().chain(unsent) {
            self.insert(op);
        }
        self.node_failed(n, e)
    }

    /// Handles the replies every pipeline has read.
    fn process_ready(&mut self) -> Result<(), ClientError> {
        for n in 0..self.nodes.len() {
            loop {
                let Some(item) = self.nodes[n].pipe.as_mut().and_then(|p| p.try_completion())
                else {
                    break;
                };
                self.handle_reply(n, item.0, item.1)?;
            }
        }
        Ok(())
    }

    fn handle_reply(&mut self, n: usize, entry: Entry<T>, reply: Reply) -> Result<(), ClientError> {
        let mut op = match entry {
            Entry::User(op) => op,
            Entry::Select(db) => {
                return match reply.error() {
                    None => Ok(()),
                    Some(e) => {
                        let err = ClientError::Select {
                            endpoint: self.nodes[n].endpoint.to_string(),
                            db,
                            error: e.to_string(),
                        };
                        Err(self.fail(err))
                    }
                };
            }
        };
        let d = self.domain_of(op.route);
        self.dom_inflight[d] = self.dom_inflight[d].saturating_sub(1);
        self.nodes[n].reconnect.reset();
        // An ASK redirection holds for one attempt only.
        let reply = if op.ask.take().is_some() {
            strip_asking(reply, matches!(op.payload, Payload::One(_)))
        } else {
            reply
        };
        // READONLY is a failover on a cluster, and on a sentinel target too.
        let failover_aware = self.cluster || self.seed.sentinel.is_some();
        let outcome = match &op.payload {
            Payload::One(_) => classify(&reply, failover_aware),
            Payload::Group { transaction, .. } => {
                classify_group(&reply, *transaction, op.idem, failover_aware)
            }
        };
        if let Outcome::Retry { error, .. } = &outcome {
            if !self.cluster && error.starts_with("READONLY") {
                self.nodes[n].reresolve = true;
            }
        }
        let endpoint = || self.nodes[n].endpoint.to_string();
        match outcome {
            Outcome::Done => {
                self.stats.completed += 1;
                self.done.push_back((op.tag, reply));
            }
            Outcome::Partial(error) => {
                let err = ClientError::PartialGroup {
                    endpoint: endpoint(),
                    command: op.describe(),
                    error,
                };
                return Err(self.fail(err));
            }
            Outcome::Moved { .. } | Outcome::Ask { .. } if !self.cluster => {
                let err = ClientError::NotStandalone {
                    endpoint: endpoint(),
                    error: reply.error().unwrap_or_default().to_string(),
                };
                return Err(self.fail(err));
            }
            Outcome::Moved { slot, host, port } => {
                self.stats.moved += 1;
                self.redirected(n, &mut op, &reply)?;
                // A node that does not know its own address announces an empty host: it is
                // reachable where we reached the node that sent the redirection.
                let host = if host.is_empty() {
                    self.nodes[n].endpoint.host.clone()
                } else {
                    host
                };
                let to = self.node_index(&host, port);
                let ep = self.nodes[to].endpoint.clone();
                self.topology.set_owner(slot, &ep);
                self.stale = true;
                self.refresh_hint = Some(ep);
                self.insert(op);
            }
            Outcome::Ask { host, port } => {
                self.stats.asks += 1;
                self.redirected(n, &mut op, &reply)?;
                let host = if host.is_empty() {
                    self.nodes[n].endpoint.host.clone()
                } else {
                    host
                };
                op.ask = Some(self.node_index(&host, port));
                self.insert(op);
            }
            Outcome::Retry { error, refresh } => {
                self.stats.retries += 1;
                if refresh {
                    self.stale = true;
                }

                let delay = op
                    .retry
                    .get_or_insert_with(|| self.opts.retry.backoff())
                    .next_delay();
                match delay {
                    Some(delay) => op.not_before = Some(Instant::now() + delay),
                    None => {
                        let err = ClientError::Retries {
                            endpoint: endpoint(),
                            command: op.describe(),
                            attempts: self.opts.retry.attempts,
                            error,
                        };
                        return Err(self.fail(err));
                    }
                }
                self.insert(op);
            }
        }
        Ok(())
    }
}

impl<T: Send> Target<T> {
    /// Counts a redirection of `op`; fails past [`TargetOptions::max_redirects`]. Past a few
    /// hops the topology is evidently in motion: wait a little (the retry backoff) before the
    /// next one instead of bouncing between nodes at full speed.
    fn redirected(&mut self, n: usize, op: &mut Op<T>, reply: &Reply) -> Result<(), ClientError> {
        op.redirects += 1;
        if op.redirects > self.opts.max_redirects {
            let err = ClientError::Redirects {
                endpoint: self.nodes[n].endpoint.to_string(),
                command: op.describe(),
                redirects: op.redirects - 1,
                last: reply.error().unwrap_or_default().to_string(),
            };
            return Err(self.fail(err));
        }
        if op.redirects > 3 {
            if let Some(d) = op
                .retry
                .get_or_insert_with(|| self.opts.retry.backoff())
                .next_delay()
            {
                op.not_before = Some(Instant::now() + d);
            }
        }
        Ok(())
    }

    /// Re-reads the topology if a redirection or failure made it doubtful, at most every
    /// [`REFRESH_INTERVAL`]. Asks the node a MOVED pointed to first (it knows the newest state of
    /// that slot), then the known masters, then the seed. A failure leaves the old topology: the
    /// commands' own retry bounds decide when to give up.
    async fn maybe_refresh(&mut self) {
        if !self.cluster || !self.stale {
            return;
        }
        if self
            .last_refresh
            .is_some_and(|t| t.elapsed() < REFRESH_INTERVAL)
        {
            return;
        }
        self.last_refresh = Some(Instant::now());
        let mut candidates: Vec<Endpoint> = Vec::new();
        for ep in self
            .refresh_hint
            .take()
            .into_iter()
            .chain(self.topology.masters().iter().cloned())
            .chain(std::iter::once(self.seed.clone()))
        {
            if !candidates.iter().any(|c| same_addr(c, &ep)) {
                candidates.push(ep);
            }
        }
        let mut opts = self.opts.connect.clone();
        // A dead node must not stall the refresh for the full connect timeout.
        opts.connect_timeout = opts.connect_timeout.min(Duration::from_secs(2));
        opts.reply_timeout = Some(
            opts.reply_timeout
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(5)),
        );
        for ep in candidates {
            let Ok(mut conn) = Connection::connect(&ep, &opts).await else {
                continue;
            };
            if let Ok(t) = Topology::fetch(&mut conn).await {
                if t.slots_served() > 0 {
                    for m in t.masters() {
                        self.node_index(&m.host, m.port);
                    }
                    self.topology = t;
                    self.stale = false;
                    self.stats.refreshes += 1;
                    return;
                }
            }
        }
    }

    /// One round of progress: handle replies, send what may go, flush, then wait for a reply
    /// from any node or for the next retry time.
    async fn step(&mut self) -> Result<(), ClientError> {
        self.check_failed()?;
        self.process_ready()?;
        self.dispatch_pending().await?;
        // Everything buffered must be on the wire before waiting for replies to it, and waiting
        // on several pipelines at once is only cancel-safe when nothing is left to write.
        for n in 0..self.nodes.len() {
            let Some(pipe) = self.nodes[n].pipe.as_mut() else {
                continue;
            };
            if let Err(e) = pipe.flush().await {
                self.connection_lost(n, e, None)?;
            }
        }
        self.process_ready()?;
        let wake = self.next_wake();
        let any_in_flight = self
            .nodes
            .iter()
            .filter_map(|n| n.pipe.as_ref())
            .any(|p| p.in_flight() > 0);
        if !any_in_flight {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None if self.queue.is_empty() => return Ok(()),
                // Queued commands that nothing holds back went out in the dispatch above, so
                // this is not expected; a short sleep keeps it from becoming a busy loop that
                // would starve the runtime.
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        } else if let Some((n, e)) = self.wait_any(wake).await {
            self.connection_lost(n, e, None)?;
        }
        self.process_ready()?;
        self.dispatch_pending().await
    }

    /// The earliest future moment a queued command or a node becomes ready again.
    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let ops = self.queue.iter().filter_map(|o| o.not_before);
        let nodes = self.nodes.iter().filter_map(|n| n.retry_at);
        ops.chain(nodes).filter(|&t| t > now).min()
    }

    /// Waits until any node with commands in flight has replies (or fails), or until `wake`.
    /// Returns the node whose connection failed, with the error.
    async fn wait_any(&mut self, wake: Option<Instant>) -> Option<(usize, NetError)> {
        type ReadFut<'a> = Pin<Box<dyn Future<Output = Result<(), NetError>> + Send + 'a>>;
        let mut reads: Vec<(usize, ReadFut<'_>)> = self
            .nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, node)| {
                let pipe = node.pipe.as_mut().filter(|p| p.in_flight() > 0)?;
                Some((i, Box::pin(pipe.read_some()) as ReadFut<'_>))
            })
            .collect();
        let mut sleep = wake.map(|t| Box::pin(tokio::time::sleep_until(t.into())));
        poll_fn(|cx| {
            for (i, read) in reads.iter_mut() {
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    return Poll::Ready(r.err().map(|e| (*i, e)));
                }
            }
            if let Some(s) = sleep.as_mut() {
                if s.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// One request on a fresh connection to `ep`, retried while the answer is retryable.
async fn request_on<A: AsRef<[u8]>>(
    opts: &TargetOptions,
    cluster: bool,
    db: u64,
    ep: &Endpoint,
    argv: &[A],
) -> Result<Reply, ClientError> {
    let mut retry = opts.retry.backoff();
    let mut reconnect = opts.reconnect.backoff();
    let mut cmd = Vec::new();
    encode_command(&mut cmd, argv);
    loop {
        let attempt = async {
            let mut conn = Connection::connect(ep, &opts.connect).await?;
            if db != 0 {
                conn.request_ok(&["SELECT".to_string(), db.to_string()])
                    .await?;
            }
            conn.request(argv).await
        };
        match attempt.await {
            Ok(r) => match classify(&r, cluster) {
                Outcome::Retry { error, .. } => match retry.next_delay() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        return Err(ClientError::Retries {
                            endpoint: ep.to_string(),
                            command: describe_command(&cmd),
                            attempts: retry.tried(),
                            error,
                        })
                    }
                },
                _ => return Ok(r),
            },
            Err(e) if e.is_transient() => match reconnect.next_delay() {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    return Err(ClientError::Unreachable {
                        endpoint: ep.to_string(),
                        attempts: reconnect.tried(),
                        last: e.to_string(),
                    })
                }
            },
            Err(e) => return Err(e.into()),
        }
    }
}

fn same_addr(a: &Endpoint, b: &Endpoint) -> bool {
    a.host == b.host && a.port == b.port
}

/// Takes the ASKING reply off the front of a unit's replies.
fn strip_asking(reply: Reply, single: bool) -> Reply {
    match reply {
        Reply::Array(mut v) if !v.is_empty() => {
            v.remove(0);
            if single {
                v.pop().unwrap_or(Reply::Nil)
            } else {
                Reply::Array(v)
            }
        }
        other => other,
    }
}

/// What an error reply asks of the router. `cluster` decides READONLY: on a cluster it means the
/// node became a replica in a failover (re-read the topology and retry); on a standalone server
/// it is the caller's business.
fn classify(r: &Reply, cluster: bool) -> Outcome {
    let Some(e) = r.error() else {
        return Outcome::Done;
    };
    let mut words = e.split_ascii_whitespace();
    // The first word is the error code; match it exactly (BUSYKEY and BUSYGROUP are not BUSY).
    match words.next() {
        Some(code @ ("MOVED" | "ASK")) => {
            let slot = words.next().and_then(|s| s.parse::<u16>().ok());
            let addr = words.next().and_then(|a| a.rsplit_once(':'));
            let port = addr.and_then(|(_, p)| p.parse::<u16>().ok());
            match (slot, addr, port) {
                (Some(slot), Some((host, _)), Some(port)) if (slot as usize) < SLOTS => {
                    // IPv6 addresses may come bracketed.
                    let host = host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string();
                    if code == "MOVED" {
                        Outcome::Moved { slot, host, port }
                    } else {
                        Outcome::Ask { host, port }
                    }
                }
                // Unparsable: hand the error to the caller rather than guess.
                _ => Outcome::Done,
            }
        }
        Some("TRYAGAIN" | "LOADING" | "BUSY") => Outcome::Retry {
            error: e.to_string(),
            refresh: false,
        },
        Some("CLUSTERDOWN") => Outcome::Retry {
            error: e.to_string(),
            refresh: true,
        },
        Some("READONLY") if cluster => Outcome::Retry {
            error: e.to_string(),
            refresh: true,
        },
        _ => Outcome::Done,
    }
}

/// The outcome of a group: done unless one of its replies is a redirection or retryable; then
/// the group is redone whole if nothing in it ran (an aborted transaction, or every reply a
/// redirection/retryable) or it is idempotent.
fn classify_group(r: &Reply, transaction: bool, idem: Idempotent, cluster: bool) -> Outcome {
    let Some(replies) = r.as_array() else {
        return Outcome::Done;
    };
    let mut reason = None;
    let mut all_redirected = true;
    for reply in replies {
        match classify(reply, cluster) {
            Outcome::Done => all_redirected = false,
            o => {
                if reason.is_none() {
                    reason = Some(o);
                }
            }
        }
    }
    let Some(reason) = reason else {
        return Outcome::Done;
    };
    let exec_failed = transaction && replies.last().is_some_and(Reply::is_error);
    if exec_failed || all_redirected || idem == Idempotent::Yes {
        reason
    } else {
        let first = replies
            .iter()
            .find_map(|r| {
                r.error()
                    .filter(|_| !matches!(classify(r, cluster), Outcome::Done))
            })
            .unwrap_or_default();
        Outcome::Partial(first.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> Reply {
        Reply::Error(s.to_string())
    }

    #[test]
    fn classifies_error_codes_exactly() {
        assert!(matches!(
            classify(&err("MOVED 3999 127.0.0.1:6381"), true),
            Outcome::Moved { slot: 3999, ref host, port: 6381 } if host == "127.0.0.1"
        ));
        assert!(matches!(
            classify(&err("ASK 1 :7000"), true),
            Outcome::Ask { ref host, port: 7000 } if host.is_empty()
        ));
        assert!(matches!(
            classify(&err("MOVED 5 [::1]:7000"), true),
            Outcome::Moved { ref host, .. } if host == "::1"
        ));
        assert!(matches!(
            classify(&err("BUSY Redis is busy"), true),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(&err("BUSYKEY Target key name already exists."), true),
            Outcome::Done
        ));
        assert!(matches!(
            classify(&err("BUSYGROUP exists"), true),
            Outcome::Done
        ));
        assert!(matches!(
            classify(&err("READONLY replica"), true),
            Outcome::Retry { refresh: true, .. }
        ));
        assert!(matches!(
            classify(&err("READONLY replica"), false),
            Outcome::Done
        ));
        assert!(matches!(
            classify(&err("MOVED garbage"), true),
            Outcome::Done
        ));
        assert!(matches!(classify(&Reply::Int(1), true), Outcome::Done));
    }

    #[test]
    fn groups_redo_only_when_safe() {
        let ok = Reply::Status(Bytes::from_static(b"OK"));
        let moved = err("MOVED 1 h:1");
        let tx = Reply::Array(vec![
            ok.clone(),
            moved.clone(),
            err("EXECABORT Transaction discarded"),
        ]);
        assert!(matches!(
            classify_group(&tx, true, Idempotent::No, true),
            Outcome::Moved { .. }
        ));
        let plain = Reply::Array(vec![ok.clone(), err("TRYAGAIN")]);
        assert!(matches!(
            classify_group(&plain, false, Idempotent::No, true),
            Outcome::Partial(_)
        ));
        assert!(matches!(
            classify_group(&plain, false, Idempotent::Yes, true),
            Outcome::Retry { .. }
        ));
        let all = Reply::Array(vec![moved.clone(), moved]);
        assert!(matches!(
            classify_group(&all, false, Idempotent::No, true),
            Outcome::Moved { .. }
        ));
        let fine = Reply::Array(vec![ok, err("WRONGTYPE x")]);
        assert!(matches!(
            classify_group(&fine, false, Idempotent::No, true),
            Outcome::Done
        ));
    }
}

#[cfg(test)]
mod send_tests {
    use super::*;

    fn assert_send<F: Send>(_: &F) {}

    /// The apply layer spawns tasks that own a target: its futures must be `Send`.
    #[test]
    fn target_futures_are_send() {
        let _ = |t: &mut Target<u64>| {
            let f = t.submit(None, Bytes::new(), Idempotent::Yes, 1);
            assert_send(&f);
        };
        let _ = |t: &mut Target<u64>| assert_send(&t.next_completion());
        let _ = |t: &mut Target<u64>| assert_send(&t.flush_all());
        let _ = |t: &mut Target<u64>| assert_send(&t.broadcast(&["DBSIZE"]));
        let _ = |e: &Endpoint| assert_send(&Target::<u64>::connect(e, TargetOptions::default()));
    }
}
