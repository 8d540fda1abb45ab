//! `mode = "tcp"`: one client connection (its PROXY header already read by the
//! accept pipeline) → pick a server → connect (retrying other servers) → PROXY
//! header to the server (optional) → pump both directions with splice(2) →
//! count and log. Knows nothing of HTTP.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::balancers::PickCtx;
use crate::connect;
use crate::net::pump::{self, Activity, DirError, End, PumpOpts, Tally};
use crate::net::{Accepted, Conn, copy, proxy_protocol};
use crate::runtime::{BackendRt, FrontendRt};
use crate::server::Server;

/// Serve one accepted client connection of a tcp frontend.
pub async fn serve(a: Accepted, conn: Conn) {
    let started = Instant::now();
    let mut force_stop = conn.force_stop.clone();
    let front = conn.front();
    let backend = &conn.rt.backends[front.backend];
    let client = a.stream.tcp();
    let (src, dst) = (a.client, a.local);

    let now = Instant::now();
    let ctx = PickCtx::tcp(src.ip(), dst, now, crate::net::rand::fastrand_u64());
    // Source persistence works in tcp mode too: the remembered server first.
    let pin = connect::source_pin(backend, src.ip(), now);
    let (server, _guard, upstream, _) = match connect::connect_with(
        backend,
        &ctx,
        pin.server,
        &mut force_stop,
        |_| None,
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            e.count(backend);
            tracing::debug!(frontend = %front.name, client = %src, error = %e, "connection not forwarded");
            if conn.opts.log_connections {
                log_conn(front, backend, src, "-", (0, 0), started, e.as_str());
            }
            return;
        }
    };
    connect::after_pick(backend, pin, server, src.ip(), now);

    backend.counters.conn_total.inc();
    server.state.counters.conn_total.inc();
    let (up, down) = pump::tallies(front, backend, server);
    let end = match preamble(&upstream, server, (src, dst), &a.early, &up).await {
        Ok(()) => {
            let popts = PumpOpts {
                splice: conn.opts.splice,
                idle: front.client_timeout.min(backend.timeouts.server),
            };
            pump::run(client, &upstream, &popts, &up, &down, &mut force_stop).await
        }
        Err(_) => {
            crate::net::io::reset(client);
            End::ServerError
        }
    };
    if end == End::IdleTimeout {
        front.counters.idle_timeouts.inc();
    }
    if conn.opts.log_connections {
        let bytes = (up.total(), down.total());
        log_conn(
            front,
            backend,
            src,
            &server.name,
            bytes,
            started,
            end.as_str(),
        );
    }
}

fn log_conn(
    front: &FrontendRt,
    backend: &BackendRt,
    client: SocketAddr,
    server: &str,
    (bytes_in, bytes_out): (u64, u64),
    started: Instant,
    end: &str,
) {
    tracing::info!(
        target: "fulcrum::conn",
        client = %client, frontend = %front.name, backend = %backend.name, server = %server,
        bytes_in, bytes_out, ms = started.elapsed().as_millis() as u64, end, "conn"
    );
}

/// Write the PROXY header (if the server wants one) and any client bytes that
/// arrived with the client's own PROXY header.
async fn preamble(
    upstream: &TcpStream,
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
