//! Cluster topology: whether a server is a cluster node, which master serves which hash slot
//! (from `CLUSTER SHARDS` on 7.0+, `CLUSTER SLOTS` on older servers), the list of masters, and
//! each master's replicas (what `--source-replica` chooses from: [`crate::replica`]).
//!
//! Node addresses come from the server and are not always usable: a node may announce an empty
//! host or `?` (it does not know its own address, e.g. behind NAT or with
//! `cluster-preferred-endpoint-type unknown-endpoint`). Those nodes are reached at the host of the
//! node that was asked, which is what redis-cli does too. Every node gets the login (user,
//! password, TLS) of the endpoint we asked.

use crate::net::{ConnectOptions, Connection, Endpoint, NetError};
use crate::resp::Reply;

use super::ClientError;

/// The number of hash slots of a Redis cluster.
pub const SLOTS: usize = 16384;

/// `slot_owner` value for a slot no master serves.
const UNASSIGNED: u16 = u16::MAX;

/// Which master serves each of the 16384 slots.
#[derive(Clone)]
pub struct Topology {
    /// The masters that serve at least one slot, ordered by their first slot.
    masters: Vec<Endpoint>,
    /// For each slot, an index into `masters`, or `UNASSIGNED`.
    slot_owner: Vec<u16>,
    /// `replicas[i]`: the replicas the reply listed for `masters[i]` (`CLUSTER SHARDS`: those
    /// whose `health` is not `fail`; `CLUSTER SLOTS` lists no health).
    replicas: Vec<Vec<Endpoint>>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (i, e) in self.masters.iter().enumerate() {
            m.entry(&e.address(), &self.ranges_of(i));
        }
        m.finish()
    }
}

impl Topology {
    /// Asks `conn` for the topology: `CLUSTER SHARDS`, or `CLUSTER SLOTS` when the server does not
    /// know SHARDS (before 7.0). Fails when the server is not a cluster node.
    pub async fn fetch(conn: &mut Connection) -> Result<Topology, ClientError> {
        let asked = conn.endpoint().clone();
        let reply = conn.request(&["CLUSTER", "SHARDS"]).await?;
        let topo = match reply.error() {
            None => Topology::from_shards(&reply, &asked),
            Some(e) if is_cluster_disabled(e) => {
                return Err(ClientError::NotCluster {
                    endpoint: asked.to_string(),
                })
            }
            // Older servers: "ERR unknown subcommand 'SHARDS'" (the wording varies by version).
            Some(_) => {
                let reply = conn.request(&["CLUSTER", "SLOTS"]).await?;
                match reply.error() {
                    None => Topology::from_slots(&reply, &asked),
                    Some(e) if is_cluster_disabled(e) => {
                        return Err(ClientError::NotCluster {
                            endpoint: asked.to_string(),
                        })
                    }
                    Some(e) => Err(format!("CLUSTER SLOTS failed: {e}")),
                }
            }
        };
        topo.map_err(|message| ClientError::Topology {
            endpoint: asked.to_string(),
            message,
        })
    }

    /// Builds the topology from a `CLUSTER SHARDS` reply (RESP2: an array of shards, each a flat
    /// list of name/value pairs with `slots` as a flat list of range bounds and `nodes` as a list
    /// of flat name/value lists).
    pub fn from_shards(reply: &Reply, asked: &Endpoint) -> Result<Topology, String> {
        let shards = reply
            .as_array()
            .ok_or("CLUSTER SHARDS did not return an array")?;
        let mut b = Builder::new();
        for shard in shards {
            let shard = pairs(shard).ok_or("CLUSTER SHARDS: a shard is not a list of pairs")?;
            let slots = field(&shard, "slots")
                .and_then(Reply::as_array)
                .ok_or("CLUSTER SHARDS: a shard has no slots list")?;
            let nodes = field(&shard, "nodes")
                .and_then(Reply::as_array)
                .ok_or("CLUSTER SHARDS: a shard has no nodes list")?;
            if slots.is_empty() {
                continue; // a master without slots holds no data and serves no key
            }
            let master = nodes
                .iter()
                .filter_map(pairs)
                .find(|n| field(n, "role").and_then(Reply::as_text).as_deref() == Some("master"))
                .ok_or("CLUSTER SHARDS: a shard with slots has no master")?;
            let node =
                shard_node(&master, asked).ok_or("CLUSTER SHARDS: a master has no usable port")?;
            if slots.len() % 2 != 0 {
                return Err("CLUSTER SHARDS: odd number of slot bounds".into());
            }
            for range in slots.chunks(2) {
                b.assign(&node, slot_of(&range[0])?, slot_of(&range[1])?)?;
            }
            for n in nodes.iter().filter_map(pairs) {
                let text = |name: &str| field(&n, name).and_then(Reply::as_text);
                // A failed replica is left out. `loading` is not: Redis 7.0 says it of any
                // replica whose offset it last heard as 0, which is every replica of a master
                // not written to since it synced. The replica's own INFO decides
                // (crate::replica).
                if text("role").as_deref() == Some("replica")
                    && text("health").is_none_or(|h| h != "fail" && h != "failed")
                {
                    if let Some(r) = shard_node(&n, asked) {
                        b.replica(&node, r);
                    }
                }
            }
        }
        Ok(b.finish())
    }

    /// Builds the topology from a `CLUSTER SLOTS` reply: an array of
    /// `[first, last, [host, port, id, ...], replicas...]`.
    pub fn from_slots(reply: &Reply, asked: &Endpoint) -> Result<Topology, String> {
        let ranges = reply
            .as_array()
            .ok_or("CLUSTER SLOTS did not return an array")?;
        let mut b = Builder::new();
        for range in ranges {
            let r = range
                .as_array()
                .filter(|r| r.len() >= 3)
                .ok_or("CLUSTER SLOTS: a range entry is too short")?;
            let master = r[2]
                .as_array()
                .filter(|m| m.len() >= 2)
                .ok_or("CLUSTER SLOTS: a range has no master")?;
            // An empty host means "the node you are talking to" (7.0+); "?" means unknown.
            let host = master[0].as_text().filter(|h| usable_host(h));
            let port = master[1]
                .as_int()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .ok_or("CLUSTER SLOTS: a master has no usable port")?;
            let node = asked.with_address(host.as_deref().unwrap_or(&asked.host), port);
            b.assign(&node, slot_of(&r[0])?, slot_of(&r[1])?)?;
            // Each further entry is a replica: `[host, port, id, ...]`.
            for rep in &r[3..] {
                let Some(rep) = rep.as_array().filter(|m| m.len() >= 2) else {
                    continue;
                };
                let host = rep[0].as_text().filter(|h| usable_host(h));
                if let Some(port) = rep[1]
                    .as_int()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|&p| p != 0)
                {
                    b.replica(
                        &node,
                        asked.with_address(host.as_deref().unwrap_or(&asked.host), port),
                    );
                }
            }
        }
        Ok(b.finish())
    }

    /// A topology where one node serves every slot (used for tests and single-node clusters).
    pub fn single(node: Endpoint) -> Topology {
        Topology {
            masters: vec![node],
            slot_owner: vec![0; SLOTS],
            replicas: vec![Vec::new()],
        }
    }

    /// Records that `node` serves `slot` (what a MOVED reply says), ahead of the next full
    /// refresh.
    pub fn set_owner(&mut self, slot: u16, node: &Endpoint) {
        if slot as usize >= SLOTS {
            return;
        }
        let i = match self
            .masters
            .iter()
            .position(|m| m.host == node.host && m.port == node.port)
        {
            Some(i) => i,
            None => {
                self.masters.push(node.clone());
                self.replicas.push(Vec::new());
                self.masters.len() - 1
            }
        };
        self.slot_owner[slot as usize] = i as u16;
    }

    /// The masters serving at least one slot, ordered by their first slot.
    pub fn masters(&self) -> &[Endpoint] {
        &self.masters
    }

    /// The replicas listed for `master` (by address; none for a node that is not one of
    /// [`Topology::masters`]).
    pub fn replicas_of(&self, master: &Endpoint) -> &[Endpoint] {
        self.masters
            .iter()
            .position(|m| m.host == master.host && m.port == master.port)
            .and_then(|i| self.replicas.get(i))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The master serving `slot`, if any.
    pub fn master_for_slot(&self, slot: u16) -> Option<&Endpoint> {
        let i = *self.slot_owner.get(slot as usize)?;
        self.masters.get(i as usize)
    }

    /// How many slots have a master (16384 when the cluster covers every slot).
    pub fn slots_served(&self) -> usize {
        self.slot_owner.iter().filter(|&&o| o != UNASSIGNED).count()
    }

    /// The first slot the `i`th master serves.
    pub fn first_slot(&self, i: usize) -> Option<u16> {
        self.slot_owner
            .iter()
            .position(|&o| o as usize == i)
            .map(|s| s as u16)
    }

    /// The masters `shard` takes (see [`crate::shard`]), ordered by their first slot.
    pub fn share(&self, shard: crate::shard::Shard) -> Vec<Endpoint> {
        (0..self.masters.len())
            .filter(|&i| shard.takes(self.first_slot(i)))
            .map(|i| self.masters[i].clone())
            .collect()
    }

    /// The slot ranges of the `i`th master.
    pub fn ranges_of(&self, i: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (slot, &o) in self.slot_owner.iter().enumerate() {
            if o as usize == i {
                let slot = slot as u16;
                match out.last_mut() {
                    Some(last) if last.1 + 1 == slot => last.1 = slot,
                    _ => out.push((slot, slot)),
                }
            }
        }
        out
    }
}

/// Collects slot ranges per node, keeping nodes in order of first appearance, then sorts the
/// masters by their first slot so the order does not depend on the reply's order.
struct Builder {
    masters: Vec<Endpoint>,
    slot_owner: Vec<u16>,
    replicas: Vec<Vec<Endpoint>>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            masters: Vec::new(),
            slot_owner: vec![UNASSIGNED; SLOTS],
            replicas: Vec::new(),
        }
    }

    /// `replica` replicates `master`, which [`Builder::assign`] has seen.
    fn replica(&mut self, master: &Endpoint, replica: Endpoint) {
        if let Some(i) = self
            .masters
            .iter()
            .position(|m| m.host == master.host && m.port == master.port)
        {
            let list = &mut self.replicas[i];
            if !list
                .iter()
                .any(|r| r.host == replica.host && r.port == replica.port)
            {
                list.push(replica);
            }
        }
    }

    fn assign(&mut self, node: &Endpoint, first: u16, last: u16) -> Result<(), String> {
        if first > last || last as usize >= SLOTS {
            return Err(format!("bad slot range {first}-{last}"));
        }
        let i = match self
            .masters
            .iter()
            .position(|m| m.host == node.host && m.port == node.port)
        {
            Some(i) => i,
            None => {
                self.masters.push(node.clone());
                self.replicas.push(Vec::new());
                self.masters.len() - 1
            }
        };
        for s in first..=last {
            self.slot_owner[s as usize] = i as u16;
        }
        Ok(())
    }

    fn finish(self) -> Topology {
        let first_slot = |i: usize| {
            self.slot_owner
                .iter()
                .position(|&o| o as usize == i)
                .unwrap_or(SLOTS)
        };
        let mut order: Vec<usize> = (0..self.masters.len()).collect();
        order.sort_by_key(|&i| first_slot(i));
        let mut remap = vec![UNASSIGNED; self.masters.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old] = new as u16;
        }
        let slot_owner = self
            .slot_owner
            .iter()
            .map(|&o| {
                if o == UNASSIGNED {
                    o
                } else {
                    remap[o as usize]
                }
            })
            .collect();
        let masters = order.iter().map(|&i| self.masters[i].clone()).collect();
        let replicas = order.iter().map(|&i| self.replicas[i].clone()).collect();
        Topology {
            masters,
            slot_owner,
            replicas,
        }
    }
}

/// The address of a node of a `CLUSTER SHARDS` shard, with the login of `asked`.
/// `endpoint` honours cluster-preferred-endpoint-type (ip, hostname or "?"); `ip` is the
/// fallback when it is unknown, and `asked`'s host when both are.
fn shard_node(node: &[(String, &Reply)], asked: &Endpoint) -> Option<Endpoint> {
    let text = |name: &str| field(node, name).and_then(Reply::as_text);
    let int = |name: &str| field(node, name).and_then(Reply::as_int);
    let host = [text("endpoint"), text("ip")]
        .into_iter()
        .flatten()
        .find(|h| usable_host(h));
    let port = if asked.tls {
        int("tls-port").or_else(|| int("port"))
    } else {
        int("port").or_else(|| int("tls-port"))
    };
    let port = port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)?;
    Some(asked.with_address(host.as_deref().unwrap_or(&asked.host), port))
}

/// A host a client can connect to: not empty, not `?` (unknown endpoint), not `0.0.0.0`.
fn usable_host(h: &str) -> bool {
    !h.is_empty() && h != "?" && h != "0.0.0.0" && h != "::"
}

fn slot_of(r: &Reply) -> Result<u16, String> {
    r.as_int()
        .and_then(|s| u16::try_from(s).ok())
        .filter(|&s| (s as usize) < SLOTS)
        .ok_or_else(|| format!("bad slot number {r}"))
}

/// A flat name/value list (RESP2's form of a map) as pairs.
fn pairs(r: &Reply) -> Option<Vec<(String, &Reply)>> {
    let items = r.as_array()?;
    if items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|kv| Some((kv[0].as_text()?, &kv[1])))
        .collect()
}

fn field<'a>(pairs: &[(String, &'a Reply)], name: &str) -> Option<&'a Reply> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn is_cluster_disabled(err: &str) -> bool {
    err.contains("cluster support disabled")
}

/// Whether the server behind `conn` runs in cluster mode (`INFO cluster` says
/// `cluster_enabled:1`).
pub async fn is_cluster(conn: &mut Connection) -> Result<bool, NetError> {
    let info = conn.info("cluster").await?;
    Ok(info.get("cluster_enabled").map(String::as_str) == Some("1"))
}

/// How many databases a cluster node offers: Valkey 9's `cluster-databases` (`CONFIG GET`), 1
/// where the setting does not exist (Redis, Valkey before 9) or CONFIG is refused (renamed or
/// disabled on managed services: then only database 0 is assumed, which is always there).
pub async fn cluster_databases(conn: &mut Connection) -> Result<u64, NetError> {
    let reply = conn
        .request(&["CONFIG", "GET", "cluster-databases"])
        .await?;
    let n = match &reply {
        Reply::Array(items) => items.get(1).and_then(Reply::as_text),
        _ => None,
    };
    Ok(n.and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1))
}

/// Every master of the cluster that `seed` belongs to, each with the seed's login (user,
/// password, TLS), ordered by the first slot it serves. Masters that serve no slot hold no data
/// and are left out. Fails with [`ClientError::NotCluster`] when the seed is not a cluster node.
pub async fn discover_masters(
    seed: &Endpoint,
    opts: &ConnectOptions,
) -> Result<Vec<Endpoint>, ClientError> {
    Ok(discover_share(seed, opts, crate::shard::Shard::WHOLE)
        .await?
        .0)
}

/// [`discover_masters`], of `shard`'s share only; with the number of masters in the cluster.
pub async fn discover_share(
    seed: &Endpoint,
    opts: &ConnectOptions,
    shard: crate::shard::Shard,
) -> Result<(Vec<Endpoint>, usize), ClientError> {
    let mut conn = Connection::connect(seed, opts).await?;
    let topo = Topology::fetch(&mut conn).await?;
    if topo.masters.is_empty() {
        return Err(ClientError::Topology {
            endpoint: seed.to_string(),
            message: "the cluster has no master serving any slot".into(),
        });
    }
    Ok((topo.share(shard), topo.masters.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn node(ip: &str, endpoint: &str, port: i64, role: &str) -> Reply {
        Reply::Array(vec![
            b("id"),
            b("abc"),
            b("port"),
            Reply::Int(port),
            b("ip"),
            b(ip),
            b("endpoint"),
            b(endpoint),
            b("role"),
            b(role),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Reply>) -> Reply {
        Reply::Array(vec![
            b("slots"),
            Reply::Array(slots.iter().map(|&s| Reply::Int(s)).collect()),
            b("nodes"),
            Reply::Array(nodes),
        ])
    }

    #[test]
    fn shards_with_unknown_endpoints_use_the_asked_host() {
        let seed = Endpoint::parse("redis://u:pw@10.0.0.9:7000").unwrap();
        let reply = Reply::Array(vec![
            shard(
                &[10923, 16383],
                vec![
                    node("10.0.0.3", "10.0.0.3", 7002, "replica"),
                    node("", "?", 7003, "master"),
                ],
            ),
            shard(
                &[0, 100, 200, 10922],
                vec![node("10.0.0.1", "h1", 7001, "master")],
            ),
            shard(&[], vec![node("10.0.0.5", "10.0.0.5", 7005, "master")]),
        ]);
        let t = Topology::from_shards(&reply, &seed).unwrap();
        let addrs: Vec<String> = t.masters().iter().map(Endpoint::address).collect();
        assert_eq!(addrs, ["h1:7001", "10.0.0.9:7003"]);
        assert_eq!(t.masters()[1].password.as_deref(), Some("pw"));
        assert_eq!(t.master_for_slot(150), None);
        assert_eq!(t.master_for_slot(16383).unwrap().port, 7003);
        assert_eq!(t.ranges_of(0), vec![(0, 100), (200, 10922)]);
        let reps: Vec<String> = t
            .replicas_of(&t.masters()[1])
            .iter()
            .map(Endpoint::address)
            .collect();
        assert_eq!(reps, ["10.0.0.3:7002"]);
        assert!(t.replicas_of(&t.masters()[0]).is_empty());
    }

    #[test]
    fn shards_leave_out_failed_replicas() {
        let seed = Endpoint::parse("redis://10.0.0.9:7000").unwrap();
        let with_health = |port: i64, role: &str, health: &str| {
            let Reply::Array(mut v) = node("10.0.0.1", "10.0.0.1", port, role) else {
                unreachable!()
            };
            v.push(b("health"));
            v.push(b(health));
            Reply::Array(v)
        };
        let reply = Reply::Array(vec![shard(
            &[0, 16383],
            vec![
                with_health(7001, "master", "online"),
                with_health(7002, "replica", "loading"),
                with_health(7003, "replica", "online"),
                with_health(7004, "replica", "fail"),
            ],
        )]);
        let t = Topology::from_shards(&reply, &seed).unwrap();
        let reps: Vec<u16> = t
            .replicas_of(&t.masters()[0])
            .iter()
            .map(|e| e.port)
            .collect();
        assert_eq!(reps, [7002, 7003]);
    }

    #[test]
    fn slots_reply_with_empty_host() {
        let seed = Endpoint::parse("redis://10.0.0.9:7000").unwrap();
        let entry = |a: i64, z: i64, host: &str, port: i64| {
            Reply::Array(vec![
                Reply::Int(a),
                Reply::Int(z),
                Reply::Array(vec![b(host), Reply::Int(port), b("id")]),
            ])
        };
        let Reply::Array(mut with_replica) = entry(0, 7999, "10.0.0.2", 7002) else {
            unreachable!()
        };
        with_replica.push(Reply::Array(vec![
            b("10.0.0.3"),
            Reply::Int(7003),
            b("id3"),
        ]));
        let reply = Reply::Array(vec![
            entry(8000, 16383, "", 7001),
            Reply::Array(with_replica),
        ]);
        let t = Topology::from_slots(&reply, &seed).unwrap();
        let addrs: Vec<String> = t.masters().iter().map(Endpoint::address).collect();
        assert_eq!(addrs, ["10.0.0.2:7002", "10.0.0.9:7001"]);
        let reps: Vec<String> = t
            .replicas_of(&t.masters()[0])
            .iter()
            .map(Endpoint::address)
            .collect();
        assert_eq!(reps, ["10.0.0.3:7003"]);
        assert!(t.replicas_of(&t.masters()[1]).is_empty());
        assert_eq!(t.slots_served(), SLOTS);
        assert!(Topology::from_slots(&Reply::Array(vec![entry(5, 99999, "h", 1)]), &seed).is_err());
    }
}
