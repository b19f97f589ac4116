//! The RDB forms that Redis 8.8/8.10 (RDB 14, 15) and Valkey 9.2 (RDB 81) write and that no
//! fixture here holds (issue 14; `../shared/rdb-corpus/MISSING-KNOWN.json` lists the upstream
//! files that could not be had): files are generated with the project's own writer
//! (`RdbFileWriter`, `ListpackWriter`, the length/string primitives, the stream `Transcoder`)
//! following `../shared/FORMAT-NOTES.md`, in the shapes the upstream tests assert about the
//! missing fixtures (librdb's `array_v14_*`, `stream_v14_xnack`, `hash_template_*_v15`).
//!
//! What passing proves:
//! - `shake-decode` prints each value as docs/output-formats.md says (arrays with their indices,
//!   tags and insert index, NACK zones, IDMP state, every hash-template form as the plain hash it
//!   is, Valkey path hashes, `UPDATE` and `SLOT_IMPORT` records under `--meta`);
//! - decode ∘ write = identity: the parser hands back, for every key, exactly the value bytes the
//!   writer wrote (`read_raw_value`), and its decoded chunks are the values written;
//! - each malformed template form that librdb's tests name (zero fields, unsorted or duplicate
//!   fields, an id defined twice, a reference to an unknown id, a bad fields format, a values
//!   listpack of the wrong length, a huge declared field count) fails with exit 1 and one line
//!   naming the problem and the key or offset, no panic.
//!
//! No server is needed: the bytes are checked against what the decoder and the notes say, and the
//! live tests (restore.rs) cover the transcoded forms on real servers.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Input, Json};
use shake_core::rdb::file_writer::RdbFileWriter;
use shake_core::rdb::opcodes as op;
use shake_core::rdb::types as t;
use shake_core::rdb::writer::{
    parse_dump_payload, write_len, write_stream_id_raw, write_string, BacklenStyle, FieldTtlPolicy,
    ListpackWriter, TargetFormat, Transcoder,
};
use shake_core::rdb::{
    ArrayValue, Chunk, Header, Item, KeyHeader, Magic, ParserOptions, RdbParser, StreamEntry,
    StreamId, StreamMeta, ValueType,
};
use shake_tests::{require, Flavor, Server};

const TIMEOUT: Duration = Duration::from_secs(60);

fn lp(items: &[&[u8]]) -> Vec<u8> {
    let mut w = ListpackWriter::new(BacklenStyle::Legacy);
    for i in items {
        w.push(i);
    }
    w.finish().unwrap()
}

fn string(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_string(&mut v, b);
    v
}

fn sid(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

/// An array value (type 28): count, insert-index flag (and index), then index, tag, payload.
fn array(insert_idx: Option<u64>, elems: &[(u64, ArrayValue)]) -> Vec<u8> {
    let mut v = Vec::new();
    write_len(&mut v, elems.len() as u64);
    match insert_idx {
        None => write_len(&mut v, 0),
        Some(i) => {
            write_len(&mut v, 1);
            write_len(&mut v, i);
        }
    }
    for (idx, val) in elems {
        write_len(&mut v, *idx);
        match val {
            ArrayValue::Str(s) if s.len() <= 7 => {
                write_len(&mut v, 3);
                write_string(&mut v, s);
            }
            ArrayValue::Str(s) => {
                write_len(&mut v, 0);
                write_string(&mut v, s);
            }
            ArrayValue::Int(i) => {
                write_len(&mut v, 1);
                v.extend_from_slice(&i.to_le_bytes());
            }
            ArrayValue::Float(f) => {
                write_len(&mut v, 2);
                v.extend_from_slice(&f.to_le_bytes());
            }
        }
    }
    v
}

/// librdb's stream_v14_xnack shape: 4 entries; group "mygroup" has 4 PEL entries, consumer1
/// owns the first and the last, the 2 middle ones are NACKed (delivery time 0); an IDMP trailer.
fn xnack_stream() -> Vec<u8> {
    stream_v4_or_v5(true)
}

/// With `nack`: the type-27 value above. Without: a type-26 value (no NACK zone) whose
/// consumer owns all 4 pending entries.
fn stream_v4_or_v5(nack: bool) -> Vec<u8> {
    let ids = [
        sid(1779170191997, 0),
        sid(1779170191998, 0),
        sid(1779170192000, 0),
        sid(1779170192001, 0),
    ];
    let key = KeyHeader {
        db: 0,
        key: b"mystream".to_vec(),
        rdb_type: t::STREAM_LISTPACKS_3,
        value_type: ValueType::Stream,
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
    .unwrap();
    tc.push(Chunk::StreamEntries(
        ids.iter()
            .map(|&id| StreamEntry {
                id,
                fields: vec![(b"f".to_vec(), b"v".to_vec())],
                deleted: false,
            })
            .collect(),
    ))
    .unwrap();
    tc.push(Chunk::StreamMeta(StreamMeta {
        length: 4,
        last_id: ids[3],
        first_id: Some(ids[0]),
        max_deleted_id: Some(sid(0, 0)),
        entries_added: Some(4),
        groups: 0,
    }))
    .unwrap();
    let (payload, _) = tc.finish().unwrap();
    let (ty, body, _) = parse_dump_payload(&payload).unwrap();
    assert_eq!(ty, t::STREAM_LISTPACKS_3);
    // The listpacks-3 stream with no group ends in its group count 0: replace it by one group.
    assert_eq!(body.last(), Some(&0));
    let mut v = body[..body.len() - 1].to_vec();
    write_len(&mut v, 1);
    v.extend(string(b"mygroup"));
    write_len(&mut v, ids[3].ms);
    write_len(&mut v, ids[3].seq);
    write_len(&mut v, 4); // entries read
    write_len(&mut v, 4); // PEL
    for (i, id) in ids.iter().enumerate() {
        write_stream_id_raw(&mut v, *id);
        let nacked = nack && (i == 1 || i == 2);
        let time: i64 = if nacked { 0 } else { 1779170192100 };
        v.extend_from_slice(&time.to_le_bytes());
        write_len(&mut v, 1);
    }
    write_len(&mut v, 1); // consumers
    v.extend(string(b"consumer1"));
    v.extend_from_slice(&1779170192100i64.to_le_bytes());
    v.extend_from_slice(&1779170192100i64.to_le_bytes());
    if nack {
        write_len(&mut v, 2);
        write_stream_id_raw(&mut v, ids[0]);
        write_stream_id_raw(&mut v, ids[3]);
        write_len(&mut v, 2); // the NACK zone
        write_stream_id_raw(&mut v, ids[1]);
        write_stream_id_raw(&mut v, ids[2]);
    } else {
        write_len(&mut v, 4);
        for id in &ids {
            write_stream_id_raw(&mut v, *id);
        }
    }
    // IDMP: duration, max entries, one producer with one iid, the two counters.
    write_len(&mut v, 100);
    write_len(&mut v, 100);
    write_len(&mut v, 1);
    v.extend(string(b"p1"));
    write_len(&mut v, 1);
    v.extend(string(b"iid-1"));
    write_len(&mut v, ids[0].ms);
    write_len(&mut v, ids[0].seq);
    write_len(&mut v, 1);
    write_len(&mut v, 0);
    v
}

/// Template names "age", "city", "name" (sorted: shorter first, then bytewise).
const NAMES: [&[u8]; 3] = [b"age", b"city", b"name"];

fn template_record(id: u64, names: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    write_len(&mut v, id);
    write_len(&mut v, names.len() as u64);
    for n in names {
        v.extend(string(n));
    }
    v
}

/// Type 30: one listpack, the template id first, then the values.
fn tmpl_lp_ref(id: &[u8], values: &[&[u8]]) -> Vec<u8> {
    let mut items = vec![id];
    items.extend_from_slice(values);
    string(&lp(&items))
}

/// Type 32: the template id, then the values as strings.
fn tmpl_array_ref(id: u64, values: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    write_len(&mut v, id);
    for x in values {
        v.extend(string(x));
    }
    v
}

/// The fields part of a self-contained template (types 29, 31): format 0 (listpack) or 1 (raw).
fn inline_names(format: u64, names: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    write_len(&mut v, format);
    if format == 0 {
        v.extend(string(&lp(names)));
    } else {
        write_len(&mut v, names.len() as u64);
        for n in names {
            v.extend(string(n));
        }
    }
    v
}

/// A type-29 key (names as a listpack) and a type-31 key (names raw, a value too long for a
/// listpack): "s-lp" = {age: 40, city: Oslo, name: cy}, "s-array" = {x: 1, yy: 80 w's}.
fn self_contained_keys() -> [Key; 2] {
    [
        Key {
            name: "s-lp",
            ty: t::HASH_TMPL_LP,
            value: [
                inline_names(0, &NAMES),
                tmpl_lp_ref(b"5", &[b"40", b"Oslo", b"cy"]),
            ]
            .concat(),
        },
        Key {
            name: "s-array",
            ty: t::HASH_TMPL_ARRAY,
            value: [
                inline_names(1, &[b"x", b"yy"]),
                string(b"1"),
                string(&[b'w'; 80]),
            ]
            .concat(),
        },
    ]
}

struct Key {
    name: &'static str,
    ty: u8,
    value: Vec<u8>,
}

fn write_file(version: u16, records: &[(u8, Vec<u8>)], keys: &[Key]) -> Vec<u8> {
    let mut w = RdbFileWriter::new(Vec::new(), version, &[("redis-ver", b"8.10.0")]).unwrap();
    for (opcode, body) in records {
        w.record(*opcode, body).unwrap();
    }
    for k in keys {
        w.key(0, k.name.as_bytes(), None, k.ty, &k.value).unwrap();
    }
    w.finish().unwrap()
}

/// decode ∘ write = identity: every key's raw value is the bytes written, and the decoded
/// chunks are returned for the caller's checks.
fn round_trip(file: &[u8], keys: &[Key]) -> Vec<(String, Vec<Chunk>)> {
    let mut p = RdbParser::new(file);
    let mut raw = Vec::new();
    while let Some(item) = p.next_item().unwrap() {
        if let Item::Key(k) = item {
            raw.push((
                String::from_utf8(k.key).unwrap(),
                k.rdb_type,
                p.read_raw_value().unwrap(),
            ));
        }
    }
    assert_eq!(raw.len(), keys.len());
    let header = RdbParser::new(file).header().unwrap();
    let mut decoded = Vec::new();
    for (k, (name, ty, bytes)) in keys.iter().zip(raw) {
        assert_eq!((name.as_str(), ty), (k.name, k.ty));
        assert!(
            bytes == k.value,
            "{name}: the parser's raw value differs from what was written"
        );
        decoded.push((name, decode_value(file, header, &k.name)));
    }
    decoded
}

fn decode_value(file: &[u8], header: Header, key: &str) -> Vec<Chunk> {
    let mut p = RdbParser::with_options(
        file,
        ParserOptions {
            chunk_elements: 7,
            ..Default::default()
        },
    );
    assert_eq!(p.header().unwrap(), header);
    while let Some(item) = p.next_item().unwrap() {
        if let Item::Key(k) = item {
            if k.key == key.as_bytes() {
                let mut v = Vec::new();
                while let Some(c) = p.next_chunk().unwrap() {
                    v.push(c);
                }
                return v;
            }
        }
    }
    panic!("{key} not in the file");
}

fn decode_json(file: &[u8], extra: &[&str]) -> Vec<Json> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen.rdb");
    std::fs::write(&path, file).unwrap();
    let run = common::run_decode(extra, Input::File(&path), TIMEOUT);
    assert_eq!(run.code, Some(0), "shake-decode: {}", run.describe());
    common::parse_lines(&run.stdout).unwrap()
}

fn by_key<'a>(lines: &'a [Json], key: &str) -> &'a Json {
    lines
        .iter()
        .find(|l| l.get("key").and_then(Json::as_str) == Some(key))
        .unwrap_or_else(|| panic!("no line for {key}"))
        .get("value")
        .unwrap()
}

fn compact(j: &Json) -> String {
    j.to_string().replace(' ', "")
}

#[test]
fn generated_rdb_14_arrays_and_xnack_streams() {
    let long: Vec<u8> = vec![b'x'; 70];
    let basic: Vec<(u64, ArrayValue)> = (0..100)
        .map(|i| (i, ArrayValue::Str(format!("a{i}").into_bytes())))
        .collect();
    let keys = vec![
        Key {
            name: "arr",
            ty: t::ARRAY,
            value: array(None, &basic),
        },
        Key {
            name: "mixed",
            ty: t::ARRAY,
            value: array(
                None,
                &[
                    (0, ArrayValue::Str(long.clone())),
                    (1, ArrayValue::Int(42)),
                    (2, ArrayValue::Float(1.5)),
                    (3, ArrayValue::Str(b"abc".to_vec())),
                ],
            ),
        },
        Key {
            name: "sparse",
            ty: t::ARRAY,
            value: array(
                Some(49),
                &[
                    (1_000_000, ArrayValue::Str(b"x".to_vec())),
                    (1_000_100, ArrayValue::Str(b"y".to_vec())),
                    (1_001_000, ArrayValue::Str(b"z".to_vec())),
                ],
            ),
        },
        Key {
            name: "boundary",
            ty: t::ARRAY,
            value: array(
                Some(u64::MAX - 1),
                &[
                    (0, ArrayValue::Str(b"a".to_vec())),
                    (1, ArrayValue::Str(b"b".to_vec())),
                ],
            ),
        },
        Key {
            name: "mystream",
            ty: t::STREAM_LISTPACKS_5,
            value: xnack_stream(),
        },
    ];
    let file = write_file(14, &[], &keys);
    let decoded = round_trip(&file, &keys);
    // The chunks are the values written (arrays come in chunks of 7 elements here).
    let elems = |name: &str| -> Vec<(u64, ArrayValue)> {
        decoded
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .iter()
            .flat_map(|c| match c {
                Chunk::ArrayElems(v) => v.iter().map(|e| (e.index, e.value.clone())).collect(),
                _ => Vec::new(),
            })
            .collect()
    };
    assert_eq!(elems("arr"), basic);
    assert_eq!(elems("mixed")[1], (1, ArrayValue::Int(42)));
    let lines = decode_json(&file, &[]);
    assert_eq!(lines.len(), 5);
    let arr = by_key(&lines, "arr");
    assert_eq!(arr.get("count").and_then(Json::as_i128), Some(100));
    assert!(
        arr.get("insert_idx").is_none(),
        "no insert_idx when the flag is 0"
    );
    let els = arr.get("elements").and_then(Json::as_arr).unwrap();
    assert_eq!(els.len(), 100);
    assert_eq!(compact(&els[99]), "[99,\"a99\"]");
    assert_eq!(
        compact(by_key(&lines, "mixed").get("elements").unwrap()),
        format!("[[0,\"{}\"],[1,42],[2,1.5],[3,\"abc\"]]", "x".repeat(70))
    );
    let sparse = by_key(&lines, "sparse");
    assert_eq!(sparse.get("insert_idx").and_then(Json::as_i128), Some(49));
    assert_eq!(
        compact(sparse.get("elements").unwrap()),
        "[[1000000,\"x\"],[1000100,\"y\"],[1001000,\"z\"]]"
    );
    // UINT64_MAX-1 survives without precision loss.
    let line = lines
        .iter()
        .find(|l| l.get("key").and_then(Json::as_str) == Some("boundary"))
        .unwrap();
    assert!(
        line.to_string()
            .contains("\"insert_idx\":18446744073709551614"),
        "{line}"
    );
    assert_eq!(line.get("type").and_then(Json::as_str), Some("array"));

    let s = by_key(&lines, "mystream");
    let group = &s.get("groups").and_then(Json::as_arr).unwrap()[0];
    assert_eq!(
        compact(group.get("nacked").unwrap()),
        "[\"1779170191998-0\",\"1779170192000-0\"]"
    );
    assert_eq!(
        group.get("pending").and_then(Json::as_arr).unwrap().len(),
        4
    );
    let c = &group.get("consumers").and_then(Json::as_arr).unwrap()[0];
    assert_eq!(
        compact(c.get("pending").unwrap()),
        "[\"1779170191997-0\",\"1779170192001-0\"]"
    );
    assert_eq!(
        compact(s.get("idmp").unwrap()),
        "{\"duration_s\":100,\"max_entries\":100,\"producers\":[{\"pid\":\"p1\",\"iids\":[{\"iid\":\"iid-1\",\"id\":\"1779170191997-0\"}]}],\"iids_added\":1,\"iids_duplicates\":0}"
    );
    assert_eq!(s.get("entries").and_then(Json::as_arr).unwrap().len(), 4);

    // keys and memory formats name the new type; the RESP format refuses what has no commands.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen.rdb");
    std::fs::write(&path, &file).unwrap();
    let keys_out = common::run_decode(&["--format", "keys"], Input::File(&path), TIMEOUT);
    assert_eq!(keys_out.code, Some(0), "{}", keys_out.describe());
    assert_eq!(String::from_utf8_lossy(&keys_out.stdout).lines().count(), 5);
    let mem = common::run_decode(&["--format", "memory"], Input::File(&path), TIMEOUT);
    assert_eq!(mem.code, Some(0), "{}", mem.describe());
    assert!(
        String::from_utf8_lossy(&mem.stdout).contains("array"),
        "{}",
        String::from_utf8_lossy(&mem.stdout)
    );
}

#[test]
fn generated_rdb_15_hash_templates() {
    let [s_lp, s_array] = self_contained_keys();
    let keys = vec![
        Key {
            name: "h1",
            ty: t::HASH_TMPL_LP_REF,
            value: tmpl_lp_ref(b"0", &[b"31", b"Paris", b"ann"]),
        },
        Key {
            name: "h2",
            ty: t::HASH_TMPL_LP_REF,
            value: tmpl_lp_ref(b"0", &[b"7", b"", b"bob"]),
        },
        Key {
            name: "k1",
            ty: t::HASH_TMPL_ARRAY_REF,
            value: tmpl_array_ref(1, &[b"1", b"2", &[b'v'; 100]]),
        },
        s_lp,
        Key {
            name: "s-lpraw",
            ty: t::HASH_TMPL_LP,
            value: [
                inline_names(1, &NAMES),
                tmpl_lp_ref(b"6", &[b"41", b"Rome", b"di"]),
            ]
            .concat(),
        },
        s_array,
        Key {
            name: "plain",
            ty: t::STRING,
            value: string(b"classic"),
        },
    ];
    // Template 1's names are sorted too: alpha < delta < gamma (same length, bytewise).
    let records = vec![
        (op::HASH_TEMPLATE, template_record(0, &NAMES)),
        (
            op::HASH_TEMPLATE,
            template_record(1, &[b"alpha", b"delta", b"gamma"]),
        ),
    ];
    let file = write_file(15, &records, &keys);
    let decoded = round_trip(&file, &keys);
    let fields = |name: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
        decoded
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .iter()
            .flat_map(|c| match c {
                Chunk::Fields(v) => v
                    .iter()
                    .map(|f| (f.field.clone(), f.value.clone()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    };
    assert_eq!(
        fields("h1"),
        vec![
            (b"age".to_vec(), b"31".to_vec()),
            (b"city".to_vec(), b"Paris".to_vec()),
            (b"name".to_vec(), b"ann".to_vec())
        ]
    );
    assert_eq!(fields("k1")[2], (b"gamma".to_vec(), vec![b'v'; 100]));

    let lines = decode_json(&file, &[]);
    assert_eq!(lines.len(), 7);
    assert_eq!(
        compact(by_key(&lines, "h2")),
        "{\"age\":\"7\",\"city\":\"\",\"name\":\"bob\"}"
    );
    assert_eq!(
        compact(by_key(&lines, "s-lp")),
        "{\"age\":\"40\",\"city\":\"Oslo\",\"name\":\"cy\"}"
    );
    assert_eq!(
        compact(by_key(&lines, "s-lpraw")),
        "{\"age\":\"41\",\"city\":\"Rome\",\"name\":\"di\"}"
    );
    assert_eq!(
        compact(by_key(&lines, "s-array")),
        format!("{{\"x\":\"1\",\"yy\":\"{}\"}}", "w".repeat(80))
    );
    for l in &lines {
        assert_eq!(
            l.get("type").and_then(Json::as_str),
            Some(if l.get("key").and_then(Json::as_str) == Some("plain") {
                "string"
            } else {
                "hash"
            })
        );
    }
    let meta = decode_json(&file, &["--meta"]);
    let tmpls: Vec<String> = meta
        .iter()
        .filter(|l| l.get("meta").and_then(Json::as_str) == Some("hash_template"))
        .map(compact)
        .collect();
    assert_eq!(
        tmpls,
        vec![
            "{\"meta\":\"hash_template\",\"id\":0,\"fields\":[\"age\",\"city\",\"name\"]}",
            "{\"meta\":\"hash_template\",\"id\":1,\"fields\":[\"alpha\",\"delta\",\"gamma\"]}"
        ]
    );
    // The RESP format writes them as HSETs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen.rdb");
    std::fs::write(&path, &file).unwrap();
    let run = common::run_decode(&["--format", "resp"], Input::File(&path), TIMEOUT);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let cmds = common::parse_resp_commands(&run.stdout).unwrap();
    assert!(cmds.iter().any(|c| c
        == &[
            b"HSET".to_vec(),
            b"h1".to_vec(),
            b"age".to_vec(),
            b"31".to_vec(),
            b"city".to_vec(),
            b"Paris".to_vec(),
            b"name".to_vec(),
            b"ann".to_vec()
        ]));
}

#[test]
fn generated_valkey_81_records_and_path_hash() {
    let mut path_hash = Vec::new();
    write_len(&mut path_hash, 2);
    for (p, fs) in [
        (&b"a.b"[..], &[(&b"f1"[..], &b"v1"[..])][..]),
        (b"a.c", &[(b"f2", b"v2"), (b"f3", b"v3")]),
    ] {
        path_hash.extend(string(p));
        write_len(&mut path_hash, fs.len() as u64);
        for (f, v) in fs {
            path_hash.extend(string(f));
            path_hash.extend(string(v));
        }
    }
    let mut hash2 = Vec::new();
    write_len(&mut hash2, 1);
    hash2.extend(string(b"F1"));
    hash2.extend(string(b"V1"));
    hash2.extend_from_slice(&2715785640000i64.to_le_bytes());
    let keys = vec![
        Key {
            name: "ph",
            ty: t::VALKEY_PATH_HASH,
            value: path_hash,
        },
        Key {
            name: "h2",
            ty: t::VALKEY_HASH_2,
            value: hash2,
        },
    ];
    let mut import = string(b"f7acd40f147a6f3d4a2123d48c25d72ede295b98");
    write_len(&mut import, 1);
    write_len(&mut import, 100);
    write_len(&mut import, 200);
    let update = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n".to_vec();
    let file = write_file(
        81,
        &[(op::SLOT_IMPORT, import), (op::UPDATE, update)],
        &keys,
    );
    assert!(file.starts_with(b"VALKEY081"));
    round_trip(&file, &keys);
    let lines = decode_json(&file, &["--meta"]);
    let metas: Vec<String> = lines
        .iter()
        .filter(|l| {
            matches!(
                l.get("meta").and_then(Json::as_str),
                Some("slot_import" | "update")
            )
        })
        .map(compact)
        .collect();
    assert_eq!(
        metas,
        vec![
            "{\"meta\":\"slot_import\",\"name\":\"f7acd40f147a6f3d4a2123d48c25d72ede295b98\",\"ranges\":[[100,200]]}",
            "{\"meta\":\"update\",\"command\":[\"SET\",\"k\",\"vv\"]}"
        ]
    );
    assert_eq!(
        compact(by_key(&lines, "ph")),
        "[{\"path\":\"a.b\",\"fields\":{\"f1\":\"v1\"}},{\"path\":\"a.c\",\"fields\":{\"f2\":\"v2\",\"f3\":\"v3\"}}]"
    );
    let h2 = lines
        .iter()
        .find(|l| l.get("key").and_then(Json::as_str) == Some("h2"))
        .unwrap();
    assert_eq!(
        compact(h2.get("field_expire_at_ms").unwrap()),
        "{\"F1\":2715785640000}"
    );
}

#[test]
fn malformed_templates_and_new_types_fail_cleanly() {
    let ok_keys = |ty: u8, value: Vec<u8>| {
        vec![Key {
            name: "bad",
            ty,
            value,
        }]
    };
    let rec = |names: &[&[u8]]| (op::HASH_TEMPLATE, template_record(0, names));
    let mut huge = Vec::new();
    write_len(&mut huge, 0);
    write_len(&mut huge, u32::MAX as u64);
    huge.extend(string(b"a"));
    let cases: Vec<(&str, Vec<(u8, Vec<u8>)>, Vec<Key>, &str)> = vec![
        ("zero fields", vec![rec(&[])], Vec::new(), "no fields"),
        (
            "unsorted",
            vec![rec(&[b"name", b"age"])],
            Vec::new(),
            "not strictly sorted",
        ),
        (
            "duplicate field",
            vec![rec(&[b"age", b"age"])],
            Vec::new(),
            "not strictly sorted",
        ),
        (
            "id defined twice",
            vec![rec(&NAMES), rec(&NAMES)],
            Vec::new(),
            "defined twice",
        ),
        (
            "unknown id",
            vec![rec(&NAMES)],
            ok_keys(
                t::HASH_TMPL_ARRAY_REF,
                tmpl_array_ref(9, &[b"1", b"2", b"3"]),
            ),
            "template 9",
        ),
        (
            "values count",
            vec![rec(&NAMES)],
            ok_keys(t::HASH_TMPL_LP_REF, tmpl_lp_ref(b"0", &[b"1", b"2"])),
            "values for 3 fields",
        ),
        (
            "bad fields format",
            Vec::new(),
            ok_keys(t::HASH_TMPL_LP, {
                let mut v = Vec::new();
                write_len(&mut v, 7);
                v
            }),
            "fields format is 7",
        ),
        (
            "inline unsorted",
            Vec::new(),
            ok_keys(
                t::HASH_TMPL_ARRAY,
                [inline_names(1, &[b"b", b"a"]), string(b"1"), string(b"2")].concat(),
            ),
            "not strictly sorted",
        ),
        // Read as a stream of names (no allocation by the declared count): the next opcode is no name.
        (
            "huge field count",
            vec![(op::HASH_TEMPLATE, huge)],
            Vec::new(),
            "hash template field",
        ),
        (
            "array tag",
            Vec::new(),
            ok_keys(t::ARRAY, {
                let mut v = Vec::new();
                write_len(&mut v, 1);
                write_len(&mut v, 0);
                write_len(&mut v, 0);
                write_len(&mut v, 9);
                v
            }),
            "unknown tag 9",
        ),
        // GCRA (ENABLE_GCRA builds only): refused as what it is, not as corruption.
        (
            "gcra",
            Vec::new(),
            ok_keys(t::GCRA, {
                let mut v = Vec::new();
                write_len(&mut v, 1_767_225_600_000_000);
                v
            }),
            "GCRA rate-limiter value (type 33)",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for (what, records, keys, want) in cases {
        let file = write_file(15, &records, &keys);
        let path = dir.path().join("bad.rdb");
        std::fs::write(&path, &file).unwrap();
        let run = common::run_decode(&[], Input::File(&path), TIMEOUT);
        let err = run.stderr_text();
        if run.code != Some(1) || !err.to_lowercase().contains(&want.to_lowercase()) {
            problems.push(format!(
                "{what}: expected exit 1 naming {want:?}, got {}",
                run.describe()
            ));
        }
        problems.extend(
            run.clean_exit_problems()
                .into_iter()
                .map(|p| format!("{what}: {p}")),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn restore_bin() -> std::path::PathBuf {
    let bin = common::decoder_path()
        .with_file_name(format!("shake-restore{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built: cargo build -p shake-restore",
        bin.display()
    );
    bin
}

fn restore_file(url: &str, file: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(restore_bin())
        .args(["--target", url])
        .args(extra)
        .arg(file)
        .output()
        .expect("run shake-restore");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, cmd: &mut redis::Cmd) -> T {
    cmd.query(con)
        .unwrap_or_else(|e| panic!("query failed: {e}"))
}

/// Issue 14 item 2 on real servers: Redis 8.10 hash templates (types 29-32) and a Redis 8.6
/// stream with IDMP state (type 26) restored into Redis 8.2, Redis 7.0 and Valkey 9.1 (none of
/// which loads those types): the hashes arrive as the plain hashes they are, the stream with its
/// entries, group, PEL (owners, delivery counts) and counters, the IDMP state dropped as
/// documented. An RDB 14 file with an array or a stream with NACKed entries is refused naming the
/// key, before anything is written.
#[test]
fn newest_formats_restore_into_older_servers() {
    let targets: Vec<Flavor> = [Flavor::Redis82, Flavor::Redis70, Flavor::Valkey91]
        .into_iter()
        .filter(|f| require(*f))
        .collect();
    if targets.is_empty() {
        return;
    }
    let [s_lp, s_array] = self_contained_keys();
    let keys = vec![
        Key {
            name: "h1",
            ty: t::HASH_TMPL_LP_REF,
            value: tmpl_lp_ref(b"0", &[b"31", b"Paris", b"ann"]),
        },
        Key {
            name: "k1",
            ty: t::HASH_TMPL_ARRAY_REF,
            value: tmpl_array_ref(0, &[b"1", b"2", &[b'v'; 100]]),
        },
        s_lp,
        s_array,
        Key {
            name: "st",
            ty: t::STREAM_LISTPACKS_4,
            value: stream_v4_or_v5(false),
        },
    ];
    let good = write_file(
        15,
        &[(op::HASH_TEMPLATE, template_record(0, &NAMES))],
        &keys,
    );
    let refused_array = write_file(
        14,
        &[],
        &[
            Key {
                name: "plain",
                ty: t::STRING,
                value: string(b"first"),
            },
            Key {
                name: "arr",
                ty: t::ARRAY,
                value: array(None, &[(0, ArrayValue::Int(1))]),
            },
        ],
    );
    let refused_nack = write_file(
        14,
        &[],
        &[
            Key {
                name: "plain",
                ty: t::STRING,
                value: string(b"first"),
            },
            Key {
                name: "mystream",
                ty: t::STREAM_LISTPACKS_5,
                value: xnack_stream(),
            },
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (good_path, arr_path, nack_path) = (
        dir.path().join("good.rdb"),
        dir.path().join("array.rdb"),
        dir.path().join("nack.rdb"),
    );
    std::fs::write(&good_path, &good).unwrap();
    std::fs::write(&arr_path, &refused_array).unwrap();
    std::fs::write(&nack_path, &refused_nack).unwrap();
    let mut problems = Vec::new();
    for target in targets {
        let srv = Server::start(target);
        let mut con = srv.client();
        let (code, err) = restore_file(&srv.url(), &good_path, &[]);
        if code != Some(0) {
            problems.push(format!(
                "[{target}] templates + type-26 stream: exit {code:?}: {err}"
            ));
            continue;
        }
        let pairs = |con: &mut redis::Connection, k: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
            let mut v: Vec<(Vec<u8>, Vec<u8>)> = q(con, redis::cmd("HGETALL").arg(k));
            v.sort();
            v
        };
        let b = |s: &str| s.as_bytes().to_vec();
        let want = [
            (
                "h1",
                vec![
                    (b("age"), b("31")),
                    (b("city"), b("Paris")),
                    (b("name"), b("ann")),
                ],
            ),
            (
                "k1",
                vec![
                    (b("age"), b("1")),
                    (b("city"), b("2")),
                    (b("name"), vec![b'v'; 100]),
                ],
            ),
            (
                "s-lp",
                vec![
                    (b("age"), b("40")),
                    (b("city"), b("Oslo")),
                    (b("name"), b("cy")),
                ],
            ),
            ("s-array", vec![(b("x"), b("1")), (b("yy"), vec![b'w'; 80])]),
        ];
        for (k, w) in want {
            let got = pairs(&mut con, k);
            if got != w {
                problems.push(format!("[{target}] {k}: {got:?}, expected {w:?}"));
            }
        }
        let entries: Vec<(String, Vec<(String, String)>)> =
            q(&mut con, redis::cmd("XRANGE").arg("st").arg("-").arg("+"));
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        if ids
            != [
                "1779170191997-0",
                "1779170191998-0",
                "1779170192000-0",
                "1779170192001-0",
            ]
        {
            problems.push(format!("[{target}] st entries {ids:?}"));
        }
        // XPENDING summary: count, lowest, highest, [[consumer, count]].
        let pending: (i64, String, String, Vec<(String, String)>) =
            q(&mut con, redis::cmd("XPENDING").arg("st").arg("mygroup"));
        if pending.0 != 4 || pending.3 != vec![("consumer1".to_string(), "4".to_string())] {
            problems.push(format!(
                "[{target}] st PEL {pending:?}, expected 4 entries owned by consumer1"
            ));
        }
        for (path, what) in [(&arr_path, "array"), (&nack_path, "NACKed")] {
            let _: () = q(&mut con, &mut redis::cmd("FLUSHALL"));
            let (code, err) = restore_file(&srv.url(), path, &[]);
            let n: i64 = q(&mut con, &mut redis::cmd("DBSIZE"));
            if code != Some(1)
                || !err.contains(what)
                || !err.contains("nothing was written")
                || n != 0
            {
                problems.push(format!(
                    "[{target}] {what}: expected exit 1 naming it before any write, got {code:?} with {n} keys written: {err}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Issue 14 item 4 with a real module: a FalkorDB graph (module type `graphdata`) made in Redis
/// 8.2 with `falkordb.so` loaded passes raw into another Redis 8.2 with the module (the graph
/// answers queries there), and is refused naming the module type where the module is missing:
/// Redis 8.2 without it (RESTORE refused by the server, the key and the module named) and Redis
/// 7.0 (no module at all: refused before anything is written).
#[test]
fn module_values_pass_to_the_same_module_and_are_refused_elsewhere() {
    if !require(Flavor::Redis82) {
        return;
    }
    let Some(module) = Flavor::Redis82.module() else {
        panic!(
            "Redis 8.2 is installed without falkordb.so beside it: run scripts/install-servers.sh"
        );
    };
    let module = module.to_str().unwrap().to_string();
    let src = Server::start_with(Flavor::Redis82, &[("loadmodule", &module)]);
    let mut con = src.client();
    let _: redis::Value = q(
        &mut con,
        redis::cmd("GRAPH.QUERY")
            .arg("g")
            .arg("CREATE (:P {n:41}), (:P {n:1})"),
    );
    let _: () = q(&mut con, redis::cmd("SET").arg("plain").arg("v"));
    let rdb = src.save();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graph.rdb");
    std::fs::copy(&rdb, &path).unwrap();
    let lines = {
        let run = common::run_decode(&[], Input::File(&path), TIMEOUT);
        assert_eq!(run.code, Some(0), "{}", run.describe());
        common::parse_lines(&run.stdout).unwrap()
    };
    let g = by_key(&lines, "g");
    assert_eq!(
        g.get("module").and_then(Json::as_str),
        Some("graphdata"),
        "{g}"
    );

    let sum = |con: &mut redis::Connection| -> String {
        let v: redis::Value = q(
            con,
            redis::cmd("GRAPH.QUERY")
                .arg("g")
                .arg("MATCH (p:P) RETURN sum(p.n)"),
        );
        format!("{v:?}")
    };
    let mut problems = Vec::new();
    let with = Server::start_with(Flavor::Redis82, &[("loadmodule", &module)]);
    let (code, err) = restore_file(&with.url(), &path, &[]);
    if code != Some(0) {
        problems.push(format!("into 8.2 with the module: exit {code:?}: {err}"));
    } else if !sum(&mut with.client()).contains("42") {
        problems.push(format!(
            "into 8.2 with the module: the graph answers {}",
            sum(&mut with.client())
        ));
    }
    for (flavor, nothing_written) in [(Flavor::Redis82, false), (Flavor::Redis70, true)] {
        if !require(flavor) {
            continue;
        }
        let dst = Server::start(flavor);
        let (code, err) = restore_file(&dst.url(), &path, &[]);
        if code != Some(1) || !err.contains("graphdata") || !err.contains("\"g\"") {
            problems.push(format!("into {flavor} without the module: expected exit 1 naming key g and module graphdata, got {code:?}: {err}"));
        }
        if nothing_written {
            let n: i64 = q(&mut dst.client(), &mut redis::cmd("DBSIZE"));
            if n != 0 || !err.contains("nothing was written") {
                problems.push(format!(
                    "into {flavor}: expected the refusal before any write, {n} keys written: {err}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The Redis 8.10 hash-template DUMP payloads that redis/redis holds as test data, byte for byte
/// as in `tests/unit/type/hash-templates.tcl` @ a077cf1e391511f793226cf9254b0dae5aff8333 (the
/// "RESTORE rejects malformed template payload" tests and the REF-type refusal). Each is refused
/// there for the reason given; ours must refuse it too, with its own words. All carry CRC 0,
/// which Redis 8.10's RESTORE takes (the payloads reach its content checks).
const UPSTREAM_BAD_PAYLOADS: &[(&str, &[u8], &str)] = &[
    (
        "value count != field count",
        b"\x1d\x00\x17\x17\x00\x00\x00\x02\x00\x86\x66\x69\x65\x6c\x64\x31\x07\x86\x66\x69\x65\x6c\x64\x32\x07\xff\x0b\x0b\x00\x00\x00\x02\x00\x00\x01\x01\x01\xff\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "holds 1 values for 2 fields",
    ),
    (
        "empty values listpack",
        b"\x1d\x00\x17\x17\x00\x00\x00\x02\x00\x86\x66\x69\x65\x6c\x64\x31\x07\x86\x66\x69\x65\x6c\x64\x32\x07\xff\x07\x07\x00\x00\x00\x00\x00\xff\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "value listpack is empty",
    ),
    (
        "non-integer template id",
        b"\x1d\x00\x17\x17\x00\x00\x00\x02\x00\x86\x66\x69\x65\x6c\x64\x31\x07\x86\x66\x69\x65\x6c\x64\x32\x07\xff\x0e\x0e\x00\x00\x00\x03\x00\x81\x78\x02\x01\x01\x02\x01\xff\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "does not start with an integer template id",
    ),
    (
        "TMPL_LP zero fields",
        b"\x1d\x00\x07\x07\x00\x00\x00\x00\x00\xff\x0d\x0d\x00\x00\x00\x03\x00\x00\x01\x01\x01\x02\x01\xff\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "has no fields",
    ),
    (
        "TMPL_ARRAY zero fields",
        b"\x1f\x01\x00\x06\x66\x69\x65\x6c\x64\x31\x06\x66\x69\x65\x6c\x64\x32\xc0\x01\xc0\x02\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "has no fields",
    ),
    // Types 30/32 exist only in RDB files: a payload has no template record to refer to.
    (
        "TMPL_LP_REF in a payload",
        b"\x1e\x0d\x0d\x00\x00\x00\x03\x00\x05\x01\x01\x01\x02\x01\xff\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "template 5",
    ),
    (
        "TMPL_ARRAY_REF in a payload",
        b"\x20\x05\xc0\x01\xc0\x02\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "template 5",
    ),
];

fn payload_fields(payload: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
    let (ty, body, stamp) = parse_dump_payload(payload)?;
    let h = Header {
        magic: Magic::Redis,
        version: u32::from(stamp),
    };
    let mut p = RdbParser::for_value(body, h, ty, b"rk", ParserOptions::default())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(c) = p.next_chunk().map_err(|e| e.to_string())? {
        if let Chunk::Fields(v) = c {
            out.extend(v.into_iter().map(|f| (f.field, f.value)));
        }
    }
    Ok(out)
}

#[test]
fn upstream_hash_template_payloads() {
    // The refusals.
    let mut problems = Vec::new();
    for (what, payload, want) in UPSTREAM_BAD_PAYLOADS {
        match payload_fields(payload) {
            Ok(f) => problems.push(format!("{what}: accepted as {f:?}")),
            Err(e) if !e.contains(want) => problems.push(format!("{what}: {e}")),
            Err(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Their parts are what the project's writer makes: the field-name listpack of the first
    // payloads, the values listpack (id 0, then 1 and 2) of "TMPL_LP zero fields", the values
    // strings of the array form, and a template record as the upstream RDB test patches it
    // (its field count two bytes before the first name).
    let names_lp = &UPSTREAM_BAD_PAYLOADS[0].1[3..3 + 23];
    assert_eq!(lp(&[b"field1", b"field2"]), names_lp);
    let values_lp = &UPSTREAM_BAD_PAYLOADS[3].1[11..11 + 13];
    assert_eq!(lp(&[b"0", b"1", b"2"]), values_lp);
    assert_eq!([string(b"1"), string(b"2")].concat(), b"\xc0\x01\xc0\x02");
    let rec = template_record(5, &[b"field1", b"field2"]);
    assert_eq!(rec[1], 2);
    assert_eq!(&rec[2..9], b"\x06field1");

    // The well-formed payloads those tests start from, made of the upstream bytes: type 29 with
    // the listpack names and values above, and the array form with its field count (the byte
    // the upstream test zeroes, offset 2) back at 2. Our writer makes the same bytes (up to
    // the CRC, which Redis leaves 0 in these), and our reader reads both as the hash they are.
    let want = vec![
        (b"field1".to_vec(), b"1".to_vec()),
        (b"field2".to_vec(), b"2".to_vec()),
    ];
    let mut lp_form = b"\x1d\x00\x17".to_vec();
    lp_form.extend_from_slice(names_lp);
    lp_form.push(0x0d);
    lp_form.extend_from_slice(values_lp);
    lp_form.extend_from_slice(b"\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    let mut array_form = UPSTREAM_BAD_PAYLOADS[4].1.to_vec();
    array_form[2] = 2;
    for (form, upstream) in [
        (t::HASH_TMPL_LP, &lp_form),
        (t::HASH_TMPL_ARRAY, &array_form),
    ] {
        assert_eq!(payload_fields(upstream).unwrap(), want, "type {form}");
        let body: Vec<u8> = if form == t::HASH_TMPL_LP {
            [
                inline_names(0, &[b"field1", b"field2"]),
                string(&lp(&[b"0", b"1", b"2"])),
            ]
            .concat()
        } else {
            [
                inline_names(1, &[b"field1", b"field2"]),
                string(b"1"),
                string(b"2"),
            ]
            .concat()
        };
        let ours = shake_core::rdb::writer::dump_payload(form, &body, 15);
        let n = ours.len();
        assert_eq!(
            &ours[..n - 8],
            &upstream[..upstream.len() - 8],
            "type {form}"
        );
        assert_eq!(payload_fields(&ours).unwrap(), want, "type {form}");
    }

    // The REF forms refused in a payload are read in a file, after the template record (id 5).
    let ref_lp = &UPSTREAM_BAD_PAYLOADS[5].1;
    let ref_arr = &UPSTREAM_BAD_PAYLOADS[6].1;
    let keys = vec![
        Key {
            name: "k1",
            ty: t::HASH_TMPL_LP_REF,
            value: ref_lp[1..ref_lp.len() - 10].to_vec(),
        },
        Key {
            name: "k2",
            ty: t::HASH_TMPL_ARRAY_REF,
            value: ref_arr[1..ref_arr.len() - 10].to_vec(),
        },
    ];
    let file = write_file(15, &[(op::HASH_TEMPLATE, rec)], &keys);
    for (name, chunks) in round_trip(&file, &keys) {
        let got: Vec<(Vec<u8>, Vec<u8>)> = chunks
            .into_iter()
            .flat_map(|c| match c {
                Chunk::Fields(v) => v.into_iter().map(|f| (f.field, f.value)).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(got, want, "{name}");
    }
}
