//! The counter sets: per frontend, backend and server, and the process's own.

use super::{Counter, Field, Gauge, Max};

counter_set! {
    /// Per-frontend counters (the HTTP arrays and the rejected-request log are
    /// in `FrontendCounters`).
    pub struct FrontendBase => FrontendBaseValues {
        /// Connections accepted.
        conn_total: Counter,
        /// Connections open now.
        conn_cur: Gauge,
        /// Most connections open at once.
        conn_max: Max,
        /// Bytes clients sent.
        bytes_in: Counter,
        /// Bytes sent back to clients.
        bytes_out: Counter,
        /// Times the accept loop paused because this frontend or the process was at maxconn.
        maxconn_reached: Counter,
        /// Connections rejected for a missing or malformed PROXY protocol header.
        proxy_errors: Counter,
        /// accept(2) failures (out of file descriptors, mostly).
        accept_errors: Counter,
        /// Connections closed at once: their source had `conn_per_source` open.
        limit_conns: Counter,
        /// Connections closed at once: their source was over `conn_rate_per_source`.
        limit_conn_rate: Counter,
        /// http: requests answered 429: their source was over `req_rate_per_source`.
        limit_req_rate: Counter,
        /// Connections closed for inactivity.
        idle_timeouts: Counter,
        /// http: requests received (accepted heads).
        http_requests: Counter,
        /// http: clients too slow to send a request head (408).
        http_request_timeouts: Counter,
        /// http: requests answered by a `deny` rule.
        http_denied: Counter,
        /// http: requests answered by a `redirect` rule.
        http_redirected: Counter,
        /// http: idle client connections parked now.
        http_idle_parked: Gauge,
        /// http: times an idle client connection was parked.
        http_idle_parks: Counter,
        /// tls: handshakes completed.
        tls_handshakes: Counter,
        /// tls: of those, sessions resumed (ticket or cache).
        tls_resumed: Counter,
        /// tls: handshakes that failed (no shared version or cipher, unknown SNI with no default, a client certificate refused, garbage).
        tls_handshake_errors: Counter,
        /// tls: handshakes not done within `handshake_timeout`.
        tls_handshake_timeouts: Counter,
        /// tcp SNI routing: connections whose first bytes gave no server name (not TLS, no SNI, too slow): routed without one.
        tls_sni_missing: Counter,
    }
}

/// HTTP responses by status class: 1xx..5xx, then any other status.
#[derive(Debug, Default)]
pub struct Responses([Counter; 6]);

/// The names of the response classes, in `Responses` order.
pub const RESPONSE_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

impl Responses {
    #[inline]
    pub fn count(&self, status: u16) {
        let i = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        self.0[i].inc();
    }

    pub fn values(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.0[i].get())
    }
}

/// Per-frontend counters: the declared set, plus responses by class, rejected
/// requests by class, and the last rejected requests.
#[derive(Debug, Default)]
pub struct FrontendCounters {
    pub base: FrontendBase,
    /// http: responses sent (fulcrum's own answers included), by class.
    pub http_responses: Responses,
    /// http: requests rejected, one counter per rejection class (`HTTP_REJECT_CLASSES`).
    pub http_rejected: [Counter; HTTP_REJECT_CLASSES.len()],
    /// http: the last rejected requests, newest last (like HAProxy's `show errors`).
    /// Touched only when a request is rejected.
    pub last_rejected: std::sync::Mutex<std::collections::VecDeque<Rejected>>,
}

impl std::ops::Deref for FrontendCounters {
    type Target = FrontendBase;
    fn deref(&self) -> &FrontendBase {
        &self.base
    }
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
/// (`l7::codec::HeadError::class` gives each error its index here).
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

counter_set! {
    /// Per-backend counters (responses by class are in `BackendCounters`).
    pub struct BackendBase => BackendValues {
        /// Connections that reached a server.
        conn_total: Counter,
        /// Most connections open to its servers at once.
        conn_max: Max,
        /// Bytes clients sent.
        bytes_in: Counter,
        /// Bytes servers sent back.
        bytes_out: Counter,
        /// Connect attempts that failed (refused, unreachable, timed out).
        connect_errors: Counter,
        /// TLS to a server that failed: its certificate refused, no common version, a handshake timeout (counted in connect_errors too).
        tls_errors: Counter,
        /// Attempts repeated after a failure (a connect error, or a reused connection the server had closed).
        retries: Counter,
        /// Retries that went to another server than the one that failed.
        redispatches: Counter,
        /// Connections closed because no server was available or every attempt failed.
        no_server: Counter,
        /// Connections that waited for a server slot (every server at maxconn).
        queued_total: Counter,
        /// Connections waiting for a server slot now.
        queue_cur: Gauge,
        /// Most connections waiting at once.
        queue_max: Max,
        /// Queued connections that gave up after `timeouts.queue`.
        queue_timeouts: Counter,
        /// Transfers the client ended early (closed or failed during the response or its upload).
        client_aborts: Counter,
        /// Transfers the server ended early (closed or failed during the response body).
        server_aborts: Counter,
        /// http: malformed responses or servers that closed early (502).
        http_bad_responses: Counter,
        /// http: servers that did not answer within `timeouts.server` (504).
        http_server_timeouts: Counter,
        /// http: requests sent on a kept-alive server connection.
        http_reused: Counter,
        /// http: requests routed to this backend.
        http_requests: Counter,
        /// Requests that went to the server their persistence cookie or source entry named.
        persist_hits: Counter,
        /// Requests whose cookie or source entry named an unusable server, balanced instead.
        persist_misses: Counter,
        /// Ejections not made: `eject.max_percent` of the servers were out already.
        eject_skipped: Counter,
        /// Times every server was down and the backend started failing open.
        fail_opens: Counter,
    }
}

/// Per-backend counters: the declared set and responses by class.
#[derive(Debug, Default)]
pub struct BackendCounters {
    pub base: BackendBase,
    /// http: responses from its servers (and the 502/504 given for them), by class.
    pub http_responses: Responses,
}

impl std::ops::Deref for BackendCounters {
    type Target = BackendBase;
    fn deref(&self) -> &BackendBase {
        &self.base
    }
}

counter_set! {
    /// Per-server counters (live on `ServerState`, carried across reloads).
    pub struct ServerBase => ServerValues {
        /// Connections to this server.
        conn_total: Counter,
        /// Most connections open to it at once.
        conn_max: Max,
        /// Times it was chosen for a connection or request (balancer or persistence).
        picked: Counter,
        /// http: requests sent on a kept-alive connection to it.
        reused: Counter,
        /// Bytes clients sent.
        bytes_in: Counter,
        /// Bytes this server sent back.
        bytes_out: Counter,
        /// Connect attempts that failed.
        connect_errors: Counter,
        /// TLS handshakes with it that failed (counted in connect_errors too).
        tls_errors: Counter,
        /// Attempts on it repeated after a failure (on it or another server).
        retries: Counter,
        /// Transfers the client ended early.
        client_aborts: Counter,
        /// Transfers it ended early (closed or failed during the response body).
        server_aborts: Counter,
        /// Active checks run.
        checks: Counter,
        /// Active checks that failed.
        checks_failed: Counter,
        /// Times the checks took it from up to down.
        went_down: Counter,
        /// Times passive ejection took it out.
        ejections: Counter,
    }
}

/// Per-server counters: the declared set and responses by class.
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub base: ServerBase,
    /// http: its responses (and the 502/504 given for it), by class.
    pub http_responses: Responses,
}

impl std::ops::Deref for ServerCounters {
    type Target = ServerBase;
    fn deref(&self) -> &ServerBase {
        &self.base
    }
}

counter_set! {
    /// The process's own counters.
    pub struct GlobalCounters => GlobalValues {
        /// Configurations swapped in by a reload.
        reloads: Counter,
        /// Reloads refused (the file did not parse or validate; the running configuration stayed).
        reloads_failed: Counter,
        /// Access-log lines dropped because the writer fell behind.
        log_dropped: Counter,
        /// Access-log lines written.
        log_lines: Counter,
        /// Connections closed because a server removed by a reload was still serving them at its backend's `drain_timeout`.
        drain_cut: Counter,
    }
}
