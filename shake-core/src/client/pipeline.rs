//! A pipelined connection: many commands on the wire at once, with a bounded window.
//!
//! [`Pipeline`] owns one [`Connection`]. Commands go in already encoded (RESP bytes, from
//! [`crate::resp::CommandBuilder`] or [`crate::resp::encode_command`]) with a caller's tag; replies
//! come out as `(tag, Reply)` in submission order, which is the order a Redis connection answers
//! in, so every reply is matched to its command by position. The window bounds both the number of
//! commands and the bytes of commands sent but not answered: submitting waits (reading replies
//! meanwhile) only when the window is full. A command larger than the byte window is still sent,
//! alone.
//!
//! A *unit* is several commands under one tag whose replies come back together as one
//! `Reply::Array` (a MULTI ... EXEC block, or ASKING + a command): the pipeline never splits one.
//!
//! Writes are batched: commands are buffered and written when the buffer passes
//! [`FLUSH_BYTES`], before waiting for a reply, or on [`Pipeline::flush`].
//!
//! After a connection error the pipeline is dead: every later call fails, and
//! [`Pipeline::take_unanswered`] hands back the tags of the commands whose replies never came, in
//! order, so the caller can decide what may be sent again.

use std::collections::VecDeque;

use crate::net::{Connection, Endpoint, NetError, WRITE_DIRECT_BYTES};
use crate::resp::{decode_reply, Reply};

/// Buffered command bytes are written once they reach this size (one write per ~64 KiB, instead
/// of one per command).
pub const FLUSH_BYTES: usize = 64 * 1024;

/// The window of a pipelined connection.
#[derive(Debug, Clone, Copy)]
pub struct PipelineOptions {
    /// Most commands sent and not answered yet.
    pub max_commands: usize,
    /// Most bytes of commands sent and not answered yet (a larger command is still sent alone).
    pub max_bytes: usize,
}

impl Default for PipelineOptions {
    /// 1024 commands or 16 MiB in flight: enough to keep a server busy over a WAN link, small
    /// enough that a stall holds little memory.
    fn default() -> Self {
        PipelineOptions {
            max_commands: 1024,
            max_bytes: 16 << 20,
        }
    }
}

struct InFlight<T> {
    tag: T,
    bytes: usize,
    /// Replies still expected: 1 for a command, n for a unit of n.
    expect: usize,
    /// `Some` for a unit: the replies so far.
    unit: Option<Vec<Reply>>,
}

/// One connection with many commands in flight. See the module documentation.
pub struct Pipeline<T> {
    conn: Connection,
    opts: PipelineOptions,
    inflight: VecDeque<InFlight<T>>,
    inflight_bytes: usize,
    ready: VecDeque<(T, Reply)>,
    /// Why the connection is dead, once it is.
    dead: Option<String>,
}

impl<T> std::fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pipeline({}, {} in flight)",
            self.conn.endpoint(),
            self.inflight.len()
        )
    }
}

impl<T> Pipeline<T> {
    /// Takes over `conn`, which must have no command in flight.
    pub fn new(conn: Connection, opts: PipelineOptions) -> Self {
        Pipeline {
            conn,
            opts: PipelineOptions {
                max_commands: opts.max_commands.max(1),
                max_bytes: opts.max_bytes.max(1),
            },
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            ready: VecDeque::new(),
            dead: None,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        self.conn.endpoint()
    }

    /// Commands (units count once) sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Bytes of commands sent and not answered yet.
    pub fn in_flight_bytes(&self) -> usize {
        self.inflight_bytes
    }

    /// Answered commands waiting to be collected.
    pub fn ready(&self) -> usize {
        self.ready.len()
    }

    /// Whether the connection failed (every later call fails too).
    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    /// Whether a command of `len` bytes fits in the window now.
    pub fn has_room(&self, len: usize) -> bool {
        self.inflight.is_empty()
            || (self.inflight.len() < self.opts.max_commands
                && self.inflight_bytes + len <= self.opts.max_bytes)
    }

    /// Sends one encoded command (RESP bytes of exactly one command). Waits, reading replies,
    /// while the window is full.
    pub async fn submit(&mut self, cmd: &[u8], tag: T) -> Result<(), NetError> {
        self.submit_parts(&[cmd], tag, false).await
    }

    /// Sends several encoded commands as one unit: their replies come back together, as one
    /// `Reply::Array` in command order, under `tag`.
    pub async fn submit_unit(&mut self, cmds: &[&[u8]], tag: T) -> Result<(), NetError> {
        self.submit_parts(cmds, tag, true).await
    }

    async fn submit_parts(&mut self, cmds: &[&[u8]], tag: T, unit: bool) -> Result<(), NetError> {
        self.check_alive()?;
        let len: usize = cmds.iter().map(|c| c.len()).sum();
        while !self.has_room(len) {
            self.read_some().await?;
        }
        // Write order is command order; a long command goes from the caller's memory.
        let mut direct = Ok(());
        for c in cmds {
            if c.len() >= WRITE_DIRECT_BYTES && direct.is_ok() {
                direct = self.conn.write_now(c).await;
            } else {
                self.conn.queue_raw(c);
            }
        }
        self.inflight.push_back(InFlight {
            tag,
            bytes: len,
            expect: cmds.len().max(1),
            unit: unit.then(|| Vec::with_capacity(cmds.len())),
        });
        self.inflight_bytes += len;
        if unit && cmds.is_empty() {
            // Nothing to wait for: an empty unit answers at once, in its place in the order.
            self.complete_front_if_done();
        }
        // A failed direct write is the connection's failure, noted like a failed flush (after
        // the command is in flight, so it is handed back by `take_unanswered`).
        self.note(direct)?;
        if self.conn.queued_bytes() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes every buffered command to the socket.
    pub async fn flush(&mut self) -> Result<(), NetError> {
        self.check_alive()?;
        if self.conn.queued_bytes() == 0 {
            return Ok(());
        }
        let r = self.conn.flush().await;
        self.note(r)
    }

    /// The next answered command, if one was read already (never waits).
    pub fn try_completion(&mut self) -> Option<(T, Reply)> {
        self.ready.pop_front()
    }

    /// The next answered command, waiting for it if needed; `None` when nothing is outstanding.
    pub async fn next_completion(&mut self) -> Result<Option<(T, Reply)>, NetError> {
        loop {
            if let Some(c) = self.ready.pop_front() {
                return Ok(Some(c));
            }
            if self.inflight.is_empty() {
                return Ok(None);
            }
            self.read_some().await?;
        }
    }

    /// Waits for every outstanding reply and returns all completions not collected yet.
    pub async fn drain(&mut self) -> Result<Vec<(T, Reply)>, NetError> {
        while !self.inflight.is_empty() {
            self.read_some().await?;
        }
        Ok(self.ready.drain(..).collect())
    }

    /// Flushes, waits for at least one reply, then takes every further reply already buffered,
    /// without waiting again. Does nothing when nothing is in flight.
    ///
    /// Cancel-safe once the buffered commands are flushed (i.e. when called again after a
    /// cancelled call, or after [`Pipeline::flush`]): a reply is taken off the connection's buffer
    /// and matched to its command in one synchronous step, and reading into the buffer loses
    /// nothing when cancelled. The cluster router relies on this to wait on several pipelines
    /// at once.
    pub async fn read_some(&mut self) -> Result<(), NetError> {
        self.check_alive()?;
        if self.inflight.is_empty() {
            return Ok(());
        }
        self.flush().await?;
        let r = self.conn.read_reply().await;
        let first = self.note(r)?;
        self.accept(first)?;
        while !self.inflight.is_empty() {
            match decode_reply(self.conn.buffer()) {
                Ok(Some(r)) => self.accept(r)?,
                Ok(None) => break,
                Err(m) => {
                    let e = self.conn.protocol_err(m);
                    return self.note(Err(e));
                }
            }
        }
        Ok(())
    }

    /// Matches a reply to the oldest command in flight.
    fn accept(&mut self, reply: Reply) -> Result<(), NetError> {
        let Some(front) = self.inflight.front_mut() else {
            let e = self.conn.protocol_err(format!(
                "unexpected reply with no command in flight: {reply}"
            ));
            return self.note(Err(e));
        };
        match &mut front.unit {
            Some(replies) => replies.push(reply),
            None => {
                front.expect = 0;
                if let Some(f) = self.inflight.pop_front() {
                    self.inflight_bytes -= f.bytes;
                    self.ready.push_back((f.tag, reply));
                }
                return Ok(());
            }
        }
        self.complete_front_if_done();
        Ok(())
    }

    fn complete_front_if_done(&mut self) {
        let done = self
            .inflight
            .front()
            .is_some_and(|f| f.unit.as_ref().is_some_and(|u| u.len() >= f.expect));
        if done {
            if let Some(f) = self.inflight.pop_front() {
                self.inflight_bytes -= f.bytes;
                self.ready
                    .push_back((f.tag, Reply::Array(f.unit.unwrap_or_default())));
            }
        }
    }

    /// After a failure: the tags of every command sent (or buffered) whose reply never came,
    /// oldest first. A unit that got only some of its replies counts as unanswered.
    pub fn take_unanswered(&mut self) -> Vec<T> {
        self.inflight_bytes = 0;
        self.inflight.drain(..).map(|f| f.tag).collect()
    }

    /// Gives the connection back (e.g. to send plain requests once the pipeline is drained).
    pub fn into_connection(self) -> Connection {
        self.conn
    }

    fn check_alive(&self) -> Result<(), NetError> {
        match &self.dead {
            None => Ok(()),
            Some(why) => Err(NetError::Closed {
                endpoint: format!(
                    "{} (unusable after an earlier error: {why})",
                    self.conn.endpoint()
                ),
            }),
        }
    }

    /// Records a failure: a connection that failed mid-reply (or timed out waiting for one)
    /// cannot be trusted to line replies up with commands any more.
    fn note<R>(&mut self, r: Result<R, NetError>) -> Result<R, NetError> {
        if let Err(e) = &r {
            if self.dead.is_none() {
                self.dead = Some(e.to_string());
            }
        }
        r
    }
}
