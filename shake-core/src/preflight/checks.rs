//! The checks themselves: source checks (a replication or SCAN source), target checks (a write
//! target) and pairing checks (this source's data into this target). Each pushes one line.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::apply::{ApplyOptions, ConflictPolicy, DbMap};
use crate::client::slot_of;
use crate::net::Endpoint;
use crate::rdb::writer::{FieldTtlPolicy, TargetFormat};
use crate::rdb::{types as t, Header, ValueType};
use crate::resp::Reply;

use super::probe::{access, dataset_bytes, mem, Access, Node, Side};
use super::report::{Check, Report, Status};
use super::verdict::{self as v, bytes, rate};

/// What the run does with its source: decides which source checks apply and how strict they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// shake-dump: one full sync, `REPLCONF rdb-only` (no backlog, no output buffer on 6.2+).
    Dump,
    /// shake-sync: a full sync, then the stream; resumes need PSYNC and the backlog.
    Sync,
    /// shake-rump: SCAN + DUMP, no replication.
    Rump,
    /// shake-check: reads keys.
    Check,
}

/// What the pairing checks need to know about the source, from a server or from RDB files.
#[derive(Debug, Default)]
pub(crate) struct SourceData {
    /// What it is, for messages: "the source" or "dump.rdb".
    pub what: String,
    /// Each RDB format the data comes in, with the encodings it uses (files: seen; a server:
    /// what its version writes).
    pub formats: Vec<(Header, BTreeSet<u8>)>,
    /// True when `formats` lists encodings actually seen (files), not just possible ones.
    pub exact: bool,
    pub field_ttl_keys: Option<u64>,
    pub functions: Option<u64>,
    /// Keys per source database, after the filter.
    pub dbs: BTreeMap<u64, u64>,
    /// Memory the data needs: the source's dataset, or the files' size (`from_file`).
    pub bytes: Option<u64>,
    pub from_file: bool,
    /// Some keys of the source, (db, key), for the conflict check.
    pub sample: Vec<(u64, Vec<u8>)>,
}

// ---- source ----------------------------------------------------------------------------------

/// Worst of several per-node results, for a one-line verdict over a cluster's masters.
fn worst(side: &Side, name: String, results: Vec<(Status, String, String)>) -> Check {
    let n = results.len();
    let (status, found, advice) = results.into_iter().max_by_key(|r| r.0).unwrap_or((
        Status::Ok,
        "no master answered".into(),
        String::new(),
    ));
    let found = if side.cluster && n > 1 {
        format!("{found} (worst of {n} masters)")
    } else {
        found
    };
    Check::new(name, status, found, advice)
}

/// `source.replication`: PSYNC (or its configured name) and REPLCONF are there and allowed,
/// asked without starting a sync.
pub(crate) async fn replication(
    report: &mut Report,
    side: &mut Side,
    purpose: Purpose,
    psync: &str,
) {
    let mut results = Vec::new();
    for i in 0..side.nodes.len() {
        let at = side.at(i);
        let node = &mut side.nodes[i];
        let user = node.user().to_string();
        let r = match access(node, &[psync, "?", "-1"]).await {
            Access::Allowed => match access(node, &["REPLCONF", "listening-port", "0"]).await {
                Access::Denied(m) => (
                    Status::Fail,
                    format!("user {user} may run {psync} but not REPLCONF{at}: {m}"),
                    format!("grant it: ACL SETUSER {user} +replconf"),
                ),
                _ if psync.eq_ignore_ascii_case("PSYNC") => (
                    Status::Ok,
                    format!("PSYNC and REPLCONF available to user {user}{at}"),
                    String::new(),
                ),
                // Redis and Valkey tell PSYNC from SYNC by the name the command was called
                // with, so under another name it answers as SYNC (seen: no +FULLRESYNC line).
                _ if purpose == Purpose::Sync => (
                    Status::Warn,
                    format!("{psync} (a renamed PSYNC) available to user {user}{at}; a renamed PSYNC answers as SYNC on Redis and Valkey, so a dropped link or a restart means a new full sync"),
                    "plan for full syncs after every interruption, unless the provider's renamed command answers +FULLRESYNC/+CONTINUE".into(),
                ),
                _ => (
                    Status::Ok,
                    format!("{psync} (a renamed PSYNC) and REPLCONF available to user {user}{at}"),
                    String::new(),
                ),
            },
            Access::Missing => match access(node, &["SYNC"]).await {
                Access::Allowed => {
                    let found = format!("{psync} does not exist{at} (renamed or disabled), SYNC does");
                    if purpose == Purpose::Sync {
                        (Status::Warn, format!("{found}: every interruption means a new full sync (SYNC cannot resume)"), "if the provider renamed PSYNC, name it with --psync-command".into())
                    } else {
                        (Status::Ok, format!("{found}: the dump uses SYNC"), String::new())
                    }
                }
                Access::Denied(m) => (
                    Status::Fail,
                    format!("{psync} does not exist{at} and user {user} may not run SYNC: {m}"),
                    format!("grant +sync +replconf to {user}, name a renamed PSYNC with --psync-command, or copy with shake-rump"),
                ),
                Access::Missing => (
                    Status::Fail,
                    format!("neither {psync} nor SYNC exists{at}: replication is renamed away or disabled (managed services often do this)"),
                    "copy with shake-rump (SCAN + DUMP/RESTORE), or, if the provider renamed PSYNC, name it with --psync-command".into(),
                ),
                Access::Unknown(why) => (
                    Status::Warn,
                    format!("{psync} does not exist{at}; whether SYNC may run is unknown: {why}"),
                    "the run will tell; if it is refused, copy with shake-rump".into(),
                ),
            },
            Access::Denied(m) => (
                Status::Fail,
                format!("user {user} may not run {psync}{at}: {m}"),
                format!("grant it: ACL SETUSER {user} +psync +replconf +sync; or copy with shake-rump"),
            ),
            Access::Unknown(why) => (
                Status::Warn,
                format!("could not tell without starting a sync whether {psync} is allowed{at}: {why}"),
                "the run will tell; if replication is refused, copy with shake-rump".into(),
            ),
        };
        results.push(r);
    }
    report.push(worst(side, side.name("replication"), results));
}

/// `source.scan`: the commands a SCAN + DUMP copy needs.
pub(crate) async fn rump_access(report: &mut Report, side: &mut Side) {
    let mut results = Vec::new();
    for i in 0..side.nodes.len() {
        let at = side.at(i);
        let node = &mut side.nodes[i];
        let user = node.user().to_string();
        let mut bad = Vec::new();
        let mut unknown = Vec::new();
        for argv in [&["SCAN", "0"][..], &["DUMP", "k"], &["PTTL", "k"]] {
            match access(node, argv).await {
                Access::Allowed => {}
                Access::Denied(m) => bad.push(format!("{}: {m}", argv[0])),
                Access::Missing => bad.push(format!("{} does not exist", argv[0])),
                Access::Unknown(w) => unknown.push(format!("{}: {w}", argv[0])),
            }
        }
        results.push(if !bad.is_empty() {
            (
                Status::Fail,
                format!("user {user} cannot copy keys{at}: {}", bad.join("; ")),
                format!("grant them: ACL SETUSER {user} +scan +dump +pttl"),
            )
        } else if !unknown.is_empty() {
            (
                Status::Warn,
                format!("could not verify{at}: {}", unknown.join("; ")),
                "the run will tell".into(),
            )
        } else {
            (
                Status::Ok,
                format!("SCAN, DUMP and PTTL available to user {user}{at}"),
                String::new(),
            )
        });
    }
    report.push(worst(side, side.name("scan"), results));
}

/// The write rate of each node: two INFO samples about a second apart. The replication offset
/// counts exactly the bytes written, but moves only while a backlog exists; otherwise
/// `instantaneous_input_kbps` (all input, reads too) is an upper bound.
pub(crate) async fn write_rates(side: &mut Side) -> Vec<(f64, &'static str)> {
    let before: Vec<_> = side
        .nodes
        .iter()
        .map(|n| (n.num("master_repl_offset"), n.info_at))
        .collect();
    if let Some(oldest) = before.iter().map(|b| b.1).min() {
        let waited = oldest.elapsed();
        if waited < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1) - waited).await;
        }
    }
    let mut out = Vec::new();
    for (n, (off0, at0)) in side.nodes.iter_mut().zip(before) {
        let _ = n.refresh().await;
        let dt = n.info_at.duration_since(at0).as_secs_f64().max(0.001);
        let backlog = n.get("repl_backlog_active") == Some("1");
        match (backlog, off0, n.num("master_repl_offset")) {
            (true, Some(a), Some(b)) if b >= a => {
                out.push(((b - a) as f64 / dt, "replication offset"))
            }
            _ => {
                let kbps: f64 = n
                    .get("instantaneous_input_kbps")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0);
                out.push((kbps * 1024.0, "input traffic, an upper bound"))
            }
        }
    }
    out
}

/// Servers that know `REPLCONF rdb-only` (6.2+, every Valkey) keep no backlog or output buffer
/// for a dump.
fn knows_rdb_only(n: &Node) -> bool {
    n.is_valkey() || n.version().is_some_and(|v| v >= (6, 2))
}

/// `source.backlog`: how long a disconnection a partial resync survives.
pub(crate) fn backlog(report: &mut Report, side: &Side, purpose: Purpose, rates: &[(f64, &str)]) {
    let mut results = Vec::new();
    for (i, (n, &(r, how))) in side.nodes.iter().zip(rates).enumerate() {
        let at = side.at(i);
        let Some(size) = n.num("repl_backlog_size") else {
            results.push((
                Status::Warn,
                format!("repl-backlog-size unknown{at} (INFO replication refused)"),
                "check it yourself: it must hold the writes of the longest interruption to resume"
                    .into(),
            ));
            continue;
        };
        let found = if r < 1024.0 {
            format!(
                "repl-backlog-size {}{at}; the source is idle: under 1 KiB/s ({how})",
                bytes(size)
            )
        } else {
            format!(
                "repl-backlog-size {}{at} holds {:.0} s of writes at {} ({how})",
                bytes(size),
                size as f64 / r,
                rate(r)
            )
        };
        if purpose != Purpose::Sync {
            results.push((
                Status::Ok,
                format!("{found}; a dump does not need it"),
                String::new(),
            ));
        } else if r < 1024.0 || size as f64 / r >= v::BACKLOG_OK_SECS {
            results.push((Status::Ok, found, String::new()));
        } else {
            let want = ((r * 300.0) as u64).div_ceil(1 << 20).max(1);
            results.push((
                Status::Warn,
                format!("{found}: a longer interruption forces a new full sync"),
                format!("raise it to hold a few minutes of writes: CONFIG SET repl-backlog-size {want}mb"),
            ));
        }
    }
    report.push(worst(side, side.name("backlog"), results));
}

/// `source.output-buffer`: the replica class of `client-output-buffer-limit` against the writes
/// the source takes while a full sync runs (it buffers them for the replica; a full buffer cuts
/// the link and the sync starts over).
pub(crate) async fn output_buffer(
    report: &mut Report,
    side: &mut Side,
    purpose: Purpose,
    rates: &[(f64, &str)],
    dual_channel: bool,
) {
    let mut results = Vec::new();
    for i in 0..side.nodes.len() {
        let at = side.at(i);
        let (r, how) = rates.get(i).copied().unwrap_or((0.0, "unknown"));
        let n = &mut side.nodes[i];
        if purpose == Purpose::Dump && knows_rdb_only(n) {
            results.push((
                Status::Ok,
                format!("not used by a dump{at}: with REPLCONF rdb-only the source buffers no writes for it"),
                String::new(),
            ));
            continue;
        }
        if dual_channel && offers_two_connections(n).await {
            results.push((
                Status::Ok,
                format!("not used by the full sync{at}: the source offers it over two connections (Valkey dual-channel replication / Redis RDB channel), and the writes made meanwhile wait in shake-sync's --spool-dir (up to --spool-max)"),
                String::new(),
            ));
            continue;
        }
        let limit = match n.config("client-output-buffer-limit").await {
            Ok(c) => c,
            Err(e) => {
                results.push((
                    Status::Warn,
                    format!("replica output buffer limit unknown{at}: {e}"),
                    "check client-output-buffer-limit (replica class) yourself: it must hold the writes made during a full sync".into(),
                ));
                continue;
            }
        };
        let Some((hard, soft, soft_secs)) = v::replica_buffer_limit(&limit) else {
            results.push((
                Status::Warn,
                format!("no replica class in client-output-buffer-limit {limit:?}{at}"),
                "check it yourself".into(),
            ));
            continue;
        };
        let diskless = n.config("repl-diskless-sync").await.ok().as_deref() == Some("yes");
        let delay = if diskless {
            n.config("repl-diskless-sync-delay")
                .await
                .ok()
                .and_then(|d| v::parse_u64(&d))
                .unwrap_or(0)
        } else {
            0
        };
        let data = n
            .num("used_memory_dataset")
            .or(n.num("used_memory"))
            .unwrap_or(0);
        let secs = v::sync_seconds(data, delay);
        let need = (r * secs) as u64;
        let limits = if hard == 0 && soft == 0 {
            "no limit".to_string()
        } else {
            format!(
                "hard {}, soft {} for {soft_secs} s",
                if hard == 0 {
                    "none".into()
                } else {
                    bytes(hard)
                },
                if soft == 0 {
                    "none".into()
                } else {
                    bytes(soft)
                }
            )
        };
        let found = format!(
            "replica output buffer{at}: {limits}; writes at {} ({how}) during a full sync estimated at {secs:.0} s ({} of data) add up to {}",
            rate(r),
            mem(data),
            bytes(need)
        );
        let status = v::output_buffer_status(r, secs, hard, soft, soft_secs);
        let advice = match status {
            Status::Ok => String::new(),
            _ => format!(
                "raise the limit before the run, e.g. CONFIG SET client-output-buffer-limit \"replica {} {} 60\" (or \"replica 0 0 0\": no limit), or run when the source is quieter",
                (need * 4).max(64 << 20).div_ceil(1 << 20).to_string() + "mb",
                (need * 2).max(32 << 20).div_ceil(1 << 20).to_string() + "mb"
            ),
        };
        let found = if status == Status::Fail {
            format!("{found}: the full sync would be cut")
        } else {
            found
        };
        results.push((status, found, advice));
    }
    report.push(worst(side, side.name("output-buffer"), results));
}

/// Whether the node answers a full sync request over two connections (docs/shake-sync.md): a
/// diskless sync and Valkey's `dual-channel-replication-enabled yes` or Redis's
/// `repl-rdb-channel yes`. A node that hides CONFIG is taken not to.
async fn offers_two_connections(n: &mut Node) -> bool {
    if n.config("repl-diskless-sync").await.ok().as_deref() != Some("yes") {
        return false;
    }
    for setting in ["dual-channel-replication-enabled", "repl-rdb-channel"] {
        if n.config(setting).await.ok().as_deref() == Some("yes") {
            return true;
        }
    }
    false
}

/// `ROLE.keyspace`: keys and TTLs per database (INFO keyspace).
pub(crate) fn keyspace(report: &mut Report, side: &Side) {
    let ks = side.keyspace();
    let name = side.name("keyspace");
    if side.info_refused() {
        report.push(Check::warn(
            name,
            "INFO keyspace refused",
            "grant +info to the user",
        ));
        return;
    }
    if ks.values().all(|d| d.keys == 0) {
        report.push(Check::ok(name, "empty (no keys in any database)"));
        return;
    }
    let mut parts = Vec::new();
    for (db, d) in ks.iter().filter(|(_, d)| d.keys > 0) {
        let mut p = format!("db{db}: {} keys", d.keys);
        if d.expires > 0 {
            p.push_str(&format!(" ({} with a TTL)", d.expires));
        }
        if let Some(f) = d.field_ttls.filter(|&f| f > 0) {
            p.push_str(&format!(" ({f} with hash field TTLs)"));
        }
        parts.push(p);
    }
    report.push(Check::ok(name, parts.join(", ")));
}

/// The source's data, as the pairing checks need it.
pub(crate) async fn source_data(
    side: &mut Side,
    apply: &ApplyOptions,
    sample: usize,
) -> SourceData {
    let ks = side.keyspace();
    let first = &side.nodes[0];
    let mut formats = Vec::new();
    let mut field_ttl_keys = None;
    for d in ks.values() {
        if let Some(f) = d.field_ttls {
            field_ttl_keys = Some(field_ttl_keys.unwrap_or(0) + f);
        }
    }
    if let Some(f) = TargetFormat::from_info(&first.info) {
        let h = Header {
            magic: f.magic,
            version: f.rdb_version as u32,
        };
        let mut types = v::native_types(h);
        if field_ttl_keys.unwrap_or(0) > 0 {
            types.extend(v::field_ttl_types(h));
        } else if field_ttl_keys.is_none() && !v::field_ttl_types(h).is_empty() {
            // The server could have field TTLs but does not say: unknown.
        } else {
            field_ttl_keys = Some(field_ttl_keys.unwrap_or(0));
        }
        formats.push((h, types));
    }
    let mut functions = None;
    for n in side.nodes.iter_mut() {
        match n.conn.request(&["FUNCTION", "LIST"]).await {
            Ok(Reply::Array(libs)) => {
                functions = Some(functions.unwrap_or(0).max(libs.len() as u64))
            }
            Ok(Reply::Error(e)) if e.to_ascii_lowercase().contains("unknown command") => {
                functions = Some(functions.unwrap_or(0))
            }
            _ => {}
        }
    }
    let dbs: BTreeMap<u64, u64> = ks
        .iter()
        .filter(|(db, d)| d.keys > 0 && apply.filter.db_allowed(**db))
        .map(|(db, d)| (*db, d.keys))
        .collect();
    let sample = sample_keys(side, &dbs, apply, sample).await;
    SourceData {
        what: "the source".into(),
        formats,
        exact: false,
        field_ttl_keys,
        functions,
        dbs,
        bytes: dataset_bytes(side),
        from_file: false,
        sample,
    }
}

/// Up to `limit` keys of the source (SCAN, one page per database and master), filtered.
async fn sample_keys(
    side: &mut Side,
    dbs: &BTreeMap<u64, u64>,
    apply: &ApplyOptions,
    limit: usize,
) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    if dbs.is_empty() || limit == 0 {
        return out;
    }
    let per = (limit / (dbs.len() * side.nodes.len())).max(5);
    let cluster = side.cluster;
    for n in side.nodes.iter_mut() {
        for &db in dbs.keys() {
            if !cluster {
                let dbs = db.to_string();
                if !matches!(
                    n.conn.request(&["SELECT", dbs.as_str()]).await,
                    Ok(Reply::Status(_))
                ) {
                    continue;
                }
            }
            let count = per.to_string();
            let Ok(r) = n
                .conn
                .request(&["SCAN", "0", "COUNT", count.as_str()])
                .await
            else {
                continue;
            };
            let keys = r
                .as_array()
                .and_then(|a| a.get(1))
                .and_then(Reply::as_array)
                .unwrap_or(&[]);
            let mut taken = 0;
            for k in keys {
                let Some(k) = k.as_bytes() else { continue };
                if taken >= per || out.len() >= limit || !apply.filter.key_allowed(k) {
                    continue;
                }
                if !apply.filter.is_everything() {
                    let ty = match n.conn.request(&[&b"TYPE"[..], k]).await {
                        Ok(r) => r.as_text().and_then(|t| ValueType::parse(&t)),
                        Err(_) => None,
                    };
                    if !ty.is_some_and(|t| apply.filter.type_allowed(t)) {
                        continue;
                    }
                }
                out.push((db, k.to_vec()));
                taken += 1;
            }
        }
    }
    out
}

// ---- target ----------------------------------------------------------------------------------

/// `target.permissions`: RESTORE exists and the user may run it.
pub(crate) async fn target_permissions(report: &mut Report, side: &mut Side) {
    let mut results = Vec::new();
    for i in 0..side.nodes.len() {
        let at = side.at(i);
        let node = &mut side.nodes[i];
        let user = node.user().to_string();
        results.push(match access(node, &["RESTORE", "k", "0", "x"]).await {
            Access::Allowed => (Status::Ok, format!("RESTORE available to user {user}{at}"), String::new()),
            Access::Denied(m) => (
                Status::Fail,
                format!("user {user} may not run RESTORE{at}: {m}"),
                format!("grant the write commands: ACL SETUSER {user} +@write +select (RESTORE is in @write)"),
            ),
            Access::Missing => (
                Status::Fail,
                format!("RESTORE does not exist{at} (renamed or disabled)"),
                "the tools write with RESTORE; ask the provider to enable it".into(),
            ),
            Access::Unknown(w) => (
                Status::Warn,
                format!("could not verify that user {user} may run RESTORE{at}: {w}"),
                "the run will tell".into(),
            ),
        });
    }
    report.push(worst(side, side.name("permissions"), results));
}

/// `target.eviction`: anything but noeviction (with a maxmemory) can drop written keys silently.
pub(crate) fn eviction(report: &mut Report, side: &Side, source_expires: Option<u64>) {
    let mut results = Vec::new();
    for (i, n) in side.nodes.iter().enumerate() {
        let at = side.at(i);
        let (Some(max), Some(policy)) = (n.num("maxmemory"), n.get("maxmemory_policy")) else {
            results.push((
                Status::Warn,
                format!("maxmemory and maxmemory-policy unknown{at} (INFO memory refused)"),
                "make sure the target does not evict keys (maxmemory-policy noeviction)".into(),
            ));
            continue;
        };
        let found = if max == 0 {
            format!("maxmemory not set{at} (policy {policy} never applies)")
        } else {
            format!("maxmemory {}, maxmemory-policy {policy}{at}", bytes(max))
        };
        let status = v::eviction_status(max, policy);
        let (found, advice) = match status {
            Status::Ok => (found, String::new()),
            Status::Warn => (
                format!(
                    "{found}: keys with a TTL{} can be evicted when memory runs short, silently",
                    source_expires
                        .filter(|&e| e > 0)
                        .map(|e| format!(" ({e} in the source)"))
                        .unwrap_or_default()
                ),
                "CONFIG SET maxmemory-policy noeviction on the target for the migration".into(),
            ),
            Status::Fail => (
                format!("{found}: any written key can be evicted when memory runs short, silently"),
                "CONFIG SET maxmemory-policy noeviction on the target for the migration".into(),
            ),
        };
        results.push((status, found, advice));
    }
    report.push(worst(side, side.name("eviction"), results));
}

// ---- pairing ---------------------------------------------------------------------------------

/// `pair.memory`: what is free on the target against what the source's data needs.
pub(crate) fn memory(report: &mut Report, side: &Side, src: &SourceData) {
    let Some(need) = src.bytes else {
        report.push(Check::warn(
            "pair.memory",
            format!("the size of {}'s data is unknown (INFO refused)", src.what),
            "compare the source's used memory with the target's free memory yourself",
        ));
        return;
    };
    let mut free = 0u64;
    let mut limited = true;
    for n in &side.nodes {
        let used = n.num("used_memory").unwrap_or(0);
        match n.num("maxmemory") {
            Some(m) if m > 0 => free += m.saturating_sub(used),
            _ => {
                limited = false;
                free += n
                    .num("total_system_memory")
                    .unwrap_or(u64::MAX / 4)
                    .saturating_sub(used)
            }
        }
    }
    let what = if limited {
        "free below the target's maxmemory"
    } else {
        "free on the target's machine (no maxmemory set)"
    };
    let (status, found) = if src.from_file {
        // Data takes more memory than its RDB: twice the file is the point to start worrying.
        let s = if need > free {
            Status::Fail
        } else if need.saturating_mul(2) > free {
            Status::Warn
        } else {
            Status::Ok
        };
        (
            s,
            format!(
                "{} of RDB ({}); {} {what}; loaded data is usually larger than its file",
                bytes(need),
                src.what,
                bytes(free)
            ),
        )
    } else {
        (
            v::memory_status(need, free),
            format!(
                "{} holds {} of data; {} {what}",
                src.what,
                bytes(need),
                bytes(free)
            ),
        )
    };
    let advice = match status {
        Status::Ok => String::new(),
        Status::Warn => "little headroom: raise the target's maxmemory or free memory first".into(),
        Status::Fail => "the data does not fit: raise the target's maxmemory (or add shards), or copy less (--db, --key filters)".into(),
    };
    report.push(Check::new("pair.memory", status, found, advice));
}

/// The oldest format among the target's masters (every payload must load on each).
pub(crate) fn target_format(side: &Side) -> Option<TargetFormat> {
    let mut out: Option<TargetFormat> = None;
    for n in &side.nodes {
        let f = TargetFormat::from_info(&n.info)?;
        out = Some(match out {
            Some(o) if o.rdb_version <= f.rdb_version => o,
            _ => f,
        });
    }
    out
}

/// `pair.format`: which of the source's encodings the target loads as they are (fast path),
/// which must be re-encoded (portable path), and which it cannot hold at all.
pub(crate) fn format(report: &mut Report, side: &Side, src: &SourceData) {
    let Some(tf) = target_format(side) else {
        report.push(Check::warn(
            "pair.format",
            "cannot tell which RDB version the target loads (INFO server refused or unknown server)",
            "the run probes it; make sure the target is not older than the source",
        ));
        return;
    };
    if src.formats.is_empty() {
        report.push(Check::warn(
            "pair.format",
            format!(
                "cannot tell which RDB version {} writes (INFO server refused)",
                src.what
            ),
            "make sure the target is not older than the source",
        ));
        return;
    }
    let mut portable: BTreeSet<String> = BTreeSet::new();
    let mut impossible: BTreeSet<String> = BTreeSet::new();
    let mut source_desc = BTreeSet::new();
    for (h, types) in &src.formats {
        source_desc.insert(format!(
            "{} RDB {}",
            if h.magic == crate::rdb::Magic::Valkey {
                "Valkey"
            } else {
                "Redis"
            },
            h.version
        ));
        for &ty in types {
            if v::is_field_ttl_type(*h, ty) {
                continue; // pair.field-ttls
            }
            let vt = t::value_type_of(ty, *h);
            let stream = vt == Some(ValueType::Stream);
            // Module values travel raw or not at all; arrays exist only in Redis 8.8+.
            let module = matches!(vt, Some(ValueType::Module | ValueType::Array));
            if crate::apply::plan::loads_raw(&tf, *h, ty) {
                continue;
            }
            if (stream && tf.stream_type().is_none()) || module {
                impossible.insert(v::type_name(*h, ty));
            } else {
                portable.insert(v::type_name(*h, ty));
            }
        }
    }
    let source_desc = source_desc.into_iter().collect::<Vec<_>>().join(", ");
    let uses = if src.exact {
        "uses"
    } else {
        "writes (if it holds such values)"
    };
    if !impossible.is_empty() {
        report.push(Check::fail(
            "pair.format",
            format!(
                "{} ({source_desc}) {uses} {} that the target ({tf}) cannot hold at all",
                src.what,
                impossible.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "use a target of the source's version or newer, or leave those keys out (--type)",
        ));
    } else if !portable.is_empty() {
        report.push(Check::warn(
            "pair.format",
            format!(
                "{} ({source_desc}) {uses} {} that the target ({tf}) cannot load as they are",
                src.what,
                portable.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "those values take the portable path: decoded and re-encoded into what the target loads; exact, but more CPU than the fast path. A target of the source's version or newer avoids it",
        ));
    } else {
        report.push(Check::ok(
            "pair.format",
            format!("the target ({tf}) loads every encoding {} ({source_desc}) {uses} as it is (fast path)", src.what),
        ));
    }
}

/// `pair.field-ttls`: hash fields with TTLs into a target without them.
pub(crate) fn field_ttls(
    report: &mut Report,
    side: &Side,
    src: &SourceData,
    policy: FieldTtlPolicy,
) {
    let possible = src.formats.iter().any(|(h, types)| {
        !v::field_ttl_types(*h).is_empty() || types.iter().any(|&ty| v::is_field_ttl_type(*h, ty))
    });
    if !possible && src.field_ttl_keys.unwrap_or(0) == 0 {
        return;
    }
    let target_has = target_format(side)
        .and_then(|f| f.field_ttl_hash_type())
        .is_some();
    let found_keys = match src.field_ttl_keys {
        Some(0) => {
            report.push(Check::ok(
                "pair.field-ttls",
                format!("{} has no hash field TTLs", src.what),
            ));
            return;
        }
        Some(n) => format!("{} has {n} hashes with field TTLs", src.what),
        None => format!(
            "{} may hold hash field TTLs (its INFO does not say)",
            src.what
        ),
    };
    if target_has {
        report.push(Check::ok(
            "pair.field-ttls",
            format!("{found_keys}; the target keeps field TTLs"),
        ));
        return;
    }
    let status = match (src.field_ttl_keys, policy) {
        (Some(_), FieldTtlPolicy::Refuse) => Status::Fail,
        _ => Status::Warn,
    };
    let advice = match policy {
        FieldTtlPolicy::Refuse => "use a target with field TTLs (Redis 7.4+, Valkey 9+), or --field-ttls drop to write those fields without their TTLs",
        FieldTtlPolicy::Drop => "--field-ttls drop writes those fields without their TTLs (they will not expire on the target)",
    };
    report.push(Check::new(
        "pair.field-ttls",
        status,
        format!("{found_keys}, and the target has none (Redis 7.4+ / Valkey 9+ have them)"),
        advice,
    ));
}

/// `pair.functions`: function libraries need FUNCTION on the target.
pub(crate) async fn functions(report: &mut Report, side: &mut Side, src: &SourceData) {
    let Some(n) = src.functions else {
        report.push(Check::warn(
            "pair.functions",
            format!(
                "cannot tell whether {} has function libraries (FUNCTION LIST refused)",
                src.what
            ),
            "check FUNCTION LIST on the source yourself",
        ));
        return;
    };
    if n == 0 {
        report.push(Check::ok(
            "pair.functions",
            format!("{} has no function libraries", src.what),
        ));
        return;
    }
    let node = &mut side.nodes[0];
    let user = node.user().to_string();
    let check = match access(node, &["FUNCTION", "LOAD", "x"]).await {
        Access::Allowed => Check::ok("pair.functions", format!("{} has {n} function libraries; FUNCTION LOAD available to user {user} on the target", src.what)),
        Access::Missing => Check::fail(
            "pair.functions",
            format!("{} has {n} function libraries, and the target has no FUNCTION command (Redis 7.0+ / Valkey)", src.what),
            "use a target of Redis 7.0+ or Valkey, or recreate the libraries as scripts by hand",
        ),
        Access::Denied(m) => Check::fail(
            "pair.functions",
            format!("{} has {n} function libraries, and user {user} may not FUNCTION LOAD on the target: {m}", src.what),
            format!("grant it: ACL SETUSER {user} +function"),
        ),
        Access::Unknown(w) => Check::warn(
            "pair.functions",
            format!("{} has {n} function libraries; could not verify FUNCTION LOAD on the target: {w}", src.what),
            "the run will tell",
        ),
    };
    report.push(check);
}

/// The database mapping the writers apply: `--db-map`, or every key into the database of the
/// target URL (as `apply::prepare_target` does).
fn effective_map(apply: &ApplyOptions, target: &Endpoint) -> DbMap {
    match (target.db, apply.db_map.is_empty()) {
        (Some(db), true) => DbMap::parse(&[format!("*={db}")]).unwrap_or_default(),
        _ => apply.db_map.clone(),
    }
}

/// `pair.databases`: every source database has somewhere to go.
pub(crate) async fn databases(
    report: &mut Report,
    side: &mut Side,
    src: &SourceData,
    apply: &ApplyOptions,
) {
    let map = effective_map(apply, &side.seed);
    let mapped: Vec<(u64, u64, u64)> = src
        .dbs
        .iter()
        .filter_map(|(&db, &keys)| map.map(db).map(|to| (db, to, keys)))
        .collect();
    if mapped.is_empty() {
        report.push(Check::ok(
            "pair.databases",
            format!("{} has no keys to copy", src.what),
        ));
        return;
    }
    let desc = mapped
        .iter()
        .map(|(a, b, k)| format!("db{a} -> db{b} ({k} keys)"))
        .collect::<Vec<_>>()
        .join(", ");
    // A cluster: `cluster-databases` (Valkey 9+), only database 0 where it does not exist.
    let setting = if side.cluster {
        "cluster-databases"
    } else {
        "databases"
    };
    let count = side.nodes[0]
        .config(setting)
        .await
        .ok()
        .and_then(|d| v::parse_u64(&d))
        .or(side.cluster.then_some(1));
    if let Some(count) = count {
        let over: Vec<&(u64, u64, u64)> = mapped.iter().filter(|m| m.1 >= count).collect();
        let bad: Vec<String> = over.iter().map(|m| format!("db{}", m.1)).collect();
        let bad_src: Vec<String> = over.iter().map(|m| format!("db{}", m.0)).collect();
        if !bad.is_empty() {
            let (what, fix) = if side.cluster && count <= 1 {
                (
                    "a cluster has only database 0".to_string(),
                    "map them: --db-map '*=0' merges every database into 0 (keys with the same name collide), or --db 0 copies only database 0 (Valkey 9 clusters can have more: cluster-databases)",
                )
            } else {
                (
                    format!("the target has only {count} databases (no {})", bad.join(", ")),
                    "map them into existing databases with --db-map, or raise `databases` (a cluster: `cluster-databases`) in the target's config",
                )
            };
            report.push(Check::fail(
                "pair.databases",
                format!(
                    "{} has keys in {} (mapped: {desc}), but {what}",
                    src.what,
                    bad_src.join(", ")
                ),
                fix,
            ));
            return;
        }
    }
    report.push(Check::ok("pair.databases", desc));
}

/// `pair.conflicts`: keys already on the target, under the chosen `--on-conflict`.
pub(crate) async fn conflicts(
    report: &mut Report,
    side: &mut Side,
    src: &SourceData,
    apply: &ApplyOptions,
) {
    let map = effective_map(apply, &side.seed);
    let target_ks = side.keyspace();
    let dests: BTreeSet<u64> = src.dbs.keys().filter_map(|&db| map.map(db)).collect();
    let busy: Vec<(u64, u64)> = dests
        .iter()
        .filter_map(|db| {
            target_ks
                .get(db)
                .filter(|d| d.keys > 0)
                .map(|d| (*db, d.keys))
        })
        .collect();
    if busy.is_empty() {
        report.push(Check::ok(
            "pair.conflicts",
            if dests.is_empty() {
                "nothing to write".to_string()
            } else {
                format!(
                    "the target's {} empty",
                    dests
                        .iter()
                        .map(|d| format!("db{d}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                        + if dests.len() == 1 { " is" } else { " are" }
                )
            },
        ));
        return;
    }
    // Which sampled source keys already exist on the target.
    let mut sampled = 0usize;
    let mut existing: Vec<(u64, Vec<u8>)> = Vec::new();
    let busy_dbs: BTreeSet<u64> = busy.iter().map(|b| b.0).collect();
    for (db, key) in &src.sample {
        let Some(to) = map.map(*db) else { continue };
        if !busy_dbs.contains(&to) {
            continue;
        }
        // Looked up under its target name (--rename-prefix).
        let Ok(key) = apply.rename.key(key) else {
            continue;
        };
        let key = key.as_ref();
        let idx = if side.cluster {
            let Some(owner) = side
                .topology
                .as_ref()
                .and_then(|t| t.master_for_slot(slot_of(key)))
            else {
                continue;
            };
            match side
                .nodes
                .iter()
                .position(|n| n.endpoint.address() == owner.address())
            {
                Some(i) => i,
                None => continue,
            }
        } else {
            0
        };
        let conn = &mut side.nodes[idx].conn;
        if !side.cluster {
            let d = to.to_string();
            if !matches!(
                conn.request(&["SELECT", d.as_str()]).await,
                Ok(Reply::Status(_))
            ) {
                continue;
            }
        }
        match conn.request(&[&b"EXISTS"[..], key]).await {
            Ok(Reply::Int(n)) => {
                sampled += 1;
                if n > 0 {
                    existing.push((to, key.to_vec()));
                }
            }
            _ => continue,
        }
    }
    let busy_desc = busy
        .iter()
        .map(|(db, k)| format!("db{db} holds {k} keys"))
        .collect::<Vec<_>>()
        .join(", ");
    let sample_desc = match existing.first() {
        Some((db, k)) => format!(
            "; {} of {sampled} sampled source keys exist there, e.g. {} in db{db}",
            existing.len(),
            crate::text::quote_bytes(k)
        ),
        None if sampled > 0 => format!("; none of {sampled} sampled source keys exist there"),
        None => String::new(),
    };
    let found = format!("the target's {busy_desc}{sample_desc}");
    let check = match apply.conflict {
        ConflictPolicy::Panic if !existing.is_empty() => Check::fail(
            "pair.conflicts",
            format!("{found}: --on-conflict panic stops at the first one"),
            "empty those databases first, or choose --on-conflict rewrite (replace them) or ignore (keep the target's)",
        ),
        ConflictPolicy::Panic => Check::warn(
            "pair.conflicts",
            format!("{found}: under --on-conflict panic any source key that exists there stops the run"),
            "copy into empty databases, or choose --on-conflict rewrite or ignore",
        ),
        ConflictPolicy::Rewrite => Check::ok("pair.conflicts", format!("{found}; --on-conflict rewrite replaces them")),
        ConflictPolicy::Ignore => Check::ok("pair.conflicts", format!("{found}; --on-conflict ignore keeps the target's")),
    };
    report.push(check);
}
