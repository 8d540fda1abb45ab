//! One client connection in `mode = "http"`: wait for a request (parking the
//! connection when it idles), serve it as one `Exchange`, and loop for
//! keep-alive. An exchange runs in phases (Pingora's idea), each a named step
//! over the same context:
//!
//! 1. `route` — read the head (strict codec), normalise the path, rate-limit,
//!    run the rules, look up persistence, build the upstream head;
//! 2. `exchange::answer` — or answer it ourselves (deny, redirect, 429);
//! 3. `exchange::forward` + `upstream` — pick, connect or reuse, send head and
//!    body, read the response head (replaying when safe);
//! 4. `exchange::respond` + `body` — the response head and body back, or the
//!    tunnel a 101 becomes; keep the server connection when clean.
//!
//! Bodies stream through one buffer per direction, taken when bytes arrive;
//! nothing is buffered whole.

mod body;
mod exchange;
mod route;
mod trace;
mod upstream;

use std::io;

use tokio::net::TcpStream;
use tokio::time::{Instant as TokioInstant, timeout_at};

use super::park;
use super::reply::error_reply;
use crate::net::buf::Buf;
use crate::net::io::{Failed, Io, Limit};
use crate::net::{Accepted, Conn, ConnOpts, Stream};
use crate::runtime::{BackendRt, FrontendRt};
pub use route::Peer;

/// Why an exchange stopped.
#[derive(Debug)]
enum Stop {
    /// The client closed or failed, or the exchange is over and must not continue.
    Close,
    /// fulcrum answered before reading everything the client sent (an error,
    /// a deny or redirect with a body unread): close without a reset.
    Linger,
    /// Keep going with the next request.
    Next,
}

/// What one exchange works with: the connection's ends and settings.
struct Exchange<'a> {
    client: &'a Stream,
    peer: Peer,
    front: &'a FrontendRt,
    backends: &'a [BackendRt],
    opts: &'a ConnOpts,
    session: &'a crate::sessions::Session,
}

impl<'a> Exchange<'a> {
    fn new(
        client: &'a Stream,
        idle: &Idle,
        front: &'a FrontendRt,
        rt: &'a crate::runtime::Runtime,
        conn: &'a Conn,
    ) -> Exchange<'a> {
        Exchange {
            client,
            peer: idle.peer,
            front,
            backends: &rt.backends,
            opts: &conn.opts,
            session: &conn.session,
        }
    }

    /// Write to the client, giving up after `timeouts.client` without progress.
    async fn write(&self, data: &[u8]) -> Result<(), Failed> {
        let limit = Some(self.front.client_timeout);
        crate::net::io::write_all(self.client, data, limit, |_| {}).await
    }
}

/// How long, and how many bytes, a closing connection keeps reading what the
/// client still sends after an early answer.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// After an early answer the client may still be sending (a body fulcrum did
/// not read). Closing a socket with unread bytes answers with a reset, which
/// can make the client lose the answer before reading it (as nginx's
/// `lingering_close` guards against): so end our side (FIN) and read and
/// discard until the client closes, for at most `LINGER` and `LINGER_BYTES`.
async fn linger(s: &Stream) {
    s.shutdown_write();
    let until = TokioInstant::now() + LINGER;
    let mut left = LINGER_BYTES;
    let mut buf = Buf::take();
    loop {
        buf.clear();
        match crate::net::io::fill(s, &mut buf, Limit::At(until)).await {
            Ok(n) if n > 0 && n < left => left -= n,
            _ => return,
        }
    }
}

/// `linger`, cut short by the forced stop or `shutdown sessions`.
async fn linger_unless_halted(client: &Stream, conn: &Conn) {
    tokio::select! {
        biased;
        () = linger(client) => {}
        () = conn.shared.sessions.halted(&conn.session, false) => {}
    }
}

/// Nothing came within `timeouts.http_request` (a 408, counted), or within
/// the keep-alive timeout after a request (closed quietly).
async fn timed_out(client: &Stream, front: &FrontendRt, first: bool) {
    if first {
        front.counters.http_request_timeouts.inc();
        Box::pin(error_reply(client, front, 408)).await;
    }
}

/// Serve one accepted client connection on an http frontend (its PROXY
/// header, if any, already read by the accept pipeline).
///
/// Plain functions returning `serve_from`'s future (here and in `run`): an
/// `async fn` would keep its own copy of the arguments beside that future's.
pub fn serve(a: Accepted, conn: Conn) -> impl std::future::Future<Output = ()> {
    let idle = Idle {
        peer: Peer {
            client: a.client,
            local: a.local,
            rate_limited: a.rate_limited,
        },
        first: true,
        deadline: TokioInstant::now() + conn.front().http_request_timeout,
        parkable: true,
    };
    serve_from(a.stream, idle, Buf::from_vec(a.early), conn)
}

/// Where a connection stands between two requests: what parking keeps of it.
pub struct Idle {
    peer: Peer,
    /// No request came yet (a timeout then answers 408).
    pub first: bool,
    /// When waiting for the next request gives up.
    pub deadline: TokioInstant,
    /// Parking failed once for this connection: do not try again.
    parkable: bool,
}

/// Go on serving a connection the park gave back (it is readable).
pub fn run(client: TcpStream, idle: Idle, conn: Conn) -> impl std::future::Future<Output = ()> {
    serve_from(Stream::Tcp(client), idle, Buf::default(), conn)
}

/// What waiting for the next request came to.
enum Waited {
    /// The first bytes, in a buffer taken only now.
    Bytes(Buf),
    /// Silent for `idle_park_after`: park it.
    Park,
    /// The request or keep-alive timeout passed.
    Timeout,
    /// The client closed, failed, or the daemon is stopping.
    Gone,
}

/// Wait for the next request's first bytes until `until`. Read here, into a
/// buffer taken only when they are there (tokio reports a fresh socket
/// readable before any byte arrived: that read finds nothing and the buffer is
/// given back), so the exchange never starts, and allocates, for an idle
/// connection.
async fn wait_request(client: &Stream, until: TokioInstant, park: bool) -> Waited {
    let wait = async {
        loop {
            client.readable().await?;
            let mut buf = Buf::take();
            match crate::net::io::read_some(client, &mut buf) {
                Ok(n) => return Ok::<_, io::Error>((n, buf)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    };
    match timeout_at(until, wait).await {
        Ok(Ok((0, _))) | Ok(Err(_)) => Waited::Gone,
        Ok(Ok((_, buf))) => Waited::Bytes(buf),
        Err(_) if park => Waited::Park,
        Err(_) => Waited::Timeout,
    }
}

/// Park the connection (its task then ends: `None`), or, when it cannot be
/// parked (a TLS session is not: its state lives here), give it back to go on
/// here, never trying again.
fn park_or_keep(client: Stream, mut idle: Idle, conn: Conn) -> Option<(Stream, Idle, Conn)> {
    let client = match client {
        Stream::Tcp(s) => s,
        tls => {
            idle.parkable = false;
            return Some((tls, idle, conn));
        }
    };
    let std = client.into_std().ok()?;
    conn.session.forget_task();
    let back = park::park(std, idle, conn).err()?;
    let (std, mut idle, conn) = *back;
    idle.parkable = false;
    let client = TcpStream::from_std(std).ok()?;
    Some((Stream::Tcp(client), idle, conn))
}

/// A reload since the last request: the next one follows the new rules (one
/// atomic load when nothing changed). False when the connection's frontend is
/// gone from the configuration: it serves no further request.
fn follow_reload(conn: &mut Conn, rt: &mut std::sync::Arc<crate::runtime::Runtime>) -> bool {
    if conn.shared.generation() == rt.generation {
        return true;
    }
    let now = conn.shared.snapshot();
    let Some(fe) = now.frontend_index(&rt.frontends[conn.fe].name) else {
        return false;
    };
    (conn.rt, conn.fe) = (now.clone(), fe);
    *rt = now;
    true
}

impl Idle {
    /// When waiting for the next request gives up, and when (before that)
    /// the connection is parked instead. `served`: a request was just served,
    /// so the keep-alive deadline starts now.
    fn plan(
        &mut self,
        front: &FrontendRt,
        opts: &ConnOpts,
        served: bool,
    ) -> (TokioInstant, Option<TokioInstant>) {
        let now = TokioInstant::now();
        if served {
            self.deadline = now + front.http_keepalive_timeout;
        }
        // A new connection the kernel handed over without a byte under
        // defer_accept has been silent for a second already: parked at once
        // instead of holding a task for idle_park_after.
        let silent = self.first && front.defer_accept;
        let park_at = opts
            .park_after
            .filter(|_| self.parkable && crate::net::io::single_threaded())
            .map(|d| if silent { now } else { now + d })
            .filter(|at| *at < self.deadline);
        (park_at.unwrap_or(self.deadline), park_at)
    }
}

/// A plain function around an `async move` block, which keeps its arguments
/// once (an `async fn` keeps them twice: 296 bytes more per connection).
#[expect(clippy::manual_async_fn, reason = "the async fn form is larger")]
fn serve_from(
    mut client: Stream,
    mut idle: Idle,
    mut cbuf: Buf,
    mut conn: Conn,
) -> impl std::future::Future<Output = ()> {
    async move {
        // Borrowed from its own handle, so `conn` can go to the park and come back.
        let mut rt = conn.rt.clone();
        // The daemon's stops and `shutdown sessions` arrive through the session
        // registry (`Sessions::halted`): a graceful stop closes a connection
        // waiting between two requests (as HAProxy and nginx close idle keep-alive
        // connections); one waiting for its first request still gets it served.
        let sessions = conn.shared.sessions.clone();
        // A request was served: the keep-alive deadline starts at the next wait.
        let mut served = false;
        loop {
            if !follow_reload(&mut conn, &mut rt) {
                return;
            }
            let front = &rt.frontends[conn.fe];
            if cbuf.is_empty() {
                // Wait for the next request. After `idle_park_after` of silence
                // the connection is parked (park.rs) and this task ends, so an
                // idle connection costs its slot in the park, not its task.
                let (until, park_at) = idle.plan(front, &conn.opts, std::mem::take(&mut served));
                let waited = tokio::select! {
                    // Fixed order: no random draw per wait.
                    biased;
                    w = wait_request(&client, until, park_at.is_some()) => w,
                    () = sessions.halted(&conn.session, !idle.first) => Waited::Gone,
                };
                match waited {
                    Waited::Bytes(buf) => cbuf = buf,
                    Waited::Gone => return,
                    Waited::Timeout => return timed_out(&client, front, idle.first).await,
                    Waited::Park => match park_or_keep(client, idle, conn) {
                        Some(kept) => {
                            (client, idle, conn) = kept;
                            continue;
                        }
                        None => return,
                    },
                }
            }
            let ex = Exchange::new(&client, &idle, front, &rt, &conn);
            // Boxed: the exchange's state (about 3 KiB) lives only while a
            // request is served; a connection waiting for one keeps a 1 KiB
            // task (and gives that up too when it is parked). One malloc per
            // request, from a warm free list.
            let stop = tokio::select! {
                biased;
                s = Box::pin(ex.run(&mut cbuf, idle.first)) => s,
                // The forced stop, or `shutdown sessions server` while that
                // server serves it.
                () = sessions.halted(&conn.session, false) => Stop::Close,
            };
            conn.session.serving(0);
            idle.first = false;
            match stop {
                Stop::Next => {}
                Stop::Close => return,
                Stop::Linger => return linger_unless_halted(&client, &conn).await,
            }
            served = true;
            if cbuf.is_empty() {
                // Idle keep-alive connections hold no buffer (it goes back to the
                // thread's spares).
                cbuf = Buf::default();
            }
        }
    }
}
