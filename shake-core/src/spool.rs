//! The read-ahead spool of a full sync: a FIFO of byte chunks, held in memory up to a bound and
//! spilled to segment files in a spool directory beyond it.
//!
//! This module owns the spool's storage and its limits, nothing of the replication protocol. A
//! full sync applies the RDB to the target while it arrives, so it lasts as long as the target
//! takes to load it; a source meanwhile buffers every write in its output buffer for this replica
//! and drops the link past `client-output-buffer-limit replica`. With the spool the socket is
//! read at network speed (the rest of the RDB, then the commands after it) and the applier
//! consumes from the spool, so the source sees a replica that drains its buffer like a native
//! one. See docs/shake-sync.md ("Read-ahead spool").
//!
//! Decisions:
//! - memory first: a chunk goes to disk only when the memory bound (shared by every spool of the
//!   process, [`SpoolBudget`]) is used up; chunks keep their order whatever medium holds them;
//! - no fsync, ever: the spool is scratch. After a crash it is worthless (the checkpoint on the
//!   target names only what the target holds, and a restart resumes or full-syncs from there),
//!   so the files are written to the page cache only;
//! - segments of [`SEGMENT`] bytes, each deleted as soon as its last byte is consumed, so the
//!   disk holds only what is still ahead of the applier;
//! - the disk cap is checked before a write: exceeding it is one error naming the directory, the
//!   cap and the fix; every segment is removed when the spool is dropped;
//! - files left by a process killed with -9 (`shake-spool-<pid>-*`, pid no longer alive) are
//!   removed when a later spool starts in the same directory.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;

/// Size of one spool file; a segment is deleted when all of it has been consumed.
pub const SEGMENT: u64 = 64 * 1024 * 1024;

/// Largest piece handed out from disk at once.
const READ_PIECE: u64 = 1024 * 1024;

/// Where and how much a spool may hold.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// The directory of the spool files (created when first needed).
    pub dir: PathBuf,
    /// Bytes held in memory (all spools of the process together) before spilling to disk.
    pub memory: u64,
    /// Bytes on disk at most (all spools of the process together); 0 disables the disk part.
    pub disk_cap: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            dir: PathBuf::from("shake-spool"),
            memory: 16 * 1024 * 1024,
            disk_cap: 8 * 1024 * 1024 * 1024,
        }
    }
}

/// The bounds shared by every spool of a process, and what they hold now.
#[derive(Debug)]
pub struct SpoolBudget {
    pub opts: SpoolOptions,
    mem_used: AtomicU64,
    disk_used: AtomicU64,
    /// The highest `mem + disk` seen (for the benchmark and the log).
    peak: AtomicU64,
    next_id: AtomicU64,
}

impl SpoolBudget {
    pub fn new(opts: SpoolOptions) -> Arc<SpoolBudget> {
        Arc::new(SpoolBudget {
            opts,
            mem_used: AtomicU64::new(0),
            disk_used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        })
    }

    /// Bytes in memory now.
    pub fn memory(&self) -> u64 {
        self.mem_used.load(Ordering::Relaxed)
    }

    /// Bytes on disk now.
    pub fn disk(&self) -> u64 {
        self.disk_used.load(Ordering::Relaxed)
    }

    /// The most the spools held at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn note_peak(&self) {
        let now = self.memory() + self.disk();
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the read-ahead spool is full: {held} bytes on disk in {dir} and {more} more to hold exceed --spool-max {cap} (the target applies the full sync slower than the source sends it); give a larger --spool-max or a --spool-dir with room, or raise the source's client-output-buffer-limit replica and run with --spool-max 0")]
    Full {
        dir: String,
        held: u64,
        more: u64,
        cap: u64,
    },
    #[error("the read-ahead spool needs more than its {memory} bytes of memory and --spool-max 0 allows no disk: give --spool-max and a --spool-dir, or a larger --spool-memory")]
    NoDisk { memory: u64 },
    #[error("the read-ahead spool in {dir}: {cause}")]
    Io { dir: String, cause: io::Error },
}

/// Where a chunk of the FIFO is.
enum Piece {
    Mem(Bytes),
    Disk { seg: u64, at: u64, len: u64 },
}

struct Segment {
    id: u64,
    file: File,
    path: PathBuf,
    /// Bytes written to it.
    written: u64,
    /// Bytes written and not consumed yet.
    unread: u64,
}

struct Inner {
    queue: VecDeque<Piece>,
    segments: VecDeque<Segment>,
    next_seg: u64,
    /// Bytes queued (memory and disk).
    len: u64,
    closed: bool,
    /// The consumer is gone: a push is dropped.
    abandoned: bool,
}

/// One FIFO. Cheap to clone (the clones share it): one side pushes, the other pops.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<(Mutex<Inner>, Condvar)>,
    budget: Arc<SpoolBudget>,
    /// File name prefix of this spool's segments.
    prefix: String,
}

impl Spool {
    pub fn new(budget: Arc<SpoolBudget>, name: &str) -> Spool {
        let id = budget.next_id.fetch_add(1, Ordering::Relaxed);
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Spool {
            inner: Arc::new((
                Mutex::new(Inner {
                    queue: VecDeque::new(),
                    segments: VecDeque::new(),
                    next_seg: 0,
                    len: 0,
                    closed: false,
                    abandoned: false,
                }),
                Condvar::new(),
            )),
            budget,
            prefix: format!("shake-spool-{}-{safe}-{id}", std::process::id()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes queued and not consumed.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn dir_name(&self) -> String {
        self.budget.opts.dir.display().to_string()
    }

    fn io_err(&self, cause: io::Error) -> SpoolError {
        SpoolError::Io {
            dir: self.dir_name(),
            cause,
        }
    }

    /// Appends a chunk; never waits for the consumer.
    pub fn push(&self, chunk: Bytes) -> Result<(), SpoolError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        let mut g = self.lock();
        if g.abandoned {
            return Ok(());
        }
        let b = &self.budget;
        // Memory while it lasts, and only while nothing of this spool waits on disk (a chunk
        // must not overtake the ones spilled before it; it could, but a spool that spilled is
        // behind anyway and memory is the scarcer of the two).
        let on_disk = g.queue.iter().any(|p| matches!(p, Piece::Disk { .. }));
        if !on_disk && b.memory() + n <= b.opts.memory {
            b.mem_used.fetch_add(n, Ordering::Relaxed);
            g.queue.push_back(Piece::Mem(chunk));
        } else {
            if b.opts.disk_cap == 0 {
                return Err(SpoolError::NoDisk {
                    memory: b.opts.memory,
                });
            }
            if b.disk() + n > b.opts.disk_cap {
                return Err(SpoolError::Full {
                    dir: self.dir_name(),
                    held: b.disk(),
                    more: n,
                    cap: b.opts.disk_cap,
                });
            }
            self.write_disk(&mut g, &chunk)?;
            b.disk_used.fetch_add(n, Ordering::Relaxed);
        }
        g.len += n;
        b.note_peak();
        drop(g);
        self.inner.1.notify_all();
        Ok(())
    }

    fn write_disk(&self, g: &mut Inner, chunk: &[u8]) -> Result<(), SpoolError> {
        let need_new = g.segments.back().is_none_or(|s| s.written >= SEGMENT);
        if need_new {
            let dir = &self.budget.opts.dir;
            if g.next_seg == 0 {
                std::fs::create_dir_all(dir).map_err(|e| self.io_err(e))?;
                remove_stale(dir);
            }
            let id = g.next_seg;
            g.next_seg += 1;
            let path = dir.join(format!("{}-{id}", self.prefix));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| self.io_err(e))?;
            g.segments.push_back(Segment {
                id,
                file,
                path,
                written: 0,
                unread: 0,
            });
        }
        let seg = g.segments.back_mut().expect("a segment was just ensured");
        let at = seg.written;
        seg.file
            .write_all_at(chunk, at)
            .map_err(|e| SpoolError::Io {
                dir: seg.path.display().to_string(),
                cause: e,
            })?;
        let len = chunk.len() as u64;
        seg.written += len;
        seg.unread += len;
        let id = seg.id;
        // Contiguous with the last piece: one piece.
        if let Some(Piece::Disk {
            seg: s,
            at: a,
            len: l,
        }) = g.queue.back_mut()
        {
            if *s == id && *a + *l == at {
                *l += len;
                return Ok(());
            }
        }
        g.queue.push_back(Piece::Disk { seg: id, at, len });
        Ok(())
    }

    /// No more pushes: a consumer that empties the spool then sees its end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_all();
    }

    /// The consumer is gone: what is queued is dropped (files removed), later pushes too.
    pub fn abandon(&self) {
        let mut g = self.lock();
        g.abandoned = true;
        self.clear(&mut g);
    }

    fn clear(&self, g: &mut Inner) {
        let b = &self.budget;
        for p in g.queue.drain(..) {
            match p {
                Piece::Mem(c) => {
                    b.mem_used.fetch_sub(c.len() as u64, Ordering::Relaxed);
                }
                Piece::Disk { len, .. } => {
                    b.disk_used.fetch_sub(len, Ordering::Relaxed);
                }
            }
        }
        for s in g.segments.drain(..) {
            let _ = std::fs::remove_file(&s.path);
        }
        g.len = 0;
    }

    /// The next chunk if one is queued (never waits). `Ok(None)`: nothing queued now.
    pub fn try_pop(&self) -> Result<Option<Bytes>, SpoolError> {
        let mut g = self.lock();
        self.pop_locked(&mut g)
    }

    /// The next chunk, waiting for one (a blocking thread only); `None` after [`Spool::close`]
    /// once everything was consumed.
    pub fn pop_blocking(&self) -> Result<Option<Bytes>, SpoolError> {
        let mut g = self.lock();
        loop {
            if let Some(c) = self.pop_locked(&mut g)? {
                return Ok(Some(c));
            }
            if g.closed || g.abandoned {
                return Ok(None);
            }
            g = self.inner.1.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn pop_locked(&self, g: &mut Inner) -> Result<Option<Bytes>, SpoolError> {
        let b = &self.budget;
        let Some(front) = g.queue.front_mut() else {
            return Ok(None);
        };
        let out = match front {
            Piece::Mem(_) => {
                let Some(Piece::Mem(c)) = g.queue.pop_front() else {
                    unreachable!("the front was a memory piece")
                };
                b.mem_used.fetch_sub(c.len() as u64, Ordering::Relaxed);
                c
            }
            Piece::Disk { seg, at, len } => {
                let (id, start) = (*seg, *at);
                let n = (*len).min(READ_PIECE);
                *at += n;
                *len -= n;
                if *len == 0 {
                    g.queue.pop_front();
                }
                let Some(pos) = g.segments.iter().position(|s| s.id == id) else {
                    return Err(self.io_err(io::Error::other("a spool segment went missing")));
                };
                let mut buf = vec![0u8; n as usize];
                let s = &mut g.segments[pos];
                s.file
                    .read_exact_at(&mut buf, start)
                    .map_err(|e| SpoolError::Io {
                        dir: s.path.display().to_string(),
                        cause: e,
                    })?;
                s.unread -= n;
                // Consumed entirely: gone from the disk (a later spill starts a fresh file).
                if s.unread == 0 {
                    let s = g.segments.remove(pos).expect("the position was found");
                    let _ = std::fs::remove_file(&s.path);
                }
                b.disk_used.fetch_sub(n, Ordering::Relaxed);
                Bytes::from(buf)
            }
        };
        g.len -= out.len() as u64;
        Ok(Some(out))
    }

    /// Paths of the segment files that exist now (for tests).
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock()
            .segments
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // The last clone removes the files.
        if Arc::strong_count(&self.inner) == 1 {
            let mut g = self.lock();
            self.clear(&mut g);
        }
    }
}

/// A size as flags take it: bytes, or with a `kb`/`mb`/`gb` suffix (powers of 1024, as Redis
/// reads `client-output-buffer-limit`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = [
        ("gb", 1u64 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((t.clone(), 1));
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| {
            format!("{s:?} is not a size: give bytes or a number with kb, mb or gb (16mb)")
        })
}

/// Removes `shake-spool-<pid>-*` files whose process is gone (killed with -9 mid-sync).
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("shake-spool-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(dir: &Path, memory: u64, disk_cap: u64) -> Arc<SpoolBudget> {
        SpoolBudget::new(SpoolOptions {
            dir: dir.to_path_buf(),
            memory,
            disk_cap,
        })
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spool-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keeps_order_across_memory_and_disk_and_removes_files() {
        let dir = tmpdir("order");
        let b = budget(&dir, 1000, 1 << 30);
        let s = Spool::new(b.clone(), "link/0");
        let mut expect = Vec::new();
        for i in 0..200u32 {
            let c: Vec<u8> = (0..(i % 37 + 1) * 11).map(|j| (i + j) as u8).collect();
            expect.extend_from_slice(&c);
            s.push(Bytes::from(c)).unwrap();
            // Consume now and then, so memory frees and disk pieces interleave.
            if i % 7 == 0 {
                let _ = s
                    .try_pop()
                    .unwrap()
                    .map(|c| expect.drain(..c.len()).count());
            }
        }
        assert!(b.disk() > 0, "the memory bound made it spill");
        assert!(!s.files().is_empty());
        s.close();
        let mut got = Vec::new();
        while let Some(c) = s.pop_blocking().unwrap() {
            got.extend_from_slice(&c);
        }
        assert_eq!(got, expect);
        assert_eq!((b.memory(), b.disk()), (0, 0));
        assert!(s.files().is_empty(), "consumed segments are deleted");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16mb"), Ok(16 << 20));
        assert_eq!(parse_size("8GB"), Ok(8 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999gb").is_err());
    }

    #[test]
    fn the_disk_cap_is_one_error_and_drop_removes_the_files() {
        let dir = tmpdir("cap");
        let b = budget(&dir, 100, 1000);
        let s = Spool::new(b.clone(), "x");
        s.push(Bytes::from(vec![1u8; 100])).unwrap();
        s.push(Bytes::from(vec![2u8; 1000])).unwrap();
        let e = s.push(Bytes::from(vec![3u8; 1])).unwrap_err();
        assert!(matches!(e, SpoolError::Full { cap: 1000, .. }), "{e}");
        assert!(e.to_string().contains("--spool-max"), "{e}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        drop(s);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(b.disk(), 0);
        let s = Spool::new(budget(&dir, 10, 0), "y");
        assert!(matches!(
            s.push(Bytes::from(vec![0u8; 11])),
            Err(SpoolError::NoDisk { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
