//! The file-descriptor budget: raise `RLIMIT_NOFILE`, and size what fulcrum keeps
//! open from it.
//!
//! systemd and most shells start a daemon with a soft limit of 1,024 descriptors.
//! Each proxied connection needs two (client and server), so without care a
//! daemon fails at about 500 connections with `Too many open files` on accept and
//! on connect. As HAProxy does, fulcrum raises its soft limit to the hard limit at
//! start, and when the config sets no `global.maxconn` it derives one from the
//! limit, so the excess waits in the listen backlog instead of failing:
//!
//! - `reserve` = 64 (standard streams, pollers, wake-ups, log files) + one per
//!   listening socket + 40 per worker thread (its pollers and spare pipes);
//! - a quarter of the rest goes to idle pooled server connections (capped per
//!   thread, on top of `pool_max_idle`);
//! - `maxconn` = the other three quarters / 2.
//!
//! A configured `maxconn` is kept as it is; when it cannot fit the hard limit,
//! `check` and `run` warn. Splice pipes in tcp mode are not counted: a
//! connection that cannot get one copies instead.

use crate::config::{Config, Threading};

/// The most descriptors fulcrum asks for (an unlimited hard limit is not taken
/// literally: the kernel's `nr_open` caps it anyway).
pub const CAP: u64 = 1 << 20;
/// Descriptors per proxied connection.
pub const PER_CONN: u64 = 2;
/// Fixed reserve, and reserve per worker thread.
const RESERVE: u64 = 64;
const RESERVE_PER_THREAD: u64 = 40;

/// What the daemon runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft limit found at start.
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (`None` = unlimited).
    pub hard: Option<u64>,
    /// Process-wide connection cap: the configured one, or derived from `soft`.
    pub maxconn: u32,
    /// `maxconn` was derived, not configured.
    pub derived: bool,
    /// Idle pooled server connections each worker thread may keep.
    pub pool_per_thread: usize,
}

/// The current (soft, hard) limits.
pub fn current() -> (u64, Option<u64>) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (l.current.unwrap_or(CAP), l.maximum)
}

/// Raise the soft limit to the hard one (at most `CAP`). Returns the soft limit
/// before and after, and the hard limit.
pub fn raise() -> (u64, u64, Option<u64>) {
    let (soft, hard) = current();
    let want = hard.unwrap_or(CAP).min(CAP);
    if want <= soft {
        return (soft, soft, hard);
    }
    let new = rustix::process::Rlimit {
        current: Some(want),
        maximum: hard,
    };
    match rustix::process::setrlimit(rustix::process::Resource::Nofile, new) {
        Ok(()) => (soft, want, hard),
        Err(_) => (soft, soft, hard),
    }
}

/// Listening sockets and worker threads the config will open.
fn shape(cfg: &Config) -> (u64, u64) {
    let threads = cfg.global.threads.max(1) as u64;
    let per_core = cfg.global.threading == Threading::PerCore && threads > 1;
    let per_addr = if per_core { threads } else { 1 };
    let listeners: u64 = cfg
        .frontends
        .iter()
        .map(|f| f.listen.len() as u64 * per_addr)
        .sum();
    (listeners, threads)
}

/// Descriptors kept apart from connections.
pub fn reserve(cfg: &Config) -> u64 {
    let (listeners, threads) = shape(cfg);
    RESERVE + listeners + threads * RESERVE_PER_THREAD
}

/// The budget for `cfg` under soft limit `soft` (pure: the arithmetic above).
pub fn plan(cfg: &Config, soft_before: u64, soft: u64, hard: Option<u64>) -> Budget {
    let (_, threads) = shape(cfg);
    let usable = soft.saturating_sub(reserve(cfg));
    let pool = usable / 4;
    let derived = ((usable - pool) / PER_CONN).clamp(1, u64::from(u32::MAX)) as u32;
    Budget {
        soft_before,
        soft,
        hard,
        maxconn: cfg.global.maxconn.unwrap_or(derived),
        derived: cfg.global.maxconn.is_none(),
        pool_per_thread: (pool / threads).max(1) as usize,
    }
}

/// Descriptors a configured `maxconn` needs at most.
pub fn needed(cfg: &Config, maxconn: u32) -> u64 {
    let conns = u64::from(maxconn) * PER_CONN;
    reserve(cfg) + conns + conns / 3
}

/// The warning `check` and `run` give when the configured `maxconn` cannot fit
/// the hard limit.
pub fn maxconn_warning(cfg: &Config, hard: Option<u64>) -> Option<String> {
    let maxconn = cfg.global.maxconn?;
    let hard = hard?;
    let need = needed(cfg, maxconn);
    (need > hard).then(|| {
        format!(
            "{}: warning: global.maxconn = {maxconn} needs about {need} file descriptors, but the hard limit is {hard}: past about {} connections, accepts and connects fail (raise it with `ulimit -n` or systemd's LimitNOFILE=, or lower maxconn)",
            cfg.file,
            hard.saturating_sub(reserve(cfg)) * 3 / 4 / PER_CONN
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        crate::config::parse("t.toml", text).unwrap()
    }

    const ONE: &str = r#"
[global]
threads = 1
[[frontend]]
name = "f"
listen = ["127.0.0.1:1"]
default_backend = "b"
[[backend]]
name = "b"
servers = [{ name = "s", address = "127.0.0.1:2" }]
"#;

    #[test]
    fn derived_maxconn_leaves_room_for_pools_and_the_reserve() {
        let c = cfg(ONE);
        assert_eq!(reserve(&c), 64 + 1 + 40);
        let b = plan(&c, 1024, 1024, Some(1024));
        // usable 919; pool 229; (919 - 229) / 2
        assert_eq!((b.maxconn, b.derived, b.pool_per_thread), (345, true, 229));
        let b = plan(&c, 1024, 20000, Some(20000));
        assert_eq!(b.maxconn, (19895 - 19895 / 4) as u32 / 2);
        // Two fds per connection, the pool and the reserve fit the soft limit.
        assert!(reserve(&c) + u64::from(b.maxconn) * 2 + b.pool_per_thread as u64 <= 20000);
        let two = cfg(&ONE.replace("threads = 1", "threads = 2"));
        assert_eq!(reserve(&two), 64 + 2 + 80, "per-core: a socket per thread");
    }

    #[test]
    fn a_configured_maxconn_is_kept_and_warned_about_when_it_cannot_fit() {
        let c = cfg(&ONE.replace("threads = 1", "threads = 1\nmaxconn = 30000"));
        let b = plan(&c, 1024, 20000, Some(20000));
        assert_eq!((b.maxconn, b.derived), (30000, false));
        let w = maxconn_warning(&c, Some(20000)).unwrap();
        assert!(
            w.contains("global.maxconn = 30000 needs about 80105"),
            "{w}"
        );
        assert!(maxconn_warning(&c, Some(100_000)).is_none());
        assert!(maxconn_warning(&c, None).is_none());
        assert!(maxconn_warning(&cfg(ONE), Some(1024)).is_none());
    }
}
