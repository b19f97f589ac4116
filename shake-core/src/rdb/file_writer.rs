//! Writing whole RDB files from values in hand: the magic and version, AUX fields, SELECTDB,
//! keys (EXPIRETIME_MS, type byte, value bytes), function libraries, the EOF opcode and the
//! CRC-64 trailer. shake-rump builds a backup from DUMP payloads with it: a payload's type byte
//! and value bytes are exactly what an RDB file holds, so each key is copied through unchanged.
//!
//! The version is fixed when the file starts (the header comes first and the CRC covers it), so
//! every payload must be readable under it: a payload stamped with a newer version than the
//! header, or with the other family's numbering, is refused rather than written into a file no
//! reader would take.

use std::io::{self, Write};

use super::model::{Header, Magic};
use super::opcodes as op;
use super::writer::{parse_dump_payload, write_len, write_ms, write_string, TargetFormat};
use super::{value_type_of, Function};
use crate::crc64::Crc64;

/// An RDB file being written to `out` (give it a buffered writer).
pub struct RdbFileWriter<W: Write> {
    out: W,
    crc: Crc64,
    header: Header,
    db: Option<u64>,
    bytes: u64,
    keys: u64,
    scratch: Vec<u8>,
}

/// The header a file of RDB `version` carries: `VALKEY` and three digits from 80 on (Valkey 9's
/// own numbering), `REDIS` and four digits below (what Redis and Valkey up to 8.x write).
pub fn header_for_version(version: u16) -> Header {
    Header {
        magic: if version >= 80 {
            Magic::Valkey
        } else {
            Magic::Redis
        },
        version: u32::from(version),
    }
}

/// Whether a DUMP payload stamped `stamp` can sit in a file with `header`: the same numbering
/// family and no newer version; Redis-numbered stamps up to 11 (which have no family-specific
/// types) also fit a Valkey file.
pub fn stamp_fits(stamp: u16, header: Header) -> bool {
    let stamp = u32::from(stamp);
    match header.magic {
        Magic::Redis => stamp <= header.version,
        Magic::Valkey => stamp <= 11 || (stamp >= 80 && stamp <= header.version),
    }
}

impl<W: Write> RdbFileWriter<W> {
    /// Starts a file of RDB `version` (see [`header_for_version`]) with the given AUX fields.
    pub fn new(out: W, version: u16, aux: &[(&str, &[u8])]) -> io::Result<Self> {
        let header = header_for_version(version);
        let mut w = RdbFileWriter {
            out,
            crc: Crc64::new(),
            header,
            db: None,
            bytes: 0,
            keys: 0,
            scratch: Vec::with_capacity(256),
        };
        let magic = match header.magic {
            Magic::Valkey => format!("VALKEY{:03}", header.version),
            Magic::Redis => format!("REDIS{:04}", header.version),
        };
        w.put(magic.as_bytes())?;
        for (name, value) in aux {
            w.scratch.clear();
            w.scratch.push(op::AUX);
            write_string(&mut w.scratch, name.as_bytes());
            write_string(&mut w.scratch, value);
            w.flush_scratch()?;
        }
        Ok(w)
    }

    pub fn header(&self) -> Header {
        self.header
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Keys written so far.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.bytes += b.len() as u64;
        self.out.write_all(b)
    }

    fn flush_scratch(&mut self) -> io::Result<()> {
        let s = std::mem::take(&mut self.scratch);
        let r = self.put(&s);
        self.scratch = s;
        r
    }

    /// One key: SELECTDB when the database changes, EXPIRETIME_MS when it has a TTL, then the
    /// type byte and the value's raw encoding.
    pub fn key(
        &mut self,
        db: u64,
        key: &[u8],
        expire_at_ms: Option<i64>,
        rdb_type: u8,
        value: &[u8],
    ) -> io::Result<()> {
        self.scratch.clear();
        if self.db != Some(db) {
            self.scratch.push(op::SELECTDB);
            write_len(&mut self.scratch, db);
            self.db = Some(db);
        }
        if let Some(t) = expire_at_ms {
            self.scratch.push(op::EXPIRETIME_MS);
            write_ms(&mut self.scratch, t);
        }
        self.scratch.push(rdb_type);
        write_string(&mut self.scratch, key);
        self.flush_scratch()?;
        self.keys += 1;
        self.put(value)
    }

    /// One key from a DUMP payload (checked: CRC-64, a type the header's version reads).
    /// Errors are one line naming the key.
    pub fn dump_payload(
        &mut self,
        db: u64,
        key: &[u8],
        expire_at_ms: Option<i64>,
        payload: &[u8],
    ) -> Result<(), String> {
        let name = || crate::text::quote_bytes(key);
        let (rdb_type, value, stamp) =
            parse_dump_payload(payload).map_err(|e| format!("DUMP of key {}: {e}", name()))?;
        if !stamp_fits(stamp, self.header) {
            return Err(format!(
                "DUMP of key {} is stamped RDB {stamp}, which a {}{} file cannot hold (the file's version was fixed from the source before the first key)",
                name(),
                self.header.magic.as_str(),
                self.header.version
            ));
        }
        if value_type_of(rdb_type, self.header).is_none() {
            return Err(format!(
                "DUMP of key {} holds RDB type {rdb_type}, unknown to {} RDB {}",
                name(),
                self.header.magic.as_str(),
                self.header.version
            ));
        }
        self.key(db, key, expire_at_ms, rdb_type, value)
            .map_err(|e| format!("writing key {}: {e}", name()))
    }

    /// A top-level record: an opcode and its body as the format lays it out (a Redis hash
    /// template record, a Valkey SLOT_IMPORT, ...), for files built from parts.
    pub fn record(&mut self, opcode: u8, body: &[u8]) -> io::Result<()> {
        self.put(&[opcode])?;
        self.put(body)
    }

    /// One function library (the FUNCTION2 opcode and its code).
    pub fn function(&mut self, code: &[u8]) -> io::Result<()> {
        self.scratch.clear();
        self.scratch.push(op::FUNCTION2);
        write_string(&mut self.scratch, code);
        self.flush_scratch()
    }

    /// The EOF opcode and the CRC-64 of everything before it; gives the writer back (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[op::EOF])?;
        let crc = self.crc.value().to_le_bytes();
        self.out.write_all(&crc)?;
        self.bytes += 8;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The libraries of a `FUNCTION DUMP` payload (FUNCTION2 records, then the version stamp and
/// CRC-64 like a key's DUMP), read with the RDB parser.
pub fn functions_from_dump(payload: &[u8]) -> Result<Vec<Function>, String> {
    use super::writer::DUMP_TRAILER;
    if payload.len() == DUMP_TRAILER {
        // No library: the trailer alone, its CRC over the two version bytes.
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&payload[2..]);
        if crate::crc64::crc64(&payload[..2]) != u64::from_le_bytes(stored) {
            return Err("FUNCTION DUMP: checksum mismatch in an empty payload".into());
        }
        return Ok(Vec::new());
    }
    let (_, _, stamp) = parse_dump_payload(payload).map_err(|e| format!("FUNCTION DUMP: {e}"))?;
    if TargetFormat::from_dump_stamp(stamp).is_none() {
        return Err(format!("FUNCTION DUMP: unknown RDB version stamp {stamp}"));
    }
    let header = header_for_version(stamp);
    let magic = match header.magic {
        Magic::Valkey => format!("VALKEY{:03}", header.version),
        Magic::Redis => format!("REDIS{:04}", header.version),
    };
    let body = &payload[..payload.len() - super::writer::DUMP_TRAILER];
    // The records as an RDB file would hold them: header, records, EOF, and a zero CRC (which
    // the parser does not check).
    let stream = io::Read::chain(
        io::Read::chain(magic.as_bytes(), body),
        &[op::EOF, 0, 0, 0, 0, 0, 0, 0, 0][..],
    );
    let mut parser = super::RdbParser::new(stream);
    let mut out = Vec::new();
    loop {
        match parser.next_item() {
            Ok(Some(super::Item::Function(f))) => out.push(f),
            Ok(Some(super::Item::End { .. })) | Ok(None) => return Ok(out),
            Ok(Some(other)) => {
                return Err(format!(
                    "FUNCTION DUMP holds something other than libraries: {other:?}"
                ))
            }
            Err(e) => return Err(format!("FUNCTION DUMP: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::writer::dump_payload;
    use crate::rdb::{Item, RdbParser};

    #[test]
    fn file_reads_back() {
        let mut out = Vec::new();
        let mut w = RdbFileWriter::new(&mut out, 10, &[("redis-ver", b"7.0.15")]).unwrap();
        w.dump_payload(0, b"a", None, &dump_payload(0, b"\x03abc", 10))
            .unwrap();
        w.dump_payload(
            2,
            b"b",
            Some(1_900_000_000_000),
            &dump_payload(0, b"\xc0\x05", 9),
        )
        .unwrap();
        assert!(w
            .dump_payload(2, b"c", None, &dump_payload(0, b"\x01x", 11))
            .is_err());
        w.function(b"#!lua name=l\nredis.register_function('f', function() return 1 end)")
            .unwrap();
        w.finish().unwrap();
        assert_eq!(&out[..9], b"REDIS0010");
        let mut p = RdbParser::new(&out[..]);
        let mut keys = Vec::new();
        let mut functions = 0;
        while let Some(item) = p.next_item().unwrap() {
            match item {
                Item::Key(k) => keys.push((k.db, k.key, k.expire_at_ms)),
                Item::Function(_) => functions += 1,
                Item::End { checksum, .. } => {
                    assert_eq!(checksum, crate::rdb::ChecksumStatus::Valid)
                }
                _ => {}
            }
        }
        assert_eq!(
            keys,
            vec![
                (0, b"a".to_vec(), None),
                (2, b"b".to_vec(), Some(1_900_000_000_000))
            ]
        );
        assert_eq!(functions, 1);
    }

    #[test]
    fn valkey_header_and_stamps() {
        assert_eq!(header_for_version(80).magic, Magic::Valkey);
        assert!(stamp_fits(11, header_for_version(80)));
        assert!(!stamp_fits(12, header_for_version(80)));
        assert!(!stamp_fits(80, header_for_version(11)));
        let mut out = Vec::new();
        RdbFileWriter::new(&mut out, 80, &[])
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(&out[..9], b"VALKEY080");
        assert!(RdbParser::new(&out[..]).next_item().unwrap().is_some());
    }

    #[test]
    fn function_dump_payload() {
        let mut body = vec![op::FUNCTION2];
        write_string(&mut body, b"#!lua name=a\ncode a");
        body.push(op::FUNCTION2);
        write_string(&mut body, b"#!lua name=b\ncode b");
        let mut payload = body.clone();
        crate::rdb::writer::seal_dump_payload(&mut payload, 10);
        let libs = functions_from_dump(&payload).unwrap();
        assert_eq!(libs.len(), 2);
        let mut empty = Vec::new();
        crate::rdb::writer::seal_dump_payload(&mut empty, 10);
        assert!(functions_from_dump(&empty).unwrap().is_empty());
        assert_eq!(libs[1].code, b"#!lua name=b\ncode b");
        payload[3] ^= 1;
        assert!(functions_from_dump(&payload).is_err());
    }
}
