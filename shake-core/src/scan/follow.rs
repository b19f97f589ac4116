//! Keyspace notifications for `shake-rump --follow`: checking (and, where CONFIG is allowed,
//! turning on) `notify-keyspace-events`, and one subscription per master that gathers the keys
//! named by `__keyevent@<db>__:<event>` messages into a de-duplicated set.
//!
//! Ordering: the subscription is confirmed before the SCAN starts. A write the scan misses is a
//! write that happened after SCAN passed the key; since the subscription was already active,
//! that write published an event, which makes the key be read again after the scan. A write
//! before the subscription is seen by the scan (SCAN returns every key that exists from its start
//! to its end). So once the events gathered during the scan are processed, the target has every
//! key as it was at some moment after its last change, and keeps converging from then on.
//! Events are read while the scan runs, so the server never drops the subscriber for a full
//! output buffer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::net::{ConnectOptions, Connection, Endpoint};
use crate::resp::Reply;

use super::Counters;

/// Event classes a copy needs: keyevent channels (E), and every key type and generic command
/// (the classes of `A`: g $ l s h z x e t; `d` (module types) where the server knows it).
const NEEDED: &[char] = &['E', 'g', '$', 'l', 's', 'h', 'z', 'x', 'e', 't'];

fn has_class(flags: &str, c: char) -> bool {
    // `A` stands for every class but K, E, m, n (and d on 7.0+, which it includes).
    flags.contains(c) || (c != 'E' && c != 'K' && flags.contains('A'))
}

/// Makes sure `endpoint` publishes the keyevent notifications a copy needs. Returns the previous
/// setting when it had to change it (to restore at the end), `None` when it was already enough.
/// Fails with the exact setting to make when CONFIG is refused.
pub async fn enable_notifications(
    endpoint: &Endpoint,
    opts: &ConnectOptions,
) -> Result<Option<String>, String> {
    let mut conn = Connection::connect(endpoint, opts)
        .await
        .map_err(|e| e.to_string())?;
    let how = "set notify-keyspace-events to include E and A (e.g. `CONFIG SET notify-keyspace-events KEA`, or the service's parameter group), or copy without --follow";
    let current = match conn
        .request(&["CONFIG", "GET", "notify-keyspace-events"])
        .await
        .map_err(|e| e.to_string())?
    {
        Reply::Array(v) if v.len() == 2 => v[1].as_text().unwrap_or_default(),
        Reply::Error(e) => {
            return Err(format!(
                "{endpoint}: --follow needs keyspace notifications, and CONFIG GET notify-keyspace-events was refused ({e}): make sure it is on: {how}"
            ))
        }
        other => {
            return Err(format!(
                "{endpoint}: CONFIG GET notify-keyspace-events answered {other}"
            ))
        }
    };
    let missing: String = NEEDED
        .iter()
        .filter(|c| !has_class(&current, **c))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let wanted = format!("{current}{missing}");
    let r = conn
        .request(&["CONFIG", "SET", "notify-keyspace-events", &wanted])
        .await
        .map_err(|e| e.to_string())?;
    if let Some(e) = r.error() {
        return Err(format!(
            "{endpoint}: --follow needs keyspace notifications; notify-keyspace-events is {current:?}, which lacks {missing:?}, and CONFIG SET was refused ({e}): {how}"
        ));
    }
    Ok(Some(current))
}

/// Puts back a setting [`enable_notifications`] changed (best effort: a failure is reported).
pub async fn restore_notifications(
    endpoint: &Endpoint,
    opts: &ConnectOptions,
    previous: &str,
) -> Result<(), String> {
    let mut conn = Connection::connect(endpoint, opts)
        .await
        .map_err(|e| e.to_string())?;
    conn.request_ok(&["CONFIG", "SET", "notify-keyspace-events", previous])
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[derive(Default)]
struct Shared {
    keys: HashSet<(u64, Vec<u8>)>,
    failed: Option<String>,
}

/// The keys named by events on one master since the last [`Subscription::take`].
#[derive(Clone)]
pub struct Subscription {
    endpoint: Endpoint,
    shared: Arc<Mutex<Shared>>,
    notify: Arc<Notify>,
}

impl Subscription {
    /// Subscribes to every keyevent channel of `endpoint`, returning once the server confirmed
    /// it; events are then gathered by a task until the connection ends.
    pub async fn start(
        endpoint: &Endpoint,
        opts: &ConnectOptions,
        counters: Arc<Counters>,
    ) -> Result<Subscription, String> {
        let mut conn = Connection::connect(endpoint, opts)
            .await
            .map_err(|e| e.to_string())?;
        // Quiet periods are normal on a subscription.
        conn.set_reply_timeout(None);
        let r = conn
            .request(&["PSUBSCRIBE", "__keyevent@*__:*"])
            .await
            .map_err(|e| e.to_string())?;
        if let Some(e) = r.error() {
            return Err(format!("{endpoint}: PSUBSCRIBE failed: {e}"));
        }
        let sub = Subscription {
            endpoint: endpoint.clone(),
            shared: Arc::new(Mutex::new(Shared::default())),
            notify: Arc::new(Notify::new()),
        };
        let s = sub.clone();
        tokio::spawn(async move {
            let err = loop {
                match conn.read_reply().await {
                    Ok(reply) => {
                        if let Some((db, key)) = parse_event(&reply) {
                            Counters::add(&counters.events, 1);
                            if let Ok(mut g) = s.shared.lock() {
                                g.keys.insert((db, key));
                            }
                            s.notify.notify_one();
                        }
                    }
                    Err(e) => break e.to_string(),
                }
            };
            if let Ok(mut g) = s.shared.lock() {
                g.failed = Some(err);
            }
            s.notify.notify_one();
        });
        Ok(sub)
    }

    /// Waits until at least one event arrived (or the subscription failed).
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Every key named since the last call, or the reason the subscription ended (events may
    /// have been lost, so the copy can no longer promise convergence).
    pub fn take(&self) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let mut g = self
            .shared
            .lock()
            .map_err(|_| "the event collector failed".to_string())?;
        if let Some(e) = &g.failed {
            return Err(format!(
                "{}: the keyspace notification link dropped ({e}); changes since then may be missed: run shake-rump again",
                self.endpoint
            ));
        }
        Ok(g.keys.drain().collect())
    }
}

/// `pmessage <pattern> __keyevent@<db>__:<event> <key>` into `(db, key)`; key-miss events (a
/// read of a missing key) change nothing and are dropped.
fn parse_event(r: &Reply) -> Option<(u64, Vec<u8>)> {
    let a = r.as_array()?;
    if a.len() != 4 || a[0].as_bytes()? != b"pmessage" {
        return None;
    }
    let channel = a[2].as_bytes()?;
    let rest = channel.strip_prefix(b"__keyevent@")?;
    let end = rest.iter().position(|&b| b == b'_')?;
    let db: u64 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let event = rest[end..].strip_prefix(b"__:")?;
    if event == b"keymiss" {
        return None;
    }
    Some((db, a[3].as_bytes()?.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &[u8]) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s))
    }

    #[test]
    fn events_and_classes() {
        let r = Reply::Array(vec![
            b(b"pmessage"),
            b(b"__keyevent@*__:*"),
            b(b"__keyevent@12__:hset"),
            b(b"k\x00ey"),
        ]);
        assert_eq!(parse_event(&r), Some((12, b"k\x00ey".to_vec())));
        let miss = Reply::Array(vec![
            b(b"pmessage"),
            b(b"p"),
            b(b"__keyevent@0__:keymiss"),
            b(b"k"),
        ]);
        assert_eq!(parse_event(&miss), None);
        assert!(NEEDED.iter().all(|c| has_class("AKE", *c)));
        assert!(!has_class("AK", 'E'));
        assert!(!has_class("Eg", 'x'));
    }
}
