//! Where a sync stands, kept on the target itself: the checkpoint keys, their names and values,
//! and reading them back on a restart.
//!
//! Every batch of the command stream is written to the target as one `MULTI ... EXEC` that also
//! sets a checkpoint key to the replication offset of the batch's last command. The data and the
//! offset commit together or not at all, so after any crash the target says exactly which
//! commands it holds: a restart replays from there and applies nothing twice, INCR, LPUSH and
//! APPEND included.
//!
//! A cluster target allows a transaction to touch only one hash slot, so there the checkpoint is
//! per slot: `shake-sync:checkpoint:<link>:{<tag>}` where `<tag>` hashes to the slot. Commands
//! without a key (FLUSHALL, FUNCTION LOAD) are checkpointed under `<link>:global`. A standalone
//! target has one domain, `<link>:applied`. Besides, `shake-sync:checkpoint:<link>` holds the
//! low-water mark: an offset at or below which every command is on the target. A restart asks the
//! source for the stream from the low-water mark and skips, per domain, what the domain's key says
//! is already applied.
//!
//! Values are `<replid> <offset> <db>`: `<db>` is the source stream's current database at
//! `<offset>` (the last `SELECT` read, before `--db-map`). It is part of the replication
//! position: a source does not repeat `SELECT` on `+CONTINUE`, so a resumed stream's first
//! commands belong to that database, as on a native replica, which keeps its selected database
//! across a partial resync. Values written before the database was recorded (`<replid>
//! <offset>`) still parse, with the database unknown. `? -1` marks a full sync in progress (the
//! target holds this link's data, but no offset to resume from). Keys under [`KEY_PREFIX`] are never copied by any
//! shake tool, so a checkpoint never travels to another server.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::client::{slot_of, SLOTS};

/// Every key shake-sync writes for itself starts with this; such keys are never synced and
/// shake-check leaves them out unless told otherwise.
pub const KEY_PREFIX: &[u8] = b"shake-sync:";

/// Whether `key` is one of shake-sync's own keys.
pub fn is_internal_key(key: &[u8]) -> bool {
    key.starts_with(KEY_PREFIX)
}

/// The short strings that hash to each slot: `slot_tags()[s]` put in `{...}` routes to slot `s`.
pub fn slot_tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; SLOTS];
        let mut left = SLOTS;
        let mut n: u64 = 0;
        // About 150k candidates cover all 16384 slots.
        while left > 0 {
            let s = n.to_string();
            let slot = slot_of(s.as_bytes()) as usize;
            if tags[slot].is_none() {
                tags[slot] = Some(s);
                left -= 1;
            }
            n += 1;
        }
        tags.into_iter().map(|t| t.unwrap_or_default()).collect()
    })
}

/// The names of one link's checkpoint keys.
#[derive(Debug, Clone)]
pub struct CheckpointKeys {
    base: String,
    cluster: bool,
}

/// Which checkpoint a command's commit goes under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// A standalone target: everything.
    Single,
    /// A cluster target: one hash slot.
    Slot(u16),
    /// A cluster target: commands without a key, run on every master.
    Global,
}

impl CheckpointKeys {
    /// `link` names the source link (`--checkpoint-name`, plus the shard's first slot for a
    /// cluster source).
    pub fn new(link: &str, cluster: bool) -> Self {
        CheckpointKeys {
            base: format!("{}checkpoint:{link}", String::from_utf8_lossy(KEY_PREFIX)),
            cluster,
        }
    }

    pub fn low_water(&self) -> Vec<u8> {
        self.base.clone().into_bytes()
    }

    pub fn domain_key(&self, d: Domain) -> Vec<u8> {
        match d {
            Domain::Single => format!("{}:applied", self.base),
            Domain::Global => format!("{}:global", self.base),
            Domain::Slot(s) => format!("{}:{{{}}}", self.base, slot_tags()[s as usize]),
        }
        .into_bytes()
    }

    /// The domain a checkpoint key belongs to (`None` for the low-water key or another link's).
    pub fn domain_of(&self, key: &[u8]) -> Option<Domain> {
        let rest = key.strip_prefix(self.base.as_bytes())?.strip_prefix(b":")?;
        match rest {
            b"applied" if !self.cluster => Some(Domain::Single),
            b"global" if self.cluster => Some(Domain::Global),
            _ if self.cluster && rest.starts_with(b"{") && rest.ends_with(b"}") => {
                Some(Domain::Slot(slot_of(key)))
            }
            _ => None,
        }
    }

    /// A SCAN MATCH pattern for this link's domain keys.
    pub fn domain_pattern(&self) -> Vec<u8> {
        let mut p = glob_escape(self.base.as_bytes());
        p.extend_from_slice(b":*");
        p
    }

    /// A SCAN MATCH pattern for the keys of every link named `<sync>/...` (a cluster source's
    /// links), and the low-water key names among what it finds, with their link names.
    pub fn links_pattern(sync: &str) -> Vec<u8> {
        let mut p = glob_escape(
            format!("{}checkpoint:{sync}/", String::from_utf8_lossy(KEY_PREFIX)).as_bytes(),
        );
        p.push(b'*');
        p
    }

    /// The link name of a low-water key of a link named `<sync>/<suffix>` (suffixes have no
    /// `:`; domain keys add `:<domain>`).
    pub fn low_water_link(sync: &str, key: &[u8]) -> Option<String> {
        let head = format!("{}checkpoint:{sync}/", String::from_utf8_lossy(KEY_PREFIX));
        let rest = key.strip_prefix(head.as_bytes())?;
        (!rest.is_empty() && !rest.contains(&b':'))
            .then(|| format!("{sync}/{}", String::from_utf8_lossy(rest)))
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }
}

fn glob_escape(s: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(s.len() + 2);
    for &b in s {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            p.push(b'\\');
        }
        p.push(b);
    }
    p
}

/// A checkpoint value: the source's replication id and the offset of the last applied byte;
/// `offset: None` is a full sync in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub replid: String,
    pub offset: Option<u64>,
    /// The source stream's database at `offset` (`None`: a value of an older shake-sync, or a
    /// full sync in progress).
    pub db: Option<u64>,
}

impl Checkpoint {
    pub fn in_progress() -> Self {
        Checkpoint {
            replid: "?".into(),
            offset: None,
            db: None,
        }
    }

    /// The position after byte `offset` of `replid`'s stream, where the stream's current
    /// database is `db`.
    pub fn at(replid: &str, offset: u64, db: u64) -> Self {
        Checkpoint {
            replid: replid.to_string(),
            offset: Some(offset),
            db: Some(db),
        }
    }

    /// `SET key <value>`, encoded.
    pub fn set_command(&self, key: &[u8]) -> Vec<u8> {
        let value = self.encode();
        let mut out = Vec::with_capacity(key.len() + value.len() + 32);
        crate::resp::encode_command(&mut out, &[&b"SET"[..], key, value.as_bytes()]);
        out
    }

    pub fn encode(&self) -> String {
        match (self.offset, self.db) {
            (Some(o), Some(db)) => format!("{} {o} {db}", self.replid),
            (Some(o), None) => format!("{} {o}", self.replid),
            (None, _) => "? -1".into(),
        }
    }

    pub fn parse(v: &[u8]) -> Result<Checkpoint, String> {
        let text = std::str::from_utf8(v).map_err(|_| "not text".to_string())?;
        let mut parts = text.split(' ');
        let (Some(replid), Some(off), db, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{text:?} is not \"<replid> <offset> <db>\""));
        };
        if off == "-1" && replid == "?" && db.is_none() {
            return Ok(Checkpoint::in_progress());
        }
        let offset = off
            .parse::<u64>()
            .map_err(|_| format!("{text:?}: bad offset"))?;
        let db = match db {
            Some(d) => Some(
                d.parse::<u64>()
                    .map_err(|_| format!("{text:?}: bad database number"))?,
            ),
            None => None,
        };
        Ok(Checkpoint {
            replid: replid.to_string(),
            offset: Some(offset),
            db,
        })
    }
}

/// What a restart found on the target.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The low-water mark (`None`: this link never wrote here).
    pub low_water: Option<Checkpoint>,
    /// Per domain: the offset of the last command committed in it.
    pub domains: HashMap<Domain, u64>,
    /// Per domain: the source database recorded with that offset (absent: an older value).
    pub domain_dbs: HashMap<Domain, u64>,
}

impl Applied {
    /// The offset to resume the stream after (`PSYNC <replid> <offset+1>`): on a standalone
    /// target the single domain's offset when it is ahead of the low-water mark, which it is
    /// unless the stream carried nothing but PINGs and filtered commands since.
    pub fn resume_offset(&self) -> Option<(String, u64)> {
        let lw = self.low_water.as_ref()?;
        let mut off = lw.offset?;
        if let Some(&d) = self.domains.get(&Domain::Single) {
            off = off.max(d);
        }
        Some((lw.replid.clone(), off))
    }

    /// The source stream's database at [`Applied::resume_offset`] (`None`: the checkpoint was
    /// written by a shake-sync that did not record it).
    pub fn resume_db(&self) -> Option<u64> {
        let lw = self.low_water.as_ref()?;
        let off = lw.offset?;
        match self.domains.get(&Domain::Single) {
            Some(&d) if d > off => self.domain_dbs.get(&Domain::Single).copied(),
            Some(&d) if d == off => self.domain_dbs.get(&Domain::Single).copied().or(lw.db),
            _ => lw.db,
        }
    }

    /// Whether the command of `domain` ending at stream offset `end` is already on the target.
    pub fn holds(&self, domain: Domain, end: u64) -> bool {
        let lw = self.low_water.as_ref().and_then(|c| c.offset).unwrap_or(0);
        end <= lw.max(self.domains.get(&domain).copied().unwrap_or(0))
    }

    /// The highest offset any domain holds: past it, nothing more needs to be skipped.
    pub fn horizon(&self) -> u64 {
        self.domains.values().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag() {
        let tags = slot_tags();
        assert_eq!(tags.len(), SLOTS);
        for (s, t) in tags.iter().enumerate() {
            assert_eq!(slot_of(t.as_bytes()) as usize, s);
        }
        let k = CheckpointKeys::new("10.0.0.1:6379", true);
        for s in [0u16, 1, 5000, 16383] {
            let key = k.domain_key(Domain::Slot(s));
            assert_eq!(slot_of(&key), s);
            assert_eq!(k.domain_of(&key), Some(Domain::Slot(s)));
        }
        assert_eq!(
            k.domain_of(&k.domain_key(Domain::Global)),
            Some(Domain::Global)
        );
        assert_eq!(k.domain_of(&k.low_water()), None);
        assert!(is_internal_key(&k.low_water()));
    }

    #[test]
    fn values_round_trip() {
        let c = Checkpoint::at("8f3a", 1234, 5);
        assert_eq!(c.encode(), "8f3a 1234 5");
        assert_eq!(Checkpoint::parse(c.encode().as_bytes()).unwrap(), c);
        // A value of an older shake-sync: the database is unknown.
        let old = Checkpoint::parse(b"8f3a 1234").unwrap();
        assert_eq!((old.offset, old.db), (Some(1234), None));
        let p = Checkpoint::in_progress();
        assert_eq!(Checkpoint::parse(p.encode().as_bytes()).unwrap(), p);
        for bad in [
            &b"x"[..],
            b"a b c",
            b"a -5",
            b"\xff 1",
            b"a 1 2 3",
            b"a 1 -2",
            b"? -1 0",
        ] {
            assert!(Checkpoint::parse(bad).is_err());
        }
    }

    #[test]
    fn holds_per_domain() {
        let mut a = Applied {
            low_water: Some(Checkpoint::at("r", 100, 1)),
            ..Applied::default()
        };
        a.domains.insert(Domain::Slot(7), 150);
        assert!(a.holds(Domain::Slot(7), 150));
        assert!(!a.holds(Domain::Slot(7), 151));
        assert!(a.holds(Domain::Slot(8), 100));
        assert!(!a.holds(Domain::Slot(8), 101));
        assert_eq!(a.resume_offset(), Some(("r".into(), 100)));
        assert_eq!(a.resume_db(), Some(1));
        a.domains.insert(Domain::Single, 170);
        a.domain_dbs.insert(Domain::Single, 5);
        assert_eq!(a.resume_offset(), Some(("r".into(), 170)));
        assert_eq!(a.resume_db(), Some(5));
        a.domain_dbs.clear();
        assert_eq!(a.resume_db(), None);
        assert_eq!(
            CheckpointKeys::new("a*b", false).domain_pattern(),
            b"shake-sync:checkpoint:a\\*b:*".to_vec()
        );
    }
}
