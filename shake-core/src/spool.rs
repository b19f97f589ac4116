//! A bounded byte queue that spills to disk: what holds a replication command stream that
//! arrives faster than it is applied (the main channel of a dual-channel / RDB-channel full
//! sync, [`crate::repl`]).
//!
//! This module owns:
//!
//! - the order of the bytes: memory first (up to [`SpoolOptions::memory`]), then segment files
//!   in [`SpoolOptions::dir`]; once anything is on disk every newer byte goes to disk too, until
//!   the disk part is read, so the consumer sees the bytes exactly in the order they came;
//! - the cap ([`SpoolOptions::max`], bytes on disk) and the one error that says it was reached;
//! - the files: `<pid>.<n>.spool`, mode 0600, never fsynced (they only need to outlive the
//!   queue, not a crash of the machine), each deleted as soon as it is read, every one left
//!   deleted when the queue is dropped; files of a process that no longer runs (a kill -9) are
//!   deleted when the next queue in the same directory is created.
//!
//! One producer (a task reading a socket) and one consumer share a [`Spool`]; the producer is
//! told when it may read ([`Spool::may_read`]) so that, once spilling is no longer allowed, a
//! consumer that falls behind slows the producer instead of filling memory.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// Where and how much a spool may hold.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Bytes held in memory before anything goes to disk.
    pub memory: u64,
    /// Where the segment files go (created when missing).
    pub dir: PathBuf,
    /// Bytes on disk at most; reaching it is an error ([`SpoolError::Full`]).
    pub max: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            memory: 32 << 20,
            dir: PathBuf::from("shake-spool"),
            max: 4 << 30,
        }
    }
}

/// The largest segment file; one is deleted as soon as it has been read.
const SEGMENT: u64 = 64 << 20;

/// The most a consumer takes from disk at once.
const READ_CHUNK: u64 = 1 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("{what} reached --spool-max {max} bytes on disk in {dir} (and --spool-memory {memory} bytes in memory) before it could be applied: raise --spool-max (or --spool-memory), or run with --no-dual-channel to leave the buffering to the source (up to its client-output-buffer-limit replica)")]
    Full {
        what: String,
        max: u64,
        memory: u64,
        dir: String,
    },
    #[error("{what}: cannot write the spool file {path}: {message} (free room there, or point --spool-dir elsewhere)")]
    Io {
        what: String,
        path: String,
        message: String,
    },
}

struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes written; the consumer reads up to here.
    written: u64,
    /// Bytes read by the consumer.
    read: u64,
}

#[derive(Default)]
struct State {
    mem: VecDeque<Bytes>,
    mem_bytes: u64,
    /// Oldest first; the last one is the one being written.
    disk: VecDeque<Segment>,
    disk_bytes: u64,
    /// Whether the producer may write to disk when memory is full; when not, it is told to wait.
    spill: bool,
    /// The producer's end: why it stopped (an error), or `Some(None)` for a clean end.
    ended: Option<Option<String>>,
    /// Bytes that ever went to disk.
    spilled: u64,
    peak_disk: u64,
}

/// The queue (see the module doc).
pub struct Spool {
    opts: SpoolOptions,
    /// Names this spool's bytes in errors ("the command stream of redis://h:p ...").
    what: String,
    state: Mutex<State>,
    /// Wakes the consumer: bytes arrived or the producer ended.
    pub data: Notify,
    /// Wakes the producer: the consumer took bytes (there may be room again).
    pub room: Notify,
    pushed: AtomicU64,
    created_dir: bool,
}

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

impl Spool {
    /// A new, empty spool. Creates the directory if needed and deletes the files there of
    /// processes that no longer run.
    pub fn new(opts: SpoolOptions, what: String) -> Result<Spool, SpoolError> {
        let created_dir = !opts.dir.exists();
        std::fs::create_dir_all(&opts.dir).map_err(|e| SpoolError::Io {
            what: what.clone(),
            path: opts.dir.display().to_string(),
            message: e.to_string(),
        })?;
        sweep_stale(&opts.dir);
        Ok(Spool {
            opts,
            what,
            state: Mutex::new(State {
                spill: true,
                ..State::default()
            }),
            data: Notify::new(),
            room: Notify::new(),
            pushed: AtomicU64::new(0),
            created_dir,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated in a way that
        // matters more than the panic itself; keep going with what is there.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the producer may read more now: always while spilling is allowed, else only
    /// while the bytes fit in memory (and nothing is on disk still to be read).
    pub fn may_read(&self) -> bool {
        let s = self.lock();
        s.ended.is_none() && (s.spill || (s.disk.is_empty() && s.mem_bytes < self.opts.memory))
    }

    /// Stops spilling to disk from now on (the consumer has caught up once: a consumer that falls
    /// behind later slows the producer instead).
    pub fn stop_spilling(&self) {
        self.lock().spill = false;
    }

    /// Appends `bytes` (to memory, or to disk when memory is full or the disk part is not read
    /// yet). The error is the one the producer ends with.
    pub fn push(&self, bytes: Bytes) -> Result<(), SpoolError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len() as u64;
        let mut s = self.lock();
        let to_memory = s.disk.is_empty() && (s.mem_bytes + len <= self.opts.memory || !s.spill);
        if to_memory {
            s.mem_bytes += len;
            s.mem.push_back(bytes);
        } else {
            if s.disk_bytes + len > self.opts.max {
                return Err(SpoolError::Full {
                    what: self.what.clone(),
                    max: self.opts.max,
                    memory: self.opts.memory,
                    dir: self.opts.dir.display().to_string(),
                });
            }
            let need_new = s.disk.back().is_none_or(|seg| seg.written >= SEGMENT);
            if need_new {
                let seg = self.new_segment()?;
                s.disk.push_back(seg);
            }
            let Some(seg) = s.disk.back_mut() else {
                return Ok(());
            };
            seg.file.write_all(&bytes).map_err(|e| SpoolError::Io {
                what: self.what.clone(),
                path: seg.path.display().to_string(),
                message: e.to_string(),
            })?;
            seg.written += len;
            s.disk_bytes += len;
            s.spilled += len;
            s.peak_disk = s.peak_disk.max(s.disk_bytes);
        }
        self.pushed.fetch_add(len, Ordering::Relaxed);
        drop(s);
        self.data.notify_one();
        Ok(())
    }

    fn new_segment(&self) -> Result<Segment, SpoolError> {
        let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
        let path = self
            .opts
            .dir
            .join(format!("{}.{n}.spool", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SpoolError::Io {
                what: self.what.clone(),
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(Segment {
            path,
            file,
            written: 0,
            read: 0,
        })
    }

    /// The producer's end; `error` is what it stopped for.
    pub fn end(&self, error: Option<String>) {
        let mut s = self.lock();
        if s.ended.is_none() {
            s.ended = Some(error);
        }
        drop(s);
        self.data.notify_one();
    }

    /// The producer's error, if it ended with one.
    pub fn error(&self) -> Option<String> {
        self.lock().ended.clone().flatten()
    }

    /// The oldest bytes not taken yet (`None`: nothing there now; see [`Spool::ended`]).
    pub fn take(&self) -> Result<Option<Bytes>, SpoolError> {
        let mut s = self.lock();
        let taken = if let Some(b) = s.mem.pop_front() {
            s.mem_bytes -= b.len() as u64;
            Some(b)
        } else if let Some(seg) = s.disk.front_mut() {
            let n = (seg.written - seg.read).min(READ_CHUNK);
            if n == 0 {
                None
            } else {
                let mut buf = vec![0u8; n as usize];
                seg.file
                    .read_exact_at(&mut buf, seg.read)
                    .map_err(|e| SpoolError::Io {
                        what: self.what.clone(),
                        path: seg.path.display().to_string(),
                        message: format!("reading it back: {e}"),
                    })?;
                seg.read += n;
                s.disk_bytes -= n;
                // A file read to its end goes at once: an older one is full, and when the newest
                // one is read the next bytes may go to memory again.
                if s.disk.front().is_some_and(|seg| seg.read == seg.written) {
                    if let Some(seg) = s.disk.pop_front() {
                        let _ = std::fs::remove_file(&seg.path);
                    }
                }
                Some(Bytes::from(buf))
            }
        } else {
            None
        };
        drop(s);
        if taken.is_some() {
            self.room.notify_one();
        }
        Ok(taken)
    }

    /// Whether the producer has ended (with or without an error).
    pub fn ended(&self) -> bool {
        self.lock().ended.is_some()
    }

    /// Bytes held now: (in memory, on disk).
    pub fn held(&self) -> (u64, u64) {
        let s = self.lock();
        (s.mem_bytes, s.disk_bytes)
    }

    /// Bytes that went to disk so far, and the most that was on disk at once.
    pub fn spilled(&self) -> (u64, u64) {
        let s = self.lock();
        (s.spilled, s.peak_disk)
    }

    /// Bytes pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for seg in s.disk.drain(..) {
            let _ = std::fs::remove_file(&seg.path);
        }
        if self.created_dir {
            // Only if empty: another spool (another link) may still use it.
            let _ = std::fs::remove_dir(&self.opts.dir);
        }
    }
}

/// Deletes `<pid>.<n>.spool` files of processes that no longer run (left by a kill -9).
pub fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".spool") else {
            continue;
        };
        let Some(pid) = stem.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &Spool) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = s.take().unwrap() {
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn keeps_order_across_memory_and_disk_and_deletes_what_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpoolOptions {
            memory: 1000,
            dir: dir.path().join("sp"),
            max: 1 << 20,
        };
        let s = Spool::new(opts, "test".into()).unwrap();
        let mut want = Vec::new();
        let mut got = Vec::new();
        for i in 0..200u32 {
            let b: Vec<u8> = (0..37).map(|j| (i * 7 + j) as u8).collect();
            want.extend_from_slice(&b);
            s.push(Bytes::from(b)).unwrap();
            if i % 50 == 49 {
                // Partly read in between: memory, then disk, then memory again.
                got.extend(drain(&s));
            }
        }
        assert!(s.spilled().0 > 0, "nothing went to disk");
        got.extend(drain(&s));
        assert_eq!(got, want);
        let files = std::fs::read_dir(dir.path().join("sp")).unwrap().count();
        assert_eq!(files, 0, "a read spool file was left");
        drop(s);
        assert!(!dir.path().join("sp").exists(), "the directory it created");
    }

    #[test]
    fn the_cap_is_an_error_naming_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpoolOptions {
            memory: 10,
            dir: dir.path().to_path_buf(),
            max: 100,
        };
        let s = Spool::new(opts, "the stream".into()).unwrap();
        s.push(Bytes::from(vec![1u8; 10])).unwrap();
        s.push(Bytes::from(vec![2u8; 90])).unwrap();
        let e = s.push(Bytes::from(vec![3u8; 20])).unwrap_err().to_string();
        assert!(
            e.contains("--spool-max 100") && e.contains("--no-dual-channel"),
            "{e}"
        );
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn without_spilling_the_producer_waits() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpoolOptions {
            memory: 10,
            dir: dir.path().to_path_buf(),
            max: 100,
        };
        let s = Spool::new(opts, "x".into()).unwrap();
        s.stop_spilling();
        assert!(s.may_read());
        s.push(Bytes::from(vec![1u8; 30])).unwrap();
        assert!(!s.may_read());
        assert_eq!(s.spilled().0, 0);
        assert_eq!(drain(&s).len(), 30);
        assert!(s.may_read());
    }
}
