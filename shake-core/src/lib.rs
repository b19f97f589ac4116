//! shake-core: every piece of Redis protocol and RDB format knowledge the shake tools share.
//!
//! The binaries are argument parsing and wiring; the format (`rdb`), the filters (`filter`),
//! the output sinks (`sink`) and progress reporting (`observe`) live here, once.

pub mod apply;
pub mod cli;
pub mod client;
pub mod command;
pub mod compare;
pub mod crc64;
pub mod filter;
pub mod glob;
pub mod lzf;
pub mod net;
pub mod observe;
pub mod part_file;
pub mod preflight;
pub mod rdb;
pub mod rebuild;
pub mod repl;
pub mod resp;
pub mod scan;
pub mod shard;
pub mod sink;
pub mod sync;
pub mod text;
