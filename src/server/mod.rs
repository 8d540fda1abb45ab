//! Servers: the immutable view a snapshot has (`Server`) and the live state that
//! survives reloads (`ServerState`: status, in-flight count, counters — all atomics).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use tokio::sync::Notify;

use crate::config::ProxyVersion;
use crate::stats::{ServerCounters, ServerStats};

pub mod conditions;

pub use conditions::{Admin, Conditions, clock_ms};

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
    /// bits 0..9 effective weight (0..=256), 9..34 the `wlc` key (below),
    /// 34..37 the flags, 37..61 in-flight (active + connecting), 61..64 the
    /// flags again. The flags (status in two bits, and a bit set while the weight
    /// is 0) are non-zero when the server takes no new connection; one copy sits
    /// above the in-flight count and one above the key, so `word >> 37` orders
    /// servers for `lc` and `(word >> 9) & 0xfff_ffff` for `wlc`, unusable ones
    /// last. The key is kept up to date by every change, so a scan reads it
    /// instead of dividing (see `balancers::least`).
    word: AtomicU64,
    pub counters: ServerCounters,
    /// Latency buckets (`stats::latency`), filled when histograms are on.
    pub latency: crate::stats::latency::Recorder,
    /// When it was last picked: the collector's coarse clock + 1 (0 = never).
    pub last_pick_s: AtomicU64,
    /// Admin state, health, ejection, fail-open, and the weight in effect
    /// (`conditions.rs`), combined into `word` by `refresh`.
    pub cond: Conditions,
    /// What this server shares with the rest of its backend.
    pool: Arc<Pool>,
}

const WEIGHT_MASK: u64 = 0x1ff;
pub(crate) const KEY_SHIFT: u32 = 9;
/// The largest `wlc` key: a saturated key sends the scan to the exact fallback.
pub(crate) const KEY_MAX: u64 = (1 << 25) - 1;
const KEY_MASK: u64 = KEY_MAX << KEY_SHIFT;
const FLAGS_LOW: u32 = 34;
pub(crate) const INFLIGHT_SHIFT: u32 = 37;
const INFLIGHT_ONE: u64 = 1 << INFLIGHT_SHIFT;
/// In-flight counts are 24 bits: a server takes at most this many at once.
const INFLIGHT_MAX: u32 = (1 << 24) - 1;
const INFLIGHT_MASK: u64 = (INFLIGHT_MAX as u64) << INFLIGHT_SHIFT;
const FLAGS_HIGH: u32 = 61;
/// Flags: status (0 = up) in bits 0..2, bit 2 = weight 0.
const NO_WEIGHT_FLAG: u64 = 0b100;
const FLAGS_MASK: u64 = (0b111 << FLAGS_LOW) | (0b111 << FLAGS_HIGH);
/// Any of these bits set: the server takes no new connection.
pub(crate) const UNUSABLE_MASK: u64 = 0b111 << FLAGS_HIGH;

/// Both copies of `flags`.
fn flag_bits(flags: u64) -> u64 {
    (flags << FLAGS_LOW) | (flags << FLAGS_HIGH)
}

fn flags(word: u64) -> u64 {
    word >> FLAGS_HIGH
}

/// `R[w] = ⌈2^48 / w⌉`: `(a × R[w]) >> 32 = ⌊a × 2^16 / w⌋` exactly for a < 2^16
/// and w ≤ 256 (the reciprocal's rounding stays below 2^-16, less than the
/// distance from a multiple of 1/w to the next integer).
const RECIP: [u64; 257] = {
    let mut t = [0u64; 257];
    let mut w = 1;
    while w <= 256 {
        t[w] = (1u64 << 48).div_ceil(w as u64);
        w += 1;
    }
    t
};

/// The word with its `wlc` key recomputed from its weight and in-flight count:
/// `⌊(in-flight + 1) × 2^16 / weight⌋`, saturated at `KEY_MAX`.
#[inline]
fn rekey(word: u64) -> u64 {
    let w = word & WEIGHT_MASK;
    let a = ((word & INFLIGHT_MASK) >> INFLIGHT_SHIFT) + 1;
    let key = if w == 0 || w > 256 {
        KEY_MAX
    } else if a < 1 << 16 {
        ((a * RECIP[w as usize]) >> 32).min(KEY_MAX)
    } else {
        ((a << 16) / w).min(KEY_MAX)
    };
    (word & !KEY_MASK) | (key << KEY_SHIFT)
}

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
        Status::from_u8((flags(self.0) & 0b11) as u8)
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
            word: AtomicU64::new(rekey(weight_bits(weight))),
            counters: ServerCounters::default(),
            latency: Default::default(),
            last_pick_s: AtomicU64::new(0),
            cond: Conditions::new(weight),
            pool,
        }
    }

    /// Recompute the status and the weight in effect from the conditions.
    pub fn refresh(&self) {
        self.set_status(self.cond.status());
        self.set_effective_weight(self.cond.weight());
    }

    /// The operator's state (never changed by a check); returns the old one.
    pub fn set_admin(&self, a: Admin) -> Admin {
        let old = self.cond.set_admin(a);
        self.refresh();
        old
    }

    /// The checks' verdict; whether it changed.
    pub fn set_health(&self, up: bool) -> bool {
        let changed = self.cond.set(conditions::BIT_HEALTH_DOWN, !up);
        self.refresh();
        changed
    }

    /// Passive ejection; whether it changed.
    pub fn set_ejected(&self, on: bool) -> bool {
        let changed = self.cond.set(conditions::BIT_EJECTED, on);
        self.refresh();
        changed
    }

    /// The backend is failing open: health is ignored; whether it changed.
    pub fn set_fail_open(&self, on: bool) -> bool {
        let changed = self.cond.set(conditions::BIT_FAIL_OPEN, on);
        self.refresh();
        changed
    }

    /// The weight to take traffic with (configured, or a script's).
    pub fn set_target_weight(&self, w: u32) {
        self.cond.target.store(w, Relaxed);
        self.refresh();
    }

    /// Slow start: per mille of the target weight in effect.
    pub fn set_ramp(&self, per_mille: u32) {
        self.cond.ramp.store(per_mille, Relaxed);
        self.refresh();
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
        self.update(|w| {
            let f = (flags(w) & NO_WEIGHT_FLAG) | u64::from(st as u8);
            Some((w & !FLAGS_MASK) | flag_bits(f))
        });
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
        self.update(|w| {
            let keep = (w & !WEIGHT_MASK & !FLAGS_MASK) | flag_bits(flags(w) & 0b11);
            Some(rekey(keep | bits))
        });
    }

    /// For tests and benchmarks of balancers: pretend `n` connections are open.
    pub fn set_inflight(&self, n: u32) {
        let old = self.inflight();
        let n = n.min(INFLIGHT_MAX);
        self.update(|w| {
            Some(rekey(
                (w & !INFLIGHT_MASK) | (u64::from(n) << INFLIGHT_SHIFT),
            ))
        });
        self.pool.inflight.fetch_add(n.wrapping_sub(old), Relaxed);
    }

    /// Take a connection slot unless `maxconn` would be exceeded. The slot is
    /// released when the guard drops, on every exit path.
    pub fn try_enter(self: &Arc<Self>, maxconn: Option<u32>) -> Option<InflightGuard> {
        let limit = maxconn.unwrap_or(u32::MAX).min(INFLIGHT_MAX);
        let before = self
            .word
            .fetch_update(Relaxed, Relaxed, |w| {
                let n = ((w & INFLIGHT_MASK) >> INFLIGHT_SHIFT) as u32;
                (n < limit).then(|| rekey(w + INFLIGHT_ONE))
            })
            .ok()?;
        let open = Load(before).inflight() + 1;
        self.counters.conn_max.observe(u64::from(open));
        self.pool.inflight.fetch_add(1, Relaxed);
        Some(InflightGuard(Arc::clone(self)))
    }
}

/// The weight field of the word, with the no-weight flag for 0. Weights are
/// capped at 256, the config maximum (the `wlc` scan relies on it).
fn weight_bits(weight: u32) -> u64 {
    let w = u64::from(weight.min(crate::config::defaults::MAX_WEIGHT));
    if w == 0 { flag_bits(NO_WEIGHT_FLAG) } else { w }
}

/// Holds one in-flight slot on a server.
#[derive(Debug)]
pub struct InflightGuard(Arc<ServerState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        // In-flight is never 0 while a guard exists: no borrow into other fields.
        self.0.update(|w| Some(rekey(w - INFLIGHT_ONE)));
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
    /// Takes traffic only when no primary can.
    pub backup: bool,
    /// Active checks' rise and fall, when it is checked.
    pub check: Option<(u32, u32)>,
    /// TLS to it (its own settings, or its backend's).
    pub tls: Option<Arc<crate::tls::UpstreamTls>>,
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
        let cond = &self.state.cond;
        let now = clock_ms();
        let report = cond.report.lock().map(|r| r.clone()).unwrap_or_default();
        let down_now = if cond.health_up() {
            0
        } else {
            now.saturating_sub(report.changed_at_ms)
        };
        let last_pick = self.state.last_pick_s.load(Relaxed);
        ServerStats {
            name: self.name.to_string(),
            id: self.state.id,
            addr: self.addr.to_string(),
            backup: self.backup,
            status: self.state.status().as_str().to_string(),
            admin: cond.admin().as_str().to_string(),
            health: if cond.health_up() { "up" } else { "down" }.to_string(),
            ejected: cond.ejected(),
            fail_open: cond.fail_open(),
            weight: self.state.effective_weight(),
            weight_configured: cond.target.load(Relaxed),
            throttle_pct: cond.ramp.load(Relaxed).min(conditions::RAMP_FULL) / 10,
            conn_limit: self.maxconn.map_or(0, u64::from),
            checked: self.check.is_some(),
            rise: self.check.map_or(0, |c| c.0),
            fall: self.check.map_or(0, |c| c.1),
            last_check: report.result.clone(),
            check_duration_ms: report.duration_us / 1000,
            check_age_ms: if report.at_ms == 0 {
                0
            } else {
                now.saturating_sub(report.at_ms)
            },
            check_progress: report.progress,
            since_change_ms: now.saturating_sub(report.changed_at_ms),
            down_total_ms: report.down_ms + down_now,
            last_pick_s: (last_pick > 0)
                .then(|| crate::stats::collect::coarse_secs().saturating_sub(last_pick - 1)),
            conn_cur: u64::from(self.state.inflight()),
            base: c.values(),
            http_responses: c.http_responses.values(),
            ..ServerStats::default()
        }
    }
}
