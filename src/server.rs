//! Servers: the immutable view a snapshot has (`Server`) and the live state that
//! survives reloads (`ServerState`: status, in-flight count, counters — all atomics).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};

use tokio::sync::Notify;

use crate::config::ProxyVersion;
use crate::stats::{ServerCounters, ServerStats};

/// Administrative / health status of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Up = 0,
    Down = 1,
    Drain = 2,
    Maint = 3,
}

impl Status {
    fn from_u8(v: u8) -> Status {
        match v {
            0 => Status::Up,
            1 => Status::Down,
            2 => Status::Drain,
            _ => Status::Maint,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Drain => "drain",
            Status::Maint => "maint",
        }
    }
}

/// Live state of one server, shared by every snapshot that names it.
#[derive(Debug)]
pub struct ServerState {
    status: AtomicU8,
    /// Connections assigned to this server and not finished (active + connecting).
    inflight: AtomicU32,
    /// Effective weight (configured weight until slow start or the admin change it).
    eweight: AtomicU32,
    pub counters: ServerCounters,
    /// What this server shares with the rest of its backend.
    pool: Arc<Pool>,
}

/// State shared by every server of one backend.
#[derive(Debug, Default)]
pub struct Pool {
    /// Woken whenever a connection leaves a server, so queued connections can retry.
    pub slot_freed: Notify,
    /// In-flight connections over all servers (for bounded-load hashing).
    inflight: AtomicU32,
}

impl Pool {
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Relaxed)
    }
}

impl ServerState {
    pub fn new(weight: u32, pool: Arc<Pool>) -> Self {
        ServerState {
            status: AtomicU8::new(Status::Up as u8),
            inflight: AtomicU32::new(0),
            eweight: AtomicU32::new(weight),
            counters: ServerCounters::default(),
            pool,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Relaxed))
    }

    pub fn set_status(&self, s: Status) {
        self.status.store(s as u8, Relaxed);
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Relaxed)
    }

    pub fn effective_weight(&self) -> u32 {
        self.eweight.load(Relaxed)
    }

    /// For tests and benchmarks of balancers: pretend `n` connections are open.
    pub fn set_inflight(&self, n: u32) {
        let old = self.inflight.swap(n, Relaxed);
        self.pool.inflight.fetch_add(n.wrapping_sub(old), Relaxed);
    }

    pub fn set_effective_weight(&self, w: u32) {
        self.eweight.store(w, Relaxed);
    }

    /// Take a connection slot unless `maxconn` would be exceeded. The slot is
    /// released when the guard drops, on every exit path.
    pub fn try_enter(self: &Arc<Self>, maxconn: Option<u32>) -> Option<InflightGuard> {
        let limit = maxconn.unwrap_or(u32::MAX);
        self.inflight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?;
        self.pool.inflight.fetch_add(1, Relaxed);
        Some(InflightGuard(Arc::clone(self)))
    }
}

/// Holds one in-flight slot on a server.
#[derive(Debug)]
pub struct InflightGuard(Arc<ServerState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
        self.0.pool.inflight.fetch_sub(1, Relaxed);
        self.0.pool.slot_freed.notify_waiters();
    }
}

/// A server as one snapshot sees it: configuration plus the shared live state.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub weight: u32,
    pub maxconn: Option<u32>,
    pub send_proxy: Option<ProxyVersion>,
    pub state: Arc<ServerState>,
}

impl Server {
    /// Usable for a new connection right now: up, with weight, below maxconn.
    #[inline]
    pub fn eligible(&self) -> bool {
        self.state.status() == Status::Up
            && self.state.effective_weight() > 0
            && self.maxconn.is_none_or(|m| self.state.inflight() < m)
    }

    /// Up and weighted but full: a connection may wait for it in the queue.
    pub fn full(&self) -> bool {
        self.state.status() == Status::Up
            && self.state.effective_weight() > 0
            && self.maxconn.is_some_and(|m| self.state.inflight() >= m)
    }

    pub fn snapshot(&self) -> ServerStats {
        let c = &self.state.counters;
        ServerStats {
            name: self.name.to_string(),
            status: self.state.status().as_str().to_string(),
            conn_cur: u64::from(self.state.inflight()),
            conn_total: c.conn_total.get(),
            bytes_in: c.bytes_in.get(),
            bytes_out: c.bytes_out.get(),
            connect_errors: c.connect_errors.get(),
        }
    }
}
