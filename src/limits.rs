//! Per-source limits of a frontend (HAProxy's stick tables with `conn_cur`,
//! `conn_rate` and `http_req_rate`; nginx's `limit_conn` and `limit_req`):
//!
//! - `conn_per_source`: connections open at once from one address; the next
//!   one is closed as soon as it is accepted (after its PROXY header, whose
//!   address is the source when there is one);
//! - `conn_rate_per_source`, `req_rate_per_source`: a token bucket per source,
//!   `N` tokens refilled evenly over the period (`"10/s"`: a burst of 10, then
//!   one every 100 ms). A connection without a token is closed at once; an
//!   HTTP request without one gets 429 with `Retry-After`.
//!
//! Sources live in a bounded `crate::table::SourceTable` (`table_size`, least
//! recently used out, O(1)); one not seen for `expire` starts afresh. An entry
//! with open connections is passed over by eviction (a few times) so its count
//! stays true; under a flood of more distinct sources than the table holds,
//! the oldest are forgotten — memory stays bounded, and a request never costs
//! more than one hash, one short lock and one eviction. Sources for which
//! `limits_unless` holds are never looked up.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::routing::{Acl, Rate, SourceLimits};
use crate::table::SourceTable;

/// Why a source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `conn_per_source` connections are open already.
    Conns,
    /// No token left in the connection-rate bucket.
    ConnRate,
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.count),
            at: now,
        }
    }

    /// Take a token: `Ok`, or how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let per_token = rate.per.as_secs_f64() / f64::from(rate.count);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed / per_token).min(f64::from(rate.count));
        self.at = now;
        // A hair under one counts as one: float error must not cost a token.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) * per_token))
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    conns: u32,
    conn: Bucket,
    req: Bucket,
    seen: Instant,
}

/// How many times eviction passes over an entry with open connections.
const EVICTION_PASSES: usize = 8;

/// A frontend's per-source limits and their table.
#[derive(Debug)]
pub struct Limiter {
    cfg: SourceLimits,
    table: SourceTable<Entry>,
}

/// An admitted connection: counted for its source until dropped.
#[derive(Debug)]
pub struct ConnGuard {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(e) = self.limiter.table.shard(self.ip).peek_mut(&self.ip) {
            e.conns = e.conns.saturating_sub(1);
        }
    }
}

impl Limiter {
    pub fn new(cfg: SourceLimits) -> Limiter {
        let table = SourceTable::new(cfg.table_size as usize);
        Limiter { cfg, table }
    }

    pub fn config(&self) -> &SourceLimits {
        &self.cfg
    }

    /// Whether `limits_unless` exempts a connection from `src` to `dst_port`.
    pub fn exempt(&self, acls: &[Acl], src: IpAddr, dst_port: u16) -> bool {
        self.cfg
            .unless
            .as_ref()
            .is_some_and(|c| c.holds_for_connection(acls, src, dst_port))
    }

    fn fresh(&self, now: Instant) -> Entry {
        let unlimited = Rate {
            count: 1,
            per: Duration::from_secs(1),
        };
        Entry {
            conns: 0,
            conn: Bucket::full(self.cfg.conn_rate.unwrap_or(unlimited), now),
            req: Bucket::full(self.cfg.req_rate.unwrap_or(unlimited), now),
            seen: now,
        }
    }

    /// Run `f` on `ip`'s entry (made, or renewed after `expire`, as needed).
    fn with<R>(&self, ip: IpAddr, now: Instant, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut shard = self.table.shard(ip);
        if let Some(e) = shard.get_mut(&ip) {
            if e.conns == 0 && now.saturating_duration_since(e.seen) > self.cfg.expire {
                *e = self.fresh(now);
            }
            e.seen = now;
            return f(e);
        }
        if shard.len() == shard.cap().get() {
            // Full: the least recently seen goes, unless it has connections open.
            for _ in 0..EVICTION_PASSES {
                match shard.peek_lru() {
                    Some((k, e)) if e.conns > 0 => {
                        let k = *k;
                        shard.promote(&k);
                    }
                    _ => break,
                }
            }
        }
        let mut e = self.fresh(now);
        let r = f(&mut e);
        shard.push(ip, e);
        r
    }

    /// A new connection from `ip`: admitted (counted until the guard drops) or
    /// refused.
    pub fn connect(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ConnGuard, Refused> {
        let cfg = &self.cfg;
        self.with(ip, now, |e| {
            if cfg.conn_per_source.is_some_and(|max| e.conns >= max) {
                return Err(Refused::Conns);
            }
            if let Some(rate) = cfg.conn_rate {
                e.conn.take(rate, now).map_err(|_| Refused::ConnRate)?;
            }
            e.conns += 1;
            Ok(())
        })?;
        Ok(ConnGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// A request from `ip`: `Ok`, or the seconds the client should wait
    /// (`Retry-After`, at least 1).
    pub fn request(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let Some(rate) = self.cfg.req_rate else {
            return Ok(());
        };
        self.with(ip, now, |e| e.req.take(rate, now))
            .map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(
        conns: Option<u32>,
        conn_rate: Option<&str>,
        req_rate: Option<&str>,
    ) -> Arc<Limiter> {
        Arc::new(Limiter::new(SourceLimits {
            conn_per_source: conns,
            conn_rate: conn_rate.and_then(Rate::parse),
            req_rate: req_rate.and_then(Rate::parse),
            table_size: 64,
            expire: Duration::from_secs(60),
            unless: None,
        }))
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn concurrent_connections_are_counted_until_dropped() {
        let l = limiter(Some(3), None, None);
        let now = Instant::now();
        let held: Vec<_> = (0..3).map(|_| l.connect(ip(1), now).unwrap()).collect();
        assert_eq!(l.connect(ip(1), now).err(), Some(Refused::Conns));
        assert!(
            l.connect(ip(2), now).is_ok(),
            "another source is not limited"
        );
        drop(held);
        assert!(l.connect(ip(1), now).is_ok());
    }

    #[test]
    fn rates_are_token_buckets() {
        let l = limiter(None, Some("5/s"), Some("10/m"));
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(l.connect(ip(1), t0).unwrap());
        }
        assert_eq!(l.connect(ip(1), t0).err(), Some(Refused::ConnRate));
        // One token every 200 ms.
        assert!(l.connect(ip(1), t0 + Duration::from_millis(150)).is_err());
        assert!(l.connect(ip(1), t0 + Duration::from_millis(210)).is_ok());
        for _ in 0..10 {
            l.request(ip(1), t0).unwrap();
        }
        // The next token in 6 s.
        assert_eq!(l.request(ip(1), t0), Err(6));
        assert_eq!(l.request(ip(1), t0 + Duration::from_secs(5)), Err(1));
        assert_eq!(l.request(ip(1), t0 + Duration::from_secs(6)), Ok(()));
    }

    #[test]
    fn forgotten_after_expire_and_bounded() {
        let l = limiter(None, Some("1/m"), None);
        let t0 = Instant::now();
        drop(l.connect(ip(1), t0).unwrap());
        assert!(l.connect(ip(1), t0 + Duration::from_secs(30)).is_err());
        // Unseen for over `expire`: a new start, whatever the bucket says.
        assert!(l.connect(ip(1), t0 + Duration::from_secs(92)).is_ok());
        for n in 0..10_000 {
            drop(l.connect(ip(100 + n), t0));
        }
        assert!(l.len() <= 64, "{}", l.len());
    }

    #[test]
    fn eviction_passes_over_sources_with_open_connections() {
        let l = limiter(Some(1), None, None);
        let now = Instant::now();
        let held = l.connect(ip(7), now).unwrap();
        for n in 0..5_000 {
            drop(l.connect(ip(1000 + n), now));
        }
        assert_eq!(
            l.connect(ip(7), now).err(),
            Some(Refused::Conns),
            "still counted after a flood of other sources"
        );
        drop(held);
    }
}
