//! The open client connections, for the admin socket: `show sessions` lists
//! them, `shutdown sessions server B/S` closes those a server is serving.
//!
//! Each accepted connection registers one `Session` (its `Conn` holds it and
//! removes it when dropped): an insert and a remove per connection in one of
//! 16 shards, each a small mutex only the admin socket's reads share; per
//! request in http mode, one relaxed store of the server serving it. A kill
//! is a `Notify` the connection's task selects on, next to the daemon's stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

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
    kill: Notify,
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

    /// Resolves when the session is to be closed (`shutdown sessions`) while
    /// a server serves it; a kill that arrives as the exchange ends is
    /// forgotten (it was for the server that no longer serves it).
    pub async fn killed(&self) {
        loop {
            self.kill.notified().await;
            if self.server() != 0 {
                return;
            }
        }
    }

    pub fn kill(&self) {
        // A permit is stored if the task is not waiting right now.
        self.kill.notify_one();
    }
}

/// Every open session, sharded by id.
#[derive(Debug)]
pub struct Sessions {
    shards: [Mutex<HashMap<u64, Arc<Session>>>; SHARDS],
    next: AtomicU64,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            shards: std::array::from_fn(|_| Mutex::default()),
            next: AtomicU64::new(1),
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
            kill: Notify::new(),
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
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), b.killed())
                .await
                .unwrap();
        });
    }
}
