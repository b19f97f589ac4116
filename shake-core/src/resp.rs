//! RESP: building commands as RESP2 arrays of bulk strings. The one place that knows the wire
//! form of a command; clients and the RESP output format both use it.

use std::io::Write;

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

#[cfg(test)]
mod tests {
    use super::*;

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
