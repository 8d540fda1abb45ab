//! Passive ejection (Envoy's outlier detection): live traffic tells which
//! servers fail. `consecutive_connect_failures` failed connects in a row (both
//! modes), or `consecutive_5xx` 5xx responses in a row (http), eject a server
//! for `base_time × n` (its n-th ejection, at most `max_time`); at most
//! `max_percent` of a backend's servers (at least one) are ejected at once.
//! The health supervisor ends ejections when their time is up.
//!
//! On the request path: one atomic read and, on a change, one atomic write per
//! outcome, and only for backends with `eject` set.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::config::health::Eject;
use crate::runtime::BackendRt;
use crate::server::{Server, clock_ms};

/// Why a server was ejected.
#[derive(Debug, Clone, Copy)]
enum Cause {
    Connect(u32),
    Status5xx(u32),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Connect(n) => write!(f, "{n} consecutive connect failures"),
            Cause::Status5xx(n) => write!(f, "{n} consecutive 5xx"),
        }
    }
}

/// A connect to `server` failed.
pub fn connect_failed(backend: &BackendRt, server: &Server) {
    let Some(e) = backend.eject else { return };
    let n = server
        .state
        .cond
        .consecutive_connect_failures
        .fetch_add(1, Relaxed)
        + 1;
    if e.consecutive_connect_failures.is_some_and(|max| n >= max) {
        eject(backend, server, &e, Cause::Connect(n));
    }
}

/// A connect to `server` succeeded.
#[inline]
pub fn connected(backend: &BackendRt, server: &Server) {
    if backend.eject.is_some() {
        reset(&server.state.cond.consecutive_connect_failures);
    }
}

/// `server` answered with `status`.
#[inline]
pub fn responded(backend: &BackendRt, server: &Server, status: u16) {
    let Some(e) = backend.eject else { return };
    let c = &server.state.cond.consecutive_5xx;
    if status < 500 {
        reset(c);
        return;
    }
    let n = c.fetch_add(1, Relaxed) + 1;
    if e.consecutive_5xx.is_some_and(|max| n >= max) {
        eject(backend, server, &e, Cause::Status5xx(n));
    }
}

#[inline]
fn reset(c: &std::sync::atomic::AtomicU32) {
    if c.load(Relaxed) != 0 {
        c.store(0, Relaxed);
    }
}

/// How long the n-th ejection lasts.
pub fn ejection_time(e: &Eject, n: u32) -> Duration {
    e.base_time.saturating_mul(n.max(1)).min(e.max_time)
}

/// Most servers of `total` that may be ejected at once.
pub fn max_ejected(e: &Eject, total: usize) -> usize {
    (total * e.max_percent as usize / 100).max(1)
}

fn eject(backend: &BackendRt, server: &Server, e: &Eject, cause: Cause) {
    let st = &server.state;
    if st.cond.ejected() {
        return;
    }
    let total = backend.all_servers().count();
    let ejected = backend
        .all_servers()
        .filter(|s| s.state.cond.ejected())
        .count();
    if ejected >= max_ejected(e, total) {
        backend.counters.eject_skipped.inc();
        return;
    }
    let n = st.cond.ejections.fetch_add(1, Relaxed) + 1;
    let time = ejection_time(e, n);
    st.cond
        .ejected_until_ms
        .store(clock_ms() + time.as_millis() as u64, Relaxed);
    if st.set_ejected(true) {
        st.counters.ejections.inc();
        st.cond.consecutive_5xx.store(0, Relaxed);
        st.cond.consecutive_connect_failures.store(0, Relaxed);
        tracing::info!(
            backend = %backend.name, server = %server.name,
            "server ejected: {cause}, for {}",
            crate::config::units::fmt_duration(time)
        );
    }
}

/// End the ejections whose time is up (the health supervisor calls it).
pub fn expire(backend: &BackendRt, now_ms: u64) {
    for s in backend.all_servers() {
        let c = &s.state.cond;
        if c.ejected() && c.ejected_until_ms.load(Relaxed) <= now_ms && s.state.set_ejected(false) {
            tracing::info!(backend = %backend.name, server = %s.name, "server back from ejection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e() -> Eject {
        Eject {
            consecutive_5xx: Some(3),
            consecutive_connect_failures: None,
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(100),
            max_percent: 50,
        }
    }

    #[test]
    fn ejections_grow_and_are_capped() {
        let e = e();
        assert_eq!(ejection_time(&e, 1), Duration::from_secs(30));
        assert_eq!(ejection_time(&e, 3), Duration::from_secs(90));
        assert_eq!(ejection_time(&e, 4), Duration::from_secs(100));
        assert_eq!(max_ejected(&e, 4), 2);
        assert_eq!(max_ejected(&e, 1), 1, "always at least one");
        let ten = Eject {
            max_percent: 10,
            ..e
        };
        assert_eq!(max_ejected(&ten, 5), 1);
        assert_eq!(max_ejected(&ten, 30), 3);
    }
}
