//! Idle keep-alive connections to servers, kept per worker thread (as HAProxy
//! keeps idle connections per thread): no lock, no cross-thread wake-ups. Each
//! server keeps at most `max_idle` idle connections per thread (no limit by
//! default: the thread's share of the descriptor budget bounds them all, as
//! HAProxy keeps what a burst opened). The newest is reused first; one idle
//! longer than `idle_timeout` is closed when next looked at, and the oldest
//! ones are closed as others are put back once they expired, so what a burst
//! opened does not linger. Before reuse a connection is checked: one the
//! server closed (or that has stray bytes) is dropped instead.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use crate::net::Stream;
use crate::net::io::Io;

thread_local! {
    static IDLE: RefCell<HashMap<u64, VecDeque<(Stream, Instant)>>> = RefCell::new(HashMap::new());
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
        while let Some((s, since)) = list.pop_back() {
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
/// enough: the connection then expires a little sooner, never later); the
/// oldest connections idle longer than `idle_timeout` by then are closed.
pub fn put(id: u64, s: Stream, max_idle: usize, since: Instant, idle_timeout: Duration) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(id).or_default();
        while list
            .front()
            .is_some_and(|(_, t)| since.saturating_duration_since(*t) > idle_timeout)
            || (list.len() >= max_idle && !list.is_empty())
        {
            list.pop_front();
            count(-1);
        }
        let (total, cap) = TOTAL.with(|t| t.get());
        if max_idle > 0 && total < cap {
            list.push_back((s, since));
            count(1);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(id: u64) -> usize {
        IDLE.with(|idle| idle.borrow().get(&id).map_or(0, VecDeque::len))
    }

    #[test]
    fn expired_connections_go_as_others_come_back_or_when_taken() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let mut held = Vec::new();
            let mut conns = Vec::new();
            for _ in 0..5 {
                conns.push(Stream::Tcp(
                    tokio::net::TcpStream::connect(addr).await.unwrap(),
                ));
                held.push(l.accept().await.unwrap().0);
            }
            let mut conn = || conns.pop().unwrap();
            let t0 = Instant::now();
            let s = Duration::from_secs;
            let ttl = Duration::from_millis(1500);
            for at in [0, 0, 1] {
                put(1, conn(), usize::MAX, t0 + s(at), ttl);
            }
            assert_eq!(kept(1), 3);
            // At t0+2s the two idle since t0 are past 1.5s.
            put(1, conn(), usize::MAX, t0 + s(2), ttl);
            assert_eq!(kept(1), 2);
            // A cap closes the oldest to make room.
            put(1, conn(), 2, t0 + s(2), ttl);
            assert_eq!(kept(1), 2);
            // Reused while fresh; closed instead once idle too long.
            assert!(take(1, ttl, t0 + s(3)).is_some());
            assert_eq!(kept(1), 1);
            assert!(take(1, ttl, t0 + s(4)).is_none());
            assert_eq!(kept(1), 0);
            drop(held);
        });
    }
}
