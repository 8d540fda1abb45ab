//! `mode = "tcp"`: one client connection → PROXY header (optional) → pick a server →
//! connect (retrying other servers) → PROXY header to the server (optional) → pump
//! both directions with splice(2) → count and log.

pub mod copy;
pub mod proxy_protocol;
pub mod pump;
pub mod splice;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::balancers::PickCtx;
use crate::config::routing::Persist;
use crate::listener::Conn;
use crate::runtime::BackendRt;
use crate::server::{InflightGuard, Server, ServerState};
use proxy_protocol::{Decoded, ProxyError};
use pump::{End, PumpOpts, Tally};

/// Process-wide settings the L4 path needs besides the snapshot.
#[derive(Debug, Clone)]
pub struct L4Opts {
    pub splice: bool,
    pub log_connections: bool,
    /// http: park idle client connections after this long (`global.idle_park_after`).
    pub park_after: Option<std::time::Duration>,
}

/// Why a connection never reached a server.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("PROXY protocol: {0}")]
    Proxy(#[from] ProxyError),
    #[error("PROXY protocol: {0}")]
    ProxyIo(io::Error),
    #[error("PROXY protocol: header not received within the client timeout")]
    ProxyTimeout,
    #[error("backend \"{0}\": no server available")]
    NoServer(Arc<str>),
    #[error("backend \"{0}\": no server slot freed within the queue timeout")]
    QueueTimeout(Arc<str>),
    #[error("backend \"{backend}\": every connect attempt failed, last: {last}")]
    ConnectFailed { backend: Arc<str>, last: String },
    #[error("client went away before a server was reached")]
    ClientGone,
    #[error("the source is over its per-source limits")]
    Limited,
}

impl ForwardError {
    pub fn as_str(&self) -> &'static str {
        match self {
            ForwardError::Proxy(_) | ForwardError::ProxyIo(_) | ForwardError::ProxyTimeout => {
                "proxy_error"
            }
            ForwardError::NoServer(_) => "no_server",
            ForwardError::QueueTimeout(_) => "queue_timeout",
            ForwardError::ConnectFailed { .. } => "connect_failed",
            ForwardError::ClientGone => "client_gone",
            ForwardError::Limited => "limited",
        }
    }
}

/// Serve one accepted client connection of a tcp frontend.
/// `local`: the listener's address when it is not a wildcard.
pub async fn serve(client: TcpStream, peer: SocketAddr, local: Option<SocketAddr>, mut conn: Conn) {
    let started = Instant::now();
    // Held apart from `conn`, which the per-source limits update.
    let rt = conn.rt.clone();
    let opts = conn.opts.clone();
    let mut force_stop = conn.force_stop.clone();
    let front = &rt.frontends[conn.fe];
    let backend = &rt.backends[front.backend];
    // TCP_NODELAY is inherited from the listener.
    let local = local.unwrap_or_else(|| client.local_addr().unwrap_or(peer));

    let result = async {
        let (src, dst, early) = if front.accept_proxy {
            read_proxy_header(&client, peer, local, front.client_timeout).await?
        } else {
            (peer, local, Vec::new())
        };
        conn.admit_source(src.ip(), dst.port())
            .map_err(|_| ForwardError::Limited)?;
        let now = Instant::now();
        let ctx = PickCtx::tcp(src.ip(), dst, now, fastrand_u64());
        // Source persistence works in tcp mode too: the remembered server first.
        let source = match &backend.persist {
            Some(Persist::Source { expire, .. }) => Some(*expire),
            _ => None,
        };
        let entry = source.and_then(|expire| backend.sources.get(src.ip(), expire, now));
        let prefer = entry
            .and_then(|id| backend.by_id(id))
            .filter(|s| s.takes_persistent());
        let (server, guard, stream, _) =
            connect_with(backend, &ctx, prefer, &mut force_stop, |_| None).await?;
        if source.is_some() {
            if prefer.is_some_and(|p| Arc::ptr_eq(&p.state, &server.state)) {
                backend.counters.persist_hits.inc();
            } else if entry.is_some() {
                backend.counters.persist_misses.inc();
            }
            backend.sources.put(src.ip(), server.state.id, now);
        }
        Ok::<_, ForwardError>((src, dst, early, server, guard, stream))
    }
    .await;

    let (src, dst, early, server, _guard, upstream) = match result {
        Ok(v) => v,
        Err(e) => {
            match &e {
                ForwardError::Proxy(_) | ForwardError::ProxyIo(_) | ForwardError::ProxyTimeout => {
                    front.counters.proxy_errors.inc()
                }
                ForwardError::NoServer(_) | ForwardError::ConnectFailed { .. } => {
                    backend.counters.no_server.inc()
                }
                ForwardError::QueueTimeout(_) => {
                    backend.counters.queue_timeouts.inc();
                    backend.counters.no_server.inc();
                }
                // Limited: counted by the limits themselves.
                ForwardError::ClientGone | ForwardError::Limited => {}
            }
            tracing::debug!(frontend = %front.name, client = %peer, error = %e, "connection not forwarded");
            if opts.log_connections {
                tracing::info!(
                    target: "fulcrum::conn",
                    client = %peer, frontend = %front.name, backend = %backend.name, server = "-",
                    bytes_in = 0u64, bytes_out = 0u64, ms = started.elapsed().as_millis() as u64,
                    end = e.as_str(), "conn"
                );
            }
            return;
        }
    };

    backend.counters.conn_total.inc();
    server.state.counters.conn_total.inc();
    let sc = &server.state.counters;
    let up = Tally::new([
        &front.counters.bytes_in,
        &backend.counters.bytes_in,
        &sc.bytes_in,
    ]);
    let down = Tally::new([
        &front.counters.bytes_out,
        &backend.counters.bytes_out,
        &sc.bytes_out,
    ]);

    let end = match preamble(&upstream, server, src, dst, &early, &up).await {
        Ok(()) => {
            let popts = PumpOpts {
                splice: opts.splice,
                idle: front.client_timeout.min(backend.timeouts.server),
            };
            pump::run(&client, &upstream, &popts, &up, &down, &mut force_stop).await
        }
        Err(_) => {
            pump::reset(&client);
            End::ServerError
        }
    };
    if end == End::IdleTimeout {
        front.counters.idle_timeouts.inc();
    }
    if opts.log_connections {
        tracing::info!(
            target: "fulcrum::conn",
            client = %src, frontend = %front.name, backend = %backend.name, server = %server.name,
            bytes_in = up.total(), bytes_out = down.total(),
            ms = started.elapsed().as_millis() as u64, end = end.as_str(), "conn"
        );
    }
}

/// Write the PROXY header (if the server wants one) and any client bytes that
/// arrived with the client's own PROXY header.
async fn preamble(
    upstream: &TcpStream,
    server: &Server,
    src: SocketAddr,
    dst: SocketAddr,
    early: &[u8],
    up: &Tally<'_>,
) -> Result<(), pump::DirError> {
    let act = pump::Activity::new();
    if let Some(v) = server.send_proxy {
        let mut hdr = Vec::with_capacity(64);
        match v {
            crate::config::ProxyVersion::V1 => proxy_protocol::encode_v1(src, dst, &mut hdr),
            crate::config::ProxyVersion::V2 => proxy_protocol::encode_v2(src, dst, &mut hdr),
        }
        // The header is ours, not the client's: it is not counted as client bytes.
        copy::write_all(upstream, &hdr, &act, None).await?;
    }
    if !early.is_empty() {
        copy::write_all(upstream, early, &act, Some(up)).await?;
    }
    Ok(())
}

/// Read a PROXY v1/v2 header; returns (client, destination, bytes read past the header).
pub(crate) async fn read_proxy_header(
    client: &TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    limit: std::time::Duration,
) -> Result<(SocketAddr, SocketAddr, Vec<u8>), ForwardError> {
    let mut buf = Vec::with_capacity(proxy_protocol::V2_MAX);
    let read = async {
        let mut chunk = [0u8; 256];
        loop {
            match proxy_protocol::decode(&buf)? {
                Decoded::Header { addrs, len } => {
                    let rest = buf[len..].to_vec();
                    let (src, dst) = addrs.unwrap_or((peer, local));
                    return Ok((src, dst, rest));
                }
                Decoded::Incomplete => {}
            }
            // `decode` bounds the header length, so this read loop is bounded too.
            let n = loop {
                match client.try_read(&mut chunk) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        client.readable().await.map_err(ForwardError::ProxyIo)?;
                    }
                    Err(e) => return Err(ForwardError::ProxyIo(e)),
                }
            };
            if n == 0 {
                return Err(ForwardError::ClientGone);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(ForwardError::ProxyTimeout))
}

/// Pick and connect, trying another server after each failure (up to `retries`
/// extra attempts), waiting in the queue when every server is at maxconn; trying `prefer` first (a server persistence pins the client
/// to), and offering the picked server to `reuse` (an idle keep-alive connection
/// pool); the last element says whether the connection was reused.
pub(crate) async fn connect_with<'b>(
    backend: &'b BackendRt,
    ctx: &PickCtx<'_>,
    prefer: Option<&'b Server>,
    force_stop: &mut watch::Receiver<bool>,
    reuse: impl Fn(&Server) -> Option<TcpStream>,
) -> Result<(&'b Server, InflightGuard, TcpStream, bool), ForwardError> {
    let mut avoid: Option<Arc<ServerState>> = None;
    let mut last_err = String::new();
    let mut queued_since: Option<tokio::time::Instant> = None;
    let mut attempts = 0u32;
    loop {
        let notified = backend.pool.slot_freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // A persistent server is tried first; after a failure the balancer picks.
        let preferred = prefer
            .filter(|_| avoid.is_none())
            .and_then(|s| s.state.try_enter(s.maxconn).map(|g| (s, g)));
        let Some((server, guard)) = preferred.or_else(|| take_slot(backend, ctx, avoid.as_ref()))
        else {
            if !backend.any_full() {
                if let Some(_q) = queued_since.take() {
                    backend.counters.queue_cur.dec();
                }
                return Err(if attempts == 0 {
                    ForwardError::NoServer(backend.name.clone())
                } else {
                    ForwardError::ConnectFailed {
                        backend: backend.name.clone(),
                        last: last_err,
                    }
                });
            }
            // Every candidate is at maxconn: wait for a slot, up to the queue timeout.
            let since = *queued_since.get_or_insert_with(|| {
                backend.counters.queued_total.inc();
                backend.counters.queue_cur.inc();
                tokio::time::Instant::now()
            });
            let deadline = since + backend.timeouts.queue;
            tokio::select! {
                _ = &mut notified => continue,
                _ = tokio::time::sleep_until(deadline) => {
                    backend.counters.queue_cur.dec();
                    return Err(ForwardError::QueueTimeout(backend.name.clone()));
                }
                true = crate::shutdown::fired(force_stop) => {
                    backend.counters.queue_cur.dec();
                    return Err(ForwardError::ClientGone);
                }
            }
        };
        if queued_since.take().is_some() {
            backend.counters.queue_cur.dec();
        }
        if let Some(stream) = reuse(server) {
            return Ok((server, guard, stream, true));
        }
        if attempts > 0 {
            backend.counters.retries.inc();
        }
        attempts += 1;
        let t0 = Instant::now();
        match tokio::time::timeout(backend.timeouts.connect, TcpStream::connect(server.addr)).await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                // In tcp mode the time to connect is the latency sample (p2c_ewma).
                let now = Instant::now();
                backend.observe(server, now - t0, now);
                return Ok((server, guard, stream, false));
            }
            Ok(Err(e)) => last_err = format!("server \"{}\": {e}", server.name),
            Err(_) => {
                last_err = format!(
                    "server \"{}\": connect timeout after {}",
                    server.name,
                    crate::config::units::fmt_duration(backend.timeouts.connect)
                )
            }
        }
        server.state.counters.connect_errors.inc();
        backend.counters.connect_errors.inc();
        tracing::debug!(backend = %backend.name, error = %last_err, "connect failed");
        if attempts > backend.retries {
            return Err(ForwardError::ConnectFailed {
                backend: backend.name.clone(),
                last: last_err,
            });
        }
        avoid = Some(server.state.clone());
    }
}

/// Pick a server and take one of its slots. A pick can race another thread for the
/// last slot; then pick again (the full server is no longer eligible).
fn take_slot<'b>(
    backend: &'b BackendRt,
    ctx: &PickCtx<'_>,
    avoid: Option<&Arc<ServerState>>,
) -> Option<(&'b Server, InflightGuard)> {
    let tries = backend.servers.len() + backend.backups.len();
    for _ in 0..tries.max(1) {
        let server = backend.pick(ctx, avoid)?;
        if let Some(g) = server.state.try_enter(server.maxconn) {
            return Some((server, g));
        }
    }
    None
}

/// A cheap per-thread random draw for balancers that want one (xorshift).
pub fn fastrand_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64))
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}
