//! One client connection in `mode = "http"`: read a request head (strict codec),
//! pick and connect a server, forward the re-serialised head and stream the body,
//! read the response head (strict), stream its body back, and loop for keep-alive.
//! Bodies are streamed through one buffer per direction, taken when bytes arrive;
//! nothing is buffered whole.
//!
//! Server connections come from the per-thread keep-alive pool (`pool.rs`) when
//! the request has no body; a bodyless request whose connection fails before any
//! response byte is replayed when that is safe. A 101 to a WebSocket handshake
//! turns the connection into an L4 tunnel.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant as TokioInstant, timeout_at};

use super::acl::ReqView;
use super::chunked::ChunkedDecoder;
use super::codec::{self, Framing, HeadError};
use super::park;
use super::path::{self, PathMode};
use super::persist::CookieEdit;
use super::pool;
use super::response::{self, RespFraming};
use super::rewrite::{self, CookieOut, Req, RespEdits};
use super::rules::{self, Route};
use crate::balancers::PickCtx;
use crate::config::routing::{CookieMode, Persist};
use crate::l4::{self, ForwardError, L4Opts};
use crate::listener::Conn;
use crate::runtime::{BackendRt, FrontendRt};
use crate::server::Server;

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

/// How long, and how many bytes, a closing connection keeps reading what the
/// client still sends after an early answer.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// After an early answer the client may still be sending (a body fulcrum did
/// not read). Closing a socket with unread bytes answers with a reset, which
/// can make the client lose the answer before reading it (as nginx's
/// `lingering_close` guards against): so end our side (FIN) and read and
/// discard until the client closes, for at most `LINGER` and `LINGER_BYTES`.
async fn linger(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write);
    let until = TokioInstant::now() + LINGER;
    let mut left = LINGER_BYTES;
    let mut buf = pool::Buf::take();
    loop {
        buf.clear();
        match fill(s, &mut buf, Limit::At(until)).await {
            Ok(n) if n > 0 && n < left => left -= n,
            _ => return,
        }
    }
}

/// Serve one accepted client connection on an http frontend.
/// `local`: the listener's address when it is not a wildcard.
pub async fn serve(client: TcpStream, peer: SocketAddr, local: Option<SocketAddr>, mut conn: Conn) {
    let rt = conn.rt.clone();
    let front = &rt.frontends[conn.fe];
    // TCP_NODELAY is inherited from the listener.
    let local = local.unwrap_or_else(|| client.local_addr().unwrap_or(peer));
    let (peer, local, cbuf) = if front.accept_proxy {
        match Box::pin(l4::read_proxy_header(
            &client,
            peer,
            local,
            front.client_timeout,
        ))
        .await
        {
            Ok(v) => v,
            Err(_) => {
                front.counters.proxy_errors.inc();
                return;
            }
        }
    } else {
        (peer, local, Vec::new())
    };
    let Ok(rate_limited) = conn.admit_source(peer.ip(), local.port()) else {
        return;
    };
    let idle = Idle {
        peer,
        local,
        first: true,
        deadline: TokioInstant::now() + front.http_request_timeout,
        parkable: true,
        rate_limited,
    };
    serve_from(client, idle, pool::Buf::from_vec(cbuf), conn).await;
}

/// Where a connection stands between two requests: what parking keeps of it.
pub struct Idle {
    peer: SocketAddr,
    local: SocketAddr,
    /// No request came yet (a timeout then answers 408).
    pub first: bool,
    /// When waiting for the next request gives up.
    pub deadline: TokioInstant,
    /// Parking failed once for this connection: do not try again.
    parkable: bool,
    /// The source's requests count against `req_rate_per_source`.
    rate_limited: bool,
}

/// Go on serving a connection the park gave back (it is readable).
pub async fn run(client: TcpStream, idle: Idle, conn: Conn) {
    serve_from(client, idle, pool::Buf::default(), conn).await;
}

/// The 408 a connection gets when no request came within `http_request`.
pub fn timeout_reply(front: &FrontendRt) -> Vec<u8> {
    canned(front, 408, "", None, true)
}

async fn serve_from(mut client: TcpStream, mut idle: Idle, mut cbuf: pool::Buf, mut conn: Conn) {
    // Borrowed from its own handle, so `conn` can go to the park and come back.
    let rt = conn.rt.clone();
    let front = &rt.frontends[conn.fe];
    let mut force_stop = conn.force_stop.clone();
    let mut stop_rx = conn.force_stop.clone();
    let stopped = crate::shutdown::stopped(&mut stop_rx);
    tokio::pin!(stopped);
    // A graceful stop closes a connection waiting between two requests (as
    // HAProxy and nginx close idle keep-alive connections); one waiting for its
    // first request still gets it served.
    let mut soft_rx = conn.soft_stop.clone();
    let soft_stopped = crate::shutdown::stopped(&mut soft_rx);
    tokio::pin!(soft_stopped);
    // A request was served: the keep-alive deadline starts at the next wait.
    let mut served = false;
    loop {
        if cbuf.is_empty() {
            // Wait for the next request. After `idle_park_after` of silence
            // the connection is parked (park.rs) and this task ends, so an
            // idle connection costs its slot in the park, not its task.
            let now = TokioInstant::now();
            if served {
                idle.deadline = now + front.http_keepalive_timeout;
                served = false;
            }
            let park_at = conn
                .opts
                .park_after
                .filter(|_| idle.parkable && single_threaded())
                .map(|d| now + d)
                .filter(|at| *at < idle.deadline);
            // Read the first bytes here, into a buffer taken only when they are
            // there (tokio reports a fresh socket readable before any byte
            // arrived: that read finds nothing and the buffer is given back), so
            // the exchange never starts, and allocates, for an idle connection.
            let wait = async {
                loop {
                    client.readable().await?;
                    let mut buf = pool::Buf::take();
                    match read_some(&client, &mut buf) {
                        Ok(n) => return Ok::<_, io::Error>((n, buf)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            let ready = tokio::select! {
                // Fixed order: no random draw per wait.
                biased;
                r = timeout_at(park_at.unwrap_or(idle.deadline), wait) => r,
                () = &mut stopped => return,
                () = &mut soft_stopped, if !idle.first => return,
            };
            match ready {
                Ok(Ok((0, _))) | Ok(Err(_)) => return,
                Ok(Ok((_, buf))) => cbuf = buf,
                Err(_) if park_at.is_some() => {
                    let Ok(std) = client.into_std() else { return };
                    let Err(back) = park::park(std, idle, conn) else {
                        return;
                    };
                    // Not parked: carry on here, without trying again.
                    let std;
                    (std, idle, conn) = *back;
                    idle.parkable = false;
                    let Ok(c) = TcpStream::from_std(std) else {
                        return;
                    };
                    client = c;
                    continue;
                }
                Err(_) => {
                    if idle.first {
                        front.counters.http_request_timeouts.inc();
                        Box::pin(error_reply(&client, front, 408)).await;
                    }
                    return;
                }
            }
        }
        // Not boxed: the task is allocated once per connection with room for
        // the exchange (2 KiB), instead of a box per request; an idle
        // connection gives the task up when it is parked.
        let stop = tokio::select! {
            biased;
            s = exchange(&client, (idle.peer, idle.local, idle.rate_limited), front, &rt.backends, &mut cbuf, idle.first, &conn.opts, &mut force_stop, &conn.soft_stop) => s,
            () = &mut stopped => Stop::Close,
        };
        idle.first = false;
        match stop {
            Stop::Next => {}
            Stop::Close => return,
            Stop::Linger => {
                tokio::select! {
                    biased;
                    () = linger(&client) => {}
                    () = &mut stopped => {}
                }
                return;
            }
        }
        served = true;
        if cbuf.is_empty() {
            // Idle keep-alive connections hold no buffer (it goes back to the
            // thread's spares).
            cbuf = pool::Buf::default();
        }
    }
}

/// One non-blocking read appended to `buf`. A short read emptied the socket's
/// receive queue, so its cached readiness is cleared at once (as nginx clears
/// `ready` after a short `recv`): the next wait goes straight to the poller
/// instead of paying a system call for `EAGAIN`. New bytes raise a new
/// (edge-triggered) event, so nothing is missed. Only on a current-thread
/// runtime (the per-core default), where the I/O driver never runs while this
/// task does, so no event can be cleared unseen between the read and the clear.
fn read_some(s: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let n = s.try_read_buf(buf)?;
    if n > 0 && n < room && single_threaded() {
        let _ = s.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }
    Ok(n)
}

fn single_threaded() -> bool {
    thread_local! {
        // A worker thread runs one runtime for its life: ask tokio once, not per
        // read (each ask clones a handle: two atomic operations).
        static CURRENT_THREAD: bool = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    }
    CURRENT_THREAD.with(|c| *c)
}

/// When waiting gives up: at a fixed instant, or after this long without
/// progress (counted from the moment the wait starts, so a call that needs no
/// wait costs no clock read and no timer).
#[derive(Debug, Clone, Copy)]
enum Limit {
    At(TokioInstant),
    After(std::time::Duration),
}

impl Limit {
    fn at(self) -> TokioInstant {
        match self {
            Limit::At(t) => t,
            Limit::After(d) => TokioInstant::now() + d,
        }
    }
}

/// Append what `s` has to `buf`, waiting for readable bytes up to `limit`.
/// Ok(0) = end of stream.
async fn fill(s: &TcpStream, buf: &mut Vec<u8>, limit: Limit) -> Result<usize, Fill> {
    let mut deadline = None;
    loop {
        if buf.capacity() - buf.len() >= 1024 {
            // Try first: without cached readiness this is no system call, and
            // with it no timer is set up.
            match read_some(s, buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(Fill::Io),
            }
        }
        let at = *deadline.get_or_insert_with(|| limit.at());
        match timeout_at(at, s.readable()).await {
            Err(_) => return Err(Fill::Timeout),
            Ok(Err(_)) => return Err(Fill::Io),
            Ok(Ok(())) => {}
        }
        if buf.capacity() - buf.len() < 1024 {
            // Taken (or enlarged) only now that bytes are there.
            pool::grow(buf);
        }
        match read_some(s, buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(Fill::Io),
        }
    }
}

#[derive(Debug)]
enum Fill {
    Timeout,
    Io,
}

/// Write all of `data`, giving up after `limit` without progress.
async fn write_all(s: &TcpStream, mut data: &[u8], limit: std::time::Duration) -> Result<(), Fill> {
    let mut deadline = None;
    while !data.is_empty() {
        // Try first: a socket with room takes the bytes without a wait or a timer.
        match s.try_write(data) {
            Ok(n) => {
                data = &data[n..];
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Fill::Io),
        }
        let at = *deadline.get_or_insert_with(|| TokioInstant::now() + limit);
        match timeout_at(at, s.writable()).await {
            Err(_) => return Err(Fill::Timeout),
            Ok(Err(_)) => return Err(Fill::Io),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}

/// The reason phrase fulcrum writes for a status: RFC 9110's, and the common
/// registered extensions (WebDAV, RFC 6585, RFC 7725, RFC 8470); an unregistered
/// code gets its class's name.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// A complete small response fulcrum writes itself: `status`, optional extra
/// fields (each ending in CRLF), and the frontend's error file for the status
/// or `body` or a one-line text.
fn canned(
    front: &FrontendRt,
    status: u16,
    extra: &str,
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let own = format!("{status} {}\n", reason(status));
    let (content_type, body): (&str, &[u8]) =
        match (body, front.error_pages.iter().find(|p| p.status == status)) {
            (Some(b), _) => ("text/plain", b),
            (None, Some(p)) => (p.content_type, &p.body),
            (None, None) if (300..400).contains(&status) => ("text/plain", b""),
            (None, None) => ("text/plain", own.as_bytes()),
        };
    let mut msg = format!(
        "HTTP/1.1 {status} {}\r\n{extra}content-type: {content_type}\r\ncontent-length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    )
    .into_bytes();
    msg.extend_from_slice(body);
    count_status(front, status);
    msg
}

/// Send a small error response and close (the request body, if any, was not read).
async fn error_reply(client: &TcpStream, front: &FrontendRt, status: u16) {
    let msg = canned(front, status, "", None, true);
    let _ = write_all(client, &msg, front.client_timeout).await;
}

fn count_status(front: &FrontendRt, status: u16) {
    if let Some(c) = front
        .counters
        .http_responses
        .get(usize::from(status / 100).wrapping_sub(1))
    {
        c.inc();
    }
}

/// A request routed to a backend, with its persistence lookup done.
struct Routed<'r> {
    req: Req,
    backend: &'r BackendRt,
    /// The server the request's cookie or source entry names, if it may take it.
    pinned: Option<&'r Server>,
    /// The request named a server at all (so a hit or a miss is counted).
    had_pin: bool,
    response_ops: rules::Ops<'r>,
}

/// What the rules made of a request head.
enum Parsed<'r> {
    Forward(Routed<'r>),
    /// fulcrum answers itself (deny, redirect).
    Answer {
        msg: Vec<u8>,
        status: u16,
        close: bool,
        path: String,
    },
}

/// The 429 for a request over its source's `req_rate_per_source`, if it is.
fn rate_limit<'r>(
    head: &codec::Head<'_>,
    peer: SocketAddr,
    front: &FrontendRt,
    rate_limited: bool,
) -> Option<Parsed<'r>> {
    let limiter = front.source_limits.as_ref().filter(|_| rate_limited)?;
    let wait = limiter.request(peer.ip(), Instant::now()).err()?;
    front.counters.limit_req_rate.inc();
    // A body that was not read cannot be skipped safely: close after it.
    let close = head.close || head.framing != Framing::None;
    let extra = format!("retry-after: {wait}\r\n");
    let mut msg = canned(front, 429, &extra, None, close);
    if head.method == "HEAD" {
        strip_body(&mut msg);
    }
    Some(Parsed::Answer {
        msg,
        status: 429,
        close,
        path: head.path.to_string(),
    })
}

/// The answer to a HEAD has its length but never its body: on a kept-alive
/// connection a body would be read as the next response.
fn strip_body(msg: &mut Vec<u8>) {
    if let Some(end) = msg.windows(4).position(|w| w == b"\r\n\r\n") {
        msg.truncate(end + 4);
    }
}

/// Run the frontend's rules on a parsed head, then the chosen backend's
/// persistence lookup, and build what goes upstream.
fn route<'r>(
    head: &codec::Head<'_>,
    headers: &[httparse::Header<'_>],
    peer: SocketAddr,
    local: SocketAddr,
    front: &'r FrontendRt,
    backends: &'r [BackendRt],
    match_only: Option<String>,
) -> Parsed<'r> {
    // What the rules see: the normalised path, also when the client's is forwarded.
    let target = match_only.as_deref().unwrap_or(&head.path);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let view = ReqView {
        method: head.method,
        path,
        query,
        host: head.authority,
        headers,
        src: peer.ip(),
        dst_port: local.port(),
    };
    let d = rules::decide(
        &front.rules,
        &front.acls,
        &view,
        front.backend,
        l4::fastrand_u64(),
    );
    let b = match d.route {
        Route::Backend(b) => b,
        other => {
            // A body that was not read cannot be skipped safely: close after it.
            let close = head.close || head.framing != Framing::None;
            let (mut msg, status) = match other {
                Route::Deny { status, body } => {
                    front.counters.http_denied.inc();
                    (
                        canned(front, status, "", body.map(|b| &b[..]), close),
                        status,
                    )
                }
                Route::Redirect { status, location } => {
                    front.counters.http_redirected.inc();
                    let extra = format!("location: {location}\r\n");
                    (canned(front, status, &extra, None, close), status)
                }
                Route::Backend(_) => (Vec::new(), 0),
            };
            if head.method == "HEAD" {
                strip_body(&mut msg);
            }
            return Parsed::Answer {
                msg,
                status,
                close,
                path: head.path.to_string(),
            };
        }
    };
    let Some(backend) = backends.get(b) else {
        return Parsed::Answer {
            msg: canned(front, 503, "", None, true),
            status: 503,
            close: true,
            path: head.path.to_string(),
        };
    };
    let (pinned, had_pin, edit) = pin(backend, &view);
    let mut req = rewrite::request(head, headers, peer, front.forwarding(), d.request_ops, edit);
    req.route_path = match_only.map(String::into_boxed_str);
    Parsed::Forward(Routed {
        req,
        backend,
        pinned,
        had_pin,
        response_ops: d.response_ops,
    })
}

/// The server a request is pinned to by the backend's persistence, whether it
/// named one at all, and how the persistence cookie is forwarded.
fn pin<'r>(
    backend: &'r BackendRt,
    view: &ReqView<'_>,
) -> (Option<&'r Server>, bool, CookieEdit<'r>) {
    match &backend.persist {
        None => (None, false, CookieEdit::Keep),
        Some(Persist::Source { expire, .. }) => {
            match backend.sources.get(view.src, *expire, Instant::now()) {
                Some(id) => (
                    backend.by_id(id).filter(|s| s.takes_persistent()),
                    true,
                    CookieEdit::Keep,
                ),
                None => (None, false, CookieEdit::Keep),
            }
        }
        Some(Persist::Cookie {
            name,
            mode,
            indirect,
            ..
        }) => {
            let Some(value) = view.cookie(name) else {
                return (None, false, CookieEdit::Keep);
            };
            let (key, edit) = match mode {
                CookieMode::Insert => (
                    Some(value),
                    if *indirect {
                        CookieEdit::Remove(name)
                    } else {
                        CookieEdit::Keep
                    },
                ),
                CookieMode::Prefix => (
                    value.split_once('~').map(|(k, _)| k),
                    CookieEdit::Unprefix(name),
                ),
            };
            match key {
                // A value naming no server, or one in maintenance or down, is ignored.
                Some(k) => (
                    backend.by_cookie(k).filter(|s| s.takes_persistent()),
                    true,
                    edit,
                ),
                None => (None, false, edit),
            }
        }
    }
}

/// After the pick: count a persistence hit or miss, remember the source, and say
/// which cookie the response carries.
fn persist_after_pick<'r>(
    backend: &'r BackendRt,
    server: &'r Server,
    pinned: Option<&Server>,
    count: bool,
    peer: SocketAddr,
) -> CookieOut<'r> {
    let same = pinned.is_some_and(|p| std::sync::Arc::ptr_eq(&p.state, &server.state));
    if count {
        if same {
            backend.counters.persist_hits.inc();
        } else {
            backend.counters.persist_misses.inc();
        }
    }
    match &backend.persist {
        None => CookieOut::None,
        Some(Persist::Source { .. }) => {
            backend
                .sources
                .put(peer.ip(), server.state.id, Instant::now());
            CookieOut::None
        }
        Some(Persist::Cookie {
            name,
            mode: CookieMode::Insert,
            nocache,
            attrs,
            ..
        }) if !same => CookieOut::Insert {
            name,
            value: &server.cookie,
            nocache: *nocache,
            attrs,
        },
        Some(Persist::Cookie {
            name,
            mode: CookieMode::Prefix,
            ..
        }) => CookieOut::Prefix {
            name,
            value: &server.cookie,
        },
        Some(Persist::Cookie { .. }) => CookieOut::None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    client: &TcpStream,
    (peer, local, rate_limited): (SocketAddr, SocketAddr, bool),
    front: &FrontendRt,
    backends: &[BackendRt],
    cbuf: &mut Vec<u8>,
    first: bool,
    opts: &L4Opts,
    force_stop: &mut watch::Receiver<bool>,
    soft_stop: &watch::Receiver<bool>,
) -> Stop {
    // 1. The request head: the first byte within the keep-alive timeout (or the
    //    request timeout on a new connection), the whole head within http_request.
    let mut started = !cbuf.is_empty();
    // Set when a read must wait (a head that came whole needs no clock read).
    let mut deadline = None;
    let limit = if first || started {
        front.http_request_timeout
    } else {
        front.http_keepalive_timeout
    };
    let routed = loop {
        if !cbuf.is_empty() {
            match request_step(cbuf, (peer, local, rate_limited), front, backends) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(e) => return reject(client, peer, front, e, cbuf).await,
            }
        }
        let at = *deadline.get_or_insert_with(|| TokioInstant::now() + limit);
        match fill(client, cbuf, Limit::At(at)).await {
            Ok(0) => return Stop::Close,
            Ok(_) => {
                if !started {
                    // The first byte of this request: the whole head now has
                    // http_request to arrive.
                    started = true;
                    deadline = Some(TokioInstant::now() + front.http_request_timeout);
                }
            }
            Err(Fill::Timeout) => {
                if started || first {
                    front.counters.http_request_timeouts.inc();
                    error_reply(client, front, 408).await;
                }
                return Stop::Close;
            }
            Err(Fill::Io) => return Stop::Close,
        }
    };
    front.counters.http_requests.inc();
    let started = Instant::now();
    let Routed {
        req,
        backend,
        pinned,
        had_pin,
        response_ops,
    } = match routed {
        Parsed::Forward(r) => r,
        Parsed::Answer {
            msg,
            status,
            close,
            path,
        } => {
            if opts.log_connections {
                tracing::info!(
                    target: "fulcrum::http",
                    client = %peer, frontend = %front.name, backend = "-", server = "-",
                    status, path = %path, bytes_out = 0u64, ms = 0u64, complete = true, "request"
                );
            }
            if write_all(client, &msg, front.client_timeout).await.is_err() {
                return Stop::Close;
            }
            return if close { Stop::Linger } else { Stop::Next };
        }
    };
    backend.counters.http_requests.inc();

    // 2.-4. Pick, connect (or reuse a kept-alive connection), send, and read the
    //    response head. A request with no body whose connection failed before any
    //    response byte arrived is replayed when it is idempotent, or when the
    //    connection was a reused one (the server may have closed it meanwhile).
    let (path, query) = match req.path().split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path(), None),
    };
    let mut ctx = PickCtx::tcp(peer.ip(), local, started, l4::fastrand_u64());
    ctx.host = req.host();
    ctx.path = Some(path);
    ctx.query = query;
    let pool_idle = backend.timeouts.pool_idle;
    let bodyless = req.framing == Framing::None && !req.websocket && !req.http10;
    let mut attempt = 0u32;
    let (server, _guard, upstream, resp, out_head, close, mut sbuf) = loop {
        // Only bodyless requests go on reused connections: a body cannot be replayed.
        let reuse = |s: &crate::server::Server| {
            if bodyless {
                pool::take(s.state.id, pool_idle, started)
            } else {
                None
            }
        };
        let (server, guard, upstream, reused) =
            match l4::connect_with(backend, &ctx, pinned, force_stop, reuse).await {
                Ok(v) => v,
                Err(e) => {
                    match e {
                        ForwardError::QueueTimeout(_) => backend.counters.queue_timeouts.inc(),
                        _ => backend.counters.no_server.inc(),
                    }
                    error_reply(client, front, 503).await;
                    return Stop::Linger;
                }
            };
        if reused {
            backend.counters.http_reused.inc();
        } else {
            backend.counters.conn_total.inc();
            server.state.counters.conn_total.inc();
        }
        let replayable = bodyless && (reused || req.idempotent) && attempt < backend.retries;
        let edits = RespEdits {
            ops: response_ops,
            cookie: persist_after_pick(backend, server, pinned, had_pin && attempt == 0, peer),
        };
        match send_and_read_head(
            &upstream,
            client,
            front,
            backend,
            &req,
            cbuf,
            edits,
            opts.splice,
            soft_stop,
        )
        .await
        {
            Ok((resp, out_head, close, sbuf)) => {
                break (server, guard, upstream, resp, out_head, close, sbuf);
            }
            Err(Upstream::Early) if replayable => {
                attempt += 1;
                backend.counters.retries.inc();
                continue;
            }
            Err(Upstream::Early | Upstream::Bad) => {
                backend.counters.http_bad_responses.inc();
                error_reply(client, front, 502).await;
                return Stop::Linger;
            }
            Err(Upstream::Timeout) => {
                backend.counters.http_server_timeouts.inc();
                error_reply(client, front, 504).await;
                return Stop::Linger;
            }
            Err(Upstream::BodyFraming) => {
                front.counters.http_rejected[HeadError::BadTransferEncoding.class()].inc();
                error_reply(client, front, 400).await;
                return Stop::Linger;
            }
            Err(Upstream::ClientGone) => return Stop::Close,
        }
    };
    let sc = &server.state.counters;
    count_status(front, resp.status);
    let mut out_head = out_head;
    let mut got = 0u64;
    let mut framing = resp.framing;
    // A body that is already here in full goes out with the head, in one write.
    if let RespFraming::Length(n) = framing
        && let Ok(n) = usize::try_from(n)
        && n <= sbuf.len()
        && n <= pool::LARGE
    {
        out_head.extend_from_slice(&sbuf[..n]);
        sbuf.drain(..n);
        got = n as u64;
        framing = RespFraming::None;
    }
    if write_all(client, &out_head, front.client_timeout)
        .await
        .is_err()
    {
        return Stop::Close;
    }
    if resp.status == 101 {
        // Boxed: a rare path whose state would otherwise size every exchange.
        return Box::pin(tunnel(
            client,
            &upstream,
            front,
            backend,
            server,
            cbuf,
            &sbuf,
            opts.splice,
            force_stop,
        ))
        .await;
    }

    // 5. Response body.
    let body = match framing {
        RespFraming::None => None,
        RespFraming::Length(n) => Some(Body::Length(n)),
        RespFraming::Chunked => Some(Body::Chunked),
        RespFraming::Close => Some(Body::UntilClose),
    };
    let result = match body {
        None => Ok(()),
        Some(b) => {
            let deadlines = (backend.timeouts.server, front.client_timeout);
            relay(
                &upstream,
                client,
                &mut sbuf,
                b,
                deadlines,
                &mut got,
                opts.splice,
            )
            .await
        }
    };
    front.counters.bytes_out.add(got);
    backend.counters.bytes_out.add(got);
    sc.bytes_out.add(got);
    if opts.log_connections {
        tracing::info!(
            target: "fulcrum::http",
            client = %peer, frontend = %front.name, backend = %backend.name, server = %server.name,
            status = resp.status, path = %req.path(), bytes_out = got,
            ms = started.elapsed().as_millis() as u64, complete = result.is_ok(), "request"
        );
    }
    if result.is_err() {
        // The response was cut: the client cannot tell where it ends otherwise.
        l4::pump::reset(client);
        return Stop::Close;
    }
    // The server connection is clean (whole response read, nothing extra, the
    // server keeps it open): keep it for the next request on this thread.
    if !resp.close && framing != RespFraming::Close && sbuf.is_empty() {
        pool::put(
            server.state.id,
            upstream,
            backend.pool_max_idle as usize,
            started,
        );
    }
    if close {
        // The whole response went out: closing the socket (when the task ends,
        // right away) sends the FIN; no separate shutdown(2).
        return Stop::Close;
    }
    Stop::Next
}

/// After a 101: both directions become a plain byte tunnel (the L4 pump, splice
/// included). Bytes that arrived with the handshake go first.
#[allow(clippy::too_many_arguments)]
async fn tunnel(
    client: &TcpStream,
    upstream: &TcpStream,
    front: &FrontendRt,
    backend: &BackendRt,
    server: &crate::server::Server,
    cbuf: &mut Vec<u8>,
    early_down: &[u8],
    splice: bool,
    force_stop: &mut watch::Receiver<bool>,
) -> Stop {
    let sc = &server.state.counters;
    let up = l4::pump::Tally::new([
        &front.counters.bytes_in,
        &backend.counters.bytes_in,
        &sc.bytes_in,
    ]);
    let down = l4::pump::Tally::new([
        &front.counters.bytes_out,
        &backend.counters.bytes_out,
        &sc.bytes_out,
    ]);
    let act = l4::pump::Activity::new();
    if l4::copy::write_all(upstream, cbuf, &act, Some(&up))
        .await
        .is_err()
        || l4::copy::write_all(client, early_down, &act, Some(&down))
            .await
            .is_err()
    {
        return Stop::Close;
    }
    cbuf.clear();
    let opts = l4::pump::PumpOpts {
        splice,
        idle: front.client_timeout.min(backend.timeouts.server),
    };
    l4::pump::run(client, upstream, &opts, &up, &down, force_stop).await;
    Stop::Close
}

/// How a body is delimited, in either direction.
#[derive(Debug, Clone, Copy)]
enum Body {
    Length(u64),
    Chunked,
    /// Until the source closes (responses only).
    UntilClose,
}

#[derive(Debug)]
enum RelayError {
    Source,
    Destination,
    Framing,
}

/// Stream one body from `src` to `dst`: first what is already in `buf`, then
/// reads, each forwarded as it arrives. Leaves in `buf` any bytes past the body
/// (the next pipelined request). `deadlines` = (source inactivity, destination
/// inactivity); `moved` counts the bytes delivered. With `splice`, the part of
/// a Content-Length body past the buffer goes socket to socket through a kernel
/// pipe when it is larger than a large buffer (`global.splice`).
async fn relay(
    src: &TcpStream,
    dst: &TcpStream,
    buf: &mut Vec<u8>,
    body: Body,
    deadlines: (std::time::Duration, std::time::Duration),
    moved: &mut u64,
    splice: bool,
) -> Result<(), RelayError> {
    let mut left = match body {
        Body::Length(n) => n,
        _ => u64::MAX,
    };
    let mut dec = ChunkedDecoder::default();
    let room = (buf.capacity() - buf.len()) as u64;
    let spliced =
        splice && matches!(body, Body::Length(n) if n > buf.len() as u64 + pool::LARGE as u64);
    if !spliced && !matches!(body, Body::Length(n) if n <= buf.len() as u64 + room) {
        // More than the buffer holds: stream through a large one.
        pool::to_large(buf);
    }
    // A chunked body is forwarded re-encoded (chunked.rs), never as received:
    // its canonical form goes out from here.
    let mut canonical = Vec::new();
    loop {
        let take = match body {
            Body::Length(_) => usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()),
            Body::Chunked => {
                canonical.clear();
                dec.advance(buf, &mut canonical)
                    .map_err(|_| RelayError::Framing)?
            }
            Body::UntilClose => buf.len(),
        };
        if take > 0 {
            let out = match body {
                Body::Chunked => &canonical[..],
                _ => &buf[..take],
            };
            if !out.is_empty() {
                write_all(dst, out, deadlines.1)
                    .await
                    .map_err(|_| RelayError::Destination)?;
            }
            *moved += out.len() as u64;
            buf.drain(..take);
            if let Body::Length(_) = body {
                left -= take as u64;
            }
        }
        let done = match body {
            Body::Length(_) => left == 0,
            Body::Chunked => dec.is_done(),
            Body::UntilClose => false,
        };
        if done {
            return Ok(());
        }
        if spliced {
            // The buffer is empty (it held less than the body): the rest,
            // exactly, without copies.
            return l4::splice::exact(src, dst, left, deadlines, moved)
                .await
                .map_err(|e| match e {
                    l4::splice::ExactError::Source => RelayError::Source,
                    l4::splice::ExactError::Destination => RelayError::Destination,
                });
        }
        match fill(src, buf, Limit::After(deadlines.0)).await {
            Ok(0) if matches!(body, Body::UntilClose) => return Ok(()),
            Ok(0) | Err(_) => return Err(RelayError::Source),
            Ok(_) => {}
        }
    }
}

/// How sending a request or reading its response head failed.
enum Upstream {
    /// The server connection failed before any response byte (replayable).
    Early,
    /// A malformed response, or the server failed mid-way.
    Bad,
    Timeout,
    /// The client's chunked body was malformed.
    BodyFraming,
    ClientGone,
}

type Answer = (response::RespHead, Vec<u8>, bool, pool::Buf);

/// Send the request head and body on `upstream`, then read the response head,
/// relaying 1xx responses. Returns the final head, its re-serialised form, whether
/// the client connection closes after it, and the bytes read past the head.
#[allow(clippy::too_many_arguments)]
async fn send_and_read_head(
    upstream: &TcpStream,
    client: &TcpStream,
    front: &FrontendRt,
    backend: &BackendRt,
    req: &Req,
    cbuf: &mut Vec<u8>,
    edits: RespEdits<'_>,
    splice: bool,
    soft_stop: &watch::Receiver<bool>,
) -> Result<Answer, Upstream> {
    write_all(upstream, &req.upstream_head, backend.timeouts.server)
        .await
        .map_err(|_| Upstream::Early)?;
    if req.expect_continue && req.framing != Framing::None && cbuf.is_empty() {
        write_all(
            client,
            b"HTTP/1.1 100 Continue\r\n\r\n",
            front.client_timeout,
        )
        .await
        .map_err(|_| Upstream::ClientGone)?;
    }
    let mut sent = 0u64;
    let framing = match req.framing {
        Framing::None => None,
        Framing::Length(n) => Some(Body::Length(n)),
        Framing::Chunked => Some(Body::Chunked),
    };
    let body = match framing {
        None => Ok(()),
        Some(b) => {
            let deadlines = (front.client_timeout, backend.timeouts.server);
            relay(client, upstream, cbuf, b, deadlines, &mut sent, splice)
                .await
                .map_err(|e| match e {
                    RelayError::Source => Upstream::ClientGone,
                    RelayError::Destination => Upstream::Bad,
                    RelayError::Framing => Upstream::BodyFraming,
                })
        }
    };
    front.counters.bytes_in.add(sent);
    backend.counters.bytes_in.add(sent);
    body?;
    if cbuf.is_empty() {
        // Nothing more from the client for now: its buffer goes back to the
        // thread's spares while the server works.
        pool::give(std::mem::take(cbuf));
    }

    let limits = front.limits;
    // Empty: `fill` takes a buffer once the server's bytes arrive.
    let mut sbuf = pool::Buf::default();
    let mut any = false;
    loop {
        // During a graceful stop the response says `connection: close` (one
        // atomic load; the connection then ends after it).
        let closing = soft_stop.has_changed().unwrap_or(false);
        match response_step(&sbuf, req, limits.max_head, edits, closing) {
            Step::Informational(len, out) => {
                write_all(client, &out, front.client_timeout)
                    .await
                    .map_err(|_| Upstream::ClientGone)?;
                sbuf.drain(..len);
                continue;
            }
            Step::Final(r, out, close) => {
                sbuf.drain(..r.len);
                return Ok((r, out, close, sbuf));
            }
            Step::More => {}
            Step::Bad => return Err(Upstream::Bad),
        }
        match fill(upstream, &mut sbuf, Limit::After(backend.timeouts.server)).await {
            Ok(0) | Err(Fill::Io) => return Err(if any { Upstream::Bad } else { Upstream::Early }),
            Ok(_) => any = true,
            Err(Fill::Timeout) => return Err(Upstream::Timeout),
        }
    }
}

/// What the bytes read so far from a server make of its response head.
enum Step {
    /// A 1xx (not 101) of this many bytes, and its re-serialised form: relay
    /// it and read on.
    Informational(usize, Vec<u8>),
    /// The final head, its re-serialised form, and whether the client
    /// connection closes after it.
    Final(response::RespHead, Vec<u8>, bool),
    More,
    Bad,
}

/// Parse what `sbuf` holds. Synchronous, so the field array lives on the stack
/// only here, not in the exchange's future.
fn response_step(
    sbuf: &[u8],
    req: &Req,
    max_head: usize,
    edits: RespEdits<'_>,
    closing: bool,
) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let r = match response::parse_response(sbuf, &mut headers, req.head_request, max_head) {
        Ok(Some(r)) => r,
        Ok(None) => return Step::More,
        Err(_) => return Step::Bad,
    };
    let n = headers
        .iter()
        .position(|h| h.name.is_empty())
        .unwrap_or(headers.len());
    let headers = &headers[..n];
    if (100..200).contains(&r.status) && r.status != 101 {
        // Re-serialised like any head (hop-by-hop and framing fields dropped),
        // without the rules' edits, which are for the final response.
        let none = RespEdits {
            ops: rules::Ops::NONE,
            cookie: CookieOut::None,
        };
        let out = rewrite::response(&sbuf[..r.len], headers, &r, false, none, 0);
        return Step::Informational(r.len, out);
    }
    if r.status == 101 {
        // 101 only for a WebSocket handshake, with a matching Upgrade: the
        // connection becomes a tunnel. Anything else is a protocol error.
        let accepted = req.websocket
            && headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("upgrade") && h.value.eq_ignore_ascii_case(b"websocket")
            });
        if !accepted {
            return Step::Bad;
        }
        let mut out = rewrite::response(&sbuf[..r.len], headers, &r, false, edits, 0);
        out.truncate(out.len() - 2);
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
        return Step::Final(r, out, true);
    }
    let close = req.close || closing || r.framing == RespFraming::Close;
    // A small body already read goes out with the head: room for it now.
    let body = match r.framing {
        RespFraming::Length(n) => usize::try_from(n)
            .ok()
            .filter(|n| *n <= sbuf.len() - r.len && *n <= pool::LARGE)
            .unwrap_or(0),
        _ => 0,
    };
    let out = rewrite::response(&sbuf[..r.len], headers, &r, close, edits, body);
    debug_assert_eq!(
        rewrite::reparse_response(&out, req.head_request).map(|(f, _)| f),
        Some(r.framing),
        "a forwarded response head must be framed as parsed"
    );
    Step::Final(r, out, close)
}

/// Parse and route a request head at the start of `cbuf`, consuming it; `None`
/// while it is incomplete. Synchronous, so the field array lives on the stack
/// only here, not in the exchange's future.
fn request_step<'r>(
    cbuf: &mut Vec<u8>,
    (peer, local, rate_limited): (SocketAddr, SocketAddr, bool),
    front: &'r FrontendRt,
    backends: &'r [BackendRt],
) -> Result<Option<Parsed<'r>>, HeadError> {
    let limits = front.limits;
    let mut small = [httparse::EMPTY_HEADER; 128];
    let mut large = Vec::new();
    let headers: &mut [httparse::Header<'_>] = if limits.max_headers <= small.len() {
        &mut small
    } else {
        large.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut large
    };
    let Some(mut head) = codec::parse_request(cbuf, headers, &limits)? else {
        return Ok(None);
    };
    // One path for the ACLs, the balancer and (by default) the origin.
    let normalized = match path::normalize(&head.path, &front.path) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(p)) => Some(p),
        Err(e) => return Err(HeadError::BadPath(e)),
    };
    let match_only = match normalized {
        Some(p) if front.path.mode == PathMode::Forward => {
            head.path = Cow::Owned(p);
            None
        }
        other => other,
    };
    let n = headers
        .iter()
        .position(|h| h.name.is_empty())
        .unwrap_or(headers.len());
    let parsed = match rate_limit(&head, peer, front, rate_limited) {
        Some(answer) => answer,
        None => route(
            &head,
            &headers[..n],
            peer,
            local,
            front,
            backends,
            match_only,
        ),
    };
    let len = head.len;
    cbuf.drain(..len);
    Ok(Some(parsed))
}

async fn reject(
    client: &TcpStream,
    peer: SocketAddr,
    front: &FrontendRt,
    e: HeadError,
    input: &[u8],
) -> Stop {
    front.counters.http_rejected[e.class()].inc();
    front.counters.keep_rejected(crate::stats::Rejected {
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        client: peer,
        class: e.counter(),
        status: e.status(),
        head: input[..input.len().min(512)].to_vec(),
    });
    tracing::debug!(frontend = %front.name, error = %e, "request rejected");
    error_reply(client, front, e.status()).await;
    Stop::Linger
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[test]
    fn every_status_fulcrum_can_send_has_its_reason_phrase() {
        assert_eq!(reason(410), "Gone");
        assert_eq!(reason(413), "Content Too Large");
        assert_eq!(reason(421), "Misdirected Request");
        assert_eq!(reason(451), "Unavailable For Legal Reasons");
        assert_eq!(reason(511), "Network Authentication Required");
        // RFC 9110's 4xx and 5xx (deny may send any of them), and the common extensions.
        let registered = [
            400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416,
            417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504,
            505, 506, 507, 508, 510, 511,
        ];
        for s in registered {
            assert!(
                !matches!(reason(s), "Client Error" | "Server Error"),
                "{s} has no phrase"
            );
        }
        assert_eq!(reason(499), "Client Error");
        assert_eq!(reason(599), "Server Error");
    }
}
