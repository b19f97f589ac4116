//! Helpers for the writer tests: filling a source server with every type in its small and large
//! encodings, and projecting a source snapshot onto what an older target can show.
//!
//! Like `live_common`, nothing here goes through shake-core: the data is made with plain
//! commands and read back by the server.

#![allow(dead_code)]

use std::collections::BTreeMap;

use crate::live_common::{q, EntriesRead, Snapshot, Val};
use shake_tests::Flavor;

/// What the source server can do, from its flavor.
#[derive(Clone, Copy)]
pub struct Caps {
    /// 6.2 names its compact encoding "ziplist" (config names).
    pub ziplist: bool,
    /// 7.2+ / Valkey: small sets of strings are listpacks (type 20), streams are type 21.
    pub listpack_sets: bool,
    /// 7.0+: XSETID ENTRIESADDED/MAXDELETEDID, XGROUP CREATE ... ENTRIESREAD.
    pub v7: bool,
    /// Valkey 9+ and Redis 7.4+ (8.2 here): hash field TTLs.
    pub field_ttl: bool,
}

impl Caps {
    pub fn of(f: Flavor) -> Caps {
        Caps {
            ziplist: f == Flavor::Redis62,
            listpack_sets: f.is_valkey() || f == Flavor::Redis82,
            v7: f.is_7_0_or_later(),
            field_ttl: f.has_field_ttls(),
        }
    }
    fn conf(&self, pattern: &str) -> String {
        pattern.replace("PACK", if self.ziplist { "ziplist" } else { "listpack" })
    }
}

pub fn config_set(con: &mut redis::Connection, name: &str, value: impl redis::ToRedisArgs) {
    let _: () = q(con, redis::cmd("CONFIG").arg("SET").arg(name).arg(value));
}

fn rpush(con: &mut redis::Connection, key: &str, items: &[Vec<u8>]) {
    let mut pipe = redis::pipe();
    for chunk in items.chunks(1000) {
        pipe.cmd("RPUSH").arg(key).arg(chunk).ignore();
    }
    let _: () = pipe
        .query(con)
        .unwrap_or_else(|e| panic!("RPUSH {key}: {e}"));
}

fn hset(con: &mut redis::Connection, key: &str, pairs: &[(Vec<u8>, Vec<u8>)]) {
    let mut pipe = redis::pipe();
    for chunk in pairs.chunks(1000) {
        let c = pipe.cmd("HSET").arg(key);
        for (f, v) in chunk {
            c.arg(f).arg(v);
        }
        c.ignore();
    }
    let _: () = pipe
        .query(con)
        .unwrap_or_else(|e| panic!("HSET {key}: {e}"));
}

fn sadd(con: &mut redis::Connection, key: &str, members: &[Vec<u8>]) {
    let _: i64 = q(con, redis::cmd("SADD").arg(key).arg(members));
}

fn zadd(con: &mut redis::Connection, key: &str, items: &[(String, Vec<u8>)]) {
    let mut c = redis::cmd("ZADD");
    c.arg(key);
    for (score, member) in items {
        c.arg(score).arg(member);
    }
    let _: i64 = q(con, &c);
}

/// Elements at every integer-width and string-length boundary of ziplists, listpacks and
/// intsets, integer-looking strings that are not canonical, binary bytes.
pub fn element_matrix() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "0",
        "1",
        "12",
        "13",
        "127",
        "128",
        "-1",
        "-128",
        "-129",
        "4095",
        "4096",
        "-4096",
        "-4097",
        "32767",
        "-32768",
        "32768",
        "8388607",
        "-8388608",
        "8388608",
        "2147483647",
        "-2147483648",
        "2147483648",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "007",
        "+1",
        "-0",
        "1.5",
        " 1",
        "",
        "a",
        "ключ🔑",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for len in [63usize, 64, 4095, 4096, 16377, 16379] {
        v.push(vec![b's'; len]);
    }
    v.push(b"abc".repeat(7000));
    v.push((0..=255u8).collect());
    v.push(vec![0xc3, 0x28]);
    v
}

/// Scores that need every bit of a double, as the client sends them.
pub fn special_scores() -> Vec<&'static str> {
    vec![
        "0.1234567891",
        "1e-9",
        "9007199254740993",
        "-0.0",
        "0",
        "inf",
        "-inf",
        "5e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "-1e308",
        "0.30000000000000004",
        "-123.456",
        "4294967296",
    ]
}

/// Fills database 0 with every type in its compact and its large encoding, streams with groups,
/// PEL, consumers and tombstones, TTLs, and (Valkey 9.1) hash field TTLs.
pub fn fill(con: &mut redis::Connection, flavor: Flavor, now_ms: i64) {
    let caps = Caps::of(flavor);
    let matrix = element_matrix();
    config_set(con, &caps.conf("hash-max-PACK-value"), 65536);
    config_set(con, &caps.conf("zset-max-PACK-value"), 65536);
    if caps.listpack_sets {
        config_set(con, "set-max-listpack-value", 65536);
    }
    config_set(con, &caps.conf("list-max-PACK-size"), -5);

    // --- strings
    let strings: Vec<(&str, Vec<u8>)> = vec![
        (
            "str:raw",
            b"a raw string, long enough not to be embedded in its object. ".repeat(6),
        ),
        ("str:embstr", b"short".to_vec()),
        ("str:empty", Vec::new()),
        ("str:int:small", b"-7".to_vec()),
        ("str:int:16", b"-32768".to_vec()),
        ("str:int:32", b"2147483647".to_vec()),
        ("str:int:64", b"9223372036854775807".to_vec()),
        ("str:notint", b"-0".to_vec()),
        ("str:lzf", b"compress me ".repeat(2000)),
        ("str:binary", (0..=255u8).cycle().take(3000).collect()),
    ];
    for (k, v) in &strings {
        let _: () = q(con, redis::cmd("SET").arg(*k).arg(v));
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise = shake_tests::incompressible(50_000, &mut x);
    let _: () = q(con, redis::cmd("SET").arg("str:incompressible").arg(&noise));
    let _: () = q(
        con,
        redis::cmd("SET")
            .arg(&b"\xff\x00key"[..])
            .arg("binary key name"),
    );
    let _: () = q(con, redis::cmd("SET").arg("12345").arg("integer key name"));

    // --- lists: compact, quicklist of many (partly compressed) nodes, big
    rpush(con, "list:compact", &matrix);
    config_set(con, &caps.conf("list-max-PACK-size"), 4);
    config_set(con, "list-compress-depth", 1);
    let ql: Vec<Vec<u8>> = (0..800)
        .map(|i| {
            if i % 3 == 0 {
                (i as i64 * 7919 - 3_000_000).to_string().into_bytes()
            } else {
                format!("element {i:05} padded to make nodes compressible").into_bytes()
            }
        })
        .collect();
    rpush(con, "list:quicklist", &ql);
    config_set(con, "list-compress-depth", 0);
    config_set(con, &caps.conf("list-max-PACK-size"), -2);
    let big: Vec<Vec<u8>> = (0..20_000u32)
        .map(|i| {
            if i % 2 == 0 {
                i.to_string().into_bytes()
            } else {
                format!("v{i}").into_bytes()
            }
        })
        .collect();
    rpush(con, "list:big", &big);

    // --- sets: intsets of each width, listpack (7.2+), hashtable, big
    let ints = |xs: &[i64]| {
        xs.iter()
            .map(|i| i.to_string().into_bytes())
            .collect::<Vec<_>>()
    };
    sadd(con, "set:intset:16", &ints(&[1, -2, 300, 32767, -32768]));
    sadd(
        con,
        "set:intset:32",
        &ints(&[1, 65536, -2147483648, 2147483647]),
    );
    sadd(
        con,
        "set:intset:64",
        &ints(&[1, 4294967296, i64::MIN, i64::MAX]),
    );
    sadd(con, "set:strings", &matrix);
    sadd(
        con,
        "set:small-strings",
        &[b"a".to_vec(), b"b".to_vec(), b"-0".to_vec()],
    );
    let members: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("member-{i}").into_bytes())
        .collect();
    sadd(con, "set:big", &members);

    // --- sorted sets
    let specials = special_scores();
    let scored = |members: &[Vec<u8>]| -> Vec<(String, Vec<u8>)> {
        members
            .iter()
            .enumerate()
            .map(|(i, m)| (specials[i % specials.len()].to_string(), m.clone()))
            .collect()
    };
    let small: Vec<Vec<u8>> = (0..specials.len())
        .map(|i| format!("m{i}").into_bytes())
        .collect();
    zadd(con, "zset:compact", &scored(&small));
    zadd(con, "zset:compact:matrix", &scored(&matrix));
    let mut sk = scored(&matrix);
    sk.extend((0..300).map(|i| {
        (
            format!("{}", (i as f64) * 1.1e-7 - 3.3),
            format!("member:{i}").into_bytes(),
        )
    }));
    zadd(con, "zset:skiplist", &sk);
    zadd(
        con,
        "zset:ints",
        &(0..40)
            .map(|i| {
                (
                    ((i as i64 - 20) * 1_000_000_007).to_string(),
                    format!("i{i}").into_bytes(),
                )
            })
            .collect::<Vec<_>>(),
    );

    // --- hashes
    let n = matrix.len();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| (matrix[i].clone(), matrix[(i + 7) % n].clone()))
        .collect();
    hset(con, "hash:compact", &pairs);
    hset(
        con,
        "hash:small",
        &[
            (b"name".to_vec(), b"ann".to_vec()),
            (b"age".to_vec(), b"31".to_vec()),
        ],
    );
    let big_pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..5000)
        .map(|i| {
            (
                format!("field:{i}").into_bytes(),
                if i % 2 == 0 {
                    i.to_string().into_bytes()
                } else {
                    format!("value {i}").into_bytes()
                },
            )
        })
        .collect();
    hset(con, "hash:big", &big_pairs);

    fill_streams(con, caps);

    // --- TTLs, millisecond precision
    for (k, at) in [
        ("str:raw", now_ms + 86_400_123),
        ("list:quicklist", now_ms + 3_600_007),
        ("zset:skiplist", now_ms + 7_200_999),
        ("hash:compact", now_ms + 7_200_000),
        ("stream:basic", now_ms + 5_000_001),
        ("set:intset:16", 4_102_444_800_000),
    ] {
        let _: i64 = q(con, redis::cmd("PEXPIREAT").arg(k).arg(at));
    }

    // --- hash field TTLs (Valkey 9.1): small (HASH_2 even when small), mixed, all, big
    if caps.field_ttl {
        hset(
            con,
            "hash:fttl:small",
            &[
                (b"keep".to_vec(), b"1".to_vec()),
                (b"go".to_vec(), b"2".to_vec()),
            ],
        );
        let _: Vec<i64> = q(
            con,
            redis::cmd("HPEXPIREAT")
                .arg("hash:fttl:small")
                .arg(now_ms + 3_600_123)
                .arg("FIELDS")
                .arg(1)
                .arg("go"),
        );
        let _: i64 = q(
            con,
            redis::cmd("HSETEX")
                .arg("hash:fttl:all")
                .arg("PX")
                .arg(86_400_000)
                .arg("FIELDS")
                .arg(2)
                .arg("a")
                .arg("1")
                .arg(&b"\xff"[..])
                .arg("binary field"),
        );
        hset(
            con,
            "hash:fttl:keyttl",
            &[
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
            ],
        );
        let _: Vec<i64> = q(
            con,
            redis::cmd("HPEXPIREAT")
                .arg("hash:fttl:keyttl")
                .arg(now_ms + 100_000_001)
                .arg("FIELDS")
                .arg(1)
                .arg("a"),
        );
        let _: i64 = q(
            con,
            redis::cmd("PEXPIREAT")
                .arg("hash:fttl:keyttl")
                .arg(now_ms + 200_000_002),
        );
        let big: Vec<(Vec<u8>, Vec<u8>)> = (0..1500)
            .map(|i| (format!("f{i}").into_bytes(), i.to_string().into_bytes()))
            .collect();
        hset(con, "hash:fttl:big", &big);
        let mut c = redis::cmd("HPEXPIREAT");
        c.arg("hash:fttl:big")
            .arg(now_ms + 50_000_000)
            .arg("FIELDS")
            .arg(750);
        for i in (0..1500).step_by(2) {
            c.arg(format!("f{i}"));
        }
        let _: Vec<i64> = q(con, &c);
    }
}

fn xadd(con: &mut redis::Connection, key: &str, id: &str, fields: &[(&[u8], &[u8])]) -> String {
    let mut c = redis::cmd("XADD");
    c.arg(key).arg(id);
    for (f, v) in fields {
        c.arg(*f).arg(*v);
    }
    q(con, &c)
}

/// XREADGROUP ... COUNT n STREAMS key >: the ids delivered.
fn read_group(
    con: &mut redis::Connection,
    key: &str,
    group: &[u8],
    consumer: &[u8],
    count: usize,
) -> Vec<String> {
    let v: redis::Value = q(
        con,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(key)
            .arg(">"),
    );
    let mut ids = Vec::new();
    let redis::Value::Array(streams) = v else {
        return ids;
    };
    for s in streams {
        let redis::Value::Array(kv) = s else { continue };
        let Some(redis::Value::Array(entries)) = kv.get(1) else {
            continue;
        };
        for e in entries {
            if let redis::Value::Array(e) = e {
                if let Some(redis::Value::BulkString(id)) = e.first() {
                    ids.push(String::from_utf8_lossy(id).into_owned());
                }
            }
        }
    }
    ids
}

fn fill_streams(con: &mut redis::Connection, caps: Caps) {
    // Small nodes so the stream spans several listpacks; differing field names; tombstones,
    // one of them still pending; groups with PEL, claims, idle consumers, binary names.
    config_set(con, "stream-node-max-entries", 4);
    let mut ids = Vec::new();
    for i in 1..=30u64 {
        let id = format!("{}-{}", 1_700_000_000_000u64 + i * 10, i % 3);
        let i_s = i.to_string();
        let fields: Vec<(&[u8], &[u8])> = match i % 5 {
            0 => vec![(b"other", b"shape"), (b"x", i_s.as_bytes())],
            _ if i == 11 => vec![(b"name", &[0xff, 0x00, 0xc3, 0x28]), (b"n", b"12345")],
            _ => vec![(b"name", b"ann"), (b"n", i_s.as_bytes())],
        };
        ids.push(xadd(con, "stream:basic", &id, &fields));
    }
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:basic")
            .arg("g1")
            .arg("0"),
    );
    let alice = read_group(con, "stream:basic", b"g1", b"alice", 5);
    let _bob = read_group(con, "stream:basic", b"g1", b"bob", 3);
    let _: i64 = q(
        con,
        redis::cmd("XACK")
            .arg("stream:basic")
            .arg("g1")
            .arg(&alice[1]),
    );
    let _: redis::Value = q(
        con,
        redis::cmd("XCLAIM")
            .arg("stream:basic")
            .arg("g1")
            .arg("bob")
            .arg(0)
            .arg(&alice[2]),
    );
    let _: i64 = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg("stream:basic")
            .arg("g1")
            .arg("carol"),
    );
    if caps.v7 {
        let _: () = q(
            con,
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg("stream:basic")
                .arg("g2")
                .arg("$")
                .arg("ENTRIESREAD")
                .arg(30),
        );
    } else {
        let _: () = q(
            con,
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg("stream:basic")
                .arg("g2")
                .arg("$"),
        );
    }
    // A group at an arbitrary id: entries-read unknown (nil) where the server tracks it.
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:basic")
            .arg("g3")
            .arg(&ids[14]),
    );
    let _dave = read_group(con, "stream:basic", b"g3", b"dave", 2);
    for id in [&ids[0], &ids[9], &ids[19], &ids[29], &alice[3]] {
        let _: i64 = q(con, redis::cmd("XDEL").arg("stream:basic").arg(id));
    }

    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:empty")
            .arg("g")
            .arg("$")
            .arg("MKSTREAM"),
    );
    for i in 1..=3 {
        xadd(
            con,
            "stream:all-deleted",
            &format!("{i}-0"),
            &[(b"f", b"v")],
        );
    }
    for i in 1..=3 {
        let _: i64 = q(
            con,
            redis::cmd("XDEL")
                .arg("stream:all-deleted")
                .arg(format!("{i}-0")),
        );
    }
    xadd(con, "stream:setid", "1-1", &[(b"a", b"1")]);
    xadd(con, "stream:setid", "2-1", &[(b"b", b"2")]);
    if caps.v7 {
        let _: () = q(
            con,
            redis::cmd("XSETID")
                .arg("stream:setid")
                .arg("5-0")
                .arg("ENTRIESADDED")
                .arg(10)
                .arg("MAXDELETEDID")
                .arg("3-0"),
        );
    } else {
        let _: () = q(con, redis::cmd("XSETID").arg("stream:setid").arg("5-0"));
    }
    for i in 1..=50 {
        xadd(
            con,
            "stream:trimmed",
            &format!("{i}-0"),
            &[(b"i", i.to_string().as_bytes())],
        );
    }
    let _: i64 = q(
        con,
        redis::cmd("XTRIM")
            .arg("stream:trimmed")
            .arg("MAXLEN")
            .arg("=")
            .arg(10),
    );
    xadd(
        con,
        "stream:binary",
        "1-0",
        &[(&[0xff, 0xfe], b"v"), (b"ok", &[0x80])],
    );
    xadd(
        con,
        "stream:binary",
        "2-0",
        &[(&[0xff, 0xfe], b"w"), (b"ok", b"")],
    );
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:binary")
            .arg(&b"grp\xff"[..])
            .arg("0"),
    );
    let _ = read_group(con, "stream:binary", b"grp\xff", b"c\xfe", 1);
    // Numeric group and consumer names: stored in the RDB's integer string encodings.
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:binary")
            .arg("12345")
            .arg("0"),
    );
    let _ = read_group(con, "stream:binary", b"12345", b"-7", 2);

    // Default node size, many entries, a big PEL.
    config_set(con, "stream-node-max-entries", 100);
    let mut pipe = redis::pipe();
    for i in 1..=3000u64 {
        pipe.cmd("XADD")
            .arg("stream:big")
            .arg(format!("{}-0", 1_600_000_000_000u64 + i))
            .arg("temp")
            .arg(i % 97)
            .arg("host")
            .arg(format!("h{}", i % 13))
            .ignore();
    }
    let _: () = pipe.query(con).expect("stream:big");
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:big")
            .arg("readers")
            .arg("0"),
    );
    let _ = read_group(con, "stream:big", b"readers", b"r1", 300);
    // Values that straddle the 4096-byte node limit.
    let fat = "F".repeat(1500);
    for i in 1..=7u64 {
        xadd(
            con,
            "stream:fat",
            &format!("{i}-0"),
            &[(b"f", fat.as_bytes()), (b"i", i.to_string().as_bytes())],
        );
    }
}

/// What a key of `src` looks like on a `target` server that received it: the stream fields the
/// target version does not keep (or XINFO does not show) are gone, and field TTLs are dropped
/// when the target has none.
pub fn project(src: &Snapshot, target: Flavor) -> Snapshot {
    let mut out = src.clone();
    out.ttl_exact = src.ttl_exact && target != Flavor::Redis62;
    let target_field_ttls = target.has_field_ttls();
    for st in out.keys.values_mut() {
        if !target_field_ttls {
            st.field_expire_at_ms = BTreeMap::new();
        }
        if let Val::Stream(s) = &mut st.val {
            if target == Flavor::Redis62 {
                // Stream listpacks 1: no first id, max-deleted id, entries-added, entries-read.
                s.first_id = None;
                s.max_deleted_id = None;
                s.entries_added = None;
                for g in s.groups.values_mut() {
                    g.entries_read = EntriesRead::NotStored;
                }
            }
            if !target.is_valkey() && target != Flavor::Redis82 {
                // Active time: stored from type 21 and shown by XINFO from 7.2 (Valkey, 8.2 here).
                for g in s.groups.values_mut() {
                    for c in g.consumers.values_mut() {
                        c.active_time_ms = None;
                    }
                }
            }
        }
    }
    out
}

/// The keys of database `db`, renumbered as database 0.
pub fn db_view(s: &Snapshot, db: i64) -> Snapshot {
    Snapshot {
        keys: s
            .keys
            .iter()
            .filter(|((d, _), _)| *d == db)
            .map(|((_, k), v)| ((0, k.clone()), v.clone()))
            .collect(),
        ttl_exact: s.ttl_exact,
        errors: s.errors.clone(),
    }
}
