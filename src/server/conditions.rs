//! What decides a server's status besides in-flight counts: the operator's
//! administrative state, the health checks, passive ejection and fail-open —
//! and the weight it takes traffic with (its configured weight, ramped during
//! slow start or set by a script check). One word of bits, combined into the
//! status word the balancers read (`ServerState::refresh`):
//!
//! - MAINT (admin) → `maint`, whatever the checks say;
//! - health DOWN or ejected, unless the backend is failing open → `down`;
//! - DRAIN (admin) → `drain`;
//! - otherwise `up`.
//!
//! A check never changes the administrative state; a command never changes
//! the health.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::Status;

/// The operator's state of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Ready,
    Drain,
    Maint,
}

impl Admin {
    pub fn as_str(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

const ADMIN_MASK: u32 = 0b11;
const HEALTH_DOWN: u32 = 1 << 2;
const EJECTED: u32 = 1 << 3;
const FAIL_OPEN: u32 = 1 << 4;
/// Per mille of the target weight during slow start (1000 = all of it).
pub const RAMP_FULL: u32 = 1000;

/// The last active check of a server, for the stats and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// "ok", or why it failed (`http status 503`, `connection refused`, ...).
    pub result: String,
    /// How long the last check took, in microseconds.
    pub duration_us: u64,
    /// When it ended (ms since the process started, `clock::ms`).
    pub at_ms: u64,
    /// Successes (while down) or failures (while up) in a row so far.
    pub progress: u32,
    /// When the health last changed (ms since start), and the total time down.
    pub changed_at_ms: u64,
    pub down_ms: u64,
}

/// The conditions of one server (lives in its `ServerState`).
#[derive(Debug)]
pub struct Conditions {
    bits: AtomicU32,
    /// The configured weight (or a script's dynamic one).
    pub(super) target: AtomicU32,
    /// Slow start: per mille of `target` in effect.
    pub(super) ramp: AtomicU32,
    /// Passive ejection: failures in a row, ejections so far, and until when
    /// (ms since start; 0 = not ejected).
    pub consecutive_5xx: AtomicU32,
    pub consecutive_connect_failures: AtomicU32,
    pub ejections: AtomicU32,
    pub ejected_until_ms: AtomicU64,
    /// Written by the checker only; read by the stats.
    pub report: Mutex<CheckReport>,
}

impl Conditions {
    pub(super) fn new(weight: u32) -> Conditions {
        Conditions {
            bits: AtomicU32::new(0),
            target: AtomicU32::new(weight),
            ramp: AtomicU32::new(RAMP_FULL),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_connect_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            // Its health "changed" when it came to be: time down counts from
            // here, not from the process's start (a server added at runtime).
            report: Mutex::new(CheckReport {
                changed_at_ms: clock_ms(),
                ..CheckReport::default()
            }),
        }
    }

    fn bits(&self) -> u32 {
        self.bits.load(Relaxed)
    }

    /// Set or clear `bit`; whether it changed.
    pub(super) fn set(&self, bit: u32, on: bool) -> bool {
        let old = if on {
            self.bits.fetch_or(bit, Relaxed)
        } else {
            self.bits.fetch_and(!bit, Relaxed)
        };
        (old & bit != 0) != on
    }

    pub(super) fn set_admin(&self, a: Admin) -> Admin {
        let v = match a {
            Admin::Ready => 0,
            Admin::Drain => 1,
            Admin::Maint => 2,
        };
        let old = self
            .bits
            .fetch_update(Relaxed, Relaxed, |b| Some((b & !ADMIN_MASK) | v))
            .unwrap_or_default();
        admin_of(old)
    }

    pub fn admin(&self) -> Admin {
        admin_of(self.bits())
    }

    pub fn health_up(&self) -> bool {
        self.bits() & HEALTH_DOWN == 0
    }

    pub fn ejected(&self) -> bool {
        self.bits() & EJECTED != 0
    }

    pub fn fail_open(&self) -> bool {
        self.bits() & FAIL_OPEN != 0
    }

    /// The status the balancers see.
    pub(super) fn status(&self) -> Status {
        let b = self.bits();
        match admin_of(b) {
            Admin::Maint => Status::Maint,
            _ if b & (HEALTH_DOWN | EJECTED) != 0 && b & FAIL_OPEN == 0 => Status::Down,
            Admin::Drain => Status::Drain,
            Admin::Ready => Status::Up,
        }
    }

    /// The weight in effect: the target, ramped (never below 1 while ramping
    /// a non-zero target).
    pub(super) fn weight(&self) -> u32 {
        let t = self.target.load(Relaxed);
        let r = self.ramp.load(Relaxed).min(RAMP_FULL);
        if t == 0 || r == RAMP_FULL {
            t
        } else {
            (t * r / RAMP_FULL).max(1)
        }
    }
}

pub(super) const BIT_HEALTH_DOWN: u32 = HEALTH_DOWN;
pub(super) const BIT_EJECTED: u32 = EJECTED;
pub(super) const BIT_FAIL_OPEN: u32 = FAIL_OPEN;

fn admin_of(b: u32) -> Admin {
    match b & ADMIN_MASK {
        0 => Admin::Ready,
        1 => Admin::Drain,
        _ => Admin::Maint,
    }
}

/// A monotonic clock in milliseconds since the process started: cheap to
/// store in an atomic.
pub fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_combines_the_conditions() {
        let c = Conditions::new(4);
        assert_eq!(c.status(), Status::Up);
        c.set(HEALTH_DOWN, true);
        assert_eq!(c.status(), Status::Down);
        c.set_admin(Admin::Maint);
        assert_eq!(c.status(), Status::Maint, "maint wins over health");
        c.set_admin(Admin::Drain);
        assert_eq!(c.status(), Status::Down, "down wins over drain");
        c.set(FAIL_OPEN, true);
        assert_eq!(c.status(), Status::Drain, "failing open ignores health");
        c.set(FAIL_OPEN, false);
        c.set(HEALTH_DOWN, false);
        c.set(EJECTED, true);
        assert_eq!(c.status(), Status::Down);
        c.set(EJECTED, false);
        assert_eq!(c.status(), Status::Drain);
        c.set_admin(Admin::Ready);
        assert_eq!(c.status(), Status::Up);
    }

    #[test]
    fn the_weight_ramps() {
        let c = Conditions::new(10);
        assert_eq!(c.weight(), 10);
        c.ramp.store(0, Relaxed);
        assert_eq!(c.weight(), 1, "never 0 while ramping");
        c.ramp.store(500, Relaxed);
        assert_eq!(c.weight(), 5);
        c.target.store(0, Relaxed);
        assert_eq!(c.weight(), 0, "weight 0 stays 0");
    }
}
