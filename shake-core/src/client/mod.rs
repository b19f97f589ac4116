//! The client side of shake-core: writing to a target (and finding a source's masters) at speed.
//!
//! - [`topology`]: is this a cluster ([`is_cluster`]), which master serves which hash slot
//!   (`CLUSTER SHARDS`, or `CLUSTER SLOTS` before 7.0), every master of a cluster
//!   ([`discover_masters`]).
//! - [`pipeline`]: [`Pipeline`], one connection with many commands in flight inside a bounded
//!   window, every reply matched to its command.
//! - [`target`]: [`Target`], the one API for writing to a standalone server or a cluster:
//!   routing by slot, MOVED/ASK, bounded retries and reconnects, ordering per slot.
//!
//! Connections, URLs, TLS, AUTH and the backoff schedule live in [`crate::net`]; RESP in
//! [`crate::resp`]. This module builds on them and parses neither RESP nor URLs itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shake_core::client::ClientError> {
//! use shake_core::client::{Idempotent, Target, TargetOptions};
//! use shake_core::net::Endpoint;
//! use shake_core::resp::encode_command;
//!
//! let ep = Endpoint::parse("redis://127.0.0.1:7000").expect("url");
//! let mut target: Target<u64> = Target::connect(&ep, TargetOptions::default()).await?;
//! for i in 0..1000u64 {
//!     let key = format!("key:{i}");
//!     let mut cmd = Vec::new();
//!     encode_command(&mut cmd, &["SET", key.as_str(), "v"]);
//!     target.submit(Some(key.as_bytes()), cmd, Idempotent::Yes, i).await?;
//!     while let Some((i, reply)) = target.try_completion() {
//!         if let Some(e) = reply.error() { eprintln!("key:{i}: {e}"); }
//!     }
//! }
//! for (i, reply) in target.drain().await? {
//!     if let Some(e) = reply.error() { eprintln!("key:{i}: {e}"); }
//! }
//! # Ok(()) }
//! ```

pub mod pipeline;
pub mod target;
pub mod topology;

pub use crate::resp::describe_command;
pub use pipeline::{Pipeline, PipelineOptions};
pub use target::{Idempotent, RetryPolicy, Target, TargetOptions, TargetStats};
pub use topology::{
    cluster_databases, discover_masters, discover_share, is_cluster, Topology, SLOTS,
};

use crate::net::NetError;

/// The hash slot of a key, as `CLUSTER KEYSLOT` computes it (hash tags included).
pub fn slot_of(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

/// What can go wrong talking to a target. Every message names the endpoint, and the command
/// (and key) involved where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{endpoint} is not a cluster node (cluster support is disabled there), but cluster mode was asked for (a --cluster, --source-cluster or --target-cluster flag, or type = \"cluster\" / cluster = true in a --config file): leave that out to let the mode be detected, or point at a cluster")]
    NotCluster { endpoint: String },
    #[error("{endpoint} answered {error:?}: it is a cluster node, but the target was opened as a standalone server; let the cluster be detected or force cluster mode")]
    NotStandalone { endpoint: String, error: String },
    #[error("{endpoint}: cannot read the cluster topology: {message}")]
    Topology { endpoint: String, message: String },
    #[error("{}", cluster_db_message(endpoint, *db, *databases))]
    ClusterDb {
        endpoint: String,
        db: u64,
        /// How many databases the cluster has (`cluster-databases`; 1 but on Valkey 9+).
        databases: u64,
    },
    #[error("{endpoint}: SELECT {db} failed: {error}")]
    Select {
        endpoint: String,
        db: u64,
        error: String,
    },
    #[error("slot {slot} is out of range (0-16383)")]
    BadSlot { slot: u16 },
    #[error("{endpoint}: connection lost with {unanswered} command(s) unanswered, among them {command}, which is not safe to send twice (it may or may not have been applied), so nothing was resent: {source}")]
    UnsafeResend {
        endpoint: String,
        command: String,
        unanswered: usize,
        source: NetError,
    },
    #[error("{endpoint}: unreachable after {attempts} reconnect attempts: {last}")]
    Unreachable {
        endpoint: String,
        attempts: u32,
        last: String,
    },
    #[error("{endpoint}: {command} still failing after {attempts} retries: {error}")]
    Retries {
        endpoint: String,
        command: String,
        attempts: u32,
        error: String,
    },
    #[error("{endpoint}: {command} was redirected {redirects} times (last: {last}); the cluster's slots keep moving")]
    Redirects {
        endpoint: String,
        command: String,
        redirects: u32,
        last: String,
    },
    #[error("cluster of {endpoint}: no master serves slot {slot} (for {command}) after {attempts} retries; is the cluster down or are slots unassigned?")]
    NoOwner {
        endpoint: String,
        slot: u16,
        command: String,
        attempts: u32,
    },
    #[error("{endpoint}: {command} failed part-way ({error}) after some of its group had run; not resent since it is not idempotent")]
    PartialGroup {
        endpoint: String,
        command: String,
        error: String,
    },
    #[error("{endpoint}: the master changed from {from} to {to} (a Sentinel failover); what the old master acknowledged last may not have reached the new one")]
    MasterChanged {
        endpoint: String,
        from: String,
        to: String,
    },
    #[error("target {endpoint} is unusable after an earlier error: {error}")]
    Failed { endpoint: String, error: String },
}

/// The one phrasing of "this cluster has no database `db`", for every tool.
pub fn cluster_db_message(endpoint: &str, db: u64, databases: u64) -> String {
    if databases <= 1 {
        format!("{endpoint} is a cluster, which has only database 0, not {db}: map databases with --db-map (e.g. --db-map '*=0' to merge them all, or --db 0 to take only database 0)")
    } else {
        format!("{endpoint} is a cluster with databases 0-{} (cluster-databases {databases}), not {db}: map databases with --db-map", databases - 1)
    }
}
