//! `mode = "tcp"`: one client connection (its PROXY header already read by the
//! accept pipeline) → pick a server → connect (retrying other servers) → PROXY
//! header to the server (optional) → pump both directions with splice(2) →
//! count and log. Knows nothing of HTTP.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::balancers::PickCtx;
use crate::connect;
use crate::net::pump::{self, Activity, DirError, End, PumpOpts, Tally};
use crate::net::{Accepted, Conn, copy, proxy_protocol};
use crate::runtime::BackendRt;
use crate::server::Server;
use crate::stats::access::{Record, Short};
use crate::stats::latency::Phase;

/// Serve one accepted client connection of a tcp frontend.
pub async fn serve(a: Accepted, conn: Conn) {
    let started = Instant::now();
    let front = conn.front();
    let client = &a.stream;
    let (src, dst) = (a.client, a.local);
    let backend = &conn.rt.backends[route(front, src, dst, a.stream.tls().or(a.sni.as_ref()))];

    let now = Instant::now();
    let ctx = PickCtx::tcp(src.ip(), dst, now, crate::net::rand::fastrand_u64());
    // Source persistence works in tcp mode too: the remembered server first.
    let pin = connect::source_pin(backend, src.ip(), now);
    // A wait in the backend queue ends with the daemon's forced stop.
    let halted = conn.shared.sessions.halted(&conn.session, false);
    let c = match connect::connect_with(backend, &ctx, pin.server, halted, |_| None).await {
        Ok(c) => c,
        Err(e) => {
            e.count(backend);
            tracing::debug!(frontend = %front.name, client = %src, error = %e, "connection not forwarded");
            let done = Done {
                server: None,
                bytes: (0, 0),
                end: e.as_str(),
                timing: None,
            };
            finish(&conn, backend, src, started, done);
            return;
        }
    };
    let (server, upstream) = (c.server, &c.stream);
    connect::after_pick(backend, pin, server, src.ip(), now);

    backend.counters.conn_total.inc();
    server.state.counters.conn_total.inc();
    let (up, down) = pump::tallies(front, backend, server);
    conn.session.serving(server.state.id);
    let end = match preamble(upstream, server, (src, dst), &a.early, &up).await {
        Ok(()) => {
            let popts = PumpOpts {
                splice: conn.opts.splice,
                idle: front.client_timeout.min(backend.timeouts.server),
            };
            // `shutdown sessions` ends it like the daemon's forced stop.
            tokio::select! {
                end = pump::run(client, upstream, &popts, &up, &down) => end,
                () = conn.shared.sessions.halted(&conn.session, false) => End::Shutdown,
            }
        }
        Err(_) => {
            crate::net::io::reset(client);
            End::ServerError
        }
    };
    match end {
        End::IdleTimeout => front.counters.idle_timeouts.inc(),
        End::ClientError => {
            backend.counters.client_aborts.inc();
            server.state.counters.client_aborts.inc();
        }
        End::ServerError => {
            backend.counters.server_aborts.inc();
            server.state.counters.server_aborts.inc();
        }
        _ => {}
    }
    let done = Done {
        server: Some(server),
        bytes: (up.total(), down.total()),
        end: end.as_str(),
        timing: Some((c.queued, c.connect, c.retries)),
    };
    finish(&conn, backend, src, started, done);
}

/// How a tcp connection ended.
struct Done<'a> {
    server: Option<&'a Server>,
    /// (client to server, server to client).
    bytes: (u64, u64),
    end: &'static str,
    /// Queue wait, connect time, retries (when a server connection was made).
    timing: Option<(Duration, Duration, u32)>,
}

/// The termination state (`l7::session::trace`) of a tcp end.
fn term(end: &str) -> [u8; 2] {
    match end {
        "closed" => *b"--",
        "client_error" => *b"CD",
        "server_error" => *b"SD",
        "idle_timeout" => *b"cD",
        "shutdown" => *b"KD",
        "no_server" => *b"RC",
        "connect_failed" => *b"SC",
        "queue_timeout" => *b"sQ",
        _ => *b"??",
    }
}

/// The server's latency buckets and the access log line of a finished connection.
fn finish(conn: &Conn, backend: &BackendRt, client: SocketAddr, started: Instant, d: Done<'_>) {
    let total = started.elapsed();
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    if conn.opts.histograms
        && let (Some(s), Some((queued, connect, _))) = (d.server, d.timing)
    {
        let rec = &s.state.latency;
        rec.record(Phase::Queue, queued);
        rec.record(Phase::Connect, connect);
        rec.record(Phase::Total, total);
    }
    let Some(log) = &conn.opts.access_log else {
        return;
    };
    let mut r = Record {
        at: Some(SystemTime::now() - total),
        client: Some(client),
        tcp: true,
        frontend: Short::new(&conn.front().name),
        backend: Short::new(&backend.name),
        bytes_in: d.bytes.0,
        bytes_out: d.bytes.1,
        queue_us: d.timing.map(|t| us(t.0)),
        connect_us: d.timing.map(|t| us(t.1)),
        total_us: us(total),
        retries: d.timing.map_or(0, |t| t.2),
        term: term(d.end),
        ..Record::default()
    };
    if let Some(s) = d.server {
        r.server.set(&s.name);
    }
    log.log(r);
}

/// The backend: the frontend's `use_backend` rules (on SNI, source, port),
/// else its default.
fn route(
    front: &crate::runtime::FrontendRt,
    src: SocketAddr,
    dst: SocketAddr,
    tls: Option<&crate::net::tls::TlsInfo>,
) -> usize {
    if front.rules.is_empty() {
        return front.backend;
    }
    let view = crate::rules::acl::ReqView {
        method: "",
        path: "",
        query: None,
        host: None,
        headers: &[],
        src: src.ip(),
        dst_port: dst.port(),
        tls,
    };
    match crate::rules::decide(&front.rules, &front.acls, &view, front.backend, 0).route {
        crate::rules::Route::Backend(b) => b,
        _ => front.backend,
    }
}

/// Write the PROXY header (if the server wants one) and any client bytes that
/// arrived with the client's own PROXY header.
async fn preamble(
    upstream: &crate::net::Stream,
    server: &Server,
    (src, dst): (SocketAddr, SocketAddr),
    early: &[u8],
    up: &Tally<'_>,
) -> Result<(), DirError> {
    let act = Activity::new();
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
