//! shake-core: every piece of Redis protocol and RDB format knowledge the shake tools share.
//!
//! The binaries (shake-decode, -dump, -restore, -sync, -rump, -check) are argument parsing and
//! wiring; everything else lives here, once. Data flows **source → entries → sink**:
//!
//! - sources: an RDB file or stream ([`rdb::RdbParser`]), an append-only file ([`aof`]), a master's replication link
//!   ([`repl`], then the command stream cut by [`command`]; or a replica's, [`replica`]), SCAN + DUMP of a live server
//!   ([`scan`]);
//! - entries: [`rdb::Item`]s, key headers with raw value bytes or decoded [`rdb::Chunk`]s, DUMP
//!   payloads ([`scan::Found`]), command-stream frames;
//! - sinks: the text formats ([`sink`]: JSON lines, RESP, key list, memory report), a live
//!   target ([`apply`]: fast, portable and big-key paths, over [`client::Target`]), the command
//!   stream with checkpoints ([`sync`]), RDB files ([`part_file`], [`rdb::file_writer`]), a
//!   comparison ([`compare`]), a preflight report ([`preflight`]).
//!
//! Where each fact lives: the RDB type table in [`rdb::types`], opcodes in [`rdb::opcodes`],
//! what a target loads in [`rdb::writer`] (`TargetFormat`), re-encoding in `rdb::transcode`
//! (re-exported by [`rdb::writer`]), CRC-64 in [`crc64`], LZF in [`lzf`], value-to-commands in
//! [`rebuild`], RESP in [`resp`], URLs/TLS/AUTH/backoff in [`net`], slot hashing in
//! [`client::slot_of`], topology in [`client::topology`], redirects and retries in
//! [`client::Target`], checkpoints in [`sync::checkpoint`], the stream's treatment in
//! [`sync::stream`], filters in [`filter`] and [`glob`], `--rename-prefix` in [`rename`], shards in [`shard`], the shared flag
//! groups in [`cli`], progress and `/metrics` in [`observe`], preflight thresholds in
//! [`preflight::verdict`], output files in [`part_file`], the stream a two-connection full sync
//! holds back in [`spool`], SIGINT/SIGTERM in [`signals`], doubles and quoting in [`text`].
//! `docs/architecture.md` in the repository has the full map.

pub mod aof;
pub mod apply;
pub mod cli;
pub mod client;
pub mod command;
pub mod compare;
pub mod compat;
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
pub mod redisshake;
pub mod rename;
pub mod repl;
pub mod replica;
pub mod resp;
pub mod scan;
pub mod shard;
pub mod signals;
pub mod sink;
pub mod spool;
pub mod sync;
pub mod text;
