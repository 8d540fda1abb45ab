//! Latency recording on the request path: per-thread bucket arrays of relaxed
//! atomics, one set per server, read and merged by the stats collector
//! (`collect.rs`), which turns the counts into `hdrhistogram` histograms for
//! the percentiles.
//!
//! Why not an `hdrhistogram::Histogram` per thread: a histogram is not `Sync`,
//! so another thread cannot read one while it is written; the crate's
//! `SyncHistogram` hands each recorder's histogram over a channel on a phase
//! change, which allocates on the recording thread and waits for idle
//! recorders. Here each thread owns one slot (a fixed array, allocated the
//! first time that thread records for that server) and bumps one relaxed
//! atomic per value; the collector reads every slot once a second, so a
//! traffic thread never waits, locks or allocates per request.
//!
//! The buckets are log-linear, like HdrHistogram's: values in microseconds,
//! exact below 64 µs, then 32 buckets per power of two (a bucket is at most
//! 1/32 ≈ 3.1 % of its value wide; the midpoint stands for its values, so a
//! percentile is within ±1.6 %). 1,024 buckets reach 2^36 µs (19 hours);
//! larger values land in the last bucket. Counts are `u32`s that wrap: the
//! collector keeps the `u64` totals from wrapping differences, read every
//! second, long before a bucket could wrap twice.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// What a value measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a server slot in the backend queue (0 when none was full).
    Queue = 0,
    /// Establishing the server connection (0 on a reused one).
    Connect = 1,
    /// From the request's head to the response's first byte (http only).
    FirstByte = 2,
    /// From the request's head (http) or the accept (tcp) to the end.
    Total = 3,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Queue, Phase::Connect, Phase::FirstByte, Phase::Total];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queue => "queue",
            Phase::Connect => "connect",
            Phase::FirstByte => "first_byte",
            Phase::Total => "total",
        }
    }
}

/// Buckets per phase.
pub const BUCKETS: usize = 1024;
const LINEAR: u64 = 64;
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Thread slots per server: threads beyond this share slots (still correct:
/// every bump is an atomic add).
const SLOTS: usize = 16;

/// The bucket of a value in microseconds.
#[inline]
pub fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= 6
    let mantissa = (us >> (exp - SUB_BITS)) - SUB; // 0..32
    let i = LINEAR + u64::from(exp - 6) * SUB + mantissa;
    (i as usize).min(BUCKETS - 1)
}

/// The value (µs) that stands for bucket `i`: its midpoint.
pub fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let exp = (i - LINEAR) / SUB + 6;
    let mantissa = (i - LINEAR) % SUB + SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    mantissa * width + width / 2
}

type Slot = [[AtomicU32; BUCKETS]; 4];

/// One server's latency buckets, one slot per recording thread.
#[derive(Debug, Default)]
pub struct Recorder {
    slots: [OnceLock<Box<Slot>>; SLOTS],
}

/// This thread's slot index, assigned on first use.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

fn new_slot() -> Box<Slot> {
    Box::new(std::array::from_fn(|_| {
        std::array::from_fn(|_| AtomicU32::new(0))
    }))
}

impl Recorder {
    /// Count one value of `phase`.
    #[inline]
    pub fn record(&self, phase: Phase, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let slot = self.slots[thread_slot()].get_or_init(new_slot);
        slot[phase as usize][bucket(us)].fetch_add(1, Relaxed);
    }

    /// Add every slot's raw (wrapping) counts of `phase` into `into`.
    pub fn read(&self, phase: Phase, into: &mut [u32; BUCKETS]) {
        for slot in self.slots.iter().filter_map(OnceLock::get) {
            for (acc, c) in into.iter_mut().zip(&slot[phase as usize]) {
                *acc = acc.wrapping_add(c.load(Relaxed));
            }
        }
    }

    /// Whether anything was ever recorded.
    pub fn used(&self) -> bool {
        self.slots.iter().any(|s| s.get().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_64_and_within_a_32nd_above() {
        for us in 0..64 {
            assert_eq!(value_of(bucket(us)), us);
        }
        let mut last = 0;
        for us in (64..(1u64 << 36)).step_by(9_973) {
            let b = bucket(us);
            assert!(b >= last, "monotonic at {us}");
            last = b;
            let v = value_of(b);
            let err = v.abs_diff(us) as f64 / us as f64;
            assert!(err <= 1.0 / 64.0 + 1e-9, "{us} -> {v}");
        }
        assert_eq!(bucket(64), 64);
        assert_eq!(bucket(65), 64, "64 and 65 share a two-wide bucket");
        assert_eq!(bucket(66), 65);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket((1 << 36) - 1), BUCKETS - 1);
    }

    #[test]
    fn every_thread_counts_and_a_read_sums_the_slots() {
        let r = std::sync::Arc::new(Recorder::default());
        assert!(!r.used());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        r.record(Phase::Connect, Duration::from_micros(1500));
                    }
                    r.record(Phase::Total, Duration::from_secs(3));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut b = [0u32; BUCKETS];
        r.read(Phase::Connect, &mut b);
        assert_eq!(b[bucket(1500)], 2000);
        assert_eq!(b.iter().map(|&c| u64::from(c)).sum::<u64>(), 2000);
        let mut t = [0u32; BUCKETS];
        r.read(Phase::Total, &mut t);
        assert_eq!(t[bucket(3_000_000)], 20);
        assert!(r.used());
    }
}
