//! shake-core: every piece of Redis protocol and RDB format knowledge the shake tools share.
//!
//! The binaries are argument parsing and wiring; the format (`rdb`), the filters (`filter`),
//! the output sinks (`sink`) and progress reporting (`observe`) live here, once.

pub mod apply;
pub mod cli;
pub mod client;
pub mod crc64;
pub mod filter;
pub mod glob;
pub mod lzf;
pub mod net;
pub mod observe;
pub mod preflight;
pub mod rdb;
pub mod rebuild;
pub mod repl;
pub mod resp;
pub mod sink;
pub mod text;

/// What a binary whose issue has not landed does: say so and exit 2.
pub fn not_implemented(tool: &str) -> i32 {
    eprintln!("{tool}: not implemented yet (this tool's issue has not landed); see README.md");
    2
}
