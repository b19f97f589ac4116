//! One migration spread over N processes (`--shard K/N`): which source masters process K takes.
//! Every tool that reads a source master by master (shake-sync, shake-dump, shake-rump,
//! shake-check) asks [`Shard::takes`] here, and nowhere else.
//!
//! The slot space is cut into N equal ranges, shard K owning slots `K*16384/N ..
//! (K+1)*16384/N - 1`, and a master belongs to the shard whose range holds the **first slot it
//! serves**. So the assignment depends only on slots, which every process reads alike from the
//! cluster: a failover or a replica promotion keeps the master's slots, hence its shard; a
//! resharding moves a master to another shard only when it changes the master's first slot.
//! Nothing is shared between the processes but the cluster they read. A standalone source (no
//! slots) counts as first slot 0: shard 0 takes it, the others have nothing to do.
//!
//! `--shard-from-hostname` reads K from `SHAKE_SHARD_INDEX` when it is set (the manifests set it
//! from the StatefulSet's `apps.kubernetes.io/pod-index` label or an Indexed Job's completion
//! index through the downward API), else from the hostname `NAME-K` (a StatefulSet ordinal); N
//! comes from `--shards N`.

use crate::client::SLOTS;

/// Shard K of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The variable the manifests fill with the shard's index.
pub const INDEX_ENV: &str = "SHAKE_SHARD_INDEX";

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The only shard of an unsharded run.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || count as usize > SLOTS {
            return Err(format!(
                "{count} shards: expected 1 to {SLOTS} (there are {SLOTS} hash slots to share)"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count}: the index counts from 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// `K/N`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s:?}: expected K/N, e.g. 0/3"))?;
        let num = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("--shard {s:?}: expected K/N with whole numbers, e.g. 0/3"))
        };
        Shard::new(num(k)?, num(n)?).map_err(|e| format!("--shard {s}: {e}"))
    }

    /// K from `index` (the value of [`INDEX_ENV`], when set and not empty) or else from the
    /// digits after the last `-` of `hostname` (`shake-sync-2` is 2); N is `count`.
    pub fn from_hostname(count: u32, index: Option<&str>, hostname: &str) -> Result<Shard, String> {
        let (k, from) = match index.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => (v, format!("{INDEX_ENV}={v:?}")),
            None => {
                let host = hostname.trim();
                let k = host.rsplit_once('-').map(|(_, k)| k).unwrap_or("");
                (k, format!("hostname {host:?}"))
            }
        };
        let k = k.parse::<u32>().map_err(|_| {
            format!("--shard-from-hostname: {from} does not end in -K (a StatefulSet ordinal); set {INDEX_ENV} or give --shard K/N")
        })?;
        Shard::new(k, count).map_err(|e| format!("--shard-from-hostname: {from}: {e}"))
    }

    /// The slots whose masters this shard takes, first and last.
    pub fn slot_range(&self) -> (u16, u16) {
        let at = |k: u32| (k as u64 * SLOTS as u64 / self.count as u64) as u16;
        (at(self.index), at(self.index + 1).wrapping_sub(1))
    }

    /// Whether a master whose first slot is `first_slot` (`None`: a standalone server) belongs
    /// to this shard.
    pub fn takes(&self, first_slot: Option<u16>) -> bool {
        let (lo, hi) = self.slot_range();
        let slot = first_slot.unwrap_or(0);
        lo <= slot && slot <= hi
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// The `shard` label of metrics: K.
    pub fn label(&self) -> String {
        self.index.to_string()
    }

    /// What a shard with nothing to do says (it exits 0: the other shards do the work).
    pub fn nothing_to_do(&self, masters: usize) -> String {
        let (lo, hi) = self.slot_range();
        format!(
            "shard {self}: none of the source's {masters} master(s) has its first slot in {lo}..{hi}; nothing to do"
        )
    }
}

/// The hostname, for `--shard-from-hostname`: `HOSTNAME` (set in every container), else the
/// kernel's.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_exactly_one_shard() {
        for n in [1u32, 2, 3, 5, 6, 7, 16384] {
            let shards: Vec<Shard> = (0..n).map(|k| Shard::new(k, n).unwrap()).collect();
            for slot in (0..SLOTS as u16).step_by(if n > 100 { 1 } else { 7 }) {
                let owners = shards.iter().filter(|s| s.takes(Some(slot))).count();
                assert_eq!(owners, 1, "slot {slot} of {n} shards");
            }
            assert!(shards[0].takes(None), "a standalone source goes to shard 0");
            assert!(shards[(n - 1) as usize].takes(Some(16383)));
        }
    }

    #[test]
    fn six_masters_over_three_shards_two_each() {
        // redis-cli --cluster create's ranges for six masters.
        let firsts = [0u16, 2731, 5462, 8192, 10923, 13653];
        let per: Vec<usize> = (0..3)
            .map(|k| {
                let s = Shard::new(k, 3).unwrap();
                firsts.iter().filter(|&&f| s.takes(Some(f))).count()
            })
            .collect();
        assert_eq!(per, [2, 2, 2]);
    }

    #[test]
    fn parsing() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        assert!(Shard::parse("3/3").unwrap_err().contains("from 0 to 2"));
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("1").unwrap_err().contains("K/N"));
        assert_eq!(
            Shard::from_hostname(3, None, "shake-sync-2\n").unwrap(),
            Shard { index: 2, count: 3 }
        );
        assert_eq!(
            Shard::from_hostname(3, Some("1"), "whatever")
                .unwrap()
                .index,
            1
        );
        assert_eq!(Shard::from_hostname(3, Some(""), "a-b-0").unwrap().index, 0);
        assert!(Shard::from_hostname(3, None, "shake-sync")
            .unwrap_err()
            .contains("does not end in -K"));
        assert!(Shard::from_hostname(2, None, "shake-sync-2")
            .unwrap_err()
            .contains("from 0 to 1"));
    }
}
