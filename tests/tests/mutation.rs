//! Mutation ("fuzz-style") test of `shake-decode`: damaged RDB input must end in a clean error,
//! never a panic, a crash, a hang or an unbounded allocation, and never in output that claims
//! to be complete when the file's checksum says otherwise.
//!
//! Inputs are the valid corpus files (small ones get most of the cases) changed in the ways
//! real damage and hostile input look: truncation, bit flips, bytes overwritten with 0x00, 0xFF,
//! random values or off-by-one neighbours, forged length encodings (64-bit, 32-bit, 14-bit,
//! LZF headers) spliced over key and value lengths, random bytes inserted, the checksum trailer
//! zeroed, garbage appended; plus hand-made inputs (empty, `REDIS`, a bare header, random
//! garbage, and 2^64-1 / 4 GiB / 1 GiB lengths for strings, keys, collections, LZF payloads,
//! ziplists, intsets and listpacks after a valid header). Some runs read from stdin (`-`).
//!
//! For every run:
//! - exit code 0 or 1, within 10 s, not killed by a signal (SIGABRT is what a failed huge
//!   allocation looks like); stderr never mentions "panicked" or RUST_BACKTRACE; on exit 1,
//!   stderr is exactly one line;
//! - JSON-lines output is whole lines of valid JSON, RESP output is well-formed; an exit-1
//!   run never prints the `{"meta":"end"}` record.
//!
//! And where the right answer is known:
//! - a truncation anywhere before the end of EOF + checksum must fail (exit 1);
//! - in a file with a valid, non-zero CRC64, any change after the 9-byte header and before the
//!   end of the trailer must fail: this is what proves corrupt data is never presented as a
//!   complete decode. (The one allowed exit 0 is when the change makes the decoder meet an
//!   EOF opcode followed by eight zero bytes, i.e. a genuinely "checksum disabled" file; the
//!   end record must then say `disabled`.)
//! - zeroing the trailer of such a file must still decode (exit 0, `checksum: disabled`) with
//!   the same keys as the original;
//! - garbage appended after EOF + checksum must be ignored: output identical to the original.
//!
//! Deterministic: a fixed seed (printed), own xorshift PRNG, each case derived from
//! (seed, case number). `SHAKE_MUTATION_SEED` (decimal or 0x-hex) changes the seed,
//! `SHAKE_MUTATION_CASES` the number of random cases, `SHAKE_MUTATION_ONLY=3,17` reruns single
//! cases. Failing inputs are saved under the target tmp dir, and each failure prints the line
//! that reproduces it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{clip, Input, Json, Role};

const DEFAULT_SEED: u64 = 0x5348_414b_4552_4442; // "SHAKERDB"
/// About 15 s in a debug build on 2 cores (a case costs ~2-3 ms: most inputs are a few hundred
/// bytes and the decoder is a fresh process each time).
const DEFAULT_CASES: usize = 6000;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Random cases go mostly to files up to SMALL (weight 8), some to files up to MEDIUM
/// (weight 1), none to bigger ones (the multi-MB files would dominate the run time); those get
/// fixed cases instead: cut in the middle, trailer zeroed.
const SMALL: u64 = 64 * 1024;
const MEDIUM: u64 = 400 * 1024;
/// Inputs up to this size may go through stdin: a pipe buffer holds them whole, so a decoder
/// that stops reading early cannot block the writer.
const STDIN_MAX: usize = 48 * 1024;

// ---------------------------------------------------------------------------------------------
// PRNG

/// xorshift64* seeded through splitmix64, so nearby seeds give unrelated streams.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in lo..hi (lo < hi).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo)
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

struct Target {
    file: String,
    bytes: Vec<u8>,
    /// Offset just past EOF + checksum (the file length unless an AOF tail or garbage follows).
    eof_end: usize,
    /// The file has a valid, non-zero CRC64 trailer, so any change must be detected.
    checksummed: bool,
    /// Offsets of length bytes worth forging: each known key's length byte and the byte after
    /// the key (the value's length or encoding).
    length_spots: Vec<usize>,
    /// stdout of `--meta` on the unchanged file, when it decodes.
    baseline: Option<Vec<u8>>,
    /// Arguments the file always needs (`--relaxed-version` for a future version).
    extra: &'static [&'static str],
}

impl Target {
    fn args(&self, format: &[&'static str]) -> Vec<&'static str> {
        self.extra.iter().chain(format).copied().collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// Only the universal checks.
    Any,
    /// Truncated before EOF + checksum, or malformed: exit 1.
    MustFail,
    /// A well-formed hand-made file: exit 0.
    MustSucceed,
    /// Content changed under a valid CRC: exit 1, unless the decoder read a zero trailer.
    MustFailChecksummed,
    /// Trailer zeroed: exit 0, checksum "disabled", same key lines as the original.
    SameKeysChecksumDisabled,
    /// Garbage after EOF + checksum: exactly the original output.
    SameOutput,
}

struct Case {
    id: String,
    /// Index into the targets, or None for hand-made inputs.
    target: Option<usize>,
    bytes: Vec<u8>,
    desc: String,
    expect: Expect,
    args: &'static [&'static str],
    stdin: bool,
}

const FORMATS: [&[&str]; 4] = [
    &["--meta"],
    &[],
    &["--format", "keys"],
    &["--format", "resp"],
];

fn pick_format(rng: &mut Rng) -> &'static [&'static str] {
    match rng.below(8) {
        0..=3 => FORMATS[0],
        4..=5 => FORMATS[1],
        6 => FORMATS[2],
        _ => FORMATS[3],
    }
}

/// Length encodings to forge, from the RDB length format: 0x81 + 8 bytes big-endian, 0x80 + 4
/// bytes, 14-bit (0x40 | hi, lo), and special encodings (0xC3 = LZF: clen, ulen, data; 0xC4 is
/// not a defined encoding).
fn forged_lengths() -> Vec<(&'static str, Vec<u8>)> {
    let mut huge64 = vec![0x81];
    huge64.extend([0xFF; 8]);
    let mut four_gib = vec![0x81];
    four_gib.extend([0, 0, 0, 1, 0, 0, 0, 0]);
    let mut lzf_huge = vec![0xC3, 0x05];
    lzf_huge.extend(&huge64);
    lzf_huge.extend(b"abcde");
    let mut lzf_both_huge = vec![0xC3];
    lzf_both_huge.extend(&huge64);
    lzf_both_huge.extend(&huge64);
    vec![
        ("64-bit 2^64-1", huge64),
        ("64-bit 4 GiB", four_gib),
        ("32-bit 0xFFFFFFFF", vec![0x80, 0xFF, 0xFF, 0xFF, 0xFF]),
        ("32-bit 0x7FFFFFFF", vec![0x80, 0x7F, 0xFF, 0xFF, 0xFF]),
        ("14-bit 16383", vec![0x7F, 0xFF]),
        ("6-bit 63", vec![0x3F]),
        ("LZF clen 5 ulen 2^64-1", lzf_huge),
        ("LZF clen and ulen 2^64-1", lzf_both_huge),
        (
            "LZF ulen 1 GiB",
            vec![0xC3, 0x05, 0x80, 0x40, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5],
        ),
        ("LZF ulen 0", vec![0xC3, 0x02, 0x00, 0x01, 0x61]),
        ("undefined encoding 0xC4", vec![0xC4, 0x00]),
    ]
}

/// One random mutation of a target.
fn mutate(t: &Target, rng: &mut Rng) -> (Vec<u8>, String, Expect) {
    let len = t.bytes.len();
    let content = 9..t.eof_end; // after the header, up to the end of the trailer
    let mut b = t.bytes.clone();
    // Every mutation but truncation and appending records the lowest offset it changed.
    let changed_from: usize;
    let desc: String;
    match rng.below(100) {
        0..=19 => {
            let cut = match rng.below(5) {
                0 | 1 => rng.below(len),
                2 => len - 1 - rng.below(16.min(len)),
                3 => rng.below(64.min(len)),
                _ => t.eof_end.saturating_sub(1 + rng.below(9)).min(len - 1),
            };
            b.truncate(cut);
            let expect = if cut < t.eof_end {
                Expect::MustFail
            } else {
                Expect::Any
            };
            return (b, format!("truncate to {cut} of {len} bytes"), expect);
        }
        20..=39 => {
            let n = 1 + rng.below(4);
            let mut offs = Vec::new();
            for _ in 0..n {
                let at = if rng.chance(3, 4) && content.len() > 1 {
                    rng.range(content.start, content.end)
                } else {
                    rng.below(len)
                };
                let bit = rng.below(8);
                b[at] ^= 1 << bit;
                offs.push(format!("{at}.{bit}"));
            }
            changed_from = first_changed(&t.bytes, &b);
            desc = format!("flip bits (offset.bit) {}", offs.join(" "));
        }
        40..=59 => {
            let n = 1 + rng.below(4);
            let mut offs = Vec::new();
            for _ in 0..n {
                let at = if rng.chance(3, 4) && content.len() > 1 {
                    rng.range(content.start, content.end)
                } else {
                    rng.below(len)
                };
                let v = match rng.below(4) {
                    0 => 0x00,
                    1 => 0xFF,
                    2 => b[at].wrapping_add(if rng.chance(1, 2) { 1 } else { 0xFF }),
                    _ => rng.byte(),
                };
                b[at] = v;
                offs.push(format!("{at}={v:#04x}"));
            }
            changed_from = first_changed(&t.bytes, &b);
            desc = format!("overwrite bytes {}", offs.join(" "));
        }
        60..=79 => {
            let forged = forged_lengths();
            let (name, enc) = &forged[rng.below(forged.len())];
            let at = if !t.length_spots.is_empty() && rng.chance(3, 4) {
                t.length_spots[rng.below(t.length_spots.len())]
            } else {
                rng.range(9.min(len - 1), len)
            };
            let in_place = rng.chance(1, 3);
            if in_place {
                let end = (at + enc.len()).min(len);
                b[at..end].copy_from_slice(&enc[..end - at]);
            } else {
                b.splice(at..at + 1, enc.iter().copied());
            }
            changed_from = first_changed(&t.bytes, &b);
            desc = format!(
                "forge length {name} at {at} ({})",
                if in_place {
                    "overwriting"
                } else {
                    "replacing 1 byte"
                }
            );
        }
        80..=87 => {
            let at = rng.range(9.min(len), len + 1);
            let n = 1 + rng.below(16);
            let ins = rng.bytes(n);
            b.splice(at..at, ins.iter().copied());
            changed_from = first_changed(&t.bytes, &b);
            desc = format!("insert {n} random bytes at {at}");
        }
        88..=93 => {
            if t.checksummed && t.baseline.is_some() {
                b[t.eof_end - 8..t.eof_end].fill(0);
                return (
                    b,
                    "zero the checksum trailer".into(),
                    Expect::SameKeysChecksumDisabled,
                );
            }
            let at = rng.below(len);
            b[at] = 0;
            changed_from = first_changed(&t.bytes, &b);
            desc = format!("overwrite byte {at}=0x00");
        }
        _ => {
            let tail = match rng.below(4) {
                0 => {
                    let n = 1 + rng.below(64);
                    rng.bytes(n)
                }
                1 => t.bytes[..len.min(200)].to_vec(), // a second RDB start
                2 => b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n".to_vec(),
                _ => vec![0xFF; 1 + rng.below(16)],
            };
            b.extend_from_slice(&tail);
            let expect = if t.baseline.is_some() {
                Expect::SameOutput
            } else {
                Expect::Any
            };
            return (b, format!("append {} bytes of garbage", tail.len()), expect);
        }
    }
    if changed_from == usize::MAX {
        return (b, format!("{desc} (no net change)"), Expect::Any);
    }
    // Under a valid CRC, a change past the header and before the end of the trailer must be
    // caught. The header's version digits are excluded: a changed version can legitimately
    // mean "no checksum" (RDB < 5).
    let expect = if t.checksummed && changed_from >= 9 && changed_from < t.eof_end {
        Expect::MustFailChecksummed
    } else {
        Expect::Any
    };
    (b, desc, expect)
}

fn first_changed(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(if a.len() == b.len() {
            usize::MAX
        } else {
            a.len().min(b.len())
        })
}

/// Hand-made inputs: (name, bytes, expectation). After a valid header and `SELECTDB 0`, most
/// declare something enormous that is not there.
fn synthetic_cases(rng: &mut Rng) -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::{Any, MustFail, MustSucceed};
    let huge64: Vec<u8> = [&[0x81u8][..], &[0xFF; 8]].concat();
    let hdr = |v: &str| -> Vec<u8> { [v.as_bytes(), &[0xFE, 0x00]].concat() };
    let k = [0x01u8, b'k'];
    let cat = |parts: &[&[u8]]| parts.concat();
    let zero_trailer = [0xFFu8, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut garbage = rng.bytes(1000);
    garbage[0] = b'X';
    vec![
        ("empty file", vec![], MustFail),
        ("REDIS", b"REDIS".to_vec(), MustFail),
        ("REDIS0009 only", b"REDIS0009".to_vec(), MustFail),
        (
            "REDIS0009 + EOF without checksum",
            b"REDIS0009\xff".to_vec(),
            MustFail,
        ),
        (
            "REDIS0009 + EOF + 4 of 8 checksum bytes",
            b"REDIS0009\xff\0\0\0\0".to_vec(),
            MustFail,
        ),
        ("REDIS0009 + SELECTDB only", hdr("REDIS0009"), MustFail),
        ("random garbage", garbage, MustFail),
        (
            "REDIS + non-digit version",
            b"REDISabcd\xff\0\0\0\0\0\0\0\0".to_vec(),
            MustFail,
        ),
        (
            "string length 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0x00], &k, &huge64]),
            MustFail,
        ),
        (
            "key length 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0x00], &huge64]),
            MustFail,
        ),
        (
            "string length 4 GiB-1 (32-bit)",
            cat(&[
                &hdr("REDIS0009"),
                &[0x00],
                &k,
                &[0x80, 0xFF, 0xFF, 0xFF, 0xFF],
                b"abc",
            ]),
            MustFail,
        ),
        (
            "LZF ulen 2^64-1",
            cat(&[
                &hdr("REDIS0009"),
                &[0x00],
                &k,
                &[0xC3, 0x05],
                &huge64,
                b"abcde",
            ]),
            MustFail,
        ),
        (
            "LZF clen 2^64-1",
            cat(&[
                &hdr("REDIS0009"),
                &[0x00],
                &k,
                &[0xC3],
                &huge64,
                &[0x05],
                b"abcde",
            ]),
            MustFail,
        ),
        (
            "LZF ulen 1 GiB, 5 bytes of data",
            cat(&[
                &hdr("REDIS0009"),
                &[0x00],
                &k,
                &[0xC3, 0x05, 0x80, 0x40, 0, 0, 0],
                b"abcde",
            ]),
            MustFail,
        ),
        (
            "list (linked) count 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0x01], &k, &huge64]),
            MustFail,
        ),
        (
            "set count 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0x02], &k, &huge64]),
            MustFail,
        ),
        (
            "zset count 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0x05], &k, &huge64]),
            MustFail,
        ),
        (
            "hash count 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0x04], &k, &huge64]),
            MustFail,
        ),
        (
            "quicklist node count 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0x0E], &k, &huge64]),
            MustFail,
        ),
        (
            "quicklist2 node count 2^64-1",
            cat(&[&hdr("REDIS0011"), &[0x12], &k, &huge64]),
            MustFail,
        ),
        (
            "stream listpack count 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0x0F], &k, &huge64]),
            MustFail,
        ),
        (
            "module id then nothing",
            cat(&[&hdr("REDIS0009"), &[0x07], &k, &huge64]),
            MustFail,
        ),
        // zlbytes = 0xFFFFFFFF, zltail, zllen = 0xFFFF, end marker; the string is 11 bytes.
        (
            "ziplist zlbytes 4 GiB",
            cat(&[
                &hdr("REDIS0009"),
                &[0x0A],
                &k,
                &[0x0B],
                &[0xFF; 4],
                &[10, 0, 0, 0],
                &[0xFF, 0xFF],
                &[0xFF],
            ]),
            MustFail,
        ),
        // encoding 8, length 0xFFFFFFFF, one 8-byte element: the string is 16 bytes.
        (
            "intset length 4 Gi",
            cat(&[
                &hdr("REDIS0009"),
                &[0x0B],
                &k,
                &[0x10],
                &[8, 0, 0, 0],
                &[0xFF; 4],
                &[1; 8],
            ]),
            MustFail,
        ),
        // total bytes 0xFFFFFFFF, count 0xFFFF, end: the string is 7 bytes.
        (
            "listpack total 4 GiB",
            cat(&[
                &hdr("REDIS0011"),
                &[0x10],
                &k,
                &[0x07],
                &[0xFF; 4],
                &[0xFF, 0xFF],
                &[0xFF],
            ]),
            MustFail,
        ),
        (
            "AUX name length 2^64-1",
            cat(&[b"REDIS0009", &[0xFA], &huge64]),
            MustFail,
        ),
        (
            "unknown opcode 0xF0",
            cat(&[&hdr("REDIS0009"), &[0xF0], &zero_trailer]),
            MustFail,
        ),
        // Valid files: empty, and one key, with the checksum disabled (a zero trailer).
        (
            "empty RDB 9, checksum disabled",
            cat(&[b"REDIS0009", &zero_trailer]),
            MustSucceed,
        ),
        (
            "empty VALKEY080, checksum disabled",
            cat(&[b"VALKEY080", &zero_trailer]),
            MustSucceed,
        ),
        (
            "one string key k=v, checksum disabled",
            cat(&[&hdr("REDIS0009"), &[0x00], &k, &[0x01, b'v'], &zero_trailer]),
            MustSucceed,
        ),
        // RESIZEDB may carry any sizes; they must not make the decoder preallocate, so this
        // may succeed or fail, but not abort.
        (
            "RESIZEDB 2^64-1 / 2^64-1",
            cat(&[&hdr("REDIS0009"), &[0xFB], &huge64, &huge64, &zero_trailer]),
            Any,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn damaged_input_fails_cleanly() {
    let Some(corpus) = common::corpus() else {
        return;
    };
    let seed = std::env::var("SHAKE_MUTATION_SEED")
        .ok()
        .map(|s| parse_u64(&s))
        .unwrap_or(DEFAULT_SEED);
    let cases_n: usize = std::env::var("SHAKE_MUTATION_CASES")
        .ok()
        .map(|s| s.parse().expect("SHAKE_MUTATION_CASES"))
        .unwrap_or(DEFAULT_CASES);
    let only: Option<Vec<String>> = std::env::var("SHAKE_MUTATION_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    println!("mutation test: seed {seed:#018x}, {cases_n} random cases (SHAKE_MUTATION_SEED / SHAKE_MUTATION_CASES / SHAKE_MUTATION_ONLY)");
    let started = Instant::now();

    // Targets: every valid corpus file, smallest first.
    let mut targets: Vec<Target> = common::load_manifest(&corpus)
        .into_iter()
        .filter(|e| e.role() == Role::Valid)
        .map(|e| {
            let bytes = std::fs::read(e.path(&corpus)).expect("read corpus file");
            let eof_end = bytes.len() - e.trailing_bytes().min(bytes.len());
            let checksummed = e.scan_checksum() == Some("valid")
                && e.rdb_version.unwrap_or(0) >= 5
                && eof_end >= 17
                && bytes[eof_end - 8..eof_end] != [0; 8];
            let length_spots = length_spots(&bytes, e.expected.as_ref());
            Target {
                file: e.file.clone(),
                bytes,
                eof_end,
                checksummed,
                length_spots,
                baseline: None,
                extra: e.decode_args(),
            }
        })
        .collect();
    targets.sort_by_key(|t| t.bytes.len());

    // Baselines (only needed for the "same output" expectations).
    let base_start = Instant::now();
    let baselines = par_run(&targets, |t| {
        let tmp = TempInput::new();
        let r = common::run_decode(
            &t.args(&["--meta"]),
            Input::File(&tmp.write(&t.file, &t.bytes)),
            Duration::from_secs(120),
        );
        (r.code == Some(0)).then_some(r.stdout)
    });
    let mut baseline_failures = Vec::new();
    for (t, b) in targets.iter_mut().zip(baselines) {
        if b.is_none() {
            baseline_failures.push(t.file.clone());
        }
        t.baseline = b;
    }
    println!(
        "baselines: {} files in {:?} ({} do not decode; corpus.rs reports why)",
        targets.len(),
        base_start.elapsed(),
        baseline_failures.len()
    );

    // Cases.
    let mut cases = Vec::new();
    let weights: Vec<usize> = targets
        .iter()
        .map(|t| {
            if t.bytes.len() as u64 <= SMALL {
                8
            } else if t.bytes.len() as u64 <= MEDIUM {
                1
            } else {
                0
            }
        })
        .collect();
    let total_w: usize = weights.iter().sum();
    for i in 0..cases_n {
        let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let mut r = rng.below(total_w);
        let ti = weights
            .iter()
            .position(|&w| {
                if r < w {
                    true
                } else {
                    r -= w;
                    false
                }
            })
            .unwrap();
        let (bytes, desc, expect) = mutate(&targets[ti], &mut rng);
        let args = if matches!(
            expect,
            Expect::SameOutput | Expect::SameKeysChecksumDisabled
        ) {
            FORMATS[0]
        } else {
            pick_format(&mut rng)
        };
        let stdin = bytes.len() <= STDIN_MAX && rng.chance(1, 6);
        cases.push(Case {
            id: i.to_string(),
            target: Some(ti),
            bytes,
            desc,
            expect,
            args,
            stdin,
        });
    }
    // Fixed cases for the files too big for random ones: cut in the middle, zero the trailer.
    for (ti, t) in targets.iter().enumerate().filter(|(i, _)| weights[*i] == 0) {
        let mut cut = t.bytes.clone();
        cut.truncate(t.bytes.len() / 2);
        cases.push(Case {
            id: format!("big{ti}-cut"),
            target: Some(ti),
            bytes: cut,
            desc: format!("truncate to {} of {}", t.bytes.len() / 2, t.bytes.len()),
            expect: Expect::MustFail,
            args: FORMATS[2],
            stdin: false,
        });
        if t.checksummed {
            let mut z = t.bytes.clone();
            z[t.eof_end - 8..t.eof_end].fill(0);
            let expect = if t.baseline.is_some() {
                Expect::SameKeysChecksumDisabled
            } else {
                Expect::Any
            };
            cases.push(Case {
                id: format!("big{ti}-zero"),
                target: Some(ti),
                bytes: z,
                desc: "zero the checksum trailer".into(),
                expect,
                args: FORMATS[0],
                stdin: false,
            });
        }
    }
    let mut srng = Rng::new(seed ^ 0x5EED);
    for (j, (name, bytes, expect)) in synthetic_cases(&mut srng).into_iter().enumerate() {
        for (k, stdin) in [false, true].into_iter().enumerate() {
            cases.push(Case {
                id: format!("syn{j}{}", ["f", "s"][k]),
                target: None,
                bytes: bytes.clone(),
                desc: name.to_string(),
                expect: expect.clone(),
                args: FORMATS[k % 2],
                stdin,
            });
        }
    }
    if let Some(only) = &only {
        cases.retain(|c| only.contains(&c.id));
        println!("running only cases {only:?}: {} found", cases.len());
    }

    // Run.
    let run_start = Instant::now();
    let exits = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let failures: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let save_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mutation-failures");
    par_run(&cases, |c| {
        let tmp = TempInput::new();
        let path = tmp.write(&c.id, &c.bytes);
        let input = if c.stdin {
            Input::Stdin(&c.bytes)
        } else {
            Input::File(&path)
        };
        let target = c.target.map(|i| &targets[i]);
        let args = target.map_or_else(|| c.args.to_vec(), |t| t.args(c.args));
        let run = common::run_decode(&args, input, TIMEOUT);
        if let Some(code @ 0..=1) = run.code {
            exits[code as usize].fetch_add(1, Ordering::Relaxed);
        }
        let problems = check_case(c, &run, target, &path);
        if !problems.is_empty() {
            let _ = std::fs::create_dir_all(&save_dir);
            let saved = save_dir.join(format!("case-{seed:x}-{}.rdb", c.id));
            let _ = std::fs::write(&saved, &c.bytes);
            let origin = c
                .target
                .map(|i| targets[i].file.as_str())
                .unwrap_or("(hand-made)");
            // The kind of problem (the first one's text up to its first colon) groups the report.
            let kind = problems[0].split(':').next().unwrap_or("").to_string();
            failures.lock().unwrap().push((kind, format!(
                "case {} [{origin}: {}] args {:?}{}: {}\n      {}\n      input saved to {}\n      rerun: SHAKE_MUTATION_SEED={seed:#x} SHAKE_MUTATION_ONLY={} cargo test -p shake-tests --test mutation",
                c.id,
                c.desc,
                args,
                if c.stdin { " via stdin" } else { "" },
                problems.join("; "),
                // The stderr text, unless a problem already quotes it.
                match run.stderr_text().lines().next() {
                    Some(l) if !problems.iter().any(|p| p.contains(l)) => run.describe(),
                    _ => run.status(),
                },
                saved.display(),
                c.id
            )));
        }
    });
    let failures = failures.into_inner().unwrap();
    let took = run_start.elapsed();
    // How many cases carried each expectation: shows the strong assertions were exercised.
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for c in &cases {
        let k = format!("{:?}", c.expect);
        match kinds.iter_mut().find(|(n, _)| *n == k) {
            Some((_, n)) => *n += 1,
            None => kinds.push((k, 1)),
        }
    }
    println!("expectations: {kinds:?}");
    println!(
        "{} cases in {took:?} ({:.1} ms each), exit 0: {}, exit 1: {}; total with baselines {:?}",
        cases.len(),
        took.as_secs_f64() * 1000.0 / cases.len().max(1) as f64,
        exits[0].load(Ordering::Relaxed),
        exits[1].load(Ordering::Relaxed),
        started.elapsed()
    );
    // Sorted by case order; at most 5 cases of each kind of problem, so one noisy defect does
    // not hide the others.
    let mut failures = failures;
    failures.sort_by_key(|(_, text)| {
        text.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    let mut by_kind: Vec<(String, usize)> = Vec::new();
    let mut shown = Vec::new();
    for (kind, text) in &failures {
        let n = match by_kind.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                by_kind.push((kind.clone(), 1));
                1
            }
        };
        if n <= 5 {
            shown.push(format!("  - {text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} mutation cases failed (seed {seed:#x}); by kind: {}\n{}",
        failures.len(),
        cases.len(),
        by_kind
            .iter()
            .map(|(k, n)| format!("{n} x {k:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        shown.join("\n")
    );
}

/// Everything that is wrong with one run.
fn check_case(c: &Case, run: &common::Run, t: Option<&Target>, path: &Path) -> Vec<String> {
    let mut p = run.clean_exit_problems();
    if run.timed_out || run.signal.is_some() {
        return p;
    }
    let jsonl = !c.args.contains(&"--format");
    let resp = c.args.contains(&"resp");
    // Output must be whole, valid lines even when decoding stops with an error: a consumer
    // must never read half a record.
    if jsonl {
        if let Err(e) = common::parse_lines(&run.stdout) {
            p.push(format!("stdout is not JSON lines: {e}"));
        }
    } else if resp && run.code == Some(0) {
        if let Err(e) = common::parse_resp_commands(&run.stdout) {
            p.push(format!("--format resp output is not well-formed: {e}"));
        }
    }
    if run.code == Some(1) && common::claims_end(&run.stdout) {
        p.push("exit 1 but stdout has the {\"meta\":\"end\"} record".into());
    }
    match c.expect {
        Expect::Any => {}
        Expect::MustSucceed => {
            if run.code != Some(0) {
                p.push("a well-formed file must decode (exit 0)".into());
            }
        }
        Expect::MustFail => {
            if run.code == Some(0) {
                p.push("decoded with exit 0 although the input is cut short or malformed (expected exit 1)".into());
            }
        }
        Expect::MustFailChecksummed => {
            if run.code == Some(0) {
                // Allowed only if the decoder genuinely met a zero (disabled) trailer.
                let meta = if c.args == FORMATS[0] {
                    None
                } else {
                    Some(common::run_decode(
                        &t.map_or_else(|| FORMATS[0].to_vec(), |t| t.args(FORMATS[0])),
                        Input::File(path),
                        TIMEOUT,
                    ))
                };
                let out = meta.as_ref().map(|m| &m.stdout).unwrap_or(&run.stdout);
                if meta.as_ref().is_some_and(|m| m.code != Some(0)) {
                    p.push(format!(
                        "exit 0 with {:?} but exit {:?} with --meta: formats disagree on validity",
                        c.args,
                        meta.as_ref().unwrap().code
                    ));
                } else if end_checksum(out).as_deref() != Some("disabled") {
                    p.push(format!(
                        "exit 0 although a byte covered by the valid CRC64 changed (end record: {}): corrupt data presented as complete",
                        end_line(out).unwrap_or_else(|| "(none)".into())
                    ));
                }
            }
        }
        Expect::SameKeysChecksumDisabled => {
            let base = t.and_then(|t| t.baseline.as_ref()).expect("baseline");
            if run.code != Some(0) {
                p.push("a zeroed trailer means \"checksum disabled\": expected exit 0".into());
            } else {
                if end_checksum(&run.stdout).as_deref() != Some("disabled") {
                    p.push(format!(
                        "end record should say checksum disabled: {}",
                        end_line(&run.stdout).unwrap_or_else(|| "(none)".into())
                    ));
                }
                if key_lines(&run.stdout) != key_lines(base) {
                    p.push("key lines differ from the unchanged file's".into());
                }
            }
        }
        Expect::SameOutput => {
            let base = t.and_then(|t| t.baseline.as_ref()).expect("baseline");
            if run.code != Some(0) {
                p.push("bytes after EOF + checksum must be ignored: expected exit 0".into());
            } else if &run.stdout != base {
                p.push("output differs from the unchanged file's (bytes after EOF + checksum must be ignored)".into());
            }
        }
    }
    p
}

fn end_line(stdout: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .find(|l| l.contains("\"meta\":\"end\""))
        .map(|l| clip(l, 200))
}

fn end_checksum(stdout: &[u8]) -> Option<String> {
    let j = common::parse_json(&end_line(stdout)?).ok()?;
    j.get("checksum").and_then(Json::as_str).map(str::to_string)
}

fn key_lines(stdout: &[u8]) -> Vec<&[u8]> {
    stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"{\"meta\""))
        .collect()
}

/// Offsets of each expected key's length byte (6-bit lengths only) and of the byte after the
/// key, found by searching the file for the key's bytes.
fn length_spots(bytes: &[u8], expected: Option<&Json>) -> Vec<usize> {
    let mut spots = Vec::new();
    let keys = expected
        .and_then(|e| e.get("keys"))
        .and_then(Json::as_arr)
        .unwrap_or(&[]);
    for k in keys {
        let Some(name) = k.get("key").and_then(common::bytes_of) else {
            continue;
        };
        if name.is_empty() || name.len() >= 64 {
            continue;
        }
        let mut from = 0;
        let mut found = 0;
        while let Some(p) = bytes[from..]
            .windows(name.len())
            .position(|w| w == name.as_slice())
        {
            let at = from + p;
            if at >= 10 && bytes[at - 1] as usize == name.len() {
                spots.push(at - 1);
                if at + name.len() < bytes.len() {
                    spots.push(at + name.len());
                }
            }
            found += 1;
            from = at + 1;
            if found >= 4 || from >= bytes.len() {
                break;
            }
        }
    }
    spots.sort_unstable();
    spots.dedup();
    spots
}

fn parse_u64(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("SHAKE_MUTATION_SEED {s:?} is not a number"))
}

// ---------------------------------------------------------------------------------------------
// Plumbing

/// A private temp dir per worker call; inputs are written to a file in it.
struct TempInput(tempfile::TempDir);

impl TempInput {
    fn new() -> TempInput {
        TempInput(tempfile::tempdir().expect("tempdir"))
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self
            .0
            .path()
            .join(format!("{}.rdb", name.replace('/', "_")));
        std::fs::write(&p, bytes).expect("write temp input");
        p
    }
}

/// Runs `f` over the items on a few threads, results in item order.
fn par_run<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    // Each case is a separate process; a few more threads than cores hides process start-up.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        + 1;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                out.lock().unwrap()[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}
