//! Idle keep-alive connections to servers, kept per worker thread (as HAProxy
//! keeps idle connections per thread): no lock, no cross-thread wake-ups. Each
//! server keeps at most `max_idle` idle connections per thread; one idle longer
//! than `idle_timeout` is closed when next looked at. Before reuse a connection is
//! checked: one the server closed (or that has stray bytes) is dropped instead.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use crate::net::Stream;
use crate::net::io::Io;

thread_local! {
    static IDLE: RefCell<HashMap<u64, Vec<(Stream, Instant)>>> = RefCell::new(HashMap::new());
    /// Idle connections kept on this thread now, and the most it may keep (its
    /// share of the file-descriptor budget, `fdlimit.rs`).
    static TOTAL: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, usize::MAX)) };
}

/// The most idle server connections this thread keeps, over all servers.
pub fn set_thread_cap(cap: usize) {
    TOTAL.with(|t| t.set((t.get().0, cap)));
}

fn count(delta: isize) {
    TOTAL.with(|t| {
        let (n, cap) = t.get();
        t.set((n.saturating_add_signed(delta), cap));
    });
}

/// Still open, with nothing unread: safe to send a new request on. The reactor
/// keeps watching idle connections, so a server's FIN or stray bytes have usually
/// marked the socket readable already; when they have not, `try_read` answers
/// from tokio's cached readiness without a system call. (A FIN that lands in
/// between is caught by the replay of idempotent requests.)
fn healthy(s: &Stream) -> bool {
    let mut b = [0u8; 1];
    match s.try_read(&mut b) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}

/// An idle connection to server `id`, if a healthy one is kept on this thread.
/// `now`: the caller's clock reading (the request's start), to spare one.
pub fn take(id: u64, idle_timeout: Duration, now: Instant) -> Option<Stream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&id)?;
        while let Some((s, since)) = list.pop() {
            count(-1);
            if now.saturating_duration_since(since) <= idle_timeout && healthy(&s) {
                return Some(s);
            }
        }
        None
    })
}

/// Keep `s` for reuse (or close it if the server already has `max_idle` here).
/// `since`: when it went idle, at the latest (the request's start is early
/// enough: the connection then expires a little sooner, never later).
pub fn put(id: u64, s: Stream, max_idle: usize, since: Instant) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(id).or_default();
        // Drop connections that have been idle too long while we are here.
        if list.len() >= max_idle && !list.is_empty() {
            list.remove(0);
            count(-1);
        }
        let (total, cap) = TOTAL.with(|t| t.get());
        if max_idle > 0 && total < cap {
            list.push((s, since));
            count(1);
        }
    });
}
