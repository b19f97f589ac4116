//! Keys a fallback full sync must remove: what the target holds of this link's scope that the
//! new snapshot did not contain and that no stream command wrote since.
//!
//! A full sync writes the snapshot over what the target holds; a native replica flushes first,
//! shake-sync cannot (the target may hold other data). When a link that already wrote to the
//! target (it has a checkpoint there) takes a new full sync — the backlog no longer holds its
//! offset, the source has a new replication id, a full sync was interrupted, the source came
//! back empty — the keys the source deleted meanwhile would survive. So after the snapshot:
//!
//! - the full sync records a 128-bit hash of every key it writes (target database and name):
//!   [`KeyHashes`], 16 bytes per key, sorted once it is complete;
//! - the stream is applied as usual, and while the pass below runs, the first command of the
//!   stream that names a key of the scope absent from the snapshot is preceded by a `DEL` of that
//!   key in the same transaction (the target's copy is a stale one: the source had no such key
//!   at the fork), and the key is remembered as *touched* (a set of hashes);
//! - the target's masters are scanned (`SCAN`, one step per turn of the stream loop), and every
//!   key of the scope that is neither in the snapshot nor touched is removed with `UNLINK`,
//!   queued in the applier's batch, on the same ordered path as the stream's commands.
//!
//! Exact under concurrent stream application: a key is removed by the pass only if no stream
//! command named it since the fork (checked when the `UNLINK` is queued, on the applier's only
//! thread, before any later command), and a key a stream command names is emptied before that
//! command. A hash collision can only keep a stale key, never remove a live one.
//!
//! The scope ([`Scope`]) is what this link copies: its target databases (the source databases
//! `--db` allows, through `--db-map`), its keys (`--key`, `--key-regex`), and on a cluster source
//! the slots its master owned at the fork and at the end of the snapshot, without the slots that
//! were MIGRATING or IMPORTING (another link may own their keys). shake-sync's own keys
//! (`shake-sync:`) are never removed.
//!
//! The low-water checkpoint keeps saying "full sync in progress" until the pass is over: a stop
//! or a crash before then makes the next start do the full sync (and the pass) again.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

use super::checkpoint::is_internal_key;
use super::SyncError;
use crate::apply::DbMap;
use crate::client::{slot_of, SLOTS};
use crate::filter::KeyFilter;
use crate::net::{ConnectOptions, Connection, Endpoint};

/// `--prune`: when a full sync removes the keys of its scope that the snapshot did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrunePolicy {
    /// When the link had written to this target before (a checkpoint is there, or this process
    /// did a full sync of the link already): a fallback full sync. A first full sync into a
    /// target that may hold other data removes nothing.
    #[default]
    Auto,
    /// Also on a first full sync (the target holds nothing but this sync's data in the scope).
    Always,
    /// Never (the keys the source deleted while a resume was impossible stay on the target).
    Never,
}

impl PrunePolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PrunePolicy::Auto),
            "always" => Ok(PrunePolicy::Always),
            "never" => Ok(PrunePolicy::Never),
            _ => Err(format!(
                "unknown --prune {s:?}: expected auto, always or never"
            )),
        }
    }

    /// Whether a full sync prunes; `ours`: the link wrote to this target before.
    pub fn prunes(self, ours: bool) -> bool {
        match self {
            PrunePolicy::Auto => ours,
            PrunePolicy::Always => true,
            PrunePolicy::Never => false,
        }
    }
}

/// Hashes (target database, key) to 128 bits: two SipHash-1-3 with independent random keys
/// (per process; nothing of it is stored).
#[derive(Debug, Clone)]
pub struct KeyHasher {
    a: std::collections::hash_map::RandomState,
    b: std::collections::hash_map::RandomState,
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher {
            a: std::collections::hash_map::RandomState::new(),
            b: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl KeyHasher {
    pub fn hash(&self, db: u64, key: &[u8]) -> u128 {
        let one = |s: &std::collections::hash_map::RandomState| {
            let mut h = s.build_hasher();
            h.write_u64(db);
            h.write(key);
            h.finish()
        };
        ((one(&self.a) as u128) << 64) | one(&self.b) as u128
    }
}

/// The keys a full sync wrote, as hashes: 16 bytes a key (a 10M-key snapshot: 160 MB, up to
/// twice that while the list grows).
#[derive(Debug, Clone, Default)]
pub struct KeyHashes {
    hasher: KeyHasher,
    hashes: Vec<u128>,
    sorted: bool,
}

impl KeyHashes {
    pub fn new(hasher: KeyHasher) -> Self {
        KeyHashes {
            hasher,
            hashes: Vec::new(),
            sorted: true,
        }
    }

    pub fn insert(&mut self, db: u64, key: &[u8]) {
        self.hashes.push(self.hasher.hash(db, key));
        self.sorted = false;
    }

    /// Sorted, without duplicates: ready for [`KeyHashes::contains`].
    pub fn seal(&mut self) {
        self.hashes.sort_unstable();
        self.hashes.dedup();
        self.hashes.shrink_to_fit();
        self.sorted = true;
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    fn contains_hash(&self, h: u128) -> bool {
        if self.sorted {
            self.hashes.binary_search(&h).is_ok()
        } else {
            self.hashes.contains(&h)
        }
    }
}

/// The keys a link copies, judged on the target's side (target database, key).
#[derive(Debug, Clone)]
pub struct Scope {
    filter: KeyFilter,
    db_map: DbMap,
    /// A cluster source: the slots of this link's master (`None`: every slot).
    slots: Option<Vec<bool>>,
    /// `--rename-prefix`: a target key is judged by the source name(s) it comes from.
    rename: crate::rename::Rename,
}

impl Scope {
    pub fn new(filter: KeyFilter, db_map: DbMap, slots: Option<Vec<bool>>) -> Self {
        Scope {
            filter,
            db_map,
            slots,
            rename: crate::rename::Rename::default(),
        }
    }

    /// The scope of a sync that renames keys: the filters and the slots judge the source names
    /// a target key comes from (a key no source name becomes is not this link's).
    pub fn with_rename(mut self, rename: crate::rename::Rename) -> Self {
        self.rename = rename;
        self
    }

    /// Whether the target database `db` receives keys of this link.
    pub fn db(&self, db: u64) -> bool {
        // --exclude-db comes without --db-map (shake-sync refuses the pair): target database
        // numbers are the source's.
        self.db_map.receives(db, self.filter.dbs())
            && (!self.filter.excludes_dbs() || self.filter.db_allowed(db))
    }

    /// Whether the target's `key` in database `db` is this link's to remove.
    pub fn key(&self, db: u64, key: &[u8]) -> bool {
        let source = |name: &[u8]| {
            self.filter.key_allowed(name)
                && self
                    .slots
                    .as_ref()
                    .is_none_or(|s| s.get(slot_of(name) as usize).copied().unwrap_or(false))
        };
        let ours = if self.rename.is_empty() {
            source(key)
        } else {
            self.rename.sources_of(key).iter().any(|n| source(n))
        };
        !is_internal_key(key) && ours && self.db(db)
    }

    /// How many slots the scope has (`None`: not a cluster source).
    pub fn slot_count(&self) -> Option<usize> {
        self.slots
            .as_ref()
            .map(|s| s.iter().filter(|&&b| b).count())
    }
}

/// The slots a cluster source master owns now and whose keys are its alone: its own slots
/// (`CLUSTER NODES`, the `myself` line) without the ones MIGRATING or IMPORTING.
pub async fn owned_slots(
    source: &Endpoint,
    connect: &ConnectOptions,
) -> Result<Vec<bool>, SyncError> {
    let mut conn = Connection::connect(source, connect)
        .await
        .map_err(|e| SyncError::Link(e.into()))?;
    let r = conn
        .request(&["CLUSTER", "NODES"])
        .await
        .map_err(|e| SyncError::Link(e.into()))?;
    let text = match r.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => {
            return Err(SyncError::Source(format!(
                "{source}: CLUSTER NODES answered {r:?}; the keys the source deleted cannot be told from another master's"
            )))
        }
    };
    let line = text
        .lines()
        .find(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("myself")))
        .ok_or_else(|| {
            SyncError::Source(format!(
                "{source}: CLUSTER NODES has no line for the node itself"
            ))
        })?;
    Ok(parse_owned_slots(line))
}

/// The slots of one `CLUSTER NODES` line (fields 9 on), without those in `[slot->-id]` or
/// `[slot-<-id]` entries.
fn parse_owned_slots(line: &str) -> Vec<bool> {
    let mut owned = vec![false; SLOTS];
    let mut moving = Vec::new();
    for f in line.split(' ').skip(8) {
        if let Some(inner) = f.strip_prefix('[') {
            if let Some(s) = inner
                .split(['-', '>', '<'])
                .next()
                .and_then(|s| s.parse::<usize>().ok())
            {
                moving.push(s);
            }
            continue;
        }
        let (a, b) = match f.split_once('-') {
            Some((a, b)) => (a.parse::<usize>(), b.parse::<usize>()),
            None => (f.parse::<usize>(), f.parse::<usize>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            if a <= b && a < SLOTS {
                owned[a..=b.min(SLOTS - 1)].fill(true);
            }
        }
    }
    for s in moving {
        if let Some(o) = owned.get_mut(s) {
            *o = false;
        }
    }
    owned
}

/// Slots in both.
pub fn intersect(a: &mut [bool], b: &[bool]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x &= *y;
    }
}

/// One pass over the target after a full sync: what the snapshot held, what the stream touched
/// since, and where the scan stands.
pub struct Prune {
    scope: Scope,
    snapshot: KeyHashes,
    touched: HashSet<u128>,
    connect: ConnectOptions,
    /// Target masters not scanned yet.
    nodes: Vec<Endpoint>,
    /// The node being scanned, its databases left, the database and the cursor.
    conn: Option<(Connection, Vec<u64>, u64, Vec<u8>)>,
    /// Why the full sync happened (for the log line).
    pub why: String,
    /// Keys the scan looked at.
    pub scanned: u64,
    /// Keys queued for removal.
    pub queued: u64,
    pub started: std::time::Instant,
}

impl Prune {
    pub fn new(
        scope: Scope,
        mut snapshot: KeyHashes,
        nodes: Vec<Endpoint>,
        connect: ConnectOptions,
        why: String,
    ) -> Self {
        snapshot.seal();
        Prune {
            scope,
            snapshot,
            touched: HashSet::new(),
            connect,
            nodes,
            conn: None,
            why,
            scanned: 0,
            queued: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Keys in the snapshot.
    pub fn snapshot_len(&self) -> usize {
        self.snapshot.len()
    }

    /// A stream command names `key` of target database `db`: true when the target's copy must
    /// be removed before it (the first time the stream names a key of the scope that the
    /// snapshot did not hold).
    pub fn first_touch(&mut self, db: u64, key: &[u8]) -> bool {
        if !self.scope.key(db, key) {
            return false;
        }
        let h = self.snapshot.hasher.hash(db, key);
        !self.snapshot.contains_hash(h) && self.touched.insert(h)
    }

    /// Whether the scan is over.
    pub fn scanned_all(&self) -> bool {
        self.conn.is_none() && self.nodes.is_empty()
    }

    /// One SCAN step: the keys it found that are to be removed (target database, key), judged
    /// now against what the stream touched. Errors name the node.
    pub async fn step(&mut self) -> Result<Vec<(u64, Vec<u8>)>, SyncError> {
        if self.conn.is_none() {
            let Some(node) = self.nodes.pop() else {
                return Ok(Vec::new());
            };
            let mut c = Connection::connect(&node, &self.connect)
                .await
                .map_err(SyncError::from_net)?;
            let mut dbs: Vec<u64> = c
                .databases_with_keys()
                .await
                .into_iter()
                .filter(|&d| self.scope.db(d))
                .collect();
            dbs.reverse();
            let Some(db) = dbs.pop() else {
                return Ok(Vec::new());
            };
            select(&mut c, db).await?;
            self.conn = Some((c, dbs, db, b"0".to_vec()));
        }
        let Some((conn, dbs, db, cursor)) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let r = conn
            .request(&[&b"SCAN"[..], cursor, b"COUNT", b"1000"])
            .await
            .map_err(SyncError::from_net)?;
        if let Some(e) = r.error() {
            return Err(SyncError::Target(format!(
                "{}: SCAN of database {db} for keys the source deleted failed: {e}",
                conn.endpoint()
            )));
        }
        let parts = r.as_array().unwrap_or_default();
        let next = parts
            .first()
            .and_then(|c| c.as_bytes())
            .unwrap_or(b"0")
            .to_vec();
        let mut out = Vec::new();
        let db_now = *db;
        for k in parts
            .get(1)
            .and_then(|k| k.as_array())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.as_bytes())
        {
            self.scanned += 1;
            if !self.scope.key(db_now, k) {
                continue;
            }
            let h = self.snapshot.hasher.hash(db_now, k);
            if self.snapshot.contains_hash(h) || self.touched.contains(&h) {
                continue;
            }
            out.push((db_now, k.to_vec()));
        }
        self.queued += out.len() as u64;
        if next == b"0" {
            match dbs.pop() {
                Some(d) => {
                    select(conn, d).await?;
                    *db = d;
                    *cursor = b"0".to_vec();
                }
                None => self.conn = None,
            }
        } else {
            *cursor = next;
        }
        Ok(out)
    }
}

async fn select(c: &mut Connection, db: u64) -> Result<(), SyncError> {
    if db == 0 {
        return Ok(());
    }
    let r = c
        .request(&[&b"SELECT"[..], db.to_string().as_bytes()])
        .await
        .map_err(SyncError::from_net)?;
    match r.error() {
        Some(e) => Err(SyncError::Fatal(format!(
            "{}: SELECT {db} for the removal of keys the source deleted failed: {e}",
            c.endpoint()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_slots_leave_out_moving_ones() {
        let line =
            "abc 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5 7 [3->-def] [9-<-ghi]";
        let s = parse_owned_slots(line);
        let owned: Vec<usize> = (0..SLOTS).filter(|&i| s[i]).collect();
        assert_eq!(owned, vec![0, 1, 2, 4, 5, 7]);
    }

    #[test]
    fn scope_follows_filters_and_db_map() {
        let f = KeyFilter::new(vec![1, 5], vec!["a*".into()], None, vec![]).unwrap();
        let m = DbMap::parse(&["5=7".into()]).unwrap();
        let s = Scope::new(f, m, None);
        assert!(s.key(1, b"ab"));
        assert!(s.key(7, b"ab"));
        assert!(!s.key(5, b"ab"));
        assert!(!s.key(0, b"ab"));
        assert!(!s.key(1, b"b"));
        assert!(!s.key(1, b"shake-sync:checkpoint:x"));
    }

    #[test]
    fn scope_judges_the_source_names_of_renamed_keys() {
        let f = KeyFilter::new(vec![], vec!["a:*".into()], None, vec![]).unwrap();
        let r = crate::rename::Rename::parse(&["a:=b:"]).unwrap();
        let s = Scope::new(f, DbMap::default(), None).with_rename(r);
        assert!(s.key(0, b"b:1"));
        assert!(!s.key(0, b"a:1"));
        assert!(!s.key(0, b"c"));
    }

    #[test]
    fn first_touch_once_and_not_for_snapshot_keys() {
        let h = KeyHasher::default();
        let mut snap = KeyHashes::new(h);
        snap.insert(0, b"kept");
        let s = Scope::new(KeyFilter::all(), DbMap::default(), None);
        let mut p = Prune::new(s, snap, vec![], ConnectOptions::default(), String::new());
        assert!(!p.first_touch(0, b"kept"));
        assert!(p.first_touch(0, b"new"));
        assert!(!p.first_touch(0, b"new"));
        assert!(p.first_touch(1, b"new"));
    }
}
