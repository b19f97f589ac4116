//! `FILE.part` while an output file is being written, renamed to FILE only once it is complete:
//! a FILE that exists is always whole (shake-dump's RDB files, shake-rump's `-o FILE`). Dropped
//! uncommitted (a failure, an interruption), the part file is deleted.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct PartFile {
    part: PathBuf,
    dest: PathBuf,
    file: Option<File>,
    committed: bool,
}

impl PartFile {
    /// Creates `dest` + `.part`.
    pub fn create(dest: &Path) -> Result<PartFile, String> {
        let mut name = dest.as_os_str().to_owned();
        name.push(".part");
        let part = PathBuf::from(name);
        let file =
            File::create(&part).map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        Ok(PartFile {
            part,
            dest: dest.to_path_buf(),
            file: Some(file),
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
