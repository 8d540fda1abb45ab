//! Peak-EWMA of response times (the estimator linkerd and Finagle use for
//! latency-aware balancing): a sample above the current value replaces it at once
//! (react to a slowdown immediately), a sample below it is blended in with weight
//! `1 - exp(-elapsed / decay)` (recover gradually). Time is passed in; nothing here
//! reads a clock. Lock-free: concurrent updates may lose one of two racing samples.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct PeakEwma {
    /// Current estimate in nanoseconds, as f64 bits; 0 = no sample yet.
    value: AtomicU64,
    /// When the last sample arrived, in nanoseconds since `epoch`.
    stamp: AtomicU64,
    epoch: Instant,
    decay_ns: f64,
}

impl PeakEwma {
    pub fn new(decay: Duration, epoch: Instant) -> PeakEwma {
        PeakEwma {
            value: AtomicU64::new(0f64.to_bits()),
            stamp: AtomicU64::new(0),
            epoch,
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    /// The current estimate in nanoseconds (0 before the first sample).
    #[inline]
    pub fn get(&self) -> f64 {
        f64::from_bits(self.value.load(Relaxed))
    }

    pub fn observe(&self, sample: Duration, now: Instant) {
        let sample = sample.as_nanos() as f64;
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let prev = self.get();
        let next = if prev == 0.0 || sample > prev {
            sample
        } else {
            let elapsed = now_ns.saturating_sub(self.stamp.load(Relaxed)) as f64;
            let w = (-elapsed / self.decay_ns).exp();
            prev * w + sample * (1.0 - w)
        };
        self.value.store(next.to_bits(), Relaxed);
        self.stamp.store(now_ns, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_at_once_and_decays_gradually() {
        let t0 = Instant::now();
        let e = PeakEwma::new(Duration::from_secs(10), t0);
        assert_eq!(e.get(), 0.0);
        e.observe(Duration::from_millis(10), t0);
        assert_eq!(e.get(), 10e6);
        e.observe(Duration::from_millis(50), t0 + Duration::from_secs(1));
        assert_eq!(e.get(), 50e6, "a slower sample is taken whole");
        // 10 s later (one time constant), a fast sample moves it 1 - 1/e of the way.
        e.observe(Duration::from_millis(10), t0 + Duration::from_secs(11));
        let want = 50e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp());
        assert!((e.get() - want).abs() < 1.0, "{} vs {want}", e.get());
        // Immediately after, a fast sample barely moves it.
        let before = e.get();
        e.observe(Duration::from_millis(10), t0 + Duration::from_secs(11));
        assert_eq!(e.get(), before);
    }
}
