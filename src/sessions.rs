//! The open client connections, for the admin socket: `show sessions` lists
//! them, `shutdown sessions server B/S` closes those a server is serving.
//!
//! Each accepted connection registers one `Session` (its `Conn` holds it and
//! removes it when dropped): an insert and a remove per connection in one of
//! 16 shards, each a small mutex only the admin socket's reads share; per
//! request in http mode, one relaxed store of the server serving it.
//!
//! The same registry carries the stops an http connection's task waits on
//! (`Halted`): the daemon's graceful and forced stop and a kill. Each is a flag
//! plus one waker per session; the stopping side sets the flag and wakes every
//! session. So a task's wait costs a waker registration (skipped when the waker
//! is unchanged) and three atomic loads per wake-up, instead of polling channel
//! receivers that take a lock each time.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use atomic_waker::AtomicWaker;

const SHARDS: usize = 16;

/// One open client connection.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    /// The client (the PROXY header's address once it was read).
    client: Mutex<SocketAddr>,
    pub frontend: Arc<str>,
    pub since: Instant,
    /// The live-state id of the server serving it now (0: none).
    server: AtomicU64,
    /// `shutdown sessions` asked for it (kept until the task looks).
    kill: AtomicBool,
    /// The task that serves it now, woken by a kill or the daemon's stop.
    waker: AtomicWaker,
}

impl Session {
    pub fn client(&self) -> SocketAddr {
        *self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_client(&self, a: SocketAddr) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = a;
    }

    /// A server (its live-state id) serves it now; 0 when none.
    #[inline]
    pub fn serving(&self, server_id: u64) {
        self.server.store(server_id, Relaxed);
    }

    pub fn server(&self) -> u64 {
        self.server.load(Relaxed)
    }

    /// The task that served it ends (the connection is parked): forget its
    /// waker, which would otherwise keep the finished task's memory.
    pub fn forget_task(&self) {
        drop(self.waker.take());
    }

    pub fn kill(&self) {
        // Kept if the task is not waiting right now: it sees it when it next does.
        self.kill.store(true, SeqCst);
        self.waker.wake();
    }
}

/// Every open session, sharded by id.
#[derive(Debug)]
pub struct Sessions {
    shards: [Mutex<HashMap<u64, Arc<Session>>>; SHARDS],
    next: AtomicU64,
    /// The graceful stop began: connections idle between requests close.
    soft: AtomicBool,
    /// The forced stop: every connection closes.
    force: AtomicBool,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            shards: std::array::from_fn(|_| Mutex::default()),
            next: AtomicU64::new(1),
            soft: AtomicBool::new(false),
            force: AtomicBool::new(false),
        }
    }
}

impl Sessions {
    pub fn open(&self, client: SocketAddr, frontend: Arc<str>) -> Arc<Session> {
        let id = self.next.fetch_add(1, Relaxed);
        let s = Arc::new(Session {
            id,
            client: Mutex::new(client),
            frontend,
            since: Instant::now(),
            server: AtomicU64::new(0),
            kill: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.shard(id).insert(id, s.clone());
        s
    }

    pub fn close(&self, id: u64) {
        self.shard(id).remove(&id);
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.shards[id as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Every open session, oldest first.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<Arc<Session>> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// The daemon's graceful (`force` false) or forced stop: flag it, then wake
    /// every session's task. A session opened meanwhile sees the flag at its
    /// first wait (the flag is set before the list is taken).
    pub fn stop(&self, force: bool) {
        let flag = if force { &self.force } else { &self.soft };
        if flag.swap(true, SeqCst) {
            return;
        }
        for s in self.list() {
            s.waker.wake();
        }
    }

    /// Resolves when `session`'s task should stop: the forced stop, a kill
    /// while a server serves it, or, when it is `idle` between two requests,
    /// the graceful stop. A kill that arrives as the exchange ends is
    /// forgotten (it was for the server that no longer serves it).
    pub fn halted<'a>(&'a self, session: &'a Session, idle: bool) -> Halted<'a> {
        Halted {
            sessions: self,
            session,
            idle,
        }
    }

    /// Close every session server `server_id` is serving; how many.
    pub fn kill_server(&self, server_id: u64) -> usize {
        let mut n = 0;
        for s in self.list().iter().filter(|s| s.server() == server_id) {
            s.kill();
            n += 1;
        }
        n
    }
}

/// See `Sessions::halted`.
pub struct Halted<'a> {
    sessions: &'a Sessions,
    session: &'a Session,
    idle: bool,
}

impl Future for Halted<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Register first, then look: a stop between the two still wakes us.
        self.session.waker.register(cx.waker());
        if self.sessions.force.load(SeqCst) || (self.idle && self.sessions.soft.load(SeqCst)) {
            return Poll::Ready(());
        }
        if self.session.kill.load(Relaxed) {
            if self.session.server() != 0 {
                return Poll::Ready(());
            }
            self.session.kill.store(false, Relaxed);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_until_closed_and_killed_by_server() {
        let reg = Sessions::default();
        let a = reg.open("127.0.0.1:1".parse().unwrap(), "web".into());
        let b = reg.open("127.0.0.1:2".parse().unwrap(), "web".into());
        assert_eq!(reg.list().len(), 2);
        b.serving(7);
        assert_eq!(reg.kill_server(7), 1);
        assert_eq!(reg.kill_server(8), 0);
        b.set_client("10.0.0.1:9".parse().unwrap());
        assert_eq!(reg.list()[1].client().port(), 9);
        reg.close(a.id);
        assert_eq!(reg.list().iter().map(|s| s.id).collect::<Vec<_>>(), [b.id]);
        // The kill was stored: the task sees it when it next waits.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let bounded = |f| {
            rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_millis(200), f)
                    .await
                    .is_ok()
            })
        };
        assert!(bounded(reg.halted(&b, false)));
        // Once no server serves it, a kill is forgotten.
        b.serving(0);
        b.kill();
        assert!(!bounded(reg.halted(&b, false)));
        b.serving(7);
        assert!(
            !bounded(reg.halted(&b, false)),
            "the forgotten kill stays forgotten"
        );
        // The graceful stop ends only idle waits; the forced stop ends all.
        reg.stop(false);
        assert!(!bounded(reg.halted(&b, false)));
        assert!(bounded(reg.halted(&b, true)));
        reg.stop(true);
        assert!(bounded(reg.halted(&b, false)));
    }

    #[test]
    fn a_stop_wakes_a_waiting_task() {
        let reg = Sessions::default();
        let a = reg.open("127.0.0.1:1".parse().unwrap(), "web".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            // The wait is polled (and registers) first; the stop comes after
            // it yielded, and must wake it.
            let stop = async {
                tokio::task::yield_now().await;
                reg.stop(true);
            };
            let wait =
                tokio::time::timeout(std::time::Duration::from_secs(5), reg.halted(&a, false));
            let (woken, ()) = tokio::join!(wait, stop);
            woken.expect("woken by the stop");
        });
    }
}
