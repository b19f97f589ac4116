//! The RDB writer against real servers: DUMP payloads, target capabilities, and the portable
//! path (transcoding a value for a target that cannot load its encoding).
//!
//! - `writer_target_formats_match_real_servers`: for each installed flavor, `TargetFormat` from
//!   `INFO server` and from a DUMP stamp agree with the server; the version stamps it accepts;
//!   a zero CRC is refused; and for a payload of every RDB type (taken from DUMPs of the servers
//!   that write them, or built here for the types no server we run writes), RESTORE succeeds
//!   exactly when `can_load` says so.
//! - `writer_from_<flavor>`: fills a source server with every type in small and large encodings
//!   (streams with groups, PEL, consumers, tombstones; zset scores that need every bit; hash
//!   field TTLs on Valkey 9.1), DUMPs every key, and for the same flavor and every older one:
//!   restores each key into database 0 the way the apply layer will (fast path when `can_load`,
//!   after checking the re-stamped raw payload is refused when it says no; else transcoded), and
//!   the transcoded payload into database 1 for every key; then compares both databases with the
//!   source (type, value, score bits, TTL, streams with XINFO STREAM FULL's groups, PEL and
//!   consumers, as far as the target version shows them). On the same flavor, a transcoded
//!   payload whose type is the source's must be byte-identical to the server's own uncompressed
//!   DUMP. Targets deep-sanitize RESTORE payloads where they have `sanitize-dump-payload`.
//!
//! Each flavor is skipped when not installed (and required in CI).

#[path = "live_common/mod.rs"]
mod live_common;
mod writer_common;

use std::collections::{BTreeMap, HashMap};

use live_common::*;
use shake_core::rdb::writer::{
    backlen_style_from_probe, dump_payload, parse_dump_payload, transcode_value, write_len,
    write_ms, write_string, BacklenStyle, FieldTtlPolicy, ListpackWriter, TargetFormat, Transcoder,
    BACKLEN_PROBE_VALUE_LEN,
};
use shake_core::rdb::{types as t, Chunk, HashField, Header, KeyHeader, Magic, ValueType};
use shake_core::text::quote_bytes;
use shake_tests::{require, Flavor, Server};
use writer_common::*;

#[test]
fn writer_from_redis_6_2() {
    run(Flavor::Redis62);
}

#[test]
fn writer_from_redis_7_0() {
    run(Flavor::Redis70);
}

#[test]
fn writer_from_valkey_8_1() {
    run(Flavor::Valkey81);
}

#[test]
fn writer_from_valkey_9_1() {
    run(Flavor::Valkey91);
}

// ---------------------------------------------------------------------------------------------

/// What each flavor is, as `TargetFormat` should say.
fn expected_format(f: Flavor) -> TargetFormat {
    match f {
        Flavor::Redis62 => TargetFormat::new(Magic::Redis, 9),
        Flavor::Redis70 => TargetFormat::new(Magic::Redis, 10),
        Flavor::Valkey81 => TargetFormat::new(Magic::Valkey, 11),
        Flavor::Valkey91 => {
            TargetFormat::new(Magic::Valkey, 80).with_listpack_backlen(BacklenStyle::Minimal)
        }
        Flavor::Redis82 => TargetFormat::new(Magic::Redis, 12),
    }
}

/// The header a DUMP payload's stamp implies for decoding it: Valkey's numbering from 80 on.
fn source_header(stamp: u16) -> Header {
    let magic = if stamp >= 80 {
        Magic::Valkey
    } else {
        Magic::Redis
    };
    Header {
        magic,
        version: stamp as u32,
    }
}

fn start_target(f: Flavor) -> Server {
    let s = Server::start(f);
    let mut con = s.client();
    // Deep validation of every payload where the server has it (Valkey 9.1 has no such setting).
    let _: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("sanitize-dump-payload")
        .arg("yes")
        .query(&mut con);
    s
}

fn restore(
    con: &mut redis::Connection,
    key: &[u8],
    payload: &[u8],
    expire: Expire,
) -> Result<(), String> {
    let mut c = redis::cmd("RESTORE");
    c.arg(key);
    match expire {
        Expire::None => c.arg(0),
        Expire::At(ms) => c.arg(ms),
        Expire::In(ms) => c.arg(ms),
    };
    c.arg(payload).arg("REPLACE");
    if let Expire::At(_) = expire {
        c.arg("ABSTTL");
    }
    c.query::<()>(con).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug)]
enum Expire {
    None,
    /// Absolute Unix ms (PEXPIRETIME, 7.0+).
    At(i64),
    /// Relative ms (PTTL; 6.2 has no PEXPIRETIME).
    In(i64),
}

struct Dumped {
    key: Vec<u8>,
    payload: Vec<u8>,
    expire: Expire,
}

/// DUMP and TTL of every key of database 0.
fn dump_all(con: &mut redis::Connection, exact_ttl: bool) -> Vec<Dumped> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) =
            q(con, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000));
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|key| {
            let payload: Vec<u8> = q(con, redis::cmd("DUMP").arg(&key));
            let expire = if exact_ttl {
                let at: i64 = q(con, redis::cmd("PEXPIRETIME").arg(&key));
                if at >= 0 {
                    Expire::At(at)
                } else {
                    Expire::None
                }
            } else {
                let ttl: i64 = q(con, redis::cmd("PTTL").arg(&key));
                if ttl >= 0 {
                    Expire::In(ttl)
                } else {
                    Expire::None
                }
            };
            Dumped {
                key,
                payload,
                expire,
            }
        })
        .collect()
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "lengths {} vs {}, first difference at byte {i}",
        a.len(),
        b.len()
    )
}

fn run(source: Flavor) {
    if !require(source) {
        return;
    }
    let started = std::time::Instant::now();
    let src = Server::start(source);
    let mut con = src.client();
    fill(&mut con, source, now_ms());
    let truth = db_view(&snapshot(&mut con), 0);
    let exact_ttl = source.is_7_0_or_later();
    let dumps = dump_all(&mut con, exact_ttl);
    // The server's own encodings without LZF: what a same-flavor transcode must reproduce.
    config_set(&mut con, "rdbcompression", "no");
    let plain: HashMap<Vec<u8>, Vec<u8>> = dumps
        .iter()
        .map(|d| {
            (
                d.key.clone(),
                q::<Vec<u8>>(&mut con, redis::cmd("DUMP").arg(&d.key)),
            )
        })
        .collect();
    let field_ttls: u64 = truth
        .keys
        .values()
        .map(|k| k.field_expire_at_ms.len() as u64)
        .sum();
    assert_eq!(
        field_ttls > 0,
        source == Flavor::Valkey91,
        "[{source}] the fill makes field TTLs exactly on 9.1"
    );

    let mut problems: Vec<String> = Vec::new();
    let mut checked_identity = 0;
    for target in Flavor::matrix().into_iter().filter(|f| *f <= source) {
        if !require(target) {
            continue;
        }
        let dst = start_target(target);
        let tf = TargetFormat::from_info(&dst.info("server"))
            .unwrap_or_else(|| panic!("[{target}] INFO server gives no target format"));
        assert_eq!(tf, expected_format(target));
        let mut db0 = dst.client();
        let mut db1 = dst.client();
        let _: () = q(&mut db1, redis::cmd("SELECT").arg(1));
        let ctx = format!("{source} -> {target}");
        let (mut fast, mut portable, mut dropped) = (0, 0, 0u64);
        for d in &dumps {
            let k = quote_bytes(&d.key);
            let (ty, raw, stamp) = match parse_dump_payload(&d.payload) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("[{ctx}] key {k}: DUMP payload: {e}"));
                    continue;
                }
            };
            let sh = source_header(stamp);
            // Database 0: what the apply layer does.
            let restamped = dump_payload(ty, raw, tf.rdb_version);
            let transcoded = transcode_value(&tf, sh, ty, &d.key, raw, FieldTtlPolicy::Drop);
            if tf.can_load(sh, ty) {
                fast += 1;
                if let Err(e) = restore(&mut db0, &d.key, &restamped, d.expire) {
                    problems.push(format!(
                        "[{ctx}] key {k}: fast path (type {ty}) refused: {e}"
                    ));
                }
            } else {
                portable += 1;
                if restore(&mut db0, &d.key, &restamped, d.expire).is_ok() {
                    problems.push(format!(
                        "[{ctx}] key {k}: type {ty} restamped loads, but can_load says no"
                    ));
                }
                match &transcoded {
                    Ok((p, _)) => {
                        if let Err(e) = restore(&mut db0, &d.key, p, d.expire) {
                            problems.push(format!(
                                "[{ctx}] key {k}: transcoded payload (type {}) refused: {e}",
                                p[0]
                            ));
                        }
                    }
                    Err(e) => problems.push(format!("[{ctx}] transcode: {e}")),
                }
            }
            // Database 1: every key transcoded.
            match transcoded {
                Ok((p, n)) => {
                    dropped += n;
                    if let Err(e) = restore(&mut db1, &d.key, &p, d.expire) {
                        problems.push(format!(
                            "[{ctx}] key {k}: transcoded payload (type {}) refused: {e}",
                            p[0]
                        ));
                    }
                    if target == source {
                        if let Some(own) = plain.get(&d.key).filter(|own| own[0] == p[0]) {
                            checked_identity += 1;
                            if *own != p {
                                problems.push(format!(
                                    "[{ctx}] key {k}: transcoded type {} differs from the server's own DUMP: {}",
                                    p[0],
                                    first_difference(own, &p)
                                ));
                            }
                        }
                    }
                }
                Err(e) => problems.push(format!("[{ctx}] transcode: {e}")),
            }
            // Refuse: only where a field TTL has nowhere to go, and then naming the key.
            let refused = transcode_value(&tf, sh, ty, &d.key, raw, FieldTtlPolicy::Refuse);
            let has_ttls = truth
                .keys
                .get(&(0, d.key.clone()))
                .is_some_and(|s| !s.field_expire_at_ms.is_empty());
            match (refused, has_ttls && tf.field_ttl_hash_type().is_none()) {
                (Err(e), true) if e.to_string().contains(&k) => {}
                (Ok(_), false) => {}
                (r, want_err) => problems.push(format!(
                    "[{ctx}] key {k}: refuse policy gave {:?}, expected an error: {want_err}",
                    r.map(|_| "a payload")
                )),
            }
        }
        let want_dropped = if tf.field_ttl_hash_type().is_none() {
            field_ttls
        } else {
            0
        };
        if dropped != want_dropped {
            problems.push(format!(
                "[{ctx}] dropped {dropped} field TTLs, expected {want_dropped}"
            ));
        }
        let expected = project(&truth, target);
        let got = snapshot(&mut db0);
        for db in [0, 1] {
            let view = db_view(&got, db);
            let p = Profile::exact(&expected, &view);
            let which = if db == 0 {
                "apply path"
            } else {
                "all transcoded"
            };
            problems.extend(compare(
                source.name(),
                &expected,
                &format!("{target} ({which})"),
                &view,
                p,
            ));
        }
        eprintln!(
            "[{ctx}] {} keys: {fast} fast path, {portable} transcoded; {dropped} field TTLs dropped",
            dumps.len()
        );
    }
    assert!(
        checked_identity > 10,
        "[{source}] only {checked_identity} payloads compared byte for byte"
    );
    eprintln!(
        "[{source}] done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_no_diffs(&format!("writer from {source}"), &problems);
}

// ---------------------------------------------------------------------------------------------

/// A ziplist of short strings (the 2.x-3.0 list and hash encodings).
fn ziplist(items: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut prev = 0usize;
    let mut tail = 10;
    for it in items {
        tail = 10 + body.len();
        let start = body.len();
        body.push(prev as u8);
        body.push(it.len() as u8);
        body.extend_from_slice(it);
        prev = body.len() - start;
    }
    let mut zl = Vec::new();
    zl.extend_from_slice(&((10 + body.len() + 1) as u32).to_le_bytes());
    zl.extend_from_slice(&(tail as u32).to_le_bytes());
    zl.extend_from_slice(&(items.len() as u16).to_le_bytes());
    zl.extend_from_slice(&body);
    zl.push(0xFF);
    zl
}

fn raw_string(s: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    write_len(&mut o, s.len() as u64);
    o.extend_from_slice(s);
    o
}

/// Value bodies of every RDB type we can make: from servers' DUMPs, or built here (types no
/// server we run writes: zipmap, ziplist list, plain list/set/zset, Redis 7.4's hash types).
/// Each with the header its numbering belongs to.
fn sample_bodies() -> BTreeMap<(u8, bool), Vec<u8>> {
    // Keyed by (type, Valkey numbering).
    let mut out: BTreeMap<(u8, bool), Vec<u8>> = BTreeMap::new();
    let body = |items: Vec<Vec<u8>>, count: u64| {
        let mut b = Vec::new();
        write_len(&mut b, count);
        for i in items {
            b.extend(i);
        }
        b
    };
    let s = |x: &str| {
        let mut o = Vec::new();
        write_string(&mut o, x.as_bytes());
        o
    };
    out.insert((t::STRING, false), s("hello"));
    out.insert((t::LIST, false), body(vec![s("a"), s("b")], 2));
    out.insert((t::SET, false), body(vec![s("a"), s("b")], 2));
    out.insert(
        (t::ZSET, false),
        body(vec![s("m"), vec![3, b'1', b'.', b'5']], 1),
    );
    out.insert((t::HASH, false), body(vec![s("f"), s("v")], 1));
    let mut score = Vec::new();
    score.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
    out.insert((t::ZSET_2, false), body(vec![s("m"), score], 1));
    out.insert(
        (t::HASH_ZIPMAP, false),
        raw_string(&[1, 1, b'f', 1, 0, b'v', 0xFF]),
    );
    out.insert(
        (t::LIST_ZIPLIST, false),
        raw_string(&ziplist(&[b"a", b"b"])),
    );
    // Redis 7.4's hash types (22-25 in Redis numbering), as its rdb.c lays them out.
    let far = 4_102_444_800_000i64;
    let mut pre_ga = Vec::new();
    write_len(&mut pre_ga, 1);
    write_len(&mut pre_ga, far as u64);
    pre_ga.extend(s("f"));
    pre_ga.extend(s("v"));
    out.insert((t::HASH_METADATA_PRE_GA, false), pre_ga);
    let mut lp = ListpackWriter::new(BacklenStyle::Legacy);
    lp.push(b"f");
    lp.push(b"v");
    lp.push_int(far);
    let lp = lp.finish().expect("listpack");
    out.insert((t::HASH_LISTPACK_EX_PRE_GA, false), raw_string(&lp));
    let mut ex = Vec::new();
    write_ms(&mut ex, far);
    ex.extend(raw_string(&lp));
    out.insert((t::HASH_LISTPACK_EX, false), ex);
    let key = KeyHeader {
        db: 0,
        key: b"h".to_vec(),
        rdb_type: t::HASH,
        value_type: ValueType::Hash,
        expire_at_ms: None,
        idle_s: None,
        freq: None,
        offset: 0,
        meta: Vec::new(),
    };
    let mut tc = Transcoder::new(
        &TargetFormat::new(Magic::Redis, 12),
        &key,
        FieldTtlPolicy::Refuse,
    )
    .expect("transcoder");
    tc.push(Chunk::Fields(vec![HashField {
        field: b"f".to_vec(),
        value: b"v".to_vec(),
        expire_at_ms: Some(far),
    }]))
    .expect("field");
    let (p, _) = tc.finish().expect("payload");
    let (ty, b, _) = parse_dump_payload(&p).expect("own payload");
    assert_eq!(ty, t::HASH_METADATA);
    out.insert((t::HASH_METADATA, false), b.to_vec());

    // From the servers: each writes the types of its version.
    let mut take = |f: Flavor, setup: &[&[&str]], keys: &[&str]| {
        if !f.available() {
            return;
        }
        let srv = Server::start(f);
        let mut con = srv.client();
        for cmd in setup {
            let mut c = redis::cmd(cmd[0]);
            for a in &cmd[1..] {
                c.arg(*a);
            }
            let _: redis::Value = q(&mut con, &c);
        }
        for k in keys {
            let p: Vec<u8> = q(&mut con, redis::cmd("DUMP").arg(*k));
            let (ty, b, stamp) = parse_dump_payload(&p).expect("server DUMP");
            out.insert(
                (ty, source_header(stamp).magic == Magic::Valkey),
                b.to_vec(),
            );
        }
    };
    let stream_setup: &[&[&str]] = &[
        &["XADD", "st", "1-1", "a", "b"],
        &["XGROUP", "CREATE", "st", "g", "0"],
    ];
    let mut setup62: Vec<&[&str]> = vec![
        &["SADD", "is", "1", "2"],
        &["ZADD", "zz", "1.5", "m"],
        &["HSET", "hz", "f", "v"],
        &["RPUSH", "ql", "a", "b"],
    ];
    setup62.extend_from_slice(stream_setup);
    take(Flavor::Redis62, &setup62, &["is", "zz", "hz", "ql", "st"]);
    let mut setup70: Vec<&[&str]> = vec![
        &["ZADD", "zl", "1.5", "m"],
        &["HSET", "hl", "f", "v"],
        &["RPUSH", "l2", "a", "b"],
    ];
    setup70.extend_from_slice(stream_setup);
    take(Flavor::Redis70, &setup70, &["zl", "hl", "l2", "st"]);
    let mut setup81: Vec<&[&str]> = vec![&["SADD", "sl", "a", "b"]];
    setup81.extend_from_slice(stream_setup);
    take(Flavor::Valkey81, &setup81, &["sl", "st"]);
    take(
        Flavor::Valkey91,
        &[
            &["HSET", "h2", "a", "1", "b", "2"],
            &["HPEXPIREAT", "h2", "4102444800000", "FIELDS", "1", "b"],
        ],
        &["h2"],
    );
    out
}

#[test]
fn writer_target_formats_match_real_servers() {
    let flavors: Vec<Flavor> = Flavor::all().into_iter().filter(|f| require(*f)).collect();
    if flavors.is_empty() {
        return;
    }
    let bodies = sample_bodies();
    let mut problems = Vec::new();
    for f in flavors {
        let srv = start_target(f);
        let mut con = srv.client();
        let tf = TargetFormat::from_info(&srv.info("server")).expect("INFO server");
        assert_eq!(tf, expected_format(f), "[{f}] from_info");
        let _: () = q(&mut con, redis::cmd("SET").arg("scratch").arg("hello"));
        let own: Vec<u8> = q(&mut con, redis::cmd("DUMP").arg("scratch"));
        let (_, value, stamp) = parse_dump_payload(&own).expect("server DUMP");
        let probed = TargetFormat::from_dump_stamp(stamp).expect("stamp");
        assert_eq!(
            probed.rdb_version, tf.rdb_version,
            "[{f}] DUMP stamp vs INFO"
        );
        assert_eq!(
            dump_payload(0, value, stamp),
            own,
            "[{f}] dump_payload rebuilds the server's DUMP"
        );

        // Which stamps RESTORE accepts: every Redis version up to its own, and (Valkey 9) 80.
        let accepted: Vec<u16> = (0u16..=13)
            .chain([79, 80, 81, 255])
            .filter(|&v| {
                restore(&mut con, b"stamp", &dump_payload(0, value, v), Expire::None).is_ok()
            })
            .collect();
        let want: Vec<u16> = match f {
            Flavor::Valkey91 => (1..=11).chain([80]).collect(),
            _ => (0..=tf.rdb_version).collect(),
        };
        if accepted != want {
            problems.push(format!(
                "[{f}] accepts stamps {accepted:?}, expected {want:?}"
            ));
        }
        let mut zero = dump_payload(0, value, tf.rdb_version);
        let n = zero.len();
        zero[n - 8..].fill(0);
        if restore(&mut con, b"zero", &zero, Expire::None).is_ok() {
            problems.push(format!("[{f}] accepts a zero CRC"));
        }

        // Every type: RESTORE works exactly when can_load says so.
        let mut loaded = Vec::new();
        for ((ty, valkey), body) in &bodies {
            let magic = if *valkey { Magic::Valkey } else { Magic::Redis };
            let sh = Header {
                magic,
                version: if *valkey { 80 } else { 12 },
            };
            let ok = restore(
                &mut con,
                b"typed",
                &dump_payload(*ty, body, tf.rdb_version),
                Expire::None,
            );
            if ok.is_ok() {
                loaded.push(format!("{ty}{}", if *valkey { "v" } else { "" }));
            }
            if ok.is_ok() != tf.can_load(sh, *ty) {
                problems.push(format!(
                    "[{f}] type {ty} ({} numbering): RESTORE {}, can_load says {}",
                    magic.as_str(),
                    ok.map_or_else(|e| format!("refused ({e})"), |_| "loaded".into()),
                    tf.can_load(sh, *ty)
                ));
            }
        }
        eprintln!(
            "[{f}] {tf}: accepts stamps {accepted:?}; of {} sample types loads {}",
            bodies.len(),
            loaded.join(" ")
        );
    }
    assert_no_diffs("target formats", &problems);
}

/// The listpack encoder against real servers at every element-size boundary, the back-length
/// ones included: the probe (`backlen_style_from_probe`) finds the style `from_info` assumes;
/// a quicklist-2 list of one listpack node in the server's style loads and reads back forwards
/// (LRANGE) and backwards (LINDEX -n walks the back-lengths); the same list in the other style is
/// refused (7.0 and 8.1 with deep sanitization; Valkey 9.1 always).
#[test]
fn writer_listpack_encoder_on_real_servers() {
    let mut elements: Vec<Vec<u8>> = Vec::new();
    for v in [
        0i64,
        127,
        128,
        -4096,
        4095,
        4096,
        -32768,
        32767,
        32768,
        -8_388_608,
        8_388_607,
        8_388_608,
        i32::MIN as i64,
        i32::MAX as i64 + 1,
        i64::MIN,
        i64::MAX,
    ] {
        elements.push(v.to_string().into_bytes());
    }
    for s in ["-0", "007", "", "x"] {
        elements.push(s.as_bytes().to_vec());
    }
    // Element sizes (header + data) of 127/128, 16382/16383/16384, 2097150/2097151/2097152.
    for len in [
        126usize, 127, 4095, 4096, 16_377, 16_378, 16_379, 2_097_145, 2_097_146, 2_097_147,
    ] {
        elements.push((0..len).map(|i| b'a' + (i % 26) as u8).collect());
    }
    elements.push(b"tail".to_vec());
    let list_body = |style: BacklenStyle| {
        let mut lp = ListpackWriter::new(style);
        for e in &elements {
            lp.push(e);
        }
        let lp = lp.finish().expect("listpack");
        let mut body = Vec::new();
        write_len(&mut body, 1); // one quicklist node
        write_len(&mut body, 2); // PACKED: a listpack
        body.extend(raw_string(&lp));
        body
    };
    // Incompressible, so the DUMP shows the listpack's bytes whatever rdbcompression says.
    let mut x: u32 = 12345;
    let probe_value: Vec<u8> = (0..BACKLEN_PROBE_VALUE_LEN)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    for f in Flavor::all() {
        if !require(f) {
            continue;
        }
        let srv = start_target(f);
        let mut con = srv.client();
        let tf = TargetFormat::from_info(&srv.info("server")).expect("INFO server");
        let _: String = q(
            &mut con,
            redis::cmd("XADD")
                .arg("probe")
                .arg("1-1")
                .arg("f")
                .arg(&probe_value),
        );
        let dump: Vec<u8> = q(&mut con, redis::cmd("DUMP").arg("probe"));
        let probed = backlen_style_from_probe(&dump).unwrap_or_else(|e| panic!("[{f}] probe: {e}"));
        assert_eq!(
            probed, tf.listpack_backlen,
            "[{f}] probed back-length style vs from_info"
        );
        eprintln!("[{f}] back-length style {probed:?}");
        if !f.is_7_0_or_later() {
            continue; // 6.2 has no listpack lists; its stream nodes were just probed
        }
        let other = match tf.listpack_backlen {
            BacklenStyle::Legacy => BacklenStyle::Minimal,
            BacklenStyle::Minimal => BacklenStyle::Legacy,
        };
        let p = dump_payload(
            t::LIST_QUICKLIST_2,
            &list_body(tf.listpack_backlen),
            tf.rdb_version,
        );
        restore(&mut con, b"lp", &p, Expire::None).unwrap_or_else(|e| panic!("[{f}] RESTORE: {e}"));
        let all: Vec<Vec<u8>> = q(&mut con, redis::cmd("LRANGE").arg("lp").arg(0).arg(-1));
        assert!(all == elements, "[{f}] LRANGE differs");
        for i in 1..=elements.len() {
            let got: Vec<u8> = q(&mut con, redis::cmd("LINDEX").arg("lp").arg(-(i as i64)));
            assert!(
                got == elements[elements.len() - i],
                "[{f}] LINDEX -{i} differs"
            );
        }
        let wrong = dump_payload(t::LIST_QUICKLIST_2, &list_body(other), tf.rdb_version);
        assert!(
            restore(&mut con, b"wrong", &wrong, Expire::None).is_err(),
            "[{f}] a {other:?} listpack loads"
        );
    }
}

/// Values whose listpack elements sit on a back-length boundary (16378-byte strings) from a
/// Valkey 9.1 source (minimal style) into the older servers (legacy style): the raw listpacks
/// are refused even where `can_load` accepts the type (with deep sanitization; without it,
/// Redis 7.0 loads them and crashes on reading, see `BacklenStyle`), while the transcoded
/// payloads load and read back exactly. The reverse direction (legacy sources) needs compact.rs
/// to read the legacy style first (see `compact_reader_backlen_boundary` in writer.rs).
#[test]
fn writer_backlen_boundary_values_cross_styles() {
    if !require(Flavor::Valkey91) {
        return;
    }
    let src = Server::start(Flavor::Valkey91);
    let mut con = src.client();
    config_set(&mut con, "hash-max-listpack-value", 100_000);
    // 64 kB list nodes: the big element shares a listpack node (at the default 8 kB it would
    // get a PLAIN node of its own, outside any listpack).
    config_set(&mut con, "list-max-listpack-size", -5);
    let big = vec![b'q'; 16_378];
    let _: i64 = q(
        &mut con,
        redis::cmd("RPUSH").arg("list").arg("a").arg(&big).arg("b"),
    );
    let _: i64 = q(
        &mut con,
        redis::cmd("HSET")
            .arg("hash")
            .arg("f")
            .arg(&big)
            .arg("g")
            .arg("1"),
    );
    let _: String = q(
        &mut con,
        redis::cmd("XADD")
            .arg("stream")
            .arg("1-1")
            .arg("f")
            .arg(&big),
    );
    let _: String = q(
        &mut con,
        redis::cmd("XADD")
            .arg("stream")
            .arg("2-1")
            .arg("f")
            .arg("small"),
    );
    let read = |con: &mut redis::Connection| -> (Vec<Vec<u8>>, Vec<Vec<u8>>, redis::Value) {
        (
            q(con, redis::cmd("LRANGE").arg("list").arg(0).arg(-1)),
            q(con, redis::cmd("HGETALL").arg("hash")),
            q(con, redis::cmd("XRANGE").arg("stream").arg("-").arg("+")),
        )
    };
    let want = read(&mut con);
    let dumps: Vec<(&str, Vec<u8>)> = ["list", "hash", "stream"]
        .iter()
        .map(|k| (*k, q::<Vec<u8>>(&mut con, redis::cmd("DUMP").arg(*k))))
        .collect();
    for target in [Flavor::Redis62, Flavor::Redis70, Flavor::Valkey81] {
        if !require(target) {
            continue;
        }
        let dst = start_target(target);
        let mut tcon = dst.client();
        let tf = TargetFormat::from_info(&dst.info("server")).expect("INFO server");
        for (key, payload) in &dumps {
            let (ty, raw, stamp) = parse_dump_payload(payload).expect("DUMP");
            let sh = source_header(stamp);
            if tf.can_load(sh, ty) {
                let fast = restore(
                    &mut tcon,
                    key.as_bytes(),
                    &dump_payload(ty, raw, tf.rdb_version),
                    Expire::None,
                );
                assert!(
                    fast.is_err(),
                    "[{target}] {key}: a minimal-style listpack (type {ty}) loaded"
                );
            }
            let (p, _) = transcode_value(&tf, sh, ty, key.as_bytes(), raw, FieldTtlPolicy::Refuse)
                .unwrap_or_else(|e| panic!("[{target}] {e}"));
            restore(&mut tcon, key.as_bytes(), &p, Expire::None).unwrap_or_else(|e| {
                panic!("[{target}] {key}: transcoded (type {}) refused: {e}", p[0])
            });
        }
        let mut got = read(&mut tcon);
        // HGETALL order depends on the encoding; compare as maps.
        let as_map = |v: &[Vec<u8>]| {
            v.chunks(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(as_map(&got.1), as_map(&want.1), "[{target}] hash");
        got.1 = want.1.clone();
        assert!(got == want, "[{target}] list or stream differs");
    }
}
