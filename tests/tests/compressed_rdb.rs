//! Valkey's LZ4-compressed RDB files (`rdbcompression lz4`, the "VCS" envelope; issue 14 item 1):
//! no server in the rig writes one (Valkey 9.1 has no `rdbcompression lz4`), so the files are
//! made from plain RDBs written with the project's `RdbFileWriter`, wrapped two independent ways:
//! with the project's `VcsWriter` (lz4_flex's frame encoder) and with the reference `lz4`
//! command-line tool (the C library Valkey vendors), 64 KiB linked blocks as Valkey writes them,
//! with and without checksums. The envelope layout is the one in `shake-core/src/rdb/types.rs`
//! (module `vcs`), read from valkey-io/valkey.
//!
//! What passing proves:
//! - `shake-decode` prints exactly what it prints for the plain file (JSON lines with `--meta`,
//!   RESP), for small and multi-block files;
//! - `shake-restore` loads the enveloped file into a real Valkey 9.1 and `shake-check` finds the
//!   server equal to it;
//! - a damaged envelope, frame or block, a truncated file, an envelope of another codec, and
//!   decompressed bytes after the RDB's end each fail with exit 1 and one line naming the problem;
//!   bytes after the frame are ignored, as Valkey's loader ignores them.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Input;
use shake_core::rdb::envelope::VcsWriter;
use shake_core::rdb::file_writer::RdbFileWriter;
use shake_core::rdb::types as t;
use shake_core::rdb::writer::{write_len, write_string};
use shake_tests::{require, require_tool, Flavor, Server};

const TIMEOUT: Duration = Duration::from_secs(120);

fn string(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_string(&mut v, b);
    v
}

/// A Valkey 9.0 (RDB 80, loadable by the rig's Valkey 9.1) file with strings (one of 300 KB, so
/// the frame has several blocks and linked matches reach across them), a hash, a list and a set.
fn plain_rdb() -> Vec<u8> {
    let mut w = RdbFileWriter::new(Vec::new(), 80, &[("valkey-ver", b"9.2.0")]).unwrap();
    for i in 0..200u32 {
        let key = format!("user:{i}");
        let val = format!(
            "{{\"id\":{i},\"name\":\"user-{}\",\"tags\":[\"a\",\"b\"]}}",
            i * 7
        );
        w.key(0, key.as_bytes(), None, t::STRING, &string(val.as_bytes()))
            .unwrap();
    }
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 % 37 % 36) as usize])
        .collect();
    w.key(0, b"big", Some(4_102_444_800_000), t::STRING, &string(&big))
        .unwrap();
    let mut hash = Vec::new();
    write_len(&mut hash, 3);
    for (f, v) in [(&b"f1"[..], &b"v1"[..]), (b"f2", b"v2"), (b"f3", b"")] {
        hash.extend(string(f));
        hash.extend(string(v));
    }
    w.key(0, b"h", None, t::HASH, &hash).unwrap();
    let mut list = Vec::new();
    write_len(&mut list, 2);
    list.extend(string(b"x"));
    list.extend(string(b"y"));
    w.key(1, b"l", None, t::LIST, &list).unwrap();
    let mut set = Vec::new();
    write_len(&mut set, 2);
    set.extend(string(b"m1"));
    set.extend(string(b"m2"));
    w.key(1, b"s", None, t::SET, &set).unwrap();
    w.finish().unwrap()
}

fn vcs(plain: &[u8], checksums: bool) -> Vec<u8> {
    let mut w = VcsWriter::new(Vec::new(), checksums).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap()
}

/// The envelope around the `lz4` tool's frame: 64 KiB (`-B4`) linked (`-BD`) blocks, block
/// checksums (`-BX`) and the content checksum (on by default) when `checksums`.
fn vcs_by_lz4_tool(lz4: &Path, plain: &[u8], checksums: bool) -> Vec<u8> {
    let mut cmd = Command::new(lz4);
    cmd.args(["-q", "-c", "-B4", "-BD"]);
    if checksums {
        cmd.arg("-BX");
    } else {
        cmd.arg("--no-frame-crc");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run lz4");
    let mut stdin = child.stdin.take().unwrap();
    let input = plain.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("lz4 output");
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "lz4 failed");
    let mut v = b"VCS".to_vec();
    v.extend_from_slice(&[1, 1, 0, 1]);
    v.extend_from_slice(&out.stdout);
    v
}

fn decode(path: &Path, args: &[&str]) -> common::Run {
    common::run_decode(args, Input::File(path), TIMEOUT)
}

#[test]
fn vcs_lz4_files_decode_like_their_plain_rdb() {
    let dir = tempfile::tempdir().unwrap();
    let plain = plain_rdb();
    let plain_path = dir.path().join("plain.rdb");
    std::fs::write(&plain_path, &plain).unwrap();
    let mut variants = vec![
        ("vcswriter+checksums", vcs(&plain, true)),
        ("vcswriter", vcs(&plain, false)),
    ];
    let lz4 = require_tool("lz4", &[], "apt-get install lz4");
    if let Some(lz4) = &lz4 {
        variants.push(("lz4-tool+checksums", vcs_by_lz4_tool(lz4, &plain, true)));
        variants.push(("lz4-tool", vcs_by_lz4_tool(lz4, &plain, false)));
    }
    // Small ones too: a frame of one block, and one whose only block is stored raw.
    let small = RdbFileWriter::new(Vec::new(), 80, &[])
        .unwrap()
        .finish()
        .unwrap();
    for args in [&["--meta"][..], &["--format", "resp"]] {
        let want = decode(&plain_path, args);
        assert_eq!(want.code, Some(0), "plain: {}", want.describe());
        for (name, bytes) in &variants {
            assert_eq!(&bytes[..7], &[86, 67, 83, 1, 1, 0, 1], "{name}");
            assert_eq!(&bytes[7..11], &[0x04, 0x22, 0x4D, 0x18], "{name}");
            assert!(bytes.len() < plain.len() / 2, "{name} does not compress");
            let path = dir.path().join(format!("{name}.rdb"));
            std::fs::write(&path, bytes).unwrap();
            let got = decode(&path, args);
            assert_eq!(got.code, Some(0), "{name}: {}", got.describe());
            assert!(
                got.stdout == want.stdout,
                "{name} {args:?}: output differs from the plain file's"
            );
        }
    }
    let small_path = dir.path().join("small.rdb");
    std::fs::write(&small_path, vcs(&small, true)).unwrap();
    let got = decode(&small_path, &["--meta"]);
    assert_eq!(got.code, Some(0), "empty: {}", got.describe());
    assert!(String::from_utf8_lossy(&got.stdout).contains("\"VALKEY\""));
}

#[test]
fn damaged_vcs_files_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let plain = plain_rdb();
    let good = vcs(&plain, true);
    let path = dir.path().join("bad.rdb");
    let mut extra = plain.clone();
    extra.extend_from_slice(b"junk");
    let mid = good.len() / 2;
    // Inside the first block's data: envelope 7, frame header 7 (magic, FLG, BD, HC), size 4.
    let mut flipped = good.clone();
    flipped[7 + 7 + 4 + 10] ^= 0x20;
    let mut zstd = good.clone();
    zstd[4] = 2;
    let mut reserved = good.clone();
    reserved[5] = 1;
    let mut kind = good.clone();
    kind[6] = 0;
    let mut hc = good.clone();
    hc[7 + 6] ^= 0xFF; // the frame descriptor's header checksum (FLG, BD, HC)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("flipped byte", flipped, "checksum mismatch"),
        ("truncated", good[..mid].to_vec(), "truncated"),
        ("truncated envelope", good[..5].to_vec(), "truncated"),
        ("zstd codec", zstd, "ZSTD"),
        ("reserved byte", reserved, "reserved byte 1"),
        ("stream kind", kind, "stream kind is 0"),
        ("header checksum", hc, "header checksum"),
        (
            "bytes after the RDB's end",
            vcs(&extra, true),
            "4 decompressed bytes follow the end of the RDB",
        ),
    ];
    let mut problems = Vec::new();
    for (what, bytes, want) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let run = decode(&path, &[]);
        let err = run.stderr_text();
        if run.code != Some(1) || !err.contains(want) {
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
    // Bytes after the frame are not part of the RDB (Valkey ignores them too).
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"trailing-data");
    std::fs::write(&path, &trailing).unwrap();
    let run = decode(&path, &["--format", "keys"]);
    if run.code != Some(0) {
        problems.push(format!("trailing data: {}", run.describe()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn tool(name: &str) -> std::path::PathBuf {
    let bin =
        common::decoder_path().with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built: cargo build --workspace --bins",
        bin.display()
    );
    bin
}

/// The enveloped file restored into a real Valkey 9.1, then compared with it by shake-check.
#[test]
fn vcs_file_restores_and_checks_against_valkey() {
    if !require(Flavor::Valkey91) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dump-lz4.rdb");
    std::fs::write(&path, vcs(&plain_rdb(), true)).unwrap();
    let server = Server::start(Flavor::Valkey91);
    let out = Command::new(tool("shake-restore"))
        .args(["--target", &server.url()])
        .arg(&path)
        .output()
        .expect("run shake-restore");
    assert!(
        out.status.success(),
        "shake-restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut con = server.client();
    let big: Vec<u8> = redis::cmd("GET").arg("big").query(&mut con).unwrap();
    assert_eq!(big.len(), 300_000);
    let ttl: i64 = redis::cmd("PEXPIRETIME")
        .arg("big")
        .query(&mut con)
        .unwrap();
    assert_eq!(ttl, 4_102_444_800_000);
    let n: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 202);
    let out = Command::new(tool("shake-check"))
        .arg("--source")
        .arg(&path)
        .args(["--target", &server.url()])
        .output()
        .expect("run shake-check");
    assert!(
        out.status.success(),
        "shake-check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
