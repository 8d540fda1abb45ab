//! Servers: the immutable view a snapshot has (`Server`) and the live state that
//! survives reloads (`ServerState`: status, in-flight count, counters — all atomics).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

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
///
/// Status, effective weight and in-flight count share one atomic word, so a
/// balancer scanning many servers reads each with a single load.
#[derive(Debug)]
pub struct ServerState {
    /// Unique for the process lifetime (keys per-thread connection pools).
    pub id: u64,
    /// bits 0..16 effective weight, 16..48 in-flight (active + connecting),
    /// 48..56 status, bit 56 set while the weight is 0. Everything that makes a
    /// server unusable sits above the in-flight count, so `word >> 16` orders
    /// servers for `lc` with the unusable ones last (see `balancers::least`).
    word: AtomicU64,
    pub counters: ServerCounters,
    /// What this server shares with the rest of its backend.
    pool: Arc<Pool>,
}

const WEIGHT_MASK: u64 = 0xffff;
pub(crate) const INFLIGHT_SHIFT: u32 = 16;
const INFLIGHT_ONE: u64 = 1 << INFLIGHT_SHIFT;
const INFLIGHT_MASK: u64 = 0xffff_ffff << INFLIGHT_SHIFT;
const STATUS_SHIFT: u32 = 48;
const STATUS_MASK: u64 = 0xff << STATUS_SHIFT;
const NO_WEIGHT: u64 = 1 << 56;
/// Any of these bits set: the server takes no new connection.
pub(crate) const UNUSABLE_MASK: u64 = STATUS_MASK | NO_WEIGHT;

/// One read of a server's live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load(u64);

impl Load {
    #[inline]
    pub fn inflight(self) -> u32 {
        ((self.0 & INFLIGHT_MASK) >> INFLIGHT_SHIFT) as u32
    }
    #[inline]
    pub fn weight(self) -> u32 {
        (self.0 & WEIGHT_MASK) as u32
    }
    /// The whole word, for the least-loaded scans.
    #[inline]
    pub(crate) fn raw(self) -> u64 {
        self.0
    }
    #[inline]
    pub fn status(self) -> Status {
        Status::from_u8(((self.0 & STATUS_MASK) >> STATUS_SHIFT) as u8)
    }
    /// Up, with weight, and below `maxconn`: may take a new connection.
    #[inline]
    pub fn usable(self, maxconn: Option<u32>) -> bool {
        self.0 & UNUSABLE_MASK == 0 && maxconn.is_none_or(|m| self.inflight() < m)
    }
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
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        ServerState {
            id: NEXT_ID.fetch_add(1, Relaxed),
            word: AtomicU64::new(weight_bits(weight)),
            counters: ServerCounters::default(),
            pool,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    #[inline]
    pub fn load(&self) -> Load {
        Load(self.word.load(Relaxed))
    }

    pub fn status(&self) -> Status {
        self.load().status()
    }

    fn update(&self, f: impl Fn(u64) -> Option<u64>) -> bool {
        self.word.fetch_update(Relaxed, Relaxed, f).is_ok()
    }

    pub fn set_status(&self, st: Status) {
        self.update(|w| Some((w & !STATUS_MASK) | (u64::from(st as u8) << STATUS_SHIFT)));
    }

    #[inline]
    pub fn inflight(&self) -> u32 {
        self.load().inflight()
    }

    #[inline]
    pub fn effective_weight(&self) -> u32 {
        self.load().weight()
    }

    pub fn set_effective_weight(&self, weight: u32) {
        let bits = weight_bits(weight);
        self.update(|w| Some((w & !(WEIGHT_MASK | NO_WEIGHT)) | bits));
    }

    /// For tests and benchmarks of balancers: pretend `n` connections are open.
    pub fn set_inflight(&self, n: u32) {
        let old = self.inflight();
        self.update(|w| Some((w & !INFLIGHT_MASK) | (u64::from(n) << INFLIGHT_SHIFT)));
        self.pool.inflight.fetch_add(n.wrapping_sub(old), Relaxed);
    }

    /// Take a connection slot unless `maxconn` would be exceeded. The slot is
    /// released when the guard drops, on every exit path.
    pub fn try_enter(self: &Arc<Self>, maxconn: Option<u32>) -> Option<InflightGuard> {
        let limit = maxconn.unwrap_or(u32::MAX);
        let taken = self.update(|w| {
            let n = ((w & INFLIGHT_MASK) >> INFLIGHT_SHIFT) as u32;
            (n < limit).then_some(w + INFLIGHT_ONE)
        });
        if !taken {
            return None;
        }
        self.pool.inflight.fetch_add(1, Relaxed);
        Some(InflightGuard(Arc::clone(self)))
    }
}

/// The weight field of the word, with the no-weight flag for 0. Weights are
/// capped at 256, the config maximum (the `wlc` scan relies on it).
fn weight_bits(weight: u32) -> u64 {
    let w = u64::from(weight.min(crate::config::defaults::MAX_WEIGHT));
    if w == 0 { NO_WEIGHT } else { w }
}

/// Holds one in-flight slot on a server.
#[derive(Debug)]
pub struct InflightGuard(Arc<ServerState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        // In-flight is never 0 while a guard exists: no borrow into other fields.
        self.0.word.fetch_sub(INFLIGHT_ONE, Relaxed);
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
    /// Cookie persistence: the value naming this server.
    pub cookie: Arc<str>,
    pub state: Arc<ServerState>,
}

impl Server {
    /// Usable for a new connection right now: up, with weight, below maxconn.
    #[inline]
    pub fn eligible(&self) -> bool {
        self.state.load().usable(self.maxconn)
    }

    /// May take a request its persistence cookie or source entry pins to it:
    /// up or draining (weight does not matter), below maxconn.
    pub fn takes_persistent(&self) -> bool {
        let l = self.state.load();
        matches!(l.status(), Status::Up | Status::Drain)
            && self.maxconn.is_none_or(|m| l.inflight() < m)
    }

    /// Up and weighted but full: a connection may wait for it in the queue.
    pub fn full(&self) -> bool {
        let l = self.state.load();
        l.status() == Status::Up
            && l.weight() > 0
            && self.maxconn.is_some_and(|m| l.inflight() >= m)
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
