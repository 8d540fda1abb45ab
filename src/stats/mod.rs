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

/// What kind of number a field is (Prometheus: `counter` or `gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Counter {
    pub const KIND: Kind = Kind::Counter;
}

impl Gauge {
    pub const KIND: Kind = Kind::Gauge;
}

/// One field of a counter set: its name, kind and one-line meaning — what the
/// stats page, the JSON, Prometheus and the admin socket show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// Declares a set of counters once: the struct of atomics, its plain copy,
/// the table of fields, and a visitor over the copy's values.
macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident => $values:ident {
            $( #[doc = $help:literal] $field:ident : $ty:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $( #[doc = $help] pub $field: $ty, )*
        }

        #[doc = concat!("A plain copy of [`", stringify!($name), "`].")]
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $values {
            $( #[doc = $help] pub $field: u64, )*
        }

        impl $name {
            /// Every field, in declaration order.
            pub const FIELDS: &'static [Field] = &[
                $( Field { name: stringify!($field), kind: $ty::KIND, help: $help.trim_ascii() }, )*
            ];

            /// Read every counter once.
            pub fn values(&self) -> $values {
                $values { $( $field: self.$field.get(), )* }
            }
        }

        impl $values {
            /// Every field with its value, in declaration order.
            pub fn visit(&self, mut f: impl FnMut(&'static Field, u64)) {
                let values = [$( self.$field, )*];
                for (field, v) in $name::FIELDS.iter().zip(values) {
                    f(field, v);
                }
            }
        }
    };
}

counter_set! {
    /// Per-frontend counters (the HTTP arrays and the rejected-request log are
    /// in `FrontendCounters`).
    pub struct FrontendBase => FrontendBaseValues {
        /// Connections accepted.
        conn_total: Counter,
        /// Connections open now.
        conn_cur: Gauge,
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
        /// http: idle client connections parked outside the runtime now.
        http_idle_parked: Gauge,
        /// http: times an idle client connection was parked.
        http_idle_parks: Counter,
    }
}

/// Per-frontend counters: the declared set, plus responses by class, rejected
/// requests by class, and the last rejected requests.
#[derive(Debug, Default)]
pub struct FrontendCounters {
    pub base: FrontendBase,
    /// http: responses sent, by status class 1xx..5xx (index 0 = 1xx).
    pub http_responses: [Counter; 5],
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
    /// Per-backend counters.
    pub struct BackendCounters => BackendValues {
        /// Connections that reached a server.
        conn_total: Counter,
        /// Bytes clients sent.
        bytes_in: Counter,
        /// Bytes servers sent back.
        bytes_out: Counter,
        /// Connect attempts that failed (refused, unreachable, timed out).
        connect_errors: Counter,
        /// Connect attempts repeated on another server after a failure.
        retries: Counter,
        /// Connections closed because no server was available or every attempt failed.
        no_server: Counter,
        /// Connections that waited for a server slot (every server at maxconn).
        queued_total: Counter,
        /// Connections waiting for a server slot now.
        queue_cur: Gauge,
        /// Queued connections that gave up after `timeouts.queue`.
        queue_timeouts: Counter,
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

counter_set! {
    /// Per-server counters (live on `ServerState`, carried across reloads).
    pub struct ServerCounters => ServerValues {
        /// Connections to this server.
        conn_total: Counter,
        /// Bytes clients sent.
        bytes_in: Counter,
        /// Bytes this server sent back.
        bytes_out: Counter,
        /// Connect attempts that failed.
        connect_errors: Counter,
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

/// A plain copy of a frontend's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontendStats {
    pub name: String,
    pub base: FrontendBaseValues,
    pub http_responses: [u64; 5],
    /// (class, count) for every class with a non-zero count.
    pub http_rejected: Vec<(&'static str, u64)>,
    pub last_rejected: Vec<Rejected>,
}

impl std::ops::Deref for FrontendStats {
    type Target = FrontendBaseValues;
    fn deref(&self) -> &FrontendBaseValues {
        &self.base
    }
}

impl FrontendCounters {
    pub fn snapshot(&self, name: &str) -> FrontendStats {
        FrontendStats {
            name: name.to_string(),
            base: self.base.values(),
            http_responses: std::array::from_fn(|i| self.http_responses[i].get()),
            http_rejected: HTTP_REJECT_CLASSES
                .iter()
                .zip(&self.http_rejected)
                .filter(|(_, c)| c.get() > 0)
                .map(|(n, c)| (*n, c.get()))
                .collect(),
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
    pub base: BackendValues,
    pub servers: Vec<ServerStats>,
}

impl std::ops::Deref for BackendStats {
    type Target = BackendValues;
    fn deref(&self) -> &BackendValues {
        &self.base
    }
}

impl BackendCounters {
    pub fn snapshot(&self, name: &str, servers: Vec<ServerStats>) -> BackendStats {
        BackendStats {
            name: name.to_string(),
            base: self.values(),
            servers,
        }
    }
}

/// A plain copy of a server's counters and state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub name: String,
    /// What the balancers see: "up", "down", "drain" or "maint".
    pub status: String,
    /// The operator's state: "ready", "drain" or "maint".
    pub admin: String,
    /// The checks' verdict ("up" or "down"; "up" without checks).
    pub health: String,
    /// Passive ejection under way.
    pub ejected: bool,
    /// Its backend is failing open (every server down).
    pub fail_open: bool,
    /// The weight in effect (slow start, a script's dynamic weight).
    pub weight: u32,
    /// The last active check: "ok" or why it failed ("" before any).
    pub last_check: String,
    /// How long the last check took, and how long ago it ended (ms).
    pub check_duration_ms: u64,
    pub check_age_ms: u64,
    /// Checks in a row against the current health (rise or fall under way).
    pub check_progress: u32,
    /// Since the health last changed, and the total time down (ms).
    pub since_change_ms: u64,
    pub down_total_ms: u64,
    /// Connections open to it now.
    pub conn_cur: u64,
    pub base: ServerValues,
}

impl std::ops::Deref for ServerStats {
    type Target = ServerValues;
    fn deref(&self) -> &ServerValues {
        &self.base
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_set_visits_every_field_once_in_order() {
        let c = BackendCounters::default();
        c.retries.add(3);
        c.queue_cur.inc();
        let mut seen = Vec::new();
        c.values().visit(|f, v| seen.push((f.name, f.kind, v)));
        assert_eq!(seen.len(), BackendCounters::FIELDS.len());
        assert!(seen.contains(&("retries", Kind::Counter, 3)));
        assert!(seen.contains(&("queue_cur", Kind::Gauge, 1)));
        assert_eq!(seen[0].0, "conn_total");
        let help = BackendCounters::FIELDS[0].help;
        assert_eq!(help, "Connections that reached a server.");
        for set in [
            FrontendBase::FIELDS,
            BackendCounters::FIELDS,
            ServerCounters::FIELDS,
        ] {
            let mut names: Vec<_> = set.iter().map(|f| f.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), set.len());
            assert!(set.iter().all(|f| !f.help.is_empty()));
        }
    }
}
