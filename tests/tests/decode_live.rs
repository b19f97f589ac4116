//! `shake-decode` against real servers: what it prints is what the server holds.
//!
//! For each server flavor (Redis 6.2, Redis 7.0, Valkey 8.1, Valkey 9.1; each skipped when not
//! installed, required in CI) one test:
//!
//! 1. starts a server and fills it with every type in both its compact encoding (listpack /
//!    ziplist / intset) and its large one (hashtable / skiplist / quicklist with many, partly
//!    LZF-compressed nodes, and plain nodes where the server has them), plus a 150,000-element list
//!    and a 70,000-field hash (above the 65,536 fields where the JSON hash switches to pair form);
//!    elements at every integer-width and string-length boundary of those encodings; int-encoded,
//!    LZF-compressed, incompressible, empty and binary strings, and key names of the same kinds;
//!    scores that need every bit of a double (-0.0, subnormals, infinities, 2^53+1, random bit
//!    patterns); streams spanning several nodes, with deleted entries (one still pending),
//!    differing field names, binary field/group/consumer names, consumer groups, pending entries
//!    and idle consumers, set ids and trimming; TTLs with millisecond precision; keys in databases
//!    0, 1, 5 and 15; an LRU idle time or LFU counter on every key; a function library (7.0+);
//!    hash field TTLs (Valkey 9.1). Each key's OBJECT ENCODING is checked, so the test knows it
//!    exercised the encoding it meant to;
//! 2. SAVEs, and runs `shake-decode` on the file (and on the same bytes through stdin);
//! 3. compares every key of the JSON lines with what the server itself returns through plain
//!    commands (GET, LRANGE, SMEMBERS, ZRANGE WITHSCORES, HGETALL, XRANGE, XINFO STREAM FULL,
//!    PEXPIRETIME or PTTL, HPEXPIRETIME), byte for byte and score bit for score bit; checks the
//!    contract's choices of form (object vs pair form); checks LRU idle times / LFU counters
//!    against OBJECT IDLETIME / OBJECT FREQ;
//! 4. checks `--meta` (header against the file's first bytes, aux version, resizedb counts,
//!    functions against FUNCTION LIST, the checksum against the file's trailer), `--format keys`,
//!    `--format memory`, and the filters `--db`, `--key`, `--key-regex`, `--type` (exactly the
//!    matching lines of the unfiltered run);
//! 5. pipes `--format resp` through `redis-cli --pipe` into a fresh server of the same flavor and
//!    compares the two servers key by key with the same comparison code, and their functions.
//!    Only consumer seen/active times are left out there: a rebuilt server stamps its consumers
//!    with the time of the rebuild, and no command sets them.
//!
//! The expected side never goes through shake-core: it is the server's own answers, read with the
//! `redis` crate, and a JSON reader of our own (see `live_common`). Every check collects its
//! differences instead of stopping at the first, and the test fails at the end listing all of
//! them, each naming the flavor, the database and the key.
//!
//! `cargo test -p shake-tests` does not build other packages' binaries: build `shake-decode` first
//! (`cargo build -p shake-decode`, or run `cargo test --workspace` / `scripts/test`).

mod live_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use live_common::*;
use shake_tests::{require, Flavor, Server};

#[test]
fn decode_matches_live_redis_6_2() {
    run(Flavor::Redis62);
}

#[test]
fn decode_matches_live_redis_7_0() {
    run(Flavor::Redis70);
}

#[test]
fn decode_matches_live_valkey_8_1() {
    run(Flavor::Valkey81);
}

#[test]
fn decode_matches_live_valkey_9_1() {
    run(Flavor::Valkey91);
}

// ---------------------------------------------------------------------------------------------
// Running shake-decode

fn decode_bin() -> PathBuf {
    // assert_cmd finds binaries of other workspace packages in the target directory only when
    // they were built; say how to fix it instead of its generic message.
    let guess = std::env::current_exe().ok().and_then(|p| {
        p.parent()?
            .parent()
            .map(|d| d.join(format!("shake-decode{}", std::env::consts::EXE_SUFFIX)))
    });
    if std::env::var_os("CARGO_BIN_EXE_shake-decode").is_none()
        && !guess.as_ref().is_some_and(|p| p.exists())
    {
        panic!("the shake-decode binary is not built: run `cargo build -p shake-decode` (or `cargo test --workspace`) first");
    }
    assert_cmd::cargo::cargo_bin("shake-decode")
}

/// Runs `shake-decode <rdb> <args>`; panics with its stderr unless it exits 0; returns stdout.
fn decode(flavor: Flavor, args: &[&str], rdb: &Path) -> Vec<u8> {
    let out = Command::new(decode_bin())
        .arg(rdb)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run shake-decode");
    assert!(
        out.status.success(),
        "[{flavor}] shake-decode {} {:?} exited {}: {}",
        rdb.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn decode_text(flavor: Flavor, args: &[&str], rdb: &Path) -> String {
    String::from_utf8(decode(flavor, args, rdb))
        .unwrap_or_else(|e| panic!("[{flavor}] shake-decode {args:?} printed invalid UTF-8: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Filling the server

/// What this server version does, decided from its flavor and probed commands.
#[derive(Clone, Copy)]
struct Ctx {
    caps: ServerCaps,
    /// 6.2 calls the compact encoding "ziplist" (config names and OBJECT ENCODING).
    ziplist: bool,
    /// Redis 7.2 / Valkey: small lists are a plain listpack, small string sets a listpack.
    listpack_lists_sets: bool,
    /// 7.0+: functions, XSETID ENTRIESADDED/MAXDELETEDID, XGROUP ... ENTRIESREAD, DEBUG
    /// QUICKLIST-PACKED-THRESHOLD (plain quicklist nodes).
    v7: bool,
    /// The eviction policy the server runs with: decides IDLE (LRU) or FREQ (LFU) opcodes.
    lfu: bool,
}

impl Ctx {
    fn compact(&self) -> &'static str {
        if self.ziplist {
            "ziplist"
        } else {
            "listpack"
        }
    }
    /// A config name with the version's word for the compact encoding.
    fn conf(&self, pattern: &str) -> String {
        pattern.replace("PACK", self.compact())
    }
}

fn config_set(con: &mut redis::Connection, name: &str, value: impl redis::ToRedisArgs) {
    let _: () = q(con, redis::cmd("CONFIG").arg("SET").arg(name).arg(value));
}

fn select(con: &mut redis::Connection, db: i64) {
    let _: () = q(con, redis::cmd("SELECT").arg(db));
}

/// A deterministic pseudo-random sequence (xorshift64*), so every run builds the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A finite double drawn from all bit patterns: full 53-bit mantissas, every exponent.
    fn double(&mut self) -> f64 {
        loop {
            let d = f64::from_bits(self.next());
            if d.is_finite() {
                return d;
            }
        }
    }
}

/// Values chosen to hit every element encoding of ziplists, listpacks and intsets: integers at
/// each width boundary (4-bit/7-bit immediates, 13, 16, 24, 32, 64 bits), strings that look like
/// integers but are not canonical (stored as strings), string lengths at the 6/12/14/32-bit length
/// boundaries, an LZF-compressible 20 kB string, binary and non-UTF-8 bytes, and JSON-escaping
/// material.
fn element_matrix() -> Vec<Vec<u8>> {
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
        "255",
        "4095",
        "4096",
        "-4096",
        "-4097",
        "32767",
        "-32768",
        "65535",
        "8388607",
        "-8388608",
        "16777215",
        "2147483647",
        "-2147483648",
        "4294967295",
        "9223372036854775807",
        "-9223372036854775808",
        "007",
        "+1",
        "-0",
        "1.5",
        " 1",
        "18446744073709551616",
        "9223372036854775808",
        "-",
        "",
        "a",
        "ключ🔑",
        "tab\tnl\nquote\"bs\\ctl\u{1}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for len in [63, 64, 300, 4095, 4096, 16383, 16384] {
        v.push(
            format!("{len}:")
                .into_bytes()
                .into_iter()
                .chain(std::iter::repeat_n(b'x', len))
                .take(len)
                .collect(),
        );
    }
    v.push(b"abc".repeat(20000 / 3)); // LZF inside a listpack/ziplist, and long-string encodings
    v.push((0..=255u8).collect());
    v.push(vec![0xc3, 0x28]); // invalid UTF-8
    v.push(vec![0xff, 0xfe, 0x00, 0x80]);
    v.push(vec![0]);
    v
}

/// Expected OBJECT ENCODING per key, checked after filling.
struct Encodings(Vec<(i64, Vec<u8>, String)>);
impl Encodings {
    fn want(&mut self, db: i64, key: impl AsRef<[u8]>, enc: &str) {
        self.0.push((db, key.as_ref().to_vec(), enc.to_string()));
    }
}

fn rpush_batched(
    con: &mut redis::Connection,
    key: &[u8],
    items: impl IntoIterator<Item = Vec<u8>>,
) {
    let items: Vec<Vec<u8>> = items.into_iter().collect();
    let mut pipe = redis::pipe();
    for chunk in items.chunks(1000) {
        pipe.cmd("RPUSH").arg(key).arg(chunk).ignore();
    }
    let _: () = pipe
        .query(con)
        .unwrap_or_else(|e| panic!("RPUSH {}: {e}", show(key)));
}

fn hset_batched(
    con: &mut redis::Connection,
    key: &[u8],
    pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs.into_iter().collect();
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
        .unwrap_or_else(|e| panic!("HSET {}: {e}", show(key)));
}

fn sadd(con: &mut redis::Connection, key: &[u8], members: &[Vec<u8>]) {
    let _: () = q(con, redis::cmd("SADD").arg(key).arg(members));
}

fn zadd(con: &mut redis::Connection, key: &[u8], items: &[(String, Vec<u8>)]) {
    let mut c = redis::cmd("ZADD");
    c.arg(key);
    for (score, member) in items {
        c.arg(score).arg(member);
    }
    let _: () = q(con, &c);
}

/// Scores that need every bit of a double, as the client sends them (the server's own parse is
/// the truth the test compares against).
fn special_scores() -> Vec<&'static str> {
    vec![
        "0.1234567891",
        "1e-9",
        "9007199254740993",
        "-0.0",
        "0",
        "inf",
        "-inf",
        "3.14",
        "5e-324",
        "2.5e-310",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "-1e308",
        "1",
        "-1",
        "1.5",
        "12345678901234567890",
        "0.30000000000000004",
        "-123.456",
        "4294967296",
    ]
}

/// Fills the server; returns the encodings each key must have.
fn fill(con: &mut redis::Connection, ctx: Ctx) -> Encodings {
    let mut enc = Encodings(Vec::new());
    let compact = ctx.compact();
    let matrix = element_matrix();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let now = now_ms();

    // Compact encodings are limited by element size; raise the limits so the whole matrix,
    // 20 kB strings included, fits in one listpack/ziplist.
    config_set(con, &ctx.conf("hash-max-PACK-value"), 65536);
    config_set(con, &ctx.conf("zset-max-PACK-value"), 65536);
    if ctx.listpack_lists_sets {
        config_set(con, "set-max-listpack-value", 65536);
    }
    config_set(con, &ctx.conf("list-max-PACK-size"), -5); // 64 kB nodes

    select(con, 0);
    // --- strings
    let strings: Vec<(&str, Vec<u8>, &str)> = vec![
        // Valkey 9 embeds strings well past Redis's 44 bytes: 300 is raw everywhere.
        (
            "str:raw",
            b"a raw string, long enough not to be embedded in its object header. ".repeat(5),
            "raw",
        ),
        ("str:embstr", b"short".to_vec(), "embstr"),
        ("str:empty", Vec::new(), "embstr"),
        ("str:int:12345", b"12345".to_vec(), "int"),
        ("str:int:-1", b"-1".to_vec(), "int"),
        ("str:int:0", b"0".to_vec(), "int"),
        ("str:int:127", b"127".to_vec(), "int"),
        ("str:int:-128", b"-128".to_vec(), "int"),
        ("str:int:32767", b"32767".to_vec(), "int"),
        ("str:int:-32768", b"-32768".to_vec(), "int"),
        ("str:int:2147483647", b"2147483647".to_vec(), "int"),
        ("str:int:-2147483648", b"-2147483648".to_vec(), "int"),
        ("str:int:2147483648", b"2147483648".to_vec(), "int"),
        ("str:int:max", b"9223372036854775807".to_vec(), "int"),
        ("str:int:min", b"-9223372036854775808".to_vec(), "int"),
        ("str:notint:007", b"007".to_vec(), "embstr"),
        ("str:notint:-0", b"-0".to_vec(), "embstr"),
        ("str:notint:+1", b"+1".to_vec(), "embstr"),
        (
            "str:notint:too-big",
            b"9223372036854775808".to_vec(),
            "embstr",
        ),
        ("str:lzf", b"compress me ".repeat(1000), "raw"),
        ("str:lzf:binary", [0u8, 0xff, 0xfe, 1].repeat(2000), "raw"),
        (
            "str:json-escapes",
            "quote\" backslash\\ nl\n tab\t ctl\u{1}\u{1f} del\u{7f} ключ 🔑 \u{2028}"
                .as_bytes()
                .to_vec(),
            "",
        ),
        ("str:invalid-utf8", vec![b'a', 0xc3, 0x28, b'z'], "embstr"),
    ];
    for (k, v, e) in &strings {
        let _: () = q(con, redis::cmd("SET").arg(*k).arg(v));
        if !e.is_empty() {
            enc.want(0, k, e);
        }
    }
    // Incompressible: LZF gives up, the bytes are stored as they are.
    let noise: Vec<u8> = (0..100_000).map(|_| rng.next() as u8).collect();
    let _: () = q(con, redis::cmd("SET").arg("str:incompressible").arg(&noise));
    enc.want(0, "str:incompressible", "raw");
    let binary_key: Vec<u8> = (0..=255u8).collect();
    let _: () = q(
        con,
        redis::cmd("SET")
            .arg(&binary_key)
            .arg((0..=255u8).rev().collect::<Vec<u8>>()),
    );
    enc.want(0, &binary_key, "raw");
    let _: () = q(con, redis::cmd("SET").arg(b"\xff\xfek").arg(b"\xc3\x28"));
    let _: () = q(
        con,
        redis::cmd("SET")
            .arg("key\nwith \"special\" \\chars\t")
            .arg("v"),
    );
    // Key names go through the same string encodings as values: integer-looking names are
    // stored int-encoded, long compressible names LZF-compressed, and the empty name is legal.
    for k in [
        "12345",
        "-1",
        "0",
        "2147483647",
        "-2147483648",
        "4294967296",
    ] {
        let _: () = q(con, redis::cmd("SET").arg(k).arg(format!("key {k}")));
    }
    let _: () = q(
        con,
        redis::cmd("SET")
            .arg(format!("longkey:{}", "k".repeat(5000)))
            .arg("v"),
    );
    let _: () = q(con, redis::cmd("SET").arg("").arg("the empty key"));

    // --- lists
    rpush_batched(con, b"list:compact", matrix.clone());
    enc.want(
        0,
        "list:compact",
        if ctx.listpack_lists_sets {
            "listpack"
        } else {
            "quicklist"
        },
    );
    // Many small nodes (4 entries each), the inner ones LZF-compressed (depth 1 leaves the head
    // and tail nodes plain): the quicklist path of every version.
    config_set(con, &ctx.conf("list-max-PACK-size"), 4);
    config_set(con, "list-compress-depth", 1);
    let ql: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            if i % 3 == 0 {
                (i as i64 * 7919 - 3_000_000).to_string().into_bytes()
            } else {
                format!("element {i:05} with some padding to make nodes compressible").into_bytes()
            }
        })
        .chain(matrix.iter().filter(|m| m.len() < 1000).cloned())
        .collect();
    rpush_batched(con, b"list:quicklist", ql);
    enc.want(0, "list:quicklist", "quicklist");
    config_set(con, "list-compress-depth", 0);
    config_set(con, &ctx.conf("list-max-PACK-size"), -2);
    if ctx.v7 {
        // Elements above the packed threshold get a node of their own (quicklist container
        // PLAIN, RDB quicklist 2). DEBUG lowers the threshold; the total above 8 kB makes a
        // Valkey list leave its single-listpack encoding.
        let _: () = q(
            con,
            redis::cmd("DEBUG")
                .arg("QUICKLIST-PACKED-THRESHOLD")
                .arg(1000),
        );
        rpush_batched(
            con,
            b"list:plain-nodes",
            vec![
                b"small".to_vec(),
                vec![b'P'; 5000],
                b"42".to_vec(),
                b"abc".repeat(1000),
                vec![b'Q'; 9000],
                b"tail".to_vec(),
            ],
        );
        let _: () = q(
            con,
            redis::cmd("DEBUG")
                .arg("QUICKLIST-PACKED-THRESHOLD")
                .arg(1u64 << 30),
        );
        enc.want(0, "list:plain-nodes", "quicklist");
    }
    // The big one: 150,000 elements over many default-size nodes, integers and strings mixed.
    rpush_batched(
        con,
        b"list:big",
        (0..150_000u32).map(|i| {
            if i % 2 == 0 {
                i.to_string().into_bytes()
            } else {
                format!("v{i}").into_bytes()
            }
        }),
    );
    enc.want(0, "list:big", "quicklist");

    // --- sets
    let ints = |xs: &[i64]| {
        xs.iter()
            .map(|x| x.to_string().into_bytes())
            .collect::<Vec<_>>()
    };
    sadd(con, b"set:intset:16", &ints(&[1, 2, 3, -5, 32767, -32768]));
    sadd(
        con,
        b"set:intset:32",
        &ints(&[1, 65536, 2147483647, -2147483648]),
    );
    sadd(
        con,
        b"set:intset:64",
        &ints(&[0, 9223372036854775807, -9223372036854775808, 4294967296]),
    );
    for k in ["set:intset:16", "set:intset:32", "set:intset:64"] {
        enc.want(0, k, "intset");
    }
    sadd(con, b"set:strings", &matrix);
    enc.want(
        0,
        "set:strings",
        if ctx.listpack_lists_sets {
            "listpack"
        } else {
            "hashtable"
        },
    );
    sadd(
        con,
        b"set:strings:small",
        &[b"a".to_vec(), b"b".to_vec(), b"12x".to_vec(), vec![0xff]],
    );
    enc.want(
        0,
        "set:strings:small",
        if ctx.listpack_lists_sets {
            "listpack"
        } else {
            "hashtable"
        },
    );
    sadd(
        con,
        b"set:hashtable",
        &(0..1000)
            .map(|i| format!("member:{i}").into_bytes())
            .collect::<Vec<_>>(),
    );
    enc.want(0, "set:hashtable", "hashtable");
    sadd(
        con,
        b"set:hashtable:ints",
        &(0..600i64)
            .map(|i| (i * 1_000_003 - 300_000_000).to_string().into_bytes())
            .collect::<Vec<_>>(),
    );
    enc.want(0, "set:hashtable:ints", "hashtable");

    // --- sorted sets
    let specials = special_scores();
    let with_scores = |members: &[Vec<u8>]| -> Vec<(String, Vec<u8>)> {
        members
            .iter()
            .enumerate()
            .map(|(i, m)| (specials[i % specials.len()].to_string(), m.clone()))
            .collect()
    };
    zadd(con, b"zset:compact", &with_scores(&matrix));
    enc.want(0, "zset:compact", compact);
    let random_scores: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("{:e}", rng.double()), format!("r{i}").into_bytes()))
        .collect();
    zadd(con, b"zset:compact:random", &random_scores);
    enc.want(0, "zset:compact:random", compact);
    let mut sk = with_scores(&matrix);
    sk.extend((0..500).map(|i| {
        (
            format!("{:e}", rng.double()),
            format!("member:{i}").into_bytes(),
        )
    }));
    zadd(con, b"zset:skiplist", &sk);
    enc.want(0, "zset:skiplist", "skiplist");
    // Integral scores are stored as integers inside listpacks: their own path.
    zadd(
        con,
        b"zset:compact:ints",
        &(0..50)
            .map(|i| {
                (
                    ((i as i64 - 25) * 1_000_000_007).to_string(),
                    format!("i{i}").into_bytes(),
                )
            })
            .collect::<Vec<_>>(),
    );
    enc.want(0, "zset:compact:ints", compact);

    // --- hashes
    let n = matrix.len();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| (matrix[i].clone(), matrix[(i + 7) % n].clone()))
        .collect();
    hset_batched(con, b"hash:compact", pairs.clone());
    enc.want(0, "hash:compact", compact);
    hset_batched(
        con,
        b"hash:compact:utf8",
        vec![
            (b"name".to_vec(), b"ann".to_vec()),
            (b"age".to_vec(), b"31".to_vec()),
            (b"empty".to_vec(), Vec::new()),
        ],
    );
    enc.want(0, "hash:compact:utf8", compact);
    config_set(con, &ctx.conf("hash-max-PACK-entries"), 16);
    let mut big_pairs = pairs.clone();
    big_pairs.extend((0..1000).map(|i| {
        (
            format!("field:{i}").into_bytes(),
            if i % 2 == 0 {
                i.to_string().into_bytes()
            } else {
                format!("value {i}").into_bytes()
            },
        )
    }));
    hset_batched(con, b"hash:hashtable", big_pairs);
    enc.want(0, "hash:hashtable", "hashtable");
    hset_batched(
        con,
        b"hash:hashtable:utf8",
        (0..100).map(|i| (format!("f{i}").into_bytes(), format!("v{i}").into_bytes())),
    );
    enc.want(0, "hash:hashtable:utf8", "hashtable");
    config_set(con, &ctx.conf("hash-max-PACK-entries"), 512);
    // Above 65,536 fields the JSON hash is always in pair form (the contract's memory bound).
    hset_batched(
        con,
        b"hash:big",
        (0..70_000u32).map(|i| {
            (
                format!("f{i}").into_bytes(),
                if i % 3 == 0 {
                    i.to_string().into_bytes()
                } else {
                    format!("val-{i}").into_bytes()
                },
            )
        }),
    );
    enc.want(0, "hash:big", "hashtable");

    // --- streams
    fill_streams(con, ctx, &mut enc);

    // --- TTLs: in the future, several with millisecond precision, one in seconds.
    let ttls: Vec<(&str, i64)> = vec![
        ("str:raw", now + 86_400_123),
        ("list:quicklist", now + 3_600_007),
        ("zset:skiplist", now + 7_200_999),
        ("hash:compact", (now / 1000 + 7200) * 1000),
        ("stream:basic", now + 5_000_001),
        ("set:intset:16", 4_102_444_800_000), // 2100-01-01
        ("list:big", now + 600_000_001),
    ];
    for (k, at) in &ttls {
        let _: i64 = q(con, redis::cmd("PEXPIREAT").arg(*k).arg(*at));
    }
    let _: () = q(
        con,
        redis::cmd("SET")
            .arg("str:ttl:px")
            .arg("v")
            .arg("PX")
            .arg(123_456_789),
    );

    // --- many small keys, some with TTLs: the RDB's key-by-key framing at volume.
    let mut pipe = redis::pipe();
    for i in 0..500 {
        let k = format!("many:{i}");
        match i % 5 {
            0 => pipe.cmd("SET").arg(&k).arg(i).ignore(),
            1 => pipe.cmd("SET").arg(&k).arg(format!("value-{i}")).ignore(),
            2 => pipe.cmd("RPUSH").arg(&k).arg(i).arg("x").ignore(),
            3 => pipe.cmd("HSET").arg(&k).arg("f").arg(i).ignore(),
            _ => pipe.cmd("ZADD").arg(&k).arg(i).arg("m").ignore(),
        };
        if i % 7 == 0 {
            pipe.cmd("PEXPIREAT")
                .arg(&k)
                .arg(now + 1_000_000 + i)
                .ignore();
        }
    }
    let _: () = pipe.query(con).expect("many small keys");

    // --- keys the filter checks tell apart: glob `user:*` vs regex `^user:[0-9]+$`.
    let _: () = q(con, redis::cmd("SET").arg("user:100").arg("string user"));
    hset_batched(con, b"user:7", vec![(b"name".to_vec(), b"seven".to_vec())]);
    sadd(con, b"user:8", &[b"a".to_vec()]);
    hset_batched(con, b"user:007", vec![(b"name".to_vec(), b"bond".to_vec())]);
    select(con, 1);
    hset_batched(
        con,
        b"user:1",
        vec![
            (b"name".to_vec(), b"ann".to_vec()),
            (b"age".to_vec(), b"31".to_vec()),
        ],
    );
    hset_batched(con, b"user:22", vec![(b"name".to_vec(), b"bob".to_vec())]);
    let _: i64 = q(
        con,
        redis::cmd("PEXPIREAT")
            .arg("user:22")
            .arg(now + 999_999_999),
    );
    let _: () = q(con, redis::cmd("SET").arg("user:abc").arg("x"));
    let _: () = q(con, redis::cmd("SET").arg("user:").arg("empty id"));
    hset_batched(con, b"userx:1", vec![(b"a".to_vec(), b"b".to_vec())]);
    hset_batched(
        con,
        b"user:1:profile",
        vec![(b"bio".to_vec(), b"hi".to_vec())],
    );
    let _: () = q(con, redis::cmd("SET").arg("xuser:1").arg("x"));
    rpush_batched(con, b"list:db1", vec![b"a".to_vec(), b"1".to_vec()]);
    zadd(con, b"zset:db1", &[("1.5".into(), b"m".to_vec())]);
    let _: i64 = q(
        con,
        redis::cmd("PEXPIREAT")
            .arg("zset:db1")
            .arg(now + 12_345_678),
    );
    select(con, 5);
    hset_batched(con, b"user:3", vec![(b"name".to_vec(), b"cy".to_vec())]);
    sadd(con, b"set:db5", &ints(&[5, 55]));
    let _: () = q(con, redis::cmd("SET").arg("str:db5").arg("five"));
    let _: String = q(
        con,
        redis::cmd("XADD")
            .arg("stream:db5")
            .arg("5-5")
            .arg("f")
            .arg("v"),
    );
    select(con, 15);
    let _: () = q(
        con,
        redis::cmd("SET")
            .arg(&[0u8, 0xff, b'\n'][..])
            .arg(&[0u8][..]),
    );
    let _: () = q(con, redis::cmd("SET").arg("user:99").arg("in db 15"));
    let _: () = q(
        con,
        redis::cmd("SET")
            .arg("last")
            .arg("x")
            .arg("PX")
            .arg(55_555_555),
    );
    select(con, 0);

    // --- a key with a large LRU idle time or LFU counter: RESTORE sets them, where waiting
    // would only give the 0 idle seconds every fresh key has.
    let payload: Vec<u8> = q(con, redis::cmd("DUMP").arg("str:embstr"));
    let mut restore = redis::cmd("RESTORE");
    restore.arg("str:restored:lru-lfu").arg(0).arg(&payload);
    if ctx.lfu {
        restore.arg("FREQ").arg(200);
    } else {
        restore.arg("IDLETIME").arg(987_654);
    }
    let _: () = q(con, &restore);

    // --- a function library (7.0+): saved in the RDB as a function opcode, not a key.
    if ctx.v7 {
        let _: String = q(con, redis::cmd("FUNCTION").arg("LOAD").arg(FUNCTION_CODE));
    }

    // --- hash field TTLs (Valkey 9.0+): fields with and without TTLs in one hash, a hash whose
    // fields all have TTLs, one that also has a key TTL, and a big one.
    if ctx.caps.hash_field_ttl {
        hset_batched(
            con,
            b"hash:fieldttl",
            vec![
                (b"keep".to_vec(), b"1".to_vec()),
                (b"go".to_vec(), b"2".to_vec()),
                (b"go-ms".to_vec(), b"3".to_vec()),
            ],
        );
        let _: Vec<i64> = q(
            con,
            redis::cmd("HPEXPIREAT")
                .arg("hash:fieldttl")
                .arg(now + 3_600_000)
                .arg("FIELDS")
                .arg(1)
                .arg("go"),
        );
        let _: Vec<i64> = q(
            con,
            redis::cmd("HPEXPIREAT")
                .arg("hash:fieldttl")
                .arg(now + 3_600_123)
                .arg("FIELDS")
                .arg(1)
                .arg("go-ms"),
        );
        enc.want(0, "hash:fieldttl", "hashtable");
        let _: i64 = q(
            con,
            redis::cmd("HSETEX")
                .arg("hash:fieldttl:all")
                .arg("PX")
                .arg(86_400_000)
                .arg("FIELDS")
                .arg(2)
                .arg("a")
                .arg("1")
                .arg(&[0xffu8][..])
                .arg("binary field"),
        );
        enc.want(0, "hash:fieldttl:all", "hashtable");
        hset_batched(
            con,
            b"hash:fieldttl:keyttl",
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
            ],
        );
        let _: Vec<i64> = q(
            con,
            redis::cmd("HPEXPIREAT")
                .arg("hash:fieldttl:keyttl")
                .arg(now + 100_000_001)
                .arg("FIELDS")
                .arg(1)
                .arg("a"),
        );
        let _: i64 = q(
            con,
            redis::cmd("PEXPIREAT")
                .arg("hash:fieldttl:keyttl")
                .arg(now + 200_000_002),
        );
        hset_batched(
            con,
            b"hash:fieldttl:big",
            (0..2000).map(|i| (format!("f{i}").into_bytes(), i.to_string().into_bytes())),
        );
        let mut c = redis::cmd("HPEXPIREAT");
        c.arg("hash:fieldttl:big")
            .arg(now + 50_000_000)
            .arg("FIELDS")
            .arg(1000);
        for i in (0..2000).step_by(2) {
            c.arg(format!("f{i}"));
        }
        let _: Vec<i64> = q(con, &c);
        enc.want(0, "hash:fieldttl:big", "hashtable");
    }
    enc
}

const FUNCTION_CODE: &str =
    "#!lua name=mylib\nredis.register_function('f1', function(keys, args) return 1 end)";

fn xadd(con: &mut redis::Connection, key: &[u8], id: &str, fields: &[(&[u8], &[u8])]) -> String {
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
    group: &str,
    consumer: &str,
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
    if let redis::Value::Array(streams) = v {
        for s in streams {
            let redis::Value::Array(kv) = s else { continue };
            let redis::Value::Array(entries) = &kv[1] else {
                continue;
            };
            for e in entries {
                let redis::Value::Array(e) = e else { continue };
                if let redis::Value::BulkString(id) = &e[0] {
                    ids.push(String::from_utf8(id.clone()).unwrap());
                }
            }
        }
    }
    ids
}

fn fill_streams(con: &mut redis::Connection, ctx: Ctx, enc: &mut Encodings) {
    // Small nodes, so the stream spans several listpacks; entries whose fields match the node's
    // master entry are stored compressed, the others with their own field names.
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
        ids.push(xadd(con, b"stream:basic", &id, &fields));
    }
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:basic")
            .arg("g1")
            .arg("0"),
    );
    let alice = read_group(con, "stream:basic", "g1", "alice", 5);
    let _bob = read_group(con, "stream:basic", "g1", "bob", 3);
    let _: i64 = q(
        con,
        redis::cmd("XACK")
            .arg("stream:basic")
            .arg("g1")
            .arg(&alice[1]),
    );
    // Claimed by bob: delivery count 2, a different consumer.
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
    if ctx.v7 {
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
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:basic")
            .arg("g3")
            .arg(&ids[14]),
    );
    let _dave = read_group(con, "stream:basic", "g3", "dave", 2);
    // Deleted: the first entry, some in the middle, the last, and one that is still pending
    // (alice[0]), whose PEL entry outlives it.
    for id in [&ids[0], &ids[9], &ids[19], &ids[29], &alice[3]] {
        let _: i64 = q(con, redis::cmd("XDEL").arg("stream:basic").arg(id));
    }
    enc.want(0, "stream:basic", "stream");

    // A group on an empty stream.
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:empty")
            .arg("g")
            .arg("$")
            .arg("MKSTREAM"),
    );
    // Every entry deleted: length 0, the last id remembered.
    for i in 1..=3 {
        xadd(
            con,
            b"stream:all-deleted",
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
    // Ids set by hand (ENTRIESADDED and MAXDELETEDID exist from 7.0).
    xadd(con, b"stream:setid", "1-1", &[(b"a", b"1")]);
    xadd(con, b"stream:setid", "2-1", &[(b"b", b"2")]);
    if ctx.v7 {
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
    // Trimmed: the first entry moves without XDEL.
    for i in 1..=50 {
        xadd(
            con,
            b"stream:trimmed",
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
    // Binary field names: the JSON `fields` switch to pair form.
    xadd(
        con,
        b"stream:binary",
        "1-0",
        &[(&[0xff, 0xfe], b"v"), (b"ok", &[0x80])],
    );
    xadd(
        con,
        b"stream:binary",
        "2-0",
        &[(&[0xff, 0xfe], b"w"), (b"ok", b"")],
    );
    // Binary group and consumer names.
    let _: () = q(
        con,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream:binary")
            .arg(b"grp\xff")
            .arg("0"),
    );
    let _: redis::Value = q(
        con,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(b"grp\xff")
            .arg(b"c\xfe")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("stream:binary")
            .arg(">"),
    );
    config_set(con, "stream-node-max-entries", 100);
    // Many entries with the same fields, default node size.
    let mut pipe = redis::pipe();
    for i in 1..=5000u64 {
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
    let _ = read_group(con, "stream:big", "readers", "r1", 300);
}

/// Checks OBJECT ENCODING of every key `fill` meant to have a particular encoding.
fn check_encodings(con: &mut redis::Connection, flavor: Flavor, enc: &Encodings) -> Vec<String> {
    let mut bad = Vec::new();
    for (db, key, want) in &enc.0 {
        select(con, *db);
        let got: Option<String> = q(con, redis::cmd("OBJECT").arg("ENCODING").arg(key));
        if got.as_deref() != Some(want.as_str()) {
            bad.push(format!(
                "[{flavor}] test setup: db {db} key {}: OBJECT ENCODING {got:?}, wanted {want:?}",
                show(key)
            ));
        }
    }
    select(con, 0);
    bad
}

// ---------------------------------------------------------------------------------------------
// The checks

/// The RDB file's own header: magic letters and version digits (`REDIS0011`, `VALKEY080`).
fn file_header(rdb: &Path) -> (String, u32) {
    let bytes = std::fs::read(rdb).unwrap();
    let head = &bytes[..9.min(bytes.len())];
    let split = head
        .iter()
        .position(|b| b.is_ascii_digit())
        .unwrap_or(head.len());
    (
        String::from_utf8_lossy(&head[..split]).into_owned(),
        String::from_utf8_lossy(&head[split..]).parse().unwrap_or(0),
    )
}

/// The contract's choices of form, which a value comparison cannot see: a hash (and a stream
/// entry's fields) is an object unless a field name is not UTF-8 or the hash has more than 65,536
/// fields; `field_expire_at_ms` takes the same form as `value`.
fn check_shape(flavor: Flavor, k: &DbKey, line: &Json, out: &mut Vec<String>) {
    let tag = format!("[{flavor}] jsonl: {}", show_key(k));
    let binary = |pairs: &[Json]| {
        pairs
            .iter()
            .any(|p| matches!(p, Json::Arr(kv) if !matches!(kv.first(), Some(Json::Str(_)))))
    };
    match (line.get("type").and_then(Json::as_str), line.get("value")) {
        (Some("hash"), Some(Json::Obj(m))) if m.len() > 65_536 => out.push(format!(
            "{tag}: a hash of {} fields printed as an object (contract: pair form above 65,536)",
            m.len()
        )),
        (Some("hash"), Some(Json::Arr(a))) if a.len() < 65_536 && !binary(a) => out.push(format!(
            "{tag}: a hash of {} UTF-8 fields printed in pair form (contract: object)",
            a.len()
        )),
        (Some("stream"), Some(v)) => {
            for e in v.get("entries").and_then(Json::as_arr).unwrap_or(&[]) {
                if let Some(Json::Arr(a)) = e.get("fields") {
                    if !binary(a) {
                        out.push(format!(
                            "{tag}: entry {:?} has UTF-8 field names but pair form",
                            e.get("id")
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    if let (Some(v), Some(fe)) = (line.get("value"), line.get("field_expire_at_ms")) {
        if matches!(v, Json::Obj(_)) != matches!(fe, Json::Obj(_)) {
            out.push(format!(
                "{tag}: field_expire_at_ms is not in the same form as value"
            ));
        }
    }
}

/// LRU idle seconds or LFU counters in the JSON lines vs OBJECT IDLETIME / OBJECT FREQ.
/// Must run before anything reads the keys: a read refreshes both (OBJECT itself does not).
fn check_lru_lfu(
    con: &mut redis::Connection,
    flavor: Flavor,
    policy: &str,
    decoded: &[(DbKey, Json)],
    out: &mut Vec<String>,
) {
    let (member, sub, tolerance) = if policy.ends_with("lfu") {
        ("freq", "FREQ", 1)
    } else {
        ("idle_s", "IDLETIME", 2)
    };
    let mut db = -1;
    for ((kdb, key), line) in decoded {
        if *kdb != db {
            db = *kdb;
            select(con, db);
        }
        let server: i64 = q(con, redis::cmd("OBJECT").arg(sub).arg(key));
        match line.get(member).and_then(Json::as_i64) {
            Some(v) if (v - server).abs() <= tolerance => {}
            got => out.push(format!("[{flavor}] jsonl: db {db} key {}: {member} {got:?}, server OBJECT {sub} says {server} (policy {policy})", preview(key))),
        }
    }
    select(con, 0);
}

/// What the server says about the things `--meta` prints.
struct ServerFacts<'a> {
    truth: &'a Snapshot,
    /// `redis_version` and (Valkey) `valkey_version` from INFO server.
    versions: Vec<String>,
    /// FUNCTION LIST WITHCODE library codes, sorted.
    libs: Vec<String>,
}

/// `--meta`: the same key lines plus header, aux, resizedb, function and end lines that agree
/// with the file's own bytes and with the server.
fn check_meta(
    flavor: Flavor,
    rdb: &Path,
    meta_text: &str,
    plain_text: &str,
    facts: &ServerFacts,
    out: &mut Vec<String>,
) {
    let ServerFacts {
        truth,
        versions: server_versions,
        libs,
    } = facts;
    let tag = format!("[{flavor}] --meta");
    // Key lines must be exactly those of the plain output, in the same order.
    let key_lines: Vec<&str> = meta_text
        .lines()
        .filter(|l| !l.starts_with("{\"meta\""))
        .collect();
    let plain: Vec<&str> = plain_text.lines().collect();
    if key_lines != plain {
        out.push(format!(
            "{tag}: its key lines differ from the output without --meta ({} vs {} lines)",
            key_lines.len(),
            plain.len()
        ));
    }
    let metas: Vec<Json> = meta_text
        .lines()
        .filter_map(|l| parse_json(l).ok())
        .filter(|j| j.get("meta").is_some())
        .collect();
    let kind = |j: &Json| {
        j.get("meta")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string()
    };
    // header: first line, and what the file's first bytes say.
    let (magic, version) = file_header(rdb);
    match metas.first() {
        Some(h) if kind(h) == "header" => {
            if h.get("magic").and_then(Json::as_str) != Some(magic.as_str())
                || h.get("rdb_version").and_then(Json::as_i64) != Some(version as i64)
            {
                out.push(format!(
                    "{tag}: header {h:?}, file starts with {magic}{version:04}"
                ));
            }
        }
        other => out.push(format!(
            "{tag}: first meta line is not the header: {other:?}"
        )),
    }
    if !meta_text
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("{\"meta\":\"header\""))
    {
        out.push(format!("{tag}: the header is not the first line"));
    }
    // aux: the server's version.
    let vers: Vec<String> = metas
        .iter()
        .filter(|j| {
            kind(j) == "aux"
                && j.get("name")
                    .and_then(Json::as_str)
                    .is_some_and(|n| n.ends_with("-ver"))
        })
        .filter_map(|j| j.get("value").and_then(|v| json_bytes(v).ok()))
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect();
    if !vers.iter().any(|v| server_versions.contains(v)) {
        out.push(format!(
            "{tag}: aux *-ver values {vers:?}, server reports {server_versions:?}"
        ));
    }
    // resizedb: per database, the key and expire counts the server holds.
    let mut want: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for ((db, _), st) in &truth.keys {
        let e = want.entry(*db).or_default();
        e.0 += 1;
        e.1 += st.expire_at_ms.is_some() as i64;
    }
    let got: BTreeMap<i64, (i64, i64)> = metas
        .iter()
        .filter(|j| kind(j) == "resizedb")
        .map(|j| {
            let g = |n: &str| j.get(n).and_then(Json::as_i64).unwrap_or(-1);
            (g("db"), (g("keys"), g("expires")))
        })
        .collect();
    if got != want {
        out.push(format!(
            "{tag}: resizedb (db -> (keys, expires)) {got:?}, server {want:?}"
        ));
    }
    // functions
    let mut codes: Vec<String> = metas
        .iter()
        .filter(|j| kind(j) == "function")
        .filter_map(|j| j.get("code")?.as_str().map(String::from))
        .collect();
    codes.sort();
    if codes != *libs {
        out.push(format!(
            "{tag}: function lines {codes:?}, server FUNCTION LIST WITHCODE {libs:?}"
        ));
    }
    // end: last line, checksum valid, the crc the file ends with.
    let bytes = std::fs::read(rdb).unwrap();
    let trailer: [u8; 8] = bytes[bytes.len() - 8..].try_into().unwrap();
    let (le, be) = (
        format!("{:016x}", u64::from_le_bytes(trailer)),
        format!("{:016x}", u64::from_be_bytes(trailer)),
    );
    match metas.last() {
        Some(e) if kind(e) == "end" => {
            let crc = e
                .get("crc64")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            if e.get("checksum").and_then(Json::as_str) != Some("valid") || (crc != le && crc != be)
            {
                out.push(format!(
                    "{tag}: end line {e:?}, file trailer {le} (LE) / {be} (bytes)"
                ));
            }
        }
        other => out.push(format!("{tag}: last meta line is not the end: {other:?}")),
    }
    if !meta_text
        .lines()
        .last()
        .is_some_and(|l| l.starts_with("{\"meta\":\"end\""))
    {
        out.push(format!("{tag}: the end line is not the last line"));
    }
}

/// `--format keys`: one `db<TAB>type<TAB>key` line per key, every key exactly once.
fn check_keys_format(flavor: Flavor, text: &str, truth: &Snapshot, out: &mut Vec<String>) {
    let tag = format!("[{flavor}] --format keys");
    let mut listed: BTreeMap<DbKey, String> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.splitn(3, '\t').collect();
        let parsed = match parts.as_slice() {
            [db, ty, key] => db
                .parse::<i64>()
                .ok()
                .zip(unquote_key(key).ok())
                .map(|(db, k)| ((db, k), ty.to_string())),
            _ => None,
        };
        let Some((k, ty)) = parsed else {
            out.push(format!("{tag}: unreadable line {line:?}"));
            continue;
        };
        if listed.insert(k.clone(), ty).is_some() {
            out.push(format!("{tag}: {} listed twice", show_key(&k)));
        }
    }
    for (k, st) in &truth.keys {
        match listed.get(k) {
            None => out.push(format!("{tag}: {} ({}) not listed", show_key(k), st.ty)),
            Some(ty) if *ty != st.ty => out.push(format!(
                "{tag}: {}: type {ty:?}, server {:?}",
                show_key(k),
                st.ty
            )),
            _ => {}
        }
    }
    for k in listed.keys().filter(|k| !truth.keys.contains_key(*k)) {
        out.push(format!(
            "{tag}: {} listed but not on the server",
            show_key(k)
        ));
    }
}

/// `--format memory`: a CSV with the documented header and one row per key, whose type,
/// element count and expiry agree with the server.
fn check_memory_format(flavor: Flavor, text: &str, truth: &Snapshot, out: &mut Vec<String>) {
    let tag = format!("[{flavor}] --format memory");
    let rows = match parse_csv(text) {
        Ok(r) => r,
        Err(e) => return out.push(format!("{tag}: not CSV: {e}")),
    };
    let header =
        "db,key,type,encoding,elements,serialized_bytes,largest_element_bytes,expire_at_ms";
    if rows.first().map(|r| r.join(",")) != Some(header.to_string()) {
        return out.push(format!("{tag}: header {:?}, want {header:?}", rows.first()));
    }
    let mut seen = BTreeSet::new();
    for row in &rows[1..] {
        let parsed = match row.as_slice() {
            [db, key, ..] if row.len() == 8 => db.parse::<i64>().ok().zip(unquote_key(key).ok()),
            _ => None,
        };
        let Some(k) = parsed else {
            out.push(format!("{tag}: unreadable row {row:?}"));
            continue;
        };
        if !seen.insert(k.clone()) {
            out.push(format!("{tag}: {} listed twice", show_key(&k)));
        }
        let Some(st) = truth.keys.get(&k) else {
            out.push(format!(
                "{tag}: {} listed but not on the server",
                show_key(&k)
            ));
            continue;
        };
        let name = show_key(&k);
        if row[2] != st.ty {
            out.push(format!(
                "{tag}: {name}: type {:?}, server {:?}",
                row[2], st.ty
            ));
        }
        let expire_ok = match (row[7].parse::<i64>(), st.expire_at_ms) {
            (Ok(a), Some(b)) => (a - b).abs() <= if truth.ttl_exact { 0 } else { 1500 },
            (Err(_), None) => row[7].is_empty(),
            _ => false,
        };
        if !expire_ok {
            out.push(format!(
                "{tag}: {name}: expire_at_ms {:?}, server {:?}",
                row[7], st.expire_at_ms
            ));
        }
        // Documented: list items, set/zset members, hash fields, stream entries; 1 for a string.
        let count = match &st.val {
            Val::Str(_) => 1,
            Val::List(v) => v.len(),
            Val::Set(v) => v.len(),
            Val::ZSet(v) => v.len(),
            Val::Hash(v) => v.len(),
            Val::Stream(s) => s.entries.len(),
            Val::Broken(_) => 0,
        };
        if row[4] != count.to_string() {
            out.push(format!(
                "{tag}: {name}: elements {:?}, server {count}",
                row[4]
            ));
        }
        // largest_element_bytes, where it is simple to know: a string's length.
        if let Val::Str(v) = &st.val {
            if row[6] != v.len().to_string() {
                out.push(format!(
                    "{tag}: {name}: largest_element_bytes {:?}, string length {}",
                    row[6],
                    v.len()
                ));
            }
        }
        if row[5].parse::<u64>().map_or(true, |n| n == 0) {
            out.push(format!(
                "{tag}: {name}: serialized_bytes {:?} is not a positive number",
                row[5]
            ));
        }
        if row[3].is_empty() {
            out.push(format!("{tag}: {name}: empty encoding"));
        }
    }
    for k in truth.keys.keys().filter(|k| !seen.contains(*k)) {
        out.push(format!("{tag}: {} has no row", show_key(k)));
    }
}

/// A filtered run prints exactly the key lines of the full run that match, in the same order.
fn check_filter(
    flavor: Flavor,
    rdb: &Path,
    args: &[&str],
    full: &[(DbKey, String)],
    truth: &Snapshot,
    matches: impl Fn(&DbKey, &KeyState) -> bool,
    out: &mut Vec<String>,
) {
    let tag = format!("[{flavor}] filter {}", args.join(" "));
    let text = decode_text(flavor, args, rdb);
    let want_keys: BTreeSet<&DbKey> = truth
        .keys
        .iter()
        .filter(|(k, st)| matches(k, st))
        .map(|(k, _)| k)
        .collect();
    assert!(
        !want_keys.is_empty(),
        "{tag}: the test data has no matching key"
    );
    let want_lines: Vec<&str> = full
        .iter()
        .filter(|(k, _)| want_keys.contains(k))
        .map(|(_, l)| l.as_str())
        .collect();
    let got_lines: Vec<&str> = text.lines().collect();
    if got_lines != want_lines {
        let got: BTreeSet<DbKey> = got_lines
            .iter()
            .filter_map(|l| key_line(&parse_json(l).ok()?).ok())
            .map(|(k, _)| k)
            .collect();
        let extra: Vec<String> = got
            .iter()
            .filter(|k| !want_keys.contains(k))
            .take(5)
            .map(show_key)
            .collect();
        let missing: Vec<String> = want_keys
            .iter()
            .filter(|k| !got.contains(**k))
            .take(5)
            .map(|k| show_key(k))
            .collect();
        out.push(format!(
            "{tag}: {} lines, want {} (the full run's matching lines); extra {extra:?}, missing {missing:?}",
            got_lines.len(),
            want_lines.len()
        ));
    }
}

/// `shake-decode --format resp | redis-cli --pipe` into `target`.
fn pipe_resp(flavor: Flavor, rdb: &Path, target: &Server) -> Result<(), String> {
    let resp = decode(flavor, &["--format", "resp"], rdb);
    let file = target.dir().join("restore.resp");
    std::fs::write(&file, &resp).unwrap();
    let out = Command::new(shake_tests::redis_cli())
        .arg("-p")
        .arg(target.port().to_string())
        .arg("--pipe")
        .stdin(Stdio::from(std::fs::File::open(&file).unwrap()))
        .output()
        .expect("run redis-cli --pipe");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !text.contains("errors: 0") {
        // The error replies, each once with a count: the rest of the output is noise.
        let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
        for l in text.lines().filter(|l| {
            l.starts_with(|c: char| c.is_ascii_uppercase())
                && !l.starts_with("All data")
                && !l.starts_with("Last reply")
        }) {
            *errors.entry(l).or_default() += 1;
        }
        let summary = text
            .lines()
            .find(|l| l.starts_with("errors:"))
            .unwrap_or("no summary line");
        return Err(format!(
            "redis-cli --pipe exited {} ({summary}); error replies: {errors:?}",
            out.status
        ));
    }
    Ok(())
}

fn run(flavor: Flavor) {
    if !require(flavor) {
        return;
    }
    let t0 = Instant::now();
    let phase = |name: &str| eprintln!("[{flavor}] {name}: {:.1?}", t0.elapsed());
    // An eviction policy (with no maxmemory, so nothing is evicted) makes the RDB carry an IDLE
    // (LRU) or FREQ (LFU) opcode before every key: two more opcodes to decode.
    let policy = match flavor {
        Flavor::Redis62 | Flavor::Valkey81 => "allkeys-lfu",
        _ => "allkeys-lru",
    };
    let server = Server::start_with(flavor, &[("maxmemory-policy", policy)]);
    let mut con = server.client();
    let caps = probe_caps(&mut con);
    let ctx = Ctx {
        caps,
        ziplist: flavor == Flavor::Redis62,
        listpack_lists_sets: flavor.is_valkey(),
        v7: flavor.is_7_0_or_later(),
        lfu: policy.ends_with("lfu"),
    };
    let encodings = fill(&mut con, ctx);
    let bad = check_encodings(&mut con, flavor, &encodings);
    assert!(
        bad.is_empty(),
        "the test did not build the encodings it meant to:\n  {}",
        bad.join("\n  ")
    );
    phase("filled");

    let rdb = server.save();
    let plain = decode_text(flavor, &[], &rdb);
    phase("decoded");
    let mut problems: Vec<String> = Vec::new();
    // `-` reads the same file from stdin (what `shake-dump -o - | shake-decode` relies on).
    let from_stdin = Command::new(decode_bin())
        .arg("-")
        .stdin(std::fs::File::open(&rdb).unwrap())
        .output()
        .expect("run shake-decode -");
    if !from_stdin.status.success() || from_stdin.stdout != plain.as_bytes() {
        problems.push(format!(
            "[{flavor}] stdin: `shake-decode - < dump.rdb` exited {} and printed {} bytes, the file gives {} bytes: {}",
            from_stdin.status,
            from_stdin.stdout.len(),
            plain.len(),
            String::from_utf8_lossy(&from_stdin.stderr).trim()
        ));
    }

    // Lines in file order, parsed once; LRU/LFU first, before any read touches the keys.
    let mut lines: Vec<(DbKey, String)> = Vec::new();
    let mut parsed: Vec<(DbKey, Json)> = Vec::new();
    for l in plain.lines() {
        if let Ok(j) = parse_json(l) {
            if let Ok((k, _)) = key_line(&j) {
                check_shape(flavor, &k, &j, &mut problems);
                lines.push((k.clone(), l.to_string()));
                parsed.push((k, j));
            }
        }
    }
    check_lru_lfu(&mut con, flavor, policy, &parsed, &mut problems);
    // A server writes its databases in order; the contract says lines come in file order.
    if parsed.windows(2).any(|w| w[0].0 .0 > w[1].0 .0) {
        problems.push(format!(
            "[{flavor}] jsonl: databases are not in file (ascending) order"
        ));
    }
    drop(parsed);

    let truth = snapshot(&mut con);
    phase("server snapshot");
    let decoded = snapshot_from_jsonl(&plain);
    problems.extend(
        compare(
            "shake-decode",
            &decoded,
            "server",
            &truth,
            Profile::exact(&decoded, &truth),
        )
        .into_iter()
        .map(|d| format!("[{flavor}] jsonl vs server: {d}")),
    );

    // --meta
    let meta = decode_text(flavor, &["--meta"], &rdb);
    let info: String = q(&mut con, redis::cmd("INFO").arg("server"));
    let versions: Vec<String> = info
        .lines()
        .filter_map(|l| {
            l.strip_prefix("redis_version:")
                .or_else(|| l.strip_prefix("valkey_version:"))
        })
        .map(|v| v.trim().to_string())
        .collect();
    let libs = if ctx.v7 {
        function_libraries(&mut con)
    } else {
        Vec::new()
    };
    if ctx.v7 {
        assert_eq!(
            libs,
            vec![FUNCTION_CODE.to_string()],
            "[{flavor}] test setup: function library not loaded"
        );
    }
    let facts = ServerFacts {
        truth: &truth,
        versions,
        libs: libs.clone(),
    };
    check_meta(flavor, &rdb, &meta, &plain, &facts, &mut problems);

    // Other formats and filters.
    check_keys_format(
        flavor,
        &decode_text(flavor, &["--format", "keys"], &rdb),
        &truth,
        &mut problems,
    );
    check_memory_format(
        flavor,
        &decode_text(flavor, &["--format", "memory"], &rdb),
        &truth,
        &mut problems,
    );
    check_filter(
        flavor,
        &rdb,
        &["--db", "1"],
        &lines,
        &truth,
        |(db, _), _| *db == 1,
        &mut problems,
    );
    // Redis glob: `user:*` is every key starting with "user:", however it goes on.
    check_filter(
        flavor,
        &rdb,
        &["--key", "user:*"],
        &lines,
        &truth,
        |(_, k), _| k.starts_with(b"user:"),
        &mut problems,
    );
    check_filter(
        flavor,
        &rdb,
        &["--key-regex", "^user:[0-9]+$"],
        &lines,
        &truth,
        |(_, k), _| {
            k.strip_prefix(b"user:")
                .is_some_and(|id| !id.is_empty() && id.iter().all(u8::is_ascii_digit))
        },
        &mut problems,
    );
    check_filter(
        flavor,
        &rdb,
        &["--type", "hash"],
        &lines,
        &truth,
        |_, st| st.ty == "hash",
        &mut problems,
    );
    phase("formats and filters");

    // RESP into a fresh server of the same flavor reproduces the data.
    let target = Server::start(flavor);
    // A rejected command is reported, and the comparison still runs: it names what was lost.
    if let Err(e) = pipe_resp(flavor, &rdb, &target) {
        problems.push(format!("[{flavor}] resp: {e}"));
    }
    let mut tcon = target.client();
    let rebuilt = snapshot(&mut tcon);
    problems.extend(
        compare(
            "source server",
            &truth,
            "rebuilt server",
            &rebuilt,
            Profile::rebuilt(&truth, &rebuilt),
        )
        .into_iter()
        .map(|d| format!("[{flavor}] resp restore: {d}")),
    );
    if ctx.v7 {
        let tlibs = function_libraries(&mut tcon);
        if tlibs != libs {
            problems.push(format!(
                "[{flavor}] resp restore: functions {tlibs:?}, source has {libs:?}"
            ));
        }
    }
    phase("resp restore");

    assert_no_diffs(
        &format!("[{flavor}] shake-decode vs live server"),
        &problems,
    );
}
