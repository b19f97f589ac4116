//! The judgements behind the checks, as plain functions of numbers, so the thresholds are in one
//! place and testable without a server.

use std::collections::BTreeSet;

use crate::rdb::types as t;
use crate::rdb::{Header, Magic};

use super::report::Status;

/// A backlog that holds at least this many seconds of writes is OK; less is a WARN (a network
/// blip or a restart longer than that means a new full sync instead of a partial resync).
pub const BACKLOG_OK_SECS: f64 = 60.0;

/// The shortest a full sync is assumed to take: connection, fork, the first bytes.
pub const MIN_SYNC_SECS: f64 = 10.0;

/// The rate a full sync is assumed to move the source's dataset at (bytes of used memory per
/// second): producing the snapshot, sending it, and loading it into the target. Measured runs
/// (README, Benchmarks) move 50-70 MB/s of RDB on loopback; memory is larger than its RDB, so
/// this errs towards a longer sync.
pub const SYNC_BYTES_PER_SEC: f64 = 50.0 * 1024.0 * 1024.0;

/// Target memory headroom below which a WARN is given (the source's data needs more than this
/// share of what is free).
pub const MEMORY_WARN_SHARE: f64 = 0.8;

pub fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse::<u64>().ok()
}

/// "1.5 MiB", "512 B".
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn rate(bps: f64) -> String {
    format!("{}/s", bytes(bps.max(0.0) as u64))
}

/// The replica class of `client-output-buffer-limit` (`slave` or `replica`): hard bytes, soft
/// bytes, soft seconds. Values may carry units (`256mb`) when read back from some servers.
pub fn replica_buffer_limit(config: &str) -> Option<(u64, u64, u64)> {
    let words: Vec<&str> = config.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("slave") || w.eq_ignore_ascii_case("replica"))?;
    let num = |s: &str| memory_value(s);
    Some((
        num(words.get(i + 1)?)?,
        num(words.get(i + 2)?)?,
        words.get(i + 3)?.parse().ok()?,
    ))
}

/// A Redis memory value: `1048576`, `1mb`, `1m`, `2gb`, `64k`.
pub fn memory_value(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits.parse().ok()?;
    let mul = match &s[digits.len()..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// How long a full sync of `dataset` bytes is estimated to take, with the source's diskless
/// delay in front.
pub fn sync_seconds(dataset: u64, diskless_delay: u64) -> f64 {
    (diskless_delay as f64 + dataset as f64 / SYNC_BYTES_PER_SEC).max(MIN_SYNC_SECS)
}

/// Whether writes at `rate` bytes/s for `secs` seconds overflow a replica output buffer with
/// these limits (0 = no limit): past the hard limit at once, or above the soft limit for longer
/// than its seconds.
pub fn buffer_overflows(rate: f64, secs: f64, hard: u64, soft: u64, soft_secs: u64) -> bool {
    let need = rate * secs;
    if hard > 0 && need >= hard as f64 {
        return true;
    }
    if soft > 0 && rate > 0.0 {
        let above = secs - soft as f64 / rate;
        return above > 0.0 && above >= soft_secs as f64;
    }
    false
}

/// The verdict on the replica output buffer: FAIL when the estimated writes overflow it, WARN
/// when twice that rate would (writes come in bursts), else OK.
pub fn output_buffer_status(rate: f64, secs: f64, hard: u64, soft: u64, soft_secs: u64) -> Status {
    if buffer_overflows(rate, secs, hard, soft, soft_secs) {
        Status::Fail
    } else if buffer_overflows(rate * 2.0, secs, hard, soft, soft_secs) {
        Status::Warn
    } else {
        Status::Ok
    }
}

/// The verdict on `maxmemory-policy`: evicting policies can drop synced keys silently.
pub fn eviction_status(maxmemory: u64, policy: &str) -> Status {
    if maxmemory == 0 || policy == "noeviction" {
        Status::Ok
    } else if policy.starts_with("volatile") {
        Status::Warn
    } else {
        Status::Fail
    }
}

/// The verdict on memory: `need` bytes into `free` bytes.
pub fn memory_status(need: u64, free: u64) -> Status {
    if need > free {
        Status::Fail
    } else if need as f64 > free as f64 * MEMORY_WARN_SHARE {
        Status::Warn
    } else {
        Status::Ok
    }
}

/// The encodings a server writing RDBs with `h` produces for ordinary data (the compact and the
/// large form of every type; hash field TTL types are decided separately, by whether the
/// keyspace has any).
pub fn native_types(h: Header) -> BTreeSet<u8> {
    let v = h.version;
    let mut s: BTreeSet<u8> = [t::STRING, t::SET, t::HASH, t::SET_INTSET].into();
    s.insert(if v >= 8 { t::ZSET_2 } else { t::ZSET });
    if v >= 10 {
        s.extend([t::LIST_QUICKLIST_2, t::HASH_LISTPACK, t::ZSET_LISTPACK]);
    } else {
        s.extend([t::HASH_ZIPLIST, t::ZSET_ZIPLIST]);
        s.insert(if v >= 7 {
            t::LIST_QUICKLIST
        } else {
            t::LIST_ZIPLIST
        });
    }
    if v >= 11 {
        s.extend([t::SET_LISTPACK, t::STREAM_LISTPACKS_3]);
    } else if v == 10 {
        s.insert(t::STREAM_LISTPACKS_2);
    } else if v == 9 {
        s.insert(t::STREAM_LISTPACKS);
    }
    s
}

/// The hash types with field TTLs a source of this format writes.
pub fn field_ttl_types(h: Header) -> BTreeSet<u8> {
    match h.magic {
        Magic::Redis if h.version >= 12 => [t::HASH_METADATA, t::HASH_LISTPACK_EX].into(),
        Magic::Valkey if h.version >= 80 => [t::HASH_METADATA_PRE_GA].into(),
        _ => BTreeSet::new(),
    }
}

pub fn is_field_ttl_type(h: Header, ty: u8) -> bool {
    t::info(ty, h).is_some_and(|r| r.field_ttls)
}

/// A person's name for an RDB type, for messages.
pub fn type_name(h: Header, ty: u8) -> String {
    t::type_name(h, ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buffer_limits() {
        let c = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";
        assert_eq!(replica_buffer_limit(c), Some((268435456, 67108864, 60)));
        assert_eq!(
            replica_buffer_limit("replica 1mb 1mb 0"),
            Some((1 << 20, 1 << 20, 0))
        );
        assert_eq!(replica_buffer_limit("normal 0 0 0"), None);
        assert_eq!(memory_value("2gb"), Some(2 << 30));
        assert_eq!(memory_value("x"), None);
    }

    #[test]
    fn buffer_verdicts() {
        // 1 MiB/s for 10 s against the default limits: fine.
        let mib = 1024.0 * 1024.0;
        assert_eq!(
            output_buffer_status(mib, 10.0, 256 << 20, 64 << 20, 60),
            Status::Ok
        );
        // Against 1 MiB hard: cut.
        assert_eq!(
            output_buffer_status(mib, 10.0, 1 << 20, 1 << 20, 0),
            Status::Fail
        );
        // 4 MiB/s for 100 s: 64 MiB soft is passed after 16 s and stays above for 84 s > 60.
        assert_eq!(
            output_buffer_status(4.0 * mib, 100.0, 0, 64 << 20, 60),
            Status::Fail
        );
        // Unlimited: never.
        assert_eq!(output_buffer_status(1e12, 1e6, 0, 0, 0), Status::Ok);
        // Idle source: never.
        assert_eq!(output_buffer_status(0.0, 100.0, 1, 1, 0), Status::Ok);
        // Within a factor two: WARN.
        assert_eq!(
            output_buffer_status(0.6 * mib, 10.0, 10 << 20, 0, 0),
            Status::Warn
        );
    }

    #[test]
    fn eviction_and_memory() {
        assert_eq!(eviction_status(0, "allkeys-lru"), Status::Ok);
        assert_eq!(eviction_status(1, "noeviction"), Status::Ok);
        assert_eq!(eviction_status(1, "volatile-ttl"), Status::Warn);
        assert_eq!(eviction_status(1, "allkeys-lfu"), Status::Fail);
        assert_eq!(memory_status(10, 100), Status::Ok);
        assert_eq!(memory_status(90, 100), Status::Warn);
        assert_eq!(memory_status(101, 100), Status::Fail);
    }

    #[test]
    fn native_types_follow_the_version() {
        let h = |magic, version| Header { magic, version };
        assert!(native_types(h(Magic::Redis, 9)).contains(&t::HASH_ZIPLIST));
        assert!(native_types(h(Magic::Redis, 10)).contains(&t::LIST_QUICKLIST_2));
        assert!(!native_types(h(Magic::Redis, 10)).contains(&t::SET_LISTPACK));
        assert!(native_types(h(Magic::Valkey, 80)).contains(&t::SET_LISTPACK));
        assert!(field_ttl_types(h(Magic::Redis, 11)).is_empty());
        assert!(is_field_ttl_type(
            h(Magic::Valkey, 80),
            t::HASH_METADATA_PRE_GA
        ));
        assert!(!is_field_ttl_type(h(Magic::Valkey, 80), t::HASH_METADATA));
    }
}
