//! The connect path both modes share: pick a server (persistence first), wait
//! in the backend queue when every candidate is at `maxconn`, connect within
//! `timeouts.connect`, and on failure try another server (HAProxy's
//! redispatch) up to `retries` times. Source persistence is here too, written
//! once for tcp and http.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::balancers::PickCtx;
use crate::config::routing::Persist;
use crate::runtime::BackendRt;
use crate::server::{InflightGuard, Server, ServerState};

/// The connection as the backend speaks to its servers: plain, or TLS after
/// a handshake within what is left of the connect timeout (a failure is
/// logged and counted in `tls_errors`, then handled as a connect error).
async fn secure(
    backend: &BackendRt,
    server: &Server,
    stream: TcpStream,
    t0: Instant,
) -> Result<crate::net::Stream, String> {
    let Some(tls) = &server.tls else {
        return Ok(crate::net::Stream::Tcp(stream));
    };
    let left = backend.timeouts.connect.saturating_sub(t0.elapsed());
    // Boxed: the handshake's state (about 1.8 KiB) lives only while it runs,
    // instead of inside every plain request's future.
    match Box::pin(crate::net::tls::connect_upstream(
        tls,
        stream,
        server.addr,
        left,
    ))
    .await
    {
        Ok(s) => Ok(s),
        Err(e) => {
            server.state.counters.tls_errors.inc();
            backend.counters.tls_errors.inc();
            tracing::warn!(backend = %backend.name, server = %server.name, error = %e, "TLS to the server failed");
            Err(format!("server \"{}\": {e}", server.name))
        }
    }
}

/// Why no server connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("backend \"{0}\": no server available")]
    NoServer(Arc<str>),
    #[error("backend \"{0}\": no server slot freed within the queue timeout")]
    QueueTimeout(Arc<str>),
    #[error("backend \"{backend}\": every connect attempt failed, last: {last}")]
    Failed {
        backend: Arc<str>,
        last: String,
        /// The last server tried, and how many attempts there were.
        server: Option<Arc<str>>,
        attempts: u32,
        /// The last attempt connected but its TLS handshake failed (a
        /// certificate refused): the server is there but unusable, 502.
        tls: bool,
    },
    #[error("the daemon is stopping")]
    Stopped,
}

impl ConnectError {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectError::NoServer(_) => "no_server",
            ConnectError::QueueTimeout(_) => "queue_timeout",
            ConnectError::Failed { .. } => "connect_failed",
            ConnectError::Stopped => "shutdown",
        }
    }

    /// Count the failure on the backend.
    pub fn count(&self, backend: &BackendRt) {
        match self {
            ConnectError::QueueTimeout(_) => {
                backend.counters.queue_timeouts.inc();
                backend.counters.no_server.inc();
            }
            ConnectError::NoServer(_) | ConnectError::Failed { .. } => {
                backend.counters.no_server.inc()
            }
            ConnectError::Stopped => {}
        }
    }
}

/// A server persistence names for a client, and whether it named one at all
/// (so a hit or a miss is counted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pin<'b> {
    /// The named server, if it may take the connection (up or draining).
    pub server: Option<&'b Server>,
    pub named: bool,
}

/// Source persistence: the server remembered for `src` (none unless the
/// backend persists by source).
pub fn source_pin<'b>(backend: &'b BackendRt, src: IpAddr, now: Instant) -> Pin<'b> {
    let Some(Persist::Source { expire, .. }) = &backend.persist else {
        return Pin::default();
    };
    match backend.sources.get(src, *expire, now) {
        Some(id) => Pin {
            server: backend.by_id(id).filter(|s| s.takes_persistent()),
            named: true,
        },
        None => Pin::default(),
    }
}

/// After the pick: count a persistence hit (the pinned server was used) or
/// miss, and with source persistence remember `src` → `chosen`.
pub fn after_pick(backend: &BackendRt, pin: Pin<'_>, chosen: &Server, src: IpAddr, now: Instant) {
    if pin.named {
        if pin
            .server
            .is_some_and(|p| Arc::ptr_eq(&p.state, &chosen.state))
        {
            backend.counters.persist_hits.inc();
        } else {
            backend.counters.persist_misses.inc();
        }
    }
    if let Some(Persist::Source { .. }) = &backend.persist {
        backend.sources.put(src, chosen.state.id, now);
    }
}

/// A server connection, and what it took to get.
#[derive(Debug)]
pub struct Connected<'b> {
    pub server: &'b Server,
    pub guard: InflightGuard,
    pub stream: crate::net::Stream,
    /// Taken from the idle pool instead of connected.
    pub reused: bool,
    /// Time waiting in the queue, and connecting (the attempt that worked;
    /// zero when reused).
    pub queued: Duration,
    pub connect: Duration,
    /// Attempts that failed before this one.
    pub retries: u32,
}

/// Pick and connect, trying another server after each failure (up to `retries`
/// extra attempts), waiting in the queue when every server is at maxconn;
/// trying `prefer` first (a server persistence pins the client to), and
/// offering the picked server to `reuse` (an idle keep-alive connection pool).
/// A wait in the queue ends early when `stop` completes (the caller's
/// session halted; http's exchange is halted from outside instead and
/// passes `pending()`).
pub async fn connect_with<'b>(
    backend: &'b BackendRt,
    ctx: &PickCtx<'_>,
    prefer: Option<&'b Server>,
    stop: impl std::future::Future<Output = ()>,
    reuse: impl Fn(&Server) -> Option<crate::net::Stream>,
) -> Result<Connected<'b>, ConnectError> {
    let mut at = Attempts::default();
    tokio::pin!(stop);
    loop {
        let notified = backend.pool.slot_freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some((server, guard)) = at.choose(backend, ctx, prefer) else {
            if !backend.any_full() {
                at.leave_queue(backend);
                return Err(at.give_up(backend));
            }
            // Every candidate is at maxconn: wait for a slot, up to the queue timeout.
            let deadline = at.enter_queue(backend) + backend.timeouts.queue;
            tokio::select! {
                _ = &mut notified => continue,
                _ = tokio::time::sleep_until(deadline) => {
                    backend.counters.queue_cur.dec();
                    return Err(ConnectError::QueueTimeout(backend.name.clone()));
                }
                () = &mut stop => {
                    backend.counters.queue_cur.dec();
                    return Err(ConnectError::Stopped);
                }
            }
        };
        at.leave_queue(backend);
        picked_one(backend, server);
        at.count_retry(backend, server);
        let (queued, retries) = (at.queued, at.attempts);
        let done = move |stream, reused, connect| Connected {
            server,
            guard,
            stream,
            reused,
            queued,
            connect,
            retries,
        };
        if let Some(stream) = reuse(server) {
            return Ok(done(stream, true, Duration::ZERO));
        }
        at.attempts += 1;
        let t0 = Instant::now();
        match dial(backend, server, t0).await {
            Ok(stream) => {
                // In tcp mode the time to connect is the latency sample (p2c_ewma).
                let now = Instant::now();
                backend.observe(server, now - t0, now);
                crate::eject::connected(backend, server);
                return Ok(done(stream, false, now - t0));
            }
            Err((error, tls)) => at.failed(backend, server, error, tls),
        }
        if at.attempts > backend.retries {
            return Err(at.give_up(backend));
        }
        server.state.counters.retries.inc();
    }
}

/// Where one connection's attempts stand.
#[derive(Default)]
struct Attempts {
    /// The server that failed last: the next pick avoids it.
    avoid: Option<Arc<ServerState>>,
    /// The servers that failed this connection (only filled on failures).
    failed: Vec<Arc<ServerState>>,
    last_err: String,
    last_server: Option<Arc<str>>,
    /// The last failure was a TLS handshake's.
    last_tls: bool,
    /// Connect attempts made.
    attempts: u32,
    /// Waiting in the backend queue since.
    queued_since: Option<tokio::time::Instant>,
    /// Time spent in the queue so far.
    queued: Duration,
}

impl Attempts {
    /// A persistent server first; after a failure the balancer picks, and
    /// once every primary failed this connection a backup is next (without
    /// backups, the primaries are tried again within `retries`).
    fn choose<'b>(
        &self,
        backend: &'b BackendRt,
        ctx: &PickCtx<'_>,
        prefer: Option<&'b Server>,
    ) -> Option<(&'b Server, InflightGuard)> {
        let preferred = prefer
            .filter(|_| self.avoid.is_none())
            .and_then(|s| s.state.try_enter(s.maxconn).map(|g| (s, g)));
        let primaries_failed = !self.failed.is_empty()
            && !backend.backups.is_empty()
            && backend
                .servers
                .iter()
                .all(|s| !s.eligible() || self.failed.iter().any(|f| Arc::ptr_eq(f, &s.state)));
        preferred.or_else(|| take_slot(backend, ctx, self.avoid.as_ref(), primaries_failed))
    }

    /// Join the backend queue (counted once per connection); when it began.
    fn enter_queue(&mut self, backend: &BackendRt) -> tokio::time::Instant {
        *self.queued_since.get_or_insert_with(|| {
            backend.counters.queued_total.inc();
            backend.counters.queue_cur.inc();
            backend
                .counters
                .queue_max
                .observe(backend.counters.queue_cur.get());
            tokio::time::Instant::now()
        })
    }

    fn leave_queue(&mut self, backend: &BackendRt) {
        if let Some(since) = self.queued_since.take() {
            backend.counters.queue_cur.dec();
            self.queued += since.elapsed();
        }
    }

    /// A retry counts whether it connects or takes a kept-alive connection;
    /// a redispatch when it goes to another server than the one that failed.
    fn count_retry(&self, backend: &BackendRt, server: &Server) {
        if self.attempts == 0 {
            return;
        }
        backend.counters.retries.inc();
        if self
            .avoid
            .as_ref()
            .is_some_and(|a| !Arc::ptr_eq(a, &server.state))
        {
            backend.counters.redispatches.inc();
        }
    }

    /// Connecting to `server` failed: count it, and avoid it next.
    fn failed(&mut self, backend: &BackendRt, server: &Server, error: String, tls: bool) {
        server.state.counters.connect_errors.inc();
        backend.counters.connect_errors.inc();
        crate::eject::connect_failed(backend, server);
        tracing::debug!(backend = %backend.name, %error, "connect failed");
        if !self.failed.iter().any(|f| Arc::ptr_eq(f, &server.state)) {
            self.failed.push(server.state.clone());
        }
        self.last_server = Some(server.name.clone());
        self.last_err = error;
        self.last_tls = tls;
        self.avoid = Some(server.state.clone());
    }

    /// No (more) server to try: none was available, or every attempt failed.
    fn give_up(self, backend: &BackendRt) -> ConnectError {
        if self.attempts == 0 {
            return ConnectError::NoServer(backend.name.clone());
        }
        ConnectError::Failed {
            backend: backend.name.clone(),
            last: self.last_err,
            server: self.last_server,
            attempts: self.attempts,
            tls: self.last_tls,
        }
    }
}

/// Connect to `server` within `timeouts.connect` (with its TLS handshake, if
/// it has one): the stream, or why not and whether TLS was the reason.
async fn dial(
    backend: &BackendRt,
    server: &Server,
    t0: Instant,
) -> Result<crate::net::Stream, (String, bool)> {
    let limit = backend.timeouts.connect;
    match tokio::time::timeout(limit, TcpStream::connect(server.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            secure(backend, server, stream, t0)
                .await
                .map_err(|e| (e, true))
        }
        Ok(Err(e)) => Err((format!("server \"{}\": {e}", server.name), false)),
        Err(_) => Err((
            format!(
                "server \"{}\": connect timeout after {}",
                server.name,
                crate::config::units::fmt_duration(limit)
            ),
            false,
        )),
    }
}

/// Count a pick: on the server (times chosen, when last), and the backend's
/// most connections open at once.
fn picked_one(backend: &BackendRt, server: &Server) {
    server.state.counters.picked.inc();
    server.state.last_pick_s.store(
        crate::stats::collect::coarse_secs() + 1,
        std::sync::atomic::Ordering::Relaxed,
    );
    backend
        .counters
        .conn_max
        .observe(u64::from(backend.pool.inflight()));
}

/// Pick a server and take one of its slots. A pick can race another thread for the
/// last slot; then pick again (the full server is no longer eligible).
fn take_slot<'b>(
    backend: &'b BackendRt,
    ctx: &PickCtx<'_>,
    avoid: Option<&Arc<ServerState>>,
    primaries_failed: bool,
) -> Option<(&'b Server, InflightGuard)> {
    let tries = backend.servers.len() + backend.backups.len();
    for _ in 0..tries.max(1) {
        let server = backend.pick(ctx, avoid, primaries_failed)?;
        if let Some(g) = server.state.try_enter(server.maxconn) {
            return Some((server, g));
        }
    }
    None
}
