//! Talking to the servers for a preflight: connecting to one side (every master of a cluster),
//! reading INFO and CONFIG, and asking whether a command may run without running it. Nothing
//! here writes: the commands sent are PING, INFO, CONFIG GET, COMMAND INFO, ACL DRYRUN, FUNCTION
//! LIST, CLUSTER SHARDS/SLOTS, SELECT, SCAN, TYPE, EXISTS, and (on 6.x only, see [`access`]) a
//! MULTI that is always DISCARDed.

use std::collections::HashMap;
use std::time::Instant;

use crate::client::{ClientError, Topology, SLOTS};
use crate::net::{ConnectOptions, Connection, Endpoint, NetError};
use crate::resp::Reply;

use super::report::{Check, Report};
use super::verdict::{bytes as human, parse_u64};

/// One node that answered.
pub(crate) struct Node {
    pub endpoint: Endpoint,
    pub conn: Connection,
    /// `INFO` (the default sections); empty when INFO is refused.
    pub info: HashMap<String, String>,
    pub info_at: Instant,
}

impl Node {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.info.get(field).map(String::as_str)
    }

    pub fn num(&self, field: &str) -> Option<u64> {
        self.get(field).and_then(parse_u64)
    }

    /// The ACL user this connection is logged in as (what AUTH used; `default` without one).
    pub fn user(&self) -> &str {
        self.endpoint.user.as_deref().unwrap_or("default")
    }

    /// `CONFIG GET name`, or why it could not be read.
    pub async fn config(&mut self, name: &str) -> Result<String, String> {
        let r = self
            .conn
            .request(&["CONFIG", "GET", name])
            .await
            .map_err(|e| e.to_string())?;
        if let Some(e) = r.error() {
            return Err(format!("CONFIG GET {name} refused: {e}"));
        }
        r.as_array()
            .and_then(|a| a.get(1))
            .and_then(Reply::as_text)
            .ok_or_else(|| format!("CONFIG GET {name}: no such setting"))
    }

    /// "Valkey 9.1.2" / "Redis 7.0.15", from INFO server.
    pub fn product(&self) -> String {
        match (self.get("valkey_version"), self.get("redis_version")) {
            (Some(v), _) => format!("Valkey {v}"),
            (None, Some(v)) => format!("Redis {v}"),
            (None, None) => "a server that hides INFO".into(),
        }
    }

    /// (major, minor) of the server's own version.
    pub fn version(&self) -> Option<(u32, u32)> {
        let v = self.get("valkey_version").or(self.get("redis_version"))?;
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    pub fn is_valkey(&self) -> bool {
        self.get("valkey_version").is_some()
            || self
                .get("server_name")
                .is_some_and(|n| n.eq_ignore_ascii_case("valkey"))
    }

    /// Re-reads INFO (for rates: a second sample).
    pub async fn refresh(&mut self) -> Result<(), String> {
        let r = self
            .conn
            .request(&["INFO"])
            .await
            .map_err(|e| e.to_string())?;
        if let Some(text) = r.as_text() {
            self.info = crate::net::parse_info(&text);
            self.info_at = Instant::now();
        }
        Ok(())
    }
}

/// One side of a run (the source or the target server), connected.
pub(crate) struct Side {
    pub role: &'static str,
    pub seed: Endpoint,
    pub cluster: bool,
    pub topology: Option<Topology>,
    /// The masters (one node when standalone).
    pub nodes: Vec<Node>,
}

impl Side {
    pub fn name(&self, topic: &str) -> String {
        format!("{}.{topic}", self.role)
    }

    /// "" for a standalone server, " on HOST:PORT" for a cluster node, for messages.
    pub fn at(&self, i: usize) -> String {
        if self.cluster {
            format!(" on {}", self.nodes[i].endpoint.address())
        } else {
            String::new()
        }
    }

    /// The sum of an INFO number over the nodes that report it.
    pub fn sum(&self, field: &str) -> Option<u64> {
        let v: Vec<u64> = self.nodes.iter().filter_map(|n| n.num(field)).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }

    /// Keys (and keys with a TTL) per database, summed over the masters (INFO keyspace).
    pub fn keyspace(&self) -> std::collections::BTreeMap<u64, DbStats> {
        let mut out = std::collections::BTreeMap::new();
        for n in &self.nodes {
            for (k, v) in &n.info {
                let Some(db) = k.strip_prefix("db").and_then(|d| d.parse::<u64>().ok()) else {
                    continue;
                };
                let e: &mut DbStats = out.entry(db).or_default();
                for part in v.split(',') {
                    if let Some((name, val)) = part.split_once('=') {
                        let val = val.parse::<u64>().unwrap_or(0);
                        match name {
                            "keys" => e.keys += val,
                            "expires" => e.expires += val,
                            // Redis 7.4+ / Valkey 9: keys holding hash fields with TTLs.
                            "subexpiry" | "keys_with_volatile_items" => {
                                e.field_ttls = Some(e.field_ttls.unwrap_or(0) + val)
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        out
    }

    pub fn info_refused(&self) -> bool {
        self.nodes.iter().any(|n| n.info.is_empty())
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DbStats {
    pub keys: u64,
    pub expires: u64,
    pub field_ttls: Option<u64>,
}

/// Connects to `seed` and logs in, then asks PING (a server that wants a password lets the
/// connection in and refuses the first command). Errors come back as (found, advice).
async fn open(
    role: &str,
    seed: &Endpoint,
    opts: &ConnectOptions,
) -> Result<Connection, (String, String)> {
    let env = format!("SHAKE_{}_PASSWORD", role.to_ascii_uppercase());
    let mut conn = Connection::connect(seed, opts).await.map_err(|e| {
        let advice = match &e {
            NetError::Auth { .. } => format!(
                "check the user and password (redis://user:password@host, or {env}); an ACL user needs `on` and the right password"
            ),
            NetError::Tls { .. } => "give the CA that signed the server's certificate with --tls-ca (or, for tests only, --tls-insecure)".into(),
            NetError::Connect { .. } | NetError::Timeout { .. } => {
                "check the host and port, that the server runs, and that no firewall is in the way".into()
            }
            _ => "check the URL (rediss:// for a TLS port)".into(),
        };
        (e.to_string(), advice)
    })?;
    match conn.request(&["PING"]).await {
        Err(e) => Err((
            e.to_string(),
            "check the URL (rediss:// for a TLS port)".into(),
        )),
        Ok(r) => match r.error() {
            Some(e) if e.starts_with("NOAUTH") || e.starts_with("WRONGPASS") => Err((
                format!("{seed}: the server requires a password: {e}"),
                format!("give it in the URL (redis://[user]:password@host) or in {env}"),
            )),
            _ => Ok(conn),
        },
    }
}

async fn read_info(conn: &mut Connection) -> Result<HashMap<String, String>, String> {
    let r = conn.request(&["INFO"]).await.map_err(|e| e.to_string())?;
    match r.error() {
        // A user without +info: the checks that need INFO say they could not look.
        Some(e) if e.starts_with("NOPERM") => Ok(HashMap::new()),
        Some(e) => Err(format!("INFO failed: {e}")),
        None => Ok(crate::net::parse_info(&r.as_text().unwrap_or_default())),
    }
}

/// Connects to one side: the seed, and every master when it is a cluster (`cluster`: forced, or
/// `None` to detect from INFO). Pushes `ROLE.connect` (and `ROLE.slots` for a cluster); `None`
/// when nothing usable was reached.
pub(crate) async fn connect_side(
    report: &mut Report,
    role: &'static str,
    seed: &Endpoint,
    cluster: Option<bool>,
    opts: &ConnectOptions,
) -> Option<Side> {
    let name = format!("{role}.connect");
    let mut conn = match open(role, seed, opts).await {
        Ok(c) => c,
        Err((found, advice)) => {
            report.push(Check::fail(name, found, advice));
            return None;
        }
    };
    let info = match read_info(&mut conn).await {
        Ok(i) => i,
        Err(e) => {
            report.push(Check::fail(
                name,
                format!("{seed}: {e}"),
                "check that this is a Redis or Valkey server",
            ));
            return None;
        }
    };
    let is_cluster = match cluster {
        Some(c) => c,
        None if !info.is_empty() => info.get("cluster_enabled").map(String::as_str) == Some("1"),
        // INFO refused: ask for the topology; "cluster support disabled" means standalone.
        None => !matches!(
            Topology::fetch(&mut conn).await,
            Err(ClientError::NotCluster { .. })
        ),
    };
    let mut seed_node = Some(Node {
        endpoint: seed.clone(),
        conn,
        info,
        info_at: Instant::now(),
    });
    let mut nodes = Vec::new();
    let mut unreachable = Vec::new();
    let mut topology = None;
    if is_cluster {
        let topo = match Topology::fetch(&mut seed_node.as_mut()?.conn).await {
            Ok(t) => t,
            Err(e) => {
                report.push(Check::fail(
                    name,
                    e.to_string(),
                    "point at a cluster node, or drop --cluster to treat it as a standalone server",
                ));
                return None;
            }
        };
        for m in topo.masters() {
            if m.address() == seed.address() {
                if let Some(n) = seed_node.take() {
                    nodes.push(n);
                    continue;
                }
            }
            match open(role, m, opts).await {
                Ok(mut c) => match read_info(&mut c).await {
                    Ok(info) => nodes.push(Node {
                        endpoint: m.clone(),
                        conn: c,
                        info,
                        info_at: Instant::now(),
                    }),
                    Err(e) => unreachable.push(format!("{}: {e}", m.address())),
                },
                Err((found, _)) => unreachable.push(found),
            }
        }
        topology = Some(topo);
    } else {
        nodes.extend(seed_node.take());
    }
    let Some(first) = nodes.first() else {
        report.push(Check::fail(
            name,
            format!(
                "{seed}: no master of the cluster could be reached: {}",
                unreachable.join("; ")
            ),
            "the cluster announces addresses this machine cannot reach (NAT or containers?): check cluster-announce-ip and the network",
        ));
        return None;
    };
    let shape = match &topology {
        Some(t) => format!("cluster of {} masters", t.masters().len()),
        None => "standalone".into(),
    };
    let auth = match (&seed.user, &seed.password) {
        (Some(u), Some(_)) => format!("AUTH as {u} accepted"),
        (None, Some(_)) => "AUTH accepted".into(),
        _ => "no password".into(),
    };
    let tls = if !seed.tls {
        "no TLS".to_string()
    } else if opts.tls.insecure {
        "TLS NOT verified (--tls-insecure)".to_string()
    } else {
        match &opts.tls.ca_file {
            Some(f) => format!("TLS verified against {}", f.display()),
            None => "TLS verified against the system's CAs".into(),
        }
    };
    let rdb = crate::rdb::writer::TargetFormat::from_info(&first.info)
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    let found = format!("{seed}: {}{rdb}, {shape}, {auth}, {tls}", first.product());
    let side = Side {
        role,
        seed: seed.clone(),
        cluster: is_cluster,
        topology,
        nodes,
    };
    if !unreachable.is_empty() {
        report.push(Check::fail(
            name,
            format!("{found}; unreachable masters: {}", unreachable.join("; ")),
            "every master must be reachable from here: check cluster-announce-ip / the network, and that each node has the same password",
        ));
    } else if seed.tls && opts.tls.insecure {
        report.push(Check::warn(
            name,
            found,
            "the server's identity is not checked: give its CA with --tls-ca",
        ));
    } else if side.info_refused() {
        report.push(Check::warn(
            name,
            format!("{found}; INFO is refused to this user, so most checks cannot look"),
            "grant +info to the user for a complete preflight",
        ));
    } else {
        report.push(Check::ok(name, found));
    }
    if let Some(t) = &side.topology {
        slots_check(report, &side, t);
    }
    Some(side)
}

/// `ROLE.slots`: every slot has a master. A target with a hole refuses the keys of those slots;
/// a source with a hole is a broken cluster whose keys there (if any) cannot be read.
fn slots_check(report: &mut Report, side: &Side, t: &Topology) {
    let served = t.slots_served();
    let name = side.name("slots");
    if served == SLOTS {
        report.push(Check::ok(
            name,
            format!("all {SLOTS} slots served by {} masters", t.masters().len()),
        ));
        return;
    }
    let mut holes: Vec<(usize, usize)> = Vec::new();
    for s in 0..SLOTS {
        if t.master_for_slot(s as u16).is_none() {
            match holes.last_mut() {
                Some(h) if h.1 + 1 == s => h.1 = s,
                _ => holes.push((s, s)),
            }
        }
    }
    let list: Vec<String> = holes
        .iter()
        .take(5)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let more = if holes.len() > 5 { ", ..." } else { "" };
    let found = format!(
        "{} of {SLOTS} slots have no master (slots {}{more})",
        SLOTS - served,
        list.join(", ")
    );
    let advice = "assign the slots (redis-cli --cluster fix, or CLUSTER ADDSLOTS) before the run";
    if side.role == "target" {
        report.push(Check::fail(
            name,
            format!("{found}: keys of those slots cannot be written"),
            advice,
        ));
    } else {
        report.push(Check::warn(
            name,
            format!("{found}: keys there, if any, cannot be read"),
            advice,
        ));
    }
}

/// Whether a command may run, learned without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    Allowed,
    /// The ACL refuses it (the server's message).
    Denied(String),
    /// No such command: renamed away or disabled.
    Missing,
    /// Could not tell (why).
    Unknown(String),
}

/// Is `argv` (a command and sample arguments) available to this connection's user?
///
/// 1. `COMMAND INFO name`: a nil entry means the command does not exist under this name (a
///    renamed-away or disabled command; a renamed one is found under its new name).
/// 2. `ACL DRYRUN user argv...` (Redis 7.0+, Valkey): `OK`, or the reason it would be refused.
/// 3. Where ACL DRYRUN does not exist (6.0, 6.2): `MULTI`, the command, `DISCARD`. The ACL is
///    checked before a command is queued, so the reply is `+QUEUED` or `-NOPERM`, and DISCARD
///    throws the queued command away. The command is sent only once MULTI has said OK, so it
///    can never run. (7.0+ refuses replication commands inside MULTI before looking at the ACL,
///    which is why this is the 6.x path only.)
/// 4. Servers before 6.0 have no ACL: an existing command is allowed.
pub(crate) async fn access(node: &mut Node, argv: &[&str]) -> Access {
    // 6.x: ACL DRYRUN does not exist, and a user without +acl gets NOPERM before the server
    // even looks for the subcommand.
    let before_7 = !node.is_valkey() && node.version().is_some_and(|v| v < (7, 0));
    let conn = &mut node.conn;
    let cmd = argv[0];
    let mut exists = None;
    match conn.request(&["COMMAND", "INFO", cmd]).await {
        Err(e) => return Access::Unknown(e.to_string()),
        Ok(r) => {
            if let Some(a) = r.as_array() {
                match a.first() {
                    Some(Reply::Nil) => return Access::Missing,
                    Some(Reply::Array(_)) => exists = Some(true),
                    _ => {}
                }
            }
        }
    }
    let user = node
        .endpoint
        .user
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut dry = vec!["ACL", "DRYRUN", user.as_str()];
    dry.extend_from_slice(argv);
    let r = match conn.request(&dry).await {
        Ok(r) => r,
        Err(e) => return Access::Unknown(e.to_string()),
    };
    match &r {
        Reply::Status(_) => return Access::Allowed,
        Reply::Bulk(b) => return Access::Denied(String::from_utf8_lossy(b).into_owned()),
        Reply::Error(e) => {
            let lower = e.to_ascii_lowercase();
            if lower.contains("not found") && lower.contains("command") {
                return Access::Missing;
            }
            if e.starts_with("NOPERM") && !before_7 {
                return match exists {
                    Some(true) => Access::Unknown(format!(
                        "the command exists, but the user may not run ACL DRYRUN to check its permissions ({e})"
                    )),
                    _ => Access::Unknown(e.clone()),
                };
            }
            if lower.contains("unknown command") {
                // No ACL at all (before 6.0): whoever is logged in may run what exists.
                return match exists {
                    Some(true) => Access::Allowed,
                    _ => Access::Unknown("neither COMMAND INFO nor ACL answered".into()),
                };
            }
            // "Unknown subcommand" or NOPERM on 6.0 / 6.2, which have ACLs but no DRYRUN.
        }
        _ => return Access::Unknown(format!("unexpected reply to ACL DRYRUN: {r}")),
    }
    match conn.request(&["MULTI"]).await {
        Ok(Reply::Status(s)) if &s[..] == b"OK" => {}
        Ok(r) => {
            return Access::Unknown(format!(
                "ACL DRYRUN does not exist here and MULTI was refused ({r})"
            ))
        }
        Err(e) => return Access::Unknown(e.to_string()),
    }
    let queued = conn.request(argv).await;
    let _ = conn.request(&["DISCARD"]).await;
    match queued {
        Ok(Reply::Status(s)) if &s[..] == b"QUEUED" => Access::Allowed,
        Ok(Reply::Error(e)) if e.starts_with("NOPERM") => Access::Denied(e),
        Ok(Reply::Error(e)) if e.to_ascii_lowercase().contains("unknown command") => {
            Access::Missing
        }
        Ok(r) => Access::Unknown(format!("{r}")),
        Err(e) => Access::Unknown(e.to_string()),
    }
}

/// `used_memory_dataset` (4.0+) or `used_memory`, summed over the masters.
pub(crate) fn dataset_bytes(side: &Side) -> Option<u64> {
    side.sum("used_memory_dataset").or(side.sum("used_memory"))
}

/// For messages: "12.0 MiB".
pub(crate) fn mem(b: u64) -> String {
    human(b)
}
