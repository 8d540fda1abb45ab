//! Listening sockets (socket2) and the accept loop with connection admission.
//!
//! Admission is HAProxy's: when the process or the frontend is at `maxconn`, the
//! accept loop stops calling accept(2) until a connection ends. The excess waits in
//! the kernel's listen backlog (`backlog`), and once the backlog is full the kernel
//! drops further SYNs, so clients retry; nothing accepted is ever refused.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::config::Mode;
use crate::l4;
use crate::net::conn::Permits;
use crate::net::proxy_protocol::{self, Decoded, ProxyError};
use crate::net::{Accepted, Conn, ConnOpts, Stream};
use crate::runtime::{FrontendRt, Shared};

/// How long the kernel holds a connection that has sent nothing yet when the
/// frontend defers accepting (`defer_accept`); after it, the connection is
/// handed over anyway and the frontend's own timeouts apply.
pub const DEFER_ACCEPT: Duration = Duration::from_secs(1);

/// Bind one listening socket. `reuseport` lets several threads each own a socket
/// on the same address, with the kernel spreading connections between them.
/// `defer`: TCP_DEFER_ACCEPT (as nginx's `deferred` and HAProxy's
/// `defer-accept`): accept(2) returns a connection once its first bytes are
/// there, so the first read finds them, and a client that connects and says
/// nothing costs no task until `DEFER_ACCEPT` has passed.
pub fn bind(
    addr: SocketAddr,
    backlog: u32,
    reuseport: bool,
    defer: bool,
) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuseport {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux.
    sock.set_nodelay(true)?;
    sock.set_nonblocking(true)?;
    let sock = if defer {
        with_defer_accept(sock, DEFER_ACCEPT)?
    } else {
        sock
    };
    sock.bind(&addr.into())?;
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(sock.into())
}

/// TCP_DEFER_ACCEPT on a listening socket: no safe crate offers it (std's
/// `TcpStreamExt::set_deferaccept` is unstable; rustix and socket2 lack it).
#[allow(unsafe_code)]
fn with_defer_accept(sock: Socket, after: Duration) -> io::Result<Socket> {
    use std::os::fd::AsRawFd;
    let secs = libc::c_int::try_from(after.as_secs()).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid, open descriptor (owned by `sock` for the whole call)
    // and a pointer to a c_int that lives across the call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(sock)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether another socket already listens on `addr`: a plain bind, without
/// SO_REUSEPORT, fails if so. The per-core listeners use SO_REUSEPORT, with
/// which a second instance would bind silently and the kernel would split the
/// traffic between the two; this check refuses that instead.
pub fn probe(addr: SocketAddr) -> io::Result<()> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())
}

/// Everything an accept loop needs, cloned per listener.
#[derive(Clone)]
pub struct AcceptCtx {
    pub shared: Arc<Shared>,
    /// The frontend, by name: stable across snapshots (an index is not).
    pub frontend: Arc<str>,
    pub global_limit: Option<Arc<Semaphore>>,
    pub frontend_limit: Option<Arc<Semaphore>>,
    pub stop_accepting: watch::Receiver<bool>,
    /// This listener alone stops (a reload removed it).
    pub removed: watch::Receiver<bool>,
    /// Dropped by every connection task when it ends: shutdown waits for all of them.
    pub tracker: mpsc::Sender<()>,
    pub opts: Arc<ConnOpts>,
}

async fn admit(
    limit: &Option<Arc<Semaphore>>,
    reached: &crate::stats::Counter,
) -> Option<OwnedSemaphorePermit> {
    let sem = limit.as_ref()?;
    match sem.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => {
            reached.inc();
            sem.clone().acquire_owned().await.ok()
        }
    }
}

/// Accept connections until `stop_accepting` turns true; then serve what is already
/// in the backlog (those clients completed their handshake before the stop) and
/// drop the listener, so new connections are refused.
pub async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
    let mut stop_rx = ctx.stop_accepting.clone();
    let mut removed_rx = ctx.removed.clone();
    // Pinned once: they register with their channels once, not at every accept.
    let stop = crate::shutdown::stopped(&mut stop_rx);
    let removed = crate::shutdown::stopped(&mut removed_rx);
    tokio::pin!(stop, removed);
    // A listener bound to one address gives every accepted socket that local
    // address: no getsockname(2) per connection (a wildcard one needs it).
    let local = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    let mut errors = AcceptErrors::default();
    let mut paused = ctx.shared.frontend_gate(&ctx.frontend);
    loop {
        // `disable frontend`: stop accepting (new clients wait in the backlog)
        // until `enable frontend`.
        if *paused.borrow_and_update() {
            tokio::select! {
                r = paused.wait_for(|p| !*p) => if r.is_err() { break },
                () = &mut stop => break,
                () = &mut removed => break,
            }
            continue;
        }
        // This listener's frontend in the current snapshot; gone = stop.
        let Some(counters) = ctx
            .shared
            .snapshot()
            .frontend(&ctx.frontend)
            .map(|f| f.counters.clone())
        else {
            break;
        };
        let admitted = async {
            let g = admit(&ctx.global_limit, &counters.maxconn_reached).await;
            let f = admit(&ctx.frontend_limit, &counters.maxconn_reached).await;
            (g, f)
        };
        let permits = tokio::select! {
            p = admitted => p,
            () = &mut stop => break,
            () = &mut removed => break,
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            () = &mut removed => break,
            Ok(()) = paused.changed() => continue,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // say so at most once a second.
                    counters.accept_errors.inc();
                    errors.note(&e, local);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        spawn_connection(&ctx, stream, peer, local, permits);
    }
    drain_backlog(&listener, &ctx, local).await;
    // Returning drops the listener (new connections are refused) and this loop's
    // tracker clone, so shutdown sees only the connections still open.
}

/// Accept failures, logged at most once a second with how many there were.
#[derive(Default)]
struct AcceptErrors {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn note(&mut self, e: &io::Error, addr: Option<SocketAddr>) {
        self.unlogged += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        let addr = addr.map_or_else(|| "a wildcard address".to_string(), |a| a.to_string());
        tracing::warn!(
            error = %e,
            count = self.unlogged,
            "accept failed on {addr} ({} time(s) since the last report)",
            self.unlogged
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// Accept whatever is queued right now, within the connection limits, without waiting.
async fn drain_backlog(listener: &TcpListener, ctx: &AcceptCtx, local: Option<SocketAddr>) {
    loop {
        let try_permit = |l: &Option<Arc<Semaphore>>| match l {
            None => Ok(None),
            Some(s) => s.clone().try_acquire_owned().map(Some),
        };
        let (Ok(g), Ok(f)) = (
            try_permit(&ctx.global_limit),
            try_permit(&ctx.frontend_limit),
        ) else {
            return;
        };
        // A zero timeout polls accept once: Ok only if a connection is queued.
        match tokio::time::timeout(Duration::ZERO, listener.accept()).await {
            Ok(Ok((stream, peer))) => spawn_connection(ctx, stream, peer, local, (g, f)),
            _ => return,
        }
    }
}

fn spawn_connection(
    ctx: &AcceptCtx,
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    permits: Permits,
) {
    let rt = ctx.shared.snapshot();
    let Some(fe) = rt.frontend_index(&ctx.frontend) else {
        return;
    };
    let conn = Conn::new(
        (rt, fe),
        ctx.opts.clone(),
        ctx.tracker.clone(),
        permits,
        (ctx.shared.clone(), peer),
    );
    tokio::spawn(async move {
        let mut conn = conn;
        // Boxed: the task itself stays small whichever mode runs.
        let Some(accepted) = Box::pin(pipeline(stream, peer, local, &mut conn)).await else {
            return;
        };
        match conn.front().mode {
            Mode::Tcp => Box::pin(l4::serve(accepted, conn)).await,
            Mode::Http => Box::pin(crate::l7::session::serve(accepted, conn)).await,
        }
    });
}

/// The accept pipeline, the same for both modes: the PROXY header (when the
/// frontend expects one), the per-source limits on the real source, then the
/// TLS handshake (when the frontend terminates TLS). `None`: the connection
/// ends (counted).
async fn pipeline(
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    conn: &mut Conn,
) -> Option<Accepted> {
    let front = conn.front();
    // TCP_NODELAY is inherited from the listener.
    let local = local.unwrap_or_else(|| stream.local_addr().unwrap_or(peer));
    let (client, local, early) = if front.accept_proxy {
        match read_proxy_header(&stream, peer, local, front.client_timeout).await {
            Ok(v) => v,
            Err(e) => {
                if !matches!(e, HeaderError::Gone) {
                    front.counters.proxy_errors.inc();
                }
                tracing::debug!(frontend = %front.name, client = %peer, error = %e, "PROXY header refused");
                return None;
            }
        }
    } else {
        (peer, local, Vec::new())
    };
    if client != peer {
        conn.session.set_client(client);
    }
    let rate_limited = conn.admit_source(client.ip(), local.port()).ok()?;
    let front = conn.front();
    let mut sni = None;
    let (stream, early) = match &front.tls {
        None if front.inspect_sni => {
            let mut early = early;
            sni = peek_sni(front, &stream, &mut early).await;
            (Stream::Tcp(stream), early)
        }
        None => (Stream::Tcp(stream), early),
        Some(tls) => (
            handshake(front, tls, stream, &early, client).await?,
            Vec::new(),
        ),
    };
    Some(Accepted {
        stream,
        client,
        local,
        early,
        rate_limited,
        sni,
    })
}

/// A tcp frontend routing by SNI without terminating TLS: the name in the
/// ClientHello (its bytes kept in `early` for the server), if one came.
async fn peek_sni(
    front: &FrontendRt,
    stream: &TcpStream,
    early: &mut Vec<u8>,
) -> Option<crate::net::tls::TlsInfo> {
    let limit = front.client_timeout.min(SNI_WAIT);
    // Boxed, like the handshake: a plain connection's pipeline future does
    // not carry their state.
    let hello = Box::pin(crate::net::tls::peek_sni(stream, early, limit)).await;
    if !matches!(hello, Some(Some(_))) {
        front.counters.tls_sni_missing.inc();
    }
    hello.map(|name| crate::net::tls::TlsInfo {
        sni: name,
        ..Default::default()
    })
}

/// The server side of the TLS handshake (counted); `None` when it failed.
async fn handshake(
    front: &FrontendRt,
    tls: &crate::tls::FrontendTls,
    stream: TcpStream,
    early: &[u8],
    client: SocketAddr,
) -> Option<Stream> {
    let c = &front.counters;
    let limit = tls.handshake_timeout();
    match Box::pin(crate::net::tls::accept(
        stream,
        tls.config.clone(),
        early,
        limit,
    ))
    .await
    {
        Ok(t) => {
            c.tls_handshakes.inc();
            if t.info.resumed {
                c.tls_resumed.inc();
            }
            Some(Stream::Tls(Box::new(t)))
        }
        Err(e) => {
            match e {
                crate::net::tls::HandshakeError::Timeout => c.tls_handshake_timeouts.inc(),
                crate::net::tls::HandshakeError::Closed => {}
                _ => c.tls_handshake_errors.inc(),
            }
            tracing::debug!(frontend = %front.name, client = %client, error = %e, "TLS handshake failed");
            None
        }
    }
}

/// How long a tcp frontend routing by SNI waits for the ClientHello (or its
/// client timeout, if shorter) before routing without a name.
const SNI_WAIT: Duration = Duration::from_secs(5);

/// Why a PROXY header was not read.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error("PROXY protocol: {0}")]
    Malformed(#[from] ProxyError),
    #[error("PROXY protocol: {0}")]
    Io(io::Error),
    #[error("PROXY protocol: header not received within the client timeout")]
    Timeout,
    #[error("the client closed before its PROXY header")]
    Gone,
}

/// Read a PROXY v1/v2 header; returns (client, destination, bytes read past the
/// header). `decode` bounds the header's length, so the reads are bounded too.
async fn read_proxy_header(
    client: &TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    limit: Duration,
) -> Result<(SocketAddr, SocketAddr, Vec<u8>), HeaderError> {
    let mut buf = Vec::with_capacity(proxy_protocol::V2_MAX);
    let read = async {
        let mut chunk = [0u8; 256];
        loop {
            if let Decoded::Header { addrs, len } = proxy_protocol::decode(&buf)? {
                let rest = buf[len..].to_vec();
                let (src, dst) = addrs.unwrap_or((peer, local));
                return Ok((src, dst, rest));
            }
            let n = crate::net::io::read(client, &mut chunk)
                .await
                .map_err(HeaderError::Io)?;
            if n == 0 {
                return Err(HeaderError::Gone);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(HeaderError::Timeout))
}
