//! The writing half of applying an RDB: takes `Work` from the planner and drives the target
//! client — RESTORE for payloads, batches for big keys, FUNCTION LOAD on every master — and
//! checks every reply against the conflict policy. Also caps the write rate (`--qps`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ApplyError, ApplyOptions, ConflictPolicy, Work};
use crate::client::{ClientError, Idempotent, Target};
use crate::resp::{CommandBuilder, Reply};

/// What a command was for, to judge its reply.
#[derive(Debug)]
pub enum Tag {
    Restore { db: u64, key: Vec<u8> },
    Command { db: u64, key: Vec<u8>, last: bool },
    Exists { key: Vec<u8> },
    Delete { db: u64, key: Vec<u8> },
}

/// What the target said.
#[derive(Debug, Default, Clone)]
pub struct ExecStats {
    /// Keys written whole (RESTORE accepted, or a big key's last batch accepted).
    pub written: u64,
    /// Keys that already existed and were kept (`--on-conflict ignore`).
    pub conflicts: u64,
    pub commands: u64,
    pub functions_loaded: u64,
    pub functions_kept: u64,
    /// Target masters that already held a library with the same code (not a conflict).
    pub functions_identical: u64,
    /// Keys deleted because they were gone from the source (`Work::Delete`).
    pub deleted: u64,
    /// Keys re-copied from the source after the target refused a write (shake-rump).
    pub repaired: u64,
}

/// A write of a key the target refused (kept when [`Exec::collect_refusals`] is on).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The target database.
    pub db: u64,
    pub key: Vec<u8>,
    pub error: String,
}

pub struct Exec<'a> {
    target: &'a mut Target<Tag>,
    opts: &'a ApplyOptions,
    pub stats: ExecStats,
    /// Big keys being skipped because they existed (`ignore`). More than one when batches of
    /// different keys interleave (shake-rump: a string read in parts from one master, a DUMPed
    /// big key from another).
    skipping: std::collections::HashSet<Vec<u8>>,
    started: Instant,
    /// Where the data comes from, as messages name it ("the source" unless told).
    pub source: String,
    /// Keep refused writes in `refused` for the caller to repair, instead of failing.
    pub collect_refusals: bool,
    pub refused: Vec<Refusal>,
    /// `stats.written`, readable while this `Exec` is borrowed by [`super::apply_rdb`] (the
    /// full sync's `/status` figure advances with it).
    written_live: Arc<AtomicU64>,
    /// When set, every key written (target database and name) is recorded: what a full sync
    /// of shake-sync prunes against (see `sync::prune`).
    pub seen: Option<crate::sync::prune::KeyHashes>,
}

fn is_busykey(e: &str) -> bool {
    e.starts_with("BUSYKEY")
}

impl<'a> Exec<'a> {
    pub fn new(target: &'a mut Target<Tag>, opts: &'a ApplyOptions) -> Self {
        Exec {
            target,
            opts,
            stats: ExecStats::default(),
            skipping: Default::default(),
            started: Instant::now(),
            source: "the source".into(),
            collect_refusals: false,
            refused: Vec::new(),
            written_live: Arc::new(AtomicU64::new(0)),
            seen: None,
        }
    }

    /// A counter that follows `stats.written` as replies are judged.
    pub fn written_counter(&self) -> Arc<AtomicU64> {
        self.written_live.clone()
    }

    fn note_written(&mut self) {
        self.stats.written += 1;
        self.written_live.fetch_add(1, Ordering::Relaxed);
    }

    pub fn target_name(&self) -> String {
        self.target.seed().to_string()
    }

    fn client_err(&self, e: ClientError) -> ApplyError {
        match e {
            ClientError::ClusterDb {
                endpoint,
                db,
                databases,
            } => ApplyError::Unsupported(format!(
                "the input has keys for database {db}: {}",
                crate::client::cluster_db_message(&endpoint, db, databases)
            )),
            other => ApplyError::Client(other.to_string()),
        }
    }

    /// Sleeps as needed to stay under `--qps`.
    async fn pace(&mut self) {
        if self.opts.qps == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.stats.commands as f64 / self.opts.qps as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }

    async fn submit(
        &mut self,
        key: &[u8],
        cmd: Vec<u8>,
        idem: Idempotent,
        tag: Tag,
    ) -> Result<(), ApplyError> {
        self.pace().await;
        self.stats.commands += 1;
        let r = self.target.submit(Some(key), cmd, idem, tag).await;
        r.map_err(|e| self.client_err(e))?;
        self.collect()
    }

    /// Judges every reply that has arrived (never waits).
    fn collect(&mut self) -> Result<(), ApplyError> {
        while let Some((tag, reply)) = self.target.try_completion() {
            self.judge(tag, reply)?;
        }
        Ok(())
    }

    fn judge(&mut self, tag: Tag, reply: Reply) -> Result<(), ApplyError> {
        match (tag, reply.error()) {
            (Tag::Restore { .. }, None) => self.note_written(),
            (Tag::Restore { key, .. }, Some(e)) if is_busykey(e) => match self.opts.conflict {
                ConflictPolicy::Ignore => self.stats.conflicts += 1,
                _ => {
                    return Err(ApplyError::Conflict {
                        key,
                        target: self.target_name(),
                    })
                }
            },
            (Tag::Command { last, .. }, None) => {
                if last {
                    self.note_written();
                }
            }
            // The final RENAME found no building key: its TTL passed while it was written
            // (PEXPIREAT of a past time deletes it), so the key is expired, as on the source.
            (Tag::Command { last: true, .. }, Some(e)) if e.starts_with("ERR no such key") => {}
            (Tag::Exists { .. }, None) => {}
            (Tag::Delete { .. }, None) => self.stats.deleted += 1,
            (
                Tag::Restore { db, key } | Tag::Command { db, key, .. } | Tag::Delete { db, key },
                Some(e),
            ) if self.collect_refusals => self.refused.push(Refusal {
                db,
                key,
                error: e.to_string(),
            }),
            (
                Tag::Restore { key, .. }
                | Tag::Command { key, .. }
                | Tag::Exists { key }
                | Tag::Delete { key, .. },
                Some(e),
            ) => {
                return Err(ApplyError::Target {
                    key: Some(key),
                    target: self.target_name(),
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Waits for the reply to an EXISTS just submitted, judging the others on the way.
    async fn exists(&mut self, key: &[u8]) -> Result<bool, ApplyError> {
        let mut b = CommandBuilder::new();
        b.arg("EXISTS").arg(key);
        let mut cmd = Vec::new();
        b.finish_into(&mut cmd);
        self.stats.commands += 1;
        let r = self
            .target
            .submit(
                Some(key),
                cmd,
                Idempotent::Yes,
                Tag::Exists { key: key.to_vec() },
            )
            .await;
        r.map_err(|e| self.client_err(e))?;
        loop {
            let next = self
                .target
                .next_completion()
                .await
                .map_err(|e| self.client_err(e))?;
            match next {
                Some((Tag::Exists { key: k }, reply)) if k == key => {
                    if let Some(e) = reply.error() {
                        return Err(ApplyError::Target {
                            key: Some(k),
                            target: self.target_name(),
                            message: e.to_string(),
                        });
                    }
                    return Ok(reply.as_int().unwrap_or(0) > 0);
                }
                Some((tag, reply)) => self.judge(tag, reply)?,
                None => {
                    return Err(ApplyError::Client(
                        "the target answered nothing to EXISTS".into(),
                    ))
                }
            }
        }
    }

    fn select(&mut self, db: u64) -> Result<(), ApplyError> {
        self.target.select(db).map_err(|e| self.client_err(e))
    }

    pub async fn apply(&mut self, w: Work) -> Result<(), ApplyError> {
        match w {
            Work::Restore { db, key, cmd } => {
                self.select(db)?;
                if let Some(seen) = &mut self.seen {
                    seen.insert(db, &key);
                }
                // Only RESTORE ... REPLACE can be sent twice without a false BUSYKEY.
                let idem = if self.opts.conflict == ConflictPolicy::Rewrite {
                    Idempotent::Yes
                } else {
                    Idempotent::No
                };
                self.pace().await;
                self.stats.commands += 1;
                let r = if self.target.is_cluster() {
                    let slot = crate::client::slot_of(&key);
                    self.target
                        .submit_to_slot(slot, cmd, idem, Tag::Restore { db, key })
                        .await
                } else {
                    // One server: no slot to compute.
                    self.target
                        .submit(None, cmd, idem, Tag::Restore { db, key })
                        .await
                };
                r.map_err(|e| self.client_err(e))?;
                self.collect()
            }
            Work::Commands {
                db,
                key,
                cmds,
                first,
                last,
            } => {
                self.select(db)?;
                if let (true, Some(seen)) = (first, &mut self.seen) {
                    seen.insert(db, &key);
                }
                if first {
                    // A new start of the key (a string read again in parts) decides anew.
                    self.skipping.remove(&key);
                    // Under rewrite the final RENAME replaces the key; otherwise an existing
                    // key is a conflict.
                    if self.opts.conflict != ConflictPolicy::Rewrite && self.exists(&key).await? {
                        if self.opts.conflict == ConflictPolicy::Panic {
                            return Err(ApplyError::Conflict {
                                key,
                                target: self.target_name(),
                            });
                        }
                        self.stats.conflicts += 1;
                        self.skipping.insert(key.clone());
                    } else {
                        // What an interrupted run left under the building name goes first.
                        let mut b = CommandBuilder::new();
                        b.arg("DEL").arg(super::building_name(&key));
                        let mut cmd = Vec::new();
                        b.finish_into(&mut cmd);
                        self.submit(
                            &key,
                            cmd,
                            Idempotent::Yes,
                            Tag::Command {
                                db,
                                key: key.clone(),
                                last: false,
                            },
                        )
                        .await?;
                    }
                }
                if self.skipping.contains(&key) {
                    if last {
                        self.skipping.remove(&key);
                    }
                    return Ok(());
                }
                let n = cmds.len();
                for (i, cmd) in cmds.into_iter().enumerate() {
                    let is_last = last && i + 1 == n;
                    self.submit(
                        &key,
                        cmd,
                        Idempotent::No,
                        Tag::Command {
                            db,
                            key: key.clone(),
                            last: is_last,
                        },
                    )
                    .await?;
                }
                Ok(())
            }
            Work::Delete { db, key } => {
                self.select(db)?;
                let mut b = CommandBuilder::new();
                b.arg("DEL").arg(&key);
                let mut cmd = Vec::new();
                b.finish_into(&mut cmd);
                self.submit(&key.clone(), cmd, Idempotent::Yes, Tag::Delete { db, key })
                    .await
            }
            Work::Function { code } => {
                self.collect()?;
                let r = super::functions::load_library(
                    self.target,
                    &code,
                    self.opts.conflict,
                    &self.source,
                )
                .await?;
                self.stats.functions_loaded += r.loaded;
                self.stats.functions_kept += r.kept;
                self.stats.functions_identical += r.identical;
                self.collect()
            }
            Work::End { .. } => Ok(()),
        }
    }

    /// Sends what is buffered, waits for the answers and judges them.
    pub async fn settle(&mut self) -> Result<(), ApplyError> {
        self.target
            .flush_all()
            .await
            .map_err(|e| self.client_err(e))?;
        self.collect()
    }

    /// Waits for every reply and judges it.
    pub async fn finish(&mut self) -> Result<(), ApplyError> {
        let all = self.target.drain().await.map_err(|e| self.client_err(e))?;
        for (tag, reply) in all {
            self.judge(tag, reply)?;
        }
        Ok(())
    }
}
