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
use crate::l4::{self, L4Opts};
use crate::runtime::{Runtime, Shared};

/// Bind one listening socket. `reuseport` lets several threads each own a socket
/// on the same address, with the kernel spreading connections between them.
pub fn bind(addr: SocketAddr, backlog: u32, reuseport: bool) -> io::Result<std::net::TcpListener> {
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
    sock.bind(&addr.into())?;
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(sock.into())
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
    pub frontend: usize,
    pub global_limit: Option<Arc<Semaphore>>,
    pub frontend_limit: Option<Arc<Semaphore>>,
    pub stop_accepting: watch::Receiver<bool>,
    pub force_stop: watch::Receiver<bool>,
    /// Dropped by every connection task when it ends: shutdown waits for all of them.
    pub tracker: mpsc::Sender<()>,
    pub l4: Arc<L4Opts>,
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

type Permits = (Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>);

/// Accept connections until `stop_accepting` turns true; then serve what is already
/// in the backlog (those clients completed their handshake before the stop) and
/// drop the listener, so new connections are refused.
pub async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
    let mut stop = ctx.stop_accepting.clone();
    // A listener bound to one address gives every accepted socket that local
    // address: no getsockname(2) per connection (a wildcard one needs it).
    let local = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    let mut errors = AcceptErrors::default();
    loop {
        let counters = ctx.shared.snapshot().frontends[ctx.frontend]
            .counters
            .clone();
        let admitted = async {
            let g = admit(&ctx.global_limit, &counters.maxconn_reached).await;
            let f = admit(&ctx.frontend_limit, &counters.maxconn_reached).await;
            (g, f)
        };
        let permits = tokio::select! {
            p = admitted => p,
            true = crate::shutdown::fired(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
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
            true = crate::shutdown::fired(&mut stop) => break,
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

/// What an accepted connection holds for its whole life, whichever task serves
/// it (an idle HTTP connection that was parked and resumed gets a new task but
/// keeps this): its runtime snapshot, its admission permits and the shutdown
/// tracker. Dropping it counts the connection as closed.
pub struct Conn {
    pub rt: Arc<Runtime>,
    pub fe: usize,
    pub opts: Arc<L4Opts>,
    pub force_stop: watch::Receiver<bool>,
    /// The graceful stop (accepting ends): idle keep-alive connections close.
    pub soft_stop: watch::Receiver<bool>,
    /// Counted against its source's `conn_per_source` while it lives.
    limit: Option<crate::limits::ConnGuard>,
    _tracker: mpsc::Sender<()>,
    _permits: Permits,
}

impl Conn {
    pub fn front(&self) -> &crate::runtime::FrontendRt {
        &self.rt.frontends[self.fe]
    }

    /// Apply the frontend's per-source connection limits to a connection from
    /// `src` (the PROXY header's address when there is one) to `dst_port`.
    /// `Ok(true)`: the source's requests are rate-limited too; `Err`: refused
    /// (counted; the caller closes the connection).
    pub fn admit_source(
        &mut self,
        src: std::net::IpAddr,
        dst_port: u16,
    ) -> Result<bool, crate::limits::Refused> {
        let front = &self.rt.frontends[self.fe];
        let Some(l) = front.source_limits.clone() else {
            return Ok(false);
        };
        if l.exempt(&front.acls, src, dst_port) {
            return Ok(false);
        }
        match l.connect(src, std::time::Instant::now()) {
            Ok(g) => {
                self.limit = Some(g);
                Ok(l.config().req_rate.is_some())
            }
            Err(why) => {
                match why {
                    crate::limits::Refused::Conns => front.counters.limit_conns.inc(),
                    crate::limits::Refused::ConnRate => front.counters.limit_conn_rate.inc(),
                }
                tracing::debug!(frontend = %front.name, %src, reason = ?why, "connection refused by per-source limits");
                Err(why)
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.front().counters.conn_cur.dec();
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
    let fe = ctx.frontend;
    let counters = &rt.frontends[fe].counters;
    counters.conn_total.inc();
    counters.conn_cur.inc();
    let conn = Conn {
        rt,
        fe,
        opts: ctx.l4.clone(),
        force_stop: ctx.force_stop.clone(),
        soft_stop: ctx.stop_accepting.clone(),
        limit: None,
        _tracker: ctx.tracker.clone(),
        _permits: permits,
    };
    tokio::spawn(async move {
        // Boxed: the task itself stays small whichever mode runs.
        match conn.front().mode {
            Mode::Tcp => Box::pin(l4::serve(stream, peer, local, conn)).await,
            Mode::Http => Box::pin(crate::l7::session::serve(stream, peer, local, conn)).await,
        }
    });
}
