//! RESP: building commands as RESP2 arrays of bulk strings, and reading replies (on top of the
//! `redis-protocol` crate). The one place that knows the wire form; the clients, the replication
//! link and the RESP output format all use it.

use std::fmt;
use std::io::Write;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

/// A server reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(Bytes),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Array(Vec<Reply>),
    Nil,
}

impl Reply {
    fn from_frame(f: BytesFrame) -> Reply {
        match f {
            BytesFrame::SimpleString(b) => Reply::Status(b),
            BytesFrame::Error(e) => Reply::Error(e.to_string()),
            BytesFrame::Integer(i) => Reply::Int(i),
            BytesFrame::BulkString(b) => Reply::Bulk(b),
            BytesFrame::Array(v) => Reply::Array(v.into_iter().map(Reply::from_frame).collect()),
            BytesFrame::Null => Reply::Nil,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The error text, if this is an error reply.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Bytes of a status or bulk reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Status(b) | Reply::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// Text of a status or bulk reply (lossy for non-UTF-8).
    pub fn as_text(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Status(b) | Reply::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Status(b) | Reply::Bulk(b) => write!(f, "{}", crate::text::quote_bytes(b)),
            Reply::Error(e) => write!(f, "(error) {e}"),
            Reply::Int(i) => write!(f, "(integer) {i}"),
            Reply::Nil => write!(f, "(nil)"),
            Reply::Array(v) => write!(f, "(array of {})", v.len()),
        }
    }
}

/// Takes one complete reply off the front of `buf`, or `None` if more bytes are needed.
pub fn decode_reply(buf: &mut BytesMut) -> Result<Option<Reply>, String> {
    match decode_bytes_mut(buf) {
        Ok(Some((frame, _, _))) => Ok(Some(Reply::from_frame(frame))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("malformed reply from server: {e}")),
    }
}

/// Appends one command (`argv`) in RESP form to `out`.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, argv: &[A]) {
    let _ = write!(out, "*{}\r\n", argv.len());
    for a in argv {
        let a = a.as_ref();
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Builds commands argument by argument into a reusable buffer, so batches (RPUSH with a
/// thousand members) need no intermediate vector of slices.
#[derive(Default)]
pub struct CommandBuilder {
    args: Vec<u8>,
    count: usize,
}

impl CommandBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn arg(&mut self, a: impl AsRef<[u8]>) -> &mut Self {
        let a = a.as_ref();
        let _ = write!(self.args, "${}\r\n", a.len());
        self.args.extend_from_slice(a);
        self.args.extend_from_slice(b"\r\n");
        self.count += 1;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Appends the command to `out` and clears the builder.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        let _ = write!(out, "*{}\r\n", self.count);
        out.extend_from_slice(&self.args);
        self.args.clear();
        self.count = 0;
    }
}

/// A short human description of an encoded command for messages: its name and first argument
/// (usually the key), e.g. `RESTORE "user:1"`. Parsed with redis-protocol's zero-copy decoder, so
/// a big payload is not copied.
pub fn describe_command(cmd: &[u8]) -> String {
    use redis_protocol::resp2::decode::decode_range;
    use redis_protocol::resp2::types::RangeFrame;
    let arg = |f: &RangeFrame| match f {
        RangeFrame::BulkString((a, b)) => cmd.get(*a..*b),
        _ => None,
    };
    match decode_range(cmd) {
        Ok(Some((RangeFrame::Array(args), _))) => {
            let name = args
                .first()
                .and_then(arg)
                .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
                .unwrap_or_else(|| "?".into());
            match args.get(1).and_then(arg) {
                Some(key) => format!("{name} {}", crate::text::quote_bytes(key)),
                None => name,
            }
        }
        _ => "an unreadable command".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_replies_incrementally() {
        let mut buf = BytesMut::from(&b"+OK\r\n:5\r\n$3\r\nab"[..]);
        assert_eq!(
            decode_reply(&mut buf).unwrap(),
            Some(Reply::Status(Bytes::from_static(b"OK")))
        );
        assert_eq!(decode_reply(&mut buf).unwrap(), Some(Reply::Int(5)));
        assert_eq!(decode_reply(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"c\r\n-ERR no\r\n");
        assert_eq!(
            decode_reply(&mut buf).unwrap(),
            Some(Reply::Bulk(Bytes::from_static(b"abc")))
        );
        assert_eq!(
            decode_reply(&mut buf).unwrap().unwrap().error(),
            Some("ERR no")
        );
    }

    #[test]
    fn describes_commands_for_messages() {
        let mut out = Vec::new();
        encode_command(&mut out, &[&b"restore"[..], b"k\x00", b"0", b"payload"]);
        assert_eq!(describe_command(&out), "RESTORE \"k\\x00\"");
        assert_eq!(describe_command(b"garbage"), "an unreadable command");
    }

    #[test]
    fn encodes_binary_safe() {
        let mut out = Vec::new();
        encode_command(&mut out, &[&b"SET"[..], b"k\r\n", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n");
        let mut b = CommandBuilder::new();
        b.arg("SET").arg("k\r\n").arg("");
        let mut out2 = Vec::new();
        b.finish_into(&mut out2);
        assert_eq!(out, out2);
    }
}
