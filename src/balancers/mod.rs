//! Load-balancing algorithms behind one small synchronous trait.
//!
//! A balancer is built once per snapshot over that snapshot's servers (tables are
//! precomputed there), then `pick` is called concurrently from every worker thread:
//! it is pure, never allocates, never blocks, and reads live load only through the
//! servers' atomics. `build` is the one place configuration meets implementation.

mod dh;
pub mod ewma;
pub mod hash;
mod lblc;
mod lblcr;
mod lc;
mod least;
pub mod maglev;
mod p2c;
mod random;
mod rr;
mod sh;
mod uri;
mod url_param;
mod wlc;
mod wrr;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::Algorithm;
use crate::server::{Load, Server};

/// Everything a pick may look at besides the servers. Built by the caller once per
/// connection (tcp) or request (http); borrowed, never allocated.
#[derive(Debug, Clone, Copy)]
pub struct PickCtx<'a> {
    /// The client's address (after PROXY protocol, the real client).
    pub src: IpAddr,
    /// The local address the client connected to.
    pub dst: SocketAddr,
    /// Request authority (http only).
    pub host: Option<&'a str>,
    /// Request path without the query (http only).
    pub path: Option<&'a str>,
    /// Raw query string without '?' (http only).
    pub query: Option<&'a str>,
    /// Index of a server that just failed: skip it if anything else is eligible.
    pub avoid: Option<usize>,
    /// The caller's clock: algorithms never read the time themselves.
    pub now: Instant,
    /// The caller's random draw: tests pass fixed values.
    pub rand: u64,
}

impl PickCtx<'_> {
    pub fn tcp(src: IpAddr, dst: SocketAddr, now: Instant, rand: u64) -> PickCtx<'static> {
        PickCtx {
            src,
            dst,
            host: None,
            path: None,
            query: None,
            avoid: None,
            now,
            rand,
        }
    }
}

/// One load-balancing algorithm.
pub trait Balance: Send + Sync + std::fmt::Debug {
    /// Index into `servers` of the server to use, or `None` when none is eligible.
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize>;

    /// Feedback for algorithms that learn: `server` answered (tcp: accepted the
    /// connection) after `latency`. Default: ignored.
    fn observe(&self, _server: usize, _latency: Duration, _now: Instant) {}

    /// Whether `observe` does anything (callers skip the bookkeeping otherwise).
    fn learns(&self) -> bool {
        false
    }

    /// Whether the weights in effect were read once, at build time (a weight
    /// change, slow start included, then needs a new snapshot).
    fn static_weights(&self) -> bool {
        false
    }
}

/// Build the balancer for `algo` over `servers`. The only place configuration
/// meets implementation.
pub fn build(algo: &Algorithm, servers: &[Server]) -> Box<dyn Balance> {
    match algo {
        Algorithm::Rr => Box::new(rr::RoundRobin::default()),
        Algorithm::Wrr => Box::new(wrr::Wrr::new(servers)),
        Algorithm::Lc => Box::new(lc::Lc::new(servers)),
        Algorithm::Wlc => Box::new(wlc::Wlc::new(servers)),
        Algorithm::Random => Box::new(random::Random::new(servers)),
        Algorithm::P2c => Box::new(p2c::P2c),
        Algorithm::P2cEwma { decay } => Box::new(p2c::P2cEwma::new(servers, *decay)),
        Algorithm::Sh { prefix, factor } => Box::new(sh::Sh::new(servers, *prefix, *factor)),
        Algorithm::Dh { factor } => Box::new(dh::Dh::new(servers, *factor)),
        Algorithm::Uri { key, factor } => Box::new(uri::Uri::new(servers, *key, *factor)),
        Algorithm::UrlParam { param, factor } => {
            Box::new(url_param::UrlParam::new(servers, param, *factor))
        }
        Algorithm::Lblc { expire } => Box::new(lblc::Lblc::new(servers, *expire)),
        Algorithm::Lblcr { expire, shrink } => {
            Box::new(lblcr::Lblcr::new(servers, *expire, *shrink))
        }
    }
}

/// The weight a pick should use: the effective one (slow start, admin changes).
#[inline]
pub(crate) fn weight(s: &Server) -> u64 {
    u64::from(s.state.effective_weight())
}

/// `a` is less loaded than `b` by in-flight ÷ weight: compares
/// `(a.inflight + 1) / a.weight < (b.inflight + 1) / b.weight` exactly, in integers.
#[inline]
pub(crate) fn lighter_load(a: Load, b: Load) -> bool {
    (u64::from(a.inflight()) + 1) * u64::from(b.weight())
        < (u64::from(b.inflight()) + 1) * u64::from(a.weight())
}

#[inline]
pub(crate) fn lighter(a: &Server, b: &Server) -> bool {
    lighter_load(a.state.load(), b.state.load())
}

/// Indices `start..n` then `0..start`: a rotated scan without a division per step.
#[inline]
pub(crate) fn rotated(n: usize, start: usize) -> impl Iterator<Item = usize> {
    let start = if n == 0 { 0 } else { start % n };
    (start..n).chain(0..start)
}

/// Scan for the minimum by `better`, starting at `start` (so ties rotate), skipping
/// ineligible servers and preferring anything over `avoid`. One atomic load per
/// server.
#[inline]
pub(crate) fn scan_min(
    servers: &[Server],
    start: usize,
    avoid: Option<usize>,
    better: impl Fn(Load, Load) -> bool,
) -> Option<usize> {
    let mut best: Option<(usize, Load)> = None;
    let mut fallback = None;
    for i in rotated(servers.len(), start) {
        let s = &servers[i];
        let l = s.state.load();
        if !l.usable(s.maxconn) {
            continue;
        }
        if Some(i) == avoid {
            fallback = Some(i);
            continue;
        }
        if best.is_none_or(|(_, b)| better(l, b)) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i).or(fallback)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for balancer unit tests: servers without sockets.
    use std::sync::Arc;

    use crate::server::{Pool, Server, ServerState};

    pub fn servers(weights: &[u32]) -> Vec<Server> {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("s{i}")).collect();
        let named: Vec<(&str, u32)> = names
            .iter()
            .map(String::as_str)
            .zip(weights.iter().copied())
            .collect();
        servers_named(&named)
    }

    /// Servers of one backend (sharing one pool), by name and weight.
    pub fn servers_named(list: &[(&str, u32)]) -> Vec<Server> {
        let pool = Arc::new(Pool::default());
        list.iter()
            .enumerate()
            .map(|(i, &(name, w))| Server {
                name: name.into(),
                addr: ([127, 0, 0, 1], 10_000 + i as u16).into(),
                weight: w,
                maxconn: None,
                send_proxy: None,
                cookie: name.into(),
                backup: false,
                check: None,
                tls: None,
                state: Arc::new(ServerState::new(w, pool.clone())),
            })
            .collect()
    }

    /// Which server each of `n` picks chose, counted per index.
    pub fn histogram(
        b: &dyn super::Balance,
        s: &[Server],
        n: usize,
        mut ctx: impl FnMut(usize) -> super::PickCtx<'static>,
    ) -> Vec<usize> {
        let mut count = vec![0; s.len()];
        for k in 0..n {
            count[b.pick(s, &ctx(k)).expect("a server")] += 1;
        }
        count
    }

    pub fn ctx() -> super::PickCtx<'static> {
        super::PickCtx::tcp(
            [10, 0, 0, 1].into(),
            ([127, 0, 0, 1], 80).into(),
            std::time::Instant::now(),
            0,
        )
    }
}
