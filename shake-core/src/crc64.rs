//! Redis's CRC-64 (the Jones polynomial, reflected, as in Redis's `crc64.c`): the trailer of
//! every RDB file and of every DUMP payload. One wrapper so no other module names the crate.

use crc_fast::{CrcAlgorithm, Digest};

/// A running CRC-64 over bytes fed in pieces.
#[derive(Clone)]
pub struct Crc64(Digest);

impl Crc64 {
    pub fn new() -> Self {
        Crc64(Digest::new(CrcAlgorithm::Crc64Redis))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn value(&self) -> u64 {
        self.0.finalize()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

/// CRC-64 of one buffer.
pub fn crc64(bytes: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Redis, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_matches_redis() {
        // Redis's crc64.c test vector: crc64(0, "123456789") == 0xe9c6d914c4b8d9ca.
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let mut c = Crc64::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.value(), 0xe9c6_d914_c4b8_d9ca);
    }
}
