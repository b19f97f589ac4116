//! `--source-replica`: which node a source master's replication link reads from. A replica
//! carries its master's stream verbatim (same replication id, same offsets), so a link can
//! read from one and spare the master the fork of a full sync and the output buffer of one more
//! replica, while every position it records (replication id, offset) stays valid on the master
//! and on its other replicas: moving between them is a partial resync.
//!
//! A replica is *healthy* for a link when its own `INFO replication` says
//!
//! - `role:slave`, `master_link_status:up` and `master_sync_in_progress:0` (it is streaming
//!   from its master, not loading a snapshot);
//! - `master_replid` equal to the master's (it replicates this master's history, not a stale
//!   one of before a failover);
//! - for a link that resumes from a checkpoint: it can continue from there, as the master could
//!   (the checkpoint's replication id is its `master_replid`, or its `master_replid2` up to
//!   `second_repl_offset`; its backlog holds the offset; and it is not behind it, since a node
//!   asked for an offset it has not reached answers with a full sync). A replica a little
//!   behind is given [`CATCH_UP`] to reach it.
//!
//! Of the healthy ones, the one furthest ahead (highest offset) is taken; when none is, the
//! master, with the reasons. The candidates are the replicas a cluster's topology lists for the
//! master ([`crate::client::Topology::replicas_of`]: `CLUSTER SHARDS` nodes not `health:
//! fail`, or `CLUSTER SLOTS` entries), or, for a standalone source, the `slaveN:` lines with
//! `state=online` of the master's `INFO replication` (at the `ip` and `port` the master shows).
//! Every candidate is reached with the master's login (user, password, TLS).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::net::{ConnectOptions, Connection, Endpoint};
use crate::repl::Resume;

/// How long a replica behind a link's checkpoint is waited for before the master is taken.
pub const CATCH_UP: Duration = Duration::from_secs(2);

/// A candidate that does not answer within this long is passed over.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a link reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// This replica of the master, at this replication offset when it was asked.
    Replica { node: Endpoint, offset: u64 },
    /// The master: no replica would do, for the reasons given.
    Master { why: String },
    /// The node given as the master is itself a replica (a standalone source named by a
    /// replica's address): it is read as given.
    GivenIsReplica,
}

/// Chooses the node to read `master`'s stream from (see the module docs). `listed`: the
/// replicas a cluster topology names for it; `None` for a standalone source (then the master's
/// own `INFO replication` lists them). `resume`: where the link continues from, if it resumes.
pub async fn choose(
    master: &Endpoint,
    listed: Option<&[Endpoint]>,
    resume: Option<&Resume>,
    connect: &ConnectOptions,
) -> Choice {
    let opts = probe_options(connect);
    let info = match Connection::connect(master, &opts).await {
        Ok(mut c) => c.info("replication").await,
        Err(e) => Err(e),
    };
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            return Choice::Master {
                why: format!("the master did not answer INFO replication: {e}"),
            }
        }
    };
    if info.get("role").map(String::as_str) == Some("slave") {
        if listed.is_none() {
            return Choice::GivenIsReplica;
        }
        return Choice::Master {
            why: format!("{} is not a master now", master.address()),
        };
    }
    let Some(master_replid) = info.get("master_replid").cloned() else {
        return Choice::Master {
            why: "the master's INFO replication has no master_replid".into(),
        };
    };
    let candidates: Vec<Endpoint> = match listed {
        Some(l) => l.to_vec(),
        None => standalone_replicas(master, &info),
    };
    if candidates.is_empty() {
        return Choice::Master {
            why: "the master has no replica".into(),
        };
    }
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let mut best: Option<(Endpoint, u64)> = None;
        let mut reasons = Vec::new();
        let mut behind = false;
        for c in &candidates {
            match judge(c, &master_replid, resume, &opts).await {
                Ok(offset) => {
                    if best.as_ref().is_none_or(|(_, o)| offset > *o) {
                        best = Some((c.clone(), offset));
                    }
                }
                Err(Unfit::Behind(why)) => {
                    behind = true;
                    reasons.push(why);
                }
                Err(Unfit::Other(why)) => reasons.push(why),
            }
        }
        if let Some((node, offset)) = best {
            return Choice::Replica { node, offset };
        }
        if !behind || Instant::now() >= deadline {
            return Choice::Master {
                why: reasons.join("; "),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The connect options for asking candidates: a dead replica must not hold a link's start.
fn probe_options(connect: &ConnectOptions) -> ConnectOptions {
    ConnectOptions {
        connect_timeout: connect.connect_timeout.min(PROBE_TIMEOUT),
        reply_timeout: Some(
            connect
                .reply_timeout
                .unwrap_or(PROBE_TIMEOUT)
                .min(PROBE_TIMEOUT),
        ),
        tls: connect.tls.clone(),
    }
}

/// The online replicas a master's `INFO replication` lists (`slaveN:ip=..,port=..,state=online,
/// offset=..,lag=..`), in its order.
fn standalone_replicas(master: &Endpoint, info: &HashMap<String, String>) -> Vec<Endpoint> {
    let mut lines: Vec<(u32, &String)> = info
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("slave")?.parse::<u32>().ok()?, v)))
        .collect();
    lines.sort_by_key(|(i, _)| *i);
    lines
        .into_iter()
        .filter_map(|(_, v)| {
            let f: HashMap<&str, &str> = v.split(',').filter_map(|p| p.split_once('=')).collect();
            if f.get("state") != Some(&"online") {
                return None;
            }
            let port = f.get("port")?.parse::<u16>().ok().filter(|&p| p != 0)?;
            let ip = f
                .get("ip")
                .copied()
                .filter(|h| !h.is_empty() && *h != "?")?;
            Some(master.with_address(ip, port))
        })
        .collect()
}

enum Unfit {
    /// It could serve the link once it has caught up with the checkpoint.
    Behind(String),
    Other(String),
}

/// A candidate's replication offset if it is healthy for the link, else why not.
async fn judge(
    node: &Endpoint,
    master_replid: &str,
    resume: Option<&Resume>,
    opts: &ConnectOptions,
) -> Result<u64, Unfit> {
    let at = node.address();
    let info = match Connection::connect(node, opts).await {
        Ok(mut c) => c.info("replication").await,
        Err(e) => Err(e),
    }
    .map_err(|e| Unfit::Other(format!("{at} did not answer ({e})")))?;
    let get = |k: &str| info.get(k).map(String::as_str).unwrap_or("?");
    let num = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok());
    if get("role") != "slave" {
        return Err(Unfit::Other(format!(
            "{at} is not a replica (role:{})",
            get("role")
        )));
    }
    if get("master_link_status") != "up" {
        return Err(Unfit::Other(format!(
            "{at}: master_link_status:{}",
            get("master_link_status")
        )));
    }
    if get("master_sync_in_progress") != "0" {
        return Err(Unfit::Other(format!(
            "{at} is taking a full sync from its master"
        )));
    }
    if get("master_replid") != master_replid {
        return Err(Unfit::Other(format!(
            "{at} has replication id {}, the master {master_replid}",
            get("master_replid")
        )));
    }
    let Some(offset) = num("master_repl_offset").or_else(|| num("slave_repl_offset")) else {
        return Err(Unfit::Other(format!(
            "{at}: INFO replication has no replication offset"
        )));
    };
    if let Some(r) = resume {
        let history = get("master_replid") == r.replid
            || (get("master_replid2") == r.replid
                && num("second_repl_offset").is_some_and(|s| r.offset < s));
        if !history {
            return Err(Unfit::Other(format!(
                "{at} does not hold replication id {} of the checkpoint",
                r.replid
            )));
        }
        if r.offset > offset {
            return Err(Unfit::Behind(format!(
                "{at} is at offset {offset}, behind the checkpoint's {}",
                r.offset
            )));
        }
        let first = num("repl_backlog_first_byte_offset").unwrap_or(u64::MAX);
        if get("repl_backlog_active") != "1" || r.offset + 1 < first {
            return Err(Unfit::Other(format!(
                "{at}'s backlog does not hold the checkpoint's offset {}",
                r.offset
            )));
        }
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_lines_online_only_in_order() {
        let master = Endpoint::parse("redis://u:pw@10.0.0.1:6379").unwrap();
        let info = crate::net::parse_info(
            "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
             slave1:ip=10.0.0.3,port=6381,state=online,offset=90,lag=0\r\n\
             slave0:ip=10.0.0.2,port=6380,state=wait_bgsave,offset=0,lag=0\r\n\
             slave2:ip=10.0.0.4,port=6382,state=online,offset=95,lag=1\r\n\
             master_replid:abc\r\n",
        );
        let r = standalone_replicas(&master, &info);
        let addrs: Vec<String> = r.iter().map(Endpoint::address).collect();
        assert_eq!(addrs, ["10.0.0.3:6381", "10.0.0.4:6382"]);
        assert_eq!(r[0].password.as_deref(), Some("pw"));
    }
}
