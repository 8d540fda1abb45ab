//! One request and its response, in named phases over one `Exchange`:
//! `read_request` (head within its timeouts, then `route`), `answer` (what
//! fulcrum says itself), `forward` (pick, connect or reuse, send, read the
//! response head, replaying when safe), `respond` (head and body back, the
//! server connection kept for reuse when clean).

use std::time::{Duration, Instant};

use crate::net::Stream;
use tokio::time::Instant as TokioInstant;

use super::body::{Body, relay};
use super::route::{self, Parsed, Routed, Said};
use super::trace::{Line, Trace};
use super::upstream::{Answer, Upstream};
use super::{Exchange, Stop};
use crate::balancers::PickCtx;
use crate::connect;
use crate::l7::codec::{Framing, HeadError};
use crate::l7::pool;
use crate::l7::reply::{count_status, error_reply};
use crate::l7::response::RespFraming;
use crate::l7::rewrite::RespEdits;
use crate::net::buf;
use crate::net::io::{self, Failed, Limit};
use crate::runtime::BackendRt;
use crate::server::{InflightGuard, Server};

/// A request on its way: the server chosen, its connection, and the answer.
struct Forwarded<'r> {
    server: &'r Server,
    _guard: InflightGuard,
    upstream: Stream,
    answer: Answer,
}

impl<'a> Exchange<'a> {
    /// Serve one request from `cbuf` (and the client): the whole exchange,
    /// then its latencies and log line (`trace.rs`).
    pub(super) async fn run(&self, cbuf: &mut Vec<u8>, first: bool) -> Stop {
        let routed = match self.read_request(cbuf, first).await {
            Ok(p) => p,
            Err(stop) => return stop,
        };
        self.front.counters.http_requests.inc();
        let started = Instant::now();
        let routed = match routed {
            Parsed::Forward(r) => r,
            Parsed::Answer(said) => {
                let mut t = Trace::new(started, said.head_len);
                let stop = self.answer(&said, &mut t).await;
                let line = Line {
                    method: &said.method,
                    host: &said.host,
                    target: &said.path,
                };
                self.finish(&t, &line);
                return stop;
            }
        };
        routed.backend.counters.http_requests.inc();
        let mut t = Trace::new(started, routed.req.head_len);
        t.backend = Some(routed.backend);
        t.request_id = routed.req.request_id;
        let stop = match self.forward(&routed, cbuf, &mut t).await {
            Ok(fwd) => self.respond(&routed, fwd, cbuf, &mut t).await,
            Err(stop) => stop,
        };
        let line = Line {
            method: routed.req.method(),
            host: routed.req.host().unwrap_or_default(),
            target: routed.req.path(),
        };
        self.finish(&t, &line);
        stop
    }

    /// Phase 1: the request head — the first byte within the keep-alive
    /// timeout (or the request timeout on a new connection), the whole head
    /// within `http_request` — parsed and routed.
    async fn read_request(&self, cbuf: &mut Vec<u8>, first: bool) -> Result<Parsed<'a>, Stop> {
        let front = self.front;
        let mut started = !cbuf.is_empty();
        // Set when a read must wait (a head that came whole needs no clock read).
        let mut deadline = None;
        let limit = if first || started {
            front.http_request_timeout
        } else {
            front.http_keepalive_timeout
        };
        loop {
            if !cbuf.is_empty() {
                match route::request_step(cbuf, self.peer, self.client.tls(), front, self.backends)
                {
                    Ok(Some(parsed)) => return Ok(parsed),
                    Ok(None) => {}
                    Err(e) => return Err(self.reject(e, cbuf).await),
                }
            }
            let at = *deadline.get_or_insert_with(|| TokioInstant::now() + limit);
            match io::fill(self.client, cbuf, Limit::At(at)).await {
                Ok(0) | Err(Failed::Io(_)) => return Err(Stop::Close),
                Ok(_) if !started => {
                    // The first byte of this request: the whole head now has
                    // http_request to arrive.
                    started = true;
                    deadline = Some(TokioInstant::now() + front.http_request_timeout);
                }
                Ok(_) => {}
                Err(Failed::Timeout) => {
                    if started || first {
                        front.counters.http_request_timeouts.inc();
                        error_reply(self.client, front, 408).await;
                        self.log_refused(cbuf, 408, *b"cR");
                    }
                    return Err(Stop::Close);
                }
            }
        }
    }

    /// A rejected head: counted by class, kept for inspection, answered, and
    /// the connection closes (lingering).
    async fn reject(&self, e: HeadError, input: &[u8]) -> Stop {
        let front = self.front;
        front.counters.http_rejected[e.class()].inc();
        front.counters.keep_rejected(crate::stats::Rejected {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            client: self.peer.client,
            class: e.counter(),
            status: e.status(),
            head: input[..input.len().min(512)].to_vec(),
        });
        tracing::debug!(frontend = %front.name, error = %e, "request rejected");
        error_reply(self.client, front, e.status()).await;
        self.log_refused(input, e.status(), *b"PR");
        Stop::Linger
    }

    /// The log line of a request refused before it was parsed.
    fn log_refused(&self, input: &[u8], status: u16, term: [u8; 2]) {
        if self.opts.access_log.is_none() {
            return;
        }
        let mut t = Trace::new(Instant::now(), input.len());
        t.status = status;
        t.term = term;
        self.finish(&t, &Line::of_raw(input));
    }

    /// Phase 2 (when fulcrum answers itself): deny, redirect, 429.
    async fn answer(&self, said: &Said, t: &mut Trace<'_>) -> Stop {
        t.status = said.status;
        t.term = said.term;
        if self.write(&said.msg).await.is_err() {
            t.end(b'C', b'D');
            return Stop::Close;
        }
        t.bytes_out = said.msg.len() as u64;
        if said.close { Stop::Linger } else { Stop::Next }
    }

    /// Phase 3: pick, connect (or reuse a kept-alive connection), send, and
    /// read the response head. A request with no body whose connection failed
    /// before any response byte arrived is replayed when it is idempotent, or
    /// when the connection was a reused one (the server may have closed it
    /// meanwhile).
    async fn forward<'r>(
        &self,
        routed: &'r Routed<'a>,
        cbuf: &mut Vec<u8>,
        t: &mut Trace<'r>,
    ) -> Result<Forwarded<'r>, Stop> {
        let started = t.started;
        let Routed { req, backend, .. } = routed;
        let ctx = self.pick_ctx(req, started);
        let bodyless = req.framing == Framing::None && !req.websocket && !req.http10;
        // Only bodyless requests go on reused connections: a body cannot be replayed.
        let pool_idle = backend.timeouts.pool_idle;
        let reuse = |s: &Server| {
            bodyless
                .then(|| pool::take(s.state.id, pool_idle, started))
                .flatten()
        };
        let mut attempt = 0u32;
        loop {
            let c = match connect::connect_with(
                backend,
                &ctx,
                routed.pin.server,
                std::future::pending(),
                reuse,
            )
            .await
            {
                Ok(c) => c,
                Err(e) => return Err(self.fail_connect(backend, &e, t).await),
            };
            let server = c.server;
            self.connected(backend, &c, t);
            let replayable = bodyless && (c.reused || req.idempotent) && attempt < backend.retries;
            let cookie =
                route::after_pick(backend, server, routed.pin, attempt == 0, self.peer.client);
            let edits = RespEdits {
                ops: routed.response_ops,
                cookie,
            };
            match self
                .send_and_read_head(&c.stream, backend, req, cbuf, edits)
                .await
            {
                Ok(answer) => {
                    t.first_byte = Some(started.elapsed());
                    t.bytes_in += answer.sent;
                    return Ok(Forwarded {
                        server,
                        _guard: c.guard,
                        upstream: c.stream,
                        answer,
                    });
                }
                Err(Upstream::Early) if replayable => {
                    attempt += 1;
                    t.retries += 1;
                    backend.counters.retries.inc();
                    server.state.counters.retries.inc();
                }
                Err(e) => {
                    if matches!(e, Upstream::Early | Upstream::Bad | Upstream::Timeout) {
                        // A gateway error counts as the server's 5xx.
                        crate::eject::responded(backend, server, 502);
                    }
                    return Err(self.fail_upstream(backend, server, e, t).await);
                }
            }
        }
    }

    /// What the balancer may look at for this request.
    fn pick_ctx<'r>(&self, req: &'r crate::l7::rewrite::Req, started: Instant) -> PickCtx<'r> {
        let (path, query) = match req.path().split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.path(), None),
        };
        let draw = crate::net::rand::fastrand_u64();
        let mut ctx = PickCtx::tcp(self.peer.client.ip(), self.peer.local, started, draw);
        ctx.host = req.host();
        ctx.path = Some(path);
        ctx.query = query;
        ctx
    }

    /// A server connection was had (new or reused): note and count it.
    fn connected<'r>(&self, backend: &BackendRt, c: &connect::Connected<'r>, t: &mut Trace<'r>) {
        let server = c.server;
        t.server = Some(server);
        self.session.serving(server.state.id);
        t.retries += c.retries;
        *t.queued.get_or_insert(Duration::ZERO) += c.queued;
        t.connect = Some(c.connect);
        if c.reused {
            backend.counters.http_reused.inc();
            server.state.counters.reused.inc();
        } else {
            backend.counters.conn_total.inc();
            server.state.counters.conn_total.inc();
        }
    }

    /// No server connection: 503 (502 when the last one failed its TLS
    /// handshake: a server is there, but not one to trust).
    async fn fail_connect<'r>(
        &self,
        backend: &'r BackendRt,
        e: &connect::ConnectError,
        t: &mut Trace<'r>,
    ) -> Stop {
        e.count(backend);
        t.term = match e {
            connect::ConnectError::QueueTimeout(_) => *b"sQ",
            connect::ConnectError::NoServer(_) => *b"RC",
            connect::ConnectError::Failed { .. } => *b"SC",
            connect::ConnectError::Stopped => *b"KQ",
        };
        if let connect::ConnectError::Failed {
            server: Some(name),
            attempts,
            ..
        } = e
        {
            t.server = backend.all_servers().find(|s| s.name == *name);
            t.retries = attempts.saturating_sub(1);
        }
        let status = match e {
            connect::ConnectError::Failed { tls: true, .. } => 502,
            _ => 503,
        };
        t.status = status;
        error_reply(self.client, self.front, status).await;
        Stop::Linger
    }

    /// The exchange with the server failed: 502, 504, or 400 for a client's
    /// malformed body.
    async fn fail_upstream(
        &self,
        backend: &BackendRt,
        server: &Server,
        e: Upstream,
        t: &mut Trace<'_>,
    ) -> Stop {
        let (status, term) = match e {
            Upstream::ClientGone => {
                backend.counters.client_aborts.inc();
                server.state.counters.client_aborts.inc();
                t.end(b'C', b'R');
                return Stop::Close;
            }
            Upstream::Early | Upstream::Bad => {
                backend.counters.http_bad_responses.inc();
                (502, *b"SH")
            }
            Upstream::Timeout => {
                backend.counters.http_server_timeouts.inc();
                (504, *b"sH")
            }
            Upstream::BodyFraming => {
                let class = HeadError::BadTransferEncoding.class();
                self.front.counters.http_rejected[class].inc();
                (400, *b"PD")
            }
        };
        if status != 400 {
            backend.counters.http_responses.count(status);
            server.state.counters.http_responses.count(status);
        }
        t.status = status;
        t.term = term;
        error_reply(self.client, self.front, status).await;
        Stop::Linger
    }

    /// The response body, server to client; `got` (what went with the head,
    /// then what the relay moves) is added to the byte counters.
    async fn body_back(
        &self,
        (upstream, backend, server): (&Stream, &BackendRt, &Server),
        sbuf: &mut Vec<u8>,
        framing: RespFraming,
        got: &mut u64,
    ) -> Result<(), super::body::RelayError> {
        let body = match framing {
            RespFraming::None => None,
            RespFraming::Length(n) => Some(Body::Length(n)),
            RespFraming::Chunked => Some(Body::Chunked),
            RespFraming::Close => Some(Body::UntilClose),
        };
        let result = match body {
            None => Ok(()),
            Some(b) => {
                let deadlines = (backend.timeouts.server, self.front.client_timeout);
                let splice = self.opts.splice;
                relay(upstream, self.client, sbuf, b, deadlines, got, splice).await
            }
        };
        // `got` counts the part sent with the head too.
        let total = *got;
        self.front.counters.bytes_out.add(total);
        backend.counters.bytes_out.add(total);
        server.state.counters.bytes_out.add(total);
        match result {
            Err(super::body::RelayError::Source) => {
                backend.counters.server_aborts.inc();
                server.state.counters.server_aborts.inc();
            }
            Err(super::body::RelayError::Destination) => {
                backend.counters.client_aborts.inc();
                server.state.counters.client_aborts.inc();
            }
            _ => {}
        }
        result
    }

    /// Phases 4–5: the response head (with a small body already read), then
    /// the body or the tunnel; count, log, and keep a clean server connection.
    async fn respond(
        &self,
        routed: &Routed<'a>,
        fwd: Forwarded<'_>,
        cbuf: &mut Vec<u8>,
        t: &mut Trace<'_>,
    ) -> Stop {
        let started = t.started;
        let backend = routed.backend;
        let Forwarded {
            server,
            upstream,
            answer,
            ..
        } = fwd;
        let Answer {
            head: resp,
            out: mut out_head,
            close,
            mut sbuf,
            ..
        } = answer;
        count_status(self.front, resp.status);
        backend.counters.http_responses.count(resp.status);
        server.state.counters.http_responses.count(resp.status);
        t.status = resp.status;
        crate::eject::responded(backend, server, resp.status);
        let (framing, mut got) = with_head(resp.framing, &mut out_head, &mut sbuf);
        if self.write(&out_head).await.is_err() {
            t.end(b'C', b'H');
            backend.counters.client_aborts.inc();
            server.state.counters.client_aborts.inc();
            return Stop::Close;
        }
        t.bytes_out = (out_head.len() as u64).saturating_sub(got);
        if resp.status == 101 {
            // Boxed: a rare path whose state would otherwise size every exchange.
            let ends = (&upstream, backend, server);
            return Box::pin(self.tunnel(ends, cbuf, &sbuf)).await;
        }
        let result = self
            .body_back((&upstream, backend, server), &mut sbuf, framing, &mut got)
            .await;
        t.bytes_out += got;
        if let Err(e) = result {
            let side = match e {
                super::body::RelayError::Destination => b'C',
                _ => b'S',
            };
            t.end(side, b'D');
            // The response was cut: the client cannot tell where it ends otherwise.
            io::reset(self.client);
            return Stop::Close;
        }
        // The server connection is clean (whole response read, nothing extra,
        // the server keeps it open): keep it for the next request on this thread.
        if !resp.close && framing != RespFraming::Close && sbuf.is_empty() {
            pool::put(
                server.state.id,
                upstream,
                backend.pool_max_idle as usize,
                started,
                backend.timeouts.pool_idle,
            );
        }
        // After the whole response, closing the socket (when the task ends,
        // right away) sends the FIN; no separate shutdown(2).
        if close { Stop::Close } else { Stop::Next }
    }
}

/// A response body that is already here in full goes out with the head, in
/// one write: what framing is left to relay, and how many body bytes went.
fn with_head(
    framing: RespFraming,
    out_head: &mut Vec<u8>,
    sbuf: &mut Vec<u8>,
) -> (RespFraming, u64) {
    if let RespFraming::Length(n) = framing
        && let Ok(n) = usize::try_from(n)
        && n <= sbuf.len()
        && n <= buf::LARGE
    {
        out_head.extend_from_slice(&sbuf[..n]);
        sbuf.drain(..n);
        return (RespFraming::None, n as u64);
    }
    (framing, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_small_body_goes_with_the_head_and_nothing_else_does() {
        let (mut head, mut sbuf) = (b"HEAD\r\n\r\n".to_vec(), b"hello, next".to_vec());
        let (f, got) = with_head(RespFraming::Length(5), &mut head, &mut sbuf);
        assert_eq!((f, got), (RespFraming::None, 5));
        assert_eq!(
            (&head[..], &sbuf[..]),
            (&b"HEAD\r\n\r\nhello"[..], &b", next"[..])
        );
        // Not all here yet, or not framed by a length: relayed after the head.
        let (mut head, mut sbuf) = (Vec::new(), b"hel".to_vec());
        let (f, got) = with_head(RespFraming::Length(5), &mut head, &mut sbuf);
        assert_eq!(
            (f, got, head.len(), sbuf.len()),
            (RespFraming::Length(5), 0, 0, 3)
        );
        let (f, got) = with_head(RespFraming::Chunked, &mut head, &mut sbuf);
        assert_eq!((f, got, sbuf.len()), (RespFraming::Chunked, 0, 3));
        // Over the large-buffer size: relayed, not copied into the head.
        let mut big = vec![0u8; buf::LARGE + 1];
        let n = big.len() as u64;
        let (f, _) = with_head(RespFraming::Length(n), &mut head, &mut big);
        assert_eq!(f, RespFraming::Length(n));
    }
}
