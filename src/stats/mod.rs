//! Counters: relaxed atomics bumped on the network path, read as plain snapshots.
//!
//! Direction names follow HAProxy: `bytes_in` is what clients sent (towards the
//! servers), `bytes_out` is what servers sent back (towards the clients).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge that goes up and down (current connections, queue length).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Per-frontend counters.
#[derive(Debug, Default)]
pub struct FrontendCounters {
    /// Connections accepted.
    pub conn_total: Counter,
    /// Connections open now.
    pub conn_cur: Gauge,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Times the accept loop paused because this frontend or the process was at maxconn.
    pub maxconn_reached: Counter,
    /// Connections rejected for a missing or malformed PROXY protocol header.
    pub proxy_errors: Counter,
    /// accept(2) failures (out of file descriptors, mostly).
    pub accept_errors: Counter,
    /// Connections closed at once: their source had `conn_per_source` open.
    pub limit_conns: Counter,
    /// Connections closed at once: their source was over `conn_rate_per_source`.
    pub limit_conn_rate: Counter,
    /// http: requests answered 429: their source was over `req_rate_per_source`.
    pub limit_req_rate: Counter,
    /// Connections closed for inactivity.
    pub idle_timeouts: Counter,
    /// http: requests received (accepted heads).
    pub http_requests: Counter,
    /// http: responses sent, by status class 1xx..5xx (index 0 = 1xx).
    pub http_responses: [Counter; 5],
    /// http: requests rejected, one counter per rejection class (`HTTP_REJECT_CLASSES`).
    pub http_rejected: [Counter; HTTP_REJECT_CLASSES.len()],
    /// http: clients too slow to send a request head (408).
    pub http_request_timeouts: Counter,
    /// http: requests answered by a `deny` rule.
    pub http_denied: Counter,
    /// http: requests answered by a `redirect` rule.
    pub http_redirected: Counter,
    /// http: idle client connections parked outside the runtime now.
    pub http_idle_parked: Gauge,
    /// http: times an idle client connection was parked.
    pub http_idle_parks: Counter,
    /// http: the last rejected requests, newest last (like HAProxy's `show errors`).
    /// Touched only when a request is rejected.
    pub last_rejected: std::sync::Mutex<std::collections::VecDeque<Rejected>>,
}

/// How many rejected requests each frontend keeps for inspection.
pub const KEEP_REJECTED: usize = 10;

/// One rejected request, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub client: std::net::SocketAddr,
    pub class: &'static str,
    pub status: u16,
    /// The first bytes of what the client sent (at most 512), as received.
    pub head: Vec<u8>,
}

impl FrontendCounters {
    /// Keep `r`, dropping the oldest beyond `KEEP_REJECTED`.
    pub fn keep_rejected(&self, r: Rejected) {
        let mut q = self.last_rejected.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == KEEP_REJECTED {
            q.pop_front();
        }
        q.push_back(r);
    }
}

/// Names of the request-rejection classes, in the order of `http_rejected`
/// (the same names `l7::codec::HeadError::counter` gives).
pub const HTTP_REJECT_CLASSES: [&str; 19] = [
    "bare_crlf",
    "malformed",
    "bad_value",
    "bad_version",
    "uri_too_long",
    "head_too_large",
    "too_many_headers",
    "cl_and_te",
    "bad_content_length",
    "bad_transfer_encoding",
    "te_in_http10",
    "unknown_coding",
    "missing_host",
    "duplicate_host",
    "bad_host",
    "bad_target",
    "bad_expect",
    "connection_framing",
    "bad_path",
];

/// Per-backend counters.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Connections that reached a server.
    pub conn_total: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Connect attempts that failed (refused, unreachable, timed out).
    pub connect_errors: Counter,
    /// Connect attempts repeated on another server after a failure.
    pub retries: Counter,
    /// Connections closed because no server was available or every attempt failed.
    pub no_server: Counter,
    /// Connections that waited for a server slot (every server at maxconn).
    pub queued_total: Counter,
    /// Connections waiting for a server slot now.
    pub queue_cur: Gauge,
    /// Queued connections that gave up after `timeouts.queue`.
    pub queue_timeouts: Counter,
    /// http: malformed responses or servers that closed early (502).
    pub http_bad_responses: Counter,
    /// http: servers that did not answer within `timeouts.server` (504).
    pub http_server_timeouts: Counter,
    /// http: requests sent on a kept-alive server connection.
    pub http_reused: Counter,
    /// http: requests routed to this backend.
    pub http_requests: Counter,
    /// Requests that went to the server their persistence cookie or source entry named.
    pub persist_hits: Counter,
    /// Requests whose cookie or source entry named a server that is unknown or
    /// unusable, and were balanced instead.
    pub persist_misses: Counter,
}

/// Per-server counters (live on `ServerState`, carried across reloads).
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub conn_total: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub connect_errors: Counter,
}

/// A plain copy of a frontend's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontendStats {
    pub name: String,
    pub conn_total: u64,
    pub conn_cur: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub maxconn_reached: u64,
    pub proxy_errors: u64,
    pub accept_errors: u64,
    pub limit_conns: u64,
    pub limit_conn_rate: u64,
    pub limit_req_rate: u64,
    pub idle_timeouts: u64,
    pub http_requests: u64,
    pub http_responses: [u64; 5],
    /// (class, count) for every class with a non-zero count.
    pub http_rejected: Vec<(&'static str, u64)>,
    pub http_request_timeouts: u64,
    pub http_denied: u64,
    pub http_redirected: u64,
    pub http_idle_parked: u64,
    pub http_idle_parks: u64,
    pub last_rejected: Vec<Rejected>,
}

impl FrontendCounters {
    pub fn snapshot(&self, name: &str) -> FrontendStats {
        FrontendStats {
            name: name.to_string(),
            conn_total: self.conn_total.get(),
            conn_cur: self.conn_cur.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            maxconn_reached: self.maxconn_reached.get(),
            proxy_errors: self.proxy_errors.get(),
            accept_errors: self.accept_errors.get(),
            limit_conns: self.limit_conns.get(),
            limit_conn_rate: self.limit_conn_rate.get(),
            limit_req_rate: self.limit_req_rate.get(),
            idle_timeouts: self.idle_timeouts.get(),
            http_requests: self.http_requests.get(),
            http_responses: std::array::from_fn(|i| self.http_responses[i].get()),
            http_rejected: HTTP_REJECT_CLASSES
                .iter()
                .zip(&self.http_rejected)
                .filter(|(_, c)| c.get() > 0)
                .map(|(n, c)| (*n, c.get()))
                .collect(),
            http_request_timeouts: self.http_request_timeouts.get(),
            http_denied: self.http_denied.get(),
            http_redirected: self.http_redirected.get(),
            http_idle_parked: self.http_idle_parked.get(),
            http_idle_parks: self.http_idle_parks.get(),
            last_rejected: self
                .last_rejected
                .lock()
                .map(|q| q.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// A plain copy of a backend's counters and its servers'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub name: String,
    pub conn_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_errors: u64,
    pub retries: u64,
    pub no_server: u64,
    pub queued_total: u64,
    pub queue_cur: u64,
    pub queue_timeouts: u64,
    pub http_bad_responses: u64,
    pub http_server_timeouts: u64,
    pub http_reused: u64,
    pub http_requests: u64,
    pub persist_hits: u64,
    pub persist_misses: u64,
    pub servers: Vec<ServerStats>,
}

impl BackendCounters {
    pub fn snapshot(&self, name: &str, servers: Vec<ServerStats>) -> BackendStats {
        BackendStats {
            name: name.to_string(),
            conn_total: self.conn_total.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            connect_errors: self.connect_errors.get(),
            retries: self.retries.get(),
            no_server: self.no_server.get(),
            queued_total: self.queued_total.get(),
            queue_cur: self.queue_cur.get(),
            queue_timeouts: self.queue_timeouts.get(),
            http_bad_responses: self.http_bad_responses.get(),
            http_server_timeouts: self.http_server_timeouts.get(),
            http_reused: self.http_reused.get(),
            http_requests: self.http_requests.get(),
            persist_hits: self.persist_hits.get(),
            persist_misses: self.persist_misses.get(),
            servers,
        }
    }
}

/// A plain copy of a server's counters and state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub name: String,
    pub status: String,
    pub conn_cur: u64,
    pub conn_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_errors: u64,
}

/// Everything, as one consistent-enough read (each counter is read once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub frontends: Vec<FrontendStats>,
    pub backends: Vec<BackendStats>,
}

impl Snapshot {
    pub fn frontend(&self, name: &str) -> Option<&FrontendStats> {
        self.frontends.iter().find(|f| f.name == name)
    }
    pub fn backend(&self, name: &str) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.name == name)
    }
}

impl BackendStats {
    pub fn server(&self, name: &str) -> Option<&ServerStats> {
        self.servers.iter().find(|s| s.name == name)
    }
}
