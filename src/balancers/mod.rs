//! Load-balancing algorithms behind one small synchronous trait.
//!
//! A balancer is built once per snapshot over that snapshot's servers (tables are
//! precomputed there), then `pick` is called concurrently from every worker thread:
//! it is pure, never allocates, never blocks, and reads live load only through the
//! servers' atomics. `build` is the one place configuration meets implementation.

mod rr;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::config::Algorithm;
use crate::server::Server;

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
}

/// Build the balancer for `algo` over `servers`.
pub fn build(algo: &Algorithm, _servers: &[Server]) -> Box<dyn Balance> {
    match algo {
        Algorithm::Rr => Box::new(rr::RoundRobin::default()),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for balancer unit tests: servers without sockets.
    use std::sync::Arc;

    use tokio::sync::Notify;

    use crate::server::{Server, ServerState};

    pub fn servers(weights: &[u32]) -> Vec<Server> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Server {
                name: format!("s{i}").into(),
                addr: ([127, 0, 0, 1], 10_000 + i as u16).into(),
                weight: w,
                maxconn: None,
                send_proxy: None,
                state: Arc::new(ServerState::new(w, Arc::new(Notify::new()))),
            })
            .collect()
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
