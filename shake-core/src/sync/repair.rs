//! Repairs: keys whose command the target refused (WRONGTYPE, BUSYKEY, a script error, ...)
//! while the source executed it, re-copied from the source so the target does not silently
//! diverge. `--on-target-error stop` stops at the first refusal instead, naming the key.
//!
//! A repair reads the key from the link's source master in one transaction that also reads the
//! source's replication offset: `MULTI, DUMP k, PTTL k, ..., INFO replication, EXEC`. So the
//! value read is the key's state at exactly that offset `S` of the stream this link applies (no
//! write can fall between the DUMP and the offset). It is written to the target with RESTORE ...
//! REPLACE through the planner (the portable path or batches of commands where needed), in one
//! transaction with a record `S` for the key under `shake-sync:repair:<link>:...` (in the key's
//! slot on a cluster), so the record and the value commit together.
//!
//! The exactly-once rule, for every later command of the stream naming a repaired key, with `o`
//! the offset of the command's end (of its transaction's EXEC inside a source MULTI/EXEC):
//! - `o <= S` and every key it names is repaired at or past `o`: skipped, its effect is in the
//!   values read (re-applying it would double an INCR, an LPUSH, an APPEND);
//! - `o <= S` and it names other keys too (SMOVE, RENAME, SUNIONSTORE, ...): skipped, and all its
//!   keys are repaired again (read at a newer offset, which includes the command's effect);
//! - `o > S`: applied as usual.
//!
//! Commands on the key already sent when the repair is written run before its RESTORE on the same
//! connection, so their effect is replaced by the value at `S`. The record outlives a restart (it
//! is read back with the checkpoint), so a replay after kill -9 skips the same commands; it is
//! deleted once the low-water mark passes `S`.

use std::collections::HashMap;

use bytes::Bytes;

use super::checkpoint::{slot_tags, Checkpoint, KEY_PREFIX};
use crate::apply::plan::Planner;
pub use crate::apply::OnTargetError;
use crate::apply::{prepare_target, ApplyOptions, ConflictPolicy, PreparedTarget, Work};
use crate::client::{slot_of, Target};
use crate::command::{command_info, command_keys};
use crate::net::{ConnectOptions, Connection, Endpoint};
use crate::resp::{encode_command, Reply};
use crate::text::quote_bytes;

/// Where repairs read from and how they are written.
#[derive(Debug, Clone)]
pub struct RepairSource {
    /// The link's source master.
    pub endpoint: Endpoint,
    pub connect: ConnectOptions,
    /// Filters, database map, big keys, field TTL policy (the conflict policy is replaced).
    pub apply: ApplyOptions,
}

/// Keys to repair together (the keys of one refused or re-copied command).
#[derive(Debug, Clone)]
pub struct Todo {
    pub src_db: u64,
    /// The target database.
    pub db: u64,
    pub keys: Vec<Vec<u8>>,
    /// The source offset of the command's end: a repair read at or past it covers it.
    pub end: u64,
    /// Why: the refused command and the target's error, for messages.
    pub why: String,
}

/// What the rule says about a command of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// Its effect is in the repaired values.
    Skip,
    /// Skip it and repair all its keys again.
    Recopy(Vec<Vec<u8>>),
}

/// The keys a command names (none for keyless or unknown commands).
pub fn keys_of(argv: &[&[u8]]) -> Vec<Vec<u8>> {
    let Some(name) = argv.first() else {
        return Vec::new();
    };
    let idx = match command_info(name) {
        Some(i) => i.key_indexes(argv),
        None => command_keys(argv),
    };
    idx.unwrap_or_default()
        .into_iter()
        .filter_map(|i| argv.get(i).map(|k| k.to_vec()))
        .collect()
}

/// The repair state of one link.
pub struct Repairs {
    pub policy: OnTargetError,
    source: Option<RepairSource>,
    conn: Option<Connection>,
    prepared: Option<PreparedTarget>,
    /// `(target db, key)` -> `(source db, offset S its value on the target reflects)`.
    done: HashMap<(u64, Vec<u8>), (u64, u64)>,
    queue: Vec<Todo>,
    /// Keys re-copied (all sessions of this process add up through the status).
    pub repaired: u64,
    /// Stream commands skipped because a repaired value holds their effect.
    pub skipped: u64,
    base: String,
}

impl Repairs {
    /// `low_water_key` is the link's checkpoint key (the record keys are named after it).
    pub fn new(policy: OnTargetError, low_water_key: &[u8]) -> Self {
        let link = low_water_key
            .strip_prefix(b"shake-sync:checkpoint:")
            .unwrap_or(low_water_key);
        Repairs {
            policy,
            source: None,
            conn: None,
            prepared: None,
            done: HashMap::new(),
            queue: Vec::new(),
            repaired: 0,
            skipped: 0,
            base: format!(
                "{}repair:{}",
                String::from_utf8_lossy(KEY_PREFIX),
                String::from_utf8_lossy(link)
            ),
        }
    }

    pub fn set_source(&mut self, s: RepairSource) {
        self.source = Some(s);
        self.conn = None;
    }

    /// Whether any key is under the rule (the common case answers false at once).
    pub fn active(&self) -> bool {
        !self.done.is_empty()
    }

    pub fn push(&mut self, t: Todo) {
        self.queue.push(t);
    }

    pub fn take_queue(&mut self) -> Vec<Todo> {
        std::mem::take(&mut self.queue)
    }

    pub fn has_queue(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The rule of the module for a command naming `keys` in target database `db`, ending at
    /// source offset `end`.
    pub fn verdict(&self, db: u64, keys: &[Vec<u8>], end: u64) -> Verdict {
        let covered = keys
            .iter()
            .filter(|k| {
                self.done
                    .get(&(db, k.to_vec()))
                    .is_some_and(|&(_, s)| s >= end)
            })
            .count();
        if covered == 0 {
            Verdict::Apply
        } else if covered == keys.len() {
            Verdict::Skip
        } else {
            Verdict::Recopy(keys.to_vec())
        }
    }

    /// The record key for a key in target database `db` (its slot's on a cluster).
    pub fn record_key(&self, cluster: bool, key: &[u8]) -> Vec<u8> {
        if cluster {
            format!("{}:{{{}}}", self.base, slot_tags()[slot_of(key) as usize]).into_bytes()
        } else {
            format!("{}:applied", self.base).into_bytes()
        }
    }

    fn record_field(db: u64, src_db: u64, key: &[u8]) -> Vec<u8> {
        let mut f = format!("{db}:{src_db}:").into_bytes();
        f.extend_from_slice(key);
        f
    }

    fn parse_field(f: &[u8]) -> Option<(u64, u64, Vec<u8>)> {
        let mut parts = f.splitn(3, |&b| b == b':');
        let db = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let src = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        Some((db, src, parts.next()?.to_vec()))
    }

    /// A SCAN MATCH pattern for this link's record keys.
    fn pattern(&self) -> Vec<u8> {
        let mut p = Vec::new();
        for &b in self.base.as_bytes() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                p.push(b'\\');
            }
            p.push(b);
        }
        p.extend_from_slice(b":*");
        p
    }

    /// Reads the records a previous session left on the target: the ones of this stream's
    /// history (`replids`) past `start` are in force again.
    pub async fn load(
        &mut self,
        masters: &[Endpoint],
        connect: &ConnectOptions,
        db: u64,
        replids: &[&str],
        start: u64,
    ) -> Result<(), String> {
        for node in masters {
            let mut conn = Connection::connect(node, connect)
                .await
                .map_err(|e| e.to_string())?;
            let names = super::link::scan_keys(&mut conn, db, &self.pattern())
                .await
                .map_err(|e| e.to_string())?;
            for name in names {
                let h = conn
                    .request(&[&b"HGETALL"[..], &name])
                    .await
                    .map_err(|e| e.to_string())?;
                for kv in h.as_array().unwrap_or_default().chunks(2) {
                    let (Some(f), Some(v)) =
                        (kv[0].as_bytes(), kv.get(1).and_then(Reply::as_bytes))
                    else {
                        continue;
                    };
                    let (Some((db, src, key)), Ok(c)) =
                        (Self::parse_field(f), Checkpoint::parse(v))
                    else {
                        continue;
                    };
                    if let Some(s) = c.offset.filter(|&s| s > start) {
                        if replids.contains(&c.replid.as_str()) {
                            self.done.insert((db, key), (src, s));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets the records the low-water mark has passed; returns the `HDEL` commands (with the
    /// key each is for) that delete them on the target.
    pub fn prune(&mut self, low_water: u64, cluster: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        if self.done.is_empty() {
            return Vec::new();
        }
        let passed: Vec<(u64, Vec<u8>, u64)> = self
            .done
            .iter()
            .filter(|(_, &(_, s))| s <= low_water)
            .map(|((db, k), &(src, _))| (*db, k.clone(), src))
            .collect();
        let mut out = Vec::new();
        for (db, k, src) in passed {
            self.done.remove(&(db, k.clone()));
            let rk = self.record_key(cluster, &k);
            let mut c = Vec::new();
            encode_command(
                &mut c,
                &[&b"HDEL"[..], &rk, &Self::record_field(db, src, &k)],
            );
            out.push((k, c));
        }
        out
    }

    async fn source_conn(&mut self) -> Result<&mut Connection, String> {
        let Some(src) = &self.source else {
            return Err("no source to repair from".into());
        };
        if self.conn.is_none() {
            let c = Connection::connect(&src.endpoint, &src.connect)
                .await
                .map_err(|e| format!("{}: {e}", src.endpoint))?;
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "no source connection".to_string())
    }

    /// Reads `keys` of source database `db` and the source's offset in one transaction: each
    /// key's payload and absolute expiry (`None`: the key does not exist), and `S`.
    async fn read(
        &mut self,
        db: u64,
        keys: &[Vec<u8>],
    ) -> Result<(Vec<Option<(Bytes, Option<i64>)>>, u64), String> {
        let endpoint = self
            .source
            .as_ref()
            .map(|s| s.endpoint.to_string())
            .unwrap_or_default();
        let conn = self.source_conn().await?;
        let sel = db.to_string();
        conn.queue(&["SELECT", sel.as_str()]);
        conn.queue(&["MULTI"]);
        for k in keys {
            conn.queue(&[&b"DUMP"[..], k]);
            conn.queue(&[&b"PTTL"[..], k]);
        }
        conn.queue(&["INFO", "replication"]);
        conn.queue(&["EXEC"]);
        let r = async {
            conn.flush().await?;
            let mut replies = Vec::new();
            for _ in 0..(keys.len() * 2 + 4) {
                replies.push(conn.read_reply().await?);
            }
            Ok::<_, crate::net::NetError>(replies)
        }
        .await;
        let replies = match r {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(format!("{endpoint}: {e}"));
            }
        };
        let now = crate::scan::now_ms();
        if let Some(e) = replies
            .iter()
            .take(replies.len() - 1)
            .find_map(Reply::error)
        {
            return Err(format!("{endpoint} refused the read: {e}"));
        }
        let Some(Reply::Array(results)) = replies.last() else {
            return Err(format!(
                "{endpoint} answered the read with {}",
                replies.last().map(|r| r.to_string()).unwrap_or_default()
            ));
        };
        if results.len() != keys.len() * 2 + 1 {
            return Err(format!(
                "{endpoint} answered the read with {} results",
                results.len()
            ));
        }
        let info = results[keys.len() * 2].as_text().unwrap_or_default();
        let offset = crate::net::parse_info(&info)
            .get("master_repl_offset")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("{endpoint}: INFO replication has no master_repl_offset"))?;
        let mut out = Vec::new();
        for pair in results[..keys.len() * 2].chunks(2) {
            if let Some(e) = pair[0].error().or_else(|| pair[1].error()) {
                return Err(format!("{endpoint} refused DUMP: {e}"));
            }
            match (&pair[0], pair[1].as_int()) {
                (Reply::Bulk(p), Some(ttl)) if ttl != -2 => {
                    let exp = (ttl >= 0).then(|| now + ttl);
                    out.push(Some((p.clone(), exp)));
                }
                _ => out.push(None),
            }
        }
        Ok((out, offset))
    }

    /// Reads `t`'s keys from the source and plans their writes: the commands (RESTORE ... REPLACE,
    /// or DEL and batches for a big key, or DEL for a key the source no longer has) per key,
    /// and the offset `S` they reflect.
    pub async fn plan<T: Send>(
        &mut self,
        target: &mut Target<T>,
        t: &Todo,
    ) -> Result<(Vec<(Vec<u8>, Vec<Bytes>)>, u64), String> {
        if self.prepared.is_none() {
            let Some(src) = &self.source else {
                return Err("no source to repair from".into());
            };
            let apply = ApplyOptions {
                conflict: ConflictPolicy::Rewrite,
                ..src.apply.clone()
            };
            let p = prepare_target(target, &apply)
                .await
                .map_err(|e| e.to_string())?;
            self.prepared = Some(p);
        }
        let Some(prepared) = &self.prepared else {
            return Err("the target's format is unknown".into());
        };
        // The keys are the target's names; the source holds each under the name(s)
        // --rename-prefix turns into it (the same name without rules), all read in the one
        // transaction, and the first that exists is the key's value.
        let names: Vec<Vec<Vec<u8>>> = t
            .keys
            .iter()
            .map(|k| {
                prepared
                    .apply
                    .rename
                    .sources_of(k)
                    .into_iter()
                    .filter(|n| prepared.apply.filter.key_allowed(n))
                    .collect()
            })
            .collect();
        let flat: Vec<Vec<u8>> = names.iter().flatten().cloned().collect();
        let (mut values, offset) = self.read(t.src_db, &flat).await?;
        let Some(prepared) = &self.prepared else {
            return Err("the target's format is unknown".into());
        };
        let mut planner = Planner::new(&prepared.apply, prepared.format, crate::scan::now_ms())
            .with_modules(prepared.modules.clone());
        let mut out = Vec::new();
        let mut at = 0;
        for (key, sources) in t.keys.iter().zip(&names) {
            let mut cmds: Vec<Bytes> = Vec::new();
            let found = sources
                .iter()
                .zip(&mut values[at..at + sources.len()])
                .find_map(|(n, v)| v.take().map(|v| (n, v)));
            at += sources.len();
            if let Some((source_name, (payload, exp))) = found {
                planner
                    .plan_payload(t.src_db, source_name.clone(), exp, &payload, &mut |w| {
                        match w {
                            Work::Restore { cmd, .. } => cmds.push(Bytes::from(cmd)),
                            Work::Commands {
                                key,
                                cmds: c,
                                first,
                                ..
                            } => {
                                if first {
                                    let mut d = Vec::new();
                                    encode_command(&mut d, &[&b"DEL"[..], &key]);
                                    cmds.push(Bytes::from(d));
                                }
                                cmds.extend(c.into_iter().map(Bytes::from));
                            }
                            _ => {}
                        }
                        Ok(())
                    })
                    .map_err(|e| e.to_string())?;
            }
            if cmds.is_empty() {
                // Gone from the source (or expired by now): gone from the target too.
                let mut d = Vec::new();
                encode_command(&mut d, &[&b"DEL"[..], key]);
                cmds.push(Bytes::from(d));
            }
            out.push((key.clone(), cmds));
        }
        Ok((out, offset))
    }

    /// The `HSET` of the records of `t`'s keys at offset `s` of history `replid`.
    pub fn record_commands(&self, cluster: bool, t: &Todo, replid: &str, s: u64) -> Vec<Bytes> {
        let text = Checkpoint {
            replid: replid.to_string(),
            offset: Some(s),
            db: None,
        }
        .encode();
        t.keys
            .iter()
            .map(|k| {
                let mut c = Vec::new();
                encode_command(
                    &mut c,
                    &[
                        &b"HSET"[..],
                        &self.record_key(cluster, k),
                        &Self::record_field(t.db, t.src_db, k),
                        text.as_bytes(),
                    ],
                );
                Bytes::from(c)
            })
            .collect()
    }

    /// Marks `t`'s keys repaired at `s`.
    pub fn mark(&mut self, t: &Todo, s: u64) {
        for k in &t.keys {
            self.done.insert((t.db, k.clone()), (t.src_db, s));
        }
        self.repaired += t.keys.len() as u64;
    }
}

/// `"k1", "k2"` for messages.
pub fn show_keys(keys: &[Vec<u8>]) -> String {
    keys.iter()
        .map(|k| quote_bytes(k))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let mut r = Repairs::new(OnTargetError::Repair, b"shake-sync:checkpoint:h:1");
        let t = Todo {
            src_db: 0,
            db: 0,
            keys: vec![b"k".to_vec()],
            end: 50,
            why: String::new(),
        };
        r.mark(&t, 100);
        assert_eq!(r.verdict(0, &[b"k".to_vec()], 90), Verdict::Skip);
        assert_eq!(r.verdict(0, &[b"k".to_vec()], 100), Verdict::Skip);
        assert_eq!(r.verdict(0, &[b"k".to_vec()], 101), Verdict::Apply);
        assert_eq!(r.verdict(1, &[b"k".to_vec()], 90), Verdict::Apply);
        assert_eq!(
            r.verdict(0, &[b"k".to_vec(), b"l".to_vec()], 90),
            Verdict::Recopy(vec![b"k".to_vec(), b"l".to_vec()])
        );
        assert_eq!(r.prune(99, false).len(), 0);
        assert_eq!(r.prune(100, false).len(), 1);
        assert!(!r.active());
        assert_eq!(
            Repairs::parse_field(&Repairs::record_field(3, 4, b"a:b")),
            Some((3, 4, b"a:b".to_vec()))
        );
        assert_eq!(
            r.record_key(false, b"x"),
            b"shake-sync:repair:h:1:applied".to_vec()
        );
    }
}
