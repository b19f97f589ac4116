//! Output files: `FILE.part` while an output file is being written, renamed to FILE only once it
//! is complete: a FILE that exists is always whole (shake-dump's RDB files, shake-rump's
//! `-o FILE`). Dropped uncommitted (a failure, an interruption), the part file is deleted. Also
//! `create_private` for outputs written in place (shake-decode's `-o FILE`).
//!
//! Every output is created mode 0600 (less under a stricter umask): a dump holds the database's
//! secrets. `FILE.part` is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so a planted
//! `FILE.part -> victim` symlink is never written through or renamed into place. A `FILE.part`
//! that already exists is handled so that a crash cannot block the next run forever, and two runs
//! writing the same FILE cannot mix their bytes:
//! - a symlink, or anything but a regular file: refused, the run stops naming it (remove it
//!   yourself if it is yours);
//! - a regular file another running process holds (each writer keeps an exclusive `flock` on its
//!   part file for as long as it writes): refused, "another run is writing it";
//! - a regular file nobody holds (left by a crash or kill -9): stale, removed, and created anew.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Opens `path` for writing, created mode 0600 if it does not exist (truncated if it does: an
/// output the user named, written in place, e.g. `-o /dev/stdout` or a FIFO).
pub fn create_private(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// An exclusive, non-blocking `flock` on `f`: false when another open file description holds it.
pub(crate) fn try_lock(f: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// `part` created exclusively (never through a symlink), mode 0600, and locked.
fn create_exclusive(part: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(part)?;
    // Fresh file: nobody else can hold its lock yet unless they opened it in the instant since;
    // either way the lock only guards against a later run treating it as stale.
    try_lock(&f)?;
    Ok(f)
}

/// What to do with a `FILE.part` that exists already (see the module docs).
fn clear_stale(part: &Path) -> Result<(), String> {
    let shown = part.display();
    let meta = fs::symlink_metadata(part)
        .map_err(|e| format!("cannot inspect the existing {shown}: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{shown} exists and is a symbolic link: refusing to write through it (remove it if it is yours)"
        ));
    }
    if !meta.file_type().is_file() {
        return Err(format!(
            "{shown} exists and is not a regular file: refusing to replace it (remove it if it is yours)"
        ));
    }
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(part)
        .map_err(|e| format!("cannot open the existing {shown}: {e}"))?;
    // The same file we inspected (not swapped for another between the two calls)?
    let now = f
        .metadata()
        .map_err(|e| format!("cannot inspect the existing {shown}: {e}"))?;
    if now.ino() != meta.ino() || now.dev() != meta.dev() {
        return Err(format!("{shown} changed while being inspected: rerun"));
    }
    match try_lock(&f) {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "{shown} is being written by another running process (another run with the same output?)"
            ))
        }
        Err(e) => return Err(format!("cannot lock the existing {shown}: {e}")),
    }
    // Ours and unlocked: the leftover of a run that died. Removed while we hold its lock.
    fs::remove_file(part).map_err(|e| format!("cannot remove the stale {shown}: {e}"))
}

pub struct PartFile {
    part: PathBuf,
    dest: PathBuf,
    file: Option<File>,
    /// A second handle on the part file that holds its lock until the rename, also after
    /// `take_file` handed the file away.
    lock: File,
    committed: bool,
}

impl PartFile {
    /// Creates `dest` + `.part` (mode 0600, exclusively; an existing one as the module docs say).
    pub fn create(dest: &Path) -> Result<PartFile, String> {
        let mut name = dest.as_os_str().to_owned();
        name.push(".part");
        let part = PathBuf::from(name);
        let created = match create_exclusive(&part) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                clear_stale(&part)?;
                create_exclusive(&part)
            }
            other => other,
        };
        let file = created.map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!(
                "cannot create {}: it is a symbolic link (remove it if it is yours)",
                part.display()
            ),
            _ => format!("cannot create {}: {e}", part.display()),
        })?;
        let lock = file
            .try_clone()
            .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        Ok(PartFile {
            part,
            dest: dest.to_path_buf(),
            file: Some(file),
            lock,
            committed: false,
        })
    }

    /// The part file's path (for messages).
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// The final path.
    pub fn dest_path(&self) -> &Path {
        &self.dest
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.file {
            Some(f) => f
                .write_all(bytes)
                .map_err(|e| format!("cannot write {}: {e}", self.part.display())),
            None => Err(format!("{} is already closed", self.part.display())),
        }
    }

    /// Hands the open file to a writer elsewhere (which syncs it when done); `commit` still
    /// renames.
    pub fn take_file(&mut self) -> Result<File, String> {
        self.file
            .take()
            .ok_or_else(|| format!("{} is already in use", self.part.display()))
    }

    /// Flushes the data to disk (before the rename, so a crash cannot leave a FILE whose bytes
    /// never reached the disk).
    pub fn sync(&mut self) -> Result<(), String> {
        match self.file.take() {
            Some(f) => f
                .sync_all()
                .map_err(|e| format!("cannot flush {} to disk: {e}", self.part.display())),
            None => Ok(()),
        }
    }

    /// Syncs (if the file is still here) and renames FILE.part to FILE.
    pub fn commit(mut self) -> Result<(), String> {
        self.sync()?;
        // Still our file under that name (nobody removed or replaced it meanwhile)?
        let ours = self.lock.metadata().ok();
        let there = fs::symlink_metadata(&self.part).ok();
        match (ours, there) {
            (Some(a), Some(b)) if a.ino() == b.ino() && a.dev() == b.dev() => {}
            _ => {
                self.committed = true; // what is there now is not ours to delete
                return Err(format!(
                    "{} was removed or replaced by someone else while being written: not renamed to {}",
                    self.part.display(),
                    self.dest.display()
                ));
            }
        }
        fs::rename(&self.part, &self.dest).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                self.part.display(),
                self.dest.display()
            )
        })?;
        self.committed = true;
        // The rename itself is durable only once the directory is synced; best effort.
        if let Some(dir) = self.dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            self.file = None;
            let _ = fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_exclusive_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.rdb");
        let part = dir.path().join("out.rdb.part");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, &part).unwrap();
        let e = PartFile::create(&dest).err().unwrap();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!dest.exists());
        fs::remove_file(&part).unwrap();

        // A stale regular part file (a crashed run) is replaced; a held one is refused.
        fs::write(&part, b"stale").unwrap();
        let mut p = PartFile::create(&dest).unwrap();
        let e = PartFile::create(&dest).err().unwrap();
        assert!(e.contains("another running process"), "{e}");
        p.write(b"new").unwrap();
        p.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        assert!(!part.exists());

        let f = dir.path().join("decoded");
        drop(create_private(&f).unwrap());
        let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
}
