//! The one error type of the RDB reader: what went wrong, at which byte offset, inside which key.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum RdbErrorKind {
    /// The input ended before the structure being read was complete.
    UnexpectedEof {
        wanted: &'static str,
    },
    Io(io::Error),
    NotRdb {
        found: Vec<u8>,
    },
    UnsupportedVersion {
        magic: &'static str,
        version: u32,
    },
    UnknownType {
        rdb_type: u8,
        version: u32,
    },
    /// A length field larger than anything a real server writes.
    ImplausibleLength {
        what: &'static str,
        len: u64,
    },
    /// The bytes do not follow the format; the text names the structure.
    Corrupt(String),
    ChecksumMismatch {
        stored: u64,
        computed: u64,
    },
    /// A module value of the pre-GA form (type 6) cannot be walked without the module.
    ModulePreGa,
    /// A value this reader knows of but cannot read (its layout is unpublished); the text says
    /// what it is and what to do.
    Unreadable(String),
    /// Valkey's LZ4 envelope (`rdbcompression lz4`) is damaged or of a form this reader does
    /// not know; `msg` names the field and its byte in the (compressed) file.
    Envelope {
        msg: String,
        truncated: bool,
    },
}

#[derive(Debug)]
pub struct RdbError {
    pub kind: RdbErrorKind,
    /// Byte offset in the RDB stream where the failing structure was being read.
    pub offset: u64,
    /// The key whose value was being read, when the error happened inside one.
    pub key: Option<Vec<u8>>,
}

impl RdbError {
    pub fn new(kind: RdbErrorKind, offset: u64) -> Self {
        RdbError {
            kind,
            offset,
            key: None,
        }
    }

    pub fn corrupt(msg: impl Into<String>, offset: u64) -> Self {
        Self::new(RdbErrorKind::Corrupt(msg.into()), offset)
    }

    pub(crate) fn with_key(mut self, key: &[u8]) -> Self {
        if self.key.is_none() {
            self.key = Some(key.to_vec());
        }
        self
    }

    /// True when the input simply stopped early (a truncated file or a dropped link).
    pub fn is_truncation(&self) -> bool {
        matches!(
            self.kind,
            RdbErrorKind::UnexpectedEof { .. }
                | RdbErrorKind::Envelope {
                    truncated: true,
                    ..
                }
        )
    }
}

impl fmt::Display for RdbErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdbErrorKind::UnexpectedEof { wanted } => {
                write!(f, "input ends in the middle of {wanted} (truncated file or dropped link)")
            }
            RdbErrorKind::Io(e) => write!(f, "read error: {e}"),
            RdbErrorKind::NotRdb { found } => write!(
                f,
                "not an RDB file: it starts with {:?}, not REDIS or VALKEY",
                String::from_utf8_lossy(found)
            ),
            RdbErrorKind::UnsupportedVersion { magic, version } => write!(
                f,
                "RDB version {version} ({magic} magic) is newer than this reader knows (REDIS {}-{}, VALKEY {}-{}); --relaxed-version reads it anyway, failing only on unknown types",
                super::parser::REDIS_VERSIONS.start(),
                super::parser::REDIS_VERSIONS.end(),
                super::parser::VALKEY_VERSIONS.start(),
                super::parser::VALKEY_VERSIONS.end(),
            ),
            RdbErrorKind::UnknownType { rdb_type, version } => {
                write!(f, "unknown value type {rdb_type} in an RDB of version {version}")
            }
            RdbErrorKind::ImplausibleLength { what, len } => {
                write!(f, "implausible {what} {len}: corrupt length field")
            }
            RdbErrorKind::Corrupt(msg) => write!(f, "corrupt RDB: {msg}"),
            RdbErrorKind::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: the file says {stored:016x}, its bytes give {computed:016x}"
            ),
            RdbErrorKind::ModulePreGa => write!(
                f,
                "module value in the pre-release format (type 6) cannot be read without its module"
            ),
            RdbErrorKind::Unreadable(msg) => write!(f, "{msg}"),
            RdbErrorKind::Envelope { msg, .. } => write!(f, "{msg}; decompressed"),
        }
    }
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Inside an envelope the offset counts decompressed bytes ("...; decompressed at byte
        // offset N"): the envelope's own message names the byte of the file.
        write!(f, "{} at byte offset {}", self.kind, self.offset)?;
        if let Some(key) = &self.key {
            write!(f, " (in key {})", crate::text::quote_bytes(key))?;
        }
        Ok(())
    }
}

impl std::error::Error for RdbError {}

pub type Result<T> = std::result::Result<T, RdbError>;
